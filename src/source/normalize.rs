//! Turns a batch as a source stores it (any column order, names in any case, extra columns,
//! ms or us timestamps, narrower integer or decimal types) into the canonical schema of
//! [`crate::schema`], checking every value that could not be stored in the SQL Server column.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Int32Array, StringArray, TimestampMillisecondArray};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::schema::{Column, SqlType, OPTIONAL_SOURCE_COLUMN, SOURCE_COLUMNS};
use crate::source::Projection;

/// For each canonical column, where it is in the source's own schema.
#[derive(Debug, Clone)]
pub struct ColumnMatch {
    label: String,
    /// Index into the source schema per entry of [`SOURCE_COLUMNS`]; `None` only for ServerID
    /// (and PerfSnapshotRunID in a stage file).
    positions: Vec<Option<usize>>,
}

/// Whether a source without `PerfSnapshotRunID` is allowed: a perfcopy stage file, whose rows
/// then get their 1-based position in the file as ID (stage files are immutable, so positions
/// are stable, and within a file they give the survivor rule a deterministic order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunIds {
    Required,
    FilePosition,
}

impl ColumnMatch {
    /// Matches a source's schema against [`SOURCE_COLUMNS`] by name, case-insensitively.
    /// A missing required column or a type that cannot hold the column's values is an error
    /// naming the source and column.
    pub fn new(label: &str, schema: &SchemaRef) -> Result<ColumnMatch> {
        Self::with_run_ids(label, schema, RunIds::Required)
    }

    /// [`ColumnMatch::new`], optionally allowing a missing PerfSnapshotRunID.
    pub fn with_run_ids(label: &str, schema: &SchemaRef, run_ids: RunIds) -> Result<ColumnMatch> {
        let mut positions = Vec::with_capacity(SOURCE_COLUMNS.len());
        for col in &SOURCE_COLUMNS {
            let found: Vec<usize> = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name().eq_ignore_ascii_case(col.name))
                .map(|(i, _)| i)
                .collect();
            match found.as_slice() {
                [] if col.name == OPTIONAL_SOURCE_COLUMN => positions.push(None),
                [] if col.name == SOURCE_COLUMNS[crate::schema::src::RUN_ID].name && run_ids == RunIds::FilePosition => positions.push(None),
                [] => {
                    return Err(Error::MissingColumn {
                        source_label: label.to_string(),
                        column: col.name.to_string(),
                        present: schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
                [i] => {
                    check_type(label, col, schema.field(*i).data_type())?;
                    positions.push(Some(*i));
                }
                _ => {
                    return Err(Error::Source {
                        source_label: label.to_string(),
                        message: format!(
                            "column '{}' appears {} times (names are matched case-insensitively)",
                            col.name,
                            found.len()
                        ),
                    })
                }
            }
        }
        Ok(ColumnMatch {
            label: label.to_string(),
            positions,
        })
    }

    /// Whether the source has a ServerID column.
    pub fn has_server_id(&self) -> bool {
        self.positions[crate::schema::src::SERVER_ID].is_some()
    }

    /// Source-schema indices of the columns a projection needs, ascending.
    pub fn needed(&self, projection: Projection) -> Vec<usize> {
        let wanted = projection_columns(projection);
        let mut idx: Vec<usize> = wanted.iter().filter_map(|&c| self.positions[c]).collect();
        idx.sort_unstable();
        idx
    }

    /// Name of the canonical column `canonical` in the source's own spelling.
    pub fn source_name<'a>(&self, schema: &'a SchemaRef, canonical: usize) -> Option<&'a str> {
        self.positions[canonical].map(|i| schema.field(i).name().as_str())
    }

    /// Converts a batch read from the source (with all or some of its columns, found by name)
    /// into the canonical batch for `projection`. `row_name` names a row of the batch in
    /// errors the way the user can find it ("row 1234 of the file", "PerfSnapshotRunID 99").
    pub fn normalize(&self, batch: &RecordBatch, projection: Projection, row_name: &RowName) -> Result<RecordBatch> {
        self.normalize_at(batch, projection, row_name, None)
    }

