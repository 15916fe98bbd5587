//! The per-connection protocol core, the way `ws.rs` drives it: frames from
//! several connections to one room are decoded with `decode_frame` and each
//! message goes through `Session::handle_at` (so every update passes the
//! structural checker `update_check` before yrs sees it), with the room's
//! `Awareness` and its yrs `Doc` shared by all of them.
//!
//! The room is loaded like the server loads one (`rooms::build_doc` over a
//! stored snapshot holding the incident's seed text), with two other people
//! already present in its awareness (Alice in another tab, and Bob; their
//! states carry the user ids the server stamps). Four connections take part:
//!
//! | slot | access     | session                                          |
//! |------|------------|--------------------------------------------------|
//! | 0    | editor     | `Session::for_caller` Alice, 20 relays/s (the server's default) |
//! | 1    | editor     | `Session::new` (no caller, no rate limit: tools)  |
//! | 2    | viewer     | `Session::for_caller` Vera, 20 relays/s          |
//! | 3    | viewer     | `Session::new`                                   |
//!
//! # Input
//!
//! A sequence of records, at most 32:
//!
//! ```text
//! header  len  frame[len]        (len < 255)
//! header  0xff lo hi frame[lo + 256*hi]
//! ```
//!
//! `header & 3` picks the connection; `header & 4` makes that connection
//! leave after the frame; `k = header >> 3` lets `k * k` milliseconds pass
//! first (0 to 961 ms; the awareness relay timer of every connection fires
//! when due, as `ws.rs` arms it). A length beyond the input takes the rest.
//!
//! # What must hold
//!
//! - nothing panics outside the `catch_unwind` the protocol core keeps for
//!   yrs (panics inside it are the containment working; set
//!   `FUZZ_STRICT_GUARDED=1` to treat them as crashes too);
//! - a viewer's message never opens a write transaction on the document
//!   nor changes any awareness state; no message but an editor's awareness
//!   changes awareness, and no refused message changes it;
//! - effects match the message: one `Commit` (carrying exactly the received
//!   bytes) or `AckWhenDurable` per document change from an editor, numbered
//!   1, 2, 3... per connection; nothing but a denial for a viewer's edit; ...
//! - awareness ownership: a connection changes only states of client ids it
//!   introduced itself, or that were not shown, or (a `for_caller` session,
//!   setting) that name its own user; at most `MAX_AWARENESS_CLIENTS` ids
//!   per connection; states it sets name its caller (`for_caller`) or are
//!   at most `MAX_AWARENESS_STATE_BYTES`; a refusal names a client id shown
//!   by someone else; `AwarenessRefused` closes with 4400 and applies
//!   nothing;
//! - awareness relays: every change goes out, coalesced, in the message's
//!   `BroadcastAll`, the relay timer's flush or the leave message, each
//!   carrying exactly the changed client ids with their current states; an
//!   unlimited session relays at once; a limited one relays at most its
//!   burst plus its rate times the time passed, and the timer's flush at
//!   `awareness_due` relays;
//! - every frame the server sends (replies, broadcasts, relayed updates, the
//!   greeting, a resync, the leave message, a merged batch of relayed
//!   updates) is one the server itself would accept: it decodes, and every
//!   update in it passes `update_check`; merging a batch never panics;
//! - when a connection leaves, its awareness states are gone and nobody
//!   else's changed; once every fuzzed connection has left, only the people
//!   present before remain;
//! - a refusal that leaves the document suspect comes only from an editor,
//!   and the room then reloads from storage, as the server does;
//! - storage (the snapshot and every committed update, in order) reloads
//!   with `build_doc` without error, to the same document as the live one
//!   (state vector, deletions, `body` text), and so does the snapshot that
//!   compaction (`Room::persist`) writes of the live document, when it
//!   writes one (`rooms::compaction_snapshot` refuses a snapshot that would
//!   reload differently; the log is then kept).
//!
//! # Speed
//!
//! Checks whose result cannot differ are done once: a greeting identical to
//! the last one checked is not checked again; a committed update is checked
//! (`check_update_v1`, as the relayed frame) once at the end with the rest of
//! storage; a room whose document saw no write transaction and whose storage
//! holds only the seed is the seed room, whose reload and compaction are
//! checked once per process, and its document is reused by the next input
//! (with a fresh `Awareness`).

