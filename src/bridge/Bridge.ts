/**
 * Bridges: Mosquitto's `connection` blocks, unchanged, linking the Midge
 * broker to other brokers (Mosquitto or any MQTT 3.1 / 3.1.1 / 5 broker).
 *
 * ```ts
 * const bridges = yield* Bridge.fromConfig(config)            // ConfigError: file:line option: message
 * yield* Bridge.make(bridges).pipe(Effect.provideService(Broker, broker))   // in the daemon's scope
 * ```
 *
 * Each bridge is one supervised fiber (one FiberMap keyed by name) running its
 * `start_type` strategy over one connect-and-pump effect; `restart_timeout`
 * is the Schedule of `Effect.retry`. Everything stops with the scope: the
 * sockets are closed (the remote brokers publish the bridges' wills) and the
 * local subscriptions removed. See docs/bridges.md.
 */
import { Context, Duration, Effect, Either, FiberMap, Layer, Schedule, type Scope } from "effect"
import { Broker } from "../Broker.js"
import type { ConfigError, Directive } from "../config/Config.js"
import { type BridgeConfig, decodeBridges } from "./internal/config.js"
import { type BridgeError, BridgeRuntime, type BridgeState } from "./internal/runtime.js"
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

export interface BridgeService {
  readonly status: () => ReadonlyArray<BridgeStatus>
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
      const runtimes: Array<BridgeRuntime> = []
      for (const config of bridges) {
        const rt = new BridgeRuntime(config, core, core.log)
        // the local subscriptions live as long as the bridge: a down or lazy bridge queues
        yield* Effect.acquireRelease(
          Effect.sync(() => rt.attach()),
          () => Effect.sync(() => rt.detach())
        )
        runtimes.push(rt)
      }
      // created after the subscriptions, so closed before them: fibers (and sockets) first
      const fibers = yield* FiberMap.make<string>()
      for (const rt of runtimes) yield* FiberMap.run(fibers, rt.config.name, run(rt))
      return {
        status: () =>
          runtimes.map((rt) => {
            const a = rt.config.addresses[rt.addressIndex]
            return {
              name: rt.config.name,
              state: rt.state,
              address: `${a.host}:${a.port}`,
              queued: rt.queued,
              inFlight: rt.inFlight,
              dropped: rt.dropped
            }
          })
      } satisfies BridgeService
    })

  /** The bridges as a Layer over `Broker`: started when built, stopped with the layer's scope. */
  static readonly layer = (bridges: ReadonlyArray<BridgeConfig>): Layer.Layer<Bridge, never, Broker> =>
    Layer.scoped(Bridge, Bridge.make(bridges))
}
