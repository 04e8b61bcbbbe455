/**
 * The Schema boundary: snake_case option names (Schema.fromKey) holding the
 * directives read for them -> typed camelCase sections. Every value check lives
 * in a per-directive transformation, so a failure's path leads back to the
 * directive and hence to `file:line option`. Decoded with `errors: "all"`.
 *
 * Value rules follow Mosquitto 2's conf.c: booleans are `true`/`false` (and the
 * `1`/`0` conf.c also takes); a repeated number or boolean keeps its last value;
 * a repeated path/string is "Duplicate value" error; conf.c's clamps (e.g.
 * `max_queued_messages -1` -> 0) are kept. Midge is stricter than `atoi`:
 * a value that is not an integer is an error, and so are extra values.
 */
import { Either, ParseResult, Schema, type SchemaAST as AST } from "effect"
import type { Directive, Problem } from "./lexer.js"

/** Exported for the other readers of directive sections (bridges). */
export const isDirective = (u: unknown): u is Directive =>
  typeof u === "object" && u !== null && "option" in u && "args" in u && "line" in u

const DirectiveSchema = Schema.declare(isDirective, { identifier: "Directive" })

export type Check<A> = (d: Directive) => Either.Either<A, string>

export const fromDirective = <A>(to: Schema.Schema<A>, check: Check<A>): Schema.Schema<A, Directive> =>
  Schema.transformOrFail(DirectiveSchema, to, {
    strict: true,
    decode: (d, _, ast) =>
      Either.match(check(d), {
        onLeft: (message) => ParseResult.fail(new ParseResult.Type(ast, d, message)),
        onRight: ParseResult.succeed
      }),
    encode: (a, _, ast) => ParseResult.fail(new ParseResult.Forbidden(ast, a, "configuration is not encoded back to text"))
  })

// ---------------------------------------------------------------------------
// value checks

export const isComment = (s: string | undefined): boolean => s !== undefined && s.charCodeAt(0) === 35

/** Exactly one value; a trailing `# comment` is tolerated (conf.c never reads past the value). */
const oneValue = (d: Directive): Either.Either<string, string> => {
  if (d.args.length === 0) return Either.left("missing value")
  if (d.args.length > 1 && !isComment(d.args[1])) {
    return Either.left(`expected one value, got ${d.args.length}: "${d.value}"`)
  }
  return Either.right(d.args[0])
}

const INTEGER = /^[+-]?\d+$/
const INT_MIN = -2147483648
const INT_MAX = 2147483647

export const toInt = (s: string): Either.Either<number, string> => {
  if (!INTEGER.test(s)) return Either.left(`invalid value "${s}": expected an integer`)
  const n = Number(s)
  return n < INT_MIN || n > INT_MAX ? Either.left(`invalid value ${s}: out of range`) : Either.right(n)
}

interface IntRule {
  readonly min?: number
  readonly max?: number
  /** conf.c's silent adjustments, applied before the range check */
  readonly adjust?: (n: number) => number
}

const intCheck =
  (rule: IntRule): Check<number> =>
  (d) =>
    Either.flatMap(Either.flatMap(oneValue(d), toInt), (raw) => {
      const n = rule.adjust === undefined ? raw : rule.adjust(raw)
      if ((rule.min !== undefined && n < rule.min) || (rule.max !== undefined && n > rule.max)) {
        const range =
          rule.max === undefined ? `at least ${rule.min}` : rule.min === undefined ? `at most ${rule.max}` : `between ${rule.min} and ${rule.max}`
        return Either.left(`invalid value ${raw}: must be ${range}`)
      }
      return Either.right(n)
    })

/** `true` / `1` or `false` / `0`, one value (conf__parse_bool) */
export const boolCheck: Check<boolean> = (d) =>
  Either.flatMap(oneValue(d), (s) =>
    s === "true" || s === "1"
      ? Either.right(true)
      : s === "false" || s === "0"
        ? Either.right(false)
        : Either.left(`invalid value "${s}": expected true or false`)
  )

const enumCheck =
  <L extends string>(values: ReadonlyArray<L>): Check<L> =>
  (d) =>
    Either.flatMap(oneValue(d), (s) =>
      (values as ReadonlyArray<string>).includes(s)
        ? Either.right(s as L)
        : Either.left(`invalid value "${s}": expected ${values.join(" or ")}`)
    )

