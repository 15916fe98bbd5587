//! Rooms: one live yrs document per incident, shared by its connections.
//!
//! [`Rooms`] is the registry. Exactly one [`Room`] exists per incident at a
//! time: the registry maps each incident to one `OnceCell`, so simultaneous
//! first connections share a single load, and a connection joins a room only
//! while holding the registry lock, so a room being unloaded can never gain a
//! connection. A room with no connections is unloaded after the idle timeout,
//! once every write it queued is durable (so a reload sees all of them).
//!
//! A room owns its document ([`Awareness`] holds the `Doc`) behind a plain
//! mutex that is never held across an `.await`, and a broadcast channel that
//! carries each outgoing message, encoded once, to every connection.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use commandpost_shared::{IncidentId, Presence};
use tokio::sync::{OnceCell, broadcast, oneshot};
use yrs::sync::Awareness;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::config::ServerConfig;
use crate::metrics::METRICS;
use crate::protocol::{Access, AwarenessRefusal, ClientMessage, Effect, ProtocolError, Session};
use crate::store::{Store, StoreError, StoredDoc};

/// A message fanned out to a room's connections.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The connection it came from (which does not need it back), or
    /// [`EVERYONE`].
    pub from: u64,
    pub bytes: Bytes,
}

/// The `from` of a message that every connection receives, its sender
/// included (connection ids start at 1).
pub const EVERYONE: u64 = 0;

/// The mutable part of a room.
pub struct RoomState {
    pub awareness: Awareness,
    /// Sequence number for the next appended update (when the room numbers
    /// its updates: on sled).
    next_seq: u64,
    /// When storage numbers updates (PostgreSQL, where several nodes may
    /// append to one document): every update of the log up to this seq is
    /// in the live document. Advanced by this node's commits and other
    /// nodes' updates when each is the next one, and by catching up from
    /// storage otherwise.
    applied: u64,
    /// Whether storage numbers the updates ([`Store::numbers_updates`]).
    numbered: bool,
    /// A catch-up from storage is running; another was asked for meanwhile.
    catching_up: bool,
    catch_up_again: bool,
    /// Awareness states of other nodes' editors and when each was last
    /// renewed: one not renewed within `--cluster-awareness-timeout` (its
    /// node died, or the bus lost the removal) is removed here.
    remote_awareness: HashMap<yrs::block::ClientID, Instant>,
    /// Updates and bytes in the log since the last snapshot.
    log_updates: u64,
    log_bytes: u64,
    /// Of `log_bytes`, those a refused compaction left in the log: they
    /// still count towards the document's size, not towards the next
    /// compaction (which would otherwise be tried on every update).
    log_bytes_kept: u64,
    /// Size of the last snapshot.
    snapshot_bytes: u64,
    /// Set when a refused update may have been partly integrated: from then
    /// on nothing is applied or stored here, and the room is being replaced.
    poisoned: bool,
    /// The whole document as a sync step 2 message, for joining clients
    /// that have nothing yet; dropped whenever the document changes.
    full_sync: Option<Bytes>,
    /// Fan-out batching: updates waiting for the room's next relay, with
    /// the connection each came from.
    pending: Vec<(u64, Vec<u8>)>,
    /// When the pending updates will be relayed (a flush is scheduled).
    flush_at: Option<Instant>,
    /// When updates were last relayed.
    last_relay: Option<Instant>,
    /// Whether an update since the last snapshot deleted something: only
    /// then can compacting at the size limit reclaim space.
    deleted_since_snapshot: bool,
    /// When the size limit last made the room compact.
    limit_compacted_at: Option<Instant>,
}

impl RoomState {
    /// The last log seq the live document is known to contain, with every
    /// one before it: what a compaction may cover.
    fn covered(&self) -> u64 {
        if self.numbered {
            self.applied
        } else {
            self.next_seq - 1
        }
    }

    /// The document's stored size: last snapshot plus the log after it.
    pub fn stored_bytes(&self) -> u64 {
        self.snapshot_bytes + self.log_bytes
    }

    /// Records that a committed update deleted something.
    pub fn note_deletion(&mut self) {
        self.deleted_since_snapshot = true;
    }

    /// Sync step 2 for a client with an empty state vector: the whole
    /// document, encoded once per change however many clients join.
    pub fn full_sync(&mut self) -> Bytes {
        let awareness = &self.awareness;
        self.full_sync
            .get_or_insert_with(|| {
                let update = awareness
                    .doc()
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                crate::protocol::encode(&yrs::sync::Message::Sync(
                    yrs::sync::SyncMessage::SyncStep2(update),
                ))
            })
            .clone()
    }
}

/// Shortest time between two compactions forced by the size limit. Each
/// one costs an encode and a decode of the whole (full-sized) document, and
/// a client could otherwise force one with every one-character deletion.
const LIMIT_COMPACTION_INTERVAL: Duration = Duration::from_secs(1);

/// One live incident document.
pub struct Room {
    pub id: IncidentId,
    /// Plain mutex: held only for CPU work on the document, never across
    /// `.await` and never while sending to a socket.
    state: parking_lot::Mutex<RoomState>,
    sender: broadcast::Sender<Outbound>,
    editors: AtomicU32,
    viewers: AtomicU32,
    /// Bumped on every join; lets the unloader see that the room was used.
    epoch: AtomicU64,
    /// Cancelled when the room is evicted: its connections close with 1012
    /// and reconnect to a fresh load.
    pub closing: tokio_util::sync::CancellationToken,
    store: Store,
    compact_after_updates: u64,
    compact_after_bytes: u64,
    fanout_window_per_1000: Duration,
    fanout_window_max: Duration,
    fanout_window_min: Duration,
    /// The cluster bus, when this node is one of several.
    bus: Option<crate::cluster::Bus>,
    /// The runtime the room was loaded on: storage's writer thread tells
    /// the room about commits and the room spawns from there.
    runtime: tokio::runtime::Handle,
    /// The registry, for eviction from tasks the room starts.
    rooms: std::sync::Weak<RoomsInner>,
    /// Awareness messages of this node's connections not yet published to
    /// the other nodes (coalesced, see [`AWARENESS_PUBLISH_EVERY`]).
    awareness_out: parking_lot::Mutex<Vec<Bytes>>,
    /// The counts last published to the other nodes, and when.
    presence_published: parking_lot::Mutex<Option<(Presence, Instant)>>,
}

