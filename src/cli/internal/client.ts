/**
 * The MQTT client side of `midge pub` / `midge sub`: an MQTT.js client
 * built from a `ClientConfig` (TCP, TLS with certificates or a pre-shared
 * key, a Unix socket, or WebSockets), libmosquitto's `-d` debug lines, and
 * Mosquitto's texts for failures.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as tls from "node:tls"
import mqtt, { MqttClient, type IClientOptions, type Packet } from "mqtt"
import { clientIdFor, portFor, usesTls, type ClientConfig } from "./options.js"

/** Where a tool writes. */
export interface Io {
  readonly stdout: (chunk: Buffer | string) => void
  readonly stderr: (text: string) => void
}

/** mosquitto_connack_string, for MQTT 3.1 / 3.1.1 CONNACK return codes. */
export const connackString = (code: number): string => {
  switch (code) {
    case 0: return "Connection Accepted."
    case 1: return "Connection Refused: unacceptable protocol version."
    case 2: return "Connection Refused: identifier rejected."
    case 3: return "Connection Refused: broker unavailable."
    case 4: return "Connection Refused: bad user name or password."
    case 5: return "Connection Refused: not authorised."
    default: return "Connection Refused: unknown reason."
  }
}

const REASONS: Record<number, string> = {
  0: "Success", 1: "Granted QoS 1", 2: "Granted QoS 2", 4: "Disconnect with Will Message", 16: "No matching subscribers",
  17: "No subscription existed", 24: "Continue authentication", 25: "Re-authenticate", 128: "Unspecified error",
  129: "Malformed Packet", 130: "Protocol Error", 131: "Implementation specific error", 132: "Unsupported Protocol Version",
  133: "Client Identifier not valid", 134: "Bad User Name or Password", 135: "Not authorized", 136: "Server unavailable",
  137: "Server busy", 138: "Banned", 139: "Server shutting down", 140: "Bad authentication method", 141: "Keep Alive timeout",
  142: "Session taken over", 143: "Topic Filter invalid", 144: "Topic Name invalid", 145: "Packet Identifier in use",
  146: "Packet Identifier not found", 147: "Receive Maximum exceeded", 148: "Topic Alias invalid", 149: "Packet too large",
  150: "Message rate too high", 151: "Quota exceeded", 152: "Administrative action", 153: "Payload format invalid",
  154: "Retain not supported", 155: "QoS not supported", 156: "Use another server", 157: "Server moved",
  158: "Shared Subscriptions not supported", 159: "Connection rate exceeded", 160: "Maximum connect time",
  161: "Subscription identifiers not supported", 162: "Wildcard Subscriptions not supported"
}

/** mosquitto_reason_string, for MQTT 5 reason codes. */
export const reasonString = (code: number): string => REASONS[code] ?? "Unknown reason"

/** libmosquitto's error numbers that the tools exit with, and mosquitto_strerror's texts for them. */
export const MosqErr = { PROTOCOL: 2, NO_CONN: 4, CONN_REFUSED: 5, CONN_LOST: 7, TLS: 8, TIMEOUT: 27 } as const

export const strerror = (code: number): string => {
  switch (code) {
    case MosqErr.PROTOCOL: return "A network protocol error occurred when communicating with the broker."
    case MosqErr.NO_CONN: return "The client is not currently connected."
    case MosqErr.CONN_REFUSED: return "The connection was refused."
    case MosqErr.CONN_LOST: return "The connection was lost."
    case MosqErr.TLS: return "A TLS error occurred."
    case MosqErr.TIMEOUT: return "Timed out"
    default: return "Unknown error."
  }
}

const ERRNO_TEXT: Record<string, string> = {
  ECONNREFUSED: "Connection refused",
  ECONNRESET: "Connection reset by peer",
  EHOSTUNREACH: "No route to host",
  ENETUNREACH: "Network is unreachable",
  ETIMEDOUT: "Connection timed out",
  ENOENT: "No such file or directory",
  EACCES: "Permission denied",
  EADDRNOTAVAIL: "Cannot assign requested address",
  EADDRINUSE: "Address already in use",
  EPIPE: "Broken pipe"
}

/** What Mosquitto prints when the connection cannot be made (mosquitto_connect failing). */
export const connectFailureText = (error: Error & { code?: string }): string => {
  const code = error.code ?? ""
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "EAI_NONAME") return "Unable to connect (Lookup error.).\n"
  if (code.startsWith("ERR_SSL") || code.startsWith("ERR_TLS") || /certificate|SSL|TLS|self.signed|handshake/i.test(`${code} ${error.message}`)) {
    return "Unable to connect (A TLS error occurred.).\n"
  }
  return `Error: ${ERRNO_TEXT[code] ?? error.message}\n`
}

