import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as Mqtt from "mqtt-packet"
import {
  type AckCmd,
  encode,
  encodeAck,
  encodePublish,
  encodeSuback,
  type Packet,
  PacketParser,
  type ParseError,
  PINGREQ,
  PINGRESP,
  type ProtocolVersion,
  withPacketId,
  writeAckAt,
  writeWithPacketIdAt
} from "../../src/protocol/codec.js"
import { ConnackV4, ReasonCode } from "../../src/protocol/reasonCodes.js"
import { hasForbiddenCodePoint } from "../../src/protocol/utf8.js"
import { splitAt } from "../support/chunks.js"
import { ackCodes, connectArb, packetArb, packetId, publishArb, qos, str, SUBACK_CODES_V5 } from "../support/packets.js"

const SEED = 20_250_601
const runs = (numRuns: number) => ({ fastCheck: { seed: SEED, numRuns } })

// ---------------------------------------------------------------------------
// Running the parsers

interface Outcome {
  readonly packets: Array<Packet>
  readonly error: ParseError | undefined
}

const parseChunks = (chunks: ReadonlyArray<Buffer>, version: ProtocolVersion = 4, max?: number): Outcome => {
  const parser = new PacketParser(max)
  parser.protocolVersion = version
  const packets: Array<Packet> = []
  let error: ParseError | undefined
  for (const chunk of chunks) {
    error = parser.parse(chunk, packets)
    if (error !== undefined) break
  }
  return { packets, error }
}

/** mqtt-packet's parser fed the whole stream at once (for well-formed streams). */
const mqttPacketParse = (bytes: Buffer, version: ProtocolVersion): Array<Packet> => {
  const parser = Mqtt.parser({ protocolVersion: version })
  const packets: Array<Packet> = []
  parser.on("packet", (p) => packets.push(p))
  parser.on("error", (e) => {
    throw e
  })
  parser.parse(bytes)
  return packets
}

/** Does any string mqtt-packet decoded hold U+FFFD, U+0000, a control character or a non-character (utf8.ts)? */
const hasBadString = (value: unknown): boolean => {
  if (typeof value === "string") return value.includes("\uFFFD") || hasForbiddenCodePoint(value)
  if (value === null || typeof value !== "object" || Buffer.isBuffer(value)) return false
  if (Array.isArray(value)) return value.some(hasBadString)
  return Object.keys(value).some((k) => hasBadString(k) || hasBadString((value as Record<string, unknown>)[k]))
}

/**
 * The reference: mqtt-packet fed one byte at a time, so each packet is decoded
 * from its own frame (fed a whole stream, mqtt-packet reads a short packet's
 * missing bytes from the next one), with the codec's documented deviations:
 * bad strings [MQTT-1.5.3-1] [MQTT-1.5.3-2] and fields mqtt-packet could not read
 * (messageId -1, a CONNACK without flags or code) are rejected. Inputs must not
 * contain EF BF BD (a genuine U+FFFD), so a U+FFFD in a decoded string means bad bytes.
 */
const reference = (bytes: Uint8Array, version: ProtocolVersion): { packets: Array<Packet>; rejected: boolean } => {
  const parser = Mqtt.parser({ protocolVersion: version })
  const packets: Array<Packet> = []
  let rejected = false
  parser.on("packet", (p) => {
    if (rejected) return
    const c = p as Packet & { sessionPresent?: boolean; returnCode?: number; reasonCode?: number }
    const unread = p.messageId === -1 ||
      (p.cmd === "connack" && (c.sessionPresent === undefined || (c.returnCode ?? c.reasonCode) === undefined))
    if (hasBadString(p) || unread) rejected = true
    else packets.push(p)
  })
  parser.on("error", () => {
    rejected = true
  })
  for (let i = 0; i < bytes.length && !rejected; i++) {
    try {
      parser.parse(Buffer.from([bytes[i]]))
    } catch {
      rejected = true
    }
  }
  return { packets, rejected }
}

const plain = (packets: ReadonlyArray<Packet>) => packets.map((p) => ({ ...p }))

const noGenuineReplacement = (bytes: Uint8Array): boolean => !Buffer.from(bytes).includes(Buffer.from([0xef, 0xbf, 0xbd]))

const expectSameAsReference = (bytes: Buffer, version: ProtocolVersion, cuts: ReadonlyArray<number>) => {
  const expected = reference(bytes, version)
  const actual = parseChunks(splitAt(bytes, cuts), version)
  expect(plain(actual.packets)).toStrictEqual(plain(expected.packets))
  expect(actual.error !== undefined, actual.error?.message ?? "accepted").toBe(expected.rejected)
}

const generateAll = (packets: ReadonlyArray<Packet>, v: ProtocolVersion): Buffer =>
  Buffer.concat(packets.map((p) => Mqtt.generate(p, { protocolVersion: v })))

const varInt = (n: number): Array<number> => {
  const out: Array<number> = []
  do {
    out.push((n & 0x7f) | (n >= 0x80 ? 0x80 : 0))
    n >>>= 7
  } while (n > 0)
  return out
}

const versions: ReadonlyArray<ProtocolVersion> = [3, 4, 5]
const cuts = fc.array(fc.nat(), { maxLength: 6 })

// ---------------------------------------------------------------------------

