/**
 * Bridge blocks of mosquitto.conf -> typed {@link BridgeConfig}s, with the
 * value rules of Mosquitto's conf.c (2.0, plus 2.1's `restart_timeout` forms):
 *
 * - `connection NAME` starts a block; every bridge option after it (until the
 *   next `connection`, listener lines notwithstanding) belongs to it. Names are
 *   unique.
 * - `address` / `addresses` once per block: `host[:port]` tokens, the port
 *   after the LAST ':' (so an IPv6 address needs its port), default 1883.
 * - `topic PATTERN [out|in|both [QOS [LOCAL_PREFIX [REMOTE_PREFIX]]]]`, `""`
 *   for an empty pattern or prefix (bridge_topic.c `bridge__add_topic`);
 *   duplicates are skipped. A block needs an address and a topic.
 * - strings (client ids, credentials, files, notification_topic) may be given
 *   once ("duplicate value"); numbers and booleans: the last one wins; conf.c's
 *   clamps are kept (keepalive_interval >= 5, idle_timeout >= 1, threshold >= 1,
 *   restart_timeout 1..3600 with a cap <= 7200).
 * - `remote_clientid` defaults to `HOSTNAME.NAME`, `local_clientid` to
 *   `local.` + the remote client id (config__check), and local client ids must
 *   be unique.
 *
 * Snake-case names exist only in the Schema fields (Schema.fromKey); every
 * failure is reported as `file:line option: message`.
 */
import * as os from "node:os"
import { Either, Schema } from "effect"
import { ConfigError, type ConfigProblem, type Directive } from "../../config/Config.js"
import { lookupOption } from "../../config/internal/options.js"
import { Bool, type Check, def, directiveProblems, fromDirective, isComment, last, once, opt, Str, stringCheck, toInt } from "../../config/internal/schema.js"
import { validateTopicFilter, validateTopicName } from "../../protocol/topic.js"
import type { QoS } from "../../session/Message.js"
import { type BridgeDirection, type BridgeTopic, makeTopic } from "./topics.js"

// ---------------------------------------------------------------------------
// types

export interface BridgeAddress {
  readonly host: string
  readonly port: number
}

/**
 * `restart_timeout`: one value is a constant delay; `BASE CAP [STABLE]` is
 * Mosquitto's decorrelated-jitter backoff, reset after a connection that
 * lasted STABLE seconds (0: any connection that reached CONNACK). Seconds.
 */
export type RestartTimeout =
  | { readonly _tag: "Constant"; readonly seconds: number }
  | { readonly _tag: "Backoff"; readonly base: number; readonly cap: number; readonly stable: number }

export type StartType = "automatic" | "lazy" | "once"

export type TlsVersion = "tlsv1.3" | "tlsv1.2" | "tlsv1.1"

/** Present when the bridge uses TLS: `bridge_cafile`, `bridge_capath`, `bridge_psk` or `bridge_tls_use_os_certs` is set (as in Mosquitto). */
export interface BridgeTls {
  readonly cafile: string | undefined
  readonly capath: string | undefined
  readonly certfile: string | undefined
  readonly keyfile: string | undefined
  /** skip the host name check of the remote certificate */
  readonly insecure: boolean
  readonly alpn: string | undefined
  /** the minimum version; default tlsv1.2 */
  readonly version: TlsVersion | undefined
  readonly ciphers: string | undefined
  readonly ciphersTls13: string | undefined
  readonly pskIdentity: string | undefined
  /** hex */
  readonly psk: string | undefined
  /** `bridge_tls_use_os_certs`: trust the system's CA certificates too */
  readonly useOsCerts: boolean
  /** `bridge_require_ocsp`: the remote must staple a good OCSP response for its certificate */
  readonly requireOcsp: boolean
}

/** `bridge_tcp_keepalive IDLE INTERVAL COUNT`: TCP keepalive probes after IDLE seconds of silence. */
export interface TcpKeepalive {
  readonly idle: number
  readonly interval: number
  readonly count: number
}

