/**
 * A node stopped cleanly (SIGTERM) hands its persistent sessions, and what its
 * inbox still holds for them, to a live node at once (issue #9): messages
 * published elsewhere while it is stopped queue for those sessions, and the
 * client gets each one once, back on the live node or on the restarted node.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { connectClient, connectCollecting, subscribe, waitFor } from "../e2e/harness.js"
import { useDaemons } from "./daemons.js"
import { routed, startNode, startRedis } from "./harness.js"

const { spawnNode } = useDaemons()

const stoppedNodeSessions = (back: "on the live node" | "on the restarted node") =>
  Effect.gen(function* () {
    const redis = yield* startRedis()
    const a = yield* startNode(redis.url, "a", { keyPrefix: "k", releaseTimeoutMs: 1000, settings: { maxQueuedMessages: 10_000 } })
    const b = yield* spawnNode(redis.url, "b")
    const sub = yield* connectClient(b.url, { clientId: "s", clean: false })
    yield* subscribe(sub, "m/#", { qos: 2 })
    yield* Effect.promise(() => sub.endAsync())
    yield* routed(a, b as never, ["m/#"])
    const pub = yield* connectClient(a.url, { clientId: "p" })
    const sent: Array<string> = []
    const publish = (qos: 1 | 2, n: number) =>
      Effect.promise(() => pub.publishAsync("m/x", `${qos}-${n}`, { qos })).pipe(Effect.tap(() => Effect.sync(() => sent.push(`${qos}-${n}`))))
    // queued on b (its inbox entries pending) before it stops
    for (let n = 0; n < 10; n++) yield* publish(1, n)
    for (let n = 0; n < 10; n++) yield* publish(2, n)
    const stoppedAt = Date.now()
    b.daemon.child.kill("SIGTERM")
    yield* waitFor(() => b.daemon.out.exited, "b to stop", 10_000)
    expect(b.daemon.out.code).toBe(0)
    expect(b.daemon.out.stderr).toContain("persistent sessions are handed to the live nodes")
    // adopted at once, not after the lease (3 s) would have expired
    yield* waitFor(() => a.log.recent.some((l) => l.includes("adopted 1 sessions of dead node b")), "a to adopt b's session", 10_000)
    expect(Date.now() - stoppedAt).toBeLessThan(2500)
    // published while b is stopped: queued on a for the session
    for (let n = 10; n < 30; n++) yield* publish(1, n)
    for (let n = 10; n < 30; n++) yield* publish(2, n)
    const url = back === "on the live node" ? a.url : (yield* spawnNode(redis.url, "b")).url
    const after = yield* connectCollecting(url, { clientId: "s", clean: false })
    expect(after.sessionPresent).toBe(true)
    yield* waitFor(() => new Set(after.got.map((m) => m.payload.toString())).size >= sent.length, "every message", 10_000)
    // none twice, late ones included (the stopped node's inbox is moved again a few heartbeats on)
    yield* Effect.sleep("1500 millis")
    const got = after.got.map((m) => m.payload.toString())
    expect(got.slice().sort()).toEqual(sent.slice().sort())
    for (const m of after.got) expect(m.qos).toBe(Number(m.payload.toString()[0]))
  })

describe("cluster: a node stopped cleanly hands its persistent sessions over", () => {
  it.scopedLive(
    "SIGTERM of the node of an offline persistent session: a live node adopts it at once; QoS 1 and 2 messages queued before and published after the stop reach the client back on the live node, each once",
    () => stoppedNodeSessions("on the live node"),
    30_000
  )

  it.scopedLive(
    "SIGTERM, then the node restarted: the client back on it gets the session (from the adopter) with every QoS 1 and 2 message, each once",
    () => stoppedNodeSessions("on the restarted node"),
    30_000
  )
})
