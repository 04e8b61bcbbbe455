/**
 * Mosquitto's `acl_file`, read and checked as Mosquitto 2.0 does it
 * (`src/security_default.c`: `aclfile__parse`, `add__acl`,
 * `add__acl_pattern`, `mosquitto_acl_check_default`, and `acl__check_dollar`
 * in `src/security.c`):
 *
 * - `# ...` in the first column is a comment; blank lines are skipped;
 *   trailing blanks are removed; fields are separated by spaces only (a tab
 *   is not a separator, so `topic\tfoo` is an invalid line, as in Mosquitto);
 * - `topic [read|write|readwrite|deny] <topic>`: access defaults to
 *   readwrite; the topic is the rest of the line (it may hold spaces); a
 *   single word after `topic` is the topic (`topic read` grants readwrite on
 *   the topic "read");
 * - `user <name>`: the `topic` lines after it apply to that user (the rest of
 *   the line, so a name may hold spaces); a name seen twice adds to the same
 *   list; `topic` lines before any `user` line apply to anonymous clients;
 * - `pattern [access] <topic>`: applies to every client, wherever it stands,
 *   with `%c` replaced by the client id and `%u` by the username (a pattern
 *   with `%u` is skipped for a client without a username);
 * - checks: the client's own `topic` rules first, then the patterns; in each
 *   list the `deny` rules come first and a match on one denies; the first
 *   other rule that matches with the wanted access allows; no match denies.
 *   With patterns in the file, a username or client id holding `+` or `#` is
 *   denied once the `topic` rules have not allowed it ({@link BLOCKED}: the
 *   caller logs Mosquitto's notice, {@link ClientRules.dangerous}).
 * - `$` topics: a rule whose topic does not start with `$` never matches a
 *   topic that does [MQTT-4.7.2-1]; whatever the file says, nobody may
 *   publish to `$SYS/...` (but `$SYS/broker/connection/+/state`, bridges'
 *   status) and nobody may publish to or receive on `$share...`.
 * - SUBSCRIBE: Mosquitto 1.5 – 2.1 do not check it against the file
 *   (`FIXME - implement ACL subscription strings`): every subscription is
 *   granted and each delivery, retained ones included, is read-checked.
 *   Midge refuses by default a filter no read rule can match
 *   ({@link maySubscribe}, Auth.ts `subscribeCheck`), and read-checks each
 *   delivery as Mosquitto does.
 *
 * The matcher is the hot path (one read check per message per subscriber):
 * rules are compiled once per client with `%c` / `%u` substituted and split
 * into levels, and a check walks the topic string without allocating.
 */
import * as fs from "node:fs"
import { Data, Effect, Either } from "effect"
import { validateTopicFilter } from "../protocol/topic.js"
import { codeUnitAt } from "../runtime/codeUnit.js"

/** Mosquitto's MOSQ_ACL_READ / MOSQ_ACL_WRITE bits; 0 is `deny`. */
export const READ = 1
export const WRITE = 2
export type Access = 0 | 1 | 2 | 3

export interface AclRule {
  readonly access: Access
  /** the topic filter as written, `%c` / `%u` unexpanded for patterns */
  readonly topic: string
  readonly line: number
}

export interface AclIssue {
  readonly line: number
  readonly message: string
}

/** A parsed acl_file. Every rule list is in Mosquitto's check order: `deny` rules first, then the others as written. */
export interface AclFile {
  readonly file: string
  /** `topic` lines before any `user` line: the rules of anonymous clients (undefined: none) */
  readonly anonymous: ReadonlyArray<AclRule> | undefined
  /** `topic` lines by `user` (a user with no `topic` line is absent, as in Mosquitto) */
  readonly users: ReadonlyMap<string, ReadonlyArray<AclRule>>
  readonly patterns: ReadonlyArray<AclRule>
  /** lines Mosquitto accepts silently but that are probably mistakes */
  readonly warnings: ReadonlyArray<AclIssue>
}

export class AclFileError extends Data.TaggedError("AclFileError")<{
  readonly reason: "Read" | "Invalid"
  readonly file: string
  /** 0 when the file could not be read */
  readonly line: number
  readonly message: string
}> {}

const ACCESS: Record<string, Access> = { read: READ, write: WRITE, readwrite: 3, deny: 0 }

