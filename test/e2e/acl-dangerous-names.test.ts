/**
 * An acl_file with `pattern` lines and a client whose username or client id holds `+` or `#`: the
 * patterns deny it everything (a `%u` / `%c` substitution would otherwise be a wildcard), and each
 * denial logs security_default.c's notice, `ACL denying access to client with dangerous username
 * "..."` (the username is looked at first) or `... dangerous client id "..."`. The same clients
 * against Debian's Mosquitto 2.0.11 and against the broker composed as the daemon composes it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { MqttClient } from "mqtt"
import { Broker, brokerOptionsFromConfig } from "../../src/Broker.js"
import { parseConfigText } from "../../src/config/Config.js"
import { Log } from "../../src/log/Log.js"
import { layerFromConfig, optionsFromConfig } from "../../src/security/Auth.js"
import { freePort, startMosquitto } from "../support/processes.js"
import { collect, connectClient, publish, settle, subscribe, waitFor } from "./harness.js"

/** anonymous clients read everything under room/; every client may write its own room/<client id>/ */
const ACL = "topic read room/#\npattern readwrite room/%c/#\n"

/** The daemon's composition: config text → security layer → Broker; its log kept in memory. */
const midge = (aclFile: string) =>
  Effect.gen(function* () {
    const port = yield* freePort
    const config = yield* parseConfigText(`listener ${port} 127.0.0.1\nallow_anonymous true\nacl_file ${aclFile}\n`, "test.conf").pipe(Effect.orDie)
    const log = new Log(["all"], [], false, 500)
    const security = yield* Layer.build(layerFromConfig(optionsFromConfig(config))).pipe(Effect.orDie)
    yield* Broker.make(brokerOptionsFromConfig(config, log)).pipe(Effect.provide(security), Effect.orDie)
    return { port, lines: () => log.recent.join("\n") }
  })

const notices = (log: string): Array<string> =>
  log
    .split("\n")
    .map((l) => l.replace(/^\d+: /, ""))
    .filter((l) => l.startsWith("ACL denying access"))

/** The same clients against the broker on `port`; what the anonymous watcher of room/# received. */
const clients = (port: number, lines: () => string) =>
  Effect.gen(function* () {
    const url = `mqtt://127.0.0.1:${port}`
    const watcher = yield* connectClient(url, { clientId: "watch" })
    const got = collect(watcher)
    yield* subscribe(watcher, "room/#")
    const publishAs = (options: { clientId: string; username?: string }, topic: string) =>
      Effect.gen(function* () {
        const c: MqttClient = yield* connectClient(url, options)
        // 3.1.1: a denied PUBLISH is acknowledged all the same, and dropped
        yield* publish(c, topic, "x", { qos: 1 })
        yield* Effect.promise(() => c.endAsync())
      })
    // username a+b: room/u2/# would be theirs by the pattern; twice, a notice each time
    yield* publishAs({ clientId: "u2", username: "a+b" }, "room/u2/x")
    yield* publishAs({ clientId: "u2", username: "a+b" }, "room/u2/y")
    // client id c#1 (a username without + or #)
    yield* publishAs({ clientId: "c#1", username: "ok" }, "room/x")
    // both dangerous: the username is named
    yield* publishAs({ clientId: "c#2", username: "a+b" }, "room/z")
    // a client with a plain name is served by the same pattern
    yield* publishAs({ clientId: "u3" }, "room/u3/x")
    yield* waitFor(() => got.length >= 1, "the allowed message")
    yield* waitFor(() => notices(lines()).length >= 4, "the notices")
    yield* settle(100)
    yield* Effect.promise(() => watcher.endAsync())
    return got.map((m) => m.topic)
  })

describe("acl_file patterns and dangerous names", () => {
  it.scopedLive("each denial logs Mosquitto's notice; the publish is dropped; the same lines as Mosquitto 2.0.11", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-acl-danger-"))
      const aclFile = path.join(dir, "acl")
      fs.writeFileSync(aclFile, ACL)
      fs.chmodSync(aclFile, 0o644)
      const mosquitto = yield* startMosquitto(["allow_anonymous true", `acl_file ${aclFile}`])
      const theirs = yield* clients(mosquitto.port, mosquitto.log)
      const m = yield* midge(aclFile)
      const received = yield* clients(m.port, m.lines)
      expect(received).toEqual(["room/u3/x"])
      expect(received).toEqual(theirs)
      const expected = [
        'ACL denying access to client with dangerous username "a+b"',
        'ACL denying access to client with dangerous username "a+b"',
        'ACL denying access to client with dangerous client id "c#1"',
        'ACL denying access to client with dangerous username "a+b"'
      ]
      expect(notices(mosquitto.log())).toEqual(expected)
      expect(notices(m.lines())).toEqual(expected)
    })
  )

  it.scopedLive("Midge's SUBSCRIBE check (acl_subscribe_check read-access): refused, with the notice", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-acl-danger-"))
      const aclFile = path.join(dir, "acl")
      fs.writeFileSync(aclFile, ACL)
      const m = yield* midge(aclFile)
      const c = yield* connectClient(`mqtt://127.0.0.1:${m.port}`, { clientId: "u4", username: "a+b" })
      // MQTT.js rejects a SUBACK with a refusal in it, the packet attached
      const refused = yield* Effect.flip(Effect.tryPromise({ try: () => c.subscribeAsync("room/u4/#", { qos: 1 }), catch: (e) => e as { packet?: { granted?: Array<number> } } }))
      expect(refused.packet?.granted).toEqual([0x80])
      expect(notices(m.lines())).toEqual(['ACL denying access to client with dangerous username "a+b"'])
    })
  )
})
