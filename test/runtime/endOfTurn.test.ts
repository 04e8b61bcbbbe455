/**
 * The end-of-turn queue (src/runtime/endOfTurn.ts): the connections' writes and the log's lines
 * of one event-loop turn run under one immediate, in the order they were queued.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { atEndOfTurn, TurnList } from "../../src/runtime/endOfTurn.js"
import { collectingUncaught, turns } from "../support/turns.js"


describe("atEndOfTurn", () => {
  it("runs the turn's tasks after the turn, in the order queued, all under one immediate", async () => {
    const ran: Array<string> = []
    atEndOfTurn(() => ran.push("a"))
    // an immediate queued between two tasks runs after both: they share the first one's immediate
    setImmediate(() => ran.push("another immediate"))
    atEndOfTurn(() => ran.push("b"))
    atEndOfTurn(() => {
      ran.push("c")
      // queued while the queue runs: the next immediate
      atEndOfTurn(() => ran.push("d"))
    })
    expect(ran).toEqual([])
    await turns(1)
    expect(ran).toEqual(["a", "b", "c", "another immediate"])
    await turns(1)
    expect(ran).toEqual(["a", "b", "c", "another immediate", "d"])
  })

  it("a task that throws does not cancel the ones after it: they run in the next immediate, before later ones", async () => {
    const ran: Array<string> = []
    const errors = await collectingUncaught(async () => {
      atEndOfTurn(() => ran.push("first"))
      atEndOfTurn(() => {
        throw new Error("boom")
      })
      atEndOfTurn(() => ran.push("after the throw"))
      atEndOfTurn(() => ran.push("last"))
      await turns(3)
      atEndOfTurn(() => ran.push("next turn"))
      await turns(1)
    })
    expect(errors).toHaveLength(1)
    expect(String(errors[0])).toContain("boom")
    expect(ran).toEqual(["first", "after the throw", "last", "next turn"])
  })
})

/** one drain of the list: the items pushed while it runs (after the item at `at`), and the item it throws on */
type Step = { readonly push: number; readonly during: ReadonlyArray<readonly [at: number, item: number]>; readonly throwAt: number | undefined }

describe("TurnList", () => {
  it.prop(
    "drains in the order pushed, holds pushes made while draining for the next drain, and puts back what a throw left",
    [
      fc.array(
        fc.record({
          push: fc.nat(6),
          during: fc.array(fc.tuple(fc.nat(8), fc.integer({ min: 1000, max: 1999 })), { maxLength: 3 }),
          throwAt: fc.option(fc.nat(8), { nil: undefined })
        }),
        { maxLength: 12 }
      )
    ],
    ([steps]: [ReadonlyArray<Step>]) => {
      const list = new TurnList<number>()
      // the model: a plain array, spliced
      let model: Array<number> = []
      let next = 0
      for (const step of steps) {
        for (let k = 0; k < step.push; k++) {
          list.push(next)
          model.push(next++)
        }
        const batch = model
        model = []
        const seen: Array<number> = []
        let threw = false
        try {
          list.drain((item) => {
            const i = seen.length
            seen.push(item)
            for (const [at, extra] of step.during) {
              if (at === i) {
                list.push(extra)
                model.push(extra)
              }
            }
            if (step.throwAt === i) throw new Error("thrown")
          })
        } catch {
          threw = true
        }
        const thrownAt = step.throwAt !== undefined && step.throwAt < batch.length ? step.throwAt : undefined
        expect(threw).toBe(thrownAt !== undefined)
        expect(seen).toEqual(thrownAt === undefined ? batch : batch.slice(0, thrownAt + 1))
        // what a throw left goes back before what was pushed meanwhile
        if (thrownAt !== undefined) model = [...batch.slice(thrownAt + 1), ...model]
        expect(list.length).toBe(model.length)
      }
      const rest: Array<number> = []
      list.drain((item) => rest.push(item))
      expect(rest).toEqual(model)
      expect(list.length).toBe(0)
    }
  )

  it("keeps no reference to what it drained", () => {
    const list = new TurnList<object>()
    const item = {}
    list.push(item)
    list.drain(() => {})
    const arrays = Object.values(list).filter(Array.isArray) as Array<Array<unknown>>
    expect(arrays).toHaveLength(2)
    for (const a of arrays) expect(a.includes(item)).toBe(false)
  })
})
