//! Structural pre-check of Yjs v1 (lib0) updates before they reach yrs.
//!
//! The server decodes client updates with `yrs::Update::decode_v1` (yrs
//! 0.26.0). That decoder trusts its input in ways `catch_unwind` cannot
//! contain:
//!
//! 1. strings are read with `std::str::from_utf8_unchecked`: invalid UTF-8 is
//!    undefined behaviour in release builds (and aborts debug builds);
//! 2. counts are trusted for pre-allocation (`SmallVec::with_capacity` for
//!    delete-set ranges, `HashMap::with_capacity` / `Vec::with_capacity` for
//!    `Any` maps and arrays, `try_reserve` for clients, blocks and JSON
//!    strings), so a five-byte count can ask for many gigabytes and abort the
//!    process;
//! 3. `Any` values are decoded recursively, so deep nesting overflows the
//!    stack (which aborts);
//! 4. arithmetic on decoded values is unchecked: `clock += block.len()` and
//!    delete-set `clock + len` overflow `u32` (panic in debug, silent wrap in
//!    release), 11-byte signed varints shift an `i64` by 69 bits and negate
//!    `i64::MIN` (panic in debug, garbage in release), client IDs above 53 bits
//!    trip a `debug_assert!` in `ClientID::new` (and alias other clients in
//!    release), and `u32` varints wrap silently.
//!
//! [`check_update_v1`] therefore walks the whole update once, reading exactly
//! what yrs 0.26's `Update::decode_v1` would read (see the notes below where
//! that differs from Yjs), and refuses it unless
//!
//! * every variable-length integer is one yrs reads without wrapping, overflow
//!   or panicking, and fits the type yrs stores it in (`u32` for clocks and
//!   lengths, 53 bits for client IDs, `i64` for `Any` integers, `i32` for
//!   move flags);
//! * every claimed count fits in the bytes that are left, at the smallest
//!   encoded size of one element (so yrs never pre-allocates for elements that
//!   are not really there);
//! * every length-prefixed string or buffer fits in the bytes that are left
//!   and every string is valid UTF-8;
//! * `Any` values (including sub-document options) nest at most
//!   [`MAX_NESTING_DEPTH`] containers deep;
//! * block clocks and delete-set ranges stay within `u32`;
//! * content types, shared-type refs and `Any` tags are ones yrs knows;
//! * nothing in it is read differently by yrs and by stock Yjs clients, and
//!   nothing in it would fail to survive a store and reload (see
//!   [`Refusal`]: legacy JSON content, sub-documents, moves, info bit `0x10`,
//!   zero-length GC/Skip blocks, `XmlHook`, yrs-only type refs, and
//!   references to later items of the item's own client);
//! * nothing follows the delete set (yrs itself ignores trailing bytes, but
//!   no encoder produces them).
//!
//! It does not check semantics (that origins or parents exist, that clocks
//! are contiguous, that JSON strings parse). The checker itself allocates
//! nothing and uses a fixed-size stack for `Any` nesting.
//!
//! # Where yrs 0.26 reads differently from Yjs
//!
//! Where the two differ the checker refuses the update (a [`Refusal`]), so
//! that every client in a room reads the same document. Updates read back
//! from storage are checked with [`check_stored_update_v1`], which accepts
//! what was stored before these refusals (only what endangers yrs stays
//! refused):
//!
//! * the info byte is `0` for GC and `10` for Skip only as a *whole byte*;
//!   any other info byte is an item whose content type is `info & 0x0F` (Yjs
//!   uses the low five bits and recognises GC/Skip whatever the flag bits).
//!   yrs ignores bit `0x10`: refused;
//! * `ContentJSON` (type 2) reads `len + 1` strings, not `len` (a yrs bug),
//!   yet yrs writes `len`: refused (current Yjs writes `ContentAny`);
//! * the shared-type ref is one raw byte (Yjs: a varuint); `XmlHook` (5) reads
//!   *no* hook name (Yjs reads one): refused; only `XmlElement` (3) reads a
//!   name; `Doc` (9) and `Undefined` (15) exist only in yrs: refused; `Weak`
//!   (7) only with yrs's `weak` feature, which is off here;
//! * `ContentMove` (type 11) exists only in yrs: refused;
//! * `ContentDoc` (type 9), a sub-document: refused (not served; see
//!   [`Refusal::SubdocumentContent`]);
//! * `Any` array/map lengths are read as `u64`, strings and buffers as `u32`;
//! * a parent-info varuint other than `1` means "parent is an ID" (read as
//!   `u32`, so `2^32 + 1` would wrap to `1`: rejected here);
//! * blocks whose content length is zero (empty string, zero-length deleted
//!   run, empty `Any` list) are silently dropped.

/// Deepest nesting of `Any` arrays/maps accepted (a top-level array or map is
/// depth 1). yrs decodes `Any` recursively; 64 frames are far from any stack
/// limit while being deeper than any real document value.
pub const MAX_NESTING_DEPTH: usize = 64;

/// Longest varuint yrs 0.26 reads (`read_var_u32` / `read_var_u64`).
const MAX_VARUINT_BYTES: usize = 11;
/// Longest signed varint yrs 0.26 reads without shifting an `i64` by 64 or
/// more (an 11th byte shifts by 69: a panic in debug builds).
const MAX_VARINT_BYTES: usize = 10;

/// Info-byte flags and content/type refs, as in yrs-0.26.0/src/block.rs and
/// src/types/mod.rs.
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const BLOCK_GC: u8 = 0;
const BLOCK_SKIP: u8 = 10;

/// Smallest encoded sizes, used to bound claimed counts.
/// A client section: blocks count, client, clock.
const MIN_CLIENT_BYTES: usize = 3;
/// A block: Skip/GC = info byte + length.
const MIN_BLOCK_BYTES: usize = 2;
/// A delete-set client: client + range count.
const MIN_DS_CLIENT_BYTES: usize = 2;
/// A delete-set range: clock + length.
const MIN_DS_RANGE_BYTES: usize = 2;
/// An `Any` value: its tag.
const MIN_ANY_BYTES: usize = 1;
/// An `Any` map entry: key length + value tag.
const MIN_ANY_ENTRY_BYTES: usize = 2;
/// A string: its length prefix.
const MIN_STRING_BYTES: usize = 1;

/// Why an update was refused before reaching yrs. Offsets are byte positions
/// in the update where the offending value starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateCheckError {
    /// The update ends in the middle of a value.
    #[error("truncated at byte {offset}")]
    Truncated { offset: usize },
    /// A varint whose value does not fit the type yrs stores it in.
    #[error("integer at byte {offset} does not fit in {target}")]
    IntegerOverflow { offset: usize, target: &'static str },
    /// A varint with more bytes than yrs reads safely.
    #[error("integer at byte {offset} is longer than {max_bytes} bytes")]
    IntegerTooLong { offset: usize, max_bytes: usize },
    /// A string or buffer length beyond the end of the update.
    #[error("length {len} at byte {offset} exceeds the {remaining} bytes left")]
    LengthTooLarge {
        len: u64,
        offset: usize,
        remaining: usize,
    },
    /// A count of elements that cannot all fit in the rest of the update.
    #[error(
        "count {count} at byte {offset} exceeds the {remaining} bytes left \
         (each element takes at least {min_bytes_each})"
    )]
    CountTooLarge {
        count: u64,
        offset: usize,
        remaining: usize,
        min_bytes_each: usize,
    },
    /// A string (at its length prefix) that is not valid UTF-8.
    #[error("string at byte {offset} is not UTF-8")]
    InvalidUtf8 { offset: usize },
    /// An `Any` array or map nested deeper than [`MAX_NESTING_DEPTH`].
    #[error("nesting deeper than {MAX_NESTING_DEPTH} at byte {offset}")]
    TooDeep { offset: usize },
    /// An item whose content type (`info & 0x0F`, at the info byte) yrs does
    /// not decode.
    #[error("unknown content type {content_ref} at byte {offset}")]
    UnknownContentType { content_ref: u8, offset: usize },
    /// A shared-type ref yrs does not decode.
    #[error("unknown shared type {type_ref} at byte {offset}")]
    UnknownTypeRef { type_ref: u8, offset: usize },
    /// Something yrs decodes but the server refuses: stock Yjs clients would
    /// read it differently (or not at all), or the server could not store
    /// and reload it faithfully. See [`Refusal`].
    #[error("{} at byte {offset} is refused: {}", .what.what(), .what.why())]
    Refused { what: Refusal, offset: usize },
    /// An `Any` value tag yrs does not decode.
    #[error("unknown value tag {tag} at byte {offset}")]
    UnknownAnyTag { tag: u8, offset: usize },
    /// A block or delete-set range ending beyond clock `u32::MAX`.
    #[error("clock {clock} plus length {len} at byte {offset} overflows 32 bits")]
    ClockOverflow { clock: u32, len: u32, offset: usize },
    /// Bytes after the delete set.
    #[error("trailing bytes after the delete set at byte {offset}")]
    TrailingBytes { offset: usize },
}

