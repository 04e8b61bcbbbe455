/**
 * The file format and the JSON helpers: a file saved by the real Mosquitto
 * 2.0.11 comes back byte for byte, a hand-written file in Mosquitto's
 * documented format loads as Mosquitto would load it, any model survives
 * a save and a load, and cJSON's / libmosquitto's rules are kept.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { readModelFile, writeModelFile, modelText, parseModelText } from "../../../src/security/dynsec/file.js"
import { getItem, printFormatted, strcmp, subTopicCheck, validUtf8 } from "../../../src/security/dynsec/json.js"
import { ACL_TYPES, addAcl, addRoleRef, emptyAcls, emptyModel, joinGroup, type Model, modelFromJson, modelToJson } from "../../../src/security/dynsec/model.js"
import { tmpDir } from "./harness.js"

const fixture = (name: string) => path.join(import.meta.dirname, "fixtures", name)

describe("the file, as Mosquitto writes it", () => {
  it.effect("a file saved by Mosquitto 2.0.11 is written back byte for byte (cJSON_Print's layout, Mosquitto's order)", () =>
    Effect.gen(function* () {
      const text = fs.readFileSync(fixture("saved-by-mosquitto.json"), "utf8")
      const model = yield* parseModelText(text, "saved-by-mosquitto.json")
      expect(modelText(model)).toBe(text)
      expect([...model.clients.keys()].sort()).toEqual(["admin", "sensor1", "u2", "u3"])
      expect(model.anonymousGroup).toBe("g1")
      expect(model.clients.get("sensor1")).toMatchObject({ clientid: "sensor-1", textname: "Sensor one", textdescription: "in the hall", groups: [{ groupname: "devices", priority: 2 }] })
    })
  )

  it.effect("a hand-written file in Mosquitto's documented format: keys of any case, defaults, and what Mosquitto skips", () =>
    Effect.gen(function* () {
      const warnings: Array<string> = []
      const m = yield* readModelFile(fixture("mosquitto-format.json"), (w) => warnings.push(w))
      expect([...m.clients.keys()]).toEqual(["alice", "bob", "carol", "eve"])
      const alice = m.clients.get("alice")!
      expect(alice).toMatchObject({ textname: "Alice", textdescription: "written by hand, keys in another case", disabled: false, clientid: undefined })
      // roles by priority, the missing role dropped; groups from the group side
      expect(alice.roles).toEqual([{ rolename: "writer", priority: 2 }, { rolename: "reader", priority: -1 }])
      expect(alice.groups).toEqual([{ groupname: "staff", priority: -1 }])
      expect(m.clients.get("bob")).toMatchObject({ clientid: "bob-device", groups: [{ groupname: "staff", priority: 3 }] })
      expect(m.clients.get("bob")!.password!.iterations).toBe(1000)
      expect(m.clients.get("carol")!.disabled).toBe(true)
      expect(m.clients.get("eve")!.password).toBeUndefined()
      expect(m.groups.get("staff")!.clients).toEqual([{ username: "alice", priority: -1 }, { username: "bob", priority: 3 }])
      expect(m.anonymousGroup).toBe("guests")
      const writer = m.roles.get("writer")!
      expect(writer.textname).toBe("Writers")
      expect(writer.acls.publishClientSend).toEqual([
        { topic: "public/readonly", priority: 1, allow: false },
        { topic: "public/#", priority: 0, allow: true }
      ])
      expect(writer.acls.subscribeLiteral).toEqual([])
      expect(m.roles.get("reader")!.acls.publishClientReceive.map((a) => a.topic)).toEqual(["public/secret", "public/#"])
      expect(warnings.map((w) => w.replace(/^.*?json: /, ""))).toEqual([
        "client 'alice': role 'ghost' does not exist; ignored",
        "client 'mallory': invalid password, salt or iterations; skipped",
        "clients[5]: no username; skipped",
        "group 'staff': client 'nobody' does not exist; ignored"
      ])
      expect(m.defaultAccess).toEqual({ publishClientSend: false, publishClientReceive: true, subscribe: false, unsubscribe: true })
    })
  )

  it.effect("Mosquitto's defaults: an empty file is an empty configuration with everything denied; missing default keys are false", () =>
    Effect.gen(function* () {
      const empty = yield* parseModelText("", "f")
      expect(empty.defaultAccess).toEqual({ publishClientSend: false, publishClientReceive: false, subscribe: false, unsubscribe: false })
      const partial = yield* parseModelText('{"defaultACLAccess":{"subscribe":true,"unsubscribe":"yes"}}', "f")
      expect(partial.defaultAccess).toEqual({ publishClientSend: false, publishClientReceive: false, subscribe: true, unsubscribe: false })
    })
  )

  it.effect("a file Midge cannot use is an error, not an empty configuration", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const missing = yield* Effect.flip(readModelFile(path.join(dir, "missing.json")))
      expect(missing).toMatchObject({ _tag: "DynamicSecurityError", reason: "Read" })
      expect(missing.message).toContain("ENOENT")
      expect(yield* Effect.flip(parseModelText("{nope", "f.json"))).toMatchObject({ reason: "Parse", message: "the dynamic security file 'f.json' is not valid JSON" })
      expect(yield* Effect.flip(parseModelText('{"clients":{}}', "f.json"))).toMatchObject({ reason: "Parse", message: "f.json: 'clients' is not an array" })
      expect(yield* Effect.flip(parseModelText("[]", "f.json"))).toMatchObject({ reason: "Parse" })
    })
  )

  it.effect("saving is atomic: no temporary file left, permissions kept (0600 for a new file)", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const file = path.join(dir, "d.json")
      yield* writeModelFile(file, emptyModel())
      expect((fs.statSync(file).mode & 0o777).toString(8)).toBe("600")
      fs.chmodSync(file, 0o640)
      const m = emptyModel()
      m.defaultAccess.subscribe = true
      yield* writeModelFile(file, m)
      expect((fs.statSync(file).mode & 0o777).toString(8)).toBe("640")
      expect(fs.readdirSync(dir)).toEqual(["d.json"])
      expect((yield* readModelFile(file)).defaultAccess.subscribe).toBe(true)
      // the temporary file cannot be written (a directory is in the way): the save fails, the file is untouched
      fs.mkdirSync(`${file}.new`)
      expect(yield* Effect.flip(writeModelFile(file, emptyModel()))).toMatchObject({ reason: "Write" })
      expect((yield* readModelFile(file)).defaultAccess.subscribe).toBe(true)
    })
  )
})

// ---------------------------------------------------------------------------
// any model survives save and load

const name = fc.stringMatching(/^[a-zA-Z0-9_é/+#$ -]{0,8}$/)

const arbModel: fc.Arbitrary<Model> = fc
  .record({
    roles: fc.uniqueArray(name, { maxLength: 4 }),
    groups: fc.uniqueArray(name, { maxLength: 3 }),
    clients: fc.uniqueArray(name, { maxLength: 4 }),
    access: fc.tuple(fc.boolean(), fc.boolean(), fc.boolean(), fc.boolean()),
    acls: fc.array(fc.tuple(fc.nat(20), fc.constantFrom(...ACL_TYPES), name, fc.integer({ min: -3, max: 3 }), fc.boolean()), { maxLength: 12 }),
    refs: fc.array(fc.tuple(fc.nat(20), fc.nat(20), fc.integer({ min: -2, max: 2 }), fc.boolean()), { maxLength: 12 }),
    members: fc.array(fc.tuple(fc.nat(20), fc.nat(20), fc.integer({ min: -2, max: 2 })), { maxLength: 8 }),
    texts: fc.array(fc.option(fc.string({ maxLength: 5 }), { nil: undefined }), { minLength: 4, maxLength: 4 }),
    flags: fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
    anonymous: fc.option(fc.nat(20), { nil: undefined })
  })
  .map((r) => {
    const m = emptyModel()
    ;[m.defaultAccess.publishClientSend, m.defaultAccess.publishClientReceive, m.defaultAccess.subscribe, m.defaultAccess.unsubscribe] = r.access
    for (const [i, rolename] of r.roles.entries()) m.roles.set(rolename, { rolename, textname: r.texts[i], textdescription: undefined, acls: emptyAcls() })
    for (const [i, groupname] of r.groups.entries()) m.groups.set(groupname, { groupname, textname: undefined, textdescription: r.texts[i], roles: [], clients: [] })
    for (const [i, username] of r.clients.entries()) {
      m.clients.set(username, {
        username,
        clientid: r.flags[i] ? `id-${username}` : undefined,
        textname: r.texts[(i + 1) % 4],
        textdescription: undefined,
        disabled: r.flags[(i + 1) % 4],
        password: r.flags[(i + 2) % 4] ? { hash: new Uint8Array(64).fill(i), salt: new Uint8Array(12).fill(i + 1), iterations: 101 + i } : undefined,
        roles: [],
        groups: []
      })
    }
    const roles = [...m.roles.values()]
    const groups = [...m.groups.values()]
    const clients = [...m.clients.values()]
    if (roles.length > 0) {
      for (const [i, type, topic, priority, allow] of r.acls) addAcl(roles[i % roles.length].acls[type], { topic, priority, allow })
      for (const [i, j, priority, toGroup] of r.refs) {
        const owner = toGroup ? groups[i % Math.max(groups.length, 1)] : clients[i % Math.max(clients.length, 1)]
        if (owner !== undefined) addRoleRef(owner.roles, roles[j % roles.length].rolename, priority)
      }
    }
    if (groups.length > 0 && clients.length > 0) for (const [i, j, priority] of r.members) joinGroup(clients[i % clients.length], groups[j % groups.length], priority)
    if (r.anonymous !== undefined && groups.length > 0) m.anonymousGroup = groups[r.anonymous % groups.length].groupname
    return m
  })

describe("save and load", () => {
  it.prop("any model is the same after being saved and loaded", [arbModel], ([m]) => {
    const text = modelText(m)
    const back = modelFromJson(JSON.parse(text))
    expect(modelToJson(back)).toEqual(modelToJson(m))
    expect(modelText(back)).toBe(text)
  }, { fastCheck: { seed: 20240517, numRuns: 200 } })
})

// ---------------------------------------------------------------------------
// helpers

describe("cJSON and libmosquitto rules", () => {
  it("cJSON_Print: tabs, `\"key\":\\tvalue`, arrays inline, empty objects and arrays", () => {
    expect(printFormatted({ a: [], b: {}, c: [{ d: 1 }, { e: "x\n" }], f: true })).toBe(
      '{\n\t"a":\t[],\n\t"b":\t{\n\t},\n\t"c":\t[{\n\t\t\t"d":\t1\n\t\t}, {\n\t\t\t"e":\t"x\\n"\n\t\t}],\n\t"f":\ttrue\n}'
    )
  })

  it("keys match whatever their ASCII case, an exact key first", () => {
    expect(getItem({ TextName: "a" }, "textname")).toBe("a")
    expect(getItem({ textname: "b", TextName: "a" }, "textname")).toBe("b")
    expect(getItem({ "TÉXT": "a" }, "tÉxt")).toBe("a")
    expect(getItem({ "É": "a" }, "é")).toBeUndefined()
    expect(getItem([1], "0")).toBeUndefined()
  })

  it.prop("names sort as strcmp sorts their UTF-8 bytes", [fc.string({ unit: "binary" }), fc.string({ unit: "binary" })], ([a, b]) => {
    expect(Math.sign(strcmp(a, b))).toBe(Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b))))
  }, { fastCheck: { seed: 42 } })

  it("mosquitto_validate_utf8: no control characters, non-characters or lone surrogates", () => {
    for (const ok of ["", "abc", "héllo", "日本", "😀", "a b"]) expect([ok, validUtf8(ok)]).toEqual([ok, true])
    for (const bad of ["\u0000", "a\u0001", "\u001f", "\u007f", "\u0085", "\ufdd0", "\ufffe", "\uffff", "\ud800", "a\udc00b", "\u{1fffe}"]) {
      expect([bad, validUtf8(bad)]).toEqual([bad, false])
    }
    expect(validUtf8("\ufffd")).toBe(true)
    expect(validUtf8("\ufffd", true)).toBe(false)
    expect(validUtf8("x".repeat(65537))).toBe(false)
  })

  it("mosquitto_sub_topic_check: + and # only as whole levels, # last", () => {
    for (const ok of ["", "a", "a/b", "+", "#", "a/+/b", "a/#", "+/+", "/", "$SYS/#"]) expect([ok, subTopicCheck(ok)]).toEqual([ok, true])
    for (const bad of ["a+", "+a", "a/#/b", "#/a", "a#", "a/b#", "++"]) expect([bad, subTopicCheck(bad)]).toEqual([bad, false])
  })
})
