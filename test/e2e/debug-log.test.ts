/**
 * `log_type debug` (and `-v`, which is `log_type all`): every packet in and out, in the lines
 * Mosquitto 2.0 writes, so that a Mosquitto user reading `mosquitto -v` output reads Midge's.
 * The same client sessions against Debian's mosquitto and the daemon, the debug lines compared.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { freePort, run, spawnLive, startDaemon, startMosquitto } from "../support/processes.js"
import { connectClient, connectCollecting, publish, rawClient, startBroker, subscribe, waitFor } from "./harness.js"

/** The same client sessions, one after another, against the broker on `port`; `log` reads its log so far. */
const sessions = (port: number, log: () => string) =>
  Effect.gen(function* () {
    const p = ["-h", "127.0.0.1", "-p", String(port)]
    const sub = yield* spawnLive("mosquitto_sub", [...p, "-i", "subA", "-t", "a/#", "-t", "b/c", "-q", "2", "-C", "4"])
    yield* waitFor(() => log().includes("Sending SUBACK to subA"), "subA's SUBACK", 10_000)
    for (const args of [
      ["-i", "pub0", "-t", "a/x", "-m", "hello"],
      ["-i", "pub1", "-t", "a/y", "-m", "hi1", "-q", "1"],
      ["-i", "pub2", "-t", "a/z", "-m", "hi2", "-q", "2", "-r"],
      ["-i", "pub5", "-V", "mqttv5", "-t", "b/c", "-m", "v5", "-q", "1", "-D", "publish", "user-property", "k", "v"]
    ]) {
      const r = yield* run("mosquitto_pub", [...p, ...args])
      expect(r.code).toBe(0)
    }
    yield* waitFor(() => sub.out.exited, "subA to receive its 4 messages", 10_000)
    expect(sub.out.code).toBe(0)
    yield* waitFor(() => log().includes("Client subA disconnected."), "subA's disconnect line", 10_000)
    // the retained message to an MQTT 5 subscriber with a subscription identifier
    const sub5 = yield* run("mosquitto_sub", [...p, "-i", "sub5", "-V", "mqttv5", "-t", "a/#", "-q", "1", "-C", "1", "-D", "subscribe", "subscription-identifier", "7"])
    expect(sub5.stdout).toBe("hi2\n")
    // a will, and an unsubscribe; -W ends it after a second
    yield* run("mosquitto_sub", [...p, "-i", "subw", "-t", "q/#", "-W", "1", "--will-topic", "w/t", "--will-payload", "bye", "--will-qos", "1", "-U", "q/#"])
    // the retained message cleared
    expect((yield* run("mosquitto_pub", [...p, "-i", "pubr", "-t", "a/z", "-r", "-n"])).code).toBe(0)
    yield* waitFor(() => log().includes("Client pubr disconnected."), "pubr's disconnect line", 10_000)
  })

/** The per-packet lines of a log (timestamps and ports taken out), sorted: the brokers interleave clients in their own order. */
const packetLines = (log: string): Array<string> =>
  log
    .split("\n")
    .map((line) => line.replace(/^\d+: /, ""))
    .filter((line) => /^(Received|Sending|Denied|Will message|No will|\t)/.test(line))
    .sort()

