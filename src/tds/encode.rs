//! Bulk-load ROW tokens (MS-TDS 2.2.7.19, values as 2.2.5.5.1 describes them for the column
//! types of the BulkLoad COLMETADATA) encoded straight from target batches: for
//! `MonitoringDB.dbo.PerfSnapshotRun` ([`BulkLayout::for_columns`]) and for any batch of the
//! DBATools column types ([`BulkLayout::for_batch`]: integers, BIT, DECIMAL, DATETIME2(3),
//! NVARCHAR(n|MAX), VARCHAR(n|MAX) in the target column's code page, XML, BINARY,
//! VARBINARY(n|MAX), SQL_VARIANT). tiberius' per-row API (one `TokenRow` of owned
//! `ColumnData` per row, UTF-16 encoded per character) tops out near 0.5 M rows/s per
//! connection; this encoder writes whole batches with one pass per row and no allocation.
//!
//! A [`BulkLayout`] is made from the columns the server describes for the load; a column
//! whose type this encoder does not cover (for example a `GEOGRAPHY` in a customised
//! target table) makes [`BulkLayout::for_columns`] return the reason, and the sink then uses
//! tiberius' own row encoding instead.

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Decimal128Array, FixedSizeBinaryArray, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Decimal128Type, Int32Type, Int64Type, TimeUnit, TimestampMillisecondType};
use tiberius::{FixedLenType, MetaDataColumn, TypeInfo, VarLenType};

use crate::schema::{target_columns, Column, SqlType};
use crate::tds::decode::{collation_code_page, CodePage};
use crate::tds::unix_ms_to_datetime2;

/// How one column's values go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    /// DATETIME2(3): length 7, 4 bytes of milliseconds in the day, 3 bytes of days.
    DateTime2Ms,
    /// INT NOT NULL (fixed length, no length byte).
    Int4,
    /// INT NULL (INTN: length 0 or 4).
    IntN4,
    /// An INT value into a BIGINT NOT NULL column (fixed 8 bytes).
    Int8,
    /// An INT value into a BIGINT NULL column (INTN: length 0 or 8).
    IntN8,
    /// A BIGINT value into a BIGINT NOT NULL column.
    BigInt8,
    /// A BIGINT value into a BIGINT NULL column (INTN: length 0 or 8).
    BigIntN8,
    /// BIT NOT NULL: one byte.
    Bit,
    /// BIT NULL (BITN: length 0 or 1).
    BitN,
    /// NVARCHAR(n), n < MAX: 2-byte length (0xFFFF = NULL), UTF-16LE.
    NVarChar { max_bytes: usize },
    /// NVARCHAR(MAX) and XML: PLP chunks of UTF-16LE.
    Utf16Plp,
    /// VARCHAR(n), n < MAX: 2-byte length (0xFFFF = NULL), bytes in the column's code page.
    VarChar { max_bytes: usize, code_page: CodePage },
    /// VARCHAR(MAX): PLP chunks in the column's code page.
    VarCharPlp { code_page: CodePage },
    /// BINARY(n)/VARBINARY(n), n < MAX: 2-byte length (0xFFFF = NULL); BINARY takes exactly n
    /// bytes (`exact`).
    Binary { max: usize, exact: bool },
    /// VARBINARY(MAX): PLP chunks.
    BinaryPlp,
    /// SQL_VARIANT: 4-byte length (0 = NULL), base type, properties, value.
    Variant,
    /// DECIMAL/NUMERIC: length, sign byte, magnitude in `bytes` bytes (the length the column's
    /// TYPE_INFO declares: some SQL Server-compatible engines read exactly that many).
    Decimal { bytes: usize },
}

/// Bytes of a PLP chunk: SQL Server's own chunk size for (MAX) values.
const PLP_CHUNK: usize = 8000;

/// The wire layout of one bulk load: for each column of the load's COLMETADATA (in its
/// order), which column of the batch it takes and how it is encoded.
#[derive(Debug, Clone)]
pub struct BulkLayout {
    cols: Vec<(usize, Enc)>,
    /// The batch's columns, in batch order (for messages).
    columns: Vec<Column>,
}