/// What the checker refuses although yrs would decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `ContentJSON` (content type 2): yrs 0.26 reads `len + 1` strings but
    /// writes `len`, so what it stores cannot be read back (current Yjs
    /// writes `ContentAny` instead).
    JsonContent,
    /// `ContentDoc` (content type 9): sub-documents are not served, and an
    /// integrated one would be synced to clients as a copy of the room.
    SubdocumentContent,
    /// `ContentMove` (content type 11): yrs-only; Yjs clients cannot read it.
    MoveContent,
    /// Info-byte bit `0x10`: yrs ignores it, Yjs reads it as part of the
    /// content type (and fails).
    InfoBit0x10,
    /// A GC or Skip block of length 0: no encoder writes one, and yrs
    /// computes `clock + 0 - 1` for it (a panic at clock 0).
    EmptyGcOrSkip,
    /// Shared type `XmlHook` (5): Yjs writes a hook name, yrs reads none.
    XmlHookType,
    /// Shared-type refs 9 and 15 (`SubDoc`, `Undefined`): yrs-only.
    YrsOnlyType,
    /// An origin, right origin or parent that is the item's own client's,
    /// at the item's clock or later: items refer only to what existed when
    /// they were made, and yrs looks such a reference up past the end of
    /// the client's blocks (a panic in `BlockStore::find_pivot`).
    ReferenceAhead,
}

impl Refusal {
    /// What was refused.
    pub fn what(self) -> &'static str {
        match self {
            Refusal::JsonContent => "JSON content (type 2)",
            Refusal::SubdocumentContent => "sub-document content (type 9)",
            Refusal::MoveContent => "move content (type 11)",
            Refusal::InfoBit0x10 => "info byte with bit 0x10",
            Refusal::EmptyGcOrSkip => "zero-length GC or skip block",
            Refusal::XmlHookType => "XmlHook shared type (5)",
            Refusal::YrsOnlyType => "shared type 9 or 15",
            Refusal::ReferenceAhead => "a reference to a later item of the same client",
        }
    }

    /// Why, in words a client developer can act on.
    pub fn why(self) -> &'static str {
        match self {
            Refusal::JsonContent => {
                "legacy content the server cannot store and reload faithfully; \
                 use a current Yjs (it writes ContentAny)"
            }
            Refusal::SubdocumentContent => "sub-documents are not supported",
            Refusal::MoveContent | Refusal::YrsOnlyType => "Yjs clients cannot read it",
            Refusal::InfoBit0x10 => "Yjs reads it as part of the content type",
            Refusal::EmptyGcOrSkip | Refusal::ReferenceAhead => "no Yjs encoder writes one",
            Refusal::XmlHookType => "Yjs and yrs encode it differently",
        }
    }
}

/// Checks that `update`, from a client, is a structurally valid lib0 v1 Yjs
/// update that yrs 0.26 can decode without unbounded allocation, invalid
/// UTF-8 or deep recursion, holding nothing the server refuses (see
/// [`Refusal`]). Does not check semantics (that origins exist etc.).
pub fn check_update_v1(update: &[u8]) -> Result<(), UpdateCheckError> {
    Checker::new(update, false).update()
}

/// Checks an update or snapshot read back from storage: as
/// [`check_update_v1`], except that content stored before the server began
/// refusing it still loads (legacy JSON, sub-document and move content,
/// info bit `0x10`, `XmlHook` and yrs-only type refs). What makes yrs panic
/// or misbehave is refused all the same.
pub fn check_stored_update_v1(update: &[u8]) -> Result<(), UpdateCheckError> {
    Checker::new(update, true).update()
}

/// Bits recorded (in tests only) for what a checked update contained.
mod seen {
    /// Content refs 0..=15 (0 = GC block, 10 = Skip block) use bits 0..=15.
    pub(super) const CONTENT: u32 = 0;
    /// `Any` tags 116..=127 use bits 16..=27.
    pub(super) const ANY_TAG: u32 = 16;
    /// Shared-type refs 0..=15 use bits 32..=47.
    pub(super) const TYPE_REF: u32 = 32;
    pub(super) const DELETE_RANGE: u32 = 48;
    pub(super) const PARENT_SUB: u32 = 49;
    pub(super) const PARENT_NAMED: u32 = 50;
    pub(super) const PARENT_ID: u32 = 51;
    pub(super) const ORIGIN: u32 = 52;
    pub(super) const RIGHT_ORIGIN: u32 = 53;
}

type Res<T> = Result<T, UpdateCheckError>;

/// Which width yrs stores an unsigned varint in.
#[derive(Clone, Copy)]
enum Width {
    /// `read_var::<u32>()`: clocks, lengths, counts, parent info.
    U32,
    /// `ClientID::new(u64)`: values must stay below 2^53.
    Client,
    /// `read_var::<usize>()`: `Any` array and map lengths.
    U64,
}

impl Width {
    fn bits(self) -> u32 {
        match self {
            Width::U32 => 32,
            Width::Client => 53,
            Width::U64 => 64,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Width::U32 => "u32",
            Width::Client => "a 53-bit client id",
            Width::U64 => "u64",
        }
    }
}

/// One open `Any` container: how many elements are still to come.
#[derive(Clone, Copy)]
struct Frame {
    remaining: u64,
    is_map: bool,
}

struct Checker<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Checking what the server stored, not what a client sent: only what
    /// keeps yrs safe is refused (see [`check_stored_update_v1`]).
    stored: bool,
    /// Open `Any` containers (reused by every `Any` value of the update).
    stack: [Frame; MAX_NESTING_DEPTH],
    #[cfg(test)]
    seen: u64,
}

impl<'a> Checker<'a> {
    fn new(buf: &'a [u8], stored: bool) -> Self {
        Checker {
            buf,
            pos: 0,
            stored,
            stack: [Frame {
                remaining: 0,
                is_map: false,
            }; MAX_NESTING_DEPTH],
            #[cfg(test)]
            seen: 0,
        }
    }

