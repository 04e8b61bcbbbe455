/**
 * The `dynsec` module of `mosquitto_ctrl` (Mosquitto 2.0.11's
 * `apps/mosquitto_ctrl/dynsec*.c`) without its I/O: a command line becomes
 * a `$CONTROL/dynamic-security/v1` request, a response becomes the text
 * mosquitto_ctrl prints, and `init` makes a new file with an admin client.
 * src/cli/ctrl.ts does the connecting, prompting and printing.
 */
import { getItem, isArray, isObject, type Json, type JsonObject } from "./json.js"
import { type AclType, ACL_TYPES, addRoleRef, emptyAcls, emptyModel, initDefaultAccess, type Model, type PasswordRecord } from "./model.js"

/** C's atoi: the leading integer, 0 when there is none. */
export const atoi = (s: string): number => {
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)/.exec(s)
  if (m === null) return 0
  const n = Number(m[1])
  return n > 2147483647 ? 2147483647 : n < -2147483648 ? -2147483648 : n
}

/** A password the user is to be asked for before the command is sent. */
export interface PasswordPrompt {
  /** createClient: an empty answer means no password; setClientPassword: one is required */
  readonly kind: "createClient" | "setClientPassword"
  readonly username: string
}

export type Built =
  | { readonly _tag: "Command"; readonly command: Record<string, Json>; readonly prompt?: PasswordPrompt }
  /** mosquitto_ctrl: "Error: Invalid function arguments provided.", exit 3 (a text may come first) */
  | { readonly _tag: "Invalid"; readonly text?: string }
  /** "Command '<name>' not recognised.", exit 13 */
  | { readonly _tag: "Unknown"; readonly name: string }

const invalid: Built = { _tag: "Invalid" }
const cmd = (command: Record<string, Json>, prompt?: PasswordPrompt): Built => (prompt === undefined ? { _tag: "Command", command } : { _tag: "Command", command, prompt })

const listCommand = (name: string, args: ReadonlyArray<string>): Built => {
  if (args.length > 2) return invalid
  const count = args.length > 0 ? atoi(args[0]) : -1
  const offset = args.length > 1 ? atoi(args[1]) : -1
  const c: Record<string, Json> = { command: name }
  if (count > 0) c.count = count
  if (offset > 0) c.offset = offset
  return cmd(c)
}

const one = (name: string, key: string, args: ReadonlyArray<string>): Built => (args.length === 1 ? cmd({ command: name, [key]: args[0] }) : invalid)

/** `<a> <b> [priority]` commands: the priority is sent unless it is -1. */
const pairWithPriority = (name: string, keys: readonly [string, string], args: ReadonlyArray<string>): Built => {
  if (args.length !== 2 && args.length !== 3) return invalid
  const c: Record<string, Json> = { command: name, [keys[0]]: args[0], [keys[1]]: args[1] }
  const priority = args.length === 3 ? atoi(args[2]) : -1
  if (priority !== -1) c.priority = priority
  return cmd(c)
}

const aclTypeArg = (s: string): AclType | undefined => ACL_TYPES.find((t) => t.toLowerCase() === s.toLowerCase())

/** Canonical spellings of the module's commands (matched whatever their case). */
const NAMES = [
  "setDefaultACLAccess", "getDefaultACLAccess", "createClient", "deleteClient", "getClient", "listClients", "setClientId",
  "setClientPassword", "addClientRole", "removeClientRole", "enableClient", "disableClient", "createGroup", "deleteGroup",
  "getGroup", "listGroups", "addGroupRole", "removeGroupRole", "addGroupClient", "removeGroupClient", "setAnonymousGroup",
  "getAnonymousGroup", "createRole", "deleteRole", "getRole", "listRoles", "addRoleACL", "removeRoleACL"
]

