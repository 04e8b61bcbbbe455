/**
 * The Authentication / Authorization / SecurityFiles services built from
 * files: password files written by Debian's real `mosquitto_passwd`, the
 * decisions Mosquitto 2.0.11 makes (checked by hand against the real broker,
 * and in mosquitto.test.ts), per-listener settings, reload.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, FastCheck as fc, Layer } from "effect"
import { parseConfigText } from "../../src/config/Config.js"
import {
  allowAll,
  type AuthOptions,
  type AuthRequest,
  Authentication,
  Authorization,
  clientIdAllowed,
  layerFromConfig,
  make,
  optionsFromConfig,
  SecurityFiles
} from "../../src/security/Auth.js"
import { formatEntry } from "../../src/security/passwordFile.js"
import { hashPassword } from "../../src/security/passwordHash.js"

const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), "midge-auth-"))

/** Debian's mosquitto_passwd (the real tool): -c creates, -b takes the password on the command line. */
const mosquittoPasswd = (file: string, user: string, password: string, create = false): void => {
  execFileSync("/usr/bin/mosquitto_passwd", [...(create ? ["-c"] : []), "-b", file, user, password], { stdio: "ignore" })
}

const request = (r: Partial<AuthRequest>): AuthRequest => ({
  clientId: "client-1",
  username: undefined,
  password: undefined,
  listenerPort: 1883,
  remoteAddress: "127.0.0.1",
  ...r
})

const authenticate = (options: AuthOptions, r: Partial<AuthRequest>) =>
  Effect.flatMap(make(options), (s) => s.authentication.authenticate(request(r)))

const pw = (s: string) => Buffer.from(s)

describe("Authentication from a password_file", () => {
  const dir = tmp()
  const file = path.join(dir, "passwd")
  mosquittoPasswd(file, "alice", "secret", true)
  mosquittoPasswd(file, "bob", "hunter2")

  it("the real tool writes $7$ (PBKDF2-SHA512) hashes", () => {
    const lines = fs.readFileSync(file, "utf8").trim().split("\n")
    expect(lines.map((l) => l.split(":")[0])).toEqual(["alice", "bob"])
    expect(lines.every((l) => l.split(":")[1].startsWith("$7$"))).toBe(true)
  })

  it.effect("a user of the file with the right password gets in, with its username", () =>
    Effect.gen(function* () {
      const r = yield* authenticate({ allowAnonymous: false, passwordFile: file }, { username: "alice", password: pw("secret") })
      expect(r).toEqual({ ok: true, username: "alice" })
      expect(yield* authenticate({ allowAnonymous: false, passwordFile: file }, { username: "bob", password: pw("hunter2") })).toEqual({
        ok: true,
        username: "bob"
      })
    })
  )

  // Mosquitto 2.0.11 answers every one of these with CONNACK 5 / v5 0x87 "not authorised"
  for (const [what, r] of [
    ["a wrong password", { username: "alice", password: pw("wrong") }],
    ["another user's password", { username: "alice", password: pw("hunter2") }],
    ["no password", { username: "alice" }],
    ["an unknown user", { username: "carol", password: pw("secret") }],
    ["an unknown user without password", { username: "carol" }]
  ] as const) {
    for (const allowAnonymous of [false, true]) {
      it.effect(`${what} is not authorised (allow_anonymous ${allowAnonymous})`, () =>
        Effect.gen(function* () {
          expect(yield* authenticate({ allowAnonymous, passwordFile: file }, r)).toEqual({ ok: false, reason: "not-authorised" })
        })
      )
    }
  }

  it.effect("an anonymous client gets in only with allow_anonymous true", () =>
    Effect.gen(function* () {
      expect(yield* authenticate({ allowAnonymous: true, passwordFile: file }, {})).toEqual({ ok: true, username: undefined })
      expect(yield* authenticate({ allowAnonymous: false, passwordFile: file }, {})).toEqual({ ok: false, reason: "not-authorised" })
    })
  )

  it.effect("without a password_file, allow_anonymous decides for everyone, a username included (unchecked)", () =>
    Effect.gen(function* () {
      expect(yield* authenticate({ allowAnonymous: true }, { username: "x", password: pw("y") })).toEqual({ ok: true, username: "x" })
      expect(yield* authenticate({ allowAnonymous: true }, {})).toEqual({ ok: true, username: undefined })
      expect(yield* authenticate({ allowAnonymous: false }, { username: "x", password: pw("y") })).toEqual({ ok: false, reason: "not-authorised" })
      expect(yield* authenticate({ allowAnonymous: false }, {})).toEqual({ ok: false, reason: "not-authorised" })
    })
  )

  it.effect("$6$ and argon2id hashes made by Midge's hash module verify too", () =>
    Effect.gen(function* () {
      const f = path.join(tmp(), "passwd")
      const six = yield* hashPassword("six", { type: "sha512" })
      const argon = yield* hashPassword("argon", { type: "argon2id" })
      fs.writeFileSync(f, `${formatEntry("s", six)}\n${formatEntry("a", argon)}\n`)
      const o = { allowAnonymous: false, passwordFile: f }
      expect(yield* authenticate(o, { username: "s", password: pw("six") })).toEqual({ ok: true, username: "s" })
      expect(yield* authenticate(o, { username: "s", password: pw("six!") })).toEqual({ ok: false, reason: "not-authorised" })
      expect(yield* authenticate(o, { username: "a", password: pw("argon") })).toEqual({ ok: true, username: "a" })
    })
  )

  it.effect("bad lines are skipped with a warning (Mosquitto logs and starts); an unreadable file fails the layer", () =>
    Effect.gen(function* () {
      const f = path.join(tmp(), "passwd")
      fs.writeFileSync(f, `${fs.readFileSync(file, "utf8")}plain:text\nnocolon\n`)
      const warnings: Array<string> = []
      const s = yield* make({ allowAnonymous: false, passwordFile: f, onWarning: (w) => warnings.push(w) })
      expect(warnings).toHaveLength(2)
      expect(warnings[0]).toContain(`${f}:3:`)
      expect(yield* s.authentication.authenticate(request({ username: "plain", password: pw("text") }))).toEqual({ ok: false, reason: "not-authorised" })
      const missing = yield* Effect.exit(make({ allowAnonymous: false, passwordFile: path.join(dir, "nope") }))
      expect(Exit.isFailure(missing)).toBe(true)
      expect(JSON.stringify(missing)).toContain("PasswordFile")
    })
  )
})

