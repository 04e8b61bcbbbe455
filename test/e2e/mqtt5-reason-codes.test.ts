/**
 * Every protocol error Midge can detect in an MQTT 5 client, answered on the
 * wire with the reason code the specification gives it (§2.4, Table 2-6) —
 * one case per code and cause — and the broker goes on serving its other
 * clients. Raw sockets decide exactly which bytes go out; MQTT.js v5 where a
 * real client shows what a user sees (Reason String and User Properties of
 * a refusal).
 *
 * 0x9B QoS not supported (a listener's `max_qos`) is in max-qos.test.ts.
 * Codes Midge never sends, because it supports what they refuse: 0x9E / 0xA1 / 0xA2 shared subscriptions /
 * subscription identifiers / wildcard subscriptions not supported (all
 * available, and advertised so) — the last case checks they are granted.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, type Layer, Scope, TestClock } from "effect"
import type { MqttClient } from "mqtt"
import mqtt from "mqtt"
import * as mqttPacket from "mqtt-packet"
import { Broker, type BrokerOptions } from "../../src/Broker.js"
import { Authentication, type AuthResult, Authorization, allowAllAcl } from "../../src/security/Auth.js"
import { type AuthStepResult, EnhancedAuthentication } from "../../src/security/EnhancedAuth.js"
import { packetsOf, rawClient, startBroker, waitFor, type RawClient } from "./harness.js"

const gen = (packet: object) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: 5 })
const find = <C extends mqttPacket.Packet["cmd"]>(c: RawClient, cmd: C) =>
  packetsOf(c, 5).filter((p) => p.cmd === cmd) as Array<Extract<mqttPacket.Packet, { cmd: C }>>

const CONNECT = (clientId: string, extra: object = {}) =>
  gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId, clean: true, keepalive: 0, ...extra })

/** a connected v5 raw client */
const connect5 = (port: number, clientId: string, extra: object = {}) =>
  Effect.gen(function* () {
    const c = yield* rawClient(port)
    yield* c.write(CONNECT(clientId, extra))
    yield* waitFor(() => find(c, "connack").length === 1, "CONNACK")
    expect(find(c, "connack")[0].reasonCode).toBe(0)
    return c
  })

/** the CONNACK a CONNECT gets, and that the connection is then closed */
const connackFor = (port: number, connect: Buffer) =>
  Effect.gen(function* () {
    const c = yield* rawClient(port)
    yield* c.write(connect)
    yield* c.waitClosed()
    const connack = find(c, "connack")
    expect(connack).toHaveLength(1)
    return connack[0]
  })

/** A v5 varint */
const varint = (n: number): Array<number> => {
  const out: Array<number> = []
  do {
    let d = n % 128
    n = Math.floor(n / 128)
    if (n > 0) d |= 0x80
    out.push(d)
  } while (n > 0)
  return out
}
const str = (s: string | Array<number>): Array<number> => {
  const b = typeof s === "string" ? [...Buffer.from(s)] : s
  return [b.length >> 8, b.length & 0xff, ...b]
}
/** a PUBLISH built byte by byte: topic, packet id (QoS > 0), raw property bytes, payload */
const rawPublish = (o: { topic: string | Array<number>; qos?: number; id?: number; props?: Array<number>; payload?: Array<number>; flags?: number }) => {
  const qos = o.qos ?? 0
  const body = [...str(o.topic), ...(qos > 0 ? [(o.id ?? 1) >> 8, (o.id ?? 1) & 0xff] : []), ...varint((o.props ?? []).length), ...(o.props ?? []), ...(o.payload ?? [0x78])]
  return Buffer.from([0x30 | (qos << 1) | (o.flags ?? 0), ...varint(body.length), ...body])
}
/** a SUBSCRIBE built byte by byte */
const rawSubscribe = (props: Array<number>, entries: Array<[string, number]>, flags = 0x02) => {
  const body = [0, 1, ...varint(props.length), ...props, ...entries.flatMap(([t, o]) => [...str(t), o])]
  return Buffer.from([0x80 | flags, ...varint(body.length), ...body])
}

/**
 * The heart of most cases: a connected v5 client sends `bad`; the broker answers
 * DISCONNECT `code` (with a Reason String) and closes that connection only — a
 * bystander connected before still gets a message published after.
 */
