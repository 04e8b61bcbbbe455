/**
 * PacketIdMap against the `Map` it replaces for the in-flight window: after
 * every operation the same size, the same value for every id asked, and the
 * same entries in the same order. The operations are a window's (set the next
 * id, delete the oldest; a full window sliding) mixed with deletes out of order, sets of ids present,
 * ids that collide in the table (the same low bits), ids across the whole range
 * and clears, long enough to grow and shrink the table and to renumber it.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { PacketIdMap } from "../../src/session/PacketIdMap.js"

type Op =
  | { readonly op: "next" } // the window's send: the id after the last one set, skipping those present
  | { readonly op: "oldest" } // the window's acknowledgement in order
  | { readonly op: "set"; readonly id: number }
  | { readonly op: "delete"; readonly id: number }
  | { readonly op: "deletePresent"; readonly pick: number } // an acknowledgement out of order
  | { readonly op: "burst"; readonly n: number } // many sends at once: the table grows
  | { readonly op: "drain"; readonly keep: number } // many acknowledgements out of order: holes, a renumbering
  | { readonly op: "slide"; readonly window: number; readonly n: number } // a full window in steady state: send one, acknowledge the oldest
  | { readonly op: "clear" }

const idArb = fc.oneof(
  fc.integer({ min: 1, max: 70 }),
  fc.integer({ min: 0, max: 2047 }).map((k) => 5 + 32 * k), // the same slot in the smallest table
  fc.integer({ min: 1, max: 65535 })
)

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.constant({ op: "next" as const }) },
  { weight: 6, arbitrary: fc.constant({ op: "oldest" as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("set" as const), id: idArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("delete" as const), id: idArb }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("deletePresent" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("burst" as const), n: fc.integer({ min: 1, max: 300 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("drain" as const), keep: fc.integer({ min: 1, max: 7 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("slide" as const), window: fc.integer({ min: 1, max: 40 }), n: fc.integer({ min: 1, max: 200 }) })
  },
  { weight: 1, arbitrary: fc.constant({ op: "clear" as const }) }
)

const same = (map: PacketIdMap<string>, model: Map<number, string>, probe: number) => {
  expect(map.consistent()).toBe(true)
  expect(map.size).toBe(model.size)
  expect([...map]).toStrictEqual([...model])
  expect([...map.keys()]).toStrictEqual([...model.keys()])
  expect([...map.values()]).toStrictEqual([...model.values()])
  expect(map.has(probe)).toBe(model.has(probe))
  expect(map.get(probe)).toBe(model.get(probe))
  for (const id of model.keys()) expect(map.get(id)).toBe(model.get(id))
}

describe("PacketIdMap", () => {
  it.prop(
    "holds the same entries, in the same order, as a Map through any sequence of operations",
    [fc.array(opArb, { maxLength: 400 })],
    ([ops]) => {
      const map = new PacketIdMap<string>()
      const model = new Map<number, string>()
      let last = 0
      let step = 0
      const set = (id: number) => {
        const v = `v${step}`
        expect(map.set(id, v)).toBe(map)
        model.set(id, v)
      }
      const del = (id: number) => expect(map.delete(id)).toBe(model.delete(id))
      const next = () => {
        if (model.size >= 65535) return
        do last = last === 65535 ? 1 : last + 1
        while (model.has(last))
        set(last)
      }
      for (const op of ops) {
        step++
        switch (op.op) {
          case "next":
            next()
            break
          case "oldest": {
            const first = model.keys().next()
            if (!first.done) del(first.value)
            break
          }
          case "set":
            set(op.id)
            break
          case "delete":
            del(op.id)
            break
          case "deletePresent": {
            const ids = [...model.keys()]
            if (ids.length > 0) del(ids[op.pick % ids.length])
            break
          }
          case "burst":
            for (let i = 0; i < op.n; i++) next()
            break
          case "slide":
            while (model.size < op.window) next()
            for (let i = 0; i < op.n; i++) {
              next()
              del(model.keys().next().value!)
            }
            break
          case "drain":
            for (const [i, id] of [...model.keys()].entries()) if (i % op.keep !== 0) del(id)
            break
          case "clear":
            map.clear()
            model.clear()
            break
        }
        same(map, model, op.op === "set" || op.op === "delete" ? op.id : last)
      }
    },
    { fastCheck: { seed: 4223, numRuns: 300 } }
  )

  it("keeps a present id's place when it is set again, as a Map does", () => {
    const map = new PacketIdMap<string>()
    map.set(7, "a").set(8, "b").set(9, "c").set(7, "A")
    expect([...map]).toStrictEqual([
      [7, "A"],
      [8, "b"],
      [9, "c"]
    ])
  })

  it("iterates the ids present when it starts: one deleted meanwhile is skipped, one set meanwhile is not visited", () => {
    const map = new PacketIdMap<string>()
    for (let id = 1; id <= 5; id++) map.set(id, `v${id}`)
    const seen: Array<number> = []
    for (const [id] of map) {
      seen.push(id)
      if (id === 2) {
        map.delete(4)
        map.set(6, "v6")
      }
    }
    expect(seen).toStrictEqual([1, 2, 3, 5])
  })

  it("refuses ids outside 1..65535", () => {
    const map = new PacketIdMap<string>()
    for (const id of [0, -1, 65536, 1.5]) expect(() => map.set(id, "x")).toThrow(RangeError)
    expect(map.size).toBe(0)
  })
})
