//! Consistent online backups of the data directory's database.
//!
//! `GET /api/admin/backup` (admin) holds the store's writer (everything
//! acknowledged before is durable, later writes wait), copies every sled tree
//! into one gzip file, and releases it; `commandpost backup` downloads that
//! file from a running server, and `commandpost restore` writes it into a new
//! data directory. The file carries sled's checksum of the copied trees;
//! restoring verifies it.
//!
//! Format (inside gzip): the magic line, then per tree `T`, name
//! (u32 BE length + bytes), entry count (u64 BE), each entry as key and value
//! (u32 BE length + bytes); then `E` and the checksum (u32 BE).

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail, ensure};

use crate::store::StoreError;

const MAGIC: &[u8] = b"COMMANDPOST-BACKUP-1\n";

/// Copies every tree of `db` into a backup file's bytes.
pub fn export(db: &sled::Db) -> Result<Vec<u8>, StoreError> {
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let io = |error: std::io::Error| StoreError::Corrupt(format!("writing the backup: {error}"));
    out.write_all(MAGIC).map_err(io)?;
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        out.write_all(b"T").map_err(io)?;
        write_chunk(&mut out, &name).map_err(io)?;
        out.write_all(&(tree.len() as u64).to_be_bytes())
            .map_err(io)?;
        let mut written = 0u64;
        for entry in tree.iter() {
            let (key, value) = entry?;
            write_chunk(&mut out, &key).map_err(io)?;
            write_chunk(&mut out, &value).map_err(io)?;
            written += 1;
        }
        if written != tree.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "tree {} changed during the backup",
                String::from_utf8_lossy(&name)
            )));
        }
    }
    out.write_all(b"E").map_err(io)?;
    out.write_all(&db.checksum()?.to_be_bytes()).map_err(io)?;
    out.finish().map_err(io)
}

fn write_chunk(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&(bytes.len() as u32).to_be_bytes())?;
    out.write_all(bytes)
}

fn read_exact<const N: usize>(input: &mut impl Read) -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    input
        .read_exact(&mut buf)
        .context("the backup file is truncated")?;
    Ok(buf)
}

fn read_chunk(input: &mut impl Read) -> anyhow::Result<Vec<u8>> {
    let len = u32::from_be_bytes(read_exact::<4>(input)?) as usize;
    let mut buf = Vec::new();
    input
        .take(len as u64)
        .read_to_end(&mut buf)
        .context("the backup file is truncated")?;
    ensure!(buf.len() == len, "the backup file is truncated");
    Ok(buf)
}

/// What a restore wrote.
#[derive(Debug)]
pub struct Restored {
    pub trees: usize,
    pub entries: u64,
}

/// Writes a backup into `data_dir/db`, which must not exist yet.
pub fn restore(backup: &[u8], data_dir: &Path) -> anyhow::Result<Restored> {
    let db_dir = data_dir.join("db");
    if db_dir.exists() {
        bail!(
            "{} already exists: restore into a new, empty --data directory",
            db_dir.display()
        );
    }
    let mut input = flate2::read::GzDecoder::new(backup);
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .context("not a Command Post backup (too short)")?;
    ensure!(magic == MAGIC, "not a Command Post backup file");
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let db = sled::open(&db_dir).with_context(|| format!("cannot create {}", db_dir.display()))?;
    let mut restored = Restored {
        trees: 0,
        entries: 0,
    };
    loop {
        match &read_exact::<1>(&mut input)? {
            b"T" => {
                let name = read_chunk(&mut input)?;
                let count = u64::from_be_bytes(read_exact::<8>(&mut input)?);
                let tree = db.open_tree(&name)?;
                for _ in 0..count {
                    let key = read_chunk(&mut input)?;
                    let value = read_chunk(&mut input)?;
                    tree.insert(key, value)?;
                }
                restored.trees += 1;
                restored.entries += count;
            }
            b"E" => {
                let expected = u32::from_be_bytes(read_exact::<4>(&mut input)?);
                db.flush()?;
                let actual = db.checksum()?;
                ensure!(
                    actual == expected,
                    "the restored database's checksum {actual:08x} differs from the backup's {expected:08x}; the file is damaged"
                );
                return Ok(restored);
            }
            other => bail!("the backup file is damaged (unexpected record {other:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_when_unlocked(path: &std::path::Path) -> sled::Db {
        let started = std::time::Instant::now();
        loop {
            match sled::open(path) {
                Err(error)
                    if crate::store::is_locked(&error)
                        && started.elapsed() < std::time::Duration::from_secs(60) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other.unwrap(),
            }
        }
    }

    #[test]
    fn a_backup_restores_every_tree_and_entry_and_damage_is_detected() {
        let source = tempfile::tempdir().unwrap();
        let db = sled::open(source.path().join("db")).unwrap();
        let docs = db.open_tree("docs").unwrap();
        for i in 0u32..500 {
            docs.insert(i.to_be_bytes(), vec![i as u8; (i % 37) as usize])
                .unwrap();
        }
        db.open_tree("events")
            .unwrap()
            .insert(b"e1", b"{}")
            .unwrap();
        let backup = export(&db).unwrap();

        let target = tempfile::tempdir().unwrap();
        let restored = restore(&backup, target.path()).unwrap();
        assert_eq!(restored.entries, 501);
        // sled unlocks a database a moment after its last handle is gone
        // (its I/O jobs end on their own thread): wait for that, not a time.
        let copy = open_when_unlocked(&target.path().join("db"));
        assert_eq!(copy.checksum().unwrap(), db.checksum().unwrap());
        assert_eq!(
            copy.open_tree("docs")
                .unwrap()
                .get(7u32.to_be_bytes())
                .unwrap()
                .unwrap(),
            vec![7u8; 7]
        );
        drop(copy);

        // Restoring over an existing database is refused.
        let again = restore(&backup, target.path()).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");

        // A truncated file is refused with a clear error.
        let elsewhere = tempfile::tempdir().unwrap();
        let error = restore(&backup[..backup.len() / 2], elsewhere.path()).unwrap_err();
        assert!(format!("{error:#}").contains("truncated"), "{error:#}");
        let error = restore(b"hello", tempfile::tempdir().unwrap().path()).unwrap_err();
        assert!(
            format!("{error:#}").to_lowercase().contains("backup"),
            "{error:#}"
        );
    }
}
