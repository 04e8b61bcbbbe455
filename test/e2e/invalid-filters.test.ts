/**
 * SUBSCRIBE and UNSUBSCRIBE with a filter that is not a topic filter (`a/#/b`, `a+`, `#x`, an empty
 * one): the packet is malformed [MQTT-4.7.1], so the connection closes (MQTT 5: DISCONNECT 0x81
 * first) with the lines of Mosquitto's handle_subscribe.c / handle_unsubscribe.c, compared with
 * Debian's Mosquitto 2.0.11 on the same bytes, for 3.1, 3.1.1 and 5. A well-formed filter whose
 * `$share/` form is malformed (`$share/g`, `$share//x`) is refused instead: SUBACK 0x80 (v5 0x8F),
 * UNSUBACK 0x8F for MQTT 5, a close for 3.1.1 UNSUBSCRIBE, which has no code for it (Mosquitto
 * takes `$share/g` as a plain filter: a documented difference, docs/security.md).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { type Mosquitto, startMosquitto } from "../support/processes.js"
import { packetsOf, rawClient, settle, startBroker, type TestBroker, waitFor } from "./harness.js"

type Version = 3 | 4 | 5

const connect = (clientId: string, protocolVersion: Version) =>
  mqttPacket.generate(
    { cmd: "connect", protocolId: protocolVersion === 3 ? "MQIsdp" : "MQTT", protocolVersion, clean: true, keepalive: 0, clientId } as mqttPacket.IConnectPacket,
    { protocolVersion }
  )

/** SUBSCRIBE (QoS 0, message id 1) or UNSUBSCRIBE (message id 7), written by hand: mqtt-packet's generator will not write every filter here */
const filterPacket = (kind: "subscribe" | "unsubscribe", filters: Array<string>, protocolVersion: Version) => {
  const parts = [Buffer.from([0, kind === "subscribe" ? 1 : 7])]
  if (protocolVersion === 5) parts.push(Buffer.from([0])) // no properties
  for (const f of filters) {
    const b = Buffer.from(f, "utf8")
    parts.push(Buffer.from([b.length >> 8, b.length & 0xff]), b)
    if (kind === "subscribe") parts.push(Buffer.from([0]))
  }
  const body = Buffer.concat(parts)
  return Buffer.concat([Buffer.from([kind === "subscribe" ? 0x82 : 0xa2, body.length]), body])
}
const subscribe = (filters: Array<string>, protocolVersion: Version) => filterPacket("subscribe", filters, protocolVersion)
const unsubscribe = (filters: Array<string>, protocolVersion: Version) => filterPacket("unsubscribe", filters, protocolVersion)


/** Send the frames and wait for the broker to close (bounded); what it sent, in hex */
const exchange = (port: number, frames: Array<Buffer>, version: Version) =>
  Effect.gen(function* () {
    const c = yield* rawClient(port)
    for (const f of frames) yield* c.write(f)
    yield* c.waitClosed(5_000).pipe(Effect.orElse(() => Effect.void))
    // MQTT 5: the packets and their reason codes (the CONNACK's properties and the DISCONNECT's reason string differ)
    const sent = version === 5 ? packetsOf(c, 5).map((p) => `${p.cmd} ${(p as { reasonCode?: number }).reasonCode}`).join(", ") : c.data().toString("hex")
    return { sent, closed: c.closed() }
  }).pipe(Effect.scoped)

/** handle_subscribe.c's / handle_unsubscribe.c's line and the close's notice, timestamps out */
const filterLines = (lines: ReadonlyArray<string>): Array<string> =>
  lines.map((l) => l.replace(/^\d+: /, "")).filter((l) => /^((Invalid|Empty) (un)?subscription|Client \S+ disconnected)/.test(l))

/** The same frames to Debian's mosquitto and to Midge: the same answer, both closed, and the same lines */
const sameAsMosquitto = (mosquitto: Mosquitto, midge: TestBroker, id: string, version: Version, frames: Array<Buffer>) =>
  Effect.gen(function* () {
    const beforeTheirs = mosquitto.log().length
    const beforeOurs = midge.log.recent.length
    const theirs = yield* exchange(mosquitto.port, frames, version)
    const ours = yield* exchange(midge.port, frames, version)
    expect([id, ours]).toStrictEqual([id, theirs])
    expect([id, ours.closed]).toStrictEqual([id, true])
    yield* waitFor(() => mosquitto.log().slice(beforeTheirs).includes(`Client ${id} disconnected`), `Mosquitto's line for ${id}`)
    yield* waitFor(() => midge.log.recent.slice(beforeOurs).some((l) => l.startsWith(`Client ${id} disconnected`)), `Midge's line for ${id}`)
    const expected = filterLines(mosquitto.log().slice(beforeTheirs).split("\n"))
    expect([id, expected.length > 0]).toStrictEqual([id, true])
    expect([id, filterLines(midge.log.recent.slice(beforeOurs))]).toStrictEqual([id, expected])
  })

