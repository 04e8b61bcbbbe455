/**
 * `midge ctrl`: Mosquitto 2.0's `mosquitto_ctrl` for the dynamic security
 * API, against Midge or Mosquitto alike. Same command line (`-h -p -u -P -i
 * -q -V -L --unix -A -o`, TLS flags, `dynsec <command> ...`), same output
 * and exit codes (a server-side error is printed and still exits 0, as
 * mosquitto_ctrl does), same `~/.config/mosquitto_ctrl` options file.
 *
 * - `dynsec init <file> <admin> [password]` writes a new file with an admin
 *   client (never over an existing file);
 * - `-f <file> dynsec setClientPassword <user> <password> [-i iterations]`
 *   changes a password in the file itself, broker stopped (Mosquitto 2.0.x's
 *   later `-f`);
 * - departures: an option error stops (mosquitto_ctrl 2.0.11 carries on and
 *   reports the next word as an unknown module); the request carries a
 *   correlationData and only the matching response is taken (so two admins
 *   do not read each other's answers); no response in 10 seconds says so
 *   on stderr instead of exiting silently.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as tls from "node:tls"
import { Effect } from "effect"
import { MqttClient, type IClientOptions, type IClientPublishOptions, type Packet } from "mqtt"
import { buildCommand, initModel, printResponse, setPasswordInTree } from "../security/dynsec/ctrl.js"
import { createExclusive, modelText, writeFileAtomic } from "../security/dynsec/file.js"
import { printFormatted, type Json } from "../security/dynsec/json.js"
import { hashNewPassword } from "../security/dynsec/password.js"
import { connackString, connectFailureText, debugLine, reasonString, SetupError, tlsConnectionOptions, type TlsSettings } from "./internal/client.js"
import { urlAuthority } from "./internal/options.js"
import { VERSION } from "./internal/version.js"

export interface CtrlEnv {
  readonly stdout: (text: string) => void
  readonly stderr: (text: string) => void
  /** where passwords are read from when not given */
  readonly stdin?: NodeJS.ReadableStream | undefined
  /** for the options file (`XDG_CONFIG_HOME`, `HOME`) */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
  /** how long to wait for the response; default 10 s */
  readonly timeoutMs?: number | undefined
}

const processEnv: CtrlEnv = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
  stdin: process.stdin,
  env: process.env
}

const NAME = "midge ctrl"

const usage = (): string =>
  `${NAME} is a tool for administering certain Mosquitto features (Midge, mosquitto_ctrl-compatible).
${NAME} version ${VERSION}.

General usage: ${NAME} <module> <module-command> <command-options>
For module specific help use: ${NAME} <module> help

Modules available: dynsec

For more information see:
    https://mosquitto.org/man/mosquitto_ctrl-1.html

`

export const dynsecUsage = (): string =>
  `
Dynamic Security module
=======================

Initialisation
--------------
Create a new configuration file with an admin user:
    ${NAME} dynsec init <new-config-file> <admin-username> [admin-password]

General
-------
Get ACL default access:          getDefaultACLAccess
Set ACL default access:          setDefaultACLAccess <acltype> allow|deny
Get group for anonymous clients: getAnonymousGroup
Set group for anonymous clients: setAnonymousGroup   <groupname>

Clients
-------
Create a new client:         createClient      <username> [-c clientid] [-p password]
Delete a client:             deleteClient      <username>
Set a client password:       setClientPassword <username> [password]
Set a client password on an existing file:
    ${NAME} -f <file> dynsec setClientPassword <username> <password>
Set a client id:             setClientId       <username> [clientid]
Add a role to a client:      addClientRole     <username> <rolename> [priority]
    Higher priority (larger numerical value) roles are evaluated first.
Remove role from a client:   removeClientRole  <username> <rolename>
Get client information:      getClient         <username>
List all clients:            listClients       [count [offset]]
Enable client:               enableClient      <username>
Disable client:              disableClient     <username>

Groups
------
Create a new group:          createGroup       <groupname>
Delete a group:              deleteGroup       <groupname>
Add a role to a group:       addGroupRole      <groupname> <rolename> [priority]
    Higher priority (larger numerical value) roles are evaluated first.
Remove role from a group:    removeGroupRole   <groupname> <rolename>
Add client to a group:       addGroupClient    <groupname> <username> [priority]
    Priority sets the group priority for the given client only.
    Higher priority (larger numerical value) groups are evaluated first.
Remove client from a group:  removeGroupClient <groupname> <username>
Get group information:       getGroup          <groupname>
List all groups:             listGroups        [count [offset]]

Roles
------
Create a new role:           createRole        <rolename>
Delete a role:               deleteRole        <rolename>
Add an ACL to a role:        addRoleACL        <rolename> <aclspec> [priority]
    Higher priority (larger numerical value) ACLs are evaluated first.
Remove ACL from a role:      removeRoleACL     <rolename> <aclspec>
Get role information:        getRole           <rolename>
List all roles:              listRoles         [count [offset]]

aclspec:                     <acltype> <topicFilter> allow|deny
acltype:                     publishClientSend|publishClientReceive
                              |subscribeLiteral|subscribePattern
                              |unsubscribeLiteral|unsubscribePattern

For more information see:
    https://mosquitto.org/documentation/dynamic-security/

`

