/**
 * fast-check arbitraries for MQTT packets that mqtt-packet can generate, per
 * protocol version: the codec's property tests hold the parser to mqtt-packet
 * on them, and the broker's fuzz test (test/e2e/fuzz.test.ts) sends them.
 */
import { FastCheck as fc } from "effect"
import * as Mqtt from "mqtt-packet"
import type { AckCmd, Packet, ProtocolVersion, PublishProperties } from "../../src/protocol/codec.js"
import { hasForbiddenCodePoint } from "../../src/protocol/utf8.js"


export const str = fc
  .oneof(fc.string({ unit: "grapheme-ascii", maxLength: 10 }), fc.string({ unit: "binary", maxLength: 6 }))
  // strings a broker accepts: no U+0000, control character or non-character (src/protocol/utf8.ts)
  .filter((s) => !hasForbiddenCodePoint(s))
export const nonEmptyStr = str.filter((s) => s.length > 0)
export const bytes = (maxLength: number) => fc.uint8Array({ maxLength }).map((a) => Buffer.from(a))
export const u16 = fc.integer({ min: 0, max: 0xffff })
export const u32 = fc.integer({ min: 0, max: 0xffffffff })
export const packetId = fc.integer({ min: 1, max: 0xffff })
export const qos = fc.constantFrom(0 as const, 1 as const, 2 as const)
export const subscriptionId = fc.integer({ min: 1, max: 268_435_455 })
export const userProperties = fc.dictionary(str, fc.oneof(str, fc.array(str, { minLength: 2, maxLength: 3 })), {
  minKeys: 1,
  maxKeys: 3
})
export const props = <T extends Record<string, fc.Arbitrary<unknown>>>(model: T) =>
  fc.option(fc.record(model, { requiredKeys: [] }), { nil: undefined })
export const reasonProps = props({ reasonString: str, userProperties })

export const publishProperties = fc.record(
  {
    payloadFormatIndicator: fc.boolean(),
    messageExpiryInterval: u32,
    topicAlias: fc.integer({ min: 1, max: 0xffff }),
    responseTopic: str,
    correlationData: bytes(8),
    userProperties,
    subscriptionIdentifier: fc.oneof(subscriptionId, fc.array(subscriptionId, { minLength: 2, maxLength: 3 })),
    contentType: str
  },
  { requiredKeys: [] }
) as fc.Arbitrary<PublishProperties>

export const connectArb = (v: ProtocolVersion) =>
  fc
    .record({
      clientId: nonEmptyStr,
      clean: fc.boolean(),
      keepalive: u16,
      username: fc.option(str, { nil: undefined }),
      password: fc.option(bytes(8), { nil: undefined }),
      will: fc.option(
        fc.record({
          topic: nonEmptyStr,
          payload: bytes(8),
          qos,
          retain: fc.boolean(),
          properties: v === 5
            ? props({
              willDelayInterval: u32,
              payloadFormatIndicator: fc.boolean(),
              messageExpiryInterval: u32,
              contentType: str,
              responseTopic: str,
              correlationData: bytes(6),
              userProperties
            })
            : fc.constant(undefined)
        }),
        { nil: undefined }
      ),
      properties: v === 5
        ? props({
          sessionExpiryInterval: u32,
          receiveMaximum: fc.integer({ min: 1, max: 0xffff }),
          maximumPacketSize: fc.integer({ min: 1, max: 0xffffffff }),
          topicAliasMaximum: u16,
          requestResponseInformation: fc.boolean(),
          requestProblemInformation: fc.boolean(),
          userProperties,
          authenticationMethod: str,
          authenticationData: bytes(6)
        })
        : fc.constant(undefined)
    })
    .map((c): Packet => ({
      cmd: "connect",
      protocolId: v === 3 ? "MQIsdp" : "MQTT",
      protocolVersion: v,
      clientId: c.clientId,
      clean: c.clean,
      keepalive: c.keepalive,
      ...(c.username !== undefined ? { username: c.username } : {}),
      ...(c.username !== undefined && c.password !== undefined ? { password: c.password } : {}),
      ...(c.will !== undefined ? { will: c.will } : {}),
      ...(c.properties !== undefined ? { properties: c.properties } : {})
    }))

