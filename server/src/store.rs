//! Durable storage behind a narrow interface.
//!
//! [`Store`] is the handle the rest of the server uses. Every write goes
//! through one dedicated writer thread that performs group commit: it takes
//! everything queued, hands it to the backend as one group, which applies
//! it and makes it durable (`fsync`, or a committed transaction), and only
//! then completes each write's acknowledgement. Reads go straight to the
//! backend, which is safe from any thread. The store encodes and decodes the
//! records (JSON; document updates are opaque) and decides what a stored
//! record that does not load means: it is moved to the quarantine
//! ([`crate::quarantine`]) and its seq is never used again.
//!
//! The engine is a [`Backend`], whose docs are the contract a backend
//! implements; [`SledBackend`] (`store/sled_backend.rs`, with sled's
//! layout) is the one there is.
//!
//! Invariants: nothing is acknowledged before the backend reported its group
//! durable; a failed write or flush is reported to every waiter, never
//! swallowed; only this module and its submodules touch sled.

mod backend;
mod postgres_backend;
mod sled_backend;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use chrono::{DateTime, Utc};
use commandpost_shared::{Actor, IncidentId, IssuedToken};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use backend::{
    Backend, CHECK_TIMEOUT, DocRecords, EventRecords, NewIncident, Outcome, QuarantineMove,
    Quarantined, Record, RecordAt, RecordSink, RenderIncident, Write,
};
pub use postgres_backend::{MIGRATIONS, PoolOptions, PostgresBackend, SCHEMA_VERSION};
pub use sled_backend::{SledBackend, TreeCopy, is_locked, records_of_copy};

use crate::quarantine::{KindOfRecord, QuarantineKind, QuarantineRecord, hex};

