/**
 * The PROXY protocol header (src/transport/proxyProtocol.ts): the parser against generated v1 and
 * v2 headers split at any point and followed by arbitrary bytes, corrupt and truncated headers,
 * Mosquitto's own test vectors (test/broker/*proxy*), the listener's rules (`admit`), and the
 * socket that waits for the header (`ProxiedSocket`) fed byte streams split at any point.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { Buffer } from "node:buffer"
import { splitAt as cutAt } from "../support/chunks.js"
import {
  admit,
  FAMILY_TCP4,
  FAMILY_TCP6,
  FAMILY_UNIX,
  FAMILY_UNSPEC,
  type HeaderParse,
  ipv6,
  maxHeaderLength,
  parseProxyHeader,
  ProxiedSocket,
  type ProxyHeaderHooks,
  type ProxyListenerOptions,
  PROXY_V2_LOCAL,
  PROXY_V2_PROXY,
  PP2_CLIENT_CERT_SESS,
  PP2_CLIENT_SSL,
  PP2_TYPE_SSL,
  V2_SIGNATURE
} from "../../src/transport/proxyProtocol.js"

const SEED = 20_261_127
const runs = (numRuns: number) => ({ fastCheck: { seed: SEED, numRuns } })

// ---------------------------------------------------------------------------
// generated headers, with what the parser must find in them

interface Generated {
  readonly version: 1 | 2
  readonly bytes: Buffer
  /** undefined: the socket's own address stands (v2 LOCAL, v1 UNKNOWN) */
  readonly source: { readonly address: string; readonly port: number } | undefined
  /** v2 IPv6: the source address's 16 bytes (its text is checked against them) */
  readonly source6?: Buffer
  readonly tls?: { readonly client: number; readonly verify: number; readonly commonName: string | undefined }
}

const port1 = fc.integer({ min: 1, max: 65535 })
const port0 = fc.integer({ min: 0, max: 65535 })

const v1Tcp: fc.Arbitrary<Generated> = fc
  .oneof(
    fc.tuple(fc.constant("TCP4"), fc.ipV4(), fc.ipV4()),
    fc.tuple(fc.constant("TCP6"), fc.ipV6(), fc.ipV6())
  )
  .chain(([proto, src, dst]) =>
    fc.tuple(port1, port1).map(([sport, dport]): Generated => ({
      version: 1,
      bytes: Buffer.from(`PROXY ${proto} ${src} ${dst} ${sport} ${dport}\r\n`, "latin1"),
      source: { address: src, port: sport }
    }))
  )
  .filter((g) => g.bytes.length <= 108)

const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 80 })

const v1Unknown: fc.Arbitrary<Generated> = fc.option(printable, { nil: undefined }).map((tail) => ({
  version: 1,
  bytes: Buffer.from(`PROXY UNKNOWN${tail === undefined ? "" : ` ${tail}`}\r\n`, "latin1"),
  source: undefined
}))

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff])
const tlv = (type: number, value: Buffer): Buffer => Buffer.concat([Buffer.from([type]), u16(value.length), value])
const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a))
/** short and long byte strings alike (fast-check's default size keeps arrays small) */
const anyBytes = (max: number) => fc.oneof(bytes(0, 64), fc.uint8Array({ minLength: 0, maxLength: max, size: "max" }).map((a) => Buffer.from(a)))

/** TLVs the parser skips (any type but PP2_TYPE_SSL) */
const otherTlv = fc.tuple(fc.integer({ min: 0, max: 255 }).filter((t) => t !== PP2_TYPE_SSL), bytes(0, 40)).map(([t, v]) => tlv(t, v))

