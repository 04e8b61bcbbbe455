/**
 * What `midge sub` prints for a message, as `mosquitto_sub` prints it: the
 * payload alone, `topic payload` with `-v`, or a `-F` format with
 * Mosquitto's `%` specifiers (with `-`, `0`, width and precision), `@`
 * strftime specifiers (`@N` for nanoseconds) and `\` escapes. A format is
 * compiled once; formatting a message appends Buffers to an array.
 */

/** A received message, as MQTT.js hands it over. */
export interface OutputMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: number
  readonly retain: boolean
  /** packet identifier; 0 for QoS 0 */
  readonly mid: number
  readonly properties: Record<string, unknown> | undefined
}

/** Wall-clock time with nanoseconds, read once per message. */
export interface Instant {
  readonly date: Date
  readonly seconds: number
  readonly nanos: number
}

export const now = (): Instant => {
  const ms = performance.timeOrigin + performance.now()
  const seconds = Math.floor(ms / 1000)
  return { date: new Date(seconds * 1000), seconds, nanos: Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6)) }
}

type Token =
  | { readonly _tag: "Literal"; readonly bytes: Buffer }
  | { readonly _tag: "Percent"; readonly conv: string; readonly align: boolean; readonly pad: string; readonly width: number; readonly precision: number }
  | { readonly _tag: "Time"; readonly conv: string }

const ESCAPES: Record<string, string> = { "\\": "\\", "0": "\0", a: "\x07", e: "\x1b", n: "\n", r: "\r", t: "\t", v: "\x0b" }

const isDigit = (c: string | undefined) => c !== undefined && c >= "0" && c <= "9"

/** Compiles a `-F` format already accepted by `checkFormat`. */
export const compileFormat = (format: string): ReadonlyArray<Token> => {
  const tokens: Array<Token> = []
  let literal = ""
  const flush = () => {
    if (literal.length > 0) tokens.push({ _tag: "Literal", bytes: Buffer.from(literal, "utf8") })
    literal = ""
  }
  const len = format.length
  for (let i = 0; i < len; i++) {
    const c = format[i]
    if (c === "%" && i < len - 1) {
      i++
      let align = false
      let pad = " "
      let width = 0
      let precision = -1
      if (format[i] === "-") {
        align = true
        if (i < len - 1) i++
      }
      if (format[i] === "0") {
        pad = "0"
        if (i < len - 1) i++
      }
      while (i < len - 1 && isDigit(format[i])) width = width * 10 + Number(format[i++])
      if (format[i] === "." && i < len - 1) {
        i++
        precision = 0
        while (i < len - 1 && isDigit(format[i])) precision = precision * 10 + Number(format[i++])
      }
      flush()
      tokens.push({ _tag: "Percent", conv: format[i], align, pad, width, precision })
    } else if (c === "@" && i < len - 1) {
      i++
      if (format[i] === "@") literal += "@"
      else {
        flush()
        tokens.push({ _tag: "Time", conv: format[i] })
      }
    } else if (c === "\\" && i < len - 1) {
      i++
      literal += ESCAPES[format[i]] ?? ""
    } else if (c !== "%" && c !== "@" && c !== "\\") literal += c
  }
  flush()
  return tokens
}

// ---------------------------------------------------------------------------
// printf-style pieces

const spaces = (n: number, ch = " ") => (n > 0 ? ch.repeat(n) : "")

const formatInt = (value: number, align: boolean, pad: string, width: number): string => {
  const s = String(value)
  if (width === 0 || s.length >= width) return s
  if (align) return s + spaces(width - s.length)
  if (pad === "0") return value < 0 ? "-" + spaces(width - s.length, "0") + s.slice(1) : spaces(width - s.length, "0") + s
  return spaces(width - s.length) + s
}

/** `%*.*s` over bytes, as printf counts them. */
const formatStr = (value: string, align: boolean, width: number, precision: number): Buffer => {
  let bytes = Buffer.from(value, "utf8")
  if (precision >= 0 && bytes.length > precision) bytes = bytes.subarray(0, precision)
  if (width <= bytes.length) return bytes
  const padding = Buffer.from(spaces(width - bytes.length))
  return align ? Buffer.concat([bytes, padding]) : Buffer.concat([padding, bytes])
}