/** libmosquitto's error numbers mosquitto_ctrl exits with. */
const RC = { INVAL: 3, TLS: 8, NOT_SUPPORTED: 10, UNKNOWN: 13, ERRNO: 14, EAI: 15 } as const

interface Config {
  host: string | undefined
  port: number | undefined
  unix: string | undefined
  bind: string | undefined
  id: string | undefined
  username: string | undefined
  password: string | undefined
  qos: 0 | 1 | 2
  protocolVersion: 3 | 4 | 5
  debug: boolean
  optionsFile: string | undefined
  dataFile: string | undefined
  cafile: string | undefined
  capath: string | undefined
  cert: string | undefined
  key: string | undefined
  insecure: boolean
  tlsVersion: string | undefined
  alpn: string | undefined
  ciphers: string | undefined
  useOsCerts: boolean
  psk: string | undefined
  pskIdentity: string | undefined
}

const newConfig = (): Config => ({
  host: undefined, port: undefined, unix: undefined, bind: undefined, id: undefined, username: undefined, password: undefined,
  qos: 1, protocolVersion: 5, debug: false, optionsFile: undefined, dataFile: undefined, cafile: undefined, capath: undefined,
  cert: undefined, key: undefined, insecure: false, tlsVersion: undefined, alpn: undefined, ciphers: undefined, useOsCerts: false,
  psk: undefined, pskIdentity: undefined
})

/** The options taking a value, with the words of mosquitto_ctrl's "no value" errors. */
const VALUE_OPTIONS: Record<string, readonly [keyof Config, string]> = {
  "-A": ["bind", "-A argument given but no address specified"],
  "--cafile": ["cafile", "--cafile argument given but no file specified"],
  "--capath": ["capath", "--capath argument given but no directory specified"],
  "--cert": ["cert", "--cert argument given but no file specified"],
  "--ciphers": ["ciphers", "--ciphers argument given but no ciphers specified"],
  "-f": ["dataFile", "-f argument given but no data file specified"],
  "-h": ["host", "-h argument given but no host specified"],
  "--host": ["host", "-h argument given but no host specified"],
  "-i": ["id", "-i argument given but no id specified"],
  "--id": ["id", "-i argument given but no id specified"],
  "--key": ["key", "--key argument given but no file specified"],
  "-o": ["optionsFile", "-o argument given but no options file specified"],
  "-P": ["password", "-P argument given but no password specified"],
  "--pw": ["password", "-P argument given but no password specified"],
  "--psk": ["psk", "--psk argument given but no key specified"],
  "--psk-identity": ["pskIdentity", "--psk-identity argument given but no identity specified"],
  "--tls-alpn": ["alpn", "--tls-alpn argument given but no protocol specified"],
  "--tls-version": ["tlsVersion", "--tls-version argument given but no version specified"],
  "-u": ["username", "-u argument given but no username specified"],
  "--username": ["username", "-u argument given but no username specified"],
  "--unix": ["unix", "--unix argument given but no socket path specified"]
}

