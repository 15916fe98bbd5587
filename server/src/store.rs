//! Durable storage on sled, behind a narrow interface.
//!
//! Every write goes through one dedicated writer thread that performs group
//! commit: it takes everything queued, applies it as one atomic batch per
//! tree, flushes once (`fsync`), and only then completes each write's
//! acknowledgement. Reads go straight to sled, which is safe from any thread.
//!
//! Layout (sled trees):
//! - `meta`: `next_incident` → the last incident number issued (u64 BE).
//! - `incidents`: incident number (u64 BE) → [`IncidentRecord`] as JSON.
//! - `docs`: `incident (u64 BE) | 0` → snapshot (`upto_seq u64 BE | v1 update`),
//!   and `incident (u64 BE) | 1 | seq (u64 BE)` → one v1 update of the log.
//!   A snapshot covers every log entry with `seq <= upto_seq`; compaction
//!   writes the snapshot and removes those entries in one atomic batch.
//!
//! - `revoked`: token id (`jti`) → [`Revocation`] as JSON.
//! - `tokens`: token id (`jti`) → [`IssuedToken`] as JSON: every token the
//!   server minted, or saw for the first time.
//! - `quarantine`: `quarantined_at (µs since the epoch, u64 BE) | incident
//!   (u64 BE) | kind (b'u' update, b's' snapshot, b'e' event) | seq (u64 BE;
//!   a snapshot's `upto_seq`) | original key` →
//!   [`QuarantineRecord`](crate::quarantine::QuarantineRecord) as JSON, which
//!   keeps the original bytes. A stored record that no longer loads is moved
//!   here: inserted and removed from its tree in one transaction.
//!
//! Invariants: nothing is acknowledged before `flush` returned; a failed
//! write or flush is reported to every waiter, never swallowed; rooms never
//! touch sled, only this module does.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use chrono::{DateTime, Utc};
use commandpost_shared::{Actor, IncidentId, IssuedToken};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::quarantine::{QuarantineKind, QuarantineRecord, hex};

/// Storage failures. Always carries the cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(Arc<sled::Error>),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the storage writer has stopped")]
    WriterGone,
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Sled(Arc::new(error))
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

/// An incident as stored. Internal: the API shape is [`commandpost_shared::Incident`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub id: IncidentId,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
}

/// A document as stored: the latest snapshot and the log after it.
#[derive(Debug, Default)]
pub struct StoredDoc {
    pub snapshot: Option<Vec<u8>>,
    /// The last log seq the snapshot covers (0 without a snapshot).
    pub snapshot_upto: u64,
    /// `(seq, v1 update)` in sequence order.
    pub updates: Vec<(u64, Vec<u8>)>,
    /// The sequence number the next appended update must use.
    pub next_seq: u64,
}

/// Counters describing group commit, for the benchmarks and `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub flushes: AtomicU64,
    pub writes_flushed: AtomicU64,
}

type Ack = oneshot::Sender<Result<(), StoreError>>;

/// What a new incident starts with: its document (a v1 update) and its first
/// sidecar events (JSON, seq 1, 2, ...).
pub struct InitialContent {
    pub doc: Vec<u8>,
    pub events: Vec<Vec<u8>>,
}

/// Renders a new incident's initial content from its id; runs on the writer
/// thread once the id is known.
pub type InitialDoc = Box<dyn Fn(&IncidentId) -> InitialContent + Send>;

