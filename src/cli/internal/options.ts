/**
 * The command lines of `midge pub` and `midge sub`, read as Mosquitto's
 * client_config_load / client_config_line_proc read those of
 * `mosquitto_pub` and `mosquitto_sub`: the same flags, the same defaults,
 * the same checks in the same order, the same error texts. Pure: argv (and
 * the text of the default options file) in, a `ClientConfig` or an outcome
 * out.
 */
import { atof, atoi, strtol0 } from "./cstring.js"
import { emptyPropertySet, parseProperty, type PropertySet } from "./properties.js"

export type Tool = "pub" | "sub"

export type PubMode = "none" | "message" | "file" | "stdin-file" | "stdin-line" | "null"

export interface TlsConfig {
  readonly cafile: string | undefined
  readonly capath: string | undefined
  readonly certfile: string | undefined
  readonly keyfile: string | undefined
  readonly keyform: string | undefined
  readonly ciphers: string | undefined
  readonly alpn: string | undefined
  readonly version: string | undefined
  readonly insecure: boolean
  readonly useOsCerts: boolean
  readonly engine: string | undefined
  readonly psk: string | undefined
  readonly pskIdentity: string | undefined
}

export interface ClientConfig {
  readonly tool: Tool
  readonly host: string
  /** undefined: 1883, or 8883 with TLS */
  readonly port: number | undefined
  readonly unixSocket: string | undefined
  readonly bindAddress: string | undefined
  readonly transport: "tcp" | "websockets"
  /** from `-L mqtts://` / `wss://` */
  readonly urlTls: boolean
  readonly protocolVersion: 3 | 4 | 5
  readonly id: string | undefined
  readonly idPrefix: string | undefined
  readonly keepalive: number
  readonly cleanSession: boolean
  /** -1: not set */
  readonly sessionExpiry: number
  readonly qos: 0 | 1 | 2
  readonly username: string | undefined
  readonly password: string | undefined
  readonly will:
    | { readonly topic: string; readonly payload: Buffer; readonly qos: 0 | 1 | 2; readonly retain: boolean }
    | undefined
  readonly debug: boolean
  readonly quiet: boolean
  readonly nodelay: boolean
  readonly maxInflight: number
  readonly tls: TlsConfig
  readonly proxy: string | undefined
  readonly properties: PropertySet
  // pub
  readonly topic: string | undefined
  readonly pubMode: PubMode
  readonly message: Buffer | undefined
  readonly file: string | undefined
  readonly retain: boolean
  readonly repeatCount: number
  readonly repeatDelayMs: number
  // sub
  readonly topics: ReadonlyArray<string>
  readonly filterOuts: ReadonlyArray<string>
  readonly unsubTopics: ReadonlyArray<string>
  readonly verbose: boolean
  readonly eol: boolean
  readonly msgCount: number
  readonly timeout: number
  readonly noRetain: boolean
  readonly retainedOnly: boolean
  readonly removeRetained: boolean
  readonly exitAfterSub: boolean
  readonly format: string | undefined
  readonly pretty: boolean
  /** per 10000 */
  readonly randomFilter: number
  readonly noLocal: boolean
  readonly retainAsPublished: boolean
  readonly retainHandling: 0 | 1 | 2
}

export type ParseOutcome =
  | { readonly _tag: "Config"; readonly config: ClientConfig }
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" }
  /** `text` goes to stderr; `usageHint` adds "Use '... --help' to see usage." */
  | { readonly _tag: "Error"; readonly text: string; readonly usageHint: boolean }

/** MQTT_MAX_PAYLOAD */
export const MAX_PAYLOAD = 268435455

const UINT32_MAX = 4294967295

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends ReadonlyArray<infer E> ? Array<E> : T[K] }

