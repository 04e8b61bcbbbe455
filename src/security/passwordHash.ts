/**
 * Mosquitto's password hashes, as written in a `password_file` and by
 * `mosquitto_passwd`:
 *
 * - `$6$<salt>$<hash>`: salted SHA-512, hash = sha512(password ‖ salt)
 *   (Mosquitto 1.x, `-H sha512`);
 * - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512, 64-byte output
 *   (Mosquitto 2.0's default, 101 iterations);
 * - `$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>`: a PHC
 *   string (Mosquitto 2.1's default: m=47104, t=1, p=1, 64-byte salt and
 *   hash).
 *
 * In `$6$` / `$7$` the salt and hash are standard base64 with padding; the
 * salt is 12 bytes (Mosquitto 2.0, which reads only 12) or 64 bytes
 * (Mosquitto 2.1), the hash always 64 bytes. The PHC string uses unpadded
 * base64. Parsing and formatting are pure; hashing and verifying are
 * effects (PBKDF2 and Argon2 are slow on purpose and run off the event
 * loop's critical path); verifying is also a plain callback, `checkPassword`,
 * for the CONNECT path. Comparison is constant-time.
 */
import * as crypto from "node:crypto"
import { Data, Effect, Either } from "effect"
import { argon2id } from "hash-wasm"

export type HashType = "sha512" | "sha512-pbkdf2" | "argon2id"

export const hashTypes: ReadonlyArray<HashType> = ["sha512", "sha512-pbkdf2", "argon2id"]

export interface Sha512Hash {
  readonly _tag: "Sha512"
  readonly salt: Uint8Array
  readonly hash: Uint8Array
}

export interface Sha512Pbkdf2Hash {
  readonly _tag: "Sha512Pbkdf2"
  readonly iterations: number
  readonly salt: Uint8Array
  readonly hash: Uint8Array
}

export interface Argon2idHash {
  readonly _tag: "Argon2id"
  /** KiB */
  readonly memory: number
  readonly passes: number
  readonly parallelism: number
  readonly salt: Uint8Array
  readonly hash: Uint8Array
}

export type PasswordHash = Sha512Hash | Sha512Pbkdf2Hash | Argon2idHash

export class PasswordHashError extends Data.TaggedError("PasswordHashError")<{
  readonly reason: "Malformed" | "Unsupported"
  readonly message: string
}> {}

/** What Mosquitto writes by default; `mosquitto_passwd -I` changes the iterations. */
export const defaults = {
  type: "sha512-pbkdf2" as HashType,
  /** Mosquitto 2.0's PW_DEFAULT_ITERATIONS (2.1 uses 1000) */
  iterations: 101,
  /** Mosquitto 2.0's SALT_LEN; 2.0 reads no other length */
  saltLength: 12,
  hashLength: 64,
  /** Mosquitto 2.1's MOSQ_ARGON2_M / _T / _P, with 64-byte salt and hash */
  argon2: { memory: 47104, passes: 1, parallelism: 1, saltLength: 64, hashLength: 64 }
} as const

/** Upper bounds on work a parsed hash may ask for, so a hostile file cannot stall the broker. */
export const limits = { maxIterations: 10_000_000, maxArgon2Memory: 4 * 1024 * 1024, maxArgon2Passes: 100, maxArgon2Parallelism: 64 }

const malformed = (message: string) => Either.left(new PasswordHashError({ reason: "Malformed", message }))

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
const BASE64_NOPAD = /^[A-Za-z0-9+/]*$/

const decodeBase64 = (text: string): Uint8Array | undefined =>
  text.length > 0 && BASE64.test(text) ? new Uint8Array(Buffer.from(text, "base64")) : undefined

const decodeBase64NoPad = (text: string): Uint8Array | undefined =>
  text.length > 0 && text.length % 4 !== 1 && BASE64_NOPAD.test(text) ? new Uint8Array(Buffer.from(text, "base64")) : undefined

const DECIMAL = /^[1-9][0-9]{0,9}$/

const parseSaltAndHash = (
  saltText: string | undefined,
  hashText: string | undefined
): Either.Either<{ salt: Uint8Array; hash: Uint8Array }, PasswordHashError> => {
  const salt = saltText === undefined ? undefined : decodeBase64(saltText)
  if (salt === undefined) return malformed("the salt is not base64")
  if (salt.length !== 12 && salt.length !== 64) return malformed(`the salt is ${salt.length} bytes, not 12 or 64`)
  const hash = hashText === undefined ? undefined : decodeBase64(hashText)
  if (hash === undefined) return malformed("the hash is not base64")
  if (hash.length !== defaults.hashLength) return malformed(`the hash is ${hash.length} bytes, not 64`)
  return Either.right({ salt, hash })
}

