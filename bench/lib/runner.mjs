// The controller side of one scenario run against one broker: forks the generator
// processes (bench/lib/worker.mjs), drives their phases, samples the broker's and the
// generator's CPU and RSS from /proc at the window's edges, and returns one JSON record
// with the same fields as mqload's output where they mean the same thing.
import { execFile, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFileSync, openSync, closeSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Hist } from './hist.mjs'
import { alive, cpuSeconds, machineCpuPct, machineTicks, rssKb } from './proc.mjs'

const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'worker.mjs')
export const T0 = process.hrtime.bigint()
export const nowNs = () => Number(process.hrtime.bigint() - T0)
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)))
const sleepUntil = (tNs) => sleep((tNs - nowNs()) / 1e6)

/** Live generator processes, so that run.mjs can end them on SIGINT. */
export const liveWorkers = new Set()

/** One generator process and its IPC replies, awaited by type. */
class Gen {
  constructor(role, logFile) {
    const fd = openSync(logFile, 'a')
    this.role = role
    this.child = fork(WORKER, [], {
      // BENCH_GEN_NODE_FLAGS: node options for the generator processes only (e.g. --cpu-prof)
      execArgv: [...process.execArgv, ...(process.env.BENCH_GEN_NODE_FLAGS ?? '').split(' ').filter(Boolean)],
      env: { ...process.env, BENCH_T0: String(T0) },
      stdio: ['ignore', fd, fd, 'ipc'],
      serialization: 'json'
    })
    closeSync(fd)
    this.pid = this.child.pid
    this.inbox = []
    this.waiters = []
    this.dead = false
    this.exited = new Promise((r) => this.child.once('exit', r))
    liveWorkers.add(this)
    this.child.on('message', (m) => {
      const k = this.waiters.findIndex((w) => w.type === m.t)
      if (k >= 0) this.waiters.splice(k, 1)[0].resolve(m)
      else this.inbox.push(m)
    })
    this.child.once('exit', () => {
      this.dead = true
      liveWorkers.delete(this)
      for (const w of this.waiters.splice(0)) w.reject(new Error(`generator ${role} exited`))
    })
  }

  next(type, timeoutMs) {
    const k = this.inbox.findIndex((m) => m.t === type)
    if (k >= 0) return Promise.resolve(this.inbox.splice(k, 1)[0])
    if (this.dead) return Promise.reject(new Error(`generator ${this.role} exited`))
    return new Promise((resolve, reject) => {
      const w = { type }
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        reject(new Error(`generator ${this.role}: no '${type}' within ${timeoutMs} ms`))
      }, timeoutMs)
      w.resolve = (m) => (clearTimeout(timer), resolve(m))
      w.reject = (e) => (clearTimeout(timer), reject(e))
      this.waiters.push(w)
    })
  }

  send(m) {
    if (!this.dead) this.child.send(m)
  }

  request(m, type, timeoutMs) {
    const p = this.next(type, timeoutMs)
    this.send(m)
    return p
  }

  /** polite close, then KILL after 3 s */
  async close() {
    if (this.dead) return
    this.send({ t: 'close' })
    const t = setTimeout(() => this.kill(), 3000)
    await this.exited
    clearTimeout(t)
  }

  kill() {
    try {
      process.kill(this.pid, 'SIGKILL')
    } catch {}
  }
}

const spawnGens = async (roles, logFile) => {
  const gens = roles.map((r) => new Gen(r, logFile))
  await Promise.all(gens.map((g) => g.next('hello', 10000)))
  return gens
}

/** split ids over n workers, round robin */
const partition = (ids, n) => Array.from({ length: n }, (_, w) => ids.filter((_, k) => k % n === w))
const range = (from, n) => Array.from({ length: n }, (_, k) => from + k)
const sum = (xs) => xs.reduce((a, b) => a + b, 0)
const round = (x, d = 0) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : null)
const median = (xs) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (v.length === 0) return null
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}