const initialConfig = (tool: Tool): Omit<Mutable<ClientConfig>, "tls"> & { tls: Mutable<TlsConfig> } => ({
  tool,
  host: "",
  port: undefined,
  unixSocket: undefined,
  bindAddress: undefined,
  transport: "tcp",
  urlTls: false,
  protocolVersion: 4,
  id: undefined,
  idPrefix: undefined,
  keepalive: 60,
  cleanSession: true,
  sessionExpiry: -1,
  qos: 0,
  username: undefined,
  password: undefined,
  will: undefined,
  debug: false,
  quiet: false,
  nodelay: false,
  maxInflight: 20,
  tls: {
    cafile: undefined,
    capath: undefined,
    certfile: undefined,
    keyfile: undefined,
    keyform: undefined,
    ciphers: undefined,
    alpn: undefined,
    version: undefined,
    insecure: false,
    useOsCerts: false,
    engine: undefined,
    psk: undefined,
    pskIdentity: undefined
  },
  proxy: undefined,
  properties: emptyPropertySet(),
  topic: undefined,
  pubMode: "none",
  message: undefined,
  file: undefined,
  retain: false,
  repeatCount: 1,
  repeatDelayMs: 0,
  topics: [],
  filterOuts: [],
  unsubTopics: [],
  verbose: false,
  eol: true,
  msgCount: 0,
  timeout: 0,
  noRetain: false,
  retainedOnly: false,
  removeRetained: false,
  exitAfterSub: false,
  format: undefined,
  pretty: false,
  randomFilter: 10000,
  noLocal: false,
  retainAsPublished: false,
  retainHandling: 0
})

type Draft = ReturnType<typeof initialConfig> & {
  willTopic?: string
  willPayload?: Buffer
  willQos: 0 | 1 | 2
  willRetain: boolean
}

class ArgError {
  constructor(readonly text: string, readonly usageHint = true) {}
}

const fail = (text: string): never => {
  throw new ArgError(text)
}

/** UTF-8 that survived the trip through argv: no lone surrogates, no U+FFFD from bad bytes. */
const validUtf8 = (s: string): boolean => !/[\uD800-\uDFFF]/.test(s.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, "")) && !s.includes("\uFFFD")

/** Mosquitto's check_format for `-F`; an error text or undefined. */
export const checkFormat = (format: string): string | undefined => {
  const len = format.length
  for (let i = 0; i < len; i++) {
    const c = format[i]
    if (c === "%") {
      if (i === len - 1) return "Error: Incomplete format specifier.\n"
      if (format[i + 1] === "0" || format[i + 1] === "-") {
        i++
        if (i === len - 1) return "Error: Incomplete format specifier.\n"
      }
      while (format[i + 1] >= "0" && format[i + 1] <= "9") {
        i++
        if (i === len - 1) return "Error: Incomplete format specifier.\n"
      }
      if (format[i + 1] === ".") {
        i++
        if (i === len - 1) return "Error: Incomplete format specifier.\n"
        while (format[i + 1] >= "0" && format[i + 1] <= "9") {
          i++
          if (i === len - 1) return "Error: Incomplete format specifier.\n"
        }
      }
      if (!"%ACDEFIlmPpqRSrtjJUxX".includes(format[i + 1])) return `Error: Invalid format specifier '${format[i + 1]}'.\n`
      i++
    } else if (c === "@") {
      if (i === len - 1) return "Error: Incomplete format specifier.\n"
      i++
    } else if (c === "\\") {
      if (i === len - 1) return "Error: Incomplete escape specifier.\n"
      if (!"\\0aenrtv".includes(format[i + 1])) return `Error: Invalid escape specifier '${format[i + 1]}'.\n`
      i++
    }
  }
  return undefined
}

/** mosquitto_pub_topic_check: no wildcards, at most 65535 bytes (an empty topic passes, and fails at publish time). */
export const pubTopicOk = (topic: string): boolean => !topic.includes("+") && !topic.includes("#") && Buffer.byteLength(topic) <= 65535

/** mosquitto_sub_topic_check: `+` alone in its level, `#` alone in the last level, at most 65535 bytes. */
export const subTopicOk = (filter: string): boolean => {
  const len = filter.length
  for (let i = 0; i < len; i++) {
    const c = filter[i]
    if (c === "+") {
      if ((i > 0 && filter[i - 1] !== "/") || (i < len - 1 && filter[i + 1] !== "/")) return false
    } else if (c === "#") {
      if ((i > 0 && filter[i - 1] !== "/") || i < len - 1) return false
    }
  }
  return Buffer.byteLength(filter) <= 65535
}

