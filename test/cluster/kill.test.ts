/**
 * A real node process (the daemon, src/main.ts bundled with esbuild, started
 * with cluster_redis_url in its mosquitto.conf) is killed with SIGKILL under
 * load: the publisher's node (QoS 1: every message it acknowledged arrives;
 * QoS 2: the publisher resends to the other node and nothing is duplicated)
 * or the subscriber's node (QoS 1: every acknowledged message arrives, those
 * the dead node had read and not had acknowledged included).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { collect, connectClient, connectCollecting, rawClient, settle, subscribe, waitFor } from "../e2e/harness.js"
import { everyAckedArrives, pump, useDaemons } from "./daemons.js"
import { routed, startNode, startRedis } from "./harness.js"

const { spawnNode } = useDaemons()

/**
 * QoS 1 load from node b (in this process) to a persistent subscriber on node a (a daemon), a
 * killed with kill -9 once 300 messages were acknowledged. The client comes back to b once b has
 * adopted its session, or at once (before b sees a dead: a does not answer b's release request,
 * and b rebuilds the session from Redis). Every message the publisher got PUBACK for arrives,
 * those a had read and not had acknowledged by the client included (duplicates allowed at QoS 1).
 */
const qos1SubscriberKilled = (back: "after adoption" | "at once") =>
  Effect.gen(function* () {
    const redis = yield* startRedis()
    // the adopted session is offline for a while under load, and the replay (duplicates included) shares its
    // queue with the load: room for all of it (max_queued_messages, 1000 by default, drops the newest beyond)
    const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: back === "at once" ? 300 : 500, settings: { maxQueuedMessages: 10_000 } })
    const a = yield* spawnNode(redis.url, "a")
    const sub = yield* connectClient(a.url, { clientId: "s", clean: false })
    const before = collect(sub)
    sub.on("error", () => {})
    yield* subscribe(sub, "d/#", { qos: 1 })
    yield* routed(b, a as never, ["d/#"])
    const pub = yield* connectClient(b.url, { clientId: "p" })
    const acked = new Set<number>()
    const cursor = { next: 0 }
    let killed = -1
    const total = back === "at once" ? 1500 : 2000
    // 50 in flight: a has read messages into its memory (in flight to s, queued) when it dies
    const done = pump(pub, cursor, total, acked, () => {
      if (killed < 0 && acked.size >= 300) {
        killed = cursor.next
        a.kill()
      }
      return false
    }, 50, "d/n")
    yield* waitFor(() => killed >= 0, "the kill")
    if (back === "after adoption") {
      yield* waitFor(() => b.broker.core.sessions.has("s"), "b to adopt s", 10_000)
      expect(b.broker.core.sessions.get("s")!.subscriptions.has("d/#")).toBe(true)
    }
    // the client comes back while the load goes on (an offline session's queue has a limit)
    const after = yield* connectCollecting(b.url, { clientId: "s", clean: false })
    expect(after.sessionPresent).toBe(true)
    // a's heartbeat is still alive (3 s): b asked a to let go, a did not answer
    if (back === "at once") expect(b.log.recent.some((l) => l.includes("took the session of s over from dead node a"))).toBe(true)
    yield* Effect.promise(() => done)
    expect(acked.size).toBe(total)
    const numbers = () => [...before, ...after.got].map((m) => Number(m.payload))
    yield* everyAckedArrives(acked, numbers, () => `(killed at ${killed}, ${before.length} before)`)
    expect(before.length).toBeGreaterThan(0)
    expect(after.got.length).toBeGreaterThan(0)
  })

