/**
 * TCP listeners. A listener is a scoped `net.Server`: each accepted socket
 * becomes a `Connection` (plain code). A connection has no fiber of its own
 * (a fiber per idle connection cost ~7 KB and two forks per connect):
 *
 * - one `Watchdog` fiber per listener closes connections that do not finish
 *   CONNECT in time and those silent for 1.5 × keepalive [MQTT-3.1.2-24];
 * - takeover [MQTT-3.1.4-3] is synchronous, in `Connection.handleConnect`;
 * - the listener's finalizer closes every live connection (shutdown, reload);
 * - an offline persistent session's expiry timer runs in the broker-wide
 *   `FiberMap` keyed by client id; a reconnect interrupts it;
 * - with `enable_proxy_protocol` (Mosquitto 2.1) a socket first waits for its
 *   PROXY header (transport/proxyProtocol.ts), watched by the same `Watchdog`,
 *   and its connection is made once the header is read.
 *
 * A connection's failure is handled inside the connection (and a failure while
 * the watchdog closes one is logged) and never reaches the listener (style.md,
 * example 3).
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Clock, Duration, Effect, FiberId, FiberMap, Scope } from "effect"
import { Connection, type ConnectionHooks, type ListenerSettings } from "../session/Connection.js"
import type { Core } from "../session/Core.js"
import type { Session } from "../session/Session.js"
import { isTlsListener, makeTls, type TlsIdentity, type TlsListenerOptions } from "./tls.js"
import { Watchdog } from "./Watchdog.js"
import { bind, ListenError, logHandshakeFailures } from "./bind.js"
import { listenWebSocket, type MqttSocket } from "./websocket.js"
import { acceptRaw, rawTcpAvailable } from "./rawTcp.js"
import { ProxiedSocket, proxiedIdentity, type ProxyHeaderHooks, ProxyHeaderWait, type ProxyListenerOptions } from "./proxyProtocol.js"

export { ListenError } from "./bind.js"

export interface ListenerOptions {
  readonly port: number
  /** undefined: all interfaces */
  readonly host: string | undefined
  /** `listener 0 /path`: a Unix socket */
  readonly socketPath?: string | undefined
  /** `socket_domain`: only IPv4 or only IPv6 when no address is given */
  readonly socketDomain?: "ipv4" | "ipv6" | undefined
  /** `bind_interface`: bind the address of this network interface */
  readonly bindInterface?: string | undefined
  /** `max_connections`, -1 = unlimited */
  readonly maxConnections?: number
  /** `accept_protocol_versions` (Mosquitto 2.1): the MQTT versions served; undefined: all */
  readonly acceptProtocolVersions?: ReadonlyArray<3 | 4 | 5> | undefined
  readonly mountPoint?: string | undefined
  /** `max_qos`: the highest QoS the listener's clients may use (default 2) */
  readonly maxQos?: 0 | 1 | 2 | undefined
  readonly allowAnonymous?: boolean | undefined
  readonly allowZeroLengthClientid?: boolean | undefined
  readonly autoIdPrefix?: string | undefined
  /** `max_topic_alias` (undefined: the broker-wide setting) */
  readonly maxTopicAlias?: number | undefined
  /** `max_topic_alias_broker`: aliases the broker may use towards one v5 client (undefined: 10, Mosquitto 2.1's default) */
  readonly maxTopicAliasBroker?: number | undefined
  /** `use_username_as_clientid` */
  readonly useUsernameAsClientid?: boolean | undefined
  /** WebSocket listeners: `websockets_headers_size`, the HTTP headers' limit of an upgrade (undefined: Node's 16 KiB) */
  readonly websocketsHeadersSize?: number | undefined
  /** the broker's authentication, when a service is provided */
  readonly authenticate?: ConnectionHooks["authenticate"]
  /** `protocol`: MQTT over TCP (default) or over WebSockets */
  readonly protocol?: "mqtt" | "websockets" | undefined
  /** TLS / TLS-PSK (`certfile` / `psk_hint` and friends) */
  readonly tls?: TlsListenerOptions | undefined
  /** WebSocket listeners: `http_dir` */
  readonly httpDir?: string | undefined
  /** WebSocket listeners: `websockets_origin`, the Origin headers an upgrade may carry (undefined or empty: any) */
  readonly websocketsOrigins?: ReadonlyArray<string> | undefined
  /** `enable_proxy_protocol` (Mosquitto 2.1): connections start with a PROXY header (transport/proxyProtocol.ts); read when the listener opens */
  readonly proxy?: ProxyListenerOptions | undefined
}

