/**
 * `midge passwd`: mosquitto_passwd's command line, messages and exit codes
 * over src/security/passwordHash.ts and passwordFile.ts. Files it writes
 * are read by Mosquitto (2.0 for sha512 and sha512-pbkdf2, 2.1 for
 * argon2id). Two departures, both to keep data: comments and blank lines
 * are kept instead of being reported as corrupt, and a file is replaced in
 * one rename (never half-written); `-U` leaves passwords that are already
 * hashes alone instead of hashing them again.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Either } from "effect"
import { parseLines, type PasswordFileLine } from "../../security/passwordFile.js"
import { formatPasswordHash, hashPassword, parsePasswordHash } from "../../security/passwordHash.js"
import { helpText } from "./help.js"
import type { PasswdParse } from "./passwdArgs.js"
import type { ToolEnv } from "./tool.js"

/** Lines of stdin, one at a time (with echo off on a terminal), as fgets reads them. */
const lineReader = (stdin: NodeJS.ReadableStream) => {
  let buffered = ""
  let ended = false
  const waiting: Array<() => void> = []
  const wake = () => {
    for (const w of waiting.splice(0)) w()
  }
  const tty = (stdin as NodeJS.ReadStream).isTTY === true
  if (tty) (stdin as NodeJS.ReadStream).setRawMode(true)
  stdin.on("data", (c: Buffer | string) => {
    const s = c.toString()
    if (tty) {
      for (const ch of s) {
        if (ch === "\u0003") process.exit(0)
        else if (ch === "\r" || ch === "\n") buffered += "\n"
        else if (ch === "\u007f" || ch === "\b") buffered = buffered.endsWith("\n") ? buffered : buffered.slice(0, -1)
        else buffered += ch
      }
    } else buffered += s
    wake()
  })
  stdin.once("end", () => {
    ended = true
    wake()
  })
  const next = (): Promise<string | undefined> =>
    new Promise((resolve) => {
      const attempt = () => {
        const nl = buffered.indexOf("\n")
        if (nl >= 0) {
          const line = buffered.slice(0, nl)
          buffered = buffered.slice(nl + 1)
          resolve(line)
        } else if (ended) {
          const line = buffered
          buffered = ""
          resolve(line.length > 0 ? line : undefined)
        } else waiting.push(attempt)
      }
      attempt()
    })
  const close = () => {
    if (tty) (stdin as NodeJS.ReadStream).setRawMode(false)
    stdin.pause()
  }
  return { next, close }
}

/** mosquitto_passwd's get_password: "Password: ", "Reenter password: "; 1 for an empty (or missing) one, 2 for a mismatch. */
const getPassword = (env: ToolEnv): Effect.Effect<Either.Either<string, number>> =>
  Effect.promise(async () => {
    const reader = lineReader(env.stdin)
    try {
      env.io.stdout("Password: ")
      const first = (await reader.next()) ?? ""
      if (first.length === 0) {
        env.io.stderr("Error: Empty password.\n")
        return Either.left(1)
      }
      env.io.stdout("\nReenter password: ")
      const second = await reader.next()
      // an empty second one, or the input ending before it: as an empty first one (no newline either)
      if (second === undefined || second.length === 0) {
        env.io.stderr("Error: Empty password.\n")
        return Either.left(1)
      }
      env.io.stdout("\n")
      if (first !== second) {
        env.io.stderr("Error: Passwords do not match.\n")
        return Either.left(2)
      }
      return Either.right(first)
    } finally {
      reader.close()
    }
  })

const strerror = (e: unknown): string => {
  const code = (e as { code?: string }).code
  return code === "ENOENT" ? "No such file or directory" : code === "EACCES" ? "Permission denied" : code === "EISDIR" ? "Is a directory" : (e as Error).message
}

/** Replaces `file` in one rename, keeping its permissions (0600 for a new file). */
const writeFile = (file: string, text: string) =>
  Effect.try({
    try: () => {
      let mode = 0o600
      try {
        mode = fs.statSync(file).mode & 0o7777
      } catch {
        // a new file
      }
      const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`)
      fs.writeFileSync(tmp, text, { mode })
      fs.chmodSync(tmp, mode)
      fs.renameSync(tmp, file)
    },
    catch: (e) => e
  })

const isHashed = (password: string) => Either.isRight(parsePasswordHash(password))

export const runPasswd = (parsed: PasswdParse, env: ToolEnv): Effect.Effect<number> =>
  Effect.gen(function* () {
    if (parsed._tag === "Usage") {
      env.io.stdout(helpText("passwd", env.name))
      return 1
    }
    if (parsed._tag === "Error") {
      env.io.stderr(parsed.text)
      return 1
    }
    const args = parsed.args
    const hash = (password: string) =>
      Effect.map(hashPassword(password, { type: args.hashType, iterations: args.iterations }), formatPasswordHash)

    let password = args.password
    if (args.create) {
      if (password === undefined) {
        const got = yield* getPassword(env)
        if (Either.isLeft(got)) return got.left
        password = got.right
      }
      const line = `${args.username}:${yield* hash(password)}\n`
      const written = yield* Effect.either(writeFile(args.file, line))
      if (Either.isLeft(written)) {
        env.io.stderr(`Error: Unable to open file ${args.file} for writing. ${strerror(written.left)}.\n`)
        return 1
      }
      return 0
    }

    const text = yield* Effect.either(Effect.try(() => fs.readFileSync(args.file, "utf8")))
    if (Either.isLeft(text)) {
      env.io.stderr(`Error: Unable to open password file ${args.file}. ${strerror(text.left.error)}.\n`)
      return 1
    }
    const lines = parseLines(text.right)
    const corrupt = lines.find((l): l is Extract<PasswordFileLine, { _tag: "Invalid" }> => l._tag === "Invalid")
    if (corrupt !== undefined) {
      env.io.stderr(`Error: Corrupt password file at line ${corrupt.line}.\n`)
      return 1
    }
    const output: Array<string> = []
    if (args.delete) {
      let found = false
      for (const l of lines) {
        if (l._tag === "Entry" && l.username === args.username) found = true
        else output.push(l.text)
      }
      if (!found) {
        env.io.stderr(`Warning: User ${args.username} not found in password file.\n`)
        return 1
      }
    } else if (args.update) {
      for (const l of lines) {
        output.push(l._tag === "Entry" && !isHashed(l.password) ? `${l.username}:${yield* hash(l.password)}` : l.text)
      }
    } else {
      if (password === undefined) {
        const got = yield* getPassword(env)
        if (Either.isLeft(got)) return got.left
        password = got.right
      }
      const entry = `${args.username}:${yield* hash(password)}`
      let found = false
      for (const l of lines) {
        if (l._tag === "Entry" && l.username === args.username) {
          if (!found) output.push(entry)
          found = true
        } else output.push(l.text)
      }
      if (!found) output.push(entry)
    }
    const written = yield* Effect.either(writeFile(args.file, output.length > 0 ? output.join("\n") + "\n" : ""))
    if (Either.isLeft(written)) {
      env.io.stderr("Error occurred updating password file.\n")
      return 1
    }
    return 0
  })