export interface BridgeConfig {
  readonly name: string
  /** where its `connection` line is */
  readonly file: string
  readonly line: number
  readonly addresses: ReadonlyArray<BridgeAddress>
  readonly roundRobin: boolean
  readonly bindAddress: string | undefined
  readonly topics: ReadonlyArray<BridgeTopic>
  readonly remoteClientId: string
  readonly localClientId: string
  readonly cleanSession: boolean
  readonly localCleanSession: boolean
  readonly remoteUsername: string | undefined
  readonly remotePassword: string | undefined
  readonly localUsername: string | undefined
  readonly localPassword: string | undefined
  /** seconds */
  readonly keepalive: number
  readonly notifications: boolean
  /** `notification_topic`, or `$SYS/broker/connection/<remote client id>/state` */
  readonly notificationTopic: string
  readonly notificationsLocalOnly: boolean
  readonly tryPrivate: boolean
  readonly protocolVersion: 3 | 4 | 5
  readonly attemptUnsubscribe: boolean
  readonly outgoingRetain: boolean
  /** largest PUBLISH sent to the remote broker, whole packet; 0 = no limit */
  readonly maxPacketSize: number
  readonly startType: StartType
  /**
   * `bridge_reload_type` (Mosquitto 2.1): when a reload that changed this bridge takes effect:
   * `lazy` at its next reconnection (a connected bridge keeps its link), `immediate` at once
   */
  readonly reloadType: "lazy" | "immediate"
  readonly restartTimeout: RestartTimeout
  /** seconds (lazy) */
  readonly idleTimeout: number
  /** queued messages that start a lazy bridge */
  readonly threshold: number
  /** MQTT 5 CONNECT properties; 0 = not sent */
  readonly sessionExpiryInterval: number
  readonly receiveMaximum: number
  readonly maxTopicAlias: number
  /** `bridge_tcp_keepalive`; undefined: off */
  readonly tcpKeepalive: TcpKeepalive | undefined
  readonly tls: BridgeTls | undefined
}

// ---------------------------------------------------------------------------
// directive -> value checks

/** A check with its result's type left to the caller (bridge values are not re-encoded). */
const check = <A>(c: Check<A>): Schema.Schema<A, Directive> => fromDirective(Schema.Any as Schema.Schema<A>, c)

/** the values before a trailing `# comment` */
const values = (d: Directive): ReadonlyArray<string> => {
  const i = d.args.findIndex(isComment)
  return i < 0 ? d.args : d.args.slice(0, i)
}

const oneValue = (d: Directive): Either.Either<string, string> => {
  const v = values(d)
  if (v.length === 0) return Either.left("missing value")
  if (v.length > 1) return Either.left(`expected one value, got ${v.length}: "${d.value}"`)
  return Either.right(v[0])
}

const intCheck =
  (adjust: (n: number) => Either.Either<number, string>): Check<number> =>
  (d) =>
    Either.flatMap(Either.flatMap(oneValue(d), toInt), adjust)

const enumCheck =
  <L extends string>(choices: ReadonlyArray<L>, what = "value"): Check<L> =>
  (d) =>
    Either.flatMap(oneValue(d), (s) =>
      (choices as ReadonlyArray<string>).includes(s)
        ? Either.right(s as L)
        : Either.left(`invalid ${what} "${s}": expected ${choices.join(", ")}`)
    )

const nameCheck: Check<string> = (d) => {
  const v = values(d)
  if (v.length === 0) return Either.left("missing bridge name")
  if (v.length > 1) return Either.left(`expected one bridge name, got ${v.length}: "${d.value}"`)
  return Either.right(v[0])
}

/** `host[:port]`: the port follows the last ':' (an IPv6 address needs one); `[v6]:port` is accepted too. */
const parseAddress = (token: string): Either.Either<BridgeAddress, string> => {
  const colon = token.lastIndexOf(":")
  let host = token
  let port = 1883
  if (colon >= 0) {
    const p = token.slice(colon + 1)
    if (!/^\d+$/.test(p) || Number(p) < 1 || Number(p) > 65535) {
      return Either.left(`invalid port "${p}" in "${token}": must be between 1 and 65535`)
    }
    port = Number(p)
    host = token.slice(0, colon)
  }
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1)
  return host.length === 0 ? Either.left(`invalid address "${token}": no host`) : Either.right({ host, port })
}

const addressesCheck: Check<ReadonlyArray<BridgeAddress>> = (d) => {
  const v = values(d)
  if (v.length === 0) return Either.left("missing value")
  const out: Array<BridgeAddress> = []
  for (const token of v) {
    const a = parseAddress(token)
    if (Either.isLeft(a)) return Either.left(a.left)
    out.push(a.right)
  }
  return Either.right(out)
}

