// The live incident document: a Yjs doc synced over the server's
// y-websocket endpoint, the CodeMirror editor bound to it (responders), or a
// sanitised Markdown preview (viewers), plus the two states the page always
// shows: the connection and whether local edits are saved.
//
// "Saved" uses the server's opt-in acknowledgement (README: "Saved
// acknowledgements"): after every (re)connect the client sends `[100, 0]`;
// the server then answers `[100, len, varuint n]` once the first n
// document-changing messages this client sent on that connection (sync
// step 2 and updates) are durable. We count those messages by wrapping
// `send` on each new socket; the provider opens a new WebSocket for every
// connection, so the count and the acknowledgement are per socket.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import * as authProtocol from 'y-protocols/auth'

import type { Me } from './types'

/** Outer message type of the saved acknowledgement (shared/src/lib.rs `wire::MSG_SAVED`). */
const MSG_SAVED = 100
const MSG_AUTH = 2

/**
 * Documents longer than this many characters (UTF-16 code units; about
 * 200 KB of plain text) count as large: viewers get them as plain text
 * (preview.ts), responders edit them without Markdown highlighting
 * (editor.ts). Incident write-ups stay far below it (a long postmortem is
 * 30–60 kB); past it are pasted logs and dumps, which gain nothing from
 * Markdown, and where the renderer's and the parser's cost (tens to
 * hundreds of milliseconds per render or keystroke) starts to show.
 */
export const LARGE_DOCUMENT_CHARS = 200_000

export type LinkState = 'connecting' | 'syncing' | 'connected' | 'reconnecting' | 'offline' | 'stopped'
export type SaveState = 'saved' | 'saving' | 'unsaved' | 'readonly'

export interface DocStatus {
  link: LinkState
  save: SaveState
  /** Why the server stopped the connection for good (close reason), if it did. */
  stoppedReason: string | null
}

export interface PresentUser {
  clientId: number
  id: string
  name: string
  color: string
  self: boolean
}

/** High-contrast colours for people's cursors; picked by user id. */
const PALETTE: Array<[string, string]> = [
  ['#1d4ed8', '#1d4ed833'],
  ['#b91c1c', '#b91c1c33'],
  ['#047857', '#04785733'],
  ['#7c3aed', '#7c3aed33'],
  ['#b45309', '#b4530933'],
  ['#0e7490', '#0e749033'],
  ['#be185d', '#be185d33'],
  ['#4d7c0f', '#4d7c0f33'],
]

export function colourFor(id: string): [string, string] {
  let hash = 0
  for (let i = 0; i < id.length; i++) hash = (hash * 31 + id.charCodeAt(i)) >>> 0
  return PALETTE[hash % PALETTE.length]
}

/** Longest name shown for someone in the document (awareness is client-written). */
const MAX_NAME = 100

export interface AwarenessUser {
  /** The user id (the server stamps it from the token), or null when the state has none. */
  id: string | null
  /** The display name (the server stamps it from the token), or null when the state has none. */
  name: string | null
  /** Caret colours, from the user id; never the colour a client asked for (it goes into style attributes). */
  color: string
  colorLight: string
}

/** Reads `state.user` of an awareness state defensively: any client can write anything there. */
export function awarenessUser(state: unknown): AwarenessUser {
  const user = typeof state === 'object' && state !== null ? (state as { user?: unknown }).user : undefined
  const fields = typeof user === 'object' && user !== null ? (user as { id?: unknown; name?: unknown }) : {}
  const id = typeof fields.id === 'string' && fields.id.trim() !== '' ? fields.id : null
  const rawName = typeof fields.name === 'string' ? fields.name.replace(/\s+/g, ' ').trim() : ''
  const name = rawName === '' ? null : rawName.length > MAX_NAME ? `${rawName.slice(0, MAX_NAME - 1)}…` : rawName
  const [color, colorLight] = id === null ? ['#64748b', '#64748b33'] : colourFor(id)
  return { id, name, color, colorLight }
}

export class DocSession {
  readonly doc = new Y.Doc()
  readonly text: Y.Text
  readonly provider: WebsocketProvider
  private readonly listeners = new Set<() => void>()
  private readonly readOnly: boolean

  /** Document-changing frames sent on the current socket. */
  private sent = 0
  /** The server's latest acknowledgement on the current socket. */
  private acked = 0
  /** The sent count at which this socket's sync step 2 went out (0: not yet). */
  private syncStep2At = 0
  /** Local edits that no socket has had acknowledged yet (made offline, or lost with a socket). */
  private pendingOffline = false
  private everConnected = false
  private stoppedReason: string | null = null

