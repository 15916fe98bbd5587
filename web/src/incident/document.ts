// The incident document: the shared editor (responders) or the live
// read-only preview (viewers), each a chunk loaded on demand so viewers
// never download CodeMirror. The section's head carries the presence list.

import type { DocSession } from '../collab'
import { messageOf } from '../dialog'
import { h } from '../dom'
import type { IncidentContext, Lifetime } from './context'

export interface DocumentView {
  readonly element: HTMLElement
  /** Loads the editor or the preview for the session. */
  mount(session: DocSession): Promise<void>
}

export function createDocumentView(context: IncidentContext, life: Lifetime, presence: HTMLElement): DocumentView {
  const host = h('div', { class: 'doc-host' }, h('p', { class: 'muted' }, 'Loading…'))
  const element = h(
    'section',
    { class: 'doc-section', 'aria-labelledby': 'doc-h' },
    h('div', { class: 'doc-head' }, h('h2', { id: 'doc-h' }, 'Incident document'), presence),
    host,
  )

  async function mount(session: DocSession): Promise<void> {
    try {
      if (context.me.role === 'viewer') {
        const { mountPreview } = await import('../preview')
        if (life.stopped()) return
        const preview = h('article', { class: 'preview markdown', 'aria-label': 'Incident document (read-only)', tabindex: '0' })
        host.replaceChildren(h('p', { class: 'readonly-note' }, 'Read-only: you are following this document live.'), preview)
        life.defer(mountPreview(preview, session))
      } else {
        const { mountEditor } = await import('../editor')
        if (life.stopped()) return
        host.replaceChildren()
        const view = mountEditor(host, session, `Incident document for ${context.id}, Markdown, shared live`)
        life.defer(() => view.destroy())
      }
    } catch (caught) {
      host.replaceChildren(h('p', { class: 'form-error', role: 'alert' }, `Cannot load the document view: ${messageOf(caught)}. Reload the page.`))
    }
  }

  return { element, mount }
}
