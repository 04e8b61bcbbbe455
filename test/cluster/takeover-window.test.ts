/**
 * Issue #9, the same guarantees as on one node across a takeover: a persistent
 * session moves from node b to node a while a publisher on node c publishes at
 * a steady rate; every message acknowledged to the publisher (PUBACK / PUBCOMP)
 * after the client's CONNECT to a began reaches the client (on the old
 * connection or the new one), QoS 2 exactly once. The new owner announces the
 * session's routes and buffers what arrives before the old owner lets go
 * (make-before-break, docs/cluster.md "Sessions").
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Store, type MqttClient } from "mqtt"
import { connectClient, connectCollecting, settle, subscribe, tcpView, waitFor } from "../e2e/harness.js"
import { countsOf, receivedTwice } from "./daemons.js"
import { learnLate, routed, startNode, startRedis, type TestNode } from "./harness.js"

/** Publish `topic` continuously (a window of 4), payload = sequence number; each acknowledged one with the time of its PUBACK / PUBCOMP. */
const pump = (client: MqttClient, topic: string, qos: 1 | 2) => {
  let seq = 0
  let running = true
  const acked: Array<readonly [number, number]> = []
  const workers = Array.from({ length: 4 }, async () => {
    while (running) {
      const n = seq++
      await client.publishAsync(topic, String(n), { qos })
      acked.push([n, performance.now()])
    }
  })
  return {
    acked,
    stop: Effect.promise(() => {
      running = false
      return Promise.all(workers)
    })
  }
}

/** 1, 2, 3, 5 → "1–3, 5" */
const ranges = (ns: ReadonlyArray<number>): string => {
  const out: Array<string> = []
  for (let i = 0; i < ns.length; i++) {
    let j = i
    while (j + 1 < ns.length && ns[j + 1] === ns[j] + 1) j++
    out.push(j === i ? String(ns[i]) : `${ns[i]}–${ns[j]}`)
    i = j
  }
  return out.join(", ")
}

/** What a failure needs to tell a late tail from a lost one: the node's lease, the session's flow, the node's log without the packet lines. */
const stateOf = (node: TestNode, clientId: string): string => {
  const core = node.broker.core
  const session = core.sessions.get(clientId)
  const lease = (core.cluster as unknown as { state?: string }).state
  // in flight: how many await each acknowledgement, and the first few (packet id, state, payload)
  const inflight = session === undefined ? [] : [...session.flow.inflight.values()]
  const states = new Map<string, number>()
  for (const e of inflight) states.set(e.state, (states.get(e.state) ?? 0) + 1)
  const byState = [...states].map(([state, n]) => `${state} ${n}`).join(", ")
  const first = inflight.slice(0, 5).map((e) => `${e.messageId} ${e.state} ${e.message.payload.toString()}`).join("; ")
  const flow =
    session === undefined
      ? "no session"
      : `session: subscriptions ${[...session.subscriptions.keys()].join(" ")}, in flight ${session.flow.inflight.size} (${byState}; first: ${first}), queued ${session.flow.queue.length}, attached ${core.attached.has(clientId)}, connection ${session.wire === undefined ? "none" : "yes"}`
  const lines = node.log.recent.filter((line) => !/^(\d+: )?(Received|Sending) [A-Z]+ (to|from) /.test(line)).slice(-15)
  return `node ${node.nodeId} (${lease}): ${flow}${session?.wire === undefined ? "" : `, ${outboxOf(session.wire)}`}\n  ${lines.join("\n  ")}`
}

/** The connection's outbox, read from its private fields: were the frames the session sent handed to the socket? */
const outboxOf = (wire: object): string => {
  const c = wire as unknown as {
    outFrames?: number
    blocked?: boolean
    flushScheduled?: boolean
    state?: string
    heldBy?: number
    parked?: ReadonlyArray<unknown>
    paused?: boolean
    socket?: { writableLength?: number; destroyed?: boolean }
  }
  return `outbox: ${c.outFrames} frames, blocked ${c.blocked}, flush scheduled ${c.flushScheduled}, socket unwritten ${c.socket?.writableLength} bytes${c.socket?.destroyed === true ? " (destroyed)" : ""}; ` +
    `reading: state ${c.state}, held by ${c.heldBy}, parked ${c.parked?.length ?? 0}, paused ${c.paused}`
}

