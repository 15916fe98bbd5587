// Page chrome shared by every page: the top bar with the signed-in person,
// plus badges for severity and lifecycle status.

import { signOut } from './api'
import { h } from './dom'
import { SEVERITY_NAMES, STATUS_NAMES, type Me, type Severity, type Status } from './types'

const ACCESS_NAMES = { admin: 'Admin', responder: 'Responder', viewer: 'Viewer (read-only)' }

export function topBar(me: Me, ...middle: Array<Node | null>): HTMLElement {
  return h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'skip', href: '#main' }, 'Skip to content'),
    h('a', { class: 'brand', href: '/', 'data-nav': '' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, '◆'), 'Command Post'),
    h('div', { class: 'topbar-middle' }, ...middle),
    h(
      'div',
      { class: 'whoami' },
      h('span', { class: 'who-name' }, me.name),
      h('span', { class: `access access-${me.role}` }, ACCESS_NAMES[me.role]),
      h(
        'button',
        {
          type: 'button',
          class: 'link-button',
          onclick: () => {
            signOut()
            window.location.assign('/')
          },
        },
        'Sign out',
      ),
    ),
  )
}

/** `severity` is absent (`null`, or a missing field) until assessed. */
export function severityBadge(severity: Severity | null | undefined): HTMLElement {
  return severity
    ? h('span', { class: `badge sev sev-${severity}`, title: 'Severity' }, SEVERITY_NAMES[severity])
    : h('span', { class: 'badge sev sev-none', title: 'Severity' }, 'Severity not assessed')
}

export function statusBadge(status: Status): HTMLElement {
  return h('span', { class: `badge status status-${status}`, title: 'Lifecycle status' }, STATUS_NAMES[status])
}
