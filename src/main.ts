#!/usr/bin/env node
/**
 * The Midge daemon: argv → config → `Layer.launch(Broker.layer(...))`.
 * Flags as Mosquitto's: -c FILE, -p PORT (repeatable), -v, -d, -h.
 * SIGINT / SIGTERM interrupt the main fiber: listeners close, v5 clients get
 * DISCONNECT 0x8B, and the process exits 0.
 */
import { runMain } from "@effect/platform-node/NodeRuntime"
import { Effect, Either, Layer } from "effect"
import * as fs from "node:fs"
import { Broker, brokerOptionsFromConfig } from "./Broker.js"
import { parseCommandLine, resolveConfig, usage, type BrokerConfig } from "./config/Config.js"
import { Log, stderrSink, type LogSink } from "./log/Log.js"

const VERSION = "0.1.0"

const sinksFor = (config: BrokerConfig): Array<LogSink> => {
  const sinks: Array<LogSink> = []
  for (const dest of config.logDest) {
    switch (dest.kind) {
      case "stdout":
        sinks.push({ write: (_t, line) => void process.stdout.write(line + "\n") })
        break
      case "stderr":
        sinks.push(stderrSink)
        break
      case "file": {
        const path = dest.path!
        sinks.push({ write: (_t, line) => fs.appendFileSync(path, line + "\n") })
        break
      }
      case "none":
        break
      default:
        // syslog and topic destinations: not yet (reported as warnings by the config reader)
        break
    }
  }
  return sinks
}

const main = Effect.gen(function* () {
  const parsed = parseCommandLine(process.argv.slice(2))
  if (Either.isLeft(parsed)) {
    process.stderr.write(`Error: ${parsed.left.message}\n\n${usage}\n`)
    return process.exit(1)
  }
  const cl = parsed.right
  if (cl.help) {
    process.stdout.write(`mosquitto-compatible Midge version ${VERSION}\n\n${usage}\n`)
    return process.exit(0)
  }
  const config = yield* resolveConfig(cl).pipe(
    Effect.catchAll((error) =>
      Effect.sync(() => {
        process.stderr.write(`Error: ${error.message}\n`)
        return process.exit(1)
      })
    )
  )
  const log = new Log(config.logTypes, sinksFor(config), config.logTimestamp)
  for (const warning of config.warnings) log.warning(`Warning: ${warning}`)
  log.notice(`midge version ${VERSION} starting`)
  if (cl.configFile !== undefined) log.notice(`Config loaded from ${cl.configFile}.`)
  else log.notice("Using default config.")
  const layer = Broker.layer(brokerOptionsFromConfig(config, log))
  yield* Layer.launch(layer).pipe(
    Effect.catchTag("ListenError", (error) =>
      Effect.sync(() => {
        log.error(`Error: ${error.message}`)
        process.exitCode = 1
      })
    ),
    Effect.ensuring(Effect.sync(() => log.notice(`midge version ${VERSION} terminating`)))
  )
})

runMain(main, { disableErrorReporting: false })
