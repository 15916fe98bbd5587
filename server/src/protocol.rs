//! The y-websocket protocol, sans I/O: decoding client frames and deciding
//! what each message does to a room's document.
//!
//! Nothing here knows about sockets, tasks or storage. [`decode_frame`] turns
//! one binary WebSocket frame into messages (or a precise [`ProtocolError`]),
//! and [`Session::handle`] applies one message to a room's [`Awareness`] (which
//! owns the yrs `Doc`) and returns [`Effect`]s for the caller to carry out:
//! replies, broadcasts and durable writes.
//!
//! Invariants kept here:
//! - a viewer's sync step 2, update and awareness messages never touch the
//!   document or the awareness state, and are never relayed;
//! - a frame is decoded completely before any of its messages is applied, so a
//!   malformed frame changes nothing;
//! - an update that yrs refuses (or panics on) leaves the document as it was;
//! - a connection sets and removes only the awareness states of client ids
//!   it introduced itself, at most [`MAX_AWARENESS_CLIENTS`] of them, each at
//!   most [`MAX_AWARENESS_STATE_BYTES`], and the `user` of every state it
//!   sets names the token's subject, not what the client claimed;
//! - its awareness changes are relayed at most at its relay rate: what
//!   arrives faster is coalesced (the latest state per client id wins).
//!
//! Time enters only as an argument ([`Session::handle_at`]): a
//! [`TokenBucket`] is a counter, not a clock.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use bytes::Bytes;
use commandpost_shared::Actor;
use commandpost_shared::wire::MSG_SAVED;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, ReadTxn, StateVector, Transact, Update};

/// Outer message types of the y-websocket protocol.
const MSG_SYNC: u64 = 0;
const MSG_AWARENESS: u64 = 1;
const MSG_AUTH: u64 = 2;
const MSG_QUERY_AWARENESS: u64 = 3;
/// Sync sub-message types.
const SYNC_STEP_1: u64 = 0;
const SYNC_STEP_2: u64 = 1;
const SYNC_UPDATE: u64 = 2;

/// The reason sent to a viewer whose client tries to change the document.
pub const VIEWER_DENIED_REASON: &str = "read-only: viewers cannot edit this incident";

/// Awareness client ids one connection may introduce over its lifetime. A
/// browser tab uses one (its document's client id, kept across
/// reconnects); beyond this the connection is closed with 4400.
pub const MAX_AWARENESS_CLIENTS: usize = 4;

/// Largest awareness state (JSON text, as sent) a connection may set. A
/// y-codemirror cursor with a user name and colours takes about 300 bytes;
/// beyond this the connection is closed with 4400.
pub const MAX_AWARENESS_STATE_BYTES: usize = 4 * 1024;

/// One decoded client message, borrowing its payload from the frame.
#[derive(Debug, PartialEq)]
pub enum ClientMessage<'a> {
    /// Sync step 1: the client's state vector; answered with step 2.
    SyncStep1(StateVector),
    /// Sync step 2: the client's missing-on-server changes (a v1 update).
    SyncStep2(&'a [u8]),
    /// An incremental document update (v1 encoding).
    Update(&'a [u8]),
    /// An awareness update.
    Awareness(AwarenessUpdate),
    /// A request for every known awareness state.
    QueryAwareness,
    /// A y-protocols auth message; clients have nothing to say here, ignored.
    Auth,
    /// Opt-in to "saved" acknowledgements ([`MSG_SAVED`]).
    SavedOptIn,
}

/// Why a frame or message was refused. Each maps to a WebSocket close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("empty frame")]
    EmptyFrame,
    #[error("truncated varint at byte {offset}")]
    TruncatedVarint { offset: usize },
    #[error("varint longer than 64 bits at byte {offset}")]
    OverlongVarint { offset: usize },
    #[error(
        "length prefix {declared} at byte {offset} exceeds the {remaining} bytes left in the frame"
    )]
    LengthBeyondFrame {
        offset: usize,
        declared: u64,
        remaining: usize,
    },
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("invalid state vector in sync step 1")]
    InvalidStateVector,
    #[error("invalid awareness update: {0}")]
    InvalidAwareness(String),
    #[error("update rejected: {0}")]
    UpdateRejected(String),
    /// yrs failed or panicked while integrating the update, possibly after
    /// integrating part of it: the room's document can no longer be trusted.
    #[error("update rejected: {0}")]
    UpdateNotIntegrated(String),
    /// An awareness message beyond the connection's limits (too many client
    /// ids, a state too large or not a JSON object). Nothing of it applies.
    #[error("awareness refused: {0}")]
    AwarenessRefused(String),
}

