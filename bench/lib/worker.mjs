// One load-generator process (forked by bench/run.mjs): raw node:net sockets (idle clients: the raw TCP handle, rawClient.mjs),
// MQTT 3.1.1 packets, a hand-written frame parser. It runs one kind of client:
//   pub   publishers: QoS 0 as fast as the broker delivers (or at a fixed rate); QoS 1/2 with a
//         bounded window of unacknowledged messages, completing PUBACK / PUBREC-PUBREL-PUBCOMP
//   sub   subscribers: count every delivery per (subscriber, publisher) in a bitmap of sequence
//         numbers (lost / dup / out of order), latency from the send time in the payload,
//         acknowledge QoS 1 (PUBACK) and QoS 2 (PUBREC, PUBCOMP on PUBREL); optionally slow
//   idle  idle clients: CONNECT (keepalive spread), optionally SUBSCRIBE to an own topic, hold
// The parent drives the phases over IPC: init -> ready, run, poll -> stats, final -> result, close.
// Payload header, as mqload's: [u32 publisher][u32 seq][u64 send time ns] (little endian); the
// time is process.hrtime (CLOCK_MONOTONIC) minus a base shared by all processes (BENCH_T0).
import net from 'node:net'
import { Hist } from './hist.mjs'
import * as P from './packets.mjs'
import { RawClient, rawAvailable } from './rawClient.mjs'

const BASE = BigInt(process.env.BENCH_T0 ?? '0')
const now = () => Number(process.hrtime.bigint() - BASE)
const TWO32 = 4294967296
const BATCH_BYTES = 64 * 1024 // QoS 0 blasting: one write, at most two in flight per publisher
const PACED_MAX_UNSENT = 64 * 1024 // paced publishers skip ticks while this much waits in user space
const MAX_SEQ = 1 << 27 // bitmaps stop here (a seq beyond is counted as foreign)

// little-endian u32 without Buffer's bounds-checked helpers (the hot path; offsets are known good)
const put32 = (b, o, v) => {
  b[o] = v & 0xff
  b[o + 1] = (v >>> 8) & 0xff
  b[o + 2] = (v >>> 16) & 0xff
  b[o + 3] = v >>> 24
}
const get32 = (b, o) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0

const NEW = 0
const CONNECTING = 1
const WAIT_CONNACK = 2
const WAIT_SUBACK = 3
const READY = 4
const CLOSED = 5

let cfg = null
let clients = []
let next = 0
let stopOpening = false
let reported = false
let phase = 'setup'
let inWindow = false
let tRun0 = 0
const hLat = new Hist()
// BENCH_SLOW_US=N: the subscriber also lists every message of the window slower than N µs
// ([send time ns since BENCH_T0, latency µs]), printed to its log at the end, to line the tail up
// with the broker's own trace (e.g. MIDGE_LOOP_STATS, --trace-gc)
const SLOW_US = Number(process.env.BENCH_SLOW_US ?? 0)
const slowList = []
const hAck = new Hist()
let hConn = new Hist()
const FAILS = ['refused', 'reset', 'eof', 'timeout', 'emfile', 'no_port', 'rejected', 'protocol', 'other']
const st = {
  attempts: 0,
  pending: 0,
  ready: 0,
  failed: 0,
  disconnects: 0,
  fail: Object.fromEntries(FAILS.map((k) => [k, 0])),
  tFirst: 0,
  tLast: 0,
  // messaging
  sent: 0,
  flushed: 0,
  acked: 0,
  badAck: 0,
  recv: 0,
  recvBytes: 0,
  foreign: 0,
  q2dup: 0,
  last: 0
}
const snaps = {}

const errName = (code) => {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused'
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset'
    case 'ETIMEDOUT':
      return 'timeout'
    case 'EMFILE':
    case 'ENFILE':
      return 'emfile'
    case 'EADDRNOTAVAIL':
    case 'EADDRINUSE':
      return 'no_port'
    case undefined:
      return 'eof'
    default:
      return 'other'
  }
}