export interface BoundListener {
  readonly port: number
  readonly host: string | undefined
  readonly socketPath: string | undefined
  /** apply new per-listener settings (reload) without closing the listener or its clients */
  readonly update: (options: ListenerOptions) => void
  /** SIGHUP: TLS listeners read their certificates again (connected clients stay) */
  readonly reloadTls: Effect.Effect<void>
}

/** What identifies a listener across reloads: where it binds. */
export const listenerKey = (o: ListenerOptions): string =>
  o.socketPath !== undefined
    ? `unix:${o.socketPath}`
    : `${o.protocol ?? "mqtt"}|${o.tls !== undefined ? "tls" : "plain"}|${o.socketDomain ?? ""}|${o.host ?? "*"}|${o.bindInterface ?? ""}|${o.port}`

/** The offline sessions' expiry fibers, keyed by client id. */
export type SessionFibers = FiberMap.FiberMap<string, void, never>

/**
 * An offline session's expiry timer. It runs under the session's client id in
 * a `FiberMap`, so a later disconnect replaces it and a reconnect interrupts it.
 */
export const expiryFiber = (core: Core, session: Session): Effect.Effect<void> =>
  Effect.gen(function* () {
    while (true) {
      const deadline = core.expiryDeadline(session)
      if (deadline === undefined) return
      const now = yield* Clock.currentTimeMillis
      if (now >= deadline) {
        if (core.expireIfDue(session)) return
        continue // a delayed will went out; the session lives on until its own expiry
      }
      yield* Effect.sleep(Duration.millis(deadline - now))
    }
  })

/** What a connection reads from its listener at CONNECT (all but the port): made at start, swapped in place on a reload. */
const settingsOf = (o: ListenerOptions): Omit<ListenerSettings, "port"> => ({
  mountPoint: o.mountPoint,
  maxQos: o.maxQos ?? 2,
  acceptProtocolVersions: o.acceptProtocolVersions,
  allowAnonymous: o.allowAnonymous,
  allowZeroLengthClientid: o.allowZeroLengthClientid,
  autoIdPrefix: o.autoIdPrefix,
  maxTopicAlias: o.maxTopicAlias,
  maxTopicAliasBroker: o.maxTopicAliasBroker,
  useUsernameAsClientid: o.useUsernameAsClientid
})

