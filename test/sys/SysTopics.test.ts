/**
 * `$SYS/broker/...` as Mosquitto 2.0 publishes it: the same topic names and
 * payload formats, retained, QoS 2; a first round at start, then only what
 * changed every `sys_interval` seconds (TestClock drives the rounds), loads as
 * sys_tree.c computes them, nothing at all with `sys_interval 0`.
 * On a real socket with MQTT.js, plus in-process checks of the counters the
 * connections feed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc, Layer, Stream, TestClock } from "effect"
import { Broker, type BrokerService, type ReceivedMessage } from "../../src/Broker.js"
import type { SubscriptionOptions } from "../../src/routing/Router.js"
import { Sampler } from "../../src/sys/internal/sample.js"
import * as SysTopics from "../../src/sys/SysTopics.js"
import { collect, connectClient, publish, settle, startBroker, subscribe, waitFor, type Received } from "../e2e/harness.js"

/**
 * What Mosquitto 2.0.11 publishes in its first round (captured with
 * `mosquitto_sub -t '$SYS/#' -v` against `mosquitto -c` with `sys_interval 2`):
 * every counter and load, `clients/maximum` not (it is published when it grows).
 */
const FIRST_ROUND: ReadonlyArray<string> = [
  "$SYS/broker/version",
  "$SYS/broker/uptime",
  "$SYS/broker/clients/total",
  "$SYS/broker/clients/inactive",
  "$SYS/broker/clients/disconnected",
  "$SYS/broker/clients/active",
  "$SYS/broker/clients/connected",
  "$SYS/broker/clients/expired",
  ...["messages/received", "messages/sent", "publish/dropped", "publish/received", "publish/sent", "bytes/received", "bytes/sent", "sockets", "connections"].flatMap(
    (name) => ["1min", "5min", "15min"].map((w) => `$SYS/broker/load/${name}/${w}`)
  ),
  "$SYS/broker/messages/stored",
  "$SYS/broker/messages/received",
  "$SYS/broker/messages/sent",
  "$SYS/broker/store/messages/count",
  "$SYS/broker/store/messages/bytes",
  "$SYS/broker/subscriptions/count",
  "$SYS/broker/shared_subscriptions/count",
  "$SYS/broker/retained messages/count",
  "$SYS/broker/heap/current",
  "$SYS/broker/heap/maximum",
  "$SYS/broker/publish/messages/dropped",
  "$SYS/broker/publish/messages/received",
  "$SYS/broker/publish/messages/sent",
  "$SYS/broker/publish/bytes/received",
  "$SYS/broker/publish/bytes/sent",
  "$SYS/broker/bytes/received",
  "$SYS/broker/bytes/sent"
]

const startSys = (broker: BrokerService, interval = 10) =>
  Layer.build(SysTopics.layer({ interval, version: "0.1.0" })).pipe(Effect.provideService(Broker, broker))

const byTopic = (got: ReadonlyArray<Received>): Map<string, Received> => new Map(got.map((m) => [m.topic, m]))

const hasUptime = (got: ReadonlyArray<Received>, seconds: number) => () =>
  got.some((m) => m.topic === "$SYS/broker/uptime" && m.payload === `${seconds} seconds`)

/** Collect `$SYS/#` in-process (no socket: the counters move only as the test says). */
const sysInProcess = (broker: BrokerService) =>
  Effect.gen(function* () {
    const got: Array<ReceivedMessage> = []
    yield* broker.subscribe("$SYS/#").pipe(
      Stream.runForEach((m) => Effect.sync(() => got.push(m))),
      Effect.forkScoped
    )
    yield* waitFor(() => got.some((m) => m.topic === "$SYS/broker/version"), "the retained $SYS messages")
    return got
  })

/** The uptime payloads an in-process subscriber receives, from now until the scope closes. */
const uptimes = (broker: BrokerService) =>
  Effect.gen(function* () {
    const got: Array<string> = []
    yield* broker.subscribe("$SYS/broker/uptime").pipe(
      Stream.runForEach((m) => Effect.sync(() => got.push(m.payload.toString()))),
      Effect.forkScoped
    )
    return got
  })

