//! Bulk-load ROW tokens (MS-TDS 2.2.7.19, values as 2.2.5.5.1 describes them for the column
//! types of the BulkLoad COLMETADATA) encoded straight from target batches, for
//! `MonitoringDB.dbo.PerfSnapshotRun`. tiberius' per-row API (one `TokenRow` of owned
//! `ColumnData` per row, UTF-16 encoded per character) tops out near 0.5 M rows/s per
//! connection; this encoder writes whole batches with one pass per row and no allocation.
//!
//! A [`BulkLayout`] is made from the columns the server describes for the load; a column
//! whose type this encoder does not cover (for example an `NVARCHAR(MAX)` in a customised
//! target table) makes [`BulkLayout::for_columns`] return the reason, and the sink then uses
//! tiberius' own row encoding instead.

use arrow::array::{Array, AsArray, Decimal128Array, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Decimal128Type, Int32Type, TimeUnit, TimestampMillisecondType};
use tiberius::{FixedLenType, MetaDataColumn, TypeInfo, VarLenType};

use crate::schema::{target_columns, SqlType};
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
    /// NVARCHAR(n), n < MAX: 2-byte length (0xFFFF = NULL), UTF-16LE.
    NVarChar { max_bytes: usize },
    /// DECIMAL/NUMERIC: length, sign byte, magnitude in `bytes` bytes (the length the column's
    /// TYPE_INFO declares: some SQL Server-compatible engines read exactly that many).
    Decimal { bytes: usize },
}

/// The wire layout of one bulk load: for each column of the load's COLMETADATA (in its
/// order), which column of the target batch it takes and how it is encoded.
#[derive(Debug, Clone)]
pub struct BulkLayout {
    cols: Vec<(usize, Enc)>,
}

/// A batch column, downcast once per batch.
enum ColRef<'a> {
    Ts(&'a TimestampMillisecondArray),
    I32(&'a Int32Array),
    Str(&'a StringArray),
    Dec(&'a Decimal128Array),
}

fn decimal_bytes(precision: u8) -> usize {
    match precision {
        0..=9 => 4,
        10..=19 => 8,
        20..=28 => 12,
        _ => 16,
    }
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
        BulkLayout { cols }
    }

    /// The layout for a load whose columns the server described as `meta`, or the reason this
    /// encoder does not cover them.
    pub fn for_columns(meta: &[MetaDataColumn<'_>]) -> Result<BulkLayout, String> {
        let targets = target_columns();
        if meta.len() != targets.len() {
            return Err(format!("the load has {} columns, perfcopy writes {}", meta.len(), targets.len()));
        }
        let mut cols = Vec::with_capacity(meta.len());
        for m in meta {
            let name = m.col_name.as_ref();
            let (i, c) = targets
                .iter()
                .enumerate()
                .find(|(_, c)| c.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("column {name} is not one perfcopy writes"))?;
            let enc = match (&m.base.ty, c.sql.arrow_type()) {
                (TypeInfo::VarLenSized(v), DataType::Timestamp(TimeUnit::Millisecond, _)) if v.r#type() == VarLenType::Datetime2 && v.len() == 3 => Enc::DateTime2Ms,
                (TypeInfo::FixedLen(FixedLenType::Int4), DataType::Int32) => Enc::Int4,
                (TypeInfo::VarLenSized(v), DataType::Int32) if v.r#type() == VarLenType::Intn && v.len() == 4 => Enc::IntN4,
                // A wider target column (checked against INFORMATION_SCHEMA before the load).
                (TypeInfo::FixedLen(FixedLenType::Int8), DataType::Int32) => Enc::Int8,
                (TypeInfo::VarLenSized(v), DataType::Int32) if v.r#type() == VarLenType::Intn && v.len() == 8 => Enc::IntN8,
                (TypeInfo::VarLenSized(v), DataType::Utf8) if v.r#type() == VarLenType::NVarchar && v.len() < 0xFFFF => Enc::NVarChar { max_bytes: v.len() },
                (TypeInfo::VarLenSizedPrecision { ty, size, precision, scale }, DataType::Decimal128(p, s))
                    if matches!(ty, VarLenType::Decimaln | VarLenType::Numericn) && *scale as i8 == s && *precision >= p && (decimal_bytes(p) + 1..=17).contains(size) =>
                {
                    Enc::Decimal { bytes: size - 1 }
                }
                (ty, _) => return Err(format!("column {name} has type {ty:?}, which perfcopy's encoder does not write as {}", c.sql.sql_name())),
            };
            cols.push((i, enc));
        }
        Ok(BulkLayout { cols })
    }

    /// Appends rows `rows` of a target batch (in [`target_columns`] order) as ROW tokens.
    /// `Err` names the column and row of a value the layout cannot carry (a NULL for a NOT NULL
    /// column, a string longer than its column); `buf` then holds a partial row.
    pub fn encode(&self, batch: &RecordBatch, rows: std::ops::Range<usize>, buf: &mut Vec<u8>) -> Result<(), String> {
        let refs: Vec<ColRef<'_>> = self
            .cols
            .iter()
            .map(|&(i, enc)| {
                let a = batch.column(i);
                match enc {
                    Enc::DateTime2Ms => ColRef::Ts(a.as_primitive::<TimestampMillisecondType>()),
                    Enc::Int4 | Enc::IntN4 | Enc::Int8 | Enc::IntN8 => ColRef::I32(a.as_primitive::<Int32Type>()),
                    Enc::NVarChar { .. } => ColRef::Str(a.as_string::<i32>()),
                    Enc::Decimal { .. } => ColRef::Dec(a.as_primitive::<Decimal128Type>()),
                }
            })
            .collect();
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
                    (Enc::NVarChar { max_bytes }, ColRef::Str(a)) => put_nvarchar(buf, (!a.is_null(r)).then(|| a.value(r)), max_bytes),
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
                    let c = &target_columns()[i];
                    return Err(format!("column {} at row {r} of the batch: value does not fit {}{}", c.name, c.sql.sql_name(), if c.nullable { "" } else { " NOT NULL" }));
                }
            }
        }
        Ok(())
    }
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
