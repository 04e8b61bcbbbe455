/**
 * Issue #9, QoS 2 never duplicated: a node whose XADD reply was lost (its
 * Redis connection cut after Redis stored the entry) sends the same batch
 * again. Simulated on a real redis-server by appending one real batch twice
 * to the subscriber's node's inbox, as the publishing node's retry does: the
 * batch is what node a wrote (read back from Redis before b consumes it is a
 * race, so the test writes it in the same format, `src/cluster/internal/codec.ts`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { collect, connectClient, settle, subscribe, waitFor } from "../e2e/harness.js"
import { messageFields } from "../../src/cluster/internal/codec.js"
import { Message } from "../../src/session/Message.js"
import { redisClient, routed, startNode, startRedis } from "./harness.js"

describe("cluster: a retried batch (issue #9)", () => {
  it.scopedLive("the same batch stored twice in a node's inbox: its QoS 2 messages reach the subscriber once, its QoS 1 ones at least once", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const sub = yield* connectClient(b.url, { clientId: "sub", clean: false })
      const got = collect(sub)
      yield* subscribe(sub, "r/#", { qos: 2 })
      yield* routed(a, b, ["r/#"])

      const batch = [1, 2, 3].map((n) => {
        const qos = n === 3 ? 1 : 2
        const fields: Record<string, string> = messageFields(new Message(`r/${n}`, Buffer.from(`m${n}`), qos, false, undefined, "pub-on-a", Date.now()), undefined)
        // QoS 2 messages carry their cluster-wide id: the same in both copies of the batch
        if (qos === 2) fields.i = `a-run.${n}`
        return fields
      })
      const client = yield* redisClient(redis.url)
      for (let copy = 0; copy < 2; copy++) yield* Effect.promise(() => client.xAdd("t:inbox:b", "*", { b: JSON.stringify(batch) }))

      yield* waitFor(() => got.length >= 3, "the batch's messages")
      yield* settle(500)
      const payloads = got.map((m) => m.payload).sort()
      // QoS 2: once each; QoS 1: at least once (here twice: each copy is routed)
      expect(payloads.filter((p) => p === "m1")).toEqual(["m1"])
      expect(payloads.filter((p) => p === "m2")).toEqual(["m2"])
      expect(payloads.filter((p) => p === "m3").length).toBeGreaterThanOrEqual(1)

      // a new QoS 2 message (another id) goes through as usual
      yield* Effect.promise(() => client.xAdd("t:inbox:b", "*", { b: JSON.stringify([{ ...batch[0], i: "a-run.4", t: "r/4", p: Buffer.from("m4").toString("base64") }]) }))
      yield* waitFor(() => got.some((m) => m.payload === "m4"), "a later QoS 2 message")
    })
  )
})
