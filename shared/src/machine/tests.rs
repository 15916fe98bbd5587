//! Unit tests of the state machine: one test per rule, every refusal path,
//! the permission matrix, and the handoff, overdue and lifecycle scenarios.
//!
//! Every command goes through [`Scenario::try_apply`], which also checks the
//! invariants, the event numbering and that replaying the log rebuilds the
//! state, after every accepted command.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::incident::*;
use crate::{AccessRole, Actor, UserId};

// ---------------------------------------------------------------------------
// People and commands

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0).unwrap()
}

fn caller(id: &str, name: &str, access: AccessRole) -> Caller {
    Caller::new(
        Actor {
            id: UserId(id.to_owned()),
            name: name.to_owned(),
        },
        access,
    )
}

fn alice() -> Caller {
    caller("alice", "Alice", AccessRole::Responder)
}
fn bob() -> Caller {
    caller("bob", "Bob", AccessRole::Responder)
}
fn carol() -> Caller {
    caller("carol", "Carol", AccessRole::Responder)
}
fn dave() -> Caller {
    caller("dave", "Dave", AccessRole::Responder)
}
fn adam() -> Caller {
    caller("adam", "Adam", AccessRole::Admin)
}
fn vera() -> Caller {
    caller("vera", "Vera", AccessRole::Viewer)
}

fn declare(title: &str) -> Command {
    Command::Declare {
        title: title.to_owned(),
        severity: None,
        criteria: None,
        summary: None,
    }
}
fn assign(role: Role, to: &Caller) -> Command {
    Command::AssignRole {
        role,
        to: to.actor.clone(),
    }
}
fn offer(role: Role, to: &Caller) -> Command {
    Command::OfferHandoff {
        role,
        to: to.actor.clone(),
        notes: String::new(),
    }
}
fn accept(handoff: HandoffId) -> Command {
    Command::AcceptHandoff { handoff }
}
fn decline(handoff: HandoffId) -> Command {
    Command::DeclineHandoff {
        handoff,
        reason: None,
    }
}
fn cancel(handoff: HandoffId) -> Command {
    Command::CancelHandoff { handoff }
}
fn note(text: &str) -> Command {
    Command::PostNote {
        text: text.to_owned(),
    }
}
fn pin(summary: &str, next_update_by: DateTime<Utc>) -> Command {
    Command::PinStatus {
        summary: summary.to_owned(),
        next_update_by: Some(next_update_by),
        is_final: false,
    }
}
fn status(status: Status) -> Command {
    Command::SetStatus {
        status,
        override_reason: None,
    }
}
fn status_with_override(status: Status, reason: &str) -> Command {
    Command::SetStatus {
        status,
        override_reason: Some(reason.to_owned()),
    }
}
fn add_criterion(text: &str) -> Command {
    Command::AddExitCriterion {
        text: text.to_owned(),
    }
}
fn set_criterion(criterion: CriterionId, met: bool) -> Command {
    Command::SetExitCriterion { criterion, met }
}
fn record(what: &str) -> Command {
    Command::RecordChange {
        what: what.to_owned(),
        why: "to stop the bleeding".to_owned(),
        revert: format!("undo {what}"),
    }
}
fn reverted(change: ChangeId) -> Command {
    Command::MarkChangeReverted { change }
}
fn waive(change: ChangeId, reason: &str) -> Command {
    Command::WaiveChange {
        change,
        reason: reason.to_owned(),
    }
}
fn add_responder(who: &Caller, assignment: &str) -> Command {
    Command::AddResponder {
        responder: who.actor.clone(),
        assignment: assignment.to_owned(),
    }
}
fn assume(role: Role, reason: &str) -> Command {
    Command::AssumeRole {
        role,
        reason: reason.to_owned(),
    }
}
fn force(role: Role, to: &Caller, reason: &str) -> Command {
    Command::ForceAssignRole {
        role,
        to: to.actor.clone(),
        reason: reason.to_owned(),
    }
}
fn set_next(next: Option<&Caller>) -> Command {
    Command::SetNextCommander {
        next: next.map(|c| c.actor.clone()),
    }
}
fn reopen(reason: &str) -> Command {
    Command::Reopen {
        reason: reason.to_owned(),
    }
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

fn offered_id(events: &[Event]) -> HandoffId {
    events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::HandoffOffered { handoff, .. } => Some(handoff),
            _ => None,
        })
        .expect("a handoff_offered event")
}

fn change_id(events: &[Event]) -> ChangeId {
    events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::ChangeRecorded { change, .. } => Some(change),
            _ => None,
        })
        .expect("a change_recorded event")
}

fn criterion_id(events: &[Event]) -> CriterionId {
    events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::ExitCriterionAdded { criterion, .. } => Some(criterion),
            _ => None,
        })
        .expect("an exit_criterion_added event")
}

#[track_caller]
fn assert_rule(error: &CommandError, code: &str, rule: &str) {
    assert_eq!((error.code(), error.rule.as_str()), (code, rule));
    assert_eq!(error.to_string(), rule);
}

// ---------------------------------------------------------------------------
// The scenario builder

/// An incident under test: its log, its state, and a clock.
struct Scenario {
    events: Vec<Event>,
    state: Option<IncidentState>,
    now: DateTime<Utc>,
    rules: Rules,
}

impl Scenario {
    fn undeclared() -> Self {
        Self {
            events: Vec::new(),
            state: None,
            now: t0(),
            rules: Rules::default(),
        }
    }

    /// "Checkout is down", declared by Alice at 09:00 UTC.
    fn declared() -> Self {
        let mut scenario = Self::undeclared();
        scenario.ok(&alice(), declare("Checkout is down"));
        scenario
    }

    /// Alice is IC; Bob leads operations, Carol communications, Dave planning.
    fn staffed() -> Self {
        let mut scenario = Self::declared();
        scenario.ok(&alice(), assign(Role::OperationsLead, &bob()));
        scenario.ok(&alice(), assign(Role::CommunicationsLead, &carol()));
        scenario.ok(&alice(), assign(Role::PlanningLead, &dave()));
        scenario
    }

