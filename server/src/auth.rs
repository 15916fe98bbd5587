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

use commandpost_shared::{AccessRole, Actor, IncidentId, TokenClaims, UserId};
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
    #[error(
        "the access token is not valid yet (its `nbf` or `iat` is in the future): check the clock of whoever minted it"
    )]
    NotYetValid,
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

    /// Loads the secret: `secret` if given, else the one in `secret_file`,
    /// else `<data>/secret` (created when missing) when there is a data
    /// directory. A PostgreSQL store has none: without `secret` or
    /// `secret_file` this fails, saying how to set one.
    pub fn load_configured(
        data_dir: Option<&Path>,
        secret: Option<&str>,
        secret_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        if secret.is_some() {
            return Self::load(Path::new(""), secret);
        }
        if let Some(path) = secret_file {
            let text = fs::read_to_string(path).map_err(|error| {
                anyhow::anyhow!(
                    "cannot read the token secret file {} (COMMANDPOST_SECRET_FILE): {error}",
                    path.display()
                )
            })?;
            let secret = text.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(
                secret.len() >= 32,
                "the token secret in {} (COMMANDPOST_SECRET_FILE) must be at least 32 characters long",
                path.display()
            );
            return Ok(Self::from_secret(secret.as_bytes()));
        }
        match data_dir {
            Some(dir) => Self::load(dir, None),
            None => anyhow::bail!(
                "a PostgreSQL store has no data directory to keep the token signing secret in: \
                 set COMMANDPOST_SECRET to a secret of at least 32 characters (for instance the \
                 output of `openssl rand -hex 32`), or COMMANDPOST_SECRET_FILE to a file holding \
                 one; every server on the same database needs the same secret"
            ),
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
        self.sign(&new_claims(user_id, name, role, incident, ttl))
    }

    /// Signs arbitrary claims (tests use this to build expired tokens).
    pub fn sign(&self, claims: &TokenClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Verifies signature, algorithm and expiry (no leeway), and that the
    /// token is already valid: `nbf` and `iat` may be at most
    /// [`CLOCK_SKEW`] in the future (the minter's clock may run ahead).
    pub fn verify(&self, token: &str) -> Result<TokenClaims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // `nbf` is checked below, with the skew allowance that `exp` lacks.
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<TokenClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let latest = chrono::Utc::now().timestamp() + CLOCK_SKEW.as_secs() as i64;
        if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(AuthError::NotYetValid);
        }
        // The server's own timer acts as this user; nobody else may, in any
        // spelling.
        if commandpost_shared::limits::is_reserved_user_id(&claims.sub) {
            return Err(AuthError::Invalid);
        }
        if claims.lineage.len() > MAX_LINEAGE {
            return Err(AuthError::Invalid);
        }
        Ok(claims)
    }
}

/// How far in the future a token's `iat` or `nbf` may lie: clocks of the
/// machines that mint tokens drift a little.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How many generations of minted-through-the-API tokens a token may
/// descend from (a share link made by a share-link holder who became
/// commander, and so on). Bounds the claims every request carries.
pub const MAX_LINEAGE: usize = 8;

/// Fresh claims: issued now, expiring after `ttl`, with a new id.
pub fn new_claims(
    user_id: &str,
    name: &str,
    role: AccessRole,
    incident: Option<IncidentId>,
    ttl: Duration,
) -> TokenClaims {
    let now = chrono::Utc::now().timestamp();
    TokenClaims {
        sub: user_id.to_owned(),
        name: name.to_owned(),
        role,
        incident,
        exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        iat: now,
        nbf: None,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        lineage: Vec::new(),
    }
}

/// Checks that `claims` may access `incident` at all (any role).
pub fn check_incident_scope(claims: &TokenClaims, incident: &IncidentId) -> Result<(), AuthError> {
    match &claims.incident {
        Some(scope) if scope != incident => Err(AuthError::WrongIncident(scope.clone())),
        _ => Ok(()),
    }
}

