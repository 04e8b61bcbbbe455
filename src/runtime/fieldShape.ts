/**
 * Fields that change late in an object's life, made mutable on the first object.
 *
 * V8 treats a field of a class's objects as constant while no object has had
 * it changed after construction, and code it optimizes that builds such
 * objects depends on that. The first change anywhere discards all of that
 * code. A connection's fields change when it closes, so the first
 * disconnects in a broker's life threw away the compiled connect path
 * (`accept`, `completeConnect`, the session's and the socket's constructors,
 * ...), which V8 then compiled again: ~14 functions, about a third of a
 * second round's compile time (docs/performance.md, "Twentieth round").
 * The same goes for a number field that starts as a small integer and later
 * holds a time (`Date.now()`): the change of representation also makes new
 * hidden classes and moves every existing object to them.
 *
 * `settleFields(o, fields, times)` writes each named field once with another
 * value and then back, on the class's first object, before anything is
 * optimized: the fields are mutable from then on, `times` hold doubles, and
 * the late changes find nothing to discard. The values are unchanged
 * afterwards. Integer fields stay small integers (`n + 1`); booleans flip;
 * anything else goes through `null` (or `undefined` when it is `null`), so a
 * field that holds objects keeps holding "any object". A name that is not
 * an own field of `o` throws: adding it would give the first object a shape
 * of its own.
 */
export const settleFields = (o: object, fields: ReadonlyArray<string>, times: ReadonlyArray<string> = []): void => {
  const r = o as Record<string, unknown>
  for (const k of fields) {
    if (!Object.hasOwn(r, k)) throw new Error(`settleFields: no field ${k}`)
    const v = r[k]
    r[k] = typeof v === "boolean" ? !v : typeof v === "number" ? (v === 0x3fffffff ? 0 : v + 1) : v === null ? undefined : null
    r[k] = v
  }
  for (const k of times) {
    if (!Object.hasOwn(r, k)) throw new Error(`settleFields: no field ${k}`)
    const v = r[k]
    r[k] = typeof v === "number" ? v + 0.5 : 0.5
    r[k] = v
  }
}
