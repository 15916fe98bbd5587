// Buttons and the reason dialog shared by the command panel's sections.

import { openFormDialog, runAction } from '../dialog'
import { field, h } from '../dom'

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

/** A dialog asking for a required reason, then sending it with `send` (a command). */
export function openReasonDialog(title: string, hint: string, submitLabel: string, send: (reason: string) => Promise<void>, danger = false): void {
  const reason = h('textarea', { rows: 2, required: true })
  openFormDialog({
    title,
    submitLabel,
    danger,
    body: [h('p', { class: 'hint' }, hint), field('Reason (required)', reason)],
    onSubmit: async () => {
      await send(reason.value)
    },
  })
}
