// The timeline: every event of the incident, newest first, and the note box
// that posts to it. It also keeps the events seen so far (each once, by
// sequence number), which the event stream resumes after.

import { describe, isProminent, personLabel } from '../describe'
import { runAction } from '../dialog'
import { field, h } from '../dom'
import { timeEl } from '../time'
import type { IncidentEvent } from '../types'
import { errorLine, type IncidentContext, type Part } from './context'

export interface Timeline extends Part {
  /** Adds an event (in sequence order, once); returns whether it was new. `live` marks it fresh. */
  add(event: IncidentEvent, live: boolean): boolean
  /** The highest sequence number seen (0 before any). */
  lastSeq(): number
  /** The events seen, oldest first. */
  events(): readonly IncidentEvent[]
}

export function createTimeline(context: IncidentContext): Timeline {
  const events: IncidentEvent[] = []
  const seen = new Set<number>()
  let lastSeq = 0
  const self = context.me.sub

  const list = h('ol', { class: 'timeline', reversed: true })
  const noteError = errorLine()
  const noteForm = noteBox(context, noteError)
  const element = h(
    'section',
    { class: 'timeline-section', 'aria-labelledby': 'timeline-h' },
    h('h2', { id: 'timeline-h' }, 'Timeline ', h('span', { class: 'muted small' }, '(newest first, UTC)')),
    noteForm,
    noteError,
    list,
  )

  function insertItem(event: IncidentEvent, live: boolean): void {
    // A note from someone neither holding a role nor on the responder list
    // is not refused, but marked for the commander like a refused attempt.
    const outsider = event.type === 'note_posted' && !!event.outsider
    const item = h(
      'li',
      {
        class: `event event-${event.type} ${isProminent(event) ? 'prominent' : ''} ${event.type === 'attempt_refused' ? 'refused' : ''} ${outsider ? 'outsider' : ''} ${live ? 'fresh' : ''}`,
        'data-seq': String(event.seq),
      },
      h('span', { class: 'event-time' }, timeEl(event.at)),
      // The actor once, as "You" on their own page; the line after it never repeats them.
      h('span', { class: 'event-actor', title: event.actor.name }, personLabel(event.actor, self)),
      event.type === 'attempt_refused' ? h('span', { class: 'refused-label', 'aria-label': 'refused attempt' }, 'Refused') : null,
      outsider ? h('span', { class: 'outsider-label', title: 'Not on the responder list and holding no role' }, 'Outside the response') : null,
      h('span', { class: 'event-text' }, event.type === 'note_posted' ? h('span', { class: 'note-text' }, describe(event, self)) : describe(event, self)),
    )
    // Newest first: usually at the top; otherwise before the first item with a lower seq.
    const first = list.firstElementChild as HTMLElement | null
    if (!first || Number(first.dataset.seq) < event.seq) {
      list.prepend(item)
      return
    }
    const after = [...list.children].find((child) => Number((child as HTMLElement).dataset.seq) < event.seq)
    list.insertBefore(item, after ?? null)
  }

  return {
    element,
    refresh() {
      noteForm.hidden = !context.perms().note
    },
    add(event, live) {
      if (seen.has(event.seq)) return false
      seen.add(event.seq)
      const newest = event.seq > lastSeq
      events.push(event)
      if (!newest) events.sort((a, b) => a.seq - b.seq)
      lastSeq = Math.max(lastSeq, event.seq)
      insertItem(event, live)
      return true
    },
    lastSeq: () => lastSeq,
    events: () => events,
  }
}

function noteBox(context: IncidentContext, noteError: HTMLElement): HTMLFormElement {
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