/** Mosquitto's write_payload: a width truncates the payload to it, then pads. */
const formatPayload = (payload: Buffer, hex: 0 | 1 | 2, align: boolean, pad: string, width: number): Buffer => {
  let len = payload.length
  let padlen: number
  if (width > 0) {
    if (len > width) len = width
    if (hex > 0) {
      len = Math.floor(len / 2)
      padlen = width - len * 2
    } else padlen = width - len
  } else padlen = width - len
  const body = hex === 0 ? payload.subarray(0, len) : Buffer.from(payload.subarray(0, len).toString("hex")[hex === 2 ? "toUpperCase" : "toLowerCase"]())
  if (padlen <= 0) return body
  return align ? Buffer.concat([body, Buffer.from(spaces(padlen))]) : Buffer.concat([Buffer.from(spaces(padlen, pad)), body])
}

// ---------------------------------------------------------------------------
// strftime, local time, for the conversions people use in `@` specifiers

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
const p2 = (n: number) => (n < 10 ? "0" + n : String(n))
const p3 = (n: number) => (n < 10 ? "00" + n : n < 100 ? "0" + n : String(n))

const zone = (d: Date): string => {
  const off = -d.getTimezoneOffset()
  const a = Math.abs(off)
  return (off < 0 ? "-" : "+") + p2(Math.floor(a / 60)) + p2(a % 60)
}

const dayOfYear = (d: Date): number => {
  const start = new Date(d.getFullYear(), 0, 1)
  return Math.round((new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime() - start.getTime()) / 86_400_000) + 1
}

/** One strftime conversion (without the `%`); unknown ones print nothing. */
export const strftime1 = (conv: string, d: Date, seconds: number): string => {
  switch (conv) {
    case "a": return DAYS[d.getDay()].slice(0, 3)
    case "A": return DAYS[d.getDay()]
    case "b":
    case "h": return MONTHS[d.getMonth()].slice(0, 3)
    case "B": return MONTHS[d.getMonth()]
    case "C": return p2(Math.floor(d.getFullYear() / 100))
    case "d": return p2(d.getDate())
    case "D": return `${p2(d.getMonth() + 1)}/${p2(d.getDate())}/${p2(d.getFullYear() % 100)}`
    case "e": return String(d.getDate()).padStart(2, " ")
    case "F": return `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())}`
    case "H": return p2(d.getHours())
    case "I": return p2(d.getHours() % 12 === 0 ? 12 : d.getHours() % 12)
    case "j": return p3(dayOfYear(d))
    case "k": return String(d.getHours()).padStart(2, " ")
    case "l": return String(d.getHours() % 12 === 0 ? 12 : d.getHours() % 12).padStart(2, " ")
    case "m": return p2(d.getMonth() + 1)
    case "M": return p2(d.getMinutes())
    case "n": return "\n"
    case "p": return d.getHours() < 12 ? "AM" : "PM"
    case "P": return d.getHours() < 12 ? "am" : "pm"
    case "R": return `${p2(d.getHours())}:${p2(d.getMinutes())}`
    case "s": return String(seconds)
    case "S": return p2(d.getSeconds())
    case "t": return "\t"
    case "T": return `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`
    case "u": return String(d.getDay() === 0 ? 7 : d.getDay())
    case "w": return String(d.getDay())
    case "y": return p2(d.getFullYear() % 100)
    case "Y": return String(d.getFullYear())
    case "z": return zone(d)
    case "Z": return new Intl.DateTimeFormat("en-US", { timeZoneName: "short" }).formatToParts(d).find((p) => p.type === "timeZoneName")?.value ?? ""
    case "%": return "%"
    default: return ""
  }
}

/** `%I`: `%FT%T%z`. */
export const isoTime = (t: Instant): string => `${strftime1("F", t.date, t.seconds)}T${strftime1("T", t.date, t.seconds)}${zone(t.date)}`

