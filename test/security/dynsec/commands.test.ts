/**
 * The command handler without a broker: which requests change the model
 * (and so are saved) and whose clients are disconnected. Responses
 * themselves are compared with the real Mosquitto in mosquitto.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { COMMANDS, handleRequest } from "../../../src/security/dynsec/commands.js"
import { initModel } from "../../../src/security/dynsec/ctrl.js"
import { modelText, parseModelText } from "../../../src/security/dynsec/file.js"
import type { PasswordRecord } from "../../../src/security/dynsec/model.js"

const record: PasswordRecord = { hash: new Uint8Array(64), salt: new Uint8Array(12), iterations: 101 }
const ctx = { hashPassword: () => record }

const setup = () => {
  const m = initModel("admin", record)
  handleRequest(
    m,
    JSON.stringify({
      commands: [
        { command: "createRole", rolename: "r" },
        { command: "createGroup", groupname: "g" },
        { command: "createClient", username: "u", password: "p" },
        { command: "addGroupClient", groupname: "g", username: "u" }
      ]
    }),
    ctx
  )
  return m
}

const run = (command: Record<string, unknown>) => handleRequest(setup(), JSON.stringify({ commands: [command] }), ctx)

describe("what a command changes", () => {
  it("reads change nothing: not saved, nobody disconnected", () => {
    for (const command of ["getClient", "listClients", "getGroup", "listGroups", "getRole", "listRoles", "getDefaultACLAccess", "getAnonymousGroup"]) {
      const out = run({ command, username: "u", groupname: "g", rolename: "r" })
      expect([command, out.changed, out.kick, out.responses[0].error]).toEqual([command, false, [], undefined])
    }
  })

  it("a failed command changes nothing", () => {
    for (const command of [{ command: "createClient", username: "u" }, { command: "deleteRole", rolename: "nope" }, { command: "setClientPassword", username: "u", password: "" }]) {
      const out = run(command)
      expect([command.command, out.changed, out.kick]).toEqual([command.command, false, []])
      expect(out.responses[0].error).toBeTypeOf("string")
    }
  })

  it("credentials that stop being valid disconnect the username's clients; role, group and ACL changes do not", () => {
    const kicks: ReadonlyArray<readonly [Record<string, unknown>, ReadonlyArray<string>]> = [
      [{ command: "deleteClient", username: "u" }, ["u"]],
      [{ command: "disableClient", username: "u" }, ["u"]],
      [{ command: "enableClient", username: "u" }, []],
      [{ command: "setClientPassword", username: "u", password: "x" }, ["u"]],
      [{ command: "setClientId", username: "u", clientid: "c" }, ["u"]],
      [{ command: "modifyClient", username: "u", password: "x" }, ["u"]],
      [{ command: "modifyClient", username: "u", clientid: "" }, ["u"]],
      [{ command: "modifyClient", username: "u", password: "", textname: "t", roles: [{ rolename: "r" }] }, []],
      [{ command: "addClientRole", username: "u", rolename: "r" }, []],
      [{ command: "removeGroupClient", groupname: "g", username: "u" }, []],
      [{ command: "addRoleACL", rolename: "r", acltype: "publishClientSend", topic: "x" }, []],
      [{ command: "deleteRole", rolename: "r" }, []],
      [{ command: "deleteGroup", groupname: "g" }, []],
      [{ command: "setAnonymousGroup", groupname: "g" }, []],
      [{ command: "setDefaultACLAccess", acls: [] }, []]
    ]
    for (const [command, kick] of kicks) {
      const out = run(command)
      expect([command, out.changed, out.kick, out.responses[0].error]).toEqual([command, true, kick, undefined])
    }
  })

  it("a payload that is not UTF-8: names with the bad bytes are refused, as mosquitto_validate_utf8 does", () => {
    const payload = Buffer.concat([Buffer.from('{"commands":[{"command":"createClient","username":"a'), Buffer.from([0xc3, 0x28]), Buffer.from('"},{"command":"createClient","username":"ok"}]}')])
    const out = handleRequest(setup(), payload, ctx)
    expect(out.responses).toEqual([{ command: "createClient", error: "Username not valid UTF-8" }, { command: "createClient" }])
  })
})

/**
 * Any request an administrator can send: commands by name, with each field Mosquitto reads
 * given a value of the right type or not, names from a small set so that commands meet
 * each other's clients, groups and roles.
 */
const NAMES = ["u", "v", "g", "h", "r", "s", "admin", ""]
const name = fc.oneof({ arbitrary: fc.constantFrom(...NAMES), weight: 4 }, fc.string({ maxLength: 4 }), fc.integer(), fc.constant(null), fc.boolean())
const value = fc.oneof(name, fc.integer({ min: -3, max: 3 }), fc.constantFrom("publishClientSend", "publishClientReceive", "subscribeLiteral", "subscribePattern", "unsubscribeLiteral", "unsubscribePattern", "a/#", "a/+/b", "#"))
const ref = fc.record({ rolename: name, groupname: name, username: name, priority: fc.oneof(fc.integer({ min: -2, max: 5 }), name), acltype: value, topic: value, allow: fc.oneof(fc.boolean(), name) }, { requiredKeys: [] })
const field = fc.oneof({ arbitrary: value, weight: 4 }, fc.array(ref, { maxLength: 3 }), ref)
const command = fc.tuple(
  fc.oneof({ arbitrary: fc.constantFrom(...COMMANDS), weight: 9 }, fc.string({ maxLength: 6 }), fc.integer()),
  fc.record(
    Object.fromEntries(
      ["username", "password", "clientid", "groupname", "rolename", "textname", "textdescription", "roles", "groups", "clients", "acls", "acltype", "topic", "priority", "allow", "count", "offset", "verbose", "correlationData"]
        .map((key) => [key, key === "correlationData" ? fc.oneof({ arbitrary: fc.string({ maxLength: 3 }), weight: 5 }, field) : field])
    ),
    { requiredKeys: [] }
  )
).map(([command, fields]) => ({ ...fields, command }))

/** Responses Mosquitto gives: one per command, up to a correlationData that is not a string, where it stops (plugin.c) */
const answers = (commands: ReadonlyArray<Record<string, unknown>>): number => {
  const stop = commands.findIndex((c) => typeof c["command"] === "string" && "correlationData" in c && typeof c["correlationData"] !== "string")
  return stop === -1 ? commands.length : stop + 1
}

describe("any request", () => {
  it.prop(
    "is answered command by command (up to a bad correlationData), never throws, and changes the model only when it says so (what is saved)",
    [fc.array(fc.array(command, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 6 })],
    ([requests]) => {
      const m = setup()
      for (const commands of requests) {
        const before = modelText(m)
        const out = handleRequest(m, JSON.stringify({ commands }), ctx)
        expect(out.responses).toHaveLength(answers(commands))
        const after = modelText(m)
        // a change not reported would not be written to the file: lost at the next restart
        if (after !== before) expect(out.changed, JSON.stringify(commands)).toBe(true)
        // what is written reads back as the same model
        expect(modelText(Effect.runSync(parseModelText(after, "dynamic-security.json")))).toBe(after)
      }
    },
    { fastCheck: { seed: 20_261_128, numRuns: 400 } }
  )
})
