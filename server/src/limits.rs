//! Limits that keep one client (or a crowd) from taking the server down:
//! open connections, globally and per token, request bodies in flight per
//! token, and the rate of commands per token. The frame-size and document-size limits live where frames and
//! documents are handled (`ws`, `rooms`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A limit that refused a connection, request or command. The HTTP
/// adapter answers it with 503 (the server is full) or 429 (this token),
/// the stable [`LimitError::code`] and this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the server holds its maximum of {0} connections; try again later (operators: --max-connections)"
    )]
    ServerFull(usize),
    #[error(
        "this token already has {0} open connections, the maximum for a token that can write; close some (operators: --max-connections-per-token)"
    )]
    TokenConnections(usize),
    #[error(
        "this token already has {0} requests whose bodies are still arriving; finish or cancel them"
    )]
    TokenBodies(usize),
    #[error(
        "too many commands from this token (limit {per_minute} per minute); retry in {wait_seconds:.1} s"
    )]
    RateLimited { per_minute: u32, wait_seconds: f64 },
}

impl LimitError {
    /// The stable error code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            LimitError::ServerFull(_) => "too_many_connections",
            LimitError::TokenConnections(_) => "too_many_connections_for_token",
            LimitError::TokenBodies(_) => "too_many_requests_for_token",
            LimitError::RateLimited { .. } => "rate_limited",
        }
    }
}

/// Open things counted per key (a token id) and in all. Each one holds a
/// [`Slot`]; dropping it gives the slot back, so counts stay exact however
/// a connection or request ends. A plain lock: held for a count, never
/// across `.await`.
#[derive(Default)]
struct Counter {
    open: parking_lot::Mutex<(usize, HashMap<String, usize>)>,
    /// Mirrors the total, when the count is exported.
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl Counter {
    /// Takes a slot under `key` if `admit(total, for_key)` allows it.
    fn take(
        self: &Arc<Self>,
        key: &str,
        admit: impl FnOnce(usize, usize) -> Result<(), LimitError>,
    ) -> Result<Slot, LimitError> {
        let mut open = self.open.lock();
        let for_key = open.1.get(key).copied().unwrap_or(0);
        admit(open.0, for_key)?;
        open.0 += 1;
        *open.1.entry(key.to_owned()).or_default() += 1;
        if let Some(gauge) = &self.gauge {
            gauge.inc();
        }
        Ok(Slot {
            counter: self.clone(),
            key: key.to_owned(),
        })
    }

    fn total(&self) -> usize {
        self.open.lock().0
    }
}

/// One counted connection or request; dropping it releases the slot.
pub struct Slot {
    counter: Arc<Counter>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(gauge) = &self.counter.gauge {
            gauge.dec();
        }
        if let Some(count) = open.1.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&self.key);
            }
        }
    }
}

/// Counts open WebSockets and event streams.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_token: usize,
    open: Arc<Counter>,
}

/// One counted connection; dropping it releases the slot.
pub type ConnectionPermit = Slot;

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_token: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_token,
            open: Arc::default(),
        })
    }

    /// Takes a slot for a connection made with the token of `claims`, or
    /// says which limit is reached. The per-token limit applies to tokens
    /// that can write; a read-only token (a viewer share link, opened by
    /// every stakeholder who has the link) is bounded only by the total.
    pub fn acquire(
        &self,
        claims: &commandpost_shared::TokenClaims,
    ) -> Result<ConnectionPermit, LimitError> {
        self.open.take(&claims.jti, |total, for_token| {
            if total >= self.max_total {
                tracing::warn!(
                    limit = self.max_total,
                    "refused a connection: server connection limit reached"
                );
                return Err(LimitError::ServerFull(self.max_total));
            }
            if claims.role.can_write() && for_token >= self.max_per_token {
                tracing::warn!(
                    limit = self.max_per_token,
                    "refused a connection: per-token connection limit reached"
                );
                return Err(LimitError::TokenConnections(self.max_per_token));
            }
            Ok(())
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.total()
    }
}

/// Sidecar commands (notes included) per token: a sustained rate with a
/// burst allowance.
pub struct CommandLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    per_minute: u32,
}

