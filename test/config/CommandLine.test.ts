import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type CommandLine, ConfigError, parseCommandLine, resolveConfig, usage } from "../../src/config/Config.js"

const cl = (...argv: Array<string>): CommandLine => Either.getOrThrow(parseCommandLine(argv))

const clError = (...argv: Array<string>): ConfigError => {
  const r = parseCommandLine(argv)
  if (Either.isRight(r)) throw new Error("expected a ConfigError")
  expect(r.left.reason).toBe("InvalidCommandLine")
  return r.left
}

const confFile = (text: string): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-cli-"))
  const file = path.join(dir, "mosquitto.conf")
  fs.writeFileSync(file, text)
  return file
}

describe("parseCommandLine (Mosquitto's flags)", () => {
  it("no arguments", () => {
    expect(cl()).toEqual({ configFile: undefined, ports: [], verbose: false, daemon: false, help: false })
  })

  it("short and long forms", () => {
    expect(cl("-c", "/etc/m.conf", "-d", "-v", "-p", "1884")).toEqual({
      configFile: "/etc/m.conf",
      ports: [1884],
      verbose: true,
      daemon: true,
      help: false
    })
    expect(cl("--config-file", "a.conf", "--daemon", "--verbose", "--port", "2000")).toEqual(
      cl("-c", "a.conf", "-d", "-v", "-p", "2000")
    )
  })

  it("-p is repeatable, up to 10 times", () => {
    expect(cl("-p", "1883", "-p", "1884", "--port", "1885").ports).toEqual([1883, 1884, 1885])
    const ten = Array.from({ length: 10 }, (_, i) => ["-p", String(2000 + i)]).flat()
    expect(cl(...ten).ports).toHaveLength(10)
    expect(clError(...ten, "-p", "3000").message).toBe(
      "command line:21 -p: Only 10 ports can be specified on the command line."
    )
  })

  it("bad ports and missing values use Mosquitto's wording", () => {
    expect(clError("-p", "0").message).toBe("command line:1 -p: Invalid port specified (0).")
    expect(clError("-p", "65536").message).toBe("command line:1 -p: Invalid port specified (65536).")
    expect(clError("-p", "http").message).toBe("command line:1 -p: Invalid port specified (http).")
    expect(clError("-v", "-p").message).toBe("command line:2 -p: -p argument given, but no port specified.")
    expect(clError("-c").message).toBe("command line:1 -c: -c argument given, but no config file specified.")
  })

  it("an unknown flag is an error", () => {
    expect(clError("-x").message).toBe("command line:1 -x: Unknown option '-x'.")
    expect(clError("-v", "mosquitto.conf").message).toBe("command line:2 mosquitto.conf: Unknown option 'mosquitto.conf'.")
    expect(clError("--tls-keylog", "f").message).toBe("command line:1 --tls-keylog: '--tls-keylog' is not supported yet by Midge.")
  })

  it("-h stops parsing, as Mosquitto prints the usage at once", () => {
    expect(cl("-v", "-h", "--bogus").help).toBe(true)
    expect(usage).toContain("Usage: midge [-c config_file] [-d] [-h] [-p port] [-v]")
    for (const flag of [" -c :", " -d :", " -h :", " -p :", " -v :"]) expect(usage).toContain(flag)
  })
})

describe("resolveConfig (file + flags, as Mosquitto 2)", () => {
  it.effect("no -c: Mosquitto 2's defaults, loopback only", () =>
    Effect.gen(function* () {
      const c = yield* resolveConfig(cl())
      expect(c.localOnly).toBe(true)
      expect(c.listeners.map((l) => `${l.bindAddress}:${l.port}`)).toEqual(["127.0.0.1:1883", "::1:1883"])
    })
  )

  it.effect("-p without -c: each port on 127.0.0.1 and ::1, never on all interfaces", () =>
    Effect.gen(function* () {
      const c = yield* resolveConfig(cl("-p", "1884", "-p", "1885", "-p", "1884"))
      expect(c.listeners.map((l) => [l.bindAddress, l.port, l.bindOptional])).toEqual([
        ["127.0.0.1", 1884, true],
        ["::1", 1884, true],
        ["127.0.0.1", 1885, true],
        ["::1", 1885, true]
      ])
      expect(c.allowAnonymous).toBe(true)
    })
  )

  it.effect("-p with a config file that defines no listener: local-only on the -p ports, with the file's settings", () =>
    Effect.gen(function* () {
      const c = yield* resolveConfig(cl("-c", confFile("max_keepalive 30\n"), "-p", "1999"))
      expect(c.maxKeepalive).toBe(30)
      expect(c.listeners.map((l) => `${l.bindAddress}:${l.port}`)).toEqual(["127.0.0.1:1999", "::1:1999"])
    })
  )

  it.effect("-p with a config file that defines listeners: the -p ports are IGNORED, with a warning", () =>
    Effect.gen(function* () {
      const file = confFile("listener 1883\n")
      const c = yield* resolveConfig(cl("-c", file, "-p", "1999"))
      expect(c.listeners.map((l) => l.port)).toEqual([1883])
      expect(c.allowAnonymous).toBe(false)
      expect(c.warnings).toEqual([`${file}: -p 1999: ignored because the configuration file defines listeners (as Mosquitto 2)`])
    })
  )

  it.effect("-v sets log_type all, overriding the file", () =>
    Effect.gen(function* () {
      const c = yield* resolveConfig(cl("-c", confFile("log_type error\n"), "-v"))
      expect(c.logTypes).toContain("debug")
      expect(c.logTypes).toContain("subscribe")
      expect(c.logTypes).toHaveLength(8)
      const quiet = yield* resolveConfig(cl("-c", confFile("log_type error\n")))
      expect(quiet.logTypes).toEqual(["error"])
    })
  )

  it.effect("-c missing.conf is an error", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(resolveConfig(cl("-c", "missing.conf")))
      expect(error).toBeInstanceOf(ConfigError)
      expect(error._tag).toBe("ConfigError")
      expect(error.reason).toBe("MissingFile")
      expect(error.problems).toEqual([{ file: "missing.conf", line: 0, option: "", message: "unable to open config file" }])
    })
  )

  it.effect("-c on a directory is an error", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(resolveConfig(cl("-c", os.tmpdir())))
      expect(error.message).toBe(`${os.tmpdir()}: config file is a directory`)
    })
  )
})
