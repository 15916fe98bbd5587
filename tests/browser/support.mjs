// Shared helpers of the browser tests: start the real `commandpost` binary on
// an ephemeral port with a temporary data directory, mint tokens with the
// same secret, launch Debian's chromium through playwright-core, collect
// console errors, and wait for conditions (never fixed sleeps).

import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, mkdirSync, copyFileSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs'
import { createServer, request as httpRequest } from 'node:http'
import { connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

import * as cluster from './cluster.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))

export const BIN = path.resolve(here, process.env.COMMANDPOST_BIN ?? '../../target/debug/commandpost')
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
/** 40 characters; the server and `commandpost token` both read it. */
export const SECRET = 'browser-tests-secret-0123456789abcdefghij'
export const ARTIFACTS = path.join(here, 'artifacts')
export const DOCS = path.resolve(here, '../../docs')

const env = { ...process.env, COMMANDPOST_SECRET: SECRET, COMMANDPOST_LOG: process.env.COMMANDPOST_LOG ?? 'warn', NO_COLOR: '1' }

export function tempData(label) {
  return mkdtempSync(path.join(tmpdir(), `cp-browser-${label}-`))
}

/**
 * True with COMMANDPOST_BROWSER_CLUSTER=1: every server is a cluster (three
 * nodes on one PostgreSQL and one Redis, behind HAProxy; see cluster.mjs).
 */
export const CLUSTER = process.env.COMMANDPOST_BROWSER_CLUSTER === '1'

/**
 * Starts `commandpost serve` and resolves once it prints its address.
 * `listen` defaults to an ephemeral port; pass the same address to restart
 * on the same port.
 *
 * In cluster mode: three nodes on 127.0.0.2-4 sharing the database of
 * `data` (created on the first call, the same on later ones, so a restart
 * keeps the data) and this process's Redis, behind HAProxy bound to
 * `listen`; resolves once HAProxy sees every node up. `url` and `listen`
 * are the proxy's.
 */
export function startServer({ data, listen = '127.0.0.1:0' }) {
  if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run \`cargo build -p commandpost\` or set COMMANDPOST_BIN`)
  if (CLUSTER) return startCluster({ data, listen })
  return startNode(['--listen', listen, '--data', data]).then((node) => ({ ...node, data }))
}

async function startCluster({ data, listen }) {
  const store = await cluster.databaseFor(data)
  const { redisUrl } = await cluster.startEngines()
  const nodes = []
  try {
    // The first node migrates the database, then the others start together.
    const node = (host) => startNode(['--listen', `${host}:0`, '--store', store, '--redis', redisUrl]).then((started) => nodes.push(started))
    const [first, ...others] = cluster.NODE_HOSTS
    await node(first)
    await Promise.all(others.map(node))
    const proxy = await cluster.startHaproxy(listen, nodes.map((node) => node.listen))
    const url = `http://${proxy.listen}`
    return { cluster: true, nodes, proxy, proc: proxy.proc, url, listen: proxy.listen, data, exited: Promise.all([proxy.exited, ...nodes.map((node) => node.exited)]) }
  } catch (error) {
    await Promise.all(nodes.map(stopProcess))
    throw error
  }
}

/** Spawns `commandpost serve ARGS`; resolves with `{ proc, url, listen, exited }` once it listens. */
function startNode(args) {
  const proc = spawn(BIN, ['serve', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  if (CLUSTER) cluster.track(proc)
  let output = ''
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`the server did not start within 20 s:\n${output}`))
    }, 20_000)
    const onData = (chunk) => {
      output += chunk.toString()
      const match = /Listening on:\s+(http:\/\/\S+)/.exec(output)
      if (match) {
        clearTimeout(timer)
        proc.stdout.off('data', onData)
        proc.stdout.resume()
        const url = match[1].replace(/\/$/, '')
        resolve({ proc, url, listen: new URL(url).host, exited: new Promise((done) => proc.once('exit', done)) })
      }
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', (chunk) => {
      output += chunk.toString()
      if (process.env.COMMANDPOST_TEST_VERBOSE) process.stderr.write(chunk)
    })
    proc.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`the server exited (${code}) before listening:\n${output}`))
    })
  })
}

