#!/usr/bin/env node
// Test driver: controls a STOCK, UNMODIFIED Yjs client (yjs + y-websocket's
// WebsocketProvider) over stdin/stdout with newline-delimited JSON.
// See README.md in this folder for the command protocol.
//
// stdout carries exactly one JSON response line per command and nothing else;
// every log line goes to stderr. Bare imports resolve relative to this file
// (tests/node/node_modules), so the driver works from any cwd.

import * as readline from 'node:readline'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as authProtocol from 'y-protocols/auth'
import * as decoding from 'lib0/decoding'
import WebSocket from 'ws'

// ---------------------------------------------------------------------------
// stdout hygiene: nothing but responses may reach stdout. Route any console
// output from the libraries (or from us) to stderr.
// ---------------------------------------------------------------------------
const log = (...args) => {
  process.stderr.write('[yclient] ' + args.map(a => (typeof a === 'string' ? a : safeStringify(a))).join(' ') + '\n')
}
const debug = process.env.YCLIENT_DEBUG ? log : () => {}
function safeStringify (v) {
  if (v instanceof Error) return v.stack || String(v)
  try { return JSON.stringify(v) } catch { return String(v) }
}
console.log = (...a) => console.error(...a)
console.info = (...a) => console.error(...a)
console.debug = (...a) => console.error(...a)