impl ProtocolError {
    /// The WebSocket close code for this error (see ARCHITECTURE.md).
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::UpdateRejected(_) | ProtocolError::UpdateNotIntegrated(_) => {
                close_code::UPDATE_REJECTED
            }
            _ => close_code::MALFORMED,
        }
    }

    /// Whether the room's document may have been changed by the refused
    /// message and must be reloaded from storage.
    pub fn leaves_document_suspect(&self) -> bool {
        matches!(self, ProtocolError::UpdateNotIntegrated(_))
    }
}

/// WebSocket close codes used by Command Post. Documented in ARCHITECTURE.md.
pub mod close_code {
    /// The server is shutting down or restarting; reconnect.
    pub const SERVICE_RESTART: u16 = 1012;
    /// A text frame arrived; the protocol is binary only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A frame or message was larger than the configured limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Storage failed; the change could not be saved.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// A frame could not be decoded as y-websocket messages.
    pub const MALFORMED: u16 = 4400;
    /// yrs refused an update (it does not decode or cannot be integrated).
    pub const UPDATE_REJECTED: u16 = 4422;
    /// The connection fell too far behind the room and must resync.
    pub const LAGGING: u16 = 4408;
    /// The connection's access token was revoked. Permanent for the stock
    /// client (4400–4499): it stops reconnecting.
    pub const REVOKED: u16 = 4401;
    /// The document reached its size limit; the edit was not saved.
    pub const DOCUMENT_TOO_LARGE: u16 = 4413;
}

/// A small lib0 reader over one frame that reports exactly what is wrong.
struct FrameReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> FrameReader<'a> {
    fn has_more(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Reads a lib0 varuint: 7 bits per byte, least significant group first.
    fn varuint(&mut self) -> Result<u64, ProtocolError> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(ProtocolError::TruncatedVarint { offset: start });
            };
            self.pos += 1;
            if shift >= 64 || (shift == 63 && (byte & 0x7f) > 1) {
                return Err(ProtocolError::OverlongVarint { offset: start });
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// Reads a varuint length prefix and that many bytes.
    fn var_bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let offset = self.pos;
        let declared = self.varuint()?;
        let remaining = self.buf.len() - self.pos;
        if declared > remaining as u64 {
            return Err(ProtocolError::LengthBeyondFrame {
                offset,
                declared,
                remaining,
            });
        }
        let bytes = &self.buf[self.pos..self.pos + declared as usize];
        self.pos += declared as usize;
        Ok(bytes)
    }
}

/// The highest clock a (non-null) awareness state may carry: the server's
/// removal of a state on leave adds one, and what it sends must still be a
/// clock it accepts itself (below `u32::MAX`, where yrs's addition would
/// overflow). Removals (`null`) may carry one more.
pub const MAX_AWARENESS_STATE_CLOCK: u32 = u32::MAX - 2;

/// Decodes every message in one binary frame. Fails as a whole: a frame with
/// one bad message yields no messages at all.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<ClientMessage<'_>>, ProtocolError> {
    if frame.is_empty() {
        return Err(ProtocolError::EmptyFrame);
    }
    let mut reader = FrameReader { buf: frame, pos: 0 };
    let mut messages = Vec::with_capacity(1);
    while reader.has_more() {
        let message = match reader.varuint()? {
            MSG_SYNC => match reader.varuint()? {
                SYNC_STEP_1 => ClientMessage::SyncStep1(decode_state_vector(reader.var_bytes()?)?),
                SYNC_STEP_2 => ClientMessage::SyncStep2(reader.var_bytes()?),
                SYNC_UPDATE => ClientMessage::Update(reader.var_bytes()?),
                other => return Err(ProtocolError::UnknownSyncType(other)),
            },
            MSG_AWARENESS => ClientMessage::Awareness(decode_awareness(reader.var_bytes()?)?),
            MSG_AUTH => {
                // Auth messages are a permission type, optionally followed by
                // a reason string. Clients have no business sending them, but
                // they are well-formed protocol, so they are read and ignored.
                let kind = reader.varuint()?;
                if kind == 0 {
                    reader.var_bytes()?;
                }
                ClientMessage::Auth
            }
            MSG_QUERY_AWARENESS => ClientMessage::QueryAwareness,
            t if t == u64::from(MSG_SAVED) => {
                reader.var_bytes()?;
                ClientMessage::SavedOptIn
            }
            other => return Err(ProtocolError::UnknownMessageType(other)),
        };
        messages.push(message);
    }
    Ok(messages)
}

