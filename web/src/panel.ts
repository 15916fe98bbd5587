// The command panel: roles and handoffs, lifecycle, exit criteria, the
// change ledger and responders, plus the dialogs that change them. Display
// parts are re-rendered from the state on every change; forms live in
// dialogs (or in stable nodes) so live updates never wipe what someone is
// typing.

import { api } from './api'
import { openFormDialog, runAction } from './dialog'
import { field, h, uid } from './dom'
import type { Permissions } from './permissions'
import { roughDuration, timeEl, utcShort } from './time'
import {
  ROLE_AREAS,
  ROLE_NAMES,
  ROLES,
  SEVERITIES,
  SEVERITY_NAMES,
  STATUS_NAMES,
  type Actor,
  type Briefing,
  type IncidentState,
  type Me,
  type PendingHandoff,
  type Role,
  type Status,
} from './types'

export interface PanelContext {
  id: string
  me: Me
  state(): IncidentState
  perms(): Permissions
  /** Sends a command; throws ApiError on refusal. */
  run(name: string, body: Record<string, unknown>): Promise<void>
  /** People the app knows of (present now, role holders, responders, timeline). */
  people(): Array<Actor & { here: boolean }>
}

// ---------------------------------------------------------------- people

/** A person picker: known people, or "someone else" by id and name. */
function personPicker(context: PanelContext, legend: string, options: { includeMe?: boolean; exclude?: string[] } = {}): {
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

// ---------------------------------------------------------------- briefing

export function briefingView(briefing: Briefing): HTMLElement {
  const list = (title: string, items: string[]): HTMLElement =>
    h('section', null, h('h4', null, title), items.length ? h('ul', null, items.map((item) => h('li', null, item))) : h('p', { class: 'muted' }, 'None.'))
  return h(
    'div',
    { class: 'briefing' },
    h('section', null, h('h4', null, 'Situation'), h('p', null, briefing.situation)),
    list('Objectives and exit criteria', briefing.objectives),
    list('Current actions', briefing.current_actions),
    h(
      'section',
      null,
      h('h4', null, 'Organisation'),
      h(
        'ul',
        null,
        briefing.organisation.map((line) => h('li', null, `${line.assignment}: ${line.holder.name} (since `, timeEl(line.since, false), ')')),
      ),
    ),
    list('Open production changes', briefing.open_changes),
    list('Recent timeline', briefing.recent_timeline),
    briefing.notes ? h('section', null, h('h4', null, 'Notes from the outgoing holder'), h('p', { class: 'prewrap' }, briefing.notes)) : null,
  )
}

// ---------------------------------------------------------------- dialogs

export function openOfferDialog(context: PanelContext, role: Role): void {
  const state = context.state()
  const holder = state.roles.find((view) => view.role === role)?.holder
  const picker = personPicker(context, 'Hand over to', { exclude: holder ? [holder.id] : [] })
  const notes = h('textarea', { rows: 3, name: 'notes' })
  const briefingSlot = h('div', { class: 'briefing-slot', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading the briefing…'))
  api
    .briefing(context.id)
    .then((briefing) => briefingSlot.replaceChildren(briefingView(briefing)))
    .catch((caught: unknown) => briefingSlot.replaceChildren(h('p', { class: 'form-error' }, `Cannot load the briefing: ${caught instanceof Error ? caught.message : String(caught)}`)))
  openFormDialog({
    title: `Offer ${ROLE_NAMES[role].toLowerCase()}`,
    submitLabel: 'Send offer',
    className: 'wide',
    body: [
      h(
        'p',
        { class: 'hint' },
        role === 'incident_commander'
          ? 'You stay in command until they accept from their own session. Everyone is told when they do.'
          : `${holder?.name ?? 'The current holder'} keeps ${ROLE_AREAS[role]} until the new person accepts.`,
      ),
      picker.element,
      h('h3', null, 'Briefing (pre-filled from the incident; sent with the offer)'),
      briefingSlot,
      field('Your notes for the briefing', notes, 'What they must know that the state does not say.'),
    ],
    onSubmit: async () => {
      await context.run('offer_handoff', { role, to: picker.read(), notes: notes.value })
    },
  })
}

export function openAssignDialog(context: PanelContext, role: Role): void {
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

export function openEmergencyDialog(context: PanelContext): void {
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
      if (to.id === context.me.sub) await context.run('assume_role', { role: role.value, reason: reason.value })
      else await context.run('force_assign_role', { role: role.value, to, reason: reason.value })
    },
  })
}

export function openPinDialog(context: PanelContext): void {
  const summary = h('textarea', { rows: 3, required: true, name: 'summary' })
  const minutes = h('input', { type: 'number', min: 1, max: 1440, value: 30, required: true, name: 'minutes', inputmode: 'numeric' })
  const current = context.state().pin
  if (current) summary.value = current.summary
  openFormDialog({
    title: 'Pin a status update',
    submitLabel: 'Pin status',
    body: [
      h('p', { class: 'hint' }, 'Everyone sees it at the top of the page, viewers first of all. Say what is known, what is being tried next, and when the next update comes.'),
      field('Status summary', summary),
      field('Next update in (minutes)', minutes, 'The server flags the update as overdue when this passes without a new pin.'),
    ],
    onSubmit: async () => {
      const n = Number(minutes.value)
      if (!Number.isFinite(n) || n < 1) throw new Error('The next update must be at least a minute away.')
      const next = new Date(Date.now() + n * 60_000).toISOString()
      await context.run('pin_status', { summary: summary.value, next_update_by: next })
    },
  })
}

function openResolveDialog(context: PanelContext): void {
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

function openSeverityDialog(context: PanelContext): void {
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
      await context.run('set_severity', { severity: select.value })
    },
  })
}

