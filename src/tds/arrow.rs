//! TDS result rows into Arrow columns: one builder per column of an Arrow schema, filled by
//! perfcopy's reply decoder ([`RowSink`]) or from tiberius' rows (column types the decoder does
//! not read), finished into a `RecordBatch` of the exact Arrow types (no strings in between).
//! Sources read with it; the MonitoringDB target reads its existing rows with it.

use std::sync::Arc;

use arrow::array::{ArrayBuilder, ArrayRef, BooleanBuilder, PrimitiveArray};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Decimal128Type, Int16Type, Int32Type, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, UInt8Type,
};
use arrow::record_batch::RecordBatch;
use tiberius::ColumnData;

use crate::error::{Error, Result};
use crate::tds::decode::{utf16le_append, CodePage, RowSink, Value, Wire, WireColumn};
use crate::tds::{datetime2_units, datetime_ms};

/// Validity of a column's values, one `bool` per value (appending is a store, not a bit
/// update); a null buffer only when there was a null.
struct Validity {
    valid: Vec<bool>,
    nulls: usize,
}

impl Validity {
    fn with_capacity(rows: usize) -> Validity {
        Validity { valid: Vec::with_capacity(rows), nulls: 0 }
    }

    #[inline(always)]
    fn push(&mut self, valid: bool) {
        self.valid.push(valid);
        self.nulls += usize::from(!valid);
    }

    fn finish(&mut self) -> Option<NullBuffer> {
        let valid = std::mem::take(&mut self.valid);
        let nulls = std::mem::take(&mut self.nulls);
        // collect_bool packs 64 values per word (From<Vec<bool>> goes bit by bit).
        (nulls > 0).then(|| NullBuffer::new(arrow::buffer::BooleanBuffer::collect_bool(valid.len(), |i| valid[i])))
    }
}

/// A primitive column's values as plain vectors (arrow's builders check and update a bitmap
/// per value, which costs more than decoding most values).
struct Prim<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    valid: Validity,
}

impl<T: ArrowPrimitiveType> Prim<T> {
    fn with_capacity(rows: usize) -> Self {
        Prim { values: Vec::with_capacity(rows), valid: Validity::with_capacity(rows) }
    }

    #[inline(always)]
    fn append_value(&mut self, v: T::Native) {
        self.values.push(v);
        self.valid.push(true);
    }

    #[inline(always)]
    fn append_null(&mut self) {
        self.values.push(T::Native::default());
        self.valid.push(false);
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn finish(&mut self) -> PrimitiveArray<T> {
        PrimitiveArray::new(ScalarBuffer::from(std::mem::take(&mut self.values)), self.valid.finish())
    }
}

/// The message for an integer wider than its column.
#[cold]
fn out_of_range(x: i64) -> String {
    format!("integer {x} out of range")
}

/// The message for a value a column's type does not take.
#[cold]
fn unexpected(v: Value<'_>) -> String {
    format!("unexpected TDS value {v:?}")
}

/// One column being decoded from TDS rows into Arrow.
enum Col {
    I64(Prim<Int64Type>),
    I32(Prim<Int32Type>),
    I16(Prim<Int16Type>),
    U8(Prim<UInt8Type>),
    Bool(BooleanBuilder),
    Dec(Prim<Decimal128Type>, u8, i8),
    TsMs(Prim<TimestampMillisecondType>),
    TsUs(Prim<TimestampMicrosecondType>),
    Str(TextCol),
    /// VARBINARY(n|MAX): offsets and bytes, as text is.
    Bin(TextCol),
    /// BINARY(n): exactly n bytes a value.
    FixedBin(Vec<u8>, Validity, i32),
    /// SQL_VARIANT: base type and value text (`crate::tds::variant`).
    Variant(TextCol, TextCol, Validity),
}

/// The fields of the SQL_VARIANT struct, from the one type table.
fn variant_fields() -> arrow::datatypes::Fields {
    match crate::schema::SqlType::SqlVariant.arrow_type() {
        DataType::Struct(f) => f,
        _ => arrow::datatypes::Fields::empty(),
    }
}

impl Col {
    /// A builder for `cap` values of type `t`; `text_bytes`: UTF-8 bytes to make room for (text).
    fn new(t: &DataType, cap: usize, text_bytes: usize) -> Option<Col> {
        Some(match t {
            DataType::Int64 => Col::I64(Prim::with_capacity(cap)),
            DataType::Int32 => Col::I32(Prim::with_capacity(cap)),
            DataType::Int16 => Col::I16(Prim::with_capacity(cap)),
            DataType::UInt8 => Col::U8(Prim::with_capacity(cap)),
            DataType::Boolean => Col::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Decimal128(p, s) => Col::Dec(Prim::with_capacity(cap), *p, *s),
            DataType::Timestamp(TimeUnit::Millisecond, None) => Col::TsMs(Prim::with_capacity(cap)),
            DataType::Timestamp(TimeUnit::Microsecond, None) => Col::TsUs(Prim::with_capacity(cap)),
            DataType::Utf8 => Col::Str(TextCol::with_capacity(cap, text_bytes)),
            DataType::Binary => Col::Bin(TextCol::with_capacity(cap, text_bytes)),
            DataType::FixedSizeBinary(n) => Col::FixedBin(Vec::with_capacity(cap * *n as usize), Validity::with_capacity(cap), *n),
            DataType::Struct(f) if *f == variant_fields() => {
                Col::Variant(TextCol::with_capacity(cap, cap * 8), TextCol::with_capacity(cap, text_bytes), Validity::with_capacity(cap))
            }
            _ => return None,
        })
    }

