/**
 * The broker's log, in Mosquitto's format and types (`log_type`): lines such as
 * `1700000000: New client connected from 127.0.0.1:50000 as c1 (p2, c1, k60).`
 * so that existing log parsers keep working. Plain synchronous code: it is
 * called from connection handlers, never per message unless debug is on.
 */
import * as fs from "node:fs"
import { atEndOfTurn } from "../runtime/endOfTurn.js"

export type LogType =
  | "error"
  | "warning"
  | "notice"
  | "information"
  | "subscribe"
  | "unsubscribe"
  | "websockets"
  | "debug"

export const allLogTypes: ReadonlyArray<LogType> = [
  "error",
  "warning",
  "notice",
  "information",
  "subscribe",
  "unsubscribe",
  "websockets",
  "debug"
]

/** Mosquitto's default: error, warning, notice and information. */
export const defaultLogTypes: ReadonlyArray<LogType> = ["error", "warning", "notice", "information"]

export interface LogSink {
  write(type: LogType, line: string): void
}

/**
 * A destination that writes the lines of one event-loop turn with one call, at the end of the
 * turn (`atEndOfTurn`: the immediate the connections' writes of the turn share), instead of one
 * `write(2)` per line (~2.6 µs each here, whatever the length). While lines keep coming (a storm
 * of connects: a turn per connect, two or three lines each), a write comes at most every
 * `SPACING_MS`: lines logged within that time of the last write wait for a timer and go out
 * together. 10,000 connects took 36k writes with a write per line, 19.7k with one per turn, and
 * a few hundred this way (docs/performance.md, "The log's writes", "Nineteenth round"). A line
 * after a quiet spell is written at the end of its turn, as before. Lines keep their order; they
 * reach the destination within `SPACING_MS` (and the timer's lateness) of being logged. Whatever
 * is still pending is written when the process exits (`exit` runs for `process.exit` and
 * uncaught exceptions; an uncaught exception's trace comes after the pending lines), when the
 * sink is closed (a reload closing the previous destinations) and on `flush()` (the broker's
 * start-up, a listener open, a reload done). More than 64 KiB pending is written at once. A
 * write that throws (`fs.writeSync`: disk full, a closed descriptor) drops that batch, as
 * Mosquitto ignores a failed log write: the log cannot report its own failure, and the broker
 * must not stop for it. (Node's `process.stdout` / `process.stderr` report a failure as an
 * `error` event instead: the daemon listens for it and ignores it.)
 *
 * `now` and `later` are the clock and the timer (tests give their own).
 */
export class TurnBatchedSink implements LogSink {
  private pending = ""
  private closed = false
  /** when the last write was (`now()`); -Infinity: none yet */
  private lastWrite = Number.NEGATIVE_INFINITY

  constructor(
    private readonly out: (text: string) => void,
    private readonly now: () => number = nowMs,
    private readonly later: (f: () => void, ms: number) => void = unrefTimeout
  ) {}

  write(_type: LogType, line: string): void {
    if (this.closed) return
    this.pending += line + "\n"
    if (this.pending.length >= BATCH_MAX) this.flush()
    else if (!pendingSinks.has(this)) {
      ensureExitFlush()
      pendingSinks.add(this)
      const wait = this.lastWrite + SPACING_MS - this.now()
      if (wait <= 0) atEndOfTurn(this.onDue)
      else this.later(this.onDue, wait)
    }
  }

  /** Write what is pending now. */
  flush(): void {
    pendingSinks.delete(this)
    const text = this.pending
    if (text.length === 0) return
    this.pending = ""
    this.lastWrite = this.now()
    try {
      this.out(text)
    } catch {
      // dropped: see the class comment
    }
  }

  /** Write what is pending; later lines are ignored. */
  close(): void {
    this.flush()
    this.closed = true
  }

  /** the end of the turn, or the timer: unless a flush came first (and nothing was logged since) */
  private readonly onDue = (): void => {
    if (pendingSinks.has(this)) this.flush()
  }
}

