#!/usr/bin/env node
// The Node floor: the least a Node process must do to relay MQTT 3.1.1 PUBLISH at QoS 0 / 1 / 2
// for the socket bench's scenarios, to measure what any broker written for Node can reach on a
// machine. Not a broker: no features, no persistence, no logging, no limits, no validation
// beyond what parsing needs, no keepalive enforcement, no sessions across connections.
//
// What it does (and what every QoS scenario needs):
// - plain node:net, one listener, TCP_NODELAY off (as Midge and Mosquitto by default);
// - CONNECT -> CONNACK (accepted), SUBSCRIBE -> SUBACK, UNSUBSCRIBE -> UNSUBACK,
//   PINGREQ -> PINGRESP, DISCONNECT closes;
// - filters: an exact topic, or one ending in `/+` or `/#` (enough for the bench's topics);
// - PUBLISH relayed to every matching subscriber at min(publish QoS, granted QoS), with the
//   broker's own packet ids per subscriber connection (an id is not reused while its flow is
//   unfinished; the outgoing frame is kept until then, as a broker must keep it for a resend);
// - complete handshakes both ways: PUBACK to a QoS 1 publisher; PUBREC to a QoS 2 publisher,
//   PUBCOMP on its PUBREL (a QoS 2 packet id awaiting PUBREL is not routed twice); to
//   subscribers PUBLISH, then PUBACK, or PUBREC -> PUBREL -> PUBCOMP;
// - reads parsed in place (the socket's chunk, no copy unless a packet spans two reads);
// - writes: every frame of a turn goes straight into one staging Buffer per connection, and
//   one setImmediate per turn writes each connection's stage with one `write`.
//
// With `--max-inflight N` (0, the default: no limit) at most N QoS 1 / 2 flows per subscriber
// connection are unfinished; the rest wait in a FIFO queue (Mosquitto's and Midge's
// `max_inflight_messages`, default 20 there), to see what that window costs.
//
// usage: node bench/floor-broker.mjs -p PORT (0: any free port, printed) [--host 127.0.0.1] [--max-inflight N]
// (SIGTERM / SIGINT stop it)
import net from 'node:net'

let port = 1883
let host = '127.0.0.1'
let maxInflight = 0
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '-p' || argv[i] === '--port') port = Number(argv[++i])
  else if (argv[i] === '--host') host = argv[++i]
  else if (argv[i] === '--max-inflight') maxInflight = Number(argv[++i])
}
if (!(port >= 0 && port <= 65535)) {
  console.error('bad port')
  process.exit(2)
}

const CONNACK = Buffer.from([0x20, 2, 0, 0])
const PINGRESP = Buffer.from([0xd0, 0])

// ------------------------------------------------------------------ subscriptions
/** exact topic -> [{ conn, qos }] */
const exact = new Map()
/** filters ending in `/+` or `/#`: { conn, qos, prefix (up to and with the last `/`), multi } */
const wild = []

const subscribe = (conn, filter, qos) => {
  unsubscribe(conn, filter)
  const sub = { conn, qos, filter }
  const last = filter.charCodeAt(filter.length - 1)
  if ((last === 0x2b /* + */ || last === 0x23) /* # */ && (filter.length === 1 || filter.charCodeAt(filter.length - 2) === 0x2f)) {
    sub.prefix = filter.slice(0, filter.length - 1)
    sub.multi = last === 0x23
    wild.push(sub)
  } else {
    let l = exact.get(filter)
    if (l === undefined) exact.set(filter, (l = []))
    l.push(sub)
  }
  conn.subs.push(filter)
}

const unsubscribe = (conn, filter) => {
  const l = exact.get(filter)
  if (l !== undefined) {
    const k = l.findIndex((s) => s.conn === conn)
    if (k >= 0) {
      l.splice(k, 1)
      if (l.length === 0) exact.delete(filter)
    }
  }
  const w = wild.findIndex((s) => s.conn === conn && s.filter === filter)
  if (w >= 0) wild.splice(w, 1)
  const i = conn.subs.indexOf(filter)
  if (i >= 0) conn.subs.splice(i, 1)
}

