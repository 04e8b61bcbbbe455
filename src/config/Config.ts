/**
 * Midge's configuration: `mosquitto.conf` read exactly as Mosquitto 2.0/2.1
 * reads it, and Mosquitto's command line (`-c -p -d -v -h`).
 *
 * Pipeline: text -> directives `{ file, line, option, args }` (internal/lexer,
 * with `include_dir`) -> sections by listener (internal/structure) -> Schema
 * decode with `errors: "all"` (internal/schema) -> a typed {@link BrokerConfig},
 * or a {@link ConfigError} listing every problem as `file:line option: message`.
 * Snake-case names exist only at the Schema boundary.
 *
 * Options Midge recognises but does not implement yet (TLS, bridges, plugins,
 * ...) are kept in `directives` and reported in `warnings`; an option that is
 * not Mosquitto's is an error, as in Mosquitto. See docs/configuration.md.
 */
import { Effect, Either, Schema } from "effect"
import type { ProxyListenerOptions } from "../transport/proxyProtocol.js"
import type { TlsListenerOptions } from "../transport/tls.js"
import { type CommandLine, parseArgs, usage as usageText } from "./internal/cli.js"
import { type Directive, lexMain, type Problem, readConfigFile, readProblem } from "./internal/lexer.js"
import { optionSpecs, type Status } from "./internal/options.js"
import {
  allLogTypes,
  decodeConfig,
  type DecodedConfig,
  type DecodedDefaultListener,
  type DecodedListener,
  type LogDest,
  type LogType
} from "./internal/schema.js"
import { structure, type Structured } from "./internal/structure.js"

export type { CommandLine, Directive, LogDest, LogType }
export { allLogTypes, defaultLogTypes } from "./internal/schema.js"

// ---------------------------------------------------------------------------
// types

export interface ListenerConfig {
  /** 0 with socketPath for unix sockets */
  readonly port: number
  /** undefined = all interfaces */
  readonly bindAddress: string | undefined
  readonly socketPath: string | undefined
  readonly protocol: "mqtt" | "websockets"
  readonly mountPoint: string | undefined
  /** `max_qos`: the highest QoS this listener's clients may use (2: any) */
  readonly maxQos: 0 | 1 | 2
  /** -1 = unlimited */
  readonly maxConnections: number
  /** `max_topic_alias`: MQTT 5 topic aliases a client may create (CONNACK Topic Alias Maximum) */
  readonly maxTopicAlias: number
  /** `max_topic_alias_broker` (Mosquitto 2.1): aliases the broker may use towards one v5 client (capped by the client's Topic Alias Maximum) */
  readonly maxTopicAliasBroker: number
  /** `use_username_as_clientid`: the client id becomes the username */
  readonly useUsernameAsClientid: boolean
  readonly socketDomain: "ipv4" | "ipv6" | undefined
  /** `bind_interface`: bind the address of this network interface (transport/bind.ts) */
  readonly bindInterface: string | undefined
  /** `accept_protocol_versions` (Mosquitto 2.1): the MQTT versions served (3: 3.1, 4: 3.1.1, 5); undefined: all */
  readonly acceptProtocolVersions: ReadonlyArray<3 | 4 | 5> | undefined
  /**
   * per-listener values (undefined: the BrokerConfig ones): set when per_listener_settings is true,
   * and `allowAnonymous` / `autoIdPrefix` also by Mosquitto 2.1's `listener_allow_anonymous` /
   * `listener_auto_id_prefix`, which take precedence
   */
  readonly allowAnonymous: boolean | undefined
  readonly allowZeroLengthClientid: boolean | undefined
  readonly autoIdPrefix: string | undefined
  readonly passwordFile: string | undefined
  readonly aclFile: string | undefined
  /**
   * Mosquitto 2's local-only listeners (127.0.0.1 and ::1): a failure to bind one
   * of them (e.g. no IPv6 on the host) is logged and skipped, as long as one opens.
   */
  readonly bindOptional: boolean
  /** TLS / TLS-PSK options of this listener (undefined: plain) */
  readonly tls: ListenerTls | undefined
  /** `http_dir` of a WebSocket listener */
  readonly httpDir: string | undefined
  /** `websockets_origin` (Mosquitto 2.1): the Origin headers a WebSocket upgrade may carry; undefined: any */
  readonly websocketsOrigins?: ReadonlyArray<string> | undefined
  /**
   * `enable_proxy_protocol` (Mosquitto 2.1): every connection starts with a PROXY header of this
   * version, with `proxy_protocol_v2_require_tls` and the listener's `require_certificate` /
   * `use_identity_as_username` applied to it (transport/proxyProtocol.ts); undefined: no PROXY
   */
  readonly proxy?: ProxyListenerOptions | undefined
}

