//! The sled backend: the on-disk layout of every data directory so far.
//!
//! Layout (sled trees):
//! - `meta`: `next_incident` → the last incident number issued (u64 BE).
//! - `incidents`: incident number (u64 BE) → [`IncidentRecord`](super::IncidentRecord) as JSON.
//! - `docs`: `incident (u64 BE) | 0` → snapshot (`upto_seq u64 BE | v1 update`),
//!   and `incident (u64 BE) | 1 | seq (u64 BE)` → one v1 update of the log.
//!   A snapshot covers every log entry with `seq <= upto_seq`; compaction
//!   writes the snapshot and removes those entries in one atomic batch.
//! - `events`: `incident (u64 BE) | seq (u64 BE)` → one sidecar event, JSON.
//! - `revoked`: token id (`jti`) → [`Revocation`](super::Revocation) as JSON.
//! - `tokens`: token id (`jti`) → [`IssuedToken`](commandpost_shared::IssuedToken)
//!   as JSON: every token the server minted, or saw for the first time.
//! - `quarantine`: `quarantined_at (µs since the epoch, u64 BE) | incident
//!   (u64 BE) | kind (b'u' update, b's' snapshot, b'e' event) | seq (u64 BE;
//!   a snapshot's `upto_seq`; 0 when unknown) | original key` →
//!   [`QuarantineRecord`] as JSON, which keeps the original bytes. A moved
//!   record is inserted here and removed from its tree in one transaction.
//!
//! A group is applied as one batch per tree (the `docs` and `events`
//! batches are applied before a creation or a quarantine move, which run as
//! transactions and must see them), then flushed once.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use commandpost_shared::IncidentId;

use super::StoreError;
use super::backend::{
    Backend, DocRecords, EventRecords, NewIncident, Outcome, QuarantineMove, Quarantined, Record,
    RecordAt, RecordSink, RenderIncident, Write,
};
use crate::quarantine::{KindOfRecord, QuarantineKind, QuarantineRecord};

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Engine(Arc::new(error))
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(error: sled::transaction::TransactionError<StoreError>) -> Self {
        match error {
            sled::transaction::TransactionError::Abort(error) => error,
            sled::transaction::TransactionError::Storage(error) => error.into(),
        }
    }
}