/** Path and string options take the rest of the line, as conf.c's `conf__parse_string`. */
export const stringCheck: Check<string> = (d) => (d.value.length === 0 ? Either.left("missing value") : Either.right(d.value))

const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8")

/**
 * `accept_protocol_versions` (Mosquitto 2.1): the values split on blanks and commas; 3 is MQTT 3.1,
 * 4 MQTT 3.1.1, 5 MQTT 5. conf.c skips any other token, so a line naming none of the three leaves
 * the listener accepting nobody.
 */
const protocolVersionsCheck: Check<ReadonlyArray<3 | 4 | 5>> = (d) => {
  const tokens = d.value.split(/[\s,]+/).filter((t) => t.length > 0)
  if (tokens.length === 0) return Either.left("missing value")
  const out: Array<3 | 4 | 5> = []
  for (const t of tokens) {
    if (isComment(t)) break
    if ((t === "3" || t === "4" || t === "5") && !out.includes(Number(t) as 3 | 4 | 5)) out.push(Number(t) as 3 | 4 | 5)
  }
  return Either.right(out)
}

/**
 * `retain_expiry_interval` (Mosquitto 2.1), in minutes: at least 1, capped at 10,000,000 (conf.c's
 * "being capped at 19 years"); decoded to seconds.
 */
const retainExpiryCheck: Check<number> = (d) =>
  Either.flatMap(Either.flatMap(oneValue(d), toInt), (n) =>
    n < 1 ? Either.left("retain_expiry_interval must be >= 1") : Either.right(Math.min(n, 10_000_000) * 60)
  )

/** `enable_proxy_protocol` (Mosquitto 2.1): the PROXY protocol version a listener's connections start with. */
const proxyVersionCheck: Check<1 | 2> = (d) =>
  Either.flatMap(oneValue(d), (s) =>
    s === "1" || s === "2" ? Either.right(Number(s) as 1 | 2) : Either.left(`invalid value "${s}": enable_proxy_protocol must be 1 or 2`)
  )

/** `listener_auto_id_prefix` (Mosquitto 2.1): "length must be <= 50". */
const autoIdPrefixCheck: Check<string> = (d) =>
  Either.flatMap(stringCheck(d), (s) => (s.length > 50 ? Either.left("length must be <= 50") : Either.right(s)))

/** conf.c checks mount_point with `mosquitto_pub_topic_check`: no wildcards. */
const mountPointCheck: Check<string> = (d) =>
  Either.flatMap(stringCheck(d), (s) =>
    s.includes("+") || s.includes("#")
      ? Either.left(`invalid mount_point "${s}": it must not contain a wildcard (+ or #)`)
      : utf8Length(s) > 65535
        ? Either.left("invalid mount_point: longer than 65535 bytes")
        : Either.right(s)
  )

const EXPIRY_UNITS: Readonly<Record<string, number>> = {
  s: 1,
  h: 3600,
  d: 86400,
  w: 86400 * 7,
  m: 86400 * 30,
  y: 86400 * 365
}

/** `persistent_client_expiration 14d`: an integer and one of s h d w m y (m is a 30 day month). */
const expirationCheck: Check<number> = (d) =>
  Either.flatMap(oneValue(d), (s) => {
    const m = /^(\d+)([shdwmy])$/.exec(s)
    if (m === null) return Either.left(`invalid duration "${s}": expected an integer followed by one of s h d w m y`)
    const seconds = Number(m[1]) * EXPIRY_UNITS[m[2]]
    return seconds <= 0 || !Number.isSafeInteger(seconds)
      ? Either.left(`invalid duration "${s}": must be greater than zero`)
      : Either.right(seconds)
  })

export interface ListenerLine {
  readonly port: number
  readonly address: string | undefined
  readonly socketPath: string | undefined
}

/** `listener PORT [ADDRESS | UNIX-SOCKET-PATH]`; port 0 needs a socket path. */
const listenerCheck: Check<ListenerLine> = (d) => {
  const [portText, second, third] = d.args
  if (portText === undefined) return Either.left("missing port")
  const address = second === undefined || isComment(second) ? undefined : second
  if (address !== undefined && third !== undefined && !isComment(third)) {
    return Either.left(`expected a port and an optional address, got ${d.args.length} values: "${d.value}"`)
  }
  return Either.flatMap(toInt(portText), (port) => {
    if (port < 0 || port > 65535) return Either.left(`invalid port ${port}: must be between 0 and 65535`)
    if (port === 0 && address === undefined) return Either.left("a listener with port 0 must provide a Unix socket path")
    return Either.right(
      port === 0 ? { port, address: undefined, socketPath: address } : { port, address, socketPath: undefined }
    )
  })
}

