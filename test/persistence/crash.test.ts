/**
 * A real kill -9 of a process writing the store in a loop (child/writer.ts),
 * several times over the same directory, each restart recovering the previous
 * crash. After each kill the files must open (only a torn tail may be found,
 * so onCorrupt "refuse" succeeds) and hold exactly the writer's state at some
 * point j: queue = messages j-49..j in order, inbound QoS 2 ids the same 50,
 * no gap, no duplicate. In durable mode j is at least the last acknowledged
 * message: nothing whose whenDurable fired is lost.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { FilePersistence, layerFile } from "../../src/persistence/FilePersistence.js"
import { Context, Layer } from "effect"
import { bundleEntry } from "../support/processes.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-crash-"))
const bundle = path.join(root, "writer.mjs")
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
beforeAll(() => bundleEntry(bundle, path.join(__dirname, "child", "writer.ts")))

interface Run {
  readonly resumedAt: number
  readonly acked: number
  readonly signal: NodeJS.Signals | null
}

/** Start the writer, let it acknowledge at least `acks` turns (bounded in time), kill -9 it. */
const runAndKill = (location: string, mode: "durable" | "lazy", acks: number): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, [bundle, location, mode], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    let resumedAt = -1
    let acked = -1
    let ackCount = 0
    let killed = false
    const kill = () => {
      if (!killed) {
        killed = true
        child.kill("SIGKILL")
      }
    }
    const deadline = setTimeout(kill, 8_000)
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      let nl: number
      while ((nl = out.indexOf("\n")) !== -1) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        const [word, value] = line.split(" ")
        if (word === "ready") resumedAt = Number(value)
        else if (word === "ack") {
          acked = Number(value)
          if (++ackCount >= acks) kill()
        }
      }
    })
    child.stderr!.on("data", (chunk: Buffer) => (err += chunk.toString()))
    child.on("error", reject)
    child.on("exit", (code, signal) => {
      clearTimeout(deadline)
      if (!killed) return reject(new Error(`the writer exited by itself (${code}): ${err}`))
      resolve({ resumedAt, acked, signal })
    })
  })

/** Open a copy of the crash image (the next run must recover the real one itself). */
const inspect = (location: string) =>
  Effect.gen(function* () {
    const copy = `${location}-inspect-${Date.now()}`
    fs.cpSync(location, copy, { recursive: true })
    const result = yield* Effect.scoped(
      Effect.gen(function* () {
        const store = Context.get(yield* Layer.build(layerFile({ location: copy, onCorrupt: "refuse" })), FilePersistence)
        return { snapshot: yield* store.load(), recovery: store.recovery, counts: store.counts() }
      })
    )
    fs.rmSync(copy, { recursive: true, force: true })
    return result
  })

const index = (topic: string) => Number(topic.slice(2))

const checkConsistent = (snapshot: { retained: ReadonlyArray<{ topic: string; payload: Buffer }>; sessions: ReadonlyArray<any> }): number => {
  const c = snapshot.sessions.find((s) => s.clientId === "c")
  if (c === undefined) return -1
  const ids: Array<number> = c.queue.map((d: { message: { topic: string } }) => index(d.message.topic))
  const j = ids[ids.length - 1]
  const first = Math.max(0, j - 49)
  expect(ids).toEqual(Array.from({ length: j - first + 1 }, (_, k) => first + k))
  expect(c.inboundQos2).toEqual(ids.map((i) => (i % 65535) + 1))
  expect(c.inflight).toEqual([])
  for (const d of c.queue) {
    const i = index(d.message.topic)
    expect(d.message.payload.toString()).toBe(`message ${i} `.repeat(1 + (i % 7)))
    expect(d.subscriptionIds).toEqual(i % 2 === 0 ? [7] : undefined)
  }
  const r = snapshot.retained.find((m) => m.topic === "r")
  if (j >= 0) expect(r?.payload.toString()).toBe(`message ${Math.floor(j / 100) * 100} `.repeat(1 + ((Math.floor(j / 100) * 100) % 7)))
  return j
}

describe("kill -9 of a writing process", () => {
  for (const mode of ["durable", "lazy"] as const) {
    it.live(`${mode}: four kills in a row over one store; each restart recovers the last crash${mode === "durable" ? ", no acknowledged record lost" : ""}`, () =>
      Effect.gen(function* () {
        const location = path.join(root, mode)
        let previous = -1
        for (let round = 0; round < 4; round++) {
          const run = yield* Effect.promise(() => runAndKill(location, mode, 20 + 60 * round))
          expect(run.signal).toBe("SIGKILL")
          expect(run.resumedAt).toBe(previous + 1) // the restart found exactly what the last inspection saw
          const { snapshot, recovery } = yield* inspect(location)
          if (recovery.fault !== undefined) expect(recovery.tornTail).toBe(true)
          const j = checkConsistent(snapshot)
          if (mode === "durable") expect(j).toBeGreaterThanOrEqual(run.acked)
          expect(j).toBeGreaterThanOrEqual(previous)
          previous = j
        }
        expect(previous).toBeGreaterThan(100)
      }),
      60_000
    )
  }
})
