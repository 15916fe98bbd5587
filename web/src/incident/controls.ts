// Buttons and the reason dialog shared by the command panel's sections.

import { openFormDialog, runAction } from '../dialog'
import { field, h } from '../dom'
import type { IncidentContext } from './context'

/** A button that sends a command at once; a refusal shows in `errorSlot`. */
export function actionButton(label: string, key: string, errorSlot: HTMLElement, action: () => Promise<unknown> | void, className = 'secondary'): HTMLButtonElement {
  const button: HTMLButtonElement = h('button', { type: 'button', class: className, 'data-key': key }, label)
  button.addEventListener('click', () => {
    void runAction(button, errorSlot, async () => action())
  })
  return button
}

/** A button that opens a dialog. */
export function dialogButton(label: string, key: string, open: () => void, className = 'secondary'): HTMLButtonElement {
  return h('button', { type: 'button', class: className, 'data-key': key, onclick: open }, label)
}

/** A dialog asking for a required reason, then sending `command` with it. */
export function openReasonDialog(context: IncidentContext, title: string, hint: string, submitLabel: string, command: string, extra: Record<string, unknown>, danger = false): void {
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
