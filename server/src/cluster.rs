//! The bus between the nodes of a cluster: Redis Pub/Sub.
//!
//! Several Command Post nodes share one PostgreSQL database (the durable
//! store, which numbers each document's updates gap-free in commit order)
//! and one Redis (this bus). Once an update is committed, the node that
//! accepted it publishes it with its seq on the incident's channel; every
//! node receives every incident's channel (one pattern subscription) and
//! hands what it gets to its rooms, which apply an update when it is the
//! next one they lack and otherwise read what they lack from PostgreSQL.
//!
//! Redis never holds the only copy of anything: a message lost (Redis
//! restarted, a node's connection dropped, a slow subscriber) is found in
//! PostgreSQL, by the room noticing a gap or by the periodic catch-up. Pub/Sub,
//! not Redis Streams: the ordered, resumable log already exists in
//! PostgreSQL, and a stream would be a second, trimmed copy of it that needs
//! one blocking read re-issued whenever the set of loaded rooms changes.
//!
//! The client is `fred`: tokio-native, reconnects by itself with a backoff,
//! re-subscribes after a reconnect ([`SubscriberClient::manage_subscriptions`]),
//! and does TLS with rustls (`rediss://`). Publishing and subscribing use
//! two connections: a connection in subscribed mode takes no other command.

use std::sync::Arc;
use std::time::Duration;

use commandpost_shared::IncidentId;
use fred::clients::SubscriberClient;
use fred::prelude::{
    ClientLike, Config, EventInterface, PubsubInterface, ReconnectPolicy, TcpConfig,
};
use tokio::sync::mpsc;

/// How long a publish may wait for Redis before it is dropped (receivers
/// then find the update in PostgreSQL).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// What travels on the bus, one channel pattern each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A committed document update (v1) and its seq.
    Update,
    /// Committed sidecar events (a JSON array) and the seq of the first.
    Events,
    /// Awareness messages (y-protocols frames, each length-prefixed) of
    /// this node's editors, coalesced per room; the seq is unused (0).
    Awareness,
    /// This node's connection counts for a document (editors, viewers:
    /// two big-endian u32); the seq is unused (0).
    Presence,
    /// A token revoked on this node: its id (UTF-8). The incident is
    /// unused (0), as is the seq.
    Revocation,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Update,
        Kind::Events,
        Kind::Awareness,
        Kind::Presence,
        Kind::Revocation,
    ];

    fn channel(self) -> &'static str {
        match self {
            Kind::Update => "doc",
            Kind::Events => "ev",
            Kind::Awareness => "aw",
            Kind::Presence => "pr",
            Kind::Revocation => "rv",
        }
    }
}

/// What the bus hands to this node.
#[derive(Debug)]
pub enum Delivery {
    /// Something another node published about `incident`.
    Message {
        kind: Kind,
        incident: IncidentId,
        /// The node that published it (to tell nodes apart, e.g. for
        /// awareness).
        node: [u8; 16],
        seq: u64,
        payload: Vec<u8>,
    },
    /// The subscription was (re)established: anything published meanwhile
    /// was missed, and every room should catch up from storage.
    Resubscribed,
}

/// This node's connection to the bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

struct BusInner {
    /// Random per process start: a node ignores its own messages.
    node: [u8; 16],
    publisher: fred::clients::Client,
    subscriber: SubscriberClient,
    /// Channel prefix, e.g. `commandpost:`.
    prefix: String,
    outgoing: mpsc::UnboundedSender<(String, Vec<u8>)>,
}