/** A topic filter argument (`-t` of sub, `-T`, `-U`): valid UTF-8 and wildcards, or Mosquitto's error naming `what`. */
const checkedFilter = (filter: string, arg: string, what: string): string => {
  if (!validUtf8(filter)) fail(`Error: Malformed UTF-8 in ${arg} argument.\n\n`)
  if (!subTopicOk(filter)) fail(`Error: Invalid ${what} '${filter}', are all '+' and '#' wildcards correct?\n`)
  return filter
}

const addTopic = (cfg: Draft, tool: Tool, topic: string, arg: string) => {
  if (tool === "sub") {
    cfg.topics.push(checkedFilter(topic, arg, "subscription topic"))
    return
  }
  if (!validUtf8(topic)) fail(`Error: Malformed UTF-8 in ${arg} argument.\n\n`)
  if (!pubTopicOk(topic)) fail(`Error: Invalid publish topic '${topic}', does it contain '+' or '#'?\n`)
  cfg.topic = topic
}

const parseUrl = (cfg: Draft, tool: Tool, value: string) => {
  let url = value
  const lower = url.toLowerCase()
  if (lower.startsWith("mqtt://")) {
    url = url.slice(7)
    cfg.port = 1883
  } else if (lower.startsWith("mqtts://")) {
    url = url.slice(8)
    cfg.port = 8883
    cfg.urlTls = true
  } else if (lower.startsWith("ws://")) {
    url = url.slice(5)
    cfg.port = 1883
    cfg.transport = "websockets"
  } else if (lower.startsWith("wss://")) {
    url = url.slice(6)
    cfg.port = 8883
    cfg.urlTls = true
    cfg.transport = "websockets"
  } else fail("Error: unsupported URL scheme.\n\n")
  const slash = url.indexOf("/")
  if (slash < 0) fail("Error: Invalid URL for -L argument specified - topic missing.\n")
  addTopic(cfg, tool, url.slice(slash + 1), "-L topic")
  const a = urlAuthority(url.slice(0, slash))
  if (a.username !== undefined) cfg.username = a.username
  if (a.password !== undefined) cfg.password = a.password
  if (a.port !== undefined) cfg.port = atoi(a.port)
  cfg.host = a.host
}

/** The `[user[:password]@]host[:port]` of a `-L` URL, as the tools split it (the port as written). */
export const urlAuthority = (authority: string): { readonly username?: string; readonly password?: string; readonly host: string; readonly port?: string } => {
  let rest = authority
  let credentials: { username?: string; password?: string } = {}
  const at = rest.indexOf("@")
  if (at >= 0) {
    const userinfo = rest.slice(0, at)
    const colon = userinfo.indexOf(":")
    credentials = colon >= 0 ? { username: userinfo.slice(0, colon), password: userinfo.slice(colon + 1) } : { username: userinfo }
    rest = rest.slice(at + 1)
  }
  const colon = rest.indexOf(":")
  return colon >= 0 ? { ...credentials, host: rest.slice(0, colon), port: rest.slice(colon + 1) } : { ...credentials, host: rest }
}

const setPubMode = (cfg: Draft, mode: PubMode) => {
  if (cfg.pubMode !== "none") fail("Error: Only one type of message can be sent at once.\n\n")
  cfg.pubMode = mode
}

/** Flags only one of the tools has: used where Mosquitto says "Unknown option". */
const pubOnly = new Set(["-f", "--file", "-l", "--stdin-line", "-m", "--message", "-n", "--null-message", "-r", "--retain", "--repeat", "--repeat-delay", "-s", "--stdin-file"])
const subOnly = new Set([
  "-C", "-E", "-F", "-N", "--pretty", "-R", "--random-filter", "--remove-retained", "--retain-as-published", "--rap",
  "--retained-only", "-T", "--filter-out", "-U", "--unsubscribe", "-v", "--verbose", "-W", "--no-local", "--nl", "--retain-handling"
])

/**
 * The flags that store their value as given: where, and the words of
 * Mosquitto's "argument given but ..." error (with the flag it names, when
 * not the one used).
 */
