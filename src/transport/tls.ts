/**
 * TLS listeners as Mosquitto configures them (`src/net.c`
 * `net__tls_server_ctx`, `net__tls_load_verify`, `net__load_certificates`):
 * a listener option set becomes `tls.createServer` / `https.createServer`
 * options, plus what the connection code needs per socket (the username a
 * certificate or PSK identity stands for) and a SIGHUP reload.
 *
 * - `certfile` + `keyfile` (both or neither); an encrypted key is refused
 *   (Midge runs as a daemon and has nobody to ask for its password);
 * - `cafile` / `capath` (every certificate file in the directory) are the CAs
 *   trusted for client certificates; `require_certificate true` asks for one
 *   and refuses the handshake without a valid one; `crlfile` adds a CRL;
 * - `tls_version` is the minimum version (tlsv1.3, tlsv1.2, tlsv1.1), as in
 *   Mosquitto 2; `ciphers` (TLS ≤ 1.2) and `ciphers_tls1.3` each replace only
 *   their own list (Node would otherwise turn TLS 1.3 off when only `ciphers`
 *   is given);
 * - `psk_hint` makes a TLS-PSK listener; keys come from `psk_file`
 *   (`identity:hexkey`) and are looked up per handshake;
 * - `use_identity_as_username` (the certificate CN, or the PSK identity) and
 *   `use_subject_as_username` (the certificate subject in RFC 2253 form, as
 *   OpenSSL's `XN_FLAG_RFC2253` prints it) replace the MQTT username;
 * - `reload` re-reads certificate, key, CAs, CRL, DH parameters and psk_file, for new
 *   connections only ("reloaded on reload signal" in mosquitto.conf(5)).
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as tls from "node:tls"
import { Effect, Schema } from "effect"
import { readPskFile } from "../security/pskFile.js"

export interface TlsListenerOptions {
  readonly cafile?: string | undefined
  readonly capath?: string | undefined
  readonly certfile?: string | undefined
  readonly keyfile?: string | undefined
  readonly requireCertificate?: boolean | undefined
  readonly crlfile?: string | undefined
  /** "tlsv1.3" | "tlsv1.2" | "tlsv1.1": the minimum */
  readonly tlsVersion?: string | undefined
  readonly ciphers?: string | undefined
  readonly ciphersTls13?: string | undefined
  readonly pskHint?: string | undefined
  readonly pskFile?: string | undefined
  readonly useIdentityAsUsername?: boolean | undefined
  readonly useSubjectAsUsername?: boolean | undefined
  /** `disable_client_cert_date_checks` (Mosquitto 2.1): a client certificate outside its validity dates is accepted */
  readonly disableClientCertDateChecks?: boolean | undefined
  /** PEM Diffie-Hellman parameters: enables the DHE key exchanges (OpenSSL's `dhparam`) */
  readonly dhparamfile?: string | undefined
}

export class TlsConfigError extends Schema.TaggedError<TlsConfigError>()("TlsConfigError", {
  reason: Schema.Literal("MissingFile", "EncryptedKey", "InvalidOption", "InvalidCertificate", "InvalidPskFile"),
  /** the mosquitto.conf option at fault */
  option: Schema.String,
  message: Schema.String
}) {}

/** What a TLS connection tells Authentication (spread it into the AuthRequest). */
export interface TlsIdentity {
  readonly certificateSubject?: string | undefined
  readonly certificateCommonName?: string | undefined
  readonly pskIdentity?: string | undefined
  readonly tlsUsername?: "identity" | "subject" | undefined
}

export interface TlsSetup {
  /** for `tls.createServer(options)` or `https.createServer(options)` */
  readonly serverOptions: tls.TlsOptions
  /** things that will not work as configured but are not errors in Mosquitto */
  readonly warnings: ReadonlyArray<string>
  /** the identity of an established connection */
  readonly identity: (socket: tls.TLSSocket) => TlsIdentity
  /**
   * Whether an established connection may stay: false for a client certificate OpenSSL did not
   * verify, when the handshake could not refuse it itself (`disable_client_cert_date_checks`
   * leaves the handshake open so that only date errors are forgiven)
   */
  readonly admit: (socket: tls.TLSSocket) => boolean
  /** re-read the files and use them for new connections of `server` (SIGHUP); on error nothing changes */
  readonly reload: (server: tls.Server) => Effect.Effect<void, TlsConfigError>
}

