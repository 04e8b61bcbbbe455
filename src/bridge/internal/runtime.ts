/**
 * One bridge at run time: the local side (a subscriber in the router, the
 * outgoing queue and in-flight window, which outlive connections) and the
 * connect-and-pump effect over one connection to the remote broker (`link`).
 *
 * The remote side is an MQTT client written on node:net / node:tls with the
 * broker's codec (mqtt-packet as codec of record, the fast PUBLISH path),
 * because MQTT.js cannot send Mosquitto's bridge bit (protocol level | 0x80,
 * `try_private`). Bytes and packets are handled by plain synchronous code; the
 * Effect side owns the lifecycle: the socket (acquireRelease), waiting for
 * CONNACK, the keepalive watchdog, the lazy idle timer and the primary-address
 * probe, each one fiber per connection, raced against the socket's end.
 *
 * Loop prevention, as Mosquitto's bridge: the local subscription is No Local
 * and Retain As Published, and what the bridge publishes locally carries the
 * bridge's local client id as origin, so it is never sent back out on a
 * `both` topic; towards the remote broker, `try_private` sets the bridge bit
 * (MQTT 3.1 / 3.1.1: Mosquitto then does not echo the bridge's own messages
 * back) and MQTT 5 subscriptions are No Local.
 */
import type * as net from "node:net"
import { Clock, Data, Deferred, Duration, Effect, Exit, type Scope } from "effect"
import type { Log } from "../../log/Log.js"
import { bridgeSessionKey, type StoredSession, type StoreWriter } from "../../persistence/Persistence.js"
import { encode, encodeAck, encodePublish, type Packet, PacketParser, PINGREQ } from "../../protocol/codec.js"
import { validateTopicName } from "../../protocol/topic.js"
import type { PublishSource, SharedGroup, Subscriber, SubscriptionOptions } from "../../routing/Router.js"
import type { Core } from "../../session/Core.js"
import { forwardedProperties } from "../../session/forwardedProperties.js"
import { Message, type QoS } from "../../session/Message.js"
import { PacketIdMap } from "../../session/PacketIdMap.js"
import { PacketIdSet } from "../../session/PacketIdSet.js"
import type { BridgeConfig } from "./config.js"
import { type AttemptOutcome, Demand, idle } from "./schedule.js"
import { openSocket, probe } from "./socket.js"
import { hasRemapping, remapIncoming, remapOutgoing } from "./topics.js"

export class BridgeError extends Data.TaggedError("BridgeError")<{
  readonly reason: "Connect" | "Tls" | "Timeout" | "Refused" | "Lost" | "Keepalive" | "Protocol" | "PrimaryBack"
  readonly message: string
  /** ms connected after CONNACK; undefined when the attempt never got that far */
  readonly connectedFor: number | undefined
  readonly immediate?: boolean
}> implements AttemptOutcome {}

export type BridgeState = "down" | "connecting" | "connected" | "stopped"

/** An outgoing message: queued (id 0), or in flight waiting for PUBACK / PUBREC (1) or PUBCOMP (2). */
export interface Out {
  readonly message: Message
  readonly qos: QoS
  readonly retain: boolean
  id: number
  stage: 0 | 1 | 2
}

/** What one connection (socket) holds. */
interface Wire {
  readonly socket: net.Socket
  readonly parser: PacketParser
  readonly version: 3 | 4 | 5
  readonly closed: Deferred.Deferred<never, BridgeError>
  readonly connack: Deferred.Deferred<Packet & { cmd: "connack" }>
  corked: boolean
  /** after CONNACK */
  up: boolean
  lastIn: number
  lastOut: number
  pingSentAt: number | undefined
  inAliases: Map<number, string> | undefined
}

/**
 * Where a message handed to `send` was: a new one from the router, the head of
 * the queue, or in flight already (resent at a new connection). The store is
 * told what became of it accordingly.
 */
type From = "new" | "queued" | "inflight"

/** What a bridge carries from one runtime to the next (a reload that changed its block) or from the store. */
export interface BridgeCarry {
  readonly queue: ReadonlyArray<Out>
  /** in the order sent */
  readonly inflight: ReadonlyArray<Out>
  readonly awaitingRel: ReadonlyArray<number>
}

/** above this many bytes waiting in the socket, new messages queue instead (read backpressure of the remote) */
const HIGH_WATER = 1 << 20
/** the primary-address probe of round_robin false, every 5 s as Mosquitto's `primary_retry` */
const PRIMARY_RETRY_MS = 5000

const ONE = Buffer.from("1")
const ZERO = Buffer.from("0")