describe("log_type debug: every packet, as Mosquitto logs it", () => {
  it.scopedLive("the same client sessions give Mosquitto 2.0's debug lines", () =>
    Effect.gen(function* () {
      const mosquitto = yield* startMosquitto(["allow_anonymous true"])
      yield* sessions(mosquitto.port, mosquitto.log)
      const port = yield* freePort
      const daemon = yield* startDaemon(["-p", String(port), "-v"], { port })
      yield* sessions(port, () => daemon.out.stderr)

      const theirs = packetLines(mosquitto.log())
      const ours = packetLines(daemon.out.stderr)
      // what the sessions must have produced, in both
      for (const line of [
        "Received PUBLISH from pub0 (d0, q0, r0, m0, 'a/x', ... (5 bytes))",
        "Sending PUBLISH to subA (d0, q0, r0, m0, 'a/x', ... (5 bytes))",
        "Sending PUBACK to pub1 (m1, rc0)",
        "Received PUBACK from subA (Mid: 1, RC:0)",
        "Sending PUBREC to pub2 (m1, rc0)",
        "Received PUBREL from pub2 (Mid: 1)",
        "Sending PUBCOMP to pub2 (m1)",
        "Received PUBREC from subA (Mid: 2)",
        "Sending PUBREL to subA (m2)",
        "Received PUBCOMP from subA (Mid: 2, RC:0)",
        "Sending PUBLISH to sub5 (d0, q1, r1, m1, 'a/z', ... (3 bytes))",
        "Received SUBSCRIBE from subA",
        "\ta/# (QoS 2)",
        "Sending SUBACK to subA",
        "Received UNSUBSCRIBE from subw",
        "\tq/#",
        "Sending UNSUBACK to subw",
        "Will message specified (3 bytes) (r0, q1).",
        "\tw/t",
        "No will message specified.",
        "Sending CONNACK to pub5 (0, 0)",
        "Received DISCONNECT from pubr",
        "Received PUBLISH from pubr (d0, q0, r1, m0, 'a/z', ... (0 bytes))"
      ]) {
        expect(theirs, `Mosquitto: ${line}`).toContain(line)
      }
      expect(ours).toStrictEqual(theirs)
      // and the connect line says p5 for an MQTT 5 client, as Mosquitto's
      expect(daemon.out.stderr).toMatch(/New client connected from 127\.0\.0\.1:\d+ as pub5 \(p5, c1, k60\)\./)
      expect(daemon.out.stderr).toMatch(/^\d+: midge version \S+ running$/m)
    })
  )

  it.scopedLive("PINGREQ, a denied PUBLISH's failure PUBACK and the server's DISCONNECT; nothing of it without debug", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const daemon = yield* startDaemon(["-p", String(port), "-v"], { port })
      const v5 = yield* rawClient(port)
      yield* v5.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "raw5", clean: true, keepalive: 0 } as mqttPacket.IConnectPacket, { protocolVersion: 5 }))
      yield* waitFor(() => daemon.out.stderr.includes("Sending CONNACK to raw5 (0, 0)"), "the CONNACK line")
      yield* v5.write(mqttPacket.generate({ cmd: "pingreq" }))
      yield* waitFor(() => daemon.out.stderr.includes("Sending PINGRESP to raw5"), "the PINGRESP line")
      expect(daemon.out.stderr).toContain("Received PINGREQ from raw5")
      // $SYS/... may not be published by clients: 0x87 in the PUBACK, and Mosquitto's "Denied PUBLISH" line
      yield* v5.write(mqttPacket.generate({ cmd: "publish", topic: "$SYS/x", payload: Buffer.from("no"), qos: 1, messageId: 9, retain: false, dup: false } as mqttPacket.IPublishPacket, { protocolVersion: 5 }))
      yield* waitFor(() => daemon.out.stderr.includes("Sending PUBACK to raw5 (m9, rc135)"), "the failure PUBACK line")
      expect(daemon.out.stderr).toContain("Denied PUBLISH from raw5 (d0, q1, r0, m9, '$SYS/x', ... (2 bytes))")
      expect(daemon.out.stderr).not.toContain("Received PUBLISH from raw5")
      // the same from a 3.1.1 client: a plain PUBACK on the wire, the code in the debug line (as Mosquitto's: rc135)
      const v3 = yield* rawClient(port)
      yield* v3.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "raw3", clean: true, keepalive: 0 } as mqttPacket.IConnectPacket))
      yield* waitFor(() => daemon.out.stderr.includes("Sending CONNACK to raw3 (0, 0)"), "raw3's CONNACK line")
      yield* v3.write(mqttPacket.generate({ cmd: "publish", topic: "$SYS/x", payload: Buffer.from("no"), qos: 1, messageId: 6, retain: false, dup: false } as mqttPacket.IPublishPacket))
      yield* waitFor(() => daemon.out.stderr.includes("Sending PUBACK to raw3 (m6, rc135)"), "raw3's PUBACK line")
      yield* waitFor(() => v3.data().length >= 8, "raw3's PUBACK")
      expect(v3.data().subarray(4).toString("hex")).toBe("40020006")
      // a second CONNECT is a protocol error: DISCONNECT 0x82
      yield* v5.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "raw5", clean: true, keepalive: 0 } as mqttPacket.IConnectPacket, { protocolVersion: 5 }))
      yield* waitFor(() => daemon.out.stderr.includes("Sending DISCONNECT to raw5 (rc130)"), "the DISCONNECT line")

      // without debug: the default log types say nothing per packet
      const quietPort = yield* freePort
      const quiet = yield* startDaemon(["-p", String(quietPort)], { port: quietPort })
      expect((yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(quietPort), "-i", "quiet", "-t", "a", "-m", "m", "-q", "1"])).code).toBe(0)
      yield* waitFor(() => quiet.out.stderr.includes("Client quiet disconnected."), "the disconnect line")
      expect(quiet.out.stderr).not.toMatch(/Received|Sending/)
    })
  )

  it.scopedLive("a resent QoS 2 PUBLISH is logged as received, once allowed; message_size_limit's drop has Mosquitto's line", () =>
    Effect.gen(function* () {
      const { port, log } = yield* startBroker({ settings: { messageSizeLimit: 4 } })
      const c = yield* rawClient(port)
      yield* c.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "q2", clean: true, keepalive: 0 } as mqttPacket.IConnectPacket))
      yield* waitFor(() => log.recent.includes("Sending CONNACK to q2 (0, 0)"), "the CONNACK line")
      const publish = (dup: boolean) => mqttPacket.generate({ cmd: "publish", topic: "t", payload: Buffer.from("ok"), qos: 2, messageId: 3, retain: false, dup } as mqttPacket.IPublishPacket)
      yield* c.write(publish(false))
      yield* c.write(publish(true))
      yield* waitFor(() => log.recent.filter((l) => l.startsWith("Sending PUBREC to q2 (m3, rc0)")).length === 2, "two PUBRECs")
      expect(log.recent).toContain("Received PUBLISH from q2 (d0, q2, r0, m3, 't', ... (2 bytes))")
      expect(log.recent).toContain("Received PUBLISH from q2 (d1, q2, r0, m3, 't', ... (2 bytes))")
      yield* c.write(mqttPacket.generate({ cmd: "publish", topic: "big", payload: Buffer.from("too large"), qos: 1, messageId: 4, retain: false, dup: false } as mqttPacket.IPublishPacket))
      yield* waitFor(() => log.recent.includes("Sending PUBACK to q2 (m4, rc0)"), "the PUBACK of the dropped message")
      expect(log.recent).toContain("Dropped too large PUBLISH from q2 (d0, q1, r0, m4, 'big', ... (9 bytes))")
      expect(log.recent.some((l) => l.startsWith("Received PUBLISH from q2 (d0, q1"))).toBe(false)
    })
  )

  it.scopedLive("an offline client's queue over max_queued_messages: Mosquitto's 'Outgoing messages are being dropped' once per episode", () =>
    Effect.gen(function* () {
      const { url, log } = yield* startBroker({ settings: { maxQueuedMessages: 2 } })
      const away = yield* connectClient(url, { clientId: "away", clean: false })
      yield* subscribe(away, "q/#", { qos: 1 })
      yield* Effect.promise(() => away.endAsync())
      yield* waitFor(() => log.recent.includes("Client away disconnected."), "the disconnect line")
      const pub = yield* connectClient(url, { clientId: "pub" })
      for (let i = 0; i < 5; i++) yield* publish(pub, "q/x", `m${i}`, { qos: 1 })
      const dropping = () => log.recent.filter((l) => l === "Outgoing messages are being dropped for client away.")
      yield* waitFor(() => dropping().length === 1, "the dropping line")
      // the client comes back and takes its queue: the next overflow is a new episode, logged again
      const back = yield* connectCollecting(url, { clientId: "away", clean: false })
      yield* waitFor(() => back.got.length === 2, "the two queued messages")
      expect(back.got.map((m) => m.payload)).toEqual(["m0", "m1"])
      yield* Effect.promise(() => back.client.endAsync())
      yield* waitFor(() => log.recent.filter((l) => l === "Client away disconnected.").length === 2, "the second disconnect line")
      for (let i = 5; i < 9; i++) yield* publish(pub, "q/x", `m${i}`, { qos: 1 })
      yield* waitFor(() => dropping().length === 2, "the dropping line of the second episode")
    })
  )
})
