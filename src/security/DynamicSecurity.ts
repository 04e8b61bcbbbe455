/**
 * Dynamic security, compatible with Mosquitto 2.0's dynamic security plugin
 * (`mosquitto_dynamic_security.so`): clients, groups and roles with ACLs,
 * changed while the broker runs by JSON commands on
 * `$CONTROL/dynamic-security/v1` (answered on `.../response`), kept in
 * Mosquitto's JSON file. A file made by Mosquitto works here and the
 * reverse; `mosquitto_ctrl` and `midge ctrl` administer either broker.
 *
 * Two parts, because the command handler needs the broker and the broker
 * needs the security services:
 *
 * - {@link DynamicSecurity.layer} reads the file and provides
 *   `Authentication` and `Authorization` (the Tags of Auth.ts, which
 *   `Broker.make` picks up) and the {@link DynamicSecurity} service;
 * - {@link DynamicSecurity.serve} (needs `Broker`) takes the requests the
 *   broker hands to the request topic's control handler (control.ts: never
 *   routed, never retained) and answers; {@link DynamicSecurity.start} forks
 *   it in the current scope once the handler is registered.
 *
 * ```ts
 * const security = DynamicSecurity.layer({ configFile: "/etc/midge/dynsec.json" })
 * const broker = Broker.layer(options).pipe(Layer.provideMerge(security))
 * const main = Layer.scopedDiscard(DynamicSecurity.start).pipe(Layer.provideMerge(broker))
 * Layer.launch(main)
 * ```
 *
 * Authentication (dynsec's basic auth): a username must be a dynsec client
 * that is not disabled, whose client id (if it has one) is the connecting
 * client's, and whose PBKDF2-SHA512 password matches; otherwise "not
 * authorised" (0x05 / v5 0x87). A client without a username gets in only
 * with `allowAnonymous` (Mosquitto's `allow_anonymous`, default false), and
 * is checked against the anonymous group. A TLS listener's
 * `use_identity_as_username` / `use_subject_as_username` username is taken
 * as given, as Mosquitto does. Authorization: dynsec/access.ts.
 *
 * Only clients the ACLs allow may send commands: `$CONTROL/...` is never
 * allowed by default access, so the publish check drops a command from
 * anyone without a `publishClientSend` ACL for it before it reaches the
 * handler. Responses go to whoever may receive them (`publishClientReceive`).
 *
 * Each request is handled in order; changes apply to the in-memory model,
 * are saved atomically (dynsec/file.ts) and then answered. Clients whose
 * credentials stopped being valid are disconnected (v5 reason 0x98); other
 * changes reach connected clients through their live ACL checks.
 */
import { Cause, Context, Effect, Layer, Option, Queue, type Scope } from "effect"
import { Broker, type BrokerService } from "../Broker.js"
import type { BrokerConfig } from "../config/Config.js"
import { isDynsecPlugin } from "../config/internal/options.js"
import { anonymousByPort, type AuthDecision, type AuthResult, Authentication, type AuthenticationService, Authorization, type AuthorizationService, tlsUsernameOf } from "./Auth.js"
import { type ControlPlugin, registerControlHandler } from "./control.js"
import { DynsecClientAcl, DynsecState } from "./dynsec/access.js"
import { handleRequest, REQUEST_TOPIC, RESPONSE_TOPIC, type RequestOutcome } from "./dynsec/commands.js"
import { DynamicSecurityError, readModelFile, writeModelFile } from "./dynsec/file.js"
import type { Model } from "./dynsec/model.js"
import { DEFAULT_ITERATIONS, hashNewPassword } from "./dynsec/password.js"
import { checkPassword } from "./passwordHash.js"

export { DynamicSecurityError } from "./dynsec/file.js"
export { REQUEST_TOPIC, RESPONSE_TOPIC } from "./dynsec/commands.js"
export type { Model as DynamicSecurityModel } from "./dynsec/model.js"
export { DEFAULT_ITERATIONS, hashNewPassword } from "./dynsec/password.js"

export interface DynamicSecurityOptions {
  /** the JSON file (`plugin_opt_config_file`) */
  readonly configFile: string
  /** `allow_anonymous`: clients without a username get in; default false (Mosquitto 2) */
  readonly allowAnonymous?: boolean | undefined
  /** a listener's own allow_anonymous (Mosquitto 2.1's `listener_allow_anonymous`, or per_listener_settings), by port */
  readonly allowAnonymousByPort?: ReadonlyMap<number, boolean> | undefined
  /** PBKDF2 iterations for new passwords; default 101, as Mosquitto 2.0 */
  readonly iterations?: number | undefined
  /** entries of the file that were skipped */
  readonly onWarning?: ((message: string) => void) | undefined
}

/** What one request did. */
export interface ExecuteOutcome extends RequestOutcome {
  /** Mosquitto's `dynsec: ...` lines for the log */
  readonly log: ReadonlyArray<string>
  /** the changes are in memory but could not be saved */
  readonly saveError: DynamicSecurityError | undefined
}

