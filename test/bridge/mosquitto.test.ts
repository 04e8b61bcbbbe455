/**
 * Midge bridging to a real Debian mosquitto (the remote broker), end to end:
 * both directions at QoS 0 / 1 / 2 with topic prefixes, `both` topics without
 * loops, MQTT 3.1 / 3.1.1 / 5, notifications (local retained state, remote
 * retained state and will), reconnection after the remote is killed and
 * restarted, lazy start on `threshold` and stop on `idle_timeout`, `once`,
 * failover between addresses. Real sockets, real time, bounded waits.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { Bridge } from "../../src/bridge/Bridge.js"
import { Broker } from "../../src/Broker.js"
import { collect, connectClient, publish, settle, startBroker, subscribe, type TestBroker, waitFor } from "../e2e/harness.js"
import { bridgesOf, freePort, startMosquitto } from "./harness.js"

const startBridge = (text: string, local?: TestBroker) =>
  Effect.gen(function* () {
    const l = local ?? (yield* startBroker())
    const bridge = yield* Bridge.make(bridgesOf(text)).pipe(Effect.provideService(Broker, l.broker))
    return { local: l, bridge }
  })

const STATE = "$SYS/broker/connection/midge-up/state"

/** mosquitto (log_type all) has taken the bridge's SUBSCRIBE */
const subscribed = (remote: { readonly log: () => string }) =>
  waitFor(() => remote.log().includes("Received SUBSCRIBE from midge-up"), "the bridge's SUBSCRIBE on mosquitto")

const block = (port: number, ...lines: Array<string>) =>
  ["connection up", `address 127.0.0.1:${port}`, "remote_clientid midge-up", "restart_timeout 1", ...lines].join("\n")

