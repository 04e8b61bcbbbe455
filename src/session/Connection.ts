/**
 * One client connection: bytes in, packets through the protocol rules, frames
 * out. Plain synchronous code driven by Node's socket callbacks — no fiber,
 * no Effect per packet. The connection's lifecycle (the keepalive watchdog,
 * takeover, shutdown) is owned by a supervised fiber (see transport/Listener.ts);
 * this class is what that fiber supervises.
 *
 * Where the spec rules live: CONNECT [MQTT-3.1.*] in handleConnect, SUBSCRIBE
 * [MQTT-3.8.*] in handleSubscribe, PUBLISH [MQTT-3.3.*] in handlePublish, the
 * QoS handshakes in OutboundFlow / InboundQos2, wills [MQTT-3.1.2-8] in close.
 */
import { randomUUID } from "node:crypto"
import type * as mqtt from "mqtt-packet"
import {
  encode,
  encodeAck,
  encodePublish,
  PacketParser,
  PINGRESP,
  type Packet,
  type ParseError,
  type PublishProperties
} from "../protocol/codec.js"
import { ConnackV4, ReasonCode } from "../protocol/reasonCodes.js"
import { isSharedFilterSyntax, parseSharedFilter, validateTopicFilter, validateTopicName } from "../protocol/topic.js"
import type { Congestible, PublishSource, SubscriptionOptions } from "../routing/Router.js"
import type { TlsIdentity } from "../transport/tls.js"
import type { MqttSocket } from "../transport/websocket.js"
import type { AttachedConnection, Core, Flushable } from "./Core.js"
import { Message, type MessageProperties, type QoS } from "./Message.js"
import type { Outgoing } from "./OutboundFlow.js"
import type { Session, SessionWire } from "./Session.js"

/** Bytes waiting for a subscriber above which its publishers are held up. */
const HIGH_WATER_BYTES = 1024 * 1024
/** Parked packets of a held-up publisher above which its socket stops being read. */
const PARK_LIMIT = 256

export type CloseReason =
  | "disconnect" // DISCONNECT received
  | "disconnect-with-will" // v5 DISCONNECT 0x04
  | "closed" // the peer closed the socket without DISCONNECT
  | "error" // socket error
  | "keepalive" // 1.5 × keepalive of silence [MQTT-3.1.2-24]
  | "takeover" // another connection with the same client id [MQTT-3.1.4-3]
  | "protocol" // a protocol violation or malformed packet
  | "connect-timeout" // no CONNECT in time
  | "refused" // CONNACK with a failure code
  | "kicked" // closed by the broker (administrative action); the will is published
  | "shutdown" // the broker is stopping

/** What a connection takes from the listener it arrived on (per_listener_settings). */
export interface ListenerSettings {
  readonly port: number
  /** `mount_point`: prefix of every topic of this listener's clients */
  readonly mountPoint: string | undefined
  /** per-listener values; undefined: the broker-wide setting */
  readonly allowAnonymous: boolean | undefined
  readonly allowZeroLengthClientid: boolean | undefined
  readonly autoIdPrefix: string | undefined
}

/** What a CONNECT (or a v5 AUTH exchange) asks the authentication service. */
export interface ConnectAuthRequest {
  readonly clientId: string
  readonly username: string | undefined
  readonly password: Buffer | undefined
  readonly listenerPort: number
  readonly remoteAddress: string | undefined
  /** v5 enhanced authentication: the Authentication Method and Data */
  readonly method?: string | undefined
  readonly data?: Buffer | undefined
  /** true for a v5 re-authentication of a connected client (AUTH 0x19) */
  readonly reauthenticate?: boolean
  /** the TLS identity of the connection (certificate subject / CN, PSK identity, use_*_as_username) */
  readonly tls?: TlsIdentity | undefined
}

/** The authentication decision, as the connection acts on it. */
export type ConnectAuthOutcome =
  | { readonly _tag: "Accept"; readonly username: string | undefined; readonly data?: Buffer | undefined }
  /** v5 enhanced authentication: send AUTH 0x18 with this data and wait for the client's AUTH */
  | { readonly _tag: "Continue"; readonly data?: Buffer | undefined; readonly next: (data: Buffer | undefined) => void }
  /** refused: CONNACK / DISCONNECT with this code; v5 0x9C / 0x9D carry a Server Reference */
  | {
      readonly _tag: "Refuse"
      readonly v4Code: number
      readonly v5Code: number
      readonly why: string
      readonly serverReference?: string | undefined
    }

export interface ConnectionHooks {
  /**
   * Decide a CONNECT (cold path; may complete later). Calls `done` once, or
   * again after each `Continue` step of a v5 enhanced authentication.
   * Absent: anonymous clients by `allow_anonymous`, nobody with a username.
   */
  readonly authenticate?: (conn: Connection, request: ConnectAuthRequest, done: (outcome: ConnectAuthOutcome) => void) => void
  /** after CONNACK: run the session's supervised fiber, keyed by client id */
  readonly sessionStarted: (conn: Connection) => void
  /** the connection has ended (once) */
  readonly closed: (conn: Connection) => void
}

interface Will {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: QoS
  readonly retain: boolean
  readonly properties: MessageProperties | undefined
}

export class Connection implements SessionWire, Flushable, PublishSource, Congestible, AttachedConnection {
  readonly parser: PacketParser
  protocolVersion: 3 | 4 | 5 = 4
  state: "new" | "connecting" | "connected" | "closed" = "new"
  clientId = ""
  keepalive = 0
  session: Session | undefined = undefined
  closeReason: CloseReason | undefined = undefined
  /** Clock time (ms) of the last bytes received: the keepalive watchdog reads it */
  lastActivity: number
  readonly remote: string
  private will: Will | undefined = undefined
  private readonly packets: Array<Packet> = []
  // outbox: frames of this event-loop turn, written as one chunk
  private out: Array<Buffer> = []
  private outBytes = 0
  private flushScheduled = false
  // backpressure: publishers held up by this connection, and how many hold this one up
  private waiters: Set<PublishSource> | undefined = undefined
  private heldBy = 0
  private parked: Array<Packet> | undefined = undefined
  private paused = false
  private readonly queueHigh: number
  /** `mount_point` of the listener, "" for none */
  private readonly mount: string
  // MQTT 5 per-connection state
  /** the client's Maximum Packet Size (0: none) [MQTT-3.1.2-24] */
  private clientMaxPacketSize = 0
  /** the client's Topic Alias Maximum: aliases the broker may use towards it */
  private clientTopicAliasMax = 0
  private outAliases: Map<string, number> | undefined = undefined
  /** the broker's Topic Alias Maximum (inbound aliases) */
  private topicAliasMax = 0
  private inAliases: Map<number, string> | undefined = undefined
  /** the broker's Receive Maximum: QoS 2 PUBLISH awaiting PUBREL at once */
  private receiveMaximum = 65535
  /** v5 Will Delay Interval in seconds */
  private willDelay = 0
  /** v5 Request Problem Information (default 1) */
  private problemInformation = true
  /** v5 enhanced authentication: the method of the CONNECT, and the step awaited */
  private authMethod: string | undefined = undefined
  private authContinue: ((data: Buffer | undefined) => void) | undefined = undefined
  /** the username authentication settled on (ACLs use it) */
  username: string | undefined = undefined
  /** the client is a bridge (CONNECT with the bridge bit) */
  private bridge = false

