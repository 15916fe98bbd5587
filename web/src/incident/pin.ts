// The pinned status banner: the last status summary, who pinned it, and the
// countdown to the next update (flagged when overdue), plus the dialog that
// pins a new one (incident commander or communications lead).

import { who } from '../describe'
import { openFormDialog } from '../dialog'
import { field, h, replaceChildren } from '../dom'
import { duration, timeEl } from '../time'
import type { IncidentContext, Part } from './context'

export interface PinBanner extends Part {
  /** Updates the countdown; called every second. */
  tick(): void
}

export function createPinBanner(context: IncidentContext): PinBanner {
  const element = h('section', { class: 'pin-banner', 'aria-label': 'Pinned status', 'aria-live': 'polite' })

  function refresh(): void {
    const perms = context.perms()
    const pin = context.state().pin
    const pinButton = perms.pin ? h('button', { type: 'button', class: pin ? 'secondary' : 'primary', 'data-key': 'pin', onclick: () => openPinDialog(context) }, pin ? 'Pin new status…' : 'Pin a status…') : null
    if (!pin) {
      element.className = 'pin-banner empty'
      replaceChildren(element, h('div', { class: 'pin-main' }, h('p', { class: 'pin-summary muted' }, 'No status pinned yet.')), pinButton)
      return
    }
    const next = pin.next_update_by
    if (pin.final || !next) {
      element.className = 'pin-banner final'
      replaceChildren(
        element,
        h(
          'div',
          { class: 'pin-main' },
          h('p', { class: 'pin-label' }, 'Final status update'),
          h('p', { class: 'pin-summary' }, pin.summary),
          h('p', { class: 'pin-meta' }, `Pinned by ${who(pin.pinned_by, context.me.sub)} at `, timeEl(pin.pinned_at)),
        ),
        h('div', { class: 'pin-next' }, h('p', { class: 'pin-countdown final-note' }, 'No further updates are due.'), pinButton),
      )
      return
    }
    const overdue = pin.overdue || Date.parse(next) <= Date.now()
    element.className = `pin-banner ${overdue ? 'overdue' : ''}`
    replaceChildren(
      element,
      h(
        'div',
        { class: 'pin-main' },
        h('p', { class: 'pin-label' }, 'Pinned status'),
        h('p', { class: 'pin-summary' }, pin.summary),
        h('p', { class: 'pin-meta' }, `Pinned by ${who(pin.pinned_by, context.me.sub)} at `, timeEl(pin.pinned_at)),
      ),
      h(
        'div',
        { class: 'pin-next' },
        // Ticks every second: not announced (the banner itself is a live region).
        h('p', { class: 'pin-countdown', 'aria-live': 'off', 'data-countdown': next, 'data-overdue': String(pin.overdue) }, countdownText(next, pin.overdue)),
        h('p', { class: 'pin-meta' }, 'Next update by ', timeEl(next, false)),
        pinButton,
      ),
    )
  }

  function tick(): void {
    for (const el of element.querySelectorAll<HTMLElement>('[data-countdown]')) {
      const text = countdownText(el.dataset.countdown ?? '', el.dataset.overdue === 'true')
      if (el.textContent !== text) el.textContent = text
      const overdue = text.startsWith('⚠')
      element.classList.toggle('overdue', overdue)
    }
  }

  return { element, refresh, tick }
}

function countdownText(due: string, overdue: boolean): string {
  const left = Date.parse(due) - Date.now()
  if (overdue || left <= 0) return `⚠ Update overdue by ${duration(-left)}`
  return `Next update in ${duration(left)}`
}

function openPinDialog(context: IncidentContext): void {
  const summary = h('textarea', { rows: 3, required: true, name: 'summary' })
  const minutes = h('input', { type: 'number', min: 1, max: 1440, value: 30, required: true, name: 'minutes', inputmode: 'numeric' })
  const finalBox = h('input', { type: 'checkbox', name: 'final' })
  const status = context.state().status
  // A final update (no next deadline) only once the bleeding has stopped.
  const finalAllowed = status !== 'active'
  finalBox.addEventListener('change', () => {
    minutes.disabled = finalBox.checked
    minutes.required = !finalBox.checked
  })
  const current = context.state().pin
  if (current) summary.value = current.summary
  openFormDialog({
    title: 'Pin a status update',
    submitLabel: 'Pin status',
    body: [
      h('p', { class: 'hint' }, 'Everyone sees it at the top of the page, viewers first of all. Say what is known, what is being tried next, and when the next update comes.'),
      field('Status summary', summary),
      field('Next update in (minutes)', minutes, 'The server flags the update as overdue when this passes without a new pin.'),
      finalAllowed
        ? h('label', { class: 'check final-pin' }, finalBox, ' Final update, no next deadline (the incident is mitigated or later)')
        : null,
    ],
    onSubmit: async () => {
      if (finalAllowed && finalBox.checked) {
        await context.run('pin_status', { summary: summary.value, final: true })
        return
      }
      const n = Number(minutes.value)
      if (!Number.isFinite(n) || n < 1) throw new Error('The next update must be at least a minute away.')
      const next = new Date(Date.now() + n * 60_000).toISOString()
      await context.run('pin_status', { summary: summary.value, next_update_by: next })
    },
  })
}
