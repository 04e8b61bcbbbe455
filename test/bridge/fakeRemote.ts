/**
 * A scripted remote broker for bridge tests (a socket server speaking
 * mqtt-packet on 127.0.0.1), for what a real broker will not show on demand:
 * every packet the bridge sends is recorded, and the test decides the answers.
 */
import * as net from "node:net"
import { Effect, type Scope } from "effect"
import * as mqtt from "mqtt-packet"

export interface FakeConnection {
  readonly socket: net.Socket
  readonly packets: Array<mqtt.Packet & { receivedAt: number }>
  readonly send: (packet: mqtt.Packet) => void
  version: number
}

export interface Fake {
  readonly port: number
  readonly connections: Array<FakeConnection>
}

/** A scripted remote broker: `onPacket` answers (or not); everything received is recorded. */
export const fakeBroker = (onPacket: (c: FakeConnection, p: mqtt.Packet, index: number) => void): Effect.Effect<Fake, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ fake: Fake; server: net.Server }>((resume) => {
      const connections: Array<FakeConnection> = []
      const server = net.createServer((socket) => {
        const parser = mqtt.parser({ protocolVersion: 4 })
        const c: FakeConnection = {
          socket,
          packets: [],
          version: 4,
          send: (p) => {
            if (!socket.destroyed) socket.write(mqtt.generate(p, { protocolVersion: c.version as 3 | 4 | 5 }))
          }
        }
        const index = connections.push(c) - 1
        parser.on("packet", (p) => {
          if (p.cmd === "connect") c.version = p.protocolVersion ?? 4
          c.packets.push(Object.assign(p, { receivedAt: Date.now() }))
          onPacket(c, p, index)
        })
        socket.on("data", (d) => parser.parse(d))
        socket.on("error", () => {})
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ fake: { port: (server.address() as net.AddressInfo).port, connections }, server })))
    }),
    ({ fake, server }) =>
      Effect.sync(() => {
        for (const c of fake.connections) c.socket.destroy()
        server.close()
      })
  ).pipe(Effect.map(({ fake }) => fake))

/** CONNACK accepted; PUBLISH acknowledged; SUBSCRIBE / UNSUBSCRIBE answered; PINGREQ answered. */
export const polite = (c: FakeConnection, p: mqtt.Packet) => {
  switch (p.cmd) {
    case "connect":
      return c.send({ cmd: "connack", returnCode: 0, reasonCode: 0, sessionPresent: false })
    case "publish":
      if (p.qos === 1) c.send({ cmd: "puback", messageId: p.messageId })
      if (p.qos === 2) c.send({ cmd: "pubrec", messageId: p.messageId })
      return
    case "pubrel":
      return c.send({ cmd: "pubcomp", messageId: p.messageId })
    case "subscribe":
      return c.send({ cmd: "suback", messageId: p.messageId, granted: p.subscriptions.map((s) => s.qos) })
    case "unsubscribe":
      return c.send({ cmd: "unsuback", messageId: p.messageId, granted: p.unsubscriptions.map(() => 0) })
    case "pingreq":
      return c.send({ cmd: "pingresp" })
  }
}

/** The packets of one kind a connection received. */
export const of = <C extends mqtt.Packet["cmd"]>(c: FakeConnection, cmd: C) => c.packets.filter((p): p is Extract<mqtt.Packet, { cmd: C }> & { receivedAt: number } => p.cmd === cmd)
