/**
 * The PROXY protocol against a real HAProxy (Debian's `haproxy`, 2.6): HAProxy in `mode tcp` in
 * front of a Midge listener with `enable_proxy_protocol`, MQTT.js clients connecting to HAProxy's
 * frontend, all on 127.0.0.1. Midge is composed as the daemon composes it (config text → security
 * layer → Broker) with its log kept in memory; HAProxy runs in the foreground (`haproxy -db`) and
 * logs, as soon as it has connected to Midge (`option logasap`), the client's port and the port of
 * its own connection to Midge, so the tests can tell which one Midge names. The headers HAProxy
 * sends: v1 `PROXY TCP4 127.0.0.1 127.0.0.1 CPORT FPORT\r\n`; v2 PROXY over TCP4, with the
 * PP2_TYPE_SSL TLV for `send-proxy-v2-ssl-cn` (client bits 0x07, verify 0, the TLS version and the
 * CN; the cipher too with `proxy-v2-options ssl-cipher`); its health checks (`check`) send a v1 header with
 * its own addresses, or a v2 LOCAL header with no addresses. test/e2e/proxy-protocol.test.ts
 * covers the same listener options with headers written by hand.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import type * as net from "node:net"
import * as path from "node:path"
import type * as tls from "node:tls"
import mqtt, { type IClientOptions, type MqttClient } from "mqtt"
import { Broker, brokerOptionsFromConfig } from "../../src/Broker.js"
import { parseConfigText } from "../../src/config/Config.js"
import { Log } from "../../src/log/Log.js"
import { layerFromConfig, optionsFromConfig } from "../../src/security/Auth.js"
import { freePort, startHaproxy, tempDir } from "../support/processes.js"
import { makePki, type Pki } from "../transport/fixtures.js"
import { collect, publish, settle, subscribe, waitFor } from "./harness.js"


/** The daemon's composition; `conf` gets the port; the log kept in memory, without timestamps. */
const midge = (conf: (port: number) => string) =>
  Effect.gen(function* () {
    const port = yield* freePort
    const config = yield* parseConfigText(conf(port), "proxy.conf").pipe(Effect.orDie)
    const log = new Log(["all"], [], false, 500)
    const security = yield* Layer.build(layerFromConfig(optionsFromConfig(config))).pipe(Effect.orDie)
    yield* Broker.make(brokerOptionsFromConfig(config, log)).pipe(Effect.provide(security), Effect.orDie)
    const lines = () => log.recent.filter((l) => !l.startsWith("Received ") && !l.startsWith("Sending "))
    return { port, lines, warnings: config.warnings }
  })

interface Haproxy {
  /** the frontend's port */
  readonly port: number
  /** HAProxy's stderr: its warnings, and one `session ...` line per proxied connection */
  readonly log: () => string
  /** whether HAProxy is still running */
  readonly running: () => boolean
  /** the port of HAProxy's own connection to Midge for the client connection from `clientPort` */
  readonly outgoingPort: (clientPort: number) => number | undefined
}

/**
 * HAProxy in `mode tcp` on a free port of 127.0.0.1 (`bind` options after the address), forwarding
 * to Midge's `backend` port with the `server` line's options; SIGKILLed with the scope. Returns
 * once the frontend accepts connections (that probe is proxied to Midge too).
 */
const haproxy = (options: { readonly backend: number; readonly server: string; readonly bind?: string }) =>
  Effect.gen(function* () {
    const { port, log, running } = yield* startHaproxy({
      ...options,
      serverName: "midge",
      defaults: ["option logasap", "option log-health-checks", `log-format "session client %ci:%cp backend-source %bi:%bp server %si:%sp"`]
    })
    const outgoingPort = (clientPort: number) => {
      const m = new RegExp(`^session client 127\\.0\\.0\\.1:${clientPort} backend-source 127\\.0\\.0\\.1:(\\d+) `, "m").exec(log())
      return m === null ? undefined : Number(m[1])
    }
    return { port, log, running, outgoingPort } satisfies Haproxy
  })

