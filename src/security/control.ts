/**
 * `$CONTROL/...` topics, as Mosquitto 2 handles them (`src/handle_publish.c`,
 * `src/control.c`): a PUBLISH from a client to a topic starting with
 * `$CONTROL/` that the publish ACL allowed is handed to the handlers
 * registered for exactly that topic (dynamic security's
 * `$CONTROL/dynamic-security/v1`, the broker's own `$CONTROL/broker/v1` with
 * `enable_control_api`) and is never routed to subscribers nor retained;
 * QoS 1 / 2 are acknowledged with success, handler or not. With no handler
 * for the topic the message is dropped. What the broker itself publishes
 * there (the `.../response` topics) is routed as usual.
 *
 * The registry hangs off the broker's `Core` (one per broker), so the
 * connection code needs nothing but {@link dispatchControl}. A handler runs
 * synchronously on the connection's turn: it should answer at once
 * (brokerControl.ts) or queue the message and return (DynamicSecurity.serve
 * offers it to a Queue).
 *
 * A handler may say which plugin it belongs to ({@link ControlPlugin}, what a
 * Mosquitto plugin tells the broker with `mosquitto_plugin_set_info`):
 * `listPlugins` on `$CONTROL/broker/v1` lists them ({@link controlPlugins}).
 *
 * {@link runControlRequest} is the request envelope every control API shares
 * (Mosquitto 2.1's `mosquitto_control_generic_callback`, `control_common.c`).
 */
import { codeUnitAt } from "../runtime/codeUnit.js"
import type { Core } from "../session/Core.js"
import { getItem, getString, isArray, isObject, type Json, type JsonObject, lowerAscii } from "./dynsec/json.js"

export const CONTROL_PREFIX = "$CONTROL/"

/** A topic Mosquitto hands to its control plugins instead of routing it. */
export const isControlTopic = (topic: string): boolean => codeUnitAt(topic, 0) === 36 && topic.startsWith(CONTROL_PREFIX)

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

/**
 * The plugin a handler belongs to, as `listPlugins` reports it: what a
 * Mosquitto plugin gives `mosquitto_plugin_set_info`, and the listener's port
 * for a plugin of one listener. Handlers registered with the same object are
 * one plugin with several control endpoints.
 */
export interface ControlPlugin {
  readonly name: string
  readonly version?: string | undefined
  readonly port?: number | undefined
}

/** Per broker: each topic's handlers, with the plugin each was registered for. */
const registries = new WeakMap<Core, Map<string, Map<ControlHandler, ControlPlugin | undefined>>>()

/**
 * Registers `handler` for `topic` (exact, starting with `$CONTROL/`), on behalf
 * of `plugin` when given; the result unregisters it.
 */
export const registerControlHandler = (core: Core, topic: string, handler: ControlHandler, plugin?: ControlPlugin): (() => void) => {
  if (!isControlTopic(topic)) throw new Error(`control topic must start with ${CONTROL_PREFIX}: ${topic}`)
  let byTopic = registries.get(core)
  if (byTopic === undefined) registries.set(core, (byTopic = new Map()))
  let handlers = byTopic.get(topic)
  if (handlers === undefined) byTopic.set(topic, (handlers = new Map()))
  handlers.set(handler, plugin)
  return () => {
    const current = registries.get(core)?.get(topic)
    if (current === undefined) return
    current.delete(handler)
    if (current.size === 0) registries.get(core)?.delete(topic)
  }
}

/** The plugins with a handler registered on `core`, each with its control endpoints (topics), in registration order. */
export const controlPlugins = (core: Core): Array<{ readonly plugin: ControlPlugin; readonly endpoints: ReadonlyArray<string> }> => {
  const endpoints = new Map<ControlPlugin, Array<string>>()
  for (const [topic, handlers] of registries.get(core) ?? []) {
    for (const plugin of handlers.values()) {
      if (plugin === undefined) continue
      const topics = endpoints.get(plugin)
      if (topics === undefined) endpoints.set(plugin, [topic])
      else if (!topics.includes(topic)) topics.push(topic)
    }
  }
  return [...endpoints].map(([plugin, topics]) => ({ plugin, endpoints: topics }))
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
  for (const handler of handlers.keys()) {
    try {
      handler(own)
    } catch (error) {
      onError(error)
    }
  }
  return handlers.size
}