const expectDisconnect = (bad: Buffer, code: number, options: Omit<BrokerOptions, "listeners" | "log"> = {}, connectExtra: object = {}) =>
  Effect.gen(function* () {
    const { port } = yield* startBroker(options)
    const bystander = yield* connect5(port, "bystander")
    yield* bystander.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "health", qos: 0 }] }))
    yield* waitFor(() => find(bystander, "suback").length === 1, "SUBACK")
    const c = yield* connect5(port, "offender", connectExtra)
    yield* c.write(bad)
    yield* c.waitClosed()
    const disconnects = find(c, "disconnect")
    expect(disconnects.map((d) => d.reasonCode)).toEqual([code])
    expect(disconnects[0].properties?.reasonString).toEqual(expect.any(String))
    const other = yield* connect5(port, "other")
    yield* other.write(gen({ cmd: "publish", topic: "health", payload: Buffer.from("ok"), qos: 0, retain: false, dup: false }))
    yield* waitFor(() => find(bystander, "publish").length === 1, "the bystander to be served")
    expect(bystander.closed()).toBe(false)
  })

/** the ack a connected client gets for `packet` (the connection stays up) */
const ackFor = <C extends mqttPacket.Packet["cmd"]>(port: number, packet: Buffer, cmd: C, setup: Array<Buffer> = [], connectExtra: object = {}) =>
  Effect.gen(function* () {
    const c = yield* connect5(port, "acked", connectExtra)
    for (const s of setup) yield* c.write(s)
    yield* c.write(packet)
    yield* waitFor(() => find(c, cmd).length >= 1, cmd)
    expect(c.closed()).toBe(false)
    return find(c, cmd)[0]
  })

describe("0x81 Malformed Packet", () => {
  it.scopedLive("a Remaining Length longer than four bytes (§1.5.5)", () => expectDisconnect(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), 0x81))

  it.scopedLive("an unknown property identifier (§2.2.2.2)", () => expectDisconnect(rawPublish({ topic: "t", props: [0x7f, 0x00] }), 0x81))

  it.scopedLive("ill-formed UTF-8 in a topic name [MQTT-1.5.4-1]", () => expectDisconnect(rawPublish({ topic: [0x61, 0xc0, 0xaf] }), 0x81))

  it.scopedLive("U+0000 in a topic name [MQTT-1.5.4-2]", () => expectDisconnect(rawPublish({ topic: [0x61, 0x00, 0x62] }), 0x81))

  it.scopedLive("reserved flag bits: PUBREL with flags 0000 [MQTT-2.2.2-2]", () => expectDisconnect(Buffer.from([0x60, 0x02, 0x00, 0x01]), 0x81))

  it.scopedLive("reserved flag bits: SUBSCRIBE with flags 0000 [MQTT-3.8.1-1]", () => expectDisconnect(rawSubscribe([], [["a", 0]], 0x00), 0x81))

  it.scopedLive("a PUBLISH with both QoS bits set [MQTT-3.3.1-4]", () => expectDisconnect(rawPublish({ topic: "t", qos: 3, id: 1 }), 0x81))

  it.scopedLive("reserved bits of the subscription options set [MQTT-3.8.3-5]", () => expectDisconnect(rawSubscribe([], [["a", 0xc0]]), 0x81))
})