/// Whether sled refused to open because another handle holds its lock.
/// sled reports it as an `Other` I/O error whose message wraps the
/// `WouldBlock` of `flock`, so the message is all there is to go by.
pub fn is_locked(error: &StoreError) -> bool {
    let StoreError::Engine(error) = error else {
        return false;
    };
    matches!(error.downcast_ref::<sled::Error>(), Some(sled::Error::Io(io))
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
}

/// The sled database of a data directory and its trees.
pub struct SledBackend {
    db: sled::Db,
    meta: sled::Tree,
    incidents: sled::Tree,
    docs: sled::Tree,
    events: sled::Tree,
    revoked: sled::Tree,
    tokens: sled::Tree,
    quarantine: sled::Tree,
}

const COUNTER: &str = "next_incident";

impl SledBackend {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            incidents: db.open_tree("incidents")?,
            docs: db.open_tree("docs")?,
            events: db.open_tree("events")?,
            revoked: db.open_tree("revoked")?,
            tokens: db.open_tree("tokens")?,
            quarantine: db.open_tree("quarantine")?,
            db,
        })
    }

    /// Every tree with its name, in export order.
    fn trees(&self) -> [(&'static str, &sled::Tree); 7] {
        [
            ("meta", &self.meta),
            ("incidents", &self.incidents),
            ("docs", &self.docs),
            ("events", &self.events),
            ("revoked", &self.revoked),
            ("tokens", &self.tokens),
            ("quarantine", &self.quarantine),
        ]
    }

    fn tree_of(&self, kind: QuarantineKind) -> &sled::Tree {
        match kind {
            QuarantineKind::Update | QuarantineKind::Snapshot => &self.docs,
            QuarantineKind::Event => &self.events,
        }
    }

    /// Moves a record into the quarantine in one transaction, if it still
    /// holds what is expected.
    fn quarantine(&self, request: &QuarantineMove) -> Result<Option<QuarantineRecord>, StoreError> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionResult;
        let incident = request.incident;
        let (key, expected) = match (&request.at, request.kind) {
            (RecordAt::Seq(seq), QuarantineKind::Update) => {
                (log_key(incident, *seq).to_vec(), request.expected.clone())
            }
            (RecordAt::Seq(upto), QuarantineKind::Snapshot) => (
                snapshot_key(incident).to_vec(),
                snapshot_value(*upto, &request.expected),
            ),
            (RecordAt::Seq(seq), QuarantineKind::Event) => {
                (event_key(incident, *seq).to_vec(), request.expected.clone())
            }
            (RecordAt::Found(key), _) => (key.clone(), request.expected.clone()),
        };
        let (record_key, record) = quarantine_entry(
            Utc::now(),
            incident,
            request.kind,
            request.at.seq(),
            &key,
            &expected,
            &request.reason,
        );
        let json = serde_json::to_vec(&record).expect("quarantine records serialise");
        let moved = (&self.quarantine, self.tree_of(request.kind)).transaction(
            |(quarantine, source)| -> ConflictableTransactionResult<bool, StoreError> {
                if source.get(&key)?.as_deref() != Some(expected.as_slice()) {
                    return Ok(false);
                }
                quarantine.insert(record_key.as_slice(), json.as_slice())?;
                source.remove(key.as_slice())?;
                Ok(true)
            },
        )?;
        Ok(moved.then_some(record))
    }

    /// Creates the next incident in one transaction; its number.
    fn create_incident(&self, render: &RenderIncident) -> Result<u64, StoreError> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError as Conflict;
        let number = (&self.meta, &self.incidents, &self.docs, &self.events).transaction(
            |(meta, incidents, docs, events)| {
                let last = match meta.get(COUNTER)? {
                    Some(bytes) => counter(&bytes).map_err(Conflict::Abort)?,
                    None => 0,
                };
                let number = last + 1;
                // Rendered inside the transaction because only here is the id
                // known; a retried transaction renders again, which is harmless.
                let NewIncident {
                    record,
                    doc,
                    events: initial,
                } = render(IncidentId::new(number));
                meta.insert(COUNTER, &number.to_be_bytes())?;
                incidents.insert(&number.to_be_bytes(), record)?;
                docs.insert(&snapshot_key(number), snapshot_value(0, &doc))?;
                for (index, event) in initial.into_iter().enumerate() {
                    events.insert(&event_key(number, index as u64 + 1), event)?;
                }
                Ok(number)
            },
        )?;
        Ok(number)
    }
}

/// The `docs` and `events` batches of a group, applied before anything
/// that must see them and at the end.
#[derive(Default)]
struct Batches {
    docs: sled::Batch,
    events: sled::Batch,
    /// Log keys inserted by this batch, so a compaction in the same group
    /// removes them too (a batch keeps only the last write per key).
    appended: Vec<(u64, u64)>,
    dirty: bool,
}

impl Batches {
    fn apply(&mut self, backend: &SledBackend) -> Result<(), StoreError> {
        if !std::mem::take(&mut self.dirty) {
            return Ok(());
        }
        self.appended.clear();
        backend.docs.apply_batch(std::mem::take(&mut self.docs))?;
        backend
            .events
            .apply_batch(std::mem::take(&mut self.events))?;
        Ok(())
    }
}

