//! The postmortem draft: the incident document merged with the command
//! sidecar, in the shape of the SRE book's postmortem template (a header with
//! the durations, summary, impact, root causes, trigger, resolution,
//! detection, action items, lessons learned, timeline). Every section of the
//! document is carried: the ones the template names go to their place, the
//! others follow under "From the incident document". Pure and deterministic:
//! state, events and the document's Markdown in, Markdown out; the same
//! input gives the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use commandpost_shared::incident::{ChangeState, Event, EventKind, IncidentState, Role, Status};
use commandpost_shared::machine;
use commandpost_shared::{Actor, IncidentId, UserId};

use crate::template;

/// Sections of the document body, by `## ` heading, in document order.
struct Body<'a> {
    /// The text before the first `## ` heading, without the `# ` title.
    preamble: String,
    /// (heading as written, lower-cased heading, text).
    sections: Vec<(String, String, &'a str)>,
}

impl<'a> Body<'a> {
    fn parse(markdown: &'a str) -> Self {
        let mut sections = Vec::new();
        let mut current: Option<(String, usize)> = None;
        let mut offset = 0;
        let mut preamble_end = markdown.len();
        for line in markdown.split_inclusive('\n') {
            if let Some(heading) = line.strip_prefix("## ") {
                if let Some((name, start)) = current.take() {
                    sections.push((name, &markdown[start..offset]));
                } else {
                    preamble_end = offset;
                }
                current = Some((heading.trim().to_owned(), offset + line.len()));
            }
            offset += line.len();
        }
        if let Some((name, start)) = current {
            sections.push((name, &markdown[start..]));
        }
        let preamble = markdown[..preamble_end]
            .lines()
            .filter(|line| !line.starts_with("# "))
            .collect::<Vec<_>>()
            .join("\n");
        Self {
            preamble: written(&preamble).unwrap_or_default(),
            sections: sections
                .into_iter()
                .map(|(heading, text)| {
                    let key = heading.to_lowercase();
                    (heading, key, text)
                })
                .collect(),
        }
    }

    /// The index and written text of the first section whose heading starts
    /// with one of `names` (lower case).
    fn find(&self, names: &[&str]) -> Option<usize> {
        self.sections
            .iter()
            .position(|(_, key, _)| names.iter().any(|name| key.starts_with(name)))
    }
}

/// A section's text without HTML comments (the template's prompts and the
/// exit-criteria block's markers) and surrounding blank lines; `None` when
/// nothing is written.
fn written(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start..].find("-->") {
            Some(end) => rest = &rest[start + end + 3..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    let mut kept = Vec::with_capacity(lines.len());
    for line in lines {
        // Comment lines leave blank runs behind: keep at most one.
        if line.is_empty() && kept.last().is_none_or(|last: &&str| last.is_empty()) {
            continue;
        }
        kept.push(line);
    }
    while kept.last().is_some_and(|line| line.is_empty()) {
        kept.pop();
    }
    (!kept.is_empty()).then(|| kept.join("\n"))
}

const TO_WRITE: &str = "_To be written._";

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration as people say it: `45 s`, `12 min`, `1 h 05 min`, `2 d 3 h`.
fn duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let seconds = (to - from).num_seconds();
    if seconds < 0 {
        return format!("-{}", duration(to, from));
    }
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3_600 => format!("{minutes} min"),
        3_600..86_400 => format!("{hours} h {minutes:02} min"),
        _ => format!("{days} d {hours} h"),
    }
}

/// A table cell: one line, pipes escaped, never empty.
fn cell(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.is_empty() {
        true => "–".to_owned(),
        false => text.replace('\\', "\\\\").replace('|', "\\|"),
    }
}

