//! Server assembly: opens storage, builds the router, serves a listener until
//! the shutdown token fires, then closes connections and flushes storage.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::auth::TokenKeys;
use crate::config::{ServerConfig, StoreLocation};
use crate::http::AppState;
use crate::rooms::Rooms;
use crate::sidecar::{Sidecars, SystemClock};
use crate::store::{PoolOptions, PostgresBackend, Store};
use commandpost_shared::machine::Rules;

/// Opens the store at `location`.
pub fn open_store(location: &StoreLocation, config: &ServerConfig) -> anyhow::Result<Store> {
    match location {
        StoreLocation::Sled(dir) => {
            let db_dir = dir.join("db");
            Store::open(&db_dir).with_context(|| {
                format!(
                    "cannot open the store in {} (is another commandpost using this --data directory?)",
                    db_dir.display()
                )
            })
        }
        StoreLocation::Postgres(url) => {
            let backend = PostgresBackend::open(
                url,
                PoolOptions {
                    size: config.store_pool_size,
                    connection_timeout: config.store_timeout,
                },
            )
            .with_context(|| format!("cannot open the PostgreSQL store {location}"))?;
            Ok(Store::with_backend(Arc::new(backend))?)
        }
    }
}

/// How long shutdown waits for connections to close before flushing anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A configured server, ready to serve a listener.
pub struct Server {
    state: AppState,
}

impl Server {
    /// Opens the store (a data directory is created) and loads the token
    /// secret.
    pub fn new(config: ServerConfig) -> anyhow::Result<Self> {
        let location = config.store_location();
        let data_dir = match &location {
            StoreLocation::Sled(dir) => Some(dir.as_path()),
            StoreLocation::Postgres(_) => None,
        };
        let keys = TokenKeys::load_configured(
            data_dir,
            config.secret.as_deref(),
            config.secret_file.as_deref(),
        )?;
        let store = open_store(&location, &config)?;
        let rooms = Rooms::new(store.clone(), config.clone());
        let shutdown = CancellationToken::new();
        let handoff_ttl =
            chrono::Duration::from_std(config.handoff_ttl).context("--handoff-ttl is too long")?;
        anyhow::ensure!(
            handoff_ttl > chrono::Duration::zero(),
            "--handoff-ttl must be longer than zero"
        );
        let sidecars = Sidecars::new(store.clone(), Arc::new(SystemClock), Rules { handoff_ttl });
        let revocations = crate::auth::Revocations::new(
            store
                .revocations()
                .context("cannot read the revoked tokens")?
                .into_iter()
                .map(|revocation| revocation.jti),
        );
        let tokens = crate::auth::TokenRegistry::load(store.clone())
            .context("cannot read the token registry")?;
        if let Some(url) = &config.redis {
            anyhow::ensure!(
                store.numbers_updates(),
                "--redis makes this node one of a cluster, whose nodes share one PostgreSQL \
                 database: add --store postgres://... (sled is one process's store)"
            );
            let (bus, deliveries) = crate::cluster::Bus::start(url, config.redis_ca.as_deref())?;
            rooms.join_cluster(bus.clone(), shutdown.clone());
            sidecars.join_cluster(bus.clone(), shutdown.clone());
            revocations.join_cluster(bus);
            Cluster {
                rooms: rooms.clone(),
                sidecars: sidecars.clone(),
                revocations: revocations.clone(),
                tokens: tokens.clone(),
                store: store.clone(),
            }
            .run(deliveries, shutdown.clone());
        }
        crate::doc_sync::keep_exit_criteria_in_step(&sidecars, &rooms);
        Ok(Self {
            state: AppState {
                tokens,
                body_reads: crate::limits::BodyReads::new(crate::limits::BODIES_PER_TOKEN),
                store,
                rooms,
                keys,
                shutdown,
                tasks: TaskTracker::new(),
                sidecars,
                revocations,
                connection_limits: crate::limits::ConnectionLimits::new(
                    fit_open_files_limit(config.max_connections),
                    config.max_connections_per_token,
                ),
                command_limiter: Arc::new(crate::limits::CommandLimiter::new(
                    config.commands_per_minute,
                    config.command_burst,
                )),
                config: Arc::new(config),
            },
        })
    }

