//! HTTP endpoints of the command sidecar: one endpoint per command, the
//! reads (state, timeline, role history, briefing preview) and the live
//! event stream.
//!
//! The stream also carries `event: presence` messages (`{"editors",
//! "viewers"}`, the document's connection counts): one when it opens, then
//! one whenever the counts changed, looked at once a second, so every page
//! shows the same numbers within a second without polling.
//!
//! Live events are Server-Sent Events (`GET /api/incidents/{id}/events`):
//! each event's SSE `id` is its sequence number, so a browser's
//! `EventSource` resumes by itself after a reconnect (it sends
//! `Last-Event-ID`), and any client can resume with `?after=SEQ`. The stream
//! first replays durable events after that point, then follows live ones; a
//! subscriber that falls behind re-reads from storage instead of skipping.
//!
//! What one stream can make the server hold is bounded: the replay reads
//! [`REPLAY_PAGE`] events at a time and reads the next page only once the
//! client has taken the previous one (back-pressure through a queue of
//! [`STREAM_QUEUE`] events), and a client that takes nothing for two
//! `--ping-interval`s is dropped, as a stalled WebSocket is.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use commandpost_shared::incident::{Command, Event, IncidentState};
use commandpost_shared::{CommandOutcome, IncidentId, PeopleList, Presence, TimelinePage};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::http::{ApiError, ApiQuery, AppState, Caller};
use crate::sidecar::SidecarError;

/// Events read from storage at a time when a stream replays the backlog.
pub const REPLAY_PAGE: usize = 8;

/// Events queued for one stream's response body.
pub const STREAM_QUEUE: usize = 2;

/// How often a stream looks at the incident's presence; a change is sent at
/// most this often (changes in between are coalesced).
pub const PRESENCE_EVERY: Duration = Duration::from_secs(1);

/// Postmortem drafts rendered at once (each holds its incident's whole
/// event log while it renders).
static POSTMORTEM_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The commands reachable over HTTP, by path name (`POST
/// /api/incidents/{id}/commands/{name}`). `declare` is `POST
/// /api/incidents`; `tick` belongs to the server's timer.
pub const COMMAND_NAMES: &[&str] = &[
    "set_severity",
    "assign_role",
    "add_responder",
    "remove_responder",
    "offer_handoff",
    "accept_handoff",
    "decline_handoff",
    "cancel_handoff",
    "assume_role",
    "force_assign_role",
    "set_next_commander",
    "pin_status",
    "set_impact_start",
    "set_status",
    "reopen",
    "add_exit_criterion",
    "set_exit_criterion",
    "record_change",
    "mark_change_reverted",
    "waive_change",
    "post_note",
];

impl From<SidecarError> for ApiError {
    fn from(error: SidecarError) -> Self {
        match error {
            SidecarError::Refused(error) => {
                let status =
                    StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::FORBIDDEN);
                ApiError::new(status, error.code(), error.to_string())
                    .with_person(error.person)
                    .with_blocking(error.blocking)
            }
            SidecarError::NotFound(id) => ApiError::incident_not_found(&id.to_string()),
            SidecarError::Store(error) => error.into(),
            SidecarError::Contended(id) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "contended",
                format!("{id} is changing too fast on other servers; try again"),
            ),
            SidecarError::Corrupt(id, detail) => {
                tracing::error!(incident = %id, %detail, "corrupt event log");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt_events",
                    "the incident's event log is damaged",
                )
            }
        }
    }
}

/// `POST /api/incidents/{id}/commands/{name}`: the body is the command's
/// fields as a JSON object.
pub async fn run_command(
    State(state): State<AppState>,
    caller: Caller,
    Path((raw_id, name)): Path<(String, String)>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<CommandOutcome>, ApiError> {
    let id = state.known_incident(&caller.0, &raw_id).await?;
    state.command_limiter.check(&caller.0.jti)?;
    if !COMMAND_NAMES.contains(&name.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_command",
            format!("no command `{name}`; see /api/openapi.json for the list"),
        ));
    }
    let Json(mut body) = body.map_err(|rejection| {
        ApiError::new(rejection.status(), "invalid_body", rejection.body_text())
    })?;
    let Some(fields) = body.as_object_mut() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the request body must be a JSON object",
        ));
    };
    fields.insert("type".into(), serde_json::Value::String(name.clone()));
    let command: Command = serde_json::from_value(body).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("invalid `{name}` command: {error}"),
        )
    })?;
    let who = caller.0.caller();
    let run = || {
        state.sidecars.command(
            &id,
            &command,
            &who,
            caller.0.incident.as_ref(),
            &state.tokens,
        )
    };
    let events = match run().await {
        // In a cluster the person may have used another node only: look
        // in storage before refusing.
        Err(SidecarError::Refused(refusal))
            if refusal.kind == commandpost_shared::incident::ErrorKind::UnknownPerson
                && state.config.redis.is_some() =>
        {
            state.tokens.refresh(true).await?;
            run().await?
        }
        other => other?,
    };
    for event in &events {
        tracing::info!(incident = %id, seq = %event.seq, command = %name, "command applied");
    }
    let after = state.sidecars.state(&id).await?;
    Ok(Json(CommandOutcome {
        events,
        state: (*after).clone(),
    }))
}

