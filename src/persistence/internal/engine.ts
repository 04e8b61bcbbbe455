/**
 * The file store's engine: plain code and Node callbacks, no Effect (the
 * writer is called from the broker's hot path; Effect owns the engine's
 * lifecycle in FilePersistence.ts).
 *
 * Files in the store directory, for `persistence_file` F:
 *   F            the last snapshot (generation G): written to F.tmp, fsynced, renamed
 *   F.<n>.log    logs of generation n >= G, applied in order after the snapshot
 *
 * Writing. Each writer call updates the store image (StoreState) and appends
 * one record to the current batch. `handOff` gives the batch to the OS with
 * one synchronous positional write: the broker calls it before it writes to
 * any socket, and the end of every event-loop turn (setImmediate) does, so a
 * kill -9 never leaves a client knowing more than the store. In durable mode
 * an fdatasync follows, asynchronously, and the `whenDurable` callbacks of the
 * batch run after it; batches handed off while an fdatasync runs share the
 * next one (group commit). Without durable mode the log is fsynced within a
 * second of the last write.
 *
 * Compaction. The image is encoded as a snapshot of generation G+1 and, at
 * the same instant, the log is rotated: log G is fsynced, log G+1 created,
 * records after go to it. Once the snapshot is renamed into place the logs
 * before G+1 are deleted. A crash at any step leaves a readable store:
 * before the rename, snapshot G + logs G, G+1; after it, snapshot G+1 + log G+1.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { SubscriptionOptions } from "../../routing/Router.js"
import { isPacketId } from "../../session/PacketIdMap.js"
import { StoreError, type StoreWriter, type StoredDelivery, type StoredMessage, type StoredSessionMeta } from "../Persistence.js"
import { Encoder, HEADER_SIZE, KIND_LOG, KIND_SNAPSHOT, Tag, encodeHeader } from "./codec.js"
import type { MessageEntry, StoreState } from "./state.js"

export interface EngineOptions {
  readonly directory: string
  readonly file: string
  readonly durable: boolean
  /** compact once this many records were logged since the last snapshot (autosave_on_changes); 0: never */
  readonly compactAfterRecords: number
  /** compact once the log outgrows max(this, 2 × the last snapshot) bytes */
  readonly compactAfterBytes: number
  /** background failures (the engine retries writes every second) */
  readonly report: (error: StoreError) => void
  /**
   * A save begins (Mosquitto's persist__backup, which logs "Saving in-memory database to FILE."):
   * a compaction asked for as one (`compact(cb, true)`: the timed autosaves, SIGUSR1, close) or one
   * by `compactAfterRecords` (autosave_on_changes); once per snapshot written
   */
  readonly saving?: ((snapshotFile: string) => void) | undefined
}

export interface EngineStats {
  /** records appended by the writer */
  records: number
  /** batches written to the log */
  batches: number
  /** fdatasync calls on the log (durable mode: one per batch) */
  logSyncs: number
  /** every fsync / fdatasync (log, snapshot, directory) */
  fsyncs: number
  bytesWritten: number
  compactions: number
  errors: number
}

type Done = (error: StoreError | undefined) => void

/**
 * The asynchronous pipeline, one job at a time, in order. Each job carries the
 * descriptor it works on (a rotation switches `fd` at once, while the jobs
 * before it still finish on the old log).
 */
type Job =
  /** a batch the synchronous hand-off could not write (a failing disk): written, and retried, here */
  | { readonly kind: "write"; readonly fd: number; readonly position: number; readonly enc: Encoder; readonly callbacks: Array<() => void> }
  /** durable mode: fdatasync, then the `whenDurable` callbacks of every batch written before it started */
  | { readonly kind: "durable"; readonly fd: number; readonly callbacks: Array<() => void> }
  /** the old log fsynced and closed, the new one (already written to) fsynced with the directory */
  | { readonly kind: "rotate"; readonly oldFd: number; readonly fd: number; readonly generation: number; readonly done: Done; oldClosed: boolean }
  | { readonly kind: "sync"; readonly fd: number; readonly callbacks: Array<Done> }