const cn = fc.string({ unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789-."), minLength: 1, maxLength: 30 })

const sslTlv = fc
  .record({
    client: fc.integer({ min: 0, max: 7 }),
    verify: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 0xffffffff })),
    version: fc.option(fc.constantFrom("TLSv1.2", "TLSv1.3"), { nil: undefined }),
    commonName: fc.option(cn, { nil: undefined }),
    extra: fc.array(fc.tuple(fc.integer({ min: 0x24, max: 0x2f }), bytes(0, 10)), { maxLength: 2 })
  })
  .map((s) => {
    const verify = Buffer.alloc(4)
    verify.writeUInt32BE(s.verify)
    const subs = [
      ...(s.version !== undefined ? [tlv(0x21, Buffer.from(s.version))] : []),
      ...(s.commonName !== undefined ? [tlv(0x22, Buffer.from(s.commonName))] : []),
      ...s.extra.map(([t, v]) => tlv(t, v))
    ]
    return { tlv: tlv(PP2_TYPE_SSL, Buffer.concat([Buffer.from([s.client]), verify, ...subs])), ...s }
  })

const unixPath = fc.string({ unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789/._-"), minLength: 1, maxLength: 100 })

const v2Header = (command: number, family: number, payload: Buffer): Buffer =>
  Buffer.concat([V2_SIGNATURE, Buffer.from([command, family]), u16(payload.length), payload])

const v2Proxy: fc.Arbitrary<Generated> = fc
  .record({
    address: fc.oneof(
      fc.tuple(fc.constant(FAMILY_TCP4), bytes(4, 4), bytes(4, 4)),
      fc.tuple(fc.constant(FAMILY_TCP6), bytes(16, 16), bytes(16, 16)),
      fc.tuple(fc.constant(FAMILY_UNIX), unixPath.map((p) => Buffer.from(p)), unixPath.map((p) => Buffer.from(p)))
    ),
    sport: port0,
    dport: port0,
    before: fc.array(otherTlv, { maxLength: 3 }),
    ssl: fc.option(sslTlv, { nil: undefined }),
    after: fc.array(otherTlv, { maxLength: 2 })
  })
  .map(({ address: [family, src, dst], sport, dport, before, ssl, after }): Generated => {
    let addresses: Buffer
    let source: { address: string; port: number }
    if (family === FAMILY_UNIX) {
      const block = Buffer.alloc(216)
      src.copy(block, 0)
      dst.copy(block, 108)
      addresses = block
      source = { address: src.toString("utf8"), port: 0 }
    } else {
      addresses = Buffer.concat([src, dst, u16(sport), u16(dport)])
      source = { address: family === FAMILY_TCP4 ? [...src].join(".") : "", port: sport }
    }
    const payload = Buffer.concat([addresses, ...before, ...(ssl !== undefined ? [ssl.tlv] : []), ...after])
    return {
      version: 2,
      bytes: v2Header(PROXY_V2_PROXY, family, payload),
      source,
      ...(family === FAMILY_TCP6 ? { source6: src } : {}),
      ...(ssl !== undefined ? { tls: { client: ssl.client, verify: ssl.verify, commonName: ssl.commonName } } : {})
    }
  })
  .filter((g) => g.bytes.length <= maxHeaderLength(2))

const v2Local: fc.Arbitrary<Generated> = fc
  .oneof(
    fc.constant(Buffer.alloc(0)).map((p) => v2Header(PROXY_V2_LOCAL, FAMILY_UNSPEC, p)),
    fc.tuple(bytes(12, 12), fc.array(otherTlv, { maxLength: 2 })).map(([a, t]) => v2Header(PROXY_V2_LOCAL, FAMILY_TCP4, Buffer.concat([a, ...t])))
  )
  .map((b): Generated => ({ version: 2, bytes: b, source: undefined }))

const anyHeader = fc.oneof(v1Tcp, v1Unknown, v2Proxy, v2Local)

/** 16 bytes of an IPv6 address in text (`::`, an IPv4 tail): an independent reading of what the parser printed */
const ipv6Bytes = (text: string): Buffer => {
  let s = text
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s)
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(1).map(Number)
    s = s.slice(0, dotted.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, rest] = s.split("::")
  const h = head === "" ? [] : head.split(":")
  const r = rest === undefined ? [] : rest === "" ? [] : rest.split(":")
  const zeros = rest === undefined ? 0 : 8 - h.length - r.length
  const words = [...h, ...Array<string>(zeros).fill("0"), ...r].map((w) => parseInt(w, 16))
  const out = Buffer.alloc(16)
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2))
  return out
}

