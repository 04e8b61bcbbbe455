/**
 * The library as an application sees it: everything imported from the package's entry point
 * (src/index.ts, `import ... from "midge"`), the broker run as a Layer, authentication and
 * authorisation plugged in as services of the application's own, or Mosquitto's file-based
 * security read from a mosquitto.conf — and real MQTT.js clients on a real socket.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  Authentication,
  Authorization,
  Broker,
  brokerOptionsFromConfig,
  parseConfigText,
  SecurityFiles,
  securityLayerFromConfig,
  securityOptionsFromConfig,
  type ClientAcl
} from "../../src/index.js"
import { collect, connectClient, publish, settle, subscribe, waitFor } from "./harness.js"

/** The services of docs/security.md's example: one password, devices write only under their own id. */
const MyAuthentication = Authentication.layer((request) =>
  Effect.succeed(
    request.username === "admin" && request.password?.toString() === "s3cret"
      ? { ok: true as const, username: "admin" }
      : request.username === undefined
        ? { ok: true as const, username: undefined }
        : { ok: false as const, reason: "not-authorised" as const }
  )
)
const MyAuthorization = Authorization.layer(
  (client): ClientAcl => ({
    canPublish: (topic) => client.username === "admin" || topic.startsWith(`devices/${client.clientId}/`),
    canSubscribe: () => true,
    canReceive: (topic) => !topic.startsWith("private/") || client.username === "admin"
  })
)
const MySecurity = Layer.mergeAll(MyAuthentication, MyAuthorization, Layer.succeed(SecurityFiles, SecurityFiles.none))

const brokerUrl = Effect.map(Broker, (broker) => `mqtt://127.0.0.1:${broker.listeners[0].port}`)

describe("embedding: Midge as a Layer with the application's own security", () => {
  it.scopedLive("a wrong password is refused; the ACL service decides what each client may publish and receive", () =>
    Effect.gen(function* () {
      const url = yield* brokerUrl
      const refused = yield* Effect.either(connectClient(url, { clientId: "intruder", username: "admin", password: "guess" }))
      expect(refused._tag).toBe("Left")
      expect(String(refused._tag === "Left" ? refused.left.message : "")).toMatch(/Not authorized|Bad username or password/i)

      const admin = yield* connectClient(url, { clientId: "ops", username: "admin", password: "s3cret" })
      const adminGot = collect(admin)
      yield* subscribe(admin, "#", { qos: 1 })
      const device = yield* connectClient(url, { clientId: "d1" })
      const deviceGot = collect(device)
      yield* subscribe(device, "private/#", { qos: 1 })

      yield* publish(device, "devices/d1/temp", "21", { qos: 1 })
      yield* publish(device, "devices/d2/temp", "spoofed", { qos: 1 })
      yield* publish(admin, "private/note", "for admins", { qos: 1 })
      yield* waitFor(() => adminGot.length === 2, `the admin's two messages (got ${adminGot.map((m) => m.topic)})`)
      yield* settle()
      expect(adminGot.map((m) => [m.topic, m.payload])).toEqual([
        ["devices/d1/temp", "21"],
        ["private/note", "for admins"]
      ])
      expect(deviceGot).toEqual([])
    }).pipe(Effect.provide(Broker.layer({ listeners: [{ port: 0, host: "127.0.0.1" }] }).pipe(Layer.provide(MySecurity))))
  )
})

describe("embedding: Midge from a mosquitto.conf, its file-based security included", () => {
  it.scopedLive("brokerOptionsFromConfig and securityLayerFromConfig give the daemon's listener and acl_file", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-embed-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const acl = path.join(dir, "acl")
      fs.writeFileSync(acl, "topic read public/#\npattern write public/%c/#\n")
      const config = yield* parseConfigText(`listener 1883 127.0.0.1\nallow_anonymous true\nacl_file ${acl}\nmax_inflight_messages 5\n`, "embedded.conf")
      const options = brokerOptionsFromConfig(config)
      expect(options.listeners?.map((l) => [l.port, l.host])).toEqual([[1883, "127.0.0.1"]])
      expect(options.settings?.maxInflightMessages).toBe(5)
      // the same broker on a free port (1883 may be taken on the machine running the tests)
      const broker = yield* Broker.make({ ...options, listeners: [{ ...options.listeners![0], port: 0 }] }).pipe(
        Effect.provide(securityLayerFromConfig(securityOptionsFromConfig(config)))
      )
      const url = `mqtt://127.0.0.1:${broker.listeners[0].port}`

      const reader = yield* connectClient(url, { clientId: "reader" })
      const got = collect(reader)
      yield* subscribe(reader, "public/#", { qos: 1 })
      const writer = yield* connectClient(url, { clientId: "w1" })
      yield* publish(writer, "public/w1/hello", "allowed", { qos: 1 })
      yield* publish(writer, "public/w2/hello", "not its own", { qos: 1 })
      yield* waitFor(() => got.length === 1, "the allowed message")
      yield* settle()
      expect(got.map((m) => [m.topic, m.payload])).toEqual([["public/w1/hello", "allowed"]])
    })
  )
})
