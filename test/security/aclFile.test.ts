/**
 * acl_file: parsing as Mosquitto 2.0's aclfile__parse, and the checks of
 * mosquitto_acl_check_default / acl__check_dollar, against Mosquitto's
 * documented examples and, by property, against a literal model of the C
 * code (linked lists, deny rules pushed to the front, pattern substitution
 * per check) over the project's reference matcher.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import {
  type AclFile,
  allows,
  compileClientRules,
  filterCovers,
  filtersIntersect,
  matchLevels,
  maySubscribe,
  parseAclFile,
  READ,
  WRITE
} from "../../src/security/aclFile.js"
import { matchTopic } from "../../src/protocol/topic.js"

const parse = (text: string): AclFile => Either.getOrThrow(parseAclFile(text, "t.acl"))
const parseError = (text: string) => {
  const r = parseAclFile(text, "t.acl")
  if (Either.isRight(r)) throw new Error("expected an error")
  return r.left
}
const check = (acl: AclFile, clientId: string, username: string | undefined, topic: string, access: 1 | 2) =>
  allows(compileClientRules(acl, clientId, username), topic, access)
const canRead = (acl: AclFile, c: string, u: string | undefined, t: string) => check(acl, c, u, t, READ)
const canWrite = (acl: AclFile, c: string, u: string | undefined, t: string) => check(acl, c, u, t, WRITE)

describe("acl_file parsing", () => {
  it("reads Mosquitto's aclfile.example: anonymous section, user section, patterns", () => {
    const acl = parse(
      [
        "# This affects access control for clients with no username.",
        "topic read $SYS/#",
        "",
        '# This only affects clients with username "roger".',
        "user roger",
        "topic foo/bar",
        "",
        "# This affects all clients.",
        "pattern write $SYS/broker/connection/%c/state",
        ""
      ].join("\n")
    )
    expect(acl.anonymous).toEqual([{ access: READ, topic: "$SYS/#", line: 2 }])
    expect([...acl.users.entries()]).toEqual([["roger", [{ access: 3, topic: "foo/bar", line: 6 }]]])
    expect(acl.patterns).toEqual([{ access: WRITE, topic: "$SYS/broker/connection/%c/state", line: 9 }])
    expect(acl.warnings).toEqual([])
  })

  it("access words; default readwrite; the topic is the rest of the line (spaces kept, blanks trimmed)", () => {
    const acl = parse("topic read a\ntopic write b\ntopic readwrite c\ntopic deny d\ntopic e\ntopic read  x y/z  \n")
    expect(acl.anonymous!.map((r) => [r.access, r.topic])).toEqual([
      [0, "d"],
      [READ, "a"],
      [WRITE, "b"],
      [3, "c"],
      [3, "e"],
      [READ, "x y/z"]
    ])
  })

  it("deny rules go to the front of their list (add__acl), patterns too", () => {
    const acl = parse("user u\ntopic a\ntopic deny b\ntopic c\ntopic deny d\npattern r/%u\npattern deny s/%u\n")
    expect(acl.users.get("u")!.map((r) => r.topic)).toEqual(["b", "d", "a", "c"])
    expect(acl.patterns.map((r) => r.topic)).toEqual(["s/%u", "r/%u"])
  })

  it("a user named twice gets one list; the name is the rest of the line; patterns stay global after a user line", () => {
    const acl = parse("user bob\ntopic a\nuser  jane doe \ntopic b\nuser bob\ntopic c\npattern p/%c\n")
    expect(acl.users.get("bob")!.map((r) => r.topic)).toEqual(["a", "c"])
    expect(acl.users.get("jane doe")!.map((r) => r.topic)).toEqual(["b"])
    expect(acl.patterns.map((r) => r.topic)).toEqual(["p/%c"])
    expect(acl.anonymous).toBeUndefined()
  })

  it("comments only in the first column; CRLF and trailing blanks are fine; blank lines skipped", () => {
    const acl = parse("# c\r\n\r\n   \r\ntopic read a/#   \r\n")
    expect(acl.anonymous).toEqual([{ access: READ, topic: "a/#", line: 4 }])
    expect(parseError("  # indented comment\n")).toMatchObject({ line: 1, reason: "Invalid" })
  })

  it("errors name the line: bad access, empty topic, missing user, unknown keyword, bad filter, tabs", () => {
    expect(parseError("topic a\ntopic rw foo\n")).toMatchObject({ file: "t.acl", line: 2, message: expect.stringContaining('access type "rw"') })
    expect(parseError("\n\ntopic\n")).toMatchObject({ line: 3, message: expect.stringContaining("empty topic") })
    expect(parseError("user\n")).toMatchObject({ line: 1, message: expect.stringContaining("missing username") })
    expect(parseError("user   \n")).toMatchObject({ line: 1 })
    expect(parseError("topics a\n")).toMatchObject({ line: 1, message: expect.stringContaining("invalid line") })
    expect(parseError("topic read a/#/b\n")).toMatchObject({ line: 1, message: expect.stringContaining("invalid ACL topic") })
    expect(parseError("pattern read a+\n")).toMatchObject({ line: 1 })
    expect(parseError("topic\tread\ta\n")).toMatchObject({ line: 1, message: expect.stringContaining("tabs") })
  })

  it("warns where Mosquitto is silent: a lone access word is a topic, a pattern without %c / %u", () => {
    const acl = parse("topic read\npattern write a/b\n")
    expect(acl.anonymous).toEqual([{ access: 3, topic: "read", line: 1 }])
    expect(acl.warnings.map((w) => w.line)).toEqual([1, 2])
  })
})

describe("acl_file checks (mosquitto_acl_check_default)", () => {
  const example = parse("topic read $SYS/#\nuser roger\ntopic foo/bar\npattern write $SYS/broker/connection/%c/state\n")

  it("aclfile.example: anonymous reads $SYS, roger reads and writes foo/bar, nobody else gets anything", () => {
    expect(canRead(example, "c", undefined, "$SYS/broker/uptime")).toBe(true)
    expect(canWrite(example, "c", undefined, "$SYS/broker/uptime")).toBe(false)
    expect(canRead(example, "c", undefined, "foo/bar")).toBe(false)
    expect(canRead(example, "c", "roger", "foo/bar")).toBe(true)
    expect(canWrite(example, "c", "roger", "foo/bar")).toBe(true)
    expect(canRead(example, "c", "roger", "$SYS/broker/uptime")).toBe(false)
    expect(canRead(example, "c", "jane", "foo/bar")).toBe(false)
    // the pattern: bridges may write their state topic, even to $SYS (acl__check_dollar)
    expect(canWrite(example, "bridge1", "roger", "$SYS/broker/connection/bridge1/state")).toBe(true)
    expect(canWrite(example, "bridge1", "roger", "$SYS/broker/connection/other/state")).toBe(false)
  })

  it("pattern write sensor/%u/data: each user writes its own topic only", () => {
    const acl = parse("pattern write sensor/%u/data\n")
    expect(canWrite(acl, "c", "s1", "sensor/s1/data")).toBe(true)
    expect(canWrite(acl, "c", "s1", "sensor/s2/data")).toBe(false)
    expect(canRead(acl, "c", "s1", "sensor/s1/data")).toBe(false)
    // %u patterns are skipped for anonymous clients
    expect(canWrite(acl, "c", undefined, "sensor/%u/data")).toBe(false)
  })

  it("%c and %u substitute anywhere, left to right, as the C loop does (%%c is % then the client id)", () => {
    const acl = parse("pattern x/%c-%u/%%c\n")
    expect(canRead(acl, "cid", "usr", "x/cid-usr/%cid")).toBe(true)
  })

  it("deny wins over a broader grant, in either order in the file", () => {
    for (const text of ["topic a/#\ntopic deny a/secret\n", "topic deny a/secret\ntopic a/#\n"]) {
      const acl = parse(text)
      expect(canRead(acl, "c", undefined, "a/public")).toBe(true)
      expect(canRead(acl, "c", undefined, "a/secret")).toBe(false)
      expect(canWrite(acl, "c", undefined, "a/secret")).toBe(false)
    }
  })

  it("a user's own grant is checked before pattern denies; a user's own deny before pattern grants", () => {
    const acl = parse("user u\ntopic t/u\ntopic deny t/x\npattern deny t/%u\npattern t/#\n")
    expect(canRead(acl, "c", "u", "t/u")).toBe(true)
    expect(canRead(acl, "c", "u", "t/x")).toBe(false)
    expect(canRead(acl, "c", "v", "t/v")).toBe(false)
    expect(canRead(acl, "c", "v", "t/w")).toBe(true)
  })

  it("with patterns, a username or client id with + or # is denied once its own rules have not allowed (CVE-2017-7650)", () => {
    const acl = parse("user a+b\ntopic own\npattern read users/%u/#\npattern read clients/%c\n")
    expect(canRead(acl, "c", "a+b", "own")).toBe(true)
    expect(canRead(acl, "c", "a+b", "users/a+b/x")).toBe(false)
    expect(canRead(acl, "c#", "ok", "users/ok/x")).toBe(false)
    expect(canRead(acl, "c", "ok", "users/ok/x")).toBe(true)
    // '/' is allowed in Mosquitto 2 (only + and #)
    expect(canRead(acl, "c/d", "ok", "clients/c/d")).toBe(true)
  })

  it("[MQTT-4.7.2-1] a rule not starting with $ never matches a $ topic; # does not reach $SYS", () => {
    const acl = parse("topic #\ntopic +/x\n")
    expect(canRead(acl, "c", undefined, "$SYS/x")).toBe(false)
    expect(canRead(acl, "c", undefined, "$other")).toBe(false)
    expect(canRead(acl, "c", undefined, "a/x")).toBe(true)
    const dollar = parse("topic $SYS/#\ntopic $x/+\n")
    expect(canRead(dollar, "c", undefined, "$SYS")).toBe(true)
    expect(canRead(dollar, "c", undefined, "$x/y")).toBe(true)
  })

  it("acl__check_dollar: nobody publishes to $SYS (but bridge state) or $share, whatever the file says", () => {
    const acl = parse("topic $SYS/#\ntopic $share/#\ntopic $SYSTEM/#\n")
    expect(canWrite(acl, "c", undefined, "$SYS/broker/x")).toBe(false)
    expect(canWrite(acl, "c", undefined, "$SYSTEM/x")).toBe(false) // strncmp(topic, "$SYS", 4)
    expect(canRead(acl, "c", undefined, "$SYS/broker/x")).toBe(true)
    expect(canRead(acl, "c", undefined, "$share/g/x")).toBe(false)
    expect(canWrite(acl, "c", undefined, "$share/g/x")).toBe(false)
  })

  it("an empty file, or a user without rules and no patterns, denies everything", () => {
    const empty = parse("# nothing\n")
    expect(canRead(empty, "c", undefined, "a")).toBe(false)
    expect(canWrite(empty, "c", "u", "a")).toBe(false)
    const anonOnly = parse("topic a\n")
    expect(canRead(anonOnly, "c", "u", "a")).toBe(false)
    expect(canRead(anonOnly, "c", undefined, "a")).toBe(true)
  })

  it("[MQTT-4.7.1-2] # matches the parent level; [MQTT-4.7.1-3] + matches one (possibly empty) level", () => {
    const acl = parse("topic a/#\ntopic b/+\ntopic c/+/d\n")
    for (const [t, ok] of [
      ["a", true],
      ["a/", true],
      ["a/x/y", true],
      ["ab", false],
      ["b/", true],
      ["b/x", true],
      ["b", false],
      ["b/x/y", false],
      ["c//d", true],
      ["c/x/d/", false]
    ] as const) {
      expect([t, canRead(acl, "c", undefined, t)]).toEqual([t, ok])
    }
  })
})

// ---------------------------------------------------------------------------
// property: the compiled matcher against a literal model of the C code

interface Line {
  readonly section: string | undefined
  readonly kind: "topic" | "pattern"
  readonly access: "read" | "write" | "readwrite" | "deny" | undefined
  readonly topic: string
}

const levelArb = fc.constantFrom("a", "b", "x y", "", "$SYS", "$x", "%c", "%u", "c1", "u1")
const filterArb = fc
  .tuple(fc.array(fc.oneof(levelArb, fc.constant("+")), { minLength: 1, maxLength: 3 }), fc.boolean())
  .map(([levels, hash]) => (hash ? [...levels, "#"] : levels).join("/"))
  .filter((f) => f.trim() === f && f.length > 0)
const lineArb: fc.Arbitrary<Line> = fc.record({
  section: fc.constantFrom(undefined, "u1", "a/b", "u#"),
  kind: fc.constantFrom("topic" as const, "topic" as const, "pattern" as const),
  access: fc.constantFrom(undefined, "read" as const, "write" as const, "readwrite" as const, "deny" as const),
  topic: filterArb
}).map((l) => (l.access === undefined && l.topic.includes(" ") ? { ...l, access: "readwrite" as const } : l)) // a topic with a space needs its access word
const topicArb = fc
  .array(fc.constantFrom("a", "b", "x y", "", "$SYS", "$x", "c1", "u1", "a/b", "c+"), { minLength: 1, maxLength: 4 })
  .map((levels) => levels.join("/"))
  .filter((t) => t.length > 0 && !t.includes("+"))
const clientArb = fc.record({
  clientId: fc.constantFrom("c1", "c+", "u1", "c/1"),
  username: fc.constantFrom(undefined, "u1", "a/b", "u#", "other")
})

/** Anonymous `topic` lines first (they must precede any `user` line), then the rest in order. */
const render = (lines: ReadonlyArray<Line>): { text: string; ordered: Array<Line> } => {
  const anon = lines.filter((l) => l.kind === "topic" && l.section === undefined)
  const rest = lines.filter((l) => !(l.kind === "topic" && l.section === undefined))
  const ordered = [...anon, ...rest]
  let current: string | undefined
  let text = ""
  for (const l of ordered) {
    if (l.kind === "topic" && l.section !== undefined && l.section !== current) {
      text += `user ${l.section}\n`
      current = l.section
    }
    text += `${l.kind} ${l.access === undefined ? "" : `${l.access} `}${l.topic}\n`
  }
  return { text, ordered }
}

