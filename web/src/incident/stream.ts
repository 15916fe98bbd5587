// The live event stream (Server-Sent Events on
// `/api/incidents/{id}/events?after=<last seq>`). The browser resumes it by
// itself with `Last-Event-ID`; when it gives up (e.g. an error answer) the
// stream starts again from the last event seen.

import { eventsUrl } from '../api'
import type { IncidentEvent, Presence } from '../types'
import type { Lifetime } from './context'

export interface EventStreamOptions {
  id: string
  /** The last sequence number seen, to resume after. */
  after(): number
  /** The stream (re)opened. */
  onOpen(): void
  onEvent(event: IncidentEvent): void
  /** The document's connection counts (`event: presence`): on open and whenever they change. */
  onPresence(presence: Presence): void
  /** The stream dropped (the browser may be retrying). */
  onDown(): void
}

export interface EventStream {
  /** Open now. */
  isOpen(): boolean
  /** Was open at some point. */
  everOpen(): boolean
  /** Starts again if the browser gave up (e.g. when the network comes back). */
  reopenIfClosed(): void
  close(): void
}

export function openEventStream(options: EventStreamOptions, life: Lifetime): EventStream {
  let source: EventSource | null = null
  let open = false
  let everOpen = false

  function connect(): void {
    source?.close()
    const es = new EventSource(eventsUrl(options.id, options.after()))
    source = es
    es.onopen = () => {
      if (source !== es) return
      open = true
      everOpen = true
      options.onOpen()
    }
    es.onmessage = (message: MessageEvent<string>) => {
      if (source !== es) return
      let event: IncidentEvent
      try {
        event = JSON.parse(message.data) as IncidentEvent
      } catch {
        return
      }
      options.onEvent(event)
    }
    es.addEventListener('presence', (message: MessageEvent<string>) => {
      if (source !== es) return
      try {
        options.onPresence(JSON.parse(message.data) as Presence)
      } catch {
        // ignore a malformed message
      }
    })
    es.onerror = () => {
      if (source !== es) return
      open = false
      options.onDown()
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up: start again from the last seen event.
        const retry = window.setTimeout(() => {
          if (!life.stopped() && source === es) connect()
        }, 3000)
        life.defer(() => window.clearTimeout(retry))
      }
    }
  }

  connect()
  return {
    isOpen: () => open,
    everOpen: () => everOpen,
    reopenIfClosed() {
      if (source && source.readyState === EventSource.CLOSED) connect()
    },
    close() {
      source?.close()
      source = null
    },
  }
}
