//! Command JSON, as the command endpoints receive it, through the incident
//! state machine: `serde_json` into `incident::Command`, then
//! `machine::apply` against a realistic incident, and the events folded in
//! with `machine::evolve`.
//!
//! # Input
//!
//! ```text
//! scenario  caller command  caller command  ...      (at most 32 commands)
//! ```
//!
//! A command is either command JSON (an object with its `"type"`), or, as
//! `POST /api/incidents/{id}/commands/{name}` receives it (`commands.rs`,
//! `run_command`), an array `[name, body]` or `[name, body, pad]`: a `name`
//! outside `COMMAND_NAMES` is answered 404 and a body that is not an object
//! 422, as the server does; otherwise `"type": name` is put into the object
//! and `serde_json::from_value` makes the command, which must then be the
//! `name`d one. `pad` (a number `p`) stretches one text of the body to the
//! edge of a limit in `commandpost_shared::limits`: the `(p / 54)`-th string
//! of the body (in document order) becomes `p % 18 / 3`-th limit of
//! [`EDGES`] plus `p % 3 - 1` characters long, made of `x`, `é` or spaces
//! (`p / 18 % 3`), so that libFuzzer, whose inputs are a few KiB, reaches
//! every limit.
//!
//! `scenario % 8` picks the incident the commands meet (built once, through
//! `apply`, from the same commands a client would send; 7 is 3):
//! 0. not declared yet;
//! 1. just declared by Alice (responder), who is incident commander;
//! 2. under way: Bob holds operations, Carol communications, Dave is a
//!    responder and has a pending offer of planning, Bob recorded a change,
//!    Carol pinned a status, there is an exit criterion;
//! 3. resolved: as 2, but Dave took planning and marked the change reverted,
//!    the criterion is met, and the incident is resolved;
//! 4. to 6. full: as 2, with one responder (4), one exit criterion (5) or
//!    one open change (6) short of its limit (`limits::RESPONDERS`,
//!    `EXIT_CRITERIA`, `OPEN_CHANGES`).
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
//! a closed incident refuses all but reopen; refusals carry a rule; a command
//! with a text over its limit (by this target's own table of fields and
//! limits) is refused, as `invalid` when a person sent it, and no list of the
//! incident grows past its limit (a command that would is refused as
//! `conflict`). After every accepted command: events are numbered on from
//! the state, stamped with the time and the caller; `check_invariants`
//! holds; events and state survive a JSON round trip; the pin's overdue
//! flag agrees with the log; and `next_deadline` is exact (a tick at it does
//! something, a tick just before does nothing). Once per input, if anything
//! was accepted: the log is a valid sequence and replays (`fold`) to the
//! same state (`fold` is `evolve` over the log, which is how the state was
//! built, step by step, so one replay at the end checks what one per
//! command did).

#![no_main]

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Duration, TimeZone, Utc};
use commandpost::sidecar_api::COMMAND_NAMES;
use commandpost_shared::incident::{
    Caller, Command, CommandError, Criteria, CriterionId, ErrorKind, Event, EventKind, HandoffId,
    IncidentState, Role, Severity, Status,
};
use commandpost_shared::machine::{self, Rules};
use commandpost_shared::{AccessRole, Actor, UserId, limits};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

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

/// The scenarios, built once.
static SCENARIOS: LazyLock<[Incident; 7]> = LazyLock::new(|| {
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
            next_update_by: Some(next_update_by),
            is_final: false,
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
    // One list at its limit each: a state with all three full makes every
    // check after a command (clones, JSON, invariants) ten times slower.
    let mut responders = under_way.clone();
    for i in responders.state.as_ref().map_or(0, |s| s.responders.len())..limits::RESPONDERS - 1 {
        responders.fill(
            ALICE,
            Command::AddResponder {
                responder: Actor {
                    id: UserId(format!("responder-{i}")),
                    name: format!("Responder {i}"),
                },
                assignment: "standing by".to_owned(),
            },
        );
    }
    let mut criteria = under_way.clone();
    for i in criteria.state.as_ref().map_or(0, |s| s.exit_criteria.len())..limits::EXIT_CRITERIA - 1
    {
        criteria.fill(
            ALICE,
            Command::AddExitCriterion {
                text: format!("criterion {i}"),
            },
        );
    }
    let mut changes = under_way.clone();
    for i in changes
        .state
        .as_ref()
        .map_or(0, |s| s.open_changes().count())..limits::OPEN_CHANGES - 1
    {
        changes.fill(
            BOB,
            Command::RecordChange {
                what: format!("change {i}"),
                why: "testing".to_owned(),
                revert: "undo".to_owned(),
            },
        );
    }
    [
        empty, declared, under_way, resolved, responders, criteria, changes,
    ]
    .map(Incident::freeze)
});

