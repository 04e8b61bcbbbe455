/**
 * Runs one of the tools as this process: `midge pub|sub|passwd ...` and the
 * `midge-pub`, `midge-sub`, `midge-passwd` bins end up here. The command
 * line is read first, with nothing heavy loaded; Effect and MQTT.js are
 * loaded only to run it.
 */
import { parsePasswdArgs } from "./internal/passwdArgs.js"
import { parseClientArgs } from "./internal/options.js"
import { exitAfterFlush, processIo, readDefaultOptionsFile, reportOutcome, type ToolEnv } from "./internal/tool.js"
import type { ToolName } from "./internal/version.js"

const runEffect = async (program: import("effect").Effect.Effect<number>): Promise<number> => {
  const { runPromise } = await import("effect/Effect")
  return runPromise(program)
}

const run = async (tool: ToolName, env: ToolEnv, argv: ReadonlyArray<string>): Promise<number> => {
  if (tool === "passwd") {
    const parsed = parsePasswdArgs(argv)
    if (parsed._tag === "Error") {
      env.io.stderr(parsed.text)
      return 1
    }
    const { runPasswd } = await import("./internal/passwdTool.js")
    return runEffect(runPasswd(parsed, env))
  }
  const outcome = parseClientArgs(tool, argv, readDefaultOptionsFile(tool, env.env))
  if (outcome._tag !== "Config") return reportOutcome(tool, outcome, env)
  if (tool === "pub") {
    const { runPub } = await import("./internal/pubTool.js")
    return runEffect(runPub(outcome.config, env))
  }
  const { runSub } = await import("./internal/subTool.js")
  return runEffect(runSub(outcome.config, env, { signals: ["SIGINT", "SIGTERM"] }))
}

export const runTool = (tool: ToolName, name: string, argv: ReadonlyArray<string>): void => {
  const env: ToolEnv = { name, io: processIo, env: process.env, stdin: process.stdin }
  run(tool, env, argv).then(exitAfterFlush, (error) => {
    process.stderr.write(`Error: ${error instanceof Error ? error.message : String(error)}\n`)
    exitAfterFlush(1)
  })
}
