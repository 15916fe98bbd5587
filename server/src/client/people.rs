//! People on the command line: `josephine` or `"Josephine Ng"` or `jos`,
//! resolved against the people the server knows (`GET /api/people`), never
//! sent as free text.
//!
//! The rule, in order: an exact id; else exactly one person whose name is
//! the text (ignoring case); else exactly one person whose id or name
//! contains it (ignoring case). Several candidates are an error that lists
//! them with their ids; none is an error that names the text and how to
//! list people. The server refuses an unknown id too (422
//! `unknown_person`); resolving first gives the better message and catches
//! a name typed where an id was meant.

use std::fmt;

use commandpost_shared::Actor;

/// The most candidates an ambiguity error lists.
const LISTED: usize = 10;

/// Why a name did not resolve to one person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersonError {
    /// Nobody matches.
    Unknown(String),
    /// Several people match; they are listed.
    Ambiguous(String, Vec<Actor>),
    /// The text is blank.
    Blank,
}

impl fmt::Display for PersonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersonError::Unknown(text) => write!(
                f,
                "no one known as `{text}`: the server knows people who have used it with their token, and those already on an incident; list them with `commandpost people` (or `commandpost people {text}`)"
            ),
            PersonError::Ambiguous(text, candidates) => {
                write!(
                    f,
                    "`{text}` could be {} people; give an id:",
                    candidates.len()
                )?;
                for person in candidates.iter().take(LISTED) {
                    write!(f, "\n  {}", labelled(person))?;
                }
                if candidates.len() > LISTED {
                    write!(
                        f,
                        "\n  ... and {} more (`commandpost people {text}` lists them)",
                        candidates.len() - LISTED
                    )?;
                }
                Ok(())
            }
            PersonError::Blank => f.write_str("name a person (an id or a name)"),
        }
    }
}

impl std::error::Error for PersonError {}

/// `Josephine Ng (josephine)`: a person with the id to type.
pub fn labelled(person: &Actor) -> String {
    format!("{} ({})", person.name, person.id)
}

/// Picks the one person `text` means among `known` (the server's answer to
/// `GET /api/people?q=TEXT`, or any superset of it).
pub fn resolve(text: &str, known: &[Actor]) -> Result<Actor, PersonError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(PersonError::Blank);
    }
    if let Some(person) = known.iter().find(|person| person.id.0 == text) {
        return Ok(person.clone());
    }
    let lower = text.to_lowercase();
    let pick = |matches: Vec<&Actor>| -> Option<Result<Actor, PersonError>> {
        match matches.as_slice() {
            [] => None,
            [one] => Some(Ok((*one).clone())),
            _ => Some(Err(PersonError::Ambiguous(
                text.to_owned(),
                matches.into_iter().cloned().collect(),
            ))),
        }
    };
    let exact = known
        .iter()
        .filter(|person| person.id.0.to_lowercase() == lower || person.name.to_lowercase() == lower)
        .collect();
    if let Some(result) = pick(exact) {
        return result;
    }
    let partial = known
        .iter()
        .filter(|person| {
            person.id.0.to_lowercase().contains(&lower)
                || person.name.to_lowercase().contains(&lower)
        })
        .collect();
    pick(partial).unwrap_or_else(|| Err(PersonError::Unknown(text.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use commandpost_shared::UserId;

    fn person(id: &str, name: &str) -> Actor {
        Actor {
            id: UserId(id.to_owned()),
            name: name.to_owned(),
        }
    }

    fn known() -> Vec<Actor> {
        vec![
            person("bob", "Bob Baptiste"),
            person("bobby", "Bobby Tables"),
            person("jo", "Jo March"),
            person("josephine", "Josephine Ng"),
            person("jn2", "josephine ng"),
            person("mary", "Mary Smith"),
        ]
    }

    #[test]
    fn an_exact_id_wins_over_everything() {
        assert_eq!(resolve("bob", &known()), Ok(person("bob", "Bob Baptiste")));
        assert_eq!(resolve(" jo ", &known()), Ok(person("jo", "Jo March")));
    }

    #[test]
    fn a_name_or_part_of_one_resolves_when_only_one_person_has_it() {
        assert_eq!(
            resolve("Mary Smith", &known()),
            Ok(person("mary", "Mary Smith"))
        );
        assert_eq!(resolve("smith", &known()), Ok(person("mary", "Mary Smith")));
        assert_eq!(
            resolve("Tables", &known()),
            Ok(person("bobby", "Bobby Tables"))
        );
        assert_eq!(resolve("MARY", &known()), Ok(person("mary", "Mary Smith")));
    }

    #[test]
    fn an_ambiguous_name_lists_the_candidates_with_their_ids() {
        let error = resolve("Josephine Ng", &known()).expect_err("two people have that name");
        assert_eq!(
            error,
            PersonError::Ambiguous(
                "Josephine Ng".into(),
                vec![
                    person("josephine", "Josephine Ng"),
                    person("jn2", "josephine ng")
                ]
            )
        );
        let message = error.to_string();
        assert!(
            message.starts_with("`Josephine Ng` could be 2 people; give an id:"),
            "{message}"
        );
        assert!(
            message.contains("\n  Josephine Ng (josephine)"),
            "{message}"
        );
        assert!(message.contains("\n  josephine ng (jn2)"), "{message}");
        let error = resolve("bo", &known()).expect_err("bob and bobby");
        assert!(
            matches!(error, PersonError::Ambiguous(_, ref c) if c.len() == 2),
            "{error}"
        );
    }

    #[test]
    fn a_long_ambiguity_lists_ten_and_counts_the_rest() {
        let many: Vec<Actor> = (0..13).map(|n| person(&format!("sam{n}"), "Sam")).collect();
        let message = resolve("Sam", &many).expect_err("13 Sams").to_string();
        assert_eq!(message.matches("\n  Sam (sam").count(), 10, "{message}");
        assert!(
            message.contains("... and 3 more (`commandpost people Sam` lists them)"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_or_blank_name_is_refused_and_says_how_to_list_people() {
        let message = resolve("josephin-typo", &known())
            .expect_err("unknown")
            .to_string();
        assert!(
            message.starts_with("no one known as `josephin-typo`"),
            "{message}"
        );
        assert!(message.contains("commandpost people"), "{message}");
        assert_eq!(resolve("  ", &known()), Err(PersonError::Blank));
        assert!(matches!(resolve("bob", &[]), Err(PersonError::Unknown(_))));
    }
}
