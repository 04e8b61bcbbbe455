/**
 * Cluster test helpers: a real `redis-server` (Debian's) on a free loopback
 * port in a temporary directory, and Midge nodes joined to it — in-process
 * (Broker.make with `cluster`, each in a scope of its own so a test can stop
 * one), or as a real process (test/cluster/child/node.ts bundled with esbuild)
 * that a test can kill -9.
 */
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, ExecutionStrategy, Exit, Scope } from "effect"
import { createClient } from "redis"
import { Broker, type BrokerOptions, type BrokerService } from "../../src/Broker.js"
import { Log } from "../../src/log/Log.js"
import { waitFor } from "../e2e/harness.js"
import { freePortNow } from "../support/processes.js"

/** A free TCP port on 127.0.0.1 (bound then released), never one this process had before. */
export const freePort = freePortNow

export interface RedisServer {
  readonly port: number
  readonly url: string
  readonly dir: string
  /** stop it (SIGKILL: nothing saved) */
  readonly stop: () => Promise<void>
  /** start it again on the same port */
  readonly start: () => Promise<void>
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`. */
export const waitForPort = (port: number, timeoutMs = 5000): Promise<void> =>
  new Promise((resolve, reject) => {
    const started = Date.now()
    const attempt = () => {
      const socket = net.connect({ port, host: "127.0.0.1" })
      socket.once("connect", () => {
        socket.destroy()
        resolve()
      })
      socket.once("error", () => {
        socket.destroy()
        if (Date.now() - started > timeoutMs) reject(new Error(`redis-server did not listen on ${port}`))
        else setTimeout(attempt, 20)
      })
    }
    attempt()
  })

/** A redis-server with no persistence (`--save "" --appendonly no`): a restart starts empty. */
/** A node-redis client of the test's own (to look at keys), quit with the scope. */
export const redisClient = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const c = createClient({ url })
      await c.connect()
      return c
    }),
    (c) => Effect.promise(() => c.quit().catch(() => undefined))
  )

export const startRedis = (): Effect.Effect<RedisServer, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const port = await freePort()
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-redis-"))
        let child: ChildProcess | undefined
        const start = async () => {
          child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
            stdio: "ignore"
          })
          await waitForPort(port)
        }
        const stop = () =>
          new Promise<void>((resolve) => {
            const c = child
            child = undefined
            if (c === undefined || c.exitCode !== null) return resolve()
            c.once("exit", () => resolve())
            c.kill("SIGKILL")
          })
        await start()
        return { port, url: `redis://127.0.0.1:${port}`, dir, stop, start }
      },
      catch: (e) => (e instanceof Error ? e : new Error(String(e)))
    }),
    (redis) =>
      Effect.promise(async () => {
        await redis.stop()
        fs.rmSync(redis.dir, { recursive: true, force: true })
      })
  )

export interface TestNode {
  readonly broker: BrokerService
  readonly nodeId: string
  readonly port: number
  readonly url: string
  readonly log: Log
  /** leave the cluster and close the listeners (the node's own scope) */
  readonly stop: Effect.Effect<void>
}

/** A Midge node in this process on 127.0.0.1:0, joined to `redisUrl`, stopped with the test's scope at the latest. */
export const startNode = (
  redisUrl: string,
  nodeId: string,
  options: Omit<BrokerOptions, "listeners" | "log" | "cluster"> & {
    readonly keyPrefix?: string
    readonly releaseTimeoutMs?: number
    readonly heartbeatMs?: number
  } = {}
): Effect.Effect<TestNode, never, Scope.Scope> =>
  Effect.gen(function* () {
    const outer = yield* Effect.scope
    const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    const log = new Log(["all"], [], false, 500)
    const { keyPrefix, releaseTimeoutMs, heartbeatMs, ...rest } = options
    const broker = yield* Broker.make({
      ...rest,
      listeners: [{ port: 0, host: "127.0.0.1" }],
      log,
      cluster: { redisUrl, nodeId, heartbeatMs: heartbeatMs ?? 200, keyPrefix: keyPrefix ?? "t", ...(releaseTimeoutMs !== undefined ? { releaseTimeoutMs } : {}) }
    }).pipe(Scope.extend(scope), Effect.orDie)
    const port = broker.listeners[0].port
    return { broker, nodeId, port, url: `mqtt://127.0.0.1:${port}`, log, stop: Scope.close(scope, Exit.void) }
  })

/** Wait until `node` has learned that `peer` subscribes to every one of `filters`. */
export const routed = (node: TestNode, peer: TestNode, filters: ReadonlyArray<string>) =>
  waitFor(() => {
    const known = node.broker.cluster!.remoteFilters(peer.nodeId)
    return filters.every((f) => known.has(f))
  }, `${node.nodeId} to learn ${peer.nodeId}'s routes ${filters.join(", ")}`)

/**
 * `node` learns `from`'s route changes late (its event loop busy, a GC pause),
 * so that it still routes by the old ones for a while: its route
 * notifications are held back for `lateMs` from the first one of `from` on,
 * in their order (one connection delivers them: a slow node is late with all
 * that follow too).
 */
export const learnLate = (node: TestNode, from: string, lateMs: number) => {
  const impl = node.broker.core.cluster as unknown as { onRouteChange(text: string): void }
  const apply = impl.onRouteChange.bind(impl)
  const held: Array<string> = []
  impl.onRouteChange = (text: string) => {
    if (held.length === 0 && (JSON.parse(text) as { n: string }).n !== from) return apply(text)
    held.push(text)
    if (held.length === 1) setTimeout(() => held.splice(0).forEach(apply), lateMs)
  }
}