#![no_main]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::Duration;

use commandpost::protocol::{
    Access, AwarenessRefusal, ClientMessage, Effect, MAX_AWARENESS_CLIENTS,
    MAX_AWARENESS_STATE_BYTES, ProtocolError, Session, SessionLimits, close_code, decode_frame,
    encode_update, full_state, greeting, panic_is_expected,
};
use commandpost::rooms::{build_doc, compaction_snapshot};
use commandpost::store::StoredDoc;
use commandpost::template::BODY;
use commandpost::update_check::check_update_v1;
use commandpost_shared::{Actor, IncidentId, UserId};
use libfuzzer_sys::fuzz_target;
use yrs::sync::Awareness;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, GetString, ReadTxn, StateVector, Subscription, Text, Transact};

/// Records handled per input, at most.
const MAX_FRAMES: usize = 32;

/// The client id that wrote the seed text, fixed so that inputs can refer to
/// its characters. fuzz/make_corpus.mjs builds the same seed.
const SEED_CLIENT: u64 = 1;
/// The seed text of the room's `body`. fuzz/make_corpus.mjs uses the same.
const SEED_TEXT: &str = "# INC-1: Checkout API returning 502s\n\n## Summary\n\n\
                         Errors since 09:00 UTC.\n\n## Timeline\n\n- 09:02 paged\n";

/// People already in the room: (client id, clock, awareness state), stamped
/// the way the server stores states. Alice's is her other tab: connection 0
/// (Alice too) may take it over; Bob's nobody may touch.
const PRESENT: [(u64, u32, &str); 2] = [
    (
        1001,
        3,
        r##"{"cursor":null,"user":{"color":"#30bced","id":"alice","name":"Alice"}}"##,
    ),
    (
        1002,
        1,
        r##"{"user":{"color":"#6eeb83","id":"bob","name":"Bob"}}"##,
    ),
];

/// The server's default `--awareness-per-second`.
const RELAYS_PER_SECOND: u32 = 20;

/// Who is on connection `slot`: access, caller (`None`: `Session::new`).
fn identity(slot: usize) -> (Access, Option<Actor>) {
    let caller = |id: &str, name: &str| {
        Some(Actor {
            id: UserId(id.to_owned()),
            name: name.to_owned(),
        })
    };
    match slot {
        0 => (Access::ReadWrite, caller("alice", "Alice")),
        1 => (Access::ReadWrite, None),
        2 => (Access::ReadOnly, caller("vera", "Vera")),
        _ => (Access::ReadOnly, None),
    }
}

/// `FUZZ_DEBUG=1`: print what each message did (to read what an input does).
static DEBUG: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("FUZZ_DEBUG").is_some_and(|v| v != "0"));

/// The stored snapshot every room starts from: the seed text.
static SEED_UPDATE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let doc = Doc::with_client_id(SEED_CLIENT);
    let body = doc.get_or_insert_text(BODY);
    body.insert(&mut doc.transact_mut(), 0, SEED_TEXT);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
});

/// The storage every input starts from.
fn seed_storage() -> StoredDoc {
    StoredDoc {
        snapshot: Some(SEED_UPDATE.clone()),
        next_seq: 1,
        ..StoredDoc::default()
    }
}

thread_local! {
    /// A seed room's document that no input wrote to, for the next input.
    static PRISTINE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
    /// The greeting checked last (the same bytes need no second check).
    static CHECKED_GREETING: RefCell<Option<(Vec<u8>, States)>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    install_panic_hook();
    run(data);
});

/// A room's document, loaded from storage, with a count of the write
/// transactions committed on it since.
struct Loaded {
    doc: Doc,
    writes: Arc<AtomicU64>,
    _subscription: Subscription,
}

