#!/usr/bin/env node
// Connections probe (issue #10): what one idle connection costs Midge in memory, and what one
// connect costs it in CPU. Starts the broker in a child process (as bench/lib/brokers.mjs does:
// `ulimit -n` raised to the hard limit, its own PID), opens N raw TCP MQTT 3.1.1 connections
// with a hand-rolled CONNECT (no MQTT.js), at most W connects pending, and reports
//
//   - connects/s and broker CPU µs per connect (utime + stime of the broker, from /proc),
//   - bytes per connection: VmRSS growth (as `conns_10k` measures it, 1 s after the last
//     CONNACK), and after a full GC in the broker: heapUsed, external and RSS growth,
//   - the marginal cost: clients connect in two halves, and the second half's growth alone is what
//     one more connection costs (free of one-time costs: V8's young generation growing, caches),
//   - with --snapshot: heap snapshots of the broker before and after, and the difference per
//     connection by constructor (count and bytes), which is what each connection holds.
//
// The broker runs with --expose-gc and this file preloaded (--import) in "child" mode: it only
// answers IPC requests (gc + memoryUsage, heap snapshot). Nothing else in the broker changes.
//
//   node bench/connections-probe.mjs [--conns 10000] [--sub] [--window 100] [--workers 2]
//        [--keepalive 60] [--snapshot] [--cpu-prof] [--runs 1] [--password] [--conf 'line;line']
//   node bench/connections-probe.mjs --diff before.heapsnapshot after.heapsnapshot N
//   MIDGE=path/to/main.js (default dist/main.js); PROBE_NODE_FLAGS='--max-semi-space-size=1' adds node flags
//
// MIDGE may list several brokers, comma-separated (two builds, a build and `floor`): each run
// then starts each of them in turn, so that they are compared under the same load; a median per
// broker ends the output. MIDGE=floor is this file as a bare node:net server that answers CONNECT
// with CONNACK and nothing else: what a connect costs Node itself on the machine.
// --password: the clients send a username and password, checked against a password_file
// (made with mosquitto_passwd, PBKDF2 as Mosquitto 2.0 writes it) with allow_anonymous false.
// --conf: extra mosquitto.conf lines for the broker (e.g. 'connection_messages false').
import { execFileSync, spawn, fork } from 'node:child_process'
import { chmodSync, closeSync, openSync, readFileSync, mkdtempSync, existsSync, writeFileSync } from 'node:fs'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const SELF = fileURLToPath(import.meta.url)
const ROOT = join(dirname(SELF), '..')

// ------------------------------------------------------------------ child mode (inside the broker)
if (process.env.MIDGE_PROBE_CHILD === '1' && typeof process.send === 'function') {
  const v8 = await import('node:v8')
  process.channel?.unref()
  process.on('message', (m) => {
    if (m?.op === 'mem') {
      if (typeof globalThis.gc === 'function') {
        globalThis.gc()
        globalThis.gc()
      }
      process.send({ op: 'mem', id: m.id, mem: process.memoryUsage(), handles: process.getActiveResourcesInfo().length })
    } else if (m?.op === 'snapshot') {
      globalThis.gc?.()
      const file = v8.writeHeapSnapshot(m.file)
      process.send({ op: 'snapshot', id: m.id, file })
    }
  })

  // ------------------------------------------------------------------ floor mode (MIDGE=floor)
  // The least a Node process does per connect: accept, read the CONNECT, write CONNACK (and SUBACK for
  // --sub). No parsing beyond the fixed header, no logging, no state: what one connect costs Node itself.
  if (process.env.MIDGE_PROBE_FLOOR === '1') {
    const port = Number(process.argv[process.argv.indexOf('-p') + 1])
    const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00])
    net
      .createServer((socket) => {
        socket.on('data', (chunk) => {
          // a CONNECT, or a SUBSCRIBE (packet id at bytes 2-3 with a one-byte length): nothing else comes
          if (chunk[0] === 0x10) socket.write(CONNACK)
          else if (chunk[0] === 0x82) socket.write(Buffer.from([0x90, 0x03, chunk[2], chunk[3], 0x01]))
        })
        socket.on('error', () => {})
      })
      .listen(port, '127.0.0.1')
    process.on('SIGTERM', () => process.exit(0)) // --cpu-prof writes its profile on exit
  }
}

