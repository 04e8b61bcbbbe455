/**
 * The core broker end to end with MQTT.js (3.1.1 and 5.0) on real sockets.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Stream } from "effect"
import type { MessageProperties } from "../../src/session/Message.js"
import { collect, connectClient, connectCollecting, publish, settle, startBroker, subscribe, waitFor } from "./harness.js"

describe("core broker with MQTT.js", () => {
  for (const protocolVersion of [4, 5] as const) {
    describe(`MQTT ${protocolVersion === 4 ? "3.1.1" : "5.0"}`, () => {
      it.scopedLive("QoS 0, 1 and 2 both ways; delivered QoS = min(published, granted) [MQTT-3.8.4-6]", () =>
        Effect.gen(function* () {
          const { url } = yield* startBroker()
          const sub = yield* connectClient(url, { protocolVersion, clientId: "sub" })
          const pub = yield* connectClient(url, { protocolVersion, clientId: "pub" })
          const got = collect(sub)
          const granted = yield* subscribe(sub, { "q/0": { qos: 0 }, "q/1": { qos: 1 }, "q/2": { qos: 2 } } as never)
          expect(granted.map((g) => g.qos)).toEqual([0, 1, 2])
          for (const pq of [0, 1, 2] as const) {
            for (const t of ["q/0", "q/1", "q/2"]) {
              yield* publish(pub, t, `${t}@${pq}`, { qos: pq })
            }
          }
          yield* waitFor(() => got.length === 9, "9 messages")
          const byPayload = new Map(got.map((m) => [m.payload, m.qos]))
          for (const pq of [0, 1, 2]) {
            for (const gq of [0, 1, 2]) expect(byPayload.get(`q/${gq}@${pq}`)).toBe(Math.min(pq, gq))
          }
        })
      )

      it.scopedLive("retained messages: stored, replaced, sent on subscribe with retain set, cleared by empty payload [MQTT-3.3.1-5..10]", () =>
        Effect.gen(function* () {
          const { url } = yield* startBroker()
          const pub = yield* connectClient(url, { protocolVersion })
          yield* publish(pub, "r/a", "first", { qos: 1, retain: true })
          yield* publish(pub, "r/a", "second", { qos: 1, retain: true })
          yield* publish(pub, "r/b", "bee", { qos: 0, retain: true })
          const sub = yield* connectClient(url, { protocolVersion })
          const got = collect(sub)
          yield* subscribe(sub, "r/#", { qos: 1 })
          yield* waitFor(() => got.length === 2, "2 retained")
          expect(got.map((m) => [m.topic, m.payload, m.retain]).sort()).toEqual([
            ["r/a", "second", true],
            ["r/b", "bee", true]
          ])
          // live forwarding clears the retain flag (v3/v4, and v5 without Retain As Published)
          yield* publish(pub, "r/a", "live", { qos: 1, retain: true })
          yield* waitFor(() => got.length === 3, "live message")
          expect(got[2]).toMatchObject({ payload: "live", retain: false })
          // an empty retained payload clears it
          yield* publish(pub, "r/a", "", { qos: 1, retain: true })
          const late = yield* connectClient(url, { protocolVersion })
          const lateGot = collect(late)
          yield* subscribe(late, "r/#", { qos: 1 })
          yield* waitFor(() => lateGot.length >= 1, "retained r/b")
          yield* settle(100)
          expect(lateGot.map((m) => m.topic)).toEqual(["r/b"])
        })
      )

      it.scopedLive("overlapping subscriptions deliver one copy at the highest granted QoS [MQTT-3.3.5-1]", () =>
        Effect.gen(function* () {
          const { url } = yield* startBroker()
          const sub = yield* connectClient(url, { protocolVersion })
          const got = collect(sub)
          yield* subscribe(sub, "o/+", { qos: 0 })
          yield* subscribe(sub, "o/#", { qos: 2 })
          yield* subscribe(sub, "o/x", { qos: 1 })
          const pub = yield* connectClient(url, { protocolVersion })
          yield* publish(pub, "o/x", "once", { qos: 2 })
          yield* waitFor(() => got.length >= 1, "the message")
          yield* settle(150)
          expect(got.length).toBe(1)
          expect(got[0].qos).toBe(2)
        })
      )

      it.scopedLive("a repeated subscription replaces the old one; unsubscribe stops delivery [MQTT-3.8.4-3]", () =>
        Effect.gen(function* () {
          const { url } = yield* startBroker()
          const sub = yield* connectClient(url, { protocolVersion })
          const got = collect(sub)
          yield* subscribe(sub, "rep", { qos: 2 })
          yield* subscribe(sub, "rep", { qos: 0 })
          const pub = yield* connectClient(url, { protocolVersion })
          yield* publish(pub, "rep", "a", { qos: 2 })
          yield* waitFor(() => got.length === 1, "one message")
          expect(got[0].qos).toBe(0)
          yield* Effect.tryPromise(() => sub.unsubscribeAsync("rep"))
          yield* publish(pub, "rep", "b", { qos: 1 })
          yield* settle(150)
          expect(got.length).toBe(1)
        })
      )

      it.scopedLive("a will is published when the client dies, not after DISCONNECT [MQTT-3.1.2-8], [MQTT-3.1.2-10]", () =>
        Effect.gen(function* () {
          const { url } = yield* startBroker()
          const watcher = yield* connectClient(url, { protocolVersion })
          const got = collect(watcher)
          yield* subscribe(watcher, "will/#", { qos: 1 })
          const dying = yield* connectClient(url, {
            protocolVersion,
            clientId: "dying",
            will: { topic: "will/dying", payload: Buffer.from("gone"), qos: 1, retain: true }
          })
          dying.stream.destroy() // no DISCONNECT: the socket just dies
          yield* waitFor(() => got.length === 1, "the will")
          expect(got[0]).toMatchObject({ topic: "will/dying", payload: "gone", qos: 1 })
          // will retain honoured: a late subscriber gets it retained
          const late = yield* connectClient(url, { protocolVersion })
          const lateGot = collect(late)
          yield* subscribe(late, "will/dying", { qos: 1 })
          yield* waitFor(() => lateGot.length === 1, "retained will")
          expect(lateGot[0].retain).toBe(true)

          const polite = yield* connectClient(url, {
            protocolVersion,
            clientId: "polite",
            will: { topic: "will/polite", payload: Buffer.from("never"), qos: 0, retain: false }
          })
          yield* Effect.promise(() => polite.endAsync())
          yield* settle(200)
          expect(got.map((m) => m.topic)).toEqual(["will/dying"])
        })
      )

      it.scopedLive("a persistent session keeps subscriptions and queues QoS 1 / 2 while offline; QoS 0 is not queued by default", () =>
        Effect.gen(function* () {
          const { url } = yield* startBroker()
          const persistent = protocolVersion === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false }
          const first = yield* connectClient(url, { protocolVersion, clientId: "keeper", ...persistent })
          yield* subscribe(first, "queue/#", { qos: 2 })
          yield* Effect.promise(() => first.endAsync())
          const pub = yield* connectClient(url, { protocolVersion })
          yield* publish(pub, "queue/1", "one", { qos: 1 })
          yield* publish(pub, "queue/0", "zero", { qos: 0 })
          yield* publish(pub, "queue/2", "two", { qos: 2 })
          const again = yield* connectCollecting(url, { protocolVersion, clientId: "keeper", ...persistent })
          expect(again.sessionPresent).toBe(true)
          yield* waitFor(() => again.got.length === 2, "2 queued messages")
          yield* settle(100)
          expect(again.got.map((m) => [m.payload, m.qos])).toEqual([["one", 1], ["two", 2]])
          // a clean session starts afresh: nothing queued, no session present
          yield* Effect.promise(() => again.client.endAsync())
          const clean = yield* connectCollecting(url, { protocolVersion, clientId: "keeper", clean: true })
          expect(clean.sessionPresent).toBe(false)
        })
      )
    })
  }

  it.scopedLive("offline queue is delivered on reconnect, in order, with session present [MQTT-3.2.2-2]", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker()
      const first = yield* connectClient(url, { clientId: "keeper", clean: false })
      yield* subscribe(first, "queue/#", { qos: 2 })
      yield* Effect.promise(() => first.endAsync())
      const pub = yield* connectClient(url)
      // QoS 1 only: MQTT.js hands a QoS 2 message to the application at PUBREL, which reorders mixed QoS
      for (let i = 0; i < 30; i++) yield* publish(pub, "queue/x", `m${i}`, { qos: 1 })
      yield* publish(pub, "queue/x", "zero", { qos: 0 })
      const again = yield* connectCollecting(url, { clientId: "keeper", clean: false })
      expect(again.sessionPresent).toBe(true)
      yield* waitFor(() => again.got.length === 30, "30 queued messages")
      yield* settle(100)
      expect(again.got.map((m) => m.payload)).toEqual(Array.from({ length: 30 }, (_, i) => `m${i}`))
    })
  )

  it.scopedLive("session takeover closes the old connection and keeps the session [MQTT-3.1.4-3]", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker()
      const watcher = yield* connectClient(url)
      const wills = collect(watcher)
      yield* subscribe(watcher, "will/t", { qos: 0 })
      const old = yield* connectClient(url, { clientId: "twin", clean: false, will: { topic: "will/t", payload: Buffer.from("old died"), qos: 0, retain: false } })
      let oldClosed = false
      old.on("close", () => (oldClosed = true))
      yield* subscribe(old, "take/over", { qos: 1 })
      const fresh = yield* connectClient(url, { clientId: "twin", clean: false })
      yield* waitFor(() => oldClosed, "the old connection to close")
      // the will of the taken-over connection is published
      yield* waitFor(() => wills.length === 1, "the old connection's will")
      // the session (and its subscription) carried over
      const got = collect(fresh)
      const pub = yield* connectClient(url)
      yield* publish(pub, "take/over", "still subscribed", { qos: 1 })
      yield* waitFor(() => got.length === 1, "delivery to the new connection")
    })
  )

  it.scopedLive("MQTT 5: an empty client id gets an assigned id 'auto-<uuid>' [MQTT-3.2.2-16]", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker()
      const { connack } = yield* connectCollecting(url, { protocolVersion: 5, clientId: "" })
      expect(connack.properties?.assignedClientIdentifier).toMatch(/^auto-[0-9a-f-]{36}$/)
    })
  )

  it.scopedLive("MQTT 5: PUBACK says 0x10 when nobody subscribed; properties are carried through", () =>
    Effect.gen(function* () {
      const { url } = yield* startBroker()
      const pub = yield* connectClient(url, { protocolVersion: 5 })
      const acks: Array<number | undefined> = []
      pub.on("packetreceive", (p) => {
        if (p.cmd === "puback") acks.push(p.reasonCode)
      })
      yield* publish(pub, "nobody/here", "x", { qos: 1 }).pipe(Effect.ignore) // MQTT.js reports 0x10 as an error
      yield* waitFor(() => acks.length === 1, "PUBACK")
      expect(acks[0]).toBe(0x10)
      const sub = yield* connectClient(url, { protocolVersion: 5 })
      const got = collect(sub)
      yield* subscribe(sub, "props", { qos: 1 })
      yield* publish(pub, "props", "p", {
        qos: 1,
        properties: {
          userProperties: { a: "1", b: ["2", "3"] },
          contentType: "text/plain",
          responseTopic: "reply/here",
          correlationData: Buffer.from("corr"),
          payloadFormatIndicator: true
        }
      })
      yield* waitFor(() => got.length === 1, "the message")
      expect(got[0].properties).toMatchObject({
        userProperties: { a: "1", b: ["2", "3"] },
        contentType: "text/plain",
        responseTopic: "reply/here",
        payloadFormatIndicator: true
      })
      expect(Buffer.from(got[0].properties!.correlationData as Buffer).toString()).toBe("corr")
    })
  )

  it.scopedLive("wildcard filters do not match $ topics; $SYS/# does [MQTT-4.7.2-1]", () =>
    Effect.gen(function* () {
      const { url, broker } = yield* startBroker()
      const sub = yield* connectClient(url)
      const got = collect(sub)
      yield* subscribe(sub, "#", { qos: 0 })
      yield* subscribe(sub, "+/info", { qos: 0 })
      yield* broker.publish({ topic: "$SYS/info", payload: "sys" })
      yield* broker.publish({ topic: "plain/info", payload: "plain" })
      yield* waitFor(() => got.length >= 1, "plain")
      yield* settle(100)
      expect(got.map((m) => m.topic)).toEqual(["plain/info"])
      yield* subscribe(sub, "$SYS/#", { qos: 0 })
      yield* broker.publish({ topic: "$SYS/info", payload: "sys" })
      yield* waitFor(() => got.length === 2, "$SYS message")
    })
  )

  it.scopedLive("in-process API: a topic or filter with a control character or a non-character fails with InvalidTopic, as a client's PUBLISH is refused (Mosquitto's clients would take it for a malformed packet); such properties, or a Response Topic with a wildcard, fail with InvalidProperties", () =>
    Effect.gen(function* () {
      const { url, broker } = yield* startBroker()
      const sub = yield* connectClient(url)
      const got = collect(sub)
      yield* subscribe(sub, "#", { qos: 0 })
      for (const topic of ["app/a\u0001b", "app/\u007f", "app/\u0085", "app/\ufdd0", "app/\uffff", "app/\ud83f\udfff"]) {
        const refused = yield* Effect.flip(broker.publish({ topic, payload: "x" }))
        expect(refused._tag).toBe("InvalidTopic")
        const refusedFilter = yield* Effect.flip(Stream.runDrain(broker.subscribe(`${topic}/#`)))
        expect(refusedFilter._tag).toBe("InvalidTopic")
      }
      // and the strings of the v5 properties, which go to subscribers as they are
      const bad: Array<MessageProperties> = [
        { responseTopic: "reply/+" },
        { responseTopic: "reply/\u0007" },
        { contentType: "text/\u0000" },
        { userProperties: { "a\u001fb": "x" } },
        { userProperties: { a: ["ok", "\ufffe"] } }
      ]
      for (const properties of bad) {
        const refused = yield* Effect.flip(broker.publish({ topic: "app/p", payload: "x", properties }))
        expect(refused._tag).toBe("InvalidProperties")
      }
      // their neighbours are fine
      expect(yield* broker.publish({ topic: "app/\u00a0\ufdf0\ufffd", payload: "ok", properties: { responseTopic: "reply/\u00a0", contentType: "text/plain", userProperties: { a: ["\ufffd", "b"] } } })).toBe(1)
      yield* waitFor(() => got.length === 1, "the valid publish")
      expect(got.map((m) => m.topic)).toEqual(["app/\u00a0\ufdf0\ufffd"])
    })
  )

  it.scopedLive("in-process API: publish reaches MQTT clients; subscribe is a Stream of client publishes", () =>
    Effect.gen(function* () {
      const { url, broker } = yield* startBroker()
      const fiber = yield* broker.subscribe("app/#").pipe(Stream.take(2), Stream.runCollect, Effect.fork)
      yield* settle(50)
      const client = yield* connectClient(url)
      const got = collect(client)
      yield* subscribe(client, "app/out", { qos: 1 })
      yield* publish(client, "app/in", "from client", { qos: 1 })
      yield* publish(client, "app/in", "again", { qos: 0 })
      const received = yield* Fiber.join(fiber)
      expect(Chunk.toReadonlyArray(received).map((m) => m.payload.toString())).toEqual(["from client", "again"])
      const n = yield* broker.publish({ topic: "app/out", payload: "from app", qos: 1 })
      expect(n).toBe(1)
      yield* waitFor(() => got.length === 1, "in-process publish")
      expect(got[0].payload).toBe("from app")
    })
  )
})
