/**
 * Plain TCP connections without `net.Socket`: the accepted libuv handle itself,
 * read and written through the same stream methods `net.Socket` calls
 * (`readStart`, `writeBuffer`, `shutdown`, `close`), with none of the stream
 * machinery on top (Readable / Writable state, EventEmitter, the per-write
 * request objects).
 *
 * Why: a `net.Socket` costs most of a connect here. 10,000 connects from the
 * C load generator to a bare `net` server that answers CONNACK: 95–101 µs of
 * CPU and ~4.5 KB of RSS per connection; the same server on the raw handle:
 * 39–40 µs and ~1.5 KB (docs/performance.md, "Connections: the raw TCP
 * handle"). Every read and write also skips a few layers of stream code.
 *
 * What it takes from Node's internals, and only here:
 * - `process.binding("stream_wrap")` for `WriteWrap`, `ShutdownWrap` and
 *   `streamBaseState` (how many bytes a read brought, whether a write went
 *   asynchronous). `process.binding` is deprecated in the documentation only
 *   (DEP0111) and allows this module in Node 20 and 22.
 * - `net.Server`'s listening handle's `onconnection`, replaced after `listen`
 *   so that `net.Server` still does the binding (addresses, IPv6, errors).
 * - The handle's `useUserBuffer`, as `net.Socket`'s `onread` option: every
 *   connection reads into one shared buffer, copied out before the next read
 *   (see `copyRead` below).
 * When either is missing, `rawTcpAvailable()` is false and listeners use
 * `net.Socket` as before; `MIDGE_NET_SOCKETS=1` in the environment does the
 * same on purpose.
 *
 * Semantics follow `net.Socket` as the connection code (session/Connection.ts)
 * uses it (`MqttSocket`): `write` returns false from 16 KiB unwritten, then
 * `drain` when all is written; `end` shuts the sending side down after what
 * is queued; `destroySoon` closes once that shutdown is done; a peer's EOF
 * is `end`, a read or write error `error`; `close` comes once, last. A
 * second listener for an event runs after the first (the connection adds one
 * of each).
 */
import type * as net from "node:net"
import { Buffer } from "node:buffer"
import { constants } from "node:os"
import { getSystemErrorName } from "node:util"
import type { MqttSocket } from "./websocket.js"
import { settleFields } from "../runtime/fieldShape.js"
import { SocketEvents } from "./socketEvents.js"

/** The libuv stream methods of a TCP handle (node's `tcp_wrap.TCP`). */
interface TcpHandle {
  onread: (this: TcpHandle, buffer: ArrayBuffer | undefined) => void
  readStart(): number
  readStop(): number
  writeBuffer(req: WriteReq, data: Uint8Array): number
  shutdown(req: ShutdownReq): number
  close(callback?: () => void): void
  setNoDelay(noDelay: boolean): number
  getpeername(out: { address?: string; port?: number; family?: string }): number
  /** read into this buffer instead of a fresh one per read (what `net.Socket`'s `onread` option uses) */
  useUserBuffer?(buffer: Uint8Array): void
  readonly writeQueueSize: number
  [OWNER]?: RawTcpSocket
}

interface WriteReq {
  oncomplete: ((this: WriteReq, status: number, handle: TcpHandle) => void) | undefined
  /** kept alive while libuv holds a pointer into it */
  buffer: Uint8Array | undefined
}

interface ShutdownReq {
  oncomplete: ((this: ShutdownReq, status: number) => void) | undefined
  handle: TcpHandle | undefined
}

interface StreamWrapBinding {
  readonly WriteWrap: new () => WriteReq
  readonly ShutdownWrap: new () => ShutdownReq
  readonly streamBaseState: Int32Array
  readonly kReadBytesOrError: number
  readonly kArrayBufferOffset: number
  readonly kLastWriteWasAsync: number
}

const OWNER: unique symbol = Symbol("midge.rawTcp.owner")
const UV_EOF = -4095
/** `net.Socket`'s highWaterMark: `write` returns false from here */
const HIGH_WATER = 16 * 1024

const loadBinding = (): StreamWrapBinding | undefined => {
  try {
    const binding = (process as unknown as { binding(name: string): Partial<StreamWrapBinding> }).binding("stream_wrap")
    const { WriteWrap, ShutdownWrap, streamBaseState, kReadBytesOrError, kArrayBufferOffset, kLastWriteWasAsync } = binding
    if (
      typeof WriteWrap !== "function" ||
      typeof ShutdownWrap !== "function" ||
      !(streamBaseState instanceof Int32Array) ||
      typeof kReadBytesOrError !== "number" ||
      typeof kArrayBufferOffset !== "number" ||
      typeof kLastWriteWasAsync !== "number"
    ) {
      return undefined
    }
    return { WriteWrap, ShutdownWrap, streamBaseState, kReadBytesOrError, kArrayBufferOffset, kLastWriteWasAsync }
  } catch {
    return undefined
  }
}

let binding: StreamWrapBinding | null | undefined = null