// ------------------------------------------------------------------ worker mode (a client process)
else if (process.env.MIDGE_PROBE_WORKER === '1') {
  const str = (s) => {
    const b = Buffer.from(s, 'utf8')
    return [b.length >> 8, b.length & 0xff, ...b]
  }
  const frame = (first, body) => {
    const len = []
    let n = body.length
    do {
      let d = n & 0x7f
      n >>= 7
      if (n > 0) d |= 0x80
      len.push(d)
    } while (n > 0)
    return Buffer.from([first, ...len, ...body])
  }
  const sockets = []
  process.on('message', (m) => {
    if (m.op === 'connect') run(m).then((r) => process.send({ op: 'done', ...r }))
    else if (m.op === 'close') {
      for (const s of sockets) s.destroy()
      process.send({ op: 'closed' })
    }
  })
  const run = ({ port, from, count, window, sub, keepalive, user }) =>
    new Promise((resolve) => {
      let next = from
      let pending = 0
      let ok = 0
      let failed = 0
      const latencies = []
      const end = from + count
      const t0 = process.hrtime.bigint()
      const pump = () => {
        while (pending < window && next < end) {
          const i = next++
          pending++
          const started = process.hrtime.bigint()
          const s = net.connect({ port, host: '127.0.0.1' })
          sockets.push(s)
          let stage = 0
          let acc = Buffer.alloc(0)
          const finish = (good) => {
            if (stage === 9) return
            stage = 9
            pending--
            if (good) {
              ok++
              latencies.push(Number(process.hrtime.bigint() - started) / 1000)
            } else failed++
            if (ok + failed === count) resolve({ ok, failed, ms: Number(process.hrtime.bigint() - t0) / 1e6, latencies })
            else pump()
          }
          s.on('connect', () => {
            // keepalive spread as conns_10k does (60-600 s), or fixed
            const ka = keepalive > 0 ? keepalive : 60 + (i % 541)
            s.write(
              user === undefined
                ? frame(0x10, [...str('MQTT'), 4, 0x02, ka >> 8, ka & 0xff, ...str(`probe-${i}`)])
                : frame(0x10, [...str('MQTT'), 4, 0xc2, ka >> 8, ka & 0xff, ...str(`probe-${i}`), ...str(user.name), ...str(user.password)])
            )
          })
          s.on('data', (chunk) => {
            acc = acc.length === 0 ? chunk : Buffer.concat([acc, chunk])
            if (stage === 0 && acc.length >= 4) {
              if (acc[0] !== 0x20 || acc[3] !== 0) return finish(false)
              acc = acc.subarray(4)
              if (!sub) return finish(true)
              stage = 1
              s.write(frame(0x82, [0, 1, ...str(`probe/${i}`), 1]))
            }
            if (stage === 1 && acc.length >= 5) finish(acc[0] === 0x90 && acc[4] === 1)
          })
          s.on('error', () => finish(false))
          s.on('close', () => finish(false))
        }
      }
      pump()
    })
}

// ------------------------------------------------------------------ controller
else await main()

