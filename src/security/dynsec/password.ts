/**
 * New dynamic security passwords, as Mosquitto 2.0's plugin and
 * `mosquitto_ctrl` make them: PBKDF2-HMAC-SHA512, 64-byte hash, 12 random
 * bytes of salt, 101 iterations (PW_DEFAULT_ITERATIONS). Checking one is
 * passwordHash.ts's `checkPassword` (off the event loop).
 */
import * as crypto from "node:crypto"
import type { PasswordRecord } from "./model.js"

export const DEFAULT_ITERATIONS = 101
const SALT_LENGTH = 12

/** A new record for `password`; synchronous (a cold path: createClient, setClientPassword, init). */
export const hashNewPassword = (password: string, iterations = DEFAULT_ITERATIONS): PasswordRecord => {
  const salt = new Uint8Array(crypto.randomBytes(SALT_LENGTH))
  const hash = new Uint8Array(crypto.pbkdf2Sync(Buffer.from(password, "utf8"), salt, iterations, 64, "sha512"))
  return { hash, salt, iterations }
}