const lastPayload = (got: ReadonlyArray<ReceivedMessage>, topic: string): string | undefined => {
  for (let i = got.length - 1; i >= 0; i--) if (got[i].topic === topic) return got[i].payload.toString()
  return undefined
}

describe("$SYS topics over MQTT", () => {
  it.scoped("the first round: Mosquitto's topics and formats, all retained", () =>
    Effect.gen(function* () {
      const { broker, url } = yield* startBroker()
      yield* startSys(broker)
      const client = yield* connectClient(url)
      const got = collect(client)
      yield* subscribe(client, "$SYS/#", { qos: 2 })
      yield* waitFor(() => got.length >= FIRST_ROUND.length, "the first round")
      yield* settle()
      expect(got.map((m) => m.topic).sort()).toEqual([...FIRST_ROUND].sort())
      // retained, and sent at the QoS 2 Mosquitto publishes $SYS with [MQTT-3.3.1-8]
      expect(got.filter((m) => !m.retain || m.qos !== 2).map((m) => m.topic)).toEqual([])
      const m = byTopic(got)
      expect(m.get("$SYS/broker/version")?.payload).toBe("midge version 0.1.0")
      expect(m.get("$SYS/broker/uptime")?.payload).toBe("0 seconds")
      expect(m.get("$SYS/broker/clients/connected")?.payload).toBe("0")
      expect(m.get("$SYS/broker/clients/active")?.payload).toBe("0")
      expect(m.get("$SYS/broker/shared_subscriptions/count")?.payload).toBe("0")
      for (const msg of got) {
        if (msg.topic.startsWith("$SYS/broker/load/")) expect([msg.topic, msg.payload]).toEqual([msg.topic, "0.00"])
        else if (msg.topic !== "$SYS/broker/version" && msg.topic !== "$SYS/broker/uptime") {
          expect([msg.topic, /^\d+$/.test(msg.payload)]).toEqual([msg.topic, true])
        }
      }
      expect(Number(m.get("$SYS/broker/heap/current")!.payload)).toBeGreaterThan(0)
      // the round's own retained messages are counted in the store from the next round on
      expect(Number(m.get("$SYS/broker/retained messages/count")!.payload)).toBe(1)
    })
  )

  it.scoped("every sys_interval: uptime and the changed counters only, live (retain 0) [MQTT-3.3.1-9]", () =>
    Effect.gen(function* () {
      const { broker, url } = yield* startBroker()
      yield* startSys(broker)
      const client = yield* connectClient(url)
      const got = collect(client)
      yield* subscribe(client, "$SYS/#")
      yield* waitFor(() => got.length >= FIRST_ROUND.length, "the first round")
      yield* publish(client, "app/data", "hello")
      yield* settle()
      got.length = 0

      yield* TestClock.adjust("9 seconds")
      yield* settle()
      expect(got).toEqual([])

      yield* TestClock.adjust("1 seconds")
      yield* waitFor(hasUptime(got, 10), "uptime 10 seconds")
      yield* settle()
      const m = byTopic(got)
      expect(got.filter((x) => x.retain).map((x) => x.topic)).toEqual([])
      expect(m.get("$SYS/broker/clients/connected")?.payload).toBe("1")
      expect(m.get("$SYS/broker/clients/active")?.payload).toBe("1")
      expect(m.get("$SYS/broker/clients/total")?.payload).toBe("1")
      expect(m.get("$SYS/broker/clients/maximum")?.payload).toBe("1")
      expect(m.get("$SYS/broker/subscriptions/count")?.payload).toBe("1")
      expect(m.get("$SYS/broker/publish/messages/received")?.payload).toBe("1")
      expect(m.get("$SYS/broker/publish/messages/sent")?.payload).toBe(String(FIRST_ROUND.length))
      expect(Number(m.get("$SYS/broker/bytes/received")?.payload)).toBeGreaterThan(0)
      expect(Number(m.get("$SYS/broker/bytes/sent")?.payload)).toBeGreaterThan(0)
      // 1 PUBLISH received in 10 s: 6 per minute, averaged over a minute
      expect(m.get("$SYS/broker/load/publish/received/1min")?.payload).toBe(SysTopics.nextLoad(0, 1, 10, 60).toFixed(2))
      // unchanged: not republished
      for (const topic of [
        "$SYS/broker/version",
        "$SYS/broker/clients/expired",
        "$SYS/broker/clients/disconnected",
        "$SYS/broker/clients/inactive",
        "$SYS/broker/shared_subscriptions/count",
        "$SYS/broker/publish/messages/dropped",
        "$SYS/broker/load/publish/dropped/1min"
      ]) {
        expect([topic, m.has(topic)]).toEqual([topic, false])
      }

      // nothing changed but the uptime, the heap and what the last round sent: still no clients/*
      got.length = 0
      yield* TestClock.adjust("10 seconds")
      yield* waitFor(hasUptime(got, 20), "uptime 20 seconds")
      yield* settle()
      expect(got.filter((x) => x.topic.startsWith("$SYS/broker/clients/")).map((x) => x.topic)).toEqual([])
    })
  )

  it.scoped("uptime grows with the Clock, one round per interval", () =>
    Effect.gen(function* () {
      const { broker, url } = yield* startBroker()
      yield* startSys(broker, 5)
      const client = yield* connectClient(url)
      const got = collect(client)
      yield* subscribe(client, "$SYS/broker/uptime")
      yield* waitFor(hasUptime(got, 0), "uptime 0 seconds")
      for (const seconds of [5, 10, 15, 20]) {
        yield* TestClock.adjust("5 seconds")
        yield* waitFor(hasUptime(got, seconds), `uptime ${seconds} seconds`)
      }
      expect(got.map((m) => m.payload)).toEqual(["0 seconds", "5 seconds", "10 seconds", "15 seconds", "20 seconds"])
    })
  )

  it.scoped("a later subscriber gets the last values, retained [MQTT-3.3.1-8]", () =>
    Effect.gen(function* () {
      const { broker, url } = yield* startBroker()
      yield* startSys(broker)
      const first = yield* connectClient(url)
      const firstGot = collect(first)
      yield* subscribe(first, "$SYS/broker/uptime")
      yield* waitFor(hasUptime(firstGot, 0), "uptime 0 seconds")
      yield* TestClock.adjust("10 seconds")
      yield* waitFor(hasUptime(firstGot, 10), "uptime 10 seconds")

      const later = yield* connectClient(url)
      const got = collect(later)
      yield* subscribe(later, ["$SYS/broker/clients/+", "$SYS/broker/uptime", "$SYS/broker/version"])
      yield* waitFor(() => got.length >= 9, "the retained values")
      yield* settle()
      const m = byTopic(got)
      expect(got.every((x) => x.retain)).toBe(true)
      expect(m.get("$SYS/broker/uptime")?.payload).toBe("10 seconds")
      expect(m.get("$SYS/broker/version")?.payload).toBe("midge version 0.1.0")
      // as of the last round: one client then
      expect(m.get("$SYS/broker/clients/connected")?.payload).toBe("1")
      expect(m.get("$SYS/broker/clients/maximum")?.payload).toBe("1")
    })
  )

  it.scoped("a subscription to # does not receive $SYS topics [MQTT-4.7.2-1]", () =>
    Effect.gen(function* () {
      const { broker, url } = yield* startBroker()
      const client = yield* connectClient(url)
      const got = collect(client)
      yield* subscribe(client, ["#", "+/broker/uptime"])
      yield* startSys(broker)
      yield* TestClock.adjust("10 seconds")
      yield* publish(client, "app/x", "1")
      yield* waitFor(() => got.length >= 1, "app/x")
      yield* settle()
      expect(got.map((m) => m.topic)).toEqual(["app/x"])
    })
  )

  it.scoped("sys_interval 0: no $SYS at all (mosquitto.conf(5): disabled completely)", () =>
    Effect.gen(function* () {
      const { broker, url } = yield* startBroker()
      yield* startSys(broker, 0)
      const client = yield* connectClient(url)
      const got = collect(client)
      yield* subscribe(client, "$SYS/#")
      yield* TestClock.adjust("1 hours")
      yield* settle()
      expect(got).toEqual([])
      expect(broker.stats().retained).toBe(0)
    })
  )

  it.scoped("a round that fails is logged; the next round still runs", () =>
    Effect.gen(function* () {
      const { broker, log } = yield* startBroker()
      yield* startSys(broker)
      let calls = 0
      const options: SubscriptionOptions = { qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: undefined }
      broker.core.router.subscribe(
        {
          clientId: "broken",
          routedSubscriptions: 0,
          online: () => true,
          deliver: () => {
            if (++calls === 1) throw new Error("boom")
          }
        },
        "$SYS/broker/uptime",
        options
      )
      yield* TestClock.adjust("10 seconds")
      yield* waitFor(() => log.recent.some((l) => l.includes("$SYS update failed")), "the error to be logged")
      yield* TestClock.adjust("10 seconds")
      yield* waitFor(() => calls === 2, "the next round")
      expect(broker.core.router.retained.get("$SYS/broker/uptime")?.payload.toString()).toBe("20 seconds")
    })
  )

  it.scoped("a reloaded sys_interval (SIGHUP) sets the next rounds' spacing; 0 stops them; from 0 they start", () =>
    Effect.gen(function* () {
      const { broker } = yield* startBroker()
      const got = yield* uptimes(broker)
      const sys = yield* SysTopics.make({ interval: 10, version: "0.1.0" }).pipe(Effect.provideService(Broker, broker))
      yield* waitFor(() => got.length === 1, "the first round")
      yield* sys.reconfigure(2)
      yield* TestClock.adjust("2 seconds")
      yield* waitFor(() => got.length === 2, "a round 2 s later")
      yield* TestClock.adjust("2 seconds")
      yield* waitFor(() => got.length === 3, "and again")
      expect(got).toEqual(["0 seconds", "2 seconds", "4 seconds"])
      yield* sys.reconfigure(0)
      yield* TestClock.adjust("1 minutes")
      yield* settle(50)
      expect(got).toHaveLength(3)
      // retained values stay
      expect(broker.core.router.retained.get("$SYS/broker/uptime")?.payload.toString()).toBe("4 seconds")
      yield* sys.reconfigure(5)
      yield* TestClock.adjust("5 seconds")
      yield* waitFor(() => got.length === 4, "rounds again")
      expect(got[3]).toBe("69 seconds")
      // started with 0: nothing until a reload sets an interval
      const { broker: quiet } = yield* startBroker()
      const off = yield* SysTopics.make({ interval: 0, version: "0.1.0" }).pipe(Effect.provideService(Broker, quiet))
      expect(quiet.stats().retained).toBe(0)
      yield* off.reconfigure(10)
      expect(quiet.core.router.retained.get("$SYS/broker/version")?.payload.toString()).toBe("midge version 0.1.0")
    })
  )

  it.scoped("the layer stops with its scope", () =>
    Effect.gen(function* () {
      const { broker } = yield* startBroker()
      // the subscriber outlives the layer
      const got = yield* uptimes(broker)
      yield* Effect.scoped(
        Effect.gen(function* () {
          yield* startSys(broker)
          yield* waitFor(() => got.length === 1, "the first round")
          yield* TestClock.adjust("10 seconds")
          yield* waitFor(() => got.length === 2, "the second round")
        })
      )
      yield* TestClock.adjust("1 minutes")
      yield* settle(50)
      expect(got).toEqual(["0 seconds", "10 seconds"])
    })
  )
})

