// The command panel's exit criteria: the checklist (ticked by the incident
// commander) and the stable "add exit criterion" form, kept across
// re-renders so a live update never wipes what is being typed.

import { runAction } from '../dialog'
import { h, uid } from '../dom'
import { type IncidentContext, panelSection, type PanelSection } from './context'

export function createCriteria(context: IncidentContext): PanelSection {
  return panelSection(context, criteriaSection, (error) => {
    const form = criterionForm(context, error)
    return { nodes: [form], onRefresh: () => (form.hidden = !context.perms().exitCriteria) }
  })
}

function criteriaSection(context: IncidentContext, errorSlot: HTMLElement): HTMLElement {
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
    items.length
      ? h('ul', { class: 'checklist' }, items)
      : h('p', { class: 'muted' }, perms.writer ? 'No exit criteria yet. The incident commander adds what must be true to resolve.' : 'No exit criteria yet.'),
  )
}

function criterionForm(context: IncidentContext, errorSlot: HTMLElement): HTMLFormElement {
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