const expectHeader = (g: Generated, result: HeaderParse, length: number) => {
  expect(result._tag).toBe("Parsed")
  if (result._tag !== "Parsed") return
  expect(result.length).toBe(length)
  if (g.source === undefined) expect(result.header.source).toBeUndefined()
  else if (g.source6 !== undefined) {
    expect(result.header.source?.port).toBe(g.source.port)
    expect(ipv6Bytes(result.header.source!.address)).toStrictEqual(g.source6)
  } else expect(result.header.source).toStrictEqual(g.source)
  if (g.tls !== undefined) {
    expect(result.header.tls).toMatchObject({ client: g.tls.client, verify: g.tls.verify, commonName: g.tls.commonName })
  } else expect(result.header.tls).toBeUndefined()
}

const cutsOf = (length: number) => fc.array(fc.integer({ min: 0, max: length }), { maxLength: 5 })

/** the chunks a socket delivers: never an empty one */
const splitAt = (b: Buffer, cuts: ReadonlyArray<number>): Array<Buffer> => cutAt(b, cuts).filter((c) => c.length > 0)

// ---------------------------------------------------------------------------
// a socket to wait on: the accepted socket's events, driven by the test

class FakeSocket {
  destroyed = false
  writable = true
  writableLength = 0
  remoteAddress: string | undefined = "10.9.8.7"
  remotePort: number | undefined = 4242
  private readonly listeners = new Map<string, Array<(...args: Array<unknown>) => void>>()
  on(event: string, listener: (...args: Array<never>) => void): this {
    const list = this.listeners.get(event) ?? []
    list.push(listener as (...args: Array<unknown>) => void)
    this.listeners.set(event, list)
    return this
  }
  emit(event: string, ...args: Array<unknown>): void {
    for (const l of this.listeners.get(event) ?? []) l.call(this, ...args)
  }
  write(): boolean {
    return true
  }
  pause(): this {
    return this
  }
  resume(): this {
    return this
  }
  end(): this {
    return this
  }
  destroySoon(): void {
    this.destroy()
  }
  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.emit("close")
  }
  setNoDelay(): this {
    return this
  }
}

interface Waited {
  readonly inner: FakeSocket
  readonly socket: ProxiedSocket
  readonly lines: Array<string>
  /** what the connection made on the socket received */
  readonly delivered: Array<Buffer>
  readonly ready: () => boolean
  readonly abandoned: () => boolean
}

const wait = (options: ProxyListenerOptions): Waited => {
  const inner = new FakeSocket()
  const lines: Array<string> = []
  const delivered: Array<Buffer> = []
  let ready = false
  let abandoned = false
  const hooks: ProxyHeaderHooks = {
    // as the listener makes a Connection, which registers its data listener
    ready: (s) => {
      ready = true
      s.on("data", (chunk) => delivered.push(Buffer.from(chunk)))
    },
    abandoned: () => {
      abandoned = true
    },
    notice: (line) => lines.push(line),
    connectionMessages: () => true
  }
  const socket = new ProxiedSocket(inner as never, options, hooks)
  return { inner, socket, lines, delivered, ready: () => ready, abandoned: () => abandoned }
}

// ---------------------------------------------------------------------------