/** a monotonic clock in ms, finer than `Date.now` */
const nowMs = (): number => performance.now()

/** the least time between two writes of a sink while lines keep coming (ms) */
export const SPACING_MS = 1

/** a timer that does not keep the process alive (what is pending at exit is written by the exit hook) */
const unrefTimeout = (f: () => void, ms: number): void => {
  setTimeout(f, ms).unref()
}

const BATCH_MAX = 64 * 1024
/** sinks with lines waiting for the end of the turn (each has a task queued for it) */
const pendingSinks = new Set<TurnBatchedSink>()
let exitHooked = false

/** Every sink's pending lines, when the process exits: hooked on the first line logged. */
const ensureExitFlush = (): void => {
  if (exitHooked) return
  exitHooked = true
  // `exit` also runs for an uncaught exception, before Node prints its trace
  process.on("exit", () => {
    for (const sink of [...pendingSinks]) sink.flush()
  })
}

/**
 * Standard error, Mosquitto's default destination. Where it is a regular file (a daemon's output
 * redirected), Node's `process.stderr` is a synchronous stream that turns each string into a
 * Buffer and then calls `fs.writeSync`: the sink calls `fs.writeSync` itself, with the string
 * (written as the stream would, in order with anything else written to it). A pipe or a terminal
 * goes through `process.stderr`.
 */
let stderrIsFile: boolean | undefined = undefined

export const stderrSink: LogSink = new TurnBatchedSink((text) => {
  if (stderrIsFile === undefined) {
    try {
      stderrIsFile = fs.fstatSync(2).isFile()
    } catch {
      stderrIsFile = false
    }
  }
  if (stderrIsFile) fs.writeSync(2, text)
  else process.stderr.write(text)
})

const enabledTypes = (types: ReadonlyArray<string>): Set<LogType> =>
  new Set(
    types.includes("all")
      ? allLogTypes
      : (types.filter((t) => (allLogTypes as ReadonlyArray<string>).includes(t)) as Array<LogType>)
  )

const pad = (n: number, width = 2): string => String(n).padStart(width, "0")
const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

