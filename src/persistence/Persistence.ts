/**
 * The persistence store: what a restart must give back — retained messages,
 * persistent sessions (subscriptions, queued and in-flight deliveries in both
 * directions, wills, expiry times).
 *
 * The broker's hot path is plain code, so the store is written through a
 * synchronous `StoreWriter` whose calls mirror the session state machine
 * (OutboundFlow / InboundQos2): each call updates the store's own in-memory
 * image and, in the file store, appends one record to a batch that is written
 * at the end of the event-loop turn. No Effect, promise or system call per
 * call. A message queued by many sessions is stored once and
 * referenced (Mosquitto's `msg_store`): the store recognises it by object
 * identity.
 *
 * Two implementations pass one conformance suite (test/persistence/):
 * `layerMemory` here, and the append-only log with snapshots in
 * `FilePersistence.ts`.
 */
import { Context, Effect, Layer, Schema } from "effect"
import type { SubscriptionOptions } from "../routing/Router.js"
import type { MessageProperties, QoS } from "../session/Message.js"
import { isPacketId } from "../session/PacketIdMap.js"
import { StoreState } from "./internal/state.js"

export type { MessageProperties, QoS, SubscriptionOptions }

/** The in-flight state of an outbound QoS 1 / 2 delivery (as in OutboundFlow). */
export type OutState = "await-puback" | "await-pubrec" | "await-pubcomp"

/** A message as stored: `session/Message.ts`'s `Message` is one. */
export interface StoredMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: QoS
  readonly retain: boolean
  /** v5 properties; `messageExpiryInterval` with `receivedAt` is the message's expiry */
  readonly properties: MessageProperties | undefined
  /** client id of the publisher (v5 No Local) */
  readonly origin: string
  /** ms since the epoch at which the broker received it */
  readonly receivedAt: number
}

/** The will of a session, kept while it has not been published. */
export interface StoredWill {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: QoS
  readonly retain: boolean
  readonly properties: MessageProperties | undefined
  /** v5 Will Delay Interval, seconds (0: none) */
  readonly delayInterval: number
}

export interface StoredSessionMeta {
  readonly clientId: string
  /** seconds the session outlives its connection; 0xFFFFFFFF: never expires */
  readonly expiryInterval: number
  /** ms since the epoch the client went offline; undefined: connected when written */
  readonly disconnectedAt: number | undefined
  readonly will: StoredWill | undefined
}

/** The shared subscription group `$share/group/filter` a delivery came through [MQTT-4.8.2]. */
export interface StoredSharedGroup {
  readonly group: string
  readonly filter: string
}

/** One delivery to a session: the shape of OutboundFlow's `Outgoing`. */
export interface StoredDelivery<M = StoredMessage> {
  readonly message: M
  /** the delivery's QoS: min(published, granted) */
  readonly qos: QoS
  /** the retain flag to send */
  readonly retain: boolean
  readonly subscriptionIds: ReadonlyArray<number> | undefined
  /** set when it came through a shared subscription (it may move to another member) */
  readonly shared?: StoredSharedGroup | undefined
}

/** An in-flight delivery: the shape of OutboundFlow's `InflightEntry`. */
export interface StoredInflight<M = StoredMessage> extends StoredDelivery<M> {
  /** the packet identifier */
  readonly messageId: number
  readonly state: OutState
}

export interface StoredSession<M = StoredMessage> extends StoredSessionMeta {
  readonly subscriptions: ReadonlyMap<string, SubscriptionOptions>
  /** in the order they were sent (the order of resending [MQTT-4.4.0-1]) */
  readonly inflight: ReadonlyArray<StoredInflight<M>>
  /** waiting for a window slot, oldest first [MQTT-4.6.0-6] */
  readonly queue: ReadonlyArray<StoredDelivery<M>>
  /** inbound QoS 2 packet ids whose PUBREL has not arrived [MQTT-4.3.3-9] */
  readonly inboundQos2: ReadonlyArray<number>
}

const BRIDGE_KEY_PREFIX = "\u0000bridge/"

/**
 * A bridge's local session (its queue, in-flight messages and inbound QoS 2
 * ids, kept when its `local_cleansession` is false, as Mosquitto keeps the
 * bridge's client in its database) is stored under this key. It starts with
 * U+0000, which no client id can hold [MQTT-1.5.4-2], so a client never
 * shares it; the broker hands such sessions to the bridges, not to clients.
 */
