/**
 * Differential tests against the real Mosquitto 2.0.11 and its dynamic
 * security plugin (Debian's mosquitto package):
 *
 * - every command, with its error cases, sent to both brokers: the
 *   responses are the same JSON (shapes, key order, error texts);
 * - one ACL set-up (roles, priorities, groups, default access): what a
 *   client may publish, subscribe to and receive is the same on both;
 * - each reads the file the other wrote.
 *
 * Left out on purpose, where 2.0.11 corrupts its memory and Midge follows
 * later Mosquitto fixes (tested in e2e.test.ts): deleting the anonymous
 * group (crashes 2.0.11), a createClient naming a missing group, deleting a
 * role given by createClient / modifyGroup, and reading a group's clients
 * in a later request than the modifyGroup that set them (2.0.11 keeps
 * pointers into the freed request).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { modelFromJson, modelToJson } from "../../../src/security/dynsec/model.js"
import { collect, connectClient, publish, settle, waitFor } from "../../e2e/harness.js"
import { admin, initFile, type Response, startDynsec, subscribeCodes, tmpDir } from "./harness.js"
import { startMosquitto } from "./mosquittoHarness.js"

type Step = ReadonlyArray<Record<string, unknown>> | { readonly raw: string | Buffer }

const acl = (acltype: string, topic: string, allow = true, priority?: number) => ({ acltype, topic, allow, ...(priority !== undefined ? { priority } : {}) })

/** Requests covering every command and its errors, run in order on both brokers. */
const STEPS: ReadonlyArray<Step> = [
  [{ command: "getDefaultACLAccess" }, { command: "listClients" }, { command: "listGroups" }, { command: "listRoles" }, { command: "getAnonymousGroup" }],
  { raw: "not json" },
  { raw: '{"commands":{}}' },
  { raw: '{"nothing":[]}' },
  { raw: '{"commands":[]}' },
  { raw: '{"commands":[1,{"x":1},{"command":5},{"command":"nope"},{"command":"NOPE","correlationData":"c1"},"s"]}' },
  { raw: '{"commands":[{"command":"listRoles","correlationData":5},{"command":"listClients"}]}' },
  { raw: Buffer.concat([Buffer.from('{"commands":[{"command":"createRole","rolename":"bad'), Buffer.from([0xff, 0xfe]), Buffer.from('"}]}')]) },
  // roles
  [
    { command: "createRole", rolename: "r1", textname: "Role one", textdescription: "the first", acls: [acl("publishClientSend", "a/#", true, 5), acl("publishClientReceive", "a/+", false)] },
    { command: "createRole", rolename: "r1" },
    { command: "createRole" },
    { command: "createRole", rolename: 5 },
    { command: "createRole", rolename: "r2", textname: 5 },
    { command: "createRole", rolename: "r2", textdescription: false },
    { command: "createRole", rolename: "bad\u0001" },
    { command: "createRole", rolename: "r2" },
    {
      command: "createRole",
      rolename: "r3",
      acls: [
        acl("subscribeLiteral", "s/lit", true, 1),
        acl("subscribePattern", "s/#", false, 2),
        acl("SUBSCRIBEPATTERN", "t/+", true),
        { acltype: "unsubscribeLiteral", topic: "u/1" },
        { acltype: "unsubscribePattern", allow: true },
        { acltype: "nonsense", topic: "x", allow: true },
        acl("publishClientSend", "p/1", true, 3),
        acl("publishClientSend", "p/2", false, 3),
        acl("publishClientSend", "p/0", true, 10)
      ]
    },
    { command: "getRole", rolename: "r3" },
    { command: "getRole", rolename: "nope" },
    { command: "getRole" },
    { command: "listRoles", verbose: true },
    { command: "listRoles", count: 1, offset: 1 },
    { command: "listRoles", count: 0 },
    { command: "listRoles", count: -5, offset: 10 },
    { command: "listRoles", verbose: "yes", count: "2" }
  ],
  [
    { command: "addRoleACL", rolename: "r2", acltype: "publishClientSend", topic: "x/#", allow: true, priority: 4 },
    { command: "addRoleACL", rolename: "r2", acltype: "publishClientSend", topic: "x/#", allow: false },
    { command: "addRoleACL", rolename: "r2", acltype: "publishclientreceive", topic: "x/y", priority: "high" },
    { command: "addRoleACL", rolename: "r2", acltype: "subscribeLiteral", topic: "a/#/b", allow: true },
    { command: "addRoleACL", rolename: "r2", acltype: "subscribeLiteral", topic: "a+", allow: true },
    { command: "addRoleACL", rolename: "r2", acltype: "subscribeLiteral", topic: 7 },
    { command: "addRoleACL", rolename: "r2", acltype: "subscribeLiteral" },
    { command: "addRoleACL", rolename: "r2", acltype: "bogus", topic: "x" },
    { command: "addRoleACL", rolename: "r2", topic: "x" },
    { command: "addRoleACL", rolename: "nope", acltype: "publishClientSend", topic: "x" },
    { command: "addRoleACL", acltype: "publishClientSend", topic: "x" },
    { command: "addRoleACL", rolename: "r2", acltype: "unsubscribePattern", topic: "", allow: true },
    { command: "getRole", rolename: "r2" },
    { command: "removeRoleACL", rolename: "r2", acltype: "publishClientSend", topic: "x/#" },
    { command: "removeRoleACL", rolename: "r2", acltype: "publishClientSend", topic: "x/#" },
    { command: "removeRoleACL", rolename: "r2", acltype: "publishClientSend", topic: "a/#/b" },
    { command: "removeRoleACL", rolename: "r2", acltype: "publishClientSend" },
    { command: "removeRoleACL", rolename: "r2", acltype: "nope", topic: "x" },
    { command: "removeRoleACL", rolename: "nope", acltype: "publishClientSend", topic: "x" },
    { command: "modifyRole", rolename: "nope" },
    { command: "modifyRole", rolename: "r2", textname: "two", textdescription: "2" },
    { command: "modifyRole", rolename: "r3", acls: [acl("publishClientReceive", "q/#", true, 1), acl("subscribePattern", "q/#", true)] },
    { command: "listRoles", verbose: true }
  ],
  // clients
  [
    { command: "createClient", username: "u1", password: "pw1", clientid: "cid1", textname: "User one", textdescription: "first", roles: [{ rolename: "r1", priority: 5 }, { rolename: "r2" }] },
    { command: "createClient", username: "u1", password: "x" },
    { command: "createClient" },
    { command: "createClient", username: 5 },
    { command: "createClient", username: "u2", password: 5 },
    { command: "createClient", username: "u2", clientid: 5 },
    { command: "createClient", username: "u2", textname: [] },
    { command: "createClient", username: "u2", roles: "r1" },
    { command: "createClient", username: "u2", roles: [{ priority: 1 }] },
    { command: "createClient", username: "u2", roles: [{ rolename: "missing" }] },
    { command: "createClient", username: "u\u0002" },
    { command: "createClient", username: "u2", password: "pw2", clientid: "" },
    { command: "createClient", username: "u3" },
    { command: "createClient", username: "u4", password: "pw4", roles: [{ rolename: "r3", priority: 2 }, { rolename: "r3", priority: 9 }] },
    { command: "getClient", username: "u1" },
    { command: "getClient", username: "u2" },
    { command: "getClient", username: "u4" },
    { command: "getClient", username: "nope" },
    { command: "getClient" },
    { command: "listClients", verbose: true },
    { command: "listClients", count: 2, offset: 1 }
  ],
  [
    { command: "setClientId", username: "u2", clientid: "c2" },
    { command: "getClient", username: "u2" },
    { command: "setClientId", username: "u2", clientid: "" },
    { command: "getClient", username: "u2" },
    { command: "setClientId", username: "u2", clientid: "c2" },
    { command: "setClientId", username: "u2" },
    { command: "getClient", username: "u2" },
    { command: "setClientId", username: "nope", clientid: "x" },
    { command: "setClientId", username: "u2", clientid: 5 },
    { command: "setClientId" },
    { command: "setClientPassword", username: "u3", password: "pw3" },
    { command: "setClientPassword", username: "u3", password: "" },
    { command: "setClientPassword", username: "u3" },
    { command: "setClientPassword", username: "nope", password: "x" },
    { command: "disableClient", username: "u3" },
    { command: "getClient", username: "u3" },
    { command: "disableClient", username: "nope" },
    { command: "enableClient", username: "u3" },
    { command: "getClient", username: "u3" },
    { command: "enableClient" },
    { command: "addClientRole", username: "u2", rolename: "r3", priority: 3 },
    { command: "addClientRole", username: "u2", rolename: "r1" },
    { command: "addClientRole", username: "u2", rolename: "r1", priority: 8 },
    { command: "addClientRole", username: "u2", rolename: "nope" },
    { command: "addClientRole", username: "nope", rolename: "r1" },
    { command: "addClientRole", username: "u2" },
    { command: "getClient", username: "u2" },
    { command: "removeClientRole", username: "u2", rolename: "r1" },
    { command: "removeClientRole", username: "u2", rolename: "r1" },
    { command: "removeClientRole", username: "u2", rolename: "nope" },
    { command: "removeClientRole", username: "nope", rolename: "r1" },
    { command: "getClient", username: "u2" }
  ],
  // groups
  [
    { command: "createGroup", groupname: "g1", textname: "Group one", textdescription: "first", roles: [{ rolename: "r1", priority: 3 }, { rolename: "r2" }] },
    { command: "createGroup", groupname: "g1" },
    { command: "createGroup" },
    { command: "createGroup", groupname: "g2", roles: [{ rolename: "missing" }] },
    { command: "createGroup", groupname: "g2", textname: 1 },
    { command: "createGroup", groupname: "g2" },
    { command: "createGroup", groupname: "g3" },
    { command: "addGroupClient", groupname: "g1", username: "u1", priority: 4 },
    { command: "addGroupClient", groupname: "g1", username: "u1" },
    { command: "addGroupClient", groupname: "g1", username: "u2" },
    { command: "addGroupClient", groupname: "g2", username: "u1" },
    { command: "addGroupClient", groupname: "g3", username: "u1", priority: 4 },
    { command: "addGroupClient", groupname: "nope", username: "u1" },
    { command: "addGroupClient", groupname: "g1", username: "nope" },
    { command: "addGroupClient", groupname: "g1" },
    { command: "addGroupRole", groupname: "g2", rolename: "r3", priority: 1 },
    { command: "addGroupRole", groupname: "g2", rolename: "r3" },
    { command: "addGroupRole", groupname: "g2", rolename: "nope" },
    { command: "addGroupRole", groupname: "nope", rolename: "r3" },
    { command: "getGroup", groupname: "g1" },
    { command: "getGroup", groupname: "g2" },
    { command: "getGroup", groupname: "nope" },
    { command: "getClient", username: "u1" },
    { command: "listGroups" },
    { command: "listGroups", verbose: true, count: 2 },
    { command: "removeGroupClient", groupname: "g3", username: "u1" },
    { command: "removeGroupClient", groupname: "g3", username: "u1" },
    { command: "removeGroupClient", groupname: "nope", username: "u1" },
    { command: "removeGroupClient", groupname: "g3", username: "nope" },
    { command: "removeGroupRole", groupname: "g2", rolename: "r3" },
    { command: "removeGroupRole", groupname: "g2", rolename: "r3" },
    { command: "removeGroupRole", groupname: "g2", rolename: "nope" },
    { command: "removeGroupRole", groupname: "nope", rolename: "r3" },
    { command: "modifyGroup", groupname: "nope" },
    { command: "modifyGroup", groupname: "g2", textname: "two", roles: [{ rolename: "r2", priority: 2 }, { rolename: "r1" }], clients: [{ username: "u2", priority: 1 }, { username: "nope" }, { username: "u4" }] },
    { command: "modifyGroup", groupname: "g2", roles: [{ rolename: "missing" }] },
    { command: "modifyGroup", groupname: "g2", roles: [7] },
    { command: "getGroup", groupname: "g2" },
    { command: "setAnonymousGroup", groupname: "nope" },
    { command: "setAnonymousGroup" },
    { command: "setAnonymousGroup", groupname: "g3" },
    { command: "getAnonymousGroup" },
    { command: "deleteGroup", groupname: "nope" },
    { command: "deleteGroup", groupname: "g1" },
    { command: "getClient", username: "u1" },
    { command: "listGroups", verbose: true }
  ],
  [
    { command: "modifyClient", username: "nope" },
    { command: "modifyClient", username: "u4", clientid: "c4", password: "new4", textname: "Four", textdescription: "4", roles: [{ rolename: "r2", priority: 1 }], groups: [{ groupname: "g3", priority: 2 }, { groupname: "nope" }] },
    { command: "getClient", username: "u4" },
    { command: "modifyClient", username: "u4", clientid: "", password: "" },
    { command: "modifyClient", username: "u4", roles: [{ rolename: "missing" }] },
    { command: "modifyClient", username: "u4", roles: {} },
    { command: "getClient", username: "u4" },
    // a role attached by addClientRole / addGroupRole: Mosquitto 2.0.11 leaves dangling references to roles given in createClient / modifyGroup
    { command: "createRole", rolename: "rdel", acls: [acl("publishClientSend", "del/#")] },
    { command: "addClientRole", username: "u3", rolename: "rdel", priority: 1 },
    { command: "addGroupRole", groupname: "g3", rolename: "rdel" },
    { command: "getClient", username: "u3" },
    { command: "deleteRole", rolename: "rdel" },
    { command: "deleteRole", rolename: "rdel" },
    { command: "getClient", username: "u3" },
    { command: "getGroup", groupname: "g3" },
    { command: "deleteClient", username: "u2" },
    { command: "deleteClient", username: "u2" },
    { command: "deleteClient" },
    { command: "ListClients", verbose: true },
    { command: "setDefaultACLAccess", acls: [{ acltype: "publishClientSend", allow: true }, { acltype: "SUBSCRIBE", allow: true }, { acltype: "unsubscribe", allow: "no" }, { acltype: "bogus", allow: false }] },
    { command: "getDefaultACLAccess" },
    { command: "setDefaultACLAccess" },
    { command: "setDefaultACLAccess", acls: [{ acltype: "publishClientSend", allow: false }, { acltype: "subscribe", allow: false }] },
    { command: "getDefaultACLAccess" },
    { command: "listRoles", verbose: true },
    { command: "listGroups", verbose: true },
    { command: "listClients", verbose: true }
  ]
]

