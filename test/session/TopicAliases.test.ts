/**
 * The MQTT 5 topic alias tables against a plain model (§3.3.2.3.4):
 * inbound — alias 0 or above the broker's maximum is 0x94 [MQTT-3.3.2-8]
 * [MQTT-3.3.2-9], an alias never set is a protocol error, a set topic maps
 * back; outbound — never an alias above the client's maximum [MQTT-3.3.2-10],
 * a reused topic gets its alias, topics beyond the maximum go out in full.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { ReasonCode } from "../../src/protocol/reasonCodes.js"
import { validateTopicName } from "../../src/protocol/topic.js"
import { AliasError, InboundAliases, OutboundAliases } from "../../src/session/TopicAliases.js"

const SEED = 0x5a11a5
const runs = (numRuns: number) => ({ fastCheck: { seed: SEED, numRuns } })

/** A few topics, some invalid as topic names (wildcards), so that collisions happen. */
const topicArb = fc.constantFrom("a", "a/b", "c/d/e", "sensors/1", "x", "+", "a/#", "")

describe("InboundAliases", () => {
  it.prop(
    "each PUBLISH resolves as the model says: range, unknown, set and reuse",
    [
      fc.integer({ min: 0, max: 12 }),
      fc.array(fc.record({ topic: topicArb, alias: fc.integer({ min: 0, max: 14 }) }), { maxLength: 40 })
    ],
    ([maximum, publishes]) => {
      const table = new InboundAliases(maximum)
      const model = new Map<number, string>()
      for (const { topic, alias } of publishes) {
        const got = table.resolve(topic, alias)
        if (alias === 0 || alias > maximum) {
          expect(got).toBeInstanceOf(AliasError)
          expect((got as AliasError).reasonCode).toBe(ReasonCode.TopicAliasInvalid)
          continue
        }
        if (topic === "") {
          const known = model.get(alias)
          if (known === undefined) {
            expect(got).toBeInstanceOf(AliasError)
            expect((got as AliasError).reasonCode).toBe(ReasonCode.ProtocolError)
          } else {
            expect(got).toBe(known)
          }
          continue
        }
        // a topic with the alias: the topic itself; remembered when it is a valid topic name
        expect(got).toBe(topic)
        if (validateTopicName(topic)) model.set(alias, topic)
      }
      expect(table.size).toBe(model.size)
      // every mapping is within 1..maximum
      for (const alias of model.keys()) expect(alias >= 1 && alias <= maximum).toBe(true)
    },
    runs(500)
  )

  it("a mapping can be replaced by sending another topic with the same alias", () => {
    const table = new InboundAliases(3)
    expect(table.resolve("first", 2)).toBe("first")
    expect(table.resolve("", 2)).toBe("first")
    expect(table.resolve("second", 2)).toBe("second")
    expect(table.resolve("", 2)).toBe("second")
    expect(table.resolve("", 1)).toEqual(new AliasError(ReasonCode.ProtocolError, "unknown topic alias 1"))
    expect(table.resolve("t", 4)).toEqual(new AliasError(ReasonCode.TopicAliasInvalid, "topic alias 4 out of range"))
  })
})

/** What the client does with what the broker sent: its own alias table. */
const clientReads = (clientTable: Map<number, string>, maximum: number, sentTopic: string, alias: number | undefined): string => {
  if (alias === undefined) return sentTopic
  // the client would refuse an alias out of its range [MQTT-3.3.2-10]
  expect(alias).toBeGreaterThanOrEqual(1)
  expect(alias).toBeLessThanOrEqual(maximum)
  if (sentTopic === "") {
    const t = clientTable.get(alias)
    expect(t).toBeDefined()
    return t!
  }
  clientTable.set(alias, sentTopic)
  return sentTopic
}

describe("OutboundAliases", () => {
  it.prop(
    "bounded by the client's maximum, first come first served; the client always reads the right topic",
    [
      fc.integer({ min: 1, max: 6 }),
      fc.array(fc.record({ topic: fc.constantFrom("a", "b", "c/d", "e/f/g", "h", "i", "j", "k", "l"), measureFirst: fc.boolean() }), {
        maxLength: 60
      })
    ],
    ([maximum, sends]) => {
      const table = new OutboundAliases(maximum)
      const model = new Map<string, number>()
      const client = new Map<number, string>()
      for (const { topic, measureFirst } of sends) {
        // measuring (commit false) assigns nothing
        if (measureFirst) {
          const sizeBefore = table.size
          table.lookup(topic, false)
          expect(table.size).toBe(sizeBefore)
        }
        const n = table.lookup(topic, true)
        const known = model.get(topic)
        if (known !== undefined) {
          expect(n).toBe(known) // a reused topic gets its alias: empty topic on the wire
        } else if (model.size < maximum) {
          expect(n).toBe(-(model.size + 1)) // a new alias, sent with the topic
          model.set(topic, model.size + 1)
        } else {
          expect(n).toBe(0) // none left: the topic in full
        }
        const sentTopic = n > 0 ? "" : topic
        const alias = n === 0 ? undefined : Math.abs(n)
        expect(clientReads(client, maximum, sentTopic, alias)).toBe(topic)
      }
      expect(table.size).toBe(Math.min(maximum, new Set(sends.map((s) => s.topic)).size))
    },
    runs(500)
  )
})