const genCpu = (gens) => sum(gens.map((g) => Math.max(0, cpuSeconds(g.pid))))
const selfCpu = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

// ------------------------------------------------------------------ messaging

export const runPubSub = async (sc, broker, o, logFile) => {
  const run = randomBytes(3).toString('hex')
  const prefix = `bench/${run}/`
  const nsubs = sc.subs
  const npubs = sc.pubs
  const nslow = sc.slow ?? 0
  const subIds = range(0, nsubs)
  const pubIds = range(nsubs, npubs)
  const common = {
    port: broker.port,
    qos: sc.qos,
    size: sc.size,
    npubs,
    window: sc.window ?? 10,
    ratePerPub: (sc.rate ?? 0) / npubs,
    kaMin: 60,
    kaMax: 60,
    cidPrefix: `b${run}-`,
    prefix,
    connectTimeoutS: 5,
    maxFail: 1,
    concurrency: 100,
    // QoS 0 as fast as allowed: publishers stay at most `ahead` messages beyond what every subscriber has seen
    feedback: sc.qos === 0 && !sc.rate,
    ahead: o.aheadSet ? o.ahead : (sc.ahead ?? o.ahead),
    creditPath: join(tmpdir(), `midge-bench-${process.pid}-${run}.sock`),
    subWorkers: sc.subWorkers ?? 1
  }
  if ((sc.pubWorkers ?? 1) !== 1 && common.feedback) throw new Error('QoS 0 credit needs one publisher process')
  const subParts = partition(subIds, sc.subWorkers ?? 1)
  const pubParts = partition(pubIds, sc.pubWorkers ?? 1)
  const gens = await spawnGens([...subParts.map(() => 'sub'), ...pubParts.map(() => 'pub')], logFile)
  const subGens = gens.slice(0, subParts.length)
  const pubGens = gens.slice(subParts.length)
  const rec = { scenario: 'pubsub', qos: sc.qos, pubs: npubs, subs: nsubs, size: sc.size, window: common.window, rate_target: sc.rate ?? 0 }
  let error = null
  let rssSampler
  try {
    // setup: subscribers first (every SUBACK in), then publishers
    const setup0 = nowNs()
    const slow = subIds.slice(nsubs - nslow)
    const subReady = await Promise.all(
      subGens.map((g, w) =>
        g.request(
          { t: 'init', cfg: { ...common, role: 'sub', subWorker: w, ids: subParts[w], filter: `${prefix}t/${sc.topics === 'single' ? '0' : '+'}`, slow, slowBps: sc.slowBps ?? 0, clean: !sc.persistentSub } },
          'ready',
          30000
        )
      )
    )
    if (sum(subReady.map((r) => r.failed)) > 0) throw new Error(`subscriber setup failed: ${JSON.stringify(subReady.map((r) => r.fail))}`)
    const pubReady = await Promise.all(
      pubGens.map((g, w) =>
        g.request(
          {
            t: 'init',
            cfg: {
              ...common,
              role: 'pub',
              ids: pubParts[w],
              pubIdx: pubParts[w].map((id) => id - nsubs),
              topics: pubParts[w].map((id) => `${prefix}t/${sc.topics === 'single' ? 0 : id - nsubs}`)
            }
          },
          'ready',
          30000
        )
      )
    )
    if (sum(pubReady.map((r) => r.failed)) > 0) throw new Error(`publisher setup failed: ${JSON.stringify(pubReady.map((r) => r.fail))}`)
    rec.setup_s = round((nowNs() - setup0) / 1e9, 3)

    // run: warm-up, then the measured window
    const t0 = nowNs()
    const tws = t0 + (sc.warmup ?? o.warmup) * 1e9
    const twe = tws + (o.durSet ? o.dur : sc.dur ?? o.dur) * 1e9
    for (const g of gens) g.send({ t: 'run', tws, twe })
    let rssMax = rssKb(broker.pid)
    rssSampler = setInterval(() => (rssMax = Math.max(rssMax, rssKb(broker.pid))), 200)
    const sample = () => ({ t: nowNs(), cpu: cpuSeconds(broker.pid), rss: rssKb(broker.pid), sys: machineTicks(), gen: genCpu(gens) + selfCpu() })
    await sleepUntil(tws)
    const s0 = sample()
    await sleepUntil(twe)
    const s1 = sample()
    const win = (s1.t - s0.t) / 1e9

    // drain: wait for in-flight acks and deliveries, bounded (as mqload)
    const quietNs = (sc.quiet ?? (sc.qos > 0 ? 2 : 0.5)) * 1e9
    const deadline = nowNs() + (sc.drain ?? o.drain) * 1e9
    // every subscriber counts here, the slow one too: it reads at full speed in the drain, and
    // what it still gets is not "lost" (what the broker dropped for it never comes: then quiet ends it)
    const counted = nsubs
    let drained = false
    await sleep(50)
    for (;;) {
      const ss = await Promise.all(gens.map((g) => g.request({ t: 'poll' }, 'stats', 10000)))
      const t = nowNs()
      const pubSt = ss.slice(subGens.length)
      const inflight = sum(pubSt.map((s) => s.inflight))
      const unsent = sum(pubSt.map((s) => s.unsent))
      const expect = sum(pubSt.map((s) => (sc.qos > 0 ? s.acked : s.flushed))) * counted
      const uniq = sum(ss.slice(0, subGens.length).map((s) => s.uniq))
      const last = Math.max(...ss.map((s) => s.last))
      if (sum(ss.map((s) => s.disconnects)) > 0) {
        error = 'connection lost during run'
        break
      }
      const quiet = t - last > quietNs
      if (inflight === 0 && unsent === 0 && uniq >= expect) {
        drained = true
        break
      }
      if (quiet && unsent === 0 && (sc.qos === 0 || inflight === 0)) {
        drained = sc.qos === 0
        break
      }
      if (quiet && sc.qos > 0 && inflight > 0) break
      if (t >= deadline) break
      await sleep(100)
    }
    clearInterval(rssSampler)
    rssSampler = undefined
    const drainS = (nowNs() - s1.t) / 1e9
    rssMax = Math.max(rssMax, rssKb(broker.pid))

    // results: publishers first (what was owed), then the subscribers' bitmaps
    const pubRes = await Promise.all(pubGens.map((g) => g.request({ t: 'final' }, 'result', 10000)))
    const pubsInfo = pubRes.flatMap((r) => r.pubs)
    const subRes = await Promise.all(subGens.map((g) => g.request({ t: 'final', pubs: pubsInfo }, 'result', 30000)))

    const delta = (res, f) => sum(res.map((r) => (r.snaps.end && r.snaps.start ? (f(r.snaps.end) - f(r.snaps.start)) / ((r.snaps.end.t - r.snaps.start.t) / 1e9) : 0)))
    const recvWin = sum(subRes.map((r) => (r.snaps.end && r.snaps.start ? r.snaps.end.recv - r.snaps.start.recv : 0)))
    rec.duration_s = round(win, 3)
    rec.pub_rate = round(delta(pubRes, (s) => (sc.qos > 0 ? s.acked : s.flushed)))
    rec.pub_sent_rate = round(delta(pubRes, (s) => s.sent))
    rec.recv_rate = round(delta(subRes, (s) => s.recv))
    // per subscriber rates (slow_sub: fast ones vs the slow one)
    const perSub = subRes.flatMap((r) =>
      r.subs.map((s, k) => ({
        slow: s.slow,
        rate: r.snaps.end && r.snaps.start ? (r.snaps.end.perSub[k] - r.snaps.start.perSub[k]) / ((r.snaps.end.t - r.snaps.start.t) / 1e9) : 0
      }))
    )
    if (nslow > 0) {
      const fast = perSub.filter((s) => !s.slow).map((s) => s.rate)
      rec.fast_sub_rate_min = round(Math.min(...fast))
      rec.fast_sub_rate_median = round(median(fast))
      rec.slow_sub_rate = round(median(perSub.filter((s) => s.slow).map((s) => s.rate)))
    }
    const hLat = new Hist()
    for (const r of subRes) hLat.merge(r.hLat)
    const hAck = new Hist()
    for (const r of pubRes) hAck.merge(r.hAck)
    rec.lat_us = hLat.summary()
    rec.ack_lat_us = hAck.summary()
    const fastSubs = subRes.flatMap((r) => r.subs).filter((s) => !s.slow)
    const slowSubs = subRes.flatMap((r) => r.subs).filter((s) => s.slow)
    rec.check = {
      published_total: sum(pubsInfo.map((p) => p.sent)),
      expected: sum(fastSubs.map((s) => s.expected)),
      unique: sum(fastSubs.map((s) => s.unique)),
      lost: sum(fastSubs.map((s) => s.lost)),
      dup: sum(fastSubs.map((s) => s.dup)),
      ooo: sum(fastSubs.map((s) => s.ooo)),
      inflight_end: sum(pubsInfo.map((p) => p.inflightSeqs.length)),
      foreign: sum(subRes.map((r) => r.foreign)),
      qos2_dup_pid: sum(subRes.map((r) => r.q2dup)),
      bad_ack: sum(pubRes.map((r) => r.badAck)),
      gaps: fastSubs.flatMap((s) => s.gaps.map((g) => [s.id, ...g])).slice(0, 8),
      drained,
      drain_s: round(drainS, 3)
    }
    if (slowSubs.length > 0) {
      rec.check.slow = {
        expected: sum(slowSubs.map((s) => s.expected)),
        unique: sum(slowSubs.map((s) => s.unique)),
        lost: sum(slowSubs.map((s) => s.lost)),
        dup: sum(slowSubs.map((s) => s.dup))
      }
    }
    rec.gen_cpu_s = round(s1.gen - s0.gen, 3)
    rec.gen_cpu_pct = round((100 * (s1.gen - s0.gen)) / win, 1)
    rec.gen_processes = gens.length
    rec.machine_cpu_pct = machineCpuPct(s0.sys, s1.sys, win)
    const cpuS = s1.cpu - s0.cpu
    rec.broker = {
      pid: broker.pid,
      cpu_s: round(cpuS, 2),
      cpu_pct: round((100 * cpuS) / win, 1),
      rss_kb_start: s0.rss,
      rss_kb_end: s1.rss,
      rss_kb_max: rssMax,
      cpu_us_per_msg: recvWin > 0 ? round((cpuS * 1e6) / recvWin, 2) : null
    }
  } catch (e) {
    error = error ?? e.message
  } finally {
    if (rssSampler) clearInterval(rssSampler)
    await Promise.all(gens.map((g) => g.close()))
    rmSync(common.creditPath, { force: true })
  }
  rec.ok = error === null
  rec.error = error
  return rec
}

