import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  type BrokerConfig,
  ConfigError,
  defaults,
  knownOptions,
  loadConfigFile,
  parseConfigText
} from "../../src/config/Config.js"

const parse = (text: string, file = "t.conf"): Either.Either<BrokerConfig, ConfigError> =>
  Effect.runSync(Effect.either(parseConfigText(text, file)))

const ok = (text: string, file = "t.conf"): BrokerConfig => {
  const r = parse(text, file)
  if (Either.isLeft(r)) throw new Error(`expected a valid config, got:\n${r.left.message}`)
  return r.right
}

/** The error's message lines: one `file:line option: message` per problem. */
const fails = (text: string, file = "t.conf"): Array<string> => {
  const r = parse(text, file)
  if (Either.isRight(r)) throw new Error("expected a ConfigError")
  expect(r.left).toBeInstanceOf(ConfigError)
  expect(r.left.message.split("\n")).toHaveLength(r.left.problems.length)
  return r.left.message.split("\n")
}

const tmp = (files: Record<string, string>): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-config-"))
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), text)
  }
  return dir
}

describe("defaults (no config file, as Mosquitto 2)", () => {
  it("listens on 1883 on 127.0.0.1 and ::1 only, anonymous allowed", () => {
    expect(defaults.localOnly).toBe(true)
    expect(defaults.allowAnonymous).toBe(true)
    expect(defaults.listeners.map((l) => [l.port, l.bindAddress, l.bindOptional])).toEqual([
      [1883, "127.0.0.1", true],
      [1883, "::1", true]
    ])
    expect(defaults.warnings).toEqual([])
    expect(defaults.directives).toEqual([])
  })

  it("an empty file is the same as no file", () => {
    const { directives: _d, ...fromEmpty } = ok("")
    const { directives: _e, ...fromDefaults } = defaults
    expect(fromEmpty).toEqual(fromDefaults)
  })
})

// Every first-round option: its default, then a set value.
const cases: ReadonlyArray<readonly [keyof BrokerConfig, unknown, string, unknown]> = [
  ["perListenerSettings", false, "per_listener_settings true", true],
  ["maxInflightMessages", 20, "max_inflight_messages 5", 5],
  ["maxQueuedMessages", 1000, "max_queued_messages 10", 10],
  ["queueQos0Messages", false, "queue_qos0_messages true", true],
  ["maxKeepalive", 65535, "max_keepalive 60", 60],
  ["maxPacketSize", 0, "max_packet_size 1024", 1024],
  ["messageSizeLimit", 0, "message_size_limit 2048", 2048],
  ["persistentClientExpiration", undefined, "persistent_client_expiration 2h", 7200],
  ["allowZeroLengthClientid", true, "allow_zero_length_clientid false", false],
  ["autoIdPrefix", "auto-", "auto_id_prefix midge-", "midge-"],
  ["retainAvailable", true, "retain_available false", false],
  ["upgradeOutgoingQos", false, "upgrade_outgoing_qos true", true],
  ["allowDuplicateMessages", false, "allow_duplicate_messages true", true],
  ["enableControlApi", false, "enable_control_api true", true],
  ["setTcpNodelay", false, "set_tcp_nodelay true", true],
  ["sysInterval", 10, "sys_interval 0", 0],
  ["logDest", [{ kind: "stderr" }], "log_dest stdout", [{ kind: "stdout" }]],
  ["logTypes", ["error", "warning", "notice", "information"], "log_type debug", ["debug"]],
  ["connectionMessages", true, "connection_messages false", false],
  ["logTimestamp", true, "log_timestamp false", false],
  ["passwordFile", undefined, "password_file /etc/mosquitto/passwd", "/etc/mosquitto/passwd"],
  ["aclFile", undefined, "acl_file /etc/mosquitto/acl", "/etc/mosquitto/acl"],
  ["persistence", false, "persistence true", true],
  ["persistenceLocation", undefined, "persistence_location /var/lib/mosquitto/", "/var/lib/mosquitto/"],
  ["persistenceFile", "mosquitto.db", "persistence_file midge.db", "midge.db"],
  ["autosaveInterval", 1800, "autosave_interval 60", 60],
  ["pidFile", undefined, "pid_file /run/midge.pid", "/run/midge.pid"],
  ["user", "mosquitto", "user midge", "midge"]
]

