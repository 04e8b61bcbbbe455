/**
 * What the server sends a v5 client fits in its Maximum Packet Size [MQTT-3.1.2-24]: a packet that
 * fits goes out as mqtt-packet encodes it; one that does not loses its Reason String and User
 * Properties (and the properties whose value is the default the caller gives) and nothing else [MQTT-3.2.2-19]
 * [MQTT-3.2.2-20]; one that still does not fit is not sent at all.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import * as mqttPacket from "mqtt-packet"
import { encode, type Packet } from "../../src/protocol/codec.js"
import { encodeWithin } from "../../src/session/Connection.js"
import { packetArb } from "../support/packets.js"

const decode = (bytes: Buffer): Packet => {
  const parser = mqttPacket.parser({ protocolVersion: 5 })
  let out: Packet | undefined
  parser.on("packet", (p) => (out = p as Packet))
  parser.parse(bytes)
  return out!
}

/** the model: without Reason String, User Properties and every property whose value is its default */
const withoutDroppable = (packet: Packet, defaults: Record<string, unknown>): Packet => {
  const properties = { ...((packet as { properties?: Record<string, unknown> }).properties ?? {}) }
  for (const key of ["reasonString", "userProperties"]) delete properties[key]
  for (const [key, value] of Object.entries(defaults)) if (properties[key] === value) delete properties[key]
  return { ...packet, properties: Object.keys(properties).length > 0 ? properties : undefined } as Packet
}

/** defaults that the generated properties meet often (and often not) */
const defaultsArb = fc.record(
  { retainAvailable: fc.boolean(), wildcardSubscriptionAvailable: fc.boolean(), topicAliasMaximum: fc.integer({ min: 0, max: 3 }), contentType: fc.constantFrom("", "a") },
  { requiredKeys: [] }
)

describe("encodeWithin", () => {
  it.prop(
    "fits, or loses only what may be lost, or is not sent",
    [packetArb(5), fc.integer({ min: 0, max: 300 }), defaultsArb],
    ([packet, max, defaults]) => {
      const full = encode(packet, 5)
      const out = encodeWithin(packet, max, defaults)
      if (max === 0 || full.length <= max) {
        expect(out).toEqual(full)
        return
      }
      const trimmed = encode(withoutDroppable(packet, defaults), 5)
      if (trimmed.length > max) {
        expect(out).toBeUndefined()
        return
      }
      expect(out).toBeDefined()
      expect(out!.length).toBeLessThanOrEqual(max)
      expect(decode(out!)).toEqual(decode(trimmed))
    },
    { fastCheck: { seed: 0x3a7e, numRuns: 2000 } }
  )
})
