/**
 * mosquitto.conf text -> directives `{ file, line, option, args, value }`, as
 * conf.c's `config__read_file_core` reads lines: a `#` in the very first column
 * starts a comment, blank lines are skipped, trailing CR/LF and whitespace are
 * dropped, the option is the first space-separated token. `include_dir DIR` in
 * the main file splices in DIR's `*.conf` files, in Mosquitto's order
 * (`scmp_p`: case-insensitive, upper case before lower case of the same letter).
 */
import * as fs from "node:fs"
import * as path from "node:path"

export interface Directive {
  readonly file: string
  readonly line: number
  readonly option: string
  /** the value split on blanks */
  readonly args: ReadonlyArray<string>
  /** everything after the option name, trimmed: what Mosquitto reads for path and string options */
  readonly value: string
}

export interface Problem {
  readonly file: string
  readonly line: number
  readonly option: string
  readonly message: string
}

export interface Lexed {
  readonly directives: ReadonlyArray<Directive>
  readonly problems: ReadonlyArray<Problem>
  readonly warnings: ReadonlyArray<Problem>
}

const BLANK = /[ \t]+/

const lexLine = (raw: string, file: string, line: number): Directive | undefined => {
  // [MQTT conf] "All lines with a # as the very first character are treated as a comment."
  if (raw.length === 0 || raw.charCodeAt(0) === 35 /* # */) return undefined
  const text = raw.trim()
  if (text.length === 0) return undefined
  const space = text.search(BLANK)
  if (space < 0) return { file, line, option: text, args: [], value: "" }
  const value = text.slice(space).trim()
  return { file, line, option: text.slice(0, space), args: value.split(BLANK), value }
}

/** Split text into directives; a CR before the LF is dropped with the trailing whitespace, as conf.c does. */
export const lexText = (text: string, file: string): Array<Directive> => {
  const out: Array<Directive> = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const d = lexLine(lines[i], file, i + 1)
    if (d !== undefined) out.push(d)
  }
  return out
}

/** Mosquitto's `scmp_p`: order by upper-cased character, then upper case first. */
export const includeOrder = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i)
    const cb = b.charCodeAt(i)
    if (ca === cb) continue
    const ua = a[i].toUpperCase().charCodeAt(0)
    const ub = b[i].toUpperCase().charCodeAt(0)
    return ua !== ub ? ua - ub : ca - cb
  }
  return a.length - b.length
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

export type ReadResult =
  | { readonly _tag: "Text"; readonly text: string }
  | { readonly _tag: "Unreadable"; readonly message: string }
  | { readonly _tag: "BadUtf8"; readonly line: number; readonly option: string }

/** Read a config file as UTF-8 (conf.c rejects malformed UTF-8); sync reads are fine at startup. */
export const readConfigFile = (file: string): ReadResult => {
  let buf: Buffer
  try {
    if (fs.statSync(file).isDirectory()) return { _tag: "Unreadable", message: "config file is a directory" }
    buf = fs.readFileSync(file)
  } catch {
    return { _tag: "Unreadable", message: "unable to open config file" }
  }
  try {
    return { _tag: "Text", text: utf8.decode(buf) }
  } catch {
    const lines = buf.toString("latin1").split("\n")
    let i = 0
    for (; i < lines.length; i++) {
      try {
        utf8.decode(Buffer.from(lines[i], "latin1"))
      } catch {
        break
      }
    }
    return { _tag: "BadUtf8", line: i + 1, option: (lines[i] ?? "").trim().split(BLANK)[0] }
  }
}

/** The problem for a file that could not be read: on the `include_dir` line `at`, or on the file itself. */
export const readProblem = (file: string, read: Exclude<ReadResult, { _tag: "Text" }>, at?: Directive): Problem => {
  if (read._tag === "BadUtf8") return { file, line: read.line, option: read.option, message: "malformed UTF-8" }
  return at === undefined
    ? { file, line: 0, option: "", message: read.message }
    : { file: at.file, line: at.line, option: at.option, message: `${read.message}: ${file}` }
}

/**
 * Lex the main file and splice in `include_dir` files. Included files may not
 * include further (conf.c only processes include_dir at level 0); Midge says so
 * in a warning instead of ignoring the line silently.
 */
export const lexMain = (text: string, file: string): Lexed => {
  const directives: Array<Directive> = []
  const problems: Array<Problem> = []
  const warnings: Array<Problem> = []
  for (const d of lexText(text, file)) {
    directives.push(d)
    if (d.option !== "include_dir") continue
    if (d.value.length === 0) {
      problems.push({ file: d.file, line: d.line, option: d.option, message: "missing directory" })
      continue
    }
    let names: Array<string>
    try {
      names = fs.readdirSync(d.value)
    } catch {
      problems.push({ file: d.file, line: d.line, option: d.option, message: `unable to open include_dir '${d.value}'` })
      continue
    }
    const confs = names.filter((n) => n.length > 5 && n.endsWith(".conf")).sort(includeOrder)
    for (const name of confs) {
      const included = path.join(d.value, name)
      const read = readConfigFile(included)
      if (read._tag !== "Text") {
        problems.push(readProblem(included, read, d))
        continue
      }
      for (const inner of lexText(read.text, included)) {
        directives.push(inner)
        if (inner.option === "include_dir") {
          warnings.push({
            file: inner.file,
            line: inner.line,
            option: inner.option,
            message: "ignored: include_dir is only processed in the main configuration file (as Mosquitto)"
          })
        }
      }
    }
  }
  return { directives, problems, warnings }
}