describe("first-round options: Mosquitto's default, and a set value", () => {
  for (const [field, byDefault, line, set] of cases) {
    it(`${field}: ${JSON.stringify(byDefault)} by default; "${line}"`, () => {
      expect(defaults[field]).toEqual(byDefault)
      expect(ok("listener 1883\n")[field]).toEqual(byDefault)
      const config = ok(`listener 1883\n${line}\n`)
      expect(config[field]).toEqual(set)
      expect(config.warnings).toEqual([])
    })
  }

  it("allow_anonymous: false once a listener is configured, true in local-only mode, or as set", () => {
    expect(ok("listener 1883\n").allowAnonymous).toBe(false)
    expect(ok("listener 1883\nallow_anonymous true\n").allowAnonymous).toBe(true)
    expect(ok("max_keepalive 10\n").allowAnonymous).toBe(true)
    // an explicit false is honoured even in local-only mode (eclipse-mosquitto/mosquitto#3198)
    expect(ok("allow_anonymous false\n").allowAnonymous).toBe(false)
  })

  it("booleans are true/false, and 1/0 as Mosquitto's conf__parse_bool accepts", () => {
    expect(ok("retain_available 0\n").retainAvailable).toBe(false)
    expect(ok("retain_available 1\n").retainAvailable).toBe(true)
    expect(fails("retain_available yes\nset_tcp_nodelay True\nlog_timestamp on\n")).toEqual([
      't.conf:1 retain_available: invalid value "yes": expected true or false',
      't.conf:2 set_tcp_nodelay: invalid value "True": expected true or false',
      't.conf:3 log_timestamp: invalid value "on": expected true or false'
    ])
  })

  it("a repeated number keeps its last value; every occurrence is checked", () => {
    expect(ok("max_queued_messages 5\nmax_queued_messages 7\n").maxQueuedMessages).toBe(7)
    expect(fails("max_queued_messages x\nmax_queued_messages 7\n")).toEqual([
      't.conf:1 max_queued_messages: invalid value "x": expected an integer'
    ])
  })

  it("conf.c's clamps: negative / 65535 inflight and negative queue or autosave mean 0, max_connections < 0 means -1", () => {
    expect(ok("max_inflight_messages -1\n").maxInflightMessages).toBe(0)
    expect(ok("max_inflight_messages 65535\n").maxInflightMessages).toBe(0)
    expect(ok("max_queued_messages -5\n").maxQueuedMessages).toBe(0)
    expect(ok("autosave_interval -1\n").autosaveInterval).toBe(0)
    expect(ok("listener 1883\nmax_connections -7\n").listeners[0].maxConnections).toBe(-1)
  })

  it("Mosquitto 2.1's listener options and global limits: values, clamps and place", () => {
    const c = ok(
      "global_max_connections 50\nglobal_max_clients -3\nlistener 1885\naccept_protocol_versions 3, 4\nlistener_allow_anonymous true\nlistener_auto_id_prefix in-\nlistener 1886\naccept_protocol_versions 5,4,9\n"
    )
    expect([c.globalMaxConnections, c.globalMaxClients]).toEqual([50, -1])
    expect(c.listeners.map((l) => l.acceptProtocolVersions)).toEqual([[3, 4], [5, 4]])
    expect(c.listeners.map((l) => [l.allowAnonymous, l.autoIdPrefix])).toEqual([[true, "in-"], [undefined, undefined]])
    // with per_listener_settings, the listener_* spelling wins over the listener's allow_anonymous
    const p = ok("per_listener_settings true\nlistener 1885\nlistener_allow_anonymous true\nallow_anonymous false\n")
    expect(p.listeners[0].allowAnonymous).toBe(true)
    expect(ok("").globalMaxConnections).toBe(-1)
    expect(fails("accept_protocol_versions 5\nlistener 1885\n")).toEqual(["t.conf:1 accept_protocol_versions: a listener must be defined before this option"])
    expect(fails("listener 1885\nlistener_auto_id_prefix " + "x".repeat(51) + "\n")).toEqual(["t.conf:2 listener_auto_id_prefix: length must be <= 50"])
    expect(fails("listener 1885\nlistener_allow_anonymous maybe\n")[0]).toMatch(/^t.conf:2 listener_allow_anonymous: invalid value "maybe"/)
    // retain_expiry_interval: minutes in the file, seconds decoded; at least 1, capped at 10,000,000
    expect([ok("").retainExpiryInterval, ok("retain_expiry_interval 2\n").retainExpiryInterval]).toEqual([0, 120])
    expect(ok("retain_expiry_interval 20000000\n").retainExpiryInterval).toBe(600_000_000)
    expect(fails("retain_expiry_interval 0\n")).toEqual(["t.conf:1 retain_expiry_interval: retain_expiry_interval must be >= 1"])
    // retry_interval: gone since Mosquitto 2.0, a warning and nothing else
    expect(ok("retry_interval 20\n").warnings).toEqual(["t.conf:1 retry_interval: no longer available: Mosquitto 2 removed it and ignores it, as Midge does"])
    expect([ok("listener 1885\n").listeners[0].maxTopicAliasBroker, ok("listener 1885\nmax_topic_alias_broker 0\n").listeners[0].maxTopicAliasBroker]).toEqual([10, 0])
    expect(fails("listener 1885\nmax_topic_alias_broker 65536\n")[0]).toMatch(/^t.conf:2 max_topic_alias_broker: invalid value 65536/)
  })

  it("out-of-range values are errors naming file, line and option", () => {
    expect(
      fails(
        [
          "max_inflight_messages 65536",
          "max_keepalive -1",
          "max_packet_size 19",
          "message_size_limit 268435456",
          "sys_interval 65536",
          "port 0",
          "listener 65536",
          "max_queued_messages 99999999999"
        ].join("\n")
      )
    ).toEqual([
      "t.conf:1 max_inflight_messages: invalid value 65536: must be at most 65535",
      "t.conf:2 max_keepalive: invalid value -1: must be between 0 and 65535",
      "t.conf:3 max_packet_size: invalid value 19: must be at least 20",
      "t.conf:4 message_size_limit: invalid value 268435456: must be between 0 and 268435455",
      "t.conf:5 sys_interval: invalid value 65536: must be between 0 and 65535",
      "t.conf:6 port: invalid value 0: must be between 1 and 65535",
      "t.conf:7 listener: invalid port 65536: must be between 0 and 65535",
      "t.conf:8 max_queued_messages: invalid value 99999999999: out of range"
    ])
  })

  it.prop(
    "max_keepalive accepts exactly 0..65535",
    [fc.integer({ min: -100_000, max: 200_000 })],
    ([n]) => {
      const r = parse(`max_keepalive ${n}\n`)
      if (n >= 0 && n <= 65535) expect(Either.getOrThrow(r).maxKeepalive).toBe(n)
      else expect(Either.isLeft(r)).toBe(true)
    },
    { fastCheck: { seed: 1883, numRuns: 300 } }
  )

  it("wrong arity and non-numbers are errors; a trailing # comment after a value is fine", () => {
    expect(ok("max_keepalive 30 # seconds\n").maxKeepalive).toBe(30)
    expect(fails("max_keepalive\nmax_keepalive 1 2\nsys_interval 10s\npersistence\nuser\n")).toEqual([
      "t.conf:1 max_keepalive: missing value",
      't.conf:2 max_keepalive: expected one value, got 2: "1 2"',
      't.conf:3 sys_interval: invalid value "10s": expected an integer',
      "t.conf:4 persistence: missing value",
      "t.conf:5 user: missing value"
    ])
  })

  it("paths take the rest of the line, spaces included; a second one is a duplicate", () => {
    expect(ok("password_file /etc/my passwords/file  \n").passwordFile).toBe("/etc/my passwords/file")
    expect(fails("pid_file /a\npid_file /b\nacl_file /c\n\nacl_file /d\n")).toEqual([
      "t.conf:2 pid_file: duplicate value: already set at t.conf:1",
      "t.conf:5 acl_file: duplicate value: already set at t.conf:3"
    ])
    // a duplicate and an invalid value are both reported
    expect(fails("listener 1\nmount_point a/#\nmount_point b/\nmount_point c/\n")).toEqual([
      't.conf:2 mount_point: invalid mount_point "a/#": it must not contain a wildcard (+ or #)',
      "t.conf:3 mount_point: duplicate value: already set at t.conf:2",
      "t.conf:4 mount_point: duplicate value: already set at t.conf:2"
    ])
    // conf.c frees the previous `user`: the last one wins
    expect(ok("user a\nuser b\n").user).toBe("b")
  })

  it("persistent_client_expiration: an integer and one of s h d w m y", () => {
    const seconds = (v: string) => ok(`persistent_client_expiration ${v}\n`).persistentClientExpiration
    expect([seconds("30s"), seconds("1h"), seconds("14d"), seconds("2w"), seconds("1m"), seconds("1y")]).toEqual([
      30,
      3600,
      14 * 86400,
      14 * 86400,
      30 * 86400,
      365 * 86400
    ])
    expect(fails("persistent_client_expiration 10\npersistent_client_expiration 0d\n")).toEqual([
      't.conf:1 persistent_client_expiration: invalid duration "10": expected an integer followed by one of s h d w m y',
      't.conf:2 persistent_client_expiration: invalid duration "0d": must be greater than zero'
    ])
  })

  it("log_dest accumulates, `none` clears, `file` takes a path and may appear once", () => {
    expect(ok("log_dest stdout\nlog_dest syslog\nlog_dest stdout\n").logDest).toEqual([{ kind: "stdout" }, { kind: "syslog" }])
    expect(ok("log_dest stdout\nlog_dest none\n").logDest).toEqual([{ kind: "none" }])
    expect(ok("log_dest none\nlog_dest topic\n").logDest).toEqual([{ kind: "topic" }])
    expect(ok("log_dest file /var/log/midge log.txt\n").logDest).toEqual([{ kind: "file", path: "/var/log/midge log.txt" }])
    expect(fails("log_dest file\nlog_dest console\nlog_dest file /a\nlog_dest file /b\n")).toEqual([
      't.conf:1 log_dest: "log_dest file" needs a file name',
      't.conf:2 log_dest: invalid value "console": expected none or stdout or stderr or syslog or topic',
      "t.conf:4 log_dest: duplicate value: already set at t.conf:3"
    ])
  })

  it("log_dest dlt / android are recognised and reported as not supported yet", () => {
    const c = ok("log_dest dlt\nlog_dest stdout\n")
    expect(c.logDest).toEqual([{ kind: "stdout" }])
    expect(c.warnings).toEqual(["t.conf:1 log_dest: log_dest dlt is not supported yet by Midge"])
  })

  it("log_type accumulates, `none` clears, `all` sets every type", () => {
    expect(ok("log_type warning\nlog_type error\n").logTypes).toEqual(["error", "warning"])
    expect(ok("log_type all\nlog_type none\nlog_type subscribe\n").logTypes).toEqual(["subscribe"])
    expect(ok("log_type all\n").logTypes).toEqual([
      "debug",
      "error",
      "warning",
      "notice",
      "information",
      "subscribe",
      "unsubscribe",
      "websockets"
    ])
    expect(fails("log_type verbose\n")).toEqual([
      't.conf:1 log_type: invalid value "verbose": expected debug or error or warning or notice or information or subscribe or unsubscribe or websockets or none or all'
    ])
  })
})