describe("clientid_prefixes", () => {
  it("a client id must start with the prefix; unset or empty allows all", () => {
    expect(clientIdAllowed("sec-", "sec-1")).toBe(true)
    expect(clientIdAllowed("sec-", "sec-")).toBe(true)
    expect(clientIdAllowed("sec-", "other")).toBe(false)
    expect(clientIdAllowed("sec-", "se")).toBe(false)
    expect(clientIdAllowed(undefined, "x")).toBe(true)
    expect(clientIdAllowed("", "x")).toBe(true)
  })

  it.effect("refuses before the password is looked at (not authorised, as Mosquitto 2.0.11)", () =>
    Effect.gen(function* () {
      const o = { allowAnonymous: true, clientidPrefixes: "sec-" }
      expect(yield* authenticate(o, { clientId: "sec-1" })).toEqual({ ok: true, username: undefined })
      expect(yield* authenticate(o, { clientId: "auto-123" })).toEqual({ ok: false, reason: "not-authorised" })
    })
  )
})

describe("TLS identities as usernames", () => {
  const f = path.join(tmp(), "passwd")
  mosquittoPasswd(f, "alice", "secret", true)
  const o = { allowAnonymous: false, passwordFile: f }

  it.effect("use_identity_as_username: the certificate CN, no password check", () =>
    Effect.gen(function* () {
      const r = yield* authenticate(o, { tlsUsername: "identity", certificateCommonName: "device-7", certificateSubject: "CN=device-7,O=Acme", username: "ignored" })
      expect(r).toEqual({ ok: true, username: "device-7" })
    })
  )

  it.effect("use_subject_as_username: the RFC 2253 subject", () =>
    Effect.gen(function* () {
      const r = yield* authenticate(o, { tlsUsername: "subject", certificateCommonName: "device-7", certificateSubject: "CN=device-7,O=Acme" })
      expect(r).toEqual({ ok: true, username: "CN=device-7,O=Acme" })
    })
  )

  it.effect("a PSK identity with use_identity_as_username; no identity at all is bad credentials (0x04 / 0x86)", () =>
    Effect.gen(function* () {
      expect(yield* authenticate(o, { tlsUsername: "identity", pskIdentity: "sensor" })).toEqual({ ok: true, username: "sensor" })
      expect(yield* authenticate(o, { tlsUsername: "identity" })).toEqual({ ok: false, reason: "bad-credentials" })
      expect(yield* authenticate(o, { tlsUsername: "subject" })).toEqual({ ok: false, reason: "bad-credentials" })
      // use_subject_as_username alone on a PSK connection: no subject, no username (handle_connect.c)
      expect(yield* authenticate(o, { tlsUsername: "subject", pskIdentity: "sensor" })).toEqual({ ok: false, reason: "bad-credentials" })
    })
  )

  it.effect("without the listener option the certificate does not matter: the password file decides", () =>
    Effect.gen(function* () {
      expect(yield* authenticate(o, { certificateCommonName: "alice" })).toEqual({ ok: false, reason: "not-authorised" })
      expect(yield* authenticate(o, { certificateCommonName: "x", username: "alice", password: pw("secret") })).toEqual({ ok: true, username: "alice" })
    })
  )
})

