// The incident page (`/incidents/INC-n`): the live document, the pinned
// status banner, the command panel and the timeline.
//
// State handling: the sidecar state is only ever taken from the server.
// Every live event (Server-Sent Events, resumed by `Last-Event-ID`) is
// prepended to the timeline and triggers a refetch of
// `GET /api/incidents/{id}/state`; a command's answer carries the state
// after it. A state is applied only if it is not older than the one shown
// (`last_seq`). While the event stream or the document socket is down, the
// panel is marked stale with the time of the state it shows.

import { allEvents, api, ApiError, eventsUrl, token } from './api'
import { severityBadge, statusBadge, topBar } from './chrome'
import { DocSession, type DocStatus } from './collab'
import { describe, roleChangeConfirmation, isProminent, roleName } from './describe'
import { messageOf, openFormDialog, runAction } from './dialog'
import { field, h, replaceChildren } from './dom'
import {
  briefingView,
  changesSection,
  criteriaSection,
  criterionForm,
  lifecycleSection,
  openPinDialog,
  respondersSection,
  rolesSection,
  type PanelContext,
} from './panel'
import { permissions } from './permissions'
import { duration, localTitle, timeEl, utcClock } from './time'
import type { Actor, Incident, IncidentEvent, IncidentState, Me, Presence } from './types'

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

