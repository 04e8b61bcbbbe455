/**
 * The `$CONTROL/` hook (src/security/control.ts): which topics are control
 * topics, per-broker registration, copies of the payload, a throwing handler
 * isolated from the others; plugins for listPlugins; the request envelope
 * both control APIs share. End to end (nothing routed, nothing retained):
 * test/security/dynsec/e2e.test.ts, test/security/brokerControl.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { silentLog } from "../../src/log/Log.js"
import { commandTable, type ControlMessage, controlPlugins, dispatchControl, isControlTopic, registerControlHandler, runControlRequest } from "../../src/security/control.js"
import { handleRequest } from "../../src/security/dynsec/commands.js"
import { initModel } from "../../src/security/dynsec/ctrl.js"
import type { JsonObject } from "../../src/security/dynsec/json.js"
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

  it("a handler registered for a plugin makes it one of controlPlugins (listPlugins), with its topics; it goes with its last handler", () => {
    const c = core()
    const plugin = { name: "p", version: "1.0" }
    const requests = registerControlHandler(c, "$CONTROL/p/v1", () => {}, plugin)
    const other = registerControlHandler(c, "$CONTROL/p/v2", () => {}, plugin)
    registerControlHandler(c, "$CONTROL/broker/v1", () => {})
    expect(controlPlugins(c)).toEqual([{ plugin, endpoints: ["$CONTROL/p/v1", "$CONTROL/p/v2"] }])
    requests()
    expect(controlPlugins(c)).toEqual([{ plugin, endpoints: ["$CONTROL/p/v2"] }])
    other()
    expect(controlPlugins(c)).toEqual([])
    expect(controlPlugins(core())).toEqual([])
  })

  it("only $CONTROL/ topics can be registered", () => {
    expect(() => registerControlHandler(core(), "control/x", () => {})).toThrow(/\$CONTROL\//)
  })
})

describe("the request envelope (Mosquitto's mosquitto_control_generic_callback)", () => {
  const table = commandTable([["getThing", "handler"], ["kick", "kicker"]])
  const request = (text: string, afterMalformed?: "stop" | "continue") => {
    const responses: Array<JsonObject> = []
    runControlRequest(text, table, (call) => responses.push({ command: call.name, ran: call.handler, ...(call.correlationData !== undefined ? { correlationData: call.correlationData } : {}) }), responses, afterMalformed)
    return responses
  }

  it("names compare as strcasecmp does: ASCII case only", () => {
    // U+212A KELVIN SIGN lowers to "k" in JavaScript, not in C
    expect(request('{"commands":[{"command":"GETthing"},{"command":"KICK"},{"command":"\u212Aick"}]}')).toEqual([
      { command: "getThing", ran: "handler" },
      { command: "kick", ran: "kicker" },
      { command: "\u212Aick", error: "Unknown command" }
    ])
  })

  it("Mosquitto 2.1 (the default) stops at a malformed element; Mosquitto 2.0's dynamic security goes on", () => {
    const text = JSON.stringify({ commands: [{ command: "getThing", correlationData: "c" }, [], { command: "getThing" }, { command: false }, { command: "getThing" }] })
    expect(request(text)).toEqual([
      { command: "getThing", ran: "handler", correlationData: "c" },
      { command: "Unknown command", error: "Command not an object", correlationData: "c" }
    ])
    expect(request(text, "continue")).toEqual([
      { command: "getThing", ran: "handler", correlationData: "c" },
      { command: "Unknown command", error: "Command not an object", correlationData: "c" },
      { command: "getThing", ran: "handler" },
      { command: "Unknown command", error: "Missing command" },
      { command: "getThing", ran: "handler" }
    ])
    // dynamic security's handler keeps 2.0's way (plugin.c's dynsec__handle_control)
    const record = { hash: new Uint8Array(64), salt: new Uint8Array(12), iterations: 101 }
    const out = handleRequest(initModel("admin", record), JSON.stringify({ commands: [7, {}, { command: "listRoles", correlationData: "x" }, "y"] }), { hashPassword: () => record })
    expect(out.responses).toEqual([
      { command: "Unknown command", error: "Command not an object" },
      { command: "Unknown command", error: "Missing command" },
      { command: "listRoles", data: { totalCount: 1, roles: ["admin"] }, correlationData: "x" },
      { command: "Unknown command", error: "Command not an object", correlationData: "x" }
    ])
  })

  it("a correlationData that is not a string ends the request either way", () => {
    for (const mode of ["stop", "continue"] as const) {
      expect(request(JSON.stringify({ commands: [{ command: "nope", correlationData: 1 }, { command: "getThing" }] }), mode)).toEqual([
        { command: "nope", error: "Invalid correlationData data type." }
      ])
    }
  })
})
