#!/usr/bin/env node
// node bench/selftest.mjs -- checks that the load generator measures what it claims:
//  1. the hand-encoded packets equal mqtt-packet's (the codec of record), byte for byte;
//  2. the histogram's percentiles are within 0.1 % of the exact ones;
//  3. end to end through the real generator processes, against a fake broker built on
//     mqtt-packet that writes its output in random small pieces (frame reassembly) and can
//     drop or duplicate chosen deliveries: lost and dup must come out exactly as injected,
//     and zero when nothing is injected. A generator that cannot count would fail here;
//  4. the floor broker (bench/floor-broker.mjs) through the generator at QoS 0 / 1 / 2, with and
//     without a window: 0 lost, 0 dup, in order, drained; and MQTT.js through it at QoS 1 / 2.
import assert from 'node:assert/strict'
import net from 'node:net'
import mqtt from 'mqtt-packet'
import { Hist } from './lib/hist.mjs'
import * as P from './lib/packets.mjs'
import { runPubSub } from './lib/runner.mjs'

let failures = 0
const check = async (name, f) => {
  try {
    await f()
    console.log(`ok   ${name}`)
  } catch (e) {
    failures++
    console.log(`FAIL ${name}\n     ${e.stack ?? e.message}`)
  }
}
const gen = (p) => mqtt.generate(p, { protocolVersion: 4 })

