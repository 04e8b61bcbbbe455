/**
 * The Midge-only Prometheus endpoint: a real HTTP GET on an ephemeral port
 * returns the `$SYS` counters in the text exposition format 0.0.4, and they
 * move with real MQTT traffic.
 */
import * as http from "node:http"
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Layer, TestClock } from "effect"
import { Broker, type BrokerService } from "../../src/Broker.js"
import { emptySample } from "../../src/sys/internal/sample.js"
import { CONTENT_TYPE, Metrics, renderSample } from "../../src/sys/Metrics.js"
import { connectClient, publish, startBroker, subscribe, waitFor } from "../e2e/harness.js"

interface Response {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

const request = (port: number, path = "/metrics", method = "GET"): Effect.Effect<Response, Error> =>
  Effect.async<Response, Error>((resume) => {
    const req = http.request({ host: "127.0.0.1", port, path, method, agent: false }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (d: string) => (body += d))
      res.on("end", () => resume(Effect.succeed({ status: res.statusCode ?? 0, headers: res.headers, body })))
    })
    req.on("error", (e) => resume(Effect.fail(e)))
    req.end()
  })

const startMetrics = (broker: BrokerService, port = 0) =>
  Layer.build(Metrics.layer({ port, host: "127.0.0.1", version: "0.1.0" })).pipe(
    Effect.provideService(Broker, broker),
    Effect.map((ctx) => Context.get(ctx, Metrics))
  )

