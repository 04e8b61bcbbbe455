/**
 * `$CONTROL/...` topics, as Mosquitto 2 handles them (`src/handle_publish.c`,
 * `src/control.c`): a PUBLISH from a client to a topic starting with
 * `$CONTROL/` that the publish ACL allowed is handed to the handlers
 * registered for exactly that topic (dynamic security's
 * `$CONTROL/dynamic-security/v1`) and is never routed to subscribers nor
 * retained; QoS 1 / 2 are acknowledged with success, handler or not. With no
 * handler for the topic the message is dropped. What the broker itself
 * publishes there (the `.../response` topics) is routed as usual.
 *
 * The registry hangs off the broker's `Core` (one per broker), so the
 * connection code needs nothing but {@link dispatchControl}. A handler runs
 * synchronously on the connection's turn: it should queue the message and
 * return (DynamicSecurity.serve offers it to a Queue).
 */
import type { Core } from "../session/Core.js"

export const CONTROL_PREFIX = "$CONTROL/"

/** A topic Mosquitto hands to its control plugins instead of routing it. */
export const isControlTopic = (topic: string): boolean => topic.charCodeAt(0) === 36 && topic.startsWith(CONTROL_PREFIX)

export interface ControlMessage {
  readonly topic: string
  /** handlers get their own copy */
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  readonly clientId: string
  readonly username: string | undefined
}

export type ControlHandler = (message: ControlMessage) => void

const registries = new WeakMap<Core, Map<string, Set<ControlHandler>>>()

/** Registers `handler` for `topic` (exact, starting with `$CONTROL/`); the result unregisters it. */
export const registerControlHandler = (core: Core, topic: string, handler: ControlHandler): (() => void) => {
  if (!isControlTopic(topic)) throw new Error(`control topic must start with ${CONTROL_PREFIX}: ${topic}`)
  let byTopic = registries.get(core)
  if (byTopic === undefined) registries.set(core, (byTopic = new Map()))
  let handlers = byTopic.get(topic)
  if (handlers === undefined) byTopic.set(topic, (handlers = new Set()))
  handlers.add(handler)
  return () => {
    const current = registries.get(core)?.get(topic)
    if (current === undefined) return
    current.delete(handler)
    if (current.size === 0) registries.get(core)?.delete(topic)
  }
}

/**
 * Hands a `$CONTROL/...` message to the handlers of its topic (with a copy
 * of the payload); returns how many took it. A handler that throws is reported through `onError` and does
 * not stop the others.
 */
export const dispatchControl = (core: Core, message: ControlMessage, onError: (error: unknown) => void): number => {
  const handlers = registries.get(core)?.get(message.topic)
  if (handlers === undefined) return 0
  // the payload may be a view on the socket's chunk
  const own: ControlMessage = { ...message, payload: Buffer.from(message.payload) }
  for (const handler of handlers) {
    try {
      handler(own)
    } catch (error) {
      onError(error)
    }
  }
  return handlers.size
}
