/**
 * Dynamic security end to end over MQTT (MQTT.js clients, a Midge broker on
 * a real socket): every command and its response, who may send commands,
 * ACL changes reaching connected clients at once, clients disconnected
 * when their credentials go, the file after a restart, a file in
 * Mosquitto's format, and the `plugin` lines of a mosquitto.conf.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Layer } from "effect"
import { Broker } from "../../../src/Broker.js"
import { parseConfigText } from "../../../src/config/Config.js"
import { DynamicSecurity, isDynsecPlugin, optionsFromConfig, RESPONSE_TOPIC } from "../../../src/security/DynamicSecurity.js"
import { collect, connectClient, connectCollecting, publish, settle, subscribe } from "../../e2e/harness.js"
import { admin, initFile, publishCode, type Response, startDynsec, subscribeCodes, tmpDir, waitFor } from "./harness.js"

const acl = (acltype: string, topic: string, allow = true, priority?: number) => ({ acltype, topic, allow, ...(priority !== undefined ? { priority } : {}) })

/** Resolves with the v5 DISCONNECT reason code the broker sends, or "closed" when it just closes. */
const watchDisconnect = (client: import("mqtt").MqttClient) => {
  const seen: { reason: number | "closed" | undefined } = { reason: undefined }
  client.on("disconnect", (packet) => (seen.reason ??= packet.reasonCode ?? 0))
  client.on("close", () => (seen.reason ??= "closed"))
  return seen
}

