//! Wire formats the load generator speaks: lib0 varints, y-websocket
//! messages, the Hocuspocus variant (every message prefixed with the
//! document name), and a reader that pulls the ids (client, clock range) of
//! the blocks out of a v1 update without applying it.

use anyhow::{Context, Result, bail};

pub(crate) const MSG_SYNC: u64 = 0;
pub(crate) const MSG_AUTH: u64 = 2;
pub(crate) const SYNC_STEP_1: u64 = 0;
pub(crate) const SYNC_STEP_2: u64 = 1;
pub(crate) const SYNC_UPDATE: u64 = 2;
/// Command Post's "saved up to n" acknowledgement and its opt-in.
pub(crate) const MSG_SAVED: u64 = commandpost_shared::wire::MSG_SAVED as u64;
/// Hocuspocus: auth sub-types.
const HOCUS_AUTH_TOKEN: u64 = 0;
const HOCUS_AUTH_DENIED: u64 = 1;
const HOCUS_AUTH_OK: u64 = 2;

pub(crate) fn put_var(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_var(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over a received message.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn var(&mut self) -> Result<u64> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = *self.buf.get(self.pos).context("truncated varint")?;
            self.pos += 1;
            if shift >= 64 {
                bail!("overlong varint");
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    fn signed_var(&mut self) -> Result<()> {
        // lib0 signed varints: same continuation scheme; the value is unused.
        self.var().map(|_| ())
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.var()? as usize;
        let end = self.pos.checked_add(len).context("length overflow")?;
        let slice = self
            .buf
            .get(self.pos..end)
            .context("length beyond message")?;
        self.pos = end;
        Ok(slice)
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        if self.pos + n > self.buf.len() {
            bail!("truncated");
        }
        self.pos += n;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8> {
        let byte = *self.buf.get(self.pos).context("truncated")?;
        self.pos += 1;
        Ok(byte)
    }

    /// Skips one lib0 `Any` value.
    fn any(&mut self) -> Result<()> {
        match self.byte()? {
            // undefined, null, true, false
            127 | 126 | 121 | 120 => Ok(()),
            125 => self.signed_var(),
            124 => self.skip(4),
            123 => self.skip(8),
            122 => self.skip(8),
            119 => self.bytes().map(|_| ()),
            116 => self.bytes().map(|_| ()),
            118 => {
                let n = self.var()?;
                for _ in 0..n {
                    self.bytes()?;
                    self.any()?;
                }
                Ok(())
            }
            117 => {
                let n = self.var()?;
                for _ in 0..n {
                    self.any()?;
                }
                Ok(())
            }
            other => bail!("unknown Any tag {other}"),
        }
    }
}

/// How a server frames y-websocket messages.
#[derive(Clone, Debug)]
pub(crate) enum Flavor {
    /// One message per WebSocket frame, document chosen by the URL.
    YWebsocket,
    /// Hocuspocus: each message starts with varString(document name).
    Hocuspocus { doc: String },
}

impl Flavor {
    fn start(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        if let Flavor::Hocuspocus { doc } = self {
            put_bytes(&mut out, doc.as_bytes());
        }
        out
    }

    pub(crate) fn sync(&self, kind: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = self.start();
        put_var(&mut out, MSG_SYNC);
        put_var(&mut out, kind);
        put_bytes(&mut out, payload);
        out
    }

    /// Command Post's opt-in to saved acknowledgements.
    pub(crate) fn saved_opt_in(&self) -> Vec<u8> {
        let mut out = self.start();
        put_var(&mut out, MSG_SAVED);
        put_bytes(&mut out, &[]);
        out
    }

    /// The Hocuspocus auth message (a token is required even when the
    /// server checks none); `None` for plain y-websocket.
    pub(crate) fn auth(&self, token: &str) -> Option<Vec<u8>> {
        match self {
            Flavor::YWebsocket => None,
            Flavor::Hocuspocus { .. } => {
                let mut out = self.start();
                put_var(&mut out, MSG_AUTH);
                put_var(&mut out, HOCUS_AUTH_TOKEN);
                put_bytes(&mut out, token.as_bytes());
                Some(out)
            }
        }
    }

    /// A message to send now and then so the server does not drop an idle
    /// client: Hocuspocus closes connections that send nothing for 60 s (its
    /// own provider sends awareness renewals); an empty stateless message
    /// (type 5) keeps it open. Plain y-websocket needs none.
    pub(crate) fn keepalive(&self) -> Option<Vec<u8>> {
        match self {
            Flavor::YWebsocket => None,
            Flavor::Hocuspocus { .. } => {
                let mut out = self.start();
                put_var(&mut out, 5);
                put_bytes(&mut out, b"");
                Some(out)
            }
        }
    }

    /// Decodes one received frame into the parts the load generator uses.
    pub(crate) fn decode<'a>(&self, frame: &'a [u8]) -> Result<Incoming<'a>> {
        let mut reader = Reader::new(frame);
        if let Flavor::Hocuspocus { .. } = self {
            reader.bytes()?;
        }
        let kind = reader.var()?;
        Ok(match kind {
            MSG_SYNC => match reader.var()? {
                SYNC_STEP_1 => Incoming::Step1,
                SYNC_STEP_2 => Incoming::Step2(reader.bytes()?),
                SYNC_UPDATE => Incoming::Update(reader.bytes()?),
                other => bail!("unknown sync message {other}"),
            },
            MSG_AUTH => match self {
                Flavor::Hocuspocus { .. } => match reader.var()? {
                    HOCUS_AUTH_OK => Incoming::AuthOk,
                    HOCUS_AUTH_DENIED => Incoming::AuthDenied,
                    _ => Incoming::Other,
                },
                Flavor::YWebsocket => Incoming::AuthDenied,
            },
            MSG_SAVED => {
                let payload = reader.bytes()?;
                Incoming::Saved(Reader::new(payload).var()?)
            }
            _ => Incoming::Other,
        })
    }
}

pub(crate) enum Incoming<'a> {
    Step1,
    Step2(&'a [u8]),
    Update(&'a [u8]),
    AuthOk,
    AuthDenied,
    Saved(u64),
    Other,
}

/// One client's contiguous run of blocks in an update: clocks `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdRange {
    pub client: u64,
    pub start: u64,
    pub end: u64,
}

/// Reads the block ids of a v1 update (the delete set is not needed).
///
/// Walks every block to learn its length, so merged updates, GC and skip
/// blocks are all accounted for. Strings count UTF-16 code units, as Yjs
/// clocks do.
pub(crate) fn update_ids(update: &[u8]) -> Result<Vec<IdRange>> {
    let mut r = Reader::new(update);
    let clients = r.var()?;
    let mut ranges = Vec::with_capacity(clients as usize);
    for _ in 0..clients {
        let blocks = r.var()?;
        let client = r.var()?;
        let start = r.var()?;
        let mut clock = start;
        let mut run_start = start;
        for _ in 0..blocks {
            let info = r.byte()?;
            let len = match info & 0x1f {
                0 => r.var()?,
                10 => {
                    // A skip is a gap: close the run before it.
                    let len = r.var()?;
                    if clock > run_start {
                        ranges.push(IdRange {
                            client,
                            start: run_start,
                            end: clock,
                        });
                    }
                    clock += len;
                    run_start = clock;
                    continue;
                }
                content => {
                    if info & 0x80 != 0 {
                        r.var()?;
                        r.var()?;
                    }
                    if info & 0x40 != 0 {
                        r.var()?;
                        r.var()?;
                    }
                    if info & 0xc0 == 0 {
                        if r.var()? == 1 {
                            r.bytes()?;
                        } else {
                            r.var()?;
                            r.var()?;
                        }
                        if info & 0x20 != 0 {
                            r.bytes()?;
                        }
                    }
                    content_len(&mut r, content)?
                }
            };
            clock += len;
        }
        if clock > run_start {
            ranges.push(IdRange {
                client,
                start: run_start,
                end: clock,
            });
        }
    }
    Ok(ranges)
}

fn content_len(r: &mut Reader<'_>, content: u8) -> Result<u64> {
    Ok(match content {
        1 => r.var()?,
        2 => {
            let n = r.var()?;
            for _ in 0..n {
                r.bytes()?;
            }
            n
        }
        3 => {
            r.bytes()?;
            1
        }
        4 => {
            let text = std::str::from_utf8(r.bytes()?).context("string content is not UTF-8")?;
            text.encode_utf16().count() as u64
        }
        5 => {
            r.bytes()?;
            1
        }
        6 => {
            r.bytes()?;
            r.bytes()?;
            1
        }
        7 => {
            let type_ref = r.var()?;
            // XmlElement and XmlHook carry a name.
            if type_ref == 3 || type_ref == 5 {
                r.bytes()?;
            }
            1
        }
        8 => {
            let n = r.var()?;
            for _ in 0..n {
                r.any()?;
            }
            n
        }
        9 => {
            r.bytes()?;
            r.any()?;
            1
        }
        other => bail!("unknown content type {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

    #[test]
    fn ids_of_typing_and_of_a_merged_update() {
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("t");
        let mut updates = Vec::new();
        for (i, piece) in ["a", "bé", "😀", "xyz"].iter().enumerate() {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, piece);
            if i == 2 {
                text.remove_range(&mut txn, 0, 1);
            }
            updates.push(txn.encode_update_v1());
        }
        let ids: Vec<_> = updates.iter().map(|u| update_ids(u).unwrap()).collect();
        assert_eq!(
            ids[0],
            vec![IdRange {
                client: 7,
                start: 0,
                end: 1
            }]
        );
        assert_eq!(
            ids[1],
            vec![IdRange {
                client: 7,
                start: 1,
                end: 3
            }]
        );
        // The emoji is two UTF-16 code units.
        assert_eq!(
            ids[2],
            vec![IdRange {
                client: 7,
                start: 3,
                end: 5
            }]
        );
        assert_eq!(
            ids[3],
            vec![IdRange {
                client: 7,
                start: 5,
                end: 8
            }]
        );
        let merged = yrs::merge_updates_v1(&updates).unwrap();
        assert_eq!(
            update_ids(&merged).unwrap(),
            vec![IdRange {
                client: 7,
                start: 0,
                end: 8
            }]
        );
        // A whole-document encoding, with its deleted content, agrees.
        let full = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(
            update_ids(&full).unwrap(),
            vec![IdRange {
                client: 7,
                start: 0,
                end: 8
            }]
        );
        // Gaps show up as separate runs.
        let gap = yrs::merge_updates_v1(&[updates[0].clone(), updates[2].clone()]).unwrap();
        assert_eq!(
            update_ids(&gap).unwrap(),
            vec![
                IdRange {
                    client: 7,
                    start: 0,
                    end: 1
                },
                IdRange {
                    client: 7,
                    start: 3,
                    end: 5
                }
            ]
        );
        let check = Doc::new();
        check
            .transact_mut()
            .apply_update(Update::decode_v1(&full).unwrap())
            .unwrap();
        let t = check.get_or_insert_text("t");
        assert_eq!(t.get_string(&check.transact()), "bé😀xyz");
    }

    #[test]
    fn hocuspocus_messages_carry_the_document_name() {
        let flavor = Flavor::Hocuspocus { doc: "d1".into() };
        let msg = flavor.sync(SYNC_UPDATE, &[1, 2]);
        assert_eq!(msg, vec![2, b'd', b'1', 0, 2, 2, 1, 2]);
        match flavor.decode(&msg).unwrap() {
            Incoming::Update(bytes) => assert_eq!(bytes, &[1, 2]),
            _ => panic!("not an update"),
        }
        assert_eq!(
            flavor.auth("t").unwrap(),
            vec![2, b'd', b'1', 2, 0, 1, b't']
        );
    }
}
