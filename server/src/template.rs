//! The incident document template (INCIDENT-PRACTICE.md, "The live incident
//! document"): the sections a new incident's `body` starts with, most
//! important first, seeded from the declaration; and the server-written
//! exit-criteria block that keeps the document's criteria in step with the
//! sidecar's.
//!
//! Pure: text in, text out. The room applies the edits
//! ([`crate::rooms::Rooms::sync_exit_criteria`]).

use commandpost_shared::IncidentId;
use commandpost_shared::incident::{Criteria, ExitCriterion, IncidentState};
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

/// Name of the document's main `Y.Text` (Markdown).
pub const BODY: &str = "body";

/// The heading the exit-criteria block belongs under.
pub const EXIT_CRITERIA_HEADING: &str = "## Exit criteria";

/// The first line of the server-written exit-criteria block starts with
/// this (an HTML comment: invisible in rendered Markdown).
pub const CRITERIA_START: &str = "<!-- commandpost:exit-criteria";

/// The last line of the server-written exit-criteria block.
pub const CRITERIA_END: &str = "<!-- /commandpost:exit-criteria -->";

/// The headings a postmortem needs, in the template so responders fill them
/// as they go (the SRE book's postmortem template).
pub const POSTMORTEM_HEADINGS: [&str; 5] = [
    "## Trigger",
    "## Root causes",
    "## Detection",
    "## Resolution",
    "## Lessons learned",
];

/// The section whose checklist items become the postmortem's action items.
pub const ACTION_ITEMS_HEADING: &str = "## TODO and bugs filed";

/// The Markdown a new incident's document starts with: the declaration's
/// summary, severity and answers, the exit criteria as the sidecar has them,
/// and the postmortem's headings.
pub fn render(id: &IncidentId, state: &IncidentState) -> String {
    let when = state.declared_at.format("%Y-%m-%d %H:%M:%S UTC");
    let summary = state
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|summary| !summary.is_empty())
        .unwrap_or("<!-- What is happening, in two sentences. -->");
    let severity = state.severity.map_or_else(
        || "not assessed yet".to_owned(),
        |severity| severity.as_str().to_uppercase(),
    );
    let declared_by = &state.declared_by.name;
    let title = &state.title;
    let answers = declaration_answers(state.criteria.as_ref());
    let criteria = exit_criteria_block(&state.exit_criteria);
    let postmortem: String = POSTMORTEM_HEADINGS
        .iter()
        .map(|heading| format!("{heading}\n\n{}\n\n", heading_prompt(heading)))
        .collect();
    format!(
        "# {id}: {title}\n\
         \n\
         ## Summary\n\
         \n\
         {summary}\n\
         \n\
         Severity {severity}. Declared by {declared_by} at {when}.\n\
         \n\
         ## Declaration\n\
         \n\
         {answers}\
         \n\
         ## Impact\n\
         \n\
         <!-- Who is affected, and how badly. -->\n\
         \n\
         ## Detailed status\n\
         \n\
         <!-- What is known, what is being tried, and by whom. -->\n\
         \n\
         {EXIT_CRITERIA_HEADING}\n\
         \n\
         {criteria}\
         \n\
         {ACTION_ITEMS_HEADING}\n\
         \n\
         <!-- One item per line; the postmortem's action items are made from them:\n\
         - [ ] prevent: Alert on checkout 500s (owner: ada, bug: https://bugs.example/123)\n\
         Types: mitigate, prevent, process, other. Owner and bug are optional. -->\n\
         - [ ] \n\
         \n\
         {postmortem}\
         ## Notes\n\
         \n"
    )
}

/// The three declaration questions and their answers, as a list.
pub fn declaration_answers(criteria: Option<&Criteria>) -> String {
    let Some(criteria) = criteria else {
        return "_The declaration questions were not answered._\n".to_owned();
    };
    let yes_no = |answer: bool| if answer { "yes" } else { "no" };
    format!(
        "- Another team is needed to fix it: {}\n\
         - Visible to customers: {}\n\
         - Unsolved after an hour of concentrated analysis: {}\n",
        yes_no(criteria.needs_other_team),
        yes_no(criteria.customer_visible),
        yes_no(criteria.unresolved_after_hour),
    )
}

