/**
 * A real kill -9 of the broker process (the daemon, src/main.ts bundled)
 * under QoS 2 load, then a restart over the same store: every message is
 * counted end to end.
 *
 * The clients are raw MQTT 3.1.1 clients (mqtt-packet) that keep their QoS 2
 * state exactly as the spec asks and outlive the broker:
 * - the publisher keeps its in-flight ids; on reconnect (clean session 0) it
 *   resends PUBLISH with DUP for those without PUBREC and PUBREL for those
 *   without PUBCOMP [MQTT-4.4.0-1]; it holds back the PUBREL of a few messages
 *   until after the restart, so inbound ids awaiting PUBREL cross the crash;
 * - a subscriber online during the load (persistent session) delivers a
 *   PUBLISH once per packet id until PUBREL (method B, [MQTT-4.3.3-*]) and
 *   holds back the PUBREC of a few messages and the PUBCOMP of a few others,
 *   so outbound deliveries awaiting PUBREC and PUBCOMP cross the crash;
 * - a second persistent subscriber is offline during the load: its queue
 *   crosses the crash.
 *
 * In both modes (a kill -9 is not a power loss: what the broker handed to the
 * OS survives it, and it hands the store's records over before it writes to
 * any socket) every message the publisher got PUBREC for is delivered to both
 * subscribers, and no message is delivered twice (QoS 2 exactly once);
 * messages not acknowledged before the kill are resent by the publisher and
 * delivered exactly once too.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import mqttPacket from "mqtt-packet"
import { bundleEntry, freePortNow as freePort } from "../support/processes.js"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "midge-qos2-crash-"))
const bundle = path.join(root, "main.mjs")
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
beforeAll(() => bundleEntry(bundle))

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const until = async (predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> => {
  const start = Date.now()
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

interface Daemon {
  readonly child: ChildProcess
  readonly output: () => string
  readonly exited: () => boolean
}

const startDaemon = (conf: string): Daemon => {
  const child = spawn(process.execPath, [bundle, "-c", conf], { stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  let exited = false
  child.stdout!.on("data", (d) => (output += d))
  child.stderr!.on("data", (d) => (output += d))
  child.on("exit", () => (exited = true))
  return { child, output: () => output, exited: () => exited }
}

type Packet = mqttPacket.Packet

/** A raw MQTT 3.1.1 connection: one socket, packets in and out. */
const connect = (
  port: number,
  clientId: string,
  onPacket: (p: Packet, send: (p: Packet) => void) => void,
  will?: mqttPacket.IConnectPacket["will"]
) =>
  new Promise<{ socket: net.Socket; sessionPresent: boolean; send: (p: Packet) => void } | undefined>((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" })
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    const send = (p: Packet): void => {
      if (!socket.destroyed) socket.write(mqttPacket.generate(p, { protocolVersion: 4 }))
    }
    let connected = false
    parser.on("packet", (p: Packet) => {
      if (!connected) {
        connected = true
        const ack = p as mqttPacket.IConnackPacket
        if (p.cmd !== "connack" || ack.returnCode !== 0) {
          socket.destroy()
          return resolve(undefined)
        }
        return resolve({ socket, sessionPresent: ack.sessionPresent, send })
      }
      onPacket(p, send)
    })
    socket.on("data", (chunk) => parser.parse(chunk))
    socket.on("error", () => {})
    socket.on("close", () => {
      if (!connected) resolve(undefined)
    })
    socket.once("connect", () =>
      send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId, clean: false, keepalive: 0, ...(will !== undefined ? { will } : {}) } as Packet)
    )
  })

/** Connect, retrying while the broker is not (yet) listening. */
const connectRetrying = async (
  port: number,
  clientId: string,
  onPacket: (p: Packet, send: (p: Packet) => void) => void,
  will?: mqttPacket.IConnectPacket["will"]
) => {
  const start = Date.now()
  for (;;) {
    const c = await connect(port, clientId, onPacket, will)
    if (c !== undefined) return c
    if (Date.now() - start > 15_000) throw new Error(`${clientId} could not connect`)
    await sleep(20)
  }
}

