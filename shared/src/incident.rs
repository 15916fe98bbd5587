//! Wire types of the command sidecar: the commands clients send, the events
//! the state machine records, and the incident state that is the fold of
//! those events.
//!
//! The rules that decide which command becomes which events live in
//! [`crate::machine`]; this module only defines shapes, so that the server,
//! the CLI and the web client agree on them by construction.
//!
//! Conventions kept here:
//! - every serialised name is `snake_case`; commands and events are
//!   internally tagged with `"type"`;
//! - ids of things created by an event ([`HandoffId`], [`ChangeId`],
//!   [`CriterionId`]) equal the [`EventSeq`] of that event, so they are
//!   deterministic and unique within an incident;
//! - an [`EventKind`] never has a field named `seq`, `at`, `actor` or `type`,
//!   because [`Event`] flattens it next to those.

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{AccessRole, Actor, UserId};

/// The user id reserved for the server itself (timer ticks).
///
/// The server must never issue or accept a token with this subject, because a
/// caller with this id and admin access is treated as the server's timer.
pub const SYSTEM_USER_ID: &str = "system";

/// How bad an incident is; `Sev1` is the worst.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Critical: major customer impact, all hands.
    Sev1,
    /// Major: significant impact or risk.
    Sev2,
    /// Minor: limited impact.
    Sev3,
    /// Low: little or no customer impact.
    Sev4,
}

impl Severity {
    /// Every severity, worst first.
    pub const ALL: [Severity; 4] = [
        Severity::Sev1,
        Severity::Sev2,
        Severity::Sev3,
        Severity::Sev4,
    ];

    /// The serialised name (`sev1` .. `sev4`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Sev1 => "sev1",
            Severity::Sev2 => "sev2",
            Severity::Sev3 => "sev3",
            Severity::Sev4 => "sev4",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answers to the three "when to declare an incident" questions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Criteria {
    /// Is a second team needed to fix the problem?
    pub needs_other_team: bool,
    /// Is the outage visible to customers?
    pub customer_visible: bool,
    /// Is the issue still unsolved after an hour of concentrated analysis?
    pub unresolved_after_hour: bool,
}

/// One of the four roles of the incident command system.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds the big picture and every role that is not delegated.
    IncidentCommander,
    /// Works the problem; the only role that changes production.
    OperationsLead,
    /// The public face of the response: status updates.
    CommunicationsLead,
    /// Longer-term support: the revert register and the next commander.
    PlanningLead,
}

impl Role {
    /// Every role, commander first. [`IncidentState::roles`] uses this order.
    pub const ALL: [Role; 4] = [
        Role::IncidentCommander,
        Role::OperationsLead,
        Role::CommunicationsLead,
        Role::PlanningLead,
    ];

    /// The role's position in [`Role::ALL`].
    pub fn index(self) -> usize {
        match self {
            Role::IncidentCommander => 0,
            Role::OperationsLead => 1,
            Role::CommunicationsLead => 2,
            Role::PlanningLead => 3,
        }
    }

    /// The area the role owns, as used in sentences such as "the incident
    /// commander holds operations while it is not delegated".
    pub fn area(self) -> &'static str {
        match self {
            Role::IncidentCommander => "command",
            Role::OperationsLead => "operations",
            Role::CommunicationsLead => "communications",
            Role::PlanningLead => "planning",
        }
    }

    /// The lowercase display name ("incident commander", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::IncidentCommander => "incident commander",
            Role::OperationsLead => "operations lead",
            Role::CommunicationsLead => "communications lead",
            Role::PlanningLead => "planning lead",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an incident is in its lifecycle.
///
/// `active → mitigated → resolved → closed`; see [`crate::machine`] for the
/// allowed moves and their gates.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The response is under way.
    Active,
    /// The bleeding has stopped; service is restored or worked around.
    Mitigated,
    /// The exit criteria are met (or overridden with a reason).
    Resolved,
    /// Every recorded change is reverted or waived; the record is final
    /// until reopened.
    Closed,
}