impl Loaded {
    /// Loads the room from storage the strict way (`build_doc`): a stored
    /// part that does not load is a bug here (the server would quarantine
    /// it, losing what it holds).
    fn from(stored: &StoredDoc) -> Self {
        let doc = build_doc(&IncidentId::new(1), stored).unwrap_or_else(|error| {
            panic!("updates the server stored no longer load: {error}");
        });
        let writes = Arc::new(AtomicU64::new(0));
        let counter = writes.clone();
        let subscription = doc
            .observe_after_transaction(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .expect("a fresh document takes an observer");
        Self {
            doc,
            writes,
            _subscription: subscription,
        }
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// Who set a state, as far as the fuzzed connections are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Present,
    Slot(usize),
}

/// client -> (clock, state; `None` once removed)
type States = BTreeMap<u64, (u32, Option<Arc<str>>)>;

fn states(room: &Awareness) -> States {
    room.iter()
        .map(|(client, state)| (client.get(), (state.clock, state.data)))
        .collect()
}

fn is_shown(states: &States, client: u64) -> bool {
    states.get(&client).is_some_and(|(_, data)| data.is_some())
}

/// The `user.id` a state names, if any.
fn user_id_of(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value.get("user")?.get("id")?.as_str().map(str::to_owned)
}

struct World {
    stored: StoredDoc,
    loaded: Loaded,
    room: Awareness,
    connections: [Connection; 4],
    owners: BTreeMap<u64, Owner>,
    present: BTreeSet<u64>,
    /// Time since the input began.
    now: Duration,
}

fn run(data: &[u8]) {
    let loaded = PRISTINE
        .with(|cell| cell.borrow_mut().take())
        .unwrap_or_else(|| Loaded::from(&seed_storage()));
    let room = Awareness::new(loaded.doc.clone());
    let writes_at_start = loaded.writes();
    let start_counter = loaded.writes.clone();
    let mut world = World {
        stored: seed_storage(),
        loaded,
        room,
        connections: std::array::from_fn(|slot| Connection::new(slot, Duration::ZERO)),
        owners: BTreeMap::new(),
        present: BTreeSet::new(),
        now: Duration::ZERO,
    };
    world.announce_present();
    // Every connection joins the same room: one greeting.
    world.greet(&states(&world.room));

    for (header, frame) in Records(data).take(MAX_FRAMES) {
        let k = u64::from(header >> 3);
        world.now += Duration::from_millis(k * k);
        for slot in 0..4 {
            world.flush_due(slot);
        }
        let slot = usize::from(header & 3);
        match world.handle_frame(slot, frame) {
            Outcome::Open if header & 4 == 0 => {}
            Outcome::Open | Outcome::Closed => {
                if *DEBUG {
                    eprintln!("connection {slot} leaves");
                }
                world.leave(slot);
            }
            Outcome::Reload => {
                // ws.rs: the room is evicted, every connection is closed and
                // leaves the old room, and the next join loads it anew.
                for slot in 0..4 {
                    world.leave(slot);
                }
                world.loaded = Loaded::from(&world.stored);
                world.room = Awareness::new(world.loaded.doc.clone());
                world.present.clear();
                world.owners.clear();
            }
        }
    }
    for slot in 0..4 {
        world.leave(slot);
    }

    // Every fuzzed connection has left: only the people who were present
    // before may still be shown.
    for (client, (_, data)) in states(&world.room) {
        if data.is_some() {
            assert!(
                world.present.contains(&client),
                "client {client} is still shown after every connection that announced it left"
            );
        }
    }

    let World {
        stored,
        loaded,
        room,
        ..
    } = world;
    // (`loaded` is the room's current document, reloaded or not: a reload
    // starts a fresh count.)
    let pristine = stored.updates.is_empty()
        && loaded.writes()
            == if Arc::ptr_eq(&loaded.writes, &start_counter) {
                writes_at_start
            } else {
                0
            };
    if pristine {
        // Nothing was written: the live document is the seed room as
        // loaded, whose storage checks ran once (below, for the first such
        // input). The next input may use it.
        static SEED_ROOM_CHECKED: Once = Once::new();
        SEED_ROOM_CHECKED.call_once(|| check_storage(&stored, &room));

        drop(room);
        PRISTINE.with(|cell| *cell.borrow_mut() = Some(loaded));
    } else {
        check_storage(&stored, &room);
    }
}

/// What was stored reloads to what everyone saw: the log as it is, and
/// compacted into a snapshot of the live document (`Room::persist`); and
/// what the server sends from it is what it accepts.
fn check_storage(stored: &StoredDoc, room: &Awareness) {
    // Relayed as update messages when committed; checked here, once each.
    for (_, update) in &stored.updates {
        check_server_frame(&encode_update(update));
    }
    let reloaded = Awareness::new(Loaded::from(stored).doc);
    assert_same_document(room.doc(), reloaded.doc());
    // Compaction writes a snapshot only when it reloads as the live
    // document; otherwise it keeps the log (just checked).
    let recompacted = match compaction_snapshot(room.doc()) {
        Ok(snapshot) => {
            let compacted = StoredDoc {
                snapshot: Some(snapshot),
                next_seq: stored.next_seq,
                ..StoredDoc::default()
            };
            let recompacted = Awareness::new(Loaded::from(&compacted).doc);
            assert_same_document(room.doc(), recompacted.doc());
            Some(recompacted)
        }
        Err(why) => {
            if *DEBUG {
                eprintln!("compaction refused: {why}");
            }
            None
        }
    };

    // What joining and resyncing connections are sent (the resync of the
    // compacted room only when its bytes differ from the live room's).
    for frame in greeting(&reloaded) {
        check_server_frame(&frame);
    }
    let live_state = full_state(room);
    check_server_frame(&live_state);
    if let Some(recompacted) = &recompacted {
        let state = full_state(recompacted);
        if state != live_state {
            check_server_frame(&state);
        }
    }
    // Batched relays (`Room::flush_pending`) merge updates outside any
    // catch_unwind: it must not panic, and what it relays must pass.
    if stored.updates.len() > 1 {
        let updates = stored.updates.iter().map(|(_, update)| update.as_slice());
        if let Ok(merged) = yrs::merge_updates_v1(updates) {
            check_server_frame(&encode_update(&merged));
        }
    }
}

/// Splits the input into `(header, frame)` records.
struct Records<'a>(&'a [u8]);

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&header, rest) = self.0.split_first()?;
        let (len, rest) = match rest {
            [0xff, lo, hi, rest @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), rest),
            [len, rest @ ..] => (usize::from(*len), rest),
            [] => (0, rest),
        };
        let (frame, rest) = rest.split_at(len.min(rest.len()));
        self.0 = rest;
        Some((header, frame))
    }
}

