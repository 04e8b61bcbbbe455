/**
 * The operations the PacketIdMap and PacketIdSet property tests play against a
 * `Map` / `Set` model: a window's (set the next id, delete the oldest; a full
 * window sliding) mixed with deletes out of order, sets of ids present, ids
 * that collide in the table (the same low bits), ids across the whole range and
 * clears, long enough to grow and shrink the table and to renumber it.
 */
import * as fc from "fast-check"

export type Op =
  | { readonly op: "next" } // the window's send: the id after the last one set, skipping those present
  | { readonly op: "oldest" } // the window's acknowledgement in order
  | { readonly op: "set"; readonly id: number }
  | { readonly op: "delete"; readonly id: number }
  | { readonly op: "deletePresent"; readonly pick: number } // an acknowledgement out of order
  | { readonly op: "burst"; readonly n: number } // many sends at once: the table grows
  | { readonly op: "drain"; readonly keep: number } // many acknowledgements out of order: holes, a renumbering
  | { readonly op: "slide"; readonly window: number; readonly n: number } // a full window in steady state: send one, acknowledge the oldest
  | { readonly op: "clear" }

export const idArb = fc.oneof(
  fc.integer({ min: 1, max: 70 }),
  fc.integer({ min: 0, max: 2047 }).map((k) => 5 + 32 * k), // the same slot in the smallest table
  fc.integer({ min: 1, max: 65535 })
)

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.constant({ op: "next" as const }) },
  { weight: 6, arbitrary: fc.constant({ op: "oldest" as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("set" as const), id: idArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("delete" as const), id: idArb }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("deletePresent" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("burst" as const), n: fc.integer({ min: 1, max: 300 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("drain" as const), keep: fc.integer({ min: 1, max: 7 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("slide" as const), window: fc.integer({ min: 1, max: 40 }), n: fc.integer({ min: 1, max: 200 }) })
  },
  { weight: 1, arbitrary: fc.constant({ op: "clear" as const }) }
)

/** The structure under test and its model, driven together: the ids to pick from are the model's, in its order. */
export interface Driven {
  readonly model: { readonly size: number; has(id: number): boolean; keys(): Iterator<number> & Iterable<number> }
  /** set / add an id in both (`step`: the operation's number, for a value that changes) */
  readonly set: (id: number, step: number) => void
  /** delete an id from both (and compare what they answer) */
  readonly delete: (id: number) => void
  readonly clear: () => void
}

/** Play `ops` on both; `check` after each, with an id worth asking about (the one just used). */
export const play = (ops: ReadonlyArray<Op>, d: Driven, check: (probe: number) => void): void => {
  const model = d.model
  let last = 0
  let step = 0
  const next = () => {
    if (model.size >= 65535) return
    do last = last === 65535 ? 1 : last + 1
    while (model.has(last))
    d.set(last, step)
  }
  for (const op of ops) {
    step++
    switch (op.op) {
      case "next":
        next()
        break
      case "oldest": {
        const first = model.keys().next()
        if (!first.done) d.delete(first.value)
        break
      }
      case "set":
        d.set(op.id, step)
        break
      case "delete":
        d.delete(op.id)
        break
      case "deletePresent": {
        const ids = [...model.keys()]
        if (ids.length > 0) d.delete(ids[op.pick % ids.length])
        break
      }
      case "burst":
        for (let i = 0; i < op.n; i++) next()
        break
      case "slide":
        while (model.size < op.window) next()
        for (let i = 0; i < op.n; i++) {
          next()
          d.delete(model.keys().next().value!)
        }
        break
      case "drain":
        for (const [i, id] of [...model.keys()].entries()) if (i % op.keep !== 0) d.delete(id)
        break
      case "clear":
        d.clear()
        break
    }
    check(op.op === "set" || op.op === "delete" ? op.id : last)
  }
}