const READ_BUFFER = Buffer.allocUnsafe(4 * 1024 * 1024)
// acknowledgements of one read, written as one buffer
let scratch = Buffer.allocUnsafe(256 * 1024)

class Client {
  constructor(id) {
    this.id = id
    this.sock = null
    this.state = NEW
    this.pend = null
    this.t0 = 0
    this.errCode = undefined
    this.closing = false
    this.onRead = (n, buf) => {
      this.onData(buf.subarray(0, n))
    }
    this.ka = cfg.kaMin + (cfg.kaMax > cfg.kaMin ? (id * 2654435761) % (cfg.kaMax - cfg.kaMin + 1) : 0)
    this.nextPing = 0
  }

  open() {
    st.attempts++
    st.pending++
    this.t0 = now()
    if (st.tFirst === 0) st.tFirst = this.t0
    this.state = CONNECTING
    // reads go into one shared 4 MiB buffer (as mqload's), parsed before the next read
    // idle clients: the raw handle (rawClient.mjs), so that the generator is not what limits the connect rate
    const s =
      cfg.role === 'idle' && rawAvailable
        ? new RawClient(cfg.port, '127.0.0.1', READ_BUFFER, this.onRead, true)
        : net.connect({ port: cfg.port, host: '127.0.0.1', noDelay: true, onread: { buffer: READ_BUFFER, callback: this.onRead } })
    this.sock = s
    s.on('connect', () => {
      if (this.state !== CONNECTING) return
      this.state = WAIT_CONNACK
      s.write(P.connect(`${cfg.cidPrefix}${this.id}`, this.ka, cfg.clean !== false))
    })
    s.on('error', (e) => {
      this.errCode = e.code
    })
    s.on('close', () => this.onClose())
  }

  onClose() {
    const prev = this.state
    if (prev === CLOSED) return
    this.state = CLOSED
    if (prev === READY) {
      if (!this.closing) st.disconnects++
    } else {
      this.settleFailed(errName(this.errCode))
    }
  }

  fail(reason) {
    if (this.state === CLOSED) return
    const prev = this.state
    this.state = CLOSED
    this.sock?.destroy()
    if (prev === READY) st.disconnects++
    else this.settleFailed(reason)
  }

  settleFailed(reason) {
    st.pending--
    st.failed++
    st.fail[reason]++
    if (reason === 'emfile' || reason === 'no_port' || st.failed >= cfg.maxFail) stopOpening = true
    settled()
  }

  becomeReady(t) {
    this.state = READY
    st.pending--
    st.ready++
    hConn.add((t - this.t0) / 1000)
    this.nextPing = t + this.ka * 750e6
    settled()
  }

  onData(chunk) {
    let buf = chunk
    if (this.pend !== null) {
      buf = Buffer.concat([this.pend, chunk])
      this.pend = null
    }
    const n = buf.length
    const t = now()
    let off = 0
    while (n - off >= 2) {
      let i = off + 1
      let rl = 0
      let mul = 1
      let b = 0x80
      while (b & 0x80) {
        if (i >= n) break
        if (mul > 2097152) return this.fail('protocol') // more than 4 length bytes [MQTT-2.2.3]
        b = buf[i++]
        rl += (b & 0x7f) * mul
        mul *= 128
      }
      if (b & 0x80 || i + rl > n) break // incomplete
      this.packet(buf[off], buf, i, rl, t)
      if (this.state === CLOSED) return
      off = i + rl
    }
    if (off < n) this.pend = Buffer.from(buf.subarray(off)) // a copy: the read buffer is reused
    this.afterData(t, chunk.length)
  }

  packet(b1, buf, i, rl, t) {
    switch (b1 >> 4) {
      case 2: // CONNACK
        if (this.state !== WAIT_CONNACK || rl < 2) return this.fail('protocol')
        if (buf[i + 1] !== 0) return this.fail('rejected')
        return this.connacked(t)
      case 9: // SUBACK
        if (this.state !== WAIT_SUBACK || rl < 3) return this.fail('protocol')
        if (buf[i + 2] >= 0x80) return this.fail('rejected')
        return this.becomeReady(t)
      case 3:
        return this.onPublish(b1, buf, i, rl, t)
      case 4:
      case 5:
      case 7:
        if (rl < 2) return this.fail('protocol')
        return this.onAck(b1 >> 4, (buf[i] << 8) | buf[i + 1], t)
      case 6:
        if (rl < 2) return this.fail('protocol')
        return this.onPubrel((buf[i] << 8) | buf[i + 1])
      case 13: // PINGRESP
        return
      default:
        return this.fail('protocol')
    }
  }