/// One connection to the room.
struct Connection {
    access: Access,
    caller: Option<Actor>,
    session: Session,
    /// When it connected (`ws.rs` passes time since then).
    started: Duration,
    /// Document-changing messages handled so far: the change number the
    /// session must give the next one, less one.
    changes: u64,
    /// Client ids whose state it set.
    introduced: BTreeSet<u64>,
    /// Client ids it changed that were not relayed yet.
    unrelayed: BTreeSet<u64>,
    /// Awareness relays it sent (message, timer).
    relays: u64,
}

impl Connection {
    fn new(slot: usize, now: Duration) -> Self {
        let (access, caller) = identity(slot);
        let session = match &caller {
            Some(caller) => Session::for_caller(
                access,
                caller.clone(),
                SessionLimits {
                    awareness_per_second: RELAYS_PER_SECOND,
                },
            ),
            None => Session::new(access),
        };
        Self {
            access,
            caller,
            session,
            started: now,
            changes: 0,
            introduced: BTreeSet::new(),
            unrelayed: BTreeSet::new(),
            relays: 0,
        }
    }

    fn limited(&self) -> bool {
        self.caller.is_some()
    }
}

enum Outcome {
    /// The frame was handled; the connection stays open.
    Open,
    /// The server closes the connection.
    Closed,
    /// The server closes every connection and reloads the room.
    Reload,
}

/// What a message was, kept for checking its effects.
#[derive(Debug)]
enum Kind {
    SyncStep1,
    DocChange(Vec<u8>),
    Awareness,
    QueryAwareness,
    Auth,
    SavedOptIn,
}

impl Kind {
    fn name(&self) -> String {
        match self {
            Kind::DocChange(update) => format!("update ({} bytes)", update.len()),
            other => format!("{other:?}"),
        }
    }

    fn of(message: &ClientMessage<'_>) -> Self {
        match message {
            ClientMessage::SyncStep1(_) => Kind::SyncStep1,
            ClientMessage::SyncStep2(update) | ClientMessage::Update(update) => {
                Kind::DocChange(update.to_vec())
            }
            ClientMessage::Awareness(_) => Kind::Awareness,
            ClientMessage::QueryAwareness => Kind::QueryAwareness,
            ClientMessage::Auth => Kind::Auth,
            ClientMessage::SavedOptIn => Kind::SavedOptIn,
        }
    }
}

