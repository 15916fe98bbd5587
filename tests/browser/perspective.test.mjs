// Each page is written for the person signed in on it (issue 13): the
// signed-in person (`GET /api/me`) is "you" wherever the page describes
// them (role holders, pending offers, confirmations, the timeline), a
// timeline line names its actor once, and a viewer (read-only) gets no
// guidance meant for role holders, but a note on what a viewer can do.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { apiCall, appUrl, launchBrowser, mint, openPage, removeData, startServer, stopServer, tempData, waitForIndicator } from './support.mjs'

const log = []
let server, base, browser, data, incident, alice, bruno, vic, brunoMe
let pageA, pageB, viewer

before(async () => {
  data = tempData('perspective')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
  alice = mint(data, 'responder', 'Alice Ashdown')
  bruno = mint(data, 'responder', 'Bruno Baptiste')
  vic = mint(data, 'viewer', 'Vic Viewer')
  brunoMe = await apiCall(server, bruno, 'GET', '/api/me')
  incident = await apiCall(server, alice, 'POST', '/api/incidents', { title: 'Payments API returns 502s', severity: 'sev1' })
  ;({ page: pageA } = await openPage(browser, base, `/incidents/${incident.id}`, alice, { label: 'alice', log }))
  ;({ page: pageB } = await openPage(browser, base, `/incidents/${incident.id}`, bruno, { label: 'bruno', log }))
  ;({ page: viewer } = await openPage(browser, base, `/incidents/${incident.id}`, vic, { label: 'viewer', log }))
  for (const page of [pageA, pageB, viewer]) await waitForIndicator(page, 'link', 'connected')
})

