//! The `commandpost` command line: `serve`, `token`, `backup`, `restore`,
//! `completions`, and the incident subcommands of [`client::incident`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use commandpost_shared::{AccessRole, IncidentId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::client;
use crate::config::ServerConfig;
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
    Serve(Box<ServeArgs>),
    /// Print a signed access token for a user (`token revoke ID` revokes one).
    Token(TokenArgs),
    /// Download a consistent backup of a running server's database.
    #[command(after_help = "Example:\n  commandpost backup --out commandpost-$(date +%F).backup")]
    Backup {
        #[command(flatten)]
        remote: client::Remote,
        /// Where to write the backup file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Restore a backup file into a new, empty data directory, or into an
    /// empty PostgreSQL database with --store.
    #[command(
        group(clap::ArgGroup::new("target").required(true).args(["data", "store"])),
        after_help = "Example:\n  commandpost restore --from backup.cpb --data ./commandpost-data\n  commandpost restore --from backup.cpb --store postgres://commandpost@db.internal/commandpost"
    )]
    Restore {
        /// The backup file (from `commandpost backup`).
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create (it must not hold a database yet).
        #[arg(long)]
        data: Option<PathBuf>,
        /// A store to restore into instead: a `postgres://` URL (or
        /// `sled:DIR`); it must be empty.
        #[arg(long, value_name = "STORE", value_parser = crate::config::StoreLocation::parse)]
        store: Option<crate::config::StoreLocation>,
    },
    /// Work on a store directly (the servers using it must be stopped).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    #[command(flatten)]
    Incident(client::IncidentCommand),
    /// Print a shell completion script: bash, zsh or fish.
    #[command(
        after_help = "Example:\n  commandpost completions bash > ~/.local/share/bash-completion/completions/commandpost\n  commandpost completions zsh > \"${fpath[1]}/_commandpost\"\n  commandpost completions fish > ~/.config/fish/completions/commandpost.fish"
    )]
    Completions {
        /// The shell.
        shell: CompletionShell,
    },
}

#[derive(Subcommand, Debug)]
enum StoreAction {
    /// Copy everything in one store into a new, empty one (for example from
    /// the embedded sled store to PostgreSQL), then read the copy back and
    /// check it: the count of every kind of record and a SHA-256 of every
    /// document and event log. Refuses a target that holds anything. Stop
    /// the servers using the source first (sled refuses to open while one
    /// runs). The token secret is not in the store: keep `<data>/secret`, or
    /// pass its contents as COMMANDPOST_SECRET to servers on PostgreSQL.
    #[command(
        after_help = "Example:\n  commandpost store copy --from sled:./commandpost-data --to 'postgres://commandpost@db.internal/commandpost?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem'"
    )]
    Copy {
        /// The store to copy: `sled:DIR` (a data directory) or a
        /// `postgres://` URL.
        #[arg(long, value_name = "STORE", value_parser = crate::config::StoreLocation::parse)]
        from: crate::config::StoreLocation,
        /// The new, empty store to copy into, in the same form.
        #[arg(long, value_name = "STORE", value_parser = crate::config::StoreLocation::parse)]
        to: crate::config::StoreLocation,
    },
}

