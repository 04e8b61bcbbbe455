/**
 * Authentication and authorisation as Effect services, so an application can
 * replace either with its own layer:
 *
 * - {@link Authentication}: one decision per CONNECT, `authenticate` (an
 *   Effect, may be slow — password hashes are) or the same as a plain
 *   callback, `decide`, which spares the CONNECT a fiber;
 * - {@link Authorization}: `forClient` once per connection returns a
 *   {@link ClientAcl} whose checks are plain synchronous calls, made on the
 *   hot path (`canReceive` per message per subscriber);
 * - {@link SecurityFiles}: `reload` re-reads the files on SIGHUP. Clients stay
 *   connected; their ClientAcl sees the new rules on its next check.
 *
 * {@link layerFromConfig} is Mosquitto 2.0's default security
 * (`password_file`, `acl_file`, `allow_anonymous`, `clientid_prefixes`,
 * `per_listener_settings`), {@link allowAll} lets everything through. The
 * decisions and the CONNACK codes are Mosquitto's (`src/security.c`,
 * `src/security_default.c`, `src/handle_connect.c`), checked against
 * Mosquitto 2.0.11:
 *
 * - `clientid_prefixes` (global): a client id without the prefix is refused;
 * - a TLS listener with `use_identity_as_username` / `use_subject_as_username`
 *   takes the username from the certificate (or the PSK identity) and checks
 *   no password; no identity is "bad-credentials" (0x04 / v5 0x86);
 * - without a password_file, `allow_anonymous true` lets everyone in (a
 *   username is taken as given, unchecked) and `false` refuses everyone;
 * - with one, a known user with the right password gets in; an anonymous
 *   client gets in when `allow_anonymous` is true; everything else is
 *   "not-authorised" (0x05 / v5 0x87) — Mosquitto answers a wrong password
 *   with "not authorised", not "bad username or password".
 *
 * SUBSCRIBE with an acl_file (Midge's default, `acl_subscribe_check
 * read-access`): a filter no read rule can match is refused, SUBACK 0x80 /
 * v5 0x87; Mosquitto grants every SUBSCRIBE and only filters deliveries
 * (`acl_subscribe_check mosquitto`). Deliveries are read-checked either way.
 */
import { Context, Effect, Layer, Schema } from "effect"
import type { BrokerConfig } from "../config/Config.js"
import { parseSharedFilter } from "../protocol/topic.js"
import {
  type AclFile,
  type AclFileError,
  ALLOWED,
  BLOCKED,
  type ClientRules,
  compileClientRules,
  compileUserRules,
  decide,
  decideSubscribe,
  type Decision,
  DENIED,
  dollarAllows,
  readAclFile,
  READ,
  WRITE
} from "./aclFile.js"
import { type HashedEntry, readPasswordFile } from "./passwordFile.js"
import { checkPassword } from "./passwordHash.js"

// ---------------------------------------------------------------------------
// Authentication

export interface AuthRequest {
  /** after auto-assignment for an empty client id */
  readonly clientId: string
  readonly username: string | undefined
  readonly password: Buffer | undefined
  /** the listener the client came in on (per_listener_settings) */
  readonly listenerPort: number
  readonly remoteAddress: string | undefined
  /** RFC 2253 subject of the verified client certificate (TLS listeners) */
  readonly certificateSubject?: string | undefined
  /** CN of the verified client certificate */
  readonly certificateCommonName?: string | undefined
  /** identity of a TLS-PSK connection */
  readonly pskIdentity?: string | undefined
  /**
   * The listener's `use_identity_as_username` ("identity": the certificate
   * CN, or the PSK identity on a PSK connection) or `use_subject_as_username`
   * ("subject"): the username comes from TLS and no password is checked.
   */
  readonly tlsUsername?: "identity" | "subject" | undefined
}

export type AuthResult =
  | {
      readonly ok: true
      readonly username: string | undefined
      /** MQTT 5 clients: User Properties on the CONNACK (ignored for 3.1 / 3.1.1) */
      readonly userProperties?: Readonly<Record<string, string | ReadonlyArray<string>>> | undefined
    }
  /** bad-credentials: CONNACK 0x04 (v5 0x86); not-authorised: 0x05 (v5 0x87) */
  | {
      readonly ok: false
      readonly reason: "bad-credentials" | "not-authorised"
      /** MQTT 5 clients: a Reason String on the CONNACK, e.g. why or what to do (3.1 / 3.1.1 have no place for it) */
      readonly reasonString?: string | undefined
      /** MQTT 5 clients: User Properties on the CONNACK */
      readonly userProperties?: Readonly<Record<string, string | ReadonlyArray<string>>> | undefined
    }

