/**
 * The end-of-turn queue (src/runtime/endOfTurn.ts): the connections' writes and the log's lines
 * of one event-loop turn run under one immediate, in the order they were queued.
 */
import { describe, expect, it } from "@effect/vitest"
import { atEndOfTurn } from "../../src/runtime/endOfTurn.js"

/** resolves after the immediates queued so far (and those they queue) have run */
const turns = (n: number) =>
  new Promise<void>((resolve) => {
    const step = (left: number) => (left === 0 ? resolve() : setImmediate(() => step(left - 1)))
    step(n)
  })

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
    const errors: Array<unknown> = []
    const listeners = process.listeners("uncaughtException")
    process.removeAllListeners("uncaughtException")
    process.on("uncaughtException", (error) => errors.push(error))
    try {
      atEndOfTurn(() => ran.push("first"))
      atEndOfTurn(() => {
        throw new Error("boom")
      })
      atEndOfTurn(() => ran.push("after the throw"))
      atEndOfTurn(() => ran.push("last"))
      await turns(3)
      atEndOfTurn(() => ran.push("next turn"))
      await turns(1)
    } finally {
      process.removeAllListeners("uncaughtException")
      for (const l of listeners) process.on("uncaughtException", l)
    }
    expect(errors).toHaveLength(1)
    expect(String(errors[0])).toContain("boom")
    expect(ran).toEqual(["first", "after the throw", "last", "next turn"])
  })
})
