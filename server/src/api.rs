//! The HTTP API under `/api/`, `/healthz`, and the one error type every
//! handler returns.
//!
//! Errors answer `{"error": {"code", "message"}}` with a 4xx status for client
//! mistakes and 5xx only for server faults; each is logged once, with detail
//! that the client does not see.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use chrono::Utc;
use commandpost_shared::{
    AccessRole, CreateIncident, ErrorBody, ErrorDetail, Incident, IncidentId, ShareLink,
    ShareRequest, TokenClaims, UserId,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, TokenKeys, check_incident_scope};
use crate::commands;
use crate::config::ServerConfig;
use crate::rooms::Rooms;
use crate::sidecar::Sidecars;
use crate::store::{IncidentRecord, Store, StoreError};

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
    /// Every token minted here or seen in use.
    pub tokens: crate::auth::TokenRegistry,
    /// Request bodies still arriving, per token.
    pub body_reads: Arc<crate::limits::BodyReads>,
}

/// Builds the router from [`routes`].
pub fn router(state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, handlers)| {
            router.route(path, handlers)
        })
        .fallback(crate::web::app)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::limits::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::from_fn(crate::security::headers))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Every route of the server: its path and its handlers. The router is
/// built from this list alone, and the access-matrix test
/// (`tests/e2e/access_matrix.rs`) refuses to pass until each path in it has
/// a row saying who may call it, so a new route cannot skip the check.
///
/// Who may call what:
/// - anyone: `/healthz`, `/readyz`, `/metrics`, `/api/openapi.json`, the
///   app and its assets;
/// - any valid token: `/api/me`, the incident list (filtered to the
///   token's scope);
/// - a token covering the incident: its reads, event stream and document
///   socket (viewers read-only); commands need a token that can write,
///   and the sidecar's rules decide the rest;
/// - an admin token covering every incident: backups, the quarantine, the
///   token registry and revocation (an admin token limited to one incident
///   is an admin inside that incident only).
pub fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/assets/{*path}", get(crate::web::asset)),
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(crate::admin::metrics)),
        ("/api/openapi.json", get(openapi)),
        ("/api/incidents", get(list_incidents).post(create_incident)),
        ("/api/incidents/{id}", get(get_incident)),
        ("/api/me", get(me)),
        ("/api/admin/quarantine", get(crate::admin::quarantine)),
        ("/api/admin/backup", get(crate::admin::backup)),
        ("/api/admin/tokens", get(crate::admin::list_tokens)),
        (
            "/api/admin/tokens/revoke",
            post(crate::admin::revoke_minted_by),
        ),
        ("/api/tokens/revoked", get(crate::admin::list_revoked)),
        ("/api/tokens/{jti}/revoke", post(crate::admin::revoke_token)),
        ("/api/incidents/{id}/share", post(share)),
        (
            "/api/incidents/{id}/commands/{name}",
            post(commands::run_command),
        ),
        ("/api/incidents/{id}/state", get(commands::get_state)),
        ("/api/incidents/{id}/timeline", get(commands::get_timeline)),
        (
            "/api/incidents/{id}/roles/history",
            get(commands::get_role_history),
        ),
        ("/api/incidents/{id}/briefing", get(commands::get_briefing)),
        ("/api/incidents/{id}/events", get(commands::stream_events)),
        (
            "/api/incidents/{id}/postmortem.md",
            get(commands::get_postmortem),
        ),
        ("/ws/{id}", get(crate::ws::upgrade)),
    ]
}

/// The paths of [`routes`], for tests that must cover every route.
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
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
            AuthError::NotYetValid => (StatusCode::UNAUTHORIZED, "token_not_yet_valid"),
            AuthError::Revoked => (StatusCode::UNAUTHORIZED, "revoked_token"),
            AuthError::Invalid => (StatusCode::UNAUTHORIZED, "invalid_token"),
            AuthError::WrongIncident(_) | AuthError::Forbidden(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
        };
        Self::new(status, code, error.to_string())
    }
}

