/**
 * Helpers for the command-line tool tests: the built bins (`npm test`
 * builds first), a bounded runner with stdin and environment, a real
 * Debian `mosquitto` on a free port with a generated config, and test
 * certificates made with openssl.
 */
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Scope } from "effect"
import { waitFor } from "../e2e/harness.js"

const dist = path.resolve(__dirname, "../../dist/cli")
export const bins = {
  midge: path.join(dist, "midge.js"),
  pub: path.join(dist, "pub.js"),
  sub: path.join(dist, "sub.js"),
  passwd: path.join(dist, "passwd.js")
}

export interface RunResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly input?: string | Buffer
  readonly env?: Record<string, string>
  readonly timeoutMs?: number
}

/** Runs a command to its end (killed after `timeoutMs`). */
export const run = (command: string, args: ReadonlyArray<string>, options: RunOptions = {}): Effect.Effect<RunResult> =>
  Effect.async<RunResult>((resume) => {
    const child = spawn(command, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, XDG_CONFIG_HOME: "/nonexistent-midge-test", ...options.env }
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 10_000)
    child.on("close", (code) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    child.stdin.on("error", () => {})
    child.stdin.end(options.input ?? "")
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** `node dist/cli/midge.js <tool> ...` */
export const midge = (tool: "pub" | "sub" | "passwd", args: ReadonlyArray<string>, options?: RunOptions) =>
  run("node", [bins.midge, tool, ...args], options)

/** A long-running process in the scope (SIGKILLed at its end), with live output. */
export const spawnLive = (command: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, XDG_CONFIG_HOME: "/nonexistent-midge-test", ...env } })
      const out = { stdout: "", stderr: "", exited: false as boolean, code: null as number | null, signal: null as NodeJS.Signals | null }
      child.stdout.on("data", (d) => (out.stdout += d))
      child.stderr.on("data", (d) => (out.stderr += d))
      child.stdin.on("error", () => {})
      child.on("close", (code, signal) => {
        out.exited = true
        out.code = code
        out.signal = signal
      })
      return { child, out }
    }),
    ({ child }) => Effect.sync(() => child.kill("SIGKILL"))
  )

export const freePort = Effect.async<number>((resume) => {
  const s = net.createServer()
  s.listen(0, "127.0.0.1", () => {
    const port = (s.address() as net.AddressInfo).port
    s.close(() => resume(Effect.succeed(port)))
  })
})

/** A temporary directory removed with the scope. */
export const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "midge-cli-"))),
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

/** Waits (bounded) until something listens on the port. */
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
  /** more listeners asked for with `extra` */
  readonly ports: ReadonlyArray<number>
  readonly log: () => string
}

/**
 * Debian's mosquitto on 127.0.0.1:<free port>, killed with the scope.
 * `config` lines are added after `listener PORT 127.0.0.1`; `extra`
 * listeners (each a list of lines after `listener P 127.0.0.1`) get ports of
 * their own.
 */
export const startMosquitto = (
  config: ReadonlyArray<string> = ["allow_anonymous true"],
  extra: ReadonlyArray<ReadonlyArray<string>> = []
): Effect.Effect<Mosquitto, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const port = yield* freePort
    const ports: Array<number> = []
    const lines = ["user root", "per_listener_settings false", `listener ${port} 127.0.0.1`, ...config]
    for (const l of extra) {
      const p = yield* freePort
      ports.push(p)
      lines.push(`listener ${p} 127.0.0.1`, ...l)
    }
    const file = path.join(dir, "mosquitto.conf")
    fs.writeFileSync(file, lines.join("\n") + "\n")
    const proc = yield* spawnLive("mosquitto", ["-c", file])
    yield* listening(port)
    for (const p of ports) yield* listening(p)
    return { port, dir, ports, log: () => proc.out.stderr + proc.out.stdout }
  })

export interface Certificates {
  readonly ca: string
  readonly cert: string
  readonly key: string
  readonly clientCert: string
  readonly clientKey: string
  readonly otherCa: string
  /** signed by the CA, for the name wrong.example only */
  readonly misnamedCert: string
  readonly misnamedKey: string
}

/** A CA, a server certificate for localhost / 127.0.0.1, a client certificate, and an unrelated CA. */
export const makeCertificates = (dir: string): Certificates => {
  const f = (name: string) => path.join(dir, name)
  const ssl = (...args: Array<string>) => execFileSync("openssl", args, { stdio: "ignore" })
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.crt"), "-days", "2", "-subj", "/CN=midge-test-ca")
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f("other.key"), "-out", f("other.crt"), "-days", "2", "-subj", "/CN=other-ca")
  fs.writeFileSync(f("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost")
  ssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("server.crt"), "-days", "2", "-extfile", f("ext.cnf"))
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f("client.key"), "-out", f("client.csr"), "-subj", "/CN=midge-client")
  ssl("x509", "-req", "-in", f("client.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("client.crt"), "-days", "2")
  fs.writeFileSync(f("wrong.cnf"), "subjectAltName=DNS:wrong.example\n")
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f("wrong.key"), "-out", f("wrong.csr"), "-subj", "/CN=wrong.example")
  ssl("x509", "-req", "-in", f("wrong.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("wrong.crt"), "-days", "2", "-extfile", f("wrong.cnf"))
  return { misnamedCert: f("wrong.crt"), misnamedKey: f("wrong.key"), ca: f("ca.crt"), cert: f("server.crt"), key: f("server.key"), clientCert: f("client.crt"), clientKey: f("client.key"), otherCa: f("other.crt") }
}

export { waitFor }
