/**
 * The bridge under a random remote broker, over real sockets: each run starts
 * a bridge (MQTT 3.1.1 or 5.0, `topic # both 2`) to a remote that answers its
 * CONNECT with a CONNACK — accepted most of the time, with any properties, or
 * refused with any code — and then random packets: PUBLISH on topics that meet
 * the bridge's, with small packet ids and topic aliases, acknowledgements for
 * ids that may or may not be in flight, SUBACK, UNSUBACK, PINGRESP,
 * DISCONNECT, AUTH and packets only a client sends; in random chunks, some
 * damaged. Last comes a QoS 1 PUBLISH whose PUBACK names its packet id.
 *
 * After each run: the bridge acknowledged that marker or closed the
 * connection (it never stops reading a remote), nothing was thrown out of
 * the broker, and a local client still gets its QoS 1 round trip. At the end
 * a bridge to a well-behaved remote still forwards both ways.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import * as Mqtt from "mqtt-packet"
import { Bridge } from "../../src/bridge/Bridge.js"
import { Broker } from "../../src/Broker.js"
import type { Packet, ProtocolVersion } from "../../src/protocol/codec.js"
import { collect, connectClient, publish, startBroker, subscribe, waitFor } from "../e2e/harness.js"
import { padding, splitAt } from "../support/chunks.js"
import { uncaughtInScope } from "../support/processes.js"
import { ackOfSmallId, applyDamage, connackArb, damage, packetArb, publishOn, subackArb, unsubackArb } from "../support/packets.js"
import { fakeBroker, of, polite } from "./fakeRemote.js"
import { bridgesOf } from "./harness.js"

const SEED = Number(process.env["FUZZ_SEED"] ?? 20_261_128)
const RUNS = Number(process.env["FUZZ_RUNS"] ?? 150)
const MARKER_ID = 0xfedc
/**
 * bridge_max_packet_size bounds what the bridge sends; what it reads is bounded by MQTT's limit only,
 * so a damaged length is completed up to 1 MiB. A frame that claims more is read by the bridge for as
 * long as the remote sends it: the marker behind it is not waited for (`pending` below).
 */
const PAD_LIMIT = 1024 * 1024

const topic = fc.oneof(
  { arbitrary: fc.constantFrom("a", "a/b", "fz/x", "$SYS/broker/connection/fz/state", "", "a//b", "local/health"), weight: 3 },
  { arbitrary: fc.string({ maxLength: 8 }), weight: 1 }
)

const serverPacket = (v: ProtocolVersion): fc.Arbitrary<Packet> =>
  fc.oneof(
    { weight: 5, arbitrary: publishOn(v, topic) },
    { weight: 4, arbitrary: ackOfSmallId(v) },
    { weight: 1, arbitrary: subackArb(v) },
    { weight: 1, arbitrary: unsubackArb(v) },
    { weight: 1, arbitrary: fc.constant<Packet>({ cmd: "pingresp" }) },
    { weight: 1, arbitrary: packetArb(v) }
  )

/** mostly accepted (v5: with any properties), so that the packets after it are read by a connected bridge */
const connack = (v: 4 | 5): fc.Arbitrary<Packet> =>
  fc.oneof(
    { weight: 4, arbitrary: connackArb(v).map((c) => ({ ...c, ...(v === 5 ? { reasonCode: 0 } : { returnCode: 0 }) }) as Packet) },
    { weight: 1, arbitrary: connackArb(v) }
  )

const scenario = fc.constantFrom<4 | 5>(4, 5).chain((v) =>
  fc.record({
    v: fc.constant(v),
    connack: connack(v),
    packets: fc.array(serverPacket(v), { maxLength: 10 }),
    damage,
    cuts: fc.array(fc.nat(), { maxLength: 4 })
  })
)

