#!/usr/bin/env node
// npm run bench: Midge beside Mosquitto and Aedes, one run, the same load generator for all.
//
// Every (scenario, repetition, broker) starts a fresh broker process on 127.0.0.1 (ports
// 32000-32999), runs one scenario against it with generator processes forked from
// bench/lib/worker.mjs, and stops it by PID. Broker order rotates each repetition. The table
// shows medians over repetitions; lost / dup / out-of-order are the worst run.
//
// Environment (all optional):
//   BENCH_QUICK=1            smoke run: 1 repetition, 1 s windows, 1,000 connections (~1.5 min)
//   BENCH_SCENARIOS="fanin_q0 latency_q1"   (default: fanin_q0 fanin_q1 fanin_q2 fanout_q0
//                            latency_q1 slow_sub conns_10k conns_10k_sub; also fanout_q1, slow_sub_q1,
//                            fanin_q1_durable, fanin_q1_paced, fanin_q2_paced)
//   BENCH_BROKERS="midge mosquitto aedes"   (also `floor`: bench/floor-broker.mjs, the Node floor;
//                            `floor20`: the same with a window of 20 per subscriber, as max_inflight_messages 20)
//   BENCH_REPS=3   BENCH_DUR=4 (s)   BENCH_WARMUP=1 (s)   (latency_q1: 5 s warm-up and a 20 s window of its
//                            own; BENCH_DUR or BENCH_QUICK set its window too; slow_sub*: 3 s warm-up)
//   BENCH_DRAIN=10 (s, max)  BENCH_HOLD=2 (s)  BENCH_CONNS=10000  BENCH_MOSQ_MAX_QUEUED=60000
//   BENCH_MQLOAD=path/to/mqload   the conns_* scenarios with mqload (built from ../shared/tools/mqload) as
//                            their generator: it spends less than half the bench's clients' CPU per connect
//   BENCH_PORT_FIRST=32000 BENCH_PORT_LAST=32999   MOSQUITTO=/usr/sbin/mosquitto
//   BENCH_AHEAD=N            QoS 0 "as fast as allowed": messages a publisher may be ahead of its
//                            subscribers (default 2,000 per publisher in fan-in, 1,000 in fan-out)
//   MIDGE=dist/main.js       the Midge entry point to run (e.g. a build of another commit)
//   MIDGE_NODE_FLAGS / FLOOR_NODE_FLAGS   node options for Midge / the floor broker only
//   `midgeB` in BENCH_BROKERS: a second Midge for A/B in one run, MIDGE_B=path/to/main.js (default
//                            the same build) and MIDGE_B_NODE_FLAGS
//   BENCH_SLOW_US=N          the subscribers list every message slower than N µs in their log
//   MIDGE_LOOP_STATS=S       (read by the daemon) event-loop delay and GC pauses on stderr every S s
//   BENCH_MIDGE_CONF="max_inflight_messages 0;..."   extra configuration lines for Midge
//   FLOOR_MAX_INFLIGHT=N     the `floor` broker's window per subscriber (default none)
//   BENCH_OUT=bench/results/<timestamp>   (raw.jsonl, table.md, broker and generator logs)
// See docs/benchmarks.md for what each scenario measures and how.
import { mkdirSync, writeFileSync, appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { brokerInfo, pickPort, ROOT, startBroker, stopBroker } from './lib/brokers.mjs'
import { machine, alive, cpuSeconds, loadavg } from './lib/proc.mjs'
import { liveWorkers, runConns, runConnsMqload, runPubSub, T0 } from './lib/runner.mjs'
import { options, scenarios } from './lib/scenarios.mjs'
import { render } from './lib/report.mjs'

const o = options()
// the brokers get the generators' time base too, so that a broker-side trace lines up with theirs
process.env.BENCH_T0 = String(T0)
const defs = scenarios(o)
const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-')
const out = o.out ?? join(ROOT, 'bench', 'results', stamp)
mkdirSync(out, { recursive: true })
const raw = join(out, 'raw.jsonl')
writeFileSync(raw, '')

const info = brokerInfo(o)
const brokers = []
const notes = []
for (const b of o.brokers) {
  if (!info[b]) {
    console.error(`unknown broker ${b} (midge, midgeB, mosquitto, aedes, floor, floorN)`)
    process.exit(2)
  }
  if (info[b].ok) brokers.push(b)
  else notes.push(`${b}: ${info[b].note}`)
}
for (const s of o.scenarios) {
  if (!defs[s]) {
    console.error(`unknown scenario ${s} (${Object.keys(defs).join(', ')})`)
    process.exit(2)
  }
}
if (brokers.length === 0) {
  console.error(`no broker to run: ${notes.join('; ')}`)
  process.exit(2)
}

const m = machine()
const header = {
  date: new Date().toISOString(),
  machine: m,
  loadStart: loadavg(),
  brokers: Object.fromEntries(brokers.map((b) => [b, info[b]])),
  skipped: notes,
  options: { reps: o.reps, dur: o.dur, warmup: o.warmup, drain: o.drain, hold: o.hold, conns: o.conns, scenarios: o.scenarios, mosqMaxQueued: o.mosqMaxQueued }
}
writeFileSync(join(out, 'header.json'), JSON.stringify(header, null, 2) + '\n')
console.log(`# midge bench ${header.date}: ${m.cores} x ${m.model}, ${m.memGiB} GiB, Linux ${m.kernel}, node ${m.node}, load average ${header.loadStart.join(' ')}`)
console.log(`# brokers: ${brokers.map((b) => `${b} ${info[b].version}`).join(', ')}${notes.length ? ` | skipped: ${notes.join('; ')}` : ''}`)
console.log(`# scenarios: ${o.scenarios.join(' ')} | reps=${o.reps} window=${o.dur}s warmup=${o.warmup}s hold=${o.hold}s conns=${o.conns} | out: ${out}`)

// end everything we started on Ctrl-C / TERM, by PID
let current = null
const cleanup = (sig) => {
  if (current !== null && !current.dead) {
    try {
      process.kill(current.pid, 'SIGKILL')
    } catch {}
  }
  for (const g of liveWorkers) g.kill()
  console.error(`\nbench: ${sig}, stopped`)
  process.exit(130)
}
process.on('SIGINT', () => cleanup('SIGINT'))
process.on('SIGTERM', () => cleanup('SIGTERM'))

const RUN_LIMIT_MS = 180_000 // a run that takes longer is abandoned (its broker is killed)
const withLimit = (p, ms) =>
  Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`run exceeded ${ms / 1000} s`)), ms).unref())])

