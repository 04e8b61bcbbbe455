/**
 * The daemon's young generation (src/runtime/YoungGeneration.ts), as `node dist/main.js` runs:
 * 1 MiB while traffic is light (V8's own growth had made it 16 MiB while the modules loaded),
 * grown by V8 once allocation is heavy. Read from the daemon's `MIDGE_LOOP_STATS` lines
 * ("... | young generation 1.0 MiB") and its debug log. Scavenges are single-threaded while no
 * messages flow and the young generation is small (a storm of connections), V8's parallel ones
 * while it grows: read from V8's own trace of each scavenge (`--trace-gc-nvp`: the time V8's
 * worker threads spent in it).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import * as net from "node:net"
import { freePort, startDaemon, type LiveProcess } from "../support/processes.js"
import { rawClient, waitFor, type RawClient } from "./harness.js"

/** the young generation's size (MiB) in each stats line so far */
const sizes = (daemon: LiveProcess): Array<number> => [...daemon.out.stderr.matchAll(/young generation ([\d.]+) MiB/g)].map((m) => Number(m[1]))
/** wait for `n` more stats lines (one a second) */
const moreStats = (daemon: LiveProcess, n: number) => {
  const seen = sizes(daemon).length
  return waitFor(() => sizes(daemon).length >= seen + n, `${n} more stats lines`, 10_000)
}

const connect = (client: RawClient, id: string) =>
  Effect.gen(function* () {
    yield* client.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: id, clean: true, keepalive: 0 }))
    yield* waitFor(() => client.data().length >= 4, "CONNACK")
  })

/** the worker threads' share of each scavenge so far (ms), from V8's `--trace-gc-nvp` lines on stdout */
const scavengeWorkers = (daemon: LiveProcess, from = 0): Array<number> =>
  [...daemon.out.stdout.slice(from).matchAll(/gc=s .*?background\.scavenge\.parallel=([\d.]+)/g)].map((m) => Number(m[1]))

/** `n` clients connect (MQTT 3.1.1, clean), get their CONNACK and disconnect, `parallel` at a time */
const connectStorm = (port: number, n: number, parallel = 50): Promise<void> => {
  const one = (k: number) =>
    new Promise<void>((resolve, reject) => {
      const socket = net.connect({ port, host: "127.0.0.1" })
      let got = 0
      socket.on("error", reject)
      socket.on("data", (chunk) => {
        got += chunk.length
        if (got >= 4) socket.end(mqttPacket.generate({ cmd: "disconnect" }))
      })
      socket.on("close", () => (got >= 4 ? resolve() : reject(new Error(`client ${k}: no CONNACK`))))
      socket.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: `storm-${k}`, clean: true, keepalive: 0 }))
    })
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < n) await one(next++)
  }
  return Promise.all(Array.from({ length: parallel }, lane)).then(() => undefined)
}

const payload = Buffer.alloc(64, 7)
const start = (env: Record<string, string> = {}) =>
  Effect.gen(function* () {
    const port = yield* freePort
    const daemon = yield* startDaemon(["-p", String(port), "-v"], { port, env: { MIDGE_LOOP_STATS: "1", ...env }, nodeArgs: ["--trace-gc-nvp"] })
    return { port, daemon }
  })

describe("the daemon's young generation", () => {
  it.scopedLive("single-threaded scavenges through a storm of connections, 1 MiB under light QoS 1 traffic, grown under a QoS 0 flood with parallel scavenges", () =>
    Effect.gen(function* () {
      const { port, daemon } = yield* start()
      yield* moreStats(daemon, 1)
      // the scavenges from here on (the modules loaded with V8's defaults)
      const served = daemon.out.stdout.length
      // 2,000 connects and disconnects, no messages: ~12 MB of garbage, a dozen scavenges
      yield* Effect.promise(() => connectStorm(port, 2_000))
      yield* moreStats(daemon, 1)
      const storm = scavengeWorkers(daemon, served)
      expect(storm.length).toBeGreaterThan(5)
      expect(storm.every((ms) => ms === 0)).toBe(true)
      // light: 6,000 QoS 1 PUBLISH in steps of 10, each step acknowledged before the next (~2,000 msg/s)
      const pub = yield* rawClient(port)
      yield* connect(pub, "light")
      for (let i = 0; i < 6_000; i += 10) {
        const frames: Array<Buffer> = []
        for (let j = i; j < i + 10; j++) frames.push(mqttPacket.generate({ cmd: "publish", topic: `light/${j % 10}`, payload, qos: 1, messageId: (j % 65535) + 1, retain: false, dup: false }))
        yield* pub.write(Buffer.concat(frames))
        yield* waitFor(() => pub.data().length >= 4 + 4 * (i + 10), `PUBACK ${i + 10}`)
      }
      yield* moreStats(daemon, 1)
      expect(daemon.out.stderr).toMatch(/\d+ scavenges/)
      expect(daemon.out.stderr).not.toContain("Young generation: growth on")
      expect(Math.max(...sizes(daemon))).toBe(1)
      const beforeFlood = daemon.out.stdout.length

      // heavy: 4 x 50,000 QoS 0 PUBLISH to a subscriber, each batch at once (several collection
      // reports while it lasts: the switch wants two in a row)
      const sub = yield* rawClient(port)
      yield* connect(sub, "sub")
      yield* sub.write(mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "flood/#", qos: 0 }] }))
      yield* waitFor(() => sub.data().length >= 4 + 5, "SUBACK")
      const frame = mqttPacket.generate({ cmd: "publish", topic: "flood/1", payload, qos: 0, retain: false, dup: false })
      const flood = Buffer.concat(Array(50_000).fill(frame))
      for (let round = 1; round <= 4; round++) {
        yield* pub.write(flood)
        yield* waitFor(() => sub.data().length >= 4 + 5 + round * flood.length, `flood ${round} delivered`, 30_000)
      }
      yield* waitFor(() => daemon.out.stderr.includes("Young generation: growth on"), "growth on", 5_000)
      yield* moreStats(daemon, 2)
      expect(Math.max(...sizes(daemon))).toBeGreaterThan(1)
      // the flood's backlog survives its scavenges: parallel ones share that copying with a worker
      expect(scavengeWorkers(daemon, beforeFlood).some((ms) => ms > 0)).toBe(true)
    })
  , 60_000)

  it.scopedLive("MIDGE_YOUNG_GEN=v8 leaves V8's growth alone: 16 MiB from the start", () =>
    Effect.gen(function* () {
      const { daemon } = yield* start({ MIDGE_YOUNG_GEN: "v8" })
      yield* moreStats(daemon, 1)
      expect(sizes(daemon)[0]).toBe(16)
    })
  , 30_000)
})