  constructor(
    readonly incidentId: string,
    token: string,
    me: Me,
  ) {
    this.readOnly = me.role === 'viewer'
    this.text = this.doc.getText('body')
    const serverUrl = window.location.origin.replace(/^http/, 'ws') + '/ws'
    this.provider = new WebsocketProvider(serverUrl, incidentId, this.doc, {
      params: { token },
      // The server is the source of truth; tabs do not sync behind its back.
      disableBc: true,
      // The provider drops a connection that received nothing for 30 s. The
      // server does not echo a client's own awareness back (the reference
      // y-websocket server does), so a lone responder or viewer would
      // reconnect every 30 s; a periodic sync step 1 gets a small answer.
      resyncInterval: 20_000,
    })
    const [color, colorLight] = colourFor(me.sub)
    this.provider.awareness.setLocalStateField('user', { id: me.sub, name: me.name, color, colorLight })

    this.provider.messageHandlers[MSG_SAVED] = (_encoder, decoder) => {
      // [100, varUint8Array(varuint n)]; nothing is written back.
      const payload = decoding.readVarUint8Array(decoder)
      const n = decoding.readVarUint(decoding.createDecoder(payload))
      if (n > this.acked) this.acked = n
      if (this.syncStep2At > 0 && this.acked >= this.syncStep2At && this.acked >= this.sent) this.pendingOffline = false
      this.emit()
    }
    this.provider.messageHandlers[MSG_AUTH] = (_encoder, decoder, provider) => {
      // The server answers a viewer's sync step 2 with "permission denied":
      // expected for read-only access, so it is not logged as a problem.
      authProtocol.readAuthMessage(decoder, provider.doc, (_doc, reason) => {
        if (!this.readOnly) console.warn(`the server refused an edit: ${reason}`)
      })
    }

    this.provider.on('status', ({ status }) => {
      if (status === 'connected') this.onSocketOpen()
      if (status === 'disconnected') this.onSocketClosed()
      this.emit()
    })
    this.provider.on('sync', () => this.emit())
    this.provider.on('closed', ({ code, reason }) => {
      this.stoppedReason = `${reason || 'the server closed the connection'} (code ${code})`
      this.emit()
    })
    this.doc.on('update', (_update: Uint8Array, origin: unknown) => {
      if (origin === this.provider) return
      // A local edit: sent now if connected (and counted), else kept for the next sync.
      if (!this.provider.wsconnected) this.pendingOffline = true
      this.emit()
    })
    window.addEventListener('online', this.emitBound)
    window.addEventListener('offline', this.emitBound)
  }

  private emitBound = (): void => this.emit()

  private onSocketOpen(): void {
    const ws = this.provider.ws
    if (!ws) return
    this.everConnected = true
    this.stoppedReason = null
    this.sent = 0
    this.acked = 0
    this.syncStep2At = 0
    if (this.readOnly) return
    const send = ws.send.bind(ws)
    ws.send = (data: string | ArrayBufferLike | Blob | ArrayBufferView) => {
      const bytes = data instanceof Uint8Array ? data : data instanceof ArrayBuffer ? new Uint8Array(data) : null
      if (bytes && bytes.length >= 2 && bytes[0] === 0 && (bytes[1] === 1 || bytes[1] === 2)) {
        this.sent += 1
        if (bytes[1] === 1 && this.syncStep2At === 0) this.syncStep2At = this.sent
      }
      send(data)
      this.emit()
    }
    send(new Uint8Array([MSG_SAVED, 0]))
  }

  private onSocketClosed(): void {
    // Whatever this socket sent but the server did not confirm is resent by
    // the next sync step 2; until then it is unsaved.
    if (this.acked < this.sent) this.pendingOffline = true
    this.sent = 0
    this.acked = 0
    this.syncStep2At = 0
  }

  status(): DocStatus {
    let link: LinkState
    if (this.stoppedReason) link = 'stopped'
    else if (!navigator.onLine && !this.provider.wsconnected) link = 'offline'
    else if (this.provider.wsconnected) link = this.provider.synced ? 'connected' : 'syncing'
    else link = this.everConnected ? 'reconnecting' : 'connecting'

    let save: SaveState
    if (this.readOnly) save = 'readonly'
    else if (!this.provider.wsconnected) save = this.pendingOffline ? 'unsaved' : 'saved'
    else if (this.pendingOffline || this.syncStep2At === 0 || this.acked < this.sent) save = 'saving'
    else save = 'saved'
    return { link, save, stoppedReason: this.stoppedReason }
  }

  /** Whether the document is live: connected and in sync. */
  isLive(): boolean {
    return this.provider.wsconnected && this.provider.synced
  }

  /**
   * People with the document open (awareness), yourself first, one entry
   * per user id. Only states with a `user.id` count: the server stamps
   * `user.id` and `user.name` of every awareness state with the
   * connection's token subject and display name, so those two are not
   * what a client claims. States without an id (another kind of client)
   * still show as carets in the editor, but never as people to pick.
   */
  present(): PresentUser[] {
    const byId = new Map<string, PresentUser>()
    for (const [clientId, state] of this.provider.awareness.getStates()) {
      const user = awarenessUser(state)
      if (user.id === null) continue
      const self = clientId === this.doc.clientID
      // The same person in several tabs is listed once (as "you" if one of them is this page).
      if (byId.has(user.id) && !self) continue
      byId.set(user.id, { clientId, id: user.id, name: user.name ?? user.id, color: user.color, self })
    }
    return [...byId.values()].sort((a, b) => Number(b.self) - Number(a.self) || a.name.localeCompare(b.name))
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  onAwareness(listener: () => void): void {
    this.provider.awareness.on('change', listener)
  }

  private emit(): void {
    for (const listener of this.listeners) listener()
  }

  destroy(): void {
    window.removeEventListener('online', this.emitBound)
    window.removeEventListener('offline', this.emitBound)
    this.listeners.clear()
    this.provider.awareness.setLocalState(null)
    this.provider.destroy()
    this.doc.destroy()
  }
}
