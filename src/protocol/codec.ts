/**
 * The MQTT codec: mqtt-packet 9 is the codec of record; the hot packets take a
 * hand-written path over raw Buffers that decodes to the very same objects.
 *
 * Decoding. `PacketParser` frames the byte stream itself (fixed header and
 * remaining length, §2.1) and then
 * - decodes PUBLISH (v5: with an empty property block), PUBACK / PUBREC /
 *   PUBREL / PUBCOMP (v5: without properties), PINGREQ, PINGRESP, DISCONNECT
 *   (v5: without properties) and the common CONNECT (3.1.1 or 3.1, no will,
 *   printable ASCII client id and user name) itself, producing objects
 *   deep-equal to what mqtt-packet's parser emits for the same bytes (same
 *   keys, same order);
 * - hands every other frame, exactly that frame, to one shared mqtt-packet
 *   parser and collects its synchronous 'packet' / 'error' event.
 *
 * Where the two paths may differ from mqtt-packet, they differ on purpose and
 * only by rejecting (never by accepting more or decoding differently):
 * 1. A string that is not well-formed UTF-8 or contains U+0000 is malformed
 *    [MQTT-1.5.3-1] [MQTT-1.5.3-2] (v5: [MQTT-1.5.4-1] [MQTT-1.5.4-2]); mqtt-packet
 *    decodes it with U+FFFD / NUL. So is one with a control character
 *    (U+0001-001F, U+007F-009F) or a non-character, which MQTT says a receiver
 *    may refuse and Mosquitto does (utf8.ts).
 *    This covers every string mqtt-packet decodes: topic names and filters,
 *    client id, will topic, user name, and v5 string / user properties.
 * 2. A field mqtt-packet could not read because the frame ended first is
 *    malformed (mqtt-packet emits `messageId: -1`, or a CONNACK without its
 *    session-present flag or return code).
 * Everything else mqtt-packet accepts is accepted, including its leniencies
 * (trailing bytes after a v3.1.1 ack, a PINGREQ with a body, a v5 PUBLISH that
 * ends before its property length, packet identifier 0): those are left to the
 * protocol layer.
 *
 * mqtt-packet's own streaming parser reads a short packet's missing bytes from
 * the *next* packet in the stream; framing first means each frame is decoded
 * on its own (the reference in the tests is mqtt-packet fed one frame at a time).
 *
 * Encoding. `encode` is mqtt-packet's `generate` (cold path). `encodeAck`,
 * `encodePublish` / `withPacketId` and the ping constants are byte-identical to
 * `generate` for the same packet and allocate one pooled Buffer each.
 */
import { Buffer, isUtf8 } from "node:buffer"
import * as Mqtt from "mqtt-packet"
import { arrayBufferOf, byteOffsetOf, copyInto, latin1Of, sliceOf, utf8Of, writeUtf8At } from "../runtime/bufferOps.js"
import { hasForbiddenCodePoint } from "./utf8.js"

// mqtt-packet's default builds a cache of 65,536 two-byte Buffers (6.3 MB of heap) on the first
// `generate`; without it each two-byte number is one small Buffer, on the cold path only (the hot
// packets are encoded here). The bytes are the same (test/protocol/codec.test.ts).
Mqtt.writeToStream.cacheNumbers = false

// ---------------------------------------------------------------------------
// Types

export type Packet = Mqtt.Packet
export type QoS = Mqtt.QoS
export type UserProperties = Mqtt.UserProperties
export type Subscription = Mqtt.ISubscription
export type ConnectPacket = Mqtt.IConnectPacket
export type ConnackPacket = Mqtt.IConnackPacket
export type PublishPacket = Mqtt.IPublishPacket
export type PubackPacket = Mqtt.IPubackPacket
export type PubrecPacket = Mqtt.IPubrecPacket
export type PubrelPacket = Mqtt.IPubrelPacket
export type PubcompPacket = Mqtt.IPubcompPacket
export type SubscribePacket = Mqtt.ISubscribePacket
export type SubackPacket = Mqtt.ISubackPacket
export type UnsubscribePacket = Mqtt.IUnsubscribePacket
export type UnsubackPacket = Mqtt.IUnsubackPacket
export type PingreqPacket = Mqtt.IPingreqPacket
export type PingrespPacket = Mqtt.IPingrespPacket
export type DisconnectPacket = Mqtt.IDisconnectPacket
export type AuthPacket = Mqtt.IAuthPacket
export type PublishProperties = NonNullable<Mqtt.IPublishPacket["properties"]>
export type ProtocolVersion = 3 | 4 | 5
export type AckCmd = "puback" | "pubrec" | "pubrel" | "pubcomp"

/** Largest Remaining Length a 4-byte Variable Byte Integer can carry (§1.5.5). */
export const MAX_REMAINING_LENGTH = 268_435_455

export type ParseErrorReason = "malformed" | "protocol" | "too-large"

/**
 * Why a CONNECT was refused before it was decoded: an unknown protocol level
 * ([MQTT-3.1.2-2]: answer CONNACK 0x01 in v3.1.1, 0x84 in v5, then close) or
 * protocol name ([MQTT-3.1.2-1]: close without CONNACK).
 */
