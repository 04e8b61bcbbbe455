/**
 * The store's image of what it holds: the memory store is this; the file store
 * keeps it to write snapshots, and rebuilds it at open by replaying records
 * through the same methods, so writing and loading cannot disagree.
 *
 * Messages are reference counted: retained slots, queued and in-flight
 * deliveries each hold one reference; a message whose count falls to 0 is
 * dropped. Every mutator returns whether anything changed, so the file store
 * writes a record only for real changes.
 */
import type { SubscriptionOptions } from "../../routing/Router.js"
import type { QoS } from "../../session/Message.js"
import type {
  OutState,
  StoreCounts,
  StoredInflight,
  StoredDelivery,
  StoredMessage,
  StoredSession,
  StoredSessionMeta,
  StoreSnapshot
} from "../Persistence.js"

export interface MessageEntry {
  message: StoredMessage
  refs: number
}

export interface OutEntry {
  readonly ref: number
  readonly qos: QoS
  readonly retain: boolean
  readonly subscriptionIds: ReadonlyArray<number> | undefined
  messageId: number
  state: OutState
}

export class SessionState {
  readonly subscriptions = new Map<string, SubscriptionOptions>()
  /** in the order sent */
  readonly inflight = new Map<number, OutEntry>()
  /** queue[head..] is the live queue */
  queue: Array<OutEntry | undefined> = []
  head = 0
  readonly inbound = new Set<number>()
  constructor(public meta: StoredSessionMeta) {}

  get queued(): number {
    return this.queue.length - this.head
  }
}

const defaultMeta = (clientId: string): StoredSessionMeta => ({
  clientId,
  expiryInterval: 0,
  disconnectedAt: undefined,
  will: undefined
})

/** a packet identifier a delivery can be in flight with */
export const validMessageId = (id: number): boolean => Number.isInteger(id) && id >= 1 && id <= 65535

export class StoreState {
  readonly messages = new Map<number, MessageEntry>()
  /** live message object → its reference number */
  private identity = new WeakMap<object, number>()
  /** topic → message reference */
  readonly retained = new Map<string, number>()
  readonly sessions = new Map<string, SessionState>()
  nextRef = 1

  counts(): StoreCounts {
    return { messages: this.messages.size, retained: this.retained.size, sessions: this.sessions.size }
  }

  /** The reference of a message already held, or undefined. */
  lookup(message: object): number | undefined {
    return this.identity.get(message)
  }

  /** Hold a new message (0 references until something refers to it); returns its reference. */
  addMessage(message: StoredMessage, ref = this.nextRef): number {
    if (ref >= this.nextRef) this.nextRef = ref + 1
    this.messages.set(ref, { message, refs: 0 })
    this.identity.set(message, ref)
    return ref
  }

  /** The reference of `message`, holding it first if new. */
  refOf(message: StoredMessage): number {
    const ref = this.identity.get(message)
    return ref !== undefined ? ref : this.addMessage(message)
  }

  private retain(ref: number): void {
    const entry = this.messages.get(ref)
    if (entry !== undefined) entry.refs++
  }

  private release(ref: number): void {
    const entry = this.messages.get(ref)
    if (entry !== undefined && --entry.refs <= 0) {
      this.messages.delete(ref)
      if (this.identity.get(entry.message) === ref) this.identity.delete(entry.message)
    }
  }

  /** Drop messages nothing refers to (after a replay that stopped early). */
  sweep(): void {
    for (const [ref, entry] of this.messages) {
      if (entry.refs <= 0) {
        this.messages.delete(ref)
        if (this.identity.get(entry.message) === ref) this.identity.delete(entry.message)
      }
    }
  }

  retainedSet(topic: string, ref: number): boolean {
    const previous = this.retained.get(topic)
    if (previous === ref) return false
    this.retain(ref)
    this.retained.set(topic, ref)
    if (previous !== undefined) this.release(previous)
    return true
  }

  retainedDelete(topic: string): boolean {
    const previous = this.retained.get(topic)
    if (previous === undefined) return false
    this.retained.delete(topic)
    this.release(previous)
    return true
  }

  session(clientId: string): SessionState {
    let s = this.sessions.get(clientId)
    if (s === undefined) {
      s = new SessionState(defaultMeta(clientId))
      this.sessions.set(clientId, s)
    }
    return s
  }

  sessionUpsert(meta: StoredSessionMeta): boolean {
    const s = this.sessions.get(meta.clientId)
    if (s === undefined) this.sessions.set(meta.clientId, new SessionState(meta))
    else s.meta = meta
    return true
  }

  sessionDelete(clientId: string): boolean {
    const s = this.sessions.get(clientId)
    if (s === undefined) return false
    this.clearOutbound(s)
    this.sessions.delete(clientId)
    return true
  }

  subscriptionSet(clientId: string, filter: string, options: SubscriptionOptions): boolean {
    this.session(clientId).subscriptions.set(filter, options)
    return true
  }

  subscriptionDelete(clientId: string, filter: string): boolean {
    const s = this.sessions.get(clientId)
    return s !== undefined && s.subscriptions.delete(filter)
  }

