/**
 * The `$CONTROL/dynamic-security/v1` API: a request `{"commands":[...]}`
 * in, `{"responses":[...]}` out, with Mosquitto 2.0's command names (matched
 * whatever their case), request fields, response shapes and error texts
 * (`plugin.c`, `clients.c`, `groups.c`, `roles.c`; checked against the real
 * Mosquitto 2.0.11 in the tests):
 *
 * - a response is `{"command", "error"?, "data"?, "correlationData"?}`;
 *   commands run in order, each on its own (one failing does not undo the
 *   others); a correlationData that is not a string stops the request; the
 *   envelope is the one every control API shares (control.ts's
 *   `runControlRequest`), in 2.0's way: an element that is not an object or
 *   has no command name is answered and the next one still runs;
 * - Mosquitto's fixes after 2.0.11 are taken where 2.0.11 misbehaves:
 *   deleting the anonymous group is refused ("Deleting the anonymous group
 *   is forbidden", 2.0.15) instead of crashing the broker, and a failed
 *   createClient leaves no half-made client behind.
 *
 * No I/O: {@link handleRequest} changes the model it is given and returns
 * the response, whether to save, and which usernames to disconnect. Midge
 * disconnects the clients of a username when its credentials stop being
 * valid (deleteClient, disableClient, setClientId, setClientPassword, a
 * modifyClient changing the client id or password); role, group and ACL
 * changes reach connected clients at once through their live ACL checks
 * (access.ts), so unlike Mosquitto they do not disconnect anyone.
 */
import { isUtf8 } from "node:buffer"
import { commandTable, runControlRequest } from "../control.js"
import { getBool, getInt, getItem, getString, isArray, isObject, type Json, type JsonObject, subTopicCheck, validUtf8 } from "./json.js"
import {
  aclTypeOf,
  addAcl,
  addRoleRef,
  type Client,
  clientJson,
  emptyAcls,
  type Group,
  groupJson,
  joinGroup,
  leaveGroup,
  loadAcls,
  type Model,
  type PasswordRecord,
  removeRoleRef,
  type RoleRef,
  roleJson,
  sortedNames
} from "./model.js"

export const REQUEST_TOPIC = "$CONTROL/dynamic-security/v1"
export const RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"

export interface CommandContext {
  /** A new record for a password (random salt); Mosquitto 2.0: 12-byte salt, 101 iterations. */
  readonly hashPassword: (password: string) => PasswordRecord
  /** Mosquitto's `dynsec: command | ...` information lines */
  readonly log?: ((line: string) => void) | undefined
}

export interface RequestOutcome {
  /** the payload to publish on {@link RESPONSE_TOPIC} */
  readonly response: string
  readonly responses: ReadonlyArray<JsonObject>
  /** the model changed: save it */
  readonly changed: boolean
  /** usernames whose connected clients are to be disconnected */
  readonly kick: ReadonlyArray<string>
}

interface Run {
  readonly m: Model
  readonly ctx: CommandContext
  /** the payload was not valid UTF-8 (U+FFFD stands for the bad bytes) */
  readonly replaced: boolean
  readonly responses: Array<JsonObject>
  changed: boolean
  readonly kick: Set<string>
}

interface Call {
  readonly run: Run
  readonly name: string
  readonly cmd: JsonObject
  readonly correlationData: string | undefined
}

const reply = (c: Call, error?: string): void => {
  const o: Record<string, Json> = { command: c.name }
  if (error !== undefined) o.error = error
  if (c.correlationData !== undefined) o.correlationData = c.correlationData
  c.run.responses.push(o)
}

const replyData = (c: Call, data: JsonObject): void => {
  const o: Record<string, Json> = { command: c.name, data }
  if (c.correlationData !== undefined) o.correlationData = c.correlationData
  c.run.responses.push(o)
}

const done = (c: Call, details: string): void => {
  c.run.changed = true
  reply(c)
  c.run.ctx.log?.(`dynsec: ${c.name}${details.length > 0 ? ` | ${details}` : ""}`)
}

const LABEL = { username: "Username", groupname: "Group name", rolename: "Role name" } as const

/** A required name field: "Invalid/missing <key>", then "<Label> not valid UTF-8". */
const nameField = (c: Call, key: keyof typeof LABEL, checkUtf8 = true): string | undefined => {
  const f = getString(c.cmd, key, false)
  if (!f.ok || f.value === undefined) {
    reply(c, `Invalid/missing ${key}`)
    return undefined
  }
  if (checkUtf8 && !validUtf8(f.value, c.run.replaced)) {
    reply(c, `${LABEL[key]} not valid UTF-8`)
    return undefined
  }
  return f.value
}