const runSteps = (url: string) =>
  Effect.gen(function* () {
    const a = yield* admin(url)
    const out: Array<Array<Response>> = []
    for (const step of STEPS) out.push(yield* "raw" in step ? a.raw((step as { raw: string | Buffer }).raw) : a.send(step as ReadonlyArray<Record<string, unknown>>))
    return out
  })

describe("the $CONTROL/dynamic-security/v1 API: Midge answers as Mosquitto 2.0.11 does", () => {
  it.scopedLive(
    "every command and its errors, and each broker reads the file the other wrote",
    () =>
      Effect.gen(function* () {
        const dir = tmpDir()
        const midgeFile = initFile(dir, "adminpw", "midge.json")
        const mosqFile = path.join(dir, "mosquitto.json")
        fs.copyFileSync(midgeFile, mosqFile)
        // Mosquitto reads the file Midge's init wrote
        const mosq = yield* startMosquitto(mosqFile)
        const midge = yield* startDynsec({ configFile: midgeFile })
        const expected = yield* runSteps(mosq.url)
        const got = yield* runSteps(midge.url)
        for (let i = 0; i < STEPS.length; i++) expect([i, got[i]]).toEqual([i, expected[i]])

        // the files hold the same model; each broker's file loads in Midge
        const fromMosquitto = modelToJson(modelFromJson(JSON.parse(fs.readFileSync(mosqFile, "utf8"))))
        const fromMidge = modelToJson(modelFromJson(JSON.parse(fs.readFileSync(midgeFile, "utf8"))))
        const withoutPasswords = (t: any) => ({ ...t, clients: t.clients.map(({ password, salt, iterations, ...rest }: any) => rest) })
        expect(withoutPasswords(fromMidge)).toEqual(withoutPasswords(fromMosquitto))
      }),
    60_000
  )

  it.scopedLive(
    "Mosquitto restarted on the file Midge wrote, and Midge on Mosquitto's: same clients, passwords and ACLs",
    () =>
      Effect.gen(function* () {
        const dir = tmpDir()
        const file = initFile(dir)
        // build a state in Midge, so Midge writes the file
        yield* Effect.scoped(
          Effect.gen(function* () {
            const midge = yield* startDynsec({ configFile: file })
            const a = yield* admin(midge.url)
            yield* a.send([
              { command: "createRole", rolename: "writer", acls: [acl("publishClientSend", "data/#"), acl("subscribePattern", "data/#"), acl("publishClientReceive", "data/#")] },
              { command: "createClient", username: "w", password: "wpw", roles: [{ rolename: "writer" }] }
            ])
          })
        )
        const mosq = yield* startMosquitto(file)
        const w = yield* connectClient(mosq.url, { username: "w", password: "wpw", protocolVersion: 5 })
        const got = collect(w)
        expect(yield* subscribeCodes(w, ["data/#", "other"])).toEqual([1, 0x87])
        yield* publish(w, "data/1", "x", { qos: 1 })
        yield* waitFor(() => got.length === 1, "the message back")
        // Mosquitto now saves (createClient) and Midge reads its file
        const a = yield* admin(mosq.url)
        yield* a.send([{ command: "createClient", username: "m", password: "mpw", roles: [{ rolename: "writer", priority: 2 }] }])
        const midge = yield* startDynsec({ configFile: file })
        const m = yield* connectClient(midge.url, { username: "m", password: "mpw", protocolVersion: 5 })
        expect(yield* subscribeCodes(m, ["data/#", "other"])).toEqual([1, 0x87])
        yield* settle(10)
      }),
    60_000
  )
})

