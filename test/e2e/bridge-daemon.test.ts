/**
 * Bridges through the daemon as users run it: `node dist/main.js -c FILE`
 * with a Mosquitto `connection` block towards a real Debian mosquitto started
 * by the test. Messages both ways with prefixes, the state notifications on
 * both brokers, SIGHUP (the bridge keeps its link, an added block starts), SIGTERM (exit 0, and the
 * remote broker turns the state to 0 with the bridge's will).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { DAEMON, freePort, run, startDaemon, startMosquitto, tempDir } from "../support/processes.js"
import { collect, connectClient, publish, subscribe, waitFor } from "./harness.js"

const STATE = "$SYS/broker/connection/midge-daemon/state"

describe("bridges of the daemon", () => {
  it.scopedLive("a connection block to Debian mosquitto: both ways with prefixes, state 1 on both sides, kept across SIGHUP, will 0 after SIGTERM", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto(["allow_anonymous true"])
      const port = yield* freePort
      const dir = yield* tempDir
      const conf = path.join(dir, "mosquitto.conf")
      const text = [
        `listener ${port} 127.0.0.1`,
        "allow_anonymous true",
        "user root",
        "connection cloud",
        `address 127.0.0.1:${remote.port}`,
        "remote_clientid midge-daemon",
        "restart_timeout 1",
        "topic sensors/# out 1 site/ remote/site/",
        "topic cmd/# in 1 local/ remote/",
        ""
      ].join("\n")
      fs.writeFileSync(conf, text)
      const daemon = yield* startDaemon(["-c", conf], { port })

      // the state notification: retained 1 on the remote broker and on Midge
      const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const remoteGot = collect(remoteClient)
      yield* subscribe(remoteClient, [STATE, "remote/site/#"], { qos: 1 })
      yield* waitFor(() => remoteGot.some((m) => m.topic === STATE && m.payload === "1"), "state 1 on the remote broker", 10_000)
      const localClient = yield* connectClient(`mqtt://127.0.0.1:${port}`)
      const localGot = collect(localClient)
      yield* subscribe(localClient, [STATE, "local/#"], { qos: 1 })
      yield* waitFor(() => localGot.some((m) => m.topic === STATE && m.payload === "1" && m.retain), "state 1, retained, on Midge", 10_000)
      expect(remote.log()).toMatch(/New bridge connected from 127\.0\.0\.1:\d+ as midge-daemon/)

      // out: site/sensors/... on Midge -> remote/site/sensors/... on mosquitto (Debian's mosquitto_pub publishes it)
      const pub = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "site/sensors/t1", "-m", "21.5", "-q", "1"])
      expect(pub.code).toBe(0)
      yield* waitFor(() => remoteGot.some((m) => m.topic === "remote/site/sensors/t1"), "the message on the remote broker", 10_000)
      expect(remoteGot.find((m) => m.topic === "remote/site/sensors/t1")).toMatchObject({ payload: "21.5", qos: 1 })

      // in: remote/cmd/... on mosquitto -> local/cmd/... on Midge
      const back = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(remote.port), "-t", "remote/cmd/reboot", "-m", "now", "-q", "1"])
      expect(back.code).toBe(0)
      yield* waitFor(() => localGot.some((m) => m.topic === "local/cmd/reboot"), "the message on Midge", 10_000)
      expect(localGot.find((m) => m.topic === "local/cmd/reboot")).toMatchObject({ payload: "now", qos: 1 })

      // SIGHUP with a second connection block added: the configuration is read again, the new
      // bridge starts, the first keeps its link (no state 0 anywhere) and keeps forwarding
      fs.writeFileSync(conf, text + ["connection edge", `address 127.0.0.1:${remote.port}`, "remote_clientid midge-daemon-2", "notifications false", "topic extra/# out 1", ""].join("\n"))
      daemon.child.kill("SIGHUP")
      yield* waitFor(() => daemon.out.stderr.includes("Reloading config."), "the reload", 10_000)
      yield* waitFor(() => daemon.out.stderr.includes("Bridge edge added."), "the added bridge", 10_000)
      yield* waitFor(() => /New bridge connected from 127\.0\.0\.1:\d+ as midge-daemon-2/.test(remote.log()), "the added bridge on mosquitto", 10_000)
      yield* subscribe(remoteClient, "extra/#", { qos: 1 })
      yield* publish(localClient, "extra/1", "through the new bridge", { qos: 1 })
      yield* waitFor(() => remoteGot.some((m) => m.topic === "extra/1"), "a message through the added bridge", 10_000)
      yield* publish(localClient, "site/sensors/t2", "after reload", { qos: 1 })
      yield* waitFor(() => remoteGot.some((m) => m.topic === "remote/site/sensors/t2"), "a message after the reload", 10_000)
      expect(remoteGot.filter((m) => m.topic === STATE).map((m) => m.payload)).toEqual(["1"])
      expect(localGot.filter((m) => m.topic === STATE).map((m) => m.payload)).toEqual(["1"])
      expect(remote.log().match(/New bridge connected from \S+ as midge-daemon /g)).toHaveLength(1)

      // SIGTERM: the daemon exits 0; the link dies without DISCONNECT, so mosquitto publishes the will: state 0
      daemon.child.kill("SIGTERM")
      yield* waitFor(() => daemon.out.exited, "the daemon to exit", 10_000)
      expect(daemon.out.code).toBe(0)
      yield* waitFor(() => remoteGot.some((m) => m.topic === STATE && m.payload === "0"), "state 0 on the remote broker", 10_000)
      // retained there: a new subscriber reads 0
      const late = yield* run("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(remote.port), "-t", STATE, "-C", "1", "-W", "5"])
      expect(late.stdout).toBe("0\n")
    })
  )

  it.scopedLive("a bad connection block: the daemon does not start and names file, line and option", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const conf = path.join(dir, "bridge.conf")
      fs.writeFileSync(conf, ["listener 18831 127.0.0.1", "connection cloud", "address 127.0.0.1:0", "topic a/# sideways", "bridge_tcp_keepalive 0 1 1", ""].join("\n"))
      const r = yield* run("node", [DAEMON, "-c", conf])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toContain(`${conf}:3 address: invalid port "0"`)
      expect(r.stderr).toContain(`${conf}:4 topic: invalid bridge topic direction "sideways"`)
      expect(r.stderr).toContain(`${conf}:5 bridge_tcp_keepalive: invalid TCP keepalive idle value 0`)
    })
  )
})