export const bridgeSessionKey = (bridgeName: string): string => BRIDGE_KEY_PREFIX + bridgeName

/** The bridge name of a `bridgeSessionKey`, or undefined for a client's session. */
export const bridgeNameOfSessionKey = (key: string): string | undefined =>
  key.startsWith(BRIDGE_KEY_PREFIX) ? key.slice(BRIDGE_KEY_PREFIX.length) : undefined

/** Everything the store holds; a message referenced several times is one object. */
export interface StoreSnapshot<M = StoredMessage> {
  readonly retained: ReadonlyArray<M>
  readonly sessions: ReadonlyArray<StoredSession<M>>
}

/**
 * The hot path's side of the store: synchronous, cheap, never throws. Calls
 * that would change nothing (an unknown packet id, an empty queue) write
 * nothing. A call naming a client id the store does not know creates its
 * session with default metadata (expiry 0, connected, no will), except the
 * deletes and acknowledgements, which are no-ops then.
 *
 * Messages are recognised by object identity: pass the same object for every
 * delivery of one publish and it is stored once. A message must not be
 * mutated once handed over (its payload must be its own copy, see
 * `Message.ownPayload`).
 */
export interface StoreWriter {
  /** true when `whenDurable` waits for the disk (the file store's durable mode) */
  readonly durable: boolean
  /** Store or replace the retained message of `message.topic`; an empty payload clears it [MQTT-3.3.1-10]. */
  retainedSet(message: StoredMessage): void
  /** Create or replace a session's metadata (expiry, offline time, will). */
  sessionUpsert(meta: StoredSessionMeta): void
  /** The session ends: its subscriptions, deliveries and inbound ids go with it. */
  sessionDelete(clientId: string): void
  subscriptionSet(clientId: string, filter: string, options: SubscriptionOptions): void
  subscriptionDelete(clientId: string, filter: string): void
  /** A delivery joins the tail of the session's queue (OutboundFlow.offer → "queued"). */
  outboundQueue(clientId: string, delivery: StoredDelivery): void
  /** A QoS 1 / 2 delivery goes in flight at once with packet id `messageId` (offer → "sent"); QoS 0 is never in flight. */
  outboundSend(clientId: string, messageId: number, delivery: StoredDelivery): void
  /**
   * The head of the queue leaves it (OutboundFlow.pump): in flight as `messageId`
   * for QoS 1 / 2; pass 0 when it is gone instead (a QoS 0 delivery sent, or one
   * discarded as expired [MQTT-3.3.2-5]).
   */
  outboundDequeue(clientId: string, messageId: number): void
  /** PUBREC received: the delivery now awaits PUBCOMP [MQTT-4.3.3-5]. */
  outboundPubrec(clientId: string, messageId: number): void
  /** PUBACK / PUBCOMP / a failed PUBREC: the delivery is done. */
  outboundDone(clientId: string, messageId: number): void
  /** OutboundFlow.clear: every queued and in-flight delivery is dropped. */
  outboundClear(clientId: string): void
  /** An inbound QoS 2 PUBLISH was received and delivered; its PUBREL is awaited. */
  inboundQos2Add(clientId: string, messageId: number): void
  /** PUBREL received for an inbound QoS 2 id. */
  inboundQos2Release(clientId: string, messageId: number): void
  /**
   * Call `then` once everything written so far is on disk (group commit: one
   * fsync covers every record of a batch). Immediately, synchronously, when
   * `durable` is false.
   */
  whenDurable(then: () => void): void
  /**
   * Hand everything written so far to the operating system now. The broker
   * calls it before it writes to any socket, so no client is ever told more
   * than the store holds after a crash of the process (a kill -9): no
   * acknowledged message is lost and no QoS 2 message is routed twice. The
   * file store also does it at the end of every event-loop turn.
   */
  handOff(): void
}

export interface StoreCounts {
  /** distinct stored messages (one per publish, however many references) */
  readonly messages: number
  readonly retained: number
  readonly sessions: number
}

export interface PersistenceService {
  readonly writer: StoreWriter
  /**
   * Everything the store holds, to rebuild the broker at start. `revive` turns
   * each stored message into the broker's object, once per message (shared by
   * every reference); the store then recognises the revived objects, so later
   * writer calls with them store nothing new. Without `revive` the stored
   * objects are returned (and recognised) as they are.
   */
  readonly load: {
    (): Effect.Effect<StoreSnapshot, StoreError>
    <M extends StoredMessage>(revive: (message: StoredMessage) => M): Effect.Effect<StoreSnapshot<M>, StoreError>
  }
  /** Rewrite the store as one snapshot (the file store does it on `autosave_interval` and on close). */
  readonly compact: Effect.Effect<void, StoreError>
  /** Write and fsync everything written so far. */
  readonly sync: Effect.Effect<void, StoreError>
  readonly counts: () => StoreCounts
}

