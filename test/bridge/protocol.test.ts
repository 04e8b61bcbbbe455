/**
 * The bridge's MQTT client side against a scripted remote broker (a socket
 * server speaking mqtt-packet), for what a real broker will not show on
 * demand: the CONNECT fields (bridge bit, will, credentials), the try_private
 * fallback after CONNACK 0x01, SUBSCRIBE / UNSUBSCRIBE at connect, MQTT 5
 * CONNACK limits, bridge_max_packet_size, QoS 2 duplicates, resending in-flight
 * messages with DUP [MQTT-4.4.0-1], incoming topic aliases, keepalive.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqtt from "mqtt-packet"
import { Bridge, type BridgeService } from "../../src/bridge/Bridge.js"
import { Broker } from "../../src/Broker.js"
import { collect, connectClient, publish, settle, startBroker, subscribe, type TestBroker, waitFor } from "../e2e/harness.js"
import { fakeBroker, of, polite } from "./fakeRemote.js"
import { bridgesOf, freePort } from "./harness.js"

const bridgeTo = (port: number, lines: ReadonlyArray<string>, local?: TestBroker) =>
  Effect.gen(function* () {
    const l = local ?? (yield* startBroker())
    const bridge: BridgeService = yield* Bridge.make(
      bridgesOf(["connection fake", `address 127.0.0.1:${port}`, "remote_clientid fake-id", "restart_timeout 1", ...lines].join("\n"))
    ).pipe(Effect.provideService(Broker, l.broker))
    return { local: l, bridge }
  })

describe("the bridge as an MQTT client", () => {
  it.scopedLive("CONNECT: bridge bit, clean session, keepalive, will on the state topic, credentials; without the bit after CONNACK 0x01 (try_private)", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker((c, p, i) => {
        if (p.cmd === "connect" && i === 0) return c.send({ cmd: "connack", returnCode: 1, sessionPresent: false })
        polite(c, p)
      })
      const { bridge } = yield* bridgeTo(fake.port, ["remote_username user", "remote_password secret", "keepalive_interval 30", "topic a out"])
      yield* waitFor(() => bridge.status()[0].state === "connected", "the second attempt to connect", 10_000)
      const [first, second] = fake.connections.map((c) => of(c, "connect")[0])
      expect(first).toMatchObject({
        protocolId: "MQTT",
        protocolVersion: 4,
        bridgeMode: true,
        clean: false,
        clientId: "fake-id",
        keepalive: 30,
        username: "user",
        will: { topic: "$SYS/broker/connection/fake-id/state", qos: 1, retain: true }
      })
      expect(first.password?.toString()).toBe("secret")
      expect(first.will?.payload.toString()).toBe("0")
      expect((second as { bridgeMode?: boolean }).bridgeMode).toBeUndefined()
      expect(second.clientId).toBe("fake-id")
    })
  )

  it.scopedLive("at CONNACK: the remote state 1, SUBSCRIBE for in / both topics, UNSUBSCRIBE for out topics (bridge_attempt_unsubscribe); MQTT 5 No Local", () =>
    Effect.gen(function* () {
      for (const version of ["mqttv311", "mqttv50"] as const) {
        const fake = yield* fakeBroker(polite)
        const { bridge } = yield* bridgeTo(fake.port, [`bridge_protocol_version ${version}`, "topic in/# in 1 l/ r/", "topic both/# both 2", "topic out/# out 0"])
        yield* waitFor(() => bridge.status()[0].state === "connected" && of(fake.connections[0], "unsubscribe").length === 1, "the connection")
        const c = fake.connections[0]
        const state = of(c, "publish")[0]
        expect([state.topic, state.payload.toString(), state.qos, state.retain]).toEqual(["$SYS/broker/connection/fake-id/state", "1", 1, true])
        const subs = of(c, "subscribe").flatMap((s) => s.subscriptions)
        if (version === "mqttv50") {
          expect(subs).toEqual([
            { topic: "r/in/#", qos: 1, nl: true, rap: true, rh: 0 },
            { topic: "both/#", qos: 2, nl: true, rap: true, rh: 0 }
          ])
        } else {
          expect(subs.map((s) => [s.topic, s.qos])).toEqual([
            ["r/in/#", 1],
            ["both/#", 2]
          ])
        }
        expect(of(c, "unsubscribe").flatMap((u) => u.unsubscriptions)).toEqual(["out/#"])
      }
    })
  )

  it.scopedLive("MQTT 5 CONNACK limits: Maximum QoS and Retain Available; bridge_outgoing_retain false; bridge_max_packet_size drops", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker((c, p) => {
        if (p.cmd === "connect") return c.send({ cmd: "connack", reasonCode: 0, sessionPresent: false, properties: { maximumQoS: 1, retainAvailable: false } })
        polite(c, p)
      })
      const { local, bridge } = yield* bridgeTo(fake.port, ["bridge_protocol_version mqttv50", "bridge_max_packet_size 100", "notifications false", "topic a/# out 2"])
      yield* waitFor(() => bridge.status()[0].state === "connected", "the connection")
      const client = yield* connectClient(local.url)
      yield* publish(client, "a/big", Buffer.alloc(200, 1), { qos: 2 })
      yield* publish(client, "a/small", "x", { qos: 2, retain: true })
      yield* waitFor(() => of(fake.connections[0], "publish").length === 1, "the small message")
      yield* settle(200)
      const got = of(fake.connections[0], "publish")
      expect(got.map((p) => [p.topic, p.qos, p.retain])).toEqual([["a/small", 1, false]])
      expect(bridge.status()[0].dropped).toBe(1)

      const fake2 = yield* fakeBroker(polite)
      const second = yield* bridgeTo(fake2.port, ["bridge_outgoing_retain false", "notifications false", "topic b/# out 1"], local)
      yield* waitFor(() => second.bridge.status()[0].state === "connected", "the connection")
      yield* publish(client, "b/r", "kept?", { qos: 1, retain: true })
      // the retained a/small is not on an out topic of this bridge; b/r goes out without its retain flag
      yield* waitFor(() => of(fake2.connections[0], "publish").length === 1, "the message")
      expect(of(fake2.connections[0], "publish").map((p) => [p.topic, p.retain])).toEqual([["b/r", false]])
    })
  )

  it.scopedLive("incoming QoS 2: a resent PUBLISH before PUBREL is delivered once [MQTT-4.3.3-9]; PUBREC, PUBCOMP; topic aliases (MQTT 5)", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker(polite)
      const { local, bridge } = yield* bridgeTo(fake.port, [
        "bridge_protocol_version mqttv50",
        "bridge_session_expiry_interval 300",
        "bridge_receive_maximum 7",
        "notifications false",
        "topic t/# in 2"
      ])
      const client = yield* connectClient(local.url)
      const got = collect(client)
      yield* subscribe(client, "t/#", { qos: 2 })
      yield* waitFor(() => bridge.status()[0].state === "connected", "the connection")
      const c = fake.connections[0]
      const msg = { cmd: "publish", topic: "t/q2", payload: Buffer.from("once"), qos: 2, retain: false, messageId: 7 } as const
      c.send({ ...msg, dup: false })
      c.send({ ...msg, dup: true })
      yield* waitFor(() => of(c, "pubrec").length === 2, "two PUBRECs")
      c.send({ cmd: "pubrel", messageId: 7 })
      yield* waitFor(() => of(c, "pubcomp").length === 1, "PUBCOMP")
      // the subscriber takes the QoS 2 message through its own handshake with the broker: the QoS 0 ones
      // below could overtake it, so they go once it is in
      yield* waitFor(() => got.length === 1, "the QoS 2 message")
      c.send({ cmd: "publish", topic: "t/alias", payload: Buffer.from("1"), qos: 0, retain: false, dup: false, properties: { topicAlias: 3 } })
      c.send({ cmd: "publish", topic: "", payload: Buffer.from("2"), qos: 0, retain: false, dup: false, properties: { topicAlias: 3 } })
      yield* waitFor(() => got.length === 3, "the messages")
      expect(got.map((m) => [m.topic, m.payload])).toEqual([
        ["t/q2", "once"],
        ["t/alias", "1"],
        ["t/alias", "2"]
      ])
      expect(of(c, "connect")[0].properties).toEqual({ sessionExpiryInterval: 300, receiveMaximum: 7, topicAliasMaximum: 10 })
    })
  )

  it.scopedLive("a QoS 2 PUBLISH with packet identifier 0 from the remote ends the link, undelivered and unacknowledged [MQTT-2.3.1-1]", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker(polite)
      const { local, bridge } = yield* bridgeTo(fake.port, ["notifications false", "topic z/# in 2"])
      const client = yield* connectClient(local.url)
      const got = collect(client)
      yield* subscribe(client, "z/#", { qos: 2 })
      yield* waitFor(() => bridge.status()[0].state === "connected", "the connection")
      const first = fake.connections[0]
      first.send({ cmd: "publish", topic: "z/0", payload: Buffer.from("zero"), qos: 2, retain: false, dup: false, messageId: 0 })
      yield* waitFor(() => first.socket.destroyed || first.socket.readableEnded, "the link to end")
      yield* waitFor(() => fake.connections.length === 2 && bridge.status()[0].state === "connected", "the link back", 10_000)
      // the link is fine again: a valid id is delivered
      fake.connections[1].send({ cmd: "publish", topic: "z/1", payload: Buffer.from("one"), qos: 2, retain: false, dup: false, messageId: 1 })
      yield* waitFor(() => got.length === 1, "the valid message")
      expect(got.map((m) => m.topic)).toEqual(["z/1"])
      expect(of(first, "pubrec")).toEqual([])
      expect(local.log.recent.join("\n")).toContain("Bridge fake: packet identifier 0 in a QoS > 0 PUBLISH.")
    })
  )

  it.scopedLive("a PUBLISH in the same chunk as the CONNACK (a kept remote session) is delivered", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker((c, p) => {
        if (p.cmd !== "connect") return polite(c, p)
        c.socket.write(
          Buffer.concat([
            mqtt.generate({ cmd: "connack", returnCode: 0, sessionPresent: true }),
            mqtt.generate({ cmd: "publish", topic: "kept/1", payload: Buffer.from("waiting"), qos: 1, messageId: 9, retain: false, dup: false })
          ])
        )
      })
      const local = yield* startBroker()
      const client = yield* connectClient(local.url)
      const got = collect(client)
      yield* subscribe(client, "kept/#", { qos: 1 })
      yield* bridgeTo(fake.port, ["notifications false", "topic kept/# in 1"], local)
      yield* waitFor(() => got.length === 1 && fake.connections.length > 0 && of(fake.connections[0], "puback").length === 1, "the message and its PUBACK")
      expect([got[0].topic, got[0].payload]).toEqual(["kept/1", "waiting"])
      expect(fake.connections.length).toBe(1)
    })
  )

  it.scopedLive("while the link is down: QoS 1 / 2 wait up to max_queued_messages (per bridge), QoS 0 only with queue_qos0_messages", () =>
    Effect.gen(function* () {
      const dead = yield* freePort
      for (const queueQos0 of [false, true]) {
        const local = yield* startBroker({ settings: { maxQueuedMessages: 2, queueQos0Messages: queueQos0 } })
        const { bridge } = yield* bridgeTo(dead, ["restart_timeout 60", "topic q/# out 2"], local)
        yield* waitFor(() => local.log.recent.some((l) => l.includes("unable to connect")), "a failed attempt")
        const client = yield* connectClient(local.url)
        yield* publish(client, "q/0", "zero", { qos: 0 })
        yield* publish(client, "q/1", "one", { qos: 1 })
        yield* publish(client, "q/2", "two", { qos: 2 })
        yield* publish(client, "q/3", "three", { qos: 1 })
        yield* settle(100)
        expect([queueQos0, bridge.status()[0].queued, bridge.status()[0].dropped]).toEqual(queueQos0 ? [true, 2, 2] : [false, 2, 1])
      }
    })
  )

  it.scopedLive("an unacknowledged QoS 1 message is resent with DUP and its packet id after a reconnection to a kept session [MQTT-4.4.0-1]", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker((c, p, i) => {
        if (p.cmd === "connect") return c.send({ cmd: "connack", returnCode: 0, sessionPresent: i > 0 })
        if (p.cmd === "publish" && i === 0) return // never acknowledged
        polite(c, p)
      })
      const { local, bridge } = yield* bridgeTo(fake.port, ["notifications false", "topic q/# out 1"])
      yield* waitFor(() => bridge.status()[0].state === "connected", "the connection")
      const client = yield* connectClient(local.url)
      yield* publish(client, "q/1", "again", { qos: 1 })
      yield* waitFor(() => of(fake.connections[0], "publish").length === 1, "the first send")
      expect(bridge.status()[0].inFlight).toBe(1)
      fake.connections[0].socket.destroy()
      yield* waitFor(() => fake.connections.length === 2 && of(fake.connections[1], "publish").length === 1, "the resend", 10_000)
      const [first, again] = [of(fake.connections[0], "publish")[0], of(fake.connections[1], "publish")[0]]
      expect([again.topic, again.dup, again.messageId]).toEqual(["q/1", true, first.messageId])
      expect(first.dup).toBe(false)
      yield* waitFor(() => bridge.status()[0].inFlight === 0, "the PUBACK")
    })
  )

  it.scopedLive("keepalive: PINGREQ after keepalive_interval of silence; no PINGRESP within another interval: reconnect", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker((c, p) => {
        if (p.cmd === "pingreq") return // silent
        polite(c, p)
      })
      const { bridge } = yield* bridgeTo(fake.port, ["keepalive_interval 5", "notifications false", "topic a out"])
      yield* waitFor(() => bridge.status()[0].state === "connected", "the connection")
      yield* waitFor(() => fake.connections.length === 2 && of(fake.connections[1], "connect").length === 1, "the reconnection", 15_000)
      const first = fake.connections[0]
      const connectedAt = of(first, "connect")[0].receivedAt
      const ping = of(first, "pingreq")[0]
      expect(ping.receivedAt - connectedAt).toBeGreaterThanOrEqual(4_900)
      expect(of(fake.connections[1], "connect")[0].receivedAt - ping.receivedAt).toBeGreaterThanOrEqual(4_900)
    })
  )

  it.scopedLive("$SYS counts the bridge as a client, as Mosquitto does: connected while the link is up, its packets, PUBLISHes and bytes both ways", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker(polite)
      const local = yield* startBroker()
      const stats = local.broker.core.stats
      const before = { ...stats }
      const { bridge } = yield* bridgeTo(fake.port, ["topic a/# both 1"], local)
      yield* waitFor(() => bridge.status()[0].state === "connected" && of(fake.connections[0], "subscribe").length === 1, "the link", 10_000)
      expect([stats.clientsConnected, stats.bridgesConnected]).toEqual([before.clientsConnected + 1, 1])
      expect(stats.clientsMaximum).toBeGreaterThanOrEqual(1)
      // the state notification ("1") went to the remote broker as a PUBLISH
      yield* waitFor(() => of(fake.connections[0], "publish").length === 1, "the notification")
      expect([stats.messagesSent - before.messagesSent, stats.publishBytesSent - before.publishBytesSent]).toEqual([1, 1])
      // out: a local message to the remote broker
      yield* local.broker.publish({ topic: "a/out", payload: "12345", qos: 1 })
      yield* waitFor(() => of(fake.connections[0], "publish").length === 2, "the PUBLISH on the remote side")
      expect([stats.messagesSent - before.messagesSent, stats.publishBytesSent - before.publishBytesSent]).toEqual([2, 6])
      // in: the remote broker's message
      fake.connections[0].send({ cmd: "publish", topic: "a/in", payload: Buffer.from("abc"), qos: 0, retain: false, dup: false })
      yield* waitFor(() => stats.messagesReceived - before.messagesReceived === 1, "the PUBLISH from the remote side")
      expect(stats.publishBytesReceived - before.publishBytesReceived).toBe(3)
      // CONNACK, SUBACK, PUBACK, PUBLISH received; CONNECT, SUBSCRIBE, PUBLISH sent at least
      expect(stats.packetsReceived - before.packetsReceived).toBeGreaterThanOrEqual(4)
      expect(stats.packetsSent - before.packetsSent).toBeGreaterThanOrEqual(3)
      expect(stats.bytesReceived).toBeGreaterThan(before.bytesReceived)
      expect(stats.bytesSent).toBeGreaterThan(before.bytesSent)
      // the link down: no longer connected
      fake.connections[0].socket.destroy()
      yield* waitFor(() => bridge.status()[0].state !== "connected", "the link to drop")
      expect([stats.clientsConnected, stats.bridgesConnected]).toEqual([before.clientsConnected, 0])
    })
  )

  it.scopedLive("a DISCONNECT from the remote ends the link; it comes back after restart_timeout", () =>
    Effect.gen(function* () {
      const fake = yield* fakeBroker((c, p, i) => {
        polite(c, p)
        if (p.cmd === "connect" && i === 0) c.send({ cmd: "disconnect", reasonCode: 0x8b })
      })
      const { local, bridge } = yield* bridgeTo(fake.port, ["bridge_protocol_version mqttv50", "topic a out"])
      yield* waitFor(() => fake.connections.length === 2 && bridge.status()[0].state === "connected", "the second connection", 10_000)
      expect(local.log.recent.join("\n")).toContain("Bridge fake: the remote broker disconnected (0x8b).")
    })
  )
})
