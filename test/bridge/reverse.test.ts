/**
 * The other way round: a Debian mosquitto bridging INTO Midge (Midge is the
 * remote broker of a Mosquitto bridge), and Midge bridging to Midge. What a
 * Mosquitto bridge sends a broker (bridge bit, will, retained notification on
 * `$SYS/broker/connection/<id>/state`, subscriptions) must work on Midge.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Bridge } from "../../src/bridge/Bridge.js"
import { Broker } from "../../src/Broker.js"
import { collect, connectClient, publish, settle, startBroker, subscribe, waitFor } from "../e2e/harness.js"
import { bridgesOf, startMosquitto } from "./harness.js"

describe("bridges into Midge", () => {
  it.scopedLive("Debian mosquitto bridging into Midge: both directions with prefixes, its notification and will", () =>
    Effect.gen(function* () {
      const midge = yield* startBroker({ settings: { allowAnonymous: true } })
      const midgeClient = yield* connectClient(midge.url)
      const midgeGot = collect(midgeClient)
      yield* subscribe(midgeClient, ["m/#", "$SYS/broker/connection/#"], { qos: 2 })
      const mosq = yield* startMosquitto([
        "connection tomidge",
        `address 127.0.0.1:${midge.port}`,
        "remote_clientid mosq-bridge",
        "cleansession true",
        "restart_timeout 1",
        'topic fwd/# out 2 "" m/',
        "topic back/# in 1 local/ m/",
        "topic both/# both 1"
      ])
      yield* waitFor(() => midgeGot.some((m) => m.topic === "$SYS/broker/connection/mosq-bridge/state" && m.payload === "1"), "mosquitto's notification", 10_000)
      const mosqClient = yield* connectClient(`mqtt://127.0.0.1:${mosq.port}`)
      const mosqGot = collect(mosqClient)
      yield* subscribe(mosqClient, ["local/#", "both/#"], { qos: 2 })
      yield* settle(300)
      yield* publish(mosqClient, "fwd/x", "from-mosquitto", { qos: 2 })
      yield* publish(midgeClient, "m/back/y", "from-midge", { qos: 1 })
      yield* publish(midgeClient, "both/z", "shared", { qos: 1 })
      yield* waitFor(() => midgeGot.some((m) => m.topic === "m/fwd/x"), "mosquitto -> Midge")
      yield* waitFor(() => mosqGot.some((m) => m.topic === "local/back/y") && mosqGot.some((m) => m.topic === "both/z"), "Midge -> mosquitto")
      expect(midgeGot.find((m) => m.topic === "m/fwd/x")).toMatchObject({ payload: "from-mosquitto", qos: 2 })
      expect(mosqGot.find((m) => m.topic === "local/back/y")).toMatchObject({ payload: "from-midge", qos: 1 })
      // mosquitto's bridge dies: Midge publishes its will, state 0
      yield* mosq.kill
      yield* waitFor(() => midgeGot.filter((m) => m.topic === "$SYS/broker/connection/mosq-bridge/state").map((m) => m.payload).join() === "1,0", "the will on Midge")
    })
  )

  it.scopedLive("Midge bridging to Midge: MQTT 3.1.1 (in and out topics) and MQTT 5 (a both topic, No Local: no echo)", () =>
    Effect.gen(function* () {
      for (const [version, topics] of [
        ["mqttv311", ["topic a/# out 2 l/ r/", "topic b/# in 2 l/ r/"]],
        ["mqttv50", ["topic a/# both 2 l/ r/", "topic b/# both 2 l/ r/"]]
      ] as const) {
        const remote = yield* startBroker({ settings: { allowAnonymous: true } })
        const local = yield* startBroker()
        const bridge = yield* Bridge.make(
          bridgesOf(["connection m2m", `address 127.0.0.1:${remote.port}`, "remote_clientid m2m", `bridge_protocol_version ${version}`, "restart_timeout 1", ...topics].join("\n"))
        ).pipe(Effect.provideService(Broker, local.broker))
        yield* waitFor(() => bridge.status()[0].state === "connected", `the ${version} bridge to connect`, 10_000)
        const remoteClient = yield* connectClient(remote.url)
        const remoteGot = collect(remoteClient)
        yield* subscribe(remoteClient, "r/#", { qos: 2 })
        const localClient = yield* connectClient(local.url)
        const localGot = collect(localClient)
        yield* subscribe(localClient, "l/#", { qos: 2 })
        yield* settle(200)
        yield* publish(localClient, "l/a/out", "1", { qos: 2 })
        yield* publish(remoteClient, "r/b/in", "2", { qos: 2 })
        yield* waitFor(() => remoteGot.length >= 2 && localGot.length >= 2, "both messages on both sides")
        yield* settle(300)
        expect(remoteGot.map((m) => [m.topic, m.qos]).sort()).toEqual([["r/a/out", 2], ["r/b/in", 2]])
        expect(localGot.map((m) => [m.topic, m.qos]).sort()).toEqual([["l/a/out", 2], ["l/b/in", 2]])
      }
    })
  )
})