/** The JSON `tst`: Mosquitto's `%Y-%m-%dT%H:%M:%S.uuuuuuZ%z` (sic: a `Z` before the offset). */
export const jsonTime = (t: Instant): string =>
  `${strftime1("F", t.date, t.seconds)}T${strftime1("T", t.date, t.seconds)}.${String(Math.floor(t.nanos / 1000)).padStart(6, "0")}Z${zone(t.date)}`

// ---------------------------------------------------------------------------
// JSON as cJSON prints it (what mosquitto_sub links against)

/** cJSON's number printing: integers as `%d`, others `%1.15g` or, if that loses precision, `%1.17g`. */
const cjsonNumber = (n: number): string => {
  if (!Number.isFinite(n)) return "null"
  if (Number.isInteger(n) && Math.abs(n) <= 2147483647) return String(n)
  const g = (p: number) => {
    if (n === 0) return "0"
    const exp = Math.floor(Math.log10(Math.abs(n)))
    if (exp < -4 || exp >= p) {
      const [m, e] = n.toExponential(p - 1).split("e")
      const mant = m.includes(".") ? m.replace(/\.?0+$/, "") : m
      const ev = Number(e)
      return `${mant}e${ev < 0 ? "-" : "+"}${String(Math.abs(ev)).padStart(2, "0")}`
    }
    const f = n.toFixed(Math.max(0, p - 1 - exp))
    return f.includes(".") ? f.replace(/\.?0+$/, "") : f
  }
  const s15 = g(15)
  return Number(s15) === n ? s15 : g(17)
}

const cjsonString = (s: string): string => {
  let out = '"'
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 34) out += '\\"'
    else if (c === 92) out += "\\\\"
    else if (c === 8) out += "\\b"
    else if (c === 12) out += "\\f"
    else if (c === 10) out += "\\n"
    else if (c === 13) out += "\\r"
    else if (c === 9) out += "\\t"
    else if (c < 32) out += "\\u" + c.toString(16).padStart(4, "0")
    else out += s[i]
  }
  return out + '"'
}

/** A JSON value in cJSON's minified (`cJSON_PrintUnformatted`) or `--pretty` (`cJSON_Print`) layout. Pairs keep duplicate keys. */
export type JsonValue = null | boolean | number | string | ReadonlyArray<JsonValue> | JsonObject
export interface JsonObject {
  readonly pairs: ReadonlyArray<readonly [string, JsonValue]>
}

export const printJson = (v: JsonValue, pretty: boolean, depth = 0): string => {
  if (v === null) return "null"
  if (typeof v === "boolean") return v ? "true" : "false"
  if (typeof v === "number") return cjsonNumber(v)
  if (typeof v === "string") return cjsonString(v)
  if (Array.isArray(v)) return "[" + v.map((x: JsonValue) => printJson(x, pretty, depth + 1)).join(pretty ? ", " : ",") + "]"
  const pairs = (v as JsonObject).pairs
  if (!pretty) return "{" + pairs.map(([k, x]) => cjsonString(k) + ":" + printJson(x, false)).join(",") + "}"
  const indent = "\t".repeat(depth + 1)
  const body = pairs.map(([k, x]) => indent + cjsonString(k) + ":\t" + printJson(x, true, depth + 1)).join(",\n")
  return "{\n" + body + (pairs.length > 0 ? "\n" : "") + "\t".repeat(depth) + "}"
}

/** JSON text to a `JsonValue` (objects as pair lists); undefined when it is not JSON. */
export const parseJson = (text: string): JsonValue | undefined => {
  try {
    return fromPlain(JSON.parse(text))
  } catch {
    return undefined
  }
}

const fromPlain = (v: unknown): JsonValue => {
  if (v === null || typeof v === "boolean" || typeof v === "number" || typeof v === "string") return v
  if (Array.isArray(v)) return v.map(fromPlain)
  return { pairs: Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, fromPlain(x)] as const) }
}

