// The HTTP API client and the signed-in token.
//
// The token arrives once as `?token=` (the admin URL the server prints, or a
// share link), is moved to sessionStorage and removed from the address bar,
// so it does not linger in history, bookmarks or screenshots. HTTP calls
// send it as `Authorization: Bearer`; the WebSocket and the event stream,
// which cannot set headers, pass it as `?token=`.

import type {
  Briefing,
  CommandBody,
  CommandName,
  CommandOutcome,
  CreateIncident,
  ErrorBody,
  Incident,
  IncidentState,
  Me,
  PeopleList,
  ShareLink,
  ShareRequest,
  TimelinePage,
} from './types'

const TOKEN_KEY = 'commandpost.token'

/** Moves a `token` query parameter into sessionStorage; returns the token to use. */
export function captureToken(): string | null {
  const url = new URL(window.location.href)
  const fromUrl = url.searchParams.get('token')
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl)
    url.searchParams.delete('token')
    history.replaceState(history.state, '', url.pathname + url.search + url.hash)
  }
  return sessionStorage.getItem(TOKEN_KEY)
}

export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? ''
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY)
}

/** A refusal or failure, with the server's message when it sent one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message)
  }
}

/** Listeners told when the server says the token is no longer valid. */
const unauthorisedListeners: Array<(error: ApiError) => void> = []
export function onUnauthorised(listener: (error: ApiError) => void): void {
  unauthorisedListeners.push(listener)
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${token()}` }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  let response: Response
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    })
  } catch {
    throw new ApiError('cannot reach the server (it may be restarting or you may be offline)', 0, 'network')
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`
    let code = 'http'
    try {
      // Any answer may come from a proxy rather than the server: read it defensively.
      const json = (await response.json()) as Partial<ErrorBody> | null
      if (json?.error?.message) message = json.error.message
      if (json?.error?.code) code = json.error.code
    } catch {
      // Not JSON: keep the status line.
    }
    const error = new ApiError(message, response.status, code)
    if (response.status === 401) unauthorisedListeners.forEach((listener) => listener(error))
    throw error
  }
  if (response.status === 204) return undefined as T
  const type = response.headers.get('content-type') ?? ''
  return (type.includes('json') ? await response.json() : await response.text()) as T
}

export const api = {
  me: () => request<Me>('GET', '/api/me'),
  /** Who commands may name (`GET /api/people?q=`): at most 50, sorted by name. */
  people: (q = '') => request<PeopleList>('GET', `/api/people?q=${encodeURIComponent(q)}`),
  incidents: () => request<Incident[]>('GET', '/api/incidents'),
  incident: (id: string) => request<Incident>('GET', `/api/incidents/${encodeURIComponent(id)}`),
  state: (id: string) => request<IncidentState>('GET', `/api/incidents/${encodeURIComponent(id)}/state`),
  timeline: (id: string, after: number) =>
    request<TimelinePage>('GET', `/api/incidents/${encodeURIComponent(id)}/timeline?after=${after}&limit=500`),
  briefing: (id: string) => request<Briefing>('GET', `/api/incidents/${encodeURIComponent(id)}/briefing`),
  postmortem: (id: string) => request<string>('GET', `/api/incidents/${encodeURIComponent(id)}/postmortem.md`),
  declare: (body: CreateIncident) => request<Incident>('POST', '/api/incidents', body),
  command: <N extends CommandName>(id: string, name: N, body: CommandBody<N>) =>
    request<CommandOutcome>('POST', `/api/incidents/${encodeURIComponent(id)}/commands/${name}`, body),
  share: (id: string, body: ShareRequest) =>
    request<ShareLink>('POST', `/api/incidents/${encodeURIComponent(id)}/share`, body),
}

/** The URL of the incident's live event stream (Server-Sent Events). */
export function eventsUrl(id: string, after: number): string {
  const params = new URLSearchParams({ token: token(), after: String(after) })
  return `/api/incidents/${encodeURIComponent(id)}/events?${params}`
}

/** Every event of the incident, oldest first (the timeline is paged). */
export async function allEvents(id: string): Promise<TimelinePage['events']> {
  const events: TimelinePage['events'] = []
  let after = 0
  for (;;) {
    const page = await api.timeline(id, after)
    events.push(...page.events)
    if (page.next_after == null || page.events.length === 0) return events
    after = page.next_after
  }
}
