#!/usr/bin/env node
// The connect floor (issue #10): the least a Node process does per MQTT connect on the accepted
// libuv handle (the transport Midge's TCP listeners use, src/transport/rawTcp.ts), to measure
// what a connect costs Node itself on a machine, and what the duties every broker has add to it.
// Not a broker: no parsing beyond the first byte, no state, no keepalive, no sessions.
//
// Always: accept, read into one shared buffer, answer a CONNECT (first byte 0x10) with the four
// CONNACK bytes written at once, close on the peer's EOF.
// Duties, each optional, as Mosquitto and Midge do them by default:
//   --peer   the peer's address at accept (`getpeername`), as the connection's log line needs;
//   --log    Mosquitto's three lines per client (New connection / New client connected / Client
//            disconnected) through Midge's own Log to standard error (dist/log/Log.js: timestamp
//            prefix, the lines of a turn in one write): needs `npm run build`.
//
// usage: node bench/connect-floor.mjs -p PORT [--peer] [--log]   (SIGTERM / SIGINT stop it)
// e.g. against mqload: mqload conns -p PORT --conns 10000 --hold 1 --concurrency 100 --pid PID
import net from 'node:net'

let port = 1883
let peer = false
let log
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '-p' || argv[i] === '--port') port = Number(argv[++i])
  else if (argv[i] === '--peer') peer = true
  else if (argv[i] === '--log') {
    const { Log, stderrSink, defaultLogTypes } = await import('../dist/log/Log.js')
    log = new Log(defaultLogTypes, [stderrSink])
  }
}

const { WriteWrap, streamBaseState, kReadBytesOrError, kLastWriteWasAsync } = process.binding('stream_wrap')
const CONNACK = Buffer.from([0x20, 2, 0, 0])
const shared = Buffer.allocUnsafeSlow(64 * 1024)
const scratch = { address: undefined, family: undefined, port: undefined }
let spare
let ids = 0

class Client {
  constructor(handle) {
    this.handle = handle
    this.address = undefined
    this.port = 0
    this.id = undefined
  }
}

function onread() {
  const n = streamBaseState[kReadBytesOrError]
  const client = this.client
  if (n < 0) {
    if (log !== undefined && client.id !== undefined) log.notice(`Client ${client.id} closed its connection.`)
    this.readStop()
    this.close()
    return
  }
  if (n > 0 && shared[0] === 0x10 && client.id === undefined) {
    client.id = `c${ids++}`
    if (log !== undefined) log.notice(`New client connected from ${client.address}:${client.port} as ${client.id} (p2, c1, k60).`)
    const req = spare ?? new WriteWrap()
    spare = undefined
    this.writeBuffer(req, CONNACK)
    if (streamBaseState[kLastWriteWasAsync] === 0) spare = req
    else {
      req.buffer = CONNACK
      req.oncomplete = () => {}
    }
  }
}

const server = net.createServer()
server.listen(port, '127.0.0.1', () => {
  server._handle.onconnection = (status, handle) => {
    if (status < 0) return
    const client = new Client(handle)
    handle.client = client
    handle.onread = onread
    handle.useUserBuffer(shared)
    if (peer && handle.getpeername(scratch) === 0) {
      client.address = scratch.address
      client.port = scratch.port
    }
    if (log !== undefined) log.notice(`New connection from ${client.address}:${client.port} on port ${port}.`)
    handle.readStart()
  }
  console.log(`listening on ${server.address().port}`)
})
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0))
