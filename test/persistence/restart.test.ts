/**
 * Restart round trips of the broker over the file store: an in-process
 * broker on a real socket, stopped (its scope closed, as the daemon does on
 * SIGTERM) and started again over the same directory. Time is the TestClock's,
 * and it runs on while the broker is down, so expiry and will delays count the
 * time spent down. Clients are raw (test/persistence/rawMqtt.ts): a flow can
 * be stopped in any state and what the broker resends is seen exactly.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope, Stream, TestClock } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type mqttPacket from "mqtt-packet"
import { layerFile } from "../../src/persistence/FilePersistence.js"
import { settle, startBroker, waitFor } from "../e2e/harness.js"
import { rawConnect, type Packet, type Raw } from "./rawMqtt.js"

const freshDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "midge-restart-"))

/** A broker over the store in `location`, with its own scope: `stop` is a clean shutdown. */
const brokerOver = (location: string) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(layerFile({ location, autosaveInterval: 0, onCorrupt: "refuse" }), scope).pipe(Effect.orDie)
    const b = yield* startBroker().pipe(Effect.provide(context), Scope.extend(scope))
    return { ...b, stop: Scope.close(scope, Exit.void) }
  })

/** What an in-process subscriber receives on `filter` (routed messages, counted once each). */
const watch = (b: { broker: { subscribe: (f: string) => Stream.Stream<{ topic: string; payload: Buffer }, unknown> } }, filter: string) =>
  Effect.gen(function* () {
    const got: Array<string> = []
    yield* b.broker.subscribe(filter).pipe(
      Stream.runForEach((m) => Effect.sync(() => got.push(`${m.topic} ${m.payload.toString()}`))),
      Effect.forkScoped
    )
    return got
  })

const offline = (b: { broker: { core: { sessions: Map<string, { wire: unknown }> } } }, clientId: string) =>
  waitFor(() => b.broker.core.sessions.get(clientId)?.wire === undefined, `${clientId} offline`)

const v5 = (clientId: string, expiry: number, extra: { will?: mqttPacket.IConnectPacket["will"] } = {}) => ({
  clientId,
  protocolVersion: 5 as const,
  properties: { sessionExpiryInterval: expiry },
  ...extra
})

const publishes = (raw: Raw) => raw.got.filter((p): p is mqttPacket.IPublishPacket => p.cmd === "publish")

const subscribeRaw = (raw: Raw, topic: string, qos: 0 | 1 | 2) =>
  Effect.gen(function* () {
    const before = raw.got.length
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos }] } as Packet)
    yield* raw.waitCount(before + 1, "SUBACK")
    expect(raw.got[before].cmd).toBe("suback")
  })

const delayedWill = (delay: number, retain = false): mqttPacket.IConnectPacket["will"] => ({
  topic: "will/w",
  payload: Buffer.from("gone"),
  qos: 1,
  retain,
  properties: { willDelayInterval: delay }
})

