//! A private PostgreSQL for tests: one server per test process, started on
//! first use with `initdb` and `pg_ctl` in a temporary directory, on a free
//! port of 127.0.0.1 with its unix socket in that directory, and a fresh
//! database per test ([`fresh_database`]). A test may start a server of
//! its own, [`PgServer::start`], or one that requires TLS,
//! [`PgServer::start_tls`].
//!
//! Run as root, the server runs as the `postgres` OS user (PostgreSQL
//! refuses root). The server outlives no test process: a watchdog started
//! with it stops it (`pg_ctl stop -m immediate`) and removes its directory
//! once the process is gone, whether it ended, panicked or was killed; a
//! [`PgServer`] that is dropped does the same at once.
//!
//! Without PostgreSQL installed, the tests fail with a message naming the
//! fix; they never skip. Standard library only: the e2e tests include this
//! file too (`#[path]`).

#![allow(
    unreachable_pub,
    reason = "the e2e tests include this file, where its items are used from other modules"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server of this test process.
static SERVER: OnceLock<PgServer> = OnceLock::new();
/// Databases created so far, for their names.
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The URL of a new, empty database on this process's server (started on
/// first use).
pub fn fresh_database() -> String {
    let server = SERVER.get_or_init(|| PgServer::start().unwrap_or_else(|error| panic!("{error}")));
    server.create_database()
}

/// A running PostgreSQL server.
pub struct PgServer {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgServer {
    /// Initialises a server, stopped, in a new temporary directory.
    fn init() -> Result<Self, String> {
        let bin = bin_dir()?;
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(format!(
            "commandpost-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos())
        ));
        std::fs::create_dir_all(&root).map_err(|error| format!("{}: {error}", root.display()))?;
        let server = Self {
            root,
            bin,
            port: free_port()?,
            as_postgres,
        };
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&server.root))?;
        }
        server.watch(std::process::id());
        let data = server.data();
        run(server.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        Ok(server)
    }

    /// Initialises and starts a server in a new temporary directory.
    pub fn start() -> Result<Self, String> {
        let server = Self::init()?;
        server.pg_start()?;
        Ok(server)
    }

    /// Initialises and starts a server that speaks TLS (`ssl = on`) with
    /// the certificate chain `cert_pem` (the server's first) and its
    /// private key `key_pem`, both written to its temporary directory, and
    /// that refuses TCP connections without TLS: `pg_hba.conf` has
    /// `hostssl` lines only (and `local` for its unix socket). Its port:
    /// [`PgServer::port`]; [`PgServer::url`]'s `sslmode=disable` is
    /// refused.
    #[allow(
        dead_code,
        reason = "used by the store's TLS tests, not by the e2e tests"
    )]
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let server = Self::init()?;
        let cert = server.root.join("server.crt");
        let key = server.root.join("server.key");
        // PostgreSQL refuses a key that others may read, or that is not
        // its own user's (or root's).
        for (path, pem, mode) in [(&cert, cert_pem, 0o644), (&key, key_pem, 0o600)] {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
                .and_then(|mut file| file.write_all(pem.as_bytes()))
                .map_err(|error| format!("{}: {error}", path.display()))?;
        }
        if server.as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&cert).arg(&key))?;
        }
        let data = server.data();
        let conf = data.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| {
                write!(
                    file,
                    "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                    cert.display(),
                    key.display()
                )
            })
            .map_err(|error| format!("{}: {error}", conf.display()))?;
        let hba = data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n",
        )
        .map_err(|error| format!("{}: {error}", hba.display()))?;
        server.pg_start()?;
        Ok(server)
    }

    /// The TCP port it listens on, on 127.0.0.1.
    #[allow(
        dead_code,
        reason = "used by the store's TLS tests, not by the e2e tests"
    )]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the (initialised, stopped) server; waits until it accepts
    /// connections.
    fn pg_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=on",
            self.port,
            self.root.display()
        );
        let started = run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-w", "-t", "120", "-o", &options, "start"]));
        if let Err(error) = started {
            let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            return Err(format!("{error}\nserver log:\n{log}"));
        }
        Ok(())
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m
    /// immediate`: no checkpoint, connections cut); [`PgServer::restart`]
    /// starts it again on the same port and data. For a test that stops
    /// its database: give it a server of its own ([`PgServer::start`]),
    /// never the shared one of [`fresh_database`].
    pub fn stop_immediate(&self) {
        run(self.command("pg_ctl").arg("-D").arg(self.data()).args([
            "-w",
            "-m",
            "immediate",
            "stop",
        ]))
        .unwrap_or_else(|error| panic!("cannot stop the test PostgreSQL: {error}"));
    }

    /// Starts the server again after [`PgServer::stop_immediate`] (crash
    /// recovery from its WAL).
    pub fn restart(&self) {
        self.pg_start()
            .unwrap_or_else(|error| panic!("cannot restart the test PostgreSQL: {error}"));
    }

    /// The URL of database `name` (which may not exist yet).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// Creates a new database; its URL.
    pub fn create_database(&self) -> String {
        let name = format!("test_{}", DATABASES.fetch_add(1, Ordering::Relaxed) + 1);
        run(Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name))
        .unwrap_or_else(|error| panic!("cannot create a test database: {error}"));
        self.url(&name)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A command of PostgreSQL's, as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Starts the watchdog that stops the server and removes its directory
    /// once process `pid` is gone.
    fn watch(&self, pid: u32) {
        let stop = self.stop_script();
        let script = format!("while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}");
        let spawned = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(error) = spawned {
            panic!("cannot start the test PostgreSQL's watchdog: {error}");
        }
    }

    /// Shell that stops the server at once and removes its directory.
    fn stop_script(&self) -> String {
        let runuser = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "{runuser}'{}' -D '{}' stop -m immediate >/dev/null 2>&1; rm -rf '{}'",
            self.bin.join("pg_ctl").display(),
            self.data().display(),
            self.root.display()
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &self.stop_script()])
            .status();
    }
}

/// Runs `sql` with `psql` on the database at `url`; its output, unaligned
/// and without headers (`-A -t`), one row per line.
#[allow(dead_code, reason = "used by the e2e tests, not by the store's")]
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let output = Command::new(bin_dir()?.join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run psql: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "psql failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `command`; its failure with its output.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The directory of `initdb` and `pg_ctl`: on PATH (symlinks followed, as
/// Debian's wrappers are), or Debian's `/usr/lib/postgresql/<version>/bin`,
/// newest first.
fn bin_dir() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in on_path {
        let initdb = dir.join("initdb");
        if initdb.is_file()
            && let Some(real) = std::fs::canonicalize(&initdb)
                .ok()
                .and_then(|real| real.parent().map(Path::to_path_buf))
            && real.join("pg_ctl").is_file()
        {
            return Ok(real);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL is not installed: the PostgreSQL tests start their own server with initdb \
         and pg_ctl, found neither on PATH nor in /usr/lib/postgresql/*/bin. Install it with \
         `apt-get install postgresql` (scripts/install-deps.sh does)."
            .to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// A port of 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("cannot find a free port: {error}"))
}
