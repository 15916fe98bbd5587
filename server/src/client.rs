//! The `commandpost` subcommands that talk to a running server: one per
//! sidecar command, plus `status`, `watch`, `people`, `share` and the
//! operators' `token list|revoke` and `backup`. They call the HTTP API
//! (`--server`, `--token`, or `COMMANDPOST_SERVER` and `COMMANDPOST_TOKEN`)
//! and print readable lines, or the server's JSON with `--json`.
//!
//! - [`incident`]: the subcommands and what each sends;
//! - [`people`]: people by id or unambiguous name, from `GET /api/people`;
//! - [`roles`]: `ic`, `ops`, `comms`, `planning`;
//! - [`describe`]: timeline lines as the web app shows them;
//! - [`status`]: the `status` page;
//! - [`time`]: the one time format.

pub mod describe;
pub mod incident;
pub mod people;
pub mod roles;
pub mod status;
pub mod time;

use std::fmt;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

pub use incident::IncidentCommand;

/// Where the server is and who is asking.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Base URL of a running Command Post server.
    #[arg(
        long,
        env = "COMMANDPOST_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Access token (see `commandpost token`).
    #[arg(long, env = "COMMANDPOST_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the server's JSON answer instead of readable lines.
    #[arg(long, global = true)]
    json: bool,
}

/// A refusal from the server: its status, code and message, and what the
/// message refers to (the criteria and changes blocking a gate, the person
/// nobody knows).
#[derive(Debug)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// `error.code`.
    pub code: String,
    /// `error.message`.
    pub message: String,
    /// `error.blocking`: what stops a resolve or close.
    pub blocking: Option<commandpost_shared::incident::Blocking>,
}

impl ApiFailure {
    fn from_body(status: reqwest::StatusCode, body: &Value) -> Self {
        let error = &body["error"];
        Self {
            status,
            code: error["code"].as_str().unwrap_or("").to_owned(),
            message: error["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the server answered {status}")),
            blocking: error
                .get("blocking")
                .and_then(|blocking| serde_json::from_value(blocking.clone()).ok()),
        }
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)?;
        if let Some(blocking) = &self.blocking {
            if !blocking.criteria.is_empty() {
                f.write_str(
                    "
  unmet exit criteria (mark each with `commandpost criterion met INCIDENT ID`):",
                )?;
                for criterion in &blocking.criteria {
                    write!(
                        f,
                        "
    #{} {}",
                        criterion.id, criterion.text
                    )?;
                }
            }
            if !blocking.changes.is_empty() {
                f.write_str("
  open changes (`commandpost change reverted INCIDENT ID`, or `change waive INCIDENT ID --reason ...`):")?;
                for change in &blocking.changes {
                    write!(
                        f,
                        "
    #{} {}",
                        change.id, change.what
                    )?;
                }
            }
        }
        if self.code == "unknown_person" {
            f.write_str(
                "
  list the people the server knows with `commandpost people`",
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl Remote {
    fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_deref()
            .context("no access token: pass --token or set COMMANDPOST_TOKEN (mint one with `commandpost token`)")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.trim_end_matches('/'), path)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request
            .bearer_auth(self.token()?)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.server))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(ApiFailure::from_body(status, &body).into())
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let client = reqwest::Client::new();
        Ok(self
            .send(client.post(self.url(path)).json(&body))
            .await?
            .json()
            .await?)
    }

    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.send(reqwest::Client::new().get(self.url(path))).await
    }

    async fn command(&self, incident: &str, name: &str, body: Value) -> anyhow::Result<Value> {
        self.post(&format!("/api/incidents/{incident}/commands/{name}"), body)
            .await
    }

    fn print(&self, value: &Value, summary: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{}", summary());
        }
    }
}

/// One Server-Sent Events message: its `event:` name (`message` when it
/// has none) and its data lines joined.
#[derive(Debug, PartialEq, Eq)]
pub struct SseMessage {
    /// The `event:` field; `message` by default.
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// Takes every complete Server-Sent Events block out of `buffer` (text read
/// so far from an event stream) and returns each block's message; blocks
/// without data (keep-alive comments) are dropped.
pub fn take_sse(buffer: &mut String) -> Vec<SseMessage> {
    let mut messages = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let field = |name: &'static str| {
            block
                .lines()
                .filter_map(move |line| line.strip_prefix(name))
                .map(|value| value.strip_prefix(' ').unwrap_or(value))
        };
        let data: Vec<&str> = field("data:").collect();
        if !data.is_empty() {
            messages.push(SseMessage {
                event: field("event:").next_back().unwrap_or("message").to_owned(),
                data: data.join("\n"),
            });
        }
    }
    messages
}

/// The data of every complete message in `buffer`, whatever its `event:`
/// name (see [`take_sse`]).
pub fn take_sse_data(buffer: &mut String) -> Vec<String> {
    take_sse(buffer)
        .into_iter()
        .map(|message| message.data)
        .collect()
}

/// A time as the server sends it (RFC 3339), in the CLI's one format
/// ([`time::format_time`]); what is not a time is shown as it came.
fn wire_time(value: &Value) -> String {
    match value.as_str() {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|at| time::format_time(at.with_timezone(&chrono::Utc), None))
            .unwrap_or_else(|_| text.to_owned()),
        None => "?".to_owned(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `commandpost token revoke ID`.
pub fn revoke(remote: Remote, id: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let answer = remote
            .post(&format!("/api/tokens/{id}/revoke"), Value::Null)
            .await?;
        remote.print(&answer, || {
            format!(
                "revoked token {} at {}",
                answer["jti"].as_str().unwrap_or(id),
                wire_time(&answer["revoked_at"])
            )
        });
        Ok(())
    })
}

