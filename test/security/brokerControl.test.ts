/**
 * Mosquitto 2.1's `enable_control_api` and `$CONTROL/broker/v1`
 * (src/security/brokerControl.ts), end to end: a broker from mosquitto.conf
 * text through the daemon's path (parseConfigText → brokerOptionsFromConfig
 * → Broker.make; with a `plugin` line, DynamicSecurity's layer and handler as
 * src/daemon.ts wires them), MQTT.js clients on real sockets. The envelope's
 * errors and listListeners as in Mosquitto's test/broker/17-control-list-listeners.py,
 * listPlugins as in 17-control-list-plugins.py; the ACL in front; the option
 * off; and a reload turning it on and off as SIGHUP does (`broker.reload`).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Option } from "effect"
import type { IClientOptions } from "mqtt"
import { Broker, brokerOptionsFromConfig, type BrokerService } from "../../src/Broker.js"
import { type BrokerConfig, parseConfigText } from "../../src/config/Config.js"
import { Log } from "../../src/log/Log.js"
import { BROKER_CONTROL_RESPONSE_TOPIC, BROKER_CONTROL_TOPIC } from "../../src/security/brokerControl.js"
import { layerFromConfig as fileSecurityFromConfig, optionsFromConfig } from "../../src/security/Auth.js"
import { DynamicSecurity, layerFromConfig as dynsecLayerFromConfig } from "../../src/security/DynamicSecurity.js"
import { collect, connectClient, publish, settle, startBroker, subscribe, waitFor } from "../e2e/harness.js"
import { freePort } from "../support/processes.js"
import { makePki } from "../transport/fixtures.js"
import { admin, initFile, publishCode, tmpDir } from "./dynsec/harness.js"

const freePorts = (n: number) => Effect.replicateEffect(freePort, n)

const configFrom = (text: string) => parseConfigText(text, "test.conf").pipe(Effect.orDie)

/** The broker a mosquitto.conf asks for, with its security, as src/daemon.ts builds them (dynamic security when a `plugin` line loads it). */
const brokerFrom = (text: string) =>
  Effect.gen(function* () {
    const config = yield* configFrom(text)
    const log = new Log(["all"], [], false, 500)
    const dynsec = dynsecLayerFromConfig(config)
    if (Option.isNone(dynsec)) {
      const security = yield* Layer.build(fileSecurityFromConfig(optionsFromConfig(config))).pipe(Effect.orDie)
      const broker = yield* Broker.make(brokerOptionsFromConfig(config, log)).pipe(Effect.provide(security), Effect.orDie)
      return { broker, log, config }
    }
    const security = yield* Layer.build(dynsec.value).pipe(Effect.orDie)
    const broker = yield* Broker.make(brokerOptionsFromConfig(config, log)).pipe(Effect.provide(security), Effect.orDie)
    // $CONTROL/dynamic-security/v1, as the daemon starts it
    yield* DynamicSecurity.start.pipe(Effect.provide(Context.add(security, Broker, broker)))
    return { broker, log, config }
  })

type Response = Record<string, unknown>

/** A client subscribed to `$CONTROL/broker/#` (as Mosquitto's test) that sends requests and reads the next response. */
const controller = (url: string, options: IClientOptions = {}) =>
  Effect.gen(function* () {
    const client = yield* connectClient(url, { protocolVersion: 5, clientId: "ctl", ...options })
    const got = collect(client)
    yield* subscribe(client, "$CONTROL/broker/#", { qos: 1 })
    const request = (payload: string | object) =>
      Effect.gen(function* () {
        const before = got.length
        yield* publish(client, BROKER_CONTROL_TOPIC, typeof payload === "string" ? payload : JSON.stringify(payload), { qos: 1 })
        yield* waitFor(() => got.length > before, `a response to ${JSON.stringify(payload)}`)
        expect(got[before]).toMatchObject({ topic: BROKER_CONTROL_RESPONSE_TOPIC, qos: 0, retain: false })
        return (JSON.parse(got[before].payload) as { responses: Array<Response> }).responses
      })
    /** A request that gets no response (a marker message sent after it arrives, nothing else does); its PUBACK's reason code. */
    const unanswered = (payload: object) =>
      Effect.gen(function* () {
        const before = got.length
        yield* subscribe(client, "marker", { qos: 1 })
        const code = yield* publishCode(client, BROKER_CONTROL_TOPIC, JSON.stringify(payload))
        yield* publish(client, "marker", "after", { qos: 1 })
        yield* waitFor(() => got.some((m, i) => i >= before && m.topic === "marker"), "the marker")
        yield* settle(150)
        expect(got.slice(before).map((m) => m.topic)).toEqual(["marker"])
        return code
      })
    return { client, got, request, unanswered }
  })

