//! A private HAProxy in front of `commandpost` nodes: Debian's `haproxy` on a
//! free port of 127.0.0.1, configured from a file in a temporary directory.
//!
//! The configuration is what a deployment would run: `mode http`,
//! round-robin over the backends with no stickiness, WebSocket-friendly
//! timeouts (`timeout tunnel 1h`, client and server 1h), health checks
//! `option httpchk GET /readyz` every 500 ms (`fall 2 rise 1`), a node
//! marked down at its first refused connection (`observe layer4
//! error-limit 1 on-error mark-down`), `option redispatch 1` and `retries
//! 3`. Each backend is a `server` named after its
//! address (`127.0.0.2:41234`), and every response carries the name of the
//! node that answered in the [`SERVED_BY`] header (added by HAProxy, not the
//! server), so a test sees where round-robin sent each request.
//!
//! Backend state comes from HAProxy's runtime API on a unix socket in the
//! temporary directory (`show servers state`), not from timing:
//! [`HaProxy::wait_all_up`] waits until every backend passed its latest
//! health check, [`HaProxy::wait_down`] until one is marked down. A
//! backend that was killed may still be considered up for a check or two;
//! wait for [`HaProxy::wait_down`] before expecting every request to reach
//! the others (a refused connection marks it down and is redispatched).
//!
//! [`HaProxy::reload_with`] swaps the backend list the way operators do
//! (a new process with `-sf <old pid>`: it takes over the port, the old one
//! stops listening and finishes its open connections). [`HaProxy::kill9`]
//! and [`HaProxy::restart`] crash and restart the proxy itself. Every
//! process is killed on drop, and a [`Watchdog`] kills them when the test
//! process is gone. Without `haproxy` installed, [`HaProxy::start`] panics
//! naming the fix.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use commandpost_shared::IncidentId;
use tempfile::TempDir;

use super::engine::{self, Watchdog};

/// The response header naming the backend (its address) that answered.
pub const SERVED_BY: &str = "x-served-by";
/// The HAProxy backend holding the nodes.
const BACKEND: &str = "commandpost_nodes";

/// A backend as HAProxy's runtime API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendState {
    pub addr: SocketAddr,
    /// `srv_op_state`: 0 stopped (down), 1 starting, 2 running (up), 3
    /// stopping.
    pub op_state: u8,
    /// `srv_check_result` of the latest health check: 0 unknown, 1
    /// neutral, 2 failed, 3 passed, 4 passed conditionally.
    pub check_result: u8,
}

impl BackendState {
    /// Receiving traffic, and its latest health check passed.
    pub fn is_up(&self) -> bool {
        self.op_state == 2 && self.check_result == 3
    }

    /// Marked down: no traffic goes to it.
    pub fn is_down(&self) -> bool {
        self.op_state == 0
    }
}

/// A running HAProxy. Killed on drop.
pub struct HaProxy {
    child: Option<Child>,
    /// Processes replaced by [`HaProxy::reload_with`], finishing their
    /// connections.
    retired: Vec<Child>,
    port: u16,
    backends: Vec<SocketAddr>,
    program: PathBuf,
    /// Declared before `dir`: dropped (stopped) before the directory goes.
    watchdog: Watchdog,
    dir: TempDir,
    /// Start-up count: each run has its own configuration and log.
    runs: u32,
}

