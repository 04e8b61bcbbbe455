/**
 * src/runtime/bufferOps.ts calls the Buffer methods of the message path through the known
 * functions. Each must give what the method gives, on Buffers of every origin the broker sees
 * (a slice of Node's pool, a Buffer of its own, a view on another, one made from an ArrayBuffer,
 * a concatenation), for the argument ranges its callers use.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { arrayBufferOf, byteOffsetOf, copyInto, latin1Of, sliceOf, utf8Of, writeUtf8At } from "../../src/runtime/bufferOps.js"

/** the same bytes in Buffers of different origins */
const origins = (bytes: Uint8Array): ReadonlyArray<Buffer> => {
  const pooled = Buffer.allocUnsafe(bytes.length)
  pooled.set(bytes)
  const large = Buffer.alloc(8192 + bytes.length) // beyond the pool: memory of its own
  large.set(bytes, 8192)
  const memory = new ArrayBuffer(bytes.length + 5)
  new Uint8Array(memory).set(bytes, 3)
  return [
    Buffer.from(bytes),
    pooled,
    large.subarray(8192),
    Buffer.from(memory, 3, bytes.length),
    Buffer.concat([Buffer.from(bytes.subarray(0, bytes.length >> 1)), Buffer.from(bytes.subarray(bytes.length >> 1))])
  ]
}

const range = (length: number, a: number, b: number): [number, number] => {
  const x = length === 0 ? 0 : a % (length + 1)
  const y = length === 0 ? 0 : b % (length + 1)
  return x <= y ? [x, y] : [y, x]
}

describe("bufferOps", () => {
  it.prop(
    "sliceOf, latin1Of, utf8Of, arrayBufferOf and byteOffsetOf give what subarray, toString('latin1'), toString('utf8'), buffer and byteOffset give",
    [fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.nat()],
    ([bytes, a, b]) => {
      for (const buf of origins(bytes)) {
        const [start, end] = range(buf.length, a, b)
        const view = sliceOf(buf, start, end)
        const expected = buf.subarray(start, end)
        expect(view).toBeInstanceOf(Buffer)
        expect(view).toStrictEqual(expected)
        expect(view.buffer).toBe(expected.buffer) // a view on the same memory, not a copy
        expect(view.byteOffset).toBe(expected.byteOffset)
        expect(latin1Of(buf, start, end)).toBe(buf.toString("latin1", start, end))
        // any bytes, split UTF-8 sequences and invalid ones included: replaced as toString replaces them
        expect(utf8Of(buf, start, end)).toBe(buf.toString("utf8", start, end))
        expect(arrayBufferOf(buf)).toBe(buf.buffer)
        expect(byteOffsetOf(buf)).toBe(buf.byteOffset)
      }
    }
  )

  it.prop(
    "writeUtf8At writes and counts what write(text, at, 'utf8') does, a short target included",
    [fc.string({ unit: "grapheme", maxLength: 40 }), fc.nat({ max: 120 }), fc.nat({ max: 120 })],
    ([text, size, at]) => {
      const offset = Math.min(at, size)
      const ours = Buffer.alloc(size, 0xee)
      const theirs = Buffer.alloc(size, 0xee)
      expect(writeUtf8At(ours, text, offset)).toBe(theirs.write(text, offset, "utf8"))
      expect(ours).toStrictEqual(theirs)
    }
  )

  it.prop(
    "copyInto copies what copy does when the source fits, overlapping memory included",
    [fc.uint8Array({ maxLength: 100 }), fc.nat({ max: 50 })],
    ([bytes, at]) => {
      for (const source of origins(bytes)) {
        const ours = Buffer.alloc(bytes.length + at + 3, 0xee)
        const theirs = Buffer.alloc(bytes.length + at + 3, 0xee)
        copyInto(ours, source, at)
        source.copy(theirs, at)
        expect(ours).toStrictEqual(theirs)
      }
      // within one buffer: the source overlaps where it is copied to
      const one = Buffer.from([...bytes, ...new Uint8Array(at)])
      const two = Buffer.from(one)
      copyInto(one, one.subarray(0, bytes.length), at)
      two.subarray(0, bytes.length).copy(two, at)
      expect(one).toStrictEqual(two)
    }
  )
})
