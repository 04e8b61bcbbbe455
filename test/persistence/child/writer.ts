/**
 * A store-writing process for the kill -9 tests (bundled by crash.test.ts).
 *
 *   node writer.mjs <location> <durable|lazy>
 *
 * It resumes from what the store holds and writes forever, turn after turn:
 * message i is queued for client "c" with inbound QoS 2 id (i mod 65535) + 1;
 * once 50 are queued, each new one consumes the oldest (delivered, its
 * inbound id released); every 100th is also retained on topic "r". After each
 * turn, once `whenDurable` fires, it prints "ack <i>" for the last i of the
 * turn. Compactions run every second and whenever the log passes 128 KiB, so
 * a kill lands in every phase. It exits by itself after 30 s.
 */
import { Context, Effect, Layer } from "effect"
import { FilePersistence, layerFile } from "../../../src/persistence/FilePersistence.js"

const [location, mode] = process.argv.slice(2)
const WINDOW = 50
const PER_TURN = 25
setTimeout(() => process.exit(3), 30_000).unref()

const message = (i: number) => ({
  topic: `m/${i}`,
  payload: Buffer.from(`message ${i} `.repeat(1 + (i % 7))),
  qos: 1 as const,
  retain: false,
  properties: i % 3 === 0 ? { userProperties: { i: String(i) } } : undefined,
  origin: "writer",
  receivedAt: 1_700_000_000_000 + i
})
const inboundId = (i: number) => (i % 65535) + 1

const program = Effect.gen(function* () {
  const layer = layerFile({ location, durable: mode === "durable", autosaveInterval: 1, compactAfterBytes: 128 * 1024 })
  const store = Context.get(yield* Layer.build(layer), FilePersistence)
  const snap = yield* store.load()
  const queue = snap.sessions.find((s) => s.clientId === "c")?.queue ?? []
  let next = queue.length === 0 ? 0 : Number(queue[queue.length - 1].message.topic.slice(2)) + 1
  process.stdout.write(`ready ${next}\n`)
  const w = store.writer
  yield* Effect.async<never>(() => {
    const step = () => {
      for (let k = 0; k < PER_TURN; k++) {
        const i = next++
        const m = message(i)
        w.outboundQueue("c", { message: m, qos: 1, retain: false, subscriptionIds: i % 2 === 0 ? [7] : undefined })
        w.inboundQos2Add("c", inboundId(i))
        if (i >= WINDOW) {
          w.outboundDequeue("c", 0)
          w.inboundQos2Release("c", inboundId(i - WINDOW))
        }
        if (i % 100 === 0) w.retainedSet({ ...m, topic: "r", retain: true })
      }
      const last = next - 1
      w.whenDurable(() => process.stdout.write(`ack ${last}\n`))
      setImmediate(step)
    }
    step()
  })
})

Effect.runPromise(Effect.scoped(program)).catch((e) => {
  process.stderr.write(`writer failed: ${e}\n`)
  process.exit(2)
})
