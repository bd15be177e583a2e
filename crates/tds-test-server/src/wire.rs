//! MS-TDS byte level: a bounds-checked reader, TYPE_INFO/value decoding (RPC parameters and
//! BulkLoad rows) and server-side token encoding (COLMETADATA, ROW, DONE, ERROR, ENVCHANGE, ...).
//!
//! Everything here works on complete byte slices and never panics on malformed input:
//! a short buffer is [`WireError::Incomplete`], anything else [`WireError::Malformed`].

use crate::collation::Collation;
use crate::types::{SqlType, Value, Variant, TICKS_PER_DAY};

/// Packet types (MS-TDS 2.2.3.1.1).
pub mod packet {
    /// SQL batch.
    pub const SQL_BATCH: u8 = 1;
    /// RPC request.
    pub const RPC: u8 = 3;
    /// Tabular result (server to client).
    pub const TABULAR: u8 = 4;
    /// Attention signal.
    pub const ATTENTION: u8 = 6;
    /// Bulk load data.
    pub const BULK_LOAD: u8 = 7;
    /// Transaction manager request.
    pub const TRANSACTION_MANAGER: u8 = 14;
    /// LOGIN7.
    pub const LOGIN7: u8 = 16;
    /// PRELOGIN.
    pub const PRELOGIN: u8 = 18;
    /// Status bit: end of message.
    pub const STATUS_EOM: u8 = 0x01;
}

/// Token types (MS-TDS 2.2.7).
pub mod token {
    #![allow(missing_docs)]
    pub const COLMETADATA: u8 = 0x81;
    pub const ERROR: u8 = 0xAA;
    pub const ORDER: u8 = 0xA9;
    pub const INFO: u8 = 0xAB;
    pub const LOGINACK: u8 = 0xAD;
    pub const ROW: u8 = 0xD1;
    pub const NBCROW: u8 = 0xD2;
    pub const ENVCHANGE: u8 = 0xE3;
    pub const RETURNSTATUS: u8 = 0x79;
    pub const DONE: u8 = 0xFD;
    pub const DONEPROC: u8 = 0xFE;
    pub const DONEINPROC: u8 = 0xFF;
}

/// DONE status bits.
pub mod done {
    #![allow(missing_docs)]
    pub const MORE: u16 = 0x01;
    pub const ERROR: u16 = 0x02;
    pub const INXACT: u16 = 0x04;
    pub const COUNT: u16 = 0x10;
    pub const ATTN: u16 = 0x20;
}

/// CurCmd of DONE/DONEINPROC/DONEPROC: the statement a DONE ends, as SQL Server numbers it (MS-TDS
/// leaves the values to the application layer; these are the ones SQL Server sends, as the
/// Microsoft JDBC driver's `StreamDone` lists them and MS-TDS 4.9's example shows for EXECUTE).
/// Statements without a listed number (transactions, SET, IF, ...) send 0 here.
pub mod cur_cmd {
    #![allow(missing_docs)]
    pub const SELECT: u16 = 0xC1;
    pub const INSERT: u16 = 0xC3;
    pub const DELETE: u16 = 0xC4;
    pub const UPDATE: u16 = 0xC5;
    pub const TABLE_CREATE: u16 = 0xC6;
    pub const TABLE_DESTROY: u16 = 0xC7;
    pub const INDEX_CREATE: u16 = 0xC8;
    /// The DONEPROC ending a procedure (RPC or EXEC).
    pub const EXECUTE: u16 = 0xE0;
    /// The DONE ending a BulkLoad message.
    pub const BULK_INSERT: u16 = 0xF0;
    /// What SQL Server sends for an INSERT BULK statement and for a load that fails its checks
    /// (0xFD, as observed against SQL Server).
    pub const STATEMENT: u16 = 0xFD;
}

/// Data type bytes (MS-TDS 2.2.5.4).
pub mod ty {
    #![allow(missing_docs)]
    pub const NULL: u8 = 0x1F;
    pub const INT1: u8 = 0x30;
    pub const BIT: u8 = 0x32;
    pub const INT2: u8 = 0x34;
    pub const INT4: u8 = 0x38;
    pub const DATETIM4: u8 = 0x3A;
    pub const FLT4: u8 = 0x3B;
    pub const DATETIME: u8 = 0x3D;
    pub const FLT8: u8 = 0x3E;
    pub const INT8: u8 = 0x7F;
    pub const INTN: u8 = 0x26;
    pub const BITN: u8 = 0x68;
    pub const DECIMALN: u8 = 0x6A;
    pub const NUMERICN: u8 = 0x6C;
    pub const FLTN: u8 = 0x6D;
    pub const DATETIMN: u8 = 0x6F;
    pub const DATEN: u8 = 0x28;
    pub const DATETIME2N: u8 = 0x2A;
    pub const BIGVARCHAR: u8 = 0xA7;
    pub const BIGCHAR: u8 = 0xAF;
    pub const NVARCHAR: u8 = 0xE7;
    pub const NCHAR: u8 = 0xEF;
    pub const BIGVARBINARY: u8 = 0xA5;
    pub const BIGBINARY: u8 = 0xAD;
    pub const XML: u8 = 0xF1;
    pub const SSVARIANT: u8 = 0x62;
    pub const GUID: u8 = 0x24;
}

/// The collation the server reports (its default): SQL_Latin1_General_CP1_CI_AS.
pub const COLLATION: [u8; 5] = Collation::DEFAULT.0;

/// The most bytes a SQL_VARIANT value holds (its TYPE_INFO's max length, as SQL Server sends it).
pub const VARIANT_MAX: u32 = 8016;

/// The most bytes the server puts in one PLP chunk (MS-TDS 2.2.5.2.3 leaves chunk sizes to
/// the sender; SQL Server's follow its packet size, so long values arrive in several chunks).
pub const PLP_CHUNK: usize = 8000;

/// A decoding failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before the item does (more packets may complete it).
    Incomplete,
    /// The bytes cannot be valid MS-TDS.
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Incomplete => write!(f, "message ends early"),
            WireError::Malformed(m) => write!(f, "{m}"),
        }
    }
}

/// Shorthand for decoder results.
pub type WResult<T> = Result<T, WireError>;

fn bad<T>(msg: impl Into<String>) -> WResult<T> {
    Err(WireError::Malformed(msg.into()))
}

/// A bounds-checked little-endian reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Rd<'a> {
    buf: &'a [u8],
    /// Current offset.
    pub pos: usize,
}

impl<'a> Rd<'a> {
    /// Reader at offset 0.
    pub fn new(buf: &'a [u8]) -> Self {
        Rd { buf, pos: 0 }
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> WResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(WireError::Incomplete);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> WResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    /// u8.
    pub fn u8(&mut self) -> WResult<u8> {
        Ok(self.arr::<1>()?[0])
    }
    /// u16 little endian.
    pub fn u16(&mut self) -> WResult<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    /// u32 little endian.
    pub fn u32(&mut self) -> WResult<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    /// u64 little endian.
    pub fn u64(&mut self) -> WResult<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// `n` UTF-16LE code units.
    pub fn utf16(&mut self, n: usize) -> WResult<String> {
        utf16_to_string(self.bytes(n * 2)?)
    }
    /// B_VARCHAR: u8 length in characters, UTF-16LE.
    pub fn b_varchar(&mut self) -> WResult<String> {
        let n = self.u8()? as usize;
        self.utf16(n)
    }
    /// US_VARCHAR: u16 length in characters, UTF-16LE.
    pub fn us_varchar(&mut self) -> WResult<String> {
        let n = self.u16()? as usize;
        self.utf16(n)
    }
}

/// Decodes UTF-16LE bytes.
pub fn utf16_to_string(b: &[u8]) -> WResult<String> {
    if !b.len().is_multiple_of(2) {
        return bad("odd UTF-16 byte length");
    }
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).map_err(|_| WireError::Malformed("invalid UTF-16 text".into()))
}

