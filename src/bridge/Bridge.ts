/**
 * Bridges: Mosquitto's `connection` blocks, unchanged, linking the Midge
 * broker to other brokers (Mosquitto or any MQTT 3.1 / 3.1.1 / 5 broker).
 *
 * ```ts
 * const bridges = yield* Bridge.fromConfig(config)            // ConfigError: file:line option: message
 * yield* Bridge.make(bridges).pipe(Effect.provideService(Broker, broker))   // in the daemon's scope
 * ```
 *
 * Each bridge is one supervised fiber, in a scope of its own (a child of the
 * caller's), running its `start_type` strategy over one connect-and-pump
 * effect; `restart_timeout` is the Schedule of `Effect.retry`. `reload`
 * (SIGHUP) stops, starts or restarts only the bridges whose blocks were
 * removed, added or changed. Everything stops with the scope: the
 * sockets are closed (the remote brokers publish the bridges' wills) and the
 * local subscriptions removed. See docs/bridges.md.
 */
import { Context, Duration, Effect, Either, ExecutionStrategy, Exit, Layer, Runtime, Schedule, Scope } from "effect"
import { Broker } from "../Broker.js"
import type { ConfigError, Directive } from "../config/Config.js"
import { type BridgeConfig, decodeBridges } from "./internal/config.js"
import { bridgeSessionKey } from "../persistence/Persistence.js"
import { type BridgeCarry, type BridgeError, BridgeRuntime, type BridgeState } from "./internal/runtime.js"
import { automatic, lazy, once, restartSchedule } from "./internal/schedule.js"

export type {
  BridgeAddress,
  BridgeConfig,
  BridgeTls,
  RestartTimeout,
  StartType,
  TlsVersion
} from "./internal/config.js"
export type { BridgeDirection, BridgeTopic } from "./internal/topics.js"
export type { BridgeState } from "./internal/runtime.js"
export { decodeBridges } from "./internal/config.js"
export { restartSchedule } from "./internal/schedule.js"

/** A bridge as it is now. */
export interface BridgeStatus {
  readonly name: string
  readonly state: BridgeState
  /** `host:port` in use, or to be tried next */
  readonly address: string
  /** messages waiting for the link (or for room in flight) */
  readonly queued: number
  /** QoS 1 / 2 messages sent and not yet acknowledged */
  readonly inFlight: number
  /** messages dropped (queue full, too large for the remote) */
  readonly dropped: number
}

/** What a reload did, by bridge name. */
export interface BridgeReload {
  readonly added: ReadonlyArray<string>
  readonly removed: ReadonlyArray<string>
  /** stopped and started again with their new configuration */
  readonly restarted: ReadonlyArray<string>
  /** connected, with `bridge_reload_type lazy`: the new configuration waits for the link's end */
  readonly deferred: ReadonlyArray<string>
}

export interface BridgeService {
  readonly status: () => ReadonlyArray<BridgeStatus>
  /**
   * SIGHUP (Mosquitto 2.1; 2.0 needs a restart for any bridge change):
   * start the bridges that are new, stop the ones that are gone, restart the
   * ones whose configuration changed; the others keep their link untouched.
   * A changed bridge that is connected, with `bridge_reload_type lazy` (the
   * default), keeps its link and takes the new configuration when the link
   * ends; `immediate` restarts it at once.
   */
  readonly reload: (bridges: ReadonlyArray<BridgeConfig>) => Effect.Effect<BridgeReload>
}

/** One running bridge: its runtime, and the scope that holds its subscriptions and its fiber. */
interface Running {
  readonly config: BridgeConfig
  readonly key: string
  readonly rt: BridgeRuntime
  readonly scope: Scope.CloseableScope
}

/**
 * Two configurations are the same bridge when they decode to the same values (where the block
 * sits in the file, and when a change of it applies, aside).
 */
const keyOf = (config: BridgeConfig): string => {
  const { file: _file, line: _line, reloadType: _reloadType, ...settings } = config
  return JSON.stringify(settings, (_k, v) => (typeof v === "bigint" ? v.toString() : v))
}

const run = (rt: BridgeRuntime): Effect.Effect<void> => {
  const c = rt.config
  const log = rt.log
  const schedule = restartSchedule(c.restartTimeout).pipe(
    Schedule.tapOutput((d) => Effect.sync(() => log.info(`Bridge ${c.name}: next connection attempt in ${Duration.format(d)}.`)))
  )
  const stayDown = (e: BridgeError) => Effect.sync(() => log.notice(`Bridge ${c.name} (start_type once) stays down: ${e.message}.`))
  const strategy: Effect.Effect<void, BridgeError> =
    c.startType === "once" ? once(rt.link, stayDown) : c.startType === "lazy" ? lazy(rt.link, rt.demand.await, schedule) : automatic(rt.link, schedule)
  return strategy.pipe(
    Effect.catchAll((e) => Effect.sync(() => log.error(`Bridge ${c.name} stopped: ${e.message}.`))),
    Effect.ensuring(Effect.sync(() => (rt.state = "stopped")))
  )
}