export interface MetricsListenerLine {
  readonly port: number
  readonly host: string | undefined
}

/** Midge-only `metrics_listener PORT [ADDRESS]`: the Prometheus endpoint (see docs/monitoring.md). */
const metricsListenerCheck: Check<MetricsListenerLine> = (d) => {
  const [portText, second, third] = d.args
  if (portText === undefined || isComment(portText)) return Either.left("missing port")
  const host = second === undefined || isComment(second) ? undefined : second
  if (host !== undefined && third !== undefined && !isComment(third)) {
    return Either.left(`expected a port and an optional address, got ${d.args.length} values: "${d.value}"`)
  }
  return Either.flatMap(toInt(portText), (port) =>
    port < 1 || port > 65535 ? Either.left(`invalid port ${port}: must be between 1 and 65535`) : Either.right({ port, host })
  )
}

/** Midge-only `cluster_redis_url redis://HOST:PORT[/DB]` (or rediss://): the Redis a cluster of Midge nodes shares (docs/cluster.md). */
const redisUrlCheck: Check<string> = (d) =>
  Either.flatMap(oneValue(d), (text) => {
    try {
      const url = new URL(text)
      return url.protocol === "redis:" || url.protocol === "rediss:"
        ? Either.right(text)
        : Either.left(`invalid cluster_redis_url "${text}": expected redis://host:port or rediss://host:port`)
    } catch {
      return Either.left(`invalid cluster_redis_url "${text}": expected redis://host:port or rediss://host:port`)
    }
  })

/** Midge-only `cluster_node_id` / `cluster_key_prefix`: one word (they name Redis keys). */
const clusterNameCheck: Check<string> = (d) =>
  Either.flatMap(oneValue(d), (text) => (/^[A-Za-z0-9._:-]+$/.test(text) ? Either.right(text) : Either.left(`invalid value "${text}": letters, digits and . _ : - only`)))

export type LogDestKind = "stdout" | "stderr" | "file" | "syslog" | "topic" | "none"

export interface LogDest {
  readonly kind: LogDestKind
  readonly path?: string
}

const logDestCheck: Check<LogDest> = (d) => {
  const kind = d.args[0]
  if (kind === undefined) return Either.left("missing value")
  if (kind === "file") {
    const path = d.value.slice(4).trim()
    return path.length === 0 ? Either.left('"log_dest file" needs a file name') : Either.right({ kind, path })
  }
  return Either.map(
    enumCheck<LogDestKind>(["none", "stdout", "stderr", "syslog", "topic"])(d),
    (k): LogDest => ({ kind: k })
  )
}

export type LogType =
  | "debug"
  | "error"
  | "warning"
  | "notice"
  | "information"
  | "subscribe"
  | "unsubscribe"
  | "websockets"

/** In the order of the manual. */
export const allLogTypes: ReadonlyArray<LogType> = [
  "debug",
  "error",
  "warning",
  "notice",
  "information",
  "subscribe",
  "unsubscribe",
  "websockets"
]

/** Mosquitto's default `log_type`: error, warning, notice and information. */
export const defaultLogTypes: ReadonlyArray<LogType> = ["error", "warning", "notice", "information"]

const logTypeCheck = enumCheck<LogType | "none" | "all">([...allLogTypes, "none", "all"])

// ---------------------------------------------------------------------------
// schemas over the directives read for one option

const Int = (rule: IntRule) => fromDirective(Schema.Number, intCheck(rule))
export const Bool = fromDirective(Schema.Boolean, boolCheck)
export const Str = fromDirective(Schema.String, stringCheck)
const Enum = <L extends string>(values: ReadonlyArray<L>) =>
  fromDirective(Schema.Literal(...values) as unknown as Schema.Schema<L>, enumCheck(values))

/** conf.c: a later occurrence overwrites an earlier one. Every occurrence is still checked. */
export const last = <A>(item: Schema.Schema<A, Directive>): Schema.Schema<A, ReadonlyArray<Directive>> =>
  Schema.transform(Schema.Array(item), Schema.typeSchema(item), {
    strict: true,
    decode: (xs) => xs[xs.length - 1],
    encode: (x) => [x]
  })

