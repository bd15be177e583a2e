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

/// Builds a RecordBatch from rows.
pub fn rows_to_batch(cols: &[Column], rows: &[Row]) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        let vals = rows.iter().map(|r| &r[i]);
        let bad = |v: &Value| ServerError::Api(format!("column '{}' holds {v:?}, not {}", c.name, c.ty.sql_name()));
        let arr: ArrayRef = match c.ty {
            SqlType::TinyInt => {
                let mut b = UInt8Builder::new();
                for v in vals {
                    match v {
                        Value::Int(x) => b.append_value(*x as u8),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::SmallInt => {
                let mut b = Int16Builder::new();
                for v in vals {
                    match v {
                        Value::Int(x) => b.append_value(*x as i16),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::Int => {
                let mut b = Int32Builder::new();
                for v in vals {
                    match v {
                        Value::Int(x) => b.append_value(*x as i32),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::BigInt => {
                let mut b = Int64Builder::new();
                for v in vals {
                    match v {
                        Value::Int(x) => b.append_value(*x),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::Bit => {
                let mut b = BooleanBuilder::new();
                for v in vals {
                    match v {
                        Value::Bool(x) => b.append_value(*x),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
                let mut b = Decimal128Builder::new().with_precision_and_scale(precision, scale as i8)?;
                for v in vals {
                    match v {
                        Value::Decimal { mantissa, scale: s } if *s == scale => b.append_value(*mantissa),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::Binary(_) | SqlType::UniqueIdentifier => {
                let width = match c.ty {
                    SqlType::Binary(n) => n as i32,
                    _ => 16,
                };
                let mut b = FixedSizeBinaryBuilder::new(width);
                for v in vals {
                    match v {
                        Value::Bytes(x) => b.append_value(x)?,
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::VarBinary(_) | SqlType::SqlVariant => {
                let mut b = BinaryBuilder::new();
                for v in vals {
                    match v {
                        Value::Bytes(x) => b.append_value(x),
                        Value::Variant(var) => {
                            let mut raw = Vec::new();
                            crate::wire::encode_variant(&mut raw, var).map_err(|e| ServerError::Api(format!("column '{}': {e}", c.name)))?;
                            // Without the 4-byte length: base type, properties, data.
                            b.append_value(&raw[4..]);
                        }
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::Float => {
                let mut b = Float64Builder::new();
                for v in vals {
                    match v {
                        Value::Float(x) => b.append_value(*x),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::NVarChar(_) | SqlType::VarChar(..) | SqlType::Xml => {
                let mut b = StringBuilder::new();
                for v in vals {
                    match v {
                        Value::Str(s) => b.append_value(s),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::DateTime2(0..=3) | SqlType::DateTime => {
                let mut b = TimestampMillisecondBuilder::new();
                for v in vals {
                    match v {
                        Value::DateTime2(t) => b.append_value((t - EPOCH_TICKS).div_euclid(10_000)),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
            SqlType::DateTime2(_) => {
                let mut b = TimestampMicrosecondBuilder::new();
                for v in vals {
                    match v {
                        Value::DateTime2(t) => b.append_value((t - EPOCH_TICKS).div_euclid(10)),
                        Value::Null => b.append_null(),
                        v => return Err(bad(v)),
                    }
                }
                Arc::new(b.finish())
            }
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
