//! Storage measurements: the cost of group commit under a burst, and the
//! time to cold-load a large document from storage.
//!
//! ```text
//! cargo run --release -p commandpost --example storage_bench [-- --quick]
//! ```
//!
//! Group commit: 64 writers each append small updates and wait for each to be
//! durable before the next (like editors waiting for "saved"), then one open
//! burst of 20,000 queued at once. Reports flushes per second, updates per
//! flush and acknowledgement latency.
//!
//! Cold load: the `automerge-paper` trace (259,778 edits) replayed into a yrs
//! document, one update per edit, stored (1) as a raw log and (2) compacted
//! into a snapshot; then the store is reopened and the document rebuilt the
//! way a room loads it.

#![allow(
    clippy::unwrap_used,
    reason = "a measurement: a failed unwrap stops the run, with its location"
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use commandpost::rooms::{build_doc, compaction_snapshot};
use commandpost::store::Store;
use commandpost_shared::{Actor, IncidentId, UserId};
use yrs::{GetString, ReadTxn, StateVector, Text, Transact};

fn open(dir: &Path) -> Store {
    // The previous handle's writer thread may still be closing the database.
    Store::open_when_unlocked(dir, Duration::from_secs(10))
        .unwrap_or_else(|error| panic!("cannot reopen the store: {error}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn new_incident(store: &Store) -> IncidentId {
    let actor = Actor {
        id: UserId("bench".into()),
        name: "Bench".into(),
    };
    store
        .create_incident("bench".into(), actor, chrono::Utc::now(), |_| {
            commandpost::store::InitialContent {
                doc: commandpost::template::initial_update(""),
                events: Vec::new(),
            }
        })
        .await
        .unwrap()
        .id
}

async fn group_commit(dir: &Path, quick: bool) {
    let store = open(dir);
    let incident = new_incident(&store).await;
    let writers = 64u64;
    let per_writer = if quick { 20 } else { 300 };
    // A typical single-keystroke Yjs update is ~25-40 bytes.
    let update = vec![7u8; 32];
    let next_seq = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let sequencer = Arc::new(parking_lot::Mutex::new(()));
    let flushes_before = store.stats().flushes.load(Ordering::Relaxed);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            let incident = incident.clone();
            let update = update.clone();
            let next_seq = next_seq.clone();
            let sequencer = sequencer.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_writer as usize);
                for _ in 0..per_writer {
                    let sent = Instant::now();
                    // A room assigns sequence numbers and queues under its lock.
                    let wait = {
                        let _room = sequencer.lock();
                        let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                        store.append(&incident, seq, update.clone()).unwrap()
                    };
                    wait.await.unwrap().unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let flushes = store.stats().flushes.load(Ordering::Relaxed) - flushes_before;
    latencies.sort();
    let total = writers * per_writer;
    println!(
        "group commit, {writers} writers waiting for each ack: {total} updates in {:.2}s = {:.0} updates/s; {flushes} flushes = {:.0} flushes/s, {:.1} updates/flush; ack p50 {:.2} ms, p99 {:.2} ms",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        flushes as f64 / elapsed.as_secs_f64(),
        total as f64 / flushes as f64,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );

    // An open burst: everything queued at once.
    let burst = if quick { 2_000 } else { 20_000 };
    let flushes_before = store.stats().flushes.load(Ordering::Relaxed);
    let started = Instant::now();
    let waits: Vec<_> = (0..burst)
        .map(|_| {
            let seq = next_seq.fetch_add(1, Ordering::Relaxed);
            store.append(&incident, seq, update.clone()).unwrap()
        })
        .collect();
    for wait in waits {
        wait.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    let flushes = store.stats().flushes.load(Ordering::Relaxed) - flushes_before;
    println!(
        "group commit, burst of {burst} queued at once: all durable in {:.1} ms = {:.0} updates/s; {flushes} flushes, {:.0} updates/flush",
        elapsed.as_secs_f64() * 1e3,
        burst as f64 / elapsed.as_secs_f64(),
        burst as f64 / flushes.max(1) as f64,
    );
}

async fn cold_load(dir: &Path, quick: bool) {
    let trace_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/editing-traces/automerge-paper.json.gz");
    let file = std::fs::File::open(&trace_path)
        .unwrap_or_else(|error| panic!("cannot open {} ({error})", trace_path.display()));
    let trace: serde_json::Value =
        serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap();
    let end_content = trace["endContent"].as_str().unwrap().to_owned();
    let txns = trace["txns"].as_array().unwrap();
    let limit = if quick { 20_000 } else { txns.len() };

    // Replay the trace, capturing one update per edit as a client sends it.
    let started = Instant::now();
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("body");
    let updates = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(limit)));
    let _subscription = {
        let updates = updates.clone();
        doc.observe_update_v1(move |_, event| updates.lock().push(event.update.clone()))
            .unwrap()
    };
    for txn in &txns[..limit] {
        let mut transaction = doc.transact_mut();
        for patch in txn["patches"].as_array().unwrap() {
            let position = patch[0].as_u64().unwrap() as u32;
            let delete = patch[1].as_u64().unwrap() as u32;
            let insert = patch[2].as_str().unwrap();
            if delete > 0 {
                text.remove_range(&mut transaction, position, delete);
            }
            if !insert.is_empty() {
                text.insert(&mut transaction, position, insert);
            }
        }
    }
    drop(_subscription);
    let updates = std::mem::take(&mut *updates.lock());
    let final_text = text.get_string(&doc.transact());
    if !quick {
        assert_eq!(final_text, end_content, "trace replay is wrong");
    }
    println!(
        "automerge-paper: replayed {} edits in {:.2}s into {} characters",
        updates.len(),
        started.elapsed().as_secs_f64(),
        final_text.chars().count()
    );

    // (1) The whole log, as stored without compaction.
    let store = open(dir);
    let incident = new_incident(&store).await;
    let started = Instant::now();
    let mut last = None;
    for (index, update) in updates.iter().enumerate() {
        last = Some(
            store
                .append(&incident, index as u64 + 1, update.clone())
                .unwrap(),
        );
    }
    last.unwrap().await.unwrap().unwrap();
    println!(
        "stored {} updates as a raw log in {:.2}s",
        updates.len(),
        started.elapsed().as_secs_f64()
    );
    drop(store);
    measure_load(dir, &incident, &final_text, "raw log (no compaction)");

    // (2) Compacted, as the server keeps it. Compaction checks that the
    // snapshot reloads as the live document: what does that cost, next to
    // encoding the snapshot alone?
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let encode = median(
        (0..5)
            .map(|_| {
                let started = Instant::now();
                let snapshot = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                std::hint::black_box(snapshot);
                started.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let checked = median(
        (0..5)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(compaction_snapshot(&doc).unwrap());
                started.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!(
        "compaction snapshot: encode {:.1} ms, encode + reload check {:.1} ms ({:.1}x)",
        encode * 1e3,
        checked * 1e3,
        checked / encode
    );
    let store = open(dir);
    let snapshot = compaction_snapshot(&doc).unwrap();
    println!("snapshot: {} bytes", snapshot.len());
    store
        .compact(&incident, updates.len() as u64, snapshot)
        .unwrap();
    store.barrier().unwrap().await.unwrap().unwrap();
    drop(store);
    measure_load(dir, &incident, &final_text, "compacted snapshot");
}

fn measure_load(dir: &Path, incident: &IncidentId, expected: &str, label: &str) {
    let mut times = Vec::new();
    for _ in 0..5 {
        let store = open(dir);
        let started = Instant::now();
        let stored = store.load_doc(incident).unwrap();
        let read = started.elapsed();
        let doc = build_doc(incident, &stored).unwrap();
        let total = started.elapsed();
        let text = doc.get_or_insert_text("body");
        assert_eq!(text.get_string(&doc.transact()), expected);
        times.push((total, read, stored.updates.len()));
        drop(store);
    }
    times.sort();
    let (median, read, entries) = times[times.len() / 2];
    println!(
        "cold load from {label}: median {:.1} ms of 5 (storage read {:.1} ms, {entries} log entries)",
        median.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let dir = tempfile::tempdir().unwrap();
    group_commit(&dir.path().join("group"), quick).await;
    cold_load(&dir.path().join("cold"), quick).await;
}
