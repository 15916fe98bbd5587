//! The direction of imports, checked: adapters (HTTP, WebSocket, CLI) →
//! domain (documents and rooms, the sidecar, auth, limits, backups) →
//! storage. A module that imports the wrong way fails this test, so the
//! layering in ARCHITECTURE.md cannot drift silently.
//!
//! It reads each module's source (up to its `#[cfg(test)]` section, which
//! clippy keeps last), with the files of the submodules it declares there
//! (`src/<module>/<name>.rs`, read the same way), and collects the
//! `crate::<module>` paths it names and the outside crates it uses.

use std::collections::BTreeMap;

/// Where each module of `server/src` sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// Cross-cutting and importing nothing of ours above storage: metrics.
    Utility,
    /// Only `store` (with its backends) and the quarantine's record types;
    /// sled lives here, in `store` alone.
    Storage,
    /// What the server does, whatever the transport.
    Domain,
    /// The edges: HTTP, WebSocket, CLI, assembly.
    Adapter,
}

const MODULES: &[(&str, Layer)] = &[
    ("metrics", Layer::Utility),
    ("store", Layer::Storage),
    ("quarantine", Layer::Storage),
    ("cluster", Layer::Storage),
    ("auth", Layer::Domain),
    ("backup", Layer::Domain),
    ("config", Layer::Domain),
    ("doc_sync", Layer::Domain),
    ("limits", Layer::Domain),
    ("postmortem", Layer::Domain),
    ("protocol", Layer::Domain),
    ("rooms", Layer::Domain),
    ("sidecar", Layer::Domain),
    ("template", Layer::Domain),
    ("update_check", Layer::Domain),
    ("admin", Layer::Adapter),
    ("api", Layer::Adapter),
    ("cli", Layer::Adapter),
    ("client", Layer::Adapter),
    ("http", Layer::Adapter),
    ("openapi", Layer::Adapter),
    ("security", Layer::Adapter),
    ("server", Layer::Adapter),
    ("sidecar_api", Layer::Adapter),
    ("web", Layer::Adapter),
    ("ws", Layer::Adapter),
];

/// Outside crates that belong to the edges: no domain or storage module
/// may name them.
const ADAPTER_CRATES: &[&str] = &[
    "axum",
    "hyper",
    "hyper_util",
    "tungstenite",
    "reqwest",
    "rust_embed",
];

/// The sans-IO cores: no runtime, no storage, no sockets.
const PURE: &[&str] = &["protocol", "update_check", "postmortem", "template"];
const IO_CRATES: &[&str] = &["tokio", "sled", "axum", "tungstenite", "hyper", "reqwest"];

fn layer_of(module: &str) -> Option<Layer> {
    MODULES
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

/// The source of `module` before its tests, with its submodules'.
fn source(module: &str) -> String {
    read_module(&format!("{}/src", env!("CARGO_MANIFEST_DIR")), module)
}

/// The code of `dir/<name>.rs` before its tests, followed by that of each
/// submodule it declares there (`mod x;` → `dir/<name>/x.rs`).
fn read_module(dir: &str, name: &str) -> String {
    let mut code = own_code(&format!("{dir}/{name}.rs"));
    for submodule in declared_submodules(&code) {
        code.push('\n');
        code.push_str(&read_module(&format!("{dir}/{name}"), &submodule));
    }
    code
}

/// The code of the file at `path` before its tests, comments left out
/// (they say what other layers do; only code counts).
fn own_code(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Storage engines' crates and the files (under `src`) that may name
/// each: a backend keeps its engine to itself, the cluster bus its Redis
/// client (both connect with rustls).
const CONFINED: &[(&str, &[&str])] = &[
    ("sled", &["store/sled_backend.rs"]),
    ("tokio_postgres", &["store/postgres_backend.rs"]),
    ("tokio_postgres_rustls", &["store/postgres_backend.rs"]),
    ("postgres", &["store/postgres_backend.rs"]),
    ("r2d2", &["store/postgres_backend.rs"]),
    ("rustls", &["store/postgres_backend.rs", "cluster.rs"]),
    ("fred", &["cluster.rs"]),
];

/// Every `.rs` file under `dir`, as paths relative to `base`.
fn rust_files(base: &str, dir: &str, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(format!("{base}/{dir}")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let relative = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        if entry.file_type().unwrap().is_dir() {
            rust_files(base, &relative, found);
        } else if name.ends_with(".rs") {
            found.push(relative);
        }
    }
}

/// The submodules `code` declares from files: `mod x;`, `pub mod x;`, ...
fn declared_submodules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let declared = line.strip_suffix(';')?;
            let (visibility, name) = declared.split_once("mod ")?;
            let visibility = visibility.trim();
            (visibility.is_empty() || visibility.starts_with("pub")).then(|| name.trim().to_owned())
        })
        .collect()
}

