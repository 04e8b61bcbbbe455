/**
 * What the three tools share: how they run (argv in, exit code out, output
 * flushed before the process ends), Mosquitto's default options files, and
 * reporting a command line that is not run (help, version, errors). Nothing
 * here loads Effect, MQTT.js or @effect/cli, so a mistyped flag is reported
 * at once.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { Io } from "./client.js"
import type { ParseOutcome } from "./options.js"
import { VERSION, type ToolName } from "./version.js"

/** The environment a tool runs in; the bins pass the process's, tests their own. */
export interface ToolEnv {
  /** how the user called it, for messages: `midge pub` or `midge-pub` */
  readonly name: string
  readonly io: Io
  readonly env: Readonly<Record<string, string | undefined>>
  readonly stdin: NodeJS.ReadableStream
}

export const processIo: Io = {
  stdout: (chunk) => void process.stdout.write(chunk),
  stderr: (text) => void process.stderr.write(text)
}

/**
 * Mosquitto's default options file: `$XDG_CONFIG_HOME/mosquitto_pub`, else
 * `$HOME/.config/mosquitto_pub` (and `mosquitto_sub`), so a user's defaults
 * apply to `midge pub` as they do to `mosquitto_pub`.
 */
export const readDefaultOptionsFile = (tool: "pub" | "sub", env: ToolEnv["env"]): string | undefined => {
  const dir = env.XDG_CONFIG_HOME ?? (env.HOME !== undefined ? path.join(env.HOME, ".config") : undefined)
  if (dir === undefined) return undefined
  try {
    return fs.readFileSync(path.join(dir, `mosquitto_${tool}`), "utf8")
  } catch {
    return undefined
  }
}

export const versionText = (name: string): string => `${name} version ${VERSION} (Midge, mosquitto-compatible).\n`

/** Prints help, the version or an argument error as Mosquitto does: all of them exit 1. */
export const reportOutcome = async (tool: ToolName, outcome: Exclude<ParseOutcome, { _tag: "Config" }>, env: ToolEnv): Promise<number> => {
  switch (outcome._tag) {
    case "Help": {
      const { helpText } = await import("./help.js")
      env.io.stdout(helpText(tool, env.name))
      return 1
    }
    case "Version":
      env.io.stdout(versionText(env.name))
      return 1
    case "Error":
      env.io.stderr(outcome.text + (outcome.usageHint ? `\nUse '${env.name} --help' to see usage.\n` : ""))
      return 1
  }
}

/** Ends the process with `code` once stdout and stderr are flushed (output piped to another program is not cut short). */
export const exitAfterFlush = (code: number): void => {
  let pending = 2
  const done = () => {
    if (--pending === 0) process.exit(code)
  }
  process.stdout.write("", done)
  process.stderr.write("", done)
}