/** An optional text field; undefined means "reply sent" (wrong type), `{ value }` otherwise. */
const textField = (c: Call, key: "textname" | "textdescription"): { value: string | undefined } | undefined => {
  const f = getString(c.cmd, key, true)
  if (!f.ok) {
    reply(c, `Invalid/missing ${key}`)
    return undefined
  }
  return { value: f.value }
}

type RoleList =
  | { readonly _tag: "Absent" }
  | { readonly _tag: "Ok"; readonly refs: Array<RoleRef> }
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "Invalid" }

/** dynsec_rolelist__load_from_json: the command's `roles`, every role must exist. */
const roleList = (m: Model, cmd: JsonObject): RoleList => {
  const items = getItem(cmd, "roles")
  if (items === undefined) return { _tag: "Absent" }
  if (!isArray(items)) return { _tag: "Invalid" }
  const refs: Array<RoleRef> = []
  for (const item of items) {
    const name = getItem(item, "rolename")
    if (!isObject(item) || typeof name !== "string") return { _tag: "Invalid" }
    if (!m.roles.has(name)) return { _tag: "NotFound" }
    addRoleRef(refs, name, getInt(item, "priority", -1))
  }
  return { _tag: "Ok", refs }
}

const list = <A>(c: Call, all: ReadonlyMap<string, A>, key: string, verbose: (a: A) => JsonObject): void => {
  const isVerbose = getBool(c.cmd, "verbose", false)
  let count = getInt(c.cmd, "count", -1)
  const offset = getInt(c.cmd, "offset", 0)
  const names = sortedNames(all)
  const items: Array<Json> = []
  for (let i = 0; i < names.length; i++) {
    if (i < offset) continue
    items.push(isVerbose ? verbose(all.get(names[i])!) : names[i])
    // as Mosquitto: a count of 0 still lists one
    if (count >= 0 && --count <= 0) break
  }
  replyData(c, { totalCount: names.length, [key]: items })
}

// ---------------------------------------------------------------------------
// default access

const setDefaultACLAccess = (c: Call): void => {
  const acls = getItem(c.cmd, "acls")
  if (!isArray(acls)) return reply(c, "Missing/invalid actions array")
  const access = c.run.m.defaultAccess
  const details: Array<string> = []
  for (const a of acls) {
    const type = getItem(a, "acltype")
    const allow = getItem(a, "allow")
    if (typeof type !== "string" || typeof allow !== "boolean") continue
    switch (type.toLowerCase()) {
      case "publishclientsend":
        access.publishClientSend = allow
        break
      case "publishclientreceive":
        access.publishClientReceive = allow
        break
      case "subscribe":
        access.subscribe = allow
        break
      case "unsubscribe":
        access.unsubscribe = allow
        break
    }
    details.push(`acltype=${type} | allow=${allow}`)
  }
  done(c, details.join(" | "))
}

const getDefaultACLAccess = (c: Call): void => {
  const a = c.run.m.defaultAccess
  replyData(c, {
    acls: [
      { acltype: "publishClientSend", allow: a.publishClientSend },
      { acltype: "publishClientReceive", allow: a.publishClientReceive },
      { acltype: "subscribe", allow: a.subscribe },
      { acltype: "unsubscribe", allow: a.unsubscribe }
    ]
  })
}

// ---------------------------------------------------------------------------
// clients

const findClient = (c: Call, username: string): Client | undefined => {
  const client = c.run.m.clients.get(username)
  if (client === undefined) reply(c, "Client not found")
  return client
}

const leaveAllGroups = (m: Model, client: Client): void => {
  for (const g of [...client.groups]) {
    const group = m.groups.get(g.groupname)
    if (group !== undefined) leaveGroup(client, group)
  }
  client.groups.length = 0
}

