/**
 * Reading a store file: the header, then frame after frame, applying every
 * record to a StoreState. Reading stops at the first bad frame and says why
 * and where; what came before stays applied.
 */
import { ParseResult, Schema } from "effect"
import {
  FORMAT_VERSION,
  FRAME_HEADER,
  HEADER_SIZE,
  MAGIC,
  MAX_FRAME,
  MOSQUITTO_MAGIC,
  Reader,
  RecordFault,
  Tag,
  crc32
} from "./codec.js"
import type { MessageEntry, StoreState } from "./state.js"

export interface Header {
  readonly version: number
  readonly kind: number
  readonly generation: number
}

export type HeaderResult =
  | { readonly _tag: "ok"; readonly header: Header }
  /** shorter than a header but a prefix of one: a file created by a crash before its header was written */
  | { readonly _tag: "empty" }
  | { readonly _tag: "fault"; readonly reason: "corrupt" | "version"; readonly message: string }

export const readHeader = (buf: Buffer): HeaderResult => {
  if (buf.length >= MOSQUITTO_MAGIC.length && buf.subarray(0, MOSQUITTO_MAGIC.length).equals(MOSQUITTO_MAGIC)) {
    return {
      _tag: "fault",
      reason: "version",
      message: "this is a Mosquitto database, which Midge cannot read: move it away or choose another persistence_file"
    }
  }
  if (buf.length < HEADER_SIZE) {
    const n = Math.min(buf.length, MAGIC.length)
    if (buf.subarray(0, n).equals(MAGIC.subarray(0, n))) return { _tag: "empty" }
    return { _tag: "fault", reason: "corrupt", message: "not a Midge store (bad magic)" }
  }
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    return { _tag: "fault", reason: "corrupt", message: "not a Midge store (bad magic)" }
  }
  if (buf.readUInt32LE(20) !== crc32(buf, 0, 20)) {
    return { _tag: "fault", reason: "corrupt", message: "bad header checksum" }
  }
  const version = buf.readUInt16LE(8)
  if (version > FORMAT_VERSION || version === 0) {
    return {
      _tag: "fault",
      reason: "version",
      message: `format version ${version}: this Midge reads versions 1 to ${FORMAT_VERSION} (written by a newer Midge?)`
    }
  }
  return { _tag: "ok", header: { version, kind: buf[10], generation: buf.readUIntLE(12, 6) } }
}

export interface ReplayFault {
  readonly reason: "corrupt" | "truncated"
  /** byte offset of the bad frame */
  readonly offset: number
  readonly message: string
}

export interface ReplayResult {
  /** records applied */
  readonly records: number
  /** a snapshot: its end record was read */
  readonly complete: boolean
  readonly fault: ReplayFault | undefined
}

// --- Schema checks of the value records (messages, sessions, wills, subscriptions) at the file
// boundary; the reader has already bounds-checked every field and its domain (QoS, flags, ids)
const Uint32 = Schema.Number.pipe(Schema.int(), Schema.between(0, 0xffffffff))
const Properties = Schema.Struct({
  payloadFormatIndicator: Schema.optional(Schema.Boolean),
  messageExpiryInterval: Schema.optional(Uint32),
  responseTopic: Schema.optional(Schema.String),
  correlationData: Schema.optional(Schema.Uint8ArrayFromSelf),
  userProperties: Schema.optional(
    Schema.Record({ key: Schema.String, value: Schema.Union(Schema.String, Schema.Array(Schema.String)) })
  ),
  contentType: Schema.optional(Schema.String)
})
const QoS = Schema.Literal(0, 1, 2)
const MessageRecord = Schema.Struct({
  topic: Schema.String,
  payload: Schema.Uint8ArrayFromSelf,
  qos: QoS,
  retain: Schema.Boolean,
  properties: Schema.UndefinedOr(Properties),
  origin: Schema.String,
  receivedAt: Schema.Number
})
const SessionRecord = Schema.Struct({
  clientId: Schema.String,
  expiryInterval: Uint32,
  disconnectedAt: Schema.UndefinedOr(Schema.Number),
  will: Schema.UndefinedOr(
    Schema.Struct({
      topic: Schema.String,
      payload: Schema.Uint8ArrayFromSelf,
      qos: QoS,
      retain: Schema.Boolean,
      properties: Schema.UndefinedOr(Properties),
      delayInterval: Uint32
    })
  )
})
const SubscriptionRecord = Schema.Struct({
  qos: QoS,
  noLocal: Schema.Boolean,
  retainAsPublished: Schema.Boolean,
  retainHandling: Schema.Literal(0, 1, 2),
  subscriptionId: Schema.UndefinedOr(Schema.Number.pipe(Schema.int(), Schema.between(1, 0xffffffff)))
})
const check = <A, I>(schema: Schema.Schema<A, I>) => {
  const validate = ParseResult.validateEither(schema, { errors: "first" })
  return (value: unknown): void => {
    const r = validate(value)
    if (r._tag === "Left") throw new RecordFault(ParseResult.TreeFormatter.formatIssueSync(r.left))
  }
}
const checkMessage = check(MessageRecord)
const checkSession = check(SessionRecord)
const checkSubscription = check(SubscriptionRecord)