after(async () => {
  for (const line of log) console.log(line.slice(0, 300))
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

/** Waits until the first element matching `selector` exists, and returns its text content. */
async function textOf(page, selector) {
  await page.locator(selector).first().waitFor({ timeout: 15_000 })
  return (await page.locator(selector).first().textContent()).trim()
}

const since = String.raw`\(since \d\d:\d\d UTC\)`

test('each page calls its signed-in person "you"; the timeline names the actor once', { timeout: 60_000 }, async () => {
  await apiCall(server, alice, 'POST', `/api/incidents/${incident.id}/commands/offer_handoff`, {
    role: 'incident_commander',
    to: { id: brunoMe.sub, name: brunoMe.name },
    notes: 'Suspect the new TLS config on the payments gateway.',
  })

  // The pending offer, as each of them reads it.
  const pending = '.role-incident_commander .pending-offer'
  assert.match(await textOf(pageB, pending), /^Offer to you pending, from Alice Ashdown \(expires /)
  assert.match(await textOf(pageA, pending), /^Offer to Bruno Baptiste pending, from you \(expires /)
  assert.match(await textOf(viewer, pending), /^Offer to Bruno Baptiste pending, from Alice Ashdown \(expires /)
  assert.match(await textOf(pageB, '.offer-banner h2'), /^Alice Ashdown offers you the role of incident commander$/)
  // The offer on the timeline: "You" for the actor on their own page, "you" for the recipient on theirs.
  const offered = '.timeline .event-handoff_offered'
  assert.equal(await textOf(pageA, `${offered} .event-actor`), 'You')
  assert.match(await textOf(pageA, `${offered} .event-text`), /^offered incident commander to Bruno Baptiste \(offer expires /)
  assert.equal(await textOf(pageB, `${offered} .event-actor`), 'Alice Ashdown')
  assert.match(await textOf(pageB, `${offered} .event-text`), /^offered incident commander to you \(offer expires /)

  await pageB.locator('.offer-banner').getByRole('button', { name: /^Accept/ }).click()

  // The new commander reads that he is; the one who handed over reads that she did.
  const confirmation = '.confirmation-text'
  assert.match(await textOf(pageB, confirmation), new RegExp(`^You are now incident commander ${since}, handed over by Alice Ashdown$`))
  assert.match(await textOf(pageA, confirmation), new RegExp(`^Bruno Baptiste is now incident commander ${since}, handed over by you$`))
  assert.match(await textOf(viewer, confirmation), new RegExp(`^Bruno Baptiste is now incident commander ${since}, handed over by Alice Ashdown$`))

  // The timeline line names the actor once: "Bruno Baptiste — accepted incident commander from Alice Ashdown".
  const accepted = '.timeline .event-handoff_accepted'
  const line = async (page) => ({ actor: await textOf(page, `${accepted} .event-actor`), text: await textOf(page, `${accepted} .event-text`) })
  assert.deepEqual(await line(viewer), { actor: 'Bruno Baptiste', text: 'accepted incident commander from Alice Ashdown' })
  assert.deepEqual(await line(pageB), { actor: 'You', text: 'accepted incident commander from Alice Ashdown' })
  assert.deepEqual(await line(pageA), { actor: 'Bruno Baptiste', text: 'accepted incident commander from you' })
  const whole = await textOf(viewer, accepted)
  assert.equal(whole.split('Bruno Baptiste').length - 1, 1, `the line repeats the actor: ${whole}`)

  // The role holder and the page head mark the commander's own page.
  await pageB.waitForFunction(() => document.querySelector('.role-incident_commander .holder-name')?.textContent === 'Bruno Baptiste')
  assert.equal(await textOf(pageB, '.role-incident_commander .role-holder'), 'Bruno Baptiste (you)')
  assert.equal(await textOf(pageB, '.ic-badge'), 'IC: Bruno Baptiste (you)')
  for (const page of [pageA, viewer]) await page.waitForFunction(() => document.querySelector('.ic-badge')?.textContent?.includes('Bruno'))
  assert.equal(await textOf(viewer, '.ic-badge'), 'IC: Bruno Baptiste')
  assert.equal(await textOf(pageA, '.ic-badge'), 'IC: Bruno Baptiste')

  assert.deepEqual(log.splice(0), [])
})

test('a viewer sees what a viewer can do, not guidance for role holders', { timeout: 60_000 }, async () => {
  // The commander holds operations while it is not delegated: they record a change.
  const state = (await apiCall(server, alice, 'GET', `/api/incidents/${incident.id}`)).state
  const ops = state.roles.find((view) => view.role === 'operations_lead').holder
  const [opsPage, otherPage] = ops.id === brunoMe.sub ? [pageB, pageA] : [pageA, pageB]
  await apiCall(server, ops.id === brunoMe.sub ? bruno : alice, 'POST', `/api/incidents/${incident.id}/commands/record_change`, {
    what: 'Rolled payments-gateway back to v2.14.1',
    why: 'v2.15.0 shipped the new TLS config',
    revert: 'redeploy v2.15.0 once fixed',
  })
  for (const page of [pageA, pageB, viewer]) await page.waitForFunction(() => document.querySelector('.changes')?.textContent?.includes('Rolled payments-gateway back'))

  // What is on screen (hidden forms and notices are not).
  const shown = (page) => page.locator('.command-panel').innerText()
  const panel = await shown(viewer)
  for (const guidance of [/Only the operations lead/, /records changes/, /marks them reverted or waived/, /must be reverted or waived/, /Resolving needs/, /Closing needs/, /The incident commander adds/, /consider a handoff/]) {
    assert.doesNotMatch(panel, guidance, 'the viewer is shown guidance for role holders')
  }
  // Instead: what a viewer can do here.
  assert.match(await textOf(viewer, '.command-panel .viewer-note'), /following along \(read-only\)/)
  // And still the state itself.
  assert.match(panel, /Status: Active/)
  assert.match(panel, /#\d+ Rolled payments-gateway back to v2\.14\.1/)
  assert.ok(panel.includes(`Recorded by ${ops.name} at`), panel)
  // No controls in the viewer's panel.
  const controls = await viewer.evaluate(() => [...document.querySelectorAll('.command-panel :is(button, input, select, textarea)')].filter((el) => el.getClientRects().length > 0).length)
  assert.equal(controls, 0)

  // The responders keep their guidance, addressed to them where it is about them.
  assert.match(await shown(opsPage), /Only the operations lead \(you\) records changes/)
  assert.match(await shown(opsPage), /Recorded by you at/)
  assert.ok((await shown(otherPage)).includes(`Only the operations lead (${ops.name}) records changes`))
  assert.match(await shown(otherPage), /Closing needs every recorded production change reverted or waived: 1 still open/)
  for (const page of [pageA, pageB]) assert.equal(await page.locator('.viewer-note').count(), 0)

  assert.deepEqual(log.splice(0), [])
})
