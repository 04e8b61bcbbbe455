/**
 * Plain TCP connections on their raw libuv handles (transport/rawTcp.ts): the
 * `net.Socket` behaviour the connection code relies on, against real sockets
 * on 127.0.0.1, and the broker on both transports (raw by default,
 * `MIDGE_NET_SOCKETS=1` for net.Socket).
 */
import { execFileSync } from "node:child_process"
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import mqttPacket from "mqtt-packet"
import { acceptRaw, rawTcpAvailable, RawTcpSocket, rawTcpStats } from "../../src/transport/rawTcp.js"
import type { MqttSocket } from "../../src/transport/websocket.js"
import { collect, connectClient, publish, startBroker, subscribe, waitFor } from "../e2e/harness.js"

// the connection code's socket type
const _raw: (handle: unknown) => MqttSocket = RawTcpSocket.accept
void _raw

/** A net.Server whose connections arrive as RawTcpSockets. */
const rawServer = Effect.acquireRelease(
  Effect.async<{ readonly port: number; readonly accepted: Array<RawTcpSocket>; readonly server: net.Server }>((resume) => {
    const accepted: Array<RawTcpSocket> = []
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const ok = acceptRaw(server, (socket) => accepted.push(socket), (error) => {
        throw error
      })
      if (!ok) throw new Error("acceptRaw refused the server")
      resume(Effect.succeed({ port: (server.address() as net.AddressInfo).port, accepted, server }))
    })
  }),
  ({ accepted, server }) =>
    Effect.async<void>((resume) => {
      for (const s of accepted) s.destroy()
      server.close(() => resume(Effect.void))
    })
)

/** A plain client socket that keeps what it receives. */
const client = (port: number) =>
  Effect.acquireRelease(
    Effect.async<{ readonly socket: net.Socket; readonly received: Array<Buffer>; readonly events: Array<string> }>((resume) => {
      const received: Array<Buffer> = []
      const events: Array<string> = []
      const socket = net.connect(port, "127.0.0.1", () => resume(Effect.succeed({ socket, received, events })))
      socket.on("data", (d) => received.push(d))
      socket.on("end", () => events.push("end"))
      socket.on("close", () => events.push("close"))
      socket.on("error", (e) => events.push(`error ${(e as NodeJS.ErrnoException).code}`))
    }),
  ({ socket }) => Effect.sync(() => socket.destroy())
)

const bytes = (chunks: ReadonlyArray<Buffer>) => chunks.reduce((n, c) => n + c.length, 0)

/** A raw server with one client connected (`paused`: the client reads nothing until resumed) and its accepted socket. */
const connectedPair = (paused = false) =>
  Effect.gen(function* () {
    const { port, accepted } = yield* rawServer
    const c = yield* client(port)
    if (paused) c.socket.pause()
    yield* waitFor(() => accepted.length === 1)
    return { c, socket: accepted[0] }
  })

/**
 * Run a client in another process that connects, sends `bytes` and exits, while this process's event
 * loop waits for it (`execFileSync`): its connection and bytes wait in the kernel until they are accepted.
 */
const sendBeforeAccept = (port: number, bytes: Buffer) =>
  execFileSync(process.execPath, [
    "-e",
    `const s = require("net").connect(${port}, "127.0.0.1", () => s.end(Buffer.from("${bytes.toString("hex")}", "hex"), () => process.exit(0)))`
  ])

/** What the accepted socket gets: its data (copied) and its events in order. */
const record = (socket: RawTcpSocket) => {
  const got: Array<Buffer> = []
  const events: Array<string> = []
  socket.on("data", (d) => got.push(Buffer.from(d)))
  socket.on("error", (e) => events.push(`error ${(e as NodeJS.ErrnoException).code}`))
  socket.on("end", () => events.push("end"))
  socket.on("close", () => events.push("close"))
  return { got, events }
}

