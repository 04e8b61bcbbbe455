/**
 * `midge pub` end to end against a running Midge: each flag, observed by an
 * MQTT.js subscriber and by the broker's own log.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { vi } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { collect, connectClient, startBroker, subscribe, waitFor } from "../e2e/harness.js"
import { bins, freePort, midge, run, spawnLive, tempDir } from "./helpers.js"

// each test starts several processes (Node start-ups, mosquitto, openssl): generous bounds for a loaded machine
vi.setConfig({ testTimeout: 90_000 })

const connectLine = (log: { recent: Array<string> }, needle: RegExp) => log.recent.find((l) => needle.test(l))

describe("midge pub against Midge", () => {
  it.scopedLive("-h -p -t -m: the message arrives; -q 0/1/2 and -r are kept; exit 0, silent", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const js = yield* connectClient(url, { protocolVersion: 5 })
      const got = collect(js)
      yield* subscribe(js, "p/#", { qos: 2 })
      for (const qos of [0, 1, 2]) {
        const r = yield* midge("pub", ["-h", "127.0.0.1", "-p", String(port), "-t", `p/${qos}`, "-m", `m${qos}`, "-q", String(qos)])
        expect(r).toEqual({ code: 0, stdout: "", stderr: "" })
      }
      yield* waitFor(() => got.length === 3, "three messages")
      expect(got.map((m) => [m.topic, m.payload, m.qos])).toEqual([["p/0", "m0", 0], ["p/1", "m1", 1], ["p/2", "m2", 2]])
      expect((yield* midge("pub", ["-p", String(port), "-t", "p/kept", "-m", "kept", "-r", "-q", "1"])).code).toBe(0)
      const late = yield* connectClient(url)
      const lateGot = collect(late)
      yield* subscribe(late, "p/kept")
      yield* waitFor(() => lateGot.length === 1, "the retained message")
      expect(lateGot[0]).toMatchObject({ payload: "kept", retain: true })
    })
  )

  it.scopedLive("-f FILE sends the file's bytes; -s sends all of stdin; -n sends an empty message (and clears a retained one)", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const dir = yield* tempDir
      const file = path.join(dir, "payload.bin")
      const bytes = Buffer.from([0, 1, 2, 255, 10, 13, 0x80])
      fs.writeFileSync(file, bytes)
      const js = yield* connectClient(url)
      const raw: Array<Buffer> = []
      js.on("message", (_t, payload) => raw.push(Buffer.from(payload)))
      yield* subscribe(js, "f/#", { qos: 1 })
      expect((yield* midge("pub", ["-p", String(port), "-t", "f/file", "-f", file, "-q", "1"])).code).toBe(0)
      expect((yield* midge("pub", ["-p", String(port), "-t", "f/stdin", "-s"], { input: "line 1\nline 2\n" })).code).toBe(0)
      expect((yield* midge("pub", ["-p", String(port), "-t", "f/kept", "-m", "x", "-r"])).code).toBe(0)
      yield* waitFor(() => broker.stats().retained === 1, "a retained message")
      expect((yield* midge("pub", ["-p", String(port), "-t", "f/kept", "-n", "-r"])).code).toBe(0)
      yield* waitFor(() => raw.length === 4, "four messages")
      expect(raw[0].equals(bytes)).toBe(true)
      expect(raw[1].toString()).toBe("line 1\nline 2\n")
      expect(raw[3].length).toBe(0)
      yield* waitFor(() => broker.stats().retained === 0, "the retained message to be cleared")
    })
  )

  it.scopedLive("-l: one message per line of stdin, empty lines included, the last line without a newline too", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const js = yield* connectClient(url)
      const got = collect(js)
      yield* subscribe(js, "lines", { qos: 1 })
      const r = yield* midge("pub", ["-p", String(port), "-t", "lines", "-l", "-q", "1"], { input: "one\n\nthree\r\nfour" })
      expect(r.code).toBe(0)
      yield* waitFor(() => got.length === 4, "four messages")
      expect(got.map((m) => m.payload)).toEqual(["one", "", "three\r", "four"])
    })
  )

  it.scopedLive("--repeat N --repeat-delay S: N messages, S seconds apart", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const js = yield* connectClient(url)
      const times: Array<number> = []
      js.on("message", () => times.push(Date.now()))
      yield* subscribe(js, "rep")
      const r = yield* midge("pub", ["-p", String(port), "-t", "rep", "-m", "x", "--repeat", "3", "--repeat-delay", "0.2"])
      expect(r.code).toBe(0)
      yield* waitFor(() => times.length === 3, "three messages")
      expect(times[2] - times[0]).toBeGreaterThanOrEqual(350)
    })
  )

  it.scopedLive("-i, -I, -k, -u/-P, -c and -V as the broker sees them in its connect log line", () =>
    Effect.gen(function* () {
      const { port, log } = yield* startBroker()
      const p = String(port)
      expect((yield* midge("pub", ["-p", p, "-t", "t", "-m", "x", "-i", "given-id", "-k", "30", "-u", "alice", "-P", "pw"])).code).toBe(0)
      expect(connectLine(log, /as given-id \(p2, c1, k30, u'alice'\)/)).toBeDefined()
      expect((yield* midge("pub", ["-p", p, "-t", "t", "-m", "x", "-I", "prefix-"])).code).toBe(0)
      expect(connectLine(log, /as prefix-\d+ \(p2, c1, k60\)/)).toBeDefined()
      expect((yield* midge("pub", ["-p", p, "-t", "t", "-m", "x", "-i", "keeper", "-c"])).code).toBe(0)
      expect(connectLine(log, /as keeper \(p2, c0, k60\)/)).toBeDefined()
      // MQTT 3.1 needs a client id: mosq- and random characters, as libmosquitto makes it
      expect((yield* midge("pub", ["-p", p, "-t", "t", "-m", "x", "-V", "mqttv31"])).code).toBe(0)
      expect(connectLine(log, /as mosq-[0-9A-Za-z]{18} \(p1, c1, k60\)/)).toBeDefined()
      // 3.1.1 and 5 send no client id: the broker assigns one [MQTT-3.1.3-6]
      expect((yield* midge("pub", ["-p", p, "-t", "t", "-m", "x", "-V", "5"])).code).toBe(0)
    })
  )

  it.scopedLive("-D: MQTT 5 publish properties reach the subscriber; -D implies MQTT 5", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const js = yield* connectClient(url, { protocolVersion: 5 })
      const got = collect(js)
      yield* subscribe(js, "props", { qos: 1 })
      const r = yield* midge("pub", [
        "-p", String(port), "-t", "props", "-m", "{}", "-q", "1",
        "-D", "publish", "content-type", "application/json",
        "-D", "publish", "response-topic", "reply/to",
        "-D", "publish", "correlation-data", "abc",
        "-D", "publish", "message-expiry-interval", "60",
        "-D", "publish", "payload-format-indicator", "1",
        "-D", "publish", "user-property", "k", "v1",
        "-D", "publish", "user-property", "k", "v2",
        "-D", "connect", "user-property", "who", "me"
      ])
      expect(r.code).toBe(0)
      yield* waitFor(() => got.length === 1, "the message")
      const props = got[0].properties!
      expect(props.contentType).toBe("application/json")
      expect(props.responseTopic).toBe("reply/to")
      expect(Buffer.from(props.correlationData as Buffer).toString()).toBe("abc")
      expect(props.payloadFormatIndicator).toBe(true)
      expect(props.messageExpiryInterval).toBeGreaterThan(50)
      expect(props.userProperties).toEqual({ k: ["v1", "v2"] })
    })
  )

  it.scopedLive("-L mqtt://user:password@host:port/topic", () =>
    Effect.gen(function* () {
      const { port, url, log } = yield* startBroker()
      const js = yield* connectClient(url)
      const got = collect(js)
      yield* subscribe(js, "from/url")
      expect((yield* midge("pub", ["-L", `mqtt://bob:secret@127.0.0.1:${port}/from/url`, "-m", "via url"])).code).toBe(0)
      yield* waitFor(() => got.length === 1, "the message")
      expect(got[0].payload).toBe("via url")
      expect(connectLine(log, /u'bob'\)/)).toBeDefined()
    })
  )

  it.scopedLive("-A ADDRESS binds the local end; --nodelay and -M are accepted", () =>
    Effect.gen(function* () {
      const { port, log } = yield* startBroker()
      expect((yield* midge("pub", ["-p", String(port), "-t", "t", "-m", "x", "-A", "127.0.0.1", "--nodelay", "-M", "5", "-i", "bound"])).code).toBe(0)
      expect(connectLine(log, /New client connected from 127\.0\.0\.1:\d+ as bound/)).toBeDefined()
    })
  )

  it.scopedLive("-d prints libmosquitto's debug lines; packet ids count from 1 as libmosquitto's do", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const q0 = yield* midge("pub", ["-p", String(port), "-t", "dbg", "-m", "hello", "-d", "-i", "d0"])
      expect(q0.stdout).toBe(
        "Client d0 sending CONNECT\nClient d0 received CONNACK (0)\nClient d0 sending PUBLISH (d0, q0, r0, m1, 'dbg', ... (5 bytes))\nClient d0 sending DISCONNECT\n"
      )
      const q2 = yield* midge("pub", ["-p", String(port), "-t", "dbg", "-m", "hi", "-d", "-q", "2", "-r", "-i", "d2"])
      expect(q2.stdout).toBe(
        [
          "Client d2 sending CONNECT",
          "Client d2 received CONNACK (0)",
          "Client d2 sending PUBLISH (d0, q2, r1, m1, 'dbg', ... (2 bytes))",
          "Client d2 received PUBREC (Mid: 1)",
          "Client d2 sending PUBREL (m1)",
          "Client d2 received PUBCOMP (Mid: 1, RC:0)",
          "Client d2 sending DISCONNECT",
          ""
        ].join("\n")
      )
      const q1 = yield* midge("pub", ["-p", String(port), "-t", "dbg", "-m", "hi", "-d", "-q", "1", "-V", "mqttv311"])
      expect(q1.stdout).toContain("Client (null) sending CONNECT\n")
      expect(q1.stdout).toContain("Client (null) received PUBACK (Mid: 1, RC:0)\n")
    })
  )

  it.scopedLive("connection refused: 'Error: Connection refused', exit 1; --quiet prints nothing", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const r = yield* midge("pub", ["-p", String(port), "-t", "t", "-m", "x"])
      expect(r).toEqual({ code: 1, stdout: "", stderr: "Error: Connection refused\n" })
      const quiet = yield* midge("pub", ["-p", String(port), "-t", "t", "-m", "x", "--quiet"])
      expect(quiet).toEqual({ code: 1, stdout: "", stderr: "" })
    })
  )

  it.scopedLive("the default options file ($XDG_CONFIG_HOME/mosquitto_pub) supplies flags; the command line adds to them", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "mosquitto_pub"), `# defaults\n-p ${port}\n-t from/options\n-q 1\n`)
      const js = yield* connectClient(url)
      const got = collect(js)
      yield* subscribe(js, "from/#", { qos: 1 })
      const r = yield* midge("pub", ["-m", "configured"], { env: { XDG_CONFIG_HOME: dir } })
      expect(r.code).toBe(0)
      yield* waitFor(() => got.length === 1, "the message")
      expect(got[0]).toMatchObject({ topic: "from/options", payload: "configured", qos: 1 })
    })
  )

  it.scopedLive("--will-topic/--will-payload/--will-qos/--will-retain: a killed client's will is published", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const js = yield* connectClient(url)
      const got = collect(js)
      yield* subscribe(js, "will/#", { qos: 1 })
      const subs = broker.stats().subscriptions
      const victim = yield* spawnLive("node", [bins.sub, "-p", String(port), "-t", "idle", "--will-topic", "will/victim", "--will-payload", "gone", "--will-qos", "1", "--will-retain"])
      yield* waitFor(() => broker.stats().subscriptions === subs + 1, "the victim to subscribe", 10_000)
      victim.child.kill("SIGKILL")
      yield* waitFor(() => got.length === 1, "the will", 10_000)
      expect(got[0]).toMatchObject({ topic: "will/victim", payload: "gone", qos: 1 })
      yield* waitFor(() => broker.stats().retained === 1, "the will to be retained")
    })
  )

  it.scopedLive("midge-pub is the same tool", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const js = yield* connectClient(url)
      const got = collect(js)
      yield* subscribe(js, "bin")
      expect((yield* run("node", [bins.pub, "-p", String(port), "-t", "bin", "-m", "x"])).code).toBe(0)
      yield* waitFor(() => got.length === 1, "the message")
    })
  )
})
