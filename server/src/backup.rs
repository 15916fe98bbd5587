//! Consistent online backups: the backup file format.
//!
//! `GET /api/admin/backup` (admin) has the store hand over every record it
//! holds while its writer is held (everything acknowledged before is
//! included, later writes wait) and writes them into one gzip file;
//! `commandpost backup` downloads that file from a running server, and
//! `commandpost restore` loads it into a new, empty store through the
//! store's import. The records are logical (incidents, seqs, token ids), not
//! an engine's keys, so a backup restores into any storage backend.
//!
//! Format `COMMANDPOST-BACKUP-2`, inside gzip: the magic line, then records,
//! each a tag byte and its fields, numbers first (u64 BE), then byte strings
//! (u32 BE length + bytes):
//!
//! | tag | record | numbers | byte strings |
//! |-----|--------|---------|--------------|
//! | `c` | incident counter | the last incident number issued | |
//! | `i` | incident | number | record (JSON) |
//! | `s` | document snapshot | incident, last log seq covered | v1 update |
//! | `u` | log update | incident, seq | v1 update |
//! | `e` | event | incident, seq | event (JSON) |
//! | `r` | revocation | | token id, record (JSON) |
//! | `t` | issued token | | token id, record (JSON) |
//! | `q` | quarantine record | | id, record (JSON) |
//!
//! and last the end record: `E` and how many records of each kind came
//! (8 × u64 BE, in the table's order); nothing follows. gzip's CRC-32 covers
//! the bytes and the end record the completeness; a restore reads and checks
//! the whole file before it writes anything.
//!
//! Files of the earlier format, `COMMANDPOST-BACKUP-1` (a copy of the sled
//! database, tree by tree: `T`, name, entry count (u64 BE), keys and values;
//! then `E` and sled's checksum (u32 BE)), still restore: the store reads
//! their trees as records after checking the checksum.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail, ensure};

use crate::store::{Record, RecordSink, Store, StoreError, TreeCopy};

const MAGIC: &[u8] = b"COMMANDPOST-BACKUP-2\n";
const MAGIC_V1: &[u8] = b"COMMANDPOST-BACKUP-1\n";
/// What every format's magic line starts with.
const MAGIC_FAMILY: &[u8] = b"COMMANDPOST-BACKUP-";

/// The record kinds: tag, numbers, byte strings, and a name for people.
const KINDS: [(u8, usize, usize, &str); 8] = [
    (b'c', 1, 0, "incident counter"),
    (b'i', 1, 1, "incidents"),
    (b's', 2, 1, "document snapshots"),
    (b'u', 2, 1, "log updates"),
    (b'e', 2, 1, "events"),
    (b'r', 0, 2, "revocations"),
    (b't', 0, 2, "token records"),
    (b'q', 0, 2, "quarantine records"),
];

/// How many records of each kind, in the order of [`KINDS`].
type Counts = [u64; KINDS.len()];

/// A record as the file holds it: its kind (an index into [`KINDS`]), its
/// numbers and its byte strings.
fn fields(record: &Record) -> (usize, Vec<u64>, Vec<&[u8]>) {
    match record {
        Record::IncidentCounter(last) => (0, vec![*last], vec![]),
        Record::Incident { incident, record } => (1, vec![*incident], vec![record]),
        Record::Snapshot {
            incident,
            upto,
            snapshot,
        } => (2, vec![*incident, *upto], vec![snapshot]),
        Record::Update {
            incident,
            seq,
            update,
        } => (3, vec![*incident, *seq], vec![update]),
        Record::Event {
            incident,
            seq,
            event,
        } => (4, vec![*incident, *seq], vec![event]),
        Record::Revocation { jti, record } => (5, vec![], vec![jti.as_bytes(), record]),
        Record::Token { jti, record } => (6, vec![], vec![jti.as_bytes(), record]),
        Record::Quarantined { id, record } => (7, vec![], vec![id, record]),
    }
}

