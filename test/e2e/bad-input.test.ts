/**
 * Bad input closes only the offending connection — with a CONNACK return code
 * or (v5) a DISCONNECT reason code where the protocol has one — and the broker
 * and its other clients carry on.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { collect, connectClient, publish, rawClient, startBroker, subscribe, waitFor } from "./harness.js"

const gen = (packet: object, protocolVersion: 3 | 4 | 5 = 4) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion })
const connect = (protocolVersion: 4 | 5, clientId = "bad", extra: object = {}) =>
  gen({ cmd: "connect", protocolId: "MQTT", protocolVersion, clientId, clean: true, keepalive: 0, ...extra }, protocolVersion)

/** A v5 DISCONNECT with this reason code (property length 0 or absent) */
const expectDisconnect = (code: number) => (reply: Buffer) => {
  expect(reply[0]).toBe(0xe0)
  expect(reply[2]).toBe(code)
}

/** A healthy client on the same broker publishes and receives. */
const stillHealthy = (url: string) =>
  Effect.gen(function* () {
    const a = yield* connectClient(url)
    const got = collect(a)
    yield* subscribe(a, "health", { qos: 1 })
    yield* publish(a, "health", "ok", { qos: 1 })
    yield* waitFor(() => got.length === 1, "a healthy round trip")
  })

const expectClosedAfter = (bytes: Buffer | Array<number>, check?: (reply: Buffer) => void, setup?: Buffer) =>
  Effect.gen(function* () {
    const { port, url } = yield* startBroker({ settings: { maxPacketSize: 1000 } })
    // another client, connected before the bad one, must survive
    const bystander = yield* connectClient(url, { clientId: "bystander" })
    const seen = collect(bystander)
    yield* subscribe(bystander, "bystander", { qos: 0 })
    const c = yield* rawClient(port)
    if (setup !== undefined) {
      yield* c.write(setup)
      yield* waitFor(() => c.data().length > 0, "CONNACK")
    }
    const before = c.data().length
    yield* c.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes))
    yield* c.waitClosed()
    check?.(c.data().subarray(before))
    yield* stillHealthy(url)
    const other = yield* connectClient(url)
    yield* publish(other, "bystander", "still here")
    yield* waitFor(() => seen.length === 1, "the bystander to receive")
  })

