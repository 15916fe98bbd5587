//! The incident state machine of the command sidecar: pure functions from
//! (state, command, caller, time) to events, and from events to state.
//!
//! No I/O, no clock, no randomness: the time is passed in, and every id is
//! the seq of the event that created the thing. [`apply`] validates a command
//! and returns the events it causes; the new state is always obtained by
//! folding those events with [`evolve`], never by mutating state in `apply`.
//! Replaying an incident's log with [`fold`] therefore rebuilds exactly the
//! state that was served live.
//!
//! # Rules (from `INCIDENT-PRACTICE.md`)
//!
//! - The declarer becomes the first incident commander (IC). There is exactly
//!   one IC at every moment, and the IC holds every role not delegated.
//! - Viewers cannot change anything. The server's own caller
//!   ([`Caller::system`]) may only send [`Command::Tick`], and only it may.
//! - Only the IC assigns roles, sets severity and lifecycle status, and
//!   manages exit criteria. The IC and the planning lead name the next IC.
//!   The IC and the communications lead pin status. Only the operations lead
//!   (the IC while operations is not delegated) records production changes;
//!   only the planning lead (likewise) marks them reverted or waives them.
//!   The IC and any role lead add and remove responders. Any responder or
//!   admin posts notes (the access role: notes are not limited to the
//!   responder list).
//! - The IC sets the impact start (when customers were first affected,
//!   which may precede the declaration), never in the future.
//! - Handoffs are offered by the role's holder, or by the IC for any role
//!   (only the IC offers command); one pending offer per role; never to the
//!   current holder. Only the named person accepts or declines; the offerer
//!   or the IC cancels. The outgoing holder keeps the role until acceptance.
//!   Offers lapse after [`Rules::handoff_ttl`].
//! - A role given to whoever is the IC becomes undelegated again. When
//!   command changes hands, undelegated roles follow the new IC, and a role
//!   the new IC held explicitly folds back into command.
//! - An offer that stops making sense when roles move (its offerer holds
//!   neither the role nor command any more, or its target now holds the
//!   role) is cancelled by the machine with a reason, in the same command.
//! - Admins may, in an emergency and with a reason, assume a role or assign
//!   it to someone; a pending offer of that role is cancelled.
//!
//! # Decisions
//!
//! - Lifecycle moves: `active → mitigated`, `active → resolved`,
//!   `mitigated → resolved`, `mitigated → active` (the mitigation did not
//!   hold), `resolved → closed`. Closing is only possible from resolved, so
//!   the timeline always shows the resolution. Reopen (IC or admin, with a
//!   reason) goes from resolved or closed to active.
//! - Resolving needs at least one exit criterion and all of them met, or an
//!   override reason. An override reason is refused on any other move.
//!   Closing needs every change reverted or waived, with no override; closing
//!   cancels every pending offer.
//! - A closed incident refuses everything except reopen (notes too: the
//!   record is final until reopened); a tick on it does nothing.
//! - Updates are reported overdue only while the incident is active or
//!   mitigated; a tick at or after the deadline reports it (so that a timer
//!   sleeping until [`next_deadline`] always finds something to do).
//! - A command that would change nothing (same severity, already met, ...) is
//!   refused as a conflict, so the timeline holds only real changes.
//! - Free text is trimmed; required text may not be blank.
//! - A final status update (no next deadline, no overdue reminder) is
//!   allowed once the incident is mitigated or later; while it is active
//!   every pin names when the next update is due.
//! - A refused production change stays refused and changes nothing here;
//!   the server records it with [`refused_attempt`] (an `attempt_refused`
//!   event by the server, naming who tried) so the commander sees
//!   freelancing. A note refused by a role rule would be traced the same
//!   way; today no rule refuses a note from a writer.
//! - A refused lifecycle move names what blocks it
//!   ([`CommandError::blocking`]): the unmet exit criteria when resolving,
//!   the open changes when closing, each with its id.
//! - Commands name people by id; [`resolve_people`] (run by the server
//!   before [`apply`]) refuses an id nobody is known by and records the
//!   known name.

use chrono::{DateTime, Duration, Utc};

use crate::incident::{
    Blocking, BlockingChange, BlockingCriterion, Briefing, Caller, Change, ChangeId, ChangeState,
    Command, CommandError, Criteria, CriterionId, Event, EventKind, EventSeq, ExitCriterion,
    HandoffId, IncidentState, Note, PendingHandoff, Pin, Responder, Role, RoleAssignment, RoleView,
    SYSTEM_USER_ID, Severity, Status, Tenure,
};
use crate::{AccessRole, Actor, UserId, limits};

/// How many notes [`IncidentState::recent_notes`] keeps.
pub const RECENT_NOTES: usize = 5;

/// How many lines [`IncidentState::recent_timeline`] keeps.
pub const RECENT_TIMELINE: usize = 10;

/// The longest title, in characters, after trimming.
pub const TITLE_MAX_CHARS: usize = limits::TITLE_CHARS;

/// Tunable parameters of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// How long a handoff offer stays open before it lapses.
    pub handoff_ttl: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            handoff_ttl: Duration::minutes(15),
        }
    }
}