    /// The token keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.state.keys
    }

    /// Mints the admin token printed at start-up, valid for `ttl`, and
    /// records it in the token registry.
    pub async fn mint_startup_admin(&self, ttl: Duration) -> anyhow::Result<String> {
        let claims = crate::auth::new_claims(
            "admin",
            "Admin",
            commandpost_shared::AccessRole::Admin,
            None,
            ttl,
        );
        self.state
            .tokens
            .record_minted(&claims, commandpost_shared::TokenOrigin::StartUp, None)
            .await
            .context("cannot record the start-up admin token")?;
        Ok(self.state.keys.sign(&claims))
    }

    pub fn config(&self) -> &ServerConfig {
        &self.state.config
    }

    /// Serves until `shutdown` is cancelled; then closes every WebSocket with
    /// 1012 (service restart), waits for in-flight writes, and flushes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let state = self.state;
        // Re-arm every incident's deadlines (offer expiry, overdue status
        // updates) from durable state, then run the timer.
        let incidents: Vec<_> = state
            .store
            .list_incidents()?
            .into_iter()
            .map(|record| record.id)
            .collect();
        state.sidecars.arm_all(&incidents).await?;
        let timer = tokio::spawn(state.sidecars.clone().run_timer(state.shutdown.clone()));
        let app = api::router(state.clone());
        let connections_shutdown = state.shutdown.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            connections_shutdown.cancel();
        });
        accept_loop(
            listener,
            app,
            state.config.handshake_timeout,
            shutdown.clone(),
        )
        .await;
        state.shutdown.cancel();
        let _ = timer.await;
        state.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
        }
        // Snapshots instead of logs: the next start replays nothing.
        match state.rooms.compact_all() {
            Ok(compacted) => tracing::info!(documents = compacted, "compacted document logs"),
            Err(error) => {
                tracing::error!(%error, "cannot compact document logs (the logs are intact)")
            }
        }
        let barrier = state
            .store
            .barrier()
            .context("storage writer stopped early")?;
        barrier.await.context("storage writer stopped early")??;
        let store = state.store.clone();
        tokio::task::spawn_blocking(move || store.flush_blocking()).await??;
        tracing::info!("storage flushed; shut down cleanly");
        Ok(())
    }
}

/// The most one HTTP connection buffers, reading (request headers) or
/// writing (response bodies such as event streams).
pub const CONNECTION_BUFFER_BYTES: usize = 32 * 1024;

/// File descriptors kept free beside the counted connections: storage
/// files, the listener, health checks, metrics scrapes and plain API calls.
pub const FD_HEADROOM: u64 = 256;

/// The number of WebSockets and event streams the server can really hold:
/// `wanted` (`--max-connections`), unless the open-files limit (`ulimit -n`)
/// cannot hold that many plus [`FD_HEADROOM`]. The soft limit is first
/// raised towards the hard one; if that is not enough, the server warns and
/// accepts fewer connections, so it refuses them with 503 instead of
/// failing to accept anything (health checks included) once the process
/// runs out of descriptors.
fn fit_open_files_limit(wanted: usize) -> usize {
    let wanted_fds = (wanted as u64).saturating_add(FD_HEADROOM);
    let soft = match rlimit::increase_nofile_limit(wanted_fds) {
        Ok(soft) => soft,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-files limit; keeping --max-connections as given");
            return wanted;
        }
    };
    if soft >= wanted_fds {
        return wanted;
    }
    let effective = usize::try_from(soft.saturating_sub(FD_HEADROOM))
        .unwrap_or(wanted)
        .max(1);
    tracing::warn!(
        open_files_limit = soft,
        max_connections = wanted,
        effective,
        "the open-files limit cannot hold --max-connections plus {FD_HEADROOM} descriptors for storage and health checks: accepting at most {effective} connections; raise it (`ulimit -n {wanted_fds}`, or LimitNOFILE={wanted_fds} in a systemd unit) or lower --max-connections"
    );
    effective
}

