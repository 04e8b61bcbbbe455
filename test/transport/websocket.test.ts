/**
 * WebSocket listeners: MQTT.js in WebSocket mode over ws:// and wss://
 * through the real connection code (temporary wiring, see fixtures.ts), the
 * framing rules of MQTT section 6, subprotocols, http_dir, shutdown.
 */
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { WebSocket } from "ws"
import { makeTls } from "../../src/transport/tls.js"
import { listenWebSocket, type MqttSocket, type WebSocketListenerOptions } from "../../src/transport/websocket.js"
import { collect, connectClient, publish, subscribe, waitFor } from "../e2e/harness.js"
import { makePki, wireConnections } from "./fixtures.js"

// [MQTT-6.0.0-*] what the connection code gets must be what it uses of a net.Socket
const _tcp: MqttSocket = new net.Socket()
const _tls: MqttSocket = new tls.TLSSocket(new net.Socket())
void _tcp
void _tls

const startWs = (options: Partial<WebSocketListenerOptions> = {}) =>
  Effect.gen(function* () {
    const wired = wireConnections()
    const infos: Array<{ remoteAddress: string | undefined; protocol: string | undefined; tls: boolean }> = []
    const bound = yield* listenWebSocket({ port: 0, host: "127.0.0.1", ...options }, (socket, info) => {
      infos.push({ remoteAddress: socket.remoteAddress, protocol: info.request.headers["sec-websocket-protocol"], tls: info.tlsSocket !== undefined })
      wired.accept(socket)
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => wired.shutdown()))
    return { ...bound, wired, infos }
  })

/** A raw ws client: binary or text messages out, everything received kept. */
const rawWs = (url: string, protocols: Array<string> = ["mqtt"], options: WebSocket.ClientOptions = {}) =>
  Effect.acquireRelease(
    Effect.async<{ ws: WebSocket; received: Array<Buffer>; closed: () => number | undefined }, Error>((resume) => {
      const ws = new WebSocket(url, protocols, options)
      const received: Array<Buffer> = []
      let code: number | undefined
      ws.on("message", (d: Buffer) => received.push(Buffer.from(d)))
      ws.on("close", (c) => (code = c))
      ws.once("open", () => resume(Effect.succeed({ ws, received, closed: () => code })))
      ws.once("error", (e) => resume(Effect.fail(e)))
    }),
    ({ ws }) => Effect.sync(() => ws.terminate())
  )

// CONNECT v3.1.1, client id "ws1", keepalive 60, clean session
const CONNECT = Buffer.from([0x10, 0x0f, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x03, 0x77, 0x73, 0x31])
const PINGREQ = Buffer.from([0xc0, 0x00])
const DISCONNECT = Buffer.from([0xe0, 0x00])