  connacked(t) {
    this.becomeReady(t)
  }
  onPublish() {
    this.fail('protocol')
  }
  onAck() {
    st.badAck++
  }
  onPubrel() {
    this.fail('protocol')
  }
  afterData() {}

  disconnect() {
    if (this.state === READY) {
      this.closing = true
      this.sock.end(P.DISCONNECT)
    } else if (this.sock !== null) {
      this.sock.destroy()
    }
  }
}

// ------------------------------------------------------------------ publishers

class Pub extends Client {
  constructor(id, idx, topic) {
    super(id)
    this.idx = idx
    const t = P.publishTemplate(topic, cfg.qos, cfg.size, idx)
    this.tmpl = t.buf
    this.tlen = t.buf.length
    this.pidOff = t.pidOff
    this.payOff = t.payOff
    this.qos = cfg.qos
    this.seq = 0 // next sequence number = messages handed to write()
    this.flushed = 0 // QoS 0: messages handed to the kernel
    this.acked = 0
    this.inflight = 0
    this.nextPid = 1
    this.running = false
    this.seenHi = -1 // QoS 0 blasting: the highest seq every subscriber has seen (credit from the subscribers)
    this.outstanding = 0
    this.pumpScheduled = false
    this.pumpBound = () => this.pump()
    this.rels = []
    if (this.qos > 0) {
      this.pst = new Uint8Array(65536) // 0 free, 1 awaiting PUBACK / PUBREC, 2 awaiting PUBCOMP
      this.pseq = new Uint32Array(65536)
      this.pts = new Float64Array(65536)
    }
  }

  /** n PUBLISH packets in one buffer, each with the next seq, a free packet id and the send time */
  build(n, t) {
    const len = this.tlen
    const buf = Buffer.allocUnsafe(n * len)
    this.tmpl.copy(buf, 0)
    let filled = len
    while (filled < n * len) {
      const k = Math.min(filled, n * len - filled)
      buf.copyWithin(filled, 0, k)
      filled += k
    }
    const lo = t % TWO32
    const hi = Math.floor(t / TWO32)
    const qos = this.qos
    let o = this.payOff
    let po = this.pidOff
    for (let k = 0; k < n; k++) {
      if (qos > 0) {
        const pst = this.pst
        let pid = this.nextPid
        while (pid === 0 || pst[pid] !== 0) pid = (pid + 1) & 0xffff
        this.nextPid = (pid + 1) & 0xffff
        pst[pid] = 1
        this.pseq[pid] = this.seq
        this.pts[pid] = t
        buf[po] = pid >> 8
        buf[po + 1] = pid & 0xff
        this.inflight++
        po += len
      }
      put32(buf, o + 4, this.seq++)
      put32(buf, o + 8, lo)
      put32(buf, o + 12, hi)
      o += len
    }
    st.sent += n
    return buf
  }

  start() {
    this.running = true
    if (cfg.ratePerPub > 0) return // the worker's ticker paces it
    if (this.qos === 0) this.pump()
    else this.sock.write(this.build(cfg.window, now()))
  }

  stop() {
    this.running = false
  }

  /**
   * QoS 0 as fast as the broker delivers: batches of 64 KiB, at most two in user space, and at
   * most `cfg.ahead` messages beyond the highest seq every subscriber has seen. (mqload bounds
   * the same thing with a 64 KiB SO_SNDBUF, which node:net cannot set: without a bound, the
   * kernel's autotuned buffers hold tens of MB and "lost" would mean "still in a buffer".)
   * A batch is counted as published when handed to the kernel.
   */
  pump() {
    this.pumpScheduled = false
    const batch = Math.max(1, Math.floor(BATCH_BYTES / this.tlen))
    while (this.running && this.outstanding < 2 && this.state === READY) {
      const n = Math.min(batch, cfg.ahead - (this.seq - this.seenHi - 1))
      if (n <= 0) return
      this.writeCounted(this.build(n, now()), n)
    }
  }

