// The people a responder can pick for a role or a handoff, and the picker.
// Names the server recorded (role holders, responders, timeline actors)
// come first; awareness only adds people with a server-stamped user id and
// marks who is here now.

import type { PresentUser } from '../collab'
import { field, h } from '../dom'
import type { Actor, IncidentEvent, IncidentState } from '../types'
import type { IncidentContext } from './context'

export function knownPeople(state: IncidentState | null, events: readonly IncidentEvent[], present: readonly PresentUser[]): Array<Actor & { here: boolean }> {
  const people = new Map<string, Actor & { here: boolean }>()
  const add = (actor: Actor, here = false): void => {
    if (!actor.id || actor.id === 'system') return
    const existing = people.get(actor.id)
    if (existing) existing.here ||= here
    else people.set(actor.id, { id: actor.id, name: actor.name, here })
  }
  if (state) {
    state.roles.forEach((view) => add(view.holder))
    state.responders.forEach((r) => add(r.actor))
    add(state.declared_by)
  }
  for (let i = events.length - 1; i >= 0; i--) add(events[i].actor)
  for (const user of present) add({ id: user.id, name: user.name }, true)
  return [...people.values()].sort((a, b) => Number(b.here) - Number(a.here) || a.name.localeCompare(b.name))
}

/** A person picker: known people, or "someone else" by id and name. */
export function personPicker(context: IncidentContext, legend: string, options: { includeMe?: boolean; exclude?: string[] } = {}): {
  element: HTMLElement
  read(): Actor
} {
  const me = context.me
  const exclude = new Set(options.exclude ?? [])
  const people = context.people().filter((person) => !exclude.has(person.id) && (options.includeMe || person.id !== me.sub))
  const select = h(
    'select',
    { required: true },
    h('option', { value: '' }, 'Choose a person…'),
    options.includeMe ? h('option', { value: `me` }, `Me (${me.name})`) : null,
    people
      .filter((person) => person.id !== me.sub)
      .map((person) => h('option', { value: person.id }, `${person.name}${person.here ? ' · here now' : ''} (${person.id})`)),
    h('option', { value: '__other' }, 'Someone else (enter id and name)…'),
  )
  const otherId = h('input', { autocomplete: 'off', spellcheck: 'false' })
  const otherName = h('input', { autocomplete: 'off' })
  const other = h(
    'div',
    { class: 'other-person', hidden: true },
    field('User id', otherId, 'Their token’s user id (shown in the presence list on hover and in the timeline).'),
    field('Display name', otherName),
  )
  select.addEventListener('change', () => {
    const isOther = select.value === '__other'
    other.hidden = !isOther
    otherId.required = isOther
    otherName.required = isOther
  })
  const element = h('div', { class: 'person-picker' }, field(legend, select), other)
  return {
    element,
    read(): Actor {
      if (select.value === 'me') return { id: me.sub, name: me.name }
      if (select.value === '__other') return { id: otherId.value.trim(), name: otherName.value.trim() }
      const person = people.find((p) => p.id === select.value)
      if (!person) throw new Error('Choose a person.')
      return { id: person.id, name: person.name }
    },
  }
}
