//! The incident subcommands: one per sidecar command (`POST
//! /api/incidents/{id}/commands/{name}`), plus `declare`, `status`,
//! `watch`, `postmortem`, `people` and `share`. A command prints the
//! timeline lines of the events it caused (as `watch` and the web app
//! show them), and a hint where the next step needs an id.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use commandpost_shared::incident::{Event, IncidentState, Role, Severity, Status, Tenure};
use commandpost_shared::{Actor, CommandOutcome, PeopleList, TokenClaims};
use futures::StreamExt;
use serde_json::{Value, json};

use super::describe::line;
use super::people::{labelled, resolve};
use super::roles::{parse_role, short_name};
use super::status::summarize;
use super::time::{format_time, parse_time};
use super::{Remote, runtime, take_sse};

/// The incident subcommands (flattened into `commandpost`'s own).
#[derive(Subcommand, Debug)]
pub enum IncidentCommand {
    /// Declare an incident (you become its commander).
    #[command(
        after_help = "Example:\n  commandpost declare --title 'Checkout returns 500' --severity sev2 --summary 'EU users, 30% of requests'"
    )]
    Declare {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: DeclareArgs,
    },
    /// Show everything with its id: roles and holders, responders, pending
    /// handoffs, exit criteria, open changes, the pinned status.
    #[command(after_help = "Example:\n  commandpost status INC-1")]
    Status {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
    },
    /// Print the incident's timeline from the start, then follow it live.
    #[command(after_help = "Example:\n  commandpost watch INC-1 --after 20")]
    Watch {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// Start after this event number (0 replays everything).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// List the people the server knows, to name in commands (by id, or by
    /// a name only one of them has).
    #[command(after_help = "Example:\n  commandpost people jos")]
    People {
        #[command(flatten)]
        remote: Remote,
        /// Only people whose id or name contains this (any case).
        query: Option<String>,
    },
    /// Delegate, take or plan roles: ic, ops, comms, planning.
    #[command(after_help = "Example:\n  commandpost role assign INC-1 ops josephine")]
    Role {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: RoleAction,
    },
    /// List or unlist responders working the incident.
    #[command(
        after_help = "Example:\n  commandpost responder add INC-1 fred --assignment 'database failover'"
    )]
    Responder {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: ResponderAction,
    },
    /// Hand a role over in two steps: offer, then accept (or decline, cancel).
    #[command(
        after_help = "Example:\n  commandpost handoff offer INC-1 bob --role ic --notes 'db is the suspect'\n  commandpost handoff accept INC-1"
    )]
    Handoff {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: HandoffAction,
    },
    /// Set the severity: sev1 (worst) to sev4 (commander).
    #[command(after_help = "Example:\n  commandpost severity INC-1 sev1")]
    Severity {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// sev1, sev2, sev3 or sev4 (or 1 to 4).
        #[arg(value_parser = parse_severity)]
        severity: Severity,
    },
    /// Mark the incident mitigated: the bleeding has stopped (commander).
    #[command(after_help = "Example:\n  commandpost mitigate INC-1")]
    Mitigate {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
    },
    /// Back from mitigated to active: the mitigation did not hold (commander).
    #[command(after_help = "Example:\n  commandpost reactivate INC-1")]
    Reactivate {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
    },
    /// Resolve: every exit criterion is met, or say why not with --despite
    /// (commander). A refusal lists the unmet criteria with their ids.
    #[command(
        after_help = "Example:\n  commandpost resolve INC-1\n  commandpost resolve INC-1 --despite 'customers confirmed recovery; probe is flaky'"
    )]
    Resolve {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// Resolve although exit criteria are unmet, for this reason.
        #[arg(long, value_name = "REASON")]
        despite: Option<String>,
    },
    /// Close a resolved incident: every change reverted or waived
    /// (commander). A refusal lists the open changes with their ids.
    #[command(after_help = "Example:\n  commandpost close INC-1")]
    Close {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
    },
    /// Reopen a resolved or closed incident (commander or admin).
    #[command(after_help = "Example:\n  commandpost reopen INC-1 --reason 'errors are back'")]
    Reopen {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Exit criteria: what must be true to resolve (commander).
    #[command(
        after_help = "Example:\n  commandpost criterion add INC-1 'Error rate below 0.1% for 15 min'\n  commandpost criterion met INC-1 5"
    )]
    Criterion {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: CriterionAction,
    },
    /// The revert register: record production changes, then revert or waive
    /// each before closing.
    #[command(
        after_help = "Example:\n  commandpost change record INC-1 --what 'failover db to replica' --revert 'fail back after repair'\n  commandpost change reverted INC-1 8"
    )]
    Change {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: ChangeAction,
    },
    /// Set when customer impact started, if before the declaration (commander).
    #[command(
        after_help = "Example:\n  commandpost impact-start INC-1 '2026-12-07 01:02:03'\n  commandpost impact-start INC-1 '45m ago'"
    )]
    ImpactStart {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// A UTC time (`2026-12-07 01:02:03`, RFC 3339), `now`, or `45m ago`.
        at: String,
    },
    /// Pin the status summary everyone sees, with when the next update is
    /// due, or as the final update once mitigated (commander or
    /// communications lead).
    #[command(
        after_help = "Example:\n  commandpost pin INC-1 --text 'Failing over the database' --next-update-in 30m\n  commandpost pin INC-1 --text 'Resolved; postmortem to follow' --final"
    )]
    Pin {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// The summary.
        #[arg(long, alias = "summary")]
        text: String,
        /// When the next update is due, from now (e.g. 30m, 1h; default 30m).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "last")]
        next_update_in: Option<Duration>,
        /// The last update: no next one is due (mitigated or later only).
        #[arg(long = "final")]
        last: bool,
    },
    /// Post a note to the command-post log (responders and role holders).
    #[command(after_help = "Example:\n  commandpost note INC-1 'replica lag is 3 s'")]
    Note {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// The note.
        text: String,
    },
    /// Create a link that signs someone into this incident (commander or
    /// admin); it prints the URL to send them.
    #[command(
        after_help = "Example:\n  commandpost share INC-1 --name 'Fred Jones' --role responder --hours 12"
    )]
    Share {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// The display name of the person the link is for.
        #[arg(long)]
        name: String,
        /// responder or viewer.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// How long the link works, in hours (1 to 168).
        #[arg(long, default_value_t = 24)]
        hours: u32,
    },
    /// Export the postmortem draft (Markdown).
    #[command(after_help = "Example:\n  commandpost postmortem INC-1 --output INC-1.md")]
    Postmortem {
        #[command(flatten)]
        remote: Remote,
        /// Incident id (INC-<n>).
        incident: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct DeclareArgs {
    /// Short title of the incident.
    #[arg(long)]
    title: String,
    /// sev1 (worst) to sev4; leave out if not yet assessed.
    #[arg(long, value_parser = parse_severity)]
    severity: Option<Severity>,
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

#[derive(Subcommand, Debug)]
pub enum RoleAction {
    /// Delegate a role the commander holds to someone (commander). A role
    /// someone else holds changes hands by `handoff offer`.
    #[command(after_help = "Example:\n  commandpost role assign INC-1 ops josephine")]
    Assign {
        /// Incident id (INC-<n>).
        incident: String,
        /// ops, comms or planning.
        #[arg(value_parser = parse_role)]
        role: Role,
        /// Who: an id or a name only one person has (see `commandpost people`).
        person: String,
    },
    /// Emergency: take a role yourself, without a handoff (admin).
    #[command(
        after_help = "Example:\n  commandpost role assume INC-1 ic --reason 'commander unreachable for 20 min'"
    )]
    Assume {
        /// Incident id (INC-<n>).
        incident: String,
        /// ic, ops, comms or planning.
        #[arg(value_parser = parse_role)]
        role: Role,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Emergency: give a role to someone without a handoff (admin).
    #[command(
        after_help = "Example:\n  commandpost role force-assign INC-1 ic bob --reason 'Alice is offline'"
    )]
    ForceAssign {
        /// Incident id (INC-<n>).
        incident: String,
        /// ic, ops, comms or planning.
        #[arg(value_parser = parse_role)]
        role: Role,
        /// Who: an id or a name only one person has.
        person: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Name the planned next commander, or clear it with --clear
    /// (commander or planning lead).
    #[command(after_help = "Example:\n  commandpost role next-commander INC-1 bob")]
    NextCommander {
        /// Incident id (INC-<n>).
        incident: String,
        /// Who: an id or a name only one person has.
        #[arg(required_unless_present = "clear")]
        person: Option<String>,
        /// Name nobody.
        #[arg(long, conflicts_with = "person")]
        clear: bool,
    },
    /// Who held which role, and when.
    #[command(after_help = "Example:\n  commandpost role history INC-1")]
    History {
        /// Incident id (INC-<n>).
        incident: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ResponderAction {
    /// List someone as a responder, or change their assignment (commander
    /// or a role lead).
    #[command(
        after_help = "Example:\n  commandpost responder add INC-1 fred --assignment 'database failover'"
    )]
    Add {
        /// Incident id (INC-<n>).
        incident: String,
        /// Who: an id or a name only one person has.
        person: String,
        /// What they work on.
        #[arg(long, alias = "as")]
        assignment: String,
    },
    /// Take someone off the responder list (commander or a role lead).
    #[command(after_help = "Example:\n  commandpost responder remove INC-1 fred")]
    Remove {
        /// Incident id (INC-<n>).
        incident: String,
        /// Who: an id or a name only one person has.
        person: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum HandoffAction {
    /// Offer a role to someone with your briefing notes (the holder of the
    /// role, or the commander); nothing changes until they accept.
    #[command(
        after_help = "Example:\n  commandpost handoff offer INC-1 bob --role ic --notes 'db is the suspect'"
    )]
    Offer {
        /// Incident id (INC-<n>).
        incident: String,
        /// Who: an id or a name only one person has.
        person: String,
        /// ic, ops, comms or planning.
        #[arg(long, default_value = "ic", value_parser = parse_role)]
        role: Role,
        /// Your briefing notes (the server adds the ICS 201 summary).
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// Accept an offer made to you (the one offer, or the id `status` shows).
    #[command(
        after_help = "Example:\n  commandpost handoff accept INC-1\n  commandpost handoff accept INC-1 7"
    )]
    Accept {
        /// Incident id (INC-<n>).
        incident: String,
        /// The handoff id (the older spelling `--handoff ID`).
        #[arg(
            long = "handoff",
            value_name = "HANDOFF",
            hide = true,
            conflicts_with = "handoff"
        )]
        flag: Option<u64>,
        /// The handoff id; leave out when one offer awaits you.
        handoff: Option<u64>,
    },
    /// Decline an offer made to you.
    #[command(
        after_help = "Example:\n  commandpost handoff decline INC-1 --reason 'off shift in 10 min'"
    )]
    Decline {
        /// Incident id (INC-<n>).
        incident: String,
        /// The handoff id; leave out when one offer awaits you.
        handoff: Option<u64>,
        /// Why, optionally.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Withdraw an offer you made (or any, as commander).
    #[command(after_help = "Example:\n  commandpost handoff cancel INC-1 7")]
    Cancel {
        /// Incident id (INC-<n>).
        incident: String,
        /// The handoff id; leave out when you made one offer.
        handoff: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CriterionAction {
    /// Add an exit criterion, unmet.
    #[command(
        after_help = "Example:\n  commandpost criterion add INC-1 'Checkout error rate below 0.1%'"
    )]
    Add {
        /// Incident id (INC-<n>).
        incident: String,
        /// What must be true to resolve.
        text: String,
    },
    /// Mark a criterion met.
    #[command(after_help = "Example:\n  commandpost criterion met INC-1 5")]
    Met {
        /// Incident id (INC-<n>).
        incident: String,
        /// The criterion's id (`status` lists them).
        criterion: u64,
    },
    /// Mark a criterion not met (again).
    #[command(after_help = "Example:\n  commandpost criterion unmet INC-1 5")]
    Unmet {
        /// Incident id (INC-<n>).
        incident: String,
        /// The criterion's id.
        criterion: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ChangeAction {
    /// Record a production change and how to revert it (operations lead,
    /// or the commander while operations is not delegated).
    #[command(
        after_help = "Example:\n  commandpost change record INC-1 --what 'failover db to replica' --why 'primary disk full' --revert 'fail back after repair'"
    )]
    Record {
        /// Incident id (INC-<n>).
        incident: String,
        /// What was changed.
        #[arg(long)]
        what: String,
        /// How to revert it.
        #[arg(long)]
        revert: String,
        /// Why.
        #[arg(long, default_value = "")]
        why: String,
    },
    /// Mark a change reverted (planning lead, or the commander while
    /// planning is not delegated).
    #[command(after_help = "Example:\n  commandpost change reverted INC-1 8")]
    Reverted {
        /// Incident id (INC-<n>).
        incident: String,
        /// The change's id (`status` lists open ones).
        change: u64,
    },
    /// Keep a change on purpose, with the reason (planning lead).
    #[command(
        after_help = "Example:\n  commandpost change waive INC-1 8 --reason 'the new pool size stays'"
    )]
    Waive {
        /// Incident id (INC-<n>).
        incident: String,
        /// The change's id.
        change: u64,
        /// Why it stays (required).
        #[arg(long)]
        reason: String,
    },
}