/** Marker message `DUPLICATE + index of the first occurrence`; turned into "already set at file:line" below. */
const DUPLICATE = "\u0000duplicate:"

/**
 * Decode every directive of one option with `item`, and report as duplicates the
 * ones `firstOf` says repeat an earlier one (instead of their own errors, as
 * conf.c checks duplicates first). All issues are collected, one Pointer per directive.
 */
const eachOnce = <A>(
  item: Schema.Schema<A, Directive>,
  firstOf: (ds: ReadonlyArray<Directive>, i: number) => number | undefined
) => {
  const decodeItem = ParseResult.decodeUnknownEither(item)
  return (
    ds: ReadonlyArray<Directive>,
    options: AST.ParseOptions,
    ast: AST.AST
  ): Either.Either<Array<A>, ParseResult.ParseIssue> => {
    const values: Array<A> = []
    const issues: Array<ParseResult.Pointer> = []
    for (let i = 0; i < ds.length; i++) {
      const first = firstOf(ds, i)
      if (first !== undefined) {
        issues.push(new ParseResult.Pointer(i, ds, new ParseResult.Type(ast, ds[i], DUPLICATE + first)))
        continue
      }
      const r = decodeItem(ds[i], options)
      if (Either.isLeft(r)) issues.push(new ParseResult.Pointer(i, ds, r.left))
      else values.push(r.right)
    }
    return issues.length === 0
      ? Either.right(values)
      : Either.left(new ParseResult.Composite(ast, ds, issues as [ParseResult.Pointer, ...Array<ParseResult.Pointer>]))
  }
}

const Directives = Schema.Array(DirectiveSchema)

/** conf.c's `conf__parse_string`: a second value for the same option is "Duplicate ... value". */
export const once = <A>(item: Schema.Schema<A, Directive>): Schema.Schema<A, ReadonlyArray<Directive>> => {
  const decode = eachOnce(item, (_, i) => (i > 0 ? 0 : undefined))
  return Schema.transformOrFail(Directives, Schema.typeSchema(item), {
    strict: true,
    decode: (ds, options, ast) => Either.map(decode(ds, options, ast), (values) => values[0]),
    encode: (a, _, ast) => ParseResult.fail(new ParseResult.Forbidden(ast, a, "configuration is not encoded back to text"))
  })
}

/** a `log_dest file PATH` after an earlier one (a pathless `log_dest file` is its own error, not a first) */
const isFileDest = (d: Directive): boolean => d.args[0] === "file" && d.args.length > 1
const firstFile = (ds: ReadonlyArray<Directive>, i: number): number | undefined => {
  if (!isFileDest(ds[i])) return undefined
  const first = ds.findIndex(isFileDest)
  return first < i ? first : undefined
}

const decodeLogDests = eachOnce(fromDirective(Schema.Any as Schema.Schema<LogDest>, logDestCheck), firstFile)

/** conf.c: destinations accumulate, `none` clears them, only one `file` destination. */
const LogDests: Schema.Schema<ReadonlyArray<LogDest>, ReadonlyArray<Directive>> = Schema.transformOrFail(
  Directives,
  Schema.Array(Schema.Any as Schema.Schema<LogDest>),
  {
    strict: true,
    decode: (ds, options, ast) =>
      Either.map(decodeLogDests(ds, options, ast), (xs) => {
        let out: Array<LogDest> = []
        for (const x of xs) {
          if (x.kind === "none") out = []
          else if (!out.some((o) => o.kind === x.kind)) out.push(x)
        }
        return out.length === 0 ? [{ kind: "none" } as LogDest] : out
      }),
    encode: (a, _, ast) => ParseResult.fail(new ParseResult.Forbidden(ast, a, "configuration is not encoded back to text"))
  }
)

const LogTypes: Schema.Schema<ReadonlyArray<LogType>, ReadonlyArray<Directive>> = Schema.transform(
  Schema.Array(fromDirective(Schema.String as Schema.Schema<LogType | "none" | "all">, logTypeCheck)),
  Schema.Array(Schema.String as Schema.Schema<LogType>),
  {
    strict: true,
    decode: (xs) => {
      // conf.c: `none` clears, `all` sets every type; the result keeps the manual's order
      const on = new Set<LogType>()
      for (const x of xs) {
        if (x === "none") on.clear()
        else if (x === "all") for (const t of allLogTypes) on.add(t)
        else on.add(x)
      }
      return allLogTypes.filter((t) => on.has(t))
    },
    encode: (x) => x
  }
)