impl Status {
    /// The serialised name (`active`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Mitigated => "mitigated",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! sequence_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

sequence_id!(
    /// The per-incident sequence number of an event: 1 for the declaration,
    /// then consecutive. `EventSeq(0)` means "no event yet".
    EventSeq
);
sequence_id!(
    /// A handoff offer, numbered by the seq of its `handoff_offered` event.
    HandoffId
);
sequence_id!(
    /// A recorded production change, numbered by the seq of its
    /// `change_recorded` event.
    ChangeId
);
sequence_id!(
    /// An exit criterion, numbered by the seq of its `exit_criterion_added`
    /// event.
    CriterionId
);

/// Who issues a command: the person (from the token) and their access role.
///
/// Not serialised: the server builds it from the verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The person, recorded as the actor of every resulting event.
    pub actor: Actor,
    /// What their token lets them do.
    pub access: AccessRole,
}

impl Caller {
    /// A caller acting as `actor` with `access`.
    pub fn new(actor: Actor, access: AccessRole) -> Self {
        Self { actor, access }
    }

    /// The server itself ("Command Post", id [`SYSTEM_USER_ID`], admin
    /// access). It may only send [`Command::Tick`].
    pub fn system() -> Self {
        Self {
            actor: Actor {
                id: UserId(SYSTEM_USER_ID.to_owned()),
                name: "Command Post".to_owned(),
            },
            access: AccessRole::Admin,
        }
    }

    /// Whether this is the server's own caller (see [`Caller::system`]).
    pub fn is_system(&self) -> bool {
        self.access == AccessRole::Admin && self.actor.id.0 == SYSTEM_USER_ID
    }
}

/// One line of a briefing's organisation: who does what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct RoleAssignment {
    /// The role, or `None` for a responder with a free-text assignment.
    pub role: Option<Role>,
    /// The role's name (noting when the commander holds it because it is not
    /// delegated), or the responder's assignment.
    pub assignment: String,
    /// Who does it.
    pub holder: Actor,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// A handoff briefing in the shape of an ICS 201 incident briefing,
/// pre-filled from the incident state when a handoff is offered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Briefing {
    /// The latest pinned summary, else the declaration summary, else the
    /// title.
    pub situation: String,
    /// The exit criteria as a checklist: `"[x] ..."` met, `"[ ] ..."` not.
    pub objectives: Vec<String>,
    /// The last few notes, as `"HH:MM UTC Name: text"`.
    pub current_actions: Vec<String>,
    /// The effective holders of all four roles, then the responders.
    pub organisation: Vec<RoleAssignment>,
    /// Changes neither reverted nor waived, as `"what (revert: how)"`.
    pub open_changes: Vec<String>,
    /// The last events, as `"HH:MM UTC Name: description"`.
    pub recent_timeline: Vec<String>,
    /// Free text from whoever offers the handoff.
    pub notes: String,
}