const getBinding = (): StreamWrapBinding | undefined => {
  if (binding === null) binding = loadBinding()
  return binding
}

/** connections accepted on raw handles since start (for tests and diagnostics) */
export const rawTcpStats = { accepted: 0 }

/** Can plain TCP listeners use raw handles (and do they want to: not with MIDGE_NET_SOCKETS=1)? */
export const rawTcpAvailable = (): boolean => process.env["MIDGE_NET_SOCKETS"] !== "1" && getBinding() !== undefined

const errnoError = (errno: number, syscall: string): Error => {
  let code: string
  try {
    code = getSystemErrorName(errno)
  } catch {
    code = `E${-errno}`
  }
  return Object.assign(new Error(`${syscall} ${code}`), { errno, code, syscall })
}

/** the first socket has had its late-changing fields settled (runtime/fieldShape.ts) */
let settled = false

/** what `getpeername` fills in, shared: its fields exist before Node sets them */
const peerScratch: { address?: string; port?: number; family?: string } = { address: undefined, family: undefined, port: undefined }

/** One accepted TCP connection on its raw handle: an `MqttSocket`. */
export class RawTcpSocket extends SocketEvents implements MqttSocket {
  destroyed = false
  writable = true
  private reading = false
  private ended = false
  private closeWhenShut = false
  private shutDone = false
  private needDrain = false
  private asyncWrites = 0
  private peer: { address?: string; port?: number; family?: string } | undefined = undefined

  private constructor(private readonly handle: TcpHandle) {
    super()
    handle[OWNER] = this
    handle.onread = onRead
    if (sharedReads && handle.useUserBuffer !== undefined) handle.useUserBuffer(readBuffer())
    if (!settled) {
      settled = true
      // changed when the connection ends, long after the connect path is compiled
      settleFields(this, ["destroyed", "writable", "reading", "ended", "closeWhenShut", "shutDone", "needDrain", "asyncWrites", "peer", "onCloseFn"])
    }
  }

  /** Take over an accepted handle and start reading from it. */
  static accept(handle: unknown): RawTcpSocket {
    const socket = new RawTcpSocket(handle as TcpHandle)
    rawTcpStats.accepted++
    socket.resume()
    return socket
  }

  get remoteAddress(): string | undefined {
    return this.peername()?.address
  }

  get remotePort(): number | undefined {
    return this.peername()?.port
  }

  /** bytes handed to `write` and not yet taken by the kernel */
  get writableLength(): number {
    return this.destroyed ? 0 : this.handle.writeQueueSize
  }

  setNoDelay(noDelay = true): this {
    if (!this.destroyed) this.handle.setNoDelay(noDelay)
    return this
  }

  pause(): this {
    if (this.reading && !this.destroyed) {
      this.reading = false
      this.handle.readStop()
    }
    return this
  }

  resume(): this {
    if (!this.reading && !this.destroyed && !this.ended) {
      const error = this.handle.readStart()
      if (error < 0) this.failLater(error, "read")
      else this.reading = true
    }
    return this
  }

  write(chunk: Buffer): boolean {
    if (this.destroyed || !this.writable) return false
    const b = getBinding()!
    const req = spareWrite ?? new b.WriteWrap()
    spareWrite = undefined
    const error = this.handle.writeBuffer(req, chunk)
    if (error !== 0) {
      spareWrite = req
      this.failLater(error, "write")
      return false
    }
    if (b.streamBaseState[b.kLastWriteWasAsync] === 0) {
      // written at once: the request object was not used, the next write takes it
      spareWrite = req
    } else {
      req.buffer = chunk
      req.oncomplete = afterWrite
      this.asyncWrites++
    }
    if (this.handle.writeQueueSize >= HIGH_WATER) {
      this.needDrain = true
      return false
    }
    return true
  }

  /** Shut the sending side down once what is queued is written. */
  end(): this {
    if (this.destroyed || !this.writable) return this
    this.writable = false
    const req = new (getBinding()!.ShutdownWrap)()
    req.handle = this.handle
    req.oncomplete = afterShutdown
    const error = this.handle.shutdown(req)
    if (error !== 0) this.destroy()
    return this
  }

  /** `end`, then close once the shutdown is done. */
  destroySoon(): void {
    if (this.destroyed) return
    this.closeWhenShut = true
    if (this.writable) this.end()
    else if (this.shutDone) this.destroy()
  }

