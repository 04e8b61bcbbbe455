/**
 * What the TCP and the WebSocket listeners share: binding a server in the
 * current fiber (a typed `ListenError` when the port is taken or not allowed)
 * and the log line for a failed TLS handshake (Mosquitto's "OpenSSL Error on
 * connection from ..."), which closes that one socket.
 */
import * as net from "node:net"
import * as os from "node:os"
import type * as tls from "node:tls"
import { Data, Effect } from "effect"

export class ListenError extends Data.TaggedError("ListenError")<{
  readonly port: number
  readonly host: string | undefined
  readonly reason: "address-in-use" | "permission-denied" | "other"
  readonly message: string
}> {}

export interface BindOptions {
  readonly port: number
  /** undefined: all interfaces */
  readonly host: string | undefined
  /** a Unix socket instead of a port */
  readonly socketPath?: string | undefined
  /** `socket_domain`: only IPv4 or only IPv6 when no address is given */
  readonly socketDomain?: "ipv4" | "ipv6" | undefined
  /** `bind_interface`: bind the address this network interface has (see `interfaceAddress`) */
  readonly bindInterface?: string | undefined
  /** what the error says could not be done: "cannot <doing> on <where>"; default "listen" */
  readonly doing?: string | undefined
}

/** `server.listen` as an Effect: the address it got (a path for a Unix socket). */
export const bind = (server: net.Server, options: BindOptions): Effect.Effect<net.AddressInfo | string, ListenError> =>
  Effect.async<net.AddressInfo | string, ListenError>((resume) => {
    const where = options.socketPath ?? `${options.host ?? "*"}:${options.port}`
    const onError = (error: NodeJS.ErrnoException) =>
      resume(
        Effect.fail(
          new ListenError({
            port: options.port,
            host: options.host,
            reason: error.code === "EADDRINUSE" ? "address-in-use" : error.code === "EACCES" ? "permission-denied" : "other",
            message: `cannot ${options.doing ?? "listen"} on ${where}: ${error.message}`
          })
        )
      )
    let host = options.host ?? (options.socketDomain === "ipv4" ? "0.0.0.0" : options.socketDomain === "ipv6" ? "::" : undefined)
    if (options.bindInterface !== undefined && options.socketPath === undefined) {
      // the family of the listener's own address, if it has one (net.isIP: 4, 6, or 0 for a name)
      const ip = host === undefined ? 0 : net.isIP(host)
      const found = interfaceAddress(options.bindInterface, ip === 4 || ip === 6 ? ip : undefined)
      if (typeof found !== "string") {
        return resume(Effect.fail(new ListenError({ port: options.port, host: options.host, reason: "other", message: `bind_interface ${options.bindInterface}: ${found.error}` })))
      }
      host = found
    }
    server.once("error", onError)
    const listenOptions: net.ListenOptions =
      options.socketPath !== undefined ? { path: options.socketPath } : { port: options.port, host, ipv6Only: options.socketDomain === "ipv6" }
    server.listen(listenOptions, () => {
      server.off("error", onError)
      resume(Effect.succeed(server.address() as net.AddressInfo | string))
    })
  })

/**
 * `bind_interface NAME`: the address of that interface the listener binds, as Mosquitto 2.0's
 * `net__bind_interface` (SO_BINDTODEVICE needs root, so it takes the interface's address from
 * getifaddrs and binds that). The name is compared without case, as there. `family`: the address
 * family the listener's own address asks for; without one, the interface's IPv4 address, or its
 * IPv6 one when it has no IPv4 (Mosquitto binds one socket per family it finds; a Midge listener
 * is one socket). An IPv6 link-local address carries the interface as its scope.
 */
export const interfaceAddress = (
  name: string,
  family: 4 | 6 | undefined,
  interfaces: NodeJS.Dict<Array<os.NetworkInterfaceInfo>> = os.networkInterfaces()
): string | { readonly error: string } => {
  const key = Object.keys(interfaces).find((k) => k.toLowerCase() === name.toLowerCase())
  const addresses = key === undefined ? undefined : interfaces[key]
  if (key === undefined || addresses === undefined || addresses.length === 0) return { error: "no such network interface" }
  const of = (f: 4 | 6) => addresses.find((a) => a.family === (f === 4 ? "IPv4" : "IPv6"))
  const chosen = family !== undefined ? of(family) : (of(4) ?? of(6))
  if (chosen === undefined) return { error: `Interface ${name} does not support ${family === 6 ? "IPv6" : "IPv4"} configuration` }
  return chosen.family === "IPv6" && chosen.address.toLowerCase().startsWith("fe80:") ? `${chosen.address}%${key}` : chosen.address
}

/**
 * A failed handshake on a TLS server (a plain client on a TLS port, a refused
 * or expired certificate, a client that hangs up) closes that socket only,
 * with a log line naming the peer and the reason.
 */
export const logHandshakeFailures = (server: tls.Server, log: (line: string) => void): void => {
  const peers = new WeakMap<net.Socket, string>()
  server.on("connection", (tcp: net.Socket) => peers.set(tcp, `${tcp.remoteAddress ?? "unknown"}:${tcp.remotePort ?? 0}`))
  server.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
    log(`OpenSSL Error on connection from ${handshakePeer(socket, peers)}: ${handshakeFailure(error, socket)}`)
    socket.destroy()
  })
}

/**
 * Who a failed TLS handshake came from. A socket Node destroyed (a refused
 * client certificate) no longer knows its peer, nor does the TCP socket
 * under it: `peers` has what the TCP socket said when it was accepted.
 */
const handshakePeer = (socket: tls.TLSSocket, peers: WeakMap<net.Socket, string>): string => {
  if (socket.remoteAddress !== undefined) return `${socket.remoteAddress}:${socket.remotePort ?? 0}`
  const tcp = (socket as tls.TLSSocket & { readonly _parent?: net.Socket | null })._parent
  return (tcp !== undefined && tcp !== null ? peers.get(tcp) : undefined) ?? "unknown"
}

/**
 * Why a TLS handshake failed, in a line: a client certificate Node refused
 * after the handshake (`require_certificate`: expired, revoked by the
 * crlfile, unknown CA; Node then just closes, so the error itself only says
 * "socket hang up") by its verification code, an OpenSSL error by its reason
 * ("wrong version number" for plain MQTT on a TLS port).
 */
const handshakeFailure = (error: Error, socket: tls.TLSSocket): string => {
  const refused = (socket as tls.TLSSocket & { readonly authorizationError?: Error | string | null }).authorizationError
  if (refused !== undefined && refused !== null) return `client certificate refused: ${String(refused)}`
  const reason = (error as Error & { readonly reason?: unknown }).reason
  return typeof reason === "string" && reason.length > 0 ? reason : error.message
}
