/**
 * The young generation's switch (src/runtime/YoungGeneration.ts), apart from V8: fed the
 * scavenges' times, the semi-space's size and the broker's message counter, it turns V8's growth
 * on only under sustained allocation while messages flow, and off again when either falls.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { defaultPolicy, GrowthSwitch, messagesParallel, parallelScavenges } from "../../src/runtime/YoungGeneration.js"

const MiB = 1048576
/** not within 0.1 % of a threshold (the rates are measured back from floating-point times) */
const away = (x: number, threshold: number) => Math.abs(x - threshold) > threshold / 1000
/** the gap (ms) between scavenges of a `capacity` semi-space at `mbPerS` MB/s of allocation */
const gapAt = (mbPerS: number, capacity = MiB) => capacity / (mbPerS * 1000)

/** a scavenger at one allocation rate and one message rate */
class Feed {
  at = 0
  messages = 0
  constructor(readonly growth = new GrowthSwitch()) {
    growth.scavenged(0, MiB, 0)
  }
  /** `n` scavenges at `mbPerS` and `perSecond` messages; the decisions */
  run(n: number, mbPerS: number, perSecond: number, capacity = MiB): Array<boolean | undefined> {
    const out: Array<boolean | undefined> = []
    for (let i = 0; i < n; i++) {
      const gap = gapAt(mbPerS, capacity)
      this.at += gap
      this.messages += (perSecond * gap) / 1000
      out.push(this.growth.scavenged(this.at, capacity, this.messages))
    }
    return out
  }
}

describe("the young generation's growth switch", () => {
  it("stays off at the QoS 1 latency bench's rates (~4 MB/s, 2,000 messages/s) and turns on under a QoS 0 flood (~100 MB/s, 700,000 messages/s)", () => {
    const light = new Feed()
    expect(light.run(100, 4, 2_000)).not.toContain(true)
    expect(light.growth.growing).toBe(false)
    const flood = new Feed()
    expect(flood.run(2, 100, 700_000)).toEqual([undefined, true])
    expect(flood.growth.growing).toBe(true)
    expect(flood.growth.rate).toBeCloseTo(100_000, -2)
    expect(flood.growth.messageRate).toBeCloseTo(700_000, -3)
  })

  it("scavenges reported together (a busy event loop) count each: the rates are over the time between reports", () => {
    const growth = new GrowthSwitch()
    growth.scavenged(0, MiB, 0)
    // 8 scavenges of 1 MiB in 80 ms, 40,000 messages: 104.9 MB/s, 500,000 messages/s
    expect(growth.scavenged(80, MiB, 40_000, 8)).toBeUndefined()
    expect(growth.rate).toBeCloseTo((8 * MiB) / 80, 6)
    expect(growth.messageRate).toBeCloseTo(500_000, 6)
    expect(growth.scavenged(160, MiB, 80_000, 8)).toBe(true)
  })

  it("a storm of connections (heavy allocation, no messages) leaves growth off, and scavenges single-threaded", () => {
    const storm = new Feed()
    expect(storm.run(50, 200, 0)).not.toContain(true)
    expect(storm.growth.growing).toBe(false)
    expect(parallelScavenges(storm.growth.growing, storm.growth.messageRate)).toBe(false)
    // QoS 1 at 1,000 msg/s (2,000 received + sent): messages wait behind each scavenge, parallel ones are shorter
    const light = new Feed()
    light.run(10, 4, 2_000)
    expect(light.growth.growing).toBe(false)
    expect(parallelScavenges(light.growth.growing, light.growth.messageRate)).toBe(true)
    expect(parallelScavenges(false, messagesParallel - 1)).toBe(false)
    expect(parallelScavenges(true, 0)).toBe(true)
  })

  it("a lone fast scavenge (a burst) does not turn growth on; it takes `streak` in a row", () => {
    const feed = new Feed()
    for (let i = 0; i < 10; i++) {
      expect(feed.run(1, 200, 100_000)).toEqual([undefined])
      expect(feed.run(1, 4, 2_000)).toEqual([undefined])
    }
    expect(feed.run(2, 200, 100_000)).toEqual([undefined, true])
  })

  it("turns growth off again once allocation or messages stay low, judged with the grown semi-space", () => {
    const feed = new Feed()
    feed.run(2, 100, 700_000)
    // V8 grew the semi-space to 16 MiB: a scavenge every 4 s at 4 MB/s
    expect(feed.run(2, 4, 2_000, 16 * MiB)).toEqual([undefined, false])
    expect(feed.growth.growing).toBe(false)
    // between the thresholds nothing changes either way
    expect(feed.run(20, 16, 5_000)).not.toContain(true)
    feed.run(2, 100, 700_000)
    expect(feed.growth.growing).toBe(true)
    // messages stop while something else allocates: off
    expect(feed.run(2, 100, 0, 16 * MiB)).toEqual([undefined, false])
  })

  it.prop(
    "switches exactly at the `streak`-th consecutive scavenge beyond the thresholds, never otherwise",
    [
      fc.array(
        fc.tuple(
          fc.double({ min: 0.5, max: 500, noNaN: true }).filter((mb) => away(mb * 1000, defaultPolicy.low) && away(mb * 1000, defaultPolicy.high)),
          fc.integer({ min: 0, max: 1_000_000 }).filter((n) => away(n, defaultPolicy.messagesLow) && away(n, defaultPolicy.messagesHigh))
        ),
        { maxLength: 60 }
      )
    ],
    ([steps]) => {
      const feed = new Feed()
      let run = 0
      for (const [mbPerS, perSecond] of steps) {
        const before = feed.growth.growing
        const bytesPerMs = mbPerS * 1000
        const beyond = before
          ? bytesPerMs < defaultPolicy.low || perSecond < defaultPolicy.messagesLow
          : bytesPerMs > defaultPolicy.high && perSecond > defaultPolicy.messagesHigh
        run = beyond ? run + 1 : 0
        const [decision] = feed.run(1, mbPerS, perSecond)
        if (run === defaultPolicy.streak) {
          expect(decision).toBe(!before)
          run = 0
        } else {
          expect(decision).toBeUndefined()
          expect(feed.growth.growing).toBe(before)
        }
      }
    }
  )
})
