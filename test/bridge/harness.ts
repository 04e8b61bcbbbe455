/**
 * Bridge test helpers: a real Debian mosquitto (/usr/sbin/mosquitto) on an
 * ephemeral port with a generated config, that can be killed and restarted
 * on the same port, and SIGKILLed at the end of the test's scope; bridge
 * configs from mosquitto.conf text; test certificates made with openssl.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Either, Scope } from "effect"
import { type BridgeConfig, decodeBridges } from "../../src/bridge/Bridge.js"
import { lexText } from "../../src/config/internal/lexer.js"

export const MOSQUITTO = "/usr/sbin/mosquitto"

export const freePort = Effect.async<number>((resume) => {
  const s = net.createServer()
  s.listen(0, "127.0.0.1", () => {
    const port = (s.address() as net.AddressInfo).port
    s.close(() => resume(Effect.succeed(port)))
  })
})

/** A temporary directory removed with the scope. */
export const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "midge-bridge-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" })
    s.once("connect", () => {
      s.destroy()
      resolve(true)
    })
    s.once("error", () => resolve(false))
  })

/** Waits (bounded, real time) until something listens on the port. */
export const listening = (port: number, timeoutMs = 10_000) =>
  Effect.promise(async () => {
    const started = Date.now()
    while (!(await canConnect(port))) {
      if (Date.now() - started > timeoutMs) throw new Error(`nothing listens on ${port}`)
      await new Promise((r) => setTimeout(r, 25))
    }
  })

export interface Mosquitto {
  readonly port: number
  readonly dir: string
  /** stderr + stdout so far (all runs) */
  readonly log: () => string
  /** SIGKILL and wait for the exit */
  readonly kill: Effect.Effect<void>
  /** start again with the same config and port */
  readonly start: Effect.Effect<void>
}

/**
 * Debian's mosquitto with `listener PORT 127.0.0.1` followed by `lines`
 * (`allow_anonymous true` and `log_type all` are added first), killed with
 * the scope. `port` defaults to a free one.
 */
export const startMosquitto = (lines: ReadonlyArray<string>, port?: number): Effect.Effect<Mosquitto, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const p = port ?? (yield* freePort)
    const file = path.join(dir, "mosquitto.conf")
    const text = ["user root", "log_dest stderr", "log_type all", `listener ${p} 127.0.0.1`, "allow_anonymous true", ...lines].join("\n") + "\n"
    fs.writeFileSync(file, text.replaceAll("@DIR@", dir))
    let output = ""
    let child: ChildProcess | undefined
    const kill = Effect.promise(
      () =>
        new Promise<void>((resolve) => {
          const c = child
          child = undefined
          if (c === undefined || c.exitCode !== null || c.signalCode !== null) return resolve()
          c.once("exit", () => resolve())
          c.kill("SIGKILL")
        })
    )
    const start = Effect.gen(function* () {
      const c = spawn(MOSQUITTO, ["-c", file], { stdio: ["ignore", "pipe", "pipe"] })
      c.stdout!.on("data", (d) => (output += d))
      c.stderr!.on("data", (d) => (output += d))
      child = c
      yield* listening(p)
    })
    yield* Effect.addFinalizer(() => kill)
    yield* start
    return { port: p, dir, log: () => output, kill, start }
  })

/** The bridges of a mosquitto.conf text (throws on a config error). */
export const bridgesOf = (text: string): ReadonlyArray<BridgeConfig> => {
  const r = decodeBridges(lexText(text, "bridge.conf"), "testhost")
  if (Either.isLeft(r)) throw new Error(r.left.message)
  return r.right
}

export interface Certificates {
  readonly ca: string
  readonly cert: string
  readonly key: string
  readonly clientCert: string
  readonly clientKey: string
  readonly otherCa: string
}

/** A CA, a server certificate for localhost / 127.0.0.1, a client certificate, an unrelated CA. */
export const makeCertificates = (dir: string): Certificates => {
  const f = (name: string) => path.join(dir, name)
  const ssl = (...args: Array<string>) => execFileSync("openssl", args, { stdio: "ignore" })
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.crt"), "-days", "2", "-subj", "/CN=midge-bridge-ca")
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f("other.key"), "-out", f("other.crt"), "-days", "2", "-subj", "/CN=other-ca")
  fs.writeFileSync(f("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost")
  ssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("server.crt"), "-days", "2", "-extfile", f("ext.cnf"))
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f("client.key"), "-out", f("client.csr"), "-subj", "/CN=midge-bridge")
  ssl("x509", "-req", "-in", f("client.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("client.crt"), "-days", "2")
  return { ca: f("ca.crt"), cert: f("server.crt"), key: f("server.key"), clientCert: f("client.crt"), clientKey: f("client.key"), otherCa: f("other.crt") }
}

export type { Scope }