fn heading_prompt(heading: &str) -> &'static str {
    match heading {
        "## Trigger" => "<!-- What set it off: the change, load or event. -->",
        "## Root causes" => "<!-- Why it could happen; fill in as you learn. -->",
        "## Detection" => "<!-- How we found out, and how long that took. -->",
        "## Resolution" => "<!-- What fixed it. -->",
        _ => "<!-- What went well, what went wrong, where we got lucky. -->",
    }
}

/// The server-written block: the sidecar's exit criteria and whether each is
/// met, between [`CRITERIA_START`] and [`CRITERIA_END`], ending in a newline.
/// Criterion texts are written on one line with `<` escaped, so no text can
/// end the block early or open a comment.
pub fn exit_criteria_block(criteria: &[ExitCriterion]) -> String {
    let mut block = format!(
        "{CRITERIA_START}: written by the server from the incident's exit criteria; \
         edits between these lines are replaced. Add or meet criteria in the incident \
         panel or with `commandpost criterion`. -->\n"
    );
    if criteria.is_empty() {
        block.push_str("_No exit criteria yet: the commander adds them._\n");
    }
    for criterion in criteria {
        let mark = if criterion.met { 'x' } else { ' ' };
        let text = one_line(&criterion.text);
        block.push_str(&format!(
            "- [{mark}] {text} (criterion {})\n",
            criterion.criterion
        ));
    }
    block.push_str(CRITERIA_END);
    block.push('\n');
    block
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('<', "&lt;")
}

/// One edit of the body text: remove `remove` bytes at byte offset `at`,
/// then insert `insert` there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splice {
    pub at: usize,
    pub remove: usize,
    pub insert: String,
}

/// The edit that makes `body`'s exit-criteria block show `criteria`, or
/// `None` when it already does. The block is the first [`CRITERIA_START`]
/// line followed by a [`CRITERIA_END`] before any other start marker. When
/// there is none (someone deleted it), a new block goes after the
/// [`EXIT_CRITERIA_HEADING`] line, or at the end under a new heading.
pub fn exit_criteria_splice(body: &str, criteria: &[ExitCriterion]) -> Option<Splice> {
    let block = exit_criteria_block(criteria);
    if let Some((start, end)) = find_block(body) {
        let current = &body[start..end];
        let wanted = &block[..block.len() - 1];
        return (current != wanted).then(|| Splice {
            at: start,
            remove: end - start,
            insert: wanted.to_owned(),
        });
    }
    let heading = body.match_indices(EXIT_CRITERIA_HEADING).find(|(at, _)| {
        (*at == 0 || body[..*at].ends_with('\n'))
            && body[at + EXIT_CRITERIA_HEADING.len()..]
                .chars()
                .next()
                .is_none_or(|next| next == '\n')
    });
    Some(match heading {
        Some((at, _)) => {
            let line_end = at + EXIT_CRITERIA_HEADING.len();
            let (at, insert) = match body[line_end..].strip_prefix('\n') {
                Some(_) => (line_end + 1, format!("\n{block}")),
                None => (line_end, format!("\n\n{block}")),
            };
            Splice {
                at,
                remove: 0,
                insert,
            }
        }
        None => {
            let separator = match body {
                "" => "",
                _ if body.ends_with("\n\n") => "",
                _ if body.ends_with('\n') => "\n",
                _ => "\n\n",
            };
            Splice {
                at: body.len(),
                remove: 0,
                insert: format!("{separator}{EXIT_CRITERIA_HEADING}\n\n{block}"),
            }
        }
    })
}

/// Whether `body` has a complete exit-criteria block.
pub fn has_exit_criteria_block(body: &str) -> bool {
    find_block(body).is_some()
}

