/**
 * The broker's shared, synchronous state: settings, the router, the session
 * registry and the write scheduler. Connections call into it from Node's socket
 * callbacks; Effect owns its lifecycle (see Broker.ts).
 */
import { Router } from "../routing/Router.js"
import type { Log } from "../log/Log.js"
import type { StoredSession, StoredWill, StoreWriter } from "../persistence/Persistence.js"
import type { ClientAcl } from "../security/Auth.js"
import type { ConnectAuthRequest } from "./Connection.js"
import { atEndOfTurn, TurnQueue } from "../runtime/endOfTurn.js"
import { Message, type QoS } from "./Message.js"
import type { FlowLimits, Outgoing } from "./OutboundFlow.js"
import { Session } from "./Session.js"

export interface CoreSettings {
  /** `max_inflight_messages`, default 20; 0 = unlimited */
  readonly maxInflightMessages: number
  /** `max_queued_messages`, default 1000; 0 = unlimited */
  readonly maxQueuedMessages: number
  /** `queue_qos0_messages`, default false */
  readonly queueQos0Messages: boolean
  /** `max_inflight_bytes`, default 0 (no limit) */
  readonly maxInflightBytes: number
  /** `max_queued_bytes`, default 0 (no limit) */
  readonly maxQueuedBytes: number
  /** `upgrade_outgoing_qos`, default false: deliver at the subscription's QoS */
  readonly upgradeOutgoingQos: boolean
  /** `allow_duplicate_messages` */
  readonly allowDuplicateMessages: boolean
  /** `persistent_client_expiration` in seconds; undefined: never */
  readonly persistentClientExpiration: number | undefined
  /** `memory_limit` in bytes (V8 heap); 0: none */
  readonly memoryLimit: number
  /** `max_topic_alias`: the Topic Alias Maximum offered to v5 clients, default 10 */
  readonly maxTopicAlias: number
  /** Midge: v5 Response Information is this prefix + the client id */
  readonly responseInformationPrefix: string
  /** `check_retain_source`, default true */
  readonly checkRetainSource: boolean
  /** `max_keepalive`, default 65535 */
  readonly maxKeepalive: number
  /** `max_packet_size`, default 0 (no limit beyond the protocol's) */
  readonly maxPacketSize: number
  /** `message_size_limit`, default 0 (none) */
  readonly messageSizeLimit: number
  /** `allow_zero_length_clientid`, default true */
  readonly allowZeroLengthClientid: boolean
  /** `auto_id_prefix`, default "auto-" */
  readonly autoIdPrefix: string
  /** `retain_available`, default true */
  readonly retainAvailable: boolean
  /** `allow_anonymous` */
  readonly allowAnonymous: boolean
  /** `set_tcp_nodelay`, default false */
  readonly setTcpNodelay: boolean
  /** `connection_messages`, default true */
  readonly connectionMessages: boolean
  /** how long a new connection may take to send CONNECT (ms) */
  readonly connectTimeoutMs: number
  /** `global_max_connections` (Mosquitto 2.1): network connections over all listeners; -1: no limit */
  readonly globalMaxConnections: number
  /** `global_max_clients` (Mosquitto 2.1): client sessions, connected or not; -1: no limit */
  readonly globalMaxClients: number
  /** `retain_expiry_interval` (Mosquitto 2.1), seconds between sweeps of expired retained messages; 0: none */
  readonly retainExpiryInterval: number
  /** `enable_control_api` (Mosquitto 2.1): the broker answers `$CONTROL/broker/v1` (read by the Broker, security/brokerControl.ts) */
  readonly enableControlApi: boolean
}

export const defaultSettings: CoreSettings = {
  maxInflightMessages: 20,
  maxQueuedMessages: 1000,
  queueQos0Messages: false,
  maxInflightBytes: 0,
  maxQueuedBytes: 0,
  upgradeOutgoingQos: false,
  allowDuplicateMessages: false,
  persistentClientExpiration: undefined,
  memoryLimit: 0,
  maxTopicAlias: 10,
  responseInformationPrefix: "response/",
  checkRetainSource: true,
  maxKeepalive: 65535,
  maxPacketSize: 0,
  messageSizeLimit: 0,
  allowZeroLengthClientid: true,
  autoIdPrefix: "auto-",
  retainAvailable: true,
  allowAnonymous: true,
  setTcpNodelay: false,
  connectionMessages: true,
  connectTimeoutMs: 10_000,
  globalMaxConnections: -1,
  globalMaxClients: -1,
  retainExpiryInterval: 0,
  enableControlApi: false
}

