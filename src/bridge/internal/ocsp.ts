/**
 * `bridge_require_ocsp`: the check of the OCSP response the remote broker
 * staples in the TLS handshake (RFC 6960), as Mosquitto's
 * mosquitto__verify_ocsp_status_cb (lib/net_mosq_ocsp.c) does it with
 * OpenSSL. Node asks for the staple (`requestOCSP`) and hands over the DER
 * bytes unchecked; this module decodes and checks them: a small DER reader,
 * bounds-checked everywhere (a remote's bytes must never crash the broker),
 * and node:crypto for hashes and signatures. Pure functions; the socket
 * module calls `checkOcsp` before the bridge sends CONNECT.
 *
 * Each refusal reason is Mosquitto's log line where it has one ("OCSP: ...").
 * Departures, all stricter than Mosquitto: the response must hold a status
 * for the remote's own certificate (CertID: hash algorithm, issuer name and
 * key hashes, serial number), where Mosquitto accepts a good response the
 * issuer signed for any of its certificates; the signer is found among the
 * response's certificates and the remote's chain as OCSP_basic_verify does,
 * but only the issuer itself or a responder it issued directly with the
 * OCSPSigning extended key usage is accepted (OCSP_basic_verify's rules with
 * flags 0, less its fallback to a root CA with an explicit OCSP-signing
 * trust setting). RSA-PSS and DSA signatures are not supported (refused).
 */
import * as crypto from "node:crypto"

// ---------------------------------------------------------------------------
// DER reader

/** Thrown inside the reader only; `checkOcsp` turns it into a refusal. */
class DerError extends Error {}

/** One DER element: its tag byte and where its value lies in the buffer. */
interface Tlv {
  readonly tag: number
  readonly start: number
  readonly valueStart: number
  readonly end: number
}

const SEQUENCE = 0x30
const INTEGER = 0x02
const BIT_STRING = 0x03
const OCTET_STRING = 0x04
const NULL = 0x05
const OID = 0x06
const ENUMERATED = 0x0a
const GENERALIZED_TIME = 0x18
/** context-specific tags: [n] constructed is 0xa0 + n, [n] primitive 0x80 + n */
const ctx = (n: number) => 0xa0 + n
const ctxPrimitive = (n: number) => 0x80 + n

/** The elements of one constructed value, read in order; every length is checked against its parent's end. */
class Reader {
  private pos: number
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number
  ) {
    this.pos = start
  }

  static of(buf: Buffer, t: Tlv): Reader {
    return new Reader(buf, t.valueStart, t.end)
  }

  get done(): boolean {
    return this.pos >= this.end
  }

  peek(): number | undefined {
    return this.pos < this.end ? this.buf[this.pos] : undefined
  }

  next(tag: number, what: string): Tlv {
    const b = this.buf
    if (this.pos + 2 > this.end) throw new DerError(`${what}: truncated`)
    const t = b[this.pos]
    if (t !== tag) throw new DerError(`${what}: unexpected tag 0x${t.toString(16)}`)
    let len = b[this.pos + 1]
    let p = this.pos + 2
    if (len & 0x80) {
      // long form; 0x80 alone is BER's indefinite length, not DER; 4 bytes are more than any staple
      const n = len & 0x7f
      if (n === 0 || n > 4 || p + n > this.end) throw new DerError(`${what}: bad length`)
      len = 0
      for (let i = 0; i < n; i++) len = len * 256 + b[p++]
    }
    if (len > this.end - p) throw new DerError(`${what}: truncated`)
    const out = { tag: t, start: this.pos, valueStart: p, end: p + len }
    this.pos = out.end
    return out
  }

  optional(tag: number, what: string): Tlv | undefined {
    return this.peek() === tag ? this.next(tag, what) : undefined
  }

  /** the elements of the next constructed element */
  enter(tag: number, what: string): Reader {
    return Reader.of(this.buf, this.next(tag, what))
  }

  finish(what: string): void {
    if (!this.done) throw new DerError(`${what}: unexpected trailing data`)
  }
}