/** Roles, priorities and groups whose decisions depend on the evaluation order. */
const ACL_SETUP: ReadonlyArray<Record<string, unknown>> = [
  {
    command: "createRole",
    rolename: "low",
    acls: [acl("publishClientSend", "o/#", true, 1), acl("publishClientReceive", "o/#", true, 1), acl("subscribePattern", "o/#", true, 1), acl("subscribeLiteral", "o/x", false, 9)]
  },
  {
    command: "createRole",
    rolename: "high",
    acls: [
      acl("publishClientSend", "o/deny/#", false, 5),
      acl("publishClientSend", "o/deny/ok", true, 9),
      acl("publishClientReceive", "o/+/secret", false, 2),
      acl("subscribePattern", "o/+/secret", false),
      acl("subscribePattern", "o/deny/#", false, 3),
      acl("publishClientSend", "$SYS/#", true),
      acl("publishClientSend", "$CONTROL/other", true)
    ]
  },
  {
    command: "createRole",
    rolename: "grp",
    acls: [acl("publishClientSend", "g/#"), acl("publishClientReceive", "g/#"), acl("subscribePattern", "g/+"), acl("publishClientSend", "o/deny/g", true, 100), acl("subscribeLiteral", "g/#", false)]
  },
  { command: "createRole", rolename: "grp2", acls: [acl("publishClientSend", "g/no", false, 50), acl("publishClientReceive", "g/no", false)] },
  { command: "createRole", rolename: "root", acls: [acl("publishClientSend", "#"), acl("publishClientSend", "$x/#")] },
  { command: "createGroup", groupname: "ga", roles: [{ rolename: "grp" }] },
  { command: "createGroup", groupname: "gb", roles: [{ rolename: "grp2" }] },
  { command: "createClient", username: "t", password: "tpw", roles: [{ rolename: "low", priority: 1 }, { rolename: "high", priority: 2 }] },
  { command: "addGroupClient", groupname: "ga", username: "t", priority: 1 },
  { command: "addGroupClient", groupname: "gb", username: "t", priority: 5 },
  { command: "createClient", username: "root", password: "rpw", roles: [{ rolename: "root" }] },
  { command: "createClient", username: "bare", password: "bpw" },
  { command: "setDefaultACLAccess", acls: [{ acltype: "publishClientReceive", allow: true }, { acltype: "subscribe", allow: false }] }
]

