/**
 * `midge ctrl`: mosquitto_ctrl's command line, output and exit codes.
 *
 * - offline: usage, help, argument errors, `dynsec init` (a file Midge and
 *   Mosquitto both load), `-f <file> setClientPassword`;
 * - online, three ways over the same commands: the real `mosquitto_ctrl`
 *   against the real Mosquitto 2.0.11, `midge ctrl` against Midge, and the
 *   real `mosquitto_ctrl` against Midge: same stdout, stderr and exit code;
 * - but `setDefaultACLAccess`: mosquitto_ctrl 2.0.11 sends `"access":
 *   "allow"`, which both brokers ignore (fixed in 2.0.12); midge ctrl sends
 *   `"allow": true`, which both apply.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Readable } from "node:stream"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { runCtrl } from "../../../src/cli/ctrl.js"
import { buildCommand, printResponse } from "../../../src/security/dynsec/ctrl.js"
import { readModelFile } from "../../../src/security/dynsec/file.js"
import { connectClient, run } from "../../e2e/harness.js"
import { initFile, startDynsec, tmpDir } from "./harness.js"
import { startMosquitto } from "./mosquittoHarness.js"
import { freePort } from "../../support/processes.js"

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const ctrl = (argv: ReadonlyArray<string>, stdin?: string, env: Record<string, string | undefined> = {}): Effect.Effect<Ran> =>
  Effect.promise(async () => {
    let stdout = ""
    let stderr = ""
    const code = await runCtrl(argv, {
      stdout: (t) => (stdout += t),
      stderr: (t) => (stderr += t),
      stdin: stdin === undefined ? undefined : Readable.from([stdin]),
      env,
      timeoutMs: 5000
    })
    return { code, stdout, stderr }
  })

/** The tools' own name in the no-encryption warning differs; the rest must not. */
const normal = (r: Ran): Ran => ({
  code: r.code,
  stdout: r.stdout,
  stderr: r.stderr.replace(/^Warning: You are running (mosquitto_ctrl|midge ctrl) without encryption\.\n.*\n\n/m, "")
})

