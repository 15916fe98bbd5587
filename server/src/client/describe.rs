//! Timeline lines as the web app's timeline shows them (web/src/describe.ts):
//! when, who, then what they did in a sentence that names the role and the
//! people involved, never the actor twice.

use commandpost_shared::incident::{Event, EventKind, Role, Severity, Status};

use super::time::format_time;

/// `SEV2 · major`, as the web app names severities.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Sev1 => "SEV1 · critical",
        Severity::Sev2 => "SEV2 · major",
        Severity::Sev3 => "SEV3 · minor",
        Severity::Sev4 => "SEV4 · low",
    }
}

/// `Active`, as the web app names statuses.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Active => "Active",
        Status::Mitigated => "Mitigated",
        Status::Resolved => "Resolved",
        Status::Closed => "Closed",
    }
}

/// What a refused command would have done: `record a change`, `post a note`
/// (the web app's words).
fn attempted(command: &str) -> String {
    match command {
        "record_change" => "record a change".to_owned(),
        "post_note" => "post a note".to_owned(),
        _ => "change the incident".to_owned(),
    }
}

fn role(role: Role) -> &'static str {
    role.as_str()
}

/// One timeline line: `#7 2026-12-07 03:04:05 UTC  Bob Baptiste: accepted
/// incident commander from Alice Ashdown`. A refused attempt, which the
/// server records, names the person who tried instead of the server:
/// `#9 ...  Refused: Fred Jones (not the operations lead) tried to record a
/// change: restart db`; so does a note from outside the response: `#10 ...
/// Fred Jones (not on the responder list) posted a note: ...`.
pub fn line(event: &Event) -> String {
    if let EventKind::AttemptRefused { .. } | EventKind::NotePosted { outsider: true, .. } =
        event.kind
    {
        return format!(
            "#{} {}  {}",
            event.seq,
            format_time(event.at, None),
            describe(&event.kind, event)
        );
    }
    format!(
        "#{} {}  {}: {}",
        event.seq,
        format_time(event.at, None),
        event.actor.name,
        describe(&event.kind, event)
    )
}

