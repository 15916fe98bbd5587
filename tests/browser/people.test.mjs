// The people a responder can pick (roles, handoffs) and the "Here now" list
// come from awareness, which clients write. A raw WebSocket client sends
// forged and malformed awareness states: none of their names reaches the
// picker or the presence list, and nothing on the responders' pages breaks.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { apiCall, appUrl, launchBrowser, mint, openPage, removeData, startServer, stopServer, tempData, typeAtEnd, waitForDocText, waitForIndicator } from './support.mjs'

const log = []
let server, base, browser, data, incident, alice, bob, mallory

before(async () => {
  data = tempData('people')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
  alice = mint(data, 'responder', 'Alice')
  bob = mint(data, 'responder', 'Bob')
  mallory = mint(data, 'responder', 'Mallory')
  incident = await apiCall(server, alice, 'POST', '/api/incidents', { title: 'Queue backlog', severity: 'sev3' })
})

after(async () => {
  for (const line of log) console.log(line.slice(0, 300))
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

/** A y-websocket awareness message ([1, varUint8Array(update)]) for the given [client, clock, state] entries. */
function awarenessFrame(states) {
  const varuint = (out, n) => {
    while (n > 0x7f) {
      out.push((n & 0x7f) | 0x80)
      n = Math.floor(n / 128)
    }
    out.push(n)
  }
  const update = []
  varuint(update, states.length)
  for (const [client, clock, state] of states) {
    varuint(update, client)
    varuint(update, clock)
    const json = Buffer.from(JSON.stringify(state), 'utf8')
    varuint(update, json.length)
    update.push(...json)
  }
  const frame = [1]
  varuint(frame, update.length)
  return [...frame, ...update]
}

const FORGED = [
  // No user id: a name anyone could type, a colour that is CSS, a cursor that is not one.
  [910001, 1, { user: { name: 'Forged Commander', color: 'red; background-image: url(http://example.invalid/x)' }, cursor: { anchor: 'junk', head: 5 } }],
  // Wrong types everywhere.
  [910002, 1, { user: { id: 42, name: { first: 'Forged' } }, cursor: { anchor: { type: null, tname: null, item: { client: 'x' } }, head: null } }],
  // An empty id.
  [910003, 1, { user: { id: '', name: 'Forged Empty Id' } }],
]

test('forged awareness names never reach the person picker', { timeout: 60_000 }, async () => {
  const { page: pageA } = await openPage(browser, base, `/incidents/${incident.id}`, alice, { label: 'alice', log })
  const { page: pageB } = await openPage(browser, base, `/incidents/${incident.id}`, bob, { label: 'bob', log })
  for (const page of [pageA, pageB]) {
    await page.waitForSelector('.cm-content')
    await waitForIndicator(page, 'link', 'connected')
  }
  await pageA.waitForFunction(() => [...document.querySelectorAll('.presence .person')].some((el) => el.textContent?.includes('Bob')))

  // Mallory's raw client, from a page of the same origin, sends the forged states.
  const { page: raw } = await openPage(browser, base, '/healthz', mallory, { label: 'raw', log })
  const echoed = await raw.evaluate(
    ([room, token, frame]) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/ws/${room}?token=${encodeURIComponent(token)}`)
        ws.binaryType = 'arraybuffer'
        const timer = setTimeout(() => resolve(false), 5000)
        ws.onopen = () => ws.send(new Uint8Array(frame))
        ws.onerror = () => reject(new Error('raw websocket failed'))
        // The server relays awareness to every connection, this one included.
        ws.onmessage = (event) => {
          const first = new Uint8Array(event.data)[0]
          if (first === 1) {
            clearTimeout(timer)
            resolve(true)
          }
        }
        window.__raw = ws
      }),
    [incident.id, mallory, awarenessFrame(FORGED)],
  )
  assert.ok(echoed, 'the server did not relay the awareness update')
  // An edit from Bob reaching Alice after that proves Alice's page processed the forged states too.
  await typeAtEnd(pageB, '\nBob after the forged states')
  await waitForDocText(pageA, 'Bob after the forged states')

  const presence = await pageA.locator('.presence').textContent()
  assert.ok(!/forged/i.test(presence), `presence lists a forged name: ${presence}`)

  // The picker's options (a datalist fed by the incident and by GET /api/people): each person's id, label and name.
  const listed = pageA.waitForResponse((response) => response.url().includes('/api/people'))
  await pageA.locator('[data-key="offer-incident_commander"]').click()
  const dialog = pageA.locator('dialog[open]')
  await (await listed).finished()
  await pageA.evaluate(() => new Promise((resolve) => setTimeout(resolve, 50)))
  await dialog.locator('datalist option[value="bob"]').waitFor({ state: 'attached' })
  const options = await dialog.locator('datalist option').evaluateAll((els) => els.map((el) => `${el.value} ${el.label} ${el.textContent}`))
  assert.ok(options.some((text) => text.includes('Bob')), `Bob is not offered: ${options.join(' | ')}`)
  assert.ok(!options.some((text) => /forged|\[object/i.test(text)), `a forged name is offered: ${options.join(' | ')}`)
  await pageA.keyboard.press('Escape')

  // The editors still work and nobody's page logged an error.
  await typeAtEnd(pageA, '\nAlice still typing')
  await waitForDocText(pageB, 'Alice still typing')
  assert.equal(await pageA.locator('.cm-ySelectionCaret[style*="example.invalid"]').count(), 0)
  await raw.evaluate(() => window.__raw.close())
  assert.deepEqual(log.splice(0), [])
})
