/**
 * `-D COMMAND PROPERTY VALUE` (and `-D COMMAND user-property KEY VALUE`):
 * MQTT 5 properties by their Mosquitto names, checked as Mosquitto checks
 * them (which packet may carry which property [MQTT-2.2.2], value ranges),
 * and collected per packet as MQTT.js property objects.
 */
import { atol } from "./cstring.js"

export type PropertyCommand = "connect" | "publish" | "subscribe" | "unsubscribe" | "disconnect" | "will"

type ValueType = "byte" | "int16" | "int32" | "varint" | "binary" | "string" | "pair"

/** Mosquitto's command names (mosquitto_string_to_command). */
const commands = new Set([
  "connect", "connack", "publish", "puback", "pubrec", "pubrel", "pubcomp",
  "subscribe", "suback", "unsubscribe", "unsuback", "disconnect", "auth", "will"
])

interface PropertyInfo {
  readonly type: ValueType
  /** MQTT.js's name for it */
  readonly key: string
  /** packets it may appear in [MQTT-2.2.2.2] */
  readonly allowed: ReadonlyArray<string>
}

const WILL_AND_PUBLISH = ["publish", "will"]
const ACKS = ["connack", "puback", "pubrec", "pubrel", "pubcomp", "suback", "unsuback", "disconnect", "auth"]

export const propertyTable: ReadonlyMap<string, PropertyInfo> = new Map<string, PropertyInfo>([
  ["payload-format-indicator", { type: "byte", key: "payloadFormatIndicator", allowed: WILL_AND_PUBLISH }],
  ["message-expiry-interval", { type: "int32", key: "messageExpiryInterval", allowed: WILL_AND_PUBLISH }],
  ["content-type", { type: "string", key: "contentType", allowed: WILL_AND_PUBLISH }],
  ["response-topic", { type: "string", key: "responseTopic", allowed: WILL_AND_PUBLISH }],
  ["correlation-data", { type: "binary", key: "correlationData", allowed: WILL_AND_PUBLISH }],
  ["subscription-identifier", { type: "varint", key: "subscriptionIdentifier", allowed: ["publish", "subscribe"] }],
  ["session-expiry-interval", { type: "int32", key: "sessionExpiryInterval", allowed: ["connect", "connack", "disconnect"] }],
  ["assigned-client-identifier", { type: "string", key: "assignedClientIdentifier", allowed: ["connack"] }],
  ["server-keep-alive", { type: "int16", key: "serverKeepAlive", allowed: ["connack"] }],
  ["authentication-method", { type: "string", key: "authenticationMethod", allowed: ["connect", "connack", "auth"] }],
  ["authentication-data", { type: "binary", key: "authenticationData", allowed: ["connect", "connack", "auth"] }],
  ["request-problem-information", { type: "byte", key: "requestProblemInformation", allowed: ["connect"] }],
  ["will-delay-interval", { type: "int32", key: "willDelayInterval", allowed: ["will"] }],
  ["request-response-information", { type: "byte", key: "requestResponseInformation", allowed: ["connect"] }],
  ["response-information", { type: "string", key: "responseInformation", allowed: ["connack"] }],
  ["server-reference", { type: "string", key: "serverReference", allowed: ["connack", "disconnect"] }],
  ["reason-string", { type: "string", key: "reasonString", allowed: ACKS }],
  ["receive-maximum", { type: "int16", key: "receiveMaximum", allowed: ["connect", "connack"] }],
  ["topic-alias-maximum", { type: "int16", key: "topicAliasMaximum", allowed: ["connect", "connack"] }],
  ["topic-alias", { type: "int16", key: "topicAlias", allowed: ["publish"] }],
  ["maximum-qos", { type: "byte", key: "maximumQoS", allowed: ["connack"] }],
  ["retain-available", { type: "byte", key: "retainAvailable", allowed: ["connack"] }],
  ["user-property", { type: "pair", key: "userProperties", allowed: ["connect", "publish", "will", "subscribe", "unsubscribe", ...ACKS] }],
  ["maximum-packet-size", { type: "int32", key: "maximumPacketSize", allowed: ["connect", "connack"] }],
  ["wildcard-subscription-available", { type: "byte", key: "wildcardSubscriptionAvailable", allowed: ["connack"] }],
  ["subscription-identifier-available", { type: "byte", key: "subscriptionIdentifiersAvailable", allowed: ["connack"] }],
  ["shared-subscription-available", { type: "byte", key: "sharedSubscriptionAvailable", allowed: ["connack"] }]
])