const empty = (t: Tlv, what: string): void => {
  if (t.end !== t.valueStart) throw new DerError(`${what}: not empty`)
}

const value = (buf: Buffer, t: Tlv): Buffer => buf.subarray(t.valueStart, t.end)
const whole = (buf: Buffer, t: Tlv): Buffer => buf.subarray(t.start, t.end)

const oidString = (bytes: Buffer): string => {
  if (bytes.length === 0 || (bytes[bytes.length - 1] & 0x80) !== 0) throw new DerError("bad object identifier")
  const arcs: Array<number> = []
  let n = 0
  for (const byte of bytes) {
    n = n * 128 + (byte & 0x7f)
    if (n > Number.MAX_SAFE_INTEGER / 128) throw new DerError("bad object identifier")
    if ((byte & 0x80) === 0) {
      if (arcs.length === 0) arcs.push(n < 80 ? Math.floor(n / 40) : 2, n < 80 ? n % 40 : n - 80)
      else arcs.push(n)
      n = 0
    }
  }
  return arcs.join(".")
}

const readOid = (r: Reader, what: string): string => oidString(value(r.buf, r.next(OID, what)))

const smallInt = (bytes: Buffer, what: string): number => {
  if (bytes.length === 0 || bytes.length > 2) throw new DerError(`${what}: bad value`)
  return bytes.length === 1 ? bytes[0] : bytes[0] * 256 + bytes[1]
}

/** GeneralizedTime `YYYYMMDDHHMMSS[.fff]Z` (RFC 5280 form; OpenSSL also takes fractions), in ms since the epoch */
const generalizedTime = (bytes: Buffer, what: string): number => {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\.\d+)?Z$/.exec(bytes.toString("latin1"))
  if (m === null) throw new DerError(`${what}: bad time`)
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number)
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) throw new DerError(`${what}: bad time`)
  return Date.UTC(y, mo - 1, d, h, mi, s) + (m[7] === undefined ? 0 : Math.floor(Number(m[7]) * 1000))
}

/**
 * AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }. The hashes and
 * signatures supported here take no parameters, or NULL; anything else is refused (the
 * signatureAlgorithm is outside the signed bytes: nothing else would notice a change there).
 */
const algorithm = (r: Reader, what: string): string => {
  const a = r.enter(SEQUENCE, what)
  const oid = readOid(a, what)
  const params = a.optional(NULL, what)
  if (params !== undefined) empty(params, what)
  a.finish(what)
  return oid
}

// ---------------------------------------------------------------------------
// OCSP structures (RFC 6960 section 4.2.1)

export type CertStatus = "good" | "revoked" | "unknown"

export interface CertId {
  readonly hashAlgorithm: string
  readonly issuerNameHash: Buffer
  readonly issuerKeyHash: Buffer
  /** the INTEGER's content bytes, as in the certificate */
  readonly serial: Buffer
}

export interface SingleResponse {
  readonly certId: CertId
  readonly status: CertStatus
  /** CRLReason of a revoked certificate, -1 when absent (OpenSSL's value) */
  readonly revocationReason: number
  readonly thisUpdate: number
  readonly nextUpdate: number | undefined
}

export type ResponderId = { readonly byName: Buffer } | { readonly byKey: Buffer }

export interface BasicResponse {
  /** the DER of tbsResponseData: what the signature covers */
  readonly signed: Buffer
  readonly responderId: ResponderId
  readonly responses: ReadonlyArray<SingleResponse>
  readonly signatureAlgorithm: string
  readonly signature: Buffer
  /** DER certificates the responder included */
  readonly certs: ReadonlyArray<Buffer>
}

export interface OcspResponse {
  /** OCSPResponseStatus: 0 successful */
  readonly status: number
  /** present when successful and of type id-pkix-ocsp-basic */
  readonly basic: BasicResponse | undefined
}

const ID_PKIX_OCSP_BASIC = "1.3.6.1.5.5.7.48.1.1"