    /// [`ColumnMatch::normalize`]; `position` gives a row's 1-based position in its file, used
    /// as PerfSnapshotRunID when the source has none.
    pub fn normalize_at(&self, batch: &RecordBatch, projection: Projection, row_name: &RowName, position: Option<&dyn Fn(usize) -> i64>) -> Result<RecordBatch> {
        let target = match projection {
            Projection::Keys => crate::schema::key_schema(),
            Projection::Full => crate::schema::source_schema(),
        };
        let in_schema = batch.schema();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
        for &c in projection_columns(projection) {
            let col = &SOURCE_COLUMNS[c];
            let array = match self.positions[c] {
                None if c == crate::schema::src::RUN_ID => {
                    let pos = position.ok_or_else(|| Error::Internal(format!("'{}' has no PerfSnapshotRunID and no row positions", self.label)))?;
                    Arc::new(arrow::array::Int64Array::from_iter_values((0..batch.num_rows()).map(pos))) as ArrayRef
                }
                None => arrow::array::new_null_array(&col.sql.arrow_type(), batch.num_rows()),
                Some(_) => {
                    let idx = in_schema
                        .fields()
                        .iter()
                        .position(|f| f.name().eq_ignore_ascii_case(col.name))
                        .ok_or_else(|| Error::Internal(format!("column {} not projected", col.name)))?;
                    convert(&self.label, col, batch.column(idx), row_name)?
                }
            };
            columns.push(array);
        }
        RecordBatch::try_new(target, columns).map_err(Error::arrow(format!("normalising '{}'", self.label)))
    }
}

/// Names a row of a batch for error messages.
pub type RowName<'a> = dyn Fn(usize) -> String + 'a;

/// Canonical column indices of a projection, in output order.
pub fn projection_columns(projection: Projection) -> &'static [usize] {
    use crate::schema::src;
    const KEYS: [usize; 3] = [src::RUN_ID, src::SNAPSHOT_UTC, src::SERVER_NAME];
    const FULL: [usize; 13] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    match projection {
        Projection::Keys => &KEYS,
        Projection::Full => &FULL,
    }
}

fn type_error(label: &str, col: &Column, found: &DataType) -> Error {
    Error::ColumnType {
        source_label: label.to_string(),
        column: col.name.to_string(),
        found: format!("{found}"),
        expected: format!("{} ({})", col.sql.arrow_type(), col.sql.sql_name()),
    }
}

/// Accepts a source type when every value it can hold either fits the column exactly or is
/// checked value by value in [`convert`].
fn check_type(label: &str, col: &Column, found: &DataType) -> Result<()> {
    let ok = match (col.sql, found) {
        (SqlType::BigInt | SqlType::Int, t) => t.is_integer(),
        (SqlType::DateTime2(3), DataType::Timestamp(_, tz)) => {
            tz.as_deref().is_none_or(|z| matches!(z, "UTC" | "+00:00" | "Z" | "Etc/UTC"))
        }
        (SqlType::Decimal { scale, .. }, DataType::Decimal128(_, s) | DataType::Decimal64(_, s) | DataType::Decimal32(_, s)) => *s <= scale,
        (SqlType::NVarChar(_), t) => matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            || matches!(t, DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8)),
        (SqlType::Bit, DataType::Boolean) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(type_error(label, col, found))
    }
}

fn bad_value(label: &str, col: &Column, message: String) -> Error {
    Error::BadValue {
        source_label: label.to_string(),
        column: col.name.to_string(),
        message,
    }
}

