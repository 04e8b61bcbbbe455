/**
 * Session ownership across nodes: one owner per client id; a client that
 * reconnects to another node takes its session over (subscriptions, queued
 * and in-flight messages) and the old node lets go [MQTT-3.1.4-3].
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import mqttPacket from "mqtt-packet"
import { collect, connectClient, connectCollecting, publish, rawClient, settle, subscribe, waitFor } from "../e2e/harness.js"
import { routed, startNode, startRedis } from "./harness.js"

describe("cluster session takeover", () => {
  it.scopedLive("a client connected on node a that connects to node b: a closes the old connection (v5 0x8E), b has the session", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const old = yield* connectClient(a.url, { clientId: "x", clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 300 } })
      let reason: number | undefined
      old.on("disconnect", (packet) => (reason = packet.reasonCode))
      yield* subscribe(old, "s/#", { qos: 1 })
      yield* routed(b, a, ["s/#"])
      const { client: fresh, sessionPresent } = yield* connectCollecting(b.url, { clientId: "x", clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 300 } })
      expect(sessionPresent).toBe(true)
      yield* waitFor(() => reason === 0x8e, "DISCONNECT Session taken over on the old connection")
      expect(a.broker.core.sessions.has("x")).toBe(false)
      // the subscription moved: a publish on a reaches the client on b, through b's routes
      const got = collect(fresh)
      yield* routed(a, b, ["s/#"])
      const pub = yield* connectClient(a.url, { clientId: "pub" })
      yield* publish(pub, "s/1", "after", { qos: 1 })
      yield* waitFor(() => got.length === 1, "delivery on b")
      expect(got[0]).toMatchObject({ topic: "s/1", payload: "after", qos: 1 })
      yield* settle(200)
      expect(got.length).toBe(1)
    })
  )

  it.scopedLive("messages queued for an offline session on node a are delivered when it reconnects to node b", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const first = yield* connectClient(a.url, { clientId: "y", clean: false })
      yield* subscribe(first, "q/#", { qos: 1 })
      yield* Effect.promise(() => first.endAsync())
      yield* waitFor(() => a.broker.core.attached.size === 0, "y offline on a")
      const pub = yield* connectClient(b.url, { clientId: "pub" })
      yield* routed(b, a, ["q/#"])
      for (let i = 0; i < 5; i++) yield* publish(pub, "q/m", `m${i}`, { qos: 1 })
      yield* waitFor(() => a.broker.core.sessions.get("y")?.flow.queued === 5, "five queued on a")
      const { sessionPresent, got } = yield* connectCollecting(b.url, { clientId: "y", clean: false })
      expect(sessionPresent).toBe(true)
      yield* waitFor(() => got.length === 5, "the queued messages on b")
      expect(got.map((m) => m.payload)).toEqual(["m0", "m1", "m2", "m3", "m4"])
      expect(a.broker.core.sessions.has("y")).toBe(false)
    })
  )

  it.scopedLive("a clean session on node b discards the session node a held", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const first = yield* connectClient(a.url, { clientId: "z", clean: false })
      yield* subscribe(first, "gone/#", { qos: 1 })
      yield* Effect.promise(() => first.endAsync())
      yield* waitFor(() => a.broker.core.attached.size === 0, "z offline on a")
      const { sessionPresent } = yield* connectCollecting(b.url, { clientId: "z", clean: true })
      expect(sessionPresent).toBe(false)
      expect(a.broker.core.sessions.has("z")).toBe(false)
      expect(b.broker.core.sessions.get("z")?.subscriptions.size).toBe(0)
      yield* waitFor(() => !b.broker.cluster!.remoteFilters("a").has("gone/#"), "a's route gone")
    })
  )

  it.scopedLive("takeover with messages in flight: unacknowledged QoS 1 deliveries are resent by the new node with DUP", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      // a subscriber that never acknowledges: a raw socket
      const raw = yield* rawClient(a.port)
      yield* raw.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: false, clientId: "w", keepalive: 0 }))
      yield* raw.write(mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "f/#", qos: 1 }] }))
      yield* waitFor(() => a.broker.core.sessions.get("w")?.subscriptions.size === 1, "w subscribed on a")
      const session = a.broker.core.sessions.get("w")!
      yield* routed(b, a, ["f/#"])
      const pub = yield* connectClient(b.url, { clientId: "pub" })
      for (let i = 0; i < 3; i++) yield* publish(pub, "f/x", `i${i}`, { qos: 1 })
      yield* waitFor(() => session.flow.inflight.size === 3, "three in flight on a")
      const { got } = yield* connectCollecting(b.url, { clientId: "w", clean: false })
      yield* waitFor(() => got.length === 3, "three resent on b")
      expect(got.map((m) => [m.payload, m.dup])).toEqual([
        ["i0", true],
        ["i1", true],
        ["i2", true]
      ])
      yield* raw.waitClosed()
    })
  )
})