/** the store holds message payloads: readable by the broker's user only (as Mosquitto's) */
const FILE_MODE = 0o600

const ioError = (what: string, file: string, e: unknown): StoreError =>
  new StoreError({ reason: "io", message: `${what} ${file}: ${e instanceof Error ? e.message : String(e)}`, path: file })

export const snapshotPath = (directory: string, file: string): string => path.join(directory, file)
export const logPath = (directory: string, file: string, generation: number): string =>
  path.join(directory, `${file}.${generation}.log`)

/** The image as snapshot records. */
export const encodeSnapshot = (state: StoreState, enc: Encoder): void => {
  for (const entry of state.messages.values()) enc.message(entry.ref, entry.message)
  for (const entry of state.retained.values()) enc.retainedSet(entry.ref)
  for (const s of state.sessions.values()) {
    const id = s.meta.clientId
    enc.session(s.meta)
    for (const [filter, options] of s.subscriptions) enc.subscriptionSet(id, filter, options)
    for (const e of s.inflight.values()) enc.outSend(id, e.messageId, e.msg.ref, e.qos, e.retain, e.subscriptionIds, e.state, e.shared)
    for (let i = s.head; i < s.queue.length; i++) {
      const e = s.queue[i]!
      enc.outQueue(id, e.msg.ref, e.qos, e.retain, e.subscriptionIds, e.shared)
    }
    for (const messageId of s.inbound) enc.clientId16(Tag.InboundAdd, id, messageId)
  }
  enc.endOfSnapshot(enc.records)
  enc.seal()
}

const fsyncDirectory = (directory: string, stats: EngineStats, cb: (e: NodeJS.ErrnoException | null) => void): void => {
  fs.open(directory, "r", (e, fd) => {
    if (e) return cb(e)
    stats.fsyncs++
    fs.fsync(fd, (e2) => fs.close(fd, () => cb(e2)))
  })
}

/** write all of buf[0, len) at `position` now, across short writes (throws on failure) */
const writeAllSync = (fd: number, buf: Buffer, len: number, position: number): void => {
  let done = 0
  while (done < len) done += fs.writeSync(fd, buf, done, len - done, position + done)
}

/** write all of buf[0, len) at `position`, across short writes */
const writeAll = (fd: number, buf: Buffer, len: number, position: number, cb: (e: NodeJS.ErrnoException | null) => void): void => {
  let done = 0
  const step = (): void => {
    fs.write(fd, buf, done, len - done, position + done, (e, n) => {
      if (e) return cb(e)
      done += n
      if (done < len) step()
      else cb(null)
    })
  }
  if (len === 0) cb(null)
  else step()
}

export class FileEngine implements StoreWriter {
  readonly stats: EngineStats = { records: 0, batches: 0, logSyncs: 0, fsyncs: 0, bytesWritten: 0, compactions: 0, errors: 0 }
  private enc = new Encoder()
  private readonly pool: Array<Encoder> = []
  private waiting: Array<() => void> = []
  private readonly jobs: Array<Job> = []
  private busy = false
  private flushScheduled = false
  /** the open log and where the next batch goes in it */
  private fd = -1
  private offset = 0
  /** generation of the log new records go to */
  private generation: number
  /** generation of the open log (fd) */
  private fileGeneration = 0
  /** log generations on disk (deleted once a newer snapshot is in place) */
  private readonly logs: Set<number>
  private recordsSinceSnapshot = 0
  private bytesSinceSnapshot = 0
  private snapshotBytes = 0
  private compacting: Array<Done> | undefined = undefined
  /** the compaction under way was announced as a save (`saving`) */
  private compactingSave = false
  private retryTimer: NodeJS.Timeout | undefined = undefined
  private syncTimer: NodeJS.Timeout | undefined = undefined
  private closed = false
  private readonly flushNow = (): void => this.flush()

