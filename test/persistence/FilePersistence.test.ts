/**
 * What only the file store has: files on disk, crash images, damaged files,
 * old formats, group commit, compaction triggers.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Layer, LogLevel, Logger, Schema, TestClock } from "effect"
import * as fc from "fast-check"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { FilePersistence, layerFile, type FilePersistenceService, type FileStoreOptions } from "../../src/persistence/FilePersistence.js"
import { StoreError, type StoreSnapshot } from "../../src/persistence/Persistence.js"
import { crc32 } from "../../src/persistence/internal/codec.js"
import { delivery, fullProperties, meta, msg, plain, sessionOf, sleepReal, sub, until } from "./fixtures.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-file-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
let n = 0
const freshDir = (): string => path.join(root, `t${++n}`)

/** One lifetime of a file store in `location` (its log lines silenced: the tests read `recovery` and `stats`). */
const withFile = <A, E>(options: FileStoreOptions, f: (store: FilePersistenceService) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(Layer.build(layerFile(options)), (ctx) => f(Context.get(ctx, FilePersistence)))).pipe(
    Logger.withMinimumLogLevel(LogLevel.None)
  )

const open = (options: FileStoreOptions) =>
  withFile(options, (s) => Effect.map(s.load(), (snapshot) => ({ snapshot, recovery: s.recovery, counts: s.counts() })))

/** Let the event loop turn (the store flushes at the end of a turn). */
const turn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/** The files a kill -9 would leave now: synced, then copied before any close. */
const crashImage = (store: FilePersistenceService, location: string) =>
  Effect.gen(function* () {
    yield* store.sync
    const image = freshDir()
    fs.cpSync(location, image, { recursive: true })
    return image
  })

const copyDir = (from: string): string => {
  const to = freshDir()
  fs.cpSync(from, to, { recursive: true })
  return to
}

const logsIn = (dir: string): Array<string> => fs.readdirSync(dir).filter((f) => f.endsWith(".log")).sort()

/** frame offsets of a store file (after the 24-byte header) */
const frames = (buf: Buffer): Array<{ offset: number; end: number }> => {
  const out: Array<{ offset: number; end: number }> = []
  let pos = 24
  while (pos + 8 <= buf.length) {
    const end = pos + 8 + buf.readUInt32LE(pos)
    if (end > buf.length) break
    out.push({ offset: pos, end })
    pos = end
  }
  return out
}

const topics = (snap: StoreSnapshot) => snap.retained.map((m) => m.topic)
const pad = (i: number) => String(i).padStart(2, "0")

/** A killed store whose log holds 30 frames: frame i = retained message t/<i> (2 records). */
const thirtyFrames = Effect.gen(function* () {
  const location = freshDir()
  return yield* withFile({ location, autosaveInterval: 0 }, (s) =>
    Effect.gen(function* () {
      for (let i = 0; i < 30; i++) {
        s.writer.retainedSet(msg(`t/${pad(i)}`, `payload ${i}`, { retain: true }))
        yield* s.sync // one batch, one frame
      }
      return yield* crashImage(s, location)
    })
  )
})

