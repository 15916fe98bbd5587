// The connection and saved indicators in the top bar, from the document
// session's status and `navigator.onLine`.

import type { DocSession, DocStatus } from '../collab'
import { h } from '../dom'
import type { Part } from './context'

const LINK_TEXT: Record<DocStatus['link'], string> = {
  connecting: 'Connecting…',
  syncing: 'Syncing…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  stopped: 'Disconnected',
}

const SAVE_TEXT: Record<DocStatus['save'], string> = {
  saved: 'Saved',
  saving: 'Saving…',
  unsaved: 'Unsaved changes (will sync on reconnect)',
  readonly: 'Read-only',
}

export function createIndicators(session: () => DocSession | null): Part {
  const link = h('span', { class: 'indicator link', role: 'status', 'aria-live': 'polite' })
  const save = h('span', { class: 'indicator save', role: 'status', 'aria-live': 'polite' })
  const element = h('div', { class: 'indicators' }, link, save)

  function refresh(): void {
    const current = session()
    if (!current) return
    const status = current.status()
    const offlineBrowser = !navigator.onLine
    link.className = `indicator link link-${status.link}`
    link.replaceChildren(h('span', { class: 'dot', 'aria-hidden': 'true' }), LINK_TEXT[status.link], offlineBrowser && status.link !== 'offline' ? ' (browser offline)' : '')
    if (status.stoppedReason) link.title = status.stoppedReason
    else link.removeAttribute('title')
    save.className = `indicator save save-${status.save}`
    save.replaceChildren(SAVE_TEXT[status.save])
    save.dataset.state = status.save
    link.dataset.state = status.link
  }

  return { element, refresh }
}
