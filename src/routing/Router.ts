/**
 * The router: the single owner of the subscription index. A PUBLISH is matched
 * once against the trie and handed to every subscriber synchronously; a
 * subscriber with several matching subscriptions receives one copy at the
 * highest granted QoS (the MQTT 3.1.1 rule [MQTT-3.3.5-1]), carrying every
 * matching v5 subscription identifier; with `allow_duplicate_messages`, a
 * client gets one copy per matching subscription instead (which MQTT also
 * allows), each with that subscription's QoS and identifier.
 */
import { parseSharedFilter, SHARE_PREFIX } from "../protocol/topic.js"
import { TopicTrie } from "../protocol/TopicTrie.js"
import type { Message, QoS } from "../session/Message.js"
import { RetainedStore } from "./Retained.js"

/** Subscription options of one (client, filter) pair. */
export interface SubscriptionOptions {
  readonly qos: QoS
  /** v5 No Local: not delivered to the client that published it */
  readonly noLocal: boolean
  /** v5 Retain As Published: keep the retain flag on live delivery */
  readonly retainAsPublished: boolean
  /** v5 Retain Handling 0 / 1 / 2 */
  readonly retainHandling: 0 | 1 | 2
  /** v5 subscription identifier, if any */
  readonly subscriptionId: number | undefined
}

/** Whoever can receive messages: a client session or an in-process subscriber. */
export interface Subscriber {
  readonly clientId: string
  /** a client's session: `allow_duplicate_messages` gives it a copy per matching subscription (not a cluster node, a bridge or an in-process subscriber) */
  readonly copyPerSubscription?: boolean
  /**
   * How many of the router's entries (subscriptions other than shared ones) are this
   * subscriber's: kept by the router, 0 to begin with. With one, a message cannot match the
   * subscriber twice, so routing hands it the message without looking it up among the message's
   * other hits (a fan-out to subscribers of one subscription each does no `Map` insert per
   * subscriber: docs/performance.md, "Twenty-fifth round").
   */
  routedSubscriptions: number
  /** connected now (shared subscriptions prefer online members) */
  online(): boolean
  /**
   * Hand a message over. `qos` is already min(published, granted); `retain` is the
   * flag to send. `source` is the publishing connection, told when this subscriber
   * is congested so that it can stop reading (backpressure).
   */
  deliver(
    message: Message,
    qos: QoS,
    retain: boolean,
    subscriptionIds: ReadonlyArray<number> | undefined,
    source: PublishSource | undefined,
    /** set when the message came through a shared subscription (it can move to another member) */
    shared?: SharedGroup
  ): void
}

/**
 * A shared subscription group `$share/GROUP/FILTER` [MQTT-4.8.2]: each message
 * goes to one member, round robin, online members first.
 */
export class SharedGroup {
  readonly members: Array<{ readonly subscriber: Subscriber; options: SubscriptionOptions }> = []
  private next = 0

  constructor(
    readonly group: string,
    readonly filter: string
  ) {}

  /** The member for the next message, skipping `except`; undefined when none is left. */
  pick(except?: Subscriber): { readonly subscriber: Subscriber; options: SubscriptionOptions } | undefined {
    const n = this.members.length
    if (n === 0) return undefined
    let fallback: { readonly subscriber: Subscriber; options: SubscriptionOptions } | undefined
    for (let i = 0; i < n; i++) {
      const m = this.members[(this.next + i) % n]
      if (m.subscriber === except) continue
      if (m.subscriber.online()) {
        this.next = (this.next + i + 1) % n
        return m
      }
      fallback ??= m
    }
    if (fallback !== undefined) this.next = (this.members.indexOf(fallback) + 1) % n
    return fallback
  }

  /**
   * Take a member out. The turn stays with the member it was with: without
   * this adjustment, a member leaving ahead of the turn made the group skip
   * the next member once.
   */
  remove(subscriber: Subscriber): boolean {
    const i = this.members.findIndex((m) => m.subscriber === subscriber)
    if (i < 0) return false
    this.members.splice(i, 1)
    if (i < this.next) this.next--
    if (this.next >= this.members.length) this.next = 0
    return true
  }
}