/** MQTT.js property objects, one per packet type. */
export type PropertyBag = Record<string, unknown>
export type PropertySet = Record<PropertyCommand, PropertyBag>

export const emptyPropertySet = (): PropertySet => ({ connect: {}, publish: {}, subscribe: {}, unsubscribe: {}, disconnect: {}, will: {} })

const ranges: Record<"byte" | "int16" | "int32" | "varint", number> = { byte: 0xff, int16: 0xffff, int32: 0xffffffff, varint: 268435455 }

/**
 * Parses one `-D` at `argv[index]` (the word after `-D`). Returns the index
 * of its last word, or an error text exactly as Mosquitto prints it; the
 * empty string means Mosquitto fails silently (a `connack` property).
 */
export const parseProperty = (
  argv: ReadonlyArray<string>,
  index: number,
  into: PropertySet
): { readonly next: number } | { readonly error: string } => {
  if (index + 2 > argv.length - 1) return { error: "Error: --property argument given but not enough arguments specified.\n\n" }
  const cmdname = argv[index]
  if (!commands.has(cmdname)) return { error: "Error: Invalid command given in --property argument.\n\n" }
  const propname = argv[index + 1]
  const info = propertyTable.get(propname)
  if (info === undefined) return { error: "Error: Invalid property name given in --property argument.\n\n" }
  if (!info.allowed.includes(cmdname)) return { error: `Error: ${propname} property not allowed for ${cmdname} in --property argument.\n\n` }
  let key: string | undefined
  let value: string
  let last: number
  if (info.type === "pair") {
    if (index + 3 > argv.length - 1) return { error: "Error: --property argument given but not enough arguments specified.\n\n" }
    key = argv[index + 2]
    value = argv[index + 3]
    last = index + 3
  } else {
    value = argv[index + 2]
    last = index + 2
  }
  const notSupported = { error: `Error: ${propname} property not supported for ${cmdname} in --property argument.\n\n` }
  let bag: PropertyBag
  switch (cmdname) {
    case "connect":
    case "unsubscribe":
    case "disconnect":
    case "will":
      bag = into[cmdname]
      break
    case "publish":
      if (propname === "subscription-identifier") return notSupported
      bag = into.publish
      break
    case "subscribe":
      if (propname !== "subscription-identifier" && propname !== "user-property") return notSupported
      bag = into.subscribe
      break
    case "connack":
      return { error: "" }
    default:
      return notSupported
  }
  switch (info.type) {
    case "byte":
    case "int16":
    case "int32":
    case "varint": {
      const n = atol(value)
      if (n < 0 || n > ranges[info.type]) return { error: `Error: Property value (${n}) out of range for property ${propname}.\n\n` }
      // MQTT.js (mqtt-packet) takes the one-byte properties as booleans: values above 1 are protocol errors anyway
      bag[info.key] = info.type === "byte" ? n !== 0 : n
      break
    }
    case "binary":
    case "string": {
      const bytes = Buffer.from(value, "utf8")
      if (bytes.length > 65535) return { error: `Error: Property value too long for property ${propname}.\n\n` }
      bag[info.key] = info.type === "binary" ? bytes : value
      break
    }
    case "pair": {
      const users = (bag.userProperties ??= {}) as Record<string, string | Array<string>>
      const existing = users[key!]
      users[key!] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value]
      break
    }
  }
  return { next: last }
}
