// Which controls a person sees, mirroring the server's permission table
// (README "Who may do what"; the server enforces it, this only decides what
// to offer). A refused command is still shown inline, never hidden.

import type { IncidentState, Me, PendingHandoff, Role } from './types'

export interface Permissions {
  writer: boolean
  isCommander: boolean
  closed: boolean
  holds(role: Role): boolean
  setSeverity: boolean
  assignRole: boolean
  offer(role: Role): boolean
  cancel(offer: PendingHandoff): boolean
  answer(offer: PendingHandoff): boolean
  pin: boolean
  lifecycle: boolean
  reopen: boolean
  exitCriteria: boolean
  recordChange: boolean
  settleChange: boolean
  note: boolean
  share: boolean
  emergency: boolean
}

export function permissions(state: IncidentState, me: Me): Permissions {
  const writer = me.role !== 'viewer'
  const closed = state.status === 'closed'
  const holds = (role: Role): boolean => writer && state.roles.some((view) => view.role === role && view.holder.id === me.sub)
  const isCommander = holds('incident_commander')
  const open = writer && !closed
  return {
    writer,
    isCommander,
    closed,
    holds,
    setSeverity: open && isCommander,
    assignRole: open && isCommander,
    offer: (role) => open && (role === 'incident_commander' ? isCommander : isCommander || holds(role)),
    cancel: (offer) => writer && (offer.from.id === me.sub || isCommander),
    answer: (offer) => writer && offer.to.id === me.sub,
    pin: open && (isCommander || holds('communications_lead')),
    lifecycle: open && isCommander,
    reopen: writer && (isCommander || me.role === 'admin') && (state.status === 'resolved' || closed),
    exitCriteria: open && isCommander,
    recordChange: open && holds('operations_lead'),
    settleChange: open && holds('planning_lead'),
    note: open,
    share: isCommander || me.role === 'admin',
    emergency: !closed && me.role === 'admin',
  }
}
