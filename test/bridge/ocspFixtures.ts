/**
 * OCSP fixtures for the bridge_require_ocsp tests, made by the openssl CLI at
 * test time: a CA, the remote's certificate (serial 1001, localhost /
 * 127.0.0.1), a second certificate of the same CA (serial 1002), a delegated
 * responder (EC key, OCSPSigning usage), a responder of the CA without that
 * usage, and a rogue CA with a responder of its own; OCSP responses answered
 * by `openssl ocsp -index ... -reqin ...` from status index files. Responses
 * with chosen times (expired, not yet valid) or a forged signer come from a
 * small DER writer here, signed with node:crypto; the test checks that openssl
 * reads them as it reads its own.
 */
import { execFileSync } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export interface OcspPki {
  readonly dir: string
  readonly ca: string
  readonly serverCert: string
  readonly serverKey: string
  /** the remote's chain as the bridge sees it: server, CA (DER) */
  readonly chain: ReadonlyArray<Buffer>
  /** openssl-made responses (DER), all for the server certificate unless said otherwise */
  readonly responses: {
    /** good, signed by the CA itself, no certificates in the response */
    readonly goodByCa: Buffer
    /** good, signed by the delegated responder (ECDSA), its certificate in the response */
    readonly goodDelegated: Buffer
    readonly revoked: Buffer
    /** the serial is not in the responder's index */
    readonly unknown: Buffer
    /** good, but for the CA's other certificate (serial 1002) */
    readonly otherCert: Buffer
    /** good, signed by a responder of another CA (with the OCSPSigning usage) */
    readonly rogueResponder: Buffer
    /** good, signed by a certificate of the CA without the OCSPSigning usage */
    readonly noSigningUsage: Buffer
  }
  /** the CertID of the server certificate (DER, SHA-1), from openssl's request */
  readonly certId: Buffer
  /** a CertID for the server's serial under the rogue CA (same name, another key) */
  readonly rogueCertId: Buffer
  readonly caKey: crypto.KeyObject
  readonly rogueKey: crypto.KeyObject
  readonly remove: () => void
}