/** The TLS / TLS-PSK options of a listener: the transport's own option type. */
export type ListenerTls = TlsListenerOptions

export interface BrokerConfig {
  readonly listeners: ReadonlyArray<ListenerConfig>
  /** no listener configured: Mosquitto 2's loopback-only mode ("Starting in local only mode") */
  readonly localOnly: boolean
  readonly allowAnonymous: boolean
  readonly perListenerSettings: boolean
  /** `global_max_connections` (Mosquitto 2.1): network connections over all listeners; -1: no limit */
  readonly globalMaxConnections: number
  /** `global_max_clients` (Mosquitto 2.1): client sessions, connected or not; -1: no limit */
  readonly globalMaxClients: number
  readonly maxInflightMessages: number
  readonly maxQueuedMessages: number
  readonly queueQos0Messages: boolean
  /** `max_inflight_bytes`, 0 = no limit */
  readonly maxInflightBytes: number
  /** `max_queued_bytes`, 0 = no limit */
  readonly maxQueuedBytes: number
  /** `memory_limit` in bytes, 0 = no limit */
  readonly memoryLimit: number
  readonly maxKeepalive: number
  readonly maxPacketSize: number
  readonly messageSizeLimit: number
  /** seconds */
  readonly persistentClientExpiration: number | undefined
  readonly allowZeroLengthClientid: boolean
  readonly autoIdPrefix: string
  readonly retainAvailable: boolean
  /** `retain_expiry_interval` (Mosquitto 2.1, minutes in the file), in seconds: sweeps of expired retained messages; 0: none */
  readonly retainExpiryInterval: number
  readonly upgradeOutgoingQos: boolean
  /** `allow_duplicate_messages`: a client gets one copy per matching subscription, not one in all */
  readonly allowDuplicateMessages: boolean
  /** `enable_control_api` (Mosquitto 2.1): the broker answers `$CONTROL/broker/v1` */
  readonly enableControlApi: boolean
  readonly setTcpNodelay: boolean
  readonly sysInterval: number
  /** `websockets_headers_size`: bytes of HTTP headers a WebSocket upgrade may carry; 0: Node's default (16 KiB) */
  readonly websocketsHeadersSize: number
  readonly logDest: ReadonlyArray<LogDest>
  readonly logTypes: ReadonlyArray<LogType>
  readonly connectionMessages: boolean
  readonly logTimestamp: boolean
  /** `log_timestamp_format`: strftime format; undefined: seconds since the epoch */
  readonly logTimestampFormat: string | undefined
  /** `log_facility` N: syslog local N; undefined: daemon */
  readonly logFacility: number | undefined
  /** `check_retain_source`, default true */
  readonly checkRetainSource: boolean
  readonly passwordFile: string | undefined
  readonly aclFile: string | undefined
  readonly persistence: boolean
  readonly persistenceLocation: string | undefined
  readonly persistenceFile: string
  readonly autosaveInterval: number
  /** `autosave_on_changes`: autosave_interval counts changes, not seconds */
  readonly autosaveOnChanges: boolean
  /** Midge-only `persistence_durable`: PUBACK / PUBREC only once the message is on disk */
  readonly persistenceDurable: boolean
  /** Midge-only `persistence_on_corrupt`: start with what could be read, or refuse to start */
  readonly persistenceOnCorrupt: "recover" | "refuse"
  readonly pidFile: string | undefined
  readonly user: string
  /**
   * Midge-only `metrics_listener PORT [ADDRESS]`: serve Prometheus `GET /metrics`
   * (see docs/monitoring.md); undefined: no metrics listener. `host` undefined: all interfaces.
   */
  readonly metricsListener: { readonly port: number; readonly host: string | undefined } | undefined
  /** "file:line option: message" for recognised-but-unsupported or deprecated options */
  readonly warnings: ReadonlyArray<string>
  /** everything read, in order, for later features */
  readonly directives: ReadonlyArray<Directive>
}

