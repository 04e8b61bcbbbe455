/**
 * A bridge's local session in the persistence store, as Mosquitto keeps the
 * bridge's client in its database when `local_cleansession` is false: what the
 * bridge had queued for the remote broker, what it had in flight (QoS 1 not yet
 * acknowledged, QoS 2 waiting for PUBCOMP) and the incoming QoS 2 ids whose
 * PUBREL had not come survive a restart of the broker over the same file
 * store. The remote is the scripted broker of test/bridge/fakeRemote.ts, so
 * that a flow can be held in any state; the local side is a real broker on a
 * real socket over a real store directory.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Bridge } from "../../src/bridge/Bridge.js"
import { Broker } from "../../src/Broker.js"
import { layerFile } from "../../src/persistence/FilePersistence.js"
import { bridgeSessionKey, Persistence } from "../../src/persistence/Persistence.js"
import { connectClient, publish, settle, startBroker, waitFor } from "../e2e/harness.js"
import { type FakeConnection, fakeBroker, of, polite } from "./fakeRemote.js"
import { bridgesOf } from "./harness.js"

const freshDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "midge-bridge-store-"))

const block = (port: number, ...lines: Array<string>) =>
  ["connection fake", `address 127.0.0.1:${port}`, "remote_clientid fake-id", "restart_timeout 1", "notifications false", ...lines].join("\n")

/**
 * A broker over the file store in `location` with the bridges of `text`, in
 * a scope of its own: `stop` is a clean shutdown (the daemon's SIGTERM).
 * `got` lists what an in-process subscriber to `watch` receives.
 */
const brokerWithBridge = (location: string, text: string, watch = "#") =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(layerFile({ location, autosaveInterval: 0, onCorrupt: "refuse" }), scope).pipe(Effect.orDie)
    const local = yield* startBroker().pipe(Effect.provide(context), Scope.extend(scope))
    const got: Array<string> = []
    yield* local.broker.subscribe(watch).pipe(
      Stream.runForEach((m) => Effect.sync(() => got.push(`${m.topic} ${m.payload.toString()}`))),
      Effect.forkIn(scope)
    )
    const bridge = yield* Bridge.make(text === "" ? [] : bridgesOf(text)).pipe(Effect.provideService(Broker, local.broker), Scope.extend(scope))
    const store = Context.get(context, Persistence)
    return { ...local, bridge, got, store, stop: Scope.close(scope, Exit.void) }
  })

/** The bridge's session as the store holds it (undefined: none). */
const storedBridge = (store: { readonly load: () => Effect.Effect<{ readonly sessions: ReadonlyArray<{ readonly clientId: string; readonly queue: ReadonlyArray<unknown>; readonly inflight: ReadonlyArray<unknown> }> }, unknown> }) =>
  store.load().pipe(
    Effect.orDie,
    Effect.map((s) => s.sessions.find((x) => x.clientId === bridgeSessionKey("fake")))
  )

const publishes = (c: FakeConnection) => of(c, "publish")

/** A remote that refuses connections (CONNACK 3, server unavailable) until `up()`, then answers politely. */
const downUntilUp = Effect.gen(function* () {
  let down = true
  const fake = yield* fakeBroker((c, p) => {
    if (p.cmd === "connect" && down) return c.send({ cmd: "connack", returnCode: 3, sessionPresent: false })
    polite(c, p)
  })
  return { fake, up: () => (down = false) }
})

