/**
 * `midge sub` end to end against a running Midge: each flag, with messages
 * published by MQTT.js, and the tool's output and exit code checked.
 */
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { vi } from "vitest"
import type { BrokerService } from "../../src/Broker.js"
import { connectClient, publish, startBroker, waitFor } from "../e2e/harness.js"
import { bins, midge, run, spawnLive } from "./helpers.js"

// each test starts several processes (Node start-ups, mosquitto, openssl): generous bounds for a loaded machine
vi.setConfig({ testTimeout: 90_000 })

/** Starts `midge sub` and waits until its `count` subscriptions are in place. */
const startSub = (broker: BrokerService, args: ReadonlyArray<string>, count = 1) =>
  Effect.gen(function* () {
    const before = broker.stats().subscriptions
    const sub = yield* spawnLive("node", [bins.midge, "sub", ...args])
    yield* waitFor(() => broker.stats().subscriptions >= before + count || sub.out.exited, "midge sub to subscribe", 10_000)
    return sub
  })

const exited = (sub: { out: { exited: boolean } }, what = "midge sub to exit") => waitFor(() => sub.out.exited, what, 10_000)

describe("midge sub against Midge", () => {
  it.scopedLive("-t (repeatable), -v, -C: prints each message as 'topic payload', exits 0 after the count", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const sub = yield* startSub(broker, ["-p", String(port), "-t", "a/#", "-t", "b", "-v", "-C", "3"], 2)
      const js = yield* connectClient(url)
      yield* publish(js, "a/1", "one")
      yield* publish(js, "b", "two")
      yield* publish(js, "a/2", "")
      yield* publish(js, "c", "never")
      yield* exited(sub)
      expect(sub.out.code).toBe(0)
      expect(sub.out.stdout).toBe("a/1 one\nb two\na/2 (null)\n")
    })
  )

  it.scopedLive("-T filters topics out; -N drops the newline; an empty payload prints nothing without -v", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const sub = yield* startSub(broker, ["-p", String(port), "-t", "#", "-T", "noise/#", "-T", "+/skip", "-N", "-C", "3"])
      const js = yield* connectClient(url)
      for (const [t, p] of [["noise/x", "n"], ["a/skip", "s"], ["x", "A"], ["y", ""], ["z", "B"], ["w", "C"]]) yield* publish(js, t, p)
      yield* exited(sub)
      expect(sub.out.stdout).toBe("AB")
    })
  )

  it.scopedLive("-W: 'Timed out' and exit 27 when nothing ends it sooner", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const r = yield* midge("sub", ["-p", String(port), "-t", "quiet", "-W", "1"])
      expect(r).toEqual({ code: 27, stdout: "", stderr: "Timed out\n" })
    })
  )

  it.scopedLive("before the first CONNACK, -W and SIGINT / SIGTERM end it at once, silently, with 255 (mosquitto_sub's exit(-1))", () =>
    Effect.gen(function* () {
      // a server that accepts and never answers the CONNECT
      const silent = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer(() => {})
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.sync(() => server.close())
      )
      const port = String((silent.address() as net.AddressInfo).port)
      const args = ["-p", port, "-t", "t", "-W", "1"]
      const [theirs, ours] = yield* Effect.all([run("mosquitto_sub", args), midge("sub", args)], { concurrency: 2 })
      expect(theirs).toMatchObject({ code: 255, stdout: "", stderr: "" })
      expect(ours).toEqual({ code: theirs.code, stdout: theirs.stdout, stderr: theirs.stderr })
      for (const signal of ["SIGINT", "SIGTERM"] as const) {
        const them = yield* spawnLive("mosquitto_sub", ["-p", port, "-t", "t"])
        const us = yield* spawnLive("node", [bins.midge, "sub", "-p", port, "-t", "t"])
        yield* Effect.sleep("1 second")
        them.child.kill(signal)
        us.child.kill(signal)
        yield* waitFor(() => them.out.exited && us.out.exited, `both to exit on ${signal}`, 10_000)
        expect([them.out.code, them.out.stderr]).toEqual([255, ""])
        expect([us.out.code, us.out.stderr]).toEqual([255, ""])
      }
    })
  )

  it.scopedLive("-E: exits 0 once the subscriptions are acknowledged; -d shows the SUBSCRIBE options and the granted QoS", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const r = yield* midge("sub", ["-p", String(port), "-t", "x", "-t", "y", "-q", "1", "-E", "-d", "-i", "e1"])
      expect(r.code).toBe(0)
      expect(r.stdout).toBe(
        [
          "Client e1 sending CONNECT",
          "Client e1 received CONNACK (0)",
          "Client e1 sending SUBSCRIBE (Mid: 1, Topic: x, QoS: 1, Options: 0x00)",
          "Client e1 sending SUBSCRIBE (Mid: 1, Topic: y, QoS: 1, Options: 0x00)",
          "Client e1 received SUBACK",
          "Subscribed (mid: 1): 1, 1",
          "Client e1 sending DISCONNECT",
          ""
        ].join("\n")
      )
      const v5 = yield* midge("sub", ["-p", String(port), "-t", "x", "-V", "5", "--nl", "--rap", "--retain-handling", "2", "-E", "-d", "-i", "e5"])
      expect(v5.stdout).toContain("Client e5 sending SUBSCRIBE (Mid: 1, Topic: x, QoS: 0, Options: 0x2c)\n")
      const r2 = yield* midge("sub", ["-p", String(port), "-t", "x", "-V", "5", "-R", "-E", "-d", "-i", "e6"])
      expect(r2.stdout).toContain("Options: 0x20)\n")
    })
  )

  it.scopedLive("-R skips retained messages; --retained-only prints them and exits at the first live one", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const js = yield* connectClient(url)
      yield* publish(js, "r/old", "stale", { retain: true, qos: 1 })
      yield* waitFor(() => broker.stats().retained === 1, "the retained message")
      const fresh = yield* startSub(broker, ["-p", String(port), "-t", "r/#", "-R", "-v", "-C", "1"])
      const only = yield* startSub(broker, ["-p", String(port), "-t", "r/#", "--retained-only", "-v"])
      yield* waitFor(() => only.out.stdout.length > 0, "the retained message printed")
      yield* publish(js, "r/new", "live")
      yield* exited(fresh)
      yield* exited(only)
      expect(fresh.out.stdout).toBe("r/new live\n")
      expect(only.out.stdout).toBe("r/old stale\n")
      expect([fresh.out.code, only.out.code]).toEqual([0, 0])
    })
  )

  it.scopedLive("--remove-retained clears each retained message it receives (-T spares some)", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const js = yield* connectClient(url)
      for (const t of ["k/1", "k/2", "k/keep"]) yield* publish(js, t, "x", { retain: true, qos: 1 })
      yield* waitFor(() => broker.stats().retained === 3, "three retained messages")
      const r = yield* midge("sub", ["-p", String(port), "-t", "k/#", "-T", "k/keep", "--remove-retained", "-v", "-W", "1"])
      expect(r.code).toBe(27)
      // the clearing messages come back too (MQTT 3.1.1 has no no-local)
      expect(r.stdout.split("\n").filter((l) => l !== "").sort()).toEqual(["k/1 (null)", "k/1 x", "k/2 (null)", "k/2 x"])
      yield* waitFor(() => broker.stats().retained === 1, "two retained messages to be removed")
    })
  )

  it.scopedLive("--nl: with --remove-retained the client does not get its own clearing message back", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const js = yield* connectClient(url)
      yield* publish(js, "nl/t", "kept", { retain: true, qos: 1 })
      yield* waitFor(() => broker.stats().retained === 1, "the retained message")
      const own = yield* midge("sub", ["-p", String(port), "-t", "nl/t", "-V", "5", "--remove-retained", "-v", "-C", "2", "-q", "1"])
      expect(own).toMatchObject({ code: 0, stdout: "nl/t kept\nnl/t (null)\n" })
      yield* publish(js, "nl/t", "kept", { retain: true, qos: 1 })
      yield* waitFor(() => broker.stats().retained === 1, "the retained message again")
      const noLocal = yield* midge("sub", ["-p", String(port), "-t", "nl/t", "-V", "5", "--nl", "--remove-retained", "-v", "-W", "1", "-q", "1"])
      expect(noLocal).toMatchObject({ code: 27, stdout: "nl/t kept\n" })
    })
  )

  it.scopedLive("--rap keeps the retain flag of live messages (MQTT 5); without it they arrive with retain 0", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const plain = yield* startSub(broker, ["-p", String(port), "-t", "rap", "-V", "5", "-F", "%r", "-C", "1"])
      const rap = yield* startSub(broker, ["-p", String(port), "-t", "rap", "-V", "5", "--rap", "-F", "%r", "-C", "1"])
      const js = yield* connectClient(url)
      yield* publish(js, "rap", "x", { retain: true })
      yield* exited(plain)
      yield* exited(rap)
      expect([plain.out.stdout, rap.out.stdout]).toEqual(["0\n", "1\n"])
    })
  )

  it.scopedLive("-F with MQTT 5 properties, %j, and --pretty", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const sub = yield* startSub(broker, ["-p", String(port), "-t", "fmt", "-V", "5", "-q", "1", "-C", "2", "-F", "%t|%p|%q|%l|%C|%P|%x"])
      const json = yield* startSub(broker, ["-p", String(port), "-t", "fmt", "-V", "5", "-C", "1", "-F", "%j", "--pretty"])
      const js = yield* connectClient(url, { protocolVersion: 5 })
      yield* publish(js, "fmt", "hi", { qos: 1, properties: { contentType: "text/x", userProperties: { a: "b" } } })
      yield* publish(js, "fmt", "\x01", { qos: 0 })
      yield* exited(sub)
      yield* exited(json)
      expect(sub.out.stdout).toBe("fmt|hi|1|2|text/x|a:b|6869\nfmt|\x01|0|1|||01\n")
      expect(json.out.stdout).toMatch(
        /^\{\n\t"tst":\t"[^"]+",\n\t"topic":\t"fmt",\n\t"qos":\t0,\n\t"retain":\t0,\n\t"payloadlen":\t2,\n\t"properties":\t\{\n\t\t"content-type":\t"text\/x",\n\t\t"user-properties":\t\{\n\t\t\t"a":\t"b"\n\t\t\}\n\t\},\n\t"payload":\t"hi"\n\}\n$/
      )
    })
  )

  it.scopedLive("-c and -U: a persistent session keeps QoS 1 messages while offline; -U removes a subscription from it", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const p = String(port)
      expect((yield* midge("sub", ["-p", p, "-t", "keep", "-t", "drop", "-q", "1", "-c", "-i", "durable", "-E"])).code).toBe(0)
      const js = yield* connectClient(url)
      yield* publish(js, "keep", "while away", { qos: 1 })
      const back = yield* midge("sub", ["-p", p, "-t", "keep", "-q", "1", "-c", "-i", "durable", "-U", "drop", "-C", "1", "-v"])
      expect(back).toMatchObject({ code: 0, stdout: "keep while away\n" })
      yield* publish(js, "drop", "unsubscribed", { qos: 1 })
      yield* publish(js, "keep", "second", { qos: 1 })
      const third = yield* midge("sub", ["-p", p, "-t", "keep", "-q", "1", "-c", "-i", "durable", "-C", "1", "-v", "-W", "5"])
      expect(third).toMatchObject({ code: 0, stdout: "keep second\n" })
    })
  )

  it.scopedLive("-x: an MQTT 5 session expiry of 0 drops the session at disconnect; 60 keeps it", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker()
      const p = String(port)
      const js = yield* connectClient(url)
      for (const [id, expiry] of [["gone", "0"], ["kept", "60"]]) {
        expect((yield* midge("sub", ["-p", p, "-V", "5", "-t", `x/${id}`, "-q", "1", "-c", "-x", expiry, "-i", id, "-E"])).code).toBe(0)
        yield* publish(js, `x/${id}`, id, { qos: 1 })
      }
      const gone = yield* midge("sub", ["-p", p, "-V", "5", "-t", "x/none", "-c", "-i", "gone", "-x", "0", "-W", "1", "-v"])
      expect(gone).toMatchObject({ code: 27, stdout: "" })
      const kept = yield* midge("sub", ["-p", p, "-V", "5", "-t", "x/none", "-c", "-i", "kept", "-C", "1", "-v"])
      expect(kept).toMatchObject({ code: 0, stdout: "x/kept kept\n" })
    })
  )

  it.scopedLive("SIGINT and SIGTERM end it with exit 0", () =>
    Effect.gen(function* () {
      const { port, broker } = yield* startBroker()
      for (const signal of ["SIGINT", "SIGTERM"] as const) {
        const sub = yield* startSub(broker, ["-p", String(port), "-t", "sig"])
        sub.child.kill(signal)
        yield* exited(sub)
        expect(sub.out.code).toBe(0)
      }
    })
  )

  it.scopedLive("--random-filter: 100 prints all, 0.1 almost none", () =>
    Effect.gen(function* () {
      const { port, url, broker } = yield* startBroker()
      const all = yield* startSub(broker, ["-p", String(port), "-t", "rnd", "--random-filter", "100", "-C", "50"])
      const few = yield* startSub(broker, ["-p", String(port), "-t", "rnd", "--random-filter", "0.1", "-C", "50"])
      const js = yield* connectClient(url)
      for (let i = 0; i < 50; i++) yield* publish(js, "rnd", `m${i}`)
      yield* exited(all)
      yield* exited(few)
      expect(all.out.stdout.split("\n").length - 1).toBe(50)
      expect(few.out.stdout.split("\n").length - 1).toBeLessThan(10)
    })
  )

  it.scopedLive("midge-sub is the same tool", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker()
      const r = yield* Effect.promise(() => import("./helpers.js")).pipe(Effect.flatMap((h) => h.run("node", [bins.sub, "-p", String(port), "-t", "x", "-E"])))
      expect(r.code).toBe(0)
    })
  )
})