/** The publishing side of backpressure. */
export interface PublishSource {
  throttle(by: Congestible): void
}

/** A subscriber side that can hold up publishers until it drains. */
export interface Congestible {
  addWaiter(source: PublishSource): void
}

interface SubscriptionEntry extends SubscriptionOptions {
  readonly subscriber: Subscriber
  readonly shared?: undefined
}

/** The trie holds one entry per shared group and filter. */
interface SharedEntry {
  readonly shared: SharedGroup
}

/** per-subscriber merge of several matching subscriptions */
interface Merged {
  qos: QoS
  retainAsPublished: boolean
  ids: Array<number> | undefined
}

export class Router {
  readonly retained = new RetainedStore()
  private readonly trie = new TopicTrie<SubscriptionEntry | SharedEntry>()
  // scratch space reused by every publish (the router is synchronous): the subscribers a message
  // reaches, in the order of their first matching subscription, and what each gets (its entry, or
  // several entries merged). Only a subscriber holding several subscriptions is looked up in
  // `merging` (subscriber -> its index in the hits), so the usual message inserts into no map and
  // clears none (Map.prototype.clear allocates a new table)
  private readonly hitSubs: Array<Subscriber | undefined> = []
  private readonly hitOptions: Array<SubscriptionEntry | Merged | undefined> = []
  private hitCount = 0
  private readonly merging = new Map<Subscriber, number>()
  private readonly sharedHits: Array<SharedGroup> = []
  /** `allow_duplicate_messages`: the further matching subscriptions of clients, each delivered as its own copy */
  private readonly duplicates: Array<SubscriptionEntry> = []
  private current: Message | undefined
  /** publishes made while one is being delivered, routed right after it (see `publish`) */
  private pending: Array<{ readonly message: Message; readonly source: PublishSource | undefined; readonly fromPeer: boolean }> | undefined = undefined
  private readonly visit = (_key: string, entry: SubscriptionEntry | SharedEntry): void => {
    if (entry.shared !== undefined) {
      this.sharedHits.push(entry.shared)
      return
    }
    const message = this.current!
    const subscriber = entry.subscriber
    if (entry.noLocal && subscriber.clientId === message.origin) return
    const n = this.hitCount
    // with one subscription this is the subscriber's only hit; with several, it may have one already
    if (subscriber.routedSubscriptions !== 1) {
      const index = this.merging.get(subscriber)
      if (index !== undefined) return this.mergeHit(index, entry)
      this.merging.set(subscriber, n)
    }
    this.hitSubs[n] = subscriber
    this.hitOptions[n] = entry
    this.hitCount = n + 1
  }

  /** A second matching subscription of the subscriber of hit `index`: a copy of its own (allow_duplicate_messages), or merged. */
  private mergeHit(index: number, entry: SubscriptionEntry): void {
    if (this.allowDuplicates && entry.subscriber.copyPerSubscription === true) {
      this.duplicates.push(entry)
      return
    }
    const seen = this.hitOptions[index]!
    const merged: Merged =
      "subscriber" in seen
        ? {
            qos: seen.qos,
            retainAsPublished: seen.retainAsPublished,
            ids: seen.subscriptionId !== undefined ? [seen.subscriptionId] : undefined
          }
        : seen
    if (entry.qos > merged.qos) merged.qos = entry.qos
    if (entry.retainAsPublished) merged.retainAsPublished = true
    if (entry.subscriptionId !== undefined) (merged.ids ??= []).push(entry.subscriptionId)
    this.hitOptions[index] = merged
  }

  /** messages routed since start, for $SYS */
  published = 0
  /** `upgrade_outgoing_qos`: deliver at the subscription's QoS rather than min(published, granted) */
  upgradeOutgoingQos = false
  /** `allow_duplicate_messages`: a client with several matching subscriptions gets a copy for each */
  allowDuplicates = false

