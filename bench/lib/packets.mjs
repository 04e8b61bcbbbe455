// Hand-encoded MQTT 3.1.1 packets for the load generator (no MQTT.js on the hot path).
// Only what the generator sends: CONNECT, SUBSCRIBE, PUBLISH templates, the four
// acknowledgements, PINGREQ, DISCONNECT. bench/selftest.mjs checks them against mqtt-packet.

/** Remaining Length bytes [MQTT-2.2.3]: 7 bits per byte, at most 4 bytes. */
export const varint = (n) => {
  const out = []
  do {
    let b = n & 0x7f
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return out
}

const frame = (first, body) => Buffer.from([first, ...varint(body.length), ...body])
const str = (s) => {
  const b = Buffer.from(s, 'utf8')
  return [b.length >> 8, b.length & 0xff, ...b]
}

/** CONNECT, protocol level 4, clean session (unless `clean` is false), no will, no credentials [MQTT-3.1]. */
export const connect = (clientId, keepalive, clean = true) =>
  frame(0x10, [...str('MQTT'), 4, clean ? 0x02 : 0x00, keepalive >> 8, keepalive & 0xff, ...str(clientId)])

/** SUBSCRIBE with one filter [MQTT-3.8]; the fixed header flags are 0b0010 [MQTT-3.8.1-1]. */
export const subscribe = (packetId, filter, qos) => frame(0x82, [packetId >> 8, packetId & 0xff, ...str(filter), qos])

/** PUBACK 0x40, PUBREC 0x50, PUBREL 0x62 [MQTT-3.6.1-1], PUBCOMP 0x70. */
export const PUBACK = 0x40
export const PUBREC = 0x50
export const PUBREL = 0x62
export const PUBCOMP = 0x70
export const ack = (type, packetId) => Buffer.from([type, 2, packetId >> 8, packetId & 0xff])

export const PINGREQ = Buffer.from([0xc0, 0])
export const DISCONNECT = Buffer.from([0xe0, 0])

/** Bytes of the payload header: [u32 publisher][u32 seq][u64 send time ns], little endian (as mqload). */
export const HEADER = 16

/**
 * A PUBLISH template [MQTT-3.3]: topic, packet id placeholder (QoS > 0), payload of `size`
 * bytes whose first 4 bytes are the publisher index. The sender patches the packet id at
 * `pidOff`, the seq at `payOff + 4` and the send time at `payOff + 8`.
 */
export const publishTemplate = (topic, qos, size, publisher) => {
  if (size < HEADER) throw new Error(`payload size must be at least ${HEADER}`)
  const t = str(topic)
  const body = [...t]
  let pidOff = -1
  if (qos > 0) {
    pidOff = body.length
    body.push(0, 0)
  }
  const payStart = body.length
  for (let i = 0; i < size; i++) body.push(97 + (i % 26))
  const buf = frame(0x30 | (qos << 1), body)
  const hdr = buf.length - body.length
  const payOff = hdr + payStart
  buf.writeUInt32LE(publisher, payOff)
  return { buf, pidOff: pidOff < 0 ? -1 : hdr + pidOff, payOff }
}
