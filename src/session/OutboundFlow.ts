/**
 * The outbound QoS state machine of one session: the in-flight window
 * (`max_inflight_messages`), the queue behind it (`max_queued_messages`,
 * `queue_qos0_messages`), packet identifiers, and the QoS 1 / QoS 2 handshakes
 * towards the subscriber.
 *
 * Pure: no sockets, no Effect, no clock. What must go on the wire is handed to
 * an `OutboundSink`; the caller decides whether the session is online.
 *
 *   QoS 1:  PUBLISH ──► (await PUBACK) ──► done
 *   QoS 2:  PUBLISH ──► (await PUBREC) ──► PUBREL ──► (await PUBCOMP) ──► done
 *
 * Packet ids are never reused while in flight [MQTT-2.3.1-2]; messages leave in
 * the order they were offered, per QoS > 0 [MQTT-4.6.0-6]; on resume every
 * unacknowledged PUBLISH is resent with DUP set and every PUBREL resent
 * [MQTT-4.4.0-1].
 */
import type { SharedGroup } from "../routing/Router.js"
import { settleFields } from "../runtime/fieldShape.js"
import type { Message, QoS } from "./Message.js"
import { PacketIdMap } from "./PacketIdMap.js"
import { PacketIdSet } from "./PacketIdSet.js"

export type OutState = "await-puback" | "await-pubrec" | "await-pubcomp"

export interface Outgoing {
  readonly message: Message
  /** the QoS of this delivery: min(published, granted) */
  readonly qos: QoS
  /** the retain flag to send */
  readonly retain: boolean
  /** v5 subscription identifiers to attach (empty: none) */
  readonly subscriptionIds: ReadonlyArray<number> | undefined
  /** came through this shared subscription group: may move to another member */
  readonly shared?: SharedGroup | undefined
}

export interface InflightEntry extends Outgoing {
  messageId: number
  state: OutState
}

/**
 * A delivery shaped as an in-flight entry from the start (id 0 until sent):
 * `send` turns it into the entry itself, so that a QoS 1 / 2 delivery costs
 * one object, not two.
 */
export const delivery = (
  message: Message,
  qos: QoS,
  retain: boolean,
  subscriptionIds: ReadonlyArray<number> | undefined,
  shared: SharedGroup | undefined
): InflightEntry => ({ message, qos, retain, subscriptionIds, shared, messageId: 0, state: "await-puback" })

export interface OutboundSink {
  publish(out: Outgoing, messageId: number, dup: boolean): void
  pubrel(messageId: number): void
  /**
   * Asked before onward delivery starts: false discards the message for this
   * subscriber (v5: expired [MQTT-3.3.2-5], or larger than the client's Maximum
   * Packet Size [MQTT-3.1.2-25]). Absent: everything is accepted.
   */
  accepts?(out: Outgoing): boolean
}

export type OfferResult = "sent" | "queued" | "dropped"

/**
 * What an acknowledgement from the client did: `done` (it moved its message's handshake on),
 * `unknown` (no message is in flight with that id: a late duplicate, or a client's mistake), or
 * `wrong` (the id is in flight, at a QoS or step that does not take this acknowledgement: a PUBACK
 * for a QoS 2 message, a PUBREC or PUBCOMP for a QoS 1 one, a PUBCOMP before the PUBREC). `wrong`
 * changes nothing; the connection treats it as a protocol violation, as Mosquitto's
 * db__message_delete_outgoing / db__message_update_outgoing do.
 */
export type AckOutcome = "done" | "unknown" | "wrong"

/** an acknowledgement that ends `state`, for the message in flight with its id (if any) */
const outcomeOf = (entry: { readonly state: OutState } | undefined, state: OutState): AckOutcome =>
  entry === undefined ? "unknown" : entry.state === state ? "done" : "wrong"

