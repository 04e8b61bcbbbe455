/**
 * A real node process (the daemon, src/main.ts bundled with esbuild, started
 * with cluster_redis_url in its mosquitto.conf) is killed with SIGKILL under
 * load: the publisher's node (QoS 1: every message it acknowledged arrives;
 * QoS 2: the publisher resends to the other node and nothing is duplicated)
 * or the subscriber's node (QoS 1: every acknowledged message arrives, those
 * the dead node had read and not had acknowledged included).
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { build } from "esbuild"
import type { MqttClient } from "mqtt"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as mqttPacket from "mqtt-packet"
import { collect, connectClient, connectCollecting, rawClient, settle, spawnScoped, subscribe, waitFor } from "../e2e/harness.js"
import { freePort, routed, startNode, startRedis, waitForPort } from "./harness.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-cluster-kill-"))
const bundle = path.join(root, "main.mjs")
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
beforeAll(async () => {
  await build({
    entryPoints: [path.join(__dirname, "../../src/main.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: bundle,
    logLevel: "warning",
    // the bundle's CommonJS dependencies (ws) need require
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" }
  })
}, 60_000)

/** The daemon (node `id`) in a process of its own, joined to `redisUrl`; killed with the scope at the latest. */
const spawnNode = (redisUrl: string, id: string) =>
  Effect.gen(function* () {
    const port = yield* Effect.promise(() => freePort())
    const conf = path.join(root, `${id}.conf`)
    fs.writeFileSync(
      conf,
      [`listener ${port} 127.0.0.1`, "allow_anonymous true", `cluster_redis_url ${redisUrl}`, `cluster_node_id ${id}`, "cluster_key_prefix k", ""].join("\n")
    )
    const daemon = yield* spawnScoped(process.execPath, [bundle, "-c", conf])
    yield* waitFor(() => daemon.out.stderr.includes(`Cluster: node ${id} joined`) || daemon.out.exited, `node ${id} to join`, 10_000)
    expect(daemon.out.exited).toBe(false)
    // it joins the cluster before it opens its listener
    yield* Effect.promise(() => waitForPort(port, 10_000))
    return { daemon, port, nodeId: id }
  })