enum WriteOp {
    Append {
        incident: u64,
        seq: u64,
        update: Vec<u8>,
        done: Option<Ack>,
    },
    Compact {
        incident: u64,
        upto_seq: u64,
        snapshot: Vec<u8>,
    },
    AppendEvents {
        incident: u64,
        first_seq: u64,
        events: Vec<Vec<u8>>,
        done: Ack,
    },
    CreateIncident {
        title: String,
        created_by: Actor,
        created_at: DateTime<Utc>,
        initial_doc: InitialDoc,
        done: oneshot::Sender<Result<IncidentRecord, StoreError>>,
    },
    Barrier {
        done: Ack,
    },
    /// Moves `key` (still holding `expected`) into the quarantine.
    Quarantine {
        incident: IncidentId,
        kind: QuarantineKind,
        seq: Option<u64>,
        key: Vec<u8>,
        expected: Vec<u8>,
        reason: String,
        done: Option<oneshot::Sender<Result<bool, StoreError>>>,
    },
    Revoke {
        jti: String,
        record: Vec<u8>,
        done: Ack,
    },
    /// Records an issued token; `done` is `None` when nobody waits.
    RecordToken {
        jti: String,
        record: Vec<u8>,
        done: Option<Ack>,
    },
    /// Holds the writer after everything queued before it is durable, until
    /// the backup that asked for it is done (consistent online backups).
    Hold {
        held: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

/// A revoked token, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Revocation {
    pub jti: String,
    pub revoked_at: DateTime<Utc>,
    pub revoked_by: String,
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    incidents: sled::Tree,
    docs: sled::Tree,
    events: sled::Tree,
    revoked: sled::Tree,
    tokens: sled::Tree,
    quarantine: sled::Tree,
    writer: mpsc::UnboundedSender<WriteOp>,
    /// The writer thread, joined by [`Store::close`].
    thread: Arc<parking_lot::Mutex<Option<thread::JoinHandle<()>>>>,
    stats: Arc<StoreStats>,
}

/// How many queued writes one group commit takes at most.
const MAX_GROUP: usize = 8192;

impl Store {
    /// Opens (or creates) the store in `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let meta = db.open_tree("meta")?;
        let incidents = db.open_tree("incidents")?;
        let docs = db.open_tree("docs")?;
        let events = db.open_tree("events")?;
        let revoked = db.open_tree("revoked")?;
        let tokens = db.open_tree("tokens")?;
        let quarantine = db.open_tree("quarantine")?;
        let (writer, queue) = mpsc::unbounded_channel();
        let stats = Arc::new(StoreStats::default());
        let worker = Writer {
            db: db.clone(),
            meta,
            incidents: incidents.clone(),
            docs: docs.clone(),
            events: events.clone(),
            revoked: revoked.clone(),
            tokens: tokens.clone(),
            quarantine: quarantine.clone(),
            stats: stats.clone(),
        };
        let thread = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || worker.run(queue))
            .map_err(|error| StoreError::Corrupt(format!("cannot start writer thread: {error}")))?;
        Ok(Self {
            db,
            incidents,
            docs,
            events,
            revoked,
            tokens,
            quarantine,
            writer,
            thread: Arc::new(parking_lot::Mutex::new(Some(thread))),
            stats,
        })
    }

    /// Opens the store like [`Store::open`], waiting up to `patience` while
    /// another handle of this process still holds the database's lock
    /// (sled releases it when its last background job ends, a moment after
    /// the handle is closed). Other errors are returned at once.
    pub fn open_when_unlocked(
        dir: &Path,
        patience: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        loop {
            match Self::open(dir) {
                Err(StoreError::Sled(error))
                    if is_locked(&error) && started.elapsed() < patience =>
                {
                    thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Runs `f` on the database while no write happens: everything queued
    /// before is durable, and writes queued meanwhile wait. For consistent
    /// online backups.
    pub async fn while_held<R: Send + 'static>(
        &self,
        f: impl FnOnce(&sled::Db) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (held, is_held) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel();
        self.send(WriteOp::Hold {
            held,
            release: released,
        })?;
        is_held.await.map_err(|_| StoreError::WriterGone)?;
        let db = self.db.clone();
        let out = tokio::task::spawn_blocking(move || {
            let out = f(&db);
            let _ = release.send(());
            out
        })
        .await
        .map_err(|error| StoreError::Corrupt(format!("backup task failed: {error}")))?;
        Ok(out)
    }

    /// Records a revoked token durably.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::Revoke {
            jti: revocation.jti.clone(),
            record: serde_json::to_vec(revocation).expect("revocations serialise"),
            done,
        })?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records an issued token. The returned receiver completes once the
    /// record is durable; dropping it does not cancel the write.
    pub fn record_token(
        &self,
        token: &IssuedToken,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::RecordToken {
            jti: token.jti.clone(),
            record: serde_json::to_vec(token).expect("token records serialise"),
            done: Some(done),
        })?;
        Ok(wait)
    }

    /// Every recorded token, in no particular order. A record that does not
    /// decode is skipped with a log line (it only lists tokens).
    pub fn issued_tokens(&self) -> Result<Vec<IssuedToken>, StoreError> {
        let mut tokens = Vec::new();
        for entry in self.tokens.iter() {
            let (key, bytes) = entry?;
            match serde_json::from_slice(&bytes) {
                Ok(token) => tokens.push(token),
                Err(error) => tracing::error!(
                    jti = %String::from_utf8_lossy(&key),
                    %error,
                    "skipped a token record that does not decode"
                ),
            }
        }
        Ok(tokens)
    }

    /// Every revoked token.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.revoked
            .iter()
            .map(|entry| {
                let (_, bytes) = entry?;
                serde_json::from_slice(&bytes)
                    .map_err(|error| StoreError::Corrupt(format!("revocation: {error}")))
            })
            .collect()
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Creates an incident with the next sequential id and its initial
    /// document, durably, in one transaction.
    pub async fn create_incident(
        &self,
        title: String,
        created_by: Actor,
        created_at: DateTime<Utc>,
        initial_doc: impl Fn(&IncidentId) -> InitialContent + Send + 'static,
    ) -> Result<IncidentRecord, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::CreateIncident {
            title,
            created_by,
            created_at,
            initial_doc: Box::new(initial_doc),
            done,
        })?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }

    pub fn get_incident(&self, id: &IncidentId) -> Result<Option<IncidentRecord>, StoreError> {
        match self.incidents.get(id.number().to_be_bytes())? {
            Some(bytes) => decode_incident(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every incident, oldest first.
    pub fn list_incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        self.incidents
            .iter()
            .map(|entry| {
                let (_, bytes) = entry?;
                decode_incident(&bytes)
            })
            .collect()
    }

    /// Reads a document's snapshot and log. Blocking: call from
    /// `spawn_blocking`.
    pub fn load_doc(&self, id: &IncidentId) -> Result<StoredDoc, StoreError> {
        let incident = id.number();
        let mut doc = StoredDoc::default();
        if let Some(value) = self.docs.get(snapshot_key(incident))? {
            match value.get(..8) {
                Some(upto) => {
                    let upto = u64::from_be_bytes(upto.try_into().expect("8 bytes"));
                    doc.snapshot = Some(value[8..].to_vec());
                    doc.snapshot_upto = upto;
                    doc.next_seq = upto.saturating_add(1);
                }
                // Not even its header: the document loads from the log.
                None => self.move_aside(
                    id,
                    QuarantineKind::Snapshot,
                    None,
                    snapshot_key(incident).to_vec(),
                    value.to_vec(),
                    format!("the snapshot is truncated to {} bytes", value.len()),
                ),
            }
        }
        for entry in self.docs.scan_prefix(log_prefix(incident)) {
            let (key, value) = entry?;
            let Some(seq) = key
                .get(9..)
                .and_then(|seq| <[u8; 8]>::try_from(seq).ok())
                .map(u64::from_be_bytes)
            else {
                self.move_aside(
                    id,
                    QuarantineKind::Update,
                    None,
                    key.to_vec(),
                    value.to_vec(),
                    format!("a log key of {} bytes instead of 17", key.len()),
                );
                continue;
            };
            doc.next_seq = doc.next_seq.max(seq.saturating_add(1));
            doc.updates.push((seq, value.to_vec()));
        }
        // A sequence number moved to the quarantine is never used again.
        if let Some(seq) = self.quarantined_max_seq(
            incident,
            &[QuarantineKind::Update, QuarantineKind::Snapshot],
        )? {
            doc.next_seq = doc.next_seq.max(seq.saturating_add(1));
        }
        Ok(doc)
    }

    /// Queues an update for the log; the returned receiver completes once it
    /// is durable. Calls for one incident must use increasing `seq`.
    pub fn append(
        &self,
        id: &IncidentId,
        seq: u64,
        update: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::Append {
            incident: id.number(),
            seq,
            update,
            done: Some(done),
        })?;
        Ok(wait)
    }

    /// Queues sidecar events (JSON) with sequence numbers `first_seq..`; the
    /// receiver completes once they are durable.
    pub fn append_events(
        &self,
        id: &IncidentId,
        first_seq: u64,
        events: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::AppendEvents {
            incident: id.number(),
            first_seq,
            events,
            done,
        })?;
        Ok(wait)
    }

    /// The incident's events with `seq > after`, in order, as stored JSON;
    /// at most `limit` of them, so a reader pages through a long log.
    pub fn events_after(
        &self,
        id: &IncidentId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let start = event_key(id.number(), after.saturating_add(1));
        let end = event_key(id.number(), u64::MAX);
        let mut events = Vec::new();
        for entry in self.events.range(start..=end) {
            if events.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            if key.len() != 16 {
                self.move_aside(
                    id,
                    QuarantineKind::Event,
                    None,
                    key.to_vec(),
                    value.to_vec(),
                    format!("an event key of {} bytes instead of 16", key.len()),
                );
                continue;
            }
            let seq = u64::from_be_bytes(key[8..16].try_into().expect("8 bytes"));
            events.push((seq, value.to_vec()));
        }
        Ok(events)
    }

    /// Replaces the log up to `upto_seq` with `snapshot`, atomically, after
    /// everything queued before it.
    pub fn compact(
        &self,
        id: &IncidentId,
        upto_seq: u64,
        snapshot: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.send(WriteOp::Compact {
            incident: id.number(),
            upto_seq,
            snapshot,
        })
    }

    /// Completes once everything queued before it is durable.
    pub fn barrier(&self) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::Barrier { done })?;
        Ok(wait)
    }

    /// Closes the store: lets the writer finish what is queued, flush and
    /// exit, so the database is unlocked when this returns. Only the last
    /// handle closes; with other handles alive this just drops this one.
    pub fn close(self) {
        let Store {
            db,
            incidents,
            docs,
            events,
            revoked,
            tokens,
            quarantine,
            writer,
            thread,
            stats,
        } = self;
        // The queue's sender must go first: the writer exits when it closes.
        drop((
            writer, db, incidents, docs, events, revoked, tokens, quarantine, stats,
        ));
        if let Some(thread) = Arc::into_inner(thread).and_then(|slot| slot.into_inner()) {
            let _ = thread.join();
        }
    }

    /// Flushes sled synchronously (used at shutdown, after the writer drained).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn send(&self, op: WriteOp) -> Result<(), StoreError> {
        self.writer.send(op).map_err(|_| StoreError::WriterGone)
    }
}

