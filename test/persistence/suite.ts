/**
 * The conformance suite every store passes (as Aedes' `abstract.js`): round
 * trips of every stored item across a restart, the order of deliveries, one
 * stored copy per message, deletes, expiry times, and a property test against
 * a naive model. `makeLayer` gives a fresh, empty store; building the same
 * layer value again is a restart of that store.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fc from "fast-check"
import type {
  StoredDelivery,
  StoredMessage,
  StoredSessionMeta,
  StoredSharedGroup,
  SubscriptionOptions
} from "../../src/persistence/Persistence.js"
import {
  Model,
  delivery,
  durable,
  fullProperties,
  loadOnce,
  meta,
  msg,
  plain,
  sessionOf,
  sub,
  withStore,
  type StoreLayer
} from "./fixtures.js"

/** The broker's message class stands in for "a revived object": it has methods and a private field. */
class LiveMessage implements StoredMessage {
  private frames: Array<Buffer> | undefined = undefined
  constructor(
    readonly topic: string,
    public payload: Buffer,
    readonly qos: 0 | 1 | 2,
    readonly retain: boolean,
    readonly properties: StoredMessage["properties"],
    readonly origin: string,
    readonly receivedAt: number
  ) {}
  cached(): number {
    return (this.frames ??= []).length
  }
}
const revive = (m: StoredMessage) => new LiveMessage(m.topic, m.payload, m.qos, m.retain, m.properties, m.origin, m.receivedAt)

// --- the property test's operations
type Op =
  | { op: "retainedSet"; m: number; empty: boolean }
  | { op: "sessionUpsert"; meta: StoredSessionMeta }
  | { op: "sessionDelete"; c: string }
  | { op: "subscriptionSet"; c: string; f: string; o: SubscriptionOptions }
  | { op: "subscriptionDelete"; c: string; f: string }
  | { op: "outboundQueue"; c: string; m: number; qos: 0 | 1 | 2; retain: boolean; ids: ReadonlyArray<number> | undefined; shared: StoredSharedGroup | undefined }
  | { op: "outboundSend"; c: string; id: number; m: number; qos: 0 | 1 | 2; retain: boolean; ids: ReadonlyArray<number> | undefined; shared: StoredSharedGroup | undefined }
  | { op: "outboundDequeue" | "outboundPubrec" | "outboundDone" | "inboundQos2Add" | "inboundQos2Release"; c: string; id: number }
  | { op: "outboundClear"; c: string }
  | { op: "restart" }
  | { op: "compact" }

const clientArb = fc.constantFrom("a", "b")
const idArb = fc.integer({ min: 0, max: 3 })
const qosArb = fc.constantFrom<0 | 1 | 2>(0, 1, 2)
const idsArb = fc.option(fc.array(fc.integer({ min: 1, max: 268_435_455 }), { maxLength: 3 }), { nil: undefined })
const sharedArb = fc.option(fc.record({ group: fc.constantFrom("g", "ü"), filter: fc.constantFrom("t/#", "+/1") }), { nil: undefined, freq: 3 })
const propsArb = fc.option(
  fc.record(
    {
      payloadFormatIndicator: fc.boolean(),
      messageExpiryInterval: fc.integer({ min: 0, max: 0xffffffff }),
      responseTopic: fc.string(),
      correlationData: fc.uint8Array({ maxLength: 8 }).map((a) => Buffer.from(a)),
      userProperties: fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.string(), fc.array(fc.string(), { maxLength: 3 })), { maxKeys: 3 }),
      contentType: fc.string()
    },
    { requiredKeys: [] }
  ),
  { nil: undefined }
)
const messageArb = fc
  .record({
    topic: fc.constantFrom("t/1", "t/2", "ü/ñ", "$SYS/x"),
    payload: fc.uint8Array({ minLength: 1, maxLength: 40 }).map((a) => Buffer.from(a)),
    qos: qosArb,
    retain: fc.boolean(),
    properties: propsArb,
    origin: fc.constantFrom("", "pub", "ü"),
    receivedAt: fc.integer({ min: 0, max: 2 ** 45 })
  })
  .map((m): StoredMessage => m)
