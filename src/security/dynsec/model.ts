/**
 * The dynamic security model: clients, groups, roles and their ACLs, the
 * default access and the anonymous group, as Mosquitto 2.0's plugin keeps
 * them (`plugins/dynamic-security/dynamic_security.h`), and its JSON file
 * read and written as `clients.c`, `groups.c`, `roles.c` and `plugin.c` do:
 *
 * - every list is kept in Mosquitto's order: clients, groups and roles by
 *   name (`strcmp`); a client's or group's roles and a client's groups by
 *   priority (highest first), then name; a group's clients by username; a
 *   role's ACLs of one type by priority (highest first), ties in the order
 *   they were added;
 * - a role, group or client priority that is -1 (the default) is not
 *   written; an ACL's priority always is (default 0);
 * - passwords are PBKDF2-SHA512: base64 `password` (64 bytes), base64
 *   `salt` (12 bytes from Mosquitto 2.0), `iterations`;
 * - reading is as forgiving as Mosquitto: an entry without its name, a
 *   client with a broken password, a reference to a missing role are
 *   skipped (and reported as warnings); keys match whatever their case.
 *
 * The model is mutable and owned by one fiber (the command handler);
 * `version` in {@link DynsecState} tells the per-client ACL views to
 * recompile.
 */
import { getBool, getInt, getItem, getString, isArray, isObject, type Json, type JsonObject, strcmp } from "./json.js"

export const ACL_TYPES = [
  "publishClientSend",
  "publishClientReceive",
  "subscribeLiteral",
  "subscribePattern",
  "unsubscribeLiteral",
  "unsubscribePattern"
] as const
export type AclType = (typeof ACL_TYPES)[number]

/** An acltype as a command or file spells it (Mosquitto compares with strcasecmp). */
export const aclTypeOf = (text: string): AclType | undefined => {
  const lower = text.toLowerCase()
  for (const t of ACL_TYPES) if (t.toLowerCase() === lower) return t
  return undefined
}

export interface Acl {
  readonly topic: string
  readonly priority: number
  readonly allow: boolean
}

export interface Role {
  readonly rolename: string
  textname: string | undefined
  textdescription: string | undefined
  acls: Record<AclType, Array<Acl>>
}

export interface RoleRef {
  readonly rolename: string
  readonly priority: number
}

export interface GroupRef {
  readonly groupname: string
  readonly priority: number
}

export interface ClientRef {
  readonly username: string
  readonly priority: number
}

/** PBKDF2-HMAC-SHA512 of the password. */
export interface PasswordRecord {
  readonly hash: Uint8Array
  readonly salt: Uint8Array
  readonly iterations: number
}

export interface Client {
  readonly username: string
  clientid: string | undefined
  textname: string | undefined
  textdescription: string | undefined
  disabled: boolean
  /** undefined: no password, the client cannot log in */
  password: PasswordRecord | undefined
  roles: Array<RoleRef>
  groups: Array<GroupRef>
}

export interface Group {
  readonly groupname: string
  textname: string | undefined
  textdescription: string | undefined
  roles: Array<RoleRef>
  clients: Array<ClientRef>
}

export interface DefaultAccess {
  publishClientSend: boolean
  publishClientReceive: boolean
  subscribe: boolean
  unsubscribe: boolean
}

export interface Model {
  readonly clients: Map<string, Client>
  readonly groups: Map<string, Group>
  readonly roles: Map<string, Role>
  anonymousGroup: string | undefined
  readonly defaultAccess: DefaultAccess
}

/** An empty model; Mosquitto's defaults before a file sets them are all false. */
export const emptyModel = (): Model => ({
  clients: new Map(),
  groups: new Map(),
  roles: new Map(),
  anonymousGroup: undefined,
  defaultAccess: { publishClientSend: false, publishClientReceive: false, subscribe: false, unsubscribe: false }
})

export const emptyAcls = (): Record<AclType, Array<Acl>> => ({
  publishClientSend: [],
  publishClientReceive: [],
  subscribeLiteral: [],
  subscribePattern: [],
  unsubscribeLiteral: [],
  unsubscribePattern: []
})

