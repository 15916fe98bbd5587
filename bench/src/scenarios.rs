//! The scenarios. Each runs against one freshly started server and returns
//! its measurements. The load generator is single-threaded (it is pinned to
//! its own core): tasks share state through `Rc<RefCell<..>>`, and no borrow
//! is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, spawn_local};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::servers::{DocTarget, Kind, ProcStats, Server, Tuning};
use crate::trace::{Editor, Trace};
use crate::wire::{self, Flavor, IdRange, Incoming};

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, up to 10 minutes, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Latency {
    fn of(hist: &Histogram<u64>) -> Latency {
        if hist.is_empty() {
            return Latency::default();
        }
        Latency {
            samples: hist.len(),
            p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: hist.max() as f64 / 1000.0,
        }
    }

    fn of_durations(values: &[Duration]) -> Latency {
        let mut hist = new_histogram();
        for value in values {
            let _ = hist.record((value.as_micros() as u64).max(1));
        }
        Latency::of(&hist)
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Runs tasks over `items` with at most `limit` connecting at once.
async fn connect_all<T: 'static>(
    count: usize,
    limit: usize,
    connect: impl Fn(usize) -> futures::future::LocalBoxFuture<'static, Result<T>>,
) -> (Vec<T>, u64) {
    let results: Vec<Result<T>> = futures::stream::iter(0..count)
        .map(connect)
        .buffer_unordered(limit)
        .collect()
        .await;
    let mut ok = Vec::with_capacity(count);
    let mut failed = 0;
    for result in results {
        match result {
            Ok(value) => ok.push(value),
            Err(error) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("    connection failed: {error:#}");
                }
            }
        }
    }
    (ok, failed)
}

// ---------------------------------------------------------------- fan-out

/// How editors pace their keystrokes.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pace {
    /// A fixed rate (`--keys-per-second`).
    Rate,
    /// The trace's own timestamps, gaps capped at 2 s.
    Trace,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct FanoutParams {
    pub viewers: usize,
    pub editors: usize,
    pub keys_per_second: f64,
    pub pace: Pace,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct FanoutResult {
    pub server: Kind,
    pub params: FanoutParams,
    pub viewers_connected: usize,
    pub connect_seconds: f64,
    /// How long the editors took to send their keystrokes (longer than
    /// `params.seconds` when the server pushed back).
    #[serde(default)]
    pub typing_seconds: f64,
    /// Updates that created content (measured end to end).
    pub updates_sent: u64,
    /// Delete-only updates (relayed, but they carry no new id to trace).
    pub deletes_sent: u64,
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    pub expected_deliveries: u64,
    pub lost: u64,
    pub latency: Latency,
    pub frames_received: u64,
    pub connection_failures: u64,
    pub disconnects: u64,
    pub server_cpu_seconds: f64,
    pub server_peak_rss_mib: f64,
    pub loadgen_cpu_seconds: f64,
}

/// What the editors sent and the viewers received.
struct Ledger {
    editor_of: HashMap<u64, usize>,
    /// Per editor: (first clock of the update, when it was sent).
    sent: Vec<Vec<(u64, Instant)>>,
    hist: Histogram<u64>,
    delivered: u64,
    frames: u64,
    /// Block ids per received frame; every viewer gets the same bytes.
    ids: HashMap<Bytes, Rc<[IdRange]>>,
}

impl Ledger {
    fn ranges(&mut self, flavor: &Flavor, frame: &Bytes) -> Option<Rc<[IdRange]>> {
        if let Some(ranges) = self.ids.get(frame) {
            return Some(ranges.clone());
        }
        let update = match flavor.decode(frame).ok()? {
            Incoming::Update(update) | Incoming::Step2(update) => update,
            _ => return None,
        };
        let ranges: Rc<[IdRange]> = wire::update_ids(update).ok()?.into();
        if self.ids.len() > 4096 {
            self.ids.clear();
        }
        self.ids.insert(frame.clone(), ranges.clone());
        Some(ranges)
    }

    /// A viewer received `ranges`; `next` is its per-editor cursor.
    fn receive(&mut self, ranges: &[IdRange], next: &mut [usize], now: Instant) {
        for range in ranges {
            let Some(&editor) = self.editor_of.get(&range.client) else {
                continue;
            };
            let sent = &self.sent[editor];
            let cursor = &mut next[editor];
            while *cursor < sent.len() && sent[*cursor].0 < range.end {
                let (clock, at) = sent[*cursor];
                if clock >= range.start {
                    self.delivered += 1;
                    let _ = self.hist.record(micros(now.saturating_duration_since(at)));
                }
                *cursor += 1;
            }
        }
    }
}

pub(crate) fn client_id_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    // Yjs clients pick 32-bit ids; y-sweet relays re-encoded updates and
    // larger ids do not survive it.
    (nanos % (1 << 31)) + 1000
}

