#!/usr/bin/env node
// Cluster throughput (issue #9): 1, 2 and 3 Midge nodes on this machine sharing one redis-server.
//
// For each node count N it starts a fresh redis-server (no persistence) and N daemons
// (`node MAIN -c conf` with cluster_redis_url), then on every node i: PUBS publishers sending
// QoS Q messages of SIZE bytes to `bench/i/<k>`, and one subscriber to `bench/i/#` on node
// (i+1) mod N — so with N >= 2 every message crosses nodes through Redis, with N = 1 it stays
// local. "1 (no redis)" is the same single node without cluster options: the baseline.
// Reports delivered msgs/s over SECONDS after a 1 s warm-up, and the CPU each process used
// per delivered message (utime + stime from /proc): Midge nodes and redis-server apart.
//
//   node bench/cluster.mjs [--nodes 0,1,2,3] [--seconds 5] [--qos 1] [--pubs 2] [--window 100]
//        [--size 64] [--main dist/main.js]
//   MIDGE_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/p"   node options for the Midge daemons
//   MIDGE_CONF="max_inflight_messages 100;set_tcp_nodelay true"   more config lines for them
//
// (0 in --nodes is the baseline without Redis.) MAIN defaults to dist/main.js: run `npm run build`
// first (`npm run bench:cluster` does).
import { spawn, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import mqtt from 'mqtt'
import { freePort } from './lib/proc.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const opts = { nodes: [0, 1, 2, 3], seconds: 5, qos: 1, pubs: 2, window: 100, size: 64, main: path.join(here, '..', 'dist', 'main.js') }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  const v = argv[++i]
  if (a === '--nodes') opts.nodes = v.split(',').map(Number)
  else if (a === '--seconds') opts.seconds = Number(v)
  else if (a === '--qos') opts.qos = Number(v)
  else if (a === '--pubs') opts.pubs = Number(v)
  else if (a === '--window') opts.window = Number(v)
  else if (a === '--size') opts.size = Number(v)
  else if (a === '--main') opts.main = path.resolve(v)
  else {
    console.error(`unknown argument ${a}`)
    process.exit(2)
  }
}
if (!fs.existsSync(opts.main)) {
  console.error(`${opts.main} not found: run npm run build (or pass --main)`)
  process.exit(2)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const waitPort = async (port, ms = 30_000) => {
  const t0 = Date.now()
  for (;;) {
    const ok = await new Promise((r) => {
      const c = net.connect({ port, host: '127.0.0.1' })
      c.once('connect', () => (c.destroy(), r(true)))
      c.once('error', () => (c.destroy(), r(false)))
    })
    if (ok) return
    if (Date.now() - t0 > ms) throw new Error(`nothing listens on ${port}`)
    await sleep(20)
  }
}
const ticks = os.constants?.signals ? 100 : 100 // USER_HZ on Linux
const cpuMs = (pid) => {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1000) / ticks
  } catch {
    return 0
  }
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'midge-bench-cluster-'))
const children = []
const cleanup = () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
  fs.rmSync(tmp, { recursive: true, force: true })
}
process.on('exit', cleanup)
process.on('SIGINT', () => process.exit(130))

const startRedis = async () => {
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', tmp], { stdio: 'ignore' })
  children.push(child)
  await waitPort(port)
  return { child, port }
}

const startNode = async (i, redisPort) => {
  const port = await freePort()
  const conf = path.join(tmp, `n${i}.conf`)
  const lines = [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'max_queued_messages 100000', 'log_type error', 'log_type warning']
  for (const line of (process.env.MIDGE_CONF ?? '').split(';')) if (line.trim() !== '') lines.push(line.trim())
  if (redisPort !== undefined) lines.push(`cluster_redis_url redis://127.0.0.1:${redisPort}`, `cluster_node_id n${i}`, 'cluster_key_prefix bench')
  fs.writeFileSync(conf, lines.join('\n') + '\n')
  const flags = (process.env.MIDGE_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '')
  const child = spawn(process.execPath, [...flags, opts.main, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
  child.stderr.on('data', (d) => process.stderr.write(`[n${i}] ${d}`))
  children.push(child)
  await waitPort(port)
  return { child, port }
}

const connect = (port, options = {}) =>
  new Promise((resolve, reject) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, ...options })
    c.once('connect', () => resolve(c))
    c.once('error', reject)
  })