/// What a client asks the command sidecar to do.
///
/// Serialised as `{"type": "assign_role", "role": ..., "to": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Declares the incident; the caller becomes the first commander.
    Declare {
        /// A short title, 1 to 200 characters after trimming.
        #[schemars(length(max = crate::limits::TITLE_CHARS))]
        title: String,
        /// The first severity assessment, if already known.
        #[serde(default)]
        severity: Option<Severity>,
        /// The answers to the declaration questions.
        #[serde(default)]
        criteria: Option<Criteria>,
        /// What is known so far.
        #[serde(default)]
        #[schemars(length(max = crate::limits::SUMMARY_CHARS))]
        summary: Option<String>,
    },
    /// Sets the severity (commander only).
    SetSeverity {
        /// The new severity.
        severity: Severity,
    },
    /// Delegates a role that nobody but the commander holds (commander only).
    /// A role already delegated to someone else changes hands by handoff.
    AssignRole {
        /// The role; never the commander role.
        role: Role,
        /// The new holder.
        to: Actor,
    },
    /// Adds a responder with a free-text assignment, or changes the
    /// assignment of one already listed (commander or a role lead).
    AddResponder {
        /// The person.
        responder: Actor,
        /// What they work on.
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        assignment: String,
    },
    /// Removes a responder from the list (commander or a role lead).
    RemoveResponder {
        /// The person's id.
        responder: UserId,
    },
    /// Offers a role to someone, with a briefing (the holder of the role, or
    /// the commander for any role; only the commander offers command).
    OfferHandoff {
        /// The role offered.
        role: Role,
        /// The incoming holder.
        to: Actor,
        /// Free text for the briefing.
        #[serde(default)]
        #[schemars(length(max = crate::limits::NOTE_CHARS))]
        notes: String,
    },
    /// Accepts a pending offer (only the person it names).
    AcceptHandoff {
        /// The offer.
        handoff: HandoffId,
    },
    /// Declines a pending offer (only the person it names).
    DeclineHandoff {
        /// The offer.
        handoff: HandoffId,
        /// Why, optionally.
        #[serde(default)]
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        reason: Option<String>,
    },
    /// Withdraws a pending offer (the offerer or the commander).
    CancelHandoff {
        /// The offer.
        handoff: HandoffId,
    },
    /// Emergency: an admin takes a role without a handoff.
    AssumeRole {
        /// The role taken.
        role: Role,
        /// Why (mandatory).
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        reason: String,
    },
    /// Emergency: an admin gives a role to someone without a handoff.
    ForceAssignRole {
        /// The role.
        role: Role,
        /// The new holder.
        to: Actor,
        /// Why (mandatory).
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        reason: String,
    },
    /// Names (or clears) the planned next commander (commander or planning
    /// lead).
    SetNextCommander {
        /// The next commander, or `None` to clear.
        #[serde(default)]
        next: Option<Actor>,
    },
    /// Pins a status summary with the time the next one is due (commander or
    /// communications lead), or, once the incident is mitigated or later, a
    /// final update with no next deadline.
    PinStatus {
        /// The summary everyone sees.
        #[schemars(length(max = crate::limits::SUMMARY_CHARS))]
        summary: String,
        /// When the next update is due; must be after now. Required unless
        /// `final`, and absent when `final`.
        #[serde(default)]
        next_update_by: Option<DateTime<Utc>>,
        /// This is the last update: no next one is due, and no overdue
        /// reminder is armed. Allowed only once the incident is mitigated,
        /// resolved or closed.
        #[serde(default, rename = "final")]
        is_final: bool,
    },
    /// Sets when the impact started, which may be before the declaration
    /// (commander only; not in the future).
    SetImpactStart {
        /// When the impact started (UTC).
        at: DateTime<Utc>,
    },
    /// Moves the lifecycle status forward (commander only).
    SetStatus {
        /// The new status.
        status: Status,
        /// Resolve although exit criteria are unmet, and why.
        #[serde(default)]
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        override_reason: Option<String>,
    },
    /// Reopens a resolved or closed incident (commander or admin).
    Reopen {
        /// Why (mandatory).
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        reason: String,
    },
    /// Adds an exit criterion, unmet (commander only).
    AddExitCriterion {
        /// What must be true to resolve.
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        text: String,
    },
    /// Marks an exit criterion met or unmet (commander only).
    SetExitCriterion {
        /// The criterion.
        criterion: CriterionId,
        /// Whether it is met.
        met: bool,
    },
    /// Records a production change in the revert register (operations lead,
    /// or the commander while operations is not delegated).
    RecordChange {
        /// What was changed.
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        what: String,
        /// Why.
        #[serde(default)]
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        why: String,
        /// How to revert it.
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        revert: String,
    },
    /// Marks a change reverted (planning lead, or the commander while
    /// planning is not delegated).
    MarkChangeReverted {
        /// The change.
        change: ChangeId,
    },
    /// Keeps a change deliberately (planning lead, or the commander while
    /// planning is not delegated).
    WaiveChange {
        /// The change.
        change: ChangeId,
        /// Why it stays (mandatory).
        #[schemars(length(max = crate::limits::SHORT_TEXT_CHARS))]
        reason: String,
    },
    /// Posts a short note to the command-post log (any responder or admin).
    PostNote {
        /// The note.
        #[schemars(length(max = crate::limits::NOTE_CHARS))]
        text: String,
    },
    /// The server's timer: expires due offers and reports a missed status
    /// update. Only [`Caller::system`] may send it.
    Tick,
}

