/**
 * Restart schedules and start types, on the TestClock with a seeded Random:
 * Mosquitto's decorrelated jitter (next = min(cap, random(base, prev × 3))),
 * its reset after a stable connection, a constant restart_timeout, and the
 * automatic / once / lazy strategies over a fake link (threshold, idle_timeout).
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { Chunk, Clock, Duration, Effect, Fiber, Random, Schedule, TestClock } from "effect"
import { type AttemptOutcome, automatic, Demand, idle, lazy, once, restartSchedule } from "../../src/bridge/internal/schedule.js"

const failure: AttemptOutcome = { connectedFor: undefined }

/** The delays (ms) the schedule picks for these outcomes, with Random seeded by `seed`. */
const delays = (timeout: Parameters<typeof restartSchedule>[0], outcomes: ReadonlyArray<AttemptOutcome>, seed: number): Array<number> =>
  Effect.runSync(
    Schedule.run(restartSchedule(timeout), 0, outcomes).pipe(
      Effect.map((out) => Chunk.toArray(out).map(Duration.toMillis)),
      Effect.withRandom(Random.make(seed))
    )
  )

class LinkDown {
  readonly _tag = "LinkDown"
  constructor(readonly connectedFor: number | undefined = undefined) {}
}

describe("restart_timeout schedules", () => {
  it("a single value is a fixed delay", () => {
    expect(delays({ _tag: "Constant", seconds: 20 }, [failure, failure, { connectedFor: 99_000 }], 1)).toEqual([20_000, 20_000, 20_000])
  })

  it.prop(
    "decorrelated jitter: each delay is in [base, min(cap, 3 × previous)) and never above the cap",
    [fc.integer(), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 0, max: 200 })],
    ([seed, base, extra]) => {
      const cap = base + extra
      const out = delays({ _tag: "Backoff", base, cap, stable: 0 }, Array.from({ length: 30 }, () => failure), seed)
      let prev = base * 1000
      for (const d of out) {
        expect(d).toBeGreaterThanOrEqual(base * 1000)
        expect(d).toBeLessThanOrEqual(cap * 1000)
        expect(d).toBeLessThan(Math.max(base * 1000 + 1, prev * 3))
        prev = d
      }
    },
    { fastCheck: { numRuns: 200, seed: 42 } }
  )

  it("the same seed replays the same delays; the backoff grows towards the cap (Mosquitto's defaults, 5 and 30 s)", () => {
    const outcomes = Array.from({ length: 12 }, () => failure)
    const a = delays({ _tag: "Backoff", base: 5, cap: 30, stable: 0 }, outcomes, 1234)
    expect(delays({ _tag: "Backoff", base: 5, cap: 30, stable: 0 }, outcomes, 1234)).toEqual(a)
    expect(a).not.toEqual(delays({ _tag: "Backoff", base: 5, cap: 30, stable: 0 }, outcomes, 4321))
    expect(Math.max(...a)).toBe(30_000)
  })

  it("a connection that lasted `stable` seconds resets the backoff to its base; a shorter one steps it", () => {
    const d = delays(
      { _tag: "Backoff", base: 2, cap: 100, stable: 10 },
      [failure, failure, failure, { connectedFor: 10_000 }, { connectedFor: 9_999 }],
      99
    )
    expect(d[3]).toBe(2_000)
    expect(d[4]).toBeGreaterThanOrEqual(2_000)
    expect(d[4]).toBeLessThan(6_000)
    // stable 0 (the default): any connection that reached CONNACK resets
    expect(delays({ _tag: "Backoff", base: 5, cap: 30, stable: 0 }, [failure, failure, { connectedFor: 0 }], 5)[2]).toBe(5_000)
  })

  it("the primary address coming back asks for an immediate attempt", () => {
    expect(delays({ _tag: "Constant", seconds: 9 }, [{ connectedFor: 1, immediate: true }], 1)).toEqual([0])
    expect(delays({ _tag: "Backoff", base: 5, cap: 30, stable: 0 }, [{ connectedFor: 1, immediate: true }], 1)).toEqual([0])
  })
})

describe("start types", () => {
  it.effect("automatic: attempts at 0, then after each delay of the schedule (TestClock, seeded Random)", () =>
    Effect.gen(function* () {
      const attempts: Array<number> = []
      const link = Effect.flatMap(Clock.currentTimeMillis, (t) => {
        attempts.push(t)
        return Effect.fail(new LinkDown())
      })
      const timeout = { _tag: "Backoff", base: 5, cap: 30, stable: 0 } as const
      const fiber = yield* Effect.fork(automatic(link, restartSchedule(timeout)).pipe(Effect.withRandom(Random.make(77))))
      const expected = delays(timeout, Array.from({ length: 8 }, () => failure), 77)
      let at = 0
      const times = [0]
      for (const d of expected) times.push((at += d))
      yield* TestClock.adjust(Duration.millis(at))
      expect(attempts).toEqual(times)
      yield* Fiber.interrupt(fiber)
    })
  )

  it.effect("once: a failed link is not retried", () =>
    Effect.gen(function* () {
      let attempts = 0
      let reported = 0
      const fiber = yield* Effect.fork(
        once(
          Effect.suspend(() => {
            attempts++
            return Effect.fail(new LinkDown())
          }),
          () => Effect.sync(() => reported++)
        )
      )
      yield* TestClock.adjust(Duration.hours(1))
      yield* Fiber.join(fiber)
      expect([attempts, reported]).toEqual([1, 1])
    })
  )

  it.effect("idle: completes once nothing was sent for idle_timeout; activity pushes the deadline back", () =>
    Effect.gen(function* () {
      let last = 0
      const fiber = yield* Effect.fork(idle(() => last, 60_000))
      yield* TestClock.adjust(Duration.seconds(30))
      last = 30_000
      yield* TestClock.adjust(Duration.seconds(59))
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust(Duration.seconds(1))
      expect(fiber.unsafePoll()).not.toBeNull()
    })
  )

  it.effect("lazy: starts when `threshold` messages are queued, stops when idle, starts again on demand; a failed start is retried", () =>
    Effect.gen(function* () {
      let queued = 0
      let lastSent = 0
      let failNext = false
      const starts: Array<number> = []
      const demand = new Demand(() => queued >= 3)
      const link = Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        starts.push(now)
        if (failNext) {
          failNext = false
          return yield* Effect.fail(new LinkDown())
        }
        queued = 0 // everything sent
        lastSent = now
        yield* idle(() => lastSent, 60_000)
      })
      const queue = (n: number) => {
        queued += n
        demand.notify()
      }
      const fiber = yield* Effect.fork(lazy(link, demand.await, restartSchedule({ _tag: "Constant", seconds: 5 })))
      yield* TestClock.adjust(Duration.minutes(10))
      expect(starts).toEqual([])
      queue(2)
      yield* TestClock.adjust(Duration.seconds(1))
      expect(starts).toEqual([])
      queue(1) // threshold reached at 10 min 1 s
      yield* TestClock.adjust(Duration.seconds(1))
      expect(starts).toEqual([601_000])
      // idle 60 s after the last send: the link ends; no demand, no new start
      yield* TestClock.adjust(Duration.minutes(5))
      expect(starts).toEqual([601_000])
      // demand again, but this start fails: retried after restart_timeout (5 s) while the demand lasts
      failNext = true
      queue(3)
      yield* TestClock.adjust(Duration.seconds(1))
      yield* TestClock.adjust(Duration.seconds(5))
      expect(starts).toEqual([601_000, 902_000, 907_000])
      yield* Fiber.interrupt(fiber)
    })
  )
})
