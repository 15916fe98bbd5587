//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text format).
//!
//! One registry per process, filled where things happen: connections and
//! deliveries in `ws`, rooms in `rooms`, flushes in `store`, events in
//! `sidecar`. Counters only count; rates are the scraper's job
//! (`rate(commandpost_updates_total[1m])` is updates per second).

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub event_type: &'static str,
}

pub struct Metrics {
    /// Open document WebSockets, by access (`editor`, `viewer`).
    pub connections: Family<RoleLabel, Gauge>,
    /// Documents loaded in memory.
    pub rooms_loaded: Gauge,
    /// HTTP request bodies being read now (each holds a slot of its token).
    pub request_bodies_reading: Gauge,
    /// Document updates applied (and stored).
    pub updates: Counter,
    /// Bytes written to document WebSockets.
    pub bytes_out: Counter,
    /// Connections that fell behind their room and were resynced with one
    /// merged update.
    pub lagging_resyncs: Counter,
    /// Document WebSockets closed, by reason (`peer`, `shutdown`,
    /// `malformed`, `refused`, `too_big`, `storage`, `stalled`, `revoked`, ...).
    pub disconnects: Family<ReasonLabel, Counter>,
    /// Time of one storage group commit (write and fsync), seconds.
    pub store_flush_seconds: Histogram,
    /// Sidecar events made durable, by event type.
    pub events: Family<TypeLabel, Counter>,
    /// Status updates that became overdue (announced by the timer).
    pub overdue_updates: Counter,
    /// Compactions skipped because the snapshot would not reload as the
    /// live document (the log is kept instead).
    pub compactions_refused: Counter,
    /// Compactions forced by a document reaching `--max-document-bytes`.
    pub limit_compactions: Counter,
    /// Cluster bus: updates published to other nodes, dropped because
    /// Redis was unreachable (the others read storage), received.
    pub bus_published: Counter,
    pub bus_dropped: Counter,
    pub bus_received: Counter,
    /// Times a room read what it lacked from storage (a gap, a reconnect,
    /// the periodic check).
    pub catch_ups: Counter,
    /// Times a document WebSocket stopped being read because it sent more
    /// than its budget (`--inbound-bytes-per-second`, `--updates-per-second`).
    pub inbound_throttles: Counter,
    /// Time document WebSockets spent unread for that reason, seconds.
    pub inbound_throttled_seconds: Counter<f64, AtomicU64>,
    /// Awareness entries dropped, by reason (`foreign`: setting another
    /// connection's state; `foreign_removal`: removing one).
    pub awareness_refused: Family<ReasonLabel, Counter>,
    /// Awareness changes held back by the relay rate and merged into a
    /// later relay.
    pub awareness_coalesced: Counter,
    registry: Registry,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let connections = Family::<RoleLabel, Gauge>::default();
        let rooms_loaded = Gauge::default();
        let request_bodies_reading = Gauge::default();
        let updates = Counter::default();
        let bytes_out = Counter::default();
        let lagging_resyncs = Counter::default();
        let disconnects = Family::<ReasonLabel, Counter>::default();
        // 50 µs to ~1.6 s.
        let store_flush_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let events = Family::<TypeLabel, Counter>::default();
        let overdue_updates = Counter::default();
        let compactions_refused = Counter::default();
        let limit_compactions = Counter::default();
        let bus_published = Counter::default();
        let bus_dropped = Counter::default();
        let bus_received = Counter::default();
        let catch_ups = Counter::default();
        let inbound_throttles = Counter::default();
        let inbound_throttled_seconds = Counter::<f64, AtomicU64>::default();
        let awareness_refused = Family::<ReasonLabel, Counter>::default();
        let awareness_coalesced = Counter::default();
        let mut registry = Registry::with_prefix("commandpost");
        registry.register(
            "connections",
            "Open document WebSockets by access role",
            connections.clone(),
        );
        registry.register(
            "rooms_loaded",
            "Documents loaded in memory",
            rooms_loaded.clone(),
        );
        registry.register(
            "request_bodies_reading",
            "HTTP request bodies being read now",
            request_bodies_reading.clone(),
        );
        registry.register(
            "updates",
            "Document updates applied and stored",
            updates.clone(),
        );
        registry.register(
            "bytes_out",
            "Bytes written to document WebSockets",
            bytes_out.clone(),
        );
        registry.register(
            "lagging_resyncs",
            "Connections that fell behind and were resynced with one merged update",
            lagging_resyncs.clone(),
        );
        registry.register(
            "disconnects",
            "Document WebSockets closed, by reason",
            disconnects.clone(),
        );
        registry.register(
            "store_flush_seconds",
            "Duration of one storage group commit (write and fsync)",
            store_flush_seconds.clone(),
        );
        registry.register(
            "events",
            "Sidecar events made durable, by type",
            events.clone(),
        );
        registry.register(
            "overdue_updates",
            "Status updates that became overdue",
            overdue_updates.clone(),
        );
        registry.register(
            "compactions_refused",
            "Compactions skipped because the snapshot would not reload as the live document",
            compactions_refused.clone(),
        );
        registry.register(
            "limit_compactions",
            "Compactions forced by a document reaching its size limit",
            limit_compactions.clone(),
        );
        registry.register(
            "bus_published",
            "Cluster bus: committed updates published to the other nodes",
            bus_published.clone(),
        );
        registry.register(
            "bus_dropped",
            "Cluster bus: updates not published because Redis was unreachable (the other nodes read them from storage)",
            bus_dropped.clone(),
        );
        registry.register(
            "bus_received",
            "Cluster bus: updates received from other nodes",
            bus_received.clone(),
        );
        registry.register(
            "catch_ups",
            "Times a room read the document updates it lacked from storage",
            catch_ups.clone(),
        );
        registry.register(
            "inbound_throttles",
            "Times a document WebSocket was not read because it sent more than its budget",
            inbound_throttles.clone(),
        );
        registry.register(
            "inbound_throttled_seconds",
            "Time document WebSockets spent unread because they sent more than their budget",
            inbound_throttled_seconds.clone(),
        );
        registry.register(
            "awareness_refused",
            "Awareness entries dropped, by reason",
            awareness_refused.clone(),
        );
        registry.register(
            "awareness_coalesced",
            "Awareness changes held back by the relay rate and merged into a later relay",
            awareness_coalesced.clone(),
        );
        Metrics {
            connections,
            rooms_loaded,
            request_bodies_reading,
            updates,
            bytes_out,
            lagging_resyncs,
            disconnects,
            store_flush_seconds,
            events,
            overdue_updates,
            compactions_refused,
            limit_compactions,
            bus_published,
            bus_dropped,
            bus_received,
            catch_ups,
            inbound_throttles,
            inbound_throttled_seconds,
            awareness_refused,
            awareness_coalesced,
            registry,
        }
    }

    pub fn connection_opened(&self, role: &'static str) {
        self.connections.get_or_create(&RoleLabel { role }).inc();
    }

    pub fn connection_closed(&self, role: &'static str, reason: &'static str) {
        self.connections.get_or_create(&RoleLabel { role }).dec();
        self.disconnects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn event(&self, kind: &'static str) {
        self.events
            .get_or_create(&TypeLabel { event_type: kind })
            .inc();
        if kind == "update_overdue" {
            self.overdue_updates.inc();
        }
    }

    /// The metrics in OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
