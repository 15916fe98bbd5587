// The people a responder can pick for a role or a handoff, and the picker.
// Names the server recorded (role holders, responders, timeline actors)
// come first; awareness only adds people with a server-stamped user id and
// marks who is here now.

import type { PresentUser } from '../collab'
import { api } from '../api'
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

/**
 * A person picker: an input with a datalist of the people the server knows
 * (`GET /api/people`, searched as you type), people of this incident first.
 * It sends the picked person's id; the server refuses anyone it does not
 * know, so there is no free-text "someone else".
 */
export function personPicker(context: IncidentContext, legend: string, options: { includeMe?: boolean; exclude?: string[] } = {}): {
  element: HTMLElement
  read(): Actor
} {
  const me = context.me
  const exclude = new Set(options.exclude ?? [])
  const allowed = (person: Actor): boolean => !exclude.has(person.id) && (options.includeMe || person.id !== me.sub)
  const listId = `people-${Math.random().toString(36).slice(2)}`
  const input = h('input', { list: listId, required: true, autocomplete: 'off', spellcheck: 'false', class: 'person-input', placeholder: 'Name or user id' })
  const datalist = h('datalist', { id: listId })
  const known = new Map<string, Actor>()
  const local = context.people().filter(allowed)
  function show(people: readonly Actor[]): void {
    for (const person of people) if (allowed(person)) known.set(person.id, { id: person.id, name: person.name })
    datalist.replaceChildren(...[...known.values()].map((person) => h('option', { value: person.id, label: `${person.name} (${person.id})` }, person.name)))
  }
  show(local)
  if (options.includeMe) show([{ id: me.sub, name: me.name }])
  let pending = 0
  async function search(q: string): Promise<void> {
    const ticket = ++pending
    try {
      const found = await api.people(q)
      if (ticket === pending) show(found.people)
    } catch {
      // The picker still offers the incident's own people.
    }
  }
  void search('')
  let timer = 0
  input.addEventListener('input', () => {
    window.clearTimeout(timer)
    timer = window.setTimeout(() => void search(input.value.trim()), 200)
  })
  const element = h('div', { class: 'person-picker' }, field(legend, input, 'Pick someone the server knows (they have signed in, or are on an incident).'), datalist)
  return {
    element,
    read(): Actor {
      const value = input.value.trim()
      const byId = known.get(value)
      if (byId) return byId
      const byName = [...known.values()].filter((person) => person.name.toLowerCase() === value.toLowerCase())
      if (byName.length === 1) return byName[0]
      throw new Error(byName.length > 1 ? `More than one person is called ${value}: pick one by user id.` : `No one known as ${value || '(empty)'}: pick someone from the list.`)
    },
  }
}
