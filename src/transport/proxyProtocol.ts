/**
 * The PROXY protocol (HAProxy's, versions 1 and 2) on a listener, as Mosquitto 2.1 reads it
 * (`enable_proxy_protocol 1|2`, `proxy_protocol_v2_require_tls`; its src/proxy_v1.c and
 * src/proxy_v2.c): a proxy in front of the broker starts every connection with a header that
 * says where the client really connected from, and (v2) whether it used TLS and presented a
 * verified certificate to the proxy.
 *
 * - {@link parseProxyHeader} is pure: the bytes received so far → incomplete, invalid, or the
 *   header and its length (whatever follows it is the client's MQTT, or its HTTP upgrade).
 * - {@link admit} applies the listener's rules to a header (`proxy_protocol_v2_require_tls`,
 *   `require_certificate`, `use_identity_as_username`) and gives Mosquitto's log lines.
 * - {@link ProxiedSocket} waits for the header on an accepted socket (a raw TCP handle or a
 *   `net.Socket`), then is the connection's `MqttSocket`: the proxied `remoteAddress` /
 *   `remotePort`, the bytes after the header delivered first, everything else passed through.
 *   Only listeners with `enable_proxy_protocol` make one: a plain listener's sockets go to the
 *   connection as they are, with no extra work per read.
 * - {@link ProxyHeaderWait} does the same for a `net.Socket` that is handed on as itself (the
 *   HTTP server of a WebSocket listener reads the upgrade after the header).
 *
 * Where Midge differs from Mosquitto 2.1 (docs/configuration.md, "Running behind a proxy"):
 * - a v2 LOCAL header (the proxy's own health check) keeps the socket's own address and the
 *   connection goes on, as the PROXY protocol specification says; Mosquitto closes it;
 * - "connected over TLS" is the PP2_CLIENT_SSL bit of the PP2_TYPE_SSL TLV (the specification's
 *   meaning; HAProxy's `send-proxy-v2-ssl` sends that TLV for plain clients too, with the bit
 *   clear), where Mosquitto counts the TLV's presence;
 * - the certificate's CN is used (`use_identity_as_username`) only when the header says the
 *   certificate was verified, as Midge's TLS listeners use only a verified certificate's;
 * - a v1 `PROXY UNKNOWN` line without anything after UNKNOWN is accepted (the specification's
 *   form; Mosquitto wants a blank after it);
 * - a wrong start (not `PROXY ` and printable ASCII; not the v2 signature, or a version, command or
 *   family Mosquitto refuses) is refused as soon as those bytes arrive: a client that sends its
 *   CONNECT without a header is closed at once, not after 108 bytes or at the timeout.
 */
import { Buffer } from "node:buffer"
import type * as net from "node:net"
import { isIPv4, isIPv6 } from "node:net"
import type { TlsIdentity } from "./tls.js"
import type { Watched } from "./Watchdog.js"
import type { MqttSocket } from "./websocket.js"
import { SocketEvents } from "./socketEvents.js"

/** A listener's PROXY protocol settings (`enable_proxy_protocol` and the options it reads). */
export interface ProxyListenerOptions {
  /** `enable_proxy_protocol 1|2`: every connection must start with a header of this version */
  readonly version: 1 | 2
  /** `proxy_protocol_v2_require_tls`: a v2 header must say the client connected over TLS */
  readonly requireTls?: boolean | undefined
  /** the listener's `require_certificate`: a v2 header must say the client presented a verified certificate */
  readonly requireCertificate?: boolean | undefined
  /** the listener's `use_identity_as_username`: the v2 header's certificate CN is the username */
  readonly useIdentityAsUsername?: boolean | undefined
}

// ---------------------------------------------------------------------------
// the header

export interface ProxyAddress {
  readonly address: string
  /** 0 for a Unix socket */
  readonly port: number
}

/** The v2 PP2_TYPE_SSL TLV. */
export interface ProxyTls {
  /** PP2_CLIENT_SSL (1), PP2_CLIENT_CERT_CONN (2), PP2_CLIENT_CERT_SESS (4) */
  readonly client: number
  /** 0: the client's certificate was verified */
  readonly verify: number
  /** PP2_SUBTYPE_SSL_VERSION, e.g. "TLSv1.3" */
  readonly version: string | undefined
  /** PP2_SUBTYPE_SSL_CIPHER */
  readonly cipher: string | undefined
  /** PP2_SUBTYPE_SSL_CN: the certificate's common name */
  readonly commonName: string | undefined
}