trait EffectName {
    fn name(&self) -> &'static str;
}

impl EffectName for Effect {
    fn name(&self) -> &'static str {
        match self {
            Effect::Reply(_) => "reply",
            Effect::Broadcast(_) => "broadcast",
            Effect::BroadcastAll(_) => "broadcast to all",
            Effect::Commit { .. } => "commit",
            Effect::AckWhenDurable { .. } => "ack",
            Effect::EnableSavedAcks => "saved acks on",
            Effect::Denied => "denied",
        }
    }
}

impl World {
    /// Puts the people of [`PRESENT`] in the room.
    fn announce_present(&mut self) {
        let clients = PRESENT
            .iter()
            .map(|&(client, clock, json)| {
                (
                    ClientID::new(client),
                    AwarenessUpdateEntry {
                        clock,
                        json: json.into(),
                    },
                )
            })
            .collect();
        self.room
            .apply_update(AwarenessUpdate { clients })
            .expect("the present people's awareness applies");
        for &(client, ..) in &PRESENT {
            self.present.insert(client);
            self.owners.insert(client, Owner::Present);
        }
    }

    /// What the server sends a connection that joins: sync step 1 with the
    /// document's state vector and every state shown. Checked unless the
    /// room shows what it showed at the greeting checked last (the frames'
    /// bytes vary with hash order; what they hold does not).
    fn greet(&self, shown: &States) {
        let key = (
            self.room.doc().transact().state_vector().encode_v1(),
            shown
                .iter()
                .filter(|(_, (_, data))| data.is_some())
                .map(|(client, state)| (*client, state.clone()))
                .collect::<States>(),
        );
        CHECKED_GREETING.with(|checked| {
            let mut checked = checked.borrow_mut();
            if checked.as_ref() != Some(&key) {
                for frame in greeting(&self.room) {
                    check_server_frame(&frame);
                }
                *checked = Some(key);
            }
        });
    }

    /// `ws.rs`'s awareness timer: relays what the rate held back once due.
    fn flush_due(&mut self, slot: usize) {
        let connection = &mut self.connections[slot];
        let local = self.now - connection.started;
        assert_eq!(
            connection.session.awareness_held_back(),
            connection.unrelayed.len(),
            "connection {slot} holds back other changes than it made"
        );
        let Some(due) = connection.session.awareness_due() else {
            assert!(
                connection.unrelayed.is_empty(),
                "held back without a due time"
            );
            return;
        };
        assert!(
            !connection.unrelayed.is_empty(),
            "a due time with nothing held back"
        );
        if due > local {
            return;
        }
        let frame = match connection.session.flush_awareness(&self.room, local) {
            Some(frame) => frame,
            None => {
                // The timer re-arms (rounding in the bucket): shortly.
                let again = connection.session.awareness_due().expect("still held back");
                assert!(
                    again > local && again - local <= Duration::from_millis(1),
                    "connection {slot}: nothing relayed at its due time {due:?} (now {local:?}); next {again:?}"
                );
                connection
                    .session
                    .flush_awareness(&self.room, again)
                    .expect("relayed at the re-armed time")
            }
        };
        self.relayed(slot, &frame);
    }

    /// An awareness relay of connection `slot`: exactly what it changed
    /// since the last one, as it is now; within the rate.
    fn relayed(&mut self, slot: usize, frame: &[u8]) {
        check_server_frame(frame);
        let now = states(&self.room);
        let connection = &mut self.connections[slot];
        let sent = awareness_ids(frame, &now);
        assert_eq!(
            sent, connection.unrelayed,
            "connection {slot} relayed other client ids than it changed"
        );
        connection.unrelayed.clear();
        connection.relays += 1;
        if connection.limited() {
            let rate = f64::from(RELAYS_PER_SECOND);
            let elapsed = (self.now - connection.started).as_secs_f64();
            assert!(
                connection.relays as f64 <= rate.max(1.0) + rate * elapsed + 1e-6,
                "connection {slot} relayed {} times in {elapsed} s",
                connection.relays
            );
        }
    }

