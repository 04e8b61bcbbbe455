/**
 * The `$SYS/broker/...` tree, as Mosquitto 2.0's sys_tree.c publishes it: the
 * same topic names and payload formats, every message retained at QoS 2.
 *
 * - `$SYS/broker/version` ("midge version X") once, at start.
 * - Every `sys_interval` seconds, and once at start: `uptime` ("N seconds",
 *   always), then each counter whose value changed since the last round
 *   (all of them in the first round; `clients/maximum` only when it grows), and
 *   the 1 / 5 / 15 minute load averages that moved by 0.01 or more (all at
 *   "0.00" in the first round).
 * - `sys_interval 0`: nothing at all, as in Mosquitto ("disable publishing the
 *   $SYS hierarchy completely", mosquitto.conf(5)).
 *
 * Usage: `SysTopics.layer({ interval: config.sysInterval, version })`, a Layer
 * that needs the {@link Broker}. A round is plain synchronous code on a fiber
 * driven by `Schedule.spaced` and the Clock (so TestClock drives it in tests);
 * nothing here runs per message.
 */
import { Cause, Effect, FiberHandle, Layer, type Scope } from "effect"
import { Broker } from "../Broker.js"
import { runEvery } from "../runtime/periodic.js"
import type { Core } from "../session/Core.js"
import { Sampler, type Sample, type SampleKey } from "./internal/sample.js"

export interface SysTopicsOptions {
  /** seconds between rounds (`sys_interval`); 0 disables `$SYS` */
  readonly interval: number
  /** published as "midge version <version>" */
  readonly version: string
}

/** Mosquitto's SYS_TREE_QOS */
const SYS_QOS = 2

interface Counter {
  readonly key: SampleKey
  readonly topic: string
  /** Mosquitto's deprecated second name, published with the same value */
  readonly alias?: string
  /** published only when it grows (`clients/maximum`) */
  readonly growsOnly?: boolean
}

/** In Mosquitto 2.0's order of publication. */
const COUNTERS: ReadonlyArray<Counter> = [
  { key: "clientsTotal", topic: "$SYS/broker/clients/total" },
  { key: "clientsMaximum", topic: "$SYS/broker/clients/maximum", growsOnly: true },
  { key: "clientsDisconnected", topic: "$SYS/broker/clients/disconnected", alias: "$SYS/broker/clients/inactive" },
  { key: "clientsConnected", topic: "$SYS/broker/clients/connected", alias: "$SYS/broker/clients/active" },
  { key: "clientsExpired", topic: "$SYS/broker/clients/expired" },
  { key: "storeCount", topic: "$SYS/broker/store/messages/count", alias: "$SYS/broker/messages/stored" },
  { key: "storeBytes", topic: "$SYS/broker/store/messages/bytes" },
  { key: "subscriptions", topic: "$SYS/broker/subscriptions/count" },
  { key: "sharedSubscriptions", topic: "$SYS/broker/shared_subscriptions/count" },
  { key: "retained", topic: "$SYS/broker/retained messages/count" },
  { key: "heapCurrent", topic: "$SYS/broker/heap/current" },
  { key: "heapMaximum", topic: "$SYS/broker/heap/maximum" },
  { key: "messagesReceived", topic: "$SYS/broker/messages/received" },
  { key: "messagesSent", topic: "$SYS/broker/messages/sent" },
  { key: "publishDropped", topic: "$SYS/broker/publish/messages/dropped" },
  { key: "publishReceived", topic: "$SYS/broker/publish/messages/received" },
  { key: "publishSent", topic: "$SYS/broker/publish/messages/sent" },
  { key: "bytesReceived", topic: "$SYS/broker/bytes/received" },
  { key: "bytesSent", topic: "$SYS/broker/bytes/sent" },
  { key: "publishBytesReceived", topic: "$SYS/broker/publish/bytes/received" },
  { key: "publishBytesSent", topic: "$SYS/broker/publish/bytes/sent" }
]

/** The counters whose rate `$SYS/broker/load/<name>/{1min,5min,15min}` averages. */
const LOADS: ReadonlyArray<{ readonly key: SampleKey; readonly name: string }> = [
  { key: "messagesReceived", name: "messages/received" },
  { key: "messagesSent", name: "messages/sent" },
  { key: "publishDropped", name: "publish/dropped" },
  { key: "publishReceived", name: "publish/received" },
  { key: "publishSent", name: "publish/sent" },
  { key: "bytesReceived", name: "bytes/received" },
  { key: "bytesSent", name: "bytes/sent" },
  { key: "sockets", name: "sockets" },
  { key: "connections", name: "connections" }
]

/** Averaging windows of the loads, in seconds. */
const WINDOWS: ReadonlyArray<{ readonly seconds: number; readonly suffix: string }> = [
  { seconds: 60, suffix: "1min" },
  { seconds: 300, suffix: "5min" },
  { seconds: 900, suffix: "15min" }
]

const LOAD_TOPICS: ReadonlyArray<ReadonlyArray<string>> = LOADS.map((l) =>
  WINDOWS.map((w) => `$SYS/broker/load/${l.name}/${w.suffix}`)
)