/** A configuration problem found while setting the client up; printed, then exit 1. */
export class SetupError {
  constructor(readonly text: string) {}
}

const TLS_VERSIONS: Record<string, tls.SecureVersion> = { "tlsv1.3": "TLSv1.3", "tlsv1.2": "TLSv1.2", "tlsv1.1": "TLSv1.1" }

const readCaPath = (dir: string): Array<Buffer> =>
  fs
    .readdirSync(dir)
    .filter((f) => /\.(pem|crt|cer)$/i.test(f) || /^[0-9a-f]{8}\.[0-9]+$/i.test(f))
    .map((f) => fs.readFileSync(path.join(dir, f)))

/** The TLS settings of a tool's command line (`--cafile`, `--cert`, `--psk`, ...). */
export interface TlsSettings {
  readonly cafile: string | undefined
  readonly capath: string | undefined
  readonly certfile: string | undefined
  readonly keyfile: string | undefined
  readonly keyform?: string | undefined
  readonly engine?: string | undefined
  readonly insecure: boolean
  readonly version: string | undefined
  readonly ciphers: string | undefined
  readonly alpn: string | undefined
  readonly useOsCerts: boolean
  readonly psk: string | undefined
  readonly pskIdentity: string | undefined
}

/**
 * node:tls options for TLS settings, read as libmosquitto's
 * client_tls_opts_set does (shared by pub, sub and ctrl); a problem is a
 * {@link SetupError} with Mosquitto's text. `servername` is sent as SNI.
 */
export const tlsConnectionOptions = (t: TlsSettings, servername: string | undefined): tls.ConnectionOptions => {
  const o: tls.ConnectionOptions = {}
  try {
    const ca: Array<string | Buffer> = []
    if (t.cafile !== undefined) ca.push(fs.readFileSync(t.cafile))
    if (t.capath !== undefined) ca.push(...readCaPath(t.capath))
    if (ca.length > 0) o.ca = t.useOsCerts ? [...tls.rootCertificates, ...ca] : ca
    if (t.certfile !== undefined) o.cert = fs.readFileSync(t.certfile)
    if (t.keyfile !== undefined) o.key = fs.readFileSync(t.keyfile)
  } catch {
    throw new SetupError("Error: Problem setting TLS options: File not found.\n")
  }
  if ((t.certfile === undefined) !== (t.keyfile === undefined)) throw new SetupError("Error: Both certfile and keyfile must be provided if one of them is set.\n")
  if (t.keyform !== undefined && t.keyform !== "pem") throw new SetupError("Error: Problem setting key form, it must be one of 'pem' or 'engine'.\n")
  if (t.engine !== undefined) throw new SetupError(`Error: Problem setting TLS engine, is ${t.engine} a valid engine?\n`)
  // --insecure: the chain is still verified, the host name is not
  if (t.insecure) o.checkServerIdentity = () => undefined
  if (t.version !== undefined) {
    const v = TLS_VERSIONS[t.version]
    if (v === undefined) throw new SetupError("Error: Problem setting TLS options, check the options are valid.\n")
    o.minVersion = v
    o.maxVersion = v
  } else o.minVersion = "TLSv1.2"
  if (t.ciphers !== undefined) o.ciphers = t.ciphers
  if (t.alpn !== undefined) o.ALPNProtocols = [t.alpn]
  if (t.psk !== undefined) {
    if (t.pskIdentity === undefined) throw new SetupError("Error: --psk-identity required if --psk used.\n")
    if (!/^[0-9a-fA-F]+$/.test(t.psk) || t.psk.length % 2 !== 0) throw new SetupError("Error: Problem setting TLS-PSK options.\n")
    const psk = Buffer.from(t.psk, "hex")
    const identity = t.pskIdentity
    o.pskCallback = () => ({ psk, identity })
    o.ciphers = t.ciphers ?? "PSK"
    // no certificate to check: the key is the authentication
    o.checkServerIdentity = () => undefined
  }
  if (servername !== undefined && net.isIP(servername) === 0) o.servername = servername
  return o
}

/** node:tls options for a pub / sub command line. */
export const tlsOptions = (config: ClientConfig): tls.ConnectionOptions =>
  tlsConnectionOptions(config.tls, config.unixSocket === undefined ? config.host : undefined)

