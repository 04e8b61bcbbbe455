/**
 * Interoperability with Debian's mosquitto_pub / mosquitto_sub (independent
 * clients) in MQTT 3.1, 3.1.1 and 5.0, at every QoS.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { collect, connectClient, publish, run, spawnScoped, startBroker, subscribe, waitFor } from "./harness.js"

const versions = ["mqttv31", "mqttv311", "mqttv5"] as const

describe("mosquitto_pub / mosquitto_sub against Midge", () => {
  for (const V of versions) {
    for (const qos of [0, 1, 2] as const) {
      it.scopedLive(`${V} QoS ${qos}: mosquitto_pub -> mosquitto_sub`, () =>
        Effect.gen(function* () {
          const { port, broker } = yield* startBroker()
          const subs = broker.stats().subscriptions
          const sub = yield* spawnScoped("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-V", V, "-q", String(qos), "-t", `interop/${V}/#`, "-C", "2", "-W", "10", "-v"])
          yield* waitFor(() => broker.stats().subscriptions === subs + 1, "mosquitto_sub to subscribe")
          for (const m of ["hello", "world"]) {
            const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-V", V, "-q", String(qos), "-t", `interop/${V}/x`, "-m", m])
            expect(r.code).toBe(0)
          }
          yield* waitFor(() => sub.out.exited, "mosquitto_sub to receive 2 messages and exit")
          expect(sub.out.code).toBe(0)
          expect(sub.out.stdout).toBe(`interop/${V}/x hello\ninterop/${V}/x world\n`)
        })
      )
    }

    it.scopedLive(`${V}: retained message for a late mosquitto_sub; MQTT.js sees mosquitto_pub at QoS 2`, () =>
      Effect.gen(function* () {
        const { port, url } = yield* startBroker()
        const js = yield* connectClient(url, { protocolVersion: 5 })
        const got = collect(js)
        yield* subscribe(js, "ret/#", { qos: 2 })
        const r = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-V", V, "-q", "2", "-r", "-t", `ret/${V}`, "-m", "kept"])
        expect(r.code).toBe(0)
        yield* waitFor(() => got.length === 1, "MQTT.js to receive")
        expect(got[0]).toMatchObject({ topic: `ret/${V}`, payload: "kept", qos: 2 })
        const late = yield* run("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-V", V, "-t", `ret/${V}`, "-C", "1", "-W", "5", "-F", "%t %p %r"])
        expect(late.code).toBe(0)
        expect(late.stdout).toBe(`ret/${V} kept 1\n`)
      })
    )
  }

  it.scopedLive("MQTT.js publishes at QoS 1 and 2 to mosquitto_sub -V mqttv5, properties shown", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const sub = yield* spawnScoped("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-V", "mqttv5", "-q", "2", "-t", "js/#", "-C", "2", "-W", "10", "-F", "%t %q %p %C"])
      yield* waitFor(() => broker.stats().subscriptions === 1, "mosquitto_sub to subscribe")
      const js = yield* connectClient(url, { protocolVersion: 5 })
      yield* publish(js, "js/1", "one", { qos: 1, properties: { contentType: "text/x" } })
      yield* publish(js, "js/2", "two", { qos: 2, properties: { contentType: "text/y" } })
      yield* waitFor(() => sub.out.exited, "mosquitto_sub to exit")
      expect(sub.out.stdout).toBe("js/1 1 one text/x\njs/2 2 two text/y\n")
    })
  )

  it.scopedLive("a will of a killed mosquitto_sub is published", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const js = yield* connectClient(url)
      const got = collect(js)
      yield* subscribe(js, "wills/#", { qos: 1 })
      const subs = broker.stats().subscriptions
      const victim = yield* spawnScoped("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-t", "nothing", "--will-topic", "wills/victim", "--will-payload", "killed", "--will-qos", "1"])
      yield* waitFor(() => broker.stats().subscriptions === subs + 1, "the victim to subscribe")
      victim.child.kill("SIGKILL")
      yield* waitFor(() => got.length === 1, "the will")
      expect(got[0]).toMatchObject({ topic: "wills/victim", payload: "killed", qos: 1 })
    })
  )
})
