/**
 * The bridge's socket to the remote broker: TCP, or TLS as Mosquitto's
 * bridges do it (lib/net_mosq.c, client side): TLS when `bridge_cafile`,
 * `bridge_capath` or `bridge_psk` is set; the remote certificate is verified
 * against those CAs and, unless `bridge_insecure`, its host name;
 * `bridge_certfile` / `bridge_keyfile` for a client certificate;
 * `bridge_tls_version` is the minimum version; `bridge_alpn`; TLS-PSK with
 * `bridge_identity` / `bridge_psk`; `bridge_tls_use_os_certs` adds the system's
 * CAs; `bridge_require_ocsp` asks for a stapled OCSP response and refuses the
 * connection unless it is good (./ocsp.ts); `bridge_tcp_keepalive` turns TCP
 * keepalive on (Node sets the idle time only). Files are read at each
 * connection attempt, so renewed certificates are picked up, and a missing
 * file is a failed attempt (retried as `restart_timeout` says), as in Mosquitto.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as tls from "node:tls"
import { Data, Duration, Effect, type Scope } from "effect"
import type { BridgeAddress, BridgeTls, TcpKeepalive } from "./config.js"
import { checkOcsp } from "./ocsp.js"

export class SocketError extends Data.TaggedError("SocketError")<{
  readonly reason: "Connect" | "Tls" | "Timeout"
  readonly message: string
}> {}

const VERSIONS: Readonly<Record<string, tls.SecureVersion>> = { "tlsv1.3": "TLSv1.3", "tlsv1.2": "TLSv1.2", "tlsv1.1": "TLSv1.1" }

const CERT_BEGIN = "-----BEGIN CERTIFICATE-----"

const readFile = (option: string, file: string): string => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch (e) {
    throw new SocketError({ reason: "Tls", message: `${option}: unable to read "${file}": ${(e as Error).message}` })
  }
}

/** Every PEM certificate file of a `bridge_capath` directory (openssl rehash links included, once). */
const readCapath = (dir: string): Array<string> => {
  let names: Array<string>
  try {
    names = fs.readdirSync(dir).sort()
  } catch (e) {
    throw new SocketError({ reason: "Tls", message: `bridge_capath: unable to read "${dir}": ${(e as Error).message}` })
  }
  const out = new Set<string>()
  for (const name of names) {
    try {
      const file = path.join(dir, name)
      if (!fs.statSync(file).isFile()) continue
      const text = fs.readFileSync(file, "utf8")
      if (text.includes(CERT_BEGIN)) out.add(text)
    } catch {
      // unreadable entries are skipped, as OpenSSL's lookup does
    }
  }
  return [...out]
}

/** The CA bundles of the common distributions, in the order OpenSSL builds look for them. */
const SYSTEM_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]

/**
 * The system's trusted CA certificates (`bridge_tls_use_os_certs`), where
 * OpenSSL's default verify paths find them, as Mosquitto's
 * `SSL_CTX_set_default_verify_paths`: the file `SSL_CERT_FILE` (else the
 * distribution's bundle) and the certificates of the directory `SSL_CERT_DIR`.
 * Without any of them, Node's own copy of the Mozilla list.
 */
export const osCertificates = (env: NodeJS.ProcessEnv = process.env): Array<string> => {
  const out: Array<string> = []
  const file = env.SSL_CERT_FILE ?? SYSTEM_BUNDLES.find((f) => fs.existsSync(f))
  if (file !== undefined) out.push(readFile("bridge_tls_use_os_certs", file))
  if (env.SSL_CERT_DIR !== undefined) for (const dir of env.SSL_CERT_DIR.split(":")) out.push(...readCapath(dir))
  return out.length > 0 ? out : [...tls.rootCertificates]
}

/** tls.connect passes `requestOCSP` on to its TLSSocket; @types/node lists it on TLSSocketOptions only */
type ClientOptions = tls.ConnectionOptions & Pick<tls.TLSSocketOptions, "requestOCSP">