impl Command {
    /// The serialised tag, e.g. `"assign_role"`; handy for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Declare { .. } => "declare",
            Command::SetSeverity { .. } => "set_severity",
            Command::AssignRole { .. } => "assign_role",
            Command::AddResponder { .. } => "add_responder",
            Command::RemoveResponder { .. } => "remove_responder",
            Command::OfferHandoff { .. } => "offer_handoff",
            Command::AcceptHandoff { .. } => "accept_handoff",
            Command::DeclineHandoff { .. } => "decline_handoff",
            Command::CancelHandoff { .. } => "cancel_handoff",
            Command::AssumeRole { .. } => "assume_role",
            Command::ForceAssignRole { .. } => "force_assign_role",
            Command::SetNextCommander { .. } => "set_next_commander",
            Command::PinStatus { .. } => "pin_status",
            Command::SetImpactStart { .. } => "set_impact_start",
            Command::SetStatus { .. } => "set_status",
            Command::Reopen { .. } => "reopen",
            Command::AddExitCriterion { .. } => "add_exit_criterion",
            Command::SetExitCriterion { .. } => "set_exit_criterion",
            Command::RecordChange { .. } => "record_change",
            Command::MarkChangeReverted { .. } => "mark_change_reverted",
            Command::WaiveChange { .. } => "waive_change",
            Command::PostNote { .. } => "post_note",
            Command::Tick => "tick",
        }
    }
}