    #[inline]
    fn mark(&mut self, _bit: u32) {
        #[cfg(test)]
        {
            self.seen |= 1u64 << _bit;
        }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Res<u8> {
        match self.buf.get(self.pos) {
            Some(&byte) => {
                self.pos += 1;
                Ok(byte)
            }
            None => Err(UpdateCheckError::Truncated { offset: self.pos }),
        }
    }

    /// Skips `n` bytes of a fixed-size value.
    fn fixed(&mut self, n: usize) -> Res<()> {
        if n > self.left() {
            return Err(UpdateCheckError::Truncated { offset: self.pos });
        }
        self.pos += n;
        Ok(())
    }

    /// An unsigned lib0 varint as yrs's `read_var_u32`/`read_var_u64` read it
    /// (at most 11 bytes), whose value must fit `width` exactly.
    fn var_uint(&mut self, width: Width) -> Res<u64> {
        let start = self.pos;
        let bits = width.bits();
        let mut value = 0u64;
        let mut shift = 0u32;
        for _ in 0..MAX_VARUINT_BYTES {
            let byte = self
                .u8()
                .map_err(|_| UpdateCheckError::Truncated { offset: start })?;
            let payload = u64::from(byte & 0x7f);
            if payload != 0 {
                // Bits at or above `bits` would be wrapped or dropped by yrs.
                if shift >= bits || payload.checked_shr(bits - shift).unwrap_or(0) != 0 {
                    return Err(UpdateCheckError::IntegerOverflow {
                        offset: start,
                        target: width.name(),
                    });
                }
                value |= payload << shift;
            }
            if byte < 0x80 {
                return Ok(value);
            }
            shift += 7;
        }
        Err(UpdateCheckError::IntegerTooLong {
            offset: start,
            max_bytes: MAX_VARUINT_BYTES,
        })
    }

    fn var_u32(&mut self) -> Res<u32> {
        // `var_uint` guarantees the value fits.
        Ok(self.var_uint(Width::U32)? as u32)
    }

    /// A signed lib0 varint (`readVarInt`) as yrs's `read_var_i64` reads it:
    /// six payload bits and a sign bit in the first byte, seven payload bits
    /// in each following one. At most 10 bytes, magnitude at most `i64::MAX`.
    fn var_int(&mut self) -> Res<i64> {
        let start = self.pos;
        let truncated = |_| UpdateCheckError::Truncated { offset: start };
        let first = self.u8().map_err(truncated)?;
        let negative = first & 0x40 != 0;
        let mut magnitude = u64::from(first & 0x3f);
        let mut byte = first;
        let mut shift = 6u32;
        let mut read = 1;
        while byte >= 0x80 {
            if read == MAX_VARINT_BYTES {
                return Err(UpdateCheckError::IntegerTooLong {
                    offset: start,
                    max_bytes: MAX_VARINT_BYTES,
                });
            }
            byte = self.u8().map_err(truncated)?;
            read += 1;
            let payload = u64::from(byte & 0x7f);
            if payload != 0 {
                if shift >= 63 || payload >> (63 - shift) != 0 {
                    return Err(UpdateCheckError::IntegerOverflow {
                        offset: start,
                        target: "i64",
                    });
                }
                magnitude |= payload << shift;
            }
            shift += 7;
        }
        // The magnitude fits in 63 bits, so it converts and negates exactly.
        let value = magnitude as i64;
        Ok(if negative { -value } else { value })
    }

    /// A varuint count of elements that each take at least `min_each` bytes.
    fn count(&mut self, width: Width, min_each: usize) -> Res<u64> {
        let start = self.pos;
        let count = self.var_uint(width)?;
        self.fits(count, start, min_each)?;
        Ok(count)
    }

    fn fits(&self, count: u64, offset: usize, min_each: usize) -> Res<()> {
        let needed = u128::from(count) * min_each as u128;
        if needed > self.left() as u128 {
            return Err(UpdateCheckError::CountTooLarge {
                count,
                offset,
                remaining: self.left(),
                min_bytes_each: min_each,
            });
        }
        Ok(())
    }

    /// `Read::read_buf`: a `u32` length and that many bytes.
    fn bytes(&mut self) -> Res<&'a [u8]> {
        let start = self.pos;
        let len = self.var_uint(Width::U32)?;
        let remaining = self.left();
        if len > remaining as u64 {
            return Err(UpdateCheckError::LengthTooLarge {
                len,
                offset: start,
                remaining,
            });
        }
        let end = self.pos + len as usize;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// `Read::read_string`: a buffer that must be UTF-8.
    fn string(&mut self) -> Res<&'a str> {
        let start = self.pos;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| UpdateCheckError::InvalidUtf8 { offset: start })
    }

    /// `DecoderV1::read_id`: client (53 bits), clock (`u32`).
    fn id(&mut self) -> Res<(u64, u32)> {
        let client = self.var_uint(Width::Client)?;
        let clock = self.var_u32()?;
        Ok((client, clock))
    }

    /// An origin, right origin or parent ID of the item `client`:`clock`:
    /// if it is one of its own client's, it must come before it.
    fn reference(&mut self, client: u64, clock: u32) -> Res<()> {
        let offset = self.pos;
        let (of, at) = self.id()?;
        if of == client && at >= clock {
            return Err(UpdateCheckError::Refused {
                what: Refusal::ReferenceAhead,
                offset,
            });
        }
        Ok(())
    }

    /// `impl Decode for Update`.
    fn update(&mut self) -> Res<()> {
        let clients = self.count(Width::U32, MIN_CLIENT_BYTES)?;
        for _ in 0..clients {
            let blocks = self.count(Width::U32, MIN_BLOCK_BYTES)?;
            let client = self.var_uint(Width::Client)?;
            let mut clock = self.var_u32()?;
            for _ in 0..blocks {
                let start = self.pos;
                let len = self.block(client, clock)?;
                clock = clock
                    .checked_add(len)
                    .ok_or(UpdateCheckError::ClockOverflow {
                        clock,
                        len,
                        offset: start,
                    })?;
            }
        }
        self.delete_set()?;
        if self.pos != self.buf.len() {
            return Err(UpdateCheckError::TrailingBytes { offset: self.pos });
        }
        Ok(())
    }

    /// `Update::decode_block`; returns the length yrs adds to the clock.
    fn block(&mut self, client: u64, clock: u32) -> Res<u32> {
        let info_offset = self.pos;
        let info = self.u8()?;
        match info {
            BLOCK_GC | BLOCK_SKIP => {
                self.mark(seen::CONTENT + u32::from(info));
                let len = self.var_u32()?;
                if len == 0 {
                    return Err(UpdateCheckError::Refused {
                        what: Refusal::EmptyGcOrSkip,
                        offset: info_offset,
                    });
                }
                Ok(len)
            }
            _ => {
                if info & 0x10 != 0 && !self.stored {
                    return Err(UpdateCheckError::Refused {
                        what: Refusal::InfoBit0x10,
                        offset: info_offset,
                    });
                }
                if info & HAS_ORIGIN != 0 {
                    self.mark(seen::ORIGIN);
                    self.reference(client, clock)?;
                }
                if info & HAS_RIGHT_ORIGIN != 0 {
                    self.mark(seen::RIGHT_ORIGIN);
                    self.reference(client, clock)?;
                }
                if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                    // `read_parent_info`: a u32 varuint, `== 1` means named.
                    if self.var_u32()? == 1 {
                        self.mark(seen::PARENT_NAMED);
                        self.string()?;
                    } else {
                        self.mark(seen::PARENT_ID);
                        self.reference(client, clock)?;
                    }
                    if info & HAS_PARENT_SUB != 0 {
                        self.mark(seen::PARENT_SUB);
                        self.string()?;
                    }
                }
                self.content(info, info_offset)
            }
        }
    }

    /// `ItemContent::decode`; returns `ItemContent::len(OffsetKind::Utf16)`.
    fn content(&mut self, info: u8, info_offset: usize) -> Res<u32> {
        let content_ref = info & 0b1111;
        let len = match content_ref {
            // Deleted
            1 => self.var_u32()?,
            // Binary
            3 => {
                self.bytes()?;
                1
            }
            // String: its UTF-16 length (never more than its byte length,
            // itself a u32).
            4 => {
                let s = self.string()?;
                s.chars().map(|c| c.len_utf16() as u32).sum()
            }
            // Embed: a JSON string.
            5 => {
                self.string()?;
                1
            }
            // Format: key, JSON string.
            6 => {
                self.string()?;
                self.string()?;
                1
            }
            // Type
            7 => {
                self.type_ref()?;
                1
            }
            // Any: a u32 count of values.
            8 => {
                let count = self.count(Width::U32, MIN_ANY_BYTES)?;
                for _ in 0..count {
                    self.any()?;
                }
                count as u32
            }
            // Refused from clients: see `Refusal`.
            2 | 9 | 11 if !self.stored => {
                return Err(UpdateCheckError::Refused {
                    what: match content_ref {
                        2 => Refusal::JsonContent,
                        9 => Refusal::SubdocumentContent,
                        _ => Refusal::MoveContent,
                    },
                    offset: info_offset,
                });
            }
            // JSON: yrs reads `len + 1` raw strings and refuses len > i32::MAX.
            2 => {
                let start = self.pos;
                let len = self.var_u32()?;
                if i32::try_from(len).is_err() {
                    return Err(UpdateCheckError::CountTooLarge {
                        count: u64::from(len),
                        offset: start,
                        remaining: self.left(),
                        min_bytes_each: MIN_STRING_BYTES,
                    });
                }
                let strings = len + 1;
                self.fits(u64::from(strings), start, MIN_STRING_BYTES)?;
                for _ in 0..strings {
                    self.string()?;
                }
                strings
            }
            // Doc: guid, options as one Any value.
            9 => {
                self.string()?;
                self.any()?;
                1
            }
            // Move: i32 flags, start ID, end ID unless collapsed.
            11 => {
                let start = self.pos;
                let flags = i32::try_from(self.var_int()?).map_err(|_| {
                    UpdateCheckError::IntegerOverflow {
                        offset: start,
                        target: "i32",
                    }
                })?;
                self.id()?;
                if flags & 1 == 0 {
                    self.id()?;
                }
                1
            }
            _ => {
                return Err(UpdateCheckError::UnknownContentType {
                    content_ref,
                    offset: info_offset,
                });
            }
        };
        self.mark(seen::CONTENT + u32::from(content_ref));
        Ok(len)
    }

    /// `TypeRef::decode` (without the `weak` feature).
    fn type_ref(&mut self) -> Res<()> {
        let offset = self.pos;
        let type_ref = self.u8()?;
        match type_ref {
            // Array, Map, Text, XmlFragment, XmlText.
            0 | 1 | 2 | 4 | 6 => {}
            // Stored before these were refused.
            5 | 9 | 15 if self.stored => {}
            // XmlHook (no name in yrs, a name in Yjs).
            5 => {
                return Err(UpdateCheckError::Refused {
                    what: Refusal::XmlHookType,
                    offset,
                });
            }
            // SubDoc, Undefined.
            9 | 15 => {
                return Err(UpdateCheckError::Refused {
                    what: Refusal::YrsOnlyType,
                    offset,
                });
            }
            // XmlElement: its tag name.
            3 => {
                self.string()?;
            }
            _ => return Err(UpdateCheckError::UnknownTypeRef { type_ref, offset }),
        }
        self.mark(seen::TYPE_REF + u32::from(type_ref));
        Ok(())
    }

    /// `Any::decode`, iteratively, with at most [`MAX_NESTING_DEPTH`] open
    /// containers.
    fn any(&mut self) -> Res<()> {
        let mut depth = 0;
        loop {
            let offset = self.pos;
            let tag = self.u8()?;
            match tag {
                // undefined, null, true, false
                127 | 126 | 121 | 120 => {}
                // integer
                125 => {
                    self.var_int()?;
                }
                // float32
                124 => self.fixed(4)?,
                // float64, bigint
                123 | 122 => self.fixed(8)?,
                // string
                119 => {
                    self.string()?;
                }
                // buffer
                116 => {
                    self.bytes()?;
                }
                // map, array
                118 | 117 => {
                    let is_map = tag == 118;
                    let min_each = if is_map {
                        MIN_ANY_ENTRY_BYTES
                    } else {
                        MIN_ANY_BYTES
                    };
                    let remaining = self.count(Width::U64, min_each)?;
                    if depth == MAX_NESTING_DEPTH {
                        return Err(UpdateCheckError::TooDeep { offset });
                    }
                    self.stack[depth] = Frame { remaining, is_map };
                    depth += 1;
                }
                _ => return Err(UpdateCheckError::UnknownAnyTag { tag, offset }),
            }
            self.mark(seen::ANY_TAG + u32::from(tag - 116));
            // Close finished containers; stop at the next element to read.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let top = &mut self.stack[depth - 1];
                if top.remaining == 0 {
                    depth -= 1;
                    continue;
                }
                top.remaining -= 1;
                if top.is_map {
                    self.string()?;
                }
                break;
            }
        }
    }

    /// `IdSet::decode`.
    fn delete_set(&mut self) -> Res<()> {
        let clients = self.count(Width::U32, MIN_DS_CLIENT_BYTES)?;
        for _ in 0..clients {
            self.var_uint(Width::Client)?;
            let ranges = self.count(Width::U32, MIN_DS_RANGE_BYTES)?;
            for _ in 0..ranges {
                self.mark(seen::DELETE_RANGE);
                let offset = self.pos;
                let clock = self.var_u32()?;
                let len = self.var_u32()?;
                clock
                    .checked_add(len)
                    .ok_or(UpdateCheckError::ClockOverflow { clock, len, offset })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::UpdateCheckError::*;
    use super::*;
    use std::collections::HashMap;
    use std::io::Read as _;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use yrs::types::Attrs;
    use yrs::updates::decoder::Decode;
    use yrs::{
        Any, Array, ArrayPrelim, ClientID, Doc, GetString, Map, MapPrelim, MapRef, OffsetKind,
        Options, ReadTxn, StateVector, Subscription, Text, TextPrelim, Transact, Update, Xml,
        XmlElementPrelim, XmlFragment, XmlFragmentPrelim, XmlTextPrelim,
    };

    type Log = Arc<Mutex<Vec<Vec<u8>>>>;

    // ---------------------------------------------------------------- helpers

    /// Checks `update` and returns what it contained (see [`seen`]).
    fn coverage(update: &[u8]) -> Result<u64, UpdateCheckError> {
        let mut checker = Checker::new(update, false);
        checker.update()?;
        Ok(checker.seen)
    }

    /// yrs's own decoder, with panics turned into `Err(())`.
    fn yrs_decode(update: &[u8]) -> Result<Result<Update, String>, ()> {
        catch_unwind(AssertUnwindSafe(|| {
            Update::decode_v1(update).map_err(|e| e.to_string())
        }))
        .map_err(drop)
    }

    /// Both the checker and yrs accept `update`.
    fn assert_valid(what: &str, update: &[u8]) -> u64 {
        let seen =
            coverage(update).unwrap_or_else(|e| panic!("{what}: false rejection: {e}\n{update:?}"));
        match yrs_decode(update) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{what}: accepted, but yrs cannot decode it: {e}"),
            Err(()) => panic!("{what}: accepted, but yrs panicked decoding it"),
        }
        seen
    }

    fn doc(client: u64) -> Doc {
        let mut options = Options::with_client_id(ClientID::new(client));
        options.offset_kind = OffsetKind::Utf16;
        Doc::with_options(options)
    }

    fn record(doc: &Doc) -> (Log, Subscription) {
        let log: Log = Arc::default();
        let sink = log.clone();
        let sub = doc
            .observe_update_v1(move |_, event| sink.lock().unwrap().push(event.update.clone()))
            .unwrap();
        (log, sub)
    }

    fn full_state(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }

    fn attrs(pairs: &[(&str, Any)]) -> Attrs {
        pairs
            .iter()
            .map(|(k, v)| (Arc::<str>::from(*k), v.clone()))
            .collect()
    }

    fn any_map(pairs: &[(&str, Any)]) -> Any {
        let map: HashMap<String, Any> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Any::Map(Arc::new(map))
    }

    fn any_str(s: &str) -> Any {
        Any::String(Arc::from(s))
    }

    /// `depth` nested single-element arrays around `null`.
    fn nested_arrays(depth: usize) -> Any {
        let mut value = Any::Null;
        for _ in 0..depth {
            value = Any::Array(Arc::from(vec![value]));
        }
        value
    }

    /// Every kind of `Any` value yrs can encode.
    fn any_values() -> Vec<(&'static str, Any)> {
        let mut values = vec![
            ("null", Any::Null),
            ("undefined", Any::Undefined),
            ("true", Any::Bool(true)),
            ("false", Any::Bool(false)),
            ("empty", any_str("")),
            ("utf8", any_str("héllo wörld 😀 日本語 ✨")),
            (
                "buffer",
                Any::Buffer(Arc::from(&[0u8, 1, 127, 128, 255][..])),
            ),
            ("empty_buffer", Any::Buffer(Arc::from(&[][..]))),
            ("f32", Any::Number(0.5)),
            ("f64", Any::Number(0.1)),
            ("neg_zero", Any::Number(-0.0)),
            ("nan", Any::Number(f64::NAN)),
            ("inf", Any::Number(f64::INFINITY)),
            ("huge", Any::Number(1e300)),
            ("bigint_min", Any::BigInt(i64::MIN)),
            ("bigint_max", Any::BigInt(i64::MAX)),
            ("bigint_zero", Any::BigInt(0)),
            (
                "nested",
                Any::Array(Arc::from(vec![
                    any_map(&[
                        (
                            "a",
                            Any::Array(Arc::from(vec![Any::Number(1.0), any_str("é")])),
                        ),
                        ("b", any_map(&[("c", any_map(&[("d", Any::Null)]))])),
                        ("", Any::Bool(false)),
                    ]),
                    Any::Array(Arc::from(Vec::<Any>::new())),
                    any_map(&[]),
                ])),
            ),
            ("deepest", nested_arrays(MAX_NESTING_DEPTH)),
        ];
        let ints: [(&'static str, f64); 12] = [
            ("i0", 0.0),
            ("i1", 1.0),
            ("i_1", -1.0),
            ("i63", 63.0),
            ("i64", 64.0),
            ("i_64", -64.0),
            ("i_65", -65.0),
            ("i8191", 8191.0),
            ("i2_31", 2147483648.0),
            ("i_2_31", -2147483648.0),
            ("max_safe", 9007199254740991.0),
            ("min_safe", -9007199254740991.0),
        ];
        values.extend(ints.iter().map(|&(k, v)| (k, Any::Number(v))));
        values
    }

    /// Updates produced by yrs covering every content kind it can produce.
    fn corpus() -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let push_log = |name: &str, log: &Log, out: &mut Vec<(String, Vec<u8>)>| {
            for (i, u) in log.lock().unwrap().iter().enumerate() {
                out.push((format!("{name} incremental #{i}"), u.clone()));
            }
        };

        // Text: multi-byte UTF-8, attributes, formats, embeds, deletes by
        // two clients.
        let d1 = doc(1);
        let (log1, _s1) = record(&d1);
        let text = d1.get_or_insert_text("text");
        {
            let mut txn = d1.transact_mut();
            text.insert(&mut txn, 0, "héllo wörld");
        }
        {
            let mut txn = d1.transact_mut();
            text.insert(&mut txn, 5, " 😀 日本語 ");
            text.insert(&mut txn, 0, "x");
        }
        {
            let mut txn = d1.transact_mut();
            text.insert_with_attributes(
                &mut txn,
                0,
                "Title ✨",
                attrs(&[("bold", Any::Bool(true)), ("size", Any::Number(2.5))]),
            );
        }
        {
            let mut txn = d1.transact_mut();
            text.format(
                &mut txn,
                2,
                6,
                attrs(&[("italic", Any::Bool(true)), ("color", any_str("#f00 é"))]),
            );
            text.format(&mut txn, 0, 3, attrs(&[("bold", Any::Null)]));
        }
        {
            let mut txn = d1.transact_mut();
            text.insert_embed(&mut txn, 3, any_map(&[("image", any_str("🖼.png"))]));
            text.insert_embed(&mut txn, 1, Any::Number(42.0));
        }
        let d2 = doc(2);
        let (log2, _s2) = record(&d2);
        apply(&d2, &full_state(&d1));
        let text2 = d2.get_or_insert_text("text");
        {
            let mut txn = d2.transact_mut();
            text2.remove_range(&mut txn, 2, 7);
            text2.insert(&mut txn, 4, "ça va? 你好");
        }
        for u in log2.lock().unwrap().clone() {
            apply(&d1, &u);
        }
        {
            let mut txn = d1.transact_mut();
            text.remove_range(&mut txn, 5, 4);
            text.remove_range(&mut txn, 0, 1);
        }
        for u in log1.lock().unwrap().clone() {
            apply(&d2, &u);
        }
        assert_eq!(
            text.get_string(&d1.transact()),
            text2.get_string(&d2.transact())
        );
        push_log("text c1", &log1, &mut out);
        push_log("text c2", &log2, &mut out);
        out.push(("text full state c1".into(), full_state(&d1)));
        out.push(("text full state c2".into(), full_state(&d2)));

        // The same edits without GC keep deleted content in the state.
        let mut options = Options::with_client_id(ClientID::new(3));
        options.skip_gc = true;
        options.offset_kind = OffsetKind::Utf16;
        let d3 = Doc::with_options(options);
        apply(&d3, &full_state(&d1));
        {
            let t3 = d3.get_or_insert_text("text");
            let mut txn = d3.transact_mut();
            t3.remove_range(&mut txn, 0, 3);
        }
        out.push(("text no-gc full state".into(), full_state(&d3)));

        // Map: every kind of Any value, overwrites and removals.
        let dm = doc(4);
        let (logm, _sm) = record(&dm);
        let map = dm.get_or_insert_map("map");
        for (key, value) in any_values() {
            let mut txn = dm.transact_mut();
            map.insert(&mut txn, key, value);
        }
        {
            let mut txn = dm.transact_mut();
            map.insert(&mut txn, "utf8", any_str("overwritten ü"));
            map.remove(&mut txn, "f64");
            map.insert(&mut txn, "clé 🔑", Any::Bool(true));
        }
        push_log("map", &logm, &mut out);
        out.push(("map full state".into(), full_state(&dm)));

        // Array: runs of Any values, nested shared types, deletes of nested
        // types (GC of their content), moves.
        let da = doc(5);
        let (loga, _sa) = record(&da);
        let arr = da.get_or_insert_array("arr");
        {
            let mut txn = da.transact_mut();
            let values: Vec<Any> = any_values().into_iter().map(|(_, v)| v).collect();
            arr.insert_range(&mut txn, 0, values);
        }
        let nested: MapRef = {
            let mut txn = da.transact_mut();
            arr.insert(
                &mut txn,
                1,
                ArrayPrelim::from([Any::Number(1.0), any_str("deux"), Any::Null]),
            );
            arr.insert(&mut txn, 2, TextPrelim::new("nested 😀 text"));
            arr.insert(
                &mut txn,
                3,
                MapPrelim::from([("k", Any::Number(7.0)), ("ключ", any_str("значение"))]),
            )
        };
        {
            let mut txn = da.transact_mut();
            nested.insert(&mut txn, "inner", MapPrelim::from([("x", Any::Bool(true))]));
            nested.insert(&mut txn, "list", ArrayPrelim::from([Any::Number(3.5)]));
        }
        {
            let mut txn = da.transact_mut();
            arr.remove(&mut txn, 3); // the nested map: its content gets GC'd
            arr.remove_range(&mut txn, 5, 3);
        }
        push_log("array", &loga, &mut out);
        out.push(("array full state".into(), full_state(&da)));

        // XML: fragment, elements, attributes, text with formatting.
        let dx = doc(6);
        let (logx, _sx) = record(&dx);
        let frag = dx.get_or_insert_xml_fragment("xml");
        {
            let mut txn = dx.transact_mut();
            let p = frag.insert(&mut txn, 0, XmlElementPrelim::empty("p"));
            p.insert_attribute(&mut txn, "class", "lead é");
            let t = p.insert(&mut txn, 0, XmlTextPrelim::new("Hello <b> 😀"));
            t.insert_attribute(&mut txn, "lang", "fr");
            t.format(&mut txn, 0, 5, attrs(&[("em", Any::Bool(true))]));
            let span = p.insert(&mut txn, 1, XmlElementPrelim::empty("span-ü"));
            span.insert(&mut txn, 0, XmlTextPrelim::new("inner"));
            frag.insert(&mut txn, 1, XmlTextPrelim::new("tail"));
        }
        {
            let mut txn = dx.transact_mut();
            frag.remove_range(&mut txn, 1, 1);
        }
        let holder = dx.get_or_insert_map("holder");
        {
            let mut txn = dx.transact_mut();
            let inner = holder.insert(&mut txn, "fragment", XmlFragmentPrelim::default());
            inner.insert(&mut txn, 0, XmlTextPrelim::new("in a nested fragment"));
        }
        push_log("xml", &logx, &mut out);
        out.push(("xml full state".into(), full_state(&dx)));

        // Merged updates: with gaps (Skip blocks) and across clients.
        let l1 = log1.lock().unwrap().clone();
        let merged = yrs::merge_updates_v1([&l1[0], &l1[2], &l1[4]]).unwrap();
        out.push(("merge with gaps".into(), merged));
        let mut all: Vec<Vec<u8>> = Vec::new();
        for log in [&log1, &log2, &logm, &loga, &logx] {
            all.extend(log.lock().unwrap().iter().cloned());
        }
        out.push((
            "merge of everything".into(),
            yrs::merge_updates_v1(&all).unwrap(),
        ));
        out.push((
            "empty".into(),
            Doc::new()
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        ));
        out
    }

    /// Little-endian base-128 varuint.
    fn var(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn var_bytes(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        var(&mut out, value);
        out
    }

    /// lib0 signed varint (`writeVarInt`) of `magnitude` (up to 2^70).
    fn svar(out: &mut Vec<u8>, negative: bool, magnitude: u128) {
        let mut rest = magnitude >> 6;
        let mut first = (magnitude & 0x3f) as u8;
        if negative {
            first |= 0x40;
        }
        if rest > 0 {
            first |= 0x80;
        }
        out.push(first);
        while rest > 0 {
            let mut byte = (rest & 0x7f) as u8;
            rest >>= 7;
            if rest > 0 {
                byte |= 0x80;
            }
            out.push(byte);
        }
    }

    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        var(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// An item under root type `root` (info byte, parent info 1, name),
    /// followed by `content`.
    fn root_item(info: u8, root: &[u8], content: &[u8]) -> Vec<u8> {
        let mut out = vec![info, 1];
        string(&mut out, root);
        out.extend_from_slice(content);
        out
    }

    /// One client (id 1) at `clock` with `blocks`, then `delete_set`.
    fn update_at(clock: u64, blocks: &[Vec<u8>], delete_set: &[u8]) -> Vec<u8> {
        let mut out = vec![1];
        var(&mut out, blocks.len() as u64);
        out.push(1);
        var(&mut out, clock);
        for block in blocks {
            out.extend_from_slice(block);
        }
        out.extend_from_slice(delete_set);
        out
    }

    /// One client (id 1) at clock 0 with `blocks`, and an empty delete set.
    /// Blocks start at byte 4.
    fn update_of(blocks: &[Vec<u8>]) -> Vec<u8> {
        update_at(0, blocks, &[0])
    }

    /// The checker refuses `update` with exactly `expected`.
    fn assert_rejected(update: &[u8], expected: UpdateCheckError) {
        assert_eq!(check_update_v1(update), Err(expected), "{update:?}");
    }

    /// As [`assert_rejected`], for input that is safe to give yrs (valid
    /// UTF-8, honest counts): yrs must refuse it too.
    fn assert_both_reject(update: &[u8], expected: UpdateCheckError) {
        assert_rejected(update, expected);
        assert!(
            matches!(yrs_decode(update), Ok(Err(_))),
            "yrs does not refuse {update:?}"
        );
    }

    // ------------------------------------------------------------ acceptance

    #[test]
    fn accepts_every_update_yrs_produces() {
        let started = Instant::now();
        let corpus = corpus();
        assert!(corpus.len() > 40, "only {} updates", corpus.len());
        let mut seen = 0u64;
        for (name, update) in &corpus {
            seen |= assert_valid(name, update);
        }
        let missing = |bits: &[(u32, &str)]| -> Vec<String> {
            bits.iter()
                .filter(|(bit, _)| seen & (1u64 << bit) == 0)
                .map(|(_, name)| (*name).to_owned())
                .collect()
        };
        let content = |r: u32| seen::CONTENT + r;
        let tag = |t: u32| seen::ANY_TAG + t - 116;
        let type_ref = |t: u32| seen::TYPE_REF + t;
        let wanted = [
            (content(0), "GC block"),
            (content(1), "deleted content"),
            (content(4), "string content"),
            (content(5), "embed content"),
            (content(6), "format content"),
            (content(7), "type content"),
            (content(8), "any content"),
            (content(10), "skip block"),
            (tag(116), "any buffer"),
            (tag(117), "any array"),
            (tag(118), "any map"),
            (tag(119), "any string"),
            (tag(120), "any true"),
            (tag(121), "any false"),
            (tag(122), "any bigint"),
            (tag(123), "any float64"),
            (tag(124), "any float32"),
            (tag(125), "any integer"),
            (tag(126), "any null"),
            (tag(127), "any undefined"),
            (type_ref(0), "array type"),
            (type_ref(1), "map type"),
            (type_ref(2), "text type"),
            (type_ref(3), "xml element type"),
            (type_ref(4), "xml fragment type"),
            (type_ref(6), "xml text type"),
            (seen::DELETE_RANGE, "delete set range"),
            (seen::PARENT_SUB, "parent sub"),
            (seen::PARENT_NAMED, "root parent"),
            (seen::PARENT_ID, "nested parent"),
            (seen::ORIGIN, "origin"),
            (seen::RIGHT_ORIGIN, "right origin"),
        ];
        assert_eq!(
            missing(&wanted),
            Vec::<String>::new(),
            "corpus misses these"
        );
        eprintln!(
            "{} updates accepted in {:?}",
            corpus.len(),
            started.elapsed()
        );
    }

    /// How many transactions of the trace to replay: all 137k take ~20 s in
    /// a debug build (yrs's text edits get slower as the document grows).
    const TRACE_TXNS: usize = 40_000;

    #[test]
    fn accepts_every_update_of_a_real_trace() {
        let started = Instant::now();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/editing-traces/seph-blog1.json.gz"
        );
        let file = std::fs::File::open(path).unwrap();
        let mut json = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut json)
            .unwrap();
        let trace: serde_json::Value = serde_json::from_str(&json).unwrap();
        let txns = trace["txns"].as_array().unwrap();
        assert!(txns.len() > TRACE_TXNS);

        let doc = doc(1);
        let (log, sub) = record(&doc);
        let text = doc.get_or_insert_text("text");
        // Positions are code points; the model checks the replay.
        let mut model: Vec<char> = Vec::new();
        for txn_json in &txns[..TRACE_TXNS] {
            let mut txn = doc.transact_mut();
            for patch in txn_json["patches"].as_array().unwrap() {
                let pos = patch[0].as_u64().unwrap() as usize;
                let del = patch[1].as_u64().unwrap() as usize;
                let ins = patch[2].as_str().unwrap();
                // Code points are UTF-16 units only without astral chars.
                assert!(ins.chars().all(|c| c.len_utf16() == 1), "astral char");
                if del > 0 {
                    text.remove_range(&mut txn, pos as u32, del as u32);
                }
                if !ins.is_empty() {
                    text.insert(&mut txn, pos as u32, ins);
                }
                model.splice(pos..pos + del, ins.chars());
            }
        }
        drop(sub);
        let expected: String = model.into_iter().collect();
        assert_eq!(text.get_string(&doc.transact()), expected, "bad replay");
        let updates = std::mem::take(&mut *log.lock().unwrap());
        assert_eq!(updates.len(), TRACE_TXNS);
        for (i, update) in updates.iter().enumerate() {
            if let Err(e) = check_update_v1(update) {
                panic!("trace update #{i} rejected: {e}\n{update:?}");
            }
        }
        assert_valid("trace full state", &full_state(&doc));
        eprintln!(
            "{} trace updates accepted in {:?}",
            updates.len(),
            started.elapsed()
        );
    }

    // ------------------------------------------------------------- rejection

    #[test]
    fn rejects_invalid_utf8_in_every_kind_of_string() {
        // Blocks start at byte 4: info, parent info 1, root name, content.
        // Content string.
        let u = update_of(&[root_item(4, b"t", &[1, 0xff])]);
        assert_rejected(&u, InvalidUtf8 { offset: 8 });
        // Root type name.
        let u = update_of(&[root_item(4, &[0xc3], &[1, b'a'])]);
        assert_rejected(&u, InvalidUtf8 { offset: 6 });
        // Map key (parent_sub).
        let mut block = root_item(HAS_PARENT_SUB | 8, b"m", &[]);
        string(&mut block, &[0xe2, 0x82]);
        block.extend([1, 126]);
        assert_rejected(&update_of(&[block]), InvalidUtf8 { offset: 8 });
        // Any string and Any map key.
        let u = update_of(&[root_item(8, b"m", &[1, 119, 1, 0x80])]);
        assert_rejected(&u, InvalidUtf8 { offset: 10 });
        let u = update_of(&[root_item(8, b"m", &[1, 118, 1, 1, 0xff, 126])]);
        assert_rejected(&u, InvalidUtf8 { offset: 11 });
        // Embed JSON, format key, format JSON.
        let u = update_of(&[root_item(5, b"m", &[2, b'"', 0xff])]);
        assert_rejected(&u, InvalidUtf8 { offset: 8 });
        let u = update_of(&[root_item(6, b"m", &[1, 0xff, 4, b'n', b'u', b'l', b'l'])]);
        assert_rejected(&u, InvalidUtf8 { offset: 8 });
        let u = update_of(&[root_item(6, b"m", &[1, b'b', 1, 0xc0])]);
        assert_rejected(&u, InvalidUtf8 { offset: 10 });
        // XML element name.
        let u = update_of(&[root_item(7, b"m", &[3, 1, 0xfe])]);
        assert_rejected(&u, InvalidUtf8 { offset: 9 });
    }

    #[test]
    fn rejects_counts_beyond_the_input() {
        let max = var_bytes(u64::from(u32::MAX));
        let big = |prefix: &[u8], count: &[u8], suffix: &[u8]| -> Vec<u8> {
            [prefix, count, suffix].concat()
        };
        let count = u64::from(u32::MAX);
        // Clients.
        assert_rejected(
            &big(&[], &max, &[0]),
            CountTooLarge {
                count,
                offset: 0,
                remaining: 1,
                min_bytes_each: MIN_CLIENT_BYTES,
            },
        );
        // Blocks of one client.
        assert_rejected(
            &big(&[1], &max, &[1, 0, 0]),
            CountTooLarge {
                count,
                offset: 1,
                remaining: 3,
                min_bytes_each: MIN_BLOCK_BYTES,
            },
        );
        // Delete-set clients and ranges.
        assert_rejected(
            &big(&[0], &max, &[]),
            CountTooLarge {
                count,
                offset: 1,
                remaining: 0,
                min_bytes_each: MIN_DS_CLIENT_BYTES,
            },
        );
        assert_rejected(
            &big(&[0, 1, 1], &max, &[]),
            CountTooLarge {
                count,
                offset: 3,
                remaining: 0,
                min_bytes_each: MIN_DS_RANGE_BYTES,
            },
        );
        // A plausible delete-set range count, one range short.
        assert_rejected(
            &[0, 1, 1, 2, 0, 1, 5],
            CountTooLarge {
                count: 2,
                offset: 3,
                remaining: 3,
                min_bytes_each: MIN_DS_RANGE_BYTES,
            },
        );
        // Any array and map lengths of 2^36.
        let huge = var_bytes(1 << 36);
        let u = update_of(&[root_item(8, b"m", &big(&[1, 117], &huge, &[]))]);
        assert_rejected(
            &u,
            CountTooLarge {
                count: 1 << 36,
                offset: 10,
                remaining: 1,
                min_bytes_each: MIN_ANY_BYTES,
            },
        );
        let u = update_of(&[root_item(8, b"m", &big(&[1, 118], &huge, &[]))]);
        assert_rejected(
            &u,
            CountTooLarge {
                count: 1 << 36,
                offset: 10,
                remaining: 1,
                min_bytes_each: MIN_ANY_ENTRY_BYTES,
            },
        );
        // ContentAny values.
        let u = update_of(&[root_item(8, b"m", &max)]);
        assert_rejected(
            &u,
            CountTooLarge {
                count,
                offset: 8,
                remaining: 1,
                min_bytes_each: MIN_ANY_BYTES,
            },
        );
        // Buffer and string lengths.
        let u = update_of(&[root_item(3, b"m", &var_bytes(1000))]);
        assert_rejected(
            &u,
            LengthTooLarge {
                len: 1000,
                offset: 8,
                remaining: 1,
            },
        );
        let u = update_of(&[root_item(4, b"t", &[5, b'a'])]);
        assert_rejected(
            &u,
            LengthTooLarge {
                len: 5,
                offset: 8,
                remaining: 2,
            },
        );
    }

    #[test]
    fn rejects_nesting_deeper_than_the_limit() {
        // 1000 single-element arrays; the 65th tag is at 9 + 2 * 64.
        let mut content = vec![1];
        for _ in 0..1000 {
            content.extend([117, 1]);
        }
        content.push(126);
        let u = update_of(&[root_item(8, b"m", &content)]);
        assert_rejected(&u, TooDeep { offset: 9 + 2 * 64 });
        // Maps with empty keys: [118, 1, 0] each.
        let mut content = vec![1];
        for _ in 0..1000 {
            content.extend([118, 1, 0]);
        }
        content.push(126);
        let u = update_of(&[root_item(8, b"m", &content)]);
        assert_rejected(&u, TooDeep { offset: 9 + 3 * 64 });
        // An empty container one level too deep counts too.
        let mut content = vec![1];
        for _ in 0..MAX_NESTING_DEPTH {
            content.extend([117, 1]);
        }
        content.extend([117, 0]);
        let u = update_of(&[root_item(8, b"m", &content)]);
        assert_rejected(
            &u,
            TooDeep {
                offset: 9 + 2 * MAX_NESTING_DEPTH,
            },
        );
        // Exactly the limit is fine, for yrs too; so are siblings at it.
        content.truncate(content.len() - 2);
        content.push(126);
        assert_valid("limit", &update_of(&[root_item(8, b"m", &content)]));
        let mut content = vec![1];
        for _ in 0..MAX_NESTING_DEPTH - 2 {
            content.extend([117, 1]);
        }
        content.extend([117, 3, 117, 0, 118, 0, 126]);
        assert_valid("siblings", &update_of(&[root_item(8, b"m", &content)]));
        // And yrs encodes `nested_arrays(65)` into something refused.
        let d = doc(1);
        let map = d.get_or_insert_map("m");
        map.insert(
            &mut d.transact_mut(),
            "k",
            nested_arrays(MAX_NESTING_DEPTH + 1),
        );
        assert!(matches!(
            check_update_v1(&full_state(&d)),
            Err(TooDeep { .. })
        ));
    }

    #[test]
    fn rejects_every_strict_prefix() {
        let corpus = corpus();
        let picks = [
            "text full state c1",
            "map full state",
            "merge with gaps",
            "xml full state",
        ];
        let mut checked = 0;
        for (name, update) in corpus.iter().filter(|(n, _)| picks.contains(&n.as_str())) {
            assert_valid(name, update);
            for len in 0..update.len() {
                let prefix = &update[..len];
                assert!(
                    check_update_v1(prefix).is_err(),
                    "{name}: prefix of {len} bytes accepted"
                );
                // Every value in a prefix is honest, so yrs may see it.
                match yrs_decode(prefix) {
                    Ok(Err(_)) => {}
                    Ok(Ok(_)) => panic!("{name}: yrs decodes a prefix of {len} bytes"),
                    Err(()) => panic!("{name}: yrs panics on a prefix of {len} bytes"),
                }
                checked += 1;
            }
        }
        assert!(checked > 500, "{checked} prefixes");
    }

    #[test]
    fn rejects_trailing_bytes_that_yrs_ignores() {
        let d = doc(1);
        d.get_or_insert_text("t")
            .insert(&mut d.transact_mut(), 0, "hello");
        let mut u = full_state(&d);
        let end = u.len();
        u.push(0);
        assert_rejected(&u, TrailingBytes { offset: end });
        // yrs decodes it anyway: it never looks past the delete set.
        assert!(matches!(yrs_decode(&u), Ok(Ok(_))));
        u.extend(b"garbage \xff\xff\xff\xff\x0f");
        assert_rejected(&u, TrailingBytes { offset: end });
        assert_rejected(&[0, 0, 0], TrailingBytes { offset: 2 });
    }

    #[test]
    fn rejects_integers_yrs_would_wrap_or_panic_on() {
        // Clock 2^32 (yrs would wrap it to 0).
        let u = update_at(1 << 32, &[], &[0]);
        assert_rejected(
            &u,
            IntegerOverflow {
                offset: 3,
                target: "u32",
            },
        );
        // Client 2^53 (ClientID::new debug-asserts, and aliases in release).
        let u = [&[1, 0][..], &var_bytes(1 << 53), &[0, 0]].concat();
        assert_rejected(
            &u,
            IntegerOverflow {
                offset: 2,
                target: "a 53-bit client id",
            },
        );
        let u = [&[1, 0][..], &var_bytes((1 << 53) - 1), &[0, 0]].concat();
        assert_valid("largest client", &u);
        let u = [&[0, 1][..], &var_bytes(1 << 53), &[0]].concat();
        assert_rejected(
            &u,
            IntegerOverflow {
                offset: 2,
                target: "a 53-bit client id",
            },
        );
        // Parent info 2^32 + 1 (yrs would wrap it to 1).
        let mut block = vec![4];
        var(&mut block, (1 << 32) + 1);
        block.extend([1, b't', 1, b'a']);
        assert_rejected(
            &update_of(&[block]),
            IntegerOverflow {
                offset: 5,
                target: "u32",
            },
        );
        // A 12-byte varuint is refused by yrs; 11 zero-padded bytes are not.
        let mut u = vec![1, 0, 1];
        u.extend([0x80; 11]);
        u.extend([0, 0]);
        assert_both_reject(
            &u,
            IntegerTooLong {
                offset: 3,
                max_bytes: MAX_VARUINT_BYTES,
            },
        );
        let mut u = vec![1, 0, 1];
        u.extend([0x80; 10]);
        u.extend([0, 0]);
        assert_valid("11-byte varuint", &u);
        // Any integers: 11 bytes (yrs shifts an i64 by 69), magnitude 2^63
        // (yrs negates i64::MIN).
        let mut content = vec![1, 125, 0x80];
        content.extend([0x80; 9]);
        content.push(0);
        assert_rejected(
            &update_of(&[root_item(8, b"m", &content)]),
            IntegerTooLong {
                offset: 10,
                max_bytes: MAX_VARINT_BYTES,
            },
        );
        let mut content = vec![1, 125];
        svar(&mut content, true, 1 << 63);
        assert_rejected(
            &update_of(&[root_item(8, b"m", &content)]),
            IntegerOverflow {
                offset: 10,
                target: "i64",
            },
        );
        for negative in [false, true] {
            let mut content = vec![2, 125];
            svar(&mut content, negative, i64::MAX as u128);
            content.extend([125, 0xc0, 0x80, 0x80, 0]); // a padded "-0"
            assert_valid("i64 extremes", &update_of(&[root_item(8, b"m", &content)]));
        }
    }

    #[test]
    fn rejects_clocks_beyond_u32() {
        let max = u64::from(u32::MAX);
        // Strings advance the clock by their UTF-16 length.
        let emoji = root_item(4, b"t", &[4, 0xf0, 0x9f, 0x98, 0x80]);
        assert_valid(
            "clock end",
            &update_at(max - 2, std::slice::from_ref(&emoji), &[0]),
        );
        let emoji_a = root_item(4, b"t", &[5, 0xf0, 0x9f, 0x98, 0x80, b'a']);
        assert_rejected(
            &update_at(max - 2, &[emoji_a], &[0]),
            ClockOverflow {
                clock: u32::MAX - 2,
                len: 3,
                offset: 8,
            },
        );
        // Across blocks, and for GC and Skip blocks.
        let u = update_at(max - 4, &[emoji.clone(), emoji.clone(), vec![0, 1]], &[0]);
        assert_rejected(
            &u,
            ClockOverflow {
                clock: u32::MAX,
                len: 1,
                offset: 8 + 2 * emoji.len(),
            },
        );
        for info in [BLOCK_GC, BLOCK_SKIP] {
            assert_rejected(
                &update_at(max, &[vec![info, 1]], &[0]),
                ClockOverflow {
                    clock: u32::MAX,
                    len: 1,
                    offset: 8,
                },
            );
        }
        // Delete-set ranges.
        let u = [&[0, 1, 1, 1][..], &var_bytes(max), &[1]].concat();
        assert_rejected(
            &u,
            ClockOverflow {
                clock: u32::MAX,
                len: 1,
                offset: 4,
            },
        );
        let u = [&[0, 1, 1, 1][..], &var_bytes(max - 1), &[1]].concat();
        assert_valid("delete range at the end", &u);
    }

    #[test]
    fn rejects_unknown_kinds_like_yrs() {
        for content_ref in [12, 13, 14, 15] {
            assert_both_reject(
                &update_of(&[root_item(content_ref, b"m", &[0])]),
                UnknownContentType {
                    content_ref,
                    offset: 4,
                },
            );
        }
        // GC and Skip are whole info bytes in yrs: with flags they are items
        // of content type 0 or 10, which yrs refuses.
        let mut block = root_item(HAS_PARENT_SUB, b"m", &[]);
        string(&mut block, b"k");
        assert_both_reject(
            &update_of(&[block]),
            UnknownContentType {
                content_ref: 0,
                offset: 4,
            },
        );
        assert_both_reject(
            &update_of(&[vec![HAS_ORIGIN | BLOCK_SKIP, 2, 0, 3]]),
            UnknownContentType {
                content_ref: 10,
                offset: 4,
            },
        );
        for type_ref in [7, 8, 10, 11, 14, 16, 128, 255] {
            assert_both_reject(
                &update_of(&[root_item(7, b"m", &[type_ref])]),
                UnknownTypeRef {
                    type_ref,
                    offset: 8,
                },
            );
        }
        for tag in [0, 31, 115, 128, 255] {
            assert_both_reject(
                &update_of(&[root_item(8, b"m", &[1, tag])]),
                UnknownAnyTag { tag, offset: 9 },
            );
        }
        assert_both_reject(&[], Truncated { offset: 0 });
        assert_both_reject(&[0], Truncated { offset: 1 });
        assert_both_reject(&[0, 1, 1, 0x80], Truncated { offset: 3 });
        assert_both_reject(
            &update_of(&[root_item(8, b"m", &[1, 123, 0, 0, 0])]),
            Truncated { offset: 10 },
        );
    }

    /// Things yrs 0.26 reads differently from Yjs, or cannot store and read
    /// back: refused, though yrs decodes them.
    #[test]
    fn refuses_what_yrs_and_yjs_read_differently() {
        let refused = |what| Refused { what, offset: 4 };
        // ContentJSON, in yrs's layout (len + 1 strings) and in Yjs's.
        for content in [
            &[0, 1, b'1'][..],
            &[1, 1, b'1'],
            &[1, 1, b'1', 4, b'n', b'u', b'l', b'l'],
        ] {
            let u = update_of(&[root_item(2, b"m", content)]);
            assert_rejected(&u, refused(Refusal::JsonContent));
        }
        // Move content, collapsed (one ID) or not (two IDs).
        for content in [&[1, 1, 0][..], &[0, 1, 0, 1, 5], &[0x41, 1, 0]] {
            let u = update_of(&[root_item(11, b"m", content)]);
            assert_rejected(&u, refused(Refusal::MoveContent));
        }
        // A sub-document, whatever its options.
        let u = update_of(&[root_item(9, b"m", &[1, b'g', 126])]);
        assert_rejected(&u, refused(Refusal::SubdocumentContent));
        // Bit 0x10 of the info byte (Yjs would read content type 20).
        let u = update_of(&[root_item(0x14, b"t", &[2, b'h', b'i'])]);
        assert_rejected(&u, refused(Refusal::InfoBit0x10));
        // XmlHook (yrs reads no hook name), SubDoc and Undefined type refs.
        for (type_ref, what) in [
            (5, Refusal::XmlHookType),
            (9, Refusal::YrsOnlyType),
            (15, Refusal::YrsOnlyType),
        ] {
            let u = update_of(&[root_item(7, b"m", &[type_ref])]);
            assert_rejected(&u, Refused { what, offset: 8 });
            assert!(matches!(yrs_decode(&u), Ok(Ok(_))), "yrs reads {u:?}");
        }
        // Zero-length GC and Skip blocks (a GC of length 0 at clock 0 makes
        // yrs compute 0 - 1: found by the session fuzz target).
        for info in [BLOCK_GC, BLOCK_SKIP] {
            let u = update_of(&[vec![info, 0]]);
            assert_rejected(&u, refused(Refusal::EmptyGcOrSkip));
        }
        let fuzz_found = [
            0x01, 0x02, 0x2a, 0x00, 0xc4, 0x01, 0x94, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_rejected(
            &fuzz_found,
            Refused {
                what: Refusal::EmptyGcOrSkip,
                offset: 11,
            },
        );
        // What yrs itself produces for a subdocument and for a move.
        let log = refused_yrs_updates();
        assert_valid("plain insert", &log[0]);
        for (update, what) in [
            (&log[1], Refusal::MoveContent),
            (&log[2], Refusal::SubdocumentContent),
        ] {
            assert!(
                matches!(check_update_v1(update), Err(Refused { what: got, .. }) if got == what),
                "{what:?} not refused: {update:?}"
            );
            assert!(matches!(yrs_decode(update), Ok(Ok(_))), "yrs reads it");
        }
        // The fuzz regression seeds: JSON content under a root array, and a
        // sub-document under a root map key.
        let mut json = vec![1, 1, 42, 0, 2, 1, 3];
        json.extend(b"arr\x00\x03\"x\"\x00");
        assert_rejected(&json, refused(Refusal::JsonContent));
        let mut subdoc = vec![1, 1, 42, 0, 0x29, 1, 4];
        subdoc.extend(b"meta\x03sub\x01g\x76\x00\x00");
        assert_rejected(&subdoc, refused(Refusal::SubdocumentContent));
    }

    /// Found by the session fuzz target: an item of client 42 at clock 8
    /// whose origin is (42, 15) made yrs index past the client's blocks.
    #[test]
    fn refuses_references_to_later_items_of_the_same_client() {
        // Client 1 at clock 5: blocks start at byte 4.
        let item = |info: u8, refs: &[u8]| -> Vec<u8> {
            let mut block = vec![info];
            block.extend_from_slice(refs);
            block.extend([1, b'x']);
            block
        };
        let refused = |offset| Refused {
            what: Refusal::ReferenceAhead,
            offset,
        };
        for (info, refs, offset) in [
            // Origin (1, 5): the item itself.
            (HAS_ORIGIN | 4, &[1, 5][..], 5),
            // Origin (1, 9): later.
            (HAS_ORIGIN | 4, &[1, 9], 5),
            // Right origin (1, 6), after a valid origin (2, 9).
            (HAS_ORIGIN | HAS_RIGHT_ORIGIN | 4, &[2, 9, 1, 6], 7),
            // Parent item (1, 7): parent info 0, then the ID.
            (4, &[0, 1, 7], 6),
        ] {
            let u = update_at(5, &[item(info, refs)], &[0]);
            assert_rejected(&u, refused(offset));
            assert_eq!(check_stored_update_v1(&u), Err(refused(offset)));
        }
        // Earlier items of the same client, and any clock of another.
        for refs in [&[1, 4][..], &[1, 0], &[2, 100]] {
            assert_valid(
                "reference",
                &update_at(5, &[item(HAS_ORIGIN | 4, refs)], &[0]),
            );
        }
        // The second block of a section is at the first's clock plus its
        // length: "ab" at 5, then an item at 7 whose origin is (1, 6).
        let first = root_item(4, b"t", &[2, b'a', b'b']);
        assert_valid(
            "origin in the same update",
            &update_at(5, &[first.clone(), item(HAS_ORIGIN | 4, &[1, 6])], &[0]),
        );
        assert_rejected(
            &update_at(5, &[first, item(HAS_ORIGIN | 4, &[1, 7])], &[0]),
            refused(4 + 7 + 1),
        );
    }

    /// What clients may no longer send still loads from storage (written
    /// before it was refused); what makes yrs panic does not.
    #[test]
    fn stored_updates_may_hold_what_clients_may_no_longer_send() {
        let cases = [
            update_of(&[root_item(2, b"m", &[0, 1, b'1'])]),
            update_of(&[root_item(11, b"m", &[0, 1, 0, 1, 5])]),
            update_of(&[root_item(9, b"m", &[1, b'g', 126])]),
            update_of(&[root_item(0x14, b"t", &[2, b'h', b'i'])]),
            update_of(&[root_item(7, b"m", &[5])]),
            update_of(&[root_item(7, b"m", &[9])]),
            update_of(&[root_item(7, b"m", &[15])]),
        ];
        for update in &cases {
            assert!(
                matches!(check_update_v1(update), Err(Refused { .. })),
                "{update:?}"
            );
            assert_eq!(check_stored_update_v1(update), Ok(()), "{update:?}");
            assert!(matches!(yrs_decode(update), Ok(Ok(_))), "{update:?}");
        }
        // Still bounded like everything else: a JSON string count beyond
        // the input, invalid UTF-8 in a sub-document guid.
        let u = update_of(&[root_item(2, b"m", &var_bytes(1 << 31))]);
        assert_eq!(
            check_stored_update_v1(&u),
            Err(CountTooLarge {
                count: 1 << 31,
                offset: 8,
                remaining: 1,
                min_bytes_each: MIN_STRING_BYTES,
            })
        );
        let u = update_of(&[root_item(9, b"m", &[3, 0xed, 0xa0, 0x80, 126])]);
        assert_eq!(check_stored_update_v1(&u), Err(InvalidUtf8 { offset: 8 }));
        let u = update_of(&[vec![BLOCK_GC, 0]]);
        assert_eq!(
            check_stored_update_v1(&u),
            Err(Refused {
                what: Refusal::EmptyGcOrSkip,
                offset: 4
            })
        );
    }

    /// A plain array insert, a move of one of its values and a sub-document,
    /// as yrs writes them.
    fn refused_yrs_updates() -> Vec<Vec<u8>> {
        let d = doc(8);
        let (log, _sub) = record(&d);
        let arr = d.get_or_insert_array("arr");
        {
            let mut txn = d.transact_mut();
            arr.insert_range(
                &mut txn,
                0,
                [Any::Number(1.0), Any::Number(2.0), Any::Number(3.0)],
            );
        }
        {
            let mut txn = d.transact_mut();
            arr.move_to(&mut txn, 0, 3);
        }
        {
            let docs = d.get_or_insert_map("docs");
            let mut txn = d.transact_mut();
            docs.insert(&mut txn, "sub", Doc::new());
        }
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 3);
        log
    }

    /// Oddities yrs 0.26 reads the same way as Yjs, or that Yjs never
    /// writes but reads: accepted.
    #[test]
    fn accepts_odd_but_compatible_updates() {
        assert_valid("element", &update_of(&[root_item(7, b"m", &[3, 1, b'p'])]));
        for type_ref in [0, 1, 2, 4, 6] {
            let u = update_of(&[root_item(7, b"m", &[type_ref])]);
            assert_valid("type ref", &u);
        }
        // Binary content, which yrs never produces itself.
        assert_valid("binary", &update_of(&[root_item(3, b"m", &[3, 0, 255, 7])]));
        // Nested parent by ID, parent info other than 1.
        let mut block = vec![4];
        var(&mut block, 7);
        block.extend([5, 9, 1, b'x']);
        assert_valid("id parent", &update_of(&[block]));
        // Zero-length content is dropped without advancing the clock.
        let empty_string = root_item(4, b"t", &[0]);
        let no_deletion = root_item(1, b"t", &[0]);
        let no_values = root_item(8, b"t", &[0]);
        assert_valid(
            "empty blocks",
            &update_at(
                u64::from(u32::MAX),
                &[empty_string, no_deletion, no_values],
                &[0],
            ),
        );
        // One client in two sections; a zero-length delete range;
        // non-canonical (padded) varints.
        let block = root_item(4, b"t", &[1, b'a']);
        let mut u = vec![2, 1, 1, 0];
        u.extend(&block);
        u.extend([1, 1, 1]);
        u.extend(&block);
        // Delete set: client 1, ranges (5 padded to three bytes, 3), (7, 0).
        u.extend([1, 1, 2, 0x85, 0x80, 0x00, 3, 7, 0]);
        assert_valid("odd but accepted", &u);
    }

    // ------------------------------------------------------------------ fuzz

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, update: &mut Vec<u8>) {
        const INTERESTING: [u8; 12] = [0, 1, 2, 7, 10, 11, 0x7f, 0x80, 0xc0, 0xed, 0xfe, 0xff];
        for _ in 0..1 + rng.below(3) {
            let len = update.len();
            let at = rng.below(len + 1);
            match rng.below(6) {
                0 if at < len => update[at] ^= 1 << rng.below(8),
                1 if at < len => update[at] = INTERESTING[rng.below(INTERESTING.len())],
                2 if at < len => update[at] = rng.next() as u8,
                3 => update.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                4 if at < len => {
                    update.remove(at);
                }
                _ => {
                    let from = rng.below(len + 1);
                    let to = (from + rng.below(8)).min(len);
                    let chunk = update[from..to].to_vec();
                    update.splice(at..at, chunk);
                }
            }
        }
    }

    /// `FUZZ_SEED` / `FUZZ_ROUNDS` (mutants per seed update) allow longer
    /// runs, e.g. `FUZZ_ROUNDS=20000` (1.2M mutants, ~5 s).
    fn env_or(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    #[test]
    fn fuzzed_updates_that_pass_the_check_decode_without_panicking() {
        let started = Instant::now();
        let corpus = corpus();
        let step = (corpus.len() / 50).max(1);
        let refused = refused_yrs_updates();
        let mut seeds: Vec<&Vec<u8>> = corpus.iter().step_by(step).map(|(_, u)| u).collect();
        assert!(seeds.len() >= 40, "{} seeds", seeds.len());
        // What only storage may hold (the stored check accepts more).
        seeds.extend(&refused[1..]);
        let mut rng = Rng(env_or("FUZZ_SEED", 0x9e37_79b9_7f4a_7c15));
        let rounds = env_or("FUZZ_ROUNDS", 300);
        let (mut accepted, mut rejected) = (0, 0);
        for seed in &seeds {
            for _ in 0..rounds {
                let mut mutant = (*seed).clone();
                mutate(&mut rng, &mut mutant);
                // Everything the client check accepts, the stored check does.
                if check_stored_update_v1(&mutant).is_err() {
                    assert!(check_update_v1(&mutant).is_err(), "{mutant:?}");
                    // Never hand these to yrs: they may abort the process.
                    rejected += 1;
                    continue;
                }
                accepted += 1;
                if yrs_decode(&mutant).is_err() {
                    panic!("yrs panicked on an accepted mutant: {mutant:?}");
                }
            }
        }
        eprintln!(
            "{accepted} mutants accepted and decoded, {rejected} rejected, in {:?}",
            started.elapsed()
        );
        assert!(accepted >= 200, "only {accepted} mutants accepted");
        assert!(rejected >= 1000, "only {rejected} mutants rejected");
    }
}