/** The node:tls client options for a bridge's TLS settings (reads the files; throws SocketError). */
export const tlsOptions = (t: BridgeTls, host: string): ClientOptions => {
  const options: ClientOptions = {
    rejectUnauthorized: true,
    minVersion: VERSIONS[t.version ?? "tlsv1.2"],
    maxVersion: "TLSv1.3"
  }
  if (net.isIP(host) === 0) options.servername = host
  if (t.psk !== undefined && t.pskIdentity !== undefined) {
    const key = Buffer.from(t.psk, "hex")
    const identity = t.pskIdentity
    options.pskCallback = () => ({ psk: key, identity })
    // Node negotiates TLS-PSK with TLS 1.2 cipher suites only; its default list excludes them
    options.maxVersion = "TLSv1.2"
    options.ciphers = t.ciphers ?? "PSK"
    options.checkServerIdentity = () => undefined
  } else {
    const ca: Array<string> = t.useOsCerts ? osCertificates() : []
    if (t.cafile !== undefined) ca.push(readFile("bridge_cafile", t.cafile))
    if (t.capath !== undefined) ca.push(...readCapath(t.capath))
    options.ca = ca
    if (t.certfile !== undefined && t.keyfile !== undefined) {
      options.cert = readFile("bridge_certfile", t.certfile)
      options.key = readFile("bridge_keyfile", t.keyfile)
    }
    if (t.ciphers !== undefined || t.ciphersTls13 !== undefined) {
      const defaults = tls.DEFAULT_CIPHERS.split(":")
      const v13 = t.ciphersTls13 ?? defaults.filter((c) => c.startsWith("TLS_")).join(":")
      const v12 = t.ciphers ?? defaults.filter((c) => !c.startsWith("TLS_")).join(":")
      options.ciphers = `${v13}:${v12}`
    }
    // bridge_insecure: the chain is still verified, the host name is not
    if (t.insecure) options.checkServerIdentity = () => undefined
  }
  if (t.alpn !== undefined) options.ALPNProtocols = [t.alpn]
  // status_request in the ClientHello, as Mosquitto's SSL_CTX_set_tlsext_status_type
  if (t.requireOcsp) options.requestOCSP = true
  return options
}

/** The remote's certificate chain as the handshake verified it, leaf first (DER); Node completes it from the trusted CAs. */
const peerChain = (socket: tls.TLSSocket): Array<Buffer> => {
  const out: Array<Buffer> = []
  let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true)
  while (cert?.raw !== undefined && !out.some((raw) => raw.equals(cert!.raw))) {
    out.push(cert.raw)
    cert = cert.issuerCertificate
  }
  return out
}

/**
 * Open a connection to `address` (TLS when `t` is set), released with the
 * scope (destroyed: no DISCONNECT, so the remote publishes the bridge's will).
 * Fails with a SocketError after `timeoutMs`. With `keepalive`, TCP keepalive
 * probes start after its idle time (Node cannot set the probe interval and
 * count: the system's apply).
 */
export const openSocket = (
  address: BridgeAddress,
  t: BridgeTls | undefined,
  bindAddress: string | undefined,
  timeoutMs: number,
  keepalive?: TcpKeepalive
): Effect.Effect<net.Socket, SocketError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<net.Socket, SocketError>((resume) => {
      let socket: net.Socket
      try {
        const base = { host: address.host, port: address.port, ...(bindAddress !== undefined ? { localAddress: bindAddress } : {}) }
        socket = t === undefined ? net.connect(base) : tls.connect({ ...base, ...tlsOptions(t, address.host) })
      } catch (e) {
        resume(Effect.fail(e instanceof SocketError ? e : new SocketError({ reason: "Tls", message: (e as Error).message })))
        return
      }
      socket.setNoDelay(true)
      if (keepalive !== undefined) socket.setKeepAlive(true, keepalive.idle * 1000)
      const onError = (e: Error) => {
        socket.destroy()
        resume(Effect.fail(new SocketError({ reason: t === undefined ? "Connect" : "Tls", message: e.message })))
      }
      socket.once("error", onError)
      // Node emits 'OCSPResponse' (null when nothing was stapled) during the handshake, before
      // 'secureConnect', and checks nothing: the check runs at 'secureConnect', once the chain is
      // verified and before the socket is handed over, so no CONNECT can go out on a refused staple
      let staple: Buffer | null = null
      if (t?.requireOcsp === true) socket.once("OCSPResponse", (response: Buffer | null) => (staple = response))
      socket.once(t === undefined ? "connect" : "secureConnect", () => {
        if (t?.requireOcsp === true) {
          const result = checkOcsp(staple, peerChain(socket as tls.TLSSocket), Date.now())
          // destroyed with the reason: the 'error' above makes it a failed attempt, retried by the schedule
          if (result._tag === "Refused") return void socket.destroy(new Error(result.reason))
        }
        socket.off("error", onError)
        resume(Effect.succeed(socket))
      })
      return Effect.sync(() => socket.destroy())
    }).pipe(
      Effect.timeoutFail({
        duration: Duration.millis(timeoutMs),
        onTimeout: () => new SocketError({ reason: "Timeout", message: `no connection to ${address.host}:${address.port} within ${timeoutMs} ms` })
      })
    ),
    (socket) => Effect.sync(() => socket.destroy())
  )

/** Can a TCP connection to `address` be opened now? (The primary-address probe of round_robin false.) */
export const probe = (address: BridgeAddress, bindAddress: string | undefined, timeoutMs: number): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect({ host: address.host, port: address.port, ...(bindAddress !== undefined ? { localAddress: bindAddress } : {}) })
    const done = (ok: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resume(Effect.succeed(ok))
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
    return Effect.sync(() => {
      clearTimeout(timer)
      socket.destroy()
    })
  })