/** The TLS protocol is configured at all: a certificate or a PSK hint. */
export const isTlsListener = (o: TlsListenerOptions): boolean =>
  o.certfile !== undefined || o.keyfile !== undefined || o.pskHint !== undefined

const fail = (reason: TlsConfigError["reason"], option: string, message: string) =>
  Effect.fail(new TlsConfigError({ reason, option, message }))

const readText = (option: string, file: string): Effect.Effect<string, TlsConfigError> =>
  Effect.tryPromise({
    try: () => fs.promises.readFile(file, "utf8"),
    catch: (e) => new TlsConfigError({ reason: "MissingFile", option, message: `${option}: unable to read "${file}": ${(e as Error).message}` })
  })

const CERT_BEGIN = "-----BEGIN CERTIFICATE-----"

/** Every file of `capath` holding a PEM certificate (`openssl rehash` links included, once). */
const readCapath = (dir: string): Effect.Effect<Array<string>, TlsConfigError> =>
  Effect.tryPromise({
    try: async () => {
      const out = new Set<string>()
      for (const name of (await fs.promises.readdir(dir)).sort()) {
        const file = path.join(dir, name)
        const stat = await fs.promises.stat(file).catch(() => undefined)
        if (stat === undefined || !stat.isFile()) continue
        const text = await fs.promises.readFile(file, "utf8").catch(() => "")
        if (text.includes(CERT_BEGIN)) out.add(text)
      }
      return [...out]
    },
    catch: (e) => new TlsConfigError({ reason: "MissingFile", option: "capath", message: `capath: unable to read "${dir}": ${(e as Error).message}` })
  })

const VERSIONS: Record<string, tls.SecureVersion> = { "tlsv1.3": "TLSv1.3", "tlsv1.2": "TLSv1.2", "tlsv1.1": "TLSv1.1" }

/** Node's default lists, split as OpenSSL keeps them: TLS 1.3 suites and the TLS ≤ 1.2 cipher list. */
const DEFAULT_TLS13 = tls.DEFAULT_CIPHERS.split(":").filter((c) => c.startsWith("TLS_")).join(":")
const DEFAULT_TLS12 = tls.DEFAULT_CIPHERS.split(":").filter((c) => !c.startsWith("TLS_"))

const cipherString = (o: TlsListenerOptions): string | undefined => {
  const psk = o.pskHint !== undefined
  if (o.ciphers === undefined && o.ciphersTls13 === undefined && !psk) return undefined
  let list12: string
  if (o.ciphers !== undefined) list12 = o.ciphers
  else {
    // Node's default list says !PSK; a PSK listener needs them (OpenSSL's DEFAULT, which Mosquitto uses, has them)
    const tokens = DEFAULT_TLS12.filter((t) => !(psk && t === "!PSK"))
    const firstNot = tokens.findIndex((t) => t.startsWith("!"))
    if (psk) tokens.splice(firstNot < 0 ? tokens.length : firstNot, 0, "PSK")
    list12 = tokens.join(":")
  }
  return `${o.ciphersTls13 ?? DEFAULT_TLS13}:${list12}`
}

const isEncryptedKey = (pem: string): boolean =>
  pem.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----") || /Proc-Type:\s*4,ENCRYPTED/.test(pem)

const tryContext = (option: string, options: tls.SecureContextOptions): Effect.Effect<void, TlsConfigError> =>
  Effect.try({
    try: () => {
      tls.createSecureContext(options)
    },
    catch: (e) => new TlsConfigError({ reason: "InvalidCertificate", option, message: `${option}: ${(e as Error).message}` })
  })