impl CommandLimiter {
    /// `per_minute` 0 disables the limit.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Self {
            limiter,
            per_minute,
        }
    }

    /// Counts one command for token `jti`, or refuses it (429, with the
    /// seconds to wait).
    pub fn check(&self, jti: &str) -> Result<(), LimitError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.check_key(&jti.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                tracing::warn!(
                    limit_per_minute = self.per_minute,
                    "refused a command: rate limit"
                );
                Err(LimitError::RateLimited {
                    per_minute: self.per_minute,
                    wait_seconds: wait.as_secs_f64().max(0.1),
                })
            }
        }
    }
}

/// Requests whose body is still arriving, per token (keyed by the token id
/// when the bearer token verifies, else under one shared key): a body that
/// trickles in holds a slot until it is complete or [`BODY_READ_TIMEOUT`]
/// passes.
pub struct BodyReads {
    per_key: usize,
    open: Arc<Counter>,
}

/// Request bodies one token may be sending at once (and all requests
/// without a valid token together).
pub const BODIES_PER_TOKEN: usize = 32;

/// The whole request body must arrive within this time after the headers.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest request body the API reads (every command fits in a few
/// kilobytes; see `commandpost_shared::limits`).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

impl BodyReads {
    pub fn new(per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            per_key,
            open: Arc::new(Counter {
                gauge: Some(crate::metrics::METRICS.request_bodies_reading.clone()),
                ..Counter::default()
            }),
        })
    }

    /// Takes a slot for a body sent under `key`, or says the limit is
    /// reached.
    pub fn acquire(&self, key: &str) -> Result<Slot, LimitError> {
        self.open.take(key, |_, for_key| {
            if for_key < self.per_key {
                return Ok(());
            }
            tracing::warn!(
                limit = self.per_key,
                "refused a request: too many bodies in flight for one token"
            );
            Err(LimitError::TokenBodies(self.per_key))
        })
    }

    /// Bodies being read now.
    pub fn open(&self) -> usize {
        self.open.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str, role: commandpost_shared::AccessRole) -> commandpost_shared::TokenClaims {
        let mut claims =
            crate::auth::new_claims("u", "U", role, None, std::time::Duration::from_secs(60));
        claims.jti = jti.to_owned();
        claims
    }

    #[test]
    fn connection_slots_are_counted_per_token_and_released_on_drop() {
        use commandpost_shared::AccessRole::{Responder, Viewer};
        let limits = ConnectionLimits::new(3, 2);
        let a1 = limits.acquire(&claims("a", Responder)).unwrap();
        let _a2 = limits.acquire(&claims("a", Responder)).unwrap();
        let refused = limits.acquire(&claims("a", Responder)).err().unwrap();
        assert_eq!(refused.code(), "too_many_connections_for_token");
        let _b1 = limits.acquire(&claims("b", Responder)).unwrap();
        let refused = limits.acquire(&claims("c", Responder)).err().unwrap();
        assert_eq!(refused.code(), "too_many_connections");
        drop(a1);
        assert_eq!(limits.open(), 2);
        limits.acquire(&claims("c", Responder)).unwrap();

        // A read-only token is bounded by the total only.
        let limits = ConnectionLimits::new(5, 2);
        let viewers: Vec<_> = (0..5)
            .map(|_| limits.acquire(&claims("link", Viewer)).unwrap())
            .collect();
        let refused = limits.acquire(&claims("link", Viewer)).err().unwrap();
        assert_eq!(refused.code(), "too_many_connections");
        drop(viewers);
    }

    #[test]
    fn commands_beyond_the_burst_are_refused_per_token() {
        let limiter = CommandLimiter::new(60, 3);
        for _ in 0..3 {
            limiter.check("a").unwrap();
        }
        let refused = limiter.check("a").err().unwrap();
        assert_eq!(refused.code(), "rate_limited");
        // Another token has its own allowance.
        limiter.check("b").unwrap();
        // Disabled: never refuses.
        let off = CommandLimiter::new(0, 0);
        for _ in 0..100 {
            off.check("a").unwrap();
        }
    }
}