export interface ProxyHeader {
  /** where the client connected from; undefined for v2 LOCAL and v1 UNKNOWN: the socket's own address stands */
  readonly source: ProxyAddress | undefined
  readonly destination: ProxyAddress | undefined
  /** v2: the PP2_TYPE_SSL TLV, when the proxy sent one */
  readonly tls: ProxyTls | undefined
}

export type HeaderParse =
  /** a prefix of a header that may still become valid (always shorter than {@link maxHeaderLength}) */
  | { readonly _tag: "Incomplete" }
  /** not a header: `source` is known when only its TLVs are at fault (Mosquitto's line names it) */
  | { readonly _tag: "Invalid"; readonly source: ProxyAddress | undefined }
  /** the header is the first `length` bytes */
  | { readonly _tag: "Parsed"; readonly header: ProxyHeader; readonly length: number }

/** proxy_v1.c's PROXY_V1_PACKET_LIMIT: the line with its CRLF (the specification's own limit is 107) */
export const V1_MAX_LENGTH = 108
/** proxy_v2.c's PROXY_PACKET_LIMIT: the bytes after the 16 of the fixed part */
export const V2_MAX_PAYLOAD = 500

/** The longest header a listener of this version waits for. */
export const maxHeaderLength = (version: 1 | 2): number => (version === 1 ? V1_MAX_LENGTH : 16 + V2_MAX_PAYLOAD)

export const PP2_CLIENT_SSL = 0x01
export const PP2_CLIENT_CERT_CONN = 0x02
export const PP2_CLIENT_CERT_SESS = 0x04
export const PP2_TYPE_SSL = 0x20
export const PP2_SUBTYPE_SSL_VERSION = 0x21
export const PP2_SUBTYPE_SSL_CN = 0x22
export const PP2_SUBTYPE_SSL_CIPHER = 0x23

/** v2 `ver_cmd` and `fam` values */
export const PROXY_V2_LOCAL = 0x20
export const PROXY_V2_PROXY = 0x21
export const FAMILY_UNSPEC = 0x00
export const FAMILY_TCP4 = 0x11
export const FAMILY_TCP6 = 0x21
export const FAMILY_UNIX = 0x31

/** The 12 bytes every v2 header starts with. */
export const V2_SIGNATURE: Buffer = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const V1_PREFIX: Buffer = Buffer.from("PROXY ", "latin1")

const INCOMPLETE: HeaderParse = { _tag: "Incomplete" }
const INVALID: HeaderParse = { _tag: "Invalid", source: undefined }

/** Read a PROXY header of `version` from the start of `bytes`. Never throws. */
export const parseProxyHeader = (version: 1 | 2, bytes: Buffer): HeaderParse => (version === 1 ? parseV1(bytes) : parseV2(bytes))

// v1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN[ ...]\r\n", printable ASCII

const PORT = /^\d{1,5}$/

const parseV1 = (buf: Buffer): HeaderParse => {
  const n = Math.min(buf.length, V1_MAX_LENGTH)
  for (let i = 0; i < n && i < V1_PREFIX.length; i++) if (buf[i] !== V1_PREFIX[i]) return INVALID
  let end = -1
  for (let i = V1_PREFIX.length; i < n; i++) {
    const b = buf[i]
    if (b === 0x0d) {
      if (i + 1 < n && buf[i + 1] !== 0x0a) return INVALID
      continue
    }
    if (b === 0x0a) {
      if (buf[i - 1] !== 0x0d) return INVALID
      end = i - 1
      break
    }
    if (b < 0x20 || b > 0x7e) return INVALID
  }
  if (end < 0) return n >= V1_MAX_LENGTH ? INVALID : INCOMPLETE
  const rest = buf.toString("latin1", V1_PREFIX.length, end)
  const length = end + 2
  if (rest === "UNKNOWN" || rest.startsWith("UNKNOWN ")) {
    return { _tag: "Parsed", header: { source: undefined, destination: undefined, tls: undefined }, length }
  }
  const fields = rest.split(" ")
  if (fields.length !== 5) return INVALID
  const [proto, src, dst, sport, dport] = fields
  const isAddress = proto === "TCP4" ? isIPv4 : proto === "TCP6" ? (s: string) => isIPv6(s) && !s.includes("%") : undefined
  if (isAddress === undefined || !isAddress(src) || !isAddress(dst)) return INVALID
  if (!PORT.test(sport) || !PORT.test(dport)) return INVALID
  const sourcePort = Number(sport)
  const destinationPort = Number(dport)
  // proxy_v1.c: both ports 1..65535
  if (sourcePort < 1 || sourcePort > 65535 || destinationPort < 1 || destinationPort > 65535) return INVALID
  return {
    _tag: "Parsed",
    header: { source: { address: src, port: sourcePort }, destination: { address: dst, port: destinationPort }, tls: undefined },
    length
  }
}