const VALUE_FLAGS: Readonly<Record<string, readonly [what: string, name: string | undefined, set: (cfg: Draft, value: string) => void]>> = {
  "-A": ["no address specified", undefined, (c, v) => (c.bindAddress = v)],
  "--cafile": ["no file specified", undefined, (c, v) => (c.tls.cafile = v)],
  "--capath": ["no directory specified", undefined, (c, v) => (c.tls.capath = v)],
  "--cert": ["no file specified", undefined, (c, v) => (c.tls.certfile = v)],
  "--ciphers": ["no ciphers specified", undefined, (c, v) => (c.tls.ciphers = v)],
  "-h": ["no host specified", "-h", (c, v) => (c.host = v)],
  "--host": ["no host specified", "-h", (c, v) => (c.host = v)],
  "--key": ["no file specified", undefined, (c, v) => (c.tls.keyfile = v)],
  "--keyform": ["no keyform specified", undefined, (c, v) => (c.tls.keyform = v)],
  "-P": ["no password specified", "-P", (c, v) => (c.password = v)],
  "--pw": ["no password specified", "-P", (c, v) => (c.password = v)],
  "--proxy": ["no proxy url specified", undefined, (c, v) => (c.proxy = v)],
  "--psk": ["no key specified", undefined, (c, v) => (c.tls.psk = v)],
  "--psk-identity": ["no identity specified", undefined, (c, v) => (c.tls.pskIdentity = v)],
  "--tls-alpn": ["no protocol specified", undefined, (c, v) => (c.tls.alpn = v)],
  "--tls-engine": ["no engine_id specified", undefined, (c, v) => (c.tls.engine = v)],
  "--tls-version": ["no version specified", undefined, (c, v) => (c.tls.version = v)],
  "-u": ["no username specified", "-u", (c, v) => (c.username = v)],
  "--username": ["no username specified", "-u", (c, v) => (c.username = v)]
}