describe("every command over MQTT", () => {
  it.scopedLive("create, get, list, modify and delete clients, groups and roles; default access; anonymous group", () =>
    Effect.gen(function* () {
      const b = yield* startDynsec({ configFile: initFile(tmpDir()) })
      const a = yield* admin(b.url)
      const ok = (command: string) => ({ command })
      const expectRun = (command: Record<string, unknown>, expected: Record<string, unknown>) =>
        Effect.map(a.run(command), (got) => expect([command.command, got]).toEqual([command.command, expected]))

      yield* expectRun({ command: "getDefaultACLAccess" }, {
        command: "getDefaultACLAccess",
        data: {
          acls: [
            { acltype: "publishClientSend", allow: false },
            { acltype: "publishClientReceive", allow: true },
            { acltype: "subscribe", allow: false },
            { acltype: "unsubscribe", allow: true }
          ]
        }
      })
      yield* expectRun({ command: "setDefaultACLAccess", acls: [{ acltype: "subscribe", allow: true }] }, ok("setDefaultACLAccess"))
      yield* expectRun({ command: "setDefaultACLAccess" }, { command: "setDefaultACLAccess", error: "Missing/invalid actions array" })

      // roles
      yield* expectRun({ command: "createRole", rolename: "r", textname: "R", acls: [acl("publishClientSend", "a/#")] }, ok("createRole"))
      yield* expectRun({ command: "createRole", rolename: "r" }, { command: "createRole", error: "Role already exists" })
      yield* expectRun({ command: "addRoleACL", rolename: "r", acltype: "subscribePattern", topic: "a/#", allow: true, priority: 3 }, ok("addRoleACL"))
      yield* expectRun({ command: "addRoleACL", rolename: "r", acltype: "subscribePattern", topic: "a/#" }, { command: "addRoleACL", error: "ACL with this topic already exists" })
      yield* expectRun({ command: "addRoleACL", rolename: "r", acltype: "publishClientSend", topic: "a/#/b" }, { command: "addRoleACL", error: "Invalid ACL topic" })
      yield* expectRun({ command: "removeRoleACL", rolename: "r", acltype: "publishClientSend", topic: "a/#" }, ok("removeRoleACL"))
      yield* expectRun({ command: "removeRoleACL", rolename: "r", acltype: "publishClientSend", topic: "a/#" }, { command: "removeRoleACL", error: "ACL not found" })
      yield* expectRun({ command: "modifyRole", rolename: "r", textdescription: "the r role" }, ok("modifyRole"))
      yield* expectRun({ command: "getRole", rolename: "r" }, {
        command: "getRole",
        data: { role: { rolename: "r", textname: "R", textdescription: "the r role", acls: [{ acltype: "subscribePattern", topic: "a/#", priority: 3, allow: true }] } }
      })
      yield* expectRun({ command: "createRole", rolename: "spare" }, ok("createRole"))
      yield* expectRun({ command: "listRoles" }, { command: "listRoles", data: { totalCount: 3, roles: ["admin", "r", "spare"] } })
      yield* expectRun({ command: "deleteRole", rolename: "spare" }, ok("deleteRole"))
      yield* expectRun({ command: "getRole", rolename: "spare" }, { command: "getRole", error: "Role not found" })

      // clients
      yield* expectRun({ command: "createClient", username: "u", password: "pw", clientid: "cid", textname: "U", roles: [{ rolename: "r", priority: 2 }] }, ok("createClient"))
      yield* expectRun({ command: "createClient", username: "u" }, { command: "createClient", error: "Client already exists" })
      yield* expectRun({ command: "setClientId", username: "u", clientid: "" }, ok("setClientId"))
      yield* expectRun({ command: "setClientPassword", username: "u", password: "pw2" }, ok("setClientPassword"))
      yield* expectRun({ command: "disableClient", username: "u" }, ok("disableClient"))
      yield* expectRun({ command: "enableClient", username: "u" }, ok("enableClient"))
      yield* expectRun({ command: "removeClientRole", username: "u", rolename: "r" }, ok("removeClientRole"))
      yield* expectRun({ command: "addClientRole", username: "u", rolename: "r", priority: 4 }, ok("addClientRole"))
      yield* expectRun({ command: "modifyClient", username: "u", textdescription: "a user" }, ok("modifyClient"))
      yield* expectRun({ command: "createClient", username: "v" }, ok("createClient"))

      // groups
      yield* expectRun({ command: "createGroup", groupname: "g", roles: [{ rolename: "r" }] }, ok("createGroup"))
      yield* expectRun({ command: "addGroupClient", groupname: "g", username: "u", priority: 7 }, ok("addGroupClient"))
      yield* expectRun({ command: "addGroupClient", groupname: "g", username: "v" }, ok("addGroupClient"))
      yield* expectRun({ command: "removeGroupClient", groupname: "g", username: "v" }, ok("removeGroupClient"))
      yield* expectRun({ command: "removeGroupRole", groupname: "g", rolename: "r" }, ok("removeGroupRole"))
      yield* expectRun({ command: "addGroupRole", groupname: "g", rolename: "r", priority: 1 }, ok("addGroupRole"))
      yield* expectRun({ command: "modifyGroup", groupname: "g", textname: "G" }, ok("modifyGroup"))
      yield* expectRun({ command: "getGroup", groupname: "g" }, {
        command: "getGroup",
        data: { group: { groupname: "g", textname: "G", clients: [{ username: "u" }], roles: [{ rolename: "r", priority: 1 }] } }
      })
      yield* expectRun({ command: "setAnonymousGroup", groupname: "g" }, ok("setAnonymousGroup"))
      yield* expectRun({ command: "getAnonymousGroup" }, { command: "getAnonymousGroup", data: { group: { groupname: "g" } } })
      // Mosquitto 2.0.15's fix (2.0.11 crashes): the anonymous group stays
      yield* expectRun({ command: "deleteGroup", groupname: "g" }, { command: "deleteGroup", error: "Deleting the anonymous group is forbidden" })
      yield* expectRun({ command: "createGroup", groupname: "h" }, ok("createGroup"))
      yield* expectRun({ command: "deleteGroup", groupname: "h" }, ok("deleteGroup"))
      yield* expectRun({ command: "listGroups", verbose: true }, {
        command: "listGroups",
        data: { totalCount: 1, groups: [{ groupname: "g", textname: "G", clients: [{ username: "u" }], roles: [{ rolename: "r", priority: 1 }] }] }
      })

      yield* expectRun({ command: "getClient", username: "u" }, {
        command: "getClient",
        data: { client: { username: "u", textname: "U", textdescription: "a user", roles: [{ rolename: "r", priority: 4 }], groups: [{ groupname: "g", priority: 7 }] } }
      })
      yield* expectRun({ command: "listClients", count: 1, offset: 1 }, { command: "listClients", data: { totalCount: 3, clients: ["u"] } })
      // a createClient naming a missing group leaves nothing behind (2.0.11 leaves half a client)
      yield* expectRun({ command: "createClient", username: "w", groups: [{ groupname: "g" }, { groupname: "missing" }] }, { command: "createClient", error: "Group not found" })
      yield* expectRun({ command: "getClient", username: "w" }, { command: "getClient", error: "Client not found" })
      yield* expectRun({ command: "getGroup", groupname: "g" }, {
        command: "getGroup",
        data: { group: { groupname: "g", textname: "G", clients: [{ username: "u" }], roles: [{ rolename: "r", priority: 1 }] } }
      })
      yield* expectRun({ command: "deleteClient", username: "v" }, ok("deleteClient"))
      yield* expectRun({ command: "listClients" }, { command: "listClients", data: { totalCount: 2, clients: ["admin", "u"] } })

      // several commands in one request, answered in order, correlationData echoed
      const batch = yield* a.send([
        { command: "getAnonymousGroup", correlationData: "1" },
        { command: "nope", correlationData: "2" },
        { command: "createRole", correlationData: "3" }
      ])
      expect(batch).toEqual([
        { command: "getAnonymousGroup", data: { group: { groupname: "g" } }, correlationData: "1" },
        { command: "nope", error: "Unknown command", correlationData: "2" },
        { command: "createRole", error: "Invalid/missing rolename", correlationData: "3" }
      ])
      expect(yield* a.raw("{")).toEqual([{ command: "Unknown command", error: "Payload not valid JSON" }])
    })
  )
})

