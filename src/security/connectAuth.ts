/**
 * The bridge between the connection's CONNECT / AUTH handling (plain code,
 * callbacks) and the Authentication / EnhancedAuthentication services.
 *
 * A CONNECT runs no fiber when it need not: a service with a plain-callback
 * `decide` (the file-based and dynamic-security services) is called directly,
 * and an `authenticate` / `step` that returns an `Exit` (`Effect.succeed(...)`)
 * is read at once. Any other effect runs as one fiber of the broker's runtime
 * (a fiber per CONNECT was ~10 % of a connect's CPU; docs/performance.md).
 */
import { Effect, Exit, Option, Runtime } from "effect"
import { ConnackV4, ReasonCode } from "../protocol/reasonCodes.js"
import type { ConnectAuthOutcome, ConnectAuthRequest, ConnectionHooks } from "../session/Connection.js"
import type { AttachedConnection } from "../session/Core.js"
import type { AuthenticationService, AuthRequest, AuthResult } from "./Auth.js"
import type { AuthStepResult, EnhancedAuthenticationService } from "./EnhancedAuth.js"

const refuseOf = (result: Extract<AuthResult, { ok: false }>): ConnectAuthOutcome => {
  const told = { reasonString: result.reasonString, userProperties: result.userProperties }
  return result.reason === "bad-credentials"
    ? { _tag: "Refuse", v4Code: ConnackV4.BadUserNameOrPassword, v5Code: ReasonCode.BadUserNameOrPassword, why: "bad user name or password", ...told }
    : { _tag: "Refuse", v4Code: ConnackV4.NotAuthorized, v5Code: ReasonCode.NotAuthorized, why: "not authorised", ...told }
}

const stepOutcome = (
  result: AuthStepResult,
  next: (data: Buffer | undefined, state: unknown) => void,
  request: ConnectAuthRequest
): ConnectAuthOutcome => {
  switch (result._tag) {
    case "Success":
      return { _tag: "Accept", username: result.username ?? request.username, data: result.data, userProperties: result.userProperties }
    case "Continue":
      return { _tag: "Continue", data: result.data, next: (data) => next(data, result.state) }
    case "Failure":
      return {
        _tag: "Refuse",
        v4Code: ConnackV4.NotAuthorized,
        v5Code: result.reasonCode ?? ReasonCode.NotAuthorized,
        why: result.reason ?? "enhanced authentication failed",
        reasonString: result.reason,
        userProperties: result.userProperties
      }
    case "Redirect":
      return {
        _tag: "Refuse",
        v4Code: ConnackV4.ServerUnavailable,
        v5Code: result.permanent ? ReasonCode.ServerMoved : ReasonCode.UseAnotherServer,
        why: `redirected to ${result.serverReference}`,
        serverReference: result.serverReference
      }
  }
}

/** What the Authentication service is asked for a connection's CONNECT (at the CONNECT, and again after a reload). */
const authRequestOf = (request: ConnectAuthRequest): AuthRequest => ({
  clientId: request.clientId,
  username: request.username,
  password: request.password,
  listenerPort: request.listenerPort,
  remoteAddress: request.remoteAddress,
  ...request.tls
})

