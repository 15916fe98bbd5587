// The incident page (`/incidents/INC-n`): assembles the parts in
// `incident/` (header, pinned banner, handoff offers and confirmations, the
// document with presence, the command panel, the timeline) and wires them
// to the state, the event stream and the document session.
//
// State handling: the sidecar state is only ever taken from the server.
// Every live event (Server-Sent Events, resumed by `Last-Event-ID`) is
// prepended to the timeline and triggers a refetch of
// `GET /api/incidents/{id}/state`; a command's answer carries the state
// after it. A state is applied only if it is not older than the one shown
// (`last_seq`). While the event stream or the document socket is down, the
// panel is marked stale with the time of the state it shows.

import { allEvents, api, ApiError, token } from './api'
import { topBar } from './chrome'
import { DocSession } from './collab'
import { messageOf } from './dialog'
import { h } from './dom'
import type { IncidentContext, Lifetime } from './incident/context'
import { createDocumentView } from './incident/document'
import { createConfirmations, createOffers } from './incident/handoff'
import { createHeader } from './incident/header'
import { createIndicators } from './incident/indicators'
import { createCommandPanel } from './incident/panel'
import { knownPeople } from './incident/people'
import { createPinBanner } from './incident/pin'
import { createPresence } from './incident/presence'
import { createStateStore } from './incident/state'
import { openEventStream, type EventStream } from './incident/stream'
import { createTimeline } from './incident/timeline'
import { permissions } from './permissions'
import type { IncidentEvent, IncidentState, Me } from './types'

export function renderIncidentPage(root: HTMLElement, me: Me, id: string): () => void {
  document.title = `${id} · Command Post`
  let stopped = false
  const cleanups: Array<() => void> = []
  const life: Lifetime = { stopped: () => stopped, defer: (cleanup) => void cleanups.push(cleanup) }
  let loaded = false
  let stream: EventStream | null = null
  let session: DocSession | null = null
  const store = createStateStore(id, life, () => render())

  const context: IncidentContext = {
    id,
    me,
    state: () => store.current() as IncidentState,
    perms: () => permissions(store.current() as IncidentState, me),
    run: async (name, body) => {
      const outcome = await api.command(id, name, body)
      // An accepted command makes earlier refusals in the panel moot.
      panel.clearErrors()
      for (const event of outcome.events) addEvent(event, true)
      store.apply(outcome.state)
    },
    people: () => knownPeople(store.current(), timeline.events(), session?.present() ?? []),
  }

  // ------------------------------------------------------------ parts
  const indicators = createIndicators(() => session)
  const header = createHeader(context)
  const confirmations = createConfirmations(context)
  const offers = createOffers(context)
  const pin = createPinBanner(context)
  const presence = createPresence(() => session)
  const documentView = createDocumentView(context, life, presence.element)
  const panel = createCommandPanel(context)
  const timeline = createTimeline(context)
  const mainEl = h(
    'main',
    { class: 'incident-page', id: 'main' },
    header.element,
    header.error,
    confirmations.element,
    offers.element,
    pin.element,
    h('div', { class: 'incident-grid' }, documentView.element, h('div', { class: 'side' }, panel.element, timeline.element)),
  )
  root.replaceChildren(topBar(me, indicators.element), mainEl)
  mainEl.setAttribute('aria-busy', 'true')

  function render(): void {
    const state = store.current()
    if (!state || !loaded) return
    document.title = `${id} ${state.title} · Command Post`
    header.refresh()
    pin.refresh()
    offers.refresh()
    panel.refresh()
    renderStale()
    presence.refresh()
    timeline.refresh()
  }

  function renderStale(): void {
    const liveness = { stream: stream?.isOpen() ?? false, streamEverOpen: stream?.everOpen() ?? false, document: session?.isLive() ?? false }
    panel.renderStale(liveness, store.appliedAt())
  }

  /** Adds an event to the timeline (a live role change is also confirmed); returns whether it was new. */
  function addEvent(event: IncidentEvent, live: boolean): boolean {
    if (!timeline.add(event, live)) return false
    if (live) confirmations.add(event)
    return true
  }

  function openStream(): void {
    stream = openEventStream(
      {
        id,
        after: () => timeline.lastSeq(),
        onOpen: () => {
          void store.refetch()
          renderStale()
        },
        onEvent: (event) => {
          if (addEvent(event, true)) void store.refetch()
        },
        onPresence: (counts) => presence.setCounts(counts),
        onDown: () => renderStale(),
      },
      life,
    )
  }

  function openDocument(): void {
    const current = new DocSession(id, token(), me)
    session = current
    cleanups.push(() => current.destroy())
    current.onChange(() => {
      indicators.refresh()
      renderStale()
      presence.sessionChanged()
    })
    current.onAwareness(() => presence.refresh())
    indicators.refresh()
    presence.refresh()
    void documentView.mount(current)
  }

  // ------------------------------------------------------------ loading
  let teardownReplacement: (() => void) | null = null
  async function load(): Promise<void> {
    try {
      const [incident, history] = await Promise.all([api.incident(id), allEvents(id)])
      if (stopped) return
      loaded = true
      presence.setCounts(incident.presence)
      for (const event of history) addEvent(event, false)
      store.apply(incident.state, true)
      mainEl.removeAttribute('aria-busy')
      openStream()
      openDocument()
    } catch (caught) {
      if (stopped) return
      const notFound = caught instanceof ApiError && (caught.status === 404 || caught.status === 403)
      root.replaceChildren(topBar(me), failure(id, notFound, caught))
      if (!notFound) {
        // Anything else may pass: try the whole page again in 5 s.
        const retry = window.setTimeout(() => {
          if (!stopped) {
            stopped = true
            cleanup()
            root.replaceChildren()
            teardownReplacement = renderIncidentPage(root, me, id)
          }
        }, 5000)
        cleanups.push(() => window.clearTimeout(retry))
      }
    }
  }

  // ------------------------------------------------------------ timers, network, teardown
  const tick = window.setInterval(() => {
    pin.tick()
    renderStale()
  }, 1000)
  cleanups.push(() => window.clearInterval(tick))

  const onOnline = (): void => {
    indicators.refresh()
    stream?.reopenIfClosed()
  }
  window.addEventListener('online', onOnline)
  window.addEventListener('offline', onOnline)
  cleanups.push(() => {
    window.removeEventListener('online', onOnline)
    window.removeEventListener('offline', onOnline)
  })

  function cleanup(): void {
    stream?.close()
    stream = null
    for (const fn of cleanups.splice(0)) {
      try {
        fn()
      } catch {
        // keep tearing down
      }
    }
    for (const dialog of document.querySelectorAll('dialog')) dialog.remove()
  }

  void load()
  return () => {
    stopped = true
    cleanup()
    teardownReplacement?.()
  }
}

/** The page shown when the incident cannot be loaded. */
function failure(id: string, notFound: boolean, caught: unknown): HTMLElement {
  return h(
    'main',
    { class: 'page', id: 'main' },
    h('h1', null, notFound ? `Cannot open ${id}` : 'Cannot load the incident'),
    h('p', { class: 'notice warn', role: 'alert' }, messageOf(caught)),
    h('p', null, h('a', { href: '/', 'data-nav': '' }, 'Back to the incident list')),
  )
}
