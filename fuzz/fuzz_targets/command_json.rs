//! Command JSON, as the command endpoints receive it, through the incident
//! state machine: `serde_json` into `incident::Command`, then
//! `machine::apply` against a realistic incident, and the events folded in
//! with `machine::evolve`.
//!
//! # Input
//!
//! ```text
//! scenario  caller json  caller json  ...      (at most 32 commands)
//! ```
//!
//! `scenario % 4` picks the incident the commands meet (built once, through
//! `apply`, from the same commands a client would send):
//! 0. not declared yet;
//! 1. just declared by Alice (responder), who is incident commander;
//! 2. under way: Bob holds operations, Carol communications, Dave is a
//!    responder and has a pending offer of planning, Bob recorded a change,
//!    Carol pinned a status, there is an exit criterion;
//! 3. resolved: as 2, but Dave took planning and marked the change reverted,
//!    the criterion is met, and the incident is resolved.
//!
//! Each command is preceded by one byte: `caller % 8` picks who sends it
//! (Alice, Bob, Carol, Dave, Erin: responders; Adam: admin; Vera: viewer;
//! the server's timer), and the clock moves `caller >> 3` minutes forward
//! first (ASCII digits '0'..'7' are the eight callers, six minutes apart).
//! Parsing stops at the first byte sequence that is not a command.
//!
//! # What must hold
//!
//! Nothing panics; every parsed command survives a JSON round trip; viewers
//! are always refused, only the timer ticks and the timer does nothing else;
//! a closed incident refuses all but reopen; refusals carry a rule. After
//! every accepted command: events are numbered on from the state, stamped
//! with the time and the caller; `check_invariants` holds; the log is a valid
//! sequence and replays (`fold`) to the same state; events and state survive
//! a JSON round trip; and `next_deadline` is exact (a tick at it does
//! something, a tick just before does nothing).

#![no_main]

use std::sync::LazyLock;

use chrono::{DateTime, Duration, TimeZone, Utc};
use commandpost_shared::incident::{
    Caller, Command, CommandError, Criteria, CriterionId, ErrorKind, Event, EventKind, HandoffId,
    IncidentState, Role, Severity, Status,
};
use commandpost_shared::machine::{self, Rules};
use commandpost_shared::{AccessRole, Actor, UserId};
use libfuzzer_sys::fuzz_target;

const MAX_COMMANDS: usize = 32;

/// The callers a selector byte picks from (`caller % 8`).
static CALLERS: LazyLock<[Caller; 8]> = LazyLock::new(|| {
    [
        person("alice", "Alice", AccessRole::Responder),
        person("bob", "Bob", AccessRole::Responder),
        person("carol", "Carol", AccessRole::Responder),
        person("dave", "Dave", AccessRole::Responder),
        person("erin", "Erin", AccessRole::Responder),
        person("adam", "Adam", AccessRole::Admin),
        person("vera", "Vera", AccessRole::Viewer),
        Caller::system(),
    ]
});
const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const DAVE: usize = 3;