impl From<crate::limits::LimitError> for ApiError {
    fn from(error: crate::limits::LimitError) -> Self {
        let status = match error {
            crate::limits::LimitError::ServerFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::TOO_MANY_REQUESTS,
        };
        Self::new(status, error.code(), error.to_string())
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

    /// The incident a path names, if the token covers it and it exists:
    /// 404 for an id that is not `INC-<n>` or not on this server, 403 for
    /// one outside the token's scope.
    pub fn known_incident(&self, claims: &TokenClaims, raw: &str) -> Result<IncidentId, ApiError> {
        let id: IncidentId = raw.parse().map_err(|_| ApiError::incident_not_found(raw))?;
        check_incident_scope(claims, &id)?;
        if self.store.get_incident(&id)?.is_none() {
            return Err(ApiError::incident_not_found(raw));
        }
        Ok(id)
    }

    /// Verifies a token: signature, validity period, and neither it nor a
    /// token it was minted with revoked. A valid token the server has not
    /// seen before is recorded in the token registry.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, AuthError> {
        let claims = self.keys.verify(token)?;
        if self.revocations.refuses(&claims) {
            return Err(AuthError::Revoked);
        }
        self.tokens.note_use(&claims);
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

/// A query string parsed into `T`; a malformed one answers 400 with the
/// JSON error body (`invalid_query`) like every other API error, instead of
/// axum's plain-text rejection.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) =
            Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        rejection.body_text(),
                    )
                })?;
        Ok(Self(value))
    }
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
    /// Refuses anyone but an admin whose token covers every incident:
    /// server-wide endpoints (backups, the quarantine, the token registry,
    /// revocation) are out of reach of an admin token limited to one
    /// incident, which acts as an admin inside that incident only.
    pub fn require_server_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.0.role != AccessRole::Admin {
            return Err(AuthError::Forbidden(format!("only an admin token can {what}")).into());
        }
        if let Some(scope) = &self.0.incident {
            return Err(AuthError::Forbidden(format!(
                "this admin token is limited to {scope}; to {what}, use an admin token minted without --incident"
            ))
            .into());
        }
        Ok(())
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
    let title_chars = body.title.trim().chars().count();
    if title_chars == 0 || title_chars > commandpost_shared::limits::TITLE_CHARS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_title",
            format!(
                "title must be 1 to {} characters",
                commandpost_shared::limits::TITLE_CHARS
            ),
        ));
    }
    let (record, _events) = state
        .sidecars
        .declare_incident(body, &caller.0.caller())
        .await?;
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
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(
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
///
/// No link is broader than the token that mints it: the caller's token must
/// be able to write (a viewer token is refused even when its subject is the
/// commander), the link's role is at most the caller's, it is limited to
/// this incident (which the caller's token covers), and it expires no later
/// than the caller's token. The link's `lineage` names the caller's token,
/// so revoking that token revokes the link too.
async fn share(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<ShareLink>, ApiError> {
    let id = state.known_incident(&caller.0, &raw_id)?;
    let request: ShareRequest = json_object(body)?;
    if !caller.0.role.can_write() {
        return Err(AuthError::Forbidden(
            "a viewer token cannot create share links, even for the commander: sign in with a responder token"
                .into(),
        )
        .into());
    }
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
    if name.is_empty() || name.chars().count() > commandpost_shared::limits::NAME_CHARS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "name must be 1 to {} characters",
                commandpost_shared::limits::NAME_CHARS
            ),
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
    let now = Utc::now();
    let expires_at = now + chrono::Duration::hours(i64::from(hours));
    if expires_at.timestamp() > caller.0.exp {
        let left = (caller.0.exp - now.timestamp()).max(0);
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ttl_beyond_own_token",
            format!(
                "a link cannot outlive the token that creates it, which expires in {} h {} min; ask for at most {} hours",
                left / 3600,
                left % 3600 / 60,
                left / 3600
            ),
        ));
    }
    if caller.0.lineage.len() >= crate::auth::MAX_LINEAGE {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "lineage_too_deep",
            "this token descends from too many share links to create another; ask an admin",
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
    let mut claims = crate::auth::new_claims(&user, name, request.role, Some(id.clone()), ttl);
    claims.lineage = std::iter::once(caller.0.jti.clone())
        .chain(caller.0.lineage.iter().cloned())
        .collect();
    state
        .tokens
        .record_minted(
            &claims,
            commandpost_shared::TokenOrigin::ShareLink,
            Some(&caller.0),
        )
        .await?;
    let token = state.keys.sign(&claims);
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
        expires_at,
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

/// Reads a request's body completely before the handler runs: at most
/// [`crate::limits::MAX_BODY_BYTES`], within
/// [`crate::limits::BODY_READ_TIMEOUT`] (else 413 or 408), while holding
/// one of the sender's [`crate::limits::BODIES_PER_TOKEN`] slots (else 429).
/// So a client that trickles a body cannot hold requests open for long,
/// nor many at once. Requests without a body pass straight through.
async fn read_body_in_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(request).await;
    }
    // Key by the token when it verifies; everything else shares one key.
    let key = bearer_token(request.headers())
        .and_then(|token| state.keys.verify(&token).ok())
        .map_or_else(|| "unauthenticated".to_owned(), |claims| claims.jti);
    let _slot = match state.body_reads.acquire(&key) {
        Ok(slot) => slot,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, crate::limits::MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(crate::limits::BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) if !error.to_string().contains("length limit") => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the request body could not be read",
            )
            .into_response();
        }
        Ok(Err(_)) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_body",
                format!(
                    "the request body is larger than {} KiB",
                    crate::limits::MAX_BODY_BYTES / 1024
                ),
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    crate::limits::BODY_READ_TIMEOUT.as_secs()
                ),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
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
