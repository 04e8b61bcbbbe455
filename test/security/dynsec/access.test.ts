/**
 * ACL evaluation as Mosquitto 2.0's dynamic security plugin does it
 * (plugins/dynamic-security/acl.c, sub_matches_sub.c): the order of roles,
 * groups and priorities, default access, `$CONTROL`, and a per-connection
 * view that follows every change at once. The differential test against
 * the real broker is in mosquitto.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { DynsecClientAcl, DynsecState, subAclCheck } from "../../../src/security/dynsec/access.js"
import { addAcl, addRoleRef, type AclType, emptyAcls, emptyModel, joinGroup, type Model } from "../../../src/security/dynsec/model.js"

const role = (m: Model, rolename: string, acls: ReadonlyArray<readonly [AclType, string, boolean, number?]>) => {
  const r = { rolename, textname: undefined, textdescription: undefined, acls: emptyAcls() }
  for (const [type, topic, allow, priority] of acls) addAcl(r.acls[type], { topic, allow, priority: priority ?? 0 })
  m.roles.set(rolename, r)
}

const client = (m: Model, username: string, roles: ReadonlyArray<readonly [string, number]> = []) => {
  const c = { username, clientid: undefined, textname: undefined, textdescription: undefined, disabled: false, password: undefined, roles: [], groups: [] }
  for (const [r, p] of roles) addRoleRef(c.roles, r, p)
  m.clients.set(username, c)
  return c
}

const group = (m: Model, groupname: string, roles: ReadonlyArray<readonly [string, number]> = []) => {
  const g = { groupname, textname: undefined, textdescription: undefined, roles: [], clients: [] }
  for (const [r, p] of roles) addRoleRef(g.roles, r, p)
  m.groups.set(groupname, g)
  return g
}

const acl = (state: DynsecState, username: string | undefined, clientId = "c") => new DynsecClientAcl(state, { clientId, username })

describe("sub_acl_check: a subscription within an ACL pattern", () => {
  // Mosquitto's own cases (sub_matches_sub.c's test main)
  const cases: ReadonlyArray<readonly [string, string, boolean]> = [
    ["foo/+/bar", "foo/#", false],
    ["foo/+/ba℞/#", "foo/baz/ba℞", true],
    ["foo/+/ba℞/#", "foo/baz/ba℞/+", true],
    ["foo/+/ba℞/#", "foo/baz/ba℞/#", true],
    ["foo/+/ba℞/#", "foo/baz/+/#", false],
    ["/+//#", "/foo///#", true],
    ["#", "#", true],
    ["#", "+", true],
    ["/#", "+", false],
    ["/#", "/+", true],
    ["/+", "#", false],
    ["/+", "+", false],
    ["+/+", "topic/topic", true],
    ["+/+", "topic/topic/", false],
    ["+", "#", false],
    ["+", "+", true],
    ["a/b/c/d/e", "a/b/c/d/e", true],
    ["a/b/ /d/e", "a/b/c/d/e", false],
    ["foo/#", "foo", true],
    // Mosquitto 2.0 says true (it strips "/#" and "#" alike): not here
    ["/#", "#", false],
    ["+/#", "#", true],
    ["#", "$SYS/x", true],
    ["+/x", "$SYS/x", true]
  ]
  for (const [pattern, sub, expected] of cases) {
    it(`sub_acl_check("${pattern}", "${sub}") is ${expected}`, () => expect(subAclCheck(pattern, sub)).toBe(expected))
  }

  const level = fc.constantFrom("a", "b", "", "+", "#")
  const filter = fc.array(level, { minLength: 1, maxLength: 4 }).map((ls) => ls.join("/")).filter((f) => /^(#|(([^/#]*)\/)*([^/#]*|#))$/.test(f))
  const topic = fc.array(fc.constantFrom("a", "b", ""), { minLength: 1, maxLength: 5 }).map((ls) => ls.join("/"))
  /** MQTT topic matching ([MQTT-4.7.1-2] # includes the parent, [MQTT-4.7.1-3] + one level), no $ rule (sub_acl_check has none). */
  const matches = (f: string, t: string): boolean => {
    const fl = f.split("/")
    const tl = t.split("/")
    for (let i = 0; i < fl.length; i++) {
      if (fl[i] === "#") return true
      if (i >= tl.length || (fl[i] !== "+" && fl[i] !== tl[i])) return false
    }
    return fl.length === tl.length
  }
  it.prop("when granted, every topic the subscription matches, the pattern matches too", [filter, filter, fc.array(topic, { maxLength: 30 })], ([pattern, sub, topics]) => {
    if (!subAclCheck(pattern, sub)) return
    for (const t of topics) if (matches(sub, t)) expect([pattern, sub, t, matches(pattern, t)]).toEqual([pattern, sub, t, true])
  }, { fastCheck: { seed: 7, numRuns: 5000 } })
})