/// `commandpost token revoke --minted-by SUB`: revokes every token SUB
/// minted through the server (share links), and what was minted from those.
pub fn revoke_minted_by(remote: Remote, subject: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let answer = remote
            .post(
                "/api/admin/tokens/revoke",
                serde_json::json!({ "minted_by": subject }),
            )
            .await?;
        remote.print(&answer, || {
            let revoked: Vec<&str> = answer
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|revocation| revocation["jti"].as_str())
                .collect();
            if revoked.is_empty() {
                format!("{subject} minted no token that is not revoked already")
            } else {
                format!(
                    "revoked {} token(s) minted by {subject}: {}",
                    revoked.len(),
                    revoked.join(", ")
                )
            }
        });
        Ok(())
    })
}

/// `commandpost token list [--minted-by SUB]`: the server's token registry.
pub fn list_tokens(remote: Remote, minted_by: Option<&str>) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut request = reqwest::Client::new().get(remote.url("/api/admin/tokens"));
        if let Some(subject) = minted_by {
            request = request.query(&[("minted_by", subject)]);
        }
        let answer: Value = remote.send(request).await?.json().await?;
        remote.print(&answer, || {
            let mut lines = vec![format!(
                "{:<32}  {:<20}  {:<9}  {:<8}  {:<23}  {:<20}  {}",
                "ID", "SUBJECT", "ROLE", "SCOPE", "EXPIRES", "MINTED BY", "ORIGIN"
            )];
            for token in answer.as_array().into_iter().flatten() {
                let text = |key: &str| token[key].as_str().unwrap_or("-").to_owned();
                lines.push(format!(
                    "{:<32}  {:<20}  {:<9}  {:<8}  {:<23}  {:<20}  {}",
                    text("jti"),
                    text("sub"),
                    text("role"),
                    token["incident"].as_str().unwrap_or("all"),
                    wire_time(&token["expires_at"]),
                    token["minted_by"]["sub"].as_str().unwrap_or("-"),
                    text("origin"),
                ));
            }
            lines.join("\n")
        });
        Ok(())
    })
}

/// `commandpost backup --out FILE`.
pub fn backup(remote: Remote, out: &std::path::Path) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let bytes = remote.get("/api/admin/backup").await?.bytes().await?;
        let partial = out.with_extension("partial");
        std::fs::write(&partial, &bytes)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!(
            "wrote a backup of {} bytes to {}",
            bytes.len(),
            out.display()
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(messages: Vec<SseMessage>) -> Vec<String> {
        messages.into_iter().map(|message| message.data).collect()
    }

    #[test]
    fn sse_blocks_are_taken_whole_and_keep_alives_dropped() {
        let mut buffer = String::from(
            "id: 1\ndata: {\"a\":1}\n\n: keep-alive\n\nid: 2\ndata: x\ndata: y\n\nid: 3\ndata: part",
        );
        assert_eq!(data(take_sse(&mut buffer)), ["{\"a\":1}", "x\ny"]);
        assert_eq!(
            buffer, "id: 3\ndata: part",
            "an incomplete block waits for more"
        );
        buffer.push_str("ial\n\n");
        assert_eq!(data(take_sse(&mut buffer)), ["partial"]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn sse_event_names_are_kept() {
        let mut buffer =
            String::from("event: presence\ndata: {\"viewers\":2}\n\nid: 4\ndata: {}\n\n");
        assert_eq!(
            take_sse(&mut buffer),
            [
                SseMessage {
                    event: "presence".into(),
                    data: "{\"viewers\":2}".into()
                },
                SseMessage {
                    event: "message".into(),
                    data: "{}".into()
                }
            ]
        );
    }

    #[test]
    fn a_gate_refusal_lists_what_blocks_it_with_ids() {
        let body = serde_json::json!({"error": {
            "code": "conflict",
            "message": "unmet criteria: #1 Service restored; open changes: #2 restart db",
            "blocking": {"criteria": [{"id": 1, "text": "Service restored"}], "changes": [{"id": 2, "what": "restart db"}]}
        }});
        let failure = ApiFailure::from_body(reqwest::StatusCode::CONFLICT, &body);
        let text = failure.to_string();
        assert!(
            text.starts_with(
                "unmet criteria: #1 Service restored; open changes: #2 restart db (409 Conflict)"
            ),
            "{text}"
        );
        assert!(text.contains("unmet exit criteria (mark each with `commandpost criterion met INCIDENT ID`):\n    #1 Service restored"), "{text}");
        assert!(text.contains("\n    #2 restart db"), "{text}");
        let plain = ApiFailure::from_body(
            reqwest::StatusCode::FORBIDDEN,
            &serde_json::json!({"error": {"code": "forbidden", "message": "no"}}),
        );
        assert_eq!(plain.to_string(), "no (403 Forbidden)");
        let unknown = ApiFailure::from_body(
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({}),
        );
        assert_eq!(
            unknown.to_string(),
            "the server answered 422 Unprocessable Entity (422 Unprocessable Entity)"
        );
    }
}