describe("$SYS counters fed by the connections (in-process)", () => {
  it.scoped("packets, payload bytes, CONNECTs and sockets: messages/*, publish/bytes/*, load/connections, load/sockets", () =>
    Effect.gen(function* () {
      const { broker } = yield* startBroker()
      yield* startSys(broker)
      const got = yield* sysInProcess(broker)
      const stats = broker.core.stats
      stats.packetsReceived += 7
      stats.packetsSent += 5
      stats.publishBytesReceived += 300
      stats.publishBytesSent += 200
      stats.connectsReceived += 30
      stats.socketsOpened += 3
      stats.publishDropped += 2
      stats.clientsExpired += 1
      yield* TestClock.adjust("10 seconds")
      yield* waitFor(() => lastPayload(got, "$SYS/broker/uptime") === "10 seconds", "the second round")
      const p = (t: string) => lastPayload(got, `$SYS/broker/${t}`)
      expect(p("messages/received")).toBe("7")
      expect(p("messages/sent")).toBe("5")
      expect(p("publish/bytes/received")).toBe("300")
      expect(p("publish/bytes/sent")).toBe("200")
      expect(p("publish/messages/dropped")).toBe("2")
      expect(p("clients/expired")).toBe("1")
      // 30 CONNECTs in 10 s = 180 a minute, folded into the decaying averages
      expect(p("load/connections/1min")).toBe("27.63")
      expect(p("load/connections/5min")).toBe("5.90")
      expect(p("load/connections/15min")).toBe("1.99")
      expect(p("load/sockets/1min")).toBe("2.76")
      expect(p("load/publish/dropped/1min")).toBe("1.84")
      expect(p("load/messages/received/1min")).toBe("6.45")

      // no new traffic: the loads decay, by sys_tree.c's formula
      yield* TestClock.adjust("10 seconds")
      yield* waitFor(() => lastPayload(got, "$SYS/broker/uptime") === "20 seconds", "the third round")
      expect(p("load/connections/1min")).toBe("23.39")
    })
  )

  it.scoped("clients/total and disconnected count the persistent sessions of disconnected clients", () =>
    Effect.gen(function* () {
      const { broker, url } = yield* startBroker()
      yield* startSys(broker)
      const got = yield* sysInProcess(broker)
      const persistent = yield* Effect.scoped(connectClient(url, { clientId: "keeper", clean: false }))
      expect(persistent.connected).toBe(false)
      yield* connectClient(url, { clientId: "online" })
      yield* waitFor(() => broker.stats().clientsConnected === 1 && broker.stats().sessions === 2, "one online, one offline")
      yield* TestClock.adjust("10 seconds")
      yield* waitFor(() => lastPayload(got, "$SYS/broker/uptime") === "10 seconds", "the second round")
      const p = (t: string) => lastPayload(got, `$SYS/broker/${t}`)
      expect([p("clients/total"), p("clients/connected"), p("clients/disconnected"), p("clients/inactive")]).toEqual(["2", "1", "1", "1"])
    })
  )
})

