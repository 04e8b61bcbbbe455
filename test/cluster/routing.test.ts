/**
 * Cross-node delivery through a real redis-server: a client on any node
 * receives what is published on any node, at every QoS; only nodes with
 * subscribers receive messages; retained messages are cluster-wide.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { collect, connectClient, publish, run, settle, subscribe, waitFor } from "../e2e/harness.js"
import { routed, startNode, startRedis } from "./harness.js"

describe("cluster routing", () => {
  it.scopedLive("a message published on one node reaches subscribers on the others, at QoS 0, 1 and 2", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const c = yield* startNode(redis.url, "c")
      const subB = yield* connectClient(b.url, { clientId: "sub-b" })
      const subC = yield* connectClient(c.url, { clientId: "sub-c", protocolVersion: 5 })
      const gotB = collect(subB)
      const gotC = collect(subC)
      yield* subscribe(subB, "q/#", { qos: 2 })
      yield* subscribe(subC, "q/+/x", { qos: 1 })
      yield* routed(a, b, ["q/#"])
      yield* routed(a, c, ["q/+/x"])
      const pub = yield* connectClient(a.url, { clientId: "pub-a" })
      for (const qos of [0, 1, 2] as const) yield* publish(pub, `q/${qos}/x`, `m${qos}`, { qos })
      yield* waitFor(() => gotB.length === 3 && gotC.length === 3, "three messages on b and c")
      expect(gotB.map((m) => [m.topic, m.payload, m.qos])).toEqual([
        ["q/0/x", "m0", 0],
        ["q/1/x", "m1", 1],
        ["q/2/x", "m2", 2]
      ])
      // granted QoS 1 on c: min(published, granted)
      expect(gotC.map((m) => [m.topic, m.payload, m.qos])).toEqual([
        ["q/0/x", "m0", 0],
        ["q/1/x", "m1", 1],
        ["q/2/x", "m2", 1]
      ])
      yield* settle(200)
      // exactly once: no duplicate later
      expect(gotB.length).toBe(3)
      expect(gotC.length).toBe(3)
    })
  )

  it.scopedLive("a node receives only what its subscribers match; one copy per node however many subscribers; never forwarded again", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const c = yield* startNode(redis.url, "c")
      const b1 = yield* connectClient(b.url, { clientId: "b1" })
      const b2 = yield* connectClient(b.url, { clientId: "b2" })
      const got1 = collect(b1)
      const got2 = collect(b2)
      yield* subscribe(b1, "only/b", { qos: 1 })
      yield* subscribe(b2, "only/#", { qos: 1 })
      yield* routed(a, b, ["only/b", "only/#"])
      yield* routed(c, b, ["only/b", "only/#"])
      const pub = yield* connectClient(a.url, { clientId: "pub" })
      for (let i = 0; i < 10; i++) yield* publish(pub, "only/b", `n${i}`, { qos: 1 })
      yield* publish(pub, "elsewhere", "x", { qos: 1 })
      yield* waitFor(() => got1.length === 10 && got2.length === 10, "ten messages to each subscriber on b")
      yield* settle(200)
      // one stream entry per message for b (two subscribers there), none for c, nothing back to a
      expect(a.broker.cluster!.stats().forwarded).toBe(10)
      expect(b.broker.cluster!.stats().received).toBe(10)
      expect(b.broker.cluster!.stats().forwarded).toBe(0)
      expect(c.broker.cluster!.stats().received).toBe(0)
      expect(got1.map((m) => m.payload)).toEqual(Array.from({ length: 10 }, (_, i) => `n${i}`))
    })
  )

  it.scopedLive("retained messages are stored in Redis: a subscriber on any node, or a node started later, gets them; an empty payload clears everywhere", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const pub = yield* connectClient(a.url, { clientId: "pub" })
      yield* publish(pub, "r/1", "one", { qos: 1, retain: true })
      yield* publish(pub, "r/2", "two", { qos: 1, retain: true })
      yield* waitFor(() => b.broker.core.router.retained.size === 2, "b's replica")
      const sub = yield* connectClient(b.url, { clientId: "sub" })
      const got = collect(sub)
      yield* subscribe(sub, "r/#", { qos: 1 })
      yield* waitFor(() => got.length === 2, "two retained messages")
      expect(got.map((m) => [m.topic, m.payload, m.retain]).sort()).toEqual([
        ["r/1", "one", true],
        ["r/2", "two", true]
      ])
      // a node that joins later loads them; mosquitto_sub as an independent client
      const c = yield* startNode(redis.url, "c")
      const out = yield* run("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(c.port), "-t", "r/#", "-C", "2", "-W", "5", "-v"])
      expect(out.stdout.trim().split("\n").sort()).toEqual(["r/1 one", "r/2 two"])
      // cleared on a (with mosquitto_pub), gone on c
      const cleared = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(a.port), "-t", "r/1", "-r", "-n", "-q", "1"])
      expect(cleared.code).toBe(0)
      yield* waitFor(() => c.broker.core.router.retained.get("r/1") === undefined, "r/1 cleared on c")
      expect(c.broker.core.router.retained.get("r/2")?.payload.toString()).toBe("two")
    })
  )

  it.scopedLive("a node that leaves stops receiving at once; one node with no peers behaves as before", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const sub = yield* connectClient(b.url, { clientId: "sub" })
      yield* subscribe(sub, "t", { qos: 1 })
      yield* routed(a, b, ["t"])
      yield* b.stop
      yield* waitFor(() => a.broker.cluster!.peers().length === 0, "a to drop b")
      const local = yield* connectClient(a.url, { clientId: "local" })
      const got = collect(local)
      yield* subscribe(local, "t", { qos: 1 })
      const pub = yield* connectClient(a.url, { clientId: "pub" })
      yield* publish(pub, "t", "hello", { qos: 1 })
      yield* waitFor(() => got.length === 1, "local delivery")
      expect(a.broker.cluster!.stats().forwarded).toBe(0)
    })
  )

  it.scopedLive("a QoS 0 flood across nodes: nothing dropped, order kept (publishers are held up while Redis catches up)", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const sub = yield* connectClient(b.url, { clientId: "s" })
      const got: Array<number> = []
      sub.on("message", (_t, payload) => got.push(Number(payload.toString())))
      yield* subscribe(sub, "flood", { qos: 0 })
      yield* routed(a, b, ["flood"])
      const pub = yield* connectClient(a.url, { clientId: "p" })
      const total = 20_000
      for (let i = 0; i < total; i++) pub.publish("flood", String(i), { qos: 0 })
      yield* waitFor(() => got.length === total, `${total} messages on b`, 30_000)
      expect(got.every((n, i) => n === i)).toBe(true)
    }),
    40_000
  )
})
