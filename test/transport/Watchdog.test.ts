/**
 * The listener's Watchdog: one heap and one fiber for the connect timeout and
 * the keepalive of every connection. Held to a naive model (scan every
 * connection) on random schedules, and driven by TestClock through its fiber.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import * as fc from "fast-check"
import { Watchdog, type Watched } from "../../src/transport/Watchdog.js"

const CONNECT_TIMEOUT = 10_000

class FakeConnection implements Watched {
  watchIndex = -1
  watchAt = 0
  state: "new" | "connecting" | "connected" | "closed" = "new"
  keepalive = 0
  lastActivity = 0
  ended: "connect-timeout" | "keepalive" | "closed" | undefined = undefined
  endedAt = -1
  constructor(
    readonly id: number,
    readonly acceptedAt: number,
    private readonly watchdog: Watchdog<FakeConnection>,
    private readonly clock: () => number
  ) {}
  private end(why: "connect-timeout" | "keepalive" | "closed") {
    this.state = "closed"
    this.ended = why
    this.endedAt = this.clock()
    this.watchdog.remove(this) // as Connection.close → hooks.closed does
  }
  connectTimedOut() {
    this.end("connect-timeout")
  }
  keepaliveExpired() {
    this.end("keepalive")
  }
  close() {
    this.end("closed")
  }
}

/** What the watchdog must have done by `now`, by scanning every connection. */
const modelDue = (c: FakeConnection, now: number): "connect-timeout" | "keepalive" | undefined => {
  if (c.state === "new" || c.state === "connecting") return now >= c.acceptedAt + CONNECT_TIMEOUT ? "connect-timeout" : undefined
  if (c.state === "connected" && c.keepalive > 0) return now >= c.lastActivity + c.keepalive * 1500 ? "keepalive" : undefined
  return undefined
}

type Op =
  | { readonly op: "accept" }
  | { readonly op: "authenticating"; readonly who: number }
  | { readonly op: "connect"; readonly who: number; readonly keepalive: number }
  | { readonly op: "packet"; readonly who: number }
  | { readonly op: "close"; readonly who: number }
  | { readonly op: "advance"; readonly ms: number }

const who = fc.nat({ max: 200 })
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.constant({ op: "accept" as const }), weight: 8 },
  { arbitrary: who.map((w) => ({ op: "authenticating" as const, who: w })), weight: 1 },
  { arbitrary: fc.record({ who, keepalive: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 20 })) }).map((r) => ({ op: "connect" as const, ...r })), weight: 4 },
  { arbitrary: who.map((w) => ({ op: "packet" as const, who: w })), weight: 4 },
  { arbitrary: who.map((w) => ({ op: "close" as const, who: w })), weight: 3 },
  { arbitrary: fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 3000, max: 40_000 })).map((ms) => ({ op: "advance" as const, ms })), weight: 4 }
)

/** Every connection in the heap knows its slot, and no parent is due after its children. */
const checkHeap = (conns: ReadonlyArray<FakeConnection>, watchdog: Watchdog<FakeConnection>) => {
  const bySlot = new Map<number, FakeConnection>()
  for (const c of conns) if (c.watchIndex >= 0) bySlot.set(c.watchIndex, c)
  let problem: string | undefined
  if (bySlot.size !== watchdog.size) problem = `${bySlot.size} connections claim a slot, the heap has ${watchdog.size}`
  for (const [slot, c] of bySlot) {
    if (slot >= watchdog.size) problem ??= `slot ${slot} out of range`
    const parent = slot > 0 ? bySlot.get((slot - 1) >> 1) : undefined
    if (parent !== undefined && parent.watchAt > c.watchAt) problem ??= `slot ${slot} (${c.watchAt}) under a later parent (${parent.watchAt})`
  }
  expect(problem).toBeUndefined()
}