impl Backend for SledBackend {
    fn incident(&self, incident: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .incidents
            .get(incident.to_be_bytes())?
            .map(|bytes| bytes.to_vec()))
    }

    fn incidents(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        values(&self.incidents)
    }

    fn doc(&self, incident: u64) -> Result<DocRecords, StoreError> {
        let mut found = DocRecords::default();
        let snapshot = self
            .docs
            .get(snapshot_key(incident))?
            .map(|value| (sled::IVec::from(&snapshot_key(incident)[..]), value));
        for entry in snapshot
            .into_iter()
            .map(Ok)
            .chain(self.docs.scan_prefix(log_prefix(incident)))
        {
            let (key, value) = entry?;
            match doc_entry(&key, &value) {
                Ok(Record::Snapshot { upto, snapshot, .. }) => {
                    found.snapshot = Some((upto, snapshot));
                }
                Ok(Record::Update { seq, update, .. }) => found.updates.push((seq, update)),
                Ok(_) => unreachable!("a docs entry is a snapshot or an update"),
                Err(damaged) => found.damaged.push(damaged),
            }
        }
        Ok(found)
    }

    fn events_after(
        &self,
        incident: u64,
        after: u64,
        limit: usize,
    ) -> Result<EventRecords, StoreError> {
        let start = event_key(incident, after.saturating_add(1));
        let end = event_key(incident, u64::MAX);
        let mut found = EventRecords::default();
        for entry in self.events.range(start..=end) {
            if found.events.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            match event_entry(&key, &value) {
                Ok(Record::Event { seq, event, .. }) => found.events.push((seq, event)),
                Ok(_) => unreachable!("an events entry is an event"),
                Err(damaged) => found.damaged.push(damaged),
            }
        }
        Ok(found)
    }

    fn revocations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        values(&self.revoked)
    }

    fn tokens(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.tokens
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((String::from_utf8_lossy(&key).into_owned(), value.to_vec()))
            })
            .collect()
    }

    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        self.quarantine
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn quarantined_max_seq(
        &self,
        incident: u64,
        kinds: &[QuarantineKind],
    ) -> Result<Option<u64>, StoreError> {
        let mut highest = None;
        for key in self.quarantine.iter().keys() {
            let key = key?;
            if key.len() < QUARANTINE_SEQ.end
                || key[QUARANTINE_INCIDENT] != incident.to_be_bytes()
                || !kinds.iter().any(|kind| kind.tag() == key[QUARANTINE_KIND])
            {
                continue;
            }
            highest = highest.max(Some(be_u64(&key[QUARANTINE_SEQ])));
        }
        Ok(highest)
    }

    fn commit(&self, group: Vec<Write>) -> Result<Vec<Outcome>, StoreError> {
        let mut batches = Batches::default();
        let mut outcomes = Vec::with_capacity(group.len());
        // Event keys written by this group so far (not yet in the tree).
        let mut events_queued = std::collections::HashSet::new();
        // The first failure; the group goes on so that every write has an
        // outcome, but it is not applied further and not flushed.
        let mut failed: Option<StoreError> = None;
        let mut note = |result: Result<(), StoreError>| {
            if let Err(error) = result {
                failed.get_or_insert(error);
            }
        };
        for write in group {
            outcomes.push(match write {
                Write::Append {
                    incident,
                    seq,
                    update,
                } => {
                    batches.docs.insert(&log_key(incident, seq), update);
                    batches.appended.push((incident, seq));
                    batches.dirty = true;
                    Outcome::Done
                }
                Write::AppendNumbered { incident, .. } => {
                    note(Err(StoreError::Corrupt(format!(
                        "incident {incident}: the sled backend stores updates under the seqs \
                         the room gives them (a numbered append reached it)"
                    ))));
                    Outcome::Done
                }
                Write::Compact {
                    incident,
                    upto,
                    snapshot,
                } => {
                    // Entries of this incident already in the tree, and those
                    // queued earlier in this very batch.
                    batches
                        .docs
                        .insert(&snapshot_key(incident), snapshot_value(upto, &snapshot));
                    let end = log_key(incident, upto);
                    for key in self.docs.range(log_key(incident, 0)..=end).keys() {
                        match key {
                            Ok(key) => batches.docs.remove(key),
                            Err(error) => note(Err(error.into())),
                        }
                    }
                    for &(appended, seq) in &batches.appended {
                        if appended == incident && seq <= upto {
                            batches.docs.remove(&log_key(incident, seq));
                        }
                    }
                    batches.dirty = true;
                    Outcome::Done
                }
                Write::AppendEvents {
                    incident,
                    first_seq,
                    events,
                } => {
                    // Insert-only: a seq stored, or taken earlier in this
                    // group, makes the whole append a conflict.
                    let keys: Vec<_> = (0..events.len() as u64)
                        .map(|offset| event_key(incident, first_seq + offset))
                        .collect();
                    let mut taken = false;
                    for key in &keys {
                        match self.events.contains_key(key) {
                            Ok(stored) => taken |= stored || events_queued.contains(key),
                            Err(error) => note(Err(error.into())),
                        }
                    }
                    if taken {
                        Outcome::Conflict
                    } else {
                        for (key, event) in keys.into_iter().zip(events) {
                            batches.events.insert(&key, event);
                            events_queued.insert(key);
                        }
                        batches.dirty = true;
                        Outcome::Done
                    }
                }
                Write::CreateIncident(render) => {
                    // Earlier writes of this group must land first.
                    note(batches.apply(self));
                    Outcome::Created(self.create_incident(&render))
                }
                Write::Quarantine(request) => {
                    // Earlier writes of this group land first, so the record
                    // compared is the one the loader would read now.
                    note(batches.apply(self));
                    Outcome::Moved(self.quarantine(&request))
                }
                Write::Revoke { jti, record } => {
                    note(insert(&self.revoked, jti.as_bytes(), record));
                    Outcome::Done
                }
                Write::RecordToken { jti, record } => {
                    note(insert(&self.tokens, jti.as_bytes(), record));
                    Outcome::Done
                }
            });
        }
        match failed {
            Some(error) => Err(error),
            None => batches
                .apply(self)
                .and_then(|()| self.flush())
                .map(|()| outcomes),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.trees().iter().all(|(_, tree)| tree.is_empty()))
    }

    fn export(&self, sink: &mut dyn RecordSink) -> Result<(), StoreError> {
        let now = Utc::now();
        for (name, tree) in self.trees() {
            for entry in tree.iter() {
                let (key, value) = entry?;
                if let Some(record) = record_of(name.as_bytes(), &key, &value, now)? {
                    sink.record(record)?;
                }
            }
        }
        Ok(())
    }

    fn import(&self, records: &mut dyn Iterator<Item = Record>) -> Result<(), StoreError> {
        for record in records {
            let (tree, key, value) = match record {
                Record::IncidentCounter(last) => {
                    (&self.meta, COUNTER.into(), last.to_be_bytes().to_vec())
                }
                Record::Incident { incident, record } => {
                    (&self.incidents, incident.to_be_bytes().to_vec(), record)
                }
                Record::Snapshot {
                    incident,
                    upto,
                    snapshot,
                } => (
                    &self.docs,
                    snapshot_key(incident).to_vec(),
                    snapshot_value(upto, &snapshot),
                ),
                Record::Update {
                    incident,
                    seq,
                    update,
                } => (&self.docs, log_key(incident, seq).to_vec(), update),
                Record::Event {
                    incident,
                    seq,
                    event,
                } => (&self.events, event_key(incident, seq).to_vec(), event),
                Record::Revocation { jti, record } => (&self.revoked, jti.into_bytes(), record),
                Record::Token { jti, record } => (&self.tokens, jti.into_bytes(), record),
                // The key follows from the record (for a record this backend
                // wrote, it is `id` again); one that does not decode keeps
                // the id it came with.
                Record::Quarantined { id, record } => {
                    let key = quarantine_key_of(&record).unwrap_or(id);
                    (&self.quarantine, key, record)
                }
            };
            tree.insert(key, value)?;
        }
        self.flush()
    }
}

