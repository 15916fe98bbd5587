//! Wire types of Command Post: everything that crosses a process boundary
//! (HTTP bodies, token claims, WebSocket extension messages) is defined here
//! and only here, so the server, the CLI and the tests agree by construction.
//!
//! Serialised names are `snake_case` throughout.

#![forbid(unsafe_code)]
// Every public item is documented: the schemas and the generated web types carry these docs.
#![warn(missing_docs)]

pub mod incident;
pub mod limits;
pub mod machine;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An incident id of the form `INC-<n>`, numbered sequentially per server.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", description = "an incident id, `INC-<n>`")]
pub struct IncidentId(u64);

impl IncidentId {
    /// Builds the id with sequence number `n` (`INC-n`).
    pub fn new(n: u64) -> Self {
        Self(n)
    }

    /// The sequence number behind the id.
    pub fn number(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INC-{}", self.0)
    }
}

/// The error for a string that is not of the form `INC-<n>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidIncidentId(pub String);

impl fmt::Display for InvalidIncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an incident id (expected INC-<number>)",
            self.0
        )
    }
}

impl std::error::Error for InvalidIncidentId {}

impl FromStr for IncidentId {
    type Err = InvalidIncidentId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix("INC-")
            .ok_or_else(|| InvalidIncidentId(s.to_owned()))?;
        // Reject signs, leading zeros and empty numbers so that every id has
        // exactly one spelling.
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return Err(InvalidIncidentId(s.to_owned()));
        }
        digits
            .parse::<u64>()
            .map(IncidentId)
            .map_err(|_| InvalidIncidentId(s.to_owned()))
    }
}

impl TryFrom<String> for IncidentId {
    type Error = InvalidIncidentId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<IncidentId> for String {
    fn from(value: IncidentId) -> Self {
        value.to_string()
    }
}

/// A user's id (the token's subject).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct UserId(pub String);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a token lets its holder do, independent of any incident role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    /// Everything a responder may do, plus emergency command changes and
    /// minting tokens.
    Admin,
    /// Edits incident documents and takes part in the response.
    Responder,
    /// Follows incidents read-only.
    Viewer,
}

impl AccessRole {
    /// Whether this role may change documents and state.
    pub fn can_write(self) -> bool {
        matches!(self, AccessRole::Admin | AccessRole::Responder)
    }

    /// The lowercase name used in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessRole::Admin => "admin",
            AccessRole::Responder => "responder",
            AccessRole::Viewer => "viewer",
        }
    }
}

impl fmt::Display for AccessRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(AccessRole::Admin),
            "responder" => Ok(AccessRole::Responder),
            "viewer" => Ok(AccessRole::Viewer),
            other => Err(format!(
                "unknown access role `{other}` (expected admin, responder or viewer)"
            )),
        }
    }
}

/// The claims of a Command Post access token (a JWT signed with HS256).
///
/// An SSO gateway or chat bot can mint these with the shared secret and any
/// JWT library.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "the claims of an access token; also what `GET /api/me` answers")]
pub struct TokenClaims {
    /// The user id.
    pub sub: String,
    /// The display name shown to other responders.
    pub name: String,
    /// The access role.
    pub role: AccessRole,
    /// The one incident this token is limited to (`INC-<n>`); absent means
    /// every incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentId>,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, in seconds since the Unix epoch. A token issued more than
    /// a minute in the future is refused.
    pub iat: i64,
    /// Not valid before, in seconds since the Unix epoch (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The token id, for revocation.
    pub jti: String,
    /// The ids of the tokens this one was minted with through the API
    /// (a share link records its creator's token, then that token's own
    /// lineage), nearest first. Revoking any of them revokes this token.
    /// Empty for tokens minted with the secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<String>,
}

impl TokenClaims {
    /// The person this token speaks for: recorded as the actor of what it
    /// does, and shown with its cursors.
    pub fn actor(&self) -> Actor {
        Actor {
            id: UserId(self.sub.clone()),
            name: self.name.clone(),
        }
    }

    /// The caller of a command made with this token.
    pub fn caller(&self) -> incident::Caller {
        incident::Caller::new(self.actor(), self.role)
    }
}