/**
 * sys_tree.c's `calc_load`: the counter's increase over the last `seconds`,
 * as a per-minute rate, folded into an exponentially decaying average.
 */
export const nextLoad = (current: number, increase: number, seconds: number, window: number): number => {
  const perMinute = (increase * 60) / seconds
  return perMinute + Math.exp(-seconds / window) * (current - perMinute)
}

/**
 * The state of the `$SYS` tree between rounds: the last published value of
 * every counter and load. Plain code; `round()` publishes through the core.
 */
export class SysTree {
  private readonly sampler: Sampler
  /** last published values; NaN: never published */
  private readonly published: Float64Array
  private readonly loads: Float64Array
  /** counter values the loads were last computed from */
  private readonly loadBase: Float64Array
  private lastRound = Number.NaN

  constructor(
    private readonly core: Core,
    private readonly version: string,
    heapUsed?: () => number
  ) {
    this.sampler = new Sampler(core, core.now(), heapUsed)
    this.published = new Float64Array(COUNTERS.length)
    for (let i = 0; i < COUNTERS.length; i++) this.published[i] = COUNTERS[i].growsOnly === true ? 0 : Number.NaN
    this.loads = new Float64Array(LOADS.length * WINDOWS.length)
    this.loadBase = new Float64Array(LOADS.length)
  }

  private publish(topic: string, payload: string): void {
    this.core.publish(topic, Buffer.from(payload), SYS_QOS, true)
  }

  /** `$SYS/broker/version`, published once. */
  start(): void {
    this.publish("$SYS/broker/version", `midge version ${this.version}`)
    this.round()
  }

  /** One update: uptime, the changed counters and the moved loads. */
  round(): void {
    const now = this.core.now()
    const s = this.sampler.read()
    this.publish("$SYS/broker/uptime", `${s.uptime} seconds`)
    this.publishLoads(s, now)
    const published = this.published
    for (let i = 0; i < COUNTERS.length; i++) {
      const c = COUNTERS[i]
      const value = s[c.key]
      if (c.growsOnly === true ? value > published[i] : value !== published[i]) {
        published[i] = value
        const text = String(value)
        this.publish(c.topic, text)
        if (c.alias !== undefined) this.publish(c.alias, text)
      }
    }
    this.lastRound = now
  }

  private publishLoads(s: Sample, now: number): void {
    const first = Number.isNaN(this.lastRound)
    const seconds = (now - this.lastRound) / 1000
    if (!first && !(seconds > 0)) return
    const loads = this.loads
    for (let i = 0; i < LOADS.length; i++) {
      const value = s[LOADS[i].key]
      const increase = value - this.loadBase[i]
      this.loadBase[i] = value
      for (let w = 0; w < WINDOWS.length; w++) {
        const at = i * WINDOWS.length + w
        if (first) {
          // sys_tree.c publishes every load as 0 at start
          this.publish(LOAD_TOPICS[i][w], "0.00")
          continue
        }
        const next = nextLoad(loads[at], increase, seconds, WINDOWS[w].seconds)
        if (Math.abs(next - loads[at]) >= 0.01) this.publish(LOAD_TOPICS[i][w], next.toFixed(2))
        loads[at] = next
      }
    }
  }
}

/** The running `$SYS` publisher: SIGHUP gives it the reloaded `sys_interval`. */
export interface SysTopicsHandle {
  /**
   * A new `sys_interval`, as a reload reads it (Mosquitto re-reads it on SIGHUP): the next round
   * comes that many seconds from now; 0 stops the rounds (what was published stays retained); from
   * 0, publishing starts (the version and a first round now).
   */
  readonly reconfigure: (interval: number) => Effect.Effect<void>
}

/**
 * Publish `$SYS` in the current scope: the version and a first round now, then
 * a round every `interval` seconds until the scope closes.
 */
export const make = (options: SysTopicsOptions): Effect.Effect<SysTopicsHandle, never, Broker | Scope.Scope> =>
  Effect.gen(function* () {
    const broker = yield* Broker
    const rounds = yield* FiberHandle.make<void, never>()
    let tree: SysTree | undefined
    let current = 0
    const start = (interval: number): Effect.Effect<void> =>
      Effect.suspend(() => {
        current = interval
        if (interval <= 0) return FiberHandle.clear(rounds)
        if (tree === undefined) {
          tree = new SysTree(broker.core, options.version)
          tree.start()
        }
        const t = tree
        // a failing round (a bug further down the delivery path) is logged; the next one still runs
        const round = Effect.sync(() => t.round()).pipe(
          Effect.catchAllCause((cause) => Effect.sync(() => broker.core.log.error(`Error: $SYS update failed: ${Cause.pretty(cause)}`)))
        )
        // the previous schedule, if any, is interrupted
        return runEvery(rounds, interval, round)
      })
    yield* start(options.interval)
    return { reconfigure: (interval) => Effect.suspend(() => (interval === current ? Effect.void : start(interval))) }
  })

/** `$SYS` as a Layer over the {@link Broker}. */
export const layer = (options: SysTopicsOptions): Layer.Layer<never, never, Broker> => Layer.scopedDiscard(make(options))