// v2: signature, version and command, family, length, addresses, TLVs

const validVersionCommand = (b: number): boolean => b === PROXY_V2_LOCAL || b === PROXY_V2_PROXY

/** proxy_v2.c: TCP over IPv4 or IPv6, or a Unix stream socket; unspecified only with LOCAL */
const validFamily = (versionCommand: number, family: number): boolean =>
  family === FAMILY_TCP4 || family === FAMILY_TCP6 || family === FAMILY_UNIX || (family === FAMILY_UNSPEC && versionCommand === PROXY_V2_LOCAL)

/** the address block each family needs */
const minimumPayload = (family: number): number =>
  family === FAMILY_TCP4 ? 12 : family === FAMILY_TCP6 ? 36 : family === FAMILY_UNIX ? 216 : 0

const parseV2 = (buf: Buffer): HeaderParse => {
  const n = Math.min(buf.length, V2_SIGNATURE.length)
  for (let i = 0; i < n; i++) if (buf[i] !== V2_SIGNATURE[i]) return INVALID
  // what is already there of the fixed part is checked at once
  if (buf.length > 12 && !validVersionCommand(buf[12])) return INVALID
  if (buf.length > 13 && !validFamily(buf[12], buf[13])) return INVALID
  if (buf.length < 16) return INCOMPLETE
  const versionCommand = buf[12]
  const family = buf[13]
  const payload = buf.readUInt16BE(14)
  if (payload > V2_MAX_PAYLOAD || payload < minimumPayload(family)) return INVALID
  const length = 16 + payload
  if (buf.length < length) return INCOMPLETE
  if (versionCommand === PROXY_V2_LOCAL) {
    // the proxy's own connection (a health check): its addresses and TLVs are ignored
    return { _tag: "Parsed", header: { source: undefined, destination: undefined, tls: undefined }, length }
  }
  let source: ProxyAddress
  let destination: ProxyAddress
  let tlvs: number
  if (family === FAMILY_TCP4) {
    source = { address: ipv4(buf, 16), port: buf.readUInt16BE(24) }
    destination = { address: ipv4(buf, 20), port: buf.readUInt16BE(26) }
    tlvs = 28
  } else if (family === FAMILY_TCP6) {
    source = { address: ipv6(buf, 16), port: buf.readUInt16BE(48) }
    destination = { address: ipv6(buf, 32), port: buf.readUInt16BE(50) }
    tlvs = 52
  } else {
    source = { address: cString(buf, 16, 124), port: 0 }
    destination = { address: cString(buf, 124, 232), port: 0 }
    tlvs = 232
  }
  const tls = readTlvs(buf, tlvs, length)
  if (tls === false) return { _tag: "Invalid", source }
  return { _tag: "Parsed", header: { source, destination, tls }, length }
}

/** The TLVs in `[from, to)`: the last PP2_TYPE_SSL, undefined without one, false when they do not fit. */
const readTlvs = (buf: Buffer, from: number, to: number): ProxyTls | undefined | false => {
  let tls: ProxyTls | undefined
  let at = from
  while (at < to) {
    if (to - at < 3) return false
    const type = buf[at]
    const length = buf.readUInt16BE(at + 1)
    at += 3
    if (length > to - at) return false
    if (type === PP2_TYPE_SSL) {
      const ssl = readSsl(buf, at, at + length)
      if (ssl === false) return false
      tls = ssl
    }
    at += length
  }
  return tls
}

