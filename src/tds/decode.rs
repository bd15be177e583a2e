//! The reply to a `SELECT` (MS-TDS 2.2.7 token stream) decoded from the packet bytes in place,
//! values handed to a [`RowSink`] without an owned value per cell. tiberius' row API decodes
//! every value through an async read and allocates every string; this decoder is the reason
//! perfcopy's SQL Server source reads several times faster per connection (see the README).
//!
//! Scope: one result set of the column types DBATools tables have (integers, BIT,
//! DECIMAL/NUMERIC, DATETIME2, DATETIME, SMALLDATETIME, NVARCHAR/NCHAR including MAX,
//! BINARY/VARBINARY including MAX, VARCHAR/CHAR including MAX in their collation's code page
//! (any code page `encoding_rs` has, UTF-8 collations included; another collation is
//! [`DecodeError::Unsupported`] naming its LCID and sort ID), XML and SQL_VARIANT), plus
//! every other token SQL Server sends in the reply to an RPC at TDS 7.4 with the features
//! tiberius negotiates (DONE*, RETURNSTATUS, RETURNVALUE, ERROR, INFO, ENVCHANGE, ORDER,
//! TABNAME, COLINFO, SESSIONSTATE). A column of another type is [`DecodeError::Unsupported`], so
//! the caller can read with tiberius instead.
//!
//! A reply is whole only when the server says so (MS-TDS 2.2.7.6-8), because a page with fewer
//! rows than asked for ends a keyset read: [`ReplyDecoder::finish`] fails unless the reply ends
//! with a DONE/DONEPROC without DONE_MORE, no DONE* carries DONE_ERROR, DONE_SRVERROR or
//! DONE_ATTN, and the DONE_COUNT of the DONE/DONEINPROC ending the result set (the DONEINPROC
//! in an RPC reply; the DONEPROC after it carries no count, MS-TDS 4.9) equals the rows decoded.
//! The first ERROR token is the error of the reply, before any later flag or malformed byte.

use tiberius::error::TokenError;

/// How a column's values are laid out on the wire (from COLMETADATA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// INT1/INT2/INT4/INT8 (NOT NULL, no length byte), by width in bytes.
    FixedInt(u8),
    /// INTN: length byte 0 (NULL) or the width.
    IntN,
    /// BIT (NOT NULL).
    Bit,
    /// BITN.
    BitN,
    /// DECIMALN/NUMERICN with precision and scale.
    Decimal { precision: u8, scale: u8 },
    /// DATETIME2N with its scale (digits of the second).
    DateTime2 { scale: u8 },
    /// DATETIME (NOT NULL, 8 bytes).
    DateTime,
    /// SMALLDATETIME (NOT NULL, 4 bytes).
    SmallDateTime,
    /// DATETIMN: length byte 0, 4 (SMALLDATETIME) or 8 (DATETIME).
    DateTimeN,
    /// NVARCHAR(n)/NCHAR(n): 2-byte length in bytes, 0xFFFF for NULL, UTF-16LE.
    NVarChar { max_bytes: u16 },
    /// NVARCHAR(MAX): partially length-prefixed chunks (PLP).
    NVarCharMax,
    /// BIGBINARY(n) (0xAD): 2-byte length, 0xFFFF for NULL.
    Binary { len: u16 },
    /// BIGVARBINARY(n) (0xA5), n < MAX: 2-byte length, 0xFFFF for NULL.
    VarBinary { max: u16 },
    /// VARBINARY(MAX): PLP.
    VarBinaryMax,
    /// BIGVARCHAR/BIGCHAR(n) (0xA7/0xAF): 2-byte length, 0xFFFF for NULL, bytes in the code page
    /// of the column's collation.
    VarChar { max_bytes: u16, code_page: CodePage },
    /// VARCHAR(MAX): PLP in the column's code page.
    VarCharMax { code_page: CodePage },
    /// XML (0xF1): PLP UTF-16LE (a leading byte-order mark is dropped).
    Xml,
    /// SQL_VARIANT (0x62): 4-byte length (0 = NULL), then base type, property count, properties
    /// and value (MS-TDS 2.2.5.5.4).
    Variant,
}

/// The code page of a VARCHAR column, from its collation.
pub type CodePage = &'static encoding_rs::Encoding;

/// The collation flag of UTF-8 collations (`fUTF8`, bit 6 of ColFlags: bit 26 of the 4-byte
/// LCID/flags/version word, MS-TDS 2.2.5.1.2).
const COLLATION_UTF8: u32 = 1 << 26;

/// The code page of a 5-byte TDS collation (LCID/flags/version, sort ID): UTF-8 for a `_UTF8`
/// collation, else the sort ID's (SQL collations) or the LCID's (Windows collations). `Err`
/// names the collation when `encoding_rs` has no such code page.
pub fn collation_code_page(collation: [u8; 5]) -> Result<CodePage, String> {
    let info = u32::from_le_bytes([collation[0], collation[1], collation[2], collation[3]]);
    if info & COLLATION_UTF8 != 0 {
        return Ok(encoding_rs::UTF_8);
    }
    tiberius::Collation::new(info, collation[4])
        .encoding()
        .map_err(|_| format!("a collation of LCID 0x{:05X} and sort ID {} whose code page perfcopy cannot convert", info & 0xF_FFFF, collation[4]))
}

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireColumn {
    pub name: String,
    pub wire: Wire,
    pub nullable: bool,
}

