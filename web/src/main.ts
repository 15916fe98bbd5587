// Entry point: signs in from the token, then routes between the incident
// list (`/`) and an incident page (`/incidents/INC-n`). Routing uses the
// History API; the server answers every non-API path with index.html.

import './style.css'
import { api, ApiError, captureToken, onUnauthorised, signOut } from './api'
import { h } from './dom'
import { renderIncidentList } from './list'
import { renderIncidentPage } from './incident'
import { navigate, setRouteHandler } from './router'
import type { Me } from './types'

const root = document.getElementById('app') as HTMLElement
let me: Me | null = null
/** Tears down the current page (sockets, timers). */
let teardown: (() => void) | null = null

function signInPage(problem?: string): void {
  teardown?.()
  teardown = null
  document.title = 'Sign in · Command Post'
  root.replaceChildren(
    h(
      'main',
      { class: 'signin', id: 'main' },
      h('h1', null, 'Command Post'),
      problem ? h('p', { class: 'notice warn', role: 'alert' }, problem) : null,
      h('p', { class: 'lead' }, 'You need a sign-in link to open Command Post.'),
      h(
        'ul',
        null,
        h('li', null, 'Ask the incident commander for a link to the incident (responder or viewer).'),
        h(
          'li',
          null,
          'Or, on the server, mint a token and open ',
          h('code', null, '/?token=…'),
          ':',
          h('pre', null, h('code', null, 'commandpost token --role responder --name "Your Name"')),
        ),
        h('li', null, 'The server prints an admin URL with a token when it starts.'),
      ),
    ),
  )
}


async function route(): Promise<void> {
  if (!me) return
  teardown?.()
  teardown = null
  window.scrollTo(0, 0)
  const path = window.location.pathname
  const match = /^\/incidents\/(INC-[1-9][0-9]*)\/?$/.exec(path)
  if (match) {
    teardown = renderIncidentPage(root, me, match[1])
  } else if (path === '/' || path === '') {
    if (me.incident) {
      // A link limited to one incident opens that incident.
      navigate(`/incidents/${me.incident}`, true)
      return
    }
    teardown = renderIncidentList(root, me)
  } else {
    document.title = 'Not found · Command Post'
    root.replaceChildren(
      h('main', { class: 'page', id: 'main' }, h('h1', null, 'Page not found'), h('p', null, h('a', { href: '/', 'data-nav': '' }, 'Back to the incident list'))),
    )
  }
}

// Same-origin links marked data-nav navigate without reloading the page.
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return
  const link = (event.target as Element | null)?.closest?.('a[data-nav]')
  if (!(link instanceof HTMLAnchorElement)) return
  event.preventDefault()
  navigate(link.pathname)
})
window.addEventListener('popstate', () => void route())
setRouteHandler(() => void route())

onUnauthorised(() => {
  signOut()
  me = null
  signInPage('Your sign-in link is no longer valid (expired, revoked or mistyped). Ask for a new one.')
})

async function boot(): Promise<void> {
  const token = captureToken()
  if (!token) {
    signInPage()
    return
  }
  try {
    me = await api.me()
  } catch (caught) {
    if (caught instanceof ApiError && caught.status === 401) return // handled by onUnauthorised
    root.replaceChildren(
      h(
        'main',
        { class: 'signin', id: 'main' },
        h('h1', null, 'Command Post'),
        h('p', { class: 'notice warn', role: 'alert' }, `Cannot load your account: ${caught instanceof Error ? caught.message : String(caught)}`),
        h('button', { type: 'button', class: 'primary', onclick: () => void boot() }, 'Try again'),
      ),
    )
    return
  }
  await route()
}

void boot()