/// The record of a kind with its fields, the inverse of [`fields`].
#[rustfmt::skip]
fn record(kind: usize, numbers: &[u64], bytes: Vec<Vec<u8>>) -> anyhow::Result<Record> {
    let [n, m] = [numbers.first(), numbers.get(1)].map(|n| n.copied().unwrap_or(0));
    let mut bytes = bytes.into_iter();
    let [a, b] = [bytes.next(), bytes.next()].map(Option::unwrap_or_default);
    let token_id = |id| String::from_utf8(id).context("a token id that is not UTF-8");
    // One line a kind, as in the module's table.
    Ok(match kind {
        0 => Record::IncidentCounter(n),
        1 => Record::Incident { incident: n, record: a },
        2 => Record::Snapshot { incident: n, upto: m, snapshot: a },
        3 => Record::Update { incident: n, seq: m, update: a },
        4 => Record::Event { incident: n, seq: m, event: a },
        5 => Record::Revocation { jti: token_id(a)?, record: b },
        6 => Record::Token { jti: token_id(a)?, record: b },
        _ => Record::Quarantined { id: a, record: b },
    })
}

/// Writes records into a backup file as the store hands them over.
struct Encoder {
    out: flate2::write::GzEncoder<Vec<u8>>,
    counts: Counts,
}

impl RecordSink for Encoder {
    fn record(&mut self, record: Record) -> Result<(), StoreError> {
        let (kind, numbers, bytes) = fields(&record);
        self.counts[kind] += 1;
        self.write(&[KINDS[kind].0], &numbers, &bytes)
    }
}

impl Encoder {
    fn write(&mut self, tag: &[u8], numbers: &[u64], bytes: &[&[u8]]) -> Result<(), StoreError> {
        let io = |error| StoreError::io("writing the backup", error);
        self.out.write_all(tag).map_err(io)?;
        for number in numbers {
            self.out.write_all(&number.to_be_bytes()).map_err(io)?;
        }
        for chunk in bytes {
            let len = u32::try_from(chunk.len()).map_err(|_| {
                io(std::io::Error::other(format!(
                    "a record of {} bytes does not fit the format",
                    chunk.len()
                )))
            })?;
            self.out.write_all(&len.to_be_bytes()).map_err(io)?;
            self.out.write_all(chunk).map_err(io)?;
        }
        Ok(())
    }
}

/// Takes a consistent backup of `store`: the backup file's bytes.
pub async fn export(store: &Store) -> Result<Vec<u8>, StoreError> {
    let mut encoder = Encoder {
        out: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()),
        counts: Counts::default(),
    };
    encoder.write(MAGIC, &[], &[])?;
    let mut encoder = store.export(encoder).await?;
    let counts = encoder.counts;
    encoder.write(b"E", &counts, &[])?;
    encoder
        .out
        .finish()
        .map_err(|error| StoreError::io("writing the backup", error))
}

fn read_exact<const N: usize>(input: &mut impl Read) -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    input.read_exact(&mut buf).map_err(damage)?;
    Ok(buf)
}

fn read_u64(input: &mut impl Read) -> anyhow::Result<u64> {
    Ok(u64::from_be_bytes(read_exact(input)?))
}

fn read_chunk(input: &mut impl Read) -> anyhow::Result<Vec<u8>> {
    let len = u32::from_be_bytes(read_exact::<4>(input)?) as usize;
    let mut buf = Vec::new();
    input
        .take(len as u64)
        .read_to_end(&mut buf)
        .map_err(damage)?;
    ensure!(buf.len() == len, "the backup file is truncated");
    Ok(buf)
}

/// A read error of the file: cut short, or damaged (gzip's CRC).
fn damage(error: std::io::Error) -> anyhow::Error {
    let what = match error.kind() {
        std::io::ErrorKind::UnexpectedEof => "the backup file is truncated",
        _ => "the backup file is damaged",
    };
    anyhow::Error::new(error).context(what)
}

/// Reads to the end of the gzip stream, which checks its CRC; nothing may
/// follow the end record.
fn read_to_end(input: &mut impl Read) -> anyhow::Result<()> {
    let mut rest = Vec::new();
    input.read_to_end(&mut rest).map_err(damage)?;
    ensure!(
        rest.is_empty(),
        "the backup file is damaged ({} bytes after its end record)",
        rest.len()
    );
    Ok(())
}

