/**
 * File persistence together with clustering, on two daemon nodes: a node
 * stopped (SIGTERM) and started again with the same `cluster_node_id` and
 * `persistence_location` keeps its persistent sessions and the messages queued
 * for them, from its own publishers and from the other node's, each once; a
 * stored session whose client moved to the other node while it was stopped is
 * not brought back.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { createClient } from "redis"
import { connectClient, connectCollecting, publish, settle, spawnScoped, subscribe, waitFor } from "../e2e/harness.js"
import { bundleEntry } from "../support/processes.js"
import { freePort, startRedis, waitForPort } from "./harness.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-cluster-persist-"))
const main = path.join(root, "main.mjs")
beforeAll(() => bundleEntry(main), 60_000)
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

/** Node `id` as a daemon with `persistence true` in a directory of its own; `start` runs it (again) on the same port and store. */
const persistentNode = (redisUrl: string, id: string) =>
  Effect.gen(function* () {
    const port = yield* Effect.promise(() => freePort())
    // a store of its own for each test's node: a directory shared by name brought the sessions of the file's other test
    // back into this one (two "stored sessions moved" where one was expected, in a run where the other test's last
    // state had reached its store)
    const dir = fs.mkdtempSync(path.join(root, `${id}-`))
    const conf = `${dir}.conf`
    fs.writeFileSync(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        "allow_anonymous true",
        "user root",
        "persistence true",
        `persistence_location ${dir}/`,
        `cluster_redis_url ${redisUrl}`,
        `cluster_node_id ${id}`,
        "cluster_key_prefix k",
        ""
      ].join("\n")
    )
    const start = Effect.gen(function* () {
      const daemon = yield* spawnScoped(process.execPath, [main, "-c", conf])
      yield* waitFor(() => daemon.out.stderr.includes(`Cluster: node ${id} joined`) || daemon.out.exited, `node ${id} to join`, 10_000)
      expect(daemon.out.exited).toBe(false)
      yield* Effect.promise(() => waitForPort(port, 10_000))
      return daemon
    })
    return { id, port, url: `mqtt://127.0.0.1:${port}`, start }
  })

const stop = (daemon: { readonly child: ChildProcess; readonly out: { readonly exited: boolean } }) =>
  Effect.gen(function* () {
    daemon.child.kill("SIGTERM")
    yield* waitFor(() => daemon.out.exited, "the node to stop", 10_000)
  })

describe("cluster with file persistence", () => {
  it.scopedLive(
    "a node restarted (SIGTERM, same node id and store) keeps its persistent sessions and their queued messages from both nodes, each once; later messages arrive once",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const r = createClient({ url: redis.url })
        yield* Effect.acquireRelease(
          Effect.promise(() => r.connect()),
          () => Effect.promise(() => r.quit().catch(() => undefined))
        )
        const a = yield* persistentNode(redis.url, "a")
        const b = yield* persistentNode(redis.url, "b")
        let daemonA = yield* a.start
        yield* b.start
        const s = yield* connectClient(a.url, { clientId: "s", clean: false })
        yield* subscribe(s, "p/#", { qos: 1 })
        yield* Effect.promise(() => s.endAsync())
        // b knows a's route (announced on the routes channel as it was stored)
        yield* Effect.promise(async () => {
          for (let i = 0; i < 100 && !(await r.sIsMember("k:routes:a", "p/#")); i++) await new Promise((res) => setTimeout(res, 20))
        })
        yield* settle(300)
        const pa = yield* connectClient(a.url, { clientId: "pa" })
        const pb = yield* connectClient(b.url, { clientId: "pb" })
        for (let i = 0; i < 10; i++) {
          yield* publish(pa, "p/a", `a${i}`, { qos: 1 })
          yield* publish(pb, "p/b", `b${i}`, { qos: 1 })
        }
        // b's messages went through a's inbox, and a read them into s's queue
        yield* Effect.promise(async () => {
          for (let i = 0; i < 100; i++) {
            const pending = (await r.xPending("k:inbox:a", "midge")) as { pending: number }
            if (pending.pending > 0) return
            await new Promise((res) => setTimeout(res, 20))
          }
        })
        yield* Effect.promise(() => pa.endAsync())
        yield* stop(daemonA)
        daemonA = yield* a.start
        expect(daemonA.out.stderr).toContain("Restored 0 retained messages and 1 sessions from the store.")

        const back = yield* connectCollecting(a.url, { clientId: "s", clean: false })
        expect(back.sessionPresent).toBe(true)
        yield* waitFor(() => back.got.length >= 20, "the 20 queued messages", 5000)
        yield* settle(500)
        const payloads = back.got.map((m) => m.payload)
        expect(payloads.filter((p) => p.startsWith("a"))).toEqual(["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"])
        expect(payloads.filter((p) => p.startsWith("b"))).toEqual(["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"])
        expect(back.got.length).toBe(20)
        // the inbox holds nothing more for it
        expect(((yield* Effect.promise(() => r.xPending("k:inbox:a", "midge"))) as { pending: number }).pending).toBe(0)

        // the route is back: later messages from b arrive, once
        yield* publish(pb, "p/b", "later", { qos: 1 })
        yield* waitFor(() => back.got.some((m) => m.payload === "later"), "a message after the restart")
        yield* settle(300)
        expect(back.got.filter((m) => m.payload === "later").length).toBe(1)
      }),
    60_000
  )

  it.scopedLive(
    "a stored session whose client moved to the other node while its node was stopped is dropped at the restart: one owner, messages once",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const a = yield* persistentNode(redis.url, "a")
        const b = yield* persistentNode(redis.url, "b")
        const daemonA = yield* a.start
        yield* b.start
        const s = yield* connectClient(a.url, { clientId: "m", clean: false })
        yield* subscribe(s, "q/#", { qos: 1 })
        yield* Effect.promise(() => s.endAsync())
        yield* stop(daemonA)
        // the client comes back to b: a left, b takes the session from Redis
        const moved = yield* connectCollecting(b.url, { clientId: "m", clean: false })
        expect(moved.sessionPresent).toBe(true)
        const daemonA2 = yield* a.start
        // (the line comes before the node joins, so it is there already unless something else was restored)
        yield* waitFor(() => daemonA2.out.stderr.includes("1 stored sessions moved to other nodes"), "a to drop the moved session", 5000).pipe(
          Effect.catchAll((error) => Effect.die(new Error(`${error.message}; a's log:\n${daemonA2.out.stderr}`)))
        )
        const pa = yield* connectClient(a.url, { clientId: "pa" })
        // a learns b's route for m (its first heartbeat): then a publish on a reaches m on b once
        yield* settle(1500)
        yield* publish(pa, "q/1", "one", { qos: 1 })
        yield* waitFor(() => moved.got.length === 1, "the message at m on b")
        yield* settle(500)
        expect(moved.got.map((m) => m.payload)).toEqual(["one"])
      }),
    60_000
  )
})