describe("the message store reading", () => {
  it.scoped("counts each held message once: retained, in flight and queued, shared or not", () =>
    Effect.gen(function* () {
      const { core } = yield* Broker.make({})
      const sampler = new Sampler(core, core.now(), () => 1)
      expect([sampler.read().storeCount, sampler.read().storeBytes]).toEqual([0, 0])
      // two offline persistent sessions subscribed to q/#
      const options: SubscriptionOptions = { qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: undefined }
      for (const id of ["a", "b"]) {
        const { session } = core.openSession(id, false)
        session.expiryInterval = 0xffffffff
        core.router.subscribe(session, "q/#", options)
      }
      core.publish("r", Buffer.from("xyz"), 0, true) // retained only: 3 bytes
      core.publish("q/1", Buffer.from("12345"), 1, false) // queued twice, stored once: 5 bytes
      core.publish("q/2", Buffer.from("1234567"), 1, true) // retained and queued twice, stored once: 7 bytes
      core.publish("q/3", Buffer.from("zz"), 0, false) // QoS 0 to offline sessions: not queued
      const s = sampler.read()
      expect([s.storeCount, s.storeBytes, s.retained]).toEqual([3, 15, 2])
    })
  )

  it.scoped.prop(
    "clients: disconnected = total - connected, never negative; maximum is the high-water mark",
    [fc.array(fc.boolean(), { maxLength: 30 })],
    ([connects]) =>
      Effect.scoped(
        Effect.gen(function* () {
          const { core } = yield* Broker.make({})
          const sampler = new Sampler(core, core.now(), () => 1)
          let connected = 0
          let peak = 0
          let n = 0
          for (const up of connects) {
            if (up) {
              core.openSession(`c${n++}`, true)
              core.stats.clientsConnected = ++connected
              if (connected > core.stats.clientsMaximum) core.stats.clientsMaximum = connected
              peak = Math.max(peak, connected)
            } else if (connected > 0) {
              core.stats.clientsConnected = --connected
            }
            const s = sampler.read()
            expect(s.clientsDisconnected).toBe(Math.max(0, s.clientsTotal - s.clientsConnected))
            expect(s.clientsMaximum).toBe(peak)
          }
        })
      ),
    { fastCheck: { seed: 1883, numRuns: 25 } }
  )
})

