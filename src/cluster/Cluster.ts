/**
 * Midge nodes clustered through Redis (or Valkey) with the official `redis`
 * client: several processes pointed at the same Redis form one broker. The
 * design, with what it does not do yet, is in docs/cluster.md.
 *
 * - Routing: each node keeps the set of filters it has subscribers for in
 *   `P:routes:<node>` and announces changes on the `P:routes` channel. Other
 *   nodes register a pseudo-subscriber per remote node (`$node:<id>`) in their
 *   own trie, so the router's per-subscriber merge sends one copy per node and
 *   only to nodes that need it; a shared group's round robin can pick a node.
 * - Delivery: a message for a node is appended to that node's inbox stream
 *   `P:inbox:<node>` (XADD, pipelined once per event-loop turn). A QoS 1 / 2
 *   PUBLISH is acknowledged only after Redis confirmed the XADDs of its turn.
 *   The node reads its inbox with a consumer group, routes locally (never on to
 *   another node), and XACKs + XDELs an entry once no persistent session here
 *   holds its messages any more (PUBACK / PUBCOMP seen): a node that adopts the
 *   sessions of a dead node replays what is left. A message published here
 *   for a persistent session here goes to a held entry of this node's own
 *   inbox (`HeldNode`), kept and replayed the same way. A clean stop hands the
 *   persistent sessions to a live node at once (`handOver`). Inbound QoS 2 ids of
 *   persistent sessions are kept in `P:qos2:<client id>` (before PUBREC).
 * - Liveness: `P:alive:<node>` with a TTL, refreshed every heartbeat; a node
 *   whose key expired is dead and its routes are dropped. Ownership is a lease:
 *   a node whose key lapsed (Redis away, the process stalled) stops acting as
 *   owner, and once back either goes on (nobody adopted it) or, adopted (its
 *   `P:gen:<node>` moved on), drops its clients and sessions without writing
 *   and rejoins as a fresh node. A session's keys expire with it (PEXPIRE when
 *   offline) and go when it ends; its will is kept for an adopter.
 * - Sessions: `P:owner:<client id>` names the owning node. A CONNECT to another
 *   node asks the owner (channel `P:ctl:<node>`) to let the session go: it
 *   kicks its client, writes the session to `P:session:<client id>` and
 *   answers; the new node loads it and answers CONNACK with session present.
 * - Retained: the hash `P:retained`, changes announced on `P:retained`, every
 *   node keeping a replica (loaded at start).
 *
 * Hot path: a pseudo-subscriber's `deliver` pushes the entry's fields on an
 * array; one `setImmediate` per turn sends the batch. Nothing here runs when
 * no cluster is configured.
 */
import { Data, Duration, Effect, Schedule, type Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as os from "node:os"
import { createClient } from "redis"
import { matchTopic } from "../protocol/topic.js"
import type { StoredWill } from "../persistence/Persistence.js"
import type { Congestible, PublishSource, SharedGroup, Subscriber, SubscriptionOptions } from "../routing/Router.js"
import type { ClusterHooks, Core } from "../session/Core.js"
import { Message, type QoS } from "../session/Message.js"
import type { InflightEntry, Outgoing } from "../session/OutboundFlow.js"
import { isPacketId } from "../session/PacketIdMap.js"
import { Session } from "../session/Session.js"
import {
  fromJson,
  messageFields,
  messageOfFields,
  originOfKey,
  sharedOfFields,
  toJson,
  type MessageFields,
  type OutRecord,
  type WireDelivery,
  type WireSession
} from "./internal/codec.js"
import { RouteView } from "./internal/routes.js"

export interface ClusterOptions {
  /** `cluster_redis_url`: redis://host:port[/db] (Valkey speaks the same) */
  readonly redisUrl: string
  /** `cluster_node_id`: unique per node; default hostname-port or hostname-random */
  readonly nodeId?: string
  /** `cluster_key_prefix`: every Redis key and channel starts with it, default "midge" */
  readonly keyPrefix?: string
  /** heartbeat period (ms); a node is dead 3 periods after its last heartbeat. Default 1000 */
  readonly heartbeatMs?: number
  /** how long a CONNECT waits for the old owner to let the session go (ms), default 3000 */
  readonly releaseTimeoutMs?: number
}

export class ClusterError extends Data.TaggedError("ClusterError")<{
  readonly reason: "connect"
  readonly message: string
}> {}

/** What a running cluster node shows (tests, monitoring). */
export interface ClusterNode {
  readonly nodeId: string
  /** the live nodes this node knows, itself excluded */
  readonly peers: () => ReadonlyArray<string>
  /** the filters `nodeId` announced, as this node knows them */
  readonly remoteFilters: (nodeId: string) => ReadonlySet<string>
  /** messages sent to / received from other nodes */
  readonly stats: () => { readonly forwarded: number; readonly received: number }
}

const PEER_OPTIONS: SubscriptionOptions = { qos: 2, noLocal: false, retainAsPublished: true, retainHandling: 0, subscriptionId: undefined }

/** Another node, as a subscriber in this node's trie. */
class RemoteNode implements Subscriber {
  readonly clientId: string
  /** the router's count of this subscriber's subscriptions (Router: `Subscriber.routedSubscriptions`) */
  routedSubscriptions = 0
  readonly routes = new RouteView()
  /** when (Date.now()) the routes channel last changed this node's routes here */
  changedAt = 0
  constructor(
    readonly id: string,
    private readonly node: ClusterImpl
  ) {
    this.clientId = `$node:${id}`
  }
  online(): boolean {
    return true
  }
  deliver(
    message: Message,
    _qos: QoS,
    _retain: boolean,
    _ids: ReadonlyArray<number> | undefined,
    source: PublishSource | undefined,
    shared?: SharedGroup
  ): void {
    this.node.forward(this.id, message, shared, source)
  }
}

/**
 * This node, as a subscriber in its own trie, to the filters of its persistent
 * sessions: a QoS 1 / 2 message published here that one of them receives is
 * also written to this node's own inbox (a *held* entry, never routed again
 * here), so that it outlives this node like a message from another node does.
 */
class HeldNode implements Subscriber {
  readonly clientId: string
  /** the router's count of this subscriber's subscriptions (Router: `Subscriber.routedSubscriptions`) */
  routedSubscriptions = 0
  /** filter → the persistent sessions subscribed to it */
  readonly filters = new Map<string, Set<string>>()
  constructor(
    id: string,
    private readonly node: ClusterImpl
  ) {
    this.clientId = `$held:${id}`
  }
  online(): boolean {
    return true
  }
  deliver(message: Message, _qos: QoS, _retain: boolean, _ids: ReadonlyArray<number> | undefined, source: PublishSource | undefined): void {
    this.node.hold(message, undefined, undefined, source)
  }
}

/**
 * Make-before-break for a session taken over from a live node: subscribed here
 * to the session's stored filters (and announced) before the old owner is asked
 * to let go, it keeps what arrives for the client meanwhile; the session handed
 * over gets it once it is here (QoS 2 without what the session already has).
 */
class Takeover implements Subscriber {
  readonly clientId: string
  /** the router's count of this subscriber's subscriptions (Router: `Subscriber.routedSubscriptions`) */
  routedSubscriptions = 0
  readonly got: Array<readonly [Message, QoS, boolean, ReadonlyArray<number> | undefined]> = []
  readonly filters: Array<string> = []
  /** cluster-wide ids of QoS 2 messages the session has (or had) already */
  readonly done = new Set<string>()
  constructor(readonly id: string) {
    this.clientId = `$take:${id}`
  }
  online(): boolean {
    return true
  }
  deliver(message: Message, qos: QoS, retain: boolean, ids: ReadonlyArray<number> | undefined): void {
    message.ownPayload()
    this.got.push([message, qos, retain, ids])
  }
}

/** A session as the old owner hands it over: `done`, the cluster-wide ids of the QoS 2 messages its client completed lately. */
type HandedSession = WireSession & { readonly done?: ReadonlyArray<string> }

/** Messages published here for this node's persistent sessions: one held entry of this node's inbox (`o`: its origin, made here; `ref.id` once stored). */
interface HeldChunk {
  readonly ref: EntryRef
  readonly list: Array<MessageFields>
}

/** A persistent session's "published" record whose key is settled when the batch is sent (the message's held entry is known by then). */
type LateRecord = readonly [clientId: string, message: Message, messageId: number, value: string]

/** One pipelined round trip of XADDs (one entry per node, carrying many messages), and the acknowledgements that wait for it. */
interface Batch {
  readonly byNode: Map<string, Array<MessageFields>>
  /** held entries for this node's own inbox */
  readonly held: Array<HeldChunk>
  /** "published" records, keyed at send time */
  readonly late: Array<LateRecord>
  /** inbound QoS 2 ids of persistent sessions: [client id, packet id, received (SADD) or released (SREM)] */
  readonly qos2: Array<[string, number, boolean]>
  /** outbound QoS 2 records of persistent sessions, "client id\0key" → [client id, key, JSON (HSET) or undefined (HDEL)]; the last change of a turn wins */
  readonly out: Map<string, [string, string, string | undefined]>
  /** barrier markers asked for by other nodes: [node, barrier id], each appended to that node's inbox after this turn's messages for it */
  readonly barriers: Array<readonly [string, string]>
  size: number
  readonly waiters: Array<() => void>
}

const newBatch = (): Batch => ({ byNode: new Map(), held: [], late: [], qos2: [], out: new Map(), barriers: [], size: 0, waiters: [] })

/** messages per stream entry at most */
const ENTRY_MESSAGES = 500
/** messages waiting for the next XADD round trip above which publishers are held up (backpressure) */
const FORWARD_HIGH = 5000
/** QoS 2 ids from other nodes a node remembers, to route a retried batch's messages once (`seenQos2`) */
const QOS2_REMEMBERED = 20_000
/** completed QoS 2 ids a session keeps for a takeover (`Takeover.done`) */
const COMPLETED_KEPT = 1000

type Client = ReturnType<typeof createClient>

/**
 * The heartbeat, atomically: refresh `P:alive:<node>` and the membership only
 * while `P:gen:<node>` is this incarnation's number (an adopter increments it).
 * KEYS gen, alive, nodes; ARGV generation, epoch, TTL ms, node id. Returns -1:
 * adopted; 3: write routes again (removed from the nodes, or Redis lost its
 * data); 2: the alive key had expired; 0: fine.
 */
const REFRESH = `local g = redis.call('GET', KEYS[1])
if g and g ~= ARGV[1] then return -1 end
if not g then redis.call('SET', KEYS[1], ARGV[1]) end
local had = redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3], 'GET')
local added = redis.call('SADD', KEYS[3], ARGV[4])
if (not g) or added == 1 then return 3 end
if not had then return 2 end
return 0`

/**
 * A session's keys while this node owns it: no expiry (ARGV ms "") when it is
 * connected, its expiry when it went offline; its will ("" none); a persistent
 * session's metadata in its `P:subs` hash ("" none), so that an adopter knows
 * it even without subscriptions. KEYS owner, subs, qos2, will, out; ARGV node
 * id, ms, will, metadata. Nothing when another node owns it.
 */
const KEEP = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], '', ARGV[4]) end
for _, i in ipairs({1, 2, 3, 5}) do
  if ARGV[2] == '' then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
