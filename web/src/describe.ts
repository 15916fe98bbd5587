// Plain-language sentences for timeline events and role changes.

import { utcShort } from './time'
import { ROLE_NAMES, SEVERITY_NAMES, STATUS_NAMES, type IncidentEvent, type Role } from './types'

export function roleName(role: Role): string {
  return ROLE_NAMES[role].toLowerCase()
}

/** One line describing the event; the actor is shown separately. */
export function describe(event: IncidentEvent): string {
  switch (event.type) {
    case 'declared':
      return `declared the incident “${event.title}”${event.severity ? ` (${SEVERITY_NAMES[event.severity]})` : ''}; ${event.commander.name} is incident commander${event.summary ? `. ${event.summary}` : ''}`
    case 'severity_set':
      return `set the severity to ${SEVERITY_NAMES[event.severity]}`
    case 'role_assigned':
      return `assigned ${roleName(event.role)} to ${event.holder.name}`
    case 'responder_added':
      return `listed ${event.responder.name} as responder: ${event.assignment}`
    case 'responder_removed':
      return `took ${event.responder} off the responder list`
    case 'handoff_offered':
      return `offered ${roleName(event.role)} to ${event.to.name} (offer expires ${utcShort(new Date(event.expires_at))})`
    case 'handoff_accepted':
      return `accepted ${roleName(event.role)} from ${event.from.name}: ${event.to.name} is now ${roleName(event.role)}`
    case 'handoff_declined':
      return `declined ${roleName(event.role)} offered by ${event.from.name}${event.reason ? `: ${event.reason}` : ''}`
    case 'handoff_cancelled':
      return `cancelled the offer of ${roleName(event.role)} to ${event.to.name}${event.reason ? ` (${event.reason})` : ''}`
    case 'handoff_expired':
      return `the offer of ${roleName(event.role)} to ${event.to.name} expired unanswered`
    case 'role_assumed':
      return event.forced_by
        ? `emergency: gave ${roleName(event.role)} to ${event.holder.name}. Reason: ${event.reason}`
        : `emergency: took ${roleName(event.role)}. Reason: ${event.reason}`
    case 'next_commander_set':
      return event.next ? `named ${event.next.name} as the next incident commander` : 'cleared the next incident commander'
    case 'status_pinned':
      return `pinned status: “${event.summary}” (next update by ${utcShort(new Date(event.next_update_by))})`
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
  return ['handoff_accepted', 'role_assumed', 'update_overdue', 'status_changed', 'reopened', 'role_assigned'].includes(event.type)
}

/** The confirmation shown to everyone when a role changes hands by handoff or emergency. */
export function roleChangeConfirmation(event: IncidentEvent): string | null {
  const since = utcShort(new Date(event.at))
  if (event.type === 'handoff_accepted') {
    return `${event.to.name} is now ${roleName(event.role)} (since ${since}), handed over by ${event.from.name}`
  }
  if (event.type === 'role_assumed') {
    const how = event.forced_by ? `assigned in an emergency by ${event.forced_by.name}` : `taken over in an emergency`
    return `${event.holder.name} is now ${roleName(event.role)} (since ${since}), ${how}${event.previous ? ` from ${event.previous.name}` : ''}. Reason: ${event.reason}`
  }
  return null
}
