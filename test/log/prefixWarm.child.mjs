// Run by prefixWarm.test.ts as `node --allow-natives-syntax --no-concurrent-recompilation prefixWarm.child.mjs DIST_URL`
// (optimizations synchronous). `log` is optimized while the clock stays in one second, then the
// clock moves to the next second and `log` is called again: is it still optimized? Prints one JSON
// line: { name: { optimized, stillOptimized, line } }.
const dist = process.argv[2]
let now = 1_795_000_000_250
Date.now = () => now
const { Log } = await import(`${dist}/log/Log.js`)

const OPTIMIZED = 16 // V8's OptimizationStatus::kOptimized
const optimized = (f) => (%GetOptimizationStatus(f) & OPTIMIZED) !== 0

const check = (fn, call) => {
  // `call` itself stays unoptimized: it calls `fn`'s own code (inlined into it, it would be checked instead)
  ;%NeverOptimizeFunction(call)
  ;%PrepareFunctionForOptimization(fn)
  for (let i = 0; i < 2000; i++) call()
  ;%OptimizeFunctionOnNextCall(fn)
  call()
  const before = optimized(fn)
  now += 1000
  const line = call()
  call()
  return { optimized: before, stillOptimized: optimized(fn), line }
}

// the control: Log's timestamp prefix without the warm-up, which shows that this V8 discards code
// at a branch first taken after the compile (if not, the check below proves nothing)
class Plain {
  prefixSecond = -1
  prefix = ""
  log(message) {
    return this.secondsPrefix(Math.floor(Date.now() / 1000)) + message
  }
  secondsPrefix(second) {
    if (second !== this.prefixSecond) {
      this.prefixSecond = second
      this.prefix = `${second}: `
    }
    return this.prefix
  }
}
const lines = []
const log = new Log(["notice"], [{ write: (_type, line) => lines.push(line) }], true)
log.notice("first line")
const first = lines[0]
const logResult = check(Log.prototype.log, () => {
  log.log("notice", "x")
  return lines[lines.length - 1]
})
now -= 1000
const plain = new Plain()
plain.log("first line")
const plainResult = check(Plain.prototype.log, () => plain.log("x"))
console.log(JSON.stringify({ plain: plainResult, log: logResult, first }))
