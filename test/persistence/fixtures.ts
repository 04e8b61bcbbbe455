/**
 * Shared test helpers: messages, sessions, running a store "process" (one
 * build of its layer) and reopening it, and a naive model of the store.
 */
import { Context, Effect, Layer } from "effect"
import {
  Persistence,
  type PersistenceService,
  type StoreError,
  type StoredDelivery,
  type StoredMessage,
  type StoredSession,
  type StoredSessionMeta,
  type StoredSharedGroup,
  type StoreSnapshot,
  type SubscriptionOptions
} from "../../src/persistence/Persistence.js"

export type StoreLayer = Layer.Layer<Persistence, StoreError>

/** One lifetime of the store: build the layer, run `f`, close it (compaction on close, files closed). */
export const withStore = <A, E>(
  layer: StoreLayer,
  f: (store: PersistenceService) => Effect.Effect<A, E>
): Effect.Effect<A, E | StoreError> =>
  Effect.scoped(Effect.flatMap(Layer.build(layer), (ctx) => f(Context.get(ctx, Persistence))))

/** Open, load, close. */
export const loadOnce = (layer: StoreLayer): Effect.Effect<StoreSnapshot, StoreError> => withStore(layer, (s) => s.load())

/** Wait (real time, bounded) until `whenDurable` fires. */
export const durable = (store: PersistenceService, timeoutMs = 10_000): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.die(new Error(`whenDurable did not fire within ${timeoutMs} ms`))), timeoutMs)
    store.writer.whenDurable(() => {
      clearTimeout(timer)
      resume(Effect.void)
    })
  })

export const msg = (topic: string, payload: string | Buffer, extra: Partial<StoredMessage> = {}): StoredMessage => ({
  topic,
  payload: typeof payload === "string" ? Buffer.from(payload) : payload,
  qos: 1,
  retain: false,
  properties: undefined,
  origin: "publisher",
  receivedAt: 1_700_000_000_000,
  ...extra
})

export const delivery = (
  message: StoredMessage,
  qos: 0 | 1 | 2 = message.qos,
  subscriptionIds: ReadonlyArray<number> | undefined = undefined,
  retain = false,
  shared: StoredSharedGroup | undefined = undefined
): StoredDelivery => (shared === undefined ? { message, qos, retain, subscriptionIds } : { message, qos, retain, subscriptionIds, shared })

export const sub = (qos: 0 | 1 | 2, extra: Partial<SubscriptionOptions> = {}): SubscriptionOptions => ({
  qos,
  noLocal: false,
  retainAsPublished: false,
  retainHandling: 0,
  subscriptionId: undefined,
  ...extra
})

export const meta = (clientId: string, extra: Partial<StoredSessionMeta> = {}): StoredSessionMeta => ({
  clientId,
  expiryInterval: 3600,
  disconnectedAt: undefined,
  will: undefined,
  ...extra
})

export const fullProperties = {
  payloadFormatIndicator: true,
  messageExpiryInterval: 120,
  responseTopic: "reply/here",
  correlationData: Buffer.from([0, 1, 2, 255]),
  userProperties: { a: "1", "multi value": ["x", "y", ""], ["__proto__"]: "not a prototype", "ü": "ñ" },
  contentType: "application/json"
}

export const sessionOf = (snap: StoreSnapshot, clientId: string): StoredSession | undefined =>
  snap.sessions.find((s) => s.clientId === clientId)

// ---------------------------------------------------------------------------
// A naive model of the store (arrays and maps, no reference counting), the
// oracle of the property tests: written from the StoreWriter documentation.

interface ModelSession {
  meta: StoredSessionMeta
  subscriptions: Map<string, SubscriptionOptions>
  inflight: Array<{ messageId: number; d: StoredDelivery; state: "await-puback" | "await-pubrec" | "await-pubcomp" }>
  queue: Array<StoredDelivery>
  inbound: Array<number>
}

export class Model {
  readonly retained = new Map<string, StoredMessage>()
  readonly sessions = new Map<string, ModelSession>()

  private session(clientId: string): ModelSession {
    let s = this.sessions.get(clientId)
    if (s === undefined) {
      s = {
        meta: { clientId, expiryInterval: 0, disconnectedAt: undefined, will: undefined },
        subscriptions: new Map(),
        inflight: [],
        queue: [],
        inbound: []
      }
      this.sessions.set(clientId, s)
    }
    return s
  }

