/**
 * Shared subscriptions across nodes [MQTT-4.8.2]: each message goes to one
 * member of the group cluster-wide, whichever node the members and the
 * publisher are on.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { collect, connectClient, publish, settle, subscribe, waitFor } from "../e2e/harness.js"
import { routed, startNode, startRedis } from "./harness.js"

describe("cluster shared subscriptions", () => {
  it.scopedLive("$share/g/job/# with a member on each of three nodes: every message to exactly one member, every member served", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const nodes = [yield* startNode(redis.url, "a"), yield* startNode(redis.url, "b"), yield* startNode(redis.url, "c")]
      const got: Array<ReturnType<typeof collect>> = []
      for (const [i, node] of nodes.entries()) {
        const member = yield* connectClient(node.url, { clientId: `m${i}`, protocolVersion: 5 })
        got.push(collect(member))
        yield* subscribe(member, "$share/g/job/#", { qos: 2 })
      }
      for (const x of nodes) for (const y of nodes) if (x !== y) yield* routed(x, y, ["$share/g/job/#"])
      // publishers on two nodes, QoS 1 and 2
      const pubA = yield* connectClient(nodes[0].url, { clientId: "pa" })
      const pubB = yield* connectClient(nodes[1].url, { clientId: "pb" })
      for (let i = 0; i < 30; i++) yield* publish(i % 2 === 0 ? pubA : pubB, `job/${i}`, `j${i}`, { qos: i % 3 === 0 ? 2 : 1 })
      const all = () => got.flat().map((m) => m.payload)
      yield* waitFor(() => all().length >= 30, "thirty deliveries")
      yield* settle(300)
      const payloads = all()
      expect(payloads.length).toBe(30)
      expect(new Set(payloads).size).toBe(30)
      for (const g of got) expect(g.length).toBeGreaterThan(0)
    })
  )

  it.scopedLive("a node whose member left no longer receives the group's messages; a non-shared subscriber on it still does", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const m1 = yield* connectClient(a.url, { clientId: "m1" })
      const got1 = collect(m1)
      yield* subscribe(m1, "$share/g/w", { qos: 1 })
      const m2 = yield* connectClient(b.url, { clientId: "m2" })
      const got2 = collect(m2)
      yield* subscribe(m2, "$share/g/w", { qos: 1 })
      const plain = yield* connectClient(b.url, { clientId: "plain" })
      const gotPlain = collect(plain)
      yield* subscribe(plain, "w", { qos: 1 })
      yield* routed(a, b, ["$share/g/w", "w"])
      yield* Effect.promise(() => m2.unsubscribeAsync("$share/g/w"))
      yield* waitFor(() => !a.broker.cluster!.remoteFilters("b").has("$share/g/w"), "a to forget b's member")
      const pub = yield* connectClient(a.url, { clientId: "p" })
      for (let i = 0; i < 6; i++) yield* publish(pub, "w", `w${i}`, { qos: 1 })
      yield* waitFor(() => got1.length === 6 && gotPlain.length === 6, "six to the remaining member and to the plain subscriber")
      yield* settle(200)
      expect(got2.length).toBe(0)
      expect(gotPlain.map((m) => m.payload)).toEqual(["w0", "w1", "w2", "w3", "w4", "w5"])
    })
  )
})