export class Bridge extends Context.Tag("midge/Bridge")<Bridge, BridgeService>() {
  /**
   * The bridges of a configuration (`BrokerConfig.directives`), decoded with
   * Mosquitto's rules; every problem is reported as `file:line option: message`.
   */
  static readonly fromConfig = (
    config: { readonly directives: ReadonlyArray<Directive> },
    hostname?: string
  ): Effect.Effect<ReadonlyArray<BridgeConfig>, ConfigError> => Effect.suspend(() => Either.match(decodeBridges(config.directives, hostname), { onLeft: Effect.fail, onRight: Effect.succeed }))

  /** Start every bridge in the current scope, on the `Broker` in context. */
  static readonly make = (bridges: ReadonlyArray<BridgeConfig>): Effect.Effect<BridgeService, never, Broker | Scope.Scope> =>
    Effect.gen(function* () {
      const broker = yield* Broker
      const core = broker.core
      const parent = yield* Effect.scope
      const runFork = Runtime.runFork(yield* Effect.runtime<never>())
      const running = new Map<string, Running>()
      const start = (config: BridgeConfig, carried?: BridgeCarry) =>
        Effect.gen(function* () {
          const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
          // its local session: from the store at start, from the previous runtime on a reload
          const rt = new BridgeRuntime(config, core, core.log, carried)
          // the local subscriptions live as long as the bridge: a down or lazy bridge queues;
          // the fiber (and its socket) is added after them, so it is closed before them
          yield* Scope.addFinalizer(scope, Effect.sync(() => rt.detach()))
          rt.attach()
          yield* Effect.forkIn(run(rt), scope)
          running.set(config.name, { config, key: keyOf(config), rt, scope })
        })
      const stop = (r: Running) =>
        Effect.suspend(() => {
          running.delete(r.config.name)
          return Scope.close(r.scope, Exit.void)
        })
      /** a deferred change (bridge_reload_type lazy), when the link it waited for has ended */
      const restartLater = (r: Running, config: BridgeConfig) =>
        Effect.suspend(() => {
          if (running.get(r.config.name) !== r) return Effect.void // stopped or replaced meanwhile
          core.log.notice(`Bridge ${config.name}: reconnecting with its new configuration (bridge_reload_type lazy).`)
          const carried = r.rt.carry()
          return Effect.zipRight(stop(r), start(config, carried))
        })
      for (const config of bridges) yield* start(config)
      // stored sessions of bridges no longer configured go, as their queues would at a reload
      for (const [name, stored] of core.storedBridges) {
        core.log.notice(`Bridge ${name} is no longer configured: dropping the ${stored.queue.length + stored.inflight.length} messages the store kept for it.`)
        core.store?.sessionDelete(bridgeSessionKey(name))
      }
      core.storedBridges.clear()
      return {
        status: () =>
          [...running.values()].map(({ rt }) => {
            const a = rt.config.addresses[rt.addressIndex]
            return {
              name: rt.config.name,
              state: rt.state,
              address: `${a.host}:${a.port}`,
              queued: rt.queued,
              inFlight: rt.inFlight,
              dropped: rt.dropped
            }
          }),
        reload: (next) =>
          Effect.gen(function* () {
            const wanted = new Map(next.map((c) => [c.name, c]))
            const added: Array<string> = []
            const removed: Array<string> = []
            const restarted = new Map<string, BridgeCarry>()
            const deferred: Array<string> = []
            for (const r of [...running.values()]) {
              const c = wanted.get(r.config.name)
              r.rt.onDown = undefined // a change deferred by an earlier reload is replaced by this one's
              if (c === undefined) {
                removed.push(r.config.name)
                r.rt.forget()
                yield* stop(r)
              } else if (keyOf(c) !== r.key) {
                if (c.reloadType === "lazy" && r.rt.state === "connected") {
                  // bridge_reload_type lazy: the link stays as it is; its end is the reconnection that brings the new settings
                  deferred.push(c.name)
                  // onDown runs inside the link's finalizer, on the bridge's own fiber: the restart, which
                  // interrupts that fiber, must start after it (run there and then, the two waited on each other)
                  r.rt.onDown = () => void runFork(Effect.zipRight(Effect.yieldNow(), restartLater(r, c)))
                  continue
                }
                // its queue and in-flight messages go on with the new configuration (Mosquitto keeps the bridge's session over a restart)
                restarted.set(r.config.name, r.rt.carry())
                yield* stop(r)
              }
            }
            for (const c of next) {
              if (running.has(c.name)) continue
              const carried = restarted.get(c.name)
              if (carried === undefined) added.push(c.name)
              yield* start(c, carried)
            }
            return { added, removed, restarted: [...restarted.keys()], deferred }
          })
      } satisfies BridgeService
    })

  /** The bridges as a Layer over `Broker`: started when built, stopped with the layer's scope. */
  static readonly layer = (bridges: ReadonlyArray<BridgeConfig>): Layer.Layer<Bridge, never, Broker> =>
    Layer.scoped(Bridge, Bridge.make(bridges))
}
