//! A private Redis for a test: Debian's `redis-server` on a free port of
//! 127.0.0.1, in a temporary directory, without persistence (`save ""`,
//! `appendonly no`: a restart starts empty, as after losing the machine).
//!
//! - [`RedisServer::start`]: no authentication;
//!   [`RedisServer::start_with_password`]: `requirepass` with a random
//!   password; [`RedisServer::start_with_user`]: an ACL user with a random
//!   password, the `default` user switched off. [`RedisServer::url`] carries
//!   the credentials (`redis://[user:password@]127.0.0.1:PORT`).
//! - Faults: [`RedisServer::kill9`] SIGKILLs the process;
//!   [`RedisServer::restart`] starts it again on the same port, empty.
//! - Looking inside: [`RedisServer::cli`] runs `redis-cli` against it
//!   (credentials included), [`RedisServer::info`] returns an `INFO`
//!   section, [`RedisServer::command_calls`] the calls per command from
//!   `INFO commandstats` (what a client actually sent).
//!
//! The server is killed on drop, and a [`Watchdog`] kills it when the test
//! process is gone (ended, panicked or killed), then removes its directory.
//! Without `redis-server` installed, [`RedisServer::start`] panics naming the
//! fix: tests never skip.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::engine::{self, Watchdog};

/// Debian's directories for the Redis programs, besides PATH.
const DIRS: &[&str] = &["/usr/bin", "/usr/local/bin"];
/// The name of the ACL user of [`RedisServer::start_with_user`].
pub const ACL_USER: &str = "commandpost";

/// How clients authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAuth {
    /// No authentication.
    None,
    /// `requirepass`: the `default` user's password.
    Password(String),
    /// An ACL user (all keys, channels and commands); `default` is off.
    User { name: String, password: String },
}

/// A running (or killed) `redis-server`. Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    auth: RedisAuth,
    server: PathBuf,
    cli: PathBuf,
    /// Declared before `dir`: dropped (stopped) before the directory goes.
    watchdog: Watchdog,
    dir: TempDir,
    /// Start-up count, so each run logs to its own file.
    runs: u32,
    /// With TLS: the port TLS clients use (the plain `port` stays, for
    /// redis-cli) and the certificate, key and CA files.
    tls: Option<Tls>,
}

