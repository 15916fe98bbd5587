// One incident record in the browser (issue 13): the people picker fed by
// `GET /api/people`, a freelancer's refused change and an outsider's note
// marked on the commander's timeline, presence pushed on the event stream
// (the same numbers on every page, pushed, never polled), the
// commander's impact-start control, and the final pin once mitigated.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { apiCall, appUrl, launchBrowser, mint, openPage, removeData, startServer, stopServer, tempData, waitForIndicator } from './support.mjs'

const log = []
let server, base, browser, data, incident
let mary, olga, josephine, fred, vic, vic2, josephineMe
let pageM, pageO, viewer

before(async () => {
  data = tempData('record')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
  mary = mint(data, 'responder', 'Mary Major')
  olga = mint(data, 'responder', 'Olga Ortiz')
  josephine = mint(data, 'responder', 'Josephine Jones')
  fred = mint(data, 'responder', 'Fred Freelancer')
  vic = mint(data, 'viewer', 'Vic Viewer')
  vic2 = mint(data, 'viewer', 'Val Viewer')
  // Josephine has used the server (so it knows her) but is on no incident and not on the page.
  josephineMe = await apiCall(server, josephine, 'GET', '/api/me')
  await apiCall(server, fred, 'GET', '/api/me')
  incident = await apiCall(server, mary, 'POST', '/api/incidents', { title: 'Checkout returns 500s', severity: 'sev2' })
  ;({ page: pageM } = await openPage(browser, base, `/incidents/${incident.id}`, mary, { label: 'mary', log }))
  ;({ page: pageO } = await openPage(browser, base, `/incidents/${incident.id}`, olga, { label: 'olga', log }))
  ;({ page: viewer } = await openPage(browser, base, `/incidents/${incident.id}`, vic, { label: 'viewer', log }))
  for (const page of [pageM, pageO, viewer]) await waitForIndicator(page, 'link', 'connected')
})