  credit(hi) {
    if (hi <= this.seenHi) return
    this.seenHi = hi
    if (this.running && !this.pumpScheduled && cfg.ratePerPub === 0) this.pump()
  }

  writeCounted(buf, n) {
    this.outstanding++
    this.sock.write(buf, (err) => {
      this.outstanding--
      if (!err) {
        this.flushed += n
        st.flushed += n
      }
      if (this.running && cfg.ratePerPub === 0 && !this.pumpScheduled) {
        this.pumpScheduled = true
        setImmediate(this.pumpBound)
      }
    })
  }

  /** a tick of a rate-paced publisher */
  tick(t) {
    if (!this.running || this.state !== READY) return
    const due = Math.floor(((t - tRun0) * cfg.ratePerPub) / 1e9)
    let n = due - this.seq
    if (n <= 0) return
    if (this.qos > 0) {
      n = Math.min(n, cfg.window - this.inflight)
      if (n > 0) this.sock.write(this.build(n, t))
    } else {
      const room = Math.floor((PACED_MAX_UNSENT - this.sock.writableLength) / this.tlen)
      n = Math.min(n, room)
      if (n > 0) this.writeCounted(this.build(n, t), n)
    }
  }

  onAck(type, pid, t) {
    const pst = this.pst
    if (pst === undefined) {
      st.badAck++
      return
    }
    if (type === 4) {
      if (pst[pid] !== 1 || this.qos !== 1) st.badAck++
      else this.complete(pid, t)
    } else if (type === 5) {
      if (pst[pid] === 1 && this.qos === 2) {
        pst[pid] = 2
        this.rels.push(pid)
      } else if (pst[pid] === 2) {
        this.rels.push(pid) // a resent PUBREC: PUBREL again
      } else {
        st.badAck++
      }
    } else {
      if (pst[pid] !== 2) st.badAck++
      else this.complete(pid, t)
    }
  }

  complete(pid, t) {
    this.pst[pid] = 0
    this.inflight--
    this.acked++
    st.acked++
    st.last = t
    if (inWindow) hAck.add((t - this.pts[pid]) / 1000)
  }

  /** after a read: the PUBRELs it asks for, then refill the window, as one write */
  afterData(t) {
    if (this.state !== READY || this.qos === 0) return
    const rels = this.rels
    const refill = this.running && cfg.ratePerPub === 0 ? cfg.window - this.inflight : 0
    if (rels.length === 0 && refill <= 0) return
    if (refill <= 0) {
      this.sock.write(relFrames(rels))
    } else if (rels.length === 0) {
      this.sock.write(this.build(refill, t))
    } else {
      this.sock.write(Buffer.concat([relFrames(rels), this.build(refill, t)]))
    }
    rels.length = 0
  }

  finalInfo() {
    const inflightSeqs = []
    if (this.qos > 0) for (let pid = 1; pid < 65536; pid++) if (this.pst[pid] !== 0) inflightSeqs.push(this.pseq[pid])
    return {
      idx: this.idx,
      lim: this.qos > 0 ? this.seq : this.flushed,
      sent: this.seq,
      acked: this.acked,
      inflightSeqs
    }
  }
}

const relFrames = (rels) => {
  const b = Buffer.allocUnsafe(rels.length * 4)
  for (let k = 0; k < rels.length; k++) {
    b[k * 4] = P.PUBREL
    b[k * 4 + 1] = 2
    b[k * 4 + 2] = rels[k] >> 8
    b[k * 4 + 3] = rels[k] & 0xff
  }
  return b
}

// ------------------------------------------------------------------ subscribers

