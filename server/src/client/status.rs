//! `commandpost status`: everything about an incident that a command can
//! name, each with the id or short name to type.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use commandpost_shared::incident::{ChangeState, IncidentState, Role};

use super::describe::{severity_name, status_name};
use super::people::labelled;
use super::roles::short_name;
use super::time::format_time;

/// The status page of `incident` as of `now`.
pub fn summarize(incident: &str, state: &IncidentState, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let when = |at| format_time(at, Some(now));
    let _ = writeln!(
        out,
        "{incident}: {} [{}; severity {}]",
        state.title,
        state.status,
        state
            .severity
            .map(|severity| severity.to_string())
            .unwrap_or_else(|| "not yet assessed".to_owned()),
    );
    let _ = writeln!(
        out,
        "  {} · {} · declared {} by {}",
        status_name(state.status),
        state
            .severity
            .map(severity_name)
            .unwrap_or("severity not yet assessed"),
        when(state.declared_at),
        labelled(&state.declared_by),
    );
    match state.impact_start {
        Some(at) => {
            let _ = writeln!(out, "  impact started {}", when(at));
        }
        None => out.push_str("  impact start not set (impact-start INCIDENT TIME)\n"),
    }
    if let Some(summary) = &state.summary {
        let _ = writeln!(out, "  summary: {summary}");
    }

    out.push_str("\nRoles (role assign|force-assign INCIDENT ROLE PERSON; handoff offer)\n");
    for view in &state.roles {
        let holder = if view.delegated || view.role == Role::IncidentCommander {
            format!("{} since {}", labelled(&view.holder), when(view.since))
        } else {
            format!(
                "{} (not delegated: the commander holds it)",
                labelled(&view.holder)
            )
        };
        let _ = writeln!(
            out,
            "  {:<9} {:<20} {holder}",
            short_name(view.role),
            view.role.as_str(),
        );
    }
    if let Some(next) = &state.next_commander {
        let _ = writeln!(out, "  next commander: {}", labelled(next));
    }

    let _ = writeln!(out, "\nResponders ({})", state.responders.len());
    if state.responders.is_empty() {
        out.push_str("  none listed (responder add INCIDENT PERSON --assignment TEXT)\n");
    }
    for responder in &state.responders {
        let _ = writeln!(
            out,
            "  {}: {}; since {}",
            labelled(&responder.actor),
            responder.assignment,
            when(responder.since)
        );
    }

    if !state.pending_handoffs.is_empty() {
        let _ = writeln!(out, "\nPending handoffs ({})", state.pending_handoffs.len());
    }
    for offer in &state.pending_handoffs {
        let _ = writeln!(
            out,
            "  #{} {} offered to {} by {}; expires {}",
            offer.handoff,
            offer.role.as_str(),
            labelled(&offer.to),
            labelled(&offer.from),
            when(offer.expires_at),
        );
    }

    let met = state.exit_criteria.iter().filter(|c| c.met).count();
    let _ = writeln!(
        out,
        "\nExit criteria ({met} of {} met)",
        state.exit_criteria.len()
    );
    if state.exit_criteria.is_empty() {
        out.push_str("  none yet (criterion add INCIDENT TEXT); resolving needs at least one\n");
    }
    for criterion in &state.exit_criteria {
        let _ = writeln!(
            out,
            "  #{} [{}] {}",
            criterion.criterion,
            if criterion.met { "x" } else { " " },
            criterion.text
        );
    }

    let open: Vec<_> = state.open_changes().collect();
    let _ = writeln!(out, "\nOpen changes ({})", open.len());
    for change in &open {
        let _ = writeln!(
            out,
            "  #{} {} (revert: {}) recorded by {} at {}",
            change.change,
            change.what,
            change.revert,
            change.recorded_by.name,
            format_time(change.recorded_at, None),
        );
    }
    let closed = state
        .changes
        .iter()
        .filter(|change| !matches!(change.state, ChangeState::Open))
        .count();
    if closed > 0 {
        let _ = writeln!(out, "  ({closed} more reverted or waived)");
    }

    out.push_str("\nPinned status\n");
    match &state.pin {
        None => {
            out.push_str("  nothing pinned yet (pin INCIDENT --text TEXT --next-update-in 30m)\n")
        }
        Some(pin) => {
            let _ = writeln!(
                out,
                "  “{}” by {} at {}",
                pin.summary,
                pin.pinned_by.name,
                format_time(pin.pinned_at, None)
            );
            match pin.next_update_by {
                Some(next) if !pin.is_final => {
                    let _ = writeln!(
                        out,
                        "  next update by {}{}",
                        when(next),
                        if pin.overdue { ": OVERDUE" } else { "" }
                    );
                }
                _ => out.push_str("  the final update: no further updates due\n"),
            }
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use commandpost_shared::incident::{Caller, Command, Event};
    use commandpost_shared::machine::{Rules, apply, evolve};
    use commandpost_shared::{AccessRole, Actor, UserId};

    fn person(id: &str, name: &str) -> Actor {
        Actor {
            id: UserId(id.to_owned()),
            name: name.to_owned(),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    /// The state after `commands`, each sent by Alice at `now`.
    fn state_after(commands: &[Command], now: DateTime<Utc>) -> IncidentState {
        let alice = Caller::new(person("alice", "Alice"), AccessRole::Responder);
        let mut state: Option<IncidentState> = None;
        for command in commands {
            let events: Vec<Event> = apply(state.as_ref(), command, &alice, now, &Rules::default())
                .unwrap_or_else(|error| panic!("{command:?}: {error}"));
            for event in &events {
                state = Some(evolve(state, event));
            }
        }
        state.expect("declared")
    }

    #[test]
    fn status_lists_each_thing_with_its_id_and_the_pin_with_its_countdown() {
        let declared_at = at("2026-12-07T03:00:00Z");
        let state = state_after(
            &[
                Command::Declare {
                    title: "Search is slow".into(),
                    severity: None,
                    criteria: None,
                    summary: None,
                },
                Command::RecordChange {
                    what: "restart indexer".into(),
                    why: String::new(),
                    revert: "nothing".into(),
                },
                Command::AssignRole {
                    role: Role::OperationsLead,
                    to: person("jo", "Josephine"),
                },
                Command::AddExitCriterion {
                    text: "p99 below 1 s".into(),
                },
                Command::PinStatus {
                    summary: "indexer restarted".into(),
                    next_update_by: Some(at("2026-12-07T03:30:00Z")),
                    is_final: false,
                },
                Command::SetImpactStart {
                    at: at("2026-12-07T02:40:00Z"),
                },
            ],
            declared_at,
        );
        let text = summarize("INC-4", &state, at("2026-12-07T03:04:00Z"));
        for expected in [
            "INC-4: Search is slow [active; severity not yet assessed]",
            "declared 2026-12-07 03:00:00 UTC (4 min ago) by Alice (alice)",
            "  ops       operations lead      Josephine (jo) since 2026-12-07 03:00:00 UTC (4 min ago)",
            "  comms     communications lead  Alice (alice) (not delegated: the commander holds it)",
            "Exit criteria (0 of 1 met)\n  #4 [ ] p99 below 1 s",
            "Open changes (1)\n  #2 restart indexer (revert: nothing) recorded by Alice at 2026-12-07 03:00:00 UTC",
            "“indexer restarted” by Alice at 2026-12-07 03:00:00 UTC\n  next update by 2026-12-07 03:30:00 UTC (in 26 min)",
            "Responders (0)\n  none listed",
            "  impact started 2026-12-07 02:40:00 UTC (24 min ago)",
        ] {
            assert!(text.contains(expected), "no `{expected}` in:\n{text}");
        }
    }
}