#[derive(Deserialize)]
pub struct PeopleQuery {
    /// Keep people whose id or name contains this (case-insensitive).
    #[serde(default)]
    q: String,
}

/// `GET /api/people?q=`: who the server knows, for clients to pick from
/// wherever a command names a person (tokens that can write only).
pub async fn list_people(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PeopleQuery>,
) -> Result<Json<PeopleList>, ApiError> {
    if !caller.0.role.can_write() {
        return Err(crate::auth::AuthError::Forbidden(
            "viewers cannot list people: the list is for naming people in commands".into(),
        )
        .into());
    }
    if state.config.redis.is_some() {
        // Tokens first seen by other nodes of the cluster.
        state.tokens.refresh(false).await?;
    }
    let people = state
        .sidecars
        .people(&state.tokens, caller.0.incident.as_ref(), &query.q)
        .await?;
    Ok(Json(PeopleList { people }))
}

/// `GET /api/incidents/{id}/state`.
pub async fn get_state(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<Json<Arc<IncidentState>>, ApiError> {
    let id = state.known_incident(&caller.0, &raw_id).await?;
    Ok(Json(state.sidecars.state(&id).await?))
}

#[derive(Deserialize)]
pub struct TimelineQuery {
    /// Only events with a larger sequence number.
    #[serde(default)]
    after: u64,
    /// At most this many (1 to 1000, default 100).
    limit: Option<usize>,
}

/// `GET /api/incidents/{id}/timeline?after=&limit=`: events oldest first.
pub async fn get_timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> Result<Json<TimelinePage>, ApiError> {
    let id = state.known_incident(&caller.0, &raw_id).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let mut events = state
        .sidecars
        .events_after(&id, query.after, limit + 1)
        .await?;
    let more = events.len() > limit;
    events.truncate(limit);
    let next_after = if more {
        events.last().map(|event| event.seq.0)
    } else {
        None
    };
    Ok(Json(TimelinePage { events, next_after }))
}

/// `GET /api/incidents/{id}/roles/history`.
pub async fn get_role_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = state.known_incident(&caller.0, &raw_id).await?;
    let current = state.sidecars.state(&id).await?;
    Ok(Json(
        serde_json::to_value(&current.role_history).expect("role history serialises"),
    ))
}

#[derive(Deserialize)]
pub struct BriefingQuery {
    #[serde(default)]
    notes: String,
}

/// `GET /api/incidents/{id}/briefing`: the ICS 201 briefing an offer would
/// carry now, for the offer form to show before sending.
pub async fn get_briefing(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    ApiQuery(query): ApiQuery<BriefingQuery>,
) -> Result<Json<commandpost_shared::incident::Briefing>, ApiError> {
    let id = state.known_incident(&caller.0, &raw_id).await?;
    let current = state.sidecars.state(&id).await?;
    Ok(Json(commandpost_shared::machine::briefing(
        &current,
        &query.notes,
    )))
}

/// `GET /api/incidents/{id}/postmortem.md`: the postmortem draft.
pub async fn get_postmortem(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    let id = state.known_incident(&caller.0, &raw_id).await?;
    // The draft needs the whole event log in memory; a few at a time keeps
    // a crowd of requests from holding many logs at once.
    let _slot = POSTMORTEM_SLOTS.acquire().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
    })?;
    let current = state.sidecars.state(&id).await?;
    let events = state.sidecars.events_after(&id, 0, usize::MAX).await?;
    let body = state.rooms.body_text(&id).await?;
    let markdown = crate::postmortem::render(&id, &current, &events, &body);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        markdown,
    ))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<u64>,
    token: Option<String>,
}