const known = (state: StoreState, ref: number): MessageEntry => {
  const entry = state.replayed(ref)
  if (entry === undefined) throw new RecordFault(`reference to unknown message ${ref}`)
  return entry
}

/** Apply one record (the reader is positioned after its tag). */
const apply = (tag: number, r: Reader, state: StoreState): void => {
  switch (tag) {
    case Tag.Message: {
      const { ref, message } = r.message()
      checkMessage(message)
      if (ref === 0 || state.replayed(ref) !== undefined) throw new RecordFault(`message ${ref} stored twice`)
      state.addMessage(message, ref)
      return
    }
    case Tag.RetainedSet: {
      const entry = known(state, r.u48())
      state.retainedSet(entry.message.topic, entry)
      return
    }
    case Tag.RetainedDelete:
      state.retainedDelete(r.str())
      return
    case Tag.Session: {
      const meta = r.session()
      checkSession(meta)
      state.sessionUpsert(meta)
      return
    }
    case Tag.SessionDelete:
      state.sessionDelete(r.str())
      return
    case Tag.SubscriptionSet: {
      const clientId = r.str()
      const filter = r.str()
      const options = r.subscription()
      checkSubscription(options)
      state.subscriptionSet(clientId, filter, options)
      return
    }
    case Tag.SubscriptionDelete: {
      const clientId = r.str()
      state.subscriptionDelete(clientId, r.str())
      return
    }
    case Tag.OutQueue: {
      const clientId = r.str()
      const entry = known(state, r.u48())
      const qos = r.qos()
      const retain = r.bool()
      const ids = r.subIds()
      state.outboundQueue(clientId, entry, qos, retain, ids, r.shared())
      return
    }
    case Tag.OutSend: {
      const clientId = r.str()
      const messageId = r.messageId()
      const entry = known(state, r.u48())
      const qos = r.qos()
      const retain = r.bool()
      const st = r.state()
      if (qos === 0 || (qos === 1 && st !== "await-puback") || (qos === 2 && st === "await-puback")) {
        throw new RecordFault(`QoS ${qos} delivery in state ${st}`)
      }
      const ids = r.subIds()
      state.outboundSend(clientId, messageId, entry, qos, retain, ids, st, r.shared())
      return
    }
    case Tag.OutDequeue: {
      const clientId = r.str()
      state.outboundDequeue(clientId, r.u16())
      return
    }
    case Tag.OutPubrec: {
      const clientId = r.str()
      state.outboundPubrec(clientId, r.messageId())
      return
    }
    case Tag.OutDone: {
      const clientId = r.str()
      state.outboundDone(clientId, r.messageId())
      return
    }
    case Tag.OutClear:
      state.outboundClear(r.str())
      return
    case Tag.InboundAdd: {
      const clientId = r.str()
      state.inboundQos2Add(clientId, r.messageId())
      return
    }
    case Tag.InboundRelease: {
      const clientId = r.str()
      state.inboundQos2Release(clientId, r.messageId())
      return
    }
    default:
      throw new RecordFault(`unknown record type ${tag}`)
  }
}

const allZero = (buf: Buffer, from: number): boolean => {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false
  return true
}

/** reads of lengths and checksummed bytes `wholeFrameAfter` may spend before it gives up (a torn tail, then) */
const SCAN_BUDGET = 64 * 1024 * 1024

/**
 * The offset of a whole frame from `from` on, if there is one: a length that fits, the lengths
 * after it leading exactly to the end of the file (or to zeros up to it), and its checksum right.
 * Any offset is tried. Inside a torn frame's bytes a length rarely fits and a chain of them
 * almost never ends at the end of the file, so a checksum is seldom computed; bytes chosen to
 * make it costly stop at the budget, and the frame is then taken for torn, as before.
 */
