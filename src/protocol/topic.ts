/**
 * Topic names and topic filters: validation, `$share/` parsing and the
 * reference matcher (MQTT 3.1.1 section 4.7, MQTT 5.0 sections 4.7 and 4.8.2).
 *
 * Pure and synchronous. The validators make one pass over the UTF-16 code
 * units and allocate nothing; `matchTopic` is the simple oracle that the
 * subscription trie is tested against, fine for cold paths.
 */
import { codeUnitAt } from "../runtime/codeUnit.js"

const NUL = 0x00
const HASH = 0x23 // '#'
const DOLLAR = 0x24 // '$'
const PLUS = 0x2b // '+'
const SLASH = 0x2f // '/'

/** Largest UTF-8 encoded length of a topic (a two-byte length prefix). */
export const MAX_TOPIC_BYTES = 65535

/** Prefix that marks a shared subscription [MQTT-4.8.2-1]. */
export const SHARE_PREFIX = "$share/"

/**
 * True when `s` encodes to at most 65535 UTF-8 bytes. A UTF-16 code unit
 * never takes more than 3 bytes, so short strings skip the byte count.
 */
const fitsUtf8 = (s: string): boolean =>
  s.length <= 21845 || (s.length <= MAX_TOPIC_BYTES && Buffer.byteLength(s, "utf8") <= MAX_TOPIC_BYTES)

/**
 * Checks the character at `i` (code unit `c`): no U+0000 [MQTT-1.5.4-2]
 * (3.1.1: [MQTT-1.5.3-2]) and no unpaired surrogate, which has no UTF-8
 * encoding [MQTT-1.5.4-1] (3.1.1: [MQTT-1.5.3-1]). Returns the index of the
 * last code unit consumed (a surrogate pair takes two), or -1 if invalid.
 */
const checkChar = (s: string, i: number, c: number): number => {
  if (c === NUL) return -1
  if ((c & 0xfc00) === 0xd800) return (codeUnitAt(s, i + 1) & 0xfc00) === 0xdc00 ? i + 1 : -1
  if ((c & 0xfc00) === 0xdc00) return -1
  return i
}

/**
 * A topic name as carried by PUBLISH (and Will topics): at least one
 * character [MQTT-4.7.3-1], no wildcard characters [MQTT-3.3.2-2]
 * [MQTT-4.7.1-1], no U+0000 nor unpaired surrogate, at most 65535 UTF-8
 * bytes.
 */
export const validateTopicName = (topic: string): boolean => {
  const len = topic.length
  if (len === 0) return false
  for (let i = 0; i < len; i++) {
    const c = codeUnitAt(topic, i)
    if (c === PLUS || c === HASH || (i = checkChar(topic, i, c)) < 0) return false
  }
  return fitsUtf8(topic)
}

/**
 * A topic filter as carried by SUBSCRIBE / UNSUBSCRIBE: at least one
 * character [MQTT-4.7.3-1]; `#` only alone in the last level
 * [MQTT-4.7.1-2]; `+` only alone in its level [MQTT-4.7.1-3]; no U+0000
 * nor unpaired surrogate, at most 65535 UTF-8 bytes. Empty levels are legal.
 */
export const validateTopicFilter = (filter: string): boolean => {
  const len = filter.length
  if (len === 0) return false
  for (let i = 0; i < len; i++) {
    const c = codeUnitAt(filter, i)
    if (c === PLUS) {
      if (i > 0 && codeUnitAt(filter, i - 1) !== SLASH) return false
      if (i + 1 < len && codeUnitAt(filter, i + 1) !== SLASH) return false
    } else if (c === HASH) {
      if (i !== len - 1) return false
      if (i > 0 && codeUnitAt(filter, i - 1) !== SLASH) return false
    } else if ((i = checkChar(filter, i, c)) < 0) return false
  }
  return fitsUtf8(filter)
}

/** A well-formed `$share/{ShareName}/{filter}` topic filter, taken apart. */
export interface SharedFilter {
  readonly group: string
  readonly filter: string
}

/**
 * True when `filter` claims to be a shared subscription (starts with
 * `$share/`) [MQTT-4.8.2-1]. Such a filter either parses with
 * `parseSharedFilter` or must be rejected; it is never an ordinary filter.
 * (A bare `$share` level with no `/` is an ordinary literal filter.)
 * Only meaningful for MQTT 5; a 3.1.1 session may treat it literally.
 */
export const isSharedFilterSyntax = (filter: string): boolean => filter.startsWith(SHARE_PREFIX)

/**
 * Parses `$share/{ShareName}/{filter}`: ShareName at least one character
 * [MQTT-4.8.2-1], without `/`, `+` or `#`, followed by `/` and a valid topic
 * filter [MQTT-4.8.2-2]. Returns undefined for anything else, including
 * filters that are not shared at all (check `isSharedFilterSyntax` first to
 * tell "malformed shared" from "ordinary").
 */
export const parseSharedFilter = (filter: string): SharedFilter | undefined => {
  if (!filter.startsWith(SHARE_PREFIX)) return undefined
  const slash = filter.indexOf("/", SHARE_PREFIX.length)
  if (slash < 0) return undefined // no "/" after the ShareName
  const group = filter.slice(SHARE_PREFIX.length, slash)
  const inner = filter.slice(slash + 1)
  // validateTopicName: non-empty, no wildcards, encodable
  if (!validateTopicName(group) || !validateTopicFilter(inner) || !fitsUtf8(filter)) return undefined
  return { group, filter: inner }
}

/**
 * Reference matcher: split both on `/` and walk the levels. `+` matches
 * exactly one level (possibly empty), `#` matches the parent level and any
 * number of child levels (`sport/#` matches `sport`) [MQTT-4.7.1-2]. A
 * filter starting with a wildcard does not match a topic starting with `$`
 * [MQTT-4.7.2-1]. Matching is case-sensitive and exact [MQTT-4.7.3-4].
 * Allocates; the router uses `TopicTrie`.
 */
export const matchTopic = (filter: string, topic: string): boolean => {
  const f = filter.split("/")
  const t = topic.split("/")
  if (topic.charCodeAt(0) === DOLLAR && (f[0] === "+" || f[0] === "#")) return false
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true
    if (i >= t.length) return false
    if (f[i] !== "+" && f[i] !== t[i]) return false
  }
  return f.length === t.length
}