/// What happened: one accepted fact on the incident's timeline.
///
/// Serialised flattened into [`Event`] with a `"type"` tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The incident was declared; `commander` is its first commander.
    Declared {
        /// The title.
        title: String,
        /// The first severity, if assessed.
        severity: Option<Severity>,
        /// The declaration answers.
        criteria: Option<Criteria>,
        /// What was known.
        summary: Option<String>,
        /// The declarer, now commander.
        commander: Actor,
    },
    /// The severity changed.
    SeveritySet {
        /// The new severity.
        severity: Severity,
    },
    /// A role was delegated directly by the commander.
    RoleAssigned {
        /// The role.
        role: Role,
        /// The new holder.
        holder: Actor,
        /// The previous explicit holder; `None` when the commander held it
        /// because it was not delegated.
        previous: Option<Actor>,
    },
    /// A responder was listed, or their assignment changed.
    ResponderAdded {
        /// The person.
        responder: Actor,
        /// What they work on.
        assignment: String,
    },
    /// A responder was taken off the list.
    ResponderRemoved {
        /// The person's id.
        responder: UserId,
    },
    /// A role was offered; nothing changes until the offer is accepted.
    HandoffOffered {
        /// The offer's id (this event's seq).
        handoff: HandoffId,
        /// The role.
        role: Role,
        /// Who offers it (its holder, or the commander).
        from: Actor,
        /// Who is asked to take it.
        to: Actor,
        /// The briefing for the incoming holder.
        briefing: Briefing,
        /// When the offer lapses.
        expires_at: DateTime<Utc>,
    },
    /// The named person accepted: they hold the role from now on.
    HandoffAccepted {
        /// The offer.
        handoff: HandoffId,
        /// The role.
        role: Role,
        /// The outgoing (effective) holder.
        from: Actor,
        /// The incoming holder.
        to: Actor,
    },
    /// The named person declined; nothing changed.
    HandoffDeclined {
        /// The offer.
        handoff: HandoffId,
        /// The role.
        role: Role,
        /// Who offered it.
        from: Actor,
        /// Who declined.
        to: Actor,
        /// Why, if given.
        reason: Option<String>,
    },
    /// The offer was withdrawn, by a person or because it no longer made
    /// sense (its offerer lost the role, or the incident was closed).
    HandoffCancelled {
        /// The offer.
        handoff: HandoffId,
        /// The role.
        role: Role,
        /// Who offered it.
        from: Actor,
        /// Who it was offered to.
        to: Actor,
        /// Why, when the machine cancelled it on its own.
        reason: Option<String>,
    },
    /// The offer lapsed without an answer.
    HandoffExpired {
        /// The offer.
        handoff: HandoffId,
        /// The role.
        role: Role,
        /// Who offered it.
        from: Actor,
        /// Who did not answer.
        to: Actor,
    },
    /// Emergency: an admin took a role (`forced_by` is `None`) or gave it to
    /// someone (`forced_by` is the admin), without a handoff.
    RoleAssumed {
        /// The role.
        role: Role,
        /// The new holder.
        holder: Actor,
        /// The previous explicit holder; `None` when the commander held it
        /// because it was not delegated.
        previous: Option<Actor>,
        /// Why.
        reason: String,
        /// The admin who assigned it to someone else.
        forced_by: Option<Actor>,
    },
    /// The planned next commander was named or cleared.
    NextCommanderSet {
        /// The next commander, or `None`.
        next: Option<Actor>,
    },
    /// A status summary was pinned.
    StatusPinned {
        /// The summary.
        summary: String,
        /// When the next update is due; `None` for a final update.
        next_update_by: Option<DateTime<Utc>>,
        /// The last update: no next one is due.
        #[serde(default, rename = "final")]
        is_final: bool,
    },
    /// The commander set when the impact started.
    ImpactStartSet {
        /// When the impact started.
        impact_start: DateTime<Utc>,
    },
    /// Someone tried to change production, or to post a note, without the
    /// role or the place on the responder list it takes; the command was
    /// refused and changed nothing. Recorded by the server (the actor is
    /// [`Caller::system`]) at most once per person and command a minute.
    AttemptRefused {
        /// Who tried.
        by: Actor,
        /// The refused command's name (`record_change`, `post_note`).
        command: String,
        /// Why it was refused, short ("not the operations lead").
        reason: String,
        /// What they tried: the change's `what`, or the note.
        detail: String,
    },
    /// The pinned status's next update is overdue; reported once per pin.
    UpdateOverdue {
        /// The `status_pinned` event whose deadline passed.
        pin: EventSeq,
        /// The deadline.
        due: DateTime<Utc>,
    },
    /// The lifecycle status moved.
    StatusChanged {
        /// The old status.
        from: Status,
        /// The new status.
        to: Status,
        /// The reason for resolving despite unmet exit criteria.
        override_reason: Option<String>,
    },
    /// A resolved or closed incident became active again.
    Reopened {
        /// The status it was in.
        from: Status,
        /// Why.
        reason: String,
    },
    /// An exit criterion was added, unmet.
    ExitCriterionAdded {
        /// Its id (this event's seq).
        criterion: CriterionId,
        /// What must be true.
        text: String,
    },
    /// An exit criterion was marked met or unmet.
    ExitCriterionSet {
        /// The criterion.
        criterion: CriterionId,
        /// Whether it is met.
        met: bool,
    },
    /// A production change was recorded in the revert register.
    ChangeRecorded {
        /// Its id (this event's seq).
        change: ChangeId,
        /// What was changed.
        what: String,
        /// Why.
        why: String,
        /// How to revert it.
        revert: String,
    },
    /// A change was reverted.
    ChangeReverted {
        /// The change.
        change: ChangeId,
    },
    /// A change is kept on purpose.
    ChangeWaived {
        /// The change.
        change: ChangeId,
        /// Why.
        reason: String,
    },
    /// A note in the command-post log.
    NotePosted {
        /// The note.
        text: String,
        /// The author is neither a role holder (commander included) nor on
        /// the responder list: notes are not refused, but the commander is
        /// shown who posts from outside the response.
        #[serde(default)]
        outsider: bool,
    },
}