/// A TLS listener's port and files.
struct Tls {
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl RedisServer {
    /// Starts a server without authentication.
    pub fn start() -> Self {
        Self::start_auth(RedisAuth::None)
    }

    /// Starts a server with `requirepass` (a random password).
    pub fn start_with_password() -> Self {
        Self::start_auth(RedisAuth::Password(random_secret()))
    }

    /// Starts a server whose only user is the ACL user [`ACL_USER`] (a
    /// random password); the `default` user is off.
    pub fn start_with_user() -> Self {
        Self::start_auth(RedisAuth::User {
            name: ACL_USER.to_owned(),
            password: random_secret(),
        })
    }

    /// Starts a server without authentication that also listens for TLS
    /// clients ([`RedisServer::tls_url`]) with `cert` and `key` (PEM),
    /// signed by `ca`.
    pub fn start_tls(cert: &str, key: &str, ca: &str) -> Self {
        Self::start_inner(RedisAuth::None, Some((cert, key, ca)))
    }

    /// `rediss://localhost:PORT`, the TLS listener.
    pub fn tls_url(&self) -> String {
        let tls = self.tls.as_ref().expect("a TLS server");
        format!("rediss://localhost:{}", tls.port)
    }

    /// Starts a server with the given authentication.
    pub fn start_auth(auth: RedisAuth) -> Self {
        Self::start_inner(auth, None)
    }

    fn start_inner(auth: RedisAuth, tls: Option<(&str, &str, &str)>) -> Self {
        let server = engine::find_program(
            "redis-server",
            DIRS,
            "redis-server",
            "the Redis tests start their own server",
        );
        let cli = engine::find_program(
            "redis-cli",
            DIRS,
            "redis-server",
            "the Redis tests inspect their server with it",
        );
        let dir = tempfile::Builder::new()
            .prefix("commandpost-redis")
            .tempdir()
            .unwrap();
        let watchdog = Watchdog::start(dir.path(), "Redis");
        let mut redis = Self {
            child: None,
            port: 0,
            auth,
            server,
            cli,
            watchdog,
            dir,
            runs: 0,
            tls: None,
        };
        if let Some((cert, key, ca)) = tls {
            let file = |name: &str, pem: &str| {
                let path = redis.dir.path().join(name);
                std::fs::write(&path, pem).unwrap();
                path
            };
            redis.tls = Some(Tls {
                port: engine::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                cert: file("tls.crt", cert),
                key: file("tls.key", key),
                ca: file("ca.crt", ca),
            });
        }
        // The free port may be taken before redis-server binds it: retry
        // with another.
        let mut failures = Vec::new();
        for _ in 0..5 {
            redis.port = engine::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
            match redis.spawn() {
                Ok(()) => return redis,
                Err(error) => failures.push(error),
            }
        }
        panic!("cannot start redis-server:\n{}", failures.join("\n"));
    }

    /// Writes the configuration for the current port, starts the server and
    /// waits until it answers PING; its log when it exits first.
    fn spawn(&mut self) -> Result<(), String> {
        self.runs += 1;
        let log = self.log_path(self.runs);
        let config = self.dir.path().join("redis.conf");
        let tls = self.tls.as_ref().map_or_else(String::new, |tls| {
            format!(
                "tls-port {}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n",
                tls.port,
                tls.cert.display(),
                tls.key.display(),
                tls.ca.display()
            )
        });
        let users = match &self.auth {
            RedisAuth::None => String::new(),
            RedisAuth::Password(password) => format!("requirepass {password}\n"),
            RedisAuth::User { name, password } => {
                format!("user default off\nuser {name} on >{password} ~* &* +@all\n")
            }
        };
        std::fs::write(
            &config,
            format!(
                "bind 127.0.0.1\n\
                 port {port}\n\
                 dir {dir}\n\
                 logfile {log}\n\
                 daemonize no\n\
                 save \"\"\n\
                 appendonly no\n\
                 protected-mode yes\n\
                 {tls}{users}",
                port = self.port,
                dir = self.dir.path().display(),
                log = log.display(),
            ),
        )
        .unwrap();
        let child = Command::new(&self.server)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.server.display()));
        self.watchdog.set_pids(&[child.id()]);
        // Held by `self` while waiting, so a panic (timeout) still kills it.
        self.child = Some(child);
        let started = std::time::Instant::now();
        let exited = loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().unwrap())
            {
                break Some(status);
            }
            if self
                .try_cli(&["PING"])
                .is_ok_and(|out| out.trim() == "PONG")
            {
                break None;
            }
            assert!(
                started.elapsed() < super::WAIT,
                "timed out waiting for redis-server to answer PING; its log:\n{}",
                engine::tail(&log, 30)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if let Some(status) = exited {
            self.child = None;
            self.watchdog.set_pids(&[]);
            return Err(format!(
                "redis-server on port {} exited ({status}); its log:\n{}",
                self.port,
                engine::tail(&log, 30)
            ));
        }
        Ok(())
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("redis-{run}.log"))
    }

    /// `redis://[user:password@]127.0.0.1:PORT` (the password alone as
    /// `redis://:password@...`).
    pub fn url(&self) -> String {
        let credentials = match &self.auth {
            RedisAuth::None => String::new(),
            RedisAuth::Password(password) => format!(":{password}@"),
            RedisAuth::User { name, password } => format!("{name}:{password}@"),
        };
        format!("redis://{credentials}127.0.0.1:{}", self.port)
    }

    /// The URL without credentials (to check that they are required).
    pub fn url_without_credentials(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn auth(&self) -> &RedisAuth {
        &self.auth
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// Kills the server with SIGKILL (its data is gone: no persistence).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.watchdog.set_pids(&[]);
            engine::kill9(&mut child);
        }
    }

    /// Starts the server again on the same port, empty. Panics when the
    /// port has been taken meanwhile.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the server first");
        if let Err(error) = self.spawn() {
            panic!("cannot restart redis-server: {error}");
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Runs `redis-cli` with `args` against this server, authenticated;
    /// its output (raw, as `redis-cli` prints it to a pipe). Panics when
    /// `redis-cli` fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|error| panic!("redis-cli {args:?}: {error}"))
    }

    /// [`RedisServer::cli`] without authentication (as the `default` user).
    pub fn cli_unauthenticated(&self, args: &[&str]) -> Result<String, String> {
        self.run_cli(args, &RedisAuth::None)
    }

    /// [`RedisServer::cli`], returning its failure.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        self.run_cli(args, &self.auth)
    }

    fn run_cli(&self, args: &[&str], auth: &RedisAuth) -> Result<String, String> {
        let mut command = Command::new(&self.cli);
        command
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("--no-auth-warning");
        match auth {
            RedisAuth::None => {}
            RedisAuth::Password(password) => {
                command.args(["-a", password]);
            }
            RedisAuth::User { name, password } => {
                command.args(["--user", name, "--pass", password]);
            }
        }
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {}: {error}", self.cli.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(format!(
                "{} ({}): {stdout}{}",
                self.cli.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        // redis-cli exits 0 on an error reply, printing it.
        if stdout.starts_with("ERR")
            || stdout.starts_with("NOAUTH")
            || stdout.starts_with("WRONGPASS")
            || stdout.starts_with("NOPERM")
            || stdout.starts_with("AUTH failed")
        {
            return Err(stdout);
        }
        Ok(stdout)
    }

    /// `INFO section`: its `key:value` lines.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        self.cli(&["INFO", section])
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.trim().split_once(':'))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    /// Calls per command since the server started, from `INFO
    /// commandstats` (lowercase names; subcommands as `client|setname`).
    /// The `redis-cli` runs of this harness count too (their `info`, and
    /// `auth` when authenticated).
    pub fn command_calls(&self) -> HashMap<String, u64> {
        self.info("commandstats")
            .into_iter()
            .filter_map(|(key, value)| {
                let command = key.strip_prefix("cmdstat_")?.to_owned();
                let calls = value
                    .split(',')
                    .find_map(|field| field.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((command, calls))
            })
            .collect()
    }

    /// Everything every run of this server logged.
    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|run| std::fs::read_to_string(self.log_path(run)).unwrap_or_default())
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- last redis-server log lines ---");
            eprintln!("{}", engine::tail(&self.log_path(self.runs), 30));
        }
    }
}

/// A random password (hex: nothing to escape in a URL or a config line).
fn random_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
