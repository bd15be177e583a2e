//! The value checksum of `verify --values`, defined once and computed two ways: on Arrow
//! arrays (sources, the stage) and as T-SQL that SQL Server evaluates itself (MonitoringDB),
//! so both sides of a comparison compute exactly the same function.
//!
//! A value's hash is the first 4 bytes, as a big-endian INT, of the SHA-256 of its canonical
//! form: text as NVARCHAR (UTF-16LE, what `HASHBYTES('SHA2_256', CONVERT(NVARCHAR(...), x))`
//! hashes), integers and decimals as SQL Server writes them (`-12`, `0.5000` at the column's
//! scale), BIT as `1`/`0`, DATETIME2 as whole milliseconds (microseconds above precision 3)
//! since 1970-01-01 (`DATEDIFF_BIG`), binary as its bytes. A column's checksum over a group of
//! rows is its non-NULL count and the sum (as BIGINT: exact, order-independent, no overflow
//! below 2^32 rows) of its values' hashes; NULLs count apart, so a NULL set to a value or
//! back always shows.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, UInt8Type};

use crate::schema::SqlType;

/// One column's checksum over a group of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnSum {
    pub non_null: u64,
    pub sum: i64,
}

impl ColumnSum {
    /// Adds one value's hash (None: NULL).
    pub fn add(&mut self, hash: Option<i32>) {
        if let Some(h) = hash {
            self.non_null += 1;
            self.sum = self.sum.wrapping_add(h as i64);
        }
    }

