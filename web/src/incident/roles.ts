// The command panel's roles section: who holds each role and since when,
// pending offers, and the controls to hand a role over, assign it, or (an
// admin, in an emergency) take or give it at once.

import { isSelf, who } from '../describe'
import { openFormDialog } from '../dialog'
import { field, h } from '../dom'
import { roughDuration, timeEl } from '../time'
import { oneOf, ROLE_AREAS, ROLE_NAMES, ROLES, type PendingHandoff, type Role } from '../types'
import { type IncidentContext, panelSection, type PanelSection } from './context'
import { actionButton, dialogButton } from './controls'
import { openOfferDialog } from './handoff'
import { personPicker } from './people'

export function createRoles(context: IncidentContext): PanelSection {
  return panelSection(context, rolesSection)
}

function rolesSection(context: IncidentContext, errorSlot: HTMLElement): HTMLElement {
  const state = context.state()
  const perms = context.perms()
  const rows = state.roles.map((view) => {
    const pending = state.pending_handoffs.find((offer) => offer.role === view.role)
    const actions: HTMLElement[] = []
    // A role the commander holds is delegated directly (assign); a delegated
    // role, and command itself, change hands by handoff.
    if (!pending && perms.offer(view.role) && (view.role === 'incident_commander' || view.delegated)) {
      actions.push(dialogButton(view.role === 'incident_commander' ? 'Hand over command…' : 'Offer handoff…', `offer-${view.role}`, () => openOfferDialog(context, view.role)))
    }
    if (!pending && perms.assignRole && view.role !== 'incident_commander' && !view.delegated) {
      actions.push(dialogButton('Assign…', `assign-${view.role}`, () => openAssignDialog(context, view.role)))
    }
    const tenure = Date.now() - Date.parse(view.since)
    return h(
      'li',
      { class: `role-row role-${view.role}`, 'data-role': view.role },
      h('div', { class: 'role-name' }, ROLE_NAMES[view.role]),
      h(
        'div',
        { class: 'role-holder' },
        h('strong', { class: 'holder-name' }, view.holder.name),
        view.holder.id === context.me.sub ? h('span', { class: 'you' }, ' (you)') : null,
        view.role !== 'incident_commander' && !view.delegated ? h('span', { class: 'muted' }, ' (held by IC)') : null,
      ),
      // The fatigue hint is advice to the people running the response, not to viewers.
      h('div', { class: 'role-since muted' }, 'since ', timeEl(view.since, false), ` · ${roughDuration(tenure)}`, perms.writer && tenure > 4 * 3600_000 ? h('span', { class: 'fatigue' }, ' · consider a handoff') : null),
      pending ? pendingLine(context, pending, errorSlot) : null,
      actions.length ? h('div', { class: 'row-actions' }, actions) : null,
    )
  })
  return h(
    'section',
    { class: 'panel-section', 'aria-labelledby': 'roles-h' },
    h('h3', { id: 'roles-h' }, 'Roles'),
    h('ul', { class: 'roles' }, rows),
    state.next_commander
      ? h('p', { class: 'muted next-commander' }, isSelf(state.next_commander, context.me.sub) ? 'You are the planned next incident commander.' : `Planned next incident commander: ${state.next_commander.name}`)
      : null,
    perms.emergency ? h('div', { class: 'row-actions' }, dialogButton('Emergency role change…', 'emergency', () => openEmergencyDialog(context), 'danger-outline')) : null,
  )
}

function pendingLine(context: IncidentContext, offer: PendingHandoff, errorSlot: HTMLElement): HTMLElement {
  const perms = context.perms()
  const self = context.me.sub
  return h(
    'div',
    { class: 'pending-offer' },
    h('span', null, `Offer to ${who(offer.to, self)} pending, from ${who(offer.from, self)} (expires `, timeEl(offer.expires_at, false), ')'),
    perms.cancel(offer) ? actionButton('Cancel offer', `cancel-${offer.handoff}`, errorSlot, () => context.run('cancel_handoff', { handoff: offer.handoff }), 'link-button') : null,
  )
}

function openAssignDialog(context: IncidentContext, role: Role): void {
  const picker = personPicker(context, `New ${ROLE_NAMES[role].toLowerCase()}`)
  openFormDialog({
    title: `Assign ${ROLE_NAMES[role].toLowerCase()}`,
    submitLabel: 'Assign role',
    body: [h('p', { class: 'hint' }, `You hold ${ROLE_AREAS[role]} while it is not delegated. Assigning hands it to someone directly.`), picker.element],
    onSubmit: async () => {
      await context.run('assign_role', { role, to: picker.read() })
    },
  })
}

function openEmergencyDialog(context: IncidentContext): void {
  const role = h(
    'select',
    { required: true },
    ROLES.map((r) => h('option', { value: r }, ROLE_NAMES[r])),
  )
  const picker = personPicker(context, 'Give it to', { includeMe: true })
  const reason = h('textarea', { rows: 2, required: true })
  openFormDialog({
    title: 'Emergency: take or assign a role',
    submitLabel: 'Change role holder now',
    danger: true,
    body: [
      h('p', { class: 'hint' }, 'Only when the holder is unreachable. It takes effect at once, without a handoff, and everyone is told prominently with your reason.'),
      field('Role', role),
      picker.element,
      field('Reason (required)', reason),
    ],
    onSubmit: async () => {
      const to = picker.read()
      const chosen = oneOf(ROLES, role.value)
      if (!chosen) throw new Error('Choose a role.')
      if (to.id === context.me.sub) await context.run('assume_role', { role: chosen, reason: reason.value })
      else await context.run('force_assign_role', { role: chosen, to, reason: reason.value })
    },
  })
}