describe("0x82 Protocol Error", () => {
  it.scopedLive("a second CONNECT [MQTT-3.1.0-2]", () => expectDisconnect(CONNECT("again"), 0x82))

  it.scopedLive("a property included twice: Payload Format Indicator (§3.3.2.3.2)", () =>
    expectDisconnect(rawPublish({ topic: "t", props: [0x01, 0x01, 0x01, 0x01] }), 0x82)
  )

  it.scopedLive("a property included twice: Content Type (§3.3.2.3.9)", () =>
    expectDisconnect(rawPublish({ topic: "t", props: [0x03, ...str("a/b"), 0x03, ...str("c/d")] }), 0x82)
  )

  it.scopedLive("a Subscription Identifier in a client's PUBLISH [MQTT-3.3.4-6]", () => expectDisconnect(rawPublish({ topic: "t", props: [0x0b, 0x05] }), 0x82))

  it.scopedLive("a Subscription Identifier of 0 (§3.8.2.1.2)", () => expectDisconnect(rawSubscribe([0x0b, 0x00], [["a", 0]]), 0x82))

  it.scopedLive("a SUBSCRIBE without any topic filter [MQTT-3.8.3-2]", () => expectDisconnect(rawSubscribe([], []), 0x82))

  it.scopedLive("Retain Handling 3 in the subscription options (§3.8.3.1)", () => expectDisconnect(rawSubscribe([], [["a", 0x30]]), 0x82))

  it.scopedLive("No Local on a shared subscription [MQTT-3.8.3-4]", () => expectDisconnect(rawSubscribe([], [["$share/g/a", 0x04]]), 0x82))

  it.scopedLive("an empty topic name without a Topic Alias (§3.3.4)", () => expectDisconnect(rawPublish({ topic: "" }), 0x82))

  it.scopedLive("a Topic Alias the client never set (§3.3.4)", () => expectDisconnect(rawPublish({ topic: "", props: [0x23, 0x00, 0x05] }), 0x82))

  it.scopedLive("a QoS 1 PUBLISH with packet identifier 0 [MQTT-2.2.1-3]", () => expectDisconnect(rawPublish({ topic: "t", qos: 1, id: 0 }), 0x82))

  it.scopedLive("Session Expiry Interval set at DISCONNECT after 0 at CONNECT [MQTT-3.14.2-2]", () =>
    expectDisconnect(gen({ cmd: "disconnect", reasonCode: 0, properties: { sessionExpiryInterval: 30 } }), 0x82)
  )

  it.scopedLive("an AUTH packet without the CONNECT's Authentication Method (§4.12)", () =>
    expectDisconnect(gen({ cmd: "auth", reasonCode: 0x19, properties: { authenticationMethod: "OTHER" } }), 0x82)
  )
})

describe("topic, flow and size errors", () => {
  it.scopedLive("0x90 Topic Name invalid: a wildcard in a PUBLISH topic [MQTT-3.3.2-2]", () => expectDisconnect(rawPublish({ topic: "a/+" }), 0x90))

  it.scopedLive("0x93 Receive Maximum exceeded: more QoS 2 flows open than the broker's Receive Maximum (§3.3.4)", () =>
    expectDisconnect(
      Buffer.concat(Array.from({ length: 3 }, (_, i) => rawPublish({ topic: "t", qos: 2, id: i + 1 }))),
      0x93,
      { settings: { maxInflightMessages: 2 } }
    )
  )

  it.scopedLive("0x94 Topic Alias invalid: alias 0 (§3.3.2.3.4)", () => expectDisconnect(rawPublish({ topic: "t", props: [0x23, 0x00, 0x00] }), 0x94))

  it.scopedLive("0x94 Topic Alias invalid: above the Topic Alias Maximum of CONNACK (§3.3.2.3.4)", () =>
    expectDisconnect(rawPublish({ topic: "t", props: [0x23, 0x00, 0x0b] }), 0x94)
  )

  it.scopedLive("0x95 Packet too large: over the Maximum Packet Size of CONNACK, judged from the fixed header (§3.2.2.3.6)", () =>
    expectDisconnect(Buffer.from([0x30, 0xd0, 0x0f]), 0x95, { settings: { maxPacketSize: 1000 } })
  )

  it.scopedLive("0x9A Retain not supported: a retained PUBLISH when CONNACK said Retain Available 0 (§3.2.2.3.5)", () =>
    expectDisconnect(rawPublish({ topic: "t", flags: 0x01 }), 0x9a, { settings: { retainAvailable: false } })
  )
})