/// Where a fan-out run connects: the editors to `editor_url`, viewer `i`
/// to `viewer_urls[i % len]` (one server, or the nodes of a cluster).
pub(crate) struct FanoutPlan {
    pub kind: Kind,
    pub doc: DocTarget,
    pub editor_url: String,
    pub viewer_urls: Vec<String>,
}

/// Reads the servers' CPU and memory (and anything else a run wants to
/// compare) when the typing starts and once the viewers have drained.
pub(crate) trait Meter {
    /// What else is read, such as a Redis's command counts.
    type Extra;
    /// CPU seconds (summed over the processes) and peak RSS (of the
    /// largest).
    fn read(&self) -> (ProcStats, Self::Extra);
}

impl Meter for Server {
    type Extra = ();
    fn read(&self) -> (ProcStats, ()) {
        (self.stats(), ())
    }
}

impl FanoutPlan {
    /// Everyone on `server`, on a new document.
    pub(crate) async fn on(server: &mut Server) -> Result<FanoutPlan> {
        let doc = server.new_doc().await?;
        Ok(FanoutPlan {
            kind: server.kind,
            editor_url: server.connect_url(&doc, true),
            viewer_urls: vec![server.connect_url(&doc, false)],
            doc,
        })
    }
}

pub(crate) async fn fanout(
    server: &mut Server,
    params: &FanoutParams,
    traces: &[Arc<Trace>],
) -> Result<FanoutResult> {
    let plan = FanoutPlan::on(server).await?;
    let (result, (), ()) = fanout_planned(&plan, params, traces, &*server).await?;
    Ok(result)
}

