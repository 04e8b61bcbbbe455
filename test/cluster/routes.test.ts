/**
 * Another node's routes as this node knows them (RouteView): the routes channel's changes and the
 * heartbeat's snapshots read from Redis, which travel on different connections, end in the
 * node's route set as Redis has it — whatever the order they arrive in, and whatever
 * notifications were lost before a snapshot was read.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { RouteView } from "../../src/cluster/internal/routes.js"

interface Change {
  readonly op: "+" | "-"
  readonly filter: string
}

const change: fc.Arbitrary<Change> = fc.record({ op: fc.constantFrom("+" as const, "-" as const), filter: fc.constantFrom("a/#", "a/b", "+/c", "d") })

/** the route set in Redis after the first `n` changes (SADD / SREM) */
const stateAfter = (changes: ReadonlyArray<Change>, n: number): Set<string> => {
  const s = new Set<string>()
  for (const c of changes.slice(0, n)) {
    if (c.op === "+") s.add(c.filter)
    else s.delete(c.filter)
  }
  return s
}

/**
 * A history: Redis applies `changes` in order and the channel delivers them in the same order
 * (some of the first `sent` lost). The heartbeat's read is sent once `sent` of them were
 * delivered, Redis answers it with the state after `read` changes (read ≥ sent: it cannot be
 * older than what the channel had already delivered), and the reply arrives once `replied` were
 * delivered (replied ≥ sent: before or after the changes the snapshot includes).
 */
const history = fc
  .array(change, { maxLength: 16 })
  .chain((changes) =>
    fc.nat({ max: changes.length }).chain((sent) =>
      fc.record({
        changes: fc.constant(changes),
        sent: fc.constant(sent),
        read: fc.integer({ min: sent, max: changes.length }),
        replied: fc.integer({ min: sent, max: changes.length }),
        lost: fc.array(fc.boolean(), { minLength: sent, maxLength: sent })
      })
    )
  )

describe("RouteView", () => {
  it.prop(
    "after a snapshot and the channel's remaining changes, the view is Redis's route set",
    [history],
    ([{ changes, sent, read, replied, lost }]) => {
      const view = new RouteView()
      let seq = 0
      changes.slice(0, sent).forEach((c, i) => {
        if (!lost[i]) view.change(c.op, c.filter, ++seq)
      })
      const since = seq
      for (const c of changes.slice(sent, replied)) view.change(c.op, c.filter, ++seq)
      view.sync(stateAfter(changes, read), since)
      // what it keeps apart from the snapshot: the filters the channel changed after the read was sent
      expect(view.pending).toBe(new Set(changes.slice(sent, replied).map((c) => c.filter)).size)
      for (const c of changes.slice(replied)) view.change(c.op, c.filter, ++seq)
      expect([...view.filters].sort()).toEqual([...stateAfter(changes, changes.length)].sort())
    }
  )

  it.prop(
    "a snapshot with nothing in flight repairs lost notifications, and reports what it added and removed",
    [fc.array(change, { maxLength: 16 }), fc.array(fc.boolean(), { minLength: 16, maxLength: 16 })],
    ([changes, lost]) => {
      const view = new RouteView()
      let seq = 0
      changes.forEach((c, i) => {
        if (!lost[i]) view.change(c.op, c.filter, ++seq)
      })
      const before = new Set(view.filters)
      const truth = stateAfter(changes, changes.length)
      const { added, removed } = view.sync(truth, seq)
      expect([...view.filters].sort()).toEqual([...truth].sort())
      expect([...added].sort()).toEqual([...truth].filter((f) => !before.has(f)).sort())
      expect([...removed].sort()).toEqual([...before].filter((f) => !truth.has(f)).sort())
    }
  )

  it("a subscription the channel announced after the read was sent is not undone by the older snapshot", () => {
    const view = new RouteView()
    const since = 0
    // the read goes out; the node subscribes (SADD + PUBLISH); the channel's "+" arrives first
    expect(view.change("+", "a/#", 1)).toBe(true)
    const { added, removed } = view.sync([], since)
    expect(removed).toEqual([])
    expect(added).toEqual([])
    expect([...view.filters]).toEqual(["a/#"])
    // the next heartbeat's snapshot has it, and one without it then removes it
    view.sync(["a/#"], 1)
    expect(view.sync([], 1).removed).toEqual(["a/#"])
  })

  it("change reports whether the filter was added or removed", () => {
    const view = new RouteView()
    expect(view.change("+", "x", 1)).toBe(true)
    expect(view.change("+", "x", 2)).toBe(false)
    expect(view.change("-", "x", 3)).toBe(true)
    expect(view.change("-", "x", 4)).toBe(false)
    view.change("+", "y", 5)
    view.clear()
    expect(view.filters.size).toBe(0)
    expect(view.pending).toBe(0)
    expect(view.sync(["z"], 0).added).toEqual(["z"])
  })
})
