/**
 * A raw MQTT client for the restart tests: it sends exactly the packets it is
 * told to (no automatic acks, no automatic resends) and records every packet
 * the broker sends, so a test can stop a flow in any state and see what the
 * broker resends after a restart.
 */
import * as net from "node:net"
import { Effect, type Scope } from "effect"
import mqttPacket from "mqtt-packet"
import { waitFor } from "../e2e/harness.js"

export type Packet = mqttPacket.Packet

export interface Raw {
  /** every packet received after CONNACK */
  readonly got: Array<Packet>
  readonly connack: mqttPacket.IConnackPacket
  readonly send: (packet: Packet) => void
  /** wait until `n` packets were received in all */
  readonly waitCount: (n: number, what?: string) => Effect.Effect<void, Error>
  /** close the socket without DISCONNECT (a lost connection) */
  readonly drop: () => void
}

export interface RawOptions {
  readonly clientId: string
  readonly protocolVersion?: 4 | 5
  readonly clean?: boolean
  readonly properties?: mqttPacket.IConnectPacket["properties"]
  readonly will?: mqttPacket.IConnectPacket["will"]
}

export const rawConnect = (port: number, o: RawOptions): Effect.Effect<Raw, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<Raw, Error>((resume) => {
      const protocolVersion = o.protocolVersion ?? 4
      const socket = net.connect({ port, host: "127.0.0.1" })
      const parser = mqttPacket.parser({ protocolVersion })
      const got: Array<Packet> = []
      const send = (p: Packet): void => {
        if (!socket.destroyed) socket.write(mqttPacket.generate(p, { protocolVersion }))
      }
      let connack: mqttPacket.IConnackPacket | undefined
      parser.on("packet", (p: Packet) => {
        if (connack !== undefined) return void got.push(p)
        if (p.cmd !== "connack") return resume(Effect.fail(new Error(`expected CONNACK, got ${p.cmd}`)))
        connack = p
        resume(
          Effect.succeed({
            got,
            connack,
            send,
            waitCount: (n, what = `${n} packets`) => waitFor(() => got.length >= n, `${o.clientId}: ${what}`),
            drop: () => void socket.destroy()
          })
        )
      })
      socket.on("data", (chunk) => parser.parse(chunk))
      socket.on("error", (e) => {
        if (connack === undefined) resume(Effect.fail(e))
      })
      socket.once("connect", () =>
        send({
          cmd: "connect",
          protocolId: "MQTT",
          protocolVersion,
          clientId: o.clientId,
          clean: o.clean ?? false,
          keepalive: 0,
          ...(o.properties !== undefined ? { properties: o.properties } : {}),
          ...(o.will !== undefined ? { will: o.will } : {})
        } as Packet)
      )
    }),
    (raw) => Effect.sync(() => raw.drop())
  )