describe("who may send commands", () => {
  it.scopedLive("only a client with a publishClientSend ACL for $CONTROL/dynamic-security/v1; default access never allows it", () =>
    Effect.gen(function* () {
      const b = yield* startDynsec({ configFile: initFile(tmpDir()) })
      const a = yield* admin(b.url)
      yield* a.send([
        { command: "setDefaultACLAccess", acls: [{ acltype: "publishClientSend", allow: true }, { acltype: "subscribe", allow: true }] },
        { command: "createClient", username: "plain", password: "pw" },
        { command: "createRole", rolename: "everything", acls: [acl("publishClientSend", "#"), acl("publishClientReceive", "#"), acl("subscribePattern", "#")] },
        { command: "createClient", username: "wide", password: "pw", roles: [{ rolename: "everything" }] },
        { command: "createRole", rolename: "sender", acls: [acl("publishClientSend", "$CONTROL/dynamic-security/v1")] },
        { command: "createClient", username: "sender", password: "pw", roles: [{ rolename: "sender" }] }
      ])
      // "plain" has only the default access ($CONTROL excluded); "wide"'s pattern # covers the response topic, its receive ACL # does not match $ topics
      for (const [username, codes] of [["plain", [0x87, 1]], ["wide", [1, 1]]] as const) {
        const c = yield* connectClient(b.url, { username, password: "pw", protocolVersion: 5 })
        const got = collect(c)
        expect(yield* subscribeCodes(c, [RESPONSE_TOPIC, "#"])).toEqual(codes)
        // the PUBACK says not authorised; nothing is created
        expect(yield* publishCode(c, "$CONTROL/dynamic-security/v1", JSON.stringify({ commands: [{ command: "createClient", username: `by-${username}` }] }))).toBe(0x87)
        yield* a.run({ command: "getDefaultACLAccess" })
        yield* settle(50)
        expect(b.service.model().clients.has(`by-${username}`)).toBe(false)
        // nor does it see the admin's responses
        expect(got).toEqual([])
      }
      // allowed to send but not to receive: the command runs, the response is not delivered to it
      const sender = yield* connectClient(b.url, { username: "sender", password: "pw", protocolVersion: 5 })
      const senderGot = collect(sender)
      yield* subscribeCodes(sender, [RESPONSE_TOPIC])
      yield* publish(sender, "$CONTROL/dynamic-security/v1", JSON.stringify({ commands: [{ command: "createRole", rolename: "from-sender" }] }), { qos: 1 })
      yield* waitFor(() => b.service.model().roles.has("from-sender"), "the command to run")
      yield* a.run({ command: "getDefaultACLAccess" })
      expect(senderGot).toEqual([])
    })
  )

  it.scopedLive("a retained request runs once and is not stored: a handler started later is not handed it (Mosquitto never stores requests)", () =>
    Effect.gen(function* () {
      const file = initFile(tmpDir())
      yield* Effect.scoped(
        Effect.gen(function* () {
          const b = yield* startDynsec({ configFile: file })
          const a = yield* admin(b.url)
          yield* Effect.tryPromise(() => a.client.publishAsync("$CONTROL/dynamic-security/v1", JSON.stringify({ commands: [{ command: "createRole", rolename: "once" }] }), { qos: 1, retain: true }))
          yield* waitFor(() => b.service.model().roles.has("once"), "the command to run")
          yield* a.run({ command: "deleteRole", rolename: "once" })
          // a second handler on the same broker (as after a restart with persistence) is handed the retained request
          yield* DynamicSecurity.start.pipe(Effect.provideService(DynamicSecurity, b.service), Effect.provideService(Broker, b.broker))
          // both handlers answer the next request, the second one after anything it was handed before
          const answers = collect(a.client)
          yield* publish(a.client, "$CONTROL/dynamic-security/v1", JSON.stringify({ commands: [{ command: "getDefaultACLAccess", correlationData: "probe" }] }), { qos: 1 })
          yield* waitFor(() => answers.filter((m) => m.payload.includes('"probe"')).length === 2, "both handlers to answer")
          expect(answers.filter((m) => !m.payload.includes('"probe"'))).toEqual([])
          expect(b.service.model().roles.has("once")).toBe(false)
        })
      )
    })
  )
})