describe("file store: files on disk", () => {
  it.live("a clean close leaves one snapshot and one empty log; reopening reads them", () =>
    Effect.gen(function* () {
      const location = freshDir()
      yield* withFile({ location }, (s) =>
        Effect.sync(() => {
          s.writer.retainedSet(msg("a", "1", { retain: true }))
          s.writer.outboundQueue("c", delivery(msg("q", "2")))
        })
      )
      expect(fs.readdirSync(location).sort()).toEqual(["mosquitto.db", "mosquitto.db.2.log"])
      expect(fs.statSync(path.join(location, "mosquitto.db.2.log")).size).toBe(24)
      const { snapshot, recovery } = yield* open({ location })
      expect(recovery).toMatchObject({ records: 5, fault: undefined, tornTail: false, preserved: [] })
      expect(topics(snapshot)).toEqual(["a"])
      expect(fs.readdirSync(location).sort()).toEqual(["mosquitto.db", "mosquitto.db.4.log"])
    })
  )

  it.live("persistence_file names the files; the directory is created", () =>
    Effect.gen(function* () {
      const location = path.join(freshDir(), "deep", "er")
      yield* withFile({ location, file: "midge.db" }, (s) => Effect.sync(() => s.writer.sessionUpsert(meta("c"))))
      expect(fs.readdirSync(location).sort()).toEqual(["midge.db", "midge.db.2.log"])
    })
  )

  it.live("a message queued by 20 sessions and retained is on disk once, in the log and in the snapshot", () =>
    Effect.gen(function* () {
      const location = freshDir()
      const payload = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251))
      const count = (buf: Buffer) => {
        let k = 0
        for (let at = buf.indexOf(payload); at !== -1; at = buf.indexOf(payload, at + 1)) k++
        return k
      }
      const image = yield* withFile({ location }, (s) =>
        Effect.gen(function* () {
          const m = msg("big", payload, { retain: true })
          s.writer.retainedSet(m)
          for (let i = 0; i < 20; i++) s.writer.outboundQueue(`c${i}`, delivery(m))
          return yield* crashImage(s, location)
        })
      )
      const [log] = logsIn(image)
      expect(count(fs.readFileSync(path.join(image, log)))).toBe(1)
      expect(count(fs.readFileSync(path.join(location, "mosquitto.db")))).toBe(1)
      expect(fs.statSync(path.join(location, "mosquitto.db")).size).toBeLessThan(4096 + 20 * 64 + 200)
    })
  )

  it.live("a location that cannot be a directory is an io StoreError", () =>
    Effect.gen(function* () {
      const file = path.join(root, `plain-file-${++n}`)
      fs.writeFileSync(file, "x")
      const error = yield* Effect.flip(open({ location: path.join(file, "store") }))
      expect(error).toBeInstanceOf(StoreError)
      expect(error.reason).toBe("io")
    })
  )

  it.live("the files are readable by the broker's user only", () =>
    Effect.gen(function* () {
      const location = freshDir()
      yield* withFile({ location }, (s) => Effect.sync(() => s.writer.sessionUpsert(meta("c"))))
      for (const f of fs.readdirSync(location)) expect(fs.statSync(path.join(location, f)).mode & 0o777).toBe(0o600)
    })
  )

  it.live("a stale snapshot.tmp hard-linked to the snapshot (a power loss during a rename) is unlinked, never truncated", () =>
    Effect.gen(function* () {
      const location = freshDir()
      yield* withFile({ location, autosaveInterval: 0 }, (s) =>
        Effect.gen(function* () {
          s.writer.retainedSet(msg("r", "1", { retain: true }))
          yield* s.compact
          const keep = path.join(location, "keep")
          fs.linkSync(s.snapshotFile, keep)
          fs.linkSync(s.snapshotFile, `${s.snapshotFile}.tmp`)
          const before = fs.readFileSync(keep)
          s.writer.retainedSet(msg("r", "2", { retain: true }))
          yield* s.compact
          expect(fs.readFileSync(keep)).toEqual(before)
          fs.rmSync(keep)
        })
      )
    })
  )

  it.live("a failing disk: the error is counted, whenDurable never fires for what was not written, close gives up in time", () =>
    Effect.gen(function* () {
      const location = freshDir()
      let fired = 0
      const started = Date.now()
      yield* withFile({ location, durable: true, closeTimeoutMs: 500 }, (s) =>
        Effect.gen(function* () {
          yield* s.sync
          // pull the log's descriptor from under the engine: every write now fails (EBADF)
          fs.closeSync((s.writer as unknown as { fd: number }).fd)
          s.writer.retainedSet(msg("lost", "x", { retain: true }))
          s.writer.whenDurable(() => fired++)
          yield* until("the failed write", () => s.stats().errors > 0)
          yield* sleepReal(50)
          expect(fired).toBe(0)
        })
      )
      expect(fired).toBe(0)
      expect(Date.now() - started).toBeLessThan(10_000)
    })
  )

  it.live("after close the writer ignores calls", () =>
    Effect.gen(function* () {
      const location = freshDir()
      const writer = yield* withFile({ location }, (s) => Effect.succeed(s.writer))
      writer.retainedSet(msg("late", "x", { retain: true }))
      writer.outboundQueue("c", delivery(msg("late", "y")))
      yield* sleepReal(20)
      const { snapshot } = yield* open({ location })
      expect(snapshot).toEqual({ retained: [], sessions: [] })
    })
  )
})

