/**
 * Mosquitto 2.1's `$CONTROL/broker/v1` (`src/broker_control.c`), on while
 * `enable_control_api` is: requests `{"commands":[...]}` in, the broker's
 * answer `{"responses":[...]}` published on `$CONTROL/broker/v1/response`,
 * QoS 0, not retained. The envelope and its errors are every control API's
 * (control.ts, `runControlRequest`); the commands, matched whatever their
 * case:
 *
 * - `listListeners`: `{"listeners":[...]}`, one object per listener in the
 *   configuration's order: `port` (as bound; 0 for a Unix socket), `protocol`
 *   (`mqtt` or `mqtt+websockets`), `bind-address` when the listener has one,
 *   `socket-path` for a Unix socket, `tls` (a certificate or PSK listener);
 * - `listPlugins`: `{"plugins":[...]}`: `name`, `version` when known, `port`
 *   for a plugin of one listener, `control-endpoints`: the plugins whose
 *   handlers are registered (control.ts, `controlPlugins`), i.e. Midge's
 *   dynamic security when a `plugin` line loads it.
 *
 * Each logs `Broker: <client id>/<username> | <command>` at the information
 * level (a client without a username shows `(null)`, as glibc's printf
 * prints Mosquitto's NULL). Like every `$CONTROL/` topic, only a client the
 * publish ACL lets through reaches the handler (Connection.handlePublish).
 *
 * The handler answers on the requesting connection's turn: the commands only
 * read the broker's state.
 */
import type { Core } from "../session/Core.js"
import { commandTable, type ControlCall, type ControlMessage, controlPlugins, registerControlHandler, runControlRequest } from "./control.js"
import type { Json, JsonObject } from "./dynsec/json.js"

export const BROKER_CONTROL_TOPIC = "$CONTROL/broker/v1"
export const BROKER_CONTROL_RESPONSE_TOPIC = "$CONTROL/broker/v1/response"

/** A listener as `listListeners` describes it. */
export interface ListenerInfo {
  /** as bound (0 for a Unix socket) */
  readonly port: number
  readonly protocol: "mqtt" | "websockets" | undefined
  /** the address it was configured with, if any */
  readonly host: string | undefined
  readonly socketPath: string | undefined
  /** a certificate or PSK listener */
  readonly tls: boolean
}

export interface BrokerControlContext {
  /** the listeners open now, in the configuration's order */
  readonly listeners: () => ReadonlyArray<ListenerInfo>
  readonly core: Core
}

interface Run {
  readonly ctx: BrokerControlContext
  readonly admin: string
  readonly responses: Array<JsonObject>
}

type Handler = (run: Run, call: ControlCall<Handler>) => JsonObject

/** A command's answer: `{command, data, correlationData?}`, in Mosquitto's key order. */
const answer = (run: Run, call: ControlCall<Handler>, data: JsonObject): void => {
  run.ctx.core.log.info(`Broker: ${run.admin} | ${call.name}`)
  const o: Record<string, Json> = { command: call.name, data }
  if (call.correlationData !== undefined) o.correlationData = call.correlationData
  run.responses.push(o)
}

const listenerJson = (l: ListenerInfo): JsonObject => {
  const o: Record<string, Json> = { port: l.port, protocol: l.protocol === "websockets" ? "mqtt+websockets" : "mqtt" }
  if (l.host !== undefined) o["bind-address"] = l.host
  if (l.socketPath !== undefined) o["socket-path"] = l.socketPath
  o.tls = l.tls
  return o
}

const listListeners: Handler = (run) => ({ listeners: run.ctx.listeners().map(listenerJson) })

const listPlugins: Handler = (run) => ({
  plugins: controlPlugins(run.ctx.core).map(({ plugin, endpoints }) => {
    const o: Record<string, Json> = { name: plugin.name }
    if (plugin.version !== undefined) o.version = plugin.version
    if (plugin.port !== undefined) o.port = plugin.port
    o["control-endpoints"] = [...endpoints]
    return o
  })
})

const COMMANDS = commandTable<Handler>([
  ["listPlugins", listPlugins],
  ["listListeners", listListeners]
])

/** One request from `message`'s client: the payload to publish on {@link BROKER_CONTROL_RESPONSE_TOPIC}. */
export const brokerControlResponse = (ctx: BrokerControlContext, message: Pick<ControlMessage, "payload" | "clientId" | "username">): string => {
  const run: Run = { ctx, admin: `${message.clientId}/${message.username ?? "(null)"}`, responses: [] }
  runControlRequest(message.payload.toString("utf8"), COMMANDS, (call) => answer(run, call, call.handler(run, call)), run.responses)
  return JSON.stringify({ responses: run.responses })
}

/** Answers `$CONTROL/broker/v1` on `ctx.core` until the result is called. */
export const registerBrokerControl = (ctx: BrokerControlContext): (() => void) =>
  registerControlHandler(ctx.core, BROKER_CONTROL_TOPIC, (message) => {
    const response = brokerControlResponse(ctx, message)
    ctx.core.publish(BROKER_CONTROL_RESPONSE_TOPIC, Buffer.from(response), 0, false)
  })
