/**
 * PacketIdSet against the `Set<number>` it replaces for the inbound QoS 2 ids:
 * after every operation the same size, the same answer for every id asked, and
 * the same ids in the same order, through the operations of packetIdOps.ts
 * (adds of ids present, deletes in and out of order, clears).
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { PacketIdSet } from "../../src/session/PacketIdSet.js"
import { opArb, play } from "./packetIdOps.js"

const same = (set: PacketIdSet, model: Set<number>, probe: number) => {
  expect(set.consistent()).toBe(true)
  expect(set.size).toBe(model.size)
  expect([...set]).toStrictEqual([...model])
  expect([...set.values()]).toStrictEqual([...model.values()])
  expect([...set.keys()]).toStrictEqual([...model.keys()])
  expect([...set.entries()]).toStrictEqual([...model.entries()])
  expect(set.has(probe)).toBe(model.has(probe))
  for (const id of model) expect(set.has(id)).toBe(true)
}

describe("PacketIdSet", () => {
  it.prop(
    "holds the same ids, in the same order, as a Set through any sequence of operations",
    [fc.array(opArb, { maxLength: 400 })],
    ([ops]) => {
      const set = new PacketIdSet()
      const model = new Set<number>()
      play(
        ops,
        {
          model,
          set: (id) => {
            expect(set.add(id)).toBe(set)
            model.add(id)
          },
          delete: (id) => expect(set.delete(id)).toBe(model.delete(id)),
          clear: () => {
            set.clear()
            model.clear()
          }
        },
        (probe) => same(set, model, probe)
      )
    },
    { fastCheck: { seed: 4224, numRuns: 300 } }
  )

  it("keeps a present id's place when it is added again, as a Set does; forEach visits in order", () => {
    const set = new PacketIdSet()
    set.add(7).add(8).add(9).add(7)
    expect([...set]).toStrictEqual([7, 8, 9])
    const seen: Array<[number, number]> = []
    set.forEach((v, k, s) => {
      expect(s).toBe(set)
      seen.push([v, k])
    })
    expect(seen).toStrictEqual([
      [7, 7],
      [8, 8],
      [9, 9]
    ])
  })

  it("refuses ids outside 1..65535 and answers has / delete for them as a Set would", () => {
    const set = new PacketIdSet().add(1).add(65535)
    for (const id of [0, -1, 65536, 1.5, NaN]) {
      expect(() => set.add(id)).toThrow(RangeError)
      expect(set.has(id)).toBe(false)
      expect(set.delete(id)).toBe(false)
    }
    expect([...set]).toStrictEqual([1, 65535])
    expect(set.consistent()).toBe(true)
  })
})
