//! The PostgreSQL backend: the same records as the sled backend, in tables.
//!
//! Schema (version [`SCHEMA_VERSION`]; [`MIGRATIONS`] creates it):
//! - `incident_counter`: one row, `last_issued`, the last incident number
//!   issued; absent until the first incident.
//! - `incidents (incident, record)`: [`IncidentRecord`](super::IncidentRecord) JSON.
//! - `doc_snapshots (incident, upto, snapshot)`: one per incident, covering
//!   every log entry with `seq <= upto`.
//! - `doc_updates (incident, seq, body)`: one v1 update of a document's log.
//! - `events (incident, seq, event)`: one sidecar event, JSON.
//! - `revocations (jti, record)` and `tokens (jti, record)`.
//! - `quarantine (id, incident, kind, seq, record)`: `id` is a sequence
//!   (oldest first), `record` the [`QuarantineRecord`] JSON, with the
//!   original bytes; `kind` and `seq` are copied out of it to find the
//!   highest quarantined seq.
//! - `schema_version (version, applied_at)`: one row per applied migration.
//!
//! Every payload is `bytea`, returned byte for byte (`jsonb` would rewrite
//! it). Incident numbers and seqs are `bigint`: a number beyond `i64::MAX`
//! is refused as corrupt rather than wrapped.
//!
//! A group from [`Backend::commit`] is one transaction: if it fails,
//! nothing of it is applied. Inside it a creation and a quarantine move run
//! under a savepoint, so that their failure does not fail the group.
//! Creation takes the counter with an `INSERT ... ON CONFLICT DO UPDATE ...
//! RETURNING`, which holds its row lock to the end of the group: two
//! servers on one database never issue one number twice, and a rolled-back
//! group rolls its number back with it, so numbers have no gaps. Seqs are
//! the store's, under the primary key `(incident, seq)`.
//!
//! Every session runs with `synchronous_commit = on`: a commit returns once
//! PostgreSQL made it durable (and, with a synchronous standby configured,
//! once the standby has it too).
//!
//! The client is `tokio-postgres`, driven by a small runtime of its own that
//! this backend owns, with an `r2d2` pool of its clients. The trait is
//! synchronous and some of its callers run on an async runtime's threads,
//! where the synchronous `postgres` crate (which `block_on`s a runtime of
//! its own) panics; here a call waits on a future that the backend's own
//! runtime drives, which is allowed on any thread.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use commandpost_shared::IncidentId;
use futures::StreamExt;
use futures::executor::block_on;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;
use super::backend::{
    Backend, CHECK_TIMEOUT, DocRecords, EventRecords, NewIncident, Outcome, QuarantineMove,
    Quarantined, Record, RecordAt, RecordSink, RenderIncident, Write,
};
use crate::quarantine::{QuarantineKind, QuarantineRecord};

/// The schema version this binary creates and knows.
pub const SCHEMA_VERSION: i32 = 2;

/// The migrations, in order: `(version, SQL)`. Each runs once, in the
/// transaction that records its version in `schema_version`.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE incident_counter (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        last_issued bigint NOT NULL
    );
    CREATE TABLE incidents (
        incident bigint PRIMARY KEY,
        record bytea NOT NULL
    );
    CREATE TABLE doc_snapshots (
        incident bigint PRIMARY KEY,
        upto bigint NOT NULL,
        snapshot bytea NOT NULL
    );
    CREATE TABLE doc_updates (
        incident bigint NOT NULL,
        seq bigint NOT NULL,
        body bytea NOT NULL,
        PRIMARY KEY (incident, seq)
    );
    CREATE TABLE events (
        incident bigint NOT NULL,
        seq bigint NOT NULL,
        event bytea NOT NULL,
        PRIMARY KEY (incident, seq)
    );
    CREATE TABLE revocations (
        jti text PRIMARY KEY,
        record bytea NOT NULL
    );
    CREATE TABLE tokens (
        jti text PRIMARY KEY,
        record bytea NOT NULL
    );
    CREATE TABLE quarantine (
        id bigserial PRIMARY KEY,
        incident bigint NOT NULL,
        kind text,
        seq bigint,
        record bytea NOT NULL
    );
    CREATE INDEX quarantine_by_incident ON quarantine (incident, kind);",
    ),
    (
        2,
        // The last document seq assigned per incident, taken with a row
        // lock by the group that appends (see `assign_seqs`), started from
        // what the database holds.
        "CREATE TABLE doc_heads (
            incident bigint PRIMARY KEY,
            last_seq bigint NOT NULL
        );
        INSERT INTO doc_heads (incident, last_seq)
        SELECT incident, max(seq) FROM (
            SELECT incident, seq FROM doc_updates
            UNION ALL SELECT incident, upto FROM doc_snapshots
            UNION ALL SELECT incident, seq FROM quarantine
                WHERE kind IN ('update', 'snapshot') AND seq IS NOT NULL
        ) AS held
        GROUP BY incident;",
    ),
];

/// The advisory lock that serialises migrations between servers
/// (`commandp` in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6d6d_616e_6470;

/// How the pool behaves.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Connections at most.
    pub size: u32,
    /// How long a caller waits for a free connection (or for a new one to
    /// connect) before it fails.
    pub connection_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            size: 16,
            connection_timeout: Duration::from_secs(10),
        }
    }
}

/// A PostgreSQL database holding one Command Post installation.
pub struct PostgresBackend {
    pool: r2d2::Pool<Manager>,
    options: PoolOptions,
    /// Drives the connections; shut down without blocking on drop.
    runtime: IoRuntime,
}

/// The backend's own runtime, shut down in the background when dropped so
/// that dropping the backend is fine on any thread (an async one too).
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime lives as long as the backend")
            .handle()
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Makes the pool's connections.
struct Manager {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    runtime: tokio::runtime::Handle,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Client;
    type Error = ConnectError;

    fn connect(&self) -> Result<Client, ConnectError> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let connecting = self.runtime.spawn(async move {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "a PostgreSQL connection ended");
                }
            });
            // Acknowledged means committed durably, whatever the server's
            // default says.
            // Notices (`CREATE TABLE IF NOT EXISTS` on an existing table)
            // are not worth a log line at every start.
            client
                .batch_execute("SET synchronous_commit = on; SET client_min_messages = warning")
                .await?;
            Ok(client)
        });
        match block_on(connecting) {
            Ok(connected) => connected.map_err(ConnectError),
            Err(join) => panic!("connecting to PostgreSQL panicked: {join}"),
        }
    }

    fn is_valid(&self, client: &mut Client) -> Result<(), ConnectError> {
        block_on(client.batch_execute("")).map_err(ConnectError)
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        client.is_closed()
    }
}

