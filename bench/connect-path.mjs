#!/usr/bin/env node
// What a connect and a disconnect cost Midge's JavaScript, without the kernel: the listener's
// accept (as src/transport/Listener.ts does it: the Connection, the "New connection" line, the
// watchdog's connect timeout), mqload's CONNECT (3.1.1, clean, keepalive 60, its client ids),
// the CONNACK at the end of the turn, the "New client connected" line; then each client's EOF
// (close, the session discarded, "Client ... closed its connection."). Midge's own Core,
// Connection, Watchdog and Log classes from a build (dist/, or CONNECT_DIST=<build>/dist for
// A/B) driven through stand-in sockets that take every write at once, in turns of 100 clients
// (mqload's 100 pending connects), each turn ended by the event loop as in the daemon.
// CONNECT_PER_TURN=1 gives each client turns of its own, as a storm reaches the daemon: libuv
// accepts one connection per turn of the loop (libuv#3696), so a turn's fixed costs are a
// connect's (the harness's own turns then cost ~7 µs per client: measure them with a build A/B).
//
// The socket benchmark (mqload conns, bench/connect-floor.mjs) measures a connect whole, kernel
// included, and its rounds spread by ±40 % on this VM; this measures the part that is Midge's
// own, which is what a change to the connect path changes, at a spread of a few per cent.
//
//   node bench/connect-path.mjs [rounds] [clients]            (needs npm run build)
//   CONNECT_DIST=/tmp/old/dist node bench/connect-path.mjs
//   CONNECT_PER_TURN=1 node bench/connect-path.mjs     (one client per turn, as libuv accepts in a storm)
//   CONNECT_SUBSCRIBE=1 node bench/connect-path.mjs     (each client then subscribes to a topic of its own,
//       as mqload conns --subscribe and the bench's conns_10k_sub: SUBSCRIBE in the turn after CONNACK)
//   CONNECT_SNAPSHOT=/tmp/x.heapsnapshot node bench/connect-path.mjs 2
//       (heap snapshots of the last round: with every client connected, and x.heapsnapshot.empty
//       after they have gone; their difference is what a connection keeps, by class)
//
// The young generation is held at 1 MiB as the daemon holds it (src/main.ts; MIDGE_YOUNG_GEN=v8
// leaves V8's sizing), so the collections are the daemon's. Prints one JSON line per round: µs
// of CPU (user + system) per connect and per disconnect, and the young-generation collections of
// each phase. Not a socket benchmark: nothing leaves the process; the CONNACK bytes are checked.
import { PerformanceObserver } from 'node:perf_hooks'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { setImmediate as turn } from 'node:timers/promises'

const DIST = resolve(process.env.CONNECT_DIST ?? new URL('../dist', import.meta.url).pathname)
const load = (p) => import(pathToFileURL(`${DIST}/${p}`).href)
// before the other modules load, as src/main.ts does
const { holdYoungGeneration } = await load('runtime/YoungGeneration.js')
holdYoungGeneration(process.env.MIDGE_YOUNG_GEN)
const { Core, defaultSettings } = await load('session/Core.js')
const { Connection } = await load('session/Connection.js')
const { Log, TurnBatchedSink, defaultLogTypes } = await load('log/Log.js')
const { Watchdog } = await load('transport/Watchdog.js')
const { SocketEvents } = await load('transport/socketEvents.js')

const rounds = Number(process.argv[2] ?? 6)
const clients = Number(process.argv[3] ?? 10_000)
const PER_TURN = Number(process.env.CONNECT_PER_TURN ?? 100)
const PORT = 1883

/** A socket that takes every write at once; its events as RawTcpSocket dispatches them. */
class StandIn extends SocketEvents {
  constructor(port) {
    super()
    this.remoteAddress = '127.0.0.2'
    this.remotePort = port
    this.writableLength = 0
    this.writable = true
    this.destroyed = false
    this.written = 0
    this.first = 0
  }
  write(chunk) {
    if (this.written === 0) this.first = chunk[0]
    this.written += chunk.length
    return true
  }
  setNoDelay() {
    return this
  }
  pause() {
    return this
  }
  resume() {
    return this
  }
  end() {
    this.writable = false
    return this
  }
  destroySoon() {
    this.destroy()
  }
  destroy() {
    if (this.destroyed) return
    this.destroyed = true
    this.onCloseFn?.call(this)
  }
  /** the peer's EOF, as RawTcpSocket reports it */
  eof() {
    this.onEndFn?.call(this)
    this.destroySoon()
  }
  data(chunk) {
    this.onDataFn?.call(this, chunk)
  }
}

