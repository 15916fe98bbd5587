//! What the harnesses of real processes ([`super::redis`],
//! [`super::haproxy`], [`super::TestServer`]) share: finding an installed program (or failing with the fix), a free
//! port, and a watchdog that SIGKILLs an engine once the test process is
//! gone, however it ended (the test runner may kill it).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The path of `program`: on PATH, else in one of `dirs` (Debian keeps
/// `haproxy` in /usr/sbin, which is not on every user's PATH). Panics
/// naming the Debian package to install when it is nowhere.
pub fn find_program(program: &str, dirs: &[&str], package: &str, what: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} is not installed: {what}, and found it neither on PATH nor in {}. \
                 Install it with `apt-get install {package}` (scripts/install-deps.sh does).",
                dirs.join(", ")
            )
        })
}

/// A TCP port of `ip` that nothing listens on now. (Another process may
/// take it before the engine binds it: the harnesses retry with a new port
/// when the engine cannot bind.)
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("cannot find a free port on {ip}: {error}"))
}

/// Whether something accepts TCP connections at `addr` now.
pub fn accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// A `sh` process that waits for this test process to end, then SIGKILLs
/// the processes listed in a pid file and removes a directory. The harness
/// keeps the pid file current ([`Watchdog::set_pids`]); dropping the
/// watchdog stops it (the harness has stopped its engine by then).
pub struct Watchdog {
    child: Child,
    pids: PathBuf,
}

impl Watchdog {
    /// Starts watching for an engine whose files are in `dir` (removed once
    /// the test process is gone); `what` names it in errors.
    pub fn start(dir: &Path, what: &str) -> Self {
        Self::start_with(dir.join("watchdog.pids"), &[dir], what)
    }

    /// Starts a watchdog keeping its pid list in the file `pids` and
    /// removing it and `remove` once the test process is gone.
    pub fn start_with(pids: PathBuf, remove: &[&Path], what: &str) -> Self {
        let remove: String = remove
            .iter()
            .map(|path| format!(" '{}'", path.display()))
            .collect();
        let script = format!(
            "while kill -0 {test} 2>/dev/null; do sleep 1; done; \
             for pid in $(cat '{pids}' 2>/dev/null); do kill -9 \"$pid\" 2>/dev/null; done; \
             rm -rf '{pids}'{remove}",
            test = std::process::id(),
            pids = pids.display(),
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start the {what} watchdog: {error}"));
        Self { child, pids }
    }

    /// The engine processes to kill when the test process is gone (none
    /// once the harness killed them itself, so a reused pid is never hit).
    pub fn set_pids(&self, pids: &[u32]) {
        let text: String = pids.iter().map(|pid| format!("{pid}\n")).collect();
        let temporary = self.pids.with_extension("new");
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, &self.pids).unwrap();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pids);
    }
}

/// SIGKILLs `child` and reaps it (a no-op when it already exited).
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of the file at `path` (empty when unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
