/**
 * `enable_proxy_protocol` and `proxy_protocol_v2_require_tls` in mosquitto.conf (Mosquitto 2.1's
 * conf.c: both need a `listener` line before them; "enable_proxy_protocol must be 1 or 2";
 * `config__check_proxy`: no certfile, keyfile or use_subject_as_username on such a listener).
 */
import { describe, expect, it } from "@effect/vitest"
import { configParsers } from "./helpers.js"

const { ok, fails } = configParsers("p.conf")

describe("enable_proxy_protocol", () => {
  it("1 or 2 on a listener; the listener's TLS rules go with it; no warning", () => {
    const c = ok(
      "listener 1883\nenable_proxy_protocol 2\nproxy_protocol_v2_require_tls true\nrequire_certificate true\nuse_identity_as_username true\nlistener 1884\nenable_proxy_protocol 1\nlistener 1885\n"
    )
    expect(c.listeners.map((l) => l.proxy)).toStrictEqual([
      { version: 2, requireTls: true, requireCertificate: true, useIdentityAsUsername: true },
      { version: 1, requireTls: false, requireCertificate: false, useIdentityAsUsername: false },
      undefined
    ])
    expect(c.listeners[0].tls).toBeUndefined()
    expect(c.warnings).toStrictEqual([])
  })

  it("any other value is an error", () => {
    for (const value of ["0", "3", "-1", "two"]) {
      expect(fails(`listener 1883\nenable_proxy_protocol ${value}\n`)).toStrictEqual([
        `p.conf:2 enable_proxy_protocol: invalid value "${value}": enable_proxy_protocol must be 1 or 2`
      ])
    }
    expect(fails("listener 1883\nproxy_protocol_v2_require_tls yes\n")).toStrictEqual([
      'p.conf:2 proxy_protocol_v2_require_tls: invalid value "yes": expected true or false'
    ])
  })

  it("needs a listener line before it", () => {
    expect(fails("enable_proxy_protocol 2\nproxy_protocol_v2_require_tls true\nlistener 1883\n")).toStrictEqual([
      "p.conf:1 enable_proxy_protocol: a listener must be defined before this option",
      "p.conf:2 proxy_protocol_v2_require_tls: a listener must be defined before this option"
    ])
  })

  it("certfile, keyfile, psk_hint and use_subject_as_username cannot go with it: errors naming file, line and option", () => {
    expect(
      fails(
        "listener 8883\ncertfile /c.pem\nkeyfile /k.pem\nenable_proxy_protocol 2\nlistener 8884\nenable_proxy_protocol 1\npsk_hint h\nlistener 1883\nenable_proxy_protocol 2\nuse_subject_as_username true\n"
      )
    ).toStrictEqual([
      "p.conf:2 certfile: cannot be used with enable_proxy_protocol (p.conf:4): the proxy terminates TLS, the listener must not",
      "p.conf:3 keyfile: cannot be used with enable_proxy_protocol (p.conf:4): the proxy terminates TLS, the listener must not",
      "p.conf:7 psk_hint: cannot be used with enable_proxy_protocol (p.conf:6): the proxy terminates TLS, the listener must not",
      "p.conf:10 use_subject_as_username: cannot be used with enable_proxy_protocol (p.conf:9): the PROXY header carries the certificate's CN, not its subject"
    ])
    // use_subject_as_username false is no problem
    expect(ok("listener 1883\nenable_proxy_protocol 2\nuse_subject_as_username false\n").listeners[0].proxy?.version).toBe(2)
  })

  it("TLS rules that a header cannot satisfy are named in warnings", () => {
    const v1 = ok("listener 1883\nenable_proxy_protocol 1\nrequire_certificate true\nproxy_protocol_v2_require_tls true\n")
    expect(v1.warnings).toStrictEqual([
      "p.conf:3 require_certificate: has no effect with enable_proxy_protocol 1: a PROXY v1 header carries no TLS information",
      "p.conf:4 proxy_protocol_v2_require_tls: has no effect with enable_proxy_protocol 1: a PROXY v1 header carries no TLS information"
    ])
    const none = ok("listener 1883\nproxy_protocol_v2_require_tls true\n")
    expect(none.warnings).toStrictEqual(["p.conf:2 proxy_protocol_v2_require_tls: has no effect without enable_proxy_protocol 2"])
  })
})
