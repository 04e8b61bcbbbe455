/**
 * psk_file as Mosquitto reads it (pwfile__parse + psk__file_parse), keys as
 * mosquitto__hex2bin makes them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { hexToKey, parsePskFile } from "../../src/security/pskFile.js"

describe("psk_file", () => {
  it("reads Mosquitto's pskfile.example; comments, blanks around fields", () => {
    const r = Either.getOrThrow(parsePskFile("# comment\nid:deadbeef\n easy : 12345 \n\n"))
    expect([...r.keys.entries()]).toEqual([
      ["id", Buffer.from([0xde, 0xad, 0xbe, 0xef])],
      ["easy", Buffer.from([0x01, 0x23, 0x45])]
    ])
    expect(r.warnings).toEqual([])
  })

  it("hex2bin: an odd number of digits gets a leading zero; leading zero bytes are kept; case does not matter", () => {
    expect(hexToKey("abc")).toEqual(Buffer.from([0x0a, 0xbc]))
    expect(hexToKey("0001")).toEqual(Buffer.from([0x00, 0x01]))
    expect(hexToKey("00abc")).toEqual(Buffer.from([0x00, 0x0a, 0xbc]))
    expect(hexToKey("DEADbeef")).toEqual(Buffer.from([0xde, 0xad, 0xbe, 0xef]))
  })

  it("a non-hexadecimal key is an error with its line; lines without a key are skipped with a warning", () => {
    const bad = parsePskFile("a:00\nb:0x12\n", "p")
    expect(Either.isLeft(bad) && bad.left).toMatchObject({ reason: "Invalid", file: "p", line: 2 })
    const skipped = Either.getOrThrow(parsePskFile("nocolon\nempty:\na:01\na:02\n"))
    expect([...skipped.keys.keys()]).toEqual(["a"])
    expect(skipped.keys.get("a")).toEqual(Buffer.from([1]))
    expect(skipped.warnings.map((w) => w.line)).toEqual([1, 2, 4])
  })
})