/// Reads `sev2`, `SEV2` or `2`.
fn parse_severity(text: &str) -> Result<Severity, String> {
    let normal = text.trim().to_lowercase();
    let normal = normal.strip_prefix("sev").unwrap_or(&normal);
    Severity::ALL
        .into_iter()
        .find(|severity| severity.as_str().trim_start_matches("sev") == normal)
        .ok_or_else(|| format!("no severity `{text}`: use sev1 (worst), sev2, sev3 or sev4"))
}

impl Remote {
    /// The people the server knows whose id or name contains `query`.
    async fn people(&self, query: &str) -> anyhow::Result<Vec<Actor>> {
        let request = reqwest::Client::new()
            .get(self.url("/api/people"))
            .query(&[("q", query)]);
        let people: PeopleList = self.send(request).await?.json().await?;
        Ok(people.people)
    }

    /// The one person `text` names (see [`super::people`]).
    async fn person(&self, text: &str) -> anyhow::Result<Actor> {
        let known = self.people(text.trim()).await?;
        Ok(resolve(text, &known)?)
    }

    async fn state(&self, incident: &str) -> anyhow::Result<(Value, IncidentState)> {
        let value: Value = self
            .get(&format!("/api/incidents/{incident}/state"))
            .await?
            .json()
            .await?;
        let state = serde_json::from_value(value.clone())
            .context("the server's incident state is not what this client expects")?;
        Ok((value, state))
    }

