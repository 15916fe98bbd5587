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
//! Invariants: nothing is acknowledged before `flush` returned; a failed
//! write or flush is reported to every waiter, never swallowed; rooms never
//! touch sled, only this module does.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use chrono::{DateTime, Utc};
use commandpost_shared::{Actor, IncidentId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

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
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    incidents: sled::Tree,
    docs: sled::Tree,
    events: sled::Tree,
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
        let (writer, queue) = mpsc::unbounded_channel();
        let stats = Arc::new(StoreStats::default());
        let worker = Writer {
            db: db.clone(),
            meta,
            incidents: incidents.clone(),
            docs: docs.clone(),
            events: events.clone(),
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
            writer,
            thread: Arc::new(parking_lot::Mutex::new(Some(thread))),
            stats,
        })
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
            if value.len() < 8 {
                return Err(StoreError::Corrupt(format!(
                    "snapshot of {id} is truncated"
                )));
            }
            let upto = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
            doc.snapshot = Some(value[8..].to_vec());
            doc.next_seq = upto + 1;
        }
        for entry in self.docs.scan_prefix(log_prefix(incident)) {
            let (key, value) = entry?;
            let seq = u64::from_be_bytes(
                key[9..17]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("bad log key for {id}")))?,
            );
            doc.next_seq = doc.next_seq.max(seq + 1);
            doc.updates.push((seq, value.to_vec()));
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

    /// The incident's events with `seq > after`, in order, as stored JSON.
    pub fn events_after(
        &self,
        id: &IncidentId,
        after: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let start = event_key(id.number(), after.saturating_add(1));
        let end = event_key(id.number(), u64::MAX);
        self.events
            .range(start..=end)
            .map(|entry| {
                let (key, value) = entry?;
                let seq = u64::from_be_bytes(
                    key[8..16]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt(format!("bad event key for {id}")))?,
                );
                Ok((seq, value.to_vec()))
            })
            .collect()
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
            writer,
            thread,
            stats,
        } = self;
        // The queue's sender must go first: the writer exits when it closes.
        drop((writer, db, incidents, docs, events, stats));
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
    stats: Arc<StoreStats>,
}

/// A completion to send once the group is durable.
enum Pending {
    Ack(Ack),
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
                    if batched {
                        if let Err(error) = self
                            .docs
                            .apply_batch(std::mem::take(&mut batch))
                            .and_then(|()| {
                                self.events.apply_batch(std::mem::take(&mut event_batch))
                            })
                        {
                            result = Err(error.into());
                        }
                        appended.clear();
                        batched = false;
                    }
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
            result = self.db.flush().map(drop).map_err(StoreError::from);
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
            let events = store.events_after(&IncidentId::new(2), 0).unwrap();
            assert_eq!(events, vec![(1, br#"{"declared":"INC-2"}"#.to_vec())]);
        }
        // The writer thread closes the database once the last handle is gone.
        let store = loop {
            match Store::open(dir.path()) {
                Ok(store) => break store,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
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
                .events_after(&first, after)
                .unwrap()
                .into_iter()
                .map(|(seq, _)| seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(0), [1, 2, 3]);
        assert_eq!(seqs(1), [2, 3]);
        assert_eq!(seqs(3), Vec::<u64>::new());
        assert_eq!(
            store.events_after(&first, 2).unwrap(),
            vec![(3, b"three".to_vec())]
        );
        assert_eq!(
            store.events_after(&second, 1).unwrap(),
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
}