describe("Authorization from an acl_file", () => {
  const setup = () => {
    const dir = tmp()
    const acl = path.join(dir, "acl")
    fs.writeFileSync(acl, "topic read public/#\nuser alice\ntopic readwrite alice/#\npattern read inbox/%c\n")
    return { dir, acl }
  }

  it.effect("forClient gives synchronous checks; with acl_subscribe_check mosquitto SUBSCRIBE is granted as in Mosquitto, deliveries filtered", () =>
    Effect.gen(function* () {
      const { acl } = setup()
      const s = yield* make({ allowAnonymous: true, aclFile: acl, subscribeCheck: "mosquitto" })
      const anon = s.authorization.forClient({ clientId: "c1", username: undefined })
      expect(anon.canReceive("public/x")).toBe(true)
      expect(anon.canPublish("public/x")).toBe(false)
      expect(anon.canReceive("alice/x")).toBe(false)
      expect(anon.canReceive("inbox/c1")).toBe(true)
      expect(anon.canReceive("inbox/c2")).toBe(false)
      expect(anon.canSubscribe("alice/#")).toBe(true)
      const alice = s.authorization.forClient({ clientId: "c2", username: "alice" })
      expect(alice.canPublish("alice/x")).toBe(true)
      expect(alice.canReceive("public/x")).toBe(false)
    })
  )

  it.effect("by default (read-access) SUBSCRIBE to a filter no read rule can match is refused; shared filters by their inner filter", () =>
    Effect.gen(function* () {
      const { acl } = setup()
      for (const subscribeCheck of [undefined, "read-access"] as const) {
        const s = yield* make({ allowAnonymous: true, aclFile: acl, subscribeCheck })
        const anon = s.authorization.forClient({ clientId: "c1", username: undefined })
        expect(anon.canSubscribe("public/+")).toBe(true)
        expect(anon.canSubscribe("#")).toBe(true)
        expect(anon.canSubscribe("alice/#")).toBe(false)
        expect(anon.canSubscribe("inbox/c2")).toBe(false)
        expect(anon.canSubscribe("inbox/c1")).toBe(true)
        expect(anon.canSubscribe("$share/g/public/x")).toBe(true)
        expect(anon.canSubscribe("$share/g/alice/x")).toBe(false)
        // `#` does not reach $SYS: nothing readable there
        expect(anon.canSubscribe("$SYS/#")).toBe(false)
      }
    })
  )

  it.effect("acl_subscribe_check from mosquitto.conf: read-access, mosquitto, or an error naming file and line", () =>
    Effect.gen(function* () {
      const { acl } = setup()
      const conf = (extra: string) => parseConfigText(`acl_file ${acl}\nallow_anonymous true\n${extra}`, "m.conf").pipe(Effect.orDie)
      expect(optionsFromConfig(yield* conf("")).subscribeCheck).toBeUndefined()
      const lax = yield* make(optionsFromConfig(yield* conf("acl_subscribe_check mosquitto\n")))
      expect(lax.authorization.forClient({ clientId: "c1", username: undefined }).canSubscribe("alice/#")).toBe(true)
      const strict = yield* make(optionsFromConfig(yield* conf("acl_subscribe_check mosquitto\nacl_subscribe_check read-access\n")))
      expect(strict.authorization.forClient({ clientId: "c1", username: undefined }).canSubscribe("alice/#")).toBe(false)
      const bad = yield* Effect.flip(make(optionsFromConfig(yield* conf("acl_subscribe_check yes\n"))))
      expect(bad.reason).toBe("Option")
      expect(bad.message).toBe('m.conf:3 acl_subscribe_check: invalid value "yes": expected read-access or mosquitto')
    })
  )

  it.effect("without an acl_file everything is allowed but publishing to $SYS and $share (acl__check_dollar)", () =>
    Effect.gen(function* () {
      const s = yield* make({ allowAnonymous: true })
      const c = s.authorization.forClient({ clientId: "c", username: "u" })
      expect(c.canPublish("a/b")).toBe(true)
      expect(c.canReceive("$SYS/broker/uptime")).toBe(true)
      expect(c.canPublish("$SYS/broker/uptime")).toBe(false)
      expect(c.canPublish("$share/g/t")).toBe(false)
      expect(c.canSubscribe("$share/g/t")).toBe(true)
    })
  )

  it.effect("reload: connected clients' ClientAcl see the new rules; a broken file changes nothing", () =>
    Effect.gen(function* () {
      const { acl } = setup()
      const s = yield* make({ allowAnonymous: true, aclFile: acl })
      const anon = s.authorization.forClient({ clientId: "c1", username: undefined })
      expect(anon.canReceive("public/x")).toBe(true)
      fs.writeFileSync(acl, "topic read news/#\n")
      // not before reload
      expect(anon.canReceive("public/x")).toBe(true)
      yield* s.files.reload
      expect(anon.canReceive("public/x")).toBe(false)
      expect(anon.canReceive("news/1")).toBe(true)
      expect(s.files.snapshot().version).toBe(1)
      fs.writeFileSync(acl, "topic read a\ntopic bogus b\n")
      const failed = yield* Effect.exit(s.files.reload)
      expect(Exit.isFailure(failed)).toBe(true)
      expect(JSON.stringify(failed)).toContain(":2: invalid topic access type")
      expect(anon.canReceive("news/1")).toBe(true)
      expect(s.files.snapshot().version).toBe(1)
    })
  )

  it.effect("reload re-reads the password file: a new user can connect, a removed one cannot", () =>
    Effect.gen(function* () {
      const f = path.join(tmp(), "passwd")
      mosquittoPasswd(f, "alice", "secret", true)
      const s = yield* make({ allowAnonymous: false, passwordFile: f })
      const bob = request({ username: "bob", password: pw("pw") })
      expect(yield* s.authentication.authenticate(bob)).toEqual({ ok: false, reason: "not-authorised" })
      mosquittoPasswd(f, "bob", "pw")
      execFileSync("/usr/bin/mosquitto_passwd", ["-D", f, "alice"], { stdio: "ignore" })
      yield* s.files.reload
      expect(yield* s.authentication.authenticate(bob)).toEqual({ ok: true, username: "bob" })
      expect(yield* s.authentication.authenticate(request({ username: "alice", password: pw("secret") }))).toEqual({ ok: false, reason: "not-authorised" })
      expect([...s.files.snapshot().passwordFiles.values()]).toEqual([["bob"]])
    })
  )

  it.effect.prop(
    "with many rules (cached decisions) the answers are the uncached ones, also after a reload",
    [fc.array(fc.constantFrom("a", "b", "c", "+", "d"), { minLength: 1, maxLength: 3 }), fc.array(fc.constantFrom("a", "b", "c", "d", "e"), { minLength: 1, maxLength: 3 })],
    ([ruleLevels, topicLevels]) =>
      Effect.gen(function* () {
        const dir = tmp()
        const acl = path.join(dir, "acl")
        const many = Array.from({ length: 12 }, (_, i) => `topic ${i % 3 === 0 ? "read" : i % 3 === 1 ? "write" : "deny"} r${i}/#`)
        fs.writeFileSync(acl, [...many, `topic read ${ruleLevels.join("/")}`, "topic write a/#"].join("\n"))
        const s = yield* make({ allowAnonymous: true, aclFile: acl })
        const few = yield* make({ allowAnonymous: true, aclFile: acl })
        const cached = s.authorization.forClient({ clientId: "c", username: undefined })
        const topic = topicLevels.join("/")
        for (let i = 0; i < 3; i++) {
          const fresh = few.authorization.forClient({ clientId: "c", username: undefined })
          expect([cached.canReceive(topic), cached.canPublish(topic)]).toEqual([fresh.canReceive(topic), fresh.canPublish(topic)])
        }
        fs.writeFileSync(acl, [...many, "topic readwrite #"].join("\n"))
        yield* s.files.reload
        expect([cached.canReceive(topic), cached.canPublish(topic)]).toEqual([true, true])
      }),
    { fastCheck: { seed: 20_260_101, numRuns: 40 } }
  )
})