  constructor(
    readonly socket: MqttSocket,
    readonly core: Core,
    readonly hooks: ConnectionHooks,
    readonly listener: ListenerSettings,
    /** TLS listeners: the certificate / PSK identity (use_identity_as_username, ...) */
    readonly tlsIdentity?: TlsIdentity | undefined
  ) {
    this.mount = listener.mountPoint ?? ""
    this.parser = new PacketParser(core.settings.maxPacketSize)
    this.lastActivity = core.now()
    this.remote = `${socket.remoteAddress ?? "unknown"}:${socket.remotePort ?? 0}`
    core.stats.socketsOpened++
    const maxQueued = core.settings.maxQueuedMessages
    this.queueHigh = maxQueued > 0 ? Math.max(1, maxQueued >> 1) : 1000
    if (core.settings.setTcpNodelay) socket.setNoDelay(true)
    socket.on("data", (chunk: Buffer) => this.onData(chunk))
    socket.on("error", () => this.close("error"))
    socket.on("end", () => this.close("closed"))
    socket.on("close", () => this.close("closed"))
    socket.on("drain", () => this.releaseWaiters())
  }

  // ---------------------------------------------------------------- input

  /** not narrowed by TypeScript: handlers change the state under our feet */
  get closed(): boolean {
    return this.state === "closed"
  }

  onData(chunk: Buffer): void {
    if (this.closed) return
    this.lastActivity = this.core.now()
    this.core.stats.bytesReceived += chunk.length
    const packets = this.packets
    const error = this.parser.parse(chunk, packets)
    this.core.stats.packetsReceived += packets.length
    for (let i = 0; i < packets.length; i++) {
      if (this.closed) break
      const packet = packets[i]
      if (this.state === "connecting" && packet.cmd !== "auth") {
        // authentication under way: what follows CONNECT waits for its outcome
        ;(this.parked ??= []).push(packet)
        if (this.parked.length >= PARK_LIMIT) this.pauseReading()
      } else if (this.heldBy > 0 && this.parks(packet)) {
        ;(this.parked ??= []).push(packet)
        if (this.parked.length >= PARK_LIMIT) this.pauseReading()
      } else {
        this.handle(packet)
      }
    }
    packets.length = 0
    if (error !== undefined && !this.closed) this.onParseError(error)
  }

  /** While held up, everything but acknowledgements and pings waits, in order. */
  private parks(packet: Packet): boolean {
    if (this.parked !== undefined && this.parked.length > 0) return true
    switch (packet.cmd) {
      case "puback":
      case "pubrec":
      case "pubrel":
      case "pubcomp":
      case "pingreq":
        return false
      default:
        return true
    }
  }

  private onParseError(error: ParseError): void {
    if (this.state === "new" && error.connectError !== undefined) {
      // [MQTT-3.1.2-2] unacceptable protocol level: CONNACK 0x01 (v3/v4) / 0x84 (v5)
      this.log("information", `Client <unknown> from ${this.remote} refused: ${error.message}.`)
      if (error.connectError === "bad-protocol-version") {
        this.writeNow(encode({ cmd: "connack", returnCode: ConnackV4.UnacceptableProtocolVersion, sessionPresent: false }, 4))
      }
      this.close("refused")
      return
    }
    const code = error.reason === "too-large" ? ReasonCode.PacketTooLarge : error.reason === "malformed" ? ReasonCode.MalformedPacket : ReasonCode.ProtocolError
    this.protocolError(code, error.message)
  }

  /** Close for a protocol violation; v5 clients get DISCONNECT with the reason code first. */
  protocolError(reasonCode: number, why: string): void {
    if (this.state === "closed") return
    this.log("notice", `Client ${this.clientId || "<unknown>"} from ${this.remote} disconnected: ${why}.`)
    if (this.state === "connected" && this.protocolVersion === 5) this.sendDisconnect(reasonCode, why)
    this.close("protocol")
  }

  private handle(packet: Packet): void {
    if (this.state !== "connected") {
      if (packet.cmd === "connect" && this.state === "new") return this.handleConnect(packet)
      if (packet.cmd === "auth" && this.state === "connecting" && this.authContinue !== undefined) return this.handleAuth(packet)
      // [MQTT-3.1.0-1] the first packet must be CONNECT
      return this.protocolError(ReasonCode.ProtocolError, `first packet was ${packet.cmd}, not connect`)
    }
    switch (packet.cmd) {
      case "publish":
        return this.handlePublish(packet)
      case "puback": {
        const session = this.session!
        session.flow.onPuback(packet.messageId!, this, true)
        this.afterAck(session)
        return
      }
      case "pubrec": {
        const session = this.session!
        const id = packet.messageId!
        if (this.protocolVersion === 5 && (packet.reasonCode ?? 0) >= 0x80) {
          session.flow.onPubrecFailure(id, this, true)
          this.afterAck(session)
        } else if (!session.flow.onPubrec(id, this)) {
          // unknown id: v5 answers PUBREL 0x92; v3/v4 release it anyway
          this.write(encodeAck("pubrel", id, this.protocolVersion, this.protocolVersion === 5 ? ReasonCode.PacketIdentifierNotFound : 0))
        }
        return
      }
      case "pubrel": {
        const known = this.session!.qos2.onPubrel(packet.messageId!)
        if (known && this.session!.flow.observer !== undefined) this.core.store?.inboundQos2Release(this.clientId, packet.messageId!)
        this.write(
          encodeAck("pubcomp", packet.messageId!, this.protocolVersion, !known && this.protocolVersion === 5 ? ReasonCode.PacketIdentifierNotFound : 0)
        )
        return
      }
      case "pubcomp": {
        const session = this.session!
        session.flow.onPubcomp(packet.messageId!, this, true)
        this.afterAck(session)
        return
      }
      case "pingreq":
        this.write(PINGRESP)
        return
      case "subscribe":
        return this.handleSubscribe(packet)
      case "unsubscribe":
        return this.handleUnsubscribe(packet)
      case "disconnect":
        return this.handleDisconnect(packet)
      case "connect":
        // [MQTT-3.1.0-2] a second CONNECT is a protocol violation
        return this.protocolError(ReasonCode.ProtocolError, "second CONNECT")
      case "auth":
        return this.handleAuth(packet)
      default:
        return this.protocolError(ReasonCode.ProtocolError, `unexpected ${packet.cmd} from a client`)
    }
  }