describe("file store: crashes and damaged files", () => {
  it.live("the crash windows of a compaction: old snapshot + both logs, or new snapshot + new log, load the same", () =>
    Effect.gen(function* () {
      const location = freshDir()
      let beforeRename = ""
      yield* withFile({ location, autosaveInterval: 0 }, (s) =>
        Effect.gen(function* () {
          s.writer.retainedSet(msg("before", "1", { retain: true }))
          const image = yield* crashImage(s, location) // snapshot 1 + log 1
          yield* s.compact // snapshot 2 + log 2
          s.writer.retainedSet(msg("after", "2", { retain: true }))
          yield* s.sync
          // a crash after log 2 was started but before snapshot 2 replaced snapshot 1
          fs.copyFileSync(s.logFile(2), path.join(image, "mosquitto.db.2.log"))
          fs.writeFileSync(path.join(image, "mosquitto.db.tmp"), "half a snapshot")
          beforeRename = image
        })
      )
      expect(fs.readdirSync(beforeRename).sort()).toEqual(["mosquitto.db", "mosquitto.db.1.log", "mosquitto.db.2.log", "mosquitto.db.tmp"])
      const a = yield* open({ location: beforeRename, onCorrupt: "refuse" })
      expect(topics(a.snapshot)).toEqual(["before", "after"])
      expect(a.recovery.fault).toBeUndefined()
      expect(fs.existsSync(path.join(beforeRename, "mosquitto.db.tmp"))).toBe(false)
      const b = yield* open({ location, onCorrupt: "refuse" })
      expect(topics(b.snapshot)).toEqual(["before", "after"])
    })
  )

  it.live("a log older than the snapshot is ignored (a crash before it was deleted), then deleted", () =>
    Effect.gen(function* () {
      const location = freshDir()
      yield* withFile({ location }, (s) => Effect.sync(() => s.writer.retainedSet(msg("kept", "1", { retain: true }))))
      fs.writeFileSync(path.join(location, "mosquitto.db.1.log"), "stale garbage that is never read")
      const { snapshot, recovery } = yield* open({ location, onCorrupt: "refuse" })
      expect(topics(snapshot)).toEqual(["kept"])
      expect(recovery.fault).toBeUndefined()
      expect(logsIn(location)).toEqual(["mosquitto.db.4.log"])
    })
  )

  it.live.prop(
    "a log cut anywhere (a crash during a write) loads the frames before the cut, even with onCorrupt refuse",
    [fc.integer({ min: 0, max: 9999 })],
    ([perTenThousand]) =>
      Effect.gen(function* () {
        const image = yield* thirtyFrames
        const [log] = logsIn(image)
        const file = path.join(image, log)
        const whole = fs.readFileSync(file)
        const cut = Math.floor((perTenThousand / 10_000) * whole.length)
        fs.truncateSync(file, cut)
        const complete = frames(whole).filter((f) => f.end <= cut).length
        const { snapshot, recovery } = yield* open({ location: image, onCorrupt: "refuse" })
        expect(topics(snapshot)).toEqual(Array.from({ length: complete }, (_, i) => `t/${pad(i)}`))
        expect(recovery.records).toBe(2 * complete)
        const atBoundary = cut <= 24 || frames(whole).some((f) => f.end === cut)
        if (atBoundary) expect(recovery.fault).toBeUndefined()
        else {
          expect(recovery.fault?.reason).toBe("truncated")
          expect(recovery.fault?.recovered).toBe(2 * complete)
          expect(recovery.tornTail).toBe(true)
        }
      }),
    { fastCheck: { seed: 1883, numRuns: 30, examples: [[0], [9999], [5000], [100]] }, timeout: 60_000 }
  )

  it.live("a log whose tail is zeros (the filesystem extended it before the data landed) is a torn tail", () =>
    Effect.gen(function* () {
      const image = yield* thirtyFrames
      const file = path.join(image, logsIn(image)[0])
      const whole = fs.readFileSync(file)
      const f = frames(whole)
      fs.writeFileSync(file, Buffer.concat([whole.subarray(0, f[20].offset), Buffer.alloc(whole.length - f[20].offset)]))
      const { snapshot, recovery } = yield* open({ location: image, onCorrupt: "refuse" })
      expect(topics(snapshot)).toHaveLength(20)
      expect(recovery.fault?.reason).toBe("truncated")
    })
  )

  it.live("a flipped byte in the log: reported as corrupt with what was recovered; recover keeps the rest and the bad file", () =>
    Effect.gen(function* () {
      const image = yield* thirtyFrames
      const log = logsIn(image)[0]
      const file = path.join(image, log)
      const bytes = fs.readFileSync(file)
      const f = frames(bytes)[10]
      bytes[f.offset + 20] ^= 0x01
      fs.writeFileSync(file, bytes)

      const refused = copyDir(image)
      const error = yield* Effect.flip(open({ location: refused, onCorrupt: "refuse" }))
      expect(error).toMatchObject({ _tag: "StoreError", reason: "corrupt", offset: f.offset, recovered: 20 })
      expect(error.path).toBe(path.join(refused, log))
      expect(error.message).toContain(`${log} at byte ${f.offset}: bad frame checksum; 20 records recovered before it`)
      expect(fs.readFileSync(path.join(refused, log))).toEqual(bytes) // refusing touches nothing

      const { snapshot, recovery } = yield* open({ location: image })
      expect(topics(snapshot)).toEqual(Array.from({ length: 10 }, (_, i) => `t/${pad(i)}`))
      expect(recovery.fault).toMatchObject({ reason: "corrupt", recovered: 20 })
      expect(recovery.tornTail).toBe(false)
      expect(recovery.preserved).toHaveLength(1)
      expect(fs.readFileSync(recovery.preserved[0])).toEqual(bytes)
      // the recovered store is whole again
      const again = yield* open({ location: image, onCorrupt: "refuse" })
      expect(again.recovery.fault).toBeUndefined()
      expect(topics(again.snapshot)).toHaveLength(10)
    })
  )

  it.live.prop(
    "any byte of the snapshot or the log changed is corrupt, never a torn tail: refuse fails, recover reports it and keeps the file",
    [fc.boolean(), fc.nat(), fc.integer({ min: 1, max: 255 })],
    ([inSnapshot, at, xor]) =>
      Effect.gen(function* () {
        const image = yield* thirtyFrames
        const name = inSnapshot ? "mosquitto.db" : logsIn(image)[0]
        const file = path.join(image, name)
        const bytes = fs.readFileSync(file)
        const pos = at % bytes.length
        bytes[pos] ^= xor
        fs.writeFileSync(file, bytes)
        const error = yield* Effect.flip(open({ location: copyDir(image), onCorrupt: "refuse" }))
        expect(error, `${name} byte ${pos} ^ ${xor}`).toMatchObject({ _tag: "StoreError", reason: "corrupt" })
        const { recovery } = yield* open({ location: image })
        expect(recovery.fault?.reason).toBe("corrupt")
        expect(recovery.tornTail).toBe(false)
        expect(recovery.preserved.map((f) => path.basename(f).replace(/-\d+$/, "-T"))).toContain(`${name}.corrupt-T`)
      }),
    // the frames' length fields among them: before, a longer length read as a crash during the last write
    { fastCheck: { seed: 20_261_128, numRuns: 60, examples: [[false, 24, 0x80], [false, 27, 0x01], [true, 24, 0x01]] }, timeout: 60_000 }
  )

  it.live("a big frame of random bytes cut by a crash is still a torn tail (its bytes read as lengths lead nowhere)", () =>
    Effect.gen(function* () {
      const location = freshDir()
      const image = yield* withFile({ location, autosaveInterval: 0 }, (s) =>
        Effect.gen(function* () {
          s.writer.retainedSet(msg("small", "first", { retain: true }))
          yield* s.sync
          s.writer.retainedSet(msg("big", crypto.randomBytes(8 * 1024 * 1024), { retain: true }))
          yield* s.sync
          return yield* crashImage(s, location)
        })
      )
      const file = path.join(image, logsIn(image)[0])
      const whole = fs.readFileSync(file)
      const [first, big] = frames(whole)
      expect(big.end - big.offset).toBeGreaterThan(8 * 1024 * 1024)
      fs.truncateSync(file, big.offset + Math.floor((big.end - big.offset) / 2))
      const { snapshot, recovery } = yield* open({ location: image, onCorrupt: "refuse" })
      expect(topics(snapshot)).toEqual(["small"])
      expect(recovery.fault).toMatchObject({ reason: "truncated", offset: first.end })
      expect(recovery.tornTail).toBe(true)
    })
  )

  it.live("a flipped byte in the last frame is corrupt, not a torn tail", () =>
    Effect.gen(function* () {
      const image = yield* thirtyFrames
      const file = path.join(image, logsIn(image)[0])
      const bytes = fs.readFileSync(file)
      bytes[bytes.length - 3] ^= 0x40
      fs.writeFileSync(file, bytes)
      const error = yield* Effect.flip(open({ location: image, onCorrupt: "refuse" }))
      expect(error).toMatchObject({ reason: "corrupt", recovered: 58 })
    })
  )

  it.live("a damaged snapshot: truncated or flipped, refuse fails; recover keeps its first frames and skips the logs after it", () =>
    Effect.gen(function* () {
      const location = freshDir()
      yield* withFile({ location }, (s) =>
        Effect.sync(() => {
          // 100 KiB payloads: the snapshot spans several 256 KiB frames
          for (let i = 0; i < 10; i++) s.writer.retainedSet(msg(`big/${i}`, Buffer.alloc(100 * 1024, i), { retain: true }))
        })
      )
      const snapFile = path.join(location, "mosquitto.db")
      const whole = fs.readFileSync(snapFile)
      const f = frames(whole)
      expect(f.length).toBeGreaterThanOrEqual(4)

      const truncated = copyDir(location)
      fs.truncateSync(path.join(truncated, "mosquitto.db"), f[2].offset + 100)
      const e1 = yield* Effect.flip(open({ location: truncated, onCorrupt: "refuse" }))
      expect(e1).toMatchObject({ reason: "truncated", offset: f[2].offset })

      const flipped = copyDir(location)
      const bytes = Buffer.from(whole)
      bytes[f[1].offset + 1000] ^= 0xff
      fs.writeFileSync(path.join(flipped, "mosquitto.db"), bytes)
      const e2 = yield* Effect.flip(open({ location: flipped, onCorrupt: "refuse" }))
      expect(e2).toMatchObject({ reason: "corrupt", offset: f[1].offset })
      expect(e2.message).toContain("1 later file(s) not read")

      const r = yield* open({ location: flipped })
      // the first frame holds the first messages (each 100 KiB + its record); their retained records come last
      expect(r.recovery.fault?.reason).toBe("corrupt")
      expect(r.snapshot.retained).toEqual([])
      expect(r.recovery.records).toBeGreaterThan(0)
      expect(r.counts.messages).toBe(0) // unreferenced messages are dropped
      expect(r.recovery.preserved.map((p) => path.basename(p).replace(/-\d+$/, "-T")).sort()).toEqual([
        "mosquitto.db.2.log.corrupt-T",
        "mosquitto.db.corrupt-T"
      ])
    })
  )

  it.live("a bad header checksum is corrupt", () =>
    Effect.gen(function* () {
      const image = yield* thirtyFrames
      const file = path.join(image, logsIn(image)[0])
      const bytes = fs.readFileSync(file)
      bytes[13] ^= 1
      fs.writeFileSync(file, bytes)
      const error = yield* Effect.flip(open({ location: image, onCorrupt: "refuse" }))
      expect(error).toMatchObject({ reason: "corrupt", offset: 0 })
      expect(error.message).toContain("bad header checksum")
    })
  )

  it.live("a record with packet identifier 0 (its frame checksum right) is corrupt, not skipped", () =>
    Effect.gen(function* () {
      const location = freshDir()
      const image = yield* withFile({ location, autosaveInterval: 0 }, (s) =>
        Effect.gen(function* () {
          s.writer.outboundQueue("c", delivery(msg("z/1", "one")))
          yield* s.sync
          s.writer.inboundQos2Add("c", 0x4d2b) // alone in the last frame
          yield* s.sync
          return yield* crashImage(s, location)
        })
      )
      const log = logsIn(image)[0]
      const file = path.join(image, log)
      const bytes = fs.readFileSync(file)
      const last = frames(bytes).at(-1)!
      expect(bytes.readUInt16LE(last.end - 2)).toBe(0x4d2b) // the record's last field
      // unchanged, the image replays with the identifier held
      const whole = yield* open({ location: copyDir(image), onCorrupt: "refuse" })
      expect(sessionOf(whole.snapshot, "c")?.inboundQos2).toEqual([0x4d2b])

      bytes.writeUInt16LE(0, last.end - 2)
      bytes.writeUInt32LE(crc32(bytes, last.offset + 8, last.end), last.offset + 4)
      fs.writeFileSync(file, bytes)
      const error = yield* Effect.flip(open({ location: copyDir(image), onCorrupt: "refuse" }))
      expect(error).toMatchObject({ _tag: "StoreError", reason: "corrupt", offset: last.offset + 8 })
      expect(error.message).toContain("bad record: packet identifier 0")
      const { snapshot, recovery } = yield* open({ location: image })
      expect(recovery.fault).toMatchObject({ reason: "corrupt" })
      expect(sessionOf(snapshot, "c")?.inboundQos2).toEqual([])
    })
  )
})