/// The postmortem's status, from a `## Postmortem status` section of the
/// document (`draft`, `in review` or `final`); draft otherwise.
fn postmortem_status(body: &Body<'_>) -> &'static str {
    let text = body
        .find(&["postmortem status"])
        .and_then(|index| written(body.sections[index].2))
        .unwrap_or_default()
        .to_lowercase();
    if text.starts_with("final") {
        "final"
    } else if text.starts_with("in review") {
        "in review"
    } else {
        "draft"
    }
}

/// When each lifecycle status was first reached.
fn first_reached(events: &[Event], status: Status) -> Option<DateTime<Utc>> {
    events.iter().find_map(|event| match &event.kind {
        EventKind::StatusChanged { to, .. } if *to == status => Some(event.at),
        _ => None,
    })
}

/// When the impact started: the time the commander set (`set_impact_start`),
/// else unknown.
fn impact_start(state: &IncidentState) -> Option<DateTime<Utc>> {
    state.impact_start
}

/// Renders the postmortem draft.
pub fn render(
    id: &IncidentId,
    state: &IncidentState,
    events: &[Event],
    body_markdown: &str,
) -> String {
    let body = Body::parse(body_markdown);
    // What each section says, without the server-written criteria block
    // (the criteria are rendered from the events, with their times).
    let texts: Vec<Option<String>> = body
        .sections
        .iter()
        .map(|(_, _, text)| written(&template::without_exit_criteria_block(text)))
        .collect();
    let mut used = vec![false; body.sections.len()];
    let take = |used: &mut Vec<bool>, names: &[&str]| -> Option<String> {
        let index = body.find(names)?;
        used[index] = true;
        texts[index].clone()
    };
    let mut out = String::new();
    let _ = writeln!(out, "# Postmortem: {id} {}\n", state.title);
    header(&mut out, state, events, &body);

    let _ = writeln!(out, "## Summary\n");
    let summary = take(&mut used, &["summary"]).or_else(|| state.summary.clone());
    let _ = writeln!(out, "{}\n", summary.as_deref().unwrap_or(TO_WRITE));
    if let Some(pin) = &state.pin {
        let _ = writeln!(
            out,
            "Last pinned status ({}): {}\n",
            time(pin.pinned_at),
            pin.summary
        );
    }
    let answers = declaration(&mut out, state);
    // The document's declaration section is carried below only when people
    // wrote more there than the answers.
    if let Some(index) = body.find(&["declaration"]) {
        used[index] = texts[index]
            .as_deref()
            .is_none_or(|text| text.trim() == answers.trim());
    }

    for (heading, names) in [
        ("Impact", &["impact"][..]),
        ("Root causes", &["root cause"]),
        ("Trigger", &["trigger"]),
        ("Resolution", &["resolution"]),
        ("Detection", &["detection"]),
    ] {
        let text = take(&mut used, names);
        let _ = writeln!(
            out,
            "## {heading}\n\n{}\n",
            text.as_deref().unwrap_or(TO_WRITE)
        );
    }

    let todo = take(&mut used, &["todo", "action items"]);
    action_items(&mut out, state, todo.as_deref());

    let _ = writeln!(out, "## Lessons learned\n");
    match take(&mut used, &["lessons learned"]) {
        Some(lessons) => {
            let _ = writeln!(out, "{lessons}\n");
        }
        None => {
            let _ = writeln!(out, "### What went well\n\n{TO_WRITE}\n");
            let _ = writeln!(out, "### What went wrong\n\n{TO_WRITE}\n");
            let _ = writeln!(out, "### Where we got lucky\n\n{TO_WRITE}\n");
        }
    }

    if let Some(index) = body.find(&["exit criteria"]) {
        used[index] = texts[index].is_none();
    }
    exit_criteria(&mut out, events);
    handoffs(&mut out, events);
    timeline(&mut out, events);

    take(&mut used, &["postmortem status"]);
    let _ = writeln!(out, "## From the incident document\n");
    let mut carried = 0;
    if !body.preamble.is_empty() {
        let _ = writeln!(out, "{}\n", body.preamble);
        carried += 1;
    }
    for (index, (heading, _, _)) in body.sections.iter().enumerate() {
        if used[index] {
            continue;
        }
        let _ = writeln!(
            out,
            "### {heading}\n\n{}\n",
            texts[index].as_deref().unwrap_or("_Empty._")
        );
        carried += 1;
    }
    if carried == 0 {
        let _ = writeln!(out, "_Every section is above._\n");
    }
    supporting_information(&mut out, state, events);
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The header table: date, authors, statuses and durations.
fn header(out: &mut String, state: &IncidentState, events: &[Event], body: &Body<'_>) {
    let severity = state
        .severity
        .map(|s| s.as_str().to_uppercase())
        .unwrap_or_else(|| "not assessed".into());
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| Date | {} |", state.declared_at.format("%Y-%m-%d"));
    let _ = writeln!(out, "| Authors | {} |", cell(&authors(state)));
    let _ = writeln!(out, "| Postmortem status | {} |", postmortem_status(body));
    let _ = writeln!(out, "| Incident status | {} |", state.status);
    let _ = writeln!(out, "| Severity | {severity} |");
    let start = impact_start(state);
    let _ = writeln!(
        out,
        "| Impact start | {} |",
        start.map_or_else(|| "not set by the commander".to_owned(), time)
    );
    let _ = writeln!(
        out,
        "| Declared | {} by {} |",
        time(state.declared_at),
        cell(&state.declared_by.name)
    );
    let reached = [
        ("Mitigated", Status::Mitigated),
        ("Resolved", Status::Resolved),
        ("Closed", Status::Closed),
    ]
    .map(|(label, status)| (label, first_reached(events, status)));
    for (label, at) in reached {
        let _ = writeln!(
            out,
            "| {label} | {} |",
            at.map_or_else(|| "not yet".to_owned(), time)
        );
    }
    // Durations count from the impact start when the commander set it, else
    // from the declaration (then there is no time to declare).
    let (origin, from) = match start {
        Some(start) => (start, "impact start"),
        None => (state.declared_at, "declaration"),
    };
    let _ = writeln!(
        out,
        "| Time to declare | {} |",
        start.map_or_else(
            || "unknown (no impact start)".to_owned(),
            |start| duration(start, state.declared_at)
        )
    );
    for (label, (_, at)) in [("mitigate", reached[0]), ("resolve", reached[1])] {
        let _ = writeln!(
            out,
            "| Time to {label} | {} |",
            at.map_or_else(
                || "not yet".to_owned(),
                |at| format!("{} from {from}", duration(origin, at))
            )
        );
    }
    let _ = writeln!(out);
}

/// Everyone who held a role, with the roles, in order of first tenure.
fn authors(state: &IncidentState) -> String {
    let mut order: Vec<UserId> = Vec::new();
    let mut roles: BTreeMap<UserId, (String, Vec<Role>)> = BTreeMap::new();
    let mut add = |holder: &Actor, role: Role| {
        let entry = roles.entry(holder.id.clone()).or_insert_with(|| {
            order.push(holder.id.clone());
            (holder.name.clone(), Vec::new())
        });
        if !entry.1.contains(&role) {
            entry.1.push(role);
        }
    };
    add(&state.declared_by, Role::IncidentCommander);
    for tenure in &state.role_history {
        add(&tenure.holder, tenure.role);
    }
    for role in Role::ALL {
        if state.is_delegated(role) || role == Role::IncidentCommander {
            add(state.holder(role), role);
        }
    }
    order
        .iter()
        .map(|id| {
            let (name, held) = &roles[id];
            let held: Vec<&str> = held.iter().map(|role| role.as_str()).collect();
            format!("{name} ({})", held.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `## Declaration`: the answers to the three questions, which it returns.
fn declaration(out: &mut String, state: &IncidentState) -> String {
    let _ = writeln!(out, "## Declaration\n");
    let _ = writeln!(
        out,
        "Declared {} by {}.\n",
        time(state.declared_at),
        state.declared_by.name
    );
    let answers = template::declaration_answers(state.criteria.as_ref());
    let _ = writeln!(out, "{answers}");
    answers
}

/// One action item parsed from a checklist line of the document:
/// `- [ ] prevent: Alert on 500s (owner: ada, bug: https://bugs/1)`.
#[derive(Debug, PartialEq, Eq)]
struct ActionItem {
    item: String,
    kind: &'static str,
    owner: String,
    bug: String,
    done: bool,
}

const ITEM_TYPES: [&str; 4] = ["mitigate", "prevent", "process", "other"];

fn parse_item(line: &str) -> Option<ActionItem> {
    let line = line.trim_start();
    let rest = line.strip_prefix("- [")?;
    let (mark, text) = rest.split_once(']')?;
    let done = mark.eq_ignore_ascii_case("x");
    let mut text = text.trim().to_owned();
    if text.is_empty() {
        return None;
    }
    let mut kind = "other";
    if let Some((prefix, rest)) = text.split_once(':')
        && let Some(found) = ITEM_TYPES
            .iter()
            .find(|kind| prefix.trim().eq_ignore_ascii_case(kind))
    {
        kind = found;
        text = rest.trim().to_owned();
    }
    let (mut owner, mut bug) = (String::new(), String::new());
    if text.ends_with(')')
        && let Some(open) = text.rfind('(')
    {
        let inside = &text[open + 1..text.len() - 1];
        let mut recognised = false;
        for part in inside.split(',') {
            match part.split_once(':') {
                Some((key, value)) if key.trim().eq_ignore_ascii_case("owner") => {
                    owner = value.trim().to_owned();
                    recognised = true;
                }
                Some((key, value)) if key.trim().eq_ignore_ascii_case("bug") => {
                    bug = value.trim().to_owned();
                    recognised = true;
                }
                _ => {}
            }
        }
        if recognised {
            text = text[..open].trim_end().to_owned();
        }
    }
    if bug.is_empty()
        && let Some(url) = text
            .split_whitespace()
            .find(|word| word.starts_with("https://") || word.starts_with("http://"))
    {
        bug = url.to_owned();
    }
    Some(ActionItem {
        item: text,
        kind,
        owner,
        bug,
        done,
    })
}

/// `## Action items`: the document's checklist items, then the production
/// changes whose revert was waived (and any still open), as one table.
/// Reverted changes are in the timeline, not here.
fn action_items(out: &mut String, state: &IncidentState, todo: Option<&str>) {
    let _ = writeln!(out, "## Action items\n");
    let mut items: Vec<ActionItem> = todo
        .unwrap_or_default()
        .lines()
        .filter_map(parse_item)
        .collect();
    let planning = &state.holder(Role::PlanningLead).name;
    for change in &state.changes {
        let (item, kind) = match &change.state {
            ChangeState::Open => (
                format!(
                    "Revert production change #{}: {} (revert: {})",
                    change.change, change.what, change.revert
                ),
                "mitigate",
            ),
            ChangeState::Reverted { .. } => continue,
            ChangeState::Waived { by, at, reason } => (
                format!(
                    "Follow up on production change #{} kept in place: {} (revert waived by {} at {}: {reason})",
                    change.change,
                    change.what,
                    by.name,
                    time(*at)
                ),
                "other",
            ),
        };
        items.push(ActionItem {
            item,
            kind,
            owner: planning.clone(),
            bug: String::new(),
            done: false,
        });
    }
    if items.is_empty() {
        let _ = writeln!(out, "{TO_WRITE}\n");
        return;
    }
    let _ = writeln!(
        out,
        "| item | type | owner | bug | done |\n| --- | --- | --- | --- | --- |"
    );
    for item in &items {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&item.item),
            item.kind,
            cell(&item.owner),
            cell(&item.bug),
            if item.done { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out);
}

/// `## Exit criteria`: each criterion, when it was added and, if it is met,
/// when and by whom.
fn exit_criteria(out: &mut String, events: &[Event]) {
    let _ = writeln!(out, "## Exit criteria\n");
    /// A criterion as the events tell it.
    struct Row {
        id: u64,
        text: String,
        added: DateTime<Utc>,
        /// When it was last marked met and by whom, while it is met.
        met: Option<(DateTime<Utc>, String)>,
    }
    let mut criteria: Vec<Row> = Vec::new();
    for event in events {
        match &event.kind {
            EventKind::ExitCriterionAdded { criterion, text } => {
                criteria.push(Row {
                    id: criterion.0,
                    text: text.clone(),
                    added: event.at,
                    met: None,
                });
            }
            EventKind::ExitCriterionSet { criterion, met } => {
                if let Some(row) = criteria.iter_mut().find(|row| row.id == criterion.0) {
                    row.met = met.then(|| (event.at, event.actor.name.clone()));
                }
            }
            _ => {}
        }
    }
    if criteria.is_empty() {
        let _ = writeln!(out, "_No exit criteria were set._\n");
        return;
    }
    let _ = writeln!(out, "| criterion | added | met |\n| --- | --- | --- |");
    for Row {
        id,
        text,
        added,
        met,
    } in &criteria
    {
        let met = met.as_ref().map_or_else(
            || "not met".to_owned(),
            |(at, by)| format!("{} by {}", time(*at), cell(by)),
        );
        let _ = writeln!(out, "| #{id} {} | {} | {met} |", cell(text), time(*added));
    }
    let _ = writeln!(out);
}

/// `## Handoffs`: every offer with its notes and briefing, and how it ended.
fn handoffs(out: &mut String, events: &[Event]) {
    let _ = writeln!(out, "## Handoffs\n");
    let mut any = false;
    for event in events {
        let EventKind::HandoffOffered {
            handoff,
            role,
            from,
            to,
            briefing,
            ..
        } = &event.kind
        else {
            continue;
        };
        any = true;
        let outcome = events
            .iter()
            .find_map(|later| match &later.kind {
                EventKind::HandoffAccepted { handoff: h, .. } if h == handoff => {
                    Some(format!("accepted {}", time(later.at)))
                }
                EventKind::HandoffDeclined {
                    handoff: h, reason, ..
                } if h == handoff => Some(format!(
                    "declined {}{}",
                    time(later.at),
                    reason_suffix(reason.as_deref())
                )),
                EventKind::HandoffCancelled {
                    handoff: h, reason, ..
                } if h == handoff => Some(format!(
                    "cancelled {}{}",
                    time(later.at),
                    reason_suffix(reason.as_deref())
                )),
                EventKind::HandoffExpired { handoff: h, .. } if h == handoff => {
                    Some(format!("expired {}", time(later.at)))
                }
                _ => None,
            })
            .unwrap_or_else(|| "still pending".to_owned());
        let _ = writeln!(
            out,
            "### {role}: {} to {}, offered {} ({outcome})\n",
            from.name,
            to.name,
            time(event.at)
        );
        let notes = briefing.notes.trim();
        let _ = writeln!(
            out,
            "Notes: {}\n",
            if notes.is_empty() { "_none_" } else { notes }
        );
        let _ = writeln!(out, "Briefing:\n");
        let _ = writeln!(out, "- Situation: {}", briefing.situation);
        let list = |items: &[String]| match items.is_empty() {
            true => "none".to_owned(),
            false => items.join("; "),
        };
        let _ = writeln!(out, "- Objectives: {}", list(&briefing.objectives));
        let _ = writeln!(
            out,
            "- Current actions: {}",
            list(&briefing.current_actions)
        );
        let organisation: Vec<String> = briefing
            .organisation
            .iter()
            .map(|assignment| format!("{}: {}", assignment.assignment, assignment.holder.name))
            .collect();
        let _ = writeln!(out, "- Organisation: {}", list(&organisation));
        let _ = writeln!(out, "- Open changes: {}\n", list(&briefing.open_changes));
    }
    if !any {
        let _ = writeln!(out, "_No handoffs._\n");
    }
}

fn reason_suffix(reason: Option<&str>) -> String {
    reason
        .filter(|reason| !reason.trim().is_empty())
        .map(|reason| format!(": {}", reason.trim()))
        .unwrap_or_default()
}

/// `## Timeline (UTC)`: every event in words, with the lifecycle's turning
/// points marked.
fn timeline(out: &mut String, events: &[Event]) {
    let _ = writeln!(out, "## Timeline (UTC)\n");
    let mut before: Option<IncidentState> = None;
    for event in events {
        let marker = match &event.kind {
            EventKind::Declared { .. } => Some("INCIDENT BEGINS"),
            EventKind::StatusChanged { to, .. } => match to {
                Status::Mitigated => Some("MITIGATED"),
                Status::Resolved => Some("RESOLVED"),
                Status::Closed => Some("CLOSED"),
                Status::Active => Some("REOPENED"),
            },
            _ => None,
        };
        let line = format!(
            "{} {}",
            time(event.at),
            machine::actor_line(before.as_ref(), event)
        );
        match marker {
            Some(marker) => {
                let _ = writeln!(out, "- **{marker}**: {line}");
            }
            None => {
                let _ = writeln!(out, "- {line}");
            }
        }
        before = Some(machine::evolve(before, event));
    }
    let _ = writeln!(out);
}

/// `## Supporting information`: who held each role when, and every pinned
/// status update.
fn supporting_information(out: &mut String, state: &IncidentState, events: &[Event]) {
    let _ = writeln!(out, "## Supporting information\n");
    let _ = writeln!(out, "### Role history\n");
    let _ = writeln!(
        out,
        "| role | holder | from | to |\n| --- | --- | --- | --- |"
    );
    for tenure in &state.role_history {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            tenure.role,
            cell(&tenure.holder.name),
            time(tenure.from),
            tenure.to.map(time).unwrap_or_else(|| "now".into())
        );
    }
    let _ = writeln!(out, "\n### Pinned status updates\n");
    let mut pins = 0;
    for event in events {
        if let EventKind::StatusPinned {
            summary,
            next_update_by,
            ..
        } = &event.kind
        {
            let next = next_update_by.map_or_else(
                || "final update".to_owned(),
                |next| format!("next update by {}", time(next)),
            );
            let _ = writeln!(
                out,
                "- {} by {}: {summary} ({next})",
                time(event.at),
                event.actor.name,
            );
            pins += 1;
        }
    }
    if pins == 0 {
        let _ = writeln!(out, "_No status was pinned._");
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};
    use commandpost_shared::incident::{Caller, Command, Role, Status};
    use commandpost_shared::machine::{self, Rules};
    use commandpost_shared::{AccessRole, Actor, UserId};

    use super::*;

    fn caller(id: &str, name: &str) -> Caller {
        Caller::new(
            Actor {
                id: UserId(id.into()),
                name: name.into(),
            },
            AccessRole::Responder,
        )
    }

    #[test]
    fn a_scripted_incident_renders_every_section_and_the_timeline_markers() {
        let ada = caller("ada", "Ada");
        let bob = caller("bob", "Bob");
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let mut events: Vec<Event> = Vec::new();
        let run = |events: &mut Vec<Event>, command: Command, who: &Caller, minutes: i64| {
            let state = machine::fold(events);
            let produced = machine::apply(
                state.as_ref(),
                &command,
                who,
                start + Duration::minutes(minutes),
                &Rules::default(),
            )
            .unwrap_or_else(|error| panic!("{command:?}: {error}"));
            events.extend(produced);
        };
        run(
            &mut events,
            Command::Declare {
                title: "Checkout errors".into(),
                severity: None,
                criteria: None,
                summary: Some("payments fail".into()),
            },
            &ada,
            0,
        );
        run(
            &mut events,
            Command::AddExitCriterion {
                text: "payments succeed".into(),
            },
            &ada,
            1,
        );
        run(
            &mut events,
            Command::PinStatus {
                summary: "rolling back".into(),
                next_update_by: Some(start + Duration::minutes(30)),
                is_final: false,
            },
            &ada,
            5,
        );
        run(
            &mut events,
            Command::RecordChange {
                what: "disable feature flag".into(),
                why: "suspect".into(),
                revert: "enable it".into(),
            },
            &ada,
            6,
        );
        run(
            &mut events,
            Command::OfferHandoff {
                role: Role::IncidentCommander,
                to: bob.actor.clone(),
                notes: String::new(),
            },
            &ada,
            10,
        );
        let handoff = match &events.last().unwrap().kind {
            EventKind::HandoffOffered { handoff, .. } => *handoff,
            other => panic!("{other:?}"),
        };
        run(&mut events, Command::AcceptHandoff { handoff }, &bob, 11);
        run(
            &mut events,
            Command::SetStatus {
                status: Status::Mitigated,
                override_reason: None,
            },
            &bob,
            20,
        );
        run(
            &mut events,
            Command::SetExitCriterion {
                criterion: commandpost_shared::incident::CriterionId(2),
                met: true,
            },
            &bob,
            39,
        );
        run(
            &mut events,
            Command::SetStatus {
                status: Status::Resolved,
                override_reason: None,
            },
            &bob,
            40,
        );
        let state = machine::fold(&events).unwrap();
        let body = "# INC-3: Checkout errors\n\n## Summary\n\nPayments failed after deploy 42.\n\n## Impact\n\n30% of card payments.\n\n## Root cause\n\nA bad cache key.\n\n## TODO and bugs filed\n\n- [ ] \n- [ ] File bug for cache key (Bob)\n\n## Notes\n\nwe got lucky\n";
        let markdown = render(&IncidentId::new(3), &state, &events, body);

        let headings = [
            "| Date | 2026-11-25 |",
            "## Summary",
            "## Declaration",
            "## Impact",
            "## Root causes",
            "## Trigger",
            "## Resolution",
            "## Detection",
            "## Action items",
            "## Lessons learned",
            "### What went well",
            "### What went wrong",
            "### Where we got lucky",
            "## Exit criteria",
            "## Handoffs",
            "## Timeline (UTC)",
            "## From the incident document",
            "### Notes",
            "## Supporting information",
            "### Role history",
            "### Pinned status updates",
        ];
        let positions: Vec<usize> = headings
            .iter()
            .map(|h| {
                markdown
                    .find(h)
                    .unwrap_or_else(|| panic!("missing {h}:\n{markdown}"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "sections out of order:\n{markdown}"
        );
        assert!(markdown.contains("Payments failed after deploy 42."));
        assert!(markdown.contains("30% of card payments."));
        assert!(
            markdown.contains("## Root causes\n\nA bad cache key.\n"),
            "the document's root cause section is used"
        );
        assert!(
            markdown.contains("| File bug for cache key (Bob) | other | – | – | no |"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "| Revert production change #4: disable feature flag (revert: enable it) | mitigate | Bob | – | no |"
            ),
            "{markdown}"
        );
        assert!(
            markdown.contains("| Authors | Ada (incident commander); Bob (incident commander) |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| Mitigated | 2026-11-25 09:20:00 UTC |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| Time to mitigate | 20 min from declaration |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| Time to resolve | 40 min from declaration |"),
            "{markdown}"
        );
        assert!(markdown.contains("| Closed | not yet |"), "{markdown}");
        assert!(
            markdown.contains(
                "| #2 payments succeed | 2026-11-25 09:01:00 UTC | 2026-11-25 09:39:00 UTC by Bob |"
            ),
            "{markdown}"
        );
        assert!(
            markdown.contains("### incident commander: Ada to Bob, offered 2026-11-25 09:10:00 UTC (accepted 2026-11-25 09:11:00 UTC)"),
            "{markdown}"
        );
        assert!(
            markdown.contains("- **INCIDENT BEGINS**: 2026-11-25 09:00:00 UTC Ada:"),
            "{markdown}"
        );
        assert!(
            markdown.contains("- **MITIGATED**: 2026-11-25 09:20:00 UTC Bob:"),
            "{markdown}"
        );
        assert!(
            markdown.contains("- **RESOLVED**: 2026-11-25 09:40:00 UTC Bob:"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "| incident commander | Ada | 2026-11-25 09:00:00 UTC | 2026-11-25 09:11:00 UTC |"
            ),
            "{markdown}"
        );
        assert!(
            markdown.contains("| incident commander | Bob | 2026-11-25 09:11:00 UTC | now |"),
            "{markdown}"
        );
        assert!(markdown.contains(
            "2026-11-25 09:05:00 UTC by Ada: rolling back (next update by 2026-11-25 09:30:00 UTC)"
        ));
        assert_eq!(
            markdown,
            render(&IncidentId::new(3), &state, &events, body),
            "the same input renders the same bytes"
        );
        assert!(markdown.contains("we got lucky"));
    }

    #[test]
    fn checklist_lines_become_action_items() {
        let item = |line: &str| parse_item(line);
        assert_eq!(
            item("- [ ] prevent: Alert on checkout 500s (owner: ada, bug: https://bugs.example/1)"),
            Some(ActionItem {
                item: "Alert on checkout 500s".into(),
                kind: "prevent",
                owner: "ada".into(),
                bug: "https://bugs.example/1".into(),
                done: false,
            })
        );
        assert_eq!(
            item("  - [x] Process: write the runbook https://wiki.example/rb"),
            Some(ActionItem {
                item: "write the runbook https://wiki.example/rb".into(),
                kind: "process",
                owner: String::new(),
                bug: "https://wiki.example/rb".into(),
                done: true,
            })
        );
        assert_eq!(item("- [ ] "), None);
        assert_eq!(item("plain text"), None);
        let odd = item("- [ ] note: ratio 3:1 (see the graph)").unwrap();
        assert_eq!(
            (odd.kind, odd.item.as_str()),
            ("other", "note: ratio 3:1 (see the graph)")
        );
    }

    #[test]
    fn every_document_section_is_carried_and_cells_stay_in_their_table() {
        let ada = caller("ada", "Ada | the first");
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let events = machine::apply(
            None,
            &Command::Declare {
                title: "Pipes".into(),
                severity: None,
                criteria: None,
                summary: None,
            },
            &ada,
            start,
            &Rules::default(),
        )
        .unwrap();
        let state = machine::fold(&events).unwrap();
        let body = "# INC-9: Pipes\nintro line\n\n## Customer comms\n\nWe told them.\n\n## Lessons learned\n\nRoll out slower.\n\n## TODO and bugs filed\n\n- [ ] prevent: a | b (owner: x|y)\n\n## Root causes\n\n<!-- Why it could happen; fill in as you learn. -->\n\n## Postmortem status\n\nIn review\n";
        let markdown = render(&IncidentId::new(9), &state, &events, body);
        assert!(markdown.contains("## From the incident document\n\nintro line\n\n### Customer comms\n\nWe told them.\n"), "{markdown}");
        assert!(
            markdown.contains("## Lessons learned\n\nRoll out slower.\n"),
            "{markdown}"
        );
        assert!(!markdown.contains("### What went well"), "{markdown}");
        assert!(
            markdown.contains("## Root causes\n\n_To be written._"),
            "a template prompt is not text: {markdown}"
        );
        assert!(
            markdown.contains("| Postmortem status | in review |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| a \\| b | prevent | x\\|y | – | no |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| Authors | Ada \\| the first (incident commander) |"),
            "{markdown}"
        );
        // Every table row has as many cells as its header.
        for table in markdown
            .split("\n\n")
            .filter(|block| block.starts_with('|'))
        {
            let cells = |row: &str| row.replace("\\|", "").matches('|').count();
            let header = cells(table.lines().next().unwrap());
            assert!(table.lines().all(|row| cells(row) == header), "{table}");
        }
    }
}