/// One decoded value, borrowed from the reply bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Bit(bool),
    /// Unscaled value and its scale.
    Decimal(i128, u8),
    /// Days since 0001-01-01 and time of day in units of 10^-scale s.
    DateTime2 { days: i64, increments: i64, scale: u8 },
    /// Unix milliseconds (DATETIME and SMALLDATETIME).
    UnixMs(i64),
    /// UTF-16LE bytes.
    Utf16(&'a [u8]),
    /// BINARY/VARBINARY bytes.
    Bytes(&'a [u8]),
    /// VARCHAR bytes in a code page.
    CodePage(&'a [u8], CodePage),
    /// A SQL_VARIANT's bytes: base type, property count, properties, value.
    Variant(&'a [u8]),
}

/// Where decoded rows go: one call per value, typed by how the value came on the wire (so a
/// sink dispatches once per value, on its own column, instead of on a [`Value`] as well).
pub trait RowSink {
    /// The result's columns, before any row; `Err` says why the sink cannot take them.
    fn columns(&mut self, columns: &[WireColumn]) -> Result<(), String>;
    /// NULL in column `col` of the current row (columns arrive in order, every row whole).
    fn null(&mut self, col: usize) -> Result<(), String>;
    /// An integer (TINYINT, SMALLINT, INT, BIGINT).
    fn int(&mut self, col: usize, v: i64) -> Result<(), String>;
    /// A BIT.
    fn bit(&mut self, col: usize, v: bool) -> Result<(), String>;
    /// A DECIMAL/NUMERIC: unscaled value and its scale.
    fn decimal(&mut self, col: usize, unscaled: i128, scale: u8) -> Result<(), String>;
    /// A DATETIME2: days since 0001-01-01, time of day in units of 10^-scale s.
    fn datetime2(&mut self, col: usize, days: i64, increments: i64, scale: u8) -> Result<(), String>;
    /// A DATETIME or SMALLDATETIME as Unix milliseconds.
    fn unix_ms(&mut self, col: usize, ms: i64) -> Result<(), String>;
    /// NVARCHAR/NCHAR (and XML) text as UTF-16LE bytes.
    fn utf16(&mut self, col: usize, raw: &[u8]) -> Result<(), String>;
    /// BINARY/VARBINARY bytes.
    fn bytes(&mut self, col: usize, raw: &[u8]) -> Result<(), String> {
        let _ = raw;
        Err(format!("column {}: binary values are not taken here", col + 1))
    }
    /// VARCHAR/CHAR text as bytes in the column's code page.
    fn code_page_text(&mut self, col: usize, raw: &[u8], code_page: CodePage) -> Result<(), String> {
        let _ = (raw, code_page);
        Err(format!("column {}: code-page text is not taken here", col + 1))
    }
    /// A SQL_VARIANT: base type, property count, properties, value (see [`crate::tds::variant`]).
    fn variant(&mut self, col: usize, raw: &[u8]) -> Result<(), String> {
        let _ = raw;
        Err(format!("column {}: SQL_VARIANT values are not taken here", col + 1))
    }
}

/// Why a reply could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The result has a column type (or a second result set) this decoder does not read.
    #[error("not readable by perfcopy's row decoder: {0}")]
    Unsupported(String),
    /// The bytes break the protocol.
    #[error("malformed TDS reply: {0}")]
    Protocol(String),
    /// The sink refused a value (column and reason).
    #[error("{0}")]
    Value(String),
    /// The server reported an error.
    #[error("{0}")]
    Server(TokenError),
    /// The bytes are well-formed but the server did not finish the reply: a DONE flagged an
    /// error or a cancel without an ERROR token, a DONE_COUNT differs from the rows sent, or the
    /// final DONE is missing.
    #[error("incomplete TDS reply: {0}")]
    Incomplete(String),
}

/// DONE status bits (MS-TDS 2.2.7.6).
const DONE_MORE: u16 = 0x0001;
const DONE_ERROR: u16 = 0x0002;
const DONE_COUNT: u16 = 0x0010;
const DONE_ATTN: u16 = 0x0020;
const DONE_SRVERROR: u16 = 0x0100;

/// Token-stream decoder for one reply. Feed it the reply's bytes as they arrive
/// ([`ReplyDecoder::feed`]); tokens cut off at the end of the bytes are decoded on the next feed.
#[derive(Debug, Default)]
pub struct ReplyDecoder {
    columns: Option<Vec<WireColumn>>,
    /// Longest possible ROW token, when no column is PLP: rows that surely fit in the bytes
    /// at hand are decoded in one pass, others are measured first.
    max_row: Option<usize>,
    rows: u64,
    /// `rows` when the open result set's COLMETADATA came; `None` once a DONE/DONEINPROC ended it.
    set_start: Option<u64>,
    /// The first ERROR token.
    error: Option<TokenError>,
    /// The first DONE* that says the reply is not whole (flags or count), for [`ReplyDecoder::finish`].
    broken: Option<String>,
    /// A DONE/DONEPROC without DONE_MORE came: the reply is over.
    ended: bool,
    scratch: Vec<u8>,
    /// The start of a token cut off at the end of the previous packet ([`ReplyDecoder::packet`]).
    pending: Vec<u8>,
    /// Bytes of the reply consumed by earlier feeds (for positions in messages).
    offset: u64,
}

/// Bytes of a packet appended at a time to a token cut off at the previous packet's end.
const STITCH_BYTES: usize = 4096;

/// A bounds-checked reader; `None` means "the bytes end here".
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.p..self.p.checked_add(n)?)?;
        self.p += n;
        Some(s)
    }
    #[inline]
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.p)?;
        self.p += 1;
        Some(v)
    }
    #[inline]
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    #[inline]
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    #[inline]
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    }
    /// Moves past UTF-16 text with a 1-byte (B_VARCHAR) or 2-byte (US_VARCHAR) character count.
    fn skip_text(&mut self, wide_count: bool) -> Option<()> {
        let n = if wide_count { self.u16()? as usize } else { self.u8()? as usize };
        self.take(2 * n).map(|_| ())
    }
    /// UTF-16 text with a 1-byte (B_VARCHAR) or 2-byte (US_VARCHAR) character count.
    fn text(&mut self, wide_count: bool) -> Option<String> {
        let n = if wide_count { self.u16()? as usize } else { self.u8()? as usize };
        let raw = self.take(2 * n)?;
        Some(char::decode_utf16(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]))).map(|c| c.unwrap_or('\u{FFFD}')).collect())
    }
}

/// Little-endian unsigned integer of up to 16 bytes (`None` if longer).
#[inline]
fn le_uint(s: &[u8]) -> Option<u128> {
    let mut b = [0u8; 16];
    b.get_mut(..s.len())?.copy_from_slice(s);
    Some(u128::from_le_bytes(b))
}

/// Little-endian unsigned integer of up to 8 bytes (`None` if longer).
#[inline]
fn le_u64(s: &[u8]) -> Option<u64> {
    let mut b = [0u8; 8];
    b.get_mut(..s.len())?.copy_from_slice(s);
    Some(u64::from_le_bytes(b))
}

/// Little-endian signed integer of 1, 2, 4 or 8 bytes (TINYINT is unsigned).
#[inline]
fn le_int(s: &[u8]) -> Option<i64> {
    Some(match s.len() {
        1 => s[0] as i64,
        2 => i16::from_le_bytes([s[0], s[1]]) as i64,
        4 => i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64,
        8 => i64::from_le_bytes(s.try_into().ok()?),
        _ => return None,
    })
}

fn datetime_value(s: &[u8]) -> Option<i64> {
    Some(match s.len() {
        8 => {
            let days = i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64;
            let ticks = u32::from_le_bytes([s[4], s[5], s[6], s[7]]) as i64;
            super::datetime_ms(days, ticks)
        }
        4 => {
            let days = u16::from_le_bytes([s[0], s[1]]) as i64;
            let minutes = u16::from_le_bytes([s[2], s[3]]) as i64;
            super::datetime_ms(days, 0) + minutes * 60_000
        }
        _ => return None,
    })
}