describe("Watchdog", () => {
  it.prop(
    "closes exactly the connections the model says are due, when they are due [MQTT-3.1.2-24]",
    [fc.array(opArb, { minLength: 10, maxLength: 120, size: "max" })],
    ([ops]) => {
      let now = 0
      const clock = () => now
      const watchdog = new Watchdog<FakeConnection>(clock)
      const conns: Array<FakeConnection> = []
      for (const op of ops) {
        const c = op.op === "accept" || op.op === "advance" ? undefined : conns[op.who % Math.max(1, conns.length)]
        switch (op.op) {
          case "accept": {
            const conn = new FakeConnection(conns.length, now, watchdog, clock)
            conns.push(conn)
            watchdog.accepted(conn, CONNECT_TIMEOUT)
            break
          }
          case "authenticating":
            if (c?.state === "new") c.state = "connecting"
            break
          case "connect":
            if (c !== undefined && (c.state === "new" || c.state === "connecting")) {
              c.state = "connected"
              c.keepalive = op.keepalive
              c.lastActivity = now
              watchdog.connected(c)
            }
            break
          case "packet":
            // packets only stamp the time; the heap is not touched
            if (c !== undefined && c.state !== "closed") c.lastActivity = now
            break
          case "close":
            if (c !== undefined && c.state !== "closed") c.close()
            break
          case "advance": {
            // each connection still open is due at its deadline (later than now: checked below)
            const target = now + op.ms
            const expected = new Map<FakeConnection, { readonly at: number; readonly why: string }>()
            const open = new Set(conns.filter((conn) => conn.state !== "closed"))
            for (const conn of conns) {
              if (modelDue(conn, target) === undefined) continue
              const keepalive = conn.state === "connected"
              const at = keepalive ? conn.lastActivity + conn.keepalive * 1500 : conn.acceptedAt + CONNECT_TIMEOUT
              expected.set(conn, { at, why: keepalive ? "keepalive" : "connect-timeout" })
            }
            // the fiber: wake at the earliest due time, handle what is due, again until the target
            while (true) {
              const due = conns.filter((x) => x.watchIndex >= 0).map((x) => x.watchAt)
              const next = due.length > 0 ? Math.max(now, Math.min(...due)) : Infinity
              if (next > target) break
              now = next
              watchdog.expire(now)
            }
            now = target
            for (const conn of conns) {
              const e = expected.get(conn)
              if (e !== undefined) expect([conn.ended, conn.endedAt]).toEqual([e.why, e.at])
              else if (open.has(conn)) expect(conn.state).not.toBe("closed")
            }
            break
          }
        }
        checkHeap(conns, watchdog)
        // nothing due is left unhandled, nothing closed stays in the heap
        for (const conn of conns) {
          if (conn.state === "closed") expect(conn.watchIndex).toBe(-1)
          if (op.op === "advance") expect(modelDue(conn, now)).toBeUndefined()
        }
      }
    },
    { fastCheck: { seed: 20261125, numRuns: 50 } }
  )

  it.prop(
    "the heap stays ordered under any mix of new entries, reschedules and removals; entries come due in time order",
    [
      fc.array(
        fc.oneof(
          fc.record({ op: fc.constant("add" as const), ms: fc.integer({ min: 1, max: 1_000_000 }) }),
          fc.record({ op: fc.constant("connect" as const), who: fc.nat(), keepalive: fc.integer({ min: 1, max: 65535 }) }),
          fc.record({ op: fc.constant("remove" as const), who: fc.nat() })
        ),
        { minLength: 30, maxLength: 200, size: "max" }
      )
    ],
    ([ops]) => {
      const watchdog = new Watchdog<FakeConnection>(() => 0)
      const conns: Array<FakeConnection> = []
      for (const op of ops) {
        if (op.op === "add") {
          const conn = new FakeConnection(conns.length, 0, watchdog, () => 0)
          conns.push(conn)
          watchdog.accepted(conn, op.ms)
        } else if (conns.length > 0) {
          const conn = conns[op.who % conns.length]
          if (op.op === "remove") watchdog.remove(conn)
          else if (conn.watchIndex >= 0) {
            conn.state = "connected"
            conn.keepalive = op.keepalive
            watchdog.connected(conn)
          }
        }
        checkHeap(conns, watchdog)
      }
      // everything comes due, earliest first
      const order: Array<number> = []
      const open = conns.filter((c) => c.watchIndex >= 0)
      for (const c of open) c.lastActivity = -Infinity // silent since: due at its entry
      let now = 0
      while (watchdog.size > 0) {
        now = Math.min(...open.filter((c) => c.watchIndex >= 0).map((c) => c.watchAt))
        const before = open.filter((c) => c.watchIndex >= 0)
        watchdog.expire(now)
        for (const c of before) if (c.watchIndex < 0) order.push(c.watchAt)
        checkHeap(conns, watchdog)
      }
      expect(order).toEqual([...order].sort((a, b) => a - b))
      expect(order.length).toBe(open.length)
    },
    { fastCheck: { seed: 20261125, numRuns: 100 } }
  )

  it.scoped("its fiber sleeps until the earliest due time; an earlier entry wakes it", () =>
    Effect.gen(function* () {
      const testClock = yield* Effect.clock
      const clock = () => testClock.unsafeCurrentTimeMillis()
      const watchdog = new Watchdog<FakeConnection>(clock)
      const fiber = yield* Effect.forkScoped(watchdog.run)
      const settle = Effect.repeatN(Effect.yieldNow(), 20)
      const tick = (ms: number) => Effect.zipRight(TestClock.adjust(ms), settle)
      yield* settle
      // a client with keepalive 100: the fiber sleeps until 150 s
      const idle = new FakeConnection(0, 0, watchdog, clock)
      watchdog.accepted(idle, CONNECT_TIMEOUT)
      idle.state = "connected"
      idle.keepalive = 100
      watchdog.connected(idle)
      yield* tick(1000)
      // a new socket at t = 1 s must be closed at 11 s, long before 150 s
      const silent = new FakeConnection(1, 1000, watchdog, clock)
      watchdog.accepted(silent, CONNECT_TIMEOUT)
      yield* tick(9999)
      expect(silent.state).toBe("new")
      yield* tick(1)
      expect([silent.ended, silent.endedAt]).toEqual(["connect-timeout", 11_000])
      // the idle client spoke at 100 s: it lasts until 250 s
      yield* tick(89_000)
      idle.lastActivity = clock()
      yield* tick(149_999)
      expect(idle.state).toBe("connected")
      yield* tick(1)
      expect([idle.ended, idle.endedAt]).toEqual(["keepalive", 250_000])
      expect(watchdog.size).toBe(0)
      // an empty watchdog waits without a deadline, and wakes for the next connection
      const late = new FakeConnection(2, clock(), watchdog, clock)
      watchdog.accepted(late, CONNECT_TIMEOUT)
      yield* tick(CONNECT_TIMEOUT)
      expect(late.ended).toBe("connect-timeout")
      expect(fiber.unsafePoll()).toBeNull()
      yield* Fiber.interrupt(fiber)
    })
  )
})