/// Decodes a state vector. yrs pre-allocates whatever count the payload
/// claims, so the count is checked against the payload first: every entry
/// takes at least two bytes.
fn decode_state_vector(payload: &[u8]) -> Result<StateVector, ProtocolError> {
    let mut reader = FrameReader {
        buf: payload,
        pos: 0,
    };
    let count = reader
        .varuint()
        .map_err(|_| ProtocolError::InvalidStateVector)?;
    if count > (payload.len() / 2) as u64 {
        return Err(ProtocolError::InvalidStateVector);
    }
    let mut sv = StateVector::default();
    for _ in 0..count {
        let client = reader
            .varuint()
            .ok()
            .and_then(client_id)
            .ok_or(ProtocolError::InvalidStateVector)?;
        let clock = reader
            .varuint()
            .map_err(|_| ProtocolError::InvalidStateVector)?;
        let clock = u32::try_from(clock).map_err(|_| ProtocolError::InvalidStateVector)?;
        sv.set_max(client, clock);
    }
    if reader.has_more() {
        return Err(ProtocolError::InvalidStateVector);
    }
    Ok(sv)
}

/// Yjs client ids are below 2^53 (JavaScript's safe integers); yrs asserts
/// it, so larger ones are refused here.
fn client_id(raw: u64) -> Option<ClientID> {
    (raw < 1 << 53).then(|| ClientID::new(raw))
}

/// Decodes an awareness update with the same care: counts bounded by the
/// bytes present, and state strings checked to be UTF-8 JSON text.
fn decode_awareness(payload: &[u8]) -> Result<AwarenessUpdate, ProtocolError> {
    // Offsets inside the payload would mislead in a close reason that talks
    // about the frame, so every failure here is an invalid awareness update.
    let invalid = |what: &str| ProtocolError::InvalidAwareness(what.to_owned());
    let cut_short = |_| invalid("cut short");
    let mut reader = FrameReader {
        buf: payload,
        pos: 0,
    };
    let count = reader.varuint().map_err(cut_short)?;
    // client id, clock and state length take a byte each at least
    if count > (payload.len() / 3) as u64 {
        return Err(invalid("client count exceeds the payload"));
    }
    let mut clients = std::collections::HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let client = client_id(reader.varuint().map_err(cut_short)?)
            .ok_or_else(|| invalid("client id exceeds 53 bits"))?;
        let clock = u32::try_from(reader.varuint().map_err(cut_short)?)
            .map_err(|_| invalid("clock exceeds 32 bits"))?;
        // yrs adds one to a client's clock when it removes the state (on
        // leave); at u32::MAX that overflows (a panic with overflow checks).
        // Found by the `session` fuzz target.
        if clock == u32::MAX {
            return Err(invalid("clock at its maximum"));
        }
        let json = std::str::from_utf8(reader.var_bytes().map_err(cut_short)?)
            .map_err(|_| invalid("state is not UTF-8"))?;
        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
            return Err(invalid("state is not JSON"));
        }
        // A state the server may remove later gets one added to its clock
        // then, and that removal must be a clock this check accepts. Found
        // by the `session` fuzz target (the server sent u32::MAX).
        if clock > MAX_AWARENESS_STATE_CLOCK && json.trim() != "null" {
            return Err(invalid("clock too close to its maximum for a state"));
        }
        clients.insert(
            client,
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
    }
    if reader.has_more() {
        return Err(invalid("trailing bytes"));
    }
    Ok(AwarenessUpdate { clients })
}

/// Encodes one protocol message as a frame.
pub fn encode(message: &Message) -> Bytes {
    Bytes::from(message.encode_v1())
}

/// Encodes an incremental update message around raw v1 update bytes.
pub fn encode_update(update: &[u8]) -> Bytes {
    encode(&Message::Sync(SyncMessage::Update(update.to_vec())))
}

