/**
 * The dynamic security file on disk: read as Mosquitto reads it, written
 * the way `cJSON_Print` formats it (so a file goes back and forth between
 * Midge and Mosquitto and diffs stay small), atomically:
 *
 * - the new text goes to `<file>.new` (Mosquitto's temporary name), is
 *   fsync'd, renamed over the file, and the directory is fsync'd: a crash
 *   leaves the old file or the new one, never a mix;
 * - the file keeps its permission bits; a new file is 0600 (it holds
 *   password hashes);
 * - `createExclusive` (for `midge ctrl dynsec init`) never replaces an
 *   existing file: the finished temporary file is hard-linked into place.
 *
 * Unlike Mosquitto, a file that cannot be read or is not valid JSON is an
 * error rather than an empty configuration, so a typo cannot start a
 * broker nobody can administer, nor have its first change overwrite the
 * broken file. An empty file is an empty configuration, as in Mosquitto.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect, Schema } from "effect"
import { printFormatted, type Json } from "./json.js"
import { emptyModel, type Model, ModelFormatError, modelFromJson, modelToJson } from "./model.js"

export class DynamicSecurityError extends Schema.TaggedError<DynamicSecurityError>()("DynamicSecurityError", {
  reason: Schema.Literal("Read", "Parse", "Write", "Exists"),
  file: Schema.String,
  message: Schema.String
}) {}

const codeOf = (e: unknown): string => (e as { code?: string }).code ?? (e as Error).message

/** The model in the file; `warn` hears about the entries Mosquitto would skip. */
export const readModelFile = (file: string, warn: (message: string) => void = () => {}): Effect.Effect<Model, DynamicSecurityError> =>
  Effect.tryPromise({
    try: () => fs.readFile(file, "utf8"),
    catch: (e) => new DynamicSecurityError({ reason: "Read", file, message: `unable to read the dynamic security file '${file}' (${codeOf(e)})` })
  }).pipe(Effect.flatMap((text) => parseModelText(text, file, warn)))

/** The model in a file's text. */
export const parseModelText = (text: string, file: string, warn: (message: string) => void = () => {}): Effect.Effect<Model, DynamicSecurityError> =>
  Effect.suspend(() => {
    if (text.length === 0) return Effect.succeed(emptyModel())
    let tree: Json
    try {
      tree = JSON.parse(text) as Json
    } catch {
      return Effect.fail(new DynamicSecurityError({ reason: "Parse", file, message: `the dynamic security file '${file}' is not valid JSON` }))
    }
    try {
      return Effect.succeed(modelFromJson(tree, (m) => warn(`${file}: ${m}`)))
    } catch (e) {
      if (e instanceof ModelFormatError) return Effect.fail(new DynamicSecurityError({ reason: "Parse", file, message: `${file}: ${e.message}` }))
      throw e
    }
  })

/** The file's text for a model: Mosquitto's layout and key order. */
export const modelText = (model: Model): string => printFormatted(modelToJson(model))

const writeTemp = async (tmp: string, text: string, mode: number): Promise<void> => {
  const handle = await fs.open(tmp, "w", mode)
  try {
    await handle.writeFile(text, "utf8")
    await handle.chmod(mode)
    await handle.sync()
  } finally {
    await handle.close()
  }
}

const syncDir = async (file: string): Promise<void> => {
  let dir: fs.FileHandle | undefined
  try {
    dir = await fs.open(path.dirname(path.resolve(file)), "r")
    await dir.sync()
  } catch {
    // some file systems cannot fsync a directory; the rename is still atomic
  } finally {
    await dir?.close()
  }
}

/** Replaces the file's content atomically (temporary file, fsync, rename, fsync of the directory). */
export const writeFileAtomic = (file: string, text: string): Effect.Effect<void, DynamicSecurityError> =>
  Effect.tryPromise({
    try: async () => {
      const mode = await fs.stat(file).then(
        (s) => s.mode & 0o777,
        () => 0o600
      )
      const tmp = `${file}.new`
      try {
        await writeTemp(tmp, text, mode)
        await fs.rename(tmp, file)
      } catch (e) {
        await fs.rm(tmp, { force: true }).catch(() => {})
        throw e
      }
      await syncDir(file)
    },
    catch: (e) => new DynamicSecurityError({ reason: "Write", file, message: `unable to write the dynamic security file '${file}' (${codeOf(e)})` })
  })

/** Saves the model atomically. */
export const writeModelFile = (file: string, model: Model): Effect.Effect<void, DynamicSecurityError> =>
  Effect.suspend(() => writeFileAtomic(file, modelText(model)))

/** Creates the file with this text, failing with "Exists" if it is there already; the file appears complete or not at all. */
export const createExclusive = (file: string, text: string): Effect.Effect<void, DynamicSecurityError> =>
  Effect.tryPromise({
    try: async () => {
      const tmp = `${file}.new-${process.pid}`
      await writeTemp(tmp, text, 0o600)
      try {
        await fs.link(tmp, file)
      } finally {
        await fs.rm(tmp, { force: true }).catch(() => {})
      }
      await syncDir(file)
    },
    catch: (e) =>
      codeOf(e) === "EEXIST"
        ? new DynamicSecurityError({ reason: "Exists", file, message: `'${file}' already exists` })
        : new DynamicSecurityError({ reason: "Write", file, message: `unable to open '${file}' for writing (${codeOf(e)})` })
  })
