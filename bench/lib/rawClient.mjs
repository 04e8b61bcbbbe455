// A client TCP connection on the raw libuv handle (no net.Socket), for the idle-connection
// scenarios: a net.Socket costs the generator ~100 µs of CPU per connect, enough to make a
// two-process Node generator the bottleneck of `conns_10k` on 2 cores (Mosquitto measured
// 6.5k connects/s with it, 11.4k/s with mqload, the C generator). The same Node internals the
// broker's own raw listener uses (src/transport/rawTcp.ts): process.binding('tcp_wrap') and
// ('stream_wrap'). `rawAvailable` is false where they are missing; the worker then uses net.
//
// The surface is what worker.mjs's Client uses: events connect / error / close, write, end,
// destroy, destroyed, writableLength; reads go to `onRead(n, buffer)` in one shared buffer.
import { EventEmitter } from 'node:events'
import { getSystemErrorName } from 'node:util'

let B = null
try {
  const tcp = process.binding('tcp_wrap')
  const stream = process.binding('stream_wrap')
  if (typeof tcp.TCP === 'function' && typeof tcp.TCPConnectWrap === 'function' && typeof stream.WriteWrap === 'function') {
    B = { ...tcp, ...stream }
  }
} catch {
  B = null
}

export const rawAvailable = B !== null && process.env.BENCH_NET_CLIENTS !== '1'

const UV_EOF = -4095
const errCode = (status) => {
  try {
    return getSystemErrorName(status)
  } catch {
    return 'EUNKNOWN'
  }
}

export class RawClient extends EventEmitter {
  constructor(port, host, readBuffer, onRead, noDelay) {
    super()
    this.destroyed = false
    this.connecting = true
    this.pendingBytes = 0
    this.handle = new B.TCP(B.constants.SOCKET)
    this.handle.owner = this
    const req = new B.TCPConnectWrap()
    req.oncomplete = afterConnect
    req.owner = this
    this.noDelay = noDelay
    this.readBuffer = readBuffer
    this.onRead = onRead
    const err = this.handle.connect(req, host, port)
    if (err) process.nextTick(() => this.fail(err))
  }

  get writableLength() {
    return this.pendingBytes
  }

  write(buf) {
    if (this.destroyed) return false
    const req = new B.WriteWrap()
    req.owner = this
    req.oncomplete = afterWrite
    const err = this.handle.writeBuffer(req, buf)
    if (err) {
      process.nextTick(() => this.fail(err))
      return false
    }
    if (B.streamBaseState[B.kLastWriteWasAsync]) {
      req.buffer = buf
      req.bytes = buf.length
      this.pendingBytes += buf.length
    }
    return true
  }

  end(buf) {
    if (this.destroyed) return
    if (buf !== undefined) this.write(buf)
    const req = new B.ShutdownWrap()
    req.owner = this
    req.oncomplete = afterShutdown
    if (this.handle.shutdown(req)) this.destroy()
  }

  destroy() {
    if (this.destroyed) return
    this.destroyed = true
    this.handle.close(() => this.emit('close'))
  }

  fail(status) {
    if (this.destroyed) return
    const code = errCode(status)
    this.emit('error', Object.assign(new Error(code), { code }))
    this.destroy()
  }
}

function afterConnect(status) {
  const c = this.owner
  if (c.destroyed) return
  if (status < 0) return c.fail(status)
  c.connecting = false
  if (c.noDelay) c.handle.setNoDelay(true)
  c.handle.useUserBuffer(c.readBuffer)
  c.handle.onread = onread
  const err = c.handle.readStart()
  if (err) return c.fail(err)
  c.emit('connect')
}

function onread() {
  const c = this.owner
  const n = B.streamBaseState[B.kReadBytesOrError]
  if (c.destroyed || n === 0) return
  if (n > 0) return c.onRead(n, c.readBuffer)
  if (n === UV_EOF) return c.destroy()
  c.fail(n)
}

function afterWrite(status) {
  const c = this.owner
  c.pendingBytes -= this.bytes ?? 0
  if (status < 0) c.fail(status)
}

function afterShutdown() {
  this.owner.destroy()
}