impl Room {
    /// Subscribes to the room's broadcast. Subscribe before reading the
    /// document for a greeting, so nothing falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<Outbound> {
        self.sender.subscribe()
    }

    /// Runs `f` on the document state under the room lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut RoomState) -> R) -> R {
        f(&mut self.state.lock())
    }

    /// Sends to every subscribed connection. Call while holding the state
    /// (inside [`Room::with_state`]) so broadcast order equals apply order.
    pub fn broadcast(&self, from: u64, bytes: Bytes) {
        // An error only means nobody is subscribed.
        let _ = self.sender.send(Outbound { from, bytes });
    }

    /// Sends an awareness message of this node's connections to every
    /// subscribed connection and, in a cluster, to the other nodes.
    pub fn broadcast_awareness(&self, from: u64, bytes: Bytes) {
        if self.bus.is_some() {
            self.awareness_out.lock().push(bytes.clone());
        }
        self.broadcast(from, bytes);
    }

    /// Publishes the awareness messages gathered since the last time, as
    /// one bus message.
    fn publish_awareness(&self) {
        let Some(bus) = &self.bus else { return };
        let frames = std::mem::take(&mut *self.awareness_out.lock());
        if frames.is_empty() {
            return;
        }
        let mut payload = Vec::new();
        for frame in &frames {
            payload.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            payload.extend_from_slice(frame);
        }
        bus.publish(crate::cluster::Kind::Awareness, &self.id, 0, &payload);
    }

    /// Publishes this node's counts when they changed, and at least every
    /// `renew` while nonzero (others forget counts not renewed in time).
    fn publish_presence(&self, renew: Duration) {
        let Some(bus) = &self.bus else { return };
        let now = self.presence();
        let mut published = self.presence_published.lock();
        let due = match *published {
            None => now != Presence::default(),
            Some((last, at)) => {
                last != now || (now != Presence::default() && at.elapsed() >= renew)
            }
        };
        if due {
            *published = Some((now, Instant::now()));
            let mut payload = Vec::with_capacity(8);
            payload.extend_from_slice(&now.editors.to_be_bytes());
            payload.extend_from_slice(&now.viewers.to_be_bytes());
            bus.publish(crate::cluster::Kind::Presence, &self.id, 0, &payload);
        }
    }

    /// Applies awareness messages another node's editors sent and relays
    /// them to this node's connections.
    fn apply_remote_awareness(&self, payload: &[u8]) {
        let mut state = self.state.lock();
        let mut rest = payload;
        while rest.len() >= 4 {
            let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(frame) = rest.get(4..4 + length) else {
                break;
            };
            rest = &rest[4 + length..];
            let decoded = catch_unwind(AssertUnwindSafe(|| {
                <yrs::sync::Message as Decode>::decode_v1(frame)
            }));
            let Ok(Ok(yrs::sync::Message::Awareness(update))) = decoded else {
                tracing::warn!(incident = %self.id, "ignored an awareness message from another node that does not decode");
                continue;
            };
            let now = Instant::now();
            for (client, entry) in &update.clients {
                if entry.json.as_ref() == "null" {
                    state.remote_awareness.remove(client);
                } else {
                    state.remote_awareness.insert(*client, now);
                }
            }
            if state.awareness.apply_update(update).is_ok() {
                self.broadcast(EVERYONE, Bytes::copy_from_slice(frame));
            }
        }
    }

    /// Removes other nodes' awareness states not renewed within `timeout`
    /// (y-protocols' own, 30 s, by default, so a dead node's cursors go
    /// away everywhere as a dead client's would), telling this node's
    /// connections.
    fn expire_remote_awareness(&self, timeout: Duration) {
        let mut state = self.state.lock();
        let expired: Vec<yrs::block::ClientID> = state
            .remote_awareness
            .iter()
            .filter(|(_, renewed)| renewed.elapsed() >= timeout)
            .map(|(client, _)| *client)
            .collect();
        if expired.is_empty() {
            return;
        }
        for client in &expired {
            state.remote_awareness.remove(client);
            state.awareness.remove_state(*client);
        }
        if let Ok(update) = state.awareness.update_with_clients(expired) {
            self.broadcast(
                EVERYONE,
                crate::protocol::encode(&yrs::sync::Message::Awareness(update)),
            );
        }
    }

    /// Assigns the next log sequence number and queues the update for
    /// storage; compacts the log when it grew past its bounds. Call inside
    /// [`Room::with_state`].
    pub fn persist(
        self: &Arc<Self>,
        state: &mut RoomState,
        update: Vec<u8>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        state.full_sync = None;
        state.log_updates += 1;
        state.log_bytes += update.len() as u64;
        let saved = if state.numbered {
            // Storage numbers it. Once committed (before the sender hears
            // "saved"), the update goes to the other nodes with its seq.
            let room = Arc::downgrade(self);
            let id = self.id.clone();
            let published = self.bus.clone().map(|bus| (bus, update.clone()));
            self.store.append_numbered(
                &self.id,
                update,
                Box::new(move |seq| {
                    let Ok(seq) = seq else { return };
                    if let Some((bus, update)) = &published {
                        bus.publish_update(&id, seq, update);
                    }
                    if let Some(room) = room.upgrade() {
                        room.committed(seq);
                    }
                }),
            )?
        } else {
            let seq = state.next_seq;
            state.next_seq += 1;
            self.store.append(&self.id, seq, update)?
        };
        if state.log_updates >= self.compact_after_updates
            || state.log_bytes - state.log_bytes_kept >= self.compact_after_bytes
        {
            let upto = state.covered();
            self.compact(state, upto)?;
        }
        Ok(saved)
    }

    /// This node's update was committed under `seq` (storage's writer
    /// thread calls this). When updates of other nodes came in between,
    /// the room reads them from storage unless the bus brings them first.
    fn committed(self: &Arc<Self>, seq: u64) {
        let gap = {
            let mut state = self.state.lock();
            if seq == state.applied + 1 {
                state.applied = seq;
                false
            } else {
                seq > state.applied + 1
            }
        };
        if gap {
            self.catch_up();
        }
    }

    /// Another node's update committed under `seq`: applied and relayed
    /// when it is the next one the room lacks, ignored when the room has
    /// it, and otherwise the room reads everything it lacks from storage.
    pub fn apply_remote(self: &Arc<Self>, seq: u64, update: Vec<u8>) {
        let outcome = {
            let mut state = self.state.lock();
            if state.poisoned || seq <= state.applied {
                return;
            }
            if seq > state.applied + 1 {
                None
            } else {
                Some(self.integrate_remote(&mut state, None, vec![(seq, update)]))
            }
        };
        match outcome {
            None => self.catch_up(),
            Some(Ok(())) => {}
            Some(Err(why)) => self.remote_refused(&why),
        }
    }

    /// Reads what the room lacks from storage and applies it, one catch-up
    /// at a time per room (a request made meanwhile runs once more after).
    pub fn catch_up(self: &Arc<Self>) {
        {
            let mut state = self.state.lock();
            if state.catching_up {
                state.catch_up_again = true;
                return;
            }
            state.catching_up = true;
        }
        let room = self.clone();
        self.runtime.spawn(async move {
            loop {
                let after = room.state.lock().applied;
                let store = room.store.clone();
                let id = room.id.clone();
                let read = tokio::task::spawn_blocking(move || store.doc_after(&id, after)).await;
                METRICS.catch_ups.inc();
                let mut state = room.state.lock();
                let again = std::mem::take(&mut state.catch_up_again);
                match read {
                    Ok(Ok((snapshot, updates))) if !state.poisoned => {
                        if let Err(why) = room.integrate_remote(&mut state, snapshot, updates) {
                            state.catching_up = false;
                            drop(state);
                            room.remote_refused(&why);
                            return;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(incident = %room.id, %error, "cannot catch up from storage now; the next check tries again");
                    }
                    Err(error) => {
                        tracing::error!(incident = %room.id, %error, "catching up from storage panicked");
                    }
                }
                if !again {
                    state.catching_up = false;
                    return;
                }
            }
        });
    }

    /// Applies committed updates (and a snapshot) of other nodes that the
    /// room lacks, each in a transaction of its own as a load does, and
    /// relays what changed to this node's connections as one update.
    fn integrate_remote(
        self: &Arc<Self>,
        state: &mut RoomState,
        snapshot: Option<(u64, Vec<u8>)>,
        updates: Vec<(u64, Vec<u8>)>,
    ) -> Result<(), String> {
        let doc = state.awareness.doc().clone();
        let before = doc.transact().state_vector();
        let had = state.applied;
        let mut applied = had;
        let mut bytes = 0;
        let parts = snapshot
            .filter(|(upto, _)| *upto > had)
            .into_iter()
            .chain(updates.into_iter().filter(|(seq, _)| *seq > had));
        for (seq, update) in parts {
            let decoded = decode_stored(&update).map_err(|why| format!("update {seq}: {why}"))?;
            let mut txn = doc.transact_mut();
            if let Err(why) = integrate(&mut txn, decoded) {
                discard(txn);
                state.poisoned = true;
                return Err(format!("update {seq}: {why}"));
            }
            if catch_unwind(AssertUnwindSafe(move || drop(txn))).is_err() {
                state.poisoned = true;
                return Err(format!("update {seq}: committing it panicked"));
            }
            applied = applied.max(seq);
            bytes += update.len() as u64;
            state.log_updates += 1;
        }
        if applied == state.applied {
            return Ok(());
        }
        state.applied = applied;
        state.log_bytes += bytes;
        let changed = doc.transact().encode_state_as_update_v1(&before);
        // Two bytes: an empty update (the room had it all already).
        if changed.len() > 2 {
            state.full_sync = None;
            self.relay_update(state, EVERYONE, changed);
        }
        Ok(())
    }

    /// An update another node committed does not apply here: the room is
    /// replaced by a fresh load from storage.
    fn remote_refused(self: &Arc<Self>, why: &str) {
        tracing::error!(incident = %self.id, %why, "an update committed by another node does not apply to the live document; reloading the room from storage");
        match self.rooms.upgrade() {
            Some(inner) => Rooms { inner }.evict(self),
            None => self.closing.cancel(),
        }
    }

    /// Replaces the log up to `upto` with a snapshot of the live document,
    /// unless that snapshot would not reload as the live document (see
    /// [`compaction_snapshot`]): then the log stays as it is, and is tried
    /// again after as many updates. Whether it compacted.
    fn compact(&self, state: &mut RoomState, upto: u64) -> Result<bool, StoreError> {
        let started = Instant::now();
        match compaction_snapshot(state.awareness.doc()) {
            Ok(snapshot) => {
                let bytes = snapshot.len() as u64;
                self.store.compact(&self.id, upto, snapshot)?;
                state.snapshot_bytes = bytes;
                state.log_updates = 0;
                state.log_bytes = 0;
                state.log_bytes_kept = 0;
                state.deleted_since_snapshot = false;
                tracing::debug!(incident = %self.id, upto, elapsed_ms = started.elapsed().as_millis() as u64, "compacted document log");
                Ok(true)
            }
            Err(why) => {
                state.log_updates = 0;
                state.log_bytes_kept = state.log_bytes;
                crate::metrics::METRICS.compactions_refused.inc();
                tracing::error!(incident = %self.id, upto, %why, "not compacting the document log: a snapshot would not reload as the live document (an update with inconsistent origins, which no Yjs client sends); the log is kept, so a restart still loads what everyone sees");
                Ok(false)
            }
        }
    }

    /// At the size limit: compacts the document so that what was deleted
    /// since the last snapshot no longer counts (the snapshot holds no
    /// deleted text; yrs garbage-collects it), if something was deleted and
    /// the last such compaction is at least [`LIMIT_COMPACTION_INTERVAL`]
    /// old. Whether it compacted; the caller re-checks
    /// [`RoomState::stored_bytes`]. Call inside [`Room::with_state`].
    pub fn compact_at_limit(&self, state: &mut RoomState) -> Result<bool, StoreError> {
        let now = Instant::now();
        if state.poisoned
            || state.log_updates == 0
            || !state.deleted_since_snapshot
            || state
                .limit_compacted_at
                .is_some_and(|at| now.saturating_duration_since(at) < LIMIT_COMPACTION_INTERVAL)
        {
            return Ok(false);
        }
        state.limit_compacted_at = Some(now);
        let before = state.stored_bytes();
        let upto = state.covered();
        let compacted = self.compact(state, upto)?;
        if compacted {
            crate::metrics::METRICS.limit_compactions.inc();
            tracing::info!(incident = %self.id, before, after = state.stored_bytes(), "compacted the document at its size limit");
        }
        Ok(compacted)
    }

    /// Relays a document update from connection `from` to the room. Call
    /// inside [`Room::with_state`], after the update was applied.
    ///
    /// Small rooms relay every update at once. In a large room, relaying is
    /// what costs (one socket write per connection per message), so updates
    /// are relayed at most once per batching window: the first update after
    /// a quiet spell goes out immediately, and those arriving within the
    /// window are merged into one update that goes out when it ends.
    pub fn relay_update(self: &Arc<Self>, state: &mut RoomState, from: u64, update: Vec<u8>) {
        let window = self.fanout_window();
        let now = Instant::now();
        let quiet = state
            .last_relay
            .is_none_or(|last| now.saturating_duration_since(last) >= window);
        if state.flush_at.is_none() && (window.is_zero() || quiet) {
            state.last_relay = Some(now);
            self.broadcast(from, crate::protocol::encode_update(&update));
            return;
        }
        state.pending.push((from, update));
        if state.flush_at.is_none() {
            let at = state.last_relay.map_or(now, |last| last + window);
            state.flush_at = Some(at);
            let room = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                room.flush_pending();
            });
        }
    }

    /// Relays the updates batched since the last relay, as one message.
    fn flush_pending(&self) {
        let mut state = self.state.lock();
        state.flush_at = None;
        let pending = std::mem::take(&mut state.pending);
        let Some((first_from, _)) = pending.first() else {
            return;
        };
        state.last_relay = Some(Instant::now());
        // The senders' own edits come back to them only when several
        // connections' edits were merged (Yjs ignores what it has).
        let from = if pending.iter().all(|(from, _)| from == first_from) {
            *first_from
        } else {
            EVERYONE
        };
        if pending.len() == 1 {
            self.broadcast(from, crate::protocol::encode_update(&pending[0].1));
            return;
        }
        match yrs::merge_updates_v1(pending.iter().map(|(_, update)| update.as_slice())) {
            Ok(merged) => self.broadcast(from, crate::protocol::encode_update(&merged)),
            Err(error) => {
                // Every update was applied by yrs, so this does not happen;
                // relaying them one by one is still correct.
                tracing::warn!(incident = %self.id, %error, "could not merge batched updates; relaying them one by one");
                for (from, update) in pending {
                    self.broadcast(from, crate::protocol::encode_update(&update));
                }
            }
        }
    }

    /// The fan-out batching window for the room's current size.
    fn fanout_window(&self) -> Duration {
        if self.fanout_window_per_1000.is_zero() {
            return Duration::ZERO;
        }
        let connections = self.connections();
        self.fanout_window_per_1000
            .saturating_mul(connections)
            .checked_div(1000)
            .unwrap_or_default()
            .min(self.fanout_window_max)
            .max(self.fanout_window_min)
    }

    /// Completes once every write queued so far is durable.
    pub fn barrier(
        &self,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        self.store.barrier()
    }

    pub fn presence(&self) -> Presence {
        Presence {
            editors: self.editors.load(Ordering::Relaxed),
            viewers: self.viewers.load(Ordering::Relaxed),
        }
    }

    fn connections(&self) -> u32 {
        self.editors.load(Ordering::Acquire) + self.viewers.load(Ordering::Acquire)
    }

    fn counter(&self, access: Access) -> &AtomicU32 {
        match access {
            Access::ReadWrite => &self.editors,
            Access::ReadOnly => &self.viewers,
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        crate::metrics::METRICS.rooms_loaded.dec();
    }
}