/// A decoded TYPE_INFO (of an RPC parameter or a BulkLoad COLMETADATA column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// NULLTYPE.
    Null,
    /// INT1/INT2/INT4/INT8 (fixed; byte width).
    FixedInt(u8),
    /// BIT (fixed).
    FixedBit,
    /// FLT4/FLT8 (fixed; byte width).
    FixedFloat(u8),
    /// DATETIME (fixed 8 bytes).
    FixedDateTime,
    /// INTN with its max width.
    IntN(u8),
    /// BITN.
    BitN,
    /// FLTN with its max width.
    FloatN(u8),
    /// DATETIMN with its width (4 or 8).
    DateTimeN(u8),
    /// DATEN.
    DateN,
    /// DECIMALN/NUMERICN.
    DecimalN {
        /// NUMERICN (0x6C) rather than DECIMALN (0x6A).
        numeric: bool,
        /// Byte length of the value (5/9/13/17).
        len: u8,
        /// Precision.
        precision: u8,
        /// Scale.
        scale: u8,
    },
    /// DATETIME2N with its scale.
    DateTime2N(u8),
    /// NVARCHAR/NCHAR, max length in bytes (0xFFFF = MAX, sent as PLP).
    NVarChar(u16),
    /// BIGVARCHAR/BIGCHAR, max length in bytes (0xFFFF = MAX), and the collation whose code
    /// page the bytes are in.
    VarChar(u16, Collation),
    /// BIGVARBINARY, max length in bytes (0xFFFF = MAX, sent as PLP).
    VarBinary(u16),
    /// BIGBINARY with its length.
    Binary(u16),
    /// XML (always PLP, UTF-16LE); schema-bound or not.
    Xml,
    /// SSVARIANT with its max length (4 bytes in TYPE_INFO).
    Variant(u32),
    /// GUID (UNIQUEIDENTIFIER): length byte 16.
    Guid,
}

impl WireType {
    /// Reads a TYPE_INFO.
    pub fn decode(r: &mut Rd) -> WResult<WireType> {
        let t = r.u8()?;
        Ok(match t {
            ty::NULL => WireType::Null,
            ty::INT1 => WireType::FixedInt(1),
            ty::INT2 => WireType::FixedInt(2),
            ty::INT4 => WireType::FixedInt(4),
            ty::INT8 => WireType::FixedInt(8),
            ty::BIT => WireType::FixedBit,
            ty::FLT4 => WireType::FixedFloat(4),
            ty::FLT8 => WireType::FixedFloat(8),
            ty::DATETIME => WireType::FixedDateTime,
            ty::INTN => match r.u8()? {
                n @ (1 | 2 | 4 | 8) => WireType::IntN(n),
                n => return bad(format!("INTN length {n}")),
            },
            ty::BITN => match r.u8()? {
                1 => WireType::BitN,
                n => return bad(format!("BITN length {n}")),
            },
            ty::FLTN => match r.u8()? {
                n @ (4 | 8) => WireType::FloatN(n),
                n => return bad(format!("FLTN length {n}")),
            },
            ty::DATETIMN => match r.u8()? {
                n @ (4 | 8) => WireType::DateTimeN(n),
                n => return bad(format!("DATETIMN length {n}")),
            },
            ty::DATEN => WireType::DateN,
            ty::DECIMALN | ty::NUMERICN => {
                let len = r.u8()?;
                let precision = r.u8()?;
                let scale = r.u8()?;
                // The BYTELEN is not checked: each value carries its own length (checked when
                // decoded), and mssql-python's bulk copy (mssql_tds 0.3) sends the type byte
                // 0x6A there.
                if !(1..=38).contains(&precision) || scale > precision {
                    return bad(format!("DECIMALN len {len} precision {precision} scale {scale}"));
                }
                WireType::DecimalN { numeric: t == ty::NUMERICN, len, precision, scale }
            }
            ty::DATETIME2N => match r.u8()? {
                s @ 0..=7 => WireType::DateTime2N(s),
                s => return bad(format!("DATETIME2N scale {s}")),
            },
            ty::NVARCHAR | ty::NCHAR => {
                let n = r.u16()?;
                r.bytes(5)?;
                WireType::NVarChar(n)
            }
            ty::BIGVARCHAR | ty::BIGCHAR => {
                let n = r.u16()?;
                let c = r.arr::<5>()?;
                WireType::VarChar(n, Collation(c))
            }
            ty::BIGVARBINARY => WireType::VarBinary(r.u16()?),
            ty::BIGBINARY => match r.u16()? {
                0xFFFF => return bad("BIGBINARY of length 0xFFFF"),
                n => WireType::Binary(n),
            },
            // XML_INFO (MS-TDS 2.2.5.5.3): SCHEMA_PRESENT, then (if 1) the schema collection's
            // database and owner (B_VARCHAR) and name (US_VARCHAR).
            ty::XML => {
                match r.u8()? {
                    0 => {}
                    1 => {
                        r.b_varchar()?;
                        r.b_varchar()?;
                        r.us_varchar()?;
                    }
                    n => return bad(format!("XML SCHEMA_PRESENT {n}")),
                }
                WireType::Xml
            }
            ty::SSVARIANT => WireType::Variant(r.u32()?),
            ty::GUID => match r.u8()? {
                16 => WireType::Guid,
                n => return bad(format!("GUID length {n}")),
            },
            other => return bad(format!("unsupported data type 0x{other:02X}")),
        })
    }

    /// The SQL type this wire type carries, for comparing with a table column.
    pub fn sql_type(&self) -> Option<SqlType> {
        Some(match *self {
            WireType::FixedInt(1) | WireType::IntN(1) => SqlType::TinyInt,
            WireType::FixedInt(2) | WireType::IntN(2) => SqlType::SmallInt,
            WireType::FixedInt(4) | WireType::IntN(4) => SqlType::Int,
            WireType::FixedInt(_) | WireType::IntN(_) => SqlType::BigInt,
            WireType::FixedBit | WireType::BitN => SqlType::Bit,
            WireType::DecimalN { numeric: false, precision, scale, .. } => SqlType::Decimal { precision, scale },
            WireType::DecimalN { numeric: true, precision, scale, .. } => SqlType::Numeric { precision, scale },
            WireType::FixedDateTime | WireType::DateTimeN(8) => SqlType::DateTime,
            WireType::DateTime2N(s) => SqlType::DateTime2(s),
            WireType::NVarChar(0xFFFF) => SqlType::NVarChar(None),
            WireType::NVarChar(n) => SqlType::NVarChar(Some(n / 2)),
            WireType::VarChar(0xFFFF, c) => SqlType::VarChar(None, c),
            WireType::VarChar(n, c) => SqlType::VarChar(Some(n), c),
            WireType::FixedFloat(8) | WireType::FloatN(8) => SqlType::Float,
            WireType::VarBinary(0xFFFF) => SqlType::VarBinary(None),
            WireType::VarBinary(n) => SqlType::VarBinary(Some(n)),
            WireType::Binary(n) => SqlType::Binary(n),
            WireType::Xml => SqlType::Xml,
            WireType::Variant(_) => SqlType::SqlVariant,
            WireType::Guid => SqlType::UniqueIdentifier,
            _ => return None,
        })
    }