export type ConnectError = "bad-protocol-version" | "bad-protocol-name"

/** Why the byte stream cannot be read further; the connection is to be closed. */
export class ParseError {
  readonly _tag = "ParseError"
  constructor(
    readonly reason: ParseErrorReason,
    readonly message: string,
    readonly connectError?: ConnectError,
    /** a refused CONNECT's protocol name or level, for the log line (Mosquitto's "Invalid protocol ... in CONNECT") */
    readonly detail?: string
  ) {}
}

/** A CONNECT frame's protocol name and level (undefined where the frame is too short). */
const connectProtocol = (frame: Buffer): { readonly name: string | undefined; readonly level: number | undefined } => {
  // the Remaining Length's bytes, then the name's length
  let p = 1
  while (p < frame.length && p < 5 && (frame[p] & 0x80) !== 0) p++
  p++
  if (p + 2 > frame.length) return { name: undefined, level: undefined }
  const length = (frame[p] << 8) | frame[p + 1]
  const end = p + 2 + length
  if (end > frame.length) return { name: undefined, level: undefined }
  return { name: frame.toString("latin1", p + 2, end), level: end < frame.length ? frame[end] & 0x7f : undefined }
}

// ---------------------------------------------------------------------------
// Fixed header tables (§2.1.2, §2.1.3)

const CMD = [
  "reserved", "connect", "connack", "publish", "puback", "pubrec", "pubrel", "pubcomp",
  "subscribe", "suback", "unsubscribe", "unsuback", "pingreq", "pingresp", "disconnect", "auth"
] as const

/** Required low nibble per packet type, -1 where the flags carry data (PUBLISH) or the type is reserved. */
const REQUIRED_FLAGS = [-1, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0]

const codeSet = (codes: ReadonlyArray<number>): Uint8Array => {
  const set = new Uint8Array(256)
  for (const code of codes) set[code] = 1
  return set
}
/** v5 PUBACK / PUBREC reason codes (§3.4.2.1, §3.5.2.1), as mqtt-packet accepts them. */
const PUBACK_CODES = codeSet([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])
/** v5 PUBREL / PUBCOMP reason codes (§3.6.2.1, §3.7.2.1). */
const PUBREL_CODES = codeSet([0x00, 0x92])
/** v5 DISCONNECT reason codes (§3.14.2.1). */
const DISCONNECT_CODES = codeSet([
  0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95,
  0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2
])

// ---------------------------------------------------------------------------
// The delegate: one mqtt-packet parser shared by every PacketParser. It is fed
// one complete frame at a time, so it holds no bytes between calls; the only
// per-connection state it needs (protocol version, bridge mode) is swapped in
// as `settings` for each call.

interface DelegateSettings {
  readonly protocolVersion: number
  readonly bridgeMode: boolean
}

/** The parts of mqtt-packet's Parser (parser.js) used here. */
interface MqttParserInternals {
  settings: DelegateSettings | ConnectPacket
  _pos: number
  readonly _list: { slice(start: number, end: number): Buffer }
  _parseString(): string | null
  _resetState(): void
  parse(buffer: Buffer): number
  on(event: "packet", listener: (packet: Packet) => void): unknown
  on(event: "error", listener: (error: Error) => void): unknown
}

const delegate = Mqtt.parser({ protocolVersion: 4 }) as unknown as MqttParserInternals
let delegatedPacket: Packet | undefined
let delegatedError: Error | undefined
let badString = false
delegate.on("packet", (packet) => {
  delegatedPacket = packet
})
delegate.on("error", (error) => {
  delegatedError = error
})

const FORBIDDEN_IN_TOPIC = "a control character or a non-character in the PUBLISH topic (as mosquitto_validate_utf8)"

// Every string mqtt-packet decodes goes through _parseString. A NUL, a control character or a
// non-character is refused on the decoded string (utf8.ts); a decoded string holds U+FFFD where
// the bytes were not UTF-8 (or were a genuine U+FFFD), and only then are the raw bytes looked at.
const parseString = delegate._parseString
delegate._parseString = function(this: MqttParserInternals) {
  const start = this._pos + 2
  const result = parseString.call(this)
  if (result !== null && (hasForbiddenCodePoint(result) || (result.indexOf("\uFFFD") !== -1 && !isUtf8(this._list.slice(start, this._pos))))) {
    badString = true
  }
  return result
}

/**
 * The delegate's settings are read, never written (a CONNECT makes mqtt-packet point its own
 * `settings` at the packet instead): one shared object per protocol version and bridge mode,
 * not one per connection.
 */
const sharedSettings = new Map<number, DelegateSettings>()
const settingsFor = (protocolVersion: number, bridgeMode: boolean): DelegateSettings => {
  const key = protocolVersion * 2 + (bridgeMode ? 1 : 0)
  let settings = sharedSettings.get(key)
  if (settings === undefined) {
    settings = Object.freeze({ protocolVersion, bridgeMode })
    sharedSettings.set(key, settings)
  }
  return settings
}