describe("PacketParser ≡ mqtt-packet on generated packets", () => {
  for (const v of versions) {
    it.prop(
      `v${v}: every packet type, one chunk, several chunks`,
      [fc.array(packetArb(v), { minLength: 1, maxLength: 6 }), cuts],
      ([packets, cutPoints]) => {
        const stream = generateAll(packets, v)
        const expected = plain(mqttPacketParse(stream, v))
        expect(expected).toHaveLength(packets.length)
        const whole = parseChunks([stream], v)
        expect(whole.error).toBeUndefined()
        expect(plain(whole.packets)).toStrictEqual(expected)
        const split = parseChunks(splitAt(stream, cutPoints), v)
        expect(split.error).toBeUndefined()
        expect(plain(split.packets)).toStrictEqual(expected)
      },
      runs(300)
    )

    it.prop(
      `v${v}: byte-at-a-time delivery`,
      [fc.array(packetArb(v), { minLength: 1, maxLength: 3 })],
      ([packets]) => {
        const stream = generateAll(packets, v)
        const chunks = [...stream].map((b) => Buffer.from([b]))
        const result = parseChunks(chunks, v)
        expect(result.error).toBeUndefined()
        expect(plain(result.packets)).toStrictEqual(plain(mqttPacketParse(stream, v)))
      },
      runs(100)
    )
  }

  it.prop(
    "a CONNECT sets the protocol version for what follows",
    [
      fc.constantFrom<ProtocolVersion>(3, 4, 5).chain((v) =>
        fc.tuple(fc.constant(v), connectArb(v), fc.array(packetArb(v), { maxLength: 4 }))
      )
    ],
    ([[v, connect, rest]]) => {
      const stream = generateAll([connect, ...rest], v)
      const parser = new PacketParser() // starts at 4, whatever v is
      const out: Array<Packet> = []
      expect(parser.parse(stream, out)).toBeUndefined()
      expect(parser.protocolVersion).toBe(v)
      expect(plain(out)).toStrictEqual(plain(mqttPacketParse(stream, 4)))
    },
    runs(100)
  )
})

describe("SUBSCRIBE on the fast path", () => {
  const subscribe = (v: ProtocolVersion, subscriptions: Array<Mqtt.ISubscription>): Buffer =>
    Mqtt.generate({ cmd: "subscribe", messageId: 7, subscriptions }, { protocolVersion: v })

  it("a bridge's SUBSCRIBE (CONNECT with the bridge bit) decodes as mqtt-packet's: no local, retain as published, rh 0", () => {
    const connect = Mqtt.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, bridgeMode: true, clientId: "bridge", clean: true, keepalive: 60 } as Mqtt.IConnectPacket, { protocolVersion: 4 })
    const stream = Buffer.concat([connect, subscribe(4, [{ topic: "a/#", qos: 1 }])])
    const reference = mqttPacketParse(stream, 4)
    expect(reference[1]).toMatchObject({ subscriptions: [{ topic: "a/#", qos: 1, nl: true, rap: true, rh: 0 }] })
    expect(plain(parseChunks([stream]).packets)).toStrictEqual(plain(reference))
  })

  for (const v of versions) {
    it.prop(
      `v${v}: SUBSCRIBE packets ≡ mqtt-packet's, one chunk and several, followed by more packets`,
      [
        fc.array(
          fc.record({ topic: fc.oneof(fc.string({ unit: "grapheme-ascii", maxLength: 12 }), str), qos, nl: fc.boolean(), rap: fc.boolean(), rh: fc.integer({ min: 0, max: 2 }) }),
          { minLength: 1, maxLength: 4 }
        ),
        fc.array(packetArb(v), { maxLength: 2 }),
        cuts
      ],
      ([subs, rest, cutPoints]) => {
        const stream = Buffer.concat([subscribe(v, v === 5 ? subs : subs.map(({ qos, topic }) => ({ topic, qos }))), generateAll(rest, v)])
        const expected = plain(mqttPacketParse(stream, v))
        expect(plain(parseChunks([stream], v).packets)).toStrictEqual(expected)
        expect(plain(parseChunks(splitAt(stream, cutPoints), v).packets)).toStrictEqual(expected)
      },
      runs(300)
    )
  }

  it("a SUBSCRIBE in printable ASCII is decoded here, not by mqtt-packet (a plain object with its keys in mqtt-packet's order); one in UTF-8 by mqtt-packet", () => {
    for (const v of versions) {
      const bytes = subscribe(v, [{ topic: "bench/c/1", qos: 1 }, { topic: "a/+", qos: 2 }])
      const [packet] = parseChunks([bytes], v).packets
      const [reference] = mqttPacketParse(bytes, v)
      // mqtt-packet's packets are instances of its Packet class
      expect(Object.getPrototypeOf(reference)).not.toBe(Object.prototype)
      expect(Object.getPrototypeOf(packet)).toBe(Object.prototype)
      expect(Object.keys(packet)).toStrictEqual(Object.keys(reference))
      const [utf8] = parseChunks([subscribe(v, [{ topic: "caf\u00e9", qos: 0 }])], v).packets
      expect(Object.getPrototypeOf(utf8)).not.toBe(Object.prototype)
    }
  })
})

