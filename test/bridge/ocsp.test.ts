/**
 * bridge_require_ocsp: the check of the stapled OCSP response (src/bridge/internal/ocsp.ts)
 * on responses made by the openssl CLI (./ocspFixtures.ts), a fast-check property for the DER
 * reader, and bridges on real sockets: a Node TLS front stapling a chosen response in front of
 * an in-process Midge remote (every refusal: no CONNECT reaches the remote, the bridge logs the
 * reason and retries), and HAProxy stapling `<crt>.ocsp` in front of Debian's mosquitto.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as tls from "node:tls"
import * as fc from "fast-check"
import { Bridge } from "../../src/bridge/Bridge.js"
import { checkOcsp, LEEWAY_MS, parseOcspResponse } from "../../src/bridge/internal/ocsp.js"
import { Broker } from "../../src/Broker.js"
import { collect, connectClient, publish, settle, startBroker, subscribe, waitFor } from "../e2e/harness.js"
import { startHaproxy } from "../support/processes.js"
import { bridgesOf, startMosquitto, tempDir } from "./harness.js"
import { buildResponse, makeOcspPki, type OcspPki, statusOnly } from "./ocspFixtures.js"

let pki: OcspPki
beforeAll(() => {
  pki = makeOcspPki()
})
afterAll(() => pki?.remove())

const HOUR = 3_600_000
const reason = (der: Buffer | null, now = Date.now()) => {
  const r = checkOcsp(der, pki.chain, now)
  return r._tag === "Good" ? "good" : r.reason
}

describe("checkOcsp on openssl-made responses", () => {
  it("a good status, signed by the issuer or by a delegated responder (ECDSA) it issued, is accepted", () => {
    expect(reason(pki.responses.goodByCa)).toBe("good")
    expect(reason(pki.responses.goodDelegated)).toBe("good")
  })

  it("refusals, with Mosquitto's log lines (lib/net_mosq_ocsp.c)", () => {
    const r = pki.responses
    expect(reason(null)).toBe("OCSP: no response")
    expect(reason(Buffer.alloc(0))).toBe("OCSP: no response")
    expect(reason(Buffer.from("not der"))).toMatch(/^OCSP: invalid response/)
    expect(reason(statusOnly(6))).toBe("OCSP: invalid status: unauthorized (6)")
    expect(reason(statusOnly(3))).toBe("OCSP: invalid status: trylater (3)")
    expect(reason(r.revoked)).toBe("OCSP: SSL certificate status: revoked (1); SSL certificate revocation reason: keyCompromise (1)")
    expect(reason(r.unknown)).toBe("OCSP: SSL certificate status: unknown (2)")
    expect(reason(r.rogueResponder)).toMatch(/^OCSP: response verification failed: responder not authorized/)
    expect(reason(r.noSigningUsage)).toBe("OCSP: response verification failed: responder certificate has no OCSP signing usage")
    // stricter than Mosquitto, which takes any good status signed by the issuer
    expect(reason(r.otherCert)).toBe("OCSP: no status for the remote's certificate in the response")
    // the remote's chain without its issuer
    expect(reason(r.goodByCa, Date.now())).toBe("good")
    expect(checkOcsp(r.goodByCa, pki.chain.slice(0, 1), Date.now())).toMatchObject({ reason: expect.stringMatching(/no issuer certificate/) })
    expect(checkOcsp(r.goodByCa, [], Date.now())).toMatchObject({ reason: "OCSP: we did not receive certificates of the server (num: 0)" })
  })

  it("a corrupted signature, or a response naming the CA but signed with another key, fails verification", () => {
    const bad = Buffer.from(pki.responses.goodByCa)
    bad[bad.length - 1] ^= 0x01 // the last byte is the signature's (no certificates follow)
    expect(reason(bad)).toBe("OCSP: response verification failed: signature failure")
    const forged = buildResponse(pki.certId, { thisUpdate: Date.now() - HOUR, nextUpdate: Date.now() + HOUR, key: pki.rogueKey })
    expect(reason(forged)).toBe("OCSP: response verification failed: signature failure")
  })

  it("OpenSSL's ocsp_check_ids: at least one status, all of one issuer", () => {
    const build = (statuses: ReadonlyArray<Buffer>) =>
      buildResponse(pki.certId, { thisUpdate: Date.now() - HOUR, nextUpdate: Date.now() + HOUR, key: pki.caKey, statuses })
    expect(reason(build([pki.certId, pki.certId]))).toBe("good")
    expect(reason(build([]))).toBe("OCSP: response verification failed: response contains no revocation data")
    expect(reason(build([pki.certId, pki.rogueCertId]))).toBe(
      "OCSP: response verification failed: response contains certificates status information for more than one issuer"
    )
  })

  it("the responses built here read in openssl as they do in Midge", () => {
    const file = path.join(pki.dir, "built.der")
    fs.writeFileSync(file, buildResponse(pki.certId, { thisUpdate: Date.now() - HOUR, nextUpdate: Date.now() + HOUR, key: pki.caKey }))
    const out = execFileSync("openssl", ["ocsp", "-respin", file, "-CAfile", pki.ca, "-issuer", pki.ca, "-cert", pki.serverCert, "-no_nonce"], {
      encoding: "utf8",
      stdio: "pipe"
    })
    expect(out).toContain(`${pki.serverCert}: good`)
    expect(reason(fs.readFileSync(file))).toBe("good")
  })

  it("thisUpdate / nextUpdate with Mosquitto's 300 s of leeway: OCSP_check_validity(thisupd, nextupd, 300, -1)", () => {
    const now = Date.now()
    const at = (thisUpdate: number, nextUpdate?: number) =>
      reason(buildResponse(pki.certId, { thisUpdate, ...(nextUpdate === undefined ? {} : { nextUpdate }), key: pki.caKey }), now)
    expect(LEEWAY_MS).toBe(300_000)
    expect(at(now - HOUR, now - 200_000)).toBe("good")
    expect(at(now - HOUR, now - 400_000)).toBe("OCSP: OCSP response has expired (status expired)")
    expect(at(now + 200_000, now + HOUR)).toBe("good")
    expect(at(now + 400_000, now + HOUR)).toBe("OCSP: OCSP response has expired (status not yet valid)")
    expect(at(now - 1000, now - 2000)).toBe("OCSP: OCSP response has expired (nextupdate before thisupdate)")
    // no nextUpdate: newer information is always available (RFC 6960 4.2.2.1); only thisUpdate is checked
    expect(at(now - 100 * HOUR)).toBe("good")
    // openssl's responses are good for a day (-ndays 1)
    expect(reason(pki.responses.goodByCa, now + 24 * HOUR + 200_000)).toBe("good")
    expect(reason(pki.responses.goodByCa, now + 24 * HOUR + 400_000)).toMatch(/has expired/)
  })
})

describe("the DER reader never crashes and a corrupted staple is never good", () => {
  it.prop("arbitrary bytes are refused, never thrown", [fc.uint8Array({ maxLength: 2048 })], ([bytes]) => {
    const der = Buffer.from(bytes)
    expect(checkOcsp(der, pki.chain, Date.now())._tag).toBe("Refused")
    expect(() => parseOcspResponse(der)).not.toThrow()
  }, { fastCheck: { seed: 6960, numRuns: 2000 } })

  it.prop(
    "a good response with one byte changed is refused (issuer-signed and delegated, ECDSA, responses)",
    [fc.boolean(), fc.nat(), fc.integer({ min: 1, max: 255 })],
    ([delegated, at, xor]) => {
      const good = delegated ? pki.responses.goodDelegated : pki.responses.goodByCa
      const bad = Buffer.from(good)
      bad[at % bad.length] ^= xor
      expect(checkOcsp(bad, pki.chain, Date.now())._tag).toBe("Refused")
    },
    { fastCheck: { seed: 6960, numRuns: 3000 } }
  )

  it("every byte of a good response, flipped; every truncation; a byte appended", () => {
    const now = Date.now()
    for (const good of [pki.responses.goodByCa, pki.responses.goodDelegated]) {
      for (let i = 0; i < good.length; i++) {
        const bad = Buffer.from(good)
        bad[i] ^= 0xff
        expect([i, checkOcsp(bad, pki.chain, now)._tag]).toEqual([i, "Refused"])
        expect([i, checkOcsp(good.subarray(0, i), pki.chain, now)._tag]).toEqual([i, "Refused"])
      }
      expect(checkOcsp(Buffer.concat([good, Buffer.from([0])]), pki.chain, now)._tag).toBe("Refused")
    }
  })
})

// ---------------------------------------------------------------------------
// bridges on real sockets

interface Front {
  readonly port: number
  /** bytes the bridge sent after the handshake (a CONNECT would be some) */
  readonly received: () => number
  readonly handshakes: () => number
  /** handshakes in which the client asked for a stapled response (status_request) */
  readonly ocspRequests: () => number
}