if ARGV[3] == '' then redis.call('DEL', KEYS[4])
elseif ARGV[2] == '' then redis.call('SET', KEYS[4], ARGV[3])
else redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[2]) end
return 1`

/**
 * A session ended here: it leaves the node's clients, and its keys go if this
 * node still owns it (or nobody does: they expired). KEYS owner, subs, qos2,
 * will, clients of the node, out; ARGV node id, client id.
 */
const ENDED = `redis.call('SREM', KEYS[5], ARGV[2])
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6])
return 1`

/** A will as Redis keeps it with its session: `at` (wall-clock ms) when it waits for its delay, `d` (s) the delay of a connected client's will. */
interface WireWill {
  readonly m: MessageFields
  readonly at?: number
  readonly d?: number
}

/** A persistent session as Redis keeps it for a node that adopts it. */
interface StoredSession {
  readonly clientId: string
  readonly expiryInterval: number
  readonly subs: ReadonlyArray<readonly [string, SubscriptionOptions]>
  readonly qos2: ReadonlyArray<string>
  /** `P:out:<client id>`: outbound QoS 2 records (key → OutRecord JSON) */
  readonly out: Readonly<Record<string, string>>
}

/**
 * The inbox entry a message was read from: its id in this node's inbox, and its
 * origin, `<node>:<stream id>` of the inbox it was first added to (an entry an
 * adopter moved into its own inbox keeps its origin). Messages are identified
 * across nodes as `<origin>:<index in the entry>` (outbound QoS 2 records).
 */
interface EntryRef {
  /** the stream id (a held entry's: set once Redis has stored it) */
  id: string
  readonly origin: string
}

/** What an adopted session's records say about the entries moved here: in-flight messages to link to their entry, completed records to delete with it. */
interface PendingLink {
  readonly messages: Array<Message>
  readonly completed: Array<readonly [string, string]>
}

/** Stream ids "ms-seq" compared as numbers. */
const idAfter = (a: string, b: string): boolean => {
  const [am, as] = a.split("-")
  const [bm, bs] = b.split("-")
  const d = Number(am) - Number(bm)
  return d > 0 || (d === 0 && Number(as) > Number(bs))
}

class ClusterImpl implements ClusterHooks, Congestible {
  /** publishers held up while too much waits for Redis (read by Connection.throttle) */
  waiters: Set<PublishSource> | undefined = undefined
  readonly remotes = new Map<string, RemoteNode>()
  /** this node in its own trie, for its persistent sessions' filters (held entries) */
  readonly heldNode: HeldNode
  /** local subscriptions per filter (remote nodes excluded) */
  private readonly localFilters = new Map<string, number>()
  private pending: Batch = newBatch()
  private inflight: Batch | undefined = undefined
  private scheduled = false
  /** routing a message that came from another node: it goes no further */
  private inbound = false
  /** applying a retained change made by another node: not written back */
  private applyingRetained = false
  private lastRouted = "0-0"
  /** inbox entries routed here and not yet acknowledged to Redis, in stream order */
  private unacked: Array<string> = []
  /** the inbox entry each message read from it came from (while a session holds the message) */
  private readonly entryOf = new WeakMap<Message, EntryRef>()
  /** the origin of this run's held entries starts with it */
  private get heldPrefix(): string {
    return `${this.nodeId}:h${this.idPrefix}`
  }
  private persistentSessions(): Map<string, Session> {
    const all = new Map<string, Session>()
    for (const [id, session] of this.core.sessions) if (session.expiryInterval !== 0) all.set(id, session)
    return all
  }
  /** held entries sent and not yet known by stream id, by origin */
  private readonly heldRefs = new Map<string, EntryRef>()
  /** a QoS 2 message's index in its entry (its record key is `<origin>:<index>`) */
  private readonly indexOf = new WeakMap<Message, number>()
  /** record keys of messages that came with a session (takeover, adoption) */
  private readonly recordKeys = new WeakMap<Message, string>()
  /** per inbox entry (local id): the "completed" records deleted with it, [client id, key] */
  private readonly completedOf = new Map<string, Array<readonly [string, string]>>()
  /** adopted sessions: the record keys (of the dead node) whose messages a replay must not deliver again */
  private readonly skipOf = new Map<string, Set<string>>()
  /** by origin: what adopted records say of entries moved (or copied) into this node's inbox, until they are read */
  private readonly links = new Map<string, PendingLink>()
  private readonly releases = new Map<string, () => void>()
  private readonly sharedNext = new Map<SharedGroup, number>()
  needsResync = true
  forwarded = 0
  received = 0
  closing = false

  // ---- the lease (docs/cluster.md "Liveness"): this node owns its sessions while its alive key lives
  /**
   * live: the lease is held; suspended: it lapsed (no refresh within the TTL: Redis away, or the
   * process stalled), nothing is written as owner until the node knows whether another node took
   * its sessions; fenced: another node did, this one dropped them and waits to rejoin.
   */
  state: "live" | "suspended" | "fenced" = "live"
  /** wall-clock ms until which the alive key is known to live (the send time of its last refresh + TTL) */
  private leaseUntil = Infinity
  private refreshedAt = Date.now()
  /** when the last heartbeat began, and until when no other node is declared dead (this node was stalled itself) */
  private lastBeat = Date.now()
  private graceUntil = 0
  /** this incarnation's number (`INCR P:gen:<node>`); an adopter increments it, so a stale incarnation finds out */
  generation = 0
  /** the alive key's value: this incarnation */
  private epoch: string = randomUUID()
  /** a heartbeat went through since the (re)join: a vanished alive key means something from then on */
  private joined = false
  /** the inbox reader goes back to the entries pending for it (after a lapse that ended without adoption, or a rejoin) */
  rereadPending = false
  /** detaching a session that lives on elsewhere: its subscriptions' removal is not written to Redis */
  private detaching = false
  /** client ids whose CONNECT is settling the owner here: their keys are not cleaned up meanwhile */
  private readonly claiming = new Map<string, number>()

  readonly keys: {
    readonly nodes: string
    readonly routes: string
    readonly retained: string
    alive(n: string): string
    routesOf(n: string): string
    inbox(n: string): string
    ctl(n: string): string
    owner(c: string): string
    session(c: string): string
    subs(c: string): string
    qos2(c: string): string
    clients(n: string): string
    adopt(n: string): string
    out(c: string): string
    gen(n: string): string
    will(c: string): string
  }

  constructor(
    readonly core: Core,
    readonly nodeId: string,
    prefix: string,
    readonly main: Client,
    readonly heartbeatMs: number,
    readonly releaseTimeoutMs: number
  ) {
    this.heldNode = new HeldNode(nodeId, this)
    this.keys = {
      nodes: `${prefix}:nodes`,
      routes: `${prefix}:routes`,
      retained: `${prefix}:retained`,
      alive: (n) => `${prefix}:alive:${n}`,
      routesOf: (n) => `${prefix}:routes:${n}`,
      inbox: (n) => `${prefix}:inbox:${n}`,
      ctl: (n) => `${prefix}:ctl:${n}`,
      owner: (c) => `${prefix}:owner:${c}`,
      session: (c) => `${prefix}:session:${c}`,
      subs: (c) => `${prefix}:subs:${c}`,
      qos2: (c) => `${prefix}:qos2:${c}`,
      clients: (n) => `${prefix}:clients:${n}`,
      adopt: (n) => `${prefix}:adopt:${n}`,
      out: (c) => `${prefix}:out:${c}`,
      gen: (n) => `${prefix}:gen:${n}`,
      will: (c) => `${prefix}:will:${c}`
    }
  }

  private warn(what: string, error: unknown): void {
    if (!this.closing) this.core.log.warning(`Warning: cluster: ${what}: ${error instanceof Error ? error.message : String(error)}`)
  }

  // ------------------------------------------------------------ outbound: hot path

  forward(node: string, message: Message, shared: SharedGroup | undefined, source?: PublishSource): void {
    // a message from another node is routed here only; $SYS is each node's own
    if (this.inbound || message.topic.startsWith("$SYS/")) return
    message.ownPayload()
    const batch = this.pending
    const fields = messageFields(message, shared)
    // QoS 2: one id for all its copies, so that a session taken over from a dead node does not get it twice
    if (message.qos === 2) fields.i = this.messageId(message)
    const list = batch.byNode.get(node)
    if (list === undefined) batch.byNode.set(node, [fields])
    else list.push(fields)
    batch.size++
    this.forwarded++
    this.schedule()
    // Redis is slower than the publishers: hold them up as a congested subscriber does
    if (source !== undefined && batch.size >= FORWARD_HIGH) source.throttle(this)
  }

  /**
   * A message published here that a persistent session here receives (through
   * `HeldNode`): into a held entry of this node's own inbox, stored in the
   * turn's pipeline (the publisher's PUBACK / PUBREC waits for it). The entry
   * is acknowledged like any other once no session here holds the message, and
   * replayed to the sessions by the node that adopts them.
   */
  hold(message: Message, member: string | undefined, shared: SharedGroup | undefined, source: PublishSource | undefined): void {
    if (this.inbound || message.qos === 0 || message.topic.startsWith("$SYS/")) return
    message.ownPayload()
    const batch = this.pending
    const held = batch.held
    // a message held twice in one turn (a shared group's member and the other persistent sessions, each
    // once) goes into one entry, its record key the index of its first copy (field `k` of the others)
    const known = this.entryOf.get(message)
    let chunk: HeldChunk | undefined
    if (known !== undefined) {
      for (let i = held.length - 1; i >= 0; i--) {
        if (held[i].ref === known) {
          chunk = held[i]
          break
        }
      }
    }
    const first = chunk === undefined
    if (chunk === undefined) {
      chunk = held.length === 0 ? undefined : held[held.length - 1]
      if (chunk === undefined || chunk.list.length >= ENTRY_MESSAGES) {
        chunk = { ref: { id: "", origin: `${this.heldPrefix}${(this.idSeq++).toString(36)}` }, list: [] }
        held.push(chunk)
        this.heldRefs.set(chunk.ref.origin, chunk.ref)
      }
    }
    const index = chunk.list.length
    const fields = messageFields(message, shared)
    // a shared group's delivery: replayed to that member only
    if (member !== undefined) fields.m = member
    if (first) {
      this.entryOf.set(message, chunk.ref)
      if (message.qos === 2) this.indexOf.set(message, index)
    } else if (message.qos === 2) {
      const k = this.indexOf.get(message)
      if (k !== undefined) fields.k = String(k)
    }
    chunk.list.push(fields)
    batch.size++
    this.schedule()
    if (source !== undefined && batch.size >= FORWARD_HIGH) source.throttle(this)
  }

  addWaiter(source: PublishSource): void {
    ;(this.waiters ??= new Set()).add(source)
  }

  private releaseWaiters(): void {
    const waiters = this.waiters
    if (waiters === undefined) return
    this.waiters = undefined
    // the publishing side is a Connection, whose release() is the other half of throttle()
    for (const w of waiters) (w as unknown as { release(): void }).release()
  }

  /**
   * A persistent session's inbound QoS 2 id: received (its PUBREC waits, through
   * `whenForwarded`, until Redis has it) or released (PUBREL). A node that
   * adopts the session after this one died knows which resent PUBLISHes not to
   * deliver again [MQTT-4.3.3-9].
   */
  inboundQos2(clientId: string, id: number, received: boolean): void {
    const session = this.core.sessions.get(clientId)
    if (session === undefined || session.expiryInterval === 0) return
    this.pending.qos2.push([clientId, id, received])
    this.pending.size++
    this.schedule()
  }

  whenForwarded(then: () => void): void {
    if (this.inflight === undefined && this.pending.size === 0) return then()
    this.pending.waiters.push(then)
    this.schedule()
  }

  private schedule(): void {
    if (this.scheduled || this.inflight !== undefined) return
    this.scheduled = true
    setImmediate(this.flush)
  }

  private readonly flush = (): void => {
    this.scheduled = false
    // without the lease nothing goes out (a stalled node's late publishes); it waits, or is dropped when fenced
    if (this.inflight !== undefined || !this.acting()) return
    const batch = this.pending
    if (batch.size === 0 && batch.waiters.length === 0) return
    this.pending = newBatch()
    this.inflight = batch
    this.send(batch)
  }

  /** One pipeline of XADDs; on failure (Redis away) the same batch again until it is stored: acks wait. */
  private send(batch: Batch): void {
    const done = () => {
      this.inflight = undefined
      for (let i = 0; i < batch.waiters.length; i++) batch.waiters[i]()
      if (this.pending.size > 0 || this.pending.waiters.length > 0) this.schedule()
      this.releaseWaiters()
    }
    if (batch.size === 0) return done()
    const multi = this.main.multi()
    for (const [clientId, id, received] of batch.qos2) {
      if (received) multi.sAdd(this.keys.qos2(clientId), String(id))
      else multi.sRem(this.keys.qos2(clientId), String(id))
    }
    for (const [clientId, key, value] of batch.out.values()) {
      if (value === undefined) multi.hDel(this.keys.out(clientId), key)
      else multi.hSet(this.keys.out(clientId), key, value)
    }
    // keyed now: a message's held entry is made during its routing, which may come after its PUBLISH was staged
    for (const [clientId, message, messageId, value] of batch.late) multi.hSet(this.keys.out(clientId), this.recordKey(message, messageId), value)
    for (const [node, list] of batch.byNode) {
      for (let i = 0; i < list.length; i += ENTRY_MESSAGES) {
        multi.xAdd(this.keys.inbox(node), "*", { b: JSON.stringify(i === 0 && list.length <= ENTRY_MESSAGES ? list : list.slice(i, i + ENTRY_MESSAGES)) })
      }
    }
    // after every message this node sent those nodes so far (one connection: Redis appends in this order)
    for (const [node, id] of batch.barriers) multi.xAdd(this.keys.inbox(node), "*", { f: id, n: this.nodeId })
    // held entries last: their stream ids are the last replies
    const held = batch.held
    const own = this.keys.inbox(this.nodeId)
    for (const chunk of held) multi.xAdd(own, "*", { b: JSON.stringify(chunk.list), o: chunk.ref.origin, h: "1" })
    multi.execAsPipeline().then((replies) => {
      if (held.length > 0) {
        const first = replies.length - held.length
        for (let i = 0; i < held.length; i++) {
          const ref = held[i].ref
          ref.id = String(replies[first + i])
          this.heldRefs.delete(ref.origin)
        }
      }
      done()
    }, (error) => {
      if (this.closing) return
      this.warn("forwarding to other nodes failed, retrying", error)
      setTimeout(() => this.send(batch), 200)
    })
  }

  /** A QoS 2 message's cluster-wide id (field `i` of its copies), made when it is first needed. */
  private messageId(message: Message): string {
    let id = this.idOf.get(message)
    if (id === undefined) {
      id = this.idPrefix + (this.idSeq++).toString(36)
      this.idOf.set(message, id)
    }
    return id
  }
  private readonly idOf = new WeakMap<Message, string>()
  private readonly idPrefix = `${randomUUID().slice(0, 8)}.`
  private idSeq = 0

  /**
   * For a while after a session came here from a dead node, a QoS 2 message
   * can reach it twice: through the dead node's inbox (moved or copied here)
   * and directly (nodes that route to both the dead node and this one until
   * they see the death, this node included). Its deliveries go through a
   * filter that lets each message id through once, until the dead node's
   * inbox has been replayed for the last time (`unwatch`). The filter is the
   * session's own `deliver`, shadowed on the instance: nothing changes for
   * other sessions.
   */
  private watch(session: Session): void {
    if (!this.watching.has(session)) this.watching.set(session, new Set())
    this.shadow(session)
  }

  private unwatch(session: Session): void {
    this.watching.delete(session)
    if (!this.sharedMembers.has(session)) Reflect.deleteProperty(session, "deliver")
  }

  /**
   * The session's own `deliver`, shadowed on the instance (nothing changes for
   * other sessions): QoS 2 ids let through once while it is watched (above),
   * and, for a persistent member of a shared group, a QoS 1 / 2 message the
   * group picked it for here is held (`hold`, field `m`: replayed to it only).
   */
  private shadow(session: Session): void {
    if (Object.prototype.hasOwnProperty.call(session, "deliver")) return
    const deliver = Session.prototype.deliver
    session.deliver = (message, qos, retain, subscriptionIds, source, shared) => {
      if (qos === 2) {
        const seen = this.watching.get(session)
        if (seen !== undefined) {
          const id = this.messageId(message)
          if (seen.has(id)) return
          seen.add(id)
        }
      }
      if (shared !== undefined && qos !== 0 && !this.inbound && session.expiryInterval !== 0 && this.sharedMembers.has(session)) {
        this.hold(message, session.clientId, shared, source)
      }
      deliver.call(session, message, qos, retain, subscriptionIds, source, shared)
    }
  }
  /** sessions watched after a takeover from a dead node: the QoS 2 ids they got meanwhile */
  private readonly watching = new WeakMap<Session, Set<string>>()
  /** persistent sessions that are members of a shared group here */
  private readonly sharedMembers = new WeakSet<Session>()

  // ------------------------------------------------------------ outbound QoS 2 records

  /*
   * Exactly once for a persistent session's outbound QoS 2 when its node dies
   * (docs/cluster.md): the state of each delivery is in `P:out:<client id>`
   * before the client can act on it — "p" before the PUBLISH bytes leave, "r"
   * before the PUBREL — and "c" (or nothing) after PUBCOMP. The PUBLISH / PUBREL
   * waits for the turn's pipeline (`whenForwarded`), never a round trip of its own.
   */

  /** The identity of `message` in outbound records: `<origin>:<index>` when it came from an inbox, else `#<packet id>`. */
  private recordKey(message: Message, messageId: number): string {
    const known = this.recordKeys.get(message)
    if (known !== undefined) return known
    const ref = this.entryOf.get(message)
    const index = ref === undefined ? undefined : this.indexOf.get(message)
    return index === undefined ? `#${messageId}` : `${ref!.origin}:${index}`
  }

  private putRecord(clientId: string, key: string, value: string | undefined): void {
    const out = this.pending.out
    const k = `${clientId}\u0000${key}`
    if (!out.has(k)) this.pending.size++
    out.set(k, [clientId, key, value])
    this.schedule()
  }

  outboundPublish(session: Session, out: Outgoing, messageId: number, dup: boolean, send: () => void): void {
    if (!dup) {
      const m = out.message
      const record: OutRecord = {
        i: messageId,
        s: "p",
        m: this.recordFields(m),
        ...(out.retain ? { r: 1 as const } : {}),
        ...(out.subscriptionIds !== undefined ? { d: out.subscriptionIds } : {})
      }
      this.pending.late.push([session.clientId, m, messageId, JSON.stringify(record)])
      this.pending.size++
      this.schedule()
    }
    // a resend's record is in Redis already, unless it is still on its way: wait for that too
    this.whenForwarded(send)
  }

  outboundPubrel(session: Session, messageId: number, send: () => void): void {
    const entry = session.flow.inflight.get(messageId)
    if (entry !== undefined && entry.qos === 2) {
      const record: OutRecord = { i: messageId, s: "r" }
      this.putRecord(session.clientId, this.recordKey(entry.message, messageId), JSON.stringify(record))
    }
    this.whenForwarded(send)
  }

  outboundDone(session: Session, messageId: number): void {
    const entry = session.flow.inflight.get(messageId)
    if (entry === undefined || entry.qos !== 2 || entry.state === "await-puback") return
    const cid = this.idOf.get(entry.message)
    if (cid !== undefined) {
      let done = this.completedIds.get(session)
      if (done === undefined) this.completedIds.set(session, (done = []))
      done.push(cid)
      if (done.length > COMPLETED_KEPT) done.splice(0, done.length - COMPLETED_KEPT)
    }
    const key = this.recordKey(entry.message, messageId)
    const ref = key.startsWith("#") ? undefined : this.entryOf.get(entry.message)
    if (ref === undefined) return this.putRecord(session.clientId, key, undefined)
    // its entry is in this node's inbox: "completed" lives as long as the entry (a replay skips it), deleted with it
    const record: OutRecord = { i: messageId, s: "c" }
    this.putRecord(session.clientId, key, JSON.stringify(record))
    const list = this.completedOf.get(ref.id)
    if (list === undefined) this.completedOf.set(ref.id, [[session.clientId, key]])
    else list.push([session.clientId, key])
  }

  /** per session, the cluster-wide ids of its last completed QoS 2 deliveries: handed over with it, so that a takeover's buffer does not repeat them */
  private readonly completedIds = new WeakMap<Session, Array<string>>()

  /** a message's fields for records: one encoding per message, whatever the number of sessions it goes to */
  private recordFields(message: Message): MessageFields {
    if (this.lastRecorded !== message) {
      this.lastRecorded = message
      this.lastRecordedFields = messageFields(message, undefined)
    }
    return this.lastRecordedFields!
  }
  private lastRecorded: Message | undefined = undefined
  private lastRecordedFields: MessageFields | undefined = undefined

  /**
   * XACK + XDEL of inbox entries no session holds any more, with the
   * "completed" records of their messages in the same MULTI: a node that
   * replays an entry finds those records as long as the entry exists.
   */
  acknowledge(inbox: string, ids: ReadonlyArray<string>): Promise<unknown> {
    const multi = this.main.multi().xAck(inbox, "midge", [...ids]).xDel(inbox, [...ids])
    if (this.completedOf.size > 0) {
      const pendingOut = this.pending.out
      for (const id of ids) {
        const done = this.completedOf.get(id)
        if (done === undefined) continue
        this.completedOf.delete(id)
        for (const [clientId, key] of done) {
          multi.hDel(this.keys.out(clientId), key)
          // not yet sent: it would come after the delete
          if (pendingOut.delete(`${clientId}\u0000${key}`)) this.pending.size--
        }
      }
    }
    return multi.exec()
  }

  // ------------------------------------------------------------ inbound

  /** Route what another node sent: local subscribers only; `shared`: one local member of that group. */
  routeFromPeer(message: Message, shared: { readonly group: string; readonly filter: string } | undefined): void {
    this.received++
    this.inbound = true
    try {
      if (shared === undefined) this.core.router.publish(message, undefined, true)
      else this.deliverShared(shared, message)
    } finally {
      this.inbound = false
    }
  }

  private deliverShared(shared: { readonly group: string; readonly filter: string }, message: Message): void {
    const router = this.core.router
    const group = router.sharedGroup(shared.group, shared.filter)
    if (group === undefined) return
    const members = group.members
    const n = members.length
    const start = this.sharedNext.get(group) ?? 0
    let chosen: (typeof members)[number] | undefined
    let fallback: (typeof members)[number] | undefined
    for (let i = 0; i < n; i++) {
      const m = members[(start + i) % n]
      if (m.subscriber instanceof RemoteNode) continue
      if (m.subscriber.online()) {
        chosen = m
        this.sharedNext.set(group, (start + i + 1) % n)
        break
      }
      fallback ??= m
    }
    chosen ??= fallback
    if (chosen === undefined) {
      this.core.log.debug(`Cluster: no local member of $share/${shared.group}/${shared.filter} left for '${message.topic}'.`)
      return
    }
    const o = chosen.options
    const qos = (router.upgradeOutgoingQos || o.qos < message.qos ? o.qos : message.qos) as QoS
    chosen.subscriber.deliver(message, qos, o.retainAsPublished ? message.retain : false, o.subscriptionId !== undefined ? [o.subscriptionId] : undefined, undefined, group)
  }

  /**
   * Route a batch read from the inbox; its entries wait in `unacked` (see
   * `ackable`). Entries already routed (a re-read) are skipped. An entry moved
   * or copied here from a dead node's inbox (`c`: the sessions it is for) goes
   * to those sessions only, without what they had already received (`skipOf`).
   */
  routeEntries(entries: ReadonlyArray<{ readonly id: string; readonly message: Record<string, string> | null }>): void {
    for (const e of entries) {
      if (!idAfter(e.id, this.lastRouted)) continue
      this.lastRouted = e.id
      this.unacked.push(e.id)
      const fields = e.message
      if (fields === null) continue
      // a node's answer to a barrier of this node's (`barrier`)
      if (fields.f !== undefined) {
        const barrier = this.barriers.get(fields.f)
        if (barrier !== undefined && barrier.waiting.delete(fields.n ?? "") && barrier.waiting.size === 0) barrier.done()
        continue
      }
      // a held entry of this run: its messages are in its sessions already; the reader can see it before
      // the XADD's reply is in, its id is known from here. One of a previous run (a restart after a crash)
      // goes to the persistent sessions here (restored from the file store), as what other nodes sent does.
      const previousHeld = fields.h === "1" && fields.c === undefined && !(fields.o ?? "").startsWith(this.heldPrefix)
      if (fields.h === "1" && fields.c === undefined && !previousHeld) {
        const ref = this.heldRefs.get(fields.o!)
        if (ref !== undefined) {
          ref.id = e.id
          this.heldRefs.delete(fields.o!)
        }
        continue
      }
      let list: Array<MessageFields>
      try {
        list = JSON.parse(fields.b ?? "[]")
      } catch {
        continue
      }
      if (!Array.isArray(list)) continue
      const ref: EntryRef = { id: e.id, origin: fields.o ?? `${this.nodeId}:${e.id}` }
      // after a restart from the file store: what the inbox held at start goes to the restored sessions as an adopter's replay does
      const replay = fields.c === undefined && this.replayUpTo !== undefined && !idAfter(e.id, this.replayUpTo)
      if (replay) this.linkEntry(ref)
      const only = previousHeld || replay ? this.persistentSessions() : fields.c === undefined ? undefined : this.targetsOf(fields.c, ref)
      for (let i = 0; i < list.length; i++) {
        const message = messageOfFields(list[i])
        if (message === undefined) continue
        this.entryOf.set(message, ref)
        // a held message's copies share the record key of its first copy (`k`)
        const k = list[i].k === undefined ? i : Number(list[i].k)
        if (message.qos === 2) {
          this.indexOf.set(message, k)
          const id = list[i].i
          if (id !== undefined) this.idOf.set(message, id)
        }
        // a batch whose XADD reply was lost (Redis connection cut) is sent again: a QoS 2 message comes twice
        if (only === undefined && message.qos === 2 && list[i].i !== undefined && this.seenQos2(`${list[i].i}\u0000${list[i].s ?? ""}`)) continue
        try {
          if (only === undefined) this.routeFromPeer(message, sharedOfFields(list[i]))
          else this.routeToAdopted(message, sharedOfFields(list[i]), only, fields.s === "1" || replay, ref.origin, k, list[i].m)
        } catch (error) {
          this.warn(`routing a message from another node`, error)
        }
      }
    }
  }

  /**
   * Whether this node routed a QoS 2 message with this cluster-wide id (and
   * shared group) from another node lately; remembers it if not. A node whose
   * XADD reply was lost sends the same batch again (at least once), and the
   * message must not reach its subscribers twice [MQTT-4.3.3-9]. The last
   * QOS2_REMEMBERED ids are kept: a retry follows its first attempt within
   * the Redis reconnection, long before that many other QoS 2 messages.
   */
  private seenQos2(key: string): boolean {
    if (this.routedQos2.has(key)) return true
    this.routedQos2.add(key)
    const ring = this.routedQos2Ring
    const old = ring[this.routedQos2At]
    if (old !== undefined) this.routedQos2.delete(old)
    ring[this.routedQos2At] = key
    this.routedQos2At = (this.routedQos2At + 1) % QOS2_REMEMBERED
    return false
  }
  private readonly routedQos2 = new Set<string>()
  private readonly routedQos2Ring: Array<string | undefined> = []
  private routedQos2At = 0

  /** The sessions a moved entry is for (those still here), and what adopted records say of it: linked to the entry now. */
  private targetsOf(text: string, ref: EntryRef): Map<string, Session> {
    const only = new Map<string, Session>()
    try {
      const ids = JSON.parse(text) as Array<string>
      for (const id of ids) {
        const session = this.core.sessions.get(id)
        if (session !== undefined) only.set(id, session)
      }
    } catch {
      // no session
    }
    this.linkEntry(ref)
    return only
  }

  /** What restored records say of an entry, linked to it as it is read: their in-flight messages hold it, their "completed" records go with it. */
  private linkEntry(ref: EntryRef): void {
    const link = this.links.get(ref.origin)
    if (link === undefined) return
    this.links.delete(ref.origin)
    for (const m of link.messages) this.entryOf.set(m, ref)
    if (link.completed.length > 0) {
      const list = this.completedOf.get(ref.id)
      if (list === undefined) this.completedOf.set(ref.id, [...link.completed])
      else list.push(...link.completed)
    }
  }

  /**
   * The routed inbox entries that can be acknowledged (XACK + XDEL) now: those
   * no persistent session here still holds a message of, queued or in flight
   * (a QoS 1 / 2 delivery leaves the in-flight window only with its PUBACK /
   * PUBCOMP). An entry left pending when this node dies is replayed by the node
   * that adopts its sessions (`adoptDead`): nothing a session here had not
   * acknowledged is lost. A session that ends with its connection dies with
   * this node anyway and holds nothing back.
   */
  ackable(): Array<string> {
    if (this.unacked.length === 0) return []
    const held = new Set<string>()
    const entryOf = this.entryOf
    for (const session of this.core.sessions.values()) {
      if (session.expiryInterval === 0) continue
      const flow = session.flow
      if (flow.inflight.size > 0) {
        for (const e of flow.inflight.values()) {
          const ref = entryOf.get(e.message)
          if (ref !== undefined) held.add(ref.id)
        }
      }
      const queue = flow.queue
      for (let i = 0; i < queue.length; i++) {
        const q = queue[i]
        if (q === undefined) continue
        const ref = entryOf.get(q.message)
        if (ref !== undefined) held.add(ref.id)
      }
    }
    if (held.size === 0) {
      const all = this.unacked
      this.unacked = []
      return all
    }
    const ready: Array<string> = []
    const kept: Array<string> = []
    for (const id of this.unacked) (held.has(id) ? kept : ready).push(id)
    this.unacked = kept
    return ready
  }

  // ------------------------------------------------------------ routes

  readonly routeObserver = {
    added: (subscriber: Subscriber, filter: string, options: SubscriptionOptions): void => {
      if (subscriber instanceof RemoteNode || subscriber instanceof HeldNode) return
      if (subscriber instanceof Session && subscriber.expiryInterval !== 0) {
        this.holdFor(subscriber.clientId, filter)
        if (filter.startsWith("$share/")) {
          this.sharedMembers.add(subscriber)
          this.shadow(subscriber)
        }
      }
      // without the lease nothing is written (the routes are written again when it is back)
      const owner = this.state === "live"
      // a persistent session's subscriptions are kept in Redis, for a node that adopts it if this one dies
      if (owner && subscriber instanceof Session && subscriber.expiryInterval !== 0) this.storeSubscription(subscriber, filter, options)
      const n = this.localFilters.get(filter) ?? 0
      this.localFilters.set(filter, n + 1)
      if (n === 0 && owner) this.announce("+", filter)
    },
    removed: (subscriber: Subscriber, filter: string): void => {
      if (subscriber instanceof RemoteNode || subscriber instanceof HeldNode) return
      if (subscriber instanceof Session) this.unholdFor(subscriber.clientId, filter)
      const owner = this.state === "live"
      // a session that moves to another node keeps its stored subscriptions: they are the new owner's now
      if (owner && !this.detaching && subscriber instanceof Session) {
        this.main.hDel(this.keys.subs(subscriber.clientId), filter).catch((error) => this.warn("forgetting a subscription", error))
      }
      const n = this.localFilters.get(filter) ?? 0
      if (n <= 1) {
        this.localFilters.delete(filter)
        if (n === 1 && owner) this.announce("-", filter)
      } else this.localFilters.set(filter, n - 1)
    }
  }

  /** `HeldNode`'s filters follow the persistent sessions' subscriptions (shared ones excepted: a group member is picked per message) */
  private holdFor(clientId: string, filter: string): void {
    if (filter.startsWith("$share/")) return
    const held = this.heldNode
    const ids = held.filters.get(filter)
    if (ids !== undefined) return void ids.add(clientId)
    held.filters.set(filter, new Set([clientId]))
    this.core.router.subscribe(held, filter, PEER_OPTIONS)
  }

  private unholdFor(clientId: string, filter: string): void {
    const held = this.heldNode
    const ids = held.filters.get(filter)
    if (ids === undefined || !ids.delete(clientId) || ids.size > 0) return
    held.filters.delete(filter)
    this.core.router.unsubscribe(held, filter)
  }

  private storeSubscription(session: Session, filter: string, options: SubscriptionOptions): void {
    this.main
      .hSet(this.keys.subs(session.clientId), { "": JSON.stringify({ expiryInterval: session.expiryInterval }), [filter]: JSON.stringify(options) })
      .catch((error) => this.warn("storing a subscription", error))
  }

  private announce(op: "+" | "-", filter: string): void {
    const multi = this.main.multi()
    if (op === "+") multi.sAdd(this.keys.routesOf(this.nodeId), filter)
    else multi.sRem(this.keys.routesOf(this.nodeId), filter)
    multi.publish(this.keys.routes, JSON.stringify({ n: this.nodeId, op, f: filter }))
    // a failure is repaired by the resync after Redis comes back; MULTIs on one connection complete in order
    this.announced = multi.exec().catch((error) => this.warn("announcing a route", error))
    this.routeEpoch++
  }

  /**
   * SUBACK waits here: once every live node has applied the route changes
   * announced so far (a barrier, see `barrier`), a message published on any
   * node after the SUBACK reaches the subscriber. Callers of one round share a
   * barrier; none runs when nothing changed since the last one (a filter this
   * node routes already). Bounded by the barrier's wait; a Redis error lets
   * the SUBACK go (the routes are written again when Redis is back).
   */
  whenRouted(then: () => void): void {
    if (this.routeEpoch === this.routedEpoch && this.routedWaiters.length === 0) return then()
    this.routedWaiters.push(then)
    if (!this.routing) void this.routeBarriers()
  }

  private async routeBarriers(): Promise<void> {
    this.routing = true
    try {
      while (this.routedWaiters.length > 0) {
        const epoch = this.routeEpoch
        const waiters = this.routedWaiters.splice(0)
        if (epoch !== this.routedEpoch) {
          try {
            await this.announced
            await this.barrier()
          } catch (error) {
            this.warn("waiting for the other nodes to route a subscription", error)
          }
          if (epoch > this.routedEpoch) this.routedEpoch = epoch
        }
        for (const w of waiters) w()
      }
    } finally {
      this.routing = false
    }
  }
  /** route changes announced, and those every node had applied at the last barrier */
  private routeEpoch = 0
  private routedEpoch = 0
  private routedWaiters: Array<() => void> = []
  private routing = false

  /** Settles once every route change announced so far is stored in Redis (and notified). */
  announced: Promise<unknown> = Promise.resolve()
  /** the routes channel's changes applied here, all nodes together (RouteView) */
  private routeChanges = 0

  private remote(node: string): RemoteNode {
    let r = this.remotes.get(node)
    if (r === undefined) {
      r = new RemoteNode(node, this)
      this.remotes.set(node, r)
      this.core.log.notice(`Cluster: node ${node} joined.`)
    }
    return r
  }

  onRouteChange(text: string): void {
    let change: { n: string; op: string; f: string }
    try {
      change = JSON.parse(text)
    } catch {
      return
    }
    if (change.n === this.nodeId || typeof change.f !== "string") return
    // a node lets a session go (`barrier`): the route changes before this one are applied here, what was sent to it before them goes first
    if (change.op === "barrier") {
      if (!this.acting()) return
      this.pending.barriers.push([change.n, change.f])
      this.pending.size++
      this.schedule()
      return
    }
    if (change.op !== "+" && change.op !== "-") return
    const r = this.remote(change.n)
    r.changedAt = Date.now()
    if (r.routes.change(change.op, change.f, ++this.routeChanges)) {
      if (change.op === "+") this.core.router.subscribe(r, change.f, PEER_OPTIONS)
      else this.core.router.unsubscribe(r, change.f)
    }
  }

  /** `filters`: the node's route set as read from Redis by a request sent when `routeChanges` was `since` */
  private syncRemote(node: string, filters: ReadonlyArray<string>, since: number): void {
    const r = this.remote(node)
    const { added, removed } = r.routes.sync(filters, since)
    for (const f of removed) this.core.router.unsubscribe(r, f)
    for (const f of added) this.core.router.subscribe(r, f, PEER_OPTIONS)
  }

  private dropRemote(node: string): void {
    const r = this.remotes.get(node)
    if (r === undefined) return
    for (const f of r.routes.filters) this.core.router.unsubscribe(r, f)
    r.routes.clear()
    this.remotes.delete(node)
    this.core.log.notice(`Cluster: node ${node} left.`)
  }

  /** After (re)connecting: our routes, heartbeat, inbox group and retained messages are in Redis again. */
  async resync(): Promise<void> {
    const k = this.keys
    const multi = this.main.multi()
    multi.set(k.alive(this.nodeId), this.epoch, { PX: this.heartbeatMs * 3 })
    multi.sAdd(k.nodes, this.nodeId)
    multi.del(k.routesOf(this.nodeId))
    if (this.localFilters.size > 0) multi.sAdd(k.routesOf(this.nodeId), [...this.localFilters.keys()])
    await multi.exec()
    try {
      await this.main.xGroupCreate(k.inbox(this.nodeId), "midge", "0", { MKSTREAM: true })
    } catch (error) {
      if (!String(error).includes("BUSYGROUP")) throw error
    }
    // a Redis that lost its data gets the retained messages back from the nodes' replicas
    const retained = [...this.core.router.retained.values()].filter((m) => !m.topic.startsWith("$SYS/"))
    if (retained.length > 0 && (await this.main.hLen(k.retained)) === 0) {
      const m = this.main.multi()
      for (const r of retained) m.hSetNX(k.retained, r.topic, toJson(messageFields(r, undefined)))
      await m.exec()
    }
    await this.loadRetained()
    this.needsResync = false
  }

  /**
   * Heartbeat: the lease first (refreshed only while this incarnation is the
   * node's current one), then the other nodes' routes as Redis has them; dead
   * nodes are dropped, one live node adopting each.
   */
  async heartbeat(): Promise<void> {
    if (this.state === "fenced") return this.rejoin()
    // this node was stalled itself (a long gap between heartbeats): the others may have been too, and get one TTL to beat again
    const beganAt = Date.now()
    if (beganAt - this.lastBeat > this.heartbeatMs * 2) this.graceUntil = beganAt + this.heartbeatMs * 3
    this.lastBeat = beganAt
    if (this.state === "live" && Date.now() > this.leaseUntil) this.suspend(`no heartbeat went through for ${Date.now() - this.refreshedAt} ms`)
    if (this.state === "suspended" && !(await this.settleLapse())) return
    const k = this.keys
    const ttl = this.heartbeatMs * 3
    const sentAt = Date.now()
    const r = Number(
      await this.main.eval(REFRESH, {
        keys: [k.gen(this.nodeId), k.alive(this.nodeId), k.nodes],
        arguments: [String(this.generation), this.epoch, String(ttl), this.nodeId]
      })
    )
    if (this.state !== "live") return
    if (r < 0) return this.fence("another node adopted its sessions (its incarnation number moved on)")
    // the key lives at least until the send time + TTL (a reply that waited in the offline queue counts from the send)
    this.leaseUntil = sentAt + ttl
    this.refreshedAt = sentAt
    if (!this.acting()) return
    // removed from the nodes by another node that took it for dead, or Redis lost its data: write it all again
    if (r === 3) this.needsResync = true
    else if (r === 2 && this.joined) {
      this.suspend("its alive key had expired")
      if (!(await this.settleLapse())) return
    }
    this.joined = true
    if (this.needsResync) await this.resync()
    const nodes = (await this.main.sMembers(k.nodes)).filter((n) => n !== this.nodeId)
    const alive = nodes.length === 0 ? [] : await this.main.mGet(nodes.map((n) => k.alive(n)))
    const live = new Set<string>()
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i]
      // one live node adopts a dead node's persistent sessions and what is left in its inbox;
      // the node's incarnation number moves on, so that the dead one, if it was only stalled, finds out
      // (not while this node's own lease has lapsed meanwhile, nor when it gave the adoption up for that reason:
      // it keeps the dead node's routes until the next try)
      if (alive[i] === null && Date.now() > this.graceUntil && (await this.takeDead(node))) continue
      live.add(node)
      if (alive[i] !== null) {
        // the channel's changes from now on may be newer than what the read returns
        const since = this.routeChanges
        this.syncRemote(node, await this.main.sMembers(k.routesOf(node)), since)
      }
    }
    // a node whose routes the channel announced lately is kept: a (re)starting node announces its
    // routes before its first heartbeat makes it a member, and a read of the members from before
    // then must not undo them (a message published here meanwhile would find no route to it)
    for (const [node, r] of [...this.remotes]) if (!live.has(node) && r.changedAt <= beganAt - 2 * this.heartbeatMs) this.dropRemote(node)
  }

  /**
   * Adopting writes as the owner of another node's sessions, so it needs this node's own lease, with a
   * heartbeat of it to spare for the adoption's round trips. A node stalled with the others (one process,
   * one VM host) whose lease lapsed while it found them dead used to adopt anyway: it was then fenced by
   * the node that had adopted it meanwhile and dropped what it had just adopted, leaving a session on no
   * node (test/cluster/lease.test.ts). Such a node now settles its own lapse first.
   */
  private mayAdopt(): boolean {
    return this.acting() && Date.now() + this.heartbeatMs <= this.leaseUntil
  }

  /**
   * One live node adopts a dead (or cleanly stopped) node: the first to take its adoption key. False when
   * this node did not adopt it now: it may not (`mayAdopt`), or it gave the adoption up (its lease lapsed
   * during the reads). Either way the dead node's routes stay here until the next try, so that what is
   * published meanwhile still goes to its inbox, which the adoption then moves to the sessions.
   */
  private async takeDead(node: string): Promise<boolean> {
    if (!this.mayAdopt()) return false
    const k = this.keys
    const adopter = (await this.main.set(k.adopt(node), this.nodeId, { NX: true, PX: 60_000 })) === "OK"
    if (adopter) {
      await this.main.incr(k.gen(node))
      if (!(await this.adoptDead(node))) return false
    } else this.dropRemote(node)
    await this.main.multi().sRem(k.nodes, node).del(k.routesOf(node)).exec()
    return true
  }

  /**
   * A clean stop (SIGTERM) of a node with persistent sessions while another
   * node is alive: its sessions, and what its inbox holds for them, go to a
   * live node at once, as after a death (`adoptDead`) but without waiting for
   * the lease to expire. The node stops being alive (its routes and alive key
   * go; it stays a member until the adopter removes it), asks a live node to
   * adopt it, and waits (up to 3 s) until one has taken its adoption key (a
   * restart under the same id waits for that adopter to be done, and drops the
   * sessions its file store has: their owner is the adopter). Its inbox is left
   * as it is: nothing acknowledged here, the adopter replays it. False when it
   * did not hand over (no live node, no persistent session, no lease).
   */
  async handOver(): Promise<boolean> {
    if (!this.acting()) return false
    const peers = [...this.remotes.keys()]
    let persistent = 0
    for (const session of this.core.sessions.values()) if (session.expiryInterval !== 0) persistent++
    if (peers.length === 0 || persistent === 0) return false
    // what was acknowledged to publishers is in Redis already; the rest of this turn's batch goes too
    await new Promise<void>((r) => this.whenForwarded(r))
    const k = this.keys
    const me = this.nodeId
    this.state = "suspended"
    await this.main.multi().del(k.alive(me)).del(k.routesOf(me)).exec()
    const peer = peers[Math.floor(Math.random() * peers.length)]
    await this.main.publish(k.ctl(peer), JSON.stringify({ op: "adopt", n: me, from: me }))
    for (let waited = 0; waited < 3000; waited += 50) {
      if ((await this.main.get(k.adopt(me))) !== null) break
      await new Promise((r) => setTimeout(r, 50))
    }
    this.core.log.notice(`Cluster: node ${me} stopping: its ${persistent} persistent sessions are handed to the live nodes (asked ${peer}).`)
    return true
  }

  /**
   * Sessions restored from this node's file store (persistence) are its own
   * only if Redis still says so: one that another node took while this one was
   * stopped (its client came back there, or it adopted this node) is dropped
   * here; one Redis forgot (expired, or Redis lost its data) is claimed again.
   */
  async restoredSessions(): Promise<void> {
    const sessions = [...this.core.sessions.values()]
    if (sessions.length === 0) return
    const k = this.keys
    const owners = await this.main.mGet(sessions.map((s) => k.owner(s.clientId)))
    const lost: Array<Session> = []
    let dropped = 0
    for (let i = 0; i < sessions.length; i++) {
      const session = sessions[i]
      const owner = owners[i]
      if (owner !== null && owner !== this.nodeId) {
        this.detach(session)
        dropped++
      } else if (owner === null) lost.push(session)
    }
    await this.reclaim(lost)
    await this.reconcileRestored(sessions.filter((s) => this.core.sessions.get(s.clientId) === s && s.expiryInterval !== 0))
    if (dropped > 0) this.core.log.notice(`Cluster: ${dropped} stored sessions moved to other nodes while this one was stopped: dropped here.`)
  }

  /**
   * After a crash (kill -9) and a restart from the file store, the inbox still
   * holds the entries of the messages the restored sessions held (an entry is
   * acknowledged only once no session here holds its messages), and the reader
   * routes them again: without this, a QoS 2 message would be both in the
   * restored queue / window and delivered again. Here, before the reader
   * starts, each restored session's QoS 2 deliveries that an inbox entry will
   * route to it again (matched by topic, publisher, receive time and payload)
   * are taken out of the store's copy, and its `P:out` records become its
   * in-flight window and its skip list, exactly as for an adopted session: the
   * entries' replay (`replayUpTo`) then delivers each once. What no entry
   * holds (a retained message sent at SUBSCRIBE) stays as the store had it.
   */
  private async reconcileRestored(sessions: ReadonlyArray<Session>): Promise<void> {
    if (sessions.length === 0) return
    const k = this.keys
    const records = await Promise.all(sessions.map((s) => this.main.hGetAll(k.out(s.clientId))))
    const inbox = k.inbox(this.nodeId)
    type Hit = { readonly fields: MessageFields; readonly c: ReadonlyArray<string> | undefined }
    const prints = new Map<string, Array<Hit>>()
    const origins = new Set<string>()
    let last = ""
    for (;;) {
      const entries = (await this.main.xRange(inbox, last === "" ? "-" : `(${last}`, "+", { COUNT: 500 })) as Array<{ id: string; message: Record<string, string> }>
      if (entries.length === 0) break
      for (const e of entries) {
        const f = e.message
        origins.add(f.o ?? `${this.nodeId}:${e.id}`)
        let list: unknown
        let c: Array<string> | undefined
        try {
          list = JSON.parse(f.b ?? "[]")
          if (f.c !== undefined) c = JSON.parse(f.c) as Array<string>
        } catch {
          continue
        }
        if (!Array.isArray(list)) continue
        for (const m of list as Array<MessageFields>) {
          const print = `${m.t}\u0000${m.o}\u0000${m.a}\u0000${m.p}`
          const hits = prints.get(print)
          if (hits === undefined) prints.set(print, [{ fields: m, c }])
          else hits.push({ fields: m, c })
        }
      }
      last = entries[entries.length - 1].id
    }
    if (last !== "") this.replayUpTo = last
    const created = new Set<string>()
    for (let j = 0; j < sessions.length; j++) {
      const session = sessions[j]
      const clientId = session.clientId
      // would the replay route this entry's message to the session? (as `routeToAdopted` does)
      const reaches = (hit: Hit): boolean => {
        if (hit.c !== undefined && !hit.c.includes(clientId)) return false
        if (hit.fields.m !== undefined) return hit.fields.m === clientId
        if (hit.fields.s !== undefined) return false
        for (const [filter, o] of session.subscriptions) {
          if (!filter.startsWith("$share/") && matchTopic(filter, hit.fields.t) && !(o.noLocal && hit.fields.o === clientId)) return true
        }
        return false
      }
      const replayed = (out: Outgoing): boolean => {
        if (out.qos !== 2) return false
        const m = out.message
        const hits = prints.get(`${m.topic}\u0000${m.origin}\u0000${m.receivedAt}\u0000${m.payload.toString("base64")}`)
        if (hits === undefined) return false
        const i = hits.findIndex(reaches)
        if (i < 0) return false
        hits.splice(i, 1)
        return true
      }
      const recordIds = new Set<number>()
      for (const text of Object.values(records[j])) {
        try {
          recordIds.add((JSON.parse(text) as OutRecord).i)
        } catch {
          // not a record
        }
      }
      const flow = session.flow
      const window = [...flow.inflight.values()]
      const queue = flow.queue.filter((q) => q !== undefined)
      const keptWindow: Array<InflightEntry> = []
      const requeued: Array<Outgoing> = []
      for (const e of window) {
        if (replayed(e)) continue
        // the records say what the client has under that packet id (QoS 2); a QoS 1 delivery that had it before is sent again
        if (!recordIds.has(e.messageId)) keptWindow.push(e)
        else if (e.qos !== 2) requeued.push({ message: e.message, qos: e.qos, retain: e.retain, subscriptionIds: e.subscriptionIds, shared: e.shared })
      }
      const keptQueue = [...requeued, ...queue.filter((q) => !replayed(q))]
      if (keptWindow.length === window.length && keptQueue.length === queue.length && recordIds.size === 0) continue
      flow.clear()
      flow.restore(keptWindow, keptQueue)
      this.restoreRecords(session, records[j], created)
      // the store follows: what the session holds now
      const observer = flow.observer
      if (observer !== undefined) {
        for (const e of flow.inflight.values()) {
          observer.sent(e.messageId, e)
          if (e.state === "await-pubcomp") observer.pubrec(e.messageId)
        }
        for (const q of flow.queue) if (q !== undefined) observer.queued(q)
      }
    }
    this.forgetUnreplayed(created, origins)
    if (this.replayUpTo !== undefined) this.core.log.info(`Cluster: restored sessions reconciled with the inbox (replayed up to ${this.replayUpTo}).`)
  }
  /** after a restart from the file store: the inbox entries up to this id are replayed to the restored sessions (`reconcileRestored`) */
  private replayUpTo: string | undefined = undefined

  /** Sessions of this node whose keys Redis does not have (expired, or Redis lost its data): owner, node index and stored subscriptions written again, unless another node claimed them meanwhile. */
  private reclaim(sessions: ReadonlyArray<Session>): Promise<unknown> {
    if (sessions.length === 0) return Promise.resolve()
    const k = this.keys
    const multi = this.main.multi()
    for (const session of sessions) {
      multi.set(k.owner(session.clientId), this.nodeId, { NX: true }).sAdd(k.clients(this.nodeId), session.clientId)
      if (session.expiryInterval === 0) continue
      const fields: Record<string, string> = { "": JSON.stringify({ expiryInterval: session.expiryInterval }) }
      for (const [filter, options] of session.subscriptions) fields[filter] = JSON.stringify(options)
      multi.hSet(k.subs(session.clientId), fields)
    }
    return multi.exec().catch((error) => this.warn("writing this node's sessions again", error))
  }

  /**
   * A clean stop with a file store: the inbox entries this node read are in
   * its persistent sessions' stored queues now; acknowledged, so that a restart
   * under the same id does not deliver them a second time.
   */
  async ackForStore(): Promise<void> {
    if (this.core.store === undefined || this.unacked.length === 0 || !this.acting()) return
    const ids = this.unacked
    this.unacked = []
    const inbox = this.keys.inbox(this.nodeId)
    await this.main.multi().xAck(inbox, "midge", ids).xDel(inbox, ids).exec()
  }

  /** Joining: an adopter of this node's previous run finishes with its inbox first; then this run's incarnation number. */
  async join(): Promise<void> {
    const k = this.keys
    for (let waited = 0; waited < 60_000; waited += this.heartbeatMs) {
      const holder = await this.main.get(k.adopt(this.nodeId))
      if (holder === null || holder === this.nodeId) break
      if (waited === 0) this.core.log.notice(`Cluster: node ${holder} is adopting the sessions of this node's previous run; waiting until it is done.`)
      await new Promise((r) => setTimeout(r, this.heartbeatMs))
    }
    this.generation = await this.main.incr(k.gen(this.nodeId))
  }

  /** May this node act as the owner of its sessions now? A lease found lapsed here suspends it at once. */
  acting(): boolean {
    if (this.state !== "live") return false
    if (Date.now() <= this.leaseUntil) return true
    this.suspend(`no heartbeat went through for ${Date.now() - this.refreshedAt} ms`)
    return false
  }

  private suspend(why: string): void {
    if (this.state !== "live") return
    this.state = "suspended"
    this.core.log.warning(
      `Warning: cluster: node ${this.nodeId} lost its lease (${why}): it stops acting as the owner of its sessions until it knows whether another node took them.`
    )
  }

  /**
   * After a lapse: did another node take this node's sessions? This node takes
   * its own adoption key (`SET P:adopt:<node> NX`), so no other node adopts it
   * while it checks, and compares its incarnation number (an adopter moves it
   * on). Not adopted: it goes on as it was. Adopted: fenced. False when fenced.
   */
  private async settleLapse(): Promise<boolean> {
    const k = this.keys
    const me = this.nodeId
    const ttl = this.heartbeatMs * 3
    const t0 = Date.now()
    const held = (await this.main.set(k.adopt(me), me, { NX: true, PX: ttl })) === "OK" || (await this.main.get(k.adopt(me))) === me
    const generation = await this.main.get(k.gen(me))
    if (this.state !== "suspended") return this.state === "live"
    if (!held || (generation !== null && generation !== String(this.generation))) {
      this.fence(held ? "another node adopted its sessions (its incarnation number moved on)" : "another node is adopting its sessions")
      return false
    }
    // nobody adopted it; a client may still have moved its session to another node meanwhile
    const sessions = [...this.core.sessions.values()]
    const owners = sessions.length === 0 ? [] : await this.main.mGet(sessions.map((s) => k.owner(s.clientId)))
    if (this.state !== "suspended") return this.state === "live"
    let gone = 0
    const lost: Array<Session> = []
    for (let i = 0; i < sessions.length; i++) {
      const owner = owners[i]
      if (this.core.sessions.get(sessions[i].clientId) !== sessions[i] || owner === me) continue
      if (owner === null) {
        lost.push(sessions[i])
        continue
      }
      this.core.attached.get(sessions[i].clientId)?.takenOver(false)
      this.detach(sessions[i])
      gone++
    }
    // owners Redis forgot (it lost its data): this node's again
    this.reclaim(lost)
    this.state = "live"
    this.leaseUntil = t0 + ttl
    this.graceUntil = Date.now() + ttl
    this.joined = false
    this.needsResync = true
    this.rereadPending = true
    this.core.log.notice(
      `Cluster: node ${me} has its lease again: no other node adopted it${gone > 0 ? `; ${gone} sessions that moved to other nodes meanwhile were dropped here` : ""}.`
    )
    this.schedule()
    return true
  }

  /**
   * Another node took this node's sessions (it was taken for dead: stalled,
   * or cut from Redis, longer than the TTL): it disconnects its clients (v5
   * DISCONNECT 0x8E Session taken over; their wills are the adopter's to
   * publish) and drops its sessions here without writing anything to Redis,
   * where the adopter's state now is; then it rejoins as a fresh node.
   */
  private fence(why: string): void {
    if (this.state === "fenced") return
    this.state = "fenced"
    const core = this.core
    const clients = [...core.attached.values()]
    const sessions = [...core.sessions.values()]
    core.log.warning(
      `Warning: cluster: node ${this.nodeId}: ${why}. It disconnects its ${clients.length} clients and drops its ${sessions.length} sessions (they are the adopter's now), then rejoins as a fresh node.`
    )
    // nothing of what waits to be forwarded was acknowledged (the acks wait for it): the publishers send it again
    this.pending = newBatch()
    this.unacked = []
    for (const c of clients) c.takenOver(false)
    for (const s of sessions) this.detach(s)
    for (const node of [...this.remotes.keys()]) this.dropRemote(node)
    this.releaseWaiters()
  }

  /** Fenced: join again under the same id, as a new incarnation, once the adopter is done with the old one's inbox. */
  private async rejoin(): Promise<void> {
    const k = this.keys
    const holder = await this.main.get(k.adopt(this.nodeId))
    if (holder !== null && holder !== this.nodeId) return
    const generation = await this.main.incr(k.gen(this.nodeId))
    if (this.state !== "fenced") return
    this.generation = generation
    this.epoch = randomUUID()
    this.lastRouted = "0-0"
    // a fresh node: what it routed before is the adopter's
    this.routedQos2.clear()
    this.routedQos2Ring.length = 0
    this.routedQos2At = 0
    this.unacked = []
    this.state = "live"
    this.leaseUntil = Date.now() + this.heartbeatMs * 3
    this.joined = false
    this.needsResync = true
    this.rereadPending = true
    this.core.log.notice(`Cluster: node ${this.nodeId} rejoined as a fresh node.`)
    await this.heartbeat()
  }

  /**
   * `dead`'s heartbeat expired: its persistent sessions (subscriptions as
   * stored in Redis, inbound QoS 2 ids) become offline sessions here, in the
   * same turn as its routes are dropped, so that what follows queues here; then
   * what is left in its inbox (unread, or read and not acknowledged by the clients)
   * is routed to them.
   */
  private async adoptDead(dead: string): Promise<boolean> {
    const k = this.keys
    const core = this.core
    const clients = await this.main.sMembers(k.clients(dead))
    const adopted: Array<StoredSession> = []
    for (const clientId of clients) {
      if ((await this.main.get(k.owner(clientId))) !== dead || core.sessions.has(clientId)) continue
      const a = await this.storedSession(clientId)
      if (a !== undefined) adopted.push(a)
    }
    // this node's own lease lapsed during those reads: it gives the adoption up before writing any of it, and frees
    // the adoption key for a live node (the dead node's incarnation has moved on: it stays fenced either way)
    if (!this.acting()) {
      if ((await this.main.get(k.adopt(dead))) === this.nodeId) await this.main.del(k.adopt(dead))
      core.log.warning(`Warning: cluster: node ${this.nodeId} gave up adopting dead node ${dead}: its own lease lapsed meanwhile.`)
      return false
    }
    // one synchronous step: the sessions start queuing as the dead node stops receiving
    const sessions: Array<Session> = []
    const created = new Set<string>()
    for (const a of adopted) if (!core.sessions.has(a.clientId)) sessions.push(this.newAdopted(a, created))
    this.dropRemote(dead)
    const multi = this.main.multi()
    for (const s of sessions) multi.set(k.owner(s.clientId), this.nodeId).sAdd(k.clients(this.nodeId), s.clientId)
    multi.del(k.clients(dead))
    await multi.exec()
    if (sessions.length > 0) core.log.notice(`Cluster: adopted ${sessions.length} sessions of dead node ${dead}.`)
    await this.adoptedWills(dead, clients, sessions)
    // the dead node's inbox moves into this node's, for the adopted sessions only (the others had their
    // own copies): kept there until their clients acknowledge it, as if this node had read it, so that
    // this node's death loses nothing either; nodes that have not yet seen the death may still add to
    // it for a few heartbeats
    const targets = new Set(sessions.map((s) => s.clientId))
    const first = await this.transfer(dead, targets, true, "")
    this.forgetUnreplayed(created, first.origins)
    setTimeout(() => {
      this.transfer(dead, targets, true, "")
        // done with the dead node's inbox: the node may come back under its id (a stalled one rejoins now)
        .then(() => this.main.del([k.inbox(dead), k.adopt(dead)]))
        .catch((error) => this.warn(`moving the inbox of dead node ${dead}`, error))
        // what was moved has been read by then
        .finally(() => setTimeout(() => sessions.forEach((s) => this.unwatch(s)), this.heartbeatMs * 4))
    }, this.heartbeatMs * 4)
    return true
  }

  /**
   * Move (`move`: the adopter) or copy (a client back on this node before its
   * node was seen dead) the entries of `dead`'s inbox after stream id `after`
   * into this node's inbox, each marked with the sessions it is for (`c`) and
   * its origin (`o`, kept across moves: the records' message identity). A
   * moved entry is read, routed to those sessions (`routeEntries`) and kept
   * pending until they have it acknowledged, like any other. One MULTI per
   * 200 entries: XADDs, and the XDELs of a move.
   */
  private async transfer(
    dead: string,
    targets: ReadonlySet<string>,
    move: boolean,
    after: string
  ): Promise<{ readonly last: string; readonly origins: ReadonlySet<string> }> {
    const from = this.keys.inbox(dead)
    const to = this.keys.inbox(this.nodeId)
    const origins = new Set<string>()
    let last = after
    for (;;) {
      const entries = (await this.main.xRange(from, last === "" ? "-" : `(${last}`, "+", { COUNT: 200 })) as Array<{ id: string; message: Record<string, string> }>
      if (entries.length === 0) break
      const multi = this.main.multi()
      let ops = 0
      for (const e of entries) {
        const fields = e.message
        if (fields.b === undefined) continue
        let ids = [...targets]
        if (fields.c !== undefined) {
          // an entry the dead node had itself adopted: for those of its sessions adopted here
          let earlier: Array<string> = []
          try {
            earlier = JSON.parse(fields.c)
          } catch {
            // none
          }
          ids = ids.filter((id) => earlier.includes(id))
        }
        if (ids.length === 0) continue
        const origin = fields.o ?? `${dead}:${e.id}`
        const moved: Record<string, string> = { b: fields.b, o: origin, c: JSON.stringify(ids) }
        // shared subscriptions' messages go to a local member of their group: the adopter's task, not a copy's
        if (move && (fields.c === undefined || fields.s === "1")) moved.s = "1"
        multi.xAdd(to, "*", moved)
        ops++
        origins.add(origin)
      }
      if (move) {
        multi.xDel(
          from,
          entries.map((e) => e.id)
        )
        ops++
      }
      if (ops > 0) await multi.exec()
      last = entries[entries.length - 1].id
    }
    return { last, origins }
  }

  /** Records of adopted sessions whose entry is not among those replayed: "completed" ones are deleted, in-flight ones wait for their PUBCOMP. */
  private forgetUnreplayed(created: ReadonlySet<string>, replayed: ReadonlySet<string>): void {
    for (const origin of created) {
      if (replayed.has(origin)) continue
      const link = this.links.get(origin)
      if (link === undefined) continue
      this.links.delete(origin)
      for (const [clientId, key] of link.completed) this.putRecord(clientId, key, undefined)
      for (const [clientId, skip] of this.skipOf) {
        for (const key of skip) if (originOfKey(key) === origin) skip.delete(key)
        if (skip.size === 0) this.skipOf.delete(clientId)
      }
    }
  }

  /**
   * A message of an entry moved or copied here from a dead node, for the
   * adopted sessions `sessions` only, except those whose records say they had
   * it already (`skipOf`: PUBLISH sent, PUBREL sent or completed; the in-flight
   * ones are in their window again with their packet ids). Shared
   * subscriptions' messages go to a local member of their group (`sharedHere`).
   */
  private routeToAdopted(
    message: Message,
    shared: { readonly group: string; readonly filter: string } | undefined,
    sessions: ReadonlyMap<string, Session>,
    sharedHere: boolean,
    origin: string,
    index: number,
    member?: string
  ): void {
    const skipOf = this.skipOf
    const key = message.qos === 2 && skipOf.size > 0 ? `${origin}:${index}` : undefined
    const had = (clientId: string): boolean => {
      if (key === undefined) return false
      const skip = skipOf.get(clientId)
      if (skip === undefined || !skip.delete(key)) return false
      if (skip.size === 0) skipOf.delete(clientId)
      return true
    }
    if (member !== undefined) {
      // held here for that member of a shared group: to it alone, if it is still one of the group
      const session = sessions.get(member)
      if (shared === undefined || session === undefined || this.core.sessions.get(member) !== session || had(member)) return
      const o = session.subscriptions.get(`$share/${shared.group}/${shared.filter}`)
      if (o === undefined) return
      const group = this.core.router.sharedGroup(shared.group, shared.filter)
      const qos = (this.core.router.upgradeOutgoingQos || o.qos < message.qos ? o.qos : message.qos) as QoS
      this.received++
      this.inbound = true
      try {
        session.deliver(message, qos, o.retainAsPublished ? message.retain : false, o.subscriptionId !== undefined ? [o.subscriptionId] : undefined, undefined, group)
      } finally {
        this.inbound = false
      }
      return
    }
    if (shared !== undefined) {
      if (!sharedHere) return
      let received = false
      for (const id of sessions.keys()) if (had(id)) received = true
      if (!received) this.routeFromPeer(message, shared)
      return
    }
    for (const session of sessions.values()) {
      if (this.core.sessions.get(session.clientId) !== session || had(session.clientId)) continue
      let best: SubscriptionOptions | undefined
      for (const [filter, o] of session.subscriptions) {
        if (filter.startsWith("$share/") || !matchTopic(filter, message.topic)) continue
        if (o.noLocal && message.origin === session.clientId) continue
        if (best === undefined || o.qos > best.qos) best = o
      }
      if (best === undefined) continue
      const qos = (best.qos < message.qos ? best.qos : message.qos) as QoS
      this.received++
      session.deliver(message, qos, best.retainAsPublished ? message.retain : false, undefined, undefined)
    }
  }

  // ------------------------------------------------------------ retained

  readonly onRetained = (message: Message): void => {
    if (this.applyingRetained || message.topic.startsWith("$SYS/")) return
    const k = this.keys
    const multi = this.main.multi()
    const fields = message.payload.length === 0 ? undefined : messageFields(message, undefined)
    if (fields === undefined) multi.hDel(k.retained, message.topic)
    else multi.hSet(k.retained, message.topic, toJson(fields))
    multi.publish(k.retained, toJson({ n: this.nodeId, t: message.topic, f: fields }))
    multi.exec().catch((error) => this.warn("storing a retained message", error))
  }

  private setRetained(topic: string, fields: MessageFields | undefined): void {
    const message = fields === undefined ? undefined : messageOfFields(fields)
    this.applyingRetained = true
    try {
      const store = this.core.router.retained
      if (message !== undefined) store.set(message)
      else if (store.get(topic) !== undefined) store.set(new Message(topic, Buffer.alloc(0), 0, true, undefined, "", this.core.now()))
    } finally {
      this.applyingRetained = false
    }
  }

  onRetainedChange(text: string): void {
    try {
      const change = fromJson(text) as { n: string; t: string; f: MessageFields | undefined }
      if (change.n !== this.nodeId && typeof change.t === "string") this.setRetained(change.t, change.f)
    } catch (error) {
      this.warn("a retained change from another node", error)
    }
  }

  async loadRetained(): Promise<void> {
    const all = await this.main.hGetAll(this.keys.retained)
    for (const [topic, text] of Object.entries(all)) this.setRetained(topic, fromJson(text) as MessageFields)
  }

  // ------------------------------------------------------------ sessions

  claim(clientId: string, clean: boolean, done: () => void): void {
    this.claiming.set(clientId, (this.claiming.get(clientId) ?? 0) + 1)
    const settled = () => {
      const n = this.claiming.get(clientId) ?? 1
      if (n <= 1) this.claiming.delete(clientId)
      else this.claiming.set(clientId, n - 1)
      done()
    }
    this.claimAsync(clientId, clean).then(settled, (error) => {
      this.warn(`settling the owner of ${clientId}`, error)
      settled()
    })
  }

  private async claimAsync(clientId: string, clean: boolean): Promise<void> {
    // without the lease a CONNECT waits: the node is settling a lapse, or rejoining
    while (this.state !== "live" && !this.closing) await new Promise((r) => setTimeout(r, 50))
    const k = this.keys
    // a clean start forgets the inbound QoS 2 ids and outbound QoS 2 records of the session before
    if (clean) await this.main.del([k.qos2(clientId), k.out(clientId)])
    const previous = await this.main.set(k.owner(clientId), this.nodeId, { GET: true })
    if (previous === this.nodeId) return
    const index = this.main.multi().sAdd(k.clients(this.nodeId), clientId)
    if (previous !== null) index.sRem(k.clients(previous), clientId)
    await index.exec()
    let buffer: Takeover | undefined = undefined
    try {
      return await this.settleOwner(clientId, clean, previous, (b) => (buffer = b))
    } finally {
      if (buffer !== undefined) this.feed(buffer)
    }
  }

  private async settleOwner(clientId: string, clean: boolean, previous: string | null, buffered: (b: Takeover) => void): Promise<void> {
    const k = this.keys
    let buffer: Takeover | undefined
    // the previous owner is dead (its heartbeat expired, or it does not answer: killed, not yet seen dead)
    let fromDead: string | undefined = undefined
    let request: string | undefined = undefined
    if (previous !== null) {
      if ((await this.main.exists(k.alive(previous))) === 1) {
        this.core.log.info(`Cluster: client ${clientId} moves from node ${previous}.`)
        if (!clean) buffered((buffer = await this.takeoverBuffer(clientId)))
        request = await this.requestRelease(previous, clientId)
        if (request === undefined) fromDead = previous
      } else fromDead = previous
    }
    if (clean) {
      // the session before is over: what Redis kept of it too (the old owner handed it over, or is dead)
      await this.main.del([k.session(clientId), k.subs(clientId)])
      if (fromDead !== undefined) await this.orphanWill(clientId, true)
      return
    }
    const text = await this.main.get(k.session(clientId))
    // only the answer to this claim's request: a late one (the old owner was slow) is stale
    const handed = text === null ? undefined : (fromJson(text) as HandedSession & { readonly rid?: string })
    if (handed !== undefined && request !== undefined && handed.rid === request) {
      this.adopt(handed)
      const session = this.core.sessions.get(clientId)
      if (session !== undefined) this.watchMoved(session, handed)
      if (buffer !== undefined) {
        for (const id of handed.done ?? []) buffer.done.add(id)
        // in the same turn as the session's subscriptions: nothing reaches it twice by the two ways
        this.feed(buffer)
      }
      await this.main.del(k.session(clientId))
    } else if (fromDead !== undefined && !this.core.sessions.has(clientId)) await this.takeFromDead(fromDead, clientId)
  }

  /**
   * QoS 2 once after a move from a live node: a message the publisher's node
   * sent to both nodes can be in the handed session (the old owner routed its
   * copy) and still unread in this node's inbox. The session lets each QoS 2
   * id through once — those it was handed (in flight, queued, completed
   * lately) count as seen — until this node has routed every entry its inbox
   * holds now: the copies that came here were added before the old owner
   * handed the session over (it routed their twins first).
   */
  private watchMoved(session: Session, handed: HandedSession): void {
    this.watching.set(session, this.qos2IdsOf(session, new Set(handed.done ?? [])))
    this.shadow(session)
    this.drainInbox()
      .catch((error) => this.warn(`reading the inbox after ${session.clientId} moved here`, error))
      .finally(() => setTimeout(() => this.unwatch(session), this.heartbeatMs))
  }

  /**
   * The client comes back here while its node `dead` is dead (before or after
   * the death was seen, before another node adopted the session): what Redis
   * keeps of its session (subscriptions, inbound QoS 2 ids, outbound QoS 2
   * records) becomes a session here, and what the dead node's inbox still holds
   * for it (unread, or read and not acknowledged by the client) is copied into
   * this node's inbox for it alone (the dead node's other sessions are its
   * adopter's), now and, for what came after, once the other nodes must have
   * seen the death.
   */
  private async takeFromDead(dead: string, clientId: string): Promise<void> {
    const a = await this.storedSession(clientId)
    // the will of the connection lost with the dead node: a delayed one is cancelled, the client is back [MQTT-3.1.3-9]
    await this.orphanWill(clientId, true)
    if (a === undefined || this.core.sessions.has(clientId)) return
    const created = new Set<string>()
    const session = this.newAdopted(a, created)
    this.core.log.notice(`Cluster: took the session of ${clientId} over from dead node ${dead}.`)
    const only = new Set([clientId])
    let last = ""
    try {
      const first = await this.transfer(dead, only, false, "")
      this.forgetUnreplayed(created, first.origins)
      last = first.last
    } finally {
      setTimeout(
        () =>
          void this.transfer(dead, only, false, last)
            .catch((error) => this.warn(`replaying the inbox of dead node ${dead}`, error))
            .finally(() => setTimeout(() => this.unwatch(session), this.heartbeatMs * 4)),
        this.heartbeatMs * 4
      )
    }
  }

  /** What Redis keeps of a persistent session for a node that adopts it: subscriptions (`P:subs`), inbound QoS 2 ids (`P:qos2`), outbound QoS 2 records (`P:out`). */
  private async storedSession(clientId: string): Promise<StoredSession | undefined> {
    const k = this.keys
    const [stored, qos2, out] = await Promise.all([this.main.hGetAll(k.subs(clientId)), this.main.sMembers(k.qos2(clientId)), this.main.hGetAll(k.out(clientId))])
    const meta = stored[""] === undefined ? undefined : (JSON.parse(stored[""]) as { expiryInterval: number })
    if (meta === undefined && qos2.length === 0 && Object.keys(out).length === 0) return undefined
    const subs: Array<[string, SubscriptionOptions]> = []
    for (const [filter, text] of Object.entries(stored)) if (filter !== "") subs.push([filter, JSON.parse(text) as SubscriptionOptions])
    // a session known only by its QoS 2 ids (it never subscribed): its CONNECT sets the expiry again
    return { clientId, expiryInterval: meta?.expiryInterval ?? 0xffffffff, subs, qos2, out }
  }

  /** An offline session here from what Redis keeps of it; `created`: the origins its records link to (see `restoreRecords`). */
  private newAdopted(a: StoredSession, created: Set<string>): Session {
    const core = this.core
    const session = core.newSession(a.clientId)
    session.expiryInterval = a.expiryInterval
    session.disconnectedAt = core.now()
    core.sessions.set(a.clientId, session)
    for (const [filter, options] of a.subs) {
      core.router.subscribe(session, filter, options)
      session.subscriptions.set(filter, options)
    }
    this.restoreQos2(session, a.qos2)
    this.restoreRecords(session, a.out, created)
    this.watch(session)
    core.persist(session, undefined, true)
    return session
  }

  /**
   * An adopted session's outbound QoS 2 records: its in-flight window again,
   * with the same packet ids (PUBLISH with DUP for "p", PUBREL for "r", when
   * its client is back [MQTT-4.4.0-1]); every recorded message, completed ones
   * included, is skipped when its entry is replayed. In-flight messages are
   * linked to their entry once it is read here (they hold it), completed
   * records are deleted with it.
   */
  private restoreRecords(session: Session, records: Readonly<Record<string, string>>, created: Set<string>): void {
    const clientId = session.clientId
    const skip = new Set<string>()
    const inflight: Array<InflightEntry> = []
    for (const [key, text] of Object.entries(records)) {
      let r: OutRecord
      try {
        r = JSON.parse(text) as OutRecord
      } catch {
        continue
      }
      if (typeof r.i !== "number" || r.i < 1 || r.i > 65535) continue
      const origin = originOfKey(key)
      let link: PendingLink | undefined = undefined
      if (origin !== undefined) {
        skip.add(key)
        link = this.links.get(origin)
        if (link === undefined) this.links.set(origin, (link = { messages: [], completed: [] }))
        created.add(origin)
      }
      if (r.s === "c") {
        if (link !== undefined) link.completed.push([clientId, key])
        else this.putRecord(clientId, key, undefined)
        continue
      }
      // released: only the packet id matters (PUBREL)
      const message = r.s === "p" && r.m !== undefined ? messageOfFields(r.m) : new Message("", Buffer.alloc(0), 2, false, undefined, "", this.core.now())
      if (message === undefined) continue
      this.recordKeys.set(message, key)
      link?.messages.push(message)
      inflight.push({
        message,
        qos: 2,
        retain: r.r === 1,
        subscriptionIds: r.d,
        shared: undefined,
        messageId: r.i,
        state: r.s === "p" ? "await-pubrec" : "await-pubcomp"
      })
    }
    if (inflight.length > 0) {
      // sent in packet id order (the records do not keep the order they were sent in)
      inflight.sort((x, y) => x.messageId - y.messageId)
      session.flow.restore(inflight, [])
    }
    if (skip.size > 0) this.skipOf.set(clientId, skip)
  }

  /**
   * The wills of a dead node's clients, kept in Redis with their sessions
   * (written at CONNECT, and when a session goes offline with a delayed will):
   * the adopted sessions' wait for what is left of their delay (their expiry
   * timers start here), the others' (sessions that ended with the connection,
   * or whose delay is over) go now [MQTT-3.1.2-8]. A client that came back
   * first had its will cancelled or published by the node it came back to.
   */
  private async adoptedWills(dead: string, clients: ReadonlyArray<string>, adopted: ReadonlyArray<Session>): Promise<void> {
    const core = this.core
    const mine = new Set(adopted.map((s) => s.clientId))
    for (const session of adopted) {
      if (core.sessions.get(session.clientId) !== session || session.wire !== undefined) continue
      const text = await this.main.get(this.keys.will(session.clientId))
      const w = text === null ? undefined : (fromJson(text) as WireWill)
      const message = w === undefined ? undefined : messageOfFields(w.m)
      if (message !== undefined && session.wire === undefined) {
        const due = w!.at ?? Date.now() + (w!.d ?? 0) * 1000
        if (due <= Date.now()) {
          core.router.publish(message)
          await this.main.del(this.keys.will(session.clientId))
        } else session.pendingWill = { message, at: core.now() + (due - Date.now()) }
      }
      core.expireLater?.(session)
    }
    for (const clientId of clients) {
      if (mine.has(clientId) || core.sessions.has(clientId) || (await this.main.get(this.keys.owner(clientId))) !== dead) continue
      await this.orphanWill(clientId, false)
    }
  }

  /** The will Redis keeps of a client whose session is not adopted here: published now (unless the client is `back` and its will had a delay [MQTT-3.1.3-9]), and forgotten. */
  private async orphanWill(clientId: string, back: boolean): Promise<void> {
    const k = this.keys
    const text = await this.main.get(k.will(clientId))
    if (text === null) return
    await this.main.del(k.will(clientId))
    const w = fromJson(text) as WireWill
    const message = messageOfFields(w.m)
    if (message !== undefined && !(back && (w.at !== undefined || (w.d ?? 0) > 0))) this.core.router.publish(message)
  }

  /** Core.persist: a session connected or went offline here; its keys in Redis follow, if this node owns it. */
  persisted(session: Session, will: StoredWill | undefined, offline: boolean): void {
    if (!this.acting()) return
    const core = this.core
    let ms = ""
    let record: WireWill | undefined
    if (offline) {
      if (session.expiryInterval === 0) return
      // it lives in Redis as long as it lives here (none: kept)
      const interval = session.expiryInterval === 0xffffffff ? core.settings.persistentClientExpiration : session.expiryInterval
      if (interval !== undefined) ms = String(Math.max(1, interval * 1000))
      const pending = session.pendingWill
      if (pending !== undefined) record = { m: messageFields(pending.message, undefined), at: Date.now() + (pending.at - core.now()) }
    } else if (will !== undefined) {
      const message = new Message(will.topic, will.payload, will.qos, will.retain, will.properties, session.clientId, core.now())
      record = { m: messageFields(message, undefined), d: will.delayInterval }
    }
    const k = this.keys
    const id = session.clientId
    this.main
      .eval(KEEP, {
        keys: [k.owner(id), k.subs(id), k.qos2(id), k.will(id), k.out(id)],
        arguments: [this.nodeId, ms, record === undefined ? "" : toJson(record), offline || session.expiryInterval === 0 ? "" : JSON.stringify({ expiryInterval: session.expiryInterval })]
      })
      .catch((error) => this.warn(`keeping the session of ${id}`, error))
  }

  /** Core.discardSession: a session ended here; its keys go once it is sure no new one took its place. */
  ended(clientId: string): void {
    if (this.state !== "live") return
    this.endedIds.add(clientId)
    if (this.endedIds.size === 1) setImmediate(() => void this.cleanEnded())
  }

  private readonly endedIds = new Set<string>()

  /** The keys of the sessions that ended (a new connection with the same id keeps them). */
  cleanEnded(): Promise<unknown> {
    const ids = [...this.endedIds]
    this.endedIds.clear()
    if (ids.length === 0 || !this.acting()) return Promise.resolve()
    const k = this.keys
    const all: Array<Promise<unknown>> = []
    for (const id of ids) {
      if (this.core.sessions.has(id) || this.claiming.has(id)) continue
      all.push(
        this.main
          .eval(ENDED, { keys: [k.owner(id), k.subs(id), k.qos2(id), k.will(id), k.clients(this.nodeId), k.out(id)], arguments: [this.nodeId, id] })
          .catch((error) => this.warn(`forgetting the session of ${id}`, error))
      )
    }
    return Promise.all(all)
  }

  /**
   * Before asking the old owner to let a persistent session go: subscribe a
   * buffer here to the session's stored filters and wait until the routes are
   * stored and notified, so that what is published from then on comes here too.
   */
  private async takeoverBuffer(clientId: string): Promise<Takeover> {
    const buffer = new Takeover(clientId)
    const stored = await this.main.hGetAll(this.keys.subs(clientId))
    for (const [filter, text] of Object.entries(stored)) {
      if (filter === "" || filter.startsWith("$share/")) continue
      let options: SubscriptionOptions
      try {
        options = JSON.parse(text) as SubscriptionOptions
      } catch {
        continue
      }
      if (this.core.router.subscribe(buffer, filter, options)) buffer.filters.push(filter)
    }
    await this.announced
    return buffer
  }

  /**
   * The session is here (or not): what the buffer got goes to it — QoS 2 not
   * when the session has the message already (same cluster-wide id, in flight,
   * queued or completed lately on the old node), QoS 1 possibly a second time —
   * then the buffer's routes go (the session's own are in the trie already).
   */
  private feed(buffer: Takeover): void {
    const session = this.core.sessions.get(buffer.id)
    if (session !== undefined) {
      const seen = this.qos2IdsOf(session, buffer.done)
      for (const [message, qos, retain, ids] of buffer.got) {
        if (qos === 2) {
          const id = this.idOf.get(message)
          if (id !== undefined) {
            if (seen.has(id)) continue
            seen.add(id)
          }
        }
        // the buffer has its own client id: No Local is checked here, against the session's subscriptions
        if (message.origin === session.clientId && !this.wantsOwn(session, message.topic)) continue
        if (session.subscriptions.size > 0) session.deliver(message, qos, retain, ids, undefined)
      }
    }
    buffer.got.length = 0
    for (const filter of buffer.filters) this.core.router.unsubscribe(buffer, filter)
  }

  /** `into`, plus the cluster-wide ids of the QoS 2 deliveries `session` holds (in flight or queued) */
  private qos2IdsOf(session: Session, into: Set<string>): Set<string> {
    for (const e of session.flow.inflight.values()) {
      const id = e.qos === 2 ? this.idOf.get(e.message) : undefined
      if (id !== undefined) into.add(id)
    }
    for (const q of session.flow.queue) {
      const id = q !== undefined && q.qos === 2 ? this.idOf.get(q.message) : undefined
      if (id !== undefined) into.add(id)
    }
    return into
  }

  /** a subscription of `session` without No Local matches `topic` */
  private wantsOwn(session: Session, topic: string): boolean {
    for (const [filter, options] of session.subscriptions) if (!options.noLocal && !filter.startsWith("$share/") && matchTopic(filter, topic)) return true
    return false
  }

  /** Ask `node` to let `clientId` go; the request's id, undefined when it did not answer in time. */
  private requestRelease(node: string, clientId: string): Promise<string | undefined> {
    const id = randomUUID()
    return new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => {
        this.releases.delete(id)
        this.core.log.warning(`Warning: cluster: node ${node} did not let ${clientId} go within ${this.releaseTimeoutMs} ms.`)
        resolve(undefined)
      }, this.releaseTimeoutMs)
      this.releases.set(id, () => {
        clearTimeout(timer)
        this.releases.delete(id)
        resolve(id)
      })
      this.main.publish(this.keys.ctl(node), JSON.stringify({ op: "release", c: clientId, from: this.nodeId, id })).catch((error) => this.warn("asking for a session", error))
    })
  }

  onControl(text: string): void {
    let m: { op: string; c: string; from: string; id: string }
    try {
      m = JSON.parse(text)
    } catch {
      return
    }
    if (m.op === "released") return this.releases.get(m.id)?.()
    // a node stopping cleanly hands its sessions over (`handOver`): adopted now, not when its lease would have expired
    if (m.op === "adopt") {
      const node = (m as unknown as { n: unknown }).n
      if (typeof node !== "string" || node === this.nodeId || !this.acting()) return
      this.takeDead(node).catch((error) => this.warn(`adopting the sessions of stopped node ${node}`, error))
      return
    }
    if (m.op !== "release" || typeof m.c !== "string") return
    // without the lease it does not answer: the asking node takes the session from Redis, and this one is fenced or drops it when it settles
    if (!this.acting()) return
    this.release(m.c, m.id)
      .catch((error) => this.warn(`letting ${m.c} go`, error))
      .finally(() => void this.main.publish(this.keys.ctl(m.from), JSON.stringify({ op: "released", id: m.id })).catch(() => {}))
  }

  /**
   * Another node takes `clientId` over: kick its connection, hand the session
   * over through Redis, marked with the request's id (a hand-over the asking
   * node gave up waiting for is taken by nobody) and short-lived.
   */
  private async release(clientId: string, request: string): Promise<void> {
    const core = this.core
    core.attached.get(clientId)?.takenOver()
    if (core.sessions.get(clientId) === undefined) return
    // what other nodes sent here before they learned the new owner's routes: routed to the session before it goes
    if (core.sessions.get(clientId)!.expiryInterval !== 0) {
      await this.barrier()
      await this.drainInbox()
    }
    const session = core.sessions.get(clientId)
    if (session === undefined) return
    const wire = session.expiryInterval === 0 ? undefined : this.serialize(session)
    this.detach(session)
    if (wire !== undefined) await this.main.set(this.keys.session(clientId), toJson({ ...wire, rid: request }), { PX: Math.max(30_000, this.releaseTimeoutMs * 4) })
  }

  /**
   * Wait (up to a third of the release timeout) until every node known here
   * has applied the route changes published before now and this node has
   * routed what they sent it before that. The new owner announced its routes
   * before asking for the session, and one channel carries route changes and
   * this barrier in Redis' order: each node answers with a marker entry in this
   * node's inbox behind whatever it sent here on the old routes. Without it, a
   * node that learns the new routes late still sends here alone after the
   * session has gone, and those messages are lost.
   */
  private async barrier(): Promise<void> {
    // every live member, also those without routes (publishers' nodes are not in `remotes`)
    const members = (await this.main.sMembers(this.keys.nodes)).filter((n) => n !== this.nodeId)
    if (members.length === 0) return
    const alive = await this.main.mGet(members.map((n) => this.keys.alive(n)))
    const peers = members.filter((_, i) => alive[i] !== null)
    if (peers.length === 0) return
    const id = randomUUID()
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await new Promise<void>((resolve, reject) => {
        this.barriers.set(id, { waiting: new Set(peers), done: resolve })
        timer = setTimeout(resolve, this.releaseTimeoutMs / 3)
        this.main.publish(this.keys.routes, JSON.stringify({ n: this.nodeId, op: "barrier", f: id })).catch(reject)
      })
    } finally {
      clearTimeout(timer)
      this.barriers.delete(id)
    }
  }
  /** barriers this node is waiting for: id → the nodes that have not answered yet */
  private readonly barriers = new Map<string, { readonly waiting: Set<string>; readonly done: () => void }>()

  /** Wait (up to half the release timeout) until the inbox reader has routed every entry the inbox has now. */
  private async drainInbox(): Promise<void> {
    const inbox = this.keys.inbox(this.nodeId)
    const last = await this.main.xRevRange(inbox, "+", "-", { COUNT: 1 })
    const id = last[0]?.id
    if (id === undefined) return
    const until = Date.now() + this.releaseTimeoutMs / 2
    while (idAfter(id, this.lastRouted) && Date.now() < until && this.acting()) await new Promise((r) => setTimeout(r, 5))
  }

  /** Remove a session from this node without ending it (it lives on elsewhere): nothing of it is written to Redis. */
  private detach(session: Session): void {
    const core = this.core
    session.flow.observer = undefined
    session.pendingWill = undefined
    this.detaching = true
    try {
      for (const filter of session.subscriptions.keys()) core.router.unsubscribe(session, filter)
    } finally {
      this.detaching = false
    }
    session.subscriptions.clear()
    core.store?.sessionDelete(session.clientId)
    if (core.sessions.get(session.clientId) === session) core.sessions.delete(session.clientId)
  }

  serialize(session: Session): HandedSession {
    const fieldsOf = (m: Message): MessageFields => {
      const f = messageFields(m, undefined)
      const i = m.qos === 2 ? this.idOf.get(m) : undefined
      if (i !== undefined) f.i = i
      return f
    }
    const delivery = (d: Outgoing): WireDelivery => ({
      m: fieldsOf(d.message),
      qos: d.qos,
      retain: d.retain,
      ids: d.subscriptionIds,
      shared: d.shared === undefined ? undefined : { group: d.shared.group, filter: d.shared.filter }
    })
    // outbound QoS 2: the record key goes with the delivery, so that the new owner updates the same record
    const inflight: Array<WireDelivery> = []
    for (const e of session.flow.inflight.values()) {
      const u = e.qos === 2 ? this.recordKey(e.message, e.messageId) : undefined
      inflight.push({ ...delivery(e), messageId: e.messageId, state: e.state, ...(u !== undefined ? { u } : {}) })
    }
    const queue: Array<WireDelivery> = []
    for (const q of session.flow.queue) {
      if (q === undefined) continue
      const u = q.qos === 2 ? this.recordKey(q.message, 0) : undefined
      queue.push(u !== undefined && !u.startsWith("#") ? { ...delivery(q), u } : delivery(q))
    }
    return {
      clientId: session.clientId,
      expiryInterval: session.expiryInterval,
      disconnectedAt: session.disconnectedAt,
      subscriptions: [...session.subscriptions],
      inflight,
      queue,
      qos2: [...session.qos2.awaitingRel],
      done: this.completedIds.get(session) ?? []
    } satisfies HandedSession
  }

  /** A session another node let go: this node's now, subscriptions, in-flight and queued deliveries included. */
  adopt(w: WireSession): void {
    const core = this.core
    const existing = core.sessions.get(w.clientId)
    if (existing !== undefined) this.detach(existing)
    const session = core.newSession(w.clientId)
    session.expiryInterval = w.expiryInterval
    session.disconnectedAt = core.now()
    core.sessions.set(w.clientId, session)
    for (const [filter, options] of w.subscriptions) {
      core.router.subscribe(session, filter, options)
      session.subscriptions.set(filter, options)
    }
    const revive = (d: WireDelivery): Outgoing | undefined => {
      const message = messageOfFields(d.m)
      if (message === undefined) return undefined
      if (d.u !== undefined) this.recordKeys.set(message, d.u)
      if (d.m.i !== undefined) this.idOf.set(message, d.m.i)
      const shared = d.shared === undefined ? undefined : core.router.sharedGroup(d.shared.group, d.shared.filter)
      return { message, qos: d.qos, retain: d.retain, subscriptionIds: d.ids, shared }
    }
    const inflight: Array<InflightEntry> = []
    for (const d of w.inflight) {
      const out = revive(d)
      if (out !== undefined && d.messageId !== undefined && d.state !== undefined) inflight.push({ ...out, messageId: d.messageId, state: d.state })
    }
    const queue: Array<Outgoing> = []
    for (const d of w.queue) {
      const out = revive(d)
      if (out !== undefined) queue.push(out)
    }
    session.flow.restore(inflight, queue)
    this.restoreQos2(session, w.qos2)
    core.persist(session, undefined, true)
  }

  /** An adopted session's inbound QoS 2 ids; one that is no packet id (Redis or another node wrote it wrong) is skipped, as the set refuses it. */
  private restoreQos2(session: Session, ids: ReadonlyArray<number | string>): void {
    for (const id of ids) {
      const n = Number(id) // (Redis keeps them as strings)
      if (isPacketId(n)) session.qos2.awaitingRel.add(n)
      else this.core.log.warning(`Warning: cluster: skipped inbound QoS 2 id '${String(id)}' of ${session.clientId}: not a packet identifier.`)
    }
  }
}

