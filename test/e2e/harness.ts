/**
 * End-to-end helpers: a broker on 127.0.0.1 at an ephemeral port (in the
 * test's scope), MQTT.js clients, raw sockets for bad input, and Debian's
 * mosquitto_pub / mosquitto_sub as independent clients. Nothing is mocked.
 */
import { execFileSync, spawn } from "node:child_process"
import * as net from "node:net"
import { Effect, Scope } from "effect"
import mqtt, { type IClientOptions, type MqttClient } from "mqtt"
import * as mqttPacket from "mqtt-packet"
import { Broker, type BrokerOptions, type BrokerService } from "../../src/Broker.js"
import { Log } from "../../src/log/Log.js"

export interface TestBroker {
  readonly broker: BrokerService
  readonly port: number
  readonly url: string
  readonly log: Log
}

/** A broker on 127.0.0.1:0 that closes with the test's scope; it keeps its last log lines. */
export const startBroker = (options: Omit<BrokerOptions, "listeners" | "log"> = {}): Effect.Effect<TestBroker, never, Scope.Scope> =>
  Effect.gen(function* () {
    const log = new Log(["all"], [], false, 500)
    const broker = yield* Broker.make({ ...options, listeners: [{ port: 0, host: "127.0.0.1" }], log }).pipe(Effect.orDie)
    const port = broker.listeners[0].port
    return { broker, port, url: `mqtt://127.0.0.1:${port}`, log }
  })

/** An MQTT.js client, connected, ended with the scope. No automatic reconnect. */
export const connectClient = (
  url: string,
  options: IClientOptions = {}
): Effect.Effect<MqttClient, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<MqttClient, Error>((resume) => {
      const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options })
      const onError = (error: Error) => {
        client.end(true)
        resume(Effect.fail(error))
      }
      client.once("connect", () => {
        client.off("error", onError)
        resume(Effect.succeed(client))
      })
      client.once("error", onError)
    }),
    (client) => Effect.promise(() => client.endAsync(true).catch(() => undefined))
  )

export interface Received {
  readonly topic: string
  readonly payload: string
  readonly qos: number
  readonly retain: boolean
  readonly dup: boolean
  readonly properties: Record<string, unknown> | undefined
}

/** Collect every message a client receives. */
export const collect = (client: MqttClient): Array<Received> => {
  const received: Array<Received> = []
  client.on("message", (topic, payload, packet) => {
    received.push({
      topic,
      payload: payload.toString(),
      qos: packet.qos,
      retain: packet.retain,
      dup: packet.dup,
      properties: packet.properties as Record<string, unknown> | undefined
    })
  })
  return received
}

/** Wait (real time, bounded) until `predicate` holds. */
export const waitFor = (predicate: () => boolean, what = "condition", timeoutMs = 5000): Effect.Effect<void, Error> =>
  Effect.async<void, Error>((resume) => {
    const started = Date.now()
    const tick = () => {
      if (predicate()) return resume(Effect.void)
      if (Date.now() - started > timeoutMs) return resume(Effect.fail(new Error(`timed out waiting for ${what}`)))
      setTimeout(tick, 5)
    }
    tick()
  })

/** Let real time pass (for "nothing arrives" checks); bounded. */
export const settle = (ms = 150): Effect.Effect<void> => Effect.promise(() => new Promise((r) => setTimeout(r, ms)))

export const subscribe = (client: MqttClient, topic: string | Array<string>, opts: mqtt.IClientSubscribeOptions = { qos: 0 }) =>
  Effect.tryPromise(() => client.subscribeAsync(topic, opts))

export const publish = (client: MqttClient, topic: string, payload: string | Buffer, opts: mqtt.IClientPublishOptions = {}) =>
  Effect.tryPromise(() => client.publishAsync(topic, payload, opts))

/** A raw TCP client: write bytes, read all bytes until the broker closes (bounded). */
export interface RawClient {
  readonly socket: net.Socket
  readonly data: () => Buffer
  readonly closed: () => boolean
  readonly write: (bytes: Buffer | Array<number>) => Effect.Effect<void>
  readonly waitClosed: (timeoutMs?: number) => Effect.Effect<void, Error>
}