    fn state(&self) -> &IncidentState {
        self.state.as_ref().expect("declared")
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    #[track_caller]
    fn try_apply(&mut self, caller: &Caller, command: Command) -> Result<Vec<Event>, CommandError> {
        let result = apply(self.state.as_ref(), &command, caller, self.now, &self.rules);
        if let Ok(events) = &result {
            let mut seq = self.state.as_ref().map_or(0, |s| s.last_seq.0);
            for event in events {
                seq += 1;
                assert_eq!(event.seq, EventSeq(seq), "events are numbered in order");
                assert_eq!(event.at, self.now);
                assert_eq!(event.actor, caller.actor);
                self.state = Some(evolve(self.state.take(), event));
                self.events.push(event.clone());
            }
            let state = self.state.as_ref().expect("a state after events");
            check_invariants(state).unwrap();
            check_sequence(&self.events).unwrap();
            assert_eq!(fold(&self.events).as_ref(), Some(state));
        }
        result
    }

    #[track_caller]
    fn ok(&mut self, caller: &Caller, command: Command) -> Vec<Event> {
        let name = command.name();
        self.try_apply(caller, command)
            .unwrap_or_else(|error| panic!("{name} by {} refused: {error}", caller.actor.name))
    }

    #[track_caller]
    fn refused(&mut self, caller: &Caller, command: Command) -> CommandError {
        let before = self.state.clone();
        let name = command.name();
        let error = self.try_apply(caller, command).expect_err(name);
        assert_eq!(self.state, before);
        error
    }

    #[track_caller]
    fn tick(&mut self) -> Vec<Event> {
        self.ok(&Caller::system(), Command::Tick)
    }
}

// ---------------------------------------------------------------------------
// Declaration

#[test]
fn the_declarer_becomes_commander_and_holds_every_role() {
    let scenario = Scenario::declared();
    let state = scenario.state();
    assert_eq!(scenario.events.len(), 1);
    assert_eq!(scenario.events[0].seq, EventSeq(1));
    assert_eq!(state.commander(), &alice().actor);
    assert_eq!(state.declared_by, alice().actor);
    assert_eq!(state.status, Status::Active);
    assert_eq!(state.severity, None, "not yet assessed");
    for role in Role::ALL {
        let view = state.role(role);
        assert_eq!(view.holder, alice().actor);
        assert!(!view.delegated);
        assert_eq!(view.since, t0());
    }
    assert_eq!(
        state.role_history,
        vec![Tenure {
            role: Role::IncidentCommander,
            holder: alice().actor,
            from: t0(),
            to: None,
        }]
    );
    assert_eq!(
        state.recent_timeline,
        vec!["09:00 UTC Alice: declared \"Checkout is down\"".to_owned()]
    );
}

#[test]
fn declaring_records_the_answers_and_trims_text() {
    let mut scenario = Scenario::undeclared();
    let criteria = Criteria {
        needs_other_team: true,
        customer_visible: true,
        unresolved_after_hour: false,
    };
    let events = scenario.ok(
        &adam(),
        Command::Declare {
            title: "  Payments failing ".to_owned(),
            severity: Some(Severity::Sev2),
            criteria: Some(criteria),
            summary: Some("   ".to_owned()),
        },
    );
    assert_eq!(
        events[0].kind,
        EventKind::Declared {
            title: "Payments failing".to_owned(),
            severity: Some(Severity::Sev2),
            criteria: Some(criteria),
            summary: None,
            commander: adam().actor,
        }
    );
    assert_eq!(scenario.state().criteria, Some(criteria));
    assert_eq!(scenario.state().commander(), &adam().actor);
}

#[test]
fn declaring_needs_a_title_of_bounded_length() {
    let mut scenario = Scenario::undeclared();
    let rule = "an incident needs a title of 1 to 200 characters";
    assert_rule(&scenario.refused(&alice(), declare("   ")), "invalid", rule);
    assert_rule(
        &scenario.refused(&alice(), declare(&"x".repeat(201))),
        "invalid",
        rule,
    );
    scenario.ok(&alice(), declare(&"é".repeat(200)));
}

#[test]
fn only_a_declaration_is_accepted_before_declaration() {
    let mut scenario = Scenario::undeclared();
    assert_rule(
        &scenario.refused(&alice(), note("hello")),
        "not_found",
        "the incident has not been declared",
    );
    assert_rule(
        &scenario.refused(&Caller::system(), Command::Tick),
        "not_found",
        "the incident has not been declared",
    );
}

#[test]
fn an_incident_is_declared_once() {
    let mut scenario = Scenario::declared();
    assert_rule(
        &scenario.refused(&bob(), declare("again")),
        "conflict",
        "the incident is already declared",
    );
}

#[test]
fn viewers_cannot_change_an_incident() {
    let mut scenario = Scenario::undeclared();
    assert_rule(
        &scenario.refused(&vera(), declare("x")),
        "forbidden",
        "viewers cannot change an incident",
    );
    let mut scenario = Scenario::declared();
    for command in [
        note("hi"),
        Command::Tick,
        assume(Role::IncidentCommander, "r"),
    ] {
        assert_rule(
            &scenario.refused(&vera(), command),
            "forbidden",
            "viewers cannot change an incident",
        );
    }
}

#[test]
fn only_the_server_ticks_and_it_only_ticks() {
    let mut scenario = Scenario::declared();
    assert_rule(
        &scenario.refused(&adam(), Command::Tick),
        "forbidden",
        "only the server's timer may send ticks",
    );
    // A user who merely calls themselves "system" is not the server.
    let impostor = caller(SYSTEM_USER_ID, "Command Post", AccessRole::Responder);
    assert!(!impostor.is_system());
    assert_rule(
        &scenario.refused(&impostor, Command::Tick),
        "forbidden",
        "only the server's timer may send ticks",
    );
    assert_rule(
        &scenario.refused(&Caller::system(), note("beep")),
        "forbidden",
        "the server's timer may only send ticks",
    );
    let mut undeclared = Scenario::undeclared();
    assert_rule(
        &undeclared.refused(&Caller::system(), declare("x")),
        "forbidden",
        "the server's timer may only send ticks",
    );
}

#[test]
fn a_tick_with_nothing_due_emits_nothing() {
    let mut scenario = Scenario::declared();
    assert!(scenario.tick().is_empty());
    assert_eq!(next_deadline(scenario.state()), None);
    scenario.advance(Duration::days(30));
    assert!(scenario.tick().is_empty());
}

// ---------------------------------------------------------------------------
// Severity and roles

#[test]
fn only_the_commander_sets_severity_and_only_to_a_new_value() {
    let mut scenario = Scenario::staffed();
    let events = scenario.ok(
        &alice(),
        Command::SetSeverity {
            severity: Severity::Sev1,
        },
    );
    assert_eq!(kinds(&events), ["severity_set"]);
    assert_eq!(scenario.state().severity, Some(Severity::Sev1));
    assert_rule(
        &scenario.refused(
            &bob(),
            Command::SetSeverity {
                severity: Severity::Sev3,
            },
        ),
        "forbidden",
        "only the incident commander may set the severity",
    );
    assert_rule(
        &scenario.refused(
            &alice(),
            Command::SetSeverity {
                severity: Severity::Sev1,
            },
        ),
        "conflict",
        "the severity is already sev1",
    );
}

#[test]
fn the_commander_delegates_an_undelegated_role_directly() {
    let mut scenario = Scenario::declared();
    scenario.advance(Duration::minutes(5));
    let events = scenario.ok(&alice(), assign(Role::OperationsLead, &bob()));
    assert_eq!(
        events[0].kind,
        EventKind::RoleAssigned {
            role: Role::OperationsLead,
            holder: bob().actor,
            previous: None,
        }
    );
    let state = scenario.state();
    assert_eq!(state.holder(Role::OperationsLead), &bob().actor);
    assert!(state.is_delegated(Role::OperationsLead));
    assert_eq!(
        state.role(Role::OperationsLead).since,
        t0() + Duration::minutes(5)
    );
    assert_eq!(state.roles_of(&bob().actor.id), [Role::OperationsLead]);
    assert_eq!(
        state.role_history.last(),
        Some(&Tenure {
            role: Role::OperationsLead,
            holder: bob().actor,
            from: t0() + Duration::minutes(5),
            to: None,
        })
    );
}

#[test]
fn role_assignment_refusals() {
    let mut scenario = Scenario::declared();
    scenario.ok(&alice(), assign(Role::OperationsLead, &bob()));
    assert_rule(
        &scenario.refused(&bob(), assign(Role::PlanningLead, &carol())),
        "forbidden",
        "only the incident commander may assign roles",
    );
    assert_rule(
        &scenario.refused(&adam(), assign(Role::PlanningLead, &carol())),
        "forbidden",
        "only the incident commander may assign roles",
    );
    assert_rule(
        &scenario.refused(&alice(), assign(Role::IncidentCommander, &carol())),
        "invalid",
        "command changes hands only through a handoff",
    );
    assert_rule(
        &scenario.refused(&alice(), assign(Role::OperationsLead, &carol())),
        "conflict",
        "operations lead is delegated to Bob; reassign it through a handoff",
    );
    assert_rule(
        &scenario.refused(&alice(), assign(Role::OperationsLead, &bob())),
        "conflict",
        "Bob already holds operations lead",
    );
    assert_rule(
        &scenario.refused(&alice(), assign(Role::PlanningLead, &alice())),
        "conflict",
        "the incident commander already holds planning lead",
    );
    scenario.ok(&alice(), offer(Role::PlanningLead, &dave()));
    assert_rule(
        &scenario.refused(&alice(), assign(Role::PlanningLead, &carol())),
        "conflict",
        "a handoff of planning lead is already pending",
    );
    assert_rule(
        &scenario.refused(
            &alice(),
            assign(Role::CommunicationsLead, &Caller::system()),
        ),
        "invalid",
        "the server cannot take part in an incident",
    );
    assert_rule(
        &scenario.refused(
            &alice(),
            assign(
                Role::CommunicationsLead,
                &caller(" ", "Nobody", AccessRole::Responder),
            ),
        ),
        "invalid",
        "a person needs an id and a name",
    );
}

#[test]
fn the_commander_and_role_leads_manage_responders() {
    let mut scenario = Scenario::staffed();
    let erin = caller("erin", "Erin", AccessRole::Responder);
    scenario.ok(&alice(), add_responder(&erin, "database failover"));
    scenario.ok(&bob(), add_responder(&adam(), "network"));
    assert_eq!(scenario.state().responders.len(), 2);
    // Adding again changes the assignment.
    scenario.advance(Duration::minutes(1));
    scenario.ok(&dave(), add_responder(&erin, "  replica rebuild "));
    let listed = scenario.state().responder(&erin.actor.id).unwrap();
    assert_eq!(listed.assignment, "replica rebuild");
    assert_eq!(listed.since, t0() + Duration::minutes(1));
    scenario.ok(
        &carol(),
        Command::RemoveResponder {
            responder: erin.actor.id.clone(),
        },
    );
    assert_eq!(scenario.state().responders.len(), 1);
    assert_eq!(
        scenario.state().recent_timeline.last().unwrap(),
        "09:01 UTC Carol: removed Erin from the responders"
    );
}

#[test]
fn responder_refusals() {
    let mut scenario = Scenario::staffed();
    let erin = caller("erin", "Erin", AccessRole::Responder);
    let rule = "only the incident commander or a role lead may change the responders";
    assert_rule(
        &scenario.refused(&erin, add_responder(&erin, "me")),
        "forbidden",
        rule,
    );
    assert_rule(
        &scenario.refused(&adam(), add_responder(&erin, "x")),
        "forbidden",
        rule,
    );
    assert_rule(
        &scenario.refused(&alice(), add_responder(&erin, " ")),
        "invalid",
        "a responder needs an assignment",
    );
    scenario.ok(&alice(), add_responder(&erin, "db"));
    assert_rule(
        &scenario.refused(&alice(), add_responder(&erin, "db")),
        "conflict",
        "Erin is already a responder with that assignment",
    );
    assert_rule(
        &scenario.refused(
            &erin,
            Command::RemoveResponder {
                responder: erin.actor.id.clone(),
            },
        ),
        "forbidden",
        rule,
    );
    assert_rule(
        &scenario.refused(
            &alice(),
            Command::RemoveResponder {
                responder: UserId("zed".into()),
            },
        ),
        "not_found",
        "zed is not a responder",
    );
}

// ---------------------------------------------------------------------------
// Handoffs

#[test]
fn handing_over_command_end_to_end() {
    let mut scenario = Scenario::declared();
    scenario.ok(
        &alice(),
        Command::SetSeverity {
            severity: Severity::Sev2,
        },
    );
    scenario.ok(&alice(), assign(Role::OperationsLead, &carol()));
    scenario.ok(&alice(), add_responder(&dave(), "database failover"));
    let done = criterion_id(&scenario.ok(&alice(), add_criterion("error rate below 1%")));
    scenario.ok(&alice(), add_criterion("no queue backlog"));
    scenario.ok(&alice(), set_criterion(done, true));
    scenario.ok(&carol(), record("disabled the recommendations widget"));
    scenario.ok(&alice(), note("failover started"));
    scenario.ok(
        &alice(),
        pin("checkout degraded in eu-west", t0() + Duration::hours(1)),
    );
    scenario.advance(Duration::minutes(42));

    // The offer: nothing changes yet, and the briefing is pre-filled.
    let events = scenario.ok(
        &alice(),
        Command::OfferHandoff {
            role: Role::IncidentCommander,
            to: bob().actor,
            notes: " going off shift ".to_owned(),
        },
    );
    assert_eq!(kinds(&events), ["handoff_offered"]);
    let handoff = offered_id(&events);
    assert_eq!(
        handoff.0, events[0].seq.0,
        "ids are the creating event's seq"
    );
    let EventKind::HandoffOffered {
        from,
        to,
        briefing,
        expires_at,
        ..
    } = &events[0].kind
    else {
        unreachable!()
    };
    assert_eq!((from, to), (&alice().actor, &bob().actor));
    assert_eq!(*expires_at, scenario.now + Duration::minutes(15));
    assert_eq!(briefing.situation, "checkout degraded in eu-west");
    assert_eq!(
        briefing.objectives,
        ["[x] error rate below 1%", "[ ] no queue backlog"]
    );
    assert_eq!(
        briefing.current_actions,
        ["09:00 UTC Alice: failover started"]
    );
    assert_eq!(
        briefing.open_changes,
        ["disabled the recommendations widget (revert: undo disabled the recommendations widget)"]
    );
    let organisation: Vec<(Option<Role>, &str, &str)> = briefing
        .organisation
        .iter()
        .map(|a| (a.role, a.assignment.as_str(), a.holder.name.as_str()))
        .collect();
    assert_eq!(
        organisation,
        [
            (Some(Role::IncidentCommander), "incident commander", "Alice"),
            (Some(Role::OperationsLead), "operations lead", "Carol"),
            (
                Some(Role::CommunicationsLead),
                "communications lead (held by the incident commander)",
                "Alice"
            ),
            (
                Some(Role::PlanningLead),
                "planning lead (held by the incident commander)",
                "Alice"
            ),
            (None, "database failover", "Dave"),
        ]
    );
    assert_eq!(briefing.recent_timeline.len(), RECENT_TIMELINE);
    assert_eq!(
        briefing.recent_timeline.last().unwrap(),
        "09:00 UTC Alice: pinned status: checkout degraded in eu-west (next update by 10:00 UTC)"
    );
    assert_eq!(briefing.notes, "going off shift");
    assert_eq!(scenario.state().commander(), &alice().actor);
    assert_eq!(scenario.state().pending_handoffs.len(), 1);

    // Bob accepts from his own session.
    scenario.advance(Duration::minutes(3));
    let events = scenario.ok(&bob(), accept(handoff));
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].kind,
        EventKind::HandoffAccepted {
            handoff,
            role: Role::IncidentCommander,
            from: alice().actor,
            to: bob().actor,
        }
    );
    assert!(events[0].kind.is_prominent());
    let state = scenario.state();
    let handed_at = t0() + Duration::minutes(45);
    assert_eq!(state.commander(), &bob().actor);
    assert_eq!(state.role(Role::IncidentCommander).since, handed_at);
    assert!(state.pending_handoffs.is_empty());
    // Undelegated roles follow the new commander; delegated ones stay.
    assert_eq!(state.holder(Role::PlanningLead), &bob().actor);
    assert_eq!(state.holder(Role::CommunicationsLead), &bob().actor);
    assert_eq!(state.holder(Role::OperationsLead), &carol().actor);
    let command_history: Vec<_> = state
        .role_history
        .iter()
        .filter(|t| t.role == Role::IncidentCommander)
        .map(|t| (t.holder.name.as_str(), t.from, t.to))
        .collect();
    assert_eq!(
        command_history,
        [("Alice", t0(), Some(handed_at)), ("Bob", handed_at, None)]
    );
    assert_eq!(
        state.recent_timeline.last().unwrap(),
        "09:45 UTC Bob: took over incident commander from Alice"
    );

    // Alice's commander-only commands are refused afterwards; Bob's work.
    assert_rule(
        &scenario.refused(
            &alice(),
            Command::SetSeverity {
                severity: Severity::Sev1,
            },
        ),
        "forbidden",
        "only the incident commander may set the severity",
    );
    assert_rule(
        &scenario.refused(&alice(), assign(Role::PlanningLead, &dave())),
        "forbidden",
        "only the incident commander may assign roles",
    );
    assert_rule(
        &scenario.refused(&alice(), offer(Role::IncidentCommander, &carol())),
        "forbidden",
        "only the incident commander may offer command",
    );
    scenario.ok(&bob(), assign(Role::PlanningLead, &dave()));
}

