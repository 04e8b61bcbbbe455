/**
 * The real Mosquitto 2.0 (Debian's /usr/sbin/mosquitto with its
 * mosquitto_dynamic_security.so) on a free loopback port, for differential
 * tests: what Midge answers and allows is what Mosquitto does.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, type Scope } from "effect"
import { spawnScoped, waitFor } from "../../e2e/harness.js"
import { canConnect, freePort } from "../../support/processes.js"

export const MOSQUITTO = "/usr/sbin/mosquitto"
export const DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"

/** Mosquitto with the dynamic security plugin on `file`, killed with the scope. */
export const startMosquitto = (file: string, allowAnonymous = false): Effect.Effect<{ readonly port: number; readonly url: string }, Error, Scope.Scope> =>
  Effect.gen(function* () {
    const port = yield* freePort
    const conf = path.join(path.dirname(file), `mosquitto-${port}.conf`)
    fs.writeFileSync(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        `allow_anonymous ${allowAnonymous}`,
        "user root",
        "persistence false",
        "log_dest none",
        `plugin ${DYNSEC_PLUGIN}`,
        `plugin_opt_config_file ${file}`,
        ""
      ].join("\n")
    )
    yield* spawnScoped(MOSQUITTO, ["-c", conf])
    let up = false
    yield* waitFor(() => {
      void canConnect(port).then((ok) => (up ||= ok))
      return up
    }, "mosquitto to listen")
    return { port, url: `mqtt://127.0.0.1:${port}` }
  })
