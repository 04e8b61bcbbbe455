// Aedes (the repo's devDependency, 1.x) on a plain node:net server with default options,
// as mqload's aedes-server.mjs. usage: node bench/aedes-server.mjs -p PORT [--host 127.0.0.1]
// Prints one line when listening; exits on SIGTERM / SIGINT.
import net from 'node:net'
import { Aedes } from 'aedes'

let port = 1883
let host = '127.0.0.1'
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '-p' || argv[i] === '--port') port = Number(argv[++i])
  else if (argv[i] === '--host') host = argv[++i]
}
if (!(port >= 1 && port <= 65535)) {
  console.error('bad port')
  process.exit(2)
}

const aedes = await Aedes.createBroker()
let clientErrors = 0
let connectionErrors = 0
aedes.on('clientError', () => clientErrors++)
aedes.on('connectionError', () => connectionErrors++)

const server = net.createServer(aedes.handle)
server.on('error', (err) => console.error('aedes-server: server error', err.code || err.message))
server.listen({ port, host }, () => {
  console.log(`aedes ${aedes.version} listening on ${host}:${port} pid ${process.pid} node ${process.version}`)
})

let stopping = false
const stop = () => {
  if (stopping) return
  stopping = true
  console.log(`aedes-server: stopping; clients=${aedes.connectedClients} clientErrors=${clientErrors} connectionErrors=${connectionErrors}`)
  setTimeout(() => process.exit(0), 2000).unref()
  server.close()
  aedes.close(() => process.exit(0))
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
