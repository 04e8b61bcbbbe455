/**
 * `midge passwd`: files it writes are used by the real mosquitto (right
 * password in, wrong password out), files mosquitto_passwd writes are read
 * by Midge's hash module, and each flag, message and exit code as
 * mosquitto_passwd's.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { vi } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { decodePasswordFile } from "../../src/security/passwordFile.js"
import { verifyPassword } from "../../src/security/passwordHash.js"
import { midge, run, startMosquitto, tempDir } from "./helpers.js"

// each test starts several processes (Node start-ups, mosquitto, openssl): generous bounds for a loaded machine
vi.setConfig({ testTimeout: 90_000 })

const read = (file: string) => fs.readFileSync(file, "utf8")

describe("midge passwd", () => {
  it.scopedLive("-c -b, -b, -H sha512, -I: the real mosquitto lets the users in with their passwords and no one with a wrong one", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "passwords")
      expect(yield* midge("passwd", ["-c", "-b", file, "alice", "secret"])).toEqual({ code: 0, stdout: "", stderr: "" })
      expect((yield* midge("passwd", ["-b", file, "bob", "ünïcödé pässwörd"])).code).toBe(0)
      expect((yield* midge("passwd", ["-H", "sha512", "-b", file, "carol", "s3cret"])).code).toBe(0)
      expect((yield* midge("passwd", ["-I", "1000", "-b", file, "dave", "x"])).code).toBe(0)
      expect(read(file)).toMatch(/^alice:\$7\$101\$.{16}\$.{88}\nbob:\$7\$101\$.{16}\$.{88}\ncarol:\$6\$.{16}\$.{88}\ndave:\$7\$1000\$.{16}\$.{88}\n$/)
      expect(fs.statSync(file).mode & 0o777).toBe(0o600)
      const m = yield* startMosquitto(["allow_anonymous false", `password_file ${file}`])
      const pub = (user: string, password: string) => run("mosquitto_pub", ["-p", String(m.port), "-u", user, "-P", password, "-t", "t", "-m", "x"])
      for (const [user, password] of [["alice", "secret"], ["bob", "ünïcödé pässwörd"], ["carol", "s3cret"], ["dave", "x"]]) {
        expect((yield* pub(user, password)).code).toBe(0)
        expect((yield* pub(user, password + "!")).code).toBe(5)
      }
      expect((yield* pub("mallory", "secret")).code).toBe(5)
    })
  )

  it.scopedLive("files written by mosquitto_passwd (-b, -H sha512, -U) are read and verified by Midge's hash module", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "theirs")
      expect((yield* run("mosquitto_passwd", ["-c", "-b", file, "alice", "correct horse"])).code).toBe(0)
      expect((yield* run("mosquitto_passwd", ["-H", "sha512", "-b", file, "bob", "battery"])).code).toBe(0)
      const plain = path.join(dir, "plain")
      fs.writeFileSync(plain, "carol:staple\n")
      expect((yield* run("mosquitto_passwd", ["-U", plain])).code).toBe(0)
      const users = decodePasswordFile(read(file) + read(plain))
      expect(users.errors).toEqual([])
      for (const [user, password] of [["alice", "correct horse"], ["bob", "battery"], ["carol", "staple"]]) {
        expect(yield* verifyPassword(users.users.get(user)!.hash, password)).toBe(true)
        expect(yield* verifyPassword(users.users.get(user)!.hash, password.toUpperCase())).toBe(false)
      }
    })
  )

  it.scopedLive("-D deletes a user (a missing one: Mosquitto's warning, exit 1); updating a user replaces its line in place", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "pw")
      fs.writeFileSync(file, "# managed by midge passwd\n\nalice:$6$S4B7YEwMmWpscghr$fpGV0z+fdh2c/b7eeEOQPsMvEB7LXUCCBewx7A0N7QLP3PIE3SbibZjTKgzzd/lliZ8NvEanZQbjhWpX73+JCg==\nbob:$6$S4B7YEwMmWpscghr$fpGV0z+fdh2c/b7eeEOQPsMvEB7LXUCCBewx7A0N7QLP3PIE3SbibZjTKgzzd/lliZ8NvEanZQbjhWpX73+JCg==\n")
      expect((yield* midge("passwd", ["-D", file, "alice"])).code).toBe(0)
      expect(read(file)).toMatch(/^# managed by midge passwd\n\nbob:\$6\$/)
      expect(yield* midge("passwd", ["-D", file, "alice"])).toEqual({ code: 1, stdout: "", stderr: "Warning: User alice not found in password file.\n" })
      expect((yield* midge("passwd", ["-b", file, "bob", "new"])).code).toBe(0)
      const lines = read(file).split("\n")
      expect(lines[2]).toMatch(/^bob:\$7\$101\$/)
      const users = decodePasswordFile(read(file))
      expect(yield* verifyPassword(users.users.get("bob")!.hash, "new")).toBe(true)
    })
  )

  it.scopedLive("-U hashes a plain-text file (and leaves hashes alone); the real mosquitto accepts the result", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "plain")
      const hashed = "bob:$6$S4B7YEwMmWpscghr$fpGV0z+fdh2c/b7eeEOQPsMvEB7LXUCCBewx7A0N7QLP3PIE3SbibZjTKgzzd/lliZ8NvEanZQbjhWpX73+JCg=="
      fs.writeFileSync(file, `alice:wonderland\n${hashed}\n`)
      expect((yield* midge("passwd", ["-U", file])).code).toBe(0)
      const text = read(file)
      expect(text).toMatch(/^alice:\$7\$101\$/)
      expect(text).toContain(`${hashed}\n`)
      const m = yield* startMosquitto(["allow_anonymous false", `password_file ${file}`])
      expect((yield* run("mosquitto_pub", ["-p", String(m.port), "-u", "alice", "-P", "wonderland", "-t", "t", "-m", "x"])).code).toBe(0)
      expect((yield* run("mosquitto_pub", ["-p", String(m.port), "-u", "bob", "-P", "s3cret", "-t", "t", "-m", "x"])).code).toBe(0)
    })
  )

  it.scopedLive("interactive: Password / Reenter password from stdin; mismatch exits 2, an empty or missing one exits 1 (as mosquitto_passwd)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "pw")
      const ok = yield* midge("passwd", ["-c", file, "eve"], { input: "hidden\nhidden\n" })
      expect(ok).toEqual({ code: 0, stdout: "Password: \nReenter password: \n", stderr: "" })
      expect(yield* verifyPassword(decodePasswordFile(read(file)).users.get("eve")!.hash, "hidden")).toBe(true)
      // a mismatch; an empty first one; an empty second one; the input ending before the second
      for (const [input, code] of [["a\nb\n", 2], ["\n\n", 1], ["a\n\n", 1], ["a\n", 1]] as const) {
        const theirs = yield* run("mosquitto_passwd", ["-c", path.join(dir, "theirs"), "eve"], { input })
        const ours = yield* midge("passwd", ["-c", path.join(dir, "ours"), "eve"], { input })
        expect(ours).toEqual(theirs)
        expect(ours.code).toBe(code)
      }
      expect((yield* midge("passwd", [file, "frank"], { input: "pw\npw\n" })).code).toBe(0)
      expect(decodePasswordFile(read(file)).users.has("frank")).toBe(true)
    })
  )

  it.scopedLive("-H argon2id writes Mosquitto 2.1's PHC strings, verified by Midge's hash module", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "pw")
      expect((yield* midge("passwd", ["-H", "argon2id", "-c", "-b", file, "alice", "secret"], { timeoutMs: 30_000 })).code).toBe(0)
      expect(read(file)).toMatch(/^alice:\$argon2id\$v=19\$m=47104,t=1,p=1\$[A-Za-z0-9+/]{86}\$[A-Za-z0-9+/]{86}\n$/)
      expect(yield* verifyPassword(decodePasswordFile(read(file)).users.get("alice")!.hash, "secret")).toBe(true)
    }), 60_000
  )

  describe("errors as mosquitto_passwd's", () => {
    const cases: ReadonlyArray<ReadonlyArray<string>> = [
      [],
      ["-H"],
      ["-H", "md5", "f", "u"],
      ["-I"],
      ["-I", "0", "f", "u"],
      ["-c", "-D", "f", "u"],
      ["-c", "-U", "f"],
      ["-D", "-U", "f"],
      ["-b", "-D", "f", "u"],
      ["-c", "-b", "f", "u"],
      ["-c", "f"],
      ["-D", "f"],
      ["-U"],
      ["-U", "f", "extra"],
      ["-b", "f", "u"],
      ["f"],
      ["-b", "f", "us:er", "pw"],
      ["-b", "f", "us\u0001er", "pw"],
      ["-b", "/nonexistent/dir/file", "u", "pw"],
      ["-D", "/nonexistent/dir/file", "u"],
      ["-c", "-b", "/nonexistent/dir/file", "u", "pw"]
    ]
    for (const args of cases) {
      it.live(`mosquitto_passwd ${args.join(" ")}`, () =>
        Effect.gen(function* () {
          const [theirs, ours] = yield* Effect.all([run("mosquitto_passwd", args), midge("passwd", args)], { concurrency: 2 })
          expect(ours.code).toBe(theirs.code)
          if (theirs.stdout.startsWith("mosquitto_passwd is a tool")) expect(ours.stdout).toContain("midge passwd")
          else expect(ours.stderr).toBe(theirs.stderr)
        })
      )
    }

    it.scopedLive("a corrupt line: 'Corrupt password file at line N', exit 1, and the file is left as it was", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = path.join(dir, "pw")
        fs.writeFileSync(file, "alice:x\nnot a user line\n")
        expect(yield* midge("passwd", ["-b", file, "bob", "pw"])).toEqual({ code: 1, stdout: "", stderr: "Error: Corrupt password file at line 2.\n" })
        expect(read(file)).toBe("alice:x\nnot a user line\n")
      })
    )
  })
})
