//! Server assembly: opens storage, builds the router, serves a listener until
//! the shutdown token fires, then closes connections and flushes storage.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::auth::TokenKeys;
use crate::config::ServerConfig;
use crate::rooms::Rooms;
use crate::sidecar::{Sidecars, SystemClock};
use crate::store::Store;
use commandpost_shared::machine::Rules;

/// How long shutdown waits for connections to close before flushing anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A configured server, ready to serve a listener.
pub struct Server {
    state: AppState,
}

impl Server {
    /// Opens the data directory (creating it) and the store.
    pub fn new(config: ServerConfig) -> anyhow::Result<Self> {
        let keys = TokenKeys::load(&config.data_dir, config.secret.as_deref())?;
        let db_dir = config.data_dir.join("db");
        let store = Store::open(&db_dir).with_context(|| {
            format!(
                "cannot open the store in {} (is another commandpost using this --data directory?)",
                db_dir.display()
            )
        })?;
        let rooms = Rooms::new(store.clone(), config.clone());
        let handoff_ttl =
            chrono::Duration::from_std(config.handoff_ttl).context("--handoff-ttl is too long")?;
        anyhow::ensure!(
            handoff_ttl > chrono::Duration::zero(),
            "--handoff-ttl must be longer than zero"
        );
        let sidecars = Sidecars::new(store.clone(), Arc::new(SystemClock), Rules { handoff_ttl });
        Ok(Self {
            state: AppState {
                store,
                rooms,
                keys,
                config: Arc::new(config),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                sidecars,
            },
        })
    }

    /// The token keys, for minting the start-up admin token.
    pub fn keys(&self) -> &TokenKeys {
        &self.state.keys
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
        // Without TCP_NODELAY, Nagle's algorithm holds a small write back
        // until the previous one is acknowledged, and with the peer's
        // delayed ACKs a keystroke can wait 40 ms on its way to a viewer.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("server failed")?;
        state.shutdown.cancel();
        let _ = timer.await;
        state.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
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