describe("a random remote never takes the bridge or the broker down", () => {
  it.scopedLive(`${RUNS} random remotes, checked after each; then a well-behaved one`, () =>
    Effect.gen(function* () {
      const thrown = yield* uncaughtInScope
      const local = yield* startBroker()
      const errors: Array<string> = []
      local.log.addSink({ write: (type, line) => void (type === "error" ? errors.push(line) : undefined) })
      const bystander = yield* connectClient(local.url, { clientId: "bystander" })
      const seen = collect(bystander)
      yield* subscribe(bystander, "local/health/#", { qos: 1 })

      const samples = fc.sample(scenario, { seed: SEED, numRuns: RUNS })
      let closed = 0
      let pending = 0
      for (let i = 0; i < samples.length; i++) {
        const s = samples[i]
        const what = `run ${i}: ${JSON.stringify({ connack: s.connack, packets: s.packets, damage: s.damage }).slice(0, 2000)}`
        const gen = (p: Packet) => Mqtt.generate(p as Mqtt.Packet, { protocolVersion: s.v })
        const sent = Buffer.concat([gen(s.connack), applyDamage(Buffer.concat(s.packets.map(gen)), s.damage)])
        const marker = gen({ cmd: "publish", topic: "fz/marker", payload: Buffer.from("m"), qos: 1, messageId: MARKER_ID, retain: false, dup: false })
        const pad = padding(sent, PAD_LIMIT)
        const stream = Buffer.concat([sent, pad ?? Buffer.alloc(0), marker])
        yield* Effect.scoped(
          Effect.gen(function* () {
            // the first connection gets the run's bytes after its CONNECT (restart_timeout 60: there is no second one in a run)
            const remote = yield* fakeBroker((c, p, index) => {
              if (p.cmd === "connect" && index === 0) for (const chunk of splitAt(stream, s.cuts)) if (chunk.length > 0) c.socket.write(chunk)
            })
            yield* Bridge.make(
              bridgesOf([
                "connection fz",
                `address 127.0.0.1:${remote.port}`,
                "remote_clientid fz",
                `bridge_protocol_version ${s.v === 5 ? "mqttv50" : "mqttv311"}`,
                "restart_timeout 60",
                "topic # both 2"
              ].join("\n"))
            ).pipe(Effect.provideService(Broker, local.broker))
            if (pad === undefined) {
              pending++
              return
            }
            const closedOrAcked = () => {
              const c = remote.connections[0]
              return c !== undefined && (c.socket.closed || of(c, "puback").some((p) => p.messageId === MARKER_ID))
            }
            yield* waitFor(() => thrown.length > 0 || closedOrAcked(), `the bridge to acknowledge the marker or close (${what})`)
            expect(thrown, what).toEqual([])
            if (remote.connections[0].socket.closed) closed++
          })
        )
        yield* publish(bystander, `local/health/${i}`, String(i), { qos: 1 })
        yield* waitFor(() => seen.some((m) => m.topic === `local/health/${i}` && m.payload === String(i)), `the local round trip after ${what}`)
        expect(thrown, what).toEqual([])
      }
      expect(pending).toBeLessThan(samples.length / 10)
      expect(closed).toBeGreaterThan(samples.length / 10)
      expect(closed).toBeLessThan(samples.length - samples.length / 10)
      expect(errors).toEqual([])

      // a well-behaved remote after all that: messages go both ways
      const fake = yield* fakeBroker(polite)
      const bridge = yield* Bridge.make(
        bridgesOf(["connection good", `address 127.0.0.1:${fake.port}`, "remote_clientid good", "notifications false", "topic out/# out 1", "topic in/# in 1"].join("\n"))
      ).pipe(Effect.provideService(Broker, local.broker))
      yield* waitFor(() => bridge.status()[0].state === "connected" && of(fake.connections[0], "subscribe").length === 1, "the good bridge's connection")
      const got = collect(bystander)
      yield* subscribe(bystander, "in/#", { qos: 1 })
      fake.connections[0].send({ cmd: "publish", topic: "in/x", payload: Buffer.from("in"), qos: 0, retain: false, dup: false })
      yield* publish(bystander, "out/y", "out", { qos: 1 })
      yield* waitFor(() => got.some((m) => m.topic === "in/x") && of(fake.connections[0], "publish").some((p) => p.topic === "out/y"), "a message each way")
    }), 120_000 + RUNS * 300)
})
