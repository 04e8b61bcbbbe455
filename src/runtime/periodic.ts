/**
 * A periodic task whose interval a reload can change (`sys_interval`, `autosave_interval`): the
 * task runs in a `FiberHandle`, so setting a new interval replaces the running schedule.
 */
import { Duration, Effect, FiberHandle, Schedule } from "effect"

/**
 * Run `task` every `seconds` in `handle` from now (the first run one interval from now),
 * interrupting what ran there; `seconds` ≤ 0: nothing runs.
 */
export const runEvery = (handle: FiberHandle.FiberHandle<void, never>, seconds: number, task: Effect.Effect<void>): Effect.Effect<void> =>
  seconds <= 0
    ? FiberHandle.clear(handle)
    : Effect.asVoid(FiberHandle.run(handle, task.pipe(Effect.schedule(Schedule.spaced(Duration.seconds(seconds))), Effect.asVoid)))
