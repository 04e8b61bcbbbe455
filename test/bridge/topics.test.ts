/**
 * Bridge topic mapping (bridge_topic.c / send_publish.c): the allocation-free
 * matcher against the reference matcher, the mosquitto.conf(5) remapping
 * table, and remapping out and back in as the identity.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { makeTopic, matches, remapIncoming, remapOutgoing } from "../../src/bridge/internal/topics.js"
import { matchTopic, validateTopicFilter } from "../../src/protocol/topic.js"

const level = fc.constantFrom("a", "b", "", "$SYS", "x y", "é")
const topicName = fc.array(level, { minLength: 1, maxLength: 4 }).map((l) => l.join("/")).filter((t) => t.length > 0)
const filter = fc
  .tuple(fc.array(fc.oneof(level, fc.constant("+")), { minLength: 1, maxLength: 4 }), fc.boolean())
  .map(([levels, hash]) => [...levels, ...(hash ? ["#"] : [])].join("/"))
  .filter((f) => f.length > 0 && validateTopicFilter(f))

describe("bridge topics", () => {
  it.prop(
    "matches agrees with the reference matcher [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.2-1]",
    [filter, topicName],
    ([f, t]) => {
      expect(matches(f, t)).toBe(matchTopic(f, t))
    },
    { fastCheck: { numRuns: 2000, seed: 20240611 } }
  )

  it("matches: the edge cases", () => {
    expect(matches("sport/#", "sport")).toBe(true)
    expect(matches("sport/+", "sport")).toBe(false)
    expect(matches("sport/+", "sport/")).toBe(true)
    expect(matches("+/+", "/finance")).toBe(true)
    expect(matches("#", "$SYS/x")).toBe(false)
    expect(matches("$SYS/#", "$SYS/x")).toBe(true)
    expect(matches("a/b", "a/bc")).toBe(false)
  })

  it("the remapping table of mosquitto.conf(5)", () => {
    const cases = [
      // pattern, local prefix, remote prefix, local topic, remote topic
      ["pattern", "L/", "R/", "L/pattern", "R/pattern"],
      ["pattern", "L/", undefined, "L/pattern", "pattern"],
      ["pattern", undefined, "R/", "pattern", "R/pattern"],
      ["pattern", undefined, undefined, "pattern", "pattern"],
      [undefined, "local", "remote", "local", "remote"]
    ] as const
    for (const [pattern, lp, rp, localTopic, remoteTopic] of cases) {
      const t = makeTopic(pattern, "both", 0, lp, rp)
      expect([t.localTopic, t.remoteTopic]).toEqual([localTopic, remoteTopic])
      expect(remapOutgoing([t], localTopic)).toBe(remoteTopic)
      expect(remapIncoming([t], remoteTopic)).toBe(localTopic)
    }
  })

  it("direction matters; the first matching topic with a prefix wins; unmatched topics pass unchanged", () => {
    const topics = [
      makeTopic("a/#", "in", 0, "in/", "rin/"),
      makeTopic("a/#", "out", 0, "out/", "rout/"),
      makeTopic("a/#", "both", 0, "both/", "rboth/"),
      makeTopic("b/#", "out", 0, undefined, undefined)
    ]
    expect(remapOutgoing(topics, "out/a/1")).toBe("rout/a/1")
    expect(remapOutgoing(topics, "both/a/1")).toBe("rboth/a/1")
    expect(remapOutgoing(topics, "in/a/1")).toBe("in/a/1")
    expect(remapIncoming(topics, "rin/a/1")).toBe("in/a/1")
    expect(remapIncoming(topics, "rout/a/1")).toBe("rout/a/1")
    expect(remapOutgoing(topics, "b/x")).toBe("b/x")
  })

  it.prop(
    "a both topic: remapped out then back in is the identity",
    [fc.constantFrom("x/", "l/a/", "local"), fc.constantFrom("y/", "r/", "$bridge/"), fc.array(fc.constantFrom("p", "q", "z"), { minLength: 1, maxLength: 3 })],
    ([lp, rp, levels]) => {
      const t = makeTopic("p/#", "both", 1, lp, rp)
      const local = lp + ["p", ...levels].join("/")
      const remote = remapOutgoing([t], local)
      expect(remote.startsWith(rp)).toBe(true)
      expect(remapIncoming([t], remote)).toBe(local)
    },
    { fastCheck: { numRuns: 300, seed: 7 } }
  )
})