/**
 * A TLS server on 127.0.0.1 with the remote's certificate that staples `staple` (none when
 * undefined) and forwards the bytes to the MQTT broker on `backend`; closed with the scope.
 */
const tlsFront = (backend: number, staple: Buffer | undefined, maxVersion: tls.SecureVersion = "TLSv1.3"): Effect.Effect<Front, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ front: Front; close: () => void }>((resume) => {
      let received = 0
      let handshakes = 0
      let ocspRequests = 0
      const sockets = new Set<net.Socket>()
      const server = tls.createServer({ key: fs.readFileSync(pki.serverKey), cert: fs.readFileSync(pki.serverCert), maxVersion })
      server.on("OCSPRequest", (_cert: Buffer, _issuer: Buffer, cb: (err: Error | null, resp: Buffer | null) => void) => {
        ocspRequests++
        cb(null, staple ?? null)
      })
      server.on("secureConnection", (socket) => {
        handshakes++
        const up = net.connect(backend, "127.0.0.1")
        for (const s of [socket, up]) {
          sockets.add(s)
          s.on("error", () => {})
          s.on("close", () => {
            sockets.delete(s)
            socket.destroy()
            up.destroy()
          })
        }
        socket.on("data", (d: Buffer) => (received += d.length))
        socket.pipe(up)
        up.pipe(socket)
      })
      server.on("tlsClientError", () => {})
      server.listen(0, "127.0.0.1", () =>
        resume(
          Effect.succeed({
            front: {
              port: (server.address() as net.AddressInfo).port,
              received: () => received,
              handshakes: () => handshakes,
              ocspRequests: () => ocspRequests
            },
            close: () => {
              for (const s of sockets) s.destroy()
              server.close()
            }
          })
        )
      )
    }),
    ({ close }) => Effect.sync(close)
  ).pipe(Effect.map(({ front }) => front))

