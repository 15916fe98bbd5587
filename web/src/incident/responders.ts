// The command panel's responders list (people with an assignment), shown
// only when there are any.

import { isSelf } from '../describe'
import { h, replaceChildren } from '../dom'
import { utcShort } from '../time'
import type { IncidentContext, PanelSection } from './context'

export function createResponders(context: IncidentContext): PanelSection {
  const display = h('div')
  return {
    element: h('div', { class: 'section-wrap' }, display),
    refresh() {
      replaceChildren(display, respondersSection(context))
    },
    clearError() {
      // Nothing here sends a command.
    },
  }
}

function respondersSection(context: IncidentContext): HTMLElement | null {
  const state = context.state()
  if (state.responders.length === 0) return null
  return h(
    'section',
    { class: 'panel-section', 'aria-labelledby': 'resp-h' },
    h('h3', { id: 'resp-h' }, 'Responders'),
    h(
      'ul',
      { class: 'responders' },
      state.responders.map((r) =>
        h('li', null, h('strong', null, r.actor.name), isSelf(r.actor, context.me.sub) ? h('span', { class: 'you' }, ' (you)') : null, `: ${r.assignment} (since ${utcShort(new Date(r.since))})`),
      ),
    ),
  )
}
