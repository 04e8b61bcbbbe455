/**
 * The daemon collects its start-up garbage once it listens (src/daemon.ts,
 * `collectStartupGarbage`: two scavenges), so that the first scavenges under traffic do not copy
 * and promote what loading the modules left (10–25 ms pauses in the QoS 1 latency bench; docs/performance.md,
 * "QoS 1 latency"). Seen in the daemon's own `--trace-gc` lines, for `node dist/main.js` as users
 * run it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { DAEMON, freePort, listening, spawnLive } from "../support/processes.js"
import { packetsOf, rawClient, tcpView, waitFor } from "./harness.js"

const MESSAGES = 100_000
const BATCH = 5_000

/** "Scavenge 34.7 (65.3) -> 34.3 (67.8) MB, ... testing; ...": a collection `gc()` asked for (the last one is start-up's second) */
const STARTUP_GC = /(?:Scavenge|Mark-Compact) [\d.]+ \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB[^\n]*testing/g
/** heap size (MB) after each scavenge: "Scavenge 42.8 (65.3) -> 27.1 (65.3) MB" */
const afterScavenges = (trace: string): Array<number> => [...trace.matchAll(/Scavenge [\d.]+ \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB/g)].map((m) => Number(m[1]))

describe("the daemon's heap after start-up", () => {
  it.scopedLive(`is collected once it listens: the scavenges under ${MESSAGES.toLocaleString("en-US")} QoS 1 PUBLISH then keep under 3 MB more`, () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const daemon = yield* spawnLive("node", ["--trace-gc", DAEMON, "-p", String(port)])
      yield* listening(port, 15_000)
      const client = yield* rawClient(port)
      yield* client.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "heap", clean: true, keepalive: 0 }))
      yield* waitFor(() => client.data().length >= 4, "CONNACK")
      const payload = Buffer.alloc(64, 7)
      for (let sent = 0; sent < MESSAGES; sent += BATCH) {
        const frames: Array<Buffer> = []
        for (let i = sent; i < sent + BATCH; i++) {
          frames.push(mqttPacket.generate({ cmd: "publish", topic: `heap/${i % 10}`, payload, qos: 1, messageId: (i % 65535) + 1, retain: false, dup: false }))
        }
        yield* client.write(Buffer.concat(frames))
        // every PUBLISH acknowledged (4 bytes each, after the 4-byte CONNACK) before the next batch
        yield* waitFor(() => client.data().length >= 4 + 4 * (sent + BATCH), `PUBACK ${sent + BATCH}`, 20_000).pipe(
          Effect.catchAll((error) => {
            // which side stopped: the acknowledgements that came, the kernel's queues, the daemon's own words
            const acks = packetsOf(client)
            const last = acks.at(-1)
            return Effect.die(
              new Error(
                `${error.message}: ${acks.length} packets received (the last ${last?.cmd} ${(last as { messageId?: number } | undefined)?.messageId ?? ""}), ` +
                  `${client.data().length} bytes; the client's socket: unwritten ${client.socket.writableLength} bytes, paused ${client.socket.isPaused()}\n` +
                  `  ${tcpView(client.socket.localPort)}\nthe daemon's stderr (end): ${daemon.out.stderr.slice(-2000)}\nits stdout (end): ${daemon.out.stdout.slice(-1500)}`
              )
            )
          })
        )
      }
      // V8 prints its trace through a buffered stdout: all of it is there once the daemon has exited
      daemon.child.kill("SIGTERM")
      yield* waitFor(() => daemon.out.exited, "the daemon to exit", 10_000)
      const startup = [...daemon.out.stdout.matchAll(STARTUP_GC)]
      expect(startup.length).toBeGreaterThanOrEqual(1)
      const collected = startup[startup.length - 1]
      const heapAfterStartup = Number(collected[1])
      const heaps = afterScavenges(daemon.out.stdout.slice(collected.index! + collected[0].length))
      // the load allocates tens of MB: the young generation is collected at least once meanwhile
      expect(heaps.length).toBeGreaterThanOrEqual(1)
      // what start-up left is gone: a scavenge keeps the broker's live objects, not start-up's
      // (the build before: the first scavenge under traffic left ~8 MB more than start-up's heap)
      expect(Math.max(...heaps) - heapAfterStartup).toBeLessThan(3)
    })
  , 60_000)
})