describe("listeners", () => {
  it("listener blocks take the per-listener options that follow them", () => {
    const c = ok(
      [
        "max_inflight_messages 3",
        "listener 1883",
        "max_connections 100",
        "listener 8080 127.0.0.1",
        "protocol websockets",
        "mount_point tenant/a/",
        "max_qos 1",
        "socket_domain ipv4",
        "listener 0 /run/midge.sock",
        "maximum_qos 0",
        ""
      ].join("\n")
    )
    expect(c.localOnly).toBe(false)
    expect(c.maxInflightMessages).toBe(3)
    expect(c.listeners).toEqual([
      {
        port: 1883,
        bindAddress: undefined,
        socketPath: undefined,
        protocol: "mqtt",
        mountPoint: undefined,
        maxQos: 2,
        maxConnections: 100,
        maxTopicAlias: 10,
        maxTopicAliasBroker: 10,
        useUsernameAsClientid: false,
        socketDomain: undefined,
        allowAnonymous: undefined,
        allowZeroLengthClientid: undefined,
        autoIdPrefix: undefined,
        passwordFile: undefined,
        aclFile: undefined,
        bindOptional: false
      },
      {
        port: 8080,
        bindAddress: "127.0.0.1",
        socketPath: undefined,
        protocol: "websockets",
        mountPoint: "tenant/a/",
        maxQos: 1,
        maxConnections: -1,
        maxTopicAlias: 10,
        maxTopicAliasBroker: 10,
        useUsernameAsClientid: false,
        socketDomain: "ipv4",
        allowAnonymous: undefined,
        allowZeroLengthClientid: undefined,
        autoIdPrefix: undefined,
        passwordFile: undefined,
        aclFile: undefined,
        bindOptional: false
      },
      {
        port: 0,
        bindAddress: undefined,
        socketPath: "/run/midge.sock",
        protocol: "mqtt",
        mountPoint: undefined,
        maxQos: 0,
        maxConnections: -1,
        maxTopicAlias: 10,
        maxTopicAliasBroker: 10,
        useUsernameAsClientid: false,
        socketDomain: undefined,
        allowAnonymous: undefined,
        allowZeroLengthClientid: undefined,
        autoIdPrefix: undefined,
        passwordFile: undefined,
        aclFile: undefined,
        bindOptional: false
      }
    ])
  })

  it("max_topic_alias (0 to 65535, default 10) and use_username_as_clientid are per listener (the latter before any listener makes the default one, max_topic_alias does not: conf.c); dhparamfile is a TLS option", () => {
    const c = ok("listener 1883\nmax_topic_alias 0\nuse_username_as_clientid true\nlistener 1884\nmax_topic_alias 65535\n")
    expect(c.listeners.map((l) => [l.port, l.maxTopicAlias, l.useUsernameAsClientid])).toEqual([
      [1883, 0, true],
      [1884, 65535, false]
    ])
    expect(fails("listener 1883\nmax_topic_alias 65536\nuse_username_as_clientid maybe\n").map((p) => p.slice(0, 31))).toEqual([
      "t.conf:2 max_topic_alias: inval",
      "t.conf:3 use_username_as_client"
    ])
    const dl = ok("use_username_as_clientid true\nlistener 1885\n")
    expect(dl.listeners.map((l) => [l.port, l.useUsernameAsClientid])).toEqual([
      [1885, false],
      [1883, true]
    ])
    expect(ok("max_topic_alias 3\nlistener 1885\n").listeners.map((l) => [l.port, l.maxTopicAlias])).toEqual([[1885, 10]])
    expect(ok("listener 8883\ndhparamfile /etc/dh.pem\ncertfile /c\nkeyfile /k\n").listeners[0].tls?.dhparamfile).toBe("/etc/dh.pem")
    expect(ok("listener 1883\ndhparamfile /etc/dh.pem\n").warnings).toEqual([
      "t.conf:2 dhparamfile: has no effect: this listener has no certfile and keyfile, nor psk_hint, so it is not TLS"
    ])
  })

  it("max_qos: 0, 1 or 2; anything else names file:line and option", () => {
    const bad = fails("listener 1883\nmax_qos 3\n")
    expect(bad).toHaveLength(1)
    expect(bad[0]).toMatch(/^t\.conf:2 max_qos: /)
  })

  it("listener: port 0 needs a socket path; extra values and bad ports are errors", () => {
    expect(fails("listener 0\nlistener abc\nlistener 1883 0.0.0.0 extra\nlistener\n")).toEqual([
      "t.conf:1 listener: a listener with port 0 must provide a Unix socket path",
      't.conf:2 listener: invalid value "abc": expected an integer',
      't.conf:3 listener: expected a port and an optional address, got 3 values: "1883 0.0.0.0 extra"',
      "t.conf:4 listener: missing port"
    ])
    expect(ok("listener 1883 0.0.0.0 # all interfaces\n").listeners[0].bindAddress).toBe("0.0.0.0")
  })

  it("port (deprecated) opens the default listener on all interfaces, after the explicit listeners", () => {
    const c = ok("port 1884\nlistener 1885\n")
    expect(c.localOnly).toBe(false)
    expect(c.allowAnonymous).toBe(false)
    expect(c.listeners.map((l) => [l.port, l.bindAddress])).toEqual([
      [1885, undefined],
      [1884, undefined]
    ])
    expect(c.warnings).toEqual(["t.conf:1 port: deprecated in Mosquitto 2: use listener instead"])
  })

  it("bind_address (deprecated) binds the default listener on 1883; port given twice warns, last wins", () => {
    expect(ok("bind_address 10.0.0.1\n").listeners.map((l) => [l.port, l.bindAddress])).toEqual([[1883, "10.0.0.1"]])
    const c = ok("port 1\nport 2\n")
    expect(c.listeners.map((l) => l.port)).toEqual([2])
    expect(c.warnings).toContain("t.conf:2 port: default listener port specified multiple times: only the latest will be used")
  })

  it("listener options before any listener configure the default listener (local-only unless port/bind_address)", () => {
    const local = ok("max_connections 5\n")
    expect(local.localOnly).toBe(true)
    expect(local.listeners.map((l) => [l.bindAddress, l.maxConnections])).toEqual([
      ["127.0.0.1", -1],
      ["::1", -1]
    ])
    // dropped in local-only mode, and said so
    expect(local.warnings).toEqual([
      "t.conf:1 max_connections: has no effect: without a listener line Midge, as Mosquitto 2, listens on the loopback only, with the default listener settings"
    ])
    const c = ok("max_connections 5\nlistener 1885\n")
    expect(c.listeners.map((l) => [l.port, l.maxConnections])).toEqual([
      [1885, -1],
      [1883, 5]
    ])
    expect(c.warnings).toEqual([
      "t.conf:1 max_connections: set before any listener line: it configures Mosquitto's default listener, which opens on port 1883 on all interfaces"
    ])
    // default values do not create the default listener
    expect(ok("max_connections -1\nprotocol mqtt\nlistener 1885\n").listeners.map((l) => l.port)).toEqual([1885])
    // TLS options or max_qos before any listener create it too (conf.c config__parse_args), never dropped silently
    const tls = ok("certfile /c\nkeyfile /k\nlistener 1885\n")
    expect(tls.listeners.map((l) => [l.port, l.tls?.certfile])).toEqual([
      [1885, undefined],
      [1883, "/c"]
    ])
    expect(tls.warnings).toEqual([
      "t.conf:1 certfile: set before any listener line: it configures Mosquitto's default listener, which opens on port 1883 on all interfaces"
    ])
    expect(ok("max_qos 1\nlistener 1885\n").listeners.map((l) => [l.port, l.maxQos])).toEqual([
      [1885, 2],
      [1883, 1]
    ])
  })

  it("bind_interface: per listener, once; before any listener it makes the default listener (conf.c)", () => {
    const c = ok("listener 1885\nbind_interface eth0\nlistener 1886\n")
    expect(c.listeners.map((l) => [l.port, l.bindInterface])).toEqual([
      [1885, "eth0"],
      [1886, undefined]
    ])
    expect(fails("listener 1885\nbind_interface eth0\nbind_interface eth1\n")).toEqual(["t.conf:3 bind_interface: duplicate value: already set at t.conf:2"])
    expect(ok("bind_interface lo\nlistener 1885\n").listeners.map((l) => [l.port, l.bindInterface])).toEqual([
      [1885, undefined],
      [1883, "lo"]
    ])
  })

  it("mount_point needs a listener and no wildcards", () => {
    expect(fails("mount_point a/\nlistener 1883\nmount_point a/#\n")).toEqual([
      "t.conf:1 mount_point: a listener must be defined before this option",
      't.conf:3 mount_point: invalid mount_point "a/#": it must not contain a wildcard (+ or #)'
    ])
  })

  it("protocol and socket_domain values", () => {
    expect(fails("listener 1\nprotocol mqttsn\nsocket_domain ipv5\n")).toEqual([
      't.conf:2 protocol: invalid value "mqttsn": expected mqtt or websockets',
      't.conf:3 socket_domain: invalid value "ipv5": expected ipv4 or ipv6'
    ])
  })

  it("an http_api listener (Mosquitto 2.1) is skipped with a warning", () => {
    const c = ok("listener 1883\nlistener 8080\nprotocol http_api\n")
    expect(c.listeners.map((l) => l.port)).toEqual([1883])
    expect(c.warnings).toEqual(["t.conf:3 protocol: protocol http_api is not supported yet by Midge: this listener is not opened"])
  })
})

