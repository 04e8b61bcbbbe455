/**
 * Bad input on the security side, through the daemon's own composition
 * (mosquitto.conf → security layer → Broker with its listeners): expired and
 * revoked client certificates, an expired server certificate, TLS on a plain
 * port and plain MQTT on a TLS port, and a flood of failed logins. Each is
 * refused with the right code and a log line, and the broker keeps serving.
 * Certificates are made by openssl at test time (`openssl ca -startdate
 * -enddate` for the expired ones: OpenSSL 3.0's `x509` cannot back-date).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import mqtt from "mqtt"
import * as mqttPacket from "mqtt-packet"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { Broker, brokerOptionsFromConfig } from "../../src/Broker.js"
import { parseConfigText } from "../../src/config/Config.js"
import { Log } from "../../src/log/Log.js"
import { layerFromConfig, optionsFromConfig } from "../../src/security/Auth.js"
import { makePki, type Pki } from "../transport/fixtures.js"
import { freePort } from "../support/processes.js"
import { collect, connectClient, publish, run, subscribe, waitFor } from "./harness.js"

/** The daemon's composition: config text → security layer → Broker; the log keeps `keep` lines. */
const brokerFrom = (text: string, keep = 500) =>
  Effect.gen(function* () {
    const config = yield* parseConfigText(text, "test.conf").pipe(Effect.orDie)
    const log = new Log(["all"], [], false, keep)
    const security = yield* Layer.build(layerFromConfig(optionsFromConfig(config))).pipe(Effect.orDie)
    const broker = yield* Broker.make(brokerOptionsFromConfig(config, log)).pipe(Effect.provide(security), Effect.orDie)
    return { broker, log }
  })

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "midge-bad-"))

/**
 * A certificate signed by the PKI's CA with the validity given (`openssl ca`
 * takes -startdate / -enddate, so it can make an already expired one).
 */
const signDated = (pki: Pki, base: string, subj: string, startdate: string, enddate: string, san = false): { cert: string; key: string } => {
  const dir = fs.mkdtempSync(path.join(pki.dir, "dated-"))
  const run = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
  fs.writeFileSync(path.join(dir, "index.txt"), "")
  fs.writeFileSync(path.join(dir, "serial"), "2000\n")
  fs.writeFileSync(
    path.join(dir, "ca.cnf"),
    "[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = copy\n[ p ]\ncommonName = supplied\n"
  )
  run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${base}.key`, "-out", `${base}.csr`, "-subj", subj, ...(san ? ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"] : []))
  run("ca", "-batch", "-config", "ca.cnf", "-keyfile", pki.caKey, "-cert", pki.caCert, "-in", `${base}.csr`, "-out", `${base}.crt`, "-startdate", startdate, "-enddate", enddate, "-notext")
  return { cert: path.join(dir, `${base}.crt`), key: path.join(dir, `${base}.key`) }
}

const EXPIRED = ["20200101000000Z", "20200102000000Z"] as const

/** An MQTT.js connection attempt over TLS: "connected", or the error it failed with. */
const mqttsAttempt = (port: number, options: mqtt.IClientOptions) =>
  Effect.async<{ readonly outcome: "connected" } | { readonly outcome: "failed"; readonly error: Error & { code?: string | number } }>((resume) => {
    const client = mqtt.connect(`mqtts://localhost:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, rejectUnauthorized: true, ...options })
    client.once("connect", () => {
      client.end(true)
      resume(Effect.succeed({ outcome: "connected" }))
    })
    client.once("error", (error) => {
      client.end(true)
      resume(Effect.succeed({ outcome: "failed", error: error as Error & { code?: string | number } }))
    })
    client.once("close", () => resume(Effect.succeed({ outcome: "failed", error: new Error("closed") })))
    return Effect.sync(() => client.end(true))
  })

/** Log lines after `from` matching `re`. */
const linesSince = (log: Log, from: number, re: RegExp) => log.recent.slice(from).filter((l) => re.test(l))

