/**
 * `midge pub` / `midge sub` against a real Debian mosquitto (2.0.11) on a
 * free port: interoperability, what Midge does not serve yet (TLS,
 * TLS-PSK, WebSockets, Unix sockets, authentication, ACL refusals), and
 * `midge sub`'s output compared byte for byte with mosquitto_sub's.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { vi } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { makeCertificates, midge, run, spawnLive, startMosquitto, tempDir, waitFor } from "./helpers.js"

// each test starts several processes (Node start-ups, mosquitto, openssl): generous bounds for a loaded machine
vi.setConfig({ testTimeout: 90_000 })

const subscribed = (proc: { out: { stdout: string } }, id: string) =>
  waitFor(() => proc.out.stdout.includes(`Client ${id} received SUBACK`), `${id} to subscribe`, 10_000)

describe("midge pub / sub against Debian's mosquitto", () => {
  for (const V of ["mqttv31", "mqttv311", "mqttv5"]) {
    it.scopedLive(`${V}: midge pub -> mosquitto_sub and mosquitto_pub -> midge sub, QoS 0/1/2`, () =>
      Effect.gen(function* () {
        const m = yield* startMosquitto()
        const p = String(m.port)
        const theirSub = yield* spawnLive("stdbuf", ["-oL", "mosquitto_sub", "-p", p, "-V", V, "-q", "2", "-t", "i/#", "-C", "3", "-v", "-d", "-i", "their"])
        const ourSub = yield* spawnLive("node", [path.resolve(__dirname, "../../dist/cli/midge.js"), "sub", "-p", p, "-V", V, "-q", "2", "-t", "i/#", "-C", "3", "-v", "-d", "-i", "our"])
        yield* subscribed(theirSub, "their")
        yield* subscribed(ourSub, "our")
        for (const qos of ["0", "1", "2"]) {
          expect((yield* midge("pub", ["-p", p, "-V", V, "-q", qos, "-t", `i/m${qos}`, "-m", `midge ${qos}`])).code).toBe(0)
        }
        yield* waitFor(() => theirSub.out.exited && ourSub.out.exited, "both subscribers to exit", 10_000)
        const lines = (s: string) => s.split("\n").filter((l) => l.startsWith("i/"))
        expect(lines(theirSub.out.stdout)).toEqual(["i/m0 midge 0", "i/m1 midge 1", "i/m2 midge 2"])
        expect(lines(ourSub.out.stdout)).toEqual(lines(theirSub.out.stdout))
        // the same debug lines for receiving, apart from packet ids the broker picks
        const debug = (s: string) => s.split("\n").filter((l) => l.startsWith("Client")).map((l) => l.replace(/^Client \S+/, "Client X"))
        expect(debug(ourSub.out.stdout)).toEqual(debug(theirSub.out.stdout))
      })
    )
  }

  it.scopedLive("-F output is mosquitto_sub's, byte for byte (MQTT 5 properties, widths, hex, JSON)", () =>
    Effect.gen(function* () {
      const m = yield* startMosquitto()
      const p = String(m.port)
      const formats = [
        "%t|%p|%q|%r|%l|%m|%x|%X|%%|%C|%P|%E|%F|%R|%D|%S|%A",
        "[%10p][%-10p][%3p][%08l][%-4l][%6t][%-6t][%.1t][%5.2t][%6x][%-9X]\\t\\\\",
        "%j"
      ]
      const args = (i: number) => ["-p", p, "-V", "5", "-q", "1", "-t", "f/#", "-C", "3", "-F", formats[i], "-d"]
      const procs = []
      for (let i = 0; i < formats.length; i++) {
        const theirs = yield* spawnLive("stdbuf", ["-oL", "mosquitto_sub", ...args(i), "-i", `their${i}`])
        const ours = yield* spawnLive("node", [path.resolve(__dirname, "../../dist/cli/midge.js"), "sub", ...args(i), "-i", `our${i}`])
        yield* subscribed(theirs, `their${i}`)
        yield* subscribed(ours, `our${i}`)
        procs.push([theirs, ours] as const)
      }
      const pub = (extra: ReadonlyArray<string>) => run("mosquitto_pub", ["-p", p, "-V", "5", "-q", "1", ...extra])
      expect((yield* pub(["-t", "f/a", "-m", "hello world", "-r", "-D", "publish", "content-type", "text/plain", "-D", "publish", "user-property", "k", "v", "-D", "publish", "user-property", "k2", "v2", "-D", "publish", "message-expiry-interval", "3600", "-D", "publish", "payload-format-indicator", "1", "-D", "publish", "response-topic", "re/ply", "-D", "publish", "correlation-data", "corr"])).code).toBe(0)
      expect((yield* pub(["-t", "f/b", "-n"])).code).toBe(0)
      expect((yield* pub(["-t", "f/c", "-m", 'with "quotes" and \\ and\ttab'])).code).toBe(0)
      for (const [theirs, ours] of procs) {
        yield* waitFor(() => theirs.out.exited && ours.out.exited, "the subscribers to exit", 10_000)
        const output = (s: string) =>
          s
            .split("\n")
            .filter((l) => !l.startsWith("Client ") && !l.startsWith("Subscribed"))
            .join("\n")
            .replace(/"tst":"[^"]+"/g, '"tst":"T"')
        expect(output(ours.out.stdout)).toBe(output(theirs.out.stdout))
        expect(ours.out.code).toBe(theirs.out.code)
      }
    })
  )

  it.scopedLive("authentication: CONNACK refusals print Mosquitto's texts and exit with the CONNACK code (5, or 135 in MQTT 5)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const pw = path.join(dir, "pw")
      expect((yield* run("mosquitto_passwd", ["-c", "-b", pw, "alice", "secret"])).code).toBe(0)
      const m = yield* startMosquitto(["allow_anonymous false", `password_file ${pw}`])
      const p = String(m.port)
      for (const [tool, extra] of [["pub", ["-t", "a", "-m", "x"]], ["sub", ["-t", "a"]]] as const) {
        for (const V of ["mqttv311", "mqttv5"]) {
          const args = ["-p", p, "-V", V, "-u", "alice", "-P", "wrong", ...extra]
          const [theirs, ours] = yield* Effect.all([run(`mosquitto_${tool}`, args), midge(tool, args)], { concurrency: 2 })
          expect(ours.code).toBe(theirs.code)
          expect(ours.stderr).toBe(theirs.stderr)
          expect(ours.code).toBe(V === "mqttv5" ? 135 : 5)
        }
      }
      expect((yield* midge("pub", ["-p", p, "-u", "alice", "-P", "secret", "-t", "a", "-m", "x"])).code).toBe(0)
    })
  )

  it.scopedLive("an MQTT 5 PUBACK refusal (ACL) prints 'Warning: Publish 1 failed: Not authorized.' and exits 0, as mosquitto_pub", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const acl = path.join(dir, "acl")
      fs.writeFileSync(acl, "topic readwrite allowed/#\n")
      const m = yield* startMosquitto(["allow_anonymous true", `acl_file ${acl}`])
      const args = ["-p", String(m.port), "-V", "5", "-q", "1", "-t", "denied", "-m", "x"]
      const [theirs, ours] = yield* Effect.all([run("mosquitto_pub", args), midge("pub", args)], { concurrency: 2 })
      expect(ours).toEqual(theirs)
      expect(ours.stderr).toBe("Warning: Publish 1 failed: Not authorized.\n")
    })
  )

  it.scopedLive("TLS: --cafile (port 8883 logic, hostname check, --insecure), client certificates, --tls-version", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const c = makeCertificates(dir)
      const m = yield* startMosquitto(["allow_anonymous true"], [
        [`cafile ${c.ca}`, `certfile ${c.cert}`, `keyfile ${c.key}`],
        [`cafile ${c.ca}`, `certfile ${c.cert}`, `keyfile ${c.key}`, "require_certificate true"],
        [`cafile ${c.ca}`, `certfile ${c.misnamedCert}`, `keyfile ${c.misnamedKey}`]
      ])
      const [tlsPort, mutualPort, misnamedPort] = m.ports.map(String)
      const sub = yield* spawnLive("stdbuf", ["-oL", "mosquitto_sub", "-p", String(m.port), "-t", "tls/#", "-v", "-d", "-i", "watch"])
      yield* subscribed(sub, "watch")
      // a CA-verified connection by name
      expect((yield* midge("pub", ["-h", "localhost", "-p", tlsPort, "--cafile", c.ca, "-t", "tls/1", "-m", "by name"]))).toMatchObject({ code: 0, stderr: "" })
      // by IP: the certificate names 127.0.0.1 too
      expect((yield* midge("pub", ["-h", "127.0.0.1", "-p", tlsPort, "--cafile", c.ca, "-t", "tls/2", "-m", "by ip", "--tls-version", "tlsv1.2"])).code).toBe(0)
      // an unrelated CA: refused, as mosquitto_pub refuses it
      const wrongCa = ["-h", "localhost", "-p", tlsPort, "--cafile", c.otherCa, "-t", "tls/x", "-m", "no"]
      const [theirs, ours] = yield* Effect.all([run("mosquitto_pub", wrongCa), midge("pub", wrongCa)], { concurrency: 2 })
      // mosquitto_pub exits 1 when the handshake fails inside connect, 8 (MOSQ_ERR_TLS) when it fails in its loop
      expect([1, 8]).toContain(theirs.code)
      expect(ours).toMatchObject({ code: 1, stderr: "Unable to connect (A TLS error occurred.).\n" })
      // a certificate for another name: refused unless --insecure (the chain is still checked)
      const badName = ["-h", "127.0.0.1", "-p", misnamedPort, "--cafile", c.ca, "-t", "tls/3", "-m", "insecure"]
      const [theirsName, oursName] = yield* Effect.all([run("mosquitto_pub", badName), midge("pub", badName)], { concurrency: 2 })
      expect([1, 8]).toContain(theirsName.code)
      expect(oursName.code).toBe(1)
      expect((yield* midge("pub", [...badName, "--insecure"])).code).toBe(0)
      // mutual TLS
      expect((yield* midge("pub", ["-h", "localhost", "-p", mutualPort, "--cafile", c.ca, "-t", "tls/4", "-m", "x"])).code).toBe(1)
      expect((yield* midge("pub", ["-h", "localhost", "-p", mutualPort, "--cafile", c.ca, "--cert", c.clientCert, "--key", c.clientKey, "-t", "tls/4", "-m", "mutual"])).code).toBe(0)
      // and a TLS subscriber
      const tlsSub = yield* midge("sub", ["-h", "localhost", "-p", tlsPort, "--cafile", c.ca, "-t", "tls/#", "-E"])
      expect(tlsSub.code).toBe(0)
      yield* waitFor(() => sub.out.stdout.includes("tls/4 mutual"), "the messages", 10_000)
      const got = sub.out.stdout.split("\n").filter((l) => l.startsWith("tls/"))
      expect(got).toEqual(["tls/1 by name", "tls/2 by ip", "tls/3 insecure", "tls/4 mutual"])
    })
  )

  it.scopedLive("TLS-PSK: --psk and --psk-identity; a wrong key fails as mosquitto_pub fails", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const psk = path.join(dir, "psk")
      fs.writeFileSync(psk, "ident:deadbeef00112233\n")
      const m = yield* startMosquitto(["allow_anonymous true"], [["psk_hint midge", `psk_file ${psk}`]])
      const pskPort = String(m.ports[0])
      const sub = yield* spawnLive("stdbuf", ["-oL", "mosquitto_sub", "-p", String(m.port), "-t", "psk", "-C", "1", "-v"])
      yield* Effect.sleep("300 millis")
      expect((yield* midge("pub", ["-p", pskPort, "--psk", "deadbeef00112233", "--psk-identity", "ident", "-t", "psk", "-m", "pre-shared"]))).toMatchObject({ code: 0, stderr: "" })
      const bad = ["-p", pskPort, "--psk", "deadbeef00112234", "--psk-identity", "ident", "-t", "psk", "-m", "x"]
      // mosquitto_pub itself fails one of two ways, depending on whether the handshake
      // failure surfaces in connect (exit 1) or in the network loop (exit 8, MOSQ_ERR_TLS):
      // seen 10 and 5 times in 15 runs here. Ours must be one of them, text and code together.
      const outcomes = [
        { code: 1, stderr: "Unable to connect (A TLS error occurred.).\n" },
        { code: 8, stderr: "Error: A TLS error occurred.\n" }
      ]
      const [theirs, ours] = yield* Effect.all([run("mosquitto_pub", bad), midge("pub", bad)], { concurrency: 2 })
      expect(outcomes).toContainEqual({ code: theirs.code, stderr: theirs.stderr })
      expect(outcomes).toContainEqual({ code: ours.code, stderr: ours.stderr })
      yield* waitFor(() => sub.out.exited, "the message", 10_000)
      expect(sub.out.stdout).toBe("psk pre-shared\n")
    })
  )

  it.scopedLive("WebSockets: -L ws://host:port/topic and --ws", () =>
    Effect.gen(function* () {
      const m = yield* startMosquitto(["allow_anonymous true"], [["protocol websockets"]])
      const ws = String(m.ports[0])
      const sub = yield* spawnLive("node", [path.resolve(__dirname, "../../dist/cli/midge.js"), "sub", "-p", ws, "--ws", "-t", "ws/#", "-v", "-C", "2", "-d", "-i", "wsub"])
      yield* subscribed(sub, "wsub")
      expect((yield* midge("pub", ["-L", `ws://127.0.0.1:${ws}/ws/one`, "-m", "over websockets"])).code).toBe(0)
      expect((yield* run("mosquitto_pub", ["-p", String(m.port), "-t", "ws/two", "-m", "from tcp"])).code).toBe(0)
      yield* waitFor(() => sub.out.exited, "the subscriber to exit", 10_000)
      expect(sub.out.stdout.split("\n").filter((l) => l.startsWith("ws/"))).toEqual(["ws/one over websockets", "ws/two from tcp"])
    })
  )

  it.scopedLive("--unix PATH: a Unix domain socket listener", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const sock = path.join(dir, "mosquitto.sock")
      const m = yield* startMosquitto(["allow_anonymous true", `listener 0 ${sock}`])
      yield* waitFor(() => fs.existsSync(sock), "the socket", 10_000)
      const sub = yield* spawnLive("stdbuf", ["-oL", "mosquitto_sub", "-p", String(m.port), "-t", "unix", "-C", "1", "-v", "-d", "-i", "u"])
      yield* subscribed(sub, "u")
      expect((yield* midge("pub", ["--unix", sock, "-t", "unix", "-m", "local"])).code).toBe(0)
      yield* waitFor(() => sub.out.exited, "the message", 10_000)
      expect(sub.out.stdout).toContain("unix local\n")
    })
  )

  it.scopedLive("a lost connection: midge sub reconnects and subscribes again, as mosquitto_sub does", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { freePort, listening } = yield* Effect.promise(() => import("./helpers.js"))
      const port = yield* freePort
      const conf = path.join(dir, "m.conf")
      fs.writeFileSync(conf, `user root\nlistener ${port} 127.0.0.1\nallow_anonymous true\n`)
      const first = yield* spawnLive("mosquitto", ["-c", conf])
      yield* listening(port)
      const sub = yield* spawnLive("node", [path.resolve(__dirname, "../../dist/cli/midge.js"), "sub", "-p", String(port), "-t", "again", "-C", "1", "-v", "-d", "-i", "persistent-sub"])
      yield* subscribed(sub, "persistent-sub")
      first.child.kill("SIGKILL")
      yield* waitFor(() => first.out.exited, "the broker to stop")
      yield* spawnLive("mosquitto", ["-c", conf])
      yield* listening(port)
      yield* waitFor(() => sub.out.stdout.split("received SUBACK").length === 3, "a second SUBACK", 10_000)
      expect((yield* run("mosquitto_pub", ["-p", String(port), "-t", "again", "-m", "after restart"])).code).toBe(0)
      yield* waitFor(() => sub.out.exited, "the message", 10_000)
      expect(sub.out.code).toBe(0)
      expect(sub.out.stdout).toContain("again after restart\n")
    })
  )
})