/// Whether sled refused to open because another handle holds its lock.
/// sled reports it as an `Other` I/O error whose message wraps the
/// `WouldBlock` of `flock`, so the message is all there is to go by.
pub fn is_locked(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

fn decode_incident(bytes: &[u8]) -> Result<IncidentRecord, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt(format!("incident record: {error}")))
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

fn log_key(incident: u64, seq: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..9].copy_from_slice(&log_prefix(incident));
    key[9..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The writer thread's state.
struct Writer {
    db: sled::Db,
    meta: sled::Tree,
    incidents: sled::Tree,
    docs: sled::Tree,
    events: sled::Tree,
    revoked: sled::Tree,
    tokens: sled::Tree,
    quarantine: sled::Tree,
    stats: Arc<StoreStats>,
}

/// A completion to send once the group is durable.
enum Pending {
    Ack(Ack),
    /// A quarantine request: whether the record was moved.
    Quarantined(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
    Created(
        oneshot::Sender<Result<IncidentRecord, StoreError>>,
        IncidentRecord,
    ),
    CreateFailed(
        oneshot::Sender<Result<IncidentRecord, StoreError>>,
        StoreError,
    ),
}

impl Writer {
    fn run(self, mut queue: mpsc::UnboundedReceiver<WriteOp>) {
        let mut group = Vec::with_capacity(64);
        while let Some(first) = queue.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
        }
        // Every sender is gone: flush what sled holds and stop.
        if let Err(error) = self.db.flush() {
            tracing::error!(%error, "final flush failed");
        }
    }

    /// Applies the group's batched writes so far, for an operation that
    /// must see them (a transaction, a quarantine check, a backup hold).
    fn apply_batched(
        &self,
        batch: &mut sled::Batch,
        event_batch: &mut sled::Batch,
        appended: &mut Vec<(u64, u64)>,
        batched: &mut bool,
        result: &mut Result<(), StoreError>,
    ) {
        if !*batched {
            return;
        }
        if let Err(error) = self
            .docs
            .apply_batch(std::mem::take(batch))
            .and_then(|()| self.events.apply_batch(std::mem::take(event_batch)))
        {
            *result = Err(error.into());
        }
        appended.clear();
        *batched = false;
    }

    /// Applies one group, flushes once, then completes every waiter.
    fn commit(&self, group: &mut Vec<WriteOp>) {
        let mut batch = sled::Batch::default();
        let mut event_batch = sled::Batch::default();
        let mut batched = false;
        let mut pending = Vec::with_capacity(group.len());
        // Log keys inserted by this batch, so a compaction in the same group
        // removes them too (a batch keeps only the last write per key).
        let mut appended: Vec<(u64, u64)> = Vec::new();
        let mut result: Result<(), StoreError> = Ok(());
        for op in group.drain(..) {
            match op {
                WriteOp::Append {
                    incident,
                    seq,
                    update,
                    done,
                } => {
                    batch.insert(&log_key(incident, seq), update);
                    appended.push((incident, seq));
                    batched = true;
                    pending.extend(done.map(Pending::Ack));
                }
                WriteOp::Compact {
                    incident,
                    upto_seq,
                    snapshot,
                } => {
                    // Entries of this incident already in the tree, and those
                    // queued earlier in this very batch.
                    let mut value = Vec::with_capacity(8 + snapshot.len());
                    value.extend_from_slice(&upto_seq.to_be_bytes());
                    value.extend_from_slice(&snapshot);
                    batch.insert(&snapshot_key(incident), value);
                    let end = log_key(incident, upto_seq);
                    for key in self.docs.range(log_key(incident, 0)..=end).keys() {
                        match key {
                            Ok(key) => batch.remove(key),
                            Err(error) => result = Err(error.into()),
                        }
                    }
                    for &(appended_incident, seq) in &appended {
                        if appended_incident == incident && seq <= upto_seq {
                            batch.remove(&log_key(incident, seq));
                        }
                    }
                    batched = true;
                }
                WriteOp::CreateIncident {
                    title,
                    created_by,
                    created_at,
                    initial_doc,
                    done,
                } => {
                    // Earlier appends of this group must land first, so the
                    // batch is applied before the transaction.
                    self.apply_batched(
                        &mut batch,
                        &mut event_batch,
                        &mut appended,
                        &mut batched,
                        &mut result,
                    );
                    match self.create_incident(title, created_by, created_at, initial_doc) {
                        Ok(record) => pending.push(Pending::Created(done, record)),
                        Err(error) => pending.push(Pending::CreateFailed(done, error)),
                    }
                }
                WriteOp::AppendEvents {
                    incident,
                    first_seq,
                    events,
                    done,
                } => {
                    for (offset, event) in events.into_iter().enumerate() {
                        event_batch.insert(&event_key(incident, first_seq + offset as u64), event);
                    }
                    batched = true;
                    pending.push(Pending::Ack(done));
                }
                WriteOp::Barrier { done } => pending.push(Pending::Ack(done)),
                WriteOp::Quarantine {
                    incident,
                    kind,
                    seq,
                    key,
                    expected,
                    reason,
                    done,
                } => {
                    // Earlier writes of this group land first, so the record
                    // compared below is the one the loader would read now.
                    self.apply_batched(
                        &mut batch,
                        &mut event_batch,
                        &mut appended,
                        &mut batched,
                        &mut result,
                    );
                    let moved = self.quarantine(&incident, kind, seq, &key, &expected, &reason);
                    if let Some(done) = done {
                        pending.push(Pending::Quarantined(done, moved));
                    }
                }
                WriteOp::Hold { held, release } => {
                    // Make everything before the hold durable, then wait.
                    self.apply_batched(
                        &mut batch,
                        &mut event_batch,
                        &mut appended,
                        &mut batched,
                        &mut result,
                    );
                    if let Err(error) = self.db.flush() {
                        result = Err(error.into());
                    }
                    let _ = held.send(());
                    let _ = release.recv();
                }
                WriteOp::Revoke { jti, record, done } => {
                    if let Err(error) = self.revoked.insert(jti.as_bytes(), record) {
                        result = Err(error.into());
                    }
                    pending.push(Pending::Ack(done));
                }
                WriteOp::RecordToken { jti, record, done } => {
                    if let Err(error) = self.tokens.insert(jti.as_bytes(), record) {
                        result = Err(error.into());
                    }
                    if let Some(done) = done {
                        pending.push(Pending::Ack(done));
                    }
                }
            }
        }
        if batched && result.is_ok() {
            result = self
                .docs
                .apply_batch(batch)
                .and_then(|()| self.events.apply_batch(event_batch))
                .map_err(StoreError::from);
        }
        if result.is_ok() {
            let started = std::time::Instant::now();
            result = self.db.flush().map(drop).map_err(StoreError::from);
            crate::metrics::METRICS
                .store_flush_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .writes_flushed
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        if let Err(error) = &result {
            tracing::error!(%error, writes = pending.len(), "group commit failed; no write of this group is acknowledged");
        }
        for waiter in pending {
            match waiter {
                Pending::Ack(done) => {
                    let _ = done.send(result.clone());
                }
                Pending::Quarantined(done, moved) => {
                    let _ = done.send(result.clone().and(moved));
                }
                Pending::Created(done, record) => {
                    let _ = done.send(result.clone().map(|()| record));
                }
                Pending::CreateFailed(done, error) => {
                    let _ = done.send(Err(error));
                }
            }
        }
    }

    fn create_incident(
        &self,
        title: String,
        created_by: Actor,
        created_at: DateTime<Utc>,
        initial_doc: InitialDoc,
    ) -> Result<IncidentRecord, StoreError> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError as Conflict;
        let record = (&self.meta, &self.incidents, &self.docs, &self.events).transaction(
            |(meta, incidents, docs, events)| {
                let last = match meta.get("next_incident")? {
                    Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                        Conflict::Abort(StoreError::Corrupt(
                            "incident counter is not 8 bytes".into(),
                        ))
                    })?),
                    None => 0,
                };
                let number = last + 1;
                let record = IncidentRecord {
                    id: IncidentId::new(number),
                    title: title.clone(),
                    created_at,
                    created_by: created_by.clone(),
                };
                // Rendered inside the transaction because only here is the id
                // known; a retried transaction renders again, which is harmless.
                let initial = initial_doc(&record.id);
                let json = serde_json::to_vec(&record)
                    .map_err(|error| Conflict::Abort(StoreError::Corrupt(error.to_string())))?;
                meta.insert("next_incident", &number.to_be_bytes())?;
                incidents.insert(&number.to_be_bytes(), json)?;
                let mut snapshot = Vec::with_capacity(8 + initial.doc.len());
                snapshot.extend_from_slice(&0u64.to_be_bytes());
                snapshot.extend_from_slice(&initial.doc);
                docs.insert(&snapshot_key(number), snapshot)?;
                for (index, event) in initial.events.iter().enumerate() {
                    events.insert(&event_key(number, index as u64 + 1), event.as_slice())?;
                }
                Ok(record)
            },
        )?;
        Ok(record)
    }
}

