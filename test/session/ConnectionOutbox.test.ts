/**
 * The connection's outbox with state made on first use: connections share the empty outbox array
 * until they keep a frame by reference, and the parser's empty parts and onData's packet list are
 * shared too. What is checked is what a client sees: every frame written, in order, at the flush.
 * Sockets are stand-ins that take every write (as bench/hotpath.mjs does); the bytes are real MQTT.
 */
import { describe, expect, it } from "@effect/vitest"
import { EventEmitter } from "node:events"
import Mqtt from "mqtt-packet"
import { silentLog } from "../../src/log/Log.js"
import { Connection } from "../../src/session/Connection.js"
import { Core, defaultSettings } from "../../src/session/Core.js"

class StandIn extends EventEmitter {
  readonly remoteAddress = "127.0.0.1"
  readonly writableLength = 0
  readonly writable = true
  readonly destroyed = false
  readonly writes: Array<Buffer> = []
  constructor(readonly remotePort: number) {
    super()
  }
  write(chunk: Buffer): boolean {
    this.writes.push(Buffer.from(chunk))
    return true
  }
  pause(): this {
    return this
  }
  resume(): this {
    return this
  }
  end(): this {
    return this
  }
  destroySoon(): void {}
  destroy(): void {}
  setNoDelay(): this {
    return this
  }
  /** everything written since the last call, as one Buffer */
  take(): Buffer {
    const all = Buffer.concat(this.writes)
    this.writes.length = 0
    return all
  }
}

const gen = (packet: Mqtt.Packet) => Mqtt.generate(packet, { protocolVersion: 4 })

const connect = (clientId: string) => gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId, clean: true, keepalive: 0 })

const setup = () => {
  const core = new Core({ ...defaultSettings, connectionMessages: false }, silentLog(), () => Date.now())
  const listener = { port: 1883, mountPoint: undefined, maxQos: 2 as const, allowAnonymous: undefined, allowZeroLengthClientid: undefined, autoIdPrefix: undefined }
  const hooks = { sessionStarted: () => {}, closed: () => {} }
  let port = 10000
  /** a connection on a socket of its own, before its CONNECT */
  const open = () => {
    const socket = new StandIn(port++)
    return { socket, conn: new Connection(socket as never, core, hooks, listener) }
  }
  const client = (clientId: string) => {
    const { socket, conn } = open()
    conn.onData(connect(clientId))
    conn.flush()
    return { socket, conn }
  }
  return { client, open }
}

