/**
 * Another node's routes as this node knows them.
 *
 * Two sources keep them: the routes channel, whose changes are applied as they come, and the
 * heartbeat, which reads the node's route set from Redis (`SMEMBERS`) and repairs what a lost
 * notification left out. The two travel on different connections, so a change the channel
 * delivers while a read is on its way may be newer than what the read returns: a snapshot taken
 * before the node subscribed to `a/#`, applied after the channel's `+ a/#`, would undo it, and a
 * message published here until the next heartbeat would find no route there.
 *
 * So every change is numbered (`seq`, one counter for all nodes, taken by the caller), a read
 * remembers the number when it was sent (`since`), and a filter the channel touched after that
 * keeps the channel's state; every other filter takes the snapshot's.
 */
export class RouteView {
  readonly filters = new Set<string>()
  /** the filters the channel touched, with the number of its latest change to each */
  private readonly touched = new Map<string, number>()

  /** A change from the channel; true if the filter was added or removed. */
  change(op: "+" | "-", filter: string, seq: number): boolean {
    this.touched.set(filter, seq)
    if (op === "+") {
      if (this.filters.has(filter)) return false
      this.filters.add(filter)
      return true
    }
    return this.filters.delete(filter)
  }

  /**
   * A snapshot read from Redis, sent when the change counter was at `since`: the filters it
   * adds and removes here (already applied to `filters`).
   */
  sync(snapshot: Iterable<string>, since: number): { readonly added: ReadonlyArray<string>; readonly removed: ReadonlyArray<string> } {
    const wanted = new Set(snapshot)
    const added: Array<string> = []
    const removed: Array<string> = []
    for (const f of this.filters) {
      if (!wanted.has(f) && !this.newer(f, since)) removed.push(f)
    }
    for (const f of wanted) {
      if (!this.filters.has(f) && !this.newer(f, since)) added.push(f)
    }
    for (const f of removed) this.filters.delete(f)
    for (const f of added) this.filters.add(f)
    // what the channel changed before the read is in the snapshot (or superseded by it)
    for (const [f, seq] of this.touched) if (seq <= since) this.touched.delete(f)
    return { added, removed }
  }

  /** how many filters' latest change came after the last snapshot's read: what the next one must not undo */
  get pending(): number {
    return this.touched.size
  }

  clear(): void {
    this.filters.clear()
    this.touched.clear()
  }

  private newer(filter: string, since: number): boolean {
    return (this.touched.get(filter) ?? 0) > since
  }
}