  /** Close now; `close` follows once the handle is closed. */
  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.writable = false
    this.reading = false
    this.handle.close(() => {
      const onClose = this.onCloseFn
      this.onCloseFn = undefined
      onClose?.call(this)
    })
  }

  /** @internal the shutdown requested by `end` is done */
  shutDown(): void {
    this.shutDone = true
    if (this.closeWhenShut) this.destroy()
  }

  /** @internal libuv read callback: data, EOF or an error */
  readDone(n: number, buffer: ArrayBuffer | undefined, offset: number): void {
    if (this.destroyed) return
    if (n > 0) {
      this.onDataFn?.call(this, buffer === undefined ? copyRead(n) : Buffer.from(buffer, offset, n))
      return
    }
    if (n === 0) return
    if (n === UV_EOF) {
      // as net.Socket without allowHalfOpen: the peer is done, so are we (after what is queued)
      this.ended = true
      this.reading = false
      this.onEndFn?.call(this)
      this.destroySoon()
      return
    }
    this.fail(errnoError(n, "read"))
  }

  /** @internal an asynchronous write completed */
  writeDone(status: number): void {
    this.asyncWrites--
    if (this.destroyed) return
    if (status < 0) {
      this.fail(errnoError(status, "write"))
      return
    }
    if (this.needDrain && this.asyncWrites === 0) {
      this.needDrain = false
      this.onDrainFn?.call(this)
    }
  }

  private peername(): { address?: string; port?: number; family?: string } | undefined {
    if (this.peer === undefined && !this.destroyed) {
      // Node sets the fields from C++; on a fresh object each is a property added (a hidden-class
      // transition found at run time, ~2 % of a connect: docs/performance.md, "Twenty-first
      // round"), on this one they are there already. The socket keeps its own copy.
      const out = peerScratch
      out.address = undefined
      out.port = undefined
      out.family = undefined
      if (this.handle.getpeername(out) === 0) this.peer = { address: out.address, port: out.port, family: out.family }
    }
    return this.peer
  }

  private fail(error: Error): void {
    if (this.destroyed) return
    const onError = this.onErrorFn
    this.destroy()
    onError?.call(this, error)
  }

  /** an error found inside a call from the connection code: reported on the next tick, not re-entrantly */
  private failLater(errno: number, syscall: string): void {
    const error = errnoError(errno, syscall)
    process.nextTick(() => this.fail(error))
  }
}

/**
 * Reads go into one buffer shared by every connection, and each read is copied out into a
 * Buffer of its own size (`Buffer.allocUnsafe`: a slice of Node's 8 KiB pool when small, an
 * ArrayBuffer of exactly that size otherwise). Without it libuv asks Node for a fresh 64 KiB
 * `malloc` per read, shrunk to what was read, with an ArrayBuffer and a backing store to sweep
 * later: the allocator's consolidation of freed chunks then falls on the next read. The copy is
 * made within the read callback, before the next read can reuse the buffer. A small chunk is a
 * slice of a pool shared with other reads, so what outlives the turn must not keep a view on it:
 * the parser copies an unfinished frame it keeps (`detached` in protocol/codec.ts), and a message
 * kept beyond the turn owns its payload (`Message.ownPayload`). Measured: mqload QoS 1 at 1,000
 * msg/s, p99 lower in 7 of 10 alternated rounds; QoS 1 fan-in higher in 3 of 4, QoS 0 in 3 of 3
 * (docs/performance.md, "Fifteenth round"). `MIDGE_READ_BUFFER=node` keeps Node's buffer per read.
 */
const sharedReads = process.env["MIDGE_READ_BUFFER"] !== "node"
const READ_BUFFER_BYTES = 64 * 1024
let shared: Buffer | undefined = undefined
const readBuffer = (): Buffer => (shared ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES))

const copyRead = (n: number): Buffer => {
  const chunk = Buffer.allocUnsafe(n)
  shared!.copy(chunk, 0, 0, n)
  return chunk
}

/** the request object of the next write, while unused (a write done at once leaves it unused) */
let spareWrite: WriteReq | undefined = undefined

function onRead(this: TcpHandle, buffer: ArrayBuffer | undefined): void {
  const socket = this[OWNER]
  if (socket === undefined) return
  const b = binding!
  socket.readDone(b.streamBaseState[b.kReadBytesOrError], buffer, b.streamBaseState[b.kArrayBufferOffset])
}

function afterWrite(this: WriteReq, status: number, handle: TcpHandle): void {
  this.buffer = undefined
  handle[OWNER]?.writeDone(status)
}

function afterShutdown(this: ShutdownReq, status: number): void {
  const socket = this.handle?.[OWNER]
  this.handle = undefined
  if (socket === undefined) return
  if (status < 0 && status !== -constants.errno.ENOTCONN /* the peer is gone already */) socket.destroy()
  else socket.shutDown()
}

/**
 * Take `server`'s accepted connections as raw handles from now on (call after
 * `listen`). False when the server's handle does not allow it; then its
 * `connection` events go on as before.
 */
export const acceptRaw = (
  server: net.Server,
  onSocket: (socket: RawTcpSocket) => void,
  onError: (error: Error) => void
): boolean => {
  const listening = (server as unknown as { _handle?: { onconnection?: unknown } | null })._handle
  if (listening === undefined || listening === null || typeof listening.onconnection !== "function") return false
  if (getBinding() === undefined) return false
  listening.onconnection = (status: number, handle: unknown) => {
    if (status < 0 || handle === undefined) {
      onError(errnoError(status, "accept"))
      return
    }
    onSocket(RawTcpSocket.accept(handle))
  }
  return true
}