/// A stored part of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocPart {
    /// The snapshot, covering the log up to `upto`.
    Snapshot { upto: u64 },
    /// The log entry with this seq.
    Update(u64),
}

impl std::fmt::Display for DocPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocPart::Snapshot { upto } => write!(f, "snapshot (up to update {upto})"),
            DocPart::Update(seq) => write!(f, "update {seq}"),
        }
    }
}

/// A stored part that does not load, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    pub part: DocPart,
    pub reason: String,
}

/// The snapshot compaction writes of `doc`, once it is known to reload as
/// `doc`: the same state vector, deletions and content of every root (read
/// as a rich-text sequence and as a map, whatever its type).
///
/// yrs re-encodes an item with the origins it arrived with. An update whose
/// items carry origins that contradict each other (no Yjs or yrs client
/// writes one; a hostile client can) integrates at one position in the live
/// document and at another when the snapshot is decoded, so replacing the
/// log with that snapshot would change the document on the next load. Costs
/// one decode of the whole document per compaction.
pub fn compaction_snapshot(doc: &Doc) -> Result<Vec<u8>, String> {
    let snapshot = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let update = decode_stored(&snapshot)?;
    let reloaded = Doc::new();
    let mut txn = reloaded.transact_mut();
    if let Err(why) = integrate(&mut txn, update) {
        discard(txn);
        discard(reloaded);
        return Err(format!("the snapshot does not reload: {why}"));
    }
    if catch_unwind(AssertUnwindSafe(move || drop(txn))).is_err() {
        discard(reloaded);
        return Err("reloading the snapshot panicked".to_owned());
    }
    let (live, reloaded) = (doc.transact(), reloaded.transact());
    if live.state_vector() != reloaded.state_vector() {
        return Err("the snapshot reloads with another state vector".to_owned());
    }
    if live.snapshot().delete_set != reloaded.snapshot().delete_set {
        return Err("the snapshot reloads with other deletions".to_owned());
    }
    let (a, b) = (root_contents(&live), root_contents(&reloaded));
    if a != b {
        let differs = a
            .iter()
            .chain(&b)
            .find(|root| !a.contains(root) || !b.contains(root))
            .map_or("?", |root| root.name.as_str());
        return Err(format!("the snapshot reloads with another `{differs}`"));
    }
    Ok(snapshot)
}

/// What a root holds, read without its type (a server's root types are
/// unknown until something asks for one).
#[derive(PartialEq)]
struct RootContent {
    name: String,
    /// Its sequence as a rich-text delta: text, embeds, nested types and
    /// formatting, in order. (`Any` values of array content are not part of
    /// a delta; the product's documents hold text.)
    sequence: Vec<yrs::types::text::Diff<()>>,
    /// What each nested type in the sequence holds (deeply).
    nested: Vec<yrs::Any>,
    /// Its map entries (deeply).
    map: yrs::Any,
}

/// Every non-empty root, by name.
fn root_contents<T: ReadTxn>(txn: &T) -> Vec<RootContent> {
    use yrs::types::ToJson;
    use yrs::types::text::Text as _;
    let mut roots: Vec<RootContent> = txn
        .root_refs()
        .filter_map(|(name, _)| {
            let branch = yrs::branch::BranchID::get_root(txn, name)?;
            let sequence = yrs::TextRef::from(branch).diff(txn, |_| ());
            let nested = sequence
                .iter()
                .filter(|chunk| !matches!(chunk.insert, yrs::Out::Any(_)))
                .map(|chunk| chunk.insert.to_json(txn))
                .collect();
            let map = yrs::MapRef::from(branch).to_json(txn);
            let empty_map = matches!(&map, yrs::Any::Map(entries) if entries.is_empty());
            (!sequence.is_empty() || !empty_map).then(|| RootContent {
                name: name.to_owned(),
                sequence,
                nested,
                map,
            })
        })
        .collect();
    roots.sort_by(|a, b| a.name.cmp(&b.name));
    roots
}

/// A document rebuilt from storage without the parts that do not load.
pub struct Rebuilt {
    pub doc: Doc,
    /// In storage order.
    pub damaged: Vec<Damaged>,
}

/// A byte offset into the body as yrs takes it.
fn offset(bytes: usize) -> Result<u32, StoreError> {
    u32::try_from(bytes)
        .map_err(|_| StoreError::Corrupt(format!("a body offset of {bytes} bytes is out of range")))
}

/// Rebuilds a document from its snapshot and log, strictly: the first part
/// that does not load is an error (for tools and benchmarks; the server
/// loads with [`rebuild_doc`] and quarantines what it skips).
pub fn build_doc(id: &IncidentId, stored: &StoredDoc) -> Result<Doc, StoreError> {
    let rebuilt = rebuild_doc(stored);
    match rebuilt.damaged.into_iter().next() {
        None => Ok(rebuilt.doc),
        Some(damaged) => Err(StoreError::Corrupt(format!(
            "{id} {}: {}",
            damaged.part, damaged.reason
        ))),
    }
}