/// The shells `commandpost completions` writes for.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    config: ServerConfig,
    /// Log format on stderr.
    #[arg(long, env = "COMMANDPOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    #[command(
        after_help = "Example:\n  commandpost token revoke 0f3c2a9d8e7b4c1a9f2e3d4c5b6a7980\n  commandpost token revoke --minted-by alice"
    )]
    Revoke {
        /// The token id.
        id: Option<String>,
        /// Revoke every token this user id minted (share links), and what
        /// was minted from those, instead of one token.
        #[arg(long, value_name = "SUB")]
        minted_by: Option<String>,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// List the tokens a running server minted or has seen in use (the
    /// token registry): id, subject, role, scope, expiry, who minted it.
    /// Needs an admin token for every incident.
    #[command(after_help = "Example:\n  commandpost token list --minted-by alice")]
    List {
        /// Only the tokens this user id minted.
        #[arg(long, value_name = "SUB")]
        minted_by: Option<String>,
        #[command(flatten)]
        remote: client::Remote,
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
        Command::Serve(args) => serve(*args),
        Command::Token(TokenArgs {
            action:
                Some(TokenAction::Revoke {
                    id,
                    minted_by,
                    remote,
                }),
            ..
        }) => match (id, minted_by) {
            (_, Some(subject)) => client::revoke_minted_by(remote, &subject),
            (Some(id), None) => client::revoke(remote, &id),
            (None, None) => Err(anyhow::anyhow!(
                "name the token id to revoke, or --minted-by SUB"
            )),
        },
        Command::Token(TokenArgs {
            action: Some(TokenAction::List { minted_by, remote }),
            ..
        }) => client::list_tokens(remote, minted_by.as_deref()),
        Command::Token(TokenArgs { mint, .. }) => token(mint),
        Command::Backup { remote, out } => client::backup(remote, &out),
        Command::Restore {
            from,
            data: Some(data),
            ..
        } => restore(&from, &data),
        Command::Restore {
            from,
            store: Some(store),
            ..
        } => restore_into_store(&from, &store),
        Command::Restore { .. } => Err(anyhow::anyhow!("name --data DIR or --store STORE")),
        Command::Store {
            action: StoreAction::Copy { from, to },
        } => store_copy(&from, &to),
        Command::Incident(command) => client::incident::run(command),
        Command::Completions { shell } => {
            completions(shell);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the completion script for `shell` on standard output.
fn completions(shell: CompletionShell) {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "commandpost",
        &mut std::io::stdout(),
    );
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
    let config = args.config;
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
        match config.store_location() {
            crate::config::StoreLocation::Sled(dir) => {
                println!("  Data directory: {}", dir.display());
            }
            location => println!("  Store:          {location}"),
        }
        println!(
            "  Admin URL (valid {}; keep it private):",
            spoken_duration(ttl)
        );
        println!("    {base}/?token={admin}");
        println!("  Declare an incident from the command line:");
        println!("    export COMMANDPOST_SERVER={base} COMMANDPOST_TOKEN={admin}");
        println!("    commandpost declare --title 'Checkout is failing'");
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

fn store_copy(
    from: &crate::config::StoreLocation,
    to: &crate::config::StoreLocation,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        from.to_string() != to.to_string(),
        "--from and --to name the same store"
    );
    // Pool size and timeouts as `serve` has them by default.
    let config = crate::config::ServerConfig::from_args([])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        eprintln!("opening {from}");
        let source = crate::server::open_store(from, &config)?;
        eprintln!("opening {to}");
        let target = crate::server::open_store(to, &config)?;
        let say = |step: &str| eprintln!("  {step}");
        let copied = crate::backup::copy(&source, &target, &say).await;
        source.close();
        target.close();
        let copied = copied?;
        eprintln!("copied {copied}");
        eprintln!(
            "start the servers with --store {to} (and the same token secret: with PostgreSQL, COMMANDPOST_SECRET or COMMANDPOST_SECRET_FILE)"
        );
        Ok(())
    })
}

fn restore_into_store(
    from: &std::path::Path,
    store: &crate::config::StoreLocation,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let config = crate::config::ServerConfig::from_args([])?;
    let target = crate::server::open_store(store, &config)?;
    let restored = crate::backup::restore_into(&target, &bytes);
    target.close();
    eprintln!(
        "restored {} into {store}; start the servers with --store {store} and the same token secret (COMMANDPOST_SECRET or COMMANDPOST_SECRET_FILE)",
        restored?
    );
    Ok(())
}

fn restore(from: &std::path::Path, data: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let restored = crate::backup::restore(&bytes, data)?;
    eprintln!(
        "restored {restored} into {}; start the server with --data {} (and the same secret: copy the old data directory's `secret` file or use COMMANDPOST_SECRET)",
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
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every subcommand that talks to a server answers `--help` with an
    /// example line.
    #[test]
    fn every_remote_subcommand_has_an_example() {
        fn walk(command: &clap::Command, path: String, missing: &mut Vec<String>) {
            let remote = command.get_arguments().any(|arg| arg.get_id() == "server");
            if remote {
                let help = command
                    .get_after_help()
                    .map(|help| help.to_string())
                    .unwrap_or_default();
                if !help.starts_with("Example:\n  commandpost ") {
                    missing.push(path.clone());
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut cli = Cli::command();
        cli.build();
        walk(&cli, "commandpost".into(), &mut missing);
        assert!(missing.is_empty(), "no example in --help: {missing:?}");
    }

    #[test]
    fn every_sidecar_command_has_a_subcommand() {
        // The HTTP command names and the subcommand that sends each.
        let covered = [
            ("set_severity", "severity"),
            ("assign_role", "role assign"),
            ("add_responder", "responder add"),
            ("remove_responder", "responder remove"),
            ("offer_handoff", "handoff offer"),
            ("accept_handoff", "handoff accept"),
            ("decline_handoff", "handoff decline"),
            ("cancel_handoff", "handoff cancel"),
            ("assume_role", "role assume"),
            ("force_assign_role", "role force-assign"),
            ("set_next_commander", "role next-commander"),
            ("pin_status", "pin"),
            ("set_status", "mitigate"),
            ("reopen", "reopen"),
            ("add_exit_criterion", "criterion add"),
            ("set_exit_criterion", "criterion met"),
            ("record_change", "change record"),
            ("mark_change_reverted", "change reverted"),
            ("waive_change", "change waive"),
            ("post_note", "note"),
            ("set_impact_start", "impact-start"),
        ];
        let cli = Cli::command();
        for name in crate::sidecar_api::COMMAND_NAMES {
            let Some((_, path)) = covered.iter().find(|(command, _)| command == name) else {
                panic!("the sidecar command `{name}` has no subcommand here");
            };
            let mut command = &cli;
            for word in path.split(' ') {
                command = command
                    .find_subcommand(word)
                    .unwrap_or_else(|| panic!("no subcommand `{path}`"));
            }
        }
    }

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
