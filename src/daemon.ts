/**
 * The Midge daemon: argv → config → the Broker in a scope that lives until
 * SIGINT / SIGTERM. Flags as Mosquitto's: -c FILE, -p PORT (repeatable), -v,
 * -d, -h. On a signal the main fiber is interrupted: listeners close, v5
 * clients get DISCONNECT 0x8B, the pid file is removed, the process exits 0.
 */
import { runMain } from "@effect/platform-node/NodeRuntime"
import { Context, Effect, Either, Layer, Option, Queue, type Scope, Stream } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { Broker, brokerOptionsFromConfig } from "./Broker.js"
import { parseCommandLine, resolveConfig, usage, type BrokerConfig } from "./config/Config.js"
import { Log, logTopic, stderrSink, syslogSeverity, TurnBatchedSink, type LogSink } from "./log/Log.js"
import { Authentication, Authorization, layerFromConfig, optionsFromConfig, SecurityFiles } from "./security/Auth.js"
import { recheckConnected } from "./security/connectAuth.js"
import { DynamicSecurity, layerFromConfig as dynsecLayerFromConfig } from "./security/DynamicSecurity.js"
import { Bridge } from "./bridge/Bridge.js"
import { clusterOptionsFromConfig, clusterReloadWarnings } from "./cluster/config.js"
import { FilePersistence, layerFile } from "./persistence/FilePersistence.js"
import { Metrics } from "./sys/Metrics.js"
import { isScavenge, semiSpaceBytes, watchYoungGeneration } from "./runtime/YoungGeneration.js"
import { privilegeTarget } from "./runtime/privileges.js"
import * as SysTopics from "./sys/SysTopics.js"

export const VERSION = "0.1.0"

/**
 * What one configuration's log destinations hold: the sinks, the file descriptors of
 * `log_dest file` and the syslog logger. A reload opens the new set, then closes the old one
 * (so log rotation works with SIGHUP).
 */
interface SinkSet {
  readonly sinks: Array<LogSink>
  readonly fds: Array<number>
  readonly loggers: Array<ReturnType<typeof spawn>>
}
const closeSinks = (set: SinkSet) => {
  // lines still waiting for the end of the turn go to the old destinations first
  for (const sink of set.sinks) if (sink !== stderrSink && sink instanceof TurnBatchedSink) sink.close()
  for (const fd of set.fds) fs.closeSync(fd)
  for (const logger of set.loggers) logger.stdin?.end()
}

/** A closed stdout / stderr (EPIPE) is an `error` event on the stream: a log line is lost, the broker goes on (as Mosquitto's). */
const ignoreStdioErrors = (): void => {
  process.stdout.on("error", () => {})
  process.stderr.on("error", () => {})
}

const sinksFor = (config: BrokerConfig): SinkSet => {
  const set: SinkSet = { sinks: [], fds: [], loggers: [] }
  const sinks = set.sinks
  for (const dest of config.logDest) {
    switch (dest.kind) {
      case "stdout":
        sinks.push(new TurnBatchedSink((text) => void process.stdout.write(text)))
        break
      case "stderr":
        sinks.push(stderrSink)
        break
      case "file": {
        const fd = fs.openSync(dest.path!, "a")
        set.fds.push(fd)
        sinks.push(new TurnBatchedSink((text) => void fs.writeSync(fd, text)))
        break
      }
      case "syslog": {
        // Node has no syslog(3): one long-lived logger(1) takes the lines, each with its <priority>
        const facility = config.logFacility === undefined ? 3 : 16 + config.logFacility // daemon, or local0..7
        const socketArgs = process.env.MIDGE_SYSLOG_SOCKET !== undefined ? ["-u", process.env.MIDGE_SYSLOG_SOCKET] : []
        const logger = spawn("logger", ["--prio-prefix", "-t", "midge", ...socketArgs], { stdio: ["pipe", "ignore", "ignore"] })
        logger.on("error", () => {})
        logger.stdin.on("error", () => {})
        set.loggers.push(logger)
        sinks.push({ write: (type, line) => void logger.stdin.write(`<${facility * 8 + syslogSeverity(type)}>${line}\n`) })
        break
      }
      default:
        // "none"; "topic" is added once the broker runs
        break
    }
  }
  return set
}

