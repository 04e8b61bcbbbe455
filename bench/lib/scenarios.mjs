import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
// The scenarios, as mqload's compare.sh defines them (plus slow_sub), and the options the
// environment can change. Every scenario is bounded: setup, warm-up, window, drain, hold.

export const DEFAULT_SCENARIOS = ['fanin_q0', 'fanin_q1', 'fanin_q2', 'fanout_q0', 'latency_q1', 'slow_sub', 'conns_10k', 'conns_10k_sub']

/** @param o options: dur, conns, hold */
export const scenarios = (o) => ({
  fanin_q0: {
    kind: 'pubsub',
    what: '10 publishers -> 1 subscriber, QoS 0, 64 B, distinct topics, subscriber on t/+, publishers as fast as the socket drains',
    qos: 0, pubs: 10, subs: 1, size: 64, topics: 'distinct'
  },
  fanin_q1: {
    kind: 'pubsub',
    what: '10 publishers -> 1 subscriber, QoS 1, window 10 un-acked per publisher, 64 B',
    qos: 1, pubs: 10, subs: 1, size: 64, topics: 'distinct', window: 10
  },
  fanin_q2: {
    kind: 'pubsub',
    what: '10 publishers -> 1 subscriber, QoS 2, window 10 unfinished per publisher, 64 B',
    qos: 2, pubs: 10, subs: 1, size: 64, topics: 'distinct', window: 10
  },
  fanin_q1_paced: {
    kind: 'pubsub',
    what: 'fanin_q1 at a fixed 10,000 msg/s in all (1,000 per publisher): broker CPU per message at the same rate for every broker (not in the default set)',
    qos: 1, pubs: 10, subs: 1, size: 64, topics: 'distinct', window: 10, rate: 10000
  },
  fanin_q2_paced: {
    kind: 'pubsub',
    what: 'fanin_q2 at a fixed 10,000 msg/s in all (not in the default set)',
    qos: 2, pubs: 10, subs: 1, size: 64, topics: 'distinct', window: 10, rate: 10000
  },
  fanin_q1_durable: {
    kind: 'pubsub',
    what: 'fanin_q1 with persistence: a persistent subscriber session (clean session 0); Midge with `persistence true` + `persistence_durable true` (a PUBACK waits for fdatasync), Mosquitto with `persistence true` (no per-message sync: it saves at autosave_interval and at exit)',
    qos: 1, pubs: 10, subs: 1, size: 64, topics: 'distinct', window: 10, persistentSub: true,
    brokers: ['midge', 'mosquitto'],
    conf: { midge: ['persistence true', 'persistence_durable true'], mosquitto: ['persistence true'] }
  },
  fanout_q0: {
    kind: 'pubsub',
    what: '1 publisher -> 100 subscribers on one topic, QoS 0, 64 B, as fast as allowed',
    qos: 0, pubs: 1, subs: 100, size: 64, topics: 'single', subWorkers: 2, ahead: 1000
  },
  fanout_q1: {
    kind: 'pubsub',
    what: '1 publisher -> 100 subscribers on one topic, QoS 1, window 10',
    qos: 1, pubs: 1, subs: 100, size: 64, topics: 'single', window: 10, subWorkers: 2
  },
  latency_q1: {
    kind: 'pubsub',
    what: '1 publisher -> 1 subscriber, QoS 1 at a fixed 1,000 msg/s (window 100): end-to-end latency, 20 s window after a 5 s warm-up (20,000 messages: the p99 is the 200th slowest)',
    qos: 1, pubs: 1, subs: 1, size: 64, topics: 'single', window: 100, rate: 1000, warmup: 5, dur: 20
  },
  slow_sub: {
    kind: 'pubsub',
    what: '1 publisher at a fixed 2,000 msg/s, QoS 0, 1 KiB payloads -> 4 fast subscribers + 1 that reads 64 KiB/s (~60 msg/s); 3 s warm-up fills its socket buffers',
    qos: 0, pubs: 1, subs: 5, size: 1024, topics: 'single', rate: 2000, slow: 1, slowBps: 64 * 1024, warmup: 3, drain: 3
  },
  slow_sub_q1: {
    kind: 'pubsub',
    what: 'as slow_sub with QoS 1 (window 100)',
    qos: 1, pubs: 1, subs: 5, size: 1024, topics: 'single', rate: 2000, window: 100, slow: 1, slowBps: 64 * 1024, warmup: 3, drain: 3
  },
  conns_10k: {
    kind: 'conns',
    what: `${o.conns.toLocaleString('en-US')} idle clients (keepalive 60-600 s, at most 100 connects pending), hold ${o.hold} s`,
    conns: o.conns, subscribe: false, workers: 2, concurrency: 100
  },
  conns_10k_sub: {
    kind: 'conns',
    what: `as conns_10k, each client then subscribes (QoS 1) to its own topic; counted after SUBACK`,
    conns: o.conns, subscribe: true, qos: 1, workers: 2, concurrency: 100
  }
})

const num = (v, d) => (v === undefined || v === '' ? d : Number(v))
const list = (v) => (v ?? '').split(/[\s,]+/).filter(Boolean)

/** Options from the environment (BENCH_QUICK=1 shortens everything). */
export const options = (env = process.env) => {
  const quick = env.BENCH_QUICK === '1'
  return {
    quick,
    reps: num(env.BENCH_REPS, quick ? 1 : 3),
    dur: num(env.BENCH_DUR, quick ? 1 : 4),
    // a scenario's own window (latency_q1) gives way to BENCH_DUR and BENCH_QUICK
    durSet: quick || (env.BENCH_DUR !== undefined && env.BENCH_DUR !== ''),
    warmup: num(env.BENCH_WARMUP, quick ? 0.5 : 1),
    drain: num(env.BENCH_DRAIN, 10),
    hold: num(env.BENCH_HOLD, quick ? 0.5 : 2),
    settle: quick ? 0.5 : 1, // after the last CONNACK, before RSS is read (as mqload)
    // conns_*: a second round of connects after the first round's clients disconnect (BENCH_CONN_SECOND=0: none)
    second: env.BENCH_CONN_SECOND !== '0',
    conns: num(env.BENCH_CONNS, quick ? 1000 : 10000),
    // conns_*: mqload (the C generator, built from ../shared/tools/mqload) as the generator instead of the bench's own clients
    mqload: env.BENCH_MQLOAD ? resolve(env.BENCH_MQLOAD) : undefined,
    // QoS 0 as fast as allowed: messages a publisher may be beyond what every subscriber has seen
    // (default per scenario: 2,000 per publisher in fan-in, 1,000 in fan-out)
    ahead: num(env.BENCH_AHEAD, 2000),
    aheadSet: env.BENCH_AHEAD !== undefined,
    scenarios: list(env.BENCH_SCENARIOS).length ? list(env.BENCH_SCENARIOS) : DEFAULT_SCENARIOS,
    brokers: list(env.BENCH_BROKERS).length ? list(env.BENCH_BROKERS) : ['midge', 'mosquitto', 'aedes'],
    portFirst: num(env.BENCH_PORT_FIRST, 32000),
    portLast: num(env.BENCH_PORT_LAST, 32999),
    mosquitto: env.MOSQUITTO ?? '/usr/sbin/mosquitto',
    midge: env.MIDGE ? resolve(env.MIDGE) : join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'main.js'),
    mosqMaxQueued: num(env.BENCH_MOSQ_MAX_QUEUED, 60000),
    out: env.BENCH_OUT
  }
}
