/**
 * Decoding Mosquitto's bridge blocks (conf.c rules): defaults, aliases,
 * clamps, topic lines with `""` placeholders, restart_timeout forms, TLS,
 * and every problem reported as `file:line option: message`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { Bridge, type BridgeConfig, decodeBridges } from "../../src/bridge/Bridge.js"
import { parseConfigText } from "../../src/config/Config.js"
import { lexText } from "../../src/config/internal/lexer.js"

const decode = (text: string) => decodeBridges(lexText(text, "b.conf"), "host")
const ok = (text: string): ReadonlyArray<BridgeConfig> => {
  const r = decode(text)
  if (Either.isLeft(r)) throw new Error(r.left.message)
  return r.right
}
const fails = (text: string): Array<string> => {
  const r = decode(text)
  if (Either.isRight(r)) throw new Error("expected a ConfigError")
  return r.left.message.split("\n")
}
const one = (lines: string) => ok(`connection b\naddress 10.0.0.1\ntopic # out\n${lines}`)[0]

describe("bridge configuration", () => {
  it("Mosquitto's defaults: client ids from the host name, notifications, keepalive 60, backoff 5..30, threshold 10", () => {
    const b = ok("connection up\naddress broker.example\ntopic sensors/# out\n")[0]
    expect(b).toMatchObject({
      name: "up",
      file: "b.conf",
      line: 1,
      addresses: [{ host: "broker.example", port: 1883 }],
      roundRobin: false,
      remoteClientId: "host.up",
      localClientId: "local.host.up",
      cleanSession: false,
      localCleanSession: false,
      keepalive: 60,
      notifications: true,
      notificationTopic: "$SYS/broker/connection/host.up/state",
      notificationsLocalOnly: false,
      tryPrivate: true,
      protocolVersion: 4,
      attemptUnsubscribe: true,
      outgoingRetain: true,
      maxPacketSize: 0,
      startType: "automatic",
      reloadType: "lazy",
      restartTimeout: { _tag: "Backoff", base: 5, cap: 30, stable: 0 },
      idleTimeout: 60,
      threshold: 10,
      tls: undefined
    })
    expect(b.topics).toEqual([
      { pattern: "sensors/#", direction: "out", qos: 0, localPrefix: undefined, remotePrefix: undefined, localTopic: "sensors/#", remoteTopic: "sensors/#" }
    ])
  })

  it("addresses: several hosts, the port after the last ':', IPv6 with its port, a trailing comment", () => {
    expect(one("").addresses).toEqual([{ host: "10.0.0.1", port: 1883 }])
    const b = ok("connection b\naddresses a.example:1884 ::1:8883 [fe80::1]:1 b # the backup\ntopic # out\n")[0]
    expect(b.addresses).toEqual([
      { host: "a.example", port: 1884 },
      { host: "::1", port: 8883 },
      { host: "fe80::1", port: 1 },
      { host: "b", port: 1883 }
    ])
  })

  it("topic lines: direction (any case), QoS, prefixes and the \"\" placeholders of mosquitto.conf(5)", () => {
    const b = ok(
      [
        "connection b",
        "address h",
        "topic a/# in",
        "topic b/# BOTH 2",
        "topic c out 1 L/ R/",
        'topic d out 1 L/ ""',
        'topic e out 1 "" R/',
        'topic f out 1 "" ""',
        'topic "" both 2 local/t remote/t',
        "topic # out 0 # a comment",
        "topic a/# in" // a duplicate, skipped
      ].join("\n")
    )[0]
    expect(b.topics.map((t) => [t.direction, t.qos, t.localTopic, t.remoteTopic])).toEqual([
      ["in", 0, "a/#", "a/#"],
      ["both", 2, "b/#", "b/#"],
      ["out", 1, "L/c", "R/c"],
      ["out", 1, "L/d", "d"],
      ["out", 1, "e", "R/e"],
      ["out", 1, "f", "f"],
      ["both", 2, "local/t", "remote/t"],
      ["out", 0, "#", "#"]
    ])
  })

  it("aliases (clientid, username, password, addresses) and the other options", () => {
    const b = ok(
      [
        "connection b",
        "addresses h:1",
        "topic # out",
        "clientid cid",
        "username u",
        "password p",
        "local_clientid lid",
        "local_username lu",
        "local_password lp",
        "cleansession true",
        "keepalive_interval 3",
        "notification_topic n/t",
        "notifications_local_only true",
        "try_private false",
        "bridge_protocol_version mqttv50",
        "bridge_attempt_unsubscribe false",
        "bridge_outgoing_retain false",
        "bridge_max_packet_size -5",
        "start_type lazy",
        "idle_timeout 0",
        "threshold 0",
        "round_robin true",
        "bridge_bind_address 127.0.0.1",
        "bridge_session_expiry_interval 30",
        "bridge_receive_maximum 10",
        "bridge_max_topic_alias 0"
      ].join("\n")
    )[0]
    expect(b).toMatchObject({
      remoteClientId: "cid",
      remoteUsername: "u",
      remotePassword: "p",
      localClientId: "lid",
      localUsername: "lu",
      localPassword: "lp",
      cleanSession: true,
      // local_cleansession follows cleansession unless given
      localCleanSession: true,
      keepalive: 5, // conf.c: "keepalive interval too low, using 5 seconds"
      notificationTopic: "n/t",
      notificationsLocalOnly: true,
      tryPrivate: false,
      protocolVersion: 5,
      attemptUnsubscribe: false,
      outgoingRetain: false,
      maxPacketSize: 0,
      startType: "lazy",
      idleTimeout: 1,
      threshold: 1,
      roundRobin: true,
      bindAddress: "127.0.0.1",
      sessionExpiryInterval: 30,
      receiveMaximum: 10,
      maxTopicAlias: 0
    })
    expect(one("cleansession true\nlocal_cleansession false").localCleanSession).toBe(false)
    expect(one("bridge_protocol_version mqttv31").protocolVersion).toBe(3)
  })

  it("bridge_reload_type (Mosquitto 2.1): lazy by default, immediate, anything else an error", () => {
    expect(one("bridge_reload_type immediate\n").reloadType).toBe("immediate")
    expect(one("bridge_reload_type lazy\n").reloadType).toBe("lazy")
    expect(fails("connection b\naddress 10.0.0.1\ntopic # out\nbridge_reload_type soon\n")).toEqual([
      'b.conf:4 bridge_reload_type: invalid bridge_reload_type "soon": expected lazy, immediate'
    ])
  })

  it("restart_timeout: a constant, or base cap [stable] (Mosquitto 2.1), with conf.c's clamps", () => {
    expect(one("restart_timeout 20").restartTimeout).toEqual({ _tag: "Constant", seconds: 20 })
    expect(one("restart_timeout 0").restartTimeout).toEqual({ _tag: "Constant", seconds: 1 })
    expect(one("restart_timeout 99999").restartTimeout).toEqual({ _tag: "Constant", seconds: 3600 })
    expect(one("restart_timeout 10 60").restartTimeout).toEqual({ _tag: "Backoff", base: 10, cap: 60, stable: 0 })
    expect(one("restart_timeout 10 99999 120").restartTimeout).toEqual({ _tag: "Backoff", base: 10, cap: 7200, stable: 120 })
  })

  it("TLS is on with bridge_cafile, bridge_capath, bridge_psk or bridge_tls_use_os_certs", () => {
    expect(one("bridge_certfile c\nbridge_keyfile k").tls).toBeUndefined()
    expect(one("bridge_cafile /ca.pem\nbridge_certfile c\nbridge_keyfile k\nbridge_insecure true\nbridge_tls_version tlsv1.3\nbridge_alpn mqtt").tls).toEqual({
      cafile: "/ca.pem",
      capath: undefined,
      certfile: "c",
      keyfile: "k",
      insecure: true,
      alpn: "mqtt",
      version: "tlsv1.3",
      ciphers: undefined,
      ciphersTls13: undefined,
      pskIdentity: undefined,
      psk: undefined,
      useOsCerts: false,
      requireOcsp: false
    })
    expect(one("bridge_identity id\nbridge_psk 00ff").tls).toMatchObject({ pskIdentity: "id", psk: "00ff" })
    expect(one("bridge_tls_use_os_certs true").tls).toMatchObject({ useOsCerts: true, cafile: undefined })
    expect(one("bridge_tls_use_os_certs false").tls).toBeUndefined()
  })

  it.effect("bridge_require_ocsp true|false: false by default, the last line wins, read without a warning; no effect without TLS", () =>
    Effect.gen(function* () {
      const tls = "bridge_cafile /ca.pem\n"
      expect(one(tls).tls?.requireOcsp).toBe(false)
      expect(one(`${tls}bridge_require_ocsp true`).tls?.requireOcsp).toBe(true)
      expect(one(`${tls}bridge_require_ocsp true\nbridge_require_ocsp false`).tls?.requireOcsp).toBe(false)
      expect(one("bridge_require_ocsp true").tls).toBeUndefined()
      expect(fails("connection b\naddress h\ntopic # out\nbridge_require_ocsp yes\n")).toEqual(['b.conf:4 bridge_require_ocsp: invalid value "yes": expected true or false'])
      const config = yield* parseConfigText(`connection b\naddress h\ntopic # out\n${tls}bridge_require_ocsp true\n`, "m.conf")
      expect(config.warnings).toEqual([])
      expect((yield* Bridge.fromConfig(config, "box"))[0].tls?.requireOcsp).toBe(true)
    })
  )

  it("bridge_tcp_keepalive IDLE INTERVAL COUNT: three integers above 0 (conf.c), off by default, the last line wins", () => {
    expect(one("").tcpKeepalive).toBeUndefined()
    expect(one("bridge_tcp_keepalive 30 5 5").tcpKeepalive).toEqual({ idle: 30, interval: 5, count: 5 })
    expect(one("bridge_tcp_keepalive 30 5 5\nbridge_tcp_keepalive 60 10 3 # comment").tcpKeepalive).toEqual({ idle: 60, interval: 10, count: 3 })
    expect(fails("connection b\naddress h\ntopic # out\nbridge_tcp_keepalive 0 5 5\nbridge_tcp_keepalive 30 5\nbridge_tcp_keepalive 30 x 5\nbridge_tcp_keepalive 1 1 -1\n")).toEqual([
      "b.conf:4 bridge_tcp_keepalive: invalid TCP keepalive idle value 0: must be greater than 0",
      'b.conf:5 bridge_tcp_keepalive: expected 3 values (idle interval count), got 2: "30 5"',
      'b.conf:6 bridge_tcp_keepalive: invalid value "x": expected an integer',
      "b.conf:7 bridge_tcp_keepalive: invalid TCP keepalive count value -1: must be greater than 0"
    ])
  })

  it("several bridges; local client ids must be unique; names too", () => {
    const two = ok("connection a\naddress h\ntopic # out\nconnection b\naddress h\ntopic # in\n")
    expect(two.map((b) => [b.name, b.localClientId])).toEqual([
      ["a", "local.host.a"],
      ["b", "local.host.b"]
    ])
    expect(fails("connection a\naddress h\ntopic # out\nconnection a\naddress h\ntopic # out\n")).toEqual([
      'b.conf:4 connection: duplicate bridge name "a": already used at b.conf:1'
    ])
    expect(fails("connection a\naddress h\ntopic # out\nlocal_clientid x\nconnection b\naddress h\ntopic # out\nlocal_clientid x\n")).toEqual([
      'b.conf:5 connection: bridge local_clientid "x" is not unique (also used by the bridge at b.conf:1); set local_clientid for one of them'
    ])
  })

  it("every problem is reported at once as file:line option: message", () => {
    expect(
      fails(
        [
          "connection b",
          "address h:0",
          "address other",
          'topic "" out 0 only-local',
          "topic a/# sideways",
          "topic a/# out 3",
          "topic a/# out 1 bad/+/ r/",
          "topic a/# out 1 l/ r/ extra more",
          "remote_clientid one",
          "clientid two",
          "keepalive_interval 70000",
          "restart_timeout 30 10",
          "restart_timeout 1 2 3 4",
          "restart_timeout 5 10 -1",
          "start_type manual",
          "start_type sometimes",
          "bridge_protocol_version mqttv5",
          "notification_topic a/+",
          "bridge_psk xyz",
          "try_private yes",
          "threshold many",
          "bridge_tls_version tlsv1.0"
        ].join("\n")
      )
    ).toEqual([
      'b.conf:2 address: invalid port "0" in "h:0": must be between 1 and 65535',
      "b.conf:3 address: duplicate value: already set at b.conf:2",
      'b.conf:4 topic: invalid bridge remapping: an empty ("") pattern needs both a local and a remote prefix',
      'b.conf:5 topic: invalid bridge topic direction "sideways": expected out, in or both',
      'b.conf:6 topic: invalid bridge QoS level "3": expected 0, 1 or 2',
      'b.conf:7 topic: invalid bridge topic local prefix "bad/+/": it must not contain + or #',
      'b.conf:8 topic: expected at most 5 values, got 7: "a/# out 1 l/ r/ extra more"',
      "b.conf:10 clientid: duplicate value: already set at b.conf:9",
      "b.conf:11 keepalive_interval: invalid value 70000: bridge keepalive must be at most 65535",
      "b.conf:12 restart_timeout: invalid value: the backoff cap 10 is lower than the base 30",
      'b.conf:13 restart_timeout: expected 1 to 3 values, got 4: "1 2 3 4"',
      "b.conf:14 restart_timeout: invalid value: the stable connection period -1 is negative",
      'b.conf:15 start_type: start_type "manual" is not supported (as in Mosquitto)',
      'b.conf:16 start_type: invalid start_type "sometimes": expected automatic, lazy, once',
      'b.conf:17 bridge_protocol_version: invalid bridge_protocol_version "mqttv5": expected mqttv31, mqttv311, mqttv50',
      'b.conf:18 notification_topic: invalid notification_topic "a/+": not a valid topic name',
      "b.conf:19 bridge_psk: invalid bridge_psk: expected a hexadecimal key without 0x",
      'b.conf:20 try_private: invalid value "yes": expected true or false',
      'b.conf:21 threshold: invalid value "many": expected an integer',
      'b.conf:22 bridge_tls_version: invalid bridge_tls_version "tlsv1.0": expected tlsv1.3, tlsv1.2, tlsv1.1'
    ])
  })

  it("config__read: a bridge needs an address and a topic; certificates and PSK exclude each other", () => {
    expect(fails("connection lonely\n")).toEqual([
      'b.conf:1 connection: invalid bridge configuration: bridge "lonely" has no address',
      'b.conf:1 connection: invalid bridge configuration: bridge "lonely" has no topic'
    ])
    expect(fails("connection b\naddress h\ntopic # out\nbridge_cafile /ca\nbridge_identity id\nbridge_psk 00\n")).toEqual([
      "b.conf:6 bridge_psk: cannot use both certificate and psk encryption in a single bridge"
    ])
    expect(fails("connection b\naddress h\ntopic # out\nbridge_psk 00\n")).toEqual(["b.conf:4 bridge_psk: invalid bridge configuration: missing bridge_identity"])
    expect(fails("connection b\naddress h\ntopic # out\nbridge_certfile c\n")).toEqual([
      "b.conf:4 bridge_certfile: both bridge_certfile and bridge_keyfile must be provided if one of them is set"
    ])
  })

  it.effect("Bridge.fromConfig reads BrokerConfig.directives (bridge options after a listener line still belong to the bridge)", () =>
    Effect.gen(function* () {
      const config = yield* parseConfigText("listener 1883\nallow_anonymous true\nconnection up\naddress h\nlistener 1884\ntopic # both 1\n", "m.conf")
      const bridges = yield* Bridge.fromConfig(config, "box")
      expect(bridges.map((b) => [b.name, b.remoteClientId, b.topics.length])).toEqual([["up", "box.up", 1]])
      const bad = yield* Effect.flip(Bridge.fromConfig(yield* parseConfigText("connection up\naddress h\n", "m.conf")))
      expect(bad.message).toBe('m.conf:1 connection: invalid bridge configuration: bridge "up" has no topic')
      expect(bad.reason).toBe("InvalidConfig")
    })
  )
})