/**
 * Why PEM Diffie-Hellman parameters (`-----BEGIN DH PARAMETERS-----`, DER
 * `SEQUENCE { INTEGER p, INTEGER g, ... }`) cannot be used, or undefined: not
 * that form, not a prime group OpenSSL accepts, or under 1024 bits (Node
 * refuses those for TLS).
 */
export const dhParamsProblem = (pem: string): string | undefined => {
  const m = /-----BEGIN DH PARAMETERS-----([\s\S]*?)-----END DH PARAMETERS-----/.exec(pem)
  if (m === null) return "no DH PARAMETERS block"
  const der = Buffer.from(m[1].replace(/\s+/g, ""), "base64")
  let pos = 0
  const length = (): number => {
    const first = der[pos++]
    if (first === undefined) return -1
    if (first < 0x80) return first
    const n = first & 0x7f
    if (n === 0 || n > 3) return -1
    let len = 0
    for (let i = 0; i < n; i++) len = len * 256 + (der[pos++] ?? NaN)
    return Number.isNaN(len) ? -1 : len
  }
  const integer = (): Buffer | undefined => {
    if (der[pos++] !== 0x02) return undefined
    const len = length()
    if (len <= 0 || pos + len > der.length) return undefined
    const value = der.subarray(pos, pos + len)
    pos += len
    return value
  }
  if (der[pos++] !== 0x30 || length() < 0) return "not DER-encoded DH parameters"
  const p = integer()
  const g = integer()
  if (p === undefined || g === undefined) return "not DER-encoded DH parameters"
  const prime = p[0] === 0 ? p.subarray(1) : p
  const bits = prime.length * 8 - Math.clz32(prime[0] ?? 0) + 24
  if (bits < 1024) return `a ${bits}-bit prime is too small (1024 bits at least)`
  try {
    crypto.createDiffieHellman(prime, g)
  } catch (e) {
    return (e as Error).message
  }
  return undefined
}

interface Loaded {
  readonly context: tls.SecureContextOptions
  readonly pskKeys: ReadonlyMap<string, Buffer> | undefined
  readonly warnings: ReadonlyArray<string>
}

const loadFiles = (o: TlsListenerOptions): Effect.Effect<Loaded, TlsConfigError> =>
  Effect.gen(function* () {
    const warnings: Array<string> = []
    const context: tls.SecureContextOptions = {}
    if (o.certfile !== undefined && o.keyfile !== undefined) {
      const cert = yield* readText("certfile", o.certfile)
      const key = yield* readText("keyfile", o.keyfile)
      if (isEncryptedKey(key)) {
        return yield* fail(
          "EncryptedKey",
          "keyfile",
          `keyfile "${o.keyfile}" is encrypted: Midge cannot ask for its password; use an unencrypted key (openssl pkey -in ${o.keyfile} -out plain.key) and protect the file instead`
        )
      }
      yield* tryContext("certfile/keyfile", { cert, key })
      context.cert = cert
      context.key = key
    }
    const ca: Array<string> = []
    if (o.cafile !== undefined) ca.push(yield* readText("cafile", o.cafile))
    if (o.capath !== undefined) ca.push(...(yield* readCapath(o.capath)))
    if (o.capath !== undefined && ca.length === (o.cafile === undefined ? 0 : 1)) warnings.push(`capath "${o.capath}" holds no PEM certificate`)
    if (ca.length > 0) {
      yield* tryContext(o.cafile !== undefined ? "cafile" : "capath", { ca })
      context.ca = ca
    }
    if (o.crlfile !== undefined) {
      const crl = yield* readText("crlfile", o.crlfile)
      yield* tryContext("crlfile", { ca: ca.length > 0 ? ca : undefined, crl })
      context.crl = crl
    }
    if (o.dhparamfile !== undefined) {
      const dhparam = yield* readText("dhparamfile", o.dhparamfile)
      // OpenSSL's PEM_read_bio_DHparams, as Mosquitto: Node would drop parameters it cannot read silently
      const problem = dhParamsProblem(dhparam)
      if (problem !== undefined) return yield* fail("InvalidCertificate", "dhparamfile", `dhparamfile "${o.dhparamfile}": ${problem}`)
      yield* tryContext("dhparamfile", { dhparam })
      context.dhparam = dhparam
    }
    let pskKeys: ReadonlyMap<string, Buffer> | undefined
    if (o.pskFile !== undefined) {
      const psk = yield* readPskFile(o.pskFile).pipe(
        Effect.mapError(
          (e) => new TlsConfigError({ reason: e.reason === "Read" ? "MissingFile" : "InvalidPskFile", option: "psk_file", message: e.line > 0 ? `${e.file}:${e.line}: ${e.message}` : e.message })
        )
      )
      for (const w of psk.warnings) warnings.push(`${o.pskFile}:${w.line}: ${w.message}; line ignored`)
      pskKeys = psk.keys
    }
    return { context, pskKeys, warnings }
  })

