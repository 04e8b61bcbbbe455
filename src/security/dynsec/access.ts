/**
 * ACL checks as Mosquitto 2.0's dynamic security plugin makes them
 * (`plugins/dynamic-security/acl.c`, `sub_matches_sub.c`), compiled for the
 * hot path.
 *
 * Order of evaluation, first match decides:
 * - the client's roles, highest priority first (ties by name), each role's
 *   ACLs of the type highest priority first;
 * - then the client's groups, highest priority first, each group's roles
 *   the same way;
 * - an anonymous client (no username) is checked against the anonymous
 *   group's roles, if one is set;
 * - nothing matched: the default access of the type; but a topic starting
 *   with `$CONTROL` is never allowed by default, only by an ACL;
 * - a username that is not a dynsec client gets nothing (the plugin defers
 *   and Mosquitto denies).
 *
 * Matching per type:
 * - `publishClientSend` / `publishClientReceive`: the ACL topic is a filter
 *   matched against the topic (mosquitto_topic_matches_sub: `+`, `#`, and a
 *   filter not starting with `$` never matches a `$` topic [MQTT-4.7.2-1]);
 * - `subscribeLiteral` / `unsubscribeLiteral`: the filter is the ACL topic,
 *   byte for byte;
 * - `subscribePattern` / `unsubscribePattern`: `sub_acl_check`, the
 *   subscription's filter lies within the ACL's (`#` covers everything, a
 *   `+` in the ACL covers one level, `+` or `#` in the subscription only
 *   where the ACL has them); within one role the literal ACLs come first.
 *   Shared subscriptions are checked as sent, `$share/group/` included, as
 *   Mosquitto 2.0 does.
 *
 * Before any of this the broker's own `$` rules apply (acl__check_dollar):
 * nobody publishes to `$SYS` (but bridge state) and `$share` topics are
 * neither published nor received.
 *
 * A {@link DynsecClientAcl} is made once per connection and compiles its
 * username's rules on first use; any change to the model bumps
 * `DynsecState.version`, and the next check recompiles, so changes reach
 * connected clients at once. Clients of one username share the compiled
 * rules. Long rule lists get a small per-client cache of topic decisions.
 */
import { codeUnitAt } from "../../runtime/codeUnit.js"
import type { AuthClient, ClientAcl } from "../Auth.js"
import { dollarAllows, matchLevels, READ, WRITE } from "../aclFile.js"
import { subTopicCheck } from "./json.js"
import type { Acl, Model, RoleRef } from "./model.js"

/** A publish ACL, compiled. */
interface TopicRule {
  readonly levels: ReadonlyArray<string>
  readonly dollar: boolean
  readonly allow: boolean
}

/** A subscribe / unsubscribe ACL. */
interface FilterRule {
  readonly literal: boolean
  readonly topic: string
  readonly allow: boolean
}

export interface CompiledRules {
  /** false: a username dynsec does not know; everything is denied */
  readonly known: boolean
  readonly send: ReadonlyArray<TopicRule>
  readonly receive: ReadonlyArray<TopicRule>
  readonly subscribe: ReadonlyArray<FilterRule>
  readonly unsubscribe: ReadonlyArray<FilterRule>
}

const UNKNOWN: CompiledRules = { known: false, send: [], receive: [], subscribe: [], unsubscribe: [] }

const topicRule = (a: Acl): TopicRule | undefined =>
  // mosquitto_topic_matches_sub refuses an empty or malformed filter: it never matches
  a.topic.length === 0 || !subTopicCheck(a.topic) ? undefined : { levels: a.topic.split("/"), dollar: a.topic.charCodeAt(0) === 36, allow: a.allow }

