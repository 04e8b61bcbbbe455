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
import { isUtf8 } from "node:buffer"
import { randomUUID } from "node:crypto"
import type * as mqtt from "mqtt-packet"
import {
  type AckCmd,
  encode,
  encodeAck,
  encodePublish,
  encodeSuback,
  PacketParser,
  PINGRESP,
  type Packet,
  type PublishFrame,
  withPacketId,
  writeAckAt,
  writeWithPacketIdAt,
  type ParseError,
  type PublishProperties
} from "../protocol/codec.js"
import { ConnackV4, ReasonCode } from "../protocol/reasonCodes.js"
import { dispatchControl, isControlTopic } from "../security/control.js"
import { isSharedFilterSyntax, parseSharedFilter, validateTopicFilter, validateTopicName } from "../protocol/topic.js"
import type { Congestible, PublishSource, SubscriptionOptions } from "../routing/Router.js"
import { copyInto, sliceOf } from "../runtime/bufferOps.js"
import { settleFields } from "../runtime/fieldShape.js"
import type { TlsIdentity } from "../transport/tls.js"
import type { MqttSocket } from "../transport/websocket.js"
import type { AttachedConnection, Core, Flushable } from "./Core.js"
import { Message, type MessageProperties, type QoS } from "./Message.js"
import { forwardedProperties } from "./forwardedProperties.js"
import type { Outgoing } from "./OutboundFlow.js"
import type { Session, SessionWire } from "./Session.js"
import { InboundAliases, OutboundAliases } from "./TopicAliases.js"

/** Bytes waiting for a subscriber above which its publishers are held up. */
const HIGH_WATER_BYTES = 1024 * 1024
/** A slow subscriber is one again once this little waits for it (hysteresis). */
const LOW_WATER_BYTES = 128 * 1024
/**
 * How long a congested subscriber may hold its publishers up. Past it, the
 * subscriber is slow: its publishers go on (its other subscribers keep their
 * rate) and its own backlog is bounded by dropping, by `max_queued_messages` /
 * `max_queued_bytes` as Mosquitto does.
 */
const HOLD_MS = 500
/** QoS 1 / 2 PUBLISH frames up to this size are copied into the outbox's staging buffer; larger ones get a copy of their own. */
const STAGE_FRAME_MAX = 2048
/** Staging buffer sizes (one per connection per turn, sized by the last turn). */
const STAGE_MIN = 256
const STAGE_MAX = 64 * 1024
/** Parked packets of a held-up publisher above which its socket stops being read. */
const PARK_LIMIT = 256
/** The socket's own connection, for the listeners every socket shares (`this` is the socket). */
const CONNECTION: unique symbol = Symbol("midge/Connection")
type OwnedSocket = MqttSocket & { [CONNECTION]: Connection }
/** CONNACK 0x00 Connection Accepted (v3 / v4), session present 0 or 1 [MQTT-3.2.2-1..3] */
const CONNACK_ACCEPTED = Buffer.from([0x20, 0x02, 0x00, 0x00])
const CONNACK_ACCEPTED_PRESENT = Buffer.from([0x20, 0x02, 0x01, 0x00])

/**
 * `onData`'s list of the packets parsed from one chunk: one array for every connection, not one
 * each (an idle connection keeps nothing of its reads). A nested `onData` (not expected: handlers
 * write, they do not read) finds it taken and uses an array of its own.
 */
let packetScratch: Array<Packet> | undefined = []
/** the connection whose read `onData` is handling the last packet of, while it does: its reply may be written at once (`writeReply`) */
let replying: Connection | undefined = undefined

/** `segs` while a connection has none: shared, frozen (`pushSeg` replaces it before any write) */
const NO_SEGS: Array<Buffer> = Object.freeze([]) as unknown as Array<Buffer>

export type CloseReason =
  | "disconnect" // DISCONNECT received
  | "disconnect-with-will" // v5 DISCONNECT 0x04
  | "closed" // the peer closed the socket without DISCONNECT
  | "error" // socket error
  | "keepalive" // 1.5 × keepalive of silence [MQTT-3.1.2-24]
  | "takeover" // another connection with the same client id [MQTT-3.1.4-3]
  | "protocol" // a protocol violation
  | "malformed" // a malformed packet
  | "oversize" // a packet over the maximum packet size
  | "connect-timeout" // no CONNECT in time
  | "refused" // CONNACK with a failure code
  | "kicked" // closed by the broker (administrative action); the will is published
  | "shutdown" // the broker is stopping