export const ConfigProblem = Schema.Struct({
  file: Schema.String,
  line: Schema.Number,
  option: Schema.String,
  message: Schema.String
})
export type ConfigProblem = Schema.Schema.Type<typeof ConfigProblem>

/** `file:line option: message`; a problem with no line (a missing file) is `file: message`. */
export const formatProblem = (p: ConfigProblem): string =>
  p.line > 0 ? `${p.file}:${p.line} ${p.option}: ${p.message}` : p.option === "" ? `${p.file}: ${p.message}` : `${p.file} ${p.option}: ${p.message}`

export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  reason: Schema.Literal("InvalidConfig", "MissingFile", "InvalidCommandLine"),
  problems: Schema.Array(ConfigProblem)
}) {
  override get message(): string {
    return this.problems.map(formatProblem).join("\n")
  }
}

/** Every option Midge knows (Mosquitto's, from mosquitto.conf(5)) and whether Midge implements it. */
export const knownOptions: ReadonlyArray<{ readonly name: string; readonly status: Status }> = optionSpecs.map((s) => ({
  name: s.name,
  status: s.status
}))

// ---------------------------------------------------------------------------
// assembly

const LOOPBACK: ReadonlyArray<string> = ["127.0.0.1", "::1"]

type Security = Pick<
  ListenerConfig,
  "allowAnonymous" | "allowZeroLengthClientid" | "autoIdPrefix" | "passwordFile" | "aclFile"
>

const noSecurity: Security = {
  allowAnonymous: undefined,
  allowZeroLengthClientid: undefined,
  autoIdPrefix: undefined,
  passwordFile: undefined,
  aclFile: undefined
}

/** Mosquitto 2 (listeners.c `listeners__start_local_only`): each port on 127.0.0.1 and ::1. */
const localListeners = (ports: ReadonlyArray<number>, security: Security): Array<ListenerConfig> => {
  const out: Array<ListenerConfig> = []
  for (const port of ports) {
    for (const bindAddress of LOOPBACK) {
      out.push({
        port,
        bindAddress,
        socketPath: undefined,
        protocol: "mqtt",
        mountPoint: undefined,
        maxQos: 2,
        maxConnections: -1,
        acceptProtocolVersions: undefined,
        maxTopicAlias: 10,
        maxTopicAliasBroker: 10,
        useUsernameAsClientid: false,
        socketDomain: undefined,
        bindInterface: undefined,
        tls: undefined,
        httpDir: undefined,
        ...security,
        bindOptional: true
      })
    }
  }
  return out
}

const securityOf = (
  perListener: boolean,
  l: DecodedListener | DecodedDefaultListener,
  anonymousDefault: boolean
): Security => {
  const own: Security = perListener
    ? {
        allowAnonymous: l.allowAnonymous ?? anonymousDefault,
        allowZeroLengthClientid: l.allowZeroLengthClientid ?? true,
        autoIdPrefix: l.autoIdPrefix ?? "auto-",
        passwordFile: l.passwordFile,
        aclFile: l.aclFile
      }
    : noSecurity
  // Mosquitto 2.1's listener_* options set the listener's own value whatever per_listener_settings says
  return {
    ...own,
    allowAnonymous: l.listenerAllowAnonymous ?? own.allowAnonymous,
    autoIdPrefix: l.listenerAutoIdPrefix ?? own.autoIdPrefix
  }
}

