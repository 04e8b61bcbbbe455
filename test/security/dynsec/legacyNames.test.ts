/**
 * The plugin options under their older names, as mosquitto.conf files written for Mosquitto 1.x
 * have them: `auth_plugin`, `auth_opt_*` and `auth_plugin_deny_special_chars`. One file is given
 * to Debian's Mosquitto 2.0 and to Midge's daemon (`node dist/main.js -c`): both load dynamic
 * security from it, and answer its clients alike.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { run } from "../../e2e/harness.js"
import { freePort, startDaemon, startMosquitto } from "../../support/processes.js"
import { admin, initFile, tmpDir } from "./harness.js"
import { DYNSEC_PLUGIN } from "./mosquittoHarness.js"

/** The lines after the listener's. */
const legacyLines = (file: string) =>
  [
    `auth_plugin ${DYNSEC_PLUGIN}`,
    `auth_opt_config_file ${file}`,
    // Mosquitto checks client ids and usernames for + and # only for plugins of version 2 to 4:
    // dynamic security (version 5) is not, in Mosquitto as in Midge
    "auth_plugin_deny_special_chars true",
    "allow_anonymous false"
  ]

/** What a client of the broker on `port` sees: an administrator whose client id has a +, and an anonymous client. */
const seen = (port: number) =>
  Effect.gen(function* () {
    const a = yield* admin(`mqtt://127.0.0.1:${port}`, "admin", "adminpw", { clientId: "ctl+1" })
    const listed = yield* a.run({ command: "listClients" })
    a.client.end(true)
    const anonymous = yield* run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-t", "t", "-m", "m"])
    return { listed, anonymous: { code: anonymous.code, stderr: anonymous.stderr.trim() } }
  })

const expected = {
  listed: { command: "listClients", data: { totalCount: 1, clients: ["admin"] } },
  anonymous: { code: 5, stderr: "Connection error: Connection Refused: not authorised.\nError: The connection was refused." }
}

describe("auth_plugin, auth_opt_*, auth_plugin_deny_special_chars", () => {
  it.scopedLive("Debian's Mosquitto 2.0 loads dynamic security from them", () =>
    Effect.gen(function* () {
      const file = initFile(tmpDir())
      // the listener first, then these lines
      const mosquitto = yield* startMosquitto(legacyLines(file))
      expect(yield* seen(mosquitto.port)).toEqual(expected)
    })
  )

  it.scopedLive("so does Midge's daemon, with no warning about them", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const file = initFile(dir)
      const port = yield* freePort
      const conf = path.join(dir, "mosquitto.conf")
      fs.writeFileSync(conf, ["user root", `listener ${port} 127.0.0.1`, ...legacyLines(file), ""].join("\n"))
      // returns once the daemon listens on the port
      const daemon = yield* startDaemon(["-c", conf], { port })
      expect(yield* seen(port)).toEqual(expected)
      expect(daemon.out.stderr).not.toMatch(/Warning/)
    })
  )
})
