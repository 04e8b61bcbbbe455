/**
 * A byte stream cut into chunks at the given points (each taken modulo the stream's length + 1,
 * so any natural numbers will do), as a socket may deliver it. Points that coincide, or fall at
 * either end, give empty chunks: parsers must take those too.
 */
export const splitAt = (bytes: Buffer, cuts: ReadonlyArray<number>): Array<Buffer> => {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const chunks: Array<Buffer> = []
  let last = 0
  for (const point of points) {
    chunks.push(bytes.subarray(last, point))
    last = point
  }
  chunks.push(bytes.subarray(last))
  return chunks
}

/**
 * Zero bytes that complete an MQTT stream's last frame, so that the reader gets to what is sent
 * after it: none when the frames are complete or a length has a fifth byte (malformed: the reader
 * refuses it). `undefined` when a frame claims more than `maxPacket` bytes: a reader with that
 * limit refuses it as soon as it reads the length, one without waits for all of it.
 */
export const padding = (stream: Buffer, maxPacket: number): Buffer | undefined => {
  let pad = 0
  for (;;) {
    const more = missing(stream, pad, maxPacket)
    if (more === undefined) return undefined
    if (more === 0) return Buffer.alloc(pad)
    pad += more
  }
}

/** bytes the last frame lacks, with `pad` zero bytes after the stream (a length still unfinished lacks one: a 0 ends it) */
const missing = (stream: Buffer, pad: number, maxPacket: number): number | undefined => {
  const size = stream.length + pad
  const at = (j: number) => (j < stream.length ? stream[j] : 0)
  let i = 0
  while (i < size) {
    let length = 0
    let j = i + 1
    for (let k = 0; ; k++) {
      if (k === 4) return 0
      if (j >= size) return 1
      const b = at(j++)
      length += (b & 0x7f) * 128 ** k
      if ((b & 0x80) === 0) break
    }
    if (length + (j - i) > maxPacket) return undefined
    i = j + length
  }
  return i - size
}
