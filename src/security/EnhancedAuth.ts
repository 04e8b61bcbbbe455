/**
 * MQTT 5 enhanced authentication (AUTH packets, Authentication Method /
 * Data) and server redirection, as a pluggable Effect service. Without it,
 * a CONNECT naming an Authentication Method is refused with 0x8C (Bad
 * authentication method) [MQTT-4.12.0-?].
 *
 * ```ts
 * const Challenge = EnhancedAuthentication.layer({
 *   methods: ["CHALLENGE"],
 *   step: ({ step, data }) =>
 *     Effect.succeed(step === 0 ? { _tag: "Continue", data: Buffer.from("nonce") }
 *       : data?.toString() === "answer" ? { _tag: "Success" } : { _tag: "Failure" })
 * })
 * ```
 */
import { Context, Effect, Layer } from "effect"

export interface AuthStepRequest {
  readonly clientId: string
  readonly username: string | undefined
  readonly password: Buffer | undefined
  readonly method: string
  readonly data: Buffer | undefined
  /** 0 for the CONNECT (or the AUTH 0x19 of a re-authentication), then 1, 2, ... */
  readonly step: number
  /** what the previous step returned as `state` */
  readonly state: unknown
  readonly reauthenticate: boolean
}

export type AuthStepResult =
  /** authenticated: CONNACK 0x00 (re-authentication: AUTH 0x00), with optional data and User Properties for the client */
  | {
      readonly _tag: "Success"
      readonly username?: string | undefined
      readonly data?: Buffer | undefined
      readonly userProperties?: Readonly<Record<string, string | ReadonlyArray<string>>> | undefined
    }
  /** AUTH 0x18 with this data; the client's answer comes back as the next step */
  | { readonly _tag: "Continue"; readonly data?: Buffer | undefined; readonly state?: unknown }
  /**
   * refused: CONNACK (or DISCONNECT) with this reason code, 0x87 Not authorized by default;
   * `reason` goes to the client as the Reason String (and to the log), `userProperties` as User Properties
   */
  | {
      readonly _tag: "Failure"
      readonly reasonCode?: number | undefined
      readonly reason?: string | undefined
      readonly userProperties?: Readonly<Record<string, string | ReadonlyArray<string>>> | undefined
    }
  /** server redirection: 0x9C Use another server, or 0x9D Server moved when permanent, with a Server Reference */
  | { readonly _tag: "Redirect"; readonly serverReference: string; readonly permanent: boolean }

export interface EnhancedAuthenticationService {
  /** the Authentication Methods this service understands */
  readonly methods: ReadonlyArray<string>
  readonly step: (request: AuthStepRequest) => Effect.Effect<AuthStepResult>
}

export class EnhancedAuthentication extends Context.Tag("midge/EnhancedAuthentication")<
  EnhancedAuthentication,
  EnhancedAuthenticationService
>() {
  static readonly layer = (service: EnhancedAuthenticationService): Layer.Layer<EnhancedAuthentication> =>
    Layer.succeed(EnhancedAuthentication, service)
}
