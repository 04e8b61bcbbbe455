#!/usr/bin/env node
// After `tsc`: the daemon and the command-line tools are bundled, each into one file that replaces
// tsc's output for that entry point, so that `node dist/main.js` (and `midge pub`, ...) loads one
// file instead of some hundreds of modules: the daemon starts in about a third of the time
// (docs/architecture.md). The library (`dist/index.js` and the modules it imports) stays tsc's
// output, unbundled, for applications that embed Midge.
import { build } from "esbuild"
import { rmSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const entries = ["main", "cli/midge", "cli/pub", "cli/sub", "cli/passwd"]

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
