/**
 * Mosquitto's command line (`config__parse_args` in conf.c):
 * `-c/--config-file FILE`, `-d/--daemon`, `-h/--help`, `-p/--port PORT`
 * (up to 10 times), `-v/--verbose`. Messages keep Mosquitto's wording.
 */
import type { Problem } from "./lexer.js"

export interface CommandLine {
  readonly configFile: string | undefined
  readonly ports: ReadonlyArray<number>
  readonly verbose: boolean
  readonly daemon: boolean
  readonly help: boolean
}

/** conf.c's CMD_PORT_LIMIT */
export const CMD_PORT_LIMIT = 10

/** Mosquitto flags Midge knows of but does not implement yet. */
const NOT_YET: ReadonlySet<string> = new Set(["--tls-keylog", "-q", "--quiet", "--test-config", "--version"])

export const usage = [
  "midge is an MQTT v5.0/v3.1.1/v3.1 broker that reads mosquitto.conf.",
  "",
  "Usage: midge [-c config_file] [-d] [-h] [-p port] [-v]",
  "",
  " -c : specify the broker config file.",
  " -d : put the broker into the background after starting.",
  " -h : display this help.",
  " -p : start the broker listening on the specified port.",
  "      Not recommended in conjunction with the -c option.",
  " -v : verbose mode - enable all logging types. This overrides",
  "      any logging options given in the config file.",
  "",
  "See docs/configuration.md, and https://mosquitto.org/ for the options Midge shares with Mosquitto.",
  ""
].join("\n")

export const parseArgs = (
  argv: ReadonlyArray<string>
): { readonly ok: CommandLine } | { readonly problems: ReadonlyArray<Problem> } => {
  let configFile: string | undefined
  const ports: Array<number> = []
  let verbose = false
  let daemon = false
  const at = (i: number, option: string, message: string): Problem => ({ file: "command line", line: i + 1, option, message })
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    switch (arg) {
      case "-c":
      case "--config-file": {
        if (i + 1 >= argv.length) return { problems: [at(i, arg, "-c argument given, but no config file specified.")] }
        if (configFile !== undefined) return { problems: [at(i, arg, "only one config file may be given.")] }
        configFile = argv[++i]
        break
      }
      case "-d":
      case "--daemon":
        daemon = true
        break
      case "-h":
      case "--help":
        // conf.c prints the usage and stops at -h
        return { ok: { configFile, ports, verbose, daemon, help: true } }
      case "-p":
      case "--port": {
        if (i + 1 >= argv.length) return { problems: [at(i, arg, "-p argument given, but no port specified.")] }
        const text = argv[++i]
        const port = /^\d+$/.test(text) ? Number(text) : NaN
        if (!(port >= 1 && port <= 65535)) return { problems: [at(i - 1, arg, `Invalid port specified (${text}).`)] }
        if (ports.length === CMD_PORT_LIMIT) {
          return { problems: [at(i - 1, arg, `Only ${CMD_PORT_LIMIT} ports can be specified on the command line.`)] }
        }
        ports.push(port)
        break
      }
      case "-v":
      case "--verbose":
        verbose = true
        break
      default:
        return {
          problems: [at(i, arg, NOT_YET.has(arg) ? `'${arg}' is not supported yet by Midge.` : `Unknown option '${arg}'.`)]
        }
    }
  }
  return { ok: { configFile, ports, verbose, daemon, help: false } }
}
