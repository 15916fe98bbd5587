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
    /// The smallest window, for rooms of any size: a burst of edits (a
    /// paste, a script, several typists at once) goes out merged.
    pub fanout_window_min: Duration,
    /// Open WebSockets and event streams, in all and per token.
    pub max_connections: usize,
    pub max_connections_per_token: usize,
    /// Sidecar commands (notes included) per token per minute (0: no
    /// limit), and the burst allowed above that rate.
    pub commands_per_minute: u32,
    pub command_burst: u32,
    /// Largest stored size of one document (snapshot + log); updates that
    /// would grow it past this are refused (after a compaction, when
    /// something was deleted since the last one). Updates that only delete
    /// are always accepted.
    pub max_document_bytes: u64,
    /// Bytes a document WebSocket may send per second (every message),
    /// with a burst of `max(max_message_bytes, this)`. Beyond it the server
    /// stops reading that socket until the budget refills (TCP pushes back
    /// on the sender). 0: no limit.
    pub inbound_bytes_per_second: u64,
    /// Messages other than awareness (edits, sync, awareness queries) a
    /// connection may send per second, with a burst of twice that; beyond
    /// it, the same back-pressure. 0: no limit.
    pub updates_per_second: u32,
    /// Awareness relays per connection per second (also the burst): faster
    /// changes are coalesced, the latest state per client id going out
    /// with the next relay. 0: no limit.
    pub awareness_per_second: u32,
    /// How often document WebSockets are pinged; a peer silent for two
    /// intervals is dead and its connection is dropped.
    pub ping_interval: Duration,
    /// Time allowed for a client to send its HTTP request headers (which
    /// carry the token) after connecting.
    pub handshake_timeout: Duration,
    /// Browser origins allowed to open document WebSockets besides the
    /// server's own (the request's `Host`).
    pub allowed_origins: Vec<String>,
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
            fanout_window_min: Duration::from_millis(2),
            max_connections: 50_000,
            max_connections_per_token: 1_000,
            commands_per_minute: 120,
            command_burst: 30,
            max_document_bytes: 256 * 1024 * 1024,
            inbound_bytes_per_second: 1024 * 1024,
            updates_per_second: 1000,
            awareness_per_second: 20,
            ping_interval: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            admin_token_ttl: Duration::from_secs(7 * 24 * 3600),
            handoff_ttl: Duration::from_secs(15 * 60),
        }
    }
}