impl EventKind {
    /// The serialised tag, e.g. `"handoff_accepted"`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Declared { .. } => "declared",
            EventKind::SeveritySet { .. } => "severity_set",
            EventKind::RoleAssigned { .. } => "role_assigned",
            EventKind::ResponderAdded { .. } => "responder_added",
            EventKind::ResponderRemoved { .. } => "responder_removed",
            EventKind::HandoffOffered { .. } => "handoff_offered",
            EventKind::HandoffAccepted { .. } => "handoff_accepted",
            EventKind::HandoffDeclined { .. } => "handoff_declined",
            EventKind::HandoffCancelled { .. } => "handoff_cancelled",
            EventKind::HandoffExpired { .. } => "handoff_expired",
            EventKind::RoleAssumed { .. } => "role_assumed",
            EventKind::NextCommanderSet { .. } => "next_commander_set",
            EventKind::StatusPinned { .. } => "status_pinned",
            EventKind::ImpactStartSet { .. } => "impact_start_set",
            EventKind::AttemptRefused { .. } => "attempt_refused",
            EventKind::UpdateOverdue { .. } => "update_overdue",
            EventKind::StatusChanged { .. } => "status_changed",
            EventKind::Reopened { .. } => "reopened",
            EventKind::ExitCriterionAdded { .. } => "exit_criterion_added",
            EventKind::ExitCriterionSet { .. } => "exit_criterion_set",
            EventKind::ChangeRecorded { .. } => "change_recorded",
            EventKind::ChangeReverted { .. } => "change_reverted",
            EventKind::ChangeWaived { .. } => "change_waived",
            EventKind::NotePosted { .. } => "note_posted",
        }
    }

    /// Whether everyone should be told prominently (a role changed hands, an
    /// update is overdue, or the lifecycle moved).
    pub fn is_prominent(&self) -> bool {
        matches!(
            self,
            EventKind::Declared { .. }
                | EventKind::RoleAssigned { .. }
                | EventKind::HandoffAccepted { .. }
                | EventKind::RoleAssumed { .. }
                | EventKind::UpdateOverdue { .. }
                | EventKind::StatusChanged { .. }
                | EventKind::Reopened { .. }
                | EventKind::AttemptRefused { .. }
        )
    }
}

/// One event of an incident's append-only log.
///
/// Serialised flat: `{"seq": 7, "at": "...", "actor": {...}, "type":
/// "handoff_accepted", "handoff": 5, ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Event {
    /// The per-incident sequence number (1, 2, ...).
    pub seq: EventSeq,
    /// When it was accepted (UTC).
    pub at: DateTime<Utc>,
    /// Who caused it ([`Caller::system`] for timer events).
    pub actor: Actor,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// One role's current holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct RoleView {
    /// The role.
    pub role: Role,
    /// The effective holder: the commander when the role is not delegated.
    pub holder: Actor,
    /// Whether someone other than the commander holds it. Always `false` for
    /// the commander role itself.
    pub delegated: bool,
    /// Since when `holder` has held it.
    pub since: DateTime<Utc>,
}

/// A person working the incident besides the role leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Responder {
    /// The person.
    pub actor: Actor,
    /// What they work on.
    pub assignment: String,
    /// Since when they have had this assignment.
    pub since: DateTime<Utc>,
}

/// An offer of a role that awaits an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct PendingHandoff {
    /// The offer's id.
    pub handoff: HandoffId,
    /// The role offered.
    pub role: Role,
    /// Who offered it.
    pub from: Actor,
    /// Who may accept it.
    pub to: Actor,
    /// The briefing.
    pub briefing: Briefing,
    /// When it was offered.
    pub offered_at: DateTime<Utc>,
    /// When it lapses.
    pub expires_at: DateTime<Utc>,
}

/// The latest pinned status summary: the banner everyone sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Pin {
    /// The summary.
    pub summary: String,
    /// When the next update is due; `None` for a final update.
    pub next_update_by: Option<DateTime<Utc>>,
    /// Whether this is the last update (no next one is due).
    #[serde(default, rename = "final")]
    pub is_final: bool,
    /// When it was pinned.
    pub pinned_at: DateTime<Utc>,
    /// Who pinned it.
    pub pinned_by: Actor,
    /// The `status_pinned` event.
    pub seq: EventSeq,
    /// Whether `next_update_by` passed and `update_overdue` was reported.
    pub overdue: bool,
}

/// A condition that must hold before the incident is resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ExitCriterion {
    /// Its id.
    pub criterion: CriterionId,
    /// What must be true.
    pub text: String,
    /// Whether it is met.
    pub met: bool,
}

/// Whether a recorded change still has to be dealt with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeState {
    /// Neither reverted nor waived: it blocks closing.
    Open,
    /// Reverted.
    Reverted {
        /// Who marked it.
        by: Actor,
        /// When.
        at: DateTime<Utc>,
    },
    /// Kept on purpose.
    Waived {
        /// Who waived it.
        by: Actor,
        /// When.
        at: DateTime<Utc>,
        /// Why it stays.
        reason: String,
    },
}