describe("parseProxyHeader: generated headers", () => {
  it.prop(
    "a valid v1 / v2 header followed by arbitrary bytes parses to its addresses and length; every shorter prefix is incomplete",
    [anyHeader, bytes(0, 64)],
    ([g, rest]) => {
      const stream = Buffer.concat([g.bytes, rest])
      expectHeader(g, parseProxyHeader(g.version, stream), g.bytes.length)
      for (let n = 0; n < g.bytes.length; n++) {
        expect(parseProxyHeader(g.version, stream.subarray(0, n))._tag).toBe("Incomplete")
      }
    },
    runs(400)
  )

  it.prop(
    "split at any points: the waiting socket admits it with the header's address, and the connection gets the rest byte for byte",
    [anyHeader.chain((g) => fc.tuple(fc.constant(g), bytes(0, 64), cutsOf(g.bytes.length + 64)))],
    ([[g, rest, cuts]]) => {
      const w = wait({ version: g.version })
      const stream = Buffer.concat([g.bytes, rest])
      for (const chunk of splitAt(stream, cuts)) w.inner.emit("data", chunk)
      expect(w.ready()).toBe(true)
      expect(w.abandoned()).toBe(false)
      if (g.source === undefined) {
        expect(w.socket.remoteAddress).toBe("10.9.8.7")
        expect(w.socket.remotePort).toBe(4242)
      } else {
        expect(w.socket.remotePort).toBe(g.source.port)
        if (g.source6 !== undefined) expect(ipv6Bytes(w.socket.remoteAddress!)).toStrictEqual(g.source6)
        else expect(w.socket.remoteAddress).toBe(g.source.address)
      }
      expect(Buffer.concat(w.delivered)).toStrictEqual(rest)
      expect(w.lines).toStrictEqual([])
    },
    runs(400)
  )

  it.prop(
    "a header of the other version is refused with Mosquitto's line",
    [anyHeader, bytes(0, 16)],
    ([g, rest]) => {
      const other = g.version === 1 ? 2 : 1
      expect(parseProxyHeader(other, Buffer.concat([g.bytes, rest]))._tag).toBe("Invalid")
      const w = wait({ version: other })
      w.inner.emit("data", Buffer.concat([g.bytes, rest]))
      expect(w.ready()).toBe(false)
      expect(w.abandoned()).toBe(true)
      expect(w.inner.destroyed).toBe(true)
      expect(w.lines).toStrictEqual(
        other === 1
          ? ["Connection rejected, corrupt PROXY header.", "Bad socket read/write on client <unknown>: Invalid input"]
          : ["Bad socket read/write on client <unknown>: Invalid input"]
      )
    },
    runs(200)
  )
})

