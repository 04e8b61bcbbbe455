/**
 * The conformance suite against both stores: the memory store (a restart
 * reuses its backing), the file store (a restart reopens its directory, after
 * the last snapshot written on close), and the file store restarted from the
 * image a kill -9 would leave (the files as they are after `sync`, no snapshot
 * on close: the logs are replayed).
 */
import { afterAll } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { layerFile } from "../../src/persistence/FilePersistence.js"
import { Persistence, layerMemory, memoryBacking } from "../../src/persistence/Persistence.js"
import { persistenceSuite } from "./suite.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-conformance-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
let n = 0

/**
 * A file store whose every close is a crash: before its own close runs, the
 * files are synced and copied to a new directory, which the next build opens.
 */
const killedAfterSync = (durable: boolean) => {
  let dir = path.join(root, `k${++n}`)
  return Layer.scoped(
    Persistence,
    Effect.gen(function* () {
      const ctx = yield* Layer.build(layerFile({ location: dir, durable, autosaveInterval: 0 }))
      const store = Context.get(ctx, Persistence)
      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          yield* Effect.orDie(store.sync)
          const image = path.join(root, `k${++n}`)
          fs.cpSync(dir, image, { recursive: true })
          dir = image
        })
      )
      return store
    })
  )
}

persistenceSuite("memory", () => layerMemory(memoryBacking()), { propertyRuns: 200 })

persistenceSuite("file", () => layerFile({ location: path.join(root, `s${++n}`) }), { propertyRuns: 50 })

persistenceSuite("file, durable", () => layerFile({ location: path.join(root, `d${++n}`), durable: true }), { propertyRuns: 25 })

persistenceSuite("file, killed after sync (log replay)", () => killedAfterSync(false), { propertyRuns: 60 })

persistenceSuite("file, durable, killed after sync (log replay)", () => killedAfterSync(true), { propertyRuns: 25 })
