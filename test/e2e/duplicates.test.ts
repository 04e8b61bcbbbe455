/**
 * `allow_duplicate_messages`: what a client subscribed to several filters that
 * match one message receives. Mosquitto 2.0's default (false, Midge's): one
 * copy at the highest of the matching subscriptions' QoS [MQTT-3.3.5-1]; an
 * MQTT 5 client's carries every matching subscription identifier. True: one
 * copy per matching subscription, each at that subscription's QoS and with its
 * identifier, as MQTT also allows. Read from mosquitto.conf and on SIGHUP
 * through the daemon's path (parseConfigText → brokerOptionsFromConfig).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Broker, brokerOptionsFromConfig } from "../../src/Broker.js"
import { parseConfigText } from "../../src/config/Config.js"
import { Log } from "../../src/log/Log.js"
import { freePort } from "../support/processes.js"
import { collect, connectClient, publish, settle, subscribe, waitFor, type Received } from "./harness.js"

const optionsFrom = (text: string) =>
  Effect.gen(function* () {
    const config = yield* parseConfigText(text, "test.conf").pipe(Effect.orDie)
    return brokerOptionsFromConfig(config, new Log(["error"], [], false, 50))
  })

const idsOf = (r: Received): ReadonlyArray<number> => {
  const id = r.properties?.subscriptionIdentifier as number | Array<number> | undefined
  return id === undefined ? [] : Array.isArray(id) ? [...id].sort() : [id]
}

describe("allow_duplicate_messages", () => {
  it.scopedLive("false (the default) gives one copy at the highest QoS, MQTT 5 with every identifier; true gives a copy per subscription; a reload switches", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const conf = (duplicates: boolean | undefined) =>
        `listener ${port} 127.0.0.1\nallow_anonymous true\n${duplicates === undefined ? "" : `allow_duplicate_messages ${duplicates}\n`}`
      const broker = yield* Broker.make(yield* optionsFrom(conf(undefined))).pipe(Effect.orDie)
      const url = `mqtt://127.0.0.1:${port}`

      // a 3.1.1 client: three overlapping subscriptions at QoS 0, 1, 2, and one that does not match
      const v4 = yield* connectClient(url, { clientId: "v4" })
      const got4 = collect(v4)
      for (const [filter, qos] of [["d/#", 0], ["d/+", 1], ["d/x", 2], ["other/#", 2]] as const) yield* subscribe(v4, filter, { qos })
      // an MQTT 5 client: the same three, each with a subscription identifier
      const v5 = yield* connectClient(url, { clientId: "v5", protocolVersion: 5 })
      const got5 = collect(v5)
      for (const [filter, qos, id] of [["d/#", 0, 1], ["d/+", 1, 2], ["d/x", 2, 3]] as const) {
        yield* subscribe(v5, filter, { qos, properties: { subscriptionIdentifier: id } })
      }
      // a client with one matching subscription gets one copy whatever the option
      const single = yield* connectClient(url, { clientId: "single" })
      const gotSingle = collect(single)
      yield* subscribe(single, "d/x", { qos: 1 })
      const pub = yield* connectClient(url, { clientId: "pub" })

      const round = (payload: string) =>
        Effect.gen(function* () {
          yield* publish(pub, "d/x", payload, { qos: 2 })
          yield* waitFor(() => gotSingle.some((r) => r.payload === payload), "the single subscriber's copy")
          yield* settle(300)
          const of = (got: ReadonlyArray<Received>) => got.filter((r) => r.payload === payload)
          return { v4: of(got4), v5: of(got5), single: of(gotSingle) }
        })

      const merged = yield* round("merged")
      expect(merged.v4.map((r) => r.qos)).toEqual([2])
      expect(merged.v5.map((r) => [r.qos, idsOf(r)])).toEqual([[2, [1, 2, 3]]])
      expect(merged.single.length).toBe(1)

      // SIGHUP with allow_duplicate_messages true
      yield* broker.reload(yield* optionsFrom(conf(true)))
      const copies = yield* round("copies")
      expect(copies.v4.map((r) => r.qos).sort()).toEqual([0, 1, 2])
      expect(copies.v5.map((r) => [r.qos, idsOf(r)]).sort()).toEqual([[0, [1]], [1, [2]], [2, [3]]])
      expect(copies.single.length).toBe(1)

      // and back
      yield* broker.reload(yield* optionsFrom(conf(false)))
      const again = yield* round("again")
      expect(again.v4.map((r) => r.qos)).toEqual([2])
      expect(again.v5.length).toBe(1)
    })
  )
})
