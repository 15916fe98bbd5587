//! Access tokens: HS256 JWTs carrying [`TokenClaims`], and the server secret.
//!
//! The secret comes from `COMMANDPOST_SECRET` when set, otherwise from
//! `<data>/secret`, generated on first use and readable by its owner only.
//! Tokens are never logged: only their id (`jti`) and subject are.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use commandpost_shared::{AccessRole, IncidentId, TokenClaims};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "missing access token: send `Authorization: Bearer TOKEN` (or `?token=` on WebSockets)"
    )]
    Missing,
    #[error("the access token has expired: ask for a new one")]
    Expired,
    #[error("the access token has been revoked: ask for a new one")]
    Revoked,
    #[error("the access token is not valid for this server")]
    Invalid,
    #[error("this token is limited to {0}")]
    WrongIncident(IncidentId),
    #[error("{0}")]
    Forbidden(String),
}

/// Signs and verifies tokens with the server secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Name of the secret file inside the data directory.
pub const SECRET_FILE: &str = "secret";

impl TokenKeys {
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Loads the secret: `env_secret` if given, else `<data>/secret`, which
    /// is created (0600) when missing.
    pub fn load(data_dir: &Path, env_secret: Option<&str>) -> anyhow::Result<Self> {
        if let Some(secret) = env_secret {
            anyhow::ensure!(
                secret.len() >= 32,
                "COMMANDPOST_SECRET must be at least 32 characters long"
            );
            return Ok(Self::from_secret(secret.as_bytes()));
        }
        fs::create_dir_all(data_dir).map_err(|error| {
            anyhow::anyhow!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            )
        })?;
        let path = data_dir.join(SECRET_FILE);
        match fs::read(&path) {
            Ok(secret) => {
                anyhow::ensure!(
                    secret.len() >= 32,
                    "{} is shorter than 32 bytes",
                    path.display()
                );
                Ok(Self::from_secret(&secret))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options.open(&path).map_err(|error| {
                    anyhow::anyhow!("cannot create {}: {error}", path.display())
                })?;
                file.write_all(hex.as_bytes())?;
                file.sync_all()?;
                Ok(Self::from_secret(hex.as_bytes()))
            }
            Err(error) => Err(anyhow::anyhow!("cannot read {}: {error}", path.display())),
        }
    }

    /// Mints a token.
    pub fn mint(
        &self,
        user_id: &str,
        name: &str,
        role: AccessRole,
        incident: Option<IncidentId>,
        ttl: Duration,
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = TokenClaims {
            sub: user_id.to_owned(),
            name: name.to_owned(),
            role,
            incident,
            exp: now + ttl.as_secs() as i64,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use this to build expired tokens).
    pub fn sign(&self, claims: &TokenClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Verifies signature, algorithm and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Result<TokenClaims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<TokenClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        // The server's own timer acts as this user; nobody else may.
        if claims.sub == commandpost_shared::incident::SYSTEM_USER_ID {
            return Err(AuthError::Invalid);
        }
        Ok(claims)
    }
}

/// Checks that `claims` may access `incident` at all (any role).
pub fn check_incident_scope(claims: &TokenClaims, incident: &IncidentId) -> Result<(), AuthError> {
    match &claims.incident {
        Some(scope) if scope != incident => Err(AuthError::WrongIncident(scope.clone())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_forgery_and_expiry() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let token = keys.mint(
            "u1",
            "Ada",
            AccessRole::Responder,
            None,
            Duration::from_secs(60),
        );
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.role, AccessRole::Responder);

        let system = keys.mint(
            "system",
            "Impostor",
            AccessRole::Admin,
            None,
            Duration::from_secs(60),
        );
        assert_eq!(
            keys.verify(&system),
            Err(AuthError::Invalid),
            "the timer's id is reserved"
        );

        let other = TokenKeys::from_secret(b"another-secret-another-secret-xx");
        assert_eq!(other.verify(&token), Err(AuthError::Invalid));

        let mut expired = claims.clone();
        expired.exp = chrono::Utc::now().timestamp() - 5;
        assert_eq!(keys.verify(&keys.sign(&expired)), Err(AuthError::Expired));
        assert_eq!(keys.verify("not-a-jwt"), Err(AuthError::Invalid));
    }

    #[test]
    fn scope_limits_tokens_to_one_incident() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let token = keys.mint(
            "u1",
            "Ada",
            AccessRole::Viewer,
            Some(IncidentId::new(2)),
            Duration::from_secs(60),
        );
        let claims = keys.verify(&token).unwrap();
        assert!(check_incident_scope(&claims, &IncidentId::new(2)).is_ok());
        assert_eq!(
            check_incident_scope(&claims, &IncidentId::new(3)),
            Err(AuthError::WrongIncident(IncidentId::new(2)))
        );
    }
}

/// Revoked token ids: loaded from storage at start, added to by the admin
/// API, and announced live so open connections using a revoked token close.
#[derive(Clone)]
pub struct Revocations {
    ids: Arc<parking_lot::RwLock<std::collections::HashSet<String>>>,
    live: tokio::sync::broadcast::Sender<String>,
}

impl Revocations {
    pub fn new(ids: impl IntoIterator<Item = String>) -> Self {
        Self {
            ids: Arc::new(parking_lot::RwLock::new(ids.into_iter().collect())),
            live: tokio::sync::broadcast::channel(256).0,
        }
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.ids.read().contains(jti)
    }

    /// Marks a token revoked (after it was stored) and tells live
    /// connections.
    pub fn add(&self, jti: String) {
        self.ids.write().insert(jti.clone());
        let _ = self.live.send(jti);
    }

    /// Revocations from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.live.subscribe()
    }
}