const certId = (r: Reader): CertId => {
  const c = r.enter(SEQUENCE, "CertID")
  const out = {
    hashAlgorithm: algorithm(c, "CertID hashAlgorithm"),
    issuerNameHash: value(c.buf, c.next(OCTET_STRING, "issuerNameHash")),
    issuerKeyHash: value(c.buf, c.next(OCTET_STRING, "issuerKeyHash")),
    serial: value(c.buf, c.next(INTEGER, "serialNumber"))
  }
  c.finish("CertID")
  return out
}

const singleResponse = (r: Reader): SingleResponse => {
  const s = r.enter(SEQUENCE, "SingleResponse")
  const id = certId(s)
  let status: CertStatus
  let revocationReason = -1
  // CertStatus ::= CHOICE { good [0] IMPLICIT NULL, revoked [1] IMPLICIT RevokedInfo, unknown [2] IMPLICIT UnknownInfo }
  switch (s.peek()) {
    case ctxPrimitive(0):
      empty(s.next(ctxPrimitive(0), "good"), "good")
      status = "good"
      break
    case ctx(1): {
      const rev = s.enter(ctx(1), "RevokedInfo")
      generalizedTime(value(rev.buf, rev.next(GENERALIZED_TIME, "revocationTime")), "revocationTime")
      const reason = rev.optional(ctx(0), "revocationReason")
      if (reason !== undefined) {
        const inner = Reader.of(rev.buf, reason)
        revocationReason = smallInt(value(inner.buf, inner.next(ENUMERATED, "CRLReason")), "CRLReason")
        inner.finish("revocationReason")
      }
      rev.finish("RevokedInfo")
      status = "revoked"
      break
    }
    case ctxPrimitive(2):
      empty(s.next(ctxPrimitive(2), "unknown"), "unknown")
      status = "unknown"
      break
    default:
      throw new DerError("CertStatus: unexpected tag")
  }
  const thisUpdate = generalizedTime(value(s.buf, s.next(GENERALIZED_TIME, "thisUpdate")), "thisUpdate")
  let nextUpdate: number | undefined
  const next = s.optional(ctx(0), "nextUpdate")
  if (next !== undefined) {
    const inner = Reader.of(s.buf, next)
    nextUpdate = generalizedTime(value(inner.buf, inner.next(GENERALIZED_TIME, "nextUpdate")), "nextUpdate")
    inner.finish("nextUpdate")
  }
  s.optional(ctx(1), "singleExtensions")
  s.finish("SingleResponse")
  return { certId: id, status, revocationReason, thisUpdate, nextUpdate }
}

const basicResponse = (buf: Buffer): BasicResponse => {
  const top = new Reader(buf, 0, buf.length)
  const b = top.enter(SEQUENCE, "BasicOCSPResponse")
  top.finish("BasicOCSPResponse")
  const tbsTlv = b.next(SEQUENCE, "tbsResponseData")
  const tbs = Reader.of(buf, tbsTlv)
  const version = tbs.optional(ctx(0), "version")
  if (version !== undefined) {
    const v = Reader.of(buf, version)
    if (smallInt(value(buf, v.next(INTEGER, "version")), "version") !== 0) throw new DerError("version: not v1")
    v.finish("version")
  }
  let responderId: ResponderId
  if (tbs.peek() === ctx(1)) {
    const n = tbs.enter(ctx(1), "responderID byName")
    responderId = { byName: whole(buf, n.next(SEQUENCE, "responderID Name")) }
    n.finish("responderID")
  } else {
    const k = tbs.enter(ctx(2), "responderID byKey")
    responderId = { byKey: value(buf, k.next(OCTET_STRING, "responderID KeyHash")) }
    k.finish("responderID")
  }
  generalizedTime(value(buf, tbs.next(GENERALIZED_TIME, "producedAt")), "producedAt")
  const list = tbs.enter(SEQUENCE, "responses")
  const responses: Array<SingleResponse> = []
  while (!list.done) responses.push(singleResponse(list))
  tbs.optional(ctx(1), "responseExtensions")
  tbs.finish("tbsResponseData")
  const signatureAlgorithm = algorithm(b, "signatureAlgorithm")
  const bits = value(buf, b.next(BIT_STRING, "signature"))
  if (bits.length === 0 || bits[0] !== 0) throw new DerError("signature: bad bit string")
  const certs: Array<Buffer> = []
  const certsTlv = b.optional(ctx(0), "certs")
  if (certsTlv !== undefined) {
    const outer = Reader.of(buf, certsTlv)
    const seq = outer.enter(SEQUENCE, "certs")
    outer.finish("certs")
    while (!seq.done) certs.push(whole(buf, seq.next(SEQUENCE, "certificate")))
  }
  b.finish("BasicOCSPResponse")
  return { signed: whole(buf, tbsTlv), responderId, responses, signatureAlgorithm, signature: bits.subarray(1), certs }
}