fn convert(label: &str, col: &Column, array: &ArrayRef, row_name: &RowName) -> Result<ArrayRef> {
    let target = col.sql.arrow_type();
    let strict = CastOptions { safe: false, ..Default::default() };
    let out: ArrayRef = match (col.sql, array.data_type()) {
        (_, t) if *t == target => array.clone(),
        (SqlType::DateTime2(3), DataType::Timestamp(unit, _)) => {
            let (num, den) = match unit {
                TimeUnit::Second => (1000i64, 1i64),
                TimeUnit::Millisecond => (1, 1),
                TimeUnit::Microsecond => (1, 1000),
                TimeUnit::Nanosecond => (1, 1_000_000),
            };
            let raw = cast_with_options(array, &DataType::Int64, &strict)
                .map_err(|e| bad_value(label, col, e.to_string()))?;
            let raw = raw.as_primitive::<arrow::datatypes::Int64Type>();
            let mut values = Vec::with_capacity(raw.len());
            for (row, v) in raw.values().iter().enumerate() {
                if raw.is_null(row) {
                    values.push(0);
                    continue;
                }
                if v % den != 0 {
                    return Err(bad_value(
                        label,
                        col,
                        format!("{}: value has sub-millisecond precision; the SQL Server column is DATETIME2(3)", row_name(row)),
                    ));
                }
                let ms = (v / den)
                    .checked_mul(num)
                    .ok_or_else(|| bad_value(label, col, format!("{}: timestamp out of range", row_name(row))))?;
                values.push(ms);
            }
            Arc::new(TimestampMillisecondArray::new(values.into(), raw.nulls().cloned()))
        }
        (SqlType::Decimal { precision, scale }, _) => {
            let casted = cast_with_options(array, &DataType::Decimal128(38, scale), &strict)
                .map_err(|e| bad_value(label, col, e.to_string()))?;
            let dec = casted.as_primitive::<arrow::datatypes::Decimal128Type>();
            if dec.validate_decimal_precision(precision).is_err() {
                let bad = (0..dec.len())
                    .find(|&r| dec.is_valid(r) && !<arrow::datatypes::Decimal128Type as arrow::datatypes::DecimalType>::is_valid_decimal_precision(dec.value(r), precision))
                    .unwrap_or(0);
                return Err(bad_value(
                    label,
                    col,
                    format!("{}: value {} does not fit {}", row_name(bad), dec.value_as_string(bad), col.sql.sql_name()),
                ));
            }
            Arc::new(
                Decimal128Array::new(dec.values().clone(), dec.nulls().cloned())
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| bad_value(label, col, e.to_string()))?,
            )
        }
        _ => cast_with_options(array, &target, &strict).map_err(|e| bad_value(label, col, e.to_string()))?,
    };
    if !col.nullable && out.null_count() > 0 {
        let row = (0..out.len()).find(|&i| out.is_null(i)).unwrap_or(0);
        return Err(bad_value(label, col, format!("{} is NULL but the column is NOT NULL", row_name(row))));
    }
    if let SqlType::NVarChar(max) = col.sql {
        check_lengths(label, col, out.as_string::<i32>(), max, row_name)?;
    }
    if let SqlType::Int = col.sql {
        debug_assert!(out.as_any().downcast_ref::<Int32Array>().is_some());
    }
    Ok(out)
}

/// NVARCHAR(n) counts UTF-16 code units; a UTF-8 string never has more of them than bytes, so
/// only strings longer than `max` bytes need counting.
fn check_lengths(label: &str, col: &Column, strings: &StringArray, max: u16, row_name: &RowName) -> Result<()> {
    let max = max as usize;
    for (row, s) in strings.iter().enumerate() {
        if let Some(s) = s {
            if s.len() > max && s.encode_utf16().count() > max {
                return Err(bad_value(
                    label,
                    col,
                    format!("{}: {} characters do not fit {}", row_name(row), s.encode_utf16().count(), col.sql.sql_name()),
                ));
            }
        }
    }
    Ok(())
}