export const connackArb = (v: ProtocolVersion) =>
  fc.record({
    sessionPresent: fc.boolean(),
    code: v === 5 ? fc.constantFrom(0x00, 0x80, 0x84, 0x85, 0x87, 0x95, 0x9f) : fc.integer({ min: 0, max: 5 }),
    properties: v === 5
      ? props({
        sessionExpiryInterval: u32,
        receiveMaximum: fc.integer({ min: 1, max: 0xffff }),
        maximumQoS: fc.constantFrom(0, 1),
        retainAvailable: fc.boolean(),
        maximumPacketSize: fc.integer({ min: 1, max: 0xffffffff }),
        assignedClientIdentifier: str,
        topicAliasMaximum: u16,
        reasonString: str,
        userProperties,
        wildcardSubscriptionAvailable: fc.boolean(),
        subscriptionIdentifiersAvailable: fc.boolean(),
        sharedSubscriptionAvailable: fc.boolean(),
        serverKeepAlive: u16,
        responseInformation: str,
        serverReference: str,
        authenticationMethod: str,
        authenticationData: bytes(6)
      })
      : fc.constant(undefined)
  }).map((c): Packet => ({
    cmd: "connack",
    sessionPresent: c.sessionPresent,
    ...(v === 5 ? { reasonCode: c.code } : { returnCode: c.code }),
    ...(c.properties !== undefined ? { properties: c.properties } : {})
  }))

export const publishArb = (v: ProtocolVersion) =>
  fc.record({
    topic: str,
    payload: bytes(40),
    qos,
    retain: fc.boolean(),
    dup: fc.boolean(),
    messageId: packetId,
    properties: v === 5 ? fc.option(publishProperties, { nil: undefined }) : fc.constant(undefined)
  }).map((p): Packet => ({
    cmd: "publish",
    topic: p.topic,
    payload: p.payload,
    qos: p.qos,
    retain: p.retain,
    dup: p.dup,
    ...(p.qos > 0 ? { messageId: p.messageId } : {}),
    ...(p.properties !== undefined ? { properties: p.properties } : {})
  }))

export const PUBACK_CODES = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
export const PUBREL_CODES = [0x00, 0x92]
export const ackCodes = (cmd: AckCmd) => (cmd === "puback" || cmd === "pubrec" ? PUBACK_CODES : PUBREL_CODES)

export const ackArb = (v: ProtocolVersion) =>
  fc.constantFrom<AckCmd>("puback", "pubrec", "pubrel", "pubcomp").chain((cmd) =>
    fc.record({
      messageId: packetId,
      reasonCode: fc.constantFrom(...ackCodes(cmd)),
      properties: reasonProps
    }).map((a): Packet =>
      v === 5
        ? { cmd, messageId: a.messageId, reasonCode: a.reasonCode, ...(a.properties ? { properties: a.properties } : {}) }
        : { cmd, messageId: a.messageId }
    )
  )

export const subscribeArb = (v: ProtocolVersion) =>
  fc.record({
    messageId: packetId,
    subscriptions: fc.array(
      fc.record({ topic: str, qos, nl: fc.boolean(), rap: fc.boolean(), rh: fc.integer({ min: 0, max: 2 }) }),
      { minLength: 1, maxLength: 3 }
    ),
    properties: v === 5 ? props({ subscriptionIdentifier: subscriptionId, userProperties }) : fc.constant(undefined)
  }).map((s): Packet => ({
    cmd: "subscribe",
    messageId: s.messageId,
    subscriptions: v === 5 ? s.subscriptions : s.subscriptions.map(({ qos, topic }) => ({ topic, qos })),
    ...(s.properties !== undefined ? { properties: s.properties } : {})
  }))

export const SUBACK_CODES_V5 = [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2]
export const UNSUBACK_CODES_V5 = [0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91]

export const subackArb = (v: ProtocolVersion) =>
  fc.record({
    messageId: packetId,
    granted: fc.array(fc.constantFrom(...(v === 5 ? SUBACK_CODES_V5 : [0, 1, 2, 0x80])), { minLength: 1, maxLength: 4 }),
    properties: v === 5 ? reasonProps : fc.constant(undefined)
  }).map((s): Packet => ({
    cmd: "suback",
    messageId: s.messageId,
    granted: s.granted,
    ...(s.properties !== undefined ? { properties: s.properties } : {})
  }))

export const unsubscribeArb = (v: ProtocolVersion) =>
  fc.record({
    messageId: packetId,
    unsubscriptions: fc.array(str, { minLength: 1, maxLength: 3 }),
    properties: v === 5 ? props({ userProperties }) : fc.constant(undefined)
  }).map((u): Packet => ({
    cmd: "unsubscribe",
    messageId: u.messageId,
    unsubscriptions: u.unsubscriptions,
    ...(u.properties !== undefined ? { properties: u.properties } : {})
  }))

export const unsubackArb = (v: ProtocolVersion) =>
  fc.record({
    messageId: packetId,
    granted: fc.array(fc.constantFrom(...UNSUBACK_CODES_V5), { minLength: 1, maxLength: 4 }),
    properties: reasonProps
  }).map((u): Packet =>
    v === 5
      ? {
        cmd: "unsuback",
        messageId: u.messageId,
        granted: u.granted,
        ...(u.properties !== undefined ? { properties: u.properties } : {})
      }
      : { cmd: "unsuback", messageId: u.messageId, granted: [] }
  )

