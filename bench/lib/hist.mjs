// Log-linear histogram of non-negative integers (microseconds), as mqload's: 1024
// sub-buckets per power of two, so a percentile is within 0.1 % of the true value.

const SUB = 1024
const BUCKETS = 23 * SUB // values up to 2^32 - 1

const index = (v) => {
  if (v < 2 * SUB) return v
  const shift = 31 - Math.clz32(v) - 10
  return (shift + 1) * SUB + ((v >>> shift) & (SUB - 1))
}

const value = (i) => {
  if (i < 2 * SUB) return i
  const shift = Math.floor(i / SUB) - 1
  const p = 2 ** shift
  return (SUB + (i % SUB)) * p + Math.floor(p / 2)
}

export class Hist {
  constructor() {
    this.c = new Float64Array(BUCKETS)
    this.n = 0
    this.max = 0
    this.sum = 0
  }

  add(v) {
    v = v < 0 ? 0 : v > 0xffffffff ? 0xffffffff : Math.floor(v)
    this.c[index(v)]++
    this.n++
    this.sum += v
    if (v > this.max) this.max = v
  }

  /** sparse form for IPC: [n, max, sum, [index, count, index, count, ...]] */
  toJSON() {
    const pairs = []
    const c = this.c
    for (let i = 0; i < BUCKETS; i++) if (c[i] !== 0) pairs.push(i, c[i])
    return [this.n, this.max, this.sum, pairs]
  }

  merge(json) {
    if (!json) return this
    const [n, max, sum, pairs] = json
    for (let k = 0; k < pairs.length; k += 2) this.c[pairs[k]] += pairs[k + 1]
    this.n += n
    this.sum += sum
    if (max > this.max) this.max = max
    return this
  }

  pct(p) {
    if (this.n === 0) return null
    const target = Math.max(1, Math.ceil(p * this.n))
    let acc = 0
    for (let i = 0; i < BUCKETS; i++) {
      acc += this.c[i]
      if (acc >= target) return Math.min(value(i), this.max)
    }
    return this.max
  }

  summary() {
    if (this.n === 0) return { n: 0 }
    return {
      n: this.n,
      p50: this.pct(0.5),
      p90: this.pct(0.9),
      p99: this.pct(0.99),
      p999: this.pct(0.999),
      max: this.max,
      mean: Math.round((this.sum / this.n) * 10) / 10
    }
  }
}
