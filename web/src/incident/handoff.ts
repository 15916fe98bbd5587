// Handoffs: the offer dialog with its briefing, the banner that shows an
// offer to the person it is for (accept or decline), and the confirmations
// everyone sees when a role changes hands.

import { api } from '../api'
import { isSelf, roleChangeConfirmation, roleName } from '../describe'
import { openFormDialog, runAction } from '../dialog'
import { field, h, replaceChildren } from '../dom'
import { timeEl } from '../time'
import { ROLE_AREAS, ROLE_NAMES, type Briefing, type IncidentEvent, type Role } from '../types'
import { errorLine, type IncidentContext, type Part } from './context'
import { personPicker } from './people'

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

export function openOfferDialog(context: IncidentContext, role: Role): void {
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
          : `${holder ? (isSelf(holder, context.me.sub) ? 'You keep' : `${holder.name} keeps`) : 'The current holder keeps'} ${ROLE_AREAS[role]} until the new person accepts.`,
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

/** Offers made to me, each with its briefing and accept/decline. */
export function createOffers(context: IncidentContext): Part {
  const element = h('div', { class: 'offers', 'aria-live': 'assertive' })
  // Re-rendered on every state change: keep what was typed.
  const declineReasons = new Map<number, string>()
  function refresh(): void {
    const perms = context.perms()
    const mine = context.state().pending_handoffs.filter((offer) => perms.answer(offer))
    replaceChildren(
      element,
      mine.map((offer) => {
        const error = errorLine()
        const reason = h('input', {
          autocomplete: 'off',
          'aria-label': 'Reason for declining (optional)',
          placeholder: 'Reason (optional)',
          'data-key': `decline-reason-${offer.handoff}`,
          value: declineReasons.get(offer.handoff) ?? '',
        })
        reason.addEventListener('input', () => declineReasons.set(offer.handoff, reason.value))
        return h(
          'section',
          { class: 'offer-banner', 'aria-labelledby': `offer-${offer.handoff}-h`, 'data-handoff': String(offer.handoff) },
          h('h2', { id: `offer-${offer.handoff}-h` }, `${offer.from.name} offers you the role of ${roleName(offer.role)}`),
          h('p', null, 'Read the briefing. Nothing changes until you accept; the offer expires at ', timeEl(offer.expires_at, false), '.'),
          h('details', { open: true }, h('summary', null, 'Briefing'), briefingView(offer.briefing)),
          h(
            'div',
            { class: 'row-actions' },
            h(
              'button',
              {
                type: 'button',
                class: 'primary',
                'data-key': `accept-${offer.handoff}`,
                onclick: (e: Event) => void runAction(e.currentTarget as HTMLButtonElement, error, () => context.run('accept_handoff', { handoff: offer.handoff })),
              },
              `Accept: I am now ${roleName(offer.role)}`,
            ),
            h(
              'button',
              {
                type: 'button',
                class: 'secondary',
                'data-key': `decline-${offer.handoff}`,
                onclick: (e: Event) =>
                  void runAction(e.currentTarget as HTMLButtonElement, error, () => context.run('decline_handoff', reason.value.trim() ? { handoff: offer.handoff, reason: reason.value } : { handoff: offer.handoff })),
              },
              'Decline',
            ),
            reason,
          ),
          error,
        )
      }),
    )
  }
  return { element, refresh }
}

/** Role changes that happened while the page was open, addressed to the reader; each stays until dismissed. */
export function createConfirmations(context: IncidentContext): { element: HTMLElement; add(event: IncidentEvent): void } {
  const element = h('div', { class: 'confirmations', 'aria-live': 'assertive' })
  const confirmations: Array<{ seq: number; text: string }> = []
  function render(): void {
    replaceChildren(
      element,
      confirmations.map((confirmation) =>
        h(
          'div',
          { class: 'confirmation', role: 'alert', 'data-seq': String(confirmation.seq) },
          h('span', { class: 'confirmation-icon', 'aria-hidden': 'true' }, '✔'),
          h('p', { class: 'confirmation-text' }, confirmation.text),
          h(
            'button',
            {
              type: 'button',
              class: 'secondary',
              'data-key': `dismiss-${confirmation.seq}`,
              onclick: () => {
                const index = confirmations.findIndex((c) => c.seq === confirmation.seq)
                if (index >= 0) confirmations.splice(index, 1)
                render()
              },
            },
            'Dismiss',
          ),
        ),
      ),
    )
  }
  return {
    element,
    add(event) {
      const text = roleChangeConfirmation(event, context.me.sub)
      if (!text) return
      confirmations.push({ seq: event.seq, text })
      render()
    },
  }
}