/** The request for `dynsec <command> <args...>` (not `help` / `init`). */
export const buildCommand = (argv: ReadonlyArray<string>): Built => {
  const given = argv[0] ?? ""
  const name = NAMES.find((n) => n.toLowerCase() === given.toLowerCase())
  if (name === undefined) return { _tag: "Unknown", name: given }
  const args = argv.slice(1)
  switch (name) {
    case "setDefaultACLAccess": {
      if (args.length !== 2) return invalid
      const [type, access] = args
      if (!["publishclientsend", "publishclientreceive", "subscribe", "unsubscribe"].includes(type.toLowerCase())) return invalid
      const a = access.toLowerCase()
      if (a !== "allow" && a !== "deny") return { _tag: "Invalid", text: 'Error: access must be "allow" or "deny".\n' }
      return cmd({ command: name, acls: [{ acltype: type, allow: a === "allow" }] })
    }
    case "getDefaultACLAccess":
    case "getAnonymousGroup":
      return cmd({ command: name })
    case "createClient": {
      if (args.length === 0) return invalid
      const c: Record<string, Json> = { command: name, username: args[0] }
      let password: string | undefined
      let clientid: string | undefined
      for (let i = 1; i < args.length; i++) {
        if (args[i] === "-c" || args[i] === "-i") {
          if (i + 1 === args.length) return { _tag: "Invalid", text: `Error: ${args[i]} argument given, but no clientid provided.\n` }
          clientid = args[++i]
        } else if (args[i] === "-p") {
          if (i + 1 === args.length) return { _tag: "Invalid", text: "Error: -p argument given, but no password provided.\n" }
          password = args[++i]
        }
      }
      if (clientid !== undefined) c.clientid = clientid
      if (password !== undefined) c.password = password
      return cmd(c, password === undefined ? { kind: "createClient", username: args[0] } : undefined)
    }
    case "deleteClient":
    case "getClient":
    case "enableClient":
    case "disableClient":
      return one(name, "username", args)
    case "listClients":
    case "listGroups":
    case "listRoles":
      return listCommand(name, args)
    case "setClientId":
      if (args.length === 1) return cmd({ command: name, username: args[0] })
      return args.length === 2 ? cmd({ command: name, username: args[0], clientid: args[1] }) : invalid
    case "setClientPassword":
      if (args.length === 2) return cmd({ command: name, username: args[0], password: args[1] })
      return args.length === 1 ? cmd({ command: name, username: args[0] }, { kind: "setClientPassword", username: args[0] }) : invalid
    case "addClientRole":
    case "removeClientRole":
      return pairWithPriority(name, ["username", "rolename"], args)
    case "createGroup":
    case "deleteGroup":
    case "getGroup":
    case "setAnonymousGroup":
      return one(name, "groupname", args)
    case "addGroupRole":
    case "removeGroupRole":
      return pairWithPriority(name, ["groupname", "rolename"], args)
    case "addGroupClient":
    case "removeGroupClient":
      return pairWithPriority(name, ["groupname", "username"], args)
    case "createRole":
    case "deleteRole":
    case "getRole":
      return one(name, "rolename", args)
    case "addRoleACL": {
      if (args.length !== 4 && args.length !== 5) return invalid
      const type = aclTypeArg(args[1])
      const action = args[3].toLowerCase()
      if (type === undefined || (action !== "allow" && action !== "deny")) return invalid
      const c: Record<string, Json> = { command: name, rolename: args[0], acltype: args[1], topic: args[2], allow: action === "allow" }
      const priority = args.length === 5 ? atoi(args[4]) : -1
      if (priority !== -1) c.priority = priority
      return cmd(c)
    }
    case "removeRoleACL": {
      if (args.length !== 3 || aclTypeArg(args[1]) === undefined) return invalid
      return cmd({ command: name, rolename: args[0], acltype: args[1], topic: args[2] })
    }
  }
  return { _tag: "Unknown", name: given }
}

// ---------------------------------------------------------------------------
// responses

export interface Printed {
  readonly stdout: string
  readonly stderr: string
}

const str = (v: Json | undefined): string | undefined => (typeof v === "string" ? v : undefined)