/** Told of every change of the flow's state (the persistence store listens here). */
export interface FlowObserver {
  queued(out: Outgoing): void
  sent(messageId: number, out: Outgoing): void
  /** the head of the queue left it: in flight as `messageId`, or gone (0) */
  dequeued(messageId: number): void
  pubrec(messageId: number): void
  done(messageId: number): void
  cleared(): void
}

export interface FlowLimits {
  /** `max_inflight_messages`; 0 = unlimited */
  readonly maxInflight: number
  /** `max_queued_messages`; 0 = unlimited */
  readonly maxQueued: number
  readonly queueQos0: boolean
  /** `max_inflight_bytes`: payload bytes in flight; 0 = unlimited */
  readonly maxInflightBytes?: number
  /** `max_queued_bytes`: payload bytes queued; 0 = unlimited */
  readonly maxQueuedBytes?: number
}

/** what `inflight` reads as before the first send: one shared empty Map */
const noInflight: ReadonlyMap<number, InflightEntry> = new Map()
/** what `queue` reads as before the first message queued: one shared empty array, never written */
const noQueue: ReadonlyArray<Outgoing> = Object.freeze([])

/** the first flow has had its late-changing fields settled (runtime/fieldShape.ts) */
let settled = false

export class OutboundFlow {
  // allocated on the first send (not on every connection); dropped by `clear`. Not a `Map`: see PacketIdMap
  private inflightMap: PacketIdMap<InflightEntry> | undefined = undefined
  // waiting for a free slot (or for the client to come back); allocated on the first message queued
  private queueArr: Array<Outgoing> | undefined = undefined
  private queueHead = 0
  private lastId = 0
  /** payload bytes in flight / queued, for max_inflight_bytes / max_queued_bytes */
  inflightBytes = 0
  queuedBytes = 0
  /** messages dropped: the queue was full, or the sink did not accept them */
  dropped = 0
  /** of those, dropped because the queue was full (`max_queued_messages` / `max_queued_bytes`) */
  overflowed = 0
  /** persistence: told of every change */
  observer: FlowObserver | undefined = undefined

  /** in flight, in the order they were sent (Map keeps insertion order) */
  get inflight(): ReadonlyMap<number, InflightEntry> {
    return this.inflightMap ?? noInflight
  }

  /** waiting for a free slot (or for the client to come back), from `queued` entries before the end; the head's slots read `undefined` */
  get queue(): ReadonlyArray<Outgoing> {
    return this.queueArr ?? noQueue
  }

  private slots(): PacketIdMap<InflightEntry> {
    return (this.inflightMap ??= new PacketIdMap())
  }

  /** Rebuild from a store at start: in-flight entries in their order, the queue, and packet ids after the highest in use. */
  restore(inflight: ReadonlyArray<InflightEntry>, queue: ReadonlyArray<Outgoing>): void {
    for (const e of inflight) {
      this.slots().set(e.messageId, { ...e })
      this.inflightBytes += e.message.payload.length
      if (e.messageId > this.lastId) this.lastId = e.messageId
    }
    for (const q of queue) {
      ;(this.queueArr ??= []).push(q)
      this.queuedBytes += q.message.payload.length
    }
  }

  constructor(public limits: FlowLimits) {
    if (!settled) {
      settled = true
      // emptied by `clear` when the session ends, long after the connect path is compiled
      settleFields(this, ["limits", "inflightMap", "queueArr", "queueHead", "lastId", "inflightBytes", "queuedBytes", "dropped", "overflowed", "observer"])
    }
  }

  get queued(): number {
    return this.queue.length - this.queueHead
  }

  private windowOpen(): boolean {
    const { maxInflight, maxInflightBytes } = this.limits
    return (
      (maxInflight === 0 || this.inflightMap === undefined || this.inflightMap.size < maxInflight) &&
      (maxInflightBytes === undefined || maxInflightBytes === 0 || this.inflightBytes < maxInflightBytes)
    )
  }

