//! Server configuration: one struct, filled by the CLI (flags and
//! `COMMANDPOST_*` environment variables) or directly by tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `Server::new` needs. Every field has a CLI flag and an
/// environment variable; see `commandpost serve --help`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory holding the sled database and the token secret.
    pub data_dir: PathBuf,
    /// Token signing secret; `None` reads or creates `<data>/secret`.
    pub secret: Option<String>,
    /// Public base URL used in printed links; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Largest accepted WebSocket frame or message, in bytes.
    pub max_message_bytes: usize,
    /// How long a room with no connection stays loaded.
    pub room_idle_timeout: Duration,
    /// Compact a document's log into a snapshot after this many updates.
    pub compact_after_updates: u64,
    /// ... or after the log holds this many bytes.
    pub compact_after_bytes: u64,
    /// Messages a room buffers for each connection before that connection
    /// counts as lagging and is resynced with one merged update.
    pub room_buffer_messages: usize,
    /// Fan-out batching: in a room with `n` connections, document updates
    /// are relayed at most once per `n / 1000 × fanout_window_per_1000`
    /// (capped at `fanout_window_max`); updates arriving in between are
    /// merged into one message. The first update after a quiet spell goes
    /// out at once. Zero disables batching.
    pub fanout_window_per_1000: Duration,
    pub fanout_window_max: Duration,
    /// How long the admin token printed at start-up stays valid.
    pub admin_token_ttl: Duration,
    /// How long a handoff offer waits for an answer before it expires.
    pub handoff_ttl: Duration,
}

impl ServerConfig {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            secret: None,
            public_url: None,
            max_message_bytes: 16 * 1024 * 1024,
            room_idle_timeout: Duration::from_secs(30),
            compact_after_updates: 1000,
            compact_after_bytes: 4 * 1024 * 1024,
            room_buffer_messages: 1024,
            fanout_window_per_1000: Duration::from_millis(12),
            fanout_window_max: Duration::from_millis(150),
            admin_token_ttl: Duration::from_secs(7 * 24 * 3600),
            handoff_ttl: Duration::from_secs(15 * 60),
        }
    }
}