/// A production change in the revert register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Change {
    /// Its id.
    pub change: ChangeId,
    /// What was changed.
    pub what: String,
    /// Why.
    pub why: String,
    /// How to revert it.
    pub revert: String,
    /// Who recorded it.
    pub recorded_by: Actor,
    /// When.
    pub recorded_at: DateTime<Utc>,
    /// Open, reverted or waived.
    pub state: ChangeState,
}

/// A stretch of time during which someone explicitly held a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Tenure {
    /// The role.
    pub role: Role,
    /// The holder.
    pub holder: Actor,
    /// Start.
    pub from: DateTime<Utc>,
    /// End; `None` while it lasts.
    pub to: Option<DateTime<Utc>>,
}

/// A note from the command-post log, kept in the state for briefings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Note {
    /// The `note_posted` event.
    pub seq: EventSeq,
    /// When.
    pub at: DateTime<Utc>,
    /// Who wrote it.
    pub author: Actor,
    /// The note.
    pub text: String,
}

/// The incident as the fold of its events ([`crate::machine::fold`]); served
/// by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct IncidentState {
    /// The title.
    pub title: String,
    /// The severity; `None` until assessed.
    pub severity: Option<Severity>,
    /// The declaration answers.
    pub criteria: Option<Criteria>,
    /// The declaration summary.
    pub summary: Option<String>,
    /// The lifecycle status.
    pub status: Status,
    /// When it was declared.
    pub declared_at: DateTime<Utc>,
    /// When the impact started, as the commander set it; `None` until set.
    #[serde(default)]
    pub impact_start: Option<DateTime<Utc>>,
    /// Who declared it.
    pub declared_by: Actor,
    /// The four roles in [`Role::ALL`] order, with their effective holders.
    pub roles: Vec<RoleView>,
    /// Responders with free-text assignments, in the order they were added.
    pub responders: Vec<Responder>,
    /// Offers awaiting an answer, oldest first; at most one per role.
    pub pending_handoffs: Vec<PendingHandoff>,
    /// The planned next commander.
    pub next_commander: Option<Actor>,
    /// The latest pinned status.
    pub pin: Option<Pin>,
    /// The exit criteria, in the order they were added.
    pub exit_criteria: Vec<ExitCriterion>,
    /// The revert register, in the order changes were recorded.
    pub changes: Vec<Change>,
    /// Who explicitly held which role, and when; the commander's first
    /// tenure starts at declaration. Roles the commander holds because they
    /// are not delegated have no tenure of their own.
    pub role_history: Vec<Tenure>,
    /// The last few notes (at most [`crate::machine::RECENT_NOTES`]).
    pub recent_notes: Vec<Note>,
    /// The last events as `"HH:MM UTC Name: description"` (at most
    /// [`crate::machine::RECENT_TIMELINE`]).
    pub recent_timeline: Vec<String>,
    /// The seq of the last event folded in.
    pub last_seq: EventSeq,
    /// The time of the last event folded in.
    pub updated_at: DateTime<Utc>,
}

impl IncidentState {
    /// The role's entry in [`IncidentState::roles`].
    pub fn role(&self, role: Role) -> &RoleView {
        &self.roles[role.index()]
    }

    /// The effective holder of `role` (the commander while it is not
    /// delegated).
    pub fn holder(&self, role: Role) -> &Actor {
        &self.role(role).holder
    }

    /// The incident commander.
    pub fn commander(&self) -> &Actor {
        self.holder(Role::IncidentCommander)
    }

    /// Whether `role` is held by someone other than the commander.
    pub fn is_delegated(&self, role: Role) -> bool {
        self.role(role).delegated
    }

    /// Whether the person with `id` effectively holds `role`.
    pub fn holds(&self, id: &UserId, role: Role) -> bool {
        self.holder(role).id == *id
    }