export interface DynamicSecurityService {
  readonly configFile: string
  /** The model as it is now (do not change it: use `execute`). */
  readonly model: () => Model
  /** Runs a `$CONTROL/dynamic-security/v1` request: applies it, saves the file when it changed, returns the response. */
  readonly execute: (payload: string | Uint8Array) => Effect.Effect<ExecuteOutcome>
  /** Re-reads the file (after an offline edit); on an error nothing changes. */
  readonly reload: Effect.Effect<void, DynamicSecurityError>
  readonly authentication: AuthenticationService
  readonly authorization: AuthorizationService
}

const REFUSED: AuthResult = { ok: false, reason: "not-authorised" }

const decideWith = (state: DynsecState, allowAnonymous: boolean, byPort: ReadonlyMap<number, boolean> | undefined): AuthDecision => (request, done) => {
  const tls = tlsUsernameOf(request)
  if (tls !== undefined) return done(tls === null ? { ok: false, reason: "bad-credentials" } : { ok: true, username: tls })
  const username = request.username
  if (username === undefined) return done((byPort?.get(request.listenerPort) ?? allowAnonymous) ? { ok: true, username } : REFUSED)
  const client = state.model.clients.get(username)
  const pw = client?.password
  if (client === undefined || client.disabled || pw === undefined || request.password === undefined) return done(REFUSED)
  if (client.clientid !== undefined && client.clientid !== request.clientId) return done(REFUSED)
  checkPassword({ _tag: "Sha512Pbkdf2", iterations: pw.iterations, salt: pw.salt, hash: pw.hash }, request.password, (ok) => {
    if (ok === undefined) return done(undefined)
    // the client may have been disabled, deleted or given a new password while the hash ran
    const now = state.model.clients.get(username)
    done(ok && now !== undefined && !now.disabled && now.password === pw ? { ok: true, username } : REFUSED)
  })
}

/** Builds the service from the file. */
export const make = (options: DynamicSecurityOptions): Effect.Effect<DynamicSecurityService, DynamicSecurityError> =>
  Effect.gen(function* () {
    const file = options.configFile
    const warn = options.onWarning ?? (() => {})
    const state = new DynsecState(yield* readModelFile(file, warn))
    const iterations = options.iterations ?? DEFAULT_ITERATIONS
    const lock = yield* Effect.makeSemaphore(1)
    const hashPassword = (password: string) => hashNewPassword(password, iterations)

    const execute = (payload: string | Uint8Array): Effect.Effect<ExecuteOutcome> =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const log: Array<string> = []
          const outcome = handleRequest(state.model, payload, { hashPassword, log: (line) => log.push(line) })
          let saveError: DynamicSecurityError | undefined
          if (outcome.changed) {
            state.touch()
            saveError = yield* writeModelFile(file, state.model).pipe(
              Effect.as(undefined),
              Effect.catchAll((e) => Effect.succeed(e))
            )
          }
          return { ...outcome, log, saveError }
        })
      )

    const reload = lock.withPermits(1)(Effect.map(readModelFile(file, warn), (model) => state.replace(model)))

    return {
      configFile: file,
      model: () => state.model,
      execute,
      reload,
      authentication: Authentication.fromDecision(decideWith(state, options.allowAnonymous ?? false, options.allowAnonymousByPort)),
      authorization: Authorization.make((client) => new DynsecClientAcl(state, client))
    } satisfies DynamicSecurityService
  })

/** The clients connected with `username` (through dynsec's Authorization). */
const clientIdsOf = (broker: BrokerService, username: string): Array<string> => {
  const ids: Array<string> = []
  for (const clientId of broker.core.attached.keys()) {
    const acl = broker.core.sessions.get(clientId)?.acl
    if (acl instanceof DynsecClientAcl && acl.username === username) ids.push(clientId)
  }
  return ids
}

/** Handles one request message: execute, log, answer, disconnect. */
const serveOne = (service: DynamicSecurityService, broker: BrokerService, payload: Uint8Array) =>
  Effect.gen(function* () {
    const outcome = yield* service.execute(payload)
    const log = broker.core.log
    for (const line of outcome.log) log.info(line)
    if (outcome.saveError !== undefined) log.error(`Error saving Dynamic security plugin config: ${outcome.saveError.message}`)
    yield* broker.publish({ topic: RESPONSE_TOPIC, payload: outcome.response, qos: 0 }).pipe(Effect.orDie)
    for (const username of outcome.kick) {
      for (const clientId of clientIdsOf(broker, username)) yield* broker.disconnectClient(clientId, 0x98)
    }
  })

export class DynamicSecurity extends Context.Tag("midge/DynamicSecurity")<DynamicSecurity, DynamicSecurityService>() {
  static readonly make = make