describe("changes reach connected clients at once", () => {
  it.scopedLive("a removed ACL stops deliveries, an added one starts them; publishing, groups and default access follow live", () =>
    Effect.gen(function* () {
      const b = yield* startDynsec({ configFile: initFile(tmpDir()) })
      const a = yield* admin(b.url)
      yield* a.send([
        { command: "setDefaultACLAccess", acls: [{ acltype: "publishClientReceive", allow: false }] },
        { command: "createRole", rolename: "reader", acls: [acl("publishClientReceive", "news/#"), acl("subscribePattern", "news/#")] },
        { command: "createRole", rolename: "writer", acls: [acl("publishClientSend", "news/#")] },
        { command: "createClient", username: "r", password: "pw", roles: [{ rolename: "reader" }] },
        { command: "createClient", username: "w", password: "pw", roles: [{ rolename: "writer" }] }
      ])
      const r = yield* connectClient(b.url, { username: "r", password: "pw", protocolVersion: 5 })
      const rGot = collect(r)
      const rSeen = watchDisconnect(r)
      expect(yield* subscribeCodes(r, ["news/#"])).toEqual([1])
      const w = yield* connectClient(b.url, { username: "w", password: "pw", protocolVersion: 5 })
      const send = (topic: string, payload: string) => publish(w, topic, payload, { qos: 1 })

      yield* send("news/a", "1")
      yield* waitFor(() => rGot.length === 1, "the first message")
      // deny one topic above the allow: the next message on it is not delivered
      yield* a.run({ command: "addRoleACL", rolename: "reader", acltype: "publishClientReceive", topic: "news/a", allow: false, priority: 5 })
      yield* send("news/a", "2")
      yield* send("news/b", "3")
      yield* waitFor(() => rGot.length === 2, "the message on news/b")
      expect(rGot.map((m) => m.payload)).toEqual(["1", "3"])
      // removing the deny brings the topic back
      yield* a.run({ command: "removeRoleACL", rolename: "reader", acltype: "publishClientReceive", topic: "news/a" })
      yield* send("news/a", "4")
      yield* waitFor(() => rGot.length === 3, "news/a again")
      // the role taken away: nothing arrives; given back through a group: it does again
      yield* a.run({ command: "removeClientRole", username: "r", rolename: "reader" })
      yield* send("news/a", "5")
      yield* a.send([{ command: "createGroup", groupname: "readers", roles: [{ rolename: "reader" }] }, { command: "addGroupClient", groupname: "readers", username: "r" }])
      yield* send("news/a", "6")
      yield* waitFor(() => rGot.length === 4, "news/a through the group")
      expect(rGot.map((m) => m.payload)).toEqual(["1", "3", "4", "6"])
      // publishing: the writer's ACL removed, its publishes are refused at once
      yield* a.run({ command: "removeRoleACL", rolename: "writer", acltype: "publishClientSend", topic: "news/#" })
      expect(yield* publishCode(w, "news/a", "7")).toBe(0x87)
      // default access: everything not decided by an ACL
      yield* a.run({ command: "setDefaultACLAccess", acls: [{ acltype: "publishClientSend", allow: true }] })
      yield* send("news/a", "8")
      yield* waitFor(() => rGot.length === 5, "news/a by default access")
      // nobody was disconnected along the way
      expect(rSeen.reason).toBeUndefined()
      expect(r.connected && w.connected).toBe(true)
    })
  )
})

