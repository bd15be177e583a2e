//! Arrow RecordBatch <-> table rows, with the exact types of SCHEMA.md (no widening).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, FixedSizeBinaryArray, FixedSizeBinaryBuilder, Float64Array, Float64Builder, LargeBinaryArray, BooleanBuilder, Decimal128Array, Decimal128Builder, Int16Array, Int16Builder, Int32Array, Int32Builder, Int64Array, Int64Builder, LargeStringArray, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder, TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt8Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::engine::Row;
use crate::error::{Result, ServerError};
use crate::types::{Column, SqlType, Value, EPOCH_TICKS};

/// The Arrow schema of a table (see [`SqlType::arrow_type`]).
pub fn schema_of(cols: &[Column]) -> Schema {
    Schema::new(cols.iter().map(|c| Field::new(&c.name, c.ty.arrow_type(), c.nullable)).collect::<Vec<_>>())
}

/// One column's values into an Arrow builder: `$b` is the builder, each `$pat => $push` arm
/// appends a value of the column's type, NULL appends a null, any other value is an error.
macro_rules! build {
    ($vals:expr, $bad:expr, $b:ident = $builder:expr, $($pat:pat $(if $guard:expr)? => $push:expr),+ $(,)?) => {{
        let mut $b = $builder;
        for v in $vals {
            match v {
                $($pat $(if $guard)? => $push,)+
                Value::Null => $b.append_null(),
                v => return Err($bad(v)),
            }
        }
        Arc::new($b.finish()) as ArrayRef
    }};
}

/// Builds a RecordBatch from rows.
pub fn rows_to_batch(cols: &[Column], rows: &[Row]) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        let vals = rows.iter().map(|r| &r[i]);
        let bad = |v: &Value| ServerError::Api(format!("column '{}' holds {v:?}, not {}", c.name, c.ty.sql_name()));
        let variant_bytes = |var: &crate::types::Variant| -> Result<Vec<u8>> {
            let mut raw = Vec::new();
            crate::wire::encode_variant(&mut raw, var).map_err(|e| ServerError::Api(format!("column '{}': {e}", c.name)))?;
            // Without the 4-byte length: base type, properties, data.
            Ok(raw.split_off(4))
        };
        let arr: ArrayRef = match c.ty {
            SqlType::TinyInt => build!(vals, bad, b = UInt8Builder::new(), Value::Int(x) => b.append_value(*x as u8)),
            SqlType::SmallInt => build!(vals, bad, b = Int16Builder::new(), Value::Int(x) => b.append_value(*x as i16)),
            SqlType::Int => build!(vals, bad, b = Int32Builder::new(), Value::Int(x) => b.append_value(*x as i32)),
            SqlType::BigInt => build!(vals, bad, b = Int64Builder::new(), Value::Int(x) => b.append_value(*x)),
            SqlType::Bit => build!(vals, bad, b = BooleanBuilder::new(), Value::Bool(x) => b.append_value(*x)),
            SqlType::Float => build!(vals, bad, b = Float64Builder::new(), Value::Float(x) => b.append_value(*x)),
            SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
                build!(vals, bad, b = Decimal128Builder::new().with_precision_and_scale(precision, scale as i8)?, Value::Decimal { mantissa, scale: s } if *s == scale => b.append_value(*mantissa))
            }
            SqlType::Binary(_) | SqlType::UniqueIdentifier => {
                let width = match c.ty {
                    SqlType::Binary(n) => n as i32,
                    _ => 16,
                };
                build!(vals, bad, b = FixedSizeBinaryBuilder::new(width), Value::Bytes(x) => b.append_value(x)?)
            }
            SqlType::VarBinary(_) | SqlType::SqlVariant => build!(vals, bad, b = BinaryBuilder::new(), Value::Bytes(x) => b.append_value(x), Value::Variant(var) => b.append_value(variant_bytes(var)?)),
            SqlType::NVarChar(_) | SqlType::VarChar(..) | SqlType::Xml => build!(vals, bad, b = StringBuilder::new(), Value::Str(x) => b.append_value(x)),
            SqlType::DateTime2(0..=3) | SqlType::DateTime => build!(vals, bad, b = TimestampMillisecondBuilder::new(), Value::DateTime2(t) => b.append_value((t - EPOCH_TICKS).div_euclid(10_000))),
            SqlType::DateTime2(_) => build!(vals, bad, b = TimestampMicrosecondBuilder::new(), Value::DateTime2(t) => b.append_value((t - EPOCH_TICKS).div_euclid(10))),
        };
        arrays.push(arr);
    }
    Ok(RecordBatch::try_new(Arc::new(schema_of(cols)), arrays)?)
}