/** isspace() */
const isBlank = (c: number): boolean => c === 32 || (c >= 9 && c <= 13)

const trimEnd = (s: string): string => {
  let end = s.length
  while (end > 0 && isBlank(s.charCodeAt(end - 1))) end--
  return end === s.length ? s : s.slice(0, end)
}

/** misc__trimblanks */
const trimBlanks = (s: string): string => {
  let start = 0
  while (start < s.length && isBlank(s.charCodeAt(start))) start++
  return trimEnd(s.slice(start))
}

/** strtok_r(_, " "): the next space-delimited token from `pos`, and where the rest starts (after one delimiter). */
const nextToken = (s: string, pos: number): { token: string; rest: number } | undefined => {
  while (pos < s.length && s.charCodeAt(pos) === 32) pos++
  if (pos >= s.length) return undefined
  const end = s.indexOf(" ", pos)
  return end < 0 ? { token: s.slice(pos), rest: s.length } : { token: s.slice(pos, end), rest: end + 1 }
}

/** Deny rules go to the front of a list (add__acl / add__acl_pattern), the others to its end. */
const addRule = (list: Array<AclRule>, rule: AclRule): void => {
  if (rule.access === 0) {
    let i = 0
    while (i < list.length && list[i].access === 0) i++
    list.splice(i, 0, rule)
  } else {
    list.push(rule)
  }
}

/** Parses acl_file text; the first bad line is an error, as Mosquitto refuses to start on it. */
export const parseAclFile = (text: string, file = "acl_file"): Either.Either<AclFile, AclFileError> => {
  const users = new Map<string, Array<AclRule>>()
  const patterns: Array<AclRule> = []
  const warnings: Array<AclIssue> = []
  let anonymous: Array<AclRule> | undefined
  let user: string | undefined
  const invalid = (line: number, message: string) => Either.left(new AclFileError({ reason: "Invalid", file, line, message }))
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1
    const buf = trimEnd(lines[i])
    if (buf.charCodeAt(0) === 35 /* # */) continue
    const first = nextToken(buf, 0)
    if (first === undefined) continue
    const keyword = first.token
    if (keyword === "topic" || keyword === "pattern") {
      const accessToken = nextToken(buf, first.rest)
      if (accessToken === undefined) return invalid(lineNo, `empty topic in ${keyword} line`)
      const restText = accessToken.rest < buf.length ? buf.slice(accessToken.rest) : ""
      let topic: string
      let access: Access
      if (restText.length > 0) {
        const a = ACCESS[accessToken.token]
        if (a === undefined) {
          return invalid(lineNo, `invalid topic access type "${accessToken.token}" (read, write, readwrite or deny)`)
        }
        access = a
        topic = trimBlanks(restText)
      } else {
        topic = accessToken.token
        access = 3
        if (ACCESS[topic] !== undefined) {
          warnings.push({ line: lineNo, message: `"${keyword} ${topic}" grants readwrite on the topic "${topic}" (as in Mosquitto); was a topic forgotten?` })
        }
      }
      if (!validateTopicFilter(topic)) return invalid(lineNo, `invalid ACL topic "${topic}"`)
      const rule: AclRule = { access, topic, line: lineNo }
      if (keyword === "pattern") {
        if (!topic.includes("%c") && !topic.includes("%u")) {
          warnings.push({ line: lineNo, message: `ACL pattern "${topic}" does not contain "%c" or "%u"` })
        }
        addRule(patterns, rule)
      } else if (user === undefined) {
        addRule((anonymous ??= []), rule)
      } else {
        let list = users.get(user)
        if (list === undefined) users.set(user, (list = []))
        addRule(list, rule)
      }
    } else if (keyword === "user") {
      const name = first.rest < buf.length ? trimBlanks(buf.slice(first.rest)) : ""
      if (name.length === 0) return invalid(lineNo, "missing username in user line")
      user = name
    } else {
      return invalid(
        lineNo,
        buf.includes("\t") && /^\s*(topic|pattern|user)\t/.test(buf)
          ? `invalid line "${buf}": fields are separated by spaces, not tabs`
          : `invalid line "${buf}" (expected topic, pattern or user)`
      )
    }
  }
  return Either.right({ file, anonymous, users, patterns, warnings })
}