const summary = (r) => {
  if (!r.ok && r.error) return `ERROR ${r.error}`
  if (r.scenario === 'conns') {
    return `connected=${r.connected}/${r.attempted} rate=${r.connect_rate}/s bytes/conn=${r.broker?.bytes_per_conn} p99=${r.connect_lat_us?.p99}us gen=${r.gen_cpu_connect_pct}%`
  }
  const c = r.check ?? {}
  const extra = r.fast_sub_rate_min !== undefined ? ` fast-min=${r.fast_sub_rate_min}/s slow=${r.slow_sub_rate}/s rss-max=${Math.round((r.broker?.rss_kb_max ?? 0) / 1024)}MiB` : ''
  return `recv=${r.recv_rate}/s pub=${r.pub_rate}/s p50=${r.lat_us?.p50}us p99=${r.lat_us?.p99}us lost=${c.lost} dup=${c.dup} broker=${r.broker?.cpu_pct}% gen=${r.gen_cpu_pct}%${extra}${c.drained === false ? ' NOT DRAINED' : ''}`
}

const rows = []
const t0 = Date.now()
for (const sname of o.scenarios) {
  const sc = defs[sname]
  for (let rep = 1; rep <= o.reps; rep++) {
    for (let k = 0; k < brokers.length; k++) {
      const bname = brokers[(k + rep - 1) % brokers.length]
      // a scenario for some brokers only (fanin_q1_durable: Aedes has no file store here)
      if (sc.brokers !== undefined && !sc.brokers.includes(bname)) continue
      const tag = `${sname}-${rep}-${bname}`
      const port = pickPort(o)
      let rec
      let broker = null
      try {
        broker = await startBroker(bname, port, o, out, tag, sc)
        current = broker
        await new Promise((r) => setTimeout(r, 300))
        const c0 = cpuSeconds(broker.pid)
        const runner = sc.kind === 'conns' ? (o.mqload !== undefined ? runConnsMqload : runConns) : runPubSub
        rec = await withLimit(runner(sc, broker, o, join(out, `${tag}.gen.log`)), RUN_LIMIT_MS)
        const c1 = cpuSeconds(broker.pid)
        rec.broker_cpu_total_s = c0 >= 0 && c1 >= 0 ? Math.round((c1 - c0) * 100) / 100 : null
        rec.broker_alive_after = !broker.dead && alive(broker.pid)
      } catch (e) {
        rec = { ok: false, error: e.message, scenario: sc.kind === 'conns' ? 'conns' : 'pubsub', broker_alive_after: broker !== null && !broker.dead }
      } finally {
        if (broker !== null) await stopBroker(broker)
        for (const g of liveWorkers) g.kill()
        current = null
      }
      Object.assign(rec, { scenario_id: sname, broker_name: bname, rep, port })
      rows.push(rec)
      appendFileSync(raw, JSON.stringify(rec) + '\n')
      const dead = rec.broker_alive_after === false ? ' BROKER DIED' : ''
      console.log(`[${Math.round((Date.now() - t0) / 1000)}s] ${sname} rep${rep} ${bname}: ${summary(rec)}${dead}`)
    }
  }
}

header.loadEnd = loadavg()
header.seconds = Math.round((Date.now() - t0) / 1000)
writeFileSync(join(out, 'header.json'), JSON.stringify(header, null, 2) + '\n')
const table = render(rows, header, defs)
writeFileSync(join(out, 'table.md'), table)
console.log()
console.log(table)
console.log(`raw results: ${raw} (total ${Math.round((Date.now() - t0) / 1000)} s)`)