  constructor(
    readonly state: StoreState,
    private options: EngineOptions,
    /** the highest generation found on disk */
    generation: number,
    logsOnDisk: Iterable<number>
  ) {
    this.durable = options.durable
    this.generation = generation
    this.logs = new Set(logsOnDisk)
  }

  // ---------------------------------------------------------------- the writer
  readonly durable: boolean

  /** the store's entry for a message, its record written first if new */
  private entry(message: StoredMessage): MessageEntry {
    let entry = this.state.lookup(message)
    if (entry === undefined) {
      entry = this.state.addMessage(message)
      this.enc.message(entry.ref, message)
    }
    return entry
  }

  private wrote(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(this.flushNow)
    }
  }

  retainedSet(message: StoredMessage): void {
    if (this.closed) return
    if (message.payload.length === 0) {
      if (this.state.retainedDelete(message.topic)) {
        this.enc.retainedDelete(message.topic)
        this.wrote()
      }
      return
    }
    const entry = this.entry(message)
    if (this.state.retainedSet(message.topic, entry)) this.enc.retainedSet(entry.ref)
    this.wrote()
  }

  sessionUpsert(meta: StoredSessionMeta): void {
    if (this.closed) return
    this.state.sessionUpsert(meta)
    this.enc.session(meta)
    this.wrote()
  }

  sessionDelete(clientId: string): void {
    if (this.closed || !this.state.sessionDelete(clientId)) return
    this.enc.clientOnly(Tag.SessionDelete, clientId)
    this.wrote()
  }

  /** `autosave_on_changes` re-read on SIGHUP: compact after this many logged changes (0: not by count) */
  setCompactAfterRecords(records: number): void {
    this.options = { ...this.options, compactAfterRecords: records }
  }

  subscriptionSet(clientId: string, filter: string, options: SubscriptionOptions): void {
    if (this.closed) return
    this.state.subscriptionSet(clientId, filter, options)
    this.enc.subscriptionSet(clientId, filter, options)
    this.wrote()
  }

  subscriptionDelete(clientId: string, filter: string): void {
    if (this.closed || !this.state.subscriptionDelete(clientId, filter)) return
    this.enc.subscriptionDelete(clientId, filter)
    this.wrote()
  }

  outboundQueue(clientId: string, d: StoredDelivery): void {
    if (this.closed) return
    const entry = this.entry(d.message)
    this.state.outboundQueue(clientId, entry, d.qos, d.retain, d.subscriptionIds, d.shared)
    this.enc.outQueue(clientId, entry.ref, d.qos, d.retain, d.subscriptionIds, d.shared)
    this.wrote()
  }

  outboundSend(clientId: string, messageId: number, d: StoredDelivery): void {
    if (this.closed || d.qos === 0 || !isPacketId(messageId)) return
    const entry = this.entry(d.message)
    const st = d.qos === 1 ? "await-puback" : "await-pubrec"
    this.state.outboundSend(clientId, messageId, entry, d.qos, d.retain, d.subscriptionIds, st, d.shared)
    this.enc.outSend(clientId, messageId, entry.ref, d.qos, d.retain, d.subscriptionIds, st, d.shared)
    this.wrote()
  }

  outboundDequeue(clientId: string, messageId: number): void {
    if (this.closed || !this.state.outboundDequeue(clientId, messageId)) return
    this.enc.clientId16(Tag.OutDequeue, clientId, messageId)
    this.wrote()
  }

  outboundPubrec(clientId: string, messageId: number): void {
    if (this.closed || !this.state.outboundPubrec(clientId, messageId)) return
    this.enc.clientId16(Tag.OutPubrec, clientId, messageId)
    this.wrote()
  }

  outboundDone(clientId: string, messageId: number): void {
    if (this.closed || !this.state.outboundDone(clientId, messageId)) return
    this.enc.clientId16(Tag.OutDone, clientId, messageId)
    this.wrote()
  }

  outboundClear(clientId: string): void {
    if (this.closed || !this.state.outboundClear(clientId)) return
    this.enc.clientOnly(Tag.OutClear, clientId)
    this.wrote()
  }

  inboundQos2Add(clientId: string, messageId: number): void {
    if (this.closed || !this.state.inboundQos2Add(clientId, messageId)) return
    this.enc.clientId16(Tag.InboundAdd, clientId, messageId)
    this.wrote()
  }

  inboundQos2Release(clientId: string, messageId: number): void {
    if (this.closed || !this.state.inboundQos2Release(clientId, messageId)) return
    this.enc.clientId16(Tag.InboundRelease, clientId, messageId)
    this.wrote()
  }

  whenDurable(then: () => void): void {
    if (!this.durable) return then()
    if (this.enc.len > 0) {
      this.waiting.push(then)
      return
    }
    // nothing new: wait for the durability point of what was handed off last, if any
    for (let i = this.jobs.length - 1; i >= 0; i--) {
      const job = this.jobs[i]
      if (job.kind === "write" || job.kind === "durable") {
        job.callbacks.push(then)
        return
      }
    }
    then()
  }

  // ---------------------------------------------------------------- the pipeline
  /** End of turn (setImmediate): hand the batch off. */
  private flush(): void {
    this.flushScheduled = false
    this.handOff()
  }

  /**
   * Hand every record written so far to the operating system now, with one
   * positional write, so that nothing the broker sends afterwards can be ahead
   * of the store: after a kill -9 the store knows at least what any client was
   * told. The broker calls it before each socket flush (and the end of every
   * turn does). Durability against power loss follows: in durable mode an
   * fdatasync job, shared by every batch handed off while the previous one
   * runs (group commit), then the `whenDurable` callbacks; otherwise an fsync
   * within a second. A failing disk (or an earlier batch still waiting for a
   * retry) sends the batch through the asynchronous pipeline instead.
   */
  handOff(): void {
    const enc = this.enc
    if (enc.len === 0) {
      if (this.waiting.length > 0) {
        const callbacks = this.waiting
        this.waiting = []
        for (const cb of callbacks) this.whenDurable(cb)
      }
      return
    }
    enc.seal()
    this.stats.records += enc.records
    this.recordsSinceSnapshot += enc.records
    this.enc = this.pool.pop() ?? new Encoder()
    const callbacks = this.waiting
    this.waiting = []
    const fd = this.fd
    const position = this.offset
    this.offset += enc.len
    let written = false
    if (fd >= 0 && this.retryTimer === undefined && !this.jobs.some((j) => j.kind === "write")) {
      try {
        writeAllSync(fd, enc.buf, enc.len, position)
        written = true
      } catch (e) {
        this.stats.errors++
        this.options.report(ioError("cannot write", logPath(this.options.directory, this.options.file, this.fileGeneration), e))
      }
    }
    if (!written) {
      this.jobs.push({ kind: "write", fd, position, enc, callbacks })
    } else {
      this.wroteBatch(enc)
      if (this.durable) this.durableAfter(fd, callbacks)
      else {
        this.runCallbacks(callbacks)
        this.syncSoon()
      }
    }
    this.pump()
    const o = this.options
    // by changes, an autosave (autosave_on_changes); by size, Midge's own bound on the log (no save line)
    if (o.compactAfterRecords > 0 && this.recordsSinceSnapshot >= o.compactAfterRecords) this.compactInBackground(true)
    else if (this.bytesSinceSnapshot > Math.max(o.compactAfterBytes, 2 * this.snapshotBytes)) this.compactInBackground(false)
  }

  /** a batch is in the log: counters, and its buffer back to the pool */
  private wroteBatch(enc: Encoder): void {
    this.bytesSinceSnapshot += enc.len
    this.stats.bytesWritten += enc.len
    this.stats.batches++
    if (this.pool.length < 2 && enc.buf.length <= 4 * 1024 * 1024) {
      enc.reset()
      this.pool.push(enc)
    }
  }

  private runCallbacks(callbacks: ReadonlyArray<() => void>): void {
    for (let i = 0; i < callbacks.length; i++) {
      try {
        callbacks[i]()
      } catch (error) {
        this.options.report(ioError("a whenDurable callback failed after writing", this.options.directory, error))
      }
    }
  }

  /** durable mode: `callbacks` run after an fdatasync of `fd` that starts after now (one shared by all that wait) */
  private durableAfter(fd: number, callbacks: Array<() => void>): void {
    const last = this.jobs[this.jobs.length - 1]
    // a job not started yet covers this batch too; the one running may have started before it was written
    const started = this.busy && this.jobs.length === 1
    if (last !== undefined && last.kind === "durable" && last.fd === fd && !started) {
      for (const cb of callbacks) last.callbacks.push(cb)
      return
    }
    this.jobs.push({ kind: "durable", fd, callbacks })
  }

  private compactInBackground(save: boolean): void {
    if (this.compacting !== undefined || this.closed) return
    this.compact((e) => {
      if (e !== undefined) this.options.report(e)
    }, save)
  }

  private failed(error: StoreError): void {
    this.stats.errors++
    this.options.report(error)
    this.busy = false
    if (this.retryTimer === undefined && !this.closed) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined
        this.pump()
      }, 1000)
      this.retryTimer.unref()
    }
  }

  private next(): void {
    this.jobs.shift()
    this.busy = false
    this.pump()
  }

  private pump(): void {
    if (this.busy || this.jobs.length === 0 || this.retryTimer !== undefined) return
    this.busy = true
    const job = this.jobs[0]
    switch (job.kind) {
      case "write":
        return this.runWrite(job)
      case "durable":
        return this.runDurable(job)
      case "rotate":
        return this.runRotate(job)
      case "sync":
        return this.runSync(job.fd, job.callbacks)
    }
  }

  private runWrite(job: Extract<Job, { kind: "write" }>): void {
    const file = logPath(this.options.directory, this.options.file, this.fileGeneration)
    if (job.fd < 0) return this.failed(new StoreError({ reason: "io", message: "no open log", path: file }))
    const { enc, callbacks } = job
    writeAll(job.fd, enc.buf, enc.len, job.position, (e) => {
      if (e) return this.failed(ioError("cannot write", file, e))
      const written = (): void => {
        this.wroteBatch(enc)
        this.runCallbacks(callbacks)
        if (!this.durable) this.syncSoon()
        this.next()
      }
      if (!this.durable) return written()
      this.stats.fsyncs++
      this.stats.logSyncs++
      fs.fdatasync(job.fd, (e2) => (e2 ? this.failed(ioError("cannot fsync", file, e2)) : written()))
    })
  }

  private runDurable(job: Extract<Job, { kind: "durable" }>): void {
    const file = logPath(this.options.directory, this.options.file, this.fileGeneration)
    this.stats.fsyncs++
    this.stats.logSyncs++
    fs.fdatasync(job.fd, (e) => {
      if (e) return this.failed(ioError("cannot fsync", file, e))
      this.runCallbacks(job.callbacks)
      this.next()
    })
  }

  /** without durable mode: fsync the log within a second of a write */
  private syncSoon(): void {
    if (this.syncTimer !== undefined || this.closed) return
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined
      this.sync(() => {})
    }, 1000)
    this.syncTimer.unref()
  }

  private runSync(fd: number, callbacks: Array<Done>): void {
    const finish = (error: StoreError | undefined): void => {
      for (const cb of callbacks) cb(error)
      this.next()
    }
    if (fd < 0) return finish(undefined)
    this.stats.fsyncs++
    this.stats.logSyncs++
    fs.fdatasync(fd, (e) => {
      if (e) this.stats.errors++
      finish(e ? ioError("cannot fsync", logPath(this.options.directory, this.options.file, this.fileGeneration), e) : undefined)
    })
  }

  /**
   * The second half of a rotation (the first, in `compact`, created log
   * `generation` and switched to it): the old log is fsynced and closed, the
   * new one fsynced with its directory. Durable callbacks of batches in the new
   * log queue behind this job, so they wait for the directory entry too.
   */
  private runRotate(job: Extract<Job, { kind: "rotate" }>): void {
    const { directory, file } = this.options
    const next = logPath(directory, file, job.generation)
    const closeOld = (cb: () => void): void => {
      if (job.oldFd < 0 || job.oldClosed) return cb()
      this.stats.fsyncs++
      fs.fdatasync(job.oldFd, (e) => {
        if (e) return this.failed(ioError("cannot fsync", logPath(directory, file, job.generation - 1), e))
        job.oldClosed = true
        fs.close(job.oldFd, () => cb())
      })
    }
    closeOld(() => {
      this.stats.fsyncs++
      fs.fdatasync(job.fd, (e) => {
        if (e) return this.failed(ioError("cannot fsync", next, e))
        fsyncDirectory(directory, this.stats, (e2) => {
          if (e2) return this.failed(ioError("cannot fsync the directory of", next, e2))
          job.done(undefined)
          this.next()
        })
      })
    })
  }

  // ---------------------------------------------------------------- compaction, sync, close
  /**
   * Write the image as a snapshot of a new generation and rotate the log with
   * it; then delete the older logs. Concurrent calls share one compaction.
   * `save`: it is a save as Mosquitto's (see `saving`).
   */
  compact(cb: Done, save = false): void {
    if (this.closed) return cb(new StoreError({ reason: "io", message: "the store is closed" }))
    if (this.compacting !== undefined) {
      // a save that joins a compaction begun for another reason (the log's size) makes it a save; one line per snapshot
      if (save && !this.compactingSave) this.announceSave()
      this.compacting.push(cb)
      return
    }
    const waiters: Array<Done> = [cb]
    this.compacting = waiters
    this.compactingSave = false
    // as Mosquitto, the line comes before the writing, and before an "Error saving" if it fails
    if (save) this.announceSave()
    // what was written before the rotation goes to the current log
    this.handOff()
    // The next log is created now, so that what follows can be handed off at once (its own fsyncs come in the
    // rotate job). The current log is fsynced first, here, on the event loop (one fdatasync per compaction): a
    // power loss then never finds a torn log with a later log after it, which would be corruption, not a torn tail.
    const generation = this.generation + 1
    const next = logPath(this.options.directory, this.options.file, generation)
    let fd = -1
    try {
      if (this.fd >= 0) {
        this.stats.fsyncs++
        fs.fdatasyncSync(this.fd)
      }
      fd = fs.openSync(next, "w", FILE_MODE)
      const header = encodeHeader(KIND_LOG, generation)
      writeAllSync(fd, header, header.length, 0)
    } catch (e) {
      if (fd >= 0) fs.closeSync(fd)
      this.compacting = undefined
      this.stats.errors++
      for (const w of waiters) w(ioError(fd >= 0 || this.fd < 0 ? "cannot create" : "cannot fsync the log before", next, e))
      return
    }
    const oldFd = this.fd
    this.fd = fd
    this.offset = HEADER_SIZE
    this.fileGeneration = generation
    this.logs.add(generation)
    let rotated = false
    let snapshotted: StoreError | undefined | null = null
    const finish = (): void => {
      if (!rotated || snapshotted === null) return
      this.compacting = undefined
      const error = snapshotted
      if (error === undefined) {
        this.stats.compactions++
        for (const g of [...this.logs]) {
          if (g < generation) {
            this.logs.delete(g)
            fs.unlink(logPath(this.options.directory, this.options.file, g), () => {})
          }
        }
      }
      for (const w of waiters) w(error)
      // changes logged while this one ran may already call for the next
      const o = this.options
      if (error === undefined) {
        if (o.compactAfterRecords > 0 && this.recordsSinceSnapshot >= o.compactAfterRecords) this.compactInBackground(true)
        else if (this.bytesSinceSnapshot > Math.max(o.compactAfterBytes, 2 * this.snapshotBytes)) this.compactInBackground(false)
      }
    }
    this.jobs.push({
      kind: "rotate",
      oldFd,
      fd,
      generation,
      oldClosed: false,
      done: () => {
        rotated = true
        finish()
      }
    })
    // the image at the instant of the rotation: every record before it is in log < generation
    const snap = new Encoder(Math.max(1024 * 1024, Math.ceil(this.snapshotBytes * 1.25)))
    encodeSnapshot(this.state, snap)
    this.generation = generation
    this.recordsSinceSnapshot = 0
    this.bytesSinceSnapshot = 0
    this.snapshotBytes = snap.len
    this.pump()
    this.writeSnapshot(snap, generation, (error) => {
      snapshotted = error
      finish()
    })
  }

  private announceSave(): void {
    this.compactingSave = true
    this.options.saving?.(snapshotPath(this.options.directory, this.options.file))
  }

  /** tmp file, header + records, fdatasync, rename over the snapshot, fsync the directory */
  private writeSnapshot(snap: Encoder, generation: number, cb: Done): void {
    const { directory, file } = this.options
    const final = snapshotPath(directory, file)
    const tmp = `${final}.tmp`
    const header = encodeHeader(KIND_SNAPSHOT, generation)
    const renamed = (e: NodeJS.ErrnoException | null): void => {
      if (e) return cb(ioError("cannot rename", tmp, e))
      fsyncDirectory(directory, this.stats, (e2) => cb(e2 ? ioError("cannot fsync the directory of", final, e2) : undefined))
    }
    const opened = (e: NodeJS.ErrnoException | null, fd: number): void => {
      if (e) return cb(ioError("cannot create", tmp, e))
      const fail = (what: string, e2: unknown): void => fs.close(fd, () => cb(ioError(what, tmp, e2)))
      writeAll(fd, header, header.length, 0, (e1) => {
        if (e1) return fail("cannot write", e1)
        writeAll(fd, snap.buf, snap.len, HEADER_SIZE, (e2) => {
          if (e2) return fail("cannot write", e2)
          this.stats.fsyncs++
          fs.fdatasync(fd, (e3) => {
            if (e3) return fail("cannot fsync", e3)
            fs.close(fd, (e4) => (e4 ? cb(ioError("cannot close", tmp, e4)) : fs.rename(tmp, final, renamed)))
          })
        })
      })
    }
    // a power loss during an earlier rename can leave tmp hard-linked to the
    // snapshot (as Mosquitto's util_mosq.c notes): unlink it, never truncate it
    fs.unlink(tmp, () => fs.open(tmp, "wx", FILE_MODE, opened))
  }

  /** Write and fsync everything written so far. */
  sync(cb: Done): void {
    this.handOff()
    this.jobs.push({ kind: "sync", fd: this.fd, callbacks: [cb] })
    this.pump()
  }

  /** A last snapshot (a save, as Mosquitto's at exit), then the log is closed; the writer ignores calls from now on. */
  close(cb: Done): void {
    if (this.closed) return cb(undefined)
    // a compaction under way (an autosave, SIGUSR1's) took its image before the shutdown: the save at exit is one of
    // its own, after it, so that the last snapshot holds everything and, as in Mosquitto, exit always saves
    if (this.compacting !== undefined) {
      this.compacting.push(() => this.close(cb))
      return
    }
    this.compact(
      (e1) =>
        this.sync((e2) => {
          this.shutdown()
          cb(e1 ?? e2)
        }),
      true
    )
  }

  /** Stop at once (after close, or when close takes too long). */
  shutdown(): void {
    this.closed = true
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer)
    if (this.syncTimer !== undefined) clearTimeout(this.syncTimer)
    this.retryTimer = this.syncTimer = undefined
    if (this.fd >= 0) {
      const fd = this.fd
      this.fd = -1
      fs.close(fd, () => {})
    }
  }
}
