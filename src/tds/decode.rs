//! The reply to a `SELECT` (MS-TDS 2.2.7 token stream) decoded from the packet bytes in place,
//! values handed to a [`RowSink`] without an owned value per cell. tiberius' row API decodes
//! every value through an async read and allocates every string; this decoder is the reason
//! perfcopy's SQL Server source reads several times faster per connection (see the README).
//!
//! Scope: one result set of the column types PerfSnapshotRun tables have (integers, BIT,
//! DECIMAL/NUMERIC, DATETIME2, DATETIME, SMALLDATETIME, NVARCHAR/NCHAR including MAX), plus
//! the tokens around it (DONE*, RETURNSTATUS, ERROR, INFO, ENVCHANGE, ORDER). A column of
//! another type is [`DecodeError::Unsupported`], so the caller can read with tiberius instead.

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
    /// NVARCHAR/NCHAR text as UTF-16LE bytes.
    fn utf16(&mut self, col: usize, raw: &[u8]) -> Result<(), String>;
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
}

/// Token-stream decoder for one reply. Feed it the reply's bytes as they arrive
/// ([`ReplyDecoder::feed`]); tokens cut off at the end of the bytes are decoded on the next feed.
#[derive(Debug, Default)]
pub struct ReplyDecoder {
    columns: Option<Vec<WireColumn>>,
    /// Longest possible ROW token, when no column is PLP: rows that surely fit in the bytes
    /// at hand are decoded in one pass, others are measured first.
    max_row: Option<usize>,
    rows: u64,
    error: Option<TokenError>,
    scratch: Vec<u8>,
    /// The start of a token cut off at the end of the previous packet ([`ReplyDecoder::packet`]).
    pending: Vec<u8>,
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
    pub fn feed<S: RowSink>(&mut self, buf: &[u8], sink: &mut S) -> Result<usize, DecodeError> {
        let mut done = 0;
        loop {
            let mut c = Cur { b: buf, p: done };
            let Some(token) = c.u8() else { return Ok(done) };
            let complete = match token {
                0xD1 | 0xD2 => self.row(&mut c, token == 0xD2, sink)?,
                0x81 => self.colmetadata(&mut c, sink)?,
                0xFD..=0xFF => c.take(12).is_some(),
                0x79 => c.take(4).is_some(),
                0xAA => self.error_token(&mut c)?,
                // INFO, ENVCHANGE, ORDER, TABNAME, COLINFO: skipped by their length.
                0xAB | 0xE3 | 0xA9 | 0xA4 | 0xA5 => c.u16().and_then(|n| c.take(n as usize)).is_some(),
                // SESSIONSTATE has a 4-byte length.
                0xE4 => c.u32().and_then(|n| c.take(n as usize)).is_some(),
                t => return Err(DecodeError::Protocol(format!("unexpected token 0x{t:02X} at byte {done} of the reply"))),
            };
            if !complete {
                return Ok(done);
            }
            done = c.p;
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

    /// The first server error of the reply, if any; call after the last byte was fed.
    pub fn finish(self) -> Result<u64, DecodeError> {
        if !self.pending.is_empty() {
            return Err(DecodeError::Protocol(format!("the reply ends inside a token ({} bytes left)", self.pending.len())));
        }
        match self.error {
            Some(e) => Err(DecodeError::Server(e)),
            None => Ok(self.rows),
        }
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
                // VARCHAR/CHAR: code-page text, which this decoder leaves to tiberius (named
                // in the message, so its type info is read past).
                0xA7 | 0xAF => {
                    if c.take(7).is_none() {
                        return Ok(false);
                    }
                    let Some(name) = c.text(false) else { return Ok(false) };
                    return Err(DecodeError::Unsupported(format!("column '{name}' is VARCHAR/CHAR (code-page text)")));
                }
                t => return Err(DecodeError::Unsupported(format!("column {} has TDS type 0x{t:02X}", i + 1))),
            };
            let Some(name) = c.text(false) else { return Ok(false) };
            cols.push(WireColumn { name, wire, nullable: flags & 1 == 1 });
        }
        sink.columns(&cols).map_err(DecodeError::Unsupported)?;
        self.max_row = cols
            .iter()
            .map(|col| match col.wire {
                Wire::FixedInt(w) => Some(w as usize),
                Wire::IntN => Some(9),
                Wire::Bit | Wire::BitN => Some(2),
                Wire::Decimal { .. } => Some(18),
                Wire::DateTime2 { .. } => Some(9),
                Wire::DateTime | Wire::SmallDateTime | Wire::DateTimeN => Some(9),
                Wire::NVarChar { max_bytes } => Some(2 + max_bytes as usize),
                Wire::NVarCharMax => None,
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
        Wire::NVarCharMax => {
            if c.u64()? == PLP_NULL {
                sink.null(i)
            } else {
                scratch.clear();
                loop {
                    let n = c.u32()?;
                    if n == 0 {
                        break;
                    }
                    scratch.extend_from_slice(c.take(n as usize)?);
                }
                sink.utf16(i, scratch)
            }
        }
    })
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
            Wire::NVarChar { .. } => {
                let n = c.u16()?;
                if n != 0xFFFF {
                    c.take(n as usize)?;
                }
            }
            Wire::NVarCharMax => {
                if c.u64()? != PLP_NULL {
                    loop {
                        let n = c.u32()?;
                        if n == 0 {
                            break;
                        }
                        c.take(n as usize)?;
                    }
                }
            }
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

    fn reply() -> Vec<u8> {
        let mut v = colmetadata();
        // ROW: 7, "Aé", -1.2345, 1970-01-01 00:00:01.234 (day 719162), "xy" in two PLP chunks.
        v.push(0xD1);
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
        // DONEINPROC, RETURNSTATUS, DONEPROC.
        v.extend([0xFF, 0x10, 0, 0xC1, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        v.extend([0x79, 0, 0, 0, 0]);
        v.extend([0xFE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
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
        let one = reply();
        let rows = &one[colmetadata().len()..one.len() - 31];
        for _ in 0..50 {
            bytes.extend_from_slice(rows);
        }
        bytes.extend_from_slice(&one[one.len() - 31..]);
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
