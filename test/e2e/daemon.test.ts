/**
 * The daemon as users run it: `node dist/main.js` with Mosquitto's flags
 * (built by `npm test` before the tests run).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as mqttPacket from "mqtt-packet"
import { canConnect, DAEMON as main, freePort, listening, notListening, run, spawnLive, startDaemon, tempDir } from "../support/processes.js"
import { collect, connectClient, publish, rawClient, subscribe, waitFor } from "./harness.js"

/** A temporary directory (removed with the scope) holding `mosquitto.conf` with these lines. */
const confFile = (lines: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const conf = path.join(dir, "mosquitto.conf")
    fs.writeFileSync(conf, lines.join("\n") + "\n")
    return { dir, conf }
  })

describe("node dist/main.js", () => {
  it.scopedLive("-p PORT -v: serves mosquitto clients, logs Mosquitto's lines, exits 0 on SIGTERM with DISCONNECT 0x8B to v5 clients", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const daemon = yield* startDaemon(["-p", String(port), "-v"], { port })
      const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-i", "daemon-test", "-t", "t", "-m", "m", "-q", "1"])
      expect(r.code).toBe(0)
      yield* waitFor(() => daemon.out.stderr.includes("as daemon-test (p2, c1, k60)"), "the connect log line")
      expect(daemon.out.stderr).toMatch(/New client connected from 127\.0\.0\.1:\d+ as daemon-test \(p2, c1, k60\)\./)
      const v5 = yield* rawClient(port)
      yield* v5.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "v5", clean: true, keepalive: 0 } as mqttPacket.IConnectPacket, { protocolVersion: 5 }))
      yield* waitFor(() => v5.data().length > 0, "CONNACK")
      const connackLength = v5.data().length
      daemon.child.kill("SIGTERM")
      yield* waitFor(() => daemon.out.exited, "the daemon to exit", 10_000)
      expect(daemon.out.code).toBe(0)
      const rest = v5.data().subarray(connackLength)
      expect(rest[0]).toBe(0xe0)
      expect(rest[2]).toBe(0x8b) // Server shutting down
    })
  )

  it.scopedLive("a closed stderr (the log's reader gone) loses log lines, not the broker", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const daemon = yield* startDaemon(["-p", String(port)], { port })
      yield* waitFor(() => daemon.out.stderr.includes("listen socket"), "the start-up lines")
      // the reading end of the daemon's stderr closes: its next log lines meet EPIPE
      daemon.child.stderr!.destroy()
      for (let i = 0; i < 3; i++) {
        const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-i", `after-close-${i}`, "-t", "t", "-m", "m", "-q", "1"])
        expect(r.code).toBe(0)
      }
      expect(daemon.out.exited).toBe(false)
      daemon.child.kill("SIGTERM")
      yield* waitFor(() => daemon.out.exited, "the daemon to exit", 10_000)
      expect(daemon.out.code).toBe(0)
    })
  )

  it.scopedLive("stderr redirected to a file (node dist/main.js 2>>log): every line, in order, each connect's lines after the listener's", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const logPath = path.join(dir, "midge.log")
      const port = yield* freePort
      const fd = fs.openSync(logPath, "a")
      const child = spawn("node", [main, "-p", String(port)], { stdio: ["ignore", "ignore", fd] })
      fs.closeSync(fd)
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      yield* listening(port, 15_000)
      const log = () => fs.readFileSync(logPath, "utf8")
      // the probe that saw the port open closed before any CONNECT: Mosquitto's line for it comes first
      yield* waitFor(() => log().includes("Client <unknown> closed its connection."), "the probe's line")
      for (let i = 0; i < 3; i++) {
        const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-i", `to-file-${i}`, "-t", "t", "-m", "m", "-q", "1"])
        expect(r.code).toBe(0)
        yield* waitFor(() => log().includes(`Client to-file-${i} disconnected.`), `to-file-${i}'s last line`)
      }
      child.kill("SIGTERM")
      expect(yield* Effect.promise(() => exited)).toBe(0)
      const lines = log().trimEnd().split("\n").map((l) => l.replace(/^\d+: /, ""))
      expect(lines[0]).toMatch(/^midge version \S+ starting$/)
      expect(lines.at(-1)).toMatch(/^midge version \S+ terminating$/)
      const at = (text: string) => lines.findIndex((l) => l.includes(text))
      expect(at(`Opening ipv4 listen socket on port ${port}.`)).toBeGreaterThan(0)
      for (let i = 0; i < 3; i++) {
        const accepted = at(`to-file-${i} (p2, c1, k60)`)
        expect(accepted).toBeGreaterThan(at(`Opening ipv4 listen socket on port ${port}.`))
        expect(lines[accepted - 1]).toMatch(/^New connection from 127\.0\.0\.1:\d+ on port \d+\.$/)
        expect(at(`Client to-file-${i} disconnected.`)).toBe(accepted + 1)
        if (i > 0) expect(accepted).toBeGreaterThan(at(`Client to-file-${i - 1} disconnected.`))
      }
      // one line per line: no line lost, split or doubled
      expect(lines.every((l) => l.length > 0 && !/\d+: /.test(l))).toBe(true)
    })
  )

  it.scopedLive("with no arguments it listens on 1883, loopback only, anonymous allowed (Mosquitto 2's local-only mode)", () =>
    Effect.gen(function* () {
      const daemon = yield* startDaemon([], { port: 1883 })
      const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", "1883", "-t", "t", "-m", "m"])
      expect(r.code).toBe(0)
      daemon.child.kill("SIGINT")
      yield* waitFor(() => daemon.out.exited, "the daemon to exit", 10_000)
      expect(daemon.out.code).toBe(0)
    })
  )

  it.scopedLive("-c FILE: listener, allow_anonymous and limits from mosquitto.conf", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const { conf } = yield* confFile(["# test", `listener ${port} 127.0.0.1`, "allow_anonymous false", "max_inflight_messages 5"])
      const daemon = yield* startDaemon(["-c", conf], { port })
      // allow_anonymous false: refused with "not authorised" (mosquitto_pub exits non-zero)
      const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "t", "-m", "m"])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(/not authori[sz]ed/i)
      daemon.child.kill("SIGTERM")
      yield* waitFor(() => daemon.out.exited, "the daemon to exit", 10_000)
    })
  )

  it.scopedLive("clientid_prefixes: Mosquitto's start-up note that it is deprecated, and it still refuses other client ids", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const { conf } = yield* confFile([`listener ${port} 127.0.0.1`, "allow_anonymous true", "clientid_prefixes ok-"])
      const daemon = yield* startDaemon(["-c", conf], { port })
      yield* waitFor(() => daemon.out.stderr.includes("listen socket"), "the start-up lines")
      expect(daemon.out.stderr).toContain("The 'clientid_prefixes' option is now deprecated and will be removed in a future version.")
      expect((yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-i", "ok-1", "-t", "t", "-m", "m"])).code).toBe(0)
      expect((yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-i", "other", "-t", "t", "-m", "m"])).code).not.toBe(0)
    })
  )

  it.scopedLive("a bad config file exits non-zero naming file, line and option", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const conf = path.join(dir, "bad.conf")
      fs.writeFileSync(conf, `listener 18830\nmax_inflight_messages lots\nno_such_option 1\n`)
      const r = yield* run("node", [main, "-c", conf])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toContain(`${conf}:2 max_inflight_messages`)
      expect(r.stderr).toContain(`${conf}:3 no_such_option`)
    })
  )

  it.scopedLive("pid_file, log_dest file and topic, user: written, published, dropped to the configured user", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const dir = yield* tempDir
      fs.chmodSync(dir, 0o777)
      const pidFile = path.join(dir, "midge.pid")
      const logFile = path.join(dir, "midge.log")
      const conf = path.join(dir, "mosquitto.conf")
      fs.writeFileSync(conf, [`listener ${port} 127.0.0.1`, "allow_anonymous true", `pid_file ${pidFile}`, `log_dest file ${logFile}`, "log_dest topic", "log_type all", "user nobody", ""].join("\n"))
      const daemon = yield* startDaemon(["-c", conf], { port })
      expect(fs.readFileSync(pidFile, "utf8").trim()).toBe(String(daemon.child.pid))
      // log_dest topic: log lines arrive on $SYS/broker/log/<type>
      // every log topic: debug lines (every packet, these deliveries included) are not published, as in Mosquitto
      const all = yield* spawnLive("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-t", "$SYS/broker/log/#", "-v", "-W", "10"])
      yield* waitFor(() => fs.readFileSync(logFile, "utf8").includes("$SYS/broker/log/#"), "the first subscribe log line", 10_000)
      const sub = yield* spawnLive("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-t", "$SYS/broker/log/N", "-v", "-C", "2", "-W", "10"])
      yield* waitFor(() => fs.readFileSync(logFile, "utf8").includes("$SYS/broker/log/N"), "the subscribe log line", 10_000)
      yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-i", "logged", "-t", "t", "-m", "m"])
      yield* waitFor(() => sub.out.exited, "a log line on a $SYS/broker/log topic", 10_000)
      expect(sub.out.stdout).toMatch(/^\$SYS\/broker\/log\/N \d+: New client connected from .* as logged/m)
      yield* waitFor(() => all.out.stdout.includes("Client logged disconnected."), "the disconnect line on $SYS/broker/log/N", 10_000)
      expect(all.out.stdout).toMatch(/^\$SYS\/broker\/log\/M\/subscribe \d+: \S+ 0 \$SYS\/broker\/log\/#$/m)
      expect(all.out.stdout).not.toMatch(/^\$SYS\/broker\/log\/D /m)
      // the file has the debug lines
      expect(fs.readFileSync(logFile, "utf8")).toMatch(/Received PUBLISH from logged \(d0, q0, r0, m0, 't', \.\.\. \(1 bytes\)\)/)
      // log_dest file (written at the end of the turn the line was logged in)
      yield* waitFor(() => /New client connected from 127\.0\.0\.1:\d+ as logged/.test(fs.readFileSync(logFile, "utf8")), "the connect line in the log file", 5_000)
      // user nobody: privileges dropped after the listener opened (tests run as root)
      if (process.getuid?.() === 0) {
        const status = fs.readFileSync(`/proc/${daemon.child.pid}/status`, "utf8")
        const uid = /^Uid:\s+(\d+)/m.exec(status)![1]
        expect(uid).toBe("65534")
      }
      daemon.child.kill("SIGTERM")
      yield* waitFor(() => daemon.out.exited, "the daemon to exit", 10_000)
      expect(daemon.out.code).toBe(0)
    })
  )

  it.scopedLive("SIGHUP applies changed security options as Mosquitto does: allow_anonymous false and a changed password disconnect those connected clients, the others stay under the new acl_file", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const { conf, dir } = yield* confFile([`listener ${port} 127.0.0.1`, "allow_anonymous true", "user root"])
      const pw = path.join(dir, "passwd")
      execFileSync("/usr/bin/mosquitto_passwd", ["-c", "-b", pw, "alice", "one"], { stdio: "ignore" })
      execFileSync("/usr/bin/mosquitto_passwd", ["-b", pw, "bob", "two"], { stdio: "ignore" })
      fs.writeFileSync(conf, fs.readFileSync(conf, "utf8") + `password_file ${pw}\n`)
      const daemon = yield* startDaemon(["-c", conf], { port })
      const url = `mqtt://127.0.0.1:${port}`
      const anon = yield* connectClient(url, { clientId: "anon", protocolVersion: 5 })
      const anonDisconnect: Array<number | undefined> = []
      anon.on("disconnect", (p) => anonDisconnect.push(p.reasonCode))
      const alice = yield* connectClient(url, { clientId: "alice-1", username: "alice", password: "one" })
      const bob = yield* connectClient(url, { clientId: "bob-1", username: "bob", password: "two" })
      let bobClosed = false
      bob.on("close", () => (bobClosed = true))
      const aliceGot = collect(alice)
      yield* subscribe(alice, "t", { qos: 1 })

      execFileSync("/usr/bin/mosquitto_passwd", ["-b", pw, "bob", "changed"], { stdio: "ignore" })
      // an acl_file appears: alice may publish on t but no longer read it, and may read and write own/#
      const acl = path.join(dir, "acl")
      fs.writeFileSync(acl, "user alice\ntopic write t\ntopic readwrite own/#\nuser bob\ntopic readwrite #\n")
      fs.writeFileSync(conf, fs.readFileSync(conf, "utf8").replace("allow_anonymous true", "allow_anonymous false") + `acl_file ${acl}\n`)
      daemon.child.kill("SIGHUP")
      yield* waitFor(() => anonDisconnect.length === 1 && bobClosed, "the anonymous client and bob disconnected", 10_000)
      expect(anonDisconnect).toEqual([0x87])
      // the log lines go out at the end of the daemon's turn, and through a pipe: they can come after the DISCONNECT
      yield* waitFor(
        () => daemon.out.stderr.includes("Client anon disconnected, not authorised.") && daemon.out.stderr.includes("Client bob-1 disconnected, not authorised."),
        "the daemon's lines for anon and bob-1"
      )
      expect(daemon.out.stderr).not.toContain("Client alice-1 disconnected")
      // alice stays connected, under the new ACL: her message on t is not delivered to her, own/x is
      yield* subscribe(alice, "own/#", { qos: 1 })
      yield* publish(alice, "t", "not for alice now", { qos: 1 })
      yield* publish(alice, "own/x", "still here", { qos: 1 })
      yield* waitFor(() => aliceGot.length === 1, "alice's own/x message")
      expect(aliceGot.map((m) => m.topic)).toEqual(["own/x"])
      // new anonymous clients are refused, with mosquitto_pub
      const refused = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "t", "-m", "m"])
      expect(refused.code).not.toBe(0)
      expect(refused.stderr).toContain("not authorised")
      expect((yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-u", "bob", "-P", "changed", "-t", "t", "-m", "m"])).code).toBe(0)
    })
  )

  it.scopedLive("SIGUSR1 saves the store now, as Mosquitto's does; without persistence it is ignored; it never opens Node's inspector", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const { conf, dir } = yield* confFile([`listener ${port} 127.0.0.1`, "allow_anonymous true", "persistence true", "user root"])
      fs.writeFileSync(conf, fs.readFileSync(conf, "utf8") + `persistence_location ${dir}\n`)
      const daemon = yield* startDaemon(["-c", conf], { port })
      yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "kept", "-m", "retained", "-r", "-q", "1"])
      const snapshot = path.join(dir, "mosquitto.db")
      const before = fs.statSync(snapshot).mtimeMs
      daemon.child.kill("SIGUSR1")
      yield* waitFor(() => daemon.out.stderr.includes(`Saving in-memory database to ${snapshot}.`), "the save line", 10_000)
      yield* waitFor(() => fs.statSync(snapshot).mtimeMs > before, "a new snapshot", 10_000)
      expect(daemon.out.exited).toBe(false)
      expect(daemon.out.stderr).not.toContain("Debugger listening")
      // and a daemon without persistence: nothing to save, still running, no inspector
      const plainPort = yield* freePort
      const { conf: plainConf } = yield* confFile([`listener ${plainPort} 127.0.0.1`, "allow_anonymous true", "user root"])
      const plain = yield* startDaemon(["-c", plainConf], { port: plainPort })
      plain.child.kill("SIGUSR1")
      yield* Effect.sleep("500 millis")
      expect(yield* Effect.promise(() => canConnect(plainPort))).toBe(true)
      expect(plain.out.exited).toBe(false)
      expect(plain.out.stderr).not.toContain("Debugger listening")
    })
  )

  it.scopedLive("log_dest file and SIGHUP: a rotated log is reopened, lines before the reload in the old file, after it in the new one", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const dir = yield* tempDir
      const logFile = path.join(dir, "midge.log")
      const { conf } = yield* confFile([`listener ${port} 127.0.0.1`, "allow_anonymous true", `log_dest file ${logFile}`, "user root"])
      const daemon = yield* startDaemon(["-c", conf], { port })
      yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-i", "before-rotation", "-t", "t", "-m", "m"])
      yield* waitFor(() => fs.readFileSync(logFile, "utf8").includes("as before-rotation"), "the first client's line", 10_000)
      // logrotate: rename, then SIGHUP
      fs.renameSync(logFile, `${logFile}.1`)
      daemon.child.kill("SIGHUP")
      yield* waitFor(() => fs.existsSync(logFile) && fs.readFileSync(logFile, "utf8").includes("Reloading config.") === false && fs.readFileSync(`${logFile}.1`, "utf8").includes("Reloading config."), "the reload line in the old file", 10_000)
      const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-i", "after-rotation", "-t", "t", "-m", "m"])
      expect(r.code).toBe(0)
      yield* waitFor(() => fs.readFileSync(logFile, "utf8").includes("as after-rotation"), "the second client's line in the new file", 10_000)
      expect(fs.readFileSync(`${logFile}.1`, "utf8")).not.toContain("after-rotation")
      daemon.child.kill("SIGTERM")
      yield* waitFor(() => daemon.out.exited, "the daemon to exit", 10_000)
      expect(daemon.out.code).toBe(0)
      expect(fs.readFileSync(logFile, "utf8")).toMatch(/midge version \S+ terminating\n$/)
    })
  )

  it.scopedLive("-d: runs in the background, the command returns at once", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const dir = yield* tempDir
      const pidFile = path.join(dir, "midge.pid")
      const { conf } = yield* confFile([`listener ${port} 127.0.0.1`, "allow_anonymous true", `pid_file ${pidFile}`, "user root"])
      const r = yield* run("node", [main, "-c", conf, "-d"])
      expect(r.code).toBe(0)
      yield* listening(port)
      yield* waitFor(() => fs.existsSync(pidFile), "the pid file")
      const pid = Number(fs.readFileSync(pidFile, "utf8"))
      yield* Effect.addFinalizer(() => Effect.sync(() => { try { process.kill(pid, "SIGKILL") } catch { /* gone */ } }))
      const pub = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "t", "-m", "m"])
      expect(pub.code).toBe(0)
      process.kill(pid, "SIGTERM")
      yield* waitFor(() => !fs.existsSync(pidFile), "the pid file to be removed at exit", 10_000)
    })
  )

  it.scopedLive("SIGHUP reloads the configuration: unchanged listeners keep their clients, new ones open, removed ones close", () =>
    Effect.gen(function* () {
      const [a, b] = [yield* freePort, yield* freePort]
      const { conf } = yield* confFile([`listener ${a} 127.0.0.1`, "allow_anonymous true", "user root"])
      const daemon = yield* startDaemon(["-c", conf], { port: a })
      const client = yield* connectClient(`mqtt://127.0.0.1:${a}`)
      let closed = false
      client.on("close", () => (closed = true))
      const got = collect(client)
      yield* subscribe(client, "r", { qos: 1 })
      expect(yield* Effect.promise(() => canConnect(b))).toBe(false)

      fs.writeFileSync(conf, `listener ${a} 127.0.0.1\nallow_anonymous true\nlistener ${b} 127.0.0.1\nuser root\n`)
      daemon.child.kill("SIGHUP")
      yield* listening(b)
      const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(b), "-t", "r", "-m", "via the new listener", "-q", "1"])
      expect(r.code).toBe(0)
      yield* waitFor(() => got.length === 1, "delivery to the client of the unchanged listener")
      expect(closed).toBe(false)

      fs.writeFileSync(conf, `listener ${a} 127.0.0.1\nallow_anonymous true\nuser root\n`)
      daemon.child.kill("SIGHUP")
      yield* waitFor(() => daemon.out.stderr.split("Reloading config.").length === 3, "the second reload", 10_000)
      yield* notListening(b)
      yield* publish(client, "r", "still connected", { qos: 1 })
      yield* waitFor(() => got.length === 2, "the original client to keep working")
      expect(closed).toBe(false)
      // a broken file on reload: the error is logged and the broker keeps running
      fs.writeFileSync(conf, `listener ${a} 127.0.0.1\nmax_inflight_messages many\n`)
      daemon.child.kill("SIGHUP")
      yield* waitFor(() => daemon.out.stderr.includes("Error reloading config"), "the reload error", 10_000)
      expect(daemon.out.stderr).toContain(`${conf}:2 max_inflight_messages`)
      yield* publish(client, "r", "after a bad reload", { qos: 1 })
      yield* waitFor(() => got.length === 3, "the broker to keep running")
    })
  )

  it.scopedLive("a SIGHUP while the daemon starts neither ends it nor is lost: the reload runs once it is up", () =>
    Effect.gen(function* () {
      const [a, b] = [yield* freePort, yield* freePort]
      const { conf } = yield* confFile([`listener ${a} 127.0.0.1`, "allow_anonymous true", "user root"])
      const daemon = yield* spawnLive("node", [main, "-c", conf])
      // as early as the process says anything: before its listeners open
      yield* waitFor(() => daemon.out.stderr.includes("starting"), "the daemon to start")
      fs.writeFileSync(conf, `listener ${a} 127.0.0.1\nallow_anonymous true\nlistener ${b} 127.0.0.1\nuser root\n`)
      daemon.child.kill("SIGHUP")
      // the reload the early SIGHUP asked for opens the second listener
      yield* listening(b).pipe(Effect.catchAllDefect((e) => Effect.die(new Error(`${String(e)}; exited ${daemon.out.exited} ${daemon.out.signal}: ${daemon.out.stderr}`))))
      expect(daemon.out.exited).toBe(false)
      yield* waitFor(() => daemon.out.stderr.includes("Reloading config."), "the reload's log line", 5_000)
      expect(daemon.out.stderr.split("Reloading config.").length).toBe(2)
      const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(a), "-t", "t", "-m", "up", "-q", "1"])
      expect(r.code).toBe(0)
    })
  )

  it.scopedLive("$SYS topics and the metrics_listener endpoint of the daemon", () =>
    Effect.gen(function* () {
      const [port, metricsPort] = [yield* freePort, yield* freePort]
      const { conf } = yield* confFile([`listener ${port} 127.0.0.1`, "allow_anonymous true", "user root", "sys_interval 1", `metrics_listener ${metricsPort} 127.0.0.1`])
      yield* startDaemon(["-c", conf], { port })
      const version = yield* run("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-t", "$SYS/broker/version", "-C", "1", "-W", "5"])
      expect(version.stdout).toBe("midge version 0.1.0\n")
      const uptime = yield* run("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-t", "$SYS/broker/uptime", "-C", "1", "-W", "5"])
      expect(uptime.stdout).toMatch(/^\d+ seconds\n$/)
      const body = yield* Effect.promise(() => fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text()))
      expect(body).toMatch(/^midge_clients_connected \d+$/m)
      expect(body).toMatch(/^# TYPE midge_messages_received_total counter$/m)
    })
  )

  it.scopedLive("log_dest syslog with log_facility, and log_timestamp_format", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const dir = yield* tempDir
      const sock = path.join(dir, "log.sock")
      const received = path.join(dir, "received")
      // a stand-in syslog daemon: a Unix datagram socket that appends what it gets
      const syslogd = yield* spawnLive("python3", [
        "-c",
        `import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(${JSON.stringify(sock)})\nprint("ready",flush=True)\nwhile True:\n  d=s.recv(65536)\n  open(${JSON.stringify(received)},"ab").write(d+b"\\n")`
      ])
      yield* waitFor(() => syslogd.out.stdout.includes("ready"), "the syslog stand-in")
      const conf = path.join(dir, "mosquitto.conf")
      fs.writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\nuser root\nlog_dest syslog\nlog_dest stderr\nlog_facility 5\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n`)
      const daemon = yield* startDaemon(["-c", conf], { port, env: { MIDGE_SYSLOG_SOCKET: sock } })
      yield* run("mosquitto_pub", ["-p", String(port), "-i", "syslogged", "-t", "t", "-m", "m"])
      yield* waitFor(() => fs.existsSync(received) && fs.readFileSync(received, "utf8").includes("as syslogged"), "the connect line in syslog", 10_000)
      // <PRI> = local5 (21) * 8 + notice (5) = 173
      expect(fs.readFileSync(received, "utf8")).toMatch(/<173>.*midge.*New client connected from .* as syslogged/)
      // log_timestamp_format on the other destinations
      yield* waitFor(() => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}: New client connected/m.test(daemon.out.stderr), "the connect line on stderr", 5_000)
    })
  )
})