#[test]
fn the_outgoing_holder_keeps_the_role_until_acceptance() {
    let mut scenario = Scenario::declared();
    let handoff = offered_id(&scenario.ok(&alice(), offer(Role::IncidentCommander, &bob())));
    assert_rule(
        &scenario.refused(&bob(), status(Status::Mitigated)),
        "forbidden",
        "only the incident commander may change the lifecycle status",
    );
    scenario.ok(&alice(), status(Status::Mitigated));
    scenario.ok(&bob(), accept(handoff));
    scenario.ok(&bob(), status(Status::Active));
}

#[test]
fn role_holders_offer_their_role_and_the_commander_offers_any() {
    let mut scenario = Scenario::staffed();
    // The ops lead hands operations on.
    let handoff = offered_id(&scenario.ok(&bob(), offer(Role::OperationsLead, &adam())));
    scenario.ok(&adam(), accept(handoff));
    assert_eq!(scenario.state().holder(Role::OperationsLead), &adam().actor);
    let tenures: Vec<(&str, bool)> = scenario
        .state()
        .role_history
        .iter()
        .filter(|t| t.role == Role::OperationsLead)
        .map(|t| (t.holder.name.as_str(), t.to.is_none()))
        .collect();
    assert_eq!(tenures, [("Bob", false), ("Adam", true)]);
    // The commander offers a role delegated to someone else.
    let handoff = offered_id(&scenario.ok(&alice(), offer(Role::PlanningLead, &bob())));
    let events = scenario.ok(&bob(), accept(handoff));
    let EventKind::HandoffAccepted { from, .. } = &events[0].kind else {
        unreachable!()
    };
    assert_eq!(from, &dave().actor, "`from` is the outgoing holder");
    assert_eq!(scenario.state().holder(Role::PlanningLead), &bob().actor);
}

#[test]
fn handing_a_role_back_to_the_commander_undelegates_it() {
    let mut scenario = Scenario::staffed();
    let handoff = offered_id(&scenario.ok(&bob(), offer(Role::OperationsLead, &alice())));
    scenario.ok(&alice(), accept(handoff));
    let state = scenario.state();
    assert!(!state.is_delegated(Role::OperationsLead));
    assert_eq!(state.holder(Role::OperationsLead), &alice().actor);
    assert!(
        state
            .role_history
            .iter()
            .filter(|t| t.role == Role::OperationsLead)
            .all(|t| t.to.is_some())
    );
    // And it now follows command.
    let handoff = offered_id(&scenario.ok(&alice(), offer(Role::IncidentCommander, &carol())));
    scenario.ok(&carol(), accept(handoff));
    assert_eq!(
        scenario.state().holder(Role::OperationsLead),
        &carol().actor
    );
}

#[test]
fn a_new_commander_folds_their_own_role_into_command() {
    let mut scenario = Scenario::staffed();
    let handoff = offered_id(&scenario.ok(&alice(), offer(Role::IncidentCommander, &bob())));
    scenario.ok(&bob(), accept(handoff));
    let state = scenario.state();
    assert_eq!(state.commander(), &bob().actor);
    assert_eq!(state.holder(Role::OperationsLead), &bob().actor);
    assert!(!state.is_delegated(Role::OperationsLead));
    assert_eq!(state.holder(Role::PlanningLead), &dave().actor);
}

#[test]
fn offers_that_stop_making_sense_are_cancelled_when_command_moves() {
    let mut scenario = Scenario::declared();
    // Alice offers operations (which she holds as IC) to Carol, then hands
    // command to Bob: her operations offer is no longer hers to make.
    let ops_offer = offered_id(&scenario.ok(&alice(), offer(Role::OperationsLead, &carol())));
    let command_offer = offered_id(&scenario.ok(&alice(), offer(Role::IncidentCommander, &bob())));
    let events = scenario.ok(&bob(), accept(command_offer));
    assert_eq!(kinds(&events), ["handoff_accepted", "handoff_cancelled"]);
    assert_eq!(
        events[1].kind,
        EventKind::HandoffCancelled {
            handoff: ops_offer,
            role: Role::OperationsLead,
            from: alice().actor,
            to: carol().actor,
            reason: Some("Alice no longer holds operations lead or command".to_owned()),
        }
    );
    assert!(scenario.state().pending_handoffs.is_empty());
}

#[test]
fn an_offer_to_someone_who_comes_to_hold_the_role_is_cancelled() {
    let mut scenario = Scenario::declared();
    // Alice offers operations to Bob, then command to Bob; once Bob commands,
    // he holds operations and the first offer is moot.
    scenario.ok(&alice(), offer(Role::OperationsLead, &bob()));
    let command_offer = offered_id(&scenario.ok(&alice(), offer(Role::IncidentCommander, &bob())));
    let events = scenario.ok(&bob(), accept(command_offer));
    let EventKind::HandoffCancelled { reason, .. } = &events[1].kind else {
        panic!("expected a cancellation, got {:?}", kinds(&events))
    };
    assert_eq!(reason.as_deref(), Some("Bob now holds operations lead"));
}

#[test]
fn handoff_offer_refusals() {
    let mut scenario = Scenario::staffed();
    assert_rule(
        &scenario.refused(&carol(), offer(Role::OperationsLead, &adam())),
        "forbidden",
        "only the operations lead or the incident commander may offer operations lead",
    );
    assert_rule(
        &scenario.refused(&bob(), offer(Role::IncidentCommander, &adam())),
        "forbidden",
        "only the incident commander may offer command",
    );
    assert_rule(
        &scenario.refused(&alice(), offer(Role::OperationsLead, &bob())),
        "conflict",
        "Bob already holds operations lead",
    );
    assert_rule(
        &scenario.refused(&alice(), offer(Role::IncidentCommander, &alice())),
        "conflict",
        "Alice already holds incident commander",
    );
    assert_rule(
        &scenario.refused(&alice(), offer(Role::IncidentCommander, &Caller::system())),
        "invalid",
        "the server cannot take part in an incident",
    );
    scenario.ok(&bob(), offer(Role::OperationsLead, &adam()));
    assert_rule(
        &scenario.refused(&alice(), offer(Role::OperationsLead, &carol())),
        "conflict",
        "a handoff of operations lead is already pending",
    );
}

#[test]
fn only_the_named_person_accepts_or_declines() {
    let mut scenario = Scenario::staffed();
    let handoff = offered_id(&scenario.ok(&carol(), offer(Role::CommunicationsLead, &adam())));
    for someone in [alice(), bob(), carol(), dave()] {
        assert_rule(
            &scenario.refused(&someone, accept(handoff)),
            "forbidden",
            "only Adam may accept this handoff",
        );
        assert_rule(
            &scenario.refused(&someone, decline(handoff)),
            "forbidden",
            "only Adam may decline this handoff",
        );
    }
    let events = scenario.ok(
        &adam(),
        Command::DeclineHandoff {
            handoff,
            reason: Some(" on call elsewhere ".to_owned()),
        },
    );
    assert_eq!(
        events[0].kind,
        EventKind::HandoffDeclined {
            handoff,
            role: Role::CommunicationsLead,
            from: carol().actor,
            to: adam().actor,
            reason: Some("on call elsewhere".to_owned()),
        }
    );
    assert_eq!(
        scenario.state().holder(Role::CommunicationsLead),
        &carol().actor
    );
    assert!(scenario.state().pending_handoffs.is_empty());
    assert_rule(
        &scenario.refused(&adam(), accept(handoff)),
        "not_found",
        &format!("there is no pending handoff {handoff}"),
    );
}

#[test]
fn the_offerer_or_the_commander_cancels() {
    let mut scenario = Scenario::staffed();
    let handoff = offered_id(&scenario.ok(&carol(), offer(Role::CommunicationsLead, &adam())));
    for someone in [bob(), dave(), adam()] {
        assert_rule(
            &scenario.refused(&someone, cancel(handoff)),
            "forbidden",
            "only Carol or the incident commander may cancel this handoff",
        );
    }
    assert_eq!(
        kinds(&scenario.ok(&carol(), cancel(handoff))),
        ["handoff_cancelled"]
    );
    let handoff = offered_id(&scenario.ok(&carol(), offer(Role::CommunicationsLead, &adam())));
    scenario.ok(&alice(), cancel(handoff));
    assert!(scenario.state().pending_handoffs.is_empty());
    assert_rule(
        &scenario.refused(&alice(), cancel(HandoffId(999))),
        "not_found",
        "there is no pending handoff 999",
    );
    assert_rule(
        &scenario.refused(&alice(), decline(HandoffId(999))),
        "not_found",
        "there is no pending handoff 999",
    );
}