describe.skipIf(!rawTcpAvailable())("raw TCP sockets", () => {
  it.scopedLive("reads, writes, peer address; the peer's EOF is end, then the socket closes after what it had to send", () =>
    Effect.gen(function* () {
      const { c, socket } = yield* connectedPair()
      const { got, events } = record(socket)
      expect(socket.remoteAddress).toBe("127.0.0.1")
      expect(socket.remotePort).toBe(c.socket.localPort)
      c.socket.write("hello")
      yield* waitFor(() => Buffer.concat(got).toString() === "hello")
      expect(socket.write(Buffer.from("world"))).toBe(true)
      yield* waitFor(() => Buffer.concat(c.received).toString() === "world")
      c.socket.end()
      yield* waitFor(() => events.includes("close"))
      expect(events).toEqual(["end", "close"])
      expect(socket.destroyed).toBe(true)
      yield* waitFor(() => c.events.includes("end"))
    }))

  it.scopedLive("each socket keeps its own peer address: three clients, read in turn, then again", () =>
    Effect.gen(function* () {
      const { port, accepted } = yield* rawServer
      const clients = [yield* client(port), yield* client(port), yield* client(port)]
      yield* waitFor(() => accepted.length === 3)
      const ports = clients.map((c) => c.socket.localPort)
      // accepted in connect order on one listener; match by port to be independent of it
      const seen = accepted.map((s) => s.remotePort)
      expect([...seen].sort()).toEqual([...ports].sort())
      for (const s of accepted) expect(s.remoteAddress).toBe("127.0.0.1")
      // read again after the others: each answers its own, not the last one read
      expect(accepted.map((s) => s.remotePort)).toEqual(seen)
      expect(new Set(seen).size).toBe(3)
    }))

  it.scopedLive("every read's chunk keeps its bytes after later reads, on this connection and others (nothing handed up is reused)", () =>
    Effect.gen(function* () {
      const { port, accepted } = yield* rawServer
      const clients = [yield* client(port), yield* client(port), yield* client(port)]
      yield* waitFor(() => accepted.length === 3)
      // the chunks as delivered, not copied: a chunk that shared memory with a later read would change
      const kept = accepted.map((socket) => {
        const chunks: Array<Buffer> = []
        socket.on("data", (d) => chunks.push(d))
        return chunks
      })
      const sent: Array<Array<Buffer>> = [[], [], []]
      let seed = 7
      const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
      // short reads (byte-copied), middling ones (a slab's), large ones (their own buffer); 40 rounds fill slabs several times
      for (let round = 0; round < 40; round++) {
        for (let i = 0; i < 3; i++) {
          const size = [1 + Math.floor(random() * 127), 129 + Math.floor(random() * 8000), 8193 + Math.floor(random() * 30000)][(round + i) % 3]
          const data = Buffer.alloc(size)
          for (let j = 0; j < size; j++) data[j] = Math.floor(random() * 256)
          sent[i].push(data)
          clients[i].socket.write(data)
        }
        const expected = sent.map(bytes)
        yield* waitFor(() => kept.every((chunks, i) => bytes(chunks) === expected[i]), `round ${round}`)
      }
      for (let i = 0; i < 3; i++) expect(Buffer.concat(kept[i]).equals(Buffer.concat(sent[i]))).toBe(true)
    }))

  it.scopedLive("a peer that does not read: write says false from 16 KiB queued, drain once all is taken, nothing lost or reordered", () =>
    Effect.gen(function* () {
      const { c, socket } = yield* connectedPair(true)
      let drains = 0
      socket.on("drain", () => drains++)
      const chunk = Buffer.alloc(64 * 1024)
      let written = 0
      let accepting = true
      for (let i = 0; i < 200 && accepting; i++) {
        chunk.writeUInt32BE(i, 0)
        accepting = socket.write(Buffer.from(chunk))
        written += chunk.length
      }
      expect(accepting).toBe(false)
      expect(socket.writableLength).toBeGreaterThanOrEqual(16 * 1024)
      expect(drains).toBe(0)
      c.socket.resume()
      yield* waitFor(() => drains === 1)
      expect(socket.writableLength).toBe(0)
      yield* waitFor(() => bytes(c.received) === written)
      const all = Buffer.concat(c.received)
      for (let i = 0; i * chunk.length < written; i++) expect(all.readUInt32BE(i * chunk.length)).toBe(i)
    }))

  it.scopedLive("destroySoon: everything queued is delivered, then EOF, then close; pause stops reading until resume", () =>
    Effect.gen(function* () {
      const { c, socket } = yield* connectedPair(true)
      const { got, events } = record(socket)
      const closed = () => events.includes("close")
      socket.pause()
      c.socket.write("while paused")
      yield* Effect.sleep("100 millis")
      expect(got).toEqual([])
      socket.resume()
      yield* waitFor(() => Buffer.concat(got).toString() === "while paused")
      // more than the kernel's buffers take from a client that does not read: part of it stays queued
      const big = Buffer.alloc(32 * 1024 * 1024, 7)
      socket.write(big)
      expect(socket.writableLength).toBeGreaterThan(0)
      socket.destroySoon()
      expect(socket.writable).toBe(false)
      expect(socket.write(Buffer.from("late"))).toBe(false)
      yield* Effect.sleep("50 millis")
      expect(closed()).toBe(false) // the client has not read it yet
      c.socket.resume()
      yield* waitFor(() => c.events.includes("end"))
      expect(bytes(c.received)).toBe(big.length)
      yield* waitFor(closed)
    }))

  it.scopedLive("a reset by the peer is an error, then close; a write to a reset connection fails later, not in write", () =>
    Effect.gen(function* () {
      const { c, socket } = yield* connectedPair()
      const { events } = record(socket)
      c.socket.resetAndDestroy()
      yield* waitFor(() => events.includes("close"))
      expect(events[0]).toBe("error ECONNRESET")
      expect(events.at(-1)).toBe("close")
      expect(socket.write(Buffer.from("x"))).toBe(false)
    }))
})

