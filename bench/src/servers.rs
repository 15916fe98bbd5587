//! The servers under test: starting each one pinned to its core, creating
//! documents on it, and reading its CPU time and memory from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use commandpost::auth::TokenKeys;
use commandpost_shared::{AccessRole, CreateIncident, Incident};
use serde::Serialize;

use crate::test_postgres::PgServer;
use crate::wire::Flavor;

/// The servers the benchmark knows how to run.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Command Post (this repository), release build, on sled (its default
    /// store).
    Commandpost,
    /// Command Post on PostgreSQL (`serve --store postgres://...`): a fresh
    /// database of a private PostgreSQL the benchmark starts, on the same
    /// host and pinned to the servers' core.
    CommandpostPostgres,
    /// The reference y-websocket server, `@y/websocket-server` 0.1.1.
    Ywebsocket,
    /// `@hocuspocus/server` 4.7.0.
    Hocuspocus,
    /// `y-sweet` 0.9.1 from crates.io.
    Ysweet,
    /// `bench/src/bin/ceiling.rs`: relays frames, nothing else.
    Ceiling,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Commandpost => "Command Post",
            Kind::CommandpostPostgres => "Command Post on PostgreSQL",
            Kind::Ywebsocket => "y-websocket-server 0.1.1",
            Kind::Hocuspocus => "Hocuspocus 4.7.0",
            Kind::Ysweet => "y-sweet 0.9.1",
            Kind::Ceiling => "ceiling (relay only)",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Kind::Commandpost => "commandpost",
            Kind::CommandpostPostgres => "commandpost-postgres",
            Kind::Ywebsocket => "ywebsocket",
            Kind::Hocuspocus => "hocuspocus",
            Kind::Ysweet => "ysweet",
            Kind::Ceiling => "ceiling",
        }
    }

    /// Whether the server runs only in the durable-writes scenario: Command
    /// Post on PostgreSQL differs from the sled one in its storage alone,
    /// which the fan-out, connection and join scenarios do not measure.
    pub fn storage_only(self) -> bool {
        self == Kind::CommandpostPostgres
    }

    /// Whether the server answers the sync handshake (the ceiling does not).
    pub fn syncs(self) -> bool {
        self != Kind::Ceiling
    }

    /// Whether the server keeps documents in storage across restarts, as
    /// installed by the benchmark.
    pub fn stores(self) -> bool {
        matches!(
            self,
            Kind::Commandpost | Kind::CommandpostPostgres | Kind::Ysweet
        )
    }

    /// Whether this is Command Post (on either store).
    pub fn is_commandpost(self) -> bool {
        matches!(self, Kind::Commandpost | Kind::CommandpostPostgres)
    }

    /// The store Command Post runs on, for the reports.
    pub fn store(self) -> Option<&'static str> {
        match self {
            Kind::Commandpost => Some("sled"),
            Kind::CommandpostPostgres => Some("PostgreSQL"),
            _ => None,
        }
    }

    /// How durable a write is when the server has taken it, in the
    /// configuration benchmarked (see bench/peers/README.md for sources).
    pub fn durability(self) -> &'static str {
        match self {
            Kind::Commandpost => {
                "every update appended to sled and fsynced by a group-commit writer; the client can opt in to a \"saved up to n\" acknowledgement sent after the fsync"
            }
            Kind::CommandpostPostgres => {
                "every update committed by PostgreSQL (same host, fsync on, synchronous_commit on: the commit returns after its WAL is flushed); group commit: one writer puts every update queued meanwhile in one transaction (one multi-row INSERT); the \"saved up to n\" acknowledgement is sent after the commit returns"
            }
            Kind::Ywebsocket => {
                "in memory only (no YPERSISTENCE configured; with it, each update is written to LevelDB asynchronously); documents are never unloaded; no acknowledgement"
            }
            Kind::Hocuspocus => {
                "in memory only (no persistence extension configured), and a document is destroyed when its last connection closes; with the Database extension, stores are debounced (2 s, at most 10 s); its SyncStatus reply means \"applied in memory\", not saved"
            }
            Kind::Ysweet => {
                "whole-document snapshot written to its store at most every 10 s (no fsync, no atomic rename); SIGTERM loses changes since the last write; no per-update acknowledgement"
            }
            Kind::Ceiling => "nothing is stored",
        }
    }
}

/// Paths to everything the servers need.
#[derive(Clone, Debug)]
pub(crate) struct Installed {
    pub commandpost: PathBuf,
    pub ceiling: PathBuf,
    pub node: PathBuf,
    pub peers: PathBuf,
    pub ysweet: PathBuf,
    pub work: PathBuf,
    /// The core servers are pinned to (`taskset -c`).
    pub server_cpu: String,
    /// Extra arguments for `commandpost serve`.
    pub commandpost_args: Vec<String>,
    /// The private PostgreSQL of this run, when a server needs one.
    pub postgres: Option<Rc<Postgres>>,
}