/** Reads and parses an acl_file. */
export const readAclFile = (path: string): Effect.Effect<AclFile, AclFileError> =>
  Effect.tryPromise({
    try: () => fs.promises.readFile(path, "utf8"),
    catch: (error) => new AclFileError({ reason: "Read", file: path, line: 0, message: `unable to open acl_file "${path}": ${(error as Error).message}` })
  }).pipe(Effect.flatMap((text) => parseAclFile(text, path)))

// ---------------------------------------------------------------------------
// compiled rules and the matcher

/** One rule with its filter split into levels. */
export interface Compiled {
  readonly access: Access
  readonly levels: ReadonlyArray<string>
  /** the filter starts with `$` */
  readonly dollar: boolean
}

/** The rules of one client: its own `topic` rules, then the patterns with `%c` / `%u` substituted. */
export interface ClientRules {
  readonly own: ReadonlyArray<Compiled>
  /** a username or client id with `+` / `#`: patterns deny everything (after `own`) */
  readonly patternsBlocked: boolean
  /**
   * With `patternsBlocked`, the notice security_default.c logs each time it denies so (the username
   * is looked at first): `ACL denying access to client with dangerous username "a+b"` or `... client id "c#1"`
   */
  readonly dangerous: string | undefined
  readonly patterns: ReadonlyArray<Compiled>
}

const compileFilter = (access: Access, filter: string): Compiled => ({
  access,
  levels: filter.split("/"),
  dollar: filter.charCodeAt(0) === 36
})

/** The `topic` rules of a username (undefined: anonymous), compiled; share them between clients of one user. */
export const compileUserRules = (acl: AclFile, username: string | undefined): ReadonlyArray<Compiled> => {
  const rules = username === undefined ? acl.anonymous : acl.users.get(username)
  return rules === undefined ? [] : rules.map((r) => compileFilter(r.access, r.topic))
}

/** `%c` and `%u` replaced, left to right, as Mosquitto's substitution loop does. */
export const substitute = (pattern: string, clientId: string, username: string | undefined): string =>
  pattern.replace(/%[cu]/g, (m) => (m === "%c" ? clientId : username ?? m))

/** Compiles everything a client is checked against; `own` may come from {@link compileUserRules}. */
export const compileClientRules = (
  acl: AclFile,
  clientId: string,
  username: string | undefined,
  own: ReadonlyArray<Compiled> = compileUserRules(acl, username)
): ClientRules => {
  const patterns: Array<Compiled> = []
  let dangerous: string | undefined
  if (acl.patterns.length > 0) {
    if (username !== undefined && /[+#]/.test(username)) dangerous = `ACL denying access to client with dangerous username "${username}"`
    else if (/[+#]/.test(clientId)) dangerous = `ACL denying access to client with dangerous client id "${clientId}"`
    if (dangerous === undefined) {
      for (const p of acl.patterns) {
        if (username === undefined && p.topic.includes("%u")) continue
        patterns.push(compileFilter(p.access, substitute(p.topic, clientId, username)))
      }
    }
  }
  return { own, patternsBlocked: dangerous !== undefined, dangerous, patterns }
}

/**
 * True when the filter `levels` matches `topic` ([MQTT-4.7.1-2] `#` also
 * matches the parent level, [MQTT-4.7.1-3] `+` one whole level, possibly
 * empty). Walks the topic string; allocates nothing. The `$` rule is the
 * caller's.
 */
export const matchLevels = (levels: ReadonlyArray<string>, topic: string): boolean => {
  const len = topic.length
  let pos = 0
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]
    if (level === "#") return true
    if (pos > len) return false
    let end = topic.indexOf("/", pos)
    if (end < 0) end = len
    if (level !== "+" && (end - pos !== level.length || !topic.startsWith(level, pos))) return false
    pos = end + 1
  }
  return pos === len + 1
}

/** 1 allow, -1 deny, 0 no decision */
const checkList = (rules: ReadonlyArray<Compiled>, topic: string, dollarTopic: boolean, access: 1 | 2): number => {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]
    // [MQTT-4.7.2-1] a rule not starting with $ does not match a $ topic
    if (dollarTopic && !r.dollar) continue
    if (!matchLevels(r.levels, topic)) continue
    if (r.access === 0) return -1
    if ((r.access & access) !== 0) return 1
  }
  return 0
}