const listenerOf = (
  l: DecodedListener | DecodedDefaultListener,
  where: { readonly port: number; readonly bindAddress: string | undefined; readonly socketPath: string | undefined },
  security: Security,
  pskFile: string | undefined
): ListenerConfig => ({
  port: where.port,
  bindAddress: where.bindAddress,
  socketPath: where.socketPath,
  protocol: l.protocol,
  mountPoint: l.mountPoint,
  maxQos: (l.maxQos ?? l.maximumQos ?? 2) as 0 | 1 | 2,
  maxConnections: l.maxConnections,
  acceptProtocolVersions: l.acceptProtocolVersions,
  maxTopicAlias: l.maxTopicAlias,
  maxTopicAliasBroker: l.maxTopicAliasBroker,
  useUsernameAsClientid: l.useUsernameAsClientid,
  socketDomain: l.socketDomain,
  bindInterface: l.bindInterface,
  ...security,
  bindOptional: false,
  tls: tlsOf(l, pskFile),
  httpDir: "httpDir" in l ? l.httpDir : undefined,
  websocketsOrigins: l.websocketsOrigins,
  proxy: proxyOf(l)
})

/** A PROXY listener: no TLS of its own (structure.ts refuses it), the header's TLS information instead. */
const proxyOf = (l: DecodedListener | DecodedDefaultListener): ProxyListenerOptions | undefined =>
  l.enableProxyProtocol === undefined
    ? undefined
    : {
        version: l.enableProxyProtocol,
        requireTls: l.proxyProtocolV2RequireTls,
        requireCertificate: l.requireCertificate === true,
        useIdentityAsUsername: l.useIdentityAsUsername === true
      }

/** A listener is TLS when it has a certfile or a psk_hint (Mosquitto's rule). */
const tlsOf = (l: DecodedListener | DecodedDefaultListener, pskFile: string | undefined): ListenerTls | undefined => {
  if (!("certfile" in l) && !("pskHint" in l)) return undefined
  const t = l as DecodedListener
  if (t.certfile === undefined && t.pskHint === undefined) return undefined
  return {
    // the keys of a TLS-PSK listener: its own psk_file with per_listener_settings, else the broker's
    pskFile: t.pskHint !== undefined ? pskFile : undefined,
    cafile: t.cafile,
    capath: t.capath,
    certfile: t.certfile,
    keyfile: t.keyfile,
    requireCertificate: t.requireCertificate,
    crlfile: t.crlfile,
    tlsVersion: t.tlsVersion,
    ciphers: t.ciphers,
    ciphersTls13: t.ciphersTls13,
    pskHint: t.pskHint,
    useIdentityAsUsername: t.useIdentityAsUsername,
    useSubjectAsUsername: t.useSubjectAsUsername,
    disableClientCertDateChecks: t.disableClientCertDateChecks,
    dhparamfile: t.dhparamfile
  }
}

interface Located {
  readonly problem: Problem
  readonly order: number
}

const sortProblems = (problems: ReadonlyArray<Problem>, order: ReadonlyMap<string, number>): Array<Problem> =>
  problems
    .map((problem, i): Located => ({ problem, order: order.get(`${problem.file}:${problem.line}`) ?? order.size + i }))
    .sort((a, b) => a.order - b.order)
    .map((l) => l.problem)

