// What viewers see of the document (issue 13): the lines the editors wrote,
// single line breaks kept as chat and issue trackers render Markdown (GFM
// "breaks"), also in the plain-text fallback; and an empty task item
// (`- [ ]`, as the template's "TODO and bugs filed" has) as a checkbox like
// a filled one, never a literal "[ ]"; the server-written exit-criteria block
// as a checklist that follows the sidecar.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { apiCall, appUrl, launchBrowser, mint, openPage, pasteIntoEditor, removeData, startServer, stopServer, tempData, waitForDocText, waitForIndicator } from './support.mjs'

const log = []
let server, base, browser, data, incident, alice, vic, editor, viewer

before(async () => {
  data = tempData('preview')
  server = await startServer({ data })
  base = await appUrl(server)
  browser = await launchBrowser()
  alice = mint(data, 'responder', 'Alice Ashdown')
  vic = mint(data, 'viewer', 'Vic Viewer')
  incident = await apiCall(server, alice, 'POST', '/api/incidents', { title: 'Checkout is failing', severity: 'sev2' })
  ;({ page: editor } = await openPage(browser, base, `/incidents/${incident.id}`, alice, { label: 'alice', log }))
  ;({ page: viewer } = await openPage(browser, base, `/incidents/${incident.id}`, vic, { label: 'viewer', log }))
  await editor.waitForSelector('.cm-content')
  await viewer.waitForSelector('.preview')
  for (const page of [editor, viewer]) await waitForIndicator(page, 'link', 'connected')
})

after(async () => {
  for (const line of log) console.log(line.slice(0, 300))
  await browser?.close()
  if (server) await stopServer(server)
  removeData(data)
})

const IMPACT = ['Alice typed: EU card payments fail', 'Live for viewers: retries succeed after 30 s', 'Refunds are queued']

/** The rendered lines (layout-aware `innerText`) of the preview paragraph that contains `marker`. */
async function renderedLines(page, selector, marker) {
  return page.evaluate(
    ([sel, text]) => {
      const el = [...document.querySelectorAll(sel)].find((node) => node.textContent?.includes(text))
      return el ? el.innerText.split('\n').map((line) => line.trim()).filter(Boolean) : null
    },
    [selector, marker],
  )
}

test('the viewer’s preview keeps the lines the editor wrote', { timeout: 60_000 }, async () => {
  // Alice types three lines under the template's prompt (an HTML comment,
  // which viewers do not see).
  await editor.locator('.cm-line', { hasText: 'Who is affected, and how badly.' }).click()
  await editor.keyboard.press('End')
  await editor.keyboard.type(`\n${IMPACT.join('\n')}`)
  await waitForIndicator(editor, 'save', 'saved')
  await waitForDocText(viewer, IMPACT[2])

  // One paragraph (no blank line between), three lines: a line break each, not joined by spaces.
  const lines = await renderedLines(viewer, '.preview p', IMPACT[0])
  assert.deepEqual(lines, IMPACT, `the viewer sees the impact lines as ${JSON.stringify(lines)}`)
  assert.equal(await viewer.locator('.preview p', { hasText: IMPACT[0] }).locator('br').count(), 2)

  assert.deepEqual(log.splice(0), [])
})

test('an empty task item renders as a checkbox, like a filled one', { timeout: 60_000 }, async () => {
  // The template's "TODO and bugs filed" holds an empty `- [ ] `; Alice adds more under Notes.
  await pasteIntoEditor(editor, '- [x]\n- [ ] Page the payments team\n- [ ]')
  await waitForIndicator(editor, 'save', 'saved')
  await waitForDocText(viewer, 'Page the payments team')

  // The sidecar's criteria reach the viewer through the server-written block.
  const added = await apiCall(server, alice, 'POST', `/api/incidents/${incident.id}/commands/add_exit_criterion`, { text: 'Payments succeed for 30 min' })
  const criterion = added.events[0].seq
  await waitForDocText(viewer, `Payments succeed for 30 min (criterion ${criterion})`)

  const lists = await viewer.evaluate(() => {
    const listAfter = (heading) => {
      const h2 = [...document.querySelectorAll('.preview h2')].find((el) => el.textContent === heading)
      let node = h2?.nextElementSibling
      while (node && node.tagName !== 'UL' && node.tagName !== 'H2') node = node.nextElementSibling
      if (!node || node.tagName !== 'UL') return null
      return [...node.children].map((li) => {
        const box = li.querySelector(':scope > input[type="checkbox"], :scope > p > input[type="checkbox"]')
        return { box: box ? { checked: box.checked, disabled: box.disabled } : null, text: li.textContent.trim() }
      })
    }
    return { todo: listAfter('TODO and bugs filed'), notes: listAfter('Notes'), exit: listAfter('Exit criteria') }
  })
  const unchecked = { checked: false, disabled: true }
  const checked = { checked: true, disabled: true }
  // A filled item was already a checkbox; it still is.
  assert.deepEqual(lists.exit, [{ box: unchecked, text: `Payments succeed for 30 min (criterion ${criterion})` }])
  assert.deepEqual(lists.todo, [{ box: unchecked, text: '' }], `TODO list: ${JSON.stringify(lists.todo)}`)
  assert.deepEqual(
    lists.notes,
    [
      { box: checked, text: '' },
      { box: unchecked, text: 'Page the payments team' },
      { box: unchecked, text: '' },
    ],
    `Notes list: ${JSON.stringify(lists.notes)}`,
  )
  const text = await viewer.locator('.preview').textContent()
  assert.ok(!/\[[ xX]\]/.test(text), 'a task marker shows as literal text')

  assert.deepEqual(log.splice(0), [])
})

test('the plain-text fallback keeps the lines too', { timeout: 60_000 }, async () => {
  // Markdown the renderer cannot handle (thousands of nested quotes) sends
  // the whole document to the plain-text view, as a large document does.
  await pasteIntoEditor(editor, `\n\n${'>'.repeat(3000)} deeply quoted`)
  await waitForIndicator(editor, 'save', 'saved')
  await viewer.waitForSelector('.preview .preview-plain', { timeout: 30_000 })
  await waitForDocText(viewer, 'deeply quoted')
  const text = await viewer.evaluate(() => document.querySelector('.preview .preview-plain')?.innerText ?? '')
  assert.ok(text.includes(IMPACT.join('\n')), `the plain text joins the impact lines: ${JSON.stringify(text.slice(0, 600))}`)
  assert.ok(text.includes('- [x]\n- [ ] Page the payments team\n- [ ]'), 'the plain text joins the task lines')

  assert.deepEqual(log.splice(0), [])
})