describe("parseProxyHeader: corrupt and truncated input is refused, never thrown", () => {
  it.prop(
    "arbitrary bytes: no throw; incomplete only below the largest header; the waiting socket decides by then",
    [fc.constantFrom<1 | 2>(1, 2), anyBytes(700)],
    ([version, b]) => {
      const r = parseProxyHeader(version, b)
      if (r._tag === "Incomplete") expect(b.length).toBeLessThan(maxHeaderLength(version))
      const w = wait({ version })
      w.inner.emit("data", b)
      // as many bytes as the largest header: admitted or refused without waiting for more
      if (b.length >= maxHeaderLength(version)) expect(w.ready() || w.abandoned()).toBe(true)
      w.inner.emit("end")
      expect(w.ready() || w.abandoned()).toBe(true)
    },
    runs(500)
  )

  it.prop(
    "arbitrary bytes after a valid start of a header (the signature, `PROXY `): no throw, incomplete only below the largest header",
    [fc.constantFrom<1 | 2>(1, 2), anyBytes(600)],
    ([version, b]) => {
      const stream = Buffer.concat([version === 1 ? Buffer.from("PROXY ") : V2_SIGNATURE, b])
      const r = parseProxyHeader(version, stream)
      if (r._tag === "Incomplete") expect(stream.length).toBeLessThan(maxHeaderLength(version))
      if (r._tag === "Parsed") expect(r.length).toBeLessThanOrEqual(maxHeaderLength(version))
    },
    runs(500)
  )

  it.prop(
    "a header with one byte of its signature or `PROXY ` changed is invalid",
    [anyHeader, fc.nat(), fc.integer({ min: 1, max: 255 })],
    ([g, at, delta]) => {
      const prefix = g.version === 1 ? 6 : 12
      const b = Buffer.from(g.bytes)
      const i = at % prefix
      b[i] = (b[i] + delta) & 0xff
      expect(parseProxyHeader(g.version, b)).toStrictEqual({ _tag: "Invalid", source: undefined })
    },
    runs(300)
  )

  it.prop(
    "v2: TLVs that overrun the header are invalid and the line names the source address",
    [v2Proxy.filter((g) => g.bytes[13] === FAMILY_TCP4), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 300 })],
    ([g, cut, overrun]) => {
      // a TLV header cut short: 1 or 2 bytes of it at the end of the payload
      const short = Buffer.concat([g.bytes, Buffer.from([0x05, 0x00]).subarray(0, cut)])
      short.writeUInt16BE(short.length - 16, 14)
      // a TLV whose length runs past the payload
      const long = Buffer.concat([g.bytes, tlv(0x05, Buffer.alloc(0))])
      long.writeUInt16BE(overrun, long.length - 2)
      long.writeUInt16BE(long.length - 16, 14)
      for (const b of [short, long]) {
        if (b.length > maxHeaderLength(2)) continue
        expect(parseProxyHeader(2, b)).toStrictEqual({ _tag: "Invalid", source: g.source })
        const w = wait({ version: 2 })
        w.inner.emit("data", b)
        expect(w.ready()).toBe(false)
        expect(w.lines).toStrictEqual([
          `Connection from ${g.source!.address}:${g.source!.port} rejected, corrupt PROXY header.`,
          "Bad socket read/write on client <unknown>: Proxy error"
        ])
      }
    },
    runs(200)
  )

  it.prop(
    "truncated: a strict prefix is waited on (its rest would be admitted); end of stream then closes the socket without a connection",
    [anyHeader.chain((g) => fc.tuple(fc.constant(g), fc.integer({ min: 0, max: g.bytes.length - 1 })))],
    ([[g, n]]) => {
      const w = wait({ version: g.version })
      if (n > 0) w.inner.emit("data", g.bytes.subarray(0, n))
      expect(w.abandoned()).toBe(false)
      w.inner.emit("end")
      expect(w.ready()).toBe(false)
      expect(w.abandoned()).toBe(true)
      expect(w.inner.destroyed).toBe(true)
      expect(w.lines).toStrictEqual(["Client <unknown> closed its connection."])
      // the same prefix followed by the rest of the header is admitted
      const whole = wait({ version: g.version })
      if (n > 0) whole.inner.emit("data", g.bytes.subarray(0, n))
      whole.inner.emit("data", g.bytes.subarray(n))
      expect(whole.ready()).toBe(true)
    },
    runs(200)
  )
})

