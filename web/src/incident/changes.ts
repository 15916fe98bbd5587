// The command panel's change ledger: production changes with how to revert
// them; the operations lead records them, the planning lead marks them
// reverted or waived (closing needs every one settled).

import { who } from '../describe'
import { openFormDialog } from '../dialog'
import { field, h } from '../dom'
import { timeEl } from '../time'
import type { Actor } from '../types'
import { type IncidentContext, panelSection, type PanelSection } from './context'
import { actionButton, dialogButton, openReasonDialog } from './controls'

export function createChanges(context: IncidentContext): PanelSection {
  return panelSection(context, changesSection)
}

function changesSection(context: IncidentContext, errorSlot: HTMLElement): HTMLElement {
  const state = context.state()
  const perms = context.perms()
  const self = context.me.sub
  const items = state.changes.map((change) => {
    const s = change.state
    let stateLine: HTMLElement
    // What closing needs is guidance for the people running the response; viewers see the state.
    if (s.type === 'open') stateLine = h('span', { class: 'change-state open' }, perms.writer ? 'Open — must be reverted or waived before closing' : 'Open')
    else if (s.type === 'reverted') stateLine = h('span', { class: 'change-state reverted' }, `Reverted by ${who(s.by, self)} at `, timeEl(s.at, false))
    else stateLine = h('span', { class: 'change-state waived' }, `Waived by ${who(s.by, self)} at `, timeEl(s.at, false), `: ${s.reason}`)
    const actions: HTMLElement[] = []
    if (s.type === 'open' && perms.settleChange) {
      actions.push(actionButton('Mark reverted', `revert-${change.change}`, errorSlot, () => context.run('mark_change_reverted', { change: change.change })))
      actions.push(
        dialogButton('Waive…', `waive-${change.change}`, () =>
          openReasonDialog(`Waive change #${change.change}`, `Keep “${change.what}” in place on purpose. Say why.`, 'Waive change', (reason) => context.run('waive_change', { change: change.change, reason })),
        ),
      )
    }
    return h(
      'li',
      { class: `change change-${s.type}` },
      h('div', null, h('strong', null, `#${change.change} ${change.what}`)),
      change.why ? h('div', { class: 'muted' }, `Why: ${change.why}`) : null,
      h('div', null, `Revert: ${change.revert}`),
      h('div', { class: 'muted' }, `Recorded by ${who(change.recorded_by, self)} at `, timeEl(change.recorded_at, false)),
      stateLine,
      actions.length ? h('div', { class: 'row-actions' }, actions) : null,
    )
  })
  const ops = state.roles.find((r) => r.role === 'operations_lead')
  const planning = state.roles.find((r) => r.role === 'planning_lead')
  return h(
    'section',
    { class: 'panel-section', 'aria-labelledby': 'chg-h' },
    h('h3', { id: 'chg-h' }, 'Production changes'),
    items.length ? h('ul', { class: 'changes' }, items) : h('p', { class: 'muted' }, 'No production changes recorded.'),
    // Who does what: guidance for responders, not for viewers (read-only).
    perms.writer
      ? h('p', { class: 'hint' }, `Only the operations lead (${holderLabel(ops?.holder, self)}) records changes; the planning lead (${holderLabel(planning?.holder, self)}) marks them reverted or waived.`)
      : null,
    perms.recordChange ? h('div', { class: 'row-actions' }, dialogButton('Record change…', 'record-change', () => openRecordChangeDialog(context))) : null,
  )
}

function holderLabel(holder: Actor | undefined, self: string): string {
  return holder ? who(holder, self) : '—'
}

function openRecordChangeDialog(context: IncidentContext): void {
  const what = h('input', { required: true, autocomplete: 'off' })
  const why = h('input', { autocomplete: 'off' })
  const revert = h('input', { required: true, autocomplete: 'off' })
  openFormDialog({
    title: 'Record a production change',
    submitLabel: 'Record change',
    body: [
      h('p', { class: 'hint' }, 'Every change to production goes here, with how to undo it. Closing the incident needs each one reverted or waived.'),
      field('What was changed', what, 'e.g. “scaled checkout to 12 replicas”'),
      field('Why', why),
      field('How to revert it', revert),
    ],
    onSubmit: async () => {
      await context.run('record_change', { what: what.value, why: why.value, revert: revert.value })
    },
  })
}
