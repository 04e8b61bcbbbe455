/**
 * How a bridge restarts, as Effect schedules over ONE connect-and-pump effect
 * (the link): `start_type automatic | lazy | once` are three small functions
 * over it, `restart_timeout` is the Schedule `Effect.retry` follows.
 *
 * Mosquitto's backoff (bridge.c `bridge__backoff_step`, "Decorrelated Jitter"
 * from the AWS architecture blog): next = min(cap, random(base, prev × 3)),
 * starting from prev = base, and back to `base` after a connection that lasted
 * `stable` seconds (2.1's `bridge__update_backoff`). The random numbers come
 * from the `Random` service and the waits from the `Clock`, so a seeded Random
 * and the TestClock replay a schedule exactly.
 */
import { Clock, Deferred, Duration, Effect, Exit, Random, Schedule, ScheduleDecision, ScheduleInterval } from "effect"
import type { RestartTimeout } from "./config.js"

/** How a link attempt ended, as the restart schedule sees it. */
export interface AttemptOutcome {
  /** ms the connection stayed up after its CONNACK; undefined: it never got that far */
  readonly connectedFor: number | undefined
  /** the primary address is reachable again (round_robin false): reconnect at once, no backoff step */
  readonly immediate?: boolean
}

const continueAfter = (now: number, ms: number) => ScheduleDecision.continueWith(ScheduleInterval.after(now + ms))

/** One step of Mosquitto's decorrelated jitter, in ms: uniform in [base, prev × 3), at most cap. */
export const jitterStep = (base: number, cap: number, prev: number): Effect.Effect<number> =>
  Effect.map(Random.nextIntBetween(base, Math.max(base + 1, prev * 3)), (n) => Math.min(cap, n))

/**
 * `restart_timeout` as a Schedule over attempt outcomes; its output is the
 * delay before the next attempt. It never ends: an automatic bridge retries forever.
 */
export const restartSchedule = (timeout: RestartTimeout): Schedule.Schedule<Duration.Duration, AttemptOutcome> => {
  if (timeout._tag === "Constant") {
    const ms = timeout.seconds * 1000
    return Schedule.makeWithState<undefined, AttemptOutcome, Duration.Duration>(undefined, (now, outcome) => {
      const delay = outcome.immediate === true ? 0 : ms
      return Effect.succeed([undefined, Duration.millis(delay), continueAfter(now, delay)] as const)
    })
  }
  const base = timeout.base * 1000
  const cap = timeout.cap * 1000
  const stable = timeout.stable * 1000
  return Schedule.makeWithState<number, AttemptOutcome, Duration.Duration>(base, (now, outcome, prev) => {
    if (outcome.immediate === true) return Effect.succeed([prev, Duration.zero, continueAfter(now, 0)] as const)
    // 2.1: a connection that was stable long enough resets the backoff to its base
    const next =
      outcome.connectedFor !== undefined && outcome.connectedFor >= stable ? Effect.succeed(base) : jitterStep(base, cap, prev)
    return Effect.map(next, (delay) => [delay, Duration.millis(delay), continueAfter(now, delay)] as const)
  })
}

// ---------------------------------------------------------------------------
// start types: three small functions over the link

/**
 * `start_type automatic`: connect at start, and again after every failure as
 * the schedule says, forever (the error channel stays empty as long as the
 * schedule never ends, which `restartSchedule` does not).
 */
export const automatic = <E extends AttemptOutcome, R>(
  link: Effect.Effect<void, E, R>,
  schedule: Schedule.Schedule<Duration.Duration, AttemptOutcome>
): Effect.Effect<never, E, R> => Effect.forever(Effect.retry(link, schedule))

/** `start_type once`: connect at start; when the connection fails or ends, the bridge stays down. */
export const once = <E, R>(link: Effect.Effect<void, E, R>, onFailure: (e: E) => Effect.Effect<void>): Effect.Effect<void, never, R> =>
  Effect.catchAll(link, onFailure)

/**
 * `start_type lazy`: wait for demand (`threshold` messages queued), run the
 * link until it goes idle (`idle_timeout`, the link then ends successfully),
 * and wait again; a failed attempt is retried as the schedule says, once
 * there is demand again.
 */
export const lazy = <E extends AttemptOutcome, R>(
  link: Effect.Effect<void, E, R>,
  demand: Effect.Effect<void>,
  schedule: Schedule.Schedule<Duration.Duration, AttemptOutcome>
): Effect.Effect<never, E, R> => Effect.forever(Effect.retry(Effect.zipRight(demand, link), schedule))

// ---------------------------------------------------------------------------
// lazy building blocks

/**
 * Completes once nothing was sent for `idleMs` of Clock time. `lastActivity`
 * is read at each wake-up, so activity in between pushes the deadline back.
 */
export const idle = (lastActivity: () => number, idleMs: number): Effect.Effect<void> =>
  Effect.gen(function* () {
    while (true) {
      const now = yield* Clock.currentTimeMillis
      const wait = lastActivity() + idleMs - now
      if (wait <= 0) return
      yield* Effect.sleep(Duration.millis(wait))
    }
  })

/**
 * Demand for a lazy bridge: `await` completes when `ready()` holds (the queue
 * reached the threshold); `notify()` is called synchronously whenever it may
 * have become true (a message was queued).
 */
export class Demand {
  private waiter: Deferred.Deferred<void> | undefined = undefined

  constructor(private readonly ready: () => boolean) {}

  notify(): void {
    const w = this.waiter
    if (w !== undefined && this.ready()) {
      this.waiter = undefined
      Deferred.unsafeDone(w, Exit.void)
    }
  }

  readonly await: Effect.Effect<void> = Effect.flatMap(Deferred.make<void>(), (d) => {
    if (this.ready()) return Effect.void
    this.waiter = d
    return Deferred.await(d)
  })
}