/**
 * A CONNECT decision as a plain callback: `done` is called once, synchronously
 * when nothing needs waiting for; undefined means the service failed (as a
 * failed `authenticate`: CONNACK 0x03 / v5 0x80).
 */
export type AuthDecision = (request: AuthRequest, done: (result: AuthResult | undefined) => void) => void

export interface AuthenticationService {
  /** Decides a CONNECT; the username in the result is the one ACLs use. */
  readonly authenticate: (request: AuthRequest) => Effect.Effect<AuthResult>
  /**
   * The same decision as `authenticate`, as a plain callback. When present the
   * broker calls it instead of `authenticate` on each CONNECT, so a connect
   * runs no fiber (the file-based and dynamic-security services have it; see
   * {@link Authentication.fromDecision}). Without it, an `authenticate` that
   * returns an `Exit` (`Effect.succeed(...)`) is read at once, anything else runs
   * as a fiber of the broker's runtime.
   */
  readonly decide?: AuthDecision | undefined
}

export class Authentication extends Context.Tag("midge/Authentication")<Authentication, AuthenticationService>() {
  static readonly make = (authenticate: AuthenticationService["authenticate"]): AuthenticationService => ({ authenticate })
  /** A service from a plain-callback decision: `decide` for the broker, `authenticate` its Effect form. */
  static readonly fromDecision = (decide: AuthDecision): AuthenticationService => ({
    authenticate: (request) =>
      Effect.async<AuthResult>((resume) =>
        decide(request, (result) => resume(result === undefined ? Effect.dieMessage("authentication failed") : Effect.succeed(result)))
      ),
    decide
  })
  static readonly layer = (authenticate: AuthenticationService["authenticate"]): Layer.Layer<Authentication> =>
    Layer.succeed(Authentication, Authentication.make(authenticate))
}

// ---------------------------------------------------------------------------
// Authorization

/** The checks of one connected client; synchronous, cheap, called on the hot path. */
export interface ClientAcl {
  /** PUBLISH (wills too); a denied PUBLISH is dropped, v5 acks say 0x87 */
  canPublish(topic: string): boolean
  /** SUBSCRIBE (a shared filter as sent, `$share/<group>/` included); denied: SUBACK 0x80 (v5 0x87) */
  canSubscribe(filter: string): boolean
  /**
   * UNSUBSCRIBE (dynamic security's `unsubscribeLiteral` / `unsubscribePattern`);
   * denied: the subscription stays, v5 UNSUBACK says 0x87 (3.1.1 has no code
   * to say it). Absent: every UNSUBSCRIBE is allowed.
   */
  canUnsubscribe?(filter: string): boolean
  /** delivery of a message on `topic`, retained ones included */
  canReceive(topic: string): boolean
}

export interface AuthClient {
  readonly clientId: string
  /** the username Authentication returned */
  readonly username: string | undefined
  /** per_listener_settings: the listener whose acl_file applies */
  readonly listenerPort?: number | undefined
  /**
   * The broker's log at notice level (the Broker gives it), for the lines Mosquitto's checks write:
   * the acl_file's `ACL denying access to client with dangerous username "..."` (or client id)
   */
  readonly notice?: ((message: string) => void) | undefined
}

export interface AuthorizationService {
  readonly forClient: (client: AuthClient) => ClientAcl
}

export class Authorization extends Context.Tag("midge/Authorization")<Authorization, AuthorizationService>() {
  static readonly make = (forClient: AuthorizationService["forClient"]): AuthorizationService => ({ forClient })
  static readonly layer = (forClient: AuthorizationService["forClient"]): Layer.Layer<Authorization> =>
    Layer.succeed(Authorization, Authorization.make(forClient))
}

/** A ClientAcl that allows everything. */
export const allowAllAcl: ClientAcl = {
  canPublish: () => true,
  canSubscribe: () => true,
  canReceive: () => true
}

// ---------------------------------------------------------------------------
// reloading

export class AuthConfigError extends Schema.TaggedError<AuthConfigError>()("AuthConfigError", {
  /** Option: a security option of mosquitto.conf with a bad value */
  reason: Schema.Literal("PasswordFile", "AclFile", "Option"),
  file: Schema.String,
  /** 0: the file as a whole (unreadable) */
  line: Schema.Number,
  message: Schema.String
}) {}