/// Bytes of the time part of a DATETIME2 of `scale`.
fn time_bytes(scale: u8) -> usize {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

const PLP_NULL: u64 = u64::MAX;

impl ReplyDecoder {
    /// A decoder for a new reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows decoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Decodes the whole tokens at the start of `buf` into `sink`; returns how many bytes
    /// were consumed (the rest is the start of a token, to be fed again with more bytes).
    /// After an ERROR token, any later failure is reported as that server error.
    pub fn feed<S: RowSink>(&mut self, buf: &[u8], sink: &mut S) -> Result<usize, DecodeError> {
        match self.tokens(buf, sink) {
            Ok(used) => {
                self.offset += used as u64;
                Ok(used)
            }
            Err(e) => Err(match self.error.take() {
                Some(server) => DecodeError::Server(server),
                None => e,
            }),
        }
    }

    fn tokens<S: RowSink>(&mut self, buf: &[u8], sink: &mut S) -> Result<usize, DecodeError> {
        let mut done = 0;
        loop {
            let mut c = Cur { b: buf, p: done };
            let Some(token) = c.u8() else { return Ok(done) };
            if self.ended {
                return Err(DecodeError::Protocol(format!("token 0x{token:02X} after the final DONE, at byte {} of the reply", self.offset + done as u64)));
            }
            let complete = match token {
                0xD1 | 0xD2 => self.row(&mut c, token == 0xD2, sink)?,
                0x81 => self.colmetadata(&mut c, sink)?,
                0xFD..=0xFF => match c.take(12) {
                    Some(body) => {
                        self.done_token(token, body);
                        true
                    }
                    None => false,
                },
                0x79 => c.take(4).is_some(),
                0xAA => self.error_token(&mut c)?,
                0xAC => match return_value(&mut c) {
                    Some(r) => {
                        r?;
                        true
                    }
                    None => false,
                },
                // INFO, ENVCHANGE, ORDER, TABNAME, COLINFO: skipped by their length.
                0xAB | 0xE3 | 0xA9 | 0xA4 | 0xA5 => c.u16().and_then(|n| c.take(n as usize)).is_some(),
                // SESSIONSTATE has a 4-byte length.
                0xE4 => c.u32().and_then(|n| c.take(n as usize)).is_some(),
                t => return Err(DecodeError::Protocol(format!("unexpected token 0x{t:02X} at byte {} of the reply", self.offset + done as u64))),
            };
            if !complete {
                return Ok(done);
            }
            done = c.p;
        }
    }

    /// A whole DONE (0xFD), DONEPROC (0xFE) or DONEINPROC (0xFF) body: Status, CurCmd, DoneRowCount.
    fn done_token(&mut self, token: u8, body: &[u8]) {
        let status = u16::from_le_bytes([body[0], body[1]]);
        let count = le_u64(&body[4..12]).unwrap_or(0);
        let name = match token {
            0xFD => "DONE",
            0xFE => "DONEPROC",
            _ => "DONEINPROC",
        };
        if self.broken.is_none() && status & (DONE_ERROR | DONE_SRVERROR | DONE_ATTN) != 0 {
            let why = if status & DONE_ATTN != 0 {
                "DONE_ATTN: the request was cancelled"
            } else if status & DONE_SRVERROR != 0 {
                "DONE_SRVERROR: a severe error, the result set is to be discarded"
            } else {
                "DONE_ERROR: the statement failed"
            };
            self.broken = Some(format!("{name} status 0x{status:04X} ({why}), without an ERROR token, after {} rows", self.rows));
        }
        // The result set's count is on the DONE (batch) or DONEINPROC (RPC) that ends it; a
        // DONEPROC ends the procedure, not a result set.
        if token != 0xFE {
            if let Some(start) = self.set_start.take() {
                let got = self.rows - start;
                if status & DONE_COUNT != 0 && count != got && self.broken.is_none() {
                    self.broken = Some(format!("{name} says the result set has {count} rows (DONE_COUNT), {got} were decoded"));
                }
            }
        }
        // A DONEINPROC is always followed by a DONEPROC or DONEINPROC (MS-TDS 2.2.7.7).
        if token != 0xFF && status & DONE_MORE == 0 {
            self.ended = true;
        }
    }

    /// Decodes one packet's payload of the reply: a token cut off at the end of the previous
    /// packet is completed from the start of this one (copying only the bytes it needs), the
    /// rest is decoded in place, and a token cut off at the end of this one is kept for the next.
    pub fn packet<S: RowSink>(&mut self, packet: &[u8], sink: &mut S) -> Result<(), DecodeError> {
        let mut off = 0;
        while !self.pending.is_empty() && off < packet.len() {
            let old = self.pending.len();
            let take = (packet.len() - off).min(STITCH_BYTES);
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(&packet[off..off + take]);
            let used = self.feed(&pending, sink)?;
            if used >= old {
                // The cut token is whole: go on in the packet itself.
                off += used - old;
                pending.clear();
            } else {
                pending.drain(..used);
                off += take;
            }
            self.pending = pending;
        }
        if self.pending.is_empty() && off < packet.len() {
            let used = self.feed(&packet[off..], sink)?;
            self.pending.extend_from_slice(&packet[off + used..]);
        }
        Ok(())
    }

    /// The rows of a whole reply, or why it is not one: the first ERROR token, else bytes cut
    /// inside a token, else a DONE* that flags an error or a cancel or whose count differs from
    /// the rows, else a missing final DONE. Call after the last byte was fed.
    pub fn finish(self) -> Result<u64, DecodeError> {
        if let Some(e) = self.error {
            return Err(DecodeError::Server(e));
        }
        if !self.pending.is_empty() {
            return Err(DecodeError::Protocol(format!("the reply ends inside a token ({} bytes left)", self.pending.len())));
        }
        if let Some(why) = self.broken {
            return Err(DecodeError::Incomplete(why));
        }
        if !self.ended {
            return Err(DecodeError::Incomplete(format!("the reply ends after {} rows without its final DONE (one without DONE_MORE)", self.rows)));
        }
        Ok(self.rows)
    }

    fn error_token(&mut self, c: &mut Cur<'_>) -> Result<bool, DecodeError> {
        let Some(len) = c.u16() else { return Ok(false) };
        let Some(body) = c.take(len as usize) else { return Ok(false) };
        let mut b = Cur { b: body, p: 0 };
        let parsed = (|| {
            let code = b.u32()?;
            let state = b.u8()?;
            let class = b.u8()?;
            let message = b.text(true)?;
            let server = b.text(false)?;
            let procedure = b.text(false)?;
            let line = b.u32()?;
            Some(TokenError::new(code, state, class, message, server, procedure, line))
        })();
        let e = parsed.ok_or_else(|| DecodeError::Protocol("ERROR token shorter than its fields".into()))?;
        self.error.get_or_insert(e);
        Ok(true)
    }

    fn colmetadata<S: RowSink>(&mut self, c: &mut Cur<'_>, sink: &mut S) -> Result<bool, DecodeError> {
        let Some(count) = c.u16() else { return Ok(false) };
        if count == 0xFFFF {
            return Ok(true);
        }
        if self.columns.is_some() {
            return Err(DecodeError::Unsupported("a second result set".into()));
        }
        let mut cols = Vec::with_capacity(count as usize);
        for i in 0..count {
            // UserType (4), Flags (2), TYPE_INFO, ColName.
            let Some(_user_type) = c.u32() else { return Ok(false) };
            let Some(flags) = c.u16() else { return Ok(false) };
            let Some(ty) = c.u8() else { return Ok(false) };
            let wire = match ty {
                0x30 => Wire::FixedInt(1),
                0x34 => Wire::FixedInt(2),
                0x38 => Wire::FixedInt(4),
                0x7F => Wire::FixedInt(8),
                0x32 => Wire::Bit,
                0x3D => Wire::DateTime,
                0x3A => Wire::SmallDateTime,
                0x26 | 0x68 | 0x6F => {
                    let Some(len) = c.u8() else { return Ok(false) };
                    match (ty, len) {
                        (0x26, 1 | 2 | 4 | 8) => Wire::IntN,
                        (0x68, 1) => Wire::BitN,
                        (0x6F, 4 | 8) => Wire::DateTimeN,
                        _ => return Err(DecodeError::Protocol(format!("column {} has type 0x{ty:02X} of length {len}", i + 1))),
                    }
                }
                0x6A | 0x6C => {
                    let (Some(_len), Some(precision), Some(scale)) = (c.u8(), c.u8(), c.u8()) else { return Ok(false) };
                    if !(1..=38).contains(&precision) || scale > precision {
                        return Err(DecodeError::Protocol(format!("column {} is DECIMAL({precision},{scale})", i + 1)));
                    }
                    Wire::Decimal { precision, scale }
                }
                0x2A => {
                    let Some(scale) = c.u8() else { return Ok(false) };
                    if scale > 7 {
                        return Err(DecodeError::Protocol(format!("column {} is DATETIME2({scale})", i + 1)));
                    }
                    Wire::DateTime2 { scale }
                }
                0xE7 | 0xEF => {
                    let Some(max) = c.u16() else { return Ok(false) };
                    // Collation (5 bytes): irrelevant to UTF-16 text.
                    if c.take(5).is_none() {
                        return Ok(false);
                    }
                    if max == 0xFFFF {
                        Wire::NVarCharMax
                    } else {
                        Wire::NVarChar { max_bytes: max }
                    }
                }
                0xA7 | 0xAF => {
                    let Some(max) = c.u16() else { return Ok(false) };
                    let Some(collation) = c.take(5) else { return Ok(false) };
                    let collation: [u8; 5] = [collation[0], collation[1], collation[2], collation[3], collation[4]];
                    let code_page = match collation_code_page(collation) {
                        Ok(cp) => cp,
                        Err(why) => {
                            let Some(name) = c.text(false) else { return Ok(false) };
                            return Err(DecodeError::Unsupported(format!("column '{name}' is VARCHAR/CHAR in {why}")));
                        }
                    };
                    if max == 0xFFFF {
                        Wire::VarCharMax { code_page }
                    } else {
                        Wire::VarChar { max_bytes: max, code_page }
                    }
                }
                0xAD | 0xA5 => {
                    let Some(max) = c.u16() else { return Ok(false) };
                    match (ty, max) {
                        (0xA5, 0xFFFF) => Wire::VarBinaryMax,
                        (0xA5, max) => Wire::VarBinary { max },
                        (_, 0xFFFF) => return Err(DecodeError::Protocol(format!("column {} is BINARY of length 0xFFFF", i + 1))),
                        (_, len) => Wire::Binary { len },
                    }
                }
                // XML: schema-present byte, then (if 1) database, owner, collection names.
                0xF1 => {
                    let Some(schema) = c.u8() else { return Ok(false) };
                    if schema != 0 && (c.skip_text(false).is_none() || c.skip_text(false).is_none() || c.skip_text(true).is_none()) {
                        return Ok(false);
                    }
                    Wire::Xml
                }
                0x62 => {
                    if c.take(4).is_none() {
                        return Ok(false);
                    }
                    Wire::Variant
                }
                t => return Err(DecodeError::Unsupported(format!("column {} has TDS type 0x{t:02X}", i + 1))),
            };
            let Some(name) = c.text(false) else { return Ok(false) };
            cols.push(WireColumn { name, wire, nullable: flags & 1 == 1 });
        }
        sink.columns(&cols).map_err(DecodeError::Unsupported)?;
        self.set_start = Some(self.rows);
        self.max_row = cols
            .iter()
            .map(|col| match col.wire {
                Wire::FixedInt(w) => Some(w as usize),
                Wire::IntN => Some(9),
                Wire::Bit | Wire::BitN => Some(2),
                Wire::Decimal { .. } => Some(18),
                Wire::DateTime2 { .. } => Some(9),
                Wire::DateTime | Wire::SmallDateTime | Wire::DateTimeN => Some(9),
                Wire::NVarChar { max_bytes } | Wire::VarChar { max_bytes, .. } => Some(2 + max_bytes as usize),
                Wire::Binary { len: max } | Wire::VarBinary { max } => Some(2 + max as usize),
                Wire::Variant => Some(4 + 8016),
                Wire::NVarCharMax | Wire::VarBinaryMax | Wire::VarCharMax { .. } | Wire::Xml => None,
            })
            .sum::<Option<usize>>()
            .map(|n| n + cols.len().div_ceil(8));
        self.columns = Some(cols);
        Ok(true)
    }

    fn row<S: RowSink>(&mut self, c: &mut Cur<'_>, nbc: bool, sink: &mut S) -> Result<bool, DecodeError> {
        let cols = self.columns.take().ok_or_else(|| DecodeError::Protocol("row before COLMETADATA".into()))?;
        let r = self.row_with(&cols, c, nbc, sink);
        self.columns = Some(cols);
        r
    }

    fn row_with<S: RowSink>(&mut self, cols: &[WireColumn], c: &mut Cur<'_>, nbc: bool, sink: &mut S) -> Result<bool, DecodeError> {
        let start = c.p;
        let fits = self.max_row.is_some_and(|m| c.b.len() - start >= m);
        if !fits {
            // Measure first: a row is handed to the sink whole or not at all.
            if skip_row(cols, c, nbc).is_none() {
                return Ok(false);
            }
            c.p = start;
        }
        let bitmap = if nbc { c.take(cols.len().div_ceil(8)) } else { Some(&[][..]) };
        let Some(bitmap) = bitmap else { return Ok(false) };
        for (i, col) in cols.iter().enumerate() {
            let is_null = nbc && bitmap[i / 8] & (1 << (i % 8)) != 0;
            let put = if is_null { Some(sink.null(i)) } else { put(col.wire, c, &mut self.scratch, sink, i) };
            match put {
                Some(Ok(())) => {}
                Some(Err(m)) => return Err(DecodeError::Value(format!("column {} ('{}'): {m}", i + 1, col.name))),
                None => return Err(DecodeError::Protocol(format!("row {} is longer than its columns allow (column {})", self.rows + 1, col.name))),
            }
        }
        self.rows += 1;
        Ok(true)
    }
}

/// The value at the cursor handed to `sink` as column `i`: `None` when the bytes end first or a
/// length is impossible, else the sink's answer. PLP text is gathered in `scratch`. Inlined so
/// that each wire type's arm calls its sink method directly.
#[inline(always)]
fn put<S: RowSink>(wire: Wire, c: &mut Cur<'_>, scratch: &mut Vec<u8>, sink: &mut S, i: usize) -> Option<Result<(), String>> {
    Some(match wire {
        Wire::FixedInt(w) => sink.int(i, le_int(c.take(w as usize)?)?),
        Wire::IntN => match c.u8()? {
            0 => sink.null(i),
            n => sink.int(i, le_int(c.take(n as usize)?)?),
        },
        Wire::Bit => sink.bit(i, c.u8()? != 0),
        Wire::BitN => match c.u8()? {
            0 => sink.null(i),
            n => sink.bit(i, c.take(n as usize)?[0] != 0),
        },
        Wire::Decimal { scale, .. } => match c.u8()? {
            0 => sink.null(i),
            n => {
                let s = c.take(n as usize)?;
                let mag = i128::try_from(le_uint(s.get(1..)?)?).ok()?;
                sink.decimal(i, if s[0] == 0 { -mag } else { mag }, scale)
            }
        },
        Wire::DateTime2 { scale } => match c.u8()? {
            0 => sink.null(i),
            n => {
                let s = c.take(n as usize)?;
                let tb = time_bytes(scale);
                if s.len() != tb + 3 {
                    return None;
                }
                sink.datetime2(i, le_u64(&s[tb..])? as i64, le_u64(&s[..tb])? as i64, scale)
            }
        },
        Wire::DateTime => sink.unix_ms(i, datetime_value(c.take(8)?)?),
        Wire::SmallDateTime => sink.unix_ms(i, datetime_value(c.take(4)?)?),
        Wire::DateTimeN => match c.u8()? {
            0 => sink.null(i),
            n => sink.unix_ms(i, datetime_value(c.take(n as usize)?)?),
        },
        Wire::NVarChar { .. } => match c.u16()? {
            0xFFFF => sink.null(i),
            n => sink.utf16(i, c.take(n as usize)?),
        },
        Wire::NVarCharMax => match plp(c, scratch)? {
            None => sink.null(i),
            Some(v) => sink.utf16(i, v),
        },
        Wire::Binary { .. } | Wire::VarBinary { .. } => match c.u16()? {
            0xFFFF => sink.null(i),
            n => sink.bytes(i, c.take(n as usize)?),
        },
        Wire::VarBinaryMax => match plp(c, scratch)? {
            None => sink.null(i),
            Some(v) => sink.bytes(i, v),
        },
        Wire::VarChar { code_page, .. } => match c.u16()? {
            0xFFFF => sink.null(i),
            n => sink.code_page_text(i, c.take(n as usize)?, code_page),
        },
        Wire::VarCharMax { code_page } => match plp(c, scratch)? {
            None => sink.null(i),
            Some(v) => sink.code_page_text(i, v, code_page),
        },
        Wire::Xml => match plp(c, scratch)? {
            None => sink.null(i),
            Some(v) => sink.utf16(i, v.strip_prefix(&[0xFF, 0xFE][..]).unwrap_or(v)),
        },
        Wire::Variant => match c.u32()? {
            0 => sink.null(i),
            n => sink.variant(i, c.take(n as usize)?),
        },
    })
}

/// A PLP value at the cursor: `Some(None)` for NULL, else its chunks gathered in `scratch`;
/// `None` when the bytes end first.
#[inline]
fn plp<'s>(c: &mut Cur<'_>, scratch: &'s mut Vec<u8>) -> Option<Option<&'s [u8]>> {
    if c.u64()? == PLP_NULL {
        return Some(None);
    }
    scratch.clear();
    loop {
        let n = c.u32()?;
        if n == 0 {
            break;
        }
        scratch.extend_from_slice(c.take(n as usize)?);
    }
    Some(Some(scratch))
}

/// How a value of some TYPE_INFO is laid out on the wire, enough to step over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueLen {
    /// A fixed-length type of this many bytes.
    Fixed(usize),
    /// BYTELEN: a 1-byte length (0 = NULL).
    Byte,
    /// USHORTLEN: a 2-byte length (0xFFFF = NULL).
    UShort,
    /// PLP chunks: (MAX) types, XML, UDT.
    Plp,
    /// LONGLEN: a 4-byte length (SQL_VARIANT; 0 = NULL).
    Long,
    /// TEXT/NTEXT/IMAGE: text pointer (0 = NULL), timestamp, 4-byte length.
    TextPtr,
}