/**
 * Checks a listener's TLS options, reads its files and returns the server
 * options. Fails with a TlsConfigError naming the option at fault.
 */
export const makeTls = (o: TlsListenerOptions): Effect.Effect<TlsSetup, TlsConfigError> =>
  Effect.gen(function* () {
    if ((o.certfile === undefined) !== (o.keyfile === undefined)) {
      return yield* fail("InvalidOption", o.certfile === undefined ? "keyfile" : "certfile", "both certfile and keyfile must be provided if one of them is set")
    }
    if (!isTlsListener(o)) {
      return yield* fail("InvalidOption", "certfile", "a TLS listener needs certfile and keyfile, or psk_hint")
    }
    const requireCertificate = o.requireCertificate === true
    if (requireCertificate && o.cafile === undefined && o.capath === undefined) {
      return yield* fail("InvalidOption", "require_certificate", "require_certificate true needs cafile or capath to check client certificates against")
    }
    const minVersion = o.tlsVersion === undefined ? "TLSv1.2" : VERSIONS[o.tlsVersion]
    if (minVersion === undefined) {
      return yield* fail("InvalidOption", "tls_version", `unsupported tls_version "${o.tlsVersion}" (tlsv1.3, tlsv1.2 or tlsv1.1)`)
    }
    const loaded = yield* loadFiles(o)
    const warnings = [...loaded.warnings]
    const psk = o.pskHint !== undefined
    if (psk && o.pskFile === undefined) warnings.push("psk_hint without psk_file: no PSK identity can connect")
    if (!psk && o.pskFile !== undefined) warnings.push("psk_file without psk_hint: this listener does not offer TLS-PSK")
    if ((o.useIdentityAsUsername === true || o.useSubjectAsUsername === true) && !requireCertificate && !psk) {
      warnings.push("use_identity_as_username / use_subject_as_username without require_certificate: no client has a certificate, every CONNECT is refused")
    }

    const pskIdentities = new WeakMap<tls.TLSSocket, string>()
    let pskKeys = loaded.pskKeys
    // disable_client_cert_date_checks: the handshake accepts any certificate; `admit` then refuses
    // every verification error but the certificate's dates (the chain, CRL and purpose still count)
    const datesForgiven = requireCertificate && o.disableClientCertDateChecks === true
    const verified = (socket: tls.TLSSocket): boolean => socket.authorized || (datesForgiven && dateOnlyError(socket))
    const serverOptions: tls.TlsOptions = {
      ...loaded.context,
      requestCert: requireCertificate,
      rejectUnauthorized: requireCertificate && !datesForgiven,
      minVersion,
      maxVersion: "TLSv1.3"
    }
    const ciphers = cipherString(o)
    if (ciphers !== undefined) serverOptions.ciphers = ciphers
    if (psk) {
      serverOptions.pskIdentityHint = o.pskHint
      serverOptions.pskCallback = (socket, identity) => {
        const key = pskKeys?.get(identity)
        if (key === undefined) return null
        pskIdentities.set(socket, identity)
        return key
      }
    }
    // handle_connect.c: use_identity_as_username wins over use_subject_as_username; a PSK identity over both
    const tlsUsername = o.useIdentityAsUsername === true ? "identity" : o.useSubjectAsUsername === true ? "subject" : undefined
    const identity = (socket: tls.TLSSocket): TlsIdentity => {
      const pskIdentity = pskIdentities.get(socket)
      if (pskIdentity !== undefined) {
        return { pskIdentity, tlsUsername }
      }
      return { ...certificateIdentity(socket, verified(socket)), tlsUsername }
    }
    const admit = (socket: tls.TLSSocket): boolean => !datesForgiven || verified(socket)
    const reload = (server: tls.Server): Effect.Effect<void, TlsConfigError> =>
      Effect.flatMap(loadFiles(o), (next) =>
        Effect.try({
          try: () => {
            // the whole option set: Node rebuilds the context from it (files not configured stay unset)
            server.setSecureContext({ ...serverOptions, cert: undefined, key: undefined, ca: undefined, crl: undefined, ...next.context })
            pskKeys = next.pskKeys
          },
          catch: (e) => new TlsConfigError({ reason: "InvalidCertificate", option: "certfile", message: (e as Error).message })
        })
      )
    return { serverOptions, warnings, identity, admit, reload }
  })

