/**
 * `midge sub` output, unit by unit: `-F` specifiers with flags, width and
 * precision, `@` time specifiers against a fixed clock, `\` escapes, the
 * JSON of %j / %J as cJSON prints it (minified and --pretty), `-v` and `-N`.
 * (test/cli/mosquitto.test.ts compares whole outputs with mosquitto_sub's.)
 */
process.env.TZ = "UTC"
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { compileFormat, makePrinter, parseJson, printJson, type Instant, type OutputMessage } from "../../src/cli/internal/format.js"
import { checkFormat } from "../../src/cli/internal/options.js"

const clock = (): Instant => ({ date: new Date(Date.UTC(2020, 4, 6, 21, 48, 7)), seconds: 1588801687, nanos: 123456789 })

const msg = (over: Partial<OutputMessage> = {}): OutputMessage => ({
  topic: "a/b",
  payload: Buffer.from("hello"),
  qos: 1,
  retain: false,
  mid: 7,
  properties: undefined,
  ...over
})

const print = (format: string | undefined, m: OutputMessage, opts: { verbose?: boolean; eol?: boolean; pretty?: boolean } = {}) => {
  const out: Array<Buffer> = []
  const warnings: Array<string> = []
  makePrinter({ format, verbose: opts.verbose ?? false, eol: opts.eol ?? true, pretty: opts.pretty ?? false, clock }).print(m, out, (w) => warnings.push(w))
  return { text: Buffer.concat(out).toString("utf8"), warnings }
}

