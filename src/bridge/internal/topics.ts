/**
 * Bridge topic mapping, as Mosquitto's `bridge_topic.c` (`bridge__add_topic`,
 * `bridge__remap_topic_in`) and `send_publish.c` (outgoing remap) define it.
 *
 * `topic PATTERN DIRECTION QOS LOCAL_PREFIX REMOTE_PREFIX`: the local side
 * subscribes to LOCAL_PREFIX + PATTERN, the remote side to REMOTE_PREFIX +
 * PATTERN; a message crossing the bridge loses one prefix and gains the other.
 * A `""` pattern maps one topic to one topic (both prefixes required), a `""`
 * prefix is no prefix.
 *
 * Pure and synchronous; `matches` allocates nothing (the per-message path).
 */
import { codeUnitAt } from "../../runtime/codeUnit.js"
import type { QoS } from "../../session/Message.js"

export type BridgeDirection = "out" | "in" | "both"

export interface BridgeTopic {
  /** undefined for the `""` placeholder */
  readonly pattern: string | undefined
  readonly direction: BridgeDirection
  readonly qos: QoS
  readonly localPrefix: string | undefined
  readonly remotePrefix: string | undefined
  /** the filter subscribed on the local broker (out / both) */
  readonly localTopic: string
  /** the filter subscribed on the remote broker (in / both) */
  readonly remoteTopic: string
}

/** Mosquitto's `bridge__create_remap_topic`: prefix + pattern, or either alone. */
const join = (prefix: string | undefined, pattern: string | undefined): string =>
  prefix === undefined ? (pattern ?? "") : pattern === undefined ? prefix : prefix + pattern

export const makeTopic = (
  pattern: string | undefined,
  direction: BridgeDirection,
  qos: QoS,
  localPrefix: string | undefined,
  remotePrefix: string | undefined
): BridgeTopic => ({
  pattern,
  direction,
  qos,
  localPrefix,
  remotePrefix,
  localTopic: join(localPrefix, pattern),
  remoteTopic: join(remotePrefix, pattern)
})

const SLASH = 0x2f
const PLUS = 0x2b
const HASH = 0x23
const DOLLAR = 0x24

/**
 * Does topic name `topic` match filter `filter`? The MQTT rules [MQTT-4.7.1-2]
 * [MQTT-4.7.1-3], `$` topics not matched by a leading wildcard [MQTT-4.7.2-1].
 * Both are assumed valid. One pass over the two strings, no allocation.
 */
export const matches = (filter: string, topic: string): boolean => {
  const fl = filter.length
  const tl = topic.length
  if (tl > 0 && codeUnitAt(topic, 0) === DOLLAR && fl > 0) {
    const f0 = codeUnitAt(filter, 0)
    if (f0 === PLUS || f0 === HASH) return false
  }
  let f = 0
  let t = 0
  while (f < fl) {
    const c = codeUnitAt(filter, f)
    if (c === HASH) return true // `#` is last and matches the parent level too
    if (c === PLUS) {
      // one level: up to the next '/' of the topic
      while (t < tl && codeUnitAt(topic, t) !== SLASH) t++
      f++
    } else {
      if (t >= tl) {
        // the topic ended: only "/#" may follow in the filter (sport/# matches sport)
        return c === SLASH && f + 2 === fl && codeUnitAt(filter, f + 1) === HASH
      }
      if (c !== codeUnitAt(topic, t)) return false
      f++
      t++
    }
  }
  return t === tl
}

/**
 * The local topic of a message received from the remote broker: the first
 * in / both topic with a prefix whose remote filter matches loses the remote
 * prefix and gains the local one (`bridge__remap_topic_in`); other topics pass
 * unchanged.
 */
export const remapIncoming = (topics: ReadonlyArray<BridgeTopic>, topic: string): string => {
  for (let i = 0; i < topics.length; i++) {
    const t = topics[i]
    if (t.direction === "out" || (t.localPrefix === undefined && t.remotePrefix === undefined)) continue
    if (!matches(t.remoteTopic, topic)) continue
    let out = topic
    if (t.remotePrefix !== undefined && out.startsWith(t.remotePrefix)) out = out.slice(t.remotePrefix.length)
    if (t.localPrefix !== undefined) out = t.localPrefix + out
    return out
  }
  return topic
}

/** The remote topic of a local message (send_publish.c): the mirror of `remapIncoming` over out / both topics. */
export const remapOutgoing = (topics: ReadonlyArray<BridgeTopic>, topic: string): string => {
  for (let i = 0; i < topics.length; i++) {
    const t = topics[i]
    if (t.direction === "in" || (t.localPrefix === undefined && t.remotePrefix === undefined)) continue
    if (!matches(t.localTopic, topic)) continue
    let out = topic
    if (t.localPrefix !== undefined && out.startsWith(t.localPrefix)) out = out.slice(t.localPrefix.length)
    if (t.remotePrefix !== undefined) out = t.remotePrefix + out
    return out
  }
  return topic
}

/** Does any topic have a prefix (so that remapping can be skipped entirely when none does)? */
export const hasRemapping = (topics: ReadonlyArray<BridgeTopic>): boolean =>
  topics.some((t) => t.localPrefix !== undefined || t.remotePrefix !== undefined)
