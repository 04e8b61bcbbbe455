// The tables: medians over repetitions per (scenario, broker); lost / dup / ooo are the
// worst run; the Midge rows carry the ratios Midge/Mosquitto and Midge/Aedes of the
// scenario's headline figure (msg/s, or p99 latency for latency_q1, or the slowest fast
// subscriber's msg/s for slow_sub; connect rate and bytes per connection for conns_*): the
// ratio of the medians, then in parentheses the lowest and highest ratio of one repetition's
// runs (the brokers of a repetition run back to back).

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return null
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}
const worst = (xs) => {
  const v = xs.filter((x) => typeof x === 'number')
  return v.length ? Math.max(...v) : null
}
const fmt = (v, d = 0) =>
  v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d })
const mib = (kb) => (kb === null || kb === undefined || kb < 0 ? null : kb / 1024)
const ratio = (a, b) => (a === null || b === null || !b ? '-' : `${(a / b).toFixed(2)}×`)

/** One run's headline figure for the scenario: connect rate, p99 latency, the slowest fast subscriber's msg/s, or msg/s. */
const figure = (sid) =>
  sid.startsWith('conns') ? (r) => r.connect_rate : sid.startsWith('latency') ? (r) => r.lat_us?.p99 : sid.startsWith('slow_sub') ? (r) => r.fast_sub_rate_min : (r) => r.recv_rate

const headline = (sid, rows) => {
  const ok = rows.filter((r) => r.ok)
  const use = ok.length ? ok : rows
  const value = median(use.map(figure(sid)))
  if (sid.startsWith('conns')) return { rate: value, bytes: median(use.map((r) => r.broker?.bytes_per_conn)) }
  if (sid.startsWith('latency')) return { p99: value }
  if (sid.startsWith('slow_sub')) return { fast: value }
  return { rate: value }
}

/**
 * The ratio of each repetition's figure (`key`: the headline, or the second round's connect
 * rate), Midge's run against the other broker's run of the same repetition (the brokers of one
 * repetition run back to back), as "lowest–highest": how far one repetition's ratio is from
 * another's. Empty with fewer than two repetitions of both.
 */
const spread = (key, mineRuns, otherRuns) => {
  const byRep = new Map(otherRuns.filter((r) => r.ok).map((r) => [r.rep, key(r)]))
  const ratios = []
  for (const r of mineRuns) {
    const o = byRep.get(r.rep)
    const m = key(r)
    if (r.ok && typeof m === 'number' && typeof o === 'number' && o > 0) ratios.push(m / o)
  }
  if (ratios.length < 2) return ''
  return ` (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`
}

const ratioCell = (sid, mine, other, mineRuns, otherRuns) => {
  if (!other) return '-'
  const each = otherRuns ? spread(figure(sid), mineRuns, otherRuns) : ''
  if (sid.startsWith('conns')) return `rate ${ratio(mine.rate, other.rate)}${each}, bytes ${ratio(mine.bytes, other.bytes)}`
  if (sid.startsWith('latency')) return `p99 ${ratio(mine.p99, other.p99)}${each}`
  if (sid.startsWith('slow_sub')) return `fast ${ratio(mine.fast, other.fast)}${each}`
  return `${ratio(mine.rate, other.rate)}${each}`
}

const notesFor = (runs) => {
  const notes = []
  const dead = runs.filter((r) => r.broker_alive_after === false).length
  if (dead) notes.push(`broker died in ${dead}/${runs.length}`)
  const errs = [...new Set(runs.map((r) => r.error).filter(Boolean))]
  if (errs.length) notes.push(errs.join('; '))
  const undrained = runs.filter((r) => r.check && r.check.drained === false).length
  if (undrained) notes.push(`not drained in ${undrained}/${runs.length}`)
  const q2 = worst(runs.map((r) => r.check?.qos2_dup_pid))
  if (q2) notes.push(`qos2_dup_pid ${fmt(q2)}`)
  const bad = worst(runs.map((r) => r.check?.bad_ack))
  if (bad) notes.push(`bad acks ${fmt(bad)}`)
  if (runs.some((r) => r.generator === 'mqload')) notes.push('generator: mqload')
  return notes
}