/**
 * `MIDGE_LOOP_STATS=SECONDS` (diagnostics; off, and free, by default): every SECONDS one line on
 * stderr with how late the event loop ran a 1 ms timer over that time (`monitorEventLoopDelay`,
 * which records the whole interval between ticks: 1 ms is subtracted; while on, it wakes the loop
 * every millisecond), the garbage collector's pauses and the young generation's size, e.g.
 * `loop: delay p50 0.01 p99 1.10 max 3.21 ms | gc: 34 scavenges (max 0.62, total 14.0 ms), 0 mark-compacts (max 0.00, total 0.0 ms) | young generation 1.0 MiB`.
 */
const loopStats = (seconds: number): void => {
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  const gc = { minor: 0, minorMax: 0, minorTotal: 0, major: 0, majorMax: 0, majorTotal: 0 }
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (isScavenge(entry)) {
        gc.minor++
        gc.minorTotal += entry.duration
        gc.minorMax = Math.max(gc.minorMax, entry.duration)
      } else {
        gc.major++
        gc.majorTotal += entry.duration
        gc.majorMax = Math.max(gc.majorMax, entry.duration)
      }
    }
  }).observe({ entryTypes: ["gc"] })
  const ms = (ns: number) => (Math.max(0, ns - 1e6) / 1e6).toFixed(2)
  setInterval(() => {
    process.stderr.write(
      `loop: delay p50 ${ms(delay.percentile(50))} p99 ${ms(delay.percentile(99))} max ${ms(delay.max)} ms | ` +
        `gc: ${gc.minor} scavenges (max ${gc.minorMax.toFixed(2)}, total ${gc.minorTotal.toFixed(1)} ms), ` +
        `${gc.major} mark-compacts (max ${gc.majorMax.toFixed(2)}, total ${gc.majorTotal.toFixed(1)} ms) | ` +
        `young generation ${(semiSpaceBytes() / 1048576).toFixed(1)} MiB\n`
    )
    delay.reset()
    Object.assign(gc, { minor: 0, minorMax: 0, minorTotal: 0, major: 0, majorMax: 0, majorTotal: 0 })
  }, seconds * 1000).unref()
}

/**
 * The start-up's garbage collected once the broker is up, before it serves its first client.
 *
 * Loading the modules (Effect, Schema, mqtt-packet) and building the layers grow the young
 * generation to V8's 16 MiB and leave it full of start-up objects. Left alone, they are copied and
 * promoted by the first scavenges under traffic: 10–25 ms each, a latency spike for every message
 * that arrives meanwhile. Two scavenges here (the second promotes what survived the first) leave
 * the traffic's scavenges only the traffic's objects: 1–5 ms (docs/performance.md, "QoS 1
 * latency"). `MIDGE_STARTUP_GC=major` makes it a full collection instead (it also spares the
 * mark-compact that the promoted objects bring later, but gives pages back to the system, which
 * the bench's RSS-growth-per-connection figure then counts against the connections), `off` skips
 * it. Node exposes `gc` only with `--expose-gc`: the flag is set for a moment, for a context of
 * our own, and unset again.
 */
const collectStartupGarbage = (): void => {
  const mode = process.env.MIDGE_STARTUP_GC ?? "minor"
  if (mode !== "minor" && mode !== "major") return
  // started with --expose-gc: the global is there (and the flag stays the user's)
  let gc = (globalThis as { gc?: Collect }).gc
  if (gc === undefined) {
    setFlagsFromString("--expose-gc")
    try {
      gc = runInNewContext("gc") as Collect
    } finally {
      setFlagsFromString("--no-expose-gc")
    }
  }
  if (mode === "major") gc({ type: "major" })
  else {
    gc({ type: "minor" })
    gc({ type: "minor" })
  }
}
type Collect = (options?: { type: "major" | "minor" }) => void

/** `-d`: Node cannot fork, so the daemon re-runs itself detached (without -d) and the parent exits. */
const daemonize = (): never => {
  const args = process.argv.slice(1).filter((a) => a !== "-d" && a !== "--daemon")
  const child = spawn(process.execPath, args, { detached: true, stdio: "ignore" })
  child.unref()
  process.exit(0)
}