/// The four scenarios, built once.
static SCENARIOS: LazyLock<[Incident; 4]> = LazyLock::new(|| {
    let empty = Incident::new();
    let mut declared = empty.clone();
    declared.setup(
        ALICE,
        Command::Declare {
            title: "Checkout API returning 502s".to_owned(),
            severity: Some(Severity::Sev2),
            criteria: Some(Criteria {
                needs_other_team: true,
                customer_visible: true,
                unresolved_after_hour: false,
            }),
            summary: Some("Card payments fail for about 30% of users.".to_owned()),
        },
    );
    let mut under_way = declared.clone();
    under_way.setup(ALICE, assign(Role::OperationsLead, BOB));
    under_way.setup(ALICE, assign(Role::CommunicationsLead, CAROL));
    under_way.setup(
        ALICE,
        Command::AddResponder {
            responder: actor(DAVE),
            assignment: "database failover".to_owned(),
        },
    );
    under_way.setup(
        ALICE,
        Command::AddExitCriterion {
            text: "error rate below 1% for 15 minutes".to_owned(),
        },
    );
    under_way.setup(
        BOB,
        Command::RecordChange {
            what: "rolled back deploy 4411".to_owned(),
            why: "502s started with it".to_owned(),
            revert: "redeploy 4411".to_owned(),
        },
    );
    let next_update_by = under_way.now + Duration::minutes(30);
    under_way.setup(
        CAROL,
        Command::PinStatus {
            summary: "Rolled back the suspect deploy; watching error rates.".to_owned(),
            next_update_by,
        },
    );
    under_way.setup(
        ALICE,
        Command::OfferHandoff {
            role: Role::PlanningLead,
            to: actor(DAVE),
            notes: "please own the revert register".to_owned(),
        },
    );
    let mut resolved = under_way.clone();
    let state = resolved.state.as_ref().expect("declared");
    let handoff: HandoffId = state.pending_handoffs[0].handoff;
    let change = state.changes[0].change;
    let criterion: CriterionId = state.exit_criteria[0].criterion;
    resolved.setup(DAVE, Command::AcceptHandoff { handoff });
    resolved.setup(DAVE, Command::MarkChangeReverted { change });
    resolved.setup(
        ALICE,
        Command::SetExitCriterion {
            criterion,
            met: true,
        },
    );
    resolved.setup(
        ALICE,
        Command::SetStatus {
            status: Status::Resolved,
            override_reason: None,
        },
    );
    [empty, declared, under_way, resolved]
});

fuzz_target!(|data: &[u8]| {
    let Some((&scenario, mut rest)) = data.split_first() else {
        return;
    };
    let mut incident = SCENARIOS[usize::from(scenario % 4)].clone();
    for _ in 0..MAX_COMMANDS {
        let Some((&selector, json)) = rest.split_first() else {
            break;
        };
        let mut stream = serde_json::Deserializer::from_slice(json).into_iter::<Command>();
        let Some(Ok(command)) = stream.next() else {
            break;
        };
        rest = &json[stream.byte_offset()..];
        check_round_trip(&command);
        incident.step(selector, &command);
    }
});

fn person(id: &str, name: &str, access: AccessRole) -> Caller {
    Caller::new(
        Actor {
            id: UserId(id.to_owned()),
            name: name.to_owned(),
        },
        access,
    )
}

fn actor(index: usize) -> Actor {
    CALLERS[index].actor.clone()
}

fn assign(role: Role, to: usize) -> Command {
    Command::AssignRole { role, to: actor(to) }
}

fn check_round_trip(command: &Command) {
    let json = serde_json::to_vec(command).expect("a command serialises");
    let back: Command = serde_json::from_slice(&json)
        .unwrap_or_else(|error| panic!("{} does not parse back: {error}", String::from_utf8_lossy(&json)));
    assert_eq!(&back, command, "a command changed in a JSON round trip");
}

/// An incident's log and state, and the time.
#[derive(Clone)]
struct Incident {
    state: Option<IncidentState>,
    log: Vec<Event>,
    now: DateTime<Utc>,
    rules: Rules,
}

