/**
 * `midge pub`: connect, publish one message (`-m`, `-f`, `-s`, `-n`,
 * repeated with `--repeat`) or one per line of stdin (`-l`), wait for the
 * acknowledgements, disconnect. Exit codes as mosquitto_pub's: 0, 1 for
 * argument and connection errors, the CONNACK code when the broker refuses
 * (5 "not authorised" in 3.1.1, 135 in MQTT 5), 7 when the connection is
 * lost.
 */
import * as fs from "node:fs"
import { Effect } from "effect"
import type { IPublishPacket, Packet } from "mqtt"
import { connackCode as codeOf, connectFailureText, disconnectProperties, errorWriter, MosqErr, openClient, reasonString, refusedText, strerror } from "./client.js"
import { helpText } from "./help.js"
import { MAX_PAYLOAD, type ClientConfig } from "./options.js"
import type { ToolEnv } from "./tool.js"

/** Reads a stream to the end. */
const readAll = (stream: NodeJS.ReadableStream): Effect.Effect<Buffer, Error> =>
  Effect.async<Buffer, Error>((resume) => {
    const chunks: Array<Buffer> = []
    stream.on("data", (c: Buffer | string) => chunks.push(typeof c === "string" ? Buffer.from(c) : c))
    stream.once("end", () => resume(Effect.succeed(Buffer.concat(chunks))))
    stream.once("error", (e: Error) => resume(Effect.fail(e)))
  })

/** The payload of `-f FILE`, or Mosquitto's error text. */
const loadFile = (file: string): Effect.Effect<Buffer, string> =>
  Effect.tryPromise({
    try: () => fs.promises.readFile(file),
      // Mosquitto 2.0's text (2.1 adds strerror)
    catch: () => `Error: Unable to open file "${file}".\nError loading input file "${file}".\n`
  }).pipe(
    Effect.filterOrFail(
      (b) => b.length <= MAX_PAYLOAD,
      () => `Error: File must be less than ${MAX_PAYLOAD} bytes.\nError loading input file "${file}".\n`
    )
  )

/** Runs `midge pub` for a command line read by `parseClientArgs("pub", ...)`. */
export const runPub = (config: ClientConfig, env: ToolEnv): Effect.Effect<number> =>
  Effect.gen(function* () {
    const err = errorWriter(config, env.io)
    let payload: Buffer | undefined = config.message
    if (config.pubMode === "stdin-file") {
      const read = yield* Effect.either(readAll(env.stdin))
      if (read._tag === "Left") {
        err("Error loading input from stdin.\n")
        return 1
      }
      payload = read.right
    } else if (config.pubMode === "file") {
      const read = yield* Effect.either(loadFile(config.file!))
      if (read._tag === "Left") {
        err(read.left)
        return 1
      }
      payload = read.right
    } else if (config.pubMode === "null") payload = Buffer.alloc(0)
    if (config.topic === undefined || config.pubMode === "none") {
      env.io.stderr("Error: Both topic and message must be supplied.\n")
      env.io.stdout(helpText("pub", env.name))
      return 1
    }
    return yield* publish(config, payload, env)
  })

const publish = (config: ClientConfig, payload: Buffer | undefined, env: ToolEnv): Effect.Effect<number> =>
  Effect.async<number>((resume) => {
    const err = errorWriter(config, env.io)
    const client = openClient(config, env.io, { reconnect: false }, err)
    if (client === undefined) {
      resume(Effect.succeed(1))
      return
    }
    const c = client.mqtt
    let finished = false
    let disconnecting = false
    let connected = false
    let connackCode = 0
    const finish = (code: number) => {
      if (finished) return
      finished = true
      c.end(true)
      resume(Effect.succeed(code))
    }
    const disconnect = () => {
      if (finished || disconnecting) return
      disconnecting = true
      c.end(false, { reasonCode: 0, ...disconnectProperties(config) }, () => {
        if (!finished) {
          finished = true
          resume(Effect.succeed(0))
        }
      })
    }
    c.on("packetreceive", (packet: Packet) => {
      if (packet.cmd === "connack") {
        connackCode = codeOf(config, packet)
      } else if ((packet.cmd === "puback" || packet.cmd === "pubrec" || packet.cmd === "pubcomp") && (packet.reasonCode ?? 0) > 127) {
        err(`Warning: Publish ${packet.messageId} failed: ${reasonString(packet.reasonCode!)}.\n`)
        const reason = packet.properties?.reasonString
        if (reason !== undefined) err(`${reason}\n`)
      }
    })
    c.on("error", (error: Error & { code?: string | number }) => {
      if (connackCode > 0) {
        err(refusedText(config, connackCode))
        err(`Error: ${strerror(config.protocolVersion === 5 ? MosqErr.PROTOCOL : MosqErr.CONN_REFUSED)}\n`)
        finish(connackCode)
      } else if (!connected) {
        err(connectFailureText(error as Error & { code?: string }))
        finish(1)
      }
    })
    c.on("close", () => {
      if (finished || disconnecting || connackCode > 0) return
      err(`Error: ${strerror(MosqErr.CONN_LOST)}\n`)
      finish(MosqErr.CONN_LOST)
    })
    const publishOptions = {
      qos: config.qos,
      retain: config.retain,
      ...(config.protocolVersion === 5 && Object.keys(config.properties.publish).length > 0
        ? { properties: config.properties.publish as IPublishPacket["properties"] }
        : {})
    }
    const send = (body: Buffer, done: () => void) => {
      if (config.topic === "" && (config.properties.publish as { topicAlias?: number }).topicAlias === undefined) {
        // mosquitto_publish refuses an empty topic without a topic alias
        err("Error: Invalid input. Does your topic contain '+' or '#'?\n")
        disconnect()
        return
      }
      c.publish(config.topic!, body, publishOptions, () => done())
    }
    c.once("connect", () => {
      connected = true
      if (config.pubMode === "stdin-line") {
        publishLines(env, send, disconnect)
        return
      }
      let count = 0
      const next = () => {
        count++
        send(payload!, () => {
          if (count < config.repeatCount) setTimeout(next, config.repeatDelayMs)
          else disconnect()
        })
      }
      next()
    })
    c.connect()
    return Effect.sync(() => {
      finished = true
      c.end(true)
    })
  })

/** `-l`: each line of stdin (without its `\n`) is a message; at the end of input, wait for the last acknowledgement. */
const publishLines = (env: ToolEnv, send: (body: Buffer, done: () => void) => void, disconnect: () => void) => {
  let pending = 0
  let ended = false
  let rest = Buffer.alloc(0)
  const settled = () => {
    pending--
    if (ended && pending === 0) disconnect()
  }
  const sendLine = (line: Buffer) => {
    pending++
    send(line, settled)
  }
  env.stdin.on("data", (chunk: Buffer | string) => {
    let data = rest.length > 0 ? Buffer.concat([rest, Buffer.from(chunk)]) : Buffer.from(chunk)
    let nl: number
    while ((nl = data.indexOf(10)) >= 0) {
      sendLine(Buffer.from(data.subarray(0, nl)))
      data = data.subarray(nl + 1)
    }
    rest = Buffer.from(data)
  })
  env.stdin.once("end", () => {
    if (rest.length > 0) sendLine(rest)
    ended = true
    if (pending === 0) disconnect()
  })
}