describe("restart: wills with a Will Delay Interval", () => {
  it.scoped("a will pending at shutdown goes out at its time after the restart — not earlier, however many restarts", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      const w = yield* rawConnect(first.port, v5("w", 300, { will: delayedWill(60) }))
      w.drop() // t = 0: lost connection, will due at t = 60 s
      yield* offline(first, "w")
      yield* TestClock.adjust("20 seconds")
      yield* first.stop
      const second = yield* brokerOver(dir)
      const seen2 = yield* watch(second, "will/#")
      yield* TestClock.adjust("20 seconds") // t = 40
      yield* second.stop
      const third = yield* brokerOver(dir)
      const seen3 = yield* watch(third, "will/#")
      yield* TestClock.adjust("19 seconds") // t = 59
      yield* settle(100)
      expect([...seen2, ...seen3]).toEqual([])
      yield* TestClock.adjust("2 seconds") // t = 61
      yield* waitFor(() => seen3.length === 1, "the will")
      yield* TestClock.adjust("100 seconds")
      yield* settle(100)
      expect(seen3).toEqual(["will/w gone"])
    })
  )

  it.scoped("a will whose time came while the broker was down goes out at once at the start, once", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      // a persistent watcher, offline: what is published while it is away waits in its queue
      const watcher = yield* rawConnect(first.port, { clientId: "watcher" })
      yield* subscribeRaw(watcher, "will/#", 1)
      watcher.drop()
      yield* offline(first, "watcher")
      const w = yield* rawConnect(first.port, v5("w", 300, { will: delayedWill(10) }))
      w.drop()
      yield* offline(first, "w")
      yield* first.stop
      yield* TestClock.adjust("30 seconds") // down for 30 s: the will is 20 s overdue
      const second = yield* brokerOver(dir)
      const back = yield* rawConnect(second.port, { clientId: "watcher" })
      expect(back.connack.sessionPresent).toBe(true)
      yield* back.waitCount(1, "the will")
      yield* TestClock.adjust("400 seconds") // past w's session expiry too
      yield* settle(100)
      expect(publishes(back).map((p) => `${p.topic} ${p.payload.toString()}`)).toEqual(["will/w gone"])
    })
  )

  it.scoped("a client back in time after a restart cancels its will [MQTT-3.1.3-9], and the store forgets it", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      const w = yield* rawConnect(first.port, v5("w", 300, { will: delayedWill(60) }))
      w.drop()
      yield* offline(first, "w")
      yield* TestClock.adjust("20 seconds")
      yield* first.stop
      const second = yield* brokerOver(dir)
      const seen2 = yield* watch(second, "will/#")
      yield* TestClock.adjust("10 seconds") // t = 30
      const again = yield* rawConnect(second.port, v5("w", 300))
      expect(again.connack.sessionPresent).toBe(true)
      yield* TestClock.adjust("60 seconds") // t = 90: past the old will's time
      again.send({ cmd: "disconnect" } as Packet)
      yield* offline(second, "w")
      yield* second.stop
      const third = yield* brokerOver(dir)
      const seen3 = yield* watch(third, "will/#")
      yield* TestClock.adjust("60 seconds")
      yield* settle(100)
      expect([...seen2, ...seen3]).toEqual([])
    })
  )
})

describe("shutdown: the wills of connected clients (as Mosquitto: every client's will is sent at shutdown)", () => {
  const plainWill = (topic: string, retain: boolean): mqttPacket.IConnectPacket["will"] => ({ topic, payload: Buffer.from("bye"), qos: 1, retain })

  it.scoped("with a store: a connected client's will goes out at the shutdown, reaches an offline persistent session and stays retained after the restart", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      const watcher = yield* rawConnect(first.port, { clientId: "watcher" })
      yield* subscribeRaw(watcher, "will/#", 1)
      watcher.drop()
      yield* offline(first, "watcher")
      yield* rawConnect(first.port, { clientId: "a", will: plainWill("will/a", true) })
      const seen = yield* watch(first, "will/#")
      yield* first.stop // "a" is still connected
      expect(seen).toEqual(["will/a bye"])
      const second = yield* brokerOver(dir)
      const back = yield* rawConnect(second.port, { clientId: "watcher" })
      expect(back.connack.sessionPresent).toBe(true)
      yield* back.waitCount(1, "the will queued at the shutdown")
      expect(publishes(back).map((p) => `${p.topic} ${p.payload.toString()} retain=${p.retain}`)).toEqual(["will/a bye retain=false"])
      const fresh = yield* rawConnect(second.port, { clientId: "fresh", clean: true })
      yield* subscribeRaw(fresh, "will/#", 0)
      yield* fresh.waitCount(2, "the retained will")
      expect(publishes(fresh).map((p) => `${p.topic} ${p.payload.toString()} retain=${p.retain}`)).toEqual(["will/a bye retain=true"])
    })
  )

  it.scoped("with a store: a connected client's delayed will is kept, not sent at the shutdown, and goes out at its time after the restart", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      yield* rawConnect(first.port, v5("w", 300, { will: delayedWill(60) }))
      const seen1 = yield* watch(first, "will/#")
      yield* first.stop // t = 0, "w" connected: its will is due at t = 60 s
      expect(seen1).toEqual([])
      const second = yield* brokerOver(dir)
      const seen2 = yield* watch(second, "will/#")
      yield* TestClock.adjust("59 seconds")
      yield* settle(100)
      expect(seen2).toEqual([])
      yield* TestClock.adjust("2 seconds")
      yield* waitFor(() => seen2.length === 1, "the delayed will")
      expect(seen2).toEqual(["will/w gone"])
    })
  )

  it.scoped("without a store: the sessions end with the process, so every will goes out at the shutdown, delayed ones too; a normal DISCONNECT's does not", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const b = yield* startBroker().pipe(Scope.extend(scope))
      const seen = yield* watch(b, "will/#")
      yield* rawConnect(b.port, { clientId: "a", will: plainWill("will/a", false) })
      yield* rawConnect(b.port, v5("w", 300, { will: delayedWill(60) })) // connected, delayed
      const o = yield* rawConnect(b.port, v5("o", 300, { will: { ...delayedWill(60)!, topic: "will/o" } }))
      o.drop() // offline, its will pending
      yield* offline(b, "o")
      const d = yield* rawConnect(b.port, { clientId: "d", clean: true, will: plainWill("will/d", false) })
      d.send({ cmd: "disconnect" } as Packet)
      yield* waitFor(() => !b.broker.core.sessions.has("d"), "d gone")
      yield* settle(50)
      expect(seen).toEqual([])
      yield* Scope.close(scope, Exit.void)
      expect([...seen].sort()).toEqual(["will/a bye", "will/o gone", "will/w gone"])
    })
  )
})

