/**
 * Waiting for event-loop turns, and catching what a turn throws, for tests of end-of-turn work
 * (src/runtime/endOfTurn.ts, the connections' FlushScheduler).
 */

/** resolves after the immediates queued so far (and those they queue, `n` deep) have run */
export const turns = (n: number): Promise<void> =>
  new Promise<void>((resolve) => {
    const step = (left: number) => (left === 0 ? resolve() : setImmediate(() => step(left - 1)))
    step(n)
  })

/**
 * Run `body` with the process's `uncaughtException` listeners replaced by one that collects the
 * errors (an exception thrown in an immediate reaches the process, not the test); returns them.
 */
export const collectingUncaught = async (body: () => Promise<void>): Promise<Array<unknown>> => {
  const errors: Array<unknown> = []
  const listeners = process.listeners("uncaughtException")
  process.removeAllListeners("uncaughtException")
  process.on("uncaughtException", (error) => errors.push(error))
  try {
    await body()
  } finally {
    process.removeAllListeners("uncaughtException")
    for (const l of listeners) process.on("uncaughtException", l)
  }
  return errors
}
