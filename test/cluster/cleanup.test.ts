/**
 * A session's keys in Redis (`P:owner`, `P:subs`, `P:qos2`, `P:will`) live as
 * long as the session: no expiry while it is connected, its session expiry
 * (v5 Session Expiry Interval / `persistent_client_expiration`) once it is
 * offline (PEXPIRE: Redis removes them by itself, even if the node dies), no
 * expiry again when it comes back, deleted when a clean session ends.
 * The expiry runs inside redis-server, on its own clock: a real 2 s TTL.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import mqttPacket from "mqtt-packet"
import { connectClient, rawClient, subscribe, waitFor } from "../e2e/harness.js"
import { redisClient, startNode, startRedis } from "./harness.js"

const keysOf = (id: string) => [`t:owner:${id}`, `t:subs:${id}`, `t:qos2:${id}`, `t:will:${id}`]

describe("cluster: a session's keys in Redis follow its life", () => {
  it.scopedLive("v5 Session Expiry Interval 2 s: kept while connected, PEXPIREd when offline, PERSISTed when back, gone with the session", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const r = yield* redisClient(redis.url)
      const a = yield* startNode(redis.url, "a")
      const connect = mqttPacket.generate(
        {
          cmd: "connect",
          protocolId: "MQTT",
          protocolVersion: 5,
          clientId: "x",
          clean: false,
          keepalive: 0,
          properties: { sessionExpiryInterval: 2 },
          will: { topic: "will/x", payload: Buffer.from("gone"), qos: 0, retain: false, properties: { willDelayInterval: 60 } }
        },
        { protocolVersion: 5 }
      )
      const session = (raw: { write: (b: Buffer | Array<number>) => Effect.Effect<void>; data: () => Buffer }) =>
        Effect.gen(function* () {
          yield* raw.write(connect)
          yield* waitFor(() => raw.data().length > 0 && raw.data()[0] === 0x20, "CONNACK")
        })
      const first = yield* rawClient(a.port)
      yield* session(first)
      yield* first.write(mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "c/#", qos: 1 }] }, { protocolVersion: 5 }))
      // a QoS 2 PUBLISH whose PUBREL never comes: its id waits in P:qos2
      yield* first.write(mqttPacket.generate({ cmd: "publish", topic: "c/1", payload: Buffer.from("q2"), qos: 2, messageId: 7, dup: false, retain: false }, { protocolVersion: 5 }))
      const exists = () => Effect.promise(() => Promise.all(keysOf("x").map((k) => r.exists(k))))
      const ttls = () => Effect.promise(() => Promise.all(keysOf("x").map((k) => r.pTTL(k))))
      yield* Effect.promise(async () => {
        for (let i = 0; i < 200 && (await Promise.all(keysOf("x").map((k) => r.exists(k)))).some((n) => n === 0); i++) await new Promise((res) => setTimeout(res, 20))
      })
      expect(yield* exists()).toEqual([1, 1, 1, 1])
      expect(yield* ttls()).toEqual([-1, -1, -1, -1])

      // offline: every key expires with the session (the will waits for its delay, 60 s, longer than the session)
      first.socket.destroy()
      yield* waitFor(() => a.broker.core.attached.size === 0, "x offline")
      yield* Effect.promise(async () => {
        for (let i = 0; i < 200 && (await r.pTTL("t:owner:x")) < 0; i++) await new Promise((res) => setTimeout(res, 20))
      })
      for (const ttl of yield* ttls()) {
        expect(ttl).toBeGreaterThan(0)
        expect(ttl).toBeLessThanOrEqual(2000)
      }
      // back before the expiry: no expiry again
      const second = yield* rawClient(a.port)
      yield* session(second)
      yield* Effect.promise(async () => {
        for (let i = 0; i < 200 && (await r.pTTL("t:owner:x")) > 0; i++) await new Promise((res) => setTimeout(res, 20))
      })
      expect(yield* ttls()).toEqual([-1, -1, -1, -1])

      // offline again, and past the expiry: Redis removed them, and the node ended the session
      second.socket.destroy()
      yield* waitFor(() => a.broker.core.attached.size === 0, "x offline again")
      yield* Effect.sleep("2500 millis")
      expect(yield* exists()).toEqual([0, 0, 0, 0])
      yield* waitFor(() => !a.broker.core.sessions.has("x"), "the session expired on a")
      expect(yield* Effect.promise(() => r.sIsMember("t:clients:a", "x"))).toBe(0)
    })
  )

  it.scopedLive("a clean session's owner and will keys are deleted when it ends; a session that never expires keeps its keys offline", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const r = yield* redisClient(redis.url)
      const a = yield* startNode(redis.url, "a")
      const c = yield* connectClient(a.url, { clientId: "c", clean: true, will: { topic: "will/c", payload: Buffer.from("w"), qos: 0, retain: false } })
      yield* subscribe(c, "c/#", { qos: 1 })
      yield* waitFor(() => a.broker.core.sessions.has("c"), "c connected")
      yield* Effect.promise(async () => {
        for (let i = 0; i < 200 && (await r.exists("t:will:c")) === 0; i++) await new Promise((res) => setTimeout(res, 20))
      })
      expect(yield* Effect.promise(() => r.get("t:owner:c"))).toBe("a")
      expect(yield* Effect.promise(() => r.sIsMember("t:clients:a", "c"))).toBe(1)
      yield* Effect.promise(() => c.endAsync())
      yield* Effect.promise(async () => {
        for (let i = 0; i < 200 && (await r.exists(["t:owner:c", "t:will:c"])) > 0; i++) await new Promise((res) => setTimeout(res, 20))
      })
      expect(yield* Effect.promise(() => r.exists(keysOf("c")))).toBe(0)
      expect(yield* Effect.promise(() => r.sIsMember("t:clients:a", "c"))).toBe(0)

      // v3.1.1 clean session 0 never expires (no persistent_client_expiration): kept, without a TTL
      const p = yield* connectClient(a.url, { clientId: "p", clean: false })
      yield* subscribe(p, "p/#", { qos: 1 })
      yield* Effect.promise(() => p.endAsync())
      yield* waitFor(() => a.broker.core.attached.size === 0, "p offline")
      yield* Effect.sleep("300 millis")
      expect(yield* Effect.promise(() => r.get("t:owner:p"))).toBe("a")
      expect(yield* Effect.promise(() => r.pTTL("t:owner:p"))).toBe(-1)
      expect(yield* Effect.promise(() => r.pTTL("t:subs:p"))).toBe(-1)
    })
  )

  it.scopedLive("persistent_client_expiration gives a never-expiring session's keys its TTL when it goes offline", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const r = yield* redisClient(redis.url)
      const a = yield* startNode(redis.url, "a", { settings: { persistentClientExpiration: 1 } })
      const p = yield* connectClient(a.url, { clientId: "p", clean: false })
      yield* subscribe(p, "p/#", { qos: 1 })
      yield* Effect.promise(() => p.endAsync())
      yield* waitFor(() => a.broker.core.attached.size === 0, "p offline")
      yield* Effect.promise(async () => {
        for (let i = 0; i < 200 && (await r.pTTL("t:subs:p")) < 0; i++) await new Promise((res) => setTimeout(res, 20))
      })
      const ttl = yield* Effect.promise(() => r.pTTL("t:subs:p"))
      expect(ttl).toBeGreaterThan(0)
      expect(ttl).toBeLessThanOrEqual(1000)
      yield* Effect.sleep("1300 millis")
      expect(yield* Effect.promise(() => r.exists(keysOf("p")))).toBe(0)
    })
  )
})