const willArb = fc.option(
  fc.record({
    topic: fc.constantFrom("will/a", "will/ü"),
    payload: fc.uint8Array({ maxLength: 20 }).map((a) => Buffer.from(a)),
    qos: qosArb,
    retain: fc.boolean(),
    properties: propsArb,
    delayInterval: fc.integer({ min: 0, max: 0xffffffff })
  }),
  { nil: undefined }
)
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant("retainedSet" as const), m: fc.nat(5), empty: fc.boolean() }), weight: 2 },
  {
    arbitrary: fc.record({
      op: fc.constant("sessionUpsert" as const),
      meta: fc.record({
        clientId: clientArb,
        expiryInterval: fc.integer({ min: 0, max: 0xffffffff }),
        disconnectedAt: fc.option(fc.integer({ min: 0, max: 2 ** 45 }), { nil: undefined }),
        will: willArb
      })
    }),
    weight: 1
  },
  { arbitrary: fc.record({ op: fc.constant("sessionDelete" as const), c: clientArb }), weight: 1 },
  {
    arbitrary: fc.record({
      op: fc.constant("subscriptionSet" as const),
      c: clientArb,
      f: fc.constantFrom("t/#", "+/1", "a"),
      o: fc.record({
        qos: qosArb,
        noLocal: fc.boolean(),
        retainAsPublished: fc.boolean(),
        retainHandling: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
        subscriptionId: fc.option(fc.integer({ min: 1, max: 268_435_455 }), { nil: undefined })
      })
    }),
    weight: 2
  },
  { arbitrary: fc.record({ op: fc.constant("subscriptionDelete" as const), c: clientArb, f: fc.constantFrom("t/#", "+/1", "a") }), weight: 1 },
  {
    arbitrary: fc.record({
      op: fc.constant("outboundQueue" as const),
      c: clientArb,
      m: fc.nat(5),
      qos: qosArb,
      retain: fc.boolean(),
      ids: idsArb,
      shared: sharedArb
    }),
    weight: 5
  },
  {
    arbitrary: fc.record({
      op: fc.constant("outboundSend" as const),
      c: clientArb,
      id: idArb,
      m: fc.nat(5),
      qos: qosArb,
      retain: fc.boolean(),
      ids: idsArb,
      shared: sharedArb
    }),
    weight: 4
  },
  {
    arbitrary: fc.record({
      op: fc.constantFrom<"outboundDequeue" | "outboundPubrec" | "outboundDone" | "inboundQos2Add" | "inboundQos2Release">(
        "outboundDequeue",
        "outboundPubrec",
        "outboundDone",
        "inboundQos2Add",
        "inboundQos2Release"
      ),
      c: clientArb,
      id: idArb
    }),
    weight: 8
  },
  { arbitrary: fc.record({ op: fc.constant("outboundClear" as const), c: clientArb }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant("restart" as const) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant("compact" as const) }), weight: 1 }
)