const block = (name: string, port: number, ...lines: Array<string>) =>
  [`connection ${name}`, `address localhost:${port}`, `remote_clientid midge-ocsp-${name}`, `bridge_cafile ${pki.ca}`, "restart_timeout 1", "topic ocsp/# out 1", ...lines].join(
    "\n"
  )

/** A broker with these bridge blocks, and its bridges. */
const bridged = (...blocks: Array<string>) =>
  Effect.gen(function* () {
    const local = yield* startBroker()
    const bridge = yield* Bridge.make(bridgesOf(blocks.join("\n"))).pipe(Effect.provideService(Broker, local.broker))
    return { local, bridge }
  })

/** A message published on `ocsp/x` on `local` reaches a subscriber of `remoteUrl`, once over each of `bridges` bridges. */
const flows = (local: { readonly url: string }, remoteUrl: string, bridges = 1) =>
  Effect.gen(function* () {
    const remoteClient = yield* connectClient(remoteUrl)
    const got = collect(remoteClient)
    yield* subscribe(remoteClient, "ocsp/#", { qos: 1 })
    const localClient = yield* connectClient(local.url)
    yield* publish(localClient, "ocsp/x", "stapled", { qos: 1 })
    yield* waitFor(() => got.length === bridges, "the message over the bridges", 10_000)
    expect(got.map((m) => [m.topic, m.payload])).toEqual(Array(bridges).fill(["ocsp/x", "stapled"]))
  })