  /** shared groups (one trie entry each) and their members, for $SYS */
  private sharedGroupCount = 0
  private sharedMemberCount = 0

  /** subscriptions other than shared ones, as Mosquitto's `$SYS/broker/subscriptions/count` */
  get subscriptionCount(): number {
    return this.trie.size - this.sharedGroupCount
  }

  /** members of shared groups, each counted (`$SYS/broker/shared_subscriptions/count`) */
  get sharedSubscriptionCount(): number {
    return this.sharedMemberCount
  }

  /** told of every subscription added or removed (the cluster announces filters to other nodes) */
  observer:
    | { added(subscriber: Subscriber, filter: string, options: SubscriptionOptions): void; removed(subscriber: Subscriber, filter: string): void }
    | undefined = undefined

  /** Add or replace the subscription of `subscriber` to `filter`. Returns true when it is new. */
  subscribe(subscriber: Subscriber, filter: string, options: SubscriptionOptions): boolean {
    const added = this.subscribeEntry(subscriber, filter, options)
    if (added) this.observer?.added(subscriber, filter, options)
    return added
  }

  private subscribeEntry(subscriber: Subscriber, filter: string, options: SubscriptionOptions): boolean {
    const shared = parseSharedFilter(filter)
    if (shared !== undefined) {
      const key = SHARE_PREFIX + shared.group
      let entry = this.trie.get(shared.filter, key) as SharedEntry | undefined
      if (entry === undefined) {
        entry = { shared: new SharedGroup(shared.group, shared.filter) }
        this.trie.add(shared.filter, key, entry)
        this.sharedGroupCount++
      }
      const member = entry.shared.members.find((m) => m.subscriber === subscriber)
      if (member !== undefined) {
        member.options = options
        return false
      }
      entry.shared.members.push({ subscriber, options })
      this.sharedMemberCount++
      return true
    }
    const previous = this.trie.add(filter, subscriber.clientId, { ...options, subscriber })
    if (previous === undefined) subscriber.routedSubscriptions++
    else if (previous.shared === undefined && previous.subscriber !== subscriber) {
      // the client id's entry was another subscriber object's (a session replaced under the same id): it is this one's now
      previous.subscriber.routedSubscriptions--
      subscriber.routedSubscriptions++
    }
    return previous === undefined
  }

  /** Returns true when a subscription existed. */
  unsubscribe(subscriber: Subscriber, filter: string): boolean {
    const removed = this.unsubscribeEntry(subscriber, filter)
    if (removed) this.observer?.removed(subscriber, filter)
    return removed
  }

  private unsubscribeEntry(subscriber: Subscriber, filter: string): boolean {
    const shared = parseSharedFilter(filter)
    if (shared !== undefined) {
      const key = SHARE_PREFIX + shared.group
      const entry = this.trie.get(shared.filter, key) as SharedEntry | undefined
      if (entry === undefined) return false
      if (!entry.shared.remove(subscriber)) return false
      this.sharedMemberCount--
      if (entry.shared.members.length === 0) {
        this.trie.remove(shared.filter, key)
        this.sharedGroupCount--
      }
      return true
    }
    const removed = this.trie.remove(filter, subscriber.clientId)
    if (removed === undefined) return false
    if (removed.shared === undefined) removed.subscriber.routedSubscriptions--
    return true
  }

  /** The live group of `$share/group/filter`, if anyone is subscribed (persistence restores deliveries to it). */
  sharedGroup(group: string, filter: string): SharedGroup | undefined {
    return (this.trie.get(filter, SHARE_PREFIX + group) as SharedEntry | undefined)?.shared
  }

