/**
 * `user`: whom a daemon started as root becomes once its listeners are open (mosquitto.c
 * `drop_privileges`). The default, `mosquitto`, falls back to `nobody` with a warning when no such
 * user exists (a machine without the mosquitto package); any other missing user is an error.
 */
export type PrivilegeTarget =
  | { readonly _tag: "Stay" }
  | { readonly _tag: "Drop"; readonly name: string; readonly uid: number; readonly gid: number; readonly warning: string | undefined }
  | { readonly _tag: "Fail"; readonly error: string; readonly warning: string | undefined }

/** From the configured user, the process's uid and the text of /etc/passwd. */
export const privilegeTarget = (user: string, uid: number | undefined, passwd: string): PrivilegeTarget => {
  if (uid !== 0 || user === "root") return { _tag: "Stay" }
  const find = (name: string) => passwd.split("\n").map((line) => line.split(":")).find((fields) => fields[0] === name && fields.length >= 4)
  let entry = find(user)
  let warning: string | undefined
  if (entry === undefined) {
    if (user !== "mosquitto") return { _tag: "Fail", error: `Error: Unable to drop privileges to '${user}' because this user does not exist.`, warning: undefined }
    warning = `Warning: Unable to drop privileges to '${user}' because this user does not exist. Trying 'nobody' instead.`
    entry = find("nobody")
    if (entry === undefined) return { _tag: "Fail", error: "Error: Unable to drop privileges to 'nobody'.", warning }
  }
  return { _tag: "Drop", name: entry[0], uid: Number(entry[2]), gid: Number(entry[3]), warning }
}
