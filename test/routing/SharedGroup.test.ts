/**
 * Shared subscription dispatch `$share/GROUP/FILTER` [MQTT-4.8.2] through the
 * real Router, against a model: each message goes to exactly one member of
 * the group, online members first, round robin in the order members joined;
 * a member leaving mid-stream does not make the group skip anyone; `except`
 * (the member whose session ended with the message unfinished) never gets it
 * back. The subscribers are in-process ones, as the embedding API's.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { Router, type SharedGroup, type Subscriber, type SubscriptionOptions } from "../../src/routing/Router.js"
import { Message, type QoS } from "../../src/session/Message.js"

const SEED = 0x54a2ed
const runs = (numRuns: number) => ({ fastCheck: { seed: SEED, numRuns } })

const options = (qos: QoS): SubscriptionOptions => ({ qos, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: undefined })

interface Member extends Subscriber {
  on: boolean
  readonly got: Array<{ readonly n: number; readonly qos: QoS; readonly shared: SharedGroup | undefined }>
}

const member = (i: number): Member => {
  const m: Member = {
    clientId: `m${i}`,
    routedSubscriptions: 0,
    on: true,
    got: [],
    online: () => m.on,
    deliver: (message, qos, _retain, _ids, _source, shared) => void m.got.push({ n: Number(message.payload.toString()), qos, shared })
  }
  return m
}

type Op =
  | { readonly op: "join"; readonly who: number }
  | { readonly op: "leave"; readonly who: number }
  | { readonly op: "online"; readonly who: number; readonly on: boolean }
  | { readonly op: "publish" }
  | { readonly op: "redeliver"; readonly except: number }

const MEMBERS = 5
const who = fc.nat(MEMBERS - 1)
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant("join" as const), who }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("leave" as const), who }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("online" as const), who, on: fc.boolean() }) },
  { weight: 5, arbitrary: fc.constant({ op: "publish" as const }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("redeliver" as const), except: who }) }
)

/** The model: members in join order and whose turn it is. */
class Model {
  members: Array<Member> = []
  next = 0
  join(m: Member): void {
    if (!this.members.includes(m)) this.members.push(m)
  }
  leave(m: Member): void {
    const i = this.members.indexOf(m)
    if (i < 0) return
    this.members.splice(i, 1)
    if (i < this.next) this.next--
    if (this.next >= this.members.length) this.next = 0
  }
  /** the first online member from the turn on, else the first offline one; never `except` */
  pick(except?: Member): Member | undefined {
    const n = this.members.length
    let fallback = -1
    for (let k = 0; k < n; k++) {
      const i = (this.next + k) % n
      const m = this.members[i]
      if (m === except) continue
      if (m.on) {
        this.next = (i + 1) % n
        return m
      }
      if (fallback < 0) fallback = i
    }
    if (fallback < 0) return undefined
    this.next = (fallback + 1) % n
    return this.members[fallback]
  }
}

const totalGot = (ms: ReadonlyArray<Member>) => ms.reduce((s, m) => s + m.got.length, 0)

describe("SharedGroup dispatch", () => {
  it.prop(
    "each message to exactly one member, the one the model picks",
    [fc.array(opArb, { maxLength: 80 })],
    ([ops]) => {
      const router = new Router()
      const ms = Array.from({ length: MEMBERS }, (_, i) => member(i))
      const model = new Model()
      let n = 0
      for (const op of ops) {
        switch (op.op) {
          case "join":
            router.subscribe(ms[op.who], "$share/g/jobs/#", options(1))
            model.join(ms[op.who])
            break
          case "leave":
            expect(router.unsubscribe(ms[op.who], "$share/g/jobs/#")).toBe(model.members.includes(ms[op.who]))
            model.leave(ms[op.who])
            break
          case "online":
            ms[op.who].on = op.on
            break
          case "publish":
          case "redeliver": {
            const before = totalGot(ms)
            const message = new Message("jobs/x", Buffer.from(String(++n)), 1, false, undefined, "publisher", 0)
            const except = op.op === "redeliver" ? ms[op.except] : undefined
            const expected = model.pick(except)
            let handed: boolean
            if (op.op === "publish") {
              handed = router.publish(message) === 1
            } else {
              const group = router.sharedGroup("g", "jobs/#")
              expect(group === undefined).toBe(model.members.length === 0)
              handed = group !== undefined && router.deliverShared(group, message, except)
            }
            expect(handed).toBe(expected !== undefined)
            // exactly one copy, to the expected member, never to `except`
            expect(totalGot(ms)).toBe(before + (expected === undefined ? 0 : 1))
            if (expected !== undefined) {
              const last = expected.got[expected.got.length - 1]
              expect(last.n).toBe(n)
              expect(last.shared).toBeDefined()
              expect(expected).not.toBe(except)
              // online members first
              if (model.members.some((m) => m.on && m !== except)) expect(expected.on).toBe(true)
            }
            break
          }
        }
      }
    },
    runs(400)
  )

  it.prop(
    "round robin is fair: with k online members, k × r messages give each exactly r, whoever left before",
    [fc.integer({ min: 1, max: MEMBERS }), fc.integer({ min: 1, max: 6 }), fc.nat(20), fc.array(who, { maxLength: 3 })],
    ([k, r, warmup, leavers]) => {
      const router = new Router()
      const ms = Array.from({ length: MEMBERS + 3 }, (_, i) => member(i))
      // members who join and leave mid-stream, then the k that stay
      for (const m of ms.slice(MEMBERS)) router.subscribe(m, "$share/g/t", options(0))
      for (const m of ms.slice(0, k)) router.subscribe(m, "$share/g/t", options(0))
      let n = 0
      const pub = () => router.publish(new Message("t", Buffer.from(String(++n)), 0, false, undefined, "p", 0))
      for (let i = 0; i < warmup; i++) pub()
      for (const l of leavers) router.unsubscribe(ms[MEMBERS + (l % 3)], "$share/g/t")
      for (const m of ms.slice(MEMBERS)) router.unsubscribe(m, "$share/g/t")
      const before = ms.slice(0, k).map((m) => m.got.length)
      for (let i = 0; i < k * r; i++) pub()
      expect(ms.slice(0, k).map((m, i) => m.got.length - before[i])).toEqual(Array.from({ length: k }, () => r))
    },
    runs(300)
  )

  it("a member leaving ahead of the turn does not make the group skip the next one", () => {
    const router = new Router()
    const [a, b, c] = [member(0), member(1), member(2)]
    for (const m of [a, b, c]) router.subscribe(m, "$share/g/t", options(0))
    const pub = (p: string) => router.publish(new Message("t", Buffer.from(p), 0, false, undefined, "p", 0))
    pub("1") // a
    pub("2") // b; c's turn next
    router.unsubscribe(a, "$share/g/t")
    pub("3")
    pub("4")
    expect([a, b, c].map((m) => m.got.map((g) => g.n))).toEqual([[1], [2, 4], [3]])
  })

  it("the granted QoS of the member caps the delivery; no member, no delivery", () => {
    const router = new Router()
    const a = member(0)
    router.subscribe(a, "$share/g/t", options(0))
    expect(router.publish(new Message("t", Buffer.from("1"), 2, false, undefined, "p", 0))).toBe(1)
    expect(a.got[0].qos).toBe(0)
    router.unsubscribe(a, "$share/g/t")
    expect(router.sharedGroup("g", "t")).toBeUndefined()
    expect(router.publish(new Message("t", Buffer.from("2"), 1, false, undefined, "p", 0))).toBe(0)
  })
})
