/**
 * Opening a file store: find the snapshot and the logs, replay them into a
 * fresh image, and say what was recovered. Cold path (startup).
 */
import * as fsp from "node:fs/promises"
import { StoreError } from "../Persistence.js"
import { KIND_LOG, KIND_SNAPSHOT } from "./codec.js"
import { logPath, snapshotPath } from "./engine.js"
import { readHeader, replayFile } from "./replay.js"
import { StoreState } from "./state.js"

export interface RecoveryReport {
  /** records read and applied, snapshot and logs together */
  readonly records: number
  /** the files read, in order */
  readonly files: ReadonlyArray<string>
  /**
   * What stopped the reading, if anything. A `truncated` fault at the end of
   * the newest log is what a crash during a write leaves: only records never
   * confirmed durable are lost.
   */
  readonly fault: StoreError | undefined
  /** true when the fault is such a torn tail (accepted even with onCorrupt "refuse") */
  readonly tornTail: boolean
  /** bad files kept for inspection under a `.corrupt-<time>` name */
  readonly preserved: ReadonlyArray<string>
}

export interface Opened {
  readonly state: StoreState
  readonly report: RecoveryReport
  /** the highest generation seen (the next snapshot is one more) */
  readonly generation: number
  /** log generations on disk */
  readonly logs: ReadonlyArray<number>
}

const io = (what: string, file: string) => (e: unknown) =>
  new StoreError({ reason: "io", message: `${what} ${file}: ${e instanceof Error ? e.message : String(e)}`, path: file })

const readIfExists = (file: string): Promise<Buffer | undefined> =>
  fsp.readFile(file).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined
    throw e
  })

export const openStore = async (
  directory: string,
  file: string,
  onCorrupt: "recover" | "refuse",
  now: number
): Promise<Opened> => {
  await fsp.mkdir(directory, { recursive: true }).catch((e) => {
    throw io("cannot create the directory", directory)(e)
  })
  const names = await fsp.readdir(directory).catch((e) => {
    throw io("cannot list", directory)(e)
  })
  const logPattern = new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(\\d{1,15})\\.log$`)
  const logs: Array<number> = []
  for (const name of names) {
    const m = logPattern.exec(name)
    if (m !== null) logs.push(Number(m[1]))
  }
  logs.sort((a, b) => a - b)
  await fsp.rm(`${snapshotPath(directory, file)}.tmp`, { force: true }).catch(() => {})

  const state = new StoreState()
  state.beginReplay()
  const files: Array<string> = []
  let records = 0
  let generation = logs.length > 0 ? logs[logs.length - 1] : 0
  let snapshotGeneration = 0
  /** the file with the fault and those after it */
  let bad: Array<string> = []
  let fault: StoreError | undefined
  let tornTail = false

  const stop = (
    file: string,
    reason: StoreError["reason"],
    message: string,
    offset: number | undefined,
    rest: ReadonlyArray<string>
  ): void => {
    fault = new StoreError({
      reason,
      message: `${file}${offset !== undefined ? ` at byte ${offset}` : ""}: ${message}; ${records} records recovered before it${
        rest.length > 0 ? `, ${rest.length} later file(s) not read` : ""
      }`,
      path: file,
      ...(offset !== undefined ? { offset } : {}),
      recovered: records
    })
    bad = [file, ...rest]
  }

  // the snapshot
  const snapFile = snapshotPath(directory, file)
  const snap = await readIfExists(snapFile).catch((e) => {
    throw io("cannot read", snapFile)(e)
  })
  if (snap !== undefined) {
    files.push(snapFile)
    const h = readHeader(snap)
    if (h._tag === "fault" && h.reason === "version") {
      // not damaged, just not ours (or newer): never overwritten, in any mode
      throw new StoreError({ reason: "version", message: `${snapFile}: ${h.message}`, path: snapFile, recovered: 0 })
    }
    const laterLogs = logs.map((g) => logPath(directory, file, g))
    if (h._tag === "fault") stop(snapFile, h.reason, h.message, 0, laterLogs)
    else if (h._tag === "empty") stop(snapFile, "truncated", "the snapshot has no header", 0, laterLogs)
    else if (h.header.kind !== KIND_SNAPSHOT) stop(snapFile, "corrupt", `file kind ${h.header.kind} where a snapshot was expected`, 0, laterLogs)
    else {
      snapshotGeneration = h.header.generation
      if (snapshotGeneration > generation) generation = snapshotGeneration
      const r = replayFile(snap, state, true)
      records += r.records
      if (r.fault !== undefined) stop(snapFile, r.fault.reason, r.fault.message, r.fault.offset, laterLogs)
    }
  }

  // the logs of its generation and after, in order
  if (fault === undefined) {
    const wanted = logs.filter((g) => g >= snapshotGeneration)
    for (let i = 0; i < wanted.length && fault === undefined; i++) {
      const logFile = logPath(directory, file, wanted[i])
      const rest = wanted.slice(i + 1).map((g) => logPath(directory, file, g))
      const buf = await fsp.readFile(logFile).catch((e) => {
        throw io("cannot read", logFile)(e)
      })
      files.push(logFile)
      const h = readHeader(buf)
      if (h._tag === "empty") continue // created, then a crash before its header: nothing in it
      if (h._tag === "fault") {
        if (h.reason === "version") {
          throw new StoreError({ reason: "version", message: `${logFile}: ${h.message}`, path: logFile, recovered: records })
        }
        stop(logFile, h.reason, h.message, 0, rest)
        break
      }
      if (h.header.kind !== KIND_LOG || h.header.generation !== wanted[i]) {
        stop(logFile, "corrupt", `header says kind ${h.header.kind} generation ${h.header.generation}`, 0, rest)
        break
      }
      const r = replayFile(buf, state, false)
      records += r.records
      if (r.fault !== undefined) {
        stop(logFile, r.fault.reason, r.fault.message, r.fault.offset, rest)
        tornTail = r.fault.reason === "truncated" && rest.length === 0
      }
    }
  }
  state.endReplay()

  const preserved: Array<string> = []
  if (fault !== undefined && !tornTail) {
    if (onCorrupt === "refuse") throw fault
    // keep the evidence: the next snapshot would replace or delete these files
    for (const f of bad) {
      const kept = `${f}.corrupt-${now}`
      await fsp.rename(f, kept).then(
        () => preserved.push(kept),
        () => {}
      )
    }
  }
  return {
    state,
    report: { records, files, fault, tornTail, preserved },
    generation,
    logs: logs.filter((g) => !bad.includes(logPath(directory, file, g)))
  }
}