/** Something with frames waiting to be written at the end of this event-loop turn. */
export interface Flushable {
  flush(): void
}

/**
 * One write per connection per event-loop turn: connections register here on
 * their first frame of a turn and are flushed together at the end of the turn
 * (`atEndOfTurn`: the immediate the log's lines of the turn share).
 */
export class FlushScheduler {
  // a flush that throws leaves the connections after it to the next turn's flush
  private readonly pending = new TurnQueue<Flushable>((f) => f.flush(), atEndOfTurn)

  schedule(f: Flushable): void {
    this.pending.add(f)
  }
}

export interface Stats {
  messagesReceived: number
  messagesSent: number
  bytesReceived: number
  bytesSent: number
  publishDropped: number
  clientsConnected: number
  clientsMaximum: number
  clientsExpired: number
  /** MQTT packets of every type received ($SYS/broker/messages/received) */
  packetsReceived: number
  /** MQTT packets of every type sent ($SYS/broker/messages/sent) */
  packetsSent: number
  /** payload bytes of the PUBLISH packets received ($SYS/broker/publish/bytes/received) */
  publishBytesReceived: number
  /** payload bytes of the PUBLISH packets sent ($SYS/broker/publish/bytes/sent) */
  publishBytesSent: number
  /** CONNECT packets received, accepted or not ($SYS/broker/load/connections/+) */
  connectsReceived: number
  /** sockets accepted by the listeners ($SYS/broker/load/sockets/+) */
  socketsOpened: number
  /** bridges whose link to the remote broker is up: connected clients without a session ($SYS clients/total) */
  bridgesConnected: number
}

/** The connection-side handle the core keeps for an attached session. */
export interface AttachedConnection {
  /** close because another connection took the client id over; `publishWill` false: its will is left to the node that took the session (cluster fencing) */
  takenOver(publishWill?: boolean): void
  /** close on the broker's initiative (an administrator, a revoked client): v5 DISCONNECT with `reasonCode` */
  kick(reasonCode: number, reasonString?: string): void
  /** what its CONNECT asked the authentication service, to ask again after a reload; undefined: not to be checked again (v5 enhanced authentication) */
  authRequest?(): ConnectAuthRequest | undefined
  /** ask the Authorization service for its ClientAcl again (after a reload of the security options) */
  reauthorize?(): void
}

/**
 * Midge clustering (src/cluster/): the points where a connection waits
 * for Redis. Undefined on a single node, so the hot path is untouched.
 */
export interface ClusterHooks {
  /** CONNECT, before the session is opened: make this node the client id's owner, taking its session over from another node; `done` when settled */
  claim(clientId: string, clean: boolean, done: () => void): void
  /** PUBACK / PUBREC: `then` once every message this turn forwarded to other nodes is stored in Redis (at once when none is pending) */
  whenForwarded(then: () => void): void
  /** SUBACK: `then` once every live node routes by this node's route changes so far (at once when there is none since the last time; in call order) */
  whenRouted(then: () => void): void
  /** QoS 2 PUBLISH received (before its PUBREC, which waits through `whenForwarded`) or released (PUBREL): kept in Redis for a node that adopts the session */
  inboundQos2(clientId: string, id: number, received: boolean): void
  /**
   * A persistent session's outbound QoS 2 (exactly once across a node's death, docs/cluster.md):
   * `send` writes the PUBLISH (`dup`: a resend) once Redis holds its in-flight record
   */
  outboundPublish(session: Session, out: Outgoing, messageId: number, dup: boolean, send: () => void): void
  /** `send` writes the PUBREL once Redis holds "released" */
  outboundPubrel(session: Session, messageId: number, send: () => void): void
  /** PUBCOMP (or a v5 PUBREC failure) for `messageId`, before the flow forgets it */
  outboundDone(session: Session, messageId: number): void
  /** a session connected (`offline` false, with the connection's will) or went offline (its delayed will is `session.pendingWill`): its Redis keys follow (expiry, will) */
  persisted(session: Session, will: StoredWill | undefined, offline: boolean): void
  /** a session ended here (clean session closed, expired, discarded): its Redis keys go */
  ended(clientId: string): void
}

