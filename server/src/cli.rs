//! The `commandpost` command line: `serve` and `token`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use commandpost_shared::{AccessRole, IncidentId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::config::ServerConfig;
use crate::remote;
use crate::server::Server;

/// Command Post: live incident documents with a command structure.
///
/// Run `commandpost serve` to start the server; it prints an admin URL to
/// open in a browser. Every flag also reads a COMMANDPOST_* environment
/// variable.
#[derive(Parser, Debug)]
#[command(name = "commandpost", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (HTTP API, document WebSockets, embedded storage).
    Serve(ServeArgs),
    /// Print a signed access token for a user (`token revoke ID` revokes one).
    Token(TokenArgs),
    /// Download a consistent backup of a running server's database.
    Backup {
        #[command(flatten)]
        remote: remote::Remote,
        /// Where to write the backup file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Restore a backup file into a new, empty data directory.
    Restore {
        /// The backup file (from `commandpost backup`).
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create (it must not hold a database yet).
        #[arg(long)]
        data: PathBuf,
    },
    /// Declare an incident on a running server (you become its commander).
    Declare {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::DeclareArgs,
    },
    /// Post a note to an incident's command-post log.
    Note {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::NoteArgs,
    },
    /// Pin a status summary with a next-update deadline.
    Pin {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::PinArgs,
    },
    /// Show an incident's status, roles, pending handoffs and pinned status.
    Status {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::StatusArgs,
    },
    /// Offer or accept a role handoff.
    Handoff {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        action: remote::Handoff,
    },
    /// Export an incident's postmortem draft (Markdown).
    Postmortem {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::PostmortemArgs,
    },
    /// Print an incident's events as they happen.
    Watch {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::WatchArgs,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on. Use 127.0.0.1:0 for a free port.
    #[arg(long, env = "COMMANDPOST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory: the sled store (db/) and the token secret (secret).
    #[arg(long, env = "COMMANDPOST_DATA", default_value = "commandpost-data")]
    data: PathBuf,
    /// Base URL that users reach this server at, used in printed links.
    /// Defaults to http://<listen address>.
    #[arg(long, env = "COMMANDPOST_PUBLIC_URL")]
    public_url: Option<String>,
    /// Largest WebSocket frame or message accepted, in bytes; larger ones
    /// close the connection with code 1009.
    #[arg(long, env = "COMMANDPOST_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_message_bytes: usize,
    /// How long a document stays loaded after its last connection left
    /// (e.g. 30s, 5m).
    #[arg(long, env = "COMMANDPOST_ROOM_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    room_idle_timeout: Duration,
    /// Compact a document's update log into a snapshot after this many updates.
    #[arg(
        long,
        env = "COMMANDPOST_COMPACT_AFTER_UPDATES",
        default_value_t = 1000
    )]
    compact_after_updates: u64,
    /// ... or once the log holds this many bytes.
    #[arg(long, env = "COMMANDPOST_COMPACT_AFTER_BYTES", default_value_t = 4 * 1024 * 1024)]
    compact_after_bytes: u64,
    /// Messages a document buffers per connection; a connection further
    /// behind is resynced with one merged update.
    #[arg(long, env = "COMMANDPOST_ROOM_BUFFER", default_value_t = 1024)]
    room_buffer: usize,
    /// Fan-out batching: a document with n connections relays edits at
    /// most once per n/1000 × this (12ms: 60 ms at 5,000 connections),
    /// merging what arrives in between into one message; an edit after a
    /// quiet spell goes out at once. 0s disables batching.
    #[arg(long, env = "COMMANDPOST_FANOUT_WINDOW_PER_1000", default_value = "12ms", value_parser = humantime::parse_duration)]
    fanout_window_per_1000: Duration,
    /// Upper bound of the fan-out batching window.
    #[arg(long, env = "COMMANDPOST_FANOUT_WINDOW_MAX", default_value = "150ms", value_parser = humantime::parse_duration)]
    fanout_window_max: Duration,
    /// Lower bound of the fan-out batching window, for rooms of any size
    /// (bursts go out merged; a lone edit still goes out at once).
    #[arg(long, env = "COMMANDPOST_FANOUT_WINDOW_MIN", default_value = "2ms", value_parser = humantime::parse_duration)]
    fanout_window_min: Duration,
    /// Open WebSockets and event streams the server accepts in all (the
    /// process's open-files limit must allow them).
    #[arg(long, env = "COMMANDPOST_MAX_CONNECTIONS", default_value_t = 50_000)]
    max_connections: usize,
    /// ... and per token that can write (responders, admins), so one
    /// leaked or buggy token cannot take every slot. Read-only tokens are
    /// bounded only by --max-connections: everyone who opens a viewer share
    /// link uses its one token, and a major incident draws thousands.
    #[arg(
        long,
        env = "COMMANDPOST_MAX_CONNECTIONS_PER_TOKEN",
        default_value_t = 1_000
    )]
    max_connections_per_token: usize,
    /// Sidecar commands (notes included) allowed per token per minute; 0
    /// turns the limit off. Beyond it: 429 with the time to wait.
    #[arg(long, env = "COMMANDPOST_COMMANDS_PER_MINUTE", default_value_t = 120)]
    commands_per_minute: u32,
    /// Commands a token may send in a burst above that rate.
    #[arg(long, env = "COMMANDPOST_COMMAND_BURST", default_value_t = 30)]
    command_burst: u32,
    /// Largest stored size of one document in bytes; an edit that would
    /// grow it further is refused (close code 4413) and the document stays
    /// readable. Edits that only delete are always accepted, and at the
    /// limit the document is compacted first, so deleted text frees space.
    #[arg(long, env = "COMMANDPOST_MAX_DOCUMENT_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_document_bytes: u64,
    /// Bytes one document WebSocket may send per second (edits, cursors,
    /// everything), with a burst of --max-message-bytes. A faster sender is
    /// not disconnected: the server stops reading its socket until the
    /// budget refills, so TCP slows it down. 0 turns the limit off.
    #[arg(long, env = "COMMANDPOST_INBOUND_BYTES_PER_SECOND", default_value_t = 1024 * 1024)]
    inbound_bytes_per_second: u64,
    /// Edits (and other messages, cursors excepted) one document WebSocket
    /// may send per second, with a burst of twice that; beyond it, the same
    /// back-pressure. Typing sends one per keystroke. 0 turns the limit off.
    #[arg(long, env = "COMMANDPOST_UPDATES_PER_SECOND", default_value_t = 1000)]
    updates_per_second: u32,
    /// Cursor and presence (awareness) changes relayed per connection per
    /// second; faster changes are merged, the latest state going out next.
    /// 0 turns the limit off.
    #[arg(long, env = "COMMANDPOST_AWARENESS_PER_SECOND", default_value_t = 20)]
    awareness_per_second: u32,
    /// How often document WebSockets are pinged; a peer silent for two
    /// intervals is dropped (its cursor disappears, an empty room unloads).
    #[arg(long, env = "COMMANDPOST_PING_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    ping_interval: Duration,
    /// Time a client has to send its request headers (and token) after
    /// connecting; slower connections are closed.
    #[arg(long, env = "COMMANDPOST_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// A browser origin (scheme://host[:port]) allowed to open document
    /// WebSockets besides the server's own; repeat, or comma-separate in
    /// the environment variable. Pages on any other site are refused (403).
    #[arg(
        long = "allowed-origin",
        env = "COMMANDPOST_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// How long the admin token printed at start-up stays valid.
    #[arg(long, env = "COMMANDPOST_ADMIN_TOKEN_TTL", default_value = "7days", value_parser = humantime::parse_duration)]
    admin_token_ttl: Duration,
    /// How long a handoff offer waits for the named person before it
    /// expires (e.g. 15m).
    #[arg(long, env = "COMMANDPOST_HANDOFF_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    handoff_ttl: Duration,
    /// Log format on stderr.
    #[arg(long, env = "COMMANDPOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Token signing secret (at least 32 characters). By default a secret is
    /// generated into <data>/secret on first start.
    #[arg(long, env = "COMMANDPOST_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct TokenArgs {
    #[command(subcommand)]
    action: Option<TokenAction>,
    #[command(flatten)]
    mint: MintArgs,
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Revoke a token by its id (printed when it was minted, or the `jti`
    /// claim) on a running server: it is refused from then on, and so is
    /// every share link minted with it; open connections using any of them
    /// close within a second. With `--minted-by SUB` instead of an id:
    /// revoke every token SUB minted. Needs an admin token for every
    /// incident.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "minted_by"])))]
    Revoke {
        /// The token id.
        id: Option<String>,
        /// Revoke every token this user id minted (share links), and what
        /// was minted from those, instead of one token.
        #[arg(long, value_name = "SUB")]
        minted_by: Option<String>,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// List the tokens a running server minted or has seen in use (the
    /// token registry): id, subject, role, scope, expiry, who minted it.
    /// Needs an admin token for every incident.
    List {
        /// Only the tokens this user id minted.
        #[arg(long, value_name = "SUB")]
        minted_by: Option<String>,
        #[command(flatten)]
        remote: remote::Remote,
    },
}

#[derive(Args, Debug)]
struct MintArgs {
    /// Data directory of the server whose secret signs the token.
    #[arg(long, env = "COMMANDPOST_DATA", default_value = "commandpost-data")]
    data: PathBuf,
    /// Access role: admin, responder or viewer.
    #[arg(long, value_parser = parse_role, required = true)]
    role: Option<AccessRole>,
    /// Limit the token to one incident (INC-<n>); without it, every incident.
    #[arg(long)]
    incident: Option<IncidentId>,
    /// Display name shown to other responders.
    #[arg(long, required = true)]
    name: Option<String>,
    /// User id (token subject); defaults to the name in lowercase with
    /// dashes.
    #[arg(long)]
    user: Option<String>,
    /// How long the token is valid (e.g. 12h, 7days).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Token signing secret, if the server uses COMMANDPOST_SECRET.
    #[arg(long, env = "COMMANDPOST_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_role(value: &str) -> Result<AccessRole, String> {
    value.parse()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(TokenArgs {
            action:
                Some(TokenAction::Revoke {
                    id,
                    minted_by,
                    remote,
                }),
            ..
        }) => match (id, minted_by) {
            (_, Some(subject)) => remote::revoke_minted_by(remote, &subject),
            (Some(id), None) => remote::revoke(remote, &id),
            (None, None) => Err(anyhow::anyhow!(
                "name the token id to revoke, or --minted-by SUB"
            )),
        },
        Command::Token(TokenArgs {
            action: Some(TokenAction::List { minted_by, remote }),
            ..
        }) => remote::list_tokens(remote, minted_by.as_deref()),
        Command::Token(TokenArgs { mint, .. }) => token(mint),
        Command::Backup { remote, out } => remote::backup(remote, &out),
        Command::Restore { from, data } => restore(&from, &data),
        Command::Declare { remote, args } => remote::declare(remote, args),
        Command::Note { remote, args } => remote::note(remote, args),
        Command::Pin { remote, args } => remote::pin(remote, args),
        Command::Status { remote, args } => remote::status(remote, args),
        Command::Handoff { remote, action } => remote::handoff(remote, action),
        Command::Postmortem { remote, args } => remote::postmortem(remote, args),
        Command::Watch { remote, args } => remote::watch(remote, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COMMANDPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    // Panics inside yrs on hostile input are caught and answered with a close
    // code; the default hook would still print a multi-line dump. One log
    // line (JSON under --log-format json) instead.
    std::panic::set_hook(Box::new(|info| {
        if crate::protocol::panic_is_expected() {
            return;
        }
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%location, %message, "panic");
    }));
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data,
        secret: args.secret,
        public_url: args.public_url,
        max_message_bytes: args.max_message_bytes,
        room_idle_timeout: args.room_idle_timeout,
        compact_after_updates: args.compact_after_updates.max(1),
        compact_after_bytes: args.compact_after_bytes.max(1),
        room_buffer_messages: args.room_buffer.max(16),
        fanout_window_per_1000: args.fanout_window_per_1000,
        fanout_window_max: args.fanout_window_max,
        fanout_window_min: args.fanout_window_min,
        max_connections: args.max_connections.max(1),
        max_connections_per_token: args.max_connections_per_token.max(1),
        commands_per_minute: args.commands_per_minute,
        command_burst: args.command_burst,
        max_document_bytes: args.max_document_bytes,
        inbound_bytes_per_second: args.inbound_bytes_per_second,
        updates_per_second: args.updates_per_second,
        awareness_per_second: args.awareness_per_second,
        ping_interval: args
            .ping_interval
            .max(std::time::Duration::from_millis(100)),
        handshake_timeout: args.handshake_timeout,
        allowed_origins: args.allowed_origins,
        admin_token_ttl: args.admin_token_ttl,
        handoff_ttl: args.handoff_ttl,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::new(config.clone())?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: choose another address with --listen or COMMANDPOST_LISTEN",
                config.listen
            )
        })?;
        let address = listener.local_addr()?;
        let base = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"))
            .trim_end_matches('/')
            .to_owned();
        let ttl = config.admin_token_ttl;
        let admin = server.mint_startup_admin(ttl).await?;
        println!("Command Post is running.");
        println!("  Listening on:   http://{address}");
        println!("  Data directory: {}", config.data_dir.display());
        println!("  Admin URL (valid {}; keep it private):", spoken_duration(ttl));
        println!("    {base}/?token={admin}");
        println!("  Declare an incident from the command line:");
        println!(
            "    curl -X POST {base}/api/incidents -H 'Authorization: Bearer {admin}' -H 'Content-Type: application/json' -d '{{\"title\": \"Checkout is failing\"}}'"
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        tracing::info!(%address, "listening");
        let shutdown = CancellationToken::new();
        tokio::spawn(signal_shutdown(shutdown.clone()));
        server.serve(listener, shutdown).await
    })
}