/** One pass over a list of words (argv, or a line of the options file). */
const lineProc = (cfg: Draft, tool: Tool, argv: ReadonlyArray<string>): "help" | "version" | undefined => {
  const argc = argv.length
  for (let i = 0; i < argc; i++) {
    const a = argv[i]
    if ((tool === "pub" && subOnly.has(a)) || (tool === "sub" && pubOnly.has(a))) fail(`Error: Unknown option '${a}'.\n`)
    const value = (what: string, name = a): string => {
      if (i === argc - 1) fail(`Error: ${name} argument given but ${what}.\n\n`)
      return argv[++i]
    }
    const plain = VALUE_FLAGS[a]
    if (plain !== undefined) {
      plain[2](cfg, value(plain[0], plain[1]))
      continue
    }
    switch (a) {
      case "-C": {
        cfg.msgCount = atoi(value("no count specified"))
        if (cfg.msgCount < 1) fail(`Error: Invalid message count "${cfg.msgCount}".\n\n`)
        break
      }
      case "-c":
      case "--disable-clean-session":
        cfg.cleanSession = false
        break
      case "-d":
      case "--debug":
        cfg.debug = true
        break
      case "-D":
      case "--property": {
        const r = parseProperty(argv, i + 1, cfg.properties)
        if ("error" in r) fail(r.error)
        else i = r.next
        cfg.protocolVersion = 5
        break
      }
      case "-E":
        cfg.exitAfterSub = true
        break
      case "-f":
      case "--file":
        setPubMode(cfg, "file")
        cfg.file = value("no file specified", "-f")
        break
      case "-F": {
        cfg.format = value("no format specified")
        const error = checkFormat(cfg.format)
        if (error !== undefined) fail(error)
        break
      }
      case "--help":
        return "help"
      case "--insecure":
        cfg.tls.insecure = true
        break
      case "-i":
      case "--id":
        if (cfg.idPrefix !== undefined) fail("Error: -i and -I argument cannot be used together.\n\n")
        cfg.id = value("no id specified", "-i")
        break
      case "-I":
      case "--id-prefix":
        if (cfg.id !== undefined) fail("Error: -i and -I argument cannot be used together.\n\n")
        cfg.idPrefix = value("no id prefix specified", "-I")
        break
      case "-k":
      case "--keepalive": {
        cfg.keepalive = atoi(value("no keepalive specified", "-k"))
        if (cfg.keepalive < 5 || cfg.keepalive > 65535) fail("Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.\n\n")
        break
      }
      case "-L":
      case "--url":
        parseUrl(cfg, tool, value("no URL specified", "-L"))
        break
      case "-l":
      case "--stdin-line":
        setPubMode(cfg, "stdin-line")
        break
      case "-m":
      case "--message": {
        setPubMode(cfg, "message")
        const message = Buffer.from(value("no message specified", "-m"), "utf8")
        if (message.length > MAX_PAYLOAD) fail(`Error: Message length must be less than ${MAX_PAYLOAD} bytes.\n\n`)
        cfg.message = message
        break
      }
      case "-M": {
        const n = atoi(value("max_inflight not specified"))
        if (n < 1) fail("Error: Maximum inflight messages must be greater than 0.\n\n")
        cfg.maxInflight = n
        break
      }
      case "--nodelay":
        cfg.nodelay = true
        break
      case "-n":
      case "--null-message":
        setPubMode(cfg, "null")
        break
      case "-N":
        cfg.eol = false
        break
      case "-p":
      case "--port": {
        const port = atoi(value("no port specified", "-p"))
        if (port < 0 || port > 65535) fail(`Error: Invalid port given: ${port}\n`)
        cfg.port = port
        break
      }
      case "--pretty":
        cfg.pretty = true
        break
      case "-q":
      case "--qos": {
        const qos = atoi(value("no QoS specified", "-q"))
        if (qos < 0 || qos > 2) fail(`Error: Invalid QoS given: ${qos}\n`)
        cfg.qos = qos as 0 | 1 | 2
        break
      }
      case "--quiet":
        cfg.quiet = true
        break
      case "-r":
      case "--retain":
        cfg.retain = true
        break
      case "-R":
        cfg.noRetain = true
        cfg.retainHandling = 2
        break
      case "--random-filter": {
        const percent = atof(value("no chance specified"))
        // Mosquitto's range check, on its own scale (tenths of a percent)
        const tenths = Math.trunc(10 * percent)
        if (tenths > 10000 || tenths < 1) fail("Error: --random-filter chance must be between 0.1-100.0\n\n")
        // a percentage, as documented (mosquitto_sub 2.0 compares tenths with 10000 and prints a tenth of what it should)
        cfg.randomFilter = Math.min(10000, Math.trunc(100 * percent))
        break
      }
      case "--remove-retained":
        cfg.removeRetained = true
        break
      case "--repeat": {
        cfg.repeatCount = atoi(value("no count specified"))
        if (cfg.repeatCount < 1) fail("Error: --repeat argument must be >0.\n\n")
        break
      }
      case "--repeat-delay": {
        const f = atof(value("no time specified"))
        if (f < 0) fail("Error: --repeat-delay argument must be >=0.0.\n\n")
        cfg.repeatDelayMs = Math.round(f * 1000)
        break
      }
      case "--retain-as-published":
      case "--rap":
        cfg.retainAsPublished = true
        break
      case "--retain-handling": {
        const rh = atoi(value("no retain handling specified"))
        if (rh < 0 || rh > 2) fail(`Error: Invalid retain handling given: ${rh}\n`)
        cfg.retainHandling = rh as 0 | 1 | 2
        break
      }
      case "--no-local":
      case "--nl":
        cfg.noLocal = true
        break
      case "--retained-only":
        cfg.retainedOnly = true
        break
      case "-s":
      case "--stdin-file":
        setPubMode(cfg, "stdin-file")
        break
      case "-t":
      case "--topic":
        addTopic(cfg, tool, value("no topic specified", "-t"), "-t")
        break
      case "-T":
      case "--filter-out":
        cfg.filterOuts.push(checkedFilter(value("no topic filter specified", "-T"), "-T", "filter topic"))
        break
      case "--tls-engine-kpass-sha1":
        value("no kpass sha1 specified")
        break
      case "--tls-use-os-certs":
        cfg.tls.useOsCerts = true
        break
      case "-U":
      case "--unsubscribe":
        cfg.unsubTopics.push(checkedFilter(value("no unsubscribe topic specified", "-U"), "-U", "unsubscribe topic"))
        break
      case "--unix":
        cfg.unixSocket = value("no socket path specified")
        cfg.port = 0
        break
      case "-V":
      case "--protocol-version": {
        const v = value("no version specified", "--protocol-version")
        if (v === "mqttv31" || v === "31") cfg.protocolVersion = 3
        else if (v === "mqttv311" || v === "311") cfg.protocolVersion = 4
        else if (v === "mqttv5" || v === "5") cfg.protocolVersion = 5
        else fail("Error: Invalid protocol version argument given.\n\n")
        break
      }
      case "-v":
      case "--verbose":
        cfg.verbose = true
        break
      case "--version":
        return "version"
      case "-W": {
        const t = atoi(value("no timeout specified"))
        if (t < 1) fail(`Error: Invalid timeout "${t}".\n\n`)
        cfg.timeout = t
        break
      }
      case "--will-payload":
        cfg.willPayload = Buffer.from(value("no will payload specified"), "utf8")
        break
      case "--will-qos": {
        const q = atoi(value("no will QoS specified"))
        if (q < 0 || q > 2) fail(`Error: Invalid will QoS ${q}.\n\n`)
        cfg.willQos = q as 0 | 1 | 2
        break
      }
      case "--will-retain":
        cfg.willRetain = true
        break
      case "--will-topic": {
        const t = value("no will topic specified")
        if (!validUtf8(t)) fail("Error: Malformed UTF-8 in --will-topic argument.\n\n")
        if (!pubTopicOk(t)) fail(`Error: Invalid will topic '${t}', does it contain '+' or '#'?\n`)
        cfg.willTopic = t
        break
      }
      case "--ws":
        cfg.transport = "websockets"
        break
      case "-x": {
        const v = value("no session expiry interval specified")
        if (v === "∞") cfg.sessionExpiry = UINT32_MAX
        else {
          const n = strtol0(v)
          if (n === undefined) fail("Error: session-expiry-interval not a number.\n\n")
          if (n! > UINT32_MAX || n! < -1) fail("Error: session-expiry-interval out of range.\n\n")
          cfg.sessionExpiry = n === -1 ? UINT32_MAX : n!
        }
        break
      }
      default:
        fail(`Error: Unknown option '${a}'.\n`)
    }
  }
  return undefined
}