/// The benchmark's own PostgreSQL (never one already running here): started
/// with `initdb` and `pg_ctl` in a temporary directory by the server's test
/// harness (server/src/store/test_postgres.rs), pinned to the servers' core,
/// stopped and removed when the benchmark ends.
pub(crate) struct Postgres {
    server: PgServer,
    /// The postmaster; its children are the server's other processes.
    postmaster: u32,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("postmaster", &self.postmaster)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Starts the server and pins it to `cpu` (`taskset -c`). Fails, naming
    /// the fix, without PostgreSQL installed.
    pub(crate) fn start(cpu: &str) -> Result<Postgres> {
        let server = PgServer::start().map_err(|error| anyhow::anyhow!(error))?;
        // The port is the one in its URLs; the postmaster is the process
        // that listens on it (`postgres -D ... -p PORT`).
        let url = server.url("postgres");
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .context("the PostgreSQL URL has no port")?
            .to_owned();
        let postmaster = postmaster_of(&port)
            .with_context(|| format!("cannot find the PostgreSQL listening on port {port}"))?;
        let postgres = Postgres { server, postmaster };
        // Backends forked later inherit the postmaster's affinity.
        for pid in postgres.pids() {
            pin(pid, cpu, "PostgreSQL")?;
        }
        Ok(postgres)
    }

    /// The URL of a new, empty database.
    pub(crate) fn fresh_database(&self) -> String {
        self.server.create_database()
    }

    /// The postmaster and its live children (the backends, the WAL
    /// writer, the checkpointer...).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.postmaster];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if parent_of(pid) == Some(self.postmaster) {
                pids.push(pid);
            }
        }
        pids
    }

    /// CPU seconds of the whole server so far: its live processes, and the
    /// children it has reaped.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let reaped = std::fs::read_to_string(format!("/proc/{}/stat", self.postmaster))
            .ok()
            .and_then(|stat| {
                let rest = stat.rsplit_once(')')?.1.to_owned();
                let fields: Vec<&str> = rest.split_whitespace().collect();
                // cutime and cstime: fields 16 and 17 (1-based).
                Some(
                    fields
                        .get(13..15)?
                        .iter()
                        .filter_map(|v| v.parse::<f64>().ok())
                        .sum::<f64>(),
                )
            })
            .unwrap_or(0.0);
        reaped / clock_ticks()
            + self
                .pids()
                .into_iter()
                .map(|pid| ProcStats::read(pid).cpu_seconds)
                .sum::<f64>()
    }
}

/// Pins process `pid` (all its threads) to `cpu` (`taskset -a -p -c`).
pub(crate) fn pin(pid: u32, cpu: &str, what: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("taskset could not pin {what} process {pid} to core {cpu}");
    }
    Ok(())
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The `postgres` process started with `-p port`.
fn postmaster_of(port: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_postgres = args
            .first()
            .is_some_and(|program| program.ends_with(b"postgres"));
        if is_postgres
            && args
                .windows(2)
                .any(|pair| pair[0] == b"-p" && pair[1] == port.as_bytes())
        {
            return Some(pid);
        }
    }
    None
}

impl Installed {
    /// Whether this server can run here (peers may be left out).
    pub(crate) fn available(&self, kind: Kind) -> Result<()> {
        let need = |path: &Path, how: &str| {
            if path.exists() {
                Ok(())
            } else {
                bail!("{} not found at {}: {how}", kind.label(), path.display())
            }
        };
        match kind {
            Kind::Commandpost => need(
                &self.commandpost,
                "build it with cargo build --release -p commandpost",
            ),
            Kind::CommandpostPostgres => {
                need(
                    &self.commandpost,
                    "build it with cargo build --release -p commandpost",
                )?;
                if self.postgres.is_none() {
                    bail!("the benchmark's PostgreSQL was not started");
                }
                Ok(())
            }
            Kind::Ceiling => need(
                &self.ceiling,
                "build it with cargo build --release -p commandpost-bench",
            ),
            Kind::Ywebsocket | Kind::Hocuspocus => {
                need(&self.node, "run npm ci in bench/peers (bench/run.sh does)")
            }
            Kind::Ysweet => need(
                &self.ysweet,
                "bench/run.sh installs it with cargo install y-sweet",
            ),
        }
    }
}

pub(crate) const SECRET: &str = "benchmark-secret-benchmark-secret-0123456789";

/// A running server.
pub(crate) struct Server {
    pub kind: Kind,
    pub port: u16,
    child: Child,
    pub dir: PathBuf,
    /// Command Post on PostgreSQL: its database (kept across restarts).
    database: Option<String>,
    installed: Installed,
    http: reqwest::Client,
    admin: String,
    viewer: String,
    editor: String,
    next_doc: u64,
}

