/**
 * Router.publish against a model: every subscriber with at least one matching
 * subscription receives the message exactly once [MQTT-3.3.5-1], at the highest
 * granted QoS of its matching subscriptions capped by the message's QoS, with
 * every matching v5 subscription identifier, retain as published when any
 * matching subscription asks for it; No Local keeps it from its publisher; the
 * return value counts the receivers. Several messages in a row through the same
 * router (its scratch state is reused from one publish to the next), with
 * subscriptions added, replaced and removed in between, and a client's
 * subscriber object renewed (a new session under the same client id takes over
 * the entries it subscribes again; the old one keeps the others): "once" is per
 * subscriber object, and the router's count of each object's subscriptions (one:
 * no lookup among the other hits) follows every change.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { matchTopic } from "../../src/protocol/topic.js"
import { Router, type Subscriber, type SubscriptionOptions } from "../../src/routing/Router.js"
import { Message, type QoS } from "../../src/session/Message.js"

const SEED = 0x2a17e5
const FILTERS = ["a/b", "a/+", "a/#", "#", "+/b", "+/+", "a/b/c", "+/b/#", "c"] as const
const TOPICS = ["a/b", "a/c", "a/b/c", "c", "x/b"] as const
const CLIENTS = 4

interface Got {
  readonly qos: QoS
  readonly retain: boolean
  readonly ids: ReadonlyArray<number> | undefined
}

interface Sink extends Subscriber {
  got: Array<Got>
}

const sink = (i: number): Sink => {
  const s: Sink = {
    clientId: `c${i}`,
    routedSubscriptions: 0,
    got: [],
    online: () => true,
    deliver: (_message, qos, retain, ids) => void s.got.push({ qos, retain, ids: ids === undefined ? undefined : [...ids] })
  }
  return s
}

type Op =
  | { readonly op: "sub"; readonly who: number; readonly filter: number; readonly qos: QoS; readonly noLocal: boolean; readonly rap: boolean; readonly id: number }
  | { readonly op: "unsub"; readonly who: number; readonly filter: number }
  | { readonly op: "renew"; readonly who: number }
  | { readonly op: "pub"; readonly topic: number; readonly qos: QoS; readonly retain: boolean; readonly from: number }

const qosArb = fc.constantFrom<QoS>(0, 1, 2)
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("sub" as const),
      who: fc.nat(CLIENTS - 1),
      filter: fc.nat(FILTERS.length - 1),
      qos: qosArb,
      noLocal: fc.boolean(),
      rap: fc.boolean(),
      id: fc.nat(3) // 0: no subscription identifier
    })
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("unsub" as const), who: fc.nat(CLIENTS - 1), filter: fc.nat(FILTERS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("renew" as const), who: fc.nat(CLIENTS - 1) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("pub" as const),
      topic: fc.nat(TOPICS.length - 1),
      qos: qosArb,
      retain: fc.boolean(),
      from: fc.nat(CLIENTS) // CLIENTS: an in-process publisher ("")
    })
  }
)

describe("Router.publish", () => {
  it("a publish made from inside a delivery waits until the one under way reached every subscriber, then goes in order", () => {
    const router = new Router()
    const log: Array<string> = []
    const made = new Set<string>()
    const subscriber = (clientId: string, onDeliver?: (topic: string) => void): Subscriber => ({
      clientId,
      routedSubscriptions: 0,
      online: () => true,
      deliver: (message) => {
        log.push(`${clientId} ${message.topic}`)
        onDeliver?.(message.topic)
      }
    })
    // the first subscriber reached publishes (a log line about it, say) while the others still wait for theirs
    const publishOnce = (topic: string) => {
      if (made.has(topic)) return
      made.add(topic)
      expect(router.publish(new Message(topic, Buffer.from("x"), 0, false, undefined, "", 0))).toBe(0)
    }
    const c0 = subscriber("c0", (topic) => (topic === "a/b" ? publishOnce("log/x") : topic === "log/x" ? publishOnce("log/y") : undefined))
    const c1 = subscriber("c1")
    const c2 = subscriber("c2", (topic) => (topic === "a/b" ? publishOnce("log/z") : undefined))
    const options: SubscriptionOptions = { qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: undefined }
    router.subscribe(c0, "a/#", options)
    router.subscribe(c0, "log/#", options)
    router.subscribe(c1, "a/b", options)
    router.subscribe(c2, "#", options)
    expect(router.publish(new Message("a/b", Buffer.from("x"), 0, false, undefined, "", 0))).toBe(3)
    // a/b to all three first; then log/x and log/z in the order they were made; log/y (made by a log/x delivery) after them
    expect(log.slice(0, 3).sort()).toEqual(["c0 a/b", "c1 a/b", "c2 a/b"])
    const rest = log.slice(3)
    expect(rest.filter((l) => l.endsWith("log/x")).sort()).toEqual(["c0 log/x", "c2 log/x"])
    expect(rest.filter((l) => l.endsWith("log/z")).sort()).toEqual(["c0 log/z", "c2 log/z"])
    expect(rest.filter((l) => l.endsWith("log/y")).sort()).toEqual(["c0 log/y", "c2 log/y"])
    expect(rest).toHaveLength(6)
    expect(rest.slice(4).every((l) => l.endsWith("log/y"))).toBe(true)
    // the router is back to normal: the next publish reaches its subscribers and counts them
    log.length = 0
    expect(router.publish(new Message("a/c", Buffer.from("x"), 0, false, undefined, "", 0))).toBe(2)
    expect(log.sort()).toEqual(["c0 a/c", "c2 a/c"])
  })

  it.prop(
    "each matching subscriber once, at the highest granted QoS, with every identifier (model)",
    [fc.array(opArb, { minLength: 1, maxLength: 60 })],
    ([ops]) => {
      const router = new Router()
      // each client's current subscriber object, and every object made (an old one may still hold entries)
      const sinks = Array.from({ length: CLIENTS }, (_, i) => sink(i))
      const all = [...sinks]
      // the model: per client, filter -> options and the object whose entry it is
      const model = sinks.map(() => new Map<string, { readonly options: SubscriptionOptions; readonly holder: Sink }>())
      for (const o of ops) {
        if (o.op === "sub") {
          const options: SubscriptionOptions = {
            qos: o.qos,
            noLocal: o.noLocal,
            retainAsPublished: o.rap,
            retainHandling: 0,
            subscriptionId: o.id === 0 ? undefined : o.id
          }
          router.subscribe(sinks[o.who], FILTERS[o.filter], options)
          model[o.who].set(FILTERS[o.filter], { options, holder: sinks[o.who] })
        } else if (o.op === "unsub") {
          expect(router.unsubscribe(sinks[o.who], FILTERS[o.filter])).toBe(model[o.who].delete(FILTERS[o.filter]))
        } else if (o.op === "renew") {
          sinks[o.who] = sink(o.who)
          all.push(sinks[o.who])
        } else {
          const topic = TOPICS[o.topic]
          const origin = o.from < CLIENTS ? `c${o.from}` : ""
          for (const s of all) s.got = []
          const message = new Message(topic, Buffer.from("x"), o.qos, o.retain, undefined, origin, 0)
          const count = router.publish(message)
          let expected = 0
          for (const holder of all) {
            const i = Number(holder.clientId.slice(1))
            // subscriptions in the order the trie visits them differ from insertion order: compare as sets
            const hits = [...model[i].entries()]
              .filter(([f, e]) => e.holder === holder && matchTopic(f, topic) && !(e.options.noLocal && origin === `c${i}`))
              .map(([, e]) => e.options)
            if (hits.length === 0) {
              expect(holder.got).toEqual([])
              continue
            }
            expected++
            const granted = Math.max(...hits.map((opt) => opt.qos))
            const ids = hits.map((opt) => opt.subscriptionId).filter((id): id is number => id !== undefined)
            expect(holder.got).toHaveLength(1)
            const got = holder.got[0]
            expect(got.qos).toBe(Math.min(granted, o.qos))
            expect(got.retain).toBe(o.retain && hits.some((opt) => opt.retainAsPublished))
            expect([...(got.ids ?? [])].sort()).toEqual(ids.sort())
          }
          expect(count).toBe(expected)
        }
        // the router's count of each object's subscriptions, which lets an object of one skip the merge
        for (const holder of all) {
          const i = Number(holder.clientId.slice(1))
          expect(holder.routedSubscriptions).toBe([...model[i].values()].filter((e) => e.holder === holder).length)
        }
      }
      // every subscription removed: every count back to 0
      for (let i = 0; i < CLIENTS; i++) for (const f of model[i].keys()) expect(router.unsubscribe(sinks[i], f)).toBe(true)
      expect(router.subscriptionCount).toBe(0)
      for (const holder of all) expect(holder.routedSubscriptions).toBe(0)
    },
    { fastCheck: { seed: SEED, numRuns: 400 } }
  )
})
