// The wire types of the Command Post API, as the rest of the app names them.
//
// They are not written by hand: each is an alias of a type that
// openapi-typescript generates (`npm run types`, into src/generated/api.ts)
// from openapi.json, the snapshot of the server's OpenAPI document, itself
// generated from the Rust types in `commandpost-shared` (shared/src/lib.rs
// and shared/src/incident.rs). A wire change the app does not follow fails
// `npm run typecheck` and `npm run build`; see "Wire types" in README.md.
// Serialised names are snake_case; times are RFC 3339 strings in UTC.
//
// Absent values: the server sends a Rust `None` as `null`, but the document
// (which also says what the server accepts) marks most such fields optional,
// so their types here are `T | null | undefined`: treat both as absent
// (`if (state.pin)`, `?? null`, `== null`), never test `=== null` alone.

import type { components, paths } from './generated/api'

type Schemas = components['schemas']

export type AccessRole = Schemas['AccessRole']
export type Severity = Schemas['Severity']
export type Role = Schemas['Role']
export type Status = Schemas['Status']

/** `GET /api/me`: the signed-in token's claims. */
export type Me = Schemas['TokenClaims']

export type Actor = Schemas['Actor']
export type PeopleList = Schemas['PeopleList']
export type Criteria = Schemas['Criteria']
export type Presence = Schemas['Presence']
export type RoleView = Schemas['RoleView']
export type Responder = Schemas['Responder']
export type RoleAssignment = Schemas['RoleAssignment']
export type Briefing = Schemas['Briefing']
export type PendingHandoff = Schemas['PendingHandoff']
export type Pin = Schemas['Pin']
export type ExitCriterion = Schemas['ExitCriterion']
export type ChangeState = Schemas['ChangeState']
export type Change = Schemas['Change']
export type IncidentState = Schemas['IncidentState']
export type Incident = Schemas['Incident']
export type TimelinePage = Schemas['TimelinePage']
export type ShareLink = Schemas['ShareLink']
export type ErrorBody = Schemas['ErrorBody']

/** One event of the incident's log, flat: `{seq, at, actor, type, ...}`. */
export type IncidentEvent = Schemas['Event']

/** `POST /api/incidents`: declaring an incident. */
export type CreateIncident = Schemas['CreateIncident']
/** `POST /api/incidents/{id}/share`. */
export type ShareRequest = Schemas['ShareRequest']
/** A command's answer: its events and the state after them. */
export type CommandOutcome = Schemas['CommandOutcome']

type CommandPath = Extract<keyof paths, `/api/incidents/{id}/commands/${string}`>
/** The commands sent as `POST /api/incidents/{id}/commands/{name}`. */
export type CommandName = CommandPath extends `/api/incidents/{id}/commands/${infer Name}` ? Name : never
/** The request body of command `N` (the command's fields, without `type`). */
export type CommandBody<N extends CommandName> =
  paths[`/api/incidents/{id}/commands/${N}`]['post']['requestBody']['content']['application/json']

// Client-side only (not on the wire): display names and lists of the enum
// values above. `Record<Role, string>` and friends fail the type check when
// the server adds a value the app does not name.

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

/** The keys of a record over every member of `T`, in the record's order. */
function everyKey<T extends string>(record: Record<T, unknown>): T[] {
  return Object.keys(record) as T[]
}

/** Every role, in display order. */
export const ROLES: Role[] = everyKey(ROLE_NAMES)
/** Every severity, most severe first. */
export const SEVERITIES: Severity[] = everyKey(SEVERITY_NAMES)

/** `value` (say, a `<select>`'s) as the member of `values` it names, or null when it names none. */
export function oneOf<T extends string>(values: readonly T[], value: string): T | null {
  return values.find((member) => member === value) ?? null
}
