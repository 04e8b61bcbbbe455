/**
 * The router: the single owner of the subscription index. A PUBLISH is matched
 * once against the trie and handed to every subscriber synchronously; a
 * subscriber with several matching subscriptions receives one copy at the
 * highest granted QoS (the MQTT 3.1.1 rule [MQTT-3.3.5-1]), carrying every
 * matching v5 subscription identifier.
 */
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
    source: PublishSource | undefined
  ): void
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
}

/** per-subscriber merge of several matching subscriptions */
interface Merged {
  qos: QoS
  retainAsPublished: boolean
  ids: Array<number> | undefined
}

export class Router {
  readonly retained = new RetainedStore()
  private readonly trie = new TopicTrie<SubscriptionEntry>()
  // scratch space reused by every publish (the router is synchronous)
  private readonly scratch = new Map<Subscriber, SubscriptionEntry | Merged>()
  private current: Message | undefined
  private readonly visit = (_key: string, entry: SubscriptionEntry): void => {
    const message = this.current!
    if (entry.noLocal && entry.subscriber.clientId === message.origin) return
    const seen = this.scratch.get(entry.subscriber)
    if (seen === undefined) {
      this.scratch.set(entry.subscriber, entry)
      return
    }
    // a second matching subscription of the same subscriber: merge
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
    this.scratch.set(entry.subscriber, merged)
  }

  /** messages routed since start, for $SYS */
  published = 0
  /** `upgrade_outgoing_qos`: deliver at the subscription's QoS rather than min(published, granted) */
  upgradeOutgoingQos = false

  get subscriptionCount(): number {
    return this.trie.size
  }

  /** Add or replace the subscription of `subscriber` to `filter`. Returns true when it is new. */
  subscribe(subscriber: Subscriber, filter: string, options: SubscriptionOptions): boolean {
    const previous = this.trie.add(filter, subscriber.clientId, { ...options, subscriber })
    return previous === undefined
  }

  /** Returns true when a subscription existed. */
  unsubscribe(subscriber: Subscriber, filter: string): boolean {
    return this.trie.remove(filter, subscriber.clientId) !== undefined
  }

  /**
   * Route one message to every matching subscriber; store it when retained.
   * Returns the number of subscribers it was handed to (v5: 0x10 when none).
   */
  publish(message: Message, source?: PublishSource): number {
    this.published++
    if (message.retain) this.retained.set(message)
    this.current = message
    const scratch = this.scratch
    try {
      this.trie.match(message.topic, this.visit)
      if (scratch.size === 0) return 0
      const count = scratch.size
      for (const [subscriber, m] of scratch) {
        const qos = (this.upgradeOutgoingQos || m.qos < message.qos ? m.qos : message.qos) as QoS
        const retain = m.retainAsPublished ? message.retain : false
        const ids =
          "subscriber" in m ? (m.subscriptionId !== undefined ? [m.subscriptionId] : undefined) : m.ids
        subscriber.deliver(message, qos, retain, ids, source)
      }
      return count
    } finally {
      scratch.clear()
      this.current = undefined
    }
  }
}