  /** Hand a message of a shared group to one member (`except` excluded). Returns false when none is left. */
  deliverShared(group: SharedGroup, message: Message, except?: Subscriber, source?: PublishSource): boolean {
    const m = group.pick(except)
    if (m === undefined) return false
    const o = m.options
    const qos = (this.upgradeOutgoingQos || o.qos < message.qos ? o.qos : message.qos) as QoS
    const ids = o.subscriptionId !== undefined ? [o.subscriptionId] : undefined
    m.subscriber.deliver(message, qos, o.retainAsPublished ? message.retain : false, ids, source, group)
    return true
  }

  /**
   * Route one message to every matching subscriber; store it when retained.
   * Returns the number of subscribers it was handed to (v5: 0x10 when none).
   * `fromPeer`: a message another cluster node forwarded; that node has
   * already served the shared groups and stored it if retained.
   */
  publish(message: Message, source?: PublishSource, fromPeer = false): number {
    // A publish from inside a delivery (a log line on $SYS/broker/log/... about a subscriber, a will of a
    // connection closed meanwhile) would reuse the scratch state of the one under way: it waits until that
    // one is delivered to all, then goes in order. It cannot say how many it reached: 0.
    if (this.current !== undefined) {
      ;(this.pending ??= []).push({ message, source, fromPeer })
      return 0
    }
    const count = this.route(message, source, fromPeer)
    if (this.pending !== undefined) this.routePending()
    return count
  }

  private routePending(): void {
    const pending = this.pending!
    this.pending = undefined
    for (let i = 0; i < pending.length; i++) {
      const p = pending[i]
      this.route(p.message, p.source, p.fromPeer)
      // what those deliveries published in turn goes after the rest of this batch
      const more = this.pending as typeof pending | undefined
      if (more !== undefined) {
        pending.push(...more)
        this.pending = undefined
      }
    }
  }

  private route(message: Message, source: PublishSource | undefined, fromPeer: boolean): number {
    this.published++
    if (message.retain && !fromPeer) this.retained.set(message)
    this.current = message
    try {
      this.trie.match(message.topic, this.visit)
      let shared = 0
      const hits = this.sharedHits
      if (hits.length > 0 && !fromPeer) {
        for (let i = 0; i < hits.length; i++) if (this.deliverShared(hits[i], message, undefined, source)) shared++
        hits.length = 0
      }
      const n = this.hitCount
      if (n === 0) return shared
      // in the order of each subscriber's first matching subscription
      const subs = this.hitSubs
      const options = this.hitOptions
      for (let i = 0; i < n; i++) this.deliverHit(subs[i]!, options[i]!, message, source)
      const duplicates = this.duplicates
      for (let i = 0; i < duplicates.length; i++) this.deliverHit(duplicates[i].subscriber, duplicates[i], message, source)
      return n + shared
    } finally {
      const merging = this.merging
      if (merging.size !== 0) merging.clear()
      // the hits are not kept alive by the scratch arrays (a subscriber gone, a merged entry)
      const n = this.hitCount
      if (n !== 0) {
        const subs = this.hitSubs
        const options = this.hitOptions
        for (let i = 0; i < n; i++) {
          subs[i] = undefined
          options[i] = undefined
        }
        this.hitCount = 0
      }
      // (a store to an array's length is a runtime call in V8, ~27 ns even on an empty array: skipped in the usual
      // case, no shared subscription hit)
      if (this.sharedHits.length !== 0) this.sharedHits.length = 0
      if (this.duplicates.length !== 0) this.duplicates.length = 0
      this.current = undefined
    }
  }

  private deliverHit(subscriber: Subscriber, m: SubscriptionEntry | Merged, message: Message, source: PublishSource | undefined): void {
    const qos = (this.upgradeOutgoingQos || m.qos < message.qos ? m.qos : message.qos) as QoS
    const retain = m.retainAsPublished ? message.retain : false
    const ids = "subscriber" in m ? (m.subscriptionId !== undefined ? [m.subscriptionId] : undefined) : m.ids
    subscriber.deliver(message, qos, retain, ids, source)
  }
}