/** The local port of an MQTT.js client's socket (its source port, as HAProxy sees it). */
const localPort = (client: MqttClient): number => {
  const port = (client.stream as unknown as net.Socket).localPort
  if (port === undefined) throw new Error("the client's socket has no local port")
  return port
}

const hasLine = (lines: () => Array<string>, line: string) =>
  waitFor(() => lines().includes(line), `the line "${line}"`).pipe(Effect.mapError((e) => new Error(`${e.message}; the log:\n  ${lines().join("\n  ")}`)))

/** Connect without waiting for success: how it ended ("connected", "closed", "error: ...") and the client's source port. */
const attempt = (url: string, options: IClientOptions) =>
  Effect.acquireRelease(
    Effect.async<{ readonly outcome: string; readonly port: number | undefined; readonly client: MqttClient }>((resume) => {
      const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options })
      let port: number | undefined
      client.stream.once("connect", () => (port = (client.stream as unknown as net.Socket).localPort))
      const done = (outcome: string) => resume(Effect.succeed({ outcome, port, client }))
      client.once("connect", () => done("connected"))
      client.once("error", (e) => done(`error: ${e.message}`))
      client.once("close", () => done("closed"))
    }),
    // bounded: a client that never got through must not keep the scope (and HAProxy) open
    ({ client }) => Effect.promise(() => client.endAsync(true).catch(() => undefined)).pipe(Effect.timeout("2 seconds"), Effect.ignore)
  )

/** An MQTT.js client connected through HAProxy, ended with the scope; fails at once when the connection closes before CONNACK. */
const connected = (url: string, options: IClientOptions) =>
  Effect.gen(function* () {
    const { outcome, client } = yield* attempt(url, options)
    if (outcome !== "connected") return yield* Effect.fail(new Error(`no CONNACK through HAProxy: ${outcome}`))
    return client
  })

/**
 * Through `h`: connect as `clientId`, subscribe, publish at QoS 1 and get the message back; the
 * client's source port and HAProxy's own port towards Midge for that connection.
 */
const roundTrip = (h: Haproxy, url: string, clientId: string, options: IClientOptions = {}, topic = `haproxy/${clientId}`) =>
  Effect.gen(function* () {
    const client = yield* connected(url, { clientId, ...options })
    const got = collect(client)
    yield* subscribe(client, topic, { qos: 1 })
    yield* publish(client, topic, `through HAProxy to ${clientId}`, { qos: 1 })
    yield* waitFor(() => got.length > 0, "the message back through HAProxy")
    expect(got).toMatchObject([{ topic, payload: `through HAProxy to ${clientId}`, qos: 1 }])
    const port = localPort(client)
    yield* waitFor(() => h.outgoingPort(port) !== undefined, `HAProxy's session line for client port ${port}:\n${h.log()}`)
    const outgoing = h.outgoingPort(port)!
    expect(outgoing).not.toBe(port)
    return { client, port, outgoing }
  })

/** A client certificate for `cn`, signed by the PKI's CA, in its directory. */
const clientCertificate = (pki: Pki, cn: string): { readonly cert: string; readonly key: string } => {
  const openssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: pki.dir, stdio: "ignore" })
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${cn}.key`, "-out", `${cn}.csr`, "-subj", `/CN=${cn}`)
  openssl("x509", "-req", "-in", `${cn}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${cn}.crt`, "-days", "2")
  return { cert: path.join(pki.dir, `${cn}.crt`), key: path.join(pki.dir, `${cn}.key`) }
}

/**
 * A CA, HAProxy's server certificate (localhost / 127.0.0.1) with its key in one PEM, and client
 * certificates for device-7 (makePki's, `/C=GB/ST=Notts/O=Acme\, Inc/CN=device-7`) and device-8;
 * removed with the scope.
 */
const certificates = Effect.acquireRelease(
  Effect.sync(() => {
    const pki = makePki()
    const serverPem = path.join(pki.dir, "haproxy.pem")
    fs.writeFileSync(serverPem, Buffer.concat([fs.readFileSync(pki.serverCert), fs.readFileSync(pki.serverKey)]))
    return { pki, serverPem, device8: clientCertificate(pki, "device-8") }
  }),
  ({ pki }) => Effect.sync(() => fs.rmSync(pki.dir, { recursive: true, force: true }))
)

/** MQTT.js options for a TLS connection to HAProxy with the client certificate `cert` / `key`. */
const tlsOptions = (pki: Pki, cert: string, key: string): IClientOptions => ({
  ca: fs.readFileSync(pki.caCert),
  cert: fs.readFileSync(cert),
  key: fs.readFileSync(key),
  rejectUnauthorized: true
})

/** The PROXY listener of Mosquitto's HAProxy how-to (docs/configuration.md), the ACL letting device-7 alone use devices/#. */
const tlsListener = (acl: string) => (port: number) =>
  `acl_file ${acl}