const wholeFrameAfter = (buf: Buffer, from: number): number | undefined => {
  let budget = SCAN_BUDGET
  for (let q = from; q + FRAME_HEADER < buf.length && budget > 0; q++) {
    budget--
    const length = buf.readUInt32LE(q)
    if (length === 0 || length > buf.length - q - FRAME_HEADER) continue
    let p = q + FRAME_HEADER + length
    while (p + FRAME_HEADER <= buf.length && budget > 0) {
      budget--
      const next = buf.readUInt32LE(p)
      if (next === 0) break
      p += FRAME_HEADER + next
    }
    if (p !== buf.length) {
      if (p > buf.length) continue
      budget -= buf.length - p
      if (!allZero(buf, p)) continue
    }
    budget -= length
    if (buf.readUInt32LE(q + 4) === crc32(buf, q + FRAME_HEADER, q + FRAME_HEADER + length)) return q
  }
  return undefined
}

/**
 * Apply the frames of `buf` (after its header) to `state`. A snapshot must end
 * with its End record; a log may end anywhere between frames.
 *
 * A file that ends inside a frame, or whose tail is zeros (a filesystem that
 * extended the file before the data landed), is `truncated`: the signature of
 * a crash during a write. A bad checksum, an impossible record, bytes after
 * a snapshot's end, or a frame that runs past the end of the file but was
 * written whole (a whole frame follows it, or its checksum matches what is
 * there: its length field is damaged) are `corrupt`.
 */
export const replayFile = (buf: Buffer, state: StoreState, snapshot: boolean): ReplayResult => {
  let pos = HEADER_SIZE
  let records = 0
  const r = new Reader(buf)
  const fault = (reason: "corrupt" | "truncated", offset: number, message: string): ReplayResult => ({
    records,
    complete: false,
    fault: { reason, offset, message }
  })
  while (pos < buf.length) {
    if (buf.length - pos < FRAME_HEADER) return fault("truncated", pos, "the file ends inside a frame header")
    const length = buf.readUInt32LE(pos)
    if (length === 0) {
      return allZero(buf, pos)
        ? fault("truncated", pos, "the file ends with zeros (an unfinished write)")
        : fault("corrupt", pos, "empty frame")
    }
    if (length > MAX_FRAME) return fault("corrupt", pos, `impossible frame length ${length}`)
    const end = pos + FRAME_HEADER + length
    if (end > buf.length) {
      // A crash during the last write leaves its frame short. A frame short of its length that is
      // followed by a whole one, or whose checksum matches the bytes that are there, was written
      // whole: its length is what is damaged, and what comes after it must not pass for unwritten.
      if (buf.readUInt32LE(pos + 4) === crc32(buf, pos + FRAME_HEADER, buf.length)) {
        return fault("corrupt", pos, `frame length ${length} damaged: its checksum matches the ${buf.length - pos - FRAME_HEADER} bytes up to the end of the file`)
      }
      const next = wholeFrameAfter(buf, pos + FRAME_HEADER)
      if (next !== undefined) return fault("corrupt", pos, `frame length ${length} runs past the end of the file, over a whole frame at byte ${next}`)
      return fault("truncated", pos, `the file ends inside a frame (${buf.length - pos} of ${length + FRAME_HEADER} bytes)`)
    }
    if (buf.readUInt32LE(pos + 4) !== crc32(buf, pos + FRAME_HEADER, end)) {
      return fault("corrupt", pos, "bad frame checksum")
    }
    let p = pos + FRAME_HEADER
    try {
      while (p < end) {
        if (end - p < 5) throw new RecordFault("record header cut by the frame end")
        const n = buf.readUInt32LE(p)
        if (n < 1 || p + 4 + n > end) throw new RecordFault(`record length ${n} beyond its frame`)
        const tag = buf[p + 4]
        r.pos = p + 5
        r.end = p + 4 + n
        if (tag === Tag.End) {
          if (!snapshot) throw new RecordFault("end record in a log")
          const count = r.u32()
          if (count !== records) throw new RecordFault(`end record counts ${count} records, ${records} read`)
          if (r.pos !== r.end || p + 4 + n !== end || end !== buf.length) throw new RecordFault("bytes after the end record")
          return { records, complete: true, fault: undefined }
        }
        apply(tag, r, state)
        if (r.pos !== r.end) throw new RecordFault(`record type ${tag} longer than its fields`)
        records++
        p += 4 + n
      }
    } catch (e) {
      if (e instanceof RecordFault) return fault("corrupt", p, `bad record: ${e.message}`)
      throw e
    }
    pos = end
  }
  return snapshot ? fault("truncated", pos, "the snapshot has no end record") : { records, complete: true, fault: undefined }
}