export class Core {
  readonly router: Router
  /** the cluster's hooks when this node is part of a Midge cluster */
  cluster: ClusterHooks | undefined = undefined
  readonly sessions = new Map<string, Session>()
  readonly attached = new Map<string, AttachedConnection>()
  /** network connections open on every listener, CONNECTed or not (`global_max_connections`) */
  openConnections = 0
  /** the persistence store's writer, when persistence is on */
  store: StoreWriter | undefined = undefined
  /**
   * The bridges' local sessions read from the store at start, by bridge name:
   * each bridge takes its own when it starts (src/bridge/internal/runtime.ts).
   */
  readonly storedBridges = new Map<string, StoredSession<Message>>()
  /** start an offline session's expiry timer (delayed will, expiry): set by the Broker; used for sessions made outside a connection (cluster adoption) */
  expireLater: ((session: Session) => void) | undefined = undefined

  /** Persistent sessions are recorded in the store; their flow tells it every change. */
  persist(session: Session, will: StoredWill | undefined, offline: boolean): void {
    this.cluster?.persisted(session, will, offline)
    const store = this.store
    if (store === undefined) return
    if (session.expiryInterval === 0) {
      session.flow.observer = undefined
      store.sessionDelete(session.clientId)
      return
    }
    const clientId = session.clientId
    store.sessionUpsert({ clientId, expiryInterval: session.expiryInterval, disconnectedAt: offline ? session.disconnectedAt : undefined, will })
    session.flow.observer ??= {
      queued: (out) => store.outboundQueue(clientId, out),
      sent: (id, out) => store.outboundSend(clientId, id, out),
      dequeued: (id) => store.outboundDequeue(clientId, id),
      pubrec: (id) => store.outboundPubrec(clientId, id),
      done: (id) => store.outboundDone(clientId, id),
      cleared: () => store.outboundClear(clientId)
    }
  }

  /** the Authorization service's per-client checks; undefined: everything allowed */
  authorize: ((client: { readonly clientId: string; readonly username: string | undefined; readonly listenerPort: number }) => ClientAcl) | undefined =
    undefined
  readonly flusher = new FlushScheduler()
  readonly stats: Stats = {
    messagesReceived: 0,
    messagesSent: 0,
    bytesReceived: 0,
    bytesSent: 0,
    publishDropped: 0,
    clientsConnected: 0,
    clientsMaximum: 0,
    clientsExpired: 0,
    packetsReceived: 0,
    packetsSent: 0,
    publishBytesReceived: 0,
    publishBytesSent: 0,
    connectsReceived: 0,
    socketsOpened: 0,
    bridgesConnected: 0
  }

  /** a client connected, or a bridge's link came up: $SYS clients/connected and its high-water mark */
  clientConnected(): void {
    const s = this.stats
    if (++s.clientsConnected > s.clientsMaximum) s.clientsMaximum = s.clientsConnected
  }

  private memoryCheckedAt = -Infinity
  private memoryOver = false

  constructor(
    /** replaced as a whole on reload (SIGHUP) */
    public settings: CoreSettings,
    readonly log: Log,
    /** the Clock's time in ms (TestClock in tests) */
    readonly now: () => number
  ) {
    this.router = new Router()
    this.router.upgradeOutgoingQos = settings.upgradeOutgoingQos
    this.router.allowDuplicates = settings.allowDuplicateMessages
  }

  /** The flow limits of the current settings: one object shared by the sessions (not one per connect). */
  flowLimits(): FlowLimits {
    if (this.limitsOf !== this.settings) {
      this.limitsOf = this.settings
      this.limits = {
        maxInflight: this.settings.maxInflightMessages,
        maxQueued: this.settings.maxQueuedMessages,
        queueQos0: this.settings.queueQos0Messages,
        maxInflightBytes: this.settings.maxInflightBytes,
        maxQueuedBytes: this.settings.maxQueuedBytes
      }
    }
    return this.limits!
  }
  private limitsOf: CoreSettings | undefined = undefined
  private limits: FlowLimits | undefined = undefined

  /** New settings (SIGHUP): existing sessions take the new limits. */
  applySettings(settings: CoreSettings): void {
    this.settings = settings
    this.router.upgradeOutgoingQos = settings.upgradeOutgoingQos
    this.router.allowDuplicates = settings.allowDuplicateMessages
    const limits = this.flowLimits()
    for (const session of this.sessions.values()) session.flow.limits = limits
  }

  /** `memory_limit`: is the heap over it? Sampled at most every 100 ms. */
  overMemoryLimit(): boolean {
    const limit = this.settings.memoryLimit
    if (limit === 0) return false
    const now = this.now()
    if (now - this.memoryCheckedAt >= 100) {
      this.memoryCheckedAt = now
      this.memoryOver = process.memoryUsage().heapUsed > limit
    }
    return this.memoryOver
  }