describe("restart: v5 expiry counts the time spent down", () => {
  it.scoped("Session Expiry Interval: a session outlives a restart until its time, an expired one is gone", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      for (const [id, expiry] of [["s1", 60], ["s2", 60], ["s3", 60], ["s4", 10]] as const) {
        const c = yield* rawConnect(first.port, v5(id, expiry))
        yield* subscribeRaw(c, `s/${id}`, 1)
        c.drop()
        yield* offline(first, id)
      }
      yield* first.stop
      yield* TestClock.adjust("30 seconds") // down for 30 s: s4 (10 s) expired meanwhile
      const second = yield* brokerOver(dir)
      const s4 = yield* rawConnect(second.port, v5("s4", 10))
      expect(s4.connack.sessionPresent).toBe(false)
      yield* TestClock.adjust("20 seconds") // t = 50
      const s1 = yield* rawConnect(second.port, v5("s1", 60))
      expect(s1.connack.sessionPresent).toBe(true)
      yield* TestClock.adjust("11 seconds") // t = 61: s2 and s3 expired
      yield* waitFor(() => !second.broker.core.sessions.has("s2"), "s2 to expire")
      const s2 = yield* rawConnect(second.port, v5("s2", 60))
      expect(s2.connack.sessionPresent).toBe(false)
      yield* second.stop
      const third = yield* brokerOver(dir)
      const s3 = yield* rawConnect(third.port, v5("s3", 60))
      expect(s3.connack.sessionPresent).toBe(false)
    })
  )

  it.scoped("Message Expiry Interval: a message that expired while the broker was down is not delivered; the other's interval is what is left", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      const m = yield* rawConnect(first.port, v5("m", 3600))
      yield* subscribeRaw(m, "exp/#", 1)
      m.drop()
      yield* offline(first, "m")
      const pub = yield* rawConnect(first.port, { clientId: "pub", protocolVersion: 5, clean: true })
      pub.send({ cmd: "publish", topic: "exp/short", payload: Buffer.from("short"), qos: 1, messageId: 1, dup: false, retain: false, properties: { messageExpiryInterval: 40 } } as Packet)
      pub.send({ cmd: "publish", topic: "exp/long", payload: Buffer.from("long"), qos: 1, messageId: 2, dup: false, retain: false, properties: { messageExpiryInterval: 100 } } as Packet)
      yield* pub.waitCount(2, "two PUBACKs")
      yield* TestClock.adjust("10 seconds")
      yield* first.stop
      yield* TestClock.adjust("40 seconds") // t = 50: "short" (40 s) expired while down
      const second = yield* brokerOver(dir)
      const back = yield* rawConnect(second.port, v5("m", 3600))
      expect(back.connack.sessionPresent).toBe(true)
      yield* back.waitCount(1, "the message still alive")
      yield* settle(100)
      const got = publishes(back)
      expect(got.map((p) => p.payload.toString())).toEqual(["long"])
      // [MQTT-3.3.2-6] the interval sent is what is left of it: 100 - 50
      expect(got[0].properties?.messageExpiryInterval).toBe(50)
    })
  )
})

