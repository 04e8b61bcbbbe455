/**
 * The outbound QoS 1 / QoS 2 state machine against a model: nothing that was
 * accepted is lost, a QoS 2 message completes exactly once, packet ids are never
 * reused while in flight [MQTT-2.3.1-2], the window is respected, and first
 * sends keep the order of offers [MQTT-4.6.0-6].
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { Message, type QoS } from "../../src/session/Message.js"
import { InboundQos2, OutboundFlow, type OutboundSink, type Outgoing } from "../../src/session/OutboundFlow.js"

type Op =
  | { readonly op: "offer"; readonly qos: QoS }
  | { readonly op: "ack"; readonly pick: number } // PUBACK / PUBREC / PUBCOMP for an in-flight id, as its state wants
  | { readonly op: "bogus"; readonly id: number; readonly kind: "puback" | "pubrec" | "pubcomp" }
  | { readonly op: "wrong"; readonly pick: number; readonly kind: "puback" | "pubrec" | "pubcomp" } // an in-flight id, the wrong acknowledgement
  | { readonly op: "offline" }
  | { readonly op: "online" }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant("offer" as const), qos: fc.constantFrom<QoS>(0, 1, 2) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant("ack" as const), pick: fc.nat(50) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("bogus" as const),
      id: fc.integer({ min: 1, max: 65535 }),
      kind: fc.constantFrom("puback" as const, "pubrec" as const, "pubcomp" as const)
    })
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("wrong" as const), pick: fc.nat(50), kind: fc.constantFrom("puback" as const, "pubrec" as const, "pubcomp" as const) })
  },
  { weight: 1, arbitrary: fc.constant({ op: "offline" as const }) },
  { weight: 1, arbitrary: fc.constant({ op: "online" as const }) }
)

const limitsArb = fc.record({
  maxInflight: fc.integer({ min: 1, max: 5 }),
  maxQueued: fc.integer({ min: 0, max: 8 }),
  queueQos0: fc.boolean()
})

describe("OutboundFlow", () => {
  it.prop(
    "QoS 1 / 2 flows against a model: nothing lost, QoS 2 once, ids unique in flight, order kept",
    [limitsArb, fc.array(opArb, { maxLength: 200 })],
    ([limits, ops]) => {
      const flow = new OutboundFlow(limits)
      let online = true
      let seq = 0
      const offered: Array<{ seq: number; qos: QoS }> = []
      const dropped = new Set<number>()
      const firstSent: Array<number> = []
      const completed = new Map<number, number>() // seq -> times completed
      const onWire = new Map<number, number>() // id -> seq, for the model's view of in-flight
      const seqOf = (out: Outgoing) => Number(out.message.topic)
      const sink: OutboundSink = {
        publish: (out, id, dup) => {
          expect(online).toBe(true)
          const s = seqOf(out)
          if (out.qos === 0) {
            completed.set(s, (completed.get(s) ?? 0) + 1)
            return
          }
          if (!dup) {
            // [MQTT-2.3.1-2] a fresh PUBLISH never reuses an id that is still in flight
            expect(onWire.has(id)).toBe(false)
            firstSent.push(s)
            onWire.set(id, s)
          } else {
            expect(onWire.get(id)).toBe(s)
          }
          expect(id).toBeGreaterThanOrEqual(1)
          expect(id).toBeLessThanOrEqual(65535)
        },
        pubrel: (id) => {
          expect(online).toBe(true)
          expect(onWire.has(id)).toBe(true)
        }
      }
      const ack = (id: number) => {
        const entry = flow.inflight.get(id)!
        if (entry.state === "await-puback") {
          expect(flow.onPuback(id, sink, online)).toBe("done")
          const s = onWire.get(id)!
          onWire.delete(id)
          completed.set(s, (completed.get(s) ?? 0) + 1)
        } else if (entry.state === "await-pubrec") {
          expect(flow.onPubrec(id, sink)).toBe("done")
          // a duplicate PUBREC is answered again and changes nothing
          expect(flow.onPubrec(id, sink)).toBe("done")
        } else {
          expect(flow.onPubcomp(id, sink, online)).toBe("done")
          const s = onWire.get(id)!
          onWire.delete(id)
          completed.set(s, (completed.get(s) ?? 0) + 1)
          // a late duplicate PUBCOMP is ignored
          expect(flow.onPubcomp(id, sink, online)).toBe("unknown")
        }
      }
      for (const op of ops) {
        switch (op.op) {
          case "offer": {
            const s = seq++
            offered.push({ seq: s, qos: op.qos })
            const msg = new Message(String(s), Buffer.alloc(0), op.qos, false, undefined, "", 0)
            const r = flow.offer({ message: msg, qos: op.qos, retain: false, subscriptionIds: undefined }, online, sink)
            if (r === "dropped") dropped.add(s)
            if (op.qos === 0 && !online && !limits.queueQos0) expect(r).toBe("dropped")
            break
          }
          case "ack": {
            if (!online || flow.inflight.size === 0) break
            const ids = [...flow.inflight.keys()]
            ack(ids[op.pick % ids.length])
            break
          }
          case "bogus": {
            if (!online || flow.inflight.has(op.id)) break
            if (op.kind === "puback") expect(flow.onPuback(op.id, sink, online)).toBe("unknown")
            else if (op.kind === "pubrec") expect(flow.onPubrec(op.id, sink)).toBe("unknown")
            else expect(flow.onPubcomp(op.id, sink, online)).toBe("unknown")
            break
          }
          case "wrong": {
            // an acknowledgement its message's state does not take is refused and changes nothing
            if (!online || flow.inflight.size === 0) break
            const ids = [...flow.inflight.keys()]
            const id = ids[op.pick % ids.length]
            const state = flow.stateOf(id)!
            const takes = op.kind === "puback" ? state === "await-puback" : op.kind === "pubrec" ? state !== "await-puback" : state === "await-pubcomp"
            if (takes) break
            const size = flow.inflight.size
            const outcome = op.kind === "puback" ? flow.onPuback(id, sink, online) : op.kind === "pubrec" ? flow.onPubrec(id, sink) : flow.onPubcomp(id, sink, online)
            expect(outcome).toBe("wrong")
            expect(flow.stateOf(id)).toBe(state)
            expect(flow.inflight.size).toBe(size)
            break
          }
          case "offline":
            online = false
            break
          case "online":
            if (!online) {
              online = true
              flow.resume(sink)
            }
            break
        }
        // the window is respected
        expect(flow.inflight.size).toBeLessThanOrEqual(limits.maxInflight)
        if (limits.maxQueued > 0) expect(flow.queued).toBeLessThanOrEqual(limits.maxQueued)
      }
      // drain: come online and acknowledge everything
      if (!online) {
        online = true
        flow.resume(sink)
      }
      let guard = 0
      while (flow.inflight.size > 0 && guard++ < 10_000) ack(flow.inflight.keys().next().value!)
      expect(flow.inflight.size).toBe(0)
      expect(flow.queued).toBe(0)
      for (const { seq: s, qos } of offered) {
        const times = completed.get(s) ?? 0
        if (dropped.has(s)) expect(times).toBe(0)
        else if (qos === 0) expect(times).toBeLessThanOrEqual(1) // QoS 0 is at most once
        else expect(times).toBe(1) // nothing accepted is lost; QoS 2 exactly once
      }
      // first sends of QoS 1 / 2 leave in the order they were offered
      expect(firstSent).toEqual([...firstSent].sort((a, b) => a - b))
      // drops happen only when the queue was full
      if (limits.maxQueued === 0) {
        for (const s of dropped) expect(offered[s].qos).toBe(0)
      }
    },
    { fastCheck: { seed: 20261125, numRuns: 300 } }
  )

  it("resume resends unacknowledged PUBLISH with DUP and PUBREL for released ones [MQTT-4.4.0-1]", () => {
    const flow = new OutboundFlow({ maxInflight: 10, maxQueued: 0, queueQos0: false })
    const sent: Array<string> = []
    const sink: OutboundSink = {
      publish: (out, id, dup) => sent.push(`publish ${out.message.topic} id=${id} dup=${dup}`),
      pubrel: (id) => sent.push(`pubrel ${id}`)
    }
    const m = (t: string, qos: QoS) => ({ message: new Message(t, Buffer.alloc(0), qos, false, undefined, "", 0), qos, retain: false, subscriptionIds: undefined })
    flow.offer(m("a", 1), true, sink)
    flow.offer(m("b", 2), true, sink)
    flow.offer(m("c", 2), true, sink)
    flow.onPubrec(3, sink)
    sent.length = 0
    flow.resume(sink)
    expect(sent).toEqual(["publish a id=1 dup=true", "publish b id=2 dup=true", "pubrel 3"])
  })

  it("packet ids wrap after 65535 and skip ids still in flight", () => {
    const flow = new OutboundFlow({ maxInflight: 0, maxQueued: 0, queueQos0: false })
    const ids: Array<number> = []
    const sink: OutboundSink = { publish: (_o, id) => ids.push(id), pubrel: () => {} }
    const m = { message: new Message("t", Buffer.alloc(0), 1, false, undefined, "", 0), qos: 1 as QoS, retain: false, subscriptionIds: undefined }
    flow.offer(m, true, sink) // id 1 stays in flight
    for (let i = 2; i <= 65535; i++) {
      flow.offer(m, true, sink)
      flow.onPuback(i, sink, true)
    }
    flow.offer(m, true, sink)
    expect(ids[ids.length - 1]).toBe(2) // 1 is still in flight, so the wrap skips it
    // the same delivery object offered again: every in-flight entry still carries its own id
    expect([...flow.inflight].map(([id, e]) => [id, e.messageId])).toStrictEqual([
      [1, 1],
      [2, 2]
    ])
  })
})

describe("InboundQos2", () => {
  it("a resent QoS 2 PUBLISH is not delivered twice; the id is free again after PUBREL [MQTT-4.3.3-9]", () => {
    const q = new InboundQos2()
    expect(q.onPublish(7)).toBe(true)
    expect(q.onPublish(7)).toBe(false)
    expect(q.onPubrel(7)).toBe(true)
    expect(q.onPubrel(7)).toBe(false)
    expect(q.onPublish(7)).toBe(true)
  })

  it.prop(
    "against a model: each (id, generation) delivered exactly once",
    [fc.array(fc.tuple(fc.constantFrom("publish" as const, "pubrel" as const), fc.integer({ min: 1, max: 4 })), { maxLength: 100 })],
    ([events]) => {
      const q = new InboundQos2()
      const pending = new Set<number>()
      for (const [kind, id] of events) {
        if (kind === "publish") expect(q.onPublish(id)).toBe(!pending.has(id)), pending.add(id)
        else expect(q.onPubrel(id)).toBe(pending.delete(id))
      }
    },
    { fastCheck: { seed: 42 } }
  )
})