/**
 * Reads the password field of a password file line. Fails with
 * `Malformed` for a broken `$6$` / `$7$` / `$argon2id$` string and
 * `Unsupported` for anything else (a plain-text password, `$argon2i$`, ...).
 */
export const parsePasswordHash = (encoded: string): Either.Either<PasswordHash, PasswordHashError> => {
  const parts = encoded.split("$")
  // a leading "$" gives an empty first part
  if (parts.length < 2 || parts[0] !== "") {
    return Either.left(new PasswordHashError({ reason: "Unsupported", message: "not a Mosquitto password hash (no leading '$')" }))
  }
  switch (parts[1]) {
    case "6": {
      if (parts.length !== 4) return malformed("a $6$ hash has the form $6$salt$hash")
      return Either.map(parseSaltAndHash(parts[2], parts[3]), ({ salt, hash }): PasswordHash => ({ _tag: "Sha512", salt, hash }))
    }
    case "7": {
      if (parts.length !== 5) return malformed("a $7$ hash has the form $7$iterations$salt$hash")
      if (!DECIMAL.test(parts[2])) return malformed(`invalid iteration count '${parts[2]}'`)
      const iterations = Number(parts[2])
      if (iterations > limits.maxIterations) return malformed(`iteration count ${iterations} is over ${limits.maxIterations}`)
      return Either.map(parseSaltAndHash(parts[3], parts[4]), ({ salt, hash }): PasswordHash => ({ _tag: "Sha512Pbkdf2", iterations, salt, hash }))
    }
    case "argon2id":
      return parseArgon2id(parts)
    default:
      return Either.left(new PasswordHashError({ reason: "Unsupported", message: `unsupported hash type '$${parts[1]}$'` }))
  }
}

const ARGON2_PARAMS = /^m=([0-9]{1,10}),t=([0-9]{1,10}),p=([0-9]{1,3})$/

const parseArgon2id = (parts: ReadonlyArray<string>): Either.Either<PasswordHash, PasswordHashError> => {
  // ["", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash]
  if (parts.length !== 6) return malformed("an argon2id hash has the form $argon2id$v=19$m=M,t=T,p=P$salt$hash")
  if (parts[2] !== "v=19") {
    return Either.left(new PasswordHashError({ reason: "Unsupported", message: `unsupported argon2 version '${parts[2]}'` }))
  }
  const params = ARGON2_PARAMS.exec(parts[3])
  if (params === null) return malformed(`invalid argon2id parameters '${parts[3]}'`)
  const memory = Number(params[1])
  const passes = Number(params[2])
  const parallelism = Number(params[3])
  if (passes < 1 || passes > limits.maxArgon2Passes) return malformed(`argon2id t=${passes} is out of range`)
  if (parallelism < 1 || parallelism > limits.maxArgon2Parallelism) return malformed(`argon2id p=${parallelism} is out of range`)
  if (memory < 8 * parallelism || memory > limits.maxArgon2Memory) return malformed(`argon2id m=${memory} is out of range`)
  const salt = decodeBase64NoPad(parts[4])
  if (salt === undefined || salt.length < 8) return malformed("the argon2id salt is not base64 of at least 8 bytes")
  const hash = decodeBase64NoPad(parts[5])
  if (hash === undefined || hash.length < 4) return malformed("the argon2id hash is not base64 of at least 4 bytes")
  return Either.right({ _tag: "Argon2id", memory, passes, parallelism, salt, hash })
}

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64")

/** The text Mosquitto writes after `username:`. */
export const formatPasswordHash = (hash: PasswordHash): string => {
  switch (hash._tag) {
    case "Sha512":
      return `$6$${b64(hash.salt)}$${b64(hash.hash)}`
    case "Sha512Pbkdf2":
      return `$7$${hash.iterations}$${b64(hash.salt)}$${b64(hash.hash)}`
    case "Argon2id":
      return `$argon2id$v=19$m=${hash.memory},t=${hash.passes},p=${hash.parallelism}$${b64(hash.salt).replace(/=+$/, "")}$${b64(hash.hash).replace(/=+$/, "")}`
  }
}