/// Encodes the "saved up to n" acknowledgement: `[100, varBytes(varuint n)]`,
/// which yrs-based clients decode as `Message::Custom(100, payload)`.
pub fn encode_saved(acknowledged: u64) -> Bytes {
    let mut payload = Vec::with_capacity(10);
    let mut value = acknowledged;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            payload.push(byte);
            break;
        }
        payload.push(byte | 0x80);
    }
    let mut out = Vec::with_capacity(2 + payload.len());
    out.push(MSG_SAVED);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

/// The messages a server sends a client right after it connects: sync step 1
/// (so the client sends what the server lacks) and every awareness state.
pub fn greeting(awareness: &Awareness) -> Vec<Bytes> {
    let sv = awareness.doc().transact().state_vector();
    let mut frames = vec![encode(&Message::Sync(SyncMessage::SyncStep1(sv)))];
    if let Some(frame) = full_awareness(awareness) {
        frames.push(frame);
    }
    frames
}

/// The whole document as one update message: used to resync a connection
/// whose backlog was dropped.
pub fn full_state(awareness: &Awareness) -> Bytes {
    let update = awareness
        .doc()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    encode(&Message::Sync(SyncMessage::Update(update)))
}

/// Every known awareness state as one message, or `None` when there is none.
pub fn full_awareness(awareness: &Awareness) -> Option<Bytes> {
    let update = awareness.update().ok()?;
    if update.clients.is_empty() {
        return None;
    }
    Some(encode(&Message::Awareness(update)))
}

/// Per-connection rates, from the server configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionLimits {
    /// Awareness relays per second (also the burst); 0 means unlimited.
    pub awareness_per_second: u32,
}

impl SessionLimits {
    /// No rate limit (tools, tests and fuzzing without a clock).
    pub const UNLIMITED: SessionLimits = SessionLimits {
        awareness_per_second: 0,
    };
}

/// A token bucket over a caller-supplied clock: `now` is any monotonic
/// duration (e.g. since the connection opened). It may go into debt, so a
/// message larger than the bucket still passes once, and the sender then
/// waits for the debt to be repaid.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket; `per_second == 0` never limits.
    pub fn new(per_second: f64, capacity: f64) -> Self {
        Self {
            per_second,
            capacity,
            tokens: capacity,
            last: Duration::ZERO,
        }
    }

    fn unlimited(&self) -> bool {
        self.per_second <= 0.0
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let earned = (now - self.last).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + earned).min(self.capacity);
            self.last = now;
        }
    }

    /// Takes `amount` now, going into debt if needed.
    pub fn charge(&mut self, amount: f64, now: Duration) {
        if self.unlimited() {
            return;
        }
        self.refill(now);
        self.tokens -= amount;
    }

    /// Takes `amount` if the bucket holds it; whether it did.
    pub fn try_take(&mut self, amount: f64, now: Duration) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill(now);
        // The refill is floating point: at the instant `wait_for` named, the
        // bucket may hold a hair less than `amount`. That counts as enough,
        // or a timer armed for that instant would find nothing to do and be
        // armed for the same instant again.
        if self.tokens >= amount - TOKEN_EPSILON {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// How long from `now` until the bucket holds `amount` (zero if it
    /// does already).
    pub fn wait_for(&mut self, amount: f64, now: Duration) -> Duration {
        if self.unlimited() {
            return Duration::ZERO;
        }
        self.refill(now);
        let missing = amount - self.tokens;
        if missing <= TOKEN_EPSILON {
            return Duration::ZERO;
        }
        // Rounded up to the next nanosecond, never down.
        Duration::from_nanos((missing / self.per_second * 1e9).ceil() as u64)
    }
}

/// What a [`TokenBucket`] may lack of an amount and still pay it: far below
/// anything a rate counts, far above the refill's rounding error.
const TOKEN_EPSILON: f64 = 1e-6;

/// Why an awareness entry was dropped (the rest of its message applies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwarenessRefusal {
    /// The client id's state belongs to another live connection: this one
    /// may not set it.
    Foreign { client: u64 },
    /// ... nor remove it. Stock y-protocols clients send this for a peer
    /// whose renewal they missed for 30 s; the owner is alive, so the state
    /// stays.
    ForeignRemoval { client: u64 },
}

/// What a connection may do to its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// May change the document and announce awareness.
    ReadWrite,
    /// Receives everything, changes nothing.
    ReadOnly,
}