describe("the broker's own reasons to end a connection", () => {
  it.scoped("0x8D Keep Alive timeout: 1.5 × the keepalive without a packet [MQTT-3.1.2-22] (TestClock)", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const quiet = yield* connect5(port, "quiet", { keepalive: 10 })
      const chatty = yield* connect5(port, "chatty", { keepalive: 10 })
      for (let i = 0; i < 4; i++) {
        yield* chatty.write(gen({ cmd: "pingreq" }))
        yield* waitFor(() => find(chatty, "pingresp").length === i + 1, "PINGRESP")
        yield* TestClock.adjust("5 seconds")
      }
      yield* quiet.waitClosed()
      expect(find(quiet, "disconnect").map((d) => d.reasonCode)).toEqual([0x8d])
      expect(chatty.closed()).toBe(false)
    })
  )

  it.scopedLive("0x8E Session taken over: a second connection with the same client id [MQTT-3.1.4-3]", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const first = yield* connect5(port, "twin")
      const second = yield* connect5(port, "twin")
      yield* first.waitClosed()
      expect(find(first, "disconnect").map((d) => d.reasonCode)).toEqual([0x8e])
      expect(second.closed()).toBe(false)
    })
  )

  it.scopedLive("0x98 Administrative action: disconnectClient of the embedding API, with its Reason String", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const c = yield* connect5(port, "kicked")
      expect(yield* broker.disconnectClient("kicked", undefined, "maintenance")).toBe(true)
      yield* c.waitClosed()
      expect(find(c, "disconnect").map((d) => [d.reasonCode, d.properties?.reasonString])).toEqual([[0x98, "maintenance"]])
    })
  )

  it.scopedLive("0x8B Server shutting down: every v5 client is told when the broker stops", () =>
    Effect.gen(function* () {
      const brokerScope = yield* Scope.make()
      const { port } = yield* startBroker().pipe(Scope.extend(brokerScope))
      const c = yield* connect5(port, "stopping")
      yield* Scope.close(brokerScope, Exit.void)
      yield* c.waitClosed()
      expect(find(c, "disconnect").map((d) => d.reasonCode)).toEqual([0x8b])
    })
  )
})

describe("reason codes on acknowledgements (the connection stays up)", () => {
  it.scopedLive("0x10 No matching subscribers on PUBACK and PUBREC", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      expect((yield* ackFor(port, rawPublish({ topic: "nobody", qos: 1, id: 7 }), "puback")).reasonCode).toBe(0x10)
      expect((yield* ackFor(port, rawPublish({ topic: "nobody", qos: 2, id: 8 }), "pubrec")).reasonCode).toBe(0x10)
    })
  )

  it.scopedLive("0x92 Packet Identifier not found: PUBREL and PUBREC for an unknown id (§4.3.3)", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const pubcomp = yield* ackFor(port, gen({ cmd: "pubrel", messageId: 42 }), "pubcomp")
      expect([pubcomp.messageId, pubcomp.reasonCode]).toEqual([42, 0x92])
      const pubrel = yield* ackFor(port, gen({ cmd: "pubrec", messageId: 43 }), "pubrel")
      expect([pubrel.messageId, pubrel.reasonCode]).toEqual([43, 0x92])
    })
  )

  it.scopedLive("0x99 Payload format invalid: Payload Format Indicator 1 with a payload that is not UTF-8 (§3.3.2.3.2)", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* connect5(port, "sink")
      yield* c.write(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "pfi", qos: 1 }] }))
      yield* waitFor(() => find(c, "suback").length === 1, "SUBACK")
      const bad = yield* ackFor(port, rawPublish({ topic: "pfi", qos: 1, id: 5, props: [0x01, 0x01], payload: [0xff, 0xfe] }), "puback")
      expect(bad.reasonCode).toBe(0x99)
      const good = yield* ackFor(port, rawPublish({ topic: "pfi", qos: 1, id: 6, props: [0x01, 0x01], payload: [...Buffer.from("héllo")] }), "puback")
      expect(good.reasonCode).toBe(0)
      yield* waitFor(() => find(c, "publish").length === 1, "the valid message")
      expect(find(c, "publish").map((p) => p.payload.toString())).toEqual(["héllo"]) // the invalid one was not forwarded
    })
  )

  it.scopedLive("0x97 Quota exceeded: over memory_limit, PUBACK says so and the message is dropped", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker({ settings: { memoryLimit: 1 } })
      expect((yield* ackFor(port, rawPublish({ topic: "t", qos: 1, id: 3 }), "puback")).reasonCode).toBe(0x97)
    })
  )

  it.scopedLive("0x8F Topic Filter invalid on SUBACK (a malformed $share/ form); 0x11 No subscription existed on UNSUBACK", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const suback = yield* ackFor(port, gen({ cmd: "subscribe", messageId: 2, subscriptions: [{ topic: "$share/g", qos: 0 }, { topic: "ok/#", qos: 1 }] }), "suback")
      expect(suback.granted).toEqual([0x8f, 1])
      const unsuback = yield* ackFor(port, gen({ cmd: "unsubscribe", messageId: 3, unsubscriptions: ["never"] }), "unsuback")
      expect(unsuback.granted).toEqual([0x11])
    })
  )

  it.scopedLive("0x87 Not authorized on SUBACK and PUBACK / PUBREC when the Authorization service denies", () =>
    Effect.gen(function* () {
      const denyPrivate = Authorization.layer(() => ({
        ...allowAllAcl,
        canPublish: (t) => !t.startsWith("private/"),
        canSubscribe: (f) => !f.startsWith("private/")
      }))
      const broker = yield* Broker.make({ listeners: [{ port: 0, host: "127.0.0.1" }] }).pipe(Effect.provide(denyPrivate), Effect.orDie)
      const port = broker.listeners[0].port
      const suback = yield* ackFor(port, gen({ cmd: "subscribe", messageId: 2, subscriptions: [{ topic: "private/x", qos: 1 }, { topic: "public/x", qos: 1 }] }), "suback")
      expect(suback.granted).toEqual([0x87, 1])
      expect((yield* ackFor(port, rawPublish({ topic: "private/x", qos: 1, id: 4 }), "puback")).reasonCode).toBe(0x87)
      expect((yield* ackFor(port, rawPublish({ topic: "private/x", qos: 2, id: 5 }), "pubrec")).reasonCode).toBe(0x87)
    })
  )

  it.scopedLive("never 0x9E / 0xA1 / 0xA2: shared, wildcard and identified subscriptions are granted, as CONNACK advertises", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* connect5(port, "features")
      expect(find(c, "connack")[0].properties).toMatchObject({
        sharedSubscriptionAvailable: true,
        wildcardSubscriptionAvailable: true,
        subscriptionIdentifiersAvailable: true
      })
      yield* c.write(gen({ cmd: "subscribe", messageId: 9, properties: { subscriptionIdentifier: 12 }, subscriptions: [{ topic: "$share/g/a/#", qos: 2 }, { topic: "+/b", qos: 1 }] }))
      yield* waitFor(() => find(c, "suback").length === 1, "SUBACK")
      expect(find(c, "suback")[0].granted).toEqual([2, 1])
    })
  )
})