// ------------------------------------------------------------------ output: one write per connection per turn
const dirty = []
let scheduled = false

const flushAll = () => {
  scheduled = false
  for (let i = 0; i < dirty.length; i++) {
    const c = dirty[i]
    c.dirty = false
    if (c.outLen > 0 && !c.closed) {
      c.sock.write(c.out.length === c.outLen ? c.out : c.out.subarray(0, c.outLen))
      c.lastOut = c.outLen
    }
    c.out = null
    c.outLen = 0
  }
  dirty.length = 0
}

/** Room for `n` more bytes in the connection's stage; returns the offset to write at. */
const reserve = (c, n) => {
  if (c.out === null) {
    c.out = Buffer.allocUnsafe(Math.max(n, c.lastOut, 64))
    if (!c.dirty) {
      c.dirty = true
      dirty.push(c)
      if (!scheduled) {
        scheduled = true
        setImmediate(flushAll)
      }
    }
  } else if (c.outLen + n > c.out.length) {
    const grown = Buffer.allocUnsafe(Math.max(c.outLen + n, c.out.length * 2))
    c.out.copy(grown, 0, 0, c.outLen)
    c.out = grown
  }
  const at = c.outLen
  c.outLen += n
  return at
}

const put = (c, bytes) => {
  const at = reserve(c, bytes.length)
  bytes.copy(c.out, at)
}

const ack = (c, type, pid) => {
  const at = reserve(c, 4)
  const o = c.out
  o[at] = type
  o[at + 1] = 2
  o[at + 2] = pid >> 8
  o[at + 3] = pid & 0xff
}

// ------------------------------------------------------------------ outbound flows to subscribers
// per connection: state per packet id (0 free, 1 awaiting PUBACK, 2 awaiting PUBREC, 3 awaiting PUBCOMP)
const nextPid = (c) => {
  if (c.outState === null) {
    // on first use: a connection that is never sent QoS 1 / 2 holds none of this
    c.outState = new Uint8Array(65536)
    c.outMsg = new Array(65536)
  }
  const st = c.outState
  for (let tries = 0; tries < 65535; tries++) {
    let p = c.pid + 1
    if (p > 65535) p = 1
    c.pid = p
    if (st[p] === 0) return p
  }
  return 0
}

/**
 * One PUBLISH to `c` at `qos`: topic bytes `src[ts, te)`, payload `src[ps, pe)`. Written into
 * the stage; at QoS 1 / 2 the frame is kept (a copy of its bytes) until the flow completes.
 */
const deliver = (c, qos, src, ts, te, ps, pe) => {
  const tlen = te - ts
  const rl = 2 + tlen + (qos > 0 ? 2 : 0) + (pe - ps)
  const hl = rl < 128 ? 2 : rl < 16384 ? 3 : rl < 2097152 ? 4 : 5
  let pid = 0
  if (qos > 0) {
    // the window full (or all 65,535 ids unfinished, or older ones waiting): queued, in order
    pid = c.queue.length > c.queueHead || (maxInflight > 0 && c.inflight >= maxInflight) ? 0 : nextPid(c)
    if (pid === 0) {
      c.queue.push({ qos, tlen, bytes: Buffer.concat([src.subarray(ts, te), src.subarray(ps, pe)]) })
      return
    }
    c.inflight++
  }
  const at = reserve(c, hl + rl)
  const o = c.out
  o[at] = 0x30 | (qos << 1)
  let k = at + 1
  let n = rl
  do {
    let b = n & 0x7f
    n >>>= 7
    if (n > 0) b |= 0x80
    o[k++] = b
  } while (n > 0)
  o[k++] = tlen >> 8
  o[k++] = tlen & 0xff
  src.copy(o, k, ts, te)
  k += tlen
  if (qos > 0) {
    o[k++] = pid >> 8
    o[k++] = pid & 0xff
  }
  src.copy(o, k, ps, pe)
  if (qos > 0) {
    c.outState[pid] = qos === 1 ? 1 : 2
    c.outMsg[pid] = o.subarray(at, at + hl + rl) // kept for a resend; the stage is never reused
  }
}