  // ---------------------------------------------------------------- CONNECT

  private refuse(v4Code: number, v5Code: number, why: string, serverReference?: string): void {
    this.log("information", `Client ${this.clientId || "<unknown>"} from ${this.remote} refused: ${why}.`)
    if (this.protocolVersion === 5) {
      // 0x9C Use another server / 0x9D Server moved carry a Server Reference
      const properties = serverReference !== undefined ? { serverReference } : undefined
      this.writeNow(encode({ cmd: "connack", reasonCode: v5Code, sessionPresent: false, ...(properties ? { properties } : {}) }, 5))
    } else {
      this.writeNow(encode({ cmd: "connack", returnCode: v4Code, sessionPresent: false }, this.protocolVersion))
    }
    this.close("refused")
  }

  private handleConnect(packet: mqtt.IConnectPacket): void {
    const settings = this.core.settings
    this.core.stats.connectsReceived++
    this.protocolVersion = (packet.protocolVersion ?? 4) as 3 | 4 | 5
    this.parser.protocolVersion = this.protocolVersion
    const v5 = this.protocolVersion === 5
    this.state = "connecting"
    let clientId = packet.clientId ?? ""
    const clean = packet.clean !== false
    // a Mosquitto bridge (protocol level | 0x80, try_private): no echo of its own messages, retain flags kept
    this.bridge = (packet as { bridgeMode?: boolean }).bridgeMode === true
    let assigned: string | undefined
    if (clientId.length === 0) {
      if (this.protocolVersion === 3) {
        // MQTT 3.1: the client identifier must be 1..23 characters
        return this.refuse(ConnackV4.IdentifierRejected, ReasonCode.ClientIdentifierNotValid, "empty client id (MQTT 3.1)")
      }
      if (!(this.listener.allowZeroLengthClientid ?? settings.allowZeroLengthClientid)) {
        return this.refuse(ConnackV4.IdentifierRejected, ReasonCode.ClientIdentifierNotValid, "zero length client id not allowed")
      }
      if (!clean && !v5) {
        // [MQTT-3.1.3-8] an empty id requires clean session in 3.1.1
        return this.refuse(ConnackV4.IdentifierRejected, ReasonCode.ClientIdentifierNotValid, "empty client id without clean session")
      }
      clientId = (this.listener.autoIdPrefix ?? settings.autoIdPrefix) + randomUUID()
      assigned = clientId
    } else if (this.protocolVersion === 3 && clientId.length > 23) {
      return this.refuse(ConnackV4.IdentifierRejected, ReasonCode.ClientIdentifierNotValid, "client id longer than 23 characters (MQTT 3.1)")
    }
    this.clientId = clientId

    // keepalive: v3/v4 above max_keepalive is refused; v5 is told the Server Keep Alive
    let keepalive = packet.keepalive ?? 0
    let serverKeepAlive: number | undefined
    if (keepalive > settings.maxKeepalive || (keepalive === 0 && settings.maxKeepalive < 65535)) {
      if (!v5) return this.refuse(ConnackV4.IdentifierRejected, ReasonCode.ClientIdentifierNotValid, "keepalive above max_keepalive")
      keepalive = settings.maxKeepalive
      serverKeepAlive = keepalive
    }
    this.keepalive = keepalive

    if (packet.will !== undefined) {
      const w = packet.will
      if (!validateTopicName(w.topic)) {
        return this.refuse(ConnackV4.IdentifierRejected, ReasonCode.TopicNameInvalid, "invalid will topic")
      }
      // a copy: the will lives as long as the connection, not as its socket chunk
      const payload = Buffer.from(w.payload)
      this.willDelay = v5 ? (w.properties?.willDelayInterval ?? 0) : 0
      this.will = {
        topic: this.mount + w.topic,
        payload,
        qos: (w.qos ?? 0) as QoS,
        retain: w.retain === true,
        properties: v5 ? forwardedProperties(w.properties) : undefined
      }
    }

    const method = v5 ? packet.properties?.authenticationMethod : undefined
    this.authMethod = method
    const request: ConnectAuthRequest = {
      clientId,
      username: packet.username,
      password: packet.password,
      listenerPort: this.listener.port,
      remoteAddress: this.socket.remoteAddress,
      method,
      data: v5 ? packet.properties?.authenticationData : undefined,
      tls: this.tlsIdentity
    }
    const hook = this.hooks.authenticate
    if (hook === undefined) {
      // no authentication service: anonymous clients only where allowed, nobody with a username
      const allowAnonymous = this.listener.allowAnonymous ?? settings.allowAnonymous
      if (method !== undefined) {
        return this.refuse(ConnackV4.NotAuthorized, ReasonCode.BadAuthenticationMethod, `unknown authentication method '${method}'`)
      }
      if (!allowAnonymous) return this.refuse(ConnackV4.NotAuthorized, ReasonCode.NotAuthorized, "not authorised")
      return this.completeConnect(packet, clean, assigned, serverKeepAlive, packet.username, undefined)
    }
    const done = (outcome: ConnectAuthOutcome): void => {
      if (this.state !== "connecting") return // the client went away meanwhile
      switch (outcome._tag) {
        case "Refuse":
          return this.refuse(outcome.v4Code, outcome.v5Code, outcome.why, outcome.serverReference)
        case "Continue":
          // [MQTT-4.12.0-?] AUTH 0x18 Continue authentication, then wait for the client's AUTH
          this.authContinue = outcome.next
          this.write(encode({ cmd: "auth", reasonCode: 0x18, properties: { authenticationMethod: method, ...(outcome.data ? { authenticationData: outcome.data } : {}) } } as Packet, 5))
          return
        case "Accept":
          this.authContinue = undefined
          return this.completeConnect(packet, clean, assigned, serverKeepAlive, outcome.username, outcome.data)
      }
    }
    hook(this, request, done)
  }