/**
 * Splits the default options file (`~/.config/mosquitto_pub`, ...) as
 * Mosquitto does: `#` lines skipped, each line one flag and the rest of the
 * line its value.
 */
export const optionsFileArgs = (text: string): Array<Array<string>> => {
  const lines: Array<Array<string>> = []
  for (const raw of text.split("\n")) {
    const line = raw.replace(/[\r\n]+$/, "")
    if (line.startsWith("#")) continue
    const trimmed = line.replace(/^ +/, "")
    if (trimmed.length === 0) continue
    const space = trimmed.indexOf(" ")
    if (space < 0) lines.push([trimmed])
    else {
      const rest = trimmed.slice(space + 1).replace(/^ +/, "")
      lines.push(rest.length > 0 ? [trimmed.slice(0, space), rest] : [trimmed.slice(0, space)])
    }
  }
  return lines
}

/**
 * Reads a tool's command line. `optionsFile` is the text of the default
 * options file, if there is one; its flags come first, the command line's
 * override them.
 */
export const parseClientArgs = (tool: Tool, argv: ReadonlyArray<string>, optionsFile?: string): ParseOutcome => {
  const cfg: Draft = Object.assign(initialConfig(tool), { willQos: 0 as 0 | 1 | 2, willRetain: false })
  try {
    if (optionsFile !== undefined) {
      for (const words of optionsFileArgs(optionsFile)) {
        const r = lineProc(cfg, tool, words)
        if (r === "help") return { _tag: "Help" }
        if (r === "version") return { _tag: "Version" }
      }
    }
    const r = lineProc(cfg, tool, argv)
    if (r === "help") return { _tag: "Help" }
    if (r === "version") return { _tag: "Version" }

    if (cfg.willPayload !== undefined && cfg.willTopic === undefined) fail("Error: Will payload given, but no will topic given.\n")
    if (cfg.willRetain && cfg.willTopic === undefined) fail("Error: Will retain given, but no will topic given.\n")
    const t = cfg.tls
    if ((t.certfile !== undefined) !== (t.keyfile !== undefined)) fail("Error: Both certfile and keyfile must be provided if one of them is set.\n")
    if (t.keyform !== undefined && t.keyfile === undefined) fail("Error: If keyform is set, keyfile must be also specified.\n")
    if ((t.cafile !== undefined || t.capath !== undefined) && t.psk !== undefined) fail("Error: Only one of --psk or --cafile/--capath may be used at once.\n")
    if (t.psk !== undefined && t.pskIdentity === undefined) fail("Error: --psk-identity required if --psk used.\n")

    if (cfg.protocolVersion === 5) {
      if (!cfg.cleanSession && cfg.sessionExpiry === -1) cfg.sessionExpiry = UINT32_MAX
      if (cfg.sessionExpiry > 0 && cfg.sessionExpiry === UINT32_MAX && (cfg.idPrefix !== undefined || cfg.id === undefined)) {
        fail("Error: You must provide a client id if you are using an infinite session expiry interval.\n")
      }
    } else if (!cfg.cleanSession && (cfg.idPrefix !== undefined || cfg.id === undefined)) {
      fail("Error: You must provide a client id if you are using the -c option.\n")
    }
    if (tool === "sub" && cfg.topics.length === 0) fail("Error: You must specify a topic to subscribe to.\n")
    if (cfg.host === "") cfg.host = "localhost"
    // sub_client.c main(), after the configuration is loaded
    if (tool === "sub" && cfg.noRetain && cfg.retainedOnly) throw new ArgError("\nError: Combining '-R' and '--retained-only' makes no sense.\n", false)
    if (cfg.willTopic !== undefined) {
      cfg.will = { topic: cfg.willTopic, payload: cfg.willPayload ?? Buffer.alloc(0), qos: cfg.willQos, retain: cfg.willRetain }
    }
    // mosquitto_new: an empty client id is EINVAL (pub_client.c / sub_client.c say so, exit 1)
    if (cfg.id === "") throw new ArgError(tool === "sub" ? "Error: Invalid id and/or clean_session.\n" : "Error: Invalid id.\n", false)
    // mosquitto_username_pw_set: MQTT 3.x has no password without a username (MQTT 5 has, but MQTT.js
    // cannot send one: refused here for every version rather than lost on the wire)
    if (cfg.password !== undefined && cfg.username === undefined) throw new ArgError("Error: Problem setting username and/or password.\n", false)
    const { willTopic: _t, willPayload: _p, willQos: _q, willRetain: _r, ...config } = cfg
    return { _tag: "Config", config }
  } catch (error) {
    if (error instanceof ArgError) return { _tag: "Error", text: error.text, usageHint: error.usageHint }
    throw error
  }
}

