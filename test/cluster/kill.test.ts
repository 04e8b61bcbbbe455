/**
 * A real node process (the daemon, src/main.ts bundled with esbuild, started
 * with cluster_redis_url in its mosquitto.conf) is killed with SIGKILL while a
 * client publishes QoS 1 to it for a subscriber on another node: every
 * message the killed node acknowledged reaches the subscriber, and the
 * publisher carries on through the surviving node.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { build } from "esbuild"
import type { MqttClient } from "mqtt"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { collect, connectClient, connectCollecting, spawnScoped, subscribe, waitFor } from "../e2e/harness.js"
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

describe("cluster: a node killed under QoS 1 load", () => {
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
    "kill -9 of the subscriber's node: a live node adopts its persistent session and its unread inbox; the client reconnects there with session present and gets everything published after the death",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k", releaseTimeoutMs: 500 })
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
        const total = 1200
        const done = pump(pub, cursor, total, acked, () => {
          if (killed < 0 && acked.size >= 200) {
            killed = cursor.next
            a.daemon.child.kill("SIGKILL")
          }
          return false
        }, 1, "d/n")
        yield* waitFor(() => b.broker.core.sessions.has("s"), "b to adopt s", 10_000)
        expect(b.broker.core.sessions.get("s")!.subscriptions.has("d/#")).toBe(true)
        yield* Effect.promise(() => done)
        expect(acked.size).toBe(total)
        const after = yield* connectCollecting(b.url, { clientId: "s", clean: false })
        expect(after.sessionPresent).toBe(true)
        const seen = () => new Set([...before, ...after.got].map((m) => Number(m.payload)))
        // every message published after the kill: those a sent to a's unread inbox (adopted and
        // drained by b) and those b queued for the adopted session. What a had already read into its
        // memory (in flight to the client when it died) is lost with it: docs/cluster.md.
        const afterKill = [...acked].filter((n) => n >= killed)
        expect(afterKill.length).toBe(total - killed)
        yield* waitFor(() => {
          const s = seen()
          return afterKill.every((n) => s.has(n))
        }, "every message published after the kill at the subscriber", 15_000).pipe(
          Effect.catchAll((e) =>
            Effect.sync(() => {
              const s = seen()
              const missing = afterKill.filter((n) => !s.has(n))
              throw new Error(`${e.message}: ${missing.length} missing (killed at ${killed}), e.g. ${missing.slice(0, 10).join(",")}`)
            })
          )
        )
        expect(before.length).toBeGreaterThan(0)
        expect(after.got.length).toBeGreaterThan(0)
      }),
    60_000
  )
})