describe("Midge bridging to Debian mosquitto", () => {
  it.scopedLive("messages cross both ways at QoS 0, 1 and 2, with local and remote prefixes (mosquitto.conf(5) topic table)", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const { local, bridge } = yield* startBridge(
        block(remote.port, "topic out/# out 2 local/ remote/", "topic in/# in 2 l/ r/", 'topic "" out 1 single/local single/remote', "topic plain/# out 2 \"\" r2/")
      )
      const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const remoteGot = collect(remoteClient)
      yield* subscribe(remoteClient, ["remote/#", "single/#", "r2/#", "$SYS/broker/connection/#"], { qos: 2 })
      const localClient = yield* connectClient(local.url)
      const localGot = collect(localClient)
      yield* subscribe(localClient, "l/#", { qos: 2 })
      yield* waitFor(() => bridge.status()[0].state === "connected", "the bridge to connect")
      yield* waitFor(() => remoteGot.some((m) => m.topic === STATE && m.payload === "1"), "the remote notification")
      yield* subscribed(remote)
      for (const qos of [0, 1, 2] as const) {
        yield* publish(localClient, `local/out/q${qos}`, `to-remote-${qos}`, { qos })
        yield* publish(remoteClient, `r/in/q${qos}`, `to-local-${qos}`, { qos })
      }
      yield* publish(localClient, "single/local", "one", { qos: 1 })
      yield* publish(localClient, "plain/x", "unprefixed", { qos: 1 })
      // a local topic outside every pattern stays local
      yield* publish(localClient, "elsewhere", "no", { qos: 1 })
      const fromLocal = () => remoteGot.filter((m) => !m.topic.startsWith("$SYS"))
      yield* waitFor(() => fromLocal().length === 5, "5 messages on the remote")
      yield* waitFor(() => localGot.length === 3, "3 messages on the local side")
      yield* settle(100)
      expect(fromLocal().map((m) => [m.topic, m.payload, m.qos])).toEqual([
        ["remote/out/q0", "to-remote-0", 0],
        ["remote/out/q1", "to-remote-1", 1],
        ["remote/out/q2", "to-remote-2", 2],
        ["single/remote", "one", 1],
        ["r2/plain/x", "unprefixed", 1]
      ])
      expect(localGot.map((m) => [m.topic, m.payload, m.qos])).toEqual([
        ["l/in/q0", "to-local-0", 0],
        ["l/in/q1", "to-local-1", 1],
        ["l/in/q2", "to-local-2", 2]
      ])
      // try_private: mosquitto saw a bridge (protocol level | 0x80)
      expect(remote.log()).toContain("New bridge connected from")
    })
  )

  it.scopedLive("the topic QoS caps what crosses; a `both` topic carries each message once, without loops", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const { local, bridge } = yield* startBridge(block(remote.port, "topic sync/# both 1", "topic capped/# out 0"))
      const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const remoteGot = collect(remoteClient)
      yield* subscribe(remoteClient, ["sync/#", "capped/#"], { qos: 2 })
      const localClient = yield* connectClient(local.url)
      const localGot = collect(localClient)
      yield* subscribe(localClient, "sync/#", { qos: 2 })
      yield* waitFor(() => bridge.status()[0].state === "connected", "the bridge to connect")
      yield* subscribed(remote)
      yield* publish(localClient, "sync/from-local", "L", { qos: 2 })
      yield* publish(remoteClient, "sync/from-remote", "R", { qos: 2 })
      yield* publish(localClient, "capped/x", "C", { qos: 2 })
      yield* waitFor(() => remoteGot.length >= 3 && localGot.length >= 2, "messages on both sides")
      yield* settle(500) // any echo would arrive by now
      expect(remoteGot.map((m) => [m.topic, m.qos]).sort()).toEqual([
        ["capped/x", 0],
        ["sync/from-local", 1],
        ["sync/from-remote", 2]
      ])
      expect(localGot.map((m) => [m.topic, m.qos]).sort()).toEqual([
        ["sync/from-local", 2],
        ["sync/from-remote", 1]
      ])
    })
  )

  for (const [version, name] of [
    ["mqttv31", "MQTT 3.1"],
    ["mqttv50", "MQTT 5"]
  ] as const) {
    it.scopedLive(`bridge_protocol_version ${version}: ${name} both ways`, () =>
      Effect.gen(function* () {
        const remote = yield* startMosquitto([])
        const { local, bridge } = yield* startBridge(block(remote.port, `bridge_protocol_version ${version}`, "topic a/# both 2"))
        const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`, { protocolVersion: 5 })
        const remoteGot = collect(remoteClient)
        yield* subscribe(remoteClient, "a/#", { qos: 2 })
        const localClient = yield* connectClient(local.url, { protocolVersion: 5 })
        const localGot = collect(localClient)
        yield* subscribe(localClient, "a/#", { qos: 2 })
        yield* waitFor(() => bridge.status()[0].state === "connected", "the bridge to connect")
        yield* subscribed(remote)
        yield* publish(localClient, "a/out", "o", { qos: 2, properties: { userProperties: { k: "v" } } })
        yield* publish(remoteClient, "a/in", "i", { qos: 1, properties: { contentType: "text/plain" } })
        yield* waitFor(() => remoteGot.length >= 2 && localGot.length >= 2, "messages on both sides")
        yield* settle(300)
        expect(remoteGot.map((m) => m.topic).sort()).toEqual(["a/in", "a/out"])
        expect(localGot.map((m) => m.topic).sort()).toEqual(["a/in", "a/out"])
        const out = remoteGot.find((m) => m.topic === "a/out")!
        const inn = localGot.find((m) => m.topic === "a/in")!
        if (version === "mqttv50") {
          // MQTT 5 end to end: properties cross the bridge
          expect(out.properties?.userProperties).toEqual({ k: "v" })
          expect(inn.properties?.contentType).toBe("text/plain")
        } else {
          expect(out.properties?.userProperties).toBeUndefined()
          expect(remote.log()).toMatch(/New bridge connected from .* as midge-up \(p1,/)
        }
      })
    )
  }

  it.scopedLive("notifications: local and remote retained state 1 / 0, the remote will when the link dies, notification_topic", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const local = yield* startBroker()
      const localClient = yield* connectClient(local.url)
      const localGot = collect(localClient)
      yield* subscribe(localClient, ["$SYS/broker/connection/#", "bridges/#"], { qos: 1 })
      const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const remoteGot = collect(remoteClient)
      yield* subscribe(remoteClient, ["$SYS/broker/connection/#", "bridges/#"], { qos: 1 })
      const scope = yield* Scope.make()
      const bridge = yield* Bridge.make(
        bridgesOf(
          [
            block(remote.port, "topic x out"),
            `connection second\naddress 127.0.0.1:${remote.port}\nremote_clientid second\nnotification_topic bridges/second\ntopic y out`,
            `connection quiet\naddress 127.0.0.1:${remote.port}\nremote_clientid quiet\nnotifications_local_only true\ntopic z out`
          ].join("\n")
        )
      ).pipe(Effect.provideService(Broker, local.broker), Scope.extend(scope))
      yield* waitFor(() => bridge.status().every((s) => s.state === "connected"), "the bridges to connect")
      const states = (got: ReadonlyArray<{ topic: string; payload: string }>, topic: string) => got.filter((m) => m.topic === topic).map((m) => m.payload)
      yield* waitFor(() => states(remoteGot, "bridges/second").includes("1") && states(localGot, "$SYS/broker/connection/quiet/state").includes("1"), "notifications")
      // local: 0 at start, then 1 (retained, QoS 1)
      expect(states(localGot, STATE)).toEqual(["0", "1"])
      expect(states(localGot, "bridges/second")).toEqual(["0", "1"])
      expect(states(remoteGot, STATE)).toEqual(["1"])
      // notifications_local_only: nothing on the remote
      expect(states(localGot, "$SYS/broker/connection/quiet/state")).toEqual(["0", "1"])
      expect(states(remoteGot, "$SYS/broker/connection/quiet/state")).toEqual([])
      // a late subscriber gets the retained states
      const late = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const lateGot = collect(late)
      yield* subscribe(late, STATE, { qos: 1 })
      yield* waitFor(() => lateGot.length === 1, "the retained state")
      expect([lateGot[0].payload, lateGot[0].retain]).toEqual(["1", true])
      // the bridges stop: their sockets close without DISCONNECT, mosquitto publishes the wills
      yield* Scope.close(scope, Exit.void)
      yield* waitFor(() => states(remoteGot, STATE).includes("0") && states(remoteGot, "bridges/second").includes("0"), "the wills")
      yield* settle(200)
      expect(states(remoteGot, "$SYS/broker/connection/quiet/state")).toEqual([])
      expect(states(localGot, STATE)).toEqual(["0", "1", "0"])
    })
  )

  it.scopedLive("the remote is killed and restarted: local state 0, reconnection, queued QoS 1 delivered, live delivery resumes", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const { local, bridge } = yield* startBridge(block(remote.port, "topic t/# both 1"))
      const localClient = yield* connectClient(local.url)
      const localState = collect(localClient)
      yield* subscribe(localClient, STATE, { qos: 1 })
      yield* waitFor(() => bridge.status()[0].state === "connected", "the bridge to connect")
      // the retained state seen at SUBSCRIBE is the initial "0" or already "1", depending on
      // whether the bridge connected first: wait until "1" is the latest, then follow from there
      yield* waitFor(() => localState.at(-1)?.payload === "1", "local state 1")
      const seen = localState.length
      yield* remote.kill
      const states = () => localState.slice(seen - 1).map((m) => m.payload).join()
      yield* waitFor(() => states() === "1,0", "local state 0", 10_000)
      expect(bridge.status()[0].state).not.toBe("connected")
      // published while the remote is down: queued (QoS 1) and delivered after the reconnection
      yield* publish(localClient, "t/while-down", "queued", { qos: 1, retain: true })
      expect(bridge.status()[0].queued).toBe(1)
      yield* remote.start
      yield* waitFor(() => bridge.status()[0].state === "connected", "the bridge to reconnect", 15_000)
      yield* waitFor(() => states() === "1,0,1", "local state 1 again")
      const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const remoteGot = collect(remoteClient)
      yield* subscribe(remoteClient, "t/#", { qos: 1 })
      yield* waitFor(() => remoteGot.some((m) => m.topic === "t/while-down"), "the queued message (retained on the remote)")
      yield* publish(localClient, "t/after", "live", { qos: 1 })
      yield* publish(remoteClient, "t/back", "in", { qos: 1 })
      const localGot = collect(localClient)
      yield* subscribe(localClient, "t/back", { qos: 1 })
      yield* publish(remoteClient, "t/back", "in-2", { qos: 1 })
      yield* waitFor(() => remoteGot.some((m) => m.topic === "t/after"), "live delivery to the remote")
      yield* waitFor(() => localGot.some((m) => m.payload === "in-2"), "live delivery from the remote")
      expect(bridge.status()[0].queued).toBe(0)
    })
  )

  it.scopedLive("start_type lazy: connects when `threshold` messages are queued, disconnects after `idle_timeout`", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const remoteGot = collect(remoteClient)
      yield* subscribe(remoteClient, ["lazy/#", STATE], { qos: 1 })
      const { local, bridge } = yield* startBridge(block(remote.port, "start_type lazy", "threshold 3", "idle_timeout 1", "topic lazy/# out 1"))
      const localClient = yield* connectClient(local.url)
      yield* publish(localClient, "lazy/1", "a", { qos: 1 })
      yield* publish(localClient, "lazy/2", "b", { qos: 0 })
      yield* settle(300)
      expect(bridge.status()[0]).toMatchObject({ state: "down", queued: 2 })
      expect(remote.log()).not.toContain("New bridge connected")
      yield* publish(localClient, "lazy/3", "c", { qos: 1 })
      yield* waitFor(() => remoteGot.filter((m) => m.topic.startsWith("lazy/")).length === 3, "the 3 queued messages")
      expect(remoteGot.filter((m) => m.topic.startsWith("lazy/")).map((m) => [m.topic, m.qos])).toEqual([
        ["lazy/1", 1],
        ["lazy/2", 0],
        ["lazy/3", 1]
      ])
      // idle for 1 s: the link closes, the remote publishes the will
      yield* waitFor(() => bridge.status()[0].state === "down", "the idle timeout", 5000)
      yield* waitFor(() => remoteGot.filter((m) => m.topic === STATE).map((m) => m.payload).join() === "1,0", "state 1 then 0 on the remote")
      // below the threshold again: stays down
      yield* publish(localClient, "lazy/4", "d", { qos: 1 })
      yield* settle(300)
      expect(bridge.status()[0]).toMatchObject({ state: "down", queued: 1 })
    })
  )

  it.scopedLive("start_type once: a failed connection is not retried", () =>
    Effect.gen(function* () {
      const dead = yield* freePort
      const { bridge } = yield* startBridge(block(dead, "start_type once", "topic a out"))
      yield* waitFor(() => bridge.status()[0].state === "stopped", "the bridge to give up")
    })
  )

  it.scopedLive("addresses: a dead first address fails over to the next; round_robin false returns to the primary when it is back", () =>
    Effect.gen(function* () {
      const primaryPort = yield* freePort
      const secondary = yield* startMosquitto([])
      const { bridge } = yield* startBridge(
        ["connection up", `addresses 127.0.0.1:${primaryPort} 127.0.0.1:${secondary.port}`, "remote_clientid midge-up", "restart_timeout 1", "topic a out"].join("\n")
      )
      yield* waitFor(() => bridge.status()[0].state === "connected", "the bridge to connect to the secondary", 10_000)
      expect(bridge.status()[0].address).toBe(`127.0.0.1:${secondary.port}`)
      const primary = yield* startMosquitto([], primaryPort)
      // probed every 5 s (Mosquitto's primary_retry), then reconnected there
      yield* waitFor(() => bridge.status()[0].state === "connected" && bridge.status()[0].address === `127.0.0.1:${primaryPort}`, "back on the primary", 15_000)
      yield* waitFor(() => primary.log().includes("as midge-up"), "the primary to see the bridge")
    })
  )

  it.scopedLive("reload (SIGHUP, bridge_reload_type immediate): an added block starts, a removed one stops, a changed one restarts, an unchanged one keeps its link", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const blockOf = (name: string, ...lines: Array<string>) =>
        [`connection ${name}`, `address 127.0.0.1:${remote.port}`, `remote_clientid midge-${name}`, "restart_timeout 1", "bridge_reload_type immediate", ...lines].join("\n")
      /** how many times mosquitto saw the bridge `midge-<name>` connect */
      const connects = (name: string) => remote.log().split("\n").filter((l) => l.includes(`connected from`) && l.includes(` as midge-${name} (`)).length
      const { local, bridge } = yield* startBridge([blockOf("a", "topic a/# out 1"), blockOf("b", "topic b/# out 1")].join("\n"))
      const connected = (n: number) => waitFor(() => bridge.status().length === n && bridge.status().every((s) => s.state === "connected"), `${n} bridges connected`)
      yield* connected(2)
      yield* waitFor(() => connects("a") === 1 && connects("b") === 1, "a and b on mosquitto")

      // b changed (its QoS), c added, a untouched
      const first = yield* bridge.reload(bridgesOf([blockOf("a", "topic a/# out 1"), blockOf("b", "topic b/# out 2"), blockOf("c", "topic c/# out 1")].join("\n")))
      expect(first).toEqual({ added: ["c"], removed: [], restarted: ["b"], deferred: [] })
      yield* connected(3)
      yield* waitFor(() => connects("b") === 2 && connects("c") === 1, "b reconnected and c connected")
      expect(connects("a")).toBe(1)
      const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
      const remoteGot = collect(remoteClient)
      yield* subscribe(remoteClient, ["a/#", "b/#", "c/#"], { qos: 2 })
      const localClient = yield* connectClient(local.url)
      for (const t of ["a/1", "b/1", "c/1"]) yield* publish(localClient, t, "x", { qos: 2 })
      yield* waitFor(() => remoteGot.length === 3, "a/1, b/1 and c/1 on mosquitto")
      expect(remoteGot.map((m) => [m.topic, m.qos]).sort()).toEqual([["a/1", 1], ["b/1", 2], ["c/1", 1]])

      // b and c removed: their subscriptions go with them; a still untouched
      const second = yield* bridge.reload(bridgesOf(blockOf("a", "topic a/# out 1")))
      expect(second).toEqual({ added: [], removed: ["b", "c"], restarted: [], deferred: [] })
      expect(bridge.status().map((s) => s.name)).toEqual(["a"])
      for (const t of ["b/2", "c/2", "a/2"]) yield* publish(localClient, t, "y", { qos: 1 })
      yield* waitFor(() => remoteGot.some((m) => m.topic === "a/2"), "a/2 on mosquitto")
      yield* settle(200)
      expect(remoteGot.map((m) => m.topic).sort()).toEqual(["a/1", "a/2", "b/1", "c/1"])
      expect(connects("a")).toBe(1)

      // the same block further down the file (lines added above it): not a change, the link stays
      const third = yield* bridge.reload(bridgesOf(["# a comment", "sys_interval 10", "", blockOf("a", "topic a/# out 1")].join("\n")))
      expect(third).toEqual({ added: [], removed: [], restarted: [], deferred: [] })
      yield* settle(200)
      expect(connects("a")).toBe(1)
    })
  )
  it.scopedLive("bridge_reload_type lazy (Mosquitto 2.1's default): a changed, connected bridge keeps its link and old settings until the link ends, then reconnects with the new ones", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const blockOf = (name: string, ...lines: Array<string>) =>
        [`connection ${name}`, `address 127.0.0.1:${remote.port}`, `remote_clientid midge-${name}`, "restart_timeout 1", ...lines].join("\n")
      const connects = (name: string) => remote.log().split("\n").filter((l) => l.includes(`connected from`) && l.includes(` as midge-${name} (`)).length
      const { local, bridge } = yield* startBridge([blockOf("l", "topic l/# out 1"), blockOf("i", "bridge_reload_type immediate", "topic i/# out 1")].join("\n"))
      const state = (name: string) => bridge.status().find((s) => s.name === name)?.state
      yield* waitFor(() => state("l") === "connected" && state("i") === "connected", "both bridges connected")
      yield* waitFor(() => connects("l") === 1 && connects("i") === 1, "l and i on mosquitto")
      // both change their QoS from 1 to 2: i (immediate) restarts, l (lazy) waits
      const r = yield* bridge.reload(bridgesOf([blockOf("l", "topic l/# out 2"), blockOf("i", "bridge_reload_type immediate", "topic i/# out 2")].join("\n")))
      expect(r).toEqual({ added: [], removed: [], restarted: ["i"], deferred: ["l"] })
      yield* waitFor(() => connects("i") === 2 && state("i") === "connected", "i reconnected")
      const qosOnRemote = (topic: string) =>
        Effect.gen(function* () {
          const remoteClient = yield* connectClient(`mqtt://127.0.0.1:${remote.port}`)
          const got = collect(remoteClient)
          yield* subscribe(remoteClient, topic, { qos: 2 })
          const localClient = yield* connectClient(local.url)
          yield* publish(localClient, topic, "x", { qos: 2 })
          yield* waitFor(() => got.length === 1, `${topic} on mosquitto`)
          yield* Effect.promise(() => remoteClient.endAsync())
          return got[0].qos
        })
      expect(yield* qosOnRemote("i/1")).toBe(2)
      expect(yield* qosOnRemote("l/1")).toBe(1) // l's link and settings are the old ones
      expect(connects("l")).toBe(1)
      // the link ends (the remote broker restarts): l comes back with its new settings
      yield* remote.kill
      yield* waitFor(() => state("l") !== "connected", "l's link gone")
      yield* remote.start
      yield* waitFor(() => state("l") === "connected" && state("i") === "connected", "both bridges back", 15_000)
      expect(yield* qosOnRemote("l/2")).toBe(2)
    })
  )
})