describe("midge ctrl offline", () => {
  it.effect("usage, module help, unknown modules, options and commands: mosquitto_ctrl's texts and exit codes", () =>
    Effect.gen(function* () {
      const none = yield* ctrl([])
      expect(none.code).toBe(1)
      expect(none.stdout).toContain("General usage: midge ctrl <module> <module-command> <command-options>")
      const help = yield* ctrl(["dynsec", "help"])
      expect(help.code).toBe(0)
      expect(help.stdout).toContain("Create a new client:         createClient      <username> [-c clientid] [-p password]")
      expect(yield* ctrl(["dynsec"])).toMatchObject({ code: 1 })
      expect(yield* ctrl(["other", "x"])).toEqual({ code: 10, stdout: "", stderr: "Error: Module 'other' not supported.\n" })
      expect(yield* ctrl(["--bogus", "dynsec", "listClients"])).toEqual({ code: 1, stdout: "", stderr: "Error: Unknown option '--bogus'.\n" })
      expect(yield* ctrl(["-p", "99999", "dynsec", "listClients"])).toEqual({ code: 1, stdout: "", stderr: "Error: Invalid port given: 99999\n" })
      const noHost = yield* ctrl(["-h"])
      expect(noHost.code).toBe(1)
      expect(noHost.stderr).toBe("Error: -h argument given but no host specified.\n\n")
      expect(yield* ctrl(["dynsec", "frobnicate"])).toEqual({ code: 13, stdout: "", stderr: "Command 'frobnicate' not recognised.\n" })
      for (const args of [["createClient"], ["listClients", "1", "2", "3"], ["addRoleACL", "r", "bogus", "t", "allow"], ["deleteRole"], ["removeRoleACL", "r", "x", "t"]]) {
        expect([args, yield* ctrl(["dynsec", ...args])]).toEqual([args, { code: 3, stdout: "", stderr: "Error: Invalid function arguments provided.\n" }])
      }
      expect(yield* ctrl(["dynsec", "setDefaultACLAccess", "subscribe", "maybe"])).toEqual({
        code: 3,
        stdout: "",
        stderr: 'Error: access must be "allow" or "deny".\nError: Invalid function arguments provided.\n'
      })
    })
  )

  it("builds mosquitto_ctrl's requests: priorities only when not -1, count and offset only when positive", () => {
    expect(buildCommand(["addClientRole", "u", "r"])).toEqual({ _tag: "Command", command: { command: "addClientRole", username: "u", rolename: "r" } })
    expect(buildCommand(["ADDCLIENTROLE", "u", "r", "7"])).toEqual({ _tag: "Command", command: { command: "addClientRole", username: "u", rolename: "r", priority: 7 } })
    expect(buildCommand(["addGroupClient", "g", "u", "x"])).toEqual({ _tag: "Command", command: { command: "addGroupClient", groupname: "g", username: "u", priority: 0 } })
    expect(buildCommand(["listGroups", "0", "-3"])).toEqual({ _tag: "Command", command: { command: "listGroups" } })
    expect(buildCommand(["listRoles", "5", "2"])).toEqual({ _tag: "Command", command: { command: "listRoles", count: 5, offset: 2 } })
    expect(buildCommand(["addRoleACL", "r", "subscribepattern", "a/#", "DENY", "-4"])).toEqual({
      _tag: "Command",
      command: { command: "addRoleACL", rolename: "r", acltype: "subscribepattern", topic: "a/#", allow: false, priority: -4 }
    })
    expect(buildCommand(["createClient", "u", "-c", "id", "-p", "pw"])).toEqual({ _tag: "Command", command: { command: "createClient", username: "u", clientid: "id", password: "pw" } })
    expect(buildCommand(["createClient", "u"])).toEqual({ _tag: "Command", command: { command: "createClient", username: "u" }, prompt: { kind: "createClient", username: "u" } })
    expect(buildCommand(["setClientId", "u"])).toEqual({ _tag: "Command", command: { command: "setClientId", username: "u" } })
  })

  it("prints responses as mosquitto_ctrl 2.0.11 does", () => {
    const r = (o: unknown) => printResponse(JSON.stringify({ responses: [o] }))
    expect(r({ command: "createClient", error: "Client already exists" })).toEqual({ stdout: "", stderr: "createClient: Error: Client already exists\n" })
    expect(r({ command: "createClient" })).toEqual({ stdout: "", stderr: "" })
    expect(r({ command: "getClient", data: { client: { username: "u", roles: [], groups: [{ groupname: "g" }] } } }).stdout).toBe("Username: u\nClientid:\nGroups:   g (priority: -1)\n")
    expect(r({ command: "getRole", data: { role: { rolename: "r", acls: [{ acltype: "subscribeLiteral", topic: "t", allow: false }] } } }).stdout).toBe(
      "Rolename: r\nACLs:     subscribeLiteral     : deny  : t (priority: -1)\n"
    )
    expect(r({ command: "listClients", data: { totalCount: 2, clients: ["a", { username: "b" }, 5] } }).stdout).toBe("a\nb\n")
    expect(r({ command: "getGroup" })).toEqual({ stdout: "", stderr: "Error: Invalid response from server.\n" })
    expect(printResponse("{")).toEqual({ stdout: "", stderr: "Error: Payload not JSON.\n" })
    expect(printResponse('{"responses":[]}')).toEqual({ stdout: "", stderr: "Error: Payload missing data.\n" })
  })

  it.scopedLive("dynsec init writes a file with an admin (password asked twice); never over an existing file; Midge and Mosquitto log the admin in", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const file = path.join(dir, "dynsec.json")
      const made = yield* ctrl(["dynsec", "init", file, "root"], "s3cret\ns3cret\n")
      expect(made.code).toBe(0)
      expect(made.stdout).toContain("New password for root: \nReenter password for root: \n")
      expect(made.stdout).toContain(`The client 'root' has been created in the file '${file}'.`)
      expect((fs.statSync(file).mode & 0o777).toString(8)).toBe("600")
      const model = yield* readModelFile(file)
      expect([...model.clients.keys()]).toEqual(["root"])
      expect(model.clients.get("root")!.roles).toEqual([{ rolename: "admin", priority: -1 }])
      expect(model.defaultAccess).toEqual({ publishClientSend: false, publishClientReceive: true, subscribe: false, unsubscribe: true })

      const before = fs.readFileSync(file, "utf8")
      expect(yield* ctrl(["dynsec", "init", file, "other", "pw"])).toEqual({
        code: 0,
        stdout: "",
        stderr: `dynsec init: '${file}' already exists. Remove the file or use a different location..\n`
      })
      expect(fs.readFileSync(file, "utf8")).toBe(before)
      const mismatch = yield* ctrl(["dynsec", "init", path.join(dir, "x.json"), "a"], "one\ntwo\n")
      expect(mismatch.stderr).toBe("Error: Passwords do not match.\n")
      expect(fs.existsSync(path.join(dir, "x.json"))).toBe(false)
      expect((yield* ctrl(["dynsec", "init", path.join(dir, "y.json"), "a"], "\n")).stderr).toBe("Error: Empty password.\n")
      expect(yield* ctrl(["dynsec", "init", file])).toMatchObject({ code: 3 })

      // both brokers accept the admin with that password
      fs.copyFileSync(file, path.join(dir, "copy.json"))
      const mosq = yield* startMosquitto(path.join(dir, "copy.json"))
      yield* connectClient(mosq.url, { username: "root", password: "s3cret" })
      const midge = yield* startDynsec({ configFile: file })
      yield* connectClient(midge.url, { username: "root", password: "s3cret" })
    })
  )

  it.scopedLive("-f <file> dynsec setClientPassword changes the password in the file, the rest kept", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const file = initFile(dir, "old")
      const text = JSON.parse(fs.readFileSync(file, "utf8"))
      fs.writeFileSync(file, JSON.stringify({ ...text, custom: { kept: true } }, null, 2))
      expect(yield* ctrl(["-f", file, "dynsec", "setClientPassword", "admin", "new", "-i", "200"])).toEqual({ code: 0, stdout: "", stderr: "" })
      const after = JSON.parse(fs.readFileSync(file, "utf8"))
      expect(after.custom).toEqual({ kept: true })
      expect(after.clients[0].iterations).toBe(200)
      expect(yield* ctrl(["-f", file, "dynsec", "setClientPassword", "nobody", "x"])).toEqual({ code: 0, stdout: "", stderr: "Error: Client nobody not found.\n" })
      const midge = yield* startDynsec({ configFile: file })
      yield* connectClient(midge.url, { username: "admin", password: "new" })
      const refused = yield* Effect.flip(connectClient(midge.url, { username: "admin", password: "old", protocolVersion: 4 }))
      expect(refused.message).toContain("Not authorized")
    })
  )
})