const finished = (c, pid) => {
  c.outState[pid] = 0
  c.outMsg[pid] = undefined
  c.inflight--
  const queue = c.queue
  if (queue.length > c.queueHead) {
    const q = queue[c.queueHead]
    queue[c.queueHead++] = undefined
    if (c.queueHead === queue.length) {
      queue.length = 0
      c.queueHead = 0
    }
    c.queue = NO_QUEUE // so that deliver sends it now
    deliver(c, q.qos, q.bytes, 0, q.tlen, q.tlen, q.bytes.length)
    c.queue = queue
    if (queue.length - c.queueHead <= QUEUE_LOW && held.length > 0) release()
  }
}

// a subscriber's queue past QUEUE_HIGH holds up (stops reading) the publisher that fed it until
// some subscriber's queue is down to QUEUE_LOW: the queue stays bounded, as in Midge and Mosquitto
const QUEUE_HIGH = 500
const QUEUE_LOW = 250
const NO_QUEUE = []
const held = []
const hold = (c) => {
  if (c.held || c.closed) return
  c.held = true
  c.sock.pause()
  held.push(c)
}
const release = () => {
  for (let i = 0; i < held.length; i++) {
    const c = held[i]
    c.held = false
    if (!c.closed) c.sock.resume()
  }
  held.length = 0
}

const route = (from, src, ts, te, qos, ps, pe) => {
  const topic = src.utf8Slice(ts, te)
  const l = exact.get(topic)
  if (l !== undefined) {
    for (let i = 0; i < l.length; i++) {
      const s = l[i]
      if (!s.conn.closed) to(from, s, qos, src, ts, te, ps, pe)
    }
  }
  for (let i = 0; i < wild.length; i++) {
    const s = wild[i]
    if (s.conn.closed || !topic.startsWith(s.prefix)) continue
    if (!s.multi && topic.indexOf('/', s.prefix.length) >= 0) continue
    to(from, s, qos, src, ts, te, ps, pe)
  }
}

const to = (from, s, qos, src, ts, te, ps, pe) => {
  const c = s.conn
  deliver(c, qos < s.qos ? qos : s.qos, src, ts, te, ps, pe)
  if (c.queue.length - c.queueHead > QUEUE_HIGH) hold(from)
}

// ------------------------------------------------------------------ input: parsed in place
const bad = (c) => {
  c.closed = true
  c.sock.destroy()
}