/** `log_timestamp_format`: the strftime conversions people use in Mosquitto configs, local time. */
export const strftime = (format: string, date: Date): string =>
  format.replace(/%([a-zA-Z%])/g, (whole, c: string) => {
    switch (c) {
      case "Y":
        return String(date.getFullYear())
      case "y":
        return pad(date.getFullYear() % 100)
      case "m":
        return pad(date.getMonth() + 1)
      case "d":
        return pad(date.getDate())
      case "e":
        return String(date.getDate()).padStart(2, " ")
      case "H":
        return pad(date.getHours())
      case "M":
        return pad(date.getMinutes())
      case "S":
        return pad(date.getSeconds())
      case "s":
        return String(Math.floor(date.getTime() / 1000))
      case "j": {
        const start = new Date(date.getFullYear(), 0, 1)
        return pad(Math.floor((date.getTime() - start.getTime()) / 86_400_000) + 1, 3)
      }
      case "b":
        return MONTHS[date.getMonth()]
      case "a":
        return DAYS[date.getDay()]
      case "T":
        return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
      case "F":
        return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`
      case "z": {
        const off = -date.getTimezoneOffset()
        return `${off >= 0 ? "+" : "-"}${pad(Math.floor(Math.abs(off) / 60))}${pad(Math.abs(off) % 60)}`
      }
      case "%":
        return "%"
      default:
        return whole
    }
  })

/** syslog severity of each log type (Mosquitto's mapping) */
export const syslogSeverity = (type: LogType): number => {
  switch (type) {
    case "error":
      return 3
    case "warning":
      return 4
    case "notice":
      return 5
    case "debug":
      return 7
    default:
      return 6
  }
}

export class Log {
  private enabled: Set<LogType>
  /** `debug` is on: the connections then log every packet in and out (one check per packet otherwise) */
  debugOn = false
  /** `log_timestamp_format`; undefined: seconds since the epoch */
  timestampFormat: string | undefined = undefined
  /** `1700000000: `, made once a second (a connect logs two or three lines in the same second) */
  private prefixSecond = -1
  private prefix = ""
  /** lines also kept in memory (tests read them); bounded */
  readonly recent: Array<string> = []

  constructor(
    types: ReadonlyArray<string>,
    private sinks: Array<LogSink>,
    private timestamp: boolean = true,
    private readonly keepRecent: number = 0
  ) {
    this.enabled = enabledTypes(types)
    this.debugOn = this.enabled.has("debug")
  }

  /** New log_type / log_dest / log_timestamp (SIGHUP). */
  reconfigure(types: ReadonlyArray<string>, sinks: Array<LogSink>, timestamp: boolean): void {
    this.enabled = enabledTypes(types)
    this.debugOn = this.enabled.has("debug")
    this.sinks = sinks
    this.timestamp = timestamp
  }

  /** Add a destination once it exists (e.g. `log_dest topic` once the broker runs). */
  addSink(sink: LogSink): void {
    this.sinks.push(sink)
  }

  /**
   * Write this log's pending lines now (`TurnBatchedSink`) where a turn ends with a state others
   * watch for (a listener open, start-up or a reload done), so that the log says so by then.
   */
  flush(): void {
    for (const sink of this.sinks) if (sink instanceof TurnBatchedSink) sink.flush()
  }

  isEnabled(type: LogType): boolean {
    return this.enabled.has(type)
  }

  log(type: LogType, message: string): void {
    if (!this.enabled.has(type)) return
    const line = this.timestamp
      ? (this.timestampFormat === undefined ? this.secondsPrefix(Math.floor(Date.now() / 1000)) : `${strftime(this.timestampFormat, new Date())}: `) + message
      : message
    if (this.keepRecent > 0) {
      this.recent.push(line)
      if (this.recent.length > this.keepRecent) this.recent.shift()
    }
    for (const sink of this.sinks) sink.write(type, line)
  }

  /** @internal (warmPrefix) */
  secondsPrefix(second: number): string {
    if (second !== this.prefixSecond) {
      this.prefixSecond = second
      this.prefix = `${second}: `
    }
    return this.prefix
  }

  error(message: string): void {
    this.log("error", message)
  }
  warning(message: string): void {
    this.log("warning", message)
  }
  notice(message: string): void {
    this.log("notice", message)
  }
  info(message: string): void {
    this.log("information", message)
  }
  debug(message: string): void {
    this.log("debug", message)
  }
}

/**
 * Take the timestamp prefix's once-a-second branch a few dozen times, on a Log of its own when
 * this module loads, before anything is compiled. V8 compiles `log` (and what inlines it: a listener's `accept`, the
 * connection's log) with the branches it has seen taken since the function's feedback was
 * allocated; a branch never seen becomes a deoptimization. The new second came too rarely to be
 * seen first, so the first one after the compile threw `log` and `accept` away and had them
 * compiled again (docs/performance.md, "Twenty-first round"). The instance is dropped: the
 * branch's feedback belongs to `secondsPrefix`, which every Log shares.
 */
const warmPrefix = (): void => {
  const log = new Log([], [])
  for (let i = 0; i < 64; i++) log.secondsPrefix(i)
}
warmPrefix()

/** A log that writes nothing (library default when the application does not ask for one). */
export const silentLog = (): Log => new Log([], [])

/** `log_dest topic`: Mosquitto's topic for each log type. */
export const logTopic = (type: LogType): string => {
  switch (type) {
    case "error":
      return "$SYS/broker/log/E"
    case "warning":
      return "$SYS/broker/log/W"
    case "notice":
      return "$SYS/broker/log/N"
    case "information":
      return "$SYS/broker/log/I"
    case "debug":
      return "$SYS/broker/log/D"
    case "subscribe":
      return "$SYS/broker/log/M/subscribe"
    case "unsubscribe":
      return "$SYS/broker/log/M/unsubscribe"
    case "websockets":
      return "$SYS/broker/log/WS"
  }
}
