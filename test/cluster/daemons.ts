/**
 * Cluster nodes as real processes that a test can kill -9: the daemon
 * (src/main.ts bundled with esbuild, built once per test file) started with
 * `cluster_redis_url` in its mosquitto.conf, and the publishing loops of the
 * kill tests.
 */
import { afterAll, beforeAll, expect } from "@effect/vitest"
import { Duration, Effect } from "effect"
import type { MqttClient } from "mqtt"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { spawnScoped, waitFor } from "../e2e/harness.js"
import { bundleEntry } from "../support/processes.js"
import { freePort, waitForPort } from "./harness.js"

/** Register the bundle's build (beforeAll) and removal (afterAll) in the calling test file; returns `spawnNode`. */
export const useDaemons = () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-cluster-daemons-"))
  const bundle = path.join(root, "main.mjs")
  beforeAll(() => bundleEntry(bundle), 60_000)
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

  /**
   * The daemon (node `id`, key prefix `k`) in a process of its own, joined to `redisUrl`; killed with the scope at the latest.
   * `extra`: more lines for its mosquitto.conf; `fixedPort`: listen there (a restart on the same port).
   */
  const spawnNode = (redisUrl: string, id: string, extra: ReadonlyArray<string> = [], fixedPort?: number) =>
    Effect.gen(function* () {
      const port = fixedPort ?? (yield* Effect.promise(() => freePort()))
      const conf = path.join(root, `${id}.conf`)
      fs.writeFileSync(
        conf,
        [`listener ${port} 127.0.0.1`, "allow_anonymous true", "max_queued_messages 10000", `cluster_redis_url ${redisUrl}`, `cluster_node_id ${id}`, "cluster_key_prefix k", ...extra, ""].join(
          "\n"
        )
      )
      const daemon = yield* spawnScoped(process.execPath, [bundle, "-c", conf])
      yield* waitFor(() => daemon.out.stderr.includes(`Cluster: node ${id} joined`) || daemon.out.exited, `node ${id} to join`, 10_000)
      expect(daemon.out.exited).toBe(false)
      // it joins the cluster before it opens its listener
      yield* Effect.promise(() => waitForPort(port, 10_000))
      return { daemon, port, nodeId: id, url: `mqtt://127.0.0.1:${port}`, kill: () => daemon.child.kill("SIGKILL") }
    })
  return { spawnNode }
}

/**
 * Publish the numbers `from.next`, `from.next + 1`, … to `topic` at `qos` (1 or 2) with up to
 * `window` in flight, until `stop()` or `total`; the numbers acknowledged (PUBACK, or PUBCOMP at
 * QoS 2) go to `acked`. Resolves once nothing is outstanding, or when the connection closes.
 */
export const pump = (
  client: MqttClient,
  from: { next: number },
  total: number,
  acked: Set<number>,
  stop: () => boolean,
  window = 50,
  topic = "load/n",
  qos: 1 | 2 = 1
): Promise<void> =>
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
        client.publish(topic, String(n), { qos }, (error) => {
          outstanding--
          if (error === undefined || error === null) acked.add(n)
          if (!ended && (from.next >= total || stop()) && outstanding === 0) finish()
          else fill()
        })
      }
    }
    fill()
  })

/** How many times each sequence number was received. */
export const countsOf = (seen: ReadonlyArray<number>): Map<number, number> => {
  const counts = new Map<number, number>()
  for (const n of seen) counts.set(n, (counts.get(n) ?? 0) + 1)
  return counts
}

/** The sequence numbers received more than once. */
export const receivedTwice = (counts: ReadonlyMap<number, number>): Array<number> => [...counts].filter(([, k]) => k > 1).map(([n]) => n)

/**
 * QoS 2 exactly once, late copies included: after `ms` (an adopter copies a
 * dead node's inbox again a few heartbeats on), no sequence number `seen()`
 * gives was received twice. The counts, for further checks.
 */
export const noneTwiceAfter = (seen: () => ReadonlyArray<number>, ms = 1500) =>
  Effect.gen(function* () {
    yield* Effect.sleep(Duration.millis(ms))
    const counts = countsOf(seen())
    expect(receivedTwice(counts)).toEqual([])
    return counts
  })

/** Fails with the missing numbers unless every number of `acked` is among those `seen()` gives, within `timeoutMs`. */
export const everyAckedArrives = (acked: ReadonlySet<number>, seen: () => ReadonlyArray<number>, detail: () => string = () => "", timeoutMs = 15_000) =>
  waitFor(
    () => {
      const s = new Set(seen())
      for (const n of acked) if (!s.has(n)) return false
      return true
    },
    "every acknowledged message at the subscriber",
    timeoutMs
  ).pipe(
    Effect.catchAll((e) =>
      Effect.sync(() => {
        const s = new Set(seen())
        const missing = [...acked].filter((n) => !s.has(n))
        throw new Error(`${e.message}: ${missing.length} of ${acked.size} missing, e.g. ${missing.slice(0, 10).join(",")} ${detail()}`)
      })
    )
  )
