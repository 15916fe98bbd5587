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
    /// Print a signed access token for a user.
    Token(TokenArgs),
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
struct TokenArgs {
    /// Data directory of the server whose secret signs the token.
    #[arg(long, env = "COMMANDPOST_DATA", default_value = "commandpost-data")]
    data: PathBuf,
    /// Access role: admin, responder or viewer.
    #[arg(long, value_parser = parse_role)]
    role: AccessRole,
    /// Limit the token to one incident (INC-<n>); without it, every incident.
    #[arg(long)]
    incident: Option<IncidentId>,
    /// Display name shown to other responders.
    #[arg(long)]
    name: String,
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
        Command::Token(args) => token(args),
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
        let admin = server.keys().mint("admin", "Admin", AccessRole::Admin, None, ttl);
        println!("Command Post is running.");
        println!("  Listening on:   http://{address}");
        println!("  Data directory: {}", config.data_dir.display());
        println!("  Admin URL (valid {}; keep it private):", humantime::format_duration(ttl));
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

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let keys = TokenKeys::load(&args.data, args.secret.as_deref())?;
    let user = args.user.unwrap_or_else(|| {
        args.name
            .trim()
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("-")
    });
    anyhow::ensure!(!user.is_empty(), "--name (or --user) must not be empty");
    anyhow::ensure!(
        user != commandpost_shared::incident::SYSTEM_USER_ID,
        "the user id `system` is reserved for the server's timer; choose another --user"
    );
    println!(
        "{}",
        keys.mint(&user, args.name.trim(), args.role, args.incident, args.ttl)
    );
    Ok(())
}