/** What a connection takes from the listener it arrived on (per_listener_settings). */
export interface ListenerSettings {
  readonly port: number
  /** `mount_point`: prefix of every topic of this listener's clients */
  readonly mountPoint: string | undefined
  /** `max_qos`: the highest QoS a client of this listener may use */
  readonly maxQos: 0 | 1 | 2
  /** `accept_protocol_versions`: the MQTT versions served (3: 3.1, 4: 3.1.1, 5); undefined: all */
  readonly acceptProtocolVersions?: ReadonlyArray<3 | 4 | 5> | undefined
  /** per-listener values; undefined: the broker-wide setting */
  readonly allowAnonymous: boolean | undefined
  readonly allowZeroLengthClientid: boolean | undefined
  readonly autoIdPrefix: string | undefined
  /** `max_topic_alias`: the CONNACK's Topic Alias Maximum (v5); undefined: the broker-wide setting */
  readonly maxTopicAlias?: number | undefined
  /** `max_topic_alias_broker`: aliases the broker may use towards a v5 client; undefined: 10 (Mosquitto 2.1's default) */
  readonly maxTopicAliasBroker?: number | undefined
  /** `use_username_as_clientid`: the client id becomes the username; a client without one is not authorised */
  readonly useUsernameAsClientid?: boolean | undefined
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
  /** v5: `userProperties` go on the CONNACK (or the AUTH 0x00 of a re-authentication) */
  | { readonly _tag: "Accept"; readonly username: string | undefined; readonly data?: Buffer | undefined; readonly userProperties?: UserProperties | undefined }
  /** v5 enhanced authentication: send AUTH 0x18 with this data and wait for the client's AUTH */
  | { readonly _tag: "Continue"; readonly data?: Buffer | undefined; readonly next: (data: Buffer | undefined) => void }
  /** refused: CONNACK / DISCONNECT with this code; v5 0x9C / 0x9D carry a Server Reference */
  | {
      readonly _tag: "Refuse"
      readonly v4Code: number
      readonly v5Code: number
      readonly why: string
      readonly serverReference?: string | undefined
      /** v5: a Reason String and User Properties for the client, on CONNACK / DISCONNECT (`why` is only logged) */
      readonly reasonString?: string | undefined
      readonly userProperties?: UserProperties | undefined
    }

/** v5 User Properties as mqtt-packet carries them: a name, one value or several */
export type UserProperties = Readonly<Record<string, string | ReadonlyArray<string>>>

/** the CONNACK / DISCONNECT properties a refusal carries, if any */
const refusalProperties = (
  outcome: { readonly reasonString?: string | undefined; readonly userProperties?: UserProperties | undefined },
  serverReference?: string
): Record<string, unknown> | undefined => {
  let p: Record<string, unknown> | undefined
  if (serverReference !== undefined) (p ??= {}).serverReference = serverReference
  if (outcome.reasonString !== undefined && outcome.reasonString.length > 0) (p ??= {}).reasonString = outcome.reasonString
  if (outcome.userProperties !== undefined && Object.keys(outcome.userProperties).length > 0) (p ??= {}).userProperties = outcome.userProperties
  return p
}

/**
 * A v5 packet the server sends, encoded within the client's Maximum Packet Size (`max`, 0: none):
 * "The Server MUST NOT send packets exceeding Maximum Packet Size to the Client" [MQTT-3.1.2-24],
 * and a Reason String or User Properties are left out rather than make a packet too large
 * ([MQTT-3.2.2-19] [MQTT-3.2.2-20] for CONNACK, and the same rule for every packet carrying them).
 * So are the properties whose value is the one the client assumes when they are absent
 * (`defaults`: a CONNACK's). Undefined: the packet cannot be made to fit.
 */
export const encodeWithin = (packet: Packet, max: number, defaults: Readonly<Record<string, unknown>> = {}): Buffer | undefined => {
  const bytes = encode(packet, 5)
  if (max === 0 || bytes.length <= max) return bytes
  const properties = (packet as { properties?: Record<string, unknown> }).properties
  if (properties === undefined) return undefined
  const kept: Record<string, unknown> = {}
  for (const key of Object.keys(properties)) {
    if (key !== "reasonString" && key !== "userProperties" && properties[key] !== defaults[key]) kept[key] = properties[key]
  }
  const trimmed = encode({ ...packet, properties: Object.keys(kept).length > 0 ? kept : undefined } as Packet, 5)
  return trimmed.length <= max ? trimmed : undefined
}

/** what a client assumes of the CONNACK properties it is not sent (MQTT 5 §3.2.2.3) */
const CONNACK_DEFAULTS: Readonly<Record<string, unknown>> = {
  retainAvailable: true,
  sharedSubscriptionAvailable: true,
  subscriptionIdentifiersAvailable: true,
  wildcardSubscriptionAvailable: true
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

/** A connection's rarely used state (see `Connection.rare`); its initial values are the fields' defaults. */
class RareState {
  /** the CONNACK code (3.1.1's) a refused CONNECT got, for the close's log line */
  refusedWith = 0
  /** the will, from CONNECT */
  will: Will | undefined = undefined
  /** v5 Will Delay Interval in seconds */
  willDelay = 0
  /** backpressure: when (performance.now) this subscriber began holding publishers up; -1: it does not */
  holdingSince = -1
  holdTimer: ReturnType<typeof setTimeout> | undefined = undefined
  // backpressure: publishers held up by this connection, and how many hold this one up
  waiters: Set<PublishSource> | undefined = undefined
  heldBy = 0
  /** packets read while authentication or backpressure holds this connection up, in order */
  parked: Array<Packet> | undefined = undefined
  /** cluster: the client id's ownership was settled for this CONNECT */
  claimed = false
  paused = false
  /** the client's Topic Alias Maximum: aliases the broker may use towards it */
  clientTopicAliasMax = 0
  outAliases: OutboundAliases | undefined = undefined
  /** the broker's Topic Alias Maximum (inbound aliases) */
  topicAliasMax = 0
  inAliases: InboundAliases | undefined = undefined
  /** v5 enhanced authentication: the method of the CONNECT, and the step awaited */
  authMethod: string | undefined = undefined
  authContinue: ((data: Buffer | undefined) => void) | undefined = undefined
  /** v5: User Properties the authentication service put on its acceptance (for the CONNACK) */
  acceptProperties: UserProperties | undefined = undefined
  /** the CONNECT's username and password (the password copied), for a check again after a reload (`authRequest`) */
  connectCredentials: { readonly username: string | undefined; readonly password: Buffer | undefined } | undefined = undefined
}

/** the first connection has had its late-changing fields settled (runtime/fieldShape.ts) */
let settled = false

/** what `Connection.rare` is until a field gets another value than its default: shared, frozen */
const NO_RARE: RareState = Object.freeze(new RareState())

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
  /** the listener's Watchdog: this connection's heap slot (-1: none) and due time */
  watchIndex = -1
  watchAt = 0
  /** the peer's address:port, for log lines */
  get remote(): string {
    return `${this.socket.remoteAddress ?? "unknown"}:${this.socket.remotePort ?? 0}`
  }
  // outbox: what is not handed to the socket yet, in order. Acknowledgements and
  // QoS 1 / 2 PUBLISH (a patched copy each) are written into a staging buffer of
  // the turn (one allocation per turn, not one per frame, and no concatenation
  // when the turn has nothing else); other frames (a shared QoS 0 frame, CONNACK,
  // ...) are kept by reference. `segs` are the pieces in order (`NO_SEGS` until the first).
  private segs: Array<Buffer> = NO_SEGS
  /** frames in each staged segment (a segment not in it is one frame) */
  private segFrames: Map<Buffer, number> | undefined = undefined
  private stage: Buffer | undefined = undefined
  private stageStart = 0
  private stageLen = 0
  private stageFrames = 0
  /** bytes staged in the last turn: the next turn's staging size */
  private stageHint = 0
  /** bytes and frames in `segs` and the stage */
  private outBytes = 0
  private outFrames = 0
  private flushScheduled = false
  /** the socket's buffer is over its high-water mark: frames wait in the outbox for 'drain' */
  private blocked = false
  /** held publishers up for HOLD_MS without relief: publishers go on, QoS 0 over the queue limits is dropped */
  private slow = false
  /** "Outgoing messages are being dropped" was logged for this slow episode */
  private dropping = false
  private readonly queueHigh: number
  /** `mount_point` of the listener, "" for none */
  private readonly mount: string
  // MQTT 5 per-connection state
  /** the client's Maximum Packet Size (0: none) [MQTT-3.1.2-24] */
  private clientMaxPacketSize = 0
  /** the broker's Receive Maximum: QoS 2 PUBLISH awaiting PUBREL at once */
  private receiveMaximum = 65535
  /** v5 Request Problem Information (default 1) */
  private problemInformation = true
  /** the username authentication settled on (ACLs use it) */
  username: string | undefined = undefined
  /** the client is a bridge (CONNECT with the bridge bit) */
  private bridge = false
  /**
   * What most connections never use — a will, backpressure, parked packets, topic aliases,
   * enhanced authentication — lives in a `RareState` of the connection's own, made on the first
   * write of another value than the one held (until then the shared `NO_RARE` holds the
   * defaults): ~130 bytes less per idle connection (docs/performance.md). The accessors keep the
   * code that reads and writes these fields as it was.
   */
  private rare: RareState = NO_RARE
  private more(): RareState {
    return this.rare === NO_RARE ? (this.rare = new RareState()) : this.rare
  }
  private get will(): Will | undefined {
    return this.rare.will
  }
  private set will(value: Will | undefined) {
    if (value !== this.rare.will) this.more().will = value
  }
  private get willDelay(): number {
    return this.rare.willDelay
  }
  private set willDelay(value: number) {
    if (value !== this.rare.willDelay) this.more().willDelay = value
  }
  private get holdingSince(): number {
    return this.rare.holdingSince
  }
  private set holdingSince(value: number) {
    if (value !== this.rare.holdingSince) this.more().holdingSince = value
  }
  private get holdTimer(): ReturnType<typeof setTimeout> | undefined {
    return this.rare.holdTimer
  }
  private set holdTimer(value: ReturnType<typeof setTimeout> | undefined) {
    if (value !== this.rare.holdTimer) this.more().holdTimer = value
  }
  private get waiters(): Set<PublishSource> | undefined {
    return this.rare.waiters
  }
  private set waiters(value: Set<PublishSource> | undefined) {
    if (value !== this.rare.waiters) this.more().waiters = value
  }
  private get heldBy(): number {
    return this.rare.heldBy
  }
  private set heldBy(value: number) {
    if (value !== this.rare.heldBy) this.more().heldBy = value
  }
  private get parked(): Array<Packet> | undefined {
    return this.rare.parked
  }
  private set parked(value: Array<Packet> | undefined) {
    if (value !== this.rare.parked) this.more().parked = value
  }
  private get claimed(): boolean {
    return this.rare.claimed
  }
  private set claimed(value: boolean) {
    if (value !== this.rare.claimed) this.more().claimed = value
  }
  private get paused(): boolean {
    return this.rare.paused
  }
  private set paused(value: boolean) {
    if (value !== this.rare.paused) this.more().paused = value
  }
  private get clientTopicAliasMax(): number {
    return this.rare.clientTopicAliasMax
  }
  private set clientTopicAliasMax(value: number) {
    if (value !== this.rare.clientTopicAliasMax) this.more().clientTopicAliasMax = value
  }
  private get outAliases(): OutboundAliases | undefined {
    return this.rare.outAliases
  }
  private set outAliases(value: OutboundAliases | undefined) {
    if (value !== this.rare.outAliases) this.more().outAliases = value
  }
  private get topicAliasMax(): number {
    return this.rare.topicAliasMax
  }
  private set topicAliasMax(value: number) {
    if (value !== this.rare.topicAliasMax) this.more().topicAliasMax = value
  }
  private get inAliases(): InboundAliases | undefined {
    return this.rare.inAliases
  }
  private set inAliases(value: InboundAliases | undefined) {
    if (value !== this.rare.inAliases) this.more().inAliases = value
  }
  private get authMethod(): string | undefined {
    return this.rare.authMethod
  }
  private set authMethod(value: string | undefined) {
    if (value !== this.rare.authMethod) this.more().authMethod = value
  }
  private get authContinue(): ((data: Buffer | undefined) => void) | undefined {
    return this.rare.authContinue
  }
  private set authContinue(value: ((data: Buffer | undefined) => void) | undefined) {
    if (value !== this.rare.authContinue) this.more().authContinue = value
  }
  private get connectCredentials(): RareState["connectCredentials"] {
    return this.rare.connectCredentials
  }
  private set connectCredentials(value: RareState["connectCredentials"]) {
    if (value !== this.rare.connectCredentials) this.more().connectCredentials = value
  }
  private get acceptProperties(): UserProperties | undefined {
    return this.rare.acceptProperties
  }
  private set acceptProperties(value: UserProperties | undefined) {
    if (value !== this.rare.acceptProperties) this.more().acceptProperties = value
  }

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
    core.stats.socketsOpened++
    const maxQueued = core.settings.maxQueuedMessages
    this.queueHigh = maxQueued > 0 ? Math.max(1, maxQueued >> 1) : 1000
    if (core.settings.setTcpNodelay) socket.setNoDelay(true)
    // the same four listener functions for every socket: no closures per connection
    ;(socket as OwnedSocket)[CONNECTION] = this
    socket.on("data", Connection.onSocketData)
    socket.on("error", Connection.onSocketError)
    socket.on("end", Connection.onSocketClosed)
    socket.on("close", Connection.onSocketClosed)
    socket.on("drain", Connection.onSocketDrain)
    if (!settled) {
      settled = true
      // `closeReason` is set when the connection ends; `watchAt` is a clock time (a double)
      settleFields(this, ["closeReason"], ["watchAt"])
    }
  }

  private static onSocketData(this: OwnedSocket, chunk: Buffer): void {
    this[CONNECTION].onData(chunk)
  }

  private static onSocketError(this: OwnedSocket): void {
    this[CONNECTION].close("error")
  }

  private static onSocketClosed(this: OwnedSocket): void {
    this[CONNECTION].close("closed")
  }

