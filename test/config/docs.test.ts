/**
 * docs/configuration.md and the parser must agree: every option the parser
 * knows is documented with the same status, and every documented option is
 * known to the parser.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { knownOptions, parseConfigText } from "../../src/config/Config.js"

const doc = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), "../../docs/configuration.md"), "utf8")

/** Rows of the option tables: `| \`name\` | meaning | default | status |`. */
const documented = (): Map<string, string> => {
  const rows = new Map<string, string>()
  for (const line of doc.split("\n")) {
    const m = /^\| `([^`]+)` \|.*\| ([^|]+) \|$/.exec(line)
    if (m === null || m[1].startsWith("-")) continue
    expect(rows.has(m[1]), `${m[1]} documented twice`).toBe(false)
    rows.set(m[1], m[2].trim())
  }
  return rows
}

describe("docs/configuration.md", () => {
  it("documents every option the parser knows, with the parser's status", () => {
    const rows = documented()
    for (const o of knownOptions) expect([o.name, rows.get(o.name)]).toEqual([o.name, o.status])
  })

  it("documents no option the parser does not know", () => {
    const known = new Set(knownOptions.map((o) => o.name))
    for (const name of documented().keys()) expect([name, known.has(name)]).toEqual([name, true])
    expect(documented().size).toBe(knownOptions.length)
  })

  it("statuses are supported / not yet / Midge-only", () => {
    for (const status of documented().values()) expect(["supported", "not yet", "Midge-only"]).toContain(status)
  })

  it("every documented option parses as a known option (never 'unknown option')", () => {
    for (const name of documented().keys()) {
      const option = name.endsWith("*") ? name.replace("*", "key") : name
      const text = `listener 1883\nconnection b\nplugin /p/mosquitto_dynamic_security.so\n${option} 1\n`
      const r = Effect.runSync(Effect.either(parseConfigText(text, "doc.conf")))
      if (Either.isLeft(r)) expect(r.left.message).not.toContain("unknown option")
    }
  })

  it("documents the command-line flags", () => {
    for (const flag of ["`-c FILE`", "`-d`", "`-h`", "`-p PORT`", "`-v`"]) expect(doc).toContain(flag)
  })
})