/// What the caller must do after a message was handled.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Send these bytes to this connection only.
    Reply(Bytes),
    /// Send these bytes to every other connection of the room.
    Broadcast(Bytes),
    /// Send these bytes to every connection of the room, this one included.
    /// Awareness is echoed like the reference server does: the stock client
    /// closes a connection that hears nothing for 30 s, and its own
    /// awareness renewal (every 15 s) coming back is what keeps a lone
    /// client's connection alive.
    BroadcastAll(Bytes),
    /// The update changed the document: relay it to the room's other
    /// connections, make it durable, and acknowledge change number `change`
    /// once it is.
    Commit { update: Vec<u8>, change: u64 },
    /// Nothing new to store, but acknowledge change number `change` once
    /// everything written before it is durable.
    AckWhenDurable { change: u64 },
    /// The client asked for "saved" acknowledgements.
    EnableSavedAcks,
    /// A viewer tried to write; it was told so (the reply is a separate
    /// [`Effect::Reply`]). Carried for logging and metrics.
    Denied,
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    access: Access,
    /// Whose connection this is; `None` stores states as sent (tools).
    caller: Option<Actor>,
    /// Awareness states this connection set and has not removed, with the
    /// clock it set each at: removed when it leaves, unless another
    /// connection of the same user took the client id over since.
    announced: HashMap<ClientID, u32>,
    /// Every client id this connection ever introduced (bounded by
    /// [`MAX_AWARENESS_CLIENTS`]; removed states stay as tombstones in yrs).
    introduced: HashSet<ClientID>,
    /// Awareness changes applied but not yet relayed (coalescing).
    unrelayed: HashSet<ClientID>,
    /// Awareness relays of this connection.
    relays: TokenBucket,
    /// The latest time the caller passed in.
    now: Duration,
    /// Awareness entries dropped since the caller last asked.
    refusals: Vec<AwarenessRefusal>,
    /// Count of document-changing messages received (sync step 2 + update).
    changes: u64,
    /// Whether the last committed update deleted something.
    last_commit_deleted: bool,
}

impl Session {
    /// A session without a caller or rate limits: awareness states are
    /// stored as sent. The server uses [`Session::for_caller`].
    pub fn new(access: Access) -> Self {
        Self::with(access, None, SessionLimits::UNLIMITED)
    }

    /// The server's session for a token holder: awareness `user` names come
    /// from `caller`, relays are limited by `limits`.
    pub fn for_caller(access: Access, caller: Actor, limits: SessionLimits) -> Self {
        Self::with(access, Some(caller), limits)
    }

    fn with(access: Access, caller: Option<Actor>, limits: SessionLimits) -> Self {
        let rate = f64::from(limits.awareness_per_second);
        Self {
            access,
            caller,
            announced: HashMap::new(),
            introduced: HashSet::new(),
            unrelayed: HashSet::new(),
            relays: TokenBucket::new(rate, rate.max(1.0)),
            now: Duration::ZERO,
            refusals: Vec::new(),
            changes: 0,
            last_commit_deleted: false,
        }
    }

    /// Whether this connection may change the document.
    pub fn can_write(&self) -> bool {
        self.access == Access::ReadWrite
    }

    /// Handles one message at the latest time passed to
    /// [`Session::handle_at`] (time stands still without it).
    pub fn handle(
        &mut self,
        awareness: &Awareness,
        message: ClientMessage<'_>,
    ) -> Result<Vec<Effect>, ProtocolError> {
        self.handle_at(awareness, message, self.now)
    }

    /// Handles one message against the room's awareness (and its document),
    /// at time `now` (any monotonic clock, e.g. since the connection opened).
    pub fn handle_at(
        &mut self,
        awareness: &Awareness,
        message: ClientMessage<'_>,
        now: Duration,
    ) -> Result<Vec<Effect>, ProtocolError> {
        self.now = self.now.max(now);
        match message {
            ClientMessage::SyncStep1(sv) => {
                let diff = awareness.doc().transact().encode_diff_v1(&sv);
                Ok(vec![Effect::Reply(encode(&Message::Sync(
                    SyncMessage::SyncStep2(diff),
                )))])
            }
            ClientMessage::SyncStep2(update) | ClientMessage::Update(update) => {
                self.handle_update(awareness, update)
            }
            ClientMessage::Awareness(update) => self.handle_awareness(awareness, update),
            ClientMessage::QueryAwareness => Ok(full_awareness(awareness)
                .map(Effect::Reply)
                .into_iter()
                .collect()),
            ClientMessage::Auth => Ok(Vec::new()),
            ClientMessage::SavedOptIn => Ok(vec![Effect::EnableSavedAcks]),
        }
    }

