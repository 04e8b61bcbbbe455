/**
 * How a CONNECT reaches the Authentication service (security/connectAuth.ts):
 * without a fiber when it can be decided at once (a service's plain-callback
 * `decide`, or an `authenticate` that returns an `Exit`), as a fiber of the
 * broker's runtime otherwise. Both paths must give the connection the same
 * outcome; a service that throws or fails refuses with 0x03 / 0x80 and never
 * takes the broker down. Unit tests on the hook, then a real broker on a real
 * socket.
 */
import { createHash, pbkdf2Sync } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc, Layer, Option, Runtime } from "effect"
import { Authentication, type AuthenticationService, type AuthResult, type AuthRequest, make } from "../../src/security/Auth.js"
import { makeAuthHook } from "../../src/security/connectAuth.js"
import type { AuthStepResult, EnhancedAuthenticationService } from "../../src/security/EnhancedAuth.js"
import type { ConnectAuthOutcome, ConnectAuthRequest, ConnectionHooks } from "../../src/session/Connection.js"
import { connectClient, rawClient, startBroker, waitFor } from "../e2e/harness.js"

type Hook = NonNullable<ConnectionHooks["authenticate"]>

const hookOf = (service: AuthenticationService): Hook =>
  makeAuthHook(Runtime.defaultRuntime, Option.some(service), Option.none(), () => true)!

const connectRequest = (r: Partial<ConnectAuthRequest> = {}): ConnectAuthRequest => ({
  clientId: "c1",
  username: undefined,
  password: undefined,
  listenerPort: 1883,
  remoteAddress: "127.0.0.1",
  ...r
})

/** Calls the hook; `now` is the outcome if it was decided during the call. */
const ask = (hook: Hook, request: ConnectAuthRequest) => {
  const outcomes: Array<ConnectAuthOutcome> = []
  hook(undefined as never, request, (o) => outcomes.push(o))
  const now = outcomes[0]
  return {
    now,
    outcomes,
    later: waitFor(() => outcomes.length > 0, "the authentication outcome").pipe(Effect.map(() => outcomes[0]))
  }
}

const FAILED = { _tag: "Refuse", v4Code: 0x03, v5Code: 0x80 }