/// Storage failures. Always carries the cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (sled, a database connection, ...).
    #[error("storage engine: {0}")]
    Engine(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// An I/O operation of the store's own failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Stored data that does not decode.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the storage writer has stopped")]
    WriterGone,
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source: Arc::new(source),
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

/// What the writer thread is asked to do.
enum Queued {
    Write(Write, Waiter),
    /// Completes once everything queued before it is durable.
    Barrier(Ack),
    /// A barrier that also lifts the incident's fence ([`Writer::fenced`]):
    /// its document is about to be loaded from storage again.
    Reload(u64, Ack),
    /// Holds the writer after everything queued before it is durable, until
    /// the backup that asked for it is done (consistent online backups).
    Hold {
        held: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

/// Who waits for a write, completed once its group is durable.
enum Waiter {
    Nobody,
    Ack(Ack),
    Barrier(Ack),
    /// The record of the new incident, its id still to be filled in.
    Created(
        oneshot::Sender<Result<IncidentRecord, StoreError>>,
        IncidentRecord,
    ),
    /// A move to the quarantine: whether the record was moved.
    Moved(Option<oneshot::Sender<Result<bool, StoreError>>>, MoveNote),
    /// A numbered append: told its seq, then acknowledged.
    Numbered(Ack, Numbered),
    /// An insert-only append of events: whether it was written.
    Events(oneshot::Sender<Result<EventsAppend, StoreError>>),
}

/// What became of [`Store::append_events`] once its group committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventsAppend {
    /// Every event is durable under its seq.
    Written,
    /// A seq was already taken (another server appended first): nothing
    /// was written.
    SeqTaken,
}

/// Told the seq a numbered append was stored under (or why it was not), on
/// the writer thread, once its group committed and before its waiter is
/// acknowledged. It must not block.
pub type Numbered = Box<dyn FnOnce(Result<u64, StoreError>) + Send>;

/// What the log says about a move to the quarantine.
struct MoveNote {
    incident: IncidentId,
    kind: QuarantineKind,
    seq: Option<u64>,
    reason: String,
}

/// A revoked token, as stored (JSON) and as the API serves it.
pub use commandpost_shared::Revocation;

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    writer: mpsc::UnboundedSender<Queued>,
    /// The writer thread, joined by [`Store::close`].
    thread: Arc<parking_lot::Mutex<Option<thread::JoinHandle<()>>>>,
    stats: Arc<StoreStats>,
}

/// How many queued writes one group commit takes at most.
const MAX_GROUP: usize = 8192;

impl Store {
    /// Opens (or creates) the sled store in `dir` and starts its writer
    /// thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::with_backend(Arc::new(SledBackend::open(dir)?))
    }

    /// Starts a store on `backend`.
    pub fn with_backend(backend: Arc<dyn Backend>) -> Result<Self, StoreError> {
        let (writer, queue) = mpsc::unbounded_channel();
        let stats = Arc::new(StoreStats::default());
        let worker = Writer {
            backend: backend.clone(),
            stats: stats.clone(),
            fenced: std::collections::HashSet::new(),
        };
        let thread = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || worker.run(queue))
            .map_err(|error| StoreError::io("cannot start the storage writer thread", error))?;
        Ok(Self {
            backend,
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
                Err(error) if is_locked(&error) && started.elapsed() < patience => {
                    thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Runs `read` on a blocking thread and awaits it. Async handlers read
    /// through this, never directly: a PostgreSQL read is a network round
    /// trip (up to `--store-timeout` when the pool is busy) and a sled read
    /// may wait for the disk, and neither may hold an async worker.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|_| StoreError::WriterGone)?
    }

    /// Hands every stored record to `sink` while no write happens:
    /// everything queued before is durable and included, and writes queued
    /// meanwhile wait. For consistent online backups; returns the sink.
    pub async fn export<S: RecordSink + Send + 'static>(
        &self,
        mut sink: S,
    ) -> Result<S, StoreError> {
        let (held, is_held) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel();
        self.send(Queued::Hold {
            held,
            release: released,
        })?;
        is_held.await.map_err(|_| StoreError::WriterGone)?;
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || {
            let exported = backend.export(&mut sink);
            let _ = release.send(());
            exported.map(|()| sink)
        })
        .await
        .map_err(|error| StoreError::Engine(Arc::new(error)))?
    }

    /// Whether the store holds nothing at all. Blocking.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.backend.is_empty()
    }

    /// Stores exported `records`, durably, in a store that is empty and
    /// that nothing else writes to yet (a restore). Blocking.
    pub fn import(&self, records: impl IntoIterator<Item = Record>) -> Result<(), StoreError> {
        self.backend.import(&mut records.into_iter())
    }

    /// Records a revoked token durably.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let wait = self.write_acked(Write::Revoke {
            jti: revocation.jti.clone(),
            record: serde_json::to_vec(revocation).expect("revocations serialise"),
        })?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records an issued token. The returned receiver completes once the
    /// record is durable; dropping it does not cancel the write.
    pub fn record_token(
        &self,
        token: &IssuedToken,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        self.write_acked(Write::RecordToken {
            jti: token.jti.clone(),
            record: serde_json::to_vec(token).expect("token records serialise"),
        })
    }

    /// Every recorded token, in no particular order. A record that does not
    /// decode is skipped with a log line (it only lists tokens).
    pub fn issued_tokens(&self) -> Result<Vec<IssuedToken>, StoreError> {
        let mut tokens = Vec::new();
        for (jti, bytes) in self.backend.tokens()? {
            match serde_json::from_slice(&bytes) {
                Ok(token) => tokens.push(token),
                Err(error) => tracing::error!(
                    jti = %jti,
                    %error,
                    "skipped a token record that does not decode"
                ),
            }
        }
        Ok(tokens)
    }

    /// Every revoked token.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.backend
            .revocations()?
            .iter()
            .map(|bytes| {
                serde_json::from_slice(bytes)
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
        // The id is known only inside the backend's transaction.
        let record = IncidentRecord {
            id: IncidentId::new(0),
            title,
            created_at,
            created_by,
        };
        let template = record.clone();
        let render: RenderIncident = Box::new(move |id| {
            let InitialContent { doc, events } = initial_doc(&id);
            let record = IncidentRecord {
                id,
                ..template.clone()
            };
            NewIncident {
                record: serde_json::to_vec(&record).expect("incident records serialise"),
                doc,
                events,
            }
        });
        self.write(Write::CreateIncident(render), Waiter::Created(done, record))?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }

    pub fn get_incident(&self, id: &IncidentId) -> Result<Option<IncidentRecord>, StoreError> {
        self.backend
            .incident(id.number())?
            .map(|bytes| decode_incident(&bytes))
            .transpose()
    }

    /// Every incident, oldest first.
    pub fn list_incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        self.backend
            .incidents()?
            .iter()
            .map(|bytes| decode_incident(bytes))
            .collect()
    }

    /// Reads a document's snapshot and log. Blocking: call from
    /// `spawn_blocking`.
    pub fn load_doc(&self, id: &IncidentId) -> Result<StoredDoc, StoreError> {
        let incident = id.number();
        let DocRecords {
            snapshot,
            updates,
            damaged,
        } = self.backend.doc(incident)?;
        // What does not even name its record loads without it.
        for request in damaged {
            self.move_aside(request);
        }
        let mut doc = StoredDoc::default();
        if let Some((upto, snapshot)) = snapshot {
            doc.snapshot = Some(snapshot);
            doc.snapshot_upto = upto;
            doc.next_seq = upto.saturating_add(1);
        }
        if let Some((seq, _)) = updates.last() {
            doc.next_seq = doc.next_seq.max(seq.saturating_add(1));
        }
        doc.updates = updates;
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
        self.write_acked(Write::Append {
            incident: id.number(),
            seq,
            update,
        })
    }

    /// Whether the backend assigns document seqs itself, so that several
    /// servers can append to one document: then rooms append with
    /// [`Store::append_numbered`], never [`Store::append`].
    pub fn numbers_updates(&self) -> bool {
        self.backend.numbers_updates()
    }

    /// Queues an update for the log under the next seq the backend assigns
    /// (gap-free in commit order across servers). Once it is durable,
    /// `numbered` is told the seq, then the returned receiver completes.
    pub fn append_numbered(
        &self,
        id: &IncidentId,
        update: Vec<u8>,
        numbered: Numbered,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.write(
            Write::AppendNumbered {
                incident: id.number(),
                update,
            },
            Waiter::Numbered(done, numbered),
        )?;
        Ok(wait)
    }

    /// What a reader that applied the document's log up to `after` lacks:
    /// the snapshot if it covers more, and the log entries after `after`,
    /// in seq order. Blocking: call from `spawn_blocking`.
    #[allow(
        clippy::type_complexity,
        reason = "the two parts of a document, as stored"
    )]
    pub fn doc_after(
        &self,
        id: &IncidentId,
        after: u64,
    ) -> Result<(Option<(u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>), StoreError> {
        let DocRecords {
            snapshot,
            updates,
            damaged,
        } = self.backend.doc_after(id.number(), after)?;
        for request in damaged {
            self.move_aside(request);
        }
        Ok((snapshot, updates))
    }

    /// Queues sidecar events (JSON) with sequence numbers `first_seq..`,
    /// insert-only: the receiver completes once they are durable
    /// ([`EventsAppend::Written`]), or with [`EventsAppend::SeqTaken`] when
    /// one of those seqs was already stored and nothing was written.
    pub fn append_events(
        &self,
        id: &IncidentId,
        first_seq: u64,
        events: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<EventsAppend, StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.write(
            Write::AppendEvents {
                incident: id.number(),
                first_seq,
                events,
            },
            Waiter::Events(done),
        )?;
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
        let EventRecords { events, damaged } =
            self.backend.events_after(id.number(), after, limit)?;
        for request in damaged {
            self.move_aside(request);
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
        self.write(
            Write::Compact {
                incident: id.number(),
                upto: upto_seq,
                snapshot,
            },
            Waiter::Nobody,
        )
    }

    /// Completes once everything queued before it is durable.
    pub fn barrier(&self) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Queued::Barrier(done))?;
        Ok(wait)
    }

    /// A barrier before the incident's document is loaded from storage:
    /// completes once everything queued before it is durable, and lets the
    /// document's writes through again after one of them failed (see
    /// [`Writer::fenced`]). Only the loading of a room calls it.
    pub fn before_load(
        &self,
        id: &IncidentId,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Queued::Reload(id.number(), done))?;
        Ok(wait)
    }

    /// Closes the store: lets the writer finish what is queued, flush and
    /// exit, so the database is unlocked when this returns. Only the last
    /// handle closes; with other handles alive this just drops this one.
    pub fn close(self) {
        let Store {
            backend,
            writer,
            thread,
            stats,
        } = self;
        // The queue's sender must go first: the writer exits when it closes.
        drop((writer, backend, stats));
        if let Some(thread) = Arc::into_inner(thread).and_then(|slot| slot.into_inner()) {
            let _ = thread.join();
        }
    }

    /// Whether the storage engine is reachable now ([`Backend::check`]:
    /// blocks up to [`CHECK_TIMEOUT`]; not queued behind writes).
    pub fn check(&self) -> Result<(), StoreError> {
        self.backend.check()
    }

    /// Flushes the backend synchronously (used at shutdown, after the writer
    /// drained).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.backend.flush()
    }

    /// Queues a write; the receiver completes once it is durable.
    fn write_acked(
        &self,
        write: Write,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.write(write, Waiter::Ack(done))?;
        Ok(wait)
    }

    fn write(&self, write: Write, waiter: Waiter) -> Result<(), StoreError> {
        self.send(Queued::Write(write, waiter))
    }

    fn send(&self, queued: Queued) -> Result<(), StoreError> {
        self.writer.send(queued).map_err(|_| StoreError::WriterGone)
    }
}