describe("per_listener_settings", () => {
  it.effect("each listener its own password_file, acl_file and allow_anonymous; an unknown port gets the global ones", () =>
    Effect.gen(function* () {
      const dir = tmp()
      const pw1 = path.join(dir, "pw1")
      mosquittoPasswd(pw1, "alice", "a", true)
      const acl2 = path.join(dir, "acl2")
      fs.writeFileSync(acl2, "topic read only/this\n")
      const s = yield* make({
        allowAnonymous: false,
        perListener: [
          { port: 1883, allowAnonymous: false, passwordFile: pw1 },
          { port: 8883, allowAnonymous: true, aclFile: acl2 }
        ]
      })
      const auth = (r: Partial<AuthRequest>) => s.authentication.authenticate(request(r))
      expect(yield* auth({ listenerPort: 1883, username: "alice", password: pw("a") })).toEqual({ ok: true, username: "alice" })
      expect(yield* auth({ listenerPort: 1883 })).toEqual({ ok: false, reason: "not-authorised" })
      expect(yield* auth({ listenerPort: 8883 })).toEqual({ ok: true, username: undefined })
      expect(yield* auth({ listenerPort: 9999 })).toEqual({ ok: false, reason: "not-authorised" })
      const on1883 = s.authorization.forClient({ clientId: "c", username: "alice", listenerPort: 1883 })
      const on8883 = s.authorization.forClient({ clientId: "c", username: undefined, listenerPort: 8883 })
      expect(on1883.canReceive("anything")).toBe(true)
      expect(on8883.canReceive("anything")).toBe(false)
      expect(on8883.canReceive("only/this")).toBe(true)
    })
  )

  it.effect("optionsFromConfig reads mosquitto.conf: global or per listener, and clientid_prefixes", () =>
    Effect.gen(function* () {
      const global = optionsFromConfig(
        yield* parseConfigText("listener 1883\nallow_anonymous false\npassword_file /p\nacl_file /a\nclientid_prefixes sec-\n", "m.conf")
      )
      expect(global).toMatchObject({ allowAnonymous: false, passwordFile: "/p", aclFile: "/a", clientidPrefixes: "sec-", perListener: undefined })
      const per = optionsFromConfig(
        yield* parseConfigText("per_listener_settings true\nlistener 1883\npassword_file /p1\nlistener 1884\nallow_anonymous true\nacl_file /a2\n", "m.conf")
      )
      expect(per.perListener).toEqual([
        { port: 1883, allowAnonymous: false, passwordFile: "/p1", aclFile: undefined },
        { port: 1884, allowAnonymous: true, passwordFile: undefined, aclFile: "/a2" }
      ])
    })
  )
})