  /** v5 AUTH: the next step of an enhanced authentication, or a re-authentication (0x19). */
  private handleAuth(packet: mqtt.IAuthPacket): void {
    const method = packet.properties?.authenticationMethod
    // [MQTT-4.12.0-?] AUTH with another method than CONNECT's, or without any, is a protocol error
    if (this.authMethod === undefined || method !== this.authMethod) {
      return this.protocolError(ReasonCode.ProtocolError, "AUTH without the CONNECT's authentication method")
    }
    const data = packet.properties?.authenticationData
    if (this.state === "connecting") {
      const next = this.authContinue
      if (next === undefined || packet.reasonCode !== 0x18) return this.protocolError(ReasonCode.ProtocolError, "unexpected AUTH")
      this.authContinue = undefined
      return next(data)
    }
    // connected: re-authentication (0x19) or its continuation (0x18)
    const hook = this.hooks.authenticate
    if (hook === undefined) return this.protocolError(ReasonCode.ProtocolError, "unexpected AUTH")
    if (packet.reasonCode === 0x18 && this.authContinue !== undefined) {
      const next = this.authContinue
      this.authContinue = undefined
      return next(data)
    }
    if (packet.reasonCode !== 0x19) return this.protocolError(ReasonCode.ProtocolError, "unexpected AUTH")
    const request: ConnectAuthRequest = {
      clientId: this.clientId,
      username: this.username,
      password: undefined,
      listenerPort: this.listener.port,
      remoteAddress: this.socket.remoteAddress,
      method,
      data,
      reauthenticate: true
    }
    const done = (outcome: ConnectAuthOutcome): void => {
      if (this.state !== "connected") return
      switch (outcome._tag) {
        case "Refuse":
          // a failed re-authentication ends the connection [MQTT-4.12.1-2]
          this.log("notice", `Client ${this.clientId} failed re-authentication: ${outcome.why}.`)
          this.sendDisconnect(outcome.v5Code, outcome.why)
          return this.close("refused")
        case "Continue":
          this.authContinue = outcome.next
          this.write(encode({ cmd: "auth", reasonCode: 0x18, properties: { authenticationMethod: method, ...(outcome.data ? { authenticationData: outcome.data } : {}) } } as Packet, 5))
          return
        case "Accept":
          this.authContinue = undefined
          this.write(encode({ cmd: "auth", reasonCode: 0x00, properties: { authenticationMethod: method, ...(outcome.data ? { authenticationData: outcome.data } : {}) } } as Packet, 5))
          return
      }
    }
    hook(this, request, done)
  }

  /** CONNECT accepted: takeover, session, CONNACK, then what was sent meanwhile. */
  private completeConnect(
    packet: mqtt.IConnectPacket,
    clean: boolean,
    assigned: string | undefined,
    serverKeepAlive: number | undefined,
    username: string | undefined,
    authData: Buffer | undefined
  ): void {
    const core = this.core
    const settings = core.settings
    const v5 = this.protocolVersion === 5
    const clientId = this.clientId
    const keepalive = this.keepalive
    this.username = username

    const old = core.attached.get(clientId)
    if (old !== undefined && old !== this) {
      this.log("information", `Client ${clientId} already connected, closing old connection.`)
      old.takenOver()
    }
    // v3/v4 clean session / v5 clean start [MQTT-3.1.2-4] .. [MQTT-3.1.2-6]
    const { session, present } = core.openSession(clientId, clean)
    // [MQTT-3.1.3-9] reconnected in time: a delayed will of the last connection is not sent
    session.pendingWill = undefined
    const limits = core.flowLimits()
    if (v5) {
      const props = packet.properties
      session.expiryInterval = props?.sessionExpiryInterval ?? 0
      this.clientMaxPacketSize = props?.maximumPacketSize ?? 0
      this.problemInformation = props?.requestProblemInformation !== false
      this.clientTopicAliasMax = props?.topicAliasMaximum ?? 0
      this.topicAliasMax = settings.maxTopicAlias
      this.receiveMaximum = settings.maxInflightMessages > 0 ? settings.maxInflightMessages : 65535
      // [MQTT-3.1.2-?] the client's Receive Maximum bounds what the broker sends in flight
      const clientReceiveMaximum = props?.receiveMaximum ?? 65535
      session.flow.limits = {
        ...limits,
        maxInflight: limits.maxInflight === 0 ? clientReceiveMaximum : Math.min(limits.maxInflight, clientReceiveMaximum)
      }
    } else {
      session.expiryInterval = clean ? 0 : 0xffffffff
      session.flow.limits = limits
    }
    this.session = session
    session.acl = core.authorize?.({ clientId, username, listenerPort: this.listener.port })
    session.wire = this
    core.attached.set(clientId, this)
    this.state = "connected"
    core.stats.clientsConnected++
    if (core.stats.clientsConnected > core.stats.clientsMaximum) core.stats.clientsMaximum = core.stats.clientsConnected

    if (v5) {
      const properties: NonNullable<mqtt.IConnackPacket["properties"]> = {
        retainAvailable: settings.retainAvailable,
        sharedSubscriptionAvailable: true,
        subscriptionIdentifiersAvailable: true,
        wildcardSubscriptionAvailable: true,
        topicAliasMaximum: this.topicAliasMax,
        receiveMaximum: this.receiveMaximum
      }
      // request / response: a topic prefix the client may use for responses
      if (packet.properties?.requestResponseInformation === true) properties.responseInformation = `${settings.responseInformationPrefix}${clientId}`
      if (settings.maxPacketSize > 0) properties.maximumPacketSize = settings.maxPacketSize
      if (assigned !== undefined) properties.assignedClientIdentifier = assigned
      if (serverKeepAlive !== undefined) properties.serverKeepAlive = serverKeepAlive
      if (this.authMethod !== undefined) {
        properties.authenticationMethod = this.authMethod
        if (authData !== undefined) properties.authenticationData = authData
      }
      this.write(encode({ cmd: "connack", reasonCode: 0, sessionPresent: present, properties }, 5))
    } else {
      // [MQTT-3.2.2-1..3] session present is 0 for a clean session
      this.write(encode({ cmd: "connack", returnCode: 0, sessionPresent: present }, this.protocolVersion))
    }
    if (core.settings.connectionMessages) {
      this.log(
        "notice",
        `New client connected from ${this.socket.remoteAddress ?? "unknown"}:${this.socket.remotePort ?? 0} as ${clientId} (p${this.protocolVersion === 3 ? 1 : 2}, c${clean ? 1 : 0}, k${keepalive}${packet.username !== undefined ? `, u'${packet.username}'` : ""}).`
      )
    }
    core.persist(session, this.storedWill(), false)
    this.hooks.sessionStarted(this)
    // [MQTT-4.4.0-1] resend what was in flight, then what queued while offline
    session.flow.resume(this)
    // packets that arrived while the CONNECT was being decided
    const waiting = this.parked
    if (waiting !== undefined && this.heldBy === 0) {
      this.parked = undefined
      for (const p of waiting) {
        if (this.closed) return
        if (this.heldBy > 0) {
          ;(this.parked ??= []).push(p)
          continue
        }
        this.handle(p)
      }
      this.resumeReading()
    }
  }