/** The debug line for a packet, as libmosquitto logs it (`-d`). */
export const debugLine = (id: string, direction: "sending" | "received", packet: Packet): Array<string> => {
  const c = `Client ${id === "" ? "(null)" : id} ${direction}`
  const p = packet as unknown as Record<string, any>
  switch (packet.cmd) {
    case "connect":
      return [`${c} CONNECT`]
    case "connack":
      return [`${c} CONNACK (${p.reasonCode ?? p.returnCode ?? 0})`]
    case "publish": {
      const payload = p.payload as Buffer | string | undefined
      const len = payload === undefined ? 0 : typeof payload === "string" ? Buffer.byteLength(payload) : payload.length
      return [`${c} PUBLISH (d${p.dup ? 1 : 0}, q${p.qos}, r${p.retain ? 1 : 0}, m${p.messageId ?? 0}, '${p.topic}', ... (${len} bytes))`]
    }
    case "puback":
    case "pubrec":
    case "pubcomp":
    case "pubrel": {
      const name = packet.cmd.toUpperCase()
      if (direction === "sending") {
        return [packet.cmd === "pubrel" || packet.cmd === "pubcomp" ? `${c} ${name} (m${p.messageId})` : `${c} ${name} (m${p.messageId}, rc${p.reasonCode ?? 0})`]
      }
      return [packet.cmd === "pubrec" || packet.cmd === "pubrel" ? `${c} ${name} (Mid: ${p.messageId})` : `${c} ${name} (Mid: ${p.messageId}, RC:${p.reasonCode ?? 0})`]
    }
    case "subscribe":
      return (p.subscriptions as Array<Record<string, any>>).map(
        (s) =>
          `${c} SUBSCRIBE (Mid: ${p.messageId}, Topic: ${s.topic}, QoS: ${s.qos}, Options: 0x${(((s.nl ? 1 : 0) << 2) | ((s.rap ? 1 : 0) << 3) | ((s.rh ?? 0) << 4)).toString(16).padStart(2, "0")})`
      )
    case "unsubscribe":
      return (p.unsubscriptions as Array<string>).map((t) => `${c} UNSUBSCRIBE (Mid: ${p.messageId}, Topic: ${t})`)
    case "suback":
      return [`${c} SUBACK`]
    case "unsuback":
      return [`${c} UNSUBACK`]
    case "pingreq":
      return [`${c} PINGREQ`]
    case "pingresp":
      return [`${c} PINGRESP`]
    case "disconnect":
      return direction === "sending" ? [`${c} DISCONNECT`] : [`${c} DISCONNECT (${p.reasonCode ?? 0})`]
    default:
      return [`${c} ${packet.cmd.toUpperCase()}`]
  }
}

/** Packet identifiers from 1 upwards, as libmosquitto numbers them (MQTT.js starts at random). */
export class SequentialIds {
  private nextId = 1
  allocate(): number {
    const id = this.nextId
    this.nextId = id === 65535 ? 1 : id + 1
    return id
  }
  getLastAllocated(): number {
    return this.nextId === 1 ? 65535 : this.nextId - 1
  }
  register(_id: number): boolean {
    return true
  }
  deallocate(_id: number): void {}
  clear(): void {}
}

export interface Client {
  readonly mqtt: MqttClient
  /** the client id as the debug lines show it (the broker's assigned id once known) */
  readonly id: () => string
}

/**
 * An MQTT.js client for the config, not yet connected (call
 * `client.mqtt.connect()` after adding listeners). With `reconnect`, a lost
 * connection is retried every second, as libmosquitto's loop_forever does.
 */
