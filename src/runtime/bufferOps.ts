/**
 * The Buffer methods of the message path, called through the known functions instead of loaded
 * from each Buffer (as `codeUnitAt` does for `charCodeAt`, src/runtime/codeUnit.ts).
 *
 * Buffers reach the same code with several hidden classes (a socket read's copy, a slice of
 * Node's pool, a view on another buffer, a frame of our own), and the optimized PUBLISH parser and
 * encoder loaded `subarray`, `latin1Slice`, `write` / `utf8Write` and `copy` through the generic
 * `LoadIC` on every message; `copy` and `write` also check their arguments in JavaScript first
 * (docs/performance.md, "Twenty-first round"). Each function here is the method's own work for
 * arguments the callers have already bounded: they give what the method gives there.
 */
import { Buffer } from "node:buffer"

interface BufferMethods {
  subarray(start: number, end?: number): Buffer
  latin1Slice(start: number, end: number): string
  utf8Slice(start: number, end: number): string
  utf8Write(text: string, offset: number, length: number): number
}

const methods = Buffer.prototype as unknown as BufferMethods
const subarray = methods.subarray
const latin1Slice = methods.latin1Slice
const utf8Slice = methods.utf8Slice
const utf8Write = methods.utf8Write
const set = Uint8Array.prototype.set
const typedArray = Object.getPrototypeOf(Uint8Array.prototype) as object
const bufferGetter = Object.getOwnPropertyDescriptor(typedArray, "buffer")!.get!
const byteOffsetGetter = Object.getOwnPropertyDescriptor(typedArray, "byteOffset")!.get!

/** `buf.buffer`: the ArrayBuffer under it (Node's pool, for a small Buffer). */
export const arrayBufferOf = (buf: Uint8Array): ArrayBuffer => bufferGetter.call(buf) as ArrayBuffer

/** `buf.byteOffset`. */
export const byteOffsetOf = (buf: Uint8Array): number => byteOffsetGetter.call(buf) as number

/** `buf.subarray(start, end)`: a Buffer on the same memory. */
export const sliceOf = (buf: Buffer, start: number, end: number): Buffer => subarray.call(buf, start, end)

/** `buf.toString("latin1", start, end)` for `0 <= start <= end <= buf.length`. */
export const latin1Of = (buf: Buffer, start: number, end: number): string => latin1Slice.call(buf, start, end)

/** `buf.toString("utf8", start, end)` for `0 <= start <= end <= buf.length`. */
export const utf8Of = (buf: Buffer, start: number, end: number): string => utf8Slice.call(buf, start, end)

/** `buf.write(text, at, "utf8")` for `0 <= at <= buf.length`: the bytes written. */
export const writeUtf8At = (buf: Buffer, text: string, at: number): number => utf8Write.call(buf, text, at, buf.length - at)

/** `source.copy(target, at)` where all of `source` fits in `target` from `at`. */
export const copyInto = (target: Uint8Array, source: Uint8Array, at: number): void => set.call(target, source, at)