const build = (
  s: Structured,
  d: DecodedConfig,
  directives: ReadonlyArray<Directive>,
  order: ReadonlyMap<string, number>,
  warnings: Array<Problem>
): BrokerConfig => {
  const g = d.global
  const perListener = g.perListenerSettings
  const listeners: Array<ListenerConfig> = []
  d.listeners.forEach((l, i) => {
    if (s.skippedListeners.has(i)) return
    listeners.push(
      listenerOf(
        l,
        { port: l.listener.port, bindAddress: l.listener.address, socketPath: l.listener.socketPath },
        securityOf(perListener, l, false),
        perListener ? l.pskFile : g.pskFile
      )
    )
  })
  // conf.c `config__parse_args`: the default listener exists when any of its settings differs from the defaults
  const dl = d.defaultListener
  const defaultListenerSet =
    dl.port !== undefined ||
    dl.bindAddress !== undefined ||
    dl.bindInterface !== undefined ||
    dl.maxConnections !== -1 ||
    dl.useUsernameAsClientid ||
    dl.dhparamfile !== undefined ||
    dl.protocol !== "mqtt" ||
    dl.socketDomain !== undefined ||
    dl.passwordFile !== undefined ||
    dl.pskFile !== undefined ||
    dl.allowZeroLengthClientid === false ||
    (dl.maxQos ?? dl.maximumQos ?? 2) !== 2 ||
    dl.certfile !== undefined ||
    dl.keyfile !== undefined ||
    dl.cafile !== undefined ||
    dl.capath !== undefined ||
    dl.crlfile !== undefined ||
    dl.ciphers !== undefined ||
    dl.ciphersTls13 !== undefined ||
    dl.pskHint !== undefined ||
    dl.requireCertificate === true ||
    dl.useIdentityAsUsername === true ||
    dl.useSubjectAsUsername === true ||
    s.defaultListenerTouched
  if (!s.localOnly && defaultListenerSet && !s.skippedListeners.has(-1)) {
    const first = s.firstOnDefaultListener
    if (dl.port === undefined && dl.bindAddress === undefined && first !== undefined) {
      warnings.push({
        file: first.file,
        line: first.line,
        option: first.option,
        message:
          "set before any listener line: it configures Mosquitto's default listener, which opens on port 1883 on all interfaces"
      })
    }
    // appended after the explicit listeners, as conf.c does
    listeners.push(
      listenerOf(
        dl,
        { port: dl.port ?? 1883, bindAddress: dl.bindAddress, socketPath: undefined },
        securityOf(perListener, dl, false),
        perListener ? dl.pskFile : g.pskFile
      )
    )
  } else if (!s.localOnly) {
    for (const sd of s.securityOnDefaultListener) {
      warnings.push({
        file: sd.file,
        line: sd.line,
        option: sd.option,
        message: "has no effect: with per_listener_settings true it applies to the listener it follows, and there is none"
      })
    }
  }
  // Mosquitto 2 local-only mode: anonymous allowed unless the file says otherwise
  // (an explicit `allow_anonymous false` is honoured, as fixed upstream in eclipse-mosquitto/mosquitto#3198)
  const finalListeners = s.localOnly ? localListeners([1883], securityOf(perListener, dl, true)) : listeners
  return {
    listeners: finalListeners,
    localOnly: s.localOnly,
    allowAnonymous: g.allowAnonymous ?? s.localOnly,
    perListenerSettings: perListener,
    globalMaxConnections: g.globalMaxConnections,
    globalMaxClients: g.globalMaxClients,
    maxInflightMessages: g.maxInflightMessages,
    maxQueuedMessages: g.maxQueuedMessages,
    queueQos0Messages: g.queueQos0Messages,
    maxInflightBytes: g.maxInflightBytes,
    maxQueuedBytes: g.maxQueuedBytes,
    memoryLimit: g.memoryLimit,
    maxKeepalive: g.maxKeepalive,
    maxPacketSize: g.maxPacketSize,
    messageSizeLimit: g.messageSizeLimit,
    persistentClientExpiration: g.persistentClientExpiration,
    allowZeroLengthClientid: g.allowZeroLengthClientid ?? true,
    autoIdPrefix: g.autoIdPrefix ?? "auto-",
    retainAvailable: g.retainAvailable,
    retainExpiryInterval: g.retainExpiryInterval,
    upgradeOutgoingQos: g.upgradeOutgoingQos,
    allowDuplicateMessages: g.allowDuplicateMessages,
    enableControlApi: g.enableControlApi,
    setTcpNodelay: g.setTcpNodelay,
    sysInterval: g.sysInterval,
    websocketsHeadersSize: g.websocketsHeadersSize,
    logDest: g.logDest,
    logTypes: g.logTypes,
    connectionMessages: g.connectionMessages,
    logTimestamp: g.logTimestamp,
    logTimestampFormat: g.logTimestampFormat,
    logFacility: g.logFacility,
    checkRetainSource: g.checkRetainSource,
    passwordFile: g.passwordFile,
    aclFile: g.aclFile,
    persistence: g.persistence,
    persistenceLocation: g.persistenceLocation,
    persistenceFile: g.persistenceFile,
    autosaveInterval: g.autosaveInterval,
    autosaveOnChanges: g.autosaveOnChanges,
    persistenceDurable: g.persistenceDurable,
    persistenceOnCorrupt: g.persistenceOnCorrupt,
    pidFile: g.pidFile,
    user: g.user,
    metricsListener: g.metricsListener,
    warnings: sortProblems(warnings, order).map(formatProblem),
    directives
  }
}