function openReasonDialog(context: PanelContext, title: string, hint: string, submitLabel: string, command: string, extra: Record<string, unknown>, danger = false): void {
  const reason = h('textarea', { rows: 2, required: true })
  openFormDialog({
    title,
    submitLabel,
    danger,
    body: [h('p', { class: 'hint' }, hint), field('Reason (required)', reason)],
    onSubmit: async () => {
      await context.run(command, { ...extra, reason: reason.value })
    },
  })
}

function openRecordChangeDialog(context: PanelContext): void {
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

function openCloseDialog(context: PanelContext): void {
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

// ---------------------------------------------------------------- sections

function actionButton(label: string, key: string, errorSlot: HTMLElement, action: () => Promise<unknown> | void, className = 'secondary'): HTMLButtonElement {
  const button: HTMLButtonElement = h('button', { type: 'button', class: className, 'data-key': key }, label)
  button.addEventListener('click', () => {
    void runAction(button, errorSlot, async () => action())
  })
  return button
}

function dialogButton(label: string, key: string, open: () => void, className = 'secondary'): HTMLButtonElement {
  return h('button', { type: 'button', class: className, 'data-key': key, onclick: open }, label)
}

export function rolesSection(context: PanelContext, errorSlot: HTMLElement): HTMLElement {
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
      h('div', { class: 'role-since muted' }, 'since ', timeEl(view.since, false), ` · ${roughDuration(tenure)}`, tenure > 4 * 3600_000 ? h('span', { class: 'fatigue' }, ' · consider a handoff') : null),
      pending ? pendingLine(context, pending, errorSlot) : null,
      actions.length ? h('div', { class: 'row-actions' }, actions) : null,
    )
  })
  return h(
    'section',
    { class: 'panel-section', 'aria-labelledby': 'roles-h' },
    h('h3', { id: 'roles-h' }, 'Roles'),
    h('ul', { class: 'roles' }, rows),
    state.next_commander ? h('p', { class: 'muted' }, `Planned next incident commander: ${state.next_commander.name}`) : null,
    perms.emergency ? h('div', { class: 'row-actions' }, dialogButton('Emergency role change…', 'emergency', () => openEmergencyDialog(context), 'danger-outline')) : null,
  )
}