/** MQTT.js property names → Mosquitto's names in the JSON `properties` object. */
const JSON_PROPERTIES: Readonly<Record<string, string>> = {
  payloadFormatIndicator: "payload-format-indicator",
  messageExpiryInterval: "message-expiry-interval",
  contentType: "content-type",
  responseTopic: "response-topic",
  correlationData: "correlation-data",
  subscriptionIdentifier: "subscription-identifier",
  topicAlias: "topic-alias",
  userProperties: "user-properties"
}

/** The properties in the order they came on the wire (mqtt-packet builds the object in that order; user properties sit at the first one). */
const propertyJson = (props: Record<string, unknown>): JsonObject | undefined => {
  const pairs: Array<readonly [string, JsonValue]> = []
  for (const [key, value] of Object.entries(props)) {
    const name = JSON_PROPERTIES[key]
    if (name === undefined || value === undefined) continue
    if (key === "userProperties") {
      const users: Array<readonly [string, JsonValue]> = []
      for (const [k, x] of Object.entries(value as Record<string, string | Array<string>>)) {
        for (const one of Array.isArray(x) ? x : [x]) users.push([k, one])
      }
      pairs.push([name, { pairs: users }])
    } else if (key === "subscriptionIdentifier") {
      for (const one of Array.isArray(value) ? value : [value]) pairs.push([name, one as number])
    } else if (key === "correlationData") pairs.push([name, Buffer.from(value as Uint8Array).toString("utf8")])
    else if (typeof value === "boolean") pairs.push([name, Number(value)])
    else pairs.push([name, value as JsonValue])
  }
  return pairs.length > 0 ? { pairs } : undefined
}

/** `%j` (payload as a string) and `%J` (payload embedded as JSON; undefined when it is not JSON). */
export const messageJson = (m: OutputMessage, t: Instant, embedPayload: boolean, pretty: boolean): string | undefined => {
  const pairs: Array<readonly [string, JsonValue]> = [
    ["tst", jsonTime(t)],
    ["topic", m.topic],
    ["qos", m.qos],
    ["retain", m.retain ? 1 : 0],
    ["payloadlen", m.payload.length]
  ]
  if (m.qos > 0) pairs.push(["mid", m.mid])
  const props = m.properties === undefined ? undefined : propertyJson(m.properties)
  if (props !== undefined) pairs.push(["properties", props])
  if (embedPayload) {
    const payload = m.payload.length === 0 ? null : parseJson(m.payload.toString("utf8"))
    if (payload === undefined) return undefined
    pairs.push(["payload", payload])
  } else pairs.push(["payload", m.payload.length === 0 ? null : m.payload.toString("utf8")])
  return printJson({ pairs }, pretty)
}

// ---------------------------------------------------------------------------

export interface Printer {
  /** Appends the output for one message; errors (bad `%J` payloads) go to `warn`. */
  readonly print: (m: OutputMessage, out: Array<Buffer>, warn: (text: string) => void) => void
}

const NEWLINE = Buffer.from("\n")
const SPACE = Buffer.from(" ")
const NULL_TEXT = Buffer.from(" (null)\n")

const intProperty = (props: Record<string, unknown> | undefined, key: string): number | undefined => {
  const v = props?.[key]
  // MQTT.js hands one-byte properties (payload format indicator) over as booleans
  return typeof v === "number" ? v : typeof v === "boolean" ? Number(v) : Array.isArray(v) && typeof v[0] === "number" ? v[0] : undefined
}

const strProperty = (props: Record<string, unknown> | undefined, key: string): string | undefined => {
  const v = props?.[key]
  return typeof v === "string" ? v : undefined
}