describe("CONNACK reason codes", () => {
  it.scopedLive("0x85 Client Identifier not valid: an empty client id where allow_zero_length_clientid is false", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker({ settings: { allowZeroLengthClientid: false } })
      expect((yield* connackFor(port, CONNECT(""))).reasonCode).toBe(0x85)
    })
  )

  it.scopedLive("0x87 Not authorized: an anonymous client where allow_anonymous is false", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker({ settings: { allowAnonymous: false } })
      expect((yield* connackFor(port, CONNECT("anon"))).reasonCode).toBe(0x87)
    })
  )

  it.scopedLive("0x8C Bad authentication method: an Authentication Method nobody understands", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      expect((yield* connackFor(port, CONNECT("m", { properties: { authenticationMethod: "KERBEROS" } }))).reasonCode).toBe(0x8c)
    })
  )

  it.scopedLive("0x84 Unsupported Protocol Version: a level the broker does not speak gets the 3.1.1 CONNACK 0x01 [MQTT-3.1.2-2]", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const bytes = CONNECT("future")
      bytes[bytes.indexOf(Buffer.from("MQTT")) + 4] = 6
      const c = yield* rawClient(port)
      yield* c.write(bytes)
      yield* c.waitClosed()
      // the client's level is unknown, so the answer is in the oldest format every client reads (as Mosquitto)
      expect([...c.data()]).toEqual([0x20, 0x02, 0x00, 0x01])
    })
  )
})

// ---------------------------------------------------------------------------
// Reason String and User Properties from the authentication services (MQTT.js v5)

/** Connect MQTT.js v5 and return the CONNACK as received (refused or not) */
const connackSeenByMqttJs = (url: string, options: mqtt.IClientOptions) =>
  Effect.acquireRelease(
    Effect.async<{ client: MqttClient; connack: mqttPacket.IConnackPacket }>((resume) => {
      const client = mqtt.connect(url, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, ...options })
      client.on("error", () => {})
      client.on("packetreceive", (packet) => {
        if (packet.cmd === "connack") resume(Effect.succeed({ client, connack: packet }))
      })
    }),
    ({ client }) => Effect.promise(() => client.endAsync(true).catch(() => undefined))
  )