type OptionOutcome = { readonly _tag: "Ok"; readonly rest: ReadonlyArray<string> } | { readonly _tag: "Stop"; readonly text: string; readonly code: number; readonly usage?: boolean }

/** client_config_line_proc: the options before the module name. */
const parseOptions = (cfg: Config, argv: ReadonlyArray<string>): OptionOutcome => {
  let i = 0
  const stop = (text: string, withUsage = false): OptionOutcome => ({ _tag: "Stop", text: `Error: ${text}\n${withUsage ? "\n" : ""}`, code: 1, usage: withUsage })
  while (i < argv.length && argv[i].startsWith("-")) {
    const a = argv[i]
    const valued = VALUE_OPTIONS[a]
    if (valued !== undefined) {
      if (i + 1 >= argv.length) return stop(`${valued[1]}.`, true)
      ;(cfg as unknown as Record<string, unknown>)[valued[0]] = argv[i + 1]
      if (a === "--unix") cfg.port = 0
      i += 2
      continue
    }
    switch (a) {
      case "-d":
      case "--debug":
        cfg.debug = true
        break
      case "--help":
      case "--version":
        return { _tag: "Stop", text: "", code: 1, usage: true }
      case "--insecure":
        cfg.insecure = true
        break
      case "--tls-use-os-certs":
        cfg.useOsCerts = true
        break
      case "--quiet":
      case "-v":
      case "--verbose":
        break
      case "-p":
      case "--port": {
        if (i + 1 >= argv.length) return stop("-p argument given but no port specified.", true)
        const port = atoiStrict(argv[i + 1])
        if (port < 0 || port > 65535) return stop(`Invalid port given: ${port}`)
        cfg.port = port
        i++
        break
      }
      case "-q":
      case "--qos": {
        if (i + 1 >= argv.length) return stop("-q argument given but no QoS specified.", true)
        const qos = atoiStrict(argv[i + 1])
        if (qos < 0 || qos > 2) return stop(`Invalid QoS given: ${qos}`)
        cfg.qos = qos as 0 | 1 | 2
        i++
        break
      }
      case "-V":
      case "--protocol-version": {
        if (i + 1 >= argv.length) return stop("--protocol-version argument given but no version specified.", true)
        const v = argv[i + 1]
        if (v === "mqttv31" || v === "31") cfg.protocolVersion = 3
        else if (v === "mqttv311" || v === "311") cfg.protocolVersion = 4
        else if (v === "mqttv5" || v === "5") cfg.protocolVersion = 5
        else return stop("Invalid protocol version argument given.", true)
        i++
        break
      }
      case "-L":
      case "--url": {
        if (i + 1 >= argv.length) return stop("-L argument given but no URL specified.", true)
        const error = applyUrl(cfg, argv[i + 1])
        if (error !== undefined) return stop(error)
        i++
        break
      }
      case "--keyform":
      case "--tls-engine":
      case "--tls-engine-kpass-sha1":
      case "--proxy":
        return stop(`${a} is not supported by ${NAME}.`)
      default:
        return stop(`Unknown option '${a}'.`)
    }
    i++
  }
  return { _tag: "Ok", rest: argv.slice(i) }
}

const atoiStrict = (s: string): number => {
  const m = /^\s*([+-]?\d+)/.exec(s)
  return m === null ? 0 : Number(m[1])
}

/** `-L mqtt(s)://[user[:password]@]host[:port]/topic` (the topic is required, and unused). */
const applyUrl = (cfg: Config, url: string): string | undefined => {
  let rest: string
  if (/^mqtt:\/\//i.test(url)) {
    rest = url.slice(7)
    cfg.port = 1883
  } else if (/^mqtts:\/\//i.test(url)) {
    rest = url.slice(8)
    cfg.port = 8883
    cfg.useOsCerts = true
  } else return "unsupported URL scheme."
  const slash = rest.indexOf("/")
  if (slash < 0) return "Invalid URL for -L argument specified - topic missing."
  const a = urlAuthority(rest.slice(0, slash))
  if (a.username !== undefined) cfg.username = a.username
  if (a.password !== undefined) cfg.password = a.password
  if (a.port !== undefined) cfg.port = atoiStrict(a.port)
  cfg.host = a.host
  return undefined
}