// ---------------------------------------------------------------------------
// the request envelope

/** A control API's commands by name, looked up as Mosquitto's `strcasecmp` compares: whatever their ASCII case. */
export type CommandTable<H> = ReadonlyMap<string, { readonly name: string; readonly handler: H }>

export const commandTable = <H>(entries: ReadonlyArray<readonly [name: string, handler: H]>): CommandTable<H> =>
  new Map(entries.map(([name, handler]) => [lowerAscii(name), { name, handler }]))

/** One known command of a request, for its API to run. */
export interface ControlCall<H> {
  /** the command's name as the table spells it */
  readonly name: string
  readonly handler: H
  readonly command: JsonObject
  readonly correlationData: string | undefined
}

const UNKNOWN = "Unknown command"

const withCorrelation = (o: Record<string, Json>, correlationData: string | undefined): JsonObject => {
  if (correlationData !== undefined) o.correlationData = correlationData
  return o
}

/**
 * A `$CONTROL` request `{"commands":[...]}`: the envelope's errors go to
 * `responses`, each known command to `run` (which adds its own response), in
 * order. As Mosquitto's `mosquitto_control_generic_callback`:
 *
 * - a payload that is not JSON: `{"command":"Unknown command","error":"Payload not valid JSON"}`;
 *   no `commands` array: `"Invalid/missing commands"`;
 * - an element that is not an object: `"Command not an object"`; without a
 *   `command` string: `"Missing command"`; both with the last correlationData
 *   read (the C code does not reset it), and nothing after them runs;
 * - a `correlationData` that is not a string: `{"command": <name>, "error":
 *   "Invalid correlationData data type."}`, and nothing after it runs;
 * - an unknown command: `{"command": <name as sent>, "error": "Unknown
 *   command"}` with its correlationData; the next one runs.
 *
 * `afterMalformed: "continue"` is Mosquitto 2.0's dynamic security plugin
 * (`plugin.c`), which answers an element that is not an object or has no
 * name and goes on with the next one.
 */
export const runControlRequest = <H>(
  text: string,
  table: CommandTable<H>,
  run: (call: ControlCall<H>) => void,
  responses: Array<JsonObject>,
  afterMalformed: "stop" | "continue" = "stop"
): void => {
  let tree: Json
  try {
    tree = JSON.parse(text) as Json
  } catch {
    responses.push({ command: UNKNOWN, error: "Payload not valid JSON" })
    return
  }
  const commands = getItem(tree, "commands")
  if (!isArray(commands)) {
    responses.push({ command: UNKNOWN, error: "Invalid/missing commands" })
    return
  }
  let correlationData: string | undefined
  for (const item of commands) {
    if (!isObject(item)) {
      responses.push(withCorrelation({ command: UNKNOWN, error: "Command not an object" }, correlationData))
      if (afterMalformed === "stop") return
      continue
    }
    const name = getString(item, "command", false)
    if (!name.ok || name.value === undefined) {
      responses.push(withCorrelation({ command: UNKNOWN, error: "Missing command" }, correlationData))
      if (afterMalformed === "stop") return
      continue
    }
    const cd = getString(item, "correlationData", true)
    if (!cd.ok) {
      responses.push({ command: name.value, error: "Invalid correlationData data type." })
      return
    }
    correlationData = cd.value
    const found = table.get(lowerAscii(name.value))
    if (found === undefined) responses.push(withCorrelation({ command: name.value, error: UNKNOWN }, correlationData))
    else run({ name: found.name, handler: found.handler, command: item, correlationData })
  }
}