// ------------------------------------------------------------------ connections

export const runConns = async (sc, broker, o, logFile) => {
  const run = randomBytes(3).toString('hex')
  const nw = sc.workers ?? 2
  const parts = partition(range(0, sc.conns), nw)
  const gens = await spawnGens(parts.map(() => 'idle'), logFile)
  const rec = { scenario: 'conns', conns_target: sc.conns, subscribe: sc.subscribe, qos: sc.qos ?? 0, keepalive_s: '60-600', workers: nw, concurrency: sc.concurrency }
  let error = null
  /** one round: every generator connects its part of the clients; resolves once all are settled */
  const connectRound = async (tag) => {
    const cpu0 = cpuSeconds(broker.pid)
    const gen0 = genCpu(gens)
    const t0 = nowNs()
    const ready = await Promise.all(
      gens.map((g, w) =>
        g.request(
          {
            t: 'init',
            cfg: {
              role: 'idle',
              port: broker.port,
              qos: sc.qos ?? 0,
              subscribe: sc.subscribe,
              ids: parts[w],
              kaMin: 60,
              kaMax: 600,
              cidPrefix: `${tag}${run}-`,
              prefix: `bench/${run}/${tag}/`,
              connectTimeoutS: 5,
              maxFail: 500,
              concurrency: Math.max(1, Math.floor(sc.concurrency / nw)),
              npubs: 0
            }
          },
          'ready',
          120000
        )
      )
    )
    const gen1 = genCpu(gens)
    const t1 = nowNs()
    const cpu1 = cpuSeconds(broker.pid)
    const ok = sum(ready.map((r) => r.ready))
    const tFirst = Math.min(...ready.filter((r) => r.tFirst > 0).map((r) => r.tFirst))
    const tLast = Math.max(...ready.map((r) => r.tLast))
    const connS = tLast > tFirst ? (tLast - tFirst) / 1e9 : 0
    const h = new Hist()
    for (const r of ready) h.merge(r.hConn)
    const fail = {}
    for (const r of ready) for (const [k, v] of Object.entries(r.fail)) fail[k] = (fail[k] ?? 0) + v
    return {
      t0,
      t1,
      ok,
      ready,
      fail,
      figures: {
        attempted: sum(ready.map((r) => r.attempted)),
        connected: ok,
        failed: sum(ready.map((r) => r.failed)),
        connect_s: round(connS, 3),
        connect_rate: connS > 0 ? round(ok / connS) : null,
        connect_lat_us: h.summary(),
        gen_cpu_connect_s: round(gen1 - gen0, 2),
        gen_cpu_connect_pct: connS > 0 ? round((100 * (gen1 - gen0)) / ((t1 - t0) / 1e9), 1) : null,
        broker_cpu_connect_s: round(cpu1 - cpu0, 2)
      }
    }
  }
  try {
    const cpu0 = cpuSeconds(broker.pid)
    const rss0 = rssKb(broker.pid)
    const sys0 = machineTicks()
    const first = await connectRound('b')
    await sleep(o.settle * 1000)
    const cpu1 = cpuSeconds(broker.pid)
    const rss1 = rssKb(broker.pid)
    const sys1 = machineTicks()
    const th0 = nowNs()
    await sleep(o.hold * 1000)
    const aliveRes = await Promise.all(gens.map((g) => g.request({ t: 'alive' }, 'alive', 10000)))
    const th1 = nowNs()
    const cpu2 = cpuSeconds(broker.pid)
    const rss2 = rssKb(broker.pid)
    const sys2 = machineTicks()
    const ok = first.ok
    const holdS = (th1 - th0) / 1e9
    const { broker_cpu_connect_s: _cpu, ...figures } = first.figures
    Object.assign(rec, {
      ...figures,
      hold_s: round(holdS, 2),
      alive_after_hold: sum(aliveRes.map((r) => r.alive)),
      disconnects_during_hold: sum(aliveRes.map((r) => r.disconnects)),
      broker: {
        pid: broker.pid,
        rss_kb_before: rss0,
        rss_kb_connected: rss1,
        rss_kb_after_hold: rss2,
        bytes_per_conn: ok > 0 ? round(((rss1 - rss0) * 1024) / ok) : null,
        cpu_connect_s: round(cpu1 - cpu0, 2),
        cpu_hold_s: round(cpu2 - cpu1, 2),
        cpu_hold_pct: round((100 * (cpu2 - cpu1)) / holdS, 2),
        alive: alive(broker.pid)
      },
      connect_phase_: machineCpuPct(sys0, sys1, (first.t1 - first.t0) / 1e9 + o.settle),
      hold_phase_: machineCpuPct(sys1, sys2, holdS),
      fail: first.fail
    })
    // the second round (o.second): every client disconnects, then as many connect again to the same
    // broker from the same generator processes, both past their first (JIT-compiling) round; its
    // memory is not measured (the first round's freed memory is reused)
    if (o.second) {
      await Promise.all(gens.map((g) => g.request({ t: 'reset' }, 'reset', 15000)))
      await sleep(o.settle * 1000)
      const second = await connectRound('w')
      rec.second = second.figures
    }
  } catch (e) {
    error = e.message
  } finally {
    await Promise.all(gens.map((g) => g.close()))
  }
  rec.ok = error === null
  rec.error = error
  return rec
}

