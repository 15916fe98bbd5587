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
            let _ = writeln!(
                out,
                "  next update by {}{}",
                when(pin.next_update_by),
                if pin.overdue { ": OVERDUE" } else { "" }
            );
        }
    }
    out.trim_end().to_owned()
}