    /// The roles the person with `id` effectively holds.
    pub fn roles_of(&self, id: &UserId) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|role| self.holds(id, *role))
            .collect()
    }

    /// The pending offer with this id.
    pub fn pending_handoff(&self, handoff: HandoffId) -> Option<&PendingHandoff> {
        self.pending_handoffs.iter().find(|p| p.handoff == handoff)
    }

    /// The pending offer of `role`, if any.
    pub fn pending_handoff_of(&self, role: Role) -> Option<&PendingHandoff> {
        self.pending_handoffs.iter().find(|p| p.role == role)
    }

    /// The exit criterion with this id.
    pub fn exit_criterion(&self, criterion: CriterionId) -> Option<&ExitCriterion> {
        self.exit_criteria.iter().find(|c| c.criterion == criterion)
    }

    /// The recorded change with this id.
    pub fn change(&self, change: ChangeId) -> Option<&Change> {
        self.changes.iter().find(|c| c.change == change)
    }

    /// The listed responder with this id.
    pub fn responder(&self, id: &UserId) -> Option<&Responder> {
        self.responders.iter().find(|r| r.actor.id == *id)
    }

    /// Whether every exit criterion is met and there is at least one.
    pub fn exit_criteria_met(&self) -> bool {
        !self.exit_criteria.is_empty() && self.exit_criteria.iter().all(|c| c.met)
    }

    /// Changes neither reverted nor waived.
    pub fn open_changes(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| matches!(c.state, ChangeState::Open))
    }
}

/// An exit criterion that is not met, as a refusal names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct BlockingCriterion {
    /// The criterion's id.
    pub id: CriterionId,
    /// What must be true.
    pub text: String,
}

/// A change neither reverted nor waived, as a refusal names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct BlockingChange {
    /// The change's id.
    pub id: ChangeId,
    /// What was changed.
    pub what: String,
}

/// What keeps the incident from resolving (unmet exit criteria) or closing
/// (open changes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Blocking {
    /// Unmet exit criteria (when resolving).
    pub criteria: Vec<BlockingCriterion>,
    /// Open changes (when closing).
    pub changes: Vec<BlockingChange>,
}

/// Which kind of rule refused a command; maps to an HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The caller may not do this (HTTP 403).
    Forbidden,
    /// The incident's current state does not allow it (HTTP 409).
    Conflict,
    /// The command itself is malformed or meaningless (HTTP 422).
    Invalid,
    /// It names an incident, offer, change, criterion or responder that does
    /// not exist (HTTP 404).
    NotFound,
    /// It names a person the server does not know (HTTP 422).
    UnknownPerson,
}

impl ErrorKind {
    /// The stable machine code: `forbidden`, `conflict`, `invalid`,
    /// `not_found` or `unknown_person`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not_found",
            ErrorKind::UnknownPerson => "unknown_person",
        }
    }

    /// The HTTP status code the server answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Forbidden => 403,
            ErrorKind::Conflict => 409,
            ErrorKind::Invalid | ErrorKind::UnknownPerson => 422,
            ErrorKind::NotFound => 404,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: which kind of rule, and the rule in plain lowercase
/// words (e.g. "only the incident commander may assign roles").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CommandError {
    /// The kind of rule (the stable code).
    pub kind: ErrorKind,
    /// The rule that refused the command, safe to show to the caller.
    pub rule: String,
    /// With [`ErrorKind::UnknownPerson`]: the id nobody is known by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<UserId>,
    /// With a refused lifecycle move: what blocks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking: Option<Blocking>,
}

impl CommandError {
    /// A refusal of `kind` citing `rule`.
    pub fn new(kind: ErrorKind, rule: impl Into<String>) -> Self {
        Self {
            kind,
            rule: rule.into(),
            person: None,
            blocking: None,
        }
    }

    /// The command names `person`, whom the server does not know.
    pub fn unknown_person(person: &UserId) -> Self {
        Self {
            person: Some(person.clone()),
            ..Self::new(
                ErrorKind::UnknownPerson,
                format!("no one known as `{person}`; pick someone from GET /api/people"),
            )
        }
    }

    /// The caller may not do this.
    pub fn forbidden(rule: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, rule)
    }

    /// The incident's state does not allow it.
    pub fn conflict(rule: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, rule)
    }

    /// The command is malformed or meaningless.
    pub fn invalid(rule: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, rule)
    }

    /// Something the command names does not exist.
    pub fn not_found(rule: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, rule)
    }

    /// The stable machine code (see [`ErrorKind::as_str`]).
    pub fn code(&self) -> &'static str {
        self.kind.as_str()
    }

    /// The HTTP status code (see [`ErrorKind::http_status`]).
    pub fn http_status(&self) -> u16 {
        self.kind.http_status()
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rule)
    }
}

impl std::error::Error for CommandError {}
