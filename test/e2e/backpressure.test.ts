/**
 * A subscriber that does not read. Briefly behind, it holds its publishers up
 * (their sockets stop being read) so that nothing is dropped; still behind
 * after the hold time, it is slow: its publishers go on, so every other
 * subscriber keeps its rate, and its own backlog is bounded by
 * `max_queued_messages` (QoS 0 beyond it dropped and counted, QoS 1 / 2 queued
 * up to it, then dropped), as Mosquitto does. Without queue limits nothing may
 * be dropped, and the publisher is held up for as long as it takes.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import type { Connection } from "../../src/session/Connection.js"
import { collect, connectClient, rawClient, startBroker, waitFor } from "./harness.js"

const gen = (packet: object) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: 4 })
const connect = (clientId: string) => gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId, clean: true, keepalive: 0 })

/** Sequence-numbered 1 KiB QoS 0 PUBLISH frames on `topic`, in batches of 100. */
const flood = (topic: string, total: number): Array<Buffer> => {
  const batches: Array<Buffer> = []
  for (let b = 0; b < total / 100; b++) {
    const frames: Array<Buffer> = []
    for (let i = b * 100; i < (b + 1) * 100; i++) {
      const payload = Buffer.alloc(1024, 0x61)
      payload.writeUInt32BE(i, 0)
      frames.push(gen({ cmd: "publish", topic, payload, qos: 0, retain: false, dup: false }))
    }
    batches.push(Buffer.concat(frames))
  }
  return batches
}

/** The sequence numbers of the PUBLISH packets in `bytes` (an mqtt-packet parser, independent of the broker's). */
const parseSeqs = (onPublish: (seq: number, packet: mqttPacket.IPublishPacket) => void) => {
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  parser.on("packet", (p) => {
    if (p.cmd === "publish") onPublish((p.payload as Buffer).readUInt32BE(0), p)
  })
  return (bytes: Buffer) => parser.parse(bytes)
}