/// The sled key of a quarantine record, from its JSON.
fn quarantine_key_of(record: &[u8]) -> Option<Vec<u8>> {
    let record: QuarantineRecord = serde_json::from_slice(record).ok()?;
    let original = crate::quarantine::unhex(&record.original_key)
        .unwrap_or_else(|| record.original_key.into_bytes());
    Some(quarantine_key(
        record.quarantined_at,
        record.incident.number(),
        record.kind,
        record.seq.unwrap_or(0),
        &original,
    ))
}

/// The record of one entry of the tree `tree` (`None` for what no
/// record holds, such as sled's default tree). An entry whose identity does
/// not decode comes out as a quarantine record made at `now`.
fn record_of(
    tree: &[u8],
    key: &[u8],
    value: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Record>, StoreError> {
    let entry = match tree {
        b"meta" if key == COUNTER.as_bytes() => Ok(Record::IncidentCounter(counter(value)?)),
        b"incidents" => match <[u8; 8]>::try_from(key) {
            Ok(number) => Ok(Record::Incident {
                incident: u64::from_be_bytes(number),
                record: value.to_vec(),
            }),
            Err(_) => {
                return Err(StoreError::Corrupt(format!(
                    "an incident key of {} bytes instead of 8",
                    key.len()
                )));
            }
        },
        b"docs" => doc_entry(key, value),
        b"events" => event_entry(key, value),
        b"revoked" => Ok(Record::Revocation {
            jti: token_id(key)?,
            record: value.to_vec(),
        }),
        b"tokens" => Ok(Record::Token {
            jti: token_id(key)?,
            record: value.to_vec(),
        }),
        b"quarantine" => Ok(Record::Quarantined {
            id: key.to_vec(),
            record: value.to_vec(),
        }),
        _ => return Ok(None),
    };
    Ok(Some(entry.unwrap_or_else(|damaged| {
        let (id, record) = quarantine_entry(
            now,
            damaged.incident,
            damaged.kind,
            None,
            key,
            value,
            &format!(
                "{} (found by a backup, which carries it as a quarantine record)",
                damaged.reason
            ),
        );
        Record::Quarantined {
            id,
            record: serde_json::to_vec(&record).expect("quarantine records serialise"),
        }
    })))
}

/// One tree of a `COMMANDPOST-BACKUP-1` file, which copied a sled database
/// tree by tree: its name and its entries in key order.
pub type TreeCopy = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// The records of a copy of a sled database's trees, once it matches
/// `checksum`, sled's checksum of the database it was copied from
/// (`Db::checksum`: CRC-32 over each tree's name and then its keys and
/// values, trees in name order).
pub fn records_of_copy(trees: &[TreeCopy], checksum: u32) -> Result<Vec<Record>, StoreError> {
    let mut by_name: Vec<&TreeCopy> = trees.iter().collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    let mut crc = flate2::Crc::new();
    for (name, entries) in by_name {
        crc.update(name);
        for (key, value) in entries {
            crc.update(key);
            crc.update(value);
        }
    }
    if crc.sum() != checksum {
        return Err(StoreError::Corrupt(format!(
            "the copied trees' checksum {:08x} differs from the recorded {checksum:08x}",
            crc.sum()
        )));
    }
    let now = Utc::now();
    let mut records = Vec::new();
    for (name, entries) in trees {
        for (key, value) in entries {
            records.extend(record_of(name, key, value, now)?);
        }
    }
    Ok(records)
}

/// What a `docs` entry holds, or the move that puts it aside.
fn doc_entry(key: &[u8], value: &[u8]) -> Result<Record, QuarantineMove> {
    let incident = key.get(..8).map_or(0, be_u64);
    let damaged = |kind, reason| QuarantineMove {
        incident,
        kind,
        at: RecordAt::Found(key.to_vec()),
        expected: value.to_vec(),
        reason,
    };
    match (key.len(), key.get(8)) {
        (9, Some(0)) => match value.get(..8) {
            Some(upto) => Ok(Record::Snapshot {
                incident,
                upto: be_u64(upto),
                snapshot: value[8..].to_vec(),
            }),
            // Not even its header: the document loads from the log.
            None => Err(damaged(
                QuarantineKind::Snapshot,
                format!("the snapshot is truncated to {} bytes", value.len()),
            )),
        },
        (17, Some(1)) => Ok(Record::Update {
            incident,
            seq: be_u64(&key[9..]),
            update: value.to_vec(),
        }),
        (len, Some(1)) => Err(damaged(
            QuarantineKind::Update,
            format!("a log key of {len} bytes instead of 17"),
        )),
        (len, _) => Err(damaged(
            QuarantineKind::Update,
            format!("a document key of {len} bytes that names neither a snapshot nor a log entry"),
        )),
    }
}

/// What an `events` entry holds, or the move that puts it aside.
fn event_entry(key: &[u8], value: &[u8]) -> Result<Record, QuarantineMove> {
    if key.len() != 16 {
        return Err(QuarantineMove {
            incident: key.get(..8).map_or(0, be_u64),
            kind: QuarantineKind::Event,
            at: RecordAt::Found(key.to_vec()),
            expected: value.to_vec(),
            reason: format!("an event key of {} bytes instead of 16", key.len()),
        });
    }
    Ok(Record::Event {
        incident: be_u64(&key[..8]),
        seq: be_u64(&key[8..]),
        event: value.to_vec(),
    })
}

fn insert(tree: &sled::Tree, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
    tree.insert(key, value)?;
    Ok(())
}

fn values(tree: &sled::Tree) -> Result<Vec<Vec<u8>>, StoreError> {
    tree.iter()
        .values()
        .map(|value| Ok(value?.to_vec()))
        .collect()
}

fn token_id(key: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(key.to_vec())
        .map_err(|error| StoreError::Corrupt(format!("a token id that is not UTF-8: {error}")))
}

fn counter(bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("incident counter is not 8 bytes".into()))
}