class Sub extends Client {
  constructor(id, filter, slowBps) {
    super(id)
    this.filter = filter
    this.slow = slowBps > 0 // excluded from the drain condition and reported apart
    this.slowBps = slowBps
    this.budget = slowBps / 10 // bytes it may still read in this 100 ms tick (a read can overdraw it)
    this.paused = false
    this.recv = 0
    this.uniq = 0
    this.dup = 0
    this.ooo = 0
    this.bits = Array.from({ length: cfg.npubs }, () => new Uint32Array(0))
    this.last = new Float64Array(cfg.npubs).fill(-1)
    this.q2 = cfg.qos === 2 ? new Uint8Array(8192) : null
    this.ackLen = 0
  }

  connacked() {
    this.state = WAIT_SUBACK
    this.sock.write(P.subscribe(1, this.filter, cfg.qos))
  }

  putAck(type, pid) {
    if (this.ackLen + 4 > scratch.length) this.flushAcks()
    const o = this.ackLen
    scratch[o] = type
    scratch[o + 1] = 2
    scratch[o + 2] = pid >> 8
    scratch[o + 3] = pid & 0xff
    this.ackLen = o + 4
  }

  flushAcks() {
    if (this.ackLen === 0) return
    const b = Buffer.allocUnsafe(this.ackLen)
    scratch.copy(b, 0, 0, this.ackLen)
    this.ackLen = 0
    this.sock.write(b)
  }

  onPublish(b1, buf, i, rl, t) {
    if (this.state !== READY) return this.fail('protocol')
    const qos = (b1 >> 1) & 3
    const end = i + rl
    let p = i + 2 + ((buf[i] << 8) | buf[i + 1])
    let pid = 0
    if (qos > 0) {
      pid = (buf[p] << 8) | buf[p + 1]
      p += 2
    }
    if (p > end) return this.fail('protocol')
    if (qos === 2) {
      const m = 1 << (pid & 7)
      if (this.q2[pid >> 3] & m) {
        // [MQTT-4.3.3-9] a new PUBLISH with an id still awaiting PUBREL is a re-delivery: not delivered
        st.q2dup++
        this.putAck(P.PUBREC, pid)
        return
      }
      this.q2[pid >> 3] |= m
    }
    this.deliver(buf, p, end - p, t)
    if (qos === 1) this.putAck(P.PUBACK, pid)
    else if (qos === 2) this.putAck(P.PUBREC, pid)
  }

  onPubrel(pid) {
    if (this.q2 !== null) this.q2[pid >> 3] &= ~(1 << (pid & 7))
    this.putAck(P.PUBCOMP, pid)
  }

  deliver(buf, p, plen, t) {
    this.recv++
    st.recv++
    st.recvBytes += plen
    st.last = t
    if (plen < P.HEADER) {
      st.foreign++
      return
    }
    const pb = get32(buf, p)
    const seq = get32(buf, p + 4)
    if (pb >= cfg.npubs || seq >= MAX_SEQ) {
      st.foreign++
      return
    }
    let bits = this.bits[pb]
    const w = seq >>> 5
    if (w >= bits.length) {
      let size = bits.length || 1024
      while (size <= w) size *= 2
      const grown = new Uint32Array(size)
      grown.set(bits)
      this.bits[pb] = bits = grown
    }
    const m = 1 << (seq & 31)
    if ((bits[w] & m) !== 0) this.dup++
    else {
      bits[w] |= m
      this.uniq++
    }
    if (seq < this.last[pb]) this.ooo++
    else this.last[pb] = seq
    if (inWindow) {
      const ts = get32(buf, p + 8) + get32(buf, p + 12) * TWO32
      if (t >= ts) {
        hLat.add((t - ts) / 1000)
        if (SLOW_US > 0 && t - ts > SLOW_US * 1000) slowList.push([ts, Math.round((t - ts) / 1000)])
      }
    }
  }

  afterData(t, bytes) {
    this.flushAcks()
    if (this.slowBps > 0 && phase !== 'setup') {
      this.budget -= bytes
      if (!this.paused && this.budget <= 0) {
        this.paused = true
        this.sock.pause()
      }
    }
  }

