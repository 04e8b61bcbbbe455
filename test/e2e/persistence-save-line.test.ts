/**
 * `persistence true`: the daemon logs Mosquitto's "Saving in-memory database to FILE." (information)
 * at each autosave, on SIGUSR1 and at shutdown, as persist__backup does. The daemon is src/main.ts
 * bundled with esbuild (the sources under test, not dist/), with the smallest real autosave_interval,
 * 1 second; the lines are polled for. Once per save is held in test/persistence/save-line.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { bundleEntry, freePort, listening } from "../support/processes.js"
import { spawnScoped, waitFor } from "./harness.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-save-line-e2e-"))
const main = path.join(root, "main.mjs")
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
beforeAll(() => bundleEntry(main), 60_000)

const count = (text: string, line: string): number => text.split("\n").filter((l) => l.replace(/^\d+: /, "") === line).length

describe("persistence: the save line, as Mosquitto logs it", () => {
  it.scopedLive("autosave_interval 1: a line each autosave, one on SIGUSR1, one at shutdown; information level", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const dir = fs.mkdtempSync(path.join(root, "store-"))
      const conf = path.join(dir, "mosquitto.conf")
      // information only: a line of another type (notice) would not be written
      fs.writeFileSync(
        conf,
        [`listener ${port} 127.0.0.1`, "allow_anonymous true", "user root", "persistence true", `persistence_location ${dir}`, "autosave_interval 1", "log_type information", ""].join("\n")
      )
      const line = `Saving in-memory database to ${path.join(dir, "mosquitto.db")}.`
      const daemon = yield* spawnScoped(process.execPath, [main, "-c", conf])
      yield* listening(port, 30_000)
      yield* waitFor(() => count(daemon.out.stderr, line) >= 2, "two autosaves", 10_000)
      expect(daemon.out.stderr).not.toContain("midge version") // a notice line
      // SIGUSR1: one more
      const before = count(daemon.out.stderr, line)
      daemon.child.kill("SIGUSR1")
      yield* waitFor(() => count(daemon.out.stderr, line) > before, "the SIGUSR1 save", 10_000)
      // shutdown: the last save, after the listeners closed
      const stopping = daemon.out.stderr.length
      daemon.child.kill("SIGTERM")
      yield* waitFor(() => daemon.out.exited, "the daemon to stop", 15_000)
      expect(daemon.out.code).toBe(0)
      expect(count(daemon.out.stderr.slice(stopping), line)).toBeGreaterThanOrEqual(1)
      expect(daemon.out.stderr.trimEnd().split("\n").at(-1)?.replace(/^\d+: /, "")).toBe(line)
    }),
    60_000
  )
})