describe("clients whose credentials go are disconnected", () => {
  it.scopedLive("disableClient, deleteClient, setClientPassword, setClientId and a modifyClient changing the password: DISCONNECT 0x98, then the login is judged anew", () =>
    Effect.gen(function* () {
      const b = yield* startDynsec({ configFile: initFile(tmpDir()) })
      const a = yield* admin(b.url)
      yield* a.send([
        { command: "createRole", rolename: "any", acls: [acl("subscribePattern", "#")] },
        { command: "createClient", username: "u", password: "pw", roles: [{ rolename: "any" }] },
        { command: "createClient", username: "other", password: "pw" }
      ])
      const login = (password: string, clientId?: string) => connectClient(b.url, { username: "u", password, protocolVersion: 5, ...(clientId !== undefined ? { clientId } : {}) })
      const other = yield* connectClient(b.url, { username: "other", password: "pw", protocolVersion: 5 })
      const otherSeen = watchDisconnect(other)
      const refusedLogin = (password: string, clientId?: string) =>
        Effect.map(Effect.flip(login(password, clientId)), (e) => expect((e as Error & { code?: number }).code).toBe(0x87))

      const kicked = (command: Record<string, unknown>, password = "pw", clientId?: string) =>
        Effect.gen(function* () {
          const c1 = yield* login(password, clientId)
          const c2 = yield* login(password, clientId === undefined ? undefined : undefined)
          const seen = [watchDisconnect(c1), watchDisconnect(c2)]
          yield* a.run(command)
          yield* waitFor(() => seen.every((s) => s.reason !== undefined), "both clients of the user to be disconnected")
          expect(seen.map((s) => s.reason)).toEqual([0x98, 0x98])
        })

      yield* kicked({ command: "disableClient", username: "u" })
      yield* refusedLogin("pw")
      yield* a.run({ command: "enableClient", username: "u" })
      yield* kicked({ command: "setClientPassword", username: "u", password: "new" })
      yield* refusedLogin("pw")
      yield* kicked({ command: "modifyClient", username: "u", password: "newer" }, "new")
      // a modifyClient that only changes texts keeps the client connected
      const stays = yield* login("newer")
      const staysSeen = watchDisconnect(stays)
      yield* a.run({ command: "modifyClient", username: "u", textname: "You" })
      yield* a.run({ command: "addClientRole", username: "u", rolename: "admin" })
      yield* settle(50)
      expect(staysSeen.reason).toBeUndefined()
      yield* Effect.promise(() => stays.endAsync())
      // a client id bound to the user: other client ids are refused
      const bound = yield* login("newer", "fixed")
      const boundSeen = watchDisconnect(bound)
      yield* a.run({ command: "setClientId", username: "u", clientid: "fixed" })
      yield* waitFor(() => boundSeen.reason !== undefined, "the client to be disconnected")
      yield* refusedLogin("newer", "another")
      yield* login("newer", "fixed")
      // deleted: disconnected, and refused
      const last = yield* login("newer", "fixed")
      const lastSeen = watchDisconnect(last)
      yield* a.run({ command: "deleteClient", username: "u" })
      yield* waitFor(() => lastSeen.reason !== undefined, "the client to be disconnected")
      expect(lastSeen.reason).toBe(0x98)
      yield* refusedLogin("newer", "fixed")
      // the other user's client was never touched
      expect(otherSeen.reason).toBeUndefined()
    })
  )

  it.scopedLive("MQTT 3.1.1: the connection is closed; a disabled client is refused with CONNACK 5", () =>
    Effect.gen(function* () {
      const b = yield* startDynsec({ configFile: initFile(tmpDir()) })
      const a = yield* admin(b.url)
      yield* a.run({ command: "createClient", username: "u", password: "pw" })
      const c = yield* connectClient(b.url, { username: "u", password: "pw", protocolVersion: 4 })
      const seen = watchDisconnect(c)
      yield* a.run({ command: "disableClient", username: "u" })
      yield* waitFor(() => seen.reason === "closed", "the connection to close")
      const refused = yield* Effect.flip(connectClient(b.url, { username: "u", password: "pw", protocolVersion: 4 }))
      expect((refused as Error & { code?: number }).code).toBe(5)
    })
  )
})

describe("logins", () => {
  it.scopedLive("allow_anonymous decides for clients without a username; a username must be a dynsec client with its password", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const closed = yield* startDynsec({ configFile: initFile(dir, "adminpw", "a.json") })
      const open = yield* startDynsec({ configFile: initFile(dir, "adminpw", "b.json"), allowAnonymous: true })
      const code = (url: string, options: Record<string, unknown>) =>
        Effect.map(Effect.either(connectClient(url, { protocolVersion: 5, ...options })), (r) => (r._tag === "Right" ? 0 : (r.left as Error & { code?: number }).code))
      expect(yield* code(closed.url, {})).toBe(0x87)
      expect(yield* code(open.url, {})).toBe(0)
      for (const url of [closed.url, open.url]) {
        expect(yield* code(url, { username: "admin", password: "adminpw" })).toBe(0)
        expect(yield* code(url, { username: "admin", password: "wrong" })).toBe(0x87)
        expect(yield* code(url, { username: "admin" })).toBe(0x87)
        expect(yield* code(url, { username: "nobody", password: "x" })).toBe(0x87)
      }
    })
  )

  it.effect("a TLS identity is taken as the username (use_identity_as_username), as Mosquitto does; no identity is bad credentials", () =>
    Effect.gen(function* () {
      const service = yield* DynamicSecurity.make({ configFile: initFile(tmpDir()) })
      const base = { clientId: "c", username: undefined, password: undefined, listenerPort: 1, remoteAddress: undefined }
      expect(yield* service.authentication.authenticate({ ...base, tlsUsername: "identity", certificateCommonName: "admin" })).toEqual({ ok: true, username: "admin" })
      expect(yield* service.authentication.authenticate({ ...base, tlsUsername: "subject" })).toEqual({ ok: false, reason: "bad-credentials" })
    })
  )
})

