/**
 * Midge-only: the `$SYS` counters for Prometheus. `GET /metrics` on a small
 * `node:http` listener (`metrics_listener PORT [ADDRESS]` in mosquitto.conf)
 * answers in the text exposition format 0.0.4: `# HELP`, `# TYPE`, counters
 * named `..._total`, gauges. Each scrape reads the counters once; nothing here
 * runs per message. See docs/monitoring.md.
 */
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Context, Effect, Layer, type Scope } from "effect"
import { Broker } from "../Broker.js"
import { bind, type ListenError } from "../transport/bind.js"
import { Sampler, type Sample, type SampleKey } from "./internal/sample.js"

export interface MetricsOptions {
  /** 0 picks a free port (see `Metrics.port`) */
  readonly port: number
  /** undefined: all interfaces */
  readonly host?: string | undefined
  /** exported as `midge_info{version="..."} 1` */
  readonly version?: string | undefined
}

export interface MetricsService {
  /** the port as bound (the actual one when 0 was asked) */
  readonly port: number
  readonly host: string | undefined
  /** the page `GET /metrics` serves, as of now */
  readonly render: () => string
}

interface Family {
  readonly name: string
  readonly type: "counter" | "gauge"
  readonly help: string
  readonly key: SampleKey
}

/** The same counters as `$SYS/broker/...`; the loads are left to PromQL's rate(). */
const FAMILIES: ReadonlyArray<Family> = [
  { name: "midge_uptime_seconds", type: "gauge", key: "uptime", help: "Seconds since the broker started ($SYS/broker/uptime)." },
  { name: "midge_clients_connected", type: "gauge", key: "clientsConnected", help: "Clients currently connected ($SYS/broker/clients/connected)." },
  { name: "midge_clients_disconnected", type: "gauge", key: "clientsDisconnected", help: "Persistent sessions whose client is disconnected ($SYS/broker/clients/disconnected)." },
  // not midge_clients_total: `_total` is for counters
  { name: "midge_sessions", type: "gauge", key: "clientsTotal", help: "Sessions: connected clients plus disconnected persistent ones ($SYS/broker/clients/total)." },
  { name: "midge_clients_maximum", type: "gauge", key: "clientsMaximum", help: "Most clients connected at the same time ($SYS/broker/clients/maximum)." },
  { name: "midge_clients_expired_total", type: "counter", key: "clientsExpired", help: "Persistent sessions expired ($SYS/broker/clients/expired)." },
  { name: "midge_messages_received_total", type: "counter", key: "messagesReceived", help: "MQTT packets of every type received ($SYS/broker/messages/received)." },
  { name: "midge_messages_sent_total", type: "counter", key: "messagesSent", help: "MQTT packets of every type sent ($SYS/broker/messages/sent)." },
  { name: "midge_publish_messages_received_total", type: "counter", key: "publishReceived", help: "PUBLISH packets received ($SYS/broker/publish/messages/received)." },
  { name: "midge_publish_messages_sent_total", type: "counter", key: "publishSent", help: "PUBLISH packets sent ($SYS/broker/publish/messages/sent)." },
  { name: "midge_publish_messages_dropped_total", type: "counter", key: "publishDropped", help: "PUBLISH messages dropped: size, memory and queue limits, invalid payloads, expiry ($SYS/broker/publish/messages/dropped)." },
  { name: "midge_bytes_received_total", type: "counter", key: "bytesReceived", help: "Bytes received from clients ($SYS/broker/bytes/received)." },
  { name: "midge_bytes_sent_total", type: "counter", key: "bytesSent", help: "Bytes sent to clients ($SYS/broker/bytes/sent)." },
  { name: "midge_publish_bytes_received_total", type: "counter", key: "publishBytesReceived", help: "Payload bytes of the PUBLISH packets received ($SYS/broker/publish/bytes/received)." },
  { name: "midge_publish_bytes_sent_total", type: "counter", key: "publishBytesSent", help: "Payload bytes of the PUBLISH packets sent ($SYS/broker/publish/bytes/sent)." },
  { name: "midge_connections_total", type: "counter", key: "connections", help: "CONNECT packets received ($SYS/broker/load/connections)." },
  { name: "midge_sockets_total", type: "counter", key: "sockets", help: "Sockets accepted by the listeners ($SYS/broker/load/sockets)." },
  { name: "midge_subscriptions", type: "gauge", key: "subscriptions", help: "Subscriptions ($SYS/broker/subscriptions/count)." },
  { name: "midge_shared_subscriptions", type: "gauge", key: "sharedSubscriptions", help: "Members of shared subscription groups ($SYS/broker/shared_subscriptions/count)." },
  { name: "midge_retained_messages", type: "gauge", key: "retained", help: "Retained messages ($SYS/broker/retained messages/count)." },
  { name: "midge_store_messages", type: "gauge", key: "storeCount", help: "Messages held: retained, in flight and queued ($SYS/broker/store/messages/count)." },
  { name: "midge_store_bytes", type: "gauge", key: "storeBytes", help: "Payload bytes of the messages held ($SYS/broker/store/messages/bytes)." },
  { name: "midge_heap_bytes", type: "gauge", key: "heapCurrent", help: "V8 heap in use ($SYS/broker/heap/current)." },
  { name: "midge_heap_maximum_bytes", type: "gauge", key: "heapMaximum", help: "Largest V8 heap in use seen by a scrape ($SYS/broker/heap/maximum)." }
]