describe("bad certificates on a require_certificate listener", () => {
  it.scopedLive("expired and revoked (crlfile) client certificates are refused with a log line; a valid one still gets in", () =>
    Effect.gen(function* () {
      const pki = makePki()
      const expired = signDated(pki, "old-device", "/CN=old-device", ...EXPIRED)
      const port = yield* freePort
      const { broker, log } = yield* brokerFrom(
        `listener ${port} 127.0.0.1\ncafile ${pki.caCert}\ncertfile ${pki.serverCert}\nkeyfile ${pki.serverKey}\nrequire_certificate true\ncrlfile ${pki.crl}\nallow_anonymous true\n`
      )
      const tlsArgs = (cert: string, key: string) => ["-h", "localhost", "-p", String(port), "--cafile", pki.caCert, "--cert", cert, "--key", key, "-t", "t", "-m", "m", "-q", "1"]
      const read = (file: string) => fs.readFileSync(file)

      for (const [what, cert, key, reason] of [
        ["expired", expired.cert, expired.key, /: client certificate refused: CERT_HAS_EXPIRED$/],
        ["revoked", pki.revokedCert, pki.revokedKey, /: client certificate refused: CERT_REVOKED$/]
      ] as const) {
        const mark = log.recent.length
        // mosquitto_pub: the handshake fails, exit code non-zero
        const pub = yield* run("mosquitto_pub", tlsArgs(cert, key))
        expect([what, pub.code]).not.toEqual([what, 0])
        // MQTT.js: Node verifies the certificate after the handshake and just closes (no alert names the reason)
        const attempt = yield* mqttsAttempt(port, { ca: read(pki.caCert), cert: read(cert), key: read(key) })
        expect([what, attempt.outcome]).toEqual([what, "failed"])
        // one log line per refused handshake, naming the peer and the verification error
        yield* waitFor(() => linesSince(log, mark, /OpenSSL Error on connection from 127\.0\.0\.1:\d+: /).length === 2, `the ${what} handshakes in the log`)
        expect(linesSince(log, mark, /OpenSSL Error on connection from 127\.0\.0\.1/).every((l) => reason.test(l))).toBe(true)
        expect(broker.stats().sessions).toBe(0)
      }
      // the broker keeps serving certificate holders
      const ok = yield* run("mosquitto_pub", tlsArgs(pki.clientCert, pki.clientKey))
      expect(ok.code).toBe(0)
      const good = yield* mqttsAttempt(port, { ca: read(pki.caCert), cert: read(pki.clientCert), key: read(pki.clientKey) })
      expect(good.outcome).toBe("connected")
    })
  )

  it.scopedLive("an expired server certificate: clients refuse it (certificate has expired), the broker logs the aborted handshake", () =>
    Effect.gen(function* () {
      const pki = makePki()
      const server = signDated(pki, "server", "/CN=localhost", ...EXPIRED, true)
      const port = yield* freePort
      const { log } = yield* brokerFrom(`listener ${port} 127.0.0.1\ncertfile ${server.cert}\nkeyfile ${server.key}\nallow_anonymous true\n`)
      const mark = log.recent.length
      const attempt = yield* mqttsAttempt(port, { ca: fs.readFileSync(pki.caCert) })
      expect(attempt.outcome).toBe("failed")
      if (attempt.outcome === "failed") expect(attempt.error.code).toBe("CERT_HAS_EXPIRED")
      const pub = yield* run("mosquitto_pub", ["-h", "localhost", "-p", String(port), "--cafile", pki.caCert, "-t", "t", "-m", "m"])
      expect(pub.code).not.toBe(0)
      expect(pub.stderr).toMatch(/TLS error/)
      yield* waitFor(() => linesSince(log, mark, /OpenSSL Error on connection from 127\.0\.0\.1/).length >= 1, "the aborted handshakes in the log")
      // a client that does not check (insecure) still gets in: the listener is up
      const insecure = yield* mqttsAttempt(port, { rejectUnauthorized: false })
      expect(insecure.outcome).toBe("connected")
    })
  )
})

