/**
 * `bind_interface`: which address of a network interface a listener binds (transport/bind.ts
 * `interfaceAddress`, Mosquitto 2.0's net__bind_interface), against interface tables as
 * `os.networkInterfaces()` gives them, and the machine's own loopback.
 */
import { describe, expect, it } from "@effect/vitest"
import type * as os from "node:os"
import { interfaceAddress } from "../../src/transport/bind.js"

const v4 = (address: string): os.NetworkInterfaceInfo => ({ address, netmask: "255.0.0.0", family: "IPv4", mac: "00:00:00:00:00:00", internal: false, cidr: `${address}/8` })
const v6 = (address: string, scopeid = 0): os.NetworkInterfaceInfo => ({ address, netmask: "ffff:ffff:ffff:ffff::", family: "IPv6", mac: "00:00:00:00:00:00", internal: false, cidr: `${address}/64`, scopeid })

const table = {
  lo: [v4("127.0.0.1"), v6("::1")],
  eth0: [v6("fe80::1", 2), v4("10.0.0.5"), v6("2001:db8::5")],
  wg0: [v6("fd00::7")]
}

describe("bind_interface: the interface's address", () => {
  it("its IPv4 address, or its IPv6 one when the listener's own address is IPv6 or it has no IPv4", () => {
    expect(interfaceAddress("eth0", undefined, table)).toBe("10.0.0.5")
    expect(interfaceAddress("eth0", 4, table)).toBe("10.0.0.5")
    expect(interfaceAddress("lo", 6, table)).toBe("::1")
    expect(interfaceAddress("wg0", undefined, table)).toBe("fd00::7")
  })

  it("a link-local IPv6 address carries the interface as its scope", () => {
    expect(interfaceAddress("eth0", 6, table)).toBe("fe80::1%eth0")
  })

  it("names compare without case, as strcasecmp; a missing interface or family is an error", () => {
    expect(interfaceAddress("ETH0", undefined, table)).toBe("10.0.0.5")
    expect(interfaceAddress("eth9", undefined, table)).toEqual({ error: "no such network interface" })
    expect(interfaceAddress("wg0", 4, table)).toEqual({ error: "Interface wg0 does not support IPv4 configuration" })
  })

  it("this machine's loopback interface", () => {
    expect(interfaceAddress("lo", 4)).toBe("127.0.0.1")
  })
})
