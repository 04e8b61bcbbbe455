/**
 * QoS handshakes seen on the wire, with a raw client that decides when (and
 * whether) to acknowledge: the in-flight window, resend with DUP on
 * reconnect, exactly-once inbound QoS 2.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { collect, connectClient, packetsOf, publish, rawClient, settle, startBroker, subscribe, waitFor, type RawClient } from "./harness.js"

const gen = (packet: object, protocolVersion: 3 | 4 | 5 = 4) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion })

/** Every packet the raw client has received so far. */

const connectRaw = (port: number, clientId: string, clean: boolean, protocolVersion: 4 | 5 = 4) =>
  Effect.gen(function* () {
    const c = yield* rawClient(port)
    yield* c.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion, clientId, clean, keepalive: 0, ...(protocolVersion === 5 && !clean ? { properties: { sessionExpiryInterval: 600 } } : {}) }, protocolVersion))
    yield* waitFor(() => packetsOf(c, protocolVersion).some((p) => p.cmd === "connack"), "CONNACK")
    return c
  })

describe("QoS on the wire", () => {
  it.scopedLive("the outbound window holds max_inflight_messages; the rest waits and follows in order as acks come", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker({ settings: { maxInflightMessages: 2 } })
      const c = yield* connectRaw(port, "slow", true)
      yield* c.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "w", qos: 1 }] }))
      yield* waitFor(() => packetsOf(c).some((p) => p.cmd === "suback"), "SUBACK")
      const pub = yield* connectClient(url)
      for (let i = 0; i < 5; i++) yield* publish(pub, "w", `m${i}`, { qos: 1 })
      const publishes = () => packetsOf(c).filter((p): p is mqttPacket.IPublishPacket => p.cmd === "publish")
      yield* waitFor(() => publishes().length === 2, "2 in flight")
      yield* settle(150)
      expect(publishes().length).toBe(2) // the window is full
      yield* c.write(gen({ cmd: "puback", messageId: publishes()[0].messageId }))
      yield* waitFor(() => publishes().length === 3, "the third after one PUBACK")
      for (const p of publishes().slice(1)) yield* c.write(gen({ cmd: "puback", messageId: p.messageId }))
      yield* waitFor(() => publishes().length === 5, "all 5")
      expect(publishes().map((p) => p.payload.toString())).toEqual(["m0", "m1", "m2", "m3", "m4"])
      // packet ids are distinct among those in flight together [MQTT-2.3.1-2]
      const ids = publishes().slice(0, 2).map((p) => p.messageId)
      expect(new Set(ids).size).toBe(2)
    })
  )

  for (const protocolVersion of [4, 5] as const) {
    it.scopedLive(`v${protocolVersion}: unacknowledged QoS 1 / 2 messages are resent with DUP on reconnect; PUBREL is resent for released ones [MQTT-4.4.0-1]`, () =>
      Effect.gen(function* () {
        const { port, url } = yield* startBroker()
        const first = yield* connectRaw(port, "forgetful", false, protocolVersion)
        yield* first.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "d/#", qos: 2 }] }, protocolVersion))
        yield* waitFor(() => packetsOf(first, protocolVersion).some((p) => p.cmd === "suback"), "SUBACK")
        const pub = yield* connectClient(url)
        yield* publish(pub, "d/1", "one", { qos: 1 })
        yield* publish(pub, "d/2", "two", { qos: 2 })
        yield* publish(pub, "d/3", "three", { qos: 2 })
        const pubs = (c: RawClient) => packetsOf(c, protocolVersion).filter((p): p is mqttPacket.IPublishPacket => p.cmd === "publish")
        yield* waitFor(() => pubs(first).length === 3, "3 deliveries")
        const [one, two, three] = pubs(first)
        expect([one.dup, two.dup, three.dup]).toEqual([false, false, false])
        // receive d/3's PUBREC round: the broker answers PUBREL; then vanish without PUBCOMP
        yield* first.write(gen({ cmd: "pubrec", messageId: three.messageId }, protocolVersion))
        yield* waitFor(() => packetsOf(first, protocolVersion).some((p) => p.cmd === "pubrel"), "PUBREL")
        first.socket.destroy()
        yield* first.waitClosed()
        yield* settle(100)
        const again = yield* connectRaw(port, "forgetful", false, protocolVersion)
        yield* waitFor(() => pubs(again).length === 2 && packetsOf(again, protocolVersion).some((p) => p.cmd === "pubrel"), "resends")
        const resent = pubs(again)
        expect(resent.map((p) => [p.topic, p.messageId, p.dup, p.qos])).toEqual([
          ["d/1", one.messageId, true, 1],
          ["d/2", two.messageId, true, 2]
        ])
        const connack = packetsOf(again, protocolVersion).find((p) => p.cmd === "connack") as mqttPacket.IConnackPacket
        expect(connack.sessionPresent).toBe(true)
        expect((packetsOf(again, protocolVersion).find((p) => p.cmd === "pubrel") as mqttPacket.IPubrelPacket).messageId).toBe(three.messageId)
      })
    )
  }

  it.scopedLive("a resent QoS 2 PUBLISH (DUP) before PUBREL is acknowledged but delivered once [MQTT-4.3.3-9]", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const sub = yield* connectClient(url)
      const got = collect(sub)
      yield* subscribe(sub, "once", { qos: 2 })
      const c = yield* connectRaw(port, "dupper", true)
      const p = { cmd: "publish", topic: "once", payload: Buffer.from("x"), qos: 2, messageId: 9, retain: false }
      yield* c.write(gen({ ...p, dup: false }))
      yield* c.write(gen({ ...p, dup: true }))
      yield* waitFor(() => packetsOf(c).filter((x) => x.cmd === "pubrec").length === 2, "two PUBRECs")
      yield* c.write(gen({ cmd: "pubrel", messageId: 9 }))
      yield* waitFor(() => packetsOf(c).some((x) => x.cmd === "pubcomp"), "PUBCOMP")
      yield* settle(150)
      expect(got.length).toBe(1)
      // after PUBCOMP the id is free: the same id is a new message
      yield* c.write(gen({ ...p, dup: false, payload: Buffer.from("y") }))
      yield* waitFor(() => got.length === 2, "the second message")
    })
  )

  for (const protocolVersion of [3, 4] as const) {
    it.scopedLive(`v${protocolVersion}: a QoS 1 or QoS 2 PUBLISH with packet identifier 0 closes the connection, undelivered [MQTT-2.3.1-1]; a valid QoS 2 flow still works`, () =>
      Effect.gen(function* () {
        const { port, url, log } = yield* startBroker()
        const sub = yield* connectClient(url)
        const got = collect(sub)
        yield* subscribe(sub, "zero/#", { qos: 2 })
        const connect = (clientId: string) =>
          Effect.gen(function* () {
            const c = yield* rawClient(port)
            const protocolId = protocolVersion === 3 ? "MQIsdp" : "MQTT"
            yield* c.write(mqttPacket.generate({ cmd: "connect", protocolId, protocolVersion, clientId, clean: true, keepalive: 0 }, { protocolVersion }))
            yield* waitFor(() => packetsOf(c, protocolVersion).some((p) => p.cmd === "connack"), "CONNACK")
            return c
          })
        const publish0 = (qos: 1 | 2) => gen({ cmd: "publish", topic: `zero/q${qos}`, payload: Buffer.from("x"), qos, messageId: 0, retain: false, dup: false }, protocolVersion)
        for (const qos of [1, 2] as const) {
          const c = yield* connect(`zero${qos}`)
          const before = c.data().length
          yield* c.write(publish0(qos))
          yield* c.waitClosed()
          // closed without a word (no PUBACK / PUBREC: v3 / v4 have no DISCONNECT to send)
          expect(c.data().length).toBe(before)
          expect(log.recent.some((l) => l.startsWith(`Client zero${qos} from 127.0.0.1:`) && l.endsWith(" disconnected: packet identifier 0 in a QoS > 0 PUBLISH."))).toBe(true)
        }
        const ok = yield* connect("valid")
        yield* ok.write(gen({ cmd: "publish", topic: "zero/ok", payload: Buffer.from("y"), qos: 2, messageId: 1, retain: false, dup: false }, protocolVersion))
        yield* waitFor(() => packetsOf(ok, protocolVersion).some((p) => p.cmd === "pubrec"), "PUBREC")
        yield* ok.write(gen({ cmd: "pubrel", messageId: 1 }, protocolVersion))
        yield* waitFor(() => packetsOf(ok, protocolVersion).some((p) => p.cmd === "pubcomp"), "PUBCOMP")
        yield* waitFor(() => got.length === 1, "the valid message")
        yield* settle(150)
        expect(got.map((m) => [m.topic, m.payload, m.qos])).toEqual([["zero/ok", "y", 2]])
      })
    )
  }

  it.scopedLive("an acknowledgement of the wrong kind for a message in flight (PUBREC for QoS 1, PUBACK for QoS 2, PUBCOMP before the PUBREC) closes the connection, as Mosquitto does; the message is sent again at the next connection", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const cases = [
        { qos: 1, wrong: "pubrec", v: 4 },
        { qos: 2, wrong: "puback", v: 4 },
        { qos: 2, wrong: "pubcomp", v: 5 }
      ] as const
      for (const [i, k] of cases.entries()) {
        const id = `wrong-${i}`
        const c = yield* connectRaw(port, id, false, k.v)
        yield* c.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: id, qos: k.qos }] }, k.v))
        yield* waitFor(() => packetsOf(c, k.v).some((p) => p.cmd === "suback"), "SUBACK")
        const pub = yield* connectClient(url)
        yield* publish(pub, id, "m", { qos: k.qos })
        yield* waitFor(() => packetsOf(c, k.v).some((p) => p.cmd === "publish"), "the PUBLISH")
        const sent = packetsOf(c, k.v).find((p) => p.cmd === "publish") as mqttPacket.IPublishPacket
        yield* c.write(gen({ cmd: k.wrong, messageId: sent.messageId, ...(k.v === 5 ? { reasonCode: 0 } : {}) }, k.v))
        yield* c.waitClosed()
        if (k.v === 5) expect((packetsOf(c, 5).find((p) => p.cmd === "disconnect") as mqttPacket.IDisconnectPacket).reasonCode).toBe(0x82)
        // still in flight: resent with DUP to the session's next connection, and completed properly
        const again = yield* connectRaw(port, id, false, k.v)
        yield* waitFor(() => packetsOf(again, k.v).some((p) => p.cmd === "publish"), "the resent PUBLISH")
        const resent = packetsOf(again, k.v).find((p) => p.cmd === "publish") as mqttPacket.IPublishPacket
        expect([resent.messageId, resent.dup, resent.payload.toString()]).toEqual([sent.messageId, true, "m"])
      }
      // an acknowledgement for an id not in flight is not a reason to close (a late duplicate)
      const late = yield* connectRaw(port, "late", true)
      yield* late.write(gen({ cmd: "puback", messageId: 9 }))
      yield* late.write(gen({ cmd: "pubcomp", messageId: 9 }))
      yield* late.write(gen({ cmd: "pingreq" }))
      yield* waitFor(() => packetsOf(late).some((p) => p.cmd === "pingresp"), "PINGRESP")
      expect(late.closed()).toBe(false)
    })
  )

  it.scopedLive("MQTT 5: PUBREL for an unknown id gets PUBCOMP 0x92 (Packet Identifier not found)", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* connectRaw(port, "unknown-rel", true, 5)
      yield* c.write(gen({ cmd: "pubrel", messageId: 77 }, 5))
      yield* waitFor(() => packetsOf(c, 5).some((x) => x.cmd === "pubcomp"), "PUBCOMP")
      const comp = packetsOf(c, 5).find((x) => x.cmd === "pubcomp") as mqttPacket.IPubcompPacket
      expect(comp.messageId).toBe(77)
      expect(comp.reasonCode).toBe(0x92)
    })
  )

  it.scopedLive("queue_qos0_messages: QoS 0 is queued for an offline persistent session only when asked", () =>
    Effect.gen(function* () {
      for (const queueQos0Messages of [false, true]) {
        const { port, url } = yield* startBroker({ settings: { queueQos0Messages } })
        const first = yield* connectRaw(port, "q0", false)
        yield* first.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "z", qos: 0 }] }))
        yield* waitFor(() => packetsOf(first).some((p) => p.cmd === "suback"), "SUBACK")
        first.socket.destroy()
        yield* first.waitClosed()
        yield* settle(50)
        const pub = yield* connectClient(url)
        yield* publish(pub, "z", "zero", { qos: 0 })
        yield* settle(50)
        const again = yield* connectRaw(port, "q0", false)
        yield* settle(150)
        expect(packetsOf(again).filter((p) => p.cmd === "publish").length).toBe(queueQos0Messages ? 1 : 0)
      }
    })
  )
})
