/**
 * Mosquitto 2.1's PROXY protocol on a listener (`enable_proxy_protocol 1|2`,
 * `proxy_protocol_v2_require_tls`), composed as the daemon composes it (config text → security
 * layer → Broker), on real sockets on 127.0.0.1: raw clients that send a PROXY header and then an
 * MQTT CONNECT (mqtt-packet's generate), as HAProxy's `send-proxy` / `send-proxy-v2` /
 * `send-proxy-v2-ssl-cn` would in front of the broker. The log lines are Mosquitto's
 * (src/proxy_v1.c, src/proxy_v2.c, test/broker/*proxy*).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Mqtt from "mqtt-packet"
import { WebSocket } from "ws"
import { Broker, brokerOptionsFromConfig } from "../../src/Broker.js"
import { parseConfigText } from "../../src/config/Config.js"
import { Log } from "../../src/log/Log.js"
import { layerFromConfig, optionsFromConfig } from "../../src/security/Auth.js"
import type { CoreSettings } from "../../src/session/Core.js"
import { freePort } from "../support/processes.js"
import { packetsOf, rawClient, settle, waitFor, type RawClient } from "./harness.js"

/** The daemon's composition; `conf` gets the port; the log kept in memory, without timestamps. */
const midge = (conf: (port: number) => string, settings: Partial<CoreSettings> = {}) =>
  Effect.gen(function* () {
    const port = yield* freePort
    const config = yield* parseConfigText(conf(port), "proxy.conf").pipe(Effect.orDie)
    const log = new Log(["all"], [], false, 500)
    const security = yield* Layer.build(layerFromConfig(optionsFromConfig(config))).pipe(Effect.orDie)
    const options = brokerOptionsFromConfig(config, log)
    yield* Broker.make({ ...options, settings: { ...options.settings, ...settings } }).pipe(Effect.provide(security), Effect.orDie)
    const lines = () => log.recent.filter((l) => !l.startsWith("Received ") && !l.startsWith("Sending "))
    return { port, lines }
  })

const connect = (clientId: string): Buffer =>
  Mqtt.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId, keepalive: 60 } as Mqtt.IConnectPacket)

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff])
const tlv = (type: number, value: Buffer): Buffer => Buffer.concat([Buffer.from([type]), u16(value.length), value])
const SIGNATURE = Buffer.from("0d0a0d0a000d0a515549540a", "hex")

/** A v2 PROXY header for TCP over IPv4 (192.0.2.5:6275 → 192.0.2.6:1883 unless told) with these TLVs. */
const v2ipv4 = (tlvs: ReadonlyArray<Buffer> = [], src = [192, 0, 2, 5], sport = 6275): Buffer => {
  const payload = Buffer.concat([Buffer.from(src), Buffer.from([192, 0, 2, 6]), u16(sport), u16(1883), ...tlvs])
  return Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x11]), u16(payload.length), payload])
}

/** PP2_TYPE_SSL: client bits, verify, and the version, cipher and CN sub-TLVs given */
const ssl = (client: number, verify: number, sub: { version?: string; cipher?: string; cn?: string } = {}): Buffer => {
  const v = Buffer.alloc(4)
  v.writeUInt32BE(verify)
  return tlv(
    0x20,
    Buffer.concat([
      Buffer.from([client]),
      v,
      ...(sub.version !== undefined ? [tlv(0x21, Buffer.from(sub.version))] : []),
      ...(sub.cipher !== undefined ? [tlv(0x23, Buffer.from(sub.cipher))] : []),
      ...(sub.cn !== undefined ? [tlv(0x22, Buffer.from(sub.cn))] : [])
    ])
  )
}

const connackOf = (r: RawClient) => packetsOf(r).find((p): p is Mqtt.IConnackPacket => p.cmd === "connack")