async function main() {
  const args = process.argv.slice(2)
  const flag = (name) => args.includes(`--${name}`)
  const opt = (name, dflt) => {
    const i = args.indexOf(`--${name}`)
    return i >= 0 ? Number(args[i + 1]) : dflt
  }
  if (args[0] === '--diff') return diffSnapshots(args[1], args[2], Number(args[3]))
  const conns = opt('conns', 10000)
  const window = opt('window', 100)
  const workers = opt('workers', 2)
  const keepalive = opt('keepalive', 0)
  const runs = opt('runs', 1)
  const sub = flag('sub')
  const snapshot = flag('snapshot')
  const cpuProf = flag('cpu-prof')
  const password = flag('password')
  const confArg = args.indexOf('--conf')
  const confLines = confArg >= 0 ? args[confArg + 1].split(';').map((l) => l.trim()).filter(Boolean) : []
  const brokers = (process.env.MIDGE ?? join(ROOT, 'dist', 'main.js')).split(',').filter(Boolean)
  for (const midge of brokers) if (midge !== 'floor' && !existsSync(midge)) throw new Error(`${midge} missing: run \`npm run build\` or set MIDGE`)
  const out = mkdtempSync(join(tmpdir(), 'midge-probe-'))
  chmodSync(out, 0o777) // started as root, the broker drops to the `mosquitto` user (as Mosquitto does)
  const user = password ? { name: 'probe', password: 'probe-secret' } : undefined
  if (user !== undefined) {
    const file = join(out, 'passwd')
    execFileSync('mosquitto_passwd', ['-b', '-c', file, user.name, user.password])
    chmodSync(file, 0o644)
    confLines.push(`password_file ${file}`, 'allow_anonymous false')
  }
  const { cpuSeconds, rssKb, listening } = await import('./lib/proc.mjs')
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
  /** the broker's kernel CPU seconds (stime): the part of a connect spent in syscalls */
  const sysSeconds = (pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) / 100
    } catch {
      return -1
    }
  }

  console.log(
    `# connections probe: ${conns} connections${sub ? ' + SUBSCRIBE each' : ''}${user ? ' with a password' : ''}, window ${window}, ${workers} client processes, ` +
      `broker${brokers.length > 1 ? 's (alternating)' : ''} ${brokers.join(', ')}${confLines.length > 0 ? ` with '${confLines.join('; ')}'` : ''}; output in ${out}`
  )
  const results = brokers.map(() => [])
  for (let round = 0; round < runs * brokers.length; round++) {
    const b = round % brokers.length
    const midge = brokers[b]
    const run = brokers.length > 1 ? `${Math.floor(round / brokers.length)}-${b}` : `${round}`
    let port = 29000 + Math.floor(Math.random() * 1000) // below the ephemeral range (32768-60999)
    while (listening(port)) port = 29000 + Math.floor(Math.random() * 1000)
    const logFd = openSync(join(out, `broker-${run}.log`), 'a')
    const nodeArgs = ['--expose-gc', '--import', SELF, ...(process.env.PROBE_NODE_FLAGS ?? '').split(' ').filter(Boolean)]
    if (cpuProf) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${join(out, `prof-${run}`)}`)
    let where = ['-p', String(port)]
    if (confLines.length > 0 && midge !== 'floor' && !midge.endsWith('floor-broker.mjs')) {
      const conf = join(out, `broker-${run}.conf`)
      // as `-p` does: loopback, anonymous clients allowed (unless --password or --conf say otherwise)
      writeFileSync(conf, [`listener ${port} 127.0.0.1`, ...(user === undefined ? ['allow_anonymous true'] : []), ...confLines, ''].join('\n'))
      where = ['-c', conf]
    }
    const child = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"', process.execPath, ...nodeArgs, midge === 'floor' ? SELF : midge, ...where], {
      stdio: ['ignore', logFd, logFd, 'ipc'],
      env: { ...process.env, MIDGE_PROBE_CHILD: '1', ...(midge === 'floor' ? { MIDGE_PROBE_FLOOR: '1' } : {}) },
      cwd: ROOT
    })
    closeSync(logFd)
    let reqId = 0
    let exited = false
    child.once('exit', () => (exited = true))
    const ask = (msg) =>
      new Promise((resolve, reject) => {
        if (exited) return reject(new Error(`broker exited (see ${out}/broker-${run}.log)`))
        const id = ++reqId
        const on = (m) => {
          if (m.id === id) {
            child.off('message', on)
            resolve(m)
          }
        }
        child.on('message', on)
        child.send({ ...msg, id })
        setTimeout(() => reject(new Error(`no answer from the broker to ${msg.op} (see ${out}/broker-${run}.log)`)), 120_000).unref()
      })
    for (let i = 0; i < 300 && !listening(port); i++) await sleep(50)
    if (!listening(port)) throw new Error(`broker did not listen (see ${out}/broker-${run}.log)`)
    await sleep(500)
    const pid = child.pid
    const before = await ask({ op: 'mem' })
    const rss0 = rssKb(pid)
    if (snapshot) await ask({ op: 'snapshot', file: join(out, `before-${run}.heapsnapshot`) })
    const procs = []
    for (let w = 0; w < workers; w++) procs.push(fork(SELF, [], { env: { ...process.env, MIDGE_PROBE_WORKER: '1' }, stdio: 'inherit' }))

    // two halves: the second half's growth is the marginal cost of a connection, free of the
    // broker's one-time costs (V8's young generation growing, lazily built caches)
    const half = Math.floor(conns / 2)
    const phase = async (from, count) => {
      const per = Math.ceil(count / workers)
      const cpuA = cpuSeconds(pid)
      const sysA = sysSeconds(pid)
      const t0 = process.hrtime.bigint()
      const done = await Promise.all(
        procs.map(
          (p, w) =>
            new Promise((resolve) => {
              p.once('message', resolve)
              const n = Math.max(0, Math.min(per, count - w * per))
              p.send({ op: 'connect', port, from: from + w * per, count: n, window: Math.ceil(window / workers), sub, keepalive, user })
            })
        )
      )
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const cpuB = cpuSeconds(pid)
      const sysB = sysSeconds(pid)
      await sleep(1000)
      const rss = rssKb(pid)
      const cpuC = cpuSeconds(pid)
      const mem = await ask({ op: 'mem' })
      return {
        ok: done.reduce((a, d) => a + d.ok, 0),
        failed: done.reduce((a, d) => a + d.failed, 0),
        latencies: done.flatMap((d) => d.latencies),
        seconds,
        cpu: cpuB - cpuA,
        sys: sysB - sysA,
        idleCpu: cpuC - cpuB,
        rss,
        rssAfterGc: rssKb(pid),
        mem: mem.mem,
        handles: mem.handles
      }
    }
    const p1 = await phase(0, half)
    const p2 = await phase(half, conns - half)
    if (snapshot) await ask({ op: 'snapshot', file: join(out, `after-${run}.heapsnapshot`) })
    const ok = p1.ok + p2.ok
    const lat = [...p1.latencies, ...p2.latencies].sort((a, b) => a - b)
    const per = (bytes, n) => Math.round(bytes / Math.max(1, n))
    const r = {
      ok,
      failed: p1.failed + p2.failed,
      rate: Math.round(ok / (p1.seconds + p2.seconds)),
      cpuUsPerConnect: Math.round(((p1.cpu + p2.cpu) * 1e6) / Math.max(1, ok)),
      // of which in the kernel (accept, read, write, close syscalls and what they do on loopback)
      sysUsPerConnect: Math.round(((p1.sys + p2.sys) * 1e6) / Math.max(1, ok)),
      idleCpuPct: Math.round((p2.idleCpu * 100)),
      connackP50us: Math.round(lat[Math.floor(lat.length / 2)] ?? 0),
      connackP99us: Math.round(lat[Math.floor(lat.length * 0.99)] ?? 0),
      rssStartMiB: +(rss0 / 1024).toFixed(1),
      // as conns_10k: (VmRSS 1 s after the last CONNACK − VmRSS before) / clients
      rssBytesPerConn: per((p2.rss - rss0) * 1024, ok),
      afterGc: {
        rssBytesPerConn: per((p2.rssAfterGc - rss0) * 1024, ok),
        heapUsedPerConn: per(p2.mem.heapUsed - before.mem.heapUsed, ok),
        heapTotalPerConn: per(p2.mem.heapTotal - before.mem.heapTotal, ok),
        externalPerConn: per(p2.mem.external - before.mem.external, ok),
        activeResources: p2.handles - before.handles
      },
      // the second half alone: what one more connection costs
      marginal: {
        rssBytesPerConn: per((p2.rssAfterGc - p1.rssAfterGc) * 1024, p2.ok),
        heapUsedPerConn: per(p2.mem.heapUsed - p1.mem.heapUsed, p2.ok),
        heapTotalPerConn: per(p2.mem.heapTotal - p1.mem.heapTotal, p2.ok),
        cpuUsPerConnect: Math.round((p2.cpu * 1e6) / Math.max(1, p2.ok)),
        rate: Math.round(p2.ok / p2.seconds)
      }
    }
    results[b].push(r)
    console.log(brokers.length > 1 ? `${midge} ${JSON.stringify(r)}` : JSON.stringify(r))
    for (const p of procs) {
      await new Promise((resolve) => {
        p.once('message', resolve)
        p.send({ op: 'close' })
      })
      p.kill()
    }
    if (!exited) {
      child.kill('SIGTERM')
      await new Promise((r) => child.once('exit', r))
    }
    if (snapshot) diffSnapshots(join(out, `before-${run}.heapsnapshot`), join(out, `after-${run}.heapsnapshot`), ok)
  }
  if (runs > 1) {
    for (const [b, rs] of results.entries()) {
      if (rs.length === 0) continue
      const med = (f) => rs.map(f).sort((x, y) => x - y)[Math.floor(rs.length / 2)]
      console.log(
        `${brokers.length > 1 ? `${brokers[b]}: ` : ''}median of ${rs.length}: ${med((r) => r.rate)} connects/s, ${med((r) => r.cpuUsPerConnect)} µs CPU/connect ` +
          `(${med((r) => r.sysUsPerConnect)} µs in the kernel), ` +
          `${med((r) => r.rssBytesPerConn)} B RSS/conn (${med((r) => r.afterGc.rssBytesPerConn)} after GC), heap ${med((r) => r.afterGc.heapUsedPerConn)} B/conn; ` +
          `marginal: ${med((r) => r.marginal.rssBytesPerConn)} B RSS/conn, heap ${med((r) => r.marginal.heapUsedPerConn)} B/conn, ${med((r) => r.marginal.cpuUsPerConnect)} µs CPU/connect`
      )
    }
  }
}

/** Self size and count by (node type, constructor name): after − before, per connection. */
function diffSnapshots(beforeFile, afterFile, n) {
  const summarize = (file) => {
    const snap = JSON.parse(readFileSync(file, 'utf8'))
    const fields = snap.snapshot.meta.node_fields
    const types = snap.snapshot.meta.node_types[0]
    const width = fields.length
    const iType = fields.indexOf('type')
    const iName = fields.indexOf('name')
    const iSize = fields.indexOf('self_size')
    const nodes = snap.nodes
    const strings = snap.strings
    const by = new Map()
    for (let i = 0; i < nodes.length; i += width) {
      const type = types[nodes[i + iType]]
      const name = type === 'object' || type === 'closure' || type === 'native' || type === 'hidden' ? strings[nodes[i + iName]] : `(${type})`
      const key = `${type}:${name.slice(0, 60)}`
      const e = by.get(key) ?? { count: 0, size: 0 }
      e.count++
      e.size += nodes[i + iSize]
      by.set(key, e)
    }
    return by
  }
  const a = summarize(beforeFile)
  const b = summarize(afterFile)
  const rows = []
  for (const [k, e] of b) {
    const p = a.get(k) ?? { count: 0, size: 0 }
    const size = e.size - p.size
    if (Math.abs(size) / n >= 4) rows.push({ k, count: (e.count - p.count) / n, bytes: size / n })
  }
  rows.sort((x, y) => y.bytes - x.bytes)
  const total = rows.reduce((s, r) => s + r.bytes, 0)
  console.log(`heap snapshot difference per connection (self sizes, rows >= 4 B): ${Math.round(total)} B`)
  for (const r of rows.slice(0, 40)) console.log(`  ${r.bytes.toFixed(0).padStart(6)} B  ${r.count.toFixed(2).padStart(6)} x  ${r.k}`)
}