/** OpenSSL's verification failed only on the certificate's validity dates. */
const dateOnlyError = (socket: tls.TLSSocket): boolean => {
  const error = socket.authorizationError as unknown
  const code = typeof error === "string" ? error : (error as { code?: string } | undefined)?.code
  return code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID"
}

/** The verified peer certificate's subject and first CN; nothing for an unverified or absent certificate. */
export const certificateIdentity = (
  socket: tls.TLSSocket,
  verified: boolean = socket.authorized
): { certificateSubject?: string; certificateCommonName?: string } => {
  if (!verified) return {}
  const x509 = socket.getPeerX509Certificate()
  if (x509 === undefined) return {}
  const cn = socket.getPeerCertificate().subject?.CN as string | ReadonlyArray<string> | undefined
  const first = typeof cn === "string" ? cn : cn?.[0]
  return {
    certificateSubject: rfc2253(x509.subject),
    // Mosquitto refuses a CN with an embedded NUL
    ...(first !== undefined && !first.includes("\0") ? { certificateCommonName: first } : {})
  }
}

/**
 * Node's `X509Certificate.subject` (one RDN per line in certificate order,
 * ` + ` between the values of a multi-valued RDN, RFC 2253 escapes but raw
 * UTF-8) as OpenSSL's `X509_NAME_print_ex(XN_FLAG_RFC2253)` prints it, which
 * is what Mosquitto's `use_subject_as_username` uses: reversed, `,` between
 * RDNs, `+` inside one, bytes above 0x7F escaped as `\XX`.
 */
export const rfc2253 = (subject: string): string => {
  const avas: Array<{ text: string; rdn: number }> = []
  subject.split("\n").forEach((line, rdn) => {
    let start = 0
    for (let i = 0; i < line.length; i++) {
      const c = line[i]
      if (c === "\\") i++
      else if (c === " " && line.startsWith(" + ", i)) {
        avas.push({ text: line.slice(start, i), rdn })
        start = i + 3
        i += 2
      }
    }
    avas.push({ text: line.slice(start), rdn })
  })
  let out = ""
  for (let i = avas.length - 1; i >= 0; i--) {
    if (i < avas.length - 1) out += avas[i].rdn === avas[i + 1].rdn ? "+" : ","
    out += escapeHigh(avas[i].text)
  }
  return out
}

const escapeHigh = (s: string): string => {
  if (!/[^\x00-\x7f]/.test(s)) return s
  let out = ""
  for (const ch of s) {
    if (ch.charCodeAt(0) < 0x80) out += ch
    else for (const b of Buffer.from(ch, "utf8")) out += `\\${b.toString(16).toUpperCase().padStart(2, "0")}`
  }
  return out
}