describe("evaluation order", () => {
  it("client roles by priority, then groups by priority (each group's roles by priority), then the default", () => {
    const m = emptyModel()
    role(m, "low", [["publishClientSend", "t/#", true]])
    role(m, "high", [["publishClientSend", "t/deny", false]])
    role(m, "g1r", [["publishClientSend", "g/#", true], ["publishClientSend", "t/deny", true, 100]])
    role(m, "g2r", [["publishClientSend", "g/x", false]])
    const c = client(m, "u", [["low", 1], ["high", 2]])
    joinGroup(c, group(m, "g1", [["g1r", 0]]), 1)
    joinGroup(c, group(m, "g2", [["g2r", 0]]), 5)
    const state = new DynsecState(m)
    const a = acl(state, "u")
    expect(a.canPublish("t/deny")).toBe(false) // high (priority 2) before low, and before any group
    expect(a.canPublish("t/1")).toBe(true)
    expect(a.canPublish("g/x")).toBe(false) // group g2 (priority 5) before g1
    expect(a.canPublish("g/y")).toBe(true)
    expect(a.canPublish("z")).toBe(false) // default publishClientSend false
    m.defaultAccess.publishClientSend = true
    state.touch()
    expect(a.canPublish("z")).toBe(true)
    // a client role's priority change reorders
    c.roles = []
    addRoleRef(c.roles, "low", 3)
    addRoleRef(c.roles, "high", 2)
    state.touch()
    expect(a.canPublish("t/deny")).toBe(true)
  })

  it("within a role: highest priority first, ties in the order added; a deny ACL decides as an allow does", () => {
    const m = emptyModel()
    role(m, "r", [["publishClientReceive", "a/#", true, 0], ["publishClientReceive", "a/b", false, 0], ["publishClientReceive", "a/+", false, 1]])
    client(m, "u", [["r", 0]])
    const a = acl(new DynsecState(m), "u")
    expect(a.canReceive("a/b")).toBe(false) // a/+ (priority 1)
    expect(a.canReceive("a/b/c")).toBe(true) // a/# before a/b (added first)
    m.defaultAccess.publishClientReceive = true
  })

  it("$CONTROL is never allowed by default access; an ACL for it allows it; filters without $ never match $ topics [MQTT-4.7.2-1]", () => {
    const m = emptyModel()
    m.defaultAccess.publishClientSend = true
    m.defaultAccess.publishClientReceive = true
    m.defaultAccess.subscribe = true
    role(m, "all", [["publishClientSend", "#", true], ["publishClientReceive", "+/#", true]])
    role(m, "ctl", [["publishClientSend", "$CONTROL/dynamic-security/#", true], ["subscribeLiteral", "$CONTROL/x", true]])
    client(m, "plain")
    client(m, "hash", [["all", 0]])
    client(m, "admin", [["ctl", 0]])
    const state = new DynsecState(m)
    for (const u of ["plain", "hash"]) {
      expect(acl(state, u).canPublish("$CONTROL/dynamic-security/v1")).toBe(false)
      expect(acl(state, u).canReceive("$CONTROL/dynamic-security/v1/response")).toBe(false)
      expect(acl(state, u).canSubscribe("$CONTROL/dynamic-security/#")).toBe(false)
      expect(acl(state, u).canPublish("$other/x")).toBe(true)
      expect(acl(state, u).canPublish("x")).toBe(true)
    }
    expect(acl(state, "admin").canPublish("$CONTROL/dynamic-security/v1")).toBe(true)
    expect(acl(state, "admin").canSubscribe("$CONTROL/x")).toBe(true)
    // the broker's own $ rules come first: nobody publishes to $SYS or uses $share topics
    role(m, "sys", [["publishClientSend", "$SYS/#", true], ["publishClientReceive", "$share/#", true]])
    client(m, "sys", [["sys", 0]])
    state.touch()
    expect(acl(state, "sys").canPublish("$SYS/broker/x")).toBe(false)
    expect(acl(state, "sys").canPublish("$SYS/broker/connection/b/state")).toBe(true)
    expect(acl(state, "sys").canReceive("$share/g/x")).toBe(false)
  })

  it("subscriptions: literal ACLs of a role before its patterns; shared subscriptions are checked as sent", () => {
    const m = emptyModel()
    role(m, "r1", [["subscribePattern", "a/#", false, 10], ["subscribeLiteral", "a/b", true, 0]])
    role(m, "r2", [["subscribePattern", "#", true]])
    client(m, "u", [["r1", 2], ["r2", 1]])
    const a = acl(new DynsecState(m), "u")
    expect(a.canSubscribe("a/b")).toBe(true) // the literal, though the pattern has the higher priority
    expect(a.canSubscribe("a/c")).toBe(false)
    expect(a.canSubscribe("b")).toBe(true)
    expect(a.canSubscribe("$share/g/a/b")).toBe(true) // r2's # covers everything, $share included
    expect(a.canUnsubscribe("x")).toBe(false)
    m.defaultAccess.unsubscribe = true
  })

  it("a username dynsec does not know gets nothing, whatever the default; anonymous clients get the anonymous group, else the default", () => {
    const m = emptyModel()
    m.defaultAccess.publishClientSend = true
    m.defaultAccess.publishClientReceive = true
    role(m, "anon", [["publishClientSend", "x", false]])
    const state = new DynsecState(m)
    expect(acl(state, "stranger").canPublish("y")).toBe(false)
    expect(acl(state, "stranger").canReceive("y")).toBe(false)
    const anon = acl(state, undefined)
    expect(anon.canPublish("x")).toBe(true)
    group(m, "guests", [["anon", 0]])
    m.anonymousGroup = "guests"
    state.touch()
    expect(anon.canPublish("x")).toBe(false)
    expect(anon.canPublish("y")).toBe(true)
  })

  it("malformed ACL topics (from a file) never match", () => {
    const m = emptyModel()
    m.defaultAccess.publishClientSend = true
    role(m, "r", [["publishClientSend", "a/#/b", false], ["publishClientSend", "", false], ["publishClientSend", "x+", false]])
    client(m, "u", [["r", 0]])
    const a = acl(new DynsecState(m), "u")
    for (const t of ["a/x/b", "a", "x+", "x"]) expect([t, a.canPublish(t)]).toEqual([t, true])
  })
})