    /// Awareness entries dropped since the last call (for logs and metrics).
    pub fn take_refusals(&mut self) -> Vec<AwarenessRefusal> {
        std::mem::take(&mut self.refusals)
    }

    /// Whether the last [`Effect::Commit`] carried deletions (deleting is
    /// what a compaction can reclaim space from).
    pub fn last_commit_deleted(&self) -> bool {
        self.last_commit_deleted
    }

    fn handle_update(
        &mut self,
        awareness: &Awareness,
        raw: &[u8],
    ) -> Result<Vec<Effect>, ProtocolError> {
        let update = decode_update(raw)?;
        if self.access == Access::ReadOnly {
            // The stock client answers our sync step 1 with an (empty) step 2
            // even when it has nothing; only real edits deserve a denial.
            if update_is_empty(&update) {
                return Ok(Vec::new());
            }
            return Ok(vec![
                Effect::Reply(encode(&Message::Auth(Some(VIEWER_DENIED_REASON.into())))),
                Effect::Denied,
            ]);
        }
        self.changes += 1;
        let change = self.changes;
        if update_is_empty(&update) {
            return Ok(vec![Effect::AckWhenDurable { change }]);
        }
        let doc = awareness.doc();
        let before = doc.transact().state_vector();
        let had_pending = doc.transact().has_missing_updates();
        let deletes_before = update.delete_set().is_empty();
        let applied = guarded(|| {
            let mut txn = doc.transact_mut();
            txn.apply_update(update)
        });
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(ProtocolError::UpdateNotIntegrated(error.to_string())),
            Err(_) => {
                return Err(ProtocolError::UpdateNotIntegrated(
                    "yrs could not integrate the update".into(),
                ));
            }
        }
        let txn = doc.transact();
        // A delete set naming items that neither the document nor the update
        // holds stays pending in yrs, and an item integrated later inside that
        // range is deleted under its own children: the stored log then no
        // longer reloads (found by the session fuzz target). No Yjs client
        // deletes what it has not received (a reconnecting client sends its
        // items and its deletions in one update), so such an update is
        // refused; it may have been half applied, so the room reloads.
        if !had_pending
            && txn.store().pending_update().is_none()
            && txn.store().pending_ds().is_some()
        {
            return Err(ProtocolError::UpdateNotIntegrated(
                "the update deletes items this document does not have".into(),
            ));
        }
        // An update that adds no block, leaves nothing pending and carries no
        // deletions cannot have changed anything: acknowledge it without
        // storing or relaying it (reconnecting clients resend a lot of this).
        let unchanged = txn.state_vector() == before
            && !txn.has_missing_updates()
            && !had_pending
            && deletes_before;
        drop(txn);
        if unchanged {
            return Ok(vec![Effect::AckWhenDurable { change }]);
        }
        self.last_commit_deleted = !deletes_before;
        Ok(vec![Effect::Commit {
            update: raw.to_vec(),
            change,
        }])
    }

    /// Applies the entries of an awareness message that this connection
    /// may apply, and relays them now or, beyond its relay rate, later
    /// ([`Session::awareness_due`]).
    ///
    /// Stock y-websocket clients send back every awareness update they
    /// receive (with its original clock), and remove peers whose renewal
    /// they missed: entries for other connections' client ids are normal
    /// traffic. Stale ones (yrs would ignore them) are skipped silently;
    /// newer ones are dropped and reported ([`Session::take_refusals`]).
    fn handle_awareness(
        &mut self,
        awareness: &Awareness,
        update: AwarenessUpdate,
    ) -> Result<Vec<Effect>, ProtocolError> {
        if self.access == Access::ReadOnly {
            // Viewers are not shown to others; their awareness goes nowhere.
            return Ok(Vec::new());
        }
        let mut entries: Vec<(ClientID, AwarenessUpdateEntry)> =
            update.clients.into_iter().collect();
        entries.sort_by_key(|(client, _)| client.get());
        let mut accepted = HashMap::new();
        let mut refusals = Vec::new();
        let mut introducing = self.introduced.clone();
        for (client, entry) in entries {
            let stored = awareness
                .update_with_clients([client])
                .ok()
                .and_then(|update| update.clients.get(&client).cloned());
            let removal = entry.json.as_ref() == "null";
            // Exactly when yrs would apply it.
            let newer = stored.as_ref().is_none_or(|stored| {
                stored.clock < entry.clock
                    || (stored.clock == entry.clock && removal && stored.json.as_ref() != "null")
            });
            if !newer {
                continue;
            }
            let live = stored
                .as_ref()
                .is_some_and(|stored| stored.json.as_ref() != "null");
            let mine = self.announced.contains_key(&client);
            if live && !mine {
                // Another connection's. Only the same user (a reconnecting
                // tab whose old connection has not timed out yet) may take
                // it over, and only by setting it.
                let same_user = !removal
                    && stored
                        .as_ref()
                        .is_some_and(|stored| self.is_own_user(&stored.json));
                if !same_user {
                    let client = client.get();
                    refusals.push(if removal {
                        AwarenessRefusal::ForeignRemoval { client }
                    } else {
                        AwarenessRefusal::Foreign { client }
                    });
                    continue;
                }
            }
            if removal {
                if mine {
                    accepted.insert(client, entry);
                }
                // Removing what nobody shows changes nothing.
                continue;
            }
            if entry.json.len() > MAX_AWARENESS_STATE_BYTES {
                return Err(ProtocolError::AwarenessRefused(format!(
                    "a state of {} bytes; at most {MAX_AWARENESS_STATE_BYTES}",
                    entry.json.len()
                )));
            }
            introducing.insert(client);
            if introducing.len() > MAX_AWARENESS_CLIENTS {
                return Err(ProtocolError::AwarenessRefused(format!(
                    "more than {MAX_AWARENESS_CLIENTS} client ids on one connection"
                )));
            }
            let json = match &self.caller {
                Some(caller) => stamp_user(&entry.json, caller)?.into(),
                None => entry.json,
            };
            accepted.insert(
                client,
                AwarenessUpdateEntry {
                    clock: entry.clock,
                    json,
                },
            );
        }
        self.refusals.extend(refusals);
        if accepted.is_empty() {
            return Ok(Vec::new());
        }
        self.introduced = introducing;
        let sent: Vec<(ClientID, AwarenessUpdateEntry)> = accepted
            .iter()
            .map(|(client, entry)| (*client, entry.clone()))
            .collect();
        awareness
            .apply_update(AwarenessUpdate { clients: accepted })
            .map_err(|error| ProtocolError::InvalidAwareness(error.to_string()))?;
        // Track what yrs actually stored, not what was sent (the checks
        // above mirror yrs, this keeps it so): a connection must neither
        // forget nor claim a state it did not change, or a ghost cursor
        // would outlive it.
        for (client, entry) in sent {
            let Some(stored) = awareness
                .update_with_clients([client])
                .ok()
                .and_then(|update| update.clients.get(&client).cloned())
            else {
                continue;
            };
            if stored.clock != entry.clock || stored.json != entry.json {
                continue;
            }
            if entry.json.as_ref() == "null" {
                self.announced.remove(&client);
            } else {
                self.announced.insert(client, entry.clock);
            }
            self.unrelayed.insert(client);
        }
        Ok(self
            .relay_awareness(awareness, self.now)
            .map(Effect::BroadcastAll)
            .into_iter()
            .collect())
    }

    /// Whether `json` (a stored state, stamped by the server) names this
    /// connection's user.
    fn is_own_user(&self, json: &str) -> bool {
        let Some(caller) = &self.caller else {
            return false;
        };
        serde_json::from_str::<serde_json::Value>(json).is_ok_and(|state| {
            state
                .get("user")
                .and_then(|user| user.get("id"))
                .and_then(|id| id.as_str())
                == Some(caller.id.0.as_str())
        })
    }

    /// The current states of the client ids changed since the last relay,
    /// as one message, if the relay rate allows one now.
    fn relay_awareness(&mut self, awareness: &Awareness, now: Duration) -> Option<Bytes> {
        if self.unrelayed.is_empty() || !self.relays.try_take(1.0, now) {
            return None;
        }
        let clients: Vec<ClientID> = self.unrelayed.drain().collect();
        let update = awareness.update_with_clients(clients).ok()?;
        Some(encode(&Message::Awareness(update)))
    }

    /// When awareness changes held back by the relay rate can go out
    /// ([`Session::flush_awareness`]), on the caller's clock; `None` when
    /// nothing waits.
    pub fn awareness_due(&mut self) -> Option<Duration> {
        if self.unrelayed.is_empty() {
            return None;
        }
        Some(self.now + self.relays.wait_for(1.0, self.now))
    }

    /// Relays the awareness changes held back, if the rate allows now: the
    /// message for every connection of the room, this one included.
    pub fn flush_awareness(&mut self, awareness: &Awareness, now: Duration) -> Option<Bytes> {
        self.now = self.now.max(now);
        self.relay_awareness(awareness, self.now)
    }

    /// Awareness changes applied but not relayed yet.
    pub fn awareness_held_back(&self) -> usize {
        self.unrelayed.len()
    }

    /// Removes this connection's awareness states; returns the message that
    /// tells the other connections (with any change still held back by the
    /// relay rate, e.g. a removal the client sent just before closing), if
    /// there is anything to tell.
    pub fn leave(&mut self, awareness: &Awareness) -> Option<Bytes> {
        let mut changed: HashSet<ClientID> = self.unrelayed.drain().collect();
        for (client, clock) in self.announced.drain() {
            // Another connection of the same user took it over: theirs now.
            let still_mine = awareness
                .meta(client)
                .is_some_and(|(stored, _)| stored == clock);
            if still_mine {
                awareness.remove_state(client);
                changed.insert(client);
            }
        }
        if changed.is_empty() {
            return None;
        }
        let update = awareness.update_with_clients(changed).ok()?;
        Some(encode(&Message::Awareness(update)))
    }
}

