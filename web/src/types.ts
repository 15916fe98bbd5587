// The wire types of the Command Post API, mirrored from the Rust crate
// `commandpost-shared` (shared/src/lib.rs and shared/src/incident.rs).
// Serialised names are snake_case; times are RFC 3339 strings in UTC.

export type AccessRole = 'admin' | 'responder' | 'viewer'
export type Severity = 'sev1' | 'sev2' | 'sev3' | 'sev4'
export type Role = 'incident_commander' | 'operations_lead' | 'communications_lead' | 'planning_lead'
export type Status = 'active' | 'mitigated' | 'resolved' | 'closed'

export const ROLES: Role[] = ['incident_commander', 'operations_lead', 'communications_lead', 'planning_lead']
export const SEVERITIES: Severity[] = ['sev1', 'sev2', 'sev3', 'sev4']

/** `GET /api/me`: the signed-in token's claims. */
export interface Me {
  sub: string
  name: string
  role: AccessRole
  incident?: string | null
  exp: number
}

export interface Actor {
  id: string
  name: string
}

export interface Criteria {
  needs_other_team: boolean
  customer_visible: boolean
  unresolved_after_hour: boolean
}

export interface Presence {
  editors: number
  viewers: number
}

export interface RoleView {
  role: Role
  holder: Actor
  delegated: boolean
  since: string
}

export interface Responder {
  actor: Actor
  assignment: string
  since: string
}

export interface RoleAssignment {
  role: Role | null
  assignment: string
  holder: Actor
  since: string
}

export interface Briefing {
  situation: string
  objectives: string[]
  current_actions: string[]
  organisation: RoleAssignment[]
  open_changes: string[]
  recent_timeline: string[]
  notes: string
}

export interface PendingHandoff {
  handoff: number
  role: Role
  from: Actor
  to: Actor
  briefing: Briefing
  offered_at: string
  expires_at: string
}

export interface Pin {
  summary: string
  next_update_by: string
  pinned_at: string
  pinned_by: Actor
  seq: number
  overdue: boolean
}

export interface ExitCriterion {
  criterion: number
  text: string
  met: boolean
}

export type ChangeState =
  | { type: 'open' }
  | { type: 'reverted'; by: Actor; at: string }
  | { type: 'waived'; by: Actor; at: string; reason: string }

export interface Change {
  change: number
  what: string
  why: string
  revert: string
  recorded_by: Actor
  recorded_at: string
  state: ChangeState
}

export interface IncidentState {
  title: string
  severity: Severity | null
  criteria: Criteria | null
  summary: string | null
  status: Status
  declared_at: string
  declared_by: Actor
  roles: RoleView[]
  responders: Responder[]
  pending_handoffs: PendingHandoff[]
  next_commander: Actor | null
  pin: Pin | null
  exit_criteria: ExitCriterion[]
  changes: Change[]
  last_seq: number
  updated_at: string
}

export interface Incident {
  id: string
  title: string
  created_at: string
  created_by: Actor
  presence: Presence
  state: IncidentState
}

export interface TimelinePage {
  events: IncidentEvent[]
  next_after: number | null
}

export interface ShareLink {
  token: string
  url: string
  user: string
  expires_at: string
}

interface EventBase {
  seq: number
  at: string
  actor: Actor
}

/** One event of the incident's log, flat: `{seq, at, actor, type, ...}`. */
export type IncidentEvent = EventBase &
  (
    | { type: 'declared'; title: string; severity: Severity | null; criteria: Criteria | null; summary: string | null; commander: Actor }
    | { type: 'severity_set'; severity: Severity }
    | { type: 'role_assigned'; role: Role; holder: Actor; previous: Actor | null }
    | { type: 'responder_added'; responder: Actor; assignment: string }
    | { type: 'responder_removed'; responder: string }
    | { type: 'handoff_offered'; handoff: number; role: Role; from: Actor; to: Actor; briefing: Briefing; expires_at: string }
    | { type: 'handoff_accepted'; handoff: number; role: Role; from: Actor; to: Actor }
    | { type: 'handoff_declined'; handoff: number; role: Role; from: Actor; to: Actor; reason: string | null }
    | { type: 'handoff_cancelled'; handoff: number; role: Role; from: Actor; to: Actor; reason: string | null }
    | { type: 'handoff_expired'; handoff: number; role: Role; from: Actor; to: Actor }
    | { type: 'role_assumed'; role: Role; holder: Actor; previous: Actor | null; reason: string; forced_by: Actor | null }
    | { type: 'next_commander_set'; next: Actor | null }
    | { type: 'status_pinned'; summary: string; next_update_by: string }
    | { type: 'update_overdue'; pin: number; due: string }
    | { type: 'status_changed'; from: Status; to: Status; override_reason: string | null }
    | { type: 'reopened'; from: Status; reason: string }
    | { type: 'exit_criterion_added'; criterion: number; text: string }
    | { type: 'exit_criterion_set'; criterion: number; met: boolean }
    | { type: 'change_recorded'; change: number; what: string; why: string; revert: string }
    | { type: 'change_reverted'; change: number }
    | { type: 'change_waived'; change: number; reason: string }
    | { type: 'note_posted'; text: string }
  )

export const ROLE_NAMES: Record<Role, string> = {
  incident_commander: 'Incident commander',
  operations_lead: 'Operations lead',
  communications_lead: 'Communications lead',
  planning_lead: 'Planning lead',
}

export const ROLE_AREAS: Record<Role, string> = {
  incident_commander: 'command',
  operations_lead: 'operations',
  communications_lead: 'communications',
  planning_lead: 'planning',
}

export const STATUS_NAMES: Record<Status, string> = {
  active: 'Active',
  mitigated: 'Mitigated',
  resolved: 'Resolved',
  closed: 'Closed',
}

export const SEVERITY_NAMES: Record<Severity, string> = {
  sev1: 'SEV1 · critical',
  sev2: 'SEV2 · major',
  sev3: 'SEV3 · minor',
  sev4: 'SEV4 · low',
}
