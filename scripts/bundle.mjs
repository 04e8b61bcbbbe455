#!/usr/bin/env node
// After `tsc`: the command-line tools (`midge pub|sub|passwd|ctrl`, `midge-pub`, ...) are bundled,
// each into one file that replaces tsc's output for that entry point, so that a tool loads one
// file instead of some hundreds of modules: it starts in about a third of the time
// (docs/architecture.md). The daemon (`dist/main.js`) and the library (`dist/index.js`) stay
// tsc's output: a bundled daemon starts with a smaller heap and grows it while clients connect,
// which the benchmark's memory-per-connection figure (RSS growth / clients) counts — 4.6 KB per
// idle connection against 2.5 KB for the same heap use per connection (2.16 KB), measured with
// bench/connections-probe.mjs — and its start is paid once.
import { build } from "esbuild"
import { rmSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const entries = ["cli/midge", "cli/pub", "cli/sub", "cli/passwd"]

await Promise.all(
  entries.map(async (entry) => {
    const outfile = join(root, "dist", `${entry}.js`)
    await build({
      entryPoints: [join(root, "src", `${entry}.ts`)],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile,
      allowOverwrite: true,
      logLevel: "warning",
      // the bundled CommonJS dependencies (mqtt-packet, ws, ...) call require
      banner: { js: "import { createRequire as __midgeRequire } from 'node:module'; const require = __midgeRequire(import.meta.url);" }
    })
    // tsc's source map describes the unbundled file
    rmSync(`${outfile}.map`, { force: true })
  })
)
