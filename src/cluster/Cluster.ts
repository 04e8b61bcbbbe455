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
 *   sessions of a dead node replays what is left. Inbound QoS 2 ids of
 *   persistent sessions are kept in `P:qos2:<client id>` (before PUBREC).
 * - Liveness: `P:alive:<node>` with a TTL, refreshed every heartbeat; a node
 *   whose key expired is dead and its routes are dropped.
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
import type { Congestible, PublishSource, SharedGroup, Subscriber, SubscriptionOptions } from "../routing/Router.js"
import type { ClusterHooks, Core } from "../session/Core.js"
import { Message, type QoS } from "../session/Message.js"
import type { InflightEntry, Outgoing } from "../session/OutboundFlow.js"
import { Session } from "../session/Session.js"
import {
  fromJson,
  messageFields,
  messageOfFields,
  sharedOfFields,
  toJson,
  type MessageFields,
  type WireDelivery,
  type WireSession
} from "./internal/codec.js"

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
  readonly filters = new Set<string>()
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

/** One pipelined round trip of XADDs (one entry per node, carrying many messages), and the acknowledgements that wait for it. */
interface Batch {
  readonly byNode: Map<string, Array<MessageFields>>
  /** inbound QoS 2 ids of persistent sessions: [client id, packet id, received (SADD) or released (SREM)] */
  readonly qos2: Array<[string, number, boolean]>
  size: number
  readonly waiters: Array<() => void>
}

const newBatch = (): Batch => ({ byNode: new Map(), qos2: [], size: 0, waiters: [] })

/** messages per stream entry at most */
const ENTRY_MESSAGES = 500
/** messages waiting for the next XADD round trip above which publishers are held up (backpressure) */
const FORWARD_HIGH = 5000

type Client = ReturnType<typeof createClient>