impl Incident {
    fn new() -> Self {
        Self {
            state: None,
            log: Vec::new(),
            now: Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0).unwrap(),
            rules: Rules::default(),
        }
    }

    /// Scenario building: the command must be accepted.
    fn setup(&mut self, caller: usize, command: Command) {
        self.now += Duration::minutes(1);
        let name = command.name();
        if let Err(error) = self.apply(&CALLERS[caller], &command) {
            panic!("scenario: {name} refused: {error}");
        }
    }

    fn step(&mut self, selector: u8, command: &Command) {
        let caller = &CALLERS[usize::from(selector % 8)];
        self.now += Duration::minutes(i64::from(selector >> 3));
        let closed = self.state.as_ref().is_some_and(|s| s.status == Status::Closed);
        let result = self.apply(caller, command);
        let is_tick = matches!(command, Command::Tick);
        match &result {
            Ok(events) => {
                assert!(caller.access.can_write(), "a viewer changed the incident");
                assert_eq!(caller.is_system(), is_tick, "{} by {}", command.name(), caller.actor.name);
                if closed && !matches!(command, Command::Reopen { .. }) {
                    assert!(events.is_empty(), "a closed incident accepted {}", command.name());
                }
            }
            Err(error) => {
                assert!(
                    !error.rule.trim().is_empty() && !error.rule.ends_with('.'),
                    "a refusal without a proper rule: {error:?}"
                );
                let _ = (error.code(), error.http_status(), error.to_string());
                if !caller.access.can_write() {
                    assert_eq!(error.kind, ErrorKind::Forbidden);
                }
                if caller.is_system() && self.state.is_some() {
                    assert!(!is_tick, "a tick was refused: {error}");
                }
            }
        }
    }

    /// `machine::apply`, and everything that must hold after it.
    fn apply(&mut self, caller: &Caller, command: &Command) -> Result<Vec<Event>, CommandError> {
        let events = machine::apply(self.state.as_ref(), command, caller, self.now, &self.rules)?;
        if !matches!(command, Command::Tick) {
            assert!(!events.is_empty(), "{} was accepted without events", command.name());
        }
        for event in &events {
            let expected = self.state.as_ref().map_or(0, |s| s.last_seq.0) + 1;
            assert_eq!(event.seq.0, expected, "events are numbered in order");
            assert_eq!(event.at, self.now);
            assert_eq!(event.actor, caller.actor);
            let json = serde_json::to_string(event).expect("an event serialises");
            let back: Event = serde_json::from_str(&json)
                .unwrap_or_else(|error| panic!("{json} does not parse back: {error}"));
            assert_eq!(&back, event, "an event changed in a JSON round trip");
            self.state = Some(machine::evolve(self.state.take(), event));
            self.log.push(event.clone());
        }
        if !events.is_empty() {
            let state = self.state.as_ref().expect("a state after events");
            if let Err(broken) = machine::check_invariants(state) {
                panic!("after {} by {}: {broken}", command.name(), caller.actor.name);
            }
            machine::check_sequence(&self.log).unwrap();
            assert_eq!(machine::fold(&self.log).as_ref(), Some(state), "replay differs");
            let json = serde_json::to_string(state).expect("a state serialises");
            let back: IncidentState = serde_json::from_str(&json)
                .unwrap_or_else(|error| panic!("{json} does not parse back: {error}"));
            assert_eq!(&back, state, "the state changed in a JSON round trip");
            // The overdue flag agrees with the log.
            if let Some(pin) = &state.pin {
                let reported = self.log.iter().any(|e| {
                    matches!(e.kind, EventKind::UpdateOverdue { pin: p, .. } if p == pin.seq)
                });
                assert_eq!(pin.overdue, reported, "the pin's overdue flag disagrees with the log");
            }
            let _ = machine::briefing(state, "fuzz");
            self.check_deadline();
        }
        Ok(events)
    }

    /// A tick at `next_deadline` does something; a tick just before does not.
    fn check_deadline(&self) {
        let state = self.state.as_ref().expect("declared");
        let Some(deadline) = machine::next_deadline(state) else {
            return;
        };
        let tick = |at| machine::apply(Some(state), &Command::Tick, &Caller::system(), at, &self.rules);
        let at = tick(deadline).expect("the timer may always tick");
        assert!(!at.is_empty(), "a tick at next_deadline did nothing");
        if let Some(before) = deadline.checked_sub_signed(Duration::nanoseconds(1)) {
            let before = tick(before).expect("the timer may always tick");
            assert!(before.is_empty(), "a tick before next_deadline did something");
        }
    }
}
