// What the parts of the incident page share: the context they read the
// state and send commands through, the page's lifetime, and the shape of a
// part.

import { h, replaceChildren } from '../dom'
import type { Permissions } from '../permissions'
import type { Actor, CommandBody, CommandName, IncidentState, Me } from '../types'

export interface IncidentContext {
  id: string
  me: Me
  /** The state shown now (read only once the incident has loaded). */
  state(): IncidentState
  perms(): Permissions
  /** Sends a command; throws ApiError on refusal. */
  run<N extends CommandName>(name: N, body: CommandBody<N>): Promise<void>
  /** People the app knows of (present now, role holders, responders, timeline). */
  people(): Array<Actor & { here: boolean }>
}

/** The page's lifetime, for parts that start async work, timers or views. */
export interface Lifetime {
  /** Whether the page was torn down (late async work must then do nothing). */
  stopped(): boolean
  /** Registers a teardown step, run when the page goes. */
  defer(cleanup: () => void): void
}

/** A part of the page: its root element, re-rendered from the state by `refresh`. */
export interface Part {
  readonly element: HTMLElement
  refresh(): void
}

/**
 * A section of the command panel. Its display part is re-rendered from the
 * state; its error line (and any form) are stable nodes that survive
 * re-renders, so a refusal shows next to the control that caused it.
 * `clearError` hides the last refusal (an accepted command makes it moot).
 */
export interface PanelSection extends Part {
  clearError(): void
}

/**
 * A panel section that re-renders `render(context, error)` on every refresh,
 * with a stable error line below it (and `extra` nodes, such as a form,
 * between the two, refreshed by `onRefresh`).
 */
export function panelSection(
  context: IncidentContext,
  render: (context: IncidentContext, error: HTMLElement) => HTMLElement,
  extra: (error: HTMLElement) => { nodes: HTMLElement[]; onRefresh?: () => void } = () => ({ nodes: [] }),
): PanelSection {
  const display = h('div')
  const error = errorLine()
  const { nodes, onRefresh } = extra(error)
  return {
    element: h('div', { class: 'section-wrap' }, display, ...nodes, error),
    refresh() {
      replaceChildren(display, render(context, error))
      onRefresh?.()
    },
    clearError() {
      error.hidden = true
    },
  }
}

/** The line where a refusal shows. */
export function errorLine(): HTMLParagraphElement {
  return h('p', { class: 'form-error', role: 'alert', hidden: true })
}