describe("bad input closes only that connection", () => {
  it.scopedLive("garbage bytes instead of CONNECT", () => expectClosedAfter([0xff, 0xff, 0xff, 0xff, 0x12, 0x34]))

  it.scopedLive("a wrong protocol name", () => {
    const bytes = connect(4)
    // "MQTT" -> "MQTX"
    const i = bytes.indexOf(Buffer.from("MQTT"))
    bytes[i + 3] = 0x58
    return expectClosedAfter(bytes)
  })

  it.scopedLive("an unacceptable protocol level gets CONNACK 0x01 [MQTT-3.1.2-2]", () => {
    const bytes = connect(4)
    const i = bytes.indexOf(Buffer.from("MQTT"))
    bytes[i + 4] = 6 // protocol level 6
    return expectClosedAfter(bytes, (reply) => expect([...reply]).toEqual([0x20, 0x02, 0x00, 0x01]))
  })

  it.scopedLive("MQTT 3.1.1: an empty client id without clean session gets CONNACK 0x02 [MQTT-3.1.3-8]", () =>
    // built by hand: mqtt-packet refuses to generate it
    expectClosedAfter([0x10, 12, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x00, 0, 0, 0, 0], (reply) => expect([...reply]).toEqual([0x20, 0x02, 0x00, 0x02]))
  )

  it.scopedLive("a will topic with a wildcard: 3.1 and 3.1.1 are closed without a CONNACK (they have no return code for it, as Debian's Mosquitto 2.0 does), v5 gets CONNACK 0x90", () =>
    Effect.gen(function* () {
      const will = { topic: "a/+", payload: Buffer.from("x"), qos: 0, retain: false }
      yield* expectClosedAfter(gen({ cmd: "connect", protocolId: "MQIsdp", protocolVersion: 3, clientId: "w3", clean: true, keepalive: 0, will }, 3), (reply) => expect(reply).toHaveLength(0))
      yield* expectClosedAfter(connect(4, "w4", { will: { ...will, topic: "a/#" } }), (reply) => expect(reply).toHaveLength(0))
      yield* expectClosedAfter(connect(5, "w5", { will }), (reply) => {
        expect(reply[0]).toBe(0x20)
        expect(reply[3]).toBe(0x90)
      })
    })
  )

  it.scopedLive("MQTT 5: Authentication Data without an Authentication Method gets CONNACK 0x82 [MQTT-3.1.2.11.10] (Debian's Mosquitto 2.0.11 accepts it and ignores the data)", () =>
    expectClosedAfter(connect(5, "ad", { properties: { authenticationData: Buffer.from([1, 2]) } }), (reply) => {
      expect(reply[0]).toBe(0x20)
      expect(reply[3]).toBe(0x82)
    })
  )

  it.scopedLive("PUBLISH before CONNECT [MQTT-3.1.0-1]", () =>
    expectClosedAfter(gen({ cmd: "publish", topic: "a", payload: Buffer.from("x"), qos: 0, retain: false, dup: false }))
  )

  it.scopedLive("a second CONNECT; v5 gets DISCONNECT 0x82 [MQTT-3.1.0-2]", () =>
    expectClosedAfter(connect(5), expectDisconnect(0x82), connect(5))
  )

  it.scopedLive("a remaining length over max_packet_size; v5 gets DISCONNECT 0x95", () =>
    // PUBLISH with remaining length 2000 (> 1000), body never sent: refused from the header alone
    expectClosedAfter([0x30, 0xd0, 0x0f], expectDisconnect(0x95), connect(5))
  )

  it.scopedLive("a remaining length of more than four bytes is malformed; v5 gets DISCONNECT 0x81", () =>
    expectClosedAfter([0x30, 0xff, 0xff, 0xff, 0xff, 0x01], expectDisconnect(0x81), connect(5))
  )

  it.scopedLive("a wildcard in a PUBLISH topic; v5 gets DISCONNECT 0x90 [MQTT-3.3.2-2]", () =>
    expectClosedAfter(
      gen({ cmd: "publish", topic: "a/+/b", payload: Buffer.from("x"), qos: 0, retain: false, dup: false }, 5),
      expectDisconnect(0x90),
      connect(5)
    )
  )

  it.scopedLive("MQTT 3.1.1: a wildcard in a PUBLISH topic closes the connection", () =>
    expectClosedAfter(gen({ cmd: "publish", topic: "a/#", payload: Buffer.from("x"), qos: 1, messageId: 1, retain: false, dup: false }), undefined, connect(4))
  )

  it.scopedLive("invalid UTF-8 in a PUBLISH topic; v5 gets DISCONNECT 0x81 [MQTT-1.5.3-1]", () => {
    const bytes = gen({ cmd: "publish", topic: "ab", payload: Buffer.from("x"), qos: 0, retain: false, dup: false }, 5)
    const i = bytes.indexOf(Buffer.from("ab"))
    bytes[i] = 0xc0 // an overlong / invalid sequence
    bytes[i + 1] = 0xaf
    return expectClosedAfter(bytes, expectDisconnect(0x81), connect(5))
  })

  it.scopedLive("a control character in a PUBLISH topic (as Mosquitto's mosquitto_validate_utf8); v5 gets DISCONNECT 0x81", () =>
    Effect.gen(function* () {
      const bell = gen({ cmd: "publish", topic: "a/\u0007", payload: Buffer.from("x"), qos: 0, retain: false, dup: false }, 5)
      yield* expectClosedAfter(bell, expectDisconnect(0x81), connect(5))
      const c1 = gen({ cmd: "publish", topic: "a/\u0085", payload: Buffer.from("x"), qos: 0, retain: false, dup: false })
      yield* expectClosedAfter(c1, undefined, connect(4))
    })
  )

  it.scopedLive("a control character in a CONNECT's client id: closed without a CONNACK, as Mosquitto", () =>
    expectClosedAfter(connect(4, "id\u001b"), (reply) => expect(reply).toHaveLength(0))
  )

  it.scopedLive("invalid UTF-8 in a SUBSCRIBE filter closes the connection", () => {
    const bytes = gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "ab", qos: 0 }] })
    const i = bytes.indexOf(Buffer.from("ab"))
    bytes[i] = 0xff
    return expectClosedAfter(bytes, undefined, connect(4))
  })

  it.scopedLive("a truncated packet followed by the client hanging up", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const c = yield* rawClient(port)
      yield* c.write(connect(4).subarray(0, 7))
      yield* Effect.sync(() => c.socket.end())
      yield* c.waitClosed()
      yield* stillHealthy(url)
    })
  )

  it.scopedLive("a QoS 3 PUBLISH is malformed", () =>
    expectClosedAfter([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01], undefined, connect(4))
  )
})