describe("the file", () => {
  it.scopedLive("every change is saved; a new broker on the file has the same clients, passwords, groups, roles and default access", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const file = initFile(dir)
      const saved = yield* Effect.scoped(
        Effect.gen(function* () {
          const b = yield* startDynsec({ configFile: file })
          const a = yield* admin(b.url)
          yield* a.send([
            { command: "createRole", rolename: "r", acls: [acl("publishClientSend", "x/#", true, 2), acl("subscribeLiteral", "x/y", false)] },
            { command: "createGroup", groupname: "g", roles: [{ rolename: "r", priority: 3 }] },
            { command: "createClient", username: "u", password: "upw", clientid: "uc", textname: "U" },
            { command: "addGroupClient", groupname: "g", username: "u", priority: 1 },
            { command: "setAnonymousGroup", groupname: "g" },
            { command: "setDefaultACLAccess", acls: [{ acltype: "publishClientReceive", allow: false }] }
          ])
          expect(fs.readdirSync(dir)).toEqual(["dynsec.json"])
          return yield* a.send([{ command: "listClients", verbose: true }, { command: "listGroups", verbose: true }, { command: "listRoles", verbose: true }, { command: "getDefaultACLAccess" }, { command: "getAnonymousGroup" }])
        })
      )
      const b = yield* startDynsec({ configFile: file })
      const a = yield* admin(b.url)
      const again = yield* a.send([{ command: "listClients", verbose: true }, { command: "listGroups", verbose: true }, { command: "listRoles", verbose: true }, { command: "getDefaultACLAccess" }, { command: "getAnonymousGroup" }])
      const plain = (rs: Array<Response>) => rs.map(({ correlationData, ...r }) => r)
      expect(plain(again)).toEqual(plain(saved))
      expect(saved[0].data.totalCount).toBe(2)
      yield* connectClient(b.url, { username: "u", password: "upw", clientId: "uc", protocolVersion: 5 })
    })
  )

  it.scopedLive("a file in Mosquitto's format: its clients log in with their passwords, client ids and disabled flags, and get their ACLs", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const file = path.join(dir, "mosquitto.json")
      fs.copyFileSync(path.join(import.meta.dirname, "fixtures", "mosquitto-format.json"), file)
      const warnings: Array<string> = []
      const b = yield* startDynsec({ configFile: file, allowAnonymous: true, onWarning: (w) => warnings.push(w) })
      expect(warnings.length).toBe(4)
      const code = (options: Record<string, unknown>) =>
        Effect.map(Effect.either(connectClient(b.url, { protocolVersion: 5, ...options })), (r) => (r._tag === "Right" ? 0 : (r.left as Error & { code?: number }).code))
      expect(yield* code({ username: "alice", password: "alicepw" })).toBe(0)
      expect(yield* code({ username: "alice", password: "bobpw" })).toBe(0x87)
      expect(yield* code({ username: "bob", password: "bobpw", clientId: "bob-device" })).toBe(0)
      expect(yield* code({ username: "bob", password: "bobpw", clientId: "elsewhere" })).toBe(0x87)
      expect(yield* code({ username: "carol", password: "carolpw" })).toBe(0x87)
      expect(yield* code({ username: "eve", password: "" })).toBe(0x87)
      expect(yield* code({ username: "mallory", password: "x" })).toBe(0x87)

      const alice = yield* connectClient(b.url, { username: "alice", password: "alicepw", protocolVersion: 5 })
      expect(yield* subscribeCodes(alice, ["public/#", "private"])).toEqual([1, 0x87])
      const { client: guest, got } = yield* connectCollecting(b.url, { protocolVersion: 5 })
      expect(yield* subscribeCodes(guest, ["public/#"])).toEqual([1])
      yield* publish(alice, "public/secret", "s", { qos: 1 })
      expect(yield* publishCode(alice, "public/readonly", "r")).toBe(0x87)
      yield* publish(alice, "public/news", "n", { qos: 1 })
      yield* waitFor(() => got.length === 1, "the guest to get the news")
      expect(got.map((m) => m.topic)).toEqual(["public/news"])
    })
  )

  it.scopedLive("a save that fails: the change is kept in memory, answered, and the error logged", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const file = initFile(dir)
      const b = yield* startDynsec({ configFile: file })
      const a = yield* admin(b.url)
      // a directory where the temporary file must go: writing it fails, even for root
      fs.mkdirSync(`${file}.new`)
      expect(yield* a.run({ command: "createRole", rolename: "kept" })).toEqual({ command: "createRole" })
      expect(b.service.model().roles.has("kept")).toBe(true)
      expect(b.log.recent.some((l) => l.includes("Error saving Dynamic security plugin config") && l.includes("EISDIR"))).toBe(true)
      expect(fs.readFileSync(file, "utf8")).not.toContain("kept")
      fs.rmdirSync(`${file}.new`)
      yield* a.run({ command: "createRole", rolename: "next" })
      expect(fs.readFileSync(file, "utf8")).toContain('"kept"')
    })
  )

  it.effect("a file that is missing or broken stops the layer with a clear error", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const missing = yield* Effect.flip(DynamicSecurity.make({ configFile: path.join(dir, "none.json") }))
      expect(missing.reason).toBe("Read")
      fs.writeFileSync(path.join(dir, "bad.json"), "{")
      expect((yield* Effect.flip(DynamicSecurity.make({ configFile: path.join(dir, "bad.json") }))).reason).toBe("Parse")
    })
  )

  it.effect("reload re-reads the file (after an offline edit)", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const file = initFile(dir)
      const service = yield* DynamicSecurity.make({ configFile: file })
      const other = initFile(dir, "pw", "other.json")
      fs.copyFileSync(other, file)
      yield* service.reload
      const base = { clientId: "c", password: Buffer.from("pw"), listenerPort: 1, remoteAddress: undefined }
      expect(yield* service.authentication.authenticate({ ...base, username: "admin" })).toEqual({ ok: true, username: "admin" })
    })
  )
})

