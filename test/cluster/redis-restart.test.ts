/**
 * Redis goes away and comes back (a real redis-server killed and started
 * again on the same port, with no persistence: it comes back empty). While it
 * is away a QoS 1 PUBLISH that must cross nodes is not acknowledged; when it
 * is back the nodes announce their routes, heartbeats and retained messages
 * again and delivery resumes — the held message included.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { createClient } from "redis"
import { collect, connectClient, settle, subscribe, waitFor } from "../e2e/harness.js"
import { routed, startNode, startRedis } from "./harness.js"

describe("cluster: Redis restarted", () => {
  it.scopedLive("a publish during the outage is acknowledged only once stored, and delivered; routes and retained messages come back", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const sub = yield* connectClient(b.url, { clientId: "sub", clean: false })
      const got = collect(sub)
      yield* subscribe(sub, "r/#", { qos: 1 })
      yield* routed(a, b, ["r/#"])
      const pub = yield* connectClient(a.url, { clientId: "pub" })
      yield* Effect.promise(() => pub.publishAsync("r/kept", "retained", { qos: 1, retain: true }))
      yield* Effect.promise(() => pub.publishAsync("r/1", "before", { qos: 1 }))
      yield* waitFor(() => got.length === 2, "two messages before the outage")

      yield* Effect.promise(() => redis.stop())
      let acked = false
      const during = pub.publishAsync("r/2", "during", { qos: 1 }).then(() => (acked = true))
      yield* settle(400)
      // not stored in Redis yet: not acknowledged
      expect(acked).toBe(false)

      yield* Effect.promise(() => redis.start())
      yield* Effect.promise(() => during)
      yield* waitFor(() => got.some((m) => m.payload === "during"), "the message held during the outage", 10_000)
      // the empty Redis is filled again: routes, and the retained message from the nodes' replicas
      yield* waitFor(() => a.broker.cluster!.remoteFilters("b").has("r/#") && b.broker.cluster!.peers().includes("a"), "routes again", 10_000)
      const check = createClient({ url: redis.url })
      yield* Effect.acquireRelease(Effect.promise(() => check.connect()), () => Effect.sync(() => check.destroy()))
      const keys = yield* Effect.promise(async () => {
        for (let i = 0; i < 50; i++) {
          if ((await check.hExists("t:retained", "r/kept")) === 1) return true
          await new Promise((r) => setTimeout(r, 100))
        }
        return false
      })
      expect(keys).toBe(true)
      yield* Effect.promise(() => pub.publishAsync("r/3", "after", { qos: 1 }))
      yield* waitFor(() => got.some((m) => m.payload === "after"), "delivery after the restart", 10_000)
      // live deliveries (the retained one without its flag [MQTT-3.3.1-9]), in order, none lost, none twice
      expect(got.map((m) => m.payload)).toEqual(["retained", "before", "during", "after"])
      // a node started now finds the retained message in Redis
      const c = yield* startNode(redis.url, "c")
      expect(c.broker.core.router.retained.get("r/kept")?.payload.toString()).toBe("retained")
    }),
    30_000
  )
})