/// A fan-out run as planned; also returns the meter's extra readings at
/// the start of the typing and after the drain.
pub(crate) async fn fanout_planned<M: Meter>(
    plan: &FanoutPlan,
    params: &FanoutParams,
    traces: &[Arc<Trace>],
    meter: &M,
) -> Result<(FanoutResult, M::Extra, M::Extra)> {
    let doc = plan.doc.clone();
    let base = client_id_base();
    let ledger = Rc::new(RefCell::new(Ledger {
        editor_of: (0..params.editors).map(|i| (base + i as u64, i)).collect(),
        sent: vec![Vec::new(); params.editors],
        hist: new_histogram(),
        delivered: 0,
        frames: 0,
        ids: HashMap::new(),
    }));
    let disconnects = Rc::new(Cell::new(0u64));
    let running = Rc::new(Cell::new(true));

    // Viewers first, so every update is expected by every viewer.
    let connect_started = Instant::now();
    let (viewers, viewer_failures) = connect_all(params.viewers, 256, |i| {
        let url = plan.viewer_urls[i % plan.viewer_urls.len()].clone();
        let doc = doc.clone();
        Box::pin(async move {
            let (ws, _, _) = client::join(&url, &doc, Some(client::source_address(i))).await?;
            Ok(ws)
        })
    })
    .await;
    let viewers_connected = viewers.len();
    let mut tasks: Vec<JoinHandle<()>> = viewers
        .into_iter()
        .map(|ws| {
            spawn_local(viewer_loop(
                ws,
                doc.flavor.clone(),
                ledger.clone(),
                params.editors,
                disconnects.clone(),
                running.clone(),
            ))
        })
        .collect();

    let (editors, editor_failures) = connect_all(params.editors, 32, |i| {
        let url = plan.editor_url.clone();
        let doc = doc.clone();
        Box::pin(async move {
            let (ws, _, _) =
                client::join(&url, &doc, Some(client::source_address(60_000 + i))).await?;
            Ok(ws)
        })
    })
    .await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    eprintln!(
        "    {} viewers and {} editors connected in {connect_seconds:.1} s",
        viewers_connected,
        editors.len()
    );

    let (before, extra_before) = meter.read();
    let own_before = ProcStats::own();
    let typing_started = Instant::now();
    let deadline = typing_started + Duration::from_secs_f64(params.seconds);
    let counts = Rc::new(Cell::new((0u64, 0u64)));
    let last_sent = Rc::new(Cell::new(typing_started));
    let mut writers = Vec::new();
    let editor_count = editors.len();
    for (i, ws) in editors.into_iter().enumerate() {
        let trace = traces[i % traces.len()].clone();
        writers.push(spawn_local(editor_loop(
            ws,
            doc.flavor.clone(),
            base + i as u64,
            i,
            editor_count,
            trace,
            params.clone(),
            typing_started,
            deadline,
            ledger.clone(),
            counts.clone(),
            last_sent.clone(),
            disconnects.clone(),
        )));
    }
    for writer in writers {
        let _ = writer.await;
    }
    // Deliveries per second over the time the editors actually typed (a
    // server that pushes back stretches it).
    let typing = (last_sent.get() - typing_started)
        .as_secs_f64()
        .max(params.seconds * 0.5);
    let (updates_sent, deletes_sent) = counts.get();
    let expected = updates_sent * viewers_connected as u64;
    // Drain: wait for the last deliveries (or give up after 10 s).
    let drain_started = Instant::now();
    while ledger.borrow().delivered < expected && drain_started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (after, extra_after) = meter.read();
    let own_after = ProcStats::own();
    running.set(false);
    for task in tasks.drain(..) {
        task.abort();
    }
    let ledger = ledger.borrow();
    let result = FanoutResult {
        server: plan.kind,
        params: params.clone(),
        viewers_connected,
        connect_seconds,
        typing_seconds: typing,
        updates_sent,
        deletes_sent,
        deliveries: ledger.delivered,
        deliveries_per_second: ledger.delivered as f64 / typing,
        expected_deliveries: expected,
        lost: expected.saturating_sub(ledger.delivered),
        latency: Latency::of(&ledger.hist),
        frames_received: ledger.frames,
        connection_failures: viewer_failures + editor_failures,
        disconnects: disconnects.get(),
        server_cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        server_peak_rss_mib: after.peak_rss_kib as f64 / 1024.0,
        loadgen_cpu_seconds: own_after.cpu_seconds - own_before.cpu_seconds,
    };
    Ok((result, extra_before, extra_after))
}

async fn viewer_loop(
    mut ws: Ws,
    flavor: Flavor,
    ledger: Rc<RefCell<Ledger>>,
    editors: usize,
    disconnects: Rc<Cell<u64>>,
    running: Rc<Cell<bool>>,
) {
    let mut next = vec![0usize; editors];
    let keepalive = flavor.keepalive();
    let mut tick = keepalive_timer();
    loop {
        let received = tokio::select! {
            received = ws.next() => received,
            _ = tick.tick(), if keepalive.is_some() => {
                let frame = keepalive.clone().unwrap_or_default();
                if ws.send(Message::binary(frame)).await.is_ok() {
                    continue;
                }
                None
            }
        };
        match received {
            Some(Ok(Message::Binary(frame))) => {
                let now = Instant::now();
                let mut ledger = ledger.borrow_mut();
                ledger.frames += 1;
                if std::env::var_os("CP_BENCH_DEBUG").is_some() && ledger.frames < 40 {
                    eprintln!("frame {:02x?}", &frame[..frame.len().min(40)]);
                }
                if let Some(ranges) = ledger.ranges(&flavor, &frame) {
                    ledger.receive(&ranges, &mut next, now);
                }
            }
            Some(Ok(_)) => {}
            _ => {
                if running.get() {
                    disconnects.set(disconnects.get() + 1);
                }
                return;
            }
        }
    }
}

