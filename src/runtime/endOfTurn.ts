/**
 * Work for the end of the current event-loop turn, all of it under one `setImmediate`.
 *
 * The connections' writes (`FlushScheduler`: one write per connection per turn) and the log's
 * lines (`TurnBatchedSink`: at most one write per destination per turn) both wait for the end of the
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
/**
 * A list filled during a turn and drained once at its end. It keeps two arrays and swaps them:
 * a fresh `[]` each turn, grown by its first push, was ~150 bytes of garbage a turn, and at
 * 1,000 QoS 1 messages a second each message is a turn or two (docs/performance.md, "Twelfth
 * round"). Items pushed while the list drains wait for the next drain. The arrays keep the
 * length of the busiest turn so far (a pointer per item: 80 KB for a turn of 10,000 connections).
 */
export class TurnList<T> {
  private filling: Array<T | undefined> = []
  private count = 0
  private draining: Array<T | undefined> = []

  /** items waiting for the next drain */
  get length(): number {
    return this.count
  }

  push(item: T): void {
    this.filling[this.count++] = item
  }

  /**
   * Hand each waiting item to `f`, in the order pushed. If `f` throws, the items after the one it
   * threw on go back to the front of the list (before those pushed meanwhile), and the exception
   * goes on.
   */
  drain(f: (item: T) => void): void {
    const items = this.filling
    const n = this.count
    this.filling = this.draining
    this.draining = items
    this.count = 0
    let i = 0
    try {
      for (; i < n; i++) {
        const item = items[i] as T
        // the arrays are kept: what was drained must not be held by them
        items[i] = undefined
        f(item)
      }
    } finally {
      if (i < n) {
        const rest = items.slice(i + 1, n)
        const later = this.filling.slice(0, this.count)
        items.fill(undefined, 0, n)
        this.filling.fill(undefined, 0, this.count)
        this.count = 0
        for (const item of rest) this.push(item as T)
        for (const item of later) this.push(item as T)
      }
    }
  }
}

/**
 * Items handed, each once, to `each` in a run that `later` schedules: the first item since the
 * last run schedules one, later ones join it. A run that `each` throws in schedules another for
 * the items after the one it threw on (they go first), and the exception goes on.
 */
export class TurnQueue<T> {
  private readonly items = new TurnList<T>()
  private scheduled = false

  constructor(
    private readonly each: (item: T) => void,
    private readonly later: (run: () => void) => void
  ) {}

  add(item: T): void {
    this.items.push(item)
    this.schedule()
  }

  private schedule(): void {
    if (!this.scheduled) {
      this.scheduled = true
      this.later(this.run)
    }
  }

  private readonly run = (): void => {
    this.scheduled = false
    try {
      this.items.drain(this.each)
    } finally {
      if (this.items.length > 0) this.schedule()
    }
  }
}

const tasks = new TurnQueue<() => void>(
  (task) => task(),
  (run) => setImmediate(run)
)

/** Run `task` once at the end of this turn (with whatever else is queued for it). */
export const atEndOfTurn = (task: () => void): void => tasks.add(task)
