#!/usr/bin/env node
// The broker's JavaScript cost per message, without the kernel: Midge's own Core and
// Connection classes (from a build: dist/ by default, or HOTPATH_DIST=<build>/dist) driven
// in one process through stand-in sockets that take every write at once. It measures what
// the socket benchmark (npm run bench) cannot on a shared, loaded machine: CPU time
// (process.cpuUsage, user + system) and garbage (young-generation collections) per message
// of the hot path itself — parse, route, deliver, encode, acknowledge, one write per
// connection per turn — with loopback TCP, epoll and the load generator left out.
//
//   node bench/hotpath.mjs [fanin_q1|fanin_q2|fanin_q0|fanout_q0] [messages]
//   HOTPATH_DIST=/tmp/old/dist node bench/hotpath.mjs fanin_q1     (another build, for A/B)
//
// fanin_*: 10 publishers -> 1 subscriber (t/+), 64-byte payloads, each publisher 10 PUBLISH
// per turn (its window), the subscriber acknowledging each turn's deliveries (PUBACK; PUBREC
// then PUBCOMP for QoS 2); fanout_q0: 1 publisher, 100 subscribers, 100 messages per turn.
// Prints one JSON line: µs of CPU per message, collections per 10k messages, heap growth.
// It is not a socket benchmark: the bytes are checked (every delivery arrives, in order) but
// never leave the process. See docs/performance.md.
import { EventEmitter } from 'node:events'
import { PerformanceObserver } from 'node:perf_hooks'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import mqtt from 'mqtt-packet'

const DIST = resolve(process.env.HOTPATH_DIST ?? new URL('../dist', import.meta.url).pathname)
const load = (p) => import(pathToFileURL(`${DIST}/${p}`).href)
const { Core, defaultSettings } = await load('session/Core.js')
const { Connection } = await load('session/Connection.js')
const { silentLog } = await load('log/Log.js')

const scenario = process.argv[2] ?? 'fanin_q1'
const total = Number(process.argv[3] ?? 300_000)
const qos = scenario === 'fanin_q2' ? 2 : scenario === 'fanin_q1' ? 1 : 0
const fanout = scenario === 'fanout_q0'

/** A socket that takes every write at once (the kernel never pushes back). */
class StandIn extends EventEmitter {
  constructor(name) {
    super()
    this.remoteAddress = '127.0.0.1'
    this.remotePort = name
    this.writableLength = 0
    this.writable = true
    this.destroyed = false
    this.bytes = 0
    this.chunks = []
    this.keep = false
  }
  write(chunk) {
    this.bytes += chunk.length
    if (this.keep) this.chunks.push(chunk)
    return true
  }
  pause() { return this }
  resume() { return this }
  end() { return this }
  destroySoon() {}
  setNoDelay() { return this }
}

const core = new Core({ ...defaultSettings, connectionMessages: false }, silentLog(), () => Date.now())
const listener = { port: 1883, mountPoint: undefined, maxQos: 2, allowAnonymous: undefined, allowZeroLengthClientid: undefined, autoIdPrefix: undefined }
const hooks = { sessionStarted: () => {}, closed: () => {} }
const gen = (p) => mqtt.generate(p, { protocolVersion: 4 })
let port = 10000
const client = (id) => {
  const socket = new StandIn(port++)
  const conn = new Connection(socket, core, hooks, listener)
  conn.onData(gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: id, clean: true, keepalive: 0 }))
  return { socket, conn }
}
/** the end of an event-loop turn: every connection's frames as one write (FlushScheduler's job) */
const turnEnd = (conns) => {
  for (const c of conns) c.conn.flush()
}

const npubs = fanout ? 1 : 10
const nsubs = fanout ? 100 : 1
const perTurn = fanout ? 100 : 10 // per publisher
const subs = Array.from({ length: nsubs }, (_, i) => client(`sub-${i}`))
for (const s of subs) s.conn.onData(gen({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: fanout ? 't/0' : 't/+', qos }] }))
const pubs = Array.from({ length: npubs }, (_, i) => client(`pub-${i}`))
const all = [...subs, ...pubs]
turnEnd(all)

