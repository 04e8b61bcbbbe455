/**
 * The daemon's young generation: small while traffic is light, V8's own growth under load.
 *
 * V8 starts the young generation (the semi-spaces new objects are made in) at 1 MiB and doubles it
 * whenever enough objects survive its collections, up to 16 MiB. Loading Midge's modules makes
 * it grow to the maximum before the first client connects, and it never shrinks while messages
 * flow. A 16 MiB young generation is what high rates want (QoS 0 fan-in: a backlog of frames
 * waiting for the subscriber dies young instead of being promoted), but at a few thousand
 * messages a second it costs latency: every message's objects land in memory that has left the
 * CPU's caches, and a scavenge comes every few seconds and takes milliseconds. With 1 MiB the
 * QoS 1 round trip's p99 at 1,000 msg/s went from 2.5–3.3 to 1.5–1.7 ms; fixed at 1 MiB, QoS 0
 * fan-in lost half its rate (docs/performance.md, "The young generation").
 *
 * So the daemon holds V8's growth off (`--semi-space-growth-factor=1`, set before the modules are
 * loaded, which is when V8 would grow it) and watches the scavenges: when they come faster than
 * `high` bytes of allocation per millisecond while messages flow (`messagesHigh` a second), twice
 * in a row, growth goes back on (V8's factor, 2) and V8 sizes the young generation as it would
 * have; when allocation or messages fall below `low` / `messagesLow`, growth goes off again (V8 shrinks a young generation on its own when the process idles; a grown one
 * is kept while traffic continues). `MIDGE_YOUNG_GEN=v8` leaves V8's growth alone from the start,
 * as does a semi-space flag of the user's on Node's command line or in NODE_OPTIONS.
 *
 * Scavenges are single-threaded while no messages flow (fewer than `messagesParallel` a second)
 * and the young generation is held small: a storm of connections, or an idle broker. Otherwise
 * they are parallel, V8's default. A scavenge of a 1 MiB semi-space is split between the main
 * thread and one of V8's worker threads; on two cores that worker waits for the core the clients
 * are on, while the main thread waits for it. 10,000 connects cost 73–86 ms of scavenges
 * single-threaded against 91–112 ms in parallel, and 5 % less of the broker's CPU. With messages
 * flowing, the parallel ones are shorter pauses for the messages that wait behind them (QoS 1 at
 * 1,000 msg/s: 0.97 against 1.19 ms, median; mqload's p99 lower in 5 of 6 rounds), and under a
 * flood, with a semi-space of up to 16 MiB, they held QoS 1 fan-in ~15 % higher
 * (docs/performance.md, "Eleventh round"). A scavenge flag of the user's
 * (`--parallel-scavenge`, `--no-parallel-scavenge`, `--single-threaded-gc`) stands, as a
 * semi-space flag does.
 *
 * This is the daemon's choice for its own process: the library (a Layer in someone's application)
 * never changes V8's flags.
 */
import { performance, constants as perfConstants, PerformanceObserver, type PerformanceEntry } from "node:perf_hooks"
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8"

export interface GrowthPolicy {
  /** allocation rate (bytes per ms, from the scavenges' spacing) above which growth goes on */
  readonly high: number
  /** allocation rate below which growth goes off */
  readonly low: number
  /** messages (received + sent) per second above which growth may go on */
  readonly messagesHigh: number
  /** messages per second below which growth goes off */
  readonly messagesLow: number
  /** consecutive scavenges beyond a threshold before switching */
  readonly streak: number
}

/**
 * 32 MB/s is ~8,000 QoS 1 messages a second with their acknowledgements, 8 MB/s ~2,000. The
 * message rate keeps a storm of connections (objects that live as long as the connection,
 * which a large young generation only copies before promoting them) from turning growth on.
 */
export const defaultPolicy: GrowthPolicy = { high: 32_000, low: 8_000, messagesHigh: 10_000, messagesLow: 2_500, streak: 2 }

/** messages (received + sent) per second from which scavenges are parallel even while the young generation is small */
export const messagesParallel = 200

/** Should scavenges be parallel: while growth is on, or while messages flow. */
export const parallelScavenges = (growing: boolean, messageRate: number): boolean => growing || messageRate >= messagesParallel

/** V8's default `--semi-space-growth-factor` */
const V8_GROWTH_FACTOR = 2

/**
 * The switch's decision, apart from V8. Fed, each time the garbage collector reports (the time
 * in ms, how many scavenges since the last report, the semi-space's capacity in bytes and the
 * broker's message counter), it says when growth should go on (`true`) or off (`false`). Node
 * reports collections after the fact and several at once when the event loop is busy: the rates
 * are taken over the time between reports.
 */