/// What the actor did, as a sentence that does not name them again.
pub fn describe(kind: &EventKind, event: &Event) -> String {
    match kind {
        EventKind::Declared {
            title,
            severity,
            summary,
            commander,
            ..
        } => {
            let commander = if commander.id == event.actor.id {
                " as incident commander".to_owned()
            } else {
                format!("; {} is incident commander", commander.name)
            };
            format!(
                "declared the incident “{title}”{}{commander}{}",
                severity
                    .map(|severity| format!(" ({})", severity_name(severity)))
                    .unwrap_or_default(),
                summary
                    .as_ref()
                    .map(|summary| format!(". {summary}"))
                    .unwrap_or_default(),
            )
        }
        EventKind::SeveritySet { severity } => {
            format!("set the severity to {}", severity_name(*severity))
        }
        EventKind::RoleAssigned {
            role: r,
            holder,
            previous,
        } => format!(
            "assigned {} to {}{}",
            role(*r),
            holder.name,
            previous
                .as_ref()
                .map(|previous| format!(" (was {})", previous.name))
                .unwrap_or_default()
        ),
        EventKind::ResponderAdded {
            responder,
            assignment,
        } => format!("listed {} as responder: {assignment}", responder.name),
        EventKind::ResponderRemoved { responder } => {
            format!("took {responder} off the responder list")
        }
        EventKind::HandoffOffered {
            handoff,
            role: r,
            to,
            expires_at,
            ..
        } => format!(
            "offered {} to {} (handoff #{handoff}; the offer expires {})",
            role(*r),
            to.name,
            format_time(*expires_at, None)
        ),
        EventKind::HandoffAccepted { role: r, from, .. } => {
            format!("accepted {} from {}", role(*r), from.name)
        }
        EventKind::HandoffDeclined {
            role: r,
            from,
            reason,
            ..
        } => format!(
            "declined {} offered by {}{}",
            role(*r),
            from.name,
            reason
                .as_ref()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        ),
        EventKind::HandoffCancelled {
            role: r,
            to,
            reason,
            ..
        } => format!(
            "cancelled the offer of {} to {}{}",
            role(*r),
            to.name,
            reason
                .as_ref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        ),
        EventKind::HandoffExpired { role: r, to, .. } => {
            format!(
                "the offer of {} to {} expired unanswered",
                role(*r),
                to.name
            )
        }
        EventKind::RoleAssumed {
            role: r,
            holder,
            previous,
            reason,
            forced_by,
        } => {
            let previous = previous
                .as_ref()
                .map(|previous| format!(" from {}", previous.name))
                .unwrap_or_default();
            match forced_by {
                Some(_) => format!(
                    "emergency: gave {} to {}{previous}. Reason: {reason}",
                    role(*r),
                    holder.name
                ),
                None => format!("emergency: took {}{previous}. Reason: {reason}", role(*r)),
            }
        }
        EventKind::NextCommanderSet { next } => match next {
            Some(next) => format!("named {} as the next incident commander", next.name),
            None => "cleared the next incident commander".to_owned(),
        },
        EventKind::StatusPinned {
            summary,
            next_update_by,
            is_final,
        } => match next_update_by {
            Some(next) if !is_final => format!(
                "pinned status: “{summary}” (next update by {})",
                format_time(*next, None)
            ),
            _ => format!("pinned the final status: “{summary}” (no further updates)"),
        },
        EventKind::ImpactStartSet { impact_start } => format!(
            "set the impact start to {}",
            format_time(*impact_start, None)
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
            format!(
                "status update overdue (was due {})",
                format_time(*due, None)
            )
        }
        EventKind::StatusChanged {
            from,
            to,
            override_reason,
        } => format!(
            "moved the incident from {} to {}{}",
            status_name(*from),
            status_name(*to),
            override_reason
                .as_ref()
                .map(|reason| format!(" overriding unmet exit criteria: {reason}"))
                .unwrap_or_default()
        ),
        EventKind::Reopened { from, reason } => format!(
            "reopened the incident (was {}): {reason}",
            status_name(*from)
        ),
        EventKind::ExitCriterionAdded { criterion, text } => {
            format!("added exit criterion #{criterion}: {text}")
        }
        EventKind::ExitCriterionSet { criterion, met } => format!(
            "marked exit criterion #{criterion} {}",
            if *met { "met" } else { "not met" }
        ),
        EventKind::ChangeRecorded {
            change,
            what,
            why,
            revert,
        } => format!(
            "recorded production change #{change}: {what}{}; revert: {revert}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" (why: {why})")
            }
        ),
        EventKind::ChangeReverted { change } => format!("marked change #{change} reverted"),
        EventKind::ChangeWaived { change, reason } => {
            format!("waived change #{change}: {reason}")
        }
        EventKind::NotePosted {
            text,
            outsider: true,
        } => format!(
            "{} (not on the responder list) posted a note: {text}",
            event.actor.name
        ),
        EventKind::NotePosted { text, .. } => text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use commandpost_shared::incident::{EventSeq, HandoffId};
    use commandpost_shared::{Actor, UserId};

    fn person(id: &str, name: &str) -> Actor {
        Actor {
            id: UserId(id.to_owned()),
            name: name.to_owned(),
        }
    }

    fn event(actor: Actor, kind: EventKind) -> Event {
        Event {
            seq: EventSeq(7),
            at: DateTime::parse_from_rfc3339("2026-12-07T03:04:05Z")
                .expect("time")
                .with_timezone(&Utc),
            actor,
            kind,
        }
    }

    #[test]
    fn a_handoff_names_the_role_and_the_previous_holder() {
        let bob = person("bob", "Bob Baptiste");
        let alice = person("alice", "Alice Ashdown");
        let accepted = event(
            bob.clone(),
            EventKind::HandoffAccepted {
                handoff: HandoffId(5),
                role: Role::IncidentCommander,
                from: alice,
                to: bob,
            },
        );
        assert_eq!(
            line(&accepted),
            "#7 2026-12-07 03:04:05 UTC  Bob Baptiste: accepted incident commander from Alice Ashdown"
        );
    }

    #[test]
    fn a_note_from_outside_the_response_names_its_author_once() {
        let note = |outsider| {
            event(
                person("fred", "Fred"),
                EventKind::NotePosted {
                    text: "db looks fine".into(),
                    outsider,
                },
            )
        };
        assert_eq!(
            line(&note(true)),
            "#7 2026-12-07 03:04:05 UTC  Fred (not on the responder list) posted a note: db looks fine"
        );
        assert_eq!(
            line(&note(false)),
            "#7 2026-12-07 03:04:05 UTC  Fred: db looks fine"
        );
    }

    #[test]
    fn a_refused_attempt_names_who_tried_what_and_why() {
        let refused = event(
            person("system", "Command Post"),
            EventKind::AttemptRefused {
                by: person("fred", "Fred"),
                command: "record_change".into(),
                reason: "not the operations lead".into(),
                detail: "restart db".into(),
            },
        );
        assert_eq!(
            line(&refused),
            "#7 2026-12-07 03:04:05 UTC  Refused: Fred (not the operations lead) tried to record a change: restart db"
        );
        let final_pin = event(
            person("alice", "Alice"),
            EventKind::StatusPinned {
                summary: "Resolved".into(),
                next_update_by: None,
                is_final: true,
            },
        );
        assert_eq!(
            describe(&final_pin.kind, &final_pin),
            "pinned the final status: “Resolved” (no further updates)"
        );
    }

    #[test]
    fn a_change_says_what_why_and_how_to_revert() {
        let recorded = event(
            person("jo", "Josephine"),
            EventKind::ChangeRecorded {
                change: commandpost_shared::incident::ChangeId(7),
                what: "restart db".into(),
                why: "".into(),
                revert: "nothing to revert".into(),
            },
        );
        assert_eq!(
            line(&recorded),
            "#7 2026-12-07 03:04:05 UTC  Josephine: recorded production change #7: restart db; revert: nothing to revert"
        );
    }

    #[test]
    fn a_declaration_by_the_commander_names_them_once() {
        let alice = person("alice", "Alice");
        let declared = event(
            alice.clone(),
            EventKind::Declared {
                title: "Search is slow".into(),
                severity: Some(Severity::Sev2),
                criteria: None,
                summary: Some("p99 at 4s".into()),
                commander: alice,
            },
        );
        assert_eq!(
            describe(&declared.kind, &declared),
            "declared the incident “Search is slow” (SEV2 · major) as incident commander. p99 at 4s"
        );
        let moved = event(
            person("alice", "Alice"),
            EventKind::StatusChanged {
                from: Status::Active,
                to: Status::Resolved,
                override_reason: Some("customers are fine".into()),
            },
        );
        assert_eq!(
            describe(&moved.kind, &moved),
            "moved the incident from Active to Resolved overriding unmet exit criteria: customers are fine"
        );
    }
}