/// Rebuilds a document from its snapshot and log, leaving out every part
/// that does not load: one that fails the structural check or does not
/// decode is skipped; one that yrs refuses or panics on while integrating
/// may have been applied in part, so the document is rebuilt from scratch
/// without it. The result never holds part of a skipped update.
///
/// Each part is applied in a transaction of its own, exactly as the live
/// room applied it (`Session::handle_update`). One transaction for the whole
/// log would be faster but is not the same document: yrs collects deleted
/// content and merges items when a transaction commits, and later updates
/// are integrated against that. Two fuzz findings were such logs: one whose
/// entry is refused in a single transaction (an item under collected
/// content), and one that loads there but puts text elsewhere (an update
/// overlapping clocks the room already had; see
/// `a_log_reloads_to_the_text_everyone_saw`).
///
/// A document abandoned half-built is dropped with any panic contained
/// ([`discard`]): dropping it runs yrs code (the transaction's commit) on a
/// state yrs may already have panicked on.
pub fn rebuild_doc(stored: &StoredDoc) -> Rebuilt {
    let parts: Vec<(DocPart, &[u8])> = stored
        .snapshot
        .iter()
        .map(|snapshot| {
            (
                DocPart::Snapshot {
                    upto: stored.snapshot_upto,
                },
                snapshot.as_slice(),
            )
        })
        .chain(
            stored
                .updates
                .iter()
                .map(|(seq, update)| (DocPart::Update(*seq), update.as_slice())),
        )
        .collect();
    let mut skip = vec![false; parts.len()];
    let mut damaged: Vec<(usize, Damaged)> = Vec::new();
    loop {
        let doc = Doc::new();
        match apply_each(&doc, &parts, &mut skip, &mut damaged) {
            Ok(()) => {
                damaged.sort_by_key(|(index, _)| *index);
                return Rebuilt {
                    doc,
                    damaged: damaged.into_iter().map(|(_, damaged)| damaged).collect(),
                };
            }
            Err((index, reason)) => {
                discard(doc);
                skip[index] = true;
                damaged.push((
                    index,
                    Damaged {
                        part: parts[index].0,
                        reason,
                    },
                ));
            }
        }
    }
}

/// Checks and decodes a stored update; neither touches a document.
fn decode_stored(bytes: &[u8]) -> Result<Update, String> {
    // Stored updates passed the same check on the way in; checking again
    // protects against damage on disk and older data.
    crate::update_check::check_stored_update_v1(bytes)
        .map_err(|error| format!("not a valid Yjs update: {error}"))?;
    match catch_unwind(AssertUnwindSafe(|| Update::decode_v1(bytes))) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(error)) => Err(format!("does not decode: {error}")),
        Err(_) => Err("decoding it panicked".to_owned()),
    }
}

/// Decodes the part at `index`, recording it as damaged when it does not.
fn decode_part(
    parts: &[(DocPart, &[u8])],
    index: usize,
    skip: &mut [bool],
    damaged: &mut Vec<(usize, Damaged)>,
) -> Option<Update> {
    match decode_stored(parts[index].1) {
        Ok(update) => Some(update),
        Err(reason) => {
            skip[index] = true;
            damaged.push((
                index,
                Damaged {
                    part: parts[index].0,
                    reason,
                },
            ));
            None
        }
    }
}

/// Applies each part in a transaction of its own, as the live room did;
/// the part that yrs refuses, or panics on, is the error.
fn apply_each(
    doc: &Doc,
    parts: &[(DocPart, &[u8])],
    skip: &mut [bool],
    damaged: &mut Vec<(usize, Damaged)>,
) -> Result<(), (usize, String)> {
    for index in 0..parts.len() {
        if skip[index] {
            continue;
        }
        let Some(update) = decode_part(parts, index, skip, damaged) else {
            continue;
        };
        let mut txn = doc.transact_mut();
        if let Err(reason) = integrate(&mut txn, update) {
            discard(txn);
            return Err((index, reason));
        }
        catch_unwind(AssertUnwindSafe(move || drop(txn)))
            .map_err(|_| (index, "committing it panicked".to_owned()))?;
    }
    Ok(())
}

/// Drops a transaction or document that a refused or panicking update left
/// half-integrated. yrs may panic while committing or freeing such a state;
/// the panic is contained here, as everywhere a document is touched. (These
/// used to be leaked with `mem::forget` for fear of that panic, which cost a
/// few kilobytes per refusal: found by the `session` fuzz target's leak
/// check.)
fn discard<T>(value: T) {
    let _contained = catch_unwind(AssertUnwindSafe(move || drop(value)));
}

/// Integrates one decoded update, turning a refusal or a panic into why.
fn integrate(txn: &mut yrs::TransactionMut<'_>, update: Update) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| txn.apply_update(update))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("yrs refuses to integrate it: {error}")),
        Err(_) => Err("integrating it panicked".to_owned()),
    }
}

/// Reads a document from storage and rebuilds it, moving every part that
/// does not load to the quarantine (the store logs each move). Blocking.
fn load_stored(
    store: &Store,
    id: &IncidentId,
) -> Result<(Doc, StoredDoc, Vec<Damaged>), StoreError> {
    let stored = store.load_doc(id)?;
    let Rebuilt { doc, damaged } = rebuild_doc(&stored);
    for damage in &damaged {
        let queued = match damage.part {
            DocPart::Snapshot { upto } => store.quarantine_snapshot(
                id,
                upto,
                stored.snapshot.as_deref().unwrap_or_default(),
                damage.reason.clone(),
            ),
            DocPart::Update(seq) => {
                let update = stored
                    .updates
                    .iter()
                    .find(|(stored_seq, _)| *stored_seq == seq)
                    .map(|(_, update)| update.as_slice())
                    .unwrap_or_default();
                store.quarantine_update(id, seq, update, damage.reason.clone())
            }
        };
        // The receiver is dropped: the writer logs the move.
        if let Err(error) = queued {
            tracing::error!(incident = %id, part = %damage.part, reason = %damage.reason, %error, "skipped a stored part that does not load, but cannot move it to the quarantine");
        }
    }
    Ok((doc, stored, damaged))
}

type Slot = Arc<OnceCell<Arc<Room>>>;

/// The registry of live rooms.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<RoomsInner>,
}

struct RoomsInner {
    /// Plain mutex: held for map operations only, never across `.await`.
    slots: parking_lot::Mutex<HashMap<IncidentId, Slot>>,
    store: Store,
    config: ServerConfig,
    /// Called with the incident's id each time its room is loaded
    /// ([`Rooms::on_load`]).
    on_load: parking_lot::RwLock<Vec<LoadListener>>,
    /// The cluster bus, when this node is one of several
    /// ([`Rooms::join_cluster`]).
    bus: std::sync::OnceLock<crate::cluster::Bus>,
    /// Other nodes' connection counts per document, by node, with when
    /// each was last renewed.
    #[allow(clippy::type_complexity, reason = "a two-level table")]
    remote_presence:
        parking_lot::Mutex<HashMap<IncidentId, HashMap<[u8; 16], (Presence, Instant)>>>,
}

/// How often rooms read what they lack from storage while the cluster bus
/// is down (other nodes' edits then arrive within about this long), and
/// while it is up (for a message the bus lost).
const CATCH_UP_BUS_DOWN: Duration = Duration::from_millis(250);
const CATCH_UP_BUS_UP: Duration = Duration::from_secs(2);
/// How often a node publishes its editors' awareness changes: one bus
/// message per room per period, however many editors it has.
const AWARENESS_PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Presence counts are renewed at least this often, and a third of
/// `--cluster-awareness-timeout`, after which other nodes forget counts not
/// renewed (a node that died stops counting).
const PRESENCE_RENEW_EVERY: Duration = Duration::from_secs(5);

/// What [`Rooms::on_load`] registers: it runs on the loading task, so it
/// must only hand work off (spawn), never block or join the room itself.
pub type LoadListener = Arc<dyn Fn(&IncidentId) + Send + Sync>;

/// A connection's membership in a room. Dropping it leaves the room, and the
/// last one out schedules the idle unload.
pub struct RoomGuard {
    room: Arc<Room>,
    access: Access,
    rooms: Rooms,
}

impl std::ops::Deref for RoomGuard {
    type Target = Arc<Room>;
    fn deref(&self) -> &Arc<Room> {
        &self.room
    }
}

impl RoomGuard {
    /// Replaces this room: the next join loads the document from storage
    /// again, and every connection of this room is told to reconnect. Call
    /// after marking the room suspect under the room lock.
    pub fn evict(&self) {
        self.rooms.evict(&self.room);
    }

    /// A change this room applied could not be saved (storage failed): the
    /// live document holds what storage does not, so it must not be
    /// served any longer. The room is marked suspect and evicted: every
    /// connection is told to reconnect (1012), the next join reloads what
    /// storage holds, and the clients, which still have the change, send it
    /// again in their sync (stock y-websocket clients do).
    pub fn unsaved(&self) {
        self.rooms.unsaved(&self.room);
    }
}

/// What one frame's messages produced for the connection that sent them.
pub struct Handled {
    /// Messages for this connection only.
    pub replies: Vec<Bytes>,
    /// Each committed change (the client's change number) and when it is
    /// durable.
    pub saving: Vec<(u64, oneshot::Receiver<Result<(), StoreError>>)>,
    /// The client asked for "saved" acknowledgements.
    pub enable_saved: bool,
}

