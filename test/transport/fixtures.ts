/**
 * Test fixtures for TLS and WebSocket listeners: a CA, server and client
 * certificates (one revoked, with a CRL) made by `openssl` at test time, and
 * the temporary wiring of a server's sockets to the real connection code
 * (`new Connection(socket, core, hooks, settings)`, as transport/Listener.ts
 * does) until the listeners are wired into the broker.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import type * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Log } from "../../src/log/Log.js"
import { Connection, type ConnectionHooks } from "../../src/session/Connection.js"
import { Core, defaultSettings } from "../../src/session/Core.js"
import type { MqttSocket } from "../../src/transport/websocket.js"

const openssl = (cwd: string, args: ReadonlyArray<string>): string =>
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"] }).toString()

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

export interface Pki {
  readonly dir: string
  readonly caCert: string
  readonly caKey: string
  readonly serverCert: string
  readonly serverKey: string
  readonly clientCert: string
  readonly clientKey: string
  readonly revokedCert: string
  readonly revokedKey: string
  readonly crl: string
  /** subject of the client certificate as `openssl x509 -nameopt RFC2253` prints it */
  readonly clientSubject: string
}

/** A CA signing a server certificate (localhost / 127.0.0.1) and two client certificates. */
export const makePki = (name = "Midge Test CA", clientSubj = "/C=GB/ST=Notts/O=Acme\\, Inc/CN=device-7"): Pki => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-pki-"))
  const run = (...args: Array<string>) => openssl(dir, args)
  run("req", "-x509", ...EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", `/CN=${name}`)
  fs.writeFileSync(path.join(dir, "san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1\n")
  const sign = (base: string, subj: string, ext?: string) => {
    run("req", ...EC, "-keyout", `${base}.key`, "-out", `${base}.csr`, "-subj", subj)
    run("x509", "-req", "-in", `${base}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${base}.crt`, "-days", "2", ...(ext ? ["-extfile", ext] : []))
  }
  sign("server", "/CN=localhost", "san.ext")
  sign("client", clientSubj)
  sign("revoked", "/CN=revoked")
  // a CRL revoking "revoked"
  fs.writeFileSync(path.join(dir, "index.txt"), "")
  fs.writeFileSync(path.join(dir, "crlnumber"), "01\n")
  fs.writeFileSync(
    path.join(dir, "ca.cnf"),
    "[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n"
  )
  run("ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-revoke", "revoked.crt")
  run("ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-gencrl", "-out", "crl.pem")
  const p = (f: string) => path.join(dir, f)
  return {
    dir,
    caCert: p("ca.crt"),
    caKey: p("ca.key"),
    serverCert: p("server.crt"),
    serverKey: p("server.key"),
    clientCert: p("client.crt"),
    clientKey: p("client.key"),
    revokedCert: p("revoked.crt"),
    revokedKey: p("revoked.key"),
    crl: p("crl.pem"),
    clientSubject: subjectRfc2253(p("client.crt"))
  }
}

/** OpenSSL's own RFC 2253 rendering of a certificate's subject (what Mosquitto uses). */
export const subjectRfc2253 = (certFile: string): string =>
  execFileSync("openssl", ["x509", "-in", certFile, "-noout", "-subject", "-nameopt", "RFC2253"]).toString().trim().replace(/^subject=\s*/, "")

/** A certificate with any subject, self-signed, for subject rendering tests. */
export const selfSigned = (dir: string, base: string, subj: string, multivalue = false): string => {
  openssl(dir, ["req", "-x509", ...EC, "-keyout", `${base}.key`, "-out", `${base}.crt`, "-days", "1", "-subj", subj, "-utf8", ...(multivalue ? ["-multivalue-rdn"] : [])])
  return path.join(dir, `${base}.crt`)
}

/** The broker core and the hand-off of accepted sockets to Connection. */
export interface Wired {
  readonly core: Core
  readonly connections: Array<Connection>
  readonly accept: (socket: MqttSocket) => Connection
  readonly shutdown: () => void
}

export const wireConnections = (port = 0): Wired => {
  const log = new Log([], [], false)
  const core = new Core({ ...defaultSettings }, log, () => Date.now())
  const connections: Array<Connection> = []
  const hooks: ConnectionHooks = { sessionStarted: () => {}, closed: () => {} }
  const settings = { port, mountPoint: undefined, maxQos: 2 as const, allowAnonymous: true, allowZeroLengthClientid: true, autoIdPrefix: undefined }
  return {
    core,
    connections,
    // Connection is typed for net.Socket today; an MqttSocket has everything it uses
    accept: (socket) => {
      const c = new Connection(socket as unknown as net.Socket, core, hooks, settings)
      connections.push(c)
      return c
    },
    shutdown: () => {
      for (const c of connections) c.shutdown()
    }
  }
}