export class BridgeRuntime implements Subscriber {
  readonly clientId: string
  /** the router's count of this subscriber's subscriptions (Router: `Subscriber.routedSubscriptions`) */
  routedSubscriptions = 0
  state: BridgeState = "down"
  /** index of the address in use / to use next */
  addressIndex = 0
  /** false after a v3 / v3.1.1 CONNACK 0x01 to a bridge CONNECT: retry without the bridge bit (Mosquitto) */
  tryPrivateAccepted = true
  /** messages dropped: queue full, too large for the remote */
  dropped = 0
  readonly demand: Demand

  private queue: Array<Out | undefined> = []
  private head = 0
  // not a Map: a bridge is a long-lived session, and a Map's rebuilt tables in old space keep its messages alive (PacketIdMap)
  private readonly inflight = new PacketIdMap<Out>()
  /** incoming QoS 2 packet ids released by PUBREL not yet seen (not a Set either: PacketIdSet) */
  private readonly awaitingRel = new PacketIdSet()
  /** packet ids of SUBSCRIBE / UNSUBSCRIBE packets not yet acknowledged */
  private readonly pendingAcks = new Set<number>()
  private nextId = 1
  private wire: Wire | undefined = undefined
  /** Clock ms of the last PUBLISH sent to the remote (lazy idle_timeout) */
  lastSentAt = 0
  private readonly remap: boolean
  // what the remote's CONNACK allows (v5)
  private remoteMaxQos: QoS = 2
  private remoteRetain = true
  private remoteReceiveMax = 65535
  private remoteMaxPacket = 0
  private initialNotificationDone = false
  /**
   * The persistence store's writer while the bridge's local session is kept
   * (`local_cleansession false` with persistence on): every change to the
   * queue, the in-flight window and the inbound QoS 2 ids is written under
   * `storeKey`, as a client session's flow does.
   */
  private store: StoreWriter | undefined = undefined
  private readonly storeKey: string

  constructor(
    readonly config: BridgeConfig,
    readonly core: Core,
    readonly log: Log,
    carried?: BridgeCarry
  ) {
    this.clientId = config.localClientId
    this.remap = hasRemapping(config.topics)
    this.demand = new Demand(() => this.state !== "connected" && this.queued >= config.threshold)
    this.storeKey = bridgeSessionKey(config.name)
    this.resume(carried)
  }

  /**
   * Take up the state a previous runtime of this bridge left (a reload), or
   * what the store kept of it (a restart); with `local_cleansession true` the
   * in-flight messages and the stored session go.
   */
  private resume(carried: BridgeCarry | undefined): void {
    const name = this.config.name
    const store = this.core.store
    const stored = this.core.storedBridges.get(name)
    this.core.storedBridges.delete(name)
    if (this.config.localCleanSession) {
      // a clean local session is not stored (what the store held came from an earlier configuration);
      // across a reload the queue stays and what was in flight goes, as at every new connection
      store?.sessionDelete(this.storeKey)
      if (carried !== undefined) this.queue = carried.queue.slice()
      return
    }
    const from = carried ?? (stored === undefined ? undefined : fromStored(stored))
    if (from !== undefined) {
      this.queue = from.queue.slice()
      for (const out of from.inflight) this.inflight.set(out.id, out)
      for (const id of from.awaitingRel) this.awaitingRel.add(id)
      if (carried === undefined) this.log.notice(`Bridge ${name}: restored ${this.queued} queued and ${this.inflight.size} in-flight messages from the store.`)
    }
    if (store === undefined) return
    this.store = store
    // from the store, it is there already; otherwise it is written out whole (the previous runtime's may have been a clean one)
    if (carried !== undefined || stored === undefined) {
      store.sessionDelete(this.storeKey)
      this.writeWhole(store, from)
    }
  }

  /** A new store session under `storeKey` holding `state` (what this runtime was just given). */
  private writeWhole(store: StoreWriter, state: BridgeCarry | undefined): void {
    const key = this.storeKey
    store.sessionUpsert({ clientId: key, expiryInterval: 0xffffffff, disconnectedAt: undefined, will: undefined })
    if (state === undefined) return
    for (const out of state.inflight) {
      store.outboundSend(key, out.id, delivery(out))
      if (out.stage === 2) store.outboundPubrec(key, out.id)
    }
    for (const out of state.queue) store.outboundQueue(key, delivery(out))
    for (const id of state.awaitingRel) store.inboundQos2Add(key, id)
  }

  /** What a runtime started for this bridge after this one (a reload that changed its block) takes over. */
  carry(): BridgeCarry {
    const queue: Array<Out> = []
    for (let i = this.head; i < this.queue.length; i++) queue.push(this.queue[i]!)
    return { queue, inflight: [...this.inflight.values()], awaitingRel: [...this.awaitingRel] }
  }

  /** The bridge is removed (a reload without its block): its stored session goes. */
  forget(): void {
    this.core.store?.sessionDelete(this.storeKey)
    this.store = undefined
  }