describe("the broker on plain TCP", () => {
  it.scopedLive("a client whose CONNECT, PUBLISH and DISCONNECT were all sent before it was accepted: its message is delivered", () =>
    Effect.gen(function* () {
      const broker = yield* startBroker()
      const sub = yield* connectClient(broker.url, { clientId: "early-sub" })
      const got = collect(sub)
      yield* subscribe(sub, "early/#", { qos: 1 })
      const gen = (packet: object) => mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: 4 })
      const frames = Buffer.concat([
        gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId: "early-pub", keepalive: 60 }),
        gen({ cmd: "publish", topic: "early/t", payload: Buffer.from("hello"), qos: 1, messageId: 1, retain: false, dup: false }),
        gen({ cmd: "disconnect" })
      ])
      sendBeforeAccept(broker.port, frames)
      yield* waitFor(() => got.length === 1, "the message")
      expect([got[0].topic, got[0].payload.toString(), got[0].qos]).toEqual(["early/t", "hello", 1])
    }))

  for (const transport of ["raw handles", "net.Socket (MIDGE_NET_SOCKETS=1)"] as const) {
    it.scopedLive(`${transport}: QoS 0-2 through MQTT.js, a large message, a client's end`, () =>
      Effect.gen(function* () {
        const previous = process.env["MIDGE_NET_SOCKETS"]
        if (transport !== "raw handles") process.env["MIDGE_NET_SOCKETS"] = "1"
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            if (previous === undefined) delete process.env["MIDGE_NET_SOCKETS"]
            else process.env["MIDGE_NET_SOCKETS"] = previous
          })
        )
        const accepted = rawTcpStats.accepted
        const broker = yield* startBroker()
        const sub = yield* connectClient(broker.url, { clientId: "raw-sub" })
        const got = collect(sub)
        yield* subscribe(sub, "t/#", { qos: 2 })
        const pub = yield* connectClient(broker.url, { clientId: "raw-pub" })
        const large = "x".repeat(3 * 1024 * 1024)
        for (const qos of [0, 1, 2] as const) yield* publish(pub, `t/${qos}`, `q${qos}`, { qos })
        yield* publish(pub, "t/large", large, { qos: 1 })
        yield* waitFor(() => got.length === 4, "4 messages", 10_000)
        // (in order per QoS; a QoS 2 message reaches MQTT.js's handler only on PUBREL)
        expect(got.map((m) => [m.topic, m.qos]).sort()).toEqual([["t/0", 0], ["t/1", 1], ["t/2", 2], ["t/large", 1]])
        expect(got.find((m) => m.topic === "t/large")?.payload === large).toBe(true)
        // which transport carried them
        expect(rawTcpStats.accepted - accepted).toBe(transport === "raw handles" && rawTcpAvailable() ? 2 : 0)
        const gone = yield* connectClient(broker.url, { clientId: "raw-gone", will: { topic: "t/will", payload: Buffer.from("w"), qos: 1, retain: false } })
        gone.stream.destroy()
        yield* waitFor(() => got.length === 5, "the will")
        expect(got[4].topic).toBe("t/will")
      }))
  }
})
