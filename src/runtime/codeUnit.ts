/**
 * `s.charCodeAt(i)` without loading `charCodeAt` from `s`.
 *
 * V8 keeps, at each `s.charCodeAt` in the code, the hidden classes of the
 * strings it has seen there. Strings come in several (flat one- and two-byte,
 * internalized, concatenated, sliced, "thin" after use as a property key), and
 * a topic goes through the same validation and matching code whether it came
 * from a PUBLISH, a `$SYS` name, a bridge or the configuration. Past four
 * kinds the site is megamorphic, and optimized code calls the generic
 * `LoadIC` for every character: 20–23 % of the broker's CPU in QoS 0 fan-in
 * (docs/performance.md, "Twentieth round"). Calling the one function through
 * `call` gives the compiler a known target, which it turns into the
 * character read itself.
 */
const charCodeAt = String.prototype.charCodeAt

export const codeUnitAt = (s: string, i: number): number => charCodeAt.call(s, i)
