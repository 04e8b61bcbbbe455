/**
 * A map from packet identifiers (1..65535) to values, in the order they were
 * set: what a `Map<number, V>` did for a session's in-flight window, without
 * what a `Map` does to the garbage collector there.
 *
 * An in-flight window is filled at one end and drained at the other, message
 * after message. V8's `Map` is an ordered hash table that keeps deleted entries
 * as holes until it rebuilds the table, so a window's `Map` gets a new table
 * every few messages. V8 allocates the new table where the old one was: once a
 * session's table has lived through two young-generation collections (the
 * session was quiet while other clients' traffic ran), every table after it is
 * allocated in old space, and each table it replaces keeps the entries it held
 * (the messages in flight at that moment) until the next full collection, as V8
 * leaves a replaced table intact for iterators that may still walk it. Every
 * message to such a session then survives the young generation: a QoS 1 stream
 * to a subscriber whose session had aged grew the daemon's heap by 16 MB in 4 s
 * and made its scavenges 2-4x longer; with this map the heap stayed flat
 * (docs/performance.md, "Eighteenth round").
 *
 * Here the table is kept, and a delete leaves nothing behind in it:
 * - lookup: open addressing on the id's low bits with linear probing. Ids are
 *   handed out in sequence, so the ids in flight sit in consecutive slots and
 *   rarely collide; a delete moves the entries after it back (backward-shift
 *   deletion), so the table never fills with tombstones.
 * - order: the ids in the order they were set, in an array with a moving head;
 *   a deleted one leaves a 0 there, which the head steps over. Every slot keeps
 *   its id's place in that array, so a delete out of order is O(1) too; when
 *   holes make up most of the array it is rebuilt without them.
 *
 * Semantics are `Map`'s, as `ReadonlyMap` says, with one difference: iteration
 * works on the ids present when it starts (an entry deleted meanwhile is
 * skipped, one set meanwhile is not visited).
 *
 * Memory: ~270 bytes once a session has had a QoS 1 / 2 delivery (a `Map`:
 * ~190), ~1.3 KB with 20 in flight (a `Map`: ~1 KB); nothing for a connection
 * that never had one.
 */
/** A packet identifier a QoS 1 / 2 flow can use: an integer in 1..65535 [MQTT-2.3.1-1] (the mask also refuses fractions, NaN and infinities). */
export const isPacketId = (id: number): boolean => (id & 0xffff) === id && id !== 0

const MIN_CAPACITY = 4
/** the head is moved to the front of `order` once this many ids before it are gone */
const SHIFT_AT = 8

export class PacketIdMap<V> implements ReadonlyMap<number, V> {
  // the table, three cells per slot: id (0 = empty), the id's place in `order`, its value
  private slots: Array<number | V | undefined>
  private mask: number
  private count = 0
  // ids in the order they were set; 0 = deleted since
  private order: Array<number> = []
  private head = 0
  private holes = 0

  constructor() {
    this.slots = new Array(MIN_CAPACITY * 3).fill(0)
    this.mask = MIN_CAPACITY - 1
  }

  get size(): number {
    return this.count
  }

  /** the id's slot in the table (an index of `slots`), or -1 */
  private slotOf(id: number): number {
    const slots = this.slots
    const mask = this.mask
    let i = id & mask
    for (;;) {
      const k = slots[i * 3]
      if (k === 0) return -1 // (first: 0 marks an empty slot, and is no packet id)
      if (k === id) return i * 3
      i = (i + 1) & mask
    }
  }

  has(id: number): boolean {
    return this.slotOf(id) >= 0
  }

  get(id: number): V | undefined {
    const s = this.slotOf(id)
    return s < 0 ? undefined : (this.slots[s + 2] as V)
  }

  /** Set an id's value: a new id goes last in the order, one present keeps its place (as `Map`). */
  set(id: number, value: V): this {
    if (!isPacketId(id)) throw new RangeError(`packet identifier out of range: ${id}`)
    const s = this.slotOf(id)
    if (s >= 0) {
      this.slots[s + 2] = value
      return this
    }
    // up to three quarters full: ids in flight are mostly consecutive, so they rarely share a probe run
    if ((this.count + 1) * 4 > (this.mask + 1) * 3) this.resize((this.mask + 1) * 2)
    this.place(id, this.order.length, value)
    this.order.push(id)
    this.count++
    return this
  }

  /** put an id known to be absent into the table (there is room) */
  private place(id: number, at: number, value: V | undefined): void {
    const slots = this.slots
    const mask = this.mask
    let i = id & mask
    while (slots[i * 3] !== 0) i = (i + 1) & mask
    slots[i * 3] = id
    slots[i * 3 + 1] = at
    slots[i * 3 + 2] = value
  }