const number = (payload: Buffer | string) => Number(payload.toString().split(" ")[0])

/** A QoS 2 publisher that keeps its state across connections. */
class Publisher {
  readonly inflight = new Map<number, { n: number; state: "publish" | "pubrel" }>()
  /** PUBREC received: the broker has the message */
  readonly acknowledged = new Set<number>()
  readonly completed = new Set<number>()
  private nextId = 0
  next = 0
  send: ((p: Packet) => void) | undefined = undefined
  /** PUBRELs held back until the next connection */
  holding = true
  /** called after each new PUBLISH is written (the test kills the broker from here) */
  afterSend: ((n: number) => void) | undefined = undefined

  constructor(
    readonly total: number,
    readonly window: number,
    readonly holdRel: ReadonlySet<number>
  ) {}

  private publishPacket(id: number, n: number, dup: boolean): Packet {
    return { cmd: "publish", topic: `load/${n % 4}`, payload: Buffer.from(`${n} ${"x".repeat(n % 50)}`), qos: 2, dup, retain: false, messageId: id } as Packet
  }

  readonly onPacket = (p: Packet, send: (p: Packet) => void): void => {
    if (p.cmd === "pubrec") {
      const entry = this.inflight.get(p.messageId!)
      if (entry === undefined) return
      this.acknowledged.add(entry.n)
      entry.state = "pubrel"
      if (!(this.holding && this.holdRel.has(entry.n))) send({ cmd: "pubrel", messageId: p.messageId } as Packet)
    } else if (p.cmd === "pubcomp") {
      const entry = this.inflight.get(p.messageId!)
      if (entry === undefined || entry.state !== "pubrel") return
      this.inflight.delete(p.messageId!)
      this.completed.add(entry.n)
      this.pump()
    }
  }

  /** After CONNACK: resend in order [MQTT-4.4.0-1], then go on. */
  attach(send: (p: Packet) => void): void {
    this.send = send
    for (const [id, e] of this.inflight) {
      if (e.state === "publish") send(this.publishPacket(id, e.n, true))
      else send({ cmd: "pubrel", messageId: id } as Packet)
    }
    this.pump()
  }

  pump(): void {
    const send = this.send
    if (send === undefined) return
    while (this.inflight.size < this.window && this.next < this.total) {
      do this.nextId = (this.nextId % 65535) + 1
      while (this.inflight.has(this.nextId))
      const n = this.next++
      this.inflight.set(this.nextId, { n, state: "publish" })
      send(this.publishPacket(this.nextId, n, false))
      this.afterSend?.(n)
    }
  }

  states() {
    let publish = 0
    let pubrel = 0
    for (const e of this.inflight.values()) if (e.state === "publish") publish++
    else pubrel++
    return { publish, pubrel }
  }
}

/** A QoS 2 subscriber: delivers once per packet id until PUBREL; counts every delivery. */
class Subscriber {
  readonly awaitingRel = new Map<number, number>()
  readonly deliveries = new Map<number, number>()
  /** PUBREC / PUBCOMP held back until the next connection */
  holding = true
  readonly heldRec = new Set<number>()
  readonly heldComp = new Set<number>()

  constructor(
    readonly holdRec: ReadonlySet<number> = new Set(),
    readonly holdComp: ReadonlySet<number> = new Set()
  ) {}

