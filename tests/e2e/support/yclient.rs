//! A yrs client speaking y-websocket over tokio-tungstenite: what a Rust peer
//! (or a bot) would run. It syncs on connect, sends local edits as updates,
//! applies remote ones, and records what the server said (close code,
//! permission denials, "saved" acknowledgements).

use std::sync::Arc;
use std::time::Duration;

use commandpost_shared::wire::MSG_SAVED;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use yrs::encoding::read::{Cursor, Read};
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{
    ClientID, Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, TextRef, Transact,
    Update,
};

use super::{WAIT, wait_until};

/// What the server has told this client so far.
#[derive(Default, Debug)]
pub struct Seen {
    /// Close code and reason, once the server closed the socket.
    pub closed: Option<(u16, String)>,
    /// The socket ended (closed by either side or failed).
    pub ended: bool,
    /// Whether a sync step 2 arrived (the initial sync completed).
    pub synced: bool,
    /// Permission-denied reasons.
    pub denied: Vec<String>,
    /// Highest "saved" acknowledgement.
    pub saved: u64,
    /// Awareness states by client id (JSON text; "null" when removed).
    pub awareness: std::collections::HashMap<u64, String>,
    /// Binary frames received.
    pub frames: u64,
    /// Awareness entries received, per client id (relays counted, not
    /// just the latest state).
    pub awareness_received: std::collections::HashMap<u64, u64>,
}

pub struct YClient {
    pub doc: Doc,
    pub text: TextRef,
    out: mpsc::UnboundedSender<WsMessage>,
    pub seen: Arc<Mutex<Seen>>,
    /// Document-changing messages this client sent (for "saved").
    pub changes_sent: Arc<Mutex<u64>>,
    /// While false, the reader stops reading the socket (a stalled peer).
    reading: tokio::sync::watch::Sender<bool>,
    _subscription: yrs::Subscription,
}

const REMOTE: &str = "remote";

/// Connection options.
#[derive(Clone, Copy, Default)]
pub struct Connect {
    /// Opt in to "saved" acknowledgements.
    pub saved_acks: bool,
    /// Do not send local edits (to build offline changes).
    pub client_id: Option<u64>,
}

