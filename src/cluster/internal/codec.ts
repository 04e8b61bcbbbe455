/**
 * What crosses Redis: a message as the fields of a stream entry (and as the
 * JSON of a retained notification), a session as JSON. Payloads and binary v5
 * properties travel as base64; cold paths apart from the stream entry, which is
 * built once per message and node.
 */
import type { SubscriptionOptions } from "../../routing/Router.js"
import { Message, type MessageProperties, type QoS } from "../../session/Message.js"
import type { OutState } from "../../session/OutboundFlow.js"

/** JSON with Buffers (v5 correlation data) as `{ "$b": base64 }` */
const replacer = (_key: string, value: unknown): unknown => {
  if (value !== null && typeof value === "object" && (value as { type?: unknown }).type === "Buffer" && Array.isArray((value as { data?: unknown }).data)) {
    return { $b: Buffer.from((value as { data: Array<number> }).data).toString("base64") }
  }
  return value
}
const reviver = (_key: string, value: unknown): unknown =>
  value !== null && typeof value === "object" && typeof (value as { $b?: unknown }).$b === "string" ? Buffer.from((value as { $b: string }).$b, "base64") : value

export const toJson = (value: unknown): string => JSON.stringify(value, replacer)
export const fromJson = (text: string): unknown => JSON.parse(text, reviver)

/** The fields of one stream entry. `s`: the shared group ("group\0filter") it was picked for. */
export type MessageFields = Record<string, string>

export const messageFields = (message: Message, shared: { readonly group: string; readonly filter: string } | undefined): MessageFields => {
  const fields: MessageFields = {
    t: message.topic,
    p: message.payload.toString("base64"),
    q: String(message.qos),
    r: message.retain ? "1" : "0",
    o: message.origin,
    a: String(message.receivedAt)
  }
  if (message.properties !== undefined) fields.x = toJson(message.properties)
  if (shared !== undefined) fields.s = `${shared.group}\u0000${shared.filter}`
  return fields
}

export const messageOfFields = (f: Record<string, string>): Message | undefined => {
  const q = Number(f.q)
  if (typeof f.t !== "string" || typeof f.p !== "string" || !(q === 0 || q === 1 || q === 2)) return undefined
  const properties = f.x !== undefined ? (fromJson(f.x) as MessageProperties) : undefined
  return new Message(f.t, Buffer.from(f.p, "base64"), q as QoS, f.r === "1", properties, f.o ?? "", Number(f.a) || Date.now())
}

export const sharedOfFields = (f: Record<string, string>): { readonly group: string; readonly filter: string } | undefined => {
  if (f.s === undefined) return undefined
  const i = f.s.indexOf("\u0000")
  return i < 0 ? undefined : { group: f.s.slice(0, i), filter: f.s.slice(i + 1) }
}

/** A delivery of a transferred session (OutboundFlow's Outgoing / InflightEntry). */
export interface WireDelivery {
  readonly m: MessageFields
  readonly qos: QoS
  readonly retain: boolean
  readonly ids: ReadonlyArray<number> | undefined
  readonly shared: { readonly group: string; readonly filter: string } | undefined
  readonly messageId?: number
  readonly state?: OutState
  /** the key of its outbound QoS 2 record in `P:out:<client id>` (see `OutRecord`) */
  readonly u?: string
}

/** A session handed from one node to another (or stored for a node that may die). */
export interface WireSession {
  readonly clientId: string
  readonly expiryInterval: number
  readonly disconnectedAt: number
  readonly subscriptions: ReadonlyArray<readonly [string, SubscriptionOptions]>
  readonly inflight: ReadonlyArray<WireDelivery>
  readonly queue: ReadonlyArray<WireDelivery>
  readonly qos2: ReadonlyArray<number>
}

/**
 * A persistent session's outbound QoS 2 delivery as Redis keeps it, in the hash
 * `P:out:<client id>`, for a node that takes the session over after this one
 * died. The field is the message's identity: `<origin>:<index>` for a message
 * read from an inbox (origin: the node and stream id of the entry it was first
 * added to, kept when an adopter moves the entry; index: its place in the
 * entry), `#<packet id>` for one published on the node itself.
 * `s`: "p" PUBLISH sent (PUBREC not yet seen), "r" PUBREL sent, "c" completed
 * (PUBCOMP; kept while its entry is in Redis, so that a replay skips it).
 */
export interface OutRecord {
  /** packet id */
  readonly i: number
  readonly s: "p" | "r" | "c"
  /** the message ("p" only: a PUBLISH to send again with DUP) */
  readonly m?: MessageFields
  /** retain flag sent */
  readonly r?: 1
  /** v5 subscription identifiers sent */
  readonly d?: ReadonlyArray<number>
}

/** The origin part of a record key (`<origin>:<index>`), undefined for a message published on its node (`#<packet id>`). */
export const originOfKey = (key: string): string | undefined => {
  if (key.startsWith("#")) return undefined
  const i = key.lastIndexOf(":")
  return i < 0 ? undefined : key.slice(0, i)
}
