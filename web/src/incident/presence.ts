// Who is here: the people in the document now (from awareness, with a
// server-stamped user id) and the connection counts, which the event stream
// pushes (`event: presence`, on open and within a second of every change),
// so every page shows the same numbers.

import type { DocSession } from '../collab'
import { h, replaceChildren } from '../dom'
import type { Presence } from '../types'
import type { Part } from './context'

export interface PresenceList extends Part {
  /** Sets the counts: from the incident when loaded, then from each `presence` message of the stream. */
  setCounts(counts: Presence): void
  /** Call on every change of the document session: refreshes the counts shortly after (re)joining. */
  sessionChanged(): void
}

export function createPresence(session: () => DocSession | null): PresenceList {
  const element = h('div', { class: 'presence', 'aria-label': 'Who is here' })
  let counts: Presence = { editors: 0, viewers: 0 }

  // Awareness changes with every remote cursor move: rebuild the list only when it would differ.
  let shownKey = ''
  function refresh(): void {
    const here = session()?.present() ?? []
    const key = JSON.stringify([counts.editors, counts.viewers, here.map((user) => [user.id, user.name, user.self])])
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
      h('span', { class: 'editor-count' }, `${counts.editors} ${counts.editors === 1 ? 'editor' : 'editors'}`),
      h('span', { class: 'viewer-count' }, `${counts.viewers} ${counts.viewers === 1 ? 'viewer' : 'viewers'}`),
    )
  }

  return {
    element,
    refresh,
    setCounts(next) {
      counts = next
      refresh()
    },
    sessionChanged() {
      // The stream pushes the new counts; only the awareness list changes here.
      refresh()
    },
  }
}
