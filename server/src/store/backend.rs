//! The storage engine interface: what a backend provides so that
//! [`Store`](super::Store) (the write queue, group commit, decoding and the
//! quarantine policy) runs on it unchanged. The sled backend
//! ([`super::sled_backend`]) is the first; a PostgreSQL one is the next.

use commandpost_shared::IncidentId;

use super::StoreError;
use crate::quarantine::{QuarantineKind, QuarantineRecord};

/// A storage engine behind [`Store`](super::Store).
///
/// # What is stored
///
/// Records are named by logical identities, never by an engine's keys:
///
/// - the incident counter: the last incident number issued (`n` of `INC-n`);
/// - an incident record, by incident number;
/// - a document's snapshot, one per incident, with `upto`, the last log seq
///   it covers;
/// - a document's log entry (one v1 update), by incident and seq;
/// - a sidecar event, by incident and seq;
/// - a revocation and an issued-token record, by token id (`jti`);
/// - a quarantine record, by an id the backend assigns (opaque to callers,
///   unique, ordered oldest first).
///
/// Payloads are opaque bytes that the store encodes and decodes: v1 updates,
/// event JSON, and the JSON of [`IncidentRecord`](super::IncidentRecord),
/// [`Revocation`](super::Revocation) and
/// [`IssuedToken`](commandpost_shared::IssuedToken). A backend returns them
/// byte for byte as they were written (a PostgreSQL backend keeps them in
/// `bytea`, not `jsonb`, which would rewrite them). Quarantine records are
/// the one payload a backend writes itself: the JSON of [`QuarantineRecord`].
///
/// # Reads
///
/// Reads block (the store calls them from `spawn_blocking`) and run on any
/// thread, concurrently with each other and with [`Backend::commit`]. A read
/// sees every write of every group whose `commit` has returned; it may or
/// may not see writes of a group still being committed.
///
/// A read that meets a stored record whose identity does not decode (only an
/// engine that stores raw keys can have one) skips it and reports it as a
/// [`QuarantineMove`] with [`RecordAt::Found`]; the store moves it aside.
///
/// # Writes
///
/// [`Backend::commit`] is called by the store's one writer thread, never
/// concurrently with itself or with [`Backend::export`]. It applies a group
/// of writes in order and returns only once all of them are durable (fsync
/// or a committed transaction): the store acknowledges nothing before that. If it returns `Err`, every waiter of the group gets
/// the error and none is acknowledged; some of the group may have been
/// applied (a backend that commits the group as one transaction, as a
/// PostgreSQL backend should, applies none). Each write is atomic on its own
/// whatever happens to the group:
///
/// - [`Write::Append`] stores each payload under the seq given. The store
///   hands out seqs per incident in increasing order, gap-free except for
///   seqs that went to the quarantine; the backend never renumbers, and an
///   entry written under a seq replaces one stored under it.
/// - [`Write::AppendEvents`] is insert-only and all-or-nothing: if any of
///   its seqs is already stored (another server appended there first), none
///   of its events is written and its outcome is [`Outcome::Conflict`]
///   (optimistic concurrency: the sidecar then reads what it lacks and
///   retries); otherwise [`Outcome::Done`]. A conflict does not fail the
///   group. A backend shared by several servers must decide this against
///   what the others committed (e.g. PostgreSQL's unique key, waiting for
///   an in-progress insert of the same seq).
/// - [`Write::Compact`] sets the incident's snapshot and removes every log
///   entry of that incident with `seq <= upto`, including those appended
///   earlier in the same group, in one step: never the snapshot without the
///   removal, nor the removal without the snapshot.
/// - [`Write::CreateIncident`] runs as one transaction: read the counter
///   (0 when absent), take `n + 1`, render the content for `INC-(n+1)`, and
///   write the counter, the incident record, the snapshot (`upto` 0) holding
///   the rendered document and the rendered events with seqs 1, 2, …
///   Incident numbers are therefore issued without gaps and never twice. The
///   render function may run again if the transaction is retried. Its
///   outcome is [`Outcome::Created`]; a failed creation does not fail the
///   group.
/// - [`Write::Quarantine`] is a compare-and-move in one transaction: if the
///   record still holds [`QuarantineMove::expected`], insert a
///   [`QuarantineRecord`] (the original bytes as stored, the original key in
///   the engine's terms, the reason, the time) and remove the original;
///   otherwise change nothing. The record's seq must stay visible to
///   [`Backend::quarantined_max_seq`] so that a quarantined seq is never
///   used again. Its outcome is [`Outcome::Moved`]; a failed move does not
///   fail the group.
/// - [`Write::Revoke`] and [`Write::RecordToken`] insert or replace the
///   record of their token id.
///
/// # Backups
///
/// [`Backend::export`] runs while the writer is held (no commit runs) and
/// hands every stored record to the sink once, as one consistent view; a
/// record whose identity does not decode goes out as a quarantine record,
/// bytes kept. [`Backend::import`] loads such records into an empty store
/// (the caller checks [`Backend::is_empty`] and writes nothing else
/// meanwhile) and returns once they are durable.
/// How long [`Backend::check`] may take before it answers "unreachable".
pub const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub trait Backend: Send + Sync + 'static {
    /// The JSON of one incident record.
    fn incident(&self, incident: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// The JSON of every incident record, by incident number.
    fn incidents(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// A document's snapshot and its log entries, in seq order.
    fn doc(&self, incident: u64) -> Result<DocRecords, StoreError>;
    /// The document's records a reader that has applied everything up to
    /// `after` lacks: the snapshot if it covers more than `after`, and the
    /// log entries with `seq > after`, read as one consistent view.
    fn doc_after(&self, incident: u64, after: u64) -> Result<DocRecords, StoreError> {
        let mut records = self.doc(incident)?;
        records.snapshot = records.snapshot.filter(|(upto, _)| *upto > after);
        records.updates.retain(|(seq, _)| *seq > after);
        Ok(records)
    }
    /// Whether this backend assigns document seqs itself
    /// ([`Write::AppendNumbered`]), as one shared by several servers must.
    fn numbers_updates(&self) -> bool {
        false
    }
    /// The incident's events with `seq > after` in seq order, at most
    /// `limit` of them (records reported as damaged do not count).
    fn events_after(
        &self,
        incident: u64,
        after: u64,
        limit: usize,
    ) -> Result<EventRecords, StoreError>;
    /// The JSON of every revocation.
    fn revocations(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Every issued-token record: its token id and JSON.
    fn tokens(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Every quarantine record, oldest first: its id and JSON.
    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError>;
    /// The highest seq among the incident's quarantined records of `kinds`
    /// (a snapshot's seq is its `upto`; a record without a seq counts as 0).
    fn quarantined_max_seq(
        &self,
        incident: u64,
        kinds: &[QuarantineKind],
    ) -> Result<Option<u64>, StoreError>;
    /// Applies `group` in order and makes it durable; one outcome per write.
    fn commit(&self, group: Vec<Write>) -> Result<Vec<Outcome>, StoreError>;
    /// Makes everything applied so far durable (at shutdown).
    fn flush(&self) -> Result<(), StoreError>;
    /// Whether the storage engine is reachable now, answered within about
    /// [`CHECK_TIMEOUT`] (for `/readyz`; it must not queue behind writes).
    /// An embedded engine is always reachable.
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether the store holds no record at all.
    fn is_empty(&self) -> Result<bool, StoreError>;
    /// Hands every stored record to `sink` (see the trait's docs).
    fn export(&self, sink: &mut dyn RecordSink) -> Result<(), StoreError>;
    /// Stores `records` in an empty store, durably.
    fn import(&self, records: &mut dyn Iterator<Item = Record>) -> Result<(), StoreError>;
}

/// A quarantine record's id and its JSON.
pub type Quarantined = (Vec<u8>, Vec<u8>);

/// One write of a group.
pub enum Write {
    /// One v1 update of a document's log.
    Append {
        incident: u64,
        seq: u64,
        update: Vec<u8>,
    },
    /// One v1 update of a document's log under the next seq of the
    /// incident, which the backend assigns in the group's transaction
    /// (outcome [`Outcome::Appended`]); only on a backend whose
    /// [`Backend::numbers_updates`] is true. Seqs are gap-free in commit
    /// order across every server on the database: seq `n + 1` is assigned
    /// only once the group holding `n` committed (or rolled back, taking
    /// `n` with it), so a reader tailing `seq > last` never skips a row
    /// that commits late.
    AppendNumbered {
        incident: u64,
        update: Vec<u8>,
    },
    /// A snapshot replacing the log up to `upto`. On a backend that numbers
    /// updates, a snapshot never replaces one covering more (several
    /// servers may compact one document).
    Compact {
        incident: u64,
        upto: u64,
        snapshot: Vec<u8>,
    },
    /// Sidecar events (JSON) with seqs `first_seq`, `first_seq + 1`, …,
    /// insert-only (outcome [`Outcome::Done`], or [`Outcome::Conflict`] when
    /// a seq is taken and nothing was written).
    AppendEvents {
        incident: u64,
        first_seq: u64,
        events: Vec<Vec<u8>>,
    },
    /// A new incident with the next number and the content rendered for it.
    CreateIncident(RenderIncident),
    Quarantine(QuarantineMove),
    /// A revocation (JSON) for token id `jti`.
    Revoke {
        jti: String,
        record: Vec<u8>,
    },
    /// An issued-token record (JSON) for token id `jti`.
    RecordToken {
        jti: String,
        record: Vec<u8>,
    },
}

/// Renders a new incident's stored content once its id is known.
pub type RenderIncident = Box<dyn Fn(IncidentId) -> NewIncident + Send>;

/// What a new incident is stored with.
pub struct NewIncident {
    /// The incident record (JSON).
    pub record: Vec<u8>,
    /// The document, a v1 update: the snapshot with `upto` 0.
    pub doc: Vec<u8>,
    /// The first events (JSON), seqs 1, 2, …
    pub events: Vec<Vec<u8>>,
}

/// A request to move a stored record that does not load to the quarantine.
#[derive(Clone, Debug)]
pub struct QuarantineMove {
    pub incident: u64,
    pub kind: QuarantineKind,
    pub at: RecordAt,
    /// What the record must still hold for the move to happen: the update,
    /// the snapshot's v1 update or the event as read, or for
    /// [`RecordAt::Found`] the bytes exactly as the backend reported them.
    pub expected: Vec<u8>,
    pub reason: String,
}

/// Which record a [`QuarantineMove`] names.
#[derive(Clone, Debug)]
pub enum RecordAt {
    /// The update or event with this seq, or the snapshot covering up to
    /// this seq.
    Seq(u64),
    /// A record whose own identity does not decode, in the engine's terms,
    /// exactly as the backend reported it from a read.
    Found(Vec<u8>),
}

impl RecordAt {
    /// The seq a quarantine record keeps.
    pub fn seq(&self) -> Option<u64> {
        match self {
            RecordAt::Seq(seq) => Some(*seq),
            RecordAt::Found(_) => None,
        }
    }
}

/// What one write of a committed group did.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// The seq an [`Write::AppendNumbered`] update was stored under.
    Appended(u64),
    /// The new incident's number.
    Created(Result<u64, StoreError>),
    /// The record written to the quarantine, or `None` when the original no
    /// longer held what was expected (another load moved it first).
    Moved(Result<Option<QuarantineRecord>, StoreError>),
    /// A [`Write::AppendEvents`] wrote nothing: one of its seqs was taken.
    Conflict,
}

/// A document as the backend holds it.
#[derive(Debug, Default)]
pub struct DocRecords {
    /// `(upto, v1 update)`.
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// `(seq, v1 update)` in seq order.
    pub updates: Vec<(u64, Vec<u8>)>,
    /// Records skipped because their identity does not decode.
    pub damaged: Vec<QuarantineMove>,
}

/// Events as the backend holds them.
#[derive(Debug, Default)]
pub struct EventRecords {
    /// `(seq, JSON)` in seq order.
    pub events: Vec<(u64, Vec<u8>)>,
    /// Records skipped because their identity does not decode.
    pub damaged: Vec<QuarantineMove>,
}

/// One stored record, as a backup carries it between backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The last incident number issued.
    IncidentCounter(u64),
    Incident {
        incident: u64,
        record: Vec<u8>,
    },
    Snapshot {
        incident: u64,
        upto: u64,
        snapshot: Vec<u8>,
    },
    Update {
        incident: u64,
        seq: u64,
        update: Vec<u8>,
    },
    Event {
        incident: u64,
        seq: u64,
        event: Vec<u8>,
    },
    Revocation {
        jti: String,
        record: Vec<u8>,
    },
    Token {
        jti: String,
        record: Vec<u8>,
    },
    /// A quarantine record. `id` is the exporting backend's; a backend of
    /// the same kind keeps it, another derives its own from the record.
    Quarantined {
        id: Vec<u8>,
        record: Vec<u8>,
    },
}

/// Where [`Backend::export`] puts records.
pub trait RecordSink {
    fn record(&mut self, record: Record) -> Result<(), StoreError>;
}

impl RecordSink for Vec<Record> {
    fn record(&mut self, record: Record) -> Result<(), StoreError> {
        self.push(record);
        Ok(())
    }
}
