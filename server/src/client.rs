//! The `commandpost` subcommands for scripts and chat bots: they call a
//! running server's HTTP API (`--server`, `--token`, or `COMMANDPOST_SERVER`
//! and `COMMANDPOST_TOKEN`) and print plain text, or JSON with `--json`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};

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
    /// Print the server's JSON answer instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct DeclareArgs {
    /// Short title of the incident.
    #[arg(long)]
    title: String,
    /// sev1 (worst) to sev4; leave out if not yet assessed.
    #[arg(long)]
    severity: Option<String>,
    /// Declaration question: does fixing it need a second team?
    #[arg(long)]
    needs_other_team: Option<bool>,
    /// Declaration question: is the outage visible to customers?
    #[arg(long)]
    customer_visible: Option<bool>,
    /// Declaration question: still unsolved after an hour of concentrated analysis?
    #[arg(long)]
    unresolved_after_hour: Option<bool>,
    /// One or two sentences on what is happening.
    #[arg(long)]
    summary: Option<String>,
}

#[derive(Args, Debug)]
pub struct NoteArgs {
    /// Incident id (INC-<n>).
    incident: String,
    /// The note for the command-post log.
    text: String,
}

#[derive(Args, Debug)]
pub struct PinArgs {
    /// Incident id (INC-<n>).
    incident: String,
    /// The status summary everyone sees in the banner.
    #[arg(long)]
    summary: String,
    /// When the next update is due, from now (e.g. 30m, 1h).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    next_update_in: Duration,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Incident id (INC-<n>).
    incident: String,
}

#[derive(Subcommand, Debug)]
pub enum Handoff {
    /// Offer a role (the incident commander role by default) to someone.
    Offer {
        /// Incident id (INC-<n>).
        incident: String,
        /// User id of the incoming holder (their token's subject).
        #[arg(long)]
        to: String,
        /// Display name of the incoming holder.
        #[arg(long)]
        to_name: String,
        /// incident_commander, operations_lead, communications_lead or planning_lead.
        #[arg(long, default_value = "incident_commander")]
        role: String,
        /// Your briefing notes (the server adds the ICS 201 summary).
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// Accept an offer made to you (the token must be yours).
    Accept {
        /// Incident id (INC-<n>).
        incident: String,
        /// The handoff id, as shown by `status` or `watch`.
        #[arg(long)]
        handoff: u64,
    },
}

#[derive(Args, Debug)]
pub struct PostmortemArgs {
    /// Incident id (INC-<n>).
    incident: String,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Incident id (INC-<n>).
    incident: String,
    /// Start after this event sequence number (0 replays everything).
    #[arg(long, default_value_t = 0)]
    after: u64,
}

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
        match body["error"]["message"].as_str() {
            Some(message) => bail!("{message} ({status})"),
            None => bail!("the server answered {status}"),
        }
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

/// Takes every complete Server-Sent Events block out of `buffer` (text read
/// so far from an event stream) and returns each block's data; blocks
/// without data (keep-alive comments) are dropped.
pub fn take_sse_data(buffer: &mut String) -> Vec<String> {
    let mut data = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let lines: Vec<&str> = block
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if !lines.is_empty() {
            data.push(lines.join("\n"));
        }
    }
    data
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn declare(remote: Remote, args: DeclareArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut body = json!({"title": args.title});
        if let Some(severity) = args.severity {
            body["severity"] = json!(severity);
        }
        let answers = [args.needs_other_team, args.customer_visible, args.unresolved_after_hour];
        match answers {
            [Some(a), Some(b), Some(c)] => {
                body["criteria"] = json!({"needs_other_team": a, "customer_visible": b, "unresolved_after_hour": c});
            }
            [None, None, None] => {}
            _ => bail!("answer all three declaration questions (--needs-other-team, --customer-visible, --unresolved-after-hour) or none"),
        }
        if let Some(summary) = args.summary {
            body["summary"] = json!(summary);
        }
        let incident = remote.post("/api/incidents", body).await?;
        remote.print(&incident, || format!("declared {}: {}", incident["id"].as_str().unwrap_or("?"), incident["title"].as_str().unwrap_or("")));
        Ok(())
    })
}

pub fn note(remote: Remote, args: NoteArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let outcome = remote
            .command(&args.incident, "post_note", json!({"text": args.text}))
            .await?;
        remote.print(&outcome, || {
            format!(
                "noted on {} (event {})",
                args.incident, outcome["events"][0]["seq"]
            )
        });
        Ok(())
    })
}

pub fn pin(remote: Remote, args: PinArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let next = chrono::Utc::now() + chrono::Duration::from_std(args.next_update_in)?;
        let outcome = remote
            .command(
                &args.incident,
                "pin_status",
                json!({"summary": args.summary, "next_update_by": next}),
            )
            .await?;
        remote.print(&outcome, || {
            format!(
                "pinned on {}; next update due by {}",
                args.incident,
                next.format("%H:%M UTC")
            )
        });
        Ok(())
    })
}

pub fn status(remote: Remote, args: StatusArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let state: Value = remote
            .get(&format!("/api/incidents/{}/state", args.incident))
            .await?
            .json()
            .await?;
        remote.print(&state, || summarize(&args.incident, &state));
        Ok(())
    })
}

