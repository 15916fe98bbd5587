//! The per-connection protocol core, the way `ws.rs` drives it: frames from
//! several connections to one room are decoded with `decode_frame` and each
//! message goes through `Session::handle` (so every update passes the
//! structural checker `update_check` before yrs sees it), with the room's
//! `Awareness` and its yrs `Doc` shared by all of them.
//!
//! The room is loaded like the server loads one (`rooms::build_doc` over a
//! stored snapshot holding the incident's seed text), with two other people
//! already present in its awareness. Four connections take part: two editors
//! (read-write) and two viewers (read-only).
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
//! `header & 3` picks the connection (0, 1: editors; 2, 3: viewers);
//! `header & 4` makes that connection leave after the frame. A length beyond
//! the input takes the rest.
//!
//! # What must hold
//!
//! - nothing panics outside the `catch_unwind` the protocol core keeps for
//!   yrs (panics inside it are the containment working; set
//!   `FUZZ_STRICT_GUARDED=1` to treat them as crashes too);
//! - a viewer's message never changes the document (its encoding, state
//!   vector, pending updates) nor any awareness state;
//! - effects match the message: one `Commit` (carrying exactly the received
//!   bytes) or `AckWhenDurable` per document change from an editor, numbered
//!   1, 2, 3... per connection; nothing but a denial for a viewer's edit; ...
//! - every frame the server sends (replies, broadcasts, relayed updates, the
//!   greeting, a resync, the leave message, a merged batch of relayed
//!   updates) is one the server itself would accept: it decodes, and every
//!   update in it passes `update_check`; merging a batch never panics;
//! - when a connection leaves, its awareness states are gone, and once every
//!   fuzzed connection has left, only the people present before remain;
//! - a refusal that leaves the document suspect comes only from an editor,
//!   and the room then reloads from storage, as the server does;
//! - storage (the snapshot and every committed update, in order) reloads
//!   with `build_doc` without error, to the same document as the live one
//!   (state vector, deletions, `body` text), and so does the snapshot that
//!   compaction (`Room::persist`) writes of the live document, when it
//!   writes one (`rooms::compaction_snapshot` refuses a snapshot that would
//!   reload differently; the log is then kept).

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock, Mutex, Once};

use commandpost::protocol::{
    Access, ClientMessage, Effect, Session, decode_frame, encode_update, full_state, greeting,
    panic_is_expected,
};
use commandpost::rooms::{build_doc, compaction_snapshot};
use commandpost::store::StoredDoc;
use commandpost::template::BODY;
use commandpost::update_check::check_update_v1;
use commandpost_shared::IncidentId;
use libfuzzer_sys::fuzz_target;
use yrs::sync::Awareness;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::{ClientID, Doc, GetString, ReadTxn, StateVector, Text, Transact};

/// Records handled per input, at most.
const MAX_FRAMES: usize = 32;

/// The client id that wrote the seed text, fixed so that inputs can refer to
/// its characters. fuzz/make_corpus.mjs builds the same seed.
const SEED_CLIENT: u64 = 1;
/// The seed text of the room's `body`. fuzz/make_corpus.mjs uses the same.
const SEED_TEXT: &str = "# INC-1: Checkout API returning 502s\n\n## Summary\n\n\
                         Errors since 09:00 UTC.\n\n## Timeline\n\n- 09:02 paged\n";