  outboundQueue(
    clientId: string,
    ref: number,
    qos: QoS,
    retain: boolean,
    subscriptionIds: ReadonlyArray<number> | undefined
  ): boolean {
    this.retain(ref)
    this.session(clientId).queue.push({ ref, qos, retain, subscriptionIds, messageId: 0, state: "await-puback" })
    return true
  }

  outboundSend(
    clientId: string,
    messageId: number,
    ref: number,
    qos: QoS,
    retain: boolean,
    subscriptionIds: ReadonlyArray<number> | undefined,
    state: OutState
  ): boolean {
    if (qos === 0 || !validMessageId(messageId)) return false
    const s = this.session(clientId)
    this.retain(ref)
    const previous = s.inflight.get(messageId)
    if (previous !== undefined) {
      s.inflight.delete(messageId)
      this.release(previous.ref)
    }
    s.inflight.set(messageId, { ref, qos, retain, subscriptionIds, messageId, state })
    return true
  }

  outboundDequeue(clientId: string, messageId: number): boolean {
    const s = this.sessions.get(clientId)
    if (s === undefined || s.head >= s.queue.length || (messageId !== 0 && !validMessageId(messageId))) return false
    const entry = s.queue[s.head]!
    s.queue[s.head++] = undefined
    if (s.head === s.queue.length) {
      s.queue.length = 0
      s.head = 0
    } else if (s.head > 1024 && s.head * 2 > s.queue.length) {
      s.queue.splice(0, s.head)
      s.head = 0
    }
    if (messageId === 0 || entry.qos === 0) {
      this.release(entry.ref)
      return true
    }
    const previous = s.inflight.get(messageId)
    if (previous !== undefined) {
      s.inflight.delete(messageId)
      this.release(previous.ref)
    }
    entry.messageId = messageId
    entry.state = entry.qos === 1 ? "await-puback" : "await-pubrec"
    s.inflight.set(messageId, entry)
    return true
  }

  outboundPubrec(clientId: string, messageId: number): boolean {
    const entry = this.sessions.get(clientId)?.inflight.get(messageId)
    if (entry === undefined || entry.state !== "await-pubrec") return false
    entry.state = "await-pubcomp"
    return true
  }

  outboundDone(clientId: string, messageId: number): boolean {
    const s = this.sessions.get(clientId)
    const entry = s?.inflight.get(messageId)
    if (entry === undefined) return false
    s!.inflight.delete(messageId)
    this.release(entry.ref)
    return true
  }

  outboundClear(clientId: string): boolean {
    const s = this.sessions.get(clientId)
    if (s === undefined || (s.inflight.size === 0 && s.queued === 0)) return false
    this.clearOutbound(s)
    return true
  }

  private clearOutbound(s: SessionState): void {
    for (const entry of s.inflight.values()) this.release(entry.ref)
    s.inflight.clear()
    for (let i = s.head; i < s.queue.length; i++) this.release(s.queue[i]!.ref)
    s.queue = []
    s.head = 0
  }

  inboundQos2Add(clientId: string, messageId: number): boolean {
    if (!validMessageId(messageId)) return false
    const inbound = this.session(clientId).inbound
    if (inbound.has(messageId)) return false
    inbound.add(messageId)
    return true
  }

  inboundQos2Release(clientId: string, messageId: number): boolean {
    const s = this.sessions.get(clientId)
    return s !== undefined && s.inbound.delete(messageId)
  }

  /**
   * The public image. `revive` maps each held message once; the revived
   * objects replace the stored ones (and are recognised from now on).
   */
  snapshot<M extends StoredMessage>(revive?: (message: StoredMessage) => M): StoreSnapshot<M> {
    const objects = new Map<number, M>()
    for (const [ref, entry] of this.messages) {
      const live = (revive !== undefined ? revive(entry.message) : entry.message) as M
      if (live !== entry.message) {
        if (this.identity.get(entry.message) === ref) this.identity.delete(entry.message)
        entry.message = live
        this.identity.set(live, ref)
      }
      objects.set(ref, live)
    }
    const retained: Array<M> = []
    for (const ref of this.retained.values()) retained.push(objects.get(ref)!)
    const sessions: Array<StoredSession<M>> = []
    for (const s of this.sessions.values()) {
      const inflight: Array<StoredInflight<M>> = []
      for (const e of s.inflight.values()) {
        inflight.push({
          message: objects.get(e.ref)!,
          qos: e.qos,
          retain: e.retain,
          subscriptionIds: e.subscriptionIds,
          messageId: e.messageId,
          state: e.state
        })
      }
      const queue: Array<StoredDelivery<M>> = []
      for (let i = s.head; i < s.queue.length; i++) {
        const e = s.queue[i]!
        queue.push({ message: objects.get(e.ref)!, qos: e.qos, retain: e.retain, subscriptionIds: e.subscriptionIds })
      }
      sessions.push({
        ...s.meta,
        subscriptions: new Map(s.subscriptions),
        inflight,
        queue,
        inboundQos2: [...s.inbound]
      })
    }
    return { retained, sessions }
  }
}
