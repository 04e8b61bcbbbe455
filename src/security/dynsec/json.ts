/**
 * The bits of cJSON and libmosquitto the dynamic security plugin's JSON
 * handling relies on, reproduced so Midge reads and writes exactly what
 * Mosquitto does:
 *
 * - `cJSON_GetObjectItem` matches keys case-insensitively (ASCII), which is
 *   why a file whose client says `"textName"` (as `mosquitto_ctrl dynsec
 *   init` writes it) still has a text name;
 * - `json_get_string` / `json_get_int` / `json_get_bool` (`json_help.c`):
 *   a value of the wrong type is "invalid", a missing one takes the default;
 *   numbers become C ints the way cJSON's `valueint` saturates them;
 * - `cJSON_Print`: the formatted output Mosquitto saves its file with (tabs,
 *   arrays on one line);
 * - `mosquitto_validate_utf8` and `mosquitto_sub_topic_check`;
 * - names sort as `strcmp` sorts them (UTF-8 byte order = code point order).
 */

import { hasForbiddenCodePoint } from "../../protocol/utf8.js"

export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }
export type JsonObject = { readonly [key: string]: Json }

export const isObject = (value: Json | undefined): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value)

export const isArray = (value: Json | undefined): value is ReadonlyArray<Json> => Array.isArray(value)

/** ASCII letters lowered, as `strcasecmp` and cJSON compare (`toLowerCase` also maps U+212A KELVIN SIGN to `k`). */
export const lowerAscii = (s: string): string => s.replace(/[A-Z]+/g, (m) => m.toLowerCase())

/** cJSON_GetObjectItem: an exact key first, then the first key equal but for ASCII case. */
export const getItem = (object: Json | undefined, key: string): Json | undefined => {
  if (!isObject(object)) return undefined
  if (Object.prototype.hasOwnProperty.call(object, key)) return object[key]
  const wanted = lowerAscii(key)
  for (const k of Object.keys(object)) if (lowerAscii(k) === wanted) return object[k]
  return undefined
}

/** json_get_string: `invalid` when present but not a string, or missing and required. */
export type Field<A> = { readonly ok: true; readonly value: A } | { readonly ok: false }

const INVALID: Field<never> = { ok: false }

export const getString = (object: Json | undefined, key: string, optional: boolean): Field<string | undefined> => {
  const item = getItem(object, key)
  if (item === undefined) return optional ? { ok: true, value: undefined } : INVALID
  return typeof item === "string" ? { ok: true, value: item } : INVALID
}

/** cJSON's valueint: the double saturated to a C int, truncated towards zero. */
export const toCInt = (n: number): number => (Number.isNaN(n) ? 0 : n >= 2147483647 ? 2147483647 : n <= -2147483648 ? -2147483648 : Math.trunc(n))

/** json_get_int with optional = true: the default when missing or not a number (the C code ignores the error). */
export const getInt = (object: Json | undefined, key: string, fallback: number): number => {
  const item = getItem(object, key)
  return typeof item === "number" ? toCInt(item) : fallback
}

/** json_get_bool with optional = true. */
export const getBool = (object: Json | undefined, key: string, fallback: boolean): boolean => {
  const item = getItem(object, key)
  return typeof item === "boolean" ? item : fallback
}

/** strcmp on the UTF-8 bytes: code point order (JavaScript's `<` compares UTF-16 units). */
export const strcmp = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x === y) continue
    // surrogates (U+D800-DFFF, astral code points) sort after everything in the BMP above them
    const xs = x >= 0xd800 && x <= 0xdfff
    const ys = y >= 0xd800 && y <= 0xdfff
    if (xs !== ys) return xs ? 1 : -1
    return x - y
  }
  return a.length - b.length
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/**
 * mosquitto_validate_utf8 on a decoded string: no NUL or other control
 * characters (U+0000-001F, U+007F-009F), no non-characters, no lone
 * surrogates, at most 65536 bytes. `replaced`: the payload was not valid
 * UTF-8, so U+FFFD stands for bytes Mosquitto would reject.
 */
export const validUtf8 = (s: string, replaced = false): boolean => {
  if (Buffer.byteLength(s) > 65536 || hasForbiddenCodePoint(s)) return false
  if (replaced && s.indexOf("\uFFFD") !== -1) return false
  // a lone surrogate (JSON can spell one: "\ud800")
  return !LONE_SURROGATE.test(s)
}

/**
 * mosquitto_sub_topic_check: `+` and `#` only as whole levels, `#` last, at
 * most 65535 bytes. The empty string passes (as in libmosquitto).
 */
export const subTopicCheck = (filter: string): boolean => {
  if (Buffer.byteLength(filter) > 65535) return false
  for (let i = 0; i < filter.length; i++) {
    const c = filter.charCodeAt(i)
    if (c !== 43 && c !== 35) continue
    if (i > 0 && filter.charCodeAt(i - 1) !== 47) return false
    if (c === 43 ? i + 1 < filter.length && filter.charCodeAt(i + 1) !== 47 : i + 1 !== filter.length) return false
  }
  return true
}

const tabs = (n: number): string => "\t".repeat(n)

/** cJSON_Print: objects one key a line, indented with tabs, `"key":\tvalue`; arrays inline, `, ` between elements. */
export const printFormatted = (value: Json, depth = 0): string => {
  if (value === null || typeof value !== "object") return JSON.stringify(value)
  if (Array.isArray(value)) {
    return `[${(value as ReadonlyArray<Json>).map((v) => printFormatted(v, depth + 1)).join(", ")}]`
  }
  const keys = Object.keys(value)
  let out = "{\n"
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]
    out += `${tabs(depth + 1)}${JSON.stringify(k)}:\t${printFormatted((value as JsonObject)[k], depth + 1)}${i + 1 < keys.length ? "," : ""}\n`
  }
  return out + `${tabs(depth)}}`
}