#[test]
fn offers_lapse_after_their_time_to_live() {
    let mut scenario = Scenario::declared();
    scenario.rules.handoff_ttl = Duration::minutes(10);
    let handoff = offered_id(&scenario.ok(&alice(), offer(Role::IncidentCommander, &bob())));
    let expiry = t0() + Duration::minutes(10);
    assert_eq!(next_deadline(scenario.state()), Some(expiry));
    scenario.advance(Duration::minutes(10) - Duration::seconds(1));
    assert!(scenario.tick().is_empty());
    scenario.advance(Duration::seconds(1));
    // Before the timer notices, acceptance is already refused.
    assert_rule(
        &scenario.refused(&bob(), accept(handoff)),
        "conflict",
        "this handoff offer expired at 09:10 UTC",
    );
    let events = scenario.tick();
    assert_eq!(
        events[0].kind,
        EventKind::HandoffExpired {
            handoff,
            role: Role::IncidentCommander,
            from: alice().actor,
            to: bob().actor,
        }
    );
    assert_eq!(events[0].actor, Caller::system().actor);
    assert_eq!(scenario.state().commander(), &alice().actor);
    assert_eq!(next_deadline(scenario.state()), None);
    assert!(scenario.tick().is_empty());
    assert_rule(
        &scenario.refused(&bob(), accept(handoff)),
        "not_found",
        &format!("there is no pending handoff {handoff}"),
    );
}

#[test]
fn becoming_commander_clears_the_next_commander_plan() {
    let mut scenario = Scenario::declared();
    scenario.ok(&alice(), set_next(Some(&bob())));
    let handoff = offered_id(&scenario.ok(&alice(), offer(Role::IncidentCommander, &bob())));
    scenario.ok(&bob(), accept(handoff));
    assert_eq!(scenario.state().next_commander, None);
}

// ---------------------------------------------------------------------------
// Emergencies

#[test]
fn an_admin_assumes_command_in_an_emergency() {
    let mut scenario = Scenario::staffed();
    let pending = offered_id(&scenario.ok(&alice(), offer(Role::IncidentCommander, &bob())));
    let events = scenario.ok(
        &adam(),
        assume(Role::IncidentCommander, " Alice unreachable "),
    );
    assert_eq!(kinds(&events), ["handoff_cancelled", "role_assumed"]);
    assert_eq!(
        events[0].kind,
        EventKind::HandoffCancelled {
            handoff: pending,
            role: Role::IncidentCommander,
            from: alice().actor,
            to: bob().actor,
            reason: Some("superseded by an emergency role change".to_owned()),
        }
    );
    assert_eq!(
        events[1].kind,
        EventKind::RoleAssumed {
            role: Role::IncidentCommander,
            holder: adam().actor,
            previous: Some(alice().actor),
            reason: "Alice unreachable".to_owned(),
            forced_by: None,
        }
    );
    assert!(events[1].kind.is_prominent());
    assert_eq!(scenario.state().commander(), &adam().actor);
    assert_eq!(
        scenario.state().recent_timeline.last().unwrap(),
        "09:00 UTC Adam: assumed incident commander in an emergency: Alice unreachable"
    );
}

#[test]
fn an_admin_assigns_a_role_in_an_emergency() {
    let mut scenario = Scenario::staffed();
    let events = scenario.ok(
        &adam(),
        force(Role::IncidentCommander, &carol(), "Alice's laptop died"),
    );
    assert_eq!(
        events[0].kind,
        EventKind::RoleAssumed {
            role: Role::IncidentCommander,
            holder: carol().actor,
            previous: Some(alice().actor),
            reason: "Alice's laptop died".to_owned(),
            forced_by: Some(adam().actor),
        }
    );
    let state = scenario.state();
    assert_eq!(state.commander(), &carol().actor);
    assert!(
        !state.is_delegated(Role::CommunicationsLead),
        "folded into command"
    );
    // An undelegated role: `previous` is none.
    let mut scenario = Scenario::declared();
    let events = scenario.ok(&adam(), force(Role::PlanningLead, &dave(), "rota"));
    let EventKind::RoleAssumed { previous, .. } = &events[0].kind else {
        unreachable!()
    };
    assert_eq!(previous, &None);
}

#[test]
fn emergency_refusals() {
    let mut scenario = Scenario::staffed();
    assert_rule(
        &scenario.refused(&bob(), assume(Role::IncidentCommander, "why not")),
        "forbidden",
        "only an admin may assume a role in an emergency",
    );
    assert_rule(
        &scenario.refused(&alice(), force(Role::OperationsLead, &carol(), "x")),
        "forbidden",
        "only an admin may force a role assignment",
    );
    assert_rule(
        &scenario.refused(&adam(), assume(Role::IncidentCommander, "  ")),
        "invalid",
        "an emergency assumption needs a reason",
    );
    assert_rule(
        &scenario.refused(&adam(), force(Role::IncidentCommander, &bob(), "")),
        "invalid",
        "an emergency assignment needs a reason",
    );
    assert_rule(
        &scenario.refused(&adam(), force(Role::OperationsLead, &bob(), "x")),
        "conflict",
        "Bob already holds operations lead",
    );
    scenario.ok(&adam(), assume(Role::OperationsLead, "bob is asleep"));
    assert_rule(
        &scenario.refused(&adam(), assume(Role::OperationsLead, "again")),
        "conflict",
        "you already hold operations lead",
    );
}

// ---------------------------------------------------------------------------
// Next commander and status pins

#[test]
fn the_commander_or_planning_lead_names_the_next_commander() {
    let mut scenario = Scenario::staffed();
    scenario.ok(&alice(), set_next(Some(&bob())));
    scenario.ok(&dave(), set_next(Some(&carol())));
    assert_eq!(scenario.state().next_commander, Some(carol().actor));
    let rule = "only the incident commander or the planning lead may name the next commander";
    assert_rule(
        &scenario.refused(&bob(), set_next(Some(&bob()))),
        "forbidden",
        rule,
    );
    assert_rule(
        &scenario.refused(&adam(), set_next(None)),
        "forbidden",
        rule,
    );
    assert_rule(
        &scenario.refused(&dave(), set_next(Some(&alice()))),
        "conflict",
        "Alice is already the incident commander",
    );
    assert_rule(
        &scenario.refused(&dave(), set_next(Some(&carol()))),
        "conflict",
        "Carol is already the next commander",
    );
    scenario.ok(&dave(), set_next(None));
    assert_rule(
        &scenario.refused(&dave(), set_next(None)),
        "conflict",
        "no next commander is named",
    );
}

#[test]
fn the_commander_or_comms_lead_pins_status() {
    let mut scenario = Scenario::staffed();
    let due = t0() + Duration::minutes(30);
    scenario.ok(&alice(), pin("investigating", due));
    scenario.advance(Duration::minutes(1));
    let events = scenario.ok(&carol(), pin(" failover under way ", due));
    let pinned = scenario.state().pin.clone().unwrap();
    assert_eq!(
        pinned,
        Pin {
            summary: "failover under way".to_owned(),
            next_update_by: Some(due),
            is_final: false,
            pinned_at: t0() + Duration::minutes(1),
            pinned_by: carol().actor,
            seq: events[0].seq,
            overdue: false,
        }
    );
    assert_rule(
        &scenario.refused(&bob(), pin("x", due)),
        "forbidden",
        "only the incident commander or the communications lead may pin status",
    );
    assert_rule(
        &scenario.refused(&carol(), pin(" ", due)),
        "invalid",
        "a status summary cannot be empty",
    );
    assert_rule(
        &scenario.refused(&carol(), pin("x", scenario.now)),
        "invalid",
        "the next update must be due after now",
    );
}

#[test]
fn a_missed_update_is_reported_once_per_deadline() {
    let mut scenario = Scenario::declared();
    let due = t0() + Duration::minutes(30);
    let pinned = scenario.ok(&alice(), pin("investigating", due))[0].seq;
    assert_eq!(next_deadline(scenario.state()), Some(due));

    scenario.now = due - Duration::seconds(1);
    assert!(scenario.tick().is_empty());

    scenario.now = due + Duration::seconds(1);
    let events = scenario.tick();
    assert_eq!(
        events.iter().map(|e| &e.kind).collect::<Vec<_>>(),
        [&EventKind::UpdateOverdue { pin: pinned, due }]
    );
    assert!(events[0].kind.is_prominent());
    assert!(scenario.state().pin.as_ref().unwrap().overdue);
    assert_eq!(next_deadline(scenario.state()), None);

    scenario.now = due + Duration::seconds(2);
    assert!(scenario.tick().is_empty());

    // A new pin resets: its own deadline is reported again.
    let due2 = scenario.now + Duration::minutes(30);
    let repinned = scenario.ok(&alice(), pin("failing over", due2))[0].seq;
    assert!(!scenario.state().pin.as_ref().unwrap().overdue);
    assert_eq!(next_deadline(scenario.state()), Some(due2));
    scenario.now = due2;
    let events = scenario.tick();
    assert_eq!(
        events[0].kind,
        EventKind::UpdateOverdue {
            pin: repinned,
            due: due2
        }
    );
    assert_eq!(
        scenario.state().recent_timeline.last().unwrap(),
        "10:00 UTC Command Post: the status update due at 10:00 UTC is overdue"
    );
}

#[test]
fn updates_are_not_chased_once_resolved() {
    let mut scenario = Scenario::declared();
    let due = t0() + Duration::minutes(30);
    scenario.ok(&alice(), pin("fixed", due));
    scenario.ok(&alice(), status_with_override(Status::Resolved, "drill"));
    assert_eq!(next_deadline(scenario.state()), None);
    scenario.now = due + Duration::hours(1);
    assert!(scenario.tick().is_empty());
    // Reopening makes the missed deadline due again.
    scenario.ok(&alice(), reopen("it is back"));
    assert_eq!(next_deadline(scenario.state()), Some(due));
    assert_eq!(kinds(&scenario.tick()), ["update_overdue"]);
}

#[test]
fn the_next_deadline_is_the_earliest_of_offers_and_the_pin() {
    let mut scenario = Scenario::declared();
    scenario.ok(&alice(), pin("x", t0() + Duration::minutes(5)));
    scenario.ok(&alice(), offer(Role::IncidentCommander, &bob()));
    assert_eq!(
        next_deadline(scenario.state()),
        Some(t0() + Duration::minutes(5))
    );
    scenario.now = t0() + Duration::minutes(5);
    assert_eq!(kinds(&scenario.tick()), ["update_overdue"]);
    assert_eq!(
        next_deadline(scenario.state()),
        Some(t0() + Duration::minutes(15))
    );
}

// ---------------------------------------------------------------------------
// Lifecycle

