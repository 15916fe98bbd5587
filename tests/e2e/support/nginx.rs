//! A private nginx in front of `commandpost` nodes, from
//! `docs/cluster/nginx.conf` (the configuration the README documents),
//! on a free port of 127.0.0.1, in a temporary directory; stopped on drop
//! and by a watchdog when the test process ends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::engine::{self, Watchdog};

pub struct Nginx {
    child: Option<Child>,
    port: u16,
    /// Declared before `dir`: dropped (stopped) before the directory goes.
    watchdog: Watchdog,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx proxying to `backends`; returns once it accepts
    /// connections.
    pub fn start(backends: &[SocketAddr]) -> Self {
        let program = engine::find_program(
            "nginx",
            &["/usr/sbin", "/usr/local/sbin", "/sbin"],
            "nginx-light",
            "the cluster tests run the documented nginx configuration",
        );
        let dir = tempfile::Builder::new()
            .prefix("commandpost-nginx")
            .tempdir()
            .unwrap();
        let watchdog = Watchdog::start(dir.path(), "nginx");
        let servers: Vec<String> = backends
            .iter()
            .map(|addr| format!("        server {addr} max_fails=1 fail_timeout=2s;"))
            .collect();
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = engine::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let config = include_str!("../../../docs/cluster/nginx.conf")
                .replace("{{PREFIX}}", &dir.path().display().to_string())
                .replace("{{BIND}}", &format!("127.0.0.1:{port}"))
                .replace("{{SERVERS}}", &servers.join("\n"));
            let path = dir.path().join("nginx.conf");
            std::fs::write(&path, config).unwrap();
            let mut child = Command::new(&program)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&path)
                // One process (no workers), so that a kill stops all of it.
                .args(["-g", "daemon off; master_process off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
            watchdog.set_pids(&[child.id()]);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let started = std::time::Instant::now();
            loop {
                if engine::accepts(addr) {
                    return Self {
                        child: Some(child),
                        port,
                        watchdog,
                        dir,
                    };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    failures.push(format!(
                        "nginx exited ({status}): {}",
                        engine::tail(&dir.path().join("error.log"), 20)
                    ));
                    break;
                }
                assert!(
                    started.elapsed() < super::WAIT,
                    "nginx did not accept connections: {}",
                    engine::tail(&dir.path().join("error.log"), 20)
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        panic!("cannot start nginx:\n{}", failures.join("\n"));
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            engine::kill9(&mut child);
        }
        self.watchdog.set_pids(&[]);
        let _ = &self.dir;
    }
}
