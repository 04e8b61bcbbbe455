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