    /// Appends one value read by tiberius; `Err` carries a description of a value that does
    /// not fit. The pairs of column and value types are tiberius' own; the conversions are the
    /// typed appends', shared with perfcopy's TDS decoder.
    fn push(&mut self, v: &ColumnData<'_>) -> std::result::Result<(), String> {
        let int = |x: Option<i64>| x.map_or(Value::Null, Value::Int);
        let wire = match (&mut *self, v) {
            (Col::Str(b), ColumnData::String(x)) => return b.push_str(x.as_deref()),
            (Col::Str(b), ColumnData::Xml(x)) => return b.push_str(x.as_ref().map(|x| AsRef::<str>::as_ref(&**x))),
            (Col::Bin(_) | Col::FixedBin(..), ColumnData::Binary(x)) => x.as_deref().map_or(Value::Null, Value::Bytes),
            (Col::I64(_), ColumnData::I64(x)) => int(*x),
            (Col::I64(_), ColumnData::I32(x)) => int(x.map(i64::from)),
            (Col::I32(_), ColumnData::I32(x)) => int(x.map(i64::from)),
            (Col::I32(_), ColumnData::I16(x)) => int(x.map(i64::from)),
            (Col::I32(_), ColumnData::U8(x)) => int(x.map(i64::from)),
            (Col::I16(_), ColumnData::I16(x)) => int(x.map(i64::from)),
            (Col::U8(_), ColumnData::U8(x)) => int(x.map(i64::from)),
            (Col::Bool(_), ColumnData::Bit(x)) => x.map_or(Value::Null, Value::Bit),
            (Col::Dec(..), ColumnData::Numeric(x)) => x.map_or(Value::Null, |n| Value::Decimal(n.value(), n.scale())),
            (Col::TsMs(_) | Col::TsUs(_), ColumnData::DateTime2(x)) => x.map_or(Value::Null, |d| Value::DateTime2 {
                days: d.date().days() as i64,
                increments: d.time().increments() as i64,
                scale: d.time().scale(),
            }),
            (Col::TsMs(_), ColumnData::DateTime(x)) => x.map_or(Value::Null, |d| Value::UnixMs(datetime_ms(d.days() as i64, d.seconds_fragments() as i64))),
            (_, other) => return Err(format!("unexpected TDS value {other:?}")),
        };
        self.put(wire)
    }

    /// Appends a value that arrives as a [`Value`] (tiberius' values, mapped above) through the
    /// typed append of its kind.
    fn put(&mut self, v: Value<'_>) -> std::result::Result<(), String> {
        match v {
            Value::Null => self.null(),
            Value::Int(x) => self.int(x),
            Value::Bit(x) => self.bit(x),
            Value::Decimal(x, scale) => self.decimal(x, scale),
            Value::DateTime2 { days, increments, scale } => self.datetime2(days, increments, scale),
            Value::UnixMs(ms) => self.unix_ms(ms),
            Value::Utf16(raw) => self.utf16(raw),
            Value::Bytes(raw) => self.bytes(raw),
            Value::CodePage(raw, cp) => self.code_page_text(raw, cp),
            Value::Variant(raw) => self.variant(raw),
        }
    }