  /** The will as the store keeps it while the client is connected (published at a restart after a crash). */
  private storedWill() {
    const w = this.will
    return w === undefined ? undefined : { topic: w.topic, payload: w.payload, qos: w.qos, retain: w.retain, properties: w.properties, delayInterval: this.willDelay }
  }

  // ---------------------------------------------------------------- PUBLISH

  private handlePublish(packet: mqtt.IPublishPacket): void {
    const core = this.core
    let topic = packet.topic
    const alias = this.protocolVersion === 5 ? packet.properties?.topicAlias : undefined
    if (alias !== undefined) {
      // [MQTT-3.3.2-8] 0 or above our Topic Alias Maximum: Topic Alias invalid
      if (alias === 0 || alias > this.topicAliasMax) {
        return this.protocolError(ReasonCode.TopicAliasInvalid, `topic alias ${alias} out of range`)
      }
      if (topic.length === 0) {
        const known = this.inAliases?.get(alias)
        if (known === undefined) return this.protocolError(ReasonCode.ProtocolError, `unknown topic alias ${alias}`)
        topic = known
      } else if (validateTopicName(topic)) {
        ;(this.inAliases ??= new Map()).set(alias, topic)
      }
    }
    // [MQTT-3.3.2-2] no wildcards in a topic name; [MQTT-4.7.3-1] not empty
    if (!validateTopicName(topic)) {
      return this.protocolError(ReasonCode.TopicNameInvalid, `invalid topic '${topic}' in PUBLISH`)
    }
    core.stats.messagesReceived++
    const qos = packet.qos
    const payload = typeof packet.payload === "string" ? Buffer.from(packet.payload) : packet.payload
    core.stats.publishBytesReceived += payload.length
    const id = packet.messageId ?? 0
    // message_size_limit: too large messages are dropped (v5 acks say 0x83); memory_limit likewise (0x97)
    const dropReason =
      core.settings.messageSizeLimit > 0 && payload.length > core.settings.messageSizeLimit
        ? ReasonCode.ImplementationSpecificError // as Mosquitto; 0x95 is not a PUBACK / PUBREC reason code
        : core.overMemoryLimit()
          ? ReasonCode.QuotaExceeded
          : 0
    if (dropReason !== 0) {
      core.stats.publishDropped++
      const code = this.protocolVersion === 5 ? dropReason : 0
      const why = dropReason === ReasonCode.QuotaExceeded ? "memory_limit exceeded" : "message_size_limit exceeded"
      if (qos > 0) this.writeFailureAck(qos === 1 ? "puback" : "pubrec", id, code, why)
      return
    }
    if (packet.retain && !core.settings.retainAvailable) {
      return this.protocolError(ReasonCode.RetainNotSupported, "retain not available")
    }
    // a denied PUBLISH is dropped; v5 acks say 0x87 (a v5 PUBREC failure ends the QoS 2 flow)
    const acl = this.session!.acl
    if (acl !== undefined && !acl.canPublish(this.mount + topic)) {
      this.log("debug", `Denied PUBLISH from ${this.clientId} (q${qos}, r${packet.retain ? 1 : 0}, '${topic}').`)
      if (qos > 0) this.writeFailureAck(qos === 1 ? "puback" : "pubrec", id, this.protocolVersion === 5 ? ReasonCode.NotAuthorized : 0, "not authorised")
      return
    }
    // [MQTT-3.3.4-9] more QoS 2 flows open than our Receive Maximum
    if (qos === 2 && this.protocolVersion === 5 && this.session!.qos2.awaitingRel.size >= this.receiveMaximum && !this.session!.qos2.awaitingRel.has(id)) {
      return this.protocolError(ReasonCode.ReceiveMaximumExceeded, "receive maximum exceeded")
    }
    if (qos === 2 && !this.session!.qos2.onPublish(id)) {
      // [MQTT-4.3.3-9] a resent QoS 2 PUBLISH is acknowledged, not delivered again
      this.write(encodeAck("pubrec", id, this.protocolVersion, 0))
      return
    }
    const store = core.store
    if (qos === 2 && store !== undefined && this.session!.flow.observer !== undefined) store.inboundQos2Add(this.clientId, id)
    const properties = this.protocolVersion === 5 ? forwardedProperties(packet.properties) : undefined
    const message = new Message(this.mount + topic, payload, qos, packet.retain, properties, this.clientId, core.now())
    if (packet.retain) {
      message.originUsername = this.username
      message.originListenerPort = this.listener.port
    }
    // a stored message must be its own copy before the store sees it
    if (store !== undefined && (qos > 0 || packet.retain)) message.ownPayload()
    const receivers = core.router.publish(message, this)
    // what may outlive this turn must not pin the socket chunk the payload is a view on
    if (qos > 0 || packet.retain || core.settings.queueQos0Messages) message.ownPayload()
    if (qos > 0) {
      const reason = this.protocolVersion === 5 && receivers === 0 ? ReasonCode.NoMatchingSubscribers : 0
      const ack = encodeAck(qos === 1 ? "puback" : "pubrec", id, this.protocolVersion, reason)
      // durable persistence: acknowledged only once on disk (group commit)
      if (store !== undefined && store.durable) store.whenDurable(() => this.write(ack))
      else this.write(ack)
    }
  }

  // ---------------------------------------------------------------- SUBSCRIBE

