/**
 * One reading of the broker's counters, shared by the `$SYS` tree and the
 * Prometheus endpoint. Taken once per `sys_interval` or per scrape, never per
 * message: the counters themselves are plain increments in Connection / Core.
 */
import type { Core } from "../../session/Core.js"
import type { Message } from "../../session/Message.js"

export interface Sample {
  /** seconds since the publisher started */
  uptime: number
  /** sessions: connected clients plus disconnected persistent ones */
  clientsTotal: number
  clientsConnected: number
  clientsDisconnected: number
  /** most clients connected at the same time */
  clientsMaximum: number
  clientsExpired: number
  /** distinct messages held: retained, in flight and queued */
  storeCount: number
  /** payload bytes of those messages */
  storeBytes: number
  subscriptions: number
  /** Midge has no shared subscriptions: always 0 */
  sharedSubscriptions: number
  retained: number
  heapCurrent: number
  heapMaximum: number
  /** MQTT packets of every type */
  messagesReceived: number
  messagesSent: number
  publishDropped: number
  publishReceived: number
  publishSent: number
  bytesReceived: number
  bytesSent: number
  publishBytesReceived: number
  publishBytesSent: number
  /** CONNECT packets received */
  connections: number
  /** sockets accepted */
  sockets: number
}

export type SampleKey = keyof Sample

export const emptySample = (): Sample => ({
  uptime: 0,
  clientsTotal: 0,
  clientsConnected: 0,
  clientsDisconnected: 0,
  clientsMaximum: 0,
  clientsExpired: 0,
  storeCount: 0,
  storeBytes: 0,
  subscriptions: 0,
  sharedSubscriptions: 0,
  retained: 0,
  heapCurrent: 0,
  heapMaximum: 0,
  messagesReceived: 0,
  messagesSent: 0,
  publishDropped: 0,
  publishReceived: 0,
  publishSent: 0,
  bytesReceived: 0,
  bytesSent: 0,
  publishBytesReceived: 0,
  publishBytesSent: 0,
  connections: 0,
  sockets: 0
})

/**
 * Reads a Core into one reused {@link Sample}. Keeps what a reading needs from
 * the last one: the start time and the heap's high-water mark.
 */
export class Sampler {
  readonly sample: Sample = emptySample()
  private heapMaximum = 0
  // reused across readings: a message shared by many sessions is counted once
  private readonly seen = new Set<Message>()

  constructor(
    private readonly core: Core,
    /** Clock time (ms) uptime counts from */
    private readonly startedAt: number,
    private readonly heapUsed: () => number = () => process.memoryUsage().heapUsed
  ) {}

  read(): Sample {
    const core = this.core
    const stats = core.stats
    const s = this.sample
    s.uptime = Math.floor((core.now() - this.startedAt) / 1000)
    // connected bridges are clients without a session
    const total = core.sessions.size + stats.bridgesConnected
    const connected = stats.clientsConnected
    s.clientsTotal = total
    s.clientsConnected = connected
    s.clientsDisconnected = total > connected ? total - connected : 0
    s.clientsMaximum = stats.clientsMaximum
    s.clientsExpired = stats.clientsExpired
    this.readStore(s)
    s.subscriptions = core.router.subscriptionCount
    s.sharedSubscriptions = core.router.sharedSubscriptionCount
    s.retained = core.router.retained.size
    const heap = this.heapUsed()
    if (heap > this.heapMaximum) this.heapMaximum = heap
    s.heapCurrent = heap
    s.heapMaximum = this.heapMaximum
    s.messagesReceived = stats.packetsReceived
    s.messagesSent = stats.packetsSent
    s.publishDropped = stats.publishDropped
    s.publishReceived = stats.messagesReceived
    s.publishSent = stats.messagesSent
    s.bytesReceived = stats.bytesReceived
    s.bytesSent = stats.bytesSent
    s.publishBytesReceived = stats.publishBytesReceived
    s.publishBytesSent = stats.publishBytesSent
    s.connections = stats.connectsReceived
    s.sockets = stats.socketsOpened
    return s
  }

  /**
   * Mosquitto's message store: every distinct message held, retained or waiting
   * in a session (in flight or queued). A walk over the sessions, once per reading.
   */
  private readStore(s: Sample): void {
    const seen = this.seen
    let bytes = 0
    for (const m of this.core.router.retained.values()) {
      seen.add(m)
      bytes += m.payload.length
    }
    for (const session of this.core.sessions.values()) {
      const flow = session.flow
      if (flow.inflight.size > 0) {
        for (const entry of flow.inflight.values()) {
          const m = entry.message
          if (!seen.has(m)) {
            seen.add(m)
            bytes += m.payload.length
          }
        }
      }
      const queue = flow.queue
      for (let i = queue.length - flow.queued; i < queue.length; i++) {
        const m = queue[i].message
        if (!seen.has(m)) {
          seen.add(m)
          bytes += m.payload.length
        }
      }
    }
    s.storeCount = seen.size
    s.storeBytes = bytes
    seen.clear()
  }
}