    /// Runs a sidecar command and prints the events it caused, then `hint`.
    async fn run(
        &self,
        incident: &str,
        name: &str,
        body: Value,
        hint: impl FnOnce(&CommandOutcome) -> Option<String>,
    ) -> anyhow::Result<CommandOutcome> {
        let answer = self.command(incident, name, body).await?;
        let outcome: CommandOutcome = serde_json::from_value(answer.clone())
            .context("the server's answer is not what this client expects")?;
        self.print(&answer, || {
            let mut lines: Vec<String> = outcome.events.iter().map(line).collect();
            lines.extend(hint(&outcome));
            lines.join("\n")
        });
        Ok(outcome)
    }

    /// Runs a command whose answer needs no hint.
    async fn simple(&self, incident: &str, name: &str, body: Value) -> anyhow::Result<()> {
        self.run(incident, name, body, |_| None).await.map(|_| ())
    }
}

/// Runs one incident subcommand.
pub fn run(command: IncidentCommand) -> anyhow::Result<()> {
    runtime()?.block_on(run_async(command))
}

async fn run_async(command: IncidentCommand) -> anyhow::Result<()> {
    match command {
        IncidentCommand::Declare { remote, args } => declare(&remote, args).await,
        IncidentCommand::Status { remote, incident } => {
            let (value, state) = remote.state(&incident).await?;
            remote.print(&value, || summarize(&incident, &state, Utc::now()));
            Ok(())
        }
        IncidentCommand::Watch {
            remote,
            incident,
            after,
        } => watch(&remote, &incident, after).await,
        IncidentCommand::People { remote, query } => {
            let people = remote.people(query.as_deref().unwrap_or("")).await?;
            remote.print(&json!({ "people": people }), || {
                if people.is_empty() {
                    return "nobody matches; people become known when they use the server with their token, or when they are named on an incident".to_owned();
                }
                let width = people.iter().map(|p| p.id.0.chars().count()).max().unwrap_or(2).max(2);
                let mut lines = vec![format!("{:<width$}  NAME", "ID")];
                lines.extend(people.iter().map(|person| format!("{:<width$}  {}", person.id.0, person.name)));
                lines.join("\n")
            });
            Ok(())
        }
        IncidentCommand::Role { remote, action } => role(&remote, action).await,
        IncidentCommand::Responder { remote, action } => match action {
            ResponderAction::Add {
                incident,
                person,
                assignment,
            } => {
                let person = remote.person(&person).await?;
                remote
                    .simple(
                        &incident,
                        "add_responder",
                        json!({"responder": person, "assignment": assignment}),
                    )
                    .await
            }
            ResponderAction::Remove { incident, person } => {
                let person = remote.person(&person).await?;
                remote
                    .simple(&incident, "remove_responder", json!({"responder": person.id}))
                    .await
            }
        },
        IncidentCommand::Handoff { remote, action } => handoff(&remote, action).await,
        IncidentCommand::Severity {
            remote,
            incident,
            severity,
        } => {
            remote
                .simple(&incident, "set_severity", json!({ "severity": severity }))
                .await
        }
        IncidentCommand::Mitigate { remote, incident } => {
            set_status(&remote, &incident, Status::Mitigated, None).await
        }
        IncidentCommand::Reactivate { remote, incident } => {
            set_status(&remote, &incident, Status::Active, None).await
        }
        IncidentCommand::Resolve {
            remote,
            incident,
            despite,
        } => set_status(&remote, &incident, Status::Resolved, despite).await,
        IncidentCommand::Close { remote, incident } => {
            set_status(&remote, &incident, Status::Closed, None).await
        }
        IncidentCommand::Reopen {
            remote,
            incident,
            reason,
        } => {
            remote
                .simple(&incident, "reopen", json!({ "reason": reason }))
                .await
        }
        IncidentCommand::Criterion { remote, action } => match action {
            CriterionAction::Add { incident, text } => {
                remote
                    .run(&incident, "add_exit_criterion", json!({ "text": text }), |outcome| {
                        outcome.events.first().map(|event| {
                            format!(
                                "when it holds: commandpost criterion met {incident} {}",
                                event.seq
                            )
                        })
                    })
                    .await
                    .map(|_| ())
            }
            CriterionAction::Met {
                incident,
                criterion,
            } => set_criterion(&remote, &incident, criterion, true).await,
            CriterionAction::Unmet {
                incident,
                criterion,
            } => set_criterion(&remote, &incident, criterion, false).await,
        },
        IncidentCommand::Change { remote, action } => match action {
            ChangeAction::Record {
                incident,
                what,
                revert,
                why,
            } => remote
                .run(
                    &incident,
                    "record_change",
                    json!({"what": what, "why": why, "revert": revert}),
                    |outcome| {
                        outcome.events.first().map(|event| {
                            format!(
                                "before closing: commandpost change reverted {incident} {} (or change waive {incident} {} --reason ...)",
                                event.seq, event.seq
                            )
                        })
                    },
                )
                .await
                .map(|_| ()),
            ChangeAction::Reverted { incident, change } => {
                remote
                    .simple(&incident, "mark_change_reverted", json!({ "change": change }))
                    .await
            }
            ChangeAction::Waive {
                incident,
                change,
                reason,
            } => {
                remote
                    .simple(
                        &incident,
                        "waive_change",
                        json!({"change": change, "reason": reason}),
                    )
                    .await
            }
        },
        IncidentCommand::ImpactStart {
            remote,
            incident,
            at,
        } => {
            let at = parse_time(&at, Utc::now()).map_err(anyhow::Error::msg)?;
            remote
                .simple(&incident, "set_impact_start", json!({ "at": at }))
                .await
        }
        IncidentCommand::Pin {
            remote,
            incident,
            text,
            next_update_in,
            last,
        } => {
            let body = if last {
                json!({"summary": text, "final": true})
            } else {
                let next = next_update_in.unwrap_or(Duration::from_secs(30 * 60));
                let next = Utc::now() + chrono::Duration::from_std(next)?;
                json!({"summary": text, "next_update_by": next})
            };
            remote.simple(&incident, "pin_status", body).await
        }
        IncidentCommand::Note {
            remote,
            incident,
            text,
        } => {
            remote
                .simple(&incident, "post_note", json!({ "text": text }))
                .await
        }
        IncidentCommand::Share {
            remote,
            incident,
            name,
            role,
            hours,
        } => {
            let link = remote
                .post(
                    &format!("/api/incidents/{incident}/share"),
                    json!({"role": role, "name": name, "ttl_hours": hours}),
                )
                .await?;
            remote.print(&link, || {
                let expires = link["expires_at"]
                    .as_str()
                    .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                    .map(|at| format_time(at.with_timezone(&Utc), Some(Utc::now())))
                    .unwrap_or_else(|| "?".to_owned());
                format!(
                    "a {role} link for {name} (user id {}) to {incident}, valid until {expires}; send them:\n{}",
                    link["user"].as_str().unwrap_or("?"),
                    link["url"].as_str().unwrap_or("?"),
                )
            });
            Ok(())
        }
        IncidentCommand::Postmortem {
            remote,
            incident,
            output,
        } => {
            let markdown = remote
                .get(&format!("/api/incidents/{incident}/postmortem.md"))
                .await?
                .text()
                .await?;
            match output {
                Some(path) => {
                    std::fs::write(&path, markdown)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{markdown}"),
            }
            Ok(())
        }
    }
}

async fn declare(remote: &Remote, args: DeclareArgs) -> anyhow::Result<()> {
    let mut body = json!({ "title": args.title });
    if let Some(severity) = args.severity {
        body["severity"] = json!(severity);
    }
    let answers = [
        args.needs_other_team,
        args.customer_visible,
        args.unresolved_after_hour,
    ];
    match answers {
        [Some(a), Some(b), Some(c)] => {
            body["criteria"] =
                json!({"needs_other_team": a, "customer_visible": b, "unresolved_after_hour": c});
        }
        [None, None, None] => {}
        _ => bail!(
            "answer all three declaration questions (--needs-other-team, --customer-visible, --unresolved-after-hour) or none"
        ),
    }
    if let Some(summary) = args.summary {
        body["summary"] = json!(summary);
    }
    let incident = remote.post("/api/incidents", body).await?;
    remote.print(&incident, || {
        format!(
            "declared {}: {}",
            incident["id"].as_str().unwrap_or("?"),
            incident["title"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

async fn set_status(
    remote: &Remote,
    incident: &str,
    status: Status,
    override_reason: Option<String>,
) -> anyhow::Result<()> {
    let mut body = json!({ "status": status });
    if let Some(reason) = override_reason {
        body["override_reason"] = json!(reason);
    }
    remote.simple(incident, "set_status", body).await
}

async fn set_criterion(
    remote: &Remote,
    incident: &str,
    criterion: u64,
    met: bool,
) -> anyhow::Result<()> {
    remote
        .simple(
            incident,
            "set_exit_criterion",
            json!({"criterion": criterion, "met": met}),
        )
        .await
}

async fn role(remote: &Remote, action: RoleAction) -> anyhow::Result<()> {
    match action {
        RoleAction::Assign {
            incident,
            role,
            person,
        } => {
            if role == Role::IncidentCommander {
                bail!(
                    "command changes hands by handoff: `commandpost handoff offer {incident} {person} --role ic`"
                );
            }
            let person = remote.person(&person).await?;
            remote
                .simple(
                    &incident,
                    "assign_role",
                    json!({"role": role, "to": person}),
                )
                .await
        }
        RoleAction::Assume {
            incident,
            role,
            reason,
        } => {
            remote
                .simple(
                    &incident,
                    "assume_role",
                    json!({"role": role, "reason": reason}),
                )
                .await
        }
        RoleAction::ForceAssign {
            incident,
            role,
            person,
            reason,
        } => {
            let person = remote.person(&person).await?;
            remote
                .simple(
                    &incident,
                    "force_assign_role",
                    json!({"role": role, "to": person, "reason": reason}),
                )
                .await
        }
        RoleAction::NextCommander {
            incident,
            person,
            clear,
        } => {
            let next = match (person, clear) {
                (_, true) | (None, _) => None,
                (Some(person), false) => Some(remote.person(&person).await?),
            };
            remote
                .simple(&incident, "set_next_commander", json!({ "next": next }))
                .await
        }
        RoleAction::History { incident } => {
            let answer: Value = remote
                .get(&format!("/api/incidents/{incident}/roles/history"))
                .await?
                .json()
                .await?;
            let tenures: Vec<Tenure> = serde_json::from_value(answer.clone())
                .context("the server's role history is not what this client expects")?;
            remote.print(&answer, || {
                tenures
                    .iter()
                    .map(|tenure| {
                        format!(
                            "{:<9} {:<20} {} from {} to {}",
                            short_name(tenure.role),
                            tenure.role.as_str(),
                            labelled(&tenure.holder),
                            format_time(tenure.from, None),
                            tenure
                                .to
                                .map(|to| format_time(to, None))
                                .unwrap_or_else(|| "now".to_owned()),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
    }
}

/// Which pending offer a handoff subcommand means: the id given, or the
/// only offer that `mine` picks out.
async fn pick_offer(
    remote: &Remote,
    incident: &str,
    given: Option<u64>,
    what: &str,
    mine: impl Fn(&commandpost_shared::incident::PendingHandoff, &str) -> bool,
) -> anyhow::Result<u64> {
    if let Some(handoff) = given {
        return Ok(handoff);
    }
    let me: TokenClaims = remote.get("/api/me").await?.json().await?;
    let (_, state) = remote.state(incident).await?;
    let offers: Vec<_> = state
        .pending_handoffs
        .iter()
        .filter(|offer| mine(offer, &me.sub))
        .collect();
    match offers.as_slice() {
        [one] => Ok(one.handoff.0),
        [] => bail!(
            "no pending offer on {incident} {what}; `commandpost status {incident}` lists the pending handoffs"
        ),
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|offer| {
                    format!(
                        "  #{} {} from {} to {}",
                        offer.handoff,
                        offer.role.as_str(),
                        labelled(&offer.from),
                        labelled(&offer.to)
                    )
                })
                .collect();
            bail!(
                "{} offers on {incident} {what}; give the handoff id:\n{}",
                several.len(),
                list.join("\n")
            )
        }
    }
}

async fn handoff(remote: &Remote, action: HandoffAction) -> anyhow::Result<()> {
    match action {
        HandoffAction::Offer {
            incident,
            person,
            role,
            notes,
        } => {
            let person = remote.person(&person).await?;
            remote
                .run(
                    &incident,
                    "offer_handoff",
                    json!({"role": role, "to": person, "notes": notes}),
                    |outcome| {
                        outcome.events.first().map(|event| {
                            format!(
                                "{} accepts with `commandpost handoff accept {incident} {}` (or declines with `handoff decline`)",
                                person.name, event.seq
                            )
                        })
                    },
                )
                .await
                .map(|_| ())
        }
        HandoffAction::Accept {
            incident,
            flag,
            handoff,
        } => {
            let handoff = pick_offer(
                remote,
                &incident,
                handoff.or(flag),
                "awaits you",
                |offer, me| offer.to.id.0 == me,
            )
            .await?;
            remote
                .simple(&incident, "accept_handoff", json!({ "handoff": handoff }))
                .await
        }
        HandoffAction::Decline {
            incident,
            handoff,
            reason,
        } => {
            let handoff = pick_offer(remote, &incident, handoff, "awaits you", |offer, me| {
                offer.to.id.0 == me
            })
            .await?;
            remote
                .simple(
                    &incident,
                    "decline_handoff",
                    json!({"handoff": handoff, "reason": reason}),
                )
                .await
        }
        HandoffAction::Cancel { incident, handoff } => {
            let handoff = pick_offer(remote, &incident, handoff, "is yours", |offer, me| {
                offer.from.id.0 == me
            })
            .await?;
            remote
                .simple(&incident, "cancel_handoff", json!({ "handoff": handoff }))
                .await
        }
    }
}

/// Prints the timeline from `after`, then follows it until the server
/// closes the stream.
async fn watch(remote: &Remote, incident: &str, after: u64) -> anyhow::Result<()> {
    let response = remote
        .get(&format!("/api/incidents/{incident}/events?after={after}"))
        .await?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(
            &chunk.context("the event stream broke")?,
        ));
        for message in take_sse(&mut buffer) {
            if message.event != "message" {
                // Presence and other non-timeline messages.
                continue;
            }
            if remote.json {
                println!("{}", message.data);
                continue;
            }
            let event: Event = serde_json::from_str(&message.data)
                .context("the server sent an event this client does not know")?;
            println!("{}", line(&event));
        }
    }
    bail!("the server closed the event stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_are_read_in_any_spelling() {
        assert_eq!(parse_severity("sev2"), Ok(Severity::Sev2));
        assert_eq!(parse_severity("SEV1"), Ok(Severity::Sev1));
        assert_eq!(parse_severity("4"), Ok(Severity::Sev4));
        let error = parse_severity("sev5").expect_err("no sev5");
        assert!(error.contains("no severity `sev5`"), "{error}");
    }
}