/// People already in the room: (client id, clock, awareness state).
const PRESENT: [(u64, u32, &str); 2] = [
    (
        1001,
        3,
        r##"{"user":{"name":"Alice","color":"#30bced"},"cursor":null}"##,
    ),
    (1002, 1, r##"{"user":{"name":"Bob","color":"#6eeb83"}}"##),
];

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

fuzz_target!(|data: &[u8]| {
    install_panic_hook();
    run(data);
});

fn run(data: &[u8]) {
    let mut stored = StoredDoc {
        snapshot: Some(SEED_UPDATE.clone()),
        next_seq: 1,
        ..StoredDoc::default()
    };
    let mut room = load(&stored);
    let mut present = announce_present(&room);
    let mut connections = [
        Connection::new(Access::ReadWrite),
        Connection::new(Access::ReadWrite),
        Connection::new(Access::ReadOnly),
        Connection::new(Access::ReadOnly),
    ];
    for connection in &connections {
        connection.greet(&room);
    }

    for (header, frame) in Records(data).take(MAX_FRAMES) {
        let connection = &mut connections[usize::from(header & 3)];
        match handle_frame(&room, connection, &mut stored, frame) {
            Outcome::Open if header & 4 == 0 => {}
            Outcome::Open | Outcome::Closed => {
                if *DEBUG {
                    eprintln!("{:?} leaves", connection.access);
                }
                connection.leave(&room)
            }
            Outcome::Reload => {
                // ws.rs: the room is evicted, every connection is closed and
                // leaves the old room, and the next join loads it anew.
                for connection in &mut connections {
                    connection.leave(&room);
                }
                room = load(&stored);
                present.clear();
            }
        }
    }
    for connection in &mut connections {
        connection.leave(&room);
    }

    // Every fuzzed connection has left: only the people who were present
    // before may still be shown.
    for (client, state) in room.iter() {
        if state.data.is_some() {
            assert!(
                present.contains(&client.get()),
                "client {} is still shown after every connection that announced it left",
                client.get()
            );
        }
    }

    // What was stored reloads to what everyone saw: the log as it is, and
    // compacted into a snapshot of the live document (`Room::persist`).
    let reloaded = load(&stored);
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
            let recompacted = load(&compacted);
            assert_same_document(room.doc(), recompacted.doc());
            recompacted
        }
        Err(why) => {
            if *DEBUG {
                eprintln!("compaction refused: {why}");
            }
            load(&stored)
        }
    };

    // What joining and resyncing connections are sent.
    for frame in greeting(&reloaded)
        .iter()
        .chain([&full_state(&room), &full_state(&recompacted)])
    {
        check_server_frame(frame);
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

/// Loads the room from storage the strict way (`build_doc`): a stored part
/// that does not load is a bug here (the server would quarantine it, losing
/// what it holds).
fn load(stored: &StoredDoc) -> Awareness {
    let doc = build_doc(&IncidentId::new(1), stored).unwrap_or_else(|error| {
        panic!("updates the server stored no longer load: {error}");
    });
    Awareness::new(doc)
}

/// Puts the people of [`PRESENT`] in the room; returns their client ids.
fn announce_present(room: &Awareness) -> BTreeSet<u64> {
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
    room.apply_update(AwarenessUpdate { clients })
        .expect("the present people's awareness applies");
    PRESENT.iter().map(|&(client, ..)| client).collect()
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
    session: Session,
    /// Document-changing messages handled so far: the change number the
    /// session must give the next one, less one.
    changes: u64,
}

impl Connection {
    fn new(access: Access) -> Self {
        Self {
            access,
            session: Session::new(access),
            changes: 0,
        }
    }

    /// What the server sends a connection that joins.
    fn greet(&self, room: &Awareness) {
        for frame in greeting(room) {
            check_server_frame(&frame);
        }
    }

    /// The connection closes (for any reason; `serve_connection` always
    /// calls `leave`), and a new one takes its place.
    fn leave(&mut self, room: &Awareness) {
        if let Some(frame) = self.session.leave(room) {
            check_server_frame(&frame);
            let messages = decode_frame(&frame).expect("checked above");
            let [ClientMessage::Awareness(update)] = messages.as_slice() else {
                panic!("the leave message is not one awareness update: {messages:?}");
            };
            for (client, entry) in &update.clients {
                assert_eq!(&*entry.json, "null", "a leave message sets a state");
                assert!(
                    room.iter()
                        .all(|(other, state)| other != *client || state.data.is_none()),
                    "client {} is still shown after its connection left",
                    client.get()
                );
            }
        }
        *self = Connection::new(self.access);
        self.greet(room);
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

/// `ws.rs::handle_frame`, minus sockets and storage I/O.
fn handle_frame(
    room: &Awareness,
    connection: &mut Connection,
    stored: &mut StoredDoc,
    frame: &[u8],
) -> Outcome {
    let messages = match decode_frame(frame) {
        Ok(messages) => messages,
        Err(error) => {
            assert!(!error.leaves_document_suspect(), "{error:?}");
            return Outcome::Closed;
        }
    };
    for message in messages {
        let kind = Kind::of(&message);
        let viewer = connection.access == Access::ReadOnly;
        let before = viewer.then(|| Observed::of(room));
        let result = connection.session.handle(room, message);
        if *DEBUG {
            let shown = match &result {
                Ok(effects) => effects.iter().map(Effect::name).collect::<Vec<_>>().join(", "),
                Err(error) => format!("error: {error}"),
            };
            eprintln!("{:?} {}: {shown}", connection.access, kind.name());
        }
        if let Some(before) = before {
            let after = Observed::of(room);
            assert!(
                before == after,
                "a viewer's {kind:?} changed the room:\nbefore {before:?}\nafter  {after:?}"
            );
        }
        match result {
            Ok(effects) => check_effects(connection, &kind, &effects, stored),
            Err(error) if error.leaves_document_suspect() => {
                assert!(!viewer, "a viewer's {kind:?} left the document suspect");
                return Outcome::Reload;
            }
            Err(_) => return Outcome::Closed,
        }
    }
    Outcome::Open
}

fn check_effects(connection: &mut Connection, kind: &Kind, effects: &[Effect], stored: &mut StoredDoc) {
    for effect in effects {
        match effect {
            Effect::Reply(frame) | Effect::Broadcast(frame) | Effect::BroadcastAll(frame) => {
                check_server_frame(frame)
            }
            // Relayed to the other connections as an update message.
            Effect::Commit { update, .. } => check_server_frame(&encode_update(update)),
            Effect::AckWhenDurable { .. } | Effect::EnableSavedAcks | Effect::Denied => {}
        }
    }
    let viewer = connection.access == Access::ReadOnly;
    let ok = match kind {
        Kind::SyncStep1 => matches!(effects, [Effect::Reply(_)]),
        Kind::DocChange(_) if viewer => matches!(effects, [] | [Effect::Reply(_), Effect::Denied]),
        Kind::DocChange(received) => {
            connection.changes += 1;
            match effects {
                [Effect::Commit { update, change }] => {
                    assert_eq!(*change, connection.changes, "change numbers count from 1");
                    assert_eq!(update, received, "a commit stores other bytes than received");
                    stored.updates.push((stored.next_seq, update.clone()));
                    stored.next_seq += 1;
                    true
                }
                [Effect::AckWhenDurable { change }] => {
                    assert_eq!(*change, connection.changes, "change numbers count from 1");
                    true
                }
                _ => false,
            }
        }
        Kind::Awareness if viewer => effects.is_empty(),
        Kind::Awareness => matches!(effects, [Effect::BroadcastAll(_)]),
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

/// What a viewer must not change.
#[derive(Debug, PartialEq)]
struct Observed {
    /// The integrated document (`encode_diff_v1`: the same bytes for the same
    /// document).
    state: Vec<u8>,
    state_vector: StateVector,
    pending: bool,
    /// With pending updates. Only its length: the encoding re-decodes and
    /// merges them, and `Any` maps come out in a different order each time.
    full_state_len: usize,
    /// client -> (clock, state)
    awareness: BTreeMap<u64, (u32, Option<Arc<str>>)>,
}

impl Observed {
    fn of(room: &Awareness) -> Self {
        let txn = room.doc().transact();
        Self {
            state: txn.encode_diff_v1(&StateVector::default()),
            state_vector: txn.state_vector(),
            pending: txn.has_missing_updates(),
            full_state_len: txn
                .encode_state_as_update_v1(&StateVector::default())
                .len(),
            awareness: room
                .iter()
                .map(|(client, state)| (client.get(), (state.clock, state.data)))
                .collect(),
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
    assert_eq!(body_text(live), body_text(reloaded), "the reloaded body differs");
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
            if SEEN.lock().map(|mut seen| seen.insert(place)).unwrap_or(false) {
                eprintln!(
                    "note: contained a panic inside protocol::guarded ({info}); \
                     FUZZ_STRICT_GUARDED=1 makes these crashes"
                );
            }
        }));
    });
}
