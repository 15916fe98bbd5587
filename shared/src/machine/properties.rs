//! Property tests of the state machine: random command sequences from random
//! callers (a small pool of responders, admins and a viewer, plus the
//! server's timer with increasing time) never break the invariants; replaying
//! the log after every step rebuilds exactly the incrementally evolved state;
//! every event and state survives a JSON round trip; and [`next_deadline`] is
//! exact (a tick just before it does nothing, a tick at it does something).
//!
//! Commands are generated abstractly ("accept the k-th pending offer", "the
//! holder of planning acts") and resolved against the current state, so that
//! sequences get deep into handoffs, emergencies and the lifecycle instead of
//! being refused at the first step. `generated_sequences_reach_every_event`
//! checks that they do.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::*;
use crate::incident::*;
use crate::{AccessRole, Actor, UserId};

/// The people in the generated incidents: three responders, two admins and
/// a viewer.
const PEOPLE: [(&str, &str, AccessRole); 6] = [
    ("alice", "Alice", AccessRole::Responder),
    ("bob", "Bob", AccessRole::Responder),
    ("carol", "Carol", AccessRole::Responder),
    ("dave", "Dave", AccessRole::Admin),
    ("erin", "Erin", AccessRole::Admin),
    ("vic", "Vic", AccessRole::Viewer),
];

fn person(index: usize) -> Caller {
    let (id, name, access) = PEOPLE[index % PEOPLE.len()];
    Caller::new(
        Actor {
            id: UserId(id.to_owned()),
            name: name.to_owned(),
        },
        access,
    )
}

/// The caller behind an actor recorded in the state.
fn caller_of(actor: &Actor) -> Caller {
    let index = PEOPLE
        .iter()
        .position(|(id, ..)| actor.id.0 == *id)
        .expect("every actor comes from the pool");
    person(index)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0).unwrap()
}

/// Who issues a step's command, resolved against the current state.
#[derive(Clone, Debug)]
enum Who {
    /// Whoever the rules would let issue the command (the commander for
    /// commander-only commands, the named person for an acceptance, ...).
    Natural(usize),
    Commander,
    Holder(Role),
    /// The person the first pending offer names.
    Target,
    /// Whoever made the first pending offer.
    Offerer,
    Anyone(usize),
    System,
}

/// A command with its ids left abstract (indexes into the current state).
#[derive(Clone, Debug)]
enum Op {
    Declare,
    SetSeverity(Severity),
    AssignRole(Role, usize),
    AddResponder(usize, bool),
    RemoveResponder(usize),
    Offer(Role, usize),
    Accept(usize),
    Decline(usize),
    Cancel(usize),
    Assume(Role, bool),
    Force(Role, usize, bool),
    SetNext(Option<usize>),
    Pin(i64),
    SetStatus(Status, Option<bool>),
    /// Move to the status after the current one (with an override reason
    /// when resolving, if `true`).
    Progress(bool),
    Reopen(bool),
    AddCriterion,
    SetCriterion(usize, bool),
    RecordChange,
    Revert(usize),
    Waive(usize, bool),
    Note,
    Tick,
}

#[derive(Clone, Debug)]
struct Step {
    who: Who,
    op: Op,
    /// Seconds the clock moves before the step.
    advance: i64,
}

fn any_role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}

fn any_status() -> impl Strategy<Value = Status> {
    prop::sample::select(vec![
        Status::Active,
        Status::Mitigated,
        Status::Resolved,
        Status::Closed,
    ])
}

fn any_who() -> impl Strategy<Value = Who> {
    prop_oneof![
        12 => (0..2usize).prop_map(Who::Natural),
        4 => Just(Who::Commander),
        4 => any_role().prop_map(Who::Holder),
        3 => Just(Who::Target),
        1 => Just(Who::Offerer),
        3 => (0..PEOPLE.len()).prop_map(Who::Anyone),
        1 => Just(Who::System),
    ]
}