describe("subscriptions/count and shared_subscriptions/count (as Mosquitto counts them)", () => {
  it.scoped("each shared member counts in shared_subscriptions, none in subscriptions", () =>
    Effect.gen(function* () {
      const { core } = yield* Broker.make({})
      const sampler = new Sampler(core, core.now(), () => 1)
      const options: SubscriptionOptions = { qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: undefined }
      const sessions = ["a", "b", "c"].map((id) => core.openSession(id, true).session)
      core.router.subscribe(sessions[0], "plain/#", options)
      core.router.subscribe(sessions[1], "plain/#", options)
      core.router.subscribe(sessions[0], "$share/g/s", options)
      core.router.subscribe(sessions[1], "$share/g/s", options)
      core.router.subscribe(sessions[2], "$share/h/s", options)
      // a repeated SUBSCRIBE replaces, it does not add
      core.router.subscribe(sessions[2], "$share/h/s", options)
      let s = sampler.read()
      expect([s.subscriptions, s.sharedSubscriptions]).toEqual([2, 3])
      core.router.unsubscribe(sessions[1], "$share/g/s")
      core.router.unsubscribe(sessions[2], "$share/h/s")
      core.router.unsubscribe(sessions[2], "$share/h/s")
      s = sampler.read()
      expect([s.subscriptions, s.sharedSubscriptions]).toEqual([2, 1])
    })
  )
})

