// Two responders edit one incident document together and see each other's
// text and named cursors; a viewer follows live and cannot change anything.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { apiCall, appUrl, docText, launchBrowser, mint, openPage, removeData, startServer, stopServer, tempData, typeAtEnd, waitForDocText, waitForIndicator } from './support.mjs'

const log = []
let server, base, browser, data, incident, alice, bob, vic, pageA, pageB

before(async () => {
  data = tempData('collab')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
  alice = mint(data, 'responder', 'Alice')
  bob = mint(data, 'responder', 'Bob')
  vic = mint(data, 'viewer', 'Vic Viewer')
  incident = await apiCall(server, alice, 'POST', '/api/incidents', { title: 'Checkout is failing', severity: 'sev2' })
})

after(async () => {
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

test('two responders see each other’s text and named cursors', { timeout: 60_000 }, async () => {
  ;({ page: pageA } = await openPage(browser, base, `/incidents/${incident.id}`, alice, { label: 'alice', log }))
  ;({ page: pageB } = await openPage(browser, base, `/incidents/${incident.id}`, bob, { label: 'bob', log }))
  for (const page of [pageA, pageB]) {
    await page.waitForSelector('.cm-content')
    await waitForIndicator(page, 'link', 'connected')
    // The token moved to sessionStorage and left the address bar.
    assert.ok(!page.url().includes('token='), `token still in the URL: ${page.url()}`)
  }

  await typeAtEnd(pageA, '\nAlpha line from Alice')
  await typeAtEnd(pageB, '\nBravo line from Bob')

  for (const page of [pageA, pageB]) {
    await waitForDocText(page, 'Alpha line from Alice')
    await waitForDocText(page, 'Bravo line from Bob')
  }
  // y-codemirror's remote caret carries the other person's name.
  await pageA.waitForFunction(() => [...document.querySelectorAll('.cm-ySelectionInfo')].some((el) => el.textContent === 'Bob'))
  await pageB.waitForFunction(() => [...document.querySelectorAll('.cm-ySelectionInfo')].some((el) => el.textContent === 'Alice'))
  // Presence lists the other responder; both edits are acknowledged as saved.
  await pageA.waitForFunction(() => [...document.querySelectorAll('.presence .person')].some((el) => el.textContent?.includes('Bob')))
  await waitForIndicator(pageA, 'save', 'saved')
  await waitForIndicator(pageB, 'save', 'saved')
  // Live and in sync: the command panel is not marked stale.
  await pageA.waitForFunction(() => document.querySelector('.notice.stale')?.hidden === true)
  assert.equal(await pageA.locator('.command-panel.stale').count(), 0)

  assert.deepEqual(log.splice(0), [])
})

test('a viewer follows live and cannot change anything', { timeout: 60_000 }, async () => {
  const { page: viewer } = await openPage(browser, base, `/incidents/${incident.id}`, vic, { label: 'viewer', log })
  await viewer.waitForSelector('.preview')
  await waitForDocText(viewer, 'Bravo line from Bob')
  await waitForIndicator(viewer, 'save', 'readonly')

  // Live: text typed after the viewer opened the page arrives without reload.
  await typeAtEnd(pageA, '\nCharlie typed while the viewer watches')
  await waitForDocText(viewer, 'Charlie typed while the viewer watches')

  // No editor, nothing editable.
  assert.equal(await viewer.locator('.cm-editor').count(), 0)
  assert.equal(await viewer.locator('[contenteditable="true"]').count(), 0)

  // Typing at the preview anyway changes nothing anywhere.
  await viewer.locator('.preview').click()
  await viewer.keyboard.type('VIEWER-WAS-HERE')
  await viewer.keyboard.press('Enter')
  await viewer.keyboard.press('Backspace')
  await viewer.keyboard.press('Control+a')
  await viewer.keyboard.press('Delete')
  // A later responder edit reaching the viewer proves the viewer's keys had their chance to sync.
  await typeAtEnd(pageA, '\nDelta after the viewer typed')
  await waitForDocText(viewer, 'Delta after the viewer typed')
  await waitForDocText(pageB, 'Delta after the viewer typed')
  for (const page of [pageA, pageB, viewer]) {
    const text = await docText(page)
    assert.ok(!text.includes('VIEWER-WAS-HERE'), 'the viewer’s keystrokes reached the document')
    assert.ok(text.includes('Alpha line from Alice'), 'the viewer’s keystrokes removed text')
  }

  // No command controls: the only enabled control on the page body is the (read-only) postmortem export.
  const controls = await viewer.evaluate(() =>
    [...document.querySelectorAll('main button, main input, main textarea, main select, main [contenteditable]')]
      .filter((el) => el.getClientRects().length > 0 && !el.disabled)
      .map((el) => `${el.tagName.toLowerCase()}:${(el.textContent || el.getAttribute('aria-label') || el.getAttribute('name') || '').trim()}`),
  )
  assert.deepEqual(controls, ['button:Export postmortem'])
  // The viewer counts as a viewer for the responders.
  await pageA.waitForFunction(() => /\b1 viewer\b/.test(document.querySelector('.viewer-count')?.textContent ?? ''), null, { timeout: 15_000 })

  assert.deepEqual(log.splice(0), [])
})
