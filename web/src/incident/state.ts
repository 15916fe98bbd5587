// The incident's sidecar state, only ever the server's: a state is applied
// only if it is not older than the one shown (`last_seq`), and refetches of
// `GET /api/incidents/{id}/state` are coalesced (one at a time, plus one
// more if asked meanwhile).

import { api } from '../api'
import type { IncidentState } from '../types'
import type { Lifetime } from './context'

export interface StateStore {
  /** The state shown, or null before the incident has loaded. */
  current(): IncidentState | null
  /** When the state shown was applied (for the stale notice). */
  appliedAt(): Date
  /** Applies a state unless it is older than the one shown (`force`: always). */
  apply(next: IncidentState, force?: boolean): void
  /** Refetches the state; failures show through the stale notice. */
  refetch(): Promise<void>
}

export function createStateStore(id: string, life: Lifetime, onApplied: () => void): StateStore {
  let state: IncidentState | null = null
  let appliedAt = new Date()
  let refreshing = false
  let refreshAgain = false

  function apply(next: IncidentState, force = false): void {
    if (!force && state && next.last_seq < state.last_seq) return
    state = next
    appliedAt = new Date()
    onApplied()
  }

  async function refetch(): Promise<void> {
    if (refreshing) {
      refreshAgain = true
      return
    }
    refreshing = true
    try {
      do {
        refreshAgain = false
        const next = await api.state(id)
        if (life.stopped()) return
        apply(next)
      } while (refreshAgain)
    } catch {
      // Shown through the stale notice; the next event or reconnect retries.
    } finally {
      refreshing = false
    }
  }

  return { current: () => state, appliedAt: () => appliedAt, apply, refetch }
}