describe("WebSocket listener (protocol websockets)", () => {
  for (const protocolVersion of [4, 5] as const) {
    it.scopedLive(`MQTT.js over ws:// (MQTT ${protocolVersion === 4 ? "3.1.1" : "5"}): subscribe, publish QoS 0-2, receive`, () =>
      Effect.gen(function* () {
        const { port, infos } = yield* startWs()
        const url = `ws://127.0.0.1:${port}/mqtt`
        const sub = yield* connectClient(url, { protocolVersion, clientId: "sub" })
        const got = collect(sub)
        yield* subscribe(sub, "ws/#", { qos: 2 })
        const pubc = yield* connectClient(url, { protocolVersion, clientId: "pub" })
        for (const qos of [0, 1, 2] as const) yield* publish(pubc, `ws/${qos}`, `m${qos}`, { qos })
        yield* waitFor(() => got.length === 3, "three messages over WebSocket")
        expect(got.map((m) => [m.topic, m.payload, m.qos])).toEqual([
          ["ws/0", "m0", 0],
          ["ws/1", "m1", 1],
          ["ws/2", "m2", 2]
        ])
        expect(infos.map((i) => [i.protocol, i.remoteAddress, i.tls])).toEqual([
          ["mqtt", "127.0.0.1", false],
          ["mqtt", "127.0.0.1", false]
        ])
      })
    )
  }

  it.scopedLive("MQTT.js over wss:// with a listener's TLS options; a large message crosses many frames", () =>
    Effect.gen(function* () {
      const pki = makePki()
      const setup = yield* makeTls({ certfile: pki.serverCert, keyfile: pki.serverKey })
      const { port, infos } = yield* startWs({ tls: setup.serverOptions })
      const url = `wss://localhost:${port}/mqtt`
      const ca = fs.readFileSync(pki.caCert)
      const c = yield* connectClient(url, { protocolVersion: 5, ca, clientId: "secure" })
      const got = collect(c)
      yield* subscribe(c, "big", { qos: 1 })
      const big = "x".repeat(3 * 1024 * 1024)
      yield* publish(c, "big", big, { qos: 1 })
      yield* waitFor(() => got.length === 1, "the large message back", 10_000)
      expect(got[0].payload.length).toBe(big.length)
      expect(infos[0].tls).toBe(true)
      // an untrusting client fails
      const bad = yield* Effect.exit(connectClient(url, { protocolVersion: 5, clientId: "untrusting" }))
      expect(Exit.isFailure(bad)).toBe(true)
    })
  )

  it.scopedLive("[MQTT-6.0.0-2] packets may span WebSocket messages and share one", () =>
    Effect.gen(function* () {
      const { port } = yield* startWs()
      const c = yield* rawWs(`ws://127.0.0.1:${port}/`)
      c.ws.send(CONNECT.subarray(0, 5))
      c.ws.send(CONNECT.subarray(5))
      yield* waitFor(() => Buffer.concat(c.received).length >= 4, "CONNACK")
      expect(Buffer.concat(c.received).subarray(0, 4)).toEqual(Buffer.from([0x20, 0x02, 0x00, 0x00]))
      c.ws.send(Buffer.concat([PINGREQ, PINGREQ]))
      yield* waitFor(() => Buffer.concat(c.received).length >= 8, "two PINGRESPs")
      expect(Buffer.concat(c.received).subarray(4)).toEqual(Buffer.from([0xd0, 0x00, 0xd0, 0x00]))
      // DISCONNECT: the server closes the WebSocket
      c.ws.send(DISCONNECT)
      yield* waitFor(() => c.closed() !== undefined, "the server to close")
    })
  )

  it.scopedLive("[MQTT-6.0.0-1] a text frame closes the connection, its bytes unread", () =>
    Effect.gen(function* () {
      const { port, wired } = yield* startWs()
      const c = yield* rawWs(`ws://127.0.0.1:${port}/`)
      c.ws.send(CONNECT.toString("latin1"), { binary: false })
      yield* waitFor(() => c.closed() !== undefined, "the server to close")
      expect(c.received).toEqual([])
      expect(wired.core.stats.clientsConnected).toBe(0)
    })
  )

  it.scopedLive("[MQTT-6.0.0-3] subprotocol mqtt, or mqttv3.1; a client insisting on another one gives up", () =>
    Effect.gen(function* () {
      const { port } = yield* startWs()
      const a = yield* rawWs(`ws://127.0.0.1:${port}/`, ["foo", "mqtt"])
      expect(a.ws.protocol).toBe("mqtt")
      const b = yield* rawWs(`ws://127.0.0.1:${port}/`, ["mqttv3.1"])
      expect(b.ws.protocol).toBe("mqttv3.1")
      const c = yield* Effect.exit(rawWs(`ws://127.0.0.1:${port}/`, ["foo"]))
      expect(Exit.isFailure(c)).toBe(true)
      // MQTT.js in MQTT 3.1 mode asks for mqttv3.1
      const old = yield* connectClient(`ws://127.0.0.1:${port}/`, { protocolVersion: 3, protocolId: "MQIsdp", clientId: "old" })
      expect(old.connected).toBe(true)
    })
  )

  it.scopedLive("closing the listener's scope sends 1001 (going away) to clients still open", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const sockets: Array<MqttSocket> = []
      // as the connection code does: read, and end our side when the peer's ends
      const accept = (socket: MqttSocket) => {
        sockets.push(socket)
        socket.on("data", () => {})
        socket.on("end", () => socket.end())
      }
      const { port } = yield* listenWebSocket({ port: 0, host: "127.0.0.1" }, accept).pipe(Scope.extend(scope))
      const c = yield* rawWs(`ws://127.0.0.1:${port}/`)
      yield* waitFor(() => sockets.length === 1, "the server side")
      yield* Scope.close(scope, Exit.void)
      yield* waitFor(() => c.closed() !== undefined, "the close")
      expect(c.closed()).toBe(1001)
      yield* waitFor(() => sockets[0].destroyed, "the stream to be destroyed")
    })
  )

  it.scopedLive("the stream: remoteAddress / remotePort of the TCP socket, end() sends a close frame, destroySoon after it", () =>
    Effect.gen(function* () {
      const sockets: Array<MqttSocket> = []
      const { port } = yield* listenWebSocket({ port: 0, host: "127.0.0.1" }, (socket) => void sockets.push(socket))
      const c = yield* rawWs(`ws://127.0.0.1:${port}/`)
      yield* waitFor(() => sockets.length === 1, "the server side")
      const s = sockets[0]
      expect(s.remoteAddress).toBe("127.0.0.1")
      expect(s.remotePort).toBe((c.ws as unknown as { _socket: net.Socket })._socket.localPort)
      expect(s.setNoDelay(true)).toBe(s)
      const data: Array<Buffer> = []
      s.on("data", (d) => void data.push(d))
      c.ws.send(Buffer.from([1, 2, 3]))
      yield* waitFor(() => data.length === 1, "bytes in")
      expect(s.write(Buffer.from([4, 5]))).toBe(true)
      yield* waitFor(() => c.received.length === 1, "bytes out")
      expect(c.received[0]).toEqual(Buffer.from([4, 5]))
      s.end()
      s.destroySoon()
      yield* waitFor(() => c.closed() !== undefined && s.destroyed, "the close handshake")
      expect(c.closed()).toBe(1005)
    })
  )
})

