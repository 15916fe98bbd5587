// The command sidecar in the browser: a two-phase handoff of command that
// everyone (the viewer included) is told about, and a pinned status that
// reaches the viewer's banner without a reload. Takes the README screenshots.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { apiCall, appUrl, launchBrowser, mint, openPage, publishScreenshot, removeData, screenshot, startServer, stopServer, tempData, typeAtEnd, waitForIndicator } from './support.mjs'

const log = []
let server, base, browser, data, incident, alice, bob, vic
let pageA, pageB, viewer

before(async () => {
  data = tempData('command')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
  alice = mint(data, 'responder', 'Alice')
  bob = mint(data, 'responder', 'Bob')
  vic = mint(data, 'viewer', 'Vic Viewer')
  incident = await apiCall(server, alice, 'POST', '/api/incidents', {
    title: 'Payments API returns 502s',
    severity: 'sev1',
    criteria: { needs_other_team: true, customer_visible: true, unresolved_after_hour: false },
    summary: 'Card payments fail for about 40% of checkouts since 13:50 UTC.',
  })
  ;({ page: pageA } = await openPage(browser, base, `/incidents/${incident.id}`, alice, { label: 'alice', log }))
  ;({ page: pageB } = await openPage(browser, base, `/incidents/${incident.id}`, bob, { label: 'bob', log }))
  ;({ page: viewer } = await openPage(browser, base, `/incidents/${incident.id}`, vic, { label: 'viewer', log }))
  for (const page of [pageA, pageB, viewer]) await waitForIndicator(page, 'link', 'connected')
})