after(async () => {
  for (const line of log) console.log(line.slice(0, 300))
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

const holderOf = (page, role) => page.locator(`.role-${role} .holder-name`).textContent()

test('the people picker offers people from /api/people as you type and sends the picked id', { timeout: 60_000 }, async () => {
  await pageM.locator('[data-key="assign-operations_lead"]').click()
  const dialog = pageM.locator('dialog[open]')
  const input = dialog.locator('.person-input')
  await input.waitFor()
  // Typing part of her name searches the server.
  const searched = pageM.waitForRequest((request) => request.url().includes('/api/people?q=Jos'))
  await input.pressSequentially('Jos')
  await searched
  const option = dialog.locator(`datalist option[value="${josephineMe.sub}"]`)
  await option.waitFor({ state: 'attached' })
  assert.equal(await option.textContent(), 'Josephine Jones')
  assert.equal(await option.getAttribute('label'), `Josephine Jones (${josephineMe.sub})`)
  // Picking an option puts its value, the id, in the input; the command sends that id.
  await input.fill(josephineMe.sub)
  const sent = pageM.waitForRequest((request) => request.url().endsWith('/commands/assign_role') && request.method() === 'POST')
  await dialog.getByRole('button', { name: 'Assign role' }).click()
  const body = (await sent).postDataJSON()
  assert.deepEqual(body, { role: 'operations_lead', to: { id: josephineMe.sub, name: 'Josephine Jones' } })
  await dialog.waitFor({ state: 'detached' })
  for (const page of [pageM, pageO, viewer]) await page.waitForFunction(() => document.querySelector('.role-operations_lead .holder-name')?.textContent === 'Josephine Jones')
  assert.equal(await holderOf(viewer, 'operations_lead'), 'Josephine Jones')

  // Someone the server does not know is refused in the form, and nothing is sent.
  await pageM.locator('[data-key="assign-planning_lead"]').click()
  const again = pageM.locator('dialog[open]')
  await again.locator('.person-input').fill('josephin')
  let posted = false
  const spy = (request) => {
    if (request.url().endsWith('/commands/assign_role')) posted = true
  }
  pageM.on('request', spy)
  await again.getByRole('button', { name: 'Assign role' }).click()
  await again.locator('.form-error').filter({ hasText: /No one known as josephin/ }).waitFor()
  pageM.off('request', spy)
  assert.equal(posted, false)
  await pageM.keyboard.press('Escape')
  await again.waitFor({ state: 'detached' })

  assert.deepEqual(log.splice(0), [])
})

test('a freelancer’s refused change and an outsider’s note are marked on the commander’s timeline', { timeout: 60_000 }, async () => {
  // Fred holds no role and is not a responder: his change is refused (403) …
  await assert.rejects(
    apiCall(server, fred, 'POST', `/api/incidents/${incident.id}/commands/record_change`, { what: 'Restarted the checkout database', revert: 'nothing' }),
    /403/,
  )
  const refused = pageM.locator('.timeline .event.refused')
  await refused.waitFor()
  assert.equal(await refused.locator('.refused-label').textContent(), 'Refused')
  assert.match(await refused.locator('.event-text').textContent(), /^Refused: Fred Freelancer \(not the operations lead\) tried to record a change: Restarted the checkout database$/)
  assert.equal(await pageM.locator('.changes').getByText('Restarted the checkout database').count(), 0)

  // … his note is posted, but marked as from outside the response.
  await apiCall(server, fred, 'POST', `/api/incidents/${incident.id}/commands/post_note`, { text: 'DB CPU at 95% from where I sit' })
  const outsider = pageM.locator('.timeline .event.outsider')
  await outsider.waitFor()
  assert.equal(await outsider.locator('.event-actor').textContent(), 'Fred Freelancer')
  assert.equal(await outsider.locator('.outsider-label').textContent(), 'Outside the response')
  assert.equal(await outsider.locator('.note-text').textContent(), 'DB CPU at 95% from where I sit')
  // A note from the operations lead is not marked.
  await apiCall(server, josephine, 'POST', `/api/incidents/${incident.id}/commands/post_note`, { text: 'Looking at the DB now' })
  await pageM.waitForFunction(() => document.querySelector('.timeline')?.textContent?.includes('Looking at the DB now'))
  const inside = pageM.locator('.timeline .event-note_posted').filter({ hasText: 'Looking at the DB now' })
  assert.equal(await inside.evaluate((el) => el.classList.contains('outsider')), false)
  assert.equal(await pageM.locator('.timeline .outsider-label').count(), 1)

  assert.deepEqual(log.splice(0), [])
})

test('presence is the same on a responder’s and a viewer’s page when a third page joins, pushed without polling', { timeout: 60_000 }, async () => {
  const counts = (page) => page.evaluate(() => `${document.querySelector('.presence .editor-count')?.textContent} / ${document.querySelector('.presence .viewer-count')?.textContent}`)
  // Three pages are open (Mary and Olga edit, Vic views): everyone agrees.
  for (const page of [pageM, pageO, viewer]) await page.waitForFunction(() => document.querySelector('.presence .editor-count')?.textContent === '2 editors' && document.querySelector('.presence .viewer-count')?.textContent === '1 viewer')
  // Nothing asks the server for presence from now on: it is pushed.
  const requests = []
  const record = (label) => (request) => {
    if (request.url().includes('/api/')) requests.push(`${label}: ${request.method()} ${request.url()}`)
  }
  const spies = [
    [pageO, record('olga')],
    [viewer, record('viewer')],
  ]
  for (const [page, spy] of spies) page.on('request', spy)

  const { page: third } = await openPage(browser, base, `/incidents/${incident.id}`, vic2, { label: 'viewer 2', log })
  await waitForIndicator(third, 'link', 'connected')
  // The server pushes presence at most once a second; how fast is a matter
  // for benchmarks, so this waits for the numbers, not for a deadline. That
  // no page asked the server for them (below) is what shows they were pushed.
  await Promise.all(
    [pageO, viewer, third].map((page) => page.waitForFunction(() => document.querySelector('.presence .viewer-count')?.textContent === '2 viewers', null, { timeout: 30_000 })),
  )
  assert.equal(await counts(pageO), '2 editors / 2 viewers')
  assert.equal(await counts(viewer), await counts(pageO))
  assert.equal(await counts(third), await counts(pageO))

  // And when it leaves.
  await third.context().close()
  await Promise.all([pageO, viewer].map((page) => page.waitForFunction(() => document.querySelector('.presence .viewer-count')?.textContent === '1 viewer', null, { timeout: 30_000 })))
  assert.equal(await counts(viewer), await counts(pageO))
  for (const [page, spy] of spies) page.off('request', spy)
  assert.deepEqual(requests, [], 'no page polled the server')

  assert.deepEqual(log.splice(0), [])
})

test('the commander sets the impact start; everyone sees it', { timeout: 60_000 }, async () => {
  const form = '.command-panel .impact-start-form'
  await pageM.locator(form).waitFor()
  // Only the commander has the control.
  assert.equal(await pageO.locator(form).isVisible(), false)
  assert.equal(await viewer.locator(form).isVisible(), false)
  assert.equal(await viewer.locator('.impact-start').count(), 0)

  // Twenty minutes before the declaration, in UTC.
  const { state } = await apiCall(server, mary, 'GET', `/api/incidents/${incident.id}`)
  const start = new Date(Date.parse(state.declared_at) - 20 * 60_000)
  start.setUTCSeconds(0, 0)
  const value = start.toISOString().slice(0, 16)
  const input = pageM.locator(`${form} input[type="datetime-local"]`)
  await input.fill(value)
  const sent = pageM.waitForRequest((request) => request.url().endsWith('/commands/set_impact_start'))
  await pageM.locator(`${form} [data-key="set-impact-start"]`).click()
  assert.deepEqual((await sent).postDataJSON(), { at: start.toISOString() })

  const clock = `${value.slice(11, 16)} UTC`
  for (const page of [pageM, pageO, viewer]) {
    await page.waitForFunction(() => document.querySelector('.impact-start')?.textContent?.startsWith('Impact started:'))
    assert.match(await page.locator('.impact-start').textContent(), new RegExp(`^Impact started: (\\d{4}-\\d\\d-\\d\\d )?${clock} \\(declared `))
    await page.waitForFunction(() => !!document.querySelector('.timeline .event-impact_start_set'))
  }
  assert.match(await viewer.locator('.timeline .event-impact_start_set .event-text').textContent(), new RegExp(`^set the impact start to ${clock}$`))
  // The input follows the state.
  assert.equal(await input.inputValue(), value)

  assert.deepEqual(log.splice(0), [])
})

test('a final pin (no next deadline) is offered once mitigated', { timeout: 60_000 }, async () => {
  // While active, the pin dialog has no final-update box.
  await pageM.locator('[data-key="pin"]').click()
  let dialog = pageM.locator('dialog[open]')
  await dialog.getByLabel('Status summary').waitFor()
  assert.equal(await dialog.locator('.final-pin').count(), 0)
  await pageM.keyboard.press('Escape')
  await dialog.waitFor({ state: 'detached' })

  await pageM.locator('[data-key="to-mitigated"]').click()
  for (const page of [pageM, viewer]) await page.waitForFunction(() => document.querySelector('.status-text')?.textContent === 'Mitigated')

  await pageM.locator('[data-key="pin"]').click()
  dialog = pageM.locator('dialog[open]')
  await dialog.getByLabel('Status summary').fill('Checkout is back for everyone; this is the last update.')
  const box = dialog.locator('.final-pin input[type="checkbox"]')
  await box.check()
  assert.equal(await dialog.getByLabel('Next update in (minutes)').isDisabled(), true)
  const sent = pageM.waitForRequest((request) => request.url().endsWith('/commands/pin_status'))
  await dialog.getByRole('button', { name: 'Pin status' }).click()
  assert.deepEqual((await sent).postDataJSON(), { summary: 'Checkout is back for everyone; this is the last update.', final: true })
  await dialog.waitFor({ state: 'detached' })

  for (const page of [pageM, viewer]) {
    await page.waitForFunction(() => document.querySelector('.pin-banner')?.classList.contains('final'))
    assert.equal(await page.locator('.pin-banner .pin-label').textContent(), 'Final status update')
    assert.equal(await page.locator('.pin-banner .pin-summary').textContent(), 'Checkout is back for everyone; this is the last update.')
    assert.equal(await page.locator('.pin-banner .pin-countdown').textContent(), 'No further updates are due.')
  }
  assert.match(await viewer.locator('.timeline .event-status_pinned .event-text').first().textContent(), /^pinned the final status: “Checkout is back for everyone; this is the last update\.” \(no further updates\)$/)

  assert.deepEqual(log.splice(0), [])
})
