// Signing in and declaring an incident through the dialog.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { appUrl, launchBrowser, mint, openPage, removeData, startServer, stopServer, tempData } from './support.mjs'

const log = []
let server, base, browser, data

before(async () => {
  data = tempData('declare')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

test('without a token the app says how to get one', { timeout: 30_000 }, async () => {
  const context = await browser.newContext()
  const page = await context.newPage()
  page.on('pageerror', (error) => log.push(`signin: uncaught: ${error.message}`))
  await page.goto(`${base}/`)
  await page.getByText('You need a sign-in link').waitFor()
  assert.match(await page.locator('main').textContent(), /commandpost token --role responder/)
  await context.close()
  assert.deepEqual(log.splice(0), [])
})

test('declare an incident through the dialog; it appears in the list', { timeout: 60_000 }, async () => {
  const alice = mint(data, 'responder', 'Alice')
  const { page } = await openPage(browser, base, '/', alice, { label: 'alice', log })
  await page.getByRole('heading', { name: 'Incidents' }).waitFor()
  assert.ok(!page.url().includes('token='))

  await page.getByRole('button', { name: 'Declare incident' }).click()
  const dialog = page.locator('dialog[open]')
  await dialog.getByLabel('Title').fill('Login page times out')
  await dialog.getByLabel('Severity').selectOption('sev2')
  await dialog.getByRole('group', { name: 'Do you need a second team to fix it?' }).getByLabel('No').check()
  await dialog.getByRole('group', { name: 'Is it visible to customers?' }).getByLabel('Yes').check()
  await dialog.getByRole('group', { name: 'Still unsolved after an hour of concentrated analysis?' }).getByLabel('No').check()
  await dialog.getByLabel('Summary').fill('Logins take more than 30 s for EU users.')
  await dialog.getByRole('button', { name: 'Declare incident' }).click()

  // The app goes to the new incident, with the declarer as commander.
  await page.waitForURL(/\/incidents\/INC-1$/)
  await page.getByRole('heading', { name: /Login page times out/ }).waitFor()
  await page.waitForFunction(() => document.querySelector('.role-incident_commander .holder-name')?.textContent === 'Alice')
  await page.locator('.timeline .event-declared').waitFor()

  // Back to the list: the incident is there, active, with its commander.
  await page.getByRole('link', { name: '← All incidents' }).click()
  const card = page.locator('.incident-card', { hasText: 'Login page times out' })
  await card.waitFor()
  assert.match(await card.textContent(), /INC-1/)
  assert.match(await card.textContent(), /Active/)
  assert.match(await card.textContent(), /Commander\s*Alice/)

  // Viewers get the list without the declare button.
  const vic = mint(data, 'viewer', 'Vic Viewer')
  const { page: viewer } = await openPage(browser, base, '/', vic, { label: 'viewer', log })
  await viewer.locator('.incident-card', { hasText: 'Login page times out' }).waitFor()
  assert.equal(await viewer.getByRole('button', { name: 'Declare incident' }).count(), 0)

  assert.deepEqual(log.splice(0), [])
})