export const makeOcspPki = (): OcspPki => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "midge-ocsp-"))
  const f = (name: string) => path.join(dir, name)
  const ssl = (...args: Array<string>) => execFileSync("openssl", args, { stdio: "pipe" })
  const ext = (name: string, text: string) => {
    fs.writeFileSync(f(name), text)
    return ["-extfile", f(name)]
  }
  const rsa = ["-newkey", "rsa:2048"]
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
  const issue = (name: string, subject: string, ca: string, serial: string, key: Array<string>, extArgs: Array<string> = []) => {
    ssl("req", ...key, "-nodes", "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`), "-subj", subject)
    ssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f(`${ca}.crt`), "-CAkey", f(`${ca}.key`), "-set_serial", serial, "-out", f(`${name}.crt`), "-days", "2", ...extArgs)
  }
  const selfSigned = (name: string, subject: string) =>
    ssl("req", "-x509", ...rsa, "-nodes", "-keyout", f(`${name}.key`), "-out", f(`${name}.crt`), "-days", "2", "-subj", subject)

  selfSigned("ca", "/CN=midge-ocsp-ca")
  selfSigned("rogue-ca", "/CN=midge-ocsp-ca")
  issue("server", "/CN=localhost", "ca", "0x1001", rsa, ext("server.cnf", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"))
  issue("other", "/CN=other", "ca", "0x1002", rsa)
  const signing = () => ext("signing.cnf", "extendedKeyUsage=OCSPSigning\n")
  issue("responder", "/CN=midge-ocsp-responder", "ca", "0x2001", ec, signing())
  issue("plain", "/CN=midge-plain-responder", "ca", "0x2002", rsa)
  issue("rogue-responder", "/CN=midge-ocsp-responder", "rogue-ca", "0x2001", rsa, signing())

  // openssl ca's index.txt: status, expiry, revocation time[,reason], serial, file, subject
  const expiry = "491231235959Z"
  const revokedAt = "250101000000Z,keyCompromise"
  const index = (name: string, lines: Array<string>) => fs.writeFileSync(f(name), lines.map((l) => l + "\n").join(""))
  index("good.txt", [`V\t${expiry}\t\t1001\tunknown\t/CN=localhost`, `V\t${expiry}\t\t1002\tunknown\t/CN=other`])
  index("revoked.txt", [`R\t${expiry}\t${revokedAt}\t1001\tunknown\t/CN=localhost`, `V\t${expiry}\t\t1002\tunknown\t/CN=other`])
  index("unknown.txt", [`V\t${expiry}\t\t1002\tunknown\t/CN=other`])
  for (const cert of ["server", "other"]) ssl("ocsp", "-issuer", f("ca.crt"), "-cert", f(`${cert}.crt`), "-no_nonce", "-reqout", f(`req-${cert}.der`))
  ssl("ocsp", "-issuer", f("rogue-ca.crt"), "-cert", f("server.crt"), "-no_nonce", "-reqout", f("req-rogue.der"))

  const respond = (out: string, options: { index?: string; signer?: string; request?: string; noCerts?: boolean }) => {
    const signer = options.signer ?? "ca"
    ssl(
      "ocsp",
      "-index", f(options.index ?? "good.txt"),
      "-CA", f("ca.crt"),
      "-rsigner", f(`${signer}.crt`),
      "-rkey", f(`${signer}.key`),
      "-reqin", f(`req-${options.request ?? "server"}.der`),
      "-respout", f(out),
      "-ndays", "1",
      ...(options.noCerts === true ? ["-resp_no_certs"] : [])
    )
    return fs.readFileSync(f(out))
  }
  const responses = {
    goodByCa: respond("good-ca.der", { noCerts: true }),
    goodDelegated: respond("good-delegated.der", { signer: "responder" }),
    revoked: respond("revoked.der", { index: "revoked.txt", noCerts: true }),
    unknown: respond("unknown.der", { index: "unknown.txt", noCerts: true }),
    otherCert: respond("other.der", { request: "other", noCerts: true }),
    rogueResponder: respond("rogue.der", { signer: "rogue-responder" }),
    noSigningUsage: respond("plain.der", { signer: "plain" })
  }
  const der = (name: string) => new crypto.X509Certificate(fs.readFileSync(f(name))).raw
  // OCSPRequest > TBSRequest > requestList > Request > CertID: the request holds nothing else (no nonce)
  const certIdOf = (request: string) => {
    let out = fs.readFileSync(f(request))
    for (let i = 0; i < 4; i++) out = out.subarray(2, 2 + out[1])
    return out
  }
  return {
    dir,
    ca: f("ca.crt"),
    serverCert: f("server.crt"),
    serverKey: f("server.key"),
    chain: [der("server.crt"), der("ca.crt")],
    responses,
    certId: certIdOf("req-server.der"),
    rogueCertId: certIdOf("req-rogue.der"),
    caKey: crypto.createPrivateKey(fs.readFileSync(f("ca.key"))),
    rogueKey: crypto.createPrivateKey(fs.readFileSync(f("rogue-ca.key"))),
    remove: () => fs.rmSync(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------
// a DER writer for responses openssl cannot make (times in the past or future, a forged signer)

const tlv = (tag: number, ...parts: Array<Buffer>): Buffer => {
  const body = Buffer.concat(parts)
  const n = body.length
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff])
  return Buffer.concat([Buffer.from([tag]), len, body])
}

const time = (ms: number) => tlv(0x18, Buffer.from(new Date(ms).toISOString().replace(/[-:T]/g, "").replace(/\.\d+Z$/, "Z"), "latin1"))

/** sha256WithRSAEncryption, NULL parameters */
const SHA256_RSA = Buffer.from("300d06092a864886f70d01010b0500", "hex")
const ID_PKIX_OCSP_BASIC = Buffer.from("06092b0601050507300101", "hex")

export interface Built {
  readonly thisUpdate: number
  readonly nextUpdate?: number
  /** the key that signs (RSA); the responder id always names the CA by key hash */
  readonly key: crypto.KeyObject
  /** the CertIDs of the good statuses (default: `certId` alone) */
  readonly statuses?: ReadonlyArray<Buffer>
}

/**
 * A successful basic OCSPResponse with a good SingleResponse for `certId` (or each of `statuses`),
 * the responder named by key hash (the CA's: the CertID's issuerKeyHash, SHA-1
 * as RFC 6960's byKey), signed with `key`.
 */
export const buildResponse = (certId: Buffer, b: Built): Buffer => {
  // CertID: hashAlgorithm (11 bytes), issuerNameHash (22), issuerKeyHash (22)
  const issuerKeyHash = certId.subarray(2 + 11 + 22 + 2, 2 + 11 + 22 + 22)
  const single = (id: Buffer) =>
    tlv(0x30, id, Buffer.from([0x80, 0x00]), time(b.thisUpdate), ...(b.nextUpdate === undefined ? [] : [tlv(0xa0, time(b.nextUpdate))]))
  const tbs = tlv(0x30, tlv(0xa2, tlv(0x04, issuerKeyHash)), time(Date.now()), tlv(0x30, ...(b.statuses ?? [certId]).map(single)))
  const signature = crypto.sign("sha256", tbs, b.key)
  const basic = tlv(0x30, tbs, SHA256_RSA, tlv(0x03, Buffer.from([0]), signature))
  return tlv(0x30, Buffer.from([0x0a, 0x01, 0x00]), tlv(0xa0, tlv(0x30, ID_PKIX_OCSP_BASIC, tlv(0x04, basic))))
}

/** An OCSPResponse with a non-successful status and no body (6: unauthorized) */
export const statusOnly = (status: number): Buffer => Buffer.from([0x30, 0x03, 0x0a, 0x01, status])
