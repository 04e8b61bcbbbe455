/**
 * Mosquitto's password hashes: known answers written by Debian's
 * mosquitto_passwd 2.0.11 (and an argon2id PHC string from another
 * implementation), parse / format / make / verify round trips as
 * properties, and the malformed strings the parser must refuse.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as fc from "fast-check"
import {
  formatPasswordHash,
  hashPassword,
  parsePasswordHash,
  verifyPassword,
  type PasswordHash
} from "../../src/security/passwordHash.js"

/** Written by `mosquitto_passwd` 2.0.11 (Debian): user, password, line. */
const mosquittoVectors: ReadonlyArray<readonly [string, string]> = [
  ["correct horse", "$7$101$Cb/5ekE0lUDwkTZ6$s5mDQ0GPbvR8HjCs/UT3Zmy0t7+P8nQ2NP0Op4Q01rDphOswAUN3rv/1RCG3chNsj9vi1qDVaSNI1pEHkGe1Kg=="],
  ["ünïcödé pässwörd", "$7$101$DC0u8GvPkKDxqQDH$xUWQsoQpb04eaLzCq40jdXkaqibT+ZAwmxS9gYS6YQ9S+L3I1PKqmAfgKLNBxxu1hvCE6GlP/pu0LoS7i7hbpQ=="],
  ["s3cret", "$6$S4B7YEwMmWpscghr$fpGV0z+fdh2c/b7eeEOQPsMvEB7LXUCCBewx7A0N7QLP3PIE3SbibZjTKgzzd/lliZ8NvEanZQbjhWpX73+JCg=="],
  ["x", "$7$1000$0b9qbtMdH+dh9eQc$Fj2cWP4VoaS1ssbBqeyFKOI5uSy4gxjBPATGR4zdluHNVmyNMLmMih8It3La5SuEKucZD1c6bkh+5U6MVrCsRQ=="]
]

const parse = (s: string): PasswordHash => Either.getOrThrow(parsePasswordHash(s))

