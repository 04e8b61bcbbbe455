/**
 * The file store tells `onSave` of each save Mosquitto's persist__backup would log ("Saving in-memory
 * database to FILE."): every `autosave_interval` (on the Clock: TestClock here), after
 * `autosave_interval` changes with `autosave_on_changes`, `save` (SIGUSR1) and close; once per
 * snapshot. Not the snapshot at open, nor one the log's size asks for (Midge's own, Mosquitto has none).
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, LogLevel, Logger, Scope, TestClock, Exit } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { FilePersistence, layerFile, type FileStoreOptions } from "../../src/persistence/FilePersistence.js"
import { msg, sleepReal, until } from "./fixtures.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-save-line-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
let n = 0
const freshDir = (): string => path.join(root, `t${++n}`)


/** A store in a scope of its own (closed by the test), with the saves it announced */
const openStore = (options: Omit<FileStoreOptions, "onSave">) =>
  Effect.gen(function* () {
    const saves: Array<string> = []
    const scope = yield* Scope.make()
    const ctx = yield* Layer.buildWithScope(layerFile({ ...options, onSave: (file) => void saves.push(file) }), scope)
    return { store: Context.get(ctx, FilePersistence), saves, close: Scope.close(scope, Exit.void) }
  }).pipe(Logger.withMinimumLogLevel(LogLevel.None))

describe("the file store's saves, as Mosquitto logs them", () => {
  it.scoped("autosave_interval on the Clock: one save each interval, one at close, none at open", () =>
    Effect.gen(function* () {
      const location = freshDir()
      const { store, saves, close } = yield* openStore({ location, autosaveInterval: 60 })
      const file = path.join(location, "mosquitto.db")
      expect(store.snapshotFile).toBe(file)
      expect(store.stats().compactions).toBe(1) // the one at open, not a save
      expect(saves).toEqual([])
      store.writer.retainedSet(msg("x", "1", { retain: true }))
      yield* TestClock.adjust("59 seconds")
      yield* sleepReal(100)
      expect(saves).toEqual([])
      yield* TestClock.adjust("1 second")
      yield* until("the first autosave", () => store.stats().compactions === 2)
      expect(saves).toEqual([file])
      yield* TestClock.adjust("60 seconds")
      yield* until("the second autosave", () => store.stats().compactions === 3)
      expect(saves).toEqual([file, file])
      // SIGUSR1's save
      yield* store.save
      expect(saves).toEqual([file, file, file])
      yield* close
      expect(saves).toEqual([file, file, file, file])
    })
  )

  it.scoped("autosave_interval 0: no timed saves, still the one at close; compact (open, the log's size) is no save", () =>
    Effect.gen(function* () {
      const { store, saves, close } = yield* openStore({ location: freshDir(), autosaveInterval: 0, compactAfterBytes: 16 * 1024 })
      for (let i = 0; i < 40; i++) {
        store.writer.retainedSet(msg("same/topic", Buffer.alloc(1024, i), { retain: true }))
        yield* store.sync
      }
      yield* until("a compaction for the log's size", () => store.stats().compactions >= 2)
      yield* store.compact
      yield* TestClock.adjust("1 hours")
      yield* sleepReal(100)
      expect(saves).toEqual([])
      yield* close
      expect(saves).toHaveLength(1)
    })
  )

  it.live("a shutdown while a save is being written makes its own after it: exit always saves, the last snapshot holds everything", () =>
    Effect.gen(function* () {
      const { store, saves, close } = yield* openStore({ location: freshDir(), autosaveInterval: 0 })
      store.writer.retainedSet(msg("x", "1", { retain: true }))
      yield* Effect.fork(store.save)
      yield* Effect.yieldNow()
      expect(saves).toHaveLength(1) // under way
      yield* close
      expect(saves).toHaveLength(2)
      expect(store.stats().compactions).toBe(3) // open, save, close
    })
  )

  it.live("autosave_on_changes: one save per snapshot after autosave_interval changes", () =>
    Effect.gen(function* () {
      const { store, saves, close } = yield* openStore({ location: freshDir(), autosaveInterval: 10, autosaveOnChanges: true })
      for (let i = 0; i < 4; i++) store.writer.retainedSet(msg(`t/${i}`, "v", { retain: true })) // 8 records
      yield* store.sync
      yield* sleepReal(100)
      expect(saves).toEqual([])
      for (let i = 4; i < 6; i++) store.writer.retainedSet(msg(`t/${i}`, "v", { retain: true }))
      yield* store.sync
      yield* until("a save after 10 changes", () => store.stats().compactions === 2)
      expect(saves).toHaveLength(1)
      // every snapshot after the one at open is a save here, with one line each, whether `save` joins a compaction under way or starts its own
      for (let i = 6; i < 11; i++) store.writer.retainedSet(msg(`t/${i}`, "v", { retain: true }))
      yield* store.sync
      yield* store.save
      yield* until("the compactions", () => store.stats().compactions >= 3)
      const compactions = store.stats().compactions
      expect(saves).toHaveLength(compactions - 1)
      yield* close
      expect(saves).toHaveLength(compactions)
    })
  )
})
