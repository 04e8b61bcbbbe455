/**
 * PacketIdMap against the `Map` it replaces for the in-flight window: after
 * every operation the same size, the same value for every id asked, and the
 * same entries in the same order, through the operations of packetIdOps.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { PacketIdMap } from "../../src/session/PacketIdMap.js"
import { opArb, play } from "./packetIdOps.js"

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
      play(
        ops,
        {
          model,
          set: (id, step) => {
            const v = `v${step}`
            expect(map.set(id, v)).toBe(map)
            model.set(id, v)
          },
          delete: (id) => expect(map.delete(id)).toBe(model.delete(id)),
          clear: () => {
            map.clear()
            model.clear()
          }
        },
        (probe) => same(map, model, probe)
      )
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