const PUB_TOPICS = ["o/1", "o/deny/1", "o/deny/ok", "o/deny/g", "o/a/secret", "g/1", "g/no", "z", "$SYS/x", "$x/y", "$CONTROL/other", "$CONTROL/nothing"]
const SUB_FILTERS = ["o/#", "o/x", "o/y", "o/a/secret", "o/+/secret", "o/deny/#", "o/deny/1", "g/1", "g/#", "g/+", "#", "z", "$SYS/#", "$share/s/o/1"]
const RECV_TOPICS = ["o/1", "o/a/secret", "o/b/public", "g/1", "g/no", "z", "$x/y"]

/** What client `t` may do on a broker, seen from outside. */
const observe = (url: string) =>
  Effect.gen(function* () {
    const a = yield* admin(url)
    const rs = yield* a.send(ACL_SETUP)
    expect(rs.filter((r) => r.error !== undefined)).toEqual([])
    const spy = yield* connectClient(url, { username: "admin", password: "adminpw", protocolVersion: 5 })
    const spyGot = collect(spy)
    yield* Effect.tryPromise(() => spy.subscribeAsync(["#", "$SYS/#", "$x/#", "$CONTROL/#"], { qos: 1 }))
    const root = yield* connectClient(url, { username: "root", password: "rpw", protocolVersion: 5 })
    const results: Record<string, unknown> = {}
    for (const who of [["t", "tpw"], ["bare", "bpw"]] as const) {
      const t = yield* connectClient(url, { username: who[0], password: who[1], protocolVersion: 5 })
      const tGot = collect(t)
      const granted = yield* subscribeCodes(t, SUB_FILTERS)
      results[`${who[0]} subscribe`] = SUB_FILTERS.map((f, i) => `${f}:${granted[i]}`)
      // publish: what reaches the spy (QoS 0, then a marker from root)
      const before = spyGot.length
      for (const topic of PUB_TOPICS) yield* Effect.tryPromise(() => t.publishAsync(topic, "w", { qos: 0 }))
      yield* publish(root, `marker/${who[0]}`, "m", { qos: 1 })
      yield* waitFor(() => spyGot.some((m) => m.topic === `marker/${who[0]}`), "the marker")
      results[`${who[0]} publish`] = spyGot.slice(before).filter((m) => m.payload === "w").map((m) => m.topic).sort()
      // receive: with subscribing allowed by default, t subscribes to everything; root publishes
      yield* a.send([{ command: "setDefaultACLAccess", acls: [{ acltype: "subscribe", allow: true }] }])
      results[`${who[0]} subscribe all`] = yield* subscribeCodes(t, ["#", "$x/#"])
      for (const topic of RECV_TOPICS) yield* publish(root, topic, "r", { qos: 1 })
      yield* publish(root, "o/1", "end", { qos: 1 })
      yield* waitFor(() => tGot.some((m) => m.payload === "end"), "the end marker")
      yield* a.send([{ command: "setDefaultACLAccess", acls: [{ acltype: "subscribe", allow: false }] }])
      // the set of topics: Mosquitto sends a copy per overlapping subscription, Midge one (both allowed [MQTT-3.3.4-2])
      results[`${who[0]} receive`] = [...new Set(tGot.filter((m) => m.payload === "r").map((m) => m.topic))].sort()
      yield* Effect.promise(() => t.endAsync())
    }
    return results
  })