function pendingLine(context: PanelContext, offer: PendingHandoff, errorSlot: HTMLElement): HTMLElement {
  const perms = context.perms()
  return h(
    'div',
    { class: 'pending-offer' },
    h('span', null, `Offer to ${offer.to.name} pending, from ${offer.from.name} (expires `, timeEl(offer.expires_at, false), ')'),
    perms.cancel(offer) ? actionButton('Cancel offer', `cancel-${offer.handoff}`, errorSlot, () => context.run('cancel_handoff', { handoff: offer.handoff }), 'link-button') : null,
  )
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

export function lifecycleSection(context: PanelContext, errorSlot: HTMLElement): HTMLElement {
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
    buttons.push(dialogButton('Reopen…', 'reopen', () => openReasonDialog(context, 'Reopen the incident', 'It becomes active again; say why.', 'Reopen', 'reopen', {}, true)))
  }
  const gates: HTMLElement[] = []
  if (state.status === 'active' || state.status === 'mitigated') {
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
  if (state.status !== 'closed') {
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
    buttons.length ? h('div', { class: 'row-actions' }, buttons) : null,
    gates.length ? h('ul', { class: 'gates' }, gates) : null,
  )
}

export function criteriaSection(context: PanelContext, errorSlot: HTMLElement): HTMLElement {
  const state = context.state()
  const perms = context.perms()
  const items = state.exit_criteria.map((criterion) => {
    if (perms.exitCriteria) {
      const id = uid('crit')
      const box = h('input', { type: 'checkbox', id, checked: criterion.met, 'data-key': `crit-${criterion.criterion}` })
      box.addEventListener('change', () => {
        void runAction(null, errorSlot, async () => {
          box.disabled = true
          try {
            await context.run('set_exit_criterion', { criterion: criterion.criterion, met: box.checked })
          } catch (caught) {
            box.checked = criterion.met
            throw caught
          } finally {
            box.disabled = false
          }
        })
      })
      return h('li', { class: criterion.met ? 'met' : 'unmet' }, box, h('label', { for: id }, criterion.text))
    }
    return h('li', { class: criterion.met ? 'met' : 'unmet' }, h('span', { class: 'check', 'aria-hidden': 'true' }, criterion.met ? '✓' : '○'), h('span', null, criterion.text), h('span', { class: 'sr-only' }, criterion.met ? ' (met)' : ' (not met)'))
  })
  return h(
    'section',
    { class: 'panel-section', 'aria-labelledby': 'crit-h' },
    h('h3', { id: 'crit-h' }, 'Exit criteria'),
    items.length ? h('ul', { class: 'checklist' }, items) : h('p', { class: 'muted' }, 'No exit criteria yet. The incident commander adds what must be true to resolve.'),
  )
}

/** The stable "add exit criterion" form (kept across re-renders). */
export function criterionForm(context: PanelContext, errorSlot: HTMLElement): HTMLFormElement {
  const input = h('input', { required: true, autocomplete: 'off', 'aria-label': 'New exit criterion', placeholder: 'e.g. checkout error rate below 0.1% for 30 min' })
  const button = h('button', { type: 'submit', class: 'secondary' }, 'Add criterion')
  const form = h('form', { class: 'inline-form' }, input, button)
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    if (!input.value.trim()) return
    void runAction(button, errorSlot, async () => {
      await context.run('add_exit_criterion', { text: input.value })
      input.value = ''
    })
  })
  return form
}

export function changesSection(context: PanelContext, errorSlot: HTMLElement): HTMLElement {
  const state = context.state()
  const perms = context.perms()
  const items = state.changes.map((change) => {
    const s = change.state
    let stateLine: HTMLElement
    if (s.type === 'open') stateLine = h('span', { class: 'change-state open' }, 'Open — must be reverted or waived before closing')
    else if (s.type === 'reverted') stateLine = h('span', { class: 'change-state reverted' }, `Reverted by ${s.by.name} at `, timeEl(s.at, false))
    else stateLine = h('span', { class: 'change-state waived' }, `Waived by ${s.by.name} at `, timeEl(s.at, false), `: ${s.reason}`)
    const actions: HTMLElement[] = []
    if (s.type === 'open' && perms.settleChange) {
      actions.push(actionButton('Mark reverted', `revert-${change.change}`, errorSlot, () => context.run('mark_change_reverted', { change: change.change })))
      actions.push(
        dialogButton('Waive…', `waive-${change.change}`, () =>
          openReasonDialog(context, `Waive change #${change.change}`, `Keep “${change.what}” in place on purpose. Say why.`, 'Waive change', 'waive_change', { change: change.change }),
        ),
      )
    }
    return h(
      'li',
      { class: `change change-${s.type}` },
      h('div', null, h('strong', null, `#${change.change} ${change.what}`)),
      change.why ? h('div', { class: 'muted' }, `Why: ${change.why}`) : null,
      h('div', null, `Revert: ${change.revert}`),
      h('div', { class: 'muted' }, `Recorded by ${change.recorded_by.name} at `, timeEl(change.recorded_at, false)),
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
    h(
      'p',
      { class: 'hint' },
      `Only the operations lead (${ops?.holder.name ?? '—'}) records changes; the planning lead (${planning?.holder.name ?? '—'}) marks them reverted or waived.`,
    ),
    perms.recordChange ? h('div', { class: 'row-actions' }, dialogButton('Record change…', 'record-change', () => openRecordChangeDialog(context))) : null,
  )
}

export function respondersSection(context: PanelContext): HTMLElement | null {
  const state = context.state()
  if (state.responders.length === 0) return null
  return h(
    'section',
    { class: 'panel-section', 'aria-labelledby': 'resp-h' },
    h('h3', { id: 'resp-h' }, 'Responders'),
    h(
      'ul',
      { class: 'responders' },
      state.responders.map((r) => h('li', null, h('strong', null, r.actor.name), `: ${r.assignment} (since ${utcShort(new Date(r.since))})`)),
    ),
  )
}