describe("layers", () => {
  it.effect("layerFromConfig provides the three services; a bad acl_file fails the layer with file:line", () =>
    Effect.gen(function* () {
      const dir = tmp()
      const acl = path.join(dir, "acl")
      fs.writeFileSync(acl, "topic read a\n")
      const program = Effect.gen(function* () {
        const authn = yield* Authentication
        const authz = yield* Authorization
        const files = yield* SecurityFiles
        const r = yield* authn.authenticate(request({}))
        return [r.ok, authz.forClient({ clientId: "c", username: undefined }).canReceive("a"), files.snapshot().aclFiles.size]
      })
      expect(yield* program.pipe(Effect.provide(layerFromConfig({ allowAnonymous: true, aclFile: acl })))).toEqual([true, true, 1])
      fs.writeFileSync(acl, "\nuser\n")
      const bad = yield* Effect.exit(program.pipe(Effect.provide(layerFromConfig({ allowAnonymous: true, aclFile: acl }))))
      expect(JSON.stringify(bad)).toContain(`${acl}:2: missing username`)
    })
  )

  it.effect("allowAll lets everyone in and everything through; an application replaces either service with its own layer", () =>
    Effect.gen(function* () {
      const custom = Layer.merge(
        Authentication.layer((r) => Effect.succeed(r.username === "ok" ? { ok: true, username: "ok" } : { ok: false, reason: "bad-credentials" })),
        Authorization.layer((c) => ({ canPublish: (t) => t.startsWith(`${c.clientId}/`), canSubscribe: () => false, canReceive: () => true }))
      )
      const program = Effect.gen(function* () {
        const authn = yield* Authentication
        const acl = (yield* Authorization).forClient({ clientId: "me", username: undefined })
        return [(yield* authn.authenticate(request({ username: "x" }))).ok, acl.canPublish("me/x"), acl.canSubscribe("#")]
      })
      expect(yield* program.pipe(Effect.provide(allowAll))).toEqual([true, true, true])
      expect(yield* program.pipe(Effect.provide(custom))).toEqual([false, true, false])
    })
  )
})

