// Cluster mode of the browser tests (COMMANDPOST_BROWSER_CLUSTER=1): the
// engines a cluster needs, private to this test file's process, as the Rust
// e2e harness starts them (tests/e2e/support/{haproxy,redis}.rs,
// server/src/store/test_postgres.rs):
//
// - one PostgreSQL (initdb + pg_ctl, as the `postgres` OS user when root)
//   and one Redis (no persistence), started on first use, on free ports of
//   127.0.0.1, in one temporary directory;
// - a database per data directory (`databaseFor`): the same `data` gets the
//   same database back, so a restarted cluster sees what the previous one
//   stored;
// - HAProxy from docs/cluster/haproxy.cfg in front of the nodes, and its
//   runtime API to wait until every node passed its health check.
//
// Everything is removed when the process exits (`exit` and signal
// handlers), and a watchdog shell (its own session) kills what is left and
// stops PostgreSQL once the process is gone however it ended (SIGKILL too).

import { execFileSync, spawn } from 'node:child_process'
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const HAPROXY_CFG = path.resolve(here, '../../docs/cluster/haproxy.cfg')
const BACKEND = 'commandpost_nodes'
/** The nodes' addresses: every 127.0.0.x is loopback on Linux. */
export const NODE_HOSTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4']

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const isRoot = process.getuid?.() === 0

/** `program` on PATH or in one of `dirs`, or an error naming the package. */
function findProgram(program, dirs, pkg) {
  const candidates = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...dirs].map((dir) => path.join(dir, program))
  const found = candidates.find((file) => existsSync(file))
  if (!found) throw new Error(`${program} is not installed (cluster mode of the browser tests): apt-get install ${pkg}`)
  return found
}

/** The directory of initdb and pg_ctl: on PATH (symlinks followed) or Debian's newest /usr/lib/postgresql/N/bin. */
function postgresBin() {
  for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean)) {
    const initdb = path.join(dir, 'initdb')
    if (existsSync(initdb)) {
      const real = path.dirname(realpathSync(initdb))
      if (existsSync(path.join(real, 'pg_ctl'))) return real
    }
  }
  const versions = existsSync('/usr/lib/postgresql') ? readdirSync('/usr/lib/postgresql').filter((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`)) : []
  versions.sort((a, b) => Number(a) - Number(b))
  if (!versions.length) throw new Error('PostgreSQL is not installed (cluster mode of the browser tests): apt-get install postgresql')
  return `/usr/lib/postgresql/${versions.at(-1)}/bin`
}

/** A TCP port of `host` that nothing listens on now. */
export function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, host, () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

function accepts(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const socket = connect(port, host)
    socket.once('connect', () => (socket.destroy(), resolve(true)))
    socket.once('error', () => resolve(false))
  })
}

function tail(file, lines = 30) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

// ---------------------------------------------------------------------------
// The engines of this process, and their clean-up.

let engines = null
/** Processes to kill when this process goes (nodes, HAProxy, Redis). */
const live = new Set()

/** Adds a child process to the clean-up list until it exits. */
export function track(proc) {
  live.add(proc.pid)
  writePids()
  proc.once('exit', () => {
    live.delete(proc.pid)
    writePids()
  })
}

function writePids() {
  if (!engines) return
  const file = path.join(engines.root, 'pids')
  writeFileSync(`${file}.new`, [...live].map((pid) => `${pid}\n`).join(''))
  renameSync(`${file}.new`, file)
}

function pgCommand(bin, program, args) {
  const file = path.join(bin, program)
  return isRoot ? ['runuser', ['-u', 'postgres', '--', file, ...args]] : [file, args]
}

function stopPostgresScript({ bin, root }) {
  const [cmd, args] = pgCommand(bin, 'pg_ctl', ['-D', path.join(root, 'pg'), '-m', 'immediate', 'stop'])
  return [cmd, ...args].map((arg) => `'${arg}'`).join(' ')
}

/** Synchronous: runs from the `exit` handler. */
function cleanUp() {
  if (!engines) return
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {}
  }
  live.clear()
  try {
    execFileSync('sh', ['-c', `${stopPostgresScript(engines)} >/dev/null 2>&1`], { stdio: 'ignore' })
  } catch {}
  rmSync(engines.root, { recursive: true, force: true })
  engines = null
}

/**
 * Starts this process's PostgreSQL and Redis (once); `{ pgPort, redisUrl }`.
 */
export async function startEngines() {
  if (engines) return engines.ready
  const bin = postgresBin()
  const root = mkdtempSync(path.join(tmpdir(), 'cp-browser-cluster-'))
  engines = { root, bin, databases: new Map() }
  if (isRoot) chownSync(root, ...uidGid('postgres'))
  writePids()
  // The watchdog: once this process is gone, kill what it left and stop
  // PostgreSQL, then remove the directory.
  const script =
    `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
    `for pid in $(cat '${root}/pids' 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done; ` +
    `${stopPostgresScript(engines)} >/dev/null 2>&1; rm -rf '${root}'`
  spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' }).unref()
  process.once('exit', cleanUp)
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
    process.once(signal, () => process.exit(code))
  }
  engines.ready = (async () => {
    const pgPort = await startPostgres(bin, root)
    const redisUrl = await startRedis(root)
    return { pgPort, redisUrl }
  })()
  return engines.ready
}

function uidGid(user) {
  const id = (flag) => Number(execFileSync('id', [flag, user], { encoding: 'utf8' }).trim())
  return [id('-u'), id('-g')]
}