describe("Mosquitto's vectors", () => {
  // test/broker/*proxy*: 192.0.2.5 port 0x1883 (6275) to 0.0.0.0 port 0
  const ipv4Addresses = Buffer.from([0xc0, 0x00, 0x02, 0x05, 0, 0, 0, 0, 0x18, 0x83, 0, 0])
  const sslCn = Buffer.from(
    "20" + "0019" + "05" + "00000000" + "21" + "0007" + Buffer.from("TLSv1.3").toString("hex") + "22" + "0007" + Buffer.from("ppppppp").toString("hex"),
    "hex"
  )

  it("IPv4 with an SSL TLV: the address, the TLS version and the CN", () => {
    const r = parseProxyHeader(2, v2Header(PROXY_V2_PROXY, FAMILY_TCP4, Buffer.concat([ipv4Addresses, sslCn])))
    expect(r).toMatchObject({
      _tag: "Parsed",
      header: {
        source: { address: "192.0.2.5", port: 6275 },
        destination: { address: "0.0.0.0", port: 0 },
        tls: { client: 5, verify: 0, version: "TLSv1.3", commonName: "ppppppp" }
      }
    })
  })

  it("IPv6: inet_ntop's text", () => {
    const addresses = Buffer.concat([
      Buffer.from("20010db805060708090000000000000" + "1", "hex"),
      Buffer.alloc(16),
      Buffer.from([0x18, 0x83, 0, 0])
    ])
    const r = parseProxyHeader(2, v2Header(PROXY_V2_PROXY, FAMILY_TCP6, addresses))
    expect(r).toMatchObject({ _tag: "Parsed", header: { source: { address: "2001:db8:506:708:900::1", port: 6275 } } })
  })

  it("501 bytes of payload is too long (PROXY_PACKET_LIMIT)", () => {
    expect(parseProxyHeader(2, v2Header(PROXY_V2_PROXY, FAMILY_TCP4, Buffer.alloc(501, 0x61)))._tag).toBe("Invalid")
    // 12 bytes of addresses and one TLV of 3 + 485 bytes: 500
    const full = v2Header(PROXY_V2_PROXY, FAMILY_TCP4, Buffer.concat([ipv4Addresses, tlv(0x05, Buffer.alloc(485, 0x61))]))
    expect(parseProxyHeader(2, full)).toMatchObject({ _tag: "Parsed", length: 516 })
    expect(parseProxyHeader(2, Buffer.concat([full.subarray(0, 15), Buffer.from([0xf5])]))._tag).toBe("Invalid")
  })

  it("v1: TCP4, TCP6, UNKNOWN; ports 1..65535; one line of at most 108 bytes", () => {
    expect(parseProxyHeader(1, Buffer.from("PROXY TCP4 192.0.2.5 192.0.2.6 6275 1883\r\nxyz"))).toMatchObject({
      _tag: "Parsed",
      length: 42,
      header: { source: { address: "192.0.2.5", port: 6275 } }
    })
    expect(parseProxyHeader(1, Buffer.from("PROXY TCP6 2001:db8::1 ::1 6275 1883\r\n"))).toMatchObject({
      header: { source: { address: "2001:db8::1", port: 6275 } }
    })
    expect(parseProxyHeader(1, Buffer.from("PROXY UNKNOWN\r\n"))).toMatchObject({ _tag: "Parsed", header: { source: undefined } })
    for (const bad of [
      "PROXY TCP4 192.0.2.5 192.0.2.6 0 1883\r\n",
      "PROXY TCP4 192.0.2.5 192.0.2.6 6275 65536\r\n",
      "PROXY TCP4 ::1 192.0.2.6 6275 1883\r\n",
      "PROXY TCP6 192.0.2.5 ::1 6275 1883\r\n",
      "PROXY TCP4 192.0.2.5 192.0.2.6 6275\r\n",
      "PROXY TCP4 192.0.2.5 192.0.2.6 6275 1883 1\r\n",
      "PROXY UDP4 192.0.2.5 192.0.2.6 6275 1883\r\n",
      "PROXY TCP4 192.0.2.5 192.0.2.6 6275 1883\n",
      "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    ]) {
      expect(parseProxyHeader(1, Buffer.from(bad, "latin1")), bad).toStrictEqual({ _tag: "Invalid", source: undefined })
    }
    expect(parseProxyHeader(1, Buffer.from("PROXY UNKNOWN " + "x".repeat(92) + "\r\n"))._tag).toBe("Parsed")
    expect(parseProxyHeader(1, Buffer.from("PROXY UNKNOWN " + "x".repeat(93) + "\r\n"))._tag).toBe("Invalid")
  })

  it("v2: LOCAL keeps no address; UNSPEC needs LOCAL; a version other than 2 or a UDP family is invalid", () => {
    expect(parseProxyHeader(2, v2Header(PROXY_V2_LOCAL, FAMILY_UNSPEC, Buffer.alloc(0)))).toStrictEqual({
      _tag: "Parsed",
      length: 16,
      header: { source: undefined, destination: undefined, tls: undefined }
    })
    expect(parseProxyHeader(2, v2Header(PROXY_V2_PROXY, FAMILY_UNSPEC, Buffer.alloc(0)))._tag).toBe("Invalid")
    expect(parseProxyHeader(2, v2Header(0x11, FAMILY_TCP4, Buffer.alloc(12)))._tag).toBe("Invalid")
    expect(parseProxyHeader(2, v2Header(PROXY_V2_PROXY, 0x12, Buffer.alloc(12)))._tag).toBe("Invalid")
    expect(parseProxyHeader(2, v2Header(PROXY_V2_PROXY, FAMILY_TCP6, Buffer.alloc(12)))._tag).toBe("Invalid")
  })
})

describe("ipv6: inet_ntop's text", () => {
  it("known addresses", () => {
    const text = (hex: string) => ipv6(Buffer.from(hex.padStart(32, "0"), "hex"), 0)
    expect(text("0")).toBe("::")
    expect(text("1")).toBe("::1")
    expect(text("ffff01020304")).toBe("::ffff:1.2.3.4")
    expect(text("01020304")).toBe("::1.2.3.4")
    expect(text("00010000000000000000000000000000")).toBe("1::")
    expect(text("20010db8000000000001000000000001")).toBe("2001:db8::1:0:0:1")
    expect(text("20010db8000100010001000100010001")).toBe("2001:db8:1:1:1:1:1:1")
    expect(text("20010db8000000010001000100010001")).toBe("2001:db8:0:1:1:1:1:1")
  })

  it.prop(
    "the same text as the WHATWG URL serializer (RFC 5952) for addresses without an IPv4 tail",
    [bytes(16, 16)],
    ([b]) => {
      const words = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2))
      const ipv4Tail = words.slice(0, 5).every((w) => w === 0) && (words[5] === 0 || words[5] === 0xffff) && !(words[5] === 0 && words[6] === 0)
      fc.pre(!ipv4Tail)
      const url = new URL(`http://[${words.map((w) => w.toString(16)).join(":")}]/`).hostname
      expect(ipv6(b, 0)).toBe(url.slice(1, -1))
    },
    runs(500)
  )
})