/** What the security files hold now. */
export interface SecuritySnapshot {
  /** bumped by each successful reload */
  readonly version: number
  /** users per password file path */
  readonly passwordFiles: ReadonlyMap<string, ReadonlyArray<string>>
  readonly aclFiles: ReadonlyMap<string, AclFile>
}

export interface SecurityFilesService {
  /** Re-read password and ACL files (SIGHUP). On an error nothing changes. */
  readonly reload: Effect.Effect<void, AuthConfigError>
  /**
   * Apply new options and read the files they name (SIGHUP with a changed
   * mosquitto.conf: `allow_anonymous`, the file paths, `clientid_prefixes`,
   * `acl_subscribe_check`, per-listener security), as Mosquitto does. New
   * connections and every connected client's ACL checks follow at once. On
   * an error nothing changes.
   */
  readonly reconfigure: (options: AuthOptions) => Effect.Effect<void, AuthConfigError>
  readonly snapshot: () => SecuritySnapshot
}

export class SecurityFiles extends Context.Tag("midge/SecurityFiles")<SecurityFiles, SecurityFilesService>() {
  /** for layers without files: reloading does nothing */
  static readonly none: SecurityFilesService = {
    reload: Effect.void,
    reconfigure: () => Effect.void,
    snapshot: () => ({ version: 0, passwordFiles: new Map(), aclFiles: new Map() })
  }
}

// ---------------------------------------------------------------------------
// options

/** The security options of the broker, or of one listener under per_listener_settings. */
export interface SecurityScopeOptions {
  readonly allowAnonymous: boolean
  readonly passwordFile?: string | undefined
  readonly aclFile?: string | undefined
}

export interface AuthOptions extends SecurityScopeOptions {
  /** `clientid_prefixes`: global even under per_listener_settings */
  readonly clientidPrefixes?: string | undefined
  /**
   * `per_listener_settings true`: each listener's own options, by port; a
   * client of a port not listed gets the top-level ones.
   */
  readonly perListener?: ReadonlyArray<SecurityScopeOptions & { readonly port: number }> | undefined
  /**
   * A listener's own allow_anonymous by port, over its scope's: Mosquitto 2.1's
   * `listener_allow_anonymous`, which applies with or without per_listener_settings.
   */
  readonly allowAnonymousByPort?: ReadonlyMap<number, boolean> | undefined
  /**
   * How the acl_file judges SUBSCRIBE (mosquitto.conf `acl_subscribe_check`,
   * Midge-only). "read-access" (default): a filter no read rule can match
   * is refused (0x80 / 0x87); a filter some rule can match is granted and
   * each delivery is read-checked. "mosquitto": every SUBSCRIBE is granted
   * and only deliveries are checked, as Mosquitto 1.5 – 2.1 do.
   */
  readonly subscribeCheck?: SubscribeCheck | undefined
  /** a problem {@link optionsFromConfig} found in the options; {@link make} fails with it */
  readonly configError?: AuthConfigError | undefined
  /** lines of the files that were skipped or look wrong */
  readonly onWarning?: ((message: string) => void) | undefined
}

export type SubscribeCheck = "read-access" | "mosquitto"

const SUBSCRIBE_CHECKS: ReadonlyArray<string> = ["read-access", "mosquitto"]

/** The options a mosquitto.conf asks for (clientid_prefixes and acl_subscribe_check read from its directives). */
export const optionsFromConfig = (config: BrokerConfig): AuthOptions => {
  let clientidPrefixes: string | undefined
  let subscribeCheck: SubscribeCheck | undefined
  let configError: AuthConfigError | undefined
  for (const d of config.directives) {
    if (d.option === "clientid_prefixes") clientidPrefixes = d.value
    else if (d.option === "acl_subscribe_check") {
      // global; a later line replaces an earlier one
      if (SUBSCRIBE_CHECKS.includes(d.value)) subscribeCheck = d.value as SubscribeCheck
      else {
        configError ??= new AuthConfigError({
          reason: "Option",
          file: d.file,
          line: d.line,
          message: `${d.file}:${d.line} acl_subscribe_check: invalid value "${d.value}": expected read-access or mosquitto`
        })
      }
    }
  }
  return {
    allowAnonymous: config.allowAnonymous,
    allowAnonymousByPort: anonymousByPort(config),
    passwordFile: config.passwordFile,
    aclFile: config.aclFile,
    clientidPrefixes,
    subscribeCheck,
    configError,
    perListener: config.perListenerSettings
      ? config.listeners.map((l) => ({
          port: l.port,
          allowAnonymous: l.allowAnonymous ?? config.allowAnonymous,
          passwordFile: l.passwordFile,
          aclFile: l.aclFile
        }))
      : undefined
  }
}