listener ${port} 127.0.0.1
enable_proxy_protocol 2
proxy_protocol_v2_require_tls true
require_certificate true
use_identity_as_username true
`

const aclFile = Effect.gen(function* () {
  const dir = yield* tempDir
  const acl = path.join(dir, "acl")
  fs.writeFileSync(acl, "user device-7\ntopic readwrite devices/#\n")
  fs.chmodSync(acl, 0o644)
  return acl
})

/**
 * Midge's listener for TLS ended at HAProxy (`tlsListener`), and HAProxy in front of it ending TLS
 * and verifying the client's certificate, its server line's options `server`.
 */
const tlsFront = (server: string) =>
  Effect.gen(function* () {
    const { pki, serverPem, device8 } = yield* certificates
    const m = yield* midge(tlsListener(yield* aclFile))
    const h = yield* haproxy({ backend: m.port, server, bind: `ssl crt ${serverPem} ca-file ${pki.caCert} verify required` })
    return { pki, device8, m, h }
  })

/** HAProxy's lines for a failed health check, or a server it takes out */
const CHECK_FAILED = /Health check for server \S+ failed|is DOWN/

/** Lines that would say something went wrong (Midge's error and warning levels have no prefix: these are its texts). */
const troubleLines = (lines: Array<string>) =>
  lines.filter((l) => /rejected|Bad socket|[Ee]rror|corrupt|[Ii]nvalid|[Ww]arning|denied|disconnected/.test(l))

describe("HAProxy send-proxy / send-proxy-v2: Midge logs the client's own address", () => {
  for (const { version, server } of [
    { version: 1, server: "send-proxy" },
    { version: 2, server: "send-proxy-v2" }
  ] as const) {
    it.scopedLive(`${server} to enable_proxy_protocol ${version}: a message round trip; the client's port, not HAProxy's`, () =>
      Effect.gen(function* () {
        const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol ${version}\nallow_anonymous true\n`)
        const h = yield* haproxy({ backend: m.port, server })
        const { port, outgoing } = yield* roundTrip(h, `mqtt://127.0.0.1:${h.port}`, `hx-v${version}`)
        yield* hasLine(m.lines, `New client connected from 127.0.0.1:${port} as hx-v${version} (p2, c1, k60).`)
        expect(m.lines()).toContain(`New connection from 127.0.0.1:${port} on port ${m.port}.`)
        expect(m.lines().filter((l) => l.includes(`:${outgoing} `))).toStrictEqual([])
        expect(troubleLines(m.lines())).toStrictEqual([])
      })
    )
  }
})