export const opt = <A>(key: string, s: Schema.Schema<A, ReadonlyArray<Directive>>) =>
  Schema.optionalWith(s, { exact: true }).pipe(Schema.fromKey(key))

export const def = <A>(key: string, s: Schema.Schema<A, ReadonlyArray<Directive>>, value: A) =>
  Schema.optionalWith(s, { exact: true, default: () => value }).pipe(Schema.fromKey(key))

// ---------------------------------------------------------------------------
// sections

/** Authentication options: broker-wide, or per listener when `per_listener_settings true`. */
const securityFields = {
  allowAnonymous: opt("allow_anonymous", last(Bool)),
  allowZeroLengthClientid: opt("allow_zero_length_clientid", last(Bool)),
  autoIdPrefix: opt("auto_id_prefix", once(Str)),
  passwordFile: opt("password_file", once(Str)),
  aclFile: opt("acl_file", once(Str)),
  pskFile: opt("psk_file", once(Str))
}

export const GlobalSection = Schema.Struct({
  ...securityFields,
  perListenerSettings: def("per_listener_settings", last(Bool), false),
  // conf.c parses it as a string: given twice, "Duplicate clientid_prefixes value" (read by src/security/Auth.ts)
  clientidPrefixes: opt("clientid_prefixes", once(Str)),
  // conf.c: negative or 65535 means "no maximum" (0)
  maxInflightMessages: def(
    "max_inflight_messages",
    last(Int({ max: 65535, adjust: (n) => (n < 0 || n === 65535 ? 0 : n) })),
    20
  ),
  // Mosquitto 2.1: network connections over every listener, and client sessions (connected or not); 0 or less: no limit
  globalMaxConnections: def("global_max_connections", last(Int({ adjust: (n) => (n <= 0 ? -1 : n) })), -1),
  globalMaxClients: def("global_max_clients", last(Int({ adjust: (n) => (n <= 0 ? -1 : n) })), -1),
  maxQueuedMessages: def("max_queued_messages", last(Int({ adjust: (n) => (n < 0 ? 0 : n) })), 1000),
  queueQos0Messages: def("queue_qos0_messages", last(Bool), false),
  maxInflightBytes: def("max_inflight_bytes", last(Int({ adjust: (n) => (n < 0 ? 0 : n) })), 0),
  maxQueuedBytes: def("max_queued_bytes", last(Int({ adjust: (n) => (n < 0 ? 0 : n) })), 0),
  memoryLimit: def("memory_limit", last(Int({ adjust: (n) => (n < 0 ? 0 : n) })), 0),
  maxKeepalive: def("max_keepalive", last(Int({ min: 0, max: 65535 })), 65535),
  // conf.c: "Setting below 20 bytes is forbidden"; 0 (no limit) is only the default
  maxPacketSize: def("max_packet_size", last(Int({ min: 20 })), 0),
  // MQTT's maximum payload: 268435455 bytes
  messageSizeLimit: def("message_size_limit", last(Int({ min: 0, max: 268435455 })), 0),
  persistentClientExpiration: opt("persistent_client_expiration", last(fromDirective(Schema.Number, expirationCheck))),
  retainAvailable: def("retain_available", last(Bool), true),
  // Mosquitto 2.1: seconds between sweeps of the retained messages whose Message Expiry Interval has passed; 0: none
  retainExpiryInterval: def("retain_expiry_interval", last(fromDirective(Schema.Number, retainExpiryCheck)), 0),
  upgradeOutgoingQos: def("upgrade_outgoing_qos", last(Bool), false),
  // Mosquitto 2.0's default (2.1 made it true and deprecated the option): one copy per client for overlapping subscriptions
  allowDuplicateMessages: def("allow_duplicate_messages", last(Bool), false),
  setTcpNodelay: def("set_tcp_nodelay", last(Bool), false),
  // Mosquitto 2.1: the broker answers $CONTROL/broker/v1 (listListeners, listPlugins)
  enableControlApi: def("enable_control_api", last(Bool), false),
  sysInterval: def("sys_interval", last(Int({ min: 0, max: 65535 })), 10),
  // the HTTP request headers a WebSocket upgrade may carry, bytes (0: Node's default, 16 KiB)
  websocketsHeadersSize: def("websockets_headers_size", last(Int({ min: 0, max: 1048576 })), 0),
  logDest: def("log_dest", LogDests, [{ kind: "stderr" }] as ReadonlyArray<LogDest>),
  logTypes: def("log_type", LogTypes, defaultLogTypes),
  connectionMessages: def("connection_messages", last(Bool), true),
  logTimestamp: def("log_timestamp", last(Bool), true),
  // the rest of the line, spaces included
  logTimestampFormat: opt("log_timestamp_format", once(Str)),
  // local0..local7; Mosquitto's default is the daemon facility
  logFacility: opt("log_facility", last(Int({ min: 0, max: 7 }))),
  checkRetainSource: def("check_retain_source", last(Bool), true),
  persistence: def("persistence", last(Bool), false),
  persistenceLocation: opt("persistence_location", once(Str)),
  persistenceFile: def("persistence_file", once(Str), "mosquitto.db"),
  autosaveInterval: def("autosave_interval", last(Int({ adjust: (n) => (n < 0 ? 0 : n) })), 1800),
  autosaveOnChanges: def("autosave_on_changes", last(Bool), false),
  // Midge-only: acknowledge QoS 1 / 2 only once on disk; what to do with a damaged store
  persistenceDurable: def("persistence_durable", last(Bool), false),
  persistenceOnCorrupt: def("persistence_on_corrupt", last(Enum(["recover", "refuse"] as const)), "recover" as "recover" | "refuse"),
  pidFile: opt("pid_file", once(Str)),
  // conf.c frees the previous value: the last one wins
  user: def("user", last(Str), "mosquitto"),
  // Midge-only; a later line replaces an earlier one
  metricsListener: opt("metrics_listener", last(fromDirective(Schema.Any as Schema.Schema<MetricsListenerLine>, metricsListenerCheck))),
  // Midge-only clustering through Redis (docs/cluster.md); a later line replaces an earlier one
  clusterRedisUrl: opt("cluster_redis_url", last(fromDirective(Schema.String, redisUrlCheck))),
  clusterNodeId: opt("cluster_node_id", last(fromDirective(Schema.String, clusterNameCheck))),
  clusterKeyPrefix: opt("cluster_key_prefix", last(fromDirective(Schema.String, clusterNameCheck)))
})