fn any_op() -> impl Strategy<Value = Op> {
    let person = 0..PEOPLE.len();
    let pick = 0..4usize;
    prop_oneof![
        1 => Just(Op::Declare),
        2 => prop::sample::select(Severity::ALL.to_vec()).prop_map(Op::SetSeverity),
        4 => (any_role(), person.clone()).prop_map(|(r, p)| Op::AssignRole(r, p)),
        2 => (person.clone(), any::<bool>()).prop_map(|(p, b)| Op::AddResponder(p, b)),
        1 => person.clone().prop_map(Op::RemoveResponder),
        3 => (any_role(), person.clone()).prop_map(|(r, p)| Op::Offer(r, p)),
        3 => person.clone().prop_map(|p| Op::Offer(Role::IncidentCommander, p)),
        5 => pick.clone().prop_map(Op::Accept),
        1 => pick.clone().prop_map(Op::Decline),
        1 => pick.clone().prop_map(Op::Cancel),
        1 => (any_role(), prop::bool::weighted(0.8)).prop_map(|(r, b)| Op::Assume(r, b)),
        1 => (any_role(), person.clone(), prop::bool::weighted(0.8))
            .prop_map(|(r, p, b)| Op::Force(r, p, b)),
        2 => prop::option::weighted(0.8, person).prop_map(Op::SetNext),
        3 => (-5i64..40).prop_map(Op::Pin),
        4 => (any_status(), prop::option::weighted(0.5, prop::bool::weighted(0.9)))
            .prop_map(|(s, o)| Op::SetStatus(s, o)),
        3 => any::<bool>().prop_map(Op::Progress),
        1 => prop::bool::weighted(0.8).prop_map(Op::Reopen),
        2 => Just(Op::AddCriterion),
        2 => (pick.clone(), prop::bool::weighted(0.8)).prop_map(|(k, m)| Op::SetCriterion(k, m)),
        3 => Just(Op::RecordChange),
        2 => pick.clone().prop_map(Op::Revert),
        2 => (pick, prop::bool::weighted(0.8)).prop_map(|(k, b)| Op::Waive(k, b)),
        2 => Just(Op::Note),
        5 => Just(Op::Tick),
    ]
}

fn any_step() -> impl Strategy<Value = Step> {
    (any_who(), any_op(), 0i64..300).prop_map(|(who, op, advance)| Step { who, op, advance })
}

/// A declaration by one of the writers, then random steps.
fn any_sequence(max_steps: usize) -> impl Strategy<Value = Vec<Step>> {
    (0..5usize, prop::collection::vec(any_step(), 1..max_steps)).prop_map(|(declarer, rest)| {
        let mut steps = vec![Step {
            who: Who::Anyone(declarer),
            op: Op::Declare,
            advance: 0,
        }];
        steps.extend(rest);
        steps
    })
}

/// The caller the rules would accept for `op`, if there is an obvious one.
fn natural_caller(op: &Op, state: &IncidentState, admin: usize) -> Option<Caller> {
    let pending = |k: usize| {
        let all = &state.pending_handoffs;
        (!all.is_empty()).then(|| &all[k % all.len()])
    };
    let holder = |role: Role| Some(caller_of(state.holder(role)));
    match op {
        Op::Declare | Op::Note => None,
        Op::SetSeverity(_)
        | Op::AssignRole(..)
        | Op::SetStatus(..)
        | Op::Progress(_)
        | Op::Reopen(_)
        | Op::AddCriterion
        | Op::SetCriterion(..) => holder(Role::IncidentCommander),
        Op::AddResponder(..) | Op::RemoveResponder(_) | Op::Offer(Role::IncidentCommander, _) => {
            holder(Role::IncidentCommander)
        }
        Op::Offer(role, _) => holder(*role),
        Op::Accept(k) | Op::Decline(k) => pending(*k).map(|p| caller_of(&p.to)),
        Op::Cancel(k) => pending(*k).map(|p| caller_of(&p.from)),
        Op::Assume(..) | Op::Force(..) => Some(person(3 + admin)),
        Op::SetNext(_) => holder(Role::PlanningLead),
        Op::Pin(_) => holder(Role::CommunicationsLead),
        Op::RecordChange => holder(Role::OperationsLead),
        Op::Revert(_) | Op::Waive(..) => holder(Role::PlanningLead),
        Op::Tick => Some(Caller::system()),
    }
}

fn resolve_caller(who: &Who, op: &Op, state: Option<&IncidentState>) -> Caller {
    let first_pending = state.and_then(|s| s.pending_handoffs.first());
    if let (Who::Natural(admin), Some(state)) = (who, state)
        && let Some(caller) = natural_caller(op, state, *admin)
    {
        return caller;
    }
    match (op, who) {
        // Ticks come from the timer unless a named person tries one.
        (Op::Tick, Who::Anyone(index)) => person(*index),
        (Op::Tick, _) => Caller::system(),
        (_, Who::System) => Caller::system(),
        (_, Who::Anyone(index) | Who::Natural(index)) => person(*index),
        (_, Who::Commander) => state.map_or_else(|| person(0), |s| caller_of(s.commander())),
        (_, Who::Holder(role)) => state.map_or_else(|| person(1), |s| caller_of(s.holder(*role))),
        (_, Who::Target) => first_pending.map_or_else(|| person(1), |p| caller_of(&p.to)),
        (_, Who::Offerer) => first_pending.map_or_else(|| person(2), |p| caller_of(&p.from)),
    }
}

/// The id of the k-th item, or a made-up one when there is none.
fn pick<T>(items: &[T], k: usize, id: impl Fn(&T) -> u64) -> u64 {
    if items.is_empty() {
        k as u64 + 1
    } else {
        id(&items[k % items.len()])
    }
}

