//! The document WebSocket: `GET /ws/{incident_id}`.
//!
//! Authentication, the incident check and the viewer/editor decision happen
//! before the upgrade, so a refused client never receives document data.
//! After the upgrade, one task per connection moves bytes between the socket
//! and its room: frames in are decoded and handled by [`protocol::Session`];
//! room broadcasts and "saved" acknowledgements go out. Only this module
//! knows about WebSocket frames and close codes.
//!
//! Each connection has an inbound budget (`--inbound-bytes-per-second`,
//! `--updates-per-second`). A connection over it is not closed: its socket
//! is simply not read until the budget refills, so TCP pushes back on the
//! sender while everything else (relays, acknowledgements) goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use commandpost_shared::{IncidentId, TokenClaims};
use futures::stream::{FuturesOrdered, SplitSink};
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, oneshot};
use tracing::Instrument;

use crate::http::{ApiError, ApiQuery, AppState};
use crate::metrics::METRICS;
use crate::protocol::{self, Access, Session, SessionLimits, TokenBucket, close_code};
use crate::rooms::{Handled, Outbound, Refusal, RoomGuard};
use crate::store::StoreError;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Per-connection socket buffers. tungstenite's defaults (128 KiB each, the
/// read buffer allocated up front) would cost 128 KiB per idle viewer; the
/// buffers grow as needed for a large message.
const READ_BUFFER_BYTES: usize = 4 * 1024;
const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Broadcast messages written to the socket before one flush.
const MAX_BATCH: usize = 256;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// The upgrade handler: every check happens before the upgrade.
pub async fn upgrade(
    State(app): State<AppState>,
    Path(raw_id): Path<String>,
    ApiQuery(query): ApiQuery<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if let Err(reason) = crate::security::origin_allowed(&headers, &app.config.allowed_origins) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "origin_not_allowed",
            reason,
        ));
    }
    let claims = app.authenticate(&headers, query.token)?;
    let id = app.known_incident(&claims, &raw_id).await?;
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let permit = app.connection_limits.acquire(&claims)?;
    let access = if claims.role.can_write() {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let limit = app.config.max_message_bytes;
    let tasks = app.tasks.clone();
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                let _permit = permit;
                serve_connection(app, socket, id, claims, access).await
            })
        }))
}

type Sink = SplitSink<WebSocket, Message>;

async fn serve_connection(
    app: AppState,
    socket: WebSocket,
    id: IncidentId,
    claims: TokenClaims,
    access: Access,
) {
    let connection = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("ws", incident = %id, conn = connection, user = %claims.sub, role = %claims.role);
    async move {
        let (mut sink, stream) = socket.split();
        let room = match app.rooms.join(&id, access).await {
            Ok(room) => room,
            Err(error) => {
                tracing::error!(%error, "cannot load the incident document");
                close(
                    &mut sink,
                    close_code::INTERNAL_ERROR,
                    "cannot load the incident document",
                )
                .await;
                return;
            }
        };
        tracing::info!("connected");
        let role = match access {
            Access::ReadWrite => "editor",
            Access::ReadOnly => "viewer",
        };
        METRICS.connection_opened(role);
        let caller = claims.actor();
        let limits = SessionLimits {
            awareness_per_second: app.config.awareness_per_second,
        };
        let mut session = Session::for_caller(access, caller, limits);
        let outcome = run(
            &app,
            &room,
            &mut session,
            connection,
            &claims.jti,
            &mut sink,
            stream,
        )
        .await;
        METRICS.connection_closed(role, outcome.reason());
        // Leaving: remove this connection's awareness states and tell the rest.
        room.with_state(|state| {
            if let Some(message) = session.leave(&state.awareness) {
                room.broadcast_awareness(connection, message);
            }
        });
        match outcome {
            Closing::Peer => tracing::info!("disconnected"),
            Closing::Dead => tracing::info!("dropped a dead connection"),
            Closing::Server { code, reason } => {
                if code == close_code::SERVICE_RESTART {
                    tracing::info!(%reason, "told the client to reconnect");
                }
                close(&mut sink, code, &reason).await;
            }
        }
    }
    .instrument(span)
    .await
}