/// A document on a server, and how to reach it.
#[derive(Clone, Debug)]
pub(crate) struct DocTarget {
    pub url: String,
    pub flavor: Flavor,
    pub kind: Kind,
}

/// Options the scenarios pass to a server.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tuning {
    /// Command Post: unload idle rooms after this long (cold joins).
    pub room_idle_timeout: Option<Duration>,
    /// Command Post on PostgreSQL: store in this database instead of a
    /// fresh one (the nodes of a cluster share one).
    pub database: Option<String>,
    /// Command Post: join a cluster through this Redis (`--redis`).
    pub redis: Option<String>,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Server {
    pub(crate) fn start(
        installed: &Installed,
        kind: Kind,
        name: &str,
        tuning: &Tuning,
    ) -> Result<Server> {
        installed.available(kind)?;
        let dir = installed.work.join("runs").join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let keys = TokenKeys::from_secret(SECRET.as_bytes());
        let day = Duration::from_secs(86_400);
        let database = match (&installed.postgres, kind) {
            (Some(postgres), Kind::CommandpostPostgres) => Some(
                tuning
                    .database
                    .clone()
                    .unwrap_or_else(|| postgres.fresh_database()),
            ),
            _ => None,
        };
        let mut server = Server {
            kind,
            port: free_port()?,
            child: Command::new("true").spawn()?,
            dir,
            database,
            installed: installed.clone(),
            http: reqwest::Client::new(),
            admin: keys.mint("bench-admin", "Bench admin", AccessRole::Admin, None, day),
            viewer: keys.mint(
                "bench-viewer",
                "Bench viewer",
                AccessRole::Viewer,
                None,
                day,
            ),
            editor: keys.mint(
                "bench-editor",
                "Bench editor",
                AccessRole::Responder,
                None,
                day,
            ),
            next_doc: 0,
        };
        let _ = server.child.wait();
        server.spawn(tuning)?;
        Ok(server)
    }

    fn spawn(&mut self, tuning: &Tuning) -> Result<()> {
        let i = &self.installed;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(&i.server_cpu);
        let port = self.port.to_string();
        match self.kind {
            Kind::Commandpost | Kind::CommandpostPostgres => {
                cmd.arg(&i.commandpost)
                    .args(["serve", "--listen"])
                    .arg(format!("127.0.0.1:{port}"));
                match &self.database {
                    Some(url) => cmd.arg("--store").arg(url),
                    None => cmd.arg("--data").arg(self.dir.join("data")),
                };
                cmd.env("COMMANDPOST_SECRET", SECRET)
                    .env("COMMANDPOST_LOG", "warn");
                cmd.args(&i.commandpost_args);
                if let Some(redis) = &tuning.redis {
                    cmd.arg("--redis").arg(redis);
                }
                if let Some(timeout) = tuning.room_idle_timeout {
                    cmd.arg("--room-idle-timeout")
                        .arg(format!("{}ms", timeout.as_millis()));
                }
            }
            Kind::Ceiling => {
                cmd.arg(&i.ceiling)
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"));
            }
            Kind::Ywebsocket => {
                cmd.arg(&i.node)
                    .arg(i.peers.join("ywebsocket.mjs"))
                    .env("HOST", "127.0.0.1")
                    .env("PORT", &port);
            }
            Kind::Hocuspocus => {
                cmd.arg(&i.node)
                    .arg(i.peers.join("hocuspocus.mjs"))
                    .env("HOST", "127.0.0.1")
                    .env("PORT", &port);
            }
            Kind::Ysweet => {
                cmd.arg(&i.ysweet)
                    .arg("serve")
                    .arg(self.dir.join("store"))
                    .args(["--host", "127.0.0.1", "--port", &port])
                    .env("RUST_LOG", "warn");
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = cmd.spawn().with_context(|| {
            format!("cannot start {} (is taskset installed?)", self.kind.label())
        })?;
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} while starting; see {}",
                    self.kind.label(),
                    self.dir.join("server.log").display()
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{} did not listen within 60 s", self.kind.label());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and starts it
    /// again on the same port and data: documents must come from storage.
    pub(crate) fn restart(&mut self, tuning: &Tuning) -> Result<()> {
        self.stop();
        self.spawn(tuning)
    }

    /// Kills the server with SIGKILL, as a machine failure would.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn stop(&mut self) {
        // Already gone (killed): its pid may belong to another process now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        // y-sweet saves its documents on SIGINT only; the others stop
        // cleanly on SIGTERM.
        let signal = if self.kind == Kind::Ysweet {
            "-INT"
        } else {
            "-TERM"
        };
        let _ = Command::new("kill").args([signal, &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The token a viewer or editor presents (Command Post only).
    pub(crate) fn token(&self, write: bool) -> &str {
        if write { &self.editor } else { &self.viewer }
    }

    /// Creates a new, empty document and says how to reach it.
    pub(crate) async fn new_doc(&mut self) -> Result<DocTarget> {
        self.next_doc += 1;
        let base = format!("ws://127.0.0.1:{}", self.port);
        let name = format!("bench-doc-{}", self.next_doc);
        let (url, flavor) = match self.kind {
            Kind::Commandpost | Kind::CommandpostPostgres => {
                let response = self
                    .http
                    .post(format!("http://127.0.0.1:{}/api/incidents", self.port))
                    .bearer_auth(&self.admin)
                    .json(&CreateIncident {
                        title: format!("Benchmark {}", self.next_doc),
                        severity: None,
                        criteria: None,
                        summary: None,
                    })
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("creating an incident failed: {}", response.text().await?);
                }
                let incident: Incident = response.json().await?;
                (format!("{base}/ws/{}", incident.id), Flavor::YWebsocket)
            }
            Kind::Ywebsocket | Kind::Ceiling => (format!("{base}/{name}"), Flavor::YWebsocket),
            Kind::Hocuspocus => (base.clone(), Flavor::Hocuspocus { doc: name }),
            Kind::Ysweet => {
                let response = self
                    .http
                    .post(format!("http://127.0.0.1:{}/doc/new", self.port))
                    .json(&serde_json::json!({ "docId": name }))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!(
                        "creating a y-sweet document failed: {}",
                        response.text().await?
                    );
                }
                (format!("{base}/d/{name}/ws/{name}"), Flavor::YWebsocket)
            }
        };
        Ok(DocTarget {
            url,
            flavor,
            kind: self.kind,
        })
    }

    /// The URL a client opens, with its credentials.
    pub(crate) fn connect_url(&self, doc: &DocTarget, write: bool) -> String {
        match self.kind {
            Kind::Commandpost | Kind::CommandpostPostgres => {
                format!("{}?token={}", doc.url, self.token(write))
            }
            _ => doc.url.clone(),
        }
    }

    pub(crate) fn stats(&self) -> ProcStats {
        ProcStats::read(self.pid())
    }

    /// Busy seconds of the servers' core so far (see [`core_busy_seconds`]).
    pub(crate) fn core_busy_seconds(&self) -> Option<f64> {
        core_busy_seconds(&self.installed.server_cpu)
    }

    /// Command Post: its group commits so far and their total seconds
    /// (`store_flush_seconds` of its /metrics).
    pub(crate) async fn group_commits(&self) -> Option<(f64, f64)> {
        if !self.kind.is_commandpost() {
            return None;
        }
        let text = self
            .http
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let value = |name: &str| {
            // The name may carry the registry's prefix.
            text.lines()
                .filter_map(|line| line.split_once(' '))
                .find(|(metric, _)| metric.ends_with(name))
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        };
        Some((
            value("store_flush_seconds_count")?,
            value("store_flush_seconds_sum")?,
        ))
    }

    /// CPU seconds of the PostgreSQL the server stores in, so far (None on
    /// other stores).
    pub(crate) fn database_cpu_seconds(&self) -> Option<f64> {
        self.database.as_ref()?;
        Some(self.installed.postgres.as_ref()?.cpu_seconds())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct ProcStats {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

impl ProcStats {
    pub(crate) fn read(pid: u32) -> ProcStats {
        let mut stats = ProcStats::default();
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the parenthesised command name; utime and stime
            // are fields 14 and 15 (1-based), in clock ticks.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks: f64 = fields
                    .get(11..13)
                    .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
                    .unwrap_or(0.0);
                stats.cpu_seconds = ticks / clock_ticks();
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                let value = || {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("VmRSS:") {
                    stats.rss_kib = value();
                } else if line.starts_with("VmHWM:") {
                    stats.peak_rss_kib = value();
                }
            }
        }
        stats
    }

    pub(crate) fn own() -> ProcStats {
        ProcStats::read(std::process::id())
    }
}

/// The core this process may run on (`taskset -c 1` in bench/run.sh), if
/// one.
pub(crate) fn own_core() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    list.parse::<u32>().ok().map(|core| core.to_string())
}

/// Busy CPU seconds of core `cpu` so far, whoever ran there (`/proc/stat`:
/// user, nice, system, irq, softirq); None unless `cpu` is one core.
pub(crate) fn core_busy_seconds(cpu: &str) -> Option<f64> {
    let cpu: u32 = cpu.trim().parse().ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|line| line.split_whitespace().next() == Some(&format!("cpu{cpu}")))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&at| ticks.get(at))
        .sum::<f64>();
    Some(busy / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