  get queued(): number {
    return this.queue.length - this.head
  }

  get inFlight(): number {
    return this.inflight.size
  }

  get connected(): boolean {
    return this.state === "connected"
  }

  // -------------------------------------------------------------- local side

  /** Subscribe to the out / both topics on the local broker: No Local, Retain As Published (bridge.c). */
  attach(): void {
    for (const t of this.config.topics) {
      if (t.direction === "in") continue
      const options: SubscriptionOptions = { qos: t.qos, noLocal: true, retainAsPublished: true, retainHandling: 0, subscriptionId: undefined }
      this.core.router.subscribe(this, t.localTopic, options)
    }
    // the initial notification (bridge.c: `initial_notification_done`)
    if (this.config.notifications && !this.initialNotificationDone) {
      this.initialNotificationDone = true
      this.notifyLocal(ZERO)
    }
  }

  detach(): void {
    for (const t of this.config.topics) if (t.direction !== "in") this.core.router.unsubscribe(this, t.localTopic)
  }

  online(): boolean {
    return true
  }

  /** A local message for the remote broker: sent now, or queued. */
  deliver(message: Message, qos: QoS, retain: boolean, _ids?: ReadonlyArray<number>, _source?: PublishSource, _shared?: SharedGroup): void {
    const wire = this.wire
    if (wire !== undefined && wire.up && this.queued === 0 && this.canSend(wire, qos)) {
      // kept in flight until acknowledged: it must not pin the socket chunk it arrived in
      if (qos > 0) message.ownPayload()
      this.send(wire, message, qos, retain, undefined, "new")
      return
    }
    // QoS 0 waits only for a lazy bridge or with queue_qos0_messages (db__message_insert)
    if (qos === 0 && wire === undefined && this.config.startType !== "lazy" && !this.core.settings.queueQos0Messages) {
      return
    }
    const max = this.core.settings.maxQueuedMessages
    if (max > 0 && this.queued >= max) {
      this.dropped++
      this.core.stats.publishDropped++
      return
    }
    message.ownPayload()
    const out: Out = { message, qos, retain, id: 0, stage: 0 }
    this.queue.push(out)
    this.store?.outboundQueue(this.storeKey, delivery(out))
    this.demand.notify()
  }

