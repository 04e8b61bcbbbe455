#!/usr/bin/env node
// A QoS 1 stream to a subscriber whose session has aged, and what it does to the daemon's heap.
//
// The socket bench's subscribers are new when their stream starts. A broker that has run for a
// while has sessions whose state lived through many young-generation collections while other
// clients' traffic ran: V8 has moved that state to old space. This script makes one such
// session and then streams to it, and reports the daemon's garbage collections (--trace-gc)
// during the stream: scavenges, their time, mark-compacts and the heap after each scavenge.
// Those figures count what survives the young generation; unlike rates, they hardly depend on
// the machine's load. See docs/performance.md, "Eighteenth round".
//
//   node bench/aged-session.mjs [--qos2-publisher] [path/to/main.js]      (default dist/main.js; build first)
//
// Steps: subscriber S (QoS 1, `q/#`) gets 100 QoS 1 messages one by one (its in-flight state
// exists, then is empty); 3 s of QoS 0 traffic between two other clients (many scavenges, S
// quiet); then publisher P streams QoS 1 to S for 4 s, 8 messages outstanding, and the script
// checks that S got every one. Clients are MQTT.js; the broker listens on a free loopback port.
//
// --qos2-publisher: the aged session is the publisher's. P publishes at QoS 2 throughout (its
// inbound QoS 2 ids awaiting PUBREL exist, then are empty, then stream) and S subscribes at
// QoS 0, so that no outbound window is in play.
import { spawn } from 'node:child_process'
import { resolve } from 'node:path'
import mqtt from 'mqtt'
import { freePort } from './lib/proc.mjs'

const args = process.argv.slice(2)
const qos2Publisher = args.includes('--qos2-publisher')
const main = resolve(args.find((a) => !a.startsWith('--')) ?? new URL('../dist/main.js', import.meta.url).pathname)
const pubQos = qos2Publisher ? 2 : 1
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const port = await freePort()
const broker = spawn(process.execPath, ['--trace-gc', main, '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] })
let out = ''
broker.stdout.on('data', (d) => (out += d))
broker.stderr.on('data', (d) => (out += d))
try {
  for (let i = 0; i < 100 && !/ running/.test(out); i++) await sleep(100)
  if (!/ running/.test(out)) throw new Error(`the broker did not start:\n${out}`)
  const url = `mqtt://127.0.0.1:${port}`
  const conn = (id) =>
    new Promise((res, rej) => {
      const c = mqtt.connect(url, { clientId: id, clean: true, reconnectPeriod: 0 })
      c.once('connect', () => res(c))
      c.once('error', rej)
    })
  const S = await conn('S')
  await S.subscribeAsync('q/#', { qos: qos2Publisher ? 0 : 1 })
  let got = 0
  S.on('message', () => got++)
  const P = await conn('P')
  const payload = Buffer.alloc(64)
  for (let i = 0; i < 100; i++) await P.publishAsync('q/x', payload, { qos: pubQos })
  // other clients' traffic: S's state lives through many scavenges
  const N = await conn('N')
  await N.subscribeAsync('n/#', { qos: 0 })
  const NP = await conn('NP')
  const t0 = Date.now()
  while (Date.now() - t0 < 3000) {
    for (let i = 0; i < 200; i++) NP.publish('n/x', payload, { qos: 0 })
    await sleep(1)
  }
  await sleep(300)
  const mark = out.length
  const gotBefore = got
  const t1 = Date.now()
  let sent = 0
  while (Date.now() - t1 < 4000) {
    await Promise.all(Array.from({ length: 8 }, () => P.publishAsync('q/x', payload, { qos: pubQos })))
    sent += 8
  }
  for (let i = 0; i < 50 && got - gotBefore < sent; i++) await sleep(100)
  const lines = out.slice(mark).split('\n').filter((l) => l.includes(' ms: '))
  const scavenges = lines.filter((l) => l.includes('Scavenge'))
  const majors = lines.filter((l) => l.includes('Mark-Compact'))
  const pause = (ls) => ls.reduce((a, l) => a + Number((l.match(/, ([0-9.]+) \/ [0-9.]+ ms/) ?? [0, 0])[1]), 0)
  const heap = scavenges.map((l) => Number((l.match(/-> ([0-9.]+) \(/) ?? [0, 0])[1]))
  console.log(
    JSON.stringify({
      broker: main,
      ...(qos2Publisher ? { variant: 'qos2-publisher' } : {}),
      sent,
      delivered: got - gotBefore,
      scavenges: scavenges.length,
      scavenge_ms: +pause(scavenges).toFixed(1),
      mark_compacts: majors.length,
      mark_compact_ms: +pause(majors).toFixed(1),
      heap_mb_after_scavenges: { first: heap[0], last: heap[heap.length - 1], max: heap.length > 0 ? Math.max(...heap) : undefined }
    })
  )
  for (const c of [S, P, N, NP]) c.end(true)
  if (got - gotBefore !== sent) process.exitCode = 1
} finally {
  broker.kill('SIGTERM')
}