/// `GET /api/incidents/{id}/events`: Server-Sent Events, resumable.
pub async fn stream_events(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // EventSource cannot set headers: the token may come as ?token=.
    let claims = state.authenticate(&headers, query.token)?;
    let id = state.known_incident(&claims, &raw_id).await?;
    let resume_from = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let mut last = resume_from.or(query.after).unwrap_or(0);
    // Subscribe before reading the backlog, so nothing falls in between.
    let mut live = state.sidecars.subscribe(&id).await?;
    let sidecars = state.sidecars.clone();
    let shutdown = state.shutdown.clone();
    let permit = state.connection_limits.acquire(&claims)?;
    let revocations = state.revocations.clone();
    let mut revoked = revocations.subscribe();
    let jti = claims.jti.clone();
    let rooms = state.rooms.clone();
    tracing::info!(incident = %id, user = %claims.sub, after = last, "event stream opened");
    // A task follows the incident and feeds the response; it ends when the
    // client goes away (the send fails) or the server shuts down.
    let (sender, receiver) = tokio::sync::mpsc::channel::<SseEvent>(STREAM_QUEUE);
    // A client that takes nothing for this long is dropped; it reconnects
    // and resumes with `Last-Event-ID` when it reads again.
    let stalled_after = state.config.ping_interval * 2;
    let sender = Feed {
        sender,
        stalled_after,
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut backlog = true;
        // Presence: sent when the stream opens, then whenever it changed,
        // looked at once per PRESENCE_EVERY (so at most one a second).
        let mut presence_sent: Option<Presence> = None;
        let mut presence_check = tokio::time::interval(PRESENCE_EVERY);
        presence_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if backlog {
                match replay(&sidecars, &id, &mut last, &sender).await {
                    Ok(()) => backlog = false,
                    Err(StreamEnd::Stalled) => {
                        tracing::warn!(incident = %id, after = ?stalled_after, "event stream dropped: the client stopped reading");
                        return;
                    }
                    Err(StreamEnd::Gone) => return,
                    Err(StreamEnd::Failed(error)) => {
                        tracing::error!(incident = %id, %error, "cannot read events for a stream");
                        return;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sender.sender.closed() => return,
                _ = presence_check.tick() => {
                    let now = rooms.presence(&id);
                    if presence_sent != Some(now) {
                        presence_sent = Some(now);
                        match sender.deliver(presence_sse(now)).await {
                            Ok(()) => {}
                            Err(StreamEnd::Stalled) => {
                                tracing::warn!(incident = %id, after = ?stalled_after, "event stream dropped: the client stopped reading");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                }
                revocation = revoked.recv() => {
                    let hit = match revocation {
                        Ok(revoked_id) => revoked_id == jti,
                        Err(_) => revocations.is_revoked(&jti),
                    };
                    if hit {
                        tracing::info!(incident = %id, "event stream closed: access token revoked");
                        return;
                    }
                }
                received = live.recv() => match received {
                    Ok(event) if event.seq.0 > last => {
                        last = event.seq.0;
                        match sender.deliver(to_sse(&event)).await {
                            Ok(()) => {}
                            Err(StreamEnd::Stalled) => {
                                tracing::warn!(incident = %id, after = ?stalled_after, "event stream dropped: the client stopped reading");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                    Ok(_) => {}
                    // Fell behind: read what was missed from storage.
                    Err(RecvError::Lagged(_)) => backlog = true,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Why a stream's feeding task stops.
enum StreamEnd {
    /// The client went away.
    Gone,
    /// The client took nothing for two ping intervals.
    Stalled,
    /// Storage failed.
    Failed(SidecarError),
}

/// Sends the stored events after `last` a page at a time, advancing `last`;
/// the next page is read only once the queue took the previous one.
async fn replay(
    sidecars: &crate::sidecar::Sidecars,
    id: &IncidentId,
    last: &mut u64,
    sender: &Feed,
) -> Result<(), StreamEnd> {
    loop {
        let page = sidecars
            .events_after(id, *last, REPLAY_PAGE)
            .await
            .map_err(StreamEnd::Failed)?;
        if page.is_empty() {
            return Ok(());
        }
        for event in page {
            *last = event.seq.0;
            sender.deliver(to_sse(&event)).await?;
        }
    }
}

/// The queue feeding one stream's response body.
struct Feed {
    sender: tokio::sync::mpsc::Sender<SseEvent>,
    /// How long to wait for room before giving the client up.
    stalled_after: Duration,
}

impl Feed {
    /// Queues one event for the client, waiting at most `stalled_after`
    /// for room.
    async fn deliver(&self, event: SseEvent) -> Result<(), StreamEnd> {
        match tokio::time::timeout(self.stalled_after, self.sender.send(event)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StreamEnd::Gone),
            Err(_) => Err(StreamEnd::Stalled),
        }
    }
}

/// A `presence` message: the document's connection counts, as
/// `GET /api/incidents/{id}` reports them. Named, and without an SSE id, so
/// `EventSource.onmessage` and `Last-Event-ID` see only incident events.
fn presence_sse(presence: Presence) -> SseEvent {
    SseEvent::default()
        .event("presence")
        .json_data(presence)
        .expect("presence serialises")
}

fn to_sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.seq.0.to_string())
        .json_data(event)
        .expect("events serialise")
}