/** The client's side of its socket: bytes it has not read, bytes it has not written, and whether it reads. */
const clientSocketOf = (client: MqttClient): string => {
  const stream = client.stream as unknown as { readableLength?: number; writableLength?: number; isPaused?: () => boolean; destroyed?: boolean }
  return `unread ${stream.readableLength} bytes, unwritten ${stream.writableLength} bytes, paused ${stream.isPaused?.()}, destroyed ${stream.destroyed}`
}

/** The last packets a client received and sent (cmd and packet id): did the broker's frames reach it, and did it answer? */
const packetTrail = (client: MqttClient) => {
  const trail: Array<string> = []
  const note = (dir: string) => (packet: { cmd: string; messageId?: number }) => {
    trail.push(`${dir}${packet.cmd}${packet.messageId === undefined ? "" : ` ${packet.messageId}`}`)
    if (trail.length > 24) trail.shift()
  }
  client.on("packetreceive", note("<"))
  client.on("packetsend", note(">"))
  return trail
}

/** The last raw chunks through a function (hex, newest last, at most `keep`): what crossed a socket, byte for byte. */
const chunkTrail = (keep = 12) => {
  const chunks: Array<string> = []
  let total = 0
  return {
    note(chunk: Uint8Array) {
      total += chunk.length
      const hex = Buffer.from(chunk).toString("hex")
      // a long chunk's ends: where a frame starts and where the stream stopped
      chunks.push(`${chunk.length}:${hex.length > 96 ? `${hex.slice(0, 32)}…${hex.slice(-64)}` : hex}`)
      if (chunks.length > keep) chunks.shift()
    },
    toString: () => `${total} bytes in all; last chunks: ${chunks.join(" | ")}`
  }
}

/** Record what the connection on the node reads and writes, raw (its socket's data and write, wrapped on the instance). */
const wireTrail = (wire: object) => {
  const c = wire as unknown as { onData(chunk: Buffer): void; socket: { write(chunk: Buffer): boolean } }
  const read = chunkTrail()
  const wrote = chunkTrail()
  const onData = c.onData.bind(c)
  c.onData = (chunk) => {
    read.note(chunk)
    onData(chunk)
  }
  const socket = c.socket
  const write = socket.write.bind(socket)
  socket.write = (chunk) => {
    wrote.note(chunk)
    return write(chunk)
  }
  return { read, wrote }
}

/** Record what the client's socket reads and writes, raw. */
const clientTrail = (client: MqttClient) => {
  const stream = client.stream as unknown as { on(e: "data", f: (b: Buffer) => void): void; write(chunk: Uint8Array, ...rest: Array<unknown>): boolean }
  const read = chunkTrail()
  const wrote = chunkTrail()
  stream.on("data", (b) => read.note(b))
  const write = stream.write.bind(stream)
  stream.write = (chunk, ...rest) => {
    wrote.note(chunk)
    return write(chunk, ...rest)
  }
  return { read, wrote }
}

const lastOf = (got: ReadonlyArray<{ readonly topic: string; readonly payload: unknown }>): string => {
  const last = got.filter((r) => r.topic === "w/x").at(-1)
  return last === undefined ? "nothing" : String(last.payload)
}

const cases: Array<readonly [qos: 1 | 2, lateMs: number]> = [
  [1, 0],
  [2, 0],
  [1, 400],
  [2, 400]
]

