/**
 * WebSocket listeners (`protocol websockets`), MQTT over WebSocket as MQTT
 * 3.1.1 section 6 / MQTT 5.0 section 6 define it, on the `ws` package:
 *
 * - an `http` or, with TLS options from tls.ts, `https` server; every
 *   upgrade on any path is a WebSocket, subprotocol `mqtt` (or `mqttv3.1`,
 *   which Mosquitto also accepts) [MQTT-6.0.0-3] [MQTT-6.0.0-4];
 * - each connection is a byte stream, `ws`'s `createWebSocketStream` Duplex
 *   with what the connection code uses of a `net.Socket` added (see
 *   {@link MqttSocket}); MQTT packets may span WebSocket messages and a
 *   message may hold several packets [MQTT-6.0.0-2];
 * - a text frame closes the connection [MQTT-6.0.0-1];
 * - `http_dir` (optional): plain GET requests are served from that
 *   directory (`/` is `index.html`, nothing outside it); without it every
 *   plain HTTP request is answered 404, as Mosquitto does.
 */
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import type * as net from "node:net"
import * as path from "node:path"
import type { Duplex } from "node:stream"
import type * as tls from "node:tls"
import { Effect, type Scope } from "effect"
import { createWebSocketStream, WebSocketServer, type WebSocket } from "ws"
import { bind, type ListenError, logHandshakeFailures } from "./bind.js"

/**
 * What the connection code (session/Connection.ts) uses of its socket. A
 * `net.Socket` and a `tls.TLSSocket` are MqttSockets as they are; a
 * WebSocket connection is one through {@link webSocketStream}.
 */
export interface MqttSocket {
  on(event: "data", listener: (chunk: Buffer) => void): this
  on(event: "error", listener: (error: Error) => void): this
  on(event: "end" | "close" | "drain", listener: () => void): this
  write(chunk: Buffer): boolean
  pause(): this
  resume(): this
  end(): this
  /** end, then destroy once everything is written */
  destroySoon(): void
  setNoDelay(noDelay?: boolean): this
  readonly writableLength: number
  readonly writable: boolean
  readonly destroyed: boolean
  readonly remoteAddress?: string | undefined
  readonly remotePort?: number | undefined
}

/** A WebSocket connection as a byte stream that is also an MqttSocket. */
export type WebSocketMqttSocket = Duplex & MqttSocket

export const SUBPROTOCOLS: ReadonlyArray<string> = ["mqtt", "mqttv3.1"]

/** MQTT's largest packet: 268,435,455 bytes of remaining length + 5 bytes of header. */
const MAX_MQTT_PACKET = 268_435_460

/**
 * The Duplex of one accepted WebSocket, with `remoteAddress` / `remotePort`
 * of the underlying TCP socket, `setNoDelay` passed to it, and `destroySoon`
 * (net.Socket's: end, then destroy on `finish`). `end()` sends a close frame;
 * `destroy()` drops the TCP connection. Writes are binary frames.
 */
export const webSocketStream = (ws: WebSocket, request: http.IncomingMessage): WebSocketMqttSocket => {
  let duplex: Duplex | undefined
  // [MQTT-6.0.0-1] MQTT goes in binary frames: a text frame closes the connection, before
  // createWebSocketStream's own listener (registered after this one) can pass its bytes on
  ws.on("message", (_data, isBinary) => {
    if (!isBinary) {
      ws.terminate()
      duplex?.destroy()
    }
  })
  const stream = createWebSocketStream(ws)
  duplex = stream
  const socket = request.socket
  const out = stream as WebSocketMqttSocket
  Object.defineProperties(out, {
    remoteAddress: { value: socket.remoteAddress, enumerable: true },
    remotePort: { value: socket.remotePort, enumerable: true }
  })
  out.setNoDelay = function (noDelay?: boolean) {
    socket.setNoDelay(noDelay)
    return this
  }
  out.destroySoon = function () {
    if (this.writable) this.end()
    if (this.writableFinished) this.destroy()
    else this.once("finish", () => this.destroy())
  }
  return out
}

export interface WebSocketListenerOptions {
  readonly port: number
  /** undefined: all interfaces */
  readonly host?: string | undefined
  readonly socketDomain?: "ipv4" | "ipv6" | undefined
  /** `bind_interface` */
  readonly bindInterface?: string | undefined
  /** wss://: the server options of tls.ts `makeTls` */
  readonly tls?: tls.TlsOptions | undefined
  /** `http_dir` */
  readonly httpDir?: string | undefined
  /** the HTTP headers' limit of a request or upgrade, bytes (`websockets_headers_size`); default Node's 16 KiB */
  readonly maxHeaderSize?: number | undefined
  /** largest WebSocket message (bytes); default MQTT's largest packet */
  readonly maxPayload?: number | undefined
  /** wss://: where a failed TLS handshake's line goes (the socket is closed either way); also a refused Origin's */
  readonly onHandshakeFailure?: ((line: string) => void) | undefined
  /**
   * `websockets_origin`: whether an upgrade with this Origin header may proceed. As Mosquitto 2.1's
   * http_c.c, only an upgrade that carries an Origin is judged (non-browser clients send none).
   */
  readonly allowOrigin?: ((origin: string) => boolean) | undefined
  /** wss://: whether a TLS connection may stay once its handshake is done (tls.ts `admit`) */
  readonly admit?: ((socket: tls.TLSSocket) => boolean) | undefined
  /**
   * `enable_proxy_protocol` (transport/proxyProtocol.ts): every accepted TCP socket goes here
   * before the HTTP server reads anything of it; `proceed` hands it on to the HTTP server
   */
  readonly beforeConnection?: ((socket: net.Socket, proceed: () => void) => void) | undefined
}