fn keepalive_timer() -> tokio::time::Interval {
    let period = Duration::from_secs(20);
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

#[allow(clippy::too_many_arguments)]
async fn editor_loop(
    ws: Ws,
    flavor: Flavor,
    client_id: u64,
    index: usize,
    editors: usize,
    trace: Arc<Trace>,
    params: FanoutParams,
    started: Instant,
    deadline: Instant,
    ledger: Rc<RefCell<Ledger>>,
    counts: Rc<Cell<(u64, u64)>>,
    last_sent: Rc<Cell<Instant>>,
    disconnects: Rc<Cell<u64>>,
) {
    let (mut sink, mut stream) = ws.split();
    // Editors read what the others type (and discard it), as a client would.
    let reader = spawn_local(async move { while let Some(Ok(_)) = stream.next().await {} });
    let mut editor = Editor::new(client_id, &format!("editor-{index}"));
    let start_at = (index * 7919) % trace.patches.len().max(1);
    editor.skip_to(start_at, &trace);
    let period = Duration::from_secs_f64(1.0 / params.keys_per_second);
    // Spread the editors' first keystrokes over one period.
    let mut at = started + period.mul_f64(index as f64 / editors.max(1) as f64);
    let mut position = start_at;
    while at < deadline {
        tokio::time::sleep_until(at.into()).await;
        let edit = editor.step(&trace);
        match edit.clocks {
            Some((clock, _)) => {
                // The keystroke's scheduled time, not the time the loop got
                // here: when a server pushes back and a send blocks, the
                // keystrokes queued behind it are late, and that lateness
                // belongs in their latency (no coordinated omission).
                ledger.borrow_mut().sent[index].push((clock, at));
                last_sent.set(last_sent.get().max(Instant::now()));
                let (u, d) = counts.get();
                counts.set((u + 1, d));
            }
            None => {
                let (u, d) = counts.get();
                counts.set((u, d + 1));
            }
        }
        let frame = flavor.sync(wire::SYNC_UPDATE, &edit.update);
        if sink.send(Message::binary(frame)).await.is_err() {
            disconnects.set(disconnects.get() + 1);
            break;
        }
        let gap = match (params.pace, &trace.times_ms) {
            (Pace::Trace, Some(times)) => {
                let here = times[position % times.len()];
                let next = times[(position + 1) % times.len()];
                Duration::from_millis(next.saturating_sub(here).min(2000))
            }
            _ => period,
        };
        position += 1;
        at += gap;
    }
    // Keep reading until the viewers have drained, then go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    reader.abort();
}

// ------------------------------------------------------------ connections

#[derive(Clone, Debug, Serialize)]
pub(crate) struct ConnectionsResult {
    pub server: Kind,
    pub documents: usize,
    pub connections: usize,
    pub established: usize,
    pub connection_failures: u64,
    pub establish_seconds: f64,
    pub still_open_after_hold: usize,
    pub hold_seconds: f64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    pub rss_per_connection_kib: f64,
    pub server_cpu_seconds: f64,
}

pub(crate) async fn connections(
    server: &mut Server,
    documents: usize,
    connections: usize,
    hold: Duration,
) -> Result<ConnectionsResult> {
    let mut docs = Vec::with_capacity(documents);
    for _ in 0..documents {
        docs.push(server.new_doc().await?);
    }
    // One editor per document first, so documents are loaded before the
    // baseline is taken; what follows is the cost of the connections.
    let mut holders = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let url = server.connect_url(doc, true);
        let (ws, _, _) = client::join(&url, doc, Some(client::source_address(i)))
            .await
            .context("opening a document")?;
        holders.push(spawn_local(drain(ws, doc.flavor.keepalive(), None)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.stats();
    let open = Rc::new(Cell::new(0usize));
    let urls: Vec<(String, DocTarget)> = docs
        .iter()
        .map(|doc| (server.connect_url(doc, false), doc.clone()))
        .collect();
    let urls = Rc::new(urls);
    let started = Instant::now();
    let (sockets, failures) = connect_all(connections, 512, |i| {
        let urls = urls.clone();
        Box::pin(async move {
            let (url, doc) = &urls[i % urls.len()];
            let (ws, _, _) = client::join(url, doc, Some(client::source_address(i))).await?;
            Ok(ws)
        })
    })
    .await;
    let establish_seconds = started.elapsed().as_secs_f64();
    let established = sockets.len();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| {
            open.set(open.get() + 1);
            spawn_local(drain(ws, docs[0].flavor.keepalive(), Some(open.clone())))
        })
        .collect();
    eprintln!("    {established} connections in {establish_seconds:.1} s; holding");
    tokio::time::sleep(hold).await;
    let after = server.stats();
    let still_open = open.get();
    for task in tasks.into_iter().chain(holders) {
        task.abort();
    }
    let grown_kib = after.rss_kib.saturating_sub(before.rss_kib) as f64;
    Ok(ConnectionsResult {
        server: server.kind,
        documents,
        connections,
        established,
        connection_failures: failures,
        establish_seconds,
        still_open_after_hold: still_open,
        hold_seconds: hold.as_secs_f64(),
        rss_before_mib: before.rss_kib as f64 / 1024.0,
        rss_after_mib: after.rss_kib as f64 / 1024.0,
        rss_per_connection_kib: grown_kib / established.max(1) as f64,
        server_cpu_seconds: after.cpu_seconds - before.cpu_seconds,
    })
}

/// Reads and discards until the connection ends (sending the flavour's
/// keepalive now and then); decrements `open` then.
async fn drain(mut ws: Ws, keepalive: Option<Vec<u8>>, open: Option<Rc<Cell<usize>>>) {
    let mut tick = keepalive_timer();
    loop {
        tokio::select! {
            received = ws.next() => match received {
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = tick.tick(), if keepalive.is_some() => {
                let frame = keepalive.clone().unwrap_or_default();
                if ws.send(Message::binary(frame)).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(open) = open {
        open.set(open.get() - 1);
    }
}

// ------------------------------------------------------------------- join

#[derive(Clone, Debug, Serialize)]
pub(crate) struct JoinResult {
    pub server: Kind,
    pub document_bytes: usize,
    /// Sequential single joins, WebSocket open to synced.
    pub warm_single: Latency,
    /// 100 (or fewer in quick mode) joining at once.
    pub warm_concurrent: Latency,
    pub warm_concurrent_wall_ms: f64,
    pub cold_single: Option<Latency>,
    pub cold_concurrent: Option<Latency>,
    pub cold_concurrent_wall_ms: Option<f64>,
    pub failures: u64,
}

/// Uploads `update` (the whole document) and waits until the server holds
/// it: Command Post acknowledges the save; for the others a fresh client
/// syncs until it sees every block.
async fn upload(server: &Server, doc: &DocTarget, update: &[u8]) -> Result<JoinHandle<()>> {
    let url = server.connect_url(doc, true);
    let (mut ws, _, _) = client::join(&url, doc, None).await?;
    let want: u64 = wire::update_ids(update)?
        .iter()
        .map(|r| r.end - r.start)
        .sum();
    if server.kind.is_commandpost() {
        ws.send(Message::binary(doc.flavor.saved_opt_in())).await?;
    }
    ws.send(Message::binary(doc.flavor.sync(wire::SYNC_UPDATE, update)))
        .await?;
    if server.kind.is_commandpost() {
        loop {
            let frame = client::next_binary(&mut ws).await?;
            if let Incoming::Saved(n) = doc.flavor.decode(&frame)?
                && n >= 1
            {
                break;
            }
        }
    }
    // Keep the uploader connected: it keeps in-memory servers' document
    // alive between joins.
    let holder = spawn_local(drain(ws, doc.flavor.keepalive(), None));
    let started = Instant::now();
    loop {
        let (_, _, state) = client::join(&url, doc, None).await?;
        let have: u64 = wire::update_ids(&state)?
            .iter()
            .filter(|r| r.client == 1)
            .map(|r| r.end - r.start)
            .sum();
        if have >= want {
            return Ok(holder);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not take the whole document within 60 s ({have} of {want} ids)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn join_once(url: &str, doc: &DocTarget) -> Result<Duration> {
    let (ws, took, state) = client::join(url, doc, None).await?;
    anyhow::ensure!(!state.is_empty(), "empty sync step 2");
    drop(ws);
    Ok(took)
}

async fn join_many(url: &str, doc: &DocTarget, n: usize) -> (Vec<Duration>, f64, u64) {
    let started = Instant::now();
    let joins = (0..n).map(|_| {
        let url = url.to_owned();
        let doc = doc.clone();
        spawn_local(async move { join_once(&url, &doc).await })
    });
    let results = futures::future::join_all(joins).await;
    let wall = started.elapsed().as_secs_f64() * 1000.0;
    let mut took = Vec::new();
    let mut failed = 0;
    for result in results {
        match result {
            Ok(Ok(d)) => took.push(d),
            _ => failed += 1,
        }
    }
    (took, wall, failed)
}

pub(crate) async fn join(
    server: &mut Server,
    tuning: &Tuning,
    update: &[u8],
    singles: usize,
    concurrent: usize,
    cold_samples: usize,
) -> Result<JoinResult> {
    let doc = server.new_doc().await?;
    let holder = upload(server, &doc, update).await?;
    let url = server.connect_url(&doc, false);
    let mut failures = 0;
    let mut warm = Vec::new();
    for _ in 0..singles {
        match join_once(&url, &doc).await {
            Ok(d) => warm.push(d),
            Err(_) => failures += 1,
        }
    }
    let (together, wall, failed) = join_many(&url, &doc, concurrent).await;
    failures += failed;
    holder.abort();
    let mut result = JoinResult {
        server: server.kind,
        document_bytes: update.len(),
        warm_single: Latency::of_durations(&warm),
        warm_concurrent: Latency::of_durations(&together),
        warm_concurrent_wall_ms: wall,
        cold_single: None,
        cold_concurrent: None,
        cold_concurrent_wall_ms: None,
        failures,
    };
    if server.kind.stores() && cold_samples > 0 {
        if server.kind == Kind::Ysweet {
            wait_for_ysweet_checkpoint(server).await?;
        }
        let mut cold = Vec::new();
        for _ in 0..cold_samples {
            server.restart(tuning)?;
            match join_once(&url, &doc).await {
                Ok(d) => cold.push(d),
                Err(error) => {
                    eprintln!("    cold join failed: {error:#}");
                    failures += 1
                }
            }
        }
        server.restart(tuning)?;
        let (together, wall, failed) = join_many(&url, &doc, concurrent).await;
        failures += failed;
        result.cold_single = Some(Latency::of_durations(&cold));
        result.cold_concurrent = Some(Latency::of_durations(&together));
        result.cold_concurrent_wall_ms = Some(wall);
        result.failures = failures;
    }
    Ok(result)
}

/// y-sweet writes documents to its store on a debounce: wait until its data
/// file exists and has stopped changing before restarting it.
async fn wait_for_ysweet_checkpoint(server: &Server) -> Result<()> {
    let store = server.dir.join("store");
    let started = Instant::now();
    let mut last = (0u64, Instant::now());
    loop {
        let size = dir_size(&store);
        if size != last.0 {
            last = (size, Instant::now());
        } else if size > 0 && last.1.elapsed() > Duration::from_secs(3) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "y-sweet wrote nothing to {} within 120 s",
            store.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

// --------------------------------------------------------- durable writes

#[derive(Clone, Debug, Serialize)]
pub(crate) struct DurableResult {
    pub server: Kind,
    /// The store Command Post ran on (sled or PostgreSQL).
    pub store: Option<&'static str>,
    pub writers: usize,
    pub documents: usize,
    pub pipeline: usize,
    pub seconds: f64,
    pub acknowledged: u64,
    pub unacknowledged: u64,
    pub acknowledged_per_second: f64,
    pub ack_latency: Latency,
    pub server_cpu_seconds: f64,
    /// CPU seconds of the PostgreSQL server (all its processes), on
    /// PostgreSQL; it runs on the same core as the server.
    pub database_cpu_seconds: Option<f64>,
    /// Command Post: group commits during the run, and their mean time
    /// (write and fsync, or PostgreSQL's commit), from its /metrics.
    pub group_commits: Option<f64>,
    pub mean_group_commit_ms: Option<f64>,
    /// CPU seconds other processes (neither the server nor its database)
    /// took on the servers' core during the run: other work on the
    /// machine, which the server and database then did not get.
    pub other_cpu_on_server_core_seconds: Option<f64>,
    /// The same on the load generator's core (other than its own CPU).
    pub other_cpu_on_loadgen_core_seconds: Option<f64>,
    pub failures: u64,
}

pub(crate) async fn durable(
    server: &mut Server,
    writers: usize,
    documents: usize,
    pipeline: usize,
    seconds: f64,
    traces: &[Arc<Trace>],
) -> Result<DurableResult> {
    let mut docs = Vec::new();
    for _ in 0..documents {
        docs.push(server.new_doc().await?);
    }
    let mut sockets = Vec::new();
    let mut failures = 0;
    for i in 0..writers {
        let doc = &docs[i % docs.len()];
        let url = server.connect_url(doc, true);
        match client::join(&url, doc, Some(client::source_address(i))).await {
            Ok((mut ws, _, _)) => {
                ws.send(Message::binary(doc.flavor.saved_opt_in())).await?;
                sockets.push((ws, doc.flavor.clone()));
            }
            Err(_) => failures += 1,
        }
    }
    let hist = Rc::new(RefCell::new(new_histogram()));
    let acked = Rc::new(Cell::new(0u64));
    let sent_total = Rc::new(Cell::new(0u64));
    let before = server.stats();
    let database_before = server.database_cpu_seconds();
    let commits_before = server.group_commits().await;
    let core_before = server.core_busy_seconds();
    let loadgen_core = crate::servers::own_core();
    let loadgen_before = loadgen_core
        .as_deref()
        .and_then(crate::servers::core_busy_seconds)
        .map(|busy| busy - ProcStats::own().cpu_seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let base = client_id_base();
    let mut tasks = Vec::new();
    for (i, (ws, flavor)) in sockets.into_iter().enumerate() {
        let trace = traces[i % traces.len()].clone();
        let hist = hist.clone();
        let acked = acked.clone();
        let sent_total = sent_total.clone();
        tasks.push(spawn_local(async move {
            let (mut sink, mut stream) = ws.split();
            let window = Rc::new(Semaphore::new(pipeline));
            let pending: Rc<RefCell<VecDeque<Instant>>> = Rc::new(RefCell::new(VecDeque::new()));
            let reader = {
                let window = window.clone();
                let pending = pending.clone();
                let flavor = flavor.clone();
                spawn_local(async move {
                    let mut confirmed = 0u64;
                    while let Some(Ok(message)) = stream.next().await {
                        let Message::Binary(frame) = message else {
                            continue;
                        };
                        let Ok(Incoming::Saved(n)) = flavor.decode(&frame) else {
                            continue;
                        };
                        let now = Instant::now();
                        let mut pending = pending.borrow_mut();
                        let mut hist = hist.borrow_mut();
                        while confirmed < n {
                            if let Some(at) = pending.pop_front() {
                                let _ = hist.record(micros(now - at));
                                acked.set(acked.get() + 1);
                                window.add_permits(1);
                            }
                            confirmed += 1;
                        }
                    }
                })
            };
            let mut editor = Editor::new(base + i as u64, &format!("writer-{i}"));
            editor.skip_to(i * 7919, &trace);
            while Instant::now() < deadline {
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                let edit = editor.step(&trace);
                pending.borrow_mut().push_back(Instant::now());
                sent_total.set(sent_total.get() + 1);
                if sink
                    .send(Message::binary(
                        flavor.sync(wire::SYNC_UPDATE, &edit.update),
                    ))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // Wait for the outstanding acknowledgements (up to 10 s).
            let waited = Instant::now();
            while !pending.borrow().is_empty() && waited.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reader.abort();
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let after = server.stats();
    let database_after = server.database_cpu_seconds();
    let commits_after = server.group_commits().await;
    let core_after = server.core_busy_seconds();
    let loadgen_after = loadgen_core
        .as_deref()
        .and_then(crate::servers::core_busy_seconds)
        .map(|busy| busy - ProcStats::own().cpu_seconds);
    let commits = commits_before
        .zip(commits_after)
        .map(|((count, sum), (count_after, sum_after))| (count_after - count, sum_after - sum));
    let acknowledged = acked.get();
    let hist = hist.borrow();
    let server_cpu_seconds = after.cpu_seconds - before.cpu_seconds;
    let database_cpu_seconds = database_before
        .zip(database_after)
        .map(|(before, after)| after - before);
    Ok(DurableResult {
        server: server.kind,
        store: server.kind.store(),
        writers,
        documents,
        pipeline,
        seconds,
        acknowledged,
        unacknowledged: sent_total.get() - acknowledged,
        acknowledged_per_second: acknowledged as f64 / seconds,
        ack_latency: Latency::of(&hist),
        server_cpu_seconds,
        database_cpu_seconds,
        other_cpu_on_server_core_seconds: core_before.zip(core_after).map(|(before, after)| {
            (after - before - server_cpu_seconds - database_cpu_seconds.unwrap_or(0.0)).max(0.0)
        }),
        other_cpu_on_loadgen_core_seconds: loadgen_before
            .zip(loadgen_after)
            .map(|(before, after)| (after - before).max(0.0)),
        group_commits: commits.map(|(count, _)| count),
        mean_group_commit_ms: commits
            .filter(|(count, _)| *count > 0.0)
            .map(|(count, sum)| sum / count * 1000.0),
        failures,
    })
}
