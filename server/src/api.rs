//! The HTTP API under `/api/`, `/healthz`, and the one error type every
//! handler returns.
//!
//! Errors answer `{"error": {"code", "message"}}` with a 4xx status for client
//! mistakes and 5xx only for server faults; each is logged once, with detail
//! that the client does not see.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use commandpost_shared::incident::Command;
use commandpost_shared::{
    AccessRole, Actor, CreateIncident, ErrorBody, ErrorDetail, Incident, IncidentId, ShareLink,
    ShareRequest, TokenClaims, UserId,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, TokenKeys, check_incident_scope};
use crate::commands;
use crate::config::ServerConfig;
use crate::rooms::Rooms;
use crate::sidecar::{Sidecars, caller_of};
use crate::store::{IncidentRecord, InitialContent, Store, StoreError};
use crate::template;

/// Shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub rooms: Rooms,
    pub keys: TokenKeys,
    pub config: Arc<ServerConfig>,
    /// Cancelled when the server shuts down; connections close on it.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket connection tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The command sidecars of all incidents.
    pub sidecars: Sidecars,
    /// Revoked token ids.
    pub revocations: crate::auth::Revocations,
    /// Open connections, globally and per token.
    pub connection_limits: Arc<crate::limits::ConnectionLimits>,
    /// Commands per token.
    pub command_limiter: Arc<crate::limits::CommandLimiter>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/assets/{*path}", get(crate::web::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::handler))
        .route("/api/openapi.json", get(openapi))
        .route("/api/incidents", get(list_incidents).post(create_incident))
        .route("/api/incidents/{id}", get(get_incident))
        .route("/api/me", get(me))
        .route("/api/admin/quarantine", get(crate::quarantine::list))
        .route("/api/tokens/revoked", get(list_revoked))
        .route("/api/admin/backup", get(crate::backup::handler))
        .route("/api/tokens/{jti}/revoke", post(revoke_token))
        .route("/api/incidents/{id}/share", post(share))
        .route(
            "/api/incidents/{id}/commands/{name}",
            post(commands::run_command),
        )
        .route("/api/incidents/{id}/state", get(commands::get_state))
        .route("/api/incidents/{id}/timeline", get(commands::get_timeline))
        .route(
            "/api/incidents/{id}/roles/history",
            get(commands::get_role_history),
        )
        .route("/api/incidents/{id}/briefing", get(commands::get_briefing))
        .route("/api/incidents/{id}/events", get(commands::stream_events))
        .route(
            "/api/incidents/{id}/postmortem.md",
            get(commands::get_postmortem),
        )
        .route("/ws/{id}", get(crate::ws::upgrade))
        .fallback(crate::web::app)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::security::headers))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// An API error: status, stable code, safe message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn incident_not_found(raw_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "incident_not_found",
            format!("no incident `{raw_id}` on this server"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let (status, code) = match error {
            AuthError::Missing => (StatusCode::UNAUTHORIZED, "missing_token"),
            AuthError::Expired => (StatusCode::UNAUTHORIZED, "expired_token"),
            AuthError::Revoked => (StatusCode::UNAUTHORIZED, "revoked_token"),
            AuthError::Invalid => (StatusCode::UNAUTHORIZED, "invalid_token"),
            AuthError::WrongIncident(_) | AuthError::Forbidden(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
        };
        Self::new(status, code, error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "storage error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            "storage failed; nothing was changed",
        )
    }
}

impl AppState {
    /// Verifies the caller's token from `Authorization: Bearer`, or from a
    /// `?token=` query parameter for clients that cannot set headers
    /// (browser WebSockets and EventSource).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<String>,
    ) -> Result<TokenClaims, AuthError> {
        let token = bearer_token(headers)
            .or(query_token)
            .ok_or(AuthError::Missing)?;
        self.verify(&token)
    }

    /// Verifies a token: signature, expiry, and not revoked.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, AuthError> {
        let claims = self.keys.verify(token)?;
        if self.revocations.is_revoked(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }
}

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// An authenticated caller (from `Authorization: Bearer`).
pub struct Caller(pub TokenClaims);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(AuthError::Missing)?;
        Ok(Caller(state.verify(&token)?))
    }
}

