/**
 * What the three tools share: how they are run (argv in, exit code out,
 * output flushed before the process ends), Mosquitto's default options
 * files, and the outcome of reading a command line.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import type { Io } from "./client.js"
import { helpText, versionText, type ToolName } from "./help.js"
import type { ParseOutcome } from "./options.js"

export { VERSION, type ToolName } from "./help.js"

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
  const file = `mosquitto_${tool}`
  const dir = env.XDG_CONFIG_HOME ?? (env.HOME !== undefined ? path.join(env.HOME, ".config") : undefined)
  if (dir === undefined) return undefined
  try {
    return fs.readFileSync(path.join(dir, file), "utf8")
  } catch {
    return undefined
  }
}

/** Prints help, the version or an argument error as Mosquitto does: all of them exit 1. */
export const reportOutcome = (tool: ToolName, outcome: Exclude<ParseOutcome, { _tag: "Config" }>, env: ToolEnv): number => {
  switch (outcome._tag) {
    case "Help":
      env.io.stdout(helpText(tool, env.name))
      return 1
    case "Version":
      env.io.stdout(versionText(env.name))
      return 1
    case "Error":
      env.io.stderr(outcome.text + (outcome.usageHint ? `\nUse '${env.name} --help' to see usage.\n` : ""))
      return 1
  }
}

/** Reads a stream to the end. */
export const readAll = (stream: NodeJS.ReadableStream): Effect.Effect<Buffer, Error> =>
  Effect.async<Buffer, Error>((resume) => {
    const chunks: Array<Buffer> = []
    stream.on("data", (c: Buffer | string) => chunks.push(typeof c === "string" ? Buffer.from(c) : c))
    stream.once("end", () => resume(Effect.succeed(Buffer.concat(chunks))))
    stream.once("error", (e: Error) => resume(Effect.fail(e)))
  })

/**
 * Runs a tool as a process: its exit code becomes the process's once
 * stdout and stderr are flushed (output piped to another program is not cut
 * short).
 */
export const runAsProcess = (program: Effect.Effect<number>): void => {
  Effect.runPromise(program).then(
    (code) => exitAfterFlush(code),
    (error) => {
      process.stderr.write(`Error: ${error instanceof Error ? error.message : String(error)}\n`)
      exitAfterFlush(1)
    }
  )
}

const exitAfterFlush = (code: number) => {
  let pending = 2
  const done = () => {
    if (--pending === 0) process.exit(code)
  }
  process.stdout.write("", done)
  process.stderr.write("", done)
}