/** PP2_TYPE_SSL: client (1 byte), verify (4), then sub-TLVs within the TLV's own value. */
const readSsl = (buf: Buffer, from: number, to: number): ProxyTls | false => {
  if (to - from < 5) return false
  const client = buf[from]
  const verify = buf.readUInt32BE(from + 1)
  let version: string | undefined
  let cipher: string | undefined
  let commonName: string | undefined
  let at = from + 5
  while (at < to) {
    if (to - at < 3) return false
    const type = buf[at]
    const length = buf.readUInt16BE(at + 1)
    at += 3
    if (length > to - at) return false
    if (type === PP2_SUBTYPE_SSL_VERSION) version = cString(buf, at, at + length)
    else if (type === PP2_SUBTYPE_SSL_CIPHER) cipher = cString(buf, at, at + length)
    else if (type === PP2_SUBTYPE_SSL_CN) commonName = cString(buf, at, at + length)
    at += length
  }
  return { client, verify, version, cipher, commonName }
}

/** UTF-8 up to the first NUL (Mosquitto's `strndup`). */
const cString = (buf: Buffer, from: number, to: number): string => {
  const nul = buf.indexOf(0, from)
  return buf.toString("utf8", from, nul >= 0 && nul < to ? nul : to)
}

const ipv4 = (buf: Buffer, at: number): string => `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`

/**
 * An IPv6 address as `inet_ntop` prints it (what Mosquitto logs): lower-case hexadecimal, the
 * longest run of two or more zero groups (the first of equals) as `::`, and `::a.b.c.d` /
 * `::ffff:a.b.c.d` for IPv4-compatible and IPv4-mapped addresses.
 */
export const ipv6 = (buf: Uint8Array, at: number): string => {
  const words: Array<number> = []
  for (let i = 0; i < 8; i++) words.push((buf[at + 2 * i] << 8) | buf[at + 2 * i + 1])
  let bestBase = -1
  let bestLength = 0
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && words[j] === 0) j++
    if (j - i > bestLength) {
      bestBase = i
      bestLength = j - i
    }
    i = j
  }
  if (bestLength < 2) bestBase = -1
  let out = ""
  for (let i = 0; i < 8; i++) {
    if (bestBase >= 0 && i >= bestBase && i < bestBase + bestLength) {
      if (i === bestBase) out += ":"
      continue
    }
    if (i !== 0) out += ":"
    if (i === 6 && bestBase === 0 && (bestLength === 6 || (bestLength === 5 && words[5] === 0xffff))) {
      return out + `${buf[at + 12]}.${buf[at + 13]}.${buf[at + 14]}.${buf[at + 15]}`
    }
    out += words[i].toString(16)
  }
  if (bestBase >= 0 && bestBase + bestLength === 8) out += ":"
  return out
}

// ---------------------------------------------------------------------------
// the listener's rules

export type Admission =
  | {
      readonly ok: true
      /** the client's address and port; undefined: the socket's own (v2 LOCAL, v1 UNKNOWN) */
      readonly source: ProxyAddress | undefined
      /** what the header says of the client's TLS, for the connection's authentication */
      readonly identity: TlsIdentity | undefined
      /** proxy_v2.c's line for a header naming the TLS version and cipher */
      readonly negotiated: string | undefined
    }
  | { readonly ok: false; readonly line: string }

/**
 * A parsed header against the listener's rules, with proxy_v2.c's lines. Version 1 carries no
 * TLS information: there, as in Mosquitto, `require_certificate` and `use_identity_as_username`
 * are not applied (the configuration reader warns about them).
 */