/** mosquitto_ctrl's command lines, in an order that builds on itself. */
const COMMANDS: ReadonlyArray<ReadonlyArray<string>> = [
  ["getDefaultACLAccess"],
  ["listClients"],
  ["createRole", "r1"],
  ["createRole", "r1"],
  ["createRole", "r2"],
  ["addRoleACL", "r1", "publishClientSend", "a/#", "allow", "5"],
  ["addRoleACL", "r1", "publishClientReceive", "a/+", "deny"],
  ["addRoleACL", "r1", "subscribeLiteral", "a/b", "allow", "3"],
  ["addRoleACL", "r1", "subscribePattern", "x/#", "allow"],
  ["addRoleACL", "r1", "unsubscribeLiteral", "x/y", "deny"],
  ["addRoleACL", "r1", "unsubscribePattern", "z/#", "allow", "-2"],
  ["addRoleACL", "r1", "subscribeLiteral", "a/b", "allow", "3"],
  ["addRoleACL", "r1", "publishClientSend", "a/#/b", "allow"],
  ["getRole", "r1"],
  ["getRole", "nope"],
  ["createClient", "u1", "-p", "pw1", "-c", "cid1"],
  ["createClient", "u2", "-p", "pw2"],
  ["createClient", "u1", "-p", "x"],
  ["createGroup", "g1"],
  ["createGroup", "g2"],
  ["addGroupRole", "g1", "r1", "7"],
  ["addGroupRole", "g1", "r2"],
  ["addGroupRole", "g1", "r2"],
  ["addGroupClient", "g1", "u1", "4"],
  ["addGroupClient", "g2", "u1"],
  ["addGroupClient", "g1", "u2"],
  ["addClientRole", "u1", "r2", "9"],
  ["addClientRole", "u1", "r1"],
  ["getClient", "u1"],
  ["getClient", "nope"],
  ["getGroup", "g1"],
  ["getGroup", "nope"],
  ["listClients"],
  ["listGroups"],
  ["listRoles"],
  ["listClients", "1", "1"],
  ["getAnonymousGroup"],
  ["setAnonymousGroup", "g2"],
  ["getAnonymousGroup"],
  ["disableClient", "u2"],
  ["getClient", "u2"],
  ["enableClient", "u2"],
  ["setClientId", "u2", "newid"],
  ["getClient", "u2"],
  ["setClientId", "u2"],
  ["setClientPassword", "u2", "newpw"],
  ["setClientPassword", "u2", ""],
  ["removeClientRole", "u1", "r2"],
  ["removeGroupClient", "g2", "u1"],
  ["removeGroupRole", "g1", "r2"],
  ["removeRoleACL", "r1", "publishClientSend", "a/#"],
  ["removeRoleACL", "r1", "publishClientSend", "a/#"],
  ["deleteRole", "r2"],
  ["deleteClient", "u2"],
  ["deleteClient", "u2"],
  ["getClient", "u1"],
  ["getRole", "r1"]
]

