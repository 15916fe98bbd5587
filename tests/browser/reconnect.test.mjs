// The server restarts under an open page: the page says so, keeps an edit
// typed during the outage, reconnects by itself and syncs the edit.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { apiCall, appUrl, launchBrowser, mint, openPage, removeData, startServer, stopServer, tempData, typeAtEnd, waitForDocText, waitForIndicator } from './support.mjs'

const log = []
let server, base, browser, data

before(async () => {
  data = tempData('reconnect')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

test('an edit typed while the server restarts is saved after it comes back', { timeout: 90_000 }, async () => {
  const alice = mint(data, 'responder', 'Alice')
  const bob = mint(data, 'responder', 'Bob')
  const incident = await apiCall(server, alice, 'POST', '/api/incidents', { title: 'Search is slow' })

  const { page, watch } = await openPage(browser, base, `/incidents/${incident.id}`, alice, { label: 'alice', log })
  await page.waitForSelector('.cm-content')
  await waitForIndicator(page, 'link', 'connected')
  await typeAtEnd(page, '\nBefore the restart')
  await waitForIndicator(page, 'save', 'saved')
  assert.equal(await page.locator('.notice.stale').isVisible(), false)

  // SIGTERM: the server closes sockets with 1012 and exits.
  watch.allowNetworkErrors = true
  const listen = server.listen
  await stopServer(server)
  await page.waitForFunction(() => ['reconnecting', 'offline'].includes(document.querySelector('.indicator.link')?.getAttribute('data-state') ?? ''))
  // The command panel is marked stale, never shown as current.
  await page.locator('.notice.stale').waitFor({ state: 'visible' })
  assert.match(await page.locator('.notice.stale').textContent(), /Reconnecting .* showing state as of \d\d:\d\d:\d\d UTC/)

  await typeAtEnd(page, '\nTyped while the server was down')
  await waitForIndicator(page, 'save', 'unsaved')
  assert.match(await page.locator('.indicator.save').textContent(), /Unsaved changes \(will sync on reconnect\)/)

  // Same port, same data directory.
  server = await startServer({ data, listen })
  await waitForIndicator(page, 'link', 'connected', 30_000)
  await waitForIndicator(page, 'save', 'saved', 30_000)
  await page.locator('.notice.stale').waitFor({ state: 'hidden', timeout: 30_000 })
  watch.allowNetworkErrors = false

  // A fresh page, from another person, sees the edit: it reached the server.
  const { page: fresh } = await openPage(browser, base, `/incidents/${incident.id}`, bob, { label: 'bob', log })
  await waitForDocText(fresh, 'Typed while the server was down')
  await waitForDocText(fresh, 'Before the restart')

  // Live events resumed too: a note posted now reaches the first page.
  await apiCall(server, bob, 'POST', `/api/incidents/${incident.id}/commands/post_note`, { text: 'back after the restart' })
  await page.waitForFunction(() => document.querySelector('.timeline')?.textContent?.includes('back after the restart'))

  assert.deepEqual(log.splice(0), [])
})