describe("per_listener_settings", () => {
  it("security options apply to the listener they follow", () => {
    const c = ok(
      [
        "per_listener_settings true",
        "listener 1883",
        "allow_anonymous true",
        "auto_id_prefix one-",
        "listener 1884",
        "password_file /etc/pw",
        "acl_file /etc/acl",
        "allow_zero_length_clientid false",
        ""
      ].join("\n")
    )
    expect(c.perListenerSettings).toBe(true)
    expect(c.allowAnonymous).toBe(false)
    expect(c.passwordFile).toBeUndefined()
    expect(
      c.listeners.map((l) => [l.port, l.allowAnonymous, l.autoIdPrefix, l.passwordFile, l.aclFile, l.allowZeroLengthClientid])
    ).toEqual([
      [1883, true, "one-", undefined, undefined, true],
      [1884, false, "auto-", "/etc/pw", "/etc/acl", false]
    ])
  })

  it("without it, security options are broker-wide wherever they appear", () => {
    const c = ok("listener 1883\nallow_anonymous true\nlistener 1884\npassword_file /etc/pw\n")
    expect(c.allowAnonymous).toBe(true)
    expect(c.passwordFile).toBe("/etc/pw")
    expect(c.listeners.map((l) => l.allowAnonymous)).toEqual([undefined, undefined])
  })

  it("must come before any other security setting, as in conf.c", () => {
    expect(fails("allow_anonymous true\nper_listener_settings true\n")).toEqual([
      "t.conf:2 per_listener_settings: per_listener_settings must be set before any other security settings"
    ])
    // setting it false afterwards is harmless
    expect(ok("allow_anonymous true\nper_listener_settings false\n").perListenerSettings).toBe(false)
  })

  it("once true it stays true (a later line is ignored, with a warning)", () => {
    const c = ok("per_listener_settings true\nper_listener_settings false\nlistener 1883\n")
    expect(c.perListenerSettings).toBe(true)
    expect(c.warnings).toEqual(["t.conf:2 per_listener_settings: ignored: per_listener_settings is already true"])
  })

  it("a security option before any listener applies to the default listener, or warns that it has no effect", () => {
    const c = ok("per_listener_settings true\nallow_anonymous true\nlistener 1883\n")
    expect(c.listeners.map((l) => l.allowAnonymous)).toEqual([false])
    expect(c.warnings).toEqual([
      "t.conf:2 allow_anonymous: has no effect: with per_listener_settings true it applies to the listener it follows, and there is none"
    ])
    const withPort = ok("per_listener_settings true\nport 1884\nallow_anonymous true\nlistener 1883\n")
    expect(withPort.listeners.map((l) => [l.port, l.allowAnonymous])).toEqual([
      [1883, false],
      [1884, true]
    ])
  })
})