  private queueFull(): boolean {
    const { maxQueued, maxQueuedBytes } = this.limits
    return (
      (maxQueued !== 0 && this.queued >= maxQueued) ||
      (maxQueuedBytes !== undefined && maxQueuedBytes !== 0 && this.queuedBytes >= maxQueuedBytes)
    )
  }

  private enqueue(out: Outgoing): void {
    ;(this.queueArr ??= []).push(out)
    this.queuedBytes += out.message.payload.length
    this.observer?.queued(out)
  }

  /**
   * Offer a delivery. Online: QoS 0 goes at once; QoS 1 / 2 go at once while the
   * window is open and nothing older waits, else they queue. Offline: QoS 1 / 2
   * queue, QoS 0 only with `queue_qos0_messages`. A full queue drops.
   */
  offer(out: Outgoing, online: boolean, sink: OutboundSink): OfferResult {
    if (online && sink.accepts !== undefined && !sink.accepts(out)) {
      this.dropped++
      return "dropped"
    }
    if (out.qos === 0) {
      if (online) {
        sink.publish(out, 0, false)
        return "sent"
      }
      if (!this.limits.queueQos0) {
        this.dropped++
        return "dropped"
      }
      if (this.queueFull()) {
        this.dropped++
        this.overflowed++
        return "dropped"
      }
      this.enqueue(out)
      return "queued"
    }
    if (online && this.queued === 0 && this.windowOpen()) {
      const id = this.send(out, sink)
      this.observer?.sent(id, out)
      return "sent"
    }
    if (this.queueFull()) {
      this.dropped++
      this.overflowed++
      return "dropped"
    }
    this.enqueue(out)
    return "queued"
  }

  private nextId(slots: PacketIdMap<InflightEntry>): number {
    // ids in flight are skipped; the window is far below 65535 so this ends
    let id = this.lastId
    do {
      id = id === 65535 ? 1 : id + 1
    } while (slots.has(id))
    this.lastId = id
    return id
  }

  private send(out: Outgoing, sink: OutboundSink): number {
    const slots = this.slots()
    const messageId = this.nextId(slots)
    this.inflightBytes += out.message.payload.length
    // the delivery becomes its in-flight entry (see `delivery`); one already sent before (a caller
    // offering the same object twice) is copied, so that no entry changes under its packet id
    const entry: InflightEntry = (out as Partial<InflightEntry>).messageId ? { ...(out as InflightEntry) } : (out as InflightEntry)
    entry.messageId = messageId
    entry.state = out.qos === 1 ? "await-puback" : "await-pubrec"
    slots.set(messageId, entry)
    sink.publish(entry, messageId, false)
    return messageId
  }

  /** Move queued messages into the window (call when online). */
  pump(sink: OutboundSink): void {
    const queue = this.queueArr
    if (queue === undefined) return
    while (this.queueHead < queue.length) {
      const next = queue[this.queueHead]
      if (next.qos > 0 && !this.windowOpen()) break
      queue[this.queueHead] = undefined as unknown as Outgoing
      this.queueHead++
      this.queuedBytes -= next.message.payload.length
      if (sink.accepts !== undefined && !sink.accepts(next)) {
        this.dropped++
        this.observer?.dequeued(0)
      } else if (next.qos === 0) {
        sink.publish(next, 0, false)
        this.observer?.dequeued(0)
      } else {
        // (not `observer?.dequeued(this.send(...))`: optional chaining would skip the send itself)
        const id = this.send(next, sink)
        this.observer?.dequeued(id)
      }
    }
    if (this.queueHead === queue.length) {
      // (a store to an array's length is a runtime call in V8, ~27 ns even on an empty array: only when needed)
      if (queue.length !== 0) queue.length = 0
      this.queueHead = 0
    } else if (this.queueHead > 1024 && this.queueHead * 2 > queue.length) {
      queue.splice(0, this.queueHead)
      this.queueHead = 0
    }
  }

  /** Where the handshake of the message in flight with this id is; undefined: none is. */
  stateOf(messageId: number): OutState | undefined {
    return this.inflightMap?.get(messageId)?.state
  }