process.on('unhandledRejection', (reason) => log('unhandled rejection:', reason))
process.on('uncaughtException', (err) => log('uncaught exception:', err))

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------
const toB64 = (u8) => Buffer.from(u8).toString('base64')
const fromB64 = (s) => {
  if (typeof s !== 'string') throw new Error('expected a base64 string')
  return new Uint8Array(Buffer.from(s, 'base64'))
}
const DEFAULT_TIMEOUT_MS = 10000
const timeoutOf = (c) => (Number.isFinite(c.timeout_ms) ? c.timeout_ms : DEFAULT_TIMEOUT_MS)
const intArg = (c, name) => {
  const v = c[name]
  if (!Number.isInteger(v)) throw new Error(`'${name}' must be an integer`)
  return v
}
const yieldToEventLoop = () => new Promise((resolve) => setImmediate(resolve))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// mulberry32: tiny deterministic PRNG, returns floats in [0, 1)
function mulberry32 (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Wait until `check()` returns true. `check` is evaluated immediately and
 * every time one of the given (emitter, event) pairs fires. Rejects with
 * `onTimeout()`'s message after `ms`.
 * `check` may throw a terminal error to fail early.
 */
function waitFor ({ check, events, ms, onTimeout }) {
  return new Promise((resolve, reject) => {
    let done = false
    let timer = null
    const cleanup = () => {
      done = true
      if (timer) clearTimeout(timer)
      for (const [emitter, ev] of events) emitter.off(ev, listener)
    }
    const listener = () => {
      if (done) return
      let r
      try { r = check() } catch (e) { cleanup(); reject(e); return }
      if (r) { cleanup(); resolve() }
    }
    try {
      if (check()) { resolve(); return }
    } catch (e) { reject(e); return }
    for (const [emitter, ev] of events) emitter.on(ev, listener)
    timer = setTimeout(() => {
      if (done) return
      cleanup()
      reject(new Error(onTimeout()))
    }, ms)
  })
}

// ---------------------------------------------------------------------------
// driver state
// ---------------------------------------------------------------------------
let doc = null
let body = null
let provider = null
/** every permission-denied reason received so far (for the process lifetime) */
const deniedReasons = []
/** every websocket close observed so far: { code, reason, local, terminal } */
const closes = []

function requireDoc () {
  if (!doc) throw new Error('not connected: send connect first')
}
function requireProvider () {
  if (!provider) throw new Error('no provider: send connect first')
}

/**
 * Capture y-protocols auth messages (outer type 2) WITHOUT modifying the
 * library: wrap this provider's own copy of the handler table entry. We decode
 * the auth message from a *separate* decoder positioned at the same offset
 * (using y-protocols/auth's own reader), record the reason, then call the
 * stock handler with the untouched original decoder, so the stock behaviour
 * (console.warn "Permission denied to access <url>.\n<reason>") still happens.
 */
function installDeniedCapture (p) {
  const original = p.messageHandlers[2]
  p.messageHandlers[2] = (encoder, decoder, prov, emitSynced, messageType) => {
    try {
      const peek = decoding.createDecoder(decoder.arr.subarray(decoder.pos))
      authProtocol.readAuthMessage(peek, prov.doc, (_ydoc, reason) => {
        deniedReasons.push(reason)
        debug('permission denied:', reason)
      })
    } catch (e) {
      log('failed to decode auth message:', e)
    }
    return original(encoder, decoder, prov, emitSynced, messageType)
  }
}

function destroyProvider () {
  if (provider) {
    try { provider.destroy() } catch (e) { log('provider.destroy failed:', e) }
    provider = null
  }
  if (doc) {
    try { doc.destroy() } catch (e) { log('doc.destroy failed:', e) }
  }
  doc = null
  body = null
}

const isSynced = () => !!(provider && provider.wsconnected && provider.synced)

/** wait for connected+synced; fails early if the provider gave up (4400-4499 close) */
function waitSynced (ms) {
  const p = provider
  let terminal = null
  const onClosed = (ev) => { terminal = ev }
  p.on('closed', onClosed)
  return waitFor({
    check: () => {
      if (isSynced()) return true
      if (terminal && !p.shouldConnect) {
        throw new Error(`connection closed permanently by server: code ${terminal.code} reason ${JSON.stringify(terminal.reason)}`)
      }
      return false
    },
    events: [[p, 'sync'], [p, 'status'], [p, 'closed']],
    ms,
    onTimeout: () => `timed out after ${ms} ms waiting for sync (connected=${p.wsconnected}, synced=${p.synced})`
  }).finally(() => p.off('closed', onClosed))
}

// ---------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------
const commands = {
  async connect (c) {
    if (typeof c.url !== 'string') throw new Error("'url' must be a string")
    if (typeof c.room !== 'string') throw new Error("'room' must be a string")
    destroyProvider()
    doc = new Y.Doc()
    if (c.client_id !== undefined && c.client_id !== null) {
      doc.clientID = intArg(c, 'client_id')
    }
    body = doc.getText('body')
    for (const u of c.preload || []) {
      Y.applyUpdate(doc, fromB64(u))
    }
    const params = {}
    if (c.token !== undefined && c.token !== null) params.token = String(c.token)
    provider = new WebsocketProvider(c.url, c.room, doc, {
      params,
      WebSocketPolyfill: WebSocket,
      disableBc: true
    })
    installDeniedCapture(provider)
    const p = provider
    p.on('status', ({ status }) => debug('status:', status))
    p.on('sync', (s) => debug('sync:', s))
    p.on('connection-close', (ev) => {
      const rec = ev
        ? { code: ev.code, reason: String(ev.reason ?? ''), local: false, terminal: false }
        : { code: null, reason: '', local: true, terminal: false }
      closes.push(rec)
      debug('connection-close:', rec)
    })
    p.on('closed', (ev) => {
      const last = closes[closes.length - 1]
      if (last) last.terminal = true
      debug('closed (terminal):', ev)
    })
    p.on('connection-error', () => debug('connection-error'))
    await waitSynced(timeoutOf(c))
    return { client_id: doc.clientID }
  },

  async insert (c) {
    requireDoc()
    const pos = intArg(c, 'pos')
    if (typeof c.text !== 'string') throw new Error("'text' must be a string")
    if (pos < 0 || pos > body.length) throw new Error(`pos ${pos} out of range [0, ${body.length}]`)
    doc.transact(() => body.insert(pos, c.text))
    return {}
  },

  async delete (c) {
    requireDoc()
    const pos = intArg(c, 'pos')
    const len = intArg(c, 'len')
    if (pos < 0 || len < 0 || pos + len > body.length) throw new Error(`range [${pos}, ${pos + len}) out of bounds (length ${body.length})`)
    doc.transact(() => body.delete(pos, len))
    return {}
  },

  async text () {
    requireDoc()
    return { text: body.toString() }
  },

  async wait_text (c) {
    requireDoc()
    if (typeof c.equals !== 'string') throw new Error("'equals' must be a string")
    const ms = timeoutOf(c)
    await waitFor({
      check: () => body.toString() === c.equals,
      events: [[doc, 'update']],
      ms,
      onTimeout: () => {
        const t = body.toString()
        return `timed out after ${ms} ms waiting for text (expected length ${c.equals.length}, current length ${t.length}, current starts with ${JSON.stringify(t.slice(0, 200))})`
      }
    })
    return {}
  },

  async wait_contains (c) {
    requireDoc()
    if (!Array.isArray(c.parts)) throw new Error("'parts' must be an array of strings")
    const ms = timeoutOf(c)
    const missing = () => { const t = body.toString(); return c.parts.filter(x => !t.includes(x)) }
    await waitFor({
      check: () => missing().length === 0,
      events: [[doc, 'update']],
      ms,
      onTimeout: () => {
        const m = missing()
        const t = body.toString()
        return `timed out after ${ms} ms: ${m.length} of ${c.parts.length} parts missing (first missing ${JSON.stringify(m.slice(0, 5))}; current length ${t.length}, starts with ${JSON.stringify(t.slice(0, 200))})`
      }
    })
    return {}
  },

  async random_edits (c) {
    requireDoc()
    const count = intArg(c, 'count')
    const seed = Number.isInteger(c.seed) ? c.seed : 0
    const tag = c.tag === undefined ? '' : String(c.tag)
    if (tag.includes(';')) throw new Error("'tag' must not contain ';'")
    const interval = Number.isFinite(c.interval_ms) ? c.interval_ms : 0
    const anywhere = c.anywhere === true
    const rand = mulberry32(seed)
    const inserted = []
    for (let i = 0; i < count; i++) {
      const s = `${tag}${i};`
      let pos
      if (anywhere) {
        // uniform over [0, length]: may split earlier tokens
        pos = Math.floor(rand() * (body.length + 1))
      } else {
        // uniform over token boundaries: 0, length, and every index right
        // after a ';'. Tokens end with ';' and contain no other ';', so no
        // token (ours or another client's) is ever split and each one stays a
        // contiguous substring that wait_contains can find.
        const t = body.toString()
        const cands = [0]
        for (let k = 0; k < t.length; k++) if (t.charCodeAt(k) === 59 /* ; */) cands.push(k + 1)
        if (cands[cands.length - 1] !== t.length) cands.push(t.length)
        pos = cands[Math.floor(rand() * cands.length)]
      }
      doc.transact(() => body.insert(pos, s))
      inserted.push(s)
      if (interval > 0) await sleep(interval)
      else await yieldToEventLoop()
    }
    return { inserted }
  },

  async set_awareness (c) {
    requireProvider()
    provider.awareness.setLocalState(c.state === undefined ? null : c.state)
    return {}
  },

  async awareness () {
    requireProvider()
    return { states: Array.from(provider.awareness.getStates().entries()) }
  },

  async wait_awareness (c) {
    requireProvider()
    const id = intArg(c, 'client_id')
    const present = c.present !== false
    const ms = timeoutOf(c)
    const aw = provider.awareness
    await waitFor({
      check: () => aw.getStates().has(id) === present,
      events: [[aw, 'change'], [aw, 'update']],
      ms,
      onTimeout: () => `timed out after ${ms} ms waiting for awareness of client ${id} to be ${present ? 'present' : 'absent'} (known clients: ${JSON.stringify(Array.from(aw.getStates().keys()))})`
    })
    return {}
  },

  async denied () {
    return { reasons: deniedReasons.slice() }
  },

  async closes () {
    return { closes: closes.map(x => ({ ...x })) }
  },

  async status () {
    if (!provider) return { connected: false, synced: false, should_connect: false, has_provider: false }
    return {
      connected: provider.wsconnected,
      synced: provider.synced,
      should_connect: provider.shouldConnect,
      has_provider: true
    }
  },

  async disconnect () {
    requireProvider()
    provider.disconnect()
    return {}
  },

  async reconnect (c) {
    requireProvider()
    provider.connect()
    await waitSynced(timeoutOf(c))
    return {}
  },

  async wait_synced (c) {
    requireProvider()
    await waitSynced(timeoutOf(c))
    return {}
  },

  async make_updates (c) {
    const cid = intArg(c, 'client_id')
    if (!Array.isArray(c.ops)) throw new Error("'ops' must be an array")
    const d = new Y.Doc()
    d.clientID = cid
    try {
      const t = d.getText('body')
      const updates = []
      d.on('update', (u) => updates.push(toB64(u)))
      for (const op of c.ops) {
        if (op && Array.isArray(op.insert)) {
          const [pos, s] = op.insert
          if (!Number.isInteger(pos) || typeof s !== 'string') throw new Error(`bad insert op ${JSON.stringify(op)}`)
          if (pos < 0 || pos > t.length) throw new Error(`insert pos ${pos} out of range [0, ${t.length}]`)
          d.transact(() => t.insert(pos, s))
        } else if (op && Array.isArray(op.delete)) {
          const [pos, len] = op.delete
          if (!Number.isInteger(pos) || !Number.isInteger(len)) throw new Error(`bad delete op ${JSON.stringify(op)}`)
          if (pos < 0 || len < 0 || pos + len > t.length) throw new Error(`delete range [${pos}, ${pos + len}) out of bounds (length ${t.length})`)
          d.transact(() => t.delete(pos, len))
        } else {
          throw new Error(`unknown op ${JSON.stringify(op)}`)
        }
      }
      return { updates, full: toB64(Y.encodeStateAsUpdate(d)), text: t.toString() }
    } finally {
      d.destroy()
    }
  },

  async encode_state () {
    requireDoc()
    return { update: toB64(Y.encodeStateAsUpdate(doc)) }
  },

  async quit () {
    destroyProvider()
    quitting = true
    return {}
  }
}

// ---------------------------------------------------------------------------
// stdin loop: strictly serial processing in arrival order
// ---------------------------------------------------------------------------
let quitting = false
let stdinClosed = false
const queue = []
let running = false

function respond (obj) {
  let line
  try {
    line = JSON.stringify(obj)
  } catch (e) {
    line = JSON.stringify({ id: obj.id ?? null, ok: false, error: 'response not serializable: ' + e.message })
  }
  process.stdout.write(line + '\n')
}

function exitNow () {
  destroyProvider()
  // make sure the last response is flushed before exiting
  process.stdout.write('', () => process.exit(0))
}

async function pump () {
  if (running) return
  running = true
  while (queue.length > 0 && !quitting) {
    const line = queue.shift()
    let id = null
    try {
      let msg
      try {
        msg = JSON.parse(line)
      } catch (e) {
        throw new Error('invalid JSON: ' + e.message)
      }
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw new Error('command must be a JSON object')
      id = msg.id ?? null
      const name = msg.cmd
      if (typeof name !== 'string' || !Object.prototype.hasOwnProperty.call(commands, name)) {
        throw new Error(`unknown command ${JSON.stringify(name)}`)
      }
      debug('>', line.length > 300 ? line.slice(0, 300) + '...' : line)
      const result = await commands[name](msg)
      respond({ id, ok: true, ...result })
    } catch (e) {
      respond({ id, ok: false, error: e && e.message ? e.message : String(e) })
    }
  }
  running = false
  if (quitting || (stdinClosed && queue.length === 0)) exitNow()
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false })
rl.on('line', (line) => {
  if (line.trim() === '') return
  queue.push(line)
  pump()
})
rl.on('close', () => {
  stdinClosed = true
  if (!running) exitNow()
})