describe("a bridge's local session in the store (local_cleansession false)", () => {
  it.scopedLive("a restart keeps what was queued, what was in flight and the incoming QoS 2 ids; the kept remote session gets DUP, PUBREL, then the queue in order", () =>
    Effect.gen(function* () {
      let phase: "first" | "down" | "back" = "first"
      const fake = yield* fakeBroker((c, p) => {
        if (p.cmd === "connect") {
          if (phase === "down") return c.send({ cmd: "connack", returnCode: 3, sessionPresent: false })
          c.send({ cmd: "connack", returnCode: 0, sessionPresent: phase === "back" })
          // an incoming QoS 2 message, sent again (DUP) after the restart, its PUBREL withheld the first time
          c.send({ cmd: "publish", topic: "in/x", payload: Buffer.from("once"), qos: 2, messageId: 7, retain: false, dup: phase === "back" })
          return
        }
        if (phase === "first") {
          // nothing acknowledged but the QoS 2 PUBREC (its PUBCOMP withheld)
          if (p.cmd === "publish" && p.qos === 2) c.send({ cmd: "pubrec", messageId: p.messageId })
          if (p.cmd === "subscribe") polite(c, p)
          return
        }
        if (p.cmd === "pubrec" && p.messageId === 7) return c.send({ cmd: "pubrel", messageId: 7 })
        polite(c, p)
      })
      const dir = freshDir()
      const text = block(fake.port, "topic out/# out 2", "topic in/# in 2")

      const first = yield* brokerWithBridge(dir, text, "in/#")
      yield* waitFor(() => first.bridge.status()[0]?.state === "connected", "the first connection")
      const client = yield* connectClient(first.url)
      yield* publish(client, "out/a", "held", { qos: 1 })
      yield* publish(client, "out/b", "half", { qos: 2 })
      const c0 = fake.connections[0]
      yield* waitFor(() => publishes(c0).length === 2 && of(c0, "pubrel").length === 1, "A sent, B sent and released")
      yield* waitFor(() => first.got.length === 1, "the incoming QoS 2 message, delivered locally")
      expect(first.bridge.status()[0].inFlight).toBe(2)
      // the remote goes away; two more messages queue
      phase = "down"
      c0.socket.destroy()
      yield* waitFor(() => first.bridge.status()[0].state !== "connected", "the link down")
      yield* publish(client, "out/c", "queued-1", { qos: 1 })
      yield* publish(client, "out/d", "queued-2", { qos: 2 })
      yield* waitFor(() => first.bridge.status()[0].queued === 2, "two queued messages")
      const kept = yield* storedBridge(first.store)
      expect([kept?.inflight.length, kept?.queue.length]).toEqual([2, 2])
      yield* Effect.promise(() => client.endAsync())
      yield* first.stop

      phase = "back"
      const connectionsBefore = fake.connections.length
      const second = yield* brokerWithBridge(dir, text, "in/#")
      expect(second.log.recent.some((l) => l.includes("Bridge fake: restored 2 queued and 2 in-flight messages from the store."))).toBe(true)
      yield* waitFor(() => fake.connections.length > connectionsBefore && second.bridge.status()[0].state === "connected", "the connection after the restart", 10_000)
      const c = fake.connections[fake.connections.length - 1]
      yield* waitFor(() => publishes(c).length === 3 && of(c, "pubrel").length === 1, "the resend and the queue")
      const [a, b] = [publishes(c0)[0], publishes(c0)[1]]
      // in flight: A again with DUP and its packet id, B's PUBREL [MQTT-4.4.0-1]; then the queue, in order
      expect(publishes(c).map((p) => [p.topic, p.payload.toString(), p.qos, p.dup])).toEqual([
        ["out/a", "held", 1, true],
        ["out/c", "queued-1", 1, false],
        ["out/d", "queued-2", 2, false]
      ])
      expect(publishes(c)[0].messageId).toBe(a.messageId)
      expect(of(c, "pubrel")[0].messageId).toBe(b.messageId)
      yield* waitFor(() => second.bridge.status()[0].inFlight === 0 && second.bridge.status()[0].queued === 0, "everything acknowledged")
      // the incoming QoS 2 message sent again before its PUBREL is not delivered twice [MQTT-4.3.3-9]
      yield* waitFor(() => of(c, "pubcomp").length === 1, "the PUBCOMP for id 7")
      yield* settle(100)
      expect(second.got).toEqual([])
      const after = yield* storedBridge(second.store)
      expect([after?.inflight.length, after?.queue.length]).toEqual([0, 0])
      yield* second.stop

      // nothing is left to send after another restart
      const third = yield* brokerWithBridge(dir, text, "in/#")
      yield* waitFor(() => third.bridge.status()[0].state === "connected", "the third connection", 10_000)
      yield* settle(200)
      expect(publishes(fake.connections[fake.connections.length - 1])).toEqual([])
      yield* third.stop
    }),
    30_000
  )

  it.scopedLive("local_cleansession true: nothing is stored, and a restart sends nothing again", () =>
    Effect.gen(function* () {
      const { fake, up } = yield* downUntilUp
      const dir = freshDir()
      const text = block(fake.port, "topic out/# out 1", "local_cleansession true")
      const first = yield* brokerWithBridge(dir, text)
      const client = yield* connectClient(first.url)
      yield* publish(client, "out/a", "lost at a restart", { qos: 1 })
      yield* waitFor(() => first.bridge.status()[0].queued === 1, "the queued message")
      expect(yield* storedBridge(first.store)).toBeUndefined()
      yield* Effect.promise(() => client.endAsync())
      yield* first.stop
      up()
      const second = yield* brokerWithBridge(dir, text)
      yield* waitFor(() => second.bridge.status()[0].state === "connected", "the connection", 10_000)
      yield* settle(200)
      expect(publishes(fake.connections[fake.connections.length - 1])).toEqual([])
      expect(second.bridge.status()[0].queued).toBe(0)
    }),
    30_000
  )

  it.scopedLive("a reload that changes the block keeps the queue; a bridge removed, or no longer configured at a start, has its stored session dropped", () =>
    Effect.gen(function* () {
      const { fake, up } = yield* downUntilUp
      const dir = freshDir()
      const text = block(fake.port, "topic out/# out 1")
      const first = yield* brokerWithBridge(dir, text)
      const client = yield* connectClient(first.url)
      yield* publish(client, "out/a", "one", { qos: 1 })
      yield* publish(client, "out/b", "two", { qos: 1 })
      yield* waitFor(() => first.bridge.status()[0].queued === 2, "two queued messages")
      // a changed block: the bridge restarts with its queue, in memory and in the store
      const changed = yield* first.bridge.reload(bridgesOf(block(fake.port, "topic out/# out 1", "keepalive_interval 30")))
      expect(changed.restarted).toEqual(["fake"])
      expect(first.bridge.status()[0].queued).toBe(2)
      expect((yield* storedBridge(first.store))?.queue.length).toBe(2)
      yield* Effect.promise(() => client.endAsync())
      yield* first.stop

      // started without the bridge: its stored session goes, with a log line
      const without = yield* brokerWithBridge(dir, "")
      expect(without.log.recent.some((l) => l.includes("Bridge fake is no longer configured: dropping the 2 messages the store kept for it."))).toBe(true)
      expect(yield* storedBridge(without.store)).toBeUndefined()
      yield* without.stop

      // a bridge removed by a reload: the same
      const again = yield* brokerWithBridge(dir, text)
      const client2 = yield* connectClient(again.url)
      yield* publish(client2, "out/c", "three", { qos: 1 })
      yield* waitFor(() => again.bridge.status()[0].queued === 1, "one queued message")
      const removed = yield* again.bridge.reload([])
      expect(removed.removed).toEqual(["fake"])
      expect(yield* storedBridge(again.store)).toBeUndefined()
      yield* Effect.promise(() => client2.endAsync())
      yield* again.stop

      up()
      const last = yield* brokerWithBridge(dir, text)
      yield* waitFor(() => last.bridge.status()[0].state === "connected", "the connection", 10_000)
      yield* settle(200)
      expect(publishes(fake.connections[fake.connections.length - 1])).toEqual([])
    }),
    30_000
  )
})
