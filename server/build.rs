//! Builds the browser app in `web/` with npm, so `src/web.rs` can embed
//! `web/dist` into the binary. `COMMANDPOST_SKIP_WEB=1` skips it (the binary
//! then serves a page saying the app is missing).

use std::path::Path;
use std::process::Command;

const FIX: &str = "install Node.js 20 or later and npm (Debian/Ubuntu: `apt-get install nodejs npm`), \
                   or set COMMANDPOST_SKIP_WEB=1 to build the server without the browser app";

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    for input in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
        "openapi.json",
        "public",
    ] {
        // Cargo treats a missing path as always changed (rebuilding the
        // server on every build): name only inputs that exist.
        let path = web.join(input);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-env-changed=COMMANDPOST_SKIP_WEB");
    if std::env::var_os("COMMANDPOST_SKIP_WEB").is_some() {
        println!("cargo:warning=COMMANDPOST_SKIP_WEB is set: building without the browser app");
        return;
    }
    let version = match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        _ => panic!(
            "\n\nerror: building the browser app needs Node.js, which is not on PATH: {FIX}\n\n"
        ),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        panic!(
            "\n\nerror: building the browser app needs Node.js 20 or later, found {version}: {FIX}\n\n"
        );
    }
    if Command::new("npm")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        panic!("\n\nerror: building the browser app needs npm, which is not on PATH: {FIX}\n\n");
    }
    // Install exactly what package-lock.json pins, when it changed.
    let installed = web.join("node_modules/.package-lock.json");
    let lock = web.join("package-lock.json");
    let stale = match (
        installed.metadata().and_then(|m| m.modified()),
        lock.metadata().and_then(|m| m.modified()),
    ) {
        (Ok(installed), Ok(lock)) => lock > installed,
        _ => true,
    };
    if stale {
        run(&web, &["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    }
    run(&web, &["run", "build"]);
}

fn run(dir: &Path, args: &[&str]) {
    let output = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("\n\nerror: cannot run npm ({error}): {FIX}\n\n"));
    if !output.status.success() {
        panic!(
            "\n\nerror: `npm {}` failed in {}:\n{}\n{}\n",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