  /**
   * What the acknowledgement that ends `state` would do for `messageId` now, without doing it (the
   * connection checks before the cluster's record of the flow follows, then acknowledges).
   */
  ackOutcome(messageId: number, state: OutState): AckOutcome {
    return outcomeOf(this.inflightMap?.get(messageId), state)
  }

  /** PUBACK received: a QoS 1 message is done. */
  onPuback(messageId: number, sink: OutboundSink, online: boolean): AckOutcome {
    return this.complete(messageId, "await-puback", sink, online)
  }

  /**
   * PUBREC received: answer PUBREL [MQTT-4.3.3-5]. A repeated PUBREC for a message
   * already released gets its PUBREL again.
   */
  onPubrec(messageId: number, sink: OutboundSink): AckOutcome {
    const entry = this.inflightMap?.get(messageId)
    if (entry === undefined) return "unknown"
    if (entry.state === "await-puback") return "wrong"
    if (entry.state !== "await-pubcomp") this.observer?.pubrec(messageId)
    entry.state = "await-pubcomp"
    sink.pubrel(messageId)
    return "done"
  }

  /** A PUBREC carrying a v5 failure reason code (>= 0x80) ends the flow [MQTT-4.3.3-?]. */
  onPubrecFailure(messageId: number, sink: OutboundSink, online: boolean): AckOutcome {
    return this.complete(messageId, "await-pubrec", sink, online)
  }

  /** PUBCOMP received: a QoS 2 message is done. */
  onPubcomp(messageId: number, sink: OutboundSink, online: boolean): AckOutcome {
    return this.complete(messageId, "await-pubcomp", sink, online)
  }

  /** The flow of `messageId` ends if it is in `state`: its slot is freed and the queue moves up. */
  private complete(messageId: number, state: OutState, sink: OutboundSink, online: boolean): AckOutcome {
    const entry = this.inflightMap?.get(messageId)
    const outcome = outcomeOf(entry, state)
    if (outcome !== "done") return outcome
    this.inflightMap!.delete(messageId)
    this.inflightBytes -= entry!.message.payload.length
    this.observer?.done(messageId)
    if (online) this.pump(sink)
    return "done"
  }

  /**
   * The client is (back) online: resend what is in flight — PUBLISH with DUP for
   * those not yet acknowledged, PUBREL for those awaiting PUBCOMP — in the
   * original order [MQTT-4.4.0-1], then fill the window from the queue.
   */
  resume(sink: OutboundSink): void {
    for (const entry of this.inflight.values()) {
      if (entry.state === "await-pubcomp") sink.pubrel(entry.messageId)
      else sink.publish(entry, entry.messageId, true)
    }
    this.pump(sink)
  }

  /** The session goes offline: QoS 0 messages are not kept unless queued by option. */
  clear(): void {
    if (this.inflight.size > 0 || this.queued > 0) this.observer?.cleared()
    this.inflightMap = undefined
    this.queueArr = undefined
    this.queueHead = 0
    this.inflightBytes = 0
    this.queuedBytes = 0
  }
}

/**
 * The inbound QoS 2 state of one session: packet ids whose PUBLISH was received
 * (and delivered) but whose PUBREL has not arrived. A resent PUBLISH with such an
 * id is acknowledged again but not delivered twice [MQTT-4.3.3-9]. Ids are
 * 1..65535: the connection refuses a QoS 2 PUBLISH with id 0 before it gets here.
 */
export class InboundQos2 {
  // not a Set: added and released in turn for as long as the session lives (PacketIdSet)
  readonly awaitingRel = new PacketIdSet()

  /** true when the message is new and must be delivered */
  onPublish(messageId: number): boolean {
    if (this.awaitingRel.has(messageId)) return false
    this.awaitingRel.add(messageId)
    return true
  }

  /** true when the id was known (v5 answers 0x92 otherwise) */
  onPubrel(messageId: number): boolean {
    return this.awaitingRel.delete(messageId)
  }
}
