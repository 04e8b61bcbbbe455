/**
 * `midge sub`: connect, subscribe to every `-t`, print each message
 * (`-v`, `-F`, `-N`), and exit as mosquitto_sub does: after `-C` messages,
 * after the SUBACK with `-E`, at the first live message with
 * `--retained-only`, with code 27 after `-W` seconds, 0 on SIGINT/SIGTERM.
 * A lost connection is retried every second and the subscriptions renewed.
 */
import { Effect } from "effect"
import type { IClientSubscribeOptions, Packet } from "mqtt"
import type { ISubackPacket } from "mqtt-packet"
import { matchTopic } from "../../protocol/topic.js"
import { connackCode as codeOf, connectFailureText, disconnectProperties, errorWriter, MosqErr, openClient, refusedText, strerror } from "./client.js"
import { makePrinter, type OutputMessage } from "./format.js"
import type { ClientConfig } from "./options.js"
import type { ToolEnv } from "./tool.js"

export interface SubOptions {
  /** signals that end the tool cleanly; the bin passes SIGINT and SIGTERM */
  readonly signals?: ReadonlyArray<NodeJS.Signals>
  readonly random?: () => number
}

/** Runs `midge sub` for a command line read by `parseClientArgs("sub", ...)`. */
export const runSub = (config: ClientConfig, env: ToolEnv, options: SubOptions): Effect.Effect<number> =>
  Effect.async<number>((resume) => {
    const err = errorWriter(config, env.io)
    const client = openClient(config, env.io, { reconnect: true }, err)
    if (client === undefined) {
      resume(Effect.succeed(1))
      return
    }
    const c = client.mqtt
    const printer = makePrinter({ format: config.format, verbose: config.verbose, eol: config.eol, pretty: config.pretty })
    const random = options.random ?? Math.random
    const out: Array<Buffer> = []
    let finished = false
    let everConnected = false
    let processing = true
    let received = 0
    let connackCode = 0
    let timer: ReturnType<typeof setTimeout> | undefined

    const finish = (code: number) => {
      if (finished) return
      finished = true
      if (timer !== undefined) clearTimeout(timer)
      for (const s of options.signals ?? []) process.off(s, onSignal)
      resume(Effect.succeed(code))
    }
    /** DISCONNECT once what we published (--remove-retained) is acknowledged, then exit. */
    const disconnect = (code: number, reasonCode = 0) => {
      processing = false
      if (finished) return
      c.options.reconnectPeriod = 0
      if (!c.connected) {
        c.end(true)
        finish(code)
        return
      }
      c.end(false, { reasonCode, ...disconnectProperties(config) }, () => finish(code))
    }
    /** sub_client.c's signal handler: before the first CONNACK it calls exit(-1), silently */
    const abandon = () => {
      c.options.reconnectPeriod = 0
      c.end(true)
      finish(255)
    }
    const onSignal = () => (everConnected ? disconnect(0, config.protocolVersion === 5 ? 4 : 0) : abandon())
    for (const s of options.signals ?? []) process.on(s, onSignal)

    const subOptions: IClientSubscribeOptions = {
      qos: config.qos,
      ...(config.protocolVersion === 5
        ? {
            nl: config.noLocal,
            rap: config.retainAsPublished,
            rh: config.retainHandling,
            ...(Object.keys(config.properties.subscribe).length > 0 ? { properties: config.properties.subscribe as IClientSubscribeOptions["properties"] } : {})
          }
        : {})
    }

    c.on("packetreceive", (packet: Packet) => {
      if (packet.cmd === "connack") connackCode = codeOf(config, packet)
      else if (packet.cmd === "suback") onSuback(packet)
    })
    const onSuback = (packet: ISubackPacket) => {
      const granted = packet.granted as Array<number>
      if (config.debug && !config.quiet) env.io.stdout(`Subscribed (mid: ${packet.messageId}): ${granted.join(", ")}\n`)
      if (granted.every((g) => g >= 128)) {
        err("All subscription requests were denied.\n")
        disconnect(0)
      } else if (config.exitAfterSub) disconnect(0)
    }
    c.on("connect", () => {
      everConnected = true
      connackCode = 0
      c.subscribe(config.topics.slice(), subOptions)
      const unsubProps = config.protocolVersion === 5 && Object.keys(config.properties.unsubscribe).length > 0 ? { properties: config.properties.unsubscribe } : undefined
      for (const t of config.unsubTopics) c.unsubscribe(t, unsubProps)
    })
    c.on("message", (topic, payload, packet) => {
      if (!processing) return
      if (config.retainedOnly && !packet.retain) {
        processing = false
        setImmediate(() => disconnect(0))
        return
      }
      if (packet.retain && config.noRetain) return
      for (const f of config.filterOuts) if (matchTopic(f, topic)) return
      if (config.removeRetained && packet.retain) c.publish(topic, Buffer.alloc(0), { qos: 1, retain: true })
      if (config.randomFilter >= 10000 || Math.floor(random() * 10000) < config.randomFilter) {
        const m: OutputMessage = {
          topic,
          payload,
          qos: packet.qos,
          retain: packet.retain,
          mid: packet.messageId ?? 0,
          properties: packet.properties as Record<string, unknown> | undefined
        }
        printer.print(m, out, err)
        if (out.length > 0) {
          env.io.stdout(out.length === 1 ? out[0] : Buffer.concat(out))
          out.length = 0
        }
      }
      if (config.msgCount > 0 && ++received === config.msgCount) {
        processing = false
        // after this turn, so the acknowledgement of this message (PUBACK, PUBCOMP) goes out first
        setImmediate(() => disconnect(0))
      }
    })
    c.on("error", (error: Error & { code?: string | number }) => {
      if (finished) return
      if (connackCode > 0) {
        err(refusedText(config, connackCode))
        c.options.reconnectPeriod = 0
        c.end(true)
        finish(connackCode)
      } else if (!everConnected) {
        err(connectFailureText(error as Error & { code?: string }))
        c.options.reconnectPeriod = 0
        c.end(true)
        finish(1)
      }
    })
    c.on("close", () => {
      if (!everConnected && !finished && connackCode === 0) {
        err(`Error: ${strerror(MosqErr.CONN_LOST)}\n`)
        c.options.reconnectPeriod = 0
        c.end(true)
        finish(MosqErr.CONN_LOST)
      }
    })
    if (config.timeout > 0) {
      timer = setTimeout(() => {
        // -W is SIGALRM to mosquitto_sub: before the first CONNACK, its exit(-1)
        if (!everConnected) return abandon()
        const code = MosqErr.TIMEOUT
        processing = false
        if (c.connected) {
          c.options.reconnectPeriod = 0
          c.end(false, { reasonCode: 0 }, () => {
            err("Timed out\n")
            finish(code)
          })
        } else {
          c.options.reconnectPeriod = 0
          c.end(true)
          err("Timed out\n")
          finish(code)
        }
      }, config.timeout * 1000)
    }
    c.connect()
    return Effect.sync(() => {
      finished = true
      if (timer !== undefined) clearTimeout(timer)
      c.end(true)
    })
  })