/** The families' `# HELP` / `# TYPE` header lines, built once. */
const HEADERS: ReadonlyArray<string> = FAMILIES.map((f) => `# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n${f.name} `)

const escapeLabel = (s: string): string => s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"')

/** Prometheus text exposition format 0.0.4 for one reading. */
export const renderSample = (s: Sample, version?: string): string => {
  let out =
    version === undefined
      ? ""
      : `# HELP midge_info Midge build information.\n# TYPE midge_info gauge\nmidge_info{version="${escapeLabel(version)}"} 1\n`
  for (let i = 0; i < FAMILIES.length; i++) out += `${HEADERS[i]}${s[FAMILIES[i].key]}\n`
  return out
}

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export class Metrics extends Context.Tag("midge/Metrics")<Metrics, MetricsService>() {
  /** Listen in the current scope; the listener closes with it. */
  static readonly make = (options: MetricsOptions): Effect.Effect<MetricsService, ListenError, Broker | Scope.Scope> =>
    Effect.gen(function* () {
      const core = (yield* Broker).core
      const sampler = new Sampler(core, core.now())
      const render = (): string => renderSample(sampler.read(), options.version)

      const server = http.createServer((req, res) => {
        const path = req.url === undefined ? "" : req.url.split("?", 1)[0]
        if (path !== "/metrics") {
          res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("Not Found: try /metrics\n")
        } else if (req.method !== "GET" && req.method !== "HEAD") {
          res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" }).end("Method Not Allowed\n")
        } else {
          const body = render()
          res.writeHead(200, { "content-type": CONTENT_TYPE, "content-length": Buffer.byteLength(body) })
          res.end(req.method === "HEAD" ? undefined : body)
        }
      })
      const address = yield* Effect.acquireRelease(
        bind(server, { port: options.port, host: options.host, doing: "open the metrics listener" }).pipe(
          Effect.tap(() => Effect.sync(() => server.on("error", (error) => core.log.error(`Error: metrics listener: ${error.message}`)))),
          Effect.map((address) => address as AddressInfo)
        ),
        () =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
            server.closeAllConnections()
          })
      )
      core.log.notice(`Opening metrics listen socket on ${options.host ?? "*"} port ${address.port} (GET /metrics).`)
      core.log.flush()
      return { port: address.port, host: options.host, render } satisfies MetricsService
    })

  /** The metrics listener as a Layer over the {@link Broker}. */
  static readonly layer = (options: MetricsOptions): Layer.Layer<Metrics, ListenError, Broker> =>
    Layer.scoped(Metrics, Metrics.make(options))
}