describe("the per-connection view", () => {
  it("follows every change at once, with and without its decision cache (more than 8 rules)", () => {
    for (const extra of [0, 20]) {
      const m = emptyModel()
      role(m, "r", [["publishClientReceive", "a/#", true], ...Array.from({ length: extra }, (_, i) => ["publishClientReceive", `pad/${i}`, true] as const)])
      client(m, "u", [["r", 0]])
      const state = new DynsecState(m)
      const a = acl(state, "u")
      expect(a.canReceive("a/1")).toBe(true)
      expect(a.canReceive("a/1")).toBe(true)
      m.roles.get("r")!.acls.publishClientReceive.unshift({ topic: "a/1", priority: 5, allow: false })
      state.touch()
      expect(a.canReceive("a/1")).toBe(false)
      m.clients.delete("u")
      state.touch()
      expect(a.canReceive("a/2")).toBe(false)
      state.replace(m)
      expect(a.canReceive("a/2")).toBe(false)
    }
  })

  it("clients of one username share the compiled rules; the cache stays bounded", () => {
    const m = emptyModel()
    role(m, "r", Array.from({ length: 12 }, (_, i) => ["publishClientReceive", `t/${i}/#`, i % 2 === 0] as const))
    client(m, "u", [["r", 0]])
    const state = new DynsecState(m)
    expect(state.rulesFor("u")).toBe(state.rulesFor("u"))
    // any username may come along: unknown ones are not kept
    for (let i = 0; i < 100; i++) expect(state.rulesFor(`stranger-${i}`).known).toBe(false)
    expect((state as unknown as { compiled: Map<string, unknown> }).compiled.size).toBe(1)
    const a = acl(state, "u")
    for (let i = 0; i < 2000; i++) expect(a.canReceive(`t/${i % 12}/${i}`)).toBe(i % 12 % 2 === 0)
    expect((a as unknown as { cache: Map<string, number> }).cache.size).toBeLessThanOrEqual(256)
  })
})