/** print_json_array of 2.0.11: `label` padded to `width`, then one element a line (nothing for an empty list). */
const printArray = (items: Json | undefined, width: number, label: string, key: string, withPriority: boolean): string => {
  if (!isArray(items)) return ""
  let out = ""
  let first = true
  for (const item of items) {
    const name = isObject(item) ? str(getItem(item, key)) : str(item)
    if (name === undefined) continue
    out += `${(first ? label : "").padEnd(width)} ${name}`
    if (withPriority && isObject(item)) {
      const p = getItem(item, "priority")
      out += ` (priority: ${typeof p === "number" ? p : -1})`
    }
    out += "\n"
    first = false
  }
  return out
}

const INVALID_RESPONSE: Printed = { stdout: "", stderr: "Error: Invalid response from server.\n" }

const printList = (data: Json | undefined, key: string, nameKey: string): Printed => {
  const items = getItem(data, key)
  if (!isArray(items)) return INVALID_RESPONSE
  let out = ""
  for (const item of items) {
    const name = isObject(item) ? str(getItem(item, nameKey)) : str(item)
    if (name !== undefined) out += `${name}\n`
  }
  return { stdout: out, stderr: "" }
}

const printClient = (data: Json | undefined): Printed => {
  const c = getItem(data, "client")
  const username = str(getItem(c, "username"))
  if (!isObject(c) || username === undefined) return INVALID_RESPONSE
  const w = "Username:".length
  let out = `${"Username:".padEnd(w)} ${username}\n`
  const clientid = str(getItem(c, "clientid"))
  out += clientid !== undefined ? `${"Clientid:".padEnd(w)} ${clientid}\n` : "Clientid:\n"
  const disabled = getItem(c, "disabled")
  if (typeof disabled === "boolean") out += `${"Disabled:".padEnd(w)} ${disabled}\n`
  out += printArray(getItem(c, "roles"), w, "Roles:", "rolename", true)
  out += printArray(getItem(c, "groups"), w, "Groups:", "groupname", true)
  return { stdout: out, stderr: "" }
}

const printGroup = (data: Json | undefined): Printed => {
  const g = getItem(data, "group")
  const groupname = str(getItem(g, "groupname"))
  if (!isObject(g) || groupname === undefined) return INVALID_RESPONSE
  const w = "Groupname:".length
  let out = `Groupname: ${groupname}\n`
  out += printArray(getItem(g, "roles"), w, "Roles:", "rolename", true)
  out += printArray(getItem(g, "clients"), w, "Clients:", "username", false)
  return { stdout: out, stderr: "" }
}

const printRole = (data: Json | undefined): Printed => {
  const r = getItem(data, "role")
  const rolename = str(getItem(r, "rolename"))
  if (!isObject(r) || rolename === undefined) return INVALID_RESPONSE
  let out = `Rolename: ${rolename}\n`
  const acls = getItem(r, "acls")
  let first = true
  if (isArray(acls)) {
    for (const acl of acls) {
      const type = str(getItem(acl, "acltype"))
      if (type === undefined) continue
      out += `${first ? "ACLs:    " : "         "} ${type.padEnd(20)}`
      first = false
      const allow = getItem(acl, "allow")
      if (typeof allow === "boolean") out += ` : ${allow ? "allow" : "deny "}`
      const topic = str(getItem(acl, "topic"))
      if (topic !== undefined) out += ` : ${topic}`
      const p = getItem(acl, "priority")
      out += ` (priority: ${typeof p === "number" ? Math.trunc(p) : -1})\n`
    }
  }
  return { stdout: out, stderr: "" }
}

const printDefaultAccess = (data: Json | undefined): Printed => {
  const acls = getItem(data, "acls")
  if (!isArray(acls)) return INVALID_RESPONSE
  let out = ""
  for (const acl of acls) {
    const type = str(getItem(acl, "acltype"))
    const allow = getItem(acl, "allow")
    if (type === undefined || typeof allow !== "boolean") return { stdout: out, stderr: INVALID_RESPONSE.stderr }
    out += `${type.padEnd(20)} : ${allow ? "allow" : "deny"}\n`
  }
  return { stdout: out, stderr: "" }
}