describe("HAProxy terminating TLS, send-proxy-v2-ssl-cn: proxy_protocol_v2_require_tls, require_certificate, use_identity_as_username", () => {
  it.scopedLive("the client certificate's CN is the username: device-7 may use devices/#, device-8 may not", () =>
    Effect.gen(function* () {
      const { pki, m, h, device8 } = yield* tlsFront("send-proxy-v2-ssl-cn")
      // these four options go together on a PROXY listener without TLS of its own (docs/configuration.md)
      expect(m.warnings).toStrictEqual([])
      const url = `mqtts://127.0.0.1:${h.port}`
      // device-7: no username in its CONNECT; only its certificate can make it device-7, whom the ACL lets use devices/#
      const seven = yield* connected(url, { clientId: "hx-tls-7", ...tlsOptions(pki, pki.clientCert, pki.clientKey) })
      const got = collect(seven)
      expect((yield* subscribe(seven, "devices/#", { qos: 1 })).map((g) => g.qos)).toStrictEqual([1])
      yield* publish(seven, "devices/7/state", "on", { qos: 1 })
      yield* waitFor(() => got.length > 0, "device-7's message back")
      expect(got).toMatchObject([{ topic: "devices/7/state", payload: "on" }])
      const port7 = localPort(seven)
      yield* waitFor(() => h.outgoingPort(port7) !== undefined, `HAProxy's session line:\n${h.log()}`)
      expect(m.lines().some((l) => l.startsWith(`New client connected from 127.0.0.1:${port7} as hx-tls-7 `))).toBe(true)
      // device-8: also verified by HAProxy, so connected; but not device-7 for the ACL
      const eight = yield* connected(url, { clientId: "hx-tls-8", ...tlsOptions(pki, device8.cert, device8.key) })
      // MQTT.js fails a subscribe whose SUBACK refuses it
      const refusal = yield* Effect.flip(subscribe(eight, "devices/#", { qos: 1 }))
      expect((refusal.error as { packet?: { granted?: Array<number> } }).packet?.granted).toStrictEqual([128])
      expect(m.lines()).toContain("Denied SUBSCRIBE from hx-tls-8 to 'devices/#'.")
      yield* publish(eight, "devices/8/state", "on", { qos: 1 })
      yield* settle(200)
      expect(got.map((r) => r.topic)).toStrictEqual(["devices/7/state"])
      expect(m.lines().filter((l) => /rejected|Bad socket/.test(l) && l.includes(`:${port7}`))).toStrictEqual([])
    })
  )

  it.scopedLive("Mosquitto's connect line names the certificate's CN as the username (u'device-7')", () =>
    Effect.gen(function* () {
      const { pki, m, h } = yield* tlsFront("send-proxy-v2-ssl-cn")
      const { port } = yield* roundTrip(h, `mqtts://127.0.0.1:${h.port}`, "hx-tls-line", tlsOptions(pki, pki.clientCert, pki.clientKey), "devices/7/line")
      // handle_connect.c: use_identity_as_username puts the CN in context->username, which the line prints
      yield* hasLine(m.lines, `New client connected from 127.0.0.1:${port} as hx-tls-line (p2, c1, k60, u'device-7').`)
    })
  )

  it.scopedLive("proxy-v2-options ssl-cipher: Mosquitto's `negotiated` line with the client's TLS version and cipher", () =>
    Effect.gen(function* () {
      const { pki, m, h } = yield* tlsFront("send-proxy-v2-ssl-cn proxy-v2-options ssl-cipher")
      const client = yield* connected(`mqtts://127.0.0.1:${h.port}`, { clientId: "hx-cipher", ...tlsOptions(pki, pki.clientCert, pki.clientKey) })
      const socket = client.stream as unknown as tls.TLSSocket
      const port = localPort(client)
      yield* hasLine(m.lines, `Connection from 127.0.0.1:${port} negotiated ${socket.getProtocol()} cipher ${socket.getCipher().name}`)
      yield* waitFor(() => m.lines().some((l) => l.startsWith(`New client connected from 127.0.0.1:${port} as hx-cipher `)), "the connect line")
    })
  )

  it.scopedLive("a plain HAProxy frontend with send-proxy-v2 to that listener: refused, with Mosquitto's line", () =>
    Effect.gen(function* () {
      const m = yield* midge(tlsListener(yield* aclFile))
      const h = yield* haproxy({ backend: m.port, server: "send-proxy-v2" })
      const { outcome, port } = yield* attempt(`mqtt://127.0.0.1:${h.port}`, { clientId: "hx-plain" })
      expect(outcome).not.toBe("connected")
      expect(port).toBeDefined()
      yield* hasLine(m.lines, `Connection from 127.0.0.1:${port} rejected, client did not connect using TLS.`)
      expect(m.lines()).toContain("Bad socket read/write on client <unknown>: Proxy error")
      expect(m.lines().some((l) => l.includes(" as hx-plain "))).toBe(false)
    })
  )
})

