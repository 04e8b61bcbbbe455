/**
 * A client session: what outlives a connection when the session is persistent
 * (clean session 0 / v5 Session Expiry Interval > 0) — subscriptions, the
 * outbound QoS flow with its queue, and inbound QoS 2 ids awaiting PUBREL.
 * Plain code; the connection currently attached (if any) is the wire.
 */
import type { PublishSource, SharedGroup, Subscriber, SubscriptionOptions } from "../routing/Router.js"
import { settleFields } from "../runtime/fieldShape.js"
import type { ClientAcl } from "../security/Auth.js"
import type { Message, QoS } from "./Message.js"
import { delivery, InboundQos2, OutboundFlow, type FlowLimits, type OutboundSink } from "./OutboundFlow.js"

/** What a session needs of the connection it is attached to. */
export interface SessionWire extends OutboundSink {
  readonly protocolVersion: 3 | 4 | 5
  /** send a QoS 0 PUBLISH straight away (the fan-out fast path) */
  publishQos0(message: Message, retain: boolean, subscriptionIds: ReadonlyArray<number> | undefined): void
  /** after a delivery: hold `source` (if any) up while this connection is congested */
  checkCongestion(source: PublishSource | undefined): void
}

const noSubscriptions: ReadonlyMap<string, SubscriptionOptions> = new Map()

/**
 * A session's filter → options: a `Map` that holds its first entry in two fields and allocates a
 * real `Map` from the second entry on. Most sessions have one subscription, and a one-entry `Map`
 * costs ~180 bytes (measured: 217 B per `Map` with one entry against ~45 B for this object).
 * Iterating a one-entry table iterates a copy (cold paths only: session end, persistence, cluster).
 */
export class SubscriptionTable implements Map<string, SubscriptionOptions> {
  private oneKey: string | undefined = undefined
  private oneValue: SubscriptionOptions | undefined = undefined
  private map: Map<string, SubscriptionOptions> | undefined = undefined

  get size(): number {
    return this.map !== undefined ? this.map.size : this.oneKey !== undefined ? 1 : 0
  }

  get(key: string): SubscriptionOptions | undefined {
    if (this.map !== undefined) return this.map.get(key)
    return key === this.oneKey ? this.oneValue : undefined
  }

  has(key: string): boolean {
    return this.map !== undefined ? this.map.has(key) : key === this.oneKey
  }

  set(key: string, value: SubscriptionOptions): this {
    if (this.map !== undefined) this.map.set(key, value)
    else if (this.oneKey === undefined || this.oneKey === key) {
      this.oneKey = key
      this.oneValue = value
    } else {
      this.map = new Map([
        [this.oneKey, this.oneValue!],
        [key, value]
      ])
      this.oneKey = undefined
      this.oneValue = undefined
    }
    return this
  }

  delete(key: string): boolean {
    if (this.map !== undefined) return this.map.delete(key)
    if (this.oneKey === undefined || key !== this.oneKey) return false
    this.oneKey = undefined
    this.oneValue = undefined
    return true
  }

  clear(): void {
    this.map = undefined
    this.oneKey = undefined
    this.oneValue = undefined
  }

  forEach(callback: (value: SubscriptionOptions, key: string, map: Map<string, SubscriptionOptions>) => void, thisArg?: unknown): void {
    for (const [key, value] of this.view()) callback.call(thisArg, value, key, this)
  }

  entries(): MapIterator<[string, SubscriptionOptions]> {
    return this.view().entries()
  }

  keys(): MapIterator<string> {
    return this.view().keys()
  }

  values(): MapIterator<SubscriptionOptions> {
    return this.view().values()
  }

  [Symbol.iterator](): MapIterator<[string, SubscriptionOptions]> {
    return this.view().entries()
  }

  get [Symbol.toStringTag](): string {
    return "SubscriptionTable"
  }

  private view(): ReadonlyMap<string, SubscriptionOptions> {
    if (this.map !== undefined) return this.map
    return this.oneKey === undefined ? noSubscriptions : new Map([[this.oneKey, this.oneValue!]])
  }
}

const offlineSink: OutboundSink = {
  publish: () => {},
  pubrel: () => {}
}

