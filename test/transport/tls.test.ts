/**
 * TLS and TLS-PSK listeners from Mosquitto's options: certificates made by
 * openssl at test time, Debian's mosquitto_pub / mosquitto_sub as clients
 * (certificates, CRL, versions, ciphers, PSK), and full MQTT over TLS
 * through the real connection code (temporary wiring, see fixtures.ts).
 */
import { execFileSync } from "node:child_process"
import { X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import type * as net from "node:net"
import * as path from "node:path"
import * as tls from "node:tls"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { dhParamsProblem, makeTls, rfc2253, type TlsIdentity, type TlsListenerOptions } from "../../src/transport/tls.js"
import { run, spawnScoped, waitFor } from "../e2e/harness.js"
import { makePki, selfSigned, subjectRfc2253, wireConnections } from "./fixtures.js"

const pki = makePki()

interface Seen extends TlsIdentity {
  readonly protocol: string | null
  readonly cipher: string
}

const startTls = (options: TlsListenerOptions) =>
  Effect.gen(function* () {
    const setup = yield* makeTls(options)
    const wired = wireConnections()
    const seen: Array<Seen> = []
    const server = tls.createServer(setup.serverOptions)
    server.on("secureConnection", (socket) => {
      seen.push({ ...setup.identity(socket), protocol: socket.getProtocol(), cipher: socket.getCipher().name })
      wired.accept(socket)
    })
    server.on("tlsClientError", () => {})
    const port = yield* Effect.acquireRelease(
      Effect.async<number>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
      }),
      () =>
        Effect.async<void>((resume) => {
          wired.shutdown()
          server.close(() => resume(Effect.void))
        })
    )
    return { port, setup, server, wired, seen }
  })

/** mosquitto_pub at QoS 1 (it waits for PUBACK): exit 0 means TLS and MQTT went through. */
const pub = (port: number, ...tlsArgs: Array<string>) =>
  run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "tls/test", "-m", "hello", "-q", "1", ...tlsArgs])

const ca = ["--cafile", pki.caCert]

/** A Node TLS client handshake: the version and cipher agreed, or "failed". */
const handshake = (port: number, options: tls.ConnectionOptions) =>
  Effect.async<{ readonly protocol: string | null; readonly cipher: string } | "failed">((resume) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca: fs.readFileSync(pki.caCert), servername: "localhost", ...options }, () => {
      resume(Effect.succeed({ protocol: socket.getProtocol(), cipher: socket.getCipher().name }))
      socket.destroy()
    })
    socket.on("error", () => resume(Effect.succeed("failed")))
  })
const clientCert = ["--cert", pki.clientCert, "--key", pki.clientKey]