/** The rules a username (undefined: anonymous) is checked against, in evaluation order. */
export const compileRules = (m: Model, username: string | undefined): CompiledRules => {
  const lists: Array<ReadonlyArray<RoleRef>> = []
  if (username !== undefined) {
    const client = m.clients.get(username)
    if (client === undefined) return UNKNOWN
    lists.push(client.roles)
    for (const g of client.groups) {
      const group = m.groups.get(g.groupname)
      if (group !== undefined) lists.push(group.roles)
    }
  } else if (m.anonymousGroup !== undefined) {
    const group = m.groups.get(m.anonymousGroup)
    if (group !== undefined) lists.push(group.roles)
  }
  const send: Array<TopicRule> = []
  const receive: Array<TopicRule> = []
  const subscribe: Array<FilterRule> = []
  const unsubscribe: Array<FilterRule> = []
  for (const list of lists) {
    for (const ref of list) {
      const role = m.roles.get(ref.rolename)
      if (role === undefined) continue
      for (const a of role.acls.publishClientSend) {
        const r = topicRule(a)
        if (r !== undefined) send.push(r)
      }
      for (const a of role.acls.publishClientReceive) {
        const r = topicRule(a)
        if (r !== undefined) receive.push(r)
      }
      for (const a of role.acls.subscribeLiteral) subscribe.push({ literal: true, topic: a.topic, allow: a.allow })
      for (const a of role.acls.subscribePattern) subscribe.push({ literal: false, topic: a.topic, allow: a.allow })
      for (const a of role.acls.unsubscribeLiteral) unsubscribe.push({ literal: true, topic: a.topic, allow: a.allow })
      for (const a of role.acls.unsubscribePattern) unsubscribe.push({ literal: false, topic: a.topic, allow: a.allow })
    }
  }
  return { known: true, send, receive, subscribe, unsubscribe }
}

// ---------------------------------------------------------------------------
// matching

/** 1 allow, -1 deny, 0 no ACL matched. */
const matchTopic = (rules: ReadonlyArray<TopicRule>, topic: string): number => {
  const dollar = codeUnitAt(topic, 0) === 36
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]
    // [MQTT-4.7.2-1] a filter and a topic must agree on starting with $
    if (r.dollar !== dollar) continue
    if (matchLevels(r.levels, topic)) return r.allow ? 1 : -1
  }
  return 0
}

/** `hash_check`: strips a trailing `#` level; returns the rest or undefined when there is none. */
const stripHash = (s: string): string | undefined =>
  s === "#" ? "" : s.length > 1 && s.endsWith("/#") ? s.slice(0, -2) : undefined

/**
 * `sub_acl_check(acl, sub)`: every topic the subscription filter `sub` can
 * match, the ACL filter `acl` matches too (by levels; `$` is not special).
 * One fix: Mosquitto 2.0 strips `/#` and `#` alike, so an ACL `/#` grants
 * a subscription to `#`; here only `#` and `+/#` cover `#`.
 */
export const subAclCheck = (acl: string, sub: string): boolean => {
  if (acl === "#") return true
  if (sub === "#") return acl === "+/#"
  const aclRest = stripHash(acl)
  const subRest = stripHash(sub)
  const aclHash = aclRest !== undefined
  if (subRest !== undefined && !aclHash) return false
  const a = (aclRest ?? acl).split("/")
  const s = (subRest ?? sub).split("/")
  if (a.length > s.length) return false
  if (s.length > a.length && !aclHash) return false
  for (let i = 0; i < s.length; i++) {
    if (i < a.length) {
      if (a[i] !== "+" && a[i] !== s[i]) return false
    }
    // i >= a.length: the ACL ends in # (checked above)
  }
  return true
}

const matchFilter = (rules: ReadonlyArray<FilterRule>, filter: string): number => {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]
    if (r.literal ? r.topic === filter : subAclCheck(r.topic, filter)) return r.allow ? 1 : -1
  }
  return 0
}

/** Nothing matched: the default, but `$CONTROL` only ever by an explicit ACL. */
const fallback = (allow: boolean, topic: string): boolean => allow && !topic.startsWith("$CONTROL")

export const canPublishWith = (m: Model, rules: CompiledRules, topic: string): boolean => {
  if (!rules.known || !dollarAllows(topic, WRITE)) return false
  const r = matchTopic(rules.send, topic)
  return r !== 0 ? r > 0 : fallback(m.defaultAccess.publishClientSend, topic)
}

export const canReceiveWith = (m: Model, rules: CompiledRules, topic: string): boolean => {
  if (!rules.known || !dollarAllows(topic, READ)) return false
  const r = matchTopic(rules.receive, topic)
  return r !== 0 ? r > 0 : fallback(m.defaultAccess.publishClientReceive, topic)
}