impl YClient {
    /// Connects and waits for the initial sync.
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, Connect::default()).await
    }

    pub async fn connect_with(url: &str, options: Connect) -> Self {
        let doc = new_doc(options.client_id);
        let client = Self::open(url, doc, options)
            .await
            .expect("websocket connect");
        client.wait_synced().await;
        client
    }

    /// Connects an existing document (e.g. one holding offline edits): the
    /// normal sync then sends the server whatever it lacks.
    pub async fn connect_doc(url: &str, doc: Doc, options: Connect) -> Self {
        let client = Self::open(url, doc, options)
            .await
            .expect("websocket connect");
        client.wait_synced().await;
        client
    }

    /// Opens the socket without waiting for sync; fails if the handshake is
    /// refused (the error carries the HTTP status).
    pub async fn open(
        url: &str,
        doc: Doc,
        options: Connect,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        let (mut sink, mut stream) = socket.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<WsMessage>();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changes_sent = Arc::new(Mutex::new(0u64));
        let text = doc.get_or_insert_text("body");

        // Local edits go out as update messages.
        let subscription = {
            let out = out.clone();
            let changes_sent = changes_sent.clone();
            doc.observe_update_v1(move |txn, event| {
                let remote = txn
                    .origin()
                    .is_some_and(|origin| origin.as_ref() == REMOTE.as_bytes());
                if !remote {
                    // Count and queue under one lock, so the numbering matches
                    // the order the server receives changes in.
                    let mut count = changes_sent.lock();
                    *count += 1;
                    let message = Message::Sync(SyncMessage::Update(event.update.clone()));
                    let _ = out.send(WsMessage::Binary(message.encode_v1().into()));
                }
            })
            .unwrap()
        };

        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });

        if options.saved_acks {
            let _ = out.send(WsMessage::Binary(vec![MSG_SAVED, 0].into()));
        }
        let step1 = Message::Sync(SyncMessage::SyncStep1(doc.transact().state_vector()));
        let _ = out.send(WsMessage::Binary(step1.encode_v1().into()));

        let (reading, mut may_read) = tokio::sync::watch::channel(true);
        {
            let doc = doc.clone();
            let out = out.clone();
            let seen = seen.clone();
            let changes_sent = changes_sent.clone();
            tokio::spawn(async move {
                loop {
                    if may_read.wait_for(|reading| *reading).await.is_err() {
                        break;
                    }
                    let Some(frame) = stream.next().await else {
                        break;
                    };
                    match frame {
                        Ok(WsMessage::Binary(bytes)) => {
                            seen.lock().frames += 1;
                            handle_frame(&doc, &out, &seen, &changes_sent, &bytes);
                        }
                        Ok(WsMessage::Close(frame)) => {
                            let mut seen = seen.lock();
                            seen.closed = Some(match frame {
                                Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
                                None => (u16::from(CloseCode::Status), String::new()),
                            });
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                seen.lock().ended = true;
            });
        }

        Ok(Self {
            doc,
            text,
            out,
            seen,
            changes_sent,
            reading,
            _subscription: subscription,
        })
    }

    pub async fn wait_synced(&self) {
        let seen = self.seen.clone();
        wait_until("initial sync", || seen.lock().synced).await;
    }

    pub fn read(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    pub fn insert(&self, index: u32, chunk: &str) {
        let mut txn = self.doc.transact_mut();
        self.text.insert(&mut txn, index, chunk);
    }

    /// Inserts `chunk` where `choose` says, given the text as it is in the
    /// same transaction: a remote update applied between reading the text
    /// and inserting would move the position (and could split someone
    /// else's text).
    pub fn insert_with(&self, choose: impl FnOnce(&str) -> u32, chunk: &str) {
        let mut txn = self.doc.transact_mut();
        let position = choose(&self.text.get_string(&txn));
        self.text.insert(&mut txn, position, chunk);
    }

    pub fn push(&self, chunk: &str) {
        let mut txn = self.doc.transact_mut();
        self.text.push(&mut txn, chunk);
    }

    pub fn len(&self) -> u32 {
        self.text.len(&self.doc.transact())
    }

    /// Sends raw bytes as one binary frame (for malformed-input tests).
    pub fn send_raw(&self, bytes: Vec<u8>) {
        let _ = self.out.send(WsMessage::Binary(bytes.into()));
    }

    /// Sends a text frame.
    pub fn send_text(&self, text: &str) {
        let _ = self.out.send(WsMessage::Text(text.into()));
    }

    /// Sends one update message carrying `update` (v1 bytes).
    pub fn send_update(&self, update: Vec<u8>) {
        let mut count = self.changes_sent.lock();
        *count += 1;
        self.send_raw(Message::Sync(SyncMessage::Update(update)).encode_v1());
    }

    /// Change messages sent so far (sync step 2 replies included).
    pub fn changes_sent(&self) -> u64 {
        *self.changes_sent.lock()
    }

    /// Announces an awareness state for `client_id` with the given clock.
    pub fn send_awareness(&self, client_id: u64, clock: u32, json: &str) {
        let mut clients = std::collections::HashMap::new();
        clients.insert(
            ClientID::new(client_id),
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
        self.send_raw(Message::Awareness(AwarenessUpdate { clients }).encode_v1());
    }

    /// Sends one awareness message with several `(client id, clock, json)`
    /// entries.
    pub fn send_awareness_entries(&self, entries: &[(u64, u32, String)]) {
        let clients = entries
            .iter()
            .map(|(client, clock, json)| {
                (
                    ClientID::new(*client),
                    AwarenessUpdateEntry {
                        clock: *clock,
                        json: json.as_str().into(),
                    },
                )
            })
            .collect();
        self.send_raw(Message::Awareness(AwarenessUpdate { clients }).encode_v1());
    }

    /// The awareness state last received for `client`, parsed (`None` when
    /// none arrived or it was removed).
    pub fn awareness_state(&self, client: u64) -> Option<serde_json::Value> {
        let seen = self.seen.lock();
        let json = seen.awareness.get(&client)?;
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .filter(|state| !state.is_null())
    }

    /// Deletes `len` characters at `index` (an update with only a delete
    /// set).
    pub fn delete(&self, index: u32, len: u32) {
        let mut txn = self.doc.transact_mut();
        self.text.remove_range(&mut txn, index, len);
    }

    /// Stops reading the socket, like a peer whose network stalled.
    pub fn pause_reading(&self) {
        let _ = self.reading.send(false);
    }

    pub fn resume_reading(&self) {
        let _ = self.reading.send(true);
    }

    /// Sends a close frame and lets the socket end.
    pub fn close(&self) {
        let _ = self.out.send(WsMessage::Close(None));
    }

    pub async fn wait_text(&self, expected: &str) {
        let started = std::time::Instant::now();
        let expected_len = expected.encode_utf16().count() as u32;
        // The length is cheap; build the string only when it matches.
        while !(self.len() == expected_len && self.read() == expected) {
            if started.elapsed() > WAIT {
                let text = self.read();
                panic!(
                    "text did not converge: have {} chars, want {} chars",
                    text.chars().count(),
                    expected.chars().count()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the server closed the connection; returns code and reason.
    pub async fn wait_closed(&self) -> (u16, String) {
        let seen = self.seen.clone();
        wait_until("server close frame", || seen.lock().closed.is_some()).await;
        self.seen.lock().closed.clone().unwrap()
    }

    /// Waits until every change sent so far is acknowledged as saved.
    pub async fn wait_saved(&self) -> u64 {
        let target = *self.changes_sent.lock();
        let seen = self.seen.clone();
        wait_until("saved acknowledgement", || seen.lock().saved >= target).await;
        target
    }

    pub fn saved(&self) -> u64 {
        self.seen.lock().saved
    }
}

impl Drop for YClient {
    /// Closes the socket: its tasks would otherwise keep it open.
    fn drop(&mut self) {
        let _ = self.out.send(WsMessage::Close(None));
    }
}

/// A doc with UTF-16 offsets, like Yjs in the browser (the traces' code
/// points equal UTF-16 units for text without astral characters).
pub fn new_doc(client_id: Option<u64>) -> Doc {
    let mut options = Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    };
    if let Some(id) = client_id {
        options.client_id = ClientID::new(id);
    }
    Doc::with_options(options)
}

fn handle_frame(
    doc: &Doc,
    out: &mpsc::UnboundedSender<WsMessage>,
    seen: &Mutex<Seen>,
    changes_sent: &Mutex<u64>,
    bytes: &[u8],
) {
    // Our own extension first: [100, len, varuint n].
    if bytes.first() == Some(&MSG_SAVED) {
        let mut cursor = Cursor::new(&bytes[1..]);
        if let Ok(payload) = cursor.read_buf() {
            let mut inner = Cursor::new(payload);
            if let Ok(n) = inner.read_var::<u64>() {
                let mut seen = seen.lock();
                seen.saved = seen.saved.max(n);
            }
        }
        return;
    }
    let mut decoder = DecoderV1::new(Cursor::new(bytes));
    for message in yrs::sync::protocol::MessageReader::new(&mut decoder) {
        let message = message.expect("server sent a malformed message");
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let diff = doc.transact().encode_diff_v1(&sv);
                let reply = Message::Sync(SyncMessage::SyncStep2(diff));
                // The server counts a sync step 2 as a change too.
                let mut count = changes_sent.lock();
                *count += 1;
                let _ = out.send(WsMessage::Binary(reply.encode_v1().into()));
            }
            Message::Sync(SyncMessage::SyncStep2(update)) => {
                apply_remote(doc, &update);
                seen.lock().synced = true;
            }
            Message::Sync(SyncMessage::Update(update)) => apply_remote(doc, &update),
            Message::Auth(Some(reason)) => seen.lock().denied.push(reason),
            Message::Auth(None) => {}
            Message::Awareness(update) => {
                let mut seen = seen.lock();
                for (client, entry) in update.clients {
                    seen.awareness.insert(client.get(), entry.json.to_string());
                    *seen.awareness_received.entry(client.get()).or_default() += 1;
                }
            }
            Message::AwarenessQuery | Message::Custom(..) => {}
        }
    }
}

fn apply_remote(doc: &Doc, update: &[u8]) {
    let update = Update::decode_v1(update).expect("server sent an invalid update");
    let mut txn = doc.transact_mut_with(REMOTE);
    txn.apply_update(update)
        .expect("server sent an update yrs refuses");
}

/// The full state of a doc as one v1 update.
pub fn full_update(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}