describe("admit: the listener's rules for a v2 header", () => {
  const source = { address: "192.0.2.5", port: 6275 }
  const socket = { address: "127.0.0.1", port: 40000 }
  const tls = (client: number, verify: number, commonName?: string) => ({ client, verify, version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", commonName })

  it("proxy_protocol_v2_require_tls: the PP2_CLIENT_SSL bit", () => {
    const options = { version: 2 as const, requireTls: true }
    expect(admit({ source, destination: undefined, tls: undefined }, options, socket)).toStrictEqual({
      ok: false,
      line: "Connection from 192.0.2.5:6275 rejected, client did not connect using TLS."
    })
    expect(admit({ source, destination: undefined, tls: tls(0, 0) }, options, socket).ok).toBe(false)
    expect(admit({ source, destination: undefined, tls: tls(PP2_CLIENT_SSL, 1) }, options, socket)).toStrictEqual({
      ok: true,
      source,
      identity: undefined,
      negotiated: "Connection from 192.0.2.5:6275 negotiated TLSv1.3 cipher TLS_AES_256_GCM_SHA384"
    })
    // a LOCAL header (the proxy's own connection) names the socket's address
    expect(admit({ source: undefined, destination: undefined, tls: undefined }, options, socket)).toStrictEqual({
      ok: false,
      line: "Connection from 127.0.0.1:40000 rejected, client did not connect using TLS."
    })
  })

  it("require_certificate: SSL, a certificate in the session, verify 0", () => {
    const options = { version: 2 as const, requireCertificate: true }
    const refused = "Connection from 192.0.2.5:6275 rejected, client did not provide a certificate."
    for (const t of [undefined, tls(PP2_CLIENT_SSL, 0), tls(PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, 1), tls(PP2_CLIENT_CERT_SESS, 0)]) {
      expect(admit({ source, destination: undefined, tls: t }, options, socket)).toStrictEqual({ ok: false, line: refused })
    }
    expect(admit({ source, destination: undefined, tls: tls(PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, 0, "dev") }, options, socket)).toMatchObject({
      ok: true,
      identity: { certificateCommonName: "dev", tlsUsername: undefined }
    })
  })

  it("use_identity_as_username: the verified certificate's CN; without one, no identity to stand for the username", () => {
    const options = { version: 2 as const, useIdentityAsUsername: true }
    expect(admit({ source, destination: undefined, tls: tls(PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, 0, "dev") }, options, socket)).toMatchObject({
      ok: true,
      identity: { certificateCommonName: "dev", tlsUsername: "identity" }
    })
    // an unverified certificate's CN is not used
    expect(admit({ source, destination: undefined, tls: tls(PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, 2, "dev") }, options, socket)).toMatchObject({
      ok: true,
      identity: { tlsUsername: "identity" }
    })
  })

  it("version 1 carries no TLS information: the TLS rules that refuse a v2 header do not apply", () => {
    const rules = { requireTls: true, requireCertificate: true, useIdentityAsUsername: true }
    const header = { source, destination: undefined, tls: undefined }
    expect(admit(header, { version: 2, ...rules }, socket).ok).toBe(false)
    expect(admit(header, { version: 1, ...rules }, socket)).toStrictEqual({ ok: true, source, identity: undefined, negotiated: undefined })
  })
})

describe("ProxiedSocket", () => {
  it("a v2 LOCAL header: the socket's own address, and the bytes after it", () => {
    const w = wait({ version: 2 })
    w.inner.emit("data", Buffer.concat([v2Header(PROXY_V2_LOCAL, FAMILY_UNSPEC, Buffer.alloc(0)), Buffer.from([0x10, 0x00])]))
    expect(w.ready()).toBe(true)
    expect([w.socket.remoteAddress, w.socket.remotePort]).toStrictEqual(["10.9.8.7", 4242])
    expect(w.delivered).toStrictEqual([Buffer.from([0x10, 0x00])])
  })

  it("the connect timeout closes a socket still waiting for its header, without a line; not one whose header was read", () => {
    const w = wait({ version: 1 })
    w.inner.emit("data", Buffer.from("PROXY TCP4 1.2"))
    w.socket.connectTimedOut()
    expect(w.inner.destroyed).toBe(true)
    expect(w.abandoned()).toBe(true)
    expect(w.lines).toStrictEqual([])
    // a connection now: the connection's own connect timeout applies, not the header's
    const read = wait({ version: 1 })
    read.inner.emit("data", Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 1000 1883\r\n"))
    read.socket.connectTimedOut()
    expect([read.ready(), read.inner.destroyed, read.abandoned()]).toStrictEqual([true, false, false])
  })

  it("after the header, the connection gets the socket's events and later reads", () => {
    const w = wait({ version: 1 })
    w.inner.emit("data", Buffer.from("PROXY TCP4 192.0.2.5 192.0.2.6 6275 1883\r\n"))
    const events: Array<string> = []
    w.socket.on("end", () => events.push("end"))
    w.socket.on("close", () => events.push("close"))
    w.inner.emit("data", Buffer.from("abc"))
    w.inner.emit("end")
    w.inner.destroy()
    expect(w.delivered).toStrictEqual([Buffer.from("abc")])
    expect(events).toStrictEqual(["end", "close"])
    expect(w.abandoned()).toBe(false)
  })
})
