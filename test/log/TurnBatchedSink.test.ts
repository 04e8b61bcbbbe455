/**
 * The log's destinations write the lines of one event-loop turn with one call
 * (src/log/Log.ts, `TurnBatchedSink`): in order, after the turn, at most one write per
 * `SPACING_MS` while lines keep coming, never lost at exit, and a failing destination never
 * throws into the code that logged.
 */
import { execFileSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import { Log, SPACING_MS, TurnBatchedSink } from "../../src/log/Log.js"

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

/** the built module (npm test builds first, as the daemon tests run dist/main.js) */
const logModule = pathToFileURL(fileURLToPath(new URL("../../dist/log/Log.js", import.meta.url))).href

/** a Node child running `lines` as an ES module: its exit status and stderr */
const runChild = (lines: ReadonlyArray<string>): { status: number; stderr: string } => {
  try {
    execFileSync(process.execPath, ["--input-type=module", "-e", lines.join("\n")], { stdio: "pipe" })
    return { status: 0, stderr: "" }
  } catch (error) {
    const e = error as { status: number; stderr: Buffer }
    return { status: e.status, stderr: e.stderr.toString() }
  }
}

/**
 * A sink that records each call of its output, on a clock of the test's (`clock.t`, ms) and with
 * its timers held in `timers` (each with the delay asked for) until the test runs them.
 */
const recorded = () => {
  const calls: Array<string> = []
  const clock = { t: 1_000 }
  const timers: Array<{ f: () => void; ms: number }> = []
  const sink = new TurnBatchedSink(
    (text) => void calls.push(text),
    () => clock.t,
    (f, ms) => void timers.push({ f, ms })
  )
  return { calls, sink, clock, timers }
}

describe("TurnBatchedSink", () => {
  it("writes one turn's lines with one call, in order, once the turn ends", async () => {
    const { calls, sink, clock, timers } = recorded()
    const log = new Log(["all"], [sink], false)
    log.notice("New connection from 127.0.0.1:50000 on port 1883.")
    log.notice("New client connected from 127.0.0.1:50000 as c1 (p2, c1, k60).")
    log.info("third")
    expect(calls).toEqual([])
    await nextTurn()
    expect(calls).toEqual(["New connection from 127.0.0.1:50000 on port 1883.\nNew client connected from 127.0.0.1:50000 as c1 (p2, c1, k60).\nthird\n"])
    // a line after a quiet spell: at the end of its turn too
    clock.t += SPACING_MS
    log.notice("next turn")
    await nextTurn()
    expect(calls).toEqual([calls[0], "next turn\n"])
    expect(timers).toEqual([])
  })

  it("while lines keep coming, the next write waits until SPACING_MS after the last one, and takes every line logged meanwhile", async () => {
    const { calls, sink, clock, timers } = recorded()
    const log = new Log(["all"], [sink], false)
    log.notice("a")
    await nextTurn()
    expect(calls).toEqual(["a\n"])
    // 0.25 ms later, in another turn: not at the end of this turn but on a timer for the rest of the spacing
    clock.t += 0.25
    log.notice("b")
    await nextTurn()
    expect(calls).toEqual(["a\n"])
    expect(timers.map((t) => t.ms)).toEqual([SPACING_MS - 0.25])
    // more lines in later turns join the same write, with no timer of their own
    clock.t += 0.25
    log.notice("c")
    await nextTurn()
    log.info("d")
    expect(timers.length).toBe(1)
    clock.t += 0.5
    timers.shift()!.f()
    expect(calls).toEqual(["a\n", "b\nc\nd\n"])
    // a flush writes at once, and the timer of lines already written does nothing
    clock.t += 0.1
    log.notice("e")
    expect(timers.length).toBe(1)
    sink.flush()
    expect(calls).toEqual(["a\n", "b\nc\nd\n", "e\n"])
    timers.shift()!.f()
    expect(calls.length).toBe(3)
  })

  it("writes at once when 64 KiB are pending", () => {
    const { calls, sink } = recorded()
    const line = "x".repeat(1023)
    for (let i = 0; i < 64; i++) sink.write("notice", line)
    expect(calls.length).toBe(1)
    expect(calls[0]).toBe(`${line}\n`.repeat(64))
  })

  it("a failing destination drops its batch without throwing into the caller, and keeps working", async () => {
    let fail = true
    const calls: Array<string> = []
    const sink = new TurnBatchedSink((text) => {
      if (fail) throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" })
      calls.push(text)
    })
    const log = new Log(["all"], [sink], false)
    log.notice("lost")
    expect(() => sink.flush()).not.toThrow()
    fail = false
    log.notice("kept")
    await nextTurn()
    expect(calls).toEqual(["kept\n"])
  })

  it("close writes what is pending and ignores later lines", async () => {
    const { calls, sink } = recorded()
    sink.write("notice", "before close")
    sink.close()
    expect(calls).toEqual(["before close\n"])
    sink.write("notice", "after close")
    await nextTurn()
    expect(calls).toEqual(["before close\n"])
  })

  it("lines still pending when the process exits reach the file (process.exit, and an uncaught exception)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-log-"))
    try {
      for (const [name, ending] of [
        ["exit", "process.exit(3)"],
        ["throw", "throw new Error('boom')"]
      ] as const) {
        const file = path.join(dir, `${name}.log`)
        // the lines are logged and the process ends in the same turn: only the exit hooks can write them
        const { status } = runChild([
          `import fs from "node:fs"`,
          `import { Log, TurnBatchedSink } from ${JSON.stringify(logModule)}`,
          `const fd = fs.openSync(${JSON.stringify(file)}, "a")`,
          `const log = new Log(["all"], [new TurnBatchedSink((text) => void fs.writeSync(fd, text))], false)`,
          `log.notice("first line")`,
          `log.notice("last line before the end")`,
          ending
        ])
        expect(status, name).toBe(name === "exit" ? 3 : 1)
        expect(fs.readFileSync(file, "utf8"), name).toBe("first line\nlast line before the end\n")
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("an uncaught exception's trace comes after the lines logged before it (stderr)", () => {
    const { status, stderr } = runChild([
      `import { Log, stderrSink } from ${JSON.stringify(logModule)}`,
      `const log = new Log(["all"], [stderrSink], false)`,
      `log.error("the last line before the exception")`,
      `throw new Error("boom")`
    ])
    expect(status).toBe(1)
    const line = stderr.indexOf("the last line before the exception\n")
    const trace = stderr.indexOf("Error: boom")
    expect(line).toBeGreaterThanOrEqual(0)
    expect(trace).toBeGreaterThan(line)
  })
})
