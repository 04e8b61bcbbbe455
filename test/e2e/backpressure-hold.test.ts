/**
 * The congestion hold's hysteresis: a subscriber whose queue passes the high
 * mark (half of `max_queued_messages`, 1,000 without limits) holds its
 * publishers up until the queue is down to the low mark (half the high one).
 * Releasing them as soon as it was back under the high mark resumed and
 * re-held every publisher on every acknowledgement of the subscriber: each
 * one's PUBACKs went out a few at a time, in more writes and reads per message
 * (docs/performance.md, "The congestion hold's hysteresis").
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import type { Connection } from "../../src/session/Connection.js"
import { rawClient, settle, startBroker, waitFor } from "./harness.js"

const gen = (packet: object) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: 4 })
const connect = (clientId: string) => gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId, clean: true, keepalive: 0 })
const publish = (topic: string, seq: number, messageId: number) => {
  const payload = Buffer.alloc(16)
  payload.writeUInt32BE(seq, 0)
  return gen({ cmd: "publish", topic, payload, qos: 1, retain: false, dup: false, messageId })
}

/** A client's packets as they arrive, parsed by mqtt-packet (independent of the broker's parser). */
const packets = (socket: import("node:net").Socket, onPacket: (p: mqttPacket.Packet) => void) => {
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  parser.on("packet", onPacket)
  socket.removeAllListeners("data")
  socket.on("data", (bytes: Buffer) => parser.parse(bytes))
}

describe("backpressure: the hold's hysteresis", () => {
  it.scopedLive("a held publisher stays held between the high and the low mark, then gets everything acknowledged; nothing lost or duplicated", () =>
    Effect.gen(function* () {
      // no queue limits: no hold timer, so the hold lasts exactly as long as the subscriber's backlog
      const { port, broker } = yield* startBroker({ settings: { maxInflightMessages: 20, maxQueuedMessages: 0 } })
      const high = 1000
      const low = high >> 1

      const sub = yield* rawClient(port)
      const received: Array<number> = []
      const unacked: Array<number> = []
      packets(sub.socket, (p) => {
        if (p.cmd === "publish") {
          received.push((p.payload as Buffer).readUInt32BE(0))
          unacked.push(p.messageId!)
        }
      })
      yield* sub.write(connect("sub"))
      yield* sub.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "h/#", qos: 1 }] }))
      yield* settle(100)
      const ackAll = () => {
        const ids = unacked.splice(0)
        if (ids.length > 0) sub.socket.write(Buffer.concat(ids.map((messageId) => gen({ cmd: "puback", messageId }))))
      }

      const pub = yield* rawClient(port)
      let pubacks = 0
      let connacked = false
      packets(pub.socket, (p) => {
        if (p.cmd === "puback") pubacks++
        if (p.cmd === "connack") connacked = true
      })
      yield* pub.write(connect("pub"))
      yield* waitFor(() => connacked, "CONNACK")
      // the subscriber takes 20 (its window), the queue passes the high mark, the rest is parked
      // (more than 256 parked: the publisher's socket is no longer read)
      const total = 1400
      const frames: Array<Buffer> = []
      for (let i = 0; i < total; i++) frames.push(publish("h/a", i, (i % 65535) + 1))
      pub.socket.write(Buffer.concat(frames))

      const subConn = () => broker.core.attached.get("sub") as unknown as Connection
      const pubConn = () => broker.core.attached.get("pub") as unknown as Connection
      const queued = () => subConn().session!.flow.queued
      yield* waitFor(() => pubConn().readingPaused && received.length === 20, "the publisher to be held up", 10_000)
      expect(queued()).toBeGreaterThan(high)
      yield* settle(100)
      const heldAt = pubacks
      expect(heldAt).toBeLessThan(total)

      // the subscriber acknowledges its window round by round: the queue shrinks by 20 each round,
      // past the high mark, and the publisher stays held all the way down to the low mark
      for (let round = 0; round < 40 && queued() > low + 20; round++) {
        ackAll()
        yield* waitFor(() => unacked.length === 20, "the window to be refilled")
        expect(pubacks).toBe(heldAt)
      }
      // a publisher that starts while the hold lasts is held too, although the queue is under the high mark
      const other = yield* rawClient(port)
      let otherAcks = 0
      let otherConnacked = false
      packets(other.socket, (p) => {
        if (p.cmd === "puback") otherAcks++
        if (p.cmd === "connack") otherConnacked = true
      })
      yield* other.write(connect("other"))
      yield* waitFor(() => otherConnacked, "CONNACK")
      other.socket.write(Buffer.concat([0, 1, 2].map((i) => publish("h/b", 100_000 + i, i + 1))))
      yield* settle(150)
      expect(queued()).toBeLessThan(high)
      expect(queued()).toBeGreaterThan(low)
      expect(pubacks).toBe(heldAt)
      expect(otherAcks).toBeLessThanOrEqual(1)
      expect(pubConn().readingPaused).toBe(true)

      // past the low mark it is released: every PUBLISH acknowledged, every message delivered once, in order
      const all = total + 3
      while (pubacks < total || otherAcks < 3 || received.length < all) {
        const before = received.length + pubacks + otherAcks
        ackAll()
        yield* waitFor(() => received.length + pubacks + otherAcks > before, "progress", 5_000)
      }
      ackAll()
      expect(pubConn().readingPaused).toBe(false)
      expect(received.filter((seq) => seq < 100_000)).toEqual(Array.from({ length: total }, (_, i) => i))
      expect(received.filter((seq) => seq >= 100_000)).toEqual([100_000, 100_001, 100_002])
      yield* settle(100)
      expect(pubacks).toBe(total)
      expect(otherAcks).toBe(3)
      expect(received.length).toBe(all)
    })
  )
})
