/**
 * Work for the end of the current event-loop turn, all of it under one `setImmediate`.
 *
 * The connections' writes (`FlushScheduler`: one write per connection per turn) and the log's
 * lines (`TurnBatchedSink`: one write per destination per turn) both wait for the end of the
 * turn. Each used to schedule its own immediate, so a turn that connected a client paid for two
 * (an `Immediate` object, its async context and a pass through Node's immediate queue, each).
 * One queue for both: the first task of a turn schedules the immediate, later ones join it.
 *
 * Tasks run in the order they were queued. A task queued while the queue runs (a flush that
 * logs, say) runs in the next immediate, as it would have with an immediate of its own. A task
 * that throws does not cancel the ones queued after it: they run in the next immediate, first
 * (with immediates of their own they would have run regardless), and the exception goes on to
 * Node as before.
 */
let queue: Array<() => void> = []
let scheduled = false

const run = (): void => {
  scheduled = false
  const tasks = queue
  queue = []
  let i = 0
  try {
    for (; i < tasks.length; i++) tasks[i]()
  } finally {
    if (i < tasks.length - 1) {
      queue = tasks.slice(i + 1).concat(queue)
      if (!scheduled) {
        scheduled = true
        setImmediate(run)
      }
    }
  }
}

/** Run `task` once at the end of this turn (with whatever else is queued for it). */
export const atEndOfTurn = (task: () => void): void => {
  queue.push(task)
  if (!scheduled) {
    scheduled = true
    setImmediate(run)
  }
}