  /** every 100 ms: a slow subscriber's read budget grows by a tenth of its rate (a token bucket) */
  slowTick() {
    this.budget = this.slowBps > 0 ? Math.min(this.budget + this.slowBps / 10, this.slowBps / 10) : 1
    if (this.paused && this.budget > 0 && this.state === READY) {
      this.paused = false
      this.sock.resume()
    }
  }

  /** lost / expected per publisher, as mqload: seqs [0, lim) are owed; un-acked ones at the end are not */
  check(pubs) {
    let expected = 0
    let unique = 0
    let lost = 0
    const gaps = [] // the first missing seq ranges: [publisher, from, to]
    for (const p of pubs) {
      const bits = this.bits[p.idx] ?? new Uint32Array(0)
      const u = countBits(bits, p.lim)
      let im = 0
      for (const s of p.inflightSeqs) if (s >= p.lim || (bits[s >>> 5] & (1 << (s & 31))) === 0) im++
      expected += p.lim - p.inflightSeqs.length
      unique += u
      lost += p.lim - u - im
      if (p.lim - u - im > 0 && gaps.length < 8) gaps.push(...missingRanges(bits, p.lim, 8 - gaps.length).map((g) => [p.idx, ...g]))
    }
    return { id: this.id, slow: this.slow, recv: this.recv, unique, expected, lost, dup: this.dup, ooo: this.ooo, gaps }
  }
}

const popcount = (x) => {
  x -= (x >>> 1) & 0x55555555
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333)
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24
}

/** up to max ranges [from, to] of seqs below lim that are not set */
const missingRanges = (bits, lim, max) => {
  const out = []
  let from = -1
  for (let s = 0; s < lim && out.length < max; s++) {
    const has = (bits[s >>> 5] & (1 << (s & 31))) !== 0
    if (!has && from < 0) from = s
    if (has && from >= 0) {
      out.push([from, s - 1])
      from = -1
    }
  }
  if (from >= 0 && out.length < max) out.push([from, lim - 1])
  return out
}

/** set bits among the first lim bits */
const countBits = (bits, lim) => {
  let u = 0
  const words = Math.min(bits.length, Math.ceil(lim / 32))
  for (let w = 0; w < words; w++) {
    let x = bits[w]
    if ((w + 1) * 32 > lim) x &= (1 << (lim - w * 32)) - 1 // lim - w*32 < 32 here
    u += popcount(x >>> 0)
  }
  return u
}

// ------------------------------------------------------------------ idle clients

class Idle extends Client {
  constructor(id, topic) {
    super(id)
    this.topic = topic
  }
  connacked(t) {
    if (this.topic === null) return this.becomeReady(t)
    this.state = WAIT_SUBACK
    this.sock.write(P.subscribe(1, this.topic, cfg.qos))
  }
}

// ------------------------------------------------------------------ driving

const openMore = () => {
  while (next < clients.length && st.pending < cfg.concurrency && !stopOpening) clients[next++].open()
}

function settled() {
  st.tLast = now()
  openMore()
  if (!reported && st.pending === 0 && (next >= clients.length || stopOpening)) {
    reported = true
    process.send({
      t: 'ready',
      ready: st.ready,
      failed: st.failed,
      attempted: st.attempts,
      fail: st.fail,
      tFirst: st.tFirst,
      tLast: st.tLast,
      hConn: hConn.toJSON()
    })
  }
}

/** timeouts of pending connects, keepalive pings, slow subscribers' budgets */
const sweep = () => {
  const t = now()
  const tmo = cfg.connectTimeoutS * 1e9
  for (const c of clients) {
    if (c.state === READY) {
      if (t >= c.nextPing) {
        c.sock.write(P.PINGREQ)
        c.nextPing = t + c.ka * 750e6
      }
      if (c.slowBps > 0) c.slowTick()
    } else if (c.state !== CLOSED && c.state !== NEW && t - c.t0 > tmo) {
      c.fail('timeout')
    }
  }
}

const snapshot = (name) => {
  snaps[name] = {
    t: now(),
    sent: st.sent,
    flushed: st.flushed,
    acked: st.acked,
    recv: st.recv,
    recvBytes: st.recvBytes,
    perSub: cfg.role === 'sub' ? clients.map((c) => c.recv) : undefined
  }
}

