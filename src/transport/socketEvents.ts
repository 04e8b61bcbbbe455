/**
 * The five events of Midge's own socket objects (transport/rawTcp.ts `RawTcpSocket`,
 * transport/proxyProtocol.ts `ProxiedSocket`): `MqttSocket.on` keeps each listener in a plain field,
 * called directly, with no EventEmitter; a second listener for an event is chained after the first.
 */
import type { Buffer } from "node:buffer"

type Listener = (...args: Array<never>) => void

/** `next` after `previous` (module level: `on` allocates nothing for an event's first listener) */
const chain = <F extends Listener>(previous: F | undefined, next: F): F =>
  previous === undefined
    ? next
    : (function(this: unknown, ...args: Array<never>) {
      previous.apply(this, args)
      next.apply(this, args)
    } as F)

export abstract class SocketEvents {
  protected onDataFn: ((this: this, chunk: Buffer) => void) | undefined = undefined
  protected onErrorFn: ((this: this, error: Error) => void) | undefined = undefined
  protected onEndFn: ((this: this) => void) | undefined = undefined
  protected onCloseFn: ((this: this) => void) | undefined = undefined
  protected onDrainFn: ((this: this) => void) | undefined = undefined

  on(event: "data", listener: (chunk: Buffer) => void): this
  on(event: "error", listener: (error: Error) => void): this
  on(event: "end" | "close" | "drain", listener: () => void): this
  on(event: "data" | "error" | "end" | "close" | "drain", listener: Listener): this {
    switch (event) {
      case "data":
        this.onDataFn = chain(this.onDataFn, listener as (this: this, chunk: Buffer) => void)
        break
      case "error":
        this.onErrorFn = chain(this.onErrorFn, listener as (this: this, error: Error) => void)
        break
      case "end":
        this.onEndFn = chain(this.onEndFn, listener as (this: this) => void)
        break
      case "close":
        this.onCloseFn = chain(this.onCloseFn, listener as (this: this) => void)
        break
      case "drain":
        this.onDrainFn = chain(this.onDrainFn, listener as (this: this) => void)
        break
    }
    return this
  }
}
