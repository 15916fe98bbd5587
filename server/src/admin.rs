//! The operators' HTTP endpoints: backups, the quarantine, metrics, the
//! token registry and revocation. Each is a thin adapter over the storage
//! and auth modules; every one but `/metrics` needs an admin token that
//! covers every incident ([`Caller::require_server_admin`]).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;

use crate::http::{ApiError, ApiQuery, AppState, Caller, json_object};
use crate::quarantine::QuarantineEntry;

/// `GET /metrics`.
pub async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::METRICS.render(),
    )
}

/// `GET /api/admin/backup` (admin): a consistent backup of the database as
/// one gzip file (see the module docs).
pub async fn backup(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require_server_admin("download backups")?;
    let started = std::time::Instant::now();
    let bytes = crate::backup::export(&state.store).await?;
    tracing::info!(
        bytes = bytes.len(),
        by = %caller.0.sub,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backup taken"
    );
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/gzip"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"commandpost-backup.gz\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Include each entry's original bytes (hex).
    #[serde(default)]
    bytes: bool,
}

/// `GET /api/admin/quarantine` (admin): every quarantined record, oldest
/// first, without the original bytes unless `?bytes=true`.
pub async fn quarantine(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<QuarantineEntry>>, ApiError> {
    caller.require_server_admin("read the quarantine")?;
    let store = state.store.clone();
    let records = tokio::task::spawn_blocking(move || store.quarantined())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "reading the quarantine failed",
            )
        })??;
    Ok(Json(
        records
            .into_iter()
            .map(|(key, mut record)| {
                if !query.bytes {
                    record.bytes = None;
                }
                QuarantineEntry {
                    id: crate::quarantine::hex(&key),
                    record,
                }
            })
            .collect(),
    ))
}

/// `POST /api/tokens/{jti}/revoke` (admin): revokes a token by its id. It
/// is refused from then on, and open connections using it close within a
/// second (WebSockets with close code 4401).
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(jti): Path<String>,
) -> Result<Json<crate::store::Revocation>, ApiError> {
    caller.require_server_admin("revoke tokens")?;
    let jti = jti.trim().to_owned();
    if jti.is_empty() || jti.len() > 128 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_token_id",
            "a token id is 1 to 128 characters (the `jti` claim; `commandpost token` prints it)",
        ));
    }
    Ok(Json(revoke(&state, &caller, jti).await?))
}

/// Revokes `jti` durably and closes the connections of it and of every
/// token minted with it.
async fn revoke(
    state: &AppState,
    caller: &Caller,
    jti: String,
) -> Result<crate::store::Revocation, ApiError> {
    let revocation = crate::store::Revocation {
        jti: jti.clone(),
        revoked_at: Utc::now(),
        revoked_by: caller.0.sub.clone(),
    };
    state.store.revoke(&revocation).await?;
    let descendants = state.tokens.descendants(&jti).await?;
    tracing::info!(jti = %revocation.jti, by = %revocation.revoked_by, descendants = descendants.len(), "token revoked");
    state.revocations.add(jti, descendants);
    Ok(revocation)
}

#[derive(serde::Deserialize)]
pub struct TokensQuery {
    /// Only tokens minted by this subject.
    minted_by: Option<String>,
}

/// `GET /api/admin/tokens?minted_by=SUB` (admin of every incident): every
/// token the server minted or has seen in use, newest first.
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TokensQuery>,
) -> Result<Json<Vec<commandpost_shared::IssuedToken>>, ApiError> {
    caller.require_server_admin("list tokens")?;
    let mut tokens = state.tokens.list().await?;
    if let Some(minted_by) = &query.minted_by {
        tokens.retain(|token| {
            token
                .minted_by
                .as_ref()
                .is_some_and(|by| &by.sub == minted_by)
        });
    }
    Ok(Json(tokens))
}

/// `POST /api/admin/tokens/revoke` `{"minted_by": SUB}` (admin of every
/// incident): revokes every recorded token that `SUB` minted (share links),
/// and with them everything minted from those. Answers the revocations.
pub async fn revoke_minted_by(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<Vec<crate::store::Revocation>>, ApiError> {
    caller.require_server_admin("revoke tokens")?;
    let request: commandpost_shared::RevokeMintedBy = json_object(body)?;
    let minter = request.minted_by.trim();
    if minter.is_empty() || minter.chars().count() > commandpost_shared::limits::USER_ID_CHARS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "`minted_by` must be a user id of 1 to 100 characters",
        ));
    }
    let minted: Vec<String> = state
        .tokens
        .list()
        .await?
        .into_iter()
        .filter(|token| token.minted_by.as_ref().is_some_and(|by| by.sub == minter))
        .filter(|token| !state.revocations.is_revoked(&token.jti))
        .map(|token| token.jti)
        .collect();
    let mut revoked = Vec::with_capacity(minted.len());
    for jti in minted {
        revoked.push(revoke(&state, &caller, jti).await?);
    }
    tracing::info!(minted_by = %minter, revoked = revoked.len(), "revoked the tokens minted by a subject");
    Ok(Json(revoked))
}

/// `GET /api/tokens/revoked` (admin).
pub async fn list_revoked(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<crate::store::Revocation>>, ApiError> {
    caller.require_server_admin("list revoked tokens")?;
    Ok(Json(state.store.read(|store| store.revocations()).await?))
}