const connection = (port: number) => ["-h", "127.0.0.1", "-p", String(port), "-u", "admin", "-P", "adminpw"]

const mosquittoCtrl = (port: number, args: ReadonlyArray<string>): Effect.Effect<Ran> =>
  Effect.map(run("/usr/bin/mosquitto_ctrl", [...connection(port), "dynsec", ...args]), (r) => ({ code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr }))

describe("midge ctrl online", () => {
  it.scopedLive(
    "mosquitto_ctrl → Mosquitto, midge ctrl → Midge and mosquitto_ctrl → Midge print the same",
    () =>
      Effect.gen(function* () {
        const dir = tmpDir()
        const mosq = yield* startMosquitto(initFile(dir, "adminpw", "m.json"))
        const midgeA = yield* startDynsec({ configFile: initFile(dir, "adminpw", "a.json") })
        const midgeB = yield* startDynsec({ configFile: initFile(dir, "adminpw", "b.json") })
        for (const args of COMMANDS) {
          // three brokers with their own state: the three runs go side by side
          const [expected, ours, theirs] = (yield* Effect.all(
            [mosquittoCtrl(mosq.port, args), ctrl([...connection(midgeA.port), "dynsec", ...args]), mosquittoCtrl(midgeB.port, args)],
            { concurrency: "unbounded" }
          )).map(normal)
          expect([args, ours]).toEqual([args, expected])
          expect([args, theirs]).toEqual([args, expected])
        }
      }),
    120_000
  )

  it.scopedLive("setDefaultACLAccess from midge ctrl takes effect on Mosquitto and Midge; mosquitto_ctrl 2.0.11's is ignored by both", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const mosq = yield* startMosquitto(initFile(dir, "adminpw", "m.json"))
      const midge = yield* startDynsec({ configFile: initFile(dir, "adminpw", "g.json") })
      for (const port of [mosq.port, midge.port]) {
        expect((yield* mosquittoCtrl(port, ["setDefaultACLAccess", "subscribe", "allow"])).code).toBe(0)
        expect((yield* mosquittoCtrl(port, ["getDefaultACLAccess"])).stdout).toContain("subscribe            : deny\n")
        expect(normal(yield* ctrl([...connection(port), "dynsec", "setDefaultACLAccess", "subscribe", "allow"]))).toEqual({ code: 0, stdout: "", stderr: "" })
        expect(normal(yield* ctrl([...connection(port), "dynsec", "setDefaultACLAccess", "publishClientReceive", "deny"]))).toEqual({ code: 0, stdout: "", stderr: "" })
        expect((yield* mosquittoCtrl(port, ["getDefaultACLAccess"])).stdout).toBe(
          "publishClientSend    : deny\npublishClientReceive : deny\nsubscribe            : allow\nunsubscribe          : allow\n"
        )
      }
    })
  )

  it.scopedLive("connection failures, refused logins and refused commands: mosquitto_ctrl's messages", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const b = yield* startDynsec({ configFile: initFile(dir) })
      const free = yield* freePort
      const refused = yield* ctrl(["-h", "127.0.0.1", "-p", String(free), "dynsec", "listClients"])
      expect(normal(refused)).toEqual({ code: 14, stdout: "", stderr: "Error: Connection refused\n" })
      const p = String(b.port)
      expect(normal(yield* ctrl(["-h", "127.0.0.1", "-p", p, "-u", "admin", "-P", "wrong", "dynsec", "listClients"]))).toEqual({
        code: 0,
        stdout: "",
        stderr: "Connection error: Not authorized\n"
      })
      expect(normal(yield* ctrl(["-h", "127.0.0.1", "-p", p, "-V", "mqttv311", "-u", "admin", "-P", "wrong", "dynsec", "listClients"]))).toEqual({
        code: 0,
        stdout: "",
        stderr: "Connection error: Connection Refused: not authorised.\n"
      })
      // a client with no ACLs: the subscription to the responses is refused
      expect((yield* ctrl([...connection(b.port), "dynsec", "createClient", "plain", "-p", "pw"])).code).toBe(0)
      expect(normal(yield* ctrl(["-h", "127.0.0.1", "-p", p, "-u", "plain", "-P", "pw", "dynsec", "listClients"]))).toEqual({
        code: 0,
        stdout: "",
        stderr: "Subscribe error: Not authorized\n"
      })
      // subscribing allowed, publishing to $CONTROL not: the PUBACK says so
      yield* ctrl([...connection(b.port), "dynsec", "createRole", "sub"])
      yield* ctrl([...connection(b.port), "dynsec", "addRoleACL", "sub", "subscribePattern", "$CONTROL/#", "allow"])
      yield* ctrl([...connection(b.port), "dynsec", "addClientRole", "plain", "sub"])
      expect(normal(yield* ctrl(["-h", "127.0.0.1", "-p", p, "-u", "plain", "-P", "pw", "dynsec", "listClients"]))).toEqual({
        code: 0,
        stdout: "",
        stderr: "Publish error: Not authorized\n"
      })
      // createClient without -p asks for the password; setClientPassword without one too
      const asked = yield* ctrl([...connection(b.port), "dynsec", "createClient", "asked"], "pw\npw\n")
      expect(asked.stdout).toBe("Enter new password for asked. Press return for no password (user will be unable to login).\nNew password for asked: \nReenter password for asked: \n")
      yield* ctrl([...connection(b.port), "dynsec", "addClientRole", "asked", "sub"])
      yield* connectClient(b.url, { username: "asked", password: "pw" })
      const none = yield* ctrl([...connection(b.port), "dynsec", "createClient", "nopw"], "\n\n")
      expect(none.stdout).toBe("Enter new password for nopw. Press return for no password (user will be unable to login).\nNew password for nopw: \n")
      expect(b.service.model().clients.get("nopw")?.password).toBeUndefined()
      const set = yield* ctrl([...connection(b.port), "dynsec", "setClientPassword", "nopw"], "x\ny\n")
      expect(set).toMatchObject({ code: 0, stderr: expect.stringContaining("Error: Passwords do not match.\n") })
    })
  )

  it.scopedLive("the options file (~/.config/mosquitto_ctrl) supplies the connection; the command line wins", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const b = yield* startDynsec({ configFile: initFile(dir) })
      fs.writeFileSync(path.join(dir, "mosquitto_ctrl"), `# defaults\n-h 127.0.0.1\n-p ${b.port}\n-u admin\n-P wrong\n`)
      const got = yield* ctrl(["-P", "adminpw", "dynsec", "listClients"], undefined, { XDG_CONFIG_HOME: dir })
      expect(normal(got)).toEqual({ code: 0, stdout: "admin\n", stderr: "" })
      fs.writeFileSync(path.join(dir, "opts"), `-L mqtt://admin:adminpw@127.0.0.1:${b.port}/x\n`)
      expect(normal(yield* ctrl(["-o", path.join(dir, "opts"), "dynsec", "getAnonymousGroup"]))).toEqual({ code: 0, stdout: "\n", stderr: "" })
    })
  )
})
