/**
 * hasForbiddenCodePoint against a plain reading of mosquitto_validate_utf8's rules, code point by
 * code point: every code point of Unicode, alone and between ASCII letters.
 */
import { describe, expect, it } from "@effect/vitest"
import { hasForbiddenCodePoint } from "../../src/protocol/utf8.js"

const forbidden = (cp: number): boolean =>
  cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f) || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe

describe("hasForbiddenCodePoint", () => {
  it("refuses exactly the control characters and non-characters, in every plane", () => {
    const wrong: Array<string> = []
    for (let cp = 0; cp <= 0x10ffff; cp++) {
      if (cp >= 0xd800 && cp <= 0xdfff) continue // not a scalar value: never decoded from valid UTF-8
      const s = String.fromCodePoint(cp)
      if (hasForbiddenCodePoint(s) !== forbidden(cp) || hasForbiddenCodePoint(`a${s}b`) !== forbidden(cp)) wrong.push(cp.toString(16))
    }
    expect(wrong).toEqual([])
  })
})
