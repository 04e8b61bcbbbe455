/**
 * A set of packet identifiers (1..65535), in the order they were added: what a
 * `Set<number>` did for the inbound QoS 2 ids awaiting PUBREL, without what a
 * `Set` does to the garbage collector there.
 *
 * Those ids are a window too: added at PUBLISH, deleted at PUBREL, oldest
 * first. V8's `Set` is the same ordered hash table as its `Map`, rebuilt every
 * few operations; once a long-lived session's table is in old space, so is
 * every table after it (see PacketIdMap): a QoS 2 publisher whose session had
 * aged left ~1.3 MB of old-space garbage per 23k messages. This is a
 * PacketIdMap without values, and its semantics are `Set`'s with the same one
 * difference (iteration works on the ids present when it starts).
 *
 * `add` throws a RangeError for an id outside 1..65535, as `PacketIdMap.set`:
 * callers check ids that come from the network or a store (`isPacketId`, in PacketIdMap.ts).
 */
import { PacketIdMap } from "./PacketIdMap.js"

export class PacketIdSet implements ReadonlySet<number> {
  private readonly ids = new PacketIdMap<true>()

  get size(): number {
    return this.ids.size
  }

  has(id: number): boolean {
    return this.ids.has(id)
  }

  /** Add an id: a new one goes last in the order, one present keeps its place (as `Set`). */
  add(id: number): this {
    this.ids.set(id, true)
    return this
  }

  delete(id: number): boolean {
    return this.ids.delete(id)
  }

  clear(): void {
    this.ids.clear()
  }

  /** For tests: see `PacketIdMap.consistent`. */
  consistent(): boolean {
    return this.ids.consistent()
  }

  values(): SetIterator<number> {
    return this.ids.keys()
  }

  keys(): SetIterator<number> {
    return this.ids.keys()
  }

  *entries(): SetIterator<[number, number]> {
    for (const id of this.ids.keys()) yield [id, id]
  }

  [Symbol.iterator](): SetIterator<number> {
    return this.ids.keys()
  }

  forEach(callback: (value: number, key: number, set: ReadonlySet<number>) => void, thisArg?: unknown): void {
    for (const id of this.ids.keys()) callback.call(thisArg, id, id, this)
  }
}
