/**
 * Helpers for the command-line tool tests: the built bins (`npm test`
 * builds first) and `midge <tool> ...`; processes, ports, a Debian
 * `mosquitto` and certificates come from test/support/processes.ts.
 */
import * as path from "node:path"
import { type Effect, type Scope } from "effect"
import { waitFor } from "../e2e/harness.js"
import { type Mosquitto, run, type RunOptions, type RunResult, startMosquitto as startDebianMosquitto } from "../support/processes.js"

export { freePort, listening, makeCertificates, run, spawnLive, tempDir } from "../support/processes.js"
export type { Certificates, Mosquitto, RunOptions, RunResult } from "../support/processes.js"
export { waitFor }

const dist = path.resolve(__dirname, "../../dist/cli")
export const bins = {
  midge: path.join(dist, "midge.js"),
  pub: path.join(dist, "pub.js"),
  sub: path.join(dist, "sub.js"),
  passwd: path.join(dist, "passwd.js")
}

/** `node dist/cli/midge.js <tool> ...` */
export const midge = (tool: "pub" | "sub" | "passwd", args: ReadonlyArray<string>, options?: RunOptions): Effect.Effect<RunResult> =>
  run("node", [bins.midge, tool, ...args], options)

/**
 * Debian's mosquitto on 127.0.0.1:<free port>, killed with the scope.
 * `config` lines follow `listener PORT 127.0.0.1`; `extra` listeners (each a
 * list of lines after `listener P 127.0.0.1`) get ports of their own.
 */
export const startMosquitto = (
  config: ReadonlyArray<string> = ["allow_anonymous true"],
  extra: ReadonlyArray<ReadonlyArray<string>> = []
): Effect.Effect<Mosquitto, never, Scope.Scope> => startDebianMosquitto(config, { extra })