/** The options file: `-o <file>`, else `$XDG_CONFIG_HOME/mosquitto_ctrl` or `~/.config/mosquitto_ctrl`; one option (and value) a line. */
const optionsFileArgs = (cfg: Config, env: CtrlEnv["env"]): Array<string> | { error: string } => {
  let file = cfg.optionsFile
  if (file === undefined) {
    const dir = env?.XDG_CONFIG_HOME ?? (env?.HOME !== undefined ? path.join(env.HOME, ".config") : undefined)
    if (dir === undefined) return []
    file = path.join(dir, "mosquitto_ctrl")
  }
  let text: string
  try {
    text = fs.readFileSync(file, "utf8")
  } catch {
    return cfg.optionsFile !== undefined ? { error: `Error: Unable to open options file '${file}'.\n` } : []
  }
  const args: Array<string> = []
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("#")) continue
    const words = line.split(" ").filter((w) => w.length > 0)
    args.push(...words.slice(0, 2))
  }
  return args
}

const usesTls = (cfg: Config): boolean => cfg.cafile !== undefined || cfg.capath !== undefined || cfg.psk !== undefined || cfg.useOsCerts

const tlsOptions = (cfg: Config, host: string): tls.ConnectionOptions | string => {
  const settings: TlsSettings = {
    cafile: cfg.cafile,
    capath: cfg.capath,
    certfile: cfg.cert,
    keyfile: cfg.key,
    insecure: cfg.insecure,
    version: cfg.tlsVersion,
    ciphers: cfg.ciphers,
    alpn: cfg.alpn,
    useOsCerts: cfg.useOsCerts,
    psk: cfg.psk,
    pskIdentity: cfg.pskIdentity
  }
  try {
    return tlsConnectionOptions(settings, host)
  } catch (e) {
    if (e instanceof SetupError) return e.text
    throw e
  }
}

// ---------------------------------------------------------------------------
// passwords from stdin

/** Lines of stdin one at a time, echo off on a terminal (as libmosquitto's get_password). */
const lineReader = (stdin: NodeJS.ReadableStream) => {
  let buffered = ""
  let ended = false
  let waiting: (() => void) | undefined
  const tty = (stdin as NodeJS.ReadStream).isTTY === true
  if (tty) (stdin as NodeJS.ReadStream).setRawMode(true)
  const onData = (chunk: Buffer | string) => {
    for (const ch of chunk.toString()) {
      if (tty && ch === "\u0003") process.exit(1)
      else if (ch === "\r" || ch === "\n") buffered += "\n"
      else if (tty && (ch === "\u007f" || ch === "\b")) buffered = buffered.endsWith("\n") ? buffered : buffered.slice(0, -1)
      else buffered += ch
    }
    waiting?.()
  }
  const onEnd = () => {
    ended = true
    waiting?.()
  }
  stdin.on("data", onData)
  stdin.once("end", onEnd)
  stdin.resume()
  const next = (): Promise<string> =>
    new Promise((resolve) => {
      const attempt = () => {
        const nl = buffered.indexOf("\n")
        if (nl >= 0 || ended) {
          waiting = undefined
          const line = nl >= 0 ? buffered.slice(0, nl) : buffered
          buffered = nl >= 0 ? buffered.slice(nl + 1) : ""
          resolve(line)
        } else waiting = attempt
      }
      attempt()
    })
  const close = () => {
    stdin.off("data", onData)
    stdin.off("end", onEnd)
    if (tty) (stdin as NodeJS.ReadStream).setRawMode(false)
    stdin.pause()
  }
  return { next, close }
}

/** get_password: 0 with the password, 1 empty, 2 mismatch; `quiet` leaves the messages to the caller. */
const getPassword = async (env: CtrlEnv, prompt: string, verify: string, quiet: boolean): Promise<{ rc: 0; password: string } | { rc: 1 | 2 }> => {
  if (env.stdin === undefined) {
    if (!quiet) env.stderr("Error: Empty password.\n")
    return { rc: 1 }
  }
  const reader = lineReader(env.stdin)
  try {
    env.stdout(prompt)
    const first = await reader.next()
    if (first.length === 0) {
      if (!quiet) env.stderr("Error: Empty password.\n")
      return { rc: 1 }
    }
    env.stdout(`\n${verify}`)
    const second = await reader.next()
    env.stdout("\n")
    if (first !== second) {
      if (!quiet) env.stderr("Error: Passwords do not match.\n")
      return { rc: 2 }
    }
    return { rc: 0, password: first }
  } finally {
    reader.close()
  }
}