describe("HAProxy's health checks (`check`): v1 headers with HAProxy's own addresses, v2 LOCAL headers", () => {
  for (const { version, server } of [
    { version: 1, server: "send-proxy check inter 100ms" },
    { version: 2, server: "send-proxy-v2 check inter 100ms" }
  ] as const) {
    it.scopedLive(`enable_proxy_protocol ${version}, \`${server}\`: checks pass, no error lines, clients go on`, () =>
      Effect.gen(function* () {
        const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol ${version}\nallow_anonymous true\n`)
        const h = yield* haproxy({ backend: m.port, server })
        // a few rounds of checks (every 100 ms), each a connection closed before CONNECT (one whose peer is gone by the
        // time its header is read closes without a line)
        yield* waitFor(() => /Health check for server mqtt_backend\/midge succeeded/.test(h.log()), "HAProxy's health checks")
        yield* settle(600)
        const { port } = yield* roundTrip(h, `mqtt://127.0.0.1:${h.port}`, `hx-check-${version}`)
        yield* hasLine(m.lines, `New client connected from 127.0.0.1:${port} as hx-check-${version} (p2, c1, k60).`)
        yield* settle(300)
        expect(h.log()).not.toMatch(CHECK_FAILED)
        expect(h.running()).toBe(true)
        expect(troubleLines(m.lines())).toStrictEqual([])
      })
    )
  }

  it.scopedLive("v2 LOCAL from a check reset at once: no `New connection from unix socket:0` on a TCP listener", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol 2\nallow_anonymous true\n`)
      const h = yield* haproxy({ backend: m.port, server: "send-proxy-v2 check inter 100ms" })
      // HAProxy's check connects, sends the 16 bytes of a LOCAL header (family UNSPEC, no addresses) and resets the
      // connection at once: by the time the broker reads the header, the kernel no longer knows the peer's address
      // (Mosquitto closes a connection whose address it cannot read, without a line)
      yield* waitFor(() => /Health check for server mqtt_backend\/midge succeeded/.test(h.log()), "HAProxy's first health check")
      yield* settle(600)
      const connections = m.lines().filter((l) => l.startsWith("New connection from "))
      expect(connections.filter((l) => !new RegExp(`^New connection from 127\\.0\\.0\\.1:\\d+ on port ${m.port}\\.$`).test(l))).toStrictEqual([])
    })
  )

  it.scopedLive("the how-to's TLS server line (`check on-marked-down shutdown-sessions send-proxy-v2-ssl-cn`): checks pass, each refused by the listener, clients go on", () =>
    Effect.gen(function* () {
      const { pki, m, h } = yield* tlsFront("check inter 100ms on-marked-down shutdown-sessions send-proxy-v2-ssl-cn")
      const refusals = () => m.lines().filter((l) => / rejected, client did not connect using TLS\.$/.test(l))
      yield* waitFor(() => refusals().length >= 5, "HAProxy's health checks")
      expect(h.log()).toMatch(/Health check for server mqtt_backend\/midge succeeded/)
      const { port } = yield* roundTrip(h, `mqtts://127.0.0.1:${h.port}`, "hx-tls-check", tlsOptions(pki, pki.clientCert, pki.clientKey), "devices/7/check")
      yield* settle(300)
      expect(h.log()).not.toMatch(CHECK_FAILED)
      // a LOCAL header says nothing of TLS: proxy_protocol_v2_require_tls refuses each check (Mosquitto 2.1 closes every LOCAL connection)
      expect(troubleLines(m.lines()).filter((l) => !/ rejected, client did not connect using TLS\.$/.test(l) && l !== "Bad socket read/write on client <unknown>: Proxy error")).toStrictEqual([])
      expect(m.lines().filter((l) => l.startsWith("New connection from "))).toStrictEqual([`New connection from 127.0.0.1:${port} on port ${m.port}.`])
    })
  )
})