    /// The connection closes (for any reason; `serve_connection` always
    /// calls `leave`), and a new one takes its place.
    fn leave(&mut self, slot: usize) {
        let before = states(&self.room);
        let message = self.connections[slot].session.leave(&self.room);
        let after = states(&self.room);
        let changed = changed(&before, &after);
        for client in &changed {
            assert_eq!(
                self.owners.get(client),
                Some(&Owner::Slot(slot)),
                "connection {slot} leaving changed client {client}'s state, not its own"
            );
            assert!(!is_shown(&after, *client), "leaving set a state");
        }
        for (client, owner) in &self.owners {
            if *owner == Owner::Slot(slot) {
                assert!(
                    !is_shown(&after, *client),
                    "client {client} is still shown after its connection {slot} left"
                );
            }
        }
        let connection = &self.connections[slot];
        match message {
            Some(frame) => {
                check_server_frame(&frame);
                let sent = awareness_ids(&frame, &after);
                let expected: BTreeSet<u64> =
                    connection.unrelayed.union(&changed).copied().collect();
                assert_eq!(sent, expected, "the leave message of connection {slot}");
            }
            None => assert!(
                connection.unrelayed.is_empty() && changed.is_empty(),
                "connection {slot} left without telling anyone"
            ),
        }
        self.owners.retain(|_, owner| *owner != Owner::Slot(slot));
        self.connections[slot] = Connection::new(slot, self.now);
        self.greet(&after);
    }

    /// `ws.rs::handle_frame`, minus sockets and storage I/O.
    fn handle_frame(&mut self, slot: usize, frame: &[u8]) -> Outcome {
        let messages = match decode_frame(frame) {
            Ok(messages) => messages,
            Err(error) => {
                assert!(!error.leaves_document_suspect(), "{error:?}");
                return Outcome::Closed;
            }
        };
        for message in messages {
            let kind = Kind::of(&message);
            let viewer = self.connections[slot].access == Access::ReadOnly;
            // Awareness before and after: for awareness messages (what they
            // changed) and viewers' messages (nothing). Other messages do
            // not reach the room's awareness (`Session::handle_at`).
            let watched = viewer || matches!(kind, Kind::Awareness);
            let before = if watched {
                states(&self.room)
            } else {
                States::new()
            };
            let writes = self.loaded.writes();
            let local = self.now - self.connections[slot].started;
            let result = self.connections[slot]
                .session
                .handle_at(&self.room, message, local);
            let refusals = self.connections[slot].session.take_refusals();
            if *DEBUG {
                let shown = match &result {
                    Ok(effects) => effects
                        .iter()
                        .map(Effect::name)
                        .collect::<Vec<_>>()
                        .join(", "),
                    Err(error) => format!("error: {error}"),
                };
                eprintln!(
                    "{:?} {slot} at {local:?} {}: {shown} {refusals:?}",
                    self.connections[slot].access,
                    kind.name()
                );
                if matches!(result, Ok(ref effects) if !effects.is_empty()) {
                    eprintln!("  frame: {frame:02x?}");
                }
            }
            let after = if watched {
                states(&self.room)
            } else {
                States::new()
            };
            if viewer {
                assert_eq!(
                    self.loaded.writes(),
                    writes,
                    "a viewer's {kind:?} wrote to the document"
                );
            }
            let awareness = matches!(kind, Kind::Awareness) && !viewer && result.is_ok();
            if !awareness {
                assert!(
                    before == after,
                    "connection {slot}'s {kind:?} ({result:?}) changed awareness:\nbefore {before:?}\nafter  {after:?}"
                );
                assert!(refusals.is_empty(), "refusals {refusals:?} for {kind:?}");
            }
            match result {
                Ok(effects) if awareness => {
                    self.check_awareness(slot, &before, &after, &effects, &refusals)
                }
                Ok(effects) => self.check_effects(slot, &kind, &effects),
                Err(error) if error.leaves_document_suspect() => {
                    assert!(!viewer, "a viewer's {kind:?} left the document suspect");
                    return Outcome::Reload;
                }
                Err(error) => {
                    if let ProtocolError::AwarenessRefused(_) = error {
                        assert_eq!(error.close_code(), close_code::MALFORMED);
                    }
                    return Outcome::Closed;
                }
            }
        }
        Outcome::Open
    }