    /// Reads one value of this type (a ROW column or an RPC parameter value).
    pub fn decode_value(&self, r: &mut Rd) -> WResult<Value> {
        match *self {
            WireType::Null => Ok(Value::Null),
            WireType::FixedInt(n) => read_int(r, n),
            WireType::FixedBit => Ok(Value::Bool(r.u8()? != 0)),
            WireType::FixedFloat(n) => read_float(r, n),
            WireType::FixedDateTime => read_datetime(r, 8),
            WireType::IntN(_) => match r.u8()? {
                0 => Ok(Value::Null),
                n @ (1 | 2 | 4 | 8) => read_int(r, n),
                n => bad(format!("INTN value length {n}")),
            },
            WireType::BitN => match r.u8()? {
                0 => Ok(Value::Null),
                1 => Ok(Value::Bool(r.u8()? != 0)),
                n => bad(format!("BITN value length {n}")),
            },
            WireType::FloatN(_) => match r.u8()? {
                0 => Ok(Value::Null),
                n @ (4 | 8) => read_float(r, n),
                n => bad(format!("FLTN value length {n}")),
            },
            WireType::DateTimeN(_) => match r.u8()? {
                0 => Ok(Value::Null),
                n @ (4 | 8) => read_datetime(r, n),
                n => bad(format!("DATETIMN value length {n}")),
            },
            WireType::DateN => match r.u8()? {
                0 => Ok(Value::Null),
                3 => Ok(Value::DateTime2(read_u24(r)? as i64 * TICKS_PER_DAY)),
                n => bad(format!("DATEN value length {n}")),
            },
            WireType::DecimalN { precision, scale, .. } => {
                let n = r.u8()?;
                if n == 0 {
                    return Ok(Value::Null);
                }
                if !matches!(n, 5 | 9 | 13 | 17) {
                    return bad(format!("DECIMALN value length {n}"));
                }
                let sign = r.u8()?;
                let mut mag = [0u8; 16];
                mag[..(n - 1) as usize].copy_from_slice(r.bytes((n - 1) as usize)?);
                let m = u128::from_le_bytes(mag);
                if m >= 10u128.pow(precision as u32) {
                    return bad(format!("DECIMALN value {m} exceeds precision {precision}"));
                }
                let m = m as i128;
                Ok(Value::Decimal { mantissa: if sign == 0 { -m } else { m }, scale })
            }
            WireType::DateTime2N(scale) => {
                let n = r.u8()?;
                if n == 0 {
                    return Ok(Value::Null);
                }
                let tlen = time_len(scale);
                if n != tlen + 3 {
                    return bad(format!("DATETIME2N value length {n} for scale {scale}"));
                }
                let mut t = [0u8; 8];
                t[..tlen as usize].copy_from_slice(r.bytes(tlen as usize)?);
                let units = u64::from_le_bytes(t) as i64;
                let ticks = units * 10i64.pow(7 - scale as u32);
                if ticks >= TICKS_PER_DAY {
                    return bad("DATETIME2N time beyond one day");
                }
                let days = read_u24(r)? as i64;
                Ok(Value::DateTime2(days * TICKS_PER_DAY + ticks))
            }
            WireType::NVarChar(max) => match read_var_bytes(r, max)? {
                None => Ok(Value::Null),
                Some(b) => Ok(Value::Str(utf16_to_string(&b)?)),
            },
            WireType::VarChar(max, coll) => match read_var_bytes(r, max)? {
                None => Ok(Value::Null),
                Some(b) => Ok(Value::Str(coll.decode(&b).map_err(WireError::Malformed)?)),
            },
            WireType::VarBinary(max) => Ok(read_var_bytes(r, max)?.map_or(Value::Null, Value::Bytes)),
            WireType::Binary(len) => Ok(read_var_bytes(r, len)?.map_or(Value::Null, Value::Bytes)),
            WireType::Xml => match read_var_bytes(r, 0xFFFF)? {
                None => Ok(Value::Null),
                // A byte-order mark may lead the UTF-16 text; it is not part of the value.
                Some(b) => Ok(Value::Str(utf16_to_string(b.strip_prefix(&[0xFF, 0xFE]).unwrap_or(&b))?)),
            },
            WireType::Guid => match r.u8()? {
                0 => Ok(Value::Null),
                16 => Ok(Value::Bytes(r.bytes(16)?.to_vec())),
                n => bad(format!("GUID value length {n}")),
            },
            WireType::Variant(max) => {
                let n = r.u32()?;
                if n == 0 {
                    return Ok(Value::Null);
                }
                if n > max {
                    return bad(format!("SQL_VARIANT of {n} bytes exceeds declared max {max}"));
                }
                decode_variant(r.bytes(n as usize)?)
            }
        }
    }
}

impl WireType {
    /// Steps over one value of this type without decoding it (lengths are read and checked
    /// like [`WireType::decode_value`] checks them, bytes are not interpreted): the
    /// count-only bulk path, which only needs row boundaries.
    pub fn skip_value(&self, r: &mut Rd) -> WResult<()> {
        let fixed = |r: &mut Rd, n: usize| r.bytes(n).map(drop);
        match *self {
            WireType::Null => Ok(()),
            WireType::FixedInt(n) | WireType::FixedFloat(n) => fixed(r, n as usize),
            WireType::FixedBit => fixed(r, 1),
            WireType::FixedDateTime => fixed(r, 8),
            WireType::IntN(_) | WireType::BitN | WireType::FloatN(_) | WireType::DateTimeN(_) | WireType::DateN | WireType::DecimalN { .. } | WireType::DateTime2N(_) | WireType::Guid => {
                let n = r.u8()?;
                let ok = match *self {
                    WireType::IntN(_) => matches!(n, 0 | 1 | 2 | 4 | 8),
                    WireType::BitN => n <= 1,
                    WireType::FloatN(_) | WireType::DateTimeN(_) => matches!(n, 0 | 4 | 8),
                    WireType::DateN => matches!(n, 0 | 3),
                    WireType::DecimalN { .. } => matches!(n, 0 | 5 | 9 | 13 | 17),
                    WireType::DateTime2N(scale) => n == 0 || n == time_len(scale) + 3,
                    WireType::Guid => matches!(n, 0 | 16),
                    _ => false,
                };
                if !ok {
                    return bad(format!("{self:?} value length {n}"));
                }
                fixed(r, n as usize)
            }
            WireType::NVarChar(max) | WireType::VarChar(max, _) | WireType::VarBinary(max) | WireType::Binary(max) => skip_var_bytes(r, max),
            WireType::Xml => skip_var_bytes(r, 0xFFFF),
            WireType::Variant(max) => {
                let n = r.u32()?;
                if n > max {
                    return bad(format!("SQL_VARIANT of {n} bytes exceeds declared max {max}"));
                }
                fixed(r, n as usize)
            }
        }
    }
}

/// [`read_var_bytes`] without copying.
fn skip_var_bytes(r: &mut Rd, max: u16) -> WResult<()> {
    if max != 0xFFFF {
        let n = r.u16()?;
        if n == 0xFFFF {
            return Ok(());
        }
        if n > max {
            return bad(format!("value length {n} exceeds declared max {max}"));
        }
        return r.bytes(n as usize).map(drop);
    }
    let total = r.u64()?;
    if total == u64::MAX {
        return Ok(());
    }
    let mut len = 0u64;
    loop {
        let n = r.u32()? as usize;
        if n == 0 {
            break;
        }
        r.bytes(n)?;
        len += n as u64;
    }
    if total != 0xFFFF_FFFF_FFFF_FFFE && total != len {
        return bad(format!("PLP total length {total} but chunks hold {len}"));
    }
    Ok(())
}

/// A SQL_VARIANT's bytes after its 4-byte length (MS-TDS 2.2.5.5.4: base type byte, property
/// byte count, properties, data) as a value. Base types as SQL Server stores them: the fixed
/// INT1/2/4/8, BIT, FLT8, DATETIME; DECIMALN/NUMERICN (precision, scale), DATETIME2N
/// (scale), BIGVARCHAR/BIGCHAR/NVARCHAR/NCHAR (collation, max length in bytes),
/// BIGVARBINARY/BIGBINARY (max length); the data carries no length of its own.
pub fn decode_variant(raw: &[u8]) -> WResult<Value> {
    let mut r = Rd::new(raw);
    let base_ty = r.u8().map_err(|_| WireError::Malformed("SQL_VARIANT without a base type".into()))?;
    let nprops = r.u8().map_err(|_| WireError::Malformed("SQL_VARIANT without a property count".into()))? as usize;
    let props = r.bytes(nprops).map_err(|_| WireError::Malformed(format!("SQL_VARIANT of {} bytes with {nprops} property bytes", raw.len())))?;
    let data = &raw[2 + nprops..];
    let want = |n: usize| if nprops == n { Ok(()) } else { bad(format!("SQL_VARIANT base type 0x{base_ty:02X} with {nprops} property bytes (MS-TDS: {n})")) };
    let fixed = |n: usize| if nprops == 0 && data.len() == n { Ok(()) } else { bad(format!("SQL_VARIANT base type 0x{base_ty:02X}: {nprops} property and {} data bytes", data.len())) };
    let mut d = Rd::new(data);
    let (base, value) = match base_ty {
        ty::INT1 | ty::INT2 | ty::INT4 | ty::INT8 => {
            let (t, w) = match base_ty {
                ty::INT1 => (SqlType::TinyInt, 1),
                ty::INT2 => (SqlType::SmallInt, 2),
                ty::INT4 => (SqlType::Int, 4),
                _ => (SqlType::BigInt, 8),
            };
            fixed(w as usize)?;
            (t, read_int(&mut d, w)?)
        }
        ty::BIT => {
            fixed(1)?;
            (SqlType::Bit, Value::Bool(data[0] != 0))
        }
        // REAL (FLT4) is not stored: as a FLOAT it would come back as another base type.
        ty::FLT8 => {
            fixed(8)?;
            (SqlType::Float, read_float(&mut d, 8)?)
        }
        ty::DATETIME => {
            fixed(8)?;
            (SqlType::DateTime, read_datetime(&mut d, 8)?)
        }
        ty::DECIMALN | ty::NUMERICN => {
            want(2)?;
            let (precision, scale) = (props[0], props[1]);
            let t = if base_ty == ty::NUMERICN { SqlType::Numeric { precision, scale } } else { SqlType::Decimal { precision, scale } };
            let w = WireType::DecimalN { numeric: base_ty == ty::NUMERICN, len: decimal_len(precision), precision, scale };
            if !(1..=38).contains(&precision) || scale > precision || data.is_empty() || data.len() > 17 {
                return bad(format!("SQL_VARIANT {} of {} data bytes", t.sql_name(), data.len()));
            }
            // The DECIMALN value with its length byte in front.
            let mut v = vec![data.len() as u8];
            v.extend_from_slice(data);
            (t, w.decode_value(&mut Rd::new(&v))?)
        }
        ty::DATETIME2N => {
            want(1)?;
            let scale = props[0];
            if scale > 7 || data.len() != time_len(scale) as usize + 3 {
                return bad(format!("SQL_VARIANT datetime2({scale}) of {} data bytes", data.len()));
            }
            let mut v = vec![data.len() as u8];
            v.extend_from_slice(data);
            (SqlType::DateTime2(scale), WireType::DateTime2N(scale).decode_value(&mut Rd::new(&v))?)
        }
        ty::BIGVARCHAR | ty::BIGCHAR | ty::NVARCHAR | ty::NCHAR => {
            want(7)?;
            let coll = Collation([props[0], props[1], props[2], props[3], props[4]]);
            let max = u16::from_le_bytes([props[5], props[6]]);
            if data.len() > max as usize {
                return bad(format!("SQL_VARIANT string of {} bytes exceeds its max length {max}", data.len()));
            }
            if matches!(base_ty, ty::NVARCHAR | ty::NCHAR) {
                (SqlType::NVarChar(Some(max / 2)), Value::Str(utf16_to_string(data)?))
            } else {
                (SqlType::VarChar(Some(max), coll), Value::Str(coll.decode(data).map_err(WireError::Malformed)?))
            }
        }
        ty::GUID => {
            fixed(16)?;
            (SqlType::UniqueIdentifier, Value::Bytes(data.to_vec()))
        }
        ty::BIGVARBINARY | ty::BIGBINARY => {
            want(2)?;
            let max = u16::from_le_bytes([props[0], props[1]]);
            if data.len() > max as usize {
                return bad(format!("SQL_VARIANT binary of {} bytes exceeds its max length {max}", data.len()));
            }
            (if base_ty == ty::BIGBINARY { SqlType::Binary(max) } else { SqlType::VarBinary(Some(max)) }, Value::Bytes(data.to_vec()))
        }
        t => return bad(format!("SQL_VARIANT base type 0x{t:02X} is not one the test server stores")),
    };
    Ok(Value::Variant(Box::new(Variant { base, value })))
}

