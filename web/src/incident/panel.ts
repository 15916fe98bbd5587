// The command panel: its sections (roles and handoffs, lifecycle, exit
// criteria, production changes, responders) and the notice that marks it
// stale while the event stream or the document socket is down.

import { h } from '../dom'
import { localTitle, utcClock } from '../time'
import { createChanges } from './changes'
import type { IncidentContext, Part } from './context'
import { createCriteria } from './criteria'
import { createLifecycle } from './lifecycle'
import { createResponders } from './responders'
import { createRoles } from './roles'

/** What the stale notice needs to know about the connections. */
export interface Liveness {
  /** The event stream is open now. */
  stream: boolean
  /** The event stream was open at some point since the page loaded. */
  streamEverOpen: boolean
  /** The document socket is connected and synced. */
  document: boolean
}

export interface CommandPanel extends Part {
  /** Hides every section's last refusal. */
  clearErrors(): void
  /** Shows or hides "Reconnecting to … — showing state as of …". */
  renderStale(liveness: Liveness, stateAt: Date): void
}

export function createCommandPanel(context: IncidentContext): CommandPanel {
  const loadedAt = Date.now()
  const sections = [createRoles(context), createLifecycle(context), createCriteria(context), createChanges(context), createResponders(context)]
  const staleEl = h('p', { class: 'notice stale', role: 'status', hidden: true })
  // Viewers (read-only access) get no controls and no guidance meant for
  // role holders: instead, what they can do here.
  const viewerNote =
    context.me.role === 'viewer'
      ? h('p', { class: 'viewer-note', role: 'note' }, 'You are following along (read-only). Roles, status, exit criteria and production changes update here live as the responders work; the timeline below records every step.')
      : null
  const body = h(
    'div',
    { class: 'panel-body' },
    viewerNote,
    sections.map((section) => section.element),
  )
  const element = h('section', { class: 'command-panel', 'aria-labelledby': 'panel-h' }, h('h2', { id: 'panel-h' }, 'Command'), staleEl, body)

  return {
    element,
    refresh() {
      for (const section of sections) section.refresh()
    },
    clearErrors() {
      for (const section of sections) section.clearError()
    },
    renderStale(liveness, stateAt) {
      const stale = !liveness.stream || !liveness.document
      const everLive = liveness.streamEverOpen
      const show = stale && (everLive || Date.now() - loadedAt > 1500)
      element.classList.toggle('stale', show)
      staleEl.hidden = !show
      if (show) {
        const what = !liveness.stream && !liveness.document ? 'live updates and the document' : !liveness.stream ? 'live updates' : 'the document'
        staleEl.replaceChildren(
          h('strong', null, everLive ? 'Reconnecting' : 'Connecting'),
          ` to ${what} — showing state as of `,
          h('time', { datetime: stateAt.toISOString(), title: localTitle(stateAt) }, utcClock(stateAt)),
          '. It may be out of date.',
        )
      }
    },
  }
}
