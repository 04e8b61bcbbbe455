/**
 * Differential test against the real Mosquitto 2.0 (Debian's
 * /usr/sbin/mosquitto): one acl_file and one password_file made by the real
 * mosquitto_passwd; what each client may publish, receive live and receive
 * retained on Mosquitto is what Midge's acl_file matcher says, and Mosquitto
 * grants every SUBSCRIBE, as Midge does with `acl_subscribe_check mosquitto`
 * (Midge's default refuses filters no read rule can match).
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { allows, compileClientRules, parseAclFile, READ, WRITE } from "../../src/security/aclFile.js"
import { make } from "../../src/security/Auth.js"
import { collect, connectClient, publish, spawnScoped, subscribe, waitFor } from "../e2e/harness.js"
import { canConnect, freePort } from "../support/processes.js"

const ACL = `# anonymous clients
topic read public/#
topic deny public/secret
user roger
topic foo/bar
topic deny foo/private
topic read $x/#
user u1
topic write sensors/u1/#
topic read sensors/#
user spy
topic read #
topic read $x/#
topic read $SYS/x
user root
topic write #
topic write $x/#
topic write $SYS/#
pattern readwrite users/%u/#
pattern read clients/%c/in
pattern deny users/%u/blocked
`

const TOPICS = [
  "public/a",
  "public/secret",
  "foo/bar",
  "foo/private",
  "sensors/u1/t",
  "sensors/u2/t",
  "users/roger/x",
  "users/u1/x",
  "users/u1/blocked",
  "clients/r1/in",
  "clients/c1/in",
  "clients/anon1/in",
  "$x/y",
  "$SYS/x",
  "other"
]

const CLIENTS = [
  { clientId: "anon1", username: undefined, password: undefined, marker: "public/marker" },
  { clientId: "r1", username: "roger", password: "r", marker: "users/roger/marker" },
  { clientId: "c1", username: "u1", password: "p", marker: "users/u1/marker" }
] as const

describe("acl_file and password_file: Midge's decisions are the real Mosquitto's", () => {
  it.scopedLive(
    "publish, live delivery and retained delivery for anonymous, roger and u1",
    () =>
      Effect.gen(function* () {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-mosq-"))
        const acl = path.join(dir, "acl")
        const passwd = path.join(dir, "passwd")
        fs.writeFileSync(acl, ACL)
        execFileSync("/usr/bin/mosquitto_passwd", ["-c", "-b", passwd, "roger", "r"], { stdio: "ignore" })
        for (const [u, p] of [["u1", "p"], ["spy", "s"], ["root", "t"]]) execFileSync("/usr/bin/mosquitto_passwd", ["-b", passwd, u, p], { stdio: "ignore" })
        const port = yield* freePort
        fs.writeFileSync(
          path.join(dir, "mosquitto.conf"),
          `listener ${port} 127.0.0.1\nallow_anonymous true\npassword_file ${passwd}\nacl_file ${acl}\nuser root\npersistence false\nlog_dest none\n`
        )
        yield* spawnScoped("/usr/sbin/mosquitto", ["-c", path.join(dir, "mosquitto.conf")])
        let up = false
        yield* waitFor(() => {
          void canConnect(port).then((ok) => (up ||= ok))
          return up
        }, "mosquitto to listen")
        const url = `mqtt://127.0.0.1:${port}`

        // Midge's view of the same files, through the Authentication service too
        const midge = Either.getOrThrow(parseAclFile(ACL))
        const services = yield* make({ allowAnonymous: true, passwordFile: passwd, aclFile: acl })
        const lax = yield* make({ allowAnonymous: true, passwordFile: passwd, aclFile: acl, subscribeCheck: "mosquitto" })
        const expected = (c: (typeof CLIENTS)[number], access: 1 | 2) => {
          const rules = compileClientRules(midge, c.clientId, c.username)
          return TOPICS.filter((t) => allows(rules, t, access))
        }

        const spy = yield* connectClient(url, { clientId: "spy1", username: "spy", password: "s", protocolVersion: 4 })
        const spyGot = collect(spy)
        yield* subscribe(spy, ["#", "$x/#", "$SYS/x"], { qos: 1 })
        const root = yield* connectClient(url, { clientId: "root1", username: "root", password: "t", protocolVersion: 4 })

        let round = 0
        for (const c of CLIENTS) {
          const auth = yield* services.authentication.authenticate({
            clientId: c.clientId,
            username: c.username,
            password: c.password === undefined ? undefined : Buffer.from(c.password),
            listenerPort: port,
            remoteAddress: "127.0.0.1"
          })
          expect(auth).toEqual({ ok: true, username: c.username })
          const client = yield* connectClient(url, { clientId: c.clientId, username: c.username, password: c.password, protocolVersion: 4 })

          // writes: what the spy sees of the client's publishes
          const before = spyGot.length
          for (const t of TOPICS) yield* publish(client, t, "w", { qos: 1 })
          const marker = `zz/marker/${round++}`
          yield* publish(root, marker, "m", { qos: 1 })
          yield* waitFor(() => spyGot.some((m) => m.topic === marker), "the spy to see the marker")
          const written = spyGot.slice(before).filter((m) => m.payload === "w").map((m) => m.topic)
          expect([c.clientId, "write", written.sort()]).toEqual([c.clientId, "write", expected(c, WRITE).sort()])

          // live reads: Mosquitto grants the subscriptions, then filters
          const got = collect(client)
          const granted = yield* subscribe(client, ["#", "$x/#"], { qos: 1 })
          expect(granted.map((g) => g.qos)).toEqual([1, 1])
          const laxAcl = lax.authorization.forClient({ clientId: c.clientId, username: c.username, listenerPort: port })
          expect(["#", "$x/#"].map((f) => laxAcl.canSubscribe(f))).toEqual([true, true])
          for (const t of TOPICS) if (!t.startsWith("$SYS")) yield* publish(root, t, "r", { qos: 1 })
          yield* publish(root, c.marker, "m", { qos: 1 })
          yield* waitFor(() => got.some((m) => m.topic === c.marker), `${c.clientId} to see its marker`)
          const read = got.filter((m) => m.payload === "r").map((m) => m.topic)
          expect([c.clientId, "read", read.sort()]).toEqual([c.clientId, "read", expected(c, READ).filter((t) => !t.startsWith("$SYS")).sort()])
          yield* Effect.promise(() => client.endAsync())
        }

        // retained: every topic retained once, then each client subscribes afresh
        for (const t of TOPICS) if (!t.startsWith("$SYS")) yield* publish(root, t, "kept", { qos: 1, retain: true })
        for (const c of CLIENTS) {
          const client = yield* connectClient(url, { clientId: `${c.clientId}`, username: c.username, password: c.password, protocolVersion: 4 })
          const got = collect(client)
          yield* subscribe(client, ["#", "$x/#"], { qos: 1 })
          yield* publish(root, c.marker, "m", { qos: 1 })
          yield* waitFor(() => got.some((m) => m.topic === c.marker), `${c.clientId} to see its marker`)
          const retained = got.filter((m) => m.retain && m.payload === "kept").map((m) => m.topic)
          expect([c.clientId, "retained", retained.sort()]).toEqual([c.clientId, "retained", expected(c, READ).filter((t) => !t.startsWith("$SYS")).sort()])
          yield* Effect.promise(() => client.endAsync())
        }
      }),
    60_000
  )
})
