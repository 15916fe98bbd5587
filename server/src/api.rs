//! The HTTP API under `/api/` and `/healthz`: the router, built from one
//! list of routes, the incident and share-link handlers, and the request
//! middleware (body limits, logging). What handlers share (state, errors,
//! the caller) is in `http`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use chrono::Utc;
use commandpost_shared::{
    AccessRole, CreateIncident, Incident, IncidentId, ShareLink, ShareRequest, TokenClaims, UserId,
};

use crate::auth::{AuthError, check_incident_scope};
use crate::http::{ApiError, AppState, Caller, bearer_token, json_object};
use crate::sidecar_api;
use crate::store::{IncidentRecord, StoreError};

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
/// - a token that can write: `/api/people` (who it can name in commands:
///   people of the incidents in its scope and every token subject);
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
        ("/api/people", get(sidecar_api::list_people)),
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
            post(sidecar_api::run_command),
        ),
        ("/api/incidents/{id}/state", get(sidecar_api::get_state)),
        (
            "/api/incidents/{id}/timeline",
            get(sidecar_api::get_timeline),
        ),
        (
            "/api/incidents/{id}/roles/history",
            get(sidecar_api::get_role_history),
        ),
        (
            "/api/incidents/{id}/briefing",
            get(sidecar_api::get_briefing),
        ),
        (
            "/api/incidents/{id}/events",
            get(sidecar_api::stream_events),
        ),
        (
            "/api/incidents/{id}/postmortem.md",
            get(sidecar_api::get_postmortem),
        ),
        ("/ws/{id}", get(crate::ws::upgrade)),
    ]
}

/// The paths of [`routes`], for tests that must cover every route.
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the storage engine answers (PostgreSQL: a `SELECT 1` within
/// 2 s), and storage takes a write and flushes it. 503 otherwise (or when
/// the flush takes longer than 5 s), so a load balancer stops sending users
/// to a node that could not save their work.
async fn readyz(State(state): State<AppState>) -> Response {
    // The database first, directly: a write queued behind a group that
    // waits for an unreachable database would only time out.
    let store = state.store.clone();
    let reachable = tokio::task::spawn_blocking(move || store.check())
        .await
        .unwrap_or_else(|_| Err(StoreError::WriterGone));
    if let Err(error) = reachable {
        tracing::error!(%error, "not ready: storage is unreachable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: storage is unreachable: {error}"),
        )
            .into_response();
    }
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
    let id = state.known_incident(&caller.0, &raw_id).await?;
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
    let records = state.store.read(|store| store.list_incidents()).await?;
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
        .read({
            let id = id.clone();
            move |store| store.get_incident(&id)
        })
        .await?
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