export class GrowthSwitch {
  growing = false
  /** the allocation rate the last scavenge showed (bytes per ms), for the log */
  rate = 0
  /** the message rate since the scavenge before (per second), for the log */
  messageRate = 0
  private last = -1
  private lastMessages = 0
  private count = 0

  constructor(readonly policy: GrowthPolicy = defaultPolicy) {}

  scavenged(at: number, capacity: number, messages: number, scavenges = 1): boolean | undefined {
    const last = this.last
    const lastMessages = this.lastMessages
    this.last = at
    this.lastMessages = messages
    if (last < 0) return undefined
    const ms = Math.max(at - last, 0.001)
    // the semi-space filled once per scavenge (a scavenge empties it)
    this.rate = (capacity * scavenges) / ms
    this.messageRate = ((messages - lastMessages) * 1000) / ms
    const p = this.policy
    const beyond = this.growing ? this.rate < p.low || this.messageRate < p.messagesLow : this.rate > p.high && this.messageRate > p.messagesHigh
    if (!beyond) {
      this.count = 0
      return undefined
    }
    if (++this.count < p.streak) return undefined
    this.count = 0
    this.growing = !this.growing
    return this.growing
  }
}

/** Did the user give Node a flag matching `pattern`, on its command line or in NODE_OPTIONS? Their choice stands. */
const userFlag = (pattern: RegExp): boolean =>
  [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)].some((arg) => pattern.test(arg))

/** a semi-space flag */
const userSetSemiSpace = (): boolean => userFlag(/^--(max|min)[-_]semi[-_]space[-_]size|^--semi[-_]space[-_]growth[-_]factor/)

/** a scavenge-threading flag */
const userSetScavenging = (): boolean => userFlag(/^--(no-)?parallel[-_]scavenge|^--single[-_]threaded/)

/** the semi-space's capacity now, in bytes (V8 reports the new space as both semi-spaces) */
export const semiSpaceBytes = (): number => {
  for (const space of getHeapSpaceStatistics()) if (space.space_name === "new_space") return space.space_size / 2
  return 0
}

/** a young-generation collection (a scavenge), among the `gc` entries of a PerformanceObserver */
export const isScavenge = (entry: PerformanceEntry): boolean =>
  (entry as unknown as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MINOR

let held = false
/** scavenges follow the switch and the message rate (single-threaded while held small and no messages flow) */
let scavengesFollow = false
let scavengesParallel = true

/**
 * Hold V8's growth off, before the daemon's modules load (loading them is what grows the young
 * generation first). `mode` is `MIDGE_YOUNG_GEN`: `adaptive` (the default) or `v8`. Returns
 * whether the hold is on.
 */
export const holdYoungGeneration = (mode: string | undefined): boolean => {
  if ((mode ?? "adaptive") !== "adaptive" || userSetSemiSpace()) return false
  // a runtime whose V8 flags are frozen after start-up refuses: then V8 sizes it, as before
  if (!setGrowthFactor(1)) return false
  held = true
  scavengesFollow = !userSetScavenging() && setParallelScavenge(false)
  if (scavengesFollow) scavengesParallel = false
  return true
}

const setParallelScavenge = (parallel: boolean): boolean => {
  try {
    setFlagsFromString(parallel ? "--parallel-scavenge" : "--no-parallel-scavenge")
    return true
  } catch {
    return false
  }
}

const setGrowthFactor = (factor: number): boolean => {
  try {
    setFlagsFromString(`--semi-space-growth-factor=${factor}`)
    return true
  } catch {
    return false
  }
}

/**
 * Once the broker serves (its start-up allocations behind it), let the scavenges decide: growth
 * on under load, off when it is light. Does nothing unless `holdYoungGeneration` held it.
 */
export const watchYoungGeneration = (messages: () => number, onSwitch?: (growing: boolean, growth: GrowthSwitch) => void): void => {
  if (!held) return
  held = false
  const growth = new GrowthSwitch()
  new PerformanceObserver((list) => {
    let scavenges = 0
    for (const entry of list.getEntries()) {
      if (isScavenge(entry)) scavenges++
    }
    if (scavenges === 0) return
    const decision = growth.scavenged(performance.now(), semiSpaceBytes(), messages(), scavenges)
    if (scavengesFollow) {
      const parallel = parallelScavenges(growth.growing, growth.messageRate)
      if (parallel !== scavengesParallel && setParallelScavenge(parallel)) scavengesParallel = parallel
    }
    if (decision === undefined) return
    if (setGrowthFactor(decision ? V8_GROWTH_FACTOR : 1)) onSwitch?.(decision, growth)
  }).observe({ entryTypes: ["gc"] })
}
