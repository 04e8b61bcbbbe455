/**
 * Wills across nodes. A client's will is kept in Redis with its session
 * (`P:will:<client id>`, written at CONNECT): when its node is killed (kill -9
 * of a real daemon) the node that adopts its sessions publishes the wills of
 * its clients — at once without Will Delay Interval, after the delay with one
 * — unless the client came back first [MQTT-3.1.3-9]. A client that moves to
 * another live node cancels its delayed will [MQTT-3.1.3-9].
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { createClient } from "redis"
import { collect, connectClient, connectCollecting, settle, subscribe, waitFor } from "../e2e/harness.js"
import { useDaemons } from "./daemons.js"
import { redisClient, startNode, startRedis } from "./harness.js"

const { spawnNode } = useDaemons()

const stored = (r: ReturnType<typeof createClient>, key: string) =>
  Effect.promise(async () => {
    for (let i = 0; i < 250 && (await r.exists(key)) === 0; i++) await new Promise((res) => setTimeout(res, 20))
    return r.exists(key)
  })

describe("cluster: wills", () => {
  it.scopedLive(
    "kill -9 of a node: the adopter publishes its clients' wills — without delay at once, with Will Delay Interval 2 s two seconds later — and not the will of a client back in time",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const r = yield* redisClient(redis.url)
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 500 })
        const watcher = yield* connectClient(b.url, { clientId: "watcher" })
        const wills = collect(watcher)
        const at = new Map<string, number>()
        watcher.on("message", (topic) => at.set(topic, Date.now()))
        yield* subscribe(watcher, "will/#", { qos: 1 })
        const n = yield* spawnNode(redis.url, "n")
        yield* waitFor(() => b.broker.cluster!.peers().includes("n"), "b to see n")
        const v5 = (id: string, delay: number) =>
          connectClient(n.url, {
            clientId: id,
            clean: false,
            protocolVersion: 5,
            reconnectPeriod: 0,
            properties: { sessionExpiryInterval: 300 },
            will: { topic: `will/${id}`, payload: Buffer.from(id), qos: 1, retain: false, properties: { willDelayInterval: delay } }
          })
        // a clean v3.1.1 client (its session ends with the connection), a delayed will, and one whose client comes back
        const plain = yield* connectClient(n.url, { clientId: "plain", clean: true, reconnectPeriod: 0, will: { topic: "will/plain", payload: Buffer.from("plain"), qos: 1, retain: false } })
        const delayed = yield* v5("delayed", 2)
        const back = yield* v5("back", 4)
        for (const c of [plain, delayed, back]) c.on("error", () => {})
        for (const id of ["plain", "delayed", "back"]) expect(yield* stored(r, `k:will:${id}`)).toBe(1)

        n.daemon.child.kill("SIGKILL")
        yield* waitFor(() => b.broker.core.sessions.has("delayed") && b.broker.core.sessions.has("back"), "b to adopt n's sessions", 8000)
        const adoptedAt = Date.now()
        // the clean session's will goes out at the adoption
        yield* waitFor(() => at.has("will/plain"), "plain's will", 2000)
        expect(at.has("will/delayed")).toBe(false)
        // "back" reconnects (to the adopter) within its delay: its will is cancelled
        const again = yield* connectCollecting(b.url, { clientId: "back", clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 300 } })
        expect(again.sessionPresent).toBe(true)
        yield* waitFor(() => at.has("will/delayed"), "delayed's will", 6000)
        expect(at.get("will/delayed")! - adoptedAt).toBeGreaterThanOrEqual(1500)
        yield* Effect.sleep(`${Math.max(0, adoptedAt + 4500 - Date.now())} millis`)
        expect(wills.map((m) => m.topic).sort()).toEqual(["will/delayed", "will/plain"])
        expect(wills.map((m) => m.payload).sort()).toEqual(["delayed", "plain"])
      }),
    40_000
  )

  it.scopedLive(
    "kill -9 of a node, the client back on another node before the death is seen: its delayed will is cancelled, a will without delay goes out",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const r = yield* redisClient(redis.url)
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 300 })
        const watcher = yield* connectClient(b.url, { clientId: "watcher" })
        const wills = collect(watcher)
        yield* subscribe(watcher, "will/#", { qos: 1 })
        const n = yield* spawnNode(redis.url, "n")
        yield* waitFor(() => b.broker.cluster!.peers().includes("n"), "b to see n")
        const options = (id: string, delay: number) => ({
          clientId: id,
          clean: false,
          protocolVersion: 5 as const,
          reconnectPeriod: 0,
          properties: { sessionExpiryInterval: 300 },
          will: { topic: `will/${id}`, payload: Buffer.from(id), qos: 1 as const, retain: false, properties: { willDelayInterval: delay } }
        })
        const d = yield* connectClient(n.url, options("d", 3))
        const z = yield* connectClient(n.url, options("z", 0))
        for (const c of [d, z]) c.on("error", () => {})
        for (const id of ["d", "z"]) expect(yield* stored(r, `k:will:${id}`)).toBe(1)
        n.daemon.child.kill("SIGKILL")
        // both come back at once: n's heartbeat has not expired, it does not answer
        const d2 = yield* connectCollecting(b.url, { clientId: "d", clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 300 } })
        const z2 = yield* connectCollecting(b.url, { clientId: "z", clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 300 } })
        // persistent sessions, subscriptions or not: Redis knew them
        expect(d2.sessionPresent).toBe(true)
        expect(z2.sessionPresent).toBe(true)
        yield* waitFor(() => wills.some((m) => m.topic === "will/z"), "z's will")
        // past d's delay, and past the death (b adopts n, nothing left of d there)
        yield* waitFor(() => !b.broker.cluster!.peers().includes("n"), "b to see n dead", 8000)
        yield* settle(3500)
        expect(wills.map((m) => m.topic)).toEqual(["will/z"])
      }),
    40_000
  )

  it.scopedLive("a client that moves to another live node cancels its delayed will [MQTT-3.1.3-9]; Redis has the new connection's will", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const r = yield* redisClient(redis.url)
      const a = yield* startNode(redis.url, "a", { releaseTimeoutMs: 1000 })
      const b = yield* startNode(redis.url, "b", { releaseTimeoutMs: 1000 })
      const watcher = yield* connectClient(b.url, { clientId: "watcher" })
      const wills = collect(watcher)
      yield* subscribe(watcher, "will/#", { qos: 1 })
      const options = (payload: string) => ({
        clientId: "m",
        clean: false,
        protocolVersion: 5 as const,
        reconnectPeriod: 0,
        properties: { sessionExpiryInterval: 300 },
        will: { topic: "will/m", payload: Buffer.from(payload), qos: 1 as const, retain: false, properties: { willDelayInterval: 1 } }
      })
      const first = yield* connectClient(a.url, options("first"))
      first.on("error", () => {})
      yield* subscribe(first, "m/#", { qos: 1 })
      const moved = yield* connectCollecting(b.url, options("second"))
      expect(moved.sessionPresent).toBe(true)
      yield* settle(1800)
      expect(wills).toEqual([])
      yield* Effect.promise(async () => {
        for (let i = 0; i < 100 && !((await r.get("t:will:m")) ?? "").includes(Buffer.from("second").toString("base64")); i++) await new Promise((res) => setTimeout(res, 20))
      })
      expect(yield* Effect.promise(() => r.get("t:will:m"))).toContain(Buffer.from("second").toString("base64"))
      // the new connection ends without DISCONNECT: its will, after its delay
      moved.client.stream.destroy()
      yield* waitFor(() => wills.length === 1, "the second connection's will", 4000)
      expect(wills[0].payload).toBe("second")
      expect(a.broker.core.sessions.has("m")).toBe(false)
    })
  )
})