/** A parser's `parts` while it keeps no bytes: shared, never pushed to (`keep` and `resume` replace it). */
const NO_PARTS: ReadonlyArray<Buffer> = Object.freeze([])

/**
 * What the parser keeps of an unfinished frame until the rest arrives, as a Buffer that does not
 * pin a much larger one. A read chunk can be a slice of Node's 8 KiB pool, or a read of up to
 * 64 KiB whose last few bytes start a frame; a client that stops mid-frame would keep all of it
 * alive. Small views on large buffers are copied; the rest is kept as it is.
 */
const detached = (part: Buffer): Buffer => {
  if (part.buffer.byteLength <= 2 * part.length + 256) return part
  const copy = Buffer.allocUnsafeSlow(part.length)
  part.copy(copy)
  return copy
}

type Delegated = { readonly packet: Packet; readonly error?: undefined } | { readonly packet?: undefined; readonly error: Error }

const runDelegate = (frame: Buffer, settings: DelegateSettings): Delegated => {
  delegatedPacket = undefined
  delegatedError = undefined
  badString = false
  delegate.settings = settings
  delegate._pos = 0
  try {
    delegate.parse(frame)
  } catch (error) {
    delegatedError = error instanceof Error ? error : new Error(String(error))
  }
  const packet = delegatedPacket
  delegatedPacket = undefined
  if (delegatedError !== undefined || packet === undefined) {
    delegate._resetState()
    delegate._pos = 0
    return { error: delegatedError ?? new Error("incomplete packet") }
  }
  return { packet }
}

// ---------------------------------------------------------------------------
// Fast-path packet objects, built with mqtt-packet's key order (packet.js, then
// the fields its parser adds) so both paths give objects of one shape.

const confirmation = (cmd: string, qos: number, length: number, messageId: number): Packet =>
  ({ cmd, retain: false, qos, dup: false, length, topic: null, payload: null, messageId }) as unknown as Packet

const confirmationV5 = (cmd: string, qos: number, length: number, messageId: number, reasonCode: number): Packet =>
  ({ cmd, retain: false, qos, dup: false, length, topic: null, payload: null, messageId, reasonCode }) as unknown as Packet

const empty = (cmd: string, length: number): Packet =>
  ({ cmd, retain: false, qos: 0, dup: false, length, topic: null, payload: null }) as unknown as Packet

const disconnectV5 = (length: number, reasonCode: number): Packet =>
  ({
    cmd: "disconnect",
    retain: false,
    qos: 0,
    dup: false,
    length,
    topic: null,
    payload: null,
    reasonCode
  }) as unknown as Packet

// ---------------------------------------------------------------------------
// PacketParser

/**
 * The length-prefixed string at `at` when it is all printable ASCII (0x20-0x7e) and inside the
 * frame, else undefined (the caller leaves it to mqtt-packet, which decodes or refuses it).
 */
const asciiString = (buf: Buffer, at: number, end: number): string | undefined => {
  if (at + 2 > end) return undefined
  const stringEnd = at + 2 + ((buf[at] << 8) | buf[at + 1])
  if (stringEnd > end) return undefined
  for (let i = at + 2; i < stringEnd; i++) {
    const c = buf[i]
    if (c < 0x20 || c > 0x7e) return undefined
  }
  return latin1Of(buf, at + 2, stringEnd)
}

const malformed = (message: string) => new ParseError("malformed", message)

/** The error mqtt-packet's _parseHeader raises for this first byte, if any. */
const checkFirstByte = (b0: number): ParseError | undefined => {
  const type = b0 >> 4
  const required = REQUIRED_FLAGS[type]
  if (required !== -1 && (b0 & 0x0f) !== required) {
    // [MQTT-2.2.2-1] [MQTT-2.2.2-2]
    return malformed(`invalid header flag bits for ${CMD[type]}: 0x${(b0 & 0x0f).toString(16)}`)
  }
  if ((b0 & 0x06) === 0x06) return malformed("QoS 3 in PUBLISH [MQTT-3.3.1-4]")
  return undefined
}

/**
 * The PUBLISH payloads of one `parse` call are views on the chunk (or frame) they arrived in:
 * its ArrayBuffer and offset are read once, not once per message (`buf.subarray` reads
 * `buf.buffer`, a call into V8's C++, on every call: docs/performance.md, "Twenty-first round").
 */
let viewSource: Buffer | undefined = undefined
let viewMemory: ArrayBuffer | undefined = undefined
let viewOffset = 0

/** `buf.subarray(start, end)` for `0 <= start <= end <= buf.length`. */
const viewOf = (buf: Buffer, start: number, end: number): Buffer => {
  if (buf !== viewSource) {
    viewSource = buf
    viewMemory = arrayBufferOf(buf)
    viewOffset = byteOffsetOf(buf)
  }
  return Buffer.from(viewMemory!, viewOffset + start, end - start)
}

/**
 * An incremental parser for one connection's byte stream.
 *
 * `parse` appends every complete packet to `out` and keeps the bytes of an
 * incomplete one (a view on the chunk, no copy) until the rest arrives; a
 * frame split across chunks is copied once, when it completes.
 */
