/**
 * The MQTT 5 properties a broker forwards with a message, from a PUBLISH or a
 * will: shared by client connections (`Connection.ts`) and bridges
 * (`bridge/internal/runtime.ts`). Per-hop properties (topic alias,
 * subscription identifiers) are not forwarded.
 */
import type * as mqtt from "mqtt-packet"
import type { MessageProperties } from "./Message.js"

export const forwardedProperties = (
  p: mqtt.IPublishPacket["properties"] | NonNullable<mqtt.IConnectPacket["will"]>["properties"] | undefined
): MessageProperties | undefined => {
  if (p === undefined) return undefined
  let out: MessageProperties | undefined
  if (p.payloadFormatIndicator !== undefined) (out ??= {}).payloadFormatIndicator = p.payloadFormatIndicator
  if (p.messageExpiryInterval !== undefined) (out ??= {}).messageExpiryInterval = p.messageExpiryInterval
  if (p.contentType !== undefined) (out ??= {}).contentType = p.contentType
  if (p.responseTopic !== undefined) (out ??= {}).responseTopic = p.responseTopic
  if (p.correlationData !== undefined) (out ??= {}).correlationData = p.correlationData
  if (p.userProperties !== undefined) (out ??= {}).userProperties = p.userProperties
  return out
}
