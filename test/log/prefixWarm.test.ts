/**
 * The log's timestamp prefix changes once a second, too rarely for V8 to have seen that branch
 * before it compiles `log` (and the listener's `accept`, which inlines it): the first new second
 * then threw the compiled code away. A Log made when the module loads takes the branch first (`warmPrefix`,
 * src/log/Log.ts). V8's side is checked in a Node child with `--allow-natives-syntax` on the built
 * modules (npm test builds first).
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath, pathToFileURL } from "node:url"
import { describe, expect, it } from "@effect/vitest"

const child = fileURLToPath(new URL("./prefixWarm.child.mjs", import.meta.url))
const dist = pathToFileURL(fileURLToPath(new URL("../../dist", import.meta.url))).href

describe("the log's timestamp prefix", () => {
  it("keeps log's optimized code when the second changes; each line carries its own second", () => {
    const out = execFileSync(process.execPath, ["--allow-natives-syntax", "--no-concurrent-recompilation", child, dist], { encoding: "utf8" })
    const results = JSON.parse(out.trim().split("\n").at(-1)!) as Record<string, { optimized: boolean; stillOptimized: boolean; line: string }> & { first: string }
    // the control: the same code without the warm-up loses its optimized code at the new second
    expect(results.plain).toEqual({ optimized: true, stillOptimized: false, line: "1795000001: x" })
    expect(results.log).toEqual({ optimized: true, stillOptimized: true, line: "1795000001: x" })
    // the first line has the clock's second, whatever the warm-up made
    expect(results.first).toBe("1795000000: first line")
  })
})