export class PacketParser {
  private readonly maxPacketSize: number
  private version: ProtocolVersion = 4
  private settings: DelegateSettings = settingsFor(4, false)
  /** bytes of the incomplete frame at the end of the stream (`NO_PARTS` while none) */
  private parts: ReadonlyArray<Buffer> = NO_PARTS
  private partsLength = 0
  /** total length of that frame, -1 while its fixed header is incomplete */
  private frameLength = -1
  /** offset of its variable header (1 + length of the Remaining Length) */
  private bodyOffset = 0
  private failure: ParseError | undefined = undefined

  /**
   * @param maxPacketSize the largest packet accepted, counting the whole packet
   * (fixed header included) as MQTT 5's Maximum Packet Size does (§3.1.2.11.4);
   * 0 or undefined: no limit beyond the protocol's 268,435,455-byte Remaining Length.
   */
  constructor(maxPacketSize?: number) {
    this.maxPacketSize = maxPacketSize !== undefined && maxPacketSize > 0 ? maxPacketSize : 0
  }

  /** 4 until a CONNECT says otherwise; the caller may set it too. */
  get protocolVersion(): ProtocolVersion {
    return this.version
  }

  set protocolVersion(version: ProtocolVersion) {
    this.version = version
    if (this.settings.protocolVersion !== version) {
      this.settings = settingsFor(version, this.settings.bridgeMode)
    }
  }

  /**
   * Append every complete packet in `chunk` (after any bytes kept from earlier
   * chunks) to `out`, in order. On malformed input: return the error and read
   * nothing more (later calls return the same error).
   */
  parse(chunk: Buffer, out: Array<Packet>): ParseError | undefined {
    const result = this.parseChunk(chunk, out)
    // (the payload views' buffer, kept for this call only: no chunk stays pinned by it)
    viewSource = undefined
    viewMemory = undefined
    return result
  }

  private parseChunk(chunk: Buffer, out: Array<Packet>): ParseError | undefined {
    if (this.failure !== undefined) return this.failure
    let offset = 0
    if (this.partsLength > 0) {
      offset = this.resume(chunk, out)
      if (offset < 0) return this.failure
    }
    const length = chunk.length
    while (offset < length) {
      const error = checkFirstByte(chunk[offset])
      if (error !== undefined) return this.fail(error)
      let p = offset + 1
      let remaining = 0
      let multiplier = 1
      let complete = false
      while (p < length && p - offset <= 4) {
        const digit = chunk[p++]
        remaining += (digit & 0x7f) * multiplier
        if (digit < 0x80) {
          complete = true
          break
        }
        multiplier *= 128
      }
      if (!complete) {
        if (p - offset > 4) return this.fail(malformed("remaining length longer than 4 bytes (§2.2.3, v5 §1.5.5)"))
        this.keep(chunk, offset, -1, 0)
        return undefined
      }
      const total = p - offset + remaining
      if (this.maxPacketSize > 0 && total > this.maxPacketSize) return this.fail(this.tooLarge(total))
      const end = p + remaining
      if (end > length) {
        this.keep(chunk, offset, total, p - offset)
        return undefined
      }
      const failed = this.decode(chunk, offset, p, end, out)
      if (failed !== undefined) return this.fail(failed)
      offset = end
    }
    return undefined
  }

  private fail(error: ParseError): ParseError {
    this.failure = error
    this.parts = NO_PARTS
    this.partsLength = 0
    return error
  }

  private tooLarge(total: number): ParseError {
    return new ParseError("too-large", `packet of ${total} bytes exceeds the maximum packet size ${this.maxPacketSize}`)
  }

  private keep(chunk: Buffer, offset: number, frameLength: number, bodyOffset: number): void {
    const rest = detached(offset === 0 ? chunk : sliceOf(chunk, offset, chunk.length))
    this.parts = [rest]
    this.partsLength = rest.length
    this.frameLength = frameLength
    this.bodyOffset = bodyOffset
  }