describe("sub output", () => {
  it("plain, -v and -N; an empty payload prints nothing, or 'topic (null)' with -v", () => {
    expect(print(undefined, msg()).text).toBe("hello\n")
    expect(print(undefined, msg(), { eol: false }).text).toBe("hello")
    expect(print(undefined, msg(), { verbose: true }).text).toBe("a/b hello\n")
    expect(print(undefined, msg({ payload: Buffer.alloc(0) })).text).toBe("")
    expect(print(undefined, msg({ payload: Buffer.alloc(0) }), { verbose: true }).text).toBe("a/b (null)\n")
    expect(print(undefined, msg({ payload: Buffer.alloc(0) }), { verbose: true, eol: false }).text).toBe("")
  })

  it("-F message fields", () => {
    expect(print("%t %p %q %r %l %m %x %X %%", msg({ payload: Buffer.from([0xab, 0x01]), retain: true })).text).toBe(
      "a/b \xab\x01 1 1 2 7 ab01 AB01 %\n".replace("\xab\x01", Buffer.from([0xab, 0x01]).toString("utf8"))
    )
  })

  it("-F width, alignment, zero padding, precision (payloads are cut to the width, as Mosquitto does)", () => {
    const m = msg()
    expect(print("[%10p][%-10p][%3p][%08l][%-4l][%4m]", m).text).toBe("[     hello][hello     ][hel][00000005][5   ][   7]\n")
    expect(print("[%6t][%-6t][%.1t][%5.2t]", m).text).toBe("[   a/b][a/b   ][a][   a/]\n")
    // write_payload halves the length for hex, then pads: "hello" in %6x is 2 bytes, padded to 6
    expect(print("[%6x]", m).text).toBe("[  6865]\n")
  })

  it("-F MQTT 5 properties; absent ones print blanks of the field width", () => {
    const m = msg({
      properties: {
        contentType: "text/plain",
        responseTopic: "reply/here",
        correlationData: Buffer.from("corr"),
        messageExpiryInterval: 30,
        payloadFormatIndicator: true as unknown as number,
        subscriptionIdentifier: [4],
        topicAlias: 3,
        userProperties: { a: "1", b: ["2", "3"] }
      }
    })
    expect(print("%C|%R|%D|%E|%S|%A|%P", m).text).toBe("text/plain|reply/here|corr|30|4|3|a:1 b:2 b:3\n")
    expect(print("[%5C][%3E][%S][%P]", msg()).text).toBe("[     ][   ][][]\n")
  })

  it("@ time specifiers, %I, %U and escapes", () => {
    expect(print("@Y-@m-@d @H:@M:@S @N @s @@ @j @a @b", msg()).text).toBe("2020-05-06 21:48:07 123456789 1588801687 @ 127 Wed May\n")
    expect(print("%I %U", msg()).text).toBe("2020-05-06T21:48:07+0000 1588801687.123456789\n")
    expect(print("a\\tb\\\\c\\nd\\0e", msg(), { eol: false }).text).toBe("a\tb\\c\nd\0e")
  })

  it("%j: Mosquitto's keys in its order; mid only above QoS 0; properties by their Mosquitto names", () => {
    expect(print("%j", msg()).text).toBe(
      '{"tst":"2020-05-06T21:48:07.123456Z+0000","topic":"a/b","qos":1,"retain":0,"payloadlen":5,"mid":7,"payload":"hello"}\n'
    )
    const v5 = msg({ qos: 0, retain: true, payload: Buffer.from('say "hi"\n'), properties: { contentType: "text/plain", userProperties: { k: ["v1", "v2"] } } })
    expect(print("%j", v5).text).toBe(
      '{"tst":"2020-05-06T21:48:07.123456Z+0000","topic":"a/b","qos":0,"retain":1,"payloadlen":9,"properties":{"content-type":"text/plain","user-properties":{"k":"v1","k":"v2"}},"payload":"say \\"hi\\"\\n"}\n'
    )
  })

  it("%J embeds a JSON payload (re-printed as cJSON does) and warns for one that is not JSON", () => {
    const json = msg({ payload: Buffer.from(' {"a": [1, 2.5, true, null], "b": {"c": "d"}} ') })
    expect(print("%J", json).text).toBe(
      '{"tst":"2020-05-06T21:48:07.123456Z+0000","topic":"a/b","qos":1,"retain":0,"payloadlen":46,"mid":7,"payload":{"a":[1,2.5,true,null],"b":{"c":"d"}}}\n'
    )
    const bad = print("<%J>", msg())
    expect(bad.text).toBe("<>\n")
    expect(bad.warnings).toEqual(["Error: Message payload is not valid JSON on topic a/b.\n"])
  })

  it("--pretty: cJSON_Print's layout (tabs, key:<tab>value, arrays on one line)", () => {
    const text = print("%J", msg({ qos: 0, payload: Buffer.from('{"a":[1,2],"b":{}}') }), { pretty: true }).text
    expect(text).toBe(
      '{\n\t"tst":\t"2020-05-06T21:48:07.123456Z+0000",\n\t"topic":\t"a/b",\n\t"qos":\t0,\n\t"retain":\t0,\n\t"payloadlen":\t18,\n\t"payload":\t{\n\t\t"a":\t[1, 2],\n\t\t"b":\t{\n\t\t}\n\t}\n}\n'
    )
  })

  it("cJSON number printing", () => {
    expect(printJson({ pairs: [["n", 0.1], ["m", 1e21], ["k", -3], ["big", 2 ** 40], ["tiny", 1.5e-7]] }, false)).toBe(
      '{"n":0.1,"m":1e+21,"k":-3,"big":1099511627776,"tiny":1.5e-07}'
    )
  })

  it.prop(
    "any format checkFormat accepts compiles, and %p / %t / %l print the message's own fields",
    [fc.string({ maxLength: 30, unit: fc.constantFrom(..."ab %-0123.ptlqrxX@HMS\\nt") }), fc.uint8Array({ maxLength: 20 })],
    ([format, payload]) => {
      if (checkFormat(format) !== undefined) return
      compileFormat(format)
      const m = msg({ payload: Buffer.from(payload) })
      const p = print(`${format}|%t|%l`, m, { eol: false }).text
      expect(p.endsWith(`|a/b|${payload.length}`)).toBe(true)
      expect(print("%l", m, { eol: false }).text).toBe(String(payload.length))
      expect(Buffer.concat((() => {
        const out: Array<Buffer> = []
        makePrinter({ format: "%p", verbose: false, eol: false, pretty: false, clock }).print(m, out, () => {})
        return out
      })()).equals(Buffer.from(payload))).toBe(true)
    },
    { fastCheck: { seed: 20261125 } }
  )

  it.prop(
    "JSON values survive print and parse, minified and pretty",
    [fc.jsonValue({ maxDepth: 3 })],
    ([value]) => {
      const parsed = parseJson(JSON.stringify(value))!
      for (const pretty of [false, true]) {
        const printed = printJson(parsed, pretty)
        expect(JSON.parse(printed)).toEqual(JSON.parse(JSON.stringify(value)))
      }
    },
    { fastCheck: { seed: 20261125 } }
  )
})
