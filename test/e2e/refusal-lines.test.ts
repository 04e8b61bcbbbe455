/**
 * What a client that breaks the protocol, or is refused, gets on the wire and in the log, beside
 * Debian's Mosquitto 2.0.11 doing the same: CONNECTs with a wrong protocol name or level, a 3.1.1
 * password without a username, an empty 3.1.1 SUBSCRIBE, a malformed or oversized packet, a QoS 1 / 2
 * PUBLISH with packet identifier 0, a wrong
 * password, a socket closed before CONNECT. The notice lines a log watcher greps for
 * ("Client <unknown> disconnected, not authorised.", "... due to malformed packet.") are Mosquitto's.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as mqttPacket from "mqtt-packet"
import { freePort, run, startDaemon, startMosquitto, tempDir } from "../support/processes.js"
import { rawClient, settle, waitFor } from "./harness.js"

const connect = (fields: Partial<mqttPacket.IConnectPacket>, protocolVersion: 3 | 4 | 5 = 4) =>
  mqttPacket.generate({ cmd: "connect", protocolId: protocolVersion === 3 ? "MQIsdp" : "MQTT", protocolVersion, clean: true, keepalive: 0, clientId: "c", ...fields } as mqttPacket.IConnectPacket)

/** A CONNECT with this protocol name and level (and nothing else: an empty client id, clean session) */
const connectWith = (name: string, level: number) => {
  const body = Buffer.concat([Buffer.from([0, name.length]), Buffer.from(name, "latin1"), Buffer.from([level, 0x02, 0, 0, 0, 1, 0x63])])
  return Buffer.concat([Buffer.from([0x10, body.length]), body])
}

/** 3.1.1 CONNECT with the password flag and no username (mqtt-packet will not make one) */
const passwordOnly = (() => {
  const id = Buffer.from("pwnouser")
  const body = Buffer.concat([Buffer.from([0, 4]), Buffer.from("MQTT"), Buffer.from([4, 0x42, 0, 0, 0, id.length]), id, Buffer.from([0, 1, 0x78])])
  return Buffer.concat([Buffer.from([0x10, body.length]), body])
})()

interface Outcome {
  /** what the broker sent before closing (hex) */
  readonly sent: string
  readonly closed: boolean
}

/** Send `bytes` (after a CONNECT of `first`, when given) and wait for the broker to close. */
const exchange = (port: number, bytes: Array<Buffer>) =>
  Effect.gen(function* () {
    const c = yield* rawClient(port)
    for (const b of bytes) yield* c.write(b)
    yield* c.waitClosed(5_000).pipe(Effect.orElse(() => Effect.void))
    return { sent: c.data().toString("hex"), closed: c.closed() } satisfies Outcome
  }).pipe(Effect.scoped)

const CONNACK_OK = "20020000"

/** The scenarios, each a list of frames; what the broker answers and logs is compared. */
const scenarios: ReadonlyArray<readonly [string, Array<Buffer>]> = [
  ["closed before CONNECT", []],
  ["protocol name MQTX", [connectWith("MQTX", 4)]],
  ["protocol level 7", [connectWith("MQTT", 7)]],
  ["MQTT with level 3", [connectWith("MQTT", 3)]],
  ["3.1.1 password without username", [passwordOnly]],
  ["3.1.1 SUBSCRIBE without topics", [connect({ clientId: "nosubs" }), Buffer.from([0x82, 0x02, 0x00, 0x01])]],
  ["CONNECT with the reserved flag set", [(() => {
    const b = Buffer.from(connect({ clientId: "rsv" }))
    b[9] |= 0x01
    return b
  })()]],
  ["bad fixed-header flags on CONNECT (a TLS ClientHello's first byte)", [Buffer.from([0x16, 0x02, 0x00, 0x04])]],
  ["a packet before CONNECT", [Buffer.from([0xc0, 0x00])]],
  ["a second CONNECT", [connect({ clientId: "twice" }), connect({ clientId: "twice" })]],
  ["PUBLISH topic longer than the packet", [connect({ clientId: "trunc" }), Buffer.from([0x30, 0x04, 0x00, 0x09, 0x61, 0x62])]],
  ["a PUBLISH at QoS 3", [connect({ clientId: "q3" }), Buffer.from([0x36, 0x03, 0x00, 0x01, 0x74])]],
  // topic "t", packet identifier 0, payload "x" [MQTT-2.3.1-1]: handle__publish's protocol error in every version
  ["a 3.1.1 QoS 1 PUBLISH with packet identifier 0", [connect({ clientId: "id0q1" }), Buffer.from([0x32, 0x06, 0x00, 0x01, 0x74, 0x00, 0x00, 0x78])]],
  ["a 3.1 QoS 2 PUBLISH with packet identifier 0", [connect({ clientId: "id0q2" }, 3), Buffer.from([0x34, 0x06, 0x00, 0x01, 0x74, 0x00, 0x00, 0x78])]],
  ["a packet over max_packet_size", [connect({ clientId: "big" }), mqttPacket.generate({ cmd: "publish", topic: "t", payload: Buffer.alloc(300), qos: 0, retain: false, dup: false } as mqttPacket.IPublishPacket)]],
  ["a wrong password", [connect({ clientId: "wrongpw", username: "alice", password: Buffer.from("nope") })]],
  ["an unknown user", [connect({ clientId: "nobody", username: "mallory", password: Buffer.from("x") })]]
]