    /// Whether values laid out as `wire` decode into this column's type.
    fn takes(&self, wire: Wire) -> bool {
        let int_width = match wire {
            Wire::FixedInt(w) => Some(w),
            // INTN of any width: the value range is checked per value.
            Wire::IntN => Some(0),
            _ => None,
        };
        match self {
            Col::I64(_) | Col::I32(_) | Col::I16(_) | Col::U8(_) => int_width.is_some(),
            Col::Bool(_) => matches!(wire, Wire::Bit | Wire::BitN),
            Col::Dec(..) => matches!(wire, Wire::Decimal { .. }),
            Col::TsMs(_) => matches!(wire, Wire::DateTime2 { .. } | Wire::DateTime | Wire::SmallDateTime | Wire::DateTimeN),
            Col::TsUs(_) => matches!(wire, Wire::DateTime2 { .. }),
            Col::Str(_) => matches!(wire, Wire::NVarChar { .. } | Wire::NVarCharMax | Wire::VarChar { .. } | Wire::VarCharMax { .. } | Wire::Xml),
            Col::Bin(_) => matches!(wire, Wire::VarBinary { .. } | Wire::VarBinaryMax | Wire::Binary { .. }),
            Col::FixedBin(.., n) => matches!(wire, Wire::Binary { len } if i32::from(len) == *n),
            Col::Variant(..) => matches!(wire, Wire::Variant),
        }
    }