// ---------------------------------------------------------------------------
// init and -f

const initFile = async (args: ReadonlyArray<string>, env: CtrlEnv): Promise<number> => {
  if (args.length < 2) {
    env.stderr("dynsec init: Not enough arguments - filename, or admin-user missing.\nError: Invalid function arguments provided.\n")
    return RC.INVAL
  }
  if (args.length > 3) {
    env.stderr("dynsec init: Too many arguments.\nError: Invalid function arguments provided.\n")
    return RC.INVAL
  }
  const [file, admin] = args
  if (fs.existsSync(file)) {
    env.stderr(`dynsec init: '${file}' already exists. Remove the file or use a different location..\n`)
    return 0
  }
  let password = args[2]
  if (password === undefined) {
    const got = await getPassword(env, `New password for ${admin}: `, `Reenter password for ${admin}: `, false)
    if (got.rc !== 0) return 0
    password = got.password
  }
  const text = modelText(initModel(admin, hashNewPassword(password)))
  const written = await Effect.runPromise(Effect.either(createExclusive(file, text)))
  if (written._tag === "Left") {
    env.stderr(
      written.left.reason === "Exists"
        ? `dynsec init: '${file}' already exists. Remove the file or use a different location..\n`
        : `dynsec init: Unable to open '${file}' for writing.\n`
    )
    return 0
  }
  env.stdout(
    `The client '${admin}' has been created in the file '${file}'.
This client is configured to allow you to administer the dynamic security plugin only.
It does not have access to publish messages to normal topics.
You should create your application clients to do that, for example:
   ${NAME} <connect options> dynsec createClient <username>
   ${NAME} <connect options> dynsec createRole <rolename>
   ${NAME} <connect options> dynsec addRoleACL <rolename> publishClientSend my/topic [priority]
   ${NAME} <connect options> dynsec addClientRole <username> <rolename> [priority]
See https://mosquitto.org/documentation/dynamic-security/ for details of all commands.
`
  )
  return 0
}

/** `-f <file> dynsec setClientPassword <username> <password> [-i iterations]`, on the file. */
const filePassword = async (file: string, args: ReadonlyArray<string>, env: CtrlEnv): Promise<number> => {
  if (args.length < 2) {
    env.stderr("Error: Invalid function arguments provided.\n")
    return RC.INVAL
  }
  const [username, password] = args
  let iterations: number | undefined
  for (let i = 2; i < args.length; i++) {
    if (args[i] === "-i") {
      if (i + 1 === args.length) {
        env.stderr("Error: -i argument given, but no iterations provided.\nError: Invalid function arguments provided.\n")
        return RC.INVAL
      }
      iterations = atoiStrict(args[++i])
    } else {
      env.stderr(`Error: Unknown argument: ${args[i]}\nError: Invalid function arguments provided.\n`)
      return RC.INVAL
    }
  }
  let text: string
  try {
    text = fs.readFileSync(file, "utf8")
  } catch {
    env.stderr(`Error: Unable to open ${file}.\nError: Invalid function arguments provided.\n`)
    return RC.INVAL
  }
  if (text.length === 0) {
    env.stderr(`Error: ${file} is empty.\nError: Invalid function arguments provided.\n`)
    return RC.INVAL
  }
  let tree: Json
  try {
    tree = JSON.parse(text) as Json
  } catch {
    env.stderr(`Error: ${file} is not valid JSON.\nError: Invalid function arguments provided.\n`)
    return RC.INVAL
  }
  const updated = setPasswordInTree(tree, username, hashNewPassword(password, iterations !== undefined && iterations > 0 ? iterations : undefined))
  if (updated === undefined) {
    env.stderr(`Error: Client ${username} not found.\n`)
    return 0
  }
  const written = await Effect.runPromise(Effect.either(writeFileAtomic(file, printFormatted(updated))))
  if (written._tag === "Left") {
    env.stderr(`Error: Unable to write to ${file}.\n`)
    return RC.UNKNOWN
  }
  return 0
}