/// Appends a SQL_VARIANT value: its 4-byte length, then base type, properties and data as
/// [`decode_variant`] reads them.
pub fn encode_variant(b: &mut Vec<u8>, v: &Variant) -> Result<(), String> {
    let at = b.len();
    b.extend_from_slice(&[0; 4]);
    let base = v.base;
    match (base, &v.value) {
        (SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt, Value::Int(i)) => {
            let w = int_width(&base);
            b.extend_from_slice(&[match w {
                1 => ty::INT1,
                2 => ty::INT2,
                4 => ty::INT4,
                _ => ty::INT8,
            }, 0]);
            put_int(b, w, *i);
        }
        (SqlType::Bit, Value::Bool(x)) => b.extend_from_slice(&[ty::BIT, 0, *x as u8]),
        (SqlType::Float, Value::Float(f)) => {
            b.extend_from_slice(&[ty::FLT8, 0]);
            b.extend_from_slice(&f.to_le_bytes());
        }
        (SqlType::DateTime, Value::DateTime2(_)) => {
            b.extend_from_slice(&[ty::DATETIME, 0]);
            encode_value(b, &base, false, &v.value)?;
        }
        (SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale }, Value::Decimal { .. }) => {
            b.extend_from_slice(&[if matches!(base, SqlType::Numeric { .. }) { ty::NUMERICN } else { ty::DECIMALN }, 2, precision, scale]);
            let start = b.len();
            encode_value(b, &base, true, &v.value)?;
            // The data has no length byte of its own.
            b.remove(start);
        }
        (SqlType::DateTime2(s), Value::DateTime2(_)) => {
            b.extend_from_slice(&[ty::DATETIME2N, 1, s]);
            let start = b.len();
            encode_value(b, &base, true, &v.value)?;
            b.remove(start);
        }
        (SqlType::VarChar(Some(n), coll), Value::Str(s)) => {
            b.extend_from_slice(&[ty::BIGVARCHAR, 7]);
            b.extend_from_slice(&coll.0);
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&coll.encode_exact(s)?);
        }
        (SqlType::NVarChar(Some(n)), Value::Str(s)) => {
            b.extend_from_slice(&[ty::NVARCHAR, 7]);
            b.extend_from_slice(&COLLATION);
            b.extend_from_slice(&n.saturating_mul(2).to_le_bytes());
            b.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        }
        (SqlType::UniqueIdentifier, Value::Bytes(x)) if x.len() == 16 => {
            b.extend_from_slice(&[ty::GUID, 0]);
            b.extend_from_slice(x);
        }
        (SqlType::Binary(n) | SqlType::VarBinary(Some(n)), Value::Bytes(x)) => {
            b.extend_from_slice(&[if matches!(base, SqlType::Binary(_)) { ty::BIGBINARY } else { ty::BIGVARBINARY }, 2]);
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(x);
        }
        (t, v) => return Err(format!("SQL_VARIANT of base type {} cannot hold {v:?}", t.sql_name())),
    }
    let n = b.len() - at - 4;
    if n > VARIANT_MAX as usize {
        return Err(format!("SQL_VARIANT of {n} bytes exceeds {VARIANT_MAX}"));
    }
    b[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
    Ok(())
}

fn read_u24(r: &mut Rd) -> WResult<u32> {
    let b = r.bytes(3)?;
    Ok(b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16)
}

fn read_int(r: &mut Rd, n: u8) -> WResult<Value> {
    Ok(Value::Int(match n {
        1 => r.u8()? as i64,
        2 => r.u16()? as i16 as i64,
        4 => r.u32()? as i32 as i64,
        _ => r.u64()? as i64,
    }))
}

fn read_float(r: &mut Rd, n: u8) -> WResult<Value> {
    Ok(Value::Float(if n == 4 { f32::from_bits(r.u32()?) as f64 } else { f64::from_bits(r.u64()?) }))
}

/// DATETIME: days since 1900-01-01 and 1/300 s ticks (or SMALLDATETIME: u16 days, u16 minutes).
fn read_datetime(r: &mut Rd, n: u8) -> WResult<Value> {
    const DAYS_1900: i64 = 693_595;
    let (days, ticks) = if n == 4 {
        let d = r.u16()? as i64;
        let m = r.u16()? as i64;
        (d, m * 60 * 10_000_000)
    } else {
        let d = r.u32()? as i32 as i64;
        let t = r.u32()? as i64;
        (d, (t * 10_000_000 * 10 + 1500) / 3000)
    };
    Ok(Value::DateTime2((DAYS_1900 + days) * TICKS_PER_DAY + ticks))
}

/// Reads a USHORTLEN value (u16 length, 0xFFFF = NULL) or, for MAX types, a PLP value.
fn read_var_bytes(r: &mut Rd, max: u16) -> WResult<Option<Vec<u8>>> {
    if max != 0xFFFF {
        let n = r.u16()?;
        if n == 0xFFFF {
            return Ok(None);
        }
        if n > max {
            return bad(format!("value length {n} exceeds declared max {max}"));
        }
        return Ok(Some(r.bytes(n as usize)?.to_vec()));
    }
    let total = r.u64()?;
    if total == u64::MAX {
        return Ok(None);
    }
    let mut out = Vec::new();
    loop {
        let n = r.u32()? as usize;
        if n == 0 {
            break;
        }
        out.extend_from_slice(r.bytes(n)?);
    }
    if total != 0xFFFF_FFFF_FFFF_FFFE && total != out.len() as u64 {
        return bad(format!("PLP total length {total} but chunks hold {}", out.len()));
    }
    Ok(Some(out))
}

/// Bytes of a DATETIME2/TIME time part for a scale.
pub fn time_len(scale: u8) -> u8 {
    match scale {
        0..=2 => 3,
        3 | 4 => 4,
        _ => 5,
    }
}