const createClient = (c: Call): void => {
  const m = c.run.m
  const username = nameField(c, "username")
  if (username === undefined) return
  const password = getString(c.cmd, "password", true)
  if (!password.ok) return reply(c, "Invalid/missing password")
  const clientid = getString(c.cmd, "clientid", true)
  if (!clientid.ok) return reply(c, "Invalid/missing client id")
  if (clientid.value !== undefined && !validUtf8(clientid.value, c.run.replaced)) return reply(c, "Client ID not valid UTF-8")
  const textname = textField(c, "textname")
  if (textname === undefined) return
  const textdescription = textField(c, "textdescription")
  if (textdescription === undefined) return
  if (m.clients.has(username)) return reply(c, "Client already exists")
  const roles = roleList(m, c.cmd)
  if (roles._tag === "NotFound") return reply(c, "Role not found")
  if (roles._tag === "Invalid") return reply(c, "'roles' not an array or missing/invalid rolename")
  const client: Client = {
    username,
    clientid: clientid.value !== undefined && clientid.value.length > 0 ? clientid.value : undefined,
    textname: textname.value,
    textdescription: textdescription.value,
    disabled: false,
    password: password.value !== undefined ? c.run.ctx.hashPassword(password.value) : undefined,
    roles: roles._tag === "Ok" ? roles.refs : [],
    groups: []
  }
  m.clients.set(username, client)
  const groups = getItem(c.cmd, "groups")
  if (isArray(groups)) {
    for (const g of groups) {
      const groupname = getItem(g, "groupname")
      if (!isObject(g) || typeof groupname !== "string") continue
      const group = m.groups.get(groupname)
      const error = group === undefined ? "Group not found" : joinGroup(client, group, getInt(g, "priority", -1)) ? undefined : "Internal error"
      if (error !== undefined) {
        leaveAllGroups(m, client)
        m.clients.delete(username)
        return reply(c, error)
      }
    }
  }
  done(c, `username=${username} | password=${password.value !== undefined ? "*****" : "no password"}`)
}

const deleteClient = (c: Call): void => {
  const m = c.run.m
  const username = nameField(c, "username", false)
  if (username === undefined) return
  const client = findClient(c, username)
  if (client === undefined) return
  leaveAllGroups(m, client)
  m.clients.delete(username)
  c.run.kick.add(username)
  done(c, `username=${username}`)
}

const enableDisableClient = (disabled: boolean) => (c: Call): void => {
  const username = nameField(c, "username")
  if (username === undefined) return
  const client = findClient(c, username)
  if (client === undefined) return
  client.disabled = disabled
  if (disabled) c.run.kick.add(username)
  done(c, `username=${username}`)
}

const setClientId = (c: Call): void => {
  const username = nameField(c, "username")
  if (username === undefined) return
  const clientid = getString(c.cmd, "clientid", true)
  if (!clientid.ok) return reply(c, "Invalid/missing client ID")
  if (clientid.value !== undefined && !validUtf8(clientid.value, c.run.replaced)) return reply(c, "Client ID not valid UTF-8")
  const client = findClient(c, username)
  if (client === undefined) return
  client.clientid = clientid.value !== undefined && clientid.value.length > 0 ? clientid.value : undefined
  c.run.kick.add(username)
  done(c, `username=${username} | clientid=${client.clientid ?? "(null)"}`)
}

const setClientPassword = (c: Call): void => {
  const username = nameField(c, "username")
  if (username === undefined) return
  const password = getString(c.cmd, "password", false)
  if (!password.ok || password.value === undefined) return reply(c, "Invalid/missing password")
  if (password.value.length === 0) return reply(c, "Empty password is not allowed")
  const client = findClient(c, username)
  if (client === undefined) return
  client.password = c.run.ctx.hashPassword(password.value)
  c.run.kick.add(username)
  done(c, `username=${username} | password=******`)
}

const modifyClient = (c: Call): void => {
  const m = c.run.m
  const username = nameField(c, "username")
  if (username === undefined) return
  const client = findClient(c, username)
  if (client === undefined) return
  // as in Mosquitto, what is changed before a bad `roles` stays changed (and is saved)
  c.run.changed = true
  const clientid = getString(c.cmd, "clientid", false)
  if (clientid.ok && clientid.value !== undefined) {
    client.clientid = clientid.value.length > 0 ? clientid.value : undefined
    c.run.kick.add(username)
  }
  const password = getString(c.cmd, "password", false)
  // an empty password is ignored
  if (password.ok && password.value !== undefined && password.value.length > 0) {
    client.password = c.run.ctx.hashPassword(password.value)
    c.run.kick.add(username)
  }
  const textname = getString(c.cmd, "textname", false)
  if (textname.ok && textname.value !== undefined) client.textname = textname.value
  const textdescription = getString(c.cmd, "textdescription", false)
  if (textdescription.ok && textdescription.value !== undefined) client.textdescription = textdescription.value
  const roles = roleList(m, c.cmd)
  if (roles._tag === "NotFound") return reply(c, "Role not found")
  if (roles._tag === "Invalid") return reply(c, "'roles' not an array or missing/invalid rolename")
  if (roles._tag === "Ok") client.roles = roles.refs
  const groups = getItem(c.cmd, "groups")
  if (isArray(groups)) {
    leaveAllGroups(m, client)
    for (const g of groups) {
      const groupname = getItem(g, "groupname")
      if (!isObject(g) || typeof groupname !== "string") continue
      const group = m.groups.get(groupname)
      if (group !== undefined) joinGroup(client, group, getInt(g, "priority", -1))
    }
  }
  done(c, `username=${username}`)
}