// ------------------------------------------------------------------ 1. packets
await check('CONNECT equals mqtt-packet [MQTT-3.1]', () => {
  for (const [id, ka] of [['a', 0], ['b12345-s0', 60], ['x'.repeat(200), 65535]]) {
    const ref = gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: id, keepalive: ka })
    assert.deepEqual(P.connect(id, ka), ref)
  }
})
await check('SUBSCRIBE equals mqtt-packet [MQTT-3.8.1-1]', () => {
  for (const qos of [0, 1, 2]) {
    const ref = gen({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bench/abc/t/+', qos }] })
    assert.deepEqual(P.subscribe(1, 'bench/abc/t/+', qos), ref)
  }
})
await check('PUBLISH template, with id / seq / time patched, equals mqtt-packet [MQTT-3.3]', () => {
  for (const qos of [0, 1, 2]) {
    for (const size of [16, 64, 200]) {
      const t = P.publishTemplate('bench/abc/t/7', qos, size, 7)
      const b = Buffer.from(t.buf)
      if (qos > 0) b.writeUInt16BE(4242, t.pidOff)
      b.writeUInt32LE(99, t.payOff + 4)
      b.writeUInt32LE(5, t.payOff + 8)
      b.writeUInt32LE(1, t.payOff + 12)
      const payload = b.subarray(t.payOff)
      assert.equal(payload.readUInt32LE(0), 7)
      assert.equal(payload.length, size)
      const ref = gen({ cmd: 'publish', topic: 'bench/abc/t/7', qos, retain: false, dup: false, messageId: qos ? 4242 : undefined, payload })
      assert.deepEqual(b, ref)
    }
  }
})
await check('acks, PINGREQ, DISCONNECT equal mqtt-packet [MQTT-3.6.1-1]', () => {
  assert.deepEqual(P.ack(P.PUBACK, 513), gen({ cmd: 'puback', messageId: 513 }))
  assert.deepEqual(P.ack(P.PUBREC, 513), gen({ cmd: 'pubrec', messageId: 513 }))
  assert.deepEqual(P.ack(P.PUBREL, 513), gen({ cmd: 'pubrel', messageId: 513 }))
  assert.deepEqual(P.ack(P.PUBCOMP, 65535), gen({ cmd: 'pubcomp', messageId: 65535 }))
  assert.deepEqual(P.PINGREQ, gen({ cmd: 'pingreq' }))
  assert.deepEqual(P.DISCONNECT, gen({ cmd: 'disconnect' }))
})

// ------------------------------------------------------------------ 2. histogram
await check('histogram percentiles within 0.1 % of exact', () => {
  let seed = 12345
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648)
  const h = new Hist()
  const xs = []
  for (let i = 0; i < 20000; i++) {
    const v = Math.floor(Math.exp(rnd() * 16)) // 1 .. ~9e6, log-spread
    xs.push(v)
    h.add(v)
  }
  const merged = new Hist().merge(JSON.parse(JSON.stringify(h.toJSON())))
  xs.sort((a, b) => a - b)
  for (const p of [0.5, 0.9, 0.99, 0.999]) {
    const exact = xs[Math.ceil(p * xs.length) - 1]
    const got = merged.pct(p)
    assert.ok(Math.abs(got - exact) <= Math.max(1, exact * 0.001), `p${p * 100}: ${got} vs ${exact}`)
  }
  assert.equal(merged.max, xs[xs.length - 1])
})

// ------------------------------------------------------------------ 3. end to end
/**
 * A fake MQTT 3.1.1 broker on mqtt-packet. `inject(sub, seq, pub)` decides per delivery:
 * 'drop', 'dup' or undefined. Output goes out in pieces of 1..97 bytes.
 */
const fakeBroker = (inject) =>
  new Promise((resolve) => {
    const subs = []
    const counts = { dropped: 0, duplicated: 0 }
    const server = net.createServer((sock) => {
      sock.setNoDelay(true)
      const parser = mqtt.parser({ protocolVersion: 4 })
      const client = { sock, filter: null, qos: 0, nextId: 1, delivered: 0 }
      let pieceSeed = 7
      const send = (packet) => {
        const b = gen(packet)
        for (let o = 0; o < b.length; ) {
          pieceSeed = (pieceSeed * 48271) % 2147483647
          const n = 1 + (pieceSeed % 97)
          sock.write(b.subarray(o, o + n))
          o += n
        }
      }
      client.send = send
      parser.on('packet', (p) => {
        switch (p.cmd) {
          case 'connect':
            return send({ cmd: 'connack', returnCode: 0, sessionPresent: false })
          case 'subscribe':
            client.filter = p.subscriptions[0].topic
            client.qos = p.subscriptions[0].qos
            subs.push(client)
            return send({ cmd: 'suback', messageId: p.messageId, granted: [client.qos] })
          case 'publish': {
            for (const s of subs) {
              const f = s.filter
              const match = f === p.topic || (f.endsWith('/+') && p.topic.startsWith(f.slice(0, -1)) && !p.topic.slice(f.length - 1).includes('/'))
              if (!match) continue
              const action = inject(subs.indexOf(s), p.payload.readUInt32LE(4), p.payload.readUInt32LE(0))
              if (action === 'drop') {
                counts.dropped++
                continue
              }
              const qos = Math.min(p.qos, s.qos)
              const times = action === 'dup' ? 2 : 1
              if (times === 2) counts.duplicated++
              for (let k = 0; k < times; k++) {
                const messageId = qos > 0 ? (s.nextId = (s.nextId % 65535) + 1) : undefined
                s.send({ cmd: 'publish', topic: p.topic, payload: p.payload, qos, retain: false, dup: false, messageId })
              }
            }
            if (p.qos === 1) send({ cmd: 'puback', messageId: p.messageId })
            if (p.qos === 2) send({ cmd: 'pubrec', messageId: p.messageId })
            return
          }
          case 'pubrel':
            return send({ cmd: 'pubcomp', messageId: p.messageId })
          case 'pubrec':
            return send({ cmd: 'pubrel', messageId: p.messageId })
          case 'pingreq':
            return send({ cmd: 'pingresp' })
          default:
            return
        }
      })
      sock.on('data', (d) => parser.parse(d))
      sock.on('error', () => {})
    })
    server.listen(0, '127.0.0.1', () => resolve({ server, port: server.address().port, counts }))
  })

const o = { warmup: 0.3, dur: 1, drain: 5, ahead: 200 }
const scenario = (qos, extra = {}) => ({ kind: 'pubsub', qos, pubs: 3, subs: 2, size: 32, topics: 'distinct', window: 10, ...extra })
const e2e = async (sc, inject) => {
  const fb = await fakeBroker(inject)
  try {
    const r = await runPubSub(sc, { port: fb.port, pid: process.pid }, o, '/dev/null')
    assert.equal(r.error, null)
    return { r, counts: fb.counts }
  } finally {
    fb.server.close()
  }
}

for (const qos of [0, 1, 2]) {
  await check(`e2e QoS ${qos}: nothing injected -> lost 0, dup 0, every message seen`, async () => {
    const { r } = await e2e(scenario(qos), () => undefined)
    assert.ok(r.check.expected > 100, `expected ${r.check.expected}`)
    assert.equal(r.check.lost, 0)
    assert.equal(r.check.dup, 0)
    assert.equal(r.check.ooo, 0)
    assert.equal(r.check.unique, r.check.expected)
    assert.ok(r.recv_rate > 0 && r.pub_rate > 0)
    assert.equal(r.check.drained, true)
  })
}
await check('e2e QoS 1: dropped deliveries are counted as lost, exactly', async () => {
  // drop seqs 10..19 of publisher 1 for subscriber 0 only
  const { r, counts } = await e2e(scenario(1), (sub, seq, pub) => (sub === 0 && pub === 1 && seq >= 10 && seq < 20 ? 'drop' : undefined))
  assert.equal(counts.dropped, 10)
  assert.equal(r.check.lost, 10)
  assert.deepEqual(r.check.gaps[0], [0, 1, 10, 19])
  assert.equal(r.check.dup, 0)
})
await check('e2e QoS 1: duplicated deliveries are counted as dup, exactly', async () => {
  const { r, counts } = await e2e(scenario(1), (sub, seq) => (seq % 50 === 3 ? 'dup' : undefined))
  assert.ok(counts.duplicated > 0)
  assert.equal(r.check.dup, counts.duplicated)
  assert.equal(r.check.lost, 0)
})
await check('e2e QoS 2: a duplicate delivery with a new packet id is counted as dup', async () => {
  const { r, counts } = await e2e(scenario(2), (sub, seq) => (seq === 5 ? 'dup' : undefined))
  assert.equal(counts.duplicated, 6) // seq 5 of 3 publishers x 2 subscribers
  assert.equal(r.check.dup, 6)
  assert.equal(r.check.lost, 0)
})
await check('e2e QoS 0 fixed rate: 1 publisher at 2,000 msg/s -> ~2,000 msg/s each, latency measured', async () => {
  const { r } = await e2e(scenario(0, { pubs: 1, subs: 2, rate: 2000, topics: 'single' }), () => undefined)
  assert.ok(Math.abs(r.pub_rate - 2000) < 200, `pub_rate ${r.pub_rate}`)
  assert.ok(Math.abs(r.recv_rate - 4000) < 400, `recv_rate ${r.recv_rate}`)
  assert.ok(r.lat_us.n > 1000 && r.lat_us.p50 > 0 && r.lat_us.p50 < 100000, JSON.stringify(r.lat_us))
  assert.equal(r.check.lost, 0)
})

// ------------------------------------------------------------------ 4. the floor broker
// bench/floor-broker.mjs (issue #10's Node floor) relays what the generator sends, completely: 0 lost,
// 0 dup, in order, drained; with a window of 3 (queue, hold) too; and MQTT.js, a client of record,
// completes QoS 1 and QoS 2 through it both ways.
const withFloor = async (extraArgs, f) => {
  const { spawn } = await import('node:child_process')
  const child = spawn(process.execPath, [new URL('./floor-broker.mjs', import.meta.url).pathname, '-p', '0', ...extraArgs], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const port = await new Promise((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(Number(/:(\d+) pid/.exec(String(d))?.[1])))
      child.once('exit', (code) => reject(new Error(`floor-broker exited ${code}`)))
    })
    return await f(port)
  } finally {
    child.kill('SIGTERM')
  }
}
for (const [qos, args] of [[0, []], [1, []], [2, []], [1, ['--max-inflight', '3']], [2, ['--max-inflight', '3']]]) {
  await check(`floor broker${args.length ? ` ${args.join(' ')}` : ''}: generator QoS ${qos} -> lost 0, dup 0, drained`, async () => {
    await withFloor(args, async (port) => {
      const r = await runPubSub(scenario(qos), { port, pid: process.pid }, o, '/dev/null')
      assert.equal(r.error, null)
      assert.ok(r.check.expected > 100, `expected ${r.check.expected}`)
      assert.equal(r.check.lost, 0)
      assert.equal(r.check.dup, 0)
      assert.equal(r.check.ooo, 0)
      assert.equal(r.check.drained, true)
    })
  })
}
await check('floor broker: MQTT.js publishes and receives at QoS 1 and 2 (every flow completed)', async () => {
  const { connectAsync } = await import('mqtt')
  await withFloor([], async (port) => {
    const sub = await connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, reconnectPeriod: 0 })
    const pub = await connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, reconnectPeriod: 0 })
    try {
      const got = []
      sub.on('message', (topic, payload, packet) => got.push(`${topic} ${payload} q${packet.qos}`))
      await sub.subscribeAsync({ 'f/+': { qos: 2 }, 'g/x': { qos: 1 } })
      for (let i = 0; i < 20; i++) await pub.publishAsync(i % 2 ? 'f/a' : 'g/x', String(i), { qos: i % 3 === 0 ? 1 : 2 })
      for (let t = 0; t < 100 && got.length < 20; t++) await new Promise((r) => setTimeout(r, 20))
      const want = Array.from({ length: 20 }, (_, i) => `${i % 2 ? 'f/a' : 'g/x'} ${i} q${i % 2 ? (i % 3 === 0 ? 1 : 2) : 1}`)
      // every message once at min(QoS, granted); in order per QoS (MQTT orders each QoS's flow, not across them)
      for (const q of ['q1', 'q2']) assert.deepEqual(got.filter((g) => g.endsWith(q)), want.filter((w) => w.endsWith(q)))
      assert.equal(got.length, want.length)
      // nothing left unfinished on either client
      assert.equal(Object.keys(pub.outgoing).length, 0)
      assert.equal(Object.keys(sub.outgoing).length, 0)
    } finally {
      await Promise.all([sub.endAsync(), pub.endAsync()])
    }
  })
})

console.log(failures === 0 ? 'selftest: all passed' : `selftest: ${failures} failed`)
process.exit(failures === 0 ? 0 : 1)