export const render = (rows, header, defs) => {
  const groups = new Map()
  for (const r of rows) {
    const k = r.scenario_id
    if (!groups.has(k)) groups.set(k, new Map())
    const g = groups.get(k)
    if (!g.has(r.broker_name)) g.set(r.broker_name, [])
    g.get(r.broker_name).push(r)
  }
  const lines = []
  const m = header.machine
  lines.push(`Machine: ${m.cores} × ${m.model}, ${m.memGiB} GiB RAM, Linux ${m.kernel}, Node ${m.node}. ` +
    `Brokers: ${Object.entries(header.brokers).map(([b, i]) => `${b} ${i.version}`).join(', ')}` +
    `${header.skipped.length ? ` (skipped: ${header.skipped.join('; ')})` : ''}. ` +
    `Repetitions ${header.options.reps}, window ${header.options.dur} s after ${header.options.warmup} s warm-up, ${header.date}` +
    `${header.seconds !== undefined ? `, ${header.seconds} s in all` : ''}. ` +
    `Load average (1 / 5 / 15 min) before the first run ${header.loadStart?.join(' / ')}${header.loadEnd ? `, after the last ${header.loadEnd.join(' / ')}` : ''}.`)
  lines.push('')

  const msg = [...groups].filter(([sid]) => !sid.startsWith('conns'))
  const con = [...groups].filter(([sid]) => sid.startsWith('conns'))
  if (msg.length) {
    lines.push('### Messaging (median of runs; lost / dup / ooo = worst run)')
    lines.push('')
    lines.push('| scenario | broker | runs ok | delivered msg/s | Midge/Mosquitto | Midge/Aedes | published msg/s | e2e latency p50 / p99 / max (µs) | broker CPU s (window) | broker CPU µs/msg | broker RSS MiB start → end (max) | lost / dup / ooo | gen CPU % of 1 core | machine idle % of 200 | notes |')
    lines.push('|' + '---|'.repeat(15))
    for (const [sid, byBroker] of msg) {
      const heads = Object.fromEntries([...byBroker].map(([b, runs]) => [b, headline(sid, runs)]))
      for (const [b, runs] of byBroker) {
        const ok = runs.filter((r) => r.ok)
        const use = ok.length ? ok : runs
        const med = (f) => median(use.map(f))
        const lost = worst(runs.map((r) => r.check?.lost))
        const expected = worst(runs.map((r) => r.check?.expected)) ?? 0
        const lostS = lost ? `${fmt(lost)} (${((100 * lost) / (expected || 1)).toFixed(1)} %)` : fmt(lost)
        const notes = notesFor(runs)
        if (sid.startsWith('slow_sub')) {
          const target = defs[sid]?.rate ?? 0
          const fast = med((r) => r.fast_sub_rate_min)
          notes.unshift(
            `slowest fast sub ${fmt(fast)} msg/s (${target ? ((100 * fast) / target).toFixed(0) : '-'} % of ${fmt(target)}), ` +
              `slow sub ${fmt(med((r) => r.slow_sub_rate))} msg/s, slow sub lost ${fmt(worst(runs.map((r) => r.check?.slow?.lost)))}`
          )
        }
        const mine = b === 'midge'
        lines.push(
          `| ${sid} | ${b} | ${ok.length}/${runs.length} | ${fmt(med((r) => r.recv_rate))} ` +
            `| ${mine ? ratioCell(sid, heads.midge, heads.mosquitto, runs, byBroker.get('mosquitto')) : ''} | ${mine ? ratioCell(sid, heads.midge, heads.aedes, runs, byBroker.get('aedes')) : ''} ` +
            `| ${fmt(med((r) => r.pub_rate))} ` +
            `| ${fmt(med((r) => r.lat_us?.p50))} / ${fmt(med((r) => r.lat_us?.p99))} / ${fmt(med((r) => r.lat_us?.max))} ` +
            `| ${fmt(med((r) => r.broker?.cpu_s), 2)} | ${fmt(med((r) => r.broker?.cpu_us_per_msg), 1)} ` +
            `| ${fmt(mib(med((r) => r.broker?.rss_kb_start)), 1)} → ${fmt(mib(med((r) => r.broker?.rss_kb_end)), 1)} (${fmt(mib(med((r) => r.broker?.rss_kb_max)), 1)}) ` +
            `| ${lostS} / ${fmt(worst(runs.map((r) => r.check?.dup)))} / ${fmt(worst(runs.map((r) => r.check?.ooo)))} ` +
            `| ${fmt(med((r) => r.gen_cpu_pct))} | ${fmt(med((r) => r.machine_cpu_pct?.idle))} | ${notes.join('; ')} |`
        )
      }
    }
    lines.push('')
  }
  if (con.length) {
    lines.push('### Connections (median of runs)')
    lines.push('')
    lines.push('| scenario | broker | runs ok | connected / attempted | connect rate /s | Midge/Mosquitto | Midge/Aedes | CONNACK (SUBACK) latency p50 / p99 (µs) | broker RSS before → connected (MiB) | bytes per connection | broker CPU s (connect) | broker CPU % idle hold | gen CPU % (connect) | failures (worst run) | notes |')
    lines.push('|' + '---|'.repeat(15))
    for (const [sid, byBroker] of con) {
      const heads = Object.fromEntries([...byBroker].map(([b, runs]) => [b, headline(sid, runs)]))
      for (const [b, runs] of byBroker) {
        const ok = runs.filter((r) => r.ok)
        const use = ok.length ? ok : runs
        const med = (f) => median(use.map(f))
        const notes = notesFor(runs)
        const aliveAfter = med((r) => r.alive_after_hold)
        const connected = med((r) => r.connected)
        if (aliveAfter !== null && connected !== null && aliveAfter < connected) notes.push(`only ${fmt(aliveAfter)} alive after hold`)
        const failures = {}
        for (const r of runs) for (const [k, v] of Object.entries(r.fail ?? {})) failures[k] = Math.max(failures[k] ?? 0, v)
        const failS = Object.entries(failures).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${fmt(v)}`).join(', ') || 'none'
        const mine = b === 'midge'
        lines.push(
          `| ${sid} | ${b} | ${ok.length}/${runs.length} | ${fmt(connected)} / ${fmt(med((r) => r.attempted))} | ${fmt(med((r) => r.connect_rate))} ` +
            `| ${mine ? ratioCell(sid, heads.midge, heads.mosquitto, runs, byBroker.get('mosquitto')) : ''} | ${mine ? ratioCell(sid, heads.midge, heads.aedes, runs, byBroker.get('aedes')) : ''} ` +
            `| ${fmt(med((r) => r.connect_lat_us?.p50))} / ${fmt(med((r) => r.connect_lat_us?.p99))} ` +
            `| ${fmt(mib(med((r) => r.broker?.rss_kb_before)), 1)} → ${fmt(mib(med((r) => r.broker?.rss_kb_connected)), 1)} ` +
            `| ${fmt(med((r) => r.broker?.bytes_per_conn))} | ${fmt(med((r) => r.broker?.cpu_connect_s), 2)} | ${fmt(med((r) => r.broker?.cpu_hold_pct), 2)} ` +
            `| ${fmt(med((r) => r.gen_cpu_connect_pct))} | ${failS} | ${notes.join('; ')} |`
        )
      }
    }
    lines.push('')
    // the second round: the same broker and generator processes, after the first round's clients
    // disconnected (past the first round's JIT compilation in Midge, Aedes and the generator)
    const two = con.filter(([, byBroker]) => [...byBroker.values()].some((runs) => runs.some((r) => r.second)))
    if (two.length) {
      lines.push('### Connections, second round (the same broker; the first round\'s clients disconnected, as many connect again)')
      lines.push('')
      lines.push('| scenario | broker | connected | connect rate /s | Midge/Mosquitto | Midge/Aedes | CONNACK (SUBACK) latency p50 / p99 (µs) | broker CPU s (connect) | broker CPU µs per connect | gen CPU % (connect) |')
      lines.push('|' + '---|'.repeat(10))
      const rate2 = (r) => r.second?.connect_rate
      for (const [sid, byBroker] of two) {
        const rateOf = (runs) => median(runs.filter((r) => r.ok).map(rate2))
        const cell = (runs, other) => (other ? `${ratio(rateOf(runs), rateOf(other))}${spread(rate2, runs, other)}` : '-')
        for (const [b, runs] of byBroker) {
          const use = runs.filter((r) => r.ok && r.second)
          const med = (f) => median(use.map(f))
          const mine = b === 'midge'
          const cpuPer = med((r) => (r.second.connected > 0 ? (r.second.broker_cpu_connect_s * 1e6) / r.second.connected : null))
          lines.push(
            `| ${sid} | ${b} | ${fmt(med((r) => r.second.connected))} | ${fmt(med(rate2))} ` +
              `| ${mine ? cell(runs, byBroker.get('mosquitto')) : ''} | ${mine ? cell(runs, byBroker.get('aedes')) : ''} ` +
              `| ${fmt(med((r) => r.second.connect_lat_us?.p50))} / ${fmt(med((r) => r.second.connect_lat_us?.p99))} ` +
              `| ${fmt(med((r) => r.second.broker_cpu_connect_s), 2)} | ${fmt(cpuPer)} | ${fmt(med((r) => r.second.gen_cpu_connect_pct))} |`
          )
        }
      }
      lines.push('')
    }
  }
  return lines.join('\n')
}
