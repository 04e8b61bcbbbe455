/**
 * The embedded file store: an append-only log of checksummed frames plus
 * periodic snapshots, in one directory, with no server and no native module.
 * See docs/persistence.md for the format and the guarantees.
 *
 * One layer, two tags (as `@effect/sql-pg`'s PgClient): `Persistence` for the
 * broker, `FilePersistence` for what only a file store has (recovery report,
 * I/O counters).
 *
 * ```ts
 * const store = FilePersistence.layerFile({ location: "/var/lib/midge", durable: true })
 * ```
 *
 * Lifecycle, owned by the layer's scope: open = read the snapshot and the logs
 * (`onCorrupt` decides what a damaged store does), then write the recovered
 * image as a fresh snapshot; a fiber compacts every `autosaveInterval`
 * seconds; close = a last snapshot, then the files are closed. The saves
 * Mosquitto would make (each autosave, `save`, the one at close) are told to
 * `onSave` as they begin, once each, for Mosquitto's "Saving in-memory
 * database to FILE." line.
 */
import { Clock, Context, Effect, FiberHandle, Layer, Runtime, type Scope } from "effect"
import { runEvery } from "../runtime/periodic.js"
import { Persistence, StoreError, type PersistenceService, type StoredMessage } from "./Persistence.js"
import { FileEngine, logPath, snapshotPath, type EngineStats } from "./internal/engine.js"
import { openStore, type RecoveryReport } from "./internal/open.js"

export type { EngineStats as FileStoreStats, RecoveryReport }

export interface FileStoreOptions {
  /** `persistence_location`: the directory (created if missing) */
  readonly location: string
  /** `persistence_file`, default "mosquitto.db" (a Mosquitto database there is refused, not overwritten) */
  readonly file?: string
  /**
   * Midge's durable mode: `whenDurable` waits for fdatasync, so a PUBACK /
   * PUBREC sent from it is never for a message a crash can lose. Default false.
   */
  readonly durable?: boolean
  /** `autosave_interval`: seconds between snapshots (0: only at close), default 1800 */
  readonly autosaveInterval?: number
  /** `autosave_on_changes`: `autosaveInterval` counts logged changes instead of seconds */
  readonly autosaveOnChanges?: boolean
  /**
   * A corrupt store (bad checksum, impossible record, unreadable snapshot):
   * "recover" (default) starts with what was read before the fault and keeps
   * the bad files under a `.corrupt-<time>` name; "refuse" fails the layer.
   * A torn tail of the newest log (a crash during a write) is recovered in
   * both modes. A store of an unknown version is refused in both modes.
   */
  readonly onCorrupt?: "recover" | "refuse"
  /** also compact when the log outgrows max(this, 2 × the last snapshot); default 64 MiB */
  readonly compactAfterBytes?: number
  /** how long close may wait for the disk, ms; default 30 000 */
  readonly closeTimeoutMs?: number
  /**
   * A save begins, with the snapshot file's path: where Mosquitto's persist__backup logs "Saving
   * in-memory database to FILE." (the daemon logs it so). Called once per snapshot written for an
   * autosave (every `autosaveInterval` seconds, or after that many changes with `autosaveOnChanges`),
   * for `save`, and at close; not for the snapshot at open, nor for one the log's size asks for
   * (`compactAfterBytes`), which Mosquitto does not have.
   */
  readonly onSave?: (snapshotFile: string) => void
}

export interface FilePersistenceService extends PersistenceService {
  /** what the open found */
  readonly recovery: RecoveryReport
  /** I/O counters (records, batches, fsyncs, compactions, errors) */
  readonly stats: () => Readonly<EngineStats>
  /** the snapshot file; logs are `<snapshot>.<generation>.log` beside it */
  readonly snapshotFile: string
  readonly logFile: (generation: number) => string
  /** A save now, as Mosquitto's on SIGUSR1: `onSave`, then a snapshot (a compaction under way is joined). */
  readonly save: Effect.Effect<void, StoreError>
  /**
   * `autosave_interval` / `autosave_on_changes` as a reload reads them (Mosquitto re-reads both on
   * SIGHUP): a timed snapshot every `autosaveInterval` seconds from now, or one per that many changes.
   */
  readonly reconfigure: (options: { readonly autosaveInterval: number; readonly autosaveOnChanges: boolean }) => Effect.Effect<void>
}

export class FilePersistence extends Context.Tag("midge/FilePersistence")<FilePersistence, FilePersistenceService>() {}