/// Revoked token ids: loaded from storage at start, added to by the admin
/// API, and announced live so open connections using a revoked token close.
#[derive(Clone)]
pub struct Revocations {
    ids: Arc<parking_lot::RwLock<std::collections::HashSet<String>>>,
    live: tokio::sync::broadcast::Sender<String>,
    /// In a cluster, revocations made here are announced to the other
    /// nodes (which also read storage every second).
    bus: Arc<std::sync::OnceLock<crate::cluster::Bus>>,
}

impl Revocations {
    pub fn new(ids: impl IntoIterator<Item = String>) -> Self {
        Self {
            ids: Arc::new(parking_lot::RwLock::new(ids.into_iter().collect())),
            live: tokio::sync::broadcast::channel(256).0,
            bus: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Announces the revocations made on this node to the other nodes of
    /// a cluster from now on.
    pub fn join_cluster(&self, bus: crate::cluster::Bus) {
        let _ = self.bus.set(bus);
    }

    /// Whether the token with id `jti` was revoked itself. Use
    /// [`Revocations::refuses`] for a token's claims: it also honours the
    /// revocation of the tokens it was minted with.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.ids.read().contains(jti)
    }

    /// Whether `claims` are refused: their token, or one it descends from
    /// (its `lineage`), was revoked.
    pub fn refuses(&self, claims: &TokenClaims) -> bool {
        let ids = self.ids.read();
        ids.contains(&claims.jti) || claims.lineage.iter().any(|parent| ids.contains(parent))
    }

    /// Marks a token revoked (after it was stored) and tells live
    /// connections, those of its known descendants (`descendants`, from the
    /// token registry) included.
    ///
    /// Descendants join the in-memory set too, so a connection that missed
    /// the announcement (a lagging receiver checks [`Self::is_revoked`])
    /// still closes; after a restart their `lineage` refuses them.
    pub fn add(&self, jti: String, descendants: impl IntoIterator<Item = String>) {
        if let Some(bus) = self.bus.get() {
            bus.publish(
                crate::cluster::Kind::Revocation,
                &commandpost_shared::IncidentId::new(0),
                0,
                jti.as_bytes(),
            );
        }
        self.add_known(jti, descendants);
    }

    /// [`Revocations::add`] for a revocation made elsewhere (another node
    /// announced it, or it was found in storage): not announced again.
    pub fn add_known(&self, jti: String, descendants: impl IntoIterator<Item = String>) {
        let mut announced = vec![jti];
        announced.extend(descendants);
        self.ids.write().extend(announced.iter().cloned());
        for id in announced {
            let _ = self.live.send(id);
        }
    }

    /// Revocations from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.live.subscribe()
    }
}

/// Every token the server minted (the start-up admin token, share links) or
/// has seen in use (tokens minted with the secret elsewhere: `commandpost
/// token`, an SSO gateway, a bot), so that an admin can list them and revoke
/// what a compromised holder minted. The tokens themselves are never stored.
///
/// The set of known ids stays in memory (one entry per valid token ever
/// seen: only holders of the secret or of a minting token can add to it).
#[derive(Clone)]
pub struct TokenRegistry {
    store: crate::store::Store,
    /// Ids already recorded. A plain lock: held for a lookup or an insert,
    /// never across `.await`.
    known: Arc<parking_lot::RwLock<std::collections::HashSet<String>>>,
    /// The recorded tokens' subjects: the name of each subject's latest
    /// token (by issue time), and that time. Same lock discipline.
    people: Arc<parking_lot::RwLock<People>>,
    /// When [`TokenRegistry::refresh`] last read storage.
    refreshed: Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
}

type People = std::collections::HashMap<String, (chrono::DateTime<chrono::Utc>, String)>;

/// Keeps `token`'s subject in `people`, under the name of its latest token.
fn remember(people: &mut People, token: &commandpost_shared::IssuedToken) {
    match people.get(&token.sub) {
        Some((at, _)) if *at > token.issued_at => {}
        _ => {
            people.insert(token.sub.clone(), (token.issued_at, token.name.clone()));
        }
    }
}