const listListeners = { commands: [{ command: "listListeners", correlationData: "m3CtYVnySLCOwnHzITSeowvgla0InV4G" }] }

describe("$CONTROL/broker/v1 with enable_control_api true", () => {
  it.scopedLive("the envelope's errors as Mosquitto's 17-control-list-listeners.py; listListeners describes TCP, WebSocket, TLS and Unix socket listeners in order", () =>
    Effect.gen(function* () {
      const [plain, ws, tls, wss] = yield* freePorts(4)
      const pki = makePki()
      const sock = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "midge-control-")), "mqtt.sock")
      const { log } = yield* brokerFrom(
        "enable_control_api true\nallow_anonymous true\n" +
          `listener ${plain} 127.0.0.1\nprotocol mqtt\n` +
          `listener ${ws}\nprotocol websockets\n` +
          `listener ${tls}\ncertfile ${pki.serverCert}\nkeyfile ${pki.serverKey}\n` +
          `listener ${wss} 127.0.0.1\nprotocol websockets\ncertfile ${pki.serverCert}\nkeyfile ${pki.serverKey}\n` +
          `listener 0 ${sock}\n`
      )
      const c = yield* controller(`mqtt://127.0.0.1:${plain}`)
      const error = (command: string, message: string) => [{ command, error: message }]

      expect(yield* c.request("not valid json")).toEqual(error("Unknown command", "Payload not valid JSON"))
      expect(yield* c.request("{}")).toEqual(error("Unknown command", "Invalid/missing commands"))
      expect(yield* c.request({ commands: ["command"] })).toEqual(error("Unknown command", "Command not an object"))
      expect(yield* c.request({ commands: [{}] })).toEqual(error("Unknown command", "Missing command"))
      expect(yield* c.request({ commands: [{ command: "unknown command" }] })).toEqual(error("unknown command", "Unknown command"))
      expect(yield* c.request({ commands: [{ command: "listListeners", correlationData: true }] })).toEqual(error("listListeners", "Invalid correlationData data type."))

      const listeners = [
        { port: plain, protocol: "mqtt", "bind-address": "127.0.0.1", tls: false },
        { port: ws, protocol: "mqtt+websockets", tls: false },
        { port: tls, protocol: "mqtt", tls: true },
        { port: wss, protocol: "mqtt+websockets", "bind-address": "127.0.0.1", tls: true },
        { port: 0, protocol: "mqtt", "socket-path": sock, tls: false }
      ]
      expect(yield* c.request(listListeners)).toEqual([
        { command: "listListeners", data: { listeners }, correlationData: "m3CtYVnySLCOwnHzITSeowvgla0InV4G" }
      ])
      // Mosquitto's key order too
      expect(Object.keys((yield* c.request(listListeners))[0])).toEqual(["command", "data", "correlationData"])
      expect(log.recent).toContain("Broker: ctl/(null) | listListeners")

      // the same answers to a client on the Unix socket, with a username
      const u = yield* controller("mqtt://localhost", { unixSocket: true, path: sock, clientId: "over-unix", username: "alice" })
      expect((yield* u.request(listListeners))[0]).toMatchObject({ data: { listeners } })
      expect(log.recent).toContain("Broker: over-unix/alice | listListeners")
      // only responses were seen: the requests are not routed to the subscribers of $CONTROL/broker/#
      expect(new Set([...c.got, ...u.got].map((m) => m.topic))).toEqual(new Set([BROKER_CONTROL_RESPONSE_TOPIC]))
    })
  )

  it.scopedLive("commands in order, names whatever their case; an unknown one is answered and the next runs; a malformed element or a bad correlationData stops the request", () =>
    Effect.gen(function* () {
      const [port] = yield* freePorts(1)
      yield* brokerFrom(`enable_control_api true\nallow_anonymous true\nlistener ${port} 127.0.0.1\n`)
      const c = yield* controller(`mqtt://127.0.0.1:${port}`)
      const plugins = { command: "listPlugins", data: { plugins: [] } }
      expect(
        yield* c.request({
          commands: [
            { command: "nope", correlationData: "1" },
            { command: "LISTPLUGINS", correlationData: "2" },
            { command: "listplugins" }
          ]
        })
      ).toEqual([{ command: "nope", error: "Unknown command", correlationData: "1" }, { ...plugins, correlationData: "2" }, plugins])
      // Mosquitto 2.1 keeps the last correlationData for an element without a usable name, and stops there
      expect(yield* c.request({ commands: [{ command: "listPlugins", correlationData: "a" }, 7, { command: "listPlugins" }] })).toEqual([
        { ...plugins, correlationData: "a" },
        { command: "Unknown command", error: "Command not an object", correlationData: "a" }
      ])
      expect(yield* c.request({ commands: [{ command: "listPlugins" }, { command: 1 }, { command: "listPlugins" }] })).toEqual([
        plugins,
        { command: "Unknown command", error: "Missing command" }
      ])
      expect(yield* c.request({ commands: [{ command: "listPlugins" }, { command: "listListeners", correlationData: 5 }, { command: "listPlugins" }] })).toEqual([
        plugins,
        { command: "listListeners", error: "Invalid correlationData data type." }
      ])
      expect(yield* c.request({ commands: [] })).toEqual([])
    })
  )

  it.scopedLive("listPlugins: none without a plugin; Midge's dynamic security as Mosquitto's plugin names itself, once the ACLs let the client send", () =>
    Effect.gen(function* () {
      const [port] = yield* freePorts(1)
      const file = initFile(tmpDir())
      const { broker } = yield* brokerFrom(
        `enable_control_api true\nplugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file ${file}\nlistener ${port} 127.0.0.1\n`
      )
      const url = `mqtt://127.0.0.1:${port}`
      const a = yield* admin(url)
      // dynsec init's admin role has no ACL for $CONTROL/broker/#: the request is refused before the handler
      expect(yield* publishCode(a.client, BROKER_CONTROL_TOPIC, JSON.stringify({ commands: [{ command: "listPlugins" }] }))).toBe(0x87)
      for (const [acltype, topic] of [["publishClientSend", BROKER_CONTROL_TOPIC], ["publishClientReceive", "$CONTROL/broker/#"], ["subscribePattern", "$CONTROL/broker/#"]]) {
        expect(yield* a.run({ command: "addRoleACL", rolename: "admin", acltype, topic, allow: true })).toEqual({ command: "addRoleACL" })
      }
      const c = yield* controller(url, { username: "admin", password: "adminpw" })
      expect(yield* c.request({ commands: [{ command: "listPlugins", correlationData: "p" }] })).toEqual([
        { command: "listPlugins", data: { plugins: [{ name: "dynamic-security", "control-endpoints": ["$CONTROL/dynamic-security/v1"] }] }, correlationData: "p" }
      ])
      expect(broker.core.log.recent).toContain("Broker: ctl/admin | listPlugins")

      // without a plugin line: an empty list
      const [other] = yield* freePorts(1)
      yield* brokerFrom(`enable_control_api true\nallow_anonymous true\nlistener ${other} 127.0.0.1\n`)
      const d = yield* controller(`mqtt://127.0.0.1:${other}`)
      expect(yield* d.request({ commands: [{ command: "listPlugins" }] })).toEqual([{ command: "listPlugins", data: { plugins: [] } }])
    })
  )

  it.scopedLive("only clients the ACL lets publish on $CONTROL/broker/v1 send commands (acl_file)", () =>
    Effect.gen(function* () {
      const [port] = yield* freePorts(1)
      const acl = path.join(tmpDir(), "acl")
      fs.writeFileSync(acl, "topic read $CONTROL/broker/#\ntopic write marker\ntopic read marker\nuser admin\ntopic readwrite $CONTROL/broker/#\n")
      yield* brokerFrom(`enable_control_api true\nallow_anonymous true\nacl_file ${acl}\nlistener ${port} 127.0.0.1\n`)
      const url = `mqtt://127.0.0.1:${port}`
      const anonymous = yield* controller(url, { clientId: "anon" })
      // v5 PUBACK 0x87, and no response
      expect(yield* anonymous.unanswered(listListeners)).toBe(0x87)
      const allowed = yield* controller(url, { clientId: "admin-1", username: "admin" })
      expect((yield* allowed.request(listListeners))[0]).toMatchObject({ command: "listListeners" })
      // the response goes to every client allowed to read it, as Mosquitto's
      yield* waitFor(() => anonymous.got.some((m) => m.topic === BROKER_CONTROL_RESPONSE_TOPIC), "the response to the anonymous subscriber")
    })
  )

  it.scopedLive("an embedded broker with settings.enableControlApi: listeners on port 0 are listed with the port they got", () =>
    Effect.gen(function* () {
      const b = yield* startBroker({ settings: { enableControlApi: true } })
      const c = yield* controller(b.url)
      expect(yield* c.request({ commands: [{ command: "listListeners" }] })).toEqual([
        { command: "listListeners", data: { listeners: [{ port: b.port, protocol: "mqtt", "bind-address": "127.0.0.1", tls: false }] } }
      ])
    })
  )
})