describe("TLS listener options", () => {
  it("a keyfile without its certfile, or a certfile without its keyfile, is an error naming the line", () => {
    const message = "both certfile and keyfile must be provided if one of them is set"
    expect(fails("listener 8883\nkeyfile /etc/k.pem\ncafile /etc/ca.pem\nrequire_certificate true\n")).toEqual([`t.conf:2 keyfile: ${message}`])
    expect(fails("listener 8883\ncertfile /etc/c.pem\nlistener 8884\ncertfile /etc/c.pem\nkeyfile /etc/k.pem\n")).toEqual([`t.conf:2 certfile: ${message}`])
    // the default listener's too
    expect(fails("keyfile /etc/k.pem\nlistener 1883\n")).toEqual([`t.conf:1 keyfile: ${message}`])
  })

  it("TLS options on a listener without certfile / keyfile or psk_hint are named: the listener stays plain", () => {
    const c = ok("listener 1883\ncafile /etc/ca.pem\nrequire_certificate true\nuse_identity_as_username true\nlistener 8883\ncafile /etc/ca.pem\ncertfile /c\nkeyfile /k\n")
    expect(c.listeners.map((l) => [l.port, l.tls?.cafile])).toEqual([
      [1883, undefined],
      [8883, "/etc/ca.pem"]
    ])
    const why = "has no effect: this listener has no certfile and keyfile, nor psk_hint, so it is not TLS"
    expect(c.warnings).toEqual([`t.conf:2 cafile: ${why}`, `t.conf:3 require_certificate: ${why}`, `t.conf:4 use_identity_as_username: ${why}`])
    // a PSK listener is TLS without a certificate
    expect(ok("listener 8884\npsk_hint h\ntls_version tlsv1.2\npsk_file /etc/psk\n").warnings).toEqual([])
  })
})