describe("bridge_require_ocsp on a bridge", () => {
  it.scopedLive("a good staple (issuer-signed on TLS 1.3, delegated on TLS 1.2): the bridge connects and messages cross", () =>
    Effect.gen(function* () {
      const remote = yield* startBroker()
      const byCa = yield* tlsFront(remote.port, pki.responses.goodByCa)
      const delegated = yield* tlsFront(remote.port, pki.responses.goodDelegated, "TLSv1.2")
      const { local, bridge } = yield* bridged(block("byca", byCa.port, "bridge_require_ocsp true"), block("delegated", delegated.port, "bridge_require_ocsp true"))
      yield* waitFor(() => bridge.status().every((s) => s.state === "connected"), "both bridges to connect", 10_000)
      yield* flows(local, remote.url, 2)
      expect([byCa.ocspRequests(), delegated.ocspRequests()]).toEqual([1, 1])
      expect(remote.log.recent.join("\n")).toContain("midge-ocsp-byca")
    })
  )

  it.scopedLive("no staple, a bad one or a bad status: no CONNECT reaches the remote, the bridge logs why and retries", () =>
    Effect.gen(function* () {
      const remote = yield* startBroker()
      const now = Date.now()
      const cases: ReadonlyArray<readonly [string, Buffer | undefined, string]> = [
        ["none", undefined, "OCSP: no response"],
        ["revoked", pki.responses.revoked, "OCSP: SSL certificate status: revoked (1)"],
        ["unknown", pki.responses.unknown, "OCSP: SSL certificate status: unknown (2)"],
        ["other", pki.responses.otherCert, "OCSP: no status for the remote's certificate in the response"],
        ["rogue", pki.responses.rogueResponder, "OCSP: response verification failed: responder not authorized"],
        ["forged", buildResponse(pki.certId, { thisUpdate: now - HOUR, nextUpdate: now + HOUR, key: pki.rogueKey }), "OCSP: response verification failed: signature failure"],
        ["expired", buildResponse(pki.certId, { thisUpdate: now - HOUR, nextUpdate: now - 400_000, key: pki.caKey }), "OCSP: OCSP response has expired"],
        ["status", statusOnly(6), "OCSP: invalid status: unauthorized (6)"]
      ]
      const fronts = new Map<string, Front>()
      for (const [name, staple] of cases) fronts.set(name, yield* tlsFront(remote.port, staple, name === "revoked" ? "TLSv1.2" : "TLSv1.3"))
      const { local, bridge } = yield* bridged(...cases.map(([name]) => block(name, fronts.get(name)!.port, "bridge_require_ocsp true")))
      const failures = (name: string, why: string) =>
        local.log.recent.filter((l) => l.includes(`Bridge ${name}: unable to connect to localhost:${fronts.get(name)!.port}: ${why}`)).length
      // two attempts each: the failure goes the usual way, and restart_timeout retries it
      yield* waitFor(() => cases.every(([name, , why]) => failures(name, why) >= 2), "two refused attempts of each bridge", 15_000)
      for (const [name] of cases) {
        const f = fronts.get(name)!
        expect([name, bridge.status().find((s) => s.name === name)!.state, f.received(), f.ocspRequests() >= 2]).toEqual([name, expect.not.stringMatching(/^connected$/), 0, true])
      }
      expect(remote.log.recent.join("\n")).not.toContain("midge-ocsp-")
    })
  )

  it.scopedLive("bridge_require_ocsp false (the default) asks for no staple and connects without one", () =>
    Effect.gen(function* () {
      const remote = yield* startBroker()
      const front = yield* tlsFront(remote.port, undefined)
      const { local, bridge } = yield* bridged(block("off", front.port, "bridge_require_ocsp false"), block("default", front.port))
      yield* waitFor(() => bridge.status().every((s) => s.state === "connected"), "both bridges to connect", 10_000)
      yield* flows(local, remote.url, 2)
      expect(front.ocspRequests()).toBe(0)
    })
  )
})

/**
 * HAProxy (Debian's 2.6) terminating TLS with `crt FILE`, stapling `FILE.ocsp`, and forwarding
 * in `mode tcp` to `backend`; SIGKILLed with the scope.
 */
const haproxy = (backend: number, staple: Buffer) =>
  Effect.gen(function* () {
    const crt = path.join(yield* tempDir, "remote.pem")
    // the issuer in the bundle: HAProxy needs it to load the OCSP response
    fs.writeFileSync(crt, [pki.serverCert, pki.serverKey, pki.ca].map((f) => fs.readFileSync(f, "utf8")).join(""))
    fs.writeFileSync(`${crt}.ocsp`, staple)
    return yield* startHaproxy({ backend, serverName: "remote", bind: `ssl crt ${crt}` })
  })

describe("bridge_require_ocsp through HAProxy to Debian mosquitto", () => {
  it.scopedLive("HAProxy staples a good response (delegated responder): the bridge connects and messages reach mosquitto", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const proxy = yield* haproxy(remote.port, pki.responses.goodDelegated)
      const { local, bridge } = yield* bridged(block("haproxy", proxy.port, "bridge_require_ocsp true"))
      yield* waitFor(() => bridge.status()[0].state === "connected", "the bridge to connect through HAProxy", 10_000)
      yield* flows(local, `mqtt://127.0.0.1:${remote.port}`)
      expect(remote.log()).toMatch(/New bridge connected from .* as midge-ocsp-haproxy/)
    })
  )

  it.scopedLive("HAProxy staples a revoked status: mosquitto never sees the bridge", () =>
    Effect.gen(function* () {
      const remote = yield* startMosquitto([])
      const proxy = yield* haproxy(remote.port, pki.responses.revoked)
      const { local, bridge } = yield* bridged(block("haproxy", proxy.port, "bridge_require_ocsp true"))
      const refused = () => local.log.recent.filter((l) => l.includes("Bridge haproxy: unable to connect") && l.includes("OCSP: SSL certificate status: revoked (1)"))
      yield* waitFor(() => refused().length >= 2, "two refused attempts", 10_000)
      yield* settle(200)
      expect(bridge.status()[0].state).not.toBe("connected")
      expect(remote.log()).not.toContain("midge-ocsp-haproxy")
    })
  )
})