fn decode_incident(bytes: &[u8]) -> Result<IncidentRecord, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt(format!("incident record: {error}")))
}

/// The writer thread's state.
struct Writer {
    backend: Arc<dyn Backend>,
    stats: Arc<StoreStats>,
    /// Incidents a document write (append or compaction) of which failed.
    /// Their later document writes fail at once, without reaching the
    /// backend, until the document is loaded again ([`Store::before_load`]):
    /// an update queued after a lost one may depend on it, and must not be
    /// stored (and acknowledged) without it, say because the database came
    /// back in between. The room, told of the failure, reloads what storage
    /// holds and the clients send everything it lacks again.
    fenced: std::collections::HashSet<u64>,
}

/// The incident of a document write (a log append or a compaction).
fn document_of(write: &Write) -> Option<u64> {
    match write {
        Write::Append { incident, .. }
        | Write::AppendNumbered { incident, .. }
        | Write::Compact { incident, .. } => Some(*incident),
        _ => None,
    }
}

impl Writer {
    fn run(mut self, mut queue: mpsc::UnboundedReceiver<Queued>) {
        let mut group = Vec::with_capacity(64);
        while let Some(first) = queue.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(queued) => group.push(queued),
                    Err(_) => break,
                }
            }
            self.commit_queued(&mut group);
        }
        // Every sender is gone: flush what the backend holds and stop.
        if let Err(error) = self.backend.flush() {
            tracing::error!(%error, "final flush failed");
        }
    }

    /// Commits what was queued. A hold ends a group: what came before it is
    /// durable and acknowledged before the writer waits.
    fn commit_queued(&mut self, group: &mut Vec<Queued>) {
        let mut writes = Vec::with_capacity(group.len());
        let mut waiters = Vec::with_capacity(group.len());
        for queued in group.drain(..) {
            match queued {
                Queued::Write(write, waiter) => {
                    if let Some(incident) = document_of(&write)
                        && self.fenced.contains(&incident)
                    {
                        waiter.complete(Err(fenced(incident)));
                        continue;
                    }
                    writes.push(write);
                    waiters.push(waiter);
                }
                Queued::Barrier(done) => waiters.push(Waiter::Barrier(done)),
                Queued::Reload(incident, done) => {
                    // What was queued before settles first (a failure
                    // fences again); the barrier goes with what follows.
                    self.commit(std::mem::take(&mut writes), std::mem::take(&mut waiters));
                    self.fenced.remove(&incident);
                    waiters.push(Waiter::Barrier(done));
                }
                Queued::Hold { held, release } => {
                    self.commit(std::mem::take(&mut writes), std::mem::take(&mut waiters));
                    let _ = held.send(());
                    let _ = release.recv();
                }
            }
        }
        self.commit(writes, waiters);
    }

    /// Has the backend apply one group durably, then completes every waiter.
    fn commit(&mut self, writes: Vec<Write>, waiters: Vec<Waiter>) {
        // Every write has a waiter (maybe nobody): no waiter, nothing to do.
        if waiters.is_empty() {
            return;
        }
        let documents: Vec<u64> = writes.iter().filter_map(document_of).collect();
        let started = std::time::Instant::now();
        let committed = self.backend.commit(writes);
        if committed.is_ok() {
            crate::metrics::METRICS
                .store_flush_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let acknowledged = waiters.iter().filter(|waiter| waiter.waits()).count();
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .writes_flushed
            .fetch_add(acknowledged as u64, Ordering::Relaxed);
        match committed {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for waiter in waiters {
                    let outcome = match waiter {
                        Waiter::Barrier(_) => Some(Outcome::Done),
                        _ => outcomes.next(),
                    };
                    waiter.complete(outcome.ok_or_else(|| engine_bug("too few outcomes")));
                }
            }
            Err(error) => {
                tracing::error!(%error, writes = acknowledged, "group commit failed; no write of this group is acknowledged");
                self.fenced.extend(documents);
                for waiter in waiters {
                    waiter.complete(Err(error.clone()));
                }
            }
        }
    }
}