describe("file store: formats", () => {
  const fixture = path.join(__dirname, "fixtures", "v1")

  it.live("a store written by format version 1 loads: snapshot and log, every kind of record", () =>
    Effect.gen(function* () {
      const location = copyDir(fixture)
      const { snapshot, recovery, counts } = yield* open({ location, onCorrupt: "refuse" })
      expect(recovery.fault).toBeUndefined()
      expect(counts).toEqual({ messages: 5, retained: 1, sessions: 2 })
      const shared = msg("news/today", "shared by three", { qos: 2, retain: true, properties: fullProperties, receivedAt: 1_700_000_000_000 })
      const expected: StoreSnapshot = {
        retained: [shared],
        sessions: [
          {
            ...meta("alice", {
              expiryInterval: 3600,
              disconnectedAt: 1_700_000_100_000,
              will: { topic: "alice/status", payload: Buffer.from("offline"), qos: 1, retain: true, properties: { contentType: "text/plain" }, delayInterval: 5 }
            }),
            subscriptions: new Map([["news/#", sub(2, { subscriptionId: 42, retainHandling: 1 })]]),
            inflight: [
              { ...delivery(msg("news/x", "qos2 a", { qos: 2 }), 2), messageId: 2, state: "await-pubrec" },
              { ...delivery(msg("news/y", "qos2 b", { qos: 2 }), 2), messageId: 3, state: "await-pubcomp" },
              { ...delivery(shared, 2, [42], true), messageId: 4, state: "await-pubrec" }
            ],
            queue: [delivery(msg("news/z", "queued qos0", { qos: 0 }), 0)],
            inboundQos2: [18]
          },
          {
            ...meta("carol", { expiryInterval: 60, disconnectedAt: 1_700_000_200_000 }),
            subscriptions: new Map(),
            inflight: [],
            queue: [delivery(shared, 1)],
            inboundQos2: []
          }
        ]
      }
      expect(plain(snapshot)).toEqual(plain(expected))
      expect(snapshot.sessions.map((s) => s.clientId)).toEqual(["alice", "carol"])
      // the store was rewritten in the current format and reads back the same
      const again = yield* open({ location, onCorrupt: "refuse" })
      expect(plain(again.snapshot)).toEqual(plain(expected))
    })
  )

  it.live("a store of format version 1 with shared subscription groups (optional trailing fields) and a clear record loads", () =>
    Effect.gen(function* () {
      const location = copyDir(path.join(__dirname, "fixtures", "v1-shared"))
      const { snapshot, recovery, counts } = yield* open({ location, onCorrupt: "refuse" })
      expect(recovery.fault).toBeUndefined()
      expect(recovery.files.map((f) => path.basename(f))).toEqual(["mosquitto.db", "mosquitto.db.3.log"])
      const group = { group: "workers", filter: "jobs/#" }
      const job1 = msg("jobs/1", "first job", { qos: 2, receivedAt: 1_700_000_300_000 })
      const job2 = msg("jobs/2", "second job", { qos: 1, receivedAt: 1_700_000_300_001 })
      const expected: StoreSnapshot = {
        retained: [],
        sessions: [
          {
            ...meta("dave", { expiryInterval: 600, disconnectedAt: 1_700_000_400_000 }),
            subscriptions: new Map([["$share/workers/jobs/#", sub(2, { subscriptionId: 7 })]]),
            inflight: [{ ...delivery(job1, 2, [7], false, group), messageId: 5, state: "await-pubcomp" }],
            queue: [delivery(job2, 1, [7], false, group)],
            inboundQos2: []
          },
          {
            ...meta("erin", { expiryInterval: 600, disconnectedAt: 1_700_000_400_000 }),
            subscriptions: new Map(),
            inflight: [],
            // the clear dropped job 2 and job 3; what was queued after it stays
            queue: [delivery(job1, 2, undefined, true, group)],
            inboundQos2: []
          }
        ]
      }
      expect(plain(snapshot)).toEqual(plain(expected))
      expect(counts).toEqual({ messages: 2, retained: 0, sessions: 2 })
      const again = yield* open({ location, onCorrupt: "refuse" })
      expect(plain(again.snapshot)).toEqual(plain(expected))
    })
  )

  it.live("a newer format version is refused in both modes, and the files are left alone", () =>
    Effect.gen(function* () {
      const location = copyDir(fixture)
      const file = path.join(location, "mosquitto.db")
      const bytes = fs.readFileSync(file)
      bytes.writeUInt16LE(99, 8)
      bytes.writeUInt32LE(crc32(bytes, 0, 20), 20)
      fs.writeFileSync(file, bytes)
      for (const onCorrupt of ["recover", "refuse"] as const) {
        const error = yield* Effect.flip(open({ location, onCorrupt }))
        expect(error).toMatchObject({ reason: "version", path: file })
        expect(error.message).toContain("format version 99")
      }
      expect(fs.readFileSync(file)).toEqual(bytes)
      expect(fs.readdirSync(location).sort()).toEqual(["mosquitto.db", "mosquitto.db.3.log"])
    })
  )

  it.live("a Mosquitto database in persistence_file is refused with a clear message, never overwritten", () =>
    Effect.gen(function* () {
      const location = freshDir()
      fs.mkdirSync(location)
      const mosquitto = Buffer.concat([Buffer.from([0x00, 0xb5, 0x00]), Buffer.from("mosquitto db"), Buffer.alloc(40, 1)])
      fs.writeFileSync(path.join(location, "mosquitto.db"), mosquitto)
      const error = yield* Effect.flip(open({ location }))
      expect(error.reason).toBe("version")
      expect(error.message).toContain("Mosquitto database")
      expect(fs.readFileSync(path.join(location, "mosquitto.db"))).toEqual(mosquitto)
    })
  )
})