  private handleSubscribe(packet: mqtt.ISubscribePacket): void {
    const core = this.core
    const session = this.session!
    const v5 = this.protocolVersion === 5
    const subscriptionId = v5 ? packet.properties?.subscriptionIdentifier : undefined
    const granted: Array<number> = []
    const retainedToSend: Array<{ filter: string; options: SubscriptionOptions }> = []
    for (const sub of packet.subscriptions) {
      if (!validateTopicFilter(sub.topic)) {
        this.log("information", `Client ${this.clientId} sent invalid subscription '${sub.topic}'.`)
        granted.push(v5 ? ReasonCode.TopicFilterInvalid : 0x80)
        continue
      }
      const shared = isSharedFilterSyntax(sub.topic)
      if (shared) {
        if (parseSharedFilter(sub.topic) === undefined) {
          granted.push(v5 ? ReasonCode.TopicFilterInvalid : 0x80)
          continue
        }
        // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error
        if (v5 && sub.nl === true) return this.protocolError(ReasonCode.ProtocolError, "no local on a shared subscription")
      }
      // a shared filter keeps its $share/GROUP/ prefix; the mount point goes on the filter inside it
      const filter = shared ? mountShared(sub.topic, this.mount) : this.mount + sub.topic
      const qos = sub.qos as QoS
      // denied SUBSCRIBE: 0x80 (v5 0x87)
      if (session.acl !== undefined && !session.acl.canSubscribe(filter)) {
        this.log("information", `Denied SUBSCRIBE from ${this.clientId} to '${sub.topic}'.`)
        granted.push(v5 ? ReasonCode.NotAuthorized : 0x80)
        continue
      }
      const options: SubscriptionOptions = {
        qos,
        noLocal: (v5 && sub.nl === true) || (this.bridge && !shared),
        retainAsPublished: (v5 && sub.rap === true) || this.bridge,
        retainHandling: (v5 ? (sub.rh ?? 0) : 0) as 0 | 1 | 2,
        subscriptionId
      }
      // [MQTT-3.8.4-3] a repeated subscription replaces the old one
      const isNew = core.router.subscribe(session, filter, options)
      session.subscriptions.set(filter, options)
      if (session.flow.observer !== undefined) core.store?.subscriptionSet(this.clientId, filter, options)
      this.log("subscribe", `${this.clientId} ${qos} ${filter}`)
      granted.push(qos)
      // v5 Retain Handling: 0 always, 1 only for a new subscription, 2 never; never for shared subscriptions
      if (!shared && (options.retainHandling === 0 || (options.retainHandling === 1 && isNew))) retainedToSend.push({ filter, options })
    }
    // [MQTT-3.8.4-1] SUBACK with one return code per filter, in order
    this.write(encode({ cmd: "suback", messageId: packet.messageId, granted }, this.protocolVersion))
    // [MQTT-3.3.1-9] retained messages go to the new subscription, retain flag set
    for (const { filter, options } of retainedToSend) {
      core.router.retained.match(filter, (message) => {
        // check_retain_source: the publisher must still be allowed to write it
        if (core.settings.checkRetainSource && core.authorize !== undefined && message.origin !== "") {
          const source = core.authorize({ clientId: message.origin, username: message.originUsername, listenerPort: message.originListenerPort })
          if (!source.canPublish(message.topic)) return
        }
        const qos = (message.qos < options.qos ? message.qos : options.qos) as QoS
        const ids = options.subscriptionId !== undefined ? [options.subscriptionId] : undefined
        session.deliver(message, qos, true, ids, undefined)
      }, core.now())
    }
  }

  private handleUnsubscribe(packet: mqtt.IUnsubscribePacket): void {
    const session = this.session!
    const codes: Array<number> = []
    for (const unmounted of packet.unsubscriptions) {
      const filter = isSharedFilterSyntax(unmounted) ? mountShared(unmounted, this.mount) : this.mount + unmounted
      const existed = session.subscriptions.delete(filter)
      if (existed) {
        this.core.router.unsubscribe(session, filter)
        if (session.flow.observer !== undefined) this.core.store?.subscriptionDelete(this.clientId, filter)
      }
      this.log("unsubscribe", `${this.clientId} ${filter}`)
      codes.push(existed ? ReasonCode.Success : ReasonCode.NoSubscriptionExisted)
    }
    if (this.protocolVersion === 5) {
      this.write(encode({ cmd: "unsuback", messageId: packet.messageId, granted: codes }, 5))
    } else {
      this.write(encode({ cmd: "unsuback", messageId: packet.messageId, granted: [] }, this.protocolVersion))
    }
  }

  private handleDisconnect(packet: mqtt.IDisconnectPacket): void {
    const session = this.session!
    if (this.protocolVersion === 5) {
      const expiry = packet.properties?.sessionExpiryInterval
      if (expiry !== undefined) {
        // [MQTT-3.14.2-2] a session that expired with the connection cannot be revived at DISCONNECT
        if (session.expiryInterval === 0 && expiry !== 0) {
          return this.protocolError(ReasonCode.ProtocolError, "session expiry set at DISCONNECT after 0 at CONNECT")
        }
        session.expiryInterval = expiry
      }
      if (packet.reasonCode === 0x04) return this.close("disconnect-with-will")
    }
    this.close("disconnect")
  }

  // ---------------------------------------------------------------- output

  /** Queue a frame for this event-loop turn's write. */
  write(frame: Buffer): void {
    if (this.state === "closed") return
    this.core.stats.packetsSent++
    this.out.push(frame)
    this.outBytes += frame.length
    if (!this.flushScheduled) {
      this.flushScheduled = true
      this.core.flusher.schedule(this)
    }
  }

  /** Write a frame and everything queued before it now (used just before closing). */
  private writeNow(frame: Buffer): void {
    this.core.stats.packetsSent++
    this.out.push(frame)
    this.outBytes += frame.length
    this.flush()
  }

  flush(): void {
    this.flushScheduled = false
    const n = this.out.length
    if (n === 0) return
    const chunk = n === 1 ? this.out[0] : Buffer.concat(this.out, this.outBytes)
    this.core.stats.bytesSent += this.outBytes
    this.out = []
    this.outBytes = 0
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(chunk)
    // the kernel may take it all at once: then no 'drain' comes, so release held-up publishers here
    if (this.waiters !== undefined) this.releaseWaiters()
  }

  publishQos0(message: Message, retain: boolean, subscriptionIds: ReadonlyArray<number> | undefined): void {
    if (this.protocolVersion === 5 && !this.acceptsMessage(message, 0, retain, subscriptionIds)) return
    this.sendPublish(message, 0, retain, 0, false, subscriptionIds)
  }