describe("ACL decisions: Midge allows what Mosquitto 2.0.11 allows", () => {
  it.scopedLive(
    "client roles by priority, then groups by priority, then default access; $CONTROL and $SYS rules; literal and pattern subscriptions",
    () =>
      Effect.gen(function* () {
        const dir = tmpDir()
        const mosqFile = initFile(dir, "adminpw", "m.json")
        const midgeFile = initFile(dir, "adminpw", "g.json")
        const mosq = yield* startMosquitto(mosqFile)
        const midge = yield* startDynsec({ configFile: midgeFile })
        const expected = yield* observe(mosq.url)
        const got = yield* observe(midge.url)
        expect(got).toEqual(expected)
      }),
    60_000
  )

  it.scopedLive(
    "anonymous clients: nothing but the default access, then the anonymous group's roles",
    () =>
      Effect.gen(function* () {
        const run = (url: string) =>
          Effect.gen(function* () {
            const a = yield* admin(url)
            const spy = yield* connectClient(url, { username: "admin", password: "adminpw", protocolVersion: 5 })
            const spyGot = collect(spy)
            yield* subscribeCodes(spy, ["#"])
            const out: Array<unknown> = []
            const probe = Effect.gen(function* () {
              const anon = yield* connectClient(url, { protocolVersion: 5 })
              const got = collect(anon)
              const codes = yield* subscribeCodes(anon, ["pub/#", "pub/secret", "other"])
              const before = spyGot.length
              for (const t of ["pub/x", "pub/secret", "other"]) yield* Effect.tryPromise(() => anon.publishAsync(t, "w", { qos: 0 }))
              // a round trip through the broker, then a moment for deliveries
              yield* a.send([{ command: "getDefaultACLAccess" }])
              yield* settle(100)
              out.push({ codes, published: spyGot.slice(before).filter((m) => m.payload === "w").map((m) => m.topic).sort(), received: got.map((m) => m.topic).sort() })
              yield* Effect.promise(() => anon.endAsync())
            })
            yield* probe
            yield* a.send([
              { command: "createRole", rolename: "anon", acls: [acl("publishClientSend", "pub/#"), acl("subscribePattern", "pub/#"), acl("publishClientReceive", "pub/secret", false, 1)] },
              { command: "createGroup", groupname: "anonymous", roles: [{ rolename: "anon" }] },
              { command: "setAnonymousGroup", groupname: "anonymous" }
            ])
            yield* probe
            return out
          })
        const dir = tmpDir()
        const mosq = yield* startMosquitto(initFile(dir, "adminpw", "m.json"), true)
        const midge = yield* startDynsec({ configFile: initFile(dir, "adminpw", "g.json"), allowAnonymous: true })
        const expected = yield* run(mosq.url)
        expect(yield* run(midge.url)).toEqual(expected)
      }),
    60_000
  )
})
