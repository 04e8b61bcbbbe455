/**
 * One timer for all the connections of a listener: the pre-CONNECT timeout and
 * the keepalive watchdog [MQTT-3.1.2-24]. A per-connection fiber (or
 * `setTimeout`) costs several kilobytes and a fork per connect; here a
 * connection costs two number fields and one slot of a binary heap.
 *
 * The heap is ordered by each connection's *due* time (`watchAt`): for a
 * connection that has not finished CONNECT, the end of the connect timeout;
 * once connected, a lower bound of its keepalive deadline. Packets do not touch
 * the heap — they only stamp `lastActivity` — so when an entry comes due, the
 * real deadline (`lastActivity + 1.5 × keepalive`) is computed and the entry
 * moves down if the client spoke meanwhile.
 *
 * One fiber reads the `Clock` and sleeps until the earliest due time, so
 * `TestClock` drives it in tests (style.md, example 6). An entry earlier than
 * the fiber's wake-up time wakes it.
 */
import { Clock, Deferred, Duration, Effect, Exit, FiberId } from "effect"

/** What the watchdog needs of a connection. */
export interface Watched {
  /** the connection's slot in the heap, -1 when not in it */
  watchIndex: number
  /** Clock ms when its entry comes due */
  watchAt: number
  readonly state: "new" | "connecting" | "connected" | "closed"
  /** seconds; 0 disables the watchdog [MQTT-3.1.2-23] */
  readonly keepalive: number
  /** Clock ms of the last bytes received */
  readonly lastActivity: number
  /** no CONNECT (or no authentication decision) in time */
  connectTimedOut(): void
  /** 1.5 × keepalive of silence */
  keepaliveExpired(): void
}

export class Watchdog<C extends Watched = Watched> {
  private readonly heap: Array<C> = []
  /** when the fiber wakes next (Infinity: not before something is added) */
  private wakeAt = Infinity
  private wake: Deferred.Deferred<void> | undefined = undefined

  constructor(
    /** the Clock's time in ms */
    private readonly now: () => number,
    /** a connection that failed while being closed: the others are still watched */
    private readonly onError: (error: unknown) => void = () => {}
  ) {}

  get size(): number {
    return this.heap.length
  }

  /** A new connection: it must finish CONNECT within `timeoutMs`. */
  accepted(conn: C, timeoutMs: number): void {
    this.schedule(conn, this.now() + timeoutMs)
  }

  /**
   * CONNECT accepted: from now on the keepalive watchdog (none for keepalive 0). The entry is
   * left where the connect timeout put it when that is no later than the keepalive deadline
   * (keepalive 7 s and more with the default 10 s timeout): still a lower bound, so `expire` moves
   * it to the real deadline when it comes due, as after any packet. Moving it now would sift it
   * down through ~log2(n) levels of connections whose objects are out of the caches, on every
   * connect (docs/performance.md, "Twenty-sixth round").
   */
  connected(conn: C): void {
    if (conn.keepalive === 0) this.remove(conn)
    else {
      const deadline = conn.lastActivity + conn.keepalive * 1500
      if (conn.watchIndex < 0 || deadline < conn.watchAt) this.schedule(conn, deadline)
    }
  }

  remove(conn: C): void {
    const i = conn.watchIndex
    if (i < 0) return
    conn.watchIndex = -1
    const last = this.heap.pop()!
    if (i < this.heap.length) {
      this.heap[i] = last
      last.watchIndex = i
      this.down(i)
      this.up(last.watchIndex)
    }
  }

  /** The fiber: close what is due, sleep until the next due time or an earlier entry. */
  readonly run: Effect.Effect<never> = Effect.gen(this, function* () {
    while (true) {
      const now = yield* Clock.currentTimeMillis
      this.expire(now)
      const next = this.heap.length > 0 ? this.heap[0].watchAt : Infinity
      const wake = Deferred.unsafeMake<void>(FiberId.none)
      this.wake = wake
      this.wakeAt = next
      if (next === Infinity) yield* Deferred.await(wake)
      else yield* Effect.raceFirst(Effect.sleep(Duration.millis(next - now)), Deferred.await(wake))
    }
  })

  /** Handle every entry due at `now`. */
  expire(now: number): void {
    const heap = this.heap
    while (heap.length > 0 && heap[0].watchAt <= now) {
      const conn = heap[0]
      if (conn.state === "connected") {
        if (conn.keepalive === 0) {
          this.remove(conn)
          continue
        }
        const deadline = conn.lastActivity + conn.keepalive * 1500 // [MQTT-3.1.2-24] one and a half times
        if (deadline > now) {
          // the client spoke since: its entry moves to the real deadline
          conn.watchAt = deadline
          this.down(0)
          continue
        }
        this.remove(conn)
        try {
          conn.keepaliveExpired()
        } catch (error) {
          this.onError(error)
        }
      } else {
        this.remove(conn)
        try {
          if (conn.state !== "closed") conn.connectTimedOut()
        } catch (error) {
          this.onError(error)
        }
      }
    }
  }

  private schedule(conn: C, at: number): void {
    const i = conn.watchIndex
    conn.watchAt = at
    if (i < 0) {
      conn.watchIndex = this.heap.length
      this.heap.push(conn)
      this.up(conn.watchIndex)
    } else {
      this.up(i)
      this.down(conn.watchIndex)
    }
    if (at < this.wakeAt && this.wake !== undefined) {
      this.wakeAt = at
      Deferred.unsafeDone(this.wake, Exit.void)
    }
  }

  private up(i: number): void {
    const heap = this.heap
    const conn = heap[i]
    const at = conn.watchAt
    while (i > 0) {
      const p = (i - 1) >> 1
      const parent = heap[p]
      if (parent.watchAt <= at) break
      heap[i] = parent
      parent.watchIndex = i
      i = p
    }
    heap[i] = conn
    conn.watchIndex = i
  }

  private down(i: number): void {
    const heap = this.heap
    const n = heap.length
    const conn = heap[i]
    const at = conn.watchAt
    while (true) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && heap[r].watchAt < heap[l].watchAt ? r : l
      const child = heap[c]
      if (child.watchAt >= at) break
      heap[i] = child
      child.watchIndex = i
      i = c
    }
    heap[i] = conn
    conn.watchIndex = i
  }
}