/** The default access `mosquitto_ctrl dynsec init` writes. */
export const initDefaultAccess = (): DefaultAccess => ({ publishClientSend: false, publishClientReceive: true, subscribe: false, unsubscribe: true })

// ---------------------------------------------------------------------------
// ordered lists (uthash's HASH_ADD_INORDER: after the equal ones)

const insertOrdered = <A>(list: Array<A>, item: A, cmp: (a: A, b: A) => number): void => {
  let i = list.length
  while (i > 0 && cmp(list[i - 1], item) > 0) i--
  list.splice(i, 0, item)
}

const byPriorityThen = (name: (x: any) => string) => (a: { priority: number }, b: { priority: number }): number =>
  b.priority - a.priority || strcmp(name(a), name(b))

const roleOrder = byPriorityThen((r: RoleRef) => r.rolename)
const groupOrder = byPriorityThen((g: GroupRef) => g.groupname)
const aclOrder = (a: Acl, b: Acl): number => b.priority - a.priority
const clientOrder = (a: ClientRef, b: ClientRef): number => strcmp(a.username, b.username)

/** Adds a role to a client's or group's list; false when it is there already. */
export const addRoleRef = (list: Array<RoleRef>, rolename: string, priority: number): boolean => {
  if (list.some((r) => r.rolename === rolename)) return false
  insertOrdered(list, { rolename, priority }, roleOrder)
  return true
}

export const removeRoleRef = (list: Array<RoleRef>, rolename: string): boolean => {
  const i = list.findIndex((r) => r.rolename === rolename)
  if (i < 0) return false
  list.splice(i, 1)
  return true
}

export const addAcl = (list: Array<Acl>, acl: Acl): void => insertOrdered(list, acl, aclOrder)

/** Puts a client in a group (both sides); false when it is a member already. */
export const joinGroup = (client: Client, group: Group, priority: number): boolean => {
  if (group.clients.some((c) => c.username === client.username)) return false
  insertOrdered(group.clients, { username: client.username, priority }, clientOrder)
  if (!client.groups.some((g) => g.groupname === group.groupname)) insertOrdered(client.groups, { groupname: group.groupname, priority }, groupOrder)
  return true
}

export const leaveGroup = (client: Client, group: Group): void => {
  const i = group.clients.findIndex((c) => c.username === client.username)
  if (i >= 0) group.clients.splice(i, 1)
  const j = client.groups.findIndex((g) => g.groupname === group.groupname)
  if (j >= 0) client.groups.splice(j, 1)
}

export const sortedNames = <A>(map: ReadonlyMap<string, A>): Array<string> => [...map.keys()].sort(strcmp)

// ---------------------------------------------------------------------------
// JSON

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64")

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

const decodeBase64 = (text: string): Uint8Array | undefined => {
  const t = text.replace(/\s+/g, "")
  return BASE64.test(t) ? new Uint8Array(Buffer.from(t, "base64")) : undefined
}

/** Upper bound on stored PBKDF2 iterations, so a hostile file cannot stall logins (passwordHash.ts's limit). */
export const MAX_ITERATIONS = 10_000_000

/** `{ <key>: name, priority }`, the priority left out when it is -1 (the default). */
const refJson = (key: string, name: string, priority: number): JsonObject => (priority !== -1 ? { [key]: name, priority } : { [key]: name })

const roleRefsJson = (refs: ReadonlyArray<RoleRef>): Array<Json> => refs.map((r) => refJson("rolename", r.rolename, r.priority))

const groupRefsJson = (refs: ReadonlyArray<GroupRef>): Array<Json> => refs.map((g) => refJson("groupname", g.groupname, g.priority))

const withTexts = (o: Record<string, Json>, x: { textname: string | undefined; textdescription: string | undefined }): void => {
  if (x.textname !== undefined) o.textname = x.textname
  if (x.textdescription !== undefined) o.textdescription = x.textdescription
}

/** A client as getClient and a verbose listClients show it (`add_client_to_json`). */
export const clientJson = (c: Client): JsonObject => {
  const o: Record<string, Json> = { username: c.username }
  if (c.clientid !== undefined) o.clientid = c.clientid
  withTexts(o, c)
  if (c.disabled) o.disabled = true
  o.roles = roleRefsJson(c.roles)
  o.groups = groupRefsJson(c.groups)
  return o
}

