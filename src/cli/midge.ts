#!/usr/bin/env node
/**
 * `midge`: `midge pub|sub|passwd|ctrl ...` run the command-line tools
 * (mosquitto_pub, mosquitto_sub and mosquitto_passwd's flags); anything
 * else is the broker daemon with Mosquitto's flags (`midge -c
 * mosquitto.conf`, `midge -p 1884 -v`), as `node dist/main.js` runs it.
 */
import { runTool } from "./runTool.js"

const [first, ...rest] = process.argv.slice(2)
if (first === "pub" || first === "sub" || first === "passwd") void runTool(first, `midge ${first}`, rest)
else if (first === "ctrl") {
  // mosquitto_ctrl's dynsec commands
  void import("./ctrl.js").then(({ runCtrl }) =>
    runCtrl(rest).then((code) => {
      process.exitCode = code
    })
  )
} else void import("../main.js")
