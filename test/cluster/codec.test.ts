/**
 * What crosses Redis between nodes: a message as stream-entry fields (and
 * retained JSON) comes back identical — binary payloads, every QoS, the retain
 * flag, the publisher (No Local), the receive time (expiry) and the v5
 * properties, binary correlation data included.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { fromJson, messageFields, messageOfFields, sharedOfFields, toJson } from "../../src/cluster/internal/codec.js"
import { Message, type MessageProperties, type QoS } from "../../src/session/Message.js"

const properties: fc.Arbitrary<MessageProperties | undefined> = fc.option(
  fc.record(
    {
      payloadFormatIndicator: fc.boolean(),
      messageExpiryInterval: fc.nat(),
      responseTopic: fc.string({ minLength: 1 }),
      correlationData: fc.uint8Array().map((a) => Buffer.from(a)),
      userProperties: fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.array(fc.string(), { minLength: 2 }))),
      contentType: fc.string()
    },
    { requiredKeys: [] }
  ),
  { nil: undefined }
)

const message = fc
  .record({
    topic: fc.string({ minLength: 1, unit: "grapheme" }),
    payload: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    qos: fc.constantFrom(0, 1, 2) as fc.Arbitrary<QoS>,
    retain: fc.boolean(),
    properties,
    origin: fc.string(),
    receivedAt: fc.integer({ min: 1, max: 2 ** 42 })
  })
  .map((m) => new Message(m.topic, m.payload, m.qos, m.retain, m.properties, m.origin, m.receivedAt))

const shared = fc.option(fc.record({ group: fc.string({ minLength: 1 }).filter((s) => !s.includes("\u0000")), filter: fc.string({ minLength: 1 }) }), {
  nil: undefined
})

const same = (a: Message, b: Message | undefined) => {
  expect(b).toBeDefined()
  expect([b!.topic, b!.payload, b!.qos, b!.retain, b!.origin, b!.receivedAt]).toEqual([a.topic, a.payload, a.qos, a.retain, a.origin, a.receivedAt])
  expect(b!.properties).toEqual(a.properties)
}

describe("cluster codec", () => {
  it.prop("a message and its shared group survive a stream entry", [message, shared], ([m, s]) => {
    const fields = messageFields(m, s)
    for (const v of Object.values(fields)) expect(typeof v).toBe("string")
    same(m, messageOfFields(fields))
    expect(sharedOfFields(fields)).toEqual(s)
  }, { fastCheck: { seed: 20261125, numRuns: 300 } })

  it.prop("a message survives the JSON of a retained notification", [message], ([m]) => {
    same(m, messageOfFields(fromJson(toJson(messageFields(m, undefined))) as Record<string, string>))
  }, { fastCheck: { seed: 7, numRuns: 200 } })

  it("an entry that is not a message is refused, not routed", () => {
    expect(messageOfFields({})).toBeUndefined()
    expect(messageOfFields({ t: "a", p: "", q: "3" })).toBeUndefined()
    expect(messageOfFields({ t: "a", q: "1" })).toBeUndefined()
  })
})
