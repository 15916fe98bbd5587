// Share links: the dialog that mints a personal sign-in link limited to
// this incident (responder or viewer, for a number of hours) and shows it
// with a copy button.

import { api } from '../api'
import { openFormDialog } from '../dialog'
import { field, h } from '../dom'
import { timeEl } from '../time'

export function openShareDialog(id: string): void {
  const name = h('input', { required: true, maxlength: 100, autocomplete: 'off' })
  const hours = h('input', { type: 'number', min: 1, max: 168, value: 24, required: true, inputmode: 'numeric' })
  const roleGroup = h(
    'fieldset',
    { class: 'yesno' },
    h('legend', null, 'Access'),
    h('span', { class: 'choice' }, h('input', { type: 'radio', name: 'share-role', id: 'share-responder', value: 'responder', checked: true }), h('label', { for: 'share-responder' }, 'Responder (edits the document, takes part)')),
    h('span', { class: 'choice' }, h('input', { type: 'radio', name: 'share-role', id: 'share-viewer', value: 'viewer' }), h('label', { for: 'share-viewer' }, 'Viewer (read-only)')),
  )
  openFormDialog({
    title: `Share ${id}`,
    submitLabel: 'Create link',
    body: [
      h('p', { class: 'hint' }, 'Creates a personal sign-in link limited to this incident. Anyone holding it gets this access until it expires; send it privately.'),
      roleGroup,
      field('Their name', name, 'Shown to others when they are here.'),
      field('Valid for (hours)', hours),
    ],
    onSubmit: async (form) => {
      const role = (form.querySelector<HTMLInputElement>('input[name="share-role"]:checked')?.value ?? 'viewer') as 'responder' | 'viewer'
      const link = await api.share(id, { role, name: name.value.trim(), ttl_hours: Number(hours.value) })
      const urlField = h('input', { readonly: true, value: link.url, class: 'share-url', 'data-autofocus': '', 'aria-label': 'Share link' })
      const copied = h('span', { class: 'copied', role: 'status' })
      const copy = h('button', { type: 'button', class: 'primary' }, 'Copy link')
      copy.addEventListener('click', async () => {
        try {
          await navigator.clipboard.writeText(link.url)
          copied.textContent = 'Copied.'
        } catch {
          urlField.select()
          copied.textContent = document.execCommand('copy') ? 'Copied.' : 'Select the link and copy it (Ctrl+C).'
        }
      })
      return h(
        'div',
        { class: 'share-result' },
        h('p', null, `${role === 'viewer' ? 'Viewer' : 'Responder'} link for ${name.value.trim()}, valid until `, timeEl(link.expires_at, false), ':'),
        h('div', { class: 'inline-form' }, urlField, copy),
        copied,
      )
    },
  })
}