export const makeClient = (config: ClientConfig, io: Io, options: { readonly reconnect: boolean; readonly pid?: number }): Client => {
  let id = clientIdFor(config, options.pid ?? process.pid)
  const secure = usesTls(config)
  const port = portFor(config)
  const secureOptions = secure ? tlsOptions(config) : undefined
  const props = config.properties
  const connectProps: Record<string, unknown> = { ...props.connect }
  if (config.protocolVersion === 5) {
    if (config.sessionExpiry > 0) connectProps.sessionExpiryInterval = config.sessionExpiry
    // receive no more than -C messages before quitting [MQTT-3.3.4-9]
    if (config.msgCount > 0 && config.msgCount < 20 && connectProps.receiveMaximum === undefined) connectProps.receiveMaximum = config.msgCount
  }
  const will = config.will
  const ids = new SequentialIds()
  const opts: IClientOptions = {
    messageIdProvider: ids,
    protocolVersion: config.protocolVersion,
    protocolId: config.protocolVersion === 3 ? "MQIsdp" : "MQTT",
    clientId: id,
    clean: config.cleanSession,
    keepalive: config.keepalive,
    reconnectPeriod: options.reconnect ? 1000 : 0,
    connectTimeout: 30_000,
    resubscribe: false,
    manualConnect: true,
    queueQoSZero: false,
    ...(config.username !== undefined ? { username: config.username } : {}),
    ...(config.password !== undefined ? { password: Buffer.from(config.password, "utf8") as unknown as string } : {}),
    ...(config.protocolVersion === 5 && Object.keys(connectProps).length > 0 ? { properties: connectProps } : {}),
    ...(will !== undefined
      ? {
          will: {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            ...(config.protocolVersion === 5 && Object.keys(props.will).length > 0 ? { properties: props.will } : {})
          }
        }
      : {})
  }
  let client: MqttClient
  if (config.transport === "websockets") {
    client = mqtt.connect({
      ...opts,
      ...(secureOptions as IClientOptions),
      protocol: secure ? "wss" : "ws",
      host: config.host,
      port,
      path: "/mqtt",
      ...(secure ? { rejectUnauthorized: true } : {})
    })
  } else {
    const build = () => {
      const base = config.unixSocket !== undefined ? { path: config.unixSocket } : { host: config.host, port, ...(config.bindAddress !== undefined ? { localAddress: config.bindAddress } : {}) }
      const socket = secure ? tls.connect({ ...base, ...secureOptions }) : net.connect(base)
      if (config.nodelay) socket.setNoDelay(true)
      return socket
    }
    client = new MqttClient(build, opts)
  }
  if (config.debug) {
    client.on("packetsend", (packet) => {
      // libmosquitto numbers QoS 0 publishes too (the id is not sent)
      const shown = packet.cmd === "publish" && packet.qos === 0 ? { ...packet, messageId: ids.allocate() } : packet
      for (const line of debugLine(id, "sending", shown)) io.stdout(line + "\n")
    })
    client.on("packetreceive", (packet) => {
      if (packet.cmd === "connack") {
        const assigned = (packet as mqtt.IConnackPacket).properties?.assignedClientIdentifier
        if (assigned !== undefined) id = assigned
      }
      for (const line of debugLine(id, "received", packet)) io.stdout(line + "\n")
    })
  } else {
    client.on("packetreceive", (packet) => {
      const assigned = packet.cmd === "connack" ? (packet as mqtt.IConnackPacket).properties?.assignedClientIdentifier : undefined
      if (assigned !== undefined) id = assigned
    })
  }
  return { mqtt: client, id: () => id }
}

/** Error output that `--quiet` silences. */
export const errorWriter = (config: ClientConfig, io: Io) => (text: string): void => {
  if (!config.quiet) io.stderr(text)
}

/** {@link makeClient}, or `undefined` after printing the setup problem (the tool then exits 1). */
export const openClient = (config: ClientConfig, io: Io, options: { readonly reconnect: boolean }, err: (text: string) => void): Client | undefined => {
  try {
    return makeClient(config, io, options)
  } catch (e) {
    if (e instanceof SetupError) {
      err(e.text)
      return undefined
    }
    throw e
  }
}

/** The code of a CONNACK: the MQTT 5 reason code, or the 3.1 / 3.1.1 return code. */
export const connackCode = (config: ClientConfig, packet: mqtt.IConnackPacket): number =>
  config.protocolVersion === 5 ? (packet.reasonCode ?? 0) : (packet.returnCode ?? 0)

/** The DISCONNECT properties of `-D disconnect ...` (MQTT 5), as MQTT.js's `end` takes them. */
export const disconnectProperties = (config: ClientConfig): { properties?: ClientConfig["properties"]["disconnect"] } =>
  config.protocolVersion === 5 && Object.keys(config.properties.disconnect).length > 0 ? { properties: config.properties.disconnect } : {}

/** The text and exit code for a refused CONNACK, as the tools print them. */
export const refusedText = (config: ClientConfig, code: number): string =>
  config.protocolVersion === 5
    ? code === 132
      ? `Connection error: ${reasonString(code)}. Try connecting to an MQTT v5 broker, or use MQTT v3.x mode.\n`
      : `Connection error: ${reasonString(code)}\n`
    : `Connection error: ${connackString(code)}\n`