fn resolve_command(op: &Op, state: Option<&IncidentState>, now: DateTime<Utc>) -> Command {
    let empty_pending = Vec::new();
    let empty_criteria = Vec::new();
    let empty_changes = Vec::new();
    let pending = state.map_or(&empty_pending, |s| &s.pending_handoffs);
    let criteria = state.map_or(&empty_criteria, |s| &s.exit_criteria);
    let changes = state.map_or(&empty_changes, |s| &s.changes);
    let handoff = |k: usize| HandoffId(pick(pending, k, |p| p.handoff.0));
    let reason = |given: bool| {
        if given {
            "because".to_owned()
        } else {
            " ".to_owned()
        }
    };
    match op {
        Op::Declare => Command::Declare {
            title: "Checkout is down".to_owned(),
            severity: Some(Severity::Sev2),
            criteria: Some(Criteria {
                needs_other_team: false,
                customer_visible: true,
                unresolved_after_hour: false,
            }),
            summary: None,
        },
        Op::SetSeverity(severity) => Command::SetSeverity {
            severity: *severity,
        },
        Op::AssignRole(role, p) => Command::AssignRole {
            role: *role,
            to: person(*p).actor,
        },
        Op::AddResponder(p, first) => Command::AddResponder {
            responder: person(*p).actor,
            assignment: if *first { "database" } else { "network" }.to_owned(),
        },
        Op::RemoveResponder(p) => Command::RemoveResponder {
            responder: person(*p).actor.id,
        },
        Op::Offer(role, p) => Command::OfferHandoff {
            role: *role,
            to: person(*p).actor,
            notes: "over to you".to_owned(),
        },
        Op::Accept(k) => Command::AcceptHandoff {
            handoff: handoff(*k),
        },
        Op::Decline(k) => Command::DeclineHandoff {
            handoff: handoff(*k),
            reason: Some("busy".to_owned()),
        },
        Op::Cancel(k) => Command::CancelHandoff {
            handoff: handoff(*k),
        },
        Op::Assume(role, given) => Command::AssumeRole {
            role: *role,
            reason: reason(*given),
        },
        Op::Force(role, p, given) => Command::ForceAssignRole {
            role: *role,
            to: person(*p).actor,
            reason: reason(*given),
        },
        Op::SetNext(next) => Command::SetNextCommander {
            next: next.map(|p| person(p).actor),
        },
        Op::Pin(minutes) => Command::PinStatus {
            summary: "working on it".to_owned(),
            next_update_by: Some(now + Duration::minutes(*minutes)),
            is_final: false,
        },
        Op::SetStatus(status, override_reason) => Command::SetStatus {
            status: *status,
            override_reason: override_reason.map(reason),
        },
        Op::Progress(with_override) => {
            let next = match state.map(|s| s.status) {
                None | Some(Status::Active) => Status::Mitigated,
                Some(Status::Mitigated) => Status::Resolved,
                Some(Status::Resolved | Status::Closed) => Status::Closed,
            };
            Command::SetStatus {
                status: next,
                override_reason: (*with_override && next == Status::Resolved)
                    .then(|| "good enough".to_owned()),
            }
        }
        Op::Reopen(given) => Command::Reopen {
            reason: reason(*given),
        },
        Op::AddCriterion => Command::AddExitCriterion {
            text: "errors normal".to_owned(),
        },
        Op::SetCriterion(k, met) => Command::SetExitCriterion {
            criterion: CriterionId(pick(criteria, *k, |c| c.criterion.0)),
            met: *met,
        },
        Op::RecordChange => Command::RecordChange {
            what: "restarted the workers".to_owned(),
            why: "stuck".to_owned(),
            revert: "nothing to revert".to_owned(),
        },
        Op::Revert(k) => Command::MarkChangeReverted {
            change: ChangeId(pick(changes, *k, |c| c.change.0)),
        },
        Op::Waive(k, given) => Command::WaiveChange {
            change: ChangeId(pick(changes, *k, |c| c.change.0)),
            reason: reason(*given),
        },
        Op::Note => Command::PostNote {
            text: "still looking".to_owned(),
        },
        Op::Tick => Command::Tick,
    }
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// Runs a sequence, checking every property after every step; returns the
/// log.
fn run(steps: &[Step]) -> Result<Vec<Event>, TestCaseError> {
    let rules = Rules::default();
    let system = Caller::system();
    let mut now = t0();
    let mut state: Option<IncidentState> = None;
    let mut log: Vec<Event> = Vec::new();
    for step in steps {
        now += Duration::seconds(step.advance);
        let caller = resolve_caller(&step.who, &step.op, state.as_ref());
        let command = resolve_command(&step.op, state.as_ref(), now);
        match apply(state.as_ref(), &command, &caller, now, &rules) {
            Ok(events) => {
                prop_assert!(caller.access.can_write(), "a viewer changed the incident");
                prop_assert!(
                    !events.is_empty() || command == Command::Tick,
                    "{} was accepted without events",
                    command.name()
                );
                for event in &events {
                    let expected = EventSeq(state.as_ref().map_or(0, |s| s.last_seq.0) + 1);
                    prop_assert_eq!(event.seq, expected);
                    prop_assert_eq!(event.at, now);
                    prop_assert_eq!(&event.actor, &caller.actor);
                    let json = serde_json::to_string(event).map_err(|e| fail(e.to_string()))?;
                    let back: Event =
                        serde_json::from_str(&json).map_err(|e| fail(e.to_string()))?;
                    prop_assert_eq!(&back, event);
                    state = Some(evolve(state.take(), event));
                    log.push(event.clone());
                }
                if let Some(current) = &state {
                    check_invariants(current).map_err(|broken| {
                        fail(format!(
                            "after {} by {}: {broken}",
                            command.name(),
                            caller.actor.name
                        ))
                    })?;
                    check_sequence(&log).map_err(fail)?;
                    // The overdue flag agrees with the log: reported once
                    // per pin, and only for pins that were reported.
                    let reported: Vec<EventSeq> = log
                        .iter()
                        .filter_map(|e| match e.kind {
                            EventKind::UpdateOverdue { pin, .. } => Some(pin),
                            _ => None,
                        })
                        .collect();
                    let unique: BTreeSet<EventSeq> = reported.iter().copied().collect();
                    prop_assert_eq!(unique.len(), reported.len(), "a pin was reported twice");
                    if let Some(pin) = &current.pin {
                        prop_assert_eq!(pin.overdue, unique.contains(&pin.seq));
                    }
                    let replayed = fold(&log);
                    prop_assert_eq!(replayed.as_ref(), Some(current));
                    let json = serde_json::to_string(current).map_err(|e| fail(e.to_string()))?;
                    let back: IncidentState =
                        serde_json::from_str(&json).map_err(|e| fail(e.to_string()))?;
                    prop_assert_eq!(&back, current);
                }
            }
            Err(error) => {
                prop_assert!(!error.rule.is_empty() && !error.rule.ends_with('.'));
            }
        }
        // The timer's schedule is exact.
        if let Some(current) = &state {
            let tick =
                |at: DateTime<Utc>| apply(Some(current), &Command::Tick, &system, at, &rules);
            match next_deadline(current) {
                Some(deadline) => {
                    let early = tick(deadline - Duration::milliseconds(1));
                    prop_assert_eq!(early, Ok(Vec::new()), "a tick before the deadline");
                    let due = tick(deadline).map_err(|e| fail(e.to_string()))?;
                    prop_assert!(!due.is_empty(), "a tick at the deadline did nothing");
                }
                None => {
                    let late = tick(now + Duration::days(365));
                    prop_assert_eq!(late, Ok(Vec::new()), "nothing was scheduled");
                }
            }
        }
    }
    Ok(log)
}

proptest! {
    #![proptest_config(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    })]

    /// Any sequence of commands keeps the invariants, and the log replays to
    /// the same state.
    #[test]
    fn random_sequences_keep_the_invariants(steps in any_sequence(100)) {
        run(&steps)?;
    }
}

/// The generator is only useful if it reaches deep states: over a fixed set
/// of sequences, every kind of event must occur.
#[test]
fn generated_sequences_reach_every_event() {
    let mut runner = TestRunner::deterministic();
    let strategy = any_sequence(100);
    let mut seen = BTreeSet::new();
    for _ in 0..300 {
        let steps = strategy.new_tree(&mut runner).unwrap().current();
        for event in run(&steps).unwrap() {
            seen.insert(event.kind.name());
            match event.kind {
                EventKind::StatusChanged {
                    to: Status::Closed, ..
                } => seen.insert("closed"),
                EventKind::HandoffAccepted {
                    role: Role::IncidentCommander,
                    ..
                } => seen.insert("command handed over"),
                _ => false,
            };
        }
    }
    let all = [
        "declared",
        "severity_set",
        "role_assigned",
        "responder_added",
        "responder_removed",
        "handoff_offered",
        "handoff_accepted",
        "handoff_declined",
        "handoff_cancelled",
        "handoff_expired",
        "role_assumed",
        "next_commander_set",
        "status_pinned",
        "update_overdue",
        "status_changed",
        "reopened",
        "exit_criterion_added",
        "exit_criterion_set",
        "change_recorded",
        "change_reverted",
        "change_waived",
        "note_posted",
        "closed",
        "command handed over",
    ];
    let missing: Vec<&str> = all.into_iter().filter(|k| !seen.contains(k)).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}