/** Decode an OCSPResponse (throws DerError). */
const decode = (der: Buffer): OcspResponse => {
  const top = new Reader(der, 0, der.length)
  const r = top.enter(SEQUENCE, "OCSPResponse")
  top.finish("OCSPResponse")
  const status = smallInt(value(der, r.next(ENUMERATED, "responseStatus")), "responseStatus")
  const bytesTlv = r.optional(ctx(0), "responseBytes")
  r.finish("OCSPResponse")
  if (bytesTlv === undefined) return { status, basic: undefined }
  const outer = Reader.of(der, bytesTlv)
  const rb = outer.enter(SEQUENCE, "ResponseBytes")
  outer.finish("responseBytes")
  const type = readOid(rb, "responseType")
  const response = value(der, rb.next(OCTET_STRING, "response"))
  rb.finish("ResponseBytes")
  return { status, basic: type === ID_PKIX_OCSP_BASIC ? basicResponse(response) : undefined }
}

/** An OCSPResponse from its DER bytes, or why it is not one (never throws). */
export const parseOcspResponse = (der: Buffer): OcspResponse | string => {
  try {
    return decode(der)
  } catch (e) {
    return e instanceof DerError ? e.message : String(e)
  }
}

// ---------------------------------------------------------------------------
// certificates: the fields OCSP identifies them by

interface CertFields {
  readonly serial: Buffer
  readonly subject: Buffer
  /** the subjectPublicKey BIT STRING's bytes, without the unused-bits byte (what key hashes cover) */
  readonly publicKey: Buffer
}

/** serial, subject and public key bits of a DER certificate (throws DerError) */
const certFields = (der: Buffer): CertFields => {
  const top = new Reader(der, 0, der.length)
  const cert = top.enter(SEQUENCE, "Certificate")
  const tbs = cert.enter(SEQUENCE, "tbsCertificate")
  tbs.optional(ctx(0), "version")
  const serial = value(der, tbs.next(INTEGER, "serialNumber"))
  tbs.next(SEQUENCE, "signature")
  tbs.next(SEQUENCE, "issuer")
  tbs.next(SEQUENCE, "validity")
  const subject = whole(der, tbs.next(SEQUENCE, "subject"))
  const spki = tbs.enter(SEQUENCE, "subjectPublicKeyInfo")
  spki.next(SEQUENCE, "algorithm")
  const bits = value(der, spki.next(BIT_STRING, "subjectPublicKey"))
  if (bits.length === 0) throw new DerError("subjectPublicKey: empty")
  return { serial, subject, publicKey: bits.subarray(1) }
}

// ---------------------------------------------------------------------------
// the check

/** CertID hash algorithms OpenSSL builds CertIDs with */
const HASHES: Readonly<Record<string, string>> = {
  "1.3.14.3.2.26": "sha1",
  "2.16.840.1.101.3.4.2.1": "sha256",
  "2.16.840.1.101.3.4.2.2": "sha384",
  "2.16.840.1.101.3.4.2.3": "sha512"
}