/// `text` with its exit-criteria block (if any) removed.
pub fn without_exit_criteria_block(text: &str) -> String {
    match find_block(text) {
        Some((start, end)) => format!("{}{}", &text[..start], &text[end..]),
        None => text.to_owned(),
    }
}

/// Byte range of the block (start marker to the end of the end marker).
fn find_block(body: &str) -> Option<(usize, usize)> {
    let starts: Vec<usize> = body
        .match_indices(CRITERIA_START)
        .map(|(at, _)| at)
        .collect();
    starts.iter().enumerate().find_map(|(i, &start)| {
        let limit = starts.get(i + 1).copied().unwrap_or(body.len());
        body[start..limit]
            .find(CRITERIA_END)
            .map(|offset| (start, start + offset + CRITERIA_END.len()))
    })
}

/// Applies a splice to a string (what the room does to the `Y.Text`).
pub fn apply_splice(body: &str, splice: &Splice) -> String {
    let mut out = String::with_capacity(body.len() + splice.insert.len());
    out.push_str(&body[..splice.at]);
    out.push_str(&splice.insert);
    out.push_str(&body[splice.at + splice.remove..]);
    out
}

/// A v1 update that creates the `body` text with `markdown` in it.
pub fn initial_update(markdown: &str) -> Vec<u8> {
    let doc = Doc::new();
    let body = doc.get_or_insert_text(BODY);
    body.insert(&mut doc.transact_mut(), 0, markdown);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use commandpost_shared::incident::{Caller, Command, CriterionId, Severity};
    use commandpost_shared::machine::{self, Rules};
    use commandpost_shared::{AccessRole, Actor, UserId};
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Update};

    use super::*;

    fn declared(summary: Option<&str>, criteria: Option<Criteria>) -> IncidentState {
        let ada = Caller::new(
            Actor {
                id: UserId("ada".into()),
                name: "Ada".into(),
            },
            AccessRole::Responder,
        );
        let command = Command::Declare {
            title: "Checkout errors".into(),
            severity: Some(Severity::Sev2),
            criteria,
            summary: summary.map(Into::into),
        };
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 3, 4, 5).unwrap();
        let events = machine::apply(None, &command, &ada, at, &Rules::default()).unwrap();
        machine::fold(&events).unwrap()
    }

    fn criterion(id: u64, text: &str, met: bool) -> ExitCriterion {
        ExitCriterion {
            criterion: CriterionId(id),
            text: text.into(),
            met,
        }
    }

    #[test]
    fn template_has_the_sections_in_order() {
        let text = render(&IncidentId::new(7), &declared(None, None));
        let sections = [
            "## Summary",
            "## Declaration",
            "## Impact",
            "## Detailed status",
            "## Exit criteria",
            "## TODO and bugs filed",
            "## Trigger",
            "## Root causes",
            "## Detection",
            "## Resolution",
            "## Lessons learned",
            "## Notes",
        ];
        let positions: Vec<usize> = sections.iter().map(|s| text.find(s).expect(s)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "sections out of order: {positions:?}"
        );
        assert!(text.starts_with("# INC-7: Checkout errors\n"));
        assert!(!text.contains("Last updated"), "{text}");
        assert!(text.contains("What is happening, in two sentences."));
    }

    #[test]
    fn the_declaration_is_seeded_into_the_first_sections() {
        let criteria = Criteria {
            needs_other_team: true,
            customer_visible: true,
            unresolved_after_hour: false,
        };
        let state = declared(
            Some("Checkout returns 500 for 30% of EU users"),
            Some(criteria),
        );
        let text = render(&IncidentId::new(1), &state);
        let summary = text.find("## Summary\n\nCheckout returns 500 for 30% of EU users\n");
        assert!(summary.is_some(), "{text}");
        assert!(!text.contains("What is happening, in two sentences."));
        assert!(text.contains("Severity SEV2. Declared by Ada at 2026-12-07 03:04:05 UTC."));
        assert!(text.contains("- Another team is needed to fix it: yes\n"));
        assert!(text.contains("- Visible to customers: yes\n"));
        assert!(text.contains("- Unsolved after an hour of concentrated analysis: no\n"));
        // The block is in place and already matches the (empty) criteria.
        assert_eq!(exit_criteria_splice(&text, &state.exit_criteria), None);
    }

    #[test]
    fn the_block_follows_the_criteria_and_leaves_the_rest_alone() {
        let body = render(&IncidentId::new(1), &declared(None, None));
        let criteria = vec![
            criterion(4, "Error rate below 0.1% for 30 min", false),
            criterion(6, "Queue drained", true),
        ];
        let splice = exit_criteria_splice(&body, &criteria).expect("an edit");
        let after = apply_splice(&body, &splice);
        assert!(after.contains(
            "- [ ] Error rate below 0.1% for 30 min (criterion 4)\n- [x] Queue drained (criterion 6)\n<!-- /commandpost"
        ));
        assert!(!after.contains("No exit criteria yet"));
        // Only the block changed.
        let (start, end) = find_block(&body).unwrap();
        assert_eq!(after[..start], body[..start]);
        assert!(after.ends_with(&body[end..]));
        // Applying again changes nothing.
        assert_eq!(exit_criteria_splice(&after, &criteria), None);
    }

    #[test]
    fn edits_inside_the_block_are_replaced_and_a_deleted_block_comes_back() {
        let criteria = vec![criterion(2, "Service restored", true)];
        let body = format!(
            "é intro ✓\n\n## Exit criteria\n\n{}\nafter\n",
            exit_criteria_block(&criteria).replace("[x]", "[ ] someone typed here")
        );
        let fixed = apply_splice(&body, &exit_criteria_splice(&body, &criteria).unwrap());
        assert_eq!(
            fixed,
            format!(
                "é intro ✓\n\n## Exit criteria\n\n{}\nafter\n",
                exit_criteria_block(&criteria)
            )
        );

        let gone = "# INC-1\n\n## Exit criteria\n\nour own list\n";
        let back = apply_splice(gone, &exit_criteria_splice(gone, &criteria).unwrap());
        assert_eq!(
            back,
            format!(
                "# INC-1\n\n## Exit criteria\n\n{}\nour own list\n",
                exit_criteria_block(&criteria)
            )
        );
        let no_heading = "# INC-1\ntext";
        let appended = apply_splice(
            no_heading,
            &exit_criteria_splice(no_heading, &criteria).unwrap(),
        );
        assert_eq!(
            appended,
            format!(
                "# INC-1\ntext\n\n## Exit criteria\n\n{}",
                exit_criteria_block(&criteria)
            )
        );
        // A lone start marker (its end deleted) is not a block.
        let lone = format!("{CRITERIA_START} left over\n\n## Exit criteria\n");
        let splice = exit_criteria_splice(&lone, &criteria).unwrap();
        assert_eq!(splice.remove, 0);
        let once = apply_splice(&lone, &splice);
        assert_eq!(exit_criteria_splice(&once, &criteria), None, "{once}");
    }

    #[test]
    fn a_criterion_text_cannot_end_the_block_or_break_lines() {
        let criteria = vec![criterion(
            3,
            &format!("evil {CRITERIA_END}\n- [x] fake <!-- open"),
            false,
        )];
        let block = exit_criteria_block(&criteria);
        assert_eq!(block.matches(CRITERIA_END).count(), 1, "{block}");
        assert_eq!(block.lines().count(), 3, "{block}");
        let body = format!("## Exit criteria\n\n{block}");
        assert_eq!(exit_criteria_splice(&body, &criteria), None);
    }

    #[test]
    fn initial_update_seeds_the_body_text() {
        let update = initial_update("hello");
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        let body = doc.get_or_insert_text(BODY);
        assert_eq!(body.get_string(&doc.transact()), "hello");
    }
}