impl PostgresBackend {
    /// Connects to the database at `url` (`postgres://` or
    /// `postgresql://`, with libpq's `sslmode` and `sslrootcert`), applies
    /// the migrations it lacks and refuses a schema newer than
    /// [`SCHEMA_VERSION`].
    pub fn open(url: &str, options: PoolOptions) -> Result<Self, StoreError> {
        let (mut config, tls) = connection_config(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connection_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("commandpost");
        }
        if config.get_tcp_user_timeout().is_none() {
            // A database host that vanishes fails the connection instead of
            // leaving a query waiting for TCP's retries to give up.
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        config.keepalives_idle(Duration::from_secs(30));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres-io")
            .enable_all()
            .build()
            .map_err(|error| {
                StoreError::io("cannot start the PostgreSQL client's runtime", error)
            })?;
        let runtime = IoRuntime(Some(runtime));
        let manager = Manager {
            config,
            tls,
            runtime: runtime.handle().clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(options.size.max(1))
            .min_idle(Some(0))
            .connection_timeout(options.connection_timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(LogErrors))
            .build_unchecked(manager);
        let backend = Self {
            pool,
            options,
            runtime,
        };
        backend.migrate()?;
        Ok(backend)
    }

    /// A connection of the pool, or a clear error once the pool's wait is
    /// over.
    fn connection(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        self.pool.get().map_err(|error| {
            message(format!(
                "PostgreSQL: no database connection within {:?} (pool of {}, {} in use): {error}; \
                 the database may be unreachable, or --store-pool-size too small",
                self.options.connection_timeout,
                self.options.size,
                self.pool.state().connections - self.pool.state().idle_connections,
            ))
        })
    }

    /// Applies the migrations this database lacks, under an advisory lock
    /// held for the transaction, so that servers starting together migrate
    /// once.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.connection()?;
        block_on(async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )",
            )
            .await?;
            let current: Option<i32> = tx
                .query_one("SELECT max(version) FROM schema_version", &[])
                .await?
                .get(0);
            let current = current.unwrap_or(0);
            if current > SCHEMA_VERSION {
                return Err(message(format!(
                    "the PostgreSQL database's schema is version {current}, newer than this \
                     Command Post knows (version {SCHEMA_VERSION}): run a Command Post at least as \
                     new as the one that upgraded the database"
                )));
            }
            for (version, sql) in MIGRATIONS {
                if *version <= current {
                    continue;
                }
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)",
                    &[version],
                )
                .await?;
                tracing::info!(version, "applied a PostgreSQL schema migration");
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// A client of the pool, held: for tests of an exhausted pool.
    #[cfg(test)]
    fn hold_connection(&self) -> r2d2::PooledConnection<Manager> {
        self.pool.get().expect("a connection")
    }

    /// Runs `sql` on a connection of the pool: for tests.
    #[cfg(test)]
    fn execute_for_test(&self, sql: &str) {
        let client = self.connection().expect("a connection");
        block_on(client.batch_execute(sql)).expect("test SQL runs");
    }
}

/// Logs connection errors as r2d2 meets them (the caller sees the last
/// one when its wait ends).
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<ConnectError> for LogErrors {
    fn handle_error(&self, error: ConnectError) {
        tracing::warn!(%error, "cannot connect to PostgreSQL");
    }
}

/// A failure to connect, its causes in its message: tokio-postgres's names
/// only the kind ("error performing TLS handshake", "db error"), and r2d2
/// hands the caller only the message of the last failure.
#[derive(Debug)]
struct ConnectError(tokio_postgres::Error);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(&self.0);
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Engine(Arc::new(error))
    }
}

/// An engine error that is only a message.
fn message(text: String) -> StoreError {
    StoreError::Engine(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
        text,
    )))
}

/// A number as PostgreSQL's `bigint`.
fn big(number: u64) -> Result<i64, StoreError> {
    i64::try_from(number).map_err(|_| {
        StoreError::Corrupt(format!(
            "{number} is beyond PostgreSQL's bigint, the largest incident number or seq it stores"
        ))
    })
}

/// A stored `bigint` as a number.
fn unsigned(number: i64) -> Result<u64, StoreError> {
    u64::try_from(number)
        .map_err(|_| StoreError::Corrupt(format!("a negative number ({number}) is stored")))
}

/// The original key of a record in this engine's terms, for quarantine
/// records: the table and the record's key.
pub(super) fn original_key(kind: QuarantineKind, incident: u64, seq: u64) -> Vec<u8> {
    match kind {
        QuarantineKind::Update => format!("doc_updates/{incident}/{seq}"),
        QuarantineKind::Snapshot => format!("doc_snapshots/{incident}"),
        QuarantineKind::Event => format!("events/{incident}/{seq}"),
    }
    .into_bytes()
}

/// A document's rows as `(part, seq, body)`: part 0 the snapshot, 1 the log.
fn doc_records(rows: Vec<tokio_postgres::Row>) -> Result<DocRecords, StoreError> {
    let mut found = DocRecords::default();
    for row in rows {
        let part: i32 = row.get(0);
        let seq = unsigned(row.get(1))?;
        let body: Vec<u8> = row.get(2);
        if part == 0 {
            found.snapshot = Some((seq, body));
        } else {
            found.updates.push((seq, body));
        }
    }
    Ok(found)
}

/// Takes the next seqs for the group's numbered appends: for each incident,
/// in increasing order (so that two servers' groups never wait on each
/// other in a cycle), moves its head forward by the number of its appends
/// and holds the row lock to the end of the transaction. Another server's
/// group appending to the same incident waits for this one to commit, so
/// seqs commit in order with no gap. Returns each incident's first seq.
async fn assign_seqs(
    tx: &Transaction<'_>,
    group: &[Write],
) -> Result<std::collections::BTreeMap<u64, u64>, StoreError> {
    let mut counts = std::collections::BTreeMap::<u64, i64>::new();
    for write in group {
        if let Write::AppendNumbered { incident, .. } = write {
            *counts.entry(*incident).or_default() += 1;
        }
    }
    let mut first = std::collections::BTreeMap::new();
    for (incident, count) in counts {
        // A head absent (a document written before numbering, or never
        // appended to) starts from what the database holds.
        let last: i64 = tx
            .query_one(
                "INSERT INTO doc_heads (incident, last_seq)
                 SELECT $1, $2 + greatest(
                     (SELECT coalesce(max(seq), 0) FROM doc_updates WHERE incident = $1),
                     (SELECT coalesce(max(upto), 0) FROM doc_snapshots WHERE incident = $1),
                     (SELECT coalesce(max(seq), 0) FROM quarantine
                         WHERE incident = $1 AND kind IN ('update', 'snapshot')))
                 ON CONFLICT (incident) DO UPDATE SET last_seq = doc_heads.last_seq + $2
                 RETURNING last_seq",
                &[&big(incident)?, &count],
            )
            .await?
            .get(0);
        first.insert(incident, unsigned(last - count + 1)?);
    }
    Ok(first)
}

/// Writes of one table gathered so that they go in one statement.
#[derive(Default)]
struct Pending {
    updates: Rows,
}

/// `(incident, seq, bytes)` columns, for `unnest`.
#[derive(Default)]
struct Rows {
    incidents: Vec<i64>,
    seqs: Vec<i64>,
    bytes: Vec<Vec<u8>>,
}