/// The key of a quarantine record: ordered by time, unique because the
/// original key it ends with is removed when the record is written.
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

/// Moving stored records that no longer load into the quarantine.
impl Store {
    /// Moves a log entry that does not load into the quarantine, if it still
    /// holds `update`. The receiver tells whether it was moved (it is not
    /// when another load moved it first); dropping it is fine.
    pub fn quarantine_update(
        &self,
        id: &IncidentId,
        seq: u64,
        update: &[u8],
        reason: String,
    ) -> Result<oneshot::Receiver<Result<bool, StoreError>>, StoreError> {
        self.quarantine(
            id,
            QuarantineKind::Update,
            Some(seq),
            log_key(id.number(), seq).to_vec(),
            update.to_vec(),
            reason,
        )
    }

    /// Moves a snapshot that does not load into the quarantine, if it still
    /// is the one covering `upto` with `snapshot` (the v1 update part).
    pub fn quarantine_snapshot(
        &self,
        id: &IncidentId,
        upto: u64,
        snapshot: &[u8],
        reason: String,
    ) -> Result<oneshot::Receiver<Result<bool, StoreError>>, StoreError> {
        let mut value = Vec::with_capacity(8 + snapshot.len());
        value.extend_from_slice(&upto.to_be_bytes());
        value.extend_from_slice(snapshot);
        self.quarantine(
            id,
            QuarantineKind::Snapshot,
            Some(upto),
            snapshot_key(id.number()).to_vec(),
            value,
            reason,
        )
    }