const listenerFields = {
  ...securityFields,
  maxConnections: def("max_connections", last(Int({ adjust: (n) => (n < 0 ? -1 : n) })), -1),
  // Mosquitto 2.1: the MQTT versions this listener serves; the listener's own allow_anonymous and
  // auto_id_prefix, with or without per_listener_settings
  acceptProtocolVersions: opt("accept_protocol_versions", last(fromDirective(Schema.Array(Schema.Literal(3, 4, 5)), protocolVersionsCheck))),
  listenerAllowAnonymous: opt("listener_allow_anonymous", last(Bool)),
  listenerAutoIdPrefix: opt("listener_auto_id_prefix", last(fromDirective(Schema.String, autoIdPrefixCheck))),
  protocol: def("protocol", last(Enum(["mqtt", "websockets"] as const)), "mqtt" as "mqtt" | "websockets"),
  socketDomain: opt("socket_domain", last(Enum(["ipv4", "ipv6"] as const))),
  bindInterface: opt("bind_interface", once(Str)),
  mountPoint: opt("mount_point", once(fromDirective(Schema.String, mountPointCheck))),
  // `max_qos` (and conf.c's older spelling `maximum_qos`): the highest QoS this listener's clients may use
  maxQos: opt("max_qos", last(Int({ min: 0, max: 2 }))),
  maximumQos: opt("maximum_qos", last(Int({ min: 0, max: 2 }))),
  // MQTT 5 topic aliases a client may create on this listener (CONNACK Topic Alias Maximum; 0: none)
  maxTopicAlias: def("max_topic_alias", last(Int({ min: 0, max: 65535 })), 10),
  // Mosquitto 2.1: topic aliases the broker may give its PUBLISHes to one v5 client (at most the client's own maximum; 0: none)
  maxTopicAliasBroker: def("max_topic_alias_broker", last(Int({ min: 0, max: 65535 })), 10),
  // the client id is replaced by the username (a client without one is not authorised)
  useUsernameAsClientid: def("use_username_as_clientid", last(Bool), false),
  // TLS / TLS-PSK (certificate-based and pre-shared-key listeners) and WebSocket static files
  cafile: opt("cafile", once(Str)),
  capath: opt("capath", once(Str)),
  certfile: opt("certfile", once(Str)),
  keyfile: opt("keyfile", once(Str)),
  requireCertificate: opt("require_certificate", last(Bool)),
  crlfile: opt("crlfile", once(Str)),
  tlsVersion: opt("tls_version", last(Enum(["tlsv1.3", "tlsv1.2", "tlsv1.1"] as const))),
  ciphers: opt("ciphers", once(Str)),
  ciphersTls13: opt("ciphers_tls1.3", once(Str)),
  pskHint: opt("psk_hint", once(Str)),
  dhparamfile: opt("dhparamfile", once(Str)),
  useIdentityAsUsername: opt("use_identity_as_username", last(Bool)),
  useSubjectAsUsername: opt("use_subject_as_username", last(Bool)),
  // Mosquitto 2.1: a client certificate outside its validity dates is accepted (the chain is still checked)
  disableClientCertDateChecks: opt("disable_client_cert_date_checks", last(Bool)),
  httpDir: opt("http_dir", once(Str)),
  // Mosquitto 2.1: a WebSocket upgrade whose Origin header is not one of these is refused; repeatable
  websocketsOrigins: opt("websockets_origin", Schema.Array(Str)),
  // Mosquitto 2.1: every connection starts with a PROXY protocol header of this version (transport/proxyProtocol.ts)
  enableProxyProtocol: opt("enable_proxy_protocol", last(fromDirective(Schema.Literal(1, 2), proxyVersionCheck))),
  proxyProtocolV2RequireTls: def("proxy_protocol_v2_require_tls", last(Bool), false)
}

