//! What every HTTP and WebSocket handler shares: the application state
//! ([`AppState`]), the one error type ([`ApiError`]: a JSON error body with a
//! stable code, logged once), the authenticated [`Caller`] extractor, query
//! strings with JSON errors ([`ApiQuery`]) and JSON object bodies
//! ([`json_object`]). The handlers' modules (`api`, `sidecar_api`, `admin`,
//! `ws`, `web`) import from here; only `api` assembles the router.
//!
//! Errors answer `{"error": {"code", "message"}}` with a 4xx status for client
//! mistakes and 5xx only for server faults; each is logged once, with detail
//! that the client does not see.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commandpost_shared::{AccessRole, ErrorBody, ErrorDetail, IncidentId, TokenClaims};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, TokenKeys, check_incident_scope};
use crate::config::ServerConfig;
use crate::rooms::Rooms;
use crate::sidecar::Sidecars;
use crate::store::{Store, StoreError};

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
    pub async fn known_incident(
        &self,
        claims: &TokenClaims,
        raw: &str,
    ) -> Result<IncidentId, ApiError> {
        let id: IncidentId = raw.parse().map_err(|_| ApiError::incident_not_found(raw))?;
        check_incident_scope(claims, &id)?;
        let exists = self
            .store
            .read({
                let id = id.clone();
                move |store| Ok(store.get_incident(&id)?.is_some())
            })
            .await?;
        if !exists {
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

/// An API error: status, stable code, safe message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Extra fields of the body: the unknown person, what blocks a move.
    person: Option<commandpost_shared::UserId>,
    blocking: Option<commandpost_shared::incident::Blocking>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            person: None,
            blocking: None,
        }
    }

    /// Adds the id of the unknown person a command named.
    pub fn with_person(mut self, person: Option<commandpost_shared::UserId>) -> Self {
        self.person = person;
        self
    }

    /// Adds what blocks a lifecycle move.
    pub fn with_blocking(
        mut self,
        blocking: Option<commandpost_shared::incident::Blocking>,
    ) -> Self {
        self.blocking = blocking;
        self
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
                person: self.person,
                blocking: self.blocking,
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

/// Reads a JSON object body into `T`. serde's derived structs also accept a
/// JSON array of field values; an API body must be an object.
pub fn json_object<T: serde::de::DeserializeOwned>(
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
