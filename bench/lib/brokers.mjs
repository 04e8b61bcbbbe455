// Starting and stopping the brokers under test: each a fresh process per scenario run, on
// 127.0.0.1, with `ulimit -n` raised to the hard limit, its own PID (the shell execs it, so
// /proc/<pid> is the broker's), stopped by PID: TERM, then KILL after 5 s.
import { spawn, execFileSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, openSync, closeSync, writeFileSync, readFileSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { alive, listening } from './proc.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
export const ROOT = join(HERE, '..', '..')

/**
 * Mosquitto's settings, as mqload's compare.sh but for logging: Mosquitto keeps its default
 * log types (error, warning, notice, information: three lines per client), as Midge does
 * when started with `-p PORT` (see docs/benchmarks.md).
 */
export const mosquittoConf = (port, maxQueued) =>
  [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    'log_dest stderr',
    // raised from the default 1000 for fan-in / fan-out backlogs, kept below 65,535: mosquitto
    // 2.0.11 assigns the packet id when it queues, and reuses ids of unfinished QoS 2 flows beyond
    `max_queued_messages ${maxQueued}`,
    ''
  ].join('\n')

/** What can run here, and the versions for the report. */
export const brokerInfo = (opts) => {
  const info = {}
  const midgeMain = opts.midge
  info.midge = existsSync(midgeMain)
    ? { ok: true, version: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version, cmd: `node ${midgeMain === join(ROOT, 'dist', 'main.js') ? 'dist/main.js' : midgeMain} -p PORT` }
    : { ok: false, note: `${midgeMain} missing: run \`npm run build\`` }
  if (existsSync(opts.mosquitto)) {
    let out = ''
    try {
      out = execFileSync(opts.mosquitto, ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    } catch (e) {
      out = `${e.stdout}${e.stderr}` // `mosquitto -h` exits with status 3
    }
    const version = /mosquitto version (\S+)/.exec(out)?.[1] ?? 'unknown'
    info.mosquitto = { ok: true, version, cmd: `${opts.mosquitto} -c <generated conf>` }
  } else {
    info.mosquitto = { ok: false, note: `${opts.mosquitto} not found: skipped (apt-get install mosquitto, or MOSQUITTO=path)` }
  }
  try {
    const v = JSON.parse(readFileSync(join(ROOT, 'node_modules', 'aedes', 'package.json'), 'utf8')).version
    info.aedes = { ok: true, version: v, cmd: 'node bench/aedes-server.mjs -p PORT' }
  } catch {
    info.aedes = { ok: false, note: 'node_modules/aedes missing: run `npm ci`' }
  }
  // `midgeB`: a second Midge in the same run, for A/B (MIDGE_B=path/to/main.js, default the same build;
  // MIDGE_B_NODE_FLAGS its node options), e.g. another commit's build, or V8's default young generation
  const midgeB = process.env.MIDGE_B ?? midgeMain
  info.midgeB = existsSync(midgeB)
    ? { ok: true, version: `${info.midge.version ?? ''} (${midgeB}${process.env.MIDGE_B_NODE_FLAGS ? ` ${process.env.MIDGE_B_NODE_FLAGS}` : ''})`, cmd: `node ${midgeB} -p PORT` }
    : { ok: false, note: `${midgeB} missing` }
  // the Node floor (bench/floor-broker.mjs): opt-in only, e.g. BENCH_BROKERS="midge floor aedes"
  info.floor = { ok: true, version: `node ${process.version}`, cmd: 'node bench/floor-broker.mjs -p PORT' }
  // `floorN`: the same with a window of N unfinished QoS 1 / 2 flows per subscriber (floor20: as max_inflight_messages 20)
  for (const b of opts.brokers ?? []) {
    const m = /^floor(\d+)$/.exec(b)
    if (m) info[b] = { ok: true, version: `node ${process.version}`, cmd: `node bench/floor-broker.mjs -p PORT --max-inflight ${m[1]}` }
  }
  return info
}

let nextPort = 0
/** The next port of the range that nothing listens on. */
export const pickPort = (opts) => {
  if (nextPort < opts.portFirst || nextPort > opts.portLast) nextPort = opts.portFirst
  for (let tries = 0; tries <= opts.portLast - opts.portFirst; tries++) {
    const p = nextPort
    nextPort = nextPort >= opts.portLast ? opts.portFirst : nextPort + 1
    if (!listening(p)) return p
  }
  throw new Error(`no free port in ${opts.portFirst}-${opts.portLast}`)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * A scenario's own configuration lines for `name` (`sc.conf[name]`), with a fresh
 * `persistence_location` under the run's directory when they turn persistence on
 * (world-writable: Midge and Mosquitto drop root privileges to the mosquitto user).
 */
const extraConf = (sc, name, outDir, tag) => {
  const lines = [...(sc?.conf?.[name] ?? [])]
  if (lines.some((l) => /^persistence\s+true/.test(l))) {
    const dir = join(outDir, `${tag}.store`)
    mkdirSync(dir, { recursive: true })
    chmodSync(dir, 0o777)
    lines.push(`persistence_location ${dir}/`)
  }
  return lines
}

/** Start a broker; resolves once it listens (bounded: 15 s). `sc`: the scenario (its `conf` lines). */
export const startBroker = async (name, port, opts, outDir, tag, sc) => {
  let cmd
  let args
  const extra = extraConf(sc, name, outDir, tag)
  // BENCH_MIDGE_CONF="max_inflight_messages 0;max_queued_messages 0": extra lines for Midge's configuration
  if ((name === 'midge' || name === 'midgeB') && process.env.BENCH_MIDGE_CONF) extra.push(...process.env.BENCH_MIDGE_CONF.split(';').map((l) => l.trim()).filter(Boolean))
  switch (name) {
    case 'midge':
    case 'midgeB': {
      cmd = process.execPath
      // MIDGE_NODE_FLAGS: node options for the broker only (e.g. --cpu-prof --cpu-prof-dir=DIR)
      const b = name === 'midgeB'
      const flags = ((b ? process.env.MIDGE_B_NODE_FLAGS : process.env.MIDGE_NODE_FLAGS) ?? '').split(' ').filter(Boolean)
      const main = b ? (process.env.MIDGE_B ?? opts.midge) : opts.midge
      if (extra.length === 0) {
        args = [...flags, main, '-p', String(port)]
      } else {
        // the same listener and settings as `-p PORT`, plus the scenario's lines
        const conf = join(outDir, `midge-${port}.conf`)
        writeFileSync(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'log_dest stderr', ...extra, ''].join('\n'))
        args = [...flags, main, '-c', conf]
      }
      break
    }
    case 'mosquitto': {
      const conf = join(outDir, `mosquitto-${port}.conf`)
      const base = mosquittoConf(port, opts.mosqMaxQueued)
      writeFileSync(conf, extra.length === 0 ? base : base.replace('persistence false\n', '') + extra.map((l) => `${l}\n`).join(''))
      cmd = opts.mosquitto
      args = ['-c', conf]
      break
    }
    case 'aedes':
      cmd = process.execPath
      args = [join(ROOT, 'bench', 'aedes-server.mjs'), '-p', String(port)]
      break
    case 'floor':
    case (/^floor\d+$/.test(name) ? name : undefined): {
      cmd = process.execPath
      // FLOOR_NODE_FLAGS: node options for the floor broker only (e.g. --cpu-prof, --trace-gc);
      // FLOOR_MAX_INFLIGHT=N: its per-subscriber window (as max_inflight_messages; default none)
      const flags = (process.env.FLOOR_NODE_FLAGS ?? '').split(' ').filter(Boolean)
      const window = name === 'floor' ? process.env.FLOOR_MAX_INFLIGHT : name.slice(5)
      const inflight = window ? ['--max-inflight', window] : []
      args = [...flags, join(ROOT, 'bench', 'floor-broker.mjs'), '-p', String(port), ...inflight]
      break
    }
    default:
      throw new Error(`unknown broker ${name}`)
  }
  const log = join(outDir, `${tag}.broker.log`)
  const fd = openSync(log, 'a')
  const child = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"', cmd, ...args], {
    stdio: ['ignore', fd, fd],
    cwd: ROOT
  })
  closeSync(fd)
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })))
  const broker = { name, port, pid: child.pid, child, exited, log, dead: false }
  child.once('exit', () => (broker.dead = true))
  for (let i = 0; i < 300; i++) {
    if (broker.dead || !alive(child.pid)) throw new Error(`${name} exited at start (see ${log})`)
    if (listening(port)) return broker
    await sleep(50)
  }
  await stopBroker(broker)
  throw new Error(`${name} did not listen on ${port} within 15 s`)
}

/** TERM, then KILL after 5 s; by PID only. */
export const stopBroker = async (broker) => {
  if (broker.dead) return broker.exited
  try {
    process.kill(broker.pid, 'SIGTERM')
  } catch {}
  const t = setTimeout(() => {
    try {
      process.kill(broker.pid, 'SIGKILL')
    } catch {}
  }, 5000)
  const r = await broker.exited
  clearTimeout(t)
  return r
}
