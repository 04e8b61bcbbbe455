/**
 * MQTT 5 features end to end, on the wire (a raw client decides what to send
 * and when to acknowledge) and with MQTT.js v5; TestClock for expiry and will
 * delay.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import * as mqttPacket from "mqtt-packet"
import { collect, connectClient, packetsOf, publish, rawClient, settle, startBroker, subscribe, waitFor, type RawClient } from "./harness.js"

const gen = (packet: object) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: 5 })
const publishes = (c: RawClient) => packetsOf(c, 5).filter((p): p is mqttPacket.IPublishPacket => p.cmd === "publish")
const disconnectReason = (c: RawClient) => (packetsOf(c, 5).find((p) => p.cmd === "disconnect") as mqttPacket.IDisconnectPacket | undefined)?.reasonCode

const connect5 = (port: number, clientId: string, extra: Partial<mqttPacket.IConnectPacket> = {}) =>
  Effect.gen(function* () {
    const c = yield* rawClient(port)
    yield* c.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId, clean: true, keepalive: 0, ...extra }))
    yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "connack"), "CONNACK")
    return c
  })
const connack = (c: RawClient) => packetsOf(c, 5).find((p) => p.cmd === "connack") as mqttPacket.IConnackPacket
const sub5 = (c: RawClient, subscriptions: Array<mqttPacket.ISubscription>, properties?: object) =>
  Effect.gen(function* () {
    const before = packetsOf(c, 5).filter((p) => p.cmd === "suback").length
    yield* c.write(gen({ cmd: "subscribe", messageId: 100 + before, subscriptions, ...(properties ? { properties } : {}) }))
    yield* waitFor(() => packetsOf(c, 5).filter((p) => p.cmd === "suback").length > before, "SUBACK")
    return packetsOf(c, 5).filter((p) => p.cmd === "suback")[before] as mqttPacket.ISubackPacket
  })
const pub5 = (c: RawClient, topic: string, payload: string, extra: object = {}) =>
  c.write(gen({ cmd: "publish", topic, payload: Buffer.from(payload), qos: 0, retain: false, dup: false, ...extra }))

describe("MQTT 5", () => {
  it.scopedLive("CONNACK advertises what the broker supports, truthfully", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* connect5(port, "adv", { properties: { requestResponseInformation: true } })
      expect(connack(c).properties).toMatchObject({
        retainAvailable: true,
        sharedSubscriptionAvailable: true,
        subscriptionIdentifiersAvailable: true,
        wildcardSubscriptionAvailable: true,
        topicAliasMaximum: 10,
        receiveMaximum: 20,
        responseInformation: "response/adv"
      })
    })
  )

  it.scoped("Session Expiry Interval: the session outlives the connection for that long (TestClock)", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const c = yield* connect5(port, "exp", { clean: false, properties: { sessionExpiryInterval: 10 } })
      yield* sub5(c, [{ topic: "e", qos: 1 }])
      yield* c.write(gen({ cmd: "disconnect", reasonCode: 0 }))
      yield* c.waitClosed()
      yield* TestClock.adjust("9 seconds")
      expect(broker.stats().sessions).toBe(1)
      yield* TestClock.adjust("2 seconds")
      expect(broker.stats().sessions).toBe(0)
      // back after expiry: no session
      const again = yield* connect5(port, "exp", { clean: false, properties: { sessionExpiryInterval: 10 } })
      expect(connack(again).sessionPresent).toBe(false)
    })
  )

  it.scopedLive("Session Expiry Interval changed at DISCONNECT; 0 -> non-zero is a protocol error [MQTT-3.14.2-2]", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const c = yield* connect5(port, "shorten", { clean: false, properties: { sessionExpiryInterval: 600 } })
      yield* c.write(gen({ cmd: "disconnect", reasonCode: 0, properties: { sessionExpiryInterval: 0 } }))
      yield* c.waitClosed()
      yield* waitFor(() => broker.stats().sessions === 0, "the session to end with the connection")
      const bad = yield* connect5(port, "revive", { properties: { sessionExpiryInterval: 0 } })
      yield* bad.write(gen({ cmd: "disconnect", reasonCode: 0, properties: { sessionExpiryInterval: 60 } }))
      yield* bad.waitClosed()
      expect(disconnectReason(bad)).toBe(0x82)
    })
  )

  it.scoped("Message Expiry Interval: reduced by the time waited; expired messages never delivered, retained ones included", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* connect5(port, "late", { clean: false, properties: { sessionExpiryInterval: 3600 } })
      yield* sub5(c, [{ topic: "x/#", qos: 1 }])
      c.socket.destroy()
      yield* c.waitClosed()
      const p = yield* connect5(port, "pub")
      yield* pub5(p, "x/short", "short", { qos: 1, messageId: 1, properties: { messageExpiryInterval: 5 } })
      yield* pub5(p, "x/long", "long", { qos: 1, messageId: 2, properties: { messageExpiryInterval: 100 } })
      yield* pub5(p, "x/kept", "kept", { qos: 0, retain: true, properties: { messageExpiryInterval: 30 } })
      yield* waitFor(() => packetsOf(p, 5).filter((x) => x.cmd === "puback").length === 2, "PUBACKs")
      yield* TestClock.adjust("10 seconds")
      const back = yield* connect5(port, "late", { clean: false, properties: { sessionExpiryInterval: 3600 } })
      yield* waitFor(() => publishes(back).length >= 1, "the queued message")
      yield* settle(100)
      // x/short expired while queued; x/long waited 10 s of its 100
      expect(publishes(back).map((m) => [m.topic, m.properties?.messageExpiryInterval])).toEqual([["x/long", 90]])
      const early = yield* connect5(port, "early")
      yield* sub5(early, [{ topic: "x/kept", qos: 0 }])
      yield* waitFor(() => publishes(early).length === 1, "the retained message")
      expect(publishes(early)[0].properties?.messageExpiryInterval).toBe(20)
      yield* TestClock.adjust("25 seconds")
      const fresh = yield* connect5(port, "fresh")
      yield* sub5(fresh, [{ topic: "x/#", qos: 0 }])
      yield* settle(100)
      expect(publishes(fresh)).toEqual([]) // the retained message expired
    })
  )

  it.scopedLive("inbound topic aliases: set, used, and invalid ones refused (0x94, unknown 0x82)", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const sub = yield* connectClient(url, { protocolVersion: 5 })
      const got = collect(sub)
      yield* subscribe(sub, "alias/#", { qos: 0 })
      const c = yield* connect5(port, "aliaser")
      yield* pub5(c, "alias/long/topic", "first", { properties: { topicAlias: 3 } })
      yield* pub5(c, "", "second", { properties: { topicAlias: 3 } })
      yield* waitFor(() => got.length === 2, "both messages")
      expect(got.map((m) => [m.topic, m.payload])).toEqual([
        ["alias/long/topic", "first"],
        ["alias/long/topic", "second"]
      ])
      for (const [alias, topic, code] of [[0, "a", 0x94], [11, "a", 0x94], [5, "", 0x82]] as const) {
        const bad = yield* connect5(port, `bad-alias-${alias}`)
        yield* pub5(bad, topic, "x", { properties: { topicAlias: alias } })
        yield* bad.waitClosed()
        expect(disconnectReason(bad)).toBe(code)
        // the server's DISCONNECT says why in a Reason String
        expect((packetsOf(bad, 5).find((p) => p.cmd === "disconnect") as mqttPacket.IDisconnectPacket).properties?.reasonString).toMatch(/topic alias/)
      }
    })
  )

  it.scopedLive("outbound topic aliases for clients that allow them, bounded by their maximum", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const c = yield* connect5(port, "alias-out", { properties: { topicAliasMaximum: 1 } })
      yield* sub5(c, [{ topic: "o/#", qos: 0 }])
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      for (const t of ["o/a", "o/a", "o/b", "o/a"]) yield* publish(pub, t, t)
      yield* waitFor(() => publishes(c).length === 4, "4 messages")
      expect(publishes(c).map((m) => [m.topic, m.properties?.topicAlias])).toEqual([
        ["o/a", 1],
        ["", 1],
        ["o/b", undefined], // the one alias is taken: sent in full
        ["", 1]
      ])
    })
  )

  it.scopedLive("Receive Maximum: the client's bounds what is in flight to it; exceeding the broker's is DISCONNECT 0x93", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const c = yield* connect5(port, "rm1", { properties: { receiveMaximum: 1 } })
      yield* sub5(c, [{ topic: "rm", qos: 1 }])
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      for (let i = 0; i < 3; i++) yield* publish(pub, "rm", `m${i}`, { qos: 1 })
      yield* waitFor(() => publishes(c).length === 1, "one in flight")
      yield* settle(100)
      expect(publishes(c).length).toBe(1)
      yield* c.write(gen({ cmd: "puback", messageId: publishes(c)[0].messageId }))
      yield* waitFor(() => publishes(c).length === 2, "the next after PUBACK")

      const flood = yield* connect5(port, "flood")
      for (let i = 1; i <= 21; i++) yield* pub5(flood, "f", "x", { qos: 2, messageId: i })
      yield* flood.waitClosed()
      expect(disconnectReason(flood)).toBe(0x93)
    })
  )

  it.scopedLive("the client's Maximum Packet Size: larger messages are dropped for that client only", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const small = yield* connect5(port, "small", { properties: { maximumPacketSize: 64 } })
      yield* sub5(small, [{ topic: "size", qos: 1 }])
      const big = yield* connectClient(url, { protocolVersion: 5 })
      const bigGot = collect(big)
      yield* subscribe(big, "size", { qos: 1 })
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      yield* publish(pub, "size", "x".repeat(200), { qos: 1 })
      yield* publish(pub, "size", "fits", { qos: 1 })
      yield* waitFor(() => bigGot.length === 2 && publishes(small).length === 1, "deliveries")
      yield* settle(100)
      expect(publishes(small).map((m) => m.payload.toString())).toEqual(["fits"])
    })
  )

  it.scopedLive("the client's Maximum Packet Size bounds what the server sends: the CONNACK and failure acks lose what they may lose, and a client too small for any CONNACK is closed without one [MQTT-3.1.2-24] [MQTT-3.2.2-19]", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const sizes = (c: RawClient) => {
        const out: Array<number> = []
        const d = c.data()
        for (let i = 0; i < d.length; ) {
          let len = 0
          let mul = 1
          let j = i + 1
          for (;;) {
            len += (d[j] & 0x7f) * mul
            mul *= 128
            if ((d[j++] & 0x80) === 0) break
          }
          out.push(j - i + len)
          i = j + len
        }
        return out
      }
      // the whole CONNACK (19 bytes) does not fit in 12: the properties that repeat the defaults go
      const small = yield* connect5(port, "small12", { properties: { maximumPacketSize: 12 } })
      expect(sizes(small)[0]).toBeLessThanOrEqual(12)
      expect(connack(small).reasonCode).toBe(0)
      expect(connack(small).properties).toEqual({ topicAliasMaximum: 10, receiveMaximum: 20 })
      // a failure PUBACK keeps its reason code and loses its Reason String
      yield* small.write(gen({ cmd: "publish", topic: "p", payload: Buffer.from([0xff]), qos: 1, messageId: 7, retain: false, dup: false, properties: { payloadFormatIndicator: true } }))
      yield* waitFor(() => packetsOf(small, 5).some((p) => p.cmd === "puback"), "PUBACK")
      const puback = packetsOf(small, 5).find((p) => p.cmd === "puback") as mqttPacket.IPubackPacket
      expect(puback.reasonCode).toBe(0x99)
      expect(puback.properties?.reasonString).toBeUndefined()
      expect(Math.max(...sizes(small))).toBeLessThanOrEqual(12)
      // so does the DISCONNECT of a protocol error (a second CONNECT)
      yield* small.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "small12", clean: true, keepalive: 0 }))
      yield* small.waitClosed()
      expect(disconnectReason(small)).toBe(0x82)
      expect((packetsOf(small, 5).find((p) => p.cmd === "disconnect") as mqttPacket.IDisconnectPacket).properties?.reasonString).toBeUndefined()
      expect(Math.max(...sizes(small))).toBeLessThanOrEqual(12)
      // without a size, the same PUBACK says why
      const roomy = yield* connect5(port, "roomy")
      expect(connack(roomy).properties?.sharedSubscriptionAvailable).toBe(true)
      yield* roomy.write(gen({ cmd: "publish", topic: "p", payload: Buffer.from([0xff]), qos: 1, messageId: 7, retain: false, dup: false, properties: { payloadFormatIndicator: true } }))
      yield* waitFor(() => packetsOf(roomy, 5).some((p) => p.cmd === "puback"), "PUBACK")
      expect((packetsOf(roomy, 5).find((p) => p.cmd === "puback") as mqttPacket.IPubackPacket).properties?.reasonString).toBeDefined()

      // 10 bytes: even the smallest CONNACK (11) does not fit. Closed without one; no session is
      // taken and the will is not published
      const watcher = yield* connectClient(url, { protocolVersion: 5 })
      const wills = collect(watcher)
      yield* subscribe(watcher, "wills", { qos: 0 })
      const before = broker.stats().sessions
      const tiny = yield* rawClient(port)
      yield* tiny.write(
        gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "tiny", clean: true, keepalive: 0, properties: { maximumPacketSize: 10 }, will: { topic: "wills", payload: Buffer.from("w"), qos: 0, retain: false } })
      )
      yield* tiny.waitClosed()
      expect(tiny.data()).toHaveLength(0)
      yield* settle(100)
      expect(wills).toHaveLength(0)
      expect(broker.stats().sessions).toBe(before)

      // Retain Available false is no default: it stays, and the CONNACK is 13 bytes at least
      const noRetain = yield* startBroker({ settings: { retainAvailable: false } })
      const r13 = yield* connect5(noRetain.port, "r13", { properties: { maximumPacketSize: 13 } })
      expect(connack(r13).properties).toEqual({ retainAvailable: false, topicAliasMaximum: 10, receiveMaximum: 20 })
      const r12 = yield* rawClient(noRetain.port)
      yield* r12.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "r12", clean: true, keepalive: 0, properties: { maximumPacketSize: 12 } }))
      yield* r12.waitClosed()
      expect(r12.data()).toHaveLength(0)
    })
  )

  it.scopedLive("shared subscriptions: each message to one member, round robin; a leaving member's unacknowledged messages go to another", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const a = yield* connectClient(url, { protocolVersion: 5, clientId: "a" })
      const b = yield* connectClient(url, { protocolVersion: 5, clientId: "b" })
      const gotA = collect(a)
      const gotB = collect(b)
      yield* subscribe(a, "$share/g/jobs/#", { qos: 1 })
      yield* subscribe(b, "$share/g/jobs/#", { qos: 1 })
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      for (let i = 0; i < 10; i++) yield* publish(pub, "jobs/x", `j${i}`, { qos: 1 })
      yield* waitFor(() => gotA.length + gotB.length === 10, "10 deliveries")
      expect(gotA.length).toBe(5)
      expect(gotB.length).toBe(5)
      expect(new Set([...gotA, ...gotB].map((m) => m.payload)).size).toBe(10)

      // a raw member that never acknowledges, then leaves
      const lazy = yield* connect5(port, "lazy")
      yield* sub5(lazy, [{ topic: "$share/g/jobs/#", qos: 1 }])
      for (let i = 10; i < 16; i++) yield* publish(pub, "jobs/x", `j${i}`, { qos: 1 })
      yield* waitFor(() => gotA.length + gotB.length + publishes(lazy).length === 16, "16 deliveries")
      const held = publishes(lazy).map((m) => m.payload.toString())
      expect(held.length).toBeGreaterThan(0)
      lazy.socket.destroy()
      yield* waitFor(() => gotA.length + gotB.length === 16, "the lazy member's messages to move to the others")
      expect(new Set([...gotA, ...gotB].map((m) => m.payload)).size).toBe(16)
    })
  )

  it.scopedLive("subscription identifiers: every matching identifier on the one copy", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const c = yield* connect5(port, "ids")
      yield* sub5(c, [{ topic: "s/+", qos: 0 }], { subscriptionIdentifier: 7 })
      yield* sub5(c, [{ topic: "s/#", qos: 1 }], { subscriptionIdentifier: 9 })
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      yield* publish(pub, "s/x", "x", { qos: 1 })
      yield* waitFor(() => publishes(c).length === 1, "one copy")
      yield* settle(100)
      expect(publishes(c).length).toBe(1)
      expect([publishes(c)[0].properties?.subscriptionIdentifier].flat().sort()).toEqual([7, 9])
    })
  )

  it.scopedLive("No Local, Retain As Published, Retain Handling 0 / 1 / 2", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      yield* publish(pub, "rh/t", "retained", { qos: 1, retain: true })
      const c = yield* connect5(port, "opts")
      yield* sub5(c, [{ topic: "rh/t", qos: 0, rh: 2 }])
      yield* settle(100)
      expect(publishes(c).length).toBe(0) // RH 2: no retained message
      yield* sub5(c, [{ topic: "rh/+", qos: 0, rh: 1 }])
      yield* waitFor(() => publishes(c).length === 1, "RH 1 on a new subscription")
      yield* sub5(c, [{ topic: "rh/+", qos: 0, rh: 1 }])
      yield* settle(100)
      expect(publishes(c).length).toBe(1) // RH 1, existing subscription: none
      yield* sub5(c, [{ topic: "rh/#", qos: 0, rh: 0, rap: true }])
      yield* waitFor(() => publishes(c).length === 2, "RH 0")
      // Retain As Published keeps the flag on live delivery (rh/# has rap; rh/t and rh/+ do not: merged into one copy)
      yield* publish(pub, "rh/t", "live", { qos: 0, retain: true })
      yield* waitFor(() => publishes(c).length === 3, "live")
      expect(publishes(c)[2].retain).toBe(true)
      // No Local: not sent back to its publisher
      const self = yield* connect5(port, "self")
      yield* sub5(self, [{ topic: "nl", qos: 0, nl: true }])
      yield* pub5(self, "nl", "mine")
      const other = yield* connectClient(url, { protocolVersion: 5 })
      yield* publish(other, "nl", "theirs")
      yield* waitFor(() => publishes(self).length === 1, "the other client's message")
      expect(publishes(self)[0].payload.toString()).toBe("theirs")
    })
  )

  it.scoped("Will Delay Interval: sent after the delay, not if the client returns in time, at once when the session ends", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const wills: Array<string> = []
      const watcher = { clientId: "watch", online: () => true, deliver: (m: { payload: Buffer }) => void wills.push(m.payload.toString()) }
      broker.core.router.subscribe(watcher as never, "will/#", { qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: undefined })
      const will = (payload: string, delay: number) => ({ topic: "will/x", payload: Buffer.from(payload), qos: 0, retain: false, properties: { willDelayInterval: delay } })

      const a = yield* connect5(port, "delayed", { clean: false, will: will("delayed", 5), properties: { sessionExpiryInterval: 60 } } as never)
      a.socket.destroy()
      yield* a.waitClosed()
      yield* waitFor(() => broker.stats().clientsConnected === 0, "the disconnect")
      yield* TestClock.adjust("4 seconds")
      expect(wills).toEqual([])
      yield* TestClock.adjust("2 seconds")
      expect(wills).toEqual(["delayed"])

      const b = yield* connect5(port, "returns", { clean: false, will: will("never", 5), properties: { sessionExpiryInterval: 60 } } as never)
      b.socket.destroy()
      yield* b.waitClosed()
      yield* waitFor(() => broker.stats().clientsConnected === 0, "the disconnect")
      yield* TestClock.adjust("2 seconds")
      yield* connect5(port, "returns", { clean: false, properties: { sessionExpiryInterval: 60 } })
      yield* TestClock.adjust("10 seconds")
      expect(wills).toEqual(["delayed"])

      const c = yield* connect5(port, "short-session", { will: will("session ended", 30), properties: { sessionExpiryInterval: 2 } } as never)
      c.socket.destroy()
      yield* c.waitClosed()
      yield* waitFor(() => broker.stats().clientsConnected === 1, "the disconnect")
      yield* TestClock.adjust("3 seconds")
      expect(wills).toEqual(["delayed", "session ended"]) // the session ended before the delay

      const d = yield* connect5(port, "no-session", { will: will("at once", 30) } as never)
      d.socket.destroy()
      yield* waitFor(() => wills.length === 3, "the will of a session that ends with its connection")
      expect(wills[2]).toBe("at once")
    })
  )

  it.scopedLive("request / response: Response Topic and Correlation Data reach the responder and back", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker()
      const responder = yield* connectClient(url, { protocolVersion: 5 })
      responder.on("message", (_t, payload, packet) => {
        const p = packet.properties!
        responder.publish(p.responseTopic!, `re: ${payload}`, { properties: { correlationData: p.correlationData } })
      })
      yield* subscribe(responder, "service/echo", { qos: 1 })
      const requester = yield* connectClient(url, { protocolVersion: 5 })
      const got = collect(requester)
      yield* subscribe(requester, "replies/me", { qos: 1 })
      yield* publish(requester, "service/echo", "ping", { qos: 1, properties: { responseTopic: "replies/me", correlationData: Buffer.from("42") } })
      yield* waitFor(() => got.length === 1, "the response")
      expect(got[0].payload).toBe("re: ping")
      expect(Buffer.from(got[0].properties!.correlationData as Buffer).toString()).toBe("42")
    })
  )
})