    /// Appends NULL. The typed appends below are what perfcopy's TDS decoder calls per value
    /// (inlined into its row loop: a call per value costs more than most values); tiberius'
    /// values reach them through [`Col::put`].
    #[inline(always)]
    fn null(&mut self) -> std::result::Result<(), String> {
        match self {
            Col::I64(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::U8(b) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Dec(b, ..) => b.append_null(),
            Col::TsMs(b) => b.append_null(),
            Col::TsUs(b) => b.append_null(),
            Col::Str(b) | Col::Bin(b) => b.push_str(None)?,
            Col::FixedBin(v, valid, n) => {
                v.resize(v.len() + *n as usize, 0);
                valid.push(false);
            }
            Col::Variant(base, value, valid) => {
                // A NULL variant is a null struct; its children hold empty values.
                base.end_value(true)?;
                value.end_value(true)?;
                valid.push(false);
            }
        }
        Ok(())
    }

    fn bytes(&mut self, raw: &[u8]) -> std::result::Result<(), String> {
        match self {
            Col::Bin(b) => {
                b.values.extend_from_slice(raw);
                b.end_value(true)
            }
            Col::FixedBin(v, valid, n) if raw.len() == *n as usize => {
                v.extend_from_slice(raw);
                valid.push(true);
                Ok(())
            }
            Col::FixedBin(.., n) => Err(format!("{} bytes for a BINARY({n})", raw.len())),
            _ => Err(unexpected(Value::Bytes(raw))),
        }
    }

    fn code_page_text(&mut self, raw: &[u8], cp: CodePage) -> std::result::Result<(), String> {
        let Col::Str(b) = self else { return Err(unexpected(Value::CodePage(raw, cp))) };
        if raw.is_ascii() {
            // Every code page SQL Server has agrees with ASCII (and UTF-8 is ASCII's superset).
            b.values.extend_from_slice(raw);
        } else {
            let text = cp.decode_without_bom_handling_and_without_replacement(raw).ok_or_else(|| format!("text not valid in code page {}", cp.name()))?;
            b.values.extend_from_slice(text.as_bytes());
        }
        b.end_value(true)
    }

    fn variant(&mut self, raw: &[u8]) -> std::result::Result<(), String> {
        let Col::Variant(base, value, valid) = self else { return Err(unexpected(Value::Variant(raw))) };
        let (b, v) = crate::tds::variant::to_text(raw)?;
        base.push_str(Some(&b))?;
        value.push_str(Some(&v))?;
        valid.push(true);
        Ok(())
    }

    #[inline(always)]
    fn int(&mut self, x: i64) -> std::result::Result<(), String> {
        #[inline(always)]
        fn fit<T: TryFrom<i64>>(x: i64) -> std::result::Result<T, String> {
            T::try_from(x).map_err(|_| out_of_range(x))
        }
        match self {
            Col::I64(b) => b.append_value(x),
            Col::I32(b) => b.append_value(fit(x)?),
            Col::I16(b) => b.append_value(fit(x)?),
            Col::U8(b) => b.append_value(fit(x)?),
            _ => return Err(unexpected(Value::Int(x))),
        }
        Ok(())
    }

    #[inline(always)]
    fn bit(&mut self, x: bool) -> std::result::Result<(), String> {
        let Col::Bool(b) = self else { return Err(unexpected(Value::Bit(x))) };
        b.append_value(x);
        Ok(())
    }

    #[inline(always)]
    fn decimal(&mut self, x: i128, scale: u8) -> std::result::Result<(), String> {
        let Col::Dec(b, _, s) = self else { return Err(unexpected(Value::Decimal(x, scale))) };
        let diff = *s as i32 - scale as i32;
        b.append_value(match diff {
            0 => x,
            1.. => 10i128.checked_pow(diff as u32).and_then(|m| x.checked_mul(m)).ok_or("decimal value out of range")?,
            _ => x / 10i128.checked_pow((-diff) as u32).ok_or("decimal scale out of range")?,
        });
        Ok(())
    }

    #[inline(always)]
    fn datetime2(&mut self, days: i64, increments: i64, scale: u8) -> std::result::Result<(), String> {
        match self {
            Col::TsMs(b) => b.append_value(datetime2_units(days, increments, scale as u32, 3).ok_or("DATETIME2 value has sub-millisecond digits")?),
            Col::TsUs(b) => b.append_value(datetime2_units(days, increments, scale as u32, 6).ok_or("DATETIME2 value has sub-microsecond digits")?),
            _ => return Err(unexpected(Value::DateTime2 { days, increments, scale })),
        }
        Ok(())
    }

    #[inline(always)]
    fn unix_ms(&mut self, ms: i64) -> std::result::Result<(), String> {
        let Col::TsMs(b) = self else { return Err(unexpected(Value::UnixMs(ms))) };
        b.append_value(ms);
        Ok(())
    }

    #[inline(always)]
    fn utf16(&mut self, raw: &[u8]) -> std::result::Result<(), String> {
        match self {
            Col::Str(b) => b.push_utf16(raw),
            _ => Err(unexpected(Value::Utf16(raw))),
        }
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            Col::I64(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I16(b) => Arc::new(b.finish()),
            Col::U8(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Dec(b, p, s) => Arc::new(b.finish().with_precision_and_scale(*p, *s).map_err(Error::arrow("decimal column"))?),
            Col::TsMs(b) => Arc::new(b.finish()),
            Col::TsUs(b) => Arc::new(b.finish()),
            Col::Str(b) => Arc::new(b.finish()?),
            Col::Bin(b) => {
                let (offsets, values, nulls) = b.take();
                Arc::new(arrow::array::BinaryArray::try_new(offsets, values, nulls).map_err(Error::arrow("binary column"))?)
            }
            Col::FixedBin(v, valid, n) => Arc::new(
                arrow::array::FixedSizeBinaryArray::try_new(*n, std::mem::take(v).into(), valid.finish()).map_err(Error::arrow("binary column"))?,
            ),
            Col::Variant(base, value, valid) => {
                let children: Vec<ArrayRef> = vec![Arc::new(base.finish()?), Arc::new(value.finish()?)];
                Arc::new(arrow::array::StructArray::try_new(variant_fields(), children, valid.finish()).map_err(Error::arrow("SQL_VARIANT column"))?)
            }
        })
    }

    fn len(&self) -> usize {
        match self {
            Col::I64(b) => b.len(),
            Col::I32(b) => b.len(),
            Col::I16(b) => b.len(),
            Col::U8(b) => b.len(),
            Col::Bool(b) => b.len(),
            Col::Dec(b, ..) => b.len(),
            Col::TsMs(b) => b.len(),
            Col::TsUs(b) => b.len(),
            Col::Str(b) | Col::Bin(b) => b.len(),
            Col::FixedBin(_, valid, _) | Col::Variant(.., valid) => valid.valid.len(),
        }
    }
}

/// A UTF-8 column built in place: TDS text (UTF-16) is narrowed straight into the values
/// buffer, without a `String` per value; the array is checked once when finished.
struct TextCol {
    offsets: Vec<i32>,
    values: Vec<u8>,
    valid: Validity,
}

impl TextCol {
    fn with_capacity(rows: usize, bytes: usize) -> TextCol {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        TextCol { offsets, values: Vec::with_capacity(bytes), valid: Validity::with_capacity(rows) }
    }

    #[inline(always)]
    fn end_value(&mut self, valid: bool) -> std::result::Result<(), String> {
        let end = i32::try_from(self.values.len()).map_err(|_| "more than 2 GiB of text in one batch".to_string())?;
        self.offsets.push(end);
        self.valid.push(valid);
        Ok(())
    }

