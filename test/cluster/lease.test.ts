/**
 * Session ownership is a lease: a node owns its sessions while its
 * `P:alive:<node>` key lives. A real daemon node stopped with SIGSTOP longer
 * than the key's TTL is taken for dead; its client reconnects to another node
 * meanwhile and another node adopts its other sessions. When it is continued
 * (SIGCONT) it finds out (its incarnation number moved on), disconnects its
 * clients (v5 DISCONNECT 0x8E), drops its stale sessions without writing over
 * what the other node now owns, and rejoins as a fresh node.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { collect, connectClient, connectCollecting, publish, type Received, settle, subscribe, waitFor } from "../e2e/harness.js"
import { useDaemons } from "./daemons.js"
import { redisClient, routed, startNode, startRedis, type TestNode } from "./harness.js"

// the daemon beats every second: its lease lapses 3 s after its last heartbeat
const { spawnNode } = useDaemons()

/**
 * Nodes a and n, n's persistent client y subscribed to `yy/#`. a's lease lapses (as after a stall) the first time
 * its Redis call `method` returns what `stallsAt` recognises; then n dies (its heartbeat stops, its alive key
 * goes). Once a has logged its adoption of n: the lapse happened, y is a's, and `at` finds a line in a's log.
 * `beforeRetry`: a's second try at adopting n waits for it (after a first one given up).
 */
const adoptionAfterALapse = (
  method: "mGet" | "sMembers",
  stallsAt: (args: ReadonlyArray<unknown>, result: unknown) => boolean,
  beforeRetry?: (a: TestNode) => Effect.Effect<void, Error, Scope.Scope>
) =>
  Effect.gen(function* () {
    const redis = yield* startRedis()
    const r = yield* redisClient(redis.url)
    const a = yield* startNode(redis.url, "a")
    const n = yield* startNode(redis.url, "n")
    yield* waitFor(() => a.broker.cluster!.peers().includes("n"), "a to see n")
    const y = yield* connectClient(n.url, { clientId: "y", clean: false, reconnectPeriod: 0 })
    // what y gets on n, from the start (n, not quite dead in these tests, still reads its inbox)
    const yOnN = collect(y)
    yield* subscribe(y, "yy/#", { qos: 1 })
    yield* routed(a, n, ["yy/#"])
    // routes older than two heartbeats: a drops a dead node's routes then, unless it keeps them on purpose
    yield* Effect.sleep("600 millis")
    const impl = a.broker.core.cluster as unknown as {
      main: Record<string, (...args: Array<unknown>) => Promise<unknown>>
      leaseUntil: number
      adoptDead: (node: string) => Promise<boolean>
    }
    const call = impl.main[method].bind(impl.main)
    let stalled = false
    impl.main[method] = async (...args: Array<unknown>) => {
      const result = await call(...args)
      if (!stalled && stallsAt(args, result)) {
        stalled = true
        impl.leaseUntil = 0
      }
      return result
    }
    let retrying = false
    let retry: () => void = () => {}
    if (beforeRetry !== undefined) {
      const held = new Promise<void>((resolve) => (retry = resolve))
      const adopt = impl.adoptDead.bind(impl)
      let tries = 0
      impl.adoptDead = async (node) => {
        if (++tries === 2) {
          retrying = true
          await held
        }
        return adopt(node)
      }
    }
    ;(n.broker.core.cluster as unknown as { heartbeat: () => Promise<void> }).heartbeat = async () => {}
    yield* Effect.promise(() => r.del("t:alive:n"))
    if (beforeRetry !== undefined) {
      yield* waitFor(() => retrying, "a to try adopting n again", 8000)
      yield* beforeRetry(a)
      retry()
    }
    yield* waitFor(() => a.log.recent.some((l) => l.includes("adopted 1 sessions of dead node n")), "a to adopt n's session", 8000)
    expect(stalled).toBe(true)
    expect(a.broker.core.sessions.has("y")).toBe(true)
    expect(yield* Effect.promise(() => r.get("t:owner:y"))).toBe("a")
    const lines = a.log.recent
    return { a, yOnN, at: (text: string) => lines.findIndex((l) => l.includes(text)) }
  })

