/**
 * Real processes and ports for the tests, shared by every suite that needs
 * them: free ports, "something listens on this port", temporary directories,
 * bounded command runs and long-running processes killed with the test's
 * scope, the daemon (`node dist/main.js`, built by `npm test`), a Debian
 * `mosquitto` on a free port with a generated config (restartable on the same
 * port), and test certificates made with openssl.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, type Scope } from "effect"

/** The daemon as users run it (`npm test` builds it first). */
export const DAEMON = path.resolve(__dirname, "../../dist/main.js")

/** Debian's broker. */
export const MOSQUITTO = "/usr/sbin/mosquitto"

/** The daemon's source entry point, for `bundleEntry`. */
export const MAIN_SOURCE = path.resolve(__dirname, "../../src/main.ts")

/**
 * Bundle a TypeScript entry point (by default the daemon, `src/main.ts`) into one ESM file with
 * esbuild: it starts in a fraction of `dist/main.js`'s time, which the crash and cluster tests
 * that start and kill daemons many times need, and it is built from the source under test.
 */
export const bundleEntry = async (outfile: string, entry: string = MAIN_SOURCE): Promise<string> => {
  const { build } = await import("esbuild")
  await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    logLevel: "warning",
    // the bundle's CommonJS dependencies (mqtt-packet, ws) require Node's modules
    banner: { js: "import { createRequire as __midgeRequire } from 'node:module'; const require = __midgeRequire(import.meta.url);" }
  })
  return outfile
}

/** The environment of the processes the tests start: no user option files of the mosquitto tools. */
const childEnv = (env: Record<string, string> = {}): NodeJS.ProcessEnv => ({ ...process.env, XDG_CONFIG_HOME: "/nonexistent-midge-test", ...env })

/**
 * Ports this process has handed out. The kernel picks a port bound to 0 at random, and a port
 * just released can come back at once (5 in 5,000 runs of four calls here): two listeners of one
 * test given the same port are one listener, and the test checks the wrong one.
 */
const handedOut = new Set<number>()

/** A port nothing listens on right now (bound to 0 and closed), never one this process had before. */
export const freePortNow = async (): Promise<number> => {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer()
      s.once("error", reject)
      s.listen(0, "127.0.0.1", () => {
        const port = (s.address() as net.AddressInfo).port
        s.close(() => resolve(port))
      })
    })
    if (handedOut.has(port)) continue
    handedOut.add(port)
    return port
  }
}

/** `freePortNow` as an Effect. */
export const freePort: Effect.Effect<number> = Effect.promise(freePortNow)

/** Whether a TCP connection to 127.0.0.1:port is accepted. */
export const canConnect = (port: number): Promise<boolean> =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" })
    s.once("connect", () => {
      s.destroy()
      resolve(true)
    })
    s.once("error", () => resolve(false))
  })

/** Waits (bounded, real time) until something listens on the port; a defect after `timeoutMs`. */
export const listening = (port: number, timeoutMs = 10_000): Effect.Effect<void> =>
  Effect.promise(async () => {
    const started = Date.now()
    while (!(await canConnect(port))) {
      if (Date.now() - started > timeoutMs) throw new Error(`nothing listens on ${port}`)
      await new Promise((r) => setTimeout(r, 25))
    }
  })

/** Waits (bounded, real time) until nothing listens on the port any more. */
export const notListening = (port: number, timeoutMs = 10_000): Effect.Effect<void> =>
  Effect.promise(async () => {
    const started = Date.now()
    while (await canConnect(port)) {
      if (Date.now() - started > timeoutMs) throw new Error(`${port} is still open`)
      await new Promise((r) => setTimeout(r, 25))
    }
  })

/** A temporary directory removed with the scope. */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "midge-test-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

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

/** Runs a command to its end (SIGKILLed after `timeoutMs`, default 10 s), stdin from `input`. */
export const run = (command: string, args: ReadonlyArray<string>, options: RunOptions = {}): Effect.Effect<RunResult> =>
  Effect.async<RunResult>((resume) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: childEnv(options.env) })
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