/// The modules of this crate that `code` names as `crate::<module>`.
fn crate_modules(code: &str) -> Vec<String> {
    let mut found: Vec<String> = code
        .match_indices("crate::")
        .map(|(at, _)| {
            code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Whether `code` uses the outside crate `name` (`use name::`, `name::`).
fn uses_crate(code: &str, name: &str) -> bool {
    let needle = format!("{name}::");
    code.match_indices(&needle).any(|(at, _)| {
        at == 0 || {
            let before = code.as_bytes()[at - 1];
            !(before.is_ascii_alphanumeric() || before == b'_' || before == b':')
        }
    })
}

#[test]
fn every_module_has_a_layer() {
    let dir = format!("{}/src", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if ["lib", "main", "layers"].contains(&module) {
            continue;
        }
        assert!(
            layer_of(module).is_some(),
            "server/src/{name} has no layer: add it to MODULES in layers.rs (and ARCHITECTURE.md)"
        );
    }
}

#[test]
fn imports_go_one_way() {
    let mut wrong = BTreeMap::new();
    for (module, layer) in MODULES {
        let code = source(module);
        for imported in crate_modules(&code) {
            let Some(target) = layer_of(&imported) else {
                continue;
            };
            let allowed = match layer {
                Layer::Utility => target == Layer::Utility,
                Layer::Storage => target <= Layer::Storage,
                Layer::Domain => target <= Layer::Domain,
                Layer::Adapter => true,
            };
            if !allowed {
                wrong.insert(
                    format!("{module} ({layer:?}) imports {imported} ({target:?})"),
                    (),
                );
            }
        }
        if *layer != Layer::Adapter {
            for name in ADAPTER_CRATES {
                if uses_crate(&code, name) {
                    wrong.insert(
                        format!("{module} ({layer:?}) uses the adapter crate {name}"),
                        (),
                    );
                }
            }
        }
        if *module != "store" && uses_crate(&code, "sled") {
            wrong.insert(
                format!("{module} ({layer:?}) uses sled, which only store may"),
                (),
            );
        }
        if PURE.contains(module) {
            for name in IO_CRATES {
                if uses_crate(&code, name) {
                    wrong.insert(format!("{module} (a pure core) uses {name}"), ());
                }
            }
            for imported in crate_modules(&code) {
                if ["store", "rooms", "sidecar"].contains(&imported.as_str()) {
                    wrong.insert(format!("{module} (a pure core) imports {imported}"), ());
                }
            }
        }
    }
    let wrong: Vec<_> = wrong.into_keys().collect();
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn each_engine_crate_stays_in_its_backend() {
    let base = format!("{}/src", env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&base, "", &mut files);
    assert!(files.iter().any(|file| file == "store/postgres_backend.rs"));
    let mut wrong = Vec::new();
    for file in &files {
        let code = own_code(&format!("{base}/{file}"));
        for (name, homes) in CONFINED {
            if !homes.contains(&file.as_str()) && uses_crate(&code, name) {
                wrong.push(format!("{file} uses {name}, which only {homes:?} may"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The check sees them where they are.
    let postgres = own_code(&format!("{base}/store/postgres_backend.rs"));
    assert!(uses_crate(&postgres, "tokio_postgres") && uses_crate(&postgres, "r2d2"));
    assert!(!uses_crate(&postgres, "sled"));
}

#[test]
fn the_checker_sees_a_wrong_way_import() {
    let code = "use crate::api::ApiError;\nfn f() -> axum::http::StatusCode { todo!() }";
    assert_eq!(crate_modules(code), ["api"]);
    assert!(uses_crate(code, "axum"));
    assert!(!uses_crate("my_axum::x", "axum"));
    assert!(!uses_crate("sled_backend::x", "sled"));
}

#[test]
fn the_checker_reads_submodules_but_not_their_tests() {
    assert_eq!(
        declared_submodules("mod a;\npub(crate) mod b;\nmod c {\nlet m = \"mod d\";"),
        ["a", "b"]
    );
    // store.rs itself names no sled path; its sled backend does.
    let store = source("store");
    assert!(
        uses_crate(&store, "sled"),
        "the store's submodules are read"
    );
    assert!(!store.contains("mod tests"), "tests are left out");
    // protocol.rs declares its test file after `#[cfg(test)]`.
    assert!(!source("protocol").contains("fn caller("));
}
