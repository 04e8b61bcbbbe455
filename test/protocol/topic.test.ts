import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import {
  isSharedFilterSyntax,
  matchTopic,
  parseSharedFilter,
  validateTopicFilter,
  validateTopicName
} from "../../src/protocol/topic.js"

// ---------------------------------------------------------------------------
// Spec-derived references, written differently from the implementation
// (split, regexes, a Buffer round trip) so that they fail differently.

/** No unpaired surrogates: the string has a UTF-8 encoding [MQTT-1.5.4-1]. */
const wellFormed = (s: string) => Buffer.from(s, "utf8").toString("utf8") === s
const fits = (s: string) => Buffer.byteLength(s, "utf8") <= 65535
const encodable = (s: string) => s.length > 0 && !s.includes("\u0000") && wellFormed(s) && fits(s)

const refTopicName = (s: string) => encodable(s) && !/[+#]/.test(s)

const refTopicFilter = (s: string) => {
  if (!encodable(s)) return false
  const levels = s.split("/")
  return levels.every(
    (level, i) =>
      (!level.includes("#") || (level === "#" && i === levels.length - 1)) && (!level.includes("+") || level === "+")
  )
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** Filter → regular expression; the `$` rule applied on the side. */
const refMatch = (filter: string, topic: string) => {
  if (topic.startsWith("$") && (filter.startsWith("+") || filter.startsWith("#"))) return false
  const levels = filter.split("/")
  const multi = levels[levels.length - 1] === "#"
  const parts = (multi ? levels.slice(0, -1) : levels).map((l) => (l === "+" ? "[^/]*" : escapeRegExp(l)))
  const source = multi ? (parts.length === 0 ? ".*" : `${parts.join("/")}(/.*)?`) : parts.join("/")
  return new RegExp(`^${source}$`, "s").test(topic)
}

// ---------------------------------------------------------------------------
// Arbitraries: small alphabets so that the interesting cases collide.

const chars = ["a", "b", "/", "+", "#", "$", " ", "\u0000", "é", "😀", "\ud800", "\udc00"]
const anyString = fc.array(fc.constantFrom(...chars), { maxLength: 12 }).map((cs) => cs.join(""))

const topicLevel = fc.constantFrom("", "a", "b", "$SYS", "$x")
const topicArb = fc
  .array(topicLevel, { minLength: 1, maxLength: 5 })
  .map((ls) => ls.join("/"))
  .filter((t) => t.length > 0)
const filterArb = fc
  .tuple(fc.array(fc.constantFrom("", "a", "b", "$SYS", "$x", "+"), { maxLength: 4 }), fc.boolean())
  .map(([ls, multi]) => (multi ? [...ls, "#"] : ls).join("/"))
  .filter((f) => f.length > 0)

const seed = { fastCheck: { seed: 20240501, numRuns: 2000 } }

// ---------------------------------------------------------------------------

describe("validateTopicName", () => {
  it("accepts ordinary names, empty levels and $ topics", () => {
    const names = [
      "sport/tennis/player1", "/", "a//b", "/finance", "sport/", "$SYS/broker/uptime", "Accounts payable", "é/😀"
    ]
    for (const t of names) {
      expect(validateTopicName(t), t).toBe(true)
    }
  })

  it("rejects the empty string [MQTT-4.7.3-1]", () => {
    expect(validateTopicName("")).toBe(false)
  })

  it("rejects wildcards in a topic name [MQTT-3.3.2-2] [MQTT-4.7.1-1]", () => {
    for (const t of ["+", "#", "sport/+", "sport/#", "sport+", "a#b"]) expect(validateTopicName(t), t).toBe(false)
  })

  it("rejects U+0000 [MQTT-1.5.4-2] and unpaired surrogates [MQTT-1.5.4-1]", () => {
    expect(validateTopicName("a\u0000b")).toBe(false)
    expect(validateTopicName("a\ud800")).toBe(false)
    expect(validateTopicName("\udc00a")).toBe(false)
    expect(validateTopicName("\ud83d\ude00")).toBe(true)
  })

  it("limits the UTF-8 length to 65535 bytes, not the UTF-16 length", () => {
    expect(validateTopicName("a".repeat(65535))).toBe(true)
    expect(validateTopicName("a".repeat(65536))).toBe(false)
    // é is 2 bytes: 32767 * 2 + 1 = 65535
    expect(validateTopicName("é".repeat(32767) + "a")).toBe(true)
    expect(validateTopicName("é".repeat(32767) + "ab")).toBe(false)
    // € is 3 bytes: 21845 * 3 = 65535, the most that skips the byte count
    expect(validateTopicName("€".repeat(21845))).toBe(true)
    expect(validateTopicName("€".repeat(21845) + "a")).toBe(false)
    expect(validateTopicName("€".repeat(21846))).toBe(false)
    // 😀 is 4 bytes for 2 UTF-16 units: 16383 * 4 + 3 = 65535
    expect(validateTopicName("😀".repeat(16383) + "abc")).toBe(true)
    expect(validateTopicName("😀".repeat(16384))).toBe(false)
  })

  it.prop("agrees with the spec-derived reference", [anyString], ([s]) => {
    expect(validateTopicName(s)).toBe(refTopicName(s))
  }, seed)
})

describe("validateTopicFilter", () => {
  it("accepts the spec examples (4.7.1)", () => {
    const filters = [
      "sport/tennis/player1/#", "sport/#", "#", "sport/tennis/#", "+", "+/tennis/#", "sport/+/player1",
      "+/+", "/+", "a//b", "/", "$SYS/#"
    ]
    for (const f of filters) {
      expect(validateTopicFilter(f), f).toBe(true)
    }
  })

  it("`#` only alone in the last level [MQTT-4.7.1-2]", () => {
    for (const f of ["sport/tennis#", "sport/#/ranking", "#/", "##", "a/#b", "a/b#"]) {
      expect(validateTopicFilter(f), f).toBe(false)
    }
  })

  it("`+` only alone in its level [MQTT-4.7.1-3]", () => {
    for (const f of ["sport+", "+sport", "a/+b/c", "a/b+/c", "++", "+#"]) expect(validateTopicFilter(f), f).toBe(false)
  })

  it("rejects empty, U+0000, unpaired surrogates, over 65535 bytes", () => {
    expect(validateTopicFilter("")).toBe(false)
    expect(validateTopicFilter("a/\u0000")).toBe(false)
    expect(validateTopicFilter("+/\ud800")).toBe(false)
    expect(validateTopicFilter("é".repeat(32766) + "a/#")).toBe(true) // 65532 + 3
    expect(validateTopicFilter("é".repeat(32767) + "/#")).toBe(false) // 65534 + 2
  })

  it.prop("agrees with the spec-derived reference", [anyString], ([s]) => {
    expect(validateTopicFilter(s)).toBe(refTopicFilter(s))
  }, seed)

  it.prop("every valid topic name is a valid filter", [anyString], ([s]) => {
    if (validateTopicName(s)) expect(validateTopicFilter(s)).toBe(true)
  }, seed)
})

describe("shared subscriptions", () => {
  it("parses $share/{ShareName}/{filter} [MQTT-4.8.2-1] [MQTT-4.8.2-2]", () => {
    expect(parseSharedFilter("$share/g/a/b")).toEqual({ group: "g", filter: "a/b" })
    expect(parseSharedFilter("$share/consumers/sport/#")).toEqual({ group: "consumers", filter: "sport/#" })
    expect(parseSharedFilter("$share/g/#")).toEqual({ group: "g", filter: "#" })
    expect(parseSharedFilter("$share/g/+")).toEqual({ group: "g", filter: "+" })
    expect(parseSharedFilter("$share/g//")).toEqual({ group: "g", filter: "/" })
    expect(parseSharedFilter("$share/$g/$SYS/#")).toEqual({ group: "$g", filter: "$SYS/#" })
  })

  it("rejects a malformed shared filter, which still counts as shared syntax", () => {
    for (const f of [
      "$share/", // no ShareName
      "$share//a", // empty ShareName [MQTT-4.8.2-1]
      "$share/g", // no "/" after the ShareName [MQTT-4.8.2-2]
      "$share/g/", // no filter after it
      "$share/g+/a", // wildcard in the ShareName [MQTT-4.8.2-2]
      "$share/g#/a",
      "$share/+/a",
      "$share/#/a",
      "$share/g/a#", // invalid filter
      "$share/g/sport/#/x",
      "$share/g\u0000/a"
    ]) {
      expect(isSharedFilterSyntax(f), f).toBe(true)
      expect(parseSharedFilter(f), f).toBeUndefined()
    }
  })

  it("limits the whole shared filter to 65535 UTF-8 bytes", () => {
    const group = "g".repeat(30000)
    expect(parseSharedFilter(`$share/${group}/${"a".repeat(35527)}`)).toEqual({ group, filter: "a".repeat(35527) })
    expect(parseSharedFilter(`$share/${group}/${"a".repeat(35528)}`)).toBeUndefined()
  })

  it("ordinary filters are not shared syntax", () => {
    for (const f of ["$share", "$sharex/g/a", "$SHARE/g/a", "a/$share/g/b", "share/g/a", "#", "+/g/a"]) {
      expect(isSharedFilterSyntax(f), f).toBe(false)
      expect(parseSharedFilter(f), f).toBeUndefined()
    }
  })

  it.prop(
    "round trips a valid ShareName and filter",
    [fc.array(fc.constantFrom("a", "b", "$", " ", "é"), { minLength: 1, maxLength: 5 }).map((cs) => cs.join("")),
      filterArb],
    ([group, filter]) => {
      expect(parseSharedFilter(`$share/${group}/${filter}`)).toEqual({ group, filter })
    },
    seed
  )

  it.prop("parses exactly the strings the reference accepts", [anyString], ([s]) => {
    const full = "$share/" + s
    const slash = s.indexOf("/")
    const ref = slash > 0 && refTopicName(s.slice(0, slash)) && refTopicFilter(s.slice(slash + 1))
    const parsed = parseSharedFilter(full)
    expect(parsed !== undefined).toBe(ref)
    if (parsed) expect(`$share/${parsed.group}/${parsed.filter}`).toBe(full)
  }, seed)
})

describe("matchTopic", () => {
  const cases: Array<[filter: string, topic: string, matches: boolean]> = [
    // 4.7.1.2 multi-level wildcard
    ["sport/tennis/player1/#", "sport/tennis/player1", true],
    ["sport/tennis/player1/#", "sport/tennis/player1/ranking", true],
    ["sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true],
    ["sport/#", "sport", true], // [MQTT-4.7.1-2] the parent level
    ["sport/tennis/#", "sport/tennis", true],
    ["sport/tennis/#", "sport/tennisx", false],
    ["#", "sport/tennis/player1", true],
    ["#", "/", true],
    // 4.7.1.3 single-level wildcard
    ["sport/tennis/+", "sport/tennis/player1", true],
    ["sport/tennis/+", "sport/tennis/player2", true],
    ["sport/tennis/+", "sport/tennis/player1/ranking", false],
    ["sport/+", "sport", false],
    ["sport/+", "sport/", true],
    ["+/+", "/finance", true],
    ["/+", "/finance", true],
    ["+", "/finance", false],
    ["+/tennis/#", "sport/tennis/player1", true],
    ["+/tennis/#", "sport/tennis", true],
    ["sport/+/player1", "sport/tennis/player1", true],
    ["sport/+/player1", "sport//player1", true],
    // 4.7.2 topics beginning with $ [MQTT-4.7.2-1]
    ["#", "$SYS/x", false],
    ["#", "$SYS", false],
    ["+", "$SYS", false],
    ["+/monitor/Clients", "$SYS/monitor/Clients", false],
    ["$SYS/#", "$SYS/x", true],
    ["$SYS/#", "$SYS", true],
    ["$SYS/monitor/+", "$SYS/monitor/Clients", true],
    ["$SYS/+/Clients", "$SYS/monitor/Clients", true],
    ["$foo", "$foo", true],
    ["a/+", "a/$b", true], // only the first level is special
    ["a/#", "a/$b/c", true],
    // 4.7.3 case-sensitive, no normalisation, empty levels are levels
    ["ACCOUNTS", "Accounts", false],
    ["Accounts payable", "Accounts payable", true],
    ["a/b", "a/b/", false],
    ["a//b", "a/b", false],
    ["a//b", "a//b", true],
    ["/a", "a", false],
    ["a/", "a", false]
  ]

  it.each(cases)("%s vs %s -> %s", (filter, topic, expected) => {
    expect(matchTopic(filter, topic)).toBe(expected)
    expect(refMatch(filter, topic)).toBe(expected) // the test reference agrees with the spec too
  })

  it.prop("agrees with a regex translation of the filter", [filterArb, topicArb], ([filter, topic]) => {
    expect(matchTopic(filter, topic)).toBe(refMatch(filter, topic))
  }, seed)

  it.prop("a valid topic name matches itself as a filter", [topicArb], ([topic]) => {
    expect(matchTopic(topic, topic)).toBe(true)
  }, seed)
})