describe("TLS listener (certfile, keyfile, cafile)", () => {
  it.scopedLive("mosquitto_pub --cafile: handshake, CONNECT, PUBLISH, PUBACK over TLS", () =>
    Effect.gen(function* () {
      const { port, wired, seen } = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey })
      const r = yield* pub(port, ...ca)
      expect(r).toMatchObject({ code: 0 })
      expect(wired.core.stats.messagesReceived).toBe(1)
      expect(seen[0].protocol).toBe("TLSv1.3")
      // no client certificate asked for: nothing to take a username from
      expect(seen[0].certificateCommonName).toBeUndefined()
      // a client that does not trust the CA fails its side of the handshake
      const untrusted = yield* pub(port, "--cafile", makePki("Other CA").caCert)
      expect(untrusted.code).not.toBe(0)
    })
  )

  it.scopedLive("mosquitto_sub receives what mosquitto_pub sends, both over TLS with client certificates", () =>
    Effect.gen(function* () {
      const { port, wired } = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey, cafile: pki.caCert, requireCertificate: true })
      const sub = yield* spawnScoped("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), ...ca, ...clientCert, "-t", "tls/#", "-C", "1", "-W", "10", "-v"])
      yield* waitFor(() => wired.core.router.subscriptionCount === 1, "mosquitto_sub to subscribe")
      expect(yield* pub(port, ...ca, ...clientCert)).toMatchObject({ code: 0 })
      yield* waitFor(() => sub.out.exited, "mosquitto_sub to receive and exit")
      expect(sub.out.stdout).toBe("tls/test hello\n")
    })
  )

  it.scopedLive("require_certificate: no certificate, no connection; the certificate gives CN and RFC 2253 subject", () =>
    Effect.gen(function* () {
      const { port, seen } = yield* startTls({
        certfile: pki.serverCert,
        keyfile: pki.serverKey,
        cafile: pki.caCert,
        requireCertificate: true,
        useSubjectAsUsername: true
      })
      expect((yield* pub(port, ...ca)).code).not.toBe(0)
      expect(seen).toHaveLength(0)
      // a certificate from another CA is refused too
      const other = makePki("Other CA")
      expect((yield* pub(port, ...ca, "--cert", other.clientCert, "--key", other.clientKey)).code).not.toBe(0)
      expect(yield* pub(port, ...ca, ...clientCert)).toMatchObject({ code: 0 })
      expect(seen).toHaveLength(1)
      expect(seen[0]).toMatchObject({ certificateCommonName: "device-7", certificateSubject: pki.clientSubject, tlsUsername: "subject" })
      expect(pki.clientSubject).toBe("CN=device-7,O=Acme\\, Inc,ST=Notts,C=GB")
    })
  )

  it.scopedLive("capath: every certificate file of the directory is a trusted CA", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(pki.dir, "capath-"))
      fs.copyFileSync(pki.caCert, path.join(dir, "ca.pem"))
      fs.writeFileSync(path.join(dir, "README"), "not a certificate\n")
      const { port, seen } = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey, capath: dir, requireCertificate: true, useIdentityAsUsername: true })
      expect(yield* pub(port, ...ca, ...clientCert)).toMatchObject({ code: 0 })
      expect(seen[0]).toMatchObject({ certificateCommonName: "device-7", tlsUsername: "identity" })
    })
  )

  it.scopedLive("crlfile: a revoked client certificate is refused, a good one accepted", () =>
    Effect.gen(function* () {
      const { port } = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey, cafile: pki.caCert, requireCertificate: true, crlfile: pki.crl })
      expect((yield* pub(port, ...ca, "--cert", pki.revokedCert, "--key", pki.revokedKey)).code).not.toBe(0)
      expect(yield* pub(port, ...ca, ...clientCert)).toMatchObject({ code: 0 })
    })
  )

  it.scopedLive("tls_version is the minimum: tlsv1.3 refuses a TLS 1.2 client; the default takes 1.2 and 1.3", () =>
    Effect.gen(function* () {
      // mosquitto_pub's --tls-version is a minimum too, so a Node client pins the version
      const v13 = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey, tlsVersion: "tlsv1.3" })
      expect(yield* handshake(v13.port, { maxVersion: "TLSv1.2" })).toBe("failed")
      expect(yield* handshake(v13.port, {})).toMatchObject({ protocol: "TLSv1.3" })
      expect(yield* pub(v13.port, ...ca, "--tls-version", "tlsv1.3")).toMatchObject({ code: 0 })
      const any = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey })
      expect(yield* handshake(any.port, { maxVersion: "TLSv1.2" })).toMatchObject({ protocol: "TLSv1.2" })
      const v12 = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey, tlsVersion: "tlsv1.2" })
      expect(yield* handshake(v12.port, { minVersion: "TLSv1.1", maxVersion: "TLSv1.1" })).toBe("failed")
    })
  )

  it.scopedLive("ciphers and ciphers_tls1.3 each restrict their own protocol version", () =>
    Effect.gen(function* () {
      const s = yield* startTls({
        certfile: pki.serverCert,
        keyfile: pki.serverKey,
        ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384",
        ciphersTls13: "TLS_CHACHA20_POLY1305_SHA256"
      })
      expect(yield* handshake(s.port, { maxVersion: "TLSv1.2" })).toEqual({ protocol: "TLSv1.2", cipher: "ECDHE-ECDSA-AES256-GCM-SHA384" })
      expect(yield* handshake(s.port, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" })).toBe("failed")
      expect(yield* handshake(s.port, {})).toEqual({ protocol: "TLSv1.3", cipher: "TLS_CHACHA20_POLY1305_SHA256" })
      expect(yield* pub(s.port, ...ca)).toMatchObject({ code: 0 })
      expect(s.seen.at(-1)).toMatchObject({ protocol: "TLSv1.3", cipher: "TLS_CHACHA20_POLY1305_SHA256" })
      // only `ciphers` given: TLS 1.3 stays on with its default suites (Node alone would turn it off)
      const only12 = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey, ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" })
      expect(yield* handshake(only12.port, {})).toMatchObject({ protocol: "TLSv1.3" })
      expect(yield* handshake(only12.port, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384" })).toBe("failed")
    })
  )

  it.scopedLive("dhparamfile enables the DHE suites of TLS 1.2 (RSA certificate); without it they are not offered; a bad file names the option", () =>
    Effect.gen(function* () {
      const dir = pki.dir
      const sh = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" })
      sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rsa.key", "-out", "rsa.crt", "-days", "1", "-subj", "/CN=localhost")
      sh("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048", "-out", "dh.pem")
      const rsa = { certfile: path.join(dir, "rsa.crt"), keyfile: path.join(dir, "rsa.key"), ciphers: "DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256" }
      const dhe = { maxVersion: "TLSv1.2" as const, ciphers: "DHE-RSA-AES128-GCM-SHA256", ca: fs.readFileSync(rsa.certfile) }
      const withDh = yield* startTls({ ...rsa, dhparamfile: path.join(dir, "dh.pem") })
      expect(yield* handshake(withDh.port, dhe)).toEqual({ protocol: "TLSv1.2", cipher: "DHE-RSA-AES128-GCM-SHA256" })
      const without = yield* startTls(rsa)
      expect(yield* handshake(without.port, dhe)).toBe("failed")
      expect(yield* handshake(without.port, { maxVersion: "TLSv1.2", ca: fs.readFileSync(rsa.certfile) })).toMatchObject({ cipher: "ECDHE-RSA-AES128-GCM-SHA256" })
      fs.writeFileSync(path.join(dir, "bad-dh.pem"), "-----BEGIN DH PARAMETERS-----\nbm90IGRo\n-----END DH PARAMETERS-----\n")
      expect(yield* Effect.flip(makeTls({ ...rsa, dhparamfile: path.join(dir, "bad-dh.pem") }))).toMatchObject({ reason: "InvalidCertificate", option: "dhparamfile" })
      sh("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "dh_paramgen_prime_len:512", "-out", "dh512.pem")
      expect(dhParamsProblem(fs.readFileSync(path.join(dir, "dh512.pem"), "utf8"))).toBe("a 512-bit prime is too small (1024 bits at least)")
      expect(dhParamsProblem(fs.readFileSync(path.join(dir, "dh.pem"), "utf8"))).toBeUndefined()
      expect(dhParamsProblem(fs.readFileSync(pki.serverCert, "utf8"))).toBe("no DH PARAMETERS block")
      expect(yield* Effect.flip(makeTls({ ...rsa, dhparamfile: path.join(dir, "none.pem") }))).toMatchObject({ reason: "MissingFile", option: "dhparamfile" })
    })
  )

  it.scopedLive("reload: a new certificate and key for new connections (SIGHUP)", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(pki.dir, "reload-"))
      const cert = path.join(dir, "server.crt")
      const key = path.join(dir, "server.key")
      fs.copyFileSync(pki.serverCert, cert)
      fs.copyFileSync(pki.serverKey, key)
      const s = yield* startTls({ certfile: cert, keyfile: key })
      expect(yield* pub(s.port, ...ca)).toMatchObject({ code: 0 })
      const next = makePki("Next CA")
      fs.copyFileSync(next.serverCert, cert)
      fs.copyFileSync(next.serverKey, key)
      yield* s.setup.reload(s.server)
      expect((yield* pub(s.port, ...ca)).code).not.toBe(0)
      expect(yield* pub(s.port, "--cafile", next.caCert)).toMatchObject({ code: 0 })
      // a broken file on reload changes nothing
      fs.writeFileSync(key, "garbage")
      expect(Exit.isFailure(yield* Effect.exit(s.setup.reload(s.server)))).toBe(true)
      expect(yield* pub(s.port, "--cafile", next.caCert)).toMatchObject({ code: 0 })
    })
  )
})

