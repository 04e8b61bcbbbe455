/**
 * SIGHUP and the cluster options: as Mosquitto does for the options it leaves
 * to a restart, a changed `cluster_*` option is named in a warning ("needs a
 * restart") and the running value stays; the rest of the configuration is
 * reloaded as usual.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { createClient } from "redis"
import { clusterReloadWarnings } from "../../src/cluster/config.js"
import { collect, connectClient, publish, spawnScoped, subscribe, waitFor } from "../e2e/harness.js"
import { bundleEntry } from "../support/processes.js"
import { freePort, routed, startNode, startRedis, waitForPort } from "./harness.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-cluster-reload-"))
const main = path.join(root, "main.mjs")
// the daemon started as root drops to the mosquitto user: it reads the file again on SIGHUP as that user
fs.chmodSync(root, 0o755)
beforeAll(() => bundleEntry(main), 60_000)
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

describe("cluster options on SIGHUP", () => {
  it("clusterReloadWarnings names each changed option, and joining or leaving", () => {
    const running = { redisUrl: "redis://a:1", nodeId: "n1", keyPrefix: "midge" }
    expect(clusterReloadWarnings(running, running)).toEqual([])
    expect(clusterReloadWarnings(undefined, undefined)).toEqual([])
    expect(clusterReloadWarnings(running, { ...running, redisUrl: "redis://b:2", keyPrefix: "p" })).toEqual([
      "cluster_redis_url changed from redis://a:1 to redis://b:2: needs a restart; the running value is kept",
      "cluster_key_prefix changed from midge to p: needs a restart; the running value is kept"
    ])
    expect(clusterReloadWarnings(running, undefined)[0]).toMatch(/^cluster_redis_url removed: .*needs a restart/)
    expect(clusterReloadWarnings(undefined, running)[0]).toMatch(/^cluster_redis_url set: .*needs a restart/)
  })

  it.scopedLive(
    "the daemon, SIGHUP with cluster_node_id and cluster_key_prefix changed: a warning names each, the node goes on under its running id and prefix; other options are reloaded",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const b = yield* startNode(redis.url, "b", { keyPrefix: "k" })
        const port = yield* Effect.promise(() => freePort())
        const conf = path.join(root, "n.conf")
        const write = (lines: ReadonlyArray<string>) =>
          fs.writeFileSync(conf, [`listener ${port} 127.0.0.1`, "allow_anonymous true", `cluster_redis_url ${redis.url}`, ...lines, ""].join("\n"))
        write(["cluster_node_id n", "cluster_key_prefix k"])
        fs.chmodSync(conf, 0o644)
        const daemon = yield* spawnScoped(process.execPath, [main, "-c", conf])
        yield* waitFor(() => daemon.out.stderr.includes("Cluster: node n joined") || daemon.out.exited, "node n to join", 10_000)
        yield* Effect.promise(() => waitForPort(port, 10_000))
        yield* waitFor(() => b.broker.cluster!.peers().includes("n"), "b to see n")

        // a second listener is a reloadable option: it opens
        const extra = yield* Effect.promise(() => freePort())
        write(["cluster_node_id renamed", "cluster_key_prefix other", `listener ${extra} 127.0.0.1`])
        daemon.child.kill("SIGHUP")
        yield* waitFor(() => daemon.out.stderr.includes("cluster_key_prefix changed"), "the warnings", 5000).pipe(
          Effect.catchAll((e) => Effect.sync(() => { throw new Error(`${e.message}: ${daemon.out.stderr.slice(-1500)}`) }))
        )
        expect(daemon.out.stderr).toContain("Warning: cluster_node_id changed from n to renamed: needs a restart; the running value is kept")
        expect(daemon.out.stderr).toContain("Warning: cluster_key_prefix changed from k to other: needs a restart; the running value is kept")
        expect(daemon.out.stderr).not.toContain("cluster_redis_url changed")
        yield* Effect.promise(() => waitForPort(extra, 5000))

        // still node n under prefix k: it beats, and messages cross both ways
        const r = createClient({ url: redis.url })
        yield* Effect.acquireRelease(
          Effect.promise(() => r.connect()),
          () => Effect.promise(() => r.quit().catch(() => undefined))
        )
        expect(yield* Effect.promise(() => r.exists("k:alive:n"))).toBe(1)
        expect(yield* Effect.promise(() => r.keys("other:*"))).toEqual([])
        expect(yield* Effect.promise(() => r.keys("*renamed*"))).toEqual([])
        const onN = yield* connectClient(`mqtt://127.0.0.1:${extra}`, { clientId: "s" })
        const got = collect(onN)
        yield* subscribe(onN, "h/#", { qos: 1 })
        yield* routed(b, { nodeId: "n" } as never, ["h/#"])
        const pub = yield* connectClient(b.url, { clientId: "p" })
        yield* publish(pub, "h/1", "after reload", { qos: 1 })
        yield* waitFor(() => got.length === 1, "the message on n")
        expect(got[0].payload).toBe("after reload")
        expect(b.broker.cluster!.peers()).toEqual(["n"])
        expect(daemon.out.exited).toBe(false)
      }),
    30_000
  )
})