/// A revoked token, as `POST /api/tokens/{jti}/revoke` answers and
/// `GET /api/tokens/revoked` lists it (and as the server stores it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Revocation {
    /// The revoked token's id.
    pub jti: String,
    /// When it was revoked.
    pub revoked_at: DateTime<Utc>,
    /// The subject of the admin token that revoked it.
    pub revoked_by: String,
}

/// What kind of stored record was moved to the quarantine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineKind {
    /// One update of a document's log.
    Update,
    /// A document's snapshot.
    Snapshot,
    /// One sidecar event.
    Event,
}

impl QuarantineKind {
    /// The serialised name (`update`, `snapshot`, `event`).
    pub fn name(self) -> &'static str {
        match self {
            QuarantineKind::Update => "update",
            QuarantineKind::Snapshot => "snapshot",
            QuarantineKind::Event => "event",
        }
    }
}

/// A stored record that no longer loaded, moved aside with its bytes: how
/// the storage backend keeps it (JSON), and the body of an entry of
/// `GET /api/admin/quarantine`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QuarantineRecord {
    /// The incident it belonged to.
    pub incident: IncidentId,
    /// What it was.
    pub kind: QuarantineKind,
    /// Its sequence number: the log or event seq, or for a snapshot the last
    /// log seq it covers. Absent when its key itself was damaged.
    pub seq: Option<u64>,
    /// Where it was stored, in the storage backend's terms, hex.
    pub original_key: String,
    /// Why it did not load.
    pub reason: String,
    /// When it was moved aside.
    pub quarantined_at: DateTime<Utc>,
    /// The original value's length in bytes.
    pub size: usize,
    /// The original value as the backend stored it, hex: restoring it means
    /// writing these bytes back under `original_key`. Always stored; the API
    /// includes it only with `?bytes=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// One entry of `GET /api/admin/quarantine`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QuarantineEntry {
    /// The record's id in the quarantine (the storage backend's), hex.
    pub id: String,
    /// The record.
    #[serde(flatten)]
    pub record: QuarantineRecord,
}

/// How a token came to be known to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenOrigin {
    /// The admin token printed when the server started.
    StartUp,
    /// A share link minted through `POST /api/incidents/{id}/share`.
    ShareLink,
    /// Minted elsewhere with the secret (`commandpost token`, an SSO
    /// gateway, a bot) and recorded when first used.
    FirstUse,
}

/// A token the server has issued or seen, as `GET /api/admin/tokens`
/// lists it. The token itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IssuedToken {
    /// The token id (`jti`).
    pub jti: String,
    /// Its subject.
    pub sub: String,
    /// Its display name.
    pub name: String,
    /// Its access role.
    pub role: AccessRole,
    /// The incident it is limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentId>,
    /// When it was issued (its `iat`).
    pub issued_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Who minted it through the API: the minting token's subject and id
    /// (absent for tokens minted with the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted_by: Option<MintedBy>,
    /// How the server learnt of it.
    pub origin: TokenOrigin,
    /// When the server recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// The token that minted another one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MintedBy {
    /// The minting token's subject.
    pub sub: String,
    /// The minting token's id.
    pub jti: String,
}

/// `POST /api/admin/tokens/revoke`: revoke every token minted by a subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevokeMintedBy {
    /// Revoke every recorded token whose `minted_by.sub` is this subject.
    #[schemars(length(min = 1, max = limits::USER_ID_CHARS))]
    pub minted_by: String,
}

/// `POST /api/incidents` request body: declaring an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateIncident {
    /// A short title; required, 1 to 200 characters after trimming.
    #[schemars(length(min = 1, max = limits::TITLE_CHARS))]
    pub title: String,
    /// Severity; absent means "not yet assessed".
    #[serde(default)]
    pub severity: Option<incident::Severity>,
    /// The three declaration questions; absent means "not yet assessed".
    #[serde(default)]
    pub criteria: Option<incident::Criteria>,
    /// One or two sentences on what is happening.
    #[serde(default)]
    #[schemars(length(max = limits::SUMMARY_CHARS))]
    pub summary: Option<String>,
}

/// An incident as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Incident {
    /// `INC-<n>`.
    pub id: IncidentId,
    /// The title given when it was declared.
    pub title: String,
    /// When it was declared (UTC).
    pub created_at: DateTime<Utc>,
    /// Who declared it.
    pub created_by: Actor,
    /// Who is connected to its document right now.
    pub presence: Presence,
    /// The command sidecar's state: roles, pinned status, lifecycle, changes.
    pub state: incident::IncidentState,
}