const pubs = () => clients.filter((c) => c instanceof Pub)

/**
 * The QoS 0 credit goes straight from the subscriber processes to the publisher process over a
 * Unix socket (no hop through the parent): every millisecond, when it changed, a subscriber
 * process sends [u32 its index][i32 per publisher: the lowest of its fast subscribers' highest
 * seq]; the publisher process takes the lowest over subscriber processes.
 */
const creditFrame = () => 4 + 4 * cfg.npubs

const creditSender = () => {
  let sock
  let tries = 0
  const open = () => {
    sock = net.connect(cfg.creditPath)
    sock.on('error', () => {
      // the publisher process listens before it reports ready; a late start gets a few retries
      if (++tries <= 20 && phase !== 'final') setTimeout(open, 10)
    })
  }
  open()
  const frame = Buffer.alloc(creditFrame())
  frame.writeUInt32LE(cfg.subWorker, 0)
  let last = ''
  const feed = setInterval(() => {
    if (phase === 'final') {
      clearInterval(feed)
      sock.destroy()
      return
    }
    for (let p = 0; p < cfg.npubs; p++) {
      let hi = Infinity
      for (const c of clients) if (!c.slow && c.last[p] < hi) hi = c.last[p]
      frame.writeInt32LE(hi === Infinity ? -1 : hi, 4 + 4 * p)
    }
    const key = frame.toString('latin1')
    if (key === last || sock.connecting || sock.destroyed) return
    last = key
    sock.write(Buffer.from(frame))
  }, 1)
}

const creditReceiver = () => {
  const his = Array.from({ length: cfg.subWorkers }, () => null)
  const apply = () => {
    if (his.some((h) => h === null)) return
    for (const c of clients) {
      let lo = Infinity
      for (const h of his) if (h[c.idx] < lo) lo = h[c.idx]
      c.credit(lo)
    }
  }
  const server = net.createServer((s) => {
    let pend = Buffer.alloc(0)
    s.on('error', () => {})
    s.on('data', (chunk) => {
      pend = pend.length ? Buffer.concat([pend, chunk]) : chunk
      const n = creditFrame()
      let off = 0
      for (; off + n <= pend.length; off += n) {
        const w = pend.readUInt32LE(off)
        const h = (his[w] ??= new Array(cfg.npubs))
        for (let p = 0; p < cfg.npubs; p++) h[p] = pend.readInt32LE(off + 4 + 4 * p)
      }
      pend = pend.subarray(off)
      apply()
    })
  })
  server.listen(cfg.creditPath)
  server.unref()
}

const run = (m) => {
  phase = 'run'
  tRun0 = now()
  setTimeout(
    () => {
      snapshot('start')
      inWindow = true
    },
    Math.max(0, (m.tws - tRun0) / 1e6)
  )
  setTimeout(
    () => {
      inWindow = false
      snapshot('end')
      phase = 'drain'
      for (const c of clients) {
        if (c instanceof Pub) c.stop()
        else if (c instanceof Sub && c.slow) {
          // the drain reads at full speed: what the broker still holds for it arrives, what it dropped is lost
          c.slowBps = 0
          c.slowTick()
        }
      }
    },
    Math.max(0, (m.twe - tRun0) / 1e6)
  )
  if (cfg.role === 'sub' && cfg.feedback) creditSender()
  if (cfg.role !== 'pub') return
  for (const p of pubs()) if (p.state === READY) p.start()
  if (cfg.ratePerPub > 0) {
    const list = pubs()
    const ticker = setInterval(() => {
      if (phase !== 'run') return clearInterval(ticker)
      const t = now()
      for (const p of list) p.tick(t)
    }, 1)
  }
}