/// `state` with its `user` naming `caller`: `user.name` and `user.id` come
/// from the token; the rest (colours) is the client's. A state that is not
/// a JSON object is refused: the app's states are objects, and a cursor
/// label must never show a name the token does not carry.
fn stamp_user(state: &str, caller: &Actor) -> Result<String, ProtocolError> {
    let mut value: serde_json::Value = serde_json::from_str(state)
        .map_err(|_| ProtocolError::InvalidAwareness("state is not JSON".into()))?;
    let Some(object) = value.as_object_mut() else {
        return Err(ProtocolError::AwarenessRefused(
            "a state that is not a JSON object".into(),
        ));
    };
    let user = object
        .entry("user")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !user.is_object() {
        *user = serde_json::Value::Object(Default::default());
    }
    if let Some(user) = user.as_object_mut() {
        user.insert("name".into(), caller.name.clone().into());
        user.insert("id".into(), caller.id.0.clone().into());
    }
    Ok(value.to_string())
}

/// Whether `raw` (a client's v1 update) adds no item: only deletions, so
/// applying it cannot grow the document. Used at the size limit.
pub fn only_deletes(raw: &[u8]) -> Result<bool, ProtocolError> {
    let update = decode_update(raw)?;
    Ok(update.insertions(true).is_empty())
}

