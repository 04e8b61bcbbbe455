/**
 * Dynamic security test helpers: a Midge broker on 127.0.0.1:0 with
 * DynamicSecurity's layer and command handler, wired as an application
 * would; an admin MQTT.js client that sends commands and waits for the
 * matching response; files made by `midge ctrl dynsec init`'s code.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Effect, Layer, type Scope } from "effect"
import type { IClientOptions, MqttClient } from "mqtt"
import { Broker, type BrokerService } from "../../../src/Broker.js"
import { Log } from "../../../src/log/Log.js"
import { DynamicSecurity, type DynamicSecurityOptions, type DynamicSecurityService, hashNewPassword, REQUEST_TOPIC, RESPONSE_TOPIC } from "../../../src/security/DynamicSecurity.js"
import { initModel } from "../../../src/security/dynsec/ctrl.js"
import { modelText } from "../../../src/security/dynsec/file.js"
import { connectClient, waitFor } from "../../e2e/harness.js"

export const tmpDir = (): string => fs.mkdtempSync(path.join(os.tmpdir(), "midge-dynsec-"))

/** A new file as `dynsec init <file> admin <password>` writes it. */
export const initFile = (dir: string, password = "adminpw", name = "dynsec.json"): string => {
  const file = path.join(dir, name)
  fs.writeFileSync(file, modelText(initModel("admin", hashNewPassword(password))))
  return file
}

export interface DynsecBroker {
  readonly broker: BrokerService
  readonly service: DynamicSecurityService
  readonly port: number
  readonly url: string
  readonly log: Log
}

/** Broker + DynamicSecurity.layer + DynamicSecurity.start, closed with the scope. */
export const startDynsec = (options: DynamicSecurityOptions): Effect.Effect<DynsecBroker, never, Scope.Scope> =>
  Effect.gen(function* () {
    const ctx = yield* Layer.build(DynamicSecurity.layer(options)).pipe(Effect.orDie)
    const log = new Log(["all"], [], false, 1000)
    const broker = yield* Broker.make({ listeners: [{ port: 0, host: "127.0.0.1" }], log }).pipe(Effect.provide(ctx), Effect.orDie)
    yield* DynamicSecurity.start.pipe(Effect.provide(Context.add(ctx, Broker, broker)))
    const port = broker.listeners[0].port
    return { broker, service: Context.get(ctx, DynamicSecurity), port, url: `mqtt://127.0.0.1:${port}`, log }
  })

export type Response = Record<string, any>

export interface Admin {
  readonly client: MqttClient
  /** Sends one request and resolves with its responses (matched by the correlationData of the last command). */
  readonly send: (commands: ReadonlyArray<Record<string, unknown>>) => Effect.Effect<Array<Response>, Error>
  /** One command, its one response. */
  readonly run: (command: Record<string, unknown>) => Effect.Effect<Response, Error>
  /** Sends a raw payload and resolves with the next response. */
  readonly raw: (payload: string | Buffer) => Effect.Effect<Array<Response>, Error>
}

/** An MQTT.js client (v5 by default) logged in as `username`, subscribed to the response topic. */
export const admin = (url: string, username = "admin", password = "adminpw", options: IClientOptions = {}): Effect.Effect<Admin, Error, Scope.Scope> =>
  Effect.gen(function* () {
    const client = yield* connectClient(url, { username, password, protocolVersion: 5, clientId: `admin-${crypto.randomBytes(4).toString("hex")}`, ...options })
    const granted = yield* Effect.tryPromise(() => client.subscribeAsync(RESPONSE_TOPIC, { qos: 1 }))
    if (granted[0].qos >= 0x80) return yield* Effect.fail(new Error(`cannot subscribe to the responses: ${granted[0].qos}`))
    const waiters: Array<(payload: string) => boolean> = []
    client.on("message", (topic, payload) => {
      if (topic !== RESPONSE_TOPIC) return
      const text = payload.toString()
      const i = waiters.findIndex((w) => w(text))
      if (i >= 0) waiters.splice(i, 1)
    })
    const exchange = (payload: string | Buffer, accept: (responses: Array<Response>) => boolean) =>
      Effect.async<Array<Response>, Error>((resume) => {
        const timer = setTimeout(() => resume(Effect.fail(new Error(`no response to ${payload.toString().slice(0, 200)}`))), 5000)
        waiters.push((text) => {
          const responses = JSON.parse(text).responses as Array<Response>
          if (!accept(responses)) return false
          clearTimeout(timer)
          resume(Effect.succeed(responses))
          return true
        })
        client.publish(REQUEST_TOPIC, payload, { qos: 1 })
      })
    let n = 0
    const send = (commands: ReadonlyArray<Record<string, unknown>>) => {
      const tag = `t${++n}`
      const tagged = commands.map((c, i) => (i === commands.length - 1 && c.correlationData === undefined ? { ...c, correlationData: tag } : c))
      const last = tagged[tagged.length - 1]?.correlationData
      return exchange(JSON.stringify({ commands: tagged }), (rs) => rs.length === 0 || rs[rs.length - 1]?.correlationData === last)
    }
    const run = (command: Record<string, unknown>) =>
      Effect.map(send([command]), (rs) => {
        const r = { ...rs[0] }
        delete r.correlationData
        return r
      })
    const raw = (payload: string | Buffer) => exchange(payload, () => true)
    return { client, send, run, raw }
  })

/** SUBSCRIBE and the SUBACK's codes, failures included (MQTT.js's subscribeAsync rejects on any failure). */
export const subscribeCodes = (client: MqttClient, filters: ReadonlyArray<string>, qos: 0 | 1 | 2 = 1): Effect.Effect<Array<number>, Error> =>
  Effect.async<Array<number>, Error>((resume) => {
    client.subscribe(
      filters.map((f) => f),
      { qos },
      (error, granted) => {
        const packet = (error as { packet?: { granted?: Array<number> } } | null | undefined)?.packet
        if (packet?.granted !== undefined) return resume(Effect.succeed(packet.granted))
        if (granted !== undefined) return resume(Effect.succeed(granted.map((g) => g.qos)))
        resume(Effect.fail(error ?? new Error("no SUBACK")))
      }
    )
  })

/** PUBLISH and the PUBACK's reason code (0 when accepted). */
export const publishCode = (client: MqttClient, topic: string, payload: string, qos: 1 | 2 = 1): Effect.Effect<number> =>
  Effect.async<number>((resume) => {
    client.publish(topic, payload, { qos }, (error) => resume(Effect.succeed(error === undefined || error === null ? 0 : ((error as Error & { code?: number }).code ?? -1))))
  })

export { waitFor }