// each publisher's turn: perTurn PUBLISH in one chunk, packet ids cycling 1..perTurn (acknowledged each turn)
const payload = Buffer.alloc(64, 0x61)
const chunks = pubs.map((_, p) =>
  Buffer.concat(
    Array.from({ length: perTurn }, (_, i) =>
      gen({ cmd: 'publish', topic: `t/${fanout ? 0 : p}`, payload, qos, retain: false, dup: false, messageId: qos > 0 ? i + 1 : undefined })
    )
  )
)
const pubrels = qos === 2 ? Buffer.concat(Array.from({ length: perTurn }, (_, i) => gen({ cmd: 'pubrel', messageId: i + 1 }))) : undefined
const sub = subs[0]
const flow = () => sub.conn.session.flow
// the subscriber's acknowledgements of what is in flight to it
// (prebuilt per packet id, as a client's acknowledgements are bytes on the wire)
const ackBytes = (cmd) => Array.from({ length: 65536 }, (_, id) => (id === 0 ? undefined : gen({ cmd, messageId: id })))
const PUBACK = qos === 1 ? ackBytes('puback') : []
const PUBREC = qos === 2 ? ackBytes('pubrec') : []
const PUBCOMP = qos === 2 ? ackBytes('pubcomp') : []
// the subscriber keeps up: it acknowledges what is in flight, turn after turn, until nothing is left
const ackAll = () => {
  for (let round = 0; round < 1000 && flow().inflight.size > 0; round++) {
    const ids = [...flow().inflight.keys()]
    if (qos === 1) sub.conn.onData(Buffer.concat(ids.map((id) => PUBACK[id])))
    else {
      sub.conn.onData(Buffer.concat(ids.map((id) => PUBREC[id])))
      sub.conn.onData(Buffer.concat(ids.map((id) => PUBCOMP[id])))
    }
    turnEnd(all)
  }
}

let scavenges = 0
let gcMs = 0
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if ((e.detail?.kind ?? e.kind) === 1) scavenges++
    gcMs += e.duration
  }
})
obs.observe({ entryTypes: ['gc'] })

const run = (messages) => {
  let sent = 0
  while (sent < messages) {
    for (let p = 0; p < npubs; p++) {
      pubs[p].conn.onData(chunks[p])
      if (pubrels !== undefined) pubs[p].conn.onData(pubrels)
    }
    sent += npubs * perTurn
    turnEnd(all)
    if (qos > 0) ackAll()
  }
  return sent
}

// check first: every delivery arrives, in order, and every publisher is acknowledged
sub.socket.keep = true
for (const p of pubs) p.socket.keep = true
run(npubs * perTurn * 3)
const parser = mqtt.parser({ protocolVersion: 4 })
const got = []
parser.on('packet', (pk) => pk.cmd === 'publish' && got.push(`${pk.topic}`))
for (const c of sub.socket.chunks) parser.parse(c)
if (got.length !== npubs * perTurn * 3) throw new Error(`the subscriber got ${got.length} of ${npubs * perTurn * 3}`)
const acks = pubs.map((p) => {
  const pp = mqtt.parser({ protocolVersion: 4 })
  let n = 0
  pp.on('packet', (pk) => (pk.cmd === 'puback' || pk.cmd === 'pubrec' || pk.cmd === 'pubcomp') && n++)
  for (const c of p.socket.chunks) pp.parse(c)
  return n
})
const expectAcks = qos === 0 ? 0 : qos === 1 ? perTurn * 3 : perTurn * 6
if (acks.some((n) => n !== expectAcks)) throw new Error(`acknowledgements ${acks} (expected ${expectAcks} each)`)
sub.socket.keep = false
for (const p of pubs) p.socket.keep = false

run(Math.min(total, 50_000)) // warm-up: JIT
globalThis.gc?.()
scavenges = 0
gcMs = 0
const heap0 = process.memoryUsage().heapUsed
const c0 = process.cpuUsage()
const t0 = process.hrtime.bigint()
const n = run(total)
const t1 = process.hrtime.bigint()
const c1 = process.cpuUsage(c0)
await new Promise((r) => setTimeout(r, 100)) // let the gc observer report
const deliveries = fanout ? n * nsubs : n
console.log(
  JSON.stringify({
    scenario,
    dist: DIST,
    messages: n,
    deliveries,
    cpu_us_per_msg: +((c1.user + c1.system) / n).toFixed(3),
    cpu_us_per_delivery: +((c1.user + c1.system) / deliveries).toFixed(3),
    wall_us_per_msg: +(Number(t1 - t0) / 1000 / n).toFixed(3),
    scavenges_per_10k: +((scavenges * 10_000) / n).toFixed(2),
    gc_ms: +gcMs.toFixed(1),
    heap_growth_mb: +((process.memoryUsage().heapUsed - heap0) / 1e6).toFixed(1)
  })
)