  readonly onPacket = (p: Packet, send: (p: Packet) => void): void => {
    if (p.cmd === "publish") {
      const id = p.messageId!
      const n = number(p.payload)
      if (p.qos !== 2) throw new Error(`message ${n} came at QoS ${p.qos}`)
      if (!this.awaitingRel.has(id)) {
        this.awaitingRel.set(id, n)
        this.deliveries.set(n, (this.deliveries.get(n) ?? 0) + 1)
      }
      if (this.holding && this.holdRec.has(n)) this.heldRec.add(n)
      else send({ cmd: "pubrec", messageId: id } as Packet)
    } else if (p.cmd === "pubrel") {
      const id = p.messageId!
      const n = this.awaitingRel.get(id)
      this.awaitingRel.delete(id)
      if (this.holding && n !== undefined && this.holdComp.has(n)) this.heldComp.add(n)
      else send({ cmd: "pubcomp", messageId: id } as Packet)
    }
  }

  duplicates(): Array<number> {
    return [...this.deliveries].filter(([, count]) => count > 1).map(([n]) => n)
  }
}

const subscribe = (port: number, clientId: string, sub: Subscriber) =>
  Effect.promise(async () => {
    let subacked = false
    const c = await connectRetrying(port, clientId, (p, send) => {
      if (p.cmd === "suback") subacked = true
      else sub.onPacket(p, send)
    })
    c.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "load/#", qos: 2 }] } as Packet)
    await until(() => subacked, `${clientId}'s SUBACK`)
    return c
  })