  /**
   * Continue the frame kept from earlier chunks with `chunk`. Returns the offset
   * in `chunk` after that frame, or -1 when the chunk was all kept or on failure.
   */
  private resume(chunk: Buffer, out: Array<Packet>): number {
    if (this.frameLength < 0) {
      // The kept bytes are a first byte (already checked) and at most three
      // continuation bytes of the Remaining Length.
      const kept = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts as Array<Buffer>)
      let remaining = 0
      let multiplier = 1
      let count = 0
      let complete = false
      for (let i = 1; i < kept.length + chunk.length && count < 4; i++) {
        const digit = i < kept.length ? kept[i] : chunk[i - kept.length]
        count++
        remaining += (digit & 0x7f) * multiplier
        if (digit < 0x80) {
          complete = true
          break
        }
        multiplier *= 128
      }
      if (!complete) {
        if (count === 4) {
          this.fail(malformed("remaining length longer than 4 bytes (§2.2.3, v5 §1.5.5)"))
          return -1
        }
        this.parts = [kept, detached(chunk)]
        this.partsLength = kept.length + chunk.length
        return -1
      }
      const total = 1 + count + remaining
      if (this.maxPacketSize > 0 && total > this.maxPacketSize) {
        this.fail(this.tooLarge(total))
        return -1
      }
      this.parts = [kept]
      this.frameLength = total
      this.bodyOffset = 1 + count
    }
    const missing = this.frameLength - this.partsLength
    if (chunk.length < missing) {
      ;(this.parts as Array<Buffer>).push(detached(chunk))
      this.partsLength += chunk.length
      return -1
    }
    ;(this.parts as Array<Buffer>).push(missing === chunk.length ? chunk : chunk.subarray(0, missing))
    const frame = Buffer.concat(this.parts as Array<Buffer>, this.frameLength)
    this.parts = NO_PARTS
    this.partsLength = 0
    const failed = this.decode(frame, 0, this.bodyOffset, frame.length, out)
    if (failed !== undefined) {
      this.fail(failed)
      return -1
    }
    return missing
  }

  /** Decode the frame buf[start, end) whose variable header starts at `body`. */
  private decode(buf: Buffer, start: number, body: number, end: number, out: Array<Packet>): ParseError | undefined {
    const b0 = buf[start]
    const type = b0 >> 4
    const length = end - body
    switch (type) {
      case 3:
        return this.publish(buf, b0, start, body, end, out)
      case 4:
      case 5:
      case 6:
      case 7: {
        // PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4 - §3.7)
        if (length < 2) return malformed(`${CMD[type]} without a packet identifier`)
        const messageId = (buf[body] << 8) | buf[body + 1]
        const qos = type === 6 ? 1 : 0
        if (this.version !== 5) {
          out.push(confirmation(CMD[type], qos, length, messageId))
          return undefined
        }
        let reasonCode = 0
        if (length > 2) {
          reasonCode = buf[body + 2]
          if ((type < 6 ? PUBACK_CODES : PUBREL_CODES)[reasonCode] === 0) {
            return malformed(`invalid ${CMD[type]} reason code 0x${reasonCode.toString(16)}`)
          }
          if (length > 3 && buf[body + 3] !== 0) return this.delegate(buf, start, end, type, out)
        }
        out.push(confirmationV5(CMD[type], qos, length, messageId, reasonCode))
        return undefined
      }
      case 12:
      case 13:
        out.push(empty(CMD[type], length))
        return undefined
      case 14: {
        if (this.version !== 5) {
          out.push(empty("disconnect", length))
          return undefined
        }
        let reasonCode = 0
        if (length > 0) {
          reasonCode = buf[body]
          if (DISCONNECT_CODES[reasonCode] === 0) {
            return malformed(`invalid disconnect reason code 0x${reasonCode.toString(16)}`)
          }
          if (length > 1 && buf[body + 1] !== 0) return this.delegate(buf, start, end, type, out)
        }
        out.push(disconnectV5(length, reasonCode))
        return undefined
      }
      case 1:
        return this.connect(buf, start, body, end, out)
      case 8:
        return this.subscribe(buf, start, body, end, out)
      case 0:
        return malformed("reserved packet type 0")
      default:
        return this.delegate(buf, start, end, type, out)
    }
  }

  /**
   * CONNECT (§3.1): the common case here — MQTT 3.1.1 (`MQTT`, level 4) or 3.1 (`MQIsdp`, level 3),
   * no will, no bridge bit, client id / user name in printable ASCII — decoded to the object
   * mqtt-packet's parser makes (same keys, same order); everything else, malformed CONNECTs
   * included, goes to mqtt-packet as before.
   */
  private connect(buf: Buffer, start: number, body: number, end: number, out: Array<Packet>): ParseError | undefined {
    const delegate = () => this.delegate(buf, start, end, 1, out)
    // protocol name: 4 "MQTT" level 4, or 6 "MQIsdp" level 3
    if (body + 2 > end) return delegate()
    const nameLength = (buf[body] << 8) | buf[body + 1]
    let p = body + 2
    let version: 3 | 4
    if (nameLength === 4 && p + 4 <= end && buf[p] === 0x4d && buf[p + 1] === 0x51 && buf[p + 2] === 0x54 && buf[p + 3] === 0x54) {
      version = 4
    } else if (
      nameLength === 6 && p + 6 <= end && buf[p] === 0x4d && buf[p + 1] === 0x51 && buf[p + 2] === 0x49 && buf[p + 3] === 0x73 &&
      buf[p + 4] === 0x64 && buf[p + 5] === 0x70
    ) {
      version = 3
    } else {
      return delegate()
    }
    p += nameLength
    // level, flags, keepalive
    if (p + 4 > end || buf[p] !== version) return delegate()
    const flags = buf[p + 1]
    // reserved bit, will flag, will QoS, will retain: mqtt-packet's (the will, or its errors)
    if ((flags & 0x3d) !== 0) return delegate()
    const keepalive = (buf[p + 2] << 8) | buf[p + 3]
    p += 4
    const clientId = asciiString(buf, p, end)
    if (clientId === undefined) return delegate()
    p += 2 + clientId.length
    let username: string | undefined
    if ((flags & 0x80) !== 0) {
      username = asciiString(buf, p, end)
      if (username === undefined) return delegate()
      p += 2 + username.length
    }
    let password: Buffer | undefined
    if ((flags & 0x40) !== 0) {
      if (p + 2 > end) return delegate()
      const passwordEnd = p + 2 + ((buf[p] << 8) | buf[p + 1])
      if (passwordEnd > end) return delegate()
      password = sliceOf(buf, p + 2, passwordEnd)
    }
    const packet: Record<string, unknown> = {
      cmd: "connect",
      retain: false,
      qos: 0,
      dup: false,
      length: end - body,
      topic: null,
      payload: null,
      protocolId: version === 4 ? "MQTT" : "MQIsdp",
      protocolVersion: version,
      clean: (flags & 0x02) !== 0,
      keepalive,
      clientId
    }
    if (username !== undefined) packet["username"] = username
    if (password !== undefined) packet["password"] = password
    this.version = version
    this.settings = settingsFor(version, false)
    out.push(packet as unknown as Packet)
    return undefined
  }

  /**
   * SUBSCRIBE (§3.8): the common case — one or more filters in printable ASCII, valid options,
   * no bridge bit, no v5 properties — decoded to the object mqtt-packet's parser makes (same keys,
   * same order); everything else, malformed SUBSCRIBEs included, goes to mqtt-packet. mqtt-packet
   * logs each step through `debug`, whose rest parameters alone cost ~4.6 KB of garbage per
   * SUBSCRIBE, with a Buffer for each field: a client that subscribes once after connecting cost
   * 2.6 times the garbage of one that does not.
   */
  private subscribe(buf: Buffer, start: number, body: number, end: number, out: Array<Packet>): ParseError | undefined {
    const delegate = () => this.delegate(buf, start, end, 8, out)
    const v5 = this.version === 5
    if (this.settings.bridgeMode || body + 2 >= end) return delegate()
    const messageId = (buf[body] << 8) | buf[body + 1]
    let p = body + 2
    if (v5) {
      if (buf[p] !== 0) return delegate()
      p++
    }
    if (p >= end) return delegate()
    const subscriptions: Array<Subscription> = []
    while (p < end) {
      const topic = asciiString(buf, p, end)
      if (topic === undefined) return delegate()
      p += 2 + topic.length
      if (p >= end) return delegate()
      const options = buf[p++]
      const qos = options & 0x03
      if (qos > 2) return delegate()
      if (v5) {
        const rh = (options >> 4) & 0x03
        if ((options & 0xc0) !== 0 || rh > 2) return delegate()
        subscriptions.push({ topic, qos, nl: (options & 0x04) !== 0, rap: (options & 0x08) !== 0, rh } as Subscription)
      } else {
        if ((options & 0xfc) !== 0) return delegate()
        subscriptions.push({ topic, qos } as Subscription)
      }
    }
    out.push({
      cmd: "subscribe",
      retain: false,
      qos: 1,
      dup: false,
      length: end - body,
      topic: null,
      payload: null,
      subscriptions,
      messageId
    } as unknown as Packet)
    return undefined
  }

  /** PUBLISH (§3.3). */
  private publish(buf: Buffer, b0: number, start: number, body: number, end: number, out: Array<Packet>): ParseError | undefined {
    if (end - body < 2) return malformed("PUBLISH without a topic")
    const topicStart = body + 2
    const topicEnd = topicStart + ((buf[body] << 8) | buf[body + 1])
    if (topicEnd > end) return malformed("PUBLISH topic longer than the packet")
    let high = 0
    for (let i = topicStart; i < topicEnd; i++) {
      const c = buf[i]
      if (c < 0x20 || c === 0x7f) return malformed(c === 0 ? "U+0000 in the PUBLISH topic [MQTT-1.5.3-2]" : FORBIDDEN_IN_TOPIC)
      high |= c
    }
    let topic: string
    if (high < 0x80) {
      topic = latin1Of(buf, topicStart, topicEnd)
    } else {
      if (!isUtf8(sliceOf(buf, topicStart, topicEnd))) return malformed("PUBLISH topic is not UTF-8 [MQTT-1.5.3-1]")
      topic = utf8Of(buf, topicStart, topicEnd)
      if (hasForbiddenCodePoint(topic)) return malformed(FORBIDDEN_IN_TOPIC)
    }
    const qos = (b0 >> 1) & 3
    let p = topicEnd
    let messageId = 0
    if (qos > 0) {
      if (p + 2 > end) return malformed("PUBLISH without a packet identifier")
      messageId = (buf[p] << 8) | buf[p + 1]
      p += 2
    }
    if (this.version === 5 && p < end) {
      if (buf[p] !== 0) return this.delegate(buf, start, end, 3, out)
      p++
    }
    const payload = viewOf(buf, p, end)
    out.push(
      (qos === 0
        ? { cmd: "publish", retain: (b0 & 1) === 1, qos, dup: (b0 & 8) === 8, length: end - body, topic, payload }
        : {
          cmd: "publish",
          retain: (b0 & 1) === 1,
          qos,
          dup: (b0 & 8) === 8,
          length: end - body,
          topic,
          payload,
          messageId
        }) as Packet
    )
    return undefined
  }

  /** Hand the frame buf[start, end) to mqtt-packet. */
  private delegate(buf: Buffer, start: number, end: number, type: number, out: Array<Packet>): ParseError | undefined {
    const result = runDelegate(buf.subarray(start, end), this.settings)
    if (result.error !== undefined) {
      const message = result.error.message
      if (type === 1) {
        const { name, level } = connectProtocol(buf.subarray(start, end))
        if (message === "Invalid protocolId") {
          return new ParseError("protocol", "unknown protocol name [MQTT-3.1.2-1]", "bad-protocol-name", name)
        }
        if (message === "Invalid protocol version") {
          return new ParseError("protocol", "unsupported protocol level [MQTT-3.1.2-2]", "bad-protocol-version", level === undefined ? undefined : String(level))
        }
      }
      if (type === 15 && this.version !== 5) return new ParseError("protocol", "AUTH before MQTT 5")
      // v5 §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3"
      if (type === 8 && message === "Invalid retain handling, must be <= 2") {
        return new ParseError("protocol", "Retain Handling 3 in SUBSCRIBE (§3.8.3.1)")
      }
      return malformed(message)
    }
    const packet = result.packet
    if (badString) return malformed(`${packet.cmd}: a string is not UTF-8, or holds U+0000, a control character or a non-character [MQTT-1.5.3-1] [MQTT-1.5.3-2]`)
    if (packet.messageId === -1) return malformed(`${packet.cmd} without a packet identifier`)
    if (packet.cmd === "connack" && (packet.sessionPresent === undefined || (packet.returnCode ?? packet.reasonCode) === undefined)) {
      return malformed("CONNACK too short")
    }
    if (packet.cmd === "connect") {
      // the name goes with its levels: MQIsdp is 3.1 (3), MQTT is 3.1.1 (4) and 5 (handle_connect.c)
      if ((packet.protocolId === "MQTT") !== (packet.protocolVersion !== 3)) {
        return new ParseError("protocol", "unsupported protocol level [MQTT-3.1.2-2]", "bad-protocol-version", String(packet.protocolVersion))
      }
      const bridgeMode = (packet as { bridgeMode?: boolean }).bridgeMode === true
      this.version = packet.protocolVersion ?? 4
      this.settings = settingsFor(this.version, bridgeMode)
    }
    out.push(packet)
    return undefined
  }
}

