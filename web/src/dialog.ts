// Modal forms built on <dialog>: keyboard friendly (focus moves in, Escape
// closes, focus returns to the opener), and stable while live updates
// re-render the page behind them.

import { ApiError } from './api'
import { h } from './dom'

export interface FormDialogOptions {
  title: string
  /** The fields and any explanation. */
  body: Array<Node | null>
  submitLabel: string
  /** Danger styling for irreversible or weighty actions. */
  danger?: boolean
  /** Runs the action; throw (ApiError or Error) to show a message and keep the dialog open. */
  onSubmit: (form: HTMLFormElement) => Promise<void | Node>
  /** Extra class on the dialog. */
  className?: string
}

/** Opens a modal form. The returned promise settles when it closes. */
export function openFormDialog(options: FormDialogOptions): HTMLDialogElement {
  const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true })
  const submit = h('button', { type: 'submit', class: options.danger ? 'danger' : 'primary' }, options.submitLabel)
  const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel')
  const titleId = `dlg-${Math.random().toString(36).slice(2)}`
  const form = h(
    'form',
    { method: 'dialog', novalidate: false },
    h('h2', { id: titleId }, options.title),
    ...options.body,
    error,
    h('div', { class: 'actions' }, submit, cancel),
  )
  const dialog = h('dialog', { class: `form-dialog ${options.className ?? ''}`, 'aria-labelledby': titleId }, form)
  cancel.addEventListener('click', () => dialog.close())
  const openerKey = opener?.dataset.key
  dialog.addEventListener('close', () => {
    dialog.remove()
    // Focus returns to the control that opened the dialog, or to its
    // re-rendered twin when a live update replaced it meanwhile.
    const target = opener?.isConnected ? opener : openerKey ? document.querySelector<HTMLElement>(`[data-key="${CSS.escape(openerKey)}"]`) : null
    target?.focus()
  })
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    if (!form.reportValidity()) return
    error.hidden = true
    submit.disabled = true
    submit.setAttribute('aria-busy', 'true')
    try {
      const result = await options.onSubmit(form)
      if (result instanceof Node) {
        // Show a result in place of the form (e.g. a share link).
        form.replaceChildren(
          h('h2', { id: titleId }, options.title),
          result,
          h('div', { class: 'actions' }, h('button', { type: 'button', class: 'primary', onclick: () => dialog.close() }, 'Done')),
        )
        form.querySelector<HTMLElement>('[data-autofocus]')?.focus()
      } else {
        dialog.close()
      }
    } catch (caught) {
      error.textContent = messageOf(caught)
      error.hidden = false
    } finally {
      submit.disabled = false
      submit.removeAttribute('aria-busy')
    }
  })
  document.body.appendChild(dialog)
  dialog.showModal()
  const first = form.querySelector<HTMLElement>('[autofocus], input:not([type=hidden]):not([disabled]), textarea, select')
  first?.focus()
  return dialog
}

export function messageOf(caught: unknown): string {
  if (caught instanceof ApiError) return `Refused: ${caught.message}`
  if (caught instanceof Error) return caught.message
  return String(caught)
}

/**
 * Runs an action from a button and shows a refusal next to it (never
 * silently). `errorSlot` is where the message goes.
 */
export async function runAction(button: HTMLButtonElement | null, errorSlot: HTMLElement, action: () => Promise<unknown>): Promise<void> {
  errorSlot.hidden = true
  errorSlot.textContent = ''
  if (button) {
    button.disabled = true
    button.setAttribute('aria-busy', 'true')
  }
  try {
    await action()
  } catch (caught) {
    errorSlot.textContent = messageOf(caught)
    errorSlot.hidden = false
  } finally {
    if (button && button.isConnected) {
      button.disabled = false
      button.removeAttribute('aria-busy')
    }
  }
}
