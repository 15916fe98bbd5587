// Who is here: the people in the document now (from awareness, with a
// server-stamped user id) and the viewer count. Counts are only available
// by polling the incident: responders (who must see the viewer count) poll
// every 5 s; viewers, who can be thousands, rarely.

import { api } from '../api'
import type { DocSession } from '../collab'
import { h, replaceChildren } from '../dom'
import type { Presence } from '../types'
import type { IncidentContext, Lifetime, Part } from './context'

export interface PresenceList extends Part {
  /** Sets the counts the incident was loaded with; polling starts counting from here. */
  setCounts(counts: Presence): void
  /** Call on every change of the document session: refreshes the counts shortly after (re)joining. */
  sessionChanged(): void
}

export function createPresence(context: IncidentContext, life: Lifetime, session: () => DocSession | null): PresenceList {
  const element = h('div', { class: 'presence', 'aria-label': 'Who is here' })
  let counts: Presence = { editors: 0, viewers: 0 }
  let loaded = false
  let wasLive = false

  // Awareness changes with every remote cursor move: rebuild the list only when it would differ.
  let shownKey = ''
  function refresh(): void {
    const here = session()?.present() ?? []
    const key = JSON.stringify([counts.viewers, here.map((user) => [user.id, user.name, user.self])])
    if (key === shownKey) return
    shownKey = key
    replaceChildren(
      element,
      h('span', { class: 'presence-label' }, 'Here now:'),
      h(
        'ul',
        { class: 'people' },
        here.map((user) =>
          h(
            'li',
            { class: 'person', title: `user id: ${user.id}` },
            h('span', { class: 'swatch', style: `background:${user.color}`, 'aria-hidden': 'true' }),
            user.self ? `${user.name} (you)` : user.name,
          ),
        ),
      ),
      h('span', { class: 'viewer-count' }, `${counts.viewers} ${counts.viewers === 1 ? 'viewer' : 'viewers'}`),
    )
  }

  async function poll(): Promise<void> {
    if (!loaded || life.stopped()) return
    try {
      const fresh = await api.incident(context.id)
      if (life.stopped()) return
      counts = fresh.presence
      refresh()
    } catch {
      // The connection indicator and stale notice already say so.
    }
  }
  const timer = window.setInterval(() => void poll(), context.me.role === 'viewer' ? 60_000 : 5000)
  life.defer(() => window.clearInterval(timer))

  return {
    element,
    refresh,
    setCounts(next) {
      counts = next
      loaded = true
    },
    sessionChanged() {
      // Counts change when we (re)join: refresh them shortly after.
      const live = session()?.isLive() ?? false
      if (live && !wasLive) window.setTimeout(() => void poll(), 700)
      wasLive = live
    },
  }
}