/// Milliseconds of a canonical SnapshotUTC column.
pub fn snapshot_ms(batch: &RecordBatch, index: usize) -> &TimestampMillisecondArray {
    batch.column(index).as_primitive::<TimestampMillisecondType>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};

    fn batch_row(r: usize) -> String {
        format!("row {r}")
    }

    fn schema_with(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    fn key_fields(ts: DataType) -> Vec<Field> {
        vec![
            Field::new("perfsnapshotrunid", DataType::Int64, false),
            Field::new("SNAPSHOTUTC", ts, false),
            Field::new("ServerName", DataType::Utf8, false),
        ]
    }

    fn full_fields(ts: DataType) -> Vec<Field> {
        let mut f = key_fields(ts);
        for c in &SOURCE_COLUMNS[4..] {
            f.push(Field::new(c.name, c.sql.arrow_type(), true));
        }
        f.push(Field::new("Extra", DataType::Utf8, true));
        f
    }

    #[test]
    fn missing_required_column_names_source_and_column() {
        let s = schema_with(key_fields(DataType::Timestamp(TimeUnit::Millisecond, None)));
        let err = ColumnMatch::new("srv.parquet", &s).unwrap_err().to_string();
        assert!(err.contains("srv.parquet") && err.contains("'SqlVersion'"), "{err}");
    }

    #[test]
    fn server_id_is_optional_and_names_match_case_insensitively() {
        let s = schema_with(full_fields(DataType::Timestamp(TimeUnit::Millisecond, None)));
        let m = ColumnMatch::new("a", &s).unwrap();
        assert!(!m.has_server_id());
    }

    #[test]
    fn mistyped_column_is_an_error() {
        let s = schema_with(full_fields(DataType::Utf8));
        let err = ColumnMatch::new("x.parquet", &s).unwrap_err().to_string();
        assert!(err.contains("SnapshotUTC") && err.contains("Utf8"), "{err}");
    }

    #[test]
    fn microseconds_become_milliseconds_and_sub_ms_is_rejected() {
        let s = schema_with(key_fields(DataType::Timestamp(TimeUnit::Microsecond, None)));
        let m = ColumnMatch {
            label: "k".into(),
            positions: vec![Some(0), Some(1), None, Some(2), None, None, None, None, None, None, None, None, None],
        };
        let batch = |us: i64| {
            RecordBatch::try_new(
                s.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![1])),
                    Arc::new(TimestampMicrosecondArray::from(vec![us])),
                    Arc::new(StringArray::from(vec!["S"])),
                ],
            )
            .unwrap()
        };
        let out = m.normalize(&batch(1_700_000_000_123_000), Projection::Keys, &batch_row).unwrap();
        assert_eq!(snapshot_ms(&out, 1).value(0), 1_700_000_000_123);
        let err = m.normalize(&batch(1_700_000_000_123_456), Projection::Keys, &batch_row).unwrap_err();
        assert!(err.to_string().contains("sub-millisecond"), "{err}");
    }

    #[test]
    fn decimal_that_does_not_fit_is_rejected() {
        let col = &SOURCE_COLUMNS[5]; // DECIMAL(9,4)
        let ok: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(99_999_9999i128), None])
                .with_precision_and_scale(18, 4)
                .unwrap(),
        );
        let out = convert("f", col, &ok, &batch_row).unwrap();
        assert_eq!(out.data_type(), &DataType::Decimal128(9, 4));
        let too_big: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(1_000_000_0000i128)])
                .with_precision_and_scale(18, 4)
                .unwrap(),
        );
        let err = convert("f", col, &too_big, &batch_row).unwrap_err().to_string();
        assert!(err.contains("CpuSignalWaitPct") && err.contains("DECIMAL(9,4)"), "{err}");
    }

    #[test]
    fn null_in_not_null_column_and_too_long_names_are_rejected() {
        let name_col = &SOURCE_COLUMNS[3];
        let nulls: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        assert!(convert("f", name_col, &nulls, &batch_row).unwrap_err().to_string().contains("row 1 is NULL"));
        let long: ArrayRef = Arc::new(StringArray::from(vec!["é".repeat(129)]));
        assert!(convert("f", name_col, &long, &batch_row).unwrap_err().to_string().contains("129 characters"));
        let fits: ArrayRef = Arc::new(StringArray::from(vec!["é".repeat(128)]));
        assert!(convert("f", name_col, &fits, &batch_row).is_ok());
    }
}