/// `scenario % 8` to the scenario.
const SCENARIO_OF: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 3];

/// The limits a pad stretches a text to (see the module documentation).
const EDGES: [usize; 6] = [
    limits::TITLE_CHARS,
    limits::NAME_CHARS,
    limits::USER_ID_CHARS,
    limits::NOTE_CHARS,
    limits::SUMMARY_CHARS,
    limits::SHORT_TEXT_CHARS,
];

fuzz_target!(|data: &[u8]| {
    let Some((&scenario, mut rest)) = data.split_first() else {
        return;
    };
    let mut incident = SCENARIOS[SCENARIO_OF[usize::from(scenario % 8)]].clone();
    for _ in 0..MAX_COMMANDS {
        let Some((&selector, json)) = rest.split_first() else {
            break;
        };
        let (command, used) = if json.trim_ascii_start().starts_with(b"[") {
            let mut stream =
                serde_json::Deserializer::from_slice(json).into_iter::<serde_json::Value>();
            let Some(Ok(request)) = stream.next() else {
                break;
            };
            (http_command(request), stream.byte_offset())
        } else {
            let mut stream = serde_json::Deserializer::from_slice(json).into_iter::<Command>();
            let Some(Ok(command)) = stream.next() else {
                break;
            };
            (Some(command), stream.byte_offset())
        };
        rest = &json[used..];
        if let Some(command) = command {
            check_round_trip(&command);
            incident.step(selector, &command);
        }
    }
    if !incident.log.is_empty() {
        // Once per input (see the module documentation). The scenario's own
        // log was checked and replayed when it was built (`freeze`): this
        // replays what the input added, from the scenario's state, as `fold`
        // over the whole log would (`fold` is `evolve` from the first event
        // on), and checks the sequence on (seqs were checked per event).
        if incident.base.is_empty() {
            machine::check_sequence(&incident.log).unwrap();
        } else {
            assert!(
                !incident
                    .log
                    .iter()
                    .any(|e| matches!(e.kind, EventKind::Declared { .. })),
                "a second declaration"
            );
        }
        let replayed = incident
            .log
            .iter()
            .fold(incident.start.clone(), |state, event| {
                Some(machine::evolve(state, event))
            });
        assert_eq!(replayed.as_ref(), incident.state.as_ref(), "replay differs");
    }
});

/// `run_command` (commands.rs): the command an HTTP request `[name, body]`
/// or `[name, body, pad]` carries, or `None` where the server answers 404
/// (unknown name) or 422 (a body that is not an object or not the command).
fn http_command(request: serde_json::Value) -> Option<Command> {
    let serde_json::Value::Array(mut parts) = request else {
        return None;
    };
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let pad = parts.get(2).and_then(serde_json::Value::as_u64);
    parts.truncate(2);
    let body = parts.pop()?;
    let serde_json::Value::String(name) = parts.pop()? else {
        return None;
    };
    if !COMMAND_NAMES.contains(&name.as_str()) {
        return None;
    }
    let serde_json::Value::Object(mut fields) = body else {
        return None;
    };
    if let Some(pad) = pad {
        let mut strings = Vec::new();
        for value in fields.values_mut() {
            collect_strings(value, &mut strings);
        }
        if !strings.is_empty() {
            let index = (pad / 54) as usize % strings.len();
            let chars = (EDGES[(pad % 18 / 3) as usize] + (pad % 3) as usize).saturating_sub(1);
            let fill = ['x', 'é', ' '][(pad / 18 % 3) as usize];
            *strings[index] = std::iter::once('a')
                .chain(std::iter::repeat_n(fill, chars.saturating_sub(1)))
                .take(chars)
                .collect();
        }
    }
    fields.insert("type".into(), serde_json::Value::String(name.clone()));
    let command: Command = serde_json::from_value(serde_json::Value::Object(fields)).ok()?;
    assert_eq!(
        command.name(),
        name,
        "the body chose another command than the path"
    );
    Some(command)
}