thread_local! {
    /// Set while yrs runs on untrusted input inside `catch_unwind`.
    static PANIC_EXPECTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is inside [`guarded`]: the panic hook uses it
/// to stay quiet about panics that are caught and answered with a close code
/// (which gets its own log line).
pub fn panic_is_expected() -> bool {
    PANIC_EXPECTED.with(|flag| flag.get())
}

/// Runs `f` (yrs on untrusted input), turning a panic into `Err(())`.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, ()> {
    PANIC_EXPECTED.with(|flag| flag.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    PANIC_EXPECTED.with(|flag| flag.set(false));
    result.map_err(drop)
}

/// Decodes a v1 update, turning both errors and panics inside yrs into
/// [`ProtocolError::UpdateRejected`].
fn decode_update(raw: &[u8]) -> Result<Update, ProtocolError> {
    // yrs 0.26 trusts its input in ways no catch_unwind can contain
    // (unchecked UTF-8, allocations sized by claimed counts, recursion):
    // every update is checked structurally first.
    crate::update_check::check_update_v1(raw).map_err(|error| {
        ProtocolError::UpdateRejected(format!("not a valid Yjs update: {error}"))
    })?;
    match guarded(|| Update::decode_v1(raw)) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(error)) => Err(ProtocolError::UpdateRejected(format!(
            "not a valid Yjs update: {error}"
        ))),
        Err(_) => Err(ProtocolError::UpdateRejected(
            "not a valid Yjs update".into(),
        )),
    }
}

/// No blocks and no deletions. (Not `state_vector().is_empty()`: yrs
/// reports an empty state vector for updates that do not start at clock 0.)
fn update_is_empty(update: &Update) -> bool {
    update.is_empty()
}

#[cfg(test)]
mod tests;