#[test]
fn the_commander_moves_the_lifecycle() {
    let mut scenario = Scenario::staffed();
    let done = criterion_id(&scenario.ok(&alice(), add_criterion("errors normal")));
    assert_rule(
        &scenario.refused(&bob(), status(Status::Mitigated)),
        "forbidden",
        "only the incident commander may change the lifecycle status",
    );
    let events = scenario.ok(&alice(), status(Status::Mitigated));
    assert_eq!(
        events[0].kind,
        EventKind::StatusChanged {
            from: Status::Active,
            to: Status::Mitigated,
            override_reason: None,
        }
    );
    assert_rule(
        &scenario.refused(&alice(), status(Status::Mitigated)),
        "conflict",
        "the incident is already mitigated",
    );
    // The mitigation did not hold.
    scenario.ok(&alice(), status(Status::Active));
    assert_rule(
        &scenario.refused(&alice(), status(Status::Closed)),
        "conflict",
        "only a resolved incident can be closed",
    );
    scenario.ok(&alice(), set_criterion(done, true));
    scenario.ok(&alice(), status(Status::Resolved));
    assert_rule(
        &scenario.refused(&alice(), status(Status::Mitigated)),
        "conflict",
        "a resolved incident cannot become mitigated; reopen it instead",
    );
    assert_rule(
        &scenario.refused(&alice(), status(Status::Active)),
        "conflict",
        "a resolved incident cannot become active; reopen it instead",
    );
    scenario.ok(&alice(), status(Status::Closed));
    assert_eq!(scenario.state().status, Status::Closed);
}

#[test]
fn resolving_needs_the_exit_criteria_met_or_an_override() {
    let mut scenario = Scenario::declared();
    assert_rule(
        &scenario.refused(&alice(), status(Status::Resolved)),
        "conflict",
        "resolving needs at least one exit criterion, all met, or an override reason",
    );
    let first = criterion_id(&scenario.ok(&alice(), add_criterion("errors normal")));
    let second = criterion_id(&scenario.ok(&alice(), add_criterion("queue drained")));
    scenario.ok(&alice(), set_criterion(first, true));
    let refused = scenario.refused(&alice(), status(Status::Resolved));
    assert_rule(
        &refused,
        "conflict",
        &format!(
            "resolving needs every exit criterion met, or an override reason; unmet criteria: #{second} queue drained"
        ),
    );
    assert_eq!(
        refused.blocking,
        Some(Blocking {
            criteria: vec![BlockingCriterion {
                id: second,
                text: "queue drained".into(),
            }],
            changes: Vec::new(),
        }),
        "names what blocks, with ids"
    );
    assert_rule(
        &scenario.refused(&alice(), status_with_override(Status::Resolved, "  ")),
        "invalid",
        "an override needs a reason",
    );
    assert_rule(
        &scenario.refused(&alice(), status_with_override(Status::Mitigated, "because")),
        "invalid",
        "an override reason applies only when resolving",
    );
    // Allowed with an override...
    let mut overridden = Scenario {
        events: scenario.events.clone(),
        state: scenario.state.clone(),
        now: scenario.now,
        rules: Rules::default(),
    };
    let events = overridden.ok(
        &alice(),
        status_with_override(Status::Resolved, "queue drains on its own"),
    );
    assert_eq!(
        events[0].kind,
        EventKind::StatusChanged {
            from: Status::Active,
            to: Status::Resolved,
            override_reason: Some("queue drains on its own".to_owned()),
        }
    );
    // ...or once every criterion is met, from mitigated too.
    scenario.ok(&alice(), status(Status::Mitigated));
    scenario.ok(&alice(), set_criterion(second, true));
    scenario.ok(&alice(), status(Status::Resolved));
    assert_eq!(scenario.state().status, Status::Resolved);
}

#[test]
fn closing_needs_every_change_reverted_or_waived() {
    let mut scenario = Scenario::staffed();
    let first = change_id(&scenario.ok(&bob(), record("raised the pool size")));
    let second = change_id(&scenario.ok(&bob(), record("disabled the cache")));
    scenario.ok(&alice(), status_with_override(Status::Resolved, "drill"));
    let refused = scenario.refused(&alice(), status(Status::Closed));
    assert_rule(
        &refused,
        "conflict",
        &format!(
            "closing needs every recorded change reverted or waived; open changes: #{first} raised the pool size, #{second} disabled the cache"
        ),
    );
    let blocking = refused.blocking.expect("the open changes");
    assert!(blocking.criteria.is_empty());
    assert_eq!(
        blocking
            .changes
            .iter()
            .map(|c| (c.id, c.what.as_str()))
            .collect::<Vec<_>>(),
        [
            (first, "raised the pool size"),
            (second, "disabled the cache")
        ]
    );
    assert_rule(
        &scenario.refused(&alice(), status_with_override(Status::Closed, "trust me")),
        "invalid",
        "an override reason applies only when resolving",
    );
    scenario.ok(&dave(), reverted(first));
    assert_rule(
        &scenario.refused(&alice(), status(Status::Closed)),
        "conflict",
        &format!(
            "closing needs every recorded change reverted or waived; open changes: #{second} disabled the cache"
        ),
    );
    scenario.ok(&dave(), waive(second, "the cache stays off for good"));
    assert_eq!(scenario.state().open_changes().count(), 0);
    // Closing cancels offers nobody can accept any more.
    let handoff = offered_id(&scenario.ok(&carol(), offer(Role::CommunicationsLead, &adam())));
    let events = scenario.ok(&alice(), status(Status::Closed));
    assert_eq!(kinds(&events), ["handoff_cancelled", "status_changed"]);
    let EventKind::HandoffCancelled {
        handoff: id,
        reason,
        ..
    } = &events[0].kind
    else {
        unreachable!()
    };
    assert_eq!(
        (id, reason.as_deref()),
        (&handoff, Some("the incident was closed"))
    );
    assert_eq!(scenario.state().status, Status::Closed);
    assert_eq!(next_deadline(scenario.state()), None);
}

#[test]
fn a_closed_incident_refuses_everything_but_reopen() {
    let mut scenario = Scenario::staffed();
    scenario.ok(&alice(), pin("x", t0() + Duration::minutes(1)));
    scenario.ok(&alice(), status_with_override(Status::Resolved, "drill"));
    scenario.ok(&alice(), status(Status::Closed));
    let rule = "the incident is closed; reopen it first";
    for (who, command) in [
        (alice(), note("late thought")),
        (alice(), status(Status::Active)),
        (alice(), add_criterion("x")),
        (bob(), record("x")),
        (alice(), offer(Role::IncidentCommander, &bob())),
        (adam(), assume(Role::IncidentCommander, "x")),
    ] {
        assert_rule(&scenario.refused(&who, command), "conflict", rule);
    }
    scenario.now += Duration::hours(2);
    assert!(
        scenario.tick().is_empty(),
        "a closed incident is never chased"
    );
    assert_rule(
        &scenario.refused(&bob(), reopen("it is back")),
        "forbidden",
        "only the incident commander or an admin may reopen the incident",
    );
    assert_rule(
        &scenario.refused(&alice(), reopen(" ")),
        "invalid",
        "reopening needs a reason",
    );
    let events = scenario.ok(&adam(), reopen("errors are back"));
    assert_eq!(
        events[0].kind,
        EventKind::Reopened {
            from: Status::Closed,
            reason: "errors are back".to_owned(),
        }
    );
    assert_eq!(scenario.state().status, Status::Active);
    assert_eq!(scenario.state().commander(), &alice().actor);
    assert_rule(
        &scenario.refused(&alice(), reopen("again")),
        "conflict",
        "only a resolved or closed incident can be reopened",
    );
    scenario.ok(&alice(), note("back at it"));
}

#[test]
fn the_commander_reopens_a_resolved_incident() {
    let mut scenario = Scenario::declared();
    scenario.ok(&alice(), status_with_override(Status::Resolved, "drill"));
    let events = scenario.ok(&alice(), reopen("regression"));
    assert_eq!(kinds(&events), ["reopened"]);
    assert!(events[0].kind.is_prominent());
}

// ---------------------------------------------------------------------------
// Exit criteria, changes and notes

#[test]
fn only_the_commander_manages_exit_criteria() {
    let mut scenario = Scenario::staffed();
    let events = scenario.ok(&alice(), add_criterion("  error rate below 1% "));
    let id = criterion_id(&events);
    assert_eq!(id.0, events[0].seq.0);
    assert_eq!(
        scenario.state().exit_criteria,
        [ExitCriterion {
            criterion: id,
            text: "error rate below 1%".to_owned(),
            met: false,
        }]
    );
    let rule = "only the incident commander may manage exit criteria";
    assert_rule(
        &scenario.refused(&dave(), add_criterion("x")),
        "forbidden",
        rule,
    );
    assert_rule(
        &scenario.refused(&bob(), set_criterion(id, true)),
        "forbidden",
        rule,
    );
    assert_rule(
        &scenario.refused(&alice(), add_criterion("")),
        "invalid",
        "an exit criterion needs text",
    );
    assert_rule(
        &scenario.refused(&alice(), set_criterion(CriterionId(77), true)),
        "not_found",
        "there is no exit criterion 77",
    );
    assert_rule(
        &scenario.refused(&alice(), set_criterion(id, false)),
        "conflict",
        &format!("exit criterion {id} is already unmet"),
    );
    scenario.ok(&alice(), set_criterion(id, true));
    assert!(scenario.state().exit_criteria_met());
    assert_rule(
        &scenario.refused(&alice(), set_criterion(id, true)),
        "conflict",
        &format!("exit criterion {id} is already met"),
    );
}

#[test]
fn only_operations_records_production_changes() {
    let mut scenario = Scenario::declared();
    // While operations is not delegated, the commander holds it.
    let events = scenario.ok(&alice(), record("failed over to eu-central"));
    let id = change_id(&events);
    let change = scenario.state().change(id).unwrap().clone();
    assert_eq!(
        (
            change.what.as_str(),
            change.why.as_str(),
            change.revert.as_str()
        ),
        (
            "failed over to eu-central",
            "to stop the bleeding",
            "undo failed over to eu-central"
        )
    );
    assert_eq!(
        (change.recorded_by, change.state),
        (alice().actor, ChangeState::Open)
    );
    assert_rule(
        &scenario.refused(&bob(), record("freelancing")),
        "forbidden",
        "only the operations lead may record production changes \
         (the incident commander holds operations while it is not delegated)",
    );
    scenario.ok(&alice(), assign(Role::OperationsLead, &bob()));
    scenario.ok(&bob(), record("restarted the workers"));
    assert_rule(
        &scenario.refused(&alice(), record("a quick fix")),
        "forbidden",
        "only the operations lead may record production changes (operations is delegated to Bob)",
    );
    assert_rule(
        &scenario.refused(&adam(), record("admin fix")),
        "forbidden",
        "only the operations lead may record production changes (operations is delegated to Bob)",
    );
    assert_rule(
        &scenario.refused(
            &bob(),
            Command::RecordChange {
                what: " ".to_owned(),
                why: String::new(),
                revert: "x".to_owned(),
            },
        ),
        "invalid",
        "a change needs to say what changed",
    );
    assert_rule(
        &scenario.refused(
            &bob(),
            Command::RecordChange {
                what: "x".to_owned(),
                why: String::new(),
                revert: "".to_owned(),
            },
        ),
        "invalid",
        "a change needs a way to revert it",
    );
}