fn collect_strings<'a>(value: &'a mut serde_json::Value, out: &mut Vec<&'a mut String>) {
    match value {
        serde_json::Value::String(text) => out.push(text),
        serde_json::Value::Array(items) => {
            for item in items {
                collect_strings(item, out);
            }
        }
        serde_json::Value::Object(fields) => {
            for item in fields.values_mut() {
                collect_strings(item, out);
            }
        }
        _ => {}
    }
}

/// The first text of `command` over its limit, by this target's own table
/// (`commandpost_shared::limits`; lengths in characters after trimming).
fn over_limit(command: &Command) -> Option<String> {
    let serde_json::Value::Object(fields) = serde_json::to_value(command).ok()? else {
        return None;
    };
    let name = command.name();
    let length = |text: &str| text.trim().chars().count();
    for (field, value) in &fields {
        let limit = match (name, field.as_str()) {
            (_, "type") => continue,
            // The title's limit is declare's own rule; checked all the same.
            (_, "title") => limits::TITLE_CHARS,
            ("post_note", "text") | (_, "notes") => limits::NOTE_CHARS,
            (_, "summary") => limits::SUMMARY_CHARS,
            ("remove_responder", "responder") => limits::USER_ID_CHARS,
            _ => limits::SHORT_TEXT_CHARS,
        };
        match value {
            serde_json::Value::String(text) if length(text) > limit => {
                return Some(format!("`{field}` of {} characters", length(text)));
            }
            // A person: to, responder, next.
            serde_json::Value::Object(person) => {
                for (part, limit) in [("id", limits::USER_ID_CHARS), ("name", limits::NAME_CHARS)] {
                    if let Some(text) = person.get(part).and_then(|v| v.as_str()) {
                        if length(text) > limit {
                            return Some(format!(
                                "`{field}.{part}` of {} characters",
                                length(text)
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

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
    Command::AssignRole {
        role,
        to: actor(to),
    }
}

fn check_round_trip(command: &Command) {
    let json = serde_json::to_vec(command).expect("a command serialises");
    let back: Command = serde_json::from_slice(&json).unwrap_or_else(|error| {
        panic!(
            "{} does not parse back: {error}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(&back, command, "a command changed in a JSON round trip");
}

/// An incident's log and state, and the time.
#[derive(Clone)]
struct Incident {
    state: Option<IncidentState>,
    /// The scenario's log (shared by every input) ...
    base: Arc<Vec<Event>>,
    /// ... and its state.
    start: Option<IncidentState>,
    /// The events after `base`.
    log: Vec<Event>,
    /// The pins (by seq) an `UpdateOverdue` event of the log reported.
    overdue_reported: BTreeSet<u64>,
    now: DateTime<Utc>,
    rules: Rules,
}

impl Incident {
    fn new() -> Self {
        Self {
            state: None,
            base: Arc::new(Vec::new()),
            start: None,
            log: Vec::new(),
            overdue_reported: BTreeSet::new(),
            now: Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0).unwrap(),
            rules: Rules::default(),
        }
    }

    /// A built scenario: its log becomes the shared base, checked here once.
    fn freeze(mut self) -> Self {
        let mut base = (*self.base).clone();
        base.append(&mut self.log);
        machine::check_sequence(&base).unwrap();
        assert_eq!(
            machine::fold(&base),
            self.state,
            "a scenario's replay differs"
        );
        if let Some(state) = &self.state {
            machine::check_invariants(state).unwrap();
        }
        self.base = Arc::new(base);
        self.start = self.state.clone();
        self
    }

    /// Filling the full scenario: as `setup`, without the checks after
    /// each command (hundreds of them; `freeze` checks the result once).
    fn fill(&mut self, caller: usize, command: Command) {
        self.now += Duration::minutes(1);
        let events = machine::apply(
            self.state.as_ref(),
            &command,
            &CALLERS[caller],
            self.now,
            &self.rules,
        )
        .unwrap_or_else(|error| panic!("scenario: {} refused: {error}", command.name()));
        for event in events {
            self.state = Some(machine::evolve(self.state.take(), &event));
            self.log.push(event);
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
        let closed = self
            .state
            .as_ref()
            .is_some_and(|s| s.status == Status::Closed);
        let over = over_limit(command);
        let result = self.apply(caller, command);
        let is_tick = matches!(command, Command::Tick);
        if let Some(over) = &over {
            assert!(
                result.is_err(),
                "{} with {over} was accepted",
                command.name()
            );
        }
        match &result {
            Ok(events) => {
                assert!(caller.access.can_write(), "a viewer changed the incident");
                assert_eq!(
                    caller.is_system(),
                    is_tick,
                    "{} by {}",
                    command.name(),
                    caller.actor.name
                );
                if closed && !matches!(command, Command::Reopen { .. }) {
                    assert!(
                        events.is_empty(),
                        "a closed incident accepted {}",
                        command.name()
                    );
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
                } else if over.is_some() && !caller.is_system() {
                    // Invalid (texts are checked before any rule; the title
                    // is declare's own rule, after "already declared").
                    assert!(
                        matches!(error.kind, ErrorKind::Invalid | ErrorKind::Conflict),
                        "{error:?}"
                    );
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
            assert!(
                !events.is_empty(),
                "{} was accepted without events",
                command.name()
            );
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
            if let EventKind::UpdateOverdue { pin, .. } = &event.kind {
                self.overdue_reported.insert(pin.0);
            }
            self.log.push(event.clone());
        }
        if !events.is_empty() {
            let state = self.state.as_ref().expect("a state after events");
            // With debug assertions (scripts/fuzz.sh builds with them),
            // `apply` has just checked the same state (`Emitter::finish`).
            if !cfg!(debug_assertions) {
                if let Err(broken) = machine::check_invariants(state) {
                    panic!(
                        "after {} by {}: {broken}",
                        command.name(),
                        caller.actor.name
                    );
                }
            }
            assert!(
                state.responders.len() <= limits::RESPONDERS
                    && state.exit_criteria.len() <= limits::EXIT_CRITERIA
                    && state.open_changes().count() <= limits::OPEN_CHANGES,
                "after {}: a list grew past its limit",
                command.name()
            );
            let json = serde_json::to_string(state).expect("a state serialises");
            let back: IncidentState = serde_json::from_str(&json)
                .unwrap_or_else(|error| panic!("{json} does not parse back: {error}"));
            assert_eq!(&back, state, "the state changed in a JSON round trip");
            // The overdue flag agrees with the log.
            // (`overdue_reported` holds the pins of every UpdateOverdue in
            // the log, kept as the log grows.)
            if let Some(pin) = &state.pin {
                let reported = self.overdue_reported.contains(&pin.seq.0);
                assert_eq!(
                    pin.overdue, reported,
                    "the pin's overdue flag disagrees with the log"
                );
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
        let tick = |at| {
            machine::apply(
                Some(state),
                &Command::Tick,
                &Caller::system(),
                at,
                &self.rules,
            )
        };
        let at = tick(deadline).expect("the timer may always tick");
        assert!(!at.is_empty(), "a tick at next_deadline did nothing");
        if let Some(before) = deadline.checked_sub_signed(Duration::nanoseconds(1)) {
            let before = tick(before).expect("the timer may always tick");
            assert!(
                before.is_empty(),
                "a tick before next_deadline did something"
            );
        }
    }
}