  private static onSocketDrain(this: OwnedSocket): void {
    this[CONNECTION].onDrain()
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
    const packets = packetScratch ?? []
    packetScratch = undefined
    let error: ParseError | undefined
    try {
      error = this.parser.parse(chunk, packets)
      this.core.stats.packetsReceived += packets.length
      const last = packets.length - 1
      for (let i = 0; i <= last; i++) {
        if (this.closed) break
        const packet = packets[i]
        replying = i === last ? this : undefined
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
    } finally {
      replying = undefined
      packets.length = 0
      packetScratch = packets
    }
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
      // Mosquitto's lines (handle_connect.c); [MQTT-3.1.2-2] an unacceptable protocol level gets CONNACK 0x01, an unknown name none
      const address = this.socket.remoteAddress ?? "unknown"
      if (error.connectError === "bad-protocol-version") {
        this.log("information", `Invalid protocol version ${error.detail ?? "?"} in CONNECT from ${address}.`)
        if (this.core.log.debugOn) this.log("debug", `Sending CONNACK to ${address} (0, ${ConnackV4.UnacceptableProtocolVersion})`)
        this.writeNow(encode({ cmd: "connack", returnCode: ConnackV4.UnacceptableProtocolVersion, sessionPresent: false }, 4))
      } else if (this.core.settings.connectionMessages) {
        this.log("information", `Invalid protocol "${error.detail ?? ""}" in CONNECT from ${address}.`)
      }
      this.close("protocol")
      return
    }
    // handle_publish.c's line for a PUBLISH at QoS 3
    if (this.state === "connected" && error.message.startsWith("QoS 3 in PUBLISH")) this.log("information", `Invalid QoS in PUBLISH from ${this.clientId}, disconnecting.`)
    const code = error.reason === "too-large" ? ReasonCode.PacketTooLarge : error.reason === "malformed" ? ReasonCode.MalformedPacket : ReasonCode.ProtocolError
    this.protocolError(code, error.message)
  }

  /**
   * An acknowledgement for a message in flight at another QoS or another step of its handshake (a
   * PUBACK for a QoS 2 message, a PUBREC or PUBCOMP for a QoS 1 one, a PUBCOMP before the PUBREC): a
   * protocol violation, which closes the connection (3.1.1 [MQTT-4.8.0-1]; MQTT 5 §4.13), as Mosquitto does.
   * The message stays in flight: a persistent session sends it again at the next connection.
   */
  private wrongAck(cmd: string, messageId: number): void {
    const state = this.session?.flow.stateOf(messageId)
    this.protocolError(ReasonCode.ProtocolError, `${cmd} for packet ${messageId}, which is in flight ${state === "await-puback" ? "at QoS 1" : state === "await-pubrec" ? "at QoS 2, before its PUBREC" : "at QoS 2"}`)
  }

  /**
   * PUBCOMP, or a v5 PUBREC with a failure code (`await-pubrec`): the QoS 2 flow of `id` ends if it
   * awaits that acknowledgement. In a cluster the in-flight record in Redis follows (docs/cluster.md),
   * for a flow that ends here only: checked first. Outside one the flow is looked up once.
   */
  private endFlow(session: Session, id: number, state: "await-pubrec" | "await-pubcomp"): void {
    const cmd = state === "await-pubcomp" ? "PUBCOMP" : "PUBREC"
    const cluster = this.core.cluster
    if (cluster !== undefined && session.expiryInterval !== 0) {
      if (session.flow.ackOutcome(id, state) === "wrong") return this.wrongAck(cmd, id)
      cluster.outboundDone(session, id)
    }
    const outcome = state === "await-pubcomp" ? session.flow.onPubcomp(id, this, true) : session.flow.onPubrecFailure(id, this, true)
    if (outcome === "wrong") return this.wrongAck(cmd, id)
    this.afterAck(session)
  }

  /** Close for a protocol violation; v5 clients get DISCONNECT with the reason code first. */
  protocolError(reasonCode: number, why: string): void {
    if (this.state === "closed") return
    // the details (information), then Mosquitto's notice line as the connection closes (logClose)
    this.log("information", `Client ${this.clientId || "<unknown>"} from ${this.remote} disconnected: ${why}.`)
    if (this.state === "connected" && this.protocolVersion === 5) this.sendDisconnect(reasonCode, why)
    this.close(reasonCode === ReasonCode.MalformedPacket ? "malformed" : reasonCode === ReasonCode.PacketTooLarge ? "oversize" : "protocol")
  }

  private handle(packet: Packet): void {
    if (this.state !== "connected") {
      if (packet.cmd === "connect" && this.state === "new") return this.handleConnect(packet)
      if (packet.cmd === "auth" && this.state === "connecting" && this.authContinue !== undefined) return this.handleAuth(packet)
      // [MQTT-3.1.0-1] the first packet must be CONNECT
      return this.protocolError(ReasonCode.ProtocolError, `first packet was ${packet.cmd}, not connect`)
    }
    if (this.core.log.debugOn) this.traceReceived(packet)
    switch (packet.cmd) {
      case "publish":
        return this.handlePublish(packet)
      case "puback": {
        const session = this.session!
        if (session.flow.onPuback(packet.messageId!, this, true) === "wrong") return this.wrongAck("PUBACK", packet.messageId!)
        this.afterAck(session)
        return
      }
      case "pubrec": {
        const session = this.session!
        const id = packet.messageId!
        if (this.protocolVersion === 5 && (packet.reasonCode ?? 0) >= 0x80) return this.endFlow(session, id, "await-pubrec")
        const outcome = session.flow.onPubrec(id, this)
        if (outcome === "wrong") return this.wrongAck("PUBREC", id)
        // unknown id: v5 answers PUBREL 0x92; v3/v4 release it anyway
        if (outcome === "unknown") this.ack("pubrel", id, this.protocolVersion === 5 ? ReasonCode.PacketIdentifierNotFound : 0)
        return
      }
      case "pubrel": {
        const known = this.session!.qos2.onPubrel(packet.messageId!)
        if (known && this.session!.flow.observer !== undefined) this.core.store?.inboundQos2Release(this.clientId, packet.messageId!)
        const cluster = this.core.cluster
        // cluster: PUBCOMP once Redis forgot the id too (the client may reuse it then)
        if (known && cluster !== undefined) {
          const id = packet.messageId!
          cluster.inboundQos2(this.clientId, id, false)
          cluster.whenForwarded(() => this.ack("pubcomp", id, 0))
          return
        }
        this.ack("pubcomp", packet.messageId!, !known && this.protocolVersion === 5 ? ReasonCode.PacketIdentifierNotFound : 0)
        return
      }
      case "pubcomp":
        return this.endFlow(this.session!, packet.messageId!, "await-pubcomp")
      case "pingreq":
        // staged, not kept by reference: a client that only pings keeps no outbox array
        if (this.core.log.debugOn) this.log("debug", `Sending PINGRESP to ${this.clientId}`)
        this.writeReply(PINGRESP)
        return
      case "subscribe":
        return this.handleSubscribe(packet)
      case "unsubscribe":
        return this.handleUnsubscribe(packet)
      case "disconnect":
        return this.handleDisconnect(packet)
      case "connect":
        // [MQTT-3.1.0-2] a second CONNECT is a protocol violation (and handle_connect.c's line)
        this.log("notice", `Bad client ${this.clientId} sending multiple CONNECT messages.`)
        return this.protocolError(ReasonCode.ProtocolError, "second CONNECT")
      case "auth":
        return this.handleAuth(packet)
      default:
        return this.protocolError(ReasonCode.ProtocolError, `unexpected ${packet.cmd} from a client`)
    }
  }

  // ---------------------------------------------------------------- CONNECT