describe("reconfigure (SIGHUP with a changed mosquitto.conf)", () => {
  const options = (text: string) => Effect.map(parseConfigText(`listener 1883\n${text}`, "t.conf"), optionsFromConfig)
  it.effect("allow_anonymous, the password_file path, clientid_prefixes, the acl_file and acl_subscribe_check take effect at once; a bad option changes nothing", () =>
    Effect.gen(function* () {
      const dir = tmp()
      const pw1 = path.join(dir, "pw1")
      const pw2 = path.join(dir, "pw2")
      mosquittoPasswd(pw1, "alice", "one", true)
      mosquittoPasswd(pw2, "bob", "two", true)
      const acl = path.join(dir, "acl")
      fs.writeFileSync(acl, "topic read public/#\n")
      const s = yield* make(yield* options(`allow_anonymous true\npassword_file ${pw1}\n`))
      const decide = (r: Partial<AuthRequest>) => s.authentication.authenticate(request(r))
      expect((yield* decide({})).ok).toBe(true)
      expect((yield* decide({ username: "alice", password: pw("one") })).ok).toBe(true)
      // without an acl_file every client shares one object; after the reload the daemon asks again (reauthorize)
      const shared = s.authorization.forClient({ clientId: "c1", username: undefined })
      expect(s.authorization.forClient({ clientId: "c2", username: "u" })).toBe(shared)
      const before = shared
      expect(before.canReceive("private/x")).toBe(true)
      expect(before.canSubscribe("private/#")).toBe(true)

      yield* s.files.reconfigure(yield* options(`allow_anonymous false\npassword_file ${pw2}\nclientid_prefixes ok-\nacl_file ${acl}\n`))
      expect(before.canReceive("private/x")).toBe(true)
      const again = s.authorization.forClient({ clientId: "c1", username: undefined })
      expect(yield* decide({ clientId: "ok-1" })).toEqual({ ok: false, reason: "not-authorised" })
      expect((yield* decide({ clientId: "ok-1", username: "alice", password: pw("one") })).ok).toBe(false)
      expect((yield* decide({ clientId: "ok-1", username: "bob", password: pw("two") })).ok).toBe(true)
      expect((yield* decide({ clientId: "other", username: "bob", password: pw("two") })).ok).toBe(false)
      expect(again.canReceive("private/x")).toBe(false)
      expect(again.canReceive("public/x")).toBe(true)
      expect(again.canSubscribe("private/#")).toBe(false)
      // a plain reload reads the files of the new options
      mosquittoPasswd(pw2, "carol", "three")
      yield* s.files.reload
      expect((yield* decide({ clientId: "ok-1", username: "carol", password: pw("three") })).ok).toBe(true)

      yield* s.files.reconfigure(yield* options(`allow_anonymous false\npassword_file ${pw2}\nclientid_prefixes ok-\nacl_file ${acl}\nacl_subscribe_check mosquitto\n`))
      // a FileClientAcl follows the state it reads: acl_subscribe_check changed under it
      expect(again.canSubscribe("private/#")).toBe(true)
      expect(again.canReceive("private/x")).toBe(false)

      const version = s.files.snapshot().version
      const bad = yield* Effect.exit(s.files.reconfigure(yield* options("allow_anonymous true\nacl_subscribe_check sometimes\n")))
      expect(Exit.isFailure(bad)).toBe(true)
      const missing = yield* Effect.exit(s.files.reconfigure(yield* options(`allow_anonymous true\npassword_file ${path.join(dir, "nope")}\n`)))
      expect(Exit.isFailure(missing)).toBe(true)
      expect(s.files.snapshot().version).toBe(version)
      expect((yield* decide({ clientId: "ok-1" })).ok).toBe(false)
    })
  )
})
