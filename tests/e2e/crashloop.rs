//! Crash loop: the server is killed with SIGKILL at random moments while
//! several editors write and sidecar commands are issued, then restarted on
//! the same data directory, over and over.
//!
//! After every cycle:
//! - every document update acknowledged as saved (the opt-in `[100, n]`
//!   acknowledgement) and every command event answered with 200 is there,
//!   checked by a fresh client and the timeline before any client resends
//!   anything;
//! - the store opened without manual repair: the server started, `/healthz`
//!   and `/readyz` answer, the event log is gap-free, nothing was logged at
//!   ERROR level, and the text is the template followed by whole chunks;
//! - the editors reconnect with the documents they hold (giving back what
//!   the server never saved) and every client, two fresh ones included,
//!   reconverges to the same text, which holds every chunk ever typed.
//!
//! 20 cycles by default (CI); for a longer local run:
//! `COMMANDPOST_CRASH_CYCLES=500 cargo test -p commandpost --test e2e crashloop -- --nocapture`.
//! `COMMANDPOST_CRASH_SEED` replays the random kill moments of a reported run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use commandpost_shared::{AccessRole, IncidentId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::yclient::{Connect, YClient};
use crate::support::{Store as Backend, TestServer, WAIT, wait_until};

const SAVED: Connect = Connect {
    saved_acks: true,
    client_id: None,
};

const EDITORS: usize = 3;
const NOTE_POSTERS: usize = 2;
/// The kill lands this long (uniformly random) after every editor and the
/// sidecar had at least one write of the cycle acknowledged.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 0..=300;

fn cycles() -> u32 {
    match std::env::var("COMMANDPOST_CRASH_CYCLES") {
        Ok(value) => value
            .trim()
            .parse()
            .expect("COMMANDPOST_CRASH_CYCLES must be a number"),
        Err(_) => 20,
    }
}