describe("file store: group commit and compaction", () => {
  it.live("durable: 2000 writes in one turn are one batch and one fsync; every whenDurable fires after it", () =>
    withFile({ location: freshDir(), durable: true }, (s) =>
      Effect.gen(function* () {
        yield* s.sync
        const before = s.stats()
        let fired = 0
        const seen: Array<number> = []
        for (let i = 0; i < 2000; i++) {
          s.writer.outboundQueue("c", delivery(msg(`g/${i}`, `m${i}`)))
          s.writer.whenDurable(() => {
            fired++
            seen.push(s.stats().logSyncs)
          })
        }
        expect(fired).toBe(0) // not before the disk has it
        yield* until("2000 callbacks", () => fired === 2000)
        const after = s.stats()
        expect(after.batches - before.batches).toBe(1)
        expect(after.logSyncs - before.logSyncs).toBe(1)
        expect(new Set(seen)).toEqual(new Set([before.logSyncs + 1]))
        expect(s.writer.durable).toBe(true)
      })
    )
  )

  it.live("durable: writes over 200 turns are handed to the OS once per turn, while an fsync is in flight the next ones share one fsync, none lost", () =>
    withFile({ location: freshDir(), durable: true }, (s) =>
      Effect.gen(function* () {
        yield* s.sync
        const before = s.stats()
        let fired = 0
        for (let t = 0; t < 200; t++) {
          for (let i = 0; i < 10; i++) {
            s.writer.retainedSet(msg(`r/${t}/${i}`, "x", { retain: true }))
            s.writer.whenDurable(() => fired++)
          }
          yield* turn
        }
        yield* until("2000 callbacks", () => fired === 2000)
        const after = s.stats()
        // one write per turn, at its end: nothing the broker sends after it can be ahead of the store
        expect(after.batches - before.batches).toBe(200)
        // a turn takes microseconds, an fdatasync longer: the turns that come while one is in flight share the next
        // one, so there are fewer fsyncs than turns. How many fewer is the disk's and the load's (114 of 200 in one CI
        // run, against a bound of 100 this test had): it holds that some were shared, not a rate
        const syncs = after.logSyncs - before.logSyncs
        expect(syncs).toBeGreaterThan(0)
        expect(syncs).toBeLessThan(200)
        expect(after.records - before.records).toBe(4000)
      })
    )
  )

  for (const durable of [true, false]) {
    it.live(`${durable ? "durable" : "not durable"}: handOff puts every record written so far in the log at once, in the middle of a turn and during a compaction (what a kill -9 then leaves has them)`, () =>
      Effect.gen(function* () {
        const location = freshDir()
        yield* withFile({ location, durable }, (s) =>
          Effect.gen(function* () {
            yield* s.sync
            // synchronously: write, hand off, copy the files as a kill -9 would leave them
            s.writer.outboundQueue("c", delivery(msg("h/1", "one")))
            s.writer.inboundQos2Add("c", 9)
            s.writer.handOff()
            const image1 = copyDir(location)
            // a compaction starts a new log at once: what follows is handed off to it before its fsyncs are done
            const compacting = yield* Effect.fork(s.compact)
            s.writer.outboundQueue("c", delivery(msg("h/2", "two")))
            s.writer.handOff()
            const image2 = copyDir(location)
            yield* compacting
            for (const [image, topics] of [[image1, ["h/1"]], [image2, ["h/1", "h/2"]]] as const) {
              const { snapshot, recovery } = yield* open({ location: image, onCorrupt: "refuse" })
              expect(recovery.fault).toBeUndefined()
              const c = sessionOf(snapshot, "c")!
              expect(c.queue.map((d) => d.message.topic)).toEqual(topics)
              expect(c.inboundQos2).toEqual([9])
            }
          })
        )
      })
    )
  }

  it.live("not durable: whenDurable is immediate and batches are not fsynced one by one; a lazy fsync follows within a second or so", () =>
    withFile({ location: freshDir() }, (s) =>
      Effect.gen(function* () {
        yield* s.sync
        const before = s.stats()
        let fired = 0
        for (let t = 0; t < 20; t++) {
          s.writer.retainedSet(msg(`r/${t}`, "x", { retain: true }))
          s.writer.whenDurable(() => fired++)
          expect(fired).toBe(t + 1)
          yield* turn
        }
        yield* until("the batches", () => s.stats().batches - before.batches >= 1)
        expect(s.stats().logSyncs - before.logSyncs).toBeLessThanOrEqual(1)
        yield* until("the lazy fsync", () => s.stats().logSyncs > before.logSyncs, 5000)
      })
    )
  )

  it.scoped("autosave_interval: a compaction every interval on the Clock (TestClock here)", () =>
    Effect.gen(function* () {
      const ctx = yield* Layer.build(layerFile({ location: freshDir(), autosaveInterval: 60 }))
      const s = Context.get(ctx, FilePersistence)
      expect(s.stats().compactions).toBe(1) // the one at open
      s.writer.retainedSet(msg("x", "1", { retain: true }))
      yield* sleepReal(100)
      expect(s.stats().compactions).toBe(1)
      yield* TestClock.adjust("59 seconds")
      yield* sleepReal(100)
      expect(s.stats().compactions).toBe(1)
      yield* TestClock.adjust("1 second")
      yield* until("the scheduled compaction", () => s.stats().compactions === 2)
      yield* TestClock.adjust("60 seconds")
      yield* until("the next one", () => s.stats().compactions === 3)
    })
  )

  it.scoped("autosave_interval / autosave_on_changes reloaded (SIGHUP): the new interval counts from now; by changes; 0 stops the timed ones", () =>
    Effect.gen(function* () {
      const ctx = yield* Layer.build(layerFile({ location: freshDir(), autosaveInterval: 1800 }))
      const s = Context.get(ctx, FilePersistence)
      expect(s.stats().compactions).toBe(1) // the one at open
      yield* s.reconfigure({ autosaveInterval: 10, autosaveOnChanges: false })
      yield* TestClock.adjust("10 seconds")
      yield* until("a compaction 10 s after the reload", () => s.stats().compactions === 2)
      // by changes: no timed compaction any more, one after 4 changes
      yield* s.reconfigure({ autosaveInterval: 4, autosaveOnChanges: true })
      yield* TestClock.adjust("1 minutes")
      yield* sleepReal(100)
      expect(s.stats().compactions).toBe(2)
      for (let i = 0; i < 4; i++) s.writer.retainedSet(msg(`t/${i}`, "v", { retain: true }))
      yield* s.sync
      yield* until("a compaction after 4 changes", () => s.stats().compactions === 3)
      // 0: neither
      yield* s.reconfigure({ autosaveInterval: 0, autosaveOnChanges: false })
      for (let i = 0; i < 8; i++) s.writer.retainedSet(msg(`u/${i}`, "v", { retain: true }))
      yield* s.sync
      yield* TestClock.adjust("1 hours")
      yield* sleepReal(100)
      expect(s.stats().compactions).toBe(3)
    })
  )

  it.live("autosave_on_changes: autosave_interval counts changes", () =>
    withFile({ location: freshDir(), autosaveInterval: 50, autosaveOnChanges: true }, (s) =>
      Effect.gen(function* () {
        const write = (k: number) =>
          Effect.gen(function* () {
            for (let i = 0; i < k; i++) {
              s.writer.retainedSet(msg("same/topic", `v${i}`, { retain: true })) // 2 records
              yield* turn
            }
            yield* s.sync
          })
        expect(s.stats().compactions).toBe(1) // the one at open
        yield* write(20)
        yield* sleepReal(100)
        expect(s.stats().compactions).toBe(1) // 40 changes
        yield* write(10)
        yield* until("a compaction after 50 changes", () => s.stats().compactions === 2)
        yield* write(30)
        yield* until("the next one", () => s.stats().compactions === 3)
      })
    )
  )

  it.live("the log is compacted when it outgrows its bound, so it never grows without limit", () =>
    Effect.gen(function* () {
      const location = freshDir()
      yield* withFile({ location, autosaveInterval: 0, compactAfterBytes: 16 * 1024 }, (s) =>
        Effect.gen(function* () {
          for (let i = 0; i < 100; i++) {
            s.writer.retainedSet(msg("same/topic", Buffer.alloc(1024, i), { retain: true }))
            yield* s.sync // one batch each: about 100 KiB of log in all
          }
          yield* until("compactions", () => s.stats().compactions >= 3)
          yield* s.sync
        })
      )
      expect(logsIn(location)).toHaveLength(1)
      const { snapshot } = yield* open({ location })
      expect(snapshot.retained[0].payload).toEqual(Buffer.alloc(1024, 99))
    })
  )

  it.live("compaction while writes continue loses nothing (the records after it go to the next log)", () =>
    Effect.gen(function* () {
      const location = freshDir()
      const image = yield* withFile({ location, autosaveInterval: 0, durable: true }, (s) =>
        Effect.gen(function* () {
          let fired = 0
          for (let i = 0; i < 50; i++) {
            s.writer.outboundQueue("c", delivery(msg(`q/${i}`, `${i}`)))
            s.writer.whenDurable(() => fired++)
            if (i % 10 === 5) yield* Effect.fork(s.compact)
            if (i % 7 === 0) yield* turn
          }
          yield* until("every write", () => fired === 50)
          return yield* crashImage(s, location)
        })
      )
      const { snapshot } = yield* open({ location: image, onCorrupt: "refuse" })
      expect(sessionOf(snapshot, "c")!.queue.map((d) => d.message.topic)).toEqual(Array.from({ length: 50 }, (_, i) => `q/${i}`))
    })
  )
})

describe("StoreError", () => {
  it("is a Schema.TaggedError: it encodes and decodes, and an unknown reason does not decode", () => {
    const e = new StoreError({ reason: "corrupt", message: "bad", path: "/x", offset: 24, recovered: 3 })
    const encoded = Schema.encodeSync(StoreError)(e)
    expect(encoded).toEqual({ _tag: "StoreError", reason: "corrupt", message: "bad", path: "/x", offset: 24, recovered: 3 })
    expect(Schema.decodeUnknownSync(StoreError)(encoded)).toEqual(e)
    expect(Either.isLeft(Schema.decodeUnknownEither(StoreError)({ ...encoded, reason: "melted" }))).toBe(true)
  })
})