const getClient = (c: Call): void => {
  const username = nameField(c, "username")
  if (username === undefined) return
  const client = findClient(c, username)
  if (client === undefined) return
  replyData(c, { client: clientJson(client) })
}

const listClients = (c: Call): void => list(c, c.run.m.clients, "clients", clientJson)

const clientRole = (add: boolean) => (c: Call): void => {
  const m = c.run.m
  const username = nameField(c, "username")
  if (username === undefined) return
  const rolename = nameField(c, "rolename")
  if (rolename === undefined) return
  const priority = getInt(c.cmd, "priority", -1)
  const client = findClient(c, username)
  if (client === undefined) return
  if (!m.roles.has(rolename)) return reply(c, "Role not found")
  if (add) {
    if (!addRoleRef(client.roles, rolename, priority)) return reply(c, "Internal error")
    done(c, `username=${username} | rolename=${rolename} | priority=${priority}`)
  } else {
    removeRoleRef(client.roles, rolename)
    done(c, `username=${username} | rolename=${rolename}`)
  }
}

// ---------------------------------------------------------------------------
// groups

const findGroup = (c: Call, groupname: string): Group | undefined => {
  const group = c.run.m.groups.get(groupname)
  if (group === undefined) reply(c, "Group not found")
  return group
}

const createGroup = (c: Call): void => {
  const m = c.run.m
  const groupname = nameField(c, "groupname")
  if (groupname === undefined) return
  const textname = textField(c, "textname")
  if (textname === undefined) return
  const textdescription = textField(c, "textdescription")
  if (textdescription === undefined) return
  if (m.groups.has(groupname)) return reply(c, "Group already exists")
  const roles = roleList(m, c.cmd)
  if (roles._tag === "NotFound") return reply(c, "Role not found")
  if (roles._tag === "Invalid") return reply(c, "Internal error")
  m.groups.set(groupname, {
    groupname,
    textname: textname.value,
    textdescription: textdescription.value,
    roles: roles._tag === "Ok" ? roles.refs : [],
    clients: []
  })
  done(c, `groupname=${groupname}`)
}

const deleteGroup = (c: Call): void => {
  const m = c.run.m
  const groupname = nameField(c, "groupname")
  if (groupname === undefined) return
  const group = findGroup(c, groupname)
  if (group === undefined) return
  if (m.anonymousGroup === groupname) return reply(c, "Deleting the anonymous group is forbidden")
  for (const member of [...group.clients]) {
    const client = m.clients.get(member.username)
    if (client !== undefined) leaveGroup(client, group)
  }
  m.groups.delete(groupname)
  done(c, `groupname=${groupname}`)
}

const groupClient = (add: boolean) => (c: Call): void => {
  const username = nameField(c, "username")
  if (username === undefined) return
  const groupname = nameField(c, "groupname")
  if (groupname === undefined) return
  const priority = getInt(c.cmd, "priority", -1)
  const client = findClient(c, username)
  if (client === undefined) return
  const group = findGroup(c, groupname)
  if (group === undefined) return
  if (add) {
    if (!joinGroup(client, group, priority)) return reply(c, "Client is already in this group")
    done(c, `groupname=${groupname} | username=${username} | priority=${priority}`)
  } else {
    leaveGroup(client, group)
    done(c, `groupname=${groupname} | username=${username}`)
  }
}

const groupRole = (add: boolean) => (c: Call): void => {
  const m = c.run.m
  const groupname = nameField(c, "groupname")
  if (groupname === undefined) return
  const rolename = nameField(c, "rolename")
  if (rolename === undefined) return
  const priority = getInt(c.cmd, "priority", -1)
  const group = findGroup(c, groupname)
  if (group === undefined) return
  if (!m.roles.has(rolename)) return reply(c, "Role not found")
  if (add) {
    if (!addRoleRef(group.roles, rolename, priority)) return reply(c, "Group is already in this role")
    done(c, `groupname=${groupname} | rolename=${rolename} | priority=${priority}`)
  } else {
    removeRoleRef(group.roles, rolename)
    done(c, `groupname=${groupname} | rolename=${rolename}`)
  }
}