/// The error of a document write refused by the fence ([`Writer::fenced`]).
fn fenced(incident: u64) -> StoreError {
    StoreError::Engine(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
        format!(
            "an earlier write of incident {incident}'s document failed; \
             its later writes are refused until it is loaded again"
        ),
    )))
}

/// A backend that broke the [`Backend::commit`] contract.
fn engine_bug(what: &str) -> StoreError {
    StoreError::Engine(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
        format!("the storage backend answered a commit with {what}"),
    )))
}

impl Waiter {
    /// Whether somebody receives a completion.
    fn waits(&self) -> bool {
        !matches!(self, Waiter::Nobody | Waiter::Moved(None, _))
    }

    /// Completes the waiter with its write's outcome, or the group's error.
    fn complete(self, outcome: Result<Outcome, StoreError>) {
        match self {
            Waiter::Nobody => {}
            Waiter::Ack(done) | Waiter::Barrier(done) => {
                let _ = done.send(outcome.map(drop));
            }
            Waiter::Numbered(done, numbered) => {
                let seq = outcome.and_then(|outcome| match outcome {
                    Outcome::Appended(seq) => Ok(seq),
                    other => Err(engine_bug(&format!("{other:?} for a numbered append"))),
                });
                let acked = seq.as_ref().map(drop).map_err(Clone::clone);
                numbered(seq);
                let _ = done.send(acked);
            }
            Waiter::Events(done) => {
                let appended = outcome.and_then(|outcome| match outcome {
                    Outcome::Done => Ok(EventsAppend::Written),
                    Outcome::Conflict => Ok(EventsAppend::SeqTaken),
                    other => Err(engine_bug(&format!("{other:?} for an events append"))),
                });
                let _ = done.send(appended);
            }
            Waiter::Created(done, record) => {
                let created = outcome.and_then(|outcome| match outcome {
                    Outcome::Created(number) => number.map(|number| IncidentRecord {
                        id: IncidentId::new(number),
                        ..record
                    }),
                    other => Err(engine_bug(&format!("{other:?} for a creation"))),
                });
                let _ = done.send(created);
            }
            Waiter::Moved(done, note) => {
                let moved = match outcome {
                    Ok(Outcome::Moved(moved)) => {
                        note.log(&moved);
                        moved.map(|record| record.is_some())
                    }
                    Ok(other) => Err(engine_bug(&format!("{other:?} for a quarantine move"))),
                    Err(error) => Err(error),
                };
                if let Some(done) = done {
                    let _ = done.send(moved);
                }
            }
        }
    }
}

