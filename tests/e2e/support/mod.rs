//! Test support: the real `commandpost` binary on an ephemeral port with a
//! temporary sled directory or a fresh PostgreSQL database, a yrs WebSocket
//! client, and a driver for the stock npm Yjs client (tests/node/yclient.mjs).
//!
//! **Both backends from one body.** [`TestServer::start_on`] (and
//! [`TestServer::start_on_with`]) take a [`Store`]: `Store::Sled` runs on a
//! temporary sled directory as [`TestServer::start`] does;
//! `Store::Postgres` runs `serve --store postgres://...` on a fresh database
//! of this test process's private PostgreSQL ([`test_postgres`], started on
//! first use), with the secret in `COMMANDPOST_SECRET` as always, so
//! [`TestServer::token`] and the other minting helpers work the same.
//! `restart` and `kill9` keep the store. A test body that should hold on
//! both is an `async fn(Store)` and is declared with
//! `both_backends!(name, body)`, which generates the tests `name::sled` and
//! `name::postgres` (filter with `-- name::postgres`).
//!
//! **Clusters.** Several nodes share one PostgreSQL database and one token
//! secret, each on its own loopback address (every 127.0.0.x is loopback on
//! Linux): `TestServer::start_on_url_at(ip, &url, args)` starts the first,
//! `first.start_peer_at(ip)` the others (same store, arguments and secret).
//! In front of them, [`haproxy::HaProxy`] (round-robin, health checks on
//! `/readyz`, the answering node in the `x-served-by` header, backend state
//! from the runtime API); beside them, [`redis::RedisServer`]. Every engine
//! is a real one, private to the test, on a free port in a temporary
//! directory; faults are real (`kill9`: SIGKILL). Each process, servers
//! included, has an [`engine::Watchdog`] that kills it once the test process
//! is gone, however it ended. `cluster_harness.rs` shows them together.

#![allow(dead_code)]

pub mod engine;
pub mod haproxy;
pub mod nginx;
pub mod node;
pub mod redis;
pub mod sse;
#[path = "../../../server/src/store/test_postgres.rs"]
pub mod test_postgres;
pub mod yclient;

/// Which storage backend a [`TestServer`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A temporary sled directory (the default).
    Sled,
    /// A fresh database of this process's test PostgreSQL.
    Postgres,
}

/// Declares `name::sled` and `name::postgres`, two `#[tokio::test]`s
/// running `body(Store::Sled)` and `body(Store::Postgres)`. The test
/// attribute may be given first, e.g. `both_backends!(#[tokio::test(flavor
/// = "multi_thread", worker_threads = 2)] name, body)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        $crate::both_backends!(
            #[tokio::test]
            $name,
            $body
        );
    };
    (#[$test:meta] $name:ident, $body:ident) => {
        mod $name {
            #[$test]
            async fn sled() {
                super::$body($crate::support::Store::Sled).await
            }
            #[$test]
            async fn postgres() {
                super::$body($crate::support::Store::Postgres).await
            }
        }
    };
}

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use commandpost::auth::TokenKeys;
use commandpost_shared::{AccessRole, IncidentId};
use tempfile::TempDir;

/// Generous bound for anything a test waits for; tests never sleep a fixed
/// time, they wait for a condition up to this long.
pub const WAIT: Duration = Duration::from_secs(60);

/// A running server process. Killed on drop.
pub struct TestServer {
    child: Option<Child>,
    /// Kept so the pipe stays open while the server runs.
    _stdout: Option<BufReader<ChildStdout>>,
    pub addr: SocketAddr,
    pub data: Arc<TempDir>,
    secret: String,
    keys: TokenKeys,
    args: Vec<String>,
    /// Start-up count, so each run logs to its own file.
    runs: u32,
    /// `COMMANDPOST_LOG` for this server (else TEST_SERVER_LOG or info).
    log_level: Option<String>,
    /// Kills the server once the test process is gone (the test runner
    /// may be killed), and removes its data directory.
    watchdog: engine::Watchdog,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `serve` arguments and the given log filter.
    pub fn start_logging(level: &str, args: &[&str]) -> Self {
        Self::start_inner(args, Some(level.to_owned()))
    }