describe("PacketParser ≡ mqtt-packet on malformed input", () => {
  /** The flags each packet type must carry [MQTT-2.2.2-1]; PUBLISH's carry DUP, QoS and RETAIN. */
  const REQUIRED_FLAGS = [0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0]
  const smallByte = fc.oneof({ arbitrary: fc.integer({ min: 0, max: 7 }), weight: 3 }, fc.integer({ min: 0, max: 255 }))
  const stringBytes = fc.oneof(
    { arbitrary: fc.uint8Array({ maxLength: 6 }).map((a) => [...a].map((b) => 0x61 + (b % 26))), weight: 3 },
    fc.uint8Array({ maxLength: 6 }).map((a) => [...a])
  )
  /** property id, then a plausible value for it (or not) */
  const property = fc.tuple(
    fc.oneof({ arbitrary: fc.constantFrom(1, 2, 3, 8, 9, 11, 17, 21, 22, 31, 35, 38), weight: 4 }, fc.integer({ min: 0, max: 255 })),
    fc.oneof(
      stringBytes.map((b) => [0, b.length, ...b]),
      stringBytes.chain((k) => stringBytes.map((v) => [0, k.length, ...k, 0, v.length, ...v])),
      fc.array(smallByte, { maxLength: 4 })
    )
  ).map(([id, value]) => [id, ...value])
  /** a piece of a variable header or payload: a string, a number, a property block, raw bytes */
  const segment = fc.oneof(
    stringBytes.map((b) => [0, b.length, ...b]),
    fc.array(smallByte, { minLength: 1, maxLength: 3 }),
    fc.array(property, { maxLength: 3 }).map((ps) => ps.flat()).chain((block) =>
      fc.integer({ min: -1, max: 1 }).map((d) => [Math.max(0, block.length + d), ...block])
    ),
    fc.constant([0]),
    fc.constant([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54]) // "MQTT"
  )
  /** A frame-shaped piece of garbage: plausible first byte, fields, a length near the body's. */
  const garbageFrame = fc
    .record({
      type: fc.integer({ min: 0, max: 15 }),
      flags: fc.oneof({ arbitrary: fc.constant(-1), weight: 6 }, fc.integer({ min: 0, max: 15 })),
      body: fc.array(segment, { maxLength: 4 }).map((s) => s.flat()),
      delta: fc.oneof({ arbitrary: fc.constant(0), weight: 6 }, fc.integer({ min: -3, max: 3 }))
    })
    .map(({ body, delta, flags, type }) => {
      const first = (type << 4) | (flags === -1 ? (type === 3 ? (body.length & 0x0b) : REQUIRED_FLAGS[type]) : flags)
      return Buffer.concat([Buffer.from([first, ...varInt(Math.max(0, body.length + delta))]), Buffer.from(body)])
    })

  /** PUBLISH-shaped garbage: any flags, a topic length off by a little, id, properties, payload. */
  const publishFrame = fc
    .record({
      flags: fc.integer({ min: 0, max: 15 }),
      topic: stringBytes,
      topicDelta: fc.oneof({ arbitrary: fc.constant(0), weight: 4 }, fc.integer({ min: -2, max: 2 })),
      id: fc.option(fc.tuple(smallByte, smallByte), { nil: undefined, freq: 1 }),
      properties: fc.option(segment, { nil: undefined, freq: 1 }),
      payload: fc.oneof(fc.constant([]), fc.array(smallByte, { maxLength: 4 })),
      delta: fc.oneof({ arbitrary: fc.constant(0), weight: 4 }, fc.integer({ min: -3, max: 1 }))
    })
    .map(({ delta, flags, id, payload, properties, topic, topicDelta }) => {
      const body = [0, Math.max(0, topic.length + topicDelta), ...topic, ...(id ?? []), ...(properties ?? []), ...payload]
      return Buffer.concat([Buffer.from([0x30 | flags, ...varInt(Math.max(0, body.length + delta))]), Buffer.from(body)])
    })

  for (const v of versions) {
    it.prop(
      `v${v}: PUBLISH-shaped garbage`,
      [fc.array(fc.oneof(publishFrame, garbageFrame), { minLength: 1, maxLength: 4 }).map((f) => Buffer.concat(f)).filter(noGenuineReplacement), cuts],
      ([input, cutPoints]) => expectSameAsReference(input, v, cutPoints),
      runs(1500)
    )

    it.prop(
      `v${v}: random bytes`,
      [fc.uint8Array({ maxLength: 48 }).filter(noGenuineReplacement), cuts],
      ([input, cutPoints]) => expectSameAsReference(Buffer.from(input), v, cutPoints),
      runs(500)
    )

    it.prop(
      `v${v}: frame-shaped garbage`,
      [fc.array(garbageFrame, { minLength: 1, maxLength: 5 }).map((f) => Buffer.concat(f)).filter(noGenuineReplacement), cuts],
      ([input, cutPoints]) => expectSameAsReference(input, v, cutPoints),
      runs(1500)
    )

    it.prop(
      `v${v}: mutated valid packets`,
      [
        fc.array(packetArb(v), { minLength: 1, maxLength: 4 }),
        fc.array(
          fc.record({
            kind: fc.constantFrom("set", "set", "flip", "insert", "delete", "truncate"),
            at: fc.nat(),
            value: fc.integer({ min: 0, max: 255 })
          }),
          { minLength: 1, maxLength: 3 }
        ),
        cuts
      ],
      ([packets, mutations, cutPoints]) => {
        const bytes = [...generateAll(packets, v)]
        for (const m of mutations) {
          const at = m.at % (bytes.length + 1)
          if (m.kind === "set" && at < bytes.length) bytes[at] = m.value
          else if (m.kind === "flip" && at < bytes.length) bytes[at] ^= 1 << (m.value & 7)
          else if (m.kind === "insert") bytes.splice(at, 0, m.value)
          else if (m.kind === "delete") bytes.splice(at, 1)
          else if (m.kind === "truncate") bytes.length = at
        }
        const input = Buffer.from(bytes)
        fc.pre(noGenuineReplacement(input))
        expectSameAsReference(input, v, cutPoints)
      },
      runs(1500)
    )
  }
})