/**
 * SIGTERM, then wait for a clean exit (the server closes sockets with 1012).
 * A cluster: its nodes first (their sockets close with 1012 through the
 * proxy), then HAProxy.
 */
export async function stopServer(server) {
  if (server.cluster) {
    await Promise.all(server.nodes.map(stopProcess))
    await stopProcess(server.proxy)
    return
  }
  await stopProcess(server)
}

async function stopProcess({ proc, exited }) {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  proc.kill('SIGTERM')
  let timer
  const code = await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(() => resolve('timeout'), 10_000)))])
  clearTimeout(timer)
  if (code === 'timeout') {
    proc.kill('SIGKILL')
    await exited
  }
}

/** Removes a temporary data directory (after its server stopped). */
export function removeData(data) {
  if (data) rmSync(data, { recursive: true, force: true })
}

/** Mints a token with the CLI, exactly as an operator would. */
export function mint(data, role, name, { incident } = {}) {
  const args = ['token', '--data', data, '--role', role, '--name', name]
  if (incident) args.push('--incident', incident)
  return execFileSync(BIN, args, { env, encoding: 'utf8' }).trim()
}

/** Calls the HTTP API with a bearer token. */
export async function apiCall(server, token, method, apiPath, body) {
  const response = await fetch(`${server.url}${apiPath}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  const text = await response.text()
  if (!response.ok) throw new Error(`${method} ${apiPath}: ${response.status} ${text}`)
  return text ? JSON.parse(text) : null
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM}: install it with \`apt-get install -y chromium\``)
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}

/**
 * Records console errors and uncaught exceptions of a page. While
 * `allowNetworkErrors` is set (a deliberate outage), failures to reach the
 * server are expected and not recorded.
 */
export function watchConsole(page, label, log) {
  const state = { allowNetworkErrors: false }
  const networkError = /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_NETWORK_CHANGED|WebSocket connection to .* failed|EventSource|net::ERR_|Failed to load resource/
  page.on('console', (message) => {
    if (message.type() !== 'error') return
    const text = message.text()
    if (state.allowNetworkErrors && networkError.test(text)) return
    log.push(`${label}: console error: ${text}`)
  })
  page.on('pageerror', (error) => log.push(`${label}: uncaught: ${error.message}`))
  return state
}

/** The address the pages open (the server itself, or the dev proxy below). */
export async function appUrl(server) {
  if (process.env.COMMANDPOST_WEB_DIST) return devProxy(server)
  const html = await (await fetch(`${server.url}/`)).text()
  if (!html.includes('id="app"')) {
    throw new Error(
      `${BIN} does not carry the browser app (its / is the placeholder page). Build web/ (npm run build) and then the binary, ` +
        'or set COMMANDPOST_WEB_DIST=web/dist to serve a built app in front of this binary.',
    )
  }
  return server.url
}

/** Opens a signed-in page: the token goes in the URL once, as in a share link. */
export async function openPage(browser, base, pathname, token, { viewport = { width: 1280, height: 900 }, label, log } = {}) {
  const context = await browser.newContext({ viewport })
  const page = await context.newPage()
  const watch = watchConsole(page, label ?? pathname, log)
  const separator = pathname.includes('?') ? '&' : '?'
  await page.goto(`${base}${pathname}${separator}token=${encodeURIComponent(token)}`)
  return { context, page, watch }
}

/**
 * The whole document as the page holds it (run in the page). CodeMirror
 * renders only the lines near the viewport, so the editor's text comes from
 * its state, reached through the DOM as `EditorView.findFromDOM` does, not
 * from the DOM; the viewers' preview renders everything. `null` while the
 * page shows neither.
 */
function pageDocText() {
  const editor = document.querySelector('.cm-content')
  const view = editor?.cmTile?.root?.view
  if (view) return view.state.doc.toString()
  const el = editor ?? document.querySelector('.preview')
  return el ? el.textContent ?? '' : null
}

