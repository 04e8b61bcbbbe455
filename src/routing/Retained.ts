/**
 * Retained messages: one per topic, replaced by a newer retained PUBLISH and
 * cleared by one with an empty payload [MQTT-3.3.1-6], [MQTT-3.3.1-10].
 * Sent to new subscriptions whose filter matches [MQTT-3.3.1-9].
 */
import { matchTopic } from "../protocol/topic.js"
import type { Message } from "../session/Message.js"

export class RetainedStore {
  private readonly byTopic = new Map<string, Message>()

  get size(): number {
    return this.byTopic.size
  }

  /** Store, replace or (empty payload) clear the retained message of `message.topic`. */
  /** persistence: told of every change (an empty payload clears) */
  onChange: ((message: Message) => void) | undefined = undefined

  set(message: Message): void {
    if (message.payload.length === 0) this.byTopic.delete(message.topic)
    else this.byTopic.set(message.topic, message)
    this.onChange?.(message)
  }

  private expire(m: Message): void {
    this.byTopic.delete(m.topic)
    this.onChange?.(m.cleared())
  }

  get(topic: string): Message | undefined {
    return this.byTopic.get(topic)
  }

  /**
   * Every retained message whose topic matches `filter`, the `$` rule included.
   * Messages whose v5 Message Expiry Interval has passed at `now` are removed,
   * not visited [MQTT-3.3.2-5].
   */
  match(filter: string, visit: (message: Message) => void, now?: number): void {
    if (filter.indexOf("+") === -1 && filter.indexOf("#") === -1) {
      const m = this.byTopic.get(filter)
      if (m === undefined) return
      if (now !== undefined && m.expired(now)) this.expire(m)
      else visit(m)
      return
    }
    for (const m of this.byTopic.values()) {
      if (!matchTopic(filter, m.topic)) continue
      if (now !== undefined && m.expired(now)) this.expire(m)
      else visit(m)
    }
  }

  /**
   * Remove every message whose Message Expiry Interval has passed at `now` (`retain_expiry_interval`,
   * as Mosquitto 2.1's retain__expire): without a sweep an expired message is only removed when a
   * subscription's match meets it. Returns how many went.
   */
  sweepExpired(now: number): number {
    let removed = 0
    for (const m of this.byTopic.values()) {
      if (m.expired(now)) {
        this.expire(m)
        removed++
      }
    }
    return removed
  }

  values(): IterableIterator<Message> {
    return this.byTopic.values()
  }

  clear(): void {
    this.byTopic.clear()
  }
}