    /// Adds another group's checksum.
    pub fn merge(&mut self, other: ColumnSum) {
        self.non_null += other.non_null;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

fn sha_int(bytes: &[u8]) -> i32 {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let d = d.as_ref();
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn text_hash(s: &str) -> i32 {
    Scratch::default().text(s)
}

/// Buffers reused across values (a hash per value must not cost two allocations).
#[derive(Default)]
struct Scratch {
    utf16: Vec<u8>,
    text: String,
}

impl Scratch {
    fn text(&mut self, s: &str) -> i32 {
        self.utf16.clear();
        self.utf16.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        sha_int(&self.utf16)
    }

    fn display(&mut self, v: impl std::fmt::Display) -> i32 {
        use std::fmt::Write;
        let mut t = std::mem::take(&mut self.text);
        t.clear();
        // Writing to a String cannot fail.
        let _ = write!(t, "{v}");
        let h = self.text(&t);
        self.text = t;
        h
    }
}

/// The hashes of `array`'s values at `rows` (None for NULL), or Err naming the Arrow type
/// this checksum has no canonical form for.
pub fn hashes(array: &dyn Array, rows: &[usize]) -> Result<Vec<Option<i32>>, String> {
    let mut sc = Scratch::default();
    let mut each = |f: &mut dyn FnMut(&mut Scratch, usize) -> i32| rows.iter().map(|&r| (!array.is_null(r)).then(|| f(&mut sc, r))).collect();
    Ok(match array.data_type() {
        DataType::Utf8 => each(&mut |sc, r| sc.text(array.as_string::<i32>().value(r))),
        DataType::LargeUtf8 => each(&mut |sc, r| sc.text(array.as_string::<i64>().value(r))),
        DataType::Int64 => each(&mut |sc, r| sc.display(array.as_primitive::<Int64Type>().value(r))),
        DataType::Int32 => each(&mut |sc, r| sc.display(array.as_primitive::<Int32Type>().value(r))),
        DataType::Int16 => each(&mut |sc, r| sc.display(array.as_primitive::<Int16Type>().value(r))),
        DataType::UInt8 => each(&mut |sc, r| sc.display(array.as_primitive::<UInt8Type>().value(r))),
        DataType::Boolean => each(&mut |sc, r| sc.text(if array.as_boolean().value(r) { "1" } else { "0" })),
        DataType::Decimal128(_, _) => each(&mut |sc, r| sc.text(&array.as_primitive::<Decimal128Type>().value_as_string(r))),
        DataType::Timestamp(TimeUnit::Millisecond, _) => each(&mut |sc, r| sc.display(array.as_primitive::<TimestampMillisecondType>().value(r))),
        DataType::Timestamp(TimeUnit::Microsecond, _) => each(&mut |sc, r| sc.display(array.as_primitive::<TimestampMicrosecondType>().value(r))),
        DataType::Binary => each(&mut |_, r| sha_int(array.as_binary::<i32>().value(r))),
        DataType::FixedSizeBinary(_) => each(&mut |_, r| sha_int(array.as_fixed_size_binary().value(r))),
        other => return Err(format!("no value checksum for Arrow type {other}")),
    })
}

/// [`hashes`], and for a type without a canonical form (a SQL_VARIANT's struct, …) the hash of
/// its Arrow display text: for comparing Arrow with Arrow only ([`tsql`] has no such form).
pub fn hashes_any(array: &dyn Array, rows: &[usize]) -> Vec<Option<i32>> {
    if let Ok(h) = hashes(array, rows) {
        return h;
    }
    let f = arrow::util::display::ArrayFormatter::try_new(array, &Default::default()).ok();
    rows.iter()
        .map(|&r| {
            (!array.is_null(r)).then(|| match &f {
                Some(f) => text_hash(&f.value(r).to_string()),
                None => text_hash(&format!("{:?}", array.slice(r, 1))),
            })
        })
        .collect()
}

/// The T-SQL select items computing `column`'s checksum over a GROUP BY group: its non-NULL
/// count, then the sum of its hashes; None for a type without a canonical form here.
pub fn tsql(column: &str, sql: SqlType) -> Option<String> {
    let c = format!("[{}]", column.replace(']', "]]"));
    let input = match sql {
        SqlType::BigInt | SqlType::Int | SqlType::SmallInt | SqlType::TinyInt | SqlType::Bit => format!("CONVERT(NVARCHAR(20), {c})"),
        SqlType::Decimal { precision, scale } => format!("CONVERT(NVARCHAR(50), CAST({c} AS DECIMAL({precision},{scale})))"),
        SqlType::DateTime2(p) => format!("CONVERT(NVARCHAR(20), DATEDIFF_BIG({}, '19700101', {c}))", if p <= 3 { "MILLISECOND" } else { "MICROSECOND" }),
        SqlType::NVarChar(_) | SqlType::NVarCharMax | SqlType::Text | SqlType::VarChar(_) | SqlType::VarCharMax | SqlType::Xml => format!("CAST({c} AS NVARCHAR(MAX))"),
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::VarBinaryMax => c.clone(),
        SqlType::DateTime | SqlType::SqlVariant => return None,
    };
    Some(format!("COUNT_BIG({c}), ISNULL(SUM(CAST(CAST(SUBSTRING(HASHBYTES('SHA2_256', {input}), 1, 4) AS INT) AS BIGINT)), 0)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int32Array, StringArray};

    #[test]
    fn hashes_are_sha256_of_the_nvarchar_text_and_nulls_count_apart() {
        // SHA-256 of "abc" in UTF-16LE (61 00 62 00 63 00) begins 0x13e22856, computed
        // independently: `printf 'a\0b\0c\0' | sha256sum`.
        assert_eq!(text_hash("abc"), 0x13e2_2856);
        let a = StringArray::from(vec![Some("abc"), None]);
        assert_eq!(hashes(&a, &[0, 1]).unwrap(), vec![Some(text_hash("abc")), None]);
        let d = Decimal128Array::from(vec![Some(5_000), Some(-5)]).with_precision_and_scale(9, 4).unwrap();
        assert_eq!(hashes(&d, &[0, 1]).unwrap(), vec![Some(text_hash("0.5000")), Some(text_hash("-0.0005"))]);
        let i = Int32Array::from(vec![-12]);
        assert_eq!(hashes(&i, &[0]).unwrap(), vec![Some(text_hash("-12"))]);
        let mut s = ColumnSum::default();
        for h in hashes(&a, &[0, 1]).unwrap() {
            s.add(h);
        }
        assert_eq!(s, ColumnSum { non_null: 1, sum: text_hash("abc") as i64 });
        assert!(tsql("SessionsCount", SqlType::Int).unwrap().contains("HASHBYTES('SHA2_256', CONVERT(NVARCHAR(20), [SessionsCount]))"));
        assert_eq!(tsql("v", SqlType::SqlVariant), None);
    }
}