    fn push_str(&mut self, s: Option<&str>) -> std::result::Result<(), String> {
        if let Some(s) = s {
            self.values.extend_from_slice(s.as_bytes());
        }
        self.end_value(s.is_some())
    }

    #[inline(always)]
    fn push_utf16(&mut self, raw: &[u8]) -> std::result::Result<(), String> {
        utf16le_append(raw, &mut self.values)?;
        self.end_value(true)
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// UTF-8 bytes held.
    fn bytes(&self) -> usize {
        self.values.len()
    }

    /// The offsets, values and nulls, the column starting over.
    fn take(&mut self) -> (arrow::buffer::OffsetBuffer<i32>, arrow::buffer::Buffer, Option<NullBuffer>) {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = std::mem::take(&mut self.values);
        (arrow::buffer::OffsetBuffer::new(offsets.into()), arrow::buffer::Buffer::from_vec(values), self.valid.finish())
    }

    fn finish(&mut self) -> Result<arrow::array::StringArray> {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = std::mem::take(&mut self.values);
        let nulls = self.valid.finish();
        if nulls.as_ref().is_some_and(|n| n.len() != offsets.len() - 1) {
            return Err(Error::Internal("TDS text column: nulls and values out of step".into()));
        }
        let offsets = arrow::buffer::OffsetBuffer::new(offsets.into());
        debug_assert!(std::str::from_utf8(&values).is_ok());
        // SAFETY: `values` is UTF-8 and every offset a character boundary: values are only
        // appended whole, from `&str`s or by `utf16le_append` (which appends whole UTF-8
        // characters, also when it fails); `OffsetBuffer::new` checked the offsets are
        // non-negative and increasing, each was `values.len()` when pushed, and the nulls
        // were checked to match. (`try_new` would validate all the text again.)
        Ok(unsafe { arrow::array::StringArray::new_unchecked(offsets, arrow::buffer::Buffer::from_vec(values), nulls) })
    }
}

/// Arrow builders for rows of a TDS result, one per column of `schema`. After each
/// [`Builders::finish`] they start over sized like the rows just finished (text included), so
/// pages of a read do not grow their buffers value by value.
pub struct Builders {
    cols: Vec<Col>,
    capacity: usize,
}

impl Builders {
    /// Builders for `capacity` rows of `schema`'s columns (types perfcopy reads; others are an
    /// error).
    pub fn new(schema: &SchemaRef, capacity: usize) -> Result<Builders> {
        let cols = schema
            .fields()
            .iter()
            .map(|f| {
                Col::new(f.data_type(), capacity, capacity * 32)
                    .ok_or_else(|| Error::Internal(format!("no TDS reader for column '{}' of type {}", f.name(), f.data_type())))
            })
            .collect::<Result<_>>()?;
        Ok(Builders { cols, capacity })
    }

    /// Appends one row; `Err` names the column whose value does not fit.
    pub fn push_row(&mut self, row: &tiberius::Row) -> std::result::Result<(), String> {
        for (i, (c, (meta, v))) in self.cols.iter_mut().zip(row.cells()).enumerate() {
            c.push(v).map_err(|m| format!("column {} ('{}'): {m}", i + 1, meta.name()))?;
        }
        Ok(())
    }

    #[inline(always)]
    fn col(&mut self, col: usize) -> std::result::Result<&mut Col, String> {
        self.cols.get_mut(col).ok_or_else(|| format!("no column {}", col + 1))
    }

    /// Rows appended since the last finish.
    pub fn len(&self) -> usize {
        self.cols.first().map(|c| c.len()).unwrap_or(0)
    }

    /// Whether no rows are pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pending rows as a batch of `schema` (the one the builders were made for); the
    /// builders start over, with room for as many rows (and as much text) as this batch had, at
    /// least the capacity they were made with.
    pub fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let rows = self.len().max(self.capacity);
        let mut arrays = Vec::with_capacity(self.cols.len());
        for (c, f) in self.cols.iter_mut().zip(schema.fields()) {
            let t = f.data_type();
            let text = match c {
                Col::Str(b) | Col::Bin(b) | Col::Variant(_, b, _) => (b.bytes() / b.len().max(1)) * rows + rows,
                _ => 0,
            };
            let fresh = Col::new(t, rows, text).ok_or_else(|| Error::Internal(format!("no TDS reader for type {t}")))?;
            arrays.push(std::mem::replace(c, fresh).finish()?);
        }
        RecordBatch::try_new(schema.clone(), arrays).map_err(Error::arrow("TDS rows to Arrow"))
    }
}

impl RowSink for Builders {
    fn columns(&mut self, columns: &[WireColumn]) -> std::result::Result<(), String> {
        if columns.len() != self.cols.len() {
            return Err(format!("{} result columns for {} builders", columns.len(), self.cols.len()));
        }
        match self.cols.iter().zip(columns).find(|(c, w)| !c.takes(w.wire)) {
            Some((_, w)) => Err(format!("column '{}' comes as {:?}", w.name, w.wire)),
            None => Ok(()),
        }
    }