describe("the wrong protocol on a port", () => {
  it.scopedLive("a TLS ClientHello on a plain MQTT port: that connection is closed with a log line; other clients go on", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const { broker, log } = yield* brokerFrom(`listener ${port} 127.0.0.1\nallow_anonymous true\n`)
      const url = `mqtt://127.0.0.1:${port}`
      const before = yield* connectClient(url, { clientId: "before" })
      const got = collect(before)
      yield* subscribe(before, "still/#", { qos: 1 })
      const mark = log.recent.length
      // a real TLS client: its first bytes are a ClientHello (0x16 0x03 ...)
      const outcome = yield* Effect.async<string>((resume) => {
        const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false })
        socket.once("secureConnect", () => resume(Effect.succeed("handshake completed")))
        socket.once("error", (e: NodeJS.ErrnoException) => resume(Effect.succeed(`error ${e.code ?? e.message}`)))
        socket.once("close", () => resume(Effect.succeed("closed")))
        return Effect.sync(() => socket.destroy())
      })
      expect(outcome).not.toBe("handshake completed")
      yield* waitFor(() => linesSince(log, mark, /Client <unknown> from 127\.0\.0\.1:\d+ (disconnected|refused)/).length === 1, "a log line for the TLS bytes")
      // the ClientHello's first byte (0x16) reads as a CONNECT with bad flag bits: a protocol error
      expect(linesSince(log, mark, /Client <unknown> from 127\.0\.0\.1:\d+ disconnected: invalid header flag bits for connect: 0x6\.$/)).toHaveLength(1)
      expect(broker.stats().sessions).toBe(1)
      // the broker keeps serving: the connected client and a new one
      const after = yield* connectClient(url, { clientId: "after", protocolVersion: 5 })
      yield* publish(after, "still/here", "yes", { qos: 1 })
      yield* waitFor(() => got.length === 1, "the delivery after the TLS attempt")
      expect(got[0].payload).toBe("yes")
    })
  )

  it.scopedLive("a plain MQTT CONNECT on a TLS port: closed with a log line; TLS clients go on", () =>
    Effect.gen(function* () {
      const pki = makePki()
      const port = yield* freePort
      const { log } = yield* brokerFrom(`listener ${port} 127.0.0.1\ncertfile ${pki.serverCert}\nkeyfile ${pki.serverKey}\nallow_anonymous true\n`)
      const mark = log.recent.length
      const connect = mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId: "plain", keepalive: 30 })
      const answer = yield* Effect.async<{ bytes: Buffer; closed: boolean }>((resume) => {
        const chunks: Array<Buffer> = []
        const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(connect))
        socket.on("data", (c) => chunks.push(c))
        socket.on("error", () => {})
        socket.once("close", () => resume(Effect.succeed({ bytes: Buffer.concat(chunks), closed: true })))
        const timer = setTimeout(() => resume(Effect.succeed({ bytes: Buffer.concat(chunks), closed: false })), 5000)
        return Effect.sync(() => {
          clearTimeout(timer)
          socket.destroy()
        })
      })
      expect(answer.closed).toBe(true)
      // no CONNACK (0x20): at most a TLS alert record (0x15)
      expect(answer.bytes.length === 0 || answer.bytes[0] === 0x15).toBe(true)
      yield* waitFor(() => linesSince(log, mark, /OpenSSL Error on connection from 127\.0\.0\.1/).length === 1, "a log line for the plain CONNECT")
      expect(linesSince(log, mark, /OpenSSL Error on connection from 127\.0\.0\.1:\d+: wrong version number$/)).toHaveLength(1)
      // mosquitto_pub without TLS: refused the same way
      expect((yield* run("mosquitto_pub", ["-p", String(port), "-t", "t", "-m", "m"])).code).not.toBe(0)
      const ok = yield* run("mosquitto_pub", ["-h", "localhost", "-p", String(port), "--cafile", pki.caCert, "-t", "t", "-m", "m", "-q", "1"])
      expect(ok.code).toBe(0)
    })
  )

  it.scopedLive("a plain WebSocket client on a wss listener: closed with a log line; wss clients go on", () =>
    Effect.gen(function* () {
      const pki = makePki()
      const port = yield* freePort
      const { log } = yield* brokerFrom(`listener ${port} 127.0.0.1\nprotocol websockets\ncertfile ${pki.serverCert}\nkeyfile ${pki.serverKey}\nallow_anonymous true\n`)
      const mark = log.recent.length
      // ws:// on a wss port: its HTTP upgrade request is not a TLS ClientHello
      const plain = yield* Effect.async<string>((resume) => {
        const client = mqtt.connect(`ws://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000 })
        client.once("connect", () => resume(Effect.succeed("connected")))
        client.once("error", () => resume(Effect.succeed("failed")))
        client.once("close", () => resume(Effect.succeed("failed")))
        return Effect.sync(() => client.end(true))
      })
      expect(plain).toBe("failed")
      yield* waitFor(() => linesSince(log, mark, /OpenSSL Error on connection from 127\.0\.0\.1:\d+: /).length === 1, "a log line for the plain WebSocket client")
      // the listener goes on: a wss client gets in and round-trips a message
      const wss = yield* connectClient(`wss://127.0.0.1:${port}`, { clientId: "secure", rejectUnauthorized: false })
      const got = collect(wss)
      yield* subscribe(wss, "wss/t", { qos: 1 })
      yield* publish(wss, "wss/t", "over tls", { qos: 1 })
      yield* waitFor(() => got.length === 1, "the message over wss")
    })
  )
})

/** A raw CONNECT with a username and password; resolves with the CONNACK's code, or "closed" without one. */
const rawLogin = (port: number, protocolVersion: 4 | 5, clientId: string, username: string, password: string) =>
  Effect.async<number | "closed">((resume) => {
    const parser = mqttPacket.parser({ protocolVersion })
    let done = false
    const finish = (r: number | "closed") => {
      if (done) return
      done = true
      socket.destroy()
      resume(Effect.succeed(r))
    }
    parser.on("packet", (p) => {
      if (p.cmd === "connack") finish(protocolVersion === 5 ? (p.reasonCode ?? -1) : (p.returnCode ?? -1))
    })
    parser.on("error", () => finish("closed"))
    const socket = net.connect({ host: "127.0.0.1", port }, () =>
      socket.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion, clean: true, clientId, keepalive: 30, username, password: Buffer.from(password) }, { protocolVersion }))
    )
    socket.on("data", (c) => parser.parse(c))
    socket.on("error", () => finish("closed"))
    socket.on("close", () => finish("closed"))
    return Effect.sync(() => socket.destroy())
  })

