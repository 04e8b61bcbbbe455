/**
 * The Midge-only `metrics_listener PORT [ADDRESS]` option (the Prometheus
 * endpoint, src/sys/Metrics.ts): parsed like `listener`'s port and address,
 * global, last one wins, status "Midge-only".
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import { defaults, knownOptions } from "../../src/config/Config.js"
import { configParsers } from "./helpers.js"

const { parse, ok, fails } = configParsers("t.conf")

describe("metrics_listener (Midge-only)", () => {
  it("is off by default, with or without a config file", () => {
    expect(defaults.metricsListener).toBeUndefined()
    expect(ok("listener 1883\n").metricsListener).toBeUndefined()
  })

  it("takes a port and an optional address; no warning", () => {
    const c = ok("listener 1883\nmetrics_listener 9100\n")
    expect(c.metricsListener).toEqual({ port: 9100, host: undefined })
    expect(c.warnings).toEqual([])
    expect(ok("metrics_listener 9100 127.0.0.1\n").metricsListener).toEqual({ port: 9100, host: "127.0.0.1" })
    expect(ok("metrics_listener 9100 ::1 # loopback only\n").metricsListener).toEqual({ port: 9100, host: "::1" })
    expect(ok("metrics_listener 9100 # all interfaces\n").metricsListener).toEqual({ port: 9100, host: undefined })
  })

  it("is global: it does not belong to the listener it follows, nor leave local-only mode", () => {
    const c = ok("metrics_listener 9100\n")
    expect(c.localOnly).toBe(true)
    expect(c.listeners.map((l) => l.port)).toEqual([1883, 1883])
    const l = ok("listener 1883\nmetrics_listener 9100\nlistener 1884\n")
    expect(l.listeners.map((x) => x.port)).toEqual([1883, 1884])
    expect(l.metricsListener?.port).toBe(9100)
  })

  it("a later line replaces an earlier one", () => {
    expect(ok("metrics_listener 9100\nmetrics_listener 9200 10.0.0.1\n").metricsListener).toEqual({ port: 9200, host: "10.0.0.1" })
  })

  it("bad values are errors at file:line", () => {
    expect(fails("metrics_listener\nmetrics_listener 0\nmetrics_listener 65536\nmetrics_listener http\nmetrics_listener 1 a b\n")).toEqual([
      "t.conf:1 metrics_listener: missing port",
      "t.conf:2 metrics_listener: invalid port 0: must be between 1 and 65535",
      "t.conf:3 metrics_listener: invalid port 65536: must be between 1 and 65535",
      't.conf:4 metrics_listener: invalid value "http": expected an integer',
      't.conf:5 metrics_listener: expected a port and an optional address, got 3 values: "1 a b"'
    ])
  })

  it.prop(
    "accepts exactly the ports 1..65535",
    [fc.integer({ min: -100, max: 70_000 })],
    ([port]) => {
      const r = parse(`metrics_listener ${port}\n`)
      if (port >= 1 && port <= 65535) expect(Either.getOrThrow(r).metricsListener).toEqual({ port, host: undefined })
      else expect(Either.isLeft(r)).toBe(true)
    },
    { fastCheck: { seed: 9100, numRuns: 200 } }
  )

  it("is listed as a known option with status Midge-only", () => {
    expect(knownOptions.filter((o) => o.status === "Midge-only")).toContainEqual({ name: "metrics_listener", status: "Midge-only" })
  })
})