/**
 * The connection scenarios with mqload (`BENCH_MQLOAD=<path to the built mqload>`) as the
 * generator instead of the bench's own clients: the C generator spends ~40 µs per connect where the
 * bench's Node clients spend ~90, so on two cores it leaves the broker the CPU the Node clients took
 * (the issue's "the load generator must not be the bottleneck"). The same figures as `runConns`,
 * from mqload's JSON: one `mqload conns` run is the first round (connect, settle, hold, then its
 * clients disconnect), a second run the second round. mqload reads the broker's CPU and RSS from
 * /proc with `--pid` as the bench does.
 */
export const runConnsMqload = async (sc, broker, o, logFile) => {
  const rec = { scenario: 'conns', generator: 'mqload', conns_target: sc.conns, subscribe: sc.subscribe, qos: sc.qos ?? 0, keepalive_s: '60-600', workers: 1, concurrency: sc.concurrency }
  const round = (label) =>
    new Promise((resolve, reject) => {
      const args = [
        'conns', '--host', '127.0.0.1', '-p', String(broker.port), '--bind', '127.0.0.2,127.0.0.3,127.0.0.4',
        '--conns', String(sc.conns), '--hold', String(o.hold), '--settle', String(o.settle), '--concurrency', String(sc.concurrency),
        '--pid', String(broker.pid), '--label', label, ...(sc.subscribe ? ['--subscribe', '--qos', String(sc.qos ?? 0)] : [])
      ]
      execFile(o.mqload, args, { timeout: 180_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
        appendFileSync(logFile, `$ ${o.mqload} ${args.join(' ')}\n${stderr}${stdout}\n`)
        const line = stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop()
        if (line === undefined) return reject(new Error(`mqload ${label}: no result${error ? ` (${error.message})` : ''}`))
        try {
          resolve(JSON.parse(line))
        } catch (e) {
          reject(new Error(`mqload ${label}: ${e.message}`))
        }
      })
    })
  const figures = (m) => ({
    attempted: m.attempted,
    connected: m.connected,
    failed: m.failed,
    connect_s: m.connect_s,
    connect_rate: m.connect_rate,
    connect_lat_us: m.connect_lat_us,
    gen_cpu_connect_s: m.gen_cpu_connect_s,
    gen_cpu_connect_pct: m.gen_cpu_connect_pct
  })
  let error = null
  try {
    const first = await round('first')
    Object.assign(rec, {
      ...figures(first),
      hold_s: first.hold_s,
      alive_after_hold: first.alive_after_hold,
      disconnects_during_hold: first.disconnects_during_hold,
      broker: {
        pid: broker.pid,
        rss_kb_before: first.broker?.rss_kb_before,
        rss_kb_connected: first.broker?.rss_kb_connected,
        rss_kb_after_hold: first.broker?.rss_kb_after_hold,
        bytes_per_conn: first.broker?.bytes_per_conn,
        cpu_connect_s: first.broker?.cpu_connect_s,
        cpu_hold_s: first.broker?.cpu_hold_s,
        cpu_hold_pct: first.broker?.cpu_hold_pct,
        alive: alive(broker.pid)
      },
      connect_phase_: first.connect_phase_,
      hold_phase_: first.hold_phase_,
      fail: first.fail
    })
    if (!first.ok) error = first.error ?? 'mqload: not every client connected'
    if (o.second && error === null) {
      await sleep(o.settle * 1000)
      const second = await round('second')
      rec.second = { ...figures(second), broker_cpu_connect_s: second.broker?.cpu_connect_s }
    }
  } catch (e) {
    error = e.message
  }
  rec.ok = error === null
  rec.error = error
  return rec
}