const getGroup = (c: Call): void => {
  const groupname = nameField(c, "groupname")
  if (groupname === undefined) return
  const group = findGroup(c, groupname)
  if (group === undefined) return
  replyData(c, { group: groupJson(group) })
}

const listGroups = (c: Call): void => list(c, c.run.m.groups, "groups", groupJson)

const modifyGroup = (c: Call): void => {
  const m = c.run.m
  const groupname = nameField(c, "groupname")
  if (groupname === undefined) return
  const group = findGroup(c, groupname)
  if (group === undefined) return
  c.run.changed = true
  const textname = getString(c.cmd, "textname", false)
  if (textname.ok && textname.value !== undefined) group.textname = textname.value
  const textdescription = getString(c.cmd, "textdescription", false)
  if (textdescription.ok && textdescription.value !== undefined) group.textdescription = textdescription.value
  const roles = roleList(m, c.cmd)
  if (roles._tag === "NotFound") return reply(c, "Role not found")
  if (roles._tag === "Invalid") return reply(c, "'roles' not an array or missing/invalid rolename")
  if (roles._tag === "Ok") group.roles = roles.refs
  const clients = getItem(c.cmd, "clients")
  if (isArray(clients)) {
    for (const member of [...group.clients]) {
      const client = m.clients.get(member.username)
      if (client !== undefined) leaveGroup(client, group)
    }
    group.clients.length = 0
    for (const item of clients) {
      const username = getItem(item, "username")
      if (!isObject(item) || typeof username !== "string") continue
      const client = m.clients.get(username)
      if (client !== undefined) joinGroup(client, group, getInt(item, "priority", -1))
    }
  }
  done(c, `groupname=${groupname}`)
}

const setAnonymousGroup = (c: Call): void => {
  const groupname = nameField(c, "groupname")
  if (groupname === undefined) return
  if (findGroup(c, groupname) === undefined) return
  c.run.m.anonymousGroup = groupname
  done(c, `groupname=${groupname}`)
}

const getAnonymousGroup = (c: Call): void => replyData(c, { group: { groupname: c.run.m.anonymousGroup ?? "" } })

// ---------------------------------------------------------------------------
// roles

const createRole = (c: Call): void => {
  const m = c.run.m
  const rolename = nameField(c, "rolename")
  if (rolename === undefined) return
  const textname = textField(c, "textname")
  if (textname === undefined) return
  const textdescription = textField(c, "textdescription")
  if (textdescription === undefined) return
  if (m.roles.has(rolename)) return reply(c, "Role already exists")
  const acls = getItem(c.cmd, "acls")
  m.roles.set(rolename, { rolename, textname: textname.value, textdescription: textdescription.value, acls: isArray(acls) ? loadAcls(acls) : emptyAcls() })
  done(c, `rolename=${rolename}`)
}

const deleteRole = (c: Call): void => {
  const m = c.run.m
  const rolename = nameField(c, "rolename")
  if (rolename === undefined) return
  if (!m.roles.has(rolename)) return reply(c, "Role not found")
  for (const client of m.clients.values()) removeRoleRef(client.roles, rolename)
  for (const group of m.groups.values()) removeRoleRef(group.roles, rolename)
  m.roles.delete(rolename)
  done(c, `rolename=${rolename}`)
}

const getRole = (c: Call): void => {
  const rolename = nameField(c, "rolename")
  if (rolename === undefined) return
  const role = c.run.m.roles.get(rolename)
  if (role === undefined) return reply(c, "Role not found")
  replyData(c, { role: roleJson(role) })
}

const listRoles = (c: Call): void => list(c, c.run.m.roles, "roles", roleJson)

const modifyRole = (c: Call): void => {
  const rolename = nameField(c, "rolename")
  if (rolename === undefined) return
  const role = c.run.m.roles.get(rolename)
  if (role === undefined) return reply(c, "Role does not exist")
  const textname = getString(c.cmd, "textname", false)
  if (textname.ok && textname.value !== undefined) role.textname = textname.value
  const textdescription = getString(c.cmd, "textdescription", false)
  if (textdescription.ok && textdescription.value !== undefined) role.textdescription = textdescription.value
  const acls = getItem(c.cmd, "acls")
  if (isArray(acls)) role.acls = loadAcls(acls)
  done(c, `rolename=${rolename}`)
}