describe("PacketParser framing", () => {
  it("a packet inside one chunk is decoded in place: the payload is a view on the chunk", () => {
    const chunk = Buffer.concat([
      encodePublish({ topic: "a/b", payload: Buffer.from("hello"), qos: 1, retain: false, messageId: 7 }, 4).buffer,
      encodeAck("puback", 9, 4)
    ])
    const out: Array<Packet> = []
    expect(new PacketParser().parse(chunk, out)).toBeUndefined()
    const publish = out[0] as Packet & { payload: Buffer }
    expect(publish.payload.toString()).toBe("hello")
    expect(publish.payload.buffer).toBe(chunk.buffer)
    expect(out[1]).toMatchObject({ cmd: "puback", messageId: 9 })
  })

  it("a remaining length of more than 4 bytes is malformed (§2.2.3, v5 §1.5.5)", () => {
    const bytes = Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])
    expect(parseChunks([bytes]).error?.reason).toBe("malformed")
    // detected at the 4th continuation byte, whatever the chunking
    expect(parseChunks([...bytes.subarray(0, 5)].map((b) => Buffer.from([b]))).error?.reason).toBe("malformed")
    expect(parseChunks([bytes.subarray(0, 2), bytes.subarray(2, 5)]).error?.reason).toBe("malformed")
    // 4 bytes is the maximum: 268,435,455, incomplete but fine
    expect(parseChunks([Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f])]).error).toBeUndefined()
  })

  it("a packet over maxPacketSize is too-large as soon as its fixed header is read", () => {
    // 1 + 2 + 200 bytes against a limit of 100: reported before any of the body arrives
    expect(parseChunks([Buffer.from([0x30, 0xc8, 0x01])], 4, 100).error?.reason).toBe("too-large")
    expect(parseChunks([Buffer.from([0x30, 0xc8]), Buffer.from([0x01])], 4, 100).error?.reason).toBe("too-large")
    const parser = new PacketParser(100)
    const out: Array<Packet> = []
    expect(parser.parse(Buffer.from([0x30, 0xc8]), out)).toBeUndefined()
    expect(parser.parse(Buffer.from([0x01, 0x00]), out)?.reason).toBe("too-large")
    // the limit counts the whole packet, fixed header included
    const exact = encodePublish({ topic: "t", payload: Buffer.alloc(100 - 5), qos: 0, retain: false }, 4).buffer
    expect(exact.length).toBe(100)
    expect(parseChunks([exact], 4, 100)).toMatchObject({ error: undefined, packets: [{ cmd: "publish" }] })
    expect(parseChunks([exact], 4, 99).error?.reason).toBe("too-large")
    // 0 means no limit
    expect(parseChunks([exact], 4, 0).error).toBeUndefined()
  })

  it("an unfinished frame kept for the next read does not pin a larger buffer its chunk is a view on", () => {
    // a read chunk that is a slice of a bigger buffer (Node's 8 KiB pool, or a 64 KiB read whose last bytes start a frame)
    const frame = encodePublish({ topic: "a/b", payload: Buffer.from("hello, world"), qos: 1, retain: false, messageId: 5 }, 4).buffer
    const big = Buffer.alloc(65536)
    const start = big.length - PINGREQ.length - 6
    PINGREQ.copy(big, start)
    frame.copy(big, start + PINGREQ.length, 0, 6)
    const parser = new PacketParser()
    const out: Array<Packet> = []
    expect(parser.parse(big.subarray(start), out)).toBeUndefined()
    expect(out).toMatchObject([{ cmd: "pingreq" }])
    const kept = (parser as unknown as { parts: ReadonlyArray<Buffer> }).parts
    expect(kept).toHaveLength(1)
    expect(kept[0].buffer.byteLength).toBeLessThan(1024)
    // the kept bytes are a copy: the reader may do what it likes with its buffer now
    big.fill(0xee)
    expect(parser.parse(frame.subarray(6, 9), out)).toBeUndefined()
    expect((parser as unknown as { parts: ReadonlyArray<Buffer> }).parts.every((p) => p.buffer.byteLength < 1024)).toBe(true)
    expect(parser.parse(frame.subarray(9), out)).toBeUndefined()
    expect(out[1]).toMatchObject({ cmd: "publish", topic: "a/b", messageId: 5 })
    expect((out[1] as Packet & { payload: Buffer }).payload.toString()).toBe("hello, world")
    // a chunk that is its own buffer is kept as it is, not copied
    const own = Buffer.allocUnsafeSlow(6)
    frame.copy(own, 0, 0, 6)
    const second = new PacketParser()
    expect(second.parse(own, [])).toBeUndefined()
    expect((second as unknown as { parts: ReadonlyArray<Buffer> }).parts[0].buffer).toBe(own.buffer)
  })

  it("after an error the parser stays failed", () => {
    const parser = new PacketParser()
    const out: Array<Packet> = []
    const error = parser.parse(Buffer.from([0x36, 0x00]), out)
    expect(error?.reason).toBe("malformed")
    expect(parser.parse(PINGREQ, out)).toBe(error)
    expect(out).toHaveLength(0)
  })

  it.prop(
    "a large PUBLISH split into many chunks is reassembled",
    [fc.integer({ min: 1, max: 70_000 }), fc.array(fc.nat(), { maxLength: 30 })],
    ([size, cutPoints]) => {
      const payload = Buffer.alloc(size, 0x5a)
      payload[size - 1] = 0x01
      const stream = Buffer.concat([PINGREQ, encodePublish({ topic: "big", payload, qos: 2, retain: true, messageId: 3 }, 5).buffer, PINGREQ])
      const result = parseChunks(splitAt(stream, cutPoints), 5)
      expect(result.error).toBeUndefined()
      const [expected, actual] = [mqttPacketParse(stream, 5), result.packets].map((ps) =>
        ps.map((p) => ({ ...p, payload: p.cmd === "publish" ? (p.payload as Buffer).toString("hex") : null }))
      )
      expect(actual).toStrictEqual(expected)
    },
    runs(50)
  )
})