describe("passwordHash", () => {
  describe("hashes written by mosquitto_passwd", () => {
    for (const [password, encoded] of mosquittoVectors) {
      it.effect(`${encoded.slice(0, 10)}...: the right password verifies, a wrong one does not`, () =>
        Effect.gen(function* () {
          const hash = parse(encoded)
          expect(yield* verifyPassword(hash, password)).toBe(true)
          expect(yield* verifyPassword(hash, password + "!")).toBe(false)
          expect(yield* verifyPassword(hash, "")).toBe(false)
          expect(formatPasswordHash(hash)).toBe(encoded)
        })
      )
    }

    it("reads the parts: type, iterations, 12-byte salt, 64-byte hash", () => {
      const h = parse(mosquittoVectors[3][1])
      expect(h._tag).toBe("Sha512Pbkdf2")
      if (h._tag !== "Sha512Pbkdf2") return
      expect(h.iterations).toBe(1000)
      expect(h.salt.length).toBe(12)
      expect(h.hash.length).toBe(64)
    })
  })

  it.effect("argon2id: a PHC string made by another implementation verifies (m=128 MiB, t=6)", () =>
    Effect.gen(function* () {
      const hash = parse("$argon2id$v=19$m=131072,t=6,p=1$9AMcua9h7va8aUQSEgH/TA$TUFuJ6VPngyGThMBVo3ONOZ5xYfee9J1eNMcA5bSpq4")
      expect(hash).toMatchObject({ _tag: "Argon2id", memory: 131072, passes: 6, parallelism: 1 })
      expect(yield* verifyPassword(hash, "12345678")).toBe(true)
      expect(yield* verifyPassword(hash, "12345679")).toBe(false)
    }), 30_000
  )

  it.effect("argon2id as Mosquitto 2.1 makes it: m=47104, t=1, p=1, 64-byte salt and hash", () =>
    Effect.gen(function* () {
      const hash = yield* hashPassword("pw", { type: "argon2id" })
      const text = formatPasswordHash(hash)
      expect(text).toMatch(/^\$argon2id\$v=19\$m=47104,t=1,p=1\$[A-Za-z0-9+/]{86}\$[A-Za-z0-9+/]{86}$/)
      expect(yield* verifyPassword(parse(text), "pw")).toBe(true)
      expect(yield* verifyPassword(parse(text), "pW")).toBe(false)
    }), 30_000
  )

  it.effect("defaults: sha512-pbkdf2, 101 iterations, 12-byte salt (what Mosquitto 2.0 reads)", () =>
    Effect.gen(function* () {
      const text = formatPasswordHash(yield* hashPassword("pw"))
      expect(text).toMatch(/^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$/)
    })
  )

  it.effect("sha512 is sha512(password || salt), and a given salt gives a fixed hash", () =>
    Effect.gen(function* () {
      const salt = new Uint8Array(12).fill(7)
      const a = formatPasswordHash(yield* hashPassword("pw", { type: "sha512", salt }))
      const b = formatPasswordHash(yield* hashPassword("pw", { type: "sha512", salt }))
      expect(a).toBe(b)
      const { createHash } = yield* Effect.promise(() => import("node:crypto"))
      const expected = createHash("sha512").update(Buffer.concat([Buffer.from("pw"), Buffer.from(salt)])).digest("base64")
      expect(a).toBe(`$6$${Buffer.from(salt).toString("base64")}$${expected}`)
    })
  )

  describe("refuses what Mosquitto would not read", () => {
    const cases: ReadonlyArray<readonly [string, string, "Malformed" | "Unsupported"]> = [
      ["plain text", "secret", "Unsupported"],
      ["unknown type", "$5$abc$def", "Unsupported"],
      ["argon2i", "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA", "Unsupported"],
      ["argon2 v=16", "$argon2id$v=16$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", "Unsupported"],
      ["$6$ without hash", "$6$Cb/5ekE0lUDwkTZ6", "Malformed"],
      ["$6$ salt not base64", "$6$!!!!$" + "A".repeat(86) + "==", "Malformed"],
      ["$6$ salt of 9 bytes", "$6$AAAAAAAAAAAA$" + "A".repeat(86) + "==", "Malformed"],
      ["$6$ hash of 63 bytes", "$6$Cb/5ekE0lUDwkTZ6$" + "A".repeat(84), "Malformed"],
      ["$7$ iterations 0", "$7$0$Cb/5ekE0lUDwkTZ6$" + "A".repeat(86) + "==", "Malformed"],
      ["$7$ iterations not a number", "$7$1x$Cb/5ekE0lUDwkTZ6$" + "A".repeat(86) + "==", "Malformed"],
      ["$7$ missing a part", "$7$101$Cb/5ekE0lUDwkTZ6", "Malformed"],
      ["$7$ too many iterations", "$7$99999999999$Cb/5ekE0lUDwkTZ6$" + "A".repeat(86) + "==", "Malformed"],
      ["argon2id bad params", "$argon2id$v=19$m=16,t=2$c2FsdHNhbHQ$aGFzaGhhc2g", "Malformed"],
      ["argon2id t=0", "$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", "Malformed"],
      ["argon2id m too large", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", "Malformed"],
      ["argon2id short salt", "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaGhhc2g", "Malformed"]
    ]
    for (const [name, text, reason] of cases) {
      it(name, () => {
        const r = parsePasswordHash(text)
        expect(Either.isLeft(r) && r.left.reason).toBe(reason)
      })
    }
  })

  describe("properties", () => {
    const password = fc.string({ minLength: 0, maxLength: 40, unit: "grapheme" })

    it.effect.prop(
      "sha512 and sha512-pbkdf2: make, format, parse, verify; another password fails",
      [password, password, fc.constantFrom("sha512" as const, "sha512-pbkdf2" as const), fc.integer({ min: 1, max: 20 }), fc.uint8Array({ minLength: 12, maxLength: 12 })],
      ([pw, other, type, iterations, salt]) =>
        Effect.gen(function* () {
          const made = yield* hashPassword(pw, { type, iterations, salt })
          const text = formatPasswordHash(made)
          const parsed = parse(text)
          expect(formatPasswordHash(parsed)).toBe(text)
          expect(yield* verifyPassword(parsed, pw)).toBe(true)
          expect(yield* verifyPassword(parsed, other)).toBe(pw === other)
        }),
      { fastCheck: { seed: 20261125, numRuns: 60 } }
    )

    it.effect.prop(
      "argon2id: make, format, parse, verify",
      [password, password],
      ([pw, other]) =>
        Effect.gen(function* () {
          const parsed = parse(formatPasswordHash(yield* hashPassword(pw, { type: "argon2id" })))
          expect(yield* verifyPassword(parsed, pw)).toBe(true)
          expect(yield* verifyPassword(parsed, other)).toBe(pw === other)
        }),
      { fastCheck: { seed: 20261125, numRuns: 3 }, timeout: 60_000 }
    )

    it.prop(
      "format(parse(s)) = s for well-formed $6$ / $7$ / $argon2id$ strings",
      [
        fc.oneof(
          fc.tuple(fc.constant("6"), fc.uint8Array({ minLength: 12, maxLength: 12 }), fc.uint8Array({ minLength: 64, maxLength: 64 })).map(
            ([, s, h]) => `$6$${Buffer.from(s).toString("base64")}$${Buffer.from(h).toString("base64")}`
          ),
          fc.tuple(fc.integer({ min: 1, max: 1_000_000 }), fc.constantFrom(12, 64).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })), fc.uint8Array({ minLength: 64, maxLength: 64 })).map(
            ([i, s, h]) => `$7$${i}$${Buffer.from(s).toString("base64")}$${Buffer.from(h).toString("base64")}`
          ),
          fc.tuple(fc.integer({ min: 64, max: 65536 }), fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 4 }), fc.uint8Array({ minLength: 8, maxLength: 64 }), fc.uint8Array({ minLength: 4, maxLength: 64 })).map(
            ([m, t, p, s, h]) =>
              `$argon2id$v=19$m=${m},t=${t},p=${p}$${Buffer.from(s).toString("base64").replace(/=+$/, "")}$${Buffer.from(h).toString("base64").replace(/=+$/, "")}`
          )
        )
      ],
      ([text]) => {
        expect(formatPasswordHash(parse(text))).toBe(text)
      },
      { fastCheck: { seed: 20261125 } }
    )

    it.prop(
      "any string: parsing never throws, and what parses formats back to itself",
      [fc.string({ maxLength: 200 })],
      ([text]) => {
        const r = parsePasswordHash(text)
        if (Either.isRight(r)) expect(formatPasswordHash(r.right)).toBe(text)
      },
      { fastCheck: { seed: 20261125 } }
    )
  })
})