  delete(id: number): boolean {
    const s = this.slotOf(id)
    if (s < 0) return false
    const at = this.slots[s + 1] as number
    // backward-shift deletion: every entry after the gap that may live there moves back into it
    const slots = this.slots
    const mask = this.mask
    let i = s / 3
    let j = i
    for (;;) {
      j = (j + 1) & mask
      const k = slots[j * 3] as number
      if (k === 0) break
      const home = k & mask
      // k stays where it is when its home lies cyclically in (i, j]
      if (i <= j ? i < home && home <= j : i < home || home <= j) continue
      slots[i * 3] = k
      slots[i * 3 + 1] = slots[j * 3 + 1]
      slots[i * 3 + 2] = slots[j * 3 + 2]
      i = j
    }
    slots[i * 3] = 0
    slots[i * 3 + 1] = 0
    slots[i * 3 + 2] = undefined
    this.count--
    this.unorder(at)
    if (this.mask + 1 > MIN_CAPACITY && this.count * 8 < this.mask + 1) this.resize((this.mask + 1) / 2)
    return true
  }

  /** mark `order[at]` deleted, step the head over deleted ids, and keep the array from filling with them */
  private unorder(at: number): void {
    const order = this.order
    order[at] = 0
    this.holes++
    while (this.head < order.length && order[this.head] === 0) {
      this.head++
      this.holes--
    }
    if (this.head === order.length) {
      // nothing left: start the array again (a store to an array's length is a runtime call: only when needed)
      if (order.length !== 0) order.length = 0
      this.head = 0
    } else if (this.head >= SHIFT_AT && this.head * 2 >= order.length) {
      // a queue's usual shape, drained at the head: what is left moves to the front, and every place with it
      const by = this.head
      order.copyWithin(0, by)
      order.length -= by
      this.head = 0
      const slots = this.slots
      for (let i = 0; i < slots.length; i += 3) if (slots[i] !== 0) slots[i + 1] = (slots[i + 1] as number) - by
    } else if (this.holes >= SHIFT_AT && this.holes * 2 >= order.length - this.head) {
      // acknowledged out of order, mostly: rebuild without the holes and give every id its new place
      const live: Array<number> = []
      for (let i = this.head; i < order.length; i++) {
        const id = order[i]
        if (id !== 0) {
          this.slots[this.slotOf(id) + 1] = live.length
          live.push(id)
        }
      }
      this.order = live
      this.head = 0
      this.holes = 0
    }
  }

  private resize(capacity: number): void {
    const old = this.slots
    this.slots = new Array(capacity * 3).fill(0)
    this.mask = capacity - 1
    for (let i = 0; i < old.length; i += 3) if (old[i] !== 0) this.place(old[i] as number, old[i + 1] as number, old[i + 2] as V)
    // the old table may be in old space: emptied, it keeps no message alive until a full collection
    old.length = 0
  }

  clear(): void {
    this.slots = new Array(MIN_CAPACITY * 3).fill(0)
    this.mask = MIN_CAPACITY - 1
    this.count = 0
    this.order = []
    this.head = 0
    this.holes = 0
  }

  /**
   * For tests: the table and the order agree. Every id in the table has its place in the order,
   * the order holds nothing else between the head and its end, and the counts are right.
   */
  consistent(): boolean {
    const slots = this.slots
    let inTable = 0
    for (let i = 0; i < slots.length; i += 3) {
      const id = slots[i] as number
      if (id === 0) continue
      inTable++
      const at = slots[i + 1] as number
      if (at < this.head || at >= this.order.length || this.order[at] !== id) return false
    }
    let inOrder = 0
    let zeros = 0
    for (let i = this.head; i < this.order.length; i++) {
      const id = this.order[i]
      if (id === 0) zeros++
      else if (this.slotOf(id) < 0) return false
      else inOrder++
    }
    return inTable === this.count && inOrder === this.count && zeros === this.holes && (this.head === this.order.length || this.order[this.head] !== 0)
  }

  *entries(): MapIterator<[number, V]> {
    const ids = this.order.slice(this.head)
    for (const id of ids) {
      if (id === 0) continue
      const s = this.slotOf(id)
      if (s >= 0) yield [id, this.slots[s + 2] as V]
    }
  }

  *keys(): MapIterator<number> {
    for (const [id] of this.entries()) yield id
  }

  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v
  }

  [Symbol.iterator](): MapIterator<[number, V]> {
    return this.entries()
  }

  forEach(callback: (value: V, key: number, map: ReadonlyMap<number, V>) => void, thisArg?: unknown): void {
    for (const [id, v] of this.entries()) callback.call(thisArg, v, id, this)
  }
}
