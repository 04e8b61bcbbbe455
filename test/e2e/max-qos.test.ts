/**
 * `max_qos` (a listener option, as in Mosquitto): the highest QoS the
 * listener's clients may use. MQTT 5 clients are told in the CONNACK's
 * Maximum QoS [MQTT-3.2.2-9]; a PUBLISH above it ends the connection
 * (v5: DISCONNECT 0x9B) [MQTT-3.2.2-11], a will above it refuses the CONNECT
 * (v5: CONNACK 0x9B) [MQTT-3.2.2-12]; a SUBSCRIBE is granted at most the
 * maximum, so deliveries never go above it. Other listeners keep QoS 2.
 * Checked with raw sockets (exact bytes), MQTT.js and mosquitto_pub / _sub.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { Broker } from "../../src/Broker.js"
import { Log } from "../../src/log/Log.js"
import { freePort } from "../support/processes.js"
import { collect, connectClient, packetsOf, rawClient, run, subscribe, waitFor } from "./harness.js"

const gen = (packet: object, protocolVersion: 4 | 5) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion })
const connect = (clientId: string, protocolVersion: 4 | 5, extra: object = {}) =>
  gen({ cmd: "connect", protocolId: "MQTT", protocolVersion, clientId, clean: true, keepalive: 0, ...extra }, protocolVersion)

/** One listener with `max_qos 1` and one without. */
const brokerWithMaxQos1 = Effect.gen(function* () {
  const log = new Log(["all"], [], false, 500)
  const limited = yield* freePort
  const open = yield* freePort
  const broker = yield* Broker.make({
    listeners: [
      { port: limited, host: "127.0.0.1", maxQos: 1 },
      { port: open, host: "127.0.0.1" }
    ],
    log
  }).pipe(Effect.orDie)
  return { broker, limited, open, log }
})

