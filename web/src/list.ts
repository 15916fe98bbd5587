// The incident list (`/`): active incidents first, and the "Declare
// incident" dialog.

import { api } from './api'
import { severityBadge, statusBadge, topBar } from './chrome'
import { isSelf, who } from './describe'
import { openFormDialog } from './dialog'
import { field, h, readYesNo, replaceChildren, yesNo } from './dom'
import { navigate } from './router'
import { roughDuration, timeEl } from './time'
import { oneOf, SEVERITIES, SEVERITY_NAMES, type CreateIncident, type Incident, type Me, type Status } from './types'

const ORDER: Record<Status, number> = { active: 0, mitigated: 1, resolved: 2, closed: 3 }

export function renderIncidentList(root: HTMLElement, me: Me): () => void {
  document.title = 'Incidents · Command Post'
  const canDeclare = me.role !== 'viewer' && !me.incident
  const listEl = h('div', { class: 'incident-list', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading incidents…'))
  const errorEl = h('p', { class: 'notice warn', role: 'alert', hidden: true })
  const declareButton = canDeclare ? h('button', { type: 'button', class: 'primary big', onclick: () => openDeclare() }, 'Declare incident') : null

  root.replaceChildren(
    topBar(me),
    h(
      'main',
      { class: 'page', id: 'main' },
      h('div', { class: 'page-head' }, h('h1', null, 'Incidents'), declareButton),
      errorEl,
      listEl,
    ),
  )

  let stopped = false
  async function load(): Promise<void> {
    try {
      const incidents = await api.incidents()
      if (stopped) return
      errorEl.hidden = true
      renderList(incidents)
    } catch (caught) {
      if (stopped) return
      errorEl.textContent = `Cannot load incidents: ${caught instanceof Error ? caught.message : String(caught)}`
      errorEl.hidden = false
    }
  }

  function renderList(incidents: Incident[]): void {
    const sorted = [...incidents].sort(
      (a, b) => ORDER[a.state.status] - ORDER[b.state.status] || b.created_at.localeCompare(a.created_at),
    )
    if (sorted.length === 0) {
      replaceChildren(listEl, h('p', { class: 'muted' }, canDeclare ? 'No incidents. Declare one when something is wrong.' : 'No incidents.'))
      return
    }
    replaceChildren(
      listEl,
      h(
        'ul',
        { class: 'cards' },
        sorted.map((incident) => {
          const state = incident.state
          const ic = state.roles.find((role) => role.role === 'incident_commander')
          const pin = state.pin
          const overdue = pin && (pin.overdue || (!!pin.next_update_by && Date.parse(pin.next_update_by) < Date.now()))
          const open = state.status === 'active' || state.status === 'mitigated'
          return h(
            'li',
            { class: `card incident-card ${open ? 'open' : 'done'}` },
            h(
              'h2',
              null,
              h('a', { href: `/incidents/${incident.id}`, 'data-nav': '', 'data-key': `inc-${incident.id}` }, h('span', { class: 'inc-id' }, incident.id), ' ', state.title),
            ),
            h('div', { class: 'badges' }, severityBadge(state.severity), statusBadge(state.status)),
            h(
              'dl',
              { class: 'facts' },
              h('dt', null, 'Commander'),
              h('dd', null, ic ? ic.holder.name : '—', ic && isSelf(ic.holder, me.sub) ? h('span', { class: 'you' }, ' (you)') : null),
              h('dt', null, 'Declared'),
              h('dd', null, timeEl(state.declared_at, false), ` · ${roughDuration(Date.now() - Date.parse(state.declared_at))} ago`),
            ),
            pin
              ? h(
                  'p',
                  { class: `pin-line ${overdue ? 'overdue' : ''}` },
                  h('strong', null, overdue ? 'Update overdue · ' : 'Latest status: '),
                  pin.summary,
                  h('span', { class: 'muted' }, ' — ', who(pin.pinned_by, me.sub), ', ', timeEl(pin.pinned_at, false)),
                )
              : h('p', { class: 'pin-line muted' }, 'No status pinned yet.'),
          )
        }),
      ),
    )
  }

  function openDeclare(): void {
    const title = h('input', { name: 'title', required: true, maxlength: 200, autocomplete: 'off' })
    const severity = h(
      'select',
      { name: 'severity' },
      h('option', { value: '' }, 'Not yet assessed'),
      SEVERITIES.map((sev) => h('option', { value: sev }, SEVERITY_NAMES[sev])),
    )
    const summary = h('textarea', { name: 'summary', rows: 3 })
    openFormDialog({
      title: 'Declare an incident',
      submitLabel: 'Declare incident',
      danger: true,
      body: [
        h('p', { class: 'hint' }, 'Declare if any answer is yes. You become the incident commander.'),
        field('Title', title, 'What is broken, in a few words.'),
        field('Severity', severity),
        yesNo('needs_other_team', 'Do you need a second team to fix it?'),
        yesNo('customer_visible', 'Is it visible to customers?'),
        yesNo('unresolved_after_hour', 'Still unsolved after an hour of concentrated analysis?'),
        field('Summary', summary, 'What is known so far (optional).'),
      ],
      onSubmit: async (form) => {
        const needs_other_team = readYesNo(form, 'needs_other_team')
        const customer_visible = readYesNo(form, 'customer_visible')
        const unresolved_after_hour = readYesNo(form, 'unresolved_after_hour')
        const answered = [needs_other_team, customer_visible, unresolved_after_hour].filter((value) => value !== null).length
        if (answered !== 0 && answered !== 3) throw new Error('Answer all three questions, or none of them if not yet assessed.')
        // `null` is "not yet assessed", as an absent field would be.
        const body: CreateIncident = {
          title: title.value.trim(),
          severity: oneOf(SEVERITIES, severity.value),
          criteria:
            needs_other_team !== null && customer_visible !== null && unresolved_after_hour !== null
              ? { needs_other_team, customer_visible, unresolved_after_hour }
              : null,
          summary: summary.value.trim() || null,
        }
        const incident = await api.declare(body)
        navigate(`/incidents/${incident.id}`)
      },
    })
  }

  void load()
  const timer = window.setInterval(() => void load(), 10_000)
  return () => {
    stopped = true
    window.clearInterval(timer)
  }
}