fn seed() -> u64 {
    match std::env::var("COMMANDPOST_CRASH_SEED") {
        Ok(value) => value
            .trim()
            .parse()
            .expect("COMMANDPOST_CRASH_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// What the loop counted; `lost_*` and `anomalies` must stay empty.
#[derive(Default)]
struct Totals {
    cycles: u32,
    /// Distinct updates acknowledged as saved, and how many times one was
    /// looked for (each cycle checks all acknowledged so far).
    updates_acknowledged: u64,
    update_checks: u64,
    events_acknowledged: u64,
    event_checks: u64,
    /// Updates typed but not acknowledged when the server died; the
    /// editors give them back on reconnect.
    unacknowledged_at_kill: u64,
    /// Acknowledged update (chunk) or event (note) → first cycle it was
    /// missing in.
    lost_updates: BTreeMap<String, u32>,
    lost_events: BTreeMap<String, u32>,
    /// Chunks a client held that never came back after reconvergence.
    not_restored: BTreeMap<String, u32>,
    /// Notes refused with 429 (the per-token command limit): not
    /// acknowledged, retried.
    rate_limited: u64,
    anomalies: Vec<String>,
    kill_delays_ms: Vec<u64>,
}

impl Totals {
    fn lost(&self) -> usize {
        self.lost_updates.len() + self.lost_events.len()
    }
}

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_in_a_loop_loses_nothing_acknowledged_and_clients_reconverge,
    crash_loop
);
async fn crash_loop(store: Backend) {
    let cycles = cycles();
    let seed = seed();
    eprintln!(
        "crash loop: {cycles} cycles, seed {seed} (COMMANDPOST_CRASH_SEED={seed} replays it)"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    // A small compaction threshold, so kills also land around compactions.
    let mut server = TestServer::start_on_with(store, &["--compact-after-updates", "250"]);
    let incident = server.create_incident("Crash loop").await;
    let editor_token =
        |server: &TestServer, i: usize| server.token(AccessRole::Responder, &format!("Editor{i}"));
    let reader = server.token(AccessRole::Responder, "Reader");

    let mut editors = Vec::new();
    for i in 0..EDITORS {
        let url = server.ws_url(&incident, &editor_token(&server, i));
        editors.push(Arc::new(YClient::connect_with(&url, SAVED).await));
    }
    // The incident's template: the chunks are appended after it.
    let template = editors[0].read();
    let template_len = template.encode_utf16().count();

    let mut totals = Totals::default();
    // Every chunk typed so far, and those acknowledged as saved.
    let mut typed: Vec<String> = Vec::new();
    let mut acknowledged_chunks: HashSet<String> = HashSet::new();
    // Acknowledged notes: sequence number → text.
    let mut acknowledged_notes: BTreeMap<u64, String> = BTreeMap::new();
    // ERROR lines in the server's logs already reported.
    let mut errors_reported = 0;
    let mut skips_reported = 0;

    for cycle in 1..=cycles {
        // --- Write: editors append tagged chunks, posters post notes. ---
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        let mut first_changes = Vec::new();
        for (i, editor) in editors.iter().enumerate() {
            let tag = format!("[c{cycle}e{i}n0]");
            editor.push(&tag);
            let first = (tag, editor.changes_sent());
            first_changes.push(first.1);
            writers.push(tokio::spawn(write_chunks(
                editor.clone(),
                cycle,
                i,
                first,
                stop.clone(),
                rng.random(),
            )));
        }
        let notes_acknowledged = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        let posters: Vec<_> = (0..NOTE_POSTERS)
            .map(|poster| {
                tokio::spawn(post_notes(
                    http.clone(),
                    server.url(&format!("/api/incidents/{incident}/commands/post_note")),
                    // Commands are rate-limited per token: one per poster.
                    server.token(AccessRole::Responder, &format!("Noter{poster}")),
                    cycle,
                    poster,
                    stop.clone(),
                    notes_acknowledged.clone(),
                ))
            })
            .collect();

        // Kill at a random moment once the cycle has something acknowledged
        // on both channels (a condition, not a sleep, so slow machines only
        // make it slower).
        wait_until("a first acknowledged chunk per editor and note", || {
            editors
                .iter()
                .zip(&first_changes)
                .all(|(editor, first)| editor.saved() >= *first)
                && notes_acknowledged.load(Ordering::Relaxed) > 0
        })
        .await;
        let delay = rng.random_range(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        totals.kill_delays_ms.push(delay);

        // Acknowledgements already on the wire were sent after their flush,
        // so they count: read them once each socket has ended.
        wait_until("every editor's socket to end", || {
            editors.iter().all(|editor| editor.seen.lock().ended)
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let mut cycle_acknowledged = 0u64;
        let mut cycle_in_flight = 0u64;
        for (editor, writer) in editors.iter().zip(writers) {
            let sent = writer.await.unwrap();
            let saved = editor.saved();
            for (tag, change) in sent {
                if change <= saved {
                    acknowledged_chunks.insert(tag.clone());
                    cycle_acknowledged += 1;
                } else {
                    cycle_in_flight += 1;
                }
                typed.push(tag);
            }
        }
        totals.unacknowledged_at_kill += cycle_in_flight;
        let mut cycle_notes = 0u64;
        for poster in posters {
            let Posted {
                acknowledged,
                unexpected,
                rate_limited,
            } = poster.await.unwrap();
            totals.rate_limited += rate_limited;
            cycle_notes += acknowledged.len() as u64;
            for (text, seq) in acknowledged {
                if let Some(previous) = acknowledged_notes.insert(seq, text.clone()) {
                    totals.anomalies.push(format!(
                        "cycle {cycle}: seq {seq} acknowledged twice, for {previous:?} and {text:?}"
                    ));
                }
            }
            totals.anomalies.extend(
                unexpected
                    .into_iter()
                    .map(|u| format!("cycle {cycle}: {u}")),
            );
        }

        // --- Restart: the store must open as it is. ---
        server.restart();
        let status = reqwest::get(server.url("/healthz")).await.unwrap().status();
        assert_eq!(status, 200, "cycle {cycle}: /healthz after restart");
        // Ready = storage takes a write and flushes it (503 while a flush
        // takes over 5 s, which a loaded machine may see: wait, bounded).
        let ready_since = Instant::now();
        loop {
            let status = reqwest::get(server.url("/readyz")).await.unwrap().status();
            if status == 200 {
                break;
            }
            assert!(
                ready_since.elapsed() < WAIT,
                "cycle {cycle}: /readyz answers {status} after restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs = server.logs();
        let errors: Vec<&str> = logs.lines().filter(|line| line.contains("ERROR")).collect();
        // A stored part that did not load is skipped (and quarantined)
        // rather than failing the load: that is a repair, so it counts.
        let skipping: Vec<&str> = room_loads(&logs)
            .filter(|line| skipped_parts(line) > 0)
            .collect();
        if skipping.len() > skips_reported {
            totals.anomalies.push(format!(
                "cycle {cycle}: a room skipped stored parts on load:\n{}",
                skipping[skips_reported..].join("\n")
            ));
            skips_reported = skipping.len();
        }
        if errors.len() > errors_reported {
            totals.anomalies.push(format!(
                "cycle {cycle}: the server logged errors:\n{}",
                errors[errors_reported..].join("\n")
            ));
            errors_reported = errors.len();
        }

        // --- Durability: a fresh client, before anyone resends anything. ---
        let checker = YClient::connect(&server.ws_url(&incident, &reader)).await;
        let text = checker.read();
        let chunks = chunks_after_template(&text, &template).unwrap_or_else(|problem| {
            totals.anomalies.push(format!(
                "cycle {cycle}: the recovered text is damaged: {problem}"
            ));
            lenient_chunks(&text)
        });
        let present: HashSet<&str> = chunks.iter().copied().collect();
        if present.len() != chunks.len() {
            totals.anomalies.push(format!(
                "cycle {cycle}: a chunk appears twice in the recovered text"
            ));
        }
        for chunk in &acknowledged_chunks {
            if !present.contains(chunk.as_str()) {
                totals.lost_updates.entry(chunk.clone()).or_insert(cycle);
            }
        }
        totals.update_checks += acknowledged_chunks.len() as u64;

        let timeline = read_timeline(&server, &incident, &reader).await;
        for (position, event) in timeline.iter().enumerate() {
            let seq = event["seq"].as_u64();
            if seq != Some(position as u64 + 1) {
                totals.anomalies.push(format!(
                    "cycle {cycle}: timeline position {position} holds seq {seq:?}"
                ));
                break;
            }
        }
        let stored_notes: HashMap<u64, &str> = timeline
            .iter()
            .filter(|event| event["type"] == "note_posted")
            .filter_map(|event| Some((event["seq"].as_u64()?, event["text"].as_str()?)))
            .collect();
        for (seq, note) in &acknowledged_notes {
            if stored_notes.get(seq) != Some(&note.as_str()) {
                totals
                    .lost_events
                    .entry(format!("event {seq} ({note:?})"))
                    .or_insert(cycle);
            }
        }
        totals.event_checks += acknowledged_notes.len() as u64;

        // --- Reconvergence: editors reconnect with their documents. ---
        let mut reconnected = Vec::new();
        for (i, editor) in editors.drain(..).enumerate() {
            let editor = Arc::into_inner(editor).expect("the writer task has finished");
            let doc = editor.doc.clone();
            // Drop first: its update observer would otherwise fire too.
            drop(editor);
            let url = server.ws_url(&incident, &editor_token(&server, i));
            reconnected.push(Arc::new(YClient::connect_doc(&url, doc, SAVED).await));
        }
        editors = reconnected;
        // Nothing is ever deleted, so everyone ends with the template and
        // every chunk typed so far.
        let want = template_len + typed.iter().map(String::len).sum::<usize>();
        for (name, client) in std::iter::once(("checker", &checker))
            .chain(editors.iter().map(|editor| ("editor", editor.as_ref())))
        {
            wait_for_length(
                client,
                want,
                &format!("cycle {cycle}: {name} to reconverge"),
            )
            .await;
        }
        let converged = checker.read();
        for editor in &editors {
            assert!(
                editor.read() == converged,
                "cycle {cycle}: an editor's text differs from the checker's at the same length"
            );
        }
        let fresh = YClient::connect(&server.ws_url(&incident, &reader)).await;
        fresh.wait_text(&converged).await;
        match chunks_after_template(&converged, &template) {
            Ok(chunks) => {
                let present: HashSet<&str> = chunks.iter().copied().collect();
                for chunk in &typed {
                    if !present.contains(chunk.as_str()) {
                        totals.not_restored.entry(chunk.clone()).or_insert(cycle);
                    }
                }
            }
            Err(problem) => totals.anomalies.push(format!(
                "cycle {cycle}: the reconverged text is damaged: {problem}"
            )),
        }
        drop((checker, fresh));

        totals.cycles = cycle;
        totals.updates_acknowledged = acknowledged_chunks.len() as u64;
        totals.events_acknowledged = acknowledged_notes.len() as u64;
        eprintln!(
            "cycle {cycle}: killed {delay} ms after the first acknowledgements; {cycle_acknowledged} chunks acknowledged, {cycle_in_flight} in flight, {cycle_notes} notes acknowledged; lost so far {}",
            totals.lost()
        );
    }

    eprintln!(
        "crash loop summary: {} cycles (seed {seed}), kills {}..{} ms after first acks; {} acknowledged updates ({} checks), {} acknowledged events ({} checks), {} unacknowledged at kill restored by clients, {} notes rate-limited; lost {} (updates {}, events {}), not restored {}, anomalies {}; {:.1} s",
        totals.cycles,
        totals.kill_delays_ms.iter().min().unwrap_or(&0),
        totals.kill_delays_ms.iter().max().unwrap_or(&0),
        totals.updates_acknowledged,
        totals.update_checks,
        totals.events_acknowledged,
        totals.event_checks,
        totals.unacknowledged_at_kill,
        totals.rate_limited,
        totals.lost(),
        totals.lost_updates.len(),
        totals.lost_events.len(),
        totals.not_restored.len(),
        totals.anomalies.len(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        totals.lost() == 0,
        "acknowledged writes lost after kill -9 (seed {seed}): {} updates {:?}, {} events {:?} (item → first cycle missing)",
        totals.lost_updates.len(),
        first_few(&totals.lost_updates),
        totals.lost_events.len(),
        first_few(&totals.lost_events),
    );
    assert!(
        totals.not_restored.is_empty(),
        "chunks the editors held never reached every client (seed {seed}): {:?}",
        first_few(&totals.not_restored)
    );
    assert!(
        totals.anomalies.is_empty(),
        "crash loop anomalies (seed {seed}):\n{}",
        totals.anomalies.join("\n")
    );
    assert!(
        totals.updates_acknowledged > 0 && totals.events_acknowledged > 0,
        "the loop checked nothing"
    );
}

/// Appends one chunk per transaction (one update message, one change
/// number) until stopped or the socket ends; returns each chunk with the
/// change number that covers it.
async fn write_chunks(
    editor: Arc<YClient>,
    cycle: u32,
    index: usize,
    first: (String, u64),
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Vec<(String, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = vec![first];
    let mut n = 1u64;
    while !stop.load(Ordering::Relaxed) && !editor.seen.lock().ended {
        let tag = format!("[c{cycle}e{index}n{n}]");
        editor.push(&tag);
        // Read after the push: a concurrent sync reply can only make the
        // number larger, which is on the safe side.
        sent.push((tag, editor.changes_sent()));
        n += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1..=4))).await;
    }
    sent
}

/// What one note poster got.
struct Posted {
    /// Notes answered 200: text and event seq.
    acknowledged: Vec<(String, u64)>,
    /// Answers other than 200 or 429.
    unexpected: Vec<String>,
    /// Answers 429 (retried after a pause).
    rate_limited: u64,
}

/// Posts notes one after the other until stopped or the server is gone.
async fn post_notes(
    http: reqwest::Client,
    url: String,
    token: String,
    cycle: u32,
    poster: usize,
    stop: Arc<AtomicBool>,
    acknowledged_count: Arc<AtomicU64>,
) -> Posted {
    let mut posted = Posted {
        acknowledged: Vec::new(),
        unexpected: Vec::new(),
        rate_limited: 0,
    };
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let text = format!("crash note c{cycle}p{poster}k{k}");
        k += 1;
        let Ok(response) = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({ "text": text }))
            .send()
            .await
        else {
            // The server died under the request: not acknowledged.
            break;
        };
        let status = response.status().as_u16();
        let Ok(body) = response.json::<Value>().await else {
            // Died while answering: the answer was never complete.
            break;
        };
        match (status, body["events"][0]["seq"].as_u64()) {
            (200, Some(seq)) => {
                posted.acknowledged.push((text, seq));
                acknowledged_count.fetch_add(1, Ordering::Relaxed);
            }
            (429, _) => {
                posted.rate_limited += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => {
                posted
                    .unexpected
                    .push(format!("note {text:?} answered {status}: {body}"));
                break;
            }
        }
    }
    posted
}

/// The whole timeline, following `next_after` across pages.
async fn read_timeline(server: &TestServer, incident: &IncidentId, token: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0u64;
    loop {
        let (status, page) = server
            .get_json(
                &format!("/api/incidents/{incident}/timeline?after={after}&limit=1000"),
                token,
            )
            .await;
        assert_eq!(status, 200, "timeline after restart: {page}");
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return events,
        }
    }
}

/// The chunks after the template, requiring the text to be exactly the
/// template followed by whole `[...]` chunks (appends never split one).
fn chunks_after_template<'a>(text: &'a str, template: &str) -> Result<Vec<&'a str>, String> {
    let mut rest = text
        .strip_prefix(template)
        .ok_or("the template is no longer at the start")?;
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let end = match (rest.starts_with('['), rest.find(']')) {
            (true, Some(end)) if !rest[1..end].contains('[') => end,
            _ => {
                return Err(format!(
                    "stray text after {} chunks: {:?}",
                    chunks.len(),
                    rest.chars().take(60).collect::<String>()
                ));
            }
        };
        chunks.push(&rest[..=end]);
        rest = &rest[end + 1..];
    }
    Ok(chunks)
}

/// Every `[...]` in the text, for a damaged text.
fn lenient_chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        rest = &rest[start..];
        match rest.find(']') {
            Some(end) => {
                chunks.push(&rest[..=end]);
                rest = &rest[end + 1..];
            }
            None => break,
        }
    }
    chunks
}

/// Waits until the client's text has `want` UTF-16 units.
async fn wait_for_length(client: &YClient, want: usize, what: &str) {
    let started = Instant::now();
    loop {
        let have = client.len() as usize;
        if have == want {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "timed out waiting for {what}: {have} characters, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The log lines that say a room loaded.
fn room_loads(logs: &str) -> impl Iterator<Item = &str> {
    logs.lines().filter(|line| line.contains("room loaded"))
}

/// The `skipped=N` field of a "room loaded" line (0 when absent).
fn skipped_parts(line: &str) -> u64 {
    line.split_once("skipped=")
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

fn first_few(items: &BTreeMap<String, u32>) -> Vec<(&String, &u32)> {
    items.iter().take(20).collect()
}