impl crate::sidecar::Directory for TokenRegistry {
    fn person(&self, id: &UserId) -> Option<crate::sidecar::KnownPerson> {
        let people = self.people.read();
        let (at, name) = people.get(&id.0)?;
        Some(crate::sidecar::KnownPerson {
            actor: Actor {
                id: id.clone(),
                name: name.clone(),
            },
            seen_at: *at,
        })
    }

    fn people(&self) -> Vec<crate::sidecar::KnownPerson> {
        self.people
            .read()
            .iter()
            .map(|(id, (at, name))| crate::sidecar::KnownPerson {
                actor: Actor {
                    id: UserId(id.clone()),
                    name: name.clone(),
                },
                seen_at: *at,
            })
            .collect()
    }
}

impl TokenRegistry {
    /// Loads the ids recorded so far.
    pub fn load(store: crate::store::Store) -> Result<Self, crate::store::StoreError> {
        let tokens = store.issued_tokens()?;
        let mut people = People::new();
        for token in &tokens {
            remember(&mut people, token);
        }
        let known = tokens.into_iter().map(|token| token.jti).collect();
        Ok(Self {
            store,
            known: Arc::new(parking_lot::RwLock::new(known)),
            people: Arc::new(parking_lot::RwLock::new(people)),
            refreshed: Arc::new(parking_lot::Mutex::new(None)),
        })
    }

    /// Records a token the server minted; returns once the record is
    /// durable, so no token leaves the server unrecorded.
    pub async fn record_minted(
        &self,
        claims: &TokenClaims,
        origin: commandpost_shared::TokenOrigin,
        minted_by: Option<&TokenClaims>,
    ) -> Result<(), crate::store::StoreError> {
        self.known.write().insert(claims.jti.clone());
        let record = issued(claims, origin, minted_by);
        remember(&mut self.people.write(), &record);
        let wait = self.store.record_token(&record)?;
        wait.await
            .map_err(|_| crate::store::StoreError::WriterGone)?
    }

    /// Records a token minted elsewhere the first time it is used. Does not
    /// wait: the record is bookkeeping, and the request goes on.
    pub fn note_use(&self, claims: &TokenClaims) {
        if self.known.read().contains(&claims.jti) {
            return;
        }
        if !self.known.write().insert(claims.jti.clone()) {
            return;
        }
        let record = issued(claims, commandpost_shared::TokenOrigin::FirstUse, None);
        remember(&mut self.people.write(), &record);
        if let Err(error) = self.store.record_token(&record) {
            tracing::error!(%error, jti = %claims.jti, "cannot record a token seen for the first time");
        }
    }

    /// Reads the token records from storage and knows every one of them:
    /// in a cluster, tokens first seen by another node (their holders can
    /// then be named in commands here). At most once per second unless
    /// `force`d.
    pub async fn refresh(&self, force: bool) -> Result<(), crate::store::StoreError> {
        {
            let mut last = self.refreshed.lock();
            if !force && last.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1)) {
                return Ok(());
            }
            *last = Some(std::time::Instant::now());
        }
        let tokens = self.store.read(|store| store.issued_tokens()).await?;
        let mut people = self.people.write();
        let mut known = self.known.write();
        for token in &tokens {
            remember(&mut people, token);
            known.insert(token.jti.clone());
        }
        Ok(())
    }

    /// Every recorded token, newest first.
    pub async fn list(
        &self,
    ) -> Result<Vec<commandpost_shared::IssuedToken>, crate::store::StoreError> {
        let mut tokens = self.store.read(|store| store.issued_tokens()).await?;
        tokens.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then(a.jti.cmp(&b.jti)));
        Ok(tokens)
    }

    /// The ids of every recorded token minted, directly or through others,
    /// with `jti`.
    pub async fn descendants(&self, jti: &str) -> Result<Vec<String>, crate::store::StoreError> {
        let tokens = self.store.read(|store| store.issued_tokens()).await?;
        let mut found = Vec::new();
        let mut frontier = vec![jti.to_owned()];
        while let Some(parent) = frontier.pop() {
            for token in &tokens {
                if token.minted_by.as_ref().is_some_and(|by| by.jti == parent)
                    && !found.contains(&token.jti)
                {
                    found.push(token.jti.clone());
                    frontier.push(token.jti.clone());
                }
            }
        }
        Ok(found)
    }
}