/** `user`: when started as root, drop to that user after the listeners are open, as Mosquitto does. */
const dropPrivileges = (user: string, log: Log): void => {
  const uid = typeof process.getuid === "function" ? process.getuid() : undefined
  const target = privilegeTarget(user, uid, uid === 0 && user !== "root" ? fs.readFileSync("/etc/passwd", "utf8") : "")
  if (target._tag === "Stay") return
  // Mosquitto logs its warning at the error level too
  if (target.warning !== undefined) log.error(target.warning)
  if (target._tag === "Fail") {
    log.error(target.error)
    throw new Error(`cannot drop privileges to '${user}'`)
  }
  ;(process as unknown as { initgroups?: (u: string, g: number) => void }).initgroups?.(target.name, target.gid)
  process.setgid!(target.gid)
  process.setuid!(target.uid)
  log.debug(`Dropped privileges to '${target.name}' (uid ${target.uid}, gid ${target.gid}).`)
}

/**
 * A signal taken from now on, so that Node's default for it never applies (SIGHUP would end the
 * process, SIGUSR1 open the inspector). Those that come before the broker is up are counted; the
 * returned effect queues the signal from then on, with one entry for the early ones, until its
 * scope closes.
 */
const holdSignal = (signal: NodeJS.Signals): Effect.Effect<Queue.Dequeue<void>, never, Scope.Scope> => {
  let early = 0
  const onEarly = () => void early++
  process.on(signal, onEarly)
  return Effect.gen(function* () {
    const queue = yield* Queue.unbounded<void>()
    const onSignal = () => void Queue.unsafeOffer(queue, undefined)
    process.on(signal, onSignal)
    process.off(signal, onEarly)
    if (early > 0) Queue.unsafeOffer(queue, undefined)
    yield* Effect.addFinalizer(() => Effect.sync(() => process.off(signal, onSignal)))
    return queue
  })
}