describe("PacketParser rejects what the spec calls malformed", () => {
  /** Generate `packet`, then replace the bytes of the placeholder string with `raw`. */
  const patched = (packet: Packet, v: ProtocolVersion, placeholder: string, raw: ReadonlyArray<number>): Buffer => {
    const bytes = Mqtt.generate(packet, { protocolVersion: v })
    const at = bytes.indexOf(placeholder)
    expect(at).toBeGreaterThan(0)
    expect(Buffer.byteLength(placeholder)).toBe(raw.length)
    Buffer.from(raw).copy(bytes, at)
    return bytes
  }
  const INVALID = [0xc3, 0x28] // a lead byte followed by ASCII
  const SURROGATE = [0xed, 0xa0, 0x80] // U+D800, not allowed in UTF-8 [MQTT-1.5.4-1]
  const connect = (fields: Partial<Mqtt.IConnectPacket>, v: ProtocolVersion = 4): Packet => ({
    cmd: "connect",
    protocolId: v === 3 ? "MQIsdp" : "MQTT",
    protocolVersion: v,
    clientId: "client",
    clean: true,
    keepalive: 60,
    ...fields
  })

  const cases: ReadonlyArray<readonly [string, Buffer, ProtocolVersion]> = [
    ["PUBLISH topic (v4)", patched({ cmd: "publish", topic: "a/QZ", payload: Buffer.from("x"), qos: 0, retain: false, dup: false }, 4, "QZ", INVALID), 4],
    ["PUBLISH topic, surrogate (v5)", patched({ cmd: "publish", topic: "a/QZW", payload: Buffer.from("x"), qos: 1, messageId: 1, retain: false, dup: false }, 5, "QZW", SURROGATE), 5],
    ["PUBLISH topic with properties (v5)", patched({ cmd: "publish", topic: "QZ", payload: Buffer.alloc(0), qos: 0, retain: false, dup: false, properties: { contentType: "x" } }, 5, "QZ", INVALID), 5],
    ["PUBLISH response topic (v5)", patched({ cmd: "publish", topic: "t", payload: Buffer.alloc(0), qos: 0, retain: false, dup: false, properties: { responseTopic: "QZ" } }, 5, "QZ", INVALID), 5],
    ["CONNECT client id", patched(connect({ clientId: "QZ" }), 4, "QZ", INVALID), 4],
    ["CONNECT client id (v3)", patched(connect({ clientId: "QZ" }, 3), 3, "QZ", INVALID), 3],
    ["CONNECT will topic", patched(connect({ will: { topic: "QZ", payload: Buffer.from("bye"), qos: 0, retain: false } }), 4, "QZ", INVALID), 4],
    ["CONNECT user name", patched(connect({ username: "QZ" }), 4, "QZ", INVALID), 4],
    ["CONNECT user property (v5)", patched(connect({ properties: { userProperties: { QZ: "v" } } }, 5), 5, "QZ", INVALID), 5],
    ["SUBSCRIBE filter", patched({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a/+", qos: 0 }, { topic: "QZ", qos: 1 }] }, 4, "QZ", INVALID), 4],
    ["SUBSCRIBE filter (v5)", patched({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "QZW/#", qos: 1, nl: false, rap: false, rh: 0 }] }, 5, "QZW", SURROGATE), 5],
    ["UNSUBSCRIBE filter", patched({ cmd: "unsubscribe", messageId: 1, unsubscriptions: ["ok", "QZ"] }, 4, "QZ", INVALID), 4]
  ]
  for (const [name, bytes, v] of cases) {
    it(`invalid UTF-8 in ${name} is malformed [MQTT-1.5.3-1]`, () => {
      expect(parseChunks([bytes], v).error?.reason).toBe("malformed")
      // while mqtt-packet decodes it with U+FFFD
      expect(JSON.stringify(mqttPacketParse(bytes, v))).toContain("\uFFFD")
    })
  }

  it("U+0000 in a PUBLISH topic, a client id, a filter is malformed [MQTT-1.5.3-2]", () => {
    const nulTopic = patched({ cmd: "publish", topic: "a/Q", payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }, 4, "Q", [0])
    expect(parseChunks([nulTopic]).error?.reason).toBe("malformed")
    const nulV5 = patched({ cmd: "publish", topic: "a/Q", payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }, 5, "Q", [0])
    expect(parseChunks([nulV5], 5).error?.reason).toBe("malformed")
    expect(parseChunks([patched(connect({ clientId: "Z" }), 4, "Z", [0])]).error?.reason).toBe("malformed")
    const nulFilter = patched({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "Q", qos: 0 }] }, 4, "Q", [0])
    expect(parseChunks([nulFilter]).error?.reason).toBe("malformed")
  })

  it("a control character or a non-character in any string is malformed, as mosquitto_validate_utf8 refuses it; its neighbours are accepted", () => {
    const forbidden = ["\u0001", "\u0007", "\u001f", "\u007f", "\u0085", "\u009f", "\ufdd0", "\ufdef", "\ufffe", "\uffff", "\u{1fffe}", "\u{10ffff}"]
    const allowed = ["\u0020", "\u007e", "\u00a0", "\ufdcf", "\ufdf0", "\ufffd", "\u{1fffd}", "\u{10fffd}", "\u{10000}"]
    const streams = (c: string, v: ProtocolVersion): ReadonlyArray<readonly [string, Packet]> => [
      ["PUBLISH topic", { cmd: "publish", topic: `a/${c}`, payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }],
      ["PUBLISH topic, QoS 1", { cmd: "publish", topic: `${c}`, payload: Buffer.from("x"), qos: 1, messageId: 3, retain: false, dup: false }],
      ["client id", connect({ clientId: `c${c}` }, v)],
      ["will topic", connect({ will: { topic: `w${c}`, payload: Buffer.from("bye"), qos: 0, retain: false } }, v)],
      ["user name", connect({ username: `u${c}` }, v)],
      ["SUBSCRIBE filter", { cmd: "subscribe", messageId: 1, subscriptions: [{ topic: `f/${c}/#`, qos: 0, ...(v === 5 ? { nl: false, rap: false, rh: 0 } : {}) }] } as Packet],
      ["UNSUBSCRIBE filter", { cmd: "unsubscribe", messageId: 1, unsubscriptions: [`f${c}`] }],
      ...(v === 5
        ? [
          ["user property", { cmd: "publish", topic: "t", payload: Buffer.alloc(0), qos: 0, retain: false, dup: false, properties: { userProperties: { [`k${c}`]: "v" } } }] as const,
          ["content type", { cmd: "publish", topic: "t", payload: Buffer.alloc(0), qos: 0, retain: false, dup: false, properties: { contentType: `t${c}` } }] as const
        ]
        : [])
    ]
    for (const v of versions) {
      for (const c of forbidden) {
        for (const [what, packet] of streams(c, v)) {
          const bytes = Mqtt.generate(packet, { protocolVersion: v })
          expect(parseChunks([bytes], v).error?.reason, `v${v} ${what} U+${c.codePointAt(0)!.toString(16)}`).toBe("malformed")
        }
      }
      for (const c of allowed) {
        for (const [what, packet] of streams(c, v)) {
          const bytes = Mqtt.generate(packet, { protocolVersion: v })
          const result = parseChunks([bytes], v)
          expect(result.error, `v${v} ${what} U+${c.codePointAt(0)!.toString(16)}`).toBeUndefined()
          expect(plain(result.packets)).toStrictEqual(plain(mqttPacketParse(bytes, v)))
        }
      }
    }
  })

  it("a genuine U+FFFD, correctly encoded, is accepted", () => {
    for (const v of versions) {
      const stream = generateAll(
        [
          connect({ clientId: "c\uFFFD", username: "\uFFFD" }, v),
          { cmd: "publish", topic: "t/\uFFFD", payload: Buffer.alloc(0), qos: 0, retain: false, dup: false },
          { cmd: "subscribe", messageId: 2, subscriptions: [{ topic: "\uFFFD/#", qos: 0 }] }
        ],
        v
      )
      const result = parseChunks([stream], v)
      expect(result.error).toBeUndefined()
      expect(plain(result.packets)).toStrictEqual(plain(mqttPacketParse(stream, v)))
    }
  })

  it("a PUBLISH topic or packet identifier running past the packet is malformed", () => {
    for (const v of versions) {
      // topic length 2 with one byte left: at the end of the chunk, followed by a PINGREQ, by a PUBLISH
      expect(parseChunks([Buffer.from([0x30, 0x03, 0x00, 0x02, 0x61])], v).error?.reason).toBe("malformed")
      expect(parseChunks([Buffer.from([0x30, 0x03, 0x00, 0x02, 0x61, 0xc0, 0x00])], v).error?.reason).toBe("malformed")
      expect(parseChunks([Buffer.from([0x30, 0x03, 0x00, 0x02, 0x61, 0x30, 0x03, 0x00, 0x01, 0x62])], v).error?.reason).toBe("malformed")
      expect(parseChunks([Buffer.from([0x30, 0x01, 0x00])], v).error?.reason).toBe("malformed")
      // QoS 1 with one byte of packet identifier
      expect(parseChunks([Buffer.from([0x32, 0x04, 0x00, 0x01, 0x61, 0x00, 0xc0, 0x00])], v).error?.reason).toBe("malformed")
    }
  })

  it("PUBLISH with QoS 3 is malformed [MQTT-3.3.1-4]", () => {
    expect(parseChunks([Buffer.from([0x36, 0x03, 0x00, 0x01, 0x61])]).error?.reason).toBe("malformed")
    expect(parseChunks([Buffer.from([0x36])]).error?.reason).toBe("malformed") // known from the first byte
  })

  it("reserved header flags are malformed [MQTT-2.2.2-1] [MQTT-2.2.2-2]", () => {
    expect(parseChunks([Buffer.from([0x60, 0x02, 0x00, 0x01])]).error?.reason).toBe("malformed") // PUBREL needs 0x2
    expect(parseChunks([Buffer.from([0x62, 0x02, 0x00, 0x01])]).packets).toMatchObject([{ cmd: "pubrel", messageId: 1 }])
    expect(parseChunks([Buffer.from([0x80, 0x02, 0x00, 0x01])]).error?.reason).toBe("malformed") // SUBSCRIBE needs 0x2
    expect(parseChunks([Buffer.from([0xc1, 0x00])]).error?.reason).toBe("malformed")
  })

  it("the reserved packet type 0 is malformed; AUTH before MQTT 5 is a protocol error", () => {
    expect(parseChunks([Buffer.from([0x00, 0x00])]).error?.reason).toBe("malformed")
    expect(parseChunks([Buffer.from([0xf0, 0x01, 0x00])], 4).error?.reason).toBe("protocol")
    expect(parseChunks([Buffer.from([0xf0, 0x01, 0x00])], 5).packets).toMatchObject([{ cmd: "auth", reasonCode: 0 }])
  })

  it("fields the frame is too short for are malformed (mqtt-packet reports messageId -1)", () => {
    for (const v of versions) {
      expect(parseChunks([Buffer.from([0x40, 0x00])], v).error?.reason).toBe("malformed")
      expect(parseChunks([Buffer.from([0x50, 0x01, 0x00])], v).error?.reason).toBe("malformed")
      expect(parseChunks([Buffer.from([0x32, 0x03, 0x00, 0x01, 0x61])], v).error?.reason).toBe("malformed")
      expect(parseChunks([Buffer.from([0x90, 0x01, 0x00])], v).error?.reason).toBe("malformed")
      expect(parseChunks([Buffer.from([0x20, 0x00])], v).error?.reason).toBe("malformed")
    }
    expect(parseChunks([Buffer.from([0x20, 0x01, 0x00])], 4).error?.reason).toBe("malformed")
    expect(parseChunks([Buffer.from([0x20, 0x01, 0x00])], 5).packets).toMatchObject([{ cmd: "connack", reasonCode: 0 }])
  })

  it("invalid v5 reason codes are malformed", () => {
    expect(parseChunks([Buffer.from([0x40, 0x03, 0x00, 0x01, 0x05])], 5).error?.reason).toBe("malformed")
    expect(parseChunks([Buffer.from([0x70, 0x03, 0x00, 0x01, 0x10])], 5).error?.reason).toBe("malformed")
    expect(parseChunks([Buffer.from([0xe0, 0x01, 0x01])], 5).error?.reason).toBe("malformed")
    // the same bytes are fine in v3.1.1, which has no reason codes
    expect(parseChunks([Buffer.from([0x40, 0x03, 0x00, 0x01, 0x05])], 4).packets).toMatchObject([{ cmd: "puback", messageId: 1 }])
  })

  it("protocol level 6 is a protocol error hinting CONNACK 0x01 / 0x84 [MQTT-3.1.2-2]", () => {
    const bytes = Mqtt.generate(connect({}), { protocolVersion: 4 })
    bytes[8] = 6 // 0x10 len 0x00 0x04 'M' 'Q' 'T' 'T' level
    const error = parseChunks([bytes]).error
    expect(error).toMatchObject({ reason: "protocol", connectError: "bad-protocol-version" })
    expect(ConnackV4.UnacceptableProtocolVersion).toBe(0x01)
    expect(ReasonCode.UnsupportedProtocolVersion).toBe(0x84)
  })

  it("protocol name FOO is a protocol error hinting a bad protocol name [MQTT-3.1.2-1]", () => {
    const bytes = Mqtt.generate(connect({ protocolId: "MQTT" }), { protocolVersion: 4 })
    Buffer.from("FOOO").copy(bytes, 4)
    expect(parseChunks([bytes]).error).toMatchObject({ reason: "protocol", connectError: "bad-protocol-name" })
    // other CONNECT errors carry no hint
    const reserved = Mqtt.generate(connect({}), { protocolVersion: 4 })
    reserved[9] |= 0x01 // reserved connect flag [MQTT-3.1.2-3]
    const error = parseChunks([reserved]).error
    expect(error?.reason).toBe("malformed")
    expect(error?.connectError).toBeUndefined()
  })

  it("a protocol name goes with its levels: MQTT is 4 or 5, MQIsdp 3; the error carries the name or level for the log [MQTT-3.1.2-2]", () => {
    const frame = (name: string, level: number) => {
      // level, clean session, keepalive 0, (v5: no properties), client id "c"
      const rest = level === 5 ? [level, 0x02, 0, 0, 0, 0, 1, 0x63] : [level, 0x02, 0, 0, 0, 1, 0x63]
      const body = Buffer.concat([Buffer.from([0, name.length]), Buffer.from(name, "latin1"), Buffer.from(rest)])
      return Buffer.concat([Buffer.from([0x10, body.length]), body])
    }
    expect(parseChunks([frame("MQTT", 3)]).error).toMatchObject({ reason: "protocol", connectError: "bad-protocol-version", detail: "3" })
    expect(parseChunks([frame("MQIsdp", 4)]).error).toMatchObject({ reason: "protocol", connectError: "bad-protocol-version", detail: "4" })
    expect(parseChunks([frame("MQTT", 7)]).error).toMatchObject({ connectError: "bad-protocol-version", detail: "7" })
    expect(parseChunks([frame("MQTX", 4)]).error).toMatchObject({ connectError: "bad-protocol-name", detail: "MQTX" })
    for (const [name, level] of [["MQTT", 4], ["MQTT", 5], ["MQIsdp", 3]] as const) {
      expect(parseChunks([frame(name, level)], level)).toMatchObject({ error: undefined, packets: [{ cmd: "connect", protocolId: name, protocolVersion: level }] })
    }
  })

  it("setting protocolVersion keeps a bridge CONNECT's mode for SUBSCRIBE", () => {
    const bridge = Mqtt.generate({ ...connect({}), bridgeMode: true } as unknown as Packet, { protocolVersion: 4 })
    const subscribe = Mqtt.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a", qos: 1 }] }, { protocolVersion: 4 })
    const parser = new PacketParser()
    const out: Array<Packet> = []
    expect(parser.parse(bridge, out)).toBeUndefined()
    parser.protocolVersion = 4
    expect(parser.parse(subscribe, out)).toBeUndefined()
    expect(plain(out)).toStrictEqual(plain(mqttPacketParse(Buffer.concat([bridge, subscribe]), 4)))
    expect(out[1]).toMatchObject({ subscriptions: [{ topic: "a", qos: 1, rh: 0, rap: true, nl: true }] })
  })
})