describe("connection outbox", () => {
  it("a connection that never kept a frame by reference writes its staged frames at the flush, also when slow (sliced writes)", () => {
    const { client } = setup()
    const pub = client("pub")
    expect([...pub.socket.take()]).toEqual([0x20, 0x02, 0x00, 0x00]) // CONNACK, staged
    // a slow connection's outbox is written segment by segment (writeOut(sliced)): the stage must
    // become a segment of the connection's own, and be written in the same flush
    ;(pub.conn as unknown as { slow: boolean }).slow = true
    pub.conn.onData(gen({ cmd: "publish", topic: "t/1", payload: Buffer.from("x"), qos: 1, retain: false, dup: false, messageId: 7 }))
    pub.conn.flush()
    expect([...pub.socket.take()]).toEqual([0x40, 0x02, 0x00, 0x07]) // PUBACK 7
  })

  it("connections sharing the empty outbox and parser state keep their frames apart: split frames, by-reference and staged frames, in order", () => {
    const { client } = setup()
    const sub = client("sub")
    sub.socket.take()
    sub.conn.onData(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t/#", qos: 1 }] }))
    sub.conn.flush()
    expect([...sub.socket.take()]).toEqual([0x90, 0x03, 0x00, 0x01, 0x01]) // SUBACK, granted 1
    const pubs = [client("p0"), client("p1"), client("p2")]
    for (const p of pubs) p.socket.take()
    // each publisher sends a QoS 0 and a QoS 1 PUBLISH, split in the middle of the second frame
    const frames = pubs.map((_, i) =>
      Buffer.concat([
        gen({ cmd: "publish", topic: `t/${i}`, payload: Buffer.from(`zero-${i}`), qos: 0, retain: false, dup: false }),
        gen({ cmd: "publish", topic: `t/${i}`, payload: Buffer.from(`one-${i}`), qos: 1, retain: false, dup: false, messageId: 10 + i })
      ])
    )
    const cut = frames.map((f) => f.length - 3)
    pubs.forEach((p, i) => p.conn.onData(frames[i].subarray(0, cut[i])))
    pubs.forEach((p, i) => p.conn.onData(frames[i].subarray(cut[i])))
    for (const c of [sub, ...pubs]) c.conn.flush()
    pubs.forEach((p, i) => expect([...p.socket.take()]).toEqual([0x40, 0x02, 0x00, 10 + i]))
    // the subscriber, in the order the broker read them: the QoS 0 messages (shared frames, by
    // reference) from the first chunks, then the QoS 1 ones (staged) completed by the second
    const parser = Mqtt.parser({ protocolVersion: 4 })
    const got: Array<string> = []
    parser.on("packet", (p) => {
      if (p.cmd === "publish") got.push(`${p.topic} ${p.qos} ${p.payload.toString()}`)
    })
    parser.parse(sub.socket.take())
    expect(got).toEqual(["t/0 0 zero-0", "t/1 0 zero-1", "t/2 0 zero-2", "t/0 1 one-0", "t/1 1 one-1", "t/2 1 one-2"])
    // staged control frames after a turn that wrote others: PINGRESP, UNSUBACK, then SUBACK, in order
    sub.conn.onData(
      Buffer.concat([
        gen({ cmd: "pingreq" }),
        gen({ cmd: "unsubscribe", messageId: 2, unsubscriptions: ["t/#"] }),
        gen({ cmd: "subscribe", messageId: 3, subscriptions: [{ topic: "u/1", qos: 2 }] })
      ])
    )
    sub.conn.flush()
    expect([...sub.socket.take()]).toEqual([0xd0, 0x00, 0xb0, 0x02, 0x00, 0x02, 0x90, 0x03, 0x00, 0x03, 0x02])
  })

  it("a reply to the last packet of a read goes to the socket at once; the replies of one read leave together at the flush; what follows a reply comes after it", () => {
    const { open } = setup()
    const frames = (socket: StandIn) => socket.writes.map((w) => [...w])

    // a CONNECT alone in its read: the CONNACK is written within the read, not at the end of the turn
    const { socket: a, conn } = open()
    conn.onData(connect("a"))
    expect(frames(a)).toEqual([[0x20, 0x02, 0x00, 0x00]])
    conn.flush()
    expect(a.writes.length).toBe(1)
    // so is the PINGRESP to a PINGREQ alone
    a.writes.length = 0
    conn.onData(gen({ cmd: "pingreq" }))
    expect(frames(a)).toEqual([[0xd0, 0x00]])

    // a CONNECT and two SUBSCRIBEs in one read: nothing before the flush, then one write, in order
    const { socket: b, conn: pipelined } = open()
    pipelined.onData(
      Buffer.concat([
        connect("b"),
        gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "x/1", qos: 0 }] }),
        gen({ cmd: "subscribe", messageId: 2, subscriptions: [{ topic: "x/2", qos: 1 }] })
      ])
    )
    expect(b.writes.length).toBe(0)
    pipelined.flush()
    expect(frames(b)).toEqual([[0x20, 0x02, 0x00, 0x00, 0x90, 0x03, 0x00, 0x01, 0x00, 0x90, 0x03, 0x00, 0x02, 0x01]])

    // a retained message: the SUBACK is written within the read, the retained PUBLISH at the flush, after it
    conn.onData(gen({ cmd: "publish", topic: "r/1", payload: Buffer.from("kept"), qos: 0, retain: true, dup: false }))
    a.writes.length = 0
    conn.onData(gen({ cmd: "subscribe", messageId: 3, subscriptions: [{ topic: "r/#", qos: 0 }] }))
    expect(frames(a)).toEqual([[0x90, 0x03, 0x00, 0x03, 0x00]])
    conn.flush()
    expect(a.writes.length).toBe(2)
    const got: Array<string> = []
    const parser = Mqtt.parser({ protocolVersion: 4 })
    parser.on("packet", (p) => got.push(p.cmd === "publish" ? `publish ${p.topic} ${p.retain} ${p.payload.toString()}` : p.cmd))
    parser.parse(a.writes[1])
    expect(got).toEqual(["publish r/1 true kept"])

    // a reply behind frames still in the outbox waits for them: the SUBACK after the QoS 0 message
    const { socket: c, conn: busy } = open()
    busy.onData(connect("c"))
    busy.onData(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "y/#", qos: 0 }] }))
    c.writes.length = 0
    conn.onData(gen({ cmd: "publish", topic: "y/1", payload: Buffer.from("m"), qos: 0, retain: false, dup: false }))
    busy.onData(gen({ cmd: "subscribe", messageId: 2, subscriptions: [{ topic: "z", qos: 0 }] }))
    expect(c.writes.length).toBe(0)
    busy.flush()
    got.length = 0
    parser.parse(Buffer.concat(c.writes))
    expect(got).toEqual(["publish y/1 false m", "suback"])
  })
})