#[test]
fn only_planning_marks_changes_reverted_or_waived() {
    let mut scenario = Scenario::staffed();
    let first = change_id(&scenario.ok(&bob(), record("raised the pool size")));
    let second = change_id(&scenario.ok(&bob(), record("disabled the cache")));
    scenario.ok(&bob(), record("pinned the old build"));
    assert_rule(
        &scenario.refused(&bob(), reverted(first)),
        "forbidden",
        "only the planning lead may mark changes reverted (planning is delegated to Dave)",
    );
    assert_rule(
        &scenario.refused(&alice(), waive(first, "fine")),
        "forbidden",
        "only the planning lead may waive changes (planning is delegated to Dave)",
    );
    scenario.advance(Duration::minutes(2));
    scenario.ok(&dave(), reverted(first));
    assert_eq!(
        scenario.state().change(first).unwrap().state,
        ChangeState::Reverted {
            by: dave().actor,
            at: t0() + Duration::minutes(2),
        }
    );
    assert_rule(
        &scenario.refused(&dave(), waive(second, " ")),
        "invalid",
        "waiving a change needs a reason",
    );
    scenario.ok(&dave(), waive(second, "cache is not needed"));
    assert_eq!(
        scenario.state().change(second).unwrap().state,
        ChangeState::Waived {
            by: dave().actor,
            at: t0() + Duration::minutes(2),
            reason: "cache is not needed".to_owned(),
        }
    );
    assert_rule(
        &scenario.refused(&dave(), reverted(first)),
        "conflict",
        &format!("change {first} is already reverted"),
    );
    assert_rule(
        &scenario.refused(&dave(), waive(second, "again")),
        "conflict",
        &format!("change {second} is already waived"),
    );
    assert_rule(
        &scenario.refused(&dave(), reverted(ChangeId(404))),
        "not_found",
        "there is no change 404",
    );
    assert_eq!(
        scenario.state().recent_timeline[scenario.state().recent_timeline.len() - 2..],
        [
            "09:02 UTC Dave: reverted change \"raised the pool size\"",
            "09:02 UTC Dave: waived the revert of change \"disabled the cache\": cache is not needed",
        ]
    );
    // While planning is not delegated, the commander holds it.
    let mut scenario = Scenario::declared();
    let change = change_id(&scenario.ok(&alice(), record("x")));
    assert_rule(
        &scenario.refused(&bob(), reverted(change)),
        "forbidden",
        "only the planning lead may mark changes reverted \
         (the incident commander holds planning while it is not delegated)",
    );
    scenario.ok(&alice(), reverted(change));
}

#[test]
fn anyone_responding_posts_notes() {
    let mut scenario = Scenario::staffed();
    let erin = caller("erin", "Erin", AccessRole::Responder);
    scenario.ok(&alice(), add_responder(&erin, "logs"));
    for (minute, who) in [alice(), bob(), adam(), erin].iter().enumerate() {
        scenario.now = t0() + Duration::minutes(minute as i64);
        scenario.ok(who, note(&format!("note {minute}")));
    }
    assert_rule(
        &scenario.refused(&bob(), note("  ")),
        "invalid",
        "a note cannot be empty",
    );
    for n in 4..9 {
        scenario.ok(&bob(), note(&format!("note {n}")));
    }
    let notes: Vec<&str> = scenario
        .state()
        .recent_notes
        .iter()
        .map(|n| n.text.as_str())
        .collect();
    assert_eq!(notes, ["note 4", "note 5", "note 6", "note 7", "note 8"]);
    assert_eq!(
        briefing(scenario.state(), "").current_actions[0],
        "09:03 UTC Bob: note 4"
    );
}

#[test]
fn the_briefing_situation_prefers_the_pin_then_the_summary_then_the_title() {
    let mut scenario = Scenario::declared();
    assert_eq!(briefing(scenario.state(), "").situation, "Checkout is down");
    let mut with_summary = Scenario::undeclared();
    with_summary.ok(
        &alice(),
        Command::Declare {
            title: "Checkout is down".to_owned(),
            severity: None,
            criteria: None,
            summary: Some("card payments fail in eu-west".to_owned()),
        },
    );
    assert_eq!(
        briefing(with_summary.state(), "").situation,
        "card payments fail in eu-west"
    );
    scenario.ok(&alice(), pin("failing over", t0() + Duration::hours(1)));
    let brief = briefing(scenario.state(), "watch the queue");
    assert_eq!(brief.situation, "failing over");
    assert_eq!(brief.notes, "watch the queue");
    assert!(brief.objectives.is_empty() && brief.open_changes.is_empty());
}

// ---------------------------------------------------------------------------
// The permission matrix

/// Which incident a matrix row runs against.
#[derive(Clone, Copy, Debug)]
enum Fixture {
    /// Nothing declared yet.
    Undeclared,
    /// Alice commands; Olivia leads operations, Cora communications, Pat
    /// planning; Rick is a responder; Cora has offered communications to
    /// Tess; one exit criterion is unmet and one change is open.
    Staffed,
    /// As `Staffed`, but Olivia has handed operations back to Alice.
    OpsUndelegated,
    /// As `Staffed`, resolved with an override.
    Resolved,
    /// As `Resolved`, with the change waived, then closed.
    Closed,
}