impl MoveNote {
    fn of(request: &QuarantineMove) -> Self {
        Self {
            incident: IncidentId::new(request.incident),
            kind: request.kind,
            seq: request.at.seq(),
            reason: request.reason.clone(),
        }
    }

    /// Logs what a move to the quarantine did.
    fn log(&self, moved: &Result<Option<QuarantineRecord>, StoreError>) {
        let MoveNote {
            incident,
            kind,
            seq,
            reason,
        } = self;
        let seq = seq.map_or_else(|| "unknown".to_owned(), |seq| seq.to_string());
        match moved {
            Ok(Some(record)) => tracing::error!(
                incident = %incident,
                kind = kind.name(),
                %seq,
                %reason,
                key = %record.original_key,
                "{}",
                kind.consequence()
            ),
            Ok(None) => {
                tracing::debug!(incident = %incident, kind = kind.name(), %seq, "already moved to the quarantine");
            }
            Err(error) => tracing::error!(
                incident = %incident,
                kind = kind.name(),
                %seq,
                %reason,
                %error,
                "cannot move a stored record that does not load to the quarantine; it stays where it is and is skipped again on the next load"
            ),
        }
    }
}

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
        self.quarantine(id, QuarantineKind::Update, seq, update, reason)
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
        self.quarantine(id, QuarantineKind::Snapshot, upto, snapshot, reason)
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
        self.quarantine(id, QuarantineKind::Event, seq, event, reason)
    }

    fn quarantine(
        &self,
        id: &IncidentId,
        kind: QuarantineKind,
        seq: u64,
        expected: &[u8],
        reason: String,
    ) -> Result<oneshot::Receiver<Result<bool, StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        let request = QuarantineMove {
            incident: id.number(),
            kind,
            at: RecordAt::Seq(seq),
            expected: expected.to_vec(),
            reason,
        };
        let note = MoveNote::of(&request);
        self.write(Write::Quarantine(request), Waiter::Moved(Some(done), note))?;
        Ok(wait)
    }

    /// Queues a move to the quarantine without waiting for it.
    fn move_aside(&self, request: QuarantineMove) {
        let note = MoveNote::of(&request);
        let MoveNote {
            incident,
            kind,
            reason,
            ..
        } = MoveNote::of(&request);
        let queued = self.write(Write::Quarantine(request), Waiter::Moved(None, note));
        if let Err(error) = queued {
            tracing::error!(incident = %incident, kind = kind.name(), %reason, %error, "skipped a stored record that does not load, but cannot move it to the quarantine");
        }
    }

    /// Every quarantined record with its id, oldest first. Blocking.
    pub fn quarantined(&self) -> Result<Vec<(Vec<u8>, QuarantineRecord)>, StoreError> {
        let mut records = Vec::new();
        for (id, value) in self.backend.quarantined()? {
            match serde_json::from_slice(&value) {
                Ok(record) => records.push((id, record)),
                Err(error) => {
                    tracing::warn!(key = %hex(&id), %error, "a quarantine record does not decode; leaving it out of the listing");
                }
            }
        }
        Ok(records)
    }

    /// The highest seq of this incident's quarantined records of `kinds`.
    /// Blocking.
    pub fn quarantined_max_seq(
        &self,
        incident: u64,
        kinds: &[QuarantineKind],
    ) -> Result<Option<u64>, StoreError> {
        self.backend.quarantined_max_seq(incident, kinds)
    }
}