    #[inline(always)]
    fn null(&mut self, col: usize) -> std::result::Result<(), String> {
        self.col(col)?.null()
    }
    #[inline(always)]
    fn int(&mut self, col: usize, v: i64) -> std::result::Result<(), String> {
        self.col(col)?.int(v)
    }
    #[inline(always)]
    fn bit(&mut self, col: usize, v: bool) -> std::result::Result<(), String> {
        self.col(col)?.bit(v)
    }
    #[inline(always)]
    fn decimal(&mut self, col: usize, unscaled: i128, scale: u8) -> std::result::Result<(), String> {
        self.col(col)?.decimal(unscaled, scale)
    }
    #[inline(always)]
    fn datetime2(&mut self, col: usize, days: i64, increments: i64, scale: u8) -> std::result::Result<(), String> {
        self.col(col)?.datetime2(days, increments, scale)
    }
    #[inline(always)]
    fn unix_ms(&mut self, col: usize, ms: i64) -> std::result::Result<(), String> {
        self.col(col)?.unix_ms(ms)
    }
    #[inline(always)]
    fn utf16(&mut self, col: usize, raw: &[u8]) -> std::result::Result<(), String> {
        self.col(col)?.utf16(raw)
    }
    fn bytes(&mut self, col: usize, raw: &[u8]) -> std::result::Result<(), String> {
        self.col(col)?.bytes(raw)
    }
    fn code_page_text(&mut self, col: usize, raw: &[u8], code_page: CodePage) -> std::result::Result<(), String> {
        self.col(col)?.code_page_text(raw, code_page)
    }
    fn variant(&mut self, col: usize, raw: &[u8]) -> std::result::Result<(), String> {
        self.col(col)?.variant(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Schema};
    use tiberius::time::{Date, DateTime2, Time};

    #[test]
    fn tiberius_datetime2_to_unix_ms() {
        // 1970-01-01T00:00:01.234 as DATETIME2(7); the arithmetic is tested in crate::tds.
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false)]));
        let mut b = Builders::new(&schema, 2).unwrap();
        let d7 = DateTime2::new(Date::new(719_162), Time::new(12_340_000, 7));
        assert!(b.cols[0].push(&ColumnData::DateTime2(Some(d7))).is_ok());
        let sub = DateTime2::new(Date::new(719_162), Time::new(12_340_001, 7));
        assert!(b.cols[0].push(&ColumnData::DateTime2(Some(sub))).unwrap_err().contains("sub-millisecond"));
        let t = b.finish(&schema).unwrap();
        assert_eq!(t.column(0).as_primitive::<arrow::datatypes::TimestampMillisecondType>().values().to_vec(), vec![1_234]);
    }

    #[test]
    fn builders_take_the_wire_types_of_their_arrow_types() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("n", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        ]));
        let mut b = Builders::new(&schema, 4).unwrap();
        let col = |name: &str, wire| WireColumn { name: name.into(), wire, nullable: true };
        let ok = [col("id", Wire::FixedInt(8)), col("n", Wire::IntN), col("s", Wire::NVarCharMax), col("t", Wire::DateTime2 { scale: 3 })];
        assert!(b.columns(&ok).is_ok());
        let bad = [col("id", Wire::FixedInt(8)), col("n", Wire::IntN), col("s", Wire::IntN), col("t", Wire::DateTime2 { scale: 3 })];
        assert!(b.columns(&bad).unwrap_err().contains("'s'"));
        // INTN values are range-checked per column.
        assert!(b.int(1, 1 << 40).unwrap_err().contains("out of range"));
        assert!(b.datetime2(3, 719_162, 12_340_001, 7).is_err());
        assert!(b.bit(1, true).unwrap_err().contains("unexpected TDS value"));
    }
}