const connected = (r: RawClient) =>
  Effect.gen(function* () {
    yield* waitFor(() => connackOf(r) !== undefined || r.closed(), "a CONNACK")
    expect(connackOf(r)?.returnCode).toBe(0)
  })

const refused = (r: RawClient) =>
  Effect.gen(function* () {
    yield* waitFor(() => r.closed(), "the broker to close the connection")
    expect(packetsOf(r)).toStrictEqual([])
  })

const hasLine = (lines: () => Array<string>, line: string) => waitFor(() => lines().includes(line), `the line "${line}"`)

describe("enable_proxy_protocol: the client's address from the header", () => {
  it.scopedLive("v1: header and CONNECT in one write; the log names the proxied client", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol 1\nallow_anonymous true\n`)
      const c = yield* rawClient(m.port)
      yield* c.write(Buffer.concat([Buffer.from("PROXY TCP4 192.0.2.5 192.0.2.6 6275 1883\r\n"), connect("p1")]))
      yield* connected(c)
      yield* hasLine(m.lines, "New client connected from 192.0.2.5:6275 as p1 (p2, c1, k60).")
      expect(m.lines()).toContain(`New connection from 192.0.2.5:6275 on port ${m.port}.`)
    })
  )

  it.scopedLive("v2: IPv6 addresses, the header split across writes, the CONNECT in the last one", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol 2\nallow_anonymous true\n`)
      const c = yield* rawClient(m.port)
      const src = Buffer.from("20010db805060708090000000000000" + "1", "hex")
      const payload = Buffer.concat([src, Buffer.alloc(15), Buffer.from([1]), u16(6275), u16(1883)])
      const header = Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x21]), u16(payload.length), payload])
      yield* c.write(header.subarray(0, 7))
      yield* settle(50)
      yield* c.write(header.subarray(7, 30))
      yield* settle(50)
      yield* c.write(Buffer.concat([header.subarray(30), connect("p2")]))
      yield* connected(c)
      yield* hasLine(m.lines, "New client connected from 2001:db8:506:708:900::1:6275 as p2 (p2, c1, k60).")
    })
  )

  it.scopedLive("v2 LOCAL (the proxy's health check): the socket's own address", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol 2\nallow_anonymous true\n`)
      const c = yield* rawClient(m.port)
      yield* c.write(Buffer.concat([SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00]), connect("hc")]))
      yield* connected(c)
      yield* waitFor(() => m.lines().some((l) => /^New client connected from 127\.0\.0\.1:\d+ as hc /.test(l)), "the socket's address")
    })
  )

  it.scopedLive("a Unix socket listener (net.Socket connections) with v1", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-proxy-"))
      const sock = path.join(dir, "mqtt.sock")
      const m = yield* midge(() => `listener 0 ${sock}\nenable_proxy_protocol 1\nallow_anonymous true\n`)
      const c = yield* rawClient(sock)
      yield* c.write(Buffer.from("PROXY TCP6 2001:db8::7 2001:db8::1 40000 1883\r\n"))
      yield* settle(50)
      yield* c.write(connect("u1"))
      yield* connected(c)
      yield* hasLine(m.lines, "New client connected from 2001:db8::7:40000 as u1 (p2, c1, k60).")
    })
  )
})

describe("enable_proxy_protocol: connections without a valid header are closed", () => {
  it.scopedLive("v1: a client sending CONNECT without a header; a corrupt header", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol 1\nallow_anonymous true\n`)
      const direct = yield* rawClient(m.port)
      yield* direct.write(connect("d1"))
      yield* refused(direct)
      yield* hasLine(m.lines, "Connection rejected, corrupt PROXY header.")
      expect(m.lines()).toContain("Bad socket read/write on client <unknown>: Invalid input")
      const corrupt = yield* rawClient(m.port)
      yield* corrupt.write(Buffer.concat([Buffer.from("PROXY TCP4 192.0.2.5 192.0.2.6 0 1883\r\n"), connect("d2")]))
      yield* refused(corrupt)
      expect(m.lines().filter((l) => l === "Connection rejected, corrupt PROXY header.")).toHaveLength(2)
      expect(m.lines().some((l) => l.includes(" as d1 ") || l.includes(" as d2 "))).toBe(false)
    })
  )

  it.scopedLive("v2: a client sending CONNECT without a header; TLVs that overrun the header", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol 2\nallow_anonymous true\n`)
      const direct = yield* rawClient(m.port)
      yield* direct.write(connect("d1"))
      yield* refused(direct)
      yield* hasLine(m.lines, "Bad socket read/write on client <unknown>: Invalid input")
      const corrupt = yield* rawClient(m.port)
      const header = v2ipv4([Buffer.from([0x05, 0x00, 0x09])])
      yield* corrupt.write(Buffer.concat([header, connect("d2")]))
      yield* refused(corrupt)
      yield* hasLine(m.lines, "Connection from 192.0.2.5:6275 rejected, corrupt PROXY header.")
      expect(m.lines()).toContain("Bad socket read/write on client <unknown>: Proxy error")
    })
  )

  it.scopedLive("a header not complete within the connect timeout: kept until then, then closed without a line", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol 2\nallow_anonymous true\n`, { connectTimeoutMs: 600 })
      const slow = yield* rawClient(m.port)
      const started = Date.now()
      yield* slow.write(v2ipv4().subarray(0, 20))
      yield* settle(250)
      // a prefix of a valid header: the broker waits for the rest
      expect(slow.closed()).toBe(false)
      yield* waitFor(() => slow.closed(), "the connect timeout", 3000)
      expect(Date.now() - started).toBeGreaterThanOrEqual(500)
      expect(packetsOf(slow)).toStrictEqual([])
      expect(m.lines().filter((l) => l.startsWith("Bad socket") || l.startsWith("Client <unknown>") || l.startsWith("New connection"))).toStrictEqual([])
    })
  )
})