describe("options read once, as conf.c reads strings", () => {
  it("clientid_prefixes and psk_file given twice are errors naming both lines", () => {
    expect(fails("clientid_prefixes a-\nclientid_prefixes b-\n")).toEqual(["t.conf:2 clientid_prefixes: duplicate value: already set at t.conf:1"])
    expect(fails("listener 8883\npsk_hint h\npsk_file /a\npsk_file /b\n")).toEqual(["t.conf:4 psk_file: duplicate value: already set at t.conf:3"])
  })

  it("psk_file: the broker's for every PSK listener, or each listener's own with per_listener_settings", () => {
    const global = ok("psk_file /etc/psk\nlistener 8883\npsk_hint a\nlistener 8884\npsk_hint b\nlistener 1883\n")
    expect(global.listeners.map((l) => [l.port, l.tls?.pskFile])).toEqual([
      [8883, "/etc/psk"],
      [8884, "/etc/psk"],
      [1883, undefined]
    ])
    const own = ok("per_listener_settings true\nlistener 8883\npsk_hint a\npsk_file /etc/a.psk\nlistener 8884\npsk_hint b\npsk_file /etc/b.psk\n")
    expect(own.listeners.map((l) => [l.port, l.tls?.pskFile])).toEqual([
      [8883, "/etc/a.psk"],
      [8884, "/etc/b.psk"]
    ])
  })

  it("check_retain_source is broker-wide, also with per_listener_settings", () => {
    expect(ok("per_listener_settings true\nlistener 1883\ncheck_retain_source false\n").checkRetainSource).toBe(false)
    expect(ok("listener 1883\ncheck_retain_source false\n").checkRetainSource).toBe(false)
  })
})