export interface LiveOutput {
  stdout: string
  stderr: string
  exited: boolean
  code: number | null
  signal: NodeJS.Signals | null
}

export interface LiveProcess {
  readonly child: ChildProcess
  readonly out: LiveOutput
}

/** A long-running process in the scope (SIGKILLed at its end), with live output. */
export const spawnLive = (command: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Effect.Effect<LiveProcess, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: childEnv(env) })
      const out: LiveOutput = { stdout: "", stderr: "", exited: false, code: null, signal: null }
      child.stdout!.on("data", (d) => (out.stdout += d))
      child.stderr!.on("data", (d) => (out.stderr += d))
      child.stdin!.on("error", () => {})
      child.on("close", (code, signal) => {
        out.exited = true
        out.code = code
        out.signal = signal
      })
      return { child, out }
    }),
    ({ child }) => Effect.sync(() => child.kill("SIGKILL"))
  )

export const HAPROXY = "/usr/sbin/haproxy"

export interface Haproxy {
  /** the frontend's port */
  readonly port: number
  /** what HAProxy logged so far (stderr and stdout) */
  readonly log: () => string
  readonly running: () => boolean
}

/**
 * HAProxy (Debian's) in the foreground, in `mode tcp`: frontend `mqtt_frontend` on a free port of
 * 127.0.0.1 (`bind`: options after the address) forwarding to backend `mqtt_backend`, whose one
 * server `serverName` is 127.0.0.1:`backend` (`server`: options after the address; its health
 * check lines name it `mqtt_backend/<serverName>`), with `defaults` lines added to the defaults. SIGKILLed with the scope
 * (and when the test worker exits, should the scope not close); returns once it listens, or
 * fails with its log.
 */
export const startHaproxy = (options: {
  readonly backend: number
  readonly serverName: string
  readonly bind?: string
  readonly server?: string
  readonly defaults?: ReadonlyArray<string>
}): Effect.Effect<Haproxy, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const port = yield* freePort
    const config = path.join(dir, "haproxy.cfg")
    const after = (text: string | undefined) => (text === undefined ? "" : ` ${text}`)
    fs.writeFileSync(
      config,
      [
        "global",
        "  log stderr format raw local0 info",
        "defaults",
        "  mode tcp",
        "  log global",
        ...(options.defaults ?? []).map((line) => `  ${line}`),
        "  timeout connect 5s",
        "  timeout client 30s",
        "  timeout server 30s",
        "frontend mqtt_frontend",
        `  bind 127.0.0.1:${port}${after(options.bind)}`,
        "  default_backend mqtt_backend",
        "backend mqtt_backend",
        `  server ${options.serverName} 127.0.0.1:${options.backend}${after(options.server)}`,
        ""
      ].join("\n")
    )
    const proc = yield* spawnLive(HAPROXY, ["-db", "-f", config])
    const killOnExit = () => void proc.child.kill("SIGKILL")
    process.once("exit", killOnExit)
    yield* Effect.addFinalizer(() => Effect.sync(() => process.off("exit", killOnExit)))
    const log = () => proc.out.stderr + proc.out.stdout
    yield* Effect.promise(async () => {
      const started = Date.now()
      while (!(await canConnect(port))) {
        if (proc.out.exited) throw new Error(`haproxy exited (${proc.out.code}):\n${log()}`)
        if (Date.now() - started > 10_000) throw new Error(`haproxy does not listen on ${port}:\n${log()}`)
        await new Promise((r) => setTimeout(r, 25))
      }
    })
    return { port, log, running: () => !proc.out.exited }
  })

/**
 * The daemon, `node dist/main.js ARGS`, SIGKILLed with the scope; when `port`
 * is given, returns once it listens there.
 */
export const startDaemon = (
  args: ReadonlyArray<string>,
  options: { readonly port?: number; readonly env?: Record<string, string>; /** node's own options, before the script */ readonly nodeArgs?: ReadonlyArray<string> } = {}
) =>
  Effect.gen(function* () {
    const daemon = yield* spawnLive("node", [...(options.nodeArgs ?? []), DAEMON, ...args], options.env)
    if (options.port !== undefined) yield* listening(options.port, 15_000)
    return daemon
  })