impl HaProxy {
    /// Starts a proxy round-robining over `backends` (loopback addresses
    /// of `commandpost` nodes). Returns once it accepts connections; the
    /// backends' health is not awaited ([`HaProxy::wait_all_up`]).
    pub fn start(backends: &[SocketAddr]) -> Self {
        let program = engine::find_program(
            "haproxy",
            &["/usr/sbin", "/usr/local/sbin", "/sbin"],
            "haproxy",
            "the cluster tests put their own HAProxy in front of the nodes",
        );
        let dir = tempfile::Builder::new()
            .prefix("commandpost-haproxy")
            .tempdir()
            .unwrap();
        let watchdog = Watchdog::start(dir.path(), "HAProxy");
        let mut proxy = Self {
            child: None,
            retired: Vec::new(),
            port: 0,
            backends: backends.to_vec(),
            program,
            watchdog,
            dir,
            runs: 0,
        };
        // The free port may be taken before HAProxy binds it: retry with
        // another.
        let mut failures = Vec::new();
        for _ in 0..5 {
            proxy.port = engine::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
            match proxy.spawn(None) {
                Ok(()) => return proxy,
                Err(error) => failures.push(error),
            }
        }
        panic!("cannot start haproxy:\n{}", failures.join("\n"));
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("haproxy-{run}.log"))
    }

    /// The configuration for the current port and backends.
    fn config(&self) -> String {
        let servers: String = self
            .backends
            .iter()
            .map(|addr| format!("    server {addr} {addr} check\n"))
            .collect();
        // The configuration the README documents, with this run's values.
        include_str!("../../../docs/cluster/haproxy.cfg")
            .replace(
                "{{STATS_SOCKET}}",
                &self.socket_path().display().to_string(),
            )
            .replace("{{BIND}}", &format!("127.0.0.1:{}", self.port))
            .replace("{{SERVERS}}", servers.trim_end())
    }

    /// Writes the configuration and starts a process (`-sf old` when it
    /// replaces `old`); waits until it accepts connections and its runtime
    /// API answers. Its log when it exits first.
    fn spawn(&mut self, replacing: Option<u32>) -> Result<(), String> {
        self.runs += 1;
        let config = self.dir.path().join(format!("haproxy-{}.cfg", self.runs));
        std::fs::write(&config, self.config()).unwrap();
        let log = self.log_path(self.runs);
        let mut command = Command::new(&self.program);
        command.arg("-db").arg("-f").arg(&config);
        if let Some(old) = replacing {
            command.arg("-sf").arg(old.to_string());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.program.display()));
        if let Some(old) = self.child.replace(child) {
            self.retired.push(old);
        }
        self.update_watchdog();
        let started = std::time::Instant::now();
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                self.update_watchdog();
                return Err(format!(
                    "haproxy on port {} exited ({status}); its log:\n{}",
                    self.port,
                    engine::tail(&log, 30)
                ));
            }
            let pid = child.id();
            // The runtime API of the new process (the old one's socket is
            // replaced by the new one's when it is ready).
            let ours = self
                .runtime("show info")
                .is_ok_and(|info| info.lines().any(|line| line == format!("Pid: {pid}")));
            if ours && engine::accepts(self.addr()) {
                return Ok(());
            }
            assert!(
                started.elapsed() < super::WAIT,
                "timed out waiting for haproxy to accept connections; its log:\n{}",
                engine::tail(&log, 30)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn update_watchdog(&self) {
        let pids: Vec<u32> = self
            .child
            .iter()
            .chain(&self.retired)
            .map(Child::id)
            .collect();
        self.watchdog.set_pids(&pids);
    }

    /// The frontend's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://<frontend><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    /// The document WebSocket of `incident` through the proxy.
    pub fn ws_url(&self, incident: &IncidentId, token: &str) -> String {
        format!("ws://{}/ws/{}?token={}", self.addr(), incident, token)
    }

    /// The backends of the current configuration.
    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    /// The proxy process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("haproxy is running").id()
    }

    /// Sends `command` to the runtime API (one command per connection);
    /// its answer.
    pub fn runtime(&self, command: &str) -> Result<String, String> {
        let fail = |error: std::io::Error| format!("haproxy runtime API `{command}`: {error}");
        let mut socket = UnixStream::connect(self.socket_path()).map_err(fail)?;
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(fail)?;
        socket
            .write_all(format!("{command}\n").as_bytes())
            .map_err(fail)?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).map_err(fail)?;
        Ok(answer)
    }

    /// Every backend's state (`show servers state`).
    pub fn states(&self) -> Result<Vec<BackendState>, String> {
        let answer = self.runtime(&format!("show servers state {BACKEND}"))?;
        let header: Vec<&str> = answer
            .lines()
            .find_map(|line| line.strip_prefix("# "))
            .ok_or_else(|| format!("unexpected `show servers state` answer: {answer}"))?
            .split_whitespace()
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|column| *column == name)
                .ok_or_else(|| format!("no column {name} in `show servers state`: {answer}"))
        };
        let (name, op_state, check_result) = (
            column("srv_name")?,
            column("srv_op_state")?,
            column("srv_check_result")?,
        );
        answer
            .lines()
            .filter(|line| !line.starts_with('#') && line.split_whitespace().count() > 1)
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let field = |at: usize| {
                    fields
                        .get(at)
                        .copied()
                        .ok_or_else(|| format!("short line in `show servers state`: {line}"))
                };
                Ok(BackendState {
                    addr: field(name)?
                        .parse()
                        .map_err(|error| format!("server name {line}: {error}"))?,
                    op_state: field(op_state)?
                        .parse()
                        .map_err(|error| format!("{error}"))?,
                    check_result: field(check_result)?
                        .parse()
                        .map_err(|error| format!("{error}"))?,
                })
            })
            .collect()
    }

    /// The state of the backend at `addr`.
    pub fn state(&self, addr: SocketAddr) -> Option<BackendState> {
        self.states()
            .ok()?
            .into_iter()
            .find(|state| state.addr == addr)
    }

    /// Waits until every backend passed its latest health check.
    pub async fn wait_all_up(&self) {
        let backends = self.backends.clone();
        for addr in backends {
            self.wait_up(addr).await;
        }
    }

    /// Waits until the backend at `addr` passed its latest health check.
    pub async fn wait_up(&self, addr: SocketAddr) {
        self.wait_state(addr, "up", BackendState::is_up).await;
    }

    /// Waits until HAProxy marked the backend at `addr` down.
    pub async fn wait_down(&self, addr: SocketAddr) {
        self.wait_state(addr, "down", BackendState::is_down).await;
    }

    async fn wait_state(&self, addr: SocketAddr, what: &str, holds: fn(&BackendState) -> bool) {
        assert!(
            self.backends.contains(&addr),
            "{addr} is not a backend of this proxy ({:?})",
            self.backends
        );
        let started = std::time::Instant::now();
        loop {
            let state = self.state(addr);
            if state.as_ref().is_some_and(holds) {
                return;
            }
            assert!(
                started.elapsed() < super::WAIT,
                "timed out waiting for HAProxy to consider {addr} {what} (now: {state:?}); its log:\n{}",
                engine::tail(&self.log_path(self.runs), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the backend list: a new process with the new configuration
    /// takes over the port (`-sf`), the old one finishes its open
    /// connections (WebSockets included) and exits. Returns once the new
    /// one answers; the new backends' health is not awaited.
    pub fn reload_with(&mut self, backends: &[SocketAddr]) {
        let old = self.pid();
        self.backends = backends.to_vec();
        if let Err(error) = self.spawn(Some(old)) {
            panic!("cannot reload haproxy: {error}");
        }
        // Reap the replaced processes that have finished.
        self.retired
            .retain_mut(|child| child.try_wait().unwrap().is_none());
        self.update_watchdog();
    }

    /// Kills the proxy with SIGKILL (replaced processes too): every
    /// connection through it is cut.
    pub fn kill9(&mut self) {
        for mut child in self.child.take().into_iter().chain(self.retired.drain(..)) {
            engine::kill9(&mut child);
        }
        self.update_watchdog();
    }

    /// Starts the proxy again on the same port and backends. Panics when
    /// the port has been taken meanwhile.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the proxy first");
        if let Err(error) = self.spawn(None) {
            panic!("cannot restart haproxy: {error}");
        }
    }

    /// Whether the proxy process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Everything every run of the proxy logged (one line per request,
    /// and backend state changes).
    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|run| std::fs::read_to_string(self.log_path(run)).unwrap_or_default())
            .collect()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- last haproxy log lines ---");
            eprintln!("{}", engine::tail(&self.log_path(self.runs), 40));
        }
    }
}

/// The backend that answered a response through the proxy (its
/// [`SERVED_BY`] header).
pub fn served_by(headers: &reqwest::header::HeaderMap) -> Option<SocketAddr> {
    headers.get(SERVED_BY)?.to_str().ok()?.parse().ok()
}