/// Every record of a backup file, once the whole file checked out.
pub fn read(backup: &[u8]) -> anyhow::Result<Vec<Record>> {
    let mut input = flate2::read::GzDecoder::new(backup);
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .context("not a Command Post backup (too short)")?;
    if magic == MAGIC_V1 {
        return read_v1(&mut input);
    }
    if magic != MAGIC {
        ensure!(
            magic.starts_with(MAGIC_FAMILY),
            "not a Command Post backup file"
        );
        bail!(
            "this backup is in a format this version of commandpost does not read ({}); restore it with the version that wrote it, or a newer one",
            String::from_utf8_lossy(magic.trim_ascii_end())
        );
    }
    let mut records = Vec::new();
    let mut counts = Counts::default();
    loop {
        let [tag] = read_exact(&mut input)?;
        if tag == b'E' {
            break;
        }
        let Some(kind) = KINDS.iter().position(|(known, ..)| *known == tag) else {
            bail!("the backup file is damaged (unexpected record {tag:?})");
        };
        let (_, numbers, strings, _) = KINDS[kind];
        let numbers = (0..numbers)
            .map(|_| read_u64(&mut input))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bytes = (0..strings)
            .map(|_| read_chunk(&mut input))
            .collect::<anyhow::Result<Vec<_>>>()?;
        records.push(record(kind, &numbers, bytes)?);
        counts[kind] += 1;
    }
    let mut expected = Counts::default();
    for count in &mut expected {
        *count = read_u64(&mut input)?;
    }
    read_to_end(&mut input)?;
    ensure!(
        counts == expected,
        "the backup file is incomplete: it holds {}, its end record counts {}",
        describe(&counts),
        describe(&expected)
    );
    Ok(records)
}

/// Reads a `COMMANDPOST-BACKUP-1` file after its magic line.
fn read_v1(input: &mut impl Read) -> anyhow::Result<Vec<Record>> {
    let mut trees: Vec<TreeCopy> = Vec::new();
    loop {
        match &read_exact::<1>(input)? {
            b"T" => {
                let name = read_chunk(input)?;
                let count = read_u64(input)?;
                let entries = (0..count)
                    .map(|_| Ok((read_chunk(input)?, read_chunk(input)?)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                trees.push((name, entries));
            }
            b"E" => {
                let checksum = u32::from_be_bytes(read_exact(input)?);
                read_to_end(input)?;
                return crate::store::records_of_copy(&trees, checksum)
                    .context("the backup file (format COMMANDPOST-BACKUP-1) is damaged");
            }
            other => bail!("the backup file is damaged (unexpected record {other:?})"),
        }
    }
}

fn describe(counts: &Counts) -> String {
    let total: u64 = counts.iter().sum();
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(counts)
        .skip(1)
        .map(|((.., name), count)| format!("{count} {name}"))
        .collect();
    format!("{total} records ({})", kinds.join(", "))
}

/// What a restore wrote.
#[derive(Debug)]
pub struct Restored {
    counts: Counts,
}

impl Restored {
    /// How many records were restored.
    pub fn records(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(&self.counts))
    }
}

/// Loads a backup into `store`, which must be empty. The whole file is
/// read and checked before anything is written.
pub fn restore_into(store: &Store, backup: &[u8]) -> anyhow::Result<Restored> {
    load(store, read(backup)?)
}

fn load(store: &Store, records: Vec<Record>) -> anyhow::Result<Restored> {
    ensure!(
        store.is_empty()?,
        "the target store already holds data: restore into a new, empty one"
    );
    let mut counts = Counts::default();
    for record in &records {
        counts[fields(record).0] += 1;
    }
    store.import(records)?;
    Ok(Restored { counts })
}

/// Restores a backup into a new store in `data_dir/db`, which must not
/// exist yet. A file that does not check out leaves nothing behind.
pub fn restore(backup: &[u8], data_dir: &Path) -> anyhow::Result<Restored> {
    let db_dir = data_dir.join("db");
    if db_dir.exists() {
        bail!(
            "{} already exists: restore into a new, empty --data directory",
            db_dir.display()
        );
    }
    let records = read(backup)?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let store =
        Store::open(&db_dir).with_context(|| format!("cannot create {}", db_dir.display()))?;
    let restored = load(&store, records);
    store.close();
    restored
}

/// What [`copy`] moved and checked.
#[derive(Debug)]
pub struct Copied {
    counts: Counts,
    /// Documents and event logs compared by checksum.
    compared: usize,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; {} documents and event logs compared by SHA-256, all equal",
            describe(&self.counts),
            self.compared
        )
    }
}

