/**
 * The `$CONTROL/` hook (src/security/control.ts): which topics are control
 * topics, per-broker registration, copies of the payload, a throwing handler
 * isolated from the others. End to end (nothing routed, nothing retained):
 * test/security/dynsec/e2e.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { silentLog } from "../../src/log/Log.js"
import { type ControlMessage, dispatchControl, isControlTopic, registerControlHandler } from "../../src/security/control.js"
import { Core, defaultSettings } from "../../src/session/Core.js"

const core = () => new Core(defaultSettings, silentLog(), () => 0)

const message = (topic: string, payload: Buffer): ControlMessage => ({ topic, payload, qos: 1, retain: false, clientId: "c", username: undefined })

describe("control topics", () => {
  it("a control topic starts with $CONTROL/ (Mosquitto's strncmp(topic, \"$CONTROL/\", 9))", () => {
    expect(isControlTopic("$CONTROL/dynamic-security/v1")).toBe(true)
    expect(isControlTopic("$CONTROL/")).toBe(true)
    expect(isControlTopic("$CONTROL")).toBe(false)
    expect(isControlTopic("$control/x")).toBe(false)
    expect(isControlTopic("a/$CONTROL/x")).toBe(false)
  })

  it.prop("agrees with startsWith for any topic", [fc.oneof(fc.string(), fc.string().map((s) => `$CONTROL/${s}`), fc.string().map((s) => `$CONTROL${s}`))], ([topic]) => {
    expect(isControlTopic(topic)).toBe(topic.startsWith("$CONTROL/"))
  }, { fastCheck: { seed: 42 } })

  it("handlers get their topic only, on their broker only, with their own copy of the payload; unregistering stops them", () => {
    const a = core()
    const b = core()
    const got: Array<ControlMessage> = []
    const unregister = registerControlHandler(a, "$CONTROL/x/v1", (m) => got.push(m))
    const chunk = Buffer.from("request")
    expect(dispatchControl(a, message("$CONTROL/x/v1", chunk), () => {})).toBe(1)
    expect(dispatchControl(a, message("$CONTROL/x/v1/response", chunk), () => {})).toBe(0)
    expect(dispatchControl(b, message("$CONTROL/x/v1", chunk), () => {})).toBe(0)
    chunk.write("XXXXXXX")
    expect(got.map((m) => m.payload.toString())).toEqual(["request"])
    unregister()
    expect(dispatchControl(a, message("$CONTROL/x/v1", chunk), () => {})).toBe(0)
    expect(got).toHaveLength(1)
  })

  it("a throwing handler is reported and the others still run", () => {
    const c = core()
    const errors: Array<unknown> = []
    const got: Array<string> = []
    registerControlHandler(c, "$CONTROL/x/v1", () => {
      throw new Error("boom")
    })
    registerControlHandler(c, "$CONTROL/x/v1", (m) => got.push(m.payload.toString()))
    expect(dispatchControl(c, message("$CONTROL/x/v1", Buffer.from("p")), (e) => errors.push(e))).toBe(2)
    expect(got).toEqual(["p"])
    expect(String(errors[0])).toContain("boom")
  })

  it("only $CONTROL/ topics can be registered", () => {
    expect(() => registerControlHandler(core(), "control/x", () => {})).toThrow(/\$CONTROL\//)
  })
})
