// The page head: the incident's id and title, severity and status badges,
// the commander, who declared it and when, and the page actions (export
// the postmortem; share a link). A failed action shows in the line below.

import { api } from '../api'
import { severityBadge, statusBadge } from '../chrome'
import { isSelf, who } from '../describe'
import { runAction } from '../dialog'
import { h, replaceChildren } from '../dom'
import { timeEl } from '../time'
import { errorLine, type IncidentContext, type Part } from './context'
import { openShareDialog } from './share'

export interface Header extends Part {
  /** Where a failed page action (an export) is shown; placed after `element`. */
  readonly error: HTMLElement
}

export function createHeader(context: IncidentContext): Header {
  const element = h('div', { class: 'incident-head' })
  const error = errorLine()
  const id = context.id

  function refresh(): void {
    const state = context.state()
    const perms = context.perms()
    const ic = state.roles[0]
    const actions: HTMLElement[] = [h('button', { type: 'button', class: 'secondary', 'data-key': 'export', onclick: (e: Event) => void exportPostmortem(id, e.currentTarget as HTMLButtonElement, error) }, 'Export postmortem')]
    if (perms.share) actions.push(h('button', { type: 'button', class: 'secondary', 'data-key': 'share', onclick: () => openShareDialog(id) }, 'Share…'))
    replaceChildren(
      element,
      h(
        'div',
        { class: 'title-block' },
        h('p', { class: 'crumbs' }, h('a', { href: '/', 'data-nav': '' }, '← All incidents')),
        h('h1', null, h('span', { class: 'inc-id' }, id), ' ', state.title),
        h(
          'div',
          { class: 'badges' },
          severityBadge(state.severity),
          statusBadge(state.status),
          h('span', { class: 'badge ic-badge' }, 'IC: ', h('strong', null, ic.holder.name), isSelf(ic.holder, context.me.sub) ? h('span', { class: 'you' }, ' (you)') : null),
          h('span', { class: 'muted small' }, 'Declared ', timeEl(state.declared_at, false), ` by ${who(state.declared_by, context.me.sub)}`),
        ),
      ),
      h('div', { class: 'head-actions' }, actions),
    )
  }

  return { element, error, refresh }
}

/** Downloads the postmortem Markdown the server writes from the incident. */
async function exportPostmortem(id: string, button: HTMLButtonElement, errorSlot: HTMLElement): Promise<void> {
  await runAction(button, errorSlot, async () => {
    const markdown = await api.postmortem(id)
    const url = URL.createObjectURL(new Blob([markdown], { type: 'text/markdown;charset=utf-8' }))
    const link = h('a', { href: url, download: `${id}-postmortem.md`, hidden: true })
    document.body.appendChild(link)
    link.click()
    link.remove()
    window.setTimeout(() => URL.revokeObjectURL(url), 10_000)
  })
}