describe("wiring", () => {
  it.scopedLive("the documented composition: Broker.layer with DynamicSecurity.layer merged in, DynamicSecurity.start on top", () =>
    Effect.gen(function* () {
      const file = initFile(tmpDir())
      const security = DynamicSecurity.layer({ configFile: file })
      const broker = Broker.layer({ listeners: [{ port: 0, host: "127.0.0.1" }] }).pipe(Layer.provideMerge(security))
      const app = Layer.scopedDiscard(DynamicSecurity.start).pipe(Layer.provideMerge(broker))
      const ctx = yield* Layer.build(app)
      const port = Context.get(ctx, Broker).listeners[0].port
      const a = yield* admin(`mqtt://127.0.0.1:${port}`)
      expect(yield* a.run({ command: "createRole", rolename: "wired" })).toEqual({ command: "createRole" })
      expect(fs.readFileSync(file, "utf8")).toContain('"wired"')
    })
  )
})

describe("mosquitto.conf", () => {
  const conf = (text: string) => Effect.orDie(parseConfigText(text, "mosquitto.conf"))

  it("the plugin is recognised by its file name, wherever its path points", () => {
    for (const p of ["/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so", "mosquitto_dynamic_security.so", "/opt/m/lib/mosquitto_dynamic_security.so.1", "C:\\mosquitto\\mosquitto_dynamic_security.dll"]) {
      expect([p, isDynsecPlugin(p)]).toEqual([p, true])
    }
    for (const p of ["/usr/lib/auth_plugin.so", "/usr/lib/mosquitto_dynamic_security.so.bak", "/x/not_mosquitto_dynamic_security.so"]) expect([p, isDynsecPlugin(p)]).toEqual([p, false])
  })

  it.effect("plugin + plugin_opt_config_file give the options; allow_anonymous comes along; without a config file the plugin is not activated", () =>
    Effect.gen(function* () {
      const c = yield* conf("allow_anonymous true\nplugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file /var/lib/mosquitto/dynamic-security.json\nlistener 1883\n")
      expect(optionsFromConfig(c)).toEqual({ configFile: "/var/lib/mosquitto/dynamic-security.json", allowAnonymous: true })
      // the older spelling of the option, after Mosquitto 2.1's global_plugin (legacyNames.test.ts runs auth_plugin's)
      const legacy = yield* conf("global_plugin /usr/lib/mosquitto_dynamic_security.so\nauth_opt_config_file /var/lib/d.json\nlistener 1883\n")
      expect(optionsFromConfig(legacy)?.configFile).toBe("/var/lib/d.json")
      const warnings: Array<string> = []
      expect(optionsFromConfig(yield* conf("plugin /usr/lib/mosquitto_dynamic_security.so\nlistener 1883\n"), (w) => warnings.push(w))).toBeUndefined()
      expect(warnings).toEqual(["mosquitto.conf:1: Warning: Dynamic security plugin has no plugin_opt_config_file defined. The plugin will not be activated."])
      // another plugin is not loaded at all: the file is refused (test/config/Config.test.ts)
      const other = yield* Effect.either(parseConfigText("plugin /usr/lib/other.so\nplugin_opt_config_file /x.json\nlistener 1883\n", "mosquitto.conf"))
      expect(Either.isLeft(other) && other.left.message).toMatch(/^mosquitto.conf:1 plugin: cannot be loaded/)
      expect(optionsFromConfig(yield* conf("listener 1883\n"))).toBeUndefined()
    })
  )
})

/** UNSUBSCRIBE and the UNSUBACK: its v5 reason codes ([] for 3.1.1, whose UNSUBACK has none). */
const unsubscribeCodes = (client: import("mqtt").MqttClient, filters: ReadonlyArray<string>) =>
  Effect.async<Array<number>, Error>((resume) => {
    client.unsubscribe([...filters], (error, packet) => {
      if (error) return resume(Effect.fail(error))
      resume(Effect.succeed((packet as { granted?: Array<number> } | undefined)?.granted ?? []))
    })
  })