describe("kill -9 of the broker under QoS 2 load", () => {
  for (const mode of ["durable", "default"] as const) {
  it.live(
    `${mode} mode: no acknowledged message lost, none delivered twice, flows interrupted in every state complete once`,
    () =>
      Effect.gen(function* () {
        const port = yield* Effect.promise(freePort)
        const dir = fs.mkdtempSync(path.join(root, "store-"))
        const conf = path.join(dir, "mosquitto.conf")
        fs.writeFileSync(
          conf,
          `listener ${port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location ${dir}\npersistence_durable ${mode === "durable"}\nmax_inflight_messages 20\nmax_queued_messages 0\n`
        )
        const daemons: Array<Daemon> = []
        yield* Effect.addFinalizer(() => Effect.sync(() => daemons.forEach((d) => d.child.kill("SIGKILL"))))
        daemons.push(startDaemon(conf))

        // the offline subscriber: subscribed, then gone; its queue is all it has
        const offline = new Subscriber()
        const off = yield* subscribe(port, "offline-sub", offline)
        off.send({ cmd: "disconnect" } as Packet)
        off.socket.end()
        // a client connected when the broker dies: its will goes out at the restart [MQTT-3.1.2-8]
        const willed = yield* Effect.promise(() =>
          connectRetrying(port, "willed", () => {}, { topic: "will/willed", payload: Buffer.from("gone"), qos: 1, retain: true })
        )
        // the online subscriber holds a few acks across the crash
        const online = new Subscriber(new Set([300, 301]), new Set([310, 311]))
        const sub = yield* subscribe(port, "online-sub", online)
        // a budget well past the kill point: the kill must find PUBLISH flows still open
        const publisher = new Publisher(3000, 40, new Set([320, 321]))
        const pub = yield* Effect.promise(() => connectRetrying(port, "publisher", publisher.onPacket))
        expect(pub.sessionPresent).toBe(false)
        publisher.attach(pub.send)

        // load until the held flows are in place and well past them, then kill -9 right after a PUBLISH
        const killed: { at?: { acknowledged: Set<number>; states: { publish: number; pubrel: number }; sent: number } } = {}
        // checked after each PUBLISH (a flow is then in the PUBLISH state), and also while waiting: under load the publisher may have sent all
        // it has (its window then holds only the two held PUBRELs) before the subscriber holds its acks
        const tryKill = () => {
          if (
            killed.at === undefined &&
            publisher.acknowledged.size >= 400 &&
            online.heldRec.size === 2 &&
            online.heldComp.size === 2 &&
            publisher.acknowledged.has(320) &&
            publisher.acknowledged.has(321) &&
            // and a PUBLISH still awaiting its PUBREC: a fast broker can answer a whole window's
            // PUBLISHes at once, leaving only PUBREL flows open at the moment a poll looks
            publisher.states().publish > 0
          ) {
            daemons[0].child.kill("SIGKILL")
            killed.at = { acknowledged: new Set(publisher.acknowledged), states: publisher.states(), sent: publisher.next }
          }
        }
        publisher.afterSend = tryKill
        yield* Effect.promise(() =>
          until(
            () => {
              tryKill()
              return killed.at !== undefined
            },
            "400 acknowledged messages and the held flows",
            20_000
          )
        )
        yield* Effect.promise(() => until(() => daemons[0].exited(), "the kill"))
        publisher.send = undefined
        publisher.afterSend = undefined
        const atKill = killed.at!
        // the publisher had flows in both states open when the broker died
        expect(atKill.states.publish).toBeGreaterThan(0)
        expect(atKill.states.pubrel).toBeGreaterThanOrEqual(2)

        // restart over the same store; every client comes back with its session
        daemons.push(startDaemon(conf))
        online.holding = false
        publisher.holding = false
        const sub2 = yield* Effect.promise(() => connectRetrying(port, "online-sub", online.onPacket))
        expect(sub2.sessionPresent).toBe(true)
        const pub2 = yield* Effect.promise(() => connectRetrying(port, "publisher", publisher.onPacket))
        expect(pub2.sessionPresent).toBe(true)
        publisher.attach(pub2.send)
        const off2 = yield* Effect.promise(() => connectRetrying(port, "offline-sub", offline.onPacket))
        expect(off2.sessionPresent).toBe(true)

        // the publisher finishes: every message it sent completes
        yield* Effect.promise(() => until(() => publisher.completed.size === publisher.total, "every flow to complete", 20_000)).pipe(
          Effect.tapErrorCause(() =>
            Effect.sync(() => console.log({ completed: publisher.completed.size, states: publisher.states(), broker: daemons[1].output().slice(-2000) }))
          )
        )
        const everything = Array.from({ length: publisher.total }, (_, n) => n)
        const missing = (s: Subscriber) => everything.filter((n) => !s.deliveries.has(n))
        yield* Effect.promise(() =>
          until(() => missing(online).length === 0 && missing(offline).length === 0, "every message at both subscribers", 20_000)
        ).pipe(
          Effect.tapErrorCause(() =>
            Effect.sync(() => console.log({ online: missing(online).slice(0, 20), offline: missing(offline).slice(0, 20), atKill: atKill.states }))
          )
        )
        yield* Effect.promise(() => sleep(200))
        // 0 acknowledged messages lost (the whole run: 0 lost at all)
        const lost = (s: Subscriber) => [...atKill.acknowledged].filter((n) => !s.deliveries.has(n))
        expect(lost(online)).toEqual([])
        expect(lost(offline)).toEqual([])
        // QoS 2: none delivered twice, across the crash included
        expect(online.duplicates()).toEqual([])
        expect(offline.duplicates()).toEqual([])
        expect(online.deliveries.size).toBe(publisher.total)
        expect(offline.deliveries.size).toBe(publisher.total)
        // the subscriber's held flows were resumed by the broker, not restarted
        expect(online.awaitingRel.size).toBe(0)
        // the will of the client connected at the kill was published at the start
        const wills: Array<string> = []
        const check = yield* Effect.promise(() =>
          connectRetrying(port, "will-check", (p) => {
            if (p.cmd === "publish") wills.push(`${p.topic} ${p.payload.toString()}`)
          })
        )
        check.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "will/#", qos: 1 }] } as Packet)
        yield* Effect.promise(() => until(() => wills.length === 1, "the will of the client connected at the kill"))
        expect(wills).toEqual(["will/willed gone"])
        for (const c of [willed, sub, pub, sub2, pub2, off2, check]) c.socket.destroy()
      }).pipe(Effect.scoped),
    60_000
  )
  }
})