/// Validates `command` from `caller` at `now` against `state` (`None`: not
/// declared yet) and returns the events it causes, with seqs following
/// `state.last_seq`, `at = now` and `actor = caller.actor`.
///
/// A refused command changes nothing. A tick with nothing due returns no
/// events; every other accepted command returns at least one.
pub fn apply(
    state: Option<&IncidentState>,
    command: &Command,
    caller: &Caller,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<Vec<Event>, CommandError> {
    if !caller.access.can_write() {
        return Err(CommandError::forbidden("viewers cannot change an incident"));
    }
    if let Command::Tick = command {
        if !caller.is_system() {
            return Err(CommandError::forbidden(
                "only the server's timer may send ticks",
            ));
        }
        let state = state.ok_or_else(not_declared)?;
        let mut out = Emitter::new(Some(state), caller, now);
        tick(&mut out);
        return Ok(out.finish());
    }
    if caller.is_system() {
        return Err(CommandError::forbidden(
            "the server's timer may only send ticks",
        ));
    }
    check_sizes(state, command)?;
    let Some(state) = state else {
        return match command {
            Command::Declare {
                title,
                severity,
                criteria,
                summary,
            } => declare(caller, now, title, *severity, *criteria, summary.as_deref()),
            _ => Err(not_declared()),
        };
    };
    if let Command::Declare { .. } = command {
        return Err(CommandError::conflict("the incident is already declared"));
    }
    if state.status == Status::Closed && !matches!(command, Command::Reopen { .. }) {
        return Err(CommandError::conflict(
            "the incident is closed; reopen it first",
        ));
    }

    let mut out = Emitter::new(Some(state), caller, now);
    match command {
        Command::Declare { .. } | Command::Tick => unreachable!("handled above"),
        Command::SetSeverity { severity } => set_severity(&mut out, *severity)?,
        Command::AssignRole { role, to } => assign_role(&mut out, *role, to)?,
        Command::AddResponder {
            responder,
            assignment,
        } => add_responder(&mut out, responder, assignment)?,
        Command::RemoveResponder { responder } => remove_responder(&mut out, responder)?,
        Command::OfferHandoff { role, to, notes } => {
            offer_handoff(&mut out, *role, to, notes, rules)?
        }
        Command::AcceptHandoff { handoff } => accept_handoff(&mut out, *handoff)?,
        Command::DeclineHandoff { handoff, reason } => {
            decline_handoff(&mut out, *handoff, reason.as_deref())?
        }
        Command::CancelHandoff { handoff } => cancel_handoff(&mut out, *handoff)?,
        Command::AssumeRole { role, reason } => assume_role(&mut out, *role, reason)?,
        Command::ForceAssignRole { role, to, reason } => {
            force_assign_role(&mut out, *role, to, reason)?
        }
        Command::SetNextCommander { next } => set_next_commander(&mut out, next.as_ref())?,
        Command::PinStatus {
            summary,
            next_update_by,
            is_final,
        } => pin_status(&mut out, summary, *next_update_by, *is_final)?,
        Command::SetImpactStart { at } => set_impact_start(&mut out, *at)?,
        Command::SetStatus {
            status,
            override_reason,
        } => set_status(&mut out, *status, override_reason.as_deref())?,
        Command::Reopen { reason } => reopen(&mut out, reason)?,
        Command::AddExitCriterion { text } => add_exit_criterion(&mut out, text)?,
        Command::SetExitCriterion { criterion, met } => {
            set_exit_criterion(&mut out, *criterion, *met)?
        }
        Command::RecordChange { what, why, revert } => record_change(&mut out, what, why, revert)?,
        Command::MarkChangeReverted { change } => mark_change_reverted(&mut out, *change)?,
        Command::WaiveChange { change, reason } => waive_change(&mut out, *change, reason)?,
        Command::PostNote { text } => post_note(&mut out, text)?,
    }
    Ok(out.finish())
}

/// Rebuilds an incident's state from its whole log; `None` for an empty log.
///
/// # Panics
///
/// As [`evolve`], on a log that does not start with `declared`.
pub fn fold(events: &[Event]) -> Option<IncidentState> {
    events
        .iter()
        .fold(None, |state, event| Some(evolve(state, event)))
}

/// Folds one event into the state.
///
/// # Panics
///
/// If the log is corrupt: the first event is not `declared`, or a second
/// `declared` follows. Logs written from [`apply`] never are.
pub fn evolve(state: Option<IncidentState>, event: &Event) -> IncidentState {
    let line = timeline_line(state.as_ref(), event);
    let mut state = match state {
        None => declared_state(event),
        Some(mut state) => {
            absorb(&mut state, event);
            state
        }
    };
    state.last_seq = event.seq;
    state.updated_at = event.at;
    push_bounded(&mut state.recent_timeline, line, RECENT_TIMELINE);
    state
}

/// The earliest moment at which a [`Command::Tick`] would produce events: the
/// first pending offer's expiry, or the pinned update's deadline while it is
/// not yet reported (and the incident is active or mitigated). `None` when
/// nothing is scheduled. The moment may already have passed, in which case
/// the server should tick at once.
pub fn next_deadline(state: &IncidentState) -> Option<DateTime<Utc>> {
    let expiry = state.pending_handoffs.iter().map(|p| p.expires_at).min();
    let update = state
        .pin
        .as_ref()
        .filter(|pin| !pin.overdue && reports_overdue(state.status))
        .and_then(|pin| pin.next_update_by);
    match (expiry, update) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Pre-fills an ICS 201 handoff briefing from the incident's state, with
/// `notes` from whoever offers the handoff.
pub fn briefing(state: &IncidentState, notes: &str) -> Briefing {
    let situation = state
        .pin
        .as_ref()
        .map(|pin| pin.summary.clone())
        .or_else(|| state.summary.clone())
        .unwrap_or_else(|| state.title.clone());
    let objectives = state
        .exit_criteria
        .iter()
        .map(|c| format!("[{}] {}", if c.met { "x" } else { " " }, c.text))
        .collect();
    let current_actions = state
        .recent_notes
        .iter()
        .map(|note| format!("{} {}: {}", clock(note.at), note.author.name, note.text))
        .collect();
    let mut organisation: Vec<RoleAssignment> = state
        .roles
        .iter()
        .map(|view| RoleAssignment {
            role: Some(view.role),
            assignment: if view.role == Role::IncidentCommander || view.delegated {
                view.role.to_string()
            } else {
                format!("{} (held by the incident commander)", view.role)
            },
            holder: view.holder.clone(),
            since: view.since,
        })
        .collect();
    organisation.extend(state.responders.iter().map(|r| RoleAssignment {
        role: None,
        assignment: r.assignment.clone(),
        holder: r.actor.clone(),
        since: r.since,
    }));
    let open_changes = state
        .open_changes()
        .map(|c| format!("{} (revert: {})", c.what, c.revert))
        .collect();
    Briefing {
        situation,
        objectives,
        current_actions,
        organisation,
        open_changes,
        recent_timeline: state.recent_timeline.clone(),
        notes: notes.to_owned(),
    }
}

/// How long [`refused_attempt`]'s record of one person's refused command
/// keeps the next one off the timeline: at most one `attempt_refused` per
/// person and command in this window (the server keeps the window).
pub const REFUSED_ATTEMPT_WINDOW: Duration = Duration::seconds(60);

/// The `attempt_refused` event to record when `command` from `caller` was
/// refused with `error`: a production change by someone who does not hold
/// operations, or a note from someone not on the responder list (role
/// holders are on it). `None` for every other refusal (viewers, the timer,
/// malformed commands, closed incidents), which leave no trace. The event
/// is the server's ([`Caller::system`]) and follows `state.last_seq`.
pub fn refused_attempt(
    state: &IncidentState,
    command: &Command,
    caller: &Caller,
    error: &CommandError,
    now: DateTime<Utc>,
) -> Option<Event> {
    if error.kind != crate::incident::ErrorKind::Forbidden
        || !caller.access.can_write()
        || caller.is_system()
        || state.status == Status::Closed
    {
        return None;
    }
    let (reason, detail) = match command {
        Command::RecordChange { what, .. }
            if !state.holds(&caller.actor.id, Role::OperationsLead) =>
        {
            ("not the operations lead", what)
        }
        Command::PostNote { text } => ("not on the responder list", text),
        _ => return None,
    };
    let detail: String = detail.trim().chars().take(limits::NOTE_CHARS).collect();
    Some(Event {
        seq: EventSeq(state.last_seq.0 + 1),
        at: now,
        actor: Caller::system().actor,
        kind: EventKind::AttemptRefused {
            by: caller.actor.clone(),
            command: command.name().to_owned(),
            reason: reason.to_owned(),
            detail,
        },
    })
}

/// What a refused command tried to do, for the timeline.
fn attempted(command: &str) -> &'static str {
    match command {
        "record_change" => "record a change",
        "post_note" => "post a note",
        _ => "change the incident",
    }
}

/// The people an incident names: its declarer, everyone who held or holds
/// a role, and the listed responders, each with when they were named there
/// (the latest mention of each id comes last). Part of who the server knows
/// (see [`resolve_people`]).
pub fn people(state: &IncidentState) -> Vec<(Actor, DateTime<Utc>)> {
    let mut found = vec![(state.declared_by.clone(), state.declared_at)];
    found.extend(
        state
            .role_history
            .iter()
            .map(|tenure| (tenure.holder.clone(), tenure.from)),
    );
    found.extend(
        state
            .roles
            .iter()
            .map(|view| (view.holder.clone(), view.since)),
    );
    found.extend(
        state
            .responders
            .iter()
            .map(|responder| (responder.actor.clone(), responder.since)),
    );
    found.sort_by_key(|(_, at)| *at);
    found
}

/// Replaces every person `command` names with the one the server knows by
/// that id (`known` looks an id up), so a command can only name a known
/// person, under the name they are known by. An id nobody is known by is
/// refused with [`ErrorKind::UnknownPerson`](crate::incident::ErrorKind)
/// naming it. Ids that are blank, reserved or over their length limit are
/// left for [`apply`] to refuse with its own rule.
pub fn resolve_people(
    command: &Command,
    known: impl Fn(&UserId) -> Option<Actor>,
) -> Result<Command, CommandError> {
    let resolve = |actor: &Actor| -> Result<Actor, CommandError> {
        let id = &actor.id.0;
        if id.trim().is_empty()
            || limits::is_reserved_user_id(id)
            || id.trim().chars().count() > limits::USER_ID_CHARS
        {
            return Ok(actor.clone());
        }
        known(&actor.id).ok_or_else(|| CommandError::unknown_person(&actor.id))
    };
    let mut resolved = command.clone();
    match &mut resolved {
        Command::AssignRole { to, .. }
        | Command::OfferHandoff { to, .. }
        | Command::ForceAssignRole { to, .. } => *to = resolve(to)?,
        Command::AddResponder { responder, .. } => *responder = resolve(responder)?,
        Command::SetNextCommander { next: Some(next) } => *next = resolve(next)?,
        Command::Declare { .. }
        | Command::SetSeverity { .. }
        | Command::RemoveResponder { .. }
        | Command::AcceptHandoff { .. }
        | Command::DeclineHandoff { .. }
        | Command::CancelHandoff { .. }
        | Command::AssumeRole { .. }
        | Command::SetNextCommander { next: None }
        | Command::PinStatus { .. }
        | Command::SetImpactStart { .. }
        | Command::SetStatus { .. }
        | Command::Reopen { .. }
        | Command::AddExitCriterion { .. }
        | Command::SetExitCriterion { .. }
        | Command::RecordChange { .. }
        | Command::MarkChangeReverted { .. }
        | Command::WaiveChange { .. }
        | Command::PostNote { .. }
        | Command::Tick => {}
    }
    Ok(resolved)
}

/// How a note from outside the response is marked on the timeline.
pub const OUTSIDER: &str = "not on the responder list";

/// One timeline line, `"HH:MM UTC Name: description"`, for `event` given the
/// state just before it.
pub fn timeline_line(before: Option<&IncidentState>, event: &Event) -> String {
    format!("{} {}", clock(event.at), actor_line(before, event))
}

/// `"Name: description"`, or the description alone when it already starts
/// with the actor (a note from outside the response: "Fred (not on the
/// responder list) posted a note: ...").
pub fn actor_line(before: Option<&IncidentState>, event: &Event) -> String {
    match &event.kind {
        EventKind::NotePosted { outsider: true, .. } => describe(before, event),
        _ => format!("{}: {}", event.actor.name, describe(before, event)),
    }
}

/// What `event` did, in plain lowercase words, given the state just before it
/// (used to name changes and criteria; ids are shown when it is `None`).
pub fn describe(before: Option<&IncidentState>, event: &Event) -> String {
    match &event.kind {
        EventKind::Declared {
            title, severity, ..
        } => match severity {
            Some(severity) => format!("declared \"{title}\" ({severity})"),
            None => format!("declared \"{title}\""),
        },
        EventKind::SeveritySet { severity } => format!("set severity to {severity}"),
        EventKind::RoleAssigned { role, holder, .. } => {
            format!("assigned {role} to {}", holder.name)
        }
        EventKind::ResponderAdded {
            responder,
            assignment,
        } => format!("added {} as a responder: {assignment}", responder.name),
        EventKind::ResponderRemoved { responder } => {
            let name = before
                .and_then(|s| s.responder(responder))
                .map_or_else(|| responder.to_string(), |r| r.actor.name.clone());
            format!("removed {name} from the responders")
        }
        EventKind::HandoffOffered { role, to, .. } => format!("offered {role} to {}", to.name),
        EventKind::HandoffAccepted { role, from, .. } => {
            format!("took over {role} from {}", from.name)
        }
        EventKind::HandoffDeclined {
            role, from, reason, ..
        } => match reason {
            Some(reason) => format!("declined {role} from {}: {reason}", from.name),
            None => format!("declined {role} from {}", from.name),
        },
        EventKind::HandoffCancelled {
            role, to, reason, ..
        } => match reason {
            Some(reason) => format!("cancelled the offer of {role} to {} ({reason})", to.name),
            None => format!("cancelled the offer of {role} to {}", to.name),
        },
        EventKind::HandoffExpired { role, from, to, .. } => format!(
            "the offer of {role} from {} to {} expired",
            from.name, to.name
        ),
        EventKind::RoleAssumed {
            role,
            holder,
            reason,
            forced_by,
            ..
        } => match forced_by {
            None => format!("assumed {role} in an emergency: {reason}"),
            Some(_) => format!("gave {role} to {} in an emergency: {reason}", holder.name),
        },
        EventKind::NextCommanderSet { next } => match next {
            Some(next) => format!("named {} as the next incident commander", next.name),
            None => "cleared the next incident commander".to_owned(),
        },
        EventKind::StatusPinned {
            summary,
            next_update_by,
            is_final,
        } => match next_update_by {
            Some(next) if !is_final => {
                format!("pinned status: {summary} (next update by {})", clock(*next))
            }
            _ => format!("pinned the final status: {summary} (no further updates)"),
        },
        EventKind::ImpactStartSet { impact_start } => format!(
            "set the impact start to {}",
            impact_start.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        EventKind::AttemptRefused {
            by,
            command,
            reason,
            detail,
        } => format!(
            "Refused: {} ({reason}) tried to {}: {detail}",
            by.name,
            attempted(command)
        ),
        EventKind::UpdateOverdue { due, .. } => {
            format!("the status update due at {} is overdue", clock(*due))
        }
        EventKind::StatusChanged {
            from,
            to,
            override_reason,
        } => match override_reason {
            Some(reason) => format!("moved the incident from {from} to {to} (override: {reason})"),
            None => format!("moved the incident from {from} to {to}"),
        },
        EventKind::Reopened { from, reason } => format!("reopened the {from} incident: {reason}"),
        EventKind::ExitCriterionAdded { text, .. } => format!("added exit criterion: {text}"),
        EventKind::ExitCriterionSet { criterion, met } => {
            let text = before
                .and_then(|s| s.exit_criterion(*criterion))
                .map_or_else(|| criterion.to_string(), |c| format!("\"{}\"", c.text));
            let state = if *met { "met" } else { "not met" };
            format!("marked exit criterion {text} {state}")
        }
        EventKind::ChangeRecorded { what, .. } => format!("changed production: {what}"),
        EventKind::ChangeReverted { change } => {
            format!("reverted change {}", change_name(before, *change))
        }
        EventKind::ChangeWaived { change, reason } => format!(
            "waived the revert of change {}: {reason}",
            change_name(before, *change)
        ),
        EventKind::NotePosted {
            text,
            outsider: false,
        } => text.clone(),
        EventKind::NotePosted {
            text,
            outsider: true,
        } => format!("{} ({OUTSIDER}) posted a note: {text}", event.actor.name),
    }
}

/// Checks the invariants every reachable state keeps; `Err` names the first
/// one broken.
pub fn check_invariants(state: &IncidentState) -> Result<(), String> {
    // Exactly one commander, and roles in their fixed order.
    if state.roles.len() != Role::ALL.len()
        || state.roles.iter().zip(Role::ALL).any(|(v, r)| v.role != r)
    {
        return Err("roles must list the four roles in order".to_owned());
    }
    let commander = state.role(Role::IncidentCommander);
    if commander.delegated {
        return Err("the commander role is never delegated".to_owned());
    }
    if commander.holder.id.0 == SYSTEM_USER_ID {
        return Err("the server cannot be the commander".to_owned());
    }
    // Effective holders consistent with delegation.
    for view in &state.roles[1..] {
        let held_by_commander = view.holder.id == commander.holder.id;
        if view.delegated == held_by_commander {
            return Err(format!(
                "{} is {} but held by {}",
                view.role,
                if view.delegated {
                    "delegated"
                } else {
                    "not delegated"
                },
                view.holder.name
            ));
        }
        if !view.delegated && view.holder != commander.holder {
            return Err(format!(
                "{} is not delegated but its holder differs from the commander",
                view.role
            ));
        }
        if !view.delegated && view.since < commander.since {
            return Err(format!(
                "{} follows the commander but predates the commander's tenure",
                view.role
            ));
        }
    }
    // Role history: one open tenure per explicitly held role, matching it.
    match state.role_history.first() {
        Some(first)
            if first.role == Role::IncidentCommander
                && first.holder == state.declared_by
                && first.from == state.declared_at => {}
        _ => return Err("role history must start with the declarer's command".to_owned()),
    }
    for tenure in &state.role_history {
        if tenure.to.is_some_and(|to| to < tenure.from) {
            return Err(format!("a tenure of {} ends before it starts", tenure.role));
        }
    }
    for view in &state.roles {
        let open: Vec<&Tenure> = state
            .role_history
            .iter()
            .filter(|t| t.role == view.role && t.to.is_none())
            .collect();
        let explicit = view.role == Role::IncidentCommander || view.delegated;
        match (explicit, open.as_slice()) {
            (true, [tenure]) => {
                if tenure.holder.id != view.holder.id || tenure.from != view.since {
                    return Err(format!(
                        "the open tenure of {} does not match its holder",
                        view.role
                    ));
                }
            }
            (false, []) => {}
            _ => {
                return Err(format!("{} has {} open tenures", view.role, open.len()));
            }
        }
    }
    // Pending offers.
    for (index, pending) in state.pending_handoffs.iter().enumerate() {
        if state.pending_handoffs[..index]
            .iter()
            .any(|other| other.role == pending.role)
        {
            return Err(format!("two handoffs of {} are pending", pending.role));
        }
        if !state.holds(&pending.from.id, pending.role)
            && !state.holds(&pending.from.id, Role::IncidentCommander)
        {
            return Err(format!(
                "the pending offer of {} comes from {}, who holds neither it nor command",
                pending.role, pending.from.name
            ));
        }
        if state.holds(&pending.to.id, pending.role) {
            return Err(format!(
                "{} is offered {} but already holds it",
                pending.to.name, pending.role
            ));
        }
        if pending.expires_at < pending.offered_at {
            return Err("an offer expires before it was made".to_owned());
        }
    }
    strictly_increasing(
        state.pending_handoffs.iter().map(|p| p.handoff.0),
        state.last_seq,
        "pending handoffs",
    )?;
    if state.status == Status::Closed && !state.pending_handoffs.is_empty() {
        return Err("a closed incident has pending offers".to_owned());
    }
    // The rest of the bookkeeping.
    if state
        .next_commander
        .as_ref()
        .is_some_and(|next| next.id == commander.holder.id)
    {
        return Err("the next commander is the commander".to_owned());
    }
    for (index, responder) in state.responders.iter().enumerate() {
        if state.responders[..index]
            .iter()
            .any(|other| other.actor.id == responder.actor.id)
        {
            return Err(format!("{} is listed twice", responder.actor.name));
        }
    }
    strictly_increasing(
        state.exit_criteria.iter().map(|c| c.criterion.0),
        state.last_seq,
        "exit criteria",
    )?;
    strictly_increasing(
        state.changes.iter().map(|c| c.change.0),
        state.last_seq,
        "changes",
    )?;
    strictly_increasing(
        state.recent_notes.iter().map(|n| n.seq.0),
        state.last_seq,
        "notes",
    )?;
    if let Some(pin) = &state.pin
        && (pin.seq.0 == 0 || pin.seq > state.last_seq)
    {
        return Err("the pin refers to a later event".to_owned());
    }
    if state.recent_notes.len() > RECENT_NOTES || state.recent_timeline.len() > RECENT_TIMELINE {
        return Err("the recent notes or timeline grew past their bound".to_owned());
    }
    Ok(())
}

/// Checks an incident's log: seqs 1, 2, 3, ... and `declared` first and only
/// first.
pub fn check_sequence(events: &[Event]) -> Result<(), String> {
    for (index, event) in events.iter().enumerate() {
        let expected = index as u64 + 1;
        if event.seq.0 != expected {
            return Err(format!(
                "event {index} has seq {} instead of {expected}",
                event.seq
            ));
        }
        let is_declaration = matches!(event.kind, EventKind::Declared { .. });
        if is_declaration != (index == 0) {
            return Err(format!(
                "event {} is {} where the log must start with one declaration",
                event.seq,
                event.kind.name()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Producing events

/// Builds the events of one command, evolving a scratch copy of the state
/// after each, so later checks in the same command see earlier effects.
struct Emitter<'a> {
    caller: &'a Caller,
    now: DateTime<Utc>,
    state: Option<IncidentState>,
    events: Vec<Event>,
}

impl<'a> Emitter<'a> {
    fn new(state: Option<&IncidentState>, caller: &'a Caller, now: DateTime<Utc>) -> Self {
        Self {
            caller,
            now,
            state: state.cloned(),
            events: Vec::new(),
        }
    }

    /// The state after the events emitted so far.
    fn state(&self) -> &IncidentState {
        self.state
            .as_ref()
            .expect("only a declaration runs without a state")
    }

    /// The seq the next emitted event gets.
    fn next_seq(&self) -> EventSeq {
        EventSeq(self.state.as_ref().map_or(0, |s| s.last_seq.0) + 1)
    }

    fn caller_id(&self) -> &UserId {
        &self.caller.actor.id
    }

    /// Whether the caller effectively holds `role` now.
    fn caller_holds(&self, role: Role) -> bool {
        self.state().holds(self.caller_id(), role)
    }

    fn emit(&mut self, kind: EventKind) {
        let event = Event {
            seq: self.next_seq(),
            at: self.now,
            actor: self.caller.actor.clone(),
            kind,
        };
        self.state = Some(evolve(self.state.take(), &event));
        self.events.push(event);
    }

    fn finish(self) -> Vec<Event> {
        if let Some(state) = &self.state {
            debug_assert_eq!(check_invariants(state), Ok(()));
        }
        self.events
    }
}

fn not_declared() -> CommandError {
    CommandError::not_found("the incident has not been declared")
}

fn declare(
    caller: &Caller,
    now: DateTime<Utc>,
    title: &str,
    severity: Option<Severity>,
    criteria: Option<Criteria>,
    summary: Option<&str>,
) -> Result<Vec<Event>, CommandError> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > TITLE_MAX_CHARS {
        return Err(CommandError::invalid(format!(
            "an incident needs a title of 1 to {TITLE_MAX_CHARS} characters"
        )));
    }
    let mut out = Emitter::new(None, caller, now);
    out.emit(EventKind::Declared {
        title: title.to_owned(),
        severity,
        criteria,
        summary: optional_text(summary),
        commander: caller.actor.clone(),
    });
    Ok(out.finish())
}

fn set_severity(out: &mut Emitter<'_>, severity: Severity) -> Result<(), CommandError> {
    require_commander(out, "set the severity")?;
    if out.state().severity == Some(severity) {
        return Err(CommandError::conflict(format!(
            "the severity is already {severity}"
        )));
    }
    out.emit(EventKind::SeveritySet { severity });
    Ok(())
}

fn assign_role(out: &mut Emitter<'_>, role: Role, to: &Actor) -> Result<(), CommandError> {
    require_commander(out, "assign roles")?;
    check_person(to)?;
    if role == Role::IncidentCommander {
        return Err(CommandError::invalid(
            "command changes hands only through a handoff",
        ));
    }
    let state = out.state();
    let view = state.role(role);
    if view.delegated {
        return Err(if view.holder.id == to.id {
            CommandError::conflict(format!("{} already holds {role}", to.name))
        } else {
            CommandError::conflict(format!(
                "{role} is delegated to {}; reassign it through a handoff",
                view.holder.name
            ))
        });
    }
    if state.commander().id == to.id {
        return Err(CommandError::conflict(format!(
            "the incident commander already holds {role}"
        )));
    }
    if state.pending_handoff_of(role).is_some() {
        return Err(CommandError::conflict(format!(
            "a handoff of {role} is already pending"
        )));
    }
    out.emit(EventKind::RoleAssigned {
        role,
        holder: to.clone(),
        previous: None,
    });
    cancel_stale_offers(out);
    Ok(())
}

fn add_responder(
    out: &mut Emitter<'_>,
    responder: &Actor,
    assignment: &str,
) -> Result<(), CommandError> {
    require_lead(out, "change the responders")?;
    check_person(responder)?;
    let assignment = required_text(assignment, "a responder needs an assignment")?;
    if out
        .state()
        .responder(&responder.id)
        .is_some_and(|r| r.assignment == assignment && r.actor == *responder)
    {
        return Err(CommandError::conflict(format!(
            "{} is already a responder with that assignment",
            responder.name
        )));
    }
    out.emit(EventKind::ResponderAdded {
        responder: responder.clone(),
        assignment,
    });
    Ok(())
}

fn remove_responder(out: &mut Emitter<'_>, responder: &UserId) -> Result<(), CommandError> {
    require_lead(out, "change the responders")?;
    if out.state().responder(responder).is_none() {
        return Err(CommandError::not_found(format!(
            "{responder} is not a responder"
        )));
    }
    out.emit(EventKind::ResponderRemoved {
        responder: responder.clone(),
    });
    Ok(())
}

fn offer_handoff(
    out: &mut Emitter<'_>,
    role: Role,
    to: &Actor,
    notes: &str,
    rules: &Rules,
) -> Result<(), CommandError> {
    if role == Role::IncidentCommander {
        if !out.caller_holds(Role::IncidentCommander) {
            return Err(CommandError::forbidden(
                "only the incident commander may offer command",
            ));
        }
    } else if !out.caller_holds(role) && !out.caller_holds(Role::IncidentCommander) {
        return Err(CommandError::forbidden(format!(
            "only the {role} or the incident commander may offer {role}"
        )));
    }
    check_person(to)?;
    let state = out.state();
    if state.holds(&to.id, role) {
        return Err(CommandError::conflict(format!(
            "{} already holds {role}",
            to.name
        )));
    }
    if state.pending_handoff_of(role).is_some() {
        return Err(CommandError::conflict(format!(
            "a handoff of {role} is already pending"
        )));
    }
    let briefing = briefing(state, notes.trim());
    let handoff = HandoffId(out.next_seq().0);
    out.emit(EventKind::HandoffOffered {
        handoff,
        role,
        from: out.caller.actor.clone(),
        to: to.clone(),
        briefing,
        expires_at: out.now + rules.handoff_ttl,
    });
    Ok(())
}

fn find_pending(out: &Emitter<'_>, handoff: HandoffId) -> Result<PendingHandoff, CommandError> {
    out.state()
        .pending_handoff(handoff)
        .cloned()
        .ok_or_else(|| CommandError::not_found(format!("there is no pending handoff {handoff}")))
}

fn accept_handoff(out: &mut Emitter<'_>, handoff: HandoffId) -> Result<(), CommandError> {
    let pending = find_pending(out, handoff)?;
    if pending.to.id != *out.caller_id() {
        return Err(CommandError::forbidden(format!(
            "only {} may accept this handoff",
            pending.to.name
        )));
    }
    if out.now >= pending.expires_at {
        return Err(CommandError::conflict(format!(
            "this handoff offer expired at {}",
            clock(pending.expires_at)
        )));
    }
    let from = out.state().holder(pending.role).clone();
    out.emit(EventKind::HandoffAccepted {
        handoff,
        role: pending.role,
        from,
        to: out.caller.actor.clone(),
    });
    cancel_stale_offers(out);
    Ok(())
}

fn decline_handoff(
    out: &mut Emitter<'_>,
    handoff: HandoffId,
    reason: Option<&str>,
) -> Result<(), CommandError> {
    let pending = find_pending(out, handoff)?;
    if pending.to.id != *out.caller_id() {
        return Err(CommandError::forbidden(format!(
            "only {} may decline this handoff",
            pending.to.name
        )));
    }
    out.emit(EventKind::HandoffDeclined {
        handoff,
        role: pending.role,
        from: pending.from,
        to: pending.to,
        reason: optional_text(reason),
    });
    Ok(())
}

fn cancel_handoff(out: &mut Emitter<'_>, handoff: HandoffId) -> Result<(), CommandError> {
    let pending = find_pending(out, handoff)?;
    if pending.from.id != *out.caller_id() && !out.caller_holds(Role::IncidentCommander) {
        return Err(CommandError::forbidden(format!(
            "only {} or the incident commander may cancel this handoff",
            pending.from.name
        )));
    }
    out.emit(EventKind::HandoffCancelled {
        handoff,
        role: pending.role,
        from: pending.from,
        to: pending.to,
        reason: None,
    });
    Ok(())
}

fn assume_role(out: &mut Emitter<'_>, role: Role, reason: &str) -> Result<(), CommandError> {
    if out.caller.access != AccessRole::Admin {
        return Err(CommandError::forbidden(
            "only an admin may assume a role in an emergency",
        ));
    }
    let reason = required_text(reason, "an emergency assumption needs a reason")?;
    if out.caller_holds(role) {
        return Err(CommandError::conflict(format!("you already hold {role}")));
    }
    let holder = out.caller.actor.clone();
    take_role_by_force(out, role, holder, reason, None);
    Ok(())
}

fn force_assign_role(
    out: &mut Emitter<'_>,
    role: Role,
    to: &Actor,
    reason: &str,
) -> Result<(), CommandError> {
    if out.caller.access != AccessRole::Admin {
        return Err(CommandError::forbidden(
            "only an admin may force a role assignment",
        ));
    }
    let reason = required_text(reason, "an emergency assignment needs a reason")?;
    check_person(to)?;
    if out.state().holds(&to.id, role) {
        return Err(CommandError::conflict(format!(
            "{} already holds {role}",
            to.name
        )));
    }
    let forced_by = Some(out.caller.actor.clone());
    take_role_by_force(out, role, to.clone(), reason, forced_by);
    Ok(())
}

/// The events of an emergency role change: the role's pending offer is
/// cancelled first, then the role moves, then stale offers are cancelled.
fn take_role_by_force(
    out: &mut Emitter<'_>,
    role: Role,
    holder: Actor,
    reason: String,
    forced_by: Option<Actor>,
) {
    if let Some(pending) = out.state().pending_handoff_of(role).cloned() {
        out.emit(EventKind::HandoffCancelled {
            handoff: pending.handoff,
            role,
            from: pending.from,
            to: pending.to,
            reason: Some("superseded by an emergency role change".to_owned()),
        });
    }
    let view = out.state().role(role);
    let previous = (role == Role::IncidentCommander || view.delegated).then(|| view.holder.clone());
    out.emit(EventKind::RoleAssumed {
        role,
        holder,
        previous,
        reason,
        forced_by,
    });
    cancel_stale_offers(out);
}

/// Cancels offers that stopped making sense after a role moved: the offerer
/// holds neither the role nor command any more, or the target now holds the
/// role.
fn cancel_stale_offers(out: &mut Emitter<'_>) {
    let state = out.state();
    let stale: Vec<(PendingHandoff, String)> = state
        .pending_handoffs
        .iter()
        .filter_map(|pending| {
            let reason = if state.holds(&pending.to.id, pending.role) {
                format!("{} now holds {}", pending.to.name, pending.role)
            } else if !state.holds(&pending.from.id, pending.role)
                && !state.holds(&pending.from.id, Role::IncidentCommander)
            {
                format!(
                    "{} no longer holds {} or command",
                    pending.from.name, pending.role
                )
            } else {
                return None;
            };
            Some((pending.clone(), reason))
        })
        .collect();
    for (pending, reason) in stale {
        out.emit(EventKind::HandoffCancelled {
            handoff: pending.handoff,
            role: pending.role,
            from: pending.from,
            to: pending.to,
            reason: Some(reason),
        });
    }
}

fn set_next_commander(out: &mut Emitter<'_>, next: Option<&Actor>) -> Result<(), CommandError> {
    if !out.caller_holds(Role::IncidentCommander) && !out.caller_holds(Role::PlanningLead) {
        return Err(CommandError::forbidden(
            "only the incident commander or the planning lead may name the next commander",
        ));
    }
    let state = out.state();
    match (next, &state.next_commander) {
        (Some(next), current) => {
            check_person(next)?;
            if state.holds(&next.id, Role::IncidentCommander) {
                return Err(CommandError::conflict(format!(
                    "{} is already the incident commander",
                    next.name
                )));
            }
            if current.as_ref().is_some_and(|c| c == next) {
                return Err(CommandError::conflict(format!(
                    "{} is already the next commander",
                    next.name
                )));
            }
        }
        (None, None) => {
            return Err(CommandError::conflict("no next commander is named"));
        }
        (None, Some(_)) => {}
    }
    out.emit(EventKind::NextCommanderSet {
        next: next.cloned(),
    });
    Ok(())
}

fn pin_status(
    out: &mut Emitter<'_>,
    summary: &str,
    next_update_by: Option<DateTime<Utc>>,
    is_final: bool,
) -> Result<(), CommandError> {
    if !out.caller_holds(Role::IncidentCommander) && !out.caller_holds(Role::CommunicationsLead) {
        return Err(CommandError::forbidden(
            "only the incident commander or the communications lead may pin status",
        ));
    }
    let summary = required_text(summary, "a status summary cannot be empty")?;
    match (next_update_by, is_final) {
        (Some(_), true) => {
            return Err(CommandError::invalid(
                "a final update has no next deadline; leave out `next_update_by`",
            ));
        }
        (None, false) => {
            return Err(CommandError::invalid(
                "a status update needs `next_update_by`, unless it is the final one (`final: true`)",
            ));
        }
        (Some(next), false) if next <= out.now => {
            return Err(CommandError::invalid(
                "the next update must be due after now",
            ));
        }
        (None, true) if out.state().status == Status::Active => {
            return Err(CommandError::conflict(
                "a final update (no next deadline) is allowed once the incident is mitigated or later; it is still active",
            ));
        }
        _ => {}
    }
    out.emit(EventKind::StatusPinned {
        summary,
        next_update_by,
        is_final,
    });
    Ok(())
}

fn set_impact_start(out: &mut Emitter<'_>, at: DateTime<Utc>) -> Result<(), CommandError> {
    require_commander(out, "set the impact start")?;
    if at > out.now {
        return Err(CommandError::invalid(
            "the impact start cannot be in the future",
        ));
    }
    if out.state().impact_start == Some(at) {
        return Err(CommandError::conflict(
            "the impact start is already set to that time",
        ));
    }
    out.emit(EventKind::ImpactStartSet { impact_start: at });
    Ok(())
}

fn set_status(
    out: &mut Emitter<'_>,
    to: Status,
    override_reason: Option<&str>,
) -> Result<(), CommandError> {
    require_commander(out, "change the lifecycle status")?;
    let override_reason = override_reason
        .map(|reason| required_text(reason, "an override needs a reason"))
        .transpose()?;
    let state = out.state();
    let from = state.status;
    if from == to {
        return Err(CommandError::conflict(format!(
            "the incident is already {to}"
        )));
    }
    match (from, to) {
        (Status::Active, Status::Mitigated | Status::Resolved)
        | (Status::Mitigated, Status::Resolved | Status::Active)
        | (Status::Resolved, Status::Closed) => {}
        (_, Status::Closed) => {
            return Err(CommandError::conflict(
                "only a resolved incident can be closed",
            ));
        }
        (Status::Resolved | Status::Closed, _) => {
            return Err(CommandError::conflict(format!(
                "a {from} incident cannot become {to}; reopen it instead"
            )));
        }
        _ => {
            return Err(CommandError::conflict(format!(
                "an incident cannot move from {from} to {to}"
            )));
        }
    }
    if override_reason.is_some() && to != Status::Resolved {
        return Err(CommandError::invalid(
            "an override reason applies only when resolving",
        ));
    }
    if to == Status::Resolved && override_reason.is_none() && !state.exit_criteria_met() {
        if state.exit_criteria.is_empty() {
            return Err(CommandError::conflict(
                "resolving needs at least one exit criterion, all met, or an override reason",
            ));
        }
        let criteria: Vec<BlockingCriterion> = state
            .exit_criteria
            .iter()
            .filter(|c| !c.met)
            .map(|c| BlockingCriterion {
                id: c.criterion,
                text: c.text.clone(),
            })
            .collect();
        let listed = listing(criteria.iter().map(|c| (c.id.0, c.text.as_str())));
        return Err(blocked(
            format!(
                "resolving needs every exit criterion met, or an override reason; unmet criteria: {listed}"
            ),
            Blocking {
                criteria,
                changes: Vec::new(),
            },
        ));
    }
    if to == Status::Closed {
        let changes: Vec<BlockingChange> = state
            .open_changes()
            .map(|c| BlockingChange {
                id: c.change,
                what: c.what.clone(),
            })
            .collect();
        if !changes.is_empty() {
            let listed = listing(changes.iter().map(|c| (c.id.0, c.what.as_str())));
            return Err(blocked(
                format!(
                    "closing needs every recorded change reverted or waived; open changes: {listed}"
                ),
                Blocking {
                    criteria: Vec::new(),
                    changes,
                },
            ));
        }
        let pending = state.pending_handoffs.clone();
        for pending in pending {
            out.emit(EventKind::HandoffCancelled {
                handoff: pending.handoff,
                role: pending.role,
                from: pending.from,
                to: pending.to,
                reason: Some("the incident was closed".to_owned()),
            });
        }
    }
    out.emit(EventKind::StatusChanged {
        from,
        to,
        override_reason,
    });
    Ok(())
}

/// `#1 Service restored, #4 error rate normal`.
fn listing<'a>(items: impl Iterator<Item = (u64, &'a str)>) -> String {
    items
        .map(|(id, text)| format!("#{id} {text}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A lifecycle move refused (409) for what `blocking` lists.
fn blocked(rule: String, blocking: Blocking) -> CommandError {
    CommandError {
        blocking: Some(blocking),
        ..CommandError::conflict(rule)
    }
}

fn reopen(out: &mut Emitter<'_>, reason: &str) -> Result<(), CommandError> {
    if !out.caller_holds(Role::IncidentCommander) && out.caller.access != AccessRole::Admin {
        return Err(CommandError::forbidden(
            "only the incident commander or an admin may reopen the incident",
        ));
    }
    let reason = required_text(reason, "reopening needs a reason")?;
    let from = out.state().status;
    if !matches!(from, Status::Resolved | Status::Closed) {
        return Err(CommandError::conflict(
            "only a resolved or closed incident can be reopened",
        ));
    }
    out.emit(EventKind::Reopened { from, reason });
    Ok(())
}

fn add_exit_criterion(out: &mut Emitter<'_>, text: &str) -> Result<(), CommandError> {
    require_commander(out, "manage exit criteria")?;
    let text = required_text(text, "an exit criterion needs text")?;
    let criterion = CriterionId(out.next_seq().0);
    out.emit(EventKind::ExitCriterionAdded { criterion, text });
    Ok(())
}

fn set_exit_criterion(
    out: &mut Emitter<'_>,
    criterion: CriterionId,
    met: bool,
) -> Result<(), CommandError> {
    require_commander(out, "manage exit criteria")?;
    let current = out.state().exit_criterion(criterion).ok_or_else(|| {
        CommandError::not_found(format!("there is no exit criterion {criterion}"))
    })?;
    if current.met == met {
        return Err(CommandError::conflict(format!(
            "exit criterion {criterion} is already {}",
            if met { "met" } else { "unmet" }
        )));
    }
    out.emit(EventKind::ExitCriterionSet { criterion, met });
    Ok(())
}

fn record_change(
    out: &mut Emitter<'_>,
    what: &str,
    why: &str,
    revert: &str,
) -> Result<(), CommandError> {
    require_role(out, Role::OperationsLead, "record production changes")?;
    let what = required_text(what, "a change needs to say what changed")?;
    let revert = required_text(revert, "a change needs a way to revert it")?;
    let change = ChangeId(out.next_seq().0);
    out.emit(EventKind::ChangeRecorded {
        change,
        what,
        why: why.trim().to_owned(),
        revert,
    });
    Ok(())
}

fn open_change(out: &Emitter<'_>, change: ChangeId) -> Result<(), CommandError> {
    let found = out
        .state()
        .change(change)
        .ok_or_else(|| CommandError::not_found(format!("there is no change {change}")))?;
    match found.state {
        ChangeState::Open => Ok(()),
        ChangeState::Reverted { .. } => Err(CommandError::conflict(format!(
            "change {change} is already reverted"
        ))),
        ChangeState::Waived { .. } => Err(CommandError::conflict(format!(
            "change {change} is already waived"
        ))),
    }
}

fn mark_change_reverted(out: &mut Emitter<'_>, change: ChangeId) -> Result<(), CommandError> {
    require_role(out, Role::PlanningLead, "mark changes reverted")?;
    open_change(out, change)?;
    out.emit(EventKind::ChangeReverted { change });
    Ok(())
}

fn waive_change(out: &mut Emitter<'_>, change: ChangeId, reason: &str) -> Result<(), CommandError> {
    require_role(out, Role::PlanningLead, "waive changes")?;
    let reason = required_text(reason, "waiving a change needs a reason")?;
    open_change(out, change)?;
    out.emit(EventKind::ChangeWaived { change, reason });
    Ok(())
}

fn post_note(out: &mut Emitter<'_>, text: &str) -> Result<(), CommandError> {
    let text = required_text(text, "a note cannot be empty")?;
    let author = out.caller_id();
    let state = out.state();
    let outsider = state.roles_of(author).is_empty()
        && state.responder(author).is_none()
        && !out.caller.is_system();
    out.emit(EventKind::NotePosted { text, outsider });
    Ok(())
}

/// The timer: expires due offers, then reports a missed update once.
fn tick(out: &mut Emitter<'_>) {
    let now = out.now;
    let state = out.state();
    let expired: Vec<PendingHandoff> = state
        .pending_handoffs
        .iter()
        .filter(|p| p.expires_at <= now)
        .cloned()
        .collect();
    let overdue = state
        .pin
        .as_ref()
        .filter(|pin| !pin.overdue && reports_overdue(state.status))
        .and_then(|pin| Some((pin.seq, pin.next_update_by?)))
        .filter(|(_, due)| *due <= now);
    for pending in expired {
        out.emit(EventKind::HandoffExpired {
            handoff: pending.handoff,
            role: pending.role,
            from: pending.from,
            to: pending.to,
        });
    }
    if let Some((pin, due)) = overdue {
        out.emit(EventKind::UpdateOverdue { pin, due });
    }
}

fn reports_overdue(status: Status) -> bool {
    matches!(status, Status::Active | Status::Mitigated)
}

fn require_commander(out: &Emitter<'_>, action: &str) -> Result<(), CommandError> {
    if out.caller_holds(Role::IncidentCommander) {
        Ok(())
    } else {
        Err(CommandError::forbidden(format!(
            "only the incident commander may {action}"
        )))
    }
}

/// The caller must effectively hold `role` (the commander does while it is
/// not delegated).
fn require_role(out: &Emitter<'_>, role: Role, action: &str) -> Result<(), CommandError> {
    if out.caller_holds(role) {
        return Ok(());
    }
    let view = out.state().role(role);
    Err(CommandError::forbidden(if view.delegated {
        format!(
            "only the {role} may {action} ({} is delegated to {})",
            role.area(),
            view.holder.name
        )
    } else {
        format!(
            "only the {role} may {action} (the incident commander holds {} while it is not delegated)",
            role.area()
        )
    }))
}

/// The caller must hold some role (command included).
fn require_lead(out: &Emitter<'_>, action: &str) -> Result<(), CommandError> {
    if Role::ALL.into_iter().any(|role| out.caller_holds(role)) {
        Ok(())
    } else {
        Err(CommandError::forbidden(format!(
            "only the incident commander or a role lead may {action}"
        )))
    }
}

/// A person named in a command must be identifiable, and not the server.
fn check_person(actor: &Actor) -> Result<(), CommandError> {
    if actor.id.0.trim().is_empty() || actor.name.trim().is_empty() {
        return Err(CommandError::invalid("a person needs an id and a name"));
    }
    if limits::is_reserved_user_id(&actor.id.0) {
        return Err(CommandError::invalid(
            "the server cannot take part in an incident",
        ));
    }
    Ok(())
}

/// Refuses a command with a text over its limit, or one that would grow a
/// list of the incident past its limit (see [`limits`]). Checked before any
/// rule, so a refusal names the field whatever else is wrong.
fn check_sizes(state: Option<&IncidentState>, command: &Command) -> Result<(), CommandError> {
    fn text(field: &str, value: &str, max: usize) -> Result<(), CommandError> {
        let length = value.trim().chars().count();
        if length > max {
            return Err(CommandError::invalid(format!(
                "`{field}` is {length} characters; the limit is {max}"
            )));
        }
        Ok(())
    }
    fn person(field: &str, actor: &Actor) -> Result<(), CommandError> {
        text(&format!("{field}.id"), &actor.id.0, limits::USER_ID_CHARS)?;
        text(&format!("{field}.name"), &actor.name, limits::NAME_CHARS)
    }
    fn room_for(what: &str, count: usize, max: usize) -> Result<(), CommandError> {
        if count >= max {
            return Err(CommandError::conflict(format!(
                "the incident already has {count} {what}, the limit"
            )));
        }
        Ok(())
    }
    let short = limits::SHORT_TEXT_CHARS;
    match command {
        // The title's bounds are the declaration's own rule.
        Command::Declare { summary, .. } => text(
            "summary",
            summary.as_deref().unwrap_or(""),
            limits::SUMMARY_CHARS,
        ),
        Command::AssignRole { to, .. } => person("to", to),
        Command::AddResponder {
            responder,
            assignment,
        } => {
            person("responder", responder)?;
            text("assignment", assignment, short)?;
            let listed = state.map_or(0, |s| s.responders.len());
            let known =
                state.is_some_and(|s| s.responders.iter().any(|r| r.actor.id == responder.id));
            if known {
                Ok(())
            } else {
                room_for("responders", listed, limits::RESPONDERS)
            }
        }
        Command::RemoveResponder { responder } => {
            text("responder", &responder.0, limits::USER_ID_CHARS)
        }
        Command::OfferHandoff { to, notes, .. } => {
            person("to", to)?;
            text("notes", notes, limits::NOTE_CHARS)
        }
        Command::DeclineHandoff { reason, .. } => {
            text("reason", reason.as_deref().unwrap_or(""), short)
        }
        Command::AssumeRole { reason, .. } | Command::Reopen { reason } => {
            text("reason", reason, short)
        }
        Command::ForceAssignRole { to, reason, .. } => {
            person("to", to)?;
            text("reason", reason, short)
        }
        Command::SetNextCommander { next } => {
            next.as_ref().map_or(Ok(()), |next| person("next", next))
        }
        Command::PinStatus { summary, .. } => text("summary", summary, limits::SUMMARY_CHARS),
        Command::SetStatus {
            override_reason, ..
        } => text(
            "override_reason",
            override_reason.as_deref().unwrap_or(""),
            short,
        ),
        Command::AddExitCriterion { text: criterion } => {
            text("text", criterion, short)?;
            room_for(
                "exit criteria",
                state.map_or(0, |s| s.exit_criteria.len()),
                limits::EXIT_CRITERIA,
            )
        }
        Command::RecordChange { what, why, revert } => {
            text("what", what, short)?;
            text("why", why, short)?;
            text("revert", revert, short)?;
            room_for(
                "open changes",
                state.map_or(0, |s| s.open_changes().count()),
                limits::OPEN_CHANGES,
            )
        }
        Command::WaiveChange { reason, .. } => text("reason", reason, short),
        Command::PostNote { text: note } => text("text", note, limits::NOTE_CHARS),
        Command::SetSeverity { .. }
        | Command::SetImpactStart { .. }
        | Command::AcceptHandoff { .. }
        | Command::CancelHandoff { .. }
        | Command::SetExitCriterion { .. }
        | Command::MarkChangeReverted { .. }
        | Command::Tick => Ok(()),
    }
}

fn required_text(text: &str, rule: &str) -> Result<String, CommandError> {
    let text = text.trim();
    if text.is_empty() {
        Err(CommandError::invalid(rule))
    } else {
        Ok(text.to_owned())
    }
}

fn optional_text(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------
// Folding events

fn declared_state(event: &Event) -> IncidentState {
    let EventKind::Declared {
        title,
        severity,
        criteria,
        summary,
        commander,
    } = &event.kind
    else {
        panic!(
            "corrupt incident log: event {} is {}, but the first event must be declared",
            event.seq,
            event.kind.name()
        );
    };
    IncidentState {
        title: title.clone(),
        severity: *severity,
        criteria: *criteria,
        summary: summary.clone(),
        status: Status::Active,
        declared_at: event.at,
        impact_start: None,
        declared_by: commander.clone(),
        roles: Role::ALL
            .into_iter()
            .map(|role| RoleView {
                role,
                holder: commander.clone(),
                delegated: false,
                since: event.at,
            })
            .collect(),
        responders: Vec::new(),
        pending_handoffs: Vec::new(),
        next_commander: None,
        pin: None,
        exit_criteria: Vec::new(),
        changes: Vec::new(),
        role_history: vec![Tenure {
            role: Role::IncidentCommander,
            holder: commander.clone(),
            from: event.at,
            to: None,
        }],
        recent_notes: Vec::new(),
        recent_timeline: Vec::new(),
        last_seq: event.seq,
        updated_at: event.at,
    }
}

fn absorb(state: &mut IncidentState, event: &Event) {
    let at = event.at;
    match &event.kind {
        EventKind::Declared { .. } => panic!(
            "corrupt incident log: event {} declares the incident a second time",
            event.seq
        ),
        EventKind::SeveritySet { severity } => state.severity = Some(*severity),
        EventKind::RoleAssigned { role, holder, .. }
        | EventKind::RoleAssumed { role, holder, .. } => give_role(state, *role, holder, at),
        EventKind::HandoffAccepted {
            handoff, role, to, ..
        } => {
            remove_pending(state, *handoff);
            give_role(state, *role, to, at);
        }
        EventKind::ResponderAdded {
            responder,
            assignment,
        } => {
            let entry = Responder {
                actor: responder.clone(),
                assignment: assignment.clone(),
                since: at,
            };
            match state
                .responders
                .iter_mut()
                .find(|r| r.actor.id == responder.id)
            {
                Some(existing) => *existing = entry,
                None => state.responders.push(entry),
            }
        }
        EventKind::ResponderRemoved { responder } => {
            state.responders.retain(|r| r.actor.id != *responder);
        }
        EventKind::HandoffOffered {
            handoff,
            role,
            from,
            to,
            briefing,
            expires_at,
        } => state.pending_handoffs.push(PendingHandoff {
            handoff: *handoff,
            role: *role,
            from: from.clone(),
            to: to.clone(),
            briefing: briefing.clone(),
            offered_at: at,
            expires_at: *expires_at,
        }),
        EventKind::HandoffDeclined { handoff, .. }
        | EventKind::HandoffCancelled { handoff, .. }
        | EventKind::HandoffExpired { handoff, .. } => remove_pending(state, *handoff),
        EventKind::NextCommanderSet { next } => state.next_commander = next.clone(),
        EventKind::StatusPinned {
            summary,
            next_update_by,
            is_final,
        } => {
            state.pin = Some(Pin {
                summary: summary.clone(),
                next_update_by: *next_update_by,
                is_final: *is_final,
                pinned_at: at,
                pinned_by: event.actor.clone(),
                seq: event.seq,
                overdue: false,
            });
        }
        EventKind::UpdateOverdue { pin, .. } => {
            if let Some(current) = state.pin.as_mut().filter(|p| p.seq == *pin) {
                current.overdue = true;
            }
        }
        EventKind::ImpactStartSet { impact_start } => state.impact_start = Some(*impact_start),
        EventKind::AttemptRefused { .. } => {}
        EventKind::StatusChanged { to, .. } => state.status = *to,
        EventKind::Reopened { .. } => state.status = Status::Active,
        EventKind::ExitCriterionAdded { criterion, text } => {
            state.exit_criteria.push(ExitCriterion {
                criterion: *criterion,
                text: text.clone(),
                met: false,
            });
        }
        EventKind::ExitCriterionSet { criterion, met } => {
            if let Some(c) = state
                .exit_criteria
                .iter_mut()
                .find(|c| c.criterion == *criterion)
            {
                c.met = *met;
            }
        }
        EventKind::ChangeRecorded {
            change,
            what,
            why,
            revert,
        } => state.changes.push(Change {
            change: *change,
            what: what.clone(),
            why: why.clone(),
            revert: revert.clone(),
            recorded_by: event.actor.clone(),
            recorded_at: at,
            state: ChangeState::Open,
        }),
        EventKind::ChangeReverted { change } => set_change_state(
            state,
            *change,
            ChangeState::Reverted {
                by: event.actor.clone(),
                at,
            },
        ),
        EventKind::ChangeWaived { change, reason } => set_change_state(
            state,
            *change,
            ChangeState::Waived {
                by: event.actor.clone(),
                at,
                reason: reason.clone(),
            },
        ),
        EventKind::NotePosted { text, .. } => push_bounded(
            &mut state.recent_notes,
            Note {
                seq: event.seq,
                at,
                author: event.actor.clone(),
                text: text.clone(),
            },
            RECENT_NOTES,
        ),
    }
}

/// Moves `role` to `holder` at `at`, keeping effective holders, delegation
/// and role history consistent (see the module docs).
fn give_role(state: &mut IncidentState, role: Role, holder: &Actor, at: DateTime<Utc>) {
    if role == Role::IncidentCommander {
        close_tenure(state, role, at);
        open_tenure(state, role, holder, at);
        state.roles[role.index()] = RoleView {
            role,
            holder: holder.clone(),
            delegated: false,
            since: at,
        };
        for other in &Role::ALL[1..] {
            let view = &state.roles[other.index()];
            let delegated = view.delegated;
            let folds_into_command = delegated && view.holder.id == holder.id;
            if folds_into_command {
                close_tenure(state, *other, at);
            }
            if folds_into_command || !delegated {
                state.roles[other.index()] = RoleView {
                    role: *other,
                    holder: holder.clone(),
                    delegated: false,
                    since: at,
                };
            }
        }
        if state
            .next_commander
            .as_ref()
            .is_some_and(|next| next.id == holder.id)
        {
            state.next_commander = None;
        }
    } else {
        close_tenure(state, role, at);
        let commander = state.commander().clone();
        if commander.id == holder.id {
            state.roles[role.index()] = RoleView {
                role,
                holder: commander,
                delegated: false,
                since: at,
            };
        } else {
            state.roles[role.index()] = RoleView {
                role,
                holder: holder.clone(),
                delegated: true,
                since: at,
            };
            open_tenure(state, role, holder, at);
        }
    }
}

fn close_tenure(state: &mut IncidentState, role: Role, at: DateTime<Utc>) {
    for tenure in &mut state.role_history {
        if tenure.role == role && tenure.to.is_none() {
            tenure.to = Some(at);
        }
    }
}

fn open_tenure(state: &mut IncidentState, role: Role, holder: &Actor, at: DateTime<Utc>) {
    state.role_history.push(Tenure {
        role,
        holder: holder.clone(),
        from: at,
        to: None,
    });
}

fn remove_pending(state: &mut IncidentState, handoff: HandoffId) {
    state.pending_handoffs.retain(|p| p.handoff != handoff);
}

fn set_change_state(state: &mut IncidentState, change: ChangeId, new_state: ChangeState) {
    if let Some(c) = state.changes.iter_mut().find(|c| c.change == change) {
        c.state = new_state;
    }
}

fn push_bounded<T>(items: &mut Vec<T>, item: T, bound: usize) {
    items.push(item);
    if items.len() > bound {
        let excess = items.len() - bound;
        items.drain(..excess);
    }
}

fn strictly_increasing(
    ids: impl Iterator<Item = u64>,
    last_seq: EventSeq,
    what: &str,
) -> Result<(), String> {
    let mut previous = 0;
    for id in ids {
        if id <= previous || id > last_seq.0 {
            return Err(format!(
                "{what} ids must increase and not exceed the last seq"
            ));
        }
        previous = id;
    }
    Ok(())
}

fn change_name(before: Option<&IncidentState>, change: ChangeId) -> String {
    before
        .and_then(|s| s.change(change))
        .map_or_else(|| change.to_string(), |c| format!("\"{}\"", c.what))
}

/// `HH:MM UTC`.
fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M UTC").to_string()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
