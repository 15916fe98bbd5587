// A responder pastes about 1 MB into the incident document. A viewer who is
// following live, and one who opens the page afterwards, get the document
// as escaped plain text with a notice (no Markdown renderer on megabytes),
// no console errors, live updates still arriving, and a page that still
// answers clicks.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { apiCall, appUrl, launchBrowser, mint, openPage, pasteIntoEditor, removeData, screenshot, startServer, stopServer, tempData, typeAtEnd, waitForDocText, waitForIndicator } from './support.mjs'

const log = []
let server, base, browser, data, incident, alice, vic

before(async () => {
  data = tempData('large')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
  alice = mint(data, 'responder', 'Alice')
  vic = mint(data, 'viewer', 'Vic Viewer')
  incident = await apiCall(server, alice, 'POST', '/api/incidents', { title: 'Log storm', severity: 'sev2' })
})

after(async () => {
  // Whatever the pages logged, for a failed run.
  for (const line of log) console.log(line.slice(0, 300))
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

/**
 * About 1 MB of pasted logs, the way responders grow documents, with the
 * kind of input that makes Markdown renderers recurse deeply (nested
 * quotes and lists) and raw HTML that must come out as text.
 */
function bigDocument() {
  const lines = ['# Log storm', '', 'HEAD-MARKER <img src=x onerror="window.__pwned=1"> <b>not bold</b>', '']
  const nested = ['>'.repeat(3000) + ' deeply quoted', Array.from({ length: 400 }, (_, d) => `${'  '.repeat(d)}- level ${d}`).join('\n')]
  let length = 0
  for (let i = 0; length < 1_000_000; i++) {
    const line = `2024-05-01T13:${String(i % 60).padStart(2, '0')}:00Z api-${i % 7} ERROR upstream timeout after 30000 ms (request ${i}) *retrying* [trace](http://example.invalid/${i})`
    lines.push(line)
    length += line.length + 1
    if (i % 2000 === 0) {
      lines.push(...nested)
      length += nested.join('\n').length + 2
    }
  }
  lines.push('', 'TAIL-MARKER end of the pasted logs')
  return lines.join('\n')
}

test('a 1 MB document: viewers get a plain-text view and the page stays usable', { timeout: 180_000 }, async () => {
  const { page: responder } = await openPage(browser, base, `/incidents/${incident.id}`, alice, { label: 'alice', log })
  const { page: viewer } = await openPage(browser, base, `/incidents/${incident.id}`, vic, { label: 'viewer', log })
  await responder.waitForSelector('.cm-content')
  await waitForIndicator(responder, 'link', 'connected')
  await viewer.waitForSelector('.preview')
  await waitForIndicator(viewer, 'link', 'connected')
  // Small documents are still rendered as Markdown.
  await typeAtEnd(responder, '\n\n# Small heading')
  await viewer.waitForFunction(() => [...document.querySelectorAll('.preview h1')].some((el) => el.textContent === 'Small heading'))

  const text = bigDocument()
  assert.ok(text.length >= 1_000_000, `document is only ${text.length} characters`)
  await pasteIntoEditor(responder, text)
  await waitForIndicator(responder, 'save', 'saved', 60_000)

  // The viewer following live switches to the plain-text view, with a notice saying why.
  await viewer.waitForSelector('.preview .preview-notice', { timeout: 60_000 })
  await waitForDocText(viewer, 'TAIL-MARKER', 60_000)
  await checkPlainText(viewer)
  await screenshot(viewer, 'viewer-large-document.png')

  // Live updates still arrive (coalesced), and the viewer's page answers a click.
  await typeAtEnd(responder, '\nAFTER-PASTE-MARKER')
  await waitForDocText(viewer, 'AFTER-PASTE-MARKER', 30_000)
  await checkResponsive(viewer)

  // Someone opening the page now gets the same view straight away.
  const { page: late } = await openPage(browser, base, `/incidents/${incident.id}`, vic, { label: 'late viewer', log })
  await late.waitForSelector('.preview .preview-notice', { timeout: 60_000 })
  await waitForDocText(late, 'AFTER-PASTE-MARKER', 60_000)
  await checkPlainText(late)
  await checkResponsive(late)

  // The responder's editor still takes typing at the end of the large document.
  await typeAtEnd(responder, '\nRESPONDER-STILL-TYPING')
  await waitForDocText(late, 'RESPONDER-STILL-TYPING', 30_000)
  await waitForIndicator(responder, 'save', 'saved', 30_000)

  assert.deepEqual(log.splice(0), [])
})

async function checkPlainText(page) {
  const notice = await page.locator('.preview .preview-notice').textContent()
  assert.match(notice, /large document/i)
  assert.match(notice, /plain text/i)
  const view = await page.evaluate(() => {
    const preview = document.querySelector('.preview')
    return {
      plain: preview?.querySelectorAll('.preview-plain').length ?? 0,
      // Raw HTML and Markdown in the document stay text: no elements were made from them.
      elements: preview?.querySelectorAll('img, b, a, blockquote, h1, li').length ?? -1,
      pwned: 'pwned' in window,
      head: preview?.textContent?.includes('HEAD-MARKER <img src=x onerror="window.__pwned=1"> <b>not bold</b>') ?? false,
    }
  })
  assert.deepEqual(view, { plain: 1, elements: 0, pwned: false, head: true })
}

/** A click on the page's own button is handled within a few seconds (Export postmortem starts a download). */
async function checkResponsive(page) {
  const started = Date.now()
  const download = page.waitForEvent('download', { timeout: 15_000 })
  await page.locator('[data-key="export"]').click({ timeout: 15_000 })
  const file = await download
  assert.match(file.suggestedFilename(), /postmortem\.md$/)
  const elapsed = Date.now() - started
  assert.ok(elapsed < 15_000, `the click took ${elapsed} ms to be handled`)
  // The main thread answers at once: no render loop is hogging it.
  const ping = Date.now()
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve(true))))
  assert.ok(Date.now() - ping < 2000, `an animation frame took ${Date.now() - ping} ms`)
}