export const persistenceSuite = (name: string, makeLayer: () => StoreLayer, options: { readonly propertyRuns: number }) =>
  describe(`persistence conformance: ${name}`, () => {
    it.live("an empty store loads empty", () =>
      Effect.gen(function* () {
        const snap = yield* loadOnce(makeLayer())
        expect(snap).toEqual({ retained: [], sessions: [] })
      })
    )

    it.live("retained messages: set, replace, clear with an empty payload [MQTT-3.3.1-10], v5 properties intact across a restart", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const a = msg("sensors/a", "1", { retain: true, qos: 2, properties: fullProperties })
        const b = msg("sensors/b", "2", { retain: true, qos: 0 })
        const c = msg("sensors/c", Buffer.alloc(70_000, 7), { retain: true })
        yield* withStore(layer, (s) =>
          Effect.gen(function* () {
            s.writer.retainedSet(a)
            s.writer.retainedSet(b)
            s.writer.retainedSet(c)
            s.writer.retainedSet(msg("sensors/b", "2 again", { retain: true })) // replaces [MQTT-3.3.1-5]
            s.writer.retainedSet(msg("sensors/c", "", { retain: true })) // clears
            s.writer.retainedSet(msg("never/set", "", { retain: true })) // clearing nothing
            expect(s.counts()).toEqual({ messages: 2, retained: 2, sessions: 0 })
          })
        )
        const snap = yield* loadOnce(layer)
        expect(plain(snap)).toEqual(plain({ retained: [a, msg("sensors/b", "2 again", { retain: true })], sessions: [] }))
        const props = snap.retained.find((m) => m.topic === "sensors/a")!.properties!
        expect(Object.prototype.hasOwnProperty.call(props.userProperties, "__proto__")).toBe(true)
        expect(Object.getPrototypeOf(props.userProperties)).toBe(Object.prototype)
      })
    )

    it.live("sessions: expiry interval, offline time, will with properties and delay; an upsert replaces; online is undefined", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const will = { topic: "bye/ü", payload: Buffer.from("gone"), qos: 1 as const, retain: true, properties: fullProperties, delayInterval: 30 }
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.sessionUpsert(meta("online", { expiryInterval: 60 }))
            s.writer.sessionUpsert(meta("offline", { expiryInterval: 10, disconnectedAt: 1_700_000_000_123, will }))
            s.writer.sessionUpsert(meta("forever", { expiryInterval: 0xffffffff, disconnectedAt: 5 }))
            s.writer.sessionUpsert(meta("online", { expiryInterval: 120 }))
          })
        )
        const snap = yield* loadOnce(layer)
        expect(snap.sessions.map((s) => s.clientId)).toEqual(["online", "offline", "forever"])
        expect(sessionOf(snap, "online")).toMatchObject({ expiryInterval: 120, disconnectedAt: undefined, will: undefined })
        expect(sessionOf(snap, "forever")).toMatchObject({ expiryInterval: 0xffffffff, disconnectedAt: 5 })
        const off = sessionOf(snap, "offline")!
        expect(off.disconnectedAt).toBe(1_700_000_000_123)
        expect(plain({ retained: [], sessions: [off] })).toEqual(
          plain({
            retained: [],
            sessions: [{ ...meta("offline", { expiryInterval: 10, disconnectedAt: 1_700_000_000_123, will }), subscriptions: new Map(), inflight: [], queue: [], inboundQos2: [] }]
          })
        )
      })
    )

    it.live("subscriptions: every option survives; a second SUBSCRIBE replaces [MQTT-3.8.4-3]; UNSUBSCRIBE deletes", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const rich = sub(2, { noLocal: true, retainAsPublished: true, retainHandling: 2, subscriptionId: 268_435_455 })
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.sessionUpsert(meta("c"))
            s.writer.subscriptionSet("c", "a/+/c", sub(0))
            s.writer.subscriptionSet("c", "#", sub(1, { retainHandling: 1, subscriptionId: 7 }))
            s.writer.subscriptionSet("c", "$share/g/x", rich)
            s.writer.subscriptionSet("c", "a/+/c", sub(1))
            s.writer.subscriptionDelete("c", "#")
            s.writer.subscriptionDelete("c", "not/there")
            s.writer.subscriptionDelete("nobody", "#")
          })
        )
        const snap = yield* loadOnce(layer)
        expect(snap.sessions).toHaveLength(1)
        expect([...sessionOf(snap, "c")!.subscriptions]).toEqual([
          ["a/+/c", sub(1)],
          ["$share/g/x", rich]
        ])
      })
    )

    it.live("queued deliveries come back in order [MQTT-4.6.0-6] with QoS, retain flag and subscription ids", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const deliveries: Array<StoredDelivery> = []
        for (let i = 0; i < 60; i++) {
          const qos = (i % 3) as 0 | 1 | 2
          const ids = i % 4 === 0 ? undefined : i % 4 === 1 ? [] : [i, i + 1]
          deliveries.push(delivery(msg(`q/${i}`, `m${i}`, { qos: 2 }), qos, ids, i % 5 === 0))
        }
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.sessionUpsert(meta("c", { disconnectedAt: 1 }))
            for (const d of deliveries) s.writer.outboundQueue("c", d)
          })
        )
        const snap = yield* loadOnce(layer)
        const c = sessionOf(snap, "c")!
        expect(c.inflight).toEqual([])
        expect(plain({ retained: [], sessions: [{ ...c, queue: c.queue }] })).toEqual(
          plain({ retained: [], sessions: [{ ...c, queue: deliveries }] })
        )
      })
    )

    it.live("in flight: sent, dequeued into flight, PUBREC → awaiting PUBCOMP, done; resend order kept [MQTT-4.4.0-1]", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const m = [0, 1, 2, 3, 4, 5].map((i) => msg(`f/${i}`, `p${i}`, { qos: 2 }))
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            const w = s.writer
            w.outboundSend("c", 10, delivery(m[0], 1))
            w.outboundSend("c", 11, delivery(m[1], 2, [3]))
            w.outboundQueue("c", delivery(m[2], 2))
            w.outboundQueue("c", delivery(m[3], 0))
            w.outboundQueue("c", delivery(m[4], 1))
            w.outboundQueue("c", delivery(m[5], 1))
            w.outboundPubrec("c", 11) // [MQTT-4.3.3-5] PUBREL sent, PUBCOMP awaited
            w.outboundPubrec("c", 10) // a QoS 1 delivery has no PUBREC: nothing changes
            w.outboundDequeue("c", 12) // m2 in flight as 12
            w.outboundDequeue("c", 0) // m3, QoS 0: delivered, gone
            w.outboundDequeue("c", 13) // m4 in flight as 13
            w.outboundDone("c", 10) // PUBACK
            w.outboundDone("c", 99) // unknown id: nothing
            w.outboundSend("c", 0, delivery(m[0], 1)) // not a packet id: ignored
            w.outboundSend("c", 14, delivery(m[0], 0)) // QoS 0 is never in flight: ignored
          })
        )
        const snap = yield* loadOnce(layer)
        const c = sessionOf(snap, "c")!
        expect(c.inflight.map((e) => [e.messageId, e.message.topic, e.qos, e.state, e.subscriptionIds])).toEqual([
          [11, "f/1", 2, "await-pubcomp", [3]],
          [12, "f/2", 2, "await-pubrec", undefined],
          [13, "f/4", 1, "await-puback", undefined]
        ])
        expect(c.queue.map((d) => d.message.topic)).toEqual(["f/5"])
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.outboundDone("c", 11) // PUBCOMP
            s.writer.outboundClear("c")
            expect(s.counts().messages).toBe(0)
          })
        )
        const after = sessionOf(yield* loadOnce(layer), "c")!
        expect(after.inflight).toEqual([])
        expect(after.queue).toEqual([])
      })
    )

    it.live("a delivery through a shared subscription keeps its group and filter, not the live group object [MQTT-4.8.2]", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const liveGroup = { group: "workers", filter: "jobs/#", members: [{ subscriber: "x" }], next: 3 }
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.outboundQueue("c", { ...delivery(msg("jobs/1", "a")), shared: liveGroup })
            s.writer.outboundSend("c", 9, { ...delivery(msg("jobs/2", "b"), 2), shared: liveGroup })
            s.writer.outboundQueue("c", delivery(msg("jobs/3", "c")))
            s.writer.outboundDequeue("c", 10)
          })
        )
        const c = sessionOf(yield* loadOnce(layer), "c")!
        expect(c.inflight.map((e) => [e.messageId, e.shared])).toEqual([
          [9, { group: "workers", filter: "jobs/#" }],
          [10, { group: "workers", filter: "jobs/#" }]
        ])
        expect(c.queue.map((d) => [d.message.topic, "shared" in d])).toEqual([["jobs/3", false]])
      })
    )

    it.live("inbound QoS 2 ids awaiting PUBREL survive a restart, so a resent PUBLISH is not delivered twice [MQTT-4.3.3-9]", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.inboundQos2Add("c", 1)
            s.writer.inboundQos2Add("c", 65535)
            s.writer.inboundQos2Add("c", 7)
            s.writer.inboundQos2Add("c", 7)
            s.writer.inboundQos2Release("c", 1)
            s.writer.inboundQos2Release("c", 2)
            s.writer.inboundQos2Add("c", 0) // not a packet id
          })
        )
        expect(sessionOf(yield* loadOnce(layer), "c")!.inboundQos2).toEqual([65535, 7])
      })
    )

    it.live("a message queued by many sessions and retained is stored once, and comes back as one object", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const shared = msg("news", Buffer.alloc(1000, 42), { retain: true, qos: 1 })
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.retainedSet(shared)
            for (const c of ["a", "b", "c", "d"]) s.writer.outboundQueue(c, delivery(shared, 1))
            s.writer.outboundSend("e", 1, delivery(shared, 1))
            expect(s.counts()).toEqual({ messages: 1, retained: 1, sessions: 5 })
          })
        )
        const snap = yield* withStore(layer, (s) =>
          Effect.gen(function* () {
            const loaded = yield* s.load(revive)
            expect(s.counts().messages).toBe(1)
            return loaded
          })
        )
        const one = snap.retained[0]
        expect(one).toBeInstanceOf(LiveMessage)
        for (const c of ["a", "b", "c", "d"]) expect(sessionOf(snap, c)!.queue[0].message).toBe(one)
        expect(sessionOf(snap, "e")!.inflight[0].message).toBe(one)
      })
    )

    it.live("a message nothing refers to any more is dropped; revived objects are recognised (no second copy)", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const m = msg("x", "y")
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.outboundQueue("a", delivery(m))
            s.writer.outboundQueue("b", delivery(m))
            s.writer.outboundDequeue("a", 0)
            expect(s.counts().messages).toBe(1)
          })
        )
        yield* withStore(layer, (s) =>
          Effect.gen(function* () {
            const snap = yield* s.load(revive)
            const live = sessionOf(snap, "b")!.queue[0].message
            s.writer.outboundQueue("c", delivery(live))
            s.writer.retainedSet(live.retain ? live : revive({ ...live, retain: true }))
            expect(s.counts().messages).toBe(2) // `live` once, plus the distinct retained copy
            s.writer.outboundDequeue("b", 0)
            s.writer.outboundDequeue("c", 0)
            expect(s.counts().messages).toBe(1)
          })
        )
        const snap = yield* loadOnce(layer)
        expect(snap.retained.map((x) => x.topic)).toEqual(["x"])
      })
    )

    it.live("deleting a session drops its subscriptions, deliveries and inbound ids; other sessions keep theirs", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const m = msg("t", "shared")
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.sessionUpsert(meta("gone"))
            s.writer.subscriptionSet("gone", "t", sub(1))
            s.writer.outboundQueue("gone", delivery(m))
            s.writer.outboundSend("gone", 5, delivery(msg("only-gone", "x")))
            s.writer.inboundQos2Add("gone", 9)
            s.writer.outboundQueue("stays", delivery(m))
            s.writer.sessionDelete("gone")
            s.writer.sessionDelete("never-was")
            expect(s.counts()).toEqual({ messages: 1, retained: 0, sessions: 1 })
          })
        )
        const snap = yield* loadOnce(layer)
        expect(snap.sessions.map((x) => x.clientId)).toEqual(["stays"])
        expect(sessionOf(snap, "stays")!.queue[0].message.payload.toString()).toBe("shared")
      })
    )

    it.live("expiry times: a message's expiry interval and receive time, a session's expiry interval and offline time", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        const m = msg("exp", "soon", { receivedAt: 1_700_000_123_456.5, properties: { messageExpiryInterval: 0xffffffff } })
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            s.writer.sessionUpsert(meta("c", { expiryInterval: 86_400, disconnectedAt: 1_700_000_200_000 }))
            s.writer.outboundQueue("c", delivery(m))
          })
        )
        const c = sessionOf(yield* loadOnce(layer), "c")!
        expect(c.queue[0].message.receivedAt).toBe(1_700_000_123_456.5)
        expect(c.queue[0].message.properties).toEqual({ messageExpiryInterval: 0xffffffff })
        expect([c.expiryInterval, c.disconnectedAt]).toEqual([86_400, 1_700_000_200_000])
      })
    )

    it.live("calls that change nothing create nothing (acks of unknown ids, dequeue of an empty queue, unknown clients)", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        yield* withStore(layer, (s) =>
          Effect.sync(() => {
            const w = s.writer
            w.outboundDequeue("x", 1)
            w.outboundPubrec("x", 1)
            w.outboundDone("x", 1)
            w.outboundClear("x")
            w.inboundQos2Release("x", 1)
            w.subscriptionDelete("x", "t")
            w.sessionDelete("x")
            expect(s.counts()).toEqual({ messages: 0, retained: 0, sessions: 0 })
          })
        )
        expect(yield* loadOnce(layer)).toEqual({ retained: [], sessions: [] })
      })
    )

    it.live("whenDurable calls back; compact and sync keep everything", () =>
      Effect.gen(function* () {
        const layer = makeLayer()
        yield* withStore(layer, (s) =>
          Effect.gen(function* () {
            s.writer.retainedSet(msg("r", "1", { retain: true }))
            yield* durable(s)
            yield* s.compact
            s.writer.outboundQueue("c", delivery(msg("q", "2")))
            yield* s.sync
            yield* s.compact
            s.writer.subscriptionSet("c", "q", sub(1))
          })
        )
        const snap = yield* loadOnce(layer)
        expect(snap.retained.map((m) => m.topic)).toEqual(["r"])
        expect(sessionOf(snap, "c")!.queue.map((d) => d.message.topic)).toEqual(["q"])
        expect([...sessionOf(snap, "c")!.subscriptions.keys()]).toEqual(["q"])
      })
    )

    it.live.prop(
      "random writer calls with restarts and compactions: what loads equals a naive model",
      [fc.array(messageArb, { minLength: 6, maxLength: 6 }), fc.array(opArb, { minLength: 1, maxLength: 120, size: "max" })],
      ([messages, ops]) =>
        Effect.gen(function* () {
          const layer = makeLayer()
          const model = new Model()
          let i = 0
          const run = (): Effect.Effect<void, unknown> =>
            withStore(layer, (s) =>
              Effect.gen(function* () {
                const w = s.writer
                while (i < ops.length) {
                  const o = ops[i++]
                  switch (o.op) {
                    case "restart":
                      return true
                    case "compact":
                      yield* s.compact
                      break
                    case "retainedSet": {
                      const m = o.empty ? { ...messages[o.m], payload: Buffer.alloc(0) } : messages[o.m]
                      w.retainedSet(m)
                      model.retainedSet(m)
                      break
                    }
                    case "sessionUpsert":
                      w.sessionUpsert(o.meta)
                      model.sessionUpsert(o.meta)
                      break
                    case "sessionDelete":
                      w.sessionDelete(o.c)
                      model.sessionDelete(o.c)
                      break
                    case "subscriptionSet":
                      w.subscriptionSet(o.c, o.f, o.o)
                      model.subscriptionSet(o.c, o.f, o.o)
                      break
                    case "subscriptionDelete":
                      w.subscriptionDelete(o.c, o.f)
                      model.subscriptionDelete(o.c, o.f)
                      break
                    case "outboundQueue": {
                      const d = delivery(messages[o.m], o.qos, o.ids, o.retain, o.shared)
                      w.outboundQueue(o.c, d)
                      model.outboundQueue(o.c, d)
                      break
                    }
                    case "outboundSend": {
                      const d = delivery(messages[o.m], o.qos, o.ids, o.retain, o.shared)
                      w.outboundSend(o.c, o.id, d)
                      model.outboundSend(o.c, o.id, d)
                      break
                    }
                    case "outboundClear":
                      w.outboundClear(o.c)
                      model.outboundClear(o.c)
                      break
                    default:
                      w[o.op](o.c, o.id)
                      model[o.op](o.c, o.id)
                  }
                }
                return false
              })
            ).pipe(Effect.flatMap((restart) => (restart ? run() : Effect.void)))
          yield* run()
          const loaded = yield* loadOnce(layer)
          expect(plain(loaded)).toEqual(plain(model.snapshot()))
          // the order of sessions and of retained topics is kept too
          expect(loaded.sessions.map((s) => s.clientId)).toEqual([...model.sessions.keys()])
          expect(loaded.retained.map((m) => m.topic)).toEqual([...model.retained.keys()])
        }),
      { fastCheck: { seed: 20240601, numRuns: options.propertyRuns }, timeout: 120_000 }
    )
  })