describe("http_dir", () => {
  const get = (port: number, p: string) =>
    Effect.async<{ status: number; type: string | undefined; body: string }>((resume) => {
      http.get({ host: "127.0.0.1", port, path: p }, (res) => {
        let body = ""
        res.on("data", (d) => (body += d))
        res.on("end", () => resume(Effect.succeed({ status: res.statusCode ?? 0, type: res.headers["content-type"], body })))
      })
    })

  it.scopedLive("serves files, / is index.html, nothing outside the directory; MQTT still on the same port", () =>
    Effect.gen(function* () {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-http-"))
      const www = path.join(root, "www")
      fs.mkdirSync(path.join(www, "js"), { recursive: true })
      fs.writeFileSync(path.join(www, "index.html"), "<h1>midge</h1>")
      fs.writeFileSync(path.join(www, "js", "app.js"), "console.log(1)")
      fs.writeFileSync(path.join(root, "secret.txt"), "secret")
      fs.symlinkSync(path.join(root, "secret.txt"), path.join(www, "link.txt"))
      const { port } = yield* startWs({ httpDir: www })
      expect(yield* get(port, "/")).toEqual({ status: 200, type: "text/html; charset=utf-8", body: "<h1>midge</h1>" })
      expect(yield* get(port, "/js/app.js")).toMatchObject({ status: 200, type: "text/javascript; charset=utf-8", body: "console.log(1)" })
      expect((yield* get(port, "/nope.html")).status).toBe(404)
      expect((yield* get(port, "/js/")).status).toBe(404)
      expect((yield* get(port, "/../secret.txt")).body).not.toContain("secret")
      expect((yield* get(port, "/%2e%2e/secret.txt")).body).not.toContain("secret")
      expect((yield* get(port, "/link.txt")).status).toBe(403)
      const c = yield* connectClient(`ws://127.0.0.1:${port}/mqtt`, { clientId: "alongside" })
      expect(c.connected).toBe(true)
    })
  )

  it.scopedLive("without http_dir every plain HTTP request is 404", () =>
    Effect.gen(function* () {
      const { port } = yield* startWs()
      expect((yield* get(port, "/")).status).toBe(404)
      expect((yield* get(port, "/index.html")).status).toBe(404)
    })
  )

  it.scopedLive("a port in use is a ListenError", () =>
    Effect.gen(function* () {
      const { port } = yield* startWs()
      const again = yield* Effect.exit(startWs({ port }))
      expect(JSON.stringify(again)).toContain("address-in-use")
    })
  )
})
