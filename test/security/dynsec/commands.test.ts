/**
 * The command handler without a broker: which requests change the model
 * (and so are saved) and whose clients are disconnected. Responses
 * themselves are compared with the real Mosquitto in mosquitto.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { handleRequest } from "../../../src/security/dynsec/commands.js"
import { initModel } from "../../../src/security/dynsec/ctrl.js"
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