/// A batch column, downcast once per batch.
enum ColRef<'a> {
    Ts(&'a TimestampMillisecondArray),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    Bool(&'a BooleanArray),
    Str(&'a StringArray),
    Dec(&'a Decimal128Array),
    Bin(&'a BinaryArray),
    FixedBin(&'a FixedSizeBinaryArray),
    Variant(&'a StructArray, &'a StringArray, &'a StringArray),
}

fn decimal_bytes(precision: u8) -> usize {
    match precision {
        0..=9 => 4,
        10..=19 => 8,
        20..=28 => 12,
        _ => 16,
    }
}

/// The 5 TDS bytes of a collation tiberius read.
fn collation_bytes(c: tiberius::Collation) -> [u8; 5] {
    let i = c.info().to_le_bytes();
    [i[0], i[1], i[2], i[3], c.sort_id()]
}

impl BulkLayout {
    /// The layout of `MonitoringDB.dbo.PerfSnapshotRun` as the schema documents it
    /// (`ServerID INT NOT NULL`, the counters `INT NULL`): what the `null` bench target encodes.
    pub fn documented() -> BulkLayout {
        let cols = target_columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let enc = match c.sql {
                    SqlType::DateTime2(3) => Enc::DateTime2Ms,
                    SqlType::Int if c.nullable => Enc::IntN4,
                    SqlType::Int => Enc::Int4,
                    SqlType::NVarChar(n) => Enc::NVarChar { max_bytes: 2 * n as usize },
                    SqlType::Decimal { precision, .. } => Enc::Decimal { bytes: decimal_bytes(precision) },
                    // The target has no BIGINT or BIT columns.
                    _ => unreachable!("no such target column"),
                };
                (i, enc)
            })
            .collect();
        BulkLayout { cols, columns: target_columns().to_vec() }
    }

    /// The layout of a load into a table declared with exactly `columns` (in order, nullability
    /// as given), with the column metadata SQL Server describes such a table with (MS-TDS
    /// 2.2.7.4: INT NOT NULL as INT4, INT NULL as INTN(4), NVARCHAR(n) with 2n bytes, (MAX)
    /// types and XML as PLP, character types in SQL_Latin1_General_CP1_CI_AS): what the `null`
    /// bench target encodes child tables with. `Err` names a type it does not write.
    pub fn declared(columns: &[Column]) -> Result<BulkLayout, String> {
        // SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, CI/AS, sort ID 52 (code page 1252).
        let coll = Some(tiberius::Collation::new(0x00D0_0409, 52));
        let v = |t, len, c| TypeInfo::VarLenSized(tiberius::VarLenContext::new(t, len, c));
        let meta = columns
            .iter()
            .map(|c| {
                let n = c.nullable;
                let ty = match c.sql {
                    SqlType::BigInt if n => v(VarLenType::Intn, 8, None),
                    SqlType::BigInt => TypeInfo::FixedLen(FixedLenType::Int8),
                    SqlType::Int if n => v(VarLenType::Intn, 4, None),
                    SqlType::Int => TypeInfo::FixedLen(FixedLenType::Int4),
                    SqlType::Bit if n => v(VarLenType::Bitn, 1, None),
                    SqlType::Bit => TypeInfo::FixedLen(FixedLenType::Bit),
                    SqlType::Decimal { precision, scale } => {
                        TypeInfo::VarLenSizedPrecision { ty: VarLenType::Decimaln, size: decimal_bytes(precision) + 1, precision, scale: scale.max(0) as u8 }
                    }
                    SqlType::DateTime2(p) => v(VarLenType::Datetime2, p as usize, None),
                    SqlType::NVarChar(len) => v(VarLenType::NVarchar, 2 * len as usize, coll),
                    SqlType::NVarCharMax | SqlType::Text => v(VarLenType::NVarchar, 0xFFFF, coll),
                    SqlType::VarChar(len) => v(VarLenType::BigVarChar, len as usize, coll),
                    SqlType::VarCharMax => v(VarLenType::BigVarChar, 0xFFFF, coll),
                    SqlType::Binary(len) => v(VarLenType::BigBinary, len as usize, None),
                    SqlType::VarBinary(len) => v(VarLenType::BigVarBin, len as usize, None),
                    SqlType::VarBinaryMax => v(VarLenType::BigVarBin, 0xFFFF, None),
                    SqlType::Xml => TypeInfo::Xml { schema: None, size: 0xffff_ffff_ffff_fffe },
                    SqlType::SqlVariant => v(VarLenType::SSVariant, crate::tds::variant::MAX_BYTES, None),
                    other => return Err(format!("column {} is {}, which perfcopy's encoder does not write", c.name, other.sql_name())),
                };
                Ok(MetaDataColumn { base: tiberius::BaseMetaDataColumn { flags: Default::default(), ty, table_name: None }, col_name: c.name.into() })
            })
            .collect::<Result<Vec<_>, String>>()?;
        BulkLayout::for_batch(columns, &meta)
    }

    /// The layout for a `PerfSnapshotRun` load ([`target_columns`]) whose columns the server
    /// described as `meta`, or the reason this encoder does not cover them.
    pub fn for_columns(meta: &[MetaDataColumn<'_>]) -> Result<BulkLayout, String> {
        BulkLayout::for_batch(target_columns(), meta)
    }

    /// The layout for a load of batches with `columns` (in batch order) into columns the server
    /// described as `meta`, or the reason this encoder does not cover them. Each value is
    /// encoded at the length `meta` declares (VARCHAR in the code page of its collation).
    pub fn for_batch(columns: &[Column], meta: &[MetaDataColumn<'_>]) -> Result<BulkLayout, String> {
        if meta.len() != columns.len() {
            return Err(format!("the load has {} columns, perfcopy writes {}", meta.len(), columns.len()));
        }
        let mut cols = Vec::with_capacity(meta.len());
        for m in meta {
            let name = m.col_name.as_ref();
            let (i, c) = columns
                .iter()
                .enumerate()
                .find(|(_, c)| c.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("column {name} is not one perfcopy writes"))?;
            let code_page = |v: &tiberius::VarLenContext| {
                let coll = v.collation().ok_or_else(|| format!("column {name} is VARCHAR without a collation"))?;
                collation_code_page(collation_bytes(coll)).map_err(|why| format!("column {name} is VARCHAR in {why}"))
            };
            let enc = match (&m.base.ty, c.sql.arrow_type()) {
                (TypeInfo::VarLenSized(v), DataType::Timestamp(TimeUnit::Millisecond, _)) if v.r#type() == VarLenType::Datetime2 && v.len() == 3 => Enc::DateTime2Ms,
                (TypeInfo::FixedLen(FixedLenType::Int4), DataType::Int32) => Enc::Int4,
                (TypeInfo::VarLenSized(v), DataType::Int32) if v.r#type() == VarLenType::Intn && v.len() == 4 => Enc::IntN4,
                // A wider target column (checked against INFORMATION_SCHEMA before the load).
                (TypeInfo::FixedLen(FixedLenType::Int8), DataType::Int32) => Enc::Int8,
                (TypeInfo::VarLenSized(v), DataType::Int32) if v.r#type() == VarLenType::Intn && v.len() == 8 => Enc::IntN8,
                (TypeInfo::FixedLen(FixedLenType::Int8), DataType::Int64) => Enc::BigInt8,
                (TypeInfo::VarLenSized(v), DataType::Int64) if v.r#type() == VarLenType::Intn && v.len() == 8 => Enc::BigIntN8,
                (TypeInfo::FixedLen(FixedLenType::Bit), DataType::Boolean) => Enc::Bit,
                (TypeInfo::VarLenSized(v), DataType::Boolean) if v.r#type() == VarLenType::Bitn => Enc::BitN,
                (TypeInfo::VarLenSized(v), DataType::Utf8) if v.r#type() == VarLenType::NVarchar && v.len() < 0xFFFF => Enc::NVarChar { max_bytes: v.len() },
                (TypeInfo::VarLenSized(v), DataType::Utf8) if v.r#type() == VarLenType::NVarchar => Enc::Utf16Plp,
                (TypeInfo::Xml { .. }, DataType::Utf8) => Enc::Utf16Plp,
                (TypeInfo::VarLenSized(v), DataType::Utf8) if v.r#type() == VarLenType::BigVarChar && v.len() < 0xFFFF => {
                    Enc::VarChar { max_bytes: v.len(), code_page: code_page(v)? }
                }
                (TypeInfo::VarLenSized(v), DataType::Utf8) if v.r#type() == VarLenType::BigVarChar => Enc::VarCharPlp { code_page: code_page(v)? },
                (TypeInfo::VarLenSized(v), DataType::Binary | DataType::FixedSizeBinary(_)) if v.r#type() == VarLenType::BigVarBin && v.len() < 0xFFFF => {
                    Enc::Binary { max: v.len(), exact: false }
                }
                (TypeInfo::VarLenSized(v), DataType::Binary | DataType::FixedSizeBinary(_)) if v.r#type() == VarLenType::BigVarBin => Enc::BinaryPlp,
                (TypeInfo::VarLenSized(v), DataType::FixedSizeBinary(n)) if v.r#type() == VarLenType::BigBinary && v.len() == n as usize => {
                    Enc::Binary { max: v.len(), exact: true }
                }
                (TypeInfo::VarLenSized(v), DataType::Struct(_)) if v.r#type() == VarLenType::SSVariant && c.sql == SqlType::SqlVariant => Enc::Variant,
                (TypeInfo::VarLenSizedPrecision { ty, size, precision, scale }, DataType::Decimal128(p, s))
                    if matches!(ty, VarLenType::Decimaln | VarLenType::Numericn) && *scale as i8 == s && *precision >= p && (decimal_bytes(p) + 1..=17).contains(size) =>
                {
                    Enc::Decimal { bytes: size - 1 }
                }
                (ty, _) => return Err(format!("column {name} has type {ty:?}, which perfcopy's encoder does not write as {}", c.sql.sql_name())),
            };
            cols.push((i, enc));
        }
        Ok(BulkLayout { cols, columns: columns.to_vec() })
    }

    /// Appends rows `rows` of a batch (in the layout's column order) as ROW tokens.
    /// `Err` names the column and row of a value the layout cannot carry (a NULL for a NOT NULL
    /// column, a string longer than its column, a character its code page lacks); `buf` then
    /// holds a partial row.
    pub fn encode(&self, batch: &RecordBatch, rows: std::ops::Range<usize>, buf: &mut Vec<u8>) -> Result<(), String> {
        let refs = self
            .cols
            .iter()
            .map(|&(i, enc)| {
                let a = batch.column(i);
                let wrong = || format!("column {} of the batch is {}, not the layout's type", self.columns[i].name, a.data_type());
                Ok(match enc {
                    Enc::DateTime2Ms => ColRef::Ts(a.as_primitive_opt::<TimestampMillisecondType>().ok_or_else(wrong)?),
                    Enc::Int4 | Enc::IntN4 | Enc::Int8 | Enc::IntN8 => ColRef::I32(a.as_primitive_opt::<Int32Type>().ok_or_else(wrong)?),
                    Enc::BigInt8 | Enc::BigIntN8 => ColRef::I64(a.as_primitive_opt::<Int64Type>().ok_or_else(wrong)?),
                    Enc::Bit | Enc::BitN => ColRef::Bool(a.as_boolean_opt().ok_or_else(wrong)?),
                    Enc::NVarChar { .. } | Enc::Utf16Plp | Enc::VarChar { .. } | Enc::VarCharPlp { .. } => ColRef::Str(a.as_string_opt::<i32>().ok_or_else(wrong)?),
                    Enc::Decimal { .. } => ColRef::Dec(a.as_primitive_opt::<Decimal128Type>().ok_or_else(wrong)?),
                    Enc::Binary { .. } | Enc::BinaryPlp => match a.data_type() {
                        DataType::FixedSizeBinary(_) => ColRef::FixedBin(a.as_fixed_size_binary_opt().ok_or_else(wrong)?),
                        _ => ColRef::Bin(a.as_binary_opt::<i32>().ok_or_else(wrong)?),
                    },
                    Enc::Variant => {
                        let s = a.as_struct_opt().ok_or_else(wrong)?;
                        let (b, v) = (s.column_by_name("base_type").ok_or_else(wrong)?, s.column_by_name("value").ok_or_else(wrong)?);
                        ColRef::Variant(s, b.as_string_opt::<i32>().ok_or_else(wrong)?, v.as_string_opt::<i32>().ok_or_else(wrong)?)
                    }
                })
            })
            .collect::<Result<Vec<ColRef<'_>>, String>>()?;
        buf.reserve(rows.len() * 320);
        for r in rows {
            buf.push(0xD1);
            for (&(i, enc), col) in self.cols.iter().zip(&refs) {
                let ok = match (enc, col) {
                    (Enc::DateTime2Ms, ColRef::Ts(a)) => {
                        if a.is_null(r) {
                            buf.push(0);
                        } else {
                            // Length 7, the time (4 bytes) and the date (the low 3 of 4 bytes),
                            // in one append.
                            let (days, in_day) = unix_ms_to_datetime2(a.value(r));
                            let (t, d) = ((in_day as u32).to_le_bytes(), (days as u32).to_le_bytes());
                            buf.extend_from_slice(&[7, t[0], t[1], t[2], t[3], d[0], d[1], d[2]]);
                        }
                        true
                    }
                    (Enc::Int4, ColRef::I32(a)) => {
                        buf.extend_from_slice(&a.value(r).to_le_bytes());
                        !a.is_null(r)
                    }
                    (Enc::IntN4, ColRef::I32(a)) => {
                        if a.is_null(r) {
                            buf.push(0);
                        } else {
                            let v = a.value(r).to_le_bytes();
                            buf.extend_from_slice(&[4, v[0], v[1], v[2], v[3]]);
                        }
                        true
                    }
                    (Enc::Int8, ColRef::I32(a)) => {
                        buf.extend_from_slice(&i64::from(a.value(r)).to_le_bytes());
                        !a.is_null(r)
                    }
                    (Enc::IntN8, ColRef::I32(a)) => {
                        if a.is_null(r) {
                            buf.push(0);
                        } else {
                            buf.push(8);
                            buf.extend_from_slice(&i64::from(a.value(r)).to_le_bytes());
                        }
                        true
                    }
                    (Enc::BigInt8, ColRef::I64(a)) => {
                        buf.extend_from_slice(&a.value(r).to_le_bytes());
                        !a.is_null(r)
                    }
                    (Enc::BigIntN8, ColRef::I64(a)) => {
                        if a.is_null(r) {
                            buf.push(0);
                        } else {
                            buf.push(8);
                            buf.extend_from_slice(&a.value(r).to_le_bytes());
                        }
                        true
                    }
                    (Enc::Bit, ColRef::Bool(a)) => {
                        buf.push(u8::from(a.value(r)));
                        !a.is_null(r)
                    }
                    (Enc::BitN, ColRef::Bool(a)) => {
                        if a.is_null(r) {
                            buf.push(0);
                        } else {
                            buf.extend_from_slice(&[1, u8::from(a.value(r))]);
                        }
                        true
                    }
                    (Enc::NVarChar { max_bytes }, ColRef::Str(a)) => put_nvarchar(buf, (!a.is_null(r)).then(|| a.value(r)), max_bytes),
                    (Enc::Utf16Plp, ColRef::Str(a)) => {
                        if a.is_null(r) {
                            buf.extend_from_slice(&u64::MAX.to_le_bytes());
                        } else {
                            put_utf16_plp(buf, a.value(r));
                        }
                        true
                    }
                    (Enc::VarChar { max_bytes, code_page }, ColRef::Str(a)) => {
                        if a.is_null(r) {
                            buf.extend_from_slice(&[0xff, 0xff]);
                            true
                        } else {
                            let bytes = to_code_page(a.value(r), code_page).map_err(|why| self.refusal(i, r, &why))?;
                            let fits = bytes.len() <= max_bytes;
                            if fits {
                                buf.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                                buf.extend_from_slice(&bytes);
                            }
                            fits
                        }
                    }
                    (Enc::VarCharPlp { code_page }, ColRef::Str(a)) => {
                        if a.is_null(r) {
                            buf.extend_from_slice(&u64::MAX.to_le_bytes());
                        } else {
                            let bytes = to_code_page(a.value(r), code_page).map_err(|why| self.refusal(i, r, &why))?;
                            put_plp(buf, &bytes);
                        }
                        true
                    }
                    (Enc::Binary { max, exact }, ColRef::Bin(a)) => put_binary(buf, (!a.is_null(r)).then(|| a.value(r)), max, exact),
                    (Enc::Binary { max, exact }, ColRef::FixedBin(a)) => put_binary(buf, (!a.is_null(r)).then(|| a.value(r)), max, exact),
                    (Enc::BinaryPlp, ColRef::Bin(a)) => put_binary_plp(buf, (!a.is_null(r)).then(|| a.value(r))),
                    (Enc::BinaryPlp, ColRef::FixedBin(a)) => put_binary_plp(buf, (!a.is_null(r)).then(|| a.value(r))),
                    (Enc::Variant, ColRef::Variant(s, base, value)) => {
                        if s.is_null(r) {
                            buf.extend_from_slice(&0u32.to_le_bytes());
                        } else {
                            let at = buf.len();
                            buf.extend_from_slice(&[0; 4]);
                            crate::tds::variant::from_text(base.value(r), value.value(r), buf).map_err(|why| self.refusal(i, r, &why))?;
                            let len = buf.len() - at - 4;
                            if len > crate::tds::variant::MAX_BYTES {
                                return Err(self.refusal(i, r, &format!("a SQL_VARIANT of {len} bytes (at most {})", crate::tds::variant::MAX_BYTES)));
                            }
                            buf[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
                        }
                        true
                    }
                    (Enc::Decimal { bytes }, ColRef::Dec(a)) => {
                        if a.is_null(r) {
                            buf.push(0);
                            true
                        } else {
                            put_decimal(buf, a.value(r), bytes)
                        }
                    }
                    _ => false,
                };
                if !ok {
                    let c = &self.columns[i];
                    return Err(format!("column {} at row {r} of the batch: value does not fit {}{}", c.name, c.sql.sql_name(), if c.nullable { "" } else { " NOT NULL" }));
                }
            }
        }
        Ok(())
    }

    /// The message for a value of column `i`, row `r` that cannot be sent, and why.
    #[cold]
    fn refusal(&self, i: usize, r: usize, why: &str) -> String {
        format!("column {} at row {r} of the batch: {why}", self.columns[i].name)
    }
}

/// Text in a code page; `Err` names a character the code page cannot hold (never a silent '?').
fn to_code_page(s: &str, cp: CodePage) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    if s.is_ascii() {
        return Ok(std::borrow::Cow::Borrowed(s.as_bytes()));
    }
    if cp == encoding_rs::UTF_8 {
        return Ok(std::borrow::Cow::Borrowed(s.as_bytes()));
    }
    let mut enc = cp.new_encoder();
    let mut out = vec![0u8; enc.max_buffer_length_from_utf8_without_replacement(s.len()).unwrap_or(s.len() * 4)];
    let (res, read, written) = enc.encode_from_utf8_without_replacement(s, &mut out, true);
    match res {
        encoding_rs::EncoderResult::InputEmpty => {
            out.truncate(written);
            Ok(std::borrow::Cow::Owned(out))
        }
        encoding_rs::EncoderResult::Unmappable(c) => Err(format!("character '{c}' (U+{:04X}, at byte {read}) is not in code page {}", c as u32, cp.name())),
        encoding_rs::EncoderResult::OutputFull => Err(format!("text too long to convert to code page {}", cp.name())),
    }
}

/// A PLP value (MS-TDS 2.2.5.2.3): total length, chunks of at most [`PLP_CHUNK`] bytes, the
/// zero-length terminator.
fn put_plp(buf: &mut Vec<u8>, v: &[u8]) {
    buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
    for chunk in v.chunks(PLP_CHUNK) {
        buf.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        buf.extend_from_slice(chunk);
    }
    buf.extend_from_slice(&0u32.to_le_bytes());
}

/// A UTF-16LE PLP value written straight from UTF-8 (ASCII widened in bulk): one chunk of the
/// whole value, as tiberius writes PLP values too.
fn put_utf16_plp(buf: &mut Vec<u8>, s: &str) {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; 12]);
    if !super::ascii::widen(s.as_bytes(), buf) {
        buf.truncate(at + 12);
        for u in s.encode_utf16() {
            buf.extend_from_slice(&u.to_le_bytes());
        }
    }
    let n = buf.len() - at - 12;
    if n == 0 {
        buf.truncate(at);
        put_plp(buf, &[]);
        return;
    }
    buf[at..at + 8].copy_from_slice(&(n as u64).to_le_bytes());
    buf[at + 8..at + 12].copy_from_slice(&(n as u32).to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
}

