/**
 * Mosquitto's `psk_file`: `identity:key` per line, the key in hexadecimal
 * without `0x`. Read like a password file (`#` comments, blanks trimmed, the
 * key ends at the next `:`, lines without a key skipped with a warning); as
 * in Mosquitto (`psk__file_parse`), a non-hexadecimal key is an error, and the key bytes are what
 * `mosquitto__hex2bin` makes of the text (an odd digit count gets a leading 0).
 */
import * as fs from "node:fs"
import { Data, Effect, Either } from "effect"
import { parsePasswordFile } from "./passwordFile.js"

export class PskFileError extends Data.TaggedError("PskFileError")<{
  readonly reason: "Read" | "Invalid"
  readonly file: string
  /** 0 when the file could not be read */
  readonly line: number
  readonly message: string
}> {}

export interface PskFile {
  readonly keys: ReadonlyMap<string, Buffer>
  /** skipped lines (no `:`, no key, a repeated identity) */
  readonly warnings: ReadonlyArray<{ readonly line: number; readonly message: string }>
}

const HEX = /^[0-9a-fA-F]+$/

/** Largest key OpenSSL accepts (PSK_MAX_PSK_LEN). */
export const MAX_PSK_BYTES = 512

export const hexToKey = (hex: string): Buffer => Buffer.from(hex.length % 2 === 1 ? `0${hex}` : hex, "hex")

export const parsePskFile = (text: string, file = "psk_file"): Either.Either<PskFile, PskFileError> => {
  const parsed = parsePasswordFile(text)
  const keys = new Map<string, Buffer>()
  const warnings: Array<{ line: number; message: string }> = []
  // pwfile__parse skips these lines with a warning (an empty key included)
  for (const issue of parsed.errors) warnings.push(issue)
  for (const entry of parsed.entries) {
    if (!HEX.test(entry.password)) {
      return Either.left(
        new PskFileError({ reason: "Invalid", file, line: entry.line, message: `psk for identity "${entry.username}" contains non-hexadecimal characters` })
      )
    }
    const key = hexToKey(entry.password)
    if (key.length > MAX_PSK_BYTES) {
      return Either.left(new PskFileError({ reason: "Invalid", file, line: entry.line, message: `psk for identity "${entry.username}" is longer than ${MAX_PSK_BYTES} bytes` }))
    }
    keys.set(entry.username, key)
  }
  return Either.right({ keys, warnings })
}

export const readPskFile = (path: string): Effect.Effect<PskFile, PskFileError> =>
  Effect.tryPromise({
    try: () => fs.promises.readFile(path, "utf8"),
    catch: (error) => new PskFileError({ reason: "Read", file: path, line: 0, message: `unable to open psk_file "${path}": ${(error as Error).message}` })
  }).pipe(Effect.flatMap((text) => parsePskFile(text, path)))