describe("TLS-PSK listener (psk_hint, psk_file)", () => {
  const pskDir = fs.mkdtempSync(path.join(pki.dir, "psk-"))
  const pskFile = path.join(pskDir, "psk")
  fs.writeFileSync(pskFile, "# identity:key\nsensor-1:0123456789abcdef\nsensor-2 : deadbeef\nbroken line\n")

  it.scopedLive("mosquitto_pub --psk --psk-identity: the right key connects, a wrong key or unknown identity does not", () =>
    Effect.gen(function* () {
      const { port, wired, seen, setup } = yield* startTls({ pskHint: "midge", pskFile, useIdentityAsUsername: true })
      expect(setup.warnings).toEqual([`${pskFile}:4: missing ':' between username and password; line ignored`])
      expect(yield* pub(port, "--psk", "0123456789abcdef", "--psk-identity", "sensor-1")).toMatchObject({ code: 0 })
      expect(yield* pub(port, "--psk", "deadbeef", "--psk-identity", "sensor-2")).toMatchObject({ code: 0 })
      expect((yield* pub(port, "--psk", "0123456789abcdee", "--psk-identity", "sensor-1")).code).not.toBe(0)
      expect((yield* pub(port, "--psk", "deadbeef", "--psk-identity", "nobody")).code).not.toBe(0)
      expect(wired.core.stats.messagesReceived).toBe(2)
      expect(seen.map((s) => [s.pskIdentity, s.tlsUsername])).toEqual([
        ["sensor-1", "identity"],
        ["sensor-2", "identity"]
      ])
    })
  )

  it.scopedLive("a listener with both a certificate and a PSK hint takes both; psk_file is re-read on reload", () =>
    Effect.gen(function* () {
      const file = path.join(pskDir, "psk2")
      fs.writeFileSync(file, "a:aa\n")
      const s = yield* startTls({ certfile: pki.serverCert, keyfile: pki.serverKey, pskHint: "h", pskFile: file })
      expect(yield* pub(s.port, ...ca)).toMatchObject({ code: 0 })
      expect(yield* pub(s.port, "--psk", "aa", "--psk-identity", "a")).toMatchObject({ code: 0 })
      expect(s.seen.map((x) => x.pskIdentity)).toEqual([undefined, "a"])
      expect(s.seen[1].tlsUsername).toBeUndefined()
      fs.writeFileSync(file, "b:bb\n")
      yield* s.setup.reload(s.server)
      expect(yield* pub(s.port, "--psk", "bb", "--psk-identity", "b")).toMatchObject({ code: 0 })
      // an identity no longer known: OpenSSL drops the PSK and falls back to the certificate
      // handshake, which mosquitto_pub without --cafile accepts; the connection has no identity
      expect(yield* pub(s.port, "--psk", "aa", "--psk-identity", "a")).toMatchObject({ code: 0 })
      expect(s.seen.map((x) => x.pskIdentity)).toEqual([undefined, "a", "b", undefined])
    })
  )
})