describe("cluster: the session lease", () => {
  it.scopedLive(
    "a node stalled (SIGSTOP) longer than its lease while its client moves to another node: on SIGCONT it drops its stale sessions (0x8E to its clients) without writing over the new owner's, and rejoins; messages after the takeover arrive once",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const r = yield* redisClient(redis.url)
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 500 })
        const n = yield* spawnNode(redis.url, "n")
        yield* waitFor(() => b.broker.cluster!.peers().includes("n"), "b to see n")
        // x will move to b while n is stopped; y stays connected to n through the stall
        const x = yield* connectClient(n.url, { clientId: "x", clean: false, reconnectPeriod: 0 })
        yield* subscribe(x, "l/#", { qos: 1 })
        const y = yield* connectClient(n.url, { clientId: "y", clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 0 })
        let yReason: number | undefined
        y.on("disconnect", (packet) => (yReason = packet.reasonCode))
        y.on("error", () => {})
        yield* subscribe(y, "yy/#", { qos: 1 })
        yield* routed(b, n as never, ["l/#", "yy/#"])

        n.daemon.child.kill("SIGSTOP")
        const stoppedAt = Date.now()
        x.end(true)
        // b asks n to let x go, n does not answer: b rebuilds the session from Redis
        const x2 = yield* connectCollecting(b.url, { clientId: "x", clean: false })
        expect(x2.sessionPresent).toBe(true)
        // n's lease lapses: b takes it for dead and adopts y's session
        yield* waitFor(() => b.broker.core.sessions.has("y") && !b.broker.cluster!.peers().includes("n"), "b to adopt n's sessions", 8000)
        // the session changes on its new node: n's stale copy (l/#) must not come back
        yield* subscribe(x2.client, "m/#", { qos: 1 })
        yield* Effect.promise(() => x2.client.unsubscribeAsync("l/#"))
        const pubB = yield* connectClient(b.url, { clientId: "pb" })
        yield* publish(pubB, "m/1", "1", { qos: 1 })
        yield* waitFor(() => x2.got.length === 1, "m/1 at x on b")

        yield* Effect.sleep(`${Math.max(0, stoppedAt + 4500 - Date.now())} millis`)
        n.daemon.child.kill("SIGCONT")
        yield* waitFor(() => n.daemon.out.stderr.includes("rejoined as a fresh node"), "n to rejoin", 10_000)
        expect(n.daemon.out.stderr).toContain("lost its lease")
        expect(n.daemon.out.stderr).toMatch(/another node adopted its sessions/)
        // its client still connected through the stall was told: Session taken over
        yield* waitFor(() => yReason === 0x8e, "y to get DISCONNECT 0x8E")

        // exactly one owner, with the state the new owner wrote
        expect(b.broker.core.sessions.has("x")).toBe(true)
        expect(yield* Effect.promise(() => r.get("k:owner:x"))).toBe("b")
        expect(yield* Effect.promise(() => r.get("k:owner:y"))).toBe("b")
        expect((yield* Effect.promise(() => r.hKeys("k:subs:x"))).sort()).toEqual(["", "m/#"])
        expect(yield* Effect.promise(() => r.exists("k:session:x"))).toBe(0)
        expect(yield* Effect.promise(() => r.sIsMember("k:clients:n", "x"))).toBe(0)

        // n is a node again, with none of its old routes: messages from both nodes arrive once
        yield* waitFor(() => b.broker.cluster!.peers().includes("n"), "b to see n again", 8000)
        expect([...b.broker.cluster!.remoteFilters("n")]).toEqual([])
        const pubN = yield* connectClient(n.url, { clientId: "pn" })
        yield* publish(pubN, "m/2", "2", { qos: 1 })
        yield* publish(pubB, "m/3", "3", { qos: 1 })
        yield* publish(pubN, "l/9", "stale", { qos: 1 })
        yield* waitFor(() => x2.got.length >= 3, "m/2 and m/3 at x", 5000)
        yield* settle(500)
        expect(x2.got.map((m) => m.payload).sort()).toEqual(["1", "2", "3"])

        // y comes back to n: n asks b, its owner now, and gets the session
        const y2 = yield* connectCollecting(n.url, { clientId: "y", clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 300 } })
        expect(y2.sessionPresent).toBe(true)
        yield* waitFor(() => !b.broker.core.sessions.has("y"), "b to let y go")
        expect(yield* Effect.promise(() => r.get("k:owner:y"))).toBe("n")
      }),
    40_000
  )

  it.scopedLive(
    "a node stalled shorter than its lease but longer than the release timeout: its late answer is ignored, and letting go does not delete the new owner's stored subscriptions",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const r = yield* redisClient(redis.url)
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 300 })
        const n = yield* spawnNode(redis.url, "n")
        yield* waitFor(() => b.broker.cluster!.peers().includes("n"), "b to see n")
        const x = yield* connectClient(n.url, { clientId: "x", clean: false, reconnectPeriod: 0 })
        yield* subscribe(x, "s/#", { qos: 1 })
        yield* routed(b, n as never, ["s/#"])
        // just after a heartbeat of n (its alive key refreshed), so that 1.2 s of stall stay inside its lease
        const beat = yield* Effect.promise(() => r.pTTL("k:alive:n"))
        yield* Effect.sleep(`${Math.max(0, beat - 2000 + 50)} millis`)
        n.daemon.child.kill("SIGSTOP")
        x.end(true)
        const x2 = yield* connectCollecting(b.url, { clientId: "x", clean: false })
        expect(x2.sessionPresent).toBe(true)
        yield* Effect.sleep("900 millis")
        n.daemon.child.kill("SIGCONT")
        // n reads b's request late and lets its copy go: nothing it does removes what b now owns
        yield* settle(1500)
        expect(n.daemon.out.stderr).not.toContain("lost its lease")
        expect((yield* Effect.promise(() => r.hKeys("k:subs:x"))).sort()).toEqual(["", "s/#"])
        expect(yield* Effect.promise(() => r.get("k:owner:x"))).toBe("b")
        expect([...b.broker.cluster!.remoteFilters("n")]).toEqual([])
        const pub = yield* connectClient(n.url, { clientId: "p" })
        yield* publish(pub, "s/1", "once", { qos: 1 })
        yield* waitFor(() => x2.got.length === 1, "the message at x on b")
        yield* settle(300)
        expect(x2.got.map((m) => m.payload)).toEqual(["once"])
      }),
    30_000
  )

  it.scopedLive(
    "Redis stalled (SIGSTOP) longer than every lease: both nodes stop acting as owners, then find nobody adopted them and go on — no client dropped, a QoS 1 publish from the stall acknowledged and delivered once",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const r = yield* redisClient(redis.url)
        const pid = Number(/process_id:(\d+)/.exec(yield* Effect.promise(() => r.info("server")))![1])
        // heartbeat 200 ms: the leases lapse 600 ms after the last one
        const a = yield* startNode(redis.url, "a")
        const b = yield* startNode(redis.url, "b")
        const sub = yield* connectCollecting(b.url, { clientId: "s", clean: false })
        let closed = false
        sub.client.on("close", () => (closed = true))
        yield* subscribe(sub.client, "z/#", { qos: 1 })
        yield* routed(a, b, ["z/#"])
        const pub = yield* connectClient(a.url, { clientId: "p", clean: false })
        pub.on("close", () => (closed = true))
        process.kill(pid, "SIGSTOP")
        let acked = false
        yield* Effect.sleep("200 millis")
        pub.publish("z/1", "during", { qos: 1 }, () => (acked = true))
        yield* Effect.sleep("1300 millis")
        // not acknowledged while it cannot be stored
        expect(acked).toBe(false)
        process.kill(pid, "SIGCONT")
        yield* waitFor(() => acked, "the PUBACK once Redis is back", 5000)
        yield* waitFor(() => sub.got.length === 1, "the message at s")
        for (const node of [a, b]) {
          yield* waitFor(() => node.log.recent.some((l) => l.includes("has its lease again")), `${node.nodeId} to settle`, 5000)
          expect(node.log.recent.some((l) => l.includes("lost its lease"))).toBe(true)
          // nobody fenced, nobody adopted
          expect(node.log.recent.filter((l) => /rejoined|adopted \d+ sessions|disconnects its|left\./.test(l))).toEqual([])
        }
        yield* settle(1000)
        expect(closed).toBe(false)
        expect(sub.got.map((m) => m.payload)).toEqual(["during"])
        expect(a.broker.cluster!.peers()).toEqual(["b"])
        expect(b.broker.cluster!.peers()).toEqual(["a"])
        expect(b.broker.core.sessions.has("s") && a.broker.core.sessions.has("p")).toBe(true)
        expect(yield* Effect.promise(() => r.mGet(["t:owner:s", "t:owner:p"]))).toEqual(["b", "a"])
        // and the cluster works on
        yield* publish(pub, "z/2", "after", { qos: 1 })
        yield* waitFor(() => sub.got.length === 2, "a later message")
      }),
    30_000
  )

  it.scopedLive(
    "a node whose own lease lapses just as it finds another node dead does not adopt it until it has its lease again (two stalled nodes adopting each other left a session on neither)",
    () =>
      Effect.gen(function* () {
        // a stalls right where its heartbeat reads the others' alive keys and finds n's gone
        const { at } = yield* adoptionAfterALapse("mGet", ([keys], values) => {
          const i = (keys as Array<string>).indexOf("t:alive:n")
          return i >= 0 && (values as Array<string | null>)[i] === null
        })
        expect(at("lost its lease")).toBeGreaterThanOrEqual(0)
        // the adoption came after a settled its own lapse, not during it
        expect(at("has its lease again")).toBeGreaterThan(at("lost its lease"))
        expect(at("adopted 1 sessions of dead node n")).toBeGreaterThan(at("has its lease again"))
      }),
    30_000
  )

  it.scopedLive(
    "a node whose lease lapses while it reads a dead node's sessions gives the adoption up, frees its key, and adopts after it has its lease again",
    () =>
      Effect.gen(function* () {
        // a stalls while it reads n's client index, after it took n's adoption key
        const { at } = yield* adoptionAfterALapse("sMembers", ([key]) => key === "t:clients:n")
        expect(at("gave up adopting dead node n")).toBeGreaterThanOrEqual(0)
        expect(at("has its lease again")).toBeGreaterThan(at("gave up adopting dead node n"))
        expect(at("adopted 1 sessions of dead node n")).toBeGreaterThan(at("has its lease again"))
      }),
    30_000
  )

  it.scopedLive(
    "after an adoption given up, the dead node's routes stay until the next try: a message published in between is not lost",
    () =>
      Effect.gen(function* () {
        let published = false
        const { a, yOnN } = yield* adoptionAfterALapse(
          "sMembers",
          ([key]) => key === "t:clients:n",
          (a) =>
            Effect.gen(function* () {
              // given up, and a heartbeat or more since: a still routes yy/# to n's inbox
              expect(a.log.recent.some((l) => l.includes("gave up adopting dead node n"))).toBe(true)
              expect([...a.broker.cluster!.remoteFilters("n")]).toEqual(["yy/#"])
              const p = yield* connectClient(a.url, { clientId: "p" })
              yield* publish(p, "yy/between", "kept", { qos: 1 })
              published = true
            })
        )
        expect(published).toBe(true)
        // n's inbox had it: n, not quite dead in this test, handed it to y's connection there, or the adoption moved it
        // to y's session on a, which y finds when it comes back
        const back = yield* connectCollecting(a.url, { clientId: "y", clean: false })
        expect(back.sessionPresent).toBe(true)
        const kept = (got: ReadonlyArray<Received>) => got.some((m) => m.topic === "yy/between" && m.payload === "kept")
        yield* waitFor(() => kept(yOnN) || kept(back.got), "yy/between at y")
      }),
    30_000
  )
})