let logged = 0
const log = new Log(defaultLogTypes, [new TurnBatchedSink((text) => (logged += text.length))])
const core = new Core({ ...defaultSettings }, log, () => Date.now())
const watchdog = new Watchdog(core.now)
const live = new Set()
const expiries = new Map()
const hooks = {
  sessionStarted: (conn) => {
    watchdog.connected(conn)
    expiries.get(conn.clientId)
  },
  closed: (conn) => {
    if (live.delete(conn)) core.openConnections--
    watchdog.remove(conn)
  }
}
const settings = { port: PORT, mountPoint: undefined, maxQos: 2, acceptProtocolVersions: undefined, allowAnonymous: undefined, allowZeroLengthClientid: undefined, autoIdPrefix: undefined, maxTopicAlias: undefined, maxTopicAliasBroker: undefined, useUsernameAsClientid: undefined }
const accept = (socket) => {
  const conn = new Connection(socket, core, hooks, settings, undefined)
  live.add(conn)
  core.openConnections++
  if (core.settings.connectionMessages) core.log.notice(`New connection from ${socket.remoteAddress ?? 'unix socket'}:${socket.remotePort ?? 0} on port ${PORT}.`)
  watchdog.accepted(conn, core.settings.connectTimeoutMs)
}

/** mqload's CONNECT (put_connect in mqload.c): 3.1.1, clean session, keepalive 60 */
const connectFrame = (id) => {
  const cid = Buffer.from(id)
  const rl = 10 + 2 + cid.length
  return Buffer.concat([Buffer.from([0x10, rl, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 60, 0, cid.length]), cid])
}

let scavenges = 0
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if ((e.detail?.kind ?? e.kind) === 1) scavenges++
}).observe({ entryTypes: ['gc'] })

// the CONNECTs' bytes, made once (what libuv reads is copied into a Buffer of its own per read, as rawTcp.ts's copyRead)
const frames = Array.from({ length: clients }, (_, i) => connectFrame(`mql0000abcd-s${i}`))
const subscribe = process.env.CONNECT_SUBSCRIBE === '1'
/** mqload's SUBSCRIBE (put_subscribe): packet id 1, its own topic, QoS 0 */
const subscribeFrame = (i) => {
  const topic = Buffer.from(`mqload/0000abcd/c/${i}`)
  return Buffer.concat([Buffer.from([0x82, 2 + 2 + topic.length + 1, 0, 1, 0, topic.length]), topic, Buffer.from([0])])
}
const subFrames = subscribe ? Array.from({ length: clients }, (_, i) => subscribeFrame(i)) : []
/** what each client is sent: CONNACK, and SUBACK when it subscribes */
const expected = subscribe ? 4 + 5 : 4
/** a read of `frame`, copied into a Buffer of its own as rawTcp.ts's copyRead does */
const readOf = (frame) => {
  const chunk = Buffer.allocUnsafe(frame.length)
  frame.copy(chunk)
  return chunk
}
const sockets = new Array(clients)

const run = async (round) => {
  await turn()
  const s0 = scavenges
  const c0 = process.cpuUsage()
  for (let i = 0; i < clients; i += PER_TURN) {
    const end = Math.min(clients, i + PER_TURN)
    // a turn of accepts, then a turn that reads the CONNECTs (as libuv delivers them)
    for (let j = i; j < end; j++) accept((sockets[j] = new StandIn(20000 + (j % 40000))))
    await turn()
    for (let j = i; j < end; j++) sockets[j].data(readOf(frames[j]))
    await turn()
    if (subscribe) {
      for (let j = i; j < end; j++) sockets[j].data(readOf(subFrames[j]))
      await turn()
    }
  }
  const c1 = process.cpuUsage(c0)
  const s1 = scavenges
  if (core.stats.clientsConnected !== clients) throw new Error(`${core.stats.clientsConnected} of ${clients} connected`)
  for (const s of sockets) if (s.first !== 0x20 || s.written !== expected) throw new Error(`a client got ${s.written} bytes, first ${s.first}: not CONNACK${subscribe ? ' and SUBACK' : ''}`)
  if (process.env.CONNECT_SNAPSHOT !== undefined && round === rounds) (await import('node:v8')).writeHeapSnapshot(process.env.CONNECT_SNAPSHOT)
  const d0 = process.cpuUsage()
  for (let i = 0; i < clients; i += PER_TURN) {
    const end = Math.min(clients, i + PER_TURN)
    for (let j = i; j < end; j++) sockets[j].eof()
    await turn()
  }
  const d1 = process.cpuUsage(d0)
  await turn()
  if (core.router.subscriptionCount !== 0) throw new Error(`${core.router.subscriptionCount} subscriptions left`)
  if (live.size !== 0 || core.sessions.size !== 0) throw new Error(`${live.size} connections, ${core.sessions.size} sessions left`)
  sockets.fill(undefined)
  if (process.env.CONNECT_SNAPSHOT !== undefined && round === rounds) (await import('node:v8')).writeHeapSnapshot(process.env.CONNECT_SNAPSHOT + '.empty')
  console.log(
    JSON.stringify({
      round,
      connect_us: +((c1.user + c1.system) / clients).toFixed(2),
      disconnect_us: +((d1.user + d1.system) / clients).toFixed(2),
      scavenges_connect: s1 - s0,
      scavenges_disconnect: scavenges - s1
    })
  )
}

for (let r = 1; r <= rounds; r++) await run(r)
if (logged === 0) throw new Error('nothing was logged')
process.exit(0)