/// Bytes of a DECIMALN value for a precision.
pub fn decimal_len(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// A result column as sent in COLMETADATA.
#[derive(Debug, Clone, PartialEq)]
pub struct OutCol {
    /// Column name.
    pub name: String,
    /// Type.
    pub ty: SqlType,
    /// Nullable flag.
    pub nullable: bool,
    /// Identity flag (and then read-only, as SQL Server reports it).
    pub identity: bool,
}

/// COLMETADATA Flags (MS-TDS 2.2.7.4) as SQL Server sends them for a table's columns:
/// fNullable 0x0001; the 2-bit usUpdateable field (bits 2-3) as 0x0008 for a writable column
/// (what SQL Server, FreeTDS, python-tds and tiberius <= 0.12 — which rejects the unassigned
/// bit 0x0004 with "column metadata: invalid flags" — agree on); an IDENTITY column is
/// fIdentity 0x0010 and read-only (usUpdateable 0). Nothing else is set: the server's collation
/// is case-insensitive (no fCaseSen) and it has no computed, sparse, encrypted or hidden columns.
pub fn column_flags(c: &OutCol) -> u16 {
    let nullable = if c.nullable { FLAG_NULLABLE } else { 0 };
    nullable | if c.identity { FLAG_IDENTITY } else { FLAG_UPDATEABLE }
}

/// COLMETADATA fNullable.
pub const FLAG_NULLABLE: u16 = 0x0001;
/// COLMETADATA usUpdateable as SQL Server sends it for a writable column.
pub const FLAG_UPDATEABLE: u16 = 0x0008;
/// COLMETADATA fIdentity.
pub const FLAG_IDENTITY: u16 = 0x0010;

/// Appends server tokens to a message buffer.
#[derive(Debug, Default)]
pub struct TokenWriter {
    /// Encoded bytes.
    pub buf: Vec<u8>,
}

fn put_b_varchar(buf: &mut Vec<u8>, s: &str) {
    let n = s.encode_utf16().count().min(255);
    buf.push(n as u8);
    for u in s.encode_utf16().take(n) {
        buf.extend_from_slice(&u.to_le_bytes());
    }
}

fn put_us_varchar(buf: &mut Vec<u8>, s: &str) {
    let n = s.encode_utf16().count().min(65535);
    buf.extend_from_slice(&(n as u16).to_le_bytes());
    for u in s.encode_utf16().take(n) {
        buf.extend_from_slice(&u.to_le_bytes());
    }
}

impl TokenWriter {
    fn with_len(&mut self, tok: u8, f: impl FnOnce(&mut Vec<u8>)) {
        self.buf.push(tok);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        f(&mut self.buf);
        let len = (self.buf.len() - at - 2).min(65535) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_le_bytes());
    }

    /// LOGINACK for TDS 7.4.
    pub fn login_ack(&mut self) {
        self.with_len(token::LOGINACK, |b| {
            b.push(1); // SQL interface
            b.extend_from_slice(&[0x74, 0x00, 0x00, 0x04]); // TDS 7.4, big endian
            put_b_varchar(b, "Microsoft SQL Server");
            b.extend_from_slice(&[16, 0, 0x10, 0x00]); // version 16.0.4096
        });
    }

    /// ENVCHANGE with two B_VARCHAR values (database, language, packet size).
    pub fn env_str(&mut self, kind: u8, new: &str, old: &str) {
        self.with_len(token::ENVCHANGE, |b| {
            b.push(kind);
            put_b_varchar(b, new);
            put_b_varchar(b, old);
        });
    }

    /// ENVCHANGE type 20 (routing, MS-TDS 2.2.7.9): RoutingDataValueLength, protocol 0 (TCP),
    /// port, alternate server as US_VARCHAR; old value empty (a 2-byte zero length).
    pub fn env_routing(&mut self, host: &str, port: u16) {
        self.with_len(token::ENVCHANGE, |b| {
            b.push(20);
            let units: Vec<u16> = host.encode_utf16().collect();
            b.extend_from_slice(&((1 + 2 + 2 + 2 * units.len()) as u16).to_le_bytes());
            b.push(0);
            b.extend_from_slice(&port.to_le_bytes());
            b.extend_from_slice(&(units.len() as u16).to_le_bytes());
            for u in units {
                b.extend_from_slice(&u.to_le_bytes());
            }
            b.extend_from_slice(&[0, 0]);
        });
    }

    /// ENVCHANGE with two B_VARBYTE values (collation, transactions).
    pub fn env_bytes(&mut self, kind: u8, new: &[u8], old: &[u8]) {
        self.with_len(token::ENVCHANGE, |b| {
            b.push(kind);
            b.push(new.len() as u8);
            b.extend_from_slice(new);
            b.push(old.len() as u8);
            b.extend_from_slice(old);
        });
    }

    /// ERROR (0xAA) or INFO (0xAB).
    pub fn message(&mut self, tok: u8, number: i32, state: u8, class: u8, text: &str) {
        self.with_len(tok, |b| {
            b.extend_from_slice(&number.to_le_bytes());
            b.push(state);
            b.push(class);
            // SQL Server caps message text; a quoted huge statement must not overflow the u16 token length.
            let text: String = text.chars().take(4000).collect();
            put_us_varchar(b, &text);
            put_b_varchar(b, "tds-test-server");
            put_b_varchar(b, "");
            b.extend_from_slice(&1i32.to_le_bytes());
        });
    }

    /// DONE, DONEPROC or DONEINPROC with the statement's CurCmd ([`cur_cmd`]).
    pub fn done(&mut self, tok: u8, status: u16, cur_cmd: u16, count: u64) {
        self.buf.push(tok);
        self.buf.extend_from_slice(&status.to_le_bytes());
        self.buf.extend_from_slice(&cur_cmd.to_le_bytes());
        self.buf.extend_from_slice(&count.to_le_bytes());
    }

    /// RETURNSTATUS.
    pub fn return_status(&mut self, v: i32) {
        self.buf.push(token::RETURNSTATUS);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// COLMETADATA.
    pub fn col_metadata(&mut self, cols: &[OutCol]) {
        let b = &mut self.buf;
        b.push(token::COLMETADATA);
        b.extend_from_slice(&(cols.len() as u16).to_le_bytes());
        for c in cols {
            b.extend_from_slice(&0u32.to_le_bytes()); // UserType
            let flags = column_flags(c);
            b.extend_from_slice(&flags.to_le_bytes());
            encode_type_info(b, &c.ty, c.nullable);
            put_b_varchar(b, &c.name);
        }
    }

    /// ROW or NBCROW (see [`encode_row`]); `values` must already fit `cols` (see [`Value::coerce`]).
    pub fn row(&mut self, cols: &[OutCol], values: &[Value]) -> Result<(), String> {
        encode_row(&mut self.buf, cols.iter().map(|c| (&c.ty, c.nullable, c.name.as_str())), values).map(|_| ())
    }

    /// ORDER (MS-TDS 2.2.7.17): the 1-based result column numbers a result is sorted by.
    pub fn order(&mut self, columns: &[u16]) {
        self.buf.push(token::ORDER);
        self.buf.extend_from_slice(&((columns.len() * 2) as u16).to_le_bytes());
        for c in columns {
            self.buf.extend_from_slice(&c.to_le_bytes());
        }
    }
}

/// Bytes a NULL takes in a ROW token: the length prefix that says NULL (1 for the
/// BYTELEN types, 2 for USHORTLEN 0xFFFF, 8 for PLP_NULL). NOT NULL fixed types never are.
pub fn null_len(t: &SqlType) -> usize {
    match t {
        SqlType::NVarChar(None) | SqlType::VarChar(None, _) | SqlType::VarBinary(None) | SqlType::Xml => 8,
        SqlType::NVarChar(Some(_)) | SqlType::VarChar(Some(_), _) | SqlType::VarBinary(Some(_)) | SqlType::Binary(_) => 2,
        SqlType::SqlVariant => 4,
        _ => 1,
    }
}

/// Writes one row as ROW, or as NBCROW (MS-TDS 2.2.7.15: a null bitmap, then only the non-NULL
/// values) when that is shorter: when the bitmap's `ceil(columns / 8)` bytes are fewer than the
/// bytes the row's NULLs take in a ROW ([`null_len`]). MS-TDS leaves the choice to the server
/// row by row (NBCROW exists since TDS 7.3 to save the bytes of NULLs) and does not give SQL
/// Server's exact threshold; "when it is shorter" is the rule chosen here, so that both tokens
/// appear in ordinary results. Returns the offset (in `b`) just past each column's value (a
/// NULL's offset is where it would have been).
pub fn encode_row<'a>(b: &mut Vec<u8>, cols: impl Iterator<Item = (&'a SqlType, bool, &'a str)> + Clone, values: &[Value]) -> Result<Vec<usize>, String> {
    let bitmap_len = values.len().div_ceil(8);
    let null_bytes: usize = cols.clone().zip(values).filter(|(_, v)| v.is_null()).map(|((t, _, _), _)| null_len(t)).sum();
    let nbc = bitmap_len < null_bytes;
    let mut ends = Vec::with_capacity(values.len());
    if nbc {
        b.push(token::NBCROW);
        let at = b.len();
        b.resize(at + bitmap_len, 0);
        for (i, v) in values.iter().enumerate() {
            if v.is_null() {
                b[at + i / 8] |= 1 << (i % 8);
            }
        }
    } else {
        b.push(token::ROW);
    }
    for ((t, nullable, name), v) in cols.zip(values) {
        if !(nbc && v.is_null()) {
            encode_value(b, t, nullable, v).map_err(|e| format!("column '{name}': {e}"))?;
        }
        ends.push(b.len());
    }
    Ok(ends)
}