/** Publish QoS 1 numbers from `from` with up to `window` (50) in flight until `stop()` or `total`; acked numbers go to `acked`. */
const pump = (client: MqttClient, from: { next: number }, total: number, acked: Set<number>, stop: () => boolean, window = 50, topic = "load/n"): Promise<void> =>
  new Promise((resolve) => {
    let outstanding = 0
    let ended = false
    const finish = () => {
      if (!ended) {
        ended = true
        resolve()
      }
    }
    client.once("close", finish)
    const fill = () => {
      while (!ended && outstanding < window && from.next < total && !stop()) {
        const n = from.next++
        outstanding++
        client.publish(topic, String(n), { qos: 1 }, (error) => {
          outstanding--
          if (error === undefined || error === null) acked.add(n)
          if (!ended && (from.next >= total || stop()) && outstanding === 0) finish()
          else fill()
        })
      }
    }
    fill()
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
        const port = yield* Effect.promise(() => freePort())
        const conf = path.join(root, "a.conf")
        fs.writeFileSync(
          conf,
          [`listener ${port} 127.0.0.1`, "allow_anonymous true", `cluster_redis_url ${redis.url}`, "cluster_node_id a", "cluster_key_prefix k", ""].join("\n")
        )
        const daemon = yield* spawnScoped(process.execPath, [bundle, "-c", conf])
        yield* waitFor(() => daemon.out.stderr.includes("Cluster: node a joined") || daemon.out.exited, "node a to join", 10_000)
        expect(daemon.out.exited).toBe(false)
        yield* Effect.promise(() => waitForPort(port, 10_000))
        yield* waitFor(() => b.broker.cluster!.peers().includes("a"), "b to see a")

        const total = 3000
        const acked = new Set<number>()
        const cursor = { next: 0 }
        const pubA = yield* connectClient(`mqtt://127.0.0.1:${port}`, { clientId: "pub" })
        let killed = false
        const kill = () => {
          if (!killed && acked.size >= 500) {
            killed = true
            daemon.child.kill("SIGKILL")
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
        const numbers = () => new Set(got.map((m) => Number(m.payload)))
        yield* waitFor(() => {
          const seen = numbers()
          for (const n of acked) if (!seen.has(n)) return false
          return true
        }, "every acknowledged message at the subscriber", 15_000).pipe(
          Effect.catchAll((e) =>
            Effect.sync(() => {
              const seen = numbers()
              const missing = [...acked].filter((n) => !seen.has(n))
              throw new Error(`${e.message}: ${missing.length} of ${acked.size} missing, e.g. ${missing.slice(0, 10).join(",")}`)
            })
          )
        )
        expect(acked.size).toBeGreaterThan(ackedByA)
        expect(numbers().size).toBeGreaterThanOrEqual(acked.size)
      }),
    60_000
  )

  it.scopedLive(
    "kill -9 of the subscriber's node under QoS 1 load: a live node adopts its persistent session and replays what the dead node had not had acknowledged; every message the publisher got PUBACK for reaches the subscriber",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        // the adopted session is offline for a few seconds under load: room for all of it in its queue
        // (max_queued_messages, 1000 by default, drops the newest beyond, as on one node)
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 500, settings: { maxQueuedMessages: 10_000 } })
        const a = yield* spawnNode(redis.url, "a")
        const sub = yield* connectClient(`mqtt://127.0.0.1:${a.port}`, { clientId: "s", clean: false })
        const before = collect(sub)
        sub.on("error", () => {})
        yield* subscribe(sub, "d/#", { qos: 1 })
        yield* routed(b, a as never, ["d/#"])
        const pub = yield* connectClient(b.url, { clientId: "p" })
        const acked = new Set<number>()
        const cursor = { next: 0 }
        let killed = -1
        const total = 2000
        // 50 in flight: a has read messages into its memory (in flight to s, queued) when it dies
        const done = pump(pub, cursor, total, acked, () => {
          if (killed < 0 && acked.size >= 300) {
            killed = cursor.next
            a.daemon.child.kill("SIGKILL")
          }
          return false
        }, 50, "d/n")
        yield* waitFor(() => b.broker.core.sessions.has("s"), "b to adopt s", 10_000)
        expect(b.broker.core.sessions.get("s")!.subscriptions.has("d/#")).toBe(true)
        // the client comes back while the load goes on (an offline session's queue has a limit)
        const after = yield* connectCollecting(b.url, { clientId: "s", clean: false })
        expect(after.sessionPresent).toBe(true)
        yield* Effect.promise(() => done)
        expect(acked.size).toBe(total)
        const seen = () => new Set([...before, ...after.got].map((m) => Number(m.payload)))
        // every acknowledged message, those a had read before it died included (duplicates allowed at QoS 1)
        yield* waitFor(() => {
          const s = seen()
          for (const n of acked) if (!s.has(n)) return false
          return true
        }, "every acknowledged message at the subscriber", 15_000).pipe(
          Effect.catchAll((e) =>
            Effect.sync(() => {
              const s = seen()
              const missing = [...acked].filter((n) => !s.has(n))
              throw new Error(`${e.message}: ${missing.length} missing (killed at ${killed}, ${before.length} before), e.g. ${missing.slice(0, 10).join(",")}`)
            })
          )
        )
        expect(killed).toBeGreaterThan(0)
        expect(before.length).toBeGreaterThan(0)
        expect(after.got.length).toBeGreaterThan(0)
      }),
    60_000
  )

  it.scopedLive(
    "kill -9 of the subscriber's node, the client back on another node at once (before the death is seen): that node rebuilds the session from Redis and replays the dead node's inbox; every acknowledged message arrives",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        // the replay (duplicates included) and the load share s's queue: room for all of it (max_queued_messages drops the newest beyond)
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 300, settings: { maxQueuedMessages: 10_000 } })
        const a = yield* spawnNode(redis.url, "a")
        const sub = yield* connectClient(`mqtt://127.0.0.1:${a.port}`, { clientId: "s", clean: false })
        const before = collect(sub)
        sub.on("error", () => {})
        yield* subscribe(sub, "e/#", { qos: 1 })
        yield* routed(b, a as never, ["e/#"])
        const pub = yield* connectClient(b.url, { clientId: "p" })
        const acked = new Set<number>()
        const cursor = { next: 0 }
        let killed = false
        const total = 1500
        const done = pump(pub, cursor, total, acked, () => {
          if (!killed && acked.size >= 300) {
            killed = true
            a.daemon.child.kill("SIGKILL")
          }
          return false
        }, 50, "e/n")
        yield* waitFor(() => killed, "the kill")
        // a's heartbeat is still alive (3 s): b asks a to let go, a does not answer
        const after = yield* connectCollecting(b.url, { clientId: "s", clean: false })
        expect(after.sessionPresent).toBe(true)
        expect(b.log.recent.some((l) => l.includes("took the session of s over from dead node a"))).toBe(true)
        yield* Effect.promise(() => done)
        expect(acked.size).toBe(total)
        const seen = () => new Set([...before, ...after.got].map((m) => Number(m.payload)))
        yield* waitFor(() => {
          const s = seen()
          for (const n of acked) if (!s.has(n)) return false
          return true
        }, "every acknowledged message at the subscriber", 15_000).pipe(
          Effect.catchAll((e) =>
            Effect.sync(() => {
              const s = seen()
              const missing = [...acked].filter((n) => !s.has(n))
              throw new Error(`${e.message}: ${missing.length} missing (${before.length} before), e.g. ${missing.slice(0, 10).join(",")}`)
            })
          )
        )
        expect(before.length).toBeGreaterThan(0)
      }),
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
                      a.daemon.child.kill("SIGKILL")
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
        a.daemon.child.kill("SIGKILL")
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
