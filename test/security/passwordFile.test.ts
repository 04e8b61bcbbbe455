/**
 * The password file reader: Mosquitto's line rules (comments, blank lines,
 * trimming, the password ending at the next ':'), errors with line numbers,
 * and a property: a generated file with comments and blank lines reads back
 * as the users it was made from, each on its line.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as fc from "fast-check"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { decodePasswordFile, formatEntry, parseLines, parsePasswordFile, readPasswordFile } from "../../src/security/passwordFile.js"
import { hashPassword, verifyPassword } from "../../src/security/passwordHash.js"

const HASH = "$7$101$Cb/5ekE0lUDwkTZ6$s5mDQ0GPbvR8HjCs/UT3Zmy0t7+P8nQ2NP0Op4Q01rDphOswAUN3rv/1RCG3chNsj9vi1qDVaSNI1pEHkGe1Kg=="

describe("passwordFile", () => {
  it("comments, blank lines, CRLF, blanks around fields; the password ends at the next ':'", () => {
    const text = `# users\n\nalice:secret\r\n  bob  :  pw with spaces  \n\t# indented comment\ncarol:pw:ignored\n`
    const { entries, errors } = parsePasswordFile(text)
    expect(errors).toEqual([])
    expect(entries).toEqual([
      { line: 3, username: "alice", password: "secret" },
      { line: 4, username: "bob", password: "pw with spaces" },
      { line: 6, username: "carol", password: "pw" }
    ])
  })

  it("bad lines are reported with their numbers: no ':', empty username, empty password, duplicates", () => {
    const text = "alice:a\nnocolon\n:pw\nbob:\nalice:b\n"
    const { entries, errors } = parsePasswordFile(text)
    expect(entries.map((e) => e.username)).toEqual(["alice"])
    expect(errors).toEqual([
      { line: 2, message: "missing ':' between username and password" },
      { line: 3, message: "empty username" },
      { line: 4, message: "empty password for user 'bob'" },
      { line: 5, message: "duplicate user 'alice' (first on line 1)" }
    ])
  })

  it("decodePasswordFile: hashes decode; a plain-text password is an error on its line", () => {
    const file = decodePasswordFile(`alice:${HASH}\nbob:plain\ncarol:$7$x$y$z\n`)
    expect([...file.users.keys()]).toEqual(["alice"])
    expect(file.users.get("alice")?.hash._tag).toBe("Sha512Pbkdf2")
    expect(file.errors.map((e) => e.line)).toEqual([2, 3])
    expect(file.errors[0].message).toMatch(/^user 'bob': /)
  })

  it("parseLines keeps every line's text for rewriting", () => {
    const text = "# c\n\nu:p\nbad\n"
    expect(parseLines(text).map((l) => [l._tag, l.line, l.text])).toEqual([
      ["Comment", 1, "# c"],
      ["Blank", 2, ""],
      ["Entry", 3, "u:p"],
      ["Invalid", 4, "bad"]
    ])
    expect(parseLines("")).toEqual([])
    expect(parseLines("u:p").length).toBe(1)
  })

  it.effect("readPasswordFile reads and decodes; a missing file is a PasswordFileError", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-pwfile-"))
      const file = path.join(dir, "pw")
      const hash = yield* hashPassword("s3cret")
      fs.writeFileSync(file, `# test\n${formatEntry("u", hash)}\n`)
      const read = yield* readPasswordFile(file)
      expect(read.errors).toEqual([])
      expect(yield* verifyPassword(read.users.get("u")!.hash, "s3cret")).toBe(true)
      const missing = yield* Effect.either(readPasswordFile(path.join(dir, "nope")))
      expect(Either.isLeft(missing) && missing.left._tag).toBe("PasswordFileError")
      fs.rmSync(dir, { recursive: true })
    })
  )

  const username = fc
    .string({ minLength: 1, maxLength: 12, unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyzABC0123456789_-.@é") })
    .filter((u) => !u.startsWith("#"))
  const password = fc.string({ minLength: 1, maxLength: 20, unit: fc.constantFrom(..."abcdefXYZ0123456789$/+=!?é ") }).map((p) => p.trim()).filter((p) => p.length > 0)
  const filler = fc.constantFrom("", "# a comment", "   ", "#user:pw", "\t")

  it.prop(
    "generated files (users, comments, blank lines, CRLF or LF) read back as their users on their lines",
    [fc.uniqueArray(fc.tuple(username, password), { selector: ([u]) => u, maxLength: 15 }), fc.array(filler, { maxLength: 15 }), fc.boolean(), fc.integer()],
    ([users, fillers, crlf, seed]) => {
      const lines: Array<string> = []
      const expected: Array<{ line: number; username: string; password: string }> = []
      let f = 0
      users.forEach(([u, p], i) => {
        if ((seed >> i) & 1 && f < fillers.length) lines.push(fillers[f++])
        expected.push({ line: lines.length + 1, username: u, password: p })
        lines.push(`${u}:${p}`)
      })
      while (f < fillers.length) lines.push(fillers[f++])
      const text = lines.join(crlf ? "\r\n" : "\n") + (lines.length > 0 ? "\n" : "")
      const parsed = parsePasswordFile(text)
      expect(parsed.errors).toEqual([])
      expect(parsed.entries).toEqual(expected)
    },
    { fastCheck: { seed: 20261125 } }
  )

  it.prop(
    "any text: every non-blank, non-comment line is an entry or an error, never both, never lost",
    [fc.array(fc.string({ maxLength: 20, unit: fc.constantFrom(..."ab:# \t$x") }), { maxLength: 20 })],
    ([rawLines]) => {
      const text = rawLines.map((l) => l.replace(/\n/g, "")).join("\n")
      const lines = parseLines(text)
      const { entries, errors } = parsePasswordFile(text)
      const counted = lines.filter((l) => l._tag === "Entry" || l._tag === "Invalid").length
      expect(entries.length + errors.length).toBe(counted)
      const entryLines = new Set(entries.map((e) => e.line))
      for (const e of errors) if (!e.message.startsWith("duplicate")) expect(entryLines.has(e.line)).toBe(false)
    },
    { fastCheck: { seed: 20261125 } }
  )
})