const prefixCheck = (which: string, prefix: string | undefined): string | undefined => {
  if (prefix === undefined) return undefined
  // bridge__add_topic: mosquitto_pub_topic_check on each prefix
  return validateTopicName(prefix) ? undefined : `invalid bridge topic ${which} prefix "${prefix}": it must not contain + or #`
}

const placeholder = (s: string | undefined): string | undefined => (s === undefined || s === '""' ? undefined : s)

/** `topic PATTERN [out|in|both [QOS [LOCAL_PREFIX [REMOTE_PREFIX]]]]`, as conf.c and bridge__add_topic read it. */
const topicCheck: Check<BridgeTopic> = (d) => {
  const [patternText, ...rest] = d.args
  if (patternText === undefined) return Either.left("missing topic pattern")
  // after the pattern (which may itself be `#`), a token starting with `#` begins a comment
  const end = rest.findIndex(isComment)
  const args = end < 0 ? rest : rest.slice(0, end)
  if (args.length > 4) return Either.left(`expected at most 5 values, got ${args.length + 1}: "${d.value}"`)
  const [dirText, qosText, localText, remoteText] = args
  let direction: BridgeDirection = "out"
  if (dirText !== undefined) {
    const lower = dirText.toLowerCase() // strcasecmp
    if (lower !== "out" && lower !== "in" && lower !== "both") return Either.left(`invalid bridge topic direction "${dirText}": expected out, in or both`)
    direction = lower
  }
  let qos: QoS = 0
  if (qosText !== undefined) {
    if (!/^[012]$/.test(qosText)) return Either.left(`invalid bridge QoS level "${qosText}": expected 0, 1 or 2`)
    qos = Number(qosText) as QoS
  }
  const pattern = placeholder(patternText)
  const localPrefix = placeholder(localText)
  const remotePrefix = placeholder(remoteText)
  const bad = prefixCheck("local", localPrefix) ?? prefixCheck("remote", remotePrefix)
  if (bad !== undefined) return Either.left(bad)
  if (pattern === undefined && (localPrefix === undefined || remotePrefix === undefined)) {
    return Either.left('invalid bridge remapping: an empty ("") pattern needs both a local and a remote prefix')
  }
  const topic = makeTopic(pattern, direction, qos, localPrefix, remotePrefix)
  // bridge__create_prefix: prefix + pattern must be a valid subscription
  for (const [which, filter] of [["local", topic.localTopic], ["remote", topic.remoteTopic]] as const) {
    if (!validateTopicFilter(filter)) return Either.left(`invalid bridge topic ${which} prefix and pattern combination "${filter}"`)
  }
  return Either.right(topic)
}

/** conf.c (2.1): `restart_timeout CONSTANT` or `restart_timeout BASE CAP [STABLE]`, seconds. */
const restartCheck: Check<RestartTimeout> = (d) => {
  const v = values(d)
  if (v.length === 0) return Either.left("missing value")
  if (v.length > 3) return Either.left(`expected 1 to 3 values, got ${v.length}: "${d.value}"`)
  const ints: Array<number> = []
  for (const s of v) {
    const n = toInt(s)
    if (Either.isLeft(n)) return Either.left(n.left)
    ints.push(n.right)
  }
  const first = Math.min(3600, Math.max(1, ints[0]))
  if (ints.length === 1) return Either.right({ _tag: "Constant", seconds: first })
  const cap = ints[1]
  if (cap < first) return Either.left(`invalid value: the backoff cap ${cap} is lower than the base ${first}`)
  const stable = ints[2] ?? 0
  if (stable < 0) return Either.left(`invalid value: the stable connection period ${stable} is negative`)
  return Either.right({ _tag: "Backoff", base: first, cap: Math.min(7200, cap), stable })
}

/** conf.c: `bridge_tcp_keepalive IDLE INTERVAL COUNT`, three integers above 0. */
const tcpKeepaliveCheck: Check<TcpKeepalive> = (d) => {
  const v = values(d)
  if (v.length !== 3) return Either.left(`expected 3 values (idle interval count), got ${v.length}: "${d.value}"`)
  const ints: Array<number> = []
  for (const [i, s] of v.entries()) {
    const n = toInt(s)
    if (Either.isLeft(n)) return Either.left(n.left)
    if (n.right <= 0) return Either.left(`invalid TCP keepalive ${["idle", "interval", "count"][i]} value ${n.right}: must be greater than 0`)
    ints.push(n.right)
  }
  return Either.right({ idle: ints[0], interval: ints[1], count: ints[2] })
}