/// Reads one TYPE_INFO (MS-TDS 2.2.5.6) of any type SQL Server sends: `None` when the bytes end
/// first, `Some(Err(type byte))` for a type that does not exist.
fn type_info(c: &mut Cur<'_>) -> Option<Result<ValueLen, u8>> {
    let ty = c.u8()?;
    Some(Ok(match ty {
        // FIXEDLENTYPE: NULL, INT1, BIT, INT2, INT4, DATETIM4, FLT4, MONEY4, MONEY, DATETIME, FLT8, INT8.
        0x1F => ValueLen::Fixed(0),
        0x30 | 0x32 => ValueLen::Fixed(1),
        0x34 => ValueLen::Fixed(2),
        0x38 | 0x3A | 0x3B | 0x7A => ValueLen::Fixed(4),
        0x3C | 0x3D | 0x3E | 0x7F => ValueLen::Fixed(8),
        // BYTELEN with a maximum length byte: GUID, INTN, BITN, FLTN, MONEYN, DATETIMN and the
        // legacy CHAR, VARCHAR, BINARY, VARBINARY.
        0x24 | 0x26 | 0x68 | 0x6D | 0x6E | 0x6F | 0x2F | 0x27 | 0x2D | 0x25 => {
            c.take(1)?;
            ValueLen::Byte
        }
        // DECIMAL/NUMERIC (legacy and N): length, precision, scale.
        0x37 | 0x3F | 0x6A | 0x6C => {
            c.take(3)?;
            ValueLen::Byte
        }
        // DATEN has no type info; TIMEN, DATETIME2N, DATETIMEOFFSETN have a scale.
        0x28 => ValueLen::Byte,
        0x29 | 0x2A | 0x2B => {
            c.take(1)?;
            ValueLen::Byte
        }
        // BIGVARBINARY, BIGBINARY: maximum length (0xFFFF = MAX, sent as PLP).
        0xA5 | 0xAD => match c.u16()? {
            0xFFFF => ValueLen::Plp,
            _ => ValueLen::UShort,
        },
        // BIGVARCHAR, BIGCHAR, NVARCHAR, NCHAR: maximum length and a 5-byte collation.
        0xA7 | 0xAF | 0xE7 | 0xEF => {
            let max = c.u16()?;
            c.take(5)?;
            if max == 0xFFFF {
                ValueLen::Plp
            } else {
                ValueLen::UShort
            }
        }
        // XML: a schema flag, then database, owner (B_VARCHAR) and collection (US_VARCHAR).
        0xF1 => {
            if c.u8()? != 0 {
                c.skip_text(false)?;
                c.skip_text(false)?;
                c.skip_text(true)?;
            }
            ValueLen::Plp
        }
        // UDT: maximum length, database, schema, type (B_VARCHAR), assembly name (US_VARCHAR);
        // its values are always PLP.
        0xF0 => {
            c.take(2)?;
            c.skip_text(false)?;
            c.skip_text(false)?;
            c.skip_text(false)?;
            c.skip_text(true)?;
            ValueLen::Plp
        }
        // TEXT, NTEXT: maximum length and collation; IMAGE: maximum length.
        0x23 | 0x63 => {
            c.take(9)?;
            ValueLen::TextPtr
        }
        0x22 => {
            c.take(4)?;
            ValueLen::TextPtr
        }
        // SQL_VARIANT: maximum length.
        0x62 => {
            c.take(4)?;
            ValueLen::Long
        }
        t => return Some(Err(t)),
    }))
}