#[cfg(test)]
pub(crate) mod test_postgres;

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend kind, for tests that run on each.
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Kind {
        Sled,
        Postgres,
    }

    /// Where a test's store lives.
    pub(super) enum Place {
        Sled(tempfile::TempDir),
        /// A fresh database's URL.
        Postgres(String),
    }

    impl Place {
        pub(super) fn new(kind: Kind) -> Self {
            match kind {
                Kind::Sled => Place::Sled(tempfile::tempdir().unwrap()),
                Kind::Postgres => Place::Postgres(test_postgres::fresh_database()),
            }
        }

        /// A new handle on the place's backend.
        pub(super) fn backend(&self) -> Arc<dyn Backend> {
            match self {
                Place::Sled(dir) => Arc::new(SledBackend::open(dir.path()).unwrap()),
                Place::Postgres(url) => {
                    Arc::new(PostgresBackend::open(url, PoolOptions::default()).unwrap())
                }
            }
        }

        pub(super) fn open(&self) -> Store {
            match self {
                // sled unlocks a moment after the last handle closed.
                Place::Sled(dir) => {
                    Store::open_when_unlocked(dir.path(), std::time::Duration::from_secs(60))
                        .unwrap()
                }
                Place::Postgres(_) => Store::with_backend(self.backend()).unwrap(),
            }
        }

        /// A log entry's original key, as the backend's quarantine records
        /// keep it.
        fn log_key(&self, incident: u64, seq: u64) -> Vec<u8> {
            match self {
                Place::Sled(_) => sled_backend::log_key(incident, seq).to_vec(),
                Place::Postgres(_) => {
                    postgres_backend::original_key(QuarantineKind::Update, incident, seq)
                }
            }
        }
    }

    /// Runs each named `async fn(Kind)` as a test on each backend:
    /// `<name>::sled` and `<name>::postgres`.
    macro_rules! on_both_backends {
        ($($body:ident),* $(,)?) => {$(
            mod $body {
                #[tokio::test]
                async fn sled() {
                    super::$body(super::Kind::Sled).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$body(super::Kind::Postgres).await
                }
            }
        )*};
    }

    /// PostgreSQL stopped and started again under a store: the check and
    /// the writes fail meanwhile (nothing acknowledged), the writer goes
    /// on, and the store works again once the database is back (the
    /// document whose write failed once it is loaded again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_outage_fails_writes_and_checks_until_the_database_returns() {
        let database = test_postgres::PgServer::start().unwrap_or_else(|error| panic!("{error}"));
        let url = database.create_database();
        let options = PoolOptions {
            size: 4,
            connection_timeout: std::time::Duration::from_secs(1),
        };
        let store =
            Store::with_backend(Arc::new(PostgresBackend::open(&url, options).unwrap())).unwrap();
        let id = incident(&store, "outage").await.id;
        let append = |seq: u64, text: &str| store.append(&id, seq, text.as_bytes().to_vec());
        append(1, "before").unwrap().await.unwrap().unwrap();
        store.check().unwrap();

        database.stop_immediate();
        let started = std::time::Instant::now();
        let checked = tokio::task::block_in_place(|| store.check());
        assert!(checked.is_err(), "the check passed with the database down");
        // It gives up rather than hang: a bound far above its own timeout,
        // so a loaded machine cannot fail it; how fast is for benchmarks.
        assert!(
            started.elapsed() < CHECK_TIMEOUT * 30,
            "the check took {:?}",
            started.elapsed()
        );
        let failed = append(2, "during").unwrap().await.unwrap();
        assert!(
            failed.is_err(),
            "a write was acknowledged with the database down"
        );
        assert!(store.barrier().unwrap().await.unwrap().is_err());

        database.restart();
        let started = std::time::Instant::now();
        while tokio::task::block_in_place(|| store.check()).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the store did not reconnect"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // The database is back, but the document's writes stay refused
        // until it is loaded again: a write queued after the lost one may
        // depend on it.
        let fenced = append(3, "depends on the lost one").unwrap().await.unwrap();
        assert!(fenced.is_err(), "a write after a lost one was stored");
        store.before_load(&id).unwrap().await.unwrap().unwrap();
        append(2, "after").unwrap().await.unwrap().unwrap();
        let stored = tokio::task::block_in_place(|| store.load_doc(&id)).unwrap();
        assert_eq!(
            stored.updates,
            [(1, b"before".to_vec()), (2, b"after".to_vec())]
        );
    }

    on_both_backends!(
        incident_ids_are_sequential_and_survive_reopening,
        events_are_durable_in_order_and_read_from_a_sequence_number,
        compaction_removes_every_covered_entry_whether_or_not_it_shares_a_group,
        quarantining_moves_a_record_aside_keeping_its_bytes_and_its_seq,
        an_export_imports_into_either_backend_as_it_was,
    );

    pub(super) fn actor() -> Actor {
        Actor {
            id: commandpost_shared::UserId("ada".into()),
            name: "Ada".into(),
        }
    }

    pub(super) async fn incident(store: &Store, title: &str) -> IncidentRecord {
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

    async fn incident_ids_are_sequential_and_survive_reopening(kind: Kind) {
        let place = Place::new(kind);
        {
            let store = place.open();
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
        let store = place.open();
        assert_eq!(incident(&store, "three").await.id, IncidentId::new(3));
        let titles: Vec<_> = store
            .list_incidents()
            .unwrap()
            .into_iter()
            .map(|r| r.title)
            .collect();
        assert_eq!(titles, ["one", "two", "three"]);
    }

    async fn events_are_durable_in_order_and_read_from_a_sequence_number(kind: Kind) {
        let place = Place::new(kind);
        let store = place.open();
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

    async fn compaction_removes_every_covered_entry_whether_or_not_it_shares_a_group(kind: Kind) {
        let place = Place::new(kind);
        let store = place.open();
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

    async fn quarantining_moves_a_record_aside_keeping_its_bytes_and_its_seq(kind: Kind) {
        let place = Place::new(kind);
        let store = place.open();
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
            crate::quarantine::unhex(update.bytes.as_deref().unwrap_or_default()).unwrap(),
            [3; 4],
            "the bytes are kept"
        );
        assert_eq!(
            crate::quarantine::unhex(&update.original_key).unwrap(),
            place.log_key(id.number(), 3)
        );
        let (_, event) = &records[1];
        assert_eq!(event.kind, QuarantineKind::Event);
        assert_eq!(
            crate::quarantine::unhex(event.bytes.as_deref().unwrap_or_default()).unwrap(),
            b"not json"
        );
    }

    /// An export of every kind of record, imported into an empty store of
    /// either backend, exports the same again (quarantine ids aside, which
    /// each backend assigns its own way).
    async fn an_export_imports_into_either_backend_as_it_was(kind: Kind) {
        let place = Place::new(kind);
        let store = place.open();
        let first = incident(&store, "first").await.id;
        let second = incident(&store, "second").await.id;
        for seq in 1..=5u64 {
            store
                .append(&first, seq, vec![seq as u8; 3])
                .unwrap()
                .await
                .unwrap()
                .unwrap();
        }
        store.compact(&first, 3, b"snapshot-3".to_vec()).unwrap();
        store
            .append_events(&second, 2, vec![b"two".to_vec(), b"three".to_vec()])
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .quarantine_event(&second, 3, b"three", "test".into())
                .unwrap()
                .await
                .unwrap()
                .unwrap()
        );
        store
            .revoke(&Revocation {
                jti: "revoked-1".into(),
                revoked_at: Utc::now(),
                revoked_by: "admin".into(),
            })
            .await
            .unwrap();
        let exported = store.export(Vec::new()).await.unwrap();
        let comparable = |records: &[Record]| {
            let mut text: Vec<String> = records
                .iter()
                .map(|record| match record {
                    Record::Quarantined { record, .. } => {
                        format!("quarantined {}", String::from_utf8_lossy(record))
                    }
                    other => format!("{other:?}"),
                })
                .collect();
            text.sort();
            text
        };
        // 1 counter, 2 incidents, 2 snapshots, updates 4 and 5, events 1 of
        // each and 2 of the second, 1 revocation, 1 quarantined event.
        assert_eq!(exported.len(), 12, "{exported:#?}");
        for target in [Kind::Sled, Kind::Postgres] {
            let copy = Place::new(target).open();
            assert!(copy.is_empty().unwrap());
            copy.import(exported.clone()).unwrap();
            assert!(!copy.is_empty().unwrap());
            let again = copy.export(Vec::new()).await.unwrap();
            assert_eq!(
                comparable(&again),
                comparable(&exported),
                "{kind:?} into {target:?}"
            );
            // The copy goes on where the original left off.
            assert_eq!(incident(&copy, "third").await.id, IncidentId::new(3));
            assert_eq!(copy.load_doc(&first).unwrap().next_seq, 6);
            assert_eq!(
                copy.quarantined_max_seq(second.number(), &[QuarantineKind::Event])
                    .unwrap(),
                Some(3)
            );
        }
    }
}
