// The command panel's lifecycle section: status and severity, the next
// steps (mitigate, resolve, close, reopen), what each gate still needs,
// and the dialogs for the weighty steps.

import { openFormDialog, runAction } from '../dialog'
import { field, h } from '../dom'
import { timeEl } from '../time'
import { oneOf, SEVERITIES, SEVERITY_NAMES, STATUS_NAMES, type Status } from '../types'
import { type IncidentContext, panelSection, type PanelSection } from './context'
import { actionButton, dialogButton, openReasonDialog } from './controls'

export function createLifecycle(context: IncidentContext): PanelSection {
  return panelSection(context, lifecycleSection, (error) => impactStartForm(context, error))
}

/** `2025-03-14T09:00` (UTC) for a datetime-local input. */
function utcInputValue(iso: string): string {
  return new Date(iso).toISOString().slice(0, 16)
}

/**
 * The commander's control for when the impact started (distinct from the
 * declaration; never in the future): a datetime-local input read as UTC.
 * It lives outside the re-rendered section, so what is typed survives
 * state updates.
 */
function impactStartForm(context: IncidentContext, error: HTMLElement): { nodes: HTMLElement[]; onRefresh: () => void } {
  const input = h('input', { type: 'datetime-local', name: 'impact_start', required: true, step: 60, class: 'impact-start-input' })
  const button = h('button', { type: 'submit', class: 'secondary', 'data-key': 'set-impact-start' }, 'Set impact start')
  const form = h('form', { class: 'impact-start-form', hidden: true }, field('Impact start (UTC)', input), button)
  let shown: string | null | undefined
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    void runAction(button, error, async () => {
      const value = input.value
      if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?$/.test(value)) throw new Error('Give the impact start as a date and a time (UTC).')
      const at = new Date(`${value.length === 16 ? `${value}:00` : value}Z`)
      if (Number.isNaN(at.getTime())) throw new Error('Give the impact start as a date and a time (UTC).')
      await context.run('set_impact_start', { at: at.toISOString() })
    })
  })
  return {
    nodes: [form],
    onRefresh() {
      const state = context.state()
      form.hidden = !context.perms().lifecycle
      input.max = new Date().toISOString().slice(0, 16)
      // Follow the state unless the commander is editing the field.
      const current = state.impact_start ?? null
      if (current !== shown && document.activeElement !== input) {
        input.value = utcInputValue(current ?? state.declared_at)
        shown = current
      }
    },
  }
}

const NEXT: Record<Status, Array<{ to: Status; label: string }>> = {
  active: [
    { to: 'mitigated', label: 'Mark mitigated' },
    { to: 'resolved', label: 'Resolve…' },
  ],
  mitigated: [
    { to: 'resolved', label: 'Resolve…' },
    { to: 'active', label: 'Back to active' },
  ],
  resolved: [{ to: 'closed', label: 'Close…' }],
  closed: [],
}