async function startPostgres(bin, root) {
  const data = path.join(root, 'pg')
  const run = (program, args) => {
    const [cmd, full] = pgCommand(bin, program, args)
    execFileSync(cmd, full, { stdio: ['ignore', 'pipe', 'pipe'] })
  }
  run('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync'])
  const port = await freePort()
  const log = path.join(root, 'postgres.log')
  const options = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off`
  try {
    run('pg_ctl', ['-D', data, '-l', log, '-w', '-t', '60', '-o', options, 'start'])
  } catch (error) {
    throw new Error(`cannot start PostgreSQL: ${error.message}\n${tail(log)}`)
  }
  return port
}

async function startRedis(root) {
  const server = findProgram('redis-server', ['/usr/bin', '/usr/local/bin'], 'redis-server')
  const failures = []
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = await freePort()
    const log = path.join(root, `redis-${attempt}.log`)
    const config = path.join(root, 'redis.conf')
    writeFileSync(config, `bind 127.0.0.1\nport ${port}\ndir ${root}\nlogfile ${log}\ndaemonize no\nsave ""\nappendonly no\n`)
    const proc = spawn(server, [config], { stdio: 'ignore' })
    track(proc)
    // It lives as long as the process: it must not keep it alive.
    proc.unref()
    const started = Date.now()
    while (proc.exitCode === null && Date.now() - started < 20_000) {
      if (await accepts(port)) return `redis://127.0.0.1:${port}`
      await sleep(20)
    }
    proc.kill('SIGKILL')
    failures.push(tail(log))
  }
  throw new Error(`cannot start redis-server:\n${failures.join('\n')}`)
}

/** The database of data directory `data`: created on first use, the same one afterwards. */
export async function databaseFor(data) {
  const { pgPort } = await startEngines()
  let url = engines.databases.get(data)
  if (!url) {
    const name = `browser_${engines.databases.size + 1}`
    execFileSync(path.join(engines.bin, 'createdb'), ['-h', '127.0.0.1', '-U', 'postgres', '-p', String(pgPort), name], { stdio: ['ignore', 'pipe', 'pipe'] })
    url = `postgres://postgres@127.0.0.1:${pgPort}/${name}?sslmode=disable`
    engines.databases.set(data, url)
  }
  return url
}

// ---------------------------------------------------------------------------
// HAProxy.

let proxies = 0

/** One command to HAProxy's runtime API; its answer. */
function runtime(socketPath, command) {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath)
    let answer = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk) => (answer += chunk))
    socket.once('end', () => resolve(answer))
    socket.once('error', reject)
    socket.once('connect', () => socket.write(`${command}\n`))
  })
}

/**
 * Starts HAProxy with docs/cluster/haproxy.cfg in front of `backends`
 * (host:port of the nodes), bound to `listen` (a port of 0: a free one).
 * Resolves once it accepts connections and every backend passed its health
 * check: `{ proc, listen, exited, logs }`.
 */
export async function startHaproxy(listen, backends) {
  const program = findProgram('haproxy', ['/usr/sbin', '/usr/local/sbin', '/sbin'], 'haproxy')
  const dir = path.join(engines.root, `haproxy-${++proxies}`)
  mkdirSync(dir)
  const socketPath = path.join(dir, 'admin.sock')
  const log = path.join(dir, 'haproxy.log')
  const [host, wanted] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))]
  const servers = backends.map((addr) => `    server ${addr} ${addr} check`).join('\n')
  const failures = []
  // A free port may be taken before HAProxy binds it: retry with another.
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = wanted || (await freePort(host))
    const bind = `${host}:${port}`
    const config = path.join(dir, 'haproxy.cfg')
    writeFileSync(
      config,
      readFileSync(HAPROXY_CFG, 'utf8').replace('{{STATS_SOCKET}}', socketPath).replace('{{BIND}}', bind).replace('{{SERVERS}}', servers),
    )
    const proc = spawn(program, ['-db', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] })
    track(proc)
    const exited = new Promise((done) => proc.once('exit', done))
    let logs = ''
    proc.stderr.on('data', (chunk) => {
      logs += chunk.toString()
      writeFileSync(log, logs)
    })
    const started = Date.now()
    while (proc.exitCode === null && Date.now() - started < 20_000) {
      const ours = await runtime(socketPath, 'show info').then((info) => info.includes(`Pid: ${proc.pid}\n`), () => false)
      if (ours && (await accepts(port, host))) {
        await waitAllUp(socketPath, backends, () => logs)
        return { proc, listen: bind, exited, logs: () => logs }
      }
      await sleep(20)
    }
    proc.kill('SIGKILL')
    await exited
    failures.push(`haproxy on ${bind}:\n${logs.split('\n').slice(-20).join('\n')}`)
    if (wanted) await sleep(500)
  }
  throw new Error(`cannot start haproxy:\n${failures.join('\n')}`)
}

/** Waits until every backend is up (op_state 2) and passed its latest check (check_result 3). */
async function waitAllUp(socketPath, backends, logs) {
  const started = Date.now()
  let states = ''
  for (;;) {
    states = await runtime(socketPath, `show servers state ${BACKEND}`).catch((error) => String(error))
    const header = states.split('\n').find((line) => line.startsWith('# '))?.slice(2).split(/\s+/) ?? []
    const [name, op, check] = ['srv_name', 'srv_op_state', 'srv_check_result'].map((column) => header.indexOf(column))
    const up = new Set(
      states
        .split('\n')
        .filter((line) => !line.startsWith('#') && line.trim().split(/\s+/).length > 1)
        .map((line) => line.trim().split(/\s+/))
        .filter((fields) => fields[op] === '2' && fields[check] === '3')
        .map((fields) => fields[name]),
    )
    if (name >= 0 && backends.every((addr) => up.has(addr))) return
    if (Date.now() - started > 30_000) throw new Error(`HAProxy did not see every node up within 30 s:\n${states}\n${logs()}`)
    await sleep(50)
  }
}