/** the first session has had its late-changing fields settled (runtime/fieldShape.ts) */
let settled = false

export class Session implements Subscriber {
  /** on the prototype, not in every session: a client gets a copy per matching subscription under `allow_duplicate_messages` */
  get copyPerSubscription(): boolean {
    return true
  }
  wire: SessionWire | undefined = undefined
  /** the router's count of this subscriber's subscriptions (Router: `Subscriber.routedSubscriptions`) */
  routedSubscriptions = 0
  readonly flow: OutboundFlow
  // allocated on first use: an idle client that never subscribes nor publishes at QoS 2 has
  // neither (an empty Map or Set is ~150-175 bytes, on every connection); see SubscriptionTable
  private inboundQos2: InboundQos2 | undefined = undefined
  private subscriptionMap: SubscriptionTable | undefined = undefined
  /** seconds the session outlives its connection: 0 = ends with it; 0xFFFFFFFF = never expires */
  expiryInterval = 0
  /** Clock time (ms) the session went offline, for expiry */
  disconnectedAt = 0
  /**
   * v5 Will Delay Interval: the will of the last connection, waiting to be
   * published at `at` (Clock ms) or when the session ends, whichever is first;
   * dropped if the client reconnects in time [MQTT-3.1.3-9].
   */
  pendingWill: { readonly message: Message; readonly at: number } | undefined = undefined
  /** the client's access rules (acl_file, Authorization service); undefined: all allowed */
  acl: ClientAcl | undefined = undefined
  /** where messages dropped by the queue limits are counted ($SYS/broker/publish/messages/dropped); set by `Core.newSession` */
  stats: { publishDropped: number } | undefined = undefined
  /** the broker's log: "Outgoing messages are being dropped" once per episode of drops, as Mosquitto */
  log: { notice(message: string): void } | undefined = undefined
  /** the queue limits are dropping this client's messages (since the last one queued) */
  dropping = false

  constructor(
    readonly clientId: string,
    limits: FlowLimits
  ) {
    this.flow = new OutboundFlow(limits)
    if (!settled) {
      settled = true
      // changed when the connection ends; `disconnectedAt` is a clock time (a double)
      settleFields(this, ["wire", "pendingWill", "dropping"], ["disconnectedAt"])
    }
  }

  /** inbound QoS 2 packet ids awaiting PUBREL */
  get qos2(): InboundQos2 {
    return (this.inboundQos2 ??= new InboundQos2())
  }

  /** filter → options; reading it allocates the Map: see `hasSubscriptions` */
  get subscriptions(): Map<string, SubscriptionOptions> {
    return (this.subscriptionMap ??= new SubscriptionTable())
  }

  get hasSubscriptions(): boolean {
    return this.subscriptionMap !== undefined && this.subscriptionMap.size > 0
  }

  online(): boolean {
    return this.wire !== undefined
  }

  deliver(
    message: Message,
    qos: QoS,
    retain: boolean,
    subscriptionIds: ReadonlyArray<number> | undefined,
    source: PublishSource | undefined,
    shared?: SharedGroup
  ): void {
    // a denied read never delivers, retained messages included
    if (this.acl !== undefined && !this.acl.canReceive(message.topic)) return
    const wire = this.wire
    if (wire !== undefined && qos === 0) {
      wire.publishQos0(message, retain, subscriptionIds)
    } else {
      const flow = this.flow
      const overflowed = flow.overflowed
      const outcome = flow.offer(delivery(message, qos, retain, subscriptionIds, shared), wire !== undefined, wire ?? offlineSink)
      if (flow.overflowed !== overflowed) {
        if (this.stats !== undefined) this.stats.publishDropped++
        // db__message_insert's line, once until a message is queued again; offline clients included
        if (!this.dropping) {
          this.dropping = true
          this.log?.notice(`Outgoing messages are being dropped for client ${this.clientId}.`)
        }
      } else if (outcome !== "dropped") {
        this.dropping = false
      }
    }
    if (wire !== undefined) wire.checkCongestion(source)
  }

  /** A session ends with its connection when its expiry interval is 0. */
  get endsWithConnection(): boolean {
    return this.expiryInterval === 0
  }
}
