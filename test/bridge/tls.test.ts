/**
 * Bridge TLS to a Debian mosquitto TLS listener, with certificates generated
 * by openssl for the test: bridge_cafile / bridge_capath, a client
 * certificate (require_certificate), host name checks and bridge_insecure,
 * an unknown CA, bridge_tls_version, and TLS-PSK (bridge_identity / bridge_psk).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Bridge } from "../../src/bridge/Bridge.js"
import { Broker } from "../../src/Broker.js"
import { collect, connectClient, publish, settle, startBroker, subscribe, waitFor } from "../e2e/harness.js"
import { bridgesOf, makeCertificates, startMosquitto, tempDir } from "./harness.js"

interface ClientCert {
  readonly cert?: Buffer
  readonly key?: Buffer
}

/** A bridge to the TLS listener on `remotePort`; one message each way. */
const roundTrip = (remotePort: number, ca: string, clientCert: ClientCert, lines: ReadonlyArray<string>, host = "localhost") =>
  Effect.gen(function* () {
    const local = yield* startBroker()
    const bridge = yield* Bridge.make(
      bridgesOf(["connection tls", `address ${host}:${remotePort}`, "remote_clientid midge-tls", "restart_timeout 1", "topic up/# out 1", "topic down/# in 1", ...lines].join("\n"))
    ).pipe(Effect.provideService(Broker, local.broker))
    yield* waitFor(() => bridge.status()[0].state === "connected", "the TLS bridge to connect", 10_000)
    const remoteClient = yield* connectClient(`mqtts://localhost:${remotePort}`, { ca: fs.readFileSync(ca), ...clientCert })
    const remoteGot = collect(remoteClient)
    yield* subscribe(remoteClient, "up/#", { qos: 1 })
    const localClient = yield* connectClient(local.url)
    const localGot = collect(localClient)
    yield* subscribe(localClient, "down/#", { qos: 1 })
    yield* settle(200)
    yield* publish(localClient, "up/a", "secret-up", { qos: 1 })
    yield* publish(remoteClient, "down/b", "secret-down", { qos: 1 })
    yield* waitFor(() => remoteGot.length === 1 && localGot.length === 1, "a message each way")
    expect([remoteGot[0].topic, remoteGot[0].payload, localGot[0].topic, localGot[0].payload]).toEqual(["up/a", "secret-up", "down/b", "secret-down"])
    return bridge
  })

describe("bridge TLS to Debian mosquitto", () => {
  it.scopedLive("bridge_cafile + client certificate against require_certificate; by name and by IP address", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const certs = makeCertificates(dir)
      const clientCert = { cert: fs.readFileSync(certs.clientCert), key: fs.readFileSync(certs.clientKey) }
      const remote = yield* startMosquitto([`cafile ${certs.ca}`, `certfile ${certs.cert}`, `keyfile ${certs.key}`, "require_certificate true"])
      const tlsLines = [`bridge_cafile ${certs.ca}`, `bridge_certfile ${certs.clientCert}`, `bridge_keyfile ${certs.clientKey}`]
      yield* roundTrip(remote.port, certs.ca, clientCert, tlsLines)
      yield* roundTrip(remote.port, certs.ca, clientCert, [...tlsLines, "bridge_tls_version tlsv1.3"], "127.0.0.1")
      expect(remote.log()).toContain("New bridge connected")
    })
  )

  it.scopedLive("bridge_capath: every certificate of the directory is trusted", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const certs = makeCertificates(dir)
      const capath = path.join(dir, "capath")
      fs.mkdirSync(capath)
      fs.copyFileSync(certs.otherCa, path.join(capath, "a-other.crt"))
      fs.copyFileSync(certs.ca, path.join(capath, "b-ca.crt"))
      fs.writeFileSync(path.join(capath, "README"), "not a certificate\n")
      const remote = yield* startMosquitto([`certfile ${certs.cert}`, `keyfile ${certs.key}`])
      yield* roundTrip(remote.port, certs.ca, {}, [`bridge_capath ${capath}`])
    })
  )

  it.scopedLive("an unknown CA or a host name mismatch fails the handshake; bridge_insecure skips only the name check", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const certs = makeCertificates(dir)
      const good = yield* startMosquitto([`certfile ${certs.cert}`, `keyfile ${certs.key}`])
      // a server certificate for another name (wrong.example), signed by the test CA
      const wrong = yield* startMosquitto([`certfile ${certs.misnamedCert}`, `keyfile ${certs.misnamedKey}`])
      const local = yield* startBroker()
      const bridge = yield* Bridge.make(
        bridgesOf(
          [
            `connection unknown-ca\naddress localhost:${good.port}\nbridge_cafile ${certs.otherCa}\nrestart_timeout 1\ntopic a out`,
            `connection mismatch\naddress localhost:${wrong.port}\nbridge_cafile ${certs.ca}\nrestart_timeout 1\ntopic a out`,
            `connection insecure\naddress localhost:${wrong.port}\nbridge_cafile ${certs.ca}\nbridge_insecure true\nrestart_timeout 1\ntopic a out`
          ].join("\n")
        )
      ).pipe(Effect.provideService(Broker, local.broker))
      const state = (name: string) => bridge.status().find((s) => s.name === name)!.state
      yield* waitFor(() => state("insecure") === "connected", "the insecure bridge to connect", 10_000)
      yield* waitFor(() => local.log.recent.filter((l) => l.includes("unable to connect")).length >= 2, "two failed handshakes")
      yield* settle(500)
      expect([state("unknown-ca"), state("mismatch")]).not.toContain("connected")
      const log = local.log.recent.join("\n")
      expect(log).toMatch(/Bridge unknown-ca: unable to connect to localhost:\d+: .*(certificate|verify)/i)
      expect(log).toMatch(/Bridge mismatch: unable to connect to localhost:\d+: .*(altnames|host|name)/i)
    })
  )

  it.scopedLive("TLS-PSK: bridge_identity and bridge_psk against a psk_hint listener", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const pskFile = path.join(dir, "psk")
      fs.writeFileSync(pskFile, "midge-bridge:0123456789abcdef0123456789abcdef\n")
      const remote = yield* startMosquitto(["psk_hint test-hint", `psk_file ${pskFile}`, "use_identity_as_username false"])
      const local = yield* startBroker()
      const bridge = yield* Bridge.make(
        bridgesOf(
          [
            "connection psk",
            `address 127.0.0.1:${remote.port}`,
            "remote_clientid midge-psk",
            "bridge_identity midge-bridge",
            "bridge_psk 0123456789abcdef0123456789abcdef",
            "restart_timeout 1",
            "topic psk/# out 1"
          ].join("\n")
        )
      ).pipe(Effect.provideService(Broker, local.broker))
      yield* waitFor(() => bridge.status()[0].state === "connected", "the PSK bridge to connect", 10_000)
      expect(remote.log()).toMatch(/New bridge connected from .* as midge-psk/)
    })
  )
})