enum Closing {
    /// The peer closed or the transport failed; nothing to send.
    Peer,
    /// The peer stopped answering pings (or reading); nothing to send.
    Dead,
    /// The server closes with this code and reason.
    Server { code: u16, reason: String },
}

impl Closing {
    /// The metrics label for this way of closing.
    fn reason(&self) -> &'static str {
        match self {
            Closing::Peer => "peer",
            Closing::Dead => "dead",
            Closing::Server { code, .. } => match *code {
                close_code::SERVICE_RESTART => "restart",
                close_code::UNSUPPORTED_DATA => "text_frame",
                close_code::MESSAGE_TOO_BIG => "too_big",
                close_code::INTERNAL_ERROR => "storage",
                close_code::MALFORMED => "malformed",
                close_code::UPDATE_REJECTED => "refused",
                close_code::LAGGING => "stalled",
                close_code::REVOKED => "revoked",
                close_code::DOCUMENT_TOO_LARGE => "document_too_large",
                _ => "other",
            },
        }
    }

    fn server(code: u16, reason: impl Into<String>) -> Self {
        Closing::Server {
            code,
            reason: reason.into(),
        }
    }
}

/// What a connection may send before the server stops reading it for a
/// while (see the module docs).
struct InboundBudget {
    /// Every byte received.
    bytes: TokenBucket,
    /// Messages other than awareness (edits, sync, queries).
    updates: TokenBucket,
    /// Whether the first throttling was logged (later ones log at debug).
    warned: bool,
}

impl InboundBudget {
    fn new(config: &crate::config::ServerConfig) -> Self {
        let bytes = config.inbound_bytes_per_second as f64;
        let updates = f64::from(config.updates_per_second);
        Self {
            // The burst lets one message of the largest allowed size through
            // at once (a big paste, an offline client's catch-up).
            bytes: TokenBucket::new(bytes, bytes.max(config.max_message_bytes as f64)),
            updates: TokenBucket::new(updates, 2.0 * updates),
            warned: false,
        }
    }

    /// How long not to read the socket after a frame handled at `now`, if
    /// the connection is over its budget; counted and logged.
    fn throttle(&mut self, now: Duration) -> Option<Duration> {
        let wait = self.wait(now);
        if wait.is_zero() {
            return None;
        }
        METRICS.inbound_throttles.inc();
        let wait_ms = wait.as_millis() as u64;
        if self.warned {
            tracing::debug!(wait_ms, "throttling: not reading the socket");
        } else {
            self.warned = true;
            tracing::warn!(
                wait_ms,
                "throttling: the connection sends more than its budget; not reading it until the budget refills"
            );
        }
        Some(wait)
    }

    /// How long the connection must not be read, from `now`.
    fn wait(&mut self, now: Duration) -> Duration {
        self.bytes
            .wait_for(0.0, now)
            .max(self.updates.wait_for(0.0, now))
    }
}

type SavedWait = std::pin::Pin<Box<dyn Future<Output = (u64, Result<(), StoreError>)> + Send>>;

fn wait_saved(change: u64, wait: oneshot::Receiver<Result<(), StoreError>>) -> SavedWait {
    Box::pin(async move { (change, wait.await.unwrap_or(Err(StoreError::WriterGone))) })
}

