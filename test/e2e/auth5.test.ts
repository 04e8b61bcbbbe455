/**
 * MQTT 5 enhanced authentication (AUTH exchange, re-authentication) and server
 * redirection through the pluggable EnhancedAuthentication service.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as mqttPacket from "mqtt-packet"
import { Broker } from "../../src/Broker.js"
import { Log } from "../../src/log/Log.js"
import { EnhancedAuthentication } from "../../src/security/EnhancedAuth.js"
import { packetsOf, rawClient, startBroker, waitFor } from "./harness.js"

const gen = (packet: object) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: 5 })
const connect = (method: string, data?: string) =>
  gen({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 5,
    clientId: `auth-${method}`,
    clean: true,
    keepalive: 0,
    properties: { authenticationMethod: method, ...(data !== undefined ? { authenticationData: Buffer.from(data) } : {}) }
  })
const auth = (reasonCode: number, method: string, data: string) =>
  gen({ cmd: "auth", reasonCode, properties: { authenticationMethod: method, authenticationData: Buffer.from(data) } })

/** CHALLENGE: the broker sends a nonce; the answer must be "answer:<nonce>". REDIRECT: sends clients elsewhere. */
const Challenge = EnhancedAuthentication.layer({
  methods: ["CHALLENGE", "REDIRECT"],
  step: (req) =>
    Effect.succeed(
      req.method === "REDIRECT"
        ? { _tag: "Redirect" as const, serverReference: "other.example:1883", permanent: false }
        : req.step === 0
          ? { _tag: "Continue" as const, data: Buffer.from("n0nce"), state: "n0nce" }
          : req.data?.toString() === `answer:${String(req.state)}`
            ? { _tag: "Success" as const, username: "challenged", data: Buffer.from("welcome") }
            : { _tag: "Failure" as const, reason: "wrong answer" }
    )
})

/** the broker's log lines, `log_type all` (debug: every packet) */
const challengeLog = new Log(["all"], [], false, 500)
const brokerWithChallenge = Effect.gen(function* () {
  const broker = yield* Broker.make({ listeners: [{ port: 0, host: "127.0.0.1" }], log: challengeLog }).pipe(Effect.provide(Challenge), Effect.orDie)
  return broker.listeners[0].port
})

describe("MQTT 5 enhanced authentication", () => {
  it.scopedLive("without a service, an Authentication Method is refused with 0x8C", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* rawClient(port)
      yield* c.write(connect("SCRAM-SHA-1"))
      yield* c.waitClosed()
      expect((packetsOf(c, 5)[0] as mqttPacket.IConnackPacket).reasonCode).toBe(0x8c)
    })
  )

  it.scopedLive("an AUTH challenge / response, then CONNACK; packets sent meanwhile are handled after it", () =>
    Effect.gen(function* () {
      const port = yield* brokerWithChallenge
      const c = yield* rawClient(port)
      yield* c.write(connect("CHALLENGE"))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "auth"), "AUTH 0x18")
      const challenge = packetsOf(c, 5)[0] as mqttPacket.IAuthPacket
      expect(challenge.reasonCode).toBe(0x18)
      expect(challenge.properties?.authenticationData?.toString()).toBe("n0nce")
      yield* c.write(auth(0x18, "CHALLENGE", "answer:n0nce"))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "connack"), "CONNACK")
      const connack = packetsOf(c, 5).find((p) => p.cmd === "connack") as mqttPacket.IConnackPacket
      expect(connack.reasonCode).toBe(0)
      expect(connack.properties?.authenticationMethod).toBe("CHALLENGE")
      expect(connack.properties?.authenticationData?.toString()).toBe("welcome")
      // re-authentication [MQTT-4.12.1]
      yield* c.write(auth(0x19, "CHALLENGE", ""))
      yield* waitFor(() => packetsOf(c, 5).filter((p) => p.cmd === "auth").length === 2, "the new challenge")
      yield* c.write(auth(0x18, "CHALLENGE", "answer:n0nce"))
      yield* waitFor(() => packetsOf(c, 5).filter((p) => p.cmd === "auth").length === 3, "AUTH 0x00")
      expect((packetsOf(c, 5).filter((p) => p.cmd === "auth")[2] as mqttPacket.IAuthPacket).reasonCode).toBe(0)
      // log_type debug: the AUTH packets both ways, in Mosquitto's words
      expect(challengeLog.recent).toContain("Sending AUTH to auth-CHALLENGE (rc24, CHALLENGE)")
      expect(challengeLog.recent).toContain("Received AUTH from auth-CHALLENGE (rc25, CHALLENGE)")
      expect(challengeLog.recent).toContain("Sending AUTH to auth-CHALLENGE (rc0, CHALLENGE)")
      // a failed re-authentication ends the connection
      yield* c.write(auth(0x19, "CHALLENGE", ""))
      yield* waitFor(() => packetsOf(c, 5).filter((p) => p.cmd === "auth").length === 4, "the third challenge")
      yield* c.write(auth(0x18, "CHALLENGE", "wrong"))
      yield* c.waitClosed()
      expect((packetsOf(c, 5).find((p) => p.cmd === "disconnect") as mqttPacket.IDisconnectPacket).reasonCode).toBe(0x87)
    })
  )

  it.scopedLive("a SUBSCRIBE sent before the authentication finished is answered after CONNACK", () =>
    Effect.gen(function* () {
      const port = yield* brokerWithChallenge
      const c = yield* rawClient(port)
      yield* c.write(connect("CHALLENGE"))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "auth"), "AUTH 0x18")
      yield* c.write(Buffer.concat([auth(0x18, "CHALLENGE", "answer:n0nce"), gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t", qos: 0 }] })]))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "suback"), "SUBACK")
      expect(packetsOf(c, 5).map((p) => p.cmd)).toEqual(["auth", "connack", "suback"])
    })
  )

  it.scopedLive("a wrong answer gets CONNACK 0x87", () =>
    Effect.gen(function* () {
      const port = yield* brokerWithChallenge
      const c = yield* rawClient(port)
      yield* c.write(connect("CHALLENGE"))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "auth"), "AUTH 0x18")
      yield* c.write(auth(0x18, "CHALLENGE", "answer:guess"))
      yield* c.waitClosed()
      expect((packetsOf(c, 5).find((p) => p.cmd === "connack") as mqttPacket.IConnackPacket).reasonCode).toBe(0x87)
    })
  )

  it.scopedLive("server redirection: CONNACK 0x9C with a Server Reference", () =>
    Effect.gen(function* () {
      const port = yield* brokerWithChallenge
      const c = yield* rawClient(port)
      yield* c.write(connect("REDIRECT"))
      yield* c.waitClosed()
      const connack = packetsOf(c, 5)[0] as mqttPacket.IConnackPacket
      expect(connack.reasonCode).toBe(0x9c)
      expect(connack.properties?.serverReference).toBe("other.example:1883")
    })
  )

  it.scopedLive("AUTH without the CONNECT's method is a protocol error (0x82)", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const c = yield* rawClient(port)
      yield* c.write(gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "plain", clean: true, keepalive: 0 }))
      yield* waitFor(() => packetsOf(c, 5).some((p) => p.cmd === "connack"), "CONNACK")
      yield* c.write(auth(0x19, "CHALLENGE", ""))
      yield* c.waitClosed()
      expect((packetsOf(c, 5).find((p) => p.cmd === "disconnect") as mqttPacket.IDisconnectPacket).reasonCode).toBe(0x82)
    })
  )
})