const protocolCheck: Check<3 | 4 | 5> = (d) =>
  Either.map(enumCheck(["mqttv31", "mqttv311", "mqttv50"] as const, "bridge_protocol_version")(d), (v) =>
    v === "mqttv31" ? 3 : v === "mqttv311" ? 4 : 5
  )

const startTypeCheck: Check<StartType> = (d) =>
  Either.flatMap(oneValue(d), (s) =>
    s === "manual"
      ? Either.left('start_type "manual" is not supported (as in Mosquitto)')
      : enumCheck(["automatic", "lazy", "once"] as const, "start_type")(d)
  )

const notificationTopicCheck: Check<string> = (d) =>
  Either.flatMap(stringCheck(d), (s) => (validateTopicName(s) ? Either.right(s) : Either.left(`invalid notification_topic "${s}": not a valid topic name`)))

const pskCheck: Check<string> = (d) =>
  Either.flatMap(stringCheck(d), (s) => (/^([0-9a-fA-F]{2})+$/.test(s) ? Either.right(s) : Either.left("invalid bridge_psk: expected a hexadecimal key without 0x")))

const atLeast = (min: number) => (n: number) => Either.right(n < min ? min : n)

// ---------------------------------------------------------------------------
// per-option schemas

const Int = (adjust: (n: number) => Either.Either<number, string>) => check(intCheck(adjust))

/** One bridge block, directives grouped by option (aliases merged under the canonical name). */
export const BridgeSection = Schema.Struct({
  name: last(check(nameCheck)).pipe(Schema.propertySignature, Schema.fromKey("connection")),
  addresses: opt("address", once(check(addressesCheck))),
  topics: def("topic", Schema.Array(check(topicCheck)), []),
  roundRobin: def("round_robin", last(Bool), false),
  bindAddress: opt("bridge_bind_address", once(Str)),
  remoteClientId: opt("remote_clientid", once(Str)),
  localClientId: opt("local_clientid", once(Str)),
  cleanSession: def("cleansession", last(Bool), false),
  localCleanSession: opt("local_cleansession", last(Bool)),
  remoteUsername: opt("remote_username", once(Str)),
  remotePassword: opt("remote_password", once(Str)),
  localUsername: opt("local_username", once(Str)),
  localPassword: opt("local_password", once(Str)),
  keepalive: def(
    "keepalive_interval",
    last(Int((n) => (n > 65535 ? Either.left(`invalid value ${n}: bridge keepalive must be at most 65535`) : atLeast(5)(n)))),
    60
  ),
  notifications: def("notifications", last(Bool), true),
  notificationTopic: opt("notification_topic", once(check(notificationTopicCheck))),
  notificationsLocalOnly: def("notifications_local_only", last(Bool), false),
  tryPrivate: def("try_private", last(Bool), true),
  protocolVersion: def("bridge_protocol_version", last(check(protocolCheck)), 4 as 3 | 4 | 5),
  attemptUnsubscribe: def("bridge_attempt_unsubscribe", last(Bool), true),
  outgoingRetain: def("bridge_outgoing_retain", last(Bool), true),
  maxPacketSize: def("bridge_max_packet_size", last(Int(atLeast(0))), 0),
  startType: def("start_type", last(check(startTypeCheck)), "automatic" as StartType),
  reloadType: def("bridge_reload_type", last(check(enumCheck(["lazy", "immediate"] as const, "bridge_reload_type"))), "lazy" as "lazy" | "immediate"),
  restartTimeout: def("restart_timeout", last(check(restartCheck)), { _tag: "Backoff", base: 5, cap: 30, stable: 0 } as RestartTimeout),
  idleTimeout: def("idle_timeout", last(Int(atLeast(1))), 60),
  threshold: def("threshold", last(Int(atLeast(1))), 10),
  sessionExpiryInterval: def(
    "bridge_session_expiry_interval",
    last(Int((n) => (n < 0 ? Either.left(`invalid value ${n}: must be at least 0`) : Either.right(n)))),
    0
  ),
  receiveMaximum: def(
    "bridge_receive_maximum",
    last(Int((n) => (n < 1 || n > 65535 ? Either.left(`invalid value ${n}: must be between 1 and 65535`) : Either.right(n)))),
    0
  ),
  maxTopicAlias: def(
    "bridge_max_topic_alias",
    last(Int((n) => (n < 0 || n > 65535 ? Either.left(`invalid value ${n}: must be between 0 and 65535`) : Either.right(n)))),
    10
  ),
  tcpKeepalive: opt("bridge_tcp_keepalive", last(check(tcpKeepaliveCheck))),
  cafile: opt("bridge_cafile", once(Str)),
  capath: opt("bridge_capath", once(Str)),
  certfile: opt("bridge_certfile", once(Str)),
  keyfile: opt("bridge_keyfile", once(Str)),
  insecure: def("bridge_insecure", last(Bool), false),
  alpn: opt("bridge_alpn", once(Str)),
  tlsVersion: opt("bridge_tls_version", once(check(enumCheck(["tlsv1.3", "tlsv1.2", "tlsv1.1"] as const, "bridge_tls_version")))),
  ciphers: opt("bridge_ciphers", once(Str)),
  ciphersTls13: opt("bridge_ciphers_tls1.3", once(Str)),
  pskIdentity: opt("bridge_identity", once(Str)),
  psk: opt("bridge_psk", once(check(pskCheck))),
  useOsCerts: def("bridge_tls_use_os_certs", last(Bool), false),
  requireOcsp: def("bridge_require_ocsp", last(Bool), false)
})