  /** OutboundSink: a QoS 1 / 2 PUBLISH (or QoS 0 from the queue). */
  publish(out: Outgoing, messageId: number, dup: boolean): void {
    this.sendPublish(out.message, out.qos, out.retain, messageId, dup, out.subscriptionIds)
  }

  /** OutboundSink: v5 expiry and the client's Maximum Packet Size, before onward delivery starts. */
  accepts(out: Outgoing): boolean {
    return this.protocolVersion !== 5 || this.acceptsMessage(out.message, out.qos, out.retain, out.subscriptionIds)
  }

  private acceptsMessage(message: Message, qos: QoS, retain: boolean, ids: ReadonlyArray<number> | undefined): boolean {
    // [MQTT-3.3.2-5] an expired message is not delivered
    if (message.properties?.messageExpiryInterval !== undefined && message.expired(this.core.now())) {
      this.core.stats.publishDropped++
      return false
    }
    // [MQTT-3.1.2-25] nothing larger than the client's Maximum Packet Size is sent: it is discarded
    if (this.clientMaxPacketSize > 0) {
      const size = this.slowPath(message) ? this.encodeSlow(message, qos, retain, 1, false, ids, false).length : message.frame(5, qos, retain, 1, false).length
      if (size > this.clientMaxPacketSize) {
        this.core.stats.publishDropped++
        return false
      }
    }
    return true
  }

  /** Whether this delivery needs its own encoding rather than the shared frame. */
  private slowPath(message: Message, ids?: ReadonlyArray<number>): boolean {
    if (this.mount !== "") return true
    if (this.protocolVersion !== 5) return false
    return (
      ids !== undefined ||
      this.clientTopicAliasMax > 0 ||
      (message.properties?.messageExpiryInterval !== undefined && this.core.now() - message.receivedAt >= 1000)
    )
  }

  private sendPublish(message: Message, qos: QoS, retain: boolean, messageId: number, dup: boolean, ids: ReadonlyArray<number> | undefined): void {
    const stats = this.core.stats
    stats.messagesSent++
    stats.publishBytesSent += message.payload.length
    this.write(
      this.slowPath(message, ids)
        ? this.encodeSlow(message, qos, retain, messageId, dup, ids, true)
        : message.frame(this.protocolVersion, qos, retain, messageId, dup)
    )
  }

  /**
   * The slow path: a PUBLISH encoded for this one delivery — mount point
   * stripped, v5 subscription identifiers, the Message Expiry Interval reduced
   * by the time it waited [MQTT-3.3.2-6], an outbound topic alias. `commit`
   * false only measures (no alias is assigned).
   */
  private encodeSlow(
    message: Message,
    qos: QoS,
    retain: boolean,
    messageId: number,
    dup: boolean,
    ids: ReadonlyArray<number> | undefined,
    commit: boolean
  ): Buffer {
    const v5 = this.protocolVersion === 5
    let topic = this.mount !== "" && message.topic.startsWith(this.mount) ? message.topic.slice(this.mount.length) : message.topic
    let properties: PublishProperties | undefined = v5 ? message.properties : undefined
    if (v5) {
      const p: PublishProperties = { ...message.properties }
      if (ids !== undefined) p.subscriptionIdentifier = ids.length === 1 ? ids[0] : [...ids]
      const remaining = message.remainingExpiry(this.core.now())
      if (remaining !== undefined) p.messageExpiryInterval = remaining
      if (this.clientTopicAliasMax > 0) {
        const aliases = (this.outAliases ??= new Map())
        const known = aliases.get(topic)
        if (known !== undefined) {
          p.topicAlias = known
          topic = ""
        } else if (aliases.size < this.clientTopicAliasMax) {
          // bounded: once the client's maximum is used, other topics go out in full
          const alias = aliases.size + 1
          if (commit) aliases.set(topic, alias)
          p.topicAlias = alias
        }
      }
      properties = p
    }
    return encodePublish(
      { topic, payload: message.payload, qos, retain, dup, messageId: qos > 0 ? messageId : undefined, properties },
      this.protocolVersion
    ).buffer
  }

  pubrel(messageId: number): void {
    this.write(encodeAck("pubrel", messageId, this.protocolVersion, 0))
  }

  /** v5: a Reason String on server-sent DISCONNECT says why (not for normal ends). */
  private sendDisconnect(reasonCode: number, reasonString?: string): void {
    const properties = reasonString !== undefined && reasonString.length > 0 ? { reasonString } : undefined
    this.writeNow(encode({ cmd: "disconnect", reasonCode, ...(properties !== undefined ? { properties } : {}) }, 5))
  }

  /**
   * A PUBACK / PUBREC with a failure code; v5 adds a Reason String unless the
   * client asked for no problem information [MQTT-3.1.2-29].
   */
  private writeFailureAck(cmd: "puback" | "pubrec", messageId: number, code: number, why: string): void {
    if (this.protocolVersion !== 5 || code === 0 || !this.problemInformation) {
      this.write(encodeAck(cmd, messageId, this.protocolVersion, code))
    } else {
      this.write(encode({ cmd, messageId, reasonCode: code, properties: { reasonString: why } } as Packet, 5))
    }
  }

  // ---------------------------------------------------------------- backpressure

  private congested(): boolean {
    return (
      this.socket.writableLength + this.outBytes > HIGH_WATER_BYTES ||
      (this.session !== undefined && this.session.flow.queued > this.queueHigh)
    )
  }

  checkCongestion(source: PublishSource): void {
    if (source !== this && this.congested()) source.throttle(this)
  }

  addWaiter(source: PublishSource): void {
    ;(this.waiters ??= new Set()).add(source)
  }

  /** Held up by a congested subscriber: park publishes until it drains. */
  throttle(by: Congestible): void {
    if (this.state === "closed") return
    const before = (by as Connection).waiters?.has(this) === true
    if (before) return
    by.addWaiter(this)
    this.heldBy++
  }

  private release(): void {
    if (this.heldBy === 0) return
    this.heldBy--
    if (this.heldBy > 0 || this.state === "closed") return
    const parked = this.parked
    if (parked !== undefined) {
      this.parked = undefined
      for (let i = 0; i < parked.length; i++) {
        if (this.closed) return
        if (this.heldBy > 0) {
          // held up again while catching up: park the rest
          this.parked = parked.slice(i)
          return
        }
        this.handle(parked[i])
      }
    }
    this.resumeReading()
  }