export function renderIncidentPage(root: HTMLElement, me: Me, id: string): () => void {
  document.title = `${id} · Command Post`
  let stopped = false
  const cleanups: Array<() => void> = []

  // ------------------------------------------------------------ state
  let incident: Incident | null = null
  let state: IncidentState | null = null
  let stateAt = new Date()
  let presence: Presence = { editors: 0, viewers: 0 }
  const events: IncidentEvent[] = []
  const seen = new Set<number>()
  let lastSeq = 0
  let source: EventSource | null = null
  let sseOpen = false
  let sseEverOpen = false
  let session: DocSession | null = null
  const loadedAt = Date.now()
  const confirmations: Array<{ seq: number; text: string }> = []
  const declineReasons = new Map<number, string>()

  // ------------------------------------------------------------ skeleton
  const linkIndicator = h('span', { class: 'indicator link', role: 'status', 'aria-live': 'polite' })
  const saveIndicator = h('span', { class: 'indicator save', role: 'status', 'aria-live': 'polite' })
  const headerEl = h('div', { class: 'incident-head' })
  const headError = h('p', { class: 'form-error', role: 'alert', hidden: true })
  const confirmationsEl = h('div', { class: 'confirmations', 'aria-live': 'assertive' })
  const offersEl = h('div', { class: 'offers', 'aria-live': 'assertive' })
  const pinEl = h('section', { class: 'pin-banner', 'aria-label': 'Pinned status', 'aria-live': 'polite' })
  const staleEl = h('p', { class: 'notice stale', role: 'status', hidden: true })
  const presenceEl = h('div', { class: 'presence', 'aria-label': 'Who is here' })
  const docEl = h('div', { class: 'doc-host' })
  const panelEl = h('div', { class: 'panel-body' })
  const panelWrap = h('section', { class: 'command-panel', 'aria-labelledby': 'panel-h' }, h('h2', { id: 'panel-h' }, 'Command'), staleEl, panelEl)
  const timelineList = h('ol', { class: 'timeline', reversed: true })
  const noteError = h('p', { class: 'form-error', role: 'alert', hidden: true })
  const noteForm = noteBox()
  const timelineWrap = h(
    'section',
    { class: 'timeline-section', 'aria-labelledby': 'timeline-h' },
    h('h2', { id: 'timeline-h' }, 'Timeline ', h('span', { class: 'muted small' }, '(newest first, UTC)')),
    noteForm,
    noteError,
    timelineList,
  )
  const docSection = h(
    'section',
    { class: 'doc-section', 'aria-labelledby': 'doc-h' },
    h('div', { class: 'doc-head' }, h('h2', { id: 'doc-h' }, 'Incident document'), presenceEl),
    docEl,
  )
  const mainEl = h(
    'main',
    { class: 'incident-page', id: 'main' },
    headerEl,
    headError,
    confirmationsEl,
    offersEl,
    pinEl,
    h('div', { class: 'incident-grid' }, docSection, h('div', { class: 'side' }, panelWrap, timelineWrap)),
  )
  root.replaceChildren(topBar(me, h('div', { class: 'indicators' }, linkIndicator, saveIndicator)), mainEl)
  mainEl.setAttribute('aria-busy', 'true')
  docEl.replaceChildren(h('p', { class: 'muted' }, 'Loading…'))

  // ------------------------------------------------------------ context for the panel
  const context: PanelContext = {
    id,
    me,
    state: () => state as IncidentState,
    perms: () => permissions(state as IncidentState, me),
    run: async (name, body) => {
      const outcome = (await api.command(id, name, body)) as { events?: IncidentEvent[]; state: IncidentState }
      // An accepted command makes earlier refusals in the panel moot.
      for (const section of Object.values(slots)) section.error.hidden = true
      for (const event of outcome.events ?? []) addEvent(event, true)
      applyState(outcome.state)
    },
    people: () => knownPeople(),
  }

  function knownPeople(): Array<Actor & { here: boolean }> {
    const people = new Map<string, Actor & { here: boolean }>()
    const add = (actor: Actor, here = false): void => {
      if (!actor.id || actor.id === 'system') return
      const existing = people.get(actor.id)
      if (existing) existing.here ||= here
      else people.set(actor.id, { id: actor.id, name: actor.name, here })
    }
    // Names the server recorded come first; awareness (present()) only adds
    // people with a server-stamped user id and marks who is here now.
    if (state) {
      state.roles.forEach((view) => add(view.holder))
      state.responders.forEach((r) => add(r.actor))
      add(state.declared_by)
    }
    for (let i = events.length - 1; i >= 0; i--) add(events[i].actor)
    for (const user of session?.present() ?? []) add({ id: user.id, name: user.name }, true)
    return [...people.values()].sort((a, b) => Number(b.here) - Number(a.here) || a.name.localeCompare(b.name))
  }

  // ------------------------------------------------------------ loading
  async function load(): Promise<void> {
    try {
      const [loaded, history] = await Promise.all([api.incident(id), allEvents(id)])
      if (stopped) return
      incident = loaded
      presence = loaded.presence
      for (const event of history) addEvent(event, false)
      applyState(loaded.state, true)
      mainEl.removeAttribute('aria-busy')
      openEvents()
      openDocument()
    } catch (caught) {
      if (stopped) return
      const notFound = caught instanceof ApiError && (caught.status === 404 || caught.status === 403)
      root.replaceChildren(
        topBar(me),
        h(
          'main',
          { class: 'page', id: 'main' },
          h('h1', null, notFound ? `Cannot open ${id}` : 'Cannot load the incident'),
          h('p', { class: 'notice warn', role: 'alert' }, messageOf(caught)),
          h('p', null, h('a', { href: '/', 'data-nav': '' }, 'Back to the incident list')),
        ),
      )
      if (!notFound) {
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
  let teardownReplacement: (() => void) | null = null

  function applyState(next: IncidentState, force = false): void {
    if (!force && state && next.last_seq < state.last_seq) return
    state = next
    stateAt = new Date()
    render()
  }

  let refreshing = false
  let refreshAgain = false
  async function refreshState(): Promise<void> {
    if (refreshing) {
      refreshAgain = true
      return
    }
    refreshing = true
    try {
      do {
        refreshAgain = false
        const next = await api.state(id)
        if (stopped) return
        applyState(next)
      } while (refreshAgain)
    } catch {
      // Shown through the stale notice; the next event or reconnect retries.
    } finally {
      refreshing = false
    }
  }

  // ------------------------------------------------------------ live events
  function openEvents(): void {
    source?.close()
    const es = new EventSource(eventsUrl(id, lastSeq))
    source = es
    es.onopen = () => {
      if (source !== es) return
      sseOpen = true
      sseEverOpen = true
      void refreshState()
      renderStale()
    }
    es.onmessage = (message: MessageEvent<string>) => {
      if (source !== es) return
      let event: IncidentEvent
      try {
        event = JSON.parse(message.data) as IncidentEvent
      } catch {
        return
      }
      if (addEvent(event, true)) void refreshState()
    }
    es.onerror = () => {
      if (source !== es) return
      sseOpen = false
      renderStale()
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. an error answer): start again from the last seen event.
        const retry = window.setTimeout(() => {
          if (!stopped && source === es) openEvents()
        }, 3000)
        cleanups.push(() => window.clearTimeout(retry))
      }
    }
  }

  /** Adds an event to the timeline; returns whether it was new. */
  function addEvent(event: IncidentEvent, live: boolean): boolean {
    if (seen.has(event.seq)) return false
    seen.add(event.seq)
    const newest = event.seq > lastSeq
    events.push(event)
    if (!newest) events.sort((a, b) => a.seq - b.seq)
    lastSeq = Math.max(lastSeq, event.seq)
    if (live) {
      const text = roleChangeConfirmation(event)
      if (text) {
        confirmations.push({ seq: event.seq, text })
        renderConfirmations()
      }
    }
    insertTimelineItem(event, live)
    return true
  }

  // ------------------------------------------------------------ document
  function openDocument(): void {
    session = new DocSession(id, token(), me)
    const current = session
    cleanups.push(() => current.destroy())
    let wasLive = false
    current.onChange(() => {
      renderIndicators()
      renderStale()
      // Counts change when we (re)join: refresh them shortly after.
      const live = current.isLive()
      if (live && !wasLive) window.setTimeout(() => void refreshPresence(), 700)
      wasLive = live
    })
    current.onAwareness(() => renderPresence())
    renderIndicators()
    renderPresence()
    void mountDocument(current)
  }

  /** Loads the editor (responders) or the preview (viewers) on demand: viewers never download CodeMirror. */
  async function mountDocument(current: DocSession): Promise<void> {
    try {
      if (me.role === 'viewer') {
        const { mountPreview } = await import('./preview')
        if (stopped) return
        const preview = h('article', { class: 'preview markdown', 'aria-label': 'Incident document (read-only)', tabindex: '0' })
        docEl.replaceChildren(h('p', { class: 'readonly-note' }, 'Read-only: you are following this document live.'), preview)
        cleanups.push(mountPreview(preview, current))
      } else {
        const { mountEditor } = await import('./editor')
        if (stopped) return
        docEl.replaceChildren()
        const view = mountEditor(docEl, current, `Incident document for ${id}, Markdown, shared live`)
        cleanups.push(() => view.destroy())
      }
    } catch (caught) {
      docEl.replaceChildren(h('p', { class: 'form-error', role: 'alert' }, `Cannot load the document view: ${messageOf(caught)}. Reload the page.`))
    }
  }

  // ------------------------------------------------------------ rendering
  function render(): void {
    if (!state || !incident) return
    document.title = `${id} ${state.title} · Command Post`
    renderHeader()
    renderPin()
    renderOffers()
    renderPanel()
    renderStale()
    renderPresence()
    noteForm.hidden = !permissions(state, me).note
  }

  function renderHeader(): void {
    if (!state) return
    const perms = permissions(state, me)
    const ic = state.roles[0]
    const actions: HTMLElement[] = [h('button', { type: 'button', class: 'secondary', 'data-key': 'export', onclick: (e: Event) => void exportPostmortem(e.currentTarget as HTMLButtonElement) }, 'Export postmortem')]
    if (perms.share) actions.push(h('button', { type: 'button', class: 'secondary', 'data-key': 'share', onclick: () => openShareDialog() }, 'Share…'))
    replaceChildren(
      headerEl,
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
          h('span', { class: 'badge ic-badge' }, 'IC: ', h('strong', null, ic.holder.name)),
          h('span', { class: 'muted small' }, 'Declared ', timeEl(state.declared_at, false), ` by ${state.declared_by.name}`),
        ),
      ),
      h('div', { class: 'head-actions' }, actions),
    )
  }

  function renderPin(): void {
    if (!state) return
    const perms = permissions(state, me)
    const pin = state.pin
    const pinButton = perms.pin ? h('button', { type: 'button', class: pin ? 'secondary' : 'primary', 'data-key': 'pin', onclick: () => openPinDialog(context) }, pin ? 'Pin new status…' : 'Pin a status…') : null
    if (!pin) {
      pinEl.className = 'pin-banner empty'
      replaceChildren(pinEl, h('div', { class: 'pin-main' }, h('p', { class: 'pin-summary muted' }, 'No status pinned yet.')), pinButton)
      return
    }
    const overdue = pin.overdue || Date.parse(pin.next_update_by) <= Date.now()
    pinEl.className = `pin-banner ${overdue ? 'overdue' : ''}`
    replaceChildren(
      pinEl,
      h(
        'div',
        { class: 'pin-main' },
        h('p', { class: 'pin-label' }, 'Pinned status'),
        h('p', { class: 'pin-summary' }, pin.summary),
        h('p', { class: 'pin-meta' }, `Pinned by ${pin.pinned_by.name} at `, timeEl(pin.pinned_at)),
      ),
      h(
        'div',
        { class: 'pin-next' },
        // Ticks every second: not announced (the banner itself is a live region).
        h('p', { class: 'pin-countdown', 'aria-live': 'off', 'data-countdown': pin.next_update_by, 'data-overdue': String(pin.overdue) }, countdownText(pin.next_update_by, pin.overdue)),
        h('p', { class: 'pin-meta' }, 'Next update by ', timeEl(pin.next_update_by, false)),
        pinButton,
      ),
    )
  }

  function countdownText(due: string, overdue: boolean): string {
    const left = Date.parse(due) - Date.now()
    if (overdue || left <= 0) return `⚠ Update overdue by ${duration(-left)}`
    return `Next update in ${duration(left)}`
  }

  function renderOffers(): void {
    if (!state) return
    const perms = permissions(state, me)
    const mine = state.pending_handoffs.filter((offer) => perms.answer(offer))
    replaceChildren(
      offersEl,
      mine.map((offer) => {
        const error = h('p', { class: 'form-error', role: 'alert', hidden: true })
        // Re-rendered on every state change: keep what was typed.
        const reason = h('input', {
          autocomplete: 'off',
          'aria-label': 'Reason for declining (optional)',
          placeholder: 'Reason (optional)',
          'data-key': `decline-reason-${offer.handoff}`,
          value: declineReasons.get(offer.handoff) ?? '',
        })
        reason.addEventListener('input', () => declineReasons.set(offer.handoff, reason.value))
        return h(
          'section',
          { class: 'offer-banner', 'aria-labelledby': `offer-${offer.handoff}-h`, 'data-handoff': String(offer.handoff) },
          h('h2', { id: `offer-${offer.handoff}-h` }, `${offer.from.name} offers you the role of ${roleName(offer.role)}`),
          h('p', null, 'Read the briefing. Nothing changes until you accept; the offer expires at ', timeEl(offer.expires_at, false), '.'),
          h('details', { open: true }, h('summary', null, 'Briefing'), briefingView(offer.briefing)),
          h(
            'div',
            { class: 'row-actions' },
            h(
              'button',
              {
                type: 'button',
                class: 'primary',
                'data-key': `accept-${offer.handoff}`,
                onclick: (e: Event) => void runAction(e.currentTarget as HTMLButtonElement, error, () => context.run('accept_handoff', { handoff: offer.handoff })),
              },
              `Accept: I am now ${roleName(offer.role)}`,
            ),
            h(
              'button',
              {
                type: 'button',
                class: 'secondary',
                'data-key': `decline-${offer.handoff}`,
                onclick: (e: Event) =>
                  void runAction(e.currentTarget as HTMLButtonElement, error, () => context.run('decline_handoff', reason.value.trim() ? { handoff: offer.handoff, reason: reason.value } : { handoff: offer.handoff })),
              },
              'Decline',
            ),
            reason,
          ),
          error,
        )
      }),
    )
  }

  function renderConfirmations(): void {
    replaceChildren(
      confirmationsEl,
      confirmations.map((confirmation) =>
        h(
          'div',
          { class: 'confirmation', role: 'alert', 'data-seq': String(confirmation.seq) },
          h('span', { class: 'confirmation-icon', 'aria-hidden': 'true' }, '✔'),
          h('p', { class: 'confirmation-text' }, confirmation.text),
          h(
            'button',
            {
              type: 'button',
              class: 'secondary',
              'data-key': `dismiss-${confirmation.seq}`,
              onclick: () => {
                const index = confirmations.findIndex((c) => c.seq === confirmation.seq)
                if (index >= 0) confirmations.splice(index, 1)
                renderConfirmations()
              },
            },
            'Dismiss',
          ),
        ),
      ),
    )
  }

  // Each section: a display part re-rendered from the state, then stable
  // nodes (a form, the section's error line) that survive re-renders, so a
  // refusal shows next to the control that caused it.
  function slot(): { display: HTMLElement; error: HTMLElement } {
    return { display: h('div'), error: h('p', { class: 'form-error', role: 'alert', hidden: true }) }
  }
  const slots = { roles: slot(), lifecycle: slot(), criteria: slot(), changes: slot(), responders: slot() }
  const criterionFormEl = criterionForm(context, slots.criteria.error)
  panelEl.append(
    h('div', { class: 'section-wrap' }, slots.roles.display, slots.roles.error),
    h('div', { class: 'section-wrap' }, slots.lifecycle.display, slots.lifecycle.error),
    h('div', { class: 'section-wrap' }, slots.criteria.display, criterionFormEl, slots.criteria.error),
    h('div', { class: 'section-wrap' }, slots.changes.display, slots.changes.error),
    h('div', { class: 'section-wrap' }, slots.responders.display),
  )

  function renderPanel(): void {
    if (!state) return
    replaceChildren(slots.roles.display, rolesSection(context, slots.roles.error))
    replaceChildren(slots.lifecycle.display, lifecycleSection(context, slots.lifecycle.error))
    replaceChildren(slots.criteria.display, criteriaSection(context, slots.criteria.error))
    criterionFormEl.hidden = !permissions(state, me).exitCriteria
    replaceChildren(slots.changes.display, changesSection(context, slots.changes.error))
    replaceChildren(slots.responders.display, respondersSection(context))
  }

  function isStale(): boolean {
    return !sseOpen || !(session?.isLive() ?? false)
  }

  function renderStale(): void {
    const stale = isStale()
    const everLive = sseEverOpen
    const show = stale && (everLive || Date.now() - loadedAt > 1500)
    panelWrap.classList.toggle('stale', show)
    staleEl.hidden = !show
    if (show) {
      const what = !sseOpen && !(session?.isLive() ?? false) ? 'live updates and the document' : !sseOpen ? 'live updates' : 'the document'
      staleEl.replaceChildren(
        h('strong', null, everLive ? 'Reconnecting' : 'Connecting'),
        ` to ${what} — showing state as of `,
        h('time', { datetime: stateAt.toISOString(), title: localTitle(stateAt) }, utcClock(stateAt)),
        '. It may be out of date.',
      )
    }
  }

  function renderIndicators(): void {
    if (!session) return
    const status = session.status()
    const offlineBrowser = !navigator.onLine
    linkIndicator.className = `indicator link link-${status.link}`
    linkIndicator.replaceChildren(h('span', { class: 'dot', 'aria-hidden': 'true' }), LINK_TEXT[status.link], offlineBrowser && status.link !== 'offline' ? ' (browser offline)' : '')
    if (status.stoppedReason) linkIndicator.title = status.stoppedReason
    else linkIndicator.removeAttribute('title')
    saveIndicator.className = `indicator save save-${status.save}`
    saveIndicator.replaceChildren(SAVE_TEXT[status.save])
    saveIndicator.dataset.state = status.save
    linkIndicator.dataset.state = status.link
  }

  // Awareness changes with every remote cursor move: rebuild the list only when it would differ.
  let presenceKey = ''
  function renderPresence(): void {
    const here = session?.present() ?? []
    const key = JSON.stringify([presence.viewers, here.map((user) => [user.id, user.name, user.self])])
    if (key === presenceKey) return
    presenceKey = key
    replaceChildren(
      presenceEl,
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
      h('span', { class: 'viewer-count' }, `${presence.viewers} ${presence.viewers === 1 ? 'viewer' : 'viewers'}`),
    )
  }

  // ------------------------------------------------------------ timeline
  function insertTimelineItem(event: IncidentEvent, live: boolean): void {
    const item = h(
      'li',
      { class: `event event-${event.type} ${isProminent(event) ? 'prominent' : ''} ${live ? 'fresh' : ''}`, 'data-seq': String(event.seq) },
      h('span', { class: 'event-time' }, timeEl(event.at)),
      h('span', { class: 'event-actor' }, event.actor.name),
      h('span', { class: 'event-text' }, event.type === 'note_posted' ? h('span', { class: 'note-text' }, describe(event)) : describe(event)),
    )
    // Newest first: usually at the top; otherwise before the first item with a lower seq.
    const first = timelineList.firstElementChild as HTMLElement | null
    if (!first || Number(first.dataset.seq) < event.seq) {
      timelineList.prepend(item)
      return
    }
    const after = [...timelineList.children].find((child) => Number((child as HTMLElement).dataset.seq) < event.seq)
    timelineList.insertBefore(item, after ?? null)
  }

  function noteBox(): HTMLFormElement {
    const text = h('textarea', { rows: 2, required: true, name: 'note', placeholder: 'What did you see or do? Posted to the timeline for everyone.' })
    const button = h('button', { type: 'submit', class: 'secondary' }, 'Post note')
    const form = h('form', { class: 'note-box', hidden: true }, field('Note to the command-post log', text), h('div', { class: 'row-actions' }, button))
    form.addEventListener('submit', (event) => {
      event.preventDefault()
      if (!text.value.trim()) return
      void runAction(button, noteError, async () => {
        await context.run('post_note', { text: text.value })
        text.value = ''
      })
    })
    text.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) form.requestSubmit()
    })
    return form
  }

  // ------------------------------------------------------------ actions
  async function exportPostmortem(button: HTMLButtonElement): Promise<void> {
    await runAction(button, headError, async () => {
      const markdown = await api.postmortem(id)
      const url = URL.createObjectURL(new Blob([markdown], { type: 'text/markdown;charset=utf-8' }))
      const link = h('a', { href: url, download: `${id}-postmortem.md`, hidden: true })
      document.body.appendChild(link)
      link.click()
      link.remove()
      window.setTimeout(() => URL.revokeObjectURL(url), 10_000)
    })
  }

  function openShareDialog(): void {
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

  // ------------------------------------------------------------ timers
  const tick = window.setInterval(() => {
    for (const el of pinEl.querySelectorAll<HTMLElement>('[data-countdown]')) {
      const text = countdownText(el.dataset.countdown ?? '', el.dataset.overdue === 'true')
      if (el.textContent !== text) el.textContent = text
      const overdue = text.startsWith('⚠')
      pinEl.classList.toggle('overdue', overdue)
    }
    renderStale()
  }, 1000)
  cleanups.push(() => window.clearInterval(tick))

  async function refreshPresence(): Promise<void> {
    if (!incident || stopped) return
    try {
      const fresh = await api.incident(id)
      if (stopped) return
      presence = fresh.presence
      renderPresence()
    } catch {
      // The connection indicator and stale notice already say so.
    }
  }
  // Counts are only available by polling the incident. Responders (who
  // must see the viewer count) poll every 5 s; viewers, who can be
  // thousands, rarely.
  const presencePoll = window.setInterval(() => void refreshPresence(), me.role === 'viewer' ? 60_000 : 5000)
  cleanups.push(() => window.clearInterval(presencePoll))

  const onOnline = (): void => {
    renderIndicators()
    if (source && source.readyState === EventSource.CLOSED) openEvents()
  }
  window.addEventListener('online', onOnline)
  window.addEventListener('offline', onOnline)
  cleanups.push(() => {
    window.removeEventListener('online', onOnline)
    window.removeEventListener('offline', onOnline)
  })

  function cleanup(): void {
    source?.close()
    source = null
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
