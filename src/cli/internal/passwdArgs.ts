/**
 * mosquitto_passwd's command line, read as its main() reads it: the same
 * flags, checks and error texts. Pure, and free of heavy imports.
 */
import type { HashType } from "../../security/passwordHash.js"
import { atoi } from "./cstring.js"

/** Mosquitto 2.0's PW_DEFAULT_ITERATIONS (= passwordHash's defaults.iterations) */
export const DEFAULT_ITERATIONS = 101

export interface PasswdArgs {
  readonly hashType: HashType
  readonly iterations: number
  readonly batch: boolean
  readonly create: boolean
  readonly delete: boolean
  readonly update: boolean
  readonly file: string
  readonly username: string | undefined
  readonly password: string | undefined
}

export type PasswdParse =
  | { readonly _tag: "Args"; readonly args: PasswdArgs }
  | { readonly _tag: "Usage" }
  | { readonly _tag: "Error"; readonly text: string }

/** Reads mosquitto_passwd's command line (pure). */
export const parsePasswdArgs = (argv: ReadonlyArray<string>): PasswdParse => {
  if (argv.length === 0) return { _tag: "Usage" }
  let hashType: HashType = "sha512-pbkdf2"
  let iterations = DEFAULT_ITERATIONS
  let batch = false
  let create = false
  let del = false
  let update = false
  let idx = 0
  for (; idx < argv.length; idx++) {
    const a = argv[idx]
    if (a === "-H") {
      if (idx + 1 === argv.length) return { _tag: "Error", text: "Error: -H argument given but not enough other arguments.\n" }
      const t = argv[++idx]
      if (t !== "sha512" && t !== "sha512-pbkdf2" && t !== "argon2id") return { _tag: "Error", text: `Error: Unknown hash type '${t}'\n` }
      hashType = t
    } else if (a === "-b") batch = true
    else if (a === "-c") create = true
    else if (a === "-D") del = true
    else if (a === "-I") {
      if (idx + 1 === argv.length) return { _tag: "Error", text: "Error: -I argument given but not enough other arguments.\n" }
      iterations = atoi(argv[++idx])
      if (iterations < 1) return { _tag: "Error", text: "Error: Number of iterations must be > 0.\n" }
    } else if (a === "-U") update = true
    else if (a === "--help") return { _tag: "Usage" }
    else break
  }
  if (create && del) return { _tag: "Error", text: "Error: -c and -D cannot be used together.\n" }
  if (create && update) return { _tag: "Error", text: "Error: -c and -U cannot be used together.\n" }
  if (del && update) return { _tag: "Error", text: "Error: -D and -U cannot be used together.\n" }
  if (del && batch) return { _tag: "Error", text: "Error: -b and -D cannot be used together.\n" }
  const rest = argv.slice(idx)
  let file: string
  let username: string | undefined
  let password: string | undefined
  if (create) {
    if (batch) {
      if (rest.length < 3) return { _tag: "Error", text: "Error: -c argument given but password file, username, or password missing.\n" }
      ;[file, username, password] = rest
    } else {
      if (rest.length < 2) return { _tag: "Error", text: "Error: -c argument given but password file or username missing.\n" }
      ;[file, username] = rest
    }
  } else if (del) {
    if (rest.length < 2) return { _tag: "Error", text: "Error: -D argument given but password file or username missing.\n" }
    ;[file, username] = rest
  } else if (update) {
    if (rest.length !== 1) return { _tag: "Error", text: "Error: -U argument given but password file missing.\n" }
    file = rest[0]
  } else if (batch && rest.length === 3) [file, username, password] = rest
  else if (!batch && rest.length === 2) [file, username] = rest
  else return { _tag: "Usage" }
  if (username !== undefined) {
    if (username.length > 65535) return { _tag: "Error", text: "Error: Username must be less than 65536 characters long.\n" }
    // iscntrl: C0 controls and DEL
    if (/[\u0000-\u001f\u007f]/.test(username)) return { _tag: "Error", text: "Error: Username must not contain control characters.\n" }
    if (username.includes(":")) return { _tag: "Error", text: "Error: Username must not contain the ':' character.\n" }
  }
  if (password !== undefined && Buffer.byteLength(password) > 65535) return { _tag: "Error", text: "Error: Password must be less than 65536 characters long.\n" }
  return { _tag: "Args", args: { hashType, iterations, batch, create, delete: del, update, file, username, password } }
}