/** A group as getGroup and a verbose listGroups show it (`add_group_to_json`). */
export const groupJson = (g: Group): JsonObject => {
  const o: Record<string, Json> = { groupname: g.groupname }
  withTexts(o, g)
  o.clients = g.clients.map((c) => ({ username: c.username }))
  o.roles = roleRefsJson(g.roles)
  return o
}

const aclsJson = (r: Role): Array<Json> => {
  const out: Array<Json> = []
  for (const type of ACL_TYPES) for (const a of r.acls[type]) out.push({ acltype: type, topic: a.topic, priority: a.priority, allow: a.allow })
  return out
}

/** A role as getRole, a verbose listRoles and the file show it (`add_role_to_json`). */
export const roleJson = (r: Role): JsonObject => {
  const o: Record<string, Json> = { rolename: r.rolename }
  withTexts(o, r)
  o.acls = aclsJson(r)
  return o
}

/** The file's JSON tree, in the order Mosquitto's `dynsec__config_save` builds it. */
export const modelToJson = (m: Model): JsonObject => {
  const clients = sortedNames(m.clients).map((name) => {
    const c = m.clients.get(name)!
    const o: Record<string, Json> = { username: c.username }
    if (c.clientid !== undefined) o.clientid = c.clientid
    withTexts(o, c)
    if (c.disabled) o.disabled = true
    o.roles = roleRefsJson(c.roles)
    if (c.password !== undefined) {
      o.password = b64(c.password.hash)
      o.salt = b64(c.password.salt)
      o.iterations = c.password.iterations
    }
    return o
  })
  const groups = sortedNames(m.groups).map((name) => {
    const g = m.groups.get(name)!
    const o: Record<string, Json> = { groupname: g.groupname }
    withTexts(o, g)
    o.roles = roleRefsJson(g.roles)
    o.clients = g.clients.map((c) => refJson("username", c.username, c.priority))
    return o
  })
  const tree: Record<string, Json> = {
    defaultACLAccess: { ...m.defaultAccess },
    clients,
    groups
  }
  if (m.anonymousGroup !== undefined) tree.anonymousGroup = m.anonymousGroup
  tree.roles = sortedNames(m.roles).map((name) => roleJson(m.roles.get(name)!))
  return tree
}

/** A part of the file that is not what Mosquitto expects; loading stops. */
export class ModelFormatError extends Error {
  readonly _tag = "ModelFormatError"
}

const optionalText = (o: Json, key: string): string | undefined => {
  const v = getItem(o, key)
  return typeof v === "string" ? v : undefined
}

/** Reads a role's `acls` array for one type (`dynsec_roles__acl_load`): priority default 0, allow default false. */
export const loadAcls = (items: ReadonlyArray<Json>): Record<AclType, Array<Acl>> => {
  const acls = emptyAcls()
  for (const type of ACL_TYPES) {
    for (const item of items) {
      const t = getItem(item, "acltype")
      if (typeof t !== "string" || t.toLowerCase() !== type.toLowerCase()) continue
      const topic = getItem(item, "topic")
      if (typeof topic !== "string") continue
      addAcl(acls[type], { topic, priority: getInt(item, "priority", 0), allow: getBool(item, "allow", false) })
    }
  }
  return acls
}

const roleRefsOf = (m: Model, owner: Json, where: string, warn: (message: string) => void): Array<RoleRef> => {
  const refs: Array<RoleRef> = []
  const items = getItem(owner, "roles")
  if (!isArray(items)) return refs
  for (const item of items) {
    if (!isObject(item)) continue
    const name = getItem(item, "rolename")
    if (typeof name !== "string") continue
    if (!m.roles.has(name)) {
      warn(`${where}: role '${name}' does not exist; ignored`)
      continue
    }
    addRoleRef(refs, name, getInt(item, "priority", -1))
  }
  return refs
}

/**
 * The model in a parsed dynamic security file (`dynsec__config_load`:
 * default access, roles, clients, groups, in that order). Throws
 * {@link ModelFormatError} where Mosquitto gives up (a top-level list that
 * is not an array); `warn` hears about every entry skipped.
 */