describe("connectAuth: the CONNECT's way to the Authentication service", () => {
  it("a service with a plain-callback decide is answered during the call; its authenticate is not run", () => {
    let effects = 0
    const hook = hookOf({
      authenticate: () => Effect.sync(() => void effects++).pipe(Effect.as<AuthResult>({ ok: false, reason: "not-authorised" })),
      decide: (request, done) => done(request.username === "ann" ? { ok: true, username: "ann" } : { ok: false, reason: "bad-credentials" })
    })
    expect(ask(hook, connectRequest({ username: "ann" })).now).toEqual({ _tag: "Accept", username: "ann", userProperties: undefined })
    expect(ask(hook, connectRequest({ username: "bob" })).now).toMatchObject({ _tag: "Refuse", v4Code: 0x04, v5Code: 0x86 })
    expect(effects).toBe(0)
  })

  it("the file-based service decides an anonymous CONNECT, and a refused one, during the call", () =>
    Effect.runPromise(
      Effect.gen(function* () {
        const open = hookOf((yield* make({ allowAnonymous: true })).authentication)
        expect(ask(open, connectRequest()).now).toEqual({ _tag: "Accept", username: undefined, userProperties: undefined })
        const closed = hookOf((yield* make({ allowAnonymous: false })).authentication)
        expect(ask(closed, connectRequest({ username: "x" })).now).toMatchObject({ _tag: "Refuse", v4Code: 0x05, v5Code: 0x87 })
        const prefixed = hookOf((yield* make({ allowAnonymous: true, clientidPrefixes: "sec-" })).authentication)
        expect(ask(prefixed, connectRequest({ clientId: "other" })).now).toMatchObject({ _tag: "Refuse", v4Code: 0x05 })
      })
    ))

  it("an authenticate that returns an Exit (Effect.succeed / fail / die) is read at once", () => {
    const hook = hookOf(
      Authentication.make((request) =>
        request.username === "ok"
          ? Effect.succeed<AuthResult>({ ok: true, username: "ok", userProperties: { tier: "gold" } })
          : request.username === "fail"
            ? (Effect.fail("no") as unknown as Effect.Effect<AuthResult>)
            : Effect.die("boom")
      )
    )
    expect(ask(hook, connectRequest({ username: "ok" })).now).toEqual({ _tag: "Accept", username: "ok", userProperties: { tier: "gold" } })
    expect(ask(hook, connectRequest({ username: "fail" })).now).toMatchObject(FAILED)
    expect(ask(hook, connectRequest({ username: "die" })).now).toMatchObject(FAILED)
  })

  it.live("any other effect runs as a fiber: the outcome comes later, a failure refuses with 0x03 / 0x80", () =>
    Effect.gen(function* () {
      const hook = hookOf(
        Authentication.make((request) =>
          Effect.sleep("5 millis").pipe(
            Effect.zipRight(request.username === "die" ? Effect.die("boom") : Effect.succeed<AuthResult>({ ok: true, username: `${request.username}!` }))
          )
        )
      )
      const accepted = ask(hook, connectRequest({ username: "ann" }))
      expect(accepted.now).toBeUndefined()
      expect(yield* accepted.later).toEqual({ _tag: "Accept", username: "ann!", userProperties: undefined })
      const died = ask(hook, connectRequest({ username: "die" }))
      expect(died.now).toBeUndefined()
      expect(yield* died.later).toMatchObject(FAILED)
    })
  )

  it("a service that throws instead of failing refuses with 0x03 / 0x80 (authenticate and decide alike)", () => {
    const throwing = hookOf(
      Authentication.make(() => {
        throw new Error("bug in a user's service")
      })
    )
    expect(ask(throwing, connectRequest()).now).toMatchObject(FAILED)
    const throwingDecide = hookOf({
      authenticate: () => Effect.die("unused"),
      decide: () => {
        throw new Error("bug")
      }
    })
    expect(ask(throwingDecide, connectRequest()).now).toMatchObject(FAILED)
    const undecided = hookOf(Authentication.fromDecision((_request, done) => done(undefined)))
    expect(ask(undecided, connectRequest()).now).toMatchObject(FAILED)
  })

  it("an exception from the connection's handling of the answer is the connection's, not a service failure", () => {
    const hook = hookOf(Authentication.fromDecision((request, done) => done({ ok: true, username: request.username })))
    const outcomes: Array<ConnectAuthOutcome> = []
    expect(() =>
      hook(undefined as never, connectRequest(), (o) => {
        outcomes.push(o)
        throw new Error("in the connection")
      })
    ).toThrow("in the connection")
    expect(outcomes).toEqual([{ _tag: "Accept", username: undefined, userProperties: undefined }])
  })

  it.live("v5 enhanced authentication: a step that is an Exit is answered during the call, any other effect on a fiber; both continue", () =>
    Effect.gen(function* () {
      const challenge = (delayed: boolean): EnhancedAuthenticationService => ({
        methods: ["CHALLENGE"],
        step: (req) => {
          const result: AuthStepResult =
            req.step === 0
              ? { _tag: "Continue", data: Buffer.from("nonce"), state: "nonce" }
              : req.data?.toString() === `answer:${String(req.state)}`
                ? { _tag: "Success", username: "challenged" }
                : { _tag: "Failure", reason: "wrong answer" }
          return delayed ? Effect.sleep("5 millis").pipe(Effect.as(result)) : Effect.succeed(result)
        }
      })
      for (const delayed of [false, true]) {
        const hook = makeAuthHook(Runtime.defaultRuntime, Option.none(), Option.some(challenge(delayed)), () => true)!
        const first = ask(hook, connectRequest({ method: "CHALLENGE" }))
        expect(first.now === undefined).toBe(delayed)
        const step0 = yield* first.later
        if (step0._tag !== "Continue") throw new Error(`expected Continue, got ${step0._tag}`)
        expect(step0.data?.toString()).toBe("nonce")
        step0.next(Buffer.from("answer:nonce"))
        yield* waitFor(() => first.outcomes.length === 2, "the second step")
        expect(first.outcomes[1]).toMatchObject({ _tag: "Accept", username: "challenged" })
      }
    })
  )

  it("Authentication.fromDecision: authenticate is the same decision as an Effect, a missing answer a defect", () =>
    Effect.runPromise(
      Effect.gen(function* () {
        const service = Authentication.fromDecision((request, done) =>
          request.username === undefined ? done(undefined) : setTimeout(() => done({ ok: true, username: request.username }), 1)
        )
        expect(yield* service.authenticate({ ...connectRequest({ username: "u" }) })).toEqual({ ok: true, username: "u" })
        const exit = yield* Effect.exit(service.authenticate(connectRequest()))
        expect(exit._tag).toBe("Failure")
      })
    ))

  // The file-based service's decisions through the fast path (decide, no fiber) and through the
  // fiber path (the same service's authenticate, made asynchronous) are the same for any request.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-connect-auth-"))
  const sha = (password: string, salt: Buffer) => createHash("sha512").update(password).update(salt).digest("base64")
  const salt = Buffer.alloc(12, 7)
  const passwordFile = path.join(dir, "passwd")
  fs.writeFileSync(
    passwordFile,
    [
      `ann:$6$${salt.toString("base64")}$${sha("ann-pw", salt)}`,
      `bob:$6$${salt.toString("base64")}$${sha("bob-pw", salt)}`,
      // PBKDF2 (Mosquitto 2.0's default): answered later, from Node's thread pool
      `cat:$7$101$${salt.toString("base64")}$${pbkdf2Sync("cat-pw", salt, 101, 64, "sha512").toString("base64")}`
    ].join("\n") + "\n"
  )
  const requestArb: fc.Arbitrary<AuthRequest> = fc.record({
    clientId: fc.constantFrom("c1", "sec-1", "sec-2", ""),
    username: fc.option(fc.constantFrom("ann", "bob", "cat", "dan"), { nil: undefined }),
    password: fc.option(fc.constantFrom("ann-pw", "bob-pw", "cat-pw", "x", "").map((s) => Buffer.from(s)), { nil: undefined }),
    listenerPort: fc.constantFrom(1883, 1884),
    remoteAddress: fc.constant("127.0.0.1"),
    tlsUsername: fc.constantFrom(undefined, "identity" as const, "subject" as const),
    certificateCommonName: fc.option(fc.constantFrom("dev-1"), { nil: undefined }),
    certificateSubject: fc.option(fc.constantFrom("CN=dev-1,O=Acme"), { nil: undefined })
  })

  it.live.prop(
    "the fast path and the fiber path give the same outcome for any request [file-based service]",
    {
      request: requestArb,
      allowAnonymous: fc.boolean(),
      withPasswordFile: fc.boolean(),
      prefixes: fc.constantFrom(undefined, "sec-")
    },
    ({ allowAnonymous, prefixes, request, withPasswordFile }) =>
      Effect.gen(function* () {
        const { authentication } = yield* make({
          allowAnonymous,
          clientidPrefixes: prefixes,
          passwordFile: withPasswordFile ? passwordFile : undefined,
          perListener: [{ port: 1884, allowAnonymous: !allowAnonymous }]
        })
        const { password, tlsUsername, certificateCommonName, certificateSubject, ...rest } = request
        const connect: ConnectAuthRequest = {
          ...rest,
          password,
          tls: tlsUsername === undefined ? undefined : { tlsUsername, certificateCommonName, certificateSubject }
        }
        const fast = ask(hookOf(authentication), connect)
        // the same decision, as an effect that is not an Exit: a fiber per CONNECT
        const viaFiber = ask(hookOf(Authentication.make((r) => Effect.yieldNow().pipe(Effect.zipRight(authentication.authenticate(r))))), connect)
        expect(viaFiber.now).toBeUndefined()
        const a = yield* fast.later
        const b = yield* viaFiber.later
        expect(a).toEqual(b)
        expect(fast.outcomes).toHaveLength(1)
        // synchronous unless a PBKDF2 hash had to be computed
        if (request.username !== "cat") expect(fast.now).toBeDefined()
      }),
    { fastCheck: { numRuns: 150, seed: 1010 } }
  )
})