// ---------------------------------------------------------------------------
// Encoders

/** Any packet, through mqtt-packet's generate (cold path). Throws on an invalid packet. */
export const encode = (packet: Packet, protocolVersion: ProtocolVersion): Buffer =>
  Mqtt.generate(packet, { protocolVersion })

/** PINGRESP, shared: never write into it. */
/**
 * SUBACK (§3.9) without properties: the bytes mqtt-packet's generate gives for
 * `{ cmd: "suback", messageId, granted }`, without its cost on every SUBSCRIBE.
 */
export const encodeSuback = (messageId: number, granted: ReadonlyArray<number>, protocolVersion: ProtocolVersion): Buffer => {
  const remaining = 2 + (protocolVersion === 5 ? 1 : 0) + granted.length
  const out = Buffer.allocUnsafe(1 + varIntLength(remaining) + remaining)
  out[0] = 0x90
  let p = writeVarInt(out, 1, remaining)
  out[p++] = messageId >> 8
  out[p++] = messageId & 0xff
  if (protocolVersion === 5) out[p++] = 0 // no properties
  for (let i = 0; i < granted.length; i++) out[p++] = granted[i]
  return out
}

export const PINGRESP: Buffer = Buffer.from([0xd0, 0x00])
/** PINGREQ (bridges), shared: never write into it. */
export const PINGREQ: Buffer = Buffer.from([0xc0, 0x00])