export interface WebSocketConnectionInfo {
  readonly request: http.IncomingMessage
  /** wss: the TLS socket, for tls.ts `identity` */
  readonly tlsSocket: tls.TLSSocket | undefined
}

export interface BoundWebSocketListener {
  readonly port: number
  readonly host: string | undefined
  /** the http(s) server; an `https.Server` is a `tls.Server` (tls.ts `reload`) */
  readonly server: http.Server | https.Server
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".ico": "image/x-icon",
  ".webp": "image/webp",
  ".wasm": "application/wasm"
}

const reply = (res: http.ServerResponse, status: number, text: string): void => {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) })
  res.end(text)
}

/** A request handler serving `dir` (resolved once); nothing outside it, symlinks included. */
export const staticFiles = (dir: string) => {
  const root = fs.promises.realpath(dir)
  return async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD")
      return reply(res, 405, "Method Not Allowed\n")
    }
    let pathname: string
    try {
      pathname = decodeURIComponent(new URL(req.url ?? "/", "http://localhost").pathname)
    } catch {
      return reply(res, 400, "Bad Request\n")
    }
    if (pathname.includes("\0")) return reply(res, 400, "Bad Request\n")
    if (pathname.endsWith("/")) pathname += "index.html"
    const base = await root.catch(() => undefined)
    if (base === undefined) return reply(res, 404, "Not Found\n")
    const real = await fs.promises.realpath(path.join(base, pathname)).catch(() => undefined)
    if (real === undefined) return reply(res, 404, "Not Found\n")
    if (real !== base && !real.startsWith(base + path.sep)) return reply(res, 403, "Forbidden\n")
    const stat = await fs.promises.stat(real).catch(() => undefined)
    if (stat === undefined || !stat.isFile()) return reply(res, 404, "Not Found\n")
    res.writeHead(200, {
      "Content-Type": CONTENT_TYPES[path.extname(real).toLowerCase()] ?? "application/octet-stream",
      "Content-Length": stat.size
    })
    if (req.method === "HEAD") return void res.end()
    const file = fs.createReadStream(real)
    file.on("error", () => res.destroy())
    file.pipe(res)
  }
}

/**
 * Opens a WebSocket listener in the current scope. `onConnection` is called
 * synchronously for each WebSocket once the upgrade is done, with the byte
 * stream to hand to the connection code. Closing the scope stops accepting,
 * sends a close frame (1001) to the clients still connected, and drops those
 * that have not closed a second later.
 */
export const listenWebSocket = (
  options: WebSocketListenerOptions,
  onConnection: (socket: WebSocketMqttSocket, info: WebSocketConnectionInfo) => void
): Effect.Effect<BoundWebSocketListener, ListenError, Scope.Scope> =>
  Effect.gen(function* () {
    const files = options.httpDir === undefined ? undefined : staticFiles(options.httpDir)
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      if (files === undefined) return reply(res, 404, "Not Found\n")
      files(req, res).catch(() => res.destroy())
    }
    const limits = options.maxHeaderSize === undefined ? {} : { maxHeaderSize: options.maxHeaderSize }
    const server: http.Server | https.Server =
      options.tls === undefined ? http.createServer(limits, onRequest) : https.createServer({ ...options.tls, ...limits }, onRequest)
    const wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.maxPayload ?? MAX_MQTT_PACKET,
      perMessageDeflate: false,
      handleProtocols: (offered) => SUBPROTOCOLS.find((p) => offered.has(p)) ?? false
    })
    server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      const origin = req.headers.origin
      if (origin !== undefined && options.allowOrigin !== undefined && !options.allowOrigin(origin)) {
        options.onHandshakeFailure?.(`WebSocket upgrade from ${req.socket.remoteAddress ?? "unknown"} refused: Origin '${origin}' is not in websockets_origin.`)
        socket.end("HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        return
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        const stream = webSocketStream(ws, req)
        const tlsSocket = options.tls === undefined ? undefined : (req.socket as tls.TLSSocket)
        onConnection(stream, { request: req, tlsSocket })
      })
    })
    // a client that drops during the TLS handshake or sends garbage must not reach the process
    server.on("clientError", (_error: Error, socket: Duplex) => socket.destroy())
    if (options.tls !== undefined) logHandshakeFailures(server as https.Server, options.onHandshakeFailure ?? (() => {}))
    const admit = options.admit
    // before any HTTP request or upgrade on it
    if (admit !== undefined) server.on("secureConnection", (socket: tls.TLSSocket) => void (admit(socket) || socket.destroy()))
    const before = options.beforeConnection
    if (before !== undefined) {
      // the HTTP server's own connection handler runs once the socket is handed on
      const handlers = server.listeners("connection") as Array<(socket: net.Socket) => void>
      server.removeAllListeners("connection")
      server.on("connection", (socket: net.Socket) =>
        before(socket, () => {
          for (const handler of handlers) handler.call(server, socket)
        })
      )
    }

    const address = (yield* bind(server, { port: options.port, host: options.host, socketDomain: options.socketDomain, bindInterface: options.bindInterface })) as net.AddressInfo

    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        for (const ws of wss.clients) ws.close(1001)
        const timer = setTimeout(() => {
          for (const ws of wss.clients) ws.terminate()
          server.closeAllConnections()
        }, 1000)
        server.close(() => {
          clearTimeout(timer)
          resume(Effect.void)
        })
        server.closeIdleConnections()
      })
    )
    return { port: address.port, host: options.host, server }
  })