impl Rows {
    fn push(&mut self, incident: u64, seq: u64, bytes: Vec<u8>) -> Result<(), StoreError> {
        let (incident, seq) = (big(incident)?, big(seq)?);
        // One statement may not upsert a row twice: a later write under the
        // same seq replaces the earlier one here already.
        if let Some(at) = (0..self.seqs.len())
            .rev()
            .find(|&at| self.incidents[at] == incident && self.seqs[at] == seq)
        {
            self.bytes[at] = bytes;
            return Ok(());
        }
        self.incidents.push(incident);
        self.seqs.push(seq);
        self.bytes.push(bytes);
        Ok(())
    }

    /// Upserts the rows into `table` (whose payload column is `column`).
    async fn write(
        &mut self,
        tx: &Transaction<'_>,
        table: &str,
        column: &str,
    ) -> Result<(), StoreError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {table} (incident, seq, {column}) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) \
             ON CONFLICT (incident, seq) DO UPDATE SET {column} = EXCLUDED.{column}"
        );
        tx.execute(&sql, &[&self.incidents, &self.seqs, &self.bytes])
            .await?;
        *self = Rows::default();
        Ok(())
    }
}

impl Pending {
    async fn write(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        self.updates.write(tx, "doc_updates", "body").await
    }
}

/// A [`Write::AppendEvents`] held back to the end of the group, so that
/// every server inserts events in one order (by incident, then seq) and two
/// servers' groups never wait on each other's event rows in a cycle.
struct EventsAppend {
    /// Its place among the group's outcomes.
    at: usize,
    incident: u64,
    first_seq: u64,
    events: Vec<Vec<u8>>,
}

/// Inserts a batch of events under a savepoint if none of their seqs is
/// taken (insert-only: a row stored, or being inserted by another server's
/// transaction, which PostgreSQL waits for, is never replaced; a seq that
/// went to the quarantine counts as taken). Whether the batch was written;
/// if not, nothing of it was.
async fn insert_events(tx: &mut Transaction<'_>, append: EventsAppend) -> Result<bool, StoreError> {
    let count = append.events.len();
    if count == 0 {
        return Ok(true);
    }
    let incidents = vec![big(append.incident)?; count];
    let seqs = (0..count as u64)
        .map(|offset| big(append.first_seq + offset))
        .collect::<Result<Vec<i64>, _>>()?;
    let savepoint = tx.savepoint("events").await?;
    let inserted = savepoint
        .execute(
            "INSERT INTO events (incident, seq, event) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) \
             WHERE NOT EXISTS (SELECT 1 FROM quarantine \
                 WHERE incident = $4 AND kind = 'event' AND seq = ANY($2)) \
             ON CONFLICT (incident, seq) DO NOTHING",
            &[&incidents, &seqs, &append.events, &incidents[0]],
        )
        .await?;
    if inserted == count as u64 {
        savepoint.commit().await?;
        Ok(true)
    } else {
        savepoint.rollback().await?;
        Ok(false)
    }
}

/// Creates the next incident inside the group's transaction; its number.
async fn create_incident(tx: &Transaction<'_>, render: &RenderIncident) -> Result<u64, StoreError> {
    let number: i64 = tx
        .query_one(
            "INSERT INTO incident_counter (singleton, last_issued) VALUES (true, 1)
             ON CONFLICT (singleton) DO UPDATE SET last_issued = incident_counter.last_issued + 1
             RETURNING last_issued",
            &[],
        )
        .await?
        .get(0);
    let number = unsigned(number)?;
    let NewIncident {
        record,
        doc,
        events,
    } = render(IncidentId::new(number));
    let incident = big(number)?;
    tx.execute(
        "INSERT INTO incidents (incident, record) VALUES ($1, $2)
         ON CONFLICT (incident) DO UPDATE SET record = EXCLUDED.record",
        &[&incident, &record],
    )
    .await?;
    tx.execute(
        "INSERT INTO doc_snapshots (incident, upto, snapshot) VALUES ($1, 0, $2)
         ON CONFLICT (incident) DO UPDATE SET upto = 0, snapshot = EXCLUDED.snapshot",
        &[&incident, &doc],
    )
    .await?;
    let mut rows = Rows::default();
    for (index, event) in events.into_iter().enumerate() {
        rows.push(number, index as u64 + 1, event)?;
    }
    rows.write(tx, "events", "event").await?;
    Ok(number)
}

/// Moves a record into the quarantine if it still holds what is expected.
async fn quarantine(
    tx: &Transaction<'_>,
    request: &QuarantineMove,
) -> Result<Option<QuarantineRecord>, StoreError> {
    // Every record here has an identity that decodes: nothing is found
    // that another read could have reported.
    let RecordAt::Seq(seq) = request.at else {
        return Ok(None);
    };
    let incident = big(request.incident)?;
    let at = big(seq)?;
    let expected = request.expected.as_slice();
    let removed = match request.kind {
        QuarantineKind::Update => {
            tx.execute(
                "DELETE FROM doc_updates WHERE incident = $1 AND seq = $2 AND body = $3",
                &[&incident, &at, &expected],
            )
            .await?
        }
        QuarantineKind::Snapshot => {
            tx.execute(
                "DELETE FROM doc_snapshots WHERE incident = $1 AND upto = $2 AND snapshot = $3",
                &[&incident, &at, &expected],
            )
            .await?
        }
        QuarantineKind::Event => {
            tx.execute(
                "DELETE FROM events WHERE incident = $1 AND seq = $2 AND event = $3",
                &[&incident, &at, &expected],
            )
            .await?
        }
    };
    if removed == 0 {
        return Ok(None);
    }
    let record = QuarantineRecord {
        incident: IncidentId::new(request.incident),
        kind: request.kind,
        seq: Some(seq),
        original_key: crate::quarantine::hex(&original_key(request.kind, request.incident, seq)),
        reason: request.reason.clone(),
        quarantined_at: Utc::now(),
        size: expected.len(),
        bytes: Some(crate::quarantine::hex(expected)),
    };
    let json = serde_json::to_vec(&record).expect("quarantine records serialise");
    tx.execute(
        "INSERT INTO quarantine (incident, kind, seq, record) VALUES ($1, $2, $3, $4)",
        &[&incident, &request.kind.name(), &at, &json],
    )
    .await?;
    Ok(Some(record))
}

/// Runs `$step` (which names the savepoint `$savepoint`) under a savepoint
/// of `$tx`: rolled back alone if it fails.
macro_rules! under_savepoint {
    ($tx:ident, $savepoint:ident => $step:expr) => {{
        match $tx.savepoint("write").await {
            Err(error) => Err(StoreError::from(error)),
            Ok($savepoint) => match $step.await {
                Ok(value) => $savepoint
                    .commit()
                    .await
                    .map(|()| value)
                    .map_err(StoreError::from),
                Err(error) => $savepoint
                    .rollback()
                    .await
                    .map_err(StoreError::from)
                    .and(Err(error)),
            },
        }
    }};
}

