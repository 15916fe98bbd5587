//! Cluster mode (issue 15): Command Post nodes on one PostgreSQL and one
//! Redis, measured side by side with a single node in the same run.
//!
//! - **Fan-out across nodes.** Editors on node 1, viewers spread over nodes
//!   2 and 3, against the same load on a single node (on PostgreSQL, without
//!   Redis). The Redis commands the nodes send while the editors type
//!   (`INFO commandstats`) are counted per document update.
//! - **Failover.** Followers connect through HAProxy (the tested
//!   docs/cluster/haproxy.cfg) and reconnect as y-websocket's client does;
//!   a node is killed with SIGKILL and the time until each of its followers
//!   has synced again through a survivor is measured.
//!
//! Every node, the PostgreSQL, the Redis and the HAProxy run pinned to the
//! servers' core, as the single node does: the comparison is of the work a
//! cluster adds, not of the cores it could use (docs/BENCHMARKS.md does that
//! sum on paper).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::spawn_local;
use tokio_tungstenite::tungstenite::Message;

use crate::client;
use crate::engines::haproxy::{HaProxy, SERVED_BY};
use crate::engines::redis::RedisServer;
use crate::scenarios::{self, FanoutParams, FanoutPlan, FanoutResult, Meter};
use crate::servers::{self, DocTarget, Installed, Kind, ProcStats, Server, Tuning};
use crate::trace::{Editor, Trace};
use crate::wire;

/// Nodes in the cluster runs.
pub(crate) const NODES: usize = 3;

/// One fan-out run: a single node, or editors on one node of a cluster and
/// viewers on the others.
#[derive(Serialize)]
pub(crate) struct ClusterFanout {
    /// 1 for the single-node run.
    pub nodes: usize,
    pub fanout: FanoutResult,
    /// Commands the nodes sent to Redis from the start of the typing to the
    /// end of the drain, by command (the benchmark's own `INFO` left out).
    pub redis_commands: BTreeMap<String, u64>,
    /// All of them per document update sent by the editors.
    pub redis_commands_per_update: Option<f64>,
    /// Per 1,000 deliveries to viewers.
    pub redis_commands_per_1000_deliveries: Option<f64>,
    pub redis_cpu_seconds: Option<f64>,
    pub database_cpu_seconds: Option<f64>,
}

/// One failover round: a node killed under followers connected through
/// HAProxy.
#[derive(Serialize)]
pub(crate) struct FailoverRound {
    pub round: usize,
    /// Followers connected through HAProxy (over every node).
    pub followers: usize,
    /// Those connected to the killed node when it was killed.
    pub on_killed_node: usize,
    /// Of those, how many synced again through a survivor.
    pub resynced: usize,
    /// From the kill to the first, the median, the 99th percentile (99 % of
    /// them resynced) and the last of them resynced.
    pub first_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub last_ms: Option<f64>,
    /// From the kill until HAProxy's health checks marked the node down.
    pub marked_down_ms: f64,
    /// Connection attempts that failed before a follower was back (each is
    /// followed by y-websocket's backoff).
    pub failed_attempts: u64,
    /// Followers of the surviving nodes that lost their connection (none
    /// should).
    pub survivors_disconnected: usize,
    /// Updates the editor (on a surviving node) sent during the round.
    pub editor_updates: u64,
}

/// Measures the nodes of a cluster (their CPU summed, their peak RSS
/// summed) and, when there is one, the Redis and the PostgreSQL.
struct ClusterMeter<'a> {
    nodes: &'a [&'a Server],
    redis: Option<&'a RedisServer>,
    installed: &'a Installed,
}

/// What a [`ClusterMeter`] reads besides the nodes.
struct Engines {
    redis_calls: HashMap<String, u64>,
    redis_cpu_seconds: Option<f64>,
    database_cpu_seconds: Option<f64>,
}

impl Meter for ClusterMeter<'_> {
    type Extra = Engines;

    fn read(&self) -> (ProcStats, Engines) {
        let mut total = ProcStats::default();
        for node in self.nodes {
            let stats = node.stats();
            total.cpu_seconds += stats.cpu_seconds;
            total.rss_kib += stats.rss_kib;
            total.peak_rss_kib += stats.peak_rss_kib;
        }
        let engines = Engines {
            redis_calls: self
                .redis
                .map(RedisServer::command_calls)
                .unwrap_or_default(),
            redis_cpu_seconds: self
                .redis
                .map(|redis| ProcStats::read(redis.pid()).cpu_seconds),
            database_cpu_seconds: self
                .installed
                .postgres
                .as_ref()
                .map(|postgres| postgres.cpu_seconds()),
        };
        (total, engines)
    }
}