    /// An editor's awareness message that was handled.
    fn check_awareness(
        &mut self,
        slot: usize,
        before: &States,
        after: &States,
        effects: &[Effect],
        refusals: &[AwarenessRefusal],
    ) {
        let changed = changed(before, after);
        let connection = &mut self.connections[slot];
        for &client in &changed {
            let was = before.get(&client).and_then(|(_, data)| data.clone());
            let now = after.get(&client).and_then(|(_, data)| data.clone());
            let owner = self.owners.get(&client).copied();
            let allowed = was.is_none()
                || owner == Some(Owner::Slot(slot))
                || connection.introduced.contains(&client)
                || (now.is_some()
                    && connection.caller.as_ref().is_some_and(|caller| {
                        user_id_of(was.as_deref().unwrap_or("")).as_deref()
                            == Some(caller.id.0.as_str())
                    }));
            assert!(
                allowed,
                "connection {slot} changed client {client}'s state (owner {owner:?}): {was:?} -> {now:?}"
            );
            match &now {
                Some(json) => {
                    self.owners.insert(client, Owner::Slot(slot));
                    connection.introduced.insert(client);
                    match &connection.caller {
                        Some(caller) => {
                            let value: serde_json::Value = serde_json::from_str(json)
                                .unwrap_or_else(|error| {
                                    panic!("stored a state that is not JSON ({error}): {json}")
                                });
                            let user = value.get("user");
                            assert!(
                                value.is_object()
                                    && user.and_then(|u| u.get("name")).and_then(|n| n.as_str())
                                        == Some(caller.name.as_str())
                                    && user.and_then(|u| u.get("id")).and_then(|n| n.as_str())
                                        == Some(caller.id.0.as_str()),
                                "connection {slot}'s state does not name its caller: {json}"
                            );
                        }
                        None => assert!(
                            json.len() <= MAX_AWARENESS_STATE_BYTES,
                            "a state of {} bytes was set",
                            json.len()
                        ),
                    }
                }
                None => {
                    if self.owners.get(&client) == Some(&Owner::Slot(slot)) {
                        self.owners.remove(&client);
                    }
                }
            }
            connection.unrelayed.insert(client);
        }
        assert!(
            connection.introduced.len() <= MAX_AWARENESS_CLIENTS,
            "connection {slot} introduced {:?}",
            connection.introduced
        );
        for refusal in refusals {
            let (AwarenessRefusal::Foreign { client }
            | AwarenessRefusal::ForeignRemoval { client }) = *refusal;
            assert!(
                is_shown(before, client)
                    && self.owners.get(&client) != Some(&Owner::Slot(slot))
                    && !changed.contains(&client),
                "connection {slot} was refused client {client}, which is not someone else's ({refusals:?})"
            );
        }
        match effects {
            [] => {}
            [Effect::BroadcastAll(frame)] => self.relayed(slot, frame),
            _ => panic!("connection {slot}'s awareness had effects {effects:?}"),
        }
        let connection = &self.connections[slot];
        if !connection.limited() {
            assert!(
                connection.unrelayed.is_empty(),
                "an unlimited session held back {:?}",
                connection.unrelayed
            );
        }
        assert_eq!(
            connection.session.awareness_held_back(),
            connection.unrelayed.len(),
            "connection {slot} holds back other changes than it made"
        );
    }

    fn check_effects(&mut self, slot: usize, kind: &Kind, effects: &[Effect]) {
        let connection = &mut self.connections[slot];
        for effect in effects {
            match effect {
                Effect::Reply(frame) | Effect::Broadcast(frame) | Effect::BroadcastAll(frame) => {
                    check_server_frame(frame)
                }
                // Relayed to the other connections as an update message:
                // checked with the rest of storage (`check_storage`).
                Effect::Commit { .. } => {}
                Effect::AckWhenDurable { .. } | Effect::EnableSavedAcks | Effect::Denied => {}
            }
        }
        let viewer = connection.access == Access::ReadOnly;
        let ok = match kind {
            Kind::SyncStep1 => matches!(effects, [Effect::Reply(_)]),
            Kind::DocChange(_) if viewer => {
                matches!(effects, [] | [Effect::Reply(_), Effect::Denied])
            }
            Kind::DocChange(received) => {
                connection.changes += 1;
                match effects {
                    [Effect::Commit { update, change }] => {
                        assert_eq!(*change, connection.changes, "change numbers count from 1");
                        assert_eq!(
                            update, received,
                            "a commit stores other bytes than received"
                        );
                        self.stored
                            .updates
                            .push((self.stored.next_seq, update.clone()));
                        self.stored.next_seq += 1;
                        true
                    }
                    [Effect::AckWhenDurable { change }] => {
                        assert_eq!(*change, connection.changes, "change numbers count from 1");
                        true
                    }
                    _ => false,
                }
            }
            Kind::Awareness => viewer && effects.is_empty(),
            Kind::QueryAwareness => matches!(effects, [] | [Effect::Reply(_)]),
            Kind::Auth => effects.is_empty(),
            Kind::SavedOptIn => matches!(effects, [Effect::EnableSavedAcks]),
        };
        assert!(
            ok,
            "{:?} {kind:?} had effects {effects:?}",
            connection.access
        );
    }
}