/** The listeners that have an allow_anonymous of their own (config/Config.ts merges `listener_allow_anonymous` into it). */
export const anonymousByPort = (config: BrokerConfig): ReadonlyMap<number, boolean> | undefined => {
  const out = new Map<number, boolean>()
  for (const l of config.listeners) if (l.allowAnonymous !== undefined) out.set(l.port, l.allowAnonymous)
  return out.size > 0 ? out : undefined
}

/** `clientid_prefixes`: a client id must start with the prefix when one is set (Mosquitto: CONNACK not authorised). */
export const clientIdAllowed = (prefixes: string | undefined, clientId: string): boolean =>
  prefixes === undefined || prefixes.length === 0 || clientId.startsWith(prefixes)

// ---------------------------------------------------------------------------
// the file-based services

interface LoadedScope {
  readonly allowAnonymous: boolean
  /** undefined: no password_file */
  readonly users: ReadonlyMap<string, HashedEntry> | undefined
  /** undefined: no acl_file */
  readonly acl: AclFile | undefined
  /** compiled `topic` rules per username, filled on first use; "\0" is anonymous */
  readonly compiled: Map<string, ReturnType<typeof compileUserRules>>
}

interface State {
  readonly version: number
  /** what it was loaded with (a reload of the files reads the same paths) */
  readonly options: AuthOptions
  readonly prefixes: string | undefined
  /** acl_subscribe_check read-access */
  readonly strict: boolean
  /** some scope has an acl_file: clients get a FileClientAcl, else the shared `$`-rules one */
  readonly anyAcl: boolean
  readonly global: LoadedScope
  readonly byPort: ReadonlyMap<number, LoadedScope>
  readonly passwordFiles: ReadonlyMap<string, ReadonlyMap<string, HashedEntry>>
  readonly aclFiles: ReadonlyMap<string, AclFile>
}

/** The swappable state every ClientAcl refers to. */
interface Store {
  state: State
}

const aclError = (e: AclFileError) =>
  new AuthConfigError({
    reason: "AclFile",
    file: e.file,
    line: e.line,
    message: e.line > 0 ? `${e.file}:${e.line}: ${e.message}` : e.message
  })

const load = (options: AuthOptions, version: number): Effect.Effect<State, AuthConfigError> =>
  Effect.gen(function* () {
    const scopes: Array<SecurityScopeOptions> = [options, ...(options.perListener ?? [])]
    const passwordFiles = new Map<string, ReadonlyMap<string, HashedEntry>>()
    const aclFiles = new Map<string, AclFile>()
    for (const s of scopes) {
      if (s.passwordFile !== undefined && !passwordFiles.has(s.passwordFile)) {
        const path = s.passwordFile
        const file = yield* readPasswordFile(path).pipe(
          Effect.mapError((e) => new AuthConfigError({ reason: "PasswordFile", file: path, line: 0, message: e.message }))
        )
        // Mosquitto logs and drops bad entries, and starts
        for (const issue of file.errors) options.onWarning?.(`${path}:${issue.line}: ${issue.message}; entry ignored`)
        passwordFiles.set(path, file.users)
      }
      if (s.aclFile !== undefined && !aclFiles.has(s.aclFile)) {
        const acl = yield* readAclFile(s.aclFile).pipe(Effect.mapError(aclError))
        for (const w of acl.warnings) options.onWarning?.(`${acl.file}:${w.line}: ${w.message}`)
        aclFiles.set(s.aclFile, acl)
      }
    }
    const scope = (s: SecurityScopeOptions): LoadedScope => ({
      allowAnonymous: s.allowAnonymous,
      users: s.passwordFile === undefined ? undefined : passwordFiles.get(s.passwordFile),
      acl: s.aclFile === undefined ? undefined : aclFiles.get(s.aclFile),
      compiled: new Map()
    })
    const byPort = new Map<number, LoadedScope>()
    for (const l of options.perListener ?? []) if (!byPort.has(l.port)) byPort.set(l.port, scope(l))
    return {
      version,
      options,
      prefixes: options.clientidPrefixes,
      strict: options.subscribeCheck !== "mosquitto",
      anyAcl: aclFiles.size > 0,
      global: scope(options),
      byPort,
      passwordFiles,
      aclFiles
    }
  })

const scopeOf = (state: State, port: number | undefined): LoadedScope =>
  (port === undefined ? undefined : state.byPort.get(port)) ?? state.global