/// A big-endian u64 of exactly 8 bytes (callers slice them).
fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

fn snapshot_value(upto: u64, snapshot: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + snapshot.len());
    value.extend_from_slice(&upto.to_be_bytes());
    value.extend_from_slice(snapshot);
    value
}

fn snapshot_key(incident: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&incident.to_be_bytes());
    key
}

fn log_prefix(incident: u64) -> [u8; 9] {
    let mut key = snapshot_key(incident);
    key[8] = 1;
    key
}

fn event_key(incident: u64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&incident.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn log_key(incident: u64, seq: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..9].copy_from_slice(&log_prefix(incident));
    key[9..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// A quarantine record and its key: ordered by time, unique because the
/// original key it ends with is removed when the record is written.
fn quarantine_entry(
    at: DateTime<Utc>,
    incident: u64,
    kind: QuarantineKind,
    seq: Option<u64>,
    original: &[u8],
    bytes: &[u8],
    reason: &str,
) -> (Vec<u8>, QuarantineRecord) {
    let key = quarantine_key(at, incident, kind, seq.unwrap_or(0), original);
    let record = QuarantineRecord {
        incident: IncidentId::new(incident),
        kind,
        seq,
        original_key: crate::quarantine::hex(original),
        reason: reason.to_owned(),
        quarantined_at: at,
        size: bytes.len(),
        bytes: Some(crate::quarantine::hex(bytes)),
    };
    (key, record)
}

fn quarantine_key(
    at: DateTime<Utc>,
    incident: u64,
    kind: QuarantineKind,
    seq: u64,
    original: &[u8],
) -> Vec<u8> {
    let micros = u64::try_from(at.timestamp_micros()).unwrap_or(0);
    let mut key = Vec::with_capacity(25 + original.len());
    key.extend_from_slice(&micros.to_be_bytes());
    key.extend_from_slice(&incident.to_be_bytes());
    key.push(kind.tag());
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(original);
    key
}

/// Where a quarantine key keeps the incident, the kind and the seq.
const QUARANTINE_INCIDENT: std::ops::Range<usize> = 8..16;
const QUARANTINE_KIND: usize = 16;
const QUARANTINE_SEQ: std::ops::Range<usize> = 17..25;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::tests::incident;

    fn open(dir: &Path) -> (Arc<SledBackend>, Store) {
        let backend = Arc::new(SledBackend::open(dir).unwrap());
        let store = Store::with_backend(backend.clone()).unwrap();
        (backend, store)
    }

    #[tokio::test]
    async fn a_truncated_snapshot_is_moved_aside_and_the_log_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, store) = open(dir.path());
        let id = incident(&store, "truncated").await.id;
        for seq in 1..=2u64 {
            store
                .append(&id, seq, vec![seq as u8])
                .unwrap()
                .await
                .unwrap()
                .unwrap();
        }
        backend
            .docs
            .insert(snapshot_key(id.number()), &[1u8, 2, 3][..])
            .unwrap();
        let stored = store.load_doc(&id).unwrap();
        assert_eq!(stored.snapshot, None);
        assert_eq!(stored.updates.len(), 2);
        store.barrier().unwrap().await.unwrap().unwrap();
        let records = store.quarantined().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1.kind, QuarantineKind::Snapshot);
        assert_eq!(records[0].1.seq, None);
        assert_eq!(
            crate::quarantine::unhex(records[0].1.bytes.as_deref().unwrap_or_default()).unwrap(),
            [1, 2, 3]
        );
        assert_eq!(backend.docs.get(snapshot_key(id.number())).unwrap(), None);
    }

    #[tokio::test]
    async fn an_export_carries_entries_without_an_identity_as_quarantine_records() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, store) = open(dir.path());
        let id = incident(&store, "odd keys").await.id;
        let mut odd = log_prefix(id.number()).to_vec();
        odd.extend_from_slice(b"abc");
        backend.docs.insert(&odd, &b"update"[..]).unwrap();
        let exported = store.export(Vec::new()).await.unwrap();
        let quarantined: Vec<QuarantineRecord> = exported
            .iter()
            .filter_map(|record| match record {
                Record::Quarantined { record, .. } => Some(serde_json::from_slice(record).unwrap()),
                _ => None,
            })
            .collect();
        assert_eq!(quarantined.len(), 1, "{exported:?}");
        assert_eq!(quarantined[0].incident, id);
        assert_eq!(quarantined[0].kind, QuarantineKind::Update);
        assert_eq!(quarantined[0].original_key, crate::quarantine::hex(&odd));
        assert_eq!(
            quarantined[0].bytes.as_deref(),
            Some(crate::quarantine::hex(b"update").as_str())
        );
        assert!(
            quarantined[0].reason.contains("a log key of 12 bytes"),
            "{}",
            quarantined[0].reason
        );
        // The rest goes out as it is: the counter, the record, the snapshot
        // and the declaration.
        assert_eq!(exported.len(), 5, "{exported:?}");
        assert!(exported.contains(&Record::IncidentCounter(1)));
    }

    #[tokio::test]
    async fn a_copy_of_the_trees_is_checked_against_sleds_checksum_and_reads_as_the_export() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, store) = open(dir.path());
        let id = incident(&store, "copied").await.id;
        store
            .append(&id, 1, b"one".to_vec())
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        store
            .quarantine_update(&id, 1, b"one", "test".into())
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        let copy: Vec<TreeCopy> = backend
            .db
            .tree_names()
            .into_iter()
            .map(|name| {
                let tree = backend.db.open_tree(&name).unwrap();
                let entries = tree
                    .iter()
                    .map(|entry| {
                        let (key, value) = entry.unwrap();
                        (key.to_vec(), value.to_vec())
                    })
                    .collect();
                (name.to_vec(), entries)
            })
            .collect();
        let checksum = backend.db.checksum().unwrap();
        let sorted = |records: Vec<Record>| {
            let mut text: Vec<String> = records.iter().map(|r| format!("{r:?}")).collect();
            text.sort();
            text
        };
        assert_eq!(
            sorted(records_of_copy(&copy, checksum).unwrap()),
            sorted(store.export(Vec::new()).await.unwrap())
        );
        let error = records_of_copy(&copy, checksum ^ 1).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
    }
}