export interface Mosquitto {
  readonly port: number
  readonly dir: string
  /** the ports of the `extra` listeners */
  readonly ports: ReadonlyArray<number>
  /** stderr + stdout so far (all runs) */
  readonly log: () => string
  /** SIGKILL and wait for the exit */
  readonly kill: Effect.Effect<void>
  /** start again with the same config and ports */
  readonly start: Effect.Effect<void>
}

export interface MosquittoOptions {
  /** the main listener's port (default: a free one) */
  readonly port?: number
  /** more listeners, each the lines after its `listener P 127.0.0.1`, on ports of their own */
  readonly extra?: ReadonlyArray<ReadonlyArray<string>>
}

/**
 * Debian's mosquitto, `listener PORT 127.0.0.1` followed by `lines` (`@DIR@`
 * stands for its directory), logging everything to stderr, SIGKILLed with the
 * scope.
 */
export const startMosquitto = (lines: ReadonlyArray<string>, options: MosquittoOptions = {}): Effect.Effect<Mosquitto, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const port = options.port ?? (yield* freePort)
    const ports: Array<number> = []
    const text = ["user root", "log_dest stderr", "log_type all", "per_listener_settings false", `listener ${port} 127.0.0.1`, ...lines]
    for (const l of options.extra ?? []) {
      const p = yield* freePort
      ports.push(p)
      text.push(`listener ${p} 127.0.0.1`, ...l)
    }
    const file = path.join(dir, "mosquitto.conf")
    fs.writeFileSync(file, (text.join("\n") + "\n").replaceAll("@DIR@", dir))
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
      yield* listening(port)
      for (const p of ports) yield* listening(p)
    })
    yield* Effect.addFinalizer(() => kill)
    yield* start
    return { port, dir, ports, log: () => output, kill, start }
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

/** A CA, a server certificate for localhost / 127.0.0.1, a client certificate, one for the wrong name, and an unrelated CA. */
export const makeCertificates = (dir: string): Certificates => {
  const f = (name: string) => path.join(dir, name)
  const ssl = (...args: Array<string>) => execFileSync("openssl", args, { stdio: "ignore" })
  const signed = (name: string, subject: string, ext?: string) => {
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`), "-subj", subject)
    const extArgs = ext === undefined ? [] : ["-extfile", ext]
    ssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f(`${name}.crt`), "-days", "2", ...extArgs)
  }
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.crt"), "-days", "2", "-subj", "/CN=midge-test-ca")
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f("other.key"), "-out", f("other.crt"), "-days", "2", "-subj", "/CN=other-ca")
  fs.writeFileSync(f("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
  fs.writeFileSync(f("wrong.cnf"), "subjectAltName=DNS:wrong.example\n")
  signed("server", "/CN=localhost", f("ext.cnf"))
  signed("client", "/CN=midge-client")
  signed("wrong", "/CN=wrong.example", f("wrong.cnf"))
  return {
    ca: f("ca.crt"),
    cert: f("server.crt"),
    key: f("server.key"),
    clientCert: f("client.crt"),
    clientKey: f("client.key"),
    otherCa: f("other.crt"),
    misnamedCert: f("wrong.crt"),
    misnamedKey: f("wrong.key")
  }
}

/**
 * Every exception thrown out of an event handler of this process (a socket callback, a timer) while
 * the scope is open: in the daemon each would end the process. Vitest reports them too, after the test.
 */
export const uncaughtInScope: Effect.Effect<Array<unknown>, never, Scope.Scope> = Effect.gen(function* () {
  const thrown: Array<unknown> = []
  const onThrow = (error: unknown) => void thrown.push(error)
  yield* Effect.acquireRelease(
    Effect.sync(() => process.on("uncaughtException", onThrow)),
    () => Effect.sync(() => process.off("uncaughtException", onThrow))
  )
  return thrown
})
