/**
 * A client session: what outlives a connection when the session is persistent
 * (clean session 0 / v5 Session Expiry Interval > 0) — subscriptions, the
 * outbound QoS flow with its queue, and inbound QoS 2 ids awaiting PUBREL.
 * Plain code; the connection currently attached (if any) is the wire.
 */
import type { PublishSource, SharedGroup, Subscriber, SubscriptionOptions } from "../routing/Router.js"
import type { ClientAcl } from "../security/Auth.js"
import type { Message, QoS } from "./Message.js"
import { InboundQos2, OutboundFlow, type FlowLimits, type OutboundSink } from "./OutboundFlow.js"

/** What a session needs of the connection it is attached to. */
export interface SessionWire extends OutboundSink {
  readonly protocolVersion: 3 | 4 | 5
  /** send a QoS 0 PUBLISH straight away (the fan-out fast path) */
  publishQos0(message: Message, retain: boolean, subscriptionIds: ReadonlyArray<number> | undefined): void
  /** after a delivery: hold `source` up if this connection is congested */
  checkCongestion(source: PublishSource): void
}

const offlineSink: OutboundSink = {
  publish: () => {},
  pubrel: () => {}
}

export class Session implements Subscriber {
  wire: SessionWire | undefined = undefined
  readonly flow: OutboundFlow
  readonly qos2 = new InboundQos2()
  readonly subscriptions = new Map<string, SubscriptionOptions>()
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

  constructor(
    readonly clientId: string,
    limits: FlowLimits
  ) {
    this.flow = new OutboundFlow(limits)
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
      this.flow.offer({ message, qos, retain, subscriptionIds, shared }, wire !== undefined, wire ?? offlineSink)
    }
    if (wire !== undefined && source !== undefined) wire.checkCongestion(source)
  }

  /** A session ends with its connection when its expiry interval is 0. */
  get endsWithConnection(): boolean {
    return this.expiryInterval === 0
  }
}