  /** The service with Authentication and Authorization, from the file. */
  static readonly layer = (options: DynamicSecurityOptions): Layer.Layer<DynamicSecurity | Authentication | Authorization, DynamicSecurityError> =>
    Layer.effectContext(
      Effect.map(make(options), (service) =>
        Context.make(DynamicSecurity, service).pipe(Context.add(Authentication, service.authentication), Context.add(Authorization, service.authorization))
      )
    )

  /**
   * Answers `$CONTROL/dynamic-security/v1` until interrupted. Requests reach
   * it through the broker's control hook (control.ts), as Mosquitto hands
   * `$CONTROL/` messages to its plugin: they are never routed to subscribers
   * nor retained.
   */
  static readonly serve: Effect.Effect<never, never, DynamicSecurity | Broker> = Effect.scoped(
    Effect.gen(function* () {
      const requests = yield* register
      return yield* answer(requests)
    })
  )

  /** {@link serve} forked in the current scope; requests are taken from the moment it returns. */
  static readonly start: Effect.Effect<void, never, DynamicSecurity | Broker | Scope.Scope> = Effect.gen(function* () {
    const requests = yield* register
    yield* Effect.forkScoped(answer(requests))
  })
}

/**
 * What `listPlugins` on `$CONTROL/broker/v1` says of it: the name Mosquitto's plugin gives itself
 * (`mosquitto_plugin_set_info(identifier, "dynamic-security", NULL)` in plugins/dynamic-security/plugin.c,
 * Mosquitto 2.1), no version, no port (it applies to the whole broker).
 */
const PLUGIN: ControlPlugin = { name: "dynamic-security" }

/** Registers the request topic's control handler for the scope; requests queue up until answered. */
const register: Effect.Effect<Queue.Queue<Uint8Array>, never, Broker | Scope.Scope> = Effect.gen(function* () {
  const broker = yield* Broker
  const requests = yield* Effect.acquireRelease(Queue.unbounded<Uint8Array>(), Queue.shutdown)
  yield* Effect.acquireRelease(
    Effect.sync(() => registerControlHandler(broker.core, REQUEST_TOPIC, (m) => Queue.unsafeOffer(requests, m.payload), PLUGIN)),
    (unregister) => Effect.sync(unregister)
  )
  return requests
})

/** Answers the queued requests one by one, forever. */
const answer = (requests: Queue.Queue<Uint8Array>): Effect.Effect<never, never, DynamicSecurity | Broker> =>
  Effect.gen(function* () {
    const service = yield* DynamicSecurity
    const broker = yield* Broker
    return yield* Queue.take(requests).pipe(
      Effect.flatMap((payload) =>
        // a request that breaks the handler is logged; the next one is still answered
        serveOne(service, broker, payload).pipe(
          Effect.catchAllCause((cause) => Effect.sync(() => broker.core.log.error(`dynsec: error handling a request: ${Cause.pretty(cause)}`)))
        )
      ),
      Effect.forever
    )
  })

// ---------------------------------------------------------------------------
// mosquitto.conf

/** The plugin's file name, wherever its path points. */
export { isDynsecPlugin }

/**
 * The options a mosquitto.conf asks for: a `plugin` (or `auth_plugin` /
 * `global_plugin`) line naming the dynamic security plugin and the
 * `plugin_opt_config_file` (or `auth_opt_config_file`: conf.c takes either prefix) after it;
 * undefined without one. As Mosquitto, a
 * plugin without a config file is not activated (with a warning).
 */
export const optionsFromConfig = (config: BrokerConfig, onWarning?: (message: string) => void): DynamicSecurityOptions | undefined => {
  let inDynsec = false
  let seen: { file: string; line: number } | undefined
  let configFile: string | undefined
  for (const d of config.directives) {
    if (d.option === "plugin" || d.option === "auth_plugin" || d.option === "global_plugin") {
      inDynsec = isDynsecPlugin(d.value)
      if (inDynsec && seen === undefined) seen = { file: d.file, line: d.line }
    } else if (inDynsec && (d.option === "plugin_opt_config_file" || d.option === "auth_opt_config_file") && configFile === undefined) {
      configFile = d.value
    }
  }
  if (seen === undefined) return undefined
  if (configFile === undefined) {
    onWarning?.(`${seen.file}:${seen.line}: Warning: Dynamic security plugin has no plugin_opt_config_file defined. The plugin will not be activated.`)
    return undefined
  }
  return { configFile, allowAnonymous: config.allowAnonymous, allowAnonymousByPort: anonymousByPort(config) }
}

/** The layer for a mosquitto.conf, or None when it loads no dynamic security plugin. */
export const layerFromConfig = (
  config: BrokerConfig,
  onWarning?: (message: string) => void
): Option.Option<Layer.Layer<DynamicSecurity | Authentication | Authorization, DynamicSecurityError>> =>
  Option.map(Option.fromNullable(optionsFromConfig(config, onWarning)), (options) => DynamicSecurity.layer({ ...options, onWarning }))