const REFUSED: AuthResult = { ok: false, reason: "not-authorised" }
const BAD_CREDENTIALS: AuthResult = { ok: false, reason: "bad-credentials" }

const decideWith = (store: Store): AuthDecision => (request, done) => {
  if (!clientIdAllowed(store.state.prefixes, request.clientId)) return done(REFUSED)
  const tlsUsername = tlsUsernameOf(request)
  if (tlsUsername !== undefined) {
    // handle_connect.c: "Authentication assumed to be cleared"
    return done(tlsUsername === null ? BAD_CREDENTIALS : { ok: true, username: tlsUsername })
  }
  const scope = scopeOf(store.state, request.listenerPort)
  const username = request.username
  // no password check configured: allow_anonymous decides for everyone (mosquitto_unpwd_check,
  // plugin_used == false); with one, it decides for clients without a username
  const allowAnonymous = store.state.options.allowAnonymousByPort?.get(request.listenerPort) ?? scope.allowAnonymous
  if (scope.users === undefined || username === undefined) return done(allowAnonymous ? { ok: true, username } : REFUSED)
  const entry = scope.users.get(username)
  if (entry === undefined || request.password === undefined) return done(REFUSED)
  checkPassword(entry.hash, request.password, (ok) => done(ok === undefined ? undefined : ok ? { ok: true, username } : REFUSED))
}

/** undefined: not a TLS-identity listener; null: one, but the connection has no identity. Shared with DynamicSecurity. */
export const tlsUsernameOf = (request: AuthRequest): string | null | undefined => {
  switch (request.tlsUsername) {
    case undefined:
      return undefined
    case "identity":
      return request.pskIdentity ?? request.certificateCommonName ?? null
    case "subject":
      // a PSK connection has no subject; Mosquitto sets the username from the identity only with use_identity_as_username
      return request.pskIdentity !== undefined ? null : (request.certificateSubject ?? null)
  }
}

const NO_RULES: ReturnType<typeof compileUserRules> = []

/** Rule lists longer than this get a per-client cache of topic decisions. */
const CACHE_FROM_RULES = 8
const CACHE_SIZE = 256
// cache entry bits: read decided / read allowed / write decided / write allowed / denied for a dangerous name (read, write)
const R_KNOWN = 1
const R_OK = 2
const W_KNOWN = 4
const W_OK = 8
const R_BLOCKED = 16
const W_BLOCKED = 32

class FileClientAcl implements ClientAcl {
  private version = -1
  /** undefined: no acl_file, only the `$` rules apply */
  private rules: ClientRules | undefined = undefined
  private cache: Map<string, number> | undefined = undefined

  constructor(
    private readonly store: Store,
    private readonly client: AuthClient
  ) {
    this.refresh()
  }

  private refresh(): void {
    const state = this.store.state
    this.version = state.version
    this.cache = undefined
    const scope = scopeOf(state, this.client.listenerPort)
    const acl = scope.acl
    if (acl === undefined) {
      this.rules = undefined
      return
    }
    const username = this.client.username
    let own: ReturnType<typeof compileUserRules> = NO_RULES
    // shared per user of the file (a bounded set), not per arbitrary username
    if (username === undefined ? acl.anonymous !== undefined : acl.users.has(username)) {
      const key = username ?? "\0"
      const cached = scope.compiled.get(key)
      if (cached !== undefined) own = cached
      else scope.compiled.set(key, (own = compileUserRules(acl, username)))
    }
    this.rules = compileClientRules(acl, this.client.clientId, username, own)
    if (this.rules.own.length + this.rules.patterns.length > CACHE_FROM_RULES) this.cache = new Map()
  }

  private check(topic: string, access: 1 | 2): boolean {
    if (this.version !== this.store.state.version) this.refresh()
    const rules = this.rules
    if (rules === undefined) return dollarAllows(topic, access)
    const cache = this.cache
    if (cache === undefined) return this.decided(rules, decide(rules, topic, access))
    const known = access === READ ? R_KNOWN : W_KNOWN
    const ok = access === READ ? R_OK : W_OK
    const blocked = access === READ ? R_BLOCKED : W_BLOCKED
    const bits = cache.get(topic) ?? 0
    // a decision taken from the cache is logged as the check it stands for would be
    if ((bits & known) !== 0) return this.decided(rules, (bits & ok) !== 0 ? ALLOWED : (bits & blocked) !== 0 ? BLOCKED : DENIED)
    const decision = decide(rules, topic, access)
    if (bits === 0 && cache.size >= CACHE_SIZE) cache.clear()
    cache.set(topic, bits | known | (decision === ALLOWED ? ok : decision === BLOCKED ? blocked : 0))
    return this.decided(rules, decision)
  }