describe("max_qos 1 on a listener", () => {
  it.scopedLive("MQTT 5: CONNACK says Maximum QoS 1; a QoS 2 PUBLISH gets DISCONNECT 0x9B and a log line; the other listener allows QoS 2", () =>
    Effect.gen(function* () {
      const b = yield* brokerWithMaxQos1
      const c = yield* rawClient(b.limited)
      yield* c.write(connect("v5", 5))
      yield* waitFor(() => packetsOf(c, 5).length === 1, "CONNACK")
      const connack = packetsOf(c, 5)[0] as mqttPacket.IConnackPacket
      expect(connack.reasonCode).toBe(0)
      expect(connack.properties?.maximumQoS).toBe(1)
      // QoS 1 is fine
      yield* c.write(gen({ cmd: "publish", topic: "q/1", payload: Buffer.from("one"), qos: 1, messageId: 1, dup: false, retain: false }, 5))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "puback"), "PUBACK")
      yield* c.write(gen({ cmd: "publish", topic: "q/2", payload: Buffer.from("two"), qos: 2, messageId: 2, dup: false, retain: false }, 5))
      yield* c.waitClosed()
      const disconnect = packetsOf(c, 5).find((p) => p.cmd === "disconnect") as mqttPacket.IDisconnectPacket
      expect(disconnect.reasonCode).toBe(0x9b)
      expect(b.log.recent.some((l) => l.includes("v5") && l.includes("above max_qos 1"))).toBe(true)
      // the listener without max_qos: no Maximum QoS property, QoS 2 accepted
      const o = yield* rawClient(b.open)
      yield* o.write(connect("v5-open", 5))
      yield* waitFor(() => packetsOf(o, 5).length === 1, "CONNACK")
      expect((packetsOf(o, 5)[0] as mqttPacket.IConnackPacket).properties?.maximumQoS).toBeUndefined()
      yield* o.write(gen({ cmd: "publish", topic: "q/2", payload: Buffer.from("two"), qos: 2, messageId: 2, dup: false, retain: false }, 5))
      yield* waitFor(() => packetsOf(o, 5).some((p) => p.cmd === "pubrec"), "PUBREC")
      expect(o.closed()).toBe(false)
    })
  )

  it.scopedLive("MQTT 3.1.1: a QoS 2 PUBLISH closes the connection (no code exists for it); a will at QoS 2 is refused, v5 with CONNACK 0x9B", () =>
    Effect.gen(function* () {
      const b = yield* brokerWithMaxQos1
      const c = yield* rawClient(b.limited)
      yield* c.write(connect("v4", 4))
      yield* waitFor(() => packetsOf(c, 4).length === 1, "CONNACK")
      expect((packetsOf(c, 4)[0] as mqttPacket.IConnackPacket).returnCode).toBe(0)
      yield* c.write(gen({ cmd: "publish", topic: "q/2", payload: Buffer.from("two"), qos: 2, messageId: 2, dup: false, retain: false }, 4))
      yield* c.waitClosed()
      expect(packetsOf(c, 4).map((p) => p.cmd)).toEqual(["connack"])

      const will = { topic: "w/x", payload: Buffer.from("bye"), qos: 2, retain: false }
      const w5 = yield* rawClient(b.limited)
      yield* w5.write(connect("w5", 5, { will }))
      yield* w5.waitClosed()
      expect(packetsOf(w5, 5).map((p) => [p.cmd, (p as mqttPacket.IConnackPacket).reasonCode])).toEqual([["connack", 0x9b]])
      const w4 = yield* rawClient(b.limited)
      yield* w4.write(connect("w4", 4, { will }))
      yield* w4.waitClosed()
      expect(packetsOf(w4, 4)).toEqual([])
      // a will at QoS 1 is accepted
      const ok = yield* rawClient(b.limited)
      yield* ok.write(connect("w1", 4, { will: { ...will, qos: 1 } }))
      yield* waitFor(() => packetsOf(ok, 4).length === 1, "CONNACK")
      expect((packetsOf(ok, 4)[0] as mqttPacket.IConnackPacket).returnCode).toBe(0)
    })
  )

  it.scopedLive("SUBSCRIBE at QoS 2 is granted QoS 1 and a QoS 2 message arrives at QoS 1 (MQTT.js), while the open listener grants 2", () =>
    Effect.gen(function* () {
      const b = yield* brokerWithMaxQos1
      const sub = yield* connectClient(`mqtt://127.0.0.1:${b.limited}`, { protocolVersion: 5 })
      const got = collect(sub)
      const granted = yield* subscribe(sub, "d/#", { qos: 2 })
      expect(granted.map((g) => g.qos)).toEqual([1])
      const other = yield* connectClient(`mqtt://127.0.0.1:${b.open}`, { protocolVersion: 5 })
      expect((yield* subscribe(other, "d/#", { qos: 2 })).map((g) => g.qos)).toEqual([2])
      const r = yield* run("mosquitto_pub", ["-p", String(b.open), "-t", "d/x", "-m", "exactly once", "-q", "2"])
      expect(r.code).toBe(0)
      yield* waitFor(() => got.length === 1, "the delivery")
      expect(got[0].qos).toBe(1)
    })
  )

  it.scopedLive("mosquitto_pub: v5 reads Maximum QoS and refuses to send -q 2; 3.1.1 -q 2 is disconnected; -q 1 is delivered", () =>
    Effect.gen(function* () {
      const b = yield* brokerWithMaxQos1
      const watcher = yield* connectClient(`mqtt://127.0.0.1:${b.open}`, { protocolVersion: 5 })
      const got = collect(watcher)
      yield* subscribe(watcher, "m/#", { qos: 2 })
      // libmosquitto 2.0.11 checks the CONNACK's Maximum QoS itself (and exits 0 after saying so)
      const v5 = yield* run("mosquitto_pub", ["-p", String(b.limited), "-V", "mqttv5", "-t", "m/x", "-m", "two", "-q", "2"])
      expect(v5.stderr).toContain("QoS not supported")
      const v4 = yield* run("mosquitto_pub", ["-p", String(b.limited), "-t", "m/x", "-m", "two", "-q", "2"])
      expect(v4.code).not.toBe(0)
      expect(v4.stderr).toContain("connection was lost")
      const good = yield* run("mosquitto_pub", ["-p", String(b.limited), "-V", "mqttv5", "-t", "m/x", "-m", "one", "-q", "1"])
      expect(good.code).toBe(0)
      yield* waitFor(() => got.length === 1, "the QoS 1 message")
      yield* Effect.sleep("100 millis")
      expect(got.map((m) => m.payload)).toEqual(["one"])
    })
  )
})