/** The `authenticate` hook for connections, or undefined when no service is provided. */
export const makeAuthHook = (
  runtime: Runtime.Runtime<never>,
  authentication: Option.Option<AuthenticationService>,
  enhanced: Option.Option<EnhancedAuthenticationService>,
  /** without an Authentication service: allow_anonymous of the client's listener */
  allowAnonymous: (listenerPort: number) => boolean
): ConnectionHooks["authenticate"] => {
  if (Option.isNone(authentication) && Option.isNone(enhanced)) return undefined
  const fork = Runtime.runFork(runtime)
  /** an effect the service made: an `Exit` needs no fiber; a failure is undefined */
  const run = <A>(make: () => Effect.Effect<A>, onDone: (a: A | undefined) => void): void => {
    let effect: Effect.Effect<A>
    try {
      effect = make()
    } catch {
      return onDone(undefined) // a service that throws instead of failing
    }
    if (Exit.isExit(effect)) {
      const exit = effect as Exit.Exit<A>
      return onDone(Exit.isSuccess(exit) ? exit.value : undefined)
    }
    fork(effect).addObserver((exit) => onDone(Exit.isSuccess(exit) ? exit.value : undefined))
  }

  const failed: ConnectAuthOutcome = { _tag: "Refuse", v4Code: ConnackV4.ServerUnavailable, v5Code: ReasonCode.UnspecifiedError, why: "authentication failed" }

  return (_conn, request, done) => {
    if (request.method !== undefined) {
      // v5 enhanced authentication: a method nobody understands is 0x8C
      const service = Option.getOrUndefined(enhanced)
      if (service === undefined || !service.methods.includes(request.method)) {
        return done({ _tag: "Refuse", v4Code: ConnackV4.NotAuthorized, v5Code: ReasonCode.BadAuthenticationMethod, why: `unsupported authentication method '${request.method}'` })
      }
      const method = request.method
      const step = (n: number, data: Buffer | undefined, state: unknown) =>
        run(
          () =>
            service.step({
              clientId: request.clientId,
              username: request.username,
              password: request.password,
              method,
              data,
              step: n,
              state,
              reauthenticate: request.reauthenticate === true
            }),
          (result) => done(result === undefined ? failed : stepOutcome(result, (d, s) => step(n + 1, d, s), request))
        )
      return step(0, request.data, undefined)
    }
    if (Option.isNone(authentication)) {
      return done(
        allowAnonymous(request.listenerPort) && request.username === undefined
          ? { _tag: "Accept", username: undefined }
          : { _tag: "Refuse", v4Code: ConnackV4.NotAuthorized, v5Code: ReasonCode.NotAuthorized, why: "not authorised" }
      )
    }
    const service = authentication.value
    const authRequest = authRequestOf(request)
    const decided = (result: AuthResult | undefined): void =>
      done(result === undefined ? failed : result.ok ? { _tag: "Accept", username: result.username, userProperties: result.userProperties } : refuseOf(result))
    const decide = service.decide
    if (decide === undefined) return run(() => service.authenticate(authRequest), decided)
    // the plain-callback decision: no fiber, no Effect
    let answered = false
    try {
      decide(authRequest, (result) => {
        answered = true
        decided(result)
      })
    } catch (error) {
      if (answered) throw error // thrown by the connection's own handling of the answer, not by the service
      decided(undefined)
    }
  }
}

/**
 * After a reload (SIGHUP), as Mosquitto's `mosquitto_security_apply`: the
 * CONNECT of every connected client is decided again by `authentication`
 * (with the credentials it connected with), and a client now refused
 * (`allow_anonymous false` for an anonymous client, a user gone from the
 * password file or with another password, a client id outside
 * `clientid_prefixes`) is disconnected: v5 DISCONNECT 0x87 Not authorized,
 * and its will goes as for any connection the broker closes. A client of v5
 * enhanced authentication is left to its method. Returns the client ids
 * disconnected.
 */
export const recheckConnected = (
  core: { readonly attached: ReadonlyMap<string, AttachedConnection> },
  authentication: AuthenticationService
): Effect.Effect<ReadonlyArray<string>> =>
  Effect.suspend(() => {
    const checks: Array<{ readonly clientId: string; readonly connection: AttachedConnection; readonly request: AuthRequest }> = []
    for (const [clientId, connection] of core.attached) {
      const r = connection.authRequest?.()
      if (r === undefined) continue
      checks.push({
        clientId,
        connection,
        request: authRequestOf(r)
      })
    }
    const decide = authentication.decide
    const decision = (request: AuthRequest): Effect.Effect<AuthResult | undefined> =>
      decide !== undefined ? Effect.async<AuthResult | undefined>((resume) => decide(request, (result) => resume(Effect.succeed(result)))) : authentication.authenticate(request).pipe(Effect.catchAllCause(() => Effect.succeed(undefined)))
    return Effect.forEach(
      checks,
      ({ clientId, connection, request }) =>
        Effect.map(decision(request), (result) => {
          // a failing service keeps the client: only a refusal disconnects
          if (result === undefined || result.ok) return undefined
          // still the connection that was checked (not one that took the client id over meanwhile)
          if (core.attached.get(clientId) !== connection) return undefined
          connection.kick(ReasonCode.NotAuthorized, "not authorised after a configuration reload")
          return clientId
        }),
      { concurrency: 16 }
    ).pipe(Effect.map((ids) => ids.filter((id): id is string => id !== undefined)))
  })