export const ListenerSection = Schema.Struct({
  listener: last(fromDirective(Schema.Any as Schema.Schema<ListenerLine>, listenerCheck)),
  ...listenerFields
})

/** The implicit listener of `port` / `bind_address` and of listener options given before any `listener`. */
export const DefaultListenerSection = Schema.Struct({
  port: opt("port", last(Int({ min: 1, max: 65535 }))),
  bindAddress: opt("bind_address", once(Str)),
  ...listenerFields
})

export const RawConfig = Schema.Struct({
  global: GlobalSection,
  defaultListener: DefaultListenerSection,
  listeners: Schema.Array(ListenerSection)
})

export type DecodedConfig = Schema.Schema.Type<typeof RawConfig>
export type DecodedListener = Schema.Schema.Type<typeof ListenerSection>
export type DecodedDefaultListener = Schema.Schema.Type<typeof DefaultListenerSection>

/** Directives grouped by snake_case option name, as the structuring pass builds them. */
export type Section = Record<string, Array<Directive>>

export interface RawInput {
  readonly global: Section
  readonly defaultListener: Section
  readonly listeners: ReadonlyArray<Section>
}

const decodeAll = Schema.decodeUnknownEither(RawConfig, { errors: "all" })

/** Decode; every failing directive becomes one `file:line option: message` problem. */
export const decodeConfig = (raw: RawInput): Either.Either<DecodedConfig, ReadonlyArray<Problem>> =>
  Either.mapLeft(decodeAll(raw), (error) => directiveProblems(raw, error))

/**
 * Every failing directive of a decode of `input` (sections of directives) as
 * `file:line option: message`, duplicates pointing at the first occurrence.
 */
export const directiveProblems = (input: unknown, error: ParseResult.ParseError): Array<Problem> => {
  const problems: Array<Problem> = []
  for (const issue of ParseResult.ArrayFormatter.formatErrorSync(error)) {
    let cur: unknown = input
    let parent: unknown = undefined
    let found: Directive | undefined
    for (const key of issue.path) {
      parent = cur
      cur = cur !== null && typeof cur === "object" ? (cur as Record<PropertyKey, unknown>)[key] : undefined
      if (isDirective(cur)) {
        found = cur
        break
      }
    }
    if (found === undefined) {
      problems.push({ file: "", line: 0, option: issue.path.join("."), message: issue.message })
      continue
    }
    let message = issue.message
    if (message.startsWith(DUPLICATE)) {
      const first = Array.isArray(parent) ? (parent[Number(message.slice(DUPLICATE.length))] as Directive) : undefined
      message = first === undefined ? "duplicate value" : `duplicate value: already set at ${first.file}:${first.line}`
    }
    problems.push({ file: found.file, line: found.line, option: found.option, message })
  }
  return problems
}