const stats = () => {
  let inflight = 0
  let unsent = 0
  let uniq = 0
  for (const c of clients) {
    if (c instanceof Pub) {
      inflight += c.inflight
      if (c.state === READY) unsent += c.sock.writableLength
    } else if (c instanceof Sub) {
      uniq += c.uniq
    }
  }
  return {
    t: 'stats',
    now: now(),
    last: st.last,
    sent: st.sent,
    flushed: st.flushed,
    acked: st.acked,
    recv: st.recv,
    inflight,
    unsent,
    uniq,
    disconnects: st.disconnects
  }
}

const final = (m) => {
  phase = 'final'
  const out = { t: 'result', snaps, disconnects: st.disconnects, badAck: st.badAck, foreign: st.foreign, q2dup: st.q2dup }
  if (cfg.role === 'pub') {
    out.pubs = pubs().map((p) => p.finalInfo())
    out.hAck = hAck.toJSON()
  } else if (cfg.role === 'sub') {
    out.subs = clients.map((c) => c.check(m.pubs))
    out.hLat = hLat.toJSON()
    if (SLOW_US > 0) console.log(`slow ${JSON.stringify(slowList)}`)
  }
  process.send(out)
}

let sweepTimer = null

const init = (c) => {
  cfg = c
  clients = cfg.ids.map((id, k) => {
    if (cfg.role === 'pub') return new Pub(id, cfg.pubIdx[k], cfg.topics[k])
    if (cfg.role === 'sub') return new Sub(id, cfg.filter, cfg.slow.includes(id) ? cfg.slowBps : 0)
    return new Idle(id, cfg.subscribe ? `${cfg.prefix}c/${id}` : null)
  })
  if (sweepTimer === null) sweepTimer = setInterval(sweep, 100)
  if (cfg.role === 'pub' && cfg.feedback) creditReceiver()
  if (clients.length === 0) {
    reported = true
    process.send({ t: 'ready', ready: 0, failed: 0, attempted: 0, fail: st.fail, tFirst: 0, tLast: 0, hConn: hConn.toJSON() })
    return
  }
  openMore()
}

/** DISCONNECT every ready client, then exit once the sockets are closed (at most 300 ms) */
const close = () => {
  let open = 0
  const done = () => --open === 0 && process.exit(0)
  for (const c of clients) {
    if (c.sock !== null && !c.sock.destroyed) {
      open++
      c.sock.once('close', done)
    }
    c.disconnect()
  }
  if (open === 0) process.exit(0)
  setTimeout(() => process.exit(0), 300)
}

/**
 * Idle clients: DISCONNECT every client, wait until their sockets are closed (at most 5 s), forget
 * them and the counters, and answer `reset`; a second `init` follows (the connection scenarios'
 * second round, against a broker and a generator that have run once).
 */
const reset = () => {
  let open = 0
  let finished = false
  const finish = () => {
    if (finished) return
    finished = true
    for (const c of clients) c.state = CLOSED
    clients = []
    next = 0
    stopOpening = false
    reported = false
    for (const k of ['attempts', 'pending', 'ready', 'failed', 'disconnects', 'tFirst', 'tLast']) st[k] = 0
    for (const k of FAILS) st.fail[k] = 0
    hConn = new Hist()
    process.send({ t: 'reset' })
  }
  for (const c of clients) {
    if (c.sock !== null && !c.sock.destroyed) {
      open++
      c.sock.once('close', () => --open === 0 && finish())
    }
    c.disconnect()
  }
  if (open === 0) finish()
  else setTimeout(finish, 5000)
}

process.on('message', (m) => {
  switch (m.t) {
    case 'init':
      return init(m.cfg)
    case 'reset':
      return reset()
    case 'run':
      return run(m)
    case 'poll':
      return process.send(stats())
    case 'alive':
      return process.send({
        t: 'alive',
        alive: clients.reduce((n, c) => n + (c.state === READY ? 1 : 0), 0),
        disconnects: st.disconnects
      })
    case 'final':
      return final(m)
    case 'close':
      return close()
  }
})
// bounded: the parent going away, or a hard lifetime, ends this process
process.on('disconnect', () => process.exit(0))
setTimeout(() => process.exit(3), Number(process.env.BENCH_WORKER_MAX_S ?? 600) * 1000).unref()
process.send({ t: 'hello', pid: process.pid })