/// Writes TYPE_INFO the way SQL Server describes a column: fixed INT4/INT8/BIT/INT1/INT2 for
/// NOT NULL integers, INTN/BITN for nullable ones.
pub fn encode_type_info(b: &mut Vec<u8>, t: &SqlType, nullable: bool) {
    match *t {
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => {
            let w = int_width(t);
            if nullable {
                b.extend_from_slice(&[ty::INTN, w]);
            } else {
                b.push(match w {
                    1 => ty::INT1,
                    2 => ty::INT2,
                    4 => ty::INT4,
                    _ => ty::INT8,
                });
            }
        }
        SqlType::Bit => {
            if nullable {
                b.extend_from_slice(&[ty::BITN, 1]);
            } else {
                b.push(ty::BIT);
            }
        }
        SqlType::Decimal { precision, scale } => b.extend_from_slice(&[ty::DECIMALN, decimal_len(precision), precision, scale]),
        SqlType::Numeric { precision, scale } => b.extend_from_slice(&[ty::NUMERICN, decimal_len(precision), precision, scale]),
        SqlType::DateTime if nullable => b.extend_from_slice(&[ty::DATETIMN, 8]),
        SqlType::DateTime => b.push(ty::DATETIME),
        SqlType::DateTime2(s) => b.extend_from_slice(&[ty::DATETIME2N, s]),
        SqlType::NVarChar(n) => {
            b.push(ty::NVARCHAR);
            let max = n.map(|n| n.saturating_mul(2)).unwrap_or(0xFFFF);
            b.extend_from_slice(&max.to_le_bytes());
            b.extend_from_slice(&COLLATION);
        }
        SqlType::VarChar(n, coll) => {
            b.push(ty::BIGVARCHAR);
            b.extend_from_slice(&n.unwrap_or(0xFFFF).to_le_bytes());
            b.extend_from_slice(&coll.0);
        }
        SqlType::Binary(n) => {
            b.push(ty::BIGBINARY);
            b.extend_from_slice(&n.to_le_bytes());
        }
        SqlType::VarBinary(n) => {
            b.push(ty::BIGVARBINARY);
            b.extend_from_slice(&n.unwrap_or(0xFFFF).to_le_bytes());
        }
        // No schema collection (SCHEMA_PRESENT 0).
        SqlType::Xml => b.extend_from_slice(&[ty::XML, 0]),
        SqlType::Float if nullable => b.extend_from_slice(&[ty::FLTN, 8]),
        SqlType::Float => b.push(ty::FLT8),
        SqlType::UniqueIdentifier => b.extend_from_slice(&[ty::GUID, 16]),
        SqlType::SqlVariant => {
            b.push(ty::SSVARIANT);
            b.extend_from_slice(&VARIANT_MAX.to_le_bytes());
        }
    }
}

/// Byte width of an integer type's values.
pub fn int_width(t: &SqlType) -> u8 {
    match t {
        SqlType::TinyInt => 1,
        SqlType::SmallInt => 2,
        SqlType::Int => 4,
        _ => 8,
    }
}

fn put_int(b: &mut Vec<u8>, w: u8, i: i64) {
    match w {
        1 => b.push(i as u8),
        2 => b.extend_from_slice(&(i as i16).to_le_bytes()),
        4 => b.extend_from_slice(&(i as i32).to_le_bytes()),
        _ => b.extend_from_slice(&i.to_le_bytes()),
    }
}

/// Writes one value in the ROW format of a column described by [`encode_type_info`].
pub fn encode_value(b: &mut Vec<u8>, t: &SqlType, nullable: bool, v: &Value) -> Result<(), String> {
    match (t, v) {
        (SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt, Value::Null) if nullable => b.push(0),
        (SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt, Value::Int(i)) => {
            let w = int_width(t);
            if nullable {
                b.push(w);
            }
            put_int(b, w, *i);
        }
        (SqlType::Bit, Value::Null) if nullable => b.push(0),
        (SqlType::Bit, Value::Bool(x)) => {
            if nullable {
                b.push(1);
            }
            b.push(*x as u8);
        }
        (SqlType::Decimal { .. } | SqlType::Numeric { .. }, Value::Null) | (SqlType::DateTime2(_), Value::Null) => b.push(0),
        (SqlType::DateTime, Value::Null) if nullable => b.push(0),
        (SqlType::DateTime, Value::DateTime2(ticks)) => {
            let (days, t300) = crate::types::datetime_parts(*ticks).ok_or_else(|| format!("{v} is outside DATETIME's range"))?;
            if nullable {
                b.push(8);
            }
            b.extend_from_slice(&days.to_le_bytes());
            b.extend_from_slice(&t300.to_le_bytes());
        }
        (SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale }, Value::Decimal { mantissa, scale: vs }) if vs == scale => {
            let len = decimal_len(*precision);
            b.push(len);
            b.push(if *mantissa < 0 { 0 } else { 1 });
            b.extend_from_slice(&mantissa.unsigned_abs().to_le_bytes()[..(len - 1) as usize]);
        }
        (SqlType::DateTime2(s), Value::DateTime2(ticks)) => {
            let tl = time_len(*s);
            b.push(tl + 3);
            let days = ticks.div_euclid(TICKS_PER_DAY);
            let t = ticks.rem_euclid(TICKS_PER_DAY) / 10i64.pow(7 - *s as u32);
            b.extend_from_slice(&t.to_le_bytes()[..tl as usize]);
            b.extend_from_slice(&(days as u32).to_le_bytes()[..3]);
        }
        (SqlType::NVarChar(n), v) => {
            let bytes = match v {
                Value::Null => None,
                Value::Str(s) => Some(s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect::<Vec<u8>>()),
                other => return Err(format!("value {other:?} is not text")),
            };
            put_var_bytes(b, n.is_none(), bytes.as_deref());
        }
        (SqlType::VarChar(n, coll), v) => {
            let bytes = match v {
                Value::Null => None,
                Value::Str(s) => Some(coll.encode_exact(s)?),
                other => return Err(format!("value {other:?} is not text")),
            };
            put_var_bytes(b, n.is_none(), bytes.as_deref());
        }
        (SqlType::Binary(_), Value::Null) => put_var_bytes(b, false, None),
        (SqlType::VarBinary(n), Value::Null) => put_var_bytes(b, n.is_none(), None),
        (SqlType::Binary(_), Value::Bytes(x)) => put_var_bytes(b, false, Some(x)),
        (SqlType::VarBinary(n), Value::Bytes(x)) => put_var_bytes(b, n.is_none(), Some(x)),
        (SqlType::Xml, Value::Null) => put_var_bytes(b, true, None),
        (SqlType::Xml, Value::Str(s)) => put_var_bytes(b, true, Some(&s.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>())),
        (SqlType::Float, Value::Null) if nullable => b.push(0),
        (SqlType::Float, Value::Float(f)) => {
            if nullable {
                b.push(8);
            }
            b.extend_from_slice(&f.to_le_bytes());
        }
        (SqlType::UniqueIdentifier, Value::Null) => b.push(0),
        (SqlType::UniqueIdentifier, Value::Bytes(x)) if x.len() == 16 => {
            b.push(16);
            b.extend_from_slice(x);
        }
        (SqlType::SqlVariant, Value::Null) => b.extend_from_slice(&0u32.to_le_bytes()),
        (SqlType::SqlVariant, Value::Variant(var)) => encode_variant(b, var)?,
        (t, v) => return Err(format!("value {v:?} does not fit type {} (nullable {nullable})", t.sql_name())),
    }
    Ok(())
}