impl Bus {
    /// Connects to the Redis at `url` (`redis://` or `rediss://`, with
    /// `user:password@` for `AUTH`) in the background and returns at once:
    /// a node whose Redis is down still serves (rooms catch up from storage
    /// more often meanwhile, see [`Bus::connected`]). Deliveries arrive on
    /// the returned receiver.
    /// With `rediss://`, Redis's certificate is checked against the
    /// system's certificate authorities, or those in the PEM file `ca`.
    pub fn start(
        url: &str,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<Delivery>)> {
        let mut config = Config::from_url(url).map_err(|error| {
            anyhow::anyhow!(
                "--redis {}: {error} (expected redis://[user:password@]host:port[/db] or rediss://...)",
                redacted(url)
            )
        })?;
        if let Some(ca) = ca {
            anyhow::ensure!(
                config.tls.is_some(),
                "--redis-ca is for TLS: use a rediss:// URL with it"
            );
            config.tls = Some(trusting(ca)?.into());
        }
        let build = |config: Config| {
            let mut builder = fred::types::Builder::from_config(config);
            builder
                .with_connection_config(|connection| {
                    connection.connection_timeout = Duration::from_secs(2);
                    connection.internal_command_timeout = Duration::from_secs(2);
                    connection.tcp = TcpConfig {
                        nodelay: Some(true),
                        ..TcpConfig::default()
                    };
                })
                .with_performance_config(|performance| {
                    performance.default_command_timeout = PUBLISH_TIMEOUT;
                    performance.broadcast_channel_capacity = 4096;
                })
                // Forever, 50 ms to 1 s apart: Redis coming back is noticed
                // within a second.
                .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
            builder
        };
        let publisher = build(config.clone()).build()?;
        let subscriber = build(config).build_subscriber_client()?;
        let node = *uuid::Uuid::new_v4().as_bytes();
        let (outgoing, queue) = mpsc::unbounded_channel();
        let (deliver, deliveries) = mpsc::unbounded_channel();
        let bus = Self {
            inner: Arc::new(BusInner {
                node,
                publisher,
                subscriber,
                prefix: "commandpost:".to_owned(),
                outgoing,
            }),
        };
        bus.inner.publisher.connect();
        bus.inner.subscriber.connect();
        bus.spawn_publisher(queue);
        bus.spawn_subscriber(deliver);
        tracing::info!(redis = %redacted(url), "cluster bus: connecting to Redis");
        Ok((bus, deliveries))
    }

    /// Whether both connections to Redis are up. While they are not, what
    /// other nodes publish does not arrive, and rooms catch up from storage
    /// every [`crate::rooms`] poll.
    pub fn connected(&self) -> bool {
        self.inner.publisher.is_connected() && self.inner.subscriber.is_connected()
    }

    /// Publishes a committed update of `incident` under `seq`. Never
    /// blocks; dropped when Redis is down (the others read storage).
    pub fn publish_update(&self, incident: &IncidentId, seq: u64, update: &[u8]) {
        self.publish(Kind::Update, incident, seq, update);
    }

    /// Publishes `payload` of `kind` about `incident`, in order with this
    /// node's other messages. Never blocks; dropped when Redis is down.
    pub fn publish(&self, kind: Kind, incident: &IncidentId, seq: u64, payload: &[u8]) {
        let mut message = Vec::with_capacity(24 + payload.len());
        message.extend_from_slice(&self.inner.node);
        message.extend_from_slice(&seq.to_be_bytes());
        message.extend_from_slice(payload);
        let channel = format!(
            "{}{}:{}",
            self.inner.prefix,
            kind.channel(),
            incident.number()
        );
        let _ = self.inner.outgoing.send((channel, message));
    }

    /// This node's id on the bus.
    pub fn node(&self) -> [u8; 16] {
        self.inner.node
    }

    /// Publishes in order, one at a time, from one task.
    fn spawn_publisher(&self, mut queue: mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
        let bus = self.clone();
        tokio::spawn(async move {
            while let Some((channel, payload)) = queue.recv().await {
                if !bus.inner.publisher.is_connected() {
                    crate::metrics::METRICS.bus_dropped.inc();
                    continue;
                }
                let published: Result<i64, _> = bus
                    .inner
                    .publisher
                    .publish(channel, bytes::Bytes::from(payload))
                    .await;
                match published {
                    Ok(_) => {
                        crate::metrics::METRICS.bus_published.inc();
                    }
                    Err(error) => {
                        crate::metrics::METRICS.bus_dropped.inc();
                        tracing::debug!(%error, "cluster bus: a publish failed; other nodes read storage");
                    }
                }
            }
        });
    }