  private shift(): Out | undefined {
    if (this.head >= this.queue.length) return undefined
    const out = this.queue[this.head]
    this.queue[this.head++] = undefined
    if (this.head === this.queue.length) {
      this.queue.length = 0
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    return out
  }

  private window(): number {
    const local = this.core.settings.maxInflightMessages
    return local > 0 && local < this.remoteReceiveMax ? local : this.remoteReceiveMax
  }

  private canSend(wire: Wire, qos: QoS): boolean {
    if (wire.socket.writableLength > HIGH_WATER) return false
    // (and a packet id left for it: SUBSCRIBE / UNSUBSCRIBE awaiting their acks hold ids too)
    return qos === 0 || (this.inflight.size < this.window() && this.inflight.size + this.pendingAcks.size < 65535)
  }

  private allocateId(): number {
    for (let i = 0; i < 65535; i++) {
      const id = this.nextId
      this.nextId = id === 65535 ? 1 : id + 1
      if (!this.inflight.has(id) && !this.pendingAcks.has(id)) return id
    }
    return 0
  }

  /** A packet id for a SUBSCRIBE / UNSUBSCRIBE, held until its ack. */
  private ackId(): number {
    const id = this.allocateId()
    this.pendingAcks.add(id)
    return id
  }

  private write(wire: Wire, buffer: Buffer): void {
    // one write per connection per event-loop turn
    if (!wire.corked) {
      wire.corked = true
      wire.socket.cork()
      process.nextTick(() => {
        wire.corked = false
        wire.socket.uncork()
      })
    }
    // persistence: the store's records go to the OS before any packet that depends on them (docs/persistence.md)
    this.core.store?.handOff()
    wire.socket.write(buffer)
    wire.lastOut = this.core.now()
    // $SYS: a bridge is a client of the broker, as in Mosquitto (messages/sent, bytes/sent)
    const stats = this.core.stats
    stats.packetsSent++
    stats.bytesSent += buffer.length
  }

  /** $SYS publish/messages/sent and publish/bytes/sent, for a PUBLISH written to the remote broker */
  private countPublishSent(payloadLength: number): void {
    this.core.stats.messagesSent++
    this.core.stats.publishBytesSent += payloadLength
  }

  /**
   * Send one PUBLISH (remapped, QoS and retain as the remote allows); QoS > 0
   * goes in flight as `out` (made here for a message that was never queued).
   */
  private send(wire: Wire, message: Message, wantedQos: QoS, wantedRetain: boolean, out: Out | undefined, from: From, dup = false): void {
    const now = this.core.now()
    if (message.expired(now)) return this.gone(from, out)
    const qos = wantedQos > this.remoteMaxQos ? this.remoteMaxQos : wantedQos
    const retain = wantedRetain && this.config.outgoingRetain && this.remoteRetain
    const topic = this.remap ? remapOutgoing(this.config.topics, message.topic) : message.topic
    let id = out === undefined ? 0 : out.id
    if (qos > 0 && id === 0) {
      id = this.allocateId()
      if (id === 0) {
        // every packet id in use: wait, at the tail of the queue
        const o = out ?? { message, qos: wantedQos, retain: wantedRetain, id: 0, stage: 0 }
        this.queue.push(o)
        if (from === "queued") this.store?.outboundDequeue(this.storeKey, 0)
        this.store?.outboundQueue(this.storeKey, delivery(o))
        return
      }
    }
    let frame: Buffer
    if (wire.version !== 5 && topic === message.topic) {
      // the frame cached on the message, shared with the other subscribers of this encoding
      frame = message.frame(wire.version, qos, retain, id, dup)
    } else {
      const expiry = message.remainingExpiry(now)
      const properties = wire.version === 5 && message.properties !== undefined ? { ...message.properties, messageExpiryInterval: expiry } : undefined
      frame = encodePublish({ topic, payload: message.payload, qos, retain, dup, messageId: id, properties }, wire.version).buffer
    }
    const limit = this.maxPacket()
    if (limit > 0 && frame.length > limit) {
      this.dropped++
      this.core.stats.publishDropped++
      this.log.notice(`Bridge ${this.config.name}: dropping a ${frame.length} byte PUBLISH on '${topic}' (bridge_max_packet_size / remote maximum ${limit}).`)
      return this.gone(from, out)
    }
    if (qos > 0) {
      const o = out ?? { message, qos: wantedQos, retain: wantedRetain, id, stage: 1 }
      o.id = id
      o.stage = 1
      this.inflight.set(id, o)
      // (resent in flight: stored already, with this id)
      if (from === "new") this.store?.outboundSend(this.storeKey, id, delivery(o))
      else if (from === "queued") this.store?.outboundDequeue(this.storeKey, id)
    } else {
      this.gone(from, out)
    }
    this.write(wire, frame)
    this.countPublishSent(message.payload.length)
    this.lastSentAt = now
  }

  /** A message that leaves the bridge without going in flight (sent at QoS 0, expired, too large): the store lets it go. */
  private gone(from: From, out: Out | undefined): void {
    const store = this.store
    if (store === undefined || from === "new") return
    if (from === "queued") store.outboundDequeue(this.storeKey, 0)
    else store.outboundDone(this.storeKey, out!.id)
  }

  private maxPacket(): number {
    const a = this.config.maxPacketSize
    const b = this.remoteMaxPacket
    return a === 0 ? b : b === 0 ? a : Math.min(a, b)
  }

  /** Send queued messages while the window and the socket allow. */
  private pump(wire: Wire): void {
    while (this.queued > 0 && wire.up) {
      const next = this.queue[this.head]!
      if (!this.canSend(wire, next.qos)) return
      this.shift()
      this.send(wire, next.message, next.qos, next.retain, next, "queued")
    }
  }

  private notifyLocal(payload: Buffer): void {
    // retained QoS 1, published as the bridge (No Local keeps it off the bridge's own out topics)
    const message = new Message(this.config.notificationTopic, payload, 1, true, undefined, this.clientId, this.core.now())
    this.core.router.publish(message)
  }

  // -------------------------------------------------------------- remote side

  /** The CONNECT (bridge.c `bridge__connect`, send_connect.c). */
  private connectPacket(version: 3 | 4 | 5): Packet {
    const c = this.config
    const will =
      c.notifications && !c.notificationsLocalOnly
        ? { topic: c.notificationTopic, payload: ZERO, qos: (this.remoteMaxQos === 0 ? 0 : 1) as QoS, retain: true }
        : undefined
    const properties: Record<string, number> = {}
    if (version === 5) {
      if (c.sessionExpiryInterval > 0) properties.sessionExpiryInterval = c.sessionExpiryInterval
      if (c.receiveMaximum > 0) properties.receiveMaximum = c.receiveMaximum
      if (c.maxTopicAlias > 0) properties.topicAliasMaximum = c.maxTopicAlias
    }
    return {
      cmd: "connect",
      protocolId: version === 3 ? "MQIsdp" : "MQTT",
      protocolVersion: version,
      // try_private: protocol level | 0x80 (MQTT 3.1 / 3.1.1; MQTT 5 bridges rely on No Local)
      bridgeMode: version !== 5 && c.tryPrivate && this.tryPrivateAccepted,
      clean: c.cleanSession,
      clientId: c.remoteClientId,
      keepalive: c.keepalive,
      ...(c.remoteUsername !== undefined ? { username: c.remoteUsername } : {}),
      ...(c.remotePassword !== undefined && (c.remoteUsername !== undefined || version === 5) ? { password: Buffer.from(c.remotePassword) } : {}),
      ...(will !== undefined ? { will } : {}),
      ...(version === 5 && Object.keys(properties).length > 0 ? { properties } : {})
    } as Packet
  }

  private onPacket(wire: Wire, p: Packet): void {
    switch (p.cmd) {
      case "publish":
        return this.onPublish(wire, p)
      case "puback":
      case "pubcomp": {
        const id = p.messageId ?? 0
        const out = this.inflight.get(id)
        if (out !== undefined && out.stage === (p.cmd === "puback" ? 1 : 2)) {
          this.inflight.delete(id)
          this.store?.outboundDone(this.storeKey, id)
        }
        return this.pump(wire)
      }
      case "pubrec": {
        const id = p.messageId ?? 0
        const out = this.inflight.get(id)
        if (wire.version === 5 && (p.reasonCode ?? 0) >= 0x80) {
          // a v5 PUBREC failure ends the flow
          this.inflight.delete(id)
          this.store?.outboundDone(this.storeKey, id)
          return this.pump(wire)
        }
        if (out !== undefined) {
          out.stage = 2
          this.store?.outboundPubrec(this.storeKey, id)
        }
        this.write(wire, encodeAck("pubrel", id, wire.version))
        return
      }
      case "pubrel": {
        const id = p.messageId ?? 0
        if (this.awaitingRel.delete(id)) this.store?.inboundQos2Release(this.storeKey, id)
        this.write(wire, encodeAck("pubcomp", id, wire.version))
        return
      }
      case "suback": {
        this.pendingAcks.delete(p.messageId ?? 0)
        const granted = p.granted as ReadonlyArray<number | { qos: number }>
        for (const g of granted) {
          const code = typeof g === "number" ? g : g.qos
          if (code >= 0x80) this.log.warning(`Bridge ${this.config.name}: the remote broker refused a subscription (0x${code.toString(16)}).`)
        }
        return
      }
      case "unsuback":
        this.pendingAcks.delete(p.messageId ?? 0)
        return
      case "pingresp":
        wire.pingSentAt = undefined
        return
      case "connack": {
        if (wire.up) return this.fail(wire, "Protocol", "a second CONNACK")
        // accepted: the session starts now, before any PUBLISH that follows in the same chunk
        if ((wire.version === 5 ? (p.reasonCode ?? 0) : (p.returnCode ?? 0)) === 0) this.onConnected(wire, p)
        else wire.socket.destroy()
        Deferred.unsafeDone(wire.connack, Exit.succeed(p))
        return
      }
      case "disconnect":
        return this.fail(wire, "Lost", `the remote broker disconnected${p.reasonCode !== undefined ? ` (0x${p.reasonCode.toString(16)})` : ""}`)
      default:
        return this.fail(wire, "Protocol", `unexpected ${p.cmd} packet`)
    }
  }

  /** A message from the remote broker: published locally as the bridge (bridge__remap_topic_in). */
  private onPublish(wire: Wire, p: Packet & { cmd: "publish" }): void {
    if (!wire.up) return this.fail(wire, "Protocol", "PUBLISH before CONNACK")
    // [MQTT-2.3.1-1] QoS 1 and 2 need a non-zero packet identifier: the link ends, as Mosquitto's handle__publish does
    if (p.qos > 0 && (p.messageId ?? 0) === 0) return this.fail(wire, "Protocol", "packet identifier 0 in a QoS > 0 PUBLISH")
    this.core.stats.messagesReceived++
    this.core.stats.publishBytesReceived += p.payload.length
    let topic = p.topic
    const alias = wire.version === 5 ? p.properties?.topicAlias : undefined
    if (alias !== undefined) {
      if (alias === 0 || alias > this.config.maxTopicAlias) return this.fail(wire, "Protocol", `topic alias ${alias} out of range`)
      if (topic.length === 0) {
        const known = wire.inAliases?.get(alias)
        if (known === undefined) return this.fail(wire, "Protocol", `unknown topic alias ${alias}`)
        topic = known
      } else {
        ;(wire.inAliases ??= new Map()).set(alias, topic)
      }
    }
    if (this.remap) topic = remapIncoming(this.config.topics, topic)
    const qos = p.qos
    const id = p.messageId ?? 0
    // an invalid topic is swallowed (handle_publish.c); the flow is still acknowledged
    const deliverable = validateTopicName(topic) && (qos !== 2 || !this.awaitingRel.has(id))
    if (deliverable) {
      const core = this.core
      const payload = typeof p.payload === "string" ? Buffer.from(p.payload) : p.payload
      const properties = wire.version === 5 ? forwardedProperties(p.properties) : undefined
      const message = new Message(topic, payload, qos, p.retain, properties, this.clientId, core.now())
      core.router.publish(message)
      if (qos > 0 || p.retain || core.settings.queueQos0Messages) message.ownPayload()
      if (qos === 2) {
        this.awaitingRel.add(id)
        this.store?.inboundQos2Add(this.storeKey, id)
      }
    }
    if (qos === 0) return
    const ack = encodeAck(qos === 1 ? "puback" : "pubrec", id, wire.version)
    // durable persistence: acknowledged only once what the message became is on disk, as for a client
    const store = this.core.store
    if (store !== undefined && store.durable) store.whenDurable(() => !wire.socket.destroyed && this.write(wire, ack))
    else this.write(wire, ack)
  }

  private fail(wire: Wire, reason: BridgeError["reason"], message: string): void {
    wire.socket.destroy()
    Deferred.unsafeDone(wire.closed, Exit.fail(new BridgeError({ reason, message, connectedFor: undefined })))
  }

  /**
   * After a successful CONNACK: the remote's limits (v5), notifications,
   * subscriptions, the local retained messages, then resend and pump
   * (handle_connack.c, bridge__on_connect).
   */
  private onConnected(wire: Wire, connack: Packet & { cmd: "connack" }): void {
    const c = this.config
    const props = wire.version === 5 ? connack.properties : undefined
    if (props?.maximumQoS !== undefined) this.remoteMaxQos = props.maximumQoS as QoS
    if (props?.retainAvailable === false) this.remoteRetain = false
    if (props?.receiveMaximum !== undefined) this.remoteReceiveMax = props.receiveMaximum
    if (props?.maximumPacketSize !== undefined) this.remoteMaxPacket = props.maximumPacketSize
    const sessionPresent = connack.sessionPresent === true
    wire.up = true
    this.state = "connected"
    // $SYS clients/connected: the bridge is a connected client while its link is up, as in Mosquitto
    this.core.stats.bridgesConnected++
    this.core.clientConnected()
    const now = this.core.now()
    // in flight before this connection (or restored from the store): resent after the notification and the subscriptions
    const resend = [...this.inflight.values()]
    this.lastSentAt = now
    if (c.notifications) {
      if (!c.notificationsLocalOnly) {
        const qos: QoS = this.remoteMaxQos === 0 ? 0 : 1
        const note = new Message(c.notificationTopic, ONE, qos, true, undefined, this.clientId, now)
        this.sendRaw(wire, note, qos, this.remoteRetain)
      }
      this.notifyLocal(ONE)
    }
    const v5 = wire.version === 5
    for (const t of c.topics) {
      if (t.direction === "out") {
        if (c.attemptUnsubscribe) this.write(wire, encode({ cmd: "unsubscribe", messageId: this.ackId(), unsubscriptions: [t.remoteTopic] }, wire.version))
        continue
      }
      const qos = (t.qos < this.remoteMaxQos ? t.qos : this.remoteMaxQos) as QoS
      const subscription = v5 ? { topic: t.remoteTopic, qos, nl: true, rap: true, rh: 0 } : { topic: t.remoteTopic, qos }
      this.write(wire, encode({ cmd: "subscribe", messageId: this.ackId(), subscriptions: [subscription] }, wire.version))
    }
    // what was in flight goes again: PUBLISH with DUP (or anew when the remote kept no session), PUBREL
    for (const out of resend) {
      if (out.stage === 2) {
        if (sessionPresent) this.write(wire, encodeAck("pubrel", out.id, wire.version))
        else {
          this.inflight.delete(out.id)
          this.store?.outboundDone(this.storeKey, out.id)
        }
        continue
      }
      // with its packet id (a remote without the session takes it as a new message)
      this.inflight.delete(out.id)
      this.send(wire, out.message, out.qos, out.retain, out, "inflight", sessionPresent)
    }
    // the local retained messages of the out topics (retain__queue), not those the bridge itself brought in
    const seen = new Set<Message>()
    for (const t of c.topics) {
      if (t.direction === "in") continue
      this.core.router.retained.match(
        t.localTopic,
        (m) => {
          if (m.origin === this.clientId || seen.has(m)) return
          seen.add(m)
          const qos = (m.qos < t.qos ? m.qos : t.qos) as QoS
          const out: Out = { message: m, qos, retain: true, id: 0, stage: 0 }
          this.queue.push(out)
          this.store?.outboundQueue(this.storeKey, delivery(out))
        },
        now
      )
    }
    this.pump(wire)
  }

  /** A PUBLISH outside the local flow (the remote notification), tracked in flight like any other. */
  private sendRaw(wire: Wire, message: Message, qos: QoS, retain: boolean): void {
    const out: Out = { message, qos, retain, id: 0, stage: 0 }
    if (qos > 0) out.id = this.allocateId()
    const frame = encodePublish({ topic: message.topic, payload: message.payload, qos, retain, messageId: out.id }, wire.version).buffer
    if (qos > 0) {
      out.stage = 1
      this.inflight.set(out.id, out)
    }
    this.write(wire, frame)
    this.countPublishSent(message.payload.length)
  }

  private onDisconnected(wasUp: boolean): void {
    this.wire = undefined
    if (wasUp) {
      this.core.stats.clientsConnected--
      this.core.stats.bridgesConnected--
    }
    if (this.state !== "stopped") this.state = "down"
    if (wasUp && this.config.notifications) this.notifyLocal(ZERO)
    if (wasUp) this.onDown?.()
  }

  /** Called when an established link ends (bridge_reload_type lazy: the new configuration's moment). */
  onDown: (() => void) | undefined = undefined

  /** Drop the in-flight state at a new connection when the local session is clean (local_cleansession). */
  private beforeConnect(): void {
    if (this.config.cleanSession) {
      for (const id of this.awaitingRel) this.store?.inboundQos2Release(this.storeKey, id)
      this.awaitingRel.clear()
    }
    if (this.config.localCleanSession) this.inflight.clear()
    this.pendingAcks.clear()
    this.remoteMaxQos = 2
    this.remoteRetain = true
    this.remoteReceiveMax = 65535
    this.remoteMaxPacket = 0
  }

  /** The address of the next attempt; every failure moves on to the next one (bridge_check). */
  private nextAddress(): void {
    this.addressIndex = (this.addressIndex + 1) % this.config.addresses.length
  }

  // -------------------------------------------------------------- the link

  /**
   * Connect and pump: one connection, from opening the socket to its end. Fails
   * with a BridgeError when the connection fails or dies; succeeds only for a
   * lazy bridge that went idle. The caller's schedule decides what happens next.
   */
  get link(): Effect.Effect<void, BridgeError> {
    return Effect.scoped(
      Effect.suspend(() => this.connectAndPump()).pipe(
        Effect.withSpan("Bridge.link", { attributes: { "bridge.name": this.config.name } }),
        Effect.tapError((e) =>
          Effect.sync(() => {
            if (e.reason !== "PrimaryBack") this.nextAddress()
            this.log.notice(`Bridge ${this.config.name}: ${e.message}.`)
          })
        )
      )
    )
  }

  private connectAndPump(): Effect.Effect<void, BridgeError, Scope.Scope> {
    const c = this.config
    const address = c.addresses[this.addressIndex]
    const version = c.protocolVersion
    return Effect.gen(this, function* () {
      this.beforeConnect()
      this.state = "connecting"
      this.log.notice(`Connecting bridge ${c.name} (${address.host}:${address.port})`)
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          const wasUp = this.wire?.up === true
          this.onDisconnected(wasUp)
        })
      )
      const timeoutMs = Math.max(5, c.keepalive) * 1000
      const socket = yield* openSocket(address, c.tls, c.bindAddress, timeoutMs, c.tcpKeepalive).pipe(
        Effect.mapError((e) => new BridgeError({ reason: e.reason, message: `unable to connect to ${address.host}:${address.port}: ${e.message}`, connectedFor: undefined }))
      )
      const parser = new PacketParser()
      parser.protocolVersion = version
      const now = this.core.now()
      const wire: Wire = {
        socket,
        parser,
        version,
        closed: yield* Deferred.make<never, BridgeError>(),
        connack: yield* Deferred.make<Packet & { cmd: "connack" }>(),
        corked: false,
        up: false,
        lastIn: now,
        lastOut: now,
        pingSentAt: undefined,
        inAliases: undefined
      }
      this.wire = wire
      const packets: Array<Packet> = []
      socket.on("data", (chunk: Buffer) => {
        wire.lastIn = this.core.now()
        this.core.stats.bytesReceived += chunk.length
        const error = parser.parse(chunk, packets)
        this.core.stats.packetsReceived += packets.length
        for (let i = 0; i < packets.length && !socket.destroyed; i++) this.onPacket(wire, packets[i])
        packets.length = 0
        if (error !== undefined) this.fail(wire, "Protocol", `malformed packet from the remote broker: ${error.message}`)
      })
      socket.on("drain", () => this.pump(wire))
      socket.on("error", () => {})
      socket.on("close", () => Deferred.unsafeDone(wire.closed, Exit.fail(new BridgeError({ reason: "Lost", message: "connection lost", connectedFor: undefined }))))

      this.write(wire, encode(this.connectPacket(version), version))
      const connack = yield* Deferred.await(wire.connack).pipe(
        Effect.raceFirst(Deferred.await(wire.closed)),
        Effect.timeoutFail({
          duration: Duration.millis(timeoutMs),
          onTimeout: () => new BridgeError({ reason: "Timeout", message: "no CONNACK from the remote broker", connectedFor: undefined })
        })
      )
      const code = version === 5 ? (connack.reasonCode ?? 0) : (connack.returnCode ?? 0)
      if (code !== 0) {
        if (version !== 5 && code === 1 && c.tryPrivate && this.tryPrivateAccepted) {
          // handle_connack.c: unacceptable protocol version to a bridge CONNECT: next time without the bridge bit
          this.tryPrivateAccepted = false
        }
        if (version === 5 && code === 0x9a) this.remoteRetain = false
        return yield* new BridgeError({ reason: "Refused", message: `connection refused by the remote broker (0x${code.toString(16)})`, connectedFor: undefined })
      }
      const keepaliveMs = ((version === 5 ? connack.properties?.serverKeepAlive : undefined) ?? c.keepalive) * 1000
      const connectedAt = yield* Clock.currentTimeMillis
      this.log.notice(`Bridge ${c.name} connected to ${address.host}:${address.port}.`)

      const watchers: Array<Effect.Effect<void, BridgeError>> = [Deferred.await(wire.closed), this.keepalive(wire, keepaliveMs)]
      if (c.startType === "lazy") watchers.push(idle(() => this.lastSentAt, c.idleTimeout * 1000).pipe(Effect.tap(() => this.log.notice(`Bridge connection ${c.name} has exceeded idle timeout, disconnecting.`))))
      if (!c.roundRobin && this.addressIndex !== 0) watchers.push(this.primaryProbe())
      // the first watcher to end, with success (idle) or failure, ends the link (raceAll alone waits for a success)
      yield* Effect.raceAll(watchers.map((w) => Effect.exit(w))).pipe(
        Effect.flatten,
        Effect.catchAll((e) =>
          Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.fail(new BridgeError({ reason: e.reason, message: e.message, connectedFor: t - connectedAt, immediate: e.immediate })))
        )
      )
    })
  }

  /** PINGREQ after `keepalive` without traffic; the connection is lost when no answer comes within another keepalive. */
  private keepalive(wire: Wire, keepaliveMs: number): Effect.Effect<never, BridgeError> {
    if (keepaliveMs === 0) return Effect.never
    return Effect.gen(this, function* () {
      while (true) {
        const now = yield* Clock.currentTimeMillis
        if (wire.pingSentAt !== undefined) {
          const wait = wire.pingSentAt + keepaliveMs - now
          if (wait <= 0) {
            wire.socket.destroy()
            return yield* new BridgeError({ reason: "Keepalive", message: "no answer to PINGREQ within the keepalive interval", connectedFor: undefined })
          }
          yield* Effect.sleep(Duration.millis(wait))
          continue
        }
        const due = Math.min(wire.lastOut, wire.lastIn) + keepaliveMs
        if (now >= due) {
          wire.pingSentAt = now
          this.write(wire, PINGREQ)
          continue
        }
        yield* Effect.sleep(Duration.millis(due - now))
      }
    })
  }

  /** round_robin false, on a secondary address: every 5 s try the primary; when it answers, reconnect there. */
  private primaryProbe(): Effect.Effect<never, BridgeError> {
    const c = this.config
    const primary = c.addresses[0]
    return Effect.gen(this, function* () {
      while (true) {
        yield* Effect.sleep(Duration.millis(PRIMARY_RETRY_MS))
        if (yield* probe(primary, c.bindAddress, PRIMARY_RETRY_MS)) {
          this.addressIndex = 0
          return yield* new BridgeError({
            reason: "PrimaryBack",
            message: `the primary address ${primary.host}:${primary.port} is reachable again, reconnecting to it`,
            connectedFor: undefined,
            immediate: true
          })
        }
      }
    })
  }
}

/** The store's record of a delivery the bridge holds. */
const delivery = (out: Out) => ({ message: out.message, qos: out.qos, retain: out.retain, subscriptionIds: undefined })

/** A bridge's stored local session as the runtime holds it: in flight awaiting PUBACK / PUBREC (1) or PUBCOMP (2), then queued. */
const fromStored = (stored: StoredSession<Message>): BridgeCarry => ({
  inflight: stored.inflight.map((e): Out => ({ message: e.message, qos: e.qos, retain: e.retain, id: e.messageId, stage: e.state === "await-pubcomp" ? 2 : 1 })),
  queue: stored.queue.map((q): Out => ({ message: q.message, qos: q.qos, retain: q.retain, id: 0, stage: 0 })),
  awaitingRel: stored.inboundQos2
})