/// USHORTLEN bytes, or PLP for MAX types (chunks of at most [`PLP_CHUNK`] bytes; an empty
/// value is the total length 0 and the terminator alone, NULL is PLP_NULL).
fn put_var_bytes(b: &mut Vec<u8>, plp: bool, bytes: Option<&[u8]>) {
    match (plp, bytes) {
        (false, None) => b.extend_from_slice(&0xFFFFu16.to_le_bytes()),
        (false, Some(x)) => {
            b.extend_from_slice(&(x.len() as u16).to_le_bytes());
            b.extend_from_slice(x);
        }
        (true, None) => b.extend_from_slice(&u64::MAX.to_le_bytes()),
        (true, Some(x)) => {
            b.extend_from_slice(&(x.len() as u64).to_le_bytes());
            for chunk in x.chunks(PLP_CHUNK) {
                b.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                b.extend_from_slice(chunk);
            }
            b.extend_from_slice(&0u32.to_le_bytes());
        }
    }
}

/// A column of a BulkLoad COLMETADATA token.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkColumn {
    /// Column name.
    pub name: String,
    /// Declared wire type.
    pub wire: WireType,
    /// Flags word (bit 0 nullable).
    pub flags: u16,
}

/// Reads a COLMETADATA token body (after the 0x81 byte), as a client sends it in BulkLoad.
pub fn decode_col_metadata(r: &mut Rd) -> WResult<Vec<BulkColumn>> {
    let n = r.u16()?;
    if n == 0xFFFF {
        return Ok(Vec::new());
    }
    let mut cols = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let _user_type = r.u32()?;
        let flags = r.u16()?;
        let wire = WireType::decode(r)?;
        let name = r.b_varchar()?;
        cols.push(BulkColumn { name, wire, flags });
    }
    Ok(cols)
}

/// Reads an NBCROW body: null bitmap then the non-null values.
pub fn decode_nbc_row(r: &mut Rd, cols: &[BulkColumn]) -> WResult<Vec<Value>> {
    let bitmap = r.bytes(cols.len().div_ceil(8))?.to_vec();
    cols.iter()
        .enumerate()
        .map(|(i, c)| if bitmap[i / 8] & (1 << (i % 8)) != 0 { Ok(Value::Null) } else { c.wire.decode_value(r) })
        .collect()
}