describe("connectAuth on a real broker", () => {
  /** an asynchronous service (a fiber per CONNECT): "slow" gets in after 30 ms, "boom" throws, "die" dies */
  const Slow = Layer.succeed(
    Authentication,
    Authentication.make((request) => {
      if (request.username === "boom") throw new Error("bug in the service")
      return Effect.sleep("30 millis").pipe(
        Effect.zipRight(
          request.username === "die"
            ? Effect.die("service down")
            : Effect.succeed<AuthResult>(request.username === "slow" ? { ok: true, username: "slow" } : { ok: false, reason: "not-authorised" })
        )
      )
    })
  )
  const CONNECT = (username: string) => {
    const body = [0, 4, ...Buffer.from("MQTT"), 4, 0x82, 0, 0, 0, 2, ...Buffer.from("c1"), 0, username.length, ...Buffer.from(username)]
    return [0x10, body.length, ...body]
  }

  it.scopedLive("an asynchronous service decides on its fiber; what the client sent meanwhile is answered after CONNACK", () =>
    Effect.gen(function* () {
      const { port } = yield* startBroker().pipe(Effect.provide(Slow))
      const c = yield* rawClient(port)
      // CONNECT and PINGREQ in one write: the PINGREQ waits for the decision
      yield* c.write([...CONNECT("slow"), 0xc0, 0x00])
      yield* waitFor(() => c.data().length >= 6, "CONNACK and PINGRESP")
      expect([...c.data()]).toEqual([0x20, 0x02, 0x00, 0x00, 0xd0, 0x00])
      const refused = yield* rawClient(port)
      yield* refused.write(CONNECT("eve"))
      yield* refused.waitClosed()
      expect([...refused.data()]).toEqual([0x20, 0x02, 0x00, 0x05])
    })
  )

  it.scopedLive("a service that throws or dies: CONNACK 0x03, and the broker goes on serving", () =>
    Effect.gen(function* () {
      const { port, url } = yield* startBroker().pipe(Effect.provide(Slow))
      for (const username of ["boom", "die"]) {
        const c = yield* rawClient(port)
        yield* c.write(CONNECT(username))
        yield* c.waitClosed()
        expect([...c.data()]).toEqual([0x20, 0x02, 0x00, 0x03])
      }
      const client = yield* connectClient(url, { username: "slow", clientId: "after" })
      expect(client.connected).toBe(true)
    })
  )
})
