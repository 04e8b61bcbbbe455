/**
 * Runs one of the tools as this process: `midge pub|sub|passwd ...` and the
 * `midge-pub`, `midge-sub`, `midge-passwd` bins end up here.
 */
import type { ToolName } from "./internal/help.js"
import { processIo, runAsProcess, type ToolEnv } from "./internal/tool.js"

export const runTool = async (tool: ToolName, name: string, argv: ReadonlyArray<string>): Promise<void> => {
  const env: ToolEnv = { name, io: processIo, env: process.env, stdin: process.stdin }
  switch (tool) {
    case "pub": {
      const { runPub } = await import("./internal/pubTool.js")
      return runAsProcess(runPub(argv, env))
    }
    case "sub": {
      const { runSub } = await import("./internal/subTool.js")
      return runAsProcess(runSub(argv, env, { signals: ["SIGINT", "SIGTERM"] }))
    }
    case "passwd": {
      const { runPasswd } = await import("./internal/passwdTool.js")
      return runAsProcess(runPasswd(argv, env))
    }
  }
}
