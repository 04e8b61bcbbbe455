/**
 * Bridge test helpers: a real Debian mosquitto for a bridge to connect to
 * (test/support/processes.ts, with anonymous clients allowed), and bridge
 * configs from mosquitto.conf text.
 */
import { Effect, Either, type Scope } from "effect"
import { type BridgeConfig, decodeBridges } from "../../src/bridge/Bridge.js"
import { lexText } from "../../src/config/internal/lexer.js"
import { type Mosquitto, startMosquitto as startDebianMosquitto } from "../support/processes.js"

export { freePort, makeCertificates, MOSQUITTO, tempDir } from "../support/processes.js"
export type { Certificates, Mosquitto } from "../support/processes.js"

/**
 * Debian's mosquitto with `listener PORT 127.0.0.1`, `allow_anonymous true`
 * and `lines`, killed with the scope; it can be killed and started again on
 * the same port. `port` defaults to a free one.
 */
export const startMosquitto = (lines: ReadonlyArray<string>, port?: number): Effect.Effect<Mosquitto, never, Scope.Scope> =>
  startDebianMosquitto(["allow_anonymous true", ...lines], port === undefined ? {} : { port })

/** The bridges of a mosquitto.conf text (throws on a config error). */
export const bridgesOf = (text: string): ReadonlyArray<BridgeConfig> => {
  const r = decodeBridges(lexText(text, "bridge.conf"), "testhost")
  if (Either.isLeft(r)) throw new Error(r.left.message)
  return r.right
}