after(async () => {
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

const holderOf = (page, role) => page.locator(`.role-${role} .holder-name`).textContent()

test('handoff of command: offer, accept, everyone is told', { timeout: 60_000 }, async () => {
  // Bob is on Alice's page (present in the document).
  await pageA.waitForFunction(() => [...document.querySelectorAll('.presence .person')].some((el) => el.textContent?.includes('Bob')))
  assert.equal(await holderOf(pageA, 'incident_commander'), 'Alice')
  // Bob is not the commander: he has no handoff control for command.
  assert.equal(await pageB.locator('[data-key="offer-incident_commander"]').count(), 0)

  await pageA.locator('[data-key="offer-incident_commander"]').click()
  const dialog = pageA.locator('dialog[open]')
  // The picker: typing part of the name offers Bob; picking an option puts his id in the input.
  const input = dialog.locator('.person-input')
  await input.pressSequentially('Bo')
  await dialog.locator('datalist option[value="bob"]').waitFor({ state: 'attached' })
  await input.fill('bob')
  // The briefing is pre-filled from the incident and shown in the form.
  await dialog.locator('.briefing').waitFor()
  assert.match(await dialog.locator('.briefing').textContent(), /Card payments fail/)
  await dialog.getByLabel('Your notes for the briefing').fill('Suspect the new TLS config on the payments gateway.')
  await dialog.getByRole('button', { name: 'Send offer' }).click()
  await dialog.waitFor({ state: 'detached' })

  // Until Bob accepts, Alice stays in command.
  await pageA.locator('.pending-offer').waitFor()
  assert.equal(await holderOf(pageA, 'incident_commander'), 'Alice')
  // Only Bob sees the offer banner.
  const banner = pageB.locator('.offer-banner')
  await banner.waitFor()
  assert.match(await banner.textContent(), /Alice offers you the role of incident commander/)
  assert.match(await banner.textContent(), /Suspect the new TLS config/)
  assert.equal(await pageA.locator('.offer-banner').count(), 0)
  assert.equal(await viewer.locator('.offer-banner').count(), 0)

  await banner.getByRole('button', { name: /^Accept/ }).click()

  // Each page says it from its reader's side: Bob reads that he is now commander, Alice that she handed over.
  const expected = [
    [pageA, /^Bob is now incident commander \(since \d\d:\d\d UTC\), handed over by you$/],
    [pageB, /^You are now incident commander \(since \d\d:\d\d UTC\), handed over by Alice$/],
    [viewer, /^Bob is now incident commander \(since \d\d:\d\d UTC\), handed over by Alice$/],
  ]
  for (const [page, sentence] of expected) {
    const confirmation = page.locator('.confirmation-text')
    await confirmation.waitFor()
    assert.match(await confirmation.textContent(), sentence)
    await page.waitForFunction(() => document.querySelector('.role-incident_commander .holder-name')?.textContent === 'Bob')
  }
  // The confirmation stays until dismissed.
  await pageA.locator('.confirmation').getByRole('button', { name: 'Dismiss' }).click()
  assert.equal(await pageA.locator('.confirmation').count(), 0)
  assert.equal(await viewer.locator('.confirmation').count(), 1)
  // Now Bob, not Alice, may hand command on.
  await pageB.locator('[data-key="offer-incident_commander"]').waitFor()
  assert.equal(await pageA.locator('[data-key="offer-incident_commander"]').count(), 0)

  assert.deepEqual(log.splice(0), [])
})

test('pinned status reaches the viewer’s banner without reload', { timeout: 60_000 }, async () => {
  const summary = 'Payments restored for 80% of users; failing over the gateway next.'
  await pageB.locator('[data-key="pin"]').click()
  const dialog = pageB.locator('dialog[open]')
  await dialog.getByLabel('Status summary').fill(summary)
  await dialog.getByLabel('Next update in (minutes)').fill('20')
  await dialog.getByRole('button', { name: 'Pin status' }).click()
  await dialog.waitFor({ state: 'detached' })

  await viewer.waitForFunction((text) => document.querySelector('.pin-summary')?.textContent === text, summary)
  assert.match(await viewer.locator('.pin-meta').first().textContent(), /Pinned by Bob at \d\d:\d\d:\d\d UTC/)
  assert.match(await viewer.locator('.pin-countdown').textContent(), /Next update in (19|20):\d\d/)
  // The viewer has no pin control.
  assert.equal(await viewer.locator('[data-key="pin"]').count(), 0)

  // Fill the page a little for the screenshots: a criterion, a change, a note, some text.
  await apiCall(server, bob, 'POST', `/api/incidents/${incident.id}/commands/add_exit_criterion`, { text: 'Payment error rate below 0.5% for 30 minutes' })
  await apiCall(server, bob, 'POST', `/api/incidents/${incident.id}/commands/record_change`, {
    what: 'Rolled payments-gateway back to v2.14.1',
    why: 'v2.15.0 shipped the new TLS config',
    revert: 'redeploy v2.15.0 once fixed',
  })
  await pageA.getByLabel('Note to the command-post log').fill('Error rate dropping since the rollback, 3% now.')
  await pageA.getByRole('button', { name: 'Post note' }).click()
  await viewer.waitForFunction(() => document.querySelector('.timeline')?.textContent?.includes('Error rate dropping since the rollback'))
  await viewer.waitForFunction(() => document.querySelector('.changes')?.textContent?.includes('Rolled payments-gateway back'))
  await typeAtEnd(pageA, '\n- 14:10 rollback of payments-gateway started (Alice)')
  await waitForIndicator(pageA, 'save', 'saved')
  await viewer.waitForFunction(() => document.querySelector('.preview')?.textContent?.includes('rollback of payments-gateway started'))
  await pageB.locator('.cm-content').click()

  const responderShot = await screenshot(pageB, 'incident-responder.png', { fullPage: true })
  const viewerShot = await screenshot(viewer, 'incident-viewer.png', { fullPage: true })
  publishScreenshot(responderShot, 'screenshot-responder.png')
  publishScreenshot(viewerShot, 'screenshot-viewer.png')
  // Narrow screens stay readable: nothing overflows horizontally at 390 px.
  await viewer.setViewportSize({ width: 390, height: 844 })
  await screenshot(viewer, 'incident-viewer-390.png', { fullPage: true })
  const overflow = await viewer.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  assert.ok(overflow <= 0, `page is ${overflow}px wider than a 390px screen`)

  assert.deepEqual(log.splice(0), [])
})