describe("SUBSCRIBE and UNSUBSCRIBE with an invalid topic filter", () => {
  it.scopedLive("SUBSCRIBE, 3.1 / 3.1.1 / 5: the connection closes as Mosquitto 2.0.11 closes it (v5: DISCONNECT 0x81), with its lines", () =>
    Effect.gen(function* () {
      const mosquitto = yield* startMosquitto(["allow_anonymous true"])
      const midge = yield* startBroker()
      const cases: ReadonlyArray<readonly [string, Version, Array<string>]> = [
        ["s4a", 4, ["a/#/b"]],
        ["s4b", 4, ["a+"]],
        ["s4c", 4, [""]],
        ["s3a", 3, ["+a"]],
        ["s5a", 5, ["a/#/b"]],
        ["s5b", 5, ["#x"]],
        // the valid filter before it is subscribed first, as Mosquitto does
        ["s5c", 5, ["fine/+", "x/#/y"]]
      ]
      // CONNACK, no SUBACK, (v5: DISCONNECT 0x81,) closed
      for (const [id, version, filters] of cases) yield* sameAsMosquitto(mosquitto, midge, id, version, [connect(id, version), subscribe(filters, version)])
      const all = midge.log.recent.join("\n")
      expect(all).toContain("Invalid subscription string from 127.0.0.1, disconnecting.")
      expect(all).toContain("Client s5a disconnected due to malformed packet.")
      expect(all).toContain("s5c 0 fine/+")
    })
  )

  it.scopedLive("SUBSCRIBE: a malformed $share/ form is refused (0x80, v5 0x8F), the other filters granted, the connection stays", () =>
    Effect.gen(function* () {
      const midge = yield* startBroker()
      for (const version of [4, 5] as const) {
        const c = yield* rawClient(midge.port)
        yield* c.write(connect(`share${version}`, version))
        yield* c.write(subscribe(["ok/+", "$share/g", "$share//x", "$share/g/"], version))
        yield* waitFor(() => packetsOf(c, version).some((p) => p.cmd === "suback"), "the SUBACK")
        const suback = packetsOf(c, version).find((p) => p.cmd === "suback") as mqttPacket.ISubackPacket
        const refused = version === 5 ? 0x8f : 0x80
        expect(suback.granted).toEqual([0, refused, refused, refused])
        yield* settle(100)
        expect(c.closed()).toBe(false)
      }
    })
  )

  it.scopedLive("UNSUBSCRIBE, 3.1 / 3.1.1 / 5: the connection closes as Mosquitto 2.0.11 closes it, with its lines", () =>
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
        ["v3a", 3, ["+a"]],
        ["v5a", 5, ["a/#/b"]],
        ["v5b", 5, [""]]
      ]
      // CONNACK and SUBACK, no UNSUBACK, (v5: DISCONNECT 0x81,) closed
      for (const [id, version, filters] of cases) {
        yield* sameAsMosquitto(mosquitto, midge, id, version, [connect(id, version), subscribe(["fine/+"], version), unsubscribe(filters, version)])
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

  it.scopedLive("UNSUBSCRIBE, MQTT 5: UNSUBACK 0x8F for a malformed $share/ form, the others processed, the connection stays", () =>
    Effect.gen(function* () {
      const midge = yield* startBroker()
      const c = yield* rawClient(midge.port)
      yield* c.write(connect("v5", 5))
      yield* c.write(subscribe(["fine/+", "$share/g/t"], 5))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "suback"), "the SUBACK")
      yield* c.write(unsubscribe(["fine/+", "$share/g", "$share//x", "$share/g/t", "never/subscribed"], 5))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "unsuback"), "the UNSUBACK")
      const unsuback = packetsOf(c, 5).find((p) => p.cmd === "unsuback") as mqttPacket.IUnsubackPacket
      expect(unsuback.messageId).toBe(7)
      expect(unsuback.granted).toEqual([0x00, 0x8f, 0x8f, 0x00, 0x11])
      // the valid filters were taken away: unsubscribing again finds nothing
      yield* c.write(unsubscribe(["fine/+", "$share/g/t"], 5))
      yield* waitFor(() => packetsOf(c, 5).filter((p) => p.cmd === "unsuback").length === 2, "the second UNSUBACK")
      expect((packetsOf(c, 5).filter((p) => p.cmd === "unsuback")[1] as mqttPacket.IUnsubackPacket).granted).toEqual([0x11, 0x11])
      yield* settle(100)
      expect(c.closed()).toBe(false)
      expect(packetsOf(c, 5).some((p) => p.cmd === "disconnect")).toBe(false)
      expect(midge.log.recent).toContain("Client v5 sent invalid unsubscription '$share/g'.")
    })
  )
})
