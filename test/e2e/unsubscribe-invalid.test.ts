/**
 * UNSUBSCRIBE with a filter that is not a valid topic filter (`a/#/b`, `a+`, `#x`, an empty one, a
 * malformed `$share/` one). A 3.1 / 3.1.1 client has no code to be told, so the packet is malformed:
 * the connection closes with handle_unsubscribe.c's lines, compared with Debian's Mosquitto 2.0.11
 * on the same bytes. An MQTT 5 client gets UNSUBACK 0x8F (Topic Filter invalid) for that filter and
 * the others of the packet are processed, as SUBSCRIBE answers an invalid filter with 0x8F (Mosquitto
 * closes v5 connections too: a documented difference, docs/security.md).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { startMosquitto } from "../support/processes.js"
import { packetsOf, rawClient, settle, startBroker, waitFor } from "./harness.js"

type Version = 3 | 4 | 5

const connect = (clientId: string, protocolVersion: Version) =>
  mqttPacket.generate(
    { cmd: "connect", protocolId: protocolVersion === 3 ? "MQIsdp" : "MQTT", protocolVersion, clean: true, keepalive: 0, clientId } as mqttPacket.IConnectPacket,
    { protocolVersion }
  )

/** SUBSCRIBE at QoS 0, message id 1 */
const subscribe = (filters: Array<string>, protocolVersion: Version) =>
  mqttPacket.generate(
    { cmd: "subscribe", messageId: 1, subscriptions: filters.map((topic) => ({ topic, qos: 0 })) } as mqttPacket.ISubscribePacket,
    { protocolVersion }
  )

/** UNSUBSCRIBE, message id 7, written by hand: mqtt-packet's generator will not write every filter here */
const unsubscribe = (filters: Array<string>, protocolVersion: Version) => {
  const parts = [Buffer.from([0, 7])]
  if (protocolVersion === 5) parts.push(Buffer.from([0])) // no properties
  for (const f of filters) {
    const b = Buffer.from(f, "utf8")
    parts.push(Buffer.from([b.length >> 8, b.length & 0xff]), b)
  }
  const body = Buffer.concat(parts)
  return Buffer.concat([Buffer.from([0xa2, body.length]), body])
}


/** Send the frames and wait for the broker to close (bounded); what it sent, in hex */
const exchange = (port: number, frames: Array<Buffer>) =>
  Effect.gen(function* () {
    const c = yield* rawClient(port)
    for (const f of frames) yield* c.write(f)
    yield* c.waitClosed(5_000).pipe(Effect.orElse(() => Effect.void))
    return { sent: c.data().toString("hex"), closed: c.closed() }
  }).pipe(Effect.scoped)

/** handle_unsubscribe.c's line and the close's notice, timestamps out */
const unsubscribeLines = (lines: ReadonlyArray<string>): Array<string> =>
  lines.map((l) => l.replace(/^\d+: /, "")).filter((l) => /^((Invalid|Empty) unsubscription|Client \S+ disconnected)/.test(l))