impl Copied {
    /// How many records were copied.
    pub fn records(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Copies every record of `from` into `to`, which must be empty, then reads
/// `to` back and checks that it holds the same: the count of every kind of
/// record, and a SHA-256 of every document (snapshot and log) and every
/// event log, of the incident records, revocations, tokens and quarantine
/// records (quarantine ids are the backend's own and not compared). `say`
/// is told each step. Nothing should write to `from` meanwhile (its writer
/// is held while it is read; stop the servers that use it first).
pub async fn copy(from: &Store, to: &Store, say: &dyn Fn(&str)) -> anyhow::Result<Copied> {
    ensure!(
        to.is_empty()?,
        "the target store already holds data: copy only into a new, empty one"
    );
    say("reading every record of the source");
    let records = from.export(Vec::new()).await?;
    let expected = Digest::of(&records);
    say(&format!(
        "read {}; writing them",
        describe(&expected.counts)
    ));
    let written = load(to, records)?;
    say("reading the copy back to compare");
    let copied = to.export(Vec::new()).await?;
    let found = Digest::of(&copied);
    ensure!(
        found.counts == expected.counts,
        "the copy holds {} but the source {}",
        describe(&found.counts),
        describe(&expected.counts)
    );
    if let Some(name) = expected
        .sums
        .iter()
        .find(|(name, sum)| found.sums.get(*name) != Some(*sum))
        .map(|(name, _)| name)
    {
        bail!("the copy's {name} differs from the source's");
    }
    Ok(Copied {
        counts: written.counts,
        compared: expected
            .sums
            .keys()
            .filter(|name| name.starts_with("INC-"))
            .count(),
    })
}

/// Counts and checksums of a store's records, independent of the order an
/// engine hands them out in.
struct Digest {
    counts: Counts,
    /// What each checksum covers (`INC-3 document`, `INC-3 events`,
    /// `incident records`, ...) and its SHA-256.
    sums: std::collections::BTreeMap<String, [u8; 32]>,
}

impl Digest {
    fn of(records: &[Record]) -> Self {
        use sha2::{Digest as _, Sha256};
        let mut counts = Counts::default();
        // (what, order within it, bytes): sorted, then hashed per `what`.
        let mut parts: Vec<(String, Vec<u8>, &[u8])> = Vec::with_capacity(records.len());
        for record in records {
            counts[fields(record).0] += 1;
            let id = |incident: &u64| commandpost_shared::IncidentId::new(*incident);
            let seq = |kind: u8, seq: &u64| [&[kind][..], &seq.to_be_bytes()].concat();
            let part = match record {
                Record::IncidentCounter(last) => (
                    "incident counter".to_owned(),
                    last.to_be_bytes().to_vec(),
                    &[][..],
                ),
                Record::Incident { incident, record } => (
                    "incident records".to_owned(),
                    incident.to_be_bytes().to_vec(),
                    &record[..],
                ),
                Record::Snapshot {
                    incident,
                    upto,
                    snapshot,
                } => (
                    format!("{} document", id(incident)),
                    seq(0, upto),
                    &snapshot[..],
                ),
                Record::Update {
                    incident,
                    seq: at,
                    update,
                } => (
                    format!("{} document", id(incident)),
                    seq(1, at),
                    &update[..],
                ),
                Record::Event {
                    incident,
                    seq: at,
                    event,
                } => (format!("{} events", id(incident)), seq(0, at), &event[..]),
                Record::Revocation { jti, record } => (
                    "revocations".to_owned(),
                    jti.as_bytes().to_vec(),
                    &record[..],
                ),
                Record::Token { jti, record } => (
                    "token records".to_owned(),
                    jti.as_bytes().to_vec(),
                    &record[..],
                ),
                Record::Quarantined { record, .. } => {
                    ("quarantine records".to_owned(), record.clone(), &record[..])
                }
            };
            parts.push(part);
        }
        parts.sort();
        let mut hashes: std::collections::BTreeMap<String, Sha256> =
            std::collections::BTreeMap::new();
        for (what, order, bytes) in &parts {
            let hash = hashes.entry(what.clone()).or_default();
            for piece in [&order[..], bytes] {
                hash.update((piece.len() as u64).to_be_bytes());
                hash.update(piece);
            }
        }
        let sums = hashes
            .into_iter()
            .map(|(what, hash)| (what, hash.finalize().into()))
            .collect();
        Self { counts, sums }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use commandpost_shared::IncidentId;

    use super::*;
    use crate::quarantine::QuarantineKind;
    use crate::store::{InitialContent, Revocation};

    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

    /// A store with two incidents, a compacted document with a log after
    /// its snapshot, events, a revocation, tokens and quarantined records.
    async fn populated(dir: &Path) -> Store {
        let store = Store::open(dir).unwrap();
        for title in ["first", "second"] {
            let actor = commandpost_shared::Actor {
                id: commandpost_shared::UserId("ada".into()),
                name: "Ada".into(),
            };
            store
                .create_incident(title.into(), actor, Utc::now(), |id| InitialContent {
                    doc: format!("{id} document").into_bytes(),
                    events: vec![format!("{{\"declared\":\"{id}\"}}").into_bytes()],
                })
                .await
                .unwrap();
        }
        let first = IncidentId::new(1);
        for seq in 1..=6u64 {
            store
                .append(&first, seq, vec![seq as u8; seq as usize])
                .unwrap()
                .await
                .unwrap()
                .unwrap();
        }
        store.compact(&first, 3, b"snapshot-3".to_vec()).unwrap();
        let events = vec![b"two".to_vec(), b"three".to_vec(), b"four".to_vec()];
        store
            .append_events(&first, 2, events)
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        let moved = store.quarantine_update(&first, 6, &[6; 6], "damaged".into());
        assert!(moved.unwrap().await.unwrap().unwrap());
        let moved = store.quarantine_event(&first, 4, b"four", "not an event".into());
        assert!(moved.unwrap().await.unwrap().unwrap());
        store
            .revoke(&Revocation {
                jti: "revoked-1".into(),
                revoked_at: Utc::now(),
                revoked_by: "admin".into(),
            })
            .await
            .unwrap();
        for jti in ["token-1", "token-2"] {
            let token = serde_json::from_value(serde_json::json!({
                "jti": jti, "sub": "ada", "name": "Ada", "role": "admin",
                "issued_at": Utc::now(), "expires_at": Utc::now(),
                "origin": "start_up", "recorded_at": Utc::now(),
            }))
            .unwrap();
            store.record_token(&token).unwrap().await.unwrap().unwrap();
        }
        store
    }

    /// Everything a store reads back, as text.
    fn contents(store: &Store) -> String {
        let mut text = String::new();
        for incident in store.list_incidents().unwrap() {
            let id = &incident.id;
            let doc = store.load_doc(id).unwrap();
            let events = store.events_after(id, 0, usize::MAX).unwrap();
            text += &format!("{incident:?}\n{doc:?}\n{events:?}\n");
        }
        let mut tokens = store.issued_tokens().unwrap();
        tokens.sort_by(|a, b| a.jti.cmp(&b.jti));
        text += &format!(
            "{:?}\n{tokens:?}\n{:?}\n",
            store.revocations().unwrap(),
            store.quarantined().unwrap()
        );
        text
    }

    #[tokio::test]
    async fn a_backup_restores_every_record_into_a_fresh_store_and_damage_is_detected() {
        let source = tempfile::tempdir().unwrap();
        let store = populated(source.path()).await;
        let backup = export(&store).await.unwrap();

        let target = tempfile::tempdir().unwrap();
        let restored = restore(&backup, target.path()).unwrap();
        // A counter, 2 incidents, 2 snapshots, 2 log updates (4 and 5), 4
        // events (two declarations, 2 and 3), 1 revocation, 2 tokens and 2
        // quarantine records.
        assert_eq!(restored.records(), 16, "{restored}");
        let copy = Store::open_when_unlocked(&target.path().join("db"), PATIENCE).unwrap();
        let expected = contents(&store);
        assert!(expected.contains("snapshot_upto: 3"), "{expected}");
        assert!(expected.contains("next_seq: 7"), "{expected}");
        assert_eq!(contents(&copy), expected);
        // The numbering goes on where it was.
        let declarer = store.list_incidents().unwrap()[0].created_by.clone();
        let next = copy
            .create_incident("third".into(), declarer, Utc::now(), |_| InitialContent {
                doc: vec![],
                events: vec![],
            })
            .await
            .unwrap();
        assert_eq!(next.id, IncidentId::new(3));
        copy.close();

        // Restoring over an existing database is refused.
        let again = restore(&backup, target.path()).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");

        // Damage is detected before anything is written.
        let damaged = |bytes: &[u8], says: &str| {
            let elsewhere = tempfile::tempdir().unwrap();
            let error = restore(bytes, elsewhere.path()).unwrap_err();
            assert!(format!("{error:#}").contains(says), "{error:#}");
            assert!(!elsewhere.path().join("db").exists());
        };
        damaged(&backup[..backup.len() / 2], "truncated");
        let mut flipped = backup.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        damaged(&flipped, "backup file");
        // A file whose end record counts more records than came (one that
        // lost some, with gzip's check intact) is incomplete.
        let mut plain = gunzip(&backup);
        *plain.last_mut().unwrap() += 1;
        damaged(&gzip(&plain), "incomplete");
        damaged(b"hello", "backup");
        damaged(&gzip(b"COMMANDPOST-BACKUP-3\n"), "does not read");
    }

    #[test]
    fn a_backup_of_the_earlier_format_still_restores() {
        // Written by the sled tree copy of `COMMANDPOST-BACKUP-1` from the
        // store that `populated` builds (with fixed times).
        let backup = include_bytes!("store/testdata/backup-v1.gz");
        let target = tempfile::tempdir().unwrap();
        let restored = restore(backup, target.path()).unwrap();
        assert_eq!(restored.records(), 16, "{restored}");
        let store = Store::open_when_unlocked(&target.path().join("db"), PATIENCE).unwrap();
        assert_eq!(store.list_incidents().unwrap().len(), 2);
        for (number, title) in [(1, "first"), (2, "second")] {
            let record = store.get_incident(&IncidentId::new(number)).unwrap();
            assert_eq!(record.unwrap().title, title);
        }
        let first = IncidentId::new(1);
        let doc = store.load_doc(&first).unwrap();
        assert_eq!(doc.snapshot.as_deref(), Some(&b"snapshot-3"[..]));
        assert_eq!(doc.snapshot_upto, 3);
        assert_eq!(doc.updates, [(4, vec![4; 4]), (5, vec![5; 5])]);
        assert_eq!(doc.next_seq, 7, "the quarantined update's seq stays used");
        let events = store.events_after(&first, 0, usize::MAX).unwrap();
        assert_eq!(
            events,
            [
                (1, br#"{"declared":"INC-1"}"#.to_vec()),
                (2, b"two".to_vec()),
                (3, b"three".to_vec())
            ]
        );
        let quarantined: Vec<_> = store
            .quarantined()
            .unwrap()
            .into_iter()
            .map(|(_, record)| (record.kind, record.seq, record.bytes.unwrap_or_default()))
            .collect();
        assert_eq!(
            quarantined,
            [
                (QuarantineKind::Update, Some(6), "060606060606".to_owned()),
                (QuarantineKind::Event, Some(4), "666f7572".to_owned())
            ]
        );
        assert_eq!(store.revocations().unwrap()[0].jti, "revoked-1");
        assert_eq!(store.issued_tokens().unwrap().len(), 2);
        store.close();

        // A changed value fails sled's checksum, which the file carries.
        let plain = gunzip(backup);
        let at = plain
            .windows(10)
            .position(|window| window == b"snapshot-3")
            .unwrap();
        let mut changed = plain.clone();
        changed[at + 9] = b'4';
        let elsewhere = tempfile::tempdir().unwrap();
        let error = restore(&gzip(&changed), elsewhere.path()).unwrap_err();
        assert!(format!("{error:#}").contains("checksum"), "{error:#}");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        out.write_all(bytes).unwrap();
        out.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// What a store reads back, with quarantine records without their ids
    /// (each backend assigns its own).
    fn portable_contents(store: &Store) -> String {
        let quarantined: Vec<_> = store
            .quarantined()
            .unwrap()
            .into_iter()
            .map(|(_, record)| format!("{record:?}"))
            .collect();
        let all = contents(store);
        let without_quarantine = all.rsplit_once('\n').map_or(all.as_str(), |(rest, _)| rest);
        let without_quarantine = without_quarantine
            .rsplit_once('\n')
            .map_or(without_quarantine, |(rest, _)| rest);
        format!("{without_quarantine}\n{quarantined:?}")
    }

    /// A store on a fresh database of the test PostgreSQL.
    fn postgres_store() -> Store {
        let url = crate::store::test_postgres::fresh_database();
        let backend =
            crate::store::PostgresBackend::open(&url, crate::store::PoolOptions::default())
                .unwrap();
        Store::with_backend(std::sync::Arc::new(backend)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_to_postgres_and_back_holds_every_record_and_refuses_a_used_target() {
        let source = tempfile::tempdir().unwrap();
        let sled = populated(source.path()).await;
        // Long logs: a few hundred updates and events in another incident.
        let third = sled
            .create_incident(
                "third".into(),
                commandpost_shared::Actor {
                    id: commandpost_shared::UserId("bo".into()),
                    name: "Bo".into(),
                },
                Utc::now(),
                |id| InitialContent {
                    doc: format!("{id} document").into_bytes(),
                    events: vec![b"declared".to_vec()],
                },
            )
            .await
            .unwrap()
            .id;
        for seq in 1..=400u64 {
            let saved = sled
                .append(&third, seq, seq.to_be_bytes().repeat(3))
                .unwrap();
            if seq % 100 == 0 {
                saved.await.unwrap().unwrap();
            }
        }
        let events: Vec<Vec<u8>> = (2..=301u64)
            .map(|seq| format!("event {seq}").into_bytes())
            .collect();
        sled.append_events(&third, 2, events)
            .unwrap()
            .await
            .unwrap()
            .unwrap();

        let steps = std::sync::Mutex::new(Vec::new());
        let say = |step: &str| steps.lock().unwrap().push(step.to_owned());
        let postgres = postgres_store();
        let copied = copy(&sled, &postgres, &say).await.unwrap();
        // 16 records of the two first incidents, then the third's record,
        // snapshot, 400 updates and 301 events, and the counter is one
        // record whichever value it has.
        assert_eq!(copied.records(), 16 + 1 + 1 + 400 + 301, "{copied}");
        assert!(
            copied.to_string().contains("3 documents and event logs")
                || copied
                    .to_string()
                    .contains("documents and event logs compared"),
            "{copied}"
        );
        assert!(steps.lock().unwrap().len() >= 3, "each step is said");
        let same = |a: &Store, b: &Store| portable_contents(a) == portable_contents(b);
        assert!(same(&postgres, &sled), "the copy reads back differently");

        // Into a store that holds anything: refused, nothing written.
        let again = copy(&sled, &postgres, &say).await.unwrap_err();
        assert!(again.to_string().contains("already holds data"), "{again}");
        assert!(same(&postgres, &sled), "a refused copy changed the target");

        // And back into a new sled store: the same records again.
        let back_dir = tempfile::tempdir().unwrap();
        let back = Store::open(back_dir.path()).unwrap();
        copy(&postgres, &back, &say).await.unwrap();
        assert!(same(&back, &sled), "the copy back reads differently");
        // A real difference is seen: one byte of one update.
        let other_dir = tempfile::tempdir().unwrap();
        let other = Store::open(other_dir.path()).unwrap();
        copy(&sled, &other, &say).await.unwrap();
        other
            .append(&third, 401, vec![1])
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        assert!(!same(&other, &sled));
    }

    #[test]
    fn the_digest_sees_a_changed_byte_and_ignores_order() {
        let records = vec![
            Record::Update {
                incident: 1,
                seq: 1,
                update: b"a".to_vec(),
            },
            Record::Update {
                incident: 1,
                seq: 2,
                update: b"b".to_vec(),
            },
            Record::Event {
                incident: 1,
                seq: 1,
                event: b"e".to_vec(),
            },
        ];
        let mut reversed = records.clone();
        reversed.reverse();
        assert_eq!(Digest::of(&records).sums, Digest::of(&reversed).sums);
        let mut changed = records.clone();
        changed[1] = Record::Update {
            incident: 1,
            seq: 2,
            update: b"c".to_vec(),
        };
        let (before, after) = (Digest::of(&records), Digest::of(&changed));
        assert_ne!(before.sums["INC-1 document"], after.sums["INC-1 document"]);
        assert_eq!(before.sums["INC-1 events"], after.sums["INC-1 events"]);
        // Moving an update to another seq is a change too.
        let mut moved = records.clone();
        moved[1] = Record::Update {
            incident: 1,
            seq: 3,
            update: b"b".to_vec(),
        };
        assert_ne!(
            before.sums["INC-1 document"],
            Digest::of(&moved).sums["INC-1 document"]
        );
    }
}