describe("unsubscribeLiteral / unsubscribePattern are enforced (Mosquitto's handle_unsubscribe.c)", () => {
  it.scopedLive("a denied UNSUBSCRIBE keeps the subscription: v5 UNSUBACK 0x87, 3.1.1 an UNSUBACK all the same; deliveries go on", () =>
    Effect.gen(function* () {
      const b = yield* startDynsec({ configFile: initFile(tmpDir()) })
      const a = yield* admin(b.url)
      yield* a.send([
        {
          command: "createRole",
          rolename: "pinned",
          acls: [
            acl("subscribePattern", "pin/#"),
            acl("publishClientSend", "pin/#"),
            acl("publishClientReceive", "pin/#"),
            acl("unsubscribeLiteral", "pin/locked", false),
            acl("unsubscribePattern", "pin/fixed/#", false)
          ]
        },
        { command: "createClient", username: "device", password: "pw", roles: [{ rolename: "pinned" }] }
      ])
      for (const protocolVersion of [5, 4] as const) {
        const c = yield* connectClient(b.url, { username: "device", password: "pw", protocolVersion, clientId: `device-v${protocolVersion}` })
        const got = collect(c)
        expect(yield* subscribeCodes(c, ["pin/locked", "pin/fixed/+", "pin/free"])).toEqual([1, 1, 1])
        // dynsec init's default access allows unsubscribe: only the deny ACLs refuse
        const codes = yield* unsubscribeCodes(c, ["pin/locked", "pin/fixed/+", "pin/free", "pin/never"])
        expect(codes).toEqual(protocolVersion === 5 ? [0x87, 0x87, 0x00, 0x11] : [])
        for (const t of ["pin/locked", "pin/fixed/x", "pin/free"]) yield* publish(c, t, `v${protocolVersion}`, { qos: 1 })
        yield* waitFor(() => got.length >= 2, "deliveries on the subscriptions that stayed")
        yield* settle(100)
        expect(got.map((m) => m.topic).sort()).toEqual(["pin/fixed/x", "pin/locked"])
      }
      // the deny ACL removed: the same UNSUBSCRIBE now succeeds
      yield* a.run({ command: "removeRoleACL", rolename: "pinned", acltype: "unsubscribeLiteral", topic: "pin/locked" })
      const c = yield* connectClient(b.url, { username: "device", password: "pw", protocolVersion: 5, clientId: "device-v5" })
      expect(yield* subscribeCodes(c, ["pin/locked"])).toEqual([1])
      expect(yield* unsubscribeCodes(c, ["pin/locked"])).toEqual([0x00])
    })
  )
})

describe("$CONTROL/ messages go to the handler only (Mosquitto's control.c)", () => {
  it.scopedLive("requests are neither delivered to subscribers nor retained; responses are; other $CONTROL/ topics are acked and dropped", () =>
    Effect.gen(function* () {
      const b = yield* startDynsec({ configFile: initFile(tmpDir()) })
      const a = yield* admin(b.url)
      yield* a.send([
        { command: "createRole", rolename: "watcher", acls: [acl("subscribePattern", "$CONTROL/#"), acl("publishClientReceive", "$CONTROL/#"), acl("publishClientSend", "$CONTROL/#")] },
        { command: "createClient", username: "watcher", password: "pw", roles: [{ rolename: "watcher" }] }
      ])
      const watcher = yield* connectClient(b.url, { username: "watcher", password: "pw", protocolVersion: 5 })
      const seen = collect(watcher)
      expect(yield* subscribeCodes(watcher, ["$CONTROL/#"])).toEqual([1])
      // a request with a password in it: the watcher sees the response, never the request
      yield* a.run({ command: "createClient", username: "secretive", password: "do-not-leak" })
      yield* waitFor(() => seen.length >= 1, "the response to reach the watcher")
      // a retained request: run, acknowledged with success, not stored
      yield* Effect.tryPromise(() => a.client.publishAsync("$CONTROL/dynamic-security/v1", JSON.stringify({ commands: [{ command: "createRole", rolename: "kept" }] }), { qos: 1, retain: true }))
      yield* waitFor(() => b.service.model().roles.has("kept"), "the retained request to run")
      // nobody's handler: acknowledged with success (not 0x10 no matching subscribers), dropped
      expect(yield* publishCode(watcher, "$CONTROL/nobody/v1", "x")).toBe(0)
      expect(yield* publishCode(watcher, "$CONTROL/nobody/v1", "x", 2)).toBe(0)
      // a client cannot forge responses: its publish on the response topic is consumed like any $CONTROL/ message
      expect(yield* publishCode(watcher, RESPONSE_TOPIC, '{"responses":[{"command":"forged"}]}')).toBe(0)
      yield* a.run({ command: "getDefaultACLAccess" })
      yield* waitFor(() => seen.length >= 3, "three responses")
      yield* settle(100)
      expect(seen.map((m) => m.topic)).toEqual([RESPONSE_TOPIC, RESPONSE_TOPIC, RESPONSE_TOPIC])
      expect(seen.some((m) => m.payload.includes("do-not-leak") || m.payload.includes("forged"))).toBe(false)
      // a new subscriber is handed no retained request
      const late = yield* connectClient(b.url, { username: "watcher", password: "pw", protocolVersion: 5, clientId: "late" })
      const lateGot = collect(late)
      yield* subscribe(late, "$CONTROL/#", { qos: 1 })
      yield* settle(100)
      expect(lateGot).toEqual([])
      expect(b.broker.stats().retained).toBe(0)
    })
  )
})