const percent = (
  tok: Extract<Token, { _tag: "Percent" }>,
  m: OutputMessage,
  out: Array<Buffer>,
  warn: (text: string) => void,
  time: () => Instant,
  pretty: boolean
) => {
  const { align, pad, width, precision } = tok
  const blank = (ch: string) => {
    if (width > 0) out.push(Buffer.from(spaces(width, ch)))
  }
  const int = (v: number | undefined) => (v === undefined ? blank(pad) : out.push(Buffer.from(formatInt(v, align, pad, width))))
  switch (tok.conv) {
    case "%":
      out.push(Buffer.from("%"))
      break
    case "A":
      int(intProperty(m.properties, "topicAlias"))
      break
    case "C": {
      const v = strProperty(m.properties, "contentType")
      if (v === undefined) blank(" ")
      else out.push(formatStr(v, align, width, precision))
      break
    }
    case "D": {
      const v = m.properties?.correlationData
      if (v !== undefined) out.push(Buffer.from(v as Uint8Array))
      break
    }
    case "E":
      int(intProperty(m.properties, "messageExpiryInterval"))
      break
    case "F":
      int(intProperty(m.properties, "payloadFormatIndicator"))
      break
    case "I":
      out.push(formatStr(isoTime(time()), align, width, precision))
      break
    case "j":
    case "J": {
      const json = messageJson(m, time(), tok.conv === "J", pretty)
      if (json === undefined) warn(`Error: Message payload is not valid JSON on topic ${m.topic}.\n`)
      else out.push(Buffer.from(json, "utf8"))
      break
    }
    case "l":
      int(m.payload.length)
      break
    case "m":
      int(m.mid)
      break
    case "P": {
      const users = m.properties?.userProperties as Record<string, string | Array<string>> | undefined
      if (users !== undefined) {
        const parts: Array<string> = []
        for (const [k, v] of Object.entries(users)) for (const one of Array.isArray(v) ? v : [v]) parts.push(`${k}:${one}`)
        out.push(Buffer.from(parts.join(" "), "utf8"))
      }
      break
    }
    case "p":
      out.push(formatPayload(m.payload, 0, align, pad, width))
      break
    case "q":
      out.push(Buffer.from(String(m.qos)))
      break
    case "R": {
      const v = strProperty(m.properties, "responseTopic")
      if (v !== undefined) out.push(formatStr(v, align, width, precision))
      break
    }
    case "r":
      out.push(Buffer.from(m.retain ? "1" : "0"))
      break
    case "S":
      int(intProperty(m.properties, "subscriptionIdentifier"))
      break
    case "t":
      out.push(formatStr(m.topic, align, width, precision))
      break
    case "U": {
      const t = time()
      out.push(Buffer.from(`${t.seconds}.${String(t.nanos).padStart(9, "0")}`))
      break
    }
    case "x":
      out.push(formatPayload(m.payload, 1, align, pad, width))
      break
    case "X":
      out.push(formatPayload(m.payload, 2, align, pad, width))
      break
  }
}

export interface PrinterOptions {
  readonly format: string | undefined
  readonly verbose: boolean
  readonly eol: boolean
  readonly pretty: boolean
  /** reads the clock; `now` by default */
  readonly clock?: () => Instant
}

/** The printer for a tool's flags (`-F`, `-v`, `-N`, `--pretty`). */
export const makePrinter = (options: PrinterOptions): Printer => {
  const clock = options.clock ?? now
  if (options.format !== undefined) {
    const tokens = compileFormat(options.format)
    return {
      print: (m, out, warn) => {
        let instant: Instant | undefined
        const time = () => (instant ??= clock())
        for (const tok of tokens) {
          if (tok._tag === "Literal") out.push(tok.bytes)
          else if (tok._tag === "Percent") percent(tok, m, out, warn, time, options.pretty)
          else {
            const t = time()
            out.push(Buffer.from(tok.conv === "N" ? String(t.nanos).padStart(9, "0") : strftime1(tok.conv, t.date, t.seconds), "utf8"))
          }
        }
        if (options.eol) out.push(NEWLINE)
      }
    }
  }
  if (options.verbose) {
    return {
      print: (m, out) => {
        if (m.payload.length > 0) {
          out.push(Buffer.from(m.topic, "utf8"), SPACE, m.payload)
          if (options.eol) out.push(NEWLINE)
        } else if (options.eol) out.push(Buffer.from(m.topic, "utf8"), NULL_TEXT)
      }
    }
  }
  return {
    print: (m, out) => {
      if (m.payload.length > 0) {
        out.push(m.payload)
        if (options.eol) out.push(NEWLINE)
      }
    }
  }
}