  private releaseWaiters(): void {
    const waiters = this.waiters
    if (waiters === undefined || waiters.size === 0) return
    if (this.state !== "closed" && this.congested()) return
    this.waiters = undefined
    for (const w of waiters) (w as Connection).release()
  }

  private afterAck(_session: Session): void {
    if (this.waiters !== undefined) this.releaseWaiters()
  }

  /** the socket is not being read (backpressure), for monitoring and tests */
  get readingPaused(): boolean {
    return this.paused
  }

  /** bytes waiting to be written to this client */
  get pendingBytes(): number {
    return this.socket.writableLength + this.outBytes
  }

  private pauseReading(): void {
    if (!this.paused) {
      this.paused = true
      this.socket.pause()
    }
  }

  private resumeReading(): void {
    if (this.paused) {
      this.paused = false
      this.socket.resume()
    }
  }

  // ---------------------------------------------------------------- closing

  takenOver(): void {
    if (this.protocolVersion === 5 && this.state === "connected") this.sendDisconnect(ReasonCode.SessionTakenOver)
    this.close("takeover")
  }

  kick(reasonCode: number, reasonString?: string): void {
    if (this.state === "closed") return
    if (this.protocolVersion === 5 && this.state === "connected") this.sendDisconnect(reasonCode, reasonString)
    this.close("kicked")
  }

  /** The keepalive watchdog found 1.5 × keepalive of silence [MQTT-3.1.2-24]. */
  keepaliveExpired(): void {
    if (this.state === "closed") return
    if (this.protocolVersion === 5 && this.state === "connected") this.sendDisconnect(ReasonCode.KeepAliveTimeout)
    this.close("keepalive")
  }

  /** The broker is stopping. */
  shutdown(): void {
    if (this.state === "closed") return
    if (this.protocolVersion === 5 && this.state === "connected") this.sendDisconnect(ReasonCode.ServerShuttingDown)
    this.close("shutdown")
  }

  close(reason: CloseReason): void {
    if (this.state === "closed") return
    const wasConnected = this.state === "connected"
    this.state = "closed"
    this.closeReason = reason
    const core = this.core
    // what was parked still counts: a client that published then disconnected is served
    const parked = this.parked
    this.parked = undefined
    if (parked !== undefined && wasConnected && (reason === "disconnect" || reason === "disconnect-with-will" || reason === "closed")) {
      this.state = "connected"
      this.heldBy = 0
      for (const p of parked) if (p.cmd === "publish") this.handlePublish(p)
      this.state = "closed"
    }
    this.flush()
    if (!this.socket.destroyed) {
      this.socket.end()
      this.socket.destroySoon()
    }
    if (wasConnected) {
      core.stats.clientsConnected--
      if (core.attached.get(this.clientId) === this) core.attached.delete(this.clientId)
      const session = this.session!
      if (session.wire === this) {
        session.wire = undefined
        session.disconnectedAt = core.now()
        if (session.endsWithConnection) core.discardSession(session)
      }
      // [MQTT-3.1.2-8] the will goes on every end but a normal DISCONNECT [MQTT-3.1.2-10]
      const will = this.will
      this.will = undefined
      if (will !== undefined && reason !== "disconnect" && reason !== "shutdown" && (session.acl?.canPublish(will.topic) ?? true)) {
        const message = new Message(will.topic, will.payload, will.qos, will.retain, will.properties, this.clientId, core.now())
        if (this.willDelay > 0 && core.sessions.get(session.clientId) === session) {
          // v5 Will Delay Interval: at the earlier of the delay and the session's end; not if the client is back in time
          session.pendingWill = { message, at: core.now() + this.willDelay * 1000 }
        } else {
          core.router.publish(message)
        }
      }
      if (core.sessions.get(session.clientId) === session && session.wire === undefined) {
        const pending = session.pendingWill
        core.persist(
          session,
          pending === undefined
            ? undefined
            : {
                topic: pending.message.topic,
                payload: pending.message.payload,
                qos: pending.message.qos,
                retain: pending.message.retain,
                properties: pending.message.properties,
                delayInterval: Math.max(0, Math.ceil((pending.at - core.now()) / 1000))
              },
          true
        )
      }
      if (core.settings.connectionMessages) this.logClose(reason)
    }
    // publishers held up by this connection go on; this one stops waiting
    this.releaseWaiters()
    this.heldBy = 0
    this.hooks.closed(this)
  }

  private logClose(reason: CloseReason): void {
    const id = this.clientId
    switch (reason) {
      case "disconnect":
      case "disconnect-with-will":
        return this.log("notice", `Client ${id} disconnected.`)
      case "closed":
        return this.log("notice", `Client ${id} closed its connection.`)
      case "error":
        return this.log("notice", `Socket error on client ${id}, disconnecting.`)
      case "keepalive":
        return this.log("notice", `Client ${id} has exceeded timeout, disconnecting.`)
      case "takeover":
        return
      case "protocol":
        return this.log("notice", `Client ${id} disconnected due to protocol error.`)
      default:
        return this.log("notice", `Client ${id} disconnected.`)
    }
  }

  private log(type: "notice" | "information" | "subscribe" | "unsubscribe" | "debug", message: string): void {
    this.core.log.log(type, message)
  }
}

/** `$share/GROUP/FILTER` with the listener's mount point put on FILTER. */
const mountShared = (filter: string, mount: string): string => {
  if (mount === "") return filter
  const p = parseSharedFilter(filter)
  return p === undefined ? filter : `$share/${p.group}/${mount}${p.filter}`
}

/** The v5 properties a broker forwards with a message (not the per-hop ones). */
export const forwardedProperties = (
  p: mqtt.IPublishPacket["properties"] | NonNullable<mqtt.IConnectPacket["will"]>["properties"] | undefined
): MessageProperties | undefined => {
  if (p === undefined) return undefined
  let out: MessageProperties | undefined
  if (p.payloadFormatIndicator !== undefined) (out ??= {}).payloadFormatIndicator = p.payloadFormatIndicator
  if (p.messageExpiryInterval !== undefined) (out ??= {}).messageExpiryInterval = p.messageExpiryInterval
  if (p.contentType !== undefined) (out ??= {}).contentType = p.contentType
  if (p.responseTopic !== undefined) (out ??= {}).responseTopic = p.responseTopic
  if (p.correlationData !== undefined) (out ??= {}).correlationData = p.correlationData
  if (p.userProperties !== undefined) (out ??= {}).userProperties = p.userProperties
  return out
}