describe("file format", () => {
  it("comments (# in the first column), blank lines, trailing whitespace and CRLF", () => {
    const c = ok("# a comment\r\n\r\n   \r\nlistener 1883   \r\n#listener 1884\r\n\tmax_connections\t7 \r\n")
    expect(c.listeners.map((l) => [l.port, l.maxConnections])).toEqual([[1883, 7]])
    expect(c.directives).toEqual([
      { file: "t.conf", line: 4, option: "listener", args: ["1883"], value: "1883" },
      { file: "t.conf", line: 6, option: "max_connections", args: ["7"], value: "7" }
    ])
  })

  it("an indented # is not a comment in Mosquitto: it is an error that says why", () => {
    expect(fails("  # indented\n")).toEqual([
      "t.conf:1 #: unknown option: a comment must have # as the very first character of the line"
    ])
  })

  it("an unknown option is an error, as in Mosquitto", () => {
    expect(fails("listener 1883\nallow_anonymus true\n")).toEqual(["t.conf:2 allow_anonymus: unknown option"])
  })

  it("a recognised option Midge does not support yet is a warning naming file:line, and is kept", () => {
    const c = ok("listener 8883\ncertfile /etc/cert.pem\nkeyfile /etc/key.pem\ntls_keyform pem\ntls_engine x\n", "/etc/m.conf")
    expect(c.warnings).toEqual(["/etc/m.conf:4 tls_keyform: not supported yet by Midge", "/etc/m.conf:5 tls_engine: not supported yet by Midge"])
    expect(c.directives.map((d) => d.option)).toEqual(["listener", "certfile", "keyfile", "tls_keyform", "tls_engine"])
    expect(c.listeners.map((l) => l.port)).toEqual([8883])
    // certfile makes it a TLS listener
    expect(c.listeners[0].tls).toMatchObject({ certfile: "/etc/cert.pem", keyfile: "/etc/key.pem" })
  })

  it("bridges: options need a connection first; supported ones are not warned about, unsupported ones are", () => {
    expect(fails("address 10.0.0.1:1883\nconnection\n")).toEqual([
      "t.conf:1 address: invalid bridge configuration: this option must follow a connection line",
      "t.conf:2 connection: missing bridge name"
    ])
    const c = ok("connection upstream\naddress 10.0.0.1:1883\ntopic # both 0\nbridge_tcp_keepalive 7\nbridge_tcp_user_timeout 1000\n")
    expect(c.warnings).toEqual(["t.conf:5 bridge_tcp_user_timeout: not supported yet by Midge"])
    expect(c.directives.map((d) => d.option)).toEqual(["connection", "address", "topic", "bridge_tcp_keepalive", "bridge_tcp_user_timeout"])
  })

  it("plugin options need a plugin first; auth_opt_/plugin_opt_ match by prefix", () => {
    expect(fails("plugin_opt_x 1\n")).toEqual(["t.conf:1 plugin_opt_x: this option must follow a plugin line"])
    // plugin_opt_* and auth_opt_* are read alike (the dynamic security plugin is built in), as conf.c takes either prefix
    const dynsec = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    expect(ok(`plugin ${dynsec}\nplugin_opt_key value\nauth_opt_other v\n`).warnings).toEqual([])
    expect(fails(`plugin ${dynsec}\nplugin_opt_ x\n`)).toEqual(["t.conf:2 plugin_opt_: unknown option"])
    expect(fails(`auth_plugin_deny_special_chars true\n`)).toEqual(["t.conf:1 auth_plugin_deny_special_chars: this option must follow a plugin line"])
    // conf__parse_bool: true or false, and nothing else
    expect(fails(`auth_plugin ${dynsec}\nauth_plugin_deny_special_chars yes\nauth_plugin_deny_special_chars\nauth_plugin_deny_special_chars 1 0\n`)).toEqual([
      't.conf:2 auth_plugin_deny_special_chars: invalid value "yes": expected true or false',
      "t.conf:3 auth_plugin_deny_special_chars: missing value",
      't.conf:4 auth_plugin_deny_special_chars: expected one value, got 2: "1 0"'
    ])
    expect(ok(`auth_plugin ${dynsec}\nauth_plugin_deny_special_chars false\n`).warnings).toEqual([])
  })

  it("a plugin Midge cannot load is an error (as Mosquitto refuses to start without it); dynamic security is built in under any of the three names", () => {
    const refused =
      "cannot be loaded: Midge has Mosquitto's dynamic security plugin built in and loads no other plugin (authentication and authorisation plug in as services of an embedding application)"
    expect(fails("listener 1883\nplugin /usr/lib/mosquitto_go_auth.so\nplugin_opt_backends files\nauth_plugin /usr/lib/auth-plug.so\nglobal_plugin /x/y.so\n")).toEqual([
      `t.conf:2 plugin: ${refused}`,
      `t.conf:4 auth_plugin: ${refused}`,
      `t.conf:5 global_plugin: ${refused}`
    ])
    // auth_plugin / global_plugin naming dynamic security work as plugin does: no "not supported yet" for them
    const c = ok("listener 1883\nglobal_plugin /usr/lib/mosquitto_dynamic_security.so\nplugin_opt_config_file /var/lib/d.json\n")
    expect(c.warnings).toEqual([])
  })

  it("a bad file reports ALL its problems, in file order, as file:line option: message", () => {
    const r = parse(
      [
        "listener 1883",
        "max_inflight_messages lots",
        "allow_anonymous maybe",
        "certfile /x",
        "no_such_option 1",
        "listener 1884",
        "max_connections 1 2",
        "mount_point a/+/b",
        "sys_interval -1",
        ""
      ].join("\n"),
      "/etc/mosquitto/mosquitto.conf"
    )
    expect(Either.isLeft(r)).toBe(true)
    const error = (r as Either.Left<ConfigError, BrokerConfig>).left
    expect(error._tag).toBe("ConfigError")
    expect(error.reason).toBe("InvalidConfig")
    expect(error.problems.map((p) => [p.line, p.option])).toEqual([
      [2, "max_inflight_messages"],
      [3, "allow_anonymous"],
      [4, "certfile"],
      [5, "no_such_option"],
      [7, "max_connections"],
      [8, "mount_point"],
      [9, "sys_interval"]
    ])
    expect(error.message).toBe(
      [
        '/etc/mosquitto/mosquitto.conf:2 max_inflight_messages: invalid value "lots": expected an integer',
        '/etc/mosquitto/mosquitto.conf:3 allow_anonymous: invalid value "maybe": expected true or false',
        "/etc/mosquitto/mosquitto.conf:4 certfile: both certfile and keyfile must be provided if one of them is set",
        "/etc/mosquitto/mosquitto.conf:5 no_such_option: unknown option",
        '/etc/mosquitto/mosquitto.conf:7 max_connections: expected one value, got 2: "1 2"',
        '/etc/mosquitto/mosquitto.conf:8 mount_point: invalid mount_point "a/+/b": it must not contain a wildcard (+ or #)',
        "/etc/mosquitto/mosquitto.conf:9 sys_interval: invalid value -1: must be between 0 and 65535"
      ].join("\n")
    )
  })
})