describe("UNSUBSCRIBE with an invalid topic filter", () => {
  it.scopedLive("3.1 / 3.1.1: the connection closes as Mosquitto 2.0.11 closes it, with its lines", () =>
    Effect.gen(function* () {
      const mosquitto = yield* startMosquitto(["allow_anonymous true"])
      const midge = yield* startBroker()
      const cases: ReadonlyArray<readonly [string, Version, Array<string>]> = [
        ["v4a", 4, ["a/#/b"]],
        ["v4b", 4, ["a+"]],
        ["v4c", 4, ["#x"]],
        ["v4d", 4, [""]],
        // the valid filter before it is taken away first, as Mosquitto does
        ["v4e", 4, ["fine/+", "x/#/y"]],
        ["v3a", 3, ["+a"]]
      ]
      for (const [id, version, filters] of cases) {
        const frames = [connect(id, version), subscribe(["fine/+"], version), unsubscribe(filters, version)]
        const beforeTheirs = mosquitto.log().length
        const beforeOurs = midge.log.recent.length
        const theirs = yield* exchange(mosquitto.port, frames)
        const ours = yield* exchange(midge.port, frames)
        // CONNACK and SUBACK, no UNSUBACK, closed
        expect([id, ours]).toStrictEqual([id, theirs])
        expect([id, ours.closed]).toStrictEqual([id, true])
        yield* waitFor(() => mosquitto.log().slice(beforeTheirs).includes(`Client ${id} disconnected`), `Mosquitto's line for ${id}`)
        yield* waitFor(() => midge.log.recent.slice(beforeOurs).some((l) => l.startsWith(`Client ${id} disconnected`)), `Midge's line for ${id}`)
        const expected = unsubscribeLines(mosquitto.log().slice(beforeTheirs).split("\n"))
        expect([id, expected.length]).toStrictEqual([id, 2])
        expect([id, unsubscribeLines(midge.log.recent.slice(beforeOurs))]).toStrictEqual([id, expected])
      }
      // the lines themselves, as a log watcher greps for them
      const all = midge.log.recent.join("\n")
      expect(all).toContain("Invalid unsubscription string from v4a, disconnecting.")
      expect(all).toContain("Empty unsubscription string from v4d, disconnecting.")
      expect(all).toContain("Client v4a disconnected due to malformed packet.")
      // the valid filter of v4e was removed before the invalid one closed the connection
      expect(all).toContain("v4e fine/+")
    })
  )

  it.scopedLive("3.1.1: a malformed $share/ filter, refused by SUBSCRIBE, closes the connection too", () =>
    Effect.gen(function* () {
      const midge = yield* startBroker()
      for (const [id, filter] of [["s1", "$share/g"], ["s2", "$share//x"], ["s3", "$share/g+/x"]] as const) {
        const c = yield* rawClient(midge.port)
        yield* c.write(connect(id, 4))
        yield* c.write(unsubscribe([filter], 4))
        yield* c.waitClosed()
        expect(packetsOf(c, 4).map((p) => p.cmd)).toEqual(["connack"])
        expect(midge.log.recent).toContain(`Invalid unsubscription string from ${id}, disconnecting.`)
      }
    })
  )

  it.scopedLive("MQTT 5: UNSUBACK 0x8F for the invalid filter, the others processed, the connection stays", () =>
    Effect.gen(function* () {
      const midge = yield* startBroker()
      const c = yield* rawClient(midge.port)
      yield* c.write(connect("v5", 5))
      yield* c.write(subscribe(["fine/+", "$share/g/t"], 5))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "suback"), "the SUBACK")
      yield* c.write(unsubscribe(["fine/+", "a/#/b", "a+", "#x", "", "$share/g", "$share/g/t", "never/subscribed"], 5))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "unsuback"), "the UNSUBACK")
      const unsuback = packetsOf(c, 5).find((p) => p.cmd === "unsuback") as mqttPacket.IUnsubackPacket
      expect(unsuback.messageId).toBe(7)
      expect(unsuback.granted).toEqual([0x00, 0x8f, 0x8f, 0x8f, 0x8f, 0x8f, 0x00, 0x11])
      // the valid filters were taken away: unsubscribing again finds nothing
      yield* c.write(unsubscribe(["fine/+", "$share/g/t"], 5))
      yield* waitFor(() => packetsOf(c, 5).filter((p) => p.cmd === "unsuback").length === 2, "the second UNSUBACK")
      expect((packetsOf(c, 5).filter((p) => p.cmd === "unsuback")[1] as mqttPacket.IUnsubackPacket).granted).toEqual([0x11, 0x11])
      yield* settle(100)
      expect(c.closed()).toBe(false)
      expect(packetsOf(c, 5).some((p) => p.cmd === "disconnect")).toBe(false)
      expect(midge.log.recent).toContain("Client v5 sent invalid unsubscription 'a/#/b'.")
      expect(midge.log.recent).toContain("Client v5 sent invalid unsubscription ''.")
      expect(midge.log.recent.some((l) => /unsubscription string/.test(l))).toBe(false)
    })
  )
})
