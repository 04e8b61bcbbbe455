/**
 * Limits from mosquitto.conf, each tested by what a client sees when it is
 * crossed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import * as mqttPacket from "mqtt-packet"
import { collect, connectClient, connectCollecting, packetsOf, publish, rawClient, settle, startBroker, subscribe, waitFor } from "./harness.js"

const gen = (packet: object, protocolVersion: 4 | 5 = 4) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion })

describe("limits", () => {
  it.scopedLive("upgrade_outgoing_qos: messages go out at the subscription's QoS", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker({ settings: { upgradeOutgoingQos: true } })
      const sub = yield* connectClient(url)
      const got = collect(sub)
      yield* subscribe(sub, "up", { qos: 2 })
      const pub = yield* connectClient(url)
      yield* publish(pub, "up", "x", { qos: 0 })
      yield* waitFor(() => got.length === 1, "the message")
      expect(got[0].qos).toBe(2)
    })
  )

  it.scopedLive("max_inflight_bytes: the window closes on payload bytes as well as on count", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker({ settings: { maxInflightBytes: 10, maxInflightMessages: 100 } })
      const c = yield* rawClient(port)
      yield* c.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "bytes", clean: true, keepalive: 0 }))
      yield* c.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "b", qos: 1 }] }))
      yield* waitFor(() => packetsOf(c).some((p) => p.cmd === "suback"), "SUBACK")
      const pub = yield* connectClient(url)
      for (let i = 0; i < 5; i++) yield* publish(pub, "b", "12345678", { qos: 1 }) // 8 bytes each
      const pubs = () => packetsOf(c).filter((p): p is mqttPacket.IPublishPacket => p.cmd === "publish")
      yield* waitFor(() => pubs().length === 2, "two in flight")
      yield* settle(150)
      expect(pubs().length).toBe(2) // 16 bytes in flight >= 10: the window is closed
      for (const p of pubs()) yield* c.write(gen({ cmd: "puback", messageId: p.messageId }))
      yield* waitFor(() => pubs().length === 4, "two more after the acks")
    })
  )

  it.scopedLive("max_queued_bytes and max_queued_messages: an offline session keeps what fits and drops the rest", () =>
    Effect.gen(function* () {
      for (const [settings, expected] of [
        [{ maxQueuedBytes: 25, maxQueuedMessages: 0 }, 3],
        [{ maxQueuedBytes: 0, maxQueuedMessages: 2 }, 2]
      ] as const) {
        const { url } = yield* startBroker({ settings })
        const first = yield* connectClient(url, { clientId: "offline", clean: false })
        yield* subscribe(first, "q", { qos: 1 })
        yield* Effect.promise(() => first.endAsync())
        const pub = yield* connectClient(url)
        for (let i = 0; i < 5; i++) yield* publish(pub, "q", `0123456789`, { qos: 1 })
        const again = yield* connectCollecting(url, { clientId: "offline", clean: false })
        yield* waitFor(() => again.got.length >= expected, `${expected} queued messages`)
        yield* settle(150)
        expect(again.got.length).toBe(expected)
      }
    })
  )

  it.scopedLive("memory_limit: over the limit, PUBLISH is dropped; v5 PUBACK says 0x97 (Quota exceeded)", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker({ settings: { memoryLimit: 1 } })
      const sub = yield* connectClient(url)
      const got = collect(sub)
      yield* subscribe(sub, "m", { qos: 1 })
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      const acks: Array<number | undefined> = []
      const reasons: Array<string | undefined> = []
      pub.on("packetreceive", (p) => {
        if (p.cmd === "puback") {
          acks.push(p.reasonCode)
          reasons.push(p.properties?.reasonString)
        }
      })
      yield* publish(pub, "m", "x", { qos: 1 }).pipe(Effect.ignore)
      yield* waitFor(() => acks.length === 1, "PUBACK")
      expect(acks[0]).toBe(0x97)
      expect(reasons[0]).toBe("memory_limit exceeded") // v5 Reason String
      yield* settle(100)
      expect(got.length).toBe(0)
    })
  )

  it.scoped("persistent_client_expiration: an offline persistent session is removed after the interval (TestClock)", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker({ settings: { persistentClientExpiration: 3600 } })
      const c = yield* rawClient(port)
      yield* c.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "sleeper", clean: false, keepalive: 0 }))
      yield* c.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "z", qos: 1 }] }))
      yield* waitFor(() => packetsOf(c).some((p) => p.cmd === "suback"), "SUBACK")
      c.socket.destroy()
      yield* waitFor(() => broker.stats().clientsConnected === 0, "the disconnect")
      expect(broker.stats().sessions).toBe(1)
      yield* TestClock.adjust("3590 seconds")
      expect(broker.stats().sessions).toBe(1)
      yield* TestClock.adjust("20 seconds")
      expect(broker.stats().sessions).toBe(0)
      expect(broker.stats().subscriptions).toBe(0)
      expect(broker.stats().clientsExpired).toBe(1)
    })
  )

  it.scopedLive("max_keepalive: v3.1.1 above it is refused (0x02); v5 is told the Server Keep Alive", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker({ settings: { maxKeepalive: 30 } })
      const c = yield* rawClient(port)
      yield* c.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "ka", clean: true, keepalive: 60 }))
      yield* c.waitClosed()
      expect([...c.data()]).toEqual([0x20, 0x02, 0x00, 0x02])
      const v5 = yield* connectCollecting(url, { protocolVersion: 5, keepalive: 60 })
      expect(v5.connack.properties?.serverKeepAlive).toBe(30)
    })
  )

  it.scopedLive("max_keepalive 0 means no maximum (as Mosquitto): any keepalive, 0 included, is accepted unchanged", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker({ settings: { maxKeepalive: 0 } })
      for (const keepalive of [0, 60, 65535]) {
        const c = yield* rawClient(port)
        yield* c.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: `ka${keepalive}`, clean: true, keepalive }))
        yield* waitFor(() => c.data().length >= 4, "CONNACK")
        expect([...c.data()]).toEqual([0x20, 0x02, 0x00, 0x00])
      }
      const v5 = yield* connectCollecting(url, { protocolVersion: 5, keepalive: 0 })
      expect(v5.connack.reasonCode ?? 0).toBe(0)
      expect(v5.connack.properties?.serverKeepAlive).toBeUndefined()
    })
  )

  it.scopedLive("message_size_limit: a larger payload is not delivered; v5 PUBACK says 0x83 (as Mosquitto)", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker({ settings: { messageSizeLimit: 4 } })
      const sub = yield* connectClient(url)
      const got = collect(sub)
      yield* subscribe(sub, "s", { qos: 1 })
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      const acks: Array<number | undefined> = []
      pub.on("packetreceive", (p) => {
        if (p.cmd === "puback") acks.push(p.reasonCode)
      })
      yield* publish(pub, "s", "too long", { qos: 1 }).pipe(Effect.ignore)
      yield* publish(pub, "s", "ok", { qos: 1 })
      yield* waitFor(() => got.length === 1 && acks.length === 2, `the small one (got ${got.length}, acks ${acks})`)
      expect(got[0].payload).toBe("ok")
      expect(acks[0]).toBe(0x83)
    })
  )

  it.scopedLive("allow_zero_length_clientid false refuses an empty id; auto_id_prefix names assigned ids", () =>
    Effect.gen(function* () {
      const refused = yield* startBroker({ settings: { allowZeroLengthClientid: false } })
      const c = yield* rawClient(refused.port)
      yield* c.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "", clean: true, keepalive: 0 }))
      yield* c.waitClosed()
      expect([...c.data()]).toEqual([0x20, 0x02, 0x00, 0x02])
      const prefixed = yield* startBroker({ settings: { autoIdPrefix: "midge-" } })
      const v5 = yield* connectCollecting(prefixed.url, { protocolVersion: 5, clientId: "" })
      expect(v5.connack.properties?.assignedClientIdentifier).toMatch(/^midge-/)
    })
  )

  it.scopedLive("retain_available false: CONNACK says so and a retained PUBLISH gets DISCONNECT 0x9A", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker({ settings: { retainAvailable: false } })
      const v5 = yield* connectCollecting(url, { protocolVersion: 5 })
      expect(v5.connack.properties?.retainAvailable).toBe(false)
      let reason: number | undefined
      v5.client.on("packetreceive", (p) => {
        if (p.cmd === "disconnect") reason = p.reasonCode
      })
      v5.client.publish("r", "x", { retain: true })
      yield* waitFor(() => reason !== undefined, "DISCONNECT")
      expect(reason).toBe(0x9a)
    })
  )
})
