//! Drives the stock npm Yjs client (`yjs` + `y-websocket`, unmodified)
//! through tests/node/yclient.mjs, one JSON command per line.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::WAIT;

pub struct NodeClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/node")
}

impl NodeClient {
    pub async fn spawn() -> Self {
        let dir = harness_dir();
        assert!(
            dir.join("node_modules/y-websocket").exists(),
            "the stock Yjs client is not installed: run `npm ci --prefix tests/node` (the README's test command does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("yclient.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run node: install Node.js 20 or later");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
            next_id: 1,
        }
    }

    /// Sends one command and returns its response; panics if it failed.
    pub async fn ok(&mut self, command: Value) -> Value {
        let response = self.call(command.clone()).await;
        assert_eq!(
            response["ok"],
            json!(true),
            "node client command {command} failed: {response}"
        );
        response
    }

    /// Sends one command and returns its response, failed or not.
    pub async fn call(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let response = tokio::time::timeout(WAIT * 2, self.lines.next_line())
            .await
            .expect("node client did not answer")
            .unwrap()
            .expect("node client exited");
        let response: Value = serde_json::from_str(&response).unwrap();
        assert_eq!(response["id"], json!(id));
        response
    }

    /// Connects to `room` on a server and waits for the initial sync.
    pub async fn connect(&mut self, ws_base: &str, room: &str, token: &str) -> u64 {
        let response = self
            .ok(json!({"cmd": "connect", "url": ws_base, "room": room, "token": token, "timeout_ms": 20000}))
            .await;
        response["client_id"].as_u64().unwrap()
    }

    pub async fn text(&mut self) -> String {
        self.ok(json!({"cmd": "text"})).await["text"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn insert(&mut self, pos: usize, text: &str) {
        self.ok(json!({"cmd": "insert", "pos": pos, "text": text}))
            .await;
    }

    pub async fn wait_text(&mut self, expected: &str) {
        self.ok(json!({"cmd": "wait_text", "equals": expected, "timeout_ms": 20000}))
            .await;
    }

    pub async fn quit(mut self) {
        let _ = self.call(json!({"cmd": "quit"})).await;
        let _ = self.child.wait().await;
    }
}