/** Open one TCP listener in the current scope. */
export const listenTcp = (
  core: Core,
  options: ListenerOptions,
  sessions: SessionFibers
): Effect.Effect<BoundListener, ListenError, Scope.Scope> =>
  Effect.gen(function* () {
    const forkSession = yield* FiberMap.runtime(sessions)<never>()
    // the pre-CONNECT timeout and the keepalive watchdog of every connection: one fiber
    const watchdog = new Watchdog<Connection | ProxiedSocket | ProxyHeaderWait>(core.now, (error) => core.log.error(`Error closing a connection: ${String(error)}`))
    yield* Effect.forkScoped(watchdog.run)
    const live = new Set<Connection>()
    let maxConnections = options.maxConnections ?? -1

    const hooks: ConnectionHooks = {
      ...(options.authenticate !== undefined ? { authenticate: options.authenticate } : {}),
      sessionStarted: (conn) => {
        watchdog.connected(conn)
        // back in time: the offline session's expiry timer stops
        const expiry = FiberMap.unsafeGet(sessions, conn.clientId)
        if (expiry._tag === "Some") expiry.value.unsafeInterruptAsFork(FiberId.none)
      },
      closed: (conn) => {
        if (live.delete(conn)) core.openConnections--
        watchdog.remove(conn)
        // a persistent session left offline: its expiry timer takes the client id's place
        const session = conn.session
        if (session !== undefined && core.expiryDeadline(session) !== undefined) {
          forkSession(session.clientId, expiryFiber(core, session))
        }
      }
    }

    const settings: ListenerSettings = { port: options.port, ...settingsOf(options) }
    /** one accept path for TCP, TLS and WebSocket connections */
    const accept = (socket: MqttSocket & { destroy(): void }, identity: TlsIdentity | undefined) => {
      // a TCP peer whose address can no longer be read has gone already (a health check that sent its PROXY header
      // and reset): closed without a line, as Mosquitto closes a connection it cannot read the address of
      if (options.socketPath === undefined && socket.remoteAddress === undefined) {
        socket.destroy()
        return
      }
      // `global_max_connections` (Mosquitto 2.1) counts every listener's connections; the same line as max_connections
      const globalMax = core.settings.globalMaxConnections
      if ((maxConnections >= 0 && live.size >= maxConnections) || (globalMax > 0 && core.openConnections >= globalMax)) {
        core.log.notice(`Client connection from ${socket.remoteAddress} denied: max_connections exceeded.`)
        socket.destroy()
        return
      }
      try {
        const conn = new Connection(socket, core, hooks, settings, identity)
        live.add(conn)
        core.openConnections++
        if (core.settings.connectionMessages) {
          core.log.notice(`New connection from ${socket.remoteAddress ?? "unix socket"}:${socket.remotePort ?? 0} on port ${options.port}.`)
        }
        watchdog.accepted(conn, core.settings.connectTimeoutMs)
      } catch (error) {
        core.log.error(`Error accepting connection: ${String(error)}`)
        socket.destroy()
      }
    }

    // enable_proxy_protocol (Mosquitto 2.1): read when the listener opens, as Mosquitto does (not on reload)
    const proxy = options.proxy
    /** sockets still waiting for their PROXY header, watched like connections before CONNECT */
    const waiting = new Set<ProxiedSocket | ProxyHeaderWait>()
    /** a socket's header wait is over (read, or the socket gone) */
    const settled = (w: ProxiedSocket | ProxyHeaderWait): void => {
      waiting.delete(w)
      watchdog.remove(w)
    }
    const proxyHooks: ProxyHeaderHooks = {
      ready: (socket) => {
        settled(socket)
        accept(socket, socket.identity)
      },
      abandoned: settled,
      notice: (line) => core.log.notice(line),
      connectionMessages: () => core.settings.connectionMessages
    }
    /** a plain TCP or Unix socket: a connection now, or (PROXY) once its header is read; nothing more per read either way */
    const acceptPlain =
      proxy === undefined
        ? (socket: MqttSocket & { destroy(): void }) => accept(socket, undefined)
        : (socket: MqttSocket & { destroy(): void }) => {
            const waiter = new ProxiedSocket(socket, proxy, proxyHooks)
            waiting.add(waiter)
            watchdog.accepted(waiter, core.settings.connectTimeoutMs)
          }
    /** a WebSocket listener's TCP socket with PROXY: the HTTP server gets it once its header is read */
    const beforeUpgrade =
      proxy === undefined
        ? undefined
        : (socket: net.Socket, proceed: () => void) => {
            const wait: ProxyHeaderWait = new ProxyHeaderWait(socket, proxy, {
              ready: () => {
                settled(wait)
                proceed()
              },
              abandoned: settled,
              notice: proxyHooks.notice,
              connectionMessages: proxyHooks.connectionMessages
            })
            waiting.add(wait)
            watchdog.accepted(wait, core.settings.connectTimeoutMs)
          }
    const closeWaiting = () => {
      for (const w of waiting) w.destroy()
      waiting.clear()
    }

    const tlsSetup =
      options.tls !== undefined && isTlsListener(options.tls)
        ? yield* makeTls(options.tls).pipe(
            Effect.mapError(
              (error) => new ListenError({ port: options.port, host: options.host, reason: "other", message: `${error.option}: ${error.message}` })
            )
          )
        : undefined
    for (const warning of tlsSetup?.warnings ?? []) core.log.warning(`Warning: listener ${options.port}: ${warning}`)

    if (options.protocol === "websockets") {
      let origins = options.websocketsOrigins ?? []
      const ws = yield* listenWebSocket(
        {
          port: options.port,
          host: options.host,
          socketDomain: options.socketDomain,
          bindInterface: options.bindInterface,
          tls: tlsSetup?.serverOptions,
          httpDir: options.httpDir,
          maxHeaderSize: options.websocketsHeadersSize,
          onHandshakeFailure: (line) => core.log.notice(line),
          allowOrigin: (origin) => origins.length === 0 || origins.includes(origin),
          ...(tlsSetup !== undefined ? { admit: tlsSetup.admit } : {}),
          ...(beforeUpgrade !== undefined ? { beforeConnection: beforeUpgrade } : {})
        },
        (socket, info) =>
          accept(
            socket,
            info.tlsSocket !== undefined ? tlsSetup?.identity(info.tlsSocket) : proxy !== undefined ? proxiedIdentity(info.request.socket) : undefined
          )
      )
      core.log.notice(`Opening websockets listen socket on port ${ws.port}.`)
      core.log.flush()
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          closeWaiting()
          for (const conn of live) conn.shutdown()
          core.openConnections -= live.size
          live.clear()
        })
      )
      return {
        port: ws.port,
        host: options.host,
        socketPath: undefined,
        update: (next: ListenerOptions) => {
          maxConnections = next.maxConnections ?? -1
          origins = next.websocketsOrigins ?? []
          Object.assign(settings, settingsOf(next))
        },
        reloadTls: tlsSetup !== undefined ? tlsSetup.reload(ws.server as tls.Server).pipe(Effect.orElse(() => Effect.void)) : Effect.void
      }
    }

    const server =
      tlsSetup !== undefined
        ? tls.createServer({ ...tlsSetup.serverOptions, noDelay: core.settings.setTcpNodelay } as tls.TlsOptions)
        : net.createServer({ noDelay: core.settings.setTcpNodelay })
    if (tlsSetup !== undefined) {
      server.on("secureConnection", (socket: tls.TLSSocket) => {
        if (!tlsSetup.admit(socket)) return void socket.destroy()
        accept(socket, tlsSetup.identity(socket))
      })
      // a failed handshake (a plain client on a TLS port, a bad certificate) closes that socket only, with a log line
      logHandshakeFailures(server as tls.Server, (line) => core.log.notice(line))
    } else {
      server.on("connection", (socket: net.Socket) => acceptPlain(socket))
    }
    const listenerError = (error: Error) => core.log.error(`Listener error on port ${options.port}: ${String(error)}`)
    // a bind that fails is the ListenError's one line, not a second "Listener error" as well
    let bound = false
    server.on("error", (error: Error) => {
      if (bound) listenerError(error)
    })
    const address = yield* bind(server, options)
    bound = true
    // plain TCP: connections on their raw handles, not net.Sockets (transport/rawTcp.ts); TLS and Unix sockets keep net
    if (tlsSetup === undefined && typeof address !== "string" && rawTcpAvailable()) {
      acceptRaw(server, acceptPlain, listenerError)
    }
    if (typeof address === "string") core.log.notice(`Opening unix listen socket on ${address}.`)
    else core.log.notice(`Opening ipv${address.family === "IPv6" ? 6 : 4} listen socket on port ${address.port}.`)
    // the port is open: the log says so now, not at the end of the turn
    core.log.flush()

    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        closeWaiting()
        for (const conn of live) conn.shutdown()
        core.openConnections -= live.size
        live.clear()
        server.close(() => resume(Effect.void))
      })
    )
    // connections read `settings` at CONNECT time: a reload swaps the fields in place
    const update = (next: ListenerOptions) => {
      maxConnections = next.maxConnections ?? -1
      Object.assign(settings, settingsOf(next))
    }
    const reloadTls = tlsSetup !== undefined ? tlsSetup.reload(server as tls.Server).pipe(Effect.orElse(() => Effect.void)) : Effect.void
    return typeof address === "string"
      ? { port: 0, host: undefined, socketPath: address, update, reloadTls }
      : { port: address.port, host: options.host, socketPath: undefined, update, reloadTls }
  })