/** A raw client on a TCP port of 127.0.0.1, or on a Unix socket path. */
export const rawClient = (target: number | string): Effect.Effect<RawClient, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<RawClient, Error>((resume) => {
      const chunks: Array<Buffer> = []
      let closed = false
      const socket = typeof target === "number" ? net.connect({ port: target, host: "127.0.0.1" }) : net.connect({ path: target })
      socket.on("data", (c) => chunks.push(c))
      socket.on("close", () => {
        closed = true
      })
      socket.on("error", () => {})
      socket.once("connect", () =>
        resume(
          Effect.succeed({
            socket,
            data: () => Buffer.concat(chunks),
            closed: () => closed,
            write: (bytes) => Effect.sync(() => void socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes))),
            waitClosed: (timeoutMs = 5000) => waitFor(() => closed, "the broker to close the connection", timeoutMs)
          })
        )
      )
      socket.once("error", (e) => resume(Effect.fail(e)))
    }),
    (c) => Effect.sync(() => c.socket.destroy())
  )

/**
 * The kernel's view of the TCP connection(s) on local port `port`, both ends (`ss -tni`): Recv-Q is
 * bytes received and not read by the process, Send-Q bytes sent and not acknowledged. For a failure
 * report: it tells a process that stopped reading from bytes that never left.
 */
export const tcpView = (port: number | undefined): string => {
  if (port === undefined) return "no local port"
  try {
    return execFileSync("ss", ["-tni", `( sport = :${port} or dport = :${port} )`], { encoding: "utf8", timeout: 2000 }).trim().replace(/\n/g, "\n  ")
  } catch (error) {
    return `ss failed: ${error instanceof Error ? error.message : String(error)}`
  }
}

/** What `c` has received so far, read as MQTT packets of `protocolVersion`. */
export const packetsOf = (c: RawClient, protocolVersion: 3 | 4 | 5 = 4): Array<mqttPacket.Packet> => {
  const out: Array<mqttPacket.Packet> = []
  const parser = mqttPacket.parser({ protocolVersion })
  parser.on("packet", (p) => out.push(p))
  parser.parse(c.data())
  return out
}

/** Run a command (mosquitto_pub / mosquitto_sub), bounded in time; resolves with its output and exit code. */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  timeoutMs = 10_000
): Effect.Effect<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }> =>
  Effect.async((resume) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.on("close", (code) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** Start a long-running command in the scope (killed at the end); returns live stdout. */
export const spawnScoped = (command: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] })
      const out = { stdout: "", stderr: "", exited: false as boolean, code: null as number | null }
      child.stdout.on("data", (d) => (out.stdout += d))
      child.stderr.on("data", (d) => (out.stderr += d))
      child.on("close", (code) => {
        out.exited = true
        out.code = code
      })
      return { child, out }
    }),
    ({ child }) => Effect.sync(() => child.kill("SIGKILL"))
  )

/** Connect and start collecting before CONNACK (queued messages arrive right after it). */
export const connectCollecting = (
  url: string,
  options: IClientOptions = {}
): Effect.Effect<
  { readonly client: MqttClient; readonly sessionPresent: boolean; readonly got: Array<Received>; readonly connack: mqtt.IConnackPacket },
  Error,
  Scope.Scope
> =>
  Effect.acquireRelease(
    Effect.async<{ client: MqttClient; sessionPresent: boolean; got: Array<Received>; connack: mqtt.IConnackPacket }, Error>((resume) => {
      const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options })
      const got = collect(client)
      const onError = (error: Error) => {
        client.end(true)
        resume(Effect.fail(error))
      }
      client.once("connect", (connack) => {
        client.off("error", onError)
        resume(Effect.succeed({ client, sessionPresent: connack.sessionPresent, got, connack }))
      })
      client.once("error", onError)
    }),
    ({ client }) => Effect.promise(() => client.endAsync(true).catch(() => undefined))
  )
