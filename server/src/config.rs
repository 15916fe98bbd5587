//! Server configuration: one struct, declared once. Its fields are the
//! flags of `commandpost serve` (each with a `COMMANDPOST_*` environment
//! variable); their doc comments are the `--help` text and their attributes
//! the defaults, so there is no second list to keep in step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Everything `Server::new` needs.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on. Use 127.0.0.1:0 for a free port.
    #[arg(long, env = "COMMANDPOST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory: the sled store (db/) and the token secret (secret).
    /// Used when --store is not given.
    #[arg(
        long = "data",
        env = "COMMANDPOST_DATA",
        default_value = "commandpost-data"
    )]
    pub data_dir: PathBuf,
    /// Base URL that users reach this server at, used in printed links.
    /// Defaults to http://<listen address>.
    #[arg(long, env = "COMMANDPOST_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest WebSocket frame or message accepted, in bytes; larger ones
    /// close the connection with code 1009.
    #[arg(long, env = "COMMANDPOST_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// How long a document stays loaded after its last connection left
    /// (e.g. 30s, 5m).
    #[arg(long, env = "COMMANDPOST_ROOM_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub room_idle_timeout: Duration,
    /// Compact a document's update log into a snapshot after this many updates.
    #[arg(
        long,
        env = "COMMANDPOST_COMPACT_AFTER_UPDATES",
        default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub compact_after_updates: u64,
    /// ... or once the log holds this many bytes.
    #[arg(long, env = "COMMANDPOST_COMPACT_AFTER_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub compact_after_bytes: u64,
    /// Messages a document buffers per connection; a connection further
    /// behind is resynced with one merged update.
    #[arg(long = "room-buffer", value_name = "MESSAGES", env = "COMMANDPOST_ROOM_BUFFER", default_value_t = 1024, value_parser = at_least::<16>)]
    pub room_buffer_messages: usize,
    /// Fan-out batching: a document with n connections relays edits at
    /// most once per n/1000 × this (12ms: 60 ms at 5,000 connections),
    /// merging what arrives in between into one message; an edit after a
    /// quiet spell goes out at once. 0s disables batching.
    #[arg(long, env = "COMMANDPOST_FANOUT_WINDOW_PER_1000", default_value = "12ms", value_parser = humantime::parse_duration)]
    pub fanout_window_per_1000: Duration,
    /// Upper bound of the fan-out batching window.
    #[arg(long, env = "COMMANDPOST_FANOUT_WINDOW_MAX", default_value = "150ms", value_parser = humantime::parse_duration)]
    pub fanout_window_max: Duration,
    /// Lower bound of the fan-out batching window, for rooms of any size
    /// (bursts go out merged; a lone edit still goes out at once).
    #[arg(long, env = "COMMANDPOST_FANOUT_WINDOW_MIN", default_value = "2ms", value_parser = humantime::parse_duration)]
    pub fanout_window_min: Duration,
    /// Open WebSockets and event streams the server accepts in all (the
    /// process's open-files limit must allow them).
    #[arg(long, env = "COMMANDPOST_MAX_CONNECTIONS", default_value_t = 50_000, value_parser = at_least::<1>)]
    pub max_connections: usize,
    /// ... and per token that can write (responders, admins), so one
    /// leaked or buggy token cannot take every slot. Read-only tokens are
    /// bounded only by --max-connections: everyone who opens a viewer share
    /// link uses its one token, and a major incident draws thousands.
    #[arg(
        long,
        env = "COMMANDPOST_MAX_CONNECTIONS_PER_TOKEN",
        default_value_t = 1_000, value_parser = at_least::<1>
    )]
    pub max_connections_per_token: usize,
    /// Sidecar commands (notes included) allowed per token per minute; 0
    /// turns the limit off. Beyond it: 429 with the time to wait.
    #[arg(long, env = "COMMANDPOST_COMMANDS_PER_MINUTE", default_value_t = 120)]
    pub commands_per_minute: u32,
    /// Commands a token may send in a burst above that rate.
    #[arg(long, env = "COMMANDPOST_COMMAND_BURST", default_value_t = 30)]
    pub command_burst: u32,
    /// Largest stored size of one document in bytes; an edit that would
    /// grow it further is refused (close code 4413) and the document stays
    /// readable. Edits that only delete are always accepted, and at the
    /// limit the document is compacted first, so deleted text frees space.
    #[arg(long, env = "COMMANDPOST_MAX_DOCUMENT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_document_bytes: u64,
    /// Bytes one document WebSocket may send per second (edits, cursors,
    /// everything), with a burst of --max-message-bytes. A faster sender is
    /// not disconnected: the server stops reading its socket until the
    /// budget refills, so TCP slows it down. 0 turns the limit off.
    #[arg(long, env = "COMMANDPOST_INBOUND_BYTES_PER_SECOND", default_value_t = 1024 * 1024)]
    pub inbound_bytes_per_second: u64,
    /// Edits (and other messages, cursors excepted) one document WebSocket
    /// may send per second, with a burst of twice that; beyond it, the same
    /// back-pressure. Typing sends one per keystroke. 0 turns the limit off.
    #[arg(long, env = "COMMANDPOST_UPDATES_PER_SECOND", default_value_t = 1000)]
    pub updates_per_second: u32,
    /// Cursor and presence (awareness) changes relayed per connection per
    /// second; faster changes are merged, the latest state going out next.
    /// 0 turns the limit off.
    #[arg(long, env = "COMMANDPOST_AWARENESS_PER_SECOND", default_value_t = 20)]
    pub awareness_per_second: u32,
    /// How often document WebSockets are pinged; a peer silent for two
    /// intervals is dropped (its cursor disappears, an empty room unloads),
    /// and one whose socket stays full (it stopped reading) for one interval.
    #[arg(long, env = "COMMANDPOST_PING_INTERVAL", default_value = "30s", value_parser = ping_interval)]
    pub ping_interval: Duration,
    /// Time a client has to send its request headers (and token) after
    /// connecting; slower connections are closed.
    #[arg(long, env = "COMMANDPOST_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// A browser origin (scheme://host[:port]) allowed to open document
    /// WebSockets besides the server's own; repeat, or comma-separate in
    /// the environment variable. Pages on any other site are refused (403).
    #[arg(
        long = "allowed-origin",
        env = "COMMANDPOST_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// How long the admin token printed at start-up stays valid.
    #[arg(long, env = "COMMANDPOST_ADMIN_TOKEN_TTL", default_value = "7days", value_parser = humantime::parse_duration)]
    pub admin_token_ttl: Duration,
    /// How long a handoff offer waits for the named person before it
    /// expires (e.g. 15m).
    #[arg(long, env = "COMMANDPOST_HANDOFF_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub handoff_ttl: Duration,
    /// Token signing secret (at least 32 characters). By default a secret is
    /// generated into <data>/secret on first start; with a PostgreSQL
    /// store there is no data directory, and this or --secret-file is
    /// required (every server on one database needs the same secret).
    #[arg(long, env = "COMMANDPOST_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// A file holding the token signing secret (at least 32 characters; a
    /// trailing newline is ignored), instead of --secret.
    #[arg(long, env = "COMMANDPOST_SECRET_FILE", conflicts_with = "secret")]
    pub secret_file: Option<PathBuf>,
    /// Where everything is stored: `sled:DIR`, a sled database in the data
    /// directory DIR (what --data names), or a `postgres://` URL (also
    /// `postgresql://`) of a PostgreSQL database, migrated at start; TLS with
    /// libpq's `sslmode=require`, or `sslmode=verify-full&sslrootcert=CA.pem`.
    /// Default: `sled:` the --data directory, as before.
    #[arg(long = "store", value_name = "STORE", env = "COMMANDPOST_STORE", value_parser = StoreLocation::parse)]
    pub store: Option<StoreLocation>,
    /// Most connections a PostgreSQL store opens; a request that finds them
    /// all busy waits up to --store-timeout, then fails.
    #[arg(long, env = "COMMANDPOST_STORE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub store_pool_size: u32,
    /// How long a request waits for a PostgreSQL connection (a free one of
    /// the pool, or a new one to connect) before it fails.
    #[arg(long, env = "COMMANDPOST_STORE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub store_timeout: Duration,
    /// Redis, to run several nodes on one PostgreSQL store as a cluster
    /// (needs --store postgres://...): `redis://[user:password@]host:port`,
    /// or `rediss://` for TLS. Each node publishes the document updates it
    /// commits there and applies the other nodes'; Redis holds nothing
    /// durable (what it loses, nodes read from PostgreSQL).
    #[arg(long, value_name = "URL", env = "COMMANDPOST_REDIS")]
    pub redis: Option<String>,
    /// For `rediss://`: a PEM file of the certificate authorities to trust
    /// for Redis's certificate, instead of the system's (a private CA).
    #[arg(long, value_name = "FILE", env = "COMMANDPOST_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// In a cluster: how long another node's editor's cursor stays without
    /// a renewal (clients renew every 15 s) before this node drops it, e.g.
    /// after that node died. y-protocols' own timeout by default.
    #[arg(long, env = "COMMANDPOST_CLUSTER_AWARENESS_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub cluster_awareness_timeout: Duration,
}