    /// Starts with extra `serve` arguments.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_inner(args, None)
    }

    /// Starts on `store`.
    pub fn start_on(store: Store) -> Self {
        Self::start_on_with(store, &[])
    }

    /// Starts on `store` with extra `serve` arguments.
    pub fn start_on_with(store: Store, args: &[&str]) -> Self {
        match store {
            Store::Sled => Self::start_with(args),
            Store::Postgres => Self::start_on_url(&test_postgres::fresh_database(), args),
        }
    }

    /// Starts on the PostgreSQL database at `url` with extra `serve`
    /// arguments.
    pub fn start_on_url(url: &str, args: &[&str]) -> Self {
        let mut all = vec!["--store", url];
        all.extend_from_slice(args);
        Self::start_inner(&all, None)
    }

    /// Starts on the PostgreSQL database at `url`, listening on a free port
    /// of `bind` (e.g. `127.0.0.2`: every 127.0.0.x is loopback on Linux),
    /// so the nodes of a cluster are told apart by address.
    pub fn start_on_url_at(bind: IpAddr, url: &str, args: &[&str]) -> Self {
        let mut all = vec!["--store", url];
        all.extend_from_slice(args);
        Self::start_full(bind, None, &all, None)
    }

    /// Another node of the same cluster: the same store (`--store`), the
    /// same extra arguments and the same token secret as this server, so
    /// either accepts the other's tokens, listening on a free port of
    /// `bind`. Its own data directory and log. For PostgreSQL servers:
    /// nodes on sled would not share data.
    pub fn start_peer_with(&self, bind: IpAddr, args: &[&str]) -> Self {
        let url = self.postgres_url().expect("a PostgreSQL server").to_owned();
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        Self::start_full(
            bind,
            Some(self.secret.clone()),
            &all,
            self.log_level.clone(),
        )
    }

    /// [`TestServer::start_peer_at`] with other `serve` arguments than this
    /// server's (the store and secret are the same).
    pub fn start_peer_at(&self, bind: IpAddr) -> Self {
        assert!(
            self.postgres_url().is_some(),
            "nodes share data only on PostgreSQL: start the first with start_on_url_at"
        );
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Self::start_full(
            bind,
            Some(self.secret.clone()),
            &args,
            self.log_level.clone(),
        )
    }

    fn start_inner(args: &[&str], log_level: Option<String>) -> Self {
        Self::start_full(IpAddr::V4(Ipv4Addr::LOCALHOST), None, args, log_level)
    }

    fn start_full(
        bind: IpAddr,
        secret: Option<String>,
        args: &[&str],
        log_level: Option<String>,
    ) -> Self {
        let data = Arc::new(
            tempfile::Builder::new()
                .prefix("commandpost-test")
                .tempdir()
                .unwrap(),
        );
        let secret = secret.unwrap_or_else(|| {
            uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
        });
        let keys = TokenKeys::from_secret(secret.as_bytes());
        let watchdog = engine::Watchdog::start_with(
            data.path().with_extension("watchdog"),
            &[data.path()],
            "test server",
        );
        let mut server = Self {
            child: None,
            _stdout: None,
            addr: SocketAddr::new(bind, 0),
            data,
            secret,
            keys,
            args: args.iter().map(|s| s.to_string()).collect(),
            runs: 0,
            log_level,
            watchdog,
        };
        server.spawn(SocketAddr::new(bind, 0));
        server
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.data.path().join(format!("server-{run}.log"))
    }

    fn spawn(&mut self, listen: SocketAddr) {
        self.runs += 1;
        let log_path = self.log_path(self.runs);
        let log = File::create(&log_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_commandpost"))
            .arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--data")
            .arg(self.data.path())
            .args(&self.args)
            .env("COMMANDPOST_SECRET", &self.secret)
            .env(
                "COMMANDPOST_LOG",
                self.log_level.clone().unwrap_or_else(|| {
                    std::env::var("TEST_SERVER_LOG").unwrap_or_else(|_| "info".into())
                }),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start the commandpost binary");
        self.watchdog.set_pids(&[child.id()]);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let read = stdout.read_line(&mut line).unwrap();
            assert!(
                read > 0,
                "server exited before listening; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            if let Some(rest) = line.trim().strip_prefix("Listening on:") {
                let url = rest.trim().trim_start_matches("http://");
                break url.parse::<SocketAddr>().unwrap();
            }
        };
        self.addr = addr;
        self.child = Some(child);
        self._stdout = Some(stdout);
    }

    /// Kills the process with SIGKILL, like a crash or the OOM killer.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.watchdog.set_pids(&[]);
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.watchdog.set_pids(&[]);
                return status;
            }
            assert!(
                started.elapsed() < WAIT,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory (and, when it is
    /// free, the same port, so clients can reconnect by themselves; always
    /// the same IP address).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let listen = if std::net::TcpListener::bind(self.addr).is_ok() {
            self.addr
        } else {
            SocketAddr::new(self.addr.ip(), 0)
        };
        self.spawn(listen);
    }

    /// Everything every run of this server logged.
    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|run| std::fs::read_to_string(self.log_path(run)).unwrap_or_default())
            .collect()
    }

    /// Whether the server process is still running (it has not exited or
    /// been killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// The server process id (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// The value of one `/metrics` line (`name` with its labels), `None`
    /// when the server reports no such line.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    /// The PostgreSQL URL this server stores in (`None` on sled).
    pub fn postgres_url(&self) -> Option<&str> {
        self.args
            .iter()
            .position(|arg| arg == "--store")
            .map(|at| self.args[at + 1].as_str())
            .filter(|url| url.starts_with("postgres"))
    }

    /// The token signing secret this server runs with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    pub fn token(&self, role: AccessRole, name: &str) -> String {
        self.keys.mint(
            &name.to_lowercase(),
            name,
            role,
            None,
            Duration::from_secs(3600),
        )
    }

    pub fn scoped_token(&self, role: AccessRole, name: &str, incident: &IncidentId) -> String {
        self.keys.mint(
            &name.to_lowercase(),
            name,
            role,
            Some(incident.clone()),
            Duration::from_secs(3600),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The base URL a y-websocket client takes (it appends `/<room>`).
    pub fn ws_base(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn ws_url(&self, incident: &IncidentId, token: &str) -> String {
        format!("ws://{}/ws/{}?token={}", self.addr, incident, token)
    }

    /// Declares an incident as an admin and returns its id.
    pub async fn create_incident(&self, title: &str) -> IncidentId {
        let response = reqwest::Client::new()
            .post(self.url("/api/incidents"))
            .bearer_auth(self.token(AccessRole::Admin, "Admin"))
            .json(&serde_json::json!({ "title": title }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let body: serde_json::Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// POSTs a JSON body with a bearer token; returns status and JSON body.
    pub async fn post_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Runs the sidecar command `name` on `incident` (`POST
    /// /api/incidents/{incident}/commands/{name}`); returns status and body.
    pub async fn command(
        &self,
        incident: &str,
        token: &str,
        name: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post_json(
            &format!("/api/incidents/{incident}/commands/{name}"),
            token,
            &body,
        )
        .await
    }

    /// A token for `name` (id: the name in lowercase) that has been used
    /// once, so the server knows its holder and commands may name them.
    pub async fn known_token(&self, role: AccessRole, name: &str) -> String {
        let token = self.token(role, name);
        let (status, me) = self.get_json("/api/me", &token).await;
        assert_eq!(status, 200, "{me}");
        token
    }

    pub async fn get_json(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            eprintln!("--- last server log lines ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Waits until `condition` holds, polling; panics naming `what` on timeout.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads a gzipped editing trace from data/editing-traces (see its README).
pub fn load_trace(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/editing-traces")
        .join(format!("{name}.json.gz"));
    let file = File::open(&path).unwrap_or_else(|error| {
        panic!(
            "cannot open the editing trace {} ({error}); it ships in data/editing-traces",
            path.display()
        )
    });
    serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap()
}

/// One patch of a sequential trace: position and delete count in Unicode
/// code points, then the inserted text.
pub type Patch = (u32, u32, String);

/// The transactions of a sequential trace.
pub fn trace_txns(trace: &serde_json::Value) -> Vec<Vec<Patch>> {
    trace["txns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|txn| {
            txn["patches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().unwrap() as u32,
                        p[1].as_u64().unwrap() as u32,
                        p[2].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

/// A `commandpost serve` started by hand on the arguments given (e.g. a
/// restored or copied store), with `secret` in `COMMANDPOST_SECRET`, on an
/// ephemeral port of 127.0.0.1. Killed on drop.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
}

impl Served {
    pub fn start(store_args: &[String], secret: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_commandpost"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(store_args)
            .env("COMMANDPOST_SECRET", secret)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the commandpost binary");
        let stdout = child.stdout.take().unwrap();
        // Keep reading its stdout until the end: a closed pipe would make
        // the server's next banner line fail.
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.trim().strip_prefix("Listening on:") {
                    let _ = addr_tx.send(rest.trim().trim_start_matches("http://").to_owned());
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(WAIT)
            .expect("the server did not start")
            .parse()
            .unwrap();
        Self { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, incident: &IncidentId, token: &str) -> String {
        format!("ws://{}/ws/{}?token={}", self.addr, incident, token)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loopback address `127.0.0.last`: cluster nodes each get their own.
pub fn loopback(last: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last))
}

/// `count` cluster nodes on 127.0.0.2, .3, … sharing a fresh database of
/// the test PostgreSQL, `redis` (`--redis`) and a secret, with extra
/// `serve` arguments.
pub fn cluster_nodes(count: u8, redis: &redis::RedisServer, args: &[&str]) -> Vec<TestServer> {
    let database = test_postgres::fresh_database();
    let url = redis.url();
    let mut all = vec!["--redis", url.as_str()];
    all.extend_from_slice(args);
    let first = TestServer::start_on_url_at(loopback(2), &database, &all);
    let mut nodes = vec![first];
    for n in 1..count {
        let peer = nodes[0].start_peer_at(loopback(2 + n));
        nodes.push(peer);
    }
    nodes
}