/** The client id to CONNECT with: `-i`, `-I` + pid, or none (the broker assigns one; MQTT 3.1 needs `mosq-` + random). */
export const clientIdFor = (config: ClientConfig, pid: number, random: () => number = Math.random): string => {
  if (config.id !== undefined) return config.id
  if (config.idPrefix !== undefined) return `${config.idPrefix}${pid}`
  if (config.protocolVersion === 3) {
    const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    let id = "mosq-"
    for (let i = 0; i < 18; i++) id += alphabet[Math.floor(random() * alphabet.length)]
    return id
  }
  return ""
}

/** The port to connect to when none was given: 8883 for TLS (a CA or a PSK), else 1883. */
export const portFor = (config: ClientConfig): number =>
  config.port ?? (config.tls.cafile !== undefined || config.tls.capath !== undefined || config.tls.psk !== undefined ? 8883 : 1883)

/** TLS is used with a CA, a PSK, a client certificate, an `mqtts://`/`wss://` URL or port 8883, as libmosquitto does. */
export const usesTls = (config: ClientConfig): boolean =>
  config.tls.cafile !== undefined ||
  config.tls.capath !== undefined ||
  config.tls.psk !== undefined ||
  config.tls.useOsCerts ||
  config.urlTls ||
  (config.port === 8883 && config.unixSocket === undefined)