/**
 * A store failure. At open: `corrupt` (a bad checksum or an impossible
 * record), `truncated` (a file ends inside a record), `version` (a format this
 * Midge cannot read, e.g. a Mosquitto database), `io`. `recovered` counts the
 * records read before the fault.
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  reason: Schema.Literal("corrupt", "truncated", "io", "version"),
  message: Schema.String,
  path: Schema.optional(Schema.String),
  /** byte offset of the fault in `path` */
  offset: Schema.optional(Schema.Number),
  /** records read (and kept) before the fault */
  recovered: Schema.optional(Schema.Number)
}) {}

export class Persistence extends Context.Tag("midge/Persistence")<Persistence, PersistenceService>() {}

/**
 * Where a memory store keeps its data: pass the same backing to several
 * `layerMemory` builds to simulate restarts (tests, embedding).
 */
export interface MemoryBacking {
  readonly _tag: "MemoryBacking"
  /** @internal */
  readonly state: StoreState
}

export const memoryBacking = (): MemoryBacking => ({ _tag: "MemoryBacking", state: new StoreState() })

/** The writer over a store image, without a disk: the memory store. */
class MemoryWriter implements StoreWriter {
  readonly durable = false
  constructor(private readonly s: StoreState) {}
  retainedSet(message: StoredMessage): void {
    if (message.payload.length === 0) this.s.retainedDelete(message.topic)
    else this.s.retainedSet(message.topic, this.s.entryOf(message))
  }
  sessionUpsert(meta: StoredSessionMeta): void {
    this.s.sessionUpsert(meta)
  }
  sessionDelete(clientId: string): void {
    this.s.sessionDelete(clientId)
  }
  subscriptionSet(clientId: string, filter: string, options: SubscriptionOptions): void {
    this.s.subscriptionSet(clientId, filter, options)
  }
  subscriptionDelete(clientId: string, filter: string): void {
    this.s.subscriptionDelete(clientId, filter)
  }
  outboundQueue(clientId: string, d: StoredDelivery): void {
    this.s.outboundQueue(clientId, this.s.entryOf(d.message), d.qos, d.retain, d.subscriptionIds, d.shared)
  }
  outboundSend(clientId: string, messageId: number, d: StoredDelivery): void {
    if (d.qos === 0 || !isPacketId(messageId)) return
    const state: OutState = d.qos === 1 ? "await-puback" : "await-pubrec"
    this.s.outboundSend(clientId, messageId, this.s.entryOf(d.message), d.qos, d.retain, d.subscriptionIds, state, d.shared)
  }
  outboundDequeue(clientId: string, messageId: number): void {
    this.s.outboundDequeue(clientId, messageId)
  }
  outboundPubrec(clientId: string, messageId: number): void {
    this.s.outboundPubrec(clientId, messageId)
  }
  outboundDone(clientId: string, messageId: number): void {
    this.s.outboundDone(clientId, messageId)
  }
  outboundClear(clientId: string): void {
    this.s.outboundClear(clientId)
  }
  inboundQos2Add(clientId: string, messageId: number): void {
    this.s.inboundQos2Add(clientId, messageId)
  }
  inboundQos2Release(clientId: string, messageId: number): void {
    this.s.inboundQos2Release(clientId, messageId)
  }
  whenDurable(then: () => void): void {
    then()
  }
  handOff(): void {}
}

/** A memory store over `backing` (a fresh one by default): nothing survives the process. */
export const makeMemory = (backing: MemoryBacking = memoryBacking()): PersistenceService => {
  const state = backing.state
  return {
    writer: new MemoryWriter(state),
    load: ((revive?: (m: StoredMessage) => StoredMessage) => Effect.sync(() => state.snapshot(revive))) as PersistenceService["load"],
    compact: Effect.void,
    sync: Effect.void,
    counts: () => state.counts()
  }
}

export const layerMemory = (backing?: MemoryBacking): Layer.Layer<Persistence> =>
  Layer.sync(Persistence, () => makeMemory(backing))