    /// Moves a sidecar event that does not load into the quarantine, if it
    /// still holds `event`.
    pub fn quarantine_event(
        &self,
        id: &IncidentId,
        seq: u64,
        event: &[u8],
        reason: String,
    ) -> Result<oneshot::Receiver<Result<bool, StoreError>>, StoreError> {
        self.quarantine(
            id,
            QuarantineKind::Event,
            Some(seq),
            event_key(id.number(), seq).to_vec(),
            event.to_vec(),
            reason,
        )
    }

    fn quarantine(
        &self,
        id: &IncidentId,
        kind: QuarantineKind,
        seq: Option<u64>,
        key: Vec<u8>,
        expected: Vec<u8>,
        reason: String,
    ) -> Result<oneshot::Receiver<Result<bool, StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::Quarantine {
            incident: id.clone(),
            kind,
            seq,
            key,
            expected,
            reason,
            done: Some(done),
        })?;
        Ok(wait)
    }

    /// Queues a move to the quarantine without waiting for it.
    fn move_aside(
        &self,
        id: &IncidentId,
        kind: QuarantineKind,
        seq: Option<u64>,
        key: Vec<u8>,
        expected: Vec<u8>,
        reason: String,
    ) {
        let queued = self.send(WriteOp::Quarantine {
            incident: id.clone(),
            kind,
            seq,
            key,
            expected,
            reason: reason.clone(),
            done: None,
        });
        if let Err(error) = queued {
            tracing::error!(incident = %id, kind = kind.name(), %reason, %error, "skipped a stored record that does not load, but cannot move it to the quarantine");
        }
    }

    /// Every quarantined record with its key, oldest first. Blocking.
    pub fn quarantined(&self) -> Result<Vec<(Vec<u8>, QuarantineRecord)>, StoreError> {
        let mut records = Vec::new();
        for entry in self.quarantine.iter() {
            let (key, value) = entry?;
            match serde_json::from_slice(&value) {
                Ok(record) => records.push((key.to_vec(), record)),
                Err(error) => {
                    tracing::warn!(key = %hex(&key), %error, "a quarantine record does not decode; leaving it out of the listing");
                }
            }
        }
        Ok(records)
    }

    /// The highest seq of this incident's quarantined records of `kinds`.
    /// Reads keys only. Blocking.
    pub fn quarantined_max_seq(
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
            let seq = u64::from_be_bytes(key[QUARANTINE_SEQ].try_into().expect("8 bytes"));
            highest = highest.max(Some(seq));
        }
        Ok(highest)
    }
}

