/**
 * The file store's binary format (version 1). Little-endian throughout.
 *
 *   file   := header frame*
 *   header := magic "\x89MIDGE\r\n" (8) · version u16 · kind u8 (1 snapshot, 2 log)
 *             · 0 u8 · generation u48 · 0 u16 · crc32 of the 20 bytes before (u32)   = 24 bytes
 *   frame  := body length u32 · crc32(body) u32 · body = record+
 *   record := length u32 (of what follows) · tag u8 · fields
 *
 * A frame is one batch (one write); the encoder starts a new frame past
 * FRAME_TARGET bytes, so a bad byte costs at most that much. The checksum is
 * computed once per frame at flush time, not per record on the hot path.
 * Strings are u32 length + UTF-8, byte strings u32 length + raw bytes,
 * message references u48, times f64 (ms since the epoch).
 */
import * as zlib from "node:zlib"
import type { SubscriptionOptions } from "../../routing/Router.js"
import { codeUnitAt } from "../../runtime/codeUnit.js"
import type { MessageProperties, QoS } from "../../session/Message.js"
import type { OutState, StoredMessage, StoredSessionMeta, StoredSharedGroup, StoredWill } from "../Persistence.js"

export const FORMAT_VERSION = 1
export const HEADER_SIZE = 24
export const MAGIC = Buffer.from("\x89MIDGE\r\n", "latin1")
/** Mosquitto's `mosquitto.db` starts with this */
export const MOSQUITTO_MAGIC = Buffer.from([0x00, 0xb5, 0x00, ...Buffer.from("mosquitto db")])
export const KIND_SNAPSHOT = 1
export const KIND_LOG = 2
export const FRAME_HEADER = 8
export const FRAME_TARGET = 256 * 1024
/** no frame or record is larger: MQTT's largest packet plus room */
export const MAX_FRAME = 512 * 1024 * 1024

export const Tag = {
  Message: 1,
  RetainedSet: 2,
  RetainedDelete: 3,
  Session: 4,
  SessionDelete: 5,
  SubscriptionSet: 6,
  SubscriptionDelete: 7,
  OutQueue: 8,
  OutSend: 9,
  OutDequeue: 10,
  OutPubrec: 11,
  OutDone: 12,
  OutClear: 13,
  InboundAdd: 14,
  InboundRelease: 15,
  /** last record of a snapshot: the count of records before it */
  End: 127
} as const

const STATES: ReadonlyArray<OutState> = ["await-puback", "await-pubrec", "await-pubcomp"]
export const stateCode = (s: OutState): number => (s === "await-puback" ? 0 : s === "await-pubrec" ? 1 : 2)

// --- CRC-32 (IEEE): zlib's native one where Node has it (>= 20.15), else a table
const crcTable = (() => {
  const t = new Int32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[n] = c
  }
  return t
})()
const nativeCrc = (zlib as { crc32?: (data: Uint8Array) => number }).crc32
export const crc32 = (buf: Buffer, start: number, end: number): number => {
  if (nativeCrc !== undefined) return nativeCrc(buf.subarray(start, end))
  let c = -1
  for (let i = start; i < end; i++) c = crcTable[(c ^ buf[i]) & 255] ^ (c >>> 8)
  return (c ^ -1) >>> 0
}

export const encodeHeader = (kind: number, generation: number): Buffer => {
  const b = Buffer.alloc(HEADER_SIZE)
  MAGIC.copy(b, 0)
  b.writeUInt16LE(FORMAT_VERSION, 8)
  b[10] = kind
  b.writeUIntLE(generation, 12, 6)
  b.writeUInt32LE(crc32(b, 0, 20), 20)
  return b
}

/**
 * A growing buffer of frames. Records are appended in place; `seal()` closes
 * the open frame (length and checksum) before the bytes are written.
 */
export class Encoder {
  buf: Buffer
  len = 0
  /** offset of the open frame's header, -1 when none is open */
  private frame = -1
  private rec = 0
  /** records appended since the last reset */
  records = 0

  constructor(size = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(size)
  }