const toBytes = (password: string | Uint8Array): Uint8Array => (typeof password === "string" ? Buffer.from(password, "utf8") : password)

const sha512 = (password: Uint8Array, salt: Uint8Array): Uint8Array =>
  new Uint8Array(crypto.createHash("sha512").update(password).update(salt).digest())

const pbkdf2 = (password: Uint8Array, salt: Uint8Array, iterations: number, length: number): Effect.Effect<Uint8Array> =>
  Effect.async<Uint8Array>((resume) => {
    crypto.pbkdf2(password, salt, iterations, length, "sha512", (error, key) => {
      // only fails on invalid arguments, which parsing rules out
      if (error) resume(Effect.die(error))
      else resume(Effect.succeed(new Uint8Array(key)))
    })
  })

const argon2 = (password: Uint8Array, salt: Uint8Array, memory: number, passes: number, parallelism: number, length: number) =>
  Effect.promise(() =>
    argon2id({ password, salt, memorySize: memory, iterations: passes, parallelism, hashLength: length, outputType: "binary" })
  )

export interface HashOptions {
  readonly type?: HashType
  /** PBKDF2 iterations (`mosquitto_passwd -I`); argon2id ignores it */
  readonly iterations?: number
  /** for reproducible tests; random otherwise */
  readonly salt?: Uint8Array
}

/** A new hash of `password`, as `mosquitto_passwd` makes it. */
export const hashPassword = (password: string | Uint8Array, options: HashOptions = {}): Effect.Effect<PasswordHash> =>
  Effect.suspend(() => {
    const bytes = toBytes(password)
    const type = options.type ?? defaults.type
    switch (type) {
      case "sha512": {
        const salt = options.salt ?? new Uint8Array(crypto.randomBytes(defaults.saltLength))
        return Effect.sync((): PasswordHash => ({ _tag: "Sha512", salt, hash: sha512(bytes, salt) }))
      }
      case "sha512-pbkdf2": {
        const salt = options.salt ?? new Uint8Array(crypto.randomBytes(defaults.saltLength))
        const iterations = options.iterations ?? defaults.iterations
        return Effect.map(pbkdf2(bytes, salt, iterations, defaults.hashLength), (hash): PasswordHash => ({ _tag: "Sha512Pbkdf2", iterations, salt, hash }))
      }
      case "argon2id": {
        const { memory, passes, parallelism, saltLength, hashLength } = defaults.argon2
        const salt = options.salt ?? new Uint8Array(crypto.randomBytes(saltLength))
        return Effect.map(argon2(bytes, salt, memory, passes, parallelism, hashLength), (hash): PasswordHash => ({ _tag: "Argon2id", memory, passes, parallelism, salt, hash }))
      }
    }
  })

/**
 * Whether `password` matches, as a plain callback (the broker's CONNECT path:
 * no fiber per check). `done` gets undefined when the hash could not be computed
 * (it cannot for a parsed hash); `$6$` calls it synchronously, PBKDF2 (Node's
 * thread pool) and Argon2 later. The comparison takes the same time wherever
 * the bytes differ.
 */
export const checkPassword = (hash: PasswordHash, password: string | Uint8Array, done: (ok: boolean | undefined) => void): void => {
  const bytes = toBytes(password)
  const expected = hash.hash
  const matches = (computed: Uint8Array): boolean => computed.length === expected.length && crypto.timingSafeEqual(computed, expected)
  switch (hash._tag) {
    case "Sha512":
      return done(matches(sha512(bytes, hash.salt)))
    case "Sha512Pbkdf2":
      crypto.pbkdf2(bytes, hash.salt, hash.iterations, expected.length, "sha512", (error, key) => done(error ? undefined : matches(key)))
      return
    case "Argon2id":
      argon2id({ password: bytes, salt: hash.salt, memorySize: hash.memory, iterations: hash.passes, parallelism: hash.parallelism, hashLength: expected.length, outputType: "binary" }).then(
        (key) => done(matches(key)),
        () => done(undefined)
      )
      return
  }
}

/** True when `password` matches ({@link checkPassword} as an Effect; a hash that cannot be computed is a defect). */
export const verifyPassword = (hash: PasswordHash, password: string | Uint8Array): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) =>
    checkPassword(hash, password, (ok) => resume(ok === undefined ? Effect.dieMessage("the password hash could not be computed") : Effect.succeed(ok)))
  )
