/**
 * Issue #9, a subscription is cluster-wide from its SUBACK on: a message
 * published on another node after the SUBACK reaches the subscriber, however
 * late that node is to learn the new route (docs/cluster.md "Routing"). The
 * publisher's node applies the subscriber's node's route changes late here
 * (`learnLate`: its route notifications held back in order).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { collect, connectClient, publish, subscribe, waitFor } from "../e2e/harness.js"
import { learnLate, startNode, startRedis } from "./harness.js"

describe("cluster SUBACK (issue #9)", () => {
  it.scopedLive("a message published on another node right after the SUBACK arrives, that node learning the route 300 ms late", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a")
      const b = yield* startNode(redis.url, "b")
      const pub = yield* connectClient(b.url, { clientId: "pub" })
      const sub = yield* connectClient(a.url, { clientId: "sub", protocolVersion: 5 })
      const got = collect(sub)
      learnLate(b, "a", 300)
      yield* subscribe(sub, "s/#", { qos: 1 })
      // at once: b has not applied a's route yet unless SUBACK waited for it
      expect(b.broker.cluster!.remoteFilters("a").has("s/#")).toBe(true)
      yield* publish(pub, "s/1", "first", { qos: 1 })
      yield* waitFor(() => got.length === 1, "the message published after the SUBACK")
      expect(got.map((m) => [m.topic, m.payload])).toEqual([["s/1", "first"]])

      // a second subscriber to a filter a routes already: nothing to wait for, and it gets what follows too
      const sub2 = yield* connectClient(a.url, { clientId: "sub2" })
      const got2 = collect(sub2)
      yield* subscribe(sub2, "s/#", { qos: 1 })
      yield* publish(pub, "s/2", "second", { qos: 1 })
      yield* waitFor(() => got.length === 2 && got2.length === 1, "the second message at both subscribers")
      expect(got2.map((m) => [m.topic, m.payload])).toEqual([["s/2", "second"]])
    })
  )

  it.scopedLive("a node that does not answer holds the SUBACK back a third of the release timeout at most", () =>
    Effect.gen(function* () {
      const redis = yield* startRedis()
      const a = yield* startNode(redis.url, "a", { releaseTimeoutMs: 600 })
      const b = yield* startNode(redis.url, "b")
      // b applies nothing from a for a minute: its answer never comes in time
      learnLate(b, "a", 60_000)
      const sub = yield* connectClient(a.url, { clientId: "sub" })
      const granted = yield* subscribe(sub, "t/#", { qos: 1 })
      expect(granted.map((g) => g.qos)).toEqual([1])
    })
  )
})