async fn run(
    app: &AppState,
    room: &RoomGuard,
    session: &mut Session,
    connection: u64,
    jti: &str,
    sink: &mut Sink,
    mut stream: futures::stream::SplitStream<WebSocket>,
) -> Closing {
    let mut revoked = app.revocations.subscribe();
    // Revoked between the upgrade's check and the subscription?
    if app.revocations.is_revoked(jti) {
        return Closing::server(close_code::REVOKED, "access token revoked");
    }
    // Subscribe before reading the document, so no update falls between.
    let mut updates = room.subscribe();
    let greeting = room.with_state(|state| protocol::greeting(&state.awareness));
    // A send that waits longer than one ping interval means the peer
    // stopped reading (it would miss the next ping's answer too).
    let stall = app.config.ping_interval;
    if send_all(sink, greeting, stall).await.is_err() {
        return Closing::Peer;
    }
    let mut saved_acks = false;
    let mut saving: FuturesOrdered<SavedWait> = FuturesOrdered::new();
    // The clock of the connection's rate limits.
    let started = tokio::time::Instant::now();
    let mut inbound = InboundBudget::new(&app.config);
    // While set, the socket is not read (back-pressure), until `throttle`.
    let mut throttled_since: Option<tokio::time::Instant> = None;
    let throttle = tokio::time::sleep(Duration::ZERO);
    // Awareness changes held back by the relay rate go out when it fires.
    let awareness_timer = tokio::time::sleep(Duration::ZERO);
    let mut awareness_armed = false;
    tokio::pin!(throttle, awareness_timer);
    // Created once, not per loop turn: registering with a cancellation
    // token takes a lock, and this loop turns once per delivered message.
    let shutdown = app.shutdown.clone().cancelled_owned();
    let closing = room.closing.clone().cancelled_owned();
    tokio::pin!(shutdown, closing);
    // Dead peers: ping every interval; silence for two intervals is death.
    let ping_every = app.config.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                // A throttled socket is not read, so its pongs are not seen.
                let heard = if throttled_since.is_some() { tokio::time::Instant::now() } else { last_heard };
                if let Err(dead) = ping_peer(sink, heard, ping_every).await {
                    return dead;
                }
            }
            _ = &mut shutdown => {
                return Closing::server(close_code::SERVICE_RESTART, "server restarting");
            }
            revocation = revoked.recv() => {
                let hit = revocation.map_or_else(|_| app.revocations.is_revoked(jti), |id| id == jti);
                if hit {
                    tracing::info!(code = close_code::REVOKED, "closing: access token revoked");
                    return Closing::server(close_code::REVOKED, "access token revoked");
                }
            }
            _ = &mut closing => {
                return Closing::server(close_code::SERVICE_RESTART, "document reloading; reconnect");
            }
            _ = &mut throttle, if throttled_since.is_some() => {
                if let Some(since) = throttled_since.take() {
                    METRICS.inbound_throttled_seconds.inc_by(since.elapsed().as_secs_f64());
                }
                last_heard = tokio::time::Instant::now();
            }
            _ = &mut awareness_timer, if awareness_armed => {
                awareness_armed = false;
                let now = started.elapsed();
                room.with_state(|state| {
                    if let Some(message) = session.flush_awareness(&state.awareness, now) {
                        room.broadcast_awareness(crate::rooms::EVERYONE, message);
                    }
                });
                if let Some(due) = session.awareness_due() {
                    awareness_timer.as_mut().reset(started + due);
                    awareness_armed = true;
                }
            }
            frame = stream.next(), if throttled_since.is_none() => {
                last_heard = tokio::time::Instant::now();
                let bytes = match binary_frame(frame, app.config.max_message_bytes) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => continue,
                    Err(closing) => return closing,
                };
                let now = started.elapsed();
                let handled = handle_frame(
                    room,
                    session,
                    connection,
                    &bytes,
                    app.config.max_document_bytes,
                    now,
                    &mut inbound,
                );
                if !awareness_armed && let Some(due) = session.awareness_due() {
                    awareness_timer.as_mut().reset(started + due);
                    awareness_armed = true;
                }
                if let Some(wait) = inbound.throttle(now) {
                    let now = tokio::time::Instant::now();
                    throttle.as_mut().reset(now + wait);
                    throttled_since = Some(now);
                }
                match handled {
                    Ok(handled) => {
                        if handled.enable_saved {
                            saved_acks = true;
                        }
                        for (change, wait) in handled.saving {
                            saving.push_back(wait_saved(change, wait));
                        }
                        if send_all(sink, handled.replies, stall).await.is_err() {
                            return Closing::Peer;
                        }
                    }
                    Err(closing) => return closing,
                }
            }
            received = updates.recv() => {
                let batch = match relay_batch(room, connection, received, &mut updates) {
                    Ok(batch) => batch,
                    Err(closing) => return closing,
                };
                if send_all(sink, batch, stall).await.is_err() {
                    return Closing::Peer;
                }
            }
            Some(first) = saving.next(), if !saving.is_empty() => {
                let (change, result) = latest_saved(first, &mut saving);
                if let Err(error) = result {
                    tracing::error!(%error, code = close_code::INTERNAL_ERROR, "closing: a change could not be saved");
                    // The room holds the change, storage does not: it
                    // reloads, and everyone's client sends it again.
                    room.unsaved();
                    return Closing::server(close_code::INTERNAL_ERROR, "storage failure: your last changes were not saved; reconnect to resend them");
                }
                if saved_acks && send_all(sink, vec![protocol::encode_saved(change)], stall).await.is_err() {
                    return Closing::Peer;
                }
            }
        }
    }
}