/// The callers of the matrix, in column order.
fn matrix_callers() -> [(&'static str, Caller); 9] {
    [
        ("commander", caller("alice", "Alice", AccessRole::Responder)),
        (
            "ops lead",
            caller("olivia", "Olivia", AccessRole::Responder),
        ),
        ("comms lead", caller("cora", "Cora", AccessRole::Responder)),
        ("planning lead", caller("pat", "Pat", AccessRole::Responder)),
        ("responder", caller("rick", "Rick", AccessRole::Responder)),
        (
            "handoff target",
            caller("tess", "Tess", AccessRole::Responder),
        ),
        ("admin", caller("adam", "Adam", AccessRole::Admin)),
        ("viewer", caller("vera", "Vera", AccessRole::Viewer)),
        ("system", Caller::system()),
    ]
}

/// Ids in the fixtures (identical in all, since later fixtures only append).
struct FixtureIds {
    handoff: HandoffId,
    change: ChangeId,
    criterion: CriterionId,
}

fn fixture(kind: Fixture) -> (Scenario, FixtureIds) {
    let [
        (_, ic),
        (_, ops),
        (_, comms),
        (_, planning),
        (_, responder),
        (_, target),
        ..,
    ] = matrix_callers();
    let mut scenario = Scenario::undeclared();
    let mut ids = FixtureIds {
        handoff: HandoffId(0),
        change: ChangeId(0),
        criterion: CriterionId(0),
    };
    if let Fixture::Undeclared = kind {
        return (scenario, ids);
    }
    scenario.ok(
        &ic,
        Command::Declare {
            title: "Checkout is down".to_owned(),
            severity: Some(Severity::Sev2),
            criteria: None,
            summary: None,
        },
    );
    scenario.ok(&ic, assign(Role::OperationsLead, &ops));
    scenario.ok(&ic, assign(Role::CommunicationsLead, &comms));
    scenario.ok(&ic, assign(Role::PlanningLead, &planning));
    scenario.ok(&ic, add_responder(&responder, "database"));
    ids.criterion = criterion_id(&scenario.ok(&ic, add_criterion("errors normal")));
    ids.change = change_id(&scenario.ok(&ops, record("scaled the database")));
    ids.handoff = offered_id(&scenario.ok(&comms, offer(Role::CommunicationsLead, &target)));
    match kind {
        Fixture::Undeclared | Fixture::Staffed => {}
        Fixture::OpsUndelegated => {
            let back = offered_id(&scenario.ok(&ops, offer(Role::OperationsLead, &ic)));
            scenario.ok(&ic, accept(back));
        }
        Fixture::Resolved | Fixture::Closed => {
            scenario.ok(&ic, status_with_override(Status::Resolved, "drill"));
            if let Fixture::Closed = kind {
                scenario.ok(&planning, waive(ids.change, "keep it"));
                scenario.ok(&ic, status(Status::Closed));
            }
        }
    }
    scenario.advance(Duration::minutes(1));
    (scenario, ids)
}

/// Every command kind × every kind of caller: `Y` allowed, `N` refused.
/// Each row's command is valid for the callers marked `Y`, so an `N` is the
/// permission rule (or, on a closed incident, the closed rule) speaking.
#[test]
fn permission_matrix() {
    use Fixture::*;
    type MakeCommand = fn(&FixtureIds) -> Command;
    fn nina() -> Actor {
        caller("nina", "Nina", AccessRole::Responder).actor
    }
    #[rustfmt::skip]
    let rows: Vec<(&str, Fixture, &str, MakeCommand)> = vec![
        //                                                 IC ops com pln rsp tgt adm vwr sys
        ("declare",                   Undeclared,      "Y  Y   Y   Y   Y   Y   Y   N   N", |_| declare("Checkout is down")),
        ("set severity",              Staffed,         "Y  N   N   N   N   N   N   N   N", |_| Command::SetSeverity { severity: Severity::Sev1 }),
        ("assign role",               OpsUndelegated,  "Y  N   N   N   N   N   N   N   N", |_| Command::AssignRole { role: Role::OperationsLead, to: nina() }),
        ("add responder",             Staffed,         "Y  Y   Y   Y   N   N   N   N   N", |_| Command::AddResponder { responder: nina(), assignment: "cache".into() }),
        ("remove responder",          Staffed,         "Y  Y   Y   Y   N   N   N   N   N", |_| Command::RemoveResponder { responder: UserId("rick".into()) }),
        ("offer operations",          Staffed,         "Y  Y   N   N   N   N   N   N   N", |_| Command::OfferHandoff { role: Role::OperationsLead, to: nina(), notes: String::new() }),
        ("offer command",             Staffed,         "Y  N   N   N   N   N   N   N   N", |_| Command::OfferHandoff { role: Role::IncidentCommander, to: nina(), notes: String::new() }),
        ("accept handoff",            Staffed,         "N  N   N   N   N   Y   N   N   N", |ids| accept(ids.handoff)),
        ("decline handoff",           Staffed,         "N  N   N   N   N   Y   N   N   N", |ids| decline(ids.handoff)),
        ("cancel handoff",            Staffed,         "Y  N   Y   N   N   N   N   N   N", |ids| cancel(ids.handoff)),
        ("assume command",            Staffed,         "N  N   N   N   N   N   Y   N   N", |_| assume(Role::IncidentCommander, "Alice unreachable")),
        ("force-assign operations",   Staffed,         "N  N   N   N   N   N   Y   N   N", |_| Command::ForceAssignRole { role: Role::OperationsLead, to: nina(), reason: "Olivia unreachable".into() }),
        ("set next commander",        Staffed,         "Y  N   N   Y   N   N   N   N   N", |_| Command::SetNextCommander { next: Some(nina()) }),
        ("pin status",                Staffed,         "Y  N   Y   N   N   N   N   N   N", |_| pin("investigating", t0() + Duration::hours(1))),
        ("set status",                Staffed,         "Y  N   N   N   N   N   N   N   N", |_| status(Status::Mitigated)),
        ("reopen resolved",           Resolved,        "Y  N   N   N   N   N   Y   N   N", |_| reopen("regression")),
        ("reopen closed",             Closed,          "Y  N   N   N   N   N   Y   N   N", |_| reopen("regression")),
        ("add exit criterion",        Staffed,         "Y  N   N   N   N   N   N   N   N", |_| add_criterion("queue drained")),
        ("set exit criterion",        Staffed,         "Y  N   N   N   N   N   N   N   N", |ids| set_criterion(ids.criterion, true)),
        ("record change",             Staffed,         "N  Y   N   N   N   N   N   N   N", |_| record("restarted workers")),
        ("record change, ops to IC",  OpsUndelegated,  "Y  N   N   N   N   N   N   N   N", |_| record("restarted workers")),
        ("mark change reverted",      Staffed,         "N  N   N   Y   N   N   N   N   N", |ids| reverted(ids.change)),
        ("waive change",              Staffed,         "N  N   N   Y   N   N   N   N   N", |ids| waive(ids.change, "keep it")),
        ("post note",                 Staffed,         "Y  Y   Y   Y   Y   Y   Y   N   N", |_| note("looking at the db")),
        ("set impact start",          Staffed,         "Y  N   N   N   N   N   N   N   N", |_| Command::SetImpactStart { at: t0() - Duration::minutes(20) }),
        ("pin final update",          Resolved,        "Y  N   Y   N   N   N   N   N   N", |_| Command::PinStatus { summary: "all clear".into(), next_update_by: None, is_final: true }),
        ("post note when closed",     Closed,          "N  N   N   N   N   N   N   N   N", |_| note("looking at the db")),
        ("tick",                      Staffed,         "N  N   N   N   N   N   N   N   Y", |_| Command::Tick),
    ];
    let callers = matrix_callers();
    let mut mismatches = Vec::new();
    for (label, kind, expected, make) in rows {
        let expected: Vec<bool> = expected
            .split_whitespace()
            .map(|cell| cell == "Y")
            .collect();
        assert_eq!(expected.len(), callers.len(), "row {label}");
        for ((who, caller), allowed) in callers.iter().zip(expected) {
            let (mut scenario, ids) = fixture(kind);
            let command = make(&ids);
            let closed_rule = matches!(kind, Closed)
                && !matches!(command, Command::Reopen { .. })
                && caller.access.can_write()
                && !caller.is_system();
            let result = scenario.try_apply(caller, command);
            match (&result, allowed) {
                (Ok(_), true) => {}
                (Err(error), false) => {
                    let code_expected = if closed_rule { "conflict" } else { "forbidden" };
                    if error.code() != code_expected {
                        mismatches.push(format!(
                            "{label} by {who}: refused as {} ({error}), expected {code_expected}",
                            error.code()
                        ));
                    }
                }
                (Ok(events), false) => mismatches.push(format!(
                    "{label} by {who}: allowed ({:?}), expected refused",
                    kinds(events)
                )),
                (Err(error), true) => mismatches.push(format!(
                    "{label} by {who}: refused ({error}), expected allowed"
                )),
            }
        }
    }
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
}

// ---------------------------------------------------------------------------
// Wire format and the checkers themselves

#[test]
fn commands_and_events_have_the_documented_wire_format() {
    let command: Command = serde_json::from_value(serde_json::json!({
        "type": "assign_role",
        "role": "operations_lead",
        "to": {"id": "bob", "name": "Bob"},
    }))
    .unwrap();
    assert_eq!(command, assign(Role::OperationsLead, &bob()));
    let command: Command = serde_json::from_value(serde_json::json!({
        "type": "declare", "title": "x",
    }))
    .unwrap();
    assert_eq!(command, declare("x"));
    assert_eq!(
        serde_json::to_value(Command::Tick).unwrap(),
        serde_json::json!({"type": "tick"})
    );
    assert_eq!(
        serde_json::to_value(Severity::Sev1).unwrap(),
        serde_json::json!("sev1")
    );

    let mut scenario = Scenario::staffed();
    let events = scenario.ok(&bob(), record("raised the pool size"));
    assert_eq!(
        serde_json::to_value(&events[0]).unwrap(),
        serde_json::json!({
            "seq": 5,
            "at": "2025-03-14T09:00:00Z",
            "actor": {"id": "bob", "name": "Bob"},
            "type": "change_recorded",
            "change": 5,
            "what": "raised the pool size",
            "why": "to stop the bleeding",
            "revert": "undo raised the pool size",
        })
    );
    scenario.ok(&alice(), offer(Role::IncidentCommander, &carol()));
    let state = serde_json::to_value(scenario.state()).unwrap();
    assert_eq!(
        state["roles"][1],
        serde_json::json!({
            "role": "operations_lead",
            "holder": {"id": "bob", "name": "Bob"},
            "delegated": true,
            "since": "2025-03-14T09:00:00Z",
        })
    );
    assert_eq!(
        state["changes"][0]["state"],
        serde_json::json!({"type": "open"})
    );
    assert_eq!(state["status"], "active");
    assert_eq!(
        serde_json::from_value::<IncidentState>(state).unwrap(),
        *scenario.state()
    );
    for event in &scenario.events {
        let json = serde_json::to_string(event).unwrap();
        assert_eq!(
            &serde_json::from_str::<Event>(&json).unwrap(),
            event,
            "{json}"
        );
    }
    let error = CommandError::forbidden("viewers cannot change an incident");
    assert_eq!(error.http_status(), 403);
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        serde_json::json!({"kind": "forbidden", "rule": "viewers cannot change an incident"})
    );
}

#[test]
fn the_invariant_checker_catches_broken_states() {
    let mut scenario = Scenario::staffed();
    scenario.ok(&carol(), offer(Role::CommunicationsLead, &adam()));
    let good = scenario.state().clone();
    check_invariants(&good).unwrap();

    let mut broken = good.clone();
    broken.roles[Role::OperationsLead.index()].delegated = false;
    assert!(check_invariants(&broken).is_err(), "delegation flag");

    let mut broken = good.clone();
    broken.roles[Role::IncidentCommander.index()].holder = bob().actor;
    assert!(
        check_invariants(&broken).is_err(),
        "commander without tenure"
    );

    let mut broken = good.clone();
    let extra = broken.pending_handoffs[0].clone();
    broken.pending_handoffs.push(extra);
    assert!(
        check_invariants(&broken).is_err(),
        "two offers for one role"
    );

    let mut broken = good.clone();
    broken.pending_handoffs[0].from = bob().actor;
    assert!(
        check_invariants(&broken).is_err(),
        "offer from a non-holder"
    );

    let mut broken = good.clone();
    broken.role_history.retain(|t| t.role != Role::PlanningLead);
    assert!(check_invariants(&broken).is_err(), "missing tenure");

    let mut broken = good.clone();
    broken.role_history.push(Tenure {
        role: Role::IncidentCommander,
        holder: bob().actor,
        from: t0(),
        to: None,
    });
    assert!(check_invariants(&broken).is_err(), "two commanders");

    let mut broken = good.clone();
    broken.next_commander = Some(alice().actor);
    assert!(
        check_invariants(&broken).is_err(),
        "next commander is commander"
    );

    let mut events = scenario.events.clone();
    check_sequence(&events).unwrap();
    events.swap(1, 2);
    assert!(check_sequence(&events).is_err());
}

#[test]
#[should_panic(expected = "the first event must be declared")]
fn folding_a_log_without_a_declaration_panics() {
    let scenario = Scenario::staffed();
    fold(&scenario.events[1..]);
}

#[test]
#[should_panic(expected = "declares the incident a second time")]
fn folding_a_log_with_two_declarations_panics() {
    let scenario = Scenario::declared();
    let twice = [scenario.events[0].clone(), scenario.events[0].clone()];
    fold(&twice);
}

#[test]
fn texts_and_lists_are_bounded() {
    use crate::limits;
    let mut scenario = Scenario::declared();
    let commander = scenario.state().commander().clone();
    let ic = Caller::new(commander, AccessRole::Responder);
    assert_rule(
        &scenario.refused(&ic, note(&"x".repeat(limits::NOTE_CHARS + 1))),
        "invalid",
        &format!(
            "`text` is {} characters; the limit is {}",
            limits::NOTE_CHARS + 1,
            limits::NOTE_CHARS
        ),
    );
    scenario.ok(&ic, note(&"x".repeat(limits::NOTE_CHARS)));
    for n in 0..limits::EXIT_CRITERIA {
        scenario.ok(
            &ic,
            Command::AddExitCriterion {
                text: format!("criterion {n}"),
            },
        );
    }
    let error = scenario.refused(
        &ic,
        Command::AddExitCriterion {
            text: "one too many".into(),
        },
    );
    assert_eq!(error.code(), "conflict", "{error}");
    let error = scenario.refused(
        &ic,
        Command::AssignRole {
            role: Role::OperationsLead,
            to: Actor {
                id: UserId(" SYSTEM ".into()),
                name: "Impostor".into(),
            },
        },
    );
    assert_eq!(error.code(), "invalid", "{error}");
}

// ---------------------------------------------------------------------------
// People a command names

#[test]
fn an_incident_knows_its_declarer_role_holders_past_and_present_and_responders() {
    let mut scenario = Scenario::staffed();
    scenario.ok(
        &alice(),
        add_responder(&caller("erin", "Erin", AccessRole::Responder), "logs"),
    );
    // Bob hands operations back: he stays known as a past holder.
    scenario.ok(&alice(), offer(Role::OperationsLead, &carol()));
    let handoff = scenario.state().pending_handoffs[0].handoff;
    scenario.ok(&carol(), accept(handoff));
    let mut ids: Vec<String> = people(scenario.state())
        .into_iter()
        .map(|(actor, _)| actor.id.0)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["alice", "bob", "carol", "dave", "erin"]);
}