/** One packet `b[s, e)` of type `t` (the first byte `b1`). */
const handle = (c, b, b1, s, e) => {
  switch (b1 >> 4) {
    case 3: {
      // PUBLISH
      const qos = (b1 >> 1) & 3
      if (qos === 3 || e - s < 2) return bad(c)
      const ts = s + 2
      const te = ts + ((b[s] << 8) | b[s + 1])
      let ps = te
      let pid = 0
      if (qos > 0) {
        pid = (b[te] << 8) | b[te + 1]
        ps += 2
      }
      if (ps > e) return bad(c)
      if (qos === 2) {
        if (c.inQos2 === null) c.inQos2 = new Uint8Array(65536)
        if (c.inQos2[pid] === 0) {
          c.inQos2[pid] = 1
          route(c, b, ts, te, 2, ps, e)
        }
        ack(c, 0x50, pid)
      } else {
        route(c, b, ts, te, qos, ps, e)
        if (qos === 1) ack(c, 0x40, pid)
      }
      return
    }
    case 4: {
      // PUBACK
      const pid = (b[s] << 8) | b[s + 1]
      if (c.outState !== null && c.outState[pid] === 1) finished(c, pid)
      return
    }
    case 5: {
      // PUBREC -> PUBREL
      const pid = (b[s] << 8) | b[s + 1]
      if (c.outState !== null && c.outState[pid] === 2) {
        c.outState[pid] = 3
        c.outMsg[pid] = undefined
      }
      ack(c, 0x62, pid)
      return
    }
    case 6: {
      // PUBREL -> PUBCOMP
      const pid = (b[s] << 8) | b[s + 1]
      if (c.inQos2 !== null) c.inQos2[pid] = 0
      ack(c, 0x70, pid)
      return
    }
    case 7: {
      // PUBCOMP
      const pid = (b[s] << 8) | b[s + 1]
      if (c.outState !== null && c.outState[pid] === 3) finished(c, pid)
      return
    }
    case 1: {
      // CONNECT: accepted as it is (3.1.1 assumed)
      put(c, CONNACK)
      return
    }
    case 8: {
      // SUBSCRIBE: [pid] ([len][filter][qos])+ -> SUBACK
      const pid = (b[s] << 8) | b[s + 1]
      const granted = []
      let k = s + 2
      while (k + 2 < e) {
        const fl = (b[k] << 8) | b[k + 1]
        const filter = b.utf8Slice(k + 2, k + 2 + fl)
        const q = Math.min(b[k + 2 + fl] & 3, 2)
        subscribe(c, filter, q)
        granted.push(q)
        k += 3 + fl
      }
      put(c, Buffer.from([0x90, 2 + granted.length, pid >> 8, pid & 0xff, ...granted]))
      return
    }
    case 10: {
      // UNSUBSCRIBE -> UNSUBACK
      const pid = (b[s] << 8) | b[s + 1]
      let k = s + 2
      while (k + 1 < e) {
        const fl = (b[k] << 8) | b[k + 1]
        unsubscribe(c, b.utf8Slice(k + 2, k + 2 + fl))
        k += 2 + fl
      }
      ack(c, 0xb0, pid)
      return
    }
    case 12:
      put(c, PINGRESP)
      return
    case 14:
      c.closed = true
      c.sock.end()
      return
    default:
      return bad(c)
  }
}

function onData(chunk) {
  const c = this.conn
  let b = chunk
  if (c.rest !== null) {
    b = Buffer.concat([c.rest, chunk])
    c.rest = null
  }
  const len = b.length
  let i = 0
  while (i < len && !c.closed) {
    // fixed header: type byte, Remaining Length (1-4 bytes)
    if (i + 2 > len) break
    let rl = 0
    let mul = 1
    let k = i + 1
    let done = false
    for (let n = 0; n < 4 && k < len; n++) {
      const d = b[k++]
      rl += (d & 0x7f) * mul
      mul *= 128
      if ((d & 0x80) === 0) {
        done = true
        break
      }
    }
    if (!done) {
      if (k - i - 1 >= 4) return bad(c)
      break
    }
    if (k + rl > len) break
    handle(c, b, b[i], k, k + rl)
    i = k + rl
  }
  if (i < len && !c.closed) c.rest = b.subarray(i)
}

function onClose() {
  const c = this.conn
  c.closed = true
  for (const f of [...c.subs]) unsubscribe(c, f)
  if (held.length > 0) release() // it may have held publishers up
}

function onError() {
  this.conn.closed = true
}

const server = net.createServer((sock) => {
  const c = {
    sock,
    closed: false,
    rest: null,
    out: null,
    outLen: 0,
    lastOut: 0,
    dirty: false,
    pid: 0,
    inflight: 0,
    outState: null, // Uint8Array(65536) on first QoS 1 / 2 delivery
    outMsg: null,
    inQos2: null, // Uint8Array(65536) on the first QoS 2 PUBLISH received
    queue: [],
    queueHead: 0,
    held: false,
    subs: []
  }
  sock.conn = c
  sock.on('data', onData)
  sock.on('close', onClose)
  sock.on('error', onError)
})
server.on('error', (err) => console.error('floor-broker: server error', err.code || err.message))
server.listen({ port, host }, () => {
  console.log(`floor listening on ${host}:${server.address().port} pid ${process.pid} node ${process.version}`)
})

const stop = () => {
  server.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