export const DISCONNECT_CODES = [0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95]

export const disconnectArb = (v: ProtocolVersion) =>
  v === 5
    ? fc.record({
      reasonCode: fc.constantFrom(...DISCONNECT_CODES),
      properties: props({ sessionExpiryInterval: u32, reasonString: str, userProperties, serverReference: str })
    }).map((d): Packet => ({
      cmd: "disconnect",
      reasonCode: d.reasonCode,
      ...(d.properties !== undefined ? { properties: d.properties } : {})
    }))
    : fc.constant<Packet>({ cmd: "disconnect" })

export const authArb = fc.record({
  reasonCode: fc.constantFrom(0x00, 0x18, 0x19),
  properties: props({ authenticationMethod: str, authenticationData: bytes(6), reasonString: str, userProperties })
}).map((a): Packet => ({ cmd: "auth", reasonCode: a.reasonCode, ...(a.properties !== undefined ? { properties: a.properties } : {}) }))

export const packetArb = (v: ProtocolVersion): fc.Arbitrary<Packet> =>
  fc.oneof(
    connectArb(v),
    connackArb(v),
    { arbitrary: publishArb(v), weight: 4 },
    { arbitrary: ackArb(v), weight: 3 },
    subscribeArb(v),
    subackArb(v),
    unsubscribeArb(v),
    unsubackArb(v),
    fc.constant<Packet>({ cmd: "pingreq" }),
    fc.constant<Packet>({ cmd: "pingresp" }),
    disconnectArb(v),
    ...(v === 5 ? [authArb] : [])
  )

// ---------------------------------------------------------------------------
// For the fuzz tests: packets that meet each other, and damage to a stream

/** 1 to 4 most of the time, so that acknowledgements meet the packets in flight */
export const smallId = fc.oneof(fc.integer({ min: 1, max: 4 }), packetId)

/** PUBLISH on `topic`, with a small packet id and, in v5, sometimes a topic alias from 0 to 12 */
export const publishOn = (v: ProtocolVersion, topic: fc.Arbitrary<string>): fc.Arbitrary<Packet> =>
  fc.tuple(publishArb(v), topic, smallId, fc.option(fc.integer({ min: 0, max: 12 }), { nil: undefined })).map(([p, t, id, alias]) => {
    const out = { ...p, topic: t } as Packet & { messageId?: number; properties?: Record<string, unknown>; qos: number }
    if (out.qos > 0) out.messageId = id
    if (v === 5 && alias !== undefined) out.properties = { ...out.properties, topicAlias: alias }
    else if (v === 5 && out.properties !== undefined) delete out.properties["topicAlias"]
    return out
  })

/** PUBACK, PUBREC, PUBREL or PUBCOMP with a small packet id */
export const ackOfSmallId = (v: ProtocolVersion): fc.Arbitrary<Packet> => fc.tuple(ackArb(v), smallId).map(([a, id]) => ({ ...a, messageId: id }) as Packet)

/** one byte changed, the end cut off, or garbage added; or (most often) none */
export type Damage =
  | { readonly kind: "flip"; readonly at: number; readonly value: number }
  | { readonly kind: "cut"; readonly at: number }
  | { readonly kind: "garbage"; readonly bytes: Uint8Array }

export const damage: fc.Arbitrary<Damage | undefined> = fc.option(
  fc.oneof(
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("garbage" as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) })
  ),
  { nil: undefined, freq: 3 }
)

export const applyDamage = (body: Buffer, d: Damage | undefined): Buffer => {
  if (d === undefined || body.length === 0) return d?.kind === "garbage" ? Buffer.from(d.bytes) : body
  switch (d.kind) {
    case "flip": {
      const out = Buffer.from(body)
      out[d.at % out.length] = d.value
      return out
    }
    case "cut":
      return body.subarray(0, d.at % body.length)
    case "garbage":
      return Buffer.concat([body, Buffer.from(d.bytes)])
  }
}

/** Is there a packet `cmd` with `messageId` in `data`, read as MQTT packets (up to a frame mqtt-packet cannot read)? */
export const hasReply = (data: Buffer, v: ProtocolVersion, cmd: "suback" | "puback", messageId: number): boolean => {
  let found = false
  const parser = Mqtt.parser({ protocolVersion: v })
  parser.on("packet", (p) => {
    if (p.cmd === cmd && p.messageId === messageId) found = true
  })
  parser.on("error", () => undefined)
  parser.parse(data)
  return found
}