const runOne = async (n) => {
  const clustered = n > 0
  const count = Math.max(n, 1)
  const redis = clustered ? await startRedis() : undefined
  const nodes = []
  for (let i = 0; i < count; i++) nodes.push(await startNode(i, redis?.port))
  let delivered = 0
  let acked = 0
  const subs = []
  for (let i = 0; i < count; i++) {
    const sub = await connect(nodes[(i + 1) % count].port, { clientId: `sub${i}` })
    sub.on('message', () => delivered++)
    await sub.subscribeAsync(`bench/${i}/#`, { qos: opts.qos })
    subs.push(sub)
  }
  // routes reach every node within a heartbeat; check with one probe per pair
  if (clustered) await sleep(1500)
  const pubs = []
  for (let i = 0; i < count; i++) for (let k = 0; k < opts.pubs; k++) pubs.push({ node: i, k, client: await connect(nodes[i].port, { clientId: `pub${i}-${k}` }) })
  const before = delivered
  for (const p of pubs) await p.client.publishAsync(`bench/${p.node}/${p.k}`, 'probe', { qos: 1 })
  for (let t = 0; delivered - before < pubs.length && t < 200; t++) await sleep(25)
  if (delivered - before < pubs.length) throw new Error(`probe: ${delivered - before} of ${pubs.length} delivered (routes not set up)`)

  const payload = Buffer.alloc(opts.size, 120)
  let stop = false
  const pump = (p) =>
    new Promise((resolve) => {
      let out = 0
      const topic = `bench/${p.node}/${p.k}`
      const fill = () => {
        if (opts.qos === 0) {
          // QoS 0: as fast as the socket drains
          while (!stop && p.client.stream.writableLength < 1 << 20) p.client.publish(topic, payload, { qos: 0 })
          if (stop) return resolve()
          setImmediate(fill)
          return
        }
        while (!stop && out < opts.window) {
          out++
          p.client.publish(topic, payload, { qos: opts.qos }, () => {
            acked++
            out--
            if (stop) {
              if (out === 0) resolve()
            } else fill()
          })
        }
      }
      fill()
    })
  const running = pubs.map(pump)
  await sleep(1000)
  const d0 = delivered
  const a0 = acked
  const g0 = process.cpuUsage()
  const cpu0 = nodes.map((x) => cpuMs(x.child.pid))
  const r0 = redis ? cpuMs(redis.child.pid) : 0
  const t0 = process.hrtime.bigint()
  await sleep(opts.seconds * 1000)
  const d1 = delivered
  const a1 = acked
  const g1 = process.cpuUsage(g0)
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  const cpu1 = nodes.map((x) => cpuMs(x.child.pid))
  const r1 = redis ? cpuMs(redis.child.pid) : 0
  stop = true
  await Promise.race([Promise.all(running), sleep(5000)])
  const msgs = d1 - d0
  const nodeCpu = cpu1.reduce((s, c, i) => s + c - cpu0[i], 0)
  const result = {
    nodes: clustered ? String(n) : '1 (no redis)',
    rate: Math.round(msgs / secs),
    published: opts.qos === 0 ? '-' : Math.round((a1 - a0) / secs),
    genCpuPct: (((g1.user + g1.system) / 1000 / (secs * 1000)) * 100).toFixed(0),
    nodeUsPerMsg: msgs > 0 ? ((nodeCpu * 1000) / msgs).toFixed(1) : '-',
    redisUsPerMsg: clustered && msgs > 0 ? (((r1 - r0) * 1000) / msgs).toFixed(1) : '-',
    nodeCpuPct: ((nodeCpu / (secs * 1000)) * 100).toFixed(0),
    redisCpuPct: clustered ? ((((r1 - r0) / (secs * 1000)) * 100).toFixed(0)) : '-'
  }
  for (const c of [...pubs.map((p) => p.client), ...subs]) c.end(true)
  for (const x of nodes) x.child.kill('SIGTERM')
  if (redis) redis.child.kill('SIGKILL')
  await sleep(500)
  return result
}

console.log(
  `# midge cluster bench: qos ${opts.qos}, ${opts.pubs} publisher(s) per node` +
    (opts.qos > 0 ? ` (window ${opts.window})` : '') +
    `, ${opts.size}-byte payloads, ${opts.seconds} s; ${os.cpus().length} cores, node ${process.version}, ${execFileSync('redis-server', ['--version']).toString().split(' ')[2]}`
)
console.log('| nodes | delivered msgs/s | acknowledged to publishers msgs/s | node CPU µs/msg | redis CPU µs/msg | nodes CPU % | redis CPU % | generator CPU % |')
console.log('|---|---|---|---|---|---|---|---|')
for (const n of opts.nodes) {
  const r = await runOne(n)
  console.log(`| ${r.nodes} | ${r.rate} | ${r.published} | ${r.nodeUsPerMsg} | ${r.redisUsPerMsg} | ${r.nodeCpuPct} | ${r.redisCpuPct} | ${r.genCpuPct} |`)
}
process.exit(0)