const fromDirectives = (
  directives: ReadonlyArray<Directive>,
  problems: ReadonlyArray<Problem>,
  warnings: ReadonlyArray<Problem>
): Either.Either<BrokerConfig, ConfigError> => {
  const s = structure(directives)
  const decoded = decodeConfig(s.raw)
  const order = new Map<string, number>()
  directives.forEach((x, i) => order.set(`${x.file}:${x.line}`, i))
  const all = [...problems, ...s.problems, ...(Either.isLeft(decoded) ? decoded.left : [])]
  if (all.length > 0 || Either.isLeft(decoded)) {
    return Either.left(new ConfigError({ reason: "InvalidConfig", problems: sortProblems(all, order) }))
  }
  return Either.right(build(s, decoded.right, directives, order, [...warnings, ...s.warnings]))
}

const parseSync = (text: string, file: string): Either.Either<BrokerConfig, ConfigError> => {
  const lexed = lexMain(text, file)
  return fromDirectives(lexed.directives, lexed.problems, lexed.warnings)
}

// ---------------------------------------------------------------------------
// public API

/** What Mosquitto 2 does with no config file: port 1883 on 127.0.0.1 and ::1, anonymous allowed. */
export const defaults: BrokerConfig = Either.getOrThrow(fromDirectives([], [], []))

/**
 * Parse mosquitto.conf text. `file` names it in problems; `include_dir` paths
 * are read from disk, relative ones against the working directory as Mosquitto does.
 */
export const parseConfigText = (text: string, file: string): Effect.Effect<BrokerConfig, ConfigError> =>
  Effect.suspend(() => parseSync(text, file))

/** Read and parse a config file; a missing or unreadable file is an error. */
export const loadConfigFile = (path: string): Effect.Effect<BrokerConfig, ConfigError> =>
  Effect.suspend(() => {
    const read = readConfigFile(path)
    if (read._tag !== "Text") {
      return Either.left(
        new ConfigError({
          reason: read._tag === "Unreadable" ? "MissingFile" : "InvalidConfig",
          problems: [readProblem(path, read)]
        })
      )
    }
    return parseSync(read.text, path)
  })

/** Mosquitto's flags; `argv` is the arguments only (e.g. `process.argv.slice(2)`). */
export const parseCommandLine = (argv: ReadonlyArray<string>): Either.Either<CommandLine, ConfigError> => {
  const r = parseArgs(argv)
  return "ok" in r ? Either.right(r.ok) : Either.left(new ConfigError({ reason: "InvalidCommandLine", problems: r.problems }))
}

/**
 * Combine the file and the flags as Mosquitto 2 does: no `-c` gives {@link defaults};
 * `-p` ports replace the local-only listeners (still loopback only), and are
 * IGNORED when the file defines a listener (mosquitto(8)), with a warning;
 * `-v` sets `log_type all`.
 */
export const resolveConfig = (cl: CommandLine): Effect.Effect<BrokerConfig, ConfigError> =>
  Effect.map(cl.configFile === undefined ? Effect.succeed(defaults) : loadConfigFile(cl.configFile), (config) => {
    let out = config
    if (cl.ports.length > 0) {
      if (config.localOnly) {
        const l = config.listeners[0]
        const security: Security = {
          allowAnonymous: l.allowAnonymous,
          allowZeroLengthClientid: l.allowZeroLengthClientid,
          autoIdPrefix: l.autoIdPrefix,
          passwordFile: l.passwordFile,
          aclFile: l.aclFile
        }
        out = { ...out, listeners: localListeners([...new Set(cl.ports)], security) }
      } else {
        out = {
          ...out,
          warnings: [
            ...out.warnings,
            `${cl.configFile}: -p ${cl.ports.join(" -p ")}: ignored because the configuration file defines listeners (as Mosquitto 2)`
          ]
        }
      }
    }
    if (cl.verbose) out = { ...out, logTypes: allLogTypes }
    return out
  })

/** The `-h` text, modelled on Mosquitto's. */
export const usage: string = usageText