describe("backpressure", () => {
  it.scopedLive("QoS 0: a slow subscriber does not hold the others up; its backlog stays within max_queued_messages, the rest is dropped and counted", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker({ settings: { maxQueuedMessages: 100 } })
      const stats = broker.core.stats
      const slowSub = yield* rawClient(port)
      yield* slowSub.write(connect("slow"))
      yield* slowSub.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "flood", qos: 0 }] }))
      yield* waitFor(() => slowSub.data().length >= 9, "CONNACK and SUBACK")
      const before = slowSub.data().length
      slowSub.socket.pause()

      // the fast subscriber reads everything as it comes
      const fastSub = yield* rawClient(port)
      const fastSeqs: Array<number> = []
      const fastParse = parseSeqs((seq) => fastSeqs.push(seq))
      fastSub.socket.on("data", fastParse)
      yield* fastSub.write(connect("fast-sub"))
      yield* fastSub.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "flood", qos: 0 }] }))
      yield* waitFor(() => broker.core.attached.has("fast-sub") && broker.core.router.subscriptionCount === 2, "the fast subscription")

      const pub = yield* rawClient(port)
      yield* pub.write(connect("pub"))
      yield* waitFor(() => pub.data().length >= 4, "CONNACK")
      const total = 20_000 // 20 MiB: far more than the slow subscriber's socket buffers hold
      for (const batch of flood("flood", total)) pub.socket.write(batch)

      const slow = () => broker.core.attached.get("slow") as unknown as Connection
      const publisher = () => broker.core.attached.get("pub") as unknown as Connection
      // the fast one gets every message although the slow one reads nothing
      yield* waitFor(() => fastSeqs.length === total, "the fast subscriber to receive everything", 20_000)
      expect(fastSeqs).toEqual(Array.from({ length: total }, (_, i) => i))
      expect(publisher().readingPaused).toBe(false)
      // what waits in the broker for the slow one: max_queued_messages frames, one slice in the socket, and
      // what was written before it was found slow (up to the 1 MiB high-water mark and one turn's frames)
      expect(slow().pendingBytes).toBeLessThan(100 * 1040 + 64 * 1024 + 1024 * 1024 + 256 * 1024)
      const dropped = stats.publishDropped
      // (the kernel's socket buffers take some megabytes first; the rest is over the limit)
      expect(dropped).toBeGreaterThan(0)

      // the slow one reads again: what it was not dropped arrives, in order, once; kept + dropped = published
      const slowSeqs: Array<number> = []
      const slowParse = parseSeqs((seq) => slowSeqs.push(seq))
      slowParse(slowSub.data().subarray(before))
      slowSub.socket.removeAllListeners("data")
      slowSub.socket.on("data", slowParse)
      slowSub.socket.resume()
      yield* waitFor(() => slowSeqs.length + dropped >= total, "the slow subscriber's backlog", 10_000)
      expect(slowSeqs.length + stats.publishDropped).toBe(total)
      for (let i = 1; i < slowSeqs.length; i++) expect(slowSeqs[i]).toBeGreaterThan(slowSeqs[i - 1])
      // as Mosquitto: a full queue drops the new messages and keeps the old ones
      expect(slowSeqs.slice(0, 100)).toEqual(Array.from({ length: 100 }, (_, i) => i))
    })
  )

  it.scopedLive("QoS 1: the fast subscriber gets everything; the slow one's queue stays within the limits and, once it reads, it gets every message they kept", () =>
    Effect.gen(function* () {
      const { port, broker, url } = yield* startBroker({ settings: { maxInflightMessages: 10, maxQueuedMessages: 100 } })
      const stats = broker.core.stats
      // the slow subscriber: QoS 1, reads nothing, so acknowledges nothing
      const slowSub = yield* rawClient(port)
      yield* slowSub.write(connect("slow"))
      yield* slowSub.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "q1", qos: 1 }] }))
      yield* waitFor(() => slowSub.data().length >= 9, "CONNACK and SUBACK")
      const before = slowSub.data().length
      slowSub.socket.pause()

      const fastSub = yield* connectClient(url, { clientId: "fast-sub" })
      const received = collect(fastSub)
      yield* Effect.promise(() => fastSub.subscribeAsync("q1", { qos: 1 }))
      const publisher = yield* connectClient(url, { clientId: "pub" })
      const total = 1000
      // every PUBLISH is acknowledged (publishAsync resolves on PUBACK)
      yield* Effect.promise(() => Promise.all(Array.from({ length: total }, (_, i) => publisher.publishAsync("q1", String(i), { qos: 1 }))))
      yield* waitFor(() => received.length === total, "the fast subscriber to receive everything", 20_000)
      expect(received.map((r) => Number(r.payload))).toEqual(Array.from({ length: total }, (_, i) => i))

      const session = broker.core.sessions.get("slow")!
      expect(session.flow.inflight.size).toBe(10)
      expect(session.flow.queued).toBe(100)
      // the rest was dropped for the slow one, and counted
      expect(stats.publishDropped).toBe(total - 110)

      // the slow one reads and acknowledges: the 110 messages the limits kept arrive, in order
      const got: Array<number> = []
      const parser = mqttPacket.parser({ protocolVersion: 4 })
      parser.on("packet", (p) => {
        if (p.cmd !== "publish") return
        got.push(Number((p.payload as Buffer).toString()))
        slowSub.socket.write(gen({ cmd: "puback", messageId: p.messageId }))
      })
      parser.parse(slowSub.data().subarray(before))
      slowSub.socket.removeAllListeners("data")
      slowSub.socket.on("data", (c: Buffer) => parser.parse(c))
      slowSub.socket.resume()
      yield* waitFor(() => got.length >= 110, "the slow subscriber's kept messages", 10_000)
      yield* waitFor(() => session.flow.inflight.size === 0, "every PUBACK to be taken")
      expect(got).toEqual(Array.from({ length: 110 }, (_, i) => i))
      expect(session.flow.queued).toBe(0)
    })
  )

  it.scopedLive("without queue limits a subscriber that does not read holds its publisher up, and resumes it with nothing lost", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker({ settings: { maxQueuedMessages: 0 } })
      const sub = yield* rawClient(port)
      yield* sub.write(connect("slow"))
      yield* sub.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "flood", qos: 0 }] }))
      yield* waitFor(() => sub.data().length >= 9, "CONNACK and SUBACK")
      const before = sub.data().length
      sub.socket.pause()

      const pub = yield* rawClient(port)
      yield* pub.write(connect("pub"))
      yield* waitFor(() => pub.data().length >= 4, "CONNACK")
      const total = 40_000 // 40 MiB: far more than the socket buffers hold
      for (const batch of flood("flood", total)) pub.socket.write(batch)

      const publisher = () => broker.core.attached.get("pub") as unknown as Connection
      const slow = () => broker.core.attached.get("slow") as unknown as Connection
      yield* waitFor(() => publisher().readingPaused === true, "the publisher to be paused", 10_000)
      // held up well past the hold time of a subscriber with limits: still paused, nothing dropped
      yield* Effect.sleep("1200 millis")
      expect(publisher().readingPaused).toBe(true)
      expect(broker.core.stats.publishDropped).toBe(0)
      // what the broker holds for the subscriber stays bounded (1 MiB high water plus what was in hand)
      expect(slow().pendingBytes).toBeLessThan(8 * 1024 * 1024)

      // the subscriber reads again: everything arrives, in order
      const seqs: Array<number> = []
      const parse = parseSeqs((seq) => seqs.push(seq))
      parse(sub.data().subarray(before))
      sub.socket.removeAllListeners("data")
      sub.socket.on("data", parse)
      sub.socket.resume()
      yield* waitFor(() => seqs.length === total, "all messages to arrive once the subscriber reads", 25_000)
      expect(seqs).toEqual(Array.from({ length: total }, (_, i) => i))
      expect(publisher().readingPaused).toBe(false)
    })
  )
})