/// Steps over a ROW (`nbc` false) or NBCROW body without decoding values.
pub fn skip_row(r: &mut Rd, cols: &[BulkColumn], nbc: bool) -> WResult<()> {
    if !nbc {
        return cols.iter().try_for_each(|c| c.wire.skip_value(r));
    }
    let bitmap = r.bytes(cols.len().div_ceil(8))?;
    cols.iter().enumerate().filter(|(i, _)| bitmap[i / 8] & (1 << (i % 8)) == 0).try_for_each(|(_, c)| c.wire.skip_value(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_row_encoding() {
        let cases = [
            (SqlType::Int, true, Value::Null),
            (SqlType::Int, false, Value::Int(-7)),
            (SqlType::BigInt, true, Value::Int(i64::MIN)),
            (SqlType::Decimal { precision: 38, scale: 4 }, true, Value::Decimal { mantissa: -(10i128.pow(38) - 1), scale: 4 }),
            (SqlType::DateTime2(3), false, Value::DateTime2(crate::types::parse_datetime("2024-05-06 07:08:09.123").unwrap())),
            (SqlType::NVarChar(None), true, Value::Str("héllo ✓".into())),
            (SqlType::NVarChar(Some(10)), true, Value::Null),
            (SqlType::varchar(Some(10)), false, Value::Str("€uro".into())),
            (SqlType::Bit, true, Value::Bool(true)),
        ];
        for (t, nullable, v) in cases {
            round_trip(t, nullable, v);
        }
    }

    /// Encodes `v` as a column of type `t` and decodes it with the TYPE_INFO the server
    /// describes the column with; skipping takes the same bytes, and every shorter prefix is
    /// Incomplete (never a panic or a wrong value).
    fn round_trip(t: SqlType, nullable: bool, v: Value) {
        {
            let mut ti = Vec::new();
            encode_type_info(&mut ti, &t, nullable);
            let wire = WireType::decode(&mut Rd::new(&ti)).unwrap();
            let mut b = Vec::new();
            encode_value(&mut b, &t, nullable, &v).unwrap();
            let mut r = Rd::new(&b);
            assert_eq!(wire.decode_value(&mut r).unwrap(), v, "{t:?}");
            assert_eq!(r.remaining(), 0);
            // Skipping steps over exactly the same bytes.
            let mut r = Rd::new(&b);
            wire.skip_value(&mut r).unwrap();
            assert_eq!(r.pos, b.len(), "skip {t:?}");
            // Every shorter prefix (a sample of them for long values) is Incomplete.
            let cuts: Vec<usize> = if b.len() < 4096 { (0..b.len()).collect() } else { (0..b.len()).step_by(997).chain(b.len() - 9..b.len()).collect() };
            for cut in cuts {
                assert_eq!(wire.decode_value(&mut Rd::new(&b[..cut])), Err(WireError::Incomplete), "{t:?} cut {cut}");
                assert_eq!(wire.skip_value(&mut Rd::new(&b[..cut])), Err(WireError::Incomplete), "skip {t:?} cut {cut}");
            }
        }
    }

    fn cyrillic() -> Collation {
        Collation::from_name("Cyrillic_General_CI_AS").unwrap()
    }

    fn variant(base: SqlType, value: Value) -> Value {
        Value::Variant(Box::new(Variant { base, value }))
    }

    #[test]
    fn child_table_types_round_trip() {
        let greek = Collation::from_name("Greek_CI_AS").unwrap();
        let long_xml = format!("<deadlock>{}</deadlock>", "<victim id=\"π\"/>".repeat(2000));
        let long_bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cases = [
            (SqlType::Binary(8), true, Value::Bytes(vec![0, 1, 2, 3, 0xFC, 0xFD, 0xFE, 0xFF])),
            (SqlType::Binary(8), true, Value::Null),
            (SqlType::VarBinary(Some(64)), true, Value::Bytes(vec![0xAB; 64])),
            (SqlType::VarBinary(Some(64)), true, Value::Bytes(Vec::new())),
            (SqlType::VarBinary(Some(64)), true, Value::Null),
            (SqlType::VarBinary(None), true, Value::Bytes(long_bytes)),
            (SqlType::VarBinary(None), true, Value::Bytes(Vec::new())),
            (SqlType::VarBinary(None), true, Value::Null),
            (SqlType::Xml, true, Value::Str(long_xml)),
            (SqlType::Xml, true, Value::Str(String::new())),
            (SqlType::Xml, true, Value::Null),
            (SqlType::VarChar(Some(20), cyrillic()), true, Value::Str("Привет, мир".into())),
            (SqlType::VarChar(Some(20), cyrillic()), true, Value::Str(String::new())),
            (SqlType::VarChar(None, greek), true, Value::Str("Καλημέρα ".repeat(1500))),
            (SqlType::VarChar(None, greek), true, Value::Null),
            (SqlType::NVarChar(None), true, Value::Str("日本語 ".repeat(3000))),
            (SqlType::Float, true, Value::Float(-1.25e300)),
            (SqlType::Float, false, Value::Float(0.1)),
            (SqlType::Float, true, Value::Null),
            (SqlType::SqlVariant, true, Value::Null),
            (SqlType::SqlVariant, true, variant(SqlType::TinyInt, Value::Int(255))),
            (SqlType::SqlVariant, true, variant(SqlType::SmallInt, Value::Int(-32768))),
            (SqlType::SqlVariant, true, variant(SqlType::Int, Value::Int(2147483647))),
            (SqlType::SqlVariant, true, variant(SqlType::BigInt, Value::Int(i64::MIN))),
            (SqlType::SqlVariant, true, variant(SqlType::Bit, Value::Bool(true))),
            (SqlType::SqlVariant, true, variant(SqlType::Float, Value::Float(1.0 / 3.0))),
            (SqlType::SqlVariant, true, variant(SqlType::Decimal { precision: 18, scale: 2 }, Value::Decimal { mantissa: -12345, scale: 2 })),
            (SqlType::SqlVariant, true, variant(SqlType::Numeric { precision: 38, scale: 10 }, Value::Decimal { mantissa: 10i128.pow(37), scale: 10 })),
            (SqlType::SqlVariant, true, variant(SqlType::DateTime, Value::DateTime2(crate::types::datetime_ticks(45_000, 12_345)))),
            (SqlType::SqlVariant, true, variant(SqlType::DateTime2(3), Value::DateTime2(crate::types::parse_datetime("2024-05-06 07:08:09.123").unwrap()))),
            (SqlType::SqlVariant, true, variant(SqlType::DateTime2(7), Value::DateTime2(crate::types::parse_datetime("9999-12-31 23:59:59.9999999").unwrap()))),
            (SqlType::SqlVariant, true, variant(SqlType::NVarChar(Some(256)), Value::Str("max server memory (MB) ✓".into()))),
            (SqlType::SqlVariant, true, variant(SqlType::VarChar(Some(30), cyrillic()), Value::Str("Память".into()))),
            (SqlType::SqlVariant, true, variant(SqlType::VarBinary(Some(16)), Value::Bytes(vec![1, 2, 3]))),
            (SqlType::SqlVariant, true, variant(SqlType::Binary(4), Value::Bytes(vec![9, 8, 7, 6]))),
            (SqlType::SqlVariant, true, variant(SqlType::NVarChar(Some(10)), Value::Str(String::new()))),
            (SqlType::SqlVariant, true, variant(SqlType::UniqueIdentifier, Value::Bytes((0..16).collect()))),
            (SqlType::UniqueIdentifier, true, Value::Bytes((100..116).collect())),
            (SqlType::UniqueIdentifier, false, Value::Bytes(vec![0xFF; 16])),
            (SqlType::UniqueIdentifier, true, Value::Null),
        ];
        for (t, nullable, v) in cases {
            round_trip(t, nullable, v);
        }
    }

    #[test]
    fn plp_values_are_chunked_and_terminated() {
        let x: Vec<u8> = (0..2 * PLP_CHUNK + 5).map(|i| i as u8).collect();
        let mut b = Vec::new();
        encode_value(&mut b, &SqlType::VarBinary(None), true, &Value::Bytes(x.clone())).unwrap();
        // Total length, then chunks of PLP_CHUNK, PLP_CHUNK and 5 bytes, then the terminator.
        let mut r = Rd::new(&b);
        assert_eq!(r.u64().unwrap(), x.len() as u64);
        let mut chunks = Vec::new();
        loop {
            let n = r.u32().unwrap() as usize;
            if n == 0 {
                break;
            }
            chunks.push(n);
            r.bytes(n).unwrap();
        }
        assert_eq!(chunks, vec![PLP_CHUNK, PLP_CHUNK, 5]);
        assert_eq!(r.remaining(), 0);
        // Empty: total 0 and the terminator; NULL: PLP_NULL alone.
        let mut b = Vec::new();
        encode_value(&mut b, &SqlType::Xml, true, &Value::Str(String::new())).unwrap();
        assert_eq!(b, [0u8; 12]);
        let mut b = Vec::new();
        encode_value(&mut b, &SqlType::Xml, true, &Value::Null).unwrap();
        assert_eq!(b, [0xFF; 8]);
        // What a client may send: UNKNOWN_PLP_LEN and chunks of any size, an XML byte-order mark.
        let mut b = 0xFFFF_FFFF_FFFF_FFFEu64.to_le_bytes().to_vec();
        for part in [&[0xFF, 0xFE, b'<', 0][..], &[b'a', 0, b'/'][..], &[0, b'>', 0][..]] {
            b.extend_from_slice(&(part.len() as u32).to_le_bytes());
            b.extend_from_slice(part);
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(WireType::Xml.decode_value(&mut Rd::new(&b)).unwrap(), Value::Str("<a/>".into()));
        // A total length the chunks do not add up to is malformed.
        let mut b = 3u64.to_le_bytes().to_vec();
        b.extend_from_slice(&[2, 0, 0, 0, 1, 2, 0, 0, 0, 0]);
        assert!(matches!(WireType::VarBinary(0xFFFF).decode_value(&mut Rd::new(&b)), Err(WireError::Malformed(_))));
    }

    #[test]
    fn varchar_is_sent_in_its_collations_code_page() {
        let t = SqlType::VarChar(Some(20), cyrillic());
        let mut ti = Vec::new();
        encode_type_info(&mut ti, &t, true);
        assert_eq!(ti, [ty::BIGVARCHAR, 20, 0, 0x19, 0x04, 0xD0, 0x00, 0x00]);
        let mut b = Vec::new();
        encode_value(&mut b, &t, true, &Value::Str("Жук".into())).unwrap();
        assert_eq!(b, [3, 0, 0xC6, 0xF3, 0xEA]);
        // A character the code page lacks is never sent as something else.
        assert!(encode_value(&mut Vec::new(), &t, true, &Value::Str("Ωmega".into())).unwrap_err().contains('Ω'));
        // Stored values are converted as SQL Server converts them: '?' for what the code page
        // lacks, the length in bytes.
        assert_eq!(Value::Str("Жук Ω".into()).coerce(&t, "c").unwrap(), Value::Str("Жук ?".into()));
        assert_eq!(Value::Str("Ж".repeat(21)).coerce(&t, "c").unwrap_err().number, 2628);
    }

    #[test]
    fn variants_are_laid_out_as_ms_tds_says() {
        let bytes = |v: Value| {
            let mut b = Vec::new();
            encode_value(&mut b, &SqlType::SqlVariant, true, &v).unwrap();
            b
        };
        // Length 6: INT4, no properties, 4 bytes.
        assert_eq!(bytes(variant(SqlType::Int, Value::Int(5))), [6, 0, 0, 0, ty::INT4, 0, 5, 0, 0, 0]);
        // DECIMALN: precision and scale, then sign and the 8-byte magnitude of precision 18.
        let mut want = vec![13, 0, 0, 0, ty::DECIMALN, 2, 18, 2, 1];
        want.extend_from_slice(&12345u64.to_le_bytes());
        assert_eq!(bytes(variant(SqlType::Decimal { precision: 18, scale: 2 }, Value::Decimal { mantissa: 12345, scale: 2 })), want);
        // NVARCHAR: collation and max length in bytes, then UTF-16LE without a length.
        assert_eq!(bytes(variant(SqlType::NVarChar(Some(10)), Value::Str("ab".into()))), [13, 0, 0, 0, ty::NVARCHAR, 7, 0x09, 0x04, 0xD0, 0x00, 0x34, 20, 0, b'a', 0, b'b', 0]);
        // VARCHAR: the bytes in the collation's code page.
        assert_eq!(bytes(variant(SqlType::VarChar(Some(30), cyrillic()), Value::Str("Жук".into()))), [12, 0, 0, 0, ty::BIGVARCHAR, 7, 0x19, 0x04, 0xD0, 0x00, 0x00, 30, 0, 0xC6, 0xF3, 0xEA]);
        // DATETIME2(3): the scale, then 4 time bytes and 3 date bytes.
        assert_eq!(bytes(variant(SqlType::DateTime2(3), Value::DateTime2(0)))[..7], [10, 0, 0, 0, ty::DATETIME2N, 1, 3]);
        // A MAX base type is not a variant's; nor are wrong property counts.
        assert!(Value::Str("x".into()).coerce(&SqlType::SqlVariant, "c").is_ok());
        assert_eq!(variant(SqlType::NVarChar(None), Value::Str("x".into())).coerce(&SqlType::SqlVariant, "c").unwrap_err().number, 206);
        assert!(matches!(decode_variant(&[ty::INT4, 1, 0, 5, 0, 0, 0]), Err(WireError::Malformed(_))));
        assert!(matches!(decode_variant(&[ty::INT4, 0, 5, 0, 0]), Err(WireError::Malformed(_))));
        assert!(matches!(decode_variant(&[0x99, 0]), Err(WireError::Malformed(_))));
        // REAL would be stored as FLOAT, another base type: refused rather than changed.
        assert!(matches!(decode_variant(&[ty::FLT4, 0, 0, 0, 0xC0, 0x3F]), Err(WireError::Malformed(_))));
    }

    #[test]
    fn xml_type_info_with_and_without_a_schema_collection() {
        assert_eq!(WireType::decode(&mut Rd::new(&[ty::XML, 0])), Ok(WireType::Xml));
        // SCHEMA_PRESENT 1: database "db" and owner "o" (B_VARCHAR), collection "c" (US_VARCHAR).
        let ti = [ty::XML, 1, 2, b'd', 0, b'b', 0, 1, b'o', 0, 1, 0, b'c', 0];
        let mut r = Rd::new(&ti);
        assert_eq!(WireType::decode(&mut r), Ok(WireType::Xml));
        assert_eq!(r.remaining(), 0);
        for cut in 0..ti.len() {
            assert_eq!(WireType::decode(&mut Rd::new(&ti[..cut])), Err(WireError::Incomplete), "cut {cut}");
        }
        assert!(matches!(WireType::decode(&mut Rd::new(&[ty::XML, 2])), Err(WireError::Malformed(_))));
    }
}