  /** security_default.c's notice, each time a check reaches the patterns with a dangerous name */
  private decided(rules: ClientRules, decision: Decision): boolean {
    if (decision === BLOCKED) this.client.notice?.(rules.dangerous!)
    return decision === ALLOWED
  }

  canPublish(topic: string): boolean {
    return this.check(topic, WRITE)
  }

  canReceive(topic: string): boolean {
    return this.check(topic, READ)
  }

  canSubscribe(filter: string): boolean {
    if (this.version !== this.store.state.version) this.refresh()
    if (!this.store.state.strict) return true
    if (this.rules === undefined) return true
    // a shared subscription reads the topics of its inner filter; refused for a dangerous name, logged as the
    // delivery checks log it (Midge's check: Mosquitto does not check SUBSCRIBE against the file)
    const shared = parseSharedFilter(filter)
    return this.decided(this.rules, decideSubscribe(this.rules, shared === undefined ? filter : shared.filter))
  }
}

/**
 * What a client gets while no scope has an acl_file (the default configuration): only the `$`
 * rules, one object for every client. A reload that adds an acl_file gives the clients connected
 * a FileClientAcl of their own (`AttachedConnection.reauthorize`).
 */
const dollarRulesAcl: ClientAcl = {
  canPublish: (topic) => dollarAllows(topic, WRITE),
  canSubscribe: () => true,
  canReceive: (topic) => dollarAllows(topic, READ)
}

const snapshotOf = (state: State): SecuritySnapshot => {
  const passwordFiles = new Map<string, ReadonlyArray<string>>()
  for (const [path, users] of state.passwordFiles) passwordFiles.set(path, [...users.keys()])
  return { version: state.version, passwordFiles, aclFiles: state.aclFiles }
}

/** Builds the three file-based services; the layers below wrap it. */
export const make = (
  options: AuthOptions
): Effect.Effect<
  { authentication: AuthenticationService; authorization: AuthorizationService; files: SecurityFilesService },
  AuthConfigError
> =>
  Effect.map(options.configError === undefined ? load(options, 0) : Effect.fail(options.configError), (initial) => {
    const store: Store = { state: initial }
    const install = (state: State) =>
      Effect.sync(() => {
        store.state = state
      })
    const files: SecurityFilesService = {
      reload: Effect.suspend(() => load(store.state.options, store.state.version + 1)).pipe(Effect.flatMap(install)),
      reconfigure: (next) =>
        Effect.suspend(() =>
          next.configError !== undefined ? Effect.fail(next.configError) : load({ onWarning: options.onWarning, ...next }, store.state.version + 1)
        ).pipe(Effect.flatMap(install)),
      snapshot: () => snapshotOf(store.state)
    }
    return {
      authentication: Authentication.fromDecision(decideWith(store)),
      // a FileClientAcl reads the current state at each check; after a reload the daemon asks again for every
      // connected client (Mosquitto's security_apply), so one that had the shared object gets its rules
      authorization: Authorization.make((client) => (store.state.anyAcl ? new FileClientAcl(store, client) : dollarRulesAcl)),
      files
    }
  })

/** Mosquitto's default security from files: Authentication, Authorization and SecurityFiles. */
export const layerFromConfig = (
  options: AuthOptions
): Layer.Layer<Authentication | Authorization | SecurityFiles, AuthConfigError> =>
  Layer.effectContext(
    Effect.map(make(options), ({ authentication, authorization, files }) =>
      Context.make(Authentication, authentication).pipe(
        Context.add(Authorization, authorization),
        Context.add(SecurityFiles, files)
      )
    )
  )

/** Everyone connects (TLS identities still become usernames) and may do anything: tests and embedding. */
export const allowAll: Layer.Layer<Authentication | Authorization | SecurityFiles> = Layer.succeedContext(
  Context.make(
    Authentication,
    Authentication.make((request) => {
      const tls = tlsUsernameOf(request)
      return Effect.succeed(
        tls === undefined ? { ok: true, username: request.username } : tls === null ? BAD_CREDENTIALS : { ok: true, username: tls }
      )
    })
  ).pipe(Context.add(Authorization, Authorization.make(() => allowAllAcl)), Context.add(SecurityFiles, SecurityFiles.none))
)
