/**
 * `codeUnitAt` (src/runtime/codeUnit.ts) is `charCodeAt` called through a known function, so
 * that topic validation and matching read characters without a property load on strings of
 * every representation V8 has. It must answer what `charCodeAt` answers, for every kind of
 * string and every index, out-of-range ones included (NaN).
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { codeUnitAt } from "../../src/runtime/codeUnit.js"

/** the same text in the representations a broker's topics arrive in */
const representations = (text: string): ReadonlyArray<string> => {
  const bytes = Buffer.from(text, "utf16le")
  const flat = bytes.toString("utf16le")
  const half = text.length >> 1
  const keyed = bytes.toString("utf16le")
  void ({ [keyed]: 1 }) // used as a property key: internalized, the original becomes a "thin" string
  return [
    text,
    flat,
    text.slice(0, half) + text.slice(half), // concatenated
    (`${"x".repeat(20)}${text}`).slice(20), // sliced
    keyed,
    Buffer.from(text, "latin1").toString("latin1") // one-byte where the text allows
  ]
}

describe("codeUnitAt", () => {
  it.prop(
    "answers what charCodeAt answers, on every representation and at every index",
    [fc.string({ unit: "binary", maxLength: 40 }), fc.integer({ min: -3, max: 45 })],
    ([text, index]) => {
      for (const s of representations(text)) {
        expect(Object.is(codeUnitAt(s, index), s.charCodeAt(index))).toBe(true)
        for (let i = 0; i < s.length; i++) expect(codeUnitAt(s, i)).toBe(s.charCodeAt(i))
      }
    }
  )

  it("reads topics' characters as the validation needs them", () => {
    expect(codeUnitAt("$SYS/broker", 0)).toBe(36)
    expect(codeUnitAt("a/\u{1F600}", 2)).toBe(0xd83d)
    expect(codeUnitAt("a/\u{1F600}", 3)).toBe(0xde00)
    expect(codeUnitAt("", 0)).toBeNaN()
  })
})