/** signature algorithms: the digest crypto.verify takes (null: the key type decides, EdDSA) */
const SIGNATURES: Readonly<Record<string, string | null>> = {
  "1.2.840.113549.1.1.5": "sha1",
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.2.840.10045.4.1": "sha1",
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.3.101.112": null,
  "1.3.101.113": null
}

const OCSP_SIGNING = "1.3.6.1.5.5.7.3.9"

/** OpenSSL's OCSP_response_status_str */
const RESPONSE_STATUS: Readonly<Record<number, string>> = {
  0: "successful",
  1: "malformedrequest",
  2: "internalerror",
  3: "trylater",
  5: "sigrequired",
  6: "unauthorized"
}

/** OpenSSL's OCSP_crl_reason_str */
const CRL_REASONS: Readonly<Record<number, string>> = {
  0: "unspecified",
  1: "keyCompromise",
  2: "cACompromise",
  3: "affiliationChanged",
  4: "superseded",
  5: "cessationOfOperation",
  6: "certificateHold",
  8: "removeFromCRL"
}

const STATUS_CODE: Readonly<Record<CertStatus, number>> = { good: 0, revoked: 1, unknown: 2 }

/** Mosquitto accepts a staple up to 5 minutes after it expired: OCSP_check_validity(thisupd, nextupd, 300, -1) */
export const LEEWAY_MS = 300_000

export type OcspCheck = { readonly _tag: "Good" } | { readonly _tag: "Refused"; readonly reason: string }

const refused = (reason: string): OcspCheck => ({ _tag: "Refused", reason })
const verifyFailed = (why: string): OcspCheck => refused(`OCSP: response verification failed: ${why}`)

const hash = (algorithm: string, data: Buffer): Buffer => crypto.createHash(algorithm).update(data).digest()

/** Does `id` name the certificate `leaf` of issuer `issuer`? */
const matches = (id: CertId, leaf: CertFields, issuer: CertFields): boolean => {
  const h = HASHES[id.hashAlgorithm]
  return (
    h !== undefined &&
    id.serial.equals(leaf.serial) &&
    id.issuerNameHash.equals(hash(h, issuer.subject)) &&
    id.issuerKeyHash.equals(hash(h, issuer.publicKey))
  )
}

interface Candidate {
  readonly x509: crypto.X509Certificate
  readonly fields: CertFields
}

const candidate = (der: Buffer): Candidate | undefined => {
  try {
    return { x509: new crypto.X509Certificate(der), fields: certFields(der) }
  } catch {
    return undefined
  }
}

/** OCSP_check_validity(thisUpdate, nextUpdate, 300, -1): undefined when valid at `now`, else OpenSSL's reason */
const validity = (s: SingleResponse, now: number): string | undefined => {
  if (s.thisUpdate > now + LEEWAY_MS) return "status not yet valid"
  if (s.nextUpdate === undefined) return undefined
  if (s.nextUpdate < now - LEEWAY_MS) return "status expired"
  if (s.nextUpdate < s.thisUpdate) return "nextupdate before thisupdate"
  return undefined
}

/**
 * Check the stapled OCSP response `der` (undefined or empty when none came)
 * for the remote's certificate `chain[0]`, issued by `chain[1]` (the chain
 * as the TLS handshake verified it, DER), at time `now` (ms). Never throws.
 */
export const checkOcsp = (der: Buffer | null | undefined, chain: ReadonlyArray<Buffer>, now: number): OcspCheck => {
  try {
    return check(der, chain, now)
  } catch (e) {
    // the reader's and node:crypto's exceptions alike: a staple the check cannot read is refused
    return refused(`OCSP: invalid response (${e instanceof Error ? e.message : String(e)})`)
  }
}