export const ACK_HEADER: Readonly<Record<AckCmd, number>> = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 }

/**
 * PUBACK / PUBREC / PUBREL / PUBCOMP, byte-identical to mqtt-packet's generate of
 * `{ cmd, messageId, reasonCode }` (reasonCode undefined taken as 0): in v5 a
 * Success without properties is the 2-byte form (§3.4.2.1), any
 * other reason code is followed by an empty property length; v3/v4 ignore it.
 */
export const encodeAck = (cmd: AckCmd, messageId: number, protocolVersion: ProtocolVersion, reasonCode?: number): Buffer => {
  const withCode = protocolVersion === 5 && reasonCode !== undefined && reasonCode !== 0
  const buf = Buffer.allocUnsafe(withCode ? 6 : 4)
  buf[0] = ACK_HEADER[cmd]
  buf[1] = withCode ? 4 : 2
  buf[2] = messageId >>> 8
  buf[3] = messageId & 0xff
  if (withCode) {
    buf[4] = reasonCode
    buf[5] = 0
  }
  return buf
}

/**
 * The 4-byte acknowledgement without a reason code (v3 / v4, v5 Success),
 * written into `target` at `at`: the bytes of `encodeAck(cmd, messageId, v)`
 * with no Buffer of its own (the connection's outbox). Returns the end offset.
 */