/// BINARY/VARBINARY(n): 2-byte length (0xFFFF for NULL), bytes. `false` when longer than the
/// column, or (BINARY) not exactly its length.
fn put_binary(buf: &mut Vec<u8>, v: Option<&[u8]>, max: usize, exact: bool) -> bool {
    let Some(v) = v else {
        buf.extend_from_slice(&[0xff, 0xff]);
        return true;
    };
    if v.len() > max || (exact && v.len() != max) {
        return false;
    }
    buf.extend_from_slice(&(v.len() as u16).to_le_bytes());
    buf.extend_from_slice(v);
    true
}

/// VARBINARY(MAX): PLP (all ones for NULL).
fn put_binary_plp(buf: &mut Vec<u8>, v: Option<&[u8]>) -> bool {
    match v {
        None => buf.extend_from_slice(&u64::MAX.to_le_bytes()),
        Some(v) => put_plp(buf, v),
    }
    true
}

/// NVARCHAR: 2-byte length in bytes (0xFFFF for NULL), then UTF-16LE. `false` when the value
/// is longer than the column.
fn put_nvarchar(buf: &mut Vec<u8>, s: Option<&str>, max_bytes: usize) -> bool {
    let Some(s) = s else {
        buf.extend_from_slice(&[0xff, 0xff]);
        return true;
    };
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    if !super::ascii::widen(s.as_bytes(), buf) {
        buf.truncate(at + 2);
        for u in s.encode_utf16() {
            buf.extend_from_slice(&u.to_le_bytes());
        }
    }
    let len = buf.len() - at - 2;
    if len > max_bytes {
        return false;
    }
    buf[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
    true
}

/// DECIMAL: length (1 + `bytes`), sign (1 = positive), magnitude little-endian. `false` when
/// the magnitude needs more than `bytes` bytes.
fn put_decimal(buf: &mut Vec<u8>, v: i128, bytes: usize) -> bool {
    let mag = v.unsigned_abs().to_le_bytes();
    if mag[bytes..].iter().any(|&b| b != 0) {
        return false;
    }
    let mut out = [0u8; 18];
    out[0] = 1 + bytes as u8;
    out[1] = u8::from(v >= 0);
    out[2..2 + bytes].copy_from_slice(&mag[..bytes]);
    buf.extend_from_slice(&out[..2 + bytes]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_values_as_ms_tds_describes_them() {
        let mut buf = Vec::new();
        assert!(put_nvarchar(&mut buf, Some("Aé"), 10));
        assert_eq!(buf, vec![4, 0, b'A', 0, 0xe9, 0]);
        buf.clear();
        assert!(put_nvarchar(&mut buf, None, 10));
        assert_eq!(buf, vec![0xff, 0xff]);
        buf.clear();
        assert!(!put_nvarchar(&mut buf, Some("abcdef"), 10), "6 characters are 12 bytes");
        // Every length around the ASCII blocks, with one non-ASCII character or none.
        let ascii: String = (0..50u8).map(|i| (b' ' + i % 90) as char).collect();
        for len in 0..ascii.len() {
            for odd in [None, Some('é'), Some('\u{80}'), Some('😀')] {
                let mut text = ascii[..len].to_string();
                if let Some(c) = odd {
                    text.insert(len / 2, c);
                }
                let utf16: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
                buf.clear();
                assert!(put_nvarchar(&mut buf, Some(&text), 4000));
                assert_eq!((buf[..2].to_vec(), &buf[2..]), ((utf16.len() as u16).to_le_bytes().to_vec(), &utf16[..]));
            }
        }
        buf.clear();
        assert!(put_decimal(&mut buf, -12_345, 4));
        assert_eq!(buf, vec![5, 0, 0x39, 0x30, 0, 0]);
        buf.clear();
        assert!(!put_decimal(&mut buf, 1 << 40, 4));
    }

    #[test]
    fn documented_layout_follows_the_target_columns() {
        let l = BulkLayout::documented();
        assert_eq!(l.cols.len(), target_columns().len());
        assert_eq!(l.cols[0], (0, Enc::DateTime2Ms));
        assert_eq!(l.cols[1], (1, Enc::Int4));
        assert_eq!(l.cols[2], (2, Enc::NVarChar { max_bytes: 256 }));
        assert_eq!(l.cols[11], (11, Enc::IntN4));
    }
}