impl Caller {
    fn actor(&self) -> Actor {
        Actor {
            id: UserId(self.0.sub.clone()),
            name: self.0.name.clone(),
        }
    }
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: storage takes a write and flushes it. 503 otherwise (or
/// when the flush takes longer than 5 s), so a load balancer stops sending
/// users to a node that could not save their work.
async fn readyz(State(state): State<AppState>) -> Response {
    let probe = async {
        state
            .store
            .barrier()?
            .await
            .map_err(|_| StoreError::WriterGone)?
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
        Ok(Ok(())) => "ready".into_response(),
        Ok(Err(error)) => {
            tracing::error!(%error, "not ready: storage is not writable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: storage is not writable: {error}"),
            )
                .into_response()
        }
        Err(_) => {
            tracing::error!("not ready: a storage flush took longer than 5 s");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: storage flush timed out",
            )
                .into_response()
        }
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not answer that method",
    )
}

async fn to_api(state: &AppState, record: IncidentRecord) -> Result<Incident, ApiError> {
    let sidecar = state.sidecars.state(&record.id).await?;
    Ok(Incident {
        presence: state.rooms.presence(&record.id),
        id: record.id,
        title: record.title,
        created_at: record.created_at,
        created_by: record.created_by,
        state: (*sidecar).clone(),
    })
}

async fn create_incident(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, HeaderMap, Json<Incident>), ApiError> {
    if !caller.0.role.can_write() {
        return Err(AuthError::Forbidden("viewers cannot declare incidents".into()).into());
    }
    if let Some(scope) = &caller.0.incident {
        return Err(AuthError::Forbidden(format!(
            "this token is limited to {scope} and cannot declare incidents"
        ))
        .into());
    }
    let body: CreateIncident = json_object(body)?;
    let title = body.title.trim().to_owned();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_title",
            "title must be 1 to 200 characters",
        ));
    }
    let actor = caller.actor();
    let now = Utc::now();
    let declare = Command::Declare {
        title: title.clone(),
        severity: body.severity,
        criteria: body.criteria,
        summary: body.summary.clone(),
    };
    let events = state.sidecars.declare(&declare, &caller_of(&caller.0))?;
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .map(|event| serde_json::to_vec(event).expect("events serialise"))
        .collect();
    // The template names the incident, but the id is only known inside the
    // store's transaction; the store hands back the next id for rendering.
    let (record_title, declarer) = (title.clone(), actor.name.clone());
    let record = state
        .store
        .create_incident(title, actor, now, move |id| InitialContent {
            doc: template::initial_update(&template::render(id, &record_title, &declarer, now)),
            events: encoded.clone(),
        })
        .await?;
    state.sidecars.created(&record.id, &events);
    tracing::info!(incident = %record.id, "incident declared");
    let mut headers = HeaderMap::new();
    if let Ok(location) = format!("/api/incidents/{}", record.id).parse() {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        Json(to_api(&state, record).await?),
    ))
}

/// Reads a JSON object body into `T`. serde's derived structs also accept a
/// JSON array of field values; an API body must be an object.
fn json_object<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<T, ApiError> {
    let Json(value) = body.map_err(|rejection| {
        ApiError::new(rejection.status(), "invalid_body", rejection.body_text())
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("invalid request body: {error}"),
        )
    })
}

/// `GET /api/me`: the caller's token claims (who the app is signed in as).
async fn me(caller: Caller) -> Json<TokenClaims> {
    Json(caller.0)
}