type Decoded = Schema.Schema.Type<typeof BridgeSection>

/** The bridge options Midge decodes (the Schema keys), plus the older spellings conf.c also takes. */
const ALIASES: Readonly<Record<string, string>> = {
  addresses: "address",
  clientid: "remote_clientid",
  username: "remote_username",
  password: "remote_password"
}

// ---------------------------------------------------------------------------
// blocks

type Section = Record<string, Array<Directive>>

const problemAt = (d: { readonly file: string; readonly line: number }, option: string, message: string): ConfigProblem => ({
  file: d.file,
  line: d.line,
  option,
  message
})

/** Split the bridge directives into blocks, one per `connection` line. Directives of other scopes are ignored. */
const blocks = (directives: ReadonlyArray<Directive>): Array<{ readonly start: Directive; readonly section: Section }> => {
  const out: Array<{ start: Directive; section: Section }> = []
  for (const d of directives) {
    const scope = lookupOption(d.option)?.scope
    if (scope === "bridge-start") {
      out.push({ start: d, section: { connection: [d] } })
      continue
    }
    if (scope !== "bridge") continue
    const current = out[out.length - 1]
    if (current === undefined) continue // reported by the config module (an option before `connection`)
    const key = ALIASES[d.option] ?? d.option
    ;(current.section[key] ??= []).push(d)
  }
  return out
}

const decodeSection = Schema.decodeUnknownEither(BridgeSection, { errors: "all" })

const sameTopic = (a: BridgeTopic, b: BridgeTopic): boolean =>
  a.direction === b.direction && a.qos === b.qos && a.pattern === b.pattern && a.localPrefix === b.localPrefix && a.remotePrefix === b.remotePrefix