// ---------------------------------------------------------------------------

describe("encoders ≡ mqtt-packet generate", () => {
  for (const v of versions) {
    it.prop(
      `v${v}: encodePublish, then withPacketId`,
      [publishArb(v), packetId, fc.boolean()],
      ([packet, id, dup]) => {
        const p = packet as Mqtt.IPublishPacket & { payload: Buffer }
        const frame = encodePublish(p, v)
        expect(frame.buffer).toStrictEqual(Mqtt.generate(p, { protocolVersion: v }))
        if (p.qos === 0) {
          expect(frame.idOffset).toBe(-1)
          expect(() => withPacketId(frame, id, dup)).toThrow()
          return
        }
        expect(frame.buffer.readUInt16BE(frame.idOffset)).toBe(p.messageId)
        const before = Buffer.from(frame.buffer)
        const delivered = withPacketId(frame, id, dup)
        const expected = Mqtt.generate({ ...p, messageId: id, dup }, { protocolVersion: v })
        expect(delivered).toStrictEqual(expected)
        // the same bytes written in place into an outbox, between other bytes that stay untouched
        const outbox = Buffer.alloc(expected.length + 7, 0xee)
        expect(writeWithPacketIdAt(outbox, 3, frame, id, dup)).toBe(3 + expected.length)
        expect(outbox.subarray(3, 3 + expected.length)).toStrictEqual(expected)
        expect([...outbox.subarray(0, 3), ...outbox.subarray(3 + expected.length)]).toStrictEqual(Array(7).fill(0xee))
        expect(frame.buffer).toStrictEqual(before) // the shared frame is untouched
      },
      runs(300)
    )
  }

  it.prop(
    "v5 PUBLISH without properties is on the fast path with a 0 property length",
    [fc.constantFrom(undefined, {}, { contentType: undefined })],
    ([properties]) => {
      const frame = encodePublish({ topic: "t", payload: Buffer.from("p"), qos: 1, retain: false, messageId: 5, properties }, 5)
      expect([...frame.buffer]).toStrictEqual([0x32, 0x07, 0x00, 0x01, 0x74, 0x00, 0x05, 0x00, 0x70])
    },
    runs(3)
  )

  it("encodePublish: a missing messageId is 0 until withPacketId; limits throw", () => {
    const frame = encodePublish({ topic: "t", payload: Buffer.alloc(0), qos: 2, retain: true }, 4)
    expect(frame.buffer.readUInt16BE(frame.idOffset)).toBe(0)
    expect(withPacketId(frame, 0xabcd, true)).toStrictEqual(
      Mqtt.generate({ cmd: "publish", topic: "t", payload: Buffer.alloc(0), qos: 2, retain: true, dup: true, messageId: 0xabcd })
    )
    expect(() => encodePublish({ topic: "x".repeat(65_536), payload: Buffer.alloc(0), qos: 0, retain: false }, 4)).toThrow(RangeError)
  })

  for (const v of versions) {
    it.prop(
      `v${v}: encodeAck`,
      [fc.constantFrom<AckCmd>("puback", "pubrec", "pubrel", "pubcomp"), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 20 })],
      ([cmd, id, pick]) => {
        const codes = ackCodes(cmd)
        const reasonCode = pick < codes.length ? codes[pick] : undefined
        const bytes = encodeAck(cmd, id, v, reasonCode)
        expect(bytes).toStrictEqual(Mqtt.generate({ cmd, messageId: id, reasonCode: reasonCode ?? 0 }, { protocolVersion: v }))
        if (v !== 5 || (reasonCode ?? 0) === 0) {
          // the in-place form the outbox uses: the same 4 bytes, nothing around them touched
          const outbox = Buffer.alloc(9, 0xee)
          expect(writeAckAt(outbox, 2, cmd, id)).toBe(6)
          expect(outbox.subarray(2, 6)).toStrictEqual(bytes)
          expect([...outbox.subarray(0, 2), ...outbox.subarray(6)]).toStrictEqual(Array(5).fill(0xee))
        }
        const back = parseChunks([bytes], v)
        expect(back.error).toBeUndefined()
        expect(back.packets).toMatchObject([{ cmd, messageId: id, ...(v === 5 ? { reasonCode: reasonCode ?? 0 } : {}) }])
      },
      runs(200)
    )
  }

  for (const v of versions) {
    it.prop(
      `v${v}: encodeSuback`,
      [packetId, fc.array(fc.constantFrom(...(v === 5 ? SUBACK_CODES_V5 : [0, 1, 2, 0x80])), { minLength: 1, maxLength: 200 })],
      ([id, granted]) => {
        const bytes = encodeSuback(id, granted, v)
        expect(bytes).toStrictEqual(Mqtt.generate({ cmd: "suback", messageId: id, granted }, { protocolVersion: v }))
        expect(plain(parseChunks([bytes], v).packets)).toStrictEqual(plain(mqttPacketParse(bytes, v)))
      },
      runs(200)
    )
  }

  it("PINGRESP and PINGREQ constants", () => {
    expect(PINGRESP).toStrictEqual(Mqtt.generate({ cmd: "pingresp" }))
    expect(PINGREQ).toStrictEqual(Mqtt.generate({ cmd: "pingreq" }))
  })

  it.prop(
    "encode is generate",
    [fc.constantFrom<ProtocolVersion>(3, 4, 5).chain((v) => fc.tuple(fc.constant(v), packetArb(v)))],
    ([[v, packet]]) => {
      expect(encode(packet, v)).toStrictEqual(Mqtt.generate(packet, { protocolVersion: v }))
    },
    runs(100)
  )
})