describe("enable_control_api false (the default)", () => {
  it.scopedLive("a request gets no response, is acknowledged with success and reaches no subscriber of $CONTROL/broker/v1", () =>
    Effect.gen(function* () {
      const [port] = yield* freePorts(1)
      const { config } = yield* brokerFrom(`allow_anonymous true\nlistener ${port} 127.0.0.1\n`)
      expect(config.enableControlApi).toBe(false)
      const c = yield* controller(`mqtt://127.0.0.1:${port}`)
      yield* subscribe(c.client, BROKER_CONTROL_TOPIC, { qos: 1 })
      // acknowledged with success, as any $CONTROL/ topic without a handler
      expect(yield* c.unanswered(listListeners)).toBe(0)
    })
  )
})

describe("reload (SIGHUP: the daemon's broker.reload(brokerOptionsFromConfig(next)))", () => {
  it.scopedLive("turning enable_control_api on registers the handler, off unregisters it; listListeners follows the listeners a reload opens", () =>
    Effect.gen(function* () {
      const [port, added] = yield* freePorts(2)
      const base = `allow_anonymous true\nlistener ${port} 127.0.0.1\n`
      const { broker, log } = yield* brokerFrom(base)
      const reload = (b: BrokerService, text: string) =>
        Effect.flatMap(configFrom(text), (config: BrokerConfig) => Effect.orDie(b.reload(brokerOptionsFromConfig(config, log))))
      const c = yield* controller(`mqtt://127.0.0.1:${port}`)
      expect(yield* c.unanswered(listListeners)).toBe(0)

      yield* reload(broker, `enable_control_api true\n${base}listener ${added}\nprotocol websockets\n`)
      expect((yield* c.request(listListeners))[0]).toEqual({
        command: "listListeners",
        data: { listeners: [{ port, protocol: "mqtt", "bind-address": "127.0.0.1", tls: false }, { port: added, protocol: "mqtt+websockets", tls: false }] },
        correlationData: listListeners.commands[0].correlationData
      })
      // a reload that keeps it on keeps one handler: one response per request
      yield* reload(broker, `enable_control_api true\n${base}`)
      expect(yield* c.request({ commands: [{ command: "listListeners" }] })).toEqual([
        { command: "listListeners", data: { listeners: [{ port, protocol: "mqtt", "bind-address": "127.0.0.1", tls: false }] } }
      ])
      yield* settle(100)
      expect(c.got.length).toBe(2 + 1) // the marker of the first check and the two responses

      yield* reload(broker, base)
      expect(yield* c.unanswered(listListeners)).toBe(0)
    })
  )
})