describe("Reason String and User Properties on refusals, from the authentication services", () => {
  const Tenants = Authentication.layer((request) =>
    Effect.succeed<AuthResult>(
      request.username === "alice"
        ? { ok: true as const, username: "alice", userProperties: { tenant: "acme", plan: ["gold", "eu"] } }
        : request.username === "mallory"
          ? { ok: false as const, reason: "bad-credentials" as const, reasonString: "password expired", userProperties: { "reset-at": "https://example.test/reset" } }
          : { ok: false as const, reason: "not-authorised" as const }
    )
  )
  const brokerWith = <S>(layer: Layer.Layer<S>) =>
    Effect.gen(function* () {
      const broker = yield* Broker.make({ listeners: [{ port: 0, host: "127.0.0.1" }] }).pipe(Effect.provide(layer), Effect.orDie)
      return `mqtt://127.0.0.1:${broker.listeners[0].port}`
    })

  it.scopedLive("Authentication: a refusal's Reason String and User Properties reach the client on CONNACK; an acceptance's User Properties too", () =>
    Effect.gen(function* () {
      const url = yield* brokerWith(Tenants)
      const refused = yield* connackSeenByMqttJs(url, { username: "mallory", password: "x" })
      expect(refused.connack.reasonCode).toBe(0x86)
      expect(refused.connack.properties).toMatchObject({ reasonString: "password expired", userProperties: { "reset-at": "https://example.test/reset" } })
      const plain = yield* connackSeenByMqttJs(url, { username: "bob", password: "x" })
      expect(plain.connack.reasonCode).toBe(0x87)
      expect(plain.connack.properties?.reasonString).toBeUndefined() // nothing said unless the service says it
      const accepted = yield* connackSeenByMqttJs(url, { username: "alice", password: "x" })
      expect(accepted.connack.reasonCode).toBe(0)
      expect(accepted.connack.properties?.userProperties).toEqual({ tenant: "acme", plan: ["gold", "eu"] })
      expect(accepted.client.connected).toBe(true)
    })
  )

  it.scopedLive("Authentication: a 3.1.1 client refused by the same service gets the plain CONNACK 0x04", () =>
    Effect.gen(function* () {
      const url = yield* brokerWith(Tenants)
      const refused = yield* connackSeenByMqttJs(url, { protocolVersion: 4, username: "mallory", password: "x" })
      expect(refused.connack.returnCode).toBe(0x04)
    })
  )

  it.scopedLive("EnhancedAuthentication: a Failure's reason and User Properties on CONNACK, and on the DISCONNECT of a failed re-authentication", () =>
    Effect.gen(function* () {
      const Token = EnhancedAuthentication.layer({
        methods: ["TOKEN"],
        step: (req) =>
          Effect.succeed<AuthStepResult>(
            req.data?.toString() === "valid"
              ? { _tag: "Success" as const, userProperties: { session: "s-1" } }
              : { _tag: "Failure" as const, reasonCode: 0x87, reason: "token revoked", userProperties: { "retry-after": "60" } }
          )
      })
      const url = yield* brokerWith(Token)
      const auth = (data: string) => ({ properties: { authenticationMethod: "TOKEN", authenticationData: Buffer.from(data) } })
      const refused = yield* connackSeenByMqttJs(url, auth("stale"))
      expect(refused.connack.reasonCode).toBe(0x87)
      expect(refused.connack.properties).toMatchObject({ reasonString: "token revoked", userProperties: { "retry-after": "60" } })
      const ok = yield* connackSeenByMqttJs(url, auth("valid"))
      expect(ok.connack.properties?.userProperties).toEqual({ session: "s-1" })
      // re-authentication with a revoked token: DISCONNECT with the same reason and properties
      const disconnect = yield* Effect.async<mqttPacket.IDisconnectPacket>((resume) => {
        ok.client.on("packetreceive", (p) => {
          if (p.cmd === "disconnect") resume(Effect.succeed(p))
        })
        ok.client.stream.write(gen({ cmd: "auth", reasonCode: 0x19, properties: { authenticationMethod: "TOKEN", authenticationData: Buffer.from("stale") } }))
      })
      expect(disconnect.reasonCode).toBe(0x87)
      expect(disconnect.properties).toMatchObject({ reasonString: "token revoked", userProperties: { "retry-after": "60" } })
    })
  )
})