describe("cluster: a node killed with kill -9", () => {
  it.scopedLive(
    "kill -9 of the publisher's node: nothing it acknowledged is lost; publishing goes on through the other node",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 500 })
        const sub = yield* connectClient(b.url, { clientId: "sub", clean: false })
        const got = collect(sub)
        yield* subscribe(sub, "load/#", { qos: 1 })
        // node a: the daemon as users run it, in a process of its own
        const daemon = yield* spawnNode(redis.url, "a")
        yield* waitFor(() => b.broker.cluster!.peers().includes("a"), "b to see a")

        const total = 3000
        const acked = new Set<number>()
        const cursor = { next: 0 }
        const pubA = yield* connectClient(daemon.url, { clientId: "pub" })
        let killed = false
        const kill = () => {
          if (!killed && acked.size >= 500) {
            killed = true
            daemon.kill()
          }
          return false
        }
        yield* Effect.promise(() => pump(pubA, cursor, total, acked, kill))
        expect(killed).toBe(true)
        const ackedByA = acked.size
        expect(ackedByA).toBeGreaterThanOrEqual(500)
        expect(ackedByA).toBeLessThan(total)
        // the rest through node b
        const pubB = yield* connectClient(b.url, { clientId: "pub" })
        yield* Effect.promise(() => pump(pubB, cursor, total, acked, () => false))
        const numbers = () => got.map((m) => Number(m.payload))
        yield* everyAckedArrives(acked, numbers)
        expect(acked.size).toBeGreaterThan(ackedByA)
        expect(new Set(numbers()).size).toBeGreaterThanOrEqual(acked.size)
      }),
    60_000
  )

  it.scopedLive(
    "kill -9 of the subscriber's node under QoS 1 load: a live node adopts its persistent session and replays what the dead node had not had acknowledged; every message the publisher got PUBACK for reaches the subscriber",
    () => qos1SubscriberKilled("after adoption"),
    60_000
  )

  it.scopedLive(
    "kill -9 of the subscriber's node, the client back on another node at once (before the death is seen): that node rebuilds the session from Redis and replays the dead node's inbox; every acknowledged message arrives",
    () => qos1SubscriberKilled("at once"),
    60_000
  )

  it.scopedLive(
    "kill -9 of the publisher's node under QoS 2 load: the publisher resends to the other node, which knows the QoS 2 ids the dead one had acknowledged; every message arrives exactly once",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 500 })
        const sub = yield* connectClient(b.url, { clientId: "s2", clean: false })
        const got = collect(sub)
        yield* subscribe(sub, "q2/#", { qos: 2 })
        const a = yield* spawnNode(redis.url, "a")
        // a loaded b's routes when it joined (its first heartbeat), before it logged "joined"
        yield* waitFor(() => b.broker.cluster!.peers().includes("a"), "b to see a")
        // MQTT.js goes to the next server of the list when it reconnects: a, then b
        const bPort = Number(new URL(b.url).port)
        const pub = yield* connectClient(`mqtt://127.0.0.1:${a.port}`, {
          clientId: "p2",
          clean: false,
          reconnectPeriod: 100,
          servers: [
            { host: "127.0.0.1", port: a.port },
            { host: "127.0.0.1", port: bPort }
          ]
        })
        pub.on("error", () => {})
        const total = 1500
        const completed = new Set<number>()
        let killed = false
        yield* Effect.promise(
          () =>
            new Promise<void>((resolve) => {
              let next = 0
              let outstanding = 0
              const fill = () => {
                while (outstanding < 200 && next < total) {
                  const n = next++
                  outstanding++
                  pub.publish("q2/n", String(n), { qos: 2 }, (error) => {
                    outstanding--
                    if (error === undefined || error === null) completed.add(n)
                    if (!killed && completed.size >= 300) {
                      killed = true
                      a.kill()
                    }
                    if (next >= total && outstanding === 0) resolve()
                    else fill()
                  })
                }
              }
              fill()
            })
        )
        expect(killed).toBe(true)
        expect(completed.size).toBe(total)
        const counts = () => {
          const c = new Map<number, number>()
          for (const m of got) c.set(Number(m.payload), (c.get(Number(m.payload)) ?? 0) + 1)
          return c
        }
        yield* waitFor(() => counts().size === total, "every message at the subscriber", 15_000).pipe(
          Effect.catchAll((e) => Effect.sync(() => { throw new Error(`${e.message}: ${counts().size} of ${total}`) }))
        )
        // no late duplicate either
        yield* Effect.sleep("500 millis")
        const duplicated = [...counts()].filter(([, k]) => k > 1).map(([n]) => n)
        expect(duplicated).toEqual([])
        expect(got.length).toBe(total)
      }),
    60_000
  )

  it.scopedLive(
    "QoS 2, step by step: PUBLISH acknowledged with PUBREC by a node then killed; resent (DUP, same id) to the other node, it is answered PUBREC and not delivered again",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 300 })
        const sub = yield* connectClient(b.url, { clientId: "s3", clean: false })
        const got = collect(sub)
        yield* subscribe(sub, "x/#", { qos: 2 })
        const a = yield* spawnNode(redis.url, "a")
        yield* waitFor(() => b.broker.cluster!.peers().includes("a"), "b to see a")
        const connect = mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "p3", clean: false, keepalive: 60 })
        const publish = (dup: boolean) =>
          mqttPacket.generate({ cmd: "publish", topic: "x/1", payload: Buffer.from("one"), qos: 2, messageId: 7, dup, retain: false })
        const has = (data: Buffer, bytes: Array<number>) => data.includes(Buffer.from(bytes))
        const toA = yield* rawClient(a.port)
        yield* toA.write(connect)
        yield* waitFor(() => has(toA.data(), [0x20, 0x02]), "CONNACK from a")
        yield* toA.write(publish(false))
        yield* waitFor(() => has(toA.data(), [0x50, 0x02, 0x00, 0x07]), "PUBREC from a")
        yield* waitFor(() => got.length === 1, "the message at the subscriber")
        a.kill()
        // the client comes back to b and resends what has no PUBCOMP, as [MQTT-4.4.0-1] asks
        const toB = yield* rawClient(Number(new URL(b.url).port))
        yield* toB.write(connect)
        yield* waitFor(() => toB.data().length >= 4, "CONNACK from b", 5000)
        expect([...toB.data().subarray(0, 4)]).toEqual([0x20, 0x02, 0x01, 0x00]) // session present
        yield* toB.write(publish(true))
        yield* waitFor(() => has(toB.data(), [0x50, 0x02, 0x00, 0x07]), "PUBREC from b")
        yield* toB.write([0x62, 0x02, 0x00, 0x07])
        yield* waitFor(() => has(toB.data(), [0x70, 0x02, 0x00, 0x07]), "PUBCOMP from b")
        yield* settle(300)
        expect(got.map((m) => m.payload)).toEqual(["one"])
      }),
    30_000
  )
})