/// Moves past one value laid out as `len`; `None` when the bytes end first.
fn skip_value(len: ValueLen, c: &mut Cur<'_>) -> Option<()> {
    match len {
        ValueLen::Fixed(n) => {
            c.take(n)?;
        }
        ValueLen::Byte => {
            let n = c.u8()?;
            c.take(n as usize)?;
        }
        ValueLen::UShort => {
            let n = c.u16()?;
            if n != 0xFFFF {
                c.take(n as usize)?;
            }
        }
        ValueLen::Plp => skip_plp(c)?,
        ValueLen::Long => {
            let n = c.u32()?;
            c.take(n as usize)?;
        }
        ValueLen::TextPtr => {
            let ptr = c.u8()?;
            if ptr != 0 {
                c.take(ptr as usize + 8)?;
                let n = c.u32()?;
                c.take(n as usize)?;
            }
        }
    }
    Some(())
}

/// Moves past a PLP value (NULL or chunks up to the terminator); `None` when the bytes end first.
fn skip_plp(c: &mut Cur<'_>) -> Option<()> {
    if c.u64()? != PLP_NULL {
        loop {
            let n = c.u32()?;
            if n == 0 {
                break;
            }
            c.take(n as usize)?;
        }
    }
    Some(())
}

/// Moves past a RETURNVALUE body (MS-TDS 2.2.7.19), which has no length: ParamOrdinal,
/// ParamName, Status, UserType, Flags, TYPE_INFO, value. (CryptoMetadata only follows when
/// column encryption was negotiated, which tiberius never does.) `None` when the bytes end first.
fn return_value(c: &mut Cur<'_>) -> Option<Result<(), DecodeError>> {
    c.take(2)?;
    c.skip_text(false)?;
    c.take(1 + 4 + 2)?;
    let len = match type_info(c)? {
        Ok(len) => len,
        Err(t) => return Some(Err(DecodeError::Protocol(format!("RETURNVALUE of unknown TDS type 0x{t:02X}")))),
    };
    skip_value(len, c)?;
    Some(Ok(()))
}

/// Moves past one ROW/NBCROW body; `None` when the bytes end first.
fn skip_row(cols: &[WireColumn], c: &mut Cur<'_>, nbc: bool) -> Option<()> {
    let bitmap = if nbc { c.take(cols.len().div_ceil(8))? } else { &[][..] };
    for (i, col) in cols.iter().enumerate() {
        if nbc && bitmap[i / 8] & (1 << (i % 8)) != 0 {
            continue;
        }
        match col.wire {
            Wire::FixedInt(w) => {
                c.take(w as usize)?;
            }
            Wire::Bit => {
                c.take(1)?;
            }
            Wire::DateTime => {
                c.take(8)?;
            }
            Wire::SmallDateTime => {
                c.take(4)?;
            }
            Wire::IntN | Wire::BitN | Wire::Decimal { .. } | Wire::DateTime2 { .. } | Wire::DateTimeN => {
                let n = c.u8()?;
                c.take(n as usize)?;
            }
            Wire::NVarChar { .. } | Wire::VarChar { .. } | Wire::Binary { .. } | Wire::VarBinary { .. } => {
                let n = c.u16()?;
                if n != 0xFFFF {
                    c.take(n as usize)?;
                }
            }
            Wire::Variant => {
                let n = c.u32()?;
                c.take(n as usize)?;
            }
            Wire::NVarCharMax | Wire::VarBinaryMax | Wire::VarCharMax { .. } | Wire::Xml => skip_plp(c)?,
        }
    }
    Some(())
}

/// UTF-16LE bytes as UTF-8 appended to `out`; `Err` for an odd length or a lone surrogate.
pub fn utf16le_to_utf8(src: &[u8], out: &mut String) -> Result<(), String> {
    let mut bytes = std::mem::take(out).into_bytes();
    let r = utf16le_append(src, &mut bytes);
    // `utf16le_append` only appends whole UTF-8 characters.
    *out = String::from_utf8(bytes).map_err(|_| "text is not UTF-8".to_string())?;
    r
}

