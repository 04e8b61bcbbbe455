/**
 * codec.ts turns off mqtt-packet's number cache (65,536 two-byte Buffers, 6.3 MB of heap built on
 * the first `generate`): the cold-path `encode` must produce the very bytes it produced with the
 * cache, for every packet that writes two-byte numbers (packet ids, keep-alive, string and
 * binary lengths, v5 two-byte properties).
 */
import { createRequire } from "node:module"
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as Mqtt from "mqtt-packet"
import { encode, type Packet, type ProtocolVersion } from "../../src/protocol/codec.js"

const SEED = 20_261_126
const runs = (numRuns: number) => ({ fastCheck: { seed: SEED, numRuns } })

/** mqtt-packet's cache itself (numbers.js), to see whether anything built it */
const numbers = createRequire(import.meta.url)("mqtt-packet/numbers.js") as { cache: Record<number, Buffer> }

/** mqtt-packet's generate with its number cache on, as it is by default */
const generateCached = (packet: Packet, protocolVersion: ProtocolVersion): Buffer => {
  const was = Mqtt.writeToStream.cacheNumbers
  Mqtt.writeToStream.cacheNumbers = true
  try {
    return Mqtt.generate(packet, { protocolVersion })
  } finally {
    Mqtt.writeToStream.cacheNumbers = was
  }
}

const id = fc.integer({ min: 1, max: 65535 })
const u16 = fc.integer({ min: 0, max: 65535 })
// up to 300 UTF-16 units: byte lengths above 255 put a non-zero high byte in the length prefix
const text = fc.string({ maxLength: 300, unit: "grapheme" })
const topic = text.filter((t) => t.length > 0)
const qos = fc.constantFrom(0 as const, 1 as const, 2 as const)

const packetV4: fc.Arbitrary<Packet> = fc.oneof(
  fc.record({
    cmd: fc.constant("connect" as const),
    protocolId: fc.constant("MQTT" as const),
    protocolVersion: fc.constant(4 as const),
    clean: fc.constant(true),
    clientId: text,
    keepalive: u16,
    username: text,
    password: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b))
  }),
  fc.record({
    cmd: fc.constant("publish" as const),
    topic,
    payload: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
    qos: fc.constantFrom(1 as const, 2 as const),
    messageId: id,
    retain: fc.boolean(),
    dup: fc.boolean()
  }),
  fc.record({ cmd: fc.constantFrom("puback" as const, "pubrec" as const, "pubrel" as const, "pubcomp" as const), messageId: id }),
  fc.record({
    cmd: fc.constant("subscribe" as const),
    messageId: id,
    subscriptions: fc.array(fc.record({ topic, qos }), { minLength: 1, maxLength: 4 })
  }),
  fc.record({ cmd: fc.constant("suback" as const), messageId: id, granted: fc.array(fc.constantFrom(0, 1, 2, 128), { minLength: 1, maxLength: 4 }) }),
  fc.record({ cmd: fc.constant("unsubscribe" as const), messageId: id, unsubscriptions: fc.array(topic, { minLength: 1, maxLength: 4 }) }),
  fc.record({ cmd: fc.constant("unsuback" as const), messageId: id })
) as fc.Arbitrary<Packet>

const packetV5: fc.Arbitrary<Packet> = fc.oneof(
  fc.record({
    cmd: fc.constant("connack" as const),
    sessionPresent: fc.boolean(),
    reasonCode: fc.constant(0),
    properties: fc.record({ receiveMaximum: id, topicAliasMaximum: u16, serverKeepAlive: u16, assignedClientIdentifier: text })
  }),
  fc.record({
    cmd: fc.constant("publish" as const),
    topic,
    payload: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
    qos: fc.constantFrom(1 as const, 2 as const),
    messageId: id,
    retain: fc.boolean(),
    dup: fc.boolean(),
    properties: fc.record({ topicAlias: id, contentType: text, userProperties: fc.dictionary(topic, text, { maxKeys: 2 }) })
  }),
  fc.record({
    cmd: fc.constant("suback" as const),
    messageId: id,
    granted: fc.array(fc.constantFrom(0, 1, 2, 0x80, 0x87), { minLength: 1, maxLength: 4 }),
    properties: fc.record({ reasonString: text })
  }),
  fc.record({ cmd: fc.constant("disconnect" as const), reasonCode: fc.constant(0), properties: fc.record({ reasonString: text }) })
) as fc.Arbitrary<Packet>

describe("mqtt-packet number cache", () => {
  it("importing the codec turns it off, and encoding does not build it", () => {
    expect(Mqtt.writeToStream.cacheNumbers).toBe(false)
    encode({ cmd: "suback", messageId: 4660, granted: [1] } as Packet, 4)
    encode({ cmd: "subscribe", messageId: 7, subscriptions: [{ topic: "a/b", qos: 1 }] } as Packet, 4)
    expect(Object.keys(numbers.cache)).toHaveLength(0)
  })

  it.prop("3.1.1: encode is byte for byte mqtt-packet's generate with the cache", [packetV4], ([packet]) => {
    expect(encode(packet, 4).equals(generateCached(packet, 4))).toBe(true)
    expect(Mqtt.writeToStream.cacheNumbers).toBe(false)
  }, runs(300))

  it.prop("5.0: encode is byte for byte mqtt-packet's generate with the cache", [packetV5], ([packet]) => {
    expect(encode(packet, 5).equals(generateCached(packet, 5))).toBe(true)
  }, runs(300))
})