#[test]
fn a_named_person_must_be_known_and_takes_the_known_name() {
    let josephine = Actor {
        id: UserId("josephine".into()),
        name: "Josephine Ng".into(),
    };
    let known = |id: &UserId| (id == &josephine.id).then(|| josephine.clone());
    let typo = Actor {
        id: UserId("josephin".into()),
        name: "Josephine".into(),
    };
    let misnamed = Actor {
        id: UserId("josephine".into()),
        name: "Jo".into(),
    };
    let naming = |to: &Actor| {
        vec![
            Command::AssignRole {
                role: Role::OperationsLead,
                to: to.clone(),
            },
            Command::AddResponder {
                responder: to.clone(),
                assignment: "db".into(),
            },
            Command::OfferHandoff {
                role: Role::PlanningLead,
                to: to.clone(),
                notes: String::new(),
            },
            Command::ForceAssignRole {
                role: Role::PlanningLead,
                to: to.clone(),
                reason: "asleep".into(),
            },
            Command::SetNextCommander {
                next: Some(to.clone()),
            },
        ]
    };
    for command in naming(&typo) {
        let error = resolve_people(&command, known).expect_err(command.name());
        assert_eq!(error.kind, ErrorKind::UnknownPerson);
        assert_eq!(error.code(), "unknown_person");
        assert_eq!(error.http_status(), 422);
        assert_eq!(error.person, Some(UserId("josephin".into())));
        assert_eq!(
            error.rule,
            "no one known as `josephin`; pick someone from GET /api/people"
        );
    }
    for (command, expected) in naming(&misnamed).into_iter().zip(naming(&josephine)) {
        assert_eq!(resolve_people(&command, known), Ok(expected));
    }
    // Commands naming nobody pass unchanged; ids the machine refuses by its
    // own rules (blank, reserved, too long) are left to it.
    for command in [
        note("hello"),
        set_next(None),
        Command::RemoveResponder {
            responder: UserId("ghost".into()),
        },
        Command::AssignRole {
            role: Role::OperationsLead,
            to: Actor {
                id: UserId("System".into()),
                name: "x".into(),
            },
        },
        Command::AssignRole {
            role: Role::OperationsLead,
            to: Actor {
                id: UserId(" ".into()),
                name: "x".into(),
            },
        },
    ] {
        assert_eq!(resolve_people(&command, known), Ok(command.clone()));
    }
}

// ---------------------------------------------------------------------------
// Final pins, the impact start, refused attempts

fn final_pin(summary: &str) -> Command {
    Command::PinStatus {
        summary: summary.to_owned(),
        next_update_by: None,
        is_final: true,
    }
}

#[test]
fn a_final_pin_needs_a_mitigated_incident_and_arms_no_reminder() {
    let mut scenario = Scenario::staffed();
    scenario.ok(&carol(), pin("investigating", t0() + Duration::minutes(30)));
    assert_rule(
        &scenario.refused(&carol(), final_pin("all clear")),
        "conflict",
        "a final update (no next deadline) is allowed once the incident is mitigated or later; it is still active",
    );
    assert_rule(
        &scenario.refused(
            &carol(),
            Command::PinStatus {
                summary: "x".into(),
                next_update_by: None,
                is_final: false,
            },
        ),
        "invalid",
        "a status update needs `next_update_by`, unless it is the final one (`final: true`)",
    );
    assert_rule(
        &scenario.refused(
            &carol(),
            Command::PinStatus {
                summary: "x".into(),
                next_update_by: Some(t0() + Duration::hours(1)),
                is_final: true,
            },
        ),
        "invalid",
        "a final update has no next deadline; leave out `next_update_by`",
    );
    scenario.ok(&alice(), status(Status::Mitigated));
    let events = scenario.ok(&carol(), final_pin("all clear"));
    assert_eq!(
        describe(None, &events[0]),
        "pinned the final status: all clear (no further updates)"
    );
    let pinned = scenario.state().pin.clone().unwrap();
    assert!(pinned.is_final);
    assert_eq!(pinned.next_update_by, None);
    assert_eq!(next_deadline(scenario.state()), None, "no reminder armed");
    scenario.advance(Duration::days(1));
    assert!(scenario.tick().is_empty(), "never overdue");
    // Old stored events (no `final`, a deadline) still decode.
    let old = r#"{"seq":9,"at":"2025-03-14T09:00:00Z","actor":{"id":"a","name":"A"},"type":"status_pinned","summary":"s","next_update_by":"2025-03-14T09:30:00Z"}"#;
    let event: Event = serde_json::from_str(old).unwrap();
    assert!(matches!(
        event.kind,
        EventKind::StatusPinned {
            is_final: false,
            next_update_by: Some(_),
            ..
        }
    ));
    let wire = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(wire["final"], true, "serialised as `final`");
}

#[test]
fn the_commander_sets_the_impact_start_never_in_the_future() {
    let mut scenario = Scenario::staffed();
    let earlier = t0() - Duration::minutes(42);
    assert_rule(
        &scenario.refused(&bob(), Command::SetImpactStart { at: earlier }),
        "forbidden",
        "only the incident commander may set the impact start",
    );
    assert_rule(
        &scenario.refused(
            &alice(),
            Command::SetImpactStart {
                at: scenario.now + Duration::seconds(1),
            },
        ),
        "invalid",
        "the impact start cannot be in the future",
    );
    let events = scenario.ok(&alice(), Command::SetImpactStart { at: earlier });
    assert_eq!(
        events[0].kind,
        EventKind::ImpactStartSet {
            impact_start: earlier
        }
    );
    assert_eq!(scenario.state().impact_start, Some(earlier));
    assert_eq!(
        scenario.state().declared_at,
        t0(),
        "distinct from declaration"
    );
    assert_rule(
        &scenario.refused(&alice(), Command::SetImpactStart { at: earlier }),
        "conflict",
        "the impact start is already set to that time",
    );
}

#[test]
fn refused_changes_are_traced_for_the_commander_and_other_refusals_are_not() {
    let mut scenario = Scenario::staffed();
    let fred = caller("fred", "Fred", AccessRole::Responder);
    // A change by anyone but ops is refused and traced, even from the
    // commander once operations is delegated.
    for who in [fred.clone(), alice()] {
        let change = record("restart db");
        let refused = scenario.refused(&who, change.clone());
        assert_eq!(refused.kind, ErrorKind::Forbidden);
        let trace = refused_attempt(scenario.state(), &change, &who, &refused, scenario.now)
            .expect("a trace");
        assert_eq!(trace.seq, EventSeq(scenario.state().last_seq.0 + 1));
        assert_eq!(trace.at, scenario.now);
        assert_eq!(trace.actor, Caller::system().actor);
        assert_eq!(
            trace.kind,
            EventKind::AttemptRefused {
                by: who.actor.clone(),
                command: "record_change".into(),
                reason: "not the operations lead".into(),
                detail: "restart db".into(),
            }
        );
        assert_eq!(
            describe(None, &trace),
            format!(
                "Refused: {} (not the operations lead) tried to record a change: restart db",
                who.actor.name
            )
        );
        assert!(trace.kind.is_prominent());
        // Folding it changes nothing but the timeline.
        let after = evolve(scenario.state.clone(), &trace);
        assert_eq!(after.last_seq, trace.seq);
        assert_eq!(after.changes, scenario.state().changes);
        assert!(
            after
                .recent_timeline
                .last()
                .unwrap()
                .contains("Command Post: Refused: ")
        );
        check_invariants(&after).unwrap();
    }
    // A refused note is traced with its text, cut to the note limit.
    let long = "n".repeat(limits::NOTE_CHARS + 10);
    let forbidden = CommandError::forbidden("not on the list");
    let trace = refused_attempt(
        scenario.state(),
        &note(&long),
        &fred,
        &forbidden,
        scenario.now,
    )
    .expect("a trace");
    let EventKind::AttemptRefused {
        detail, command, ..
    } = trace.kind
    else {
        panic!("{trace:?}")
    };
    assert_eq!(
        (command.as_str(), detail.chars().count()),
        ("post_note", limits::NOTE_CHARS)
    );
    // Other refusals leave no trace: viewers, rules other than the role,
    // commands other than changes and notes, a closed incident.
    let none = |scenario: &Scenario, who: &Caller, command: Command| {
        let error = apply(
            scenario.state.as_ref(),
            &command,
            who,
            scenario.now,
            &scenario.rules,
        )
        .expect_err("refused");
        refused_attempt(scenario.state(), &command, who, &error, scenario.now)
    };
    assert_eq!(none(&scenario, &vera(), record("x")), None);
    assert_eq!(
        none(&scenario, &bob(), record(" ")),
        None,
        "invalid, not forbidden"
    );
    assert_eq!(none(&scenario, &fred, status(Status::Mitigated)), None);
    let mut closed = Scenario::staffed();
    closed.ok(&alice(), status_with_override(Status::Resolved, "drill"));
    closed.ok(&alice(), status(Status::Closed));
    assert_eq!(none(&closed, &fred, record("late")), None);
}

#[test]
fn notes_from_outside_the_response_are_posted_and_marked() {
    let mut scenario = Scenario::staffed();
    let erin = caller("erin", "Erin", AccessRole::Responder);
    let fred = caller("fred", "Fred", AccessRole::Responder);
    scenario.ok(&alice(), add_responder(&erin, "database"));
    let outsider = |events: &[Event]| match events {
        [
            Event {
                kind: EventKind::NotePosted { outsider, .. },
                ..
            },
        ] => *outsider,
        other => panic!("{other:?}"),
    };
    // The commander, role holders and listed responders are inside the response.
    for who in [alice(), bob(), carol(), dave(), erin.clone()] {
        let events = scenario.ok(&who, note("checked the db"));
        assert!(!outsider(&events), "{} is on the response", who.actor.name);
        assert_eq!(describe(None, &events[0]), "checked the db");
    }
    // Someone else's note is not refused, but marked; so is an admin's.
    for who in [fred.clone(), adam()] {
        let events = scenario.ok(&who, note("db looks hot from here"));
        assert!(
            outsider(&events),
            "{} is outside the response",
            who.actor.name
        );
        let line = format!(
            "{} (not on the responder list) posted a note: db looks hot from here",
            who.actor.name
        );
        assert_eq!(describe(None, &events[0]), line);
        assert_eq!(actor_line(None, &events[0]), line, "the name once");
        assert_eq!(
            scenario.state().recent_timeline.last().unwrap(),
            &format!("09:00 UTC {line}")
        );
        assert_eq!(
            scenario.state().recent_notes.last().unwrap().text,
            "db looks hot from here"
        );
    }
    // Once listed, Fred is inside; once removed, outside again.
    scenario.ok(&alice(), add_responder(&fred, "network"));
    assert!(!outsider(&scenario.ok(&fred, note("on it"))));
    scenario.ok(
        &alice(),
        Command::RemoveResponder {
            responder: fred.actor.id.clone(),
        },
    );
    assert!(outsider(&scenario.ok(&fred, note("still watching"))));
    // Events stored before the flag existed decode as inside the response.
    let old: EventKind =
        serde_json::from_value(serde_json::json!({"type": "note_posted", "text": "old"})).unwrap();
    assert_eq!(
        old,
        EventKind::NotePosted {
            text: "old".into(),
            outsider: false
        }
    );
}
