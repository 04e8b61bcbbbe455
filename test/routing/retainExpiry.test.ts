/**
 * `retain_expiry_interval` (Mosquitto 2.1): a periodic sweep removes the retained messages whose
 * MQTT 5 Message Expiry Interval has passed; without it they go only when a subscription meets them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { Broker } from "../../src/Broker.js"

const retainedAfter = (retainExpiryInterval: number, seconds: ReadonlyArray<number>) =>
  Effect.gen(function* () {
    const broker = yield* Broker.make({ settings: { retainExpiryInterval } })
    yield* broker.publish({ topic: "r/short", payload: "x", retain: true, properties: { messageExpiryInterval: 30 } })
    yield* broker.publish({ topic: "r/kept", payload: "y", retain: true })
    const counts: Array<number> = [broker.stats().retained]
    for (const s of seconds) {
      yield* TestClock.adjust(`${s} seconds`)
      counts.push(broker.stats().retained)
    }
    return counts
  })

describe("retain_expiry_interval", () => {
  it.scoped("sweeps the expired retained messages every interval, and only those", () =>
    Effect.gen(function* () {
      // expired at 30 s, still stored until the sweep at 60 s; the message without expiry stays
      expect(yield* retainedAfter(60, [29, 30, 2, 60])).toEqual([2, 2, 2, 1, 1])
    })
  )

  it.scoped("without it an expired retained message stays stored until a subscription meets it", () =>
    Effect.gen(function* () {
      expect(yield* retainedAfter(0, [120, 600])).toEqual([2, 2, 2])
    })
  )

  it.scoped("a reload starts, changes and stops the sweep", () =>
    Effect.gen(function* () {
      const broker = yield* Broker.make({ settings: {} })
      yield* broker.publish({ topic: "r/a", payload: "x", retain: true, properties: { messageExpiryInterval: 5 } })
      yield* TestClock.adjust("100 seconds")
      expect(broker.stats().retained).toBe(1)
      yield* broker.reload({ settings: { retainExpiryInterval: 60 } })
      yield* TestClock.adjust("61 seconds")
      expect(broker.stats().retained).toBe(0)
      yield* broker.reload({ settings: { retainExpiryInterval: 0 } })
      yield* broker.publish({ topic: "r/b", payload: "x", retain: true, properties: { messageExpiryInterval: 5 } })
      yield* TestClock.adjust("200 seconds")
      expect(broker.stats().retained).toBe(1)
    })
  )
})