  retainedSet(m: StoredMessage): void {
    if (m.payload.length === 0) this.retained.delete(m.topic)
    else this.retained.set(m.topic, m)
  }
  sessionUpsert(meta: StoredSessionMeta): void {
    this.session(meta.clientId).meta = meta
  }
  sessionDelete(clientId: string): void {
    this.sessions.delete(clientId)
  }
  subscriptionSet(clientId: string, filter: string, o: SubscriptionOptions): void {
    this.session(clientId).subscriptions.set(filter, o)
  }
  subscriptionDelete(clientId: string, filter: string): void {
    this.sessions.get(clientId)?.subscriptions.delete(filter)
  }
  outboundQueue(clientId: string, d: StoredDelivery): void {
    this.session(clientId).queue.push(d)
  }
  outboundSend(clientId: string, messageId: number, d: StoredDelivery): void {
    if (d.qos === 0 || messageId < 1 || messageId > 65535) return
    const s = this.session(clientId)
    s.inflight = s.inflight.filter((e) => e.messageId !== messageId)
    s.inflight.push({ messageId, d, state: d.qos === 1 ? "await-puback" : "await-pubrec" })
  }
  outboundDequeue(clientId: string, messageId: number): void {
    const s = this.sessions.get(clientId)
    if (s === undefined || s.queue.length === 0) return
    const d = s.queue.shift()!
    if (messageId === 0 || d.qos === 0) return
    s.inflight = s.inflight.filter((e) => e.messageId !== messageId)
    s.inflight.push({ messageId, d, state: d.qos === 1 ? "await-puback" : "await-pubrec" })
  }
  outboundPubrec(clientId: string, messageId: number): void {
    const e = this.sessions.get(clientId)?.inflight.find((x) => x.messageId === messageId)
    if (e !== undefined && e.state === "await-pubrec") e.state = "await-pubcomp"
  }
  outboundDone(clientId: string, messageId: number): void {
    const s = this.sessions.get(clientId)
    if (s !== undefined) s.inflight = s.inflight.filter((e) => e.messageId !== messageId)
  }
  outboundClear(clientId: string): void {
    const s = this.sessions.get(clientId)
    if (s !== undefined) {
      s.inflight = []
      s.queue = []
    }
  }
  inboundQos2Add(clientId: string, messageId: number): void {
    if (messageId < 1 || messageId > 65535) return
    const s = this.session(clientId)
    if (!s.inbound.includes(messageId)) s.inbound.push(messageId)
  }
  inboundQos2Release(clientId: string, messageId: number): void {
    const s = this.sessions.get(clientId)
    if (s !== undefined) s.inbound = s.inbound.filter((id) => id !== messageId)
  }

  snapshot(): StoreSnapshot {
    return {
      retained: [...this.retained.values()],
      sessions: [...this.sessions.values()].map((s) => ({
        ...s.meta,
        subscriptions: new Map(s.subscriptions),
        inflight: s.inflight.map((e) => ({ ...e.d, messageId: e.messageId, state: e.state })),
        queue: [...s.queue],
        inboundQos2: [...s.inbound]
      }))
    }
  }
}

/** A snapshot in a form `toEqual` compares independently of object identity and Buffer subclassing. */
export const plain = (snap: StoreSnapshot): unknown => {
  const m = (x: StoredMessage) => ({ ...x, payload: Buffer.from(x.payload).toString("hex"), properties: props(x.properties) })
  const props = (p: StoredMessage["properties"]) =>
    p === undefined
      ? undefined
      : { ...p, correlationData: p.correlationData === undefined ? undefined : Buffer.from(p.correlationData).toString("hex") }
  return {
    retained: snap.retained.map(m).sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0)),
    sessions: [...snap.sessions]
      .sort((a, b) => (a.clientId < b.clientId ? -1 : 1))
      .map((s) => ({
        ...s,
        will: s.will === undefined ? undefined : { ...s.will, payload: s.will.payload.toString("hex"), properties: props(s.will.properties) },
        subscriptions: [...s.subscriptions].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
        inflight: s.inflight.map((e) => ({ ...e, message: m(e.message) })),
        queue: s.queue.map((e) => ({ ...e, message: m(e.message) }))
      }))
  }
}

/** Wait on the real clock (the store writes through the file system, outside TestClock). */
export const sleepReal = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

/** Poll `predicate` every 10 ms of real time; the test dies naming `what` after `timeoutMs`. */
export const until = (what: string, predicate: () => boolean, timeoutMs = 10_000) =>
  Effect.gen(function* () {
    const started = Date.now()
    while (!predicate()) {
      if (Date.now() - started > timeoutMs) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* sleepReal(10)
    }
  })
