/**
 * What an idle connection costs, and the CONNECT path that was made cheap
 * (docs/performance.md, issue #10): no timer or fiber per connection, a heap
 * budget per connection, the hand-written CONNACK, and offline-session expiry
 * now that live connections are not in the broker's FiberMap.
 */
import { spawn } from "node:child_process"
import * as v8 from "node:v8"
import { runInNewContext } from "node:vm"
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import * as mqttPacket from "mqtt-packet"
import { rawClient, startBroker, waitFor } from "../e2e/harness.js"

/**
 * N idle MQTT 3.1.1 clients in another process (so that only the broker's side is in this heap);
 * `subscribe`: each then subscribes (QoS 1) to its own topic `<prefix>/<i>` and waits for its SUBACK.
 */
const idleClients = (port: number, n: number, prefix: string, subscribe = false) =>
  Effect.acquireRelease(
    Effect.async<{ readonly kill: () => void }, Error>((resume) => {
      const script = `
        const net = require("node:net")
        let ok = 0
        const sockets = []
        for (let i = 0; i < ${n}; i++) {
          const s = net.connect(${port}, "127.0.0.1", () => {
            const id = Buffer.from("${prefix}-" + i)
            const body = Buffer.concat([Buffer.from([0, 4, 77, 81, 84, 84, 4, 2, 0, 60, 0, id.length]), id])
            s.write(Buffer.concat([Buffer.from([0x10, body.length]), body]))
          })
          let stage = 0
          s.on("data", (d) => {
            if (stage === 0 && d[0] === 0x20 && d[3] === 0) {
              stage = 1
              if (${subscribe}) {
                const topic = Buffer.from("${prefix}/" + i)
                const body = Buffer.concat([Buffer.from([0, 1, 0, topic.length]), topic, Buffer.from([1])])
                s.write(Buffer.concat([Buffer.from([0x82, body.length]), body]))
                return
              }
            } else if (stage === 1 && d[0] === 0x90 && d[4] === 1) stage = 2
            else return
            if (++ok === ${n}) process.stdout.write("ready\\n")
          })
          s.on("error", () => process.exit(2))
          sockets.push(s)
        }
        process.stdin.on("end", () => process.exit(0))
        process.stdin.resume()`
      const child = spawn(process.execPath, ["-e", script], { stdio: ["pipe", "pipe", "inherit"] })
      const kill = () => child.kill("SIGKILL")
      child.stdout.on("data", (d: Buffer) => {
        if (d.toString().includes("ready")) resume(Effect.succeed({ kill }))
      })
      child.once("exit", (code) => resume(Effect.fail(new Error(`idle clients exited with ${code}`))))
    }).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("idle clients did not connect in 20 s") })),
    ({ kill }) => Effect.sync(kill)
  )

const gc = (): void => {
  v8.setFlagsFromString("--expose-gc")
  const collect = runInNewContext("gc") as () => void
  collect()
  collect()
}

describe("idle connections", () => {
  it.scopedLive("hold no timer each: one watchdog serves every connection of a listener", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length
      const before = timers()
      yield* idleClients(port, 300, "timers")
      yield* waitFor(() => broker.stats().clientsConnected === 300, "300 clients connected", 20_000)
      // a fiber sleeping per connection (the design before) was one Timeout each
      expect(timers() - before).toBeLessThan(5)
    })
  )

  /** Heap the broker holds per connection: 1,000 clients measured after 200 that warm up code and caches. */
  const heapPerConnection = (subscribe: boolean) =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const subscribed = (n: number) => !subscribe || broker.stats().subscriptions === n
      // the first connections build what every later one shares (code, caches, the trie's `warm` level)
      const warm = yield* idleClients(port, 200, "warm", subscribe)
      yield* waitFor(() => broker.stats().clientsConnected === 200 && subscribed(200), "200 clients", 20_000)
      gc()
      const before = process.memoryUsage().heapUsed
      yield* idleClients(port, 1000, "measured", subscribe)
      yield* waitFor(() => broker.stats().clientsConnected === 1200 && subscribed(1200), "1,200 clients", 20_000)
      gc()
      const perConnection = (process.memoryUsage().heapUsed - before) / 1000
      warm.kill()
      expect(perConnection).toBeGreaterThan(0)
      return perConnection
    })

  // measured 1.9–2.1 KB idle and 2.1–2.7 KB subscribed; the build before the lazy per-connection state 2.3 KB and 3.0–3.2 KB
  it.scopedLive("cost the broker less than 2.5 KB of heap each (it was 10.9 KB with a fiber per connection, 2.3 KB with arrays and rare fields per connection)", () =>
    Effect.map(heapPerConnection(false), (bytes) => expect(bytes).toBeLessThan(2560))
  )

  it.scopedLive("subscribed to its own topic, less than 3 KB each (it was 4.1 KB: Maps per session and per trie node)", () =>
    Effect.map(heapPerConnection(true), (bytes) => expect(bytes).toBeLessThan(3072))
  )
})

describe("CONNECT", () => {
  it.scoped("CONNACK is the bytes mqtt-packet generates, for MQTT 3.1 and 3.1.1, session present 0 and 1 [MQTT-3.2.2-1..3]", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      for (const version of [3, 4] as const) {
        // clean; persistent (nothing kept from a clean session); persistent again: the session is there
        for (const [clean, present] of [[true, false], [false, false], [false, true]] as const) {
          const c = yield* rawClient(port)
          const clientId = `connack-v${version}`
          yield* c.write(
            mqttPacket.generate(
              { cmd: "connect", protocolId: version === 3 ? "MQIsdp" : "MQTT", protocolVersion: version, clientId, clean, keepalive: 30 },
              { protocolVersion: version }
            )
          )
          yield* waitFor(() => c.data().length >= 4, "CONNACK")
          const expected = mqttPacket.generate({ cmd: "connack", returnCode: 0, sessionPresent: present }, { protocolVersion: version })
          expect([...c.data().subarray(0, 4)]).toEqual([...expected])
          yield* c.write([0xe0, 0x00]) // DISCONNECT
          yield* c.waitClosed()
        }
      }
    })
  )

  it.scoped("a persistent session reconnected in time outlives its first expiry; offline again, it expires on time", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const connect = (cleanStart: boolean) =>
        mqttPacket.generate(
          { cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "comes-back", clean: cleanStart, keepalive: 0, properties: { sessionExpiryInterval: 10 } },
          { protocolVersion: 5 }
        )
      const sessionExists = () => broker.core.sessions.has("comes-back")
      const first = yield* rawClient(port)
      yield* first.write(connect(true))
      yield* waitFor(() => first.data().length >= 3, "CONNACK")
      yield* first.write([0xe0, 0x00])
      yield* first.waitClosed()
      // offline at t = 0: it would expire at 10 s
      yield* TestClock.adjust("5 seconds")
      const second = yield* rawClient(port)
      yield* second.write(connect(false))
      yield* waitFor(() => second.data().length >= 3, "CONNACK")
      expect(second.data()[2]).toBe(1) // session present
      yield* TestClock.adjust("20 seconds")
      expect(sessionExists()).toBe(true)
      // offline again at t = 25 s: expires at 35 s
      yield* second.write([0xe0, 0x00])
      yield* second.waitClosed()
      yield* TestClock.adjust("9999 millis")
      expect(sessionExists()).toBe(true)
      yield* TestClock.adjust("2 millis")
      yield* waitFor(() => !sessionExists(), "the session to expire")
    })
  )
})
