//! What one client can make the server hold, per field and per incident.
//!
//! Every text a command carries ends up in an event that is stored for
//! good, replayed to every event stream and copied into the postmortem, so
//! each has a bound. Lengths are in characters (Unicode scalar values) after
//! trimming; the OpenAPI document states the same numbers as `maxLength`.
//! [`crate::machine::apply`] refuses a command over any of them with a 422
//! that names the field and the limit.

/// An incident title.
pub const TITLE_CHARS: usize = 200;
/// A person's display name (in a command, or on a share link).
pub const NAME_CHARS: usize = 100;
/// A person's user id (a token subject).
pub const USER_ID_CHARS: usize = 100;
/// A note on the command-post log, and the notes of a handoff offer.
pub const NOTE_CHARS: usize = 4_000;
/// A pinned status summary, or the summary given when declaring.
pub const SUMMARY_CHARS: usize = 2_000;
/// Everything shorter: reasons, a responder's assignment, an exit
/// criterion, a change's what, why and revert.
pub const SHORT_TEXT_CHARS: usize = 1_000;

/// Responders listed on one incident.
pub const RESPONDERS: usize = 200;
/// Exit criteria on one incident.
pub const EXIT_CRITERIA: usize = 50;
/// Production changes on one incident that are neither reverted nor waived.
pub const OPEN_CHANGES: usize = 200;

/// People one `GET /api/people` answer lists (the first by name; narrow
/// with `?q=`).
pub const PEOPLE_LISTED: usize = 50;

/// User ids reserved for the server itself. Compared after trimming and
/// without regard to case, so `System` or ` SYSTEM ` are reserved too.
pub fn is_reserved_user_id(id: &str) -> bool {
    id.trim()
        .eq_ignore_ascii_case(crate::incident::SYSTEM_USER_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ids_ignore_case_and_surrounding_space() {
        for reserved in ["system", "System", "SYSTEM", " system ", "\tSyStEm\n"] {
            assert!(is_reserved_user_id(reserved), "{reserved:?}");
        }
        for free in ["systems", "sys tem", "ada", ""] {
            assert!(!is_reserved_user_id(free), "{free:?}");
        }
    }
}