/// A duration as people write it: "7 days", "1 day 12 hours", "90 seconds"
/// (the two largest units; humantime's "7days 2h" is for flags).
fn spoken_duration(duration: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut left = duration.as_secs();
    let mut parts = Vec::new();
    for (seconds, unit) in UNITS {
        let count = left / seconds;
        left %= seconds;
        if count > 0 && parts.len() < 2 {
            parts.push(format!(
                "{count} {unit}{}",
                if count == 1 { "" } else { "s" }
            ));
        } else if !parts.is_empty() {
            // Only adjacent units: "1 day 12 hours", never "1 day 5 seconds".
            break;
        }
    }
    if parts.is_empty() {
        "less than a second".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn signal_shutdown(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

fn restore(from: &std::path::Path, data: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let restored = crate::backup::restore(&bytes, data)?;
    eprintln!(
        "restored {} entries in {} trees into {}; start the server with --data {} (and the same secret: copy the old data directory's `secret` file or use COMMANDPOST_SECRET)",
        restored.entries,
        restored.trees,
        data.join("db").display(),
        data.display()
    );
    Ok(())
}

fn token(args: MintArgs) -> anyhow::Result<()> {
    let (Some(role), Some(name)) = (args.role, args.name) else {
        anyhow::bail!("--role and --name are required to mint a token");
    };
    let keys = TokenKeys::load(&args.data, args.secret.as_deref())?;
    let user = args.user.unwrap_or_else(|| {
        name.trim()
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("-")
    });
    anyhow::ensure!(!user.is_empty(), "--name (or --user) must not be empty");
    anyhow::ensure!(
        !commandpost_shared::limits::is_reserved_user_id(&user),
        "the user id `system` (in any spelling) is reserved for the server's timer; choose another --user"
    );
    if let (AccessRole::Admin, Some(incident)) = (role, &args.incident) {
        eprintln!(
            "note: an admin token limited to {incident} acts as an admin inside {incident} only; backups, the quarantine, the token registry and revocation need an admin token without --incident"
        );
    }
    let token = keys.mint(&user, name.trim(), role, args.incident, args.ttl);
    if let Ok(claims) = keys.verify(&token) {
        eprintln!(
            "token id {} (revoke it with `commandpost token revoke {}`)",
            claims.jti, claims.jti
        );
    }
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let cases = [
            (7 * 86_400, "7 days"),
            (86_400 + 12 * 3_600, "1 day 12 hours"),
            (86_400 + 5, "1 day"),
            (3_600, "1 hour"),
            (90, "1 minute 30 seconds"),
            (45, "45 seconds"),
            (0, "less than a second"),
        ];
        for (seconds, spoken) in cases {
            assert_eq!(spoken_duration(Duration::from_secs(seconds)), spoken);
        }
    }
}