/// A human summary of an incident state.
fn summarize(incident: &str, state: &Value) -> String {
    let mut out = format!(
        "{incident}: {} [{}; severity {}]\n",
        state["title"].as_str().unwrap_or(""),
        state["status"].as_str().unwrap_or("?"),
        state["severity"].as_str().unwrap_or("not yet assessed"),
    );
    for view in state["roles"].as_array().into_iter().flatten() {
        out += &format!(
            "  {:<20} {}{}\n",
            view["role"].as_str().unwrap_or("").replace('_', " "),
            view["holder"]["name"].as_str().unwrap_or("?"),
            if view["delegated"] == json!(false) && view["role"] != "incident_commander" {
                " (not delegated)"
            } else {
                ""
            },
        );
    }
    for offer in state["pending_handoffs"].as_array().into_iter().flatten() {
        out += &format!(
            "  pending handoff {}: {} offered to {} by {}\n",
            offer["handoff"],
            offer["role"].as_str().unwrap_or("").replace('_', " "),
            offer["to"]["name"].as_str().unwrap_or("?"),
            offer["from"]["name"].as_str().unwrap_or("?"),
        );
    }
    if let Some(pin) = state["pin"].as_object() {
        out += &format!(
            "  status: {} (next update by {}{})\n",
            pin.get("summary").and_then(Value::as_str).unwrap_or(""),
            pin.get("next_update_by")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            if pin.get("overdue") == Some(&json!(true)) {
                ", OVERDUE"
            } else {
                ""
            },
        );
    }
    out.trim_end().to_owned()
}

pub fn handoff(remote: Remote, args: Handoff) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match args {
            Handoff::Offer { incident, to, to_name, role, notes } => {
                let outcome = remote
                    .command(&incident, "offer_handoff", json!({"role": role, "to": {"id": to, "name": to_name}, "notes": notes}))
                    .await?;
                remote.print(&outcome, || {
                    format!(
                        "offered {} to {to_name}: handoff {} (they accept with `commandpost handoff accept {incident} --handoff {}`)",
                        role.replace('_', " "),
                        outcome["events"][0]["handoff"],
                        outcome["events"][0]["handoff"],
                    )
                });
            }
            Handoff::Accept { incident, handoff } => {
                let outcome = remote.command(&incident, "accept_handoff", json!({"handoff": handoff})).await?;
                remote.print(&outcome, || {
                    let event = &outcome["events"][0];
                    format!(
                        "{} is now {} (from {}, at {})",
                        event["to"]["name"].as_str().unwrap_or("?"),
                        event["role"].as_str().unwrap_or("").replace('_', " "),
                        event["from"]["name"].as_str().unwrap_or("?"),
                        event["at"].as_str().unwrap_or("?"),
                    )
                });
            }
        }
        Ok(())
    })
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
                answer["revoked_at"].as_str().unwrap_or("?")
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
                "{:<32}  {:<20}  {:<9}  {:<8}  {:<20}  {:<20}  {}",
                "ID", "SUBJECT", "ROLE", "SCOPE", "EXPIRES (UTC)", "MINTED BY", "ORIGIN"
            )];
            for token in answer.as_array().into_iter().flatten() {
                let text = |key: &str| token[key].as_str().unwrap_or("-").to_owned();
                lines.push(format!(
                    "{:<32}  {:<20}  {:<9}  {:<8}  {:<20}  {:<20}  {}",
                    text("jti"),
                    text("sub"),
                    text("role"),
                    token["incident"].as_str().unwrap_or("all"),
                    text("expires_at").replace('T', " ").trim_end_matches('Z'),
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

pub fn postmortem(remote: Remote, args: PostmortemArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let markdown = remote
            .get(&format!("/api/incidents/{}/postmortem.md", args.incident))
            .await?
            .text()
            .await?;
        match args.output {
            Some(path) => {
                std::fs::write(&path, markdown)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => print!("{markdown}"),
        }
        Ok(())
    })
}

pub fn watch(remote: Remote, args: WatchArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let response = remote
            .get(&format!(
                "/api/incidents/{}/events?after={}",
                args.incident, args.after
            ))
            .await?;
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(
                &chunk.context("the event stream broke")?,
            ));
            for data in take_sse_data(&mut buffer) {
                let event: Value = serde_json::from_str(&data)?;
                if remote.json {
                    println!("{event}");
                } else {
                    println!(
                        "#{} {} {}: {}",
                        event["seq"],
                        event["at"].as_str().unwrap_or(""),
                        event["actor"]["name"].as_str().unwrap_or("?"),
                        event["type"].as_str().unwrap_or("?").replace('_', " "),
                    );
                }
            }
        }
        bail!("the server closed the event stream")
    })
}

#[cfg(test)]
mod tests {
    use super::take_sse_data;

    #[test]
    fn sse_blocks_are_taken_whole_and_keep_alives_dropped() {
        let mut buffer = String::from(
            "id: 1\ndata: {\"a\":1}\n\n: keep-alive\n\nid: 2\ndata: x\ndata: y\n\nid: 3\ndata: part",
        );
        assert_eq!(take_sse_data(&mut buffer), ["{\"a\":1}", "x\ny"]);
        assert_eq!(
            buffer, "id: 3\ndata: part",
            "an incomplete block waits for more"
        );
        buffer.push_str("ial\n\n");
        assert_eq!(take_sse_data(&mut buffer), ["partial"]);
        assert!(buffer.is_empty());
    }
}