/**
 * Join the cluster: connect to Redis, announce this node, load the retained
 * messages and the other nodes' routes, then keep reading the inbox and
 * beating. Leaving (the scope closes) removes this node's routes and
 * heartbeat so that the others stop forwarding at once.
 */
export const make = (core: Core, options: ClusterOptions): Effect.Effect<ClusterNode, ClusterError, Scope.Scope> =>
  Effect.gen(function* () {
    const nodeId = options.nodeId ?? `${os.hostname()}-${randomUUID().slice(0, 8)}`
    const heartbeatMs = options.heartbeatMs ?? 1000
    const connectError = (error: unknown) =>
      new ClusterError({ reason: "connect", message: `cannot reach Redis at ${options.redisUrl}: ${error instanceof Error ? error.message : String(error)}` })
    const main: Client = createClient({
      url: options.redisUrl,
      socket: { reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 1000), connectTimeout: 5000 }
    })
    const reader = main.duplicate()
    const sub = main.duplicate()
    const node = new ClusterImpl(core, nodeId, options.keyPrefix ?? "midge", main, heartbeatMs, options.releaseTimeoutMs ?? 3000)
    let lostAt = 0
    for (const client of [main, reader, sub]) {
      client.on("error", (error: unknown) => {
        // one line per outage, not one per retry
        if (Date.now() - lostAt > 10_000 && !node.closing) core.log.warning(`Warning: cluster: Redis: ${error instanceof Error ? error.message : String(error)}`)
        lostAt = Date.now()
      })
    }
    let connections = 0
    main.on("ready", () => {
      if (connections++ > 0) {
        core.log.notice("Cluster: reconnected to Redis.")
        node.needsResync = true
      }
    })

    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => Promise.all([main.connect(), reader.connect(), sub.connect()]),
        catch: connectError
      }).pipe(
        Effect.timeoutFail({ duration: Duration.seconds(10), onTimeout: () => connectError(new Error("timed out")) }),
        Effect.tapError(() => Effect.sync(() => [main, reader, sub].forEach((c) => c.destroy())))
      ),
      () =>
        Effect.promise(async () => {
          // the keys of the sessions that ended with the listeners' close go first
          let handedOver = false
          if (main.isReady) {
            await Promise.race([node.cleanEnded(), new Promise((r) => setTimeout(r, 1000))])
            // its persistent sessions go to a live node (their inbox entries with them); alone, it keeps them (file store) as before
            handedOver = await Promise.race([node.handOver().catch(() => false), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))])
            if (!handedOver) await Promise.race([node.ackForStore(), new Promise((r) => setTimeout(r, 1000))])
          }
          node.closing = true
          core.cluster = undefined
          core.router.observer = undefined
          try {
            // leave: the others stop forwarding to this node now, not when the heartbeat expires
            if (main.isReady && !handedOver) {
              await Promise.race([
                main.multi().sRem(node.keys.nodes, nodeId).del(node.keys.alive(nodeId)).del(node.keys.routesOf(nodeId)).exec(),
                new Promise((r) => setTimeout(r, 1000))
              ])
            }
          } catch {
            // Redis is away: the heartbeat expires by itself
          }
          for (const c of [main, reader, sub]) c.destroy()
        })
    )
    yield* Effect.tryPromise({
      try: async () => {
        await sub.subscribe(node.keys.routes, (text: string) => node.onRouteChange(text))
        await sub.subscribe(node.keys.retained, (text: string) => node.onRetainedChange(text))
        await sub.subscribe(node.keys.ctl(nodeId), (text: string) => node.onControl(text))
      },
      catch: connectError
    })

    // hooks: from here on routes are announced and retained messages shared
    // subscriptions that existed before (sessions restored by persistence)
    for (const session of core.sessions.values()) for (const [filter, o] of session.subscriptions) node.routeObserver.added(session, filter, o)
    core.router.observer = node.routeObserver
    const previousOnChange = core.router.retained.onChange
    core.router.retained.onChange = previousOnChange === undefined ? node.onRetained : (m) => (previousOnChange(m), node.onRetained(m))
    yield* Effect.addFinalizer(() => Effect.sync(() => void (core.router.retained.onChange = previousOnChange)))
    yield* Effect.tryPromise({ try: () => node.join(), catch: connectError })
    yield* Effect.tryPromise({ try: () => node.restoredSessions(), catch: connectError })
    yield* Effect.tryPromise({ try: () => node.heartbeat(), catch: connectError })
    core.cluster = node

    // the inbox: own pending entries first (a restart under the same id), then new ones
    const inbox = node.keys.inbox(nodeId)
    let cursor = "0"
    const readOnce = Effect.tryPromise(async () => {
      // without the lease the inbox is left alone: a node that adopted this one reads it (nothing is acknowledged here)
      if (node.needsResync || !node.acting()) return await new Promise<void>((r) => setTimeout(r, 50))
      if (node.rereadPending) {
        node.rereadPending = false
        cursor = "0"
      }
      const reply = (await reader.xReadGroup("midge", nodeId, { key: inbox, id: cursor }, { COUNT: 1000, BLOCK: 1000 })) as Array<{
        readonly messages: ReadonlyArray<{ readonly id: string; readonly message: Record<string, string> | null }>
      }> | null
      // the lease lapsed while this read waited: what it got stays pending, read again if the node goes on
      if (!node.acting()) return
      const messages = reply?.[0]?.messages ?? []
      if (messages.length === 0) cursor = ">"
      else {
        // re-reading what is pending (cursor an id): go on after it, entries still held stay pending
        if (cursor !== ">") cursor = messages[messages.length - 1].id
        node.routeEntries(messages)
        // what was routed is written to the sockets (this turn's flush) before it is looked at
        await new Promise<void>((r) => setImmediate(r))
      }
      // entries are acknowledged once no persistent session here holds their messages (PUBACK / PUBCOMP seen)
      if (!node.acting()) return
      const ids = node.ackable()
      if (ids.length > 0) await node.acknowledge(inbox, ids)
    }).pipe(
      Effect.catchAll((error) =>
        Effect.suspend(() => {
          const text = String(error.error ?? error)
          // the stream or its group is gone (Redis restarted empty): create them again
          if (text.includes("NOGROUP")) node.needsResync = true
          cursor = "0"
          return Effect.sleep(Duration.millis(100))
        })
      )
    )
    yield* readOnce.pipe(Effect.forever, Effect.forkScoped)
    yield* Effect.tryPromise(() => node.heartbeat()).pipe(
      Effect.catchAll((error) => Effect.sync(() => void (node.closing || core.log.debug(`Cluster: heartbeat failed: ${String(error.error)}`)))),
      Effect.repeat(Schedule.spaced(Duration.millis(heartbeatMs))),
      Effect.forkScoped
    )
    core.log.notice(`Cluster: node ${nodeId} joined through ${options.redisUrl}.`)

    return {
      nodeId,
      peers: () => [...node.remotes.keys()],
      remoteFilters: (id: string) => node.remotes.get(id)?.routes.filters ?? new Set<string>(),
      stats: () => ({ forwarded: node.forwarded, received: node.received })
    } satisfies ClusterNode
  })
