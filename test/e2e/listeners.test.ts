/**
 * Listener options from mosquitto.conf, through the same path as the daemon
 * (parseConfigText → brokerOptionsFromConfig → Broker): several listeners,
 * mount_point, per_listener_settings, Unix sockets, max_connections,
 * max_topic_alias, use_username_as_clientid, bind_interface, and Mosquitto 2.1's
 * accept_protocol_versions, listener_allow_anonymous, listener_auto_id_prefix,
 * global_max_connections and global_max_clients.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { WebSocket } from "ws"
import { Broker, brokerOptionsFromConfig } from "../../src/Broker.js"
import { parseConfigText } from "../../src/config/Config.js"
import { Log } from "../../src/log/Log.js"
import { collect, connectClient, connectCollecting, publish, rawClient, run, spawnScoped, subscribe, waitFor } from "./harness.js"
import { freePort } from "../support/processes.js"

const freePorts = (n: number) => Effect.all(Array.from({ length: n }, () => freePort))

const brokerFrom = (text: string) =>
  Effect.gen(function* () {
    const config = yield* parseConfigText(text, "test.conf").pipe(Effect.orDie)
    const log = new Log(["all"], [], false, 200)
    return yield* Broker.make(brokerOptionsFromConfig(config, log)).pipe(Effect.orDie)
  })

describe("listeners from mosquitto.conf", () => {
  it.scopedLive("two listeners; mount_point isolates one listener's clients under its prefix", () =>
    Effect.gen(function* () {
      const [a, b] = yield* freePorts(2)
      yield* brokerFrom(`listener ${a} 127.0.0.1\nallow_anonymous true\nlistener ${b} 127.0.0.1\nmount_point tenant/\n`)
      const plain = yield* connectClient(`mqtt://127.0.0.1:${a}`)
      const mounted = yield* connectClient(`mqtt://127.0.0.1:${b}`)
      const plainGot = collect(plain)
      const mountedGot = collect(mounted)
      yield* subscribe(plain, "#", { qos: 0 })
      yield* subscribe(mounted, "#", { qos: 0 })
      // a mounted client's publish lands under the prefix; it sees it without the prefix
      yield* publish(mounted, "x", "from mounted")
      yield* waitFor(() => plainGot.length === 1 && mountedGot.length === 1, "both deliveries")
      expect(plainGot[0].topic).toBe("tenant/x")
      expect(mountedGot[0].topic).toBe("x")
      // outside the prefix: invisible to the mounted client
      yield* publish(plain, "elsewhere", "not for tenants")
      yield* publish(plain, "tenant/y", "for tenants")
      yield* waitFor(() => mountedGot.length === 2, "the mounted delivery")
      expect(mountedGot[1]).toMatchObject({ topic: "y", payload: "for tenants" })
    })
  )

  it.scopedLive("per_listener_settings: allow_anonymous applies per listener", () =>
    Effect.gen(function* () {
      const [open, closed] = yield* freePorts(2)
      yield* brokerFrom(`per_listener_settings true\nlistener ${open} 127.0.0.1\nallow_anonymous true\nlistener ${closed} 127.0.0.1\nallow_anonymous false\n`)
      const ok = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(open), "-t", "t", "-m", "m"])
      expect(ok.code).toBe(0)
      const refused = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(closed), "-t", "t", "-m", "m"])
      expect(refused.code).not.toBe(0)
      expect(refused.stderr).toMatch(/not authori[sz]ed/i)
    })
  )

  it.scopedLive("listener 0 /path: a Unix socket listener", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-unix-"))
      const sock = path.join(dir, "mqtt.sock")
      const broker = yield* brokerFrom(`listener 0 ${sock}\nallow_anonymous true\n`)
      expect(broker.listeners[0].socketPath).toBe(sock)
      const sub = yield* spawnScoped("mosquitto_sub", ["--unix", sock, "-t", "u", "-q", "1", "-C", "1", "-W", "10"])
      yield* waitFor(() => broker.stats().subscriptions === 1, "mosquitto_sub to subscribe over the unix socket")
      const r = yield* run("mosquitto_pub", ["--unix", sock, "-t", "u", "-m", "over unix", "-q", "1"])
      expect(r.code).toBe(0)
      yield* waitFor(() => sub.out.exited, "delivery over the unix socket")
      const got = sub.out.stdout.trim().split("\n")
      expect(got).toEqual(["over unix"])
    })
  )

  it.scopedLive("bind_interface: the listener binds the interface's address, not every interface; an unknown interface is an error naming it", () =>
    Effect.gen(function* () {
      const [port] = yield* freePorts(1)
      yield* brokerFrom(`listener ${port}\nbind_interface lo\nallow_anonymous true\n`)
      // what the kernel says the socket is bound to: loopback's address, where `listener PORT` alone is every interface
      const ss = yield* run("ss", ["-ltnH", `sport = :${port}`])
      expect(ss.stdout.trim().split(/\s+/)[3]).toBe(`127.0.0.1:${port}`)
      expect((yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "t", "-m", "m"])).code).toBe(0)
      const config = yield* parseConfigText(`listener ${port + 1}\nbind_interface nosuch9\n`, "test.conf").pipe(Effect.orDie)
      const error = yield* Broker.make(brokerOptionsFromConfig(config, new Log([], [], false))).pipe(Effect.flip)
      expect(error.message).toContain("bind_interface nosuch9: no such network interface")
    })
  )

  it.scopedLive("the same port and address in two listener blocks is an error (Mosquitto: Address already in use), not one listener with both blocks' options; two port 0 listeners get a port each, and keep them over a reload", () =>
    Effect.gen(function* () {
      const [port] = yield* freePorts(1)
      const twice = yield* parseConfigText(`listener ${port} 127.0.0.1\nallow_anonymous true\nlistener ${port} 127.0.0.1\nmax_connections 1\n`, "test.conf").pipe(Effect.orDie)
      const error = yield* Broker.make(brokerOptionsFromConfig(twice, new Log([], [], false))).pipe(Effect.as("started"), Effect.flip)
      expect(error).toMatchObject({ _tag: "ListenError", reason: "address-in-use", port })
      // the failed start closed the listener it had opened, in this same scope: the port is free again
      yield* brokerFrom(`listener ${port} 127.0.0.1\nallow_anonymous true\n`)
      expect((yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "t", "-m", "m"])).code).toBe(0)

      const options = { listeners: [{ port: 0, host: "127.0.0.1" }, { port: 0, host: "127.0.0.1" }] }
      const broker = yield* Broker.make(options)
      const ports = () => broker.listeners.map((l) => l.port)
      const before = ports()
      expect(before).toHaveLength(2)
      expect(before[0]).not.toBe(before[1])
      yield* broker.reload(options)
      expect(ports()).toEqual(before)
      for (const p of before) yield* connectClient(`mqtt://127.0.0.1:${p}`)
    })
  )

  it.scopedLive("max_connections: the connection over the limit is refused, the others carry on", () =>
    Effect.gen(function* () {
      const [port] = yield* freePorts(1)
      yield* brokerFrom(`listener ${port} 127.0.0.1\nallow_anonymous true\nmax_connections 2\n`)
      const url = `mqtt://127.0.0.1:${port}`
      const one = yield* connectClient(url)
      yield* connectClient(url)
      const third = yield* rawClient(port)
      yield* third.waitClosed()
      const got = collect(one)
      yield* subscribe(one, "still", { qos: 0 })
      yield* publish(one, "still", "working")
      yield* waitFor(() => got.length === 1, "the first client to work")
    })
  )

  it.scopedLive("max_topic_alias per listener: the CONNACK's Topic Alias Maximum; an alias above it is DISCONNECT 0x94 (mosquitto_pub -D publish topic-alias); 0 allows none", () =>
    Effect.gen(function* () {
      const [a, b, c] = yield* freePorts(3)
      yield* brokerFrom(`allow_anonymous true\nlistener ${a} 127.0.0.1\nmax_topic_alias 2\nlistener ${b} 127.0.0.1\nmax_topic_alias 0\nlistener ${c} 127.0.0.1\n`)
      const maxOf = (port: number) =>
        Effect.map(connectCollecting(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5 }), (r) => r.connack.properties?.topicAliasMaximum ?? 0)
      expect([yield* maxOf(a), yield* maxOf(b), yield* maxOf(c)]).toEqual([2, 0, 10])
      const aliasPub = (port: number, alias: number) =>
        run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-V", "5", "-q", "1", "-t", "alias/x", "-m", "m", "-D", "publish", "topic-alias", String(alias), "-d"])
      expect((yield* aliasPub(a, 2)).code).toBe(0)
      const above = yield* aliasPub(a, 3)
      expect(above.code).not.toBe(0)
      expect(above.stdout).toContain("Received DISCONNECT (148)")
      expect((yield* aliasPub(b, 1)).stdout).toContain("Received DISCONNECT (148)")
      expect((yield* aliasPub(c, 10)).code).toBe(0)
    })
  )

  it.scopedLive("use_username_as_clientid: the username is the client id (another client id cannot take the session over), no username is not authorised; other listeners unchanged", () =>
    Effect.gen(function* () {
      const [a, b] = yield* freePorts(2)
      const broker = yield* brokerFrom(`allow_anonymous true\nlistener ${a} 127.0.0.1\nuse_username_as_clientid true\nlistener ${b} 127.0.0.1\n`)
      const url = `mqtt://127.0.0.1:${a}`
      const first = yield* connectCollecting(url, { clientId: "device-1", username: "alice", clean: false })
      expect(broker.core.attached.has("alice")).toBe(true)
      expect(broker.core.attached.has("device-1")).toBe(false)
      let firstClosed = false
      first.client.on("close", () => (firstClosed = true))
      // the same user under another client id takes the one session over, and finds it
      const second = yield* connectCollecting(url, { clientId: "device-2", username: "alice", clean: false })
      expect(second.sessionPresent).toBe(true)
      yield* waitFor(() => firstClosed, "the first connection taken over")
      // v5 with an empty client id: the username comes back as the Assigned Client Identifier
      const assigned = yield* connectCollecting(url, { clientId: "", username: "bob", protocolVersion: 5 })
      expect(assigned.connack.properties?.assignedClientIdentifier).toBe("bob")
      // no username: not authorised, with mosquitto_pub (CONNACK 5)
      const refused = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(a), "-i", "anon", "-t", "t", "-m", "m"])
      expect(refused.code).not.toBe(0)
      expect(refused.stderr).toContain("not authorised")
      // the other listener keeps client ids
      expect((yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(b), "-i", "anon", "-t", "t", "-m", "m"])).code).toBe(0)
      yield* connectCollecting(`mqtt://127.0.0.1:${b}`, { clientId: "device-3", username: "carol" })
      expect(broker.core.attached.has("device-3")).toBe(true)
    })
  )

  it.scopedLive("websockets_headers_size limits the HTTP headers of a WebSocket upgrade (Node's 16 KiB without it)", () =>
    Effect.gen(function* () {
      const [a, b] = yield* freePorts(2)
      yield* brokerFrom(`allow_anonymous true\nwebsockets_headers_size 2048\nlistener ${a} 127.0.0.1\nprotocol websockets\n`)
      yield* brokerFrom(`allow_anonymous true\nlistener ${b} 127.0.0.1\nprotocol websockets\n`)
      const withCookie = (port: number, size: number) =>
        Effect.either(connectClient(`ws://127.0.0.1:${port}`, { wsOptions: { headers: { Cookie: `c=${"x".repeat(size)}` } } }))
      expect((yield* withCookie(a, 100))._tag).toBe("Right")
      expect((yield* withCookie(a, 4000))._tag).toBe("Left")
      expect((yield* withCookie(b, 4000))._tag).toBe("Right")
    })
  )
  /** a refused CONNECT's code as MQTT.js reports it (CONNACK return / reason code) */
  const refusal = (url: string, options: Parameters<typeof connectCollecting>[1]) =>
    connectCollecting(url, { ...options, reconnectPeriod: 0 }).pipe(
      Effect.matchEffect({
        onFailure: (e) => Effect.succeed((e as Error & { code?: number }).code),
        // a plain error: the test fails with a line, not with the client's whole object graph
        onSuccess: () => Effect.fail(new Error(`connected to ${url}, expected a refusal`))
      })
    )

  it.scopedLive("accept_protocol_versions: other MQTT versions get CONNACK 'unacceptable protocol version' (0x01, v5 0x84); mosquitto_pub too", () =>
    Effect.gen(function* () {
      const [a, b, c] = yield* freePorts(3)
      yield* brokerFrom(
        `allow_anonymous true\nlistener ${a} 127.0.0.1\naccept_protocol_versions 5\nlistener ${b} 127.0.0.1\naccept_protocol_versions 3, 4\nlistener ${c} 127.0.0.1\n`
      )
      const v5Only = `mqtt://127.0.0.1:${a}`
      const v3Only = `mqtt://127.0.0.1:${b}`
      expect(yield* refusal(v5Only, { protocolVersion: 4 })).toBe(1)
      expect(yield* refusal(v5Only, { protocolVersion: 3, protocolId: "MQIsdp" })).toBe(1)
      yield* connectCollecting(v5Only, { protocolVersion: 5 })
      expect(yield* refusal(v3Only, { protocolVersion: 5 })).toBe(0x84)
      yield* connectCollecting(v3Only, { protocolVersion: 4 })
      yield* connectCollecting(v3Only, { protocolVersion: 3, protocolId: "MQIsdp" })
      const cli = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(a), "-V", "mqttv311", "-t", "t", "-m", "m"])
      expect(cli.code).not.toBe(0)
      expect(cli.stderr).toContain("unacceptable protocol version")
      // a listener without the option serves every version
      for (const protocolVersion of [3, 4, 5] as const) {
        yield* connectCollecting(`mqtt://127.0.0.1:${c}`, { protocolVersion, ...(protocolVersion === 3 ? { protocolId: "MQIsdp" } : {}) })
      }
    })
  )

  it.scopedLive("listener_allow_anonymous and listener_auto_id_prefix: one listener's own values, without per_listener_settings", () =>
    Effect.gen(function* () {
      const [a, b] = yield* freePorts(2)
      yield* brokerFrom(
        `allow_anonymous false\nauto_id_prefix global-\nlistener ${a} 127.0.0.1\nlistener ${b} 127.0.0.1\nlistener_allow_anonymous true\nlistener_auto_id_prefix local-\n`
      )
      expect(yield* refusal(`mqtt://127.0.0.1:${a}`, { clientId: "anon-a" })).toBe(5)
      const local = yield* connectCollecting(`mqtt://127.0.0.1:${b}`, { clientId: "", protocolVersion: 5 })
      expect(local.connack.properties?.assignedClientIdentifier).toMatch(/^local-/)
      // and the reverse: a broker that allows anonymous clients, one listener that does not
      const [c, d] = yield* freePorts(2)
      yield* brokerFrom(`allow_anonymous true\nlistener ${c} 127.0.0.1\nlistener ${d} 127.0.0.1\nlistener_allow_anonymous false\n`)
      const open = yield* connectCollecting(`mqtt://127.0.0.1:${c}`, { clientId: "", protocolVersion: 5 })
      expect(open.connack.properties?.assignedClientIdentifier).toMatch(/^auto-/)
      expect(yield* refusal(`mqtt://127.0.0.1:${d}`, { protocolVersion: 5 })).toBe(0x87)
    })
  )

  it.scopedLive("global_max_connections counts the connections of every listener", () =>
    Effect.gen(function* () {
      const [a, b] = yield* freePorts(2)
      yield* brokerFrom(`allow_anonymous true\nglobal_max_connections 2\nlistener ${a} 127.0.0.1\nlistener ${b} 127.0.0.1\n`)
      const one = yield* connectClient(`mqtt://127.0.0.1:${a}`)
      const two = yield* connectClient(`mqtt://127.0.0.1:${b}`)
      const third = yield* rawClient(a)
      yield* third.waitClosed()
      const fourth = yield* rawClient(b)
      yield* fourth.waitClosed()
      // a connection that ends makes room
      yield* Effect.promise(() => two.endAsync())
      yield* waitFor(() => !two.connected, "the second client gone")
      const again = yield* Effect.retry(connectClient(`mqtt://127.0.0.1:${b}`), { times: 20 })
      expect(again.connected && one.connected).toBe(true)
    })
  )

  it.scopedLive("global_max_clients counts sessions, offline ones included; a client resuming its own session gets in", () =>
    Effect.gen(function* () {
      const [a] = yield* freePorts(1)
      const broker = yield* brokerFrom(`allow_anonymous true\nglobal_max_clients 2\nlistener ${a} 127.0.0.1\n`)
      const url = `mqtt://127.0.0.1:${a}`
      const kept = yield* connectCollecting(url, { clientId: "kept", clean: false })
      yield* Effect.promise(() => kept.client.endAsync())
      yield* waitFor(() => !broker.core.attached.has("kept") && broker.core.sessions.has("kept"), "the session kept offline")
      yield* connectCollecting(url, { clientId: "live" })
      // two sessions: a third client is refused, 0x89 Server busy (v5) / 0x03 Server unavailable (3.1.1)
      expect(yield* refusal(url, { clientId: "third", protocolVersion: 5 })).toBe(0x89)
      expect(yield* refusal(url, { clientId: "third" })).toBe(3)
      // the offline session's own client comes back
      const back = yield* connectCollecting(url, { clientId: "kept", clean: false })
      expect(back.sessionPresent).toBe(true)
    })
  )
  it.scopedLive("max_topic_alias_broker: the aliases the broker gives one v5 client's PUBLISHes, at most the client's own maximum; 10 without it", () =>
    Effect.gen(function* () {
      const [a, b, c] = yield* freePorts(3)
      yield* brokerFrom(`allow_anonymous true\nlistener ${a} 127.0.0.1\nmax_topic_alias_broker 2\nlistener ${b} 127.0.0.1\nmax_topic_alias_broker 0\nlistener ${c} 127.0.0.1\n`)
      /** the topic and alias of each PUBLISH as it came off the wire, for 12 topics sent twice */
      const wire = (port: number) =>
        Effect.gen(function* () {
          const sub = yield* connectClient(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, properties: { topicAliasMaximum: 100 } })
          const seen: Array<[string, number | undefined]> = []
          sub.on("packetreceive", (p) => {
            if (p.cmd === "publish") seen.push([p.topic, p.properties?.topicAlias])
          })
          yield* subscribe(sub, "al/#", { qos: 0 })
          const pub = yield* connectClient(`mqtt://127.0.0.1:${port}`)
          const topics = Array.from({ length: 12 }, (_, i) => `al/${i}`)
          for (const t of [...topics, ...topics]) yield* publish(pub, t, "x")
          yield* waitFor(() => seen.length === 24, "24 deliveries")
          return seen
        })
      const two = yield* wire(a)
      expect(two.slice(0, 3)).toEqual([["al/0", 1], ["al/1", 2], ["al/2", undefined]])
      expect(two.slice(12, 15)).toEqual([["", 1], ["", 2], ["al/2", undefined]])
      expect((yield* wire(b)).every(([, alias]) => alias === undefined)).toBe(true)
      const ten = yield* wire(c)
      expect(ten.filter(([, alias]) => alias !== undefined).length).toBe(20) // 10 topics, twice
      expect(ten[10]).toEqual(["al/10", undefined])
      expect(ten[12 + 9]).toEqual(["", 10])
    })
  )
  it.scopedLive("websockets_origin: an upgrade with another Origin is refused (403); one without an Origin, or a listed one, connects; a reload changes the list", () =>
    Effect.gen(function* () {
      const [a] = yield* freePorts(1)
      const conf = (origins: ReadonlyArray<string>) =>
        `allow_anonymous true\nlistener ${a} 127.0.0.1\nprotocol websockets\n${origins.map((o) => `websockets_origin ${o}\n`).join("")}`
      const broker = yield* brokerFrom(conf(["https://app.example", "http://localhost:8080"]))
      /** the upgrade's outcome as a WebSocket client sees it: "open" or the HTTP status (MQTT.js only reports a close) */
      const upgrade = (origin: string | undefined) =>
        Effect.async<string | number>((resume) => {
          const ws = new WebSocket(`ws://127.0.0.1:${a}`, "mqtt", origin === undefined ? {} : { origin })
          ws.on("open", () => {
            ws.terminate()
            resume(Effect.succeed("open"))
          })
          ws.on("unexpected-response", (_req, res) => {
            ws.terminate()
            resume(Effect.succeed(res.statusCode ?? 0))
          })
          ws.on("error", () => {})
        })
      expect(yield* upgrade("https://app.example")).toBe("open")
      expect(yield* upgrade("http://localhost:8080")).toBe("open")
      expect(yield* upgrade(undefined)).toBe("open")
      expect(yield* upgrade("https://evil.example")).toBe(403)
      expect(yield* upgrade("https://app.example.evil")).toBe(403)
      // an MQTT client through a listed Origin
      yield* connectClient(`ws://127.0.0.1:${a}`, { wsOptions: { origin: "https://app.example" } })
      // SIGHUP: the listener stays, its list is the new one
      const next = yield* parseConfigText(conf(["https://evil.example"]), "test.conf").pipe(Effect.orDie)
      yield* broker.reload(brokerOptionsFromConfig(next))
      expect(yield* upgrade("https://evil.example")).toBe("open")
      expect(yield* upgrade("https://app.example")).toBe(403)
    })
  )
})
