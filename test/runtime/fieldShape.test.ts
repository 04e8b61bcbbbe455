/**
 * `settleFields` (src/runtime/fieldShape.ts): a class's late-changing fields are made mutable on
 * its first object, so that the first connection to end does not throw away the optimized code
 * that builds connections, sessions and sockets. The values stay as they were; V8's side is checked in a Node
 * child with `--allow-natives-syntax` on the built modules (npm test builds first).
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath, pathToFileURL } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import { settleFields } from "../../src/runtime/fieldShape.js"

const child = fileURLToPath(new URL("./fieldShape.child.mjs", import.meta.url))
const dist = pathToFileURL(fileURLToPath(new URL("../../dist", import.meta.url))).href

describe("settleFields", () => {
  it("leaves every field's value as it was", () => {
    const object = { yes: true, no: false, zero: 0, big: 0x3fffffff, when: 1_795_815_212_000.5, none: undefined, nil: null, text: "x", ref: { a: 1 } }
    const ref = object.ref
    settleFields(object, ["yes", "no", "zero", "big", "none", "nil", "text", "ref"], ["when"])
    expect(object).toEqual({ yes: true, no: false, zero: 0, big: 0x3fffffff, when: 1_795_815_212_000.5, none: undefined, nil: null, text: "x", ref: { a: 1 } })
    expect(object.ref).toBe(ref)
  })

  it("refuses a name that is not an own field, instead of adding it", () => {
    const object: { a: number; b?: number } = { a: 1 }
    expect(() => settleFields(object, ["b"])).toThrow("settleFields: no field b")
    expect(() => settleFields(object, [], ["b"])).toThrow("settleFields: no field b")
    expect(Object.keys(object)).toEqual(["a"])
  })

  it("keeps optimized code that builds connections, sessions and sockets when a connection's end changes their fields", () => {
    const out = execFileSync(process.execPath, ["--allow-natives-syntax", "--no-concurrent-recompilation", child, dist], { encoding: "utf8" })
    const results = JSON.parse(out.trim().split("\n").at(-1)!) as Record<string, { optimized: boolean; stillOptimized: boolean }>
    // the control: without settleFields, V8 discards the code (what the broker did at its first disconnects)
    expect(results.plain).toEqual({ optimized: true, stillOptimized: false })
    expect(results.settled).toEqual({ optimized: true, stillOptimized: true })
    expect(results.session).toEqual({ optimized: true, stillOptimized: true })
    expect(results.socket).toEqual({ optimized: true, stillOptimized: true })
    expect(results.connectionObject).toEqual({ optimized: true, stillOptimized: true })
  })
})