/** `name value` sample lines, by name (labels kept in the name). */
const samples = (body: string): Map<string, number> => {
  const out = new Map<string, number>()
  for (const line of body.split("\n")) {
    if (line === "" || line.startsWith("#")) continue
    const at = line.lastIndexOf(" ")
    out.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return out
}

const scrape = (port: number) => Effect.map(request(port), (r) => samples(r.body))

describe("GET /metrics", () => {
  it.scoped("the text exposition format: HELP, TYPE, counters named _total, gauges", () =>
    Effect.gen(function* () {
      const { broker } = yield* startBroker()
      const metrics = yield* startMetrics(broker)
      expect(metrics.port).toBeGreaterThan(0)
      const r = yield* request(metrics.port)
      expect(r.status).toBe(200)
      expect(r.headers["content-type"]).toBe(CONTENT_TYPE)
      expect(r.body.endsWith("\n")).toBe(true)
      const lines = r.body.trimEnd().split("\n")
      // every family: # HELP, # TYPE, then its one sample
      expect(lines.length % 3).toBe(0)
      const names: Array<string> = []
      for (let i = 0; i < lines.length; i += 3) {
        const help = /^# HELP (midge_[a-z_]+) \S.*$/.exec(lines[i])
        expect(help, lines[i]).not.toBeNull()
        const name = help![1]
        names.push(name)
        const type = /^# TYPE (\S+) (counter|gauge)$/.exec(lines[i + 1])
        expect(type?.[1]).toBe(name)
        expect([name, type![2] === "counter"]).toEqual([name, name.endsWith("_total")])
        expect(lines[i + 2]).toMatch(new RegExp(`^${name}(\\{version="0\\.1\\.0"\\})? \\d+$`))
      }
      expect(new Set(names).size).toBe(names.length)
      expect(names).toEqual(
        expect.arrayContaining([
          "midge_info",
          "midge_uptime_seconds",
          "midge_clients_connected",
          "midge_clients_disconnected",
          "midge_sessions",
          "midge_clients_maximum",
          "midge_clients_expired_total",
          "midge_messages_received_total",
          "midge_messages_sent_total",
          "midge_publish_messages_received_total",
          "midge_publish_messages_sent_total",
          "midge_publish_messages_dropped_total",
          "midge_bytes_received_total",
          "midge_bytes_sent_total",
          "midge_publish_bytes_received_total",
          "midge_publish_bytes_sent_total",
          "midge_connections_total",
          "midge_sockets_total",
          "midge_subscriptions",
          "midge_shared_subscriptions",
          "midge_retained_messages",
          "midge_store_messages",
          "midge_store_bytes",
          "midge_heap_bytes",
          "midge_heap_maximum_bytes"
        ])
      )
      const s = samples(r.body)
      expect(s.get('midge_info{version="0.1.0"}')).toBe(1)
      expect(s.get("midge_clients_connected")).toBe(0)
      expect(s.get("midge_heap_bytes")).toBeGreaterThan(0)
    })
  )

  it.scoped("the counters move with MQTT traffic", () =>
    Effect.gen(function* () {
      const { broker, url } = yield* startBroker()
      const { port } = yield* startMetrics(broker)
      const before = yield* scrape(port)
      expect(before.get("midge_publish_messages_received_total")).toBe(0)

      const sub = yield* connectClient(url)
      yield* subscribe(sub, "m/#", { qos: 0 })
      const pub = yield* connectClient(url)
      yield* publish(pub, "m/1", "12345", { qos: 1 })
      yield* publish(pub, "m/retained", "abc", { retain: true })
      yield* waitFor(() => broker.stats().messagesSent >= 2, "the deliveries")

      const after = yield* scrape(port)
      expect(after.get("midge_clients_connected")).toBe(2)
      expect(after.get("midge_sessions")).toBe(2)
      expect(after.get("midge_clients_maximum")).toBe(2)
      expect(after.get("midge_subscriptions")).toBe(1)
      expect(after.get("midge_retained_messages")).toBe(1)
      expect(after.get("midge_publish_messages_received_total")).toBe(2)
      expect(after.get("midge_publish_messages_sent_total")).toBe(2)
      expect(after.get("midge_bytes_received_total")).toBeGreaterThan(before.get("midge_bytes_received_total")!)
      expect(after.get("midge_bytes_sent_total")).toBeGreaterThan(before.get("midge_bytes_sent_total")!)
      // the retained message is held: 3 payload bytes
      expect(after.get("midge_store_messages")).toBe(1)
      expect(after.get("midge_store_bytes")).toBe(3)
    })
  )

  it.scoped("uptime follows the Clock", () =>
    Effect.gen(function* () {
      const { broker } = yield* startBroker()
      const { port } = yield* startMetrics(broker)
      expect((yield* scrape(port)).get("midge_uptime_seconds")).toBe(0)
      yield* TestClock.adjust("42 seconds")
      expect((yield* scrape(port)).get("midge_uptime_seconds")).toBe(42)
    })
  )

  it.scoped("only GET / HEAD /metrics: 404 elsewhere, 405 for other methods", () =>
    Effect.gen(function* () {
      const { broker } = yield* startBroker()
      const { port } = yield* startMetrics(broker)
      expect((yield* request(port, "/")).status).toBe(404)
      expect((yield* request(port, "/metricsx")).status).toBe(404)
      expect((yield* request(port, "/metrics?x=1")).status).toBe(200)
      const post = yield* request(port, "/metrics", "POST")
      expect([post.status, post.headers.allow]).toEqual([405, "GET, HEAD"])
      const head = yield* request(port, "/metrics", "HEAD")
      expect([head.status, head.body, Number(head.headers["content-length"]) > 0]).toEqual([200, "", true])
    })
  )

  it.scoped("the listener closes with its scope; a port in use is a ListenError", () =>
    Effect.gen(function* () {
      const { broker } = yield* startBroker()
      const port = yield* Effect.scoped(
        Effect.gen(function* () {
          const m = yield* startMetrics(broker)
          expect((yield* request(m.port)).status).toBe(200)
          return m.port
        })
      )
      const closed = yield* Effect.either(request(port))
      expect(Either.isLeft(closed) && (closed.left as NodeJS.ErrnoException).code).toBe("ECONNREFUSED")

      const blocker = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const s = net.createServer()
          s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
        }),
        (s) => Effect.async<void>((resume) => void s.close(() => resume(Effect.void)))
      )
      const busy = (blocker.address() as net.AddressInfo).port
      const error = yield* Effect.flip(startMetrics(broker, busy))
      expect([error._tag, error.reason, error.port]).toEqual(["ListenError", "address-in-use", busy])
    })
  )
})

describe("renderSample", () => {
  it("writes each value after its name, and escapes the version label", () => {
    const s = { ...emptySample(), clientsConnected: 7, bytesSent: 123456789012 }
    const text = renderSample(s, 'a"b\\c')
    expect(text).toContain("\nmidge_clients_connected 7\n")
    expect(text).toContain("\nmidge_bytes_sent_total 123456789012\n")
    expect(text).toContain('midge_info{version="a\\"b\\\\c"} 1\n')
    expect(renderSample(s)).not.toContain("midge_info")
  })
})
