/**
 * MQTT 5 features end to end with Debian's mosquitto_pub / mosquitto_sub /
 * mosquitto_rr 2.0.11 in `-V mqttv5` (independent clients, libmosquitto): each
 * item of the MQTT 5 issue those tools can exercise. TestClock for session
 * expiry, message expiry and will delay (the broker's timers read the Clock;
 * the tools run in real time and never wait on it).
 *
 * What the 2.0.11 tools cannot do, and so is covered with MQTT.js and raw
 * clients in mqtt5.test.ts: subscription identifiers (no -D on SUBSCRIBE),
 * No Local / Retain As Published / Retain Handling (no --nl / --rap /
 * --retain-handling before 2.1), and receiving topic aliases (libmosquitto
 * 2.0.11 drops the connection on a PUBLISH with an alias and an empty topic).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { collect, connectClient, publish, run, settle, spawnScoped, startBroker, subscribe, waitFor } from "./harness.js"

/** common arguments: this broker, MQTT 5 */
const v5 = (port: number, ...args: Array<string>) => ["-h", "127.0.0.1", "-p", String(port), "-V", "mqttv5", ...args]

describe("MQTT 5 with mosquitto_pub / mosquitto_sub -V mqttv5", () => {
  it.scopedLive("message properties from mosquitto_pub -D publish reach mosquitto_sub: user property, response topic, correlation data, content type, payload format", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const sub = yield* spawnScoped("mosquitto_sub", v5(port, "-q", "1", "-t", "props/#", "-C", "1", "-W", "10", "-F", "%t|%P|%R|%D|%C|%F|%p"))
      yield* waitFor(() => broker.stats().subscriptions === 1, "mosquitto_sub to subscribe")
      const r = yield* run(
        "mosquitto_pub",
        v5(port, "-q", "1", "-t", "props/x", "-m", "body",
          "-D", "publish", "user-property", "colour", "blue",
          "-D", "publish", "response-topic", "replies/x",
          "-D", "publish", "correlation-data", "c-42",
          "-D", "publish", "content-type", "text/plain",
          "-D", "publish", "payload-format-indicator", "1")
      )
      expect(r.code).toBe(0)
      yield* waitFor(() => sub.out.exited, "mosquitto_sub to receive and exit")
      expect(sub.out.stdout).toBe("props/x|colour:blue|replies/x|c-42|text/plain|1|body\n")
    })
  )

  it.scoped("Message Expiry Interval: the interval is reduced by the time waited, and an expired retained message is not sent [MQTT-3.3.2-5] [MQTT-3.3.2-6]", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const pub = yield* run("mosquitto_pub", v5(port, "-r", "-t", "exp/kept", "-m", "kept", "-D", "publish", "message-expiry-interval", "30"))
      expect(pub.code).toBe(0)
      yield* TestClock.adjust("10 seconds")
      const early = yield* run("mosquitto_sub", v5(port, "-t", "exp/#", "-C", "1", "-W", "5", "-F", "%t %E %r %p"))
      expect(early.stdout).toBe("exp/kept 20 1 kept\n")
      yield* TestClock.adjust("25 seconds")
      // expired: the first message the late subscriber sees is a live one published after it subscribed
      const subs = broker.stats().subscriptions
      const late = yield* spawnScoped("mosquitto_sub", v5(port, "-t", "exp/#", "-C", "1", "-W", "5", "-F", "%t %r %p"))
      yield* waitFor(() => broker.stats().subscriptions === subs + 1, "the late mosquitto_sub to subscribe")
      yield* run("mosquitto_pub", v5(port, "-t", "exp/live", "-m", "live"))
      yield* waitFor(() => late.out.exited, "the late mosquitto_sub to exit")
      expect(late.out.stdout).toBe("exp/live 0 live\n")
    })
  )

  it.scoped("Session Expiry Interval (-c -x): queued messages wait for the client; the session ends after the interval; -D disconnect session-expiry-interval 0 ends it at once", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const persistent = (...args: Array<string>) => v5(port, "-c", "-i", "keeper", "-x", "10", "-q", "1", "-t", "queue/#", ...args)
      const first = yield* run("mosquitto_sub", persistent("-E"))
      expect(first.code).toBe(0)
      yield* waitFor(() => broker.stats().clientsConnected === 0, "mosquitto_sub to disconnect")
      expect(broker.stats().sessions).toBe(1)
      expect((yield* run("mosquitto_pub", v5(port, "-q", "1", "-t", "queue/1", "-m", "waited"))).code).toBe(0)
      yield* TestClock.adjust("9 seconds")
      const back = yield* run("mosquitto_sub", persistent("-C", "1", "-W", "5", "-v"))
      expect(back.stdout).toBe("queue/1 waited\n")
      yield* waitFor(() => broker.stats().clientsConnected === 0, "mosquitto_sub to disconnect again")
      // the interval runs again from this disconnect
      yield* TestClock.adjust("9 seconds")
      expect(broker.stats().sessions).toBe(1)
      yield* TestClock.adjust("2 seconds")
      expect(broker.stats().sessions).toBe(0)
      // the interval changed to 0 at DISCONNECT [MQTT-3.14.2-2]: the session ends with the connection
      const shortened = yield* run("mosquitto_sub", v5(port, "-c", "-i", "brief", "-x", "600", "-t", "t", "-E", "-D", "disconnect", "session-expiry-interval", "0"))
      expect(shortened.code).toBe(0)
      yield* waitFor(() => broker.stats().clientsConnected === 0, "mosquitto_sub to disconnect")
      expect(broker.stats().sessions).toBe(0)
    })
  )

  it.scoped("Will Delay Interval (-D will will-delay-interval): after the delay, not if the client returns in time, at once without a session [MQTT-3.1.3-9]", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const watcher = yield* connectClient(url, { protocolVersion: 5 })
      const wills = collect(watcher)
      yield* subscribe(watcher, "wills/#", { qos: 1 })
      const victim = (id: string, expiry: string, delay: string) =>
        spawnScoped("mosquitto_sub", v5(port, "-i", id, ...(expiry === "0" ? [] : ["-c", "-x", expiry]), "-t", `alive/${id}`,
          "--will-topic", `wills/${id}`, "--will-payload", `${id} gone`, "--will-qos", "1", "-D", "will", "will-delay-interval", delay))
      const subscribed = (n: number) => waitFor(() => broker.stats().subscriptions === n, "the victims to subscribe")

      const delayed = yield* victim("delayed", "60", "5")
      const returns = yield* victim("returns", "60", "5")
      const noSession = yield* victim("nosession", "0", "30")
      yield* subscribed(4)
      for (const v of [delayed, returns, noSession]) v.child.kill("SIGKILL")
      yield* waitFor(() => broker.stats().clientsConnected === 1, "the victims' connections to end")
      // no session to wait for: the will goes at once
      yield* waitFor(() => wills.length === 1, "the will of the session that ended with its connection")
      expect(wills[0]).toMatchObject({ topic: "wills/nosession", payload: "nosession gone" })
      yield* TestClock.adjust("2 seconds")
      // "returns" comes back in time: its will is not sent
      const back = yield* run("mosquitto_sub", v5(port, "-c", "-i", "returns", "-x", "60", "-t", "alive/returns", "-E"))
      expect(back.code).toBe(0)
      yield* TestClock.adjust("2 seconds")
      yield* settle(100)
      expect(wills.map((w) => w.topic)).toEqual(["wills/nosession"])
      yield* TestClock.adjust("2 seconds")
      yield* waitFor(() => wills.length === 2, "the delayed will")
      expect(wills[1]).toMatchObject({ topic: "wills/delayed", payload: "delayed gone", qos: 1 })
      yield* TestClock.adjust("60 seconds")
      yield* settle(100)
      expect(wills.map((w) => w.topic)).toEqual(["wills/nosession", "wills/delayed"])
    })
  )

  it.scopedLive("inbound topic aliases from mosquitto_pub (-D publish topic-alias): set, reused; above Topic Alias Maximum → DISCONNECT 0x94", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const js = yield* connectClient(url, { protocolVersion: 5 })
      const got = collect(js)
      yield* subscribe(js, "alias/#", { qos: 1 })
      // the first PUBLISH carries the topic and alias 1, the next two only the alias
      const r = yield* run("mosquitto_pub", v5(port, "-q", "1", "-t", "alias/a/rather/long/topic", "-m", "m", "--repeat", "3", "-D", "publish", "topic-alias", "1", "-d"))
      expect(r.code).toBe(0)
      expect(r.stdout).toContain("'(null)'") // libmosquitto sent the later ones without a topic
      yield* waitFor(() => got.length === 3, "3 messages")
      expect(got.map((m) => m.topic)).toEqual(Array.from({ length: 3 }, () => "alias/a/rather/long/topic"))
      // the broker advertises 10
      const bad = yield* run("mosquitto_pub", v5(port, "-q", "1", "-t", "alias/x", "-m", "m", "-D", "publish", "topic-alias", "11", "-d"))
      expect(bad.code).not.toBe(0)
      expect(bad.stdout).toContain("Received DISCONNECT (148)")
      yield* publish(js, "alias/after", "still serving", { qos: 1 })
      yield* waitFor(() => got.length === 4, "the broker to go on serving")
    })
  )

  it.scopedLive("no outbound topic aliases to a client that did not allow them (mosquitto_sub without topic-alias-maximum)", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const sub = yield* spawnScoped("mosquitto_sub", v5(port, "-t", "same/topic", "-C", "3", "-W", "10", "-F", "%t|%A|%p"))
      yield* waitFor(() => broker.stats().subscriptions === 1, "mosquitto_sub to subscribe")
      expect((yield* run("mosquitto_pub", v5(port, "-t", "same/topic", "-m", "x", "--repeat", "3"))).code).toBe(0)
      yield* waitFor(() => sub.out.exited, "mosquitto_sub to exit")
      expect(sub.out.code).toBe(0)
      expect(sub.out.stdout).toBe("same/topic||x\n".repeat(3))
    })
  )

  it.scopedLive("Receive Maximum 1 (-D connect receive-maximum): every QoS 1 and 2 message reaches mosquitto_sub, in order", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const sub = yield* spawnScoped("mosquitto_sub", v5(port, "-q", "2", "-t", "rm/#", "-C", "20", "-W", "10", "-F", "%q %p", "-D", "connect", "receive-maximum", "1"))
      yield* waitFor(() => broker.stats().subscriptions === 1, "mosquitto_sub to subscribe")
      const js = yield* connectClient(url, { protocolVersion: 5 })
      const sent = Array.from({ length: 20 }, (_, i) => i)
      yield* Effect.forEach(sent, (i) => publish(js, "rm/x", `m${i}`, { qos: i % 2 === 0 ? 1 : 2 }), { concurrency: "unbounded" })
      yield* waitFor(() => sub.out.exited, "mosquitto_sub to receive 20 messages")
      expect(sub.out.code).toBe(0)
      expect(sub.out.stdout).toBe(sent.map((i) => `${i % 2 === 0 ? 1 : 2} m${i}\n`).join(""))
    })
  )

  it.scopedLive("the client's Maximum Packet Size (-D connect maximum-packet-size): a larger message is not sent to it, others are [MQTT-3.1.2-25]", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const small = yield* spawnScoped("mosquitto_sub", v5(port, "-q", "1", "-t", "size", "-C", "1", "-W", "10", "-F", "%p", "-D", "connect", "maximum-packet-size", "100"))
      yield* waitFor(() => broker.stats().subscriptions === 1, "mosquitto_sub to subscribe")
      const js = yield* connectClient(url, { protocolVersion: 5 })
      const got = collect(js)
      yield* subscribe(js, "size", { qos: 1 })
      yield* publish(js, "size", "x".repeat(300), { qos: 1 })
      yield* publish(js, "size", "fits", { qos: 1 })
      yield* waitFor(() => small.out.exited && got.length === 2, "deliveries")
      expect(small.out.stdout).toBe("fits\n")
    })
  )

  it.scopedLive("request / response with mosquitto_rr: Response Topic and Correlation Data carried both ways", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const responder = yield* connectClient(url, { protocolVersion: 5 })
      responder.on("message", (_t, payload, packet) => {
        const p = packet.properties ?? {}
        if (p.responseTopic !== undefined) responder.publish(p.responseTopic, `re: ${payload}`, { qos: 1, properties: { correlationData: p.correlationData } })
      })
      yield* subscribe(responder, "service/echo", { qos: 1 })
      const r = yield* run("mosquitto_rr", v5(port, "-t", "service/echo", "-e", "replies/rr", "-m", "ping", "-W", "5", "-D", "publish", "correlation-data", "abc", "-F", "%p|%D"))
      expect(r.code).toBe(0)
      expect(r.stdout).toBe("re: ping|abc\n")
    })
  )

  it.scopedLive("shared subscriptions: two mosquitto_sub in one $share group split the messages, each to one of them", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const args = (n: string) => v5(port, "-i", n, "-q", "1", "-t", "$share/workers/jobs/#", "-C", "5", "-W", "10", "-F", "%p")
      const a = yield* spawnScoped("mosquitto_sub", args("worker-a"))
      const b = yield* spawnScoped("mosquitto_sub", args("worker-b"))
      yield* waitFor(() => broker.core.router.sharedGroup("workers", "jobs/#")?.members.length === 2, "both workers to subscribe")
      const js = yield* connectClient(url, { protocolVersion: 5 })
      for (let i = 0; i < 10; i++) yield* publish(js, "jobs/x", `job${i}`, { qos: 1 })
      yield* waitFor(() => a.out.exited && b.out.exited, "both workers to receive 5 and exit")
      const lines = (s: string) => s.split("\n").filter((l) => l !== "")
      expect(lines(a.out.stdout)).toHaveLength(5)
      expect(lines(b.out.stdout)).toHaveLength(5)
      expect([...lines(a.out.stdout), ...lines(b.out.stdout)].sort()).toEqual(Array.from({ length: 10 }, (_, i) => `job${i}`).sort())
    })
  )

  it.scopedLive("PUBACK 0x10 (No matching subscribers) seen by mosquitto_pub (it does not print PUBREC codes); 0x00 once someone subscribes", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const q1 = yield* run("mosquitto_pub", v5(port, "-q", "1", "-t", "nobody/here", "-m", "x", "-d"))
      expect(q1.stdout).toContain("received PUBACK (Mid: 1, RC:16)")
      const js = yield* connectClient(url, { protocolVersion: 5 })
      yield* subscribe(js, "nobody/#", { qos: 1 })
      const q1b = yield* run("mosquitto_pub", v5(port, "-q", "1", "-t", "nobody/here", "-m", "x", "-d"))
      expect(q1b.stdout).toContain("received PUBACK (Mid: 1, RC:0)")
    })
  )

  it.scopedLive("an unknown Authentication Method (-D connect authentication-method) is refused with CONNACK 0x8C", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const r = yield* run("mosquitto_pub", v5(port, "-t", "a", "-m", "x", "-D", "connect", "authentication-method", "SCRAM-SHA-256"))
      expect(r.code).toBe(0x8c) // mosquitto_pub exits with the CONNACK reason code
      expect(r.stderr).toContain("Bad authentication method")
    })
  )

  it.scopedLive("retain_available false is advertised truthfully: libmosquitto clears the retain flag of mosquitto_pub -r; nothing is retained", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker({ settings: { retainAvailable: false } })
      const r = yield* run("mosquitto_pub", v5(port, "-q", "1", "-r", "-t", "r", "-m", "x", "-d"))
      expect(r.code).toBe(0)
      // the client read Retain Available 0 from CONNACK and sent the message without the flag
      expect(r.stdout).toContain("sending PUBLISH (d0, q1, r0, m1, 'r'")
      expect(broker.stats().retained).toBe(0)
      // (a v5 client that sets the flag anyway gets DISCONNECT 0x9A: mqtt5-reason-codes.test.ts)
    })
  )

  it.scopedLive("max_keepalive: mosquitto_pub -k above it is accepted in v5 (the broker answers with a Server Keep Alive), refused in 3.1.1", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker({ settings: { maxKeepalive: 30 } })
      const ok = yield* run("mosquitto_pub", v5(port, "-k", "120", "-t", "k", "-m", "x", "-d"))
      expect(ok.code).toBe(0)
      const refused = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-V", "mqttv311", "-k", "120", "-t", "k", "-m", "x"])
      expect(refused.code).not.toBe(0)
    })
  )
})