/// Client ids whose state differs.
fn changed(before: &States, after: &States) -> BTreeSet<u64> {
    before
        .keys()
        .chain(after.keys())
        .filter(|client| before.get(client) != after.get(client))
        .copied()
        .collect()
}

/// The client ids of an awareness frame (one message), whose entries must
/// be the states as they are now.
fn awareness_ids(frame: &[u8], now: &States) -> BTreeSet<u64> {
    let messages = decode_frame(frame).expect("checked before");
    let [ClientMessage::Awareness(update)] = messages.as_slice() else {
        panic!("an awareness relay is not one awareness update: {messages:?}");
    };
    for (client, entry) in &update.clients {
        let (clock, data) = now.get(&client.get()).expect("relays a known client");
        assert_eq!(
            entry.clock,
            *clock,
            "relayed an old clock of client {}",
            client.get()
        );
        assert_eq!(
            &*entry.json,
            data.as_deref().unwrap_or("null"),
            "relayed an old state of client {}",
            client.get()
        );
    }
    update.clients.keys().map(|client| client.get()).collect()
}

/// Everything the server sends must be something it would accept itself:
/// the stock client sends document state back in sync step 2, and a room
/// reloads from updates that passed `update_check`.
fn check_server_frame(frame: &[u8]) {
    let messages = decode_frame(frame).unwrap_or_else(|error| {
        panic!("the server sent a frame it refuses itself ({error}): {frame:02x?}")
    });
    for message in messages {
        if let ClientMessage::SyncStep2(update) | ClientMessage::Update(update) = message {
            if let Err(error) = check_update_v1(update) {
                panic!("the server sent an update its own check refuses ({error}): {update:02x?}");
            }
        }
    }
}

/// Same content: state vector, deletions and the `body` text. (Not
/// `has_missing_updates`: after a deletion that reaches past the known
/// clock, yrs 0.26 keeps an empty pending delete set that a reload does not
/// reproduce, with the same content.)
fn assert_same_document(live: &Doc, reloaded: &Doc) {
    {
        let (live, reloaded) = (live.transact(), reloaded.transact());
        assert_eq!(
            live.state_vector(),
            reloaded.state_vector(),
            "the reloaded document has another state vector"
        );
        assert!(
            live.snapshot().delete_set == reloaded.snapshot().delete_set,
            "the reloaded document has other deletions"
        );
    }
    // What `Rooms::body_text` reads (postmortems).
    assert_eq!(
        body_text(live),
        body_text(reloaded),
        "the reloaded body differs"
    );
}

fn body_text(doc: &Doc) -> String {
    let body = doc.get_or_insert_text(BODY);
    body.get_string(&doc.transact())
}
/// libfuzzer-sys turns every panic into an abort, including the ones the
/// protocol core catches on purpose around yrs (`protocol::guarded`). Those
/// are let through to their `catch_unwind` (and reported once per place);
/// everything else still aborts.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    ONCE.call_once(|| {
        let strict = std::env::var_os("FUZZ_STRICT_GUARDED").is_some_and(|v| v != "0");
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if strict || !panic_is_expected() {
                return abort(info);
            }
            let place = info
                .location()
                .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
            if SEEN
                .lock()
                .map(|mut seen| seen.insert(place))
                .unwrap_or(false)
            {
                eprintln!(
                    "note: contained a panic inside protocol::guarded ({info}); \
                     FUZZ_STRICT_GUARDED=1 makes these crashes"
                );
            }
        }));
    });
}