  private refuse(
    v4Code: number,
    v5Code: number,
    why: string,
    serverReference?: string,
    /** v5: what the authentication service wants the client told */
    told?: { readonly reasonString?: string | undefined; readonly userProperties?: UserProperties | undefined }
  ): void {
    this.log("information", `Client ${this.clientId || "<unknown>"} from ${this.remote} refused: ${why}.`)
    this.more().refusedWith = v4Code
    if (this.core.log.debugOn) this.log("debug", `Sending CONNACK to ${this.socket.remoteAddress ?? "unknown"} (0, ${this.protocolVersion === 5 ? v5Code : v4Code})`)
    if (this.protocolVersion === 5) {
      // 0x9C Use another server / 0x9D Server moved carry a Server Reference; a Reason String and
      // User Properties may go on any CONNACK [MQTT-3.2.2-19] [MQTT-3.2.2-20]
      const properties = refusalProperties(told ?? {}, serverReference)
      const connack = encodeWithin({ cmd: "connack", reasonCode: v5Code, sessionPresent: false, ...(properties ? { properties } : {}) }, this.clientMaxPacketSize)
      if (connack !== undefined) this.writeNow(connack)
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
    // `accept_protocol_versions` (Mosquitto 2.1, handle_connect.c check_protocol_version): CONNACK
    // "unacceptable protocol version", 0x01 for 3.1 / 3.1.1 and 0x84 for MQTT 5
    const accepted = this.listener.acceptProtocolVersions
    if (accepted !== undefined && !accepted.includes(this.protocolVersion)) {
      return this.refuse(
        ConnackV4.UnacceptableProtocolVersion,
        ReasonCode.UnsupportedProtocolVersion,
        `MQTT ${this.protocolVersion === 3 ? "3.1" : this.protocolVersion === 4 ? "3.1.1" : "5"} not accepted on this listener (accept_protocol_versions)`
      )
    }
    if (!v5 && packet.password !== undefined && packet.username === undefined) {
      // [MQTT-3.1.2-22] no password without a username in 3.1.1 (MQTT 5 allows it): closed without CONNACK, as handle_connect.c
      this.log("error", `Protocol error from ${packet.clientId ?? ""}: password without username, closing connection.`)
      return this.close("protocol")
    }
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

    // keepalive: v3/v4 above max_keepalive is refused; v5 is told the Server Keep Alive; `max_keepalive 0`: no maximum (handle_connect.c)
    let keepalive = packet.keepalive ?? 0
    let serverKeepAlive: number | undefined
    const maxKeepalive = settings.maxKeepalive
    if (maxKeepalive !== 0 && (keepalive > maxKeepalive || (keepalive === 0 && maxKeepalive < 65535))) {
      if (!v5) return this.refuse(ConnackV4.IdentifierRejected, ReasonCode.ClientIdentifierNotValid, "keepalive above max_keepalive")
      keepalive = maxKeepalive
      serverKeepAlive = keepalive
    }
    this.keepalive = keepalive

    if (packet.will !== undefined) {
      const w = packet.will
      if (!validateTopicName(w.topic)) {
        if (v5) return this.refuse(ConnackV4.IdentifierRejected, ReasonCode.TopicNameInvalid, "invalid will topic")
        // 3.1 and 3.1.1 have no return code for it (0x02 would say the client id was refused): closed, as Mosquitto does
        this.log("notice", `Client ${clientId || "<unknown>"} from ${this.remote} refused: invalid will topic.`)
        return this.close("refused")
      }
      // `max_qos`: a will above it is refused, v5 with 0x9B [MQTT-3.2.2-12]; 3.1.1 has no code for it (closed, as Mosquitto)
      if ((w.qos ?? 0) > this.listener.maxQos) {
        if (v5) return this.refuse(ConnackV4.NotAuthorized, ReasonCode.QoSNotSupported, `will QoS ${w.qos} above max_qos ${this.listener.maxQos}`)
        this.log("notice", `Client ${clientId || "<unknown>"} from ${this.remote} refused: will QoS ${w.qos} above max_qos ${this.listener.maxQos}.`)
        return this.close("refused")
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

    // what the server sends from now on, the CONNACK included, fits in it [MQTT-3.1.2-24]
    if (v5) this.clientMaxPacketSize = packet.properties?.maximumPacketSize ?? 0
    const method = v5 ? packet.properties?.authenticationMethod : undefined
    // [MQTT-3.1.2.11.10] "It is a Protocol Error to include Authentication Data if there is no
    // Authentication Method"; Debian's Mosquitto 2.0.11 accepts it and ignores the data (docs/mqtt5.md)
    if (method === undefined && v5 && packet.properties?.authenticationData !== undefined) {
      return this.refuse(ConnackV4.NotAuthorized, ReasonCode.ProtocolError, "authentication data without an authentication method")
    }
    this.authMethod = method
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
          return this.refuse(outcome.v4Code, outcome.v5Code, outcome.why, outcome.serverReference, outcome)
        case "Continue":
          // [MQTT-4.12.0-?] AUTH 0x18 Continue authentication, then wait for the client's AUTH
          this.authContinue = outcome.next
          this.sendAuth(0x18, method, outcome.data)
          return
        case "Accept":
          this.authContinue = undefined
          this.acceptProperties = outcome.userProperties
          return this.completeConnect(packet, clean, assigned, serverKeepAlive, outcome.username, outcome.data)
      }
    }
    // the request only for a service that reads it: an anonymous broker's connect makes none
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
        case "Refuse": {
          // a failed re-authentication ends the connection [MQTT-4.12.1-2]
          this.log("notice", `Client ${this.clientId} failed re-authentication: ${outcome.why}.`)
          const disconnect = encodeWithin(
            { cmd: "disconnect", reasonCode: outcome.v5Code, properties: refusalProperties({ reasonString: outcome.reasonString ?? outcome.why, userProperties: outcome.userProperties }) } as Packet,
            this.clientMaxPacketSize
          )
          if (disconnect !== undefined) this.writeNow(disconnect)
          return this.close("refused")
        }
        case "Continue":
          this.authContinue = outcome.next
          this.sendAuth(0x18, method, outcome.data)
          return
        case "Accept":
          this.authContinue = undefined
          // no User Properties on AUTH when the client asked for no problem information [MQTT-3.1.2-29]
          this.sendAuth(0x00, method, outcome.data, this.problemInformation ? outcome.userProperties : undefined)
          return
      }
    }
    hook(this, request, done)
  }

  /** AUTH: 0x18 continue, 0x00 re-authentication accepted */
  private sendAuth(reasonCode: number, method: string | undefined, data: Buffer | undefined, userProperties?: UserProperties): void {
    if (this.core.log.debugOn) this.log("debug", `Sending AUTH to ${this.clientId} (rc${reasonCode}, ${method ?? ""})`)
    const properties = { authenticationMethod: method, ...(data ? { authenticationData: data } : {}), ...(userProperties !== undefined ? { userProperties } : {}) }
    const auth = encodeWithin({ cmd: "auth", reasonCode, properties } as Packet, this.clientMaxPacketSize)
    if (auth !== undefined) this.write(auth)
    else this.protocolError(ReasonCode.PacketTooLarge, "the AUTH is larger than the client's Maximum Packet Size")
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
    // use_username_as_clientid (handle_connect.c): the username, from the CONNECT or the TLS identity, is the client id
    if (this.listener.useUsernameAsClientid === true && this.clientId !== username) {
      if (username === undefined) return this.refuse(ConnackV4.NotAuthorized, ReasonCode.NotAuthorized, "not authorised")
      this.clientId = username
      if (assigned !== undefined) assigned = username
    }
    // `global_max_clients` (Mosquitto 2.1): sessions, connected or kept offline, other than the one this
    // client resumes; on this node (a cluster's nodes count their own). Before the cluster's claim, which
    // would take the session from another node.
    const maxClients = core.settings.globalMaxClients
    if (maxClients > 0 && !this.claimed && core.sessions.size - (core.sessions.has(this.clientId) ? 1 : 0) >= maxClients) {
      // MQTT 5: 0x89 Server busy, as Mosquitto; where Mosquitto closes a 3.1 / 3.1.1 client without a word, 0x03 Server unavailable
      return this.refuse(ConnackV4.ServerUnavailable, ReasonCode.ServerBusy, `global_max_clients (${maxClients}) reached`)
    }
    const settings = core.settings
    const v5 = this.protocolVersion === 5
    const clientId = this.clientId
    // v5: the CONNACK first, as it must fit in the client's Maximum Packet Size; else no session is taken
    // (before the cluster's claim too, which would take the session from another node)
    let v5Connack: Buffer | undefined
    if (v5) {
      this.topicAliasMax = this.listener.maxTopicAlias ?? settings.maxTopicAlias
      this.receiveMaximum = settings.maxInflightMessages > 0 ? settings.maxInflightMessages : 65535
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
      // `max_qos` below 2: told in Maximum QoS [MQTT-3.2.2-9]
      if (this.listener.maxQos < 2) properties.maximumQoS = this.listener.maxQos as 0 | 1
      if (assigned !== undefined) properties.assignedClientIdentifier = assigned
      if (serverKeepAlive !== undefined) properties.serverKeepAlive = serverKeepAlive
      if (this.authMethod !== undefined) {
        properties.authenticationMethod = this.authMethod
        if (authData !== undefined) properties.authenticationData = authData
      }
      // what the authentication service attached to its acceptance
      if (this.acceptProperties !== undefined) properties.userProperties = this.acceptProperties as NonNullable<typeof properties.userProperties>
      // session present: set below, once the session is open
      v5Connack = encodeWithin({ cmd: "connack", reasonCode: 0, sessionPresent: false, properties }, this.clientMaxPacketSize, CONNACK_DEFAULTS)
      if (v5Connack === undefined) {
        // nothing can tell the client it is in: closed without a CONNACK, as Mosquitto's send__connack does (packet__check_oversize)
        this.log("notice", `Client ${clientId} from ${this.remote} refused: its Maximum Packet Size (${this.clientMaxPacketSize}) is smaller than the CONNACK.`)
        return this.close("refused")
      }
    }

    // cluster: this node becomes the client id's owner first (another node lets the session go)
    const cluster = core.cluster
    if (cluster !== undefined && !this.claimed) {
      this.claimed = true
      return cluster.claim(this.clientId, clean, () => {
        if (this.state === "connecting") this.completeConnect(packet, clean, assigned, serverKeepAlive, username, authData)
      })
    }
    const keepalive = this.keepalive
    this.username = username
    if (packet.username !== undefined || packet.password !== undefined) {
      this.connectCredentials = { username: packet.username, password: packet.password === undefined ? undefined : Buffer.from(packet.password) }
    }

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
      this.problemInformation = props?.requestProblemInformation !== false
      // the aliases this connection's PUBLISHes may use: the client's Topic Alias Maximum, at most max_topic_alias_broker
      this.clientTopicAliasMax = Math.min(props?.topicAliasMaximum ?? 0, this.listener.maxTopicAliasBroker ?? 10)
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
    core.clientConnected()

    if (v5Connack !== undefined) {
      // the flags byte follows the fixed header: its first byte, then the Remaining Length's 1 to 4
      if (present) {
        let i = 1
        while ((v5Connack[i] & 0x80) !== 0) i++
        v5Connack[i + 1] = 1
      }
      this.writeReply(v5Connack)
    } else {
      // [MQTT-3.2.2-1..3] session present is 0 for a clean session
      // the bytes mqtt-packet's generate gives (v3 and v4 alike), without its cost on every connect
      this.writeReply(present ? CONNACK_ACCEPTED_PRESENT : CONNACK_ACCEPTED)
    }
    if (core.settings.connectionMessages) {
      this.log(
        "notice",
        `New client connected from ${this.socket.remoteAddress ?? "unknown"}:${this.socket.remotePort ?? 0} as ${clientId} (p${this.protocolVersion === 3 ? 1 : this.protocolVersion === 4 ? 2 : 5}, c${clean ? 1 : 0}, k${keepalive}${username !== undefined ? `, u'${username}'` : ""}).`
      )
    }
    if (core.log.debugOn) this.traceConnack(present)
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
    const v5Properties = this.protocolVersion === 5 ? packet.properties : undefined
    if (v5Properties !== undefined) {
      const wrong = publishPropertyError(v5Properties)
      if (wrong !== undefined) return this.protocolError(ReasonCode.ProtocolError, wrong)
    }
    if (packet.qos > 0 && (packet.messageId ?? 0) === 0) {
      // [MQTT-2.2.1-3] (3.1.1: [MQTT-2.3.1-1]) QoS 1 and 2 need a non-zero Packet Identifier; v3 / v4 are closed
      // without a word, as Mosquitto's handle__publish does for every version (the codec lets id 0 through)
      return this.protocolError(ReasonCode.ProtocolError, "packet identifier 0 in a QoS > 0 PUBLISH")
    }
    const alias = v5Properties?.topicAlias
    if (alias !== undefined) {
      // [MQTT-3.3.2-8] 0 or above our maximum: 0x94; an alias never set: 0x82 (TopicAliases.ts)
      const resolved = (this.inAliases ??= new InboundAliases(this.topicAliasMax)).resolve(topic, alias)
      if (typeof resolved !== "string") return this.protocolError(resolved.reasonCode, resolved.why)
      topic = resolved
    } else if (topic.length === 0 && this.protocolVersion === 5) {
      // §3.3.4: a zero length topic without a Topic Alias is a Protocol Error (not 0x90)
      return this.protocolError(ReasonCode.ProtocolError, "empty topic without a topic alias")
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
      if (core.log.debugOn && dropReason !== ReasonCode.QuotaExceeded) {
        this.tracePublishIn("Dropped too large", packet, this.mount + topic, payload.length)
      }
      if (qos > 0) this.writeFailureAck(qos === 1 ? "puback" : "pubrec", id, code, why)
      return
    }
    if (packet.retain && !core.settings.retainAvailable) {
      return this.protocolError(ReasonCode.RetainNotSupported, "retain not available")
    }
    // `max_qos`: a PUBLISH above it ends the connection, v5 with DISCONNECT 0x9B [MQTT-3.2.2-11]
    if (qos > this.listener.maxQos) return this.protocolError(ReasonCode.QoSNotSupported, `QoS ${qos} PUBLISH above max_qos ${this.listener.maxQos}`)
    // v5 Payload Format Indicator 1: a receiver may check the payload is UTF-8 (§3.3.2.3.2); Midge does, as
    // Mosquitto: not forwarded, QoS 1 / 2 acks say 0x99 (QoS 0 has no ack: dropped)
    if (v5Properties?.payloadFormatIndicator === true && !isUtf8(payload)) {
      core.stats.publishDropped++
      this.log("debug", `Dropped PUBLISH from ${this.clientId} on '${topic}': payload format indicator 1 with a payload that is not UTF-8.`)
      if (qos > 0) this.writeFailureAck(qos === 1 ? "puback" : "pubrec", id, ReasonCode.PayloadFormatInvalid, "payload is not UTF-8")
      return
    }
    // a denied PUBLISH is dropped; v5 acks say 0x87 (a v5 PUBREC failure ends the QoS 2 flow)
    const acl = this.session!.acl
    if (acl !== undefined && !acl.canPublish(this.mount + topic)) {
      if (core.log.debugOn) this.tracePublishIn("Denied", packet, this.mount + topic, payload.length)
      // (3.1.1 acks carry no code: encodeAck leaves it out; the debug line shows it, as Mosquitto's)
      if (qos > 0) this.writeFailureAck(qos === 1 ? "puback" : "pubrec", id, ReasonCode.NotAuthorized, "not authorised")
      return
    }
    // as handle_publish.c: once allowed, before a resent QoS 2 PUBLISH is recognised
    if (core.log.debugOn) this.tracePublishIn("Received", packet, this.mount + topic, payload.length)
    // [MQTT-3.3.4-9] more QoS 2 flows open than our Receive Maximum
    if (qos === 2 && this.protocolVersion === 5 && this.session!.qos2.awaitingRel.size >= this.receiveMaximum && !this.session!.qos2.awaitingRel.has(id)) {
      return this.protocolError(ReasonCode.ReceiveMaximumExceeded, "receive maximum exceeded")
    }
    if (qos === 2 && !this.session!.qos2.onPublish(id)) {
      // [MQTT-4.3.3-9] a resent QoS 2 PUBLISH is acknowledged, not delivered again
      this.writeAck("pubrec", id)
      return
    }
    const store = core.store
    if (qos === 2 && store !== undefined && this.session!.flow.observer !== undefined) store.inboundQos2Add(this.clientId, id)
    if (qos === 2 && core.cluster !== undefined) core.cluster.inboundQos2(this.clientId, id, true)
    // $CONTROL/...: handed to the control handlers (dynamic security), never routed nor retained; acked with success (Mosquitto's handle_publish.c)
    if (isControlTopic(this.mount + topic)) {
      const control = { topic: this.mount + topic, payload, qos, retain: packet.retain, clientId: this.clientId, username: this.username }
      dispatchControl(core, control, (error) => core.log.error(`Error handling ${control.topic} from ${this.clientId}: ${String(error)}`))
      if (qos > 0) this.writeAck(qos === 1 ? "puback" : "pubrec", id)
      return
    }
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
      const cmd = qos === 1 ? "puback" : "pubrec"
      // durable persistence: acknowledged only once on disk (group commit)
      const durable = store !== undefined && store.durable
      // cluster: and only once what went to other nodes is stored in Redis
      if (core.cluster !== undefined) core.cluster.whenForwarded(durable ? () => store.whenDurable(() => this.ack(cmd, id, reason)) : () => this.ack(cmd, id, reason))
      else if (durable) store.whenDurable(() => this.ack(cmd, id, reason))
      else this.ack(cmd, id, reason)
    }
  }

  // ---------------------------------------------------------------- SUBSCRIBE

  private handleSubscribe(packet: mqtt.ISubscribePacket): void {
    const core = this.core
    const session = this.session!
    const v5 = this.protocolVersion === 5
    const subscriptionId = v5 ? packet.properties?.subscriptionIdentifier : undefined
    // at least one topic filter: v5 [MQTT-3.8.3-2] a Protocol Error; 3.1.1 [MQTT-3.8.3-3] a protocol violation (Mosquitto: a malformed packet)
    if (packet.subscriptions.length === 0) return this.protocolError(v5 ? ReasonCode.ProtocolError : ReasonCode.MalformedPacket, "SUBSCRIBE without a topic filter")
    // §3.8.2.1.2 a Subscription Identifier of 0 is a Protocol Error
    if (v5 && subscriptionId === 0) return this.protocolError(ReasonCode.ProtocolError, "subscription identifier 0")
    const granted: Array<number> = []
    const retainedToSend: Array<{ filter: string; options: SubscriptionOptions }> = []
    for (const sub of packet.subscriptions) {
      if (core.log.debugOn) this.log("debug", `\t${sub.topic} (QoS ${sub.qos})`)
      // the filters before it stay subscribed, as in Mosquitto (it adds each as it reads it)
      if (!validateTopicFilter(sub.topic)) return this.malformedFilter("SUBSCRIBE", sub.topic)
      const shared = isSharedFilterSyntax(sub.topic)
      if (shared) {
        // a well-formed filter whose $share/ form is not (`$share/g`, `$share//x`, `$share/g/`): refused, the connection stays
        if (parseSharedFilter(sub.topic) === undefined) {
          this.log("information", `Client ${this.clientId} sent invalid subscription '${sub.topic}'.`)
          granted.push(v5 ? ReasonCode.TopicFilterInvalid : 0x80)
          continue
        }
        // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error
        if (v5 && sub.nl === true) return this.protocolError(ReasonCode.ProtocolError, "no local on a shared subscription")
      }
      // a shared filter keeps its $share/GROUP/ prefix; the mount point goes on the filter inside it
      const filter = shared ? mountShared(sub.topic, this.mount) : this.mount + sub.topic
      // `max_qos`: a subscription is granted at most the listener's maximum (as Mosquitto)
      const qos = Math.min(sub.qos, this.listener.maxQos) as QoS
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
      if (core.log.isEnabled("subscribe")) this.log("subscribe", `${this.clientId} ${qos} ${filter}`)
      granted.push(qos)
      // v5 Retain Handling: 0 always, 1 only for a new subscription, 2 never; never for shared subscriptions
      if (!shared && (options.retainHandling === 0 || (options.retainHandling === 1 && isNew))) retainedToSend.push({ filter, options })
    }
    // cluster: SUBACK once every node routes the new filters here (messages published anywhere after it reach the client)
    if (core.cluster !== undefined) core.cluster.whenRouted(() => this.subscribed(packet.messageId!, granted, retainedToSend))
    else this.subscribed(packet.messageId!, granted, retainedToSend)
  }

  private subscribed(messageId: number, granted: Array<number>, retainedToSend: ReadonlyArray<{ readonly filter: string; readonly options: SubscriptionOptions }>): void {
    const core = this.core
    const session = this.session
    // (a cluster's SUBACK can come after the connection closed)
    if (session === undefined || this.closed) return
    // [MQTT-3.8.4-1] SUBACK with one return code per filter, in order
    if (core.log.debugOn) this.log("debug", `Sending SUBACK to ${this.clientId}`)
    this.writeReply(encodeSuback(messageId, granted, this.protocolVersion))
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

  /**
   * A SUBSCRIBE / UNSUBSCRIBE filter that is not a topic filter (a misplaced wildcard, empty): the packet is
   * malformed [MQTT-4.7.1], so the connection closes (v5: DISCONNECT 0x81), with the line of Mosquitto's
   * handle_subscribe.c (which names the address) or handle_unsubscribe.c (the client id). An empty SUBSCRIBE filter
   * gets no such line: Mosquitto 2.0 fails reading it before its check.
   */
  private malformedFilter(kind: "SUBSCRIBE" | "UNSUBSCRIBE", filter: string): void {
    const [what, from] = kind === "SUBSCRIBE" ? ["subscription", this.socket.remoteAddress ?? "unknown"] : ["unsubscription", this.clientId]
    if (kind === "UNSUBSCRIBE" || filter !== "") this.log("information", `${filter === "" ? "Empty" : "Invalid"} ${what} string from ${from}, disconnecting.`)
    this.protocolError(ReasonCode.MalformedPacket, `invalid topic filter '${filter}' in ${kind}`)
  }

  private handleUnsubscribe(packet: mqtt.IUnsubscribePacket): void {
    const session = this.session!
    const codes: Array<number> = []
    for (const unmounted of packet.unsubscriptions) {
      if (!validateTopicFilter(unmounted)) return this.malformedFilter("UNSUBSCRIBE", unmounted)
      const shared = isSharedFilterSyntax(unmounted)
      // a malformed $share/ form, which SUBSCRIBE refuses, names no subscription: v5 says so for it (UNSUBACK 0x8F)
      // and goes on with the others; 3.1 / 3.1.1 have no code for it, so the packet is malformed
      if (shared && parseSharedFilter(unmounted) === undefined) {
        if (this.protocolVersion !== 5) return this.malformedFilter("UNSUBSCRIBE", unmounted)
        this.log("information", `Client ${this.clientId} sent invalid unsubscription '${unmounted}'.`)
        codes.push(ReasonCode.TopicFilterInvalid)
        continue
      }
      const filter = shared ? mountShared(unmounted, this.mount) : this.mount + unmounted
      // denied UNSUBSCRIBE (dynsec unsubscribe ACLs): the subscription stays; v5 0x87, 3.1.1 an UNSUBACK all the same (Mosquitto)
      if (session.acl?.canUnsubscribe !== undefined && !session.acl.canUnsubscribe(filter)) {
        this.log("information", `Denied UNSUBSCRIBE from ${this.clientId} to '${unmounted}'.`)
        codes.push(ReasonCode.NotAuthorized)
        continue
      }
      const existed = session.subscriptions.delete(filter)
      if (existed) {
        this.core.router.unsubscribe(session, filter)
        if (session.flow.observer !== undefined) this.core.store?.subscriptionDelete(this.clientId, filter)
      }
      if (this.core.log.debugOn) this.log("debug", `\t${unmounted}`)
      if (this.core.log.isEnabled("unsubscribe")) this.log("unsubscribe", `${this.clientId} ${filter}`)
      codes.push(existed ? ReasonCode.Success : ReasonCode.NoSubscriptionExisted)
    }
    if (this.core.log.debugOn) this.log("debug", `Sending UNSUBACK to ${this.clientId}`)
    if (this.protocolVersion === 5) {
      this.writeReply(encode({ cmd: "unsuback", messageId: packet.messageId, granted: codes }, 5))
    } else {
      this.writeReply(encode({ cmd: "unsuback", messageId: packet.messageId, granted: [] }, this.protocolVersion))
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

  /**
   * Queue a frame for this event-loop turn's write. While the socket's own
   * buffer is full (`blocked`), frames wait here for its 'drain': what a
   * subscriber has not taken yet is counted in one place (the outbox), where
   * the queue limits can see it.
   */
  write(frame: Buffer): void {
    if (this.state === "closed") return
    this.core.stats.packetsSent++
    // by reference: a QoS 0 fan-out shares one frame among all its subscribers (copying each
    // into a stage measured 50 % slower per delivery than one concatenation at the flush)
    this.closeStage()
    this.pushSeg(frame)
    this.queued(frame.length)
  }

  /**
   * A small frame of this connection's own copied into the stage, like an acknowledgement: CONNACK,
   * SUBACK, UNSUBACK, PINGRESP. A connection that receives nothing else then keeps no outbox array
   * (the stage goes with the write); frames shared with other connections go by reference (`write`).
   */
  private writeStaged(frame: Buffer): void {
    const n = frame.length
    if (n > STAGE_FRAME_MAX) return this.write(frame)
    if (this.state === "closed") return
    this.core.stats.packetsSent++
    // (not `this.stageLen += frame.copy(this.reserve(n), ...)`: `+=` would read stageLen before reserve resets it)
    const stage = this.reserve(n)
    copyInto(stage, frame, this.stageLen)
    this.stageLen += n
    this.staged(n)
  }

  /**
   * A reply to the last packet of a read (CONNACK, SUBACK, UNSUBACK, PINGRESP): handed to the socket
   * at once when nothing waits before it in the outbox, as Mosquitto sends it, instead of at the end
   * of the turn. In a connect storm a turn of the event loop holds about one connect (libuv accepts
   * one connection per turn), so the end-of-turn flush was an immediate, a staging buffer and its
   * slice per connect (docs/performance.md, "Twenty-sixth round"). A reply to a packet with others
   * after it in the same read (a CONNECT and its SUBSCRIBEs sent together, a burst of SUBSCRIBEs)
   * is staged, so that the replies of one read still leave in one write; so are replies made
   * outside a read (after an asynchronous authentication, a cluster's routing, parked packets).
   * What follows a reply in the turn (a resumed session's messages, retained messages) goes
   * through the outbox, after it. With a persistence store every frame waits for the end of the
   * turn, so that the store's records reach the OS first (`writeOut`'s `handOff`).
   */
  private writeReply(frame: Buffer): void {
    if (replying !== this || this.outFrames !== 0 || this.blocked || this.core.store !== undefined) return this.writeStaged(frame)
    if (this.state === "closed") return
    const stats = this.core.stats
    stats.packetsSent++
    stats.bytesSent += frame.length
    const socket = this.socket
    // a frame of the socket's own from here on (a constant, or encoded for this reply): never changed
    if (!socket.destroyed && socket.writable && !socket.write(frame)) this.blocked = true
  }

  /** An acknowledgement; v3 / v4 carry no reason code (encodeAck's rule). */
  private ack(cmd: AckCmd, messageId: number, reasonCode: number): void {
    if (reasonCode === 0 || this.protocolVersion !== 5) return this.writeAck(cmd, messageId)
    if (this.core.log.debugOn) this.traceAck(cmd, messageId, reasonCode)
    this.write(encodeAck(cmd, messageId, 5, reasonCode))
  }

  /** PUBACK / PUBREC / PUBREL / PUBCOMP without a reason code (v3 / v4, v5 success): 4 bytes, no Buffer of its own. */
  private writeAck(cmd: AckCmd, messageId: number): void {
    if (this.state === "closed") return
    if (this.core.log.debugOn) this.traceAck(cmd, messageId, 0)
    this.core.stats.packetsSent++
    this.stageLen = writeAckAt(this.reserve(4), this.stageLen, cmd, messageId)
    this.staged(4)
  }

  /** A QoS 1 / 2 PUBLISH: the shared frame copied once, with its packet id and DUP patched in place. */
  private writePatched(frame: PublishFrame, messageId: number, dup: boolean): void {
    const source = frame.buffer
    const n = source.length
    if (n > STAGE_FRAME_MAX) return this.write(withPacketId(frame, messageId, dup))
    if (this.state === "closed") return
    this.core.stats.packetsSent++
    this.stageLen = writeWithPacketIdAt(this.reserve(n), this.stageLen, frame, messageId, dup)
    this.staged(n)
  }

  /** A frame of `n` bytes was just copied into the stage: counted, and the flush scheduled. */
  private staged(n: number): void {
    this.stageFrames++
    this.queued(n)
  }

  private queued(n: number): void {
    this.outBytes += n
    this.outFrames++
    if (!this.flushScheduled && !this.blocked) {
      this.flushScheduled = true
      this.core.flusher.schedule(this)
    }
  }

  /** The staging buffer, with room for `n` more bytes at `stageLen`. */
  private reserve(n: number): Buffer {
    const stage = this.stage
    if (stage !== undefined && stage.length - this.stageLen >= n) return stage
    this.closeStage()
    // sized by the last turn: small ones come from Node's buffer pool, busy connections get one buffer per turn
    const size = Math.max(n, Math.min(STAGE_MAX, Math.max(STAGE_MIN, this.stageHint + (this.stageHint >> 2))))
    const fresh = Buffer.allocUnsafe(size)
    this.stage = fresh
    this.stageStart = 0
    this.stageLen = 0
    return fresh
  }

  private pushSeg(seg: Buffer): void {
    if (this.segs === NO_SEGS) this.segs = [seg]
    else this.segs.push(seg)
  }

  /** The staged frames become a segment (the stage's bytes before `stageLen` are never written again). */
  private closeStage(): void {
    if (this.stageLen > this.stageStart) {
      const seg = sliceOf(this.stage!, this.stageStart, this.stageLen)
      this.pushSeg(seg)
      if (this.stageFrames > 1) (this.segFrames ??= new Map()).set(seg, this.stageFrames)
      this.stageStart = this.stageLen
      this.stageFrames = 0
    }
  }

  /** Write a frame and everything queued before it now, drained or not (used just before closing). */
  private writeNow(frame: Buffer): void {
    this.write(frame)
    this.blocked = false
    this.flushScheduled = false
    this.writeOut(false)
  }

  /** The FlushScheduler's call at the end of the turn: this turn's frames as one write. */
  flush(): void {
    this.flushScheduled = false
    if (this.blocked) return // 'drain' writes them
    this.writeOut(this.slow)
    // the kernel may take it all at once: then no 'drain' comes, so release held-up publishers here
    if (this.waiters !== undefined || this.holdingSince >= 0 || this.slow) this.relieve()
  }

  /**
   * Hand the outbox to the socket: as one chunk, or (a slow subscriber)
   * segment by segment until the socket's buffer is full, so that the rest
   * stays counted here.
   */
  private writeOut(sliced: boolean): void {
    // the usual turn holds staged frames only (acknowledgements, QoS 1 / 2 PUBLISH): the stage is the
    // write, with no segment bookkeeping (docs/performance.md, "QoS 1 / 2 fan-in")
    let staged: Buffer | undefined = undefined
    if (this.stage !== undefined) {
      this.stageHint = this.stageLen - this.stageStart
      if (!sliced && this.segs.length === 0 && this.stageLen > this.stageStart) {
        staged = sliceOf(this.stage, this.stageStart, this.stageLen)
        this.stageStart = this.stageLen
        this.stageFrames = 0
      } else {
        this.closeStage()
      }
      // the stage goes with the write: an idle connection keeps no buffer
      this.stage = undefined
    }
    // (read after `closeStage`, which replaces `NO_SEGS` by an array of the connection's own)
    const segs = this.segs
    const n = segs.length
    if (n === 0 && staged === undefined) return
    // persistence: the store's records go to the OS before any frame that depends on them (docs/persistence.md)
    this.core.store?.handOff()
    const socket = this.socket
    const open = !socket.destroyed && socket.writable
    if (!sliced) {
      const chunk = staged ?? (n === 1 ? segs[0] : Buffer.concat(segs, this.outBytes))
      this.core.stats.bytesSent += this.outBytes
      if (n !== 0) segs.length = 0
      // Map.prototype.clear allocates a new table even when empty: drop the map only when it was used
      if (this.segFrames !== undefined && this.segFrames.size !== 0) this.segFrames = undefined
      this.outBytes = 0
      this.outFrames = 0
      if (open && !socket.write(chunk)) this.blocked = true
      return
    }
    let i = 0
    while (i < n && !this.blocked) {
      const seg = segs[i]
      this.core.stats.bytesSent += seg.length
      this.outBytes -= seg.length
      const frames = this.segFrames?.get(seg)
      if (frames !== undefined) this.segFrames!.delete(seg)
      this.outFrames -= frames ?? 1
      i++
      if (open && !socket.write(seg)) this.blocked = true
    }
    segs.splice(0, i)
  }

  private onDrain(): void {
    this.blocked = false
    if (this.outFrames > 0 && !this.flushScheduled) this.writeOut(this.slow)
    this.relieve()
  }

  publishQos0(message: Message, retain: boolean, subscriptionIds: ReadonlyArray<number> | undefined): void {
    // a slow subscriber over its queue limits: QoS 0 is dropped and counted (as Mosquitto)
    if (this.slow && this.overQueueLimits()) return this.dropQos0()
    if (this.protocolVersion === 5 && !this.acceptsMessage(message, 0, retain, subscriptionIds)) return
    this.sendPublish(message, 0, retain, 0, false, subscriptionIds)
  }

  /** `max_queued_messages` / `max_queued_bytes` against what waits in the outbox. */
  private overQueueLimits(): boolean {
    const limits = this.session!.flow.limits
    const maxBytes = limits.maxQueuedBytes ?? 0
    return (limits.maxQueued > 0 && this.outFrames >= limits.maxQueued) || (maxBytes > 0 && this.outBytes >= maxBytes)
  }

  private dropQos0(): void {
    this.core.stats.publishDropped++
    if (!this.dropping) {
      this.dropping = true
      this.log("notice", `Outgoing messages are being dropped for client ${this.clientId}.`)
    }
  }

  /** OutboundSink: a QoS 1 / 2 PUBLISH (or QoS 0 from the queue). */
  publish(out: Outgoing, messageId: number, dup: boolean): void {
    const cluster = this.core.cluster
    // cluster: a persistent session's QoS 2 PUBLISH leaves once Redis holds its in-flight record (docs/cluster.md)
    if (cluster !== undefined && out.qos === 2 && this.session!.expiryInterval !== 0) {
      const { message, retain, subscriptionIds } = out
      return cluster.outboundPublish(this.session!, out, messageId, dup, () => this.sendPublish(message, 2, retain, messageId, dup, subscriptionIds))
    }
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
    if (this.core.log.debugOn) this.tracePublish(message, qos, retain, messageId, dup)
    if (this.slowPath(message, ids)) this.write(this.encodeSlow(message, qos, retain, messageId, dup, ids, true))
    else if (qos === 0) this.write(message.publishFrame(this.protocolVersion, 0, retain).buffer)
    else this.writePatched(message.publishFrame(this.protocolVersion, qos, retain), messageId, dup)
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
        // bounded by the client's maximum; once used up, other topics go out in full (TopicAliases.ts)
        const alias = (this.outAliases ??= new OutboundAliases(this.clientTopicAliasMax)).lookup(topic, commit)
        if (alias > 0) {
          p.topicAlias = alias
          topic = ""
        } else if (alias < 0) {
          p.topicAlias = -alias
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
    const cluster = this.core.cluster
    // cluster: and a PUBREL once Redis holds "released"
    if (cluster !== undefined && this.session!.expiryInterval !== 0) return cluster.outboundPubrel(this.session!, messageId, () => this.writeAck("pubrel", messageId))
    this.writeAck("pubrel", messageId)
  }

  /** v5: a Reason String on server-sent DISCONNECT says why (not for normal ends). */
  private sendDisconnect(reasonCode: number, reasonString?: string): void {
    if (this.core.log.debugOn) this.log("debug", `Sending DISCONNECT to ${this.clientId || "<unknown>"} (rc${reasonCode})`)
    const properties = reasonString !== undefined && reasonString.length > 0 ? { reasonString } : undefined
    const disconnect = encodeWithin({ cmd: "disconnect", reasonCode, ...(properties !== undefined ? { properties } : {}) }, this.clientMaxPacketSize)
    if (disconnect !== undefined) this.writeNow(disconnect)
  }

  /**
   * A PUBACK / PUBREC with a failure code; v5 adds a Reason String unless the
   * client asked for no problem information [MQTT-3.1.2-29].
   */
  private writeFailureAck(cmd: "puback" | "pubrec", messageId: number, code: number, why: string): void {
    if (this.core.log.debugOn) this.traceAck(cmd, messageId, code)
    if (this.protocolVersion !== 5 || code === 0 || !this.problemInformation) {
      this.write(encodeAck(cmd, messageId, this.protocolVersion, code))
    } else {
      this.write(encodeWithin({ cmd, messageId, reasonCode: code, properties: { reasonString: why } } as Packet, this.clientMaxPacketSize) ?? encodeAck(cmd, messageId, 5, code))
    }
  }

  // ---------------------------------------------------------------- backpressure

  private congested(): boolean {
    return (
      this.socket.writableLength + this.outBytes > HIGH_WATER_BYTES ||
      (this.session !== undefined && this.session.flow.queued > this.queueHigh)
    )
  }

  /** A slow subscriber is back to normal once its backlog is this small. */
  private drained(): boolean {
    return (
      this.socket.writableLength + this.outBytes <= LOW_WATER_BYTES &&
      (this.session === undefined || this.session.flow.queued <= this.queueHigh >> 1)
    )
  }

  /**
   * After a delivery to this subscriber: from when it is congested until it
   * has drained, its publishers are held up (their publishes parked) — for at
   * most HOLD_MS per episode. A subscriber not drained by then is slow (see
   * `onHoldTimer`); it holds nobody up until it has drained.
   */
  checkCongestion(source: PublishSource | undefined): void {
    if (source === this || this.slow) return
    // hysteresis: a hold starts above the high marks and lasts until the low ones (`drained`), every
    // publisher that delivers meanwhile held too; ending it at the high mark resumed and re-held
    // every publisher each turn (docs/performance.md, "The congestion hold's hysteresis")
    if (this.holdingSince < 0) {
      if (!this.congested()) return
      this.startHolding()
    }
    if (source !== undefined) source.throttle(this)
  }

  private startHolding(): void {
    this.holdingSince = performance.now()
    // without queue limits nothing may be dropped: publishers are held up for as long as it takes
    const limits = this.session?.flow.limits
    if (limits === undefined || (limits.maxQueued === 0 && (limits.maxQueuedBytes ?? 0) === 0)) return
    if (this.holdTimer === undefined) this.armHold(HOLD_MS)
  }

  private armHold(ms: number): void {
    this.holdTimer = setTimeout(Connection.holdTimerFired, ms, this)
    this.holdTimer.unref()
  }

  /** One timer per connection at most, re-armed while holding episodes come and go. */
  /** a method, not an arrow property: no closure on every connection */
  private static holdTimerFired(conn: Connection): void {
    conn.onHoldTimer()
  }

  private onHoldTimer(): void {
    this.holdTimer = undefined
    if (this.holdingSince < 0 || this.state === "closed") return
    const left = this.holdingSince + HOLD_MS - performance.now()
    if (left > 1) return this.armHold(left)
    if (this.drained()) return this.relieve()
    // not drained for HOLD_MS: slow. Its publishers go on; its backlog is bounded by the queue limits
    this.slow = true
    this.holdingSince = -1
    this.log("notice", `Client ${this.clientId} is not keeping up: its publishers are no longer held up for it.`)
    const waiters = this.waiters
    this.waiters = undefined
    if (waiters !== undefined) for (const w of waiters) (w as Connection).release()
    if (!this.blocked && this.outFrames > 0 && !this.flushScheduled) this.writeOut(true)
  }

  /** Output moved on ('drain', a write the kernel took whole, an ack): end holding / slowness when it is over. */
  private relieve(): void {
    if (this.slow) {
      if (this.state !== "closed" && !this.drained()) return
      this.slow = false
      this.dropping = false
    } else if (this.waiters === undefined && this.holdingSince < 0) {
      return
    } else if (this.state !== "closed" && !this.drained()) {
      return
    }
    this.holdingSince = -1
    const waiters = this.waiters
    if (waiters === undefined) return
    this.waiters = undefined
    for (const w of waiters) (w as Connection).release()
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

  private afterAck(_session: Session): void {
    if (this.waiters !== undefined || this.holdingSince >= 0 || this.slow) this.relieve()
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

  takenOver(publishWill = true): void {
    if (!publishWill) this.will = undefined
    if (this.protocolVersion === 5 && this.state === "connected") this.sendDisconnect(ReasonCode.SessionTakenOver)
    this.close("takeover")
  }

  reauthorize(): void {
    const session = this.session
    if (this.state !== "connected" || session === undefined) return
    session.acl = this.core.authorize?.({ clientId: this.clientId, username: this.username, listenerPort: this.listener.port })
  }

  authRequest(): ConnectAuthRequest | undefined {
    // a v5 enhanced authentication is the method's to repeat (re-authentication), not a reload's
    if (this.state !== "connected" || this.authMethod !== undefined) return undefined
    const credentials = this.connectCredentials
    return {
      clientId: this.clientId,
      username: credentials?.username,
      password: credentials?.password,
      listenerPort: this.listener.port,
      remoteAddress: this.socket.remoteAddress,
      tls: this.tlsIdentity
    }
  }

  kick(reasonCode: number, reasonString?: string): void {
    if (this.state === "closed") return
    if (this.protocolVersion === 5 && this.state === "connected") this.sendDisconnect(reasonCode, reasonString)
    this.close("kicked")
  }

  /** No CONNECT, or no authentication decision, within the connect timeout. */
  connectTimedOut(): void {
    if (this.state === "new" || this.state === "connecting") this.close("connect-timeout")
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
    // everything queued goes out before the end, drained or not
    this.flushScheduled = false
    this.writeOut(false)
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
      // [MQTT-3.1.2-8] the will goes on every end but a normal DISCONNECT [MQTT-3.1.2-10],
      // the broker's shutdown included (as Mosquitto: context__send_will for every client)
      const will = this.will
      this.will = undefined
      if (will !== undefined && reason !== "disconnect" && (session.acl?.canPublish(will.topic) ?? true)) {
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
    } else if (core.settings.connectionMessages) {
      this.logCloseUnconnected(reason)
    }
    // publishers held up by this connection go on; this one stops waiting
    if (this.holdTimer !== undefined) clearTimeout(this.holdTimer)
    this.holdTimer = undefined
    this.relieve()
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
      case "malformed":
        return this.log("notice", `Client ${id} disconnected due to malformed packet.`)
      case "oversize":
        return this.log("notice", `Client ${id} disconnected due to oversize packet.`)
      default:
        return this.log("notice", `Client ${id} disconnected.`)
    }
  }

  /** A connection that never got its CONNACK (loop.c's lines for a client without an id). */
  private logCloseUnconnected(reason: CloseReason): void {
    switch (reason) {
      case "closed":
      case "error":
        return this.log("notice", "Client <unknown> closed its connection.")
      case "protocol":
      case "malformed":
        // before its CONNECT is accepted Mosquitto calls what it cannot read a protocol error (bad header flags, the reserved flag)
        return this.log("notice", "Client <unknown> disconnected due to protocol error.")
      case "oversize":
        return this.log("notice", "Client <unknown> disconnected due to oversize packet.")
      case "refused": {
        // a CONNECT refused for its credentials, or for anything else (a client id, the will)
        const code = this.rare.refusedWith
        return this.log("notice", code === ConnackV4.BadUserNameOrPassword || code === ConnackV4.NotAuthorized ? "Client <unknown> disconnected, not authorised." : "Client <unknown> disconnected due to protocol error.")
      }
      default:
        return
    }
  }

  private log(type: "error" | "notice" | "information" | "subscribe" | "unsubscribe" | "debug", message: string): void {
    this.core.log.log(type, message)
  }

  // ------------------------------------------------------ log_type debug: every packet, in Mosquitto's words

  /** A packet from the client (PUBLISH logs its own line once accepted, as handle_publish.c does). */
  private traceReceived(packet: Packet): void {
    const id = this.clientId
    switch (packet.cmd) {
      case "puback":
      case "pubcomp":
        return this.log("debug", `Received ${packet.cmd.toUpperCase()} from ${id} (Mid: ${packet.messageId}, RC:${packet.reasonCode ?? 0})`)
      case "pubrec":
      case "pubrel":
        return this.log("debug", `Received ${packet.cmd.toUpperCase()} from ${id} (Mid: ${packet.messageId})`)
      case "pingreq":
      case "subscribe":
      case "unsubscribe":
      case "disconnect":
        return this.log("debug", `Received ${packet.cmd.toUpperCase()} from ${id}`)
      case "auth":
        return this.log("debug", `Received AUTH from ${id} (rc${packet.reasonCode ?? 0}, ${packet.properties?.authenticationMethod ?? ""})`)
    }
  }

  /** CONNACK accepting the client, after its will (connect__on_authorised) */
  private traceConnack(present: boolean): void {
    const will = this.will
    if (will === undefined) this.log("debug", "No will message specified.")
    else {
      this.log("debug", `Will message specified (${will.payload.length} bytes) (r${will.retain ? 1 : 0}, q${will.qos}).`)
      this.log("debug", `\t${will.topic}`)
    }
    this.log("debug", `Sending CONNACK to ${this.clientId} (${present ? 1 : 0}, 0)`)
  }

  private traceAck(cmd: AckCmd, messageId: number, reasonCode: number): void {
    const what = cmd === "puback" || cmd === "pubrec" ? `(m${messageId}, rc${reasonCode})` : `(m${messageId})`
    this.log("debug", `Sending ${cmd.toUpperCase()} to ${this.clientId} ${what}`)
  }

  /** handle_publish.c's line for a PUBLISH from the client: received, denied, or dropped as too large */
  private tracePublishIn(what: "Received" | "Denied" | "Dropped too large", packet: mqtt.IPublishPacket, topic: string, bytes: number): void {
    this.log("debug", `${what} PUBLISH from ${this.clientId} ${publishSummary(packet.dup, packet.qos, packet.retain, packet.messageId ?? 0, topic, bytes)}`)
  }

  private tracePublish(message: Message, qos: QoS, retain: boolean, messageId: number, dup: boolean): void {
    const topic = this.mount !== "" && message.topic.startsWith(this.mount) ? message.topic.slice(this.mount.length) : message.topic
    this.log("debug", `Sending PUBLISH to ${this.clientId} ${publishSummary(dup, qos, retain, messageId, topic, message.payload.length)}`)
  }
}

/** `(d0, q1, r0, m1, 'a/b', ... (5 bytes))`: a PUBLISH in Mosquitto's debug lines */
const publishSummary = (dup: boolean | undefined, qos: number, retain: boolean | undefined, messageId: number, topic: string, bytes: number): string =>
  `(d${dup === true ? 1 : 0}, q${qos}, r${retain === true ? 1 : 0}, m${messageId}, '${topic}', ... (${bytes} bytes))`

/** PUBLISH properties a client may send at most once (mqtt-packet makes an array of a repeated one) */
const SINGLE_PUBLISH_PROPERTIES = ["payloadFormatIndicator", "messageExpiryInterval", "topicAlias", "responseTopic", "correlationData", "contentType"] as const

/**
 * What is wrong with a client's v5 PUBLISH properties, if anything: a property
 * repeated (§3.3.2.3), or a Subscription Identifier [MQTT-3.3.4-6]. Both are
 * Protocol Errors. (mqtt-packet keeps only the last of a repeated property
 * whose earlier values are 0 / false: those repeats go unseen.)
 */
const publishPropertyError = (p: NonNullable<mqtt.IPublishPacket["properties"]>): string | undefined => {
  const record = p as Record<string, unknown>
  for (const name of SINGLE_PUBLISH_PROPERTIES) if (Array.isArray(record[name])) return `${name} more than once in PUBLISH`
  if (p.subscriptionIdentifier !== undefined) return "subscription identifier in a client's PUBLISH"
  return undefined
}

/** `$share/GROUP/FILTER` with the listener's mount point put on FILTER. */
const mountShared = (filter: string, mount: string): string => {
  if (mount === "") return filter
  const p = parseSharedFilter(filter)
  return p === undefined ? filter : `$share/${p.group}/${mount}${p.filter}`
}

