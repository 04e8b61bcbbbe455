/**
 * The C library's number parsing, as Mosquitto's tools read their
 * arguments: `atoi("12abc")` is 12, `atoi("x")` is 0, `strtol(s, 0)`
 * accepts `0x1f` and `017`. Matching them keeps `midge pub -q 1x`
 * behaving like `mosquitto_pub -q 1x`.
 */

const isSpace = (c: number) => c === 32 || (c >= 9 && c <= 13)
const isDigit = (c: number) => c >= 48 && c <= 57

/** C `atol`: leading blanks, an optional sign, then decimal digits up to the first other character. */
export const atol = (s: string): number => {
  let i = 0
  while (i < s.length && isSpace(s.charCodeAt(i))) i++
  let sign = 1
  if (s[i] === "+" || s[i] === "-") {
    if (s[i] === "-") sign = -1
    i++
  }
  let n = 0
  while (i < s.length && isDigit(s.charCodeAt(i))) {
    n = n * 10 + (s.charCodeAt(i) - 48)
    i++
  }
  return sign * n
}

/** C `atoi`: `atol` wrapped to a 32-bit int, as glibc does. */
export const atoi = (s: string): number => atol(s) | 0

/** C `atof` for the forms people type: `1`, `0.5`, `.25`, `-2`, `1e3`; anything unparsable reads as 0. */
export const atof = (s: string): number => {
  const m = /^[ \t\n\v\f\r]*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)/.exec(s)
  return m === null ? 0 : Number(m[1])
}

/**
 * C `strtol(s, &end, 0)`: base from the prefix (`0x` hex, `0` octal, else
 * decimal). Returns undefined when the whole string is not a number (the
 * caller's `endptr[0] != '\0'` check).
 */
export const strtol0 = (s: string): number | undefined => {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(s)
  if (m === null) return undefined
  const body = m[2]
  const value = body.length > 1 && (body[1] === "x" || body[1] === "X") ? parseInt(body.slice(2), 16) : body[0] === "0" ? parseInt(body, 8) : parseInt(body, 10)
  return m[1] === "-" ? -value : value
}