export const writeAckAt = (target: Buffer, at: number, cmd: AckCmd, messageId: number): number => {
  target[at] = ACK_HEADER[cmd]
  target[at + 1] = 2
  target[at + 2] = messageId >>> 8
  target[at + 3] = messageId & 0xff
  return at + 4
}

/** An encoded PUBLISH, shared by every delivery of one message at one QoS. */
export interface PublishFrame {
  readonly buffer: Buffer
  /** offset of the packet identifier in `buffer`; -1 for QoS 0 */
  readonly idOffset: number
}

export interface PublishToEncode {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: QoS
  readonly retain: boolean
  readonly dup?: boolean
  /** written at idOffset (0 if absent); withPacketId replaces it per delivery */
  readonly messageId?: number
  /** v5 only, ignored for v3/v4 */
  readonly properties?: PublishProperties
}

const hasProperties = (properties: PublishProperties | undefined): boolean => {
  if (properties === undefined) return false
  for (const key in properties) {
    if ((properties as Record<string, unknown>)[key] !== undefined) return true
  }
  return false
}

const varIntLength = (n: number): number => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4)

/** Write `n` as a Variable Byte Integer (§1.5.5) at `at`; returns the offset after it. */
const writeVarInt = (buffer: Buffer, at: number, n: number): number => {
  while (n >= 0x80) {
    buffer[at++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  buffer[at++] = n
  return at
}

/**
 * Encode a PUBLISH once for a fan-out. Byte-identical to mqtt-packet's generate
 * of the same packet (with messageId defaulting to 0 for QoS > 0); v5 with
 * properties goes through generate itself. Throws RangeError on a topic longer
 * than 65,535 bytes or a packet over the protocol maximum.
 */
export const encodePublish = (p: PublishToEncode, protocolVersion: ProtocolVersion): PublishFrame => {
  const topicLength = Buffer.byteLength(p.topic)
  if (topicLength > 0xffff) throw new RangeError(`topic of ${topicLength} bytes is longer than 65535 (§1.5.3)`)
  const qos = p.qos
  const v5 = protocolVersion === 5
  if (v5 && hasProperties(p.properties)) {
    const buffer = Mqtt.generate(
      {
        cmd: "publish",
        topic: p.topic,
        payload: p.payload,
        qos,
        retain: p.retain,
        dup: p.dup === true,
        ...(qos > 0 ? { messageId: p.messageId ?? 0 } : {}),
        properties: p.properties
      },
      { protocolVersion: 5 }
    )
    let header = 1
    while (buffer[header] >= 0x80) header++
    return { buffer, idOffset: qos > 0 ? header + 1 + 2 + topicLength : -1 }
  }
  const remaining = 2 + topicLength + (qos > 0 ? 2 : 0) + (v5 ? 1 : 0) + p.payload.length
  if (remaining > MAX_REMAINING_LENGTH) throw new RangeError(`PUBLISH of ${remaining} bytes exceeds the protocol maximum`)
  const buffer = Buffer.allocUnsafe(1 + varIntLength(remaining) + remaining)
  buffer[0] = 0x30 | (p.dup === true ? 0x08 : 0) | (qos << 1) | (p.retain ? 1 : 0)
  let o = writeVarInt(buffer, 1, remaining)
  buffer[o++] = topicLength >>> 8
  buffer[o++] = topicLength & 0xff
  o += writeUtf8At(buffer, p.topic, o)
  let idOffset = -1
  if (qos > 0) {
    idOffset = o
    const id = p.messageId ?? 0
    buffer[o++] = id >>> 8
    buffer[o++] = id & 0xff
  }
  if (v5) buffer[o++] = 0
  copyInto(buffer, p.payload, o)
  return { buffer, idOffset }
}

/**
 * A copy of a QoS 1 / 2 frame with its packet identifier and DUP flag set
 * [MQTT-3.3.1-1]. Throws on a QoS 0 frame, which has no packet identifier.
 */
export const withPacketId = (frame: PublishFrame, messageId: number, dup: boolean): Buffer => {
  const idOffset = frame.idOffset
  if (idOffset < 0) throw new Error("withPacketId: a QoS 0 PUBLISH has no packet identifier")
  const source = frame.buffer
  const buffer = Buffer.allocUnsafe(source.length)
  source.copy(buffer, 0)
  buffer[0] = dup ? source[0] | 0x08 : source[0] & 0xf7
  buffer[idOffset] = messageId >>> 8
  buffer[idOffset + 1] = messageId & 0xff
  return buffer
}

/**
 * `withPacketId` into `target` at `at` instead of a Buffer of its own (the
 * connection's outbox). Returns the end offset.
 */
export const writeWithPacketIdAt = (target: Buffer, at: number, frame: PublishFrame, messageId: number, dup: boolean): number => {
  const idOffset = frame.idOffset
  if (idOffset < 0) throw new Error("writeWithPacketIdAt: a QoS 0 PUBLISH has no packet identifier")
  const source = frame.buffer
  copyInto(target, source, at)
  target[at] = dup ? source[0] | 0x08 : source[0] & 0xf7
  target[at + idOffset] = messageId >>> 8
  target[at + idOffset + 1] = messageId & 0xff
  return at + source.length
}