/** Waits until the document (editor or preview) contains `text`. */
export async function waitForDocText(page, text, timeout = 15_000) {
  await page.waitForFunction(
    (expected) => {
      const editor = document.querySelector('.cm-content')
      const view = editor?.cmTile?.root?.view
      const el = editor ?? document.querySelector('.preview')
      const current = view ? view.state.doc.toString() : el?.textContent
      return typeof current === 'string' && current.includes(expected)
    },
    text,
    // The editor's text is built from its state on each check: every 100 ms
    // rather than every frame, for megabyte documents.
    { timeout, polling: 100 },
  )
}

export async function docText(page) {
  return (await page.evaluate(pageDocText)) ?? ''
}

/** Types at the end of the shared editor. */
export async function typeAtEnd(page, text) {
  await page.locator('.cm-content').click()
  await page.keyboard.press('Control+End')
  await page.keyboard.type(text)
}

/**
 * Pastes `text` at the end of the shared editor in one go, as a clipboard
 * paste (CodeMirror reads the event's data), so megabytes take one edit
 * instead of a keystroke per character.
 */
export async function pasteIntoEditor(page, text) {
  await page.locator('.cm-content').click()
  await page.keyboard.press('Control+End')
  await page.evaluate((data) => {
    const transfer = new DataTransfer()
    transfer.setData('text/plain', data)
    const target = document.querySelector('.cm-content')
    target.dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }))
  }, text)
}

export async function waitForIndicator(page, kind, state, timeout = 20_000) {
  await page.waitForFunction(([k, s]) => document.querySelector(`.indicator.${k}`)?.getAttribute('data-state') === s, [kind, state], { timeout })
}

export async function screenshot(page, name, { fullPage = false } = {}) {
  mkdirSync(ARTIFACTS, { recursive: true })
  const file = path.join(ARTIFACTS, name)
  await page.evaluate(() => window.scrollTo(0, 0))
  await page.screenshot({ path: file, fullPage })
  console.log(`screenshot: ${file}`)
  return file
}

// Copies a screenshot to docs/ (the README shows them) only when asked with
// COMMANDPOST_UPDATE_DOCS=1, so ordinary test runs leave the tree clean.
export function publishScreenshot(file, name) {
  console.log(`screenshot: ${file}`)
  if (process.env.COMMANDPOST_UPDATE_DOCS !== '1') return
  mkdirSync(DOCS, { recursive: true })
  const target = path.join(DOCS, name)
  copyFileSync(file, target)
  console.log(`screenshot published: ${target}`)
}

// ---------------------------------------------------------------------------
// Development aid: COMMANDPOST_WEB_DIST=path/to/web/dist serves that built
// app in front of the server (static files plus a pass-through of /api, /ws
// and /healthz), so the app can be tested against a binary that does not
// embed it. Not used when the binary serves the app itself.

const proxies = new Map()

function devProxy(server) {
  const key = server.listen
  if (proxies.has(key)) return proxies.get(key)
  const dist = path.resolve(process.env.COMMANDPOST_WEB_DIST)
  const [host, port] = [server.listen.split(':')[0], Number(server.listen.split(':')[1])]
  const types = { '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.html': 'text/html' }
  const proxy = createServer((req, res) => {
    const url = new URL(req.url, 'http://x')
    if (url.pathname.startsWith('/api') || url.pathname === '/healthz') {
      const upstream = httpRequest({ host, port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode, answer.headers)
        res.flushHeaders()
        answer.pipe(res)
      })
      upstream.on('error', () => {
        res.destroy()
      })
      req.pipe(upstream)
      return
    }
    let file = path.join(dist, url.pathname)
    if (!url.pathname.startsWith('/assets/') || !existsSync(file) || !statSync(file).isFile()) file = path.join(dist, 'index.html')
    res.writeHead(200, { 'Content-Type': types[path.extname(file)] ?? 'application/octet-stream' })
    res.end(readFileSync(file))
  })
  proxy.on('upgrade', (req, socket, head) => {
    const upstream = netConnect(port, host, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`, ...Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`), '', '']
      upstream.write(lines.join('\r\n'))
      if (head.length) upstream.write(head)
      upstream.pipe(socket)
      socket.pipe(upstream)
    })
    upstream.on('error', () => socket.destroy())
    socket.on('error', () => upstream.destroy())
  })
  const ready = new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${proxy.address().port}`)))
  proxy.unref()
  proxies.set(key, ready)
  return ready
}