export const canSubscribeWith = (m: Model, rules: CompiledRules, filter: string): boolean => {
  if (!rules.known) return false
  const r = matchFilter(rules.subscribe, filter)
  return r !== 0 ? r > 0 : fallback(m.defaultAccess.subscribe, filter)
}

export const canUnsubscribeWith = (m: Model, rules: CompiledRules, filter: string): boolean => {
  if (!rules.known) return false
  const r = matchFilter(rules.unsubscribe, filter)
  return r !== 0 ? r > 0 : fallback(m.defaultAccess.unsubscribe, filter)
}

// ---------------------------------------------------------------------------
// live state and the per-connection view

/** The model every client view reads; `touch()` after each change. */
export class DynsecState {
  version = 0
  private readonly compiled = new Map<string, CompiledRules>()

  constructor(public model: Model) {}

  /** The model changed: every view recompiles on its next check. */
  touch(): void {
    this.version++
    this.compiled.clear()
  }

  /** Replaces the model (a reload). */
  replace(model: Model): void {
    this.model = model
    this.touch()
  }

  rulesFor(username: string | undefined): CompiledRules {
    // "\0" cannot be in an MQTT username [MQTT-1.5.4-2]: the anonymous key
    const key = username ?? "\0"
    let rules = this.compiled.get(key)
    if (rules === undefined) {
      rules = compileRules(this.model, username)
      // a username dynsec does not know is not cached: any string may come along
      if (rules.known) this.compiled.set(key, rules)
    }
    return rules
  }
}

/** Rule lists longer than this get a per-client cache of topic decisions. */
const CACHE_FROM_RULES = 8
const CACHE_SIZE = 256
// cache entry bits: receive decided / allowed, send decided / allowed
const R_KNOWN = 1
const R_OK = 2
const S_KNOWN = 4
const S_OK = 8

/** The checks of one connected client, always against the current model. */
export class DynsecClientAcl implements ClientAcl {
  private version = -1
  private rules: CompiledRules = UNKNOWN
  private cache: Map<string, number> | undefined = undefined

  constructor(
    private readonly state: DynsecState,
    readonly client: AuthClient
  ) {}

  get username(): string | undefined {
    return this.client.username
  }

  private current(): CompiledRules {
    if (this.version !== this.state.version) {
      this.version = this.state.version
      this.rules = this.state.rulesFor(this.client.username)
      this.cache = this.rules.send.length + this.rules.receive.length > CACHE_FROM_RULES ? new Map() : undefined
    }
    return this.rules
  }

  private remember(cache: Map<string, number>, topic: string, bits: number, add: number): void {
    if (bits === 0 && cache.size >= CACHE_SIZE) cache.clear()
    cache.set(topic, bits | add)
  }

  canPublish(topic: string): boolean {
    const rules = this.current()
    const cache = this.cache
    if (cache === undefined) return canPublishWith(this.state.model, rules, topic)
    const bits = cache.get(topic) ?? 0
    if ((bits & S_KNOWN) !== 0) return (bits & S_OK) !== 0
    const result = canPublishWith(this.state.model, rules, topic)
    this.remember(cache, topic, bits, S_KNOWN | (result ? S_OK : 0))
    return result
  }

  canReceive(topic: string): boolean {
    const rules = this.current()
    const cache = this.cache
    if (cache === undefined) return canReceiveWith(this.state.model, rules, topic)
    const bits = cache.get(topic) ?? 0
    if ((bits & R_KNOWN) !== 0) return (bits & R_OK) !== 0
    const result = canReceiveWith(this.state.model, rules, topic)
    this.remember(cache, topic, bits, R_KNOWN | (result ? R_OK : 0))
    return result
  }

  canSubscribe(filter: string): boolean {
    return canSubscribeWith(this.state.model, this.current(), filter)
  }

  /** The `unsubscribeLiteral` / `unsubscribePattern` check (for a broker core that asks). */
  canUnsubscribe(filter: string): boolean {
    return canUnsubscribeWith(this.state.model, this.current(), filter)
  }
}