/// Why a room stopped handling a connection's messages. The connection
/// closes; the adapter picks the close code.
#[derive(Debug)]
pub enum Refusal {
    /// An earlier refused update left the document suspect: the room is
    /// being reloaded from storage.
    Reloading,
    /// The session refused a message. When the refusal may have left the
    /// document partly changed, the room has already been evicted.
    Protocol(ProtocolError),
    /// The edit would grow the stored document (`stored` bytes) past
    /// `limit`, even after compacting; nothing of it was applied.
    TooLarge {
        limit: u64,
        stored: u64,
        update: u64,
    },
    /// Storage refused the change; it was not saved.
    Storage(StoreError),
}

impl RoomGuard {
    /// Applies one frame's messages from `connection` to the document: the
    /// per-update rules (the document size limit, a suspect room, the
    /// shared full-sync reply), then the session's effects: relays,
    /// broadcasts, storage and "saved" acknowledgements. `counted` runs for
    /// every message that counts against the sender's message budget (all
    /// but awareness).
    pub fn handle_messages(
        &self,
        session: &mut Session,
        connection: u64,
        messages: Vec<ClientMessage>,
        max_document_bytes: u64,
        now: Duration,
        mut counted: impl FnMut(),
    ) -> Result<Handled, Refusal> {
        let mut handled = Handled {
            replies: Vec::new(),
            saving: Vec::new(),
            enable_saved: false,
        };
        let outcome = self.with_state(|state| {
            if state.poisoned {
                return Err(Refusal::Reloading);
            }
            for message in messages {
                // A client with nothing yet gets the whole document, encoded
                // once per change for everyone who joins.
                if let ClientMessage::SyncStep1(sv) = &message
                    && sv.is_empty()
                {
                    handled.replies.push(state.full_sync());
                    continue;
                }
                let awareness_message = matches!(message, ClientMessage::Awareness(_));
                if !awareness_message {
                    counted();
                }
                if let ClientMessage::Update(update) | ClientMessage::SyncStep2(update) = &message
                    && session.can_write()
                    // Empty updates are 2 bytes.
                    && update.len() > 2
                    && state.stored_bytes() + update.len() as u64 > max_document_bytes
                {
                    self.check_size_limit(state, update, max_document_bytes)?;
                }
                let effects = match session.handle_at(&state.awareness, message, now) {
                    Ok(effects) => effects,
                    Err(error) => {
                        if error.leaves_document_suspect() {
                            state.poisoned = true;
                        }
                        return Err(Refusal::Protocol(error));
                    }
                };
                log_refusals(session.take_refusals());
                if awareness_message
                    && session.awareness_held_back() > 0
                    && !effects
                        .iter()
                        .any(|effect| matches!(effect, Effect::BroadcastAll(_)))
                {
                    METRICS.awareness_coalesced.inc();
                }
                for effect in effects {
                    tracing::trace!(?effect, "effect");
                    match effect {
                        Effect::Reply(bytes) => handled.replies.push(bytes),
                        Effect::Broadcast(bytes) => self.broadcast_awareness(connection, bytes),
                        Effect::BroadcastAll(bytes) => self.broadcast_awareness(EVERYONE, bytes),
                        Effect::Commit { update, change } => {
                            METRICS.updates.inc();
                            if session.last_commit_deleted() {
                                state.note_deletion();
                            }
                            self.relay_update(state, connection, update.clone());
                            let wait = self.persist(state, update).map_err(Refusal::Storage)?;
                            handled.saving.push((change, wait));
                        }
                        Effect::AckWhenDurable { change } => {
                            let wait = self.barrier().map_err(Refusal::Storage)?;
                            handled.saving.push((change, wait));
                        }
                        Effect::EnableSavedAcks => handled.enable_saved = true,
                        Effect::Denied => {
                            tracing::info!("refused a viewer's edit (permission denied sent)")
                        }
                    }
                }
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(handled),
            Err(Refusal::Protocol(error)) => {
                // A refused update may have been partly integrated: the room
                // is replaced by a fresh load from storage.
                if error.leaves_document_suspect() {
                    self.evict();
                }
                Err(Refusal::Protocol(error))
            }
            Err(Refusal::Storage(error)) => {
                self.unsaved();
                Err(Refusal::Storage(error))
            }
            Err(refusal) => Err(refusal),
        }
    }

    /// An update would grow the document past `max_document_bytes`. It goes
    /// through anyway if it only deletes (that never grows the document; a
    /// full document must stay editable down), or if compacting the
    /// document (dropping deleted text from storage) made room.
    fn check_size_limit(
        &self,
        state: &mut RoomState,
        update: &[u8],
        max_document_bytes: u64,
    ) -> Result<(), Refusal> {
        match crate::protocol::only_deletes(update) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            // Refused by the session with its precise reason.
            Err(_) => return Ok(()),
        }
        self.compact_at_limit(state).map_err(Refusal::Storage)?;
        if state.stored_bytes() + update.len() as u64 <= max_document_bytes {
            return Ok(());
        }
        Err(Refusal::TooLarge {
            limit: max_document_bytes,
            stored: state.stored_bytes(),
            update: update.len() as u64,
        })
    }
}

/// One log line (and a metric) per awareness entry the session dropped.
fn log_refusals(refusals: Vec<AwarenessRefusal>) {
    for refusal in refusals {
        match refusal {
            AwarenessRefusal::Foreign { client } => {
                METRICS
                    .awareness_refused
                    .get_or_create(&crate::metrics::ReasonLabel { reason: "foreign" })
                    .inc();
                tracing::warn!(
                    client,
                    "dropped an awareness state for a client id another connection owns"
                );
            }
            AwarenessRefusal::ForeignRemoval { client } => {
                METRICS
                    .awareness_refused
                    .get_or_create(&crate::metrics::ReasonLabel {
                        reason: "foreign_removal",
                    })
                    .inc();
                // Stock clients do this when a peer's renewal is late.
                tracing::info!(
                    client,
                    "kept an awareness state another connection owns that this one tried to remove"
                );
            }
        }
    }
}

impl Drop for RoomGuard {
    fn drop(&mut self) {
        let remaining = {
            let _slots = self.rooms.inner.slots.lock();
            self.room
                .counter(self.access)
                .fetch_sub(1, Ordering::AcqRel);
            self.room.connections()
        };
        if remaining == 0 {
            let rooms = self.rooms.clone();
            let room = self.room.clone();
            let epoch = room.epoch.load(Ordering::Acquire);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { rooms.unload_when_idle(room, epoch).await });
            }
        }
    }
}

impl Rooms {
    /// [`RoomGuard::evict`] for `room`.
    fn evict(&self, room: &Arc<Room>) {
        {
            let mut slots = self.inner.slots.lock();
            let same = slots
                .get(&room.id)
                .and_then(|slot| slot.get())
                .is_some_and(|current| Arc::ptr_eq(current, room));
            if same {
                slots.remove(&room.id);
            }
        }
        room.closing.cancel();
    }

    /// [`RoomGuard::unsaved`] for `room`.
    fn unsaved(&self, room: &Arc<Room>) {
        room.with_state(|state| state.poisoned = true);
        self.evict(room);
    }

