/**
 * A published application message, shared by every subscriber it is delivered to
 * (Mosquitto's ref-counted `mosquitto_msg_store`): the topic, payload and v5
 * properties are held once; each subscriber keeps only its packet id and QoS.
 *
 * The encoded PUBLISH frames are cached on the message, one per
 * (protocol family, QoS, retain flag), so a fan-out encodes once and each
 * delivery is a Buffer reference (QoS 0) or a copy with the packet id patched.
 */
import type { PublishFrame } from "../protocol/codec.js"
import { encodePublish, withPacketId } from "../protocol/codec.js"
import { sliceOf } from "../runtime/bufferOps.js"

export type QoS = 0 | 1 | 2

/** The v5 PUBLISH properties a broker forwards (the rest are per hop). */
export interface MessageProperties {
  payloadFormatIndicator?: boolean
  messageExpiryInterval?: number
  responseTopic?: string
  correlationData?: Buffer
  userProperties?: { [key: string]: string | Array<string> }
  contentType?: string
}

export class Message {
  /** for `check_retain_source`: who published it (username, listener) */
  originUsername: string | undefined = undefined
  originListenerPort = 0
  /**
   * frame cache, key = family * 6 + qos * 2 + (retain ? 1 : 0); family 0 = v3/v4, 1 = v5.
   * Most messages go out in one form only: that one is kept in `frame0` (no array per message).
   */
  /** the payload is its own (not a view on a socket chunk) */
  private owned = false
  private key0 = -1
  private frame0: PublishFrame | undefined = undefined
  private frames: Array<PublishFrame | undefined> | undefined = undefined

  constructor(
    readonly topic: string,
    /** may be a view on the socket chunk it arrived in until `ownPayload()` */
    public payload: Buffer,
    readonly qos: QoS,
    readonly retain: boolean,
    readonly properties: MessageProperties | undefined,
    /** client id of the publisher ("" for in-process publishes): v5 No Local */
    readonly origin: string,
    /** Clock time (ms) at which the broker received it */
    readonly receivedAt: number
  ) {}

  /** v5 Message Expiry Interval: has it passed at Clock time `now` (ms)? [MQTT-3.3.2-5] */
  expired(now: number): boolean {
    const interval = this.properties?.messageExpiryInterval
    return interval !== undefined && now - this.receivedAt >= interval * 1000
  }

  /** The Message Expiry Interval to send at `now`: reduced by the time the message waited [MQTT-3.3.2-6]. */
  remainingExpiry(now: number): number | undefined {
    const interval = this.properties?.messageExpiryInterval
    if (interval === undefined) return undefined
    return Math.max(1, interval - Math.floor((now - this.receivedAt) / 1000))
  }

  /**
   * Copy the payload out of the socket chunk it is a view on, so that a message
   * kept beyond this event-loop turn (retained, queued, in flight) does not pin
   * the whole chunk in memory.
   */
  ownPayload(): void {
    if (this.owned) return
    this.owned = true
    const p = this.payload
    if (p.byteOffset === 0 && p.buffer.byteLength === p.length) return
    // already encoded for a delivery: the payload is the frame's tail (a PUBLISH ends with it), no second copy
    // (not for a retained message, which may outlive its frames: it keeps only its payload)
    const frame = this.frame0
    this.payload = frame !== undefined && !this.retain ? sliceOf(frame.buffer, frame.buffer.length - p.length, frame.buffer.length) : Buffer.from(p)
  }

  /** The same topic with an empty payload: what clears a retained message. */
  cleared(): Message {
    return new Message(this.topic, Buffer.alloc(0), this.qos, true, undefined, this.origin, this.receivedAt)
  }

  /** The message as it is stored retained or forwarded with another retain flag. */
  withRetain(retain: boolean): Message {
    if (retain === this.retain) return this
    return new Message(this.topic, this.payload, this.qos, retain, this.properties, this.origin, this.receivedAt)
  }

  /** The encoded PUBLISH for this delivery: shared for QoS 0, a patched copy for QoS 1 / 2. */
  frame(protocolVersion: 3 | 4 | 5, qos: QoS, retain: boolean, messageId: number, dup: boolean): Buffer {
    const frame = this.publishFrame(protocolVersion, qos, retain)
    return qos === 0 ? frame.buffer : withPacketId(frame, messageId, dup)
  }

  /** The shared encoding at (family, QoS, retain), encoded on first use; QoS 1 / 2 carry packet id 1 at `idOffset`. */
  publishFrame(protocolVersion: 3 | 4 | 5, qos: QoS, retain: boolean): PublishFrame {
    const family = protocolVersion === 5 ? 1 : 0
    const index = family * 6 + qos * 2 + (retain ? 1 : 0)
    let frame = index === this.key0 ? this.frame0 : this.frames?.[index]
    if (frame === undefined) {
      frame = encodePublish(
        {
          topic: this.topic,
          payload: this.payload,
          qos,
          retain,
          dup: false,
          messageId: qos > 0 ? 1 : undefined,
          properties: family === 1 ? this.properties : undefined
        },
        protocolVersion
      )
      if (this.key0 < 0) {
        this.key0 = index
        this.frame0 = frame
      } else {
        ;(this.frames ??= new Array<PublishFrame | undefined>(12))[index] = frame
      }
    }
    return frame
  }
}
