/**
 * `user` when the daemon starts as root (mosquitto.c `drop_privileges`): whom it becomes, read from
 * /etc/passwd; the default `mosquitto` falls back to `nobody` where the mosquitto package is not
 * installed, so the daemon's default start works on a fresh machine.
 */
import { describe, expect, it } from "@effect/vitest"
import { privilegeTarget } from "../../src/runtime/privileges.js"

const passwd = ["root:x:0:0:root:/root:/bin/bash", "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin", "mosquitto:x:105:112::/var/lib/mosquitto:/usr/sbin/nologin", ""].join("\n")
const withoutMosquitto = passwd.split("\n").filter((l) => !l.startsWith("mosquitto:")).join("\n")

describe("privilegeTarget", () => {
  it("not root, or user root: nothing to drop", () => {
    expect(privilegeTarget("mosquitto", 1000, passwd)._tag).toBe("Stay")
    expect(privilegeTarget("root", 0, passwd)._tag).toBe("Stay")
    expect(privilegeTarget("mosquitto", undefined, passwd)._tag).toBe("Stay")
  })

  it("an existing user: its uid and gid", () => {
    expect(privilegeTarget("mosquitto", 0, passwd)).toEqual({ _tag: "Drop", name: "mosquitto", uid: 105, gid: 112, warning: undefined })
    expect(privilegeTarget("nobody", 0, passwd)).toEqual({ _tag: "Drop", name: "nobody", uid: 65534, gid: 65534, warning: undefined })
  })

  it("the default user missing: nobody, with Mosquitto's warning", () => {
    expect(privilegeTarget("mosquitto", 0, withoutMosquitto)).toEqual({
      _tag: "Drop",
      name: "nobody",
      uid: 65534,
      gid: 65534,
      warning: "Warning: Unable to drop privileges to 'mosquitto' because this user does not exist. Trying 'nobody' instead."
    })
    expect(privilegeTarget("mosquitto", 0, "root:x:0:0::/root:/bin/sh\n")).toMatchObject({ _tag: "Fail", error: "Error: Unable to drop privileges to 'nobody'." })
  })

  it("another missing user is an error", () => {
    expect(privilegeTarget("midge", 0, passwd)).toEqual({
      _tag: "Fail",
      error: "Error: Unable to drop privileges to 'midge' because this user does not exist.",
      warning: undefined
    })
  })
})