export const admit = (
  header: ProxyHeader,
  options: ProxyListenerOptions,
  socket: { readonly address: string | undefined; readonly port: number | undefined }
): Admission => {
  if (options.version !== 2) return { ok: true, source: header.source, identity: undefined, negotiated: undefined }
  const who = header.source !== undefined ? `${header.source.address}:${header.source.port}` : `${socket.address ?? "unknown"}:${socket.port ?? 0}`
  const tls = header.tls
  const overTls = tls !== undefined && (tls.client & PP2_CLIENT_SSL) !== 0
  // proxy_v2.c: a certificate presented in this TLS session, and verified
  const certificate = overTls && (tls.client & PP2_CLIENT_CERT_SESS) !== 0 && tls.verify === 0
  if (options.requireTls === true && !overTls) return { ok: false, line: `Connection from ${who} rejected, client did not connect using TLS.` }
  if (options.requireCertificate === true && !certificate) {
    return { ok: false, line: `Connection from ${who} rejected, client did not provide a certificate.` }
  }
  const tlsUsername = options.useIdentityAsUsername === true ? ("identity" as const) : undefined
  const identity: TlsIdentity | undefined = certificate
    ? { certificateCommonName: tls.commonName, tlsUsername }
    : tlsUsername !== undefined
      ? { tlsUsername }
      : undefined
  const negotiated =
    overTls && tls.version !== undefined && tls.cipher !== undefined ? `Connection from ${who} negotiated ${tls.version} cipher ${tls.cipher}` : undefined
  return { ok: true, source: header.source, identity, negotiated }
}

// ---------------------------------------------------------------------------
// waiting for the header on a socket

/** What a socket waiting for its header tells the listener. */
export interface ProxyHeaderHooks {
  /** the header is read and admitted: make the connection now (the bytes after the header follow once this returns) */
  readonly ready: (socket: ProxiedSocket) => void
  /** the socket closed, or was closed, before its header was read and admitted */
  readonly abandoned: (socket: ProxiedSocket) => void
  /** a notice line for the log */
  readonly notice: (line: string) => void
  /** `connection_messages`: the lines of loop.c's `do_disconnect` are logged only with it */
  readonly connectionMessages: () => boolean
}

type Inner = MqttSocket & { destroy(): void }


type Step =
  /** not yet: keep `received` (a copy, or a concatenation: never a view on the socket's read buffer) */
  | { readonly _tag: "Wait"; readonly received: Buffer }
  /** refused, its line logged; `why`: the error of loop.c's do_disconnect line */
  | { readonly _tag: "Refused"; readonly why: string }
  /** the header is read and admitted; `rest`: the bytes after it */
  | { readonly _tag: "Admitted"; readonly admission: Extract<Admission, { ok: true }>; readonly rest: Buffer }

/** One read of a socket waiting for its header, with proxy_v1.c's and proxy_v2.c's lines. */
const headerStep = (
  received: Buffer | undefined,
  chunk: Buffer,
  options: ProxyListenerOptions,
  socket: { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined },
  hooks: Pick<ProxyHeaderHooks, "notice">
): Step => {
  const bytes = received === undefined ? chunk : Buffer.concat([received, chunk])
  const result = parseProxyHeader(options.version, bytes)
  switch (result._tag) {
    case "Incomplete":
      // a copy: a raw read's chunk may be a view on a buffer shared with other reads (rawTcp.ts)
      return { _tag: "Wait", received: received === undefined ? Buffer.from(chunk) : bytes }
    case "Invalid":
      if (result.source !== undefined) {
        hooks.notice(`Connection from ${result.source.address}:${result.source.port} rejected, corrupt PROXY header.`)
        return { _tag: "Refused", why: "Proxy error" }
      }
      if (options.version === 1) hooks.notice("Connection rejected, corrupt PROXY header.")
      return { _tag: "Refused", why: "Invalid input" }
    case "Parsed": {
      const admission = admit(result.header, options, { address: socket.remoteAddress, port: socket.remotePort })
      if (!admission.ok) {
        hooks.notice(admission.line)
        return { _tag: "Refused", why: "Proxy error" }
      }
      if (admission.negotiated !== undefined) hooks.notice(admission.negotiated)
      return { _tag: "Admitted", admission, rest: bytes.subarray(result.length) }
    }
  }
}

/** The header's bytes while they arrive, for one socket. */
class HeaderBytes {
  private received: Buffer | undefined = undefined

  /** One read: undefined while more is needed, else the refusal (its line logged) or the admission. */
  read(
    chunk: Buffer,
    options: ProxyListenerOptions,
    socket: { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined },
    hooks: Pick<ProxyHeaderHooks, "notice">
  ): Exclude<Step, { readonly _tag: "Wait" }> | undefined {
    const step = headerStep(this.received, chunk, options, socket, hooks)
    if (step._tag === "Wait") {
      this.received = step.received
      return undefined
    }
    this.received = undefined
    return step
  }
}

