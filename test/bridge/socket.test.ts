/**
 * The bridge's socket options against a real Debian mosquitto:
 * `bridge_tcp_keepalive` (the kernel's keepalive timer on the bridge's
 * socket, read from /proc/net/tcp) and `bridge_tls_use_os_certs` (the
 * system's CA store, as OpenSSL's SSL_CERT_FILE names it).
 */
import * as fs from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Bridge } from "../../src/bridge/Bridge.js"
import { osCertificates } from "../../src/bridge/internal/socket.js"
import { Broker } from "../../src/Broker.js"
import { settle, startBroker, waitFor } from "../e2e/harness.js"
import { bridgesOf, makeCertificates, startMosquitto, tempDir } from "./harness.js"

/**
 * The kernel's timer on the established IPv4 socket connected to 127.0.0.1:port
 * (`tr` 2 = keepalive, `when` in clock ticks of 1/100 s), from /proc/net/tcp.
 */
const timerTowards = (port: number): { readonly timer: number; readonly ticks: number } | undefined => {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0")
  for (const line of fs.readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/)
    // sl local rem st tx:rx tr:when retrnsmt ...
    if (f.length < 6 || f[2] !== `0100007F:${hexPort}` || f[3] !== "01") continue
    const [tr, when] = f[5].split(":")
    return { timer: parseInt(tr, 16), ticks: parseInt(when, 16) }
  }
  return undefined
}

/** Sets an environment variable for the scope. */
const withEnv = (name: string, value: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const before = process.env[name]
      process.env[name] = value
      return before
    }),
    (before) =>
      Effect.sync(() => {
        if (before === undefined) delete process.env[name]
        else process.env[name] = before
      })
  )

describe("bridge socket options", () => {
  it.scopedLive("bridge_tcp_keepalive: the bridge's socket runs the kernel's keepalive timer with the idle time; without it, no keepalive timer", () =>
    Effect.gen(function* () {
      const withKeepalive = yield* startMosquitto([])
      const without = yield* startMosquitto([])
      const local = yield* startBroker()
      const bridge = yield* Bridge.make(
        bridgesOf(
          [
            `connection ka\naddress 127.0.0.1:${withKeepalive.port}\nremote_clientid ka\nbridge_tcp_keepalive 7 2 3\ntopic ka/# out 1`,
            `connection plain\naddress 127.0.0.1:${without.port}\nremote_clientid plain\ntopic plain/# out 1`
          ].join("\n")
        )
      ).pipe(Effect.provideService(Broker, local.broker))
      yield* waitFor(() => bridge.status().every((s) => s.state === "connected"), "both bridges to connect", 10_000)
      yield* waitFor(() => timerTowards(withKeepalive.port)?.timer === 2, "the keepalive timer on the bridge's socket", 5_000)
      const t = timerTowards(withKeepalive.port)!
      // at most the configured 7 s of idle time before the first probe
      expect(t.ticks).toBeGreaterThan(0)
      expect(t.ticks).toBeLessThanOrEqual(700)
      yield* settle(300)
      const plain = timerTowards(without.port)
      expect(plain).toBeDefined()
      expect(plain!.timer).not.toBe(2)
    })
  )

  it.scopedLive("bridge_tls_use_os_certs: TLS with the system's CAs (SSL_CERT_FILE); a remote certificate they do not sign is refused", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const certs = makeCertificates(dir)
      const remote = yield* startMosquitto([`certfile ${certs.cert}`, `keyfile ${certs.key}`])
      const local = yield* startBroker()
      const config = bridgesOf(`connection os\naddress localhost:${remote.port}\nremote_clientid os-certs\nbridge_tls_use_os_certs true\nrestart_timeout 1\ntopic os/# out 1`)

      // the system store does not know the test CA: the handshake fails, the bridge stays down
      yield* Effect.scoped(
        Effect.gen(function* () {
          yield* withEnv("SSL_CERT_FILE", certs.otherCa)
          const bridge = yield* Bridge.make(config).pipe(Effect.provideService(Broker, local.broker))
          yield* waitFor(() => local.log.recent.some((l) => l.includes("Bridge os: unable to connect")), "a failed handshake", 10_000)
          expect(bridge.status()[0].state).not.toBe("connected")
          expect(local.log.recent.join("\n")).toMatch(/Bridge os: unable to connect to localhost:\d+: .*(certificate|verify)/i)
        })
      )

      // the system store holds the test CA: a TLS connection (mosquitto only speaks TLS on that port)
      yield* withEnv("SSL_CERT_FILE", certs.ca)
      const bridge = yield* Bridge.make(config).pipe(Effect.provideService(Broker, local.broker))
      yield* waitFor(() => bridge.status()[0].state === "connected", "the bridge to connect over TLS", 10_000)
      expect(remote.log()).toMatch(/New bridge connected from .* as os-certs/)
    })
  )

  it("osCertificates: SSL_CERT_FILE and every certificate of SSL_CERT_DIR, else the distribution's bundle or Node's list", () =>
    Effect.runSync(
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const certs = makeCertificates(dir)
          const ca = fs.readFileSync(certs.ca, "utf8")
          const other = fs.readFileSync(certs.otherCa, "utf8")
          const certDir = `${dir}/certs`
          fs.mkdirSync(certDir)
          fs.copyFileSync(certs.otherCa, `${certDir}/other.pem`)
          expect(osCertificates({ SSL_CERT_FILE: certs.ca })).toEqual([ca])
          expect(osCertificates({ SSL_CERT_FILE: certs.ca, SSL_CERT_DIR: certDir })).toEqual([ca, other])
          const system = osCertificates({})
          expect(system.length).toBeGreaterThan(0)
          expect(system.join("")).toContain("-----BEGIN CERTIFICATE-----")
        })
      )
    )
  )
})