impl Writer {
    /// Moves `key` into the quarantine in one transaction, if it still holds
    /// `expected`; logs the move. Whether it moved.
    fn quarantine(
        &self,
        incident: &IncidentId,
        kind: QuarantineKind,
        seq: Option<u64>,
        key: &[u8],
        expected: &[u8],
        reason: &str,
    ) -> Result<bool, StoreError> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionResult;
        let now = Utc::now();
        let record = QuarantineRecord {
            incident: incident.clone(),
            kind,
            seq,
            original_key: hex(key),
            reason: reason.to_owned(),
            quarantined_at: now,
            size: expected.len(),
            bytes: hex(expected),
        };
        let json = serde_json::to_vec(&record).expect("quarantine records serialise");
        let record_key = quarantine_key(now, incident.number(), kind, seq.unwrap_or(0), key);
        let source = match kind {
            QuarantineKind::Update | QuarantineKind::Snapshot => &self.docs,
            QuarantineKind::Event => &self.events,
        };
        let moved = (&self.quarantine, source)
            .transaction(
                |(quarantine, source)| -> ConflictableTransactionResult<bool, StoreError> {
                    if source.get(key)?.as_deref() != Some(expected) {
                        return Ok(false);
                    }
                    quarantine.insert(record_key.as_slice(), json.as_slice())?;
                    source.remove(key)?;
                    Ok(true)
                },
            )
            .map_err(StoreError::from);
        let seq_text = seq.map_or_else(|| "unknown".to_owned(), |seq| seq.to_string());
        match &moved {
            Ok(true) => tracing::error!(
                incident = %incident,
                kind = kind.name(),
                seq = %seq_text,
                %reason,
                key = %record.original_key,
                "{}",
                kind.consequence()
            ),
            Ok(false) => {
                tracing::debug!(incident = %incident, kind = kind.name(), seq = %seq_text, "already moved to the quarantine");
            }
            Err(error) => tracing::error!(
                incident = %incident,
                kind = kind.name(),
                seq = %seq_text,
                %reason,
                %error,
                "cannot move a stored record that does not load to the quarantine; it stays where it is and is skipped again on the next load"
            ),
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> Actor {
        Actor {
            id: commandpost_shared::UserId("ada".into()),
            name: "Ada".into(),
        }
    }

    async fn incident(store: &Store, title: &str) -> IncidentRecord {
        store
            .create_incident(title.into(), actor(), Utc::now(), {
                let title = title.to_owned();
                move |id| InitialContent {
                    doc: format!("{id} {title}").into_bytes(),
                    events: vec![format!("{{\"declared\":\"{id}\"}}").into_bytes()],
                }
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn incident_ids_are_sequential_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(incident(&store, "one").await.id, IncidentId::new(1));
            assert_eq!(incident(&store, "two").await.id, IncidentId::new(2));
            let stored = store.load_doc(&IncidentId::new(2)).unwrap();
            assert_eq!(stored.snapshot.as_deref(), Some(&b"INC-2 two"[..]));
            assert_eq!(stored.next_seq, 1);
            let events = store
                .events_after(&IncidentId::new(2), 0, usize::MAX)
                .unwrap();
            assert_eq!(events, vec![(1, br#"{"declared":"INC-2"}"#.to_vec())]);
        }
        // The writer thread closes the database once the last handle is gone.
        let store =
            Store::open_when_unlocked(dir.path(), std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(incident(&store, "three").await.id, IncidentId::new(3));
        let titles: Vec<_> = store
            .list_incidents()
            .unwrap()
            .into_iter()
            .map(|r| r.title)
            .collect();
        assert_eq!(titles, ["one", "two", "three"]);
    }

    #[tokio::test]
    async fn events_are_durable_in_order_and_read_from_a_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = incident(&store, "first").await.id;
        let second = incident(&store, "second").await.id;
        store
            .append_events(&first, 2, vec![b"two".to_vec(), b"three".to_vec()])
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        store
            .append_events(&second, 2, vec![b"other".to_vec()])
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        let seqs = |after| {
            store
                .events_after(&first, after, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(seq, _)| seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(0), [1, 2, 3]);
        assert_eq!(seqs(1), [2, 3]);
        assert_eq!(seqs(3), Vec::<u64>::new());
        assert_eq!(
            store.events_after(&first, 2, usize::MAX).unwrap(),
            vec![(3, b"three".to_vec())]
        );
        assert_eq!(
            store.events_after(&second, 1, usize::MAX).unwrap(),
            vec![(2, b"other".to_vec())]
        );
    }

    #[tokio::test]
    async fn compaction_removes_every_covered_entry_whether_or_not_it_shares_a_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = incident(&store, "log").await.id;
        // Appends and the compaction covering them are queued back to back,
        // so some share the compaction's group and some were already written.
        let mut waits = Vec::new();
        for seq in 1..=50u64 {
            waits.push(store.append(&id, seq, vec![seq as u8]).unwrap());
            if seq == 40 {
                store.compact(&id, 40, b"snapshot-40".to_vec()).unwrap();
            }
        }
        for wait in waits {
            wait.await.unwrap().unwrap();
        }
        let stored = store.load_doc(&id).unwrap();
        assert_eq!(stored.snapshot.as_deref(), Some(&b"snapshot-40"[..]));
        let seqs: Vec<u64> = stored.updates.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (41..=50).collect::<Vec<_>>());
        assert_eq!(stored.next_seq, 51);
        let stats = store.stats();
        assert!(stats.flushes.load(Ordering::Relaxed) >= 1);
        assert_eq!(
            stats.writes_flushed.load(Ordering::Relaxed),
            51,
            "1 creation + 50 appends acknowledged"
        );
    }

    #[tokio::test]
    async fn quarantining_moves_a_record_aside_keeping_its_bytes_and_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = incident(&store, "damaged").await.id;
        for seq in 1..=3u64 {
            store
                .append(&id, seq, vec![seq as u8; 4])
                .unwrap()
                .await
                .unwrap()
                .unwrap();
        }
        store
            .append_events(&id, 2, vec![b"not json".to_vec()])
            .unwrap()
            .await
            .unwrap()
            .unwrap();

        // A stale request (the entry changed since it was read) moves nothing.
        let stale = store.quarantine_update(&id, 2, b"other", "stale".into());
        assert!(!stale.unwrap().await.unwrap().unwrap());
        // The last log entry and the second event are moved.
        let moved = store.quarantine_update(&id, 3, &[3; 4], "does not decode".into());
        assert!(moved.unwrap().await.unwrap().unwrap());
        let moved = store.quarantine_event(&id, 2, b"not json", "not an event".into());
        assert!(moved.unwrap().await.unwrap().unwrap());
        // Asking again finds nothing left to move.
        let again = store.quarantine_event(&id, 2, b"not json", "not an event".into());
        assert!(!again.unwrap().await.unwrap().unwrap());

        let stored = store.load_doc(&id).unwrap();
        let seqs: Vec<u64> = stored.updates.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(stored.next_seq, 4, "a quarantined seq is never reused");
        let events: Vec<u64> = store
            .events_after(&id, 0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(events, [1]);
        assert_eq!(
            store
                .quarantined_max_seq(id.number(), &[QuarantineKind::Event])
                .unwrap(),
            Some(2)
        );
        assert_eq!(
            store
                .quarantined_max_seq(id.number() + 1, &[QuarantineKind::Event])
                .unwrap(),
            None
        );

        let records = store.quarantined().unwrap();
        assert_eq!(records.len(), 2);
        let (_, update) = &records[0];
        assert_eq!(update.kind, QuarantineKind::Update);
        assert_eq!(update.incident, id);
        assert_eq!(update.seq, Some(3));
        assert_eq!(update.reason, "does not decode");
        assert_eq!(update.size, 4);
        assert_eq!(
            crate::quarantine::unhex(&update.bytes).unwrap(),
            [3; 4],
            "the bytes are kept"
        );
        assert_eq!(
            crate::quarantine::unhex(&update.original_key).unwrap(),
            log_key(id.number(), 3)
        );
        let (_, event) = &records[1];
        assert_eq!(event.kind, QuarantineKind::Event);
        assert_eq!(crate::quarantine::unhex(&event.bytes).unwrap(), b"not json");
    }

    #[tokio::test]
    async fn a_truncated_snapshot_is_moved_aside_and_the_log_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = incident(&store, "truncated").await.id;
        for seq in 1..=2u64 {
            store
                .append(&id, seq, vec![seq as u8])
                .unwrap()
                .await
                .unwrap()
                .unwrap();
        }
        store
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
            crate::quarantine::unhex(&records[0].1.bytes).unwrap(),
            [1, 2, 3]
        );
        assert_eq!(store.docs.get(snapshot_key(id.number())).unwrap(), None);
    }
}