  reset(): void {
    this.len = 0
    this.frame = -1
    this.records = 0
  }

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.len + n) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.len)
    this.buf = next
  }

  /** Close the open frame: write its length and checksum. */
  seal(): void {
    const f = this.frame
    if (f < 0) return
    const buf = this.buf
    buf.writeUInt32LE(this.len - f - FRAME_HEADER, f)
    buf.writeUInt32LE(crc32(buf, f + FRAME_HEADER, this.len), f + 4)
    this.frame = -1
  }

  begin(tag: number): void {
    if (this.frame >= 0 && this.len - this.frame > FRAME_TARGET) this.seal()
    this.ensure(FRAME_HEADER + 5 + 64)
    if (this.frame < 0) {
      this.frame = this.len
      this.len += FRAME_HEADER
    }
    this.rec = this.len
    this.buf[this.len + 4] = tag
    this.len += 5
  }

  end(): void {
    this.buf.writeUInt32LE(this.len - this.rec - 4, this.rec)
    this.records++
  }

  u8(v: number): void {
    this.ensure(1)
    this.buf[this.len++] = v
  }
  u16(v: number): void {
    this.ensure(2)
    this.buf.writeUInt16LE(v, this.len)
    this.len += 2
  }
  u32(v: number): void {
    this.ensure(4)
    this.buf.writeUInt32LE(v >>> 0, this.len)
    this.len += 4
  }
  u48(v: number): void {
    this.ensure(6)
    const b = this.buf
    const p = this.len
    const lo = v >>> 0
    const hi = (v - lo) / 0x1_0000_0000
    b[p] = lo
    b[p + 1] = lo >>> 8
    b[p + 2] = lo >>> 16
    b[p + 3] = lo >>> 24
    b[p + 4] = hi
    b[p + 5] = hi >>> 8
    this.len = p + 6
  }
  f64(v: number): void {
    this.ensure(8)
    this.buf.writeDoubleLE(v, this.len)
    this.len += 8
  }
  str(s: string): void {
    const n = s.length
    this.ensure(4 + n * 3)
    const b = this.buf
    const at = this.len + 4
    let bytes = n
    // short ASCII strings (client ids, topics) byte by byte: cheaper than a call into C++
    if (n <= 64) {
      for (let i = 0; i < n; i++) {
        const c = codeUnitAt(s, i)
        if (c >= 0x80) {
          bytes = -1
          break
        }
        b[at + i] = c
      }
    } else bytes = -1
    if (bytes < 0) bytes = b.write(s, at, "utf8")
    b.writeUInt32LE(bytes, this.len)
    this.len = at + bytes
  }
  bytes(b: Uint8Array): void {
    this.ensure(4 + b.length)
    this.buf.writeUInt32LE(b.length, this.len)
    this.buf.set(b, this.len + 4)
    this.len += 4 + b.length
  }

  // --- v5 properties: a presence mask, then the fields present
  props(p: MessageProperties | undefined): void {
    if (p === undefined) return this.u8(0)
    const mask =
      128 |
      (p.payloadFormatIndicator !== undefined ? 1 : 0) |
      (p.messageExpiryInterval !== undefined ? 2 : 0) |
      (p.responseTopic !== undefined ? 4 : 0) |
      (p.correlationData !== undefined ? 8 : 0) |
      (p.userProperties !== undefined ? 16 : 0) |
      (p.contentType !== undefined ? 32 : 0)
    this.u8(mask)
    if (mask & 1) this.u8(p.payloadFormatIndicator ? 1 : 0)
    if (mask & 2) this.u32(p.messageExpiryInterval!)
    if (mask & 4) this.str(p.responseTopic!)
    if (mask & 8) this.bytes(p.correlationData!)
    if (mask & 16) {
      const up = p.userProperties!
      const keys = Object.keys(up)
      this.u32(keys.length)
      for (const k of keys) {
        const v = up[k]
        this.str(k)
        if (typeof v === "string") {
          this.u8(0)
          this.str(v)
        } else {
          this.u8(1)
          this.u32(v.length)
          for (const s of v) this.str(s)
        }
      }
    }
    if (mask & 32) this.str(p.contentType!)
  }

  subIds(ids: ReadonlyArray<number> | undefined): void {
    if (ids === undefined) return this.u16(0xffff)
    this.u16(ids.length)
    for (let i = 0; i < ids.length; i++) this.u32(ids[i])
  }

  // --- records
  message(ref: number, m: StoredMessage): void {
    this.begin(Tag.Message)
    this.u48(ref)
    this.f64(m.receivedAt)
    this.u8(m.qos)
    this.u8(m.retain ? 1 : 0)
    this.str(m.topic)
    this.str(m.origin)
    this.props(m.properties)
    this.bytes(m.payload)
    this.end()
  }
  retainedSet(ref: number): void {
    this.begin(Tag.RetainedSet)
    this.u48(ref)
    this.end()
  }
  retainedDelete(topic: string): void {
    this.begin(Tag.RetainedDelete)
    this.str(topic)
    this.end()
  }
  session(meta: StoredSessionMeta): void {
    this.begin(Tag.Session)
    this.str(meta.clientId)
    this.u32(meta.expiryInterval)
    this.f64(meta.disconnectedAt === undefined ? NaN : meta.disconnectedAt)
    const w = meta.will
    if (w === undefined) this.u8(0)
    else {
      this.u8(1)
      this.u8(w.qos)
      this.u8(w.retain ? 1 : 0)
      this.u32(w.delayInterval)
      this.str(w.topic)
      this.props(w.properties)
      this.bytes(w.payload)
    }
    this.end()
  }
  clientOnly(tag: number, clientId: string): void {
    this.begin(tag)
    this.str(clientId)
    this.end()
  }
  clientId16(tag: number, clientId: string, id: number): void {
    this.begin(tag)
    this.str(clientId)
    this.u16(id)
    this.end()
  }
  subscriptionSet(clientId: string, filter: string, o: SubscriptionOptions): void {
    this.begin(Tag.SubscriptionSet)
    this.str(clientId)
    this.str(filter)
    this.u8(o.qos)
    this.u8((o.noLocal ? 1 : 0) | (o.retainAsPublished ? 2 : 0) | (o.retainHandling << 2))
    this.u32(o.subscriptionId ?? 0)
    this.end()
  }
  subscriptionDelete(clientId: string, filter: string): void {
    this.begin(Tag.SubscriptionDelete)
    this.str(clientId)
    this.str(filter)
    this.end()
  }
  /** a trailing optional field: absent in records of deliveries outside shared subscriptions */
  private shared(g: StoredSharedGroup | undefined): void {
    if (g === undefined) return
    this.str(g.group)
    this.str(g.filter)
  }
  outQueue(
    clientId: string,
    ref: number,
    qos: QoS,
    retain: boolean,
    ids: ReadonlyArray<number> | undefined,
    shared: StoredSharedGroup | undefined
  ): void {
    this.begin(Tag.OutQueue)
    this.str(clientId)
    this.u48(ref)
    this.u8(qos)
    this.u8(retain ? 1 : 0)
    this.subIds(ids)
    this.shared(shared)
    this.end()
  }
  outSend(
    clientId: string,
    messageId: number,
    ref: number,
    qos: QoS,
    retain: boolean,
    ids: ReadonlyArray<number> | undefined,
    state: OutState,
    shared: StoredSharedGroup | undefined
  ): void {
    this.begin(Tag.OutSend)
    this.str(clientId)
    this.u16(messageId)
    this.u48(ref)
    this.u8(qos)
    this.u8(retain ? 1 : 0)
    this.u8(stateCode(state))
    this.subIds(ids)
    this.shared(shared)
    this.end()
  }
  endOfSnapshot(count: number): void {
    this.begin(Tag.End)
    this.u32(count)
    this.end()
  }
}

