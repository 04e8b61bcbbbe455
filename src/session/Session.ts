/**
 * A client session: what outlives a connection when the session is persistent
 * (clean session 0 / v5 Session Expiry Interval > 0) — subscriptions, the
 * outbound QoS flow with its queue, and inbound QoS 2 ids awaiting PUBREL.
 * Plain code; the connection currently attached (if any) is the wire.
 */
import type { PublishSource, SharedGroup, Subscriber, SubscriptionOptions } from "../routing/Router.js"
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

const offlineSink: OutboundSink = {
  publish: () => {},
  pubrel: () => {}
}

export class Session implements Subscriber {
  wire: SessionWire | undefined = undefined
  readonly flow: OutboundFlow
  // allocated on first use: an idle client that never subscribes nor publishes at QoS 2 has
  // neither (an empty Map or Set is ~150-175 bytes, on every connection)
  private inboundQos2: InboundQos2 | undefined = undefined
  private subscriptionMap: Map<string, SubscriptionOptions> | undefined = undefined
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
  /** where messages dropped by the queue limits are counted ($SYS/broker/publish/messages/dropped) */
  stats: { publishDropped: number } | undefined = undefined

  constructor(
    readonly clientId: string,
    limits: FlowLimits
  ) {
    this.flow = new OutboundFlow(limits)
  }

  /** inbound QoS 2 packet ids awaiting PUBREL */
  get qos2(): InboundQos2 {
    return (this.inboundQos2 ??= new InboundQos2())
  }

  /** filter → options; reading it allocates the Map: see `hasSubscriptions` */
  get subscriptions(): Map<string, SubscriptionOptions> {
    return (this.subscriptionMap ??= new Map())
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
      flow.offer(delivery(message, qos, retain, subscriptionIds, shared), wire !== undefined, wire ?? offlineSink)
      if (flow.overflowed !== overflowed && this.stats !== undefined) this.stats.publishDropped++
    }
    if (wire !== undefined) wire.checkCongestion(source)
  }

  /** A session ends with its connection when its expiry interval is 0. */
  get endsWithConnection(): boolean {
    return this.expiryInterval === 0
  }
}
