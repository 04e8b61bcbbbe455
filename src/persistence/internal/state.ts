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
import { isPacketId, PacketIdMap } from "../../session/PacketIdMap.js"
import { PacketIdSet } from "../../session/PacketIdSet.js"
import type {
  OutState,
  StoreCounts,
  StoredInflight,
  StoredDelivery,
  StoredMessage,
  StoredSession,
  StoredSessionMeta,
  StoredSharedGroup,
  StoreSnapshot
} from "../Persistence.js"

export interface MessageEntry {
  /** the message's number in the file store's records */
  readonly ref: number
  message: StoredMessage
  /** retained slots, queued and in-flight deliveries holding it */
  refs: number
}

export interface OutEntry {
  readonly msg: MessageEntry
  readonly qos: QoS
  readonly retain: boolean
  readonly subscriptionIds: ReadonlyArray<number> | undefined
  readonly shared: StoredSharedGroup | undefined
  messageId: number
  state: OutState
}

/** the group's names only: a live group object (its members) is not the store's to keep */
const sharedCopy = (g: StoredSharedGroup | undefined): StoredSharedGroup | undefined =>
  g === undefined ? undefined : { group: g.group, filter: g.filter }

export class SessionState {
  readonly subscriptions = new Map<string, SubscriptionOptions>()
  /** in the order sent (not a `Map`: see PacketIdMap, why a session's in-flight window is not one) */
  readonly inflight = new PacketIdMap<OutEntry>()
  /** queue[head..] is the live queue */
  queue: Array<OutEntry | undefined> = []
  head = 0
  /** inbound QoS 2 ids awaiting PUBREL, in the order received (not a `Set`, for the same reason: PacketIdSet) */
  readonly inbound = new PacketIdSet()
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

export class StoreState {
  /**
   * Held messages by object identity. A plain Map, not a WeakMap: an entry
   * lives exactly as long as something refers to it, and is deleted then.
   */
  readonly messages = new Map<object, MessageEntry>()
  /** by number, only while a file is replayed */
  private byRef: Map<number, MessageEntry> | undefined = undefined
  /** topic → message */
  readonly retained = new Map<string, MessageEntry>()
  readonly sessions = new Map<string, SessionState>()
  nextRef = 1

  counts(): StoreCounts {
    return { messages: this.messages.size, retained: this.retained.size, sessions: this.sessions.size }
  }

  /** The entry of a message already held, or undefined. */
  lookup(message: object): MessageEntry | undefined {
    return this.messages.get(message)
  }

  /** Hold a new message (0 references until something refers to it). */
  addMessage(message: StoredMessage, ref = this.nextRef): MessageEntry {
    if (ref >= this.nextRef) this.nextRef = ref + 1
    const entry: MessageEntry = { ref, message, refs: 0 }
    this.messages.set(message, entry)
    if (this.byRef !== undefined) this.byRef.set(ref, entry)
    return entry
  }

  /** The entry of `message`, holding it first if new. */
  entryOf(message: StoredMessage): MessageEntry {
    return this.messages.get(message) ?? this.addMessage(message)
  }

  beginReplay(): void {
    this.byRef = new Map()
    for (const e of this.messages.values()) this.byRef.set(e.ref, e)
  }

  /** The message numbered `ref` in the records being replayed. */
  replayed(ref: number): MessageEntry | undefined {
    return this.byRef?.get(ref)
  }

  /** End of the replay: forget numbers, drop messages nothing refers to (a replay that stopped early). */
  endReplay(): void {
    this.byRef = undefined
    for (const [key, entry] of this.messages) if (entry.refs <= 0) this.messages.delete(key)
  }

  private release(entry: MessageEntry): void {
    if (--entry.refs <= 0) {
      this.messages.delete(entry.message)
      if (this.byRef !== undefined) this.byRef.delete(entry.ref)
    }
  }

  retainedSet(topic: string, entry: MessageEntry): boolean {
    const previous = this.retained.get(topic)
    if (previous === entry) return false
    entry.refs++
    this.retained.set(topic, entry)
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
    msg: MessageEntry,
    qos: QoS,
    retain: boolean,
    subscriptionIds: ReadonlyArray<number> | undefined,
    shared: StoredSharedGroup | undefined
  ): boolean {
    msg.refs++
    this.session(clientId).queue.push({
      msg,
      qos,
      retain,
      subscriptionIds,
      shared: sharedCopy(shared),
      messageId: 0,
      state: "await-puback"
    })
    return true
  }

  outboundSend(
    clientId: string,
    messageId: number,
    msg: MessageEntry,
    qos: QoS,
    retain: boolean,
    subscriptionIds: ReadonlyArray<number> | undefined,
    state: OutState,
    shared: StoredSharedGroup | undefined
  ): boolean {
    if (qos === 0 || !isPacketId(messageId)) return false
    const s = this.session(clientId)
    msg.refs++
    const previous = s.inflight.get(messageId)
    if (previous !== undefined) {
      s.inflight.delete(messageId)
      this.release(previous.msg)
    }
    s.inflight.set(messageId, { msg, qos, retain, subscriptionIds, shared: sharedCopy(shared), messageId, state })
    return true
  }

  outboundDequeue(clientId: string, messageId: number): boolean {
    const s = this.sessions.get(clientId)
    if (s === undefined || s.head >= s.queue.length || (messageId !== 0 && !isPacketId(messageId))) return false
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
      this.release(entry.msg)
      return true
    }
    const previous = s.inflight.get(messageId)
    if (previous !== undefined) {
      s.inflight.delete(messageId)
      this.release(previous.msg)
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
    this.release(entry.msg)
    return true
  }

  outboundClear(clientId: string): boolean {
    const s = this.sessions.get(clientId)
    if (s === undefined || (s.inflight.size === 0 && s.queued === 0)) return false
    this.clearOutbound(s)
    return true
  }

  private clearOutbound(s: SessionState): void {
    for (const entry of s.inflight.values()) this.release(entry.msg)
    s.inflight.clear()
    for (let i = s.head; i < s.queue.length; i++) this.release(s.queue[i]!.msg)
    s.queue = []
    s.head = 0
  }

  inboundQos2Add(clientId: string, messageId: number): boolean {
    if (!isPacketId(messageId)) return false
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
    if (revive !== undefined) {
      const entries = [...this.messages.values()]
      this.messages.clear()
      for (const entry of entries) {
        entry.message = revive(entry.message)
        this.messages.set(entry.message, entry)
      }
    }
    const live = (e: MessageEntry) => e.message as M
    const retained: Array<M> = []
    for (const e of this.retained.values()) retained.push(live(e))
    const sessions: Array<StoredSession<M>> = []
    for (const s of this.sessions.values()) {
      const inflight: Array<StoredInflight<M>> = []
      for (const e of s.inflight.values()) {
        inflight.push({
          message: live(e.msg),
          qos: e.qos,
          retain: e.retain,
          subscriptionIds: e.subscriptionIds,
          ...(e.shared !== undefined ? { shared: e.shared } : {}),
          messageId: e.messageId,
          state: e.state
        })
      }
      const queue: Array<StoredDelivery<M>> = []
      for (let i = s.head; i < s.queue.length; i++) {
        const e = s.queue[i]!
        queue.push({
          message: live(e.msg),
          qos: e.qos,
          retain: e.retain,
          subscriptionIds: e.subscriptionIds,
          ...(e.shared !== undefined ? { shared: e.shared } : {})
        })
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