/// Where the store is: a sled data directory or a PostgreSQL URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A data directory: the database in `db/`, the secret in `secret`.
    Sled(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl StoreLocation {
    /// `sled:DIR` or a `postgres://` / `postgresql://` URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(dir) = text.strip_prefix("sled:") {
            if dir.is_empty() {
                return Err("sled: needs a directory, as in sled:/var/lib/commandpost".into());
            }
            return Ok(StoreLocation::Sled(PathBuf::from(dir)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(text.to_owned()));
        }
        Err(format!(
            "`{}` is neither sled:DIR nor a postgres:// URL",
            StoreLocation::Postgres(text.to_owned())
        ))
    }
}

/// The location as it may be logged: a URL's password is left out.
impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sled(dir) => write!(f, "sled:{}", dir.display()),
            StoreLocation::Postgres(url) => {
                // scheme://user:password@host...: the password goes.
                let Some((scheme, rest)) = url.split_once("://") else {
                    return f.write_str(url);
                };
                let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
                match rest[..authority_end].rsplit_once('@') {
                    Some((user, host)) if user.contains(':') => {
                        let user = user.split(':').next().unwrap_or_default();
                        write!(f, "{scheme}://{user}:***@{host}{}", &rest[authority_end..])
                    }
                    _ => f.write_str(url),
                }
            }
        }
    }
}