/** The role, list and topic of addRoleACL / removeRoleACL, or undefined when a reply was sent. */
const roleAclTarget = (c: Call) => {
  const rolename = nameField(c, "rolename")
  if (rolename === undefined) return undefined
  const role = c.run.m.roles.get(rolename)
  if (role === undefined) return void reply(c, "Role not found")
  const typeText = getItem(c.cmd, "acltype")
  if (typeof typeText !== "string") return void reply(c, "Invalid/missing acltype")
  const type = aclTypeOf(typeText)
  if (type === undefined) return void reply(c, "Unknown acltype")
  const topic = getItem(c.cmd, "topic")
  if (typeof topic !== "string") return void reply(c, "Invalid/missing topic")
  if (!validUtf8(topic, c.run.replaced)) return void reply(c, "Topic not valid UTF-8")
  if (!subTopicCheck(topic)) return void reply(c, "Invalid ACL topic")
  return { rolename, role, type, topic }
}

const addRoleACL = (c: Call): void => {
  const t = roleAclTarget(c)
  if (t === undefined) return
  const acls = t.role.acls[t.type]
  if (acls.some((a) => a.topic === t.topic)) return reply(c, "ACL with this topic already exists")
  const priority = getInt(c.cmd, "priority", 0)
  const allow = getBool(c.cmd, "allow", false)
  addAcl(acls, { topic: t.topic, priority, allow })
  done(c, `rolename=${t.rolename} | acltype=${t.type} | topic=${t.topic} | priority=${priority} | allow=${allow}`)
}

const removeRoleACL = (c: Call): void => {
  const t = roleAclTarget(c)
  if (t === undefined) return
  const acls = t.role.acls[t.type]
  const i = acls.findIndex((a) => a.topic === t.topic)
  if (i < 0) return reply(c, "ACL not found")
  acls.splice(i, 1)
  done(c, `rolename=${t.rolename} | acltype=${t.type} | topic=${t.topic}`)
}

// ---------------------------------------------------------------------------
// dispatch

const HANDLERS: ReadonlyArray<readonly [string, (c: Call) => void]> = [
  ["setDefaultACLAccess", setDefaultACLAccess],
  ["getDefaultACLAccess", getDefaultACLAccess],
  ["createClient", createClient],
  ["deleteClient", deleteClient],
  ["getClient", getClient],
  ["listClients", listClients],
  ["modifyClient", modifyClient],
  ["setClientPassword", setClientPassword],
  ["setClientId", setClientId],
  ["addClientRole", clientRole(true)],
  ["removeClientRole", clientRole(false)],
  ["enableClient", enableDisableClient(false)],
  ["disableClient", enableDisableClient(true)],
  ["addGroupClient", groupClient(true)],
  ["createGroup", createGroup],
  ["deleteGroup", deleteGroup],
  ["getGroup", getGroup],
  ["listGroups", listGroups],
  ["modifyGroup", modifyGroup],
  ["removeGroupClient", groupClient(false)],
  ["addGroupRole", groupRole(true)],
  ["removeGroupRole", groupRole(false)],
  ["setAnonymousGroup", setAnonymousGroup],
  ["getAnonymousGroup", getAnonymousGroup],
  ["createRole", createRole],
  ["getRole", getRole],
  ["listRoles", listRoles],
  ["modifyRole", modifyRole],
  ["deleteRole", deleteRole],
  ["addRoleACL", addRoleACL],
  ["removeRoleACL", removeRoleACL]
]

/** Every command name, as Mosquitto spells it. */
export const COMMANDS: ReadonlyArray<string> = HANDLERS.map(([name]) => name)

const BY_NAME = commandTable(HANDLERS)

/** Runs one `$CONTROL/dynamic-security/v1` request against the model. */
export const handleRequest = (model: Model, payload: Uint8Array | string, ctx: CommandContext): RequestOutcome => {
  const run: Run = {
    m: model,
    ctx,
    replaced: typeof payload !== "string" && !isUtf8(payload),
    responses: [],
    changed: false,
    kick: new Set()
  }
  const text = typeof payload === "string" ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("utf8")
  // the envelope as Mosquitto 2.0's plugin.c: a command without a usable name is answered (with the last
  // correlationData read) and the next one still runs
  runControlRequest(text, BY_NAME, (call) => call.handler({ run, name: call.name, cmd: call.command, correlationData: call.correlationData }), run.responses, "continue")
  return { response: JSON.stringify({ responses: run.responses }), responses: run.responses, changed: run.changed, kick: [...run.kick] }
}
