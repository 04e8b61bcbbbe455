/**
 * Read backpressure: a publisher feeding a subscriber that does not read is
 * held up (its socket stops being read) instead of the broker buffering
 * without bound; when the subscriber reads again everything flows, nothing
 * lost.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import type { Connection } from "../../src/session/Connection.js"
import { rawClient, startBroker, waitFor } from "./harness.js"

const gen = (packet: object) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: 4 })

describe("backpressure", () => {
  it.scopedLive("a publisher to a subscriber that does not read is paused, then resumes; QoS 0 messages are not lost", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      // the slow subscriber: subscribes, then stops reading its socket
      const sub = yield* rawClient(port)
      yield* sub.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "slow", clean: true, keepalive: 0 }))
      yield* sub.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "flood", qos: 0 }] }))
      yield* waitFor(() => sub.data().length >= 9, "CONNACK and SUBACK")
      const before = sub.data().length
      sub.socket.pause()

      const pub = yield* rawClient(port)
      yield* pub.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "fast", clean: true, keepalive: 0 }))
      yield* waitFor(() => pub.data().length >= 4, "CONNACK")
      const payload = Buffer.alloc(1024, 0x61)
      const frame = gen({ cmd: "publish", topic: "flood", payload, qos: 0, retain: false, dup: false })
      const total = 40_000 // 40 MiB: far more than the socket buffers hold
      const batch = Buffer.concat(Array.from({ length: 100 }, () => frame))
      for (let i = 0; i < total / 100; i++) pub.socket.write(batch)

      const fast = () => broker.core.attached.get("fast") as unknown as Connection
      const slow = () => broker.core.attached.get("slow") as unknown as Connection
      yield* waitFor(() => fast()?.readingPaused === true, "the publisher to be paused", 10_000)
      // what the broker holds for the slow subscriber stays bounded (1 MiB high water plus what was in hand)
      expect(slow().pendingBytes).toBeLessThan(8 * 1024 * 1024)

      // the subscriber reads again: everything arrives
      let received = 0
      const parser = mqttPacket.parser({ protocolVersion: 4 })
      parser.on("packet", (p) => {
        if (p.cmd === "publish") received++
      })
      parser.parse(sub.data().subarray(before))
      sub.socket.removeAllListeners("data")
      sub.socket.on("data", (c) => parser.parse(c))
      sub.socket.resume()
      yield* waitFor(() => received === total, "all messages to arrive once the subscriber reads", 25_000)
      expect(fast().readingPaused).toBe(false)
    })
  )
})