export const modelFromJson = (tree: Json, warn: (message: string) => void = () => {}): Model => {
  const m = emptyModel()
  if (!isObject(tree)) throw new ModelFormatError("the file is not a JSON object")
  const access = getItem(tree, "defaultACLAccess")
  if (isObject(access)) {
    m.defaultAccess.publishClientSend = getItem(access, "publishClientSend") === true
    m.defaultAccess.publishClientReceive = getItem(access, "publishClientReceive") === true
    m.defaultAccess.subscribe = getItem(access, "subscribe") === true
    m.defaultAccess.unsubscribe = getItem(access, "unsubscribe") === true
  }

  const roles = getItem(tree, "roles")
  if (roles !== undefined && !isArray(roles)) throw new ModelFormatError("'roles' is not an array")
  for (const [i, r] of (roles ?? []).entries()) {
    if (!isObject(r)) continue
    const rolename = getItem(r, "rolename")
    if (typeof rolename !== "string") {
      warn(`roles[${i}]: no rolename; skipped`)
      continue
    }
    const acls = getItem(r, "acls")
    m.roles.set(rolename, {
      rolename,
      textname: optionalText(r, "textname"),
      textdescription: optionalText(r, "textdescription"),
      acls: isArray(acls) ? loadAcls(acls) : emptyAcls()
    })
  }

  const clients = getItem(tree, "clients")
  if (clients !== undefined && !isArray(clients)) throw new ModelFormatError("'clients' is not an array")
  for (const [i, c] of (clients ?? []).entries()) {
    if (!isObject(c)) continue
    const username = getItem(c, "username")
    if (typeof username !== "string") {
      warn(`clients[${i}]: no username; skipped`)
      continue
    }
    let password: PasswordRecord | undefined
    const salt = getItem(c, "salt")
    const hash = getItem(c, "password")
    const iterations = getItem(c, "iterations")
    if (typeof salt === "string" && typeof hash === "string" && typeof iterations === "number") {
      const n = Math.trunc(iterations)
      const saltBytes = decodeBase64(salt)
      const hashBytes = decodeBase64(hash)
      if (!(n >= 1 && n <= MAX_ITERATIONS) || saltBytes === undefined || saltBytes.length === 0 || hashBytes === undefined || hashBytes.length !== 64) {
        warn(`client '${username}': invalid password, salt or iterations; skipped`)
        continue
      }
      password = { hash: hashBytes, salt: saltBytes, iterations: n }
    }
    const clientid = getItem(c, "clientid")
    m.clients.set(username, {
      username,
      clientid: typeof clientid === "string" ? clientid : undefined,
      textname: optionalText(c, "textname"),
      textdescription: optionalText(c, "textdescription"),
      disabled: getItem(c, "disabled") === true,
      password,
      roles: roleRefsOf(m, c, `client '${username}'`, warn),
      groups: []
    })
  }

  const groups = getItem(tree, "groups")
  if (groups !== undefined && !isArray(groups)) throw new ModelFormatError("'groups' is not an array")
  for (const [i, g] of (groups ?? []).entries()) {
    if (!isObject(g)) continue
    const groupname = getString(g, "groupname", false)
    if (!groupname.ok || groupname.value === undefined) {
      warn(`groups[${i}]: no groupname; skipped`)
      continue
    }
    const group: Group = {
      groupname: groupname.value,
      textname: optionalText(g, "textname"),
      textdescription: optionalText(g, "textdescription"),
      roles: roleRefsOf(m, g, `group '${groupname.value}'`, warn),
      clients: []
    }
    m.groups.set(group.groupname, group)
    const members = getItem(g, "clients")
    if (!isArray(members)) continue
    for (const member of members) {
      const username = getItem(member, "username")
      if (!isObject(member) || typeof username !== "string") continue
      const client = m.clients.get(username)
      if (client === undefined) {
        warn(`group '${group.groupname}': client '${username}' does not exist; ignored`)
        continue
      }
      joinGroup(client, group, getInt(member, "priority", -1))
    }
  }

  const anonymous = getItem(tree, "anonymousGroup")
  if (typeof anonymous === "string") {
    if (m.groups.has(anonymous)) m.anonymousGroup = anonymous
    else warn(`anonymousGroup '${anonymous}' does not exist; ignored`)
  }
  return m
}