function lifecycleSection(context: IncidentContext, errorSlot: HTMLElement): HTMLElement {
  const state = context.state()
  const perms = context.perms()
  const met = state.exit_criteria.filter((c) => c.met).length
  const openChanges = state.changes.filter((c) => c.state.type === 'open').length
  const buttons: HTMLElement[] = []
  if (perms.lifecycle) {
    for (const step of NEXT[state.status]) {
      if (step.to === 'resolved') buttons.push(dialogButton(step.label, 'to-resolved', () => openResolveDialog(context)))
      else if (step.to === 'closed') {
        const button = dialogButton(step.label, 'to-closed', () => openCloseDialog(context))
        if (openChanges > 0) {
          button.disabled = true
          button.setAttribute('aria-describedby', 'close-gate')
        }
        buttons.push(button)
      } else buttons.push(actionButton(step.label, `to-${step.to}`, errorSlot, () => context.run('set_status', { status: step.to })))
    }
  }
  if (perms.reopen) {
    buttons.push(dialogButton('Reopen…', 'reopen', () => openReasonDialog('Reopen the incident', 'It becomes active again; say why.', 'Reopen', (reason) => context.run('reopen', { reason }), true)))
  }
  // What each step still needs is guidance for the people running the
  // response; viewers (read-only) see the status, the criteria and the changes.
  const gates: HTMLElement[] = []
  if (perms.writer && (state.status === 'active' || state.status === 'mitigated')) {
    gates.push(
      h(
        'li',
        null,
        state.exit_criteria.length === 0
          ? 'Resolving needs at least one exit criterion, all met — or an override with a reason.'
          : `Resolving needs every exit criterion met (${met} of ${state.exit_criteria.length} met) — or an override with a reason.`,
      ),
    )
  }
  if (perms.writer && state.status !== 'closed') {
    gates.push(
      h(
        'li',
        { id: 'close-gate' },
        openChanges
          ? `Closing needs every recorded production change reverted or waived: ${openChanges} still open (see the change ledger).`
          : 'Closing needs every recorded production change reverted or waived: none open.',
      ),
    )
  }
  if (perms.setSeverity) buttons.push(dialogButton('Set severity…', 'sev-set', () => openSeverityDialog(context)))
  return h(
    'section',
    { class: 'panel-section', 'aria-labelledby': 'life-h' },
    h('h3', { id: 'life-h' }, 'Lifecycle'),
    h('p', { class: 'lifecycle-line' }, 'Status: ', h('strong', { class: `status-text status-${state.status}` }, STATUS_NAMES[state.status]), ' · Severity: ', h('strong', null, state.severity ? SEVERITY_NAMES[state.severity] : 'not assessed')),
    state.impact_start
      ? h('p', { class: 'impact-start' }, 'Impact started: ', timeEl(state.impact_start, false), ' (declared ', timeEl(state.declared_at, false), ')')
      : perms.lifecycle
        ? h('p', { class: 'impact-start muted' }, 'Impact start not set: set it when the impact began before the declaration.')
        : null,
    buttons.length ? h('div', { class: 'row-actions' }, buttons) : null,
    gates.length ? h('ul', { class: 'gates' }, gates) : null,
  )
}

function openResolveDialog(context: IncidentContext): void {
  const state = context.state()
  const met = state.exit_criteria.filter((c) => c.met).length
  const allMet = state.exit_criteria.length > 0 && met === state.exit_criteria.length
  const reason = h('textarea', { rows: 2, required: !allMet })
  openFormDialog({
    title: 'Resolve the incident',
    submitLabel: allMet ? 'Resolve' : 'Resolve with override',
    danger: !allMet,
    body: [
      state.exit_criteria.length
        ? h(
            'ul',
            { class: 'checklist readonly' },
            state.exit_criteria.map((c) => h('li', { class: c.met ? 'met' : 'unmet' }, h('span', { class: 'check', 'aria-hidden': 'true' }, c.met ? '✓' : '○'), `${c.text} — ${c.met ? 'met' : 'not met'}`)),
          )
        : h('p', null, 'No exit criteria were set.'),
      allMet
        ? h('p', { class: 'notice ok' }, 'Every exit criterion is met.')
        : h(
            'div',
            null,
            h('p', { class: 'notice warn' }, state.exit_criteria.length ? `Only ${met} of ${state.exit_criteria.length} exit criteria are met.` : 'Resolving normally needs at least one exit criterion, all met.', ' To resolve anyway, give a reason; it is recorded on the timeline.'),
            field('Override reason (required)', reason),
          ),
    ],
    onSubmit: async () => {
      await context.run('set_status', allMet ? { status: 'resolved' } : { status: 'resolved', override_reason: reason.value })
    },
  })
}

function openSeverityDialog(context: IncidentContext): void {
  const current = context.state().severity
  const select = h(
    'select',
    { required: true },
    h('option', { value: '' }, 'Choose…'),
    SEVERITIES.map((sev) => h('option', { value: sev, disabled: sev === current }, `${SEVERITY_NAMES[sev]}${sev === current ? ' (current)' : ''}`)),
  )
  openFormDialog({
    title: 'Set the severity',
    submitLabel: 'Set severity',
    body: [field('Severity', select)],
    onSubmit: async () => {
      const severity = oneOf(SEVERITIES, select.value)
      if (!severity) throw new Error('Choose a severity.')
      await context.run('set_severity', { severity })
    },
  })
}

function openCloseDialog(context: IncidentContext): void {
  openFormDialog({
    title: 'Close the incident',
    submitLabel: 'Close incident',
    danger: true,
    body: [h('p', null, 'A closed incident refuses every change except reopening. Every production change is reverted or waived, and pending offers are cancelled.')],
    onSubmit: async () => {
      await context.run('set_status', { status: 'closed' })
    },
  })
}