describe("a flood of failed logins", () => {
  it.scopedLive("500 concurrent wrong-password and unknown-user CONNECTs: 0x05 (v5 0x87) each, one log line each; a good client works throughout", () =>
    Effect.gen(function* () {
      const dir = tmp()
      const pw = path.join(dir, "passwd")
      expect((yield* run("mosquitto_passwd", ["-c", "-b", pw, "alice", "secret"])).code).toBe(0)
      const port = yield* freePort
      const { broker, log } = yield* brokerFrom(`listener ${port} 127.0.0.1\nallow_anonymous false\npassword_file ${pw}\n`, 5000)
      const url = `mqtt://127.0.0.1:${port}`
      const good = yield* connectClient(url, { username: "alice", password: "secret", clientId: "good", protocolVersion: 5 })
      const got = collect(good)
      yield* subscribe(good, "flood/#", { qos: 1 })
      const mark = log.recent.length
      const N = 500
      const attempts = Array.from({ length: N }, (_, i) => {
        const v = i % 2 === 0 ? 4 : 5
        // every fifth an unknown user, the others alice with a wrong password
        const user = i % 5 === 0 ? `nobody${i}` : "alice"
        return Effect.map(rawLogin(port, v, `bad${i}`, user, `wrong${i}`), (code) => ({ v, code }))
      })
      // meanwhile a good client connects and publishes, a second one logs in
      const during = Effect.gen(function* () {
        for (let i = 0; i < 5; i++) yield* publish(good, `flood/${i}`, `during ${i}`, { qos: 1 })
        const second = yield* connectClient(url, { username: "alice", password: "secret", clientId: "second" })
        yield* publish(second, "flood/second", "from second", { qos: 1 })
      })
      const [results] = yield* Effect.all([Effect.all(attempts, { concurrency: "unbounded" }), during], { concurrency: "unbounded" })
      expect(results.filter((r) => r.v === 4).map((r) => r.code)).toEqual(Array(N / 2).fill(0x05))
      expect(results.filter((r) => r.v === 5).map((r) => r.code)).toEqual(Array(N / 2).fill(0x87))
      // one log line per refusal (not rate-limited), naming the client id
      yield* waitFor(() => linesSince(log, mark, /refused: not authori[sz]ed/).length === N, "a log line per refused CONNECT")
      const refusedIds = new Set(linesSince(log, mark, /refused: not authori[sz]ed/).map((l) => /Client (bad\d+) /.exec(l)?.[1]))
      expect(refusedIds.size).toBe(N)
      yield* waitFor(() => got.length === 6, "the good clients' messages during the flood")
      expect(got.map((m) => m.topic).sort()).toEqual(["flood/0", "flood/1", "flood/2", "flood/3", "flood/4", "flood/second"])
      // and after it: nothing of the flood stayed
      expect(broker.stats().sessions).toBe(2)
      const after = yield* run("mosquitto_pub", ["-p", String(port), "-u", "alice", "-P", "secret", "-t", "flood/after", "-m", "after", "-q", "1"])
      expect(after.code).toBe(0)
      yield* waitFor(() => got.length === 7, "the message after the flood")
    })
  )
})