/** A persistent session as Redis keeps it for a node that adopts it. */
interface StoredSession {
  readonly clientId: string
  readonly expiryInterval: number
  readonly subs: ReadonlyArray<readonly [string, SubscriptionOptions]>
  readonly qos2: ReadonlyArray<string>
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
  private readonly entryOf = new WeakMap<Message, string>()
  private readonly releases = new Map<string, () => void>()
  private readonly sharedNext = new Map<SharedGroup, number>()
  needsResync = true
  forwarded = 0
  received = 0
  closing = false

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
  }

  constructor(
    readonly core: Core,
    readonly nodeId: string,
    prefix: string,
    readonly main: Client,
    readonly heartbeatMs: number,
    readonly releaseTimeoutMs: number
  ) {
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
      adopt: (n) => `${prefix}:adopt:${n}`
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
    const list = batch.byNode.get(node)
    if (list === undefined) batch.byNode.set(node, [messageFields(message, shared)])
    else list.push(messageFields(message, shared))
    batch.size++
    this.forwarded++
    this.schedule()
    // Redis is slower than the publishers: hold them up as a congested subscriber does
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
    if (this.inflight !== undefined) return
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
    for (const [node, list] of batch.byNode) {
      for (let i = 0; i < list.length; i += ENTRY_MESSAGES) {
        multi.xAdd(this.keys.inbox(node), "*", { b: JSON.stringify(i === 0 && list.length <= ENTRY_MESSAGES ? list : list.slice(i, i + ENTRY_MESSAGES)) })
      }
    }
    multi.execAsPipeline().then(done, (error) => {
      if (this.closing) return
      this.warn("forwarding to other nodes failed, retrying", error)
      setTimeout(() => this.send(batch), 200)
    })
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

  /** Route a batch read from the inbox; its entries wait in `unacked` (see `ackable`). Entries already routed (a re-read) are skipped. */
  routeEntries(entries: ReadonlyArray<{ readonly id: string; readonly message: Record<string, string> | null }>): void {
    for (const e of entries) {
      if (!idAfter(e.id, this.lastRouted)) continue
      this.lastRouted = e.id
      this.unacked.push(e.id)
      if (e.message === null) continue
      let list: Array<MessageFields>
      try {
        list = JSON.parse(e.message.b ?? "[]")
      } catch {
        continue
      }
      if (!Array.isArray(list)) continue
      for (const fields of list) {
        const message = messageOfFields(fields)
        if (message === undefined) continue
        this.entryOf.set(message, e.id)
        try {
          this.routeFromPeer(message, sharedOfFields(fields))
        } catch (error) {
          this.warn(`routing a message from another node`, error)
        }
      }
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
          const id = entryOf.get(e.message)
          if (id !== undefined) held.add(id)
        }
      }
      const queue = flow.queue
      for (let i = 0; i < queue.length; i++) {
        const q = queue[i]
        if (q === undefined) continue
        const id = entryOf.get(q.message)
        if (id !== undefined) held.add(id)
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
      if (subscriber instanceof RemoteNode) return
      // a persistent session's subscriptions are kept in Redis, for a node that adopts it if this one dies
      if (subscriber instanceof Session && subscriber.expiryInterval !== 0) this.storeSubscription(subscriber, filter, options)
      const n = this.localFilters.get(filter) ?? 0
      this.localFilters.set(filter, n + 1)
      if (n === 0) this.announce("+", filter)
    },
    removed: (subscriber: Subscriber, filter: string): void => {
      if (subscriber instanceof RemoteNode) return
      if (subscriber instanceof Session) this.main.hDel(this.keys.subs(subscriber.clientId), filter).catch((error) => this.warn("forgetting a subscription", error))
      const n = this.localFilters.get(filter) ?? 0
      if (n <= 1) {
        this.localFilters.delete(filter)
        if (n === 1) this.announce("-", filter)
      } else this.localFilters.set(filter, n - 1)
    }
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
    // a failure is repaired by the resync after Redis comes back
    multi.exec().catch((error) => this.warn("announcing a route", error))
  }

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
    const r = this.remote(change.n)
    if (change.op === "+" && !r.filters.has(change.f)) {
      r.filters.add(change.f)
      this.core.router.subscribe(r, change.f, PEER_OPTIONS)
    } else if (change.op === "-" && r.filters.delete(change.f)) {
      this.core.router.unsubscribe(r, change.f)
    }
  }

  private syncRemote(node: string, filters: ReadonlyArray<string>): void {
    const r = this.remote(node)
    const wanted = new Set(filters)
    for (const f of r.filters) {
      if (!wanted.has(f)) {
        r.filters.delete(f)
        this.core.router.unsubscribe(r, f)
      }
    }
    for (const f of wanted) {
      if (!r.filters.has(f)) {
        r.filters.add(f)
        this.core.router.subscribe(r, f, PEER_OPTIONS)
      }
    }
  }

  private dropRemote(node: string): void {
    const r = this.remotes.get(node)
    if (r === undefined) return
    for (const f of r.filters) this.core.router.unsubscribe(r, f)
    r.filters.clear()
    this.remotes.delete(node)
    this.core.log.notice(`Cluster: node ${node} left.`)
  }

  /** After (re)connecting: our routes, heartbeat, inbox group and retained messages are in Redis again. */
  async resync(): Promise<void> {
    const k = this.keys
    const multi = this.main.multi()
    multi.set(k.alive(this.nodeId), String(Date.now()), { PX: this.heartbeatMs * 3 })
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

  /** Heartbeat, then the other nodes' routes as Redis has them; dead nodes are dropped. */
  async heartbeat(): Promise<void> {
    if (this.needsResync) await this.resync()
    const k = this.keys
    await this.main.set(k.alive(this.nodeId), String(Date.now()), { PX: this.heartbeatMs * 3 })
    const nodes = (await this.main.sMembers(k.nodes)).filter((n) => n !== this.nodeId)
    const alive = nodes.length === 0 ? [] : await this.main.mGet(nodes.map((n) => k.alive(n)))
    const live = new Set<string>()
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i]
      if (alive[i] === null) {
        // one live node adopts a dead node's persistent sessions and what is left in its inbox
        const adopter = (await this.main.set(k.adopt(node), this.nodeId, { NX: true, PX: 60_000 })) === "OK"
        if (adopter) await this.adoptDead(node)
        else this.dropRemote(node)
        await this.main.multi().sRem(k.nodes, node).del(k.routesOf(node)).exec()
        continue
      }
      live.add(node)
      this.syncRemote(node, await this.main.sMembers(k.routesOf(node)))
    }
    for (const node of [...this.remotes.keys()]) if (!live.has(node)) this.dropRemote(node)
  }

  /**
   * `dead`'s heartbeat expired: its persistent sessions (subscriptions as
   * stored in Redis, inbound QoS 2 ids) become offline sessions here, in the
   * same turn as its routes are dropped, so that what follows queues here; then
   * what is left in its inbox (unread, or read and not acknowledged by the clients)
   * is routed to them.
   */
  private async adoptDead(dead: string): Promise<void> {
    const k = this.keys
    const core = this.core
    const clients = await this.main.sMembers(k.clients(dead))
    const adopted: Array<StoredSession> = []
    for (const clientId of clients) {
      if ((await this.main.get(k.owner(clientId))) !== dead || core.sessions.has(clientId)) continue
      const a = await this.storedSession(clientId)
      if (a !== undefined) adopted.push(a)
    }
    // one synchronous step: the sessions start queuing as the dead node stops receiving
    const sessions: Array<Session> = []
    for (const a of adopted) if (!core.sessions.has(a.clientId)) sessions.push(this.newAdopted(a))
    this.dropRemote(dead)
    const multi = this.main.multi()
    for (const s of sessions) multi.set(k.owner(s.clientId), this.nodeId).sAdd(k.clients(this.nodeId), s.clientId)
    multi.del(k.clients(dead))
    await multi.exec()
    if (sessions.length > 0) core.log.notice(`Cluster: adopted ${sessions.length} sessions of dead node ${dead}.`)
    // the dead node's unread inbox, for the adopted sessions only (the others had their own copies);
    // nodes that have not yet seen the death may still add to it for a few heartbeats
    const inbox = k.inbox(dead)
    const byId = new Map(sessions.map((s) => [s.clientId, s]))
    const drain = async (): Promise<void> => {
      for (;;) {
        const entries = (await this.main.xRange(inbox, "-", "+", { COUNT: 200 })) as Array<{ id: string; message: Record<string, string> }>
        if (entries.length === 0) return
        for (const e of entries) this.routeToAdopted(e.message, byId)
        await this.main.xDel(
          inbox,
          entries.map((e) => e.id)
        )
      }
    }
    await drain()
    setTimeout(() => {
      drain()
        .then(() => this.main.del(inbox))
        .catch((error) => this.warn(`draining the inbox of dead node ${dead}`, error))
    }, this.heartbeatMs * 4)
  }

  private routeToAdopted(entry: Record<string, string>, sessions: ReadonlyMap<string, Session>): void {
    if (sessions.size === 0) return
    let list: Array<MessageFields>
    try {
      list = JSON.parse(entry.b ?? "[]")
    } catch {
      return
    }
    for (const fields of list) {
      const message = messageOfFields(fields)
      if (message === undefined) continue
      const shared = sharedOfFields(fields)
      if (shared !== undefined) {
        this.routeFromPeer(message, shared)
        continue
      }
      for (const session of sessions.values()) {
        if (this.core.sessions.get(session.clientId) !== session) continue
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
    this.claimAsync(clientId, clean).then(done, (error) => {
      this.warn(`settling the owner of ${clientId}`, error)
      done()
    })
  }

  private async claimAsync(clientId: string, clean: boolean): Promise<void> {
    const k = this.keys
    // a clean start forgets the inbound QoS 2 ids of the session before
    if (clean) await this.main.del(k.qos2(clientId))
    const previous = await this.main.set(k.owner(clientId), this.nodeId, { GET: true })
    if (previous === this.nodeId) return
    const index = this.main.multi().sAdd(k.clients(this.nodeId), clientId)
    if (previous !== null) index.sRem(k.clients(previous), clientId)
    await index.exec()
    // the previous owner is dead (its heartbeat expired, or it does not answer: killed, not yet seen dead)
    let fromDead: string | undefined = undefined
    if (previous !== null) {
      if ((await this.main.exists(k.alive(previous))) === 1) {
        this.core.log.info(`Cluster: client ${clientId} moves from node ${previous}.`)
        if (!(await this.requestRelease(previous, clientId))) fromDead = previous
      } else fromDead = previous
    }
    if (clean) {
      await this.main.del(k.session(clientId))
      return
    }
    const text = await this.main.get(k.session(clientId))
    if (text !== null) {
      this.adopt(fromJson(text) as WireSession)
      await this.main.del(k.session(clientId))
    } else if (fromDead !== undefined && !this.core.sessions.has(clientId)) await this.takeFromDead(fromDead, clientId)
  }

  /**
   * The client comes back here while its node `dead` is dead (before or after
   * the death was seen, before another node adopted the session): what Redis
   * keeps of its session (subscriptions, inbound QoS 2 ids) becomes a session
   * here, and what the dead node's inbox still holds for it (unread, or read and
   * not acknowledged by the client) is delivered to it, now and again once the
   * other nodes must have seen the death.
   */
  private async takeFromDead(dead: string, clientId: string): Promise<void> {
    const a = await this.storedSession(clientId)
    if (a === undefined || this.core.sessions.has(clientId)) return
    const session = this.newAdopted(a)
    this.core.log.notice(`Cluster: took the session of ${clientId} over from dead node ${dead}.`)
    const only = new Map([[clientId, session]])
    const replay = async (): Promise<void> => {
      let from = "-"
      for (;;) {
        const entries = (await this.main.xRange(this.keys.inbox(dead), from, "+", { COUNT: 200 })) as Array<{ id: string; message: Record<string, string> }>
        if (entries.length === 0) return
        for (const e of entries) this.routeToAdopted(e.message, only)
        from = `(${entries[entries.length - 1].id}`
      }
    }
    await replay()
    setTimeout(() => void replay().catch((error) => this.warn(`replaying the inbox of dead node ${dead}`, error)), this.heartbeatMs * 4)
  }

  /** What Redis keeps of a persistent session for a node that adopts it: subscriptions (`P:subs`) and inbound QoS 2 ids (`P:qos2`). */
  private async storedSession(clientId: string): Promise<StoredSession | undefined> {
    const k = this.keys
    const [stored, qos2] = await Promise.all([this.main.hGetAll(k.subs(clientId)), this.main.sMembers(k.qos2(clientId))])
    const meta = stored[""] === undefined ? undefined : (JSON.parse(stored[""]) as { expiryInterval: number })
    if (meta === undefined && qos2.length === 0) return undefined
    const subs: Array<[string, SubscriptionOptions]> = []
    for (const [filter, text] of Object.entries(stored)) if (filter !== "") subs.push([filter, JSON.parse(text) as SubscriptionOptions])
    // a session known only by its QoS 2 ids (it never subscribed): its CONNECT sets the expiry again
    return { clientId, expiryInterval: meta?.expiryInterval ?? 0xffffffff, subs, qos2 }
  }

  /** An offline session here from what Redis keeps of it. */
  private newAdopted(a: StoredSession): Session {
    const core = this.core
    const session = new Session(a.clientId, core.flowLimits())
    session.expiryInterval = a.expiryInterval
    session.disconnectedAt = core.now()
    core.sessions.set(a.clientId, session)
    for (const [filter, options] of a.subs) {
      core.router.subscribe(session, filter, options)
      session.subscriptions.set(filter, options)
    }
    for (const id of a.qos2) session.qos2.awaitingRel.add(Number(id))
    core.persist(session, undefined, true)
    return session
  }

  /** Ask `node` to let `clientId` go; false when it did not answer in time. */
  private requestRelease(node: string, clientId: string): Promise<boolean> {
    const id = randomUUID()
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.releases.delete(id)
        this.core.log.warning(`Warning: cluster: node ${node} did not let ${clientId} go within ${this.releaseTimeoutMs} ms.`)
        resolve(false)
      }, this.releaseTimeoutMs)
      this.releases.set(id, () => {
        clearTimeout(timer)
        this.releases.delete(id)
        resolve(true)
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
    if (m.op !== "release" || typeof m.c !== "string") return
    this.release(m.c)
      .catch((error) => this.warn(`letting ${m.c} go`, error))
      .finally(() => void this.main.publish(this.keys.ctl(m.from), JSON.stringify({ op: "released", id: m.id })).catch(() => {}))
  }

  /** Another node takes `clientId` over: kick its connection, hand the session over through Redis. */
  private async release(clientId: string): Promise<void> {
    const core = this.core
    core.attached.get(clientId)?.takenOver()
    const session = core.sessions.get(clientId)
    if (session === undefined) return
    const wire = session.expiryInterval === 0 ? undefined : this.serialize(session)
    this.detach(session)
    if (wire !== undefined) await this.main.set(this.keys.session(clientId), toJson(wire))
  }

  /** Remove a session from this node without ending it (it lives on elsewhere). */
  private detach(session: Session): void {
    const core = this.core
    session.flow.observer = undefined
    session.pendingWill = undefined
    for (const filter of session.subscriptions.keys()) core.router.unsubscribe(session, filter)
    session.subscriptions.clear()
    core.store?.sessionDelete(session.clientId)
    if (core.sessions.get(session.clientId) === session) core.sessions.delete(session.clientId)
  }

  serialize(session: Session): WireSession {
    const delivery = (d: Outgoing): WireDelivery => ({
      m: messageFields(d.message, undefined),
      qos: d.qos,
      retain: d.retain,
      ids: d.subscriptionIds,
      shared: d.shared === undefined ? undefined : { group: d.shared.group, filter: d.shared.filter }
    })
    const inflight: Array<WireDelivery> = []
    for (const e of session.flow.inflight.values()) inflight.push({ ...delivery(e), messageId: e.messageId, state: e.state })
    const queue: Array<WireDelivery> = []
    for (const q of session.flow.queue) if (q !== undefined) queue.push(delivery(q))
    return {
      clientId: session.clientId,
      expiryInterval: session.expiryInterval,
      disconnectedAt: session.disconnectedAt,
      subscriptions: [...session.subscriptions],
      inflight,
      queue,
      qos2: [...session.qos2.awaitingRel]
    }
  }

  /** A session another node let go: this node's now, subscriptions, in-flight and queued deliveries included. */
  adopt(w: WireSession): void {
    const core = this.core
    const existing = core.sessions.get(w.clientId)
    if (existing !== undefined) this.detach(existing)
    const session = new Session(w.clientId, core.flowLimits())
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
    for (const id of w.qos2) session.qos2.awaitingRel.add(id)
    core.persist(session, undefined, true)
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
          node.closing = true
          core.cluster = undefined
          core.router.observer = undefined
          try {
            // leave: the others stop forwarding to this node now, not when the heartbeat expires
            if (main.isReady) {
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
    yield* Effect.tryPromise({ try: () => node.heartbeat(), catch: connectError })
    core.cluster = node

    // the inbox: own pending entries first (a restart under the same id), then new ones
    const inbox = node.keys.inbox(nodeId)
    let cursor = "0"
    const readOnce = Effect.tryPromise(async () => {
      if (node.needsResync) return await new Promise<void>((r) => setTimeout(r, 50))
      const reply = (await reader.xReadGroup("midge", nodeId, { key: inbox, id: cursor }, { COUNT: 1000, BLOCK: 1000 })) as Array<{
        readonly messages: ReadonlyArray<{ readonly id: string; readonly message: Record<string, string> | null }>
      }> | null
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
      const ids = node.ackable()
      if (ids.length > 0) await main.multi().xAck(inbox, "midge", ids).xDel(inbox, ids).exec()
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
      remoteFilters: (id: string) => node.remotes.get(id)?.filters ?? new Set<string>(),
      stats: () => ({ forwarded: node.forwarded, received: node.received })
    } satisfies ClusterNode
  })