/** A fault inside a frame whose checksum was right: an impossible record. */
export class RecordFault extends Error {}

/** Reads the fields of one record; every read is bounds-checked. */
export class Reader {
  pos = 0
  end = 0
  constructor(readonly buf: Buffer) {}

  private need(n: number): number {
    const p = this.pos
    if (p + n > this.end) throw new RecordFault("record shorter than its fields")
    this.pos = p + n
    return p
  }
  u8(): number {
    return this.buf[this.need(1)]
  }
  u16(): number {
    return this.buf.readUInt16LE(this.need(2))
  }
  u32(): number {
    return this.buf.readUInt32LE(this.need(4))
  }
  u48(): number {
    return this.buf.readUIntLE(this.need(6), 6)
  }
  f64(): number {
    return this.buf.readDoubleLE(this.need(8))
  }
  str(): string {
    const n = this.u32()
    const p = this.need(n)
    return this.buf.toString("utf8", p, p + n)
  }
  /** a copy: loaded messages must not pin the whole file in memory */
  bytes(): Buffer {
    const n = this.u32()
    const p = this.need(n)
    return Buffer.from(this.buf.subarray(p, p + n))
  }
  qos(): QoS {
    const q = this.u8()
    if (q > 2) throw new RecordFault(`QoS ${q}`)
    return q as QoS
  }
  bool(): boolean {
    const b = this.u8()
    if (b > 1) throw new RecordFault(`flag ${b}`)
    return b === 1
  }
  messageId(): number {
    const id = this.u16()
    if (id === 0) throw new RecordFault("packet identifier 0")
    return id
  }
  state(): OutState {
    const s = this.u8()
    if (s > 2) throw new RecordFault(`delivery state ${s}`)
    return STATES[s]
  }
  props(): MessageProperties | undefined {
    const mask = this.u8()
    if (mask === 0) return undefined
    if ((mask & 128) === 0 || (mask & 64) !== 0) throw new RecordFault(`property mask ${mask}`)
    const p: {
      payloadFormatIndicator?: boolean
      messageExpiryInterval?: number
      responseTopic?: string
      correlationData?: Buffer
      userProperties?: { [key: string]: string | Array<string> }
      contentType?: string
    } = {}
    if (mask & 1) p.payloadFormatIndicator = this.bool()
    if (mask & 2) p.messageExpiryInterval = this.u32()
    if (mask & 4) p.responseTopic = this.str()
    if (mask & 8) p.correlationData = this.bytes()
    if (mask & 16) {
      const up: { [key: string]: string | Array<string> } = {}
      const count = this.u32()
      for (let i = 0; i < count; i++) {
        const key = this.str()
        let value: string | Array<string>
        const kind = this.u8()
        if (kind === 0) value = this.str()
        else if (kind === 1) {
          const n = this.u32()
          if (n > this.end - this.pos) throw new RecordFault("user property count")
          value = []
          for (let j = 0; j < n; j++) value.push(this.str())
        } else throw new RecordFault(`user property kind ${kind}`)
        // "__proto__" is a legal user property name: define, do not assign
        Object.defineProperty(up, key, { value, enumerable: true, writable: true, configurable: true })
      }
      p.userProperties = up
    }
    if (mask & 32) p.contentType = this.str()
    return p
  }
  /** the optional trailing shared subscription group of a delivery record */
  shared(): StoredSharedGroup | undefined {
    if (this.pos === this.end) return undefined
    const group = this.str()
    return { group, filter: this.str() }
  }
  subIds(): ReadonlyArray<number> | undefined {
    const n = this.u16()
    if (n === 0xffff) return undefined
    const ids: Array<number> = []
    for (let i = 0; i < n; i++) ids.push(this.u32())
    return ids
  }
  message(): { ref: number; message: StoredMessage } {
    const ref = this.u48()
    const receivedAt = this.f64()
    const qos = this.qos()
    const retain = this.bool()
    const topic = this.str()
    const origin = this.str()
    const properties = this.props()
    const payload = this.bytes()
    return { ref, message: { topic, payload, qos, retain, properties, origin, receivedAt } }
  }
  session(): StoredSessionMeta {
    const clientId = this.str()
    const expiryInterval = this.u32()
    const at = this.f64()
    let will: StoredWill | undefined
    if (this.bool()) {
      const qos = this.qos()
      const retain = this.bool()
      const delayInterval = this.u32()
      const topic = this.str()
      const properties = this.props()
      const payload = this.bytes()
      will = { topic, payload, qos, retain, properties, delayInterval }
    }
    return { clientId, expiryInterval, disconnectedAt: Number.isNaN(at) ? undefined : at, will }
  }
  subscription(): SubscriptionOptions {
    const qos = this.qos()
    const flags = this.u8()
    const retainHandling = (flags >> 2) & 3
    if (flags > 15 || retainHandling === 3) throw new RecordFault(`subscription flags ${flags}`)
    const id = this.u32()
    return {
      qos,
      noLocal: (flags & 1) !== 0,
      retainAsPublished: (flags & 2) !== 0,
      retainHandling: retainHandling as 0 | 1 | 2,
      subscriptionId: id === 0 ? undefined : id
    }
  }
}
