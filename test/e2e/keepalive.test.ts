/**
 * Keepalive on a real socket, timed by TestClock (no sleeps): the broker closes
 * a connection after 1.5 × keepalive of silence [MQTT-3.1.2-24], any packet
 * resets the timer, keepalive 0 disables it [MQTT-3.1.2-23], and the will is
 * published.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream, TestClock } from "effect"
import * as mqttPacket from "mqtt-packet"
import { rawClient, startBroker, waitFor, type RawClient } from "./harness.js"

const connect = (keepalive: number, protocolVersion: 4 | 5, extra: Partial<mqttPacket.IConnectPacket> = {}) =>
  mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion, clientId: `ka-${keepalive}-${protocolVersion}`, clean: true, keepalive, ...extra } as mqttPacket.IConnectPacket, { protocolVersion })

describe("keepalive", () => {
  it.scoped("closes after 1.5 x keepalive of silence; a PINGREQ resets the timer; the will goes out", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const wills: Array<string> = []
      yield* broker.subscribe("ka/will").pipe(
        Stream.runForEach((m) => Effect.sync(() => wills.push(m.payload.toString()))),
        Effect.forkScoped
      )
      const c = yield* rawClient(port)
      yield* c.write(connect(2, 4, { will: { topic: "ka/will", payload: Buffer.from("timed out"), qos: 0, retain: false } }))
      yield* waitFor(() => c.data().length >= 4, "CONNACK")
      yield* TestClock.adjust("2000 millis")
      yield* c.write([0xc0, 0x00]) // PINGREQ at t = 2 s
      yield* waitFor(() => c.data().length >= 6, "PINGRESP")
      expect([...c.data().subarray(4, 6)]).toEqual([0xd0, 0x00])
      yield* TestClock.adjust("2999 millis") // t = 4.999 s: 2.999 s since the PINGREQ
      expect(c.closed()).toBe(false)
      yield* TestClock.adjust("2 millis") // t = 5.001 s: 3.001 s of silence > 1.5 x 2 s
      yield* c.waitClosed()
      yield* waitFor(() => wills.length === 1, "the will")
      expect(wills).toEqual(["timed out"])
    })
  )

  it.scoped("MQTT 5: the broker says DISCONNECT 0x8D (Keep Alive timeout) before closing", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* rawClient(port)
      yield* c.write(connect(1, 5))
      yield* waitFor(() => c.data().length >= 3, "CONNACK")
      const connackLength = c.data().length
      yield* TestClock.adjust("1501 millis")
      yield* c.waitClosed()
      const rest = c.data().subarray(connackLength)
      expect(rest[0]).toBe(0xe0) // DISCONNECT
      expect(rest[2]).toBe(0x8d)
    })
  )

  it.scoped("keepalive 0 disables the timer [MQTT-3.1.2-23]", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* rawClient(port)
      yield* c.write(connect(0, 4))
      yield* waitFor(() => c.data().length >= 4, "CONNACK")
      yield* TestClock.adjust("1 days")
      yield* c.write([0xc0, 0x00])
      yield* waitFor(() => c.data().length >= 6, "PINGRESP")
      expect(c.closed()).toBe(false)
    })
  )

  it.scoped("one watchdog for many connections: each is closed at its own 1.5 x keepalive, the others stay", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      const connected = () => broker.stats().clientsConnected
      // keepalive 2, 4, ..., 16 s: deadlines at 3, 6, ..., 24 s; the even ones send a PINGREQ at 2 s
      const clients: Array<{ readonly keepalive: number; readonly pings: boolean; readonly c: RawClient }> = []
      for (let i = 1; i <= 8; i++) {
        const c = yield* rawClient(port)
        yield* c.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: `many-${i}`, clean: true, keepalive: 2 * i }))
        clients.push({ keepalive: 2 * i, pings: i % 2 === 0, c })
      }
      yield* waitFor(() => clients.every(({ c }) => c.data().length >= 4), "8 CONNACKs")
      yield* TestClock.adjust("2000 millis")
      for (const { c, pings } of clients) if (pings) yield* c.write([0xc0, 0x00])
      yield* waitFor(() => clients.every(({ c, pings }) => !pings || c.data().length >= 6), "the PINGRESPs")
      for (let t = 2000; t < 30_000; t += 500) {
        yield* TestClock.adjust("500 millis")
        const now = t + 500
        const due = clients.filter(({ keepalive, pings }) => now >= (pings ? 2000 : 0) + keepalive * 1500)
        yield* waitFor(() => connected() === clients.length - due.length, `${due.length} closed at ${now} ms`)
        yield* Effect.forEach(due, ({ c }) => c.waitClosed(), { discard: true })
        for (const { c } of clients.filter((x) => !due.includes(x))) expect(c.closed()).toBe(false)
      }
      expect(connected()).toBe(0)
    })
  )

  it.scoped("a socket without CONNECT is closed at the connect timeout while the connected clients have long keepalives", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker({ settings: { connectTimeoutMs: 10_000 } })
      const idle = yield* rawClient(port)
      yield* idle.write(connect(600, 4))
      yield* waitFor(() => idle.data().length >= 4, "CONNACK")
      // the watchdog now sleeps until 900 s; the new socket's 10 s must wake it
      const silent = yield* rawClient(port)
      yield* waitFor(() => broker.stats().socketsOpened === 2, "the second socket accepted")
      yield* TestClock.adjust("9999 millis")
      expect(silent.closed()).toBe(false)
      yield* TestClock.adjust("2 millis")
      yield* silent.waitClosed()
      expect(idle.closed()).toBe(false)
      expect(broker.stats().clientsConnected).toBe(1)
    })
  )

  it.scoped("a connection that never sends CONNECT is closed after the connect timeout", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker({ settings: { connectTimeoutMs: 10_000 } })
      const c = yield* rawClient(port)
      yield* waitFor(() => true)
      yield* TestClock.adjust("9 seconds")
      expect(c.closed()).toBe(false)
      yield* TestClock.adjust("2 seconds")
      yield* c.waitClosed()
    })
  )
})
