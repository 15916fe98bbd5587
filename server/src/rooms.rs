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
use tokio::sync::{OnceCell, broadcast};
use yrs::sync::Awareness;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Transact, Update};

use crate::config::ServerConfig;
use crate::protocol::Access;
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
    /// Sequence number for the next appended update.
    next_seq: u64,
    /// Updates and bytes in the log since the last snapshot.
    log_updates: u64,
    log_bytes: u64,
    /// Set when a refused update may have been partly integrated: from then
    /// on nothing is applied or stored here, and the room is being replaced.
    pub poisoned: bool,
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
}

impl RoomState {
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

    /// Assigns the next log sequence number and queues the update for
    /// storage; compacts the log when it grew past its bounds. Call inside
    /// [`Room::with_state`].
    pub fn persist(
        &self,
        state: &mut RoomState,
        update: Vec<u8>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        state.full_sync = None;
        let seq = state.next_seq;
        state.next_seq += 1;
        state.log_updates += 1;
        state.log_bytes += update.len() as u64;
        let saved = self.store.append(&self.id, seq, update)?;
        if state.log_updates >= self.compact_after_updates
            || state.log_bytes >= self.compact_after_bytes
        {
            let started = Instant::now();
            let snapshot = state
                .awareness
                .doc()
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            self.store.compact(&self.id, seq, snapshot)?;
            tracing::debug!(incident = %self.id, upto = seq, elapsed_ms = started.elapsed().as_millis() as u64, "compacted document log");
            state.log_updates = 0;
            state.log_bytes = 0;
        }
        Ok(saved)
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
        let connections = self.connections();
        self.fanout_window_per_1000
            .saturating_mul(connections)
            .checked_div(1000)
            .unwrap_or_default()
            .min(self.fanout_window_max)
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

/// Rebuilds a document from its snapshot and log.
///
/// Storage only ever holds updates that yrs accepted, so a failure here is
/// corruption: it is reported, never skipped.
pub fn build_doc(id: &IncidentId, stored: &StoredDoc) -> Result<Doc, StoreError> {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        let parts = stored
            .snapshot
            .iter()
            .map(|snapshot| (0, snapshot))
            .chain(stored.updates.iter().map(|(seq, update)| (*seq, update)));
        for (seq, bytes) in parts {
            // Stored updates passed the same check on the way in; checking
            // again protects against damage on disk and older data.
            if let Err(error) = crate::update_check::check_update_v1(bytes) {
                return Err(StoreError::Corrupt(format!("{id} update {seq}: {error}")));
            }
            let applied = catch_unwind(AssertUnwindSafe(|| {
                Update::decode_v1(bytes)
                    .map_err(|error| error.to_string())
                    .and_then(|update| txn.apply_update(update).map_err(|error| error.to_string()))
            }));
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(StoreError::Corrupt(format!("{id} update {seq}: {error}")));
                }
                Err(_) => {
                    return Err(StoreError::Corrupt(format!(
                        "{id} update {seq} does not integrate"
                    )));
                }
            }
        }
    }
    Ok(doc)
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
}

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
    /// after setting [`RoomState::poisoned`] under the room lock.
    pub fn evict(&self) {
        {
            let mut slots = self.rooms.inner.slots.lock();
            let same = slots
                .get(&self.room.id)
                .and_then(|slot| slot.get())
                .is_some_and(|current| Arc::ptr_eq(current, &self.room));
            if same {
                slots.remove(&self.room.id);
            }
        }
        self.room.closing.cancel();
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
    pub fn new(store: Store, config: ServerConfig) -> Self {
        Self {
            inner: Arc::new(RoomsInner {
                slots: parking_lot::Mutex::new(HashMap::new()),
                store,
                config,
            }),
        }
    }

    /// Joins the incident's room, loading it from storage if needed.
    pub async fn join(&self, id: &IncidentId, access: Access) -> Result<RoomGuard, StoreError> {
        loop {
            let slot = self
                .inner
                .slots
                .lock()
                .entry(id.clone())
                .or_default()
                .clone();
            let room = slot
                .get_or_try_init(|| self.load(id.clone()))
                .await?
                .clone();
            let slots = self.inner.slots.lock();
            // The slot may have been unloaded between the two locks: then
            // start over with a fresh one.
            if slots
                .get(id)
                .is_some_and(|current| Arc::ptr_eq(current, &slot))
            {
                room.counter(access).fetch_add(1, Ordering::AcqRel);
                room.epoch.fetch_add(1, Ordering::AcqRel);
                drop(slots);
                return Ok(RoomGuard {
                    room,
                    access,
                    rooms: self.clone(),
                });
            }
        }
    }

    /// Live presence of an incident (zero when its room is not loaded).
    pub fn presence(&self, id: &IncidentId) -> Presence {
        let slot = self.inner.slots.lock().get(id).cloned();
        slot.and_then(|slot| slot.get().map(|room| room.presence()))
            .unwrap_or_default()
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
            let doc = build_doc(&id, &store.load_doc(&id)?)?;
            Ok(read(&doc))
        })
        .await
        .map_err(|error| StoreError::Corrupt(format!("reading a document panicked: {error}")))?
    }

    async fn load(&self, id: IncidentId) -> Result<Arc<Room>, StoreError> {
        let store = self.inner.store.clone();
        let started = Instant::now();
        // Writes queued by an earlier room of this incident (unloaded or
        // evicted) must be on disk before storage is read.
        store
            .barrier()?
            .await
            .map_err(|_| StoreError::WriterGone)??;
        let load_id = id.clone();
        let (awareness, next_seq, log_updates, log_bytes) =
            tokio::task::spawn_blocking(move || {
                let stored = store.load_doc(&load_id)?;
                let doc = build_doc(&load_id, &stored)?;
                let log_bytes = stored
                    .updates
                    .iter()
                    .map(|(_, update)| update.len() as u64)
                    .sum();
                Ok::<_, StoreError>((
                    Awareness::new(doc),
                    stored.next_seq,
                    stored.updates.len() as u64,
                    log_bytes,
                ))
            })
            .await
            .map_err(|error| StoreError::Corrupt(format!("loading {id} panicked: {error}")))??;
        tracing::info!(incident = %id, log_updates, elapsed_ms = started.elapsed().as_millis() as u64, "room loaded");
        let (sender, _) = broadcast::channel(self.inner.config.room_buffer_messages);
        Ok(Arc::new(Room {
            id,
            state: parking_lot::Mutex::new(RoomState {
                awareness,
                next_seq,
                log_updates,
                log_bytes,
                poisoned: false,
                full_sync: None,
                pending: Vec::new(),
                flush_at: None,
                last_relay: None,
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
        }))
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