/// UTF-16LE bytes appended to `out` as UTF-8 (whole characters only, also on `Err`: an odd
/// length or a lone surrogate leaves `out` as it was).
pub fn utf16le_append(src: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if src.len() % 2 != 0 {
        return Err("UTF-16 text of an odd number of bytes".into());
    }
    // ASCII (the common case: server names, versions, wait types) is the low byte of every
    // unit: narrowed optimistically, checked once at the end.
    let start = out.len();
    if super::ascii::narrow(src, out) {
        return Ok(());
    }
    out.truncate(start);
    let mut utf8 = [0u8; 4];
    for ch in char::decode_utf16(src.chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]]))) {
        match ch {
            Ok(c) => out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes()),
            Err(e) => {
                out.truncate(start);
                return Err(format!("invalid UTF-16 (unpaired surrogate 0x{:04X})", e.unpaired_surrogate()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects values as strings, for assertions.
    #[derive(Default)]
    struct Collect {
        cols: Vec<WireColumn>,
        rows: Vec<Vec<String>>,
    }

    impl RowSink for Collect {
        fn columns(&mut self, columns: &[WireColumn]) -> Result<(), String> {
            self.cols = columns.to_vec();
            Ok(())
        }
        fn null(&mut self, col: usize) -> Result<(), String> {
            self.value(col, Value::Null)
        }
        fn int(&mut self, col: usize, v: i64) -> Result<(), String> {
            self.value(col, Value::Int(v))
        }
        fn bit(&mut self, col: usize, v: bool) -> Result<(), String> {
            self.value(col, Value::Bit(v))
        }
        fn decimal(&mut self, col: usize, unscaled: i128, scale: u8) -> Result<(), String> {
            self.value(col, Value::Decimal(unscaled, scale))
        }
        fn datetime2(&mut self, col: usize, days: i64, increments: i64, scale: u8) -> Result<(), String> {
            self.value(col, Value::DateTime2 { days, increments, scale })
        }
        fn unix_ms(&mut self, col: usize, ms: i64) -> Result<(), String> {
            self.value(col, Value::UnixMs(ms))
        }
        fn utf16(&mut self, col: usize, raw: &[u8]) -> Result<(), String> {
            self.value(col, Value::Utf16(raw))
        }
    }

    impl Collect {
        fn value(&mut self, col: usize, v: Value<'_>) -> Result<(), String> {
            if col == 0 {
                self.rows.push(Vec::new());
            }
            let s = match v {
                Value::Utf16(b) => {
                    let mut s = String::new();
                    utf16le_to_utf8(b, &mut s)?;
                    s
                }
                other => format!("{other:?}"),
            };
            self.rows.last_mut().ok_or("no row")?.push(s);
            Ok(())
        }
    }

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn b_varchar(s: &str) -> Vec<u8> {
        let mut v = vec![s.encode_utf16().count() as u8];
        v.extend(utf16(s));
        v
    }

    /// COLMETADATA for (BIGINT NOT NULL, NVARCHAR(10) NULL, DECIMAL(9,4) NULL, DATETIME2(3) NULL, NVARCHAR(MAX) NULL).
    fn colmetadata() -> Vec<u8> {
        let mut v = vec![0x81, 5, 0];
        v.extend([0, 0, 0, 0, 0, 0, 0x7F]);
        v.extend(b_varchar("id"));
        v.extend([0, 0, 0, 0, 1, 0, 0xE7, 20, 0, 9, 4, 0xD0, 0, 52]);
        v.extend(b_varchar("name"));
        v.extend([0, 0, 0, 0, 1, 0, 0x6A, 5, 9, 4]);
        v.extend(b_varchar("cpu"));
        v.extend([0, 0, 0, 0, 1, 0, 0x2A, 3]);
        v.extend(b_varchar("ts"));
        v.extend([0, 0, 0, 0, 1, 0, 0xE7, 0xFF, 0xFF, 9, 4, 0xD0, 0, 52]);
        v.extend(b_varchar("big"));
        v
    }

    /// The two ROW/NBCROW tokens of [`reply`].
    fn rows() -> Vec<u8> {
        // ROW: 7, "Aé", -1.2345, 1970-01-01 00:00:01.234 (day 719162), "xy" in two PLP chunks.
        let mut v = vec![0xD1];
        v.extend(7i64.to_le_bytes());
        v.extend(4u16.to_le_bytes());
        v.extend(utf16("Aé"));
        v.extend([5, 0]);
        v.extend(12_345u32.to_le_bytes());
        v.push(7);
        v.extend(1_234u32.to_le_bytes());
        v.extend(&719_162u32.to_le_bytes()[..3]);
        v.extend(4u64.to_le_bytes());
        v.extend(2u32.to_le_bytes());
        v.extend(utf16("x"));
        v.extend(2u32.to_le_bytes());
        v.extend(utf16("y"));
        v.extend(0u32.to_le_bytes());
        // NBCROW: id 8, everything else NULL (bits 1..4 set).
        v.extend([0xD2, 0b0001_1110]);
        v.extend(8i64.to_le_bytes());
        v
    }

    /// A DONE (0xFD), DONEPROC (0xFE) or DONEINPROC (0xFF) token.
    fn done(token: u8, status: u16, cur_cmd: u16, count: u64) -> Vec<u8> {
        let mut v = vec![token];
        v.extend(status.to_le_bytes());
        v.extend(cur_cmd.to_le_bytes());
        v.extend(count.to_le_bytes());
        v
    }

    /// The end of SQL Server's reply to sp_executesql (MS-TDS 4.9): DONEINPROC (DONE_MORE |
    /// DONE_COUNT, SELECT) with the row count, RETURNSTATUS 0, DONEPROC (final, EXECUTE).
    fn tail(rows: u64) -> Vec<u8> {
        let mut v = done(0xFF, 0x11, 0xC1, rows);
        v.extend([0x79, 0, 0, 0, 0]);
        v.extend(done(0xFE, 0, 0xE0, 0));
        v
    }

    fn reply() -> Vec<u8> {
        let mut v = colmetadata();
        v.extend(rows());
        v.extend(tail(2));
        v
    }

    fn expected() -> Vec<Vec<String>> {
        vec![
            vec!["Int(7)".into(), "Aé".into(), "Decimal(-12345, 4)".into(), "DateTime2 { days: 719162, increments: 1234, scale: 3 }".into(), "xy".into()],
            vec!["Int(8)".into(), "Null".into(), "Null".into(), "Null".into(), "Null".into()],
        ]
    }

    #[test]
    fn decodes_rows_nbcrows_and_the_tokens_around_them() {
        let mut sink = Collect::default();
        let mut d = ReplyDecoder::new();
        let bytes = reply();
        assert_eq!(d.feed(&bytes, &mut sink).unwrap(), bytes.len());
        assert_eq!(d.finish().unwrap(), 2);
        assert_eq!(sink.cols.iter().map(|c| c.wire).collect::<Vec<_>>(), vec![
            Wire::FixedInt(8),
            Wire::NVarChar { max_bytes: 20 },
            Wire::Decimal { precision: 9, scale: 4 },
            Wire::DateTime2 { scale: 3 },
            Wire::NVarCharMax
        ]);
        assert!(!sink.cols[0].nullable && sink.cols[1].nullable);
        assert_eq!(sink.rows, expected());
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_rows() {
        let bytes = reply();
        for cut in 0..bytes.len() {
            let mut sink = Collect::default();
            let mut d = ReplyDecoder::new();
            let used = d.feed(&bytes[..cut], &mut sink).unwrap();
            assert!(used <= cut);
            let mut rest = bytes[used..cut].to_vec();
            rest.extend_from_slice(&bytes[cut..]);
            assert_eq!(d.feed(&rest, &mut sink).unwrap(), rest.len(), "cut at {cut}");
            assert_eq!(sink.rows, expected(), "cut at {cut}");
        }
    }

    #[test]
    fn any_packet_size_gives_the_same_rows() {
        // Many rows, so that packets of every size cut tokens everywhere.
        let mut bytes = colmetadata();
        for _ in 0..50 {
            bytes.extend(rows());
        }
        bytes.extend(tail(100));
        let want: Vec<Vec<String>> = (0..50).flat_map(|_| expected()).collect();
        for size in [1, 2, 3, 7, 64, 100, 511, 4096, 5000, bytes.len()] {
            let mut sink = Collect::default();
            let mut d = ReplyDecoder::new();
            for packet in bytes.chunks(size) {
                d.packet(packet, &mut sink).unwrap();
            }
            assert_eq!(d.finish().unwrap(), 100, "packets of {size}");
            assert_eq!(sink.rows, want, "packets of {size}");
        }
        let mut d = ReplyDecoder::new();
        d.packet(&bytes[..bytes.len() - 5], &mut Collect::default()).unwrap();
        assert!(matches!(d.finish(), Err(DecodeError::Protocol(_))), "a reply cut inside a token");
    }

    #[test]
    fn server_errors_and_unknown_types_are_reported() {
        let mut err = vec![0xAA];
        let mut body = 1205u32.to_le_bytes().to_vec();
        body.extend([51, 13]);
        body.extend(3u16.to_le_bytes());
        body.extend(utf16("dl!"));
        body.extend(b_varchar("srv"));
        body.extend(b_varchar(""));
        body.extend(7u32.to_le_bytes());
        err.extend((body.len() as u16).to_le_bytes());
        err.extend(body);
        let mut d = ReplyDecoder::new();
        assert_eq!(d.feed(&err, &mut Collect::default()).unwrap(), err.len());
        match d.finish() {
            Err(DecodeError::Server(e)) => assert_eq!((e.code(), e.message()), (1205, "dl!")),
            other => panic!("{other:?}"),
        }
        // A FLT8 column.
        let mut meta = vec![0x81, 1, 0, 0, 0, 0, 0, 0, 0, 0x3E];
        meta.extend(b_varchar("f"));
        assert!(matches!(ReplyDecoder::new().feed(&meta, &mut Collect::default()), Err(DecodeError::Unsupported(_))));
        assert!(matches!(ReplyDecoder::new().feed(&[0x42], &mut Collect::default()), Err(DecodeError::Protocol(_))));
    }

    /// Feeds `bytes` in packets of `size` bytes; the first error or the rows of the reply.
    fn decode_in_packets(bytes: &[u8], size: usize) -> (Result<u64, DecodeError>, Vec<Vec<String>>) {
        let mut sink = Collect::default();
        let mut d = ReplyDecoder::new();
        for packet in bytes.chunks(size) {
            if let Err(e) = d.packet(packet, &mut sink) {
                return (Err(e), sink.rows);
            }
        }
        (d.finish(), sink.rows)
    }

    /// `check` holds for the outcome at every packet size from 1 byte to the whole reply.
    fn at_every_packet_size(bytes: &[u8], check: impl Fn(Result<u64, DecodeError>, &[Vec<String>]) -> Result<(), String>) {
        for size in 1..=bytes.len().max(1) {
            let (r, rows) = decode_in_packets(bytes, size);
            if let Err(m) = check(r, &rows) {
                panic!("packets of {size} bytes: {m}");
            }
        }
    }

    /// The reply decodes to exactly the two rows of [`expected`].
    fn whole(r: Result<u64, DecodeError>, rows: &[Vec<String>]) -> Result<(), String> {
        match r {
            Ok(2) if rows == expected() => Ok(()),
            other => Err(format!("{other:?}, rows {rows:?}")),
        }
    }

    /// The reply fails as incomplete with exactly `want`.
    fn incomplete(want: &str) -> impl Fn(Result<u64, DecodeError>, &[Vec<String>]) -> Result<(), String> + '_ {
        move |r, _| match r {
            Err(DecodeError::Incomplete(m)) if m == want => Ok(()),
            other => Err(format!("{other:?}, wanted Incomplete({want:?})")),
        }
    }

    /// `reply()` with `a` after COLMETADATA, `b` after the rows and `c` after the DONEINPROC.
    fn reply_with(a: &[u8], b: &[u8], c: &[u8]) -> Vec<u8> {
        let mut v = colmetadata();
        v.extend(a);
        v.extend(rows());
        v.extend(b);
        v.extend(done(0xFF, 0x11, 0xC1, 2));
        v.extend(c);
        v.extend([0x79, 0, 0, 0, 0]);
        v.extend(done(0xFE, 0, 0xE0, 0));
        v
    }

    /// A token with a 2-byte length.
    fn with_len(token: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![token];
        v.extend((body.len() as u16).to_le_bytes());
        v.extend(body);
        v
    }

    fn us_varchar(s: &str) -> Vec<u8> {
        let mut v = (s.encode_utf16().count() as u16).to_le_bytes().to_vec();
        v.extend(utf16(s));
        v
    }

    /// A RETURNVALUE token for parameter `@p` with TYPE_INFO `ti` and value bytes `value`.
    fn return_value(ti: &[u8], value: &[u8]) -> Vec<u8> {
        let mut v = vec![0xAC, 1, 0];
        v.extend(b_varchar("@p"));
        v.push(0x01); // output parameter
        v.extend([0, 0, 0, 0, 0, 0]); // UserType, Flags
        v.extend(ti);
        v.extend(value);
        v
    }

    /// An ERROR (0xAA) or INFO (0xAB) token.
    fn message(token: u8, number: u32, text: &str) -> Vec<u8> {
        let mut body = number.to_le_bytes().to_vec();
        body.extend([1, if token == 0xAA { 16 } else { 0 }]);
        body.extend(us_varchar(text));
        body.extend(b_varchar("SQL01"));
        body.extend(b_varchar(""));
        body.extend(1u32.to_le_bytes());
        with_len(token, &body)
    }

    fn plp(chunks: &[&[u8]]) -> Vec<u8> {
        let mut v = (chunks.iter().map(|c| c.len() as u64).sum::<u64>()).to_le_bytes().to_vec();
        for c in chunks {
            v.extend((c.len() as u32).to_le_bytes());
            v.extend(*c);
        }
        v.extend(0u32.to_le_bytes());
        v
    }

    #[test]
    fn every_token_sql_server_sends_in_an_rpc_reply_is_stepped_over_at_every_packet_size() {
        const COLLATION: [u8; 5] = [9, 4, 0xD0, 0, 52];
        let env_db = {
            let mut b = vec![1];
            b.extend(b_varchar("DBATools"));
            b.extend(b_varchar("master"));
            with_len(0xE3, &b)
        };
        let session_state = {
            let mut v = vec![0xE4];
            let body = [1, 0, 0, 0, 0, 0x01, 2, 0xAB, 0xCD];
            v.extend((body.len() as u32).to_le_bytes());
            v.extend(body);
            v
        };
        let mut xml_ti = vec![0xF1, 1];
        xml_ti.extend(b_varchar("db"));
        xml_ti.extend(b_varchar("dbo"));
        xml_ti.extend(us_varchar("schemas"));
        let mut udt_ti = vec![0xF0, 0xFF, 0xFF];
        udt_ti.extend(b_varchar("db"));
        udt_ti.extend(b_varchar("sys"));
        udt_ti.extend(b_varchar("hierarchyid"));
        udt_ti.extend(us_varchar("Microsoft.SqlServer.Types.SqlHierarchyId"));
        let mut nvarchar_ti = vec![0xE7, 20, 0];
        nvarchar_ti.extend(COLLATION);
        let mut nvarchar_max_ti = vec![0xE7, 0xFF, 0xFF];
        nvarchar_max_ti.extend(COLLATION);
        let mut text_ti = vec![0x23, 0xFF, 0xFF, 0xFF, 0x7F];
        text_ti.extend(COLLATION);
        let mut text_value = vec![16];
        text_value.extend([0xEE; 16]); // text pointer
        text_value.extend([0; 8]); // timestamp
        text_value.extend(3u32.to_le_bytes());
        text_value.extend(b"abc");
        let variant = [0x38, 0, 7, 0, 0, 0]; // INT4 7: base type, property bytes 0, value
        let mut variant_value = (variant.len() as u32).to_le_bytes().to_vec();
        variant_value.extend(variant);
        let return_values: Vec<(&str, Vec<u8>)> = vec![
            ("INT4", return_value(&[0x38], &42i32.to_le_bytes())),
            ("NULL type", return_value(&[0x1F], &[])),
            ("BIGINT NULL (INTN)", return_value(&[0x26, 8], &[0])),
            ("MONEY", return_value(&[0x3C], &[1; 8])),
            ("DECIMAL(9,4)", return_value(&[0x6A, 5, 9, 4], &[5, 1, 0x39, 0x30, 0, 0])),
            ("UNIQUEIDENTIFIER", return_value(&[0x24, 16], &[&[16u8][..], &[0xAB; 16]].concat())),
            ("FLOAT (FLTN)", return_value(&[0x6D, 8], &[&[8u8][..], &1.5f64.to_le_bytes()].concat())),
            ("DATE", return_value(&[0x28], &[3, 1, 2, 3])),
            ("DATETIME2(7)", return_value(&[0x2A, 7], &[8, 1, 2, 3, 4, 5, 6, 7, 8])),
            ("DATETIMEOFFSET(0)", return_value(&[0x2B, 0], &[8, 1, 2, 3, 4, 5, 6, 7, 8])),
            ("TIME(3)", return_value(&[0x29, 3], &[4, 1, 2, 3, 4])),
            ("NVARCHAR(10)", return_value(&nvarchar_ti, &[&4u16.to_le_bytes()[..], &utf16("hi")].concat())),
            ("NVARCHAR(10) NULL", return_value(&nvarchar_ti, &0xFFFFu16.to_le_bytes())),
            ("NVARCHAR(MAX)", return_value(&nvarchar_max_ti, &plp(&[&utf16("x"), &utf16("yz")]))),
            ("NVARCHAR(MAX) NULL", return_value(&nvarchar_max_ti, &PLP_NULL.to_le_bytes())),
            ("VARBINARY(8)", return_value(&[0xA5, 8, 0], &[2, 0, 0xAA, 0xBB])),
            ("VARBINARY(MAX)", return_value(&[0xA5, 0xFF, 0xFF], &plp(&[b"\x01\x02\x03"]))),
            ("XML with a schema", return_value(&xml_ti, &plp(&[&utf16("<a/>")]))),
            ("UDT", return_value(&udt_ti, &plp(&[b"\x58"]))),
            ("TEXT", return_value(&text_ti, &text_value)),
            ("IMAGE NULL", return_value(&[0x22, 0xFF, 0xFF, 0xFF, 0x7F], &[0])),
            ("SQL_VARIANT", return_value(&[0x62, 0x10, 0x1F, 0, 0], &variant_value)),
        ];
        let mut cases: Vec<(String, Vec<u8>)> = vec![
            ("ORDER".into(), reply_with(&with_len(0xA9, &1u16.to_le_bytes()), &[], &[])),
            ("TABNAME".into(), reply_with(&with_len(0xA4, &[&[1u8][..], &us_varchar("PerfSnapshotRun")].concat()), &[], &[])),
            ("COLINFO".into(), reply_with(&with_len(0xA5, &[1, 1, 0, 0x10, 1, 1, 1, 0]), &[], &[])),
            ("INFO".into(), reply_with(&[], &message(0xAB, 8153, "Warning: Null value is eliminated by an aggregate or other SET operation."), &[])),
            ("ENVCHANGE".into(), reply_with(&[], &env_db, &[])),
            ("SESSIONSTATE".into(), reply_with(&[], &session_state, &[])),
            ("a DONEINPROC with a count before the result set (DECLARE @x int = 1)".into(), {
                let mut v = done(0xFF, 0x11, 0xC1, 1);
                v.extend(reply());
                v
            }),
            ("a DONEPROC with DONE_COUNT".into(), {
                let mut v = colmetadata();
                v.extend(rows());
                v.extend(done(0xFF, 0x11, 0xC1, 2));
                v.extend(done(0xFE, 0x10, 0xE0, 7));
                v
            }),
            ("SET NOCOUNT ON (no DONE_COUNT)".into(), {
                let mut v = colmetadata();
                v.extend(rows());
                v.extend(done(0xFF, 0x01, 0xC1, 0));
                v.extend(done(0xFE, 0, 0xE0, 0));
                v
            }),
            ("a SQL batch's DONE".into(), {
                let mut v = colmetadata();
                v.extend(rows());
                v.extend(done(0xFD, 0x10, 0xC1, 2));
                v
            }),
        ];
        cases.extend(return_values.into_iter().map(|(what, rv)| (format!("RETURNVALUE {what}"), reply_with(&[], &[], &rv))));
        for (what, bytes) in cases {
            at_every_packet_size(&bytes, |r, rows| whole(r, rows).map_err(|m| format!("{what}: {m}")));
        }
    }

    #[test]
    fn a_done_flagging_an_error_or_a_cancel_without_an_error_token_fails_the_reply() {
        // Regression: the decoder read DONE* as 12 bytes to skip, so these replies looked like
        // short final pages and the copy lost the rest of the table.
        let flagged = |token: u8, status: u16| {
            let mut v = colmetadata();
            v.extend(rows());
            v.extend(done(token, status, 0xC1, 2));
            if token == 0xFF {
                v.extend([0x79, 0xFA, 0xFF, 0xFF, 0xFF]);
                v.extend(done(0xFE, status & !0x11, 0xE0, 0));
            }
            v
        };
        let cases = [
            (flagged(0xFF, 0x13), "DONEINPROC status 0x0013 (DONE_ERROR: the statement failed), without an ERROR token, after 2 rows"),
            (flagged(0xFF, 0x0111), "DONEINPROC status 0x0111 (DONE_SRVERROR: a severe error, the result set is to be discarded), without an ERROR token, after 2 rows"),
            (flagged(0xFD, 0x20), "DONE status 0x0020 (DONE_ATTN: the request was cancelled), without an ERROR token, after 2 rows"),
            (flagged(0xFD, 0x12), "DONE status 0x0012 (DONE_ERROR: the statement failed), without an ERROR token, after 2 rows"),
            (
                {
                    let mut v = colmetadata();
                    v.extend(rows());
                    v.extend(done(0xFF, 0x11, 0xC1, 2));
                    v.extend([0x79, 0, 0, 0, 0]);
                    v.extend(done(0xFE, 0x02, 0xE0, 0));
                    v
                },
                "DONEPROC status 0x0002 (DONE_ERROR: the statement failed), without an ERROR token, after 2 rows",
            ),
        ];
        for (bytes, want) in &cases {
            at_every_packet_size(bytes, incomplete(want));
        }
    }

    #[test]
    fn a_done_count_that_differs_from_the_rows_decoded_fails_the_reply() {
        let counted = |count: u64| {
            let mut v = colmetadata();
            v.extend(rows());
            v.extend(tail(count));
            v
        };
        at_every_packet_size(&counted(32_768), incomplete("DONEINPROC says the result set has 32768 rows (DONE_COUNT), 2 were decoded"));
        at_every_packet_size(&counted(1), incomplete("DONEINPROC says the result set has 1 rows (DONE_COUNT), 2 were decoded"));
        at_every_packet_size(&counted(0), incomplete("DONEINPROC says the result set has 0 rows (DONE_COUNT), 2 were decoded"));
        let mut batch = colmetadata();
        batch.extend(rows());
        batch.extend(done(0xFD, 0x10, 0xC1, 3));
        at_every_packet_size(&batch, incomplete("DONE says the result set has 3 rows (DONE_COUNT), 2 were decoded"));
    }

    #[test]
    fn a_reply_without_its_final_done_fails() {
        let mut no_done = colmetadata();
        no_done.extend(rows());
        let mut no_doneproc = no_done.clone();
        no_doneproc.extend(done(0xFF, 0x11, 0xC1, 2));
        no_doneproc.extend([0x79, 0, 0, 0, 0]);
        let mut more = no_doneproc.clone();
        more.extend(done(0xFE, 0x01, 0xE0, 0));
        let mut inproc_last = no_done.clone();
        inproc_last.extend(done(0xFF, 0x10, 0xC1, 2));
        let want = "the reply ends after 2 rows without its final DONE (one without DONE_MORE)";
        for bytes in [&no_done, &no_doneproc, &more, &inproc_last] {
            at_every_packet_size(bytes, incomplete(want));
        }
        at_every_packet_size(&[], incomplete("the reply ends after 0 rows without its final DONE (one without DONE_MORE)"));
        // Nothing may follow the final DONE.
        let mut after = reply();
        after.extend(done(0xFD, 0, 0xC1, 0));
        at_every_packet_size(&after, |r, _| match r {
            Err(DecodeError::Protocol(m)) if m == format!("token 0xFD after the final DONE, at byte {} of the reply", reply().len()) => Ok(()),
            other => Err(format!("{other:?}")),
        });
    }

    #[test]
    fn the_first_error_token_wins_over_what_follows_it() {
        let server_1205 = |r: Result<u64, DecodeError>, _: &[Vec<String>]| match r {
            Err(DecodeError::Server(e)) if (e.code(), e.message()) == (1205, "deadlock victim") => Ok(()),
            other => Err(format!("{other:?}")),
        };
        let mut head = colmetadata();
        head.extend(rows());
        head.extend(message(0xAA, 1205, "deadlock victim"));
        // Garbage: an unknown token; a ROW cut short.
        for garbage in [&[0x42, 1, 2, 3][..], &[0xD1, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0]] {
            let mut v = head.clone();
            v.extend(garbage);
            at_every_packet_size(&v, server_1205);
        }
        // Cut inside a token; a second ERROR; DONE flags; a DONE count that disagrees.
        let mut cut = head.clone();
        cut.extend(&done(0xFF, 0x13, 0xC1, 9)[..5]);
        at_every_packet_size(&cut, server_1205);
        let mut later = head.clone();
        later.extend(message(0xAA, 50000, "later"));
        later.extend(done(0xFF, 0x13, 0xC1, 9));
        later.extend(done(0xFE, 0x02, 0xE0, 0));
        at_every_packet_size(&later, server_1205);
        // A second result set (unsupported) after the error.
        let mut second = head.clone();
        second.extend(colmetadata());
        at_every_packet_size(&second, server_1205);
    }

    #[test]
    fn utf16_text_decodes_ascii_and_beyond() {
        let mut s = String::new();
        utf16le_to_utf8(&utf16("HOST\\INST ü 😀"), &mut s).unwrap();
        assert_eq!(s, "HOST\\INST ü 😀");
        // Blocks of 16 characters and a tail, ASCII and not, appended after earlier text.
        for text in ["Microsoft SQL Server 2022 (RTM-CU12) - 16.0.4120.1 (X64)", "Microsoft SQL Server 2022 (RTM-CU12) - 16.0.4120.1 (X64) Ω", "exactly sixteen!"] {
            let mut v = b"x".to_vec();
            utf16le_append(&utf16(text), &mut v).unwrap();
            assert_eq!(v, format!("x{text}").into_bytes());
        }
        let mut v = b"kept".to_vec();
        assert!(utf16le_append(&[0x41, 0, 0x00, 0xD8], &mut v).is_err());
        // The ASCII fast path and the general path agree at every length around the blocks.
        let ascii: String = (0..70u8).map(|i| (b' ' + i % 90) as char).collect();
        for len in 0..ascii.len() {
            for odd in [None, Some('é'), Some('\u{80}'), Some('\u{FF7F}'), Some('😀')] {
                let mut text = ascii[..len].to_string();
                if let Some(c) = odd {
                    text.insert(len / 2, c);
                }
                let mut v = b"pre".to_vec();
                utf16le_append(&utf16(&text), &mut v).unwrap();
                assert_eq!(v, format!("pre{text}").into_bytes());
            }
        }
        assert_eq!(v, b"kept");
        assert!(utf16le_to_utf8(&[0x00, 0xD8], &mut String::new()).is_err());
        assert!(utf16le_to_utf8(&[0x41], &mut String::new()).is_err());
    }
}