/// The connection fell behind the room's buffer: instead of the messages it
/// missed, it gets the whole document as one merged update (Yjs ignores what
/// it already has), and it goes on from there.
/// Pings the peer; a peer not heard from (`last_heard`) for two intervals,
/// or that cannot take a ping within one, is dead.
async fn ping_peer(
    sink: &mut Sink,
    last_heard: tokio::time::Instant,
    ping_every: Duration,
) -> Result<(), Closing> {
    if last_heard.elapsed() >= ping_every * 2 {
        tracing::info!(
            silent_ms = last_heard.elapsed().as_millis() as u64,
            "closing: peer stopped answering pings"
        );
        return Err(Closing::Dead);
    }
    let sent = tokio::time::timeout(ping_every, sink.send(Message::Ping(Bytes::new()))).await;
    if !matches!(sent, Ok(Ok(()))) {
        tracing::info!("closing: cannot ping the peer");
        return Err(Closing::Dead);
    }
    Ok(())
}

/// The bytes of a binary frame; `None` for a ping or pong (nothing to do);
/// the reason to close for anything else.
fn binary_frame(
    frame: Option<Result<Message, axum::Error>>,
    max_message_bytes: usize,
) -> Result<Option<Bytes>, Closing> {
    match frame {
        None | Some(Ok(Message::Close(_))) => Err(Closing::Peer),
        Some(Ok(Message::Binary(bytes))) => Ok(Some(bytes)),
        Some(Ok(Message::Text(_))) => {
            tracing::warn!(code = close_code::UNSUPPORTED_DATA, "closing: text frame");
            Err(Closing::server(
                close_code::UNSUPPORTED_DATA,
                "text frames are not part of the protocol; send binary y-websocket messages",
            ))
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        Some(Err(error)) => Err(transport_error(error, max_message_bytes)),
    }
}

/// What the room's broadcast holds for this connection: the message just
/// received and whatever else is already queued (up to [`MAX_BATCH`]), to be
/// flushed once. Its own messages are left out; a connection that lagged
/// behind gets one merged update of the whole document instead.
fn relay_batch(
    room: &RoomGuard,
    connection: u64,
    received: Result<Outbound, RecvError>,
    updates: &mut broadcast::Receiver<Outbound>,
) -> Result<Vec<Bytes>, Closing> {
    let mut batch = Vec::new();
    match received {
        Ok(outbound) => {
            if outbound.from != connection {
                batch.push(outbound.bytes);
            }
            while batch.len() < MAX_BATCH {
                match updates.try_recv() {
                    Ok(outbound) if outbound.from == connection => {}
                    Ok(outbound) => batch.push(outbound.bytes),
                    Err(TryRecvError::Lagged(skipped)) => {
                        batch = vec![resync(room, skipped)];
                    }
                    Err(_) => break,
                }
            }
        }
        Err(RecvError::Lagged(skipped)) => batch.push(resync(room, skipped)),
        Err(RecvError::Closed) => {
            return Err(Closing::server(close_code::INTERNAL_ERROR, "room closed"));
        }
    }
    Ok(batch)
}

/// The latest of the acknowledgements that are complete, starting from
/// `first`: one "saved" message covers every change before it. Stops at a
/// failure, which is reported.
fn latest_saved(
    first: (u64, Result<(), StoreError>),
    saving: &mut FuturesOrdered<SavedWait>,
) -> (u64, Result<(), StoreError>) {
    let mut latest = first;
    while latest.1.is_ok() {
        match saving.next().now_or_never() {
            Some(Some(next)) => latest = next,
            _ => break,
        }
    }
    latest
}

fn resync(room: &RoomGuard, skipped: u64) -> Bytes {
    tracing::warn!(
        skipped,
        "connection lagged behind its room; sending one merged update instead"
    );
    METRICS.lagging_resyncs.inc();
    room.with_state(|state| protocol::full_state(&state.awareness))
}

/// What one frame produced for this connection.
fn handle_frame(
    room: &RoomGuard,
    session: &mut Session,
    connection: u64,
    frame: &[u8],
    max_document_bytes: u64,
    now: Duration,
    inbound: &mut InboundBudget,
) -> Result<Handled, Closing> {
    inbound.bytes.charge(frame.len() as f64, now);
    let messages = protocol::decode_frame(frame).map_err(|error| {
        tracing::warn!(code = error.close_code(), %error, bytes = frame.len(), "closing: malformed frame");
        Closing::server(error.close_code(), error.to_string())
    })?;
    tracing::trace!(messages = messages.len(), bytes = frame.len(), "frame");
    // Every message but awareness counts against the message budget (stock
    // clients send back each awareness update they receive, so awareness
    // volume grows with the room; the byte budget and the session's relay
    // rate bound it).
    room.handle_messages(
        session,
        connection,
        messages,
        max_document_bytes,
        now,
        || inbound.updates.charge(1.0, now),
    )
    .map_err(refusal_closing)
}

/// The close code and reason for a room's refusal, with its one log line.
fn refusal_closing(refusal: Refusal) -> Closing {
    match refusal {
        Refusal::Reloading => {
            Closing::server(close_code::SERVICE_RESTART, "document reloading; reconnect")
        }
        Refusal::Protocol(error) => {
            let reload = error.leaves_document_suspect();
            tracing::warn!(code = error.close_code(), %error, reload, "closing: message refused");
            Closing::server(error.close_code(), error.to_string())
        }
        Refusal::TooLarge {
            limit,
            stored,
            update,
        } => {
            tracing::warn!(
                code = close_code::DOCUMENT_TOO_LARGE,
                limit,
                stored,
                update,
                "closing: document size limit"
            );
            Closing::server(
                close_code::DOCUMENT_TOO_LARGE,
                format!(
                    "the document reached its size limit ({}); this edit was not saved",
                    if limit >= 1024 * 1024 {
                        format!("{} MiB", limit / (1024 * 1024))
                    } else {
                        format!("{limit} bytes")
                    }
                ),
            )
        }
        Refusal::Storage(error) => storage_closing(error),
    }
}

fn storage_closing(error: StoreError) -> Closing {
    tracing::error!(%error, "closing: storage unavailable");
    Closing::server(
        close_code::INTERNAL_ERROR,
        "storage failure: the change was not saved",
    )
}

fn transport_error(error: axum::Error, limit: usize) -> Closing {
    let inner = error.into_inner();
    if let Some(tungstenite::Error::Capacity(capacity)) = inner.downcast_ref::<tungstenite::Error>()
    {
        tracing::warn!(code = close_code::MESSAGE_TOO_BIG, error = %capacity, "closing: message too big");
        return Closing::server(
            close_code::MESSAGE_TOO_BIG,
            format!("message larger than the {limit}-byte limit"),
        );
    }
    tracing::info!(error = %inner, "connection error");
    Closing::Peer
}

/// Sends `frames`; a send that cannot finish within `stall` means the peer
/// stopped reading, and the connection is dropped.
async fn send_all(sink: &mut Sink, frames: Vec<Bytes>, stall: Duration) -> Result<(), ()> {
    if frames.is_empty() {
        return Ok(());
    }
    let bytes: usize = frames.iter().map(Bytes::len).sum();
    METRICS.bytes_out.inc_by(bytes as u64);
    let send = async {
        for frame in frames {
            sink.feed(Message::Binary(frame)).await?;
        }
        sink.flush().await
    };
    tokio::pin!(send);
    // Usually the socket takes the bytes at once; only a send that has to
    // wait gets a timer (arming one per delivery costs more than the send).
    if let std::task::Poll::Ready(result) = futures::poll!(&mut send) {
        return result.map_err(|_| ());
    }
    match tokio::time::timeout(stall, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            tracing::warn!("peer stopped reading for {stall:?}; dropping the connection");
            Err(())
        }
    }
}

async fn close(sink: &mut Sink, code: u16, reason: &str) {
    // Close reasons are limited to 123 bytes by the protocol.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}