/// Reads row `i` of an Arrow column as a [`Value`] (before coercion to the table type).
///
/// Accepts the SCHEMA.md types plus a few lossless neighbours (other integer widths, any
/// timestamp unit, LargeUtf8) so seeds written by other tools load too.
pub fn arrow_value(a: &dyn Array, i: usize) -> Result<Value> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    macro_rules! get {
        ($t:ty) => {
            a.as_any().downcast_ref::<$t>().ok_or_else(|| ServerError::Api(format!("unexpected array for {:?}", a.data_type())))?
        };
    }
    Ok(match a.data_type() {
        DataType::Boolean => Value::Bool(get!(BooleanArray).value(i)),
        DataType::UInt8 => Value::Int(get!(UInt8Array).value(i) as i64),
        DataType::Int16 => Value::Int(get!(Int16Array).value(i) as i64),
        DataType::Int32 => Value::Int(get!(Int32Array).value(i) as i64),
        DataType::Int64 => Value::Int(get!(Int64Array).value(i)),
        DataType::Decimal128(_, s) => Value::Decimal { mantissa: get!(Decimal128Array).value(i), scale: *s as u8 },
        DataType::Utf8 => Value::Str(get!(StringArray).value(i).to_string()),
        DataType::LargeUtf8 => Value::Str(get!(LargeStringArray).value(i).to_string()),
        DataType::Binary => Value::Bytes(get!(BinaryArray).value(i).to_vec()),
        DataType::LargeBinary => Value::Bytes(get!(LargeBinaryArray).value(i).to_vec()),
        DataType::FixedSizeBinary(_) => Value::Bytes(get!(FixedSizeBinaryArray).value(i).to_vec()),
        DataType::Float64 => Value::Float(get!(Float64Array).value(i)),
        DataType::Timestamp(TimeUnit::Second, None) => Value::DateTime2(EPOCH_TICKS + get!(TimestampSecondArray).value(i) * 10_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, None) => Value::DateTime2(EPOCH_TICKS + get!(TimestampMillisecondArray).value(i) * 10_000),
        DataType::Timestamp(TimeUnit::Microsecond, None) => Value::DateTime2(EPOCH_TICKS + get!(TimestampMicrosecondArray).value(i) * 10),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => Value::DateTime2(EPOCH_TICKS + get!(TimestampNanosecondArray).value(i).div_euclid(100)),
        other => return Err(ServerError::Api(format!("Arrow type {other:?} is not supported for seeding"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Variant;

    #[test]
    fn child_types_come_back_as_their_arrow_types() {
        let cols = vec![
            Column::new("h", SqlType::Binary(2), true),
            Column::new("m", SqlType::VarBinary(None), true),
            Column::new("x", SqlType::Xml, true),
            Column::new("f", SqlType::Float, true),
            Column::new("s", SqlType::SqlVariant, true),
            Column::new("g", SqlType::UniqueIdentifier, true),
        ];
        let v = Value::Variant(Box::new(Variant { base: SqlType::Int, value: Value::Int(5) }));
        let rows = vec![
            vec![Value::Bytes(vec![1, 2]), Value::Bytes(vec![3; 9000]), Value::Str("<a/>".into()), Value::Float(0.5), v, Value::Bytes(vec![7; 16])],
            vec![Value::Null; 6],
        ];
        let b = rows_to_batch(&cols, &rows).unwrap();
        let types: Vec<DataType> = b.schema().fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(types, [DataType::FixedSizeBinary(2), DataType::Binary, DataType::Utf8, DataType::Float64, DataType::Binary, DataType::FixedSizeBinary(16)]);
        // The variant as its TDS bytes: INT4, no properties, 5.
        assert_eq!(b.column(4).as_any().downcast_ref::<BinaryArray>().unwrap().value(0), [0x38, 0, 5, 0, 0, 0]);
        assert!((0..6).all(|c| b.column(c).is_null(1)));
        // And back: the binary and float values read as they were.
        for c in [0, 1, 3, 5] {
            assert_eq!(arrow_value(b.column(c).as_ref(), 0).unwrap(), rows[0][c], "column {c}");
        }
    }
}
