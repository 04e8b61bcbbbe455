/** Parsing config text in tests: a valid configuration, or the problems' lines. */
import { expect } from "@effect/vitest"
import { Effect, Either } from "effect"
import { type BrokerConfig, ConfigError, parseConfigText } from "../../src/config/Config.js"

export const configParsers = (file: string) => {
  const parse = (text: string): Either.Either<BrokerConfig, ConfigError> => Effect.runSync(Effect.either(parseConfigText(text, file)))
  /** the configuration; a problem fails the test with the file's lines */
  const ok = (text: string): BrokerConfig => {
    const r = parse(text)
    if (Either.isLeft(r)) throw new Error(`expected a valid config, got:\n${r.left.message}`)
    return r.right
  }
  /** the problems, one `file:line option: message` per element */
  const fails = (text: string): Array<string> => {
    const r = parse(text)
    if (Either.isRight(r)) throw new Error("expected a ConfigError")
    expect(r.left).toBeInstanceOf(ConfigError)
    return r.left.message.split("\n")
  }
  return { parse, ok, fails }
}