describe("proxy_protocol_v2_require_tls, require_certificate, use_identity_as_username", () => {
  it.scopedLive("require_tls: a header without TLS is refused with Mosquitto's line; one with PP2_CLIENT_SSL connects", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nenable_proxy_protocol 2\nproxy_protocol_v2_require_tls true\nallow_anonymous true\n`)
      const plain = yield* rawClient(m.port)
      yield* plain.write(Buffer.concat([v2ipv4(), connect("t1")]))
      yield* refused(plain)
      yield* hasLine(m.lines, "Connection from 192.0.2.5:6275 rejected, client did not connect using TLS.")
      // HAProxy's send-proxy-v2-ssl for a plain client: the SSL TLV with the SSL bit clear
      const clear = yield* rawClient(m.port)
      yield* clear.write(Buffer.concat([v2ipv4([ssl(0, 0)]), connect("t2")]))
      yield* refused(clear)
      const overTls = yield* rawClient(m.port)
      yield* overTls.write(Buffer.concat([v2ipv4([ssl(1, 0, { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384" })]), connect("t3")]))
      yield* connected(overTls)
      expect(m.lines()).toContain("Connection from 192.0.2.5:6275 negotiated TLSv1.3 cipher TLS_AES_256_GCM_SHA384")
      yield* hasLine(m.lines, "New client connected from 192.0.2.5:6275 as t3 (p2, c1, k60).")
    })
  )

  it.scopedLive("require_certificate + use_identity_as_username: the header's CN is the username (the acl_file lets device-7 alone use devices/#)", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-proxy-acl-"))
      const acl = path.join(dir, "acl")
      fs.writeFileSync(acl, "user device-7\ntopic readwrite devices/#\n")
      fs.chmodSync(acl, 0o644)
      const m = yield* midge(
        (port) =>
          `acl_file ${acl}\nlistener ${port} 127.0.0.1\nenable_proxy_protocol 2\nproxy_protocol_v2_require_tls true\nrequire_certificate true\nuse_identity_as_username true\n`
      )
      const subscribeAs = (cn: string, clientId: string) =>
        Effect.gen(function* () {
          const c = yield* rawClient(m.port)
          yield* c.write(Buffer.concat([v2ipv4([ssl(0x05, 0, { version: "TLSv1.3", cn })]), connect(clientId)]))
          yield* connected(c)
          yield* c.write(Mqtt.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "devices/#", qos: 1 }] } as Mqtt.ISubscribePacket))
          yield* waitFor(() => packetsOf(c).some((p) => p.cmd === "suback"), "a SUBACK")
          return (packetsOf(c).find((p) => p.cmd === "suback") as Mqtt.ISubackPacket).granted
        })
      // the CONNECT carries no username: only the certificate's CN can make it device-7
      expect(yield* subscribeAs("device-7", "a1")).toStrictEqual([1])
      expect(yield* subscribeAs("device-8", "a2")).toStrictEqual([128])
      // without a verified certificate (verify non-zero; no certificate in the session): refused before CONNECT
      for (const header of [v2ipv4([ssl(0x05, 1, { cn: "device-7" })]), v2ipv4([ssl(0x01, 0, { cn: "device-7" })])]) {
        const c = yield* rawClient(m.port)
        yield* c.write(Buffer.concat([header, connect("a3")]))
        yield* refused(c)
      }
      expect(m.lines().filter((l) => l === "Connection from 192.0.2.5:6275 rejected, client did not provide a certificate.")).toHaveLength(2)
    })
  )
})

describe("enable_proxy_protocol on a WebSocket listener: the header before the HTTP upgrade", () => {
  it.scopedLive("v2 header, upgrade, CONNECT in a binary frame: CONNACK, and the proxied address", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nprotocol websockets\nenable_proxy_protocol 2\nallow_anonymous true\n`)
      const got: Array<Buffer> = []
      yield* Effect.acquireRelease(
        Effect.async<WebSocket, Error>((resume) => {
          const ws = new WebSocket(`ws://127.0.0.1:${m.port}/mqtt`, "mqtt", {
            // the proxy's header goes first on the TCP connection, before the HTTP request
            createConnection: (() => {
              const s = net.connect({ port: m.port, host: "127.0.0.1" })
              s.write(v2ipv4([], [198, 51, 100, 9], 50000))
              return s
            }) as never
          })
          ws.on("message", (data: Buffer) => got.push(Buffer.from(data)))
          ws.once("open", () => {
            ws.send(connect("w1"))
            resume(Effect.succeed(ws))
          })
          ws.once("error", (e) => resume(Effect.fail(e)))
        }),
        (ws) => Effect.sync(() => ws.terminate())
      )
      yield* waitFor(() => Buffer.concat(got).length >= 4, "a CONNACK")
      expect(Buffer.concat(got).subarray(0, 4)).toStrictEqual(Buffer.from([0x20, 0x02, 0x00, 0x00]))
      yield* hasLine(m.lines, "New client connected from 198.51.100.9:50000 as w1 (p2, c1, k60).")
    })
  )

  it.scopedLive("an upgrade without a header is closed", () =>
    Effect.gen(function* () {
      const m = yield* midge((port) => `listener ${port} 127.0.0.1\nprotocol websockets\nenable_proxy_protocol 2\nallow_anonymous true\n`)
      const outcome = yield* Effect.async<string>((resume) => {
        const ws = new WebSocket(`ws://127.0.0.1:${m.port}/mqtt`, "mqtt")
        ws.once("open", () => {
          ws.terminate()
          resume(Effect.succeed("open"))
        })
        ws.once("error", () => resume(Effect.succeed("error")))
      })
      expect(outcome).toBe("error")
      yield* hasLine(m.lines, "Bad socket read/write on client <unknown>: Invalid input")
    })
  )
})