const build = (start: Directive, section: Section, d: Decoded, hostname: string, problems: Array<ConfigProblem>): BridgeConfig | undefined => {
  let ok = true
  const fail = (at: Directive, message: string) => {
    problems.push(problemAt(at, at.option, message))
    ok = false
  }
  // config__read: a bridge needs an address and a topic
  if (d.addresses === undefined) fail(start, `invalid bridge configuration: bridge "${d.name}" has no address`)
  if (d.topics.length === 0) fail(start, `invalid bridge configuration: bridge "${d.name}" has no topic`)
  // conf.c: certificates and PSK are exclusive; a PSK needs its identity and the other way round
  const psk = section.bridge_psk?.[0]
  const identity = section.bridge_identity?.[0]
  const certOption = ["bridge_cafile", "bridge_capath", "bridge_certfile", "bridge_keyfile"].find((k) => section[k] !== undefined)
  if ((psk !== undefined || identity !== undefined) && certOption !== undefined) {
    fail((psk ?? identity)!, "cannot use both certificate and psk encryption in a single bridge")
  }
  if (psk !== undefined && identity === undefined) fail(psk, "invalid bridge configuration: missing bridge_identity")
  if (identity !== undefined && psk === undefined) fail(identity, "invalid bridge configuration: missing bridge_psk")
  const certfile = section.bridge_certfile?.[0]
  const keyfile = section.bridge_keyfile?.[0]
  if ((certfile === undefined) !== (keyfile === undefined)) {
    fail((certfile ?? keyfile)!, "both bridge_certfile and bridge_keyfile must be provided if one of them is set")
  }
  if (!ok) return undefined

  const topics: Array<BridgeTopic> = []
  for (const t of d.topics) if (!topics.some((x) => sameTopic(x, t))) topics.push(t)
  const remoteClientId = d.remoteClientId ?? `${hostname}.${d.name}`
  const tlsOn = d.cafile !== undefined || d.capath !== undefined || d.psk !== undefined || d.useOsCerts
  return {
    name: d.name,
    file: start.file,
    line: start.line,
    addresses: d.addresses!,
    roundRobin: d.roundRobin,
    bindAddress: d.bindAddress,
    topics,
    remoteClientId,
    localClientId: d.localClientId ?? `local.${remoteClientId}`,
    cleanSession: d.cleanSession,
    localCleanSession: d.localCleanSession ?? d.cleanSession,
    remoteUsername: d.remoteUsername,
    remotePassword: d.remotePassword,
    localUsername: d.localUsername,
    localPassword: d.localPassword,
    keepalive: d.keepalive,
    notifications: d.notifications,
    notificationTopic: d.notificationTopic ?? `$SYS/broker/connection/${remoteClientId}/state`,
    notificationsLocalOnly: d.notificationsLocalOnly,
    tryPrivate: d.tryPrivate,
    protocolVersion: d.protocolVersion,
    attemptUnsubscribe: d.attemptUnsubscribe,
    outgoingRetain: d.outgoingRetain,
    maxPacketSize: d.maxPacketSize,
    startType: d.startType,
    reloadType: d.reloadType,
    restartTimeout: d.restartTimeout,
    idleTimeout: d.idleTimeout,
    threshold: d.threshold,
    sessionExpiryInterval: d.sessionExpiryInterval,
    receiveMaximum: d.receiveMaximum,
    maxTopicAlias: d.maxTopicAlias,
    tcpKeepalive: d.tcpKeepalive,
    tls: tlsOn
      ? {
          cafile: d.cafile,
          capath: d.capath,
          certfile: d.certfile,
          keyfile: d.keyfile,
          insecure: d.insecure,
          alpn: d.alpn,
          version: d.tlsVersion,
          ciphers: d.ciphers,
          ciphersTls13: d.ciphersTls13,
          pskIdentity: d.pskIdentity,
          psk: d.psk,
          useOsCerts: d.useOsCerts,
          requireOcsp: d.requireOcsp
        }
      : undefined
  }
}

/**
 * The bridges of a configuration (`BrokerConfig.directives`), or a ConfigError
 * listing every problem as `file:line option: message`. `hostname` names the
 * default remote client id (`HOSTNAME.NAME`), os.hostname() by default.
 */
export const decodeBridges = (
  directives: ReadonlyArray<Directive>,
  hostname: string = os.hostname()
): Either.Either<ReadonlyArray<BridgeConfig>, ConfigError> => {
  const problems: Array<ConfigProblem> = []
  const out: Array<BridgeConfig> = []
  const names = new Map<string, Directive>()
  const localIds = new Map<string, Directive>()
  for (const { start, section } of blocks(directives)) {
    const decoded = decodeSection(section)
    if (Either.isLeft(decoded)) {
      problems.push(...directiveProblems(section, decoded.left))
      continue
    }
    const name = decoded.right.name
    const seen = names.get(name)
    if (seen !== undefined) {
      problems.push(problemAt(start, start.option, `duplicate bridge name "${name}": already used at ${seen.file}:${seen.line}`))
      continue
    }
    names.set(name, start)
    const bridge = build(start, section, decoded.right, hostname, problems)
    if (bridge === undefined) continue
    // config__check: local client ids must be unique
    const other = localIds.get(bridge.localClientId)
    if (other !== undefined) {
      problems.push(
        problemAt(start, start.option, `bridge local_clientid "${bridge.localClientId}" is not unique (also used by the bridge at ${other.file}:${other.line}); set local_clientid for one of them`)
      )
      continue
    }
    localIds.set(bridge.localClientId, start)
    out.push(bridge)
  }
  if (problems.length > 0) {
    const key = (p: ConfigProblem) => directives.findIndex((d) => d.file === p.file && d.line === p.line)
    problems.sort((a, b) => key(a) - key(b))
    return Either.left(new ConfigError({ reason: "InvalidConfig", problems }))
  }
  return Either.right(out)
}