    pub fn new(store: Store, config: ServerConfig) -> Self {
        Self {
            inner: Arc::new(RoomsInner {
                slots: parking_lot::Mutex::new(HashMap::new()),
                store,
                config,
                on_load: parking_lot::RwLock::new(Vec::new()),
                bus: std::sync::OnceLock::new(),
                remote_presence: parking_lot::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Makes this node one of a cluster: committed updates go out on
    /// `bus`, other nodes' updates handed to [`Rooms::deliver`] are applied
    /// to the loaded rooms, and every loaded room reads what it lacks from
    /// storage after the bus (re)connects and every [`CATCH_UP_BUS_UP`]
    /// (every [`CATCH_UP_BUS_DOWN`] while the bus is down). Runs until
    /// `shutdown`.
    pub fn join_cluster(
        &self,
        bus: crate::cluster::Bus,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        if self.inner.bus.set(bus.clone()).is_err() {
            return;
        }
        let rooms = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(AWARENESS_PUBLISH_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_check = Instant::now();
            let mut last_sweep = Instant::now();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {
                        for room in rooms.loaded_rooms() {
                            room.publish_awareness();
                        }
                        let timeout = rooms.inner.config.cluster_awareness_timeout;
                        if last_sweep.elapsed() >= (timeout / 10).min(Duration::from_secs(1)) {
                            last_sweep = Instant::now();
                            let renew = (timeout / 3).min(PRESENCE_RENEW_EVERY);
                            for room in rooms.loaded_rooms() {
                                room.publish_presence(renew);
                                room.expire_remote_awareness(timeout);
                            }
                            rooms.inner.remote_presence.lock().retain(|_, nodes| {
                                nodes.retain(|_, (_, at)| at.elapsed() < timeout);
                                !nodes.is_empty()
                            });
                        }
                        let every = if bus.connected() { CATCH_UP_BUS_UP } else { CATCH_UP_BUS_DOWN };
                        if last_check.elapsed() >= every {
                            last_check = Instant::now();
                            for room in rooms.loaded_rooms() {
                                room.catch_up();
                            }
                        }
                    }
                }
            }
        });
    }

    /// What another node published about a document (an update, an
    /// awareness change), or that the bus (re)subscribed.
    pub fn deliver(&self, delivery: &crate::cluster::Delivery) {
        use crate::cluster::{Delivery, Kind};
        match delivery {
            Delivery::Message {
                kind: Kind::Update,
                incident,
                seq,
                payload,
                ..
            } => {
                if let Some(room) = self.loaded(incident) {
                    room.apply_remote(*seq, payload.clone());
                }
            }
            Delivery::Message {
                kind: Kind::Awareness,
                incident,
                payload,
                ..
            } => {
                if let Some(room) = self.loaded(incident) {
                    room.apply_remote_awareness(payload);
                }
            }
            Delivery::Message {
                kind: Kind::Presence,
                incident,
                node,
                payload,
                ..
            } => {
                if let (Some(editors), Some(viewers)) = (payload.get(..4), payload.get(4..8)) {
                    let counts = Presence {
                        editors: u32::from_be_bytes(editors.try_into().unwrap_or_default()),
                        viewers: u32::from_be_bytes(viewers.try_into().unwrap_or_default()),
                    };
                    let mut remote = self.inner.remote_presence.lock();
                    let nodes = remote.entry(incident.clone()).or_default();
                    if counts == Presence::default() {
                        nodes.remove(node);
                    } else {
                        nodes.insert(*node, (counts, Instant::now()));
                    }
                }
            }
            Delivery::Message { .. } => {}
            Delivery::Resubscribed => {
                for room in self.loaded_rooms() {
                    room.catch_up();
                }
            }
        }
    }

    /// The incident's room if it is loaded.
    fn loaded(&self, id: &IncidentId) -> Option<Arc<Room>> {
        self.inner
            .slots
            .lock()
            .get(id)
            .and_then(|slot| slot.get().cloned())
    }

    fn loaded_rooms(&self) -> Vec<Arc<Room>> {
        self.inner
            .slots
            .lock()
            .values()
            .filter_map(|slot| slot.get().cloned())
            .collect()
    }

    /// Registers `listener` to be told each time a room is loaded (after it
    /// is in place; the document sync checks its exit-criteria block).
    pub fn on_load(&self, listener: LoadListener) {
        self.inner.on_load.write().push(listener);
    }

    /// Joins the incident's room, loading it from storage if needed.
    pub async fn join(&self, id: &IncidentId, access: Access) -> Result<RoomGuard, StoreError> {
        let room = self.attach(id, Some(access)).await?;
        Ok(RoomGuard {
            room,
            access,
            rooms: self.clone(),
        })
    }

    /// The incident's live room, loaded if needed; counted as a connection
    /// of `access` when given (the caller then owns a [`RoomGuard`]).
    async fn attach(
        &self,
        id: &IncidentId,
        access: Option<Access>,
    ) -> Result<Arc<Room>, StoreError> {
        loop {
            let slot = self
                .inner
                .slots
                .lock()
                .entry(id.clone())
                .or_default()
                .clone();
            let mut loaded_now = false;
            let room = slot
                .get_or_try_init(|| {
                    loaded_now = true;
                    self.load(id.clone())
                })
                .await?
                .clone();
            if loaded_now {
                // What other nodes committed between the load's read and
                // the room being in place.
                if room.bus.is_some() {
                    room.catch_up();
                }
                let listeners = self.inner.on_load.read().clone();
                for listener in listeners {
                    listener(id);
                }
            }
            let slots = self.inner.slots.lock();
            // The slot may have been unloaded between the two locks: then
            // start over with a fresh one.
            if slots
                .get(id)
                .is_some_and(|current| Arc::ptr_eq(current, &slot))
            {
                if let Some(access) = access {
                    room.counter(access).fetch_add(1, Ordering::AcqRel);
                }
                room.epoch.fetch_add(1, Ordering::AcqRel);
                drop(slots);
                return Ok(room);
            }
        }
    }

    /// A server-side edit of the document's body: `edit` sees the current
    /// text and returns the change to make (byte offsets), or `None`. The
    /// change is applied as one transaction of the room's own client,
    /// relayed to every connection and stored like a client's update;
    /// returns once it is durable, with whether anything changed. Loads the
    /// room if needed without counting as a connection (an idle room is
    /// unloaded again after the idle timeout). Used for the exit-criteria
    /// block ([`crate::doc_sync`]).
    pub async fn edit_body(
        &self,
        id: &IncidentId,
        edit: impl FnOnce(&str) -> Option<crate::template::Splice>,
    ) -> Result<bool, StoreError> {
        let room = self.attach(id, None).await?;
        let saved = room.with_state(|state| {
            if state.poisoned {
                return Err(StoreError::Corrupt(format!(
                    "{id}: the room is being reloaded after a refused update; try again"
                )));
            }
            let (update, deleted) = {
                let doc = state.awareness.doc();
                let body = doc.get_or_insert_text(crate::template::BODY);
                let current = body.get_string(&doc.transact());
                let Some(splice) = edit(&current) else {
                    return Ok(None);
                };
                let mut txn = doc.transact_mut();
                let (at, remove) = (offset(splice.at)?, offset(splice.remove)?);
                if remove > 0 {
                    body.remove_range(&mut txn, at, remove);
                }
                body.insert(&mut txn, at, &splice.insert);
                (txn.encode_update_v1(), remove > 0)
            };
            state.deleted_since_snapshot |= deleted;
            room.relay_update(state, EVERYONE, update.clone());
            let persisted = room.persist(state, update);
            if persisted.is_err() {
                state.poisoned = true;
            }
            persisted.map(Some)
        });
        if room.connections() == 0 {
            let rooms = self.clone();
            let idle = room.clone();
            let epoch = idle.epoch.load(Ordering::Acquire);
            tokio::spawn(async move { rooms.unload_when_idle(idle, epoch).await });
        }
        let saved = match saved {
            Ok(Some(saved)) => saved,
            Ok(None) => return Ok(false),
            Err(error) => {
                if room.with_state(|state| state.poisoned) {
                    self.evict(&room);
                }
                return Err(error);
            }
        };
        let outcome = saved.await.map_err(|_| StoreError::WriterGone);
        if let Err(error) | Ok(Err(error)) = outcome {
            self.unsaved(&room);
            return Err(error);
        }
        Ok(true)
    }

    /// Live presence of an incident: this node's connections (none when
    /// its room is not loaded) and, in a cluster, the other nodes' counts.
    pub fn presence(&self, id: &IncidentId) -> Presence {
        let slot = self.inner.slots.lock().get(id).cloned();
        let mut presence = slot
            .and_then(|slot| slot.get().map(|room| room.presence()))
            .unwrap_or_default();
        let timeout = self.inner.config.cluster_awareness_timeout;
        if let Some(nodes) = self.inner.remote_presence.lock().get(id) {
            for (counts, at) in nodes.values() {
                if at.elapsed() < timeout {
                    presence.editors += counts.editors;
                    presence.viewers += counts.viewers;
                }
            }
        }
        presence
    }

    /// The document's `body` text: from the live room when loaded (it may
    /// hold edits still being saved), else from storage.
    pub async fn body_text(&self, id: &IncidentId) -> Result<String, StoreError> {
        let read = |doc: &Doc| {
            let body = doc.get_or_insert_text(crate::template::BODY);
            body.get_string(&doc.transact())
        };
        let loaded = self
            .inner
            .slots
            .lock()
            .get(id)
            .and_then(|slot| slot.get().cloned());
        if let Some(room) = loaded {
            return Ok(room.with_state(|state| read(state.awareness.doc())));
        }
        self.inner
            .store
            .barrier()?
            .await
            .map_err(|_| StoreError::WriterGone)??;
        let store = self.inner.store.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            let (doc, _, _) = load_stored(&store, &id)?;
            Ok(read(&doc))
        })
        .await
        .map_err(|error| StoreError::Corrupt(format!("reading a document panicked: {error}")))?
    }

    async fn load(&self, id: IncidentId) -> Result<Arc<Room>, StoreError> {
        let store = self.inner.store.clone();
        let started = Instant::now();
        // Writes queued by an earlier room of this incident (unloaded or
        // evicted) must be on disk before storage is read; after one failed,
        // this lets the document's writes through again.
        store
            .before_load(&id)?
            .await
            .map_err(|_| StoreError::WriterGone)??;
        let load_id = id.clone();
        let (awareness, next_seq, log_updates, log_bytes, snapshot_bytes, skipped) =
            tokio::task::spawn_blocking(move || {
                let (doc, stored, damaged) = load_stored(&store, &load_id)?;
                // What stays in storage: skipped parts are moved out.
                let kept = |part: DocPart| !damaged.iter().any(|damage| damage.part == part);
                let log: Vec<&Vec<u8>> = stored
                    .updates
                    .iter()
                    .filter(|(seq, _)| kept(DocPart::Update(*seq)))
                    .map(|(_, update)| update)
                    .collect();
                let log_bytes = log.iter().map(|update| update.len() as u64).sum();
                let snapshot_bytes = stored
                    .snapshot
                    .as_ref()
                    .filter(|_| {
                        kept(DocPart::Snapshot {
                            upto: stored.snapshot_upto,
                        })
                    })
                    .map_or(0, |s| s.len() as u64);
                Ok::<_, StoreError>((
                    Awareness::new(doc),
                    stored.next_seq,
                    log.len() as u64,
                    log_bytes,
                    snapshot_bytes,
                    damaged.len(),
                ))
            })
            .await
            .map_err(|error| StoreError::Corrupt(format!("loading {id} panicked: {error}")))??;
        tracing::info!(incident = %id, log_updates, skipped, elapsed_ms = started.elapsed().as_millis() as u64, "room loaded");
        crate::metrics::METRICS.rooms_loaded.inc();
        let (sender, _) = broadcast::channel(self.inner.config.room_buffer_messages);
        Ok(Arc::new(Room {
            id,
            state: parking_lot::Mutex::new(RoomState {
                awareness,
                next_seq,
                applied: next_seq - 1,
                numbered: self.inner.store.numbers_updates(),
                catching_up: false,
                catch_up_again: false,
                remote_awareness: HashMap::new(),
                log_updates,
                log_bytes,
                log_bytes_kept: 0,
                snapshot_bytes,
                poisoned: false,
                full_sync: None,
                pending: Vec::new(),
                flush_at: None,
                last_relay: None,
                deleted_since_snapshot: log_updates > 0,
                limit_compacted_at: None,
            }),
            sender,
            editors: AtomicU32::new(0),
            viewers: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
            closing: tokio_util::sync::CancellationToken::new(),
            store: self.inner.store.clone(),
            compact_after_updates: self.inner.config.compact_after_updates,
            compact_after_bytes: self.inner.config.compact_after_bytes,
            fanout_window_per_1000: self.inner.config.fanout_window_per_1000,
            fanout_window_max: self.inner.config.fanout_window_max,
            fanout_window_min: self.inner.config.fanout_window_min,
            bus: self.inner.bus.get().cloned(),
            runtime: tokio::runtime::Handle::current(),
            rooms: Arc::downgrade(&self.inner),
            awareness_out: parking_lot::Mutex::new(Vec::new()),
            presence_published: parking_lot::Mutex::new(None),
        }))
    }

    /// Compacts the log of every loaded document into a snapshot, so the
    /// next start loads snapshots without replaying logs. Called on clean
    /// shutdown, after the connections closed; the caller then waits for the
    /// writes to be durable.
    pub fn compact_all(&self) -> Result<usize, StoreError> {
        let rooms: Vec<Arc<Room>> = self
            .inner
            .slots
            .lock()
            .values()
            .filter_map(|slot| slot.get().cloned())
            .collect();
        let mut compacted = 0;
        for room in rooms {
            let mut state = room.state.lock();
            if state.poisoned || state.log_updates == 0 {
                continue;
            }
            let upto = state.covered();
            if room.compact(&mut state, upto)? {
                compacted += 1;
            }
        }
        Ok(compacted)
    }

    async fn unload_when_idle(&self, room: Arc<Room>, epoch: u64) {
        tokio::time::sleep(self.inner.config.room_idle_timeout).await;
        if room.connections() != 0 || room.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        let mut slots = self.inner.slots.lock();
        if room.connections() != 0 || room.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        let same = slots
            .get(&room.id)
            .and_then(|slot| slot.get())
            .is_some_and(|current| Arc::ptr_eq(current, &room));
        if same {
            slots.remove(&room.id);
            drop(slots);
            tracing::info!(incident = %room.id, "room unloaded after idle timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use yrs::{Text, TextRef};

    use super::*;

    /// The update a change to `doc` makes.
    fn edit(doc: &Doc, change: impl FnOnce(&mut yrs::TransactionMut<'_>, &TextRef)) -> Vec<u8> {
        let text = doc.get_or_insert_text(crate::template::BODY);
        let before = doc.transact().state_vector();
        change(&mut doc.transact_mut(), &text);
        doc.transact().encode_state_as_update_v1(&before)
    }

    fn body(doc: &Doc) -> String {
        doc.get_or_insert_text(crate::template::BODY)
            .get_string(&doc.transact())
    }

    /// Where a raw item goes: a root type by name, or an item by id.
    enum Parent {
        Root(&'static str),
        Item(u8, u8),
    }

    /// A v1 update with one string item per `(client, parent, text)`.
    fn raw_update(items: &[(u8, Parent, &str)]) -> Vec<u8> {
        let mut bytes = vec![items.len() as u8];
        for (client, parent, text) in items {
            // One struct, of `client`, at clock 0: a string item (content 4)
            // without origins, so its parent follows.
            bytes.extend_from_slice(&[1, *client, 0, 0x04]);
            match parent {
                Parent::Root(name) => {
                    bytes.extend_from_slice(&[1, name.len() as u8]);
                    bytes.extend_from_slice(name.as_bytes());
                }
                Parent::Item(client, clock) => bytes.extend_from_slice(&[0, *client, *clock]),
            }
            bytes.push(text.len() as u8);
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes.push(0); // empty delete set
        bytes
    }

    /// An item from client 42 whose origin (`client`, 39) lies *after* its
    /// right origin (`client`, 8): no Yjs client writes one. Found by the
    /// session fuzz target.
    fn crossed_origins(client: u8) -> Vec<u8> {
        vec![
            1, 1, 42, 0, 0xc4, client, 39, client, 8, 3, b'A', b'A', b'A', 0,
        ]
    }

    #[test]
    fn compaction_writes_no_snapshot_that_would_reload_as_another_document() {
        let doc = Doc::with_client_id(1);
        edit(&doc, |txn, text| {
            text.insert(
                txn,
                0,
                "# INC-1: Checkout API returning 502s\n\n## Summary\n\n",
            )
        });
        let other = Doc::with_client_id(2);
        let shared = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        other
            .transact_mut()
            .apply_update(Update::decode_v1(&shared).unwrap())
            .unwrap();
        let concurrent = edit(&other, |txn, text| text.insert(txn, 10, "[other] "));
        edit(&doc, |txn, text| text.insert(txn, 5, "[mine] "));
        doc.transact_mut()
            .apply_update(Update::decode_v1(&concurrent).unwrap())
            .unwrap();
        // Honest edits: the snapshot reloads as the live document.
        let snapshot = compaction_snapshot(&doc).expect("an honest document compacts");
        let reloaded = Doc::new();
        reloaded
            .transact_mut()
            .apply_update(Update::decode_v1(&snapshot).unwrap())
            .unwrap();
        assert_eq!(body(&reloaded), body(&doc));

        // Crossed origins: the live document and its snapshot disagree.
        let doc = Doc::with_client_id(1);
        edit(&doc, |txn, text| {
            text.insert(
                txn,
                0,
                "# INC-1: Checkout API returning 502s\n\n## Summary\n\n",
            )
        });
        doc.transact_mut()
            .apply_update(Update::decode_v1(&crossed_origins(1)).unwrap())
            .unwrap();
        let live = body(&doc);
        assert!(live.contains("AAA"), "{live}");
        let snapshot = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let reloaded = Doc::new();
        reloaded
            .transact_mut()
            .apply_update(Update::decode_v1(&snapshot).unwrap())
            .unwrap();
        assert_ne!(
            body(&reloaded),
            live,
            "the fuzz finding no longer reproduces"
        );
        let error = compaction_snapshot(&doc).expect_err("not compacted");
        assert!(error.contains("another `body`"), "{error}");
    }

    #[test]
    fn undecodable_log_entries_are_skipped_and_later_ones_still_load() {
        let source = Doc::new();
        let snapshot = edit(&source, |txn, text| text.insert(txn, 0, "base "));
        let one = edit(&source, |txn, text| text.push(txn, "one "));
        let three = edit(&source, |txn, text| text.push(txn, "three"));
        let stored = StoredDoc {
            snapshot: Some(snapshot),
            snapshot_upto: 0,
            updates: vec![
                (1, one),
                (2, vec![0xff, 0xff, 0xff, 0x01]),
                (3, three),
                (4, Vec::new()),
            ],
            next_seq: 5,
        };
        let rebuilt = rebuild_doc(&stored);
        assert_eq!(body(&rebuilt.doc), "base one three");
        let parts: Vec<DocPart> = rebuilt.damaged.iter().map(|d| d.part).collect();
        assert_eq!(parts, [DocPart::Update(2), DocPart::Update(4)]);
        assert!(
            rebuilt.damaged[0].reason.contains("not a valid Yjs update"),
            "{:?}",
            rebuilt.damaged
        );
        let strict = build_doc(&IncidentId::new(1), &stored).map(drop);
        assert!(
            matches!(&strict, Err(StoreError::Corrupt(reason)) if reason.contains("update 2")),
            "{strict:?}"
        );
    }

    /// Found by the session fuzz target: live, each update commits on its
    /// own and yrs collects deleted text at each commit; an item naming that
    /// text as its parent is accepted once it is collected. The log must
    /// reload the same way, not be called damaged.
    /// The `session` fuzz finding `regression-reload-body-differs-across-transactions`: the last
    /// update repeats clocks the room already had (yrs integrates only its
    /// tail, with the origin it then gets), after formatting items and a
    /// deletion. One transaction per update (live) and one for the whole log
    /// put the tail in different places; the reload must be the live text.
    #[test]
    fn a_log_reloads_to_the_text_everyone_saw() {
        const SEED: &str = "# INC-1: Checkout API returning 502s\n\n## Summary\n\n\
                            Errors since 09:00 UTC.\n\n## Timeline\n\n- 09:02 paged\n";
        let seed = Doc::with_client_id(1);
        let snapshot = edit(&seed, |txn, text| text.insert(txn, 0, SEED));
        let updates: [&[u8]; 4] = [
            &[0x00, 0x01, 0x01, 0x01, 0x60, 0x06],
            &[
                0x01, 0x04, 0x2a, 0x00, 0x46, 0x01, 0x00, 0x04, 0x62, 0x6f, 0x6c, 0x64, 0x04, 0x74,
                0x72, 0x75, 0x65, 0xc6, 0x2a, 0x00, 0x01, 0x26, 0x05, 0x63, 0x6f, 0x6c, 0x6f, 0x72,
                0x09, 0x22, 0x23, 0x66, 0x66, 0x30, 0x30, 0x30, 0x30, 0x22, 0xc6, 0x01, 0x0f, 0x01,
                0x00, 0x04, 0x62, 0x6f, 0x6c, 0x64, 0x04, 0x6e, 0x75, 0x6c, 0x6c, 0xc6, 0x2a, 0x02,
                0x01, 0x10, 0x05, 0x63, 0x6f, 0x6c, 0x6f, 0x72, 0x04, 0x6e, 0x75, 0x6c, 0x6c, 0x00,
            ],
            &[
                0x01, 0x05, 0x2a, 0x04, 0xc6, 0x01, 0x5b, 0x01, 0x09, 0x04, 0x62, 0x6f, 0x6c, 0x64,
                0x04, 0x6e, 0x75, 0x6c, 0x6c, 0xc6, 0x2a, 0x04, 0x01, 0x0b, 0x05, 0x63, 0x6f, 0x6c,
                0x6f, 0x72, 0x04, 0x6e, 0x75, 0x6c, 0x6c, 0xc5, 0x2a, 0x05, 0x01, 0x0b, 0x15, 0x7b,
                0x22, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x22, 0x3a, 0x22, 0x67, 0x72, 0x61, 0x70, 0x68,
                0x2e, 0x70, 0x6e, 0x67, 0x22, 0x7d, 0xc6, 0x2a, 0x06, 0x01, 0x0b, 0x04, 0x62, 0x6f,
                0x6c, 0x64, 0x04, 0x74, 0x72, 0x75, 0x65, 0xc6, 0x2a, 0x07, 0x01, 0x0b, 0x05, 0x63,
                0x6f, 0x6c, 0x6f, 0x72, 0x09, 0x22, 0x23, 0x66, 0x66, 0x30, 0x30, 0x30, 0x30, 0x22,
                0x00,
            ],
            &[
                0x01, 0x01, 0x2a, 0x00, 0x84, 0x01, 0x65, 0x20, 0x2d, 0x20, 0x30, 0x39, 0x3a, 0x31,
                0x30, 0x20, 0x72, 0x6f, 0x6c, 0x6c, 0x65, 0x64, 0x20, 0x62, 0x61, 0x63, 0x6b, 0x20,
                0x64, 0x65, 0x70, 0x6c, 0x6f, 0x79, 0x20, 0x34, 0x34, 0x31, 0x31, 0x0a, 0x00,
            ],
        ];
        let apply = |doc: &Doc, update: &[u8]| {
            let mut txn = doc.transact_mut();
            integrate(&mut txn, Update::decode_v1(update).unwrap()).unwrap();
        };
        let one_transaction = |doc: &Doc, parts: &[&[u8]]| {
            let mut txn = doc.transact_mut();
            for part in parts {
                integrate(&mut txn, Update::decode_v1(part).unwrap()).unwrap();
            }
        };
        // yrs gives another text for other transaction boundaries: a room
        // loaded (in one transaction) with two entries, then sent the last
        // two, is not the whole log loaded in one transaction.
        let (mixed, one) = (Doc::new(), Doc::new());
        one_transaction(&mixed, &[&snapshot, updates[0], updates[1]]);
        for update in &updates[2..] {
            apply(&mixed, update);
        }
        let mut all: Vec<&[u8]> = vec![&snapshot];
        all.extend(updates);
        one_transaction(&one, &all);
        assert_ne!(
            body(&mixed),
            body(&one),
            "the fuzz finding no longer reproduces"
        );

        // A room loaded with the first `k` entries that then took the rest
        // live reloads, after a restart, to the text it held.
        let stored = |k: usize| StoredDoc {
            snapshot: Some(snapshot.clone()),
            snapshot_upto: 0,
            updates: (1..).zip(updates[..k].iter().map(|u| u.to_vec())).collect(),
            next_seq: k as u64 + 1,
        };
        let reloaded = rebuild_doc(&stored(updates.len()));
        assert!(reloaded.damaged.is_empty(), "{:?}", reloaded.damaged);
        for k in 0..=updates.len() {
            let room = rebuild_doc(&stored(k));
            assert!(room.damaged.is_empty(), "{:?}", room.damaged);
            for update in &updates[k..] {
                apply(&room.doc, update);
            }
            assert_eq!(
                body(&reloaded.doc),
                body(&room.doc),
                "loaded with {k} entries"
            );
            assert_eq!(
                reloaded.doc.transact().state_vector(),
                room.doc.transact().state_vector()
            );
        }
    }

    #[test]
    fn a_log_that_loaded_one_update_at_a_time_reloads() {
        let source = Doc::with_client_id(1);
        let insert = edit(&source, |txn, text| text.insert(txn, 0, "ab"));
        let delete = edit(&source, |txn, text| text.remove_range(txn, 0, 2));
        let child = raw_update(&[(2, Parent::Item(1, 0), "x")]);
        let live = Doc::new();
        for update in [&insert, &delete, &child] {
            live.transact_mut()
                .apply_update(Update::decode_v1(update).unwrap())
                .expect("live, one transaction per update, takes it");
        }
        let stored = StoredDoc {
            snapshot: None,
            snapshot_upto: 0,
            updates: vec![(1, insert.clone()), (2, delete.clone()), (3, child.clone())],
            next_seq: 4,
        };
        // In one transaction the parent is still deleted text: refused.
        let one = Doc::new();
        let mut txn = one.transact_mut();
        let mut refusal = None;
        for update in [&insert, &delete, &child] {
            if let Err(why) = integrate(&mut txn, Update::decode_v1(update).unwrap()) {
                refusal = Some(why);
            }
        }
        discard(txn);
        let refusal = refusal.expect("the fuzz finding no longer reproduces");
        assert!(
            refusal.contains("must be deleted or shared ref type"),
            "{refusal}"
        );

        let rebuilt = rebuild_doc(&stored);
        assert!(rebuilt.damaged.is_empty(), "{:?}", rebuilt.damaged);
        assert_eq!(
            rebuilt.doc.transact().state_vector(),
            live.transact().state_vector()
        );
        assert_eq!(body(&rebuilt.doc), body(&live));
    }

    #[test]
    fn a_corrupt_snapshot_is_skipped_and_the_log_after_it_loads() {
        let source = Doc::new();
        let other = source.get_or_insert_text("other");
        let before = source.transact().state_vector();
        other.insert(&mut source.transact_mut(), 0, "independent");
        let update = source.transact().encode_state_as_update_v1(&before);
        let stored = StoredDoc {
            snapshot: Some(b"garbage, not an update".to_vec()),
            snapshot_upto: 7,
            updates: vec![(8, update)],
            next_seq: 9,
        };
        let rebuilt = rebuild_doc(&stored);
        let parts: Vec<DocPart> = rebuilt.damaged.iter().map(|d| d.part).collect();
        assert_eq!(parts, [DocPart::Snapshot { upto: 7 }]);
        let other = rebuilt.doc.get_or_insert_text("other");
        assert_eq!(other.get_string(&rebuilt.doc.transact()), "independent");
    }

    #[test]
    fn an_update_yrs_refuses_midway_leaves_nothing_of_itself_behind() {
        // Client 1's item "x" in the body; then an update whose client 7
        // item is fine but whose client 2 item names "x" (a string) as its
        // parent, which yrs refuses after integrating client 7's.
        let parent = raw_update(&[(1, Parent::Root("body"), "x")]);
        let bad = raw_update(&[(7, Parent::Root("body"), "q"), (2, Parent::Item(1, 0), "y")]);
        let later = raw_update(&[(9, Parent::Root("body"), "z")]);
        crate::update_check::check_update_v1(&bad).expect("structurally valid");

        // The premise: applied naively, the bad update is half-applied.
        let naive = Doc::new();
        {
            let mut txn = naive.transact_mut();
            txn.apply_update(Update::decode_v1(&parent).unwrap())
                .unwrap();
            assert!(txn.apply_update(Update::decode_v1(&bad).unwrap()).is_err());
        }
        assert!(body(&naive).contains('q'), "{:?}", body(&naive));

        let stored = StoredDoc {
            snapshot: None,
            snapshot_upto: 0,
            updates: vec![(1, parent), (2, bad), (3, later)],
            next_seq: 4,
        };
        let rebuilt = rebuild_doc(&stored);
        let text = body(&rebuilt.doc);
        assert!(text.contains('x') && text.contains('z'), "{text:?}");
        assert!(!text.contains('q') && !text.contains('y'), "{text:?}");
        assert_eq!(rebuilt.damaged.len(), 1);
        assert_eq!(rebuilt.damaged[0].part, DocPart::Update(2));
        assert!(
            rebuilt.damaged[0].reason.contains("refuses"),
            "{:?}",
            rebuilt.damaged
        );
    }
}