/** The lines of a socket that goes before its header was read: the client's end, or loop.c's do_disconnect for `why` */
const goneLines = (hooks: Pick<ProxyHeaderHooks, "notice" | "connectionMessages">, byClient: boolean, why: string | undefined): void => {
  if (!hooks.connectionMessages()) return
  if (byClient) hooks.notice("Client <unknown> closed its connection.")
  if (why !== undefined) hooks.notice(`Bad socket read/write on client <unknown>: ${why}`)
}

/**
 * Reads the PROXY header from an accepted socket, then stands for that socket: the connection
 * made on it sees the client's address and port from the header and receives the bytes after
 * the header first. Until the header is admitted it is watched like a connection that has not
 * sent CONNECT (the listener's `Watchdog` closes it at the connect timeout).
 */
export class ProxiedSocket extends SocketEvents implements MqttSocket, Watched {
  // Watched: the header wait counts as a connection before its CONNECT
  watchIndex = -1
  watchAt = 0
  readonly keepalive = 0
  readonly lastActivity = 0
  state: "new" | "closed" = "new"
  /** what the header says of the client's TLS (undefined until admitted) */
  identity: TlsIdentity | undefined = undefined
  private phase: "header" | "open" | "failed" = "header"
  private readonly header = new HeaderBytes()
  private source: ProxyAddress | undefined = undefined

  constructor(
    readonly inner: Inner,
    private readonly options: ProxyListenerOptions,
    private readonly hooks: ProxyHeaderHooks
  ) {
    super()
    inner.on("data", (chunk: Buffer) => {
      if (this.phase === "open") this.onDataFn?.call(this, chunk)
      else if (this.phase === "header") this.headerBytes(chunk)
    })
    inner.on("error", (error: Error) => {
      if (this.phase === "open") this.onErrorFn?.call(this, error)
      else if (this.phase === "header") this.lost(true)
    })
    inner.on("end", () => {
      if (this.phase === "open") this.onEndFn?.call(this)
      else if (this.phase === "header") this.lost(true)
    })
    inner.on("close", () => {
      if (this.phase === "open") this.onCloseFn?.call(this)
      else if (this.phase === "header") this.lost(false)
    })
    inner.on("drain", () => {
      if (this.phase === "open") this.onDrainFn?.call(this)
    })
  }

  /** the client's address from the header; the socket's own for v2 LOCAL and v1 UNKNOWN */
  get remoteAddress(): string | undefined {
    return this.source !== undefined ? this.source.address : this.inner.remoteAddress
  }

  get remotePort(): number | undefined {
    return this.source !== undefined ? this.source.port : this.inner.remotePort
  }

  get writableLength(): number {
    return this.inner.writableLength
  }

  get writable(): boolean {
    return this.inner.writable
  }

  get destroyed(): boolean {
    return this.inner.destroyed
  }

  write(chunk: Buffer): boolean {
    return this.inner.write(chunk)
  }

  pause(): this {
    this.inner.pause()
    return this
  }

  resume(): this {
    this.inner.resume()
    return this
  }

  end(): this {
    this.inner.end()
    return this
  }

  destroySoon(): void {
    this.inner.destroySoon()
  }

  destroy(): void {
    this.inner.destroy()
  }

  setNoDelay(noDelay?: boolean): this {
    this.inner.setNoDelay(noDelay)
    return this
  }

  /** Watched: no complete header within the connect timeout (closed without a line, as a connection without CONNECT) */
  connectTimedOut(): void {
    if (this.phase !== "header") return
    this.fail()
  }

  /** Watched: never connected, so never due for keepalive */
  keepaliveExpired(): void {}

  private headerBytes(chunk: Buffer): void {
    const step = this.header.read(chunk, this.options, this.inner, this.hooks)
    switch (step?._tag) {
      case undefined:
        return
      case "Refused":
        return this.fail(step.why)
      case "Admitted": {
        this.source = step.admission.source
        this.identity = step.admission.identity
        this.phase = "open"
        this.state = "closed"
        this.hooks.ready(this)
        if (step.rest.length > 0 && this.phase === "open" && !this.inner.destroyed) this.onDataFn?.call(this, step.rest)
      }
    }
  }