/**
 * acl__check_dollar: publishing to `$SYS` is refused (but the bridge state
 * topics), `$share` topics are neither published nor received. Applies with
 * or without an acl_file. Returns false when denied.
 */
export const dollarAllows = (topic: string, access: 1 | 2): boolean => {
  if (codeUnitAt(topic, 0) !== 36) return true
  if (topic.startsWith("$SYS")) {
    return access !== WRITE || matchLevels(BRIDGE_STATE, topic)
  }
  return !topic.startsWith("$share")
}

const BRIDGE_STATE = ["$SYS", "broker", "connection", "+", "state"]

/** A decision: denied, allowed, or denied because the patterns were reached with a dangerous name. */
export const DENIED = 0
export const ALLOWED = 1
/** denied: the patterns would decide, and the username or client id holds `+` or `#` (log `dangerous`) */
export const BLOCKED = 2
export type Decision = typeof DENIED | typeof ALLOWED | typeof BLOCKED

/** Mosquitto's read (`READ`) or write (`WRITE`) check of `topic` for a client with these rules. */
export const decide = (rules: ClientRules, topic: string, access: 1 | 2): Decision => {
  if (!dollarAllows(topic, access)) return DENIED
  const dollarTopic = codeUnitAt(topic, 0) === 36
  const own = checkList(rules.own, topic, dollarTopic, access)
  if (own !== 0) return own > 0 ? ALLOWED : DENIED
  if (rules.patternsBlocked) return BLOCKED
  return checkList(rules.patterns, topic, dollarTopic, access) > 0 ? ALLOWED : DENIED
}

/** {@link decide}, yes or no. */
export const allows = (rules: ClientRules, topic: string, access: 1 | 2): boolean => decide(rules, topic, access) === ALLOWED

// ---------------------------------------------------------------------------
// Midge-only: a subscription check that knows wildcards

const isWild = (level: string | undefined): boolean => level === "+" || level === "#"

/** Some topic matches both filters (the `$` rule included). */
export const filtersIntersect = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean => {
  // [MQTT-4.7.2-1] a filter starting with a wildcard matches no $ topic
  if ((isWild(a[0]) && b[0].charCodeAt(0) === 36) || (isWild(b[0]) && a[0].charCodeAt(0) === 36)) return false
  const n = Math.max(a.length, b.length)
  for (let i = 0; i <= n; i++) {
    const x = a[i]
    const y = b[i]
    if (x === "#" || y === "#") return true
    if (x === undefined || y === undefined) return x === y
    if (x !== "+" && y !== "+" && x !== y) return false
  }
  return true
}

/** Every topic `inner` matches, `outer` matches too. */
export const filterCovers = (outer: ReadonlyArray<string>, inner: ReadonlyArray<string>): boolean => {
  if (isWild(outer[0]) && inner[0].charCodeAt(0) === 36) return false
  for (let i = 0; ; i++) {
    const o = outer[i]
    const n = inner[i]
    if (o === "#") return true
    if (o === undefined || n === undefined) return o === n
    if (n === "#") return false
    if (o === "+") continue
    if (n === "+" || n !== o) return false
  }
}

/**
 * Midge-only, stricter than Mosquitto: a subscription is granted when some
 * rule with read access could match one of its topics and no `deny` rule
 * matches all of them. Deliveries are still checked one by one.
 */
export const maySubscribe = (rules: ClientRules, filter: string): boolean => decideSubscribe(rules, filter) === ALLOWED

/** {@link maySubscribe} as a {@link Decision}: BLOCKED when only the patterns, blocked for a dangerous name, could grant it. */
export const decideSubscribe = (rules: ClientRules, filter: string): Decision => {
  const levels = filter.split("/")
  const lists = rules.patternsBlocked ? [rules.own] : [rules.own, rules.patterns]
  for (const list of lists) {
    for (const r of list) {
      if (r.access === 0) {
        if (filterCovers(r.levels, levels)) return DENIED
      } else if ((r.access & READ) !== 0 && filtersIntersect(r.levels, levels)) {
        return ALLOWED
      }
    }
  }
  return rules.patternsBlocked ? BLOCKED : DENIED
}
