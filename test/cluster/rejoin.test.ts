/**
 * A node that (re)starts announces its routes on the routes channel before its first heartbeat
 * makes it a member of the cluster. Another node's heartbeat that read the members just before
 * must not undo those routes: a message published there meanwhile would find no route and be
 * acknowledged to its publisher without reaching the restarted node's subscribers.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { settle, waitFor } from "../e2e/harness.js"
import { redisClient, startNode, startRedis } from "./harness.js"

describe("cluster: a node's routes announced before it is a member", () => {
  it.scopedLive("are kept by the other nodes' heartbeats for two periods, and dropped after that if it never becomes one", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const heartbeatMs = 500
      const b = yield* startNode(redis.url, "b", { heartbeatMs })
      const r = yield* redisClient(redis.url)
      // node x announces a route, as a starting node does, and is not (yet) in the members' set
      yield* Effect.promise(() => r.publish("t:routes", JSON.stringify({ n: "x", op: "+", f: "z/#" })))
      yield* waitFor(() => b.broker.cluster!.remoteFilters("x").has("z/#"), "b to learn x's route from the channel")
      // at least one of b's heartbeats ran since (every 500 ms): x is not a member, and its route stays
      yield* settle(heartbeatMs * 1.3)
      expect(b.broker.cluster!.remoteFilters("x").has("z/#")).toBe(true)
      expect(b.log.recent.join("\n")).not.toContain("Cluster: node x left.")
      // x never joined: once its announcement is two periods old, a heartbeat drops it
      yield* waitFor(() => !b.broker.cluster!.remoteFilters("x").has("z/#"), "b to drop x", 5000)
      expect(b.log.recent.join("\n")).toContain("Cluster: node x left.")
    })
  )
})