describe("cluster takeover window (issue #9)", () => {
  for (const [qos, lateMs] of cases) {
    it.scopedLive(`QoS ${qos}: a session moving from b to a misses nothing published on c after the CONNECT to a${qos === 2 ? ", and gets it once" : ""}${lateMs > 0 ? `, c learning a's route ${lateMs} ms late` : ""}`, () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        // while it moves the session is offline and its queue limit applies (as for any offline client): the
        // default 1,000 is less than what c sends in a late route's 400 ms; lost to the limit is not lost to the move
        const settings = { maxQueuedMessages: 10_000 }
        // the product's heartbeat (1 s, a lease of 3 s), not the harness's 200 ms: with three nodes and the pump in one
        // process, a worker starved of CPU for over 600 ms (a loaded CI run) lost every lease at once and the nodes
        // adopted each other, fencing a and disconnecting the moved client (its messages then wait for it on the
        // adopter, as they should, but this test's client does not reconnect)
        const heartbeatMs = 1000
        const a = yield* startNode(redis.url, "a", { settings, heartbeatMs })
        const b = yield* startNode(redis.url, "b", { settings, heartbeatMs })
        const c = yield* startNode(redis.url, "c", { heartbeatMs })
        if (lateMs > 0) learnLate(c, "a", lateMs)
        // one client process reconnecting: its inbound QoS 2 store (what it acknowledged with PUBREC) outlives the connection
        const incomingStore = new Store()
        incomingStore.close = (cb) => cb?.()
        const old = yield* connectCollecting(b.url, { clientId: "mover", clean: false, incomingStore })
        yield* subscribe(old.client, "w/#", { qos })
        yield* routed(c, b, ["w/#"])
        const pub = yield* connectClient(c.url, { clientId: "pub" })
        const p = pump(pub, "w/x", qos)
        yield* waitFor(() => p.acked.length >= 50, "the stream under way")

        const began = performance.now()
        const moved = yield* connectCollecting(a.url, { clientId: "mover", clean: false, incomingStore })
        const trail = packetTrail(moved.client)
        const clientRaw = clientTrail(moved.client)
        const wire = a.broker.core.sessions.get("mover")?.wire
        const nodeRaw = wire === undefined ? undefined : wireTrail(wire)
        expect(moved.sessionPresent).toBe(true)
        const atConnack = p.acked.length
        yield* waitFor(() => p.acked.length >= atConnack + 150, "the stream going on after the takeover", 10_000)
        yield* p.stop

        const must = p.acked.filter(([, at]) => at >= began).map(([n]) => n)
        expect(must.length).toBeGreaterThan(150)
        const counts = () => countsOf([...old.got, ...moved.got].filter((r) => r.topic === "w/x").map((r) => Number(r.payload)))
        yield* waitFor(() => must.every((n) => counts().has(n)), "every acknowledged message at the client", 5000).pipe(
          Effect.catchAll((error) =>
            Effect.die(
              new Error(
                `${error.message}: missing ${ranges(must.filter((n) => !counts().has(n)))} of ${ranges(must)}; at the CONNACK ${atConnack} acknowledged\n` +
                  [a, b, c].map((node) => stateOf(node, "mover")).join("\n") +
                  `\nc routes to a: ${[...c.broker.cluster!.remoteFilters("a")].join(" ")}; to b: ${[...c.broker.cluster!.remoteFilters("b")].join(" ")}` +
                  `\nthe client connected: on b ${old.client.connected}, on a ${moved.client.connected}; last received on b ${lastOf(old.got)}, on a ${lastOf(moved.got)}` +
                  `\nthe client's last packets on a (< received, > sent): ${trail.join(", ")}` +
                  `\nthe client's socket on a: ${clientSocketOf(moved.client)}` +
                  `\nraw, the client read: ${clientRaw.read}\nraw, the client wrote: ${clientRaw.wrote}` +
                  `\nthe kernel's view (Recv-Q: received, not read by the process; Send-Q: sent, not acknowledged):\n  ${tcpView((moved.client.stream as unknown as { localPort?: number }).localPort)}` +
                  `\nraw, node a read: ${nodeRaw?.read ?? "(no connection at the CONNACK)"}\nraw, node a wrote: ${nodeRaw?.wrote ?? "(no connection at the CONNACK)"}`
              )
            )
          )
        )
        // the session is on a alone
        expect(b.broker.core.sessions.has("mover")).toBe(false)
        expect(a.broker.core.sessions.has("mover")).toBe(true)
        if (qos === 2) {
          yield* settle(300)
          const twice = receivedTwice(counts())
          const on = (got: ReadonlyArray<{ readonly topic: string; readonly payload: unknown }>, n: number) => got.filter((r) => r.topic === "w/x" && Number(r.payload) === n).length
          expect(twice, `received twice (on b, on a): ${twice.map((n) => `${n} (${on(old.got, n)}, ${on(moved.got, n)})`).join(", ")}`).toEqual([])
        }
      }), 30_000
    )
  }
})
