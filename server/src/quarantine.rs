//! The quarantine: stored records that no longer load, moved aside.
//!
//! A document update, a document snapshot or a sidecar event that fails to
//! decode when an incident loads is not fatal. The loader skips it and asks
//! the store to move it into the quarantine (see `store.rs`): the storage
//! backend inserts a [`QuarantineRecord`] (which keeps the original bytes,
//! so nothing is ever lost) and removes the original in one transaction,
//! and the writer logs one error line naming the incident, the sequence
//! number and the reason. The rest of the incident keeps loading; the next
//! load does not see the entry again, and its sequence number is never used
//! again.
//!
//! Admins read the quarantine with `GET /api/admin/quarantine` (the raw bytes
//! only with `?bytes=true`).

pub use commandpost_shared::{QuarantineEntry, QuarantineKind, QuarantineRecord};

/// What the server knows about a kind of quarantined record.
pub(crate) trait KindOfRecord {
    /// The byte that stands for the kind in the sled backend's quarantine
    /// keys.
    fn tag(self) -> u8;
    /// What losing a record of this kind means, for the log line.
    fn consequence(self) -> &'static str;
}

impl KindOfRecord for QuarantineKind {
    fn tag(self) -> u8 {
        match self {
            QuarantineKind::Update => b'u',
            QuarantineKind::Snapshot => b's',
            QuarantineKind::Event => b'e',
        }
    }

    fn consequence(self) -> &'static str {
        match self {
            QuarantineKind::Update => {
                "moved a stored document update that does not load to the quarantine; the rest of the document loads without it"
            }
            QuarantineKind::Snapshot => {
                "moved a stored document snapshot that does not load to the quarantine; the document loads from the log after it and is missing the snapshot's content (the quarantine keeps its bytes)"
            }
            QuarantineKind::Event => {
                "moved a stored event that does not load to the quarantine; the incident's other events still load"
            }
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    text
}

/// The bytes of lower- or upper-case hex; `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(unhex("00AB7f").unwrap(), [0x00, 0xab, 0x7f]);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