fn issued(
    claims: &TokenClaims,
    origin: commandpost_shared::TokenOrigin,
    minted_by: Option<&TokenClaims>,
) -> commandpost_shared::IssuedToken {
    let at = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    };
    commandpost_shared::IssuedToken {
        jti: claims.jti.clone(),
        sub: claims.sub.clone(),
        name: claims.name.clone(),
        role: claims.role,
        incident: claims.incident.clone(),
        issued_at: at(claims.iat),
        expires_at: at(claims.exp),
        minted_by: minted_by.map(|by| commandpost_shared::MintedBy {
            sub: by.sub.clone(),
            jti: by.jti.clone(),
        }),
        origin,
        recorded_at: chrono::Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_data_directory_the_secret_must_be_given() {
        let error = TokenKeys::load_configured(None, None, None)
            .err()
            .expect("no secret, no start")
            .to_string();
        assert!(
            error.contains("COMMANDPOST_SECRET ") && error.contains("COMMANDPOST_SECRET_FILE"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "too short\n").unwrap();
        let error = TokenKeys::load_configured(None, None, Some(&file))
            .err()
            .expect("a short secret is refused")
            .to_string();
        assert!(error.contains("at least 32 characters"), "{error}");
        let secret = "0123456789abcdef0123456789abcdef";
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let from_file = TokenKeys::load_configured(None, None, Some(&file)).unwrap();
        let given = TokenKeys::load_configured(None, Some(secret), None).unwrap();
        // The same secret either way: a token of one verifies with the other.
        let token = from_file.mint(
            "ada",
            "Ada",
            AccessRole::Responder,
            None,
            Duration::from_secs(60),
        );
        assert!(given.verify(&token).is_ok());
        let other = TokenKeys::from_secret(b"another secret of at least 32 chars!");
        assert!(other.verify(&token).is_err());
        // With a data directory and nothing given, the secret is made there.
        assert!(TokenKeys::load_configured(Some(dir.path()), None, None).is_ok());
    }

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
    fn the_reserved_id_is_refused_in_any_spelling() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        for sub in ["System", "SYSTEM", " system", "system\t"] {
            let token = keys.mint(
                sub,
                "Impostor",
                AccessRole::Responder,
                None,
                Duration::from_secs(60),
            );
            assert_eq!(keys.verify(&token), Err(AuthError::Invalid), "{sub:?}");
        }
    }

    #[test]
    fn tokens_from_the_future_are_refused_beyond_the_clock_skew() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let now = chrono::Utc::now().timestamp();
        let base = new_claims(
            "u1",
            "Ada",
            AccessRole::Responder,
            None,
            Duration::from_secs(3600),
        );
        let skew = CLOCK_SKEW.as_secs() as i64;
        let signed = |change: &dyn Fn(&mut TokenClaims)| {
            let mut claims = base.clone();
            change(&mut claims);
            keys.verify(&keys.sign(&claims))
        };
        assert!(
            signed(&|c| c.nbf = Some(now + skew - 5)).is_ok(),
            "within the skew"
        );
        assert_eq!(
            signed(&|c| c.nbf = Some(now + skew + 30)),
            Err(AuthError::NotYetValid)
        );
        assert!(
            signed(&|c| c.iat = now + skew - 5).is_ok(),
            "within the skew"
        );
        assert_eq!(
            signed(&|c| c.iat = now + skew + 30),
            Err(AuthError::NotYetValid)
        );
        assert!(signed(&|c| c.nbf = Some(now - 10)).is_ok(), "already valid");
        assert_eq!(
            signed(&|c| c.lineage = vec!["x".into(); MAX_LINEAGE + 1]),
            Err(AuthError::Invalid)
        );
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