const main = Effect.gen(function* () {
  // SIGHUP: a reload; SIGUSR1: save the store (one that comes while the broker starts is answered once it is up)
  const heldHangups = holdSignal("SIGHUP")
  const heldSaves = holdSignal("SIGUSR1")
  const parsed = parseCommandLine(process.argv.slice(2))
  if (Either.isLeft(parsed)) {
    process.stderr.write(`Error: ${parsed.left.message}\n\n${usage}\n`)
    return process.exit(1)
  }
  const cl = parsed.right
  if (cl.help) {
    process.stdout.write(`midge version ${VERSION}\n\n${usage}\n`)
    return process.exit(0)
  }
  const config = yield* resolveConfig(cl).pipe(
    Effect.catchAll((error) =>
      Effect.sync(() => {
        process.stderr.write(`Error: ${error.message}\n`)
        return process.exit(1)
      })
    )
  )
  const bridges = yield* Bridge.fromConfig(config).pipe(
    Effect.catchAll((error) =>
      Effect.sync(() => {
        process.stderr.write(`Error: ${error.message}\n`)
        return process.exit(1)
      })
    )
  )
  if (cl.daemon) daemonize()
  const statsEvery = Number(process.env.MIDGE_LOOP_STATS ?? 0)
  if (statsEvery > 0) loopStats(statsEvery)
  ignoreStdioErrors()
  let sinkSet = sinksFor(config)
  const log = new Log(config.logTypes, sinkSet.sinks, config.logTimestamp)
  log.timestampFormat = config.logTimestampFormat
  log.notice(`midge version ${VERSION} starting`)
  if (cl.configFile !== undefined) log.notice(`Config loaded from ${cl.configFile}.`)
  else log.notice("Using default config.")
  if (config.localOnly) {
    log.notice("Starting in local only mode. Connections will only be possible from clients running on this machine.")
    log.notice("Create a configuration file which defines a listener to allow remote access.")
  }
  for (const warning of config.warnings) log.warning(`Warning: ${warning}`)
  // conf.c's notes on two options kept for compatibility, printed whenever they are given
  if (config.directives.some((d) => d.option === "clientid_prefixes")) {
    log.notice("The 'clientid_prefixes' option is now deprecated and will be removed in a future version.")
  }
  if (config.directives.some((d) => d.option === "message_size_limit")) {
    log.notice("Note: It is recommended to replace `message_size_limit` with `max_packet_size`.")
  }

  yield* Effect.scoped(
    Effect.gen(function* () {
      const hangups = yield* heldHangups
      if (config.pidFile !== undefined) {
        const pidFile = config.pidFile
        yield* Effect.acquireRelease(
          Effect.sync(() => fs.writeFileSync(pidFile, `${process.pid}\n`)),
          () =>
            Effect.sync(() => {
              try {
                fs.rmSync(pidFile, { force: true })
              } catch (error) {
                log.warning(`Warning: unable to remove pid file ${pidFile}: ${String(error)}`)
              }
            })
        )
      }
      // Mosquitto's file-based security: allow_anonymous, password_file, acl_file, clientid_prefixes
      // or the dynamic security plugin's equivalent, when a `plugin` line names it
      const dynsec = dynsecLayerFromConfig(config, (message) => log.warning(`Warning: ${message}`))
      const onWarning = (message: string) => log.warning(`Warning: ${message}`)
      const security = Option.isSome(dynsec) ? yield* Layer.build(dynsec.value) : yield* Layer.build(layerFromConfig({ ...optionsFromConfig(config), onWarning }))
      const files = Option.isSome(dynsec) ? SecurityFiles.none : Context.get(security as Context.Context<SecurityFiles>, SecurityFiles)
      // persistence: Midge's crash-safe store at persistence_location / persistence_file
      const store = config.persistence
        ? yield* Layer.build(
            layerFile({
              location: config.persistenceLocation ?? process.cwd(),
              file: config.persistenceFile,
              durable: config.persistenceDurable,
              autosaveInterval: config.autosaveInterval,
              autosaveOnChanges: config.autosaveOnChanges,
              onCorrupt: config.persistenceOnCorrupt,
              // persist__backup's line, as Mosquitto logs it at each autosave, on SIGUSR1 and at exit
              onSave: (file) => log.info(`Saving in-memory database to ${file}.`)
            })
          )
        : Context.empty()
      const fileStore = Context.getOption(store as Context.Context<FilePersistence>, FilePersistence)
      // Midge-only: join a cluster through Redis when cluster_redis_url is set (docs/cluster.md)
      const cluster = clusterOptionsFromConfig(config)
      const broker = yield* Broker.make({ ...brokerOptionsFromConfig(config, log), ...(cluster !== undefined ? { cluster } : {}) }).pipe(Effect.provide(Context.merge(security as Context.Context<Authentication | Authorization>, store)))
      // always made, so that a SIGHUP can add the first bridge
      const bridging = yield* Bridge.make(bridges).pipe(Effect.provideService(Broker, broker))
      if (Option.isSome(dynsec)) {
        // $CONTROL/dynamic-security/v1 requests, answered on .../response
        yield* DynamicSecurity.start.pipe(Effect.provide(security as Context.Context<DynamicSecurity>), Effect.provideService(Broker, broker))
      }
      // $SYS topics every sys_interval seconds, and the Midge-only Prometheus endpoint
      const sys = yield* SysTopics.make({ interval: config.sysInterval, version: VERSION }).pipe(Effect.provideService(Broker, broker))
      if (config.metricsListener !== undefined) {
        const metrics = yield* Metrics.make({ ...config.metricsListener, version: VERSION }).pipe(Effect.provideService(Broker, broker))
        log.notice(`Opening metrics listener on ${metrics.host ?? "*"}:${metrics.port}.`)
      }
      // log_dest topic: as Mosquitto's log__vprintf, every type but debug (whose lines are about the packets these
      // publishes make), at QoS 2, not retained
      const topicSink: LogSink = { write: (type, line) => void (type !== "debug" && broker.core.publish(logTopic(type), Buffer.from(line), 2, false)) }
      const withTopic = (c: BrokerConfig, sinks: Array<LogSink>) => (c.logDest.some((d) => d.kind === "topic") ? [...sinks, topicSink] : sinks)
      log.reconfigure(config.logTypes, withTopic(config, sinkSet.sinks), config.logTimestamp)

      // SIGHUP: read the configuration again; unchanged listeners keep their clients
      const reload = Effect.gen(function* () {
        log.notice("Reloading config.")
        const next = yield* resolveConfig(cl)
        // a bad bridge block refuses the whole reload, as a bad option does
        const nextBridges = yield* Bridge.fromConfig(next)
        // the new destinations open before the old ones close (only the old set is closed)
        const nextSinks = sinksFor(next)
        const previous = sinkSet
        sinkSet = nextSinks
        log.reconfigure(next.logTypes, withTopic(next, nextSinks.sinks), next.logTimestamp)
        closeSinks(previous)
        log.timestampFormat = next.logTimestampFormat
        for (const warning of next.warnings) log.warning(`Warning: ${warning}`)
        // cluster_* options are read at start only: a change is named, and waits for a restart
        for (const warning of clusterReloadWarnings(cluster, clusterOptionsFromConfig(next))) log.warning(`Warning: ${warning}`)
        yield* broker.reload(brokerOptionsFromConfig(next, log))
        // the file-based security takes the new options and reads its files again; then, as Mosquitto's
        // mosquitto_security_apply, every connected client is checked again and those now refused go
        if (Option.isNone(dynsec)) {
          yield* files.reconfigure({ ...optionsFromConfig(next), onWarning })
          for (const connection of broker.core.attached.values()) connection.reauthorize?.()
          const refused = yield* recheckConnected(broker.core, Context.get(security as Context.Context<Authentication>, Authentication))
          for (const clientId of refused) log.notice(`Client ${clientId} disconnected, not authorised.`)
        }
        // sys_interval, autosave_interval and autosave_on_changes, as Mosquitto re-reads them
        yield* sys.reconfigure(next.sysInterval)
        if (Option.isSome(fileStore)) yield* fileStore.value.reconfigure({ autosaveInterval: next.autosaveInterval, autosaveOnChanges: next.autosaveOnChanges })
        // bridges: only the added, removed or changed blocks are touched (beyond Mosquitto)
        const b = yield* bridging.reload(nextBridges)
        for (const name of b.added) log.notice(`Bridge ${name} added.`)
        for (const name of b.removed) log.notice(`Bridge ${name} removed.`)
        for (const name of b.restarted) log.notice(`Bridge ${name} changed: restarting it.`)
        for (const name of b.deferred) log.notice(`Bridge ${name} changed: its new configuration applies when its link next reconnects (bridge_reload_type lazy).`)
      }).pipe(
        Effect.catchAll((error) => Effect.sync(() => log.error(`Error reloading config: ${error.message}`))),
        // the reload's lines are out once it is done (the log writes at the end of a turn otherwise)
        Effect.ensuring(Effect.sync(() => log.flush()))
      )
      yield* Stream.fromQueue(hangups).pipe(Stream.runForEach(() => reload), Effect.forkScoped)
      // SIGUSR1: as Mosquitto, write the database now (with persistence: a snapshot of the store, its line
      // from onSave). Taken in any case: Node's default for it is to open its inspector on 127.0.0.1:9229
      const saves = yield* heldSaves
      const save = Option.match(fileStore, {
        onNone: () => Effect.void,
        onSome: (files) =>
          files.save.pipe(Effect.catchAll((error) => Effect.sync(() => log.error(`Error saving in-memory database: ${error.message}`))))
      })
      yield* Stream.fromQueue(saves).pipe(Stream.runForEach(() => save), Effect.forkScoped)
      yield* Effect.try(() => dropPrivileges(config.user, log))
      log.notice(`midge version ${VERSION} running`)
      // the start-up lines (restored sessions, the listeners opened) are out before the collection below
      log.flush()
      collectStartupGarbage()
      // the young generation: small while traffic is light, V8's growth under load (runtime/YoungGeneration.ts)
      const stats = broker.core.stats
      watchYoungGeneration(
        () => stats.messagesReceived + stats.messagesSent,
        (growing, g) =>
          log.debug(
            `Young generation: growth ${growing ? "on" : "off"} (allocation ${(g.rate / 1000).toFixed(1)} MB/s, ${Math.round(g.messageRate)} messages/s, semi-space ${(semiSpaceBytes() / 1048576).toFixed(1)} MiB).`
          )
      )
      yield* Effect.never
    })
  ).pipe(
    Effect.catchAll((error) =>
      Effect.sync(() => {
        log.error(`Error: ${error.message}`)
        process.exitCode = 1
      })
    ),
    Effect.ensuring(
      Effect.sync(() => {
        log.notice(`midge version ${VERSION} terminating`)
        closeSinks(sinkSet)
      })
    )
  )
})

runMain(main, { disableErrorReporting: false })