/** What mosquitto_ctrl prints for a response payload (only the first response counts, as in 2.0.11). */
export const printResponse = (payload: string): Printed => {
  let tree: Json
  try {
    tree = JSON.parse(payload) as Json
  } catch {
    return { stdout: "", stderr: "Error: Payload not JSON.\n" }
  }
  const responses = getItem(tree, "responses")
  const first = isArray(responses) ? responses[0] : undefined
  const command = str(getItem(first, "command"))
  if (command === undefined) return { stdout: "", stderr: "Error: Payload missing data.\n" }
  const error = str(getItem(first, "error"))
  if (error !== undefined) return { stdout: "", stderr: `${command}: Error: ${error}\n` }
  const data = getItem(first, "data")
  switch (command.toLowerCase()) {
    case "listclients":
      return printList(data, "clients", "username")
    case "listgroups":
      return printList(data, "groups", "groupname")
    case "listroles":
      return printList(data, "roles", "rolename")
    case "getclient":
      return printClient(data)
    case "getgroup":
      return printGroup(data)
    case "getrole":
      return printRole(data)
    case "getdefaultaclaccess":
      return printDefaultAccess(data)
    case "getanonymousgroup": {
      const name = str(getItem(getItem(data, "group"), "groupname"))
      return name === undefined ? INVALID_RESPONSE : { stdout: `${name}\n`, stderr: "" }
    }
    default:
      return { stdout: "", stderr: "" }
  }
}

// ---------------------------------------------------------------------------
// init

/** The admin role `mosquitto_ctrl dynsec init` creates: the dynsec API, $SYS and reading everything. */
const ADMIN_ACLS: ReadonlyArray<readonly [AclType, string]> = [
  ["publishClientSend", "$CONTROL/dynamic-security/#"],
  ["publishClientReceive", "$CONTROL/dynamic-security/#"],
  ["subscribePattern", "$CONTROL/dynamic-security/#"],
  ["publishClientReceive", "$SYS/#"],
  ["subscribePattern", "$SYS/#"],
  ["publishClientReceive", "#"],
  ["subscribePattern", "#"],
  ["unsubscribePattern", "#"]
]

/** The model of a new file: one admin client with the admin role, `init`'s default access. */
export const initModel = (username: string, password: PasswordRecord, rolename = "admin"): Model => {
  const m = emptyModel()
  Object.assign(m.defaultAccess, initDefaultAccess())
  const acls = emptyAcls()
  for (const [type, topic] of ADMIN_ACLS) acls[type].push({ topic, priority: 0, allow: true })
  m.roles.set(rolename, { rolename, textname: undefined, textdescription: undefined, acls })
  const roles: Array<{ rolename: string; priority: number }> = []
  addRoleRef(roles, rolename, -1)
  m.clients.set(username, { username, clientid: undefined, textname: "Dynsec admin user", textdescription: undefined, disabled: false, password, roles, groups: [] })
  return m
}

/** `-f <file> dynsec setClientPassword`: the file's JSON with the client's password replaced, other content kept. */
export const setPasswordInTree = (tree: Json, username: string, password: PasswordRecord): JsonObject | undefined => {
  const clients = getItem(tree, "clients")
  if (!isObject(tree) || !isArray(clients)) return undefined
  let found = false
  const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64")
  const updated = clients.map((c) => {
    if (found || !isObject(c) || getItem(c, "username") !== username) return c
    found = true
    const rest: Record<string, Json> = {}
    for (const [k, v] of Object.entries(c)) if (!["password", "salt", "iterations"].includes(k.toLowerCase())) rest[k] = v
    return { ...rest, password: b64(password.hash), salt: b64(password.salt), iterations: password.iterations }
  })
  if (!found) return undefined
  const out: Record<string, Json> = {}
  for (const [k, v] of Object.entries(tree)) out[k] = k.toLowerCase() === "clients" ? updated : v
  return out
}
