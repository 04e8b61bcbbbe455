// Run by fieldShape.test.ts as `node --allow-natives-syntax --no-concurrent-recompilation fieldShape.child.mjs DIST_URL`
// (optimizations synchronous: a background one can be abandoned and leave nothing to check).
// For each class: a function that builds objects is optimized by TurboFan, then one object gets
// the changes it gets when a connection ends; the function is called again and its optimization
// status read. Prints one JSON line: { name: { optimized, stillOptimized } }.
const dist = process.argv[2]
const { settleFields } = await import(`${dist}/runtime/fieldShape.js`)
const { Session } = await import(`${dist}/session/Session.js`)
const { RawTcpSocket } = await import(`${dist}/transport/rawTcp.js`)
const { Connection } = await import(`${dist}/session/Connection.js`)
const { Core, defaultSettings } = await import(`${dist}/session/Core.js`)
const { silentLog } = await import(`${dist}/log/Log.js`)

const OPTIMIZED = 16 // V8's OptimizationStatus::kOptimized
const optimized = (f) => (%GetOptimizationStatus(f) & OPTIMIZED) !== 0

/**
 * optimize `fn` (`make`, or a constructor `make` calls) on warm feedback, run `late` on one of
 * `make`'s objects, call `make` again; whether `fn` was optimized, and still is
 */
const check = (make, late, fn = make) => {
  // (each `%` call after a statement that could continue as an expression starts with `;`)
  ;%PrepareFunctionForOptimization(fn)
  for (let i = 0; i < 2000; i++) make(i)
  ;%OptimizeFunctionOnNextCall(fn)
  make(0)
  const before = optimized(fn)
  late(make(1))
  make(2)
  return { optimized: before, stillOptimized: optimized(fn) }
}

// the control: the same kind of class without settleFields loses its optimized code, which shows
// that this V8 has the behaviour settleFields is there for (if not, the checks below prove nothing)
class Plain {
  closed = false
  at = 0
  constructor(id) {
    this.id = id
  }
}
class Settled {
  closed = false
  at = 0
  constructor(id) {
    this.id = id
    settleFields(this, ["closed"], ["at"])
  }
}

const limits = { maxInflight: 20, maxQueued: 1000, queueQos0: false }
const fakeHandle = () => ({
  onread: undefined,
  readStart: () => 0,
  readStop: () => 0,
  writeBuffer: () => 0,
  shutdown: () => 0,
  close: (callback) => callback?.(),
  setNoDelay: () => 0,
  getpeername: (out) => {
    out.address = "127.0.0.1"
    out.port = 50000
    out.family = "IPv4"
    return 0
  },
  writeQueueSize: 0
})

// a Connection on a raw socket, as the listener makes one
const core = new Core({ ...defaultSettings, connectionMessages: false }, silentLog(), () => Date.now())
const listener = { port: 1883, mountPoint: undefined, maxQos: 2, allowAnonymous: undefined, allowZeroLengthClientid: undefined, autoIdPrefix: undefined }
const hooks = { sessionStarted: () => {}, closed: () => {} }
const results = {
  plain: check(
    (i) => new Plain(i),
    (o) => {
      o.closed = true
      o.at = Date.now()
    }
  ),
  settled: check(
    (i) => new Settled(i),
    (o) => {
      o.closed = true
      o.at = Date.now()
    }
  ),
  // Session.close's changes (Connection.close, Core.discardSession) and its flow's `clear`
  session: check(
    (i) => new Session(`c${i}`, limits),
    (s) => {
      s.wire = {}
      s.wire = undefined
      s.disconnectedAt = Date.now()
      s.pendingWill = { message: undefined, at: Date.now() }
      s.dropping = true
      s.flow.limits = { ...limits }
      s.flow.observer = { cleared: () => {} }
      s.flow.clear()
    }
  ),
  // a socket's end: peer's EOF, shutdown done, handle closed
  socket: check(
    () => RawTcpSocket.accept(fakeHandle()),
    (s) => {
      s.on("close", () => {})
      s.peername()
      s.readDone(-4095, undefined, 0)
      s.shutDown()
      s.destroy()
    }
  ),
  // the connection object itself: `closeReason` set at its end, `watchAt` a clock time
  connectionObject: check(
    () => new Connection(RawTcpSocket.accept(fakeHandle()), core, hooks, listener),
    (conn) => {
      conn.watchAt = Date.now() + 90_000
      conn.close("closed")
    },
    Connection
  )
}
console.log(JSON.stringify(results))