/// `POST /api/incidents/{id}/share`: the incident's commander, or an admin,
/// mints a responder or viewer link limited to this incident.
async fn share(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<ShareLink>, ApiError> {
    let id: IncidentId = raw_id
        .parse()
        .map_err(|_| ApiError::incident_not_found(&raw_id))?;
    check_incident_scope(&caller.0, &id)?;
    if state.store.get_incident(&id)?.is_none() {
        return Err(ApiError::incident_not_found(&raw_id));
    }
    let request: ShareRequest = json_object(body)?;
    let incident_state = state.sidecars.state(&id).await?;
    let is_commander = incident_state.commander().id.0 == caller.0.sub;
    if !(is_commander || caller.0.role == AccessRole::Admin) {
        return Err(AuthError::Forbidden(
            "only the incident commander or an admin may create share links".into(),
        )
        .into());
    }
    if request.role == AccessRole::Admin {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "share links are for responders or viewers",
        ));
    }
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "name must be 1 to 100 characters",
        ));
    }
    let hours = request.ttl_hours.unwrap_or(24);
    if !(1..=168).contains(&hours) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "ttl_hours must be 1 to 168",
        ));
    }
    // A user id of its own, so two links for "Sam" are two people.
    let slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '-' })
        .collect();
    let user = format!(
        "{}-{}",
        slug.trim_matches('-'),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let ttl = std::time::Duration::from_secs(u64::from(hours) * 3600);
    let token = state
        .keys
        .mint(&user, name, request.role, Some(id.clone()), ttl);
    let base = match &state.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    tracing::info!(incident = %id, by = %caller.0.sub, role = %request.role, user = %user, "share link created");
    Ok(Json(ShareLink {
        url: format!("{base}/?token={token}"),
        token,
        user: UserId(user),
        expires_at: Utc::now() + chrono::Duration::hours(i64::from(hours)),
    }))
}

async fn list_incidents(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Incident>>, ApiError> {
    let records = tokio::task::spawn_blocking({
        let store = state.store.clone();
        move || store.list_incidents()
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "listing failed",
        )
    })??;
    let mut incidents = Vec::new();
    for record in records {
        if check_incident_scope(&caller.0, &record.id).is_ok() {
            incidents.push(to_api(&state, record).await?);
        }
    }
    Ok(Json(incidents))
}

async fn get_incident(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<Json<Incident>, ApiError> {
    let id: IncidentId = raw_id
        .parse()
        .map_err(|_| ApiError::incident_not_found(&raw_id))?;
    check_incident_scope(&caller.0, &id)?;
    let record = state
        .store
        .get_incident(&id)?
        .ok_or_else(|| ApiError::incident_not_found(&raw_id))?;
    Ok(Json(to_api(&state, record).await?))
}

/// One log line per request, with the path but never the query string
/// (WebSocket clients carry their token there).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "http");
    response
}

pub(crate) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.0.role != AccessRole::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an admin token can manage tokens",
        ));
    }
    Ok(())
}

/// `POST /api/tokens/{jti}/revoke` (admin): revokes a token by its id. It
/// is refused from then on, and open connections using it close within a
/// second (WebSockets with close code 4401).
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(jti): Path<String>,
) -> Result<Json<crate::store::Revocation>, ApiError> {
    require_admin(&caller)?;
    let jti = jti.trim().to_owned();
    if jti.is_empty() || jti.len() > 128 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_token_id",
            "a token id is 1 to 128 characters (the `jti` claim; `commandpost token` prints it)",
        ));
    }
    let revocation = crate::store::Revocation {
        jti: jti.clone(),
        revoked_at: Utc::now(),
        revoked_by: caller.0.sub.clone(),
    };
    state.store.revoke(&revocation).await?;
    state.revocations.add(jti);
    tracing::info!(jti = %revocation.jti, by = %revocation.revoked_by, "token revoked");
    Ok(Json(revocation))
}

/// `GET /api/tokens/revoked` (admin).
async fn list_revoked(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<crate::store::Revocation>>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(state.store.revocations()?))
}
