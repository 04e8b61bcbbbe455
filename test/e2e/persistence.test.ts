/**
 * Persistence through the daemon (src/main.ts, bundled with esbuild so the
 * test runs the sources, not whatever dist/ holds): retained messages, a
 * persistent session's subscription and queued messages survive a restart
 * (SIGTERM) and, in durable mode, a kill -9 loses no acknowledged QoS 1
 * message; a bridge's queue (local_cleansession false) survives a kill -9 and
 * reaches a real Debian mosquitto once it is up.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import mqtt from "mqtt"
import { bundleEntry, freePort, listening, startMosquitto } from "../support/processes.js"
import { collect, connectClient, connectCollecting, publish, run, spawnScoped, subscribe, waitFor } from "./harness.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-persist-e2e-"))
const main = path.join(root, "main.mjs")
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
beforeAll(() => bundleEntry(main))

const daemon = (conf: string) =>
  Effect.gen(function* () {
    const d = yield* spawnScoped(process.execPath, [main, "-c", conf])
    return d
  })

describe("persistence through the daemon", () => {
  it.scopedLive("retained messages and a persistent session's subscription and queue survive a restart", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-persist-"))
      const conf = path.join(dir, "mosquitto.conf")
      fs.writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location ${dir}\n`)
      const first = yield* daemon(conf)
      yield* listening(port, 30_000)
      const url = `mqtt://127.0.0.1:${port}`
      const keeper = yield* connectClient(url, { clientId: "keeper", clean: false })
      yield* subscribe(keeper, "kept/#", { qos: 1 })
      yield* Effect.promise(() => keeper.endAsync())
      const pub = yield* connectClient(url)
      yield* publish(pub, "kept/retained", "still here", { qos: 1, retain: true })
      for (let i = 0; i < 5; i++) yield* publish(pub, "kept/queue", `q${i}`, { qos: 1 })
      yield* Effect.promise(() => pub.endAsync())
      first.child.kill("SIGTERM")
      yield* waitFor(() => first.out.exited, "the first daemon to stop", 15_000)
      expect(first.out.code).toBe(0)

      const second = yield* daemon(conf)
      yield* listening(port, 30_000)
      // the port can open a moment before the log line is written
      yield* waitFor(() => /Restored 1 retained messages and 1 sessions/.test(second.out.stderr), "the restore's log line", 5_000)
      const back = yield* connectCollecting(url, { clientId: "keeper", clean: false })
      expect(back.sessionPresent).toBe(true)
      yield* waitFor(() => back.got.length === 6, "the queued messages and the retained one")
      expect(back.got.filter((m) => m.topic === "kept/queue").map((m) => m.payload)).toEqual(["q0", "q1", "q2", "q3", "q4"])
      const late = yield* connectClient(url)
      const lateGot = collect(late)
      yield* subscribe(late, "kept/retained", { qos: 1 })
      yield* waitFor(() => lateGot.length === 1, "the retained message after the restart")
      expect(lateGot[0]).toMatchObject({ payload: "still here", retain: true })
    }),
    60_000
  )

  it.scopedLive("persistence_durable: a kill -9 under QoS 1 load loses no acknowledged message", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-durable-"))
      const conf = path.join(dir, "mosquitto.conf")
      fs.writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location ${dir}\npersistence_durable true\n`)
      const first = yield* daemon(conf)
      yield* listening(port, 30_000)
      const url = `mqtt://127.0.0.1:${port}`
      const sink = yield* connectClient(url, { clientId: "sink", clean: false })
      yield* subscribe(sink, "load", { qos: 1 })
      yield* Effect.promise(() => sink.endAsync())
      // publish as fast as acks come; count what was acknowledged, kill -9 in the middle
      const acked = new Set<number>()
      const pub = mqtt.connect(url, { reconnectPeriod: 0 })
      yield* Effect.promise(() => new Promise((r) => pub.once("connect", r)))
      let i = 0
      const pump = () => {
        if (i >= 3000) return
        const n = i++
        pub.publish("load", String(n), { qos: 1 }, (error) => {
          if (error !== undefined && error !== null) return // the broker is gone
          acked.add(n)
          pump()
        })
      }
      for (let k = 0; k < 20; k++) pump()
      yield* waitFor(() => acked.size >= 500, "500 acknowledged messages", 20_000)
      first.child.kill("SIGKILL")
      yield* waitFor(() => first.out.exited, "the kill", 10_000)
      pub.end(true)
      const ackedNow = new Set(acked)

      yield* daemon(conf)
      yield* listening(port, 30_000)
      const back = yield* connectCollecting(url, { clientId: "sink", clean: false })
      yield* waitFor(() => [...ackedNow].every((n) => back.got.some((m) => m.payload === String(n))), "every acknowledged message", 30_000)
      expect(ackedNow.size).toBeGreaterThanOrEqual(500)
    }),
    60_000
  )

  it.scopedLive("a bridge's queue survives a kill -9: published with mosquitto_pub while the remote mosquitto is down, it reaches the remote after the restart", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const remotePort = yield* freePort
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-bridge-persist-"))
      const conf = path.join(dir, "mosquitto.conf")
      fs.writeFileSync(
        conf,
        [
          `listener ${port} 127.0.0.1`,
          "allow_anonymous true",
          "user root",
          "persistence true",
          `persistence_location ${dir}`,
          "connection up",
          `address 127.0.0.1:${remotePort}`,
          "remote_clientid midge-up",
          "restart_timeout 1",
          "notifications false",
          "topic out/# out 1",
          ""
        ].join("\n")
      )
      const first = yield* daemon(conf)
      yield* listening(port, 30_000)
      for (let i = 0; i < 5; i++) {
        const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-q", "1", "-t", "out/x", "-m", `m${i}`])
        expect(r.code).toBe(0)
      }
      first.child.kill("SIGKILL")
      yield* waitFor(() => first.out.exited, "the kill", 10_000)

      const remote = yield* startMosquitto(["allow_anonymous true"], { port: remotePort })
      const watcher = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const got = collect(watcher)
      yield* subscribe(watcher, "out/#", { qos: 1 })
      const second = yield* daemon(conf)
      yield* listening(port, 30_000)
      yield* waitFor(() => got.length === 5, "the 5 queued messages on the remote mosquitto", 20_000)
      expect(got.map((m) => [m.topic, m.payload, m.qos])).toEqual([0, 1, 2, 3, 4].map((i) => ["out/x", `m${i}`, 1]))
      expect(second.out.stderr).toContain("Bridge up: restored 5 queued and 0 in-flight messages from the store.")
    }),
    60_000
  )
})