    fn spawn_subscriber(&self, deliver: mpsc::UnboundedSender<Delivery>) {
        let bus = self.clone();
        let subscriber = self.inner.subscriber.clone();
        let patterns: Vec<String> = Kind::ALL
            .iter()
            .map(|kind| format!("{}{}:*", self.inner.prefix, kind.channel()))
            .collect();
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        let mut errors = subscriber.error_rx();
        // Re-subscribes after every reconnect.
        let _resubscriber = subscriber.manage_subscriptions();
        tokio::spawn({
            let subscriber = subscriber.clone();
            let deliver = deliver.clone();
            async move {
                // The first subscription (retried until Redis answers);
                // later ones are the resubscriber's. Said once, then every
                // 30 s while it fails.
                let mut said: Option<std::time::Instant> = None;
                loop {
                    match subscriber.psubscribe(patterns.clone()).await {
                        Ok(()) => {
                            tracing::info!("cluster bus: subscribed");
                            let _ = deliver.send(Delivery::Resubscribed);
                            break;
                        }
                        Err(error) => {
                            if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                                said = Some(std::time::Instant::now());
                                tracing::warn!(%error, "cluster bus: cannot reach Redis; other nodes' edits arrive through storage meanwhile");
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                loop {
                    tokio::select! {
                        reconnected = reconnects.recv() => match reconnected {
                            Ok(_) => {
                                tracing::info!("cluster bus: reconnected to Redis");
                                let _ = deliver.send(Delivery::Resubscribed);
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => break,
                        },
                        error = errors.recv() => match error {
                            Ok((error, _)) => tracing::warn!(%error, "cluster bus: Redis connection error; rooms read storage until it is back"),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => break,
                        },
                    }
                }
            }
        });
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        if let Some(delivery) = bus.decode(&message.channel, message.value) {
                            crate::metrics::METRICS.bus_received.inc();
                            if deliver.send(delivery).is_err() {
                                break;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        // Whatever was missed is in storage.
                        tracing::warn!(
                            missed,
                            "cluster bus: fell behind; catching up from storage"
                        );
                        if deliver.send(Delivery::Resubscribed).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
    }

    /// A message of another node, or `None` (this node's own, or not ours).
    fn decode(&self, channel: &str, value: fred::types::Value) -> Option<Delivery> {
        let (kind_name, number) = channel.strip_prefix(&self.inner.prefix)?.split_once(':')?;
        let kind = *Kind::ALL.iter().find(|kind| kind.channel() == kind_name)?;
        let number: u64 = number.parse().ok()?;
        let message = value.as_bytes()?;
        if message.len() < 24 || message[..16] == self.inner.node {
            return None;
        }
        Some(Delivery::Message {
            kind,
            incident: IncidentId::new(number),
            node: message[..16].try_into().ok()?,
            seq: u64::from_be_bytes(message[16..24].try_into().ok()?),
            payload: message[24..].to_vec(),
        })
    }
}

/// A TLS client configuration trusting the certificate authorities in the
/// PEM file `ca` (and only those).
fn trusting(ca: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)
        .map_err(|error| anyhow::anyhow!("--redis-ca {}: {error}", ca.display()))?
    {
        let certificate =
            certificate.map_err(|error| anyhow::anyhow!("--redis-ca {}: {error}", ca.display()))?;
        roots
            .add(certificate)
            .map_err(|error| anyhow::anyhow!("--redis-ca {}: {error}", ca.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "--redis-ca {}: no certificate in it (expected PEM)",
        ca.display()
    );
    // ring, as for PostgreSQL (see postgres_backend.rs: aws-lc-rs's
    // licence); deprecated only for its lack of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `url` without its password, for logs and errors.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