  /** the client went away (end, error) or the socket was closed before the header was read */
  private lost(byClient: boolean): void {
    this.fail(undefined, byClient)
  }

  /** close before a connection is made; `why`: loop.c's do_disconnect line for the error */
  private fail(why?: string, byClient = false): void {
    if (this.phase !== "header") return
    this.phase = "failed"
    this.state = "closed"
    goneLines(this.hooks, byClient, why)
    this.inner.destroy()
    this.hooks.abandoned(this)
  }
}

// ---------------------------------------------------------------------------
// waiting for the header on a socket handed on as itself (WebSocket listeners)

/** What the header of a handed-on socket said of the client's TLS, by that socket (the HTTP request's `socket`). */
const handedOn = new WeakMap<object, TlsIdentity>()

/** The TLS identity the PROXY header of a WebSocket connection's TCP socket gave (undefined: none). */
export const proxiedIdentity = (socket: object): TlsIdentity | undefined => handedOn.get(socket)

export interface ProxyHandOnHooks extends Pick<ProxyHeaderHooks, "notice" | "connectionMessages"> {
  /** the header is read and admitted: hand the socket on (it holds the bytes after the header, put back) */
  readonly ready: (socket: net.Socket) => void
  /** the socket closed, or was closed, before its header was read and admitted */
  readonly abandoned: (wait: ProxyHeaderWait) => void
}

/**
 * Reads the PROXY header from a `net.Socket` that is then handed on as itself, to the HTTP
 * server of a WebSocket listener (the header comes before the HTTP upgrade, as in Mosquitto
 * 2.1's built-in websockets): once the header is admitted its listeners are removed, the bytes
 * after the header are put back (`unshift`), and its `remoteAddress` / `remotePort` become the
 * header's. Watched like {@link ProxiedSocket} until then.
 */
export class ProxyHeaderWait implements Watched {
  watchIndex = -1
  watchAt = 0
  readonly keepalive = 0
  readonly lastActivity = 0
  state: "new" | "closed" = "new"
  private readonly header = new HeaderBytes()
  private readonly onData = (chunk: Buffer): void => this.data(chunk)
  private readonly onGone = (): void => this.lost(true)
  private readonly onClose = (): void => this.lost(false)

  constructor(
    readonly socket: net.Socket,
    private readonly options: ProxyListenerOptions,
    private readonly hooks: ProxyHandOnHooks
  ) {
    socket.on("data", this.onData)
    socket.on("end", this.onGone)
    socket.on("error", this.onGone)
    socket.on("close", this.onClose)
  }

  /** Watched: no complete header within the connect timeout */
  connectTimedOut(): void {
    this.fail()
  }

  /** Watched: never connected */
  keepaliveExpired(): void {}

  destroy(): void {
    this.socket.destroy()
  }

  private data(chunk: Buffer): void {
    if (this.state !== "new") return
    const step = this.header.read(chunk, this.options, this.socket, this.hooks)
    switch (step?._tag) {
      case undefined:
        return
      case "Refused":
        return this.fail(step.why)
      case "Admitted": {
        this.state = "closed"
        const socket = this.socket
        socket.removeListener("data", this.onData)
        socket.removeListener("end", this.onGone)
        socket.removeListener("error", this.onGone)
        socket.removeListener("close", this.onClose)
        const source = step.admission.source
        if (source !== undefined) {
          // own properties in front of net.Socket's getters: the HTTP request and the WebSocket stream read these
          Object.defineProperty(socket, "remoteAddress", { value: source.address, configurable: true, enumerable: true })
          Object.defineProperty(socket, "remotePort", { value: source.port, configurable: true, enumerable: true })
        }
        if (step.admission.identity !== undefined) handedOn.set(socket, step.admission.identity)
        if (step.rest.length > 0) socket.unshift(step.rest)
        this.hooks.ready(socket)
      }
    }
  }

  private lost(byClient: boolean): void {
    this.fail(undefined, byClient)
  }

  private fail(why?: string, byClient = false): void {
    if (this.state !== "new") return
    this.state = "closed"
    goneLines(this.hooks, byClient, why)
    this.socket.destroy()
    this.hooks.abandoned(this)
  }
}