/// Accepts connections until `shutdown`, serving each with hyper (HTTP/1.1
/// with upgrades, for WebSockets), then waits (up to the grace period) for
/// in-flight HTTP requests to finish.
///
/// Written out rather than `axum::serve` for two settings it does not
/// expose: TCP_NODELAY (without it, Nagle's algorithm holds a small write
/// back until the previous one is acknowledged, and with the peer's delayed
/// ACKs a keystroke can wait 40 ms on its way to a viewer), and a timeout on
/// reading the request headers, so a client that connects and sends nothing
/// (or trickles bytes) cannot hold a connection open.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        // hyper buffers up to ~400 KiB per connection by default; a client
        // that stops reading an event stream would pin that much each.
        // (and, with vectored writes, up to 16 queued chunks of any size:
        // flattening makes the byte bound the only one).
        .max_buf_size(CONNECTION_BUFFER_BYTES)
        .writev(false);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (tcp, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, usually: say so and breathe.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's header timeout starts with the first byte: a client
            // that connects and sends nothing is dropped here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(handshake_timeout, tcp.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return,
                Err(_) => {
                    tracing::debug!("closed a connection that sent nothing");
                    return;
                }
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests did not finish within {SHUTDOWN_GRACE:?}");
    }
}

/// What a node of a cluster does with what the other nodes publish, and
/// its checks of storage for what the bus may have lost.
struct Cluster {
    rooms: Rooms,
    sidecars: Sidecars,
    revocations: crate::auth::Revocations,
    tokens: crate::auth::TokenRegistry,
    store: crate::store::Store,
}

/// How often a node of a cluster reads the revocations from storage, for
/// one the bus lost (revoked sockets close everywhere within about this).
const REVOCATIONS_EVERY: Duration = Duration::from_secs(1);

impl Cluster {
    fn run(
        self,
        mut deliveries: tokio::sync::mpsc::UnboundedReceiver<crate::cluster::Delivery>,
        shutdown: CancellationToken,
    ) {
        let cluster = Arc::new(self);
        // Storage is read on a task of its own: a slow database (up to
        // --store-timeout) never holds up what the bus delivers.
        tokio::spawn({
            let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
            async move {
                let mut revocations_check = tokio::time::interval(REVOCATIONS_EVERY);
                revocations_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = revocations_check.tick() => cluster.read_revocations().await,
                    }
                }
            }
        });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    delivery = deliveries.recv() => {
                        let Some(delivery) = delivery else { return };
                        cluster.deliver(delivery);
                    }
                }
            }
        });
    }

    fn deliver(&self, delivery: crate::cluster::Delivery) {
        use crate::cluster::{Delivery, Kind};
        match &delivery {
            Delivery::Message {
                kind: Kind::Revocation,
                payload,
                ..
            } => {
                if let Ok(jti) = String::from_utf8(payload.clone()) {
                    let (revocations, tokens) = (self.revocations.clone(), self.tokens.clone());
                    tokio::spawn(async move {
                        let descendants = tokens.descendants(&jti).await.unwrap_or_default();
                        revocations.add_known(jti, descendants);
                    });
                }
            }
            _ => {
                self.rooms.deliver(&delivery);
                self.sidecars.deliver(&delivery);
            }
        }
    }

    /// Adds the revocations in storage this node does not know yet.
    async fn read_revocations(&self) {
        let stored = match self.store.read(|store| store.revocations()).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::debug!(%error, "cannot read the revocations now; the next check tries again");
                return;
            }
        };
        for revocation in stored {
            if !self.revocations.is_revoked(&revocation.jti) {
                let descendants = self
                    .tokens
                    .descendants(&revocation.jti)
                    .await
                    .unwrap_or_default();
                tracing::info!(jti = %revocation.jti, "revocation made on another node");
                self.revocations.add_known(revocation.jti, descendants);
            }
        }
    }
}