const ACCESS_BITS = { read: 1, write: 2, readwrite: 3, deny: 0 } as const

/** mosquitto_topic_matches_sub: the reference matcher plus "$ only matches $ both ways" */
const matchesSub = (sub: string, topic: string): boolean =>
  (sub.charCodeAt(0) === 36) === (topic.charCodeAt(0) === 36) && matchTopic(sub, topic)

/** security_default.c, as written, on linked lists. */
const model = (ordered: ReadonlyArray<Line>, clientId: string, username: string | undefined, topic: string, access: 1 | 2): boolean => {
  // acl__check_dollar
  if (topic.startsWith("$SYS")) {
    if (access === 2 && !matchesSub("$SYS/broker/connection/+/state", topic)) return false
  } else if (topic.startsWith("$share")) return false
  const users: Array<{ username: string | null; acl: Array<{ topic: string; access: number }> }> = []
  const patterns: Array<{ topic: string; access: number; ucount: number }> = []
  for (const l of ordered) {
    // a line "topic read" with no topic cannot be generated: topics are never access words
    const a = l.access === undefined ? 3 : ACCESS_BITS[l.access]
    const entry = { topic: l.topic, access: a }
    if (l.kind === "pattern") {
      const p = { ...entry, ucount: l.topic.split("%u").length - 1 }
      if (a === 0) patterns.unshift(p)
      else patterns.push(p)
    } else {
      const name = l.section ?? null
      let u = users.find((x) => x.username === name)
      if (u === undefined) users.push((u = { username: name, acl: [] }))
      if (a === 0) u.acl.unshift(entry)
      else u.acl.push(entry)
    }
  }
  const own = users.find((u) => u.username === (username ?? null))
  if (own === undefined && patterns.length === 0) return false
  for (const r of own?.acl ?? []) {
    if (topic[0] === "$" && r.topic[0] !== "$") continue
    if (matchesSub(r.topic, topic)) {
      if (r.access === 0) return false
      if ((access & r.access) !== 0) return true
    }
  }
  if (patterns.length > 0) {
    if (username !== undefined && /[+#]/.test(username)) return false
    if (/[+#]/.test(clientId)) return false
  }
  for (const p of patterns) {
    if (p.ucount > 0 && username === undefined) continue
    let local = ""
    for (let i = 0; i < p.topic.length; i++) {
      if (i < p.topic.length - 1 && p.topic[i] === "%") {
        if (p.topic[i + 1] === "c") {
          i++
          local += clientId
          continue
        } else if (username !== undefined && p.topic[i + 1] === "u") {
          i++
          local += username
          continue
        }
      }
      local += p.topic[i]
    }
    if (matchesSub(local, topic)) {
      if (p.access === 0) return false
      if ((access & p.access) !== 0) return true
    }
  }
  return false
}

describe("acl_file checks against a model of security_default.c", () => {
  it.prop(
    "read and write decisions agree for random files, clients and topics",
    [fc.array(lineArb, { maxLength: 8 }), clientArb, fc.array(topicArb, { minLength: 1, maxLength: 6 })],
    ([lines, client, topics]) => {
      const { text, ordered } = render(lines.filter((l) => ACCESS_BITS[l.topic as keyof typeof ACCESS_BITS] === undefined))
      const acl = parse(text)
      const rules = compileClientRules(acl, client.clientId, client.username)
      for (const topic of topics) {
        for (const access of [READ, WRITE] as const) {
          const expected = model(ordered, client.clientId, client.username, topic, access)
          expect([text, topic, access, allows(rules, topic, access)]).toEqual([text, topic, access, expected])
        }
      }
    },
    { fastCheck: { seed: 17_1883, numRuns: 600 } }
  )

  it.prop(
    "matchLevels is the reference matcher (without the $ rule, which the caller applies)",
    [filterArb, topicArb],
    ([filter, topic]) => {
      const plain = topic.charCodeAt(0) === 36 ? topic.slice(1) : topic
      const f = filter.charCodeAt(0) === 36 ? filter.slice(1) : filter
      if (f.length === 0 || plain.length === 0) return
      expect(matchLevels(f.split("/"), plain)).toBe(matchTopic(f, plain))
    },
    { fastCheck: { seed: 4_7_1, numRuns: 1000 } }
  )
})

// ---------------------------------------------------------------------------
// Midge-only: wildcard-aware subscription check

describe("maySubscribe (subscribeCheck: read-access, Midge-only)", () => {
  const some = (filter: string, topics: ReadonlyArray<string>) => topics.filter((t) => matchTopic(filter, t))

  it.prop(
    "filtersIntersect / filterCovers agree with enumerating topics",
    [filterArb, filterArb],
    ([a, b]) => {
      // every topic of up to 4 levels over the levels the filters use, plus a fresh one: enough to tell
      // filters of at most 4 levels apart
      const levels = [...new Set([...a.split("/"), ...b.split("/"), "z"].filter((l) => l !== "+" && l !== "#"))]
      const topics: Array<string> = []
      const grow = (prefix: Array<string>) => {
        if (prefix.length > 0) topics.push(prefix.join("/"))
        if (prefix.length < 4) for (const l of levels) grow([...prefix, l])
      }
      grow([])
      const valid = topics.filter((t) => t.length > 0)
      const ta = new Set(some(a, valid))
      const tb = some(b, valid)
      expect(filtersIntersect(a.split("/"), b.split("/"))).toBe(tb.some((t) => ta.has(t)))
      expect(filterCovers(a.split("/"), b.split("/"))).toBe(tb.every((t) => ta.has(t)))
    },
    { fastCheck: { seed: 3_8_4, numRuns: 300 } }
  )

  it("grants what some read rule can match, refuses what only write or deny rules cover", () => {
    const acl = parse("user u1\ntopic read sensors/#\ntopic write cmd/#\ntopic deny sensors/secret/#\npattern read users/%u/#\n")
    const rules = compileClientRules(acl, "c", "u1")
    expect(maySubscribe(rules, "sensors/+/temp")).toBe(true)
    expect(maySubscribe(rules, "#")).toBe(true)
    expect(maySubscribe(rules, "+/x")).toBe(true)
    expect(maySubscribe(rules, "cmd/#")).toBe(false)
    expect(maySubscribe(rules, "sensors/secret/#")).toBe(false)
    expect(maySubscribe(rules, "users/u1/inbox")).toBe(true)
    expect(maySubscribe(rules, "users/u2/inbox")).toBe(false)
    expect(maySubscribe(rules, "$SYS/#")).toBe(false)
  })
})