const check = (der: Buffer | null | undefined, chain: ReadonlyArray<Buffer>, now: number): OcspCheck => {
  if (der === null || der === undefined || der.length === 0) return refused("OCSP: no response")
  const parsed = parseOcspResponse(der)
  if (typeof parsed === "string") return refused(`OCSP: invalid response (${parsed})`)
  if (parsed.status !== 0) return refused(`OCSP: invalid status: ${RESPONSE_STATUS[parsed.status] ?? "(UNKNOWN)"} (${parsed.status})`)
  const basic = parsed.basic
  if (basic === undefined) return refused("OCSP: invalid response (not a basic OCSP response)")
  if (chain.length === 0) return refused("OCSP: we did not receive certificates of the server (num: 0)")
  const leaf = candidate(chain[0])
  const issuer = chain.length > 1 ? candidate(chain[1]) : undefined
  if (leaf === undefined || issuer === undefined) return verifyFailed("no issuer certificate for the remote's certificate")

  // OCSP_basic_verify: the signer is the certificate the responder id names, among the response's
  // certificates and then the remote's chain
  const pool = [...basic.certs.map(candidate), ...chain.map(candidate)]
  const id = basic.responderId
  const signer = pool.find(
    (c) => c !== undefined && ("byName" in id ? c.fields.subject.equals(id.byName) : hash("sha1", c.fields.publicKey).equals(id.byKey))
  )
  if (signer === undefined) return verifyFailed("signer certificate not found")
  // ocsp_check_ids: one issuer for all statuses, and at least one status
  const first = basic.responses[0]?.certId
  if (first === undefined) return verifyFailed("response contains no revocation data")
  const sameIssuer = (c: CertId) =>
    c.hashAlgorithm === first.hashAlgorithm && c.issuerNameHash.equals(first.issuerNameHash) && c.issuerKeyHash.equals(first.issuerKeyHash)
  if (!basic.responses.every((r) => sameIssuer(r.certId))) {
    return verifyFailed("response contains certificates status information for more than one issuer")
  }
  if (!Object.hasOwn(SIGNATURES, basic.signatureAlgorithm)) return verifyFailed(`unsupported signature algorithm ${basic.signatureAlgorithm}`)
  if (!crypto.verify(SIGNATURES[basic.signatureAlgorithm], basic.signed, signer.x509.publicKey, basic.signature)) {
    return verifyFailed("signature failure")
  }
  // ocsp_check_issuer: the issuer signs itself, or delegates to a responder it issued with the OCSPSigning usage
  const byIssuer = signer.fields.subject.equals(issuer.fields.subject) && signer.fields.publicKey.equals(issuer.fields.publicKey)
  if (!byIssuer) {
    if (!signer.x509.checkIssued(issuer.x509) || !signer.x509.verify(issuer.x509.publicKey)) {
      return verifyFailed("responder not authorized: not the issuer of the remote's certificate, nor issued by it")
    }
    if (!(signer.x509.keyUsage ?? []).includes(OCSP_SIGNING)) return verifyFailed("responder certificate has no OCSP signing usage")
    // written so that a date Date.parse cannot read (NaN) refuses too
    if (!(Date.parse(signer.x509.validFrom) <= now && now <= Date.parse(signer.x509.validTo))) return verifyFailed("responder certificate not valid now")
  }

  // Mosquitto's loop: every status must be good and current
  for (const s of basic.responses) {
    const status = `OCSP: SSL certificate status: ${s.status} (${STATUS_CODE[s.status]})`
    if (s.status === "revoked") {
      return refused(`${status}; SSL certificate revocation reason: ${CRL_REASONS[s.revocationReason] ?? "(UNKNOWN)"} (${s.revocationReason})`)
    }
    if (s.status === "unknown") return refused(status)
    const invalid = validity(s, now)
    if (invalid !== undefined) return refused(`OCSP: OCSP response has expired (${invalid})`)
  }
  // Midge's addition: one of them is the remote's certificate's
  if (!basic.responses.some((s) => matches(s.certId, leaf.fields, issuer.fields))) {
    return refused("OCSP: no status for the remote's certificate in the response")
  }
  return { _tag: "Good" }
}