/** The lines these scenarios give, from `from` on, with timestamps, ports and the broker's name out. */
const interesting = (log: string): Array<string> =>
  log
    .split("\n")
    .map((l) => l.replace(/^\d+: /, ""))
    .filter((l) => /^(Client <unknown>|Client \S+ disconnected|Invalid protocol|Invalid QoS|Protocol error from|Sending CONNACK to 127|Bad client)/.test(l) && !/^Client \S+ from /.test(l))

describe("refusals and protocol errors, as Mosquitto answers and logs them", () => {
  it.scopedLive("the same bytes give the same answers and the same lines", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const pw = path.join(dir, "pw")
      expect((yield* run("mosquitto_passwd", ["-c", "-b", pw, "alice", "secret"])).code).toBe(0)
      fs.chmodSync(pw, 0o644)
      const lines = ["allow_anonymous true", `password_file ${pw}`, "max_packet_size 200", "message_size_limit 150"]
      const mosquitto = yield* startMosquitto(lines)
      const port = yield* freePort
      const conf = path.join(dir, "midge.conf")
      fs.writeFileSync(conf, [`listener ${port} 127.0.0.1`, ...lines, "log_type all", ""].join("\n"))
      const midge = yield* startDaemon(["-c", conf], { port })
      // the start-up probes' connections (closed before CONNECT) are logged first
      yield* waitFor(() => midge.out.stderr.includes("Client <unknown> closed its connection."), "the probe's line")
      yield* settle(300)

      for (const [name, frames] of scenarios) {
        const before = [mosquitto.log().length, midge.out.stderr.length] as const
        const theirs = yield* exchange(mosquitto.port, frames)
        const ours = yield* exchange(port, frames)
        expect([name, ours]).toStrictEqual([name, theirs])
        // the lines come with the close: wait until each broker has its notice line
        yield* waitFor(() => /Client (<unknown>|\S+) (closed|disconnected)/.test(mosquitto.log().slice(before[0])), `Mosquitto's line for ${name}`)
        yield* waitFor(() => /Client (<unknown>|\S+) (closed|disconnected)/.test(midge.out.stderr.slice(before[1])), `Midge's line for ${name}`)
        yield* settle(100)
        expect([name, interesting(midge.out.stderr.slice(before[1]))]).toStrictEqual([name, interesting(mosquitto.log().slice(before[0]))])
      }
      // conf.c's start-up note for message_size_limit, in both
      const note = "Note: It is recommended to replace `message_size_limit` with `max_packet_size`."
      expect(mosquitto.log()).toContain(note)
      expect(midge.out.stderr).toContain(note)
      // and a client that does everything right is still welcome
      const ok = yield* exchange(port, [connect({ clientId: "fine", username: "alice", password: Buffer.from("secret") }), Buffer.from([0xe0, 0x00])])
      expect(ok.sent).toBe(CONNACK_OK)
    })
  )
})
