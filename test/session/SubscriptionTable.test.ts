import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import type { SubscriptionOptions } from "../../src/routing/Router.js"
import { Session, SubscriptionTable } from "../../src/session/Session.js"

const options = (qos: 0 | 1 | 2): SubscriptionOptions => ({
  qos,
  noLocal: false,
  retainAsPublished: false,
  retainHandling: 0,
  subscriptionId: undefined
})

const contents = (m: Map<string, SubscriptionOptions>) => ({
  size: m.size,
  entries: [...m],
  keys: [...m.keys()],
  values: [...m.values()],
  viaEntries: [...m.entries()],
  viaForEach: (() => {
    const out: Array<[string, SubscriptionOptions]> = []
    m.forEach((v, k, self) => {
      expect(self).toBe(m)
      out.push([k, v])
    })
    return out
  })()
})

describe("SubscriptionTable", () => {
  const op = fc.oneof(
    fc.record({ op: fc.constant("set" as const), key: fc.constantFrom("a", "b", "c", ""), qos: fc.constantFrom(0 as const, 1 as const, 2 as const) }),
    fc.record({ op: fc.constant("delete" as const), key: fc.constantFrom("a", "b", "c", "") }),
    fc.record({ op: fc.constant("clear" as const) })
  )

  it.prop(
    "behaves as a Map: same answers, same contents in the same order after every step",
    [fc.array(op, { maxLength: 40 })],
    ([ops]) => {
      const table = new SubscriptionTable()
      const model = new Map<string, SubscriptionOptions>()
      for (const o of ops) {
        if (o.op === "set") {
          const value = options(o.qos)
          expect(table.set(o.key, value)).toBe(table)
          model.set(o.key, value)
        } else if (o.op === "delete") expect(table.delete(o.key)).toBe(model.delete(o.key))
        else {
          table.clear()
          model.clear()
        }
        expect(contents(table)).toEqual(contents(model))
        for (const key of ["a", "b", "c", ""]) {
          expect(table.has(key)).toBe(model.has(key))
          expect(table.get(key)).toBe(model.get(key))
        }
      }
    },
    { fastCheck: { seed: 20_261_126, numRuns: 200 } }
  )

  it("a session's subscriptions: none until the first, then counted", () => {
    const session = new Session("c", { maxInflight: 20, maxQueued: 100, queueQos0: false })
    expect(session.hasSubscriptions).toBe(false)
    session.subscriptions.set("x/#", options(1))
    expect(session.hasSubscriptions).toBe(true)
    session.subscriptions.set("y", options(0))
    expect([...session.subscriptions.keys()]).toEqual(["x/#", "y"])
    session.subscriptions.delete("x/#")
    session.subscriptions.delete("y")
    expect(session.hasSubscriptions).toBe(false)
  })
})