  /**
   * When an offline session expires (Clock ms), or undefined if it never does:
   * the v5 Session Expiry Interval, or `persistent_client_expiration` for
   * sessions that never expire by themselves (v3/v4 clean session 0, v5 0xFFFFFFFF).
   */
  expiryDeadline(session: Session): number | undefined {
    if (session.wire !== undefined || this.sessions.get(session.clientId) !== session) return undefined
    const interval = session.expiryInterval === 0xffffffff ? this.settings.persistentClientExpiration : session.expiryInterval
    const expiry = interval === undefined ? undefined : session.disconnectedAt + interval * 1000
    const will = session.pendingWill?.at
    return will === undefined ? expiry : expiry === undefined ? will : Math.min(will, expiry)
  }

  /**
   * An offline session's timer fired: publish a delayed will whose time has
   * come, remove the session if it expired. Returns true when it was removed.
   */
  expireIfDue(session: Session): boolean {
    const now = this.now()
    const will = session.pendingWill
    if (will !== undefined && session.wire === undefined && now >= will.at) {
      session.pendingWill = undefined
      this.router.publish(will.message)
    }
    if (session.wire !== undefined || this.sessions.get(session.clientId) !== session) return false
    const interval = session.expiryInterval === 0xffffffff ? this.settings.persistentClientExpiration : session.expiryInterval
    if (interval === undefined || now < session.disconnectedAt + interval * 1000) return false
    this.log.notice(`Expiring client ${session.clientId} due to timeout.`)
    this.discardSession(session)
    this.stats.clientsExpired++
    return true
  }

  /**
   * The session for a CONNECT: the existing one unless `clean`, else a new one.
   * A discarded session's subscriptions leave the router.
   */
  openSession(clientId: string, clean: boolean): { session: Session; present: boolean } {
    const existing = this.sessions.get(clientId)
    if (existing !== undefined && !clean) return { session: existing, present: true }
    if (existing !== undefined) this.discardSession(existing)
    const session = this.newSession(clientId)
    this.sessions.set(clientId, session)
    return { session, present: false }
  }

  /**
   * A session of this broker's: its queue limits, and where its dropped messages are counted and
   * said (for every session, connected or not, restored from the store or adopted from a node).
   */
  newSession(clientId: string): Session {
    const session = new Session(clientId, this.flowLimits())
    session.stats = this.stats
    session.log = this.log
    return session
  }

  discardSession(session: Session): void {
    session.flow.observer = undefined
    this.store?.sessionDelete(session.clientId)
    // a will still waiting for its delay goes out when its session ends [MQTT-3.1.3-9]
    const will = session.pendingWill
    session.pendingWill = undefined
    if (will !== undefined) this.router.publish(will.message)
    if (session.hasSubscriptions) {
      for (const filter of session.subscriptions.keys()) this.router.unsubscribe(session, filter)
      session.subscriptions.clear()
    }
    // messages of shared subscriptions this session did not finish go to another member of the group
    // (Mosquitto loses them); a message already released with PUBREL was received and stays done
    const unfinished: Array<Outgoing> = []
    for (const entry of session.flow.inflight.values()) if (entry.shared !== undefined && entry.state !== "await-pubcomp") unfinished.push(entry)
    for (let i = 0; i < session.flow.queue.length; i++) {
      const out = session.flow.queue[i]
      if (out !== undefined && out.shared !== undefined) unfinished.push(out)
    }
    session.flow.clear()
    for (const out of unfinished) this.router.deliverShared(out.shared!, out.message, session)
    if (this.sessions.get(session.clientId) === session) this.sessions.delete(session.clientId)
    this.cluster?.ended(session.clientId)
  }

  /**
   * The broker stops with no store to keep its sessions: every session ends with
   * the process, so the wills still waiting for their delay go out now
   * [MQTT-3.1.3-9] (Mosquitto's `will_delay__send_all` at shutdown). With a store
   * they stay pending and are restored with what is left of their delay.
   */
  publishPendingWills(): void {
    for (const session of this.sessions.values()) {
      const will = session.pendingWill
      if (will === undefined || session.wire !== undefined) continue
      session.pendingWill = undefined
      this.router.publish(will.message)
    }
  }

  /** Publish from inside the process (library API, wills, $SYS). */
  publish(
    topic: string,
    payload: Buffer,
    qos: QoS,
    retain: boolean,
    properties?: Message["properties"],
    origin = ""
  ): number {
    const message = new Message(topic, payload, qos, retain, properties, origin, this.now())
    return this.router.publish(message)
  }
}
