/**
 * The two monitoring layers composed over `Broker.layer`, as docs/monitoring.md
 * shows and as the daemon wires them: `$SYS` and `/metrics` from one broker.
 */
import * as http from "node:http"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Stream } from "effect"
import { Broker } from "../../src/Broker.js"
import { Metrics } from "../../src/sys/Metrics.js"
import * as SysTopics from "../../src/sys/SysTopics.js"
import { waitFor } from "../e2e/harness.js"

const get = (port: number): Effect.Effect<string, Error> =>
  Effect.async<string, Error>((resume) => {
    http
      .get({ host: "127.0.0.1", port, path: "/metrics", agent: false }, (res) => {
        let body = ""
        res.on("data", (d) => (body += d))
        res.on("end", () => resume(Effect.succeed(body)))
      })
      .on("error", (e) => resume(Effect.fail(e)))
  })

describe("monitoring layers over Broker.layer", () => {
  it.scoped("Layer.mergeAll(SysTopics.layer, Metrics.layer) provided by Broker.layer", () =>
    Effect.gen(function* () {
      const monitoring = Layer.mergeAll(
        SysTopics.layer({ interval: 10, version: "0.1.0" }),
        Metrics.layer({ port: 0, host: "127.0.0.1" })
      )
      const app = monitoring.pipe(Layer.provideMerge(Broker.layer({ listeners: [{ port: 0, host: "127.0.0.1" }] })))
      const ctx = yield* Layer.build(app)
      const broker = Context.get(ctx, Broker)
      const metrics = Context.get(ctx, Metrics)

      const got: Array<string> = []
      yield* broker.subscribe("$SYS/broker/version").pipe(
        Stream.runForEach((m) => Effect.sync(() => got.push(m.payload.toString()))),
        Effect.forkScoped
      )
      yield* waitFor(() => got.length === 1, "the retained version")
      expect(got).toEqual(["midge version 0.1.0"])
      // the retained $SYS messages are visible to the scrape
      expect(yield* get(metrics.port)).toMatch(/\nmidge_retained_messages [1-9]\d*\n/)
    })
  )
})