describe("include_dir", () => {
  it("reads DIR's *.conf files in Mosquitto's order, at the include_dir line", () => {
    const dir = tmp({
      "conf.d/b.conf": "log_type debug\n",
      "conf.d/A.conf": "log_type error\n",
      "conf.d/01.conf": "listener 1884\n",
      "conf.d/a.conf": "max_connections 3\n",
      "conf.d/B.conf": "# nothing\n",
      "conf.d/00.conf": "log_type notice\n",
      "conf.d/notes.txt": "not a config file\n",
      "conf.d/.conf": "no_such_option\n"
    })
    const main = path.join(dir, "mosquitto.conf")
    const c = Effect.runSync(parseConfigText(`listener 1883\ninclude_dir ${path.join(dir, "conf.d")}\nsys_interval 5\n`, main))
    const files = c.directives.map((d) => path.basename(d.file))
    expect(files).toEqual(["mosquitto.conf", "mosquitto.conf", "00.conf", "01.conf", "A.conf", "a.conf", "b.conf", "mosquitto.conf"])
    // a.conf's max_connections follows 01.conf's listener
    expect(c.listeners.map((l) => [l.port, l.maxConnections])).toEqual([
      [1883, -1],
      [1884, 3]
    ])
    expect(c.logTypes).toEqual(["debug", "error", "notice"])
    expect(c.sysInterval).toBe(5)
  })

  it("several include_dir lines are processed in order; problems name the included file and line", () => {
    const dir = tmp({ "one.d/B.conf": "user one\n", "two.d/A.conf": "\nuser two\nmax_keepalive x\n" })
    const text = `include_dir ${path.join(dir, "one.d")}\ninclude_dir ${path.join(dir, "two.d")}\n`
    expect(fails(text, "main.conf")).toEqual([
      `${path.join(dir, "two.d", "A.conf")}:3 max_keepalive: invalid value "x": expected an integer`
    ])
    fs.writeFileSync(path.join(dir, "two.d", "A.conf"), "user two\n")
    const c = ok(text, "main.conf")
    expect(c.user).toBe("two")
    expect(c.directives.map((d) => [path.basename(d.file), d.option, d.value])).toEqual([
      ["main.conf", "include_dir", path.join(dir, "one.d")],
      ["B.conf", "user", "one"],
      ["main.conf", "include_dir", path.join(dir, "two.d")],
      ["A.conf", "user", "two"]
    ])
  })

  it("relative paths are resolved against the working directory, as Mosquitto does", () => {
    const dir = tmp({ "rel.d/x.conf": "user relative\n" })
    const cwd = process.cwd()
    process.chdir(dir)
    try {
      expect(Effect.runSync(parseConfigText("include_dir rel.d\n", "/elsewhere/main.conf")).user).toBe("relative")
    } finally {
      process.chdir(cwd)
    }
  })

  it("a missing directory is an error; include_dir in an included file is ignored with a warning", () => {
    expect(fails("include_dir /no/such/dir/for/midge\n")).toEqual([
      "t.conf:1 include_dir: unable to open include_dir '/no/such/dir/for/midge'"
    ])
    const dir = tmp({ "a.d/x.conf": `include_dir ${os.tmpdir()}\n` })
    const c = ok(`include_dir ${path.join(dir, "a.d")}\n`)
    expect(c.warnings).toEqual([
      `${path.join(dir, "a.d", "x.conf")}:1 include_dir: ignored: include_dir is only processed in the main configuration file (as Mosquitto)`
    ])
  })
})

describe("loadConfigFile", () => {
  it.effect("reads a file from disk", () =>
    Effect.gen(function* () {
      const dir = tmp({ "m.conf": "listener 1999\nallow_anonymous true\n" })
      const c = yield* loadConfigFile(path.join(dir, "m.conf"))
      expect(c.listeners.map((l) => l.port)).toEqual([1999])
      expect(c.allowAnonymous).toBe(true)
    })
  )

  it.effect("a missing file is a ConfigError", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(loadConfigFile("missing.conf"))
      expect(error.reason).toBe("MissingFile")
      expect(error.message).toBe("missing.conf: unable to open config file")
    })
  )

  it.effect("malformed UTF-8 names its line", () =>
    Effect.gen(function* () {
      const dir = tmp({})
      const file = path.join(dir, "bad.conf")
      fs.writeFileSync(file, Buffer.concat([Buffer.from("listener 1883\nuser "), Buffer.from([0xff, 0xfe]), Buffer.from("\n")]))
      const error = yield* Effect.flip(loadConfigFile(file))
      expect(error.message).toBe(`${file}:2 user: malformed UTF-8`)
    })
  )
})

/**
 * Any file a user could write from Mosquitto's option names: every option, known or not, with
 * values of every shape (none, numbers in and out of range, booleans, words, paths, several), in
 * and around `listener` and `connection` blocks. The reader never throws: the file is either
 * accepted or refused with problems that each name this file, a line of it and the option on
 * that line, as Mosquitto names them.
 */
describe("any configuration file", () => {
  const optionName = fc.oneof(
    { arbitrary: fc.constantFrom(...knownOptions.map((o) => o.name).filter((n) => n !== "include_dir")), weight: 8 },
    { arbitrary: fc.constantFrom("listener", "connection", "address", "topic", "port", "bind_address"), weight: 3 },
    { arbitrary: fc.stringMatching(/^[a-z_]{1,12}$/), weight: 1 }
  )
  const token = fc.oneof(
    fc.constantFrom("true", "false", "0", "1", "-1", "1883", "65535", "65536", "4294967296", "99999999999", "1.5", "all", "none", "both", "in", "out", "#", "a/#", "+", "127.0.0.1", "::1", "localhost", "mqtt", "websockets", "stderr", "file", "/nonexistent/x", "ipv4", "yes", "automatic", "lazy", "once", "10s", "2d"),
    fc.integer({ min: -5, max: 70_000 }).map(String),
    fc.stringMatching(/^[!-~]{1,8}$/)
  )
  const line = fc.tuple(optionName, fc.array(token, { maxLength: 4 })).map(([name, values]) => [name, ...values].join(" "))

  it.prop(
    "is accepted (its warnings naming the file, a line and its option), or refused with problems that name them; never thrown",
    [fc.array(line, { minLength: 1, maxLength: 12 })],
    ([lines]) => {
      const text = lines.join("\n") + "\n"
      const r = Effect.runSync(Effect.either(parseConfigText(text, "any.conf")))
      if (Either.isRight(r)) {
        // a warning names them too
        for (const w of r.right.warnings) {
          const at = /^any\.conf:(\d+) (\S+): /.exec(w)
          expect(at, `${w} in\n${text}`).not.toBeNull()
          expect(at![2], `${w} in\n${text}`).toBe(lines[Number(at![1]) - 1].split(" ")[0])
        }
        return
      }
      expect(r.left).toBeInstanceOf(ConfigError)
      expect(r.left.problems.length).toBeGreaterThan(0)
      for (const p of r.left.problems) {
        expect(p.file, text).toBe("any.conf")
        expect(p.line, text).toBeGreaterThanOrEqual(1)
        expect(p.line, text).toBeLessThanOrEqual(lines.length)
        expect(p.option, `${JSON.stringify(p)} in\n${text}`).toBe(lines[p.line - 1].split(" ")[0])
      }
    },
    { fastCheck: { seed: 20_261_128, numRuns: 1000 } }
  )
})