/// What a command endpoint answers: the events the command produced (already
/// durable) and the incident's state after them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandOutcome {
    /// The new events, in order.
    pub events: Vec<incident::Event>,
    /// The state after them.
    pub state: incident::IncidentState,
}

/// `POST /api/incidents/{id}/share`: mint a link for someone to join one
/// incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShareRequest {
    /// `responder` or `viewer` (admin links cannot be shared).
    pub role: AccessRole,
    /// The display name of the person the link is for.
    #[schemars(length(min = 1, max = limits::NAME_CHARS))]
    pub name: String,
    /// How long the link works, in hours (1 to 168; default 24).
    #[serde(default)]
    pub ttl_hours: Option<u32>,
}

/// A share link: a token limited to one incident, and the URL that signs
/// its holder in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShareLink {
    /// The token (a JWT limited to the incident).
    pub token: String,
    /// `<server>/?token=...`: opens the app signed in.
    pub url: String,
    /// The user id the token carries.
    pub user: UserId,
    /// When the link stops working (UTC).
    pub expires_at: DateTime<Utc>,
}

/// A page of an incident's timeline, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelinePage {
    /// Events with a sequence number above the requested one.
    pub events: Vec<incident::Event>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// A user as recorded on events and records: id and display name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Actor {
    /// The user id (token subject).
    #[schemars(length(max = limits::USER_ID_CHARS))]
    pub id: UserId,
    /// The display name at the time.
    #[schemars(length(max = limits::NAME_CHARS))]
    pub name: String,
}

/// `GET /api/people`: the people the server knows, to pick from wherever a
/// command names a person. Sorted by name, then id; at most
/// [`limits::PEOPLE_LISTED`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PeopleList {
    /// The people, each once, with the name they were last known by.
    pub people: Vec<Actor>,
}

/// Live connection counts for one incident's document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Presence {
    /// Connected responders and admins.
    pub editors: u32,
    /// Connected read-only viewers.
    pub viewers: u32,
}

/// The JSON body of every API error: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable code such as `unauthorized` or `incident_not_found`.
    pub code: String,
    /// What went wrong and, where possible, how to fix it.
    pub message: String,
    /// With `unknown_person`: the id the server does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<UserId>,
    /// With a refused lifecycle move: the unmet exit criteria and open
    /// changes that block it, with their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking: Option<incident::Blocking>,
}

/// Command Post's extensions to the y-websocket protocol: outer message types
/// that stock clients never send and therefore never receive.
pub mod wire {
    /// Outer message type of the opt-in "saved" acknowledgement.
    ///
    /// Framed like any y-protocols custom message: the type, then a
    /// length-prefixed payload (`varBytes`). A client opts in by sending
    /// `[100, 0]` (an empty payload). From then on the server sends
    /// `[100, len, varuint n]` whenever the client's first `n`
    /// document-changing messages on this connection (sync step 2 and update
    /// messages, counted from 1 in the order the client sent them) are
    /// durable in storage. `n` only grows.
    pub const MSG_SAVED: u8 = 100;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_ids_round_trip_and_reject_other_spellings() {
        let id: IncidentId = "INC-42".parse().unwrap();
        assert_eq!(id.number(), 42);
        assert_eq!(id.to_string(), "INC-42");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"INC-42\"");
        for bad in [
            "INC-", "INC-01", "INC--1", "INC-+1", "inc-1", "42", "INC-1x",
        ] {
            assert!(
                bad.parse::<IncidentId>().is_err(),
                "{bad} should be refused"
            );
        }
        assert!(serde_json::from_str::<IncidentId>("\"INC-x\"").is_err());
    }

    #[test]
    fn access_roles_use_lowercase_names() {
        assert_eq!(
            serde_json::to_string(&AccessRole::Viewer).unwrap(),
            "\"viewer\""
        );
        assert_eq!("responder".parse::<AccessRole>(), Ok(AccessRole::Responder));
        assert!("root".parse::<AccessRole>().is_err());
        assert!(!AccessRole::Viewer.can_write());
        assert!(AccessRole::Responder.can_write());
    }
}