/// The Redis of a cluster run, pinned to the servers' core.
pub(crate) fn start_redis(cpu: &str) -> Result<RedisServer> {
    let redis = RedisServer::start();
    servers::pin(redis.pid(), cpu, "Redis")?;
    Ok(redis)
}

/// Starts `NODES` Command Post nodes on one database and Redis.
fn start_nodes(
    installed: &Installed,
    name: &str,
    database: &str,
    redis: &RedisServer,
) -> Result<(Vec<Server>, Tuning)> {
    let tuning = Tuning {
        database: Some(database.to_owned()),
        redis: Some(redis.url()),
        ..Tuning::default()
    };
    let nodes = (0..NODES)
        .map(|i| {
            Server::start(
                installed,
                Kind::CommandpostPostgres,
                &format!("{name}-node{}", i + 1),
                &tuning,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((nodes, tuning))
}

/// `url` (a document's address on one server) on another `authority`.
fn on(authority: &str, url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("ws://")
        .context("only ws:// URLs are supported")?;
    let path = rest.find('/').map_or("", |at| &rest[at..]);
    Ok(format!("ws://{authority}{path}"))
}

/// Fan-out on a single node on PostgreSQL (no Redis), then with the
/// editors on node 1 of a cluster and the viewers alternating over the
/// other nodes; the same load, one after the other.
pub(crate) async fn fanout_pair(
    installed: &Installed,
    redis: &RedisServer,
    params: &FanoutParams,
    traces: &[Arc<Trace>],
) -> Result<[ClusterFanout; 2]> {
    let postgres = installed
        .postgres
        .as_ref()
        .context("the benchmark's PostgreSQL was not started")?;
    let viewers = params.viewers;

    eprintln!("cluster fan-out, {viewers} viewers: one node on PostgreSQL");
    let single = {
        let mut server = Server::start(
            installed,
            Kind::CommandpostPostgres,
            &format!("cluster-fanout-{viewers}-single"),
            &Tuning::default(),
        )?;
        let plan = FanoutPlan::on(&mut server).await?;
        let meter = ClusterMeter {
            nodes: &[&server],
            redis: None,
            installed,
        };
        let (fanout, before, after) =
            scenarios::fanout_planned(&plan, params, traces, &meter).await?;
        row(1, fanout, &before, &after)
    };
    report(&single);
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!(
        "cluster fan-out, {viewers} viewers: editors on node 1, viewers on nodes 2 to {NODES}"
    );
    let database = postgres.fresh_database();
    let (mut nodes, _) = start_nodes(
        installed,
        &format!("cluster-fanout-{viewers}"),
        &database,
        redis,
    )?;
    let doc = nodes[0].new_doc().await?;
    let viewer_urls = nodes[1..]
        .iter()
        .map(|node| {
            on(
                &format!("127.0.0.1:{}", node.port),
                &node.connect_url(&doc, false),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let plan = FanoutPlan {
        kind: Kind::CommandpostPostgres,
        editor_url: nodes[0].connect_url(&doc, true),
        viewer_urls,
        doc,
    };
    let all: Vec<&Server> = nodes.iter().collect();
    let meter = ClusterMeter {
        nodes: &all,
        redis: Some(redis),
        installed,
    };
    let (fanout, before, after) = scenarios::fanout_planned(&plan, params, traces, &meter).await?;
    let cluster = row(NODES, fanout, &before, &after);
    report(&cluster);
    for node in &mut nodes {
        node.stop();
    }
    Ok([single, cluster])
}

fn row(nodes: usize, fanout: FanoutResult, before: &Engines, after: &Engines) -> ClusterFanout {
    let redis_commands: BTreeMap<String, u64> = after
        .redis_calls
        .iter()
        .filter(|(command, _)| command.as_str() != "info")
        .map(|(command, &calls)| {
            let earlier = before.redis_calls.get(command).copied().unwrap_or(0);
            (command.clone(), calls.saturating_sub(earlier))
        })
        .filter(|&(_, calls)| calls > 0)
        .collect();
    let total: u64 = redis_commands.values().sum();
    let updates = fanout.updates_sent + fanout.deletes_sent;
    let is_cluster = nodes > 1;
    let difference = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    ClusterFanout {
        nodes,
        redis_commands_per_update: (is_cluster && updates > 0)
            .then(|| total as f64 / updates as f64),
        redis_commands_per_1000_deliveries: (is_cluster && fanout.deliveries > 0)
            .then(|| total as f64 * 1000.0 / fanout.deliveries as f64),
        redis_cpu_seconds: difference(after.redis_cpu_seconds, before.redis_cpu_seconds),
        database_cpu_seconds: difference(after.database_cpu_seconds, before.database_cpu_seconds),
        redis_commands,
        fanout,
    }
}

fn report(row: &ClusterFanout) {
    let f = &row.fanout;
    eprintln!(
        "    {:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms, lost {}, nodes' CPU {:.1} s{}",
        f.deliveries_per_second,
        f.latency.p50_ms,
        f.latency.p99_ms,
        f.lost,
        f.server_cpu_seconds,
        row.redis_commands_per_update
            .map_or(String::new(), |per| format!(
                ", {per:.2} Redis commands per update ({:?})",
                row.redis_commands
            ))
    );
}

// ----------------------------------------------------------------- failover

/// What one follower is doing, as the failover rounds read it.
#[derive(Default)]
struct Follower {
    /// The node its connection goes to (HAProxy's `x-served-by`), while
    /// connected.
    node: Option<SocketAddr>,
    /// When it last lost its connection.
    lost_at: Option<Instant>,
    /// When it last finished syncing.
    synced_at: Option<Instant>,
}

struct Followers {
    list: Vec<Follower>,
    failed_attempts: u64,
}

/// y-websocket's reconnection delay after `failures` failed attempts in a
/// row: 100 ms after a connection that was up ends, then 200, 400 ... up
/// to 2.5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(5)).min(2500))
}

/// Opens a connection through the proxy and syncs; the node that answered.
async fn connect_through(
    url: &str,
    doc: &DocTarget,
    source: std::net::IpAddr,
) -> Result<(client::Ws, SocketAddr)> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (mut ws, response) = client::open_with_response(url, Some(source)).await?;
        let node = response
            .headers()
            .get(SERVED_BY)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("no {SERVED_BY} header from the proxy"))?;
        client::sync(&mut ws, &doc.flavor).await?;
        Ok((ws, node))
    })
    .await
    .context("timed out connecting through the proxy")?
}

/// A follower: connects through the proxy, reads until the connection
/// ends, and reconnects with y-websocket's backoff, for as long as the run
/// lasts.
async fn follow(
    index: usize,
    url: Rc<String>,
    doc: DocTarget,
    followers: Rc<RefCell<Followers>>,
    running: Rc<Cell<bool>>,
) {
    let source = client::source_address(index);
    let mut failures = 0u32;
    while running.get() {
        match connect_through(&url, &doc, source).await {
            Ok((mut ws, node)) => {
                failures = 0;
                {
                    let mut followers = followers.borrow_mut();
                    let me = &mut followers.list[index];
                    me.node = Some(node);
                    me.synced_at = Some(Instant::now());
                }
                while let Some(Ok(_)) = ws.next().await {}
                let mut followers = followers.borrow_mut();
                let me = &mut followers.list[index];
                me.node = None;
                me.lost_at = Some(Instant::now());
            }
            Err(_) => {
                followers.borrow_mut().failed_attempts += 1;
                failures += 1;
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        }
        tokio::time::sleep(backoff(0)).await;
    }
}

/// Types into the document on one node until `running` ends; counts the
/// updates sent.
async fn type_on(
    url: String,
    doc: DocTarget,
    trace: Arc<Trace>,
    sent: Rc<Cell<u64>>,
    running: Rc<Cell<bool>>,
) -> Result<()> {
    let (ws, _, _) = client::join(&url, &doc, None).await?;
    let (mut sink, mut stream) = ws.split();
    let reader = spawn_local(async move { while let Some(Ok(_)) = stream.next().await {} });
    let mut editor = Editor::new(scenarios::client_id_base(), crate::BODY_TEXT);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while running.get() {
        tick.tick().await;
        let edit = editor.step(&trace);
        let frame = doc.flavor.sync(wire::SYNC_UPDATE, &edit.update);
        sink.send(Message::binary(frame))
            .await
            .context("the editor's node closed its connection")?;
        sent.set(sent.get() + 1);
    }
    reader.abort();
    Ok(())
}

/// Failover rounds, with an editor typing on node 1 throughout: each round
/// connects `followers` fresh followers through HAProxy in front of the
/// nodes, kills node 2 or 3 (in turn) with SIGKILL, times its followers'
/// resync, and restarts it for the next round.
pub(crate) async fn failover(
    installed: &Installed,
    redis: &RedisServer,
    followers: usize,
    rounds: usize,
    trace: Arc<Trace>,
) -> Result<Vec<FailoverRound>> {
    let postgres = installed
        .postgres
        .as_ref()
        .context("the benchmark's PostgreSQL was not started")?;
    let database = postgres.fresh_database();
    let (mut nodes, tuning) = start_nodes(installed, "cluster-failover", &database, redis)?;
    let addrs: Vec<SocketAddr> = nodes
        .iter()
        .map(|node| SocketAddr::from(([127, 0, 0, 1], node.port)))
        .collect();
    let proxy = HaProxy::start(&addrs);
    servers::pin(proxy.pid(), &installed.server_cpu, "HAProxy")?;
    proxy.wait_all_up().await;
    let doc = nodes[0].new_doc().await?;
    let url = Rc::new(on(
        &proxy.addr().to_string(),
        &nodes[0].connect_url(&doc, false),
    )?);

    let running = Rc::new(Cell::new(true));
    let sent = Rc::new(Cell::new(0u64));
    let editor = spawn_local(type_on(
        nodes[0].connect_url(&doc, true),
        doc.clone(),
        trace,
        sent.clone(),
        running.clone(),
    ));
    let mut results = Vec::new();
    for round in 1..=rounds {
        let victim = 1 + (round - 1) % (NODES - 1);
        let killed = addrs[victim];
        // Fresh followers each round, so round-robin spreads them over all
        // the nodes again (clients do not move back to a restarted node).
        let state = Rc::new(RefCell::new(Followers {
            list: (0..followers).map(|_| Follower::default()).collect(),
            failed_attempts: 0,
        }));
        let round_running = Rc::new(Cell::new(true));
        let tasks: Vec<_> = (0..followers)
            .map(|i| {
                spawn_local(follow(
                    i,
                    url.clone(),
                    doc.clone(),
                    state.clone(),
                    round_running.clone(),
                ))
            })
            .collect();
        wait_for("every follower to connect through HAProxy", || {
            state.borrow().list.iter().all(|f| f.node.is_some())
        })
        .await?;
        // Connected and synced; let the joins' work settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (on_node, failed_before, sent_before) = {
            let state = state.borrow();
            let on_node: Vec<usize> = (0..followers)
                .filter(|&i| state.list[i].node == Some(killed))
                .collect();
            (on_node, state.failed_attempts, sent.get())
        };
        let killed_at = Instant::now();
        nodes[victim].kill9();
        proxy.wait_down(killed).await;
        let marked_down = killed_at.elapsed();
        let back = |state: &Followers, i: usize| {
            state.list[i]
                .synced_at
                .filter(|&at| at > killed_at)
                .map(|at| at - killed_at)
        };
        let limit = Duration::from_secs(60);
        let _ = wait_for_within("the killed node's followers to resync", limit, || {
            let state = state.borrow();
            on_node.iter().all(|&i| back(&state, i).is_some())
        })
        .await;
        let (times, survivors_disconnected, failed_attempts) = {
            let state = state.borrow();
            let mut times: Vec<Duration> =
                on_node.iter().filter_map(|&i| back(&state, i)).collect();
            times.sort();
            let survivors_disconnected = (0..followers)
                .filter(|i| !on_node.contains(i))
                .filter(|&i| state.list[i].lost_at.is_some_and(|at| at > killed_at))
                .count();
            (
                times,
                survivors_disconnected,
                state.failed_attempts - failed_before,
            )
        };
        let quantile = |q: f64| -> Option<f64> {
            let n = on_node.len();
            let needed = ((q * n as f64).ceil() as usize).max(1);
            (times.len() >= needed).then(|| times[needed - 1].as_secs_f64() * 1000.0)
        };
        let result = FailoverRound {
            round,
            followers,
            on_killed_node: on_node.len(),
            resynced: times.len(),
            first_ms: times.first().map(|t| t.as_secs_f64() * 1000.0),
            median_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            last_ms: quantile(1.0),
            marked_down_ms: marked_down.as_secs_f64() * 1000.0,
            failed_attempts,
            survivors_disconnected,
            editor_updates: sent.get() - sent_before,
        };
        eprintln!(
            "    round {round}: node {} killed with {} followers; {} resynced, 99 % in {} ms, all in {} ms; HAProxy marked it down after {:.0} ms; {} failed attempts",
            victim + 1,
            result.on_killed_node,
            result.resynced,
            result.p99_ms.map_or("n/a".into(), |ms| format!("{ms:.0}")),
            result.last_ms.map_or("n/a".into(), |ms| format!("{ms:.0}")),
            result.marked_down_ms,
            result.failed_attempts
        );
        results.push(result);
        if editor.is_finished() {
            bail!("the editor stopped: its node closed the connection");
        }
        round_running.set(false);
        for task in tasks {
            task.abort();
        }
        nodes[victim].restart(&tuning)?;
        proxy.wait_up(killed).await;
    }
    running.set(false);
    editor.abort();
    Ok(results)
}

async fn wait_for(what: &str, done: impl Fn() -> bool) -> Result<()> {
    wait_for_within(what, Duration::from_secs(120), done).await
}

async fn wait_for_within(what: &str, limit: Duration, done: impl Fn() -> bool) -> Result<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            bail!("timed out after {} s waiting for {what}", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