// ---------------------------------------------------------------------------
// the request over MQTT

const REQUEST_TOPIC = "$CONTROL/dynamic-security/v1"
const RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"

/** Exit code for a connection that could not be made: errno 14, lookup 15, TLS 8. */
const failureCode = (text: string): number => (text.startsWith("Unable to connect (Lookup") ? RC.EAI : text.startsWith("Unable to connect (A TLS") ? RC.TLS : RC.ERRNO)

const request = (cfg: Config, payload: string, correlationData: string, env: CtrlEnv): Promise<number> =>
  new Promise((resolve) => {
    const host = cfg.host ?? "localhost"
    const secure = usesTls(cfg)
    const secureOptions = secure ? tlsOptions(cfg, host) : undefined
    if (typeof secureOptions === "string") {
      env.stderr(secureOptions)
      return resolve(1)
    }
    if (!secure && cfg.unix === undefined) {
      env.stderr(
        `Warning: You are running ${NAME} without encryption.\nThis means all of the configuration changes you are making are visible on the network, including passwords.\n\n`
      )
    }
    const port = cfg.port !== undefined && cfg.port > 0 ? cfg.port : secure ? 8883 : 1883
    const id = cfg.id ?? (cfg.protocolVersion === 3 ? `mosq-${crypto.randomBytes(8).toString("hex")}` : "")
    const build = () => {
      const base = cfg.unix !== undefined ? { path: cfg.unix } : { host, port, ...(cfg.bind !== undefined ? { localAddress: cfg.bind } : {}) }
      return secure ? tls.connect({ ...base, ...secureOptions }) : net.connect(base)
    }
    const opts: IClientOptions = {
      protocolVersion: cfg.protocolVersion,
      protocolId: cfg.protocolVersion === 3 ? "MQIsdp" : "MQTT",
      clientId: id,
      clean: true,
      keepalive: 60,
      reconnectPeriod: 0,
      connectTimeout: 30_000,
      resubscribe: false,
      ...(cfg.username !== undefined ? { username: cfg.username } : {}),
      ...(cfg.password !== undefined ? { password: Buffer.from(cfg.password, "utf8") as unknown as string } : {})
    }
    const client = new MqttClient(build, opts)
    if (cfg.debug) {
      const show = (direction: "sending" | "received") => (packet: Packet) => {
        for (const line of debugLine(id, direction, packet)) env.stdout(line + "\n")
      }
      client.on("packetsend", show("sending"))
      client.on("packetreceive", show("received"))
    }
    let finished = false
    const finish = (code: number) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      client.end(true, {}, () => resolve(code))
    }
    const timer = setTimeout(() => {
      env.stderr("Error: Timed out waiting for a response.\n")
      finish(0)
    }, env.timeoutMs ?? 10_000)
    client.on("error", (error: Error & { code?: string | number }) => {
      if (typeof error.code === "number") {
        env.stderr(`Connection error: ${cfg.protocolVersion === 5 ? reasonString(error.code) : connackString(error.code)}\n`)
        return finish(0)
      }
      const text = connectFailureText(error as Error & { code?: string })
      env.stderr(text)
      finish(failureCode(text))
    })
    client.on("close", () => finish(0))
    client.on("message", (topic, message) => {
      if (topic !== RESPONSE_TOPIC) return
      const text = message.toString("utf8")
      // another admin's answer: not ours
      if (!isOurs(text, correlationData)) return
      const printed = printResponse(text)
      if (printed.stdout.length > 0) env.stdout(printed.stdout)
      if (printed.stderr.length > 0) env.stderr(printed.stderr)
      finish(0)
    })
    client.on("connect", () => {
      client.subscribe(RESPONSE_TOPIC, { qos: cfg.qos }, (error, _requested, packet) => {
        // MQTT.js hands back what was asked for; the SUBACK has what was granted
        const code = (packet as { granted?: Array<number> } | undefined)?.granted?.[0]
        if (code === undefined) {
          env.stderr(`Subscribe error: ${error?.message ?? "no SUBACK"}\n`)
          return finish(0)
        }
        if (code >= 0x80) {
          env.stderr(`Subscribe error: ${cfg.protocolVersion === 5 ? reasonString(code) : "Subscription refused."}\n`)
          return finish(0)
        }
        const publishOptions: IClientPublishOptions = { qos: cfg.qos }
        client.publish(REQUEST_TOPIC, payload, publishOptions, (err) => {
          if (err === undefined || err === null) return
          const rc = (err as Error & { code?: number }).code
          env.stderr(`Publish error: ${typeof rc === "number" ? reasonString(rc) : err.message}\n`)
          finish(0)
        })
      })
    })
  })

