// Plain-language sentences for timeline events and role changes.
//
// Sentences are written from the reader's side: the page belongs to the
// signed-in person (`GET /api/me`, passed as `self`, their user id), so a
// person who is the reader is "you" ("You are now incident commander",
// "offered incident commander to you"), everyone else is named.

import { utcShort } from './time'
import { ROLE_NAMES, SEVERITY_NAMES, STATUS_NAMES, type Actor, type IncidentEvent, type Role } from './types'

/** The signed-in person's user id (`Me.sub`); absent when there is no reader to address. */
export type Self = string | null | undefined

export function roleName(role: Role): string {
  return ROLE_NAMES[role].toLowerCase()
}

/** `person` in the middle of a sentence: "you" for the reader, otherwise the name. */
export function who(person: Actor, self: Self): string {
  return isSelf(person, self) ? 'you' : person.name
}

/** `person` standing alone (a timeline actor, a list entry): "You" for the reader, otherwise the name. */
export function personLabel(person: Actor, self: Self): string {
  return isSelf(person, self) ? 'You' : person.name
}

/** "You are" for the reader, "Name is" for anyone else. */
function whoIs(person: Actor, self: Self): string {
  return isSelf(person, self) ? 'You are' : `${person.name} is`
}

export function isSelf(person: Actor | null | undefined, self: Self): boolean {
  return !!person && !!self && person.id === self
}

/**
 * One line describing the event; the actor is shown separately (before
 * it), so the line never names the actor again.
 */
export function describe(event: IncidentEvent, self?: Self): string {
  switch (event.type) {
    case 'declared': {
      // The declarer usually takes command: say so without naming them twice.
      const commander = event.commander.id === event.actor.id ? ' as incident commander' : `; ${isSelf(event.commander, self) ? 'you are' : `${event.commander.name} is`} incident commander`
      return `declared the incident “${event.title}”${event.severity ? ` (${SEVERITY_NAMES[event.severity]})` : ''}${commander}${event.summary ? `. ${event.summary}` : ''}`
    }
    case 'severity_set':
      return `set the severity to ${SEVERITY_NAMES[event.severity]}`
    case 'role_assigned':
      return `assigned ${roleName(event.role)} to ${who(event.holder, self)}`
    case 'responder_added':
      return `listed ${who(event.responder, self)} as responder: ${event.assignment}`
    case 'responder_removed':
      return `took ${self && event.responder === self ? 'you' : event.responder} off the responder list`
    case 'handoff_offered':
      return `offered ${roleName(event.role)} to ${who(event.to, self)} (offer expires ${utcShort(new Date(event.expires_at))})`
    case 'handoff_accepted':
      return `accepted ${roleName(event.role)} from ${who(event.from, self)}`
    case 'handoff_declined':
      return `declined ${roleName(event.role)} offered by ${who(event.from, self)}${event.reason ? `: ${event.reason}` : ''}`
    case 'handoff_cancelled':
      return `cancelled the offer of ${roleName(event.role)} to ${who(event.to, self)}${event.reason ? ` (${event.reason})` : ''}`
    case 'handoff_expired':
      return `the offer of ${roleName(event.role)} to ${who(event.to, self)} expired unanswered`
    case 'role_assumed':
      return event.forced_by
        ? `emergency: gave ${roleName(event.role)} to ${who(event.holder, self)}. Reason: ${event.reason}`
        : `emergency: took ${roleName(event.role)}. Reason: ${event.reason}`
    case 'next_commander_set':
      return event.next ? `named ${who(event.next, self)} as the next incident commander` : 'cleared the next incident commander'
    case 'status_pinned':
      return event.next_update_by && !event.final
        ? `pinned status: “${event.summary}” (next update by ${utcShort(new Date(event.next_update_by))})`
        : `pinned the final status: “${event.summary}” (no further updates)`
    case 'impact_start_set':
      return `set the impact start to ${utcShort(new Date(event.impact_start))}`
    case 'attempt_refused':
      return `Refused: ${who(event.by, self)} (${event.reason}) tried to ${event.command === 'record_change' ? 'record a change' : event.command === 'post_note' ? 'post a note' : 'change the incident'}: ${event.detail}`
    case 'update_overdue':
      return `status update overdue (was due ${utcShort(new Date(event.due))})`
    case 'status_changed':
      return `moved the incident from ${STATUS_NAMES[event.from]} to ${STATUS_NAMES[event.to]}${event.override_reason ? ` overriding unmet exit criteria: ${event.override_reason}` : ''}`
    case 'reopened':
      return `reopened the incident (was ${STATUS_NAMES[event.from]}): ${event.reason}`
    case 'exit_criterion_added':
      return `added exit criterion: ${event.text}`
    case 'exit_criterion_set':
      return `marked exit criterion #${event.criterion} ${event.met ? 'met' : 'not met'}`
    case 'change_recorded':
      return `recorded production change #${event.change}: ${event.what}${event.why ? ` (why: ${event.why})` : ''}; revert: ${event.revert}`
    case 'change_reverted':
      return `marked change #${event.change} reverted`
    case 'change_waived':
      return `waived change #${event.change}: ${event.reason}`
    case 'note_posted':
      return event.text
    default: {
      const unknown = event as { type: string }
      return unknown.type.replace(/_/g, ' ')
    }
  }
}

/** Events that everyone must be told about prominently. */
export function isProminent(event: IncidentEvent): boolean {
  return ['handoff_accepted', 'role_assumed', 'update_overdue', 'status_changed', 'reopened', 'role_assigned', 'attempt_refused'].includes(event.type)
}

/**
 * The confirmation shown to everyone when a role changes hands by handoff
 * or emergency, addressed to the reader ("You are now incident commander").
 */
export function roleChangeConfirmation(event: IncidentEvent, self?: Self): string | null {
  const since = utcShort(new Date(event.at))
  if (event.type === 'handoff_accepted') {
    return `${whoIs(event.to, self)} now ${roleName(event.role)} (since ${since}), handed over by ${who(event.from, self)}`
  }
  if (event.type === 'role_assumed') {
    const how = event.forced_by ? `assigned in an emergency by ${who(event.forced_by, self)}` : `taken over in an emergency`
    return `${whoIs(event.holder, self)} now ${roleName(event.role)} (since ${since}), ${how}${event.previous ? ` from ${who(event.previous, self)}` : ''}. Reason: ${event.reason}`
  }
  return null
}
