/**
 * Mosquitto's `password_file`: one `username:password` per line, where the
 * password is a hash (see passwordHash.ts) or, before `mosquitto_passwd -U`,
 * plain text. As Mosquitto's broker reads it: a line starting with `#` is a
 * comment, blank lines are skipped, blanks around the username and the
 * password are trimmed, the password ends at the next `:`, and a username
 * may appear only once. Unlike Mosquitto, which skips most bad lines
 * silently, every bad line is reported with its line number.
 *
 * `parseLines` keeps every line (comments too) so `midge passwd` can
 * rewrite a file without losing what it does not touch.
 */
import * as fs from "node:fs"
import { Data, Effect, Either } from "effect"
import { formatPasswordHash, parsePasswordHash, type PasswordHash } from "./passwordHash.js"

/** Mosquitto rejects longer usernames and passwords (an MQTT string's limit). */
export const MAX_FIELD_LENGTH = 65535

export type PasswordFileLine =
  | { readonly _tag: "Blank"; readonly line: number; readonly text: string }
  | { readonly _tag: "Comment"; readonly line: number; readonly text: string }
  | { readonly _tag: "Entry"; readonly line: number; readonly text: string; readonly username: string; readonly password: string }
  | { readonly _tag: "Invalid"; readonly line: number; readonly text: string; readonly message: string }

export interface PasswordFileIssue {
  readonly line: number
  readonly message: string
}

/** A user whose password field is still text (plain or hashed). */
export interface PasswordEntry {
  readonly line: number
  readonly username: string
  readonly password: string
}

/** A user whose password field decoded as a hash. */
export interface HashedEntry {
  readonly line: number
  readonly username: string
  readonly hash: PasswordHash
}

export interface PasswordFile {
  readonly users: ReadonlyMap<string, HashedEntry>
  readonly errors: ReadonlyArray<PasswordFileIssue>
}

export class PasswordFileError extends Data.TaggedError("PasswordFileError")<{
  readonly reason: "Read"
  readonly path: string
  readonly message: string
}> {}

/** Mosquitto's misc__trimblanks: isspace() at both ends. */
const trimBlanks = (s: string): string => s.replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, "")

const classify = (text: string, line: number): PasswordFileLine => {
  const trimmed = trimBlanks(text)
  if (trimmed.length === 0) return { _tag: "Blank", line, text }
  if (trimmed.charCodeAt(0) === 35 /* # */) return { _tag: "Comment", line, text }
  const colon = text.indexOf(":")
  if (colon < 0) return { _tag: "Invalid", line, text, message: "missing ':' between username and password" }
  const username = trimBlanks(text.slice(0, colon))
  const next = text.indexOf(":", colon + 1)
  const password = trimBlanks(next < 0 ? text.slice(colon + 1) : text.slice(colon + 1, next))
  if (username.length === 0) return { _tag: "Invalid", line, text, message: "empty username" }
  if (password.length === 0) return { _tag: "Invalid", line, text, message: `empty password for user '${username}'` }
  if (username.length > MAX_FIELD_LENGTH) return { _tag: "Invalid", line, text, message: "username too long" }
  if (password.length > MAX_FIELD_LENGTH) return { _tag: "Invalid", line, text, message: `password too long for user '${username}'` }
  return { _tag: "Entry", line, text, username, password }
}

/** Every line of the file, numbered from 1; a final newline does not make an extra line. */
export const parseLines = (text: string): Array<PasswordFileLine> => {
  const raw = text.split("\n")
  if (raw.length > 0 && raw[raw.length - 1] === "") raw.pop()
  const lines: Array<PasswordFileLine> = new Array(raw.length)
  for (let i = 0; i < raw.length; i++) {
    const l = raw[i]
    lines[i] = classify(l.endsWith("\r") ? l.slice(0, -1) : l, i + 1)
  }
  return lines
}

/** The users of a file with their password fields as text, and the bad lines (duplicates included). */
export const parsePasswordFile = (
  text: string
): { readonly entries: ReadonlyArray<PasswordEntry>; readonly errors: ReadonlyArray<PasswordFileIssue> } => {
  const entries: Array<PasswordEntry> = []
  const errors: Array<PasswordFileIssue> = []
  const seen = new Map<string, number>()
  for (const l of parseLines(text)) {
    if (l._tag === "Invalid") errors.push({ line: l.line, message: l.message })
    else if (l._tag === "Entry") {
      const first = seen.get(l.username)
      if (first !== undefined) errors.push({ line: l.line, message: `duplicate user '${l.username}' (first on line ${first})` })
      else {
        seen.set(l.username, l.line)
        entries.push({ line: l.line, username: l.username, password: l.password })
      }
    }
  }
  return { entries, errors }
}

/** The users of a file with decoded hashes; a password that is not a valid hash is an error on its line. */
export const decodePasswordFile = (text: string): PasswordFile => {
  const parsed = parsePasswordFile(text)
  const errors = parsed.errors.slice()
  const users = new Map<string, HashedEntry>()
  for (const entry of parsed.entries) {
    const hash = parsePasswordHash(entry.password)
    if (Either.isLeft(hash)) errors.push({ line: entry.line, message: `user '${entry.username}': ${hash.left.message}` })
    else users.set(entry.username, { line: entry.line, username: entry.username, hash: hash.right })
  }
  errors.sort((a, b) => a.line - b.line)
  return { users, errors }
}

/** Reads and decodes a password file. */
export const readPasswordFile = (path: string): Effect.Effect<PasswordFile, PasswordFileError> =>
  Effect.tryPromise({
    try: () => fs.promises.readFile(path, "utf8"),
    catch: (error) => new PasswordFileError({ reason: "Read", path, message: `Unable to open pwfile "${path}": ${(error as Error).message}` })
  }).pipe(Effect.map(decodePasswordFile))

/** One line as Mosquitto writes it (without the newline). */
export const formatEntry = (username: string, hash: PasswordHash): string => `${username}:${formatPasswordHash(hash)}`