describe("restart: in-flight state in both directions", () => {
  it.scoped("outbound QoS 1 not acknowledged: resent after the restart with DUP and its packet id [MQTT-4.4.0-1]; once acknowledged, never again", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      const sub = yield* rawConnect(first.port, { clientId: "q1" })
      yield* subscribeRaw(sub, "f/1", 1)
      yield* first.broker.publish({ topic: "f/1", payload: "one", qos: 1 })
      yield* sub.waitCount(2, "the PUBLISH")
      const sent = publishes(sub)[0]
      expect(sent.dup).toBe(false)
      yield* first.stop // no PUBACK was sent
      const second = yield* brokerOver(dir)
      const back = yield* rawConnect(second.port, { clientId: "q1" })
      expect(back.connack.sessionPresent).toBe(true)
      yield* back.waitCount(1, "the resent PUBLISH")
      const resent = publishes(back)[0]
      expect(resent).toMatchObject({ topic: "f/1", qos: 1, dup: true, messageId: sent.messageId })
      expect(resent.payload.toString()).toBe("one")
      back.send({ cmd: "puback", messageId: sent.messageId } as Packet)
      yield* settle(50)
      yield* second.stop
      const third = yield* brokerOver(dir)
      const last = yield* rawConnect(third.port, { clientId: "q1" })
      yield* settle(150)
      expect(last.got).toEqual([])
    })
  )

  it.scoped("outbound QoS 2 after PUBREC: PUBREL is resent after the restart, not the PUBLISH [MQTT-4.4.0-1]; after PUBCOMP, nothing", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      const sub = yield* rawConnect(first.port, { clientId: "q2" })
      yield* subscribeRaw(sub, "f/2", 2)
      yield* first.broker.publish({ topic: "f/2", payload: "two", qos: 2 })
      yield* sub.waitCount(2, "the PUBLISH")
      const id = publishes(sub)[0].messageId!
      sub.send({ cmd: "pubrec", messageId: id } as Packet)
      yield* sub.waitCount(3, "the PUBREL")
      expect(sub.got[2]).toMatchObject({ cmd: "pubrel", messageId: id })
      yield* first.stop // no PUBCOMP
      const second = yield* brokerOver(dir)
      const back = yield* rawConnect(second.port, { clientId: "q2" })
      yield* back.waitCount(1, "the resent PUBREL")
      yield* settle(100)
      expect(back.got.map((p) => [p.cmd, p.messageId])).toEqual([["pubrel", id]])
      back.send({ cmd: "pubcomp", messageId: id } as Packet)
      yield* settle(50)
      yield* second.stop
      const third = yield* brokerOver(dir)
      const last = yield* rawConnect(third.port, { clientId: "q2" })
      yield* settle(150)
      expect(last.got).toEqual([])
    })
  )

  it.scoped("inbound QoS 2 awaiting PUBREL: after the restart a resent PUBLISH is not routed again, PUBREL completes it once [MQTT-4.3.3-9]", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      const first = yield* brokerOver(dir)
      const routed1 = yield* watch(first, "in/#")
      const pub = yield* rawConnect(first.port, { clientId: "p2" })
      pub.send({ cmd: "publish", topic: "in/x", payload: Buffer.from("once"), qos: 2, messageId: 7, dup: false, retain: false } as Packet)
      yield* pub.waitCount(1, "PUBREC")
      expect(pub.got[0]).toMatchObject({ cmd: "pubrec", messageId: 7 })
      yield* waitFor(() => routed1.length === 1, "the message routed")
      yield* first.stop // no PUBREL
      const second = yield* brokerOver(dir)
      const routed2 = yield* watch(second, "in/#")
      const back = yield* rawConnect(second.port, { clientId: "p2" })
      expect(back.connack.sessionPresent).toBe(true)
      // a publisher that missed the PUBREC resends the PUBLISH: acknowledged, not routed
      back.send({ cmd: "publish", topic: "in/x", payload: Buffer.from("once"), qos: 2, messageId: 7, dup: true, retain: false } as Packet)
      yield* back.waitCount(1, "PUBREC")
      back.send({ cmd: "pubrel", messageId: 7 } as Packet)
      yield* back.waitCount(2, "PUBCOMP")
      expect(back.got.map((p) => [p.cmd, p.messageId])).toEqual([["pubrec", 7], ["pubcomp", 7]])
      // the id is free again: a new message with it is routed
      back.send({ cmd: "publish", topic: "in/x", payload: Buffer.from("second"), qos: 2, messageId: 7, dup: false, retain: false } as Packet)
      yield* waitFor(() => routed2.length === 1, "the new message")
      yield* settle(100)
      expect(routed1).toEqual(["in/x once"])
      expect(routed2).toEqual(["in/x second"])
    })
  )
})
