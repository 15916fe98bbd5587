//! The incident document template (INCIDENT-PRACTICE.md, "The live incident
//! document"): the sections a new incident's `body` starts with, most
//! important first.

use chrono::{DateTime, Utc};
use commandpost_shared::IncidentId;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

/// Name of the document's main `Y.Text` (Markdown).
pub const BODY: &str = "body";

/// The Markdown a new incident's document starts with.
pub fn render(id: &IncidentId, title: &str, declared_by: &str, at: DateTime<Utc>) -> String {
    let when = at.format("%Y-%m-%d %H:%M UTC");
    format!(
        "# {id}: {title}\n\
         \n\
         ## Summary\n\
         \n\
         What is happening, in two sentences. Declared by {declared_by} at {when}.\n\
         \n\
         ## Impact\n\
         \n\
         Who is affected, and how badly.\n\
         \n\
         ## Detailed status\n\
         \n\
         _Last updated at {when} by {declared_by}_\n\
         \n\
         ## Exit criteria\n\
         \n\
         - [ ] Service restored for all customers\n\
         \n\
         ## TODO and bugs filed\n\
         \n\
         - [ ] \n\
         \n\
         ## Notes\n\
         \n"
    )
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
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Update};

    #[test]
    fn template_has_the_six_sections_in_order() {
        let text = render(&IncidentId::new(7), "Checkout errors", "Ada", Utc::now());
        let sections = [
            "## Summary",
            "## Impact",
            "## Detailed status",
            "## Exit criteria",
            "## TODO and bugs filed",
            "## Notes",
        ];
        let positions: Vec<usize> = sections.iter().map(|s| text.find(s).expect(s)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "sections out of order: {positions:?}"
        );
        assert!(text.starts_with("# INC-7: Checkout errors\n"));
        assert!(
            text.contains("- [ ] "),
            "exit criteria and TODO are checklists"
        );
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
