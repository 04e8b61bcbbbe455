/**
 * FlushScheduler (src/session/Core.ts): connections with frames waiting are flushed once each, at
 * the end of the turn, in the order they asked.
 */
import { describe, expect, it } from "@effect/vitest"
import { FlushScheduler } from "../../src/session/Core.js"
import { collectingUncaught, turns } from "../support/turns.js"


describe("FlushScheduler", () => {
  it("flushes at the end of the turn, in order; a connection scheduled by a flush goes in the next turn", async () => {
    const scheduler = new FlushScheduler()
    const flushed: Array<string> = []
    scheduler.schedule({ flush: () => flushed.push("a") })
    scheduler.schedule({
      flush: () => {
        flushed.push("b")
        scheduler.schedule({ flush: () => flushed.push("c") })
      }
    })
    expect(flushed).toEqual([])
    await turns(1)
    expect(flushed).toEqual(["a", "b"])
    await turns(2)
    expect(flushed).toEqual(["a", "b", "c"])
  })

  it("a flush that throws does not strand the connections after it", async () => {
    const scheduler = new FlushScheduler()
    const flushed: Array<string> = []
    const errors = await collectingUncaught(async () => {
      scheduler.schedule({ flush: () => flushed.push("first") })
      scheduler.schedule({
        flush: () => {
          throw new Error("boom")
        }
      })
      scheduler.schedule({ flush: () => flushed.push("after the throw") })
      await turns(3)
      scheduler.schedule({ flush: () => flushed.push("later") })
      await turns(3)
    })
    expect(errors).toHaveLength(1)
    expect(flushed).toEqual(["first", "after the throw", "later"])
  })
})