const isOurs = (text: string, correlationData: string): boolean => {
  try {
    const tree = JSON.parse(text) as { responses?: Array<{ correlationData?: unknown }> }
    const first = Array.isArray(tree.responses) ? tree.responses[0] : undefined
    // a broker that does not echo correlationData: take the first answer, as mosquitto_ctrl does
    return first === undefined || first.correlationData === undefined || first.correlationData === correlationData
  } catch {
    return true
  }
}

// ---------------------------------------------------------------------------
// main

/** `midge ctrl <options> <module> <command> ...` (argv without `midge ctrl`): the exit code. */
export const runCtrl = async (argv: ReadonlyArray<string>, env: CtrlEnv = processEnv): Promise<number> => {
  if (argv.length === 0) {
    env.stdout(usage())
    return 1
  }
  // the command line once to find the options file, then the file's options, then the command line over them
  const probe = newConfig()
  const parsed = parseOptions(probe, argv)
  if (parsed._tag === "Stop") {
    env.stderr(parsed.text)
    if (parsed.usage === true) env.stdout(usage())
    return parsed.code
  }
  const fromFile = optionsFileArgs(probe, env.env)
  if (!Array.isArray(fromFile)) {
    env.stderr(fromFile.error)
    return 1
  }
  const cfg = newConfig()
  const fileParsed = parseOptions(cfg, fromFile)
  if (fileParsed._tag === "Stop") {
    env.stderr(fileParsed.text)
    return fileParsed.code
  }
  parseOptions(cfg, argv)
  const rest = parsed.rest
  if (rest.length < 2) {
    env.stdout(usage())
    return 1
  }
  if (rest[0].toLowerCase() !== "dynsec") {
    env.stderr(`Error: Module '${rest[0]}' not supported.\n`)
    return RC.NOT_SUPPORTED
  }
  const args = rest.slice(1)
  const sub = args[0].toLowerCase()
  if (sub === "help") {
    env.stdout(dynsecUsage())
    return 0
  }
  if (sub === "init") return initFile(args.slice(1), env)
  if (cfg.dataFile !== undefined && sub === "setclientpassword") return filePassword(cfg.dataFile, args.slice(1), env)

  const built = buildCommand(args)
  switch (built._tag) {
    case "Unknown":
      env.stderr(`Command '${built.name}' not recognised.\n`)
      return RC.UNKNOWN
    case "Invalid":
      env.stderr(`${built.text ?? ""}Error: Invalid function arguments provided.\n`)
      return RC.INVAL
  }
  const command = built.command
  if (built.prompt !== undefined) {
    const u = built.prompt.username
    if (built.prompt.kind === "createClient") {
      env.stdout(`Enter new password for ${u}. Press return for no password (user will be unable to login).\n`)
      const got = await getPassword(env, `New password for ${u}: `, `Reenter password for ${u}: `, true)
      if (got.rc === 2) {
        env.stderr("Error: Passwords do not match.\n")
        return 0
      }
      if (got.rc === 0) command.password = got.password
      else env.stdout("\n")
    } else {
      const got = await getPassword(env, `New password for ${u}: `, `Reenter password for ${u}: `, false)
      if (got.rc !== 0) return 0
      command.password = got.password
    }
  }
  const correlationData = crypto.randomBytes(8).toString("hex")
  command.correlationData = correlationData
  return request(cfg, JSON.stringify({ commands: [command] }), correlationData, env)
}