describe("TLS option errors", () => {
  const fails = (o: TlsListenerOptions) => Effect.flip(makeTls(o))

  it.effect("certfile and keyfile go together; require_certificate needs a CA; tls_version is checked", () =>
    Effect.gen(function* () {
      expect(yield* fails({ certfile: pki.serverCert })).toMatchObject({ reason: "InvalidOption", option: "certfile" })
      expect(yield* fails({ keyfile: pki.serverKey })).toMatchObject({ reason: "InvalidOption", option: "keyfile" })
      expect(yield* fails({ certfile: pki.serverCert, keyfile: pki.serverKey, requireCertificate: true })).toMatchObject({ option: "require_certificate" })
      expect(yield* fails({ certfile: pki.serverCert, keyfile: pki.serverKey, tlsVersion: "tlsv1.0" })).toMatchObject({ option: "tls_version" })
      expect(yield* fails({})).toMatchObject({ reason: "InvalidOption" })
    })
  )

  it.effect("missing files name the option; a key that does not match the certificate is refused", () =>
    Effect.gen(function* () {
      expect(yield* fails({ certfile: "/nonexistent.crt", keyfile: pki.serverKey })).toMatchObject({ reason: "MissingFile", option: "certfile" })
      expect(yield* fails({ certfile: pki.serverCert, keyfile: pki.serverKey, cafile: "/nonexistent" })).toMatchObject({ reason: "MissingFile", option: "cafile" })
      expect(yield* fails({ certfile: pki.serverCert, keyfile: pki.clientKey })).toMatchObject({ reason: "InvalidCertificate" })
      expect(yield* fails({ pskHint: "h", pskFile: "/nonexistent" })).toMatchObject({ reason: "MissingFile", option: "psk_file" })
    })
  )

  it.effect("an encrypted keyfile (PKCS#8 or traditional PEM) is refused with a clear message", () =>
    Effect.gen(function* () {
      const pk8 = path.join(pki.dir, "enc.key")
      const trad = path.join(pki.dir, "enc-trad.key")
      execFileSync("openssl", ["pkey", "-in", pki.serverKey, "-aes256", "-passout", "pass:secret", "-out", pk8])
      execFileSync("openssl", ["ec", "-in", pki.serverKey, "-aes256", "-passout", "pass:secret", "-out", trad], { stdio: "ignore" })
      for (const keyfile of [pk8, trad]) {
        const e = yield* fails({ certfile: pki.serverCert, keyfile })
        expect(e).toMatchObject({ reason: "EncryptedKey", option: "keyfile" })
        expect(e.message).toContain("is encrypted")
      }
    })
  )

  it.effect("a psk_file with a non-hexadecimal key is an error with its line", () =>
    Effect.gen(function* () {
      const file = path.join(pki.dir, "badpsk")
      fs.writeFileSync(file, "a:00ff\nb:xyz\n")
      const e = yield* fails({ pskHint: "h", pskFile: file })
      expect(e).toMatchObject({ reason: "InvalidPskFile", option: "psk_file" })
      expect(e.message).toContain(`${file}:2:`)
    })
  )

  it.effect("warnings for settings that cannot work", () =>
    Effect.gen(function* () {
      const a = yield* makeTls({ certfile: pki.serverCert, keyfile: pki.serverKey, useIdentityAsUsername: true })
      expect(a.warnings.join()).toContain("without require_certificate")
      const b = yield* makeTls({ pskHint: "h" })
      expect(b.warnings.join()).toContain("psk_hint without psk_file")
    })
  )
})

describe("use_subject_as_username: the subject as OpenSSL's XN_FLAG_RFC2253 prints it", () => {
  const dir = fs.mkdtempSync(path.join(pki.dir, "subjects-"))
  const cases: ReadonlyArray<readonly [string, string, boolean]> = [
    ["plain", "/C=GB/ST=Nottinghamshire/L=Nottingham/O=Server/OU=Production/CN=test client", false],
    ["escapes", "/O=Acme\\, Inc/OU=a+b/CN=x <1>;\\\\ \"q\"/emailAddress=a@b.c", false],
    ["leading", "/CN=#hash/O= lead/OU=trail ", false],
    ["utf8", "/CN=Jürgen Ødegård/O=日本", false],
    ["multivalued", "/O=Org/OU=unit+CN=plus", true],
    ["repeated", "/OU=one/OU=two/CN=a/CN=b", false]
  ]
  for (const [name, subj, multi] of cases) {
    it(`${name}: ${subj}`, () => {
      const cert = selfSigned(dir, name, subj, multi)
      const x509 = new X509Certificate(fs.readFileSync(cert))
      expect(rfc2253(x509.subject)).toBe(subjectRfc2253(cert))
    })
  }
})