impl Backend for PostgresBackend {
    fn incident(&self, incident: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.connection()?;
        let row = block_on(client.query_opt(
            "SELECT record FROM incidents WHERE incident = $1",
            &[&big(incident)?],
        ))?;
        Ok(row.map(|row| row.get(0)))
    }

    fn incidents(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let client = self.connection()?;
        let rows = block_on(client.query("SELECT record FROM incidents ORDER BY incident", &[]))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn doc(&self, incident: u64) -> Result<DocRecords, StoreError> {
        let client = self.connection()?;
        // One statement, so one view: never a snapshot from before a
        // compaction with the log from after it.
        let rows = block_on(client.query(
            "SELECT 0 AS part, upto AS seq, snapshot AS body FROM doc_snapshots WHERE incident = $1
             UNION ALL
             SELECT 1, seq, body FROM doc_updates WHERE incident = $1
             ORDER BY part, seq",
            &[&big(incident)?],
        ))?;
        doc_records(rows)
    }

    fn doc_after(&self, incident: u64, after: u64) -> Result<DocRecords, StoreError> {
        let client = self.connection()?;
        // One statement, one view, as in `doc`.
        let rows = block_on(client.query(
            "SELECT 0 AS part, upto AS seq, snapshot AS body FROM doc_snapshots
                 WHERE incident = $1 AND upto > $2
             UNION ALL
             SELECT 1, seq, body FROM doc_updates WHERE incident = $1 AND seq > $2
             ORDER BY part, seq",
            &[&big(incident)?, &i64::try_from(after).unwrap_or(i64::MAX)],
        ))?;
        doc_records(rows)
    }

    fn numbers_updates(&self) -> bool {
        true
    }

    fn events_after(
        &self,
        incident: u64,
        after: u64,
        limit: usize,
    ) -> Result<EventRecords, StoreError> {
        let client = self.connection()?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = block_on(client.query(
            "SELECT seq, event FROM events WHERE incident = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&big(incident)?, &after, &limit],
        ))?;
        let mut found = EventRecords::default();
        for row in rows {
            found.events.push((unsigned(row.get(0))?, row.get(1)));
        }
        Ok(found)
    }

    fn revocations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let client = self.connection()?;
        let rows = block_on(client.query("SELECT record FROM revocations ORDER BY jti", &[]))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn tokens(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let client = self.connection()?;
        let rows = block_on(client.query("SELECT jti, record FROM tokens ORDER BY jti", &[]))?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let client = self.connection()?;
        let rows = block_on(client.query("SELECT id, record FROM quarantine ORDER BY id", &[]))?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, i64>(0).to_be_bytes().to_vec(), row.get(1)))
            .collect())
    }

    fn quarantined_max_seq(
        &self,
        incident: u64,
        kinds: &[QuarantineKind],
    ) -> Result<Option<u64>, StoreError> {
        let client = self.connection()?;
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.name()).collect();
        let highest: Option<i64> = block_on(client.query_one(
            "SELECT max(coalesce(seq, 0)) FROM quarantine WHERE incident = $1 AND kind = ANY($2)",
            &[&big(incident)?, &kinds],
        ))?
        .get(0);
        highest.map(unsigned).transpose()
    }

    fn commit(&self, group: Vec<Write>) -> Result<Vec<Outcome>, StoreError> {
        let mut client = self.connection()?;
        block_on(async {
            let mut tx = client.transaction().await?;
            let mut pending = Pending::default();
            let mut outcomes = Vec::with_capacity(group.len());
            let mut next_seq = assign_seqs(&tx, &group).await?;
            let mut appends: Vec<EventsAppend> = Vec::new();
            for write in group {
                outcomes.push(match write {
                    Write::AppendNumbered { incident, update } => {
                        let next = next_seq
                            .get_mut(&incident)
                            .ok_or_else(|| message("a numbered append without a seq".into()))?;
                        let seq = *next;
                        *next += 1;
                        pending.updates.push(incident, seq, update)?;
                        Outcome::Appended(seq)
                    }
                    Write::Append {
                        incident,
                        seq,
                        update,
                    } => {
                        pending.updates.push(incident, seq, update)?;
                        Outcome::Done
                    }
                    Write::AppendEvents {
                        incident,
                        first_seq,
                        events,
                    } => {
                        // Decided at the end of the group (its outcome
                        // replaces this one).
                        appends.push(EventsAppend {
                            at: outcomes.len(),
                            incident,
                            first_seq,
                            events,
                        });
                        Outcome::Done
                    }
                    Write::Compact {
                        incident,
                        upto,
                        snapshot,
                    } => {
                        // The log entries queued before it go first, so that
                        // it removes them too.
                        pending.write(&tx).await?;
                        let (incident, upto) = (big(incident)?, big(upto)?);
                        // Never back: another server may have compacted
                        // further (its snapshot covers this one's log).
                        tx.execute(
                            "INSERT INTO doc_snapshots (incident, upto, snapshot) VALUES ($1, $2, $3)
                             ON CONFLICT (incident) DO UPDATE
                             SET upto = EXCLUDED.upto, snapshot = EXCLUDED.snapshot
                             WHERE doc_snapshots.upto <= EXCLUDED.upto",
                            &[&incident, &upto, &snapshot],
                        )
                        .await?;
                        tx.execute(
                            "DELETE FROM doc_updates WHERE incident = $1 AND seq <= $2",
                            &[&incident, &upto],
                        )
                        .await?;
                        Outcome::Done
                    }
                    Write::CreateIncident(render) => {
                        pending.write(&tx).await?;
                        let created = under_savepoint!(tx, savepoint => create_incident(&savepoint, &render));
                        Outcome::Created(created)
                    }
                    Write::Quarantine(request) => {
                        // The record compared is the one a load would read now.
                        pending.write(&tx).await?;
                        let moved =
                            under_savepoint!(tx, savepoint => quarantine(&savepoint, &request));
                        Outcome::Moved(moved)
                    }
                    Write::Revoke { jti, record } => {
                        tx.execute(
                            "INSERT INTO revocations (jti, record) VALUES ($1, $2)
                             ON CONFLICT (jti) DO UPDATE SET record = EXCLUDED.record",
                            &[&jti, &record],
                        )
                        .await?;
                        Outcome::Done
                    }
                    Write::RecordToken { jti, record } => {
                        tx.execute(
                            "INSERT INTO tokens (jti, record) VALUES ($1, $2)
                             ON CONFLICT (jti) DO UPDATE SET record = EXCLUDED.record",
                            &[&jti, &record],
                        )
                        .await?;
                        Outcome::Done
                    }
                });
            }
            pending.write(&tx).await?;
            appends.sort_by_key(|append| (append.incident, append.first_seq));
            for append in appends {
                let at = append.at;
                if !insert_events(&mut tx, append).await? {
                    outcomes[at] = Outcome::Conflict;
                }
            }
            tx.commit().await?;
            Ok(outcomes)
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every commit returned once PostgreSQL made it durable.
        Ok(())
    }

    fn check(&self) -> Result<(), StoreError> {
        let unreachable = |why: String| {
            message(format!(
                "PostgreSQL unreachable: {why} (no answer within {CHECK_TIMEOUT:?})"
            ))
        };
        let client = self
            .pool
            .get_timeout(CHECK_TIMEOUT)
            .map_err(|error| unreachable(error.to_string()))?;
        // The timer runs on the backend's runtime; the query waits here.
        let _runtime = self.runtime.handle().enter();
        match block_on(tokio::time::timeout(
            CHECK_TIMEOUT,
            client.batch_execute("SELECT 1"),
        )) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(unreachable(error.to_string())),
            Err(_) => Err(unreachable("the query timed out".to_owned())),
        }
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        let client = self.connection()?;
        let tables = [
            "incident_counter",
            "incidents",
            "doc_snapshots",
            "doc_updates",
            "events",
            "revocations",
            "tokens",
            "quarantine",
        ];
        let mut sql = String::from("SELECT true");
        for table in tables {
            let _ = write!(sql, " AND NOT EXISTS (SELECT 1 FROM {table})");
        }
        Ok(block_on(client.query_one(&sql, &[]))?.get(0))
    }

    fn export(&self, sink: &mut dyn RecordSink) -> Result<(), StoreError> {
        let mut client = self.connection()?;
        block_on(async {
            // One snapshot of the database for every table.
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let queries: [(&str, RecordOfRow); 8] = [
                ("SELECT last_issued FROM incident_counter", |row| {
                    Ok(Record::IncidentCounter(unsigned(row.get(0))?))
                }),
                (
                    "SELECT incident, record FROM incidents ORDER BY incident",
                    |row| {
                        Ok(Record::Incident {
                            incident: unsigned(row.get(0))?,
                            record: row.get(1),
                        })
                    },
                ),
                (
                    "SELECT incident, upto, snapshot FROM doc_snapshots ORDER BY incident",
                    |row| {
                        Ok(Record::Snapshot {
                            incident: unsigned(row.get(0))?,
                            upto: unsigned(row.get(1))?,
                            snapshot: row.get(2),
                        })
                    },
                ),
                (
                    "SELECT incident, seq, body FROM doc_updates ORDER BY incident, seq",
                    |row| {
                        Ok(Record::Update {
                            incident: unsigned(row.get(0))?,
                            seq: unsigned(row.get(1))?,
                            update: row.get(2),
                        })
                    },
                ),
                (
                    "SELECT incident, seq, event FROM events ORDER BY incident, seq",
                    |row| {
                        Ok(Record::Event {
                            incident: unsigned(row.get(0))?,
                            seq: unsigned(row.get(1))?,
                            event: row.get(2),
                        })
                    },
                ),
                ("SELECT jti, record FROM revocations ORDER BY jti", |row| {
                    Ok(Record::Revocation {
                        jti: row.get(0),
                        record: row.get(1),
                    })
                }),
                ("SELECT jti, record FROM tokens ORDER BY jti", |row| {
                    Ok(Record::Token {
                        jti: row.get(0),
                        record: row.get(1),
                    })
                }),
                ("SELECT id, record FROM quarantine ORDER BY id", |row| {
                    Ok(Record::Quarantined {
                        id: row.get::<_, i64>(0).to_be_bytes().to_vec(),
                        record: row.get(1),
                    })
                }),
            ];
            for (sql, record_of) in queries {
                let rows = tx
                    .query_raw(sql, std::iter::empty::<&(dyn ToSql + Sync)>())
                    .await?;
                let mut rows = std::pin::pin!(rows);
                while let Some(row) = rows.next().await {
                    sink.record(record_of(&row?)?)?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn import(&self, records: &mut dyn Iterator<Item = Record>) -> Result<(), StoreError> {
        let mut client = self.connection()?;
        block_on(async {
            let tx = client.transaction().await?;
            let statements = Statements::prepare(&tx).await?;
            for record in records {
                match record {
                    Record::IncidentCounter(last) => {
                        tx.execute(&statements.counter, &[&big(last)?]).await?
                    }
                    Record::Incident { incident, record } => {
                        tx.execute(&statements.incident, &[&big(incident)?, &record])
                            .await?
                    }
                    Record::Snapshot {
                        incident,
                        upto,
                        snapshot,
                    } => {
                        tx.execute(
                            &statements.snapshot,
                            &[&big(incident)?, &big(upto)?, &snapshot],
                        )
                        .await?
                    }
                    Record::Update {
                        incident,
                        seq,
                        update,
                    } => {
                        tx.execute(&statements.update, &[&big(incident)?, &big(seq)?, &update])
                            .await?
                    }
                    Record::Event {
                        incident,
                        seq,
                        event,
                    } => {
                        tx.execute(&statements.event, &[&big(incident)?, &big(seq)?, &event])
                            .await?
                    }
                    Record::Revocation { jti, record } => {
                        tx.execute(&statements.revocation, &[&jti, &record]).await?
                    }
                    Record::Token { jti, record } => {
                        tx.execute(&statements.token, &[&jti, &record]).await?
                    }
                    Record::Quarantined { id, record } => {
                        import_quarantined(&tx, &statements, &id, record).await?
                    }
                };
            }
            // Ids kept from another PostgreSQL export: new ones come after.
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('quarantine', 'id'),
                               coalesce((SELECT max(id) FROM quarantine), 0) + 1, false)",
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

/// How an export reads a record from a row.
type RecordOfRow = fn(&tokio_postgres::Row) -> Result<Record, StoreError>;

/// The import's statements, prepared once.
struct Statements {
    counter: tokio_postgres::Statement,
    incident: tokio_postgres::Statement,
    snapshot: tokio_postgres::Statement,
    update: tokio_postgres::Statement,
    event: tokio_postgres::Statement,
    revocation: tokio_postgres::Statement,
    token: tokio_postgres::Statement,
    quarantined_with_id: tokio_postgres::Statement,
    quarantined: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(tx: &Transaction<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            counter: tx
                .prepare(
                    "INSERT INTO incident_counter (singleton, last_issued) VALUES (true, $1)
                     ON CONFLICT (singleton) DO UPDATE SET last_issued = EXCLUDED.last_issued",
                )
                .await?,
            incident: tx
                .prepare(
                    "INSERT INTO incidents (incident, record) VALUES ($1, $2)
                     ON CONFLICT (incident) DO UPDATE SET record = EXCLUDED.record",
                )
                .await?,
            snapshot: tx
                .prepare(
                    "INSERT INTO doc_snapshots (incident, upto, snapshot) VALUES ($1, $2, $3)
                     ON CONFLICT (incident) DO UPDATE
                     SET upto = EXCLUDED.upto, snapshot = EXCLUDED.snapshot",
                )
                .await?,
            update: tx
                .prepare(
                    "INSERT INTO doc_updates (incident, seq, body) VALUES ($1, $2, $3)
                     ON CONFLICT (incident, seq) DO UPDATE SET body = EXCLUDED.body",
                )
                .await?,
            event: tx
                .prepare(
                    "INSERT INTO events (incident, seq, event) VALUES ($1, $2, $3)
                     ON CONFLICT (incident, seq) DO UPDATE SET event = EXCLUDED.event",
                )
                .await?,
            revocation: tx
                .prepare(
                    "INSERT INTO revocations (jti, record) VALUES ($1, $2)
                     ON CONFLICT (jti) DO UPDATE SET record = EXCLUDED.record",
                )
                .await?,
            token: tx
                .prepare(
                    "INSERT INTO tokens (jti, record) VALUES ($1, $2)
                     ON CONFLICT (jti) DO UPDATE SET record = EXCLUDED.record",
                )
                .await?,
            quarantined_with_id: tx
                .prepare(
                    "INSERT INTO quarantine (id, incident, kind, seq, record)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                )
                .await?,
            quarantined: tx
                .prepare(
                    "INSERT INTO quarantine (id, incident, kind, seq, record)
                     VALUES (coalesce((SELECT max(id) FROM quarantine), 0) + 1, $1, $2, $3, $4)",
                )
                .await?,
        })
    }
}

/// Imports a quarantine record: an id from this backend (8 bytes) is kept
/// unless taken; any other gets the next one, so import order is kept.
async fn import_quarantined(
    tx: &Transaction<'_>,
    statements: &Statements,
    id: &[u8],
    record: Vec<u8>,
) -> Result<u64, StoreError> {
    let decoded: Option<QuarantineRecord> = serde_json::from_slice(&record).ok();
    let incident = match &decoded {
        Some(decoded) => big(decoded.incident.number())?,
        None => 0,
    };
    let kind = decoded.as_ref().map(|decoded| decoded.kind.name());
    let seq = match decoded.as_ref().and_then(|decoded| decoded.seq) {
        Some(seq) => Some(big(seq)?),
        None => None,
    };
    if let Ok(id) = <[u8; 8]>::try_from(id) {
        let id = i64::from_be_bytes(id);
        if id > 0
            && tx
                .execute(
                    &statements.quarantined_with_id,
                    &[&id, &incident, &kind, &seq, &record],
                )
                .await?
                == 1
        {
            return Ok(1);
        }
    }
    Ok(tx
        .execute(&statements.quarantined, &[&incident, &kind, &seq, &record])
        .await?)
}

/// What `sslmode` asks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    /// Encrypt when asked (`prefer`, `require`) but check nothing, as libpq
    /// does without a root certificate.
    Nothing,
    /// The chain up to `sslrootcert` (`verify-ca`, or `require` with a root
    /// certificate, as in libpq).
    Chain,
    /// The chain and the host name (`verify-full`).
    ChainAndName,
}

/// The client configuration and TLS connector for `url`. `sslmode` takes
/// libpq's values (`disable`, `prefer`, the default, `require`,
/// `verify-ca`, `verify-full`); `sslrootcert` names a PEM file of CA
/// certificates.
fn connection_config(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), StoreError> {
    let invalid = |what: String| message(format!("invalid PostgreSQL URL: {what}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut sslmode = None;
    let mut root = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => sslmode = Some(percent_decode(value)),
            "sslrootcert" => root = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    let (driver_mode, verify) = match sslmode.as_deref() {
        None | Some("prefer") => ("prefer", Verify::Nothing),
        Some("disable") => ("disable", Verify::Nothing),
        Some("require") => ("require", Verify::Nothing),
        Some("verify-ca") => ("require", Verify::Chain),
        Some("verify-full") => ("require", Verify::ChainAndName),
        Some(other) => {
            return Err(invalid(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let verify = match (verify, &root) {
        (Verify::Nothing, Some(_)) if driver_mode != "disable" => Verify::Chain,
        (Verify::Chain | Verify::ChainAndName, None) => {
            return Err(invalid(format!(
                "sslmode={} needs sslrootcert=<a PEM file of the CA certificates to trust>",
                sslmode.unwrap_or_default()
            )));
        }
        (verify, _) => verify,
    };
    kept.push(match driver_mode {
        "disable" => "sslmode=disable",
        "require" => "sslmode=require",
        _ => "sslmode=prefer",
    });
    let rebuilt = format!("{base}?{}", kept.join("&"));
    let config =
        tokio_postgres::Config::from_str(&rebuilt).map_err(|error| invalid(format!("{error}")))?;
    // ring, not aws-lc-rs: aws-lc-sys carries the OpenSSL licence, which
    // deny.toml does not accept, and needs cmake to build. rustls marks
    // ring's provider deprecated only for its lack of post-quantum key
    // exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, root) {
        (Verify::Nothing, _) | (_, None) => Arc::new(AnyCertificate(provider.clone())),
        (verify, Some(path)) => {
            let mut roots = RootCertStore::empty();
            let certificates = CertificateDer::pem_file_iter(&path)
                .map_err(|error| invalid(format!("cannot read sslrootcert {path}: {error}")))?;
            for certificate in certificates {
                let certificate = certificate
                    .map_err(|error| invalid(format!("cannot read sslrootcert {path}: {error}")))?;
                roots.add(certificate).map_err(|error| {
                    invalid(format!("a certificate of sslrootcert {path}: {error}"))
                })?;
            }
            if roots.is_empty() {
                return Err(invalid(format!("sslrootcert {path} holds no certificate")));
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|error| invalid(format!("sslrootcert {path}: {error}")))?;
            if verify == Verify::ChainAndName {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(format!("TLS: {error}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((config, MakeRustlsConnect::new(tls)))
}

/// `%XX` escapes decoded (a path in a URL).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| text.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                at += 3;
            }
            None => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Accepts any server certificate (the handshake's signatures are still
/// checked): libpq's `require` without a root certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain but not the host name: libpq's `verify-ca`.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;
    use crate::store::test_postgres::fresh_database;

    fn open(url: &str) -> PostgresBackend {
        PostgresBackend::open(url, PoolOptions::default()).unwrap()
    }

    fn creation(title: &'static str) -> Write {
        Write::CreateIncident(Box::new(move |id| NewIncident {
            record: format!("{id} {title}").into_bytes(),
            doc: b"doc".to_vec(),
            events: vec![b"declared".to_vec()],
        }))
    }

    fn created(outcome: &Outcome) -> u64 {
        match outcome {
            Outcome::Created(Ok(number)) => *number,
            other => panic!("not a creation: {other:?}"),
        }
    }

    /// A number the database computes, for tests.
    fn number(backend: &PostgresBackend, sql: &str) -> i64 {
        let client = backend.connection().unwrap();
        block_on(client.query_one(sql, &[])).unwrap().get(0)
    }

    #[test]
    fn a_failed_group_applies_nothing() {
        let backend = open(&fresh_database());
        let first = created(&backend.commit(vec![creation("first")]).unwrap()[0]);
        assert_eq!(first, 1);
        // Everything a group can write, then a write PostgreSQL refuses (a
        // text key with a NUL byte) last.
        let failed = backend.commit(vec![
            Write::Append {
                incident: 1,
                seq: 1,
                update: b"update".to_vec(),
            },
            Write::AppendEvents {
                incident: 1,
                first_seq: 2,
                events: vec![b"event".to_vec()],
            },
            creation("second"),
            Write::Compact {
                incident: 1,
                upto: 1,
                snapshot: b"snapshot".to_vec(),
            },
            Write::RecordToken {
                jti: "token".into(),
                record: b"{}".to_vec(),
            },
            Write::Revoke {
                jti: "bad\0jti".into(),
                record: b"{}".to_vec(),
            },
        ]);
        assert!(failed.is_err(), "{failed:?}");
        let doc = backend.doc(1).unwrap();
        assert_eq!(doc.snapshot, Some((0, b"doc".to_vec())));
        assert!(doc.updates.is_empty());
        assert_eq!(
            backend.events_after(1, 0, usize::MAX).unwrap().events.len(),
            1
        );
        assert_eq!(backend.incidents().unwrap().len(), 1);
        assert!(backend.tokens().unwrap().is_empty());
        // The number the failed group took is issued again: no gap.
        let next = created(&backend.commit(vec![creation("second")]).unwrap()[0]);
        assert_eq!(next, 2);
    }

    #[test]
    fn two_servers_appending_events_at_one_seq_one_wins_and_nothing_is_overwritten() {
        let url = fresh_database();
        let (one, two) = (open(&url), open(&url));
        assert_eq!(
            created(&one.commit(vec![creation("shared")]).unwrap()[0]),
            1
        );
        let append = |who: &str| Write::AppendEvents {
            incident: 1,
            first_seq: 2,
            events: vec![
                format!("{who} 2").into_bytes(),
                format!("{who} 3").into_bytes(),
            ],
        };
        let token = |who: &str| Write::RecordToken {
            jti: who.into(),
            record: b"{}".to_vec(),
        };
        // At once, from two connections: PostgreSQL makes the second wait
        // for the first and then skips its rows.
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| one.commit(vec![append("one"), token("one")]).unwrap());
            let b = scope.spawn(|| two.commit(vec![append("two"), token("two")]).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        let conflicts = |outcomes: &[Outcome]| {
            assert!(matches!(outcomes[1], Outcome::Done), "{outcomes:?}");
            matches!(outcomes[0], Outcome::Conflict)
        };
        let (a_lost, b_lost) = (conflicts(&a), conflicts(&b));
        assert!(a_lost != b_lost, "exactly one wins: {a:?} {b:?}");
        let winner = if a_lost { "two" } else { "one" };
        let stored = one.events_after(1, 1, usize::MAX).unwrap().events;
        assert_eq!(
            stored,
            [
                (2, format!("{winner} 2").into_bytes()),
                (3, format!("{winner} 3").into_bytes())
            ]
        );
        // The loser's other writes of the group went through.
        assert_eq!(one.tokens().unwrap().len(), 2);

        // One seq of a batch taken is enough: nothing of it is written, and
        // the next free seqs still are.
        let overlapping = two
            .commit(vec![
                Write::AppendEvents {
                    incident: 1,
                    first_seq: 3,
                    events: vec![b"late 3".to_vec(), b"late 4".to_vec()],
                },
                Write::AppendEvents {
                    incident: 1,
                    first_seq: 4,
                    events: vec![b"next 4".to_vec()],
                },
            ])
            .unwrap();
        assert!(
            matches!(overlapping[..], [Outcome::Conflict, Outcome::Done]),
            "{overlapping:?}"
        );
        let stored = one.events_after(1, 2, usize::MAX).unwrap().events;
        assert_eq!(
            stored,
            [
                (3, format!("{winner} 3").into_bytes()),
                (4, b"next 4".to_vec())
            ]
        );

        // A seq that went to the quarantine is taken too.
        let moved = one
            .commit(vec![Write::Quarantine(QuarantineMove {
                incident: 1,
                kind: QuarantineKind::Event,
                at: RecordAt::Seq(4),
                expected: b"next 4".to_vec(),
                reason: "test".into(),
            })])
            .unwrap();
        assert!(
            matches!(moved[..], [Outcome::Moved(Ok(Some(_)))]),
            "{moved:?}"
        );
        let reused = two
            .commit(vec![Write::AppendEvents {
                incident: 1,
                first_seq: 4,
                events: vec![b"reused 4".to_vec()],
            }])
            .unwrap();
        assert!(matches!(reused[..], [Outcome::Conflict]), "{reused:?}");
        assert_eq!(one.events_after(1, 3, usize::MAX).unwrap().events, []);
    }

    #[test]
    fn a_failed_creation_or_move_does_not_fail_its_group() {
        let backend = open(&fresh_database());
        // A counter at bigint's limit cannot issue another number: the
        // creation fails, the writes around it do not.
        backend.execute_for_test(&format!(
            "INSERT INTO incident_counter (singleton, last_issued) VALUES (true, {})",
            i64::MAX
        ));
        let outcomes = backend
            .commit(vec![
                Write::Append {
                    incident: 7,
                    seq: 1,
                    update: b"kept".to_vec(),
                },
                creation("overflows"),
                Write::AppendEvents {
                    incident: 7,
                    first_seq: 1,
                    events: vec![b"kept too".to_vec()],
                },
            ])
            .unwrap();
        assert!(
            matches!(outcomes[1], Outcome::Created(Err(_))),
            "{outcomes:?}"
        );
        assert_eq!(backend.doc(7).unwrap().updates, [(1, b"kept".to_vec())]);
        assert_eq!(
            backend.events_after(7, 0, 10).unwrap().events,
            [(1, b"kept too".to_vec())]
        );
    }

    #[test]
    fn concurrent_creations_on_two_servers_never_share_a_number() {
        let url = fresh_database();
        let (one, two) = (open(&url), open(&url));
        let (inside, is_inside) = mpsc::channel::<()>();
        let (go, wait_for_go) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            // The first server's creation holds the counter, uncommitted,
            // until told to go on.
            let first = scope.spawn(|| {
                let render: RenderIncident = Box::new(move |id| {
                    let _ = inside.send(());
                    let _ = wait_for_go.recv();
                    NewIncident {
                        record: format!("{id}").into_bytes(),
                        doc: Vec::new(),
                        events: Vec::new(),
                    }
                });
                created(&one.commit(vec![Write::CreateIncident(render)]).unwrap()[0])
            });
            is_inside.recv().unwrap();
            let second = scope.spawn(|| created(&two.commit(vec![creation("b")]).unwrap()[0]));
            // Go on once the second waits for the counter's lock.
            let waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted";
            let started = Instant::now();
            while number(&two, waiting) == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "the second creation never waited for the counter"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            go.send(()).unwrap();
            let mut numbers = [first.join().unwrap(), second.join().unwrap()];
            numbers.sort();
            assert_eq!(numbers, [1, 2]);
        });
        // And many at once from both.
        let numbers: Vec<u64> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|worker| {
                    let backend = if worker % 2 == 0 { &one } else { &two };
                    scope.spawn(move || {
                        (0..5)
                            .map(|_| created(&backend.commit(vec![creation("many")]).unwrap()[0]))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap())
                .collect()
        });
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(sorted, (3..=42).collect::<Vec<u64>>(), "{numbers:?}");
    }

    /// Two servers append numbered updates to the same documents at once,
    /// while a reader tails one of them the way a cluster node does (`seq >
    /// last`): every seq is issued once, none is skipped, and the reader
    /// never sees a seq before one below it has committed.
    #[test]
    fn numbered_appends_from_two_servers_are_gap_free_in_commit_order() {
        let url = fresh_database();
        let (one, two, reader) = (open(&url), open(&url), open(&url));
        // A document written before numbering: its head starts after it.
        one.commit(vec![Write::Append {
            incident: 9,
            seq: 4,
            update: vec![0],
        }])
        .unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (issued, tailed) = std::thread::scope(|scope| {
            let tail = scope.spawn(|| {
                let mut last = 0;
                let mut seen = Vec::new();
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::Acquire);
                    let records = reader.doc_after(7, last).unwrap();
                    for (seq, _) in records.updates {
                        assert_eq!(seq, last + 1, "the tail skipped a seq");
                        last = seq;
                        seen.push(seq);
                    }
                    if finished {
                        return seen;
                    }
                }
            });
            let writers: Vec<_> = [&one, &two]
                .into_iter()
                .map(|backend| {
                    scope.spawn(move || {
                        let mut seqs: Vec<(u64, u64)> = Vec::new();
                        for round in 0..40u8 {
                            // Incidents in both orders: the heads are locked
                            // in one order whatever the group's.
                            let group = [9, 7, 7, 9, 7]
                                .into_iter()
                                .map(|incident| Write::AppendNumbered {
                                    incident,
                                    update: vec![round],
                                })
                                .collect();
                            let incidents = [9, 7, 7, 9, 7];
                            for (incident, outcome) in
                                incidents.into_iter().zip(backend.commit(group).unwrap())
                            {
                                let Outcome::Appended(seq) = outcome else {
                                    panic!("{outcome:?}")
                                };
                                seqs.push((incident, seq));
                            }
                        }
                        seqs
                    })
                })
                .collect();
            let issued: Vec<(u64, u64)> = writers
                .into_iter()
                .flat_map(|writer| writer.join().unwrap())
                .collect();
            done.store(true, std::sync::atomic::Ordering::Release);
            (issued, tail.join().unwrap())
        });
        let of = |incident: u64| {
            let mut seqs: Vec<u64> = issued
                .iter()
                .filter(|(at, _)| *at == incident)
                .map(|(_, seq)| *seq)
                .collect();
            seqs.sort_unstable();
            seqs
        };
        assert_eq!(of(7), (1..=240).collect::<Vec<u64>>());
        assert_eq!(of(9), (5..=164).collect::<Vec<u64>>());
        assert_eq!(tailed, (1..=240).collect::<Vec<u64>>());
        // A snapshot never goes back to cover less.
        one.commit(vec![Write::Compact {
            incident: 7,
            upto: 200,
            snapshot: vec![1],
        }])
        .unwrap();
        two.commit(vec![Write::Compact {
            incident: 7,
            upto: 100,
            snapshot: vec![2],
        }])
        .unwrap();
        let doc = reader.doc(7).unwrap();
        assert_eq!(doc.snapshot, Some((200, vec![1])));
        assert_eq!(doc.updates.first().map(|(seq, _)| *seq), Some(201));
        let after = reader.doc_after(7, 150).unwrap();
        assert_eq!(after.snapshot.map(|(upto, _)| upto), Some(200));
        assert!(reader.doc_after(7, 200).unwrap().snapshot.is_none());
    }

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused_naming_both_versions() {
        let url = fresh_database();
        let backend = open(&url);
        drop(open(&url));
        assert_eq!(
            number(&backend, "SELECT count(*) FROM schema_version"),
            MIGRATIONS.len() as i64
        );
        assert_eq!(
            number(&backend, "SELECT max(version)::bigint FROM schema_version"),
            i64::from(SCHEMA_VERSION)
        );
        let newer = SCHEMA_VERSION + 1;
        backend.execute_for_test(&format!(
            "INSERT INTO schema_version (version) VALUES ({newer})"
        ));
        let Err(error) = PostgresBackend::open(&url, PoolOptions::default()) else {
            panic!("a newer schema was accepted");
        };
        let error = error.to_string();
        assert!(error.contains(&format!("version {newer}")), "{error}");
        assert!(
            error.contains(&format!("version {SCHEMA_VERSION}")),
            "{error}"
        );
    }

    #[test]
    fn an_exhausted_pool_fails_after_its_timeout_with_a_clear_error() {
        let timeout = Duration::from_millis(300);
        let backend = PostgresBackend::open(
            &fresh_database(),
            PoolOptions {
                size: 1,
                connection_timeout: timeout,
            },
        )
        .unwrap();
        let held = backend.hold_connection();
        let started = Instant::now();
        let error = backend.incidents().unwrap_err().to_string();
        assert!(started.elapsed() >= timeout);
        assert!(error.contains("no database connection within"), "{error}");
        assert!(error.contains("pool of 1"), "{error}");
        let error = backend.commit(vec![creation("waits")]).unwrap_err();
        assert!(error.to_string().contains("--store-pool-size"), "{error}");
        drop(held);
        assert!(backend.incidents().unwrap().is_empty());
    }

    #[test]
    fn an_unreachable_database_fails_to_open_with_the_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://postgres@127.0.0.1:{port}/none?sslmode=disable");
        let Err(error) = PostgresBackend::open(
            &url,
            PoolOptions {
                size: 2,
                connection_timeout: Duration::from_millis(500),
            },
        ) else {
            panic!("opened a database nobody serves");
        };
        assert!(
            error.to_string().contains("no database connection within"),
            "{error}"
        );
    }

    #[test]
    fn sslmode_takes_libpqs_values() {
        let config =
            |query: &str| connection_config(&format!("postgres://u@db.example/x{query}")).map(drop);
        for ok in [
            "",
            "?sslmode=disable",
            "?sslmode=prefer",
            "?sslmode=require",
        ] {
            assert!(config(ok).is_ok(), "{ok}");
        }
        let error = config("?sslmode=verify-full").unwrap_err().to_string();
        assert!(error.contains("needs sslrootcert"), "{error}");
        let error = config("?sslmode=sometimes").unwrap_err().to_string();
        assert!(error.contains("sslmode=sometimes"), "{error}");
        let error = config("?sslmode=verify-ca&sslrootcert=%2Fno%2Fsuch.pem")
            .unwrap_err()
            .to_string();
        assert!(error.contains("/no/such.pem"), "{error}");
        let error = config("?sslmode=verify-full&sslrootcert=/dev/null")
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds no certificate"), "{error}");
    }
}

#[cfg(test)]
#[path = "postgres_tls_tests.rs"]
mod tls_tests;