describe("load averages (sys_tree.c calc_load)", () => {
  it("reproduces Mosquitto 2.0.11's published values", () => {
    // captured: 59 messages and 2 packets received in a 3 s round, from 0
    expect(SysTopics.nextLoad(0, 59, 3, 60).toFixed(2)).toBe("57.55")
    expect(SysTopics.nextLoad(0, 59, 3, 300).toFixed(2)).toBe("11.74")
    expect(SysTopics.nextLoad(0, 59, 3, 900).toFixed(2)).toBe("3.93")
    expect(SysTopics.nextLoad(0, 2, 3, 60).toFixed(2)).toBe("1.95")
    expect(SysTopics.nextLoad(0, 2, 3, 300).toFixed(2)).toBe("0.40")
    expect(SysTopics.nextLoad(0, 2, 3, 900).toFixed(2)).toBe("0.13")
  })

  it.prop(
    "a steady rate converges to that rate per minute; no traffic decays towards 0",
    [fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 1, max: 60 }), fc.constantFrom(60, 300, 900)],
    ([perRound, seconds, window]) => {
      let load = 0
      // 20 windows: e^-20 of the start is left
      for (let i = 0; i < (20 * window) / seconds; i++) load = SysTopics.nextLoad(load, perRound, seconds, window)
      const perMinute = (perRound * 60) / seconds
      expect(Math.abs(load - perMinute)).toBeLessThanOrEqual(perMinute * 1e-6 + 1e-9)
      const decayed = SysTopics.nextLoad(load, 0, seconds, window)
      expect(decayed).toBeLessThanOrEqual(load)
      expect(decayed).toBeGreaterThanOrEqual(0)
    },
    { fastCheck: { seed: 60, numRuns: 200 } }
  )
})