const defaults = {
  file: "mosquitto.db",
  durable: false,
  autosaveInterval: 1800,
  autosaveOnChanges: false,
  onCorrupt: "recover" as "recover" | "refuse",
  compactAfterBytes: 64 * 1024 * 1024,
  closeTimeoutMs: 30_000
}

export const make = (options: FileStoreOptions): Effect.Effect<FilePersistenceService, StoreError, Scope.Scope> =>
  Effect.gen(function* () {
    const o = { ...defaults, ...options }
    const directory = o.location
    const runtime = yield* Effect.runtime<never>()
    const report = (error: StoreError): void => {
      Runtime.runFork(runtime)(Effect.logError(`persistence: ${error.message}`))
    }
    const now = yield* Clock.currentTimeMillis
    const opened = yield* Effect.tryPromise({
      try: () => openStore(directory, o.file, o.onCorrupt, now),
      catch: (e) =>
        e instanceof StoreError
          ? e
          : new StoreError({ reason: "io", message: `cannot open the store in ${directory}: ${String(e)}`, path: directory })
    })
    const recovery = opened.report
    if (recovery.fault !== undefined) {
      yield* Effect.logWarning(
        `persistence: ${recovery.fault.message}${recovery.preserved.length > 0 ? `; kept as ${recovery.preserved.join(", ")}` : ""}`
      )
    }
    const engine = new FileEngine(
      opened.state,
      {
        directory,
        file: o.file,
        durable: o.durable,
        compactAfterRecords: o.autosaveOnChanges ? o.autosaveInterval : 0,
        compactAfterBytes: o.compactAfterBytes,
        report,
        saving: o.onSave
      },
      opened.generation,
      opened.logs
    )
    const compaction = (save: boolean) =>
      Effect.async<void, StoreError>((resume) => engine.compact((e) => resume(e === undefined ? Effect.void : Effect.fail(e)), save))
    const compact = compaction(false)
    const save = compaction(true)
    const sync = Effect.async<void, StoreError>((resume) => engine.sync((e) => resume(e === undefined ? Effect.void : Effect.fail(e))))

    // finalizers are uninterruptible, so the time bound is the engine's own timer
    const close = Effect.async<void, StoreError>((resume) => {
      let done = false
      const finish = (e: StoreError | undefined): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        resume(e === undefined ? Effect.void : Effect.fail(e))
      }
      const timer = setTimeout(
        () => finish(new StoreError({ reason: "io", message: `closing the store took over ${o.closeTimeoutMs} ms: gave up` })),
        o.closeTimeoutMs
      )
      engine.close(finish)
    })
    yield* Effect.addFinalizer(() =>
      close.pipe(
        Effect.catchAll((e) => Effect.logError(`persistence: ${e.message}`)),
        Effect.ensuring(Effect.sync(() => engine.shutdown()))
      )
    )
    // the recovered image becomes the new snapshot, with a fresh log
    yield* compact
    const timed = yield* FiberHandle.make<void, never>()
    const autosave = (interval: number, onChanges: boolean): Effect.Effect<void> =>
      Effect.suspend(() => {
        engine.setCompactAfterRecords(onChanges ? interval : 0)
        // by time unless by changes; the previous schedule, if any, is interrupted
        return runEvery(timed, onChanges ? 0 : interval, save.pipe(Effect.catchAll((e) => Effect.logError(`persistence: ${e.message}`))))
      })
    yield* autosave(o.autosaveInterval, o.autosaveOnChanges)
    let current = { autosaveInterval: o.autosaveInterval, autosaveOnChanges: o.autosaveOnChanges }
    const service: FilePersistenceService = {
      writer: engine,
      load: ((revive?: (m: StoredMessage) => StoredMessage) =>
        Effect.sync(() => engine.state.snapshot(revive))) as PersistenceService["load"],
      compact,
      save,
      sync,
      counts: () => engine.state.counts(),
      recovery,
      stats: () => ({ ...engine.stats }),
      snapshotFile: snapshotPath(directory, o.file),
      logFile: (generation) => logPath(directory, o.file, generation),
      reconfigure: (next) =>
        Effect.suspend(() => {
          if (next.autosaveInterval === current.autosaveInterval && next.autosaveOnChanges === current.autosaveOnChanges) return Effect.void
          current = { ...next }
          return autosave(next.autosaveInterval, next.autosaveOnChanges)
        })
    }
    return service
  })

/** The file store as both `Persistence` and `FilePersistence`. */
export const layerFile = (options: FileStoreOptions): Layer.Layer<Persistence | FilePersistence, StoreError> =>
  Layer.scopedContext(
    Effect.map(make(options), (service) => Context.make(Persistence, service).pipe(Context.add(FilePersistence, service)))
  )