/// Debug output is logged too: the same, password left out.
impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl ServerConfig {
    /// Where the store is: --store, else the --data directory.
    pub fn store_location(&self) -> StoreLocation {
        self.store
            .clone()
            .unwrap_or_else(|| StoreLocation::Sled(self.data_dir.clone()))
    }

    /// The configuration `commandpost serve ARGS` would run with: the
    /// flags in `args`, then `COMMANDPOST_*` variables, then the defaults.
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, clap::Error> {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            config: ServerConfig,
        }
        Serve::try_parse_from(std::iter::once("serve").chain(args)).map(|serve| serve.config)
    }
}

/// A count of at least `MIN`.
fn at_least<const MIN: usize>(value: &str) -> Result<usize, String> {
    let count: usize = value
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    if count < MIN {
        return Err(format!("must be at least {MIN}"));
    }
    Ok(count)
}

/// A ping interval: a duration (`30s`, `1m`) of at least 100 ms.
fn ping_interval(value: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if interval < Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_flag_declarations() {
        let config = ServerConfig::from_args(["--data", "/tmp/x"]).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.max_connections_per_token, 1_000);
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.admin_token_ttl, Duration::from_secs(7 * 24 * 3600));
        for refused in [
            ["--compact-after-updates", "0"],
            ["--room-buffer", "3"],
            ["--ping-interval", "5ms"],
            ["--max-connections", "0"],
        ] {
            let error = ServerConfig::from_args(refused).unwrap_err().to_string();
            assert!(error.contains(refused[0]), "{error}");
        }
    }

    #[test]
    fn the_store_is_the_data_directory_unless_named() {
        let config = ServerConfig::from_args(["--data", "/tmp/x"]).unwrap();
        assert_eq!(
            config.store_location(),
            StoreLocation::Sled(PathBuf::from("/tmp/x"))
        );
        assert_eq!(config.store_pool_size, 16);
        let config = ServerConfig::from_args([
            "--store",
            "postgres://cp:hunter2@db:5432/cp?sslmode=require",
            "--store-pool-size",
            "4",
        ])
        .unwrap();
        let location = config.store_location();
        assert_eq!(
            location,
            StoreLocation::Postgres("postgres://cp:hunter2@db:5432/cp?sslmode=require".into())
        );
        assert_eq!(config.store_pool_size, 4);
        assert_eq!(
            location.to_string(),
            "postgres://cp:***@db:5432/cp?sslmode=require"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        let config = ServerConfig::from_args(["--store", "sled:/srv/cp"]).unwrap();
        assert_eq!(
            config.store_location(),
            StoreLocation::Sled(PathBuf::from("/srv/cp"))
        );
        for refused in [
            ["--store", "mysql://db"],
            ["--store", "sled:"],
            ["--store-pool-size", "0"],
        ] {
            let error = ServerConfig::from_args(refused).unwrap_err().to_string();
            assert!(error.contains(refused[0]), "{error}");
        }
    }
}
