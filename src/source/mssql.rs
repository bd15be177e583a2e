//! A DBATools database on SQL Server, read over TDS with tiberius.
//!
//! The table's columns are discovered first (older DBATools tables lack `ServerID`), checked
//! with the same rules as Parquet sources, and rows are streamed in `PerfSnapshotRunID` order
//! with keyset paging (`WHERE PerfSnapshotRunID > @last ORDER BY PerfSnapshotRunID`), one page
//! per batch, so a read holds no long locks and can resume anywhere. Values go straight from
//! the TDS bytes (perfcopy's decoder, or tiberius' rows for column types it does not read) into
//! column vectors of the exact Arrow types (no strings in between).

use std::sync::Arc;

use arrow::array::{ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, PrimitiveArray};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Decimal128Type, Field, Int16Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, UInt8Type,
};
use arrow::record_batch::RecordBatch;
use futures_util::TryStreamExt;
use tiberius::ColumnData;

use crate::error::{Error, Result};
use crate::mssql::{runtime, ConnSpec, SqlClient};
use crate::source::normalize::{projection_columns, ColumnMatch};
use crate::source::{BatchIter, KeyRow, Projection, ReadRequest, Source, SourceFacts};
use crate::tds::decode::{utf16le_append, DecodeError, ReplyDecoder, RowSink, Value, Wire, WireColumn};
use crate::tds::{datetime2_units, datetime_ms};

/// The source table (fixed: identifiers are never built from data).
pub const SOURCE_TABLE: &str = "dbo.PerfSnapshotRun";

/// A DBATools database.
pub struct MssqlSource {
    conn: ConnSpec,
    label: String,
    identity: String,
    /// The table's columns as SQL Server describes them, in Arrow types.
    schema: SchemaRef,
    columns: ColumnMatch,
    /// Optional PerfSnapshotRunID range (inclusive) when a source is split across connections.
    range: Option<(i64, i64)>,
    /// Which `--from` this is (`mssql://host,port/database`), shared by split parts.
    group: String,
    /// What the server reports about the database and table.
    facts: SourceFacts,
    /// `@@SERVERNAME` of the instance.
    server_name: Option<String>,
    /// ServerName of the newest row.
    newest_name: Option<String>,
    /// Cleared when a read finds columns perfcopy's TDS decoder does not read: later reads
    /// (and the other parts of a split source) go straight to tiberius' decoder.
    fast: Arc<std::sync::atomic::AtomicBool>,
}

/// Arrow type of a column as INFORMATION_SCHEMA describes it.
fn arrow_type(data_type: &str, precision: Option<u8>, scale: Option<i32>, datetime_precision: Option<i16>) -> Option<DataType> {
    Some(match data_type.to_ascii_lowercase().as_str() {
        "bigint" => DataType::Int64,
        "int" => DataType::Int32,
        "smallint" => DataType::Int16,
        "tinyint" => DataType::UInt8,
        "bit" => DataType::Boolean,
        "decimal" | "numeric" => DataType::Decimal128(precision.unwrap_or(18), scale.unwrap_or(0) as i8),
        "datetime2" if datetime_precision.unwrap_or(7) <= 3 => DataType::Timestamp(TimeUnit::Millisecond, None),
        "datetime2" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "datetime" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "nvarchar" | "varchar" | "nchar" | "char" | "sysname" => DataType::Utf8,
        _ => return None,
    })
}

impl MssqlSource {
    /// Connects, discovers the table's columns and checks them.
    pub fn open(conn: ConnSpec) -> Result<MssqlSource> {
        let rt = runtime()?;
        let label = conn.label().to_string();
        let (schema, facts, server_name) = rt.block_on(async {
            let mut client = conn.connect().await?;
            let schema = discover(&conn, &mut client).await?;
            let (facts, name) = read_facts(&conn, &mut client).await?;
            let newest = client
                .query(format!("SELECT TOP (1) ServerName FROM {SOURCE_TABLE} ORDER BY PerfSnapshotRunID DESC"), &[])
                .await
                .map_err(|e| conn.sql_error("reading the newest row", e))?
                .into_row()
                .await
                .map_err(|e| conn.sql_error("reading the newest row", e))?
                .and_then(|r| r.try_get::<&str, _>(0).ok().flatten().map(str::to_string));
            Ok::<_, Error>((schema, facts, (name, newest)))
        })?;
        let (server_name, newest_name) = server_name;
        let columns = ColumnMatch::new(&label, &schema)?;
        Ok(MssqlSource {
            identity: format!("mssql://{}/{}/{SOURCE_TABLE}", facts.instance, facts.database),
            group: format!("mssql://{label}"),
            facts,
            label,
            conn,
            schema,
            columns,
            range: None,
            server_name,
            newest_name,
            fast: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// Splits the source into up to `parts` PerfSnapshotRunID ranges of about equal size,
    /// each read on its own connection (in ID order, so the survivor rule is unchanged).
    pub fn split(self, parts: usize) -> Result<Vec<MssqlSource>> {
        if parts <= 1 {
            return Ok(vec![self]);
        }
        let rt = runtime()?;
        let (lo, hi) = rt.block_on(async {
            let mut client = self.conn.connect().await?;
            let row = client
                .query(format!("SELECT MIN(PerfSnapshotRunID) AS lo, MAX(PerfSnapshotRunID) AS hi FROM {SOURCE_TABLE}"), &[])
                .await
                .map_err(|e| self.conn.sql_error("reading the ID range", e))?
                .into_row()
                .await
                .map_err(|e| self.conn.sql_error("reading the ID range", e))?;
            let get = |i| row.as_ref().and_then(|r| r.try_get::<i64, _>(i).ok().flatten());
            Ok::<_, Error>((get(0), get(1)))
        })?;
        let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(vec![self]) };
        let width = ((hi - lo) / parts as i64).max(1);
        let mut out = Vec::new();
        let mut start = lo;
        while start <= hi {
            let end = if out.len() + 1 == parts { hi } else { (start + width - 1).min(hi) };
            out.push(MssqlSource {
                conn: self.conn.clone(),
                label: format!("{} [{start}..{end}]", self.label),
                identity: self.identity.clone(),
                group: self.group.clone(),
                facts: self.facts.clone(),
                schema: self.schema.clone(),
                columns: self.columns.clone(),
                range: Some((start, end)),
                server_name: self.server_name.clone(),
                newest_name: self.newest_name.clone(),
                fast: self.fast.clone(),
            });
            start = end + 1;
        }
        Ok(out)
    }

    /// Whether the table has a ServerID column.
    pub fn has_server_id(&self) -> bool {
        self.columns.has_server_id()
    }
}

/// What the server reports about the database and the table ([`SourceFacts`]), and its
/// `@@SERVERNAME`. Catalog views a login may not see (no VIEW ANY DATABASE) give no row: that
/// fact is then unknown, recorded as such, and must stay unknown for a watermark to be used.
async fn read_facts(conn: &ConnSpec, client: &mut SqlClient) -> Result<(SourceFacts, Option<String>)> {
    const FACTS: &str = "SELECT CAST(SERVERPROPERTY('ServerName') AS NVARCHAR(128)) AS instance, DB_NAME() AS db, @@SERVERNAME AS servername; \
        SELECT create_date FROM sys.databases WHERE database_id = DB_ID(); \
        SELECT CONVERT(NVARCHAR(36), recovery_fork_guid) AS fork FROM sys.database_recovery_status WHERE database_id = DB_ID(); \
        SELECT object_id, create_date FROM sys.objects WHERE object_id = OBJECT_ID(N'dbo.PerfSnapshotRun')";
    let doing = "reading what the server reports about the database (SERVERPROPERTY, sys.databases, sys.objects)";
    let sets = client
        .query(FACTS, &[])
        .await
        .map_err(|e| conn.sql_error(doing, e))?
        .into_results()
        .await
        .map_err(|e| conn.sql_error(doing, e))?;
    let first = |i: usize| sets.get(i).and_then(|rows| rows.first());
    let text = |i: usize, c: usize| first(i).and_then(|r| r.try_get::<&str, _>(c).ok().flatten()).map(str::to_string);
    let time = |i: usize, c: usize| first(i).and_then(|r| r.try_get::<chrono::NaiveDateTime, _>(c).ok().flatten()).map(crate::source::fact_time);
    let server_name = text(0, 2);
    let instance = text(0, 0).or_else(|| server_name.clone()).unwrap_or_else(|| conn.label().to_string());
    let facts = SourceFacts {
        instance,
        database: text(0, 1).unwrap_or_else(|| conn.database().to_string()),
        database_created: time(1, 0),
        recovery_fork: text(2, 0),
        table_object_id: first(3).and_then(|r| r.try_get::<i32, _>(0).ok().flatten()).map(i64::from),
        table_created: time(3, 1),
    };
    Ok((facts, server_name))
}

async fn discover(conn: &ConnSpec, client: &mut SqlClient) -> Result<SchemaRef> {
    let rows = client
        .query(
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, IS_NULLABLE \
             FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = @P1 AND TABLE_NAME = @P2 ORDER BY ORDINAL_POSITION",
            &[&"dbo", &"PerfSnapshotRun"],
        )
        .await
        .map_err(|e| conn.sql_error("discovering the columns of dbo.PerfSnapshotRun", e))?
        .into_first_result()
        .await
        .map_err(|e| conn.sql_error("discovering the columns of dbo.PerfSnapshotRun", e))?;
    if rows.is_empty() {
        return Err(Error::Source {
            source_label: conn.label().to_string(),
            message: format!("table {SOURCE_TABLE} does not exist in database '{}'", conn.database()),
        });
    }
    let mut fields = Vec::new();
    for r in &rows {
        let name: &str = r.try_get(0).ok().flatten().unwrap_or("");
        let data_type: &str = r.try_get(1).ok().flatten().unwrap_or("");
        let precision: Option<u8> = r.try_get(2).ok().flatten();
        let scale: Option<i32> = r.try_get(3).ok().flatten();
        let dt_precision: Option<i16> = r.try_get(4).ok().flatten();
        let nullable = r.try_get::<&str, _>(5).ok().flatten().is_none_or(|v| v.eq_ignore_ascii_case("YES"));
        // A column of a type perfcopy cannot read is kept as Null so that, if it is one of
        // ours, the type check names it; extra columns are ignored anyway.
        let t = arrow_type(data_type, precision, scale, dt_precision).unwrap_or(DataType::Null);
        fields.push(Field::new(name, t, nullable));
    }
    Ok(Arc::new(Schema::new(fields)))
}

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
            Col::Str(_) => matches!(wire, Wire::NVarChar { .. } | Wire::NVarCharMax),
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
            Col::Str(b) => b.push_str(None)?,
        }
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
            Col::Str(b) => b.len(),
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
                Col::Str(b) => (b.bytes() / b.len().max(1)) * rows + rows,
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
}

impl Source for MssqlSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn group(&self) -> &str {
        &self.group
    }

    fn facts(&self) -> Option<&SourceFacts> {
        Some(&self.facts)
    }

    fn row_at(&self, run_id: i64) -> Result<Option<KeyRow>> {
        // The whole table, not this part's range: a watermark belongs to the whole source.
        let req = ReadRequest { projection: Projection::Keys, batch_rows: 1, after_run_id: Some(run_id.saturating_sub(1)), time_ranges: None };
        let Some(batch) = self.read_range(&req, None)?.next().transpose()? else { return Ok(None) };
        let ids = batch.column(crate::schema::key::RUN_ID).as_primitive::<arrow::datatypes::Int64Type>();
        if batch.num_rows() == 0 || ids.value(0) != run_id {
            return Ok(None);
        }
        let ts = crate::source::normalize::snapshot_ms(&batch, crate::schema::key::SNAPSHOT_UTC);
        let names = batch.column(crate::schema::key::SERVER_NAME).as_string::<i32>();
        Ok(Some(KeyRow { snapshot_ms: ts.value(0), server_name: names.value(0).to_string() }))
    }

    fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    fn database_name(&self) -> String {
        self.facts.database.clone()
    }

    fn ledger_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.server_name.iter().chain(self.newest_name.iter()).cloned().collect();
        v.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        v
    }

    fn read(&self, req: &ReadRequest) -> Result<BatchIter> {
        self.read_range(req, self.range)
    }
}

impl MssqlSource {
    /// Reads rows of the ID range `range` (inclusive; `None`: the whole table).
    fn read_range(&self, req: &ReadRequest, range: Option<(i64, i64)>) -> Result<BatchIter> {
        // Columns to select, in the source's own names (validated identifiers from
        // INFORMATION_SCHEMA, bracket-quoted).
        let wanted: Vec<usize> = projection_columns(req.projection)
            .iter()
            .filter(|&&c| self.columns.source_name(&self.schema, c).is_some())
            .copied()
            .collect();
        let names: Vec<String> = wanted
            .iter()
            .filter_map(|&c| self.columns.source_name(&self.schema, c))
            .map(|n| format!("[{}]", n.replace(']', "]]")))
            .collect();
        let fields: Vec<Field> = wanted
            .iter()
            .filter_map(|&c| {
                let n = self.columns.source_name(&self.schema, c)?;
                self.schema.field_with_name(n).ok().cloned()
            })
            .collect();
        let page_schema = Arc::new(Schema::new(fields));
        let run_col = names.iter().position(|n| n.eq_ignore_ascii_case("[PerfSnapshotRunID]")).unwrap_or(0);
        let upper = range.map(|(_, hi)| hi);
        let start = match (req.after_run_id, range) {
            (Some(a), Some((lo, _))) => a.max(lo - 1),
            (Some(a), None) => a,
            (None, Some((lo, _))) => lo - 1,
            (None, None) => i64::MIN,
        };
        let sql = format!(
            "SELECT TOP (@P1) {} FROM {SOURCE_TABLE} WHERE PerfSnapshotRunID > @P2{} ORDER BY PerfSnapshotRunID",
            names.join(", "),
            if upper.is_some() { " AND PerfSnapshotRunID <= @P3" } else { "" }
        );
        Ok(Box::new(PageReader {
            rt: Some(runtime()?),
            client: None,
            conn: self.conn.clone(),
            sql,
            page_rows: req.batch_rows.max(1),
            last: start,
            upper,
            done: false,
            page_schema,
            run_col,
            columns: self.columns.clone(),
            projection: req.projection,
            fast: self.fast.clone(),
            builders: None,
        }))
    }
}

/// Keyset-paged reader: each `next()` fetches one page as one batch.
struct PageReader {
    rt: Option<tokio::runtime::Runtime>,
    client: Option<SqlClient>,
    conn: ConnSpec,
    sql: String,
    page_rows: usize,
    last: i64,
    upper: Option<i64>,
    done: bool,
    page_schema: SchemaRef,
    run_col: usize,
    columns: ColumnMatch,
    projection: Projection,
    /// Decode replies with perfcopy's TDS decoder (until a result it does not read).
    fast: Arc<std::sync::atomic::AtomicBool>,
    builders: Option<Builders>,
}

/// How a page read with perfcopy's decoder failed.
enum RawError {
    Tds(tiberius::error::Error),
    Decode(DecodeError),
}

impl From<tiberius::error::Error> for RawError {
    fn from(e: tiberius::error::Error) -> Self {
        RawError::Tds(e)
    }
}

impl From<DecodeError> for RawError {
    fn from(e: DecodeError) -> Self {
        RawError::Decode(e)
    }
}

/// Runs `sql` and decodes its reply straight from the packet bytes into `cols`.
async fn fill_raw(client: &mut SqlClient, sql: &str, params: &[&dyn tiberius::ToSql], cols: &mut Builders) -> std::result::Result<(), RawError> {
    let mut reply = client.query_raw(sql, params).await?;
    let mut decoder = ReplyDecoder::new();
    while let Some(packet) = reply.next_payload().await? {
        match decoder.packet(&packet, cols) {
            Err(e @ DecodeError::Unsupported(_)) => {
                // Read the rest of the reply here, so the connection is clean for tiberius.
                while reply.next_payload().await?.is_some() {}
                return Err(e.into());
            }
            other => other?,
        }
    }
    decoder.finish()?;
    Ok(())
}

impl PageReader {
    async fn page(&mut self) -> Result<Option<RecordBatch>> {
        if self.client.is_none() {
            self.client = Some(self.conn.connect().await?);
        }
        let client = self.client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?;
        let n = self.page_rows as i64;
        let mut params: Vec<&dyn tiberius::ToSql> = vec![&n, &self.last];
        if let Some(u) = &self.upper {
            params.push(u);
        }
        let conn = &self.conn;
        // Every error names the page, so a failed read says where the copy stopped.
        let doing = match self.last {
            i64::MIN => format!("reading dbo.PerfSnapshotRun, first page (TOP {n})"),
            last => format!("reading dbo.PerfSnapshotRun, page after PerfSnapshotRunID {last} (TOP {n})"),
        };
        let doing = doing.as_str();
        let bad_value = |m: String| Error::BadValue { source_label: conn.label().to_string(), column: "PerfSnapshotRun".into(), message: m };
        // One set of builders for the whole read (each finish leaves them sized for the next
        // page); new ones if a failed page left rows behind.
        let mut cols = match self.builders.take() {
            Some(b) if b.is_empty() => b,
            _ => Builders::new(&self.page_schema, self.page_rows)?,
        };
        let mut fast_done = false;
        if self.fast.load(std::sync::atomic::Ordering::Relaxed) {
            match fill_raw(client, self.sql.as_str(), &params, &mut cols).await {
                Ok(()) => fast_done = true,
                Err(RawError::Decode(DecodeError::Unsupported(why))) => {
                    tracing::debug!("{}: reading with tiberius' row decoder: {why}", conn.label());
                    self.fast.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Err(RawError::Decode(DecodeError::Server(t))) => return Err(conn.sql_error(doing, tiberius::error::Error::Server(t))),
                Err(RawError::Decode(DecodeError::Value(m))) => return Err(bad_value(m)),
                // A reply the server did not finish (or that breaks the protocol) is never a
                // short page: a short page would end the read and lose the rest of the table.
                Err(RawError::Decode(e @ (DecodeError::Protocol(_) | DecodeError::Incomplete(_)))) => return Err(conn.error(format!("{doing}: {e}"))),
                Err(RawError::Tds(e)) => return Err(conn.sql_error(doing, e)),
            }
        }
        if !fast_done {
            let stream = client.query(self.sql.as_str(), &params).await.map_err(|e| conn.sql_error(doing, e))?;
            let mut rows = stream.into_row_stream();
            while let Some(row) = rows.try_next().await.map_err(|e| conn.sql_error(doing, e))? {
                cols.push_row(&row).map_err(bad_value)?;
            }
        }
        let got = cols.len();
        if got < self.page_rows {
            self.done = true;
        }
        if got == 0 {
            return Ok(None);
        }
        let raw = cols.finish(&self.page_schema)?;
        self.builders = Some(cols);
        let ids = raw.column(self.run_col).as_primitive::<arrow::datatypes::Int64Type>().clone();
        // Pages come in PerfSnapshotRunID order: the last row is the next page's key.
        self.last = ids.value(got - 1);
        self.columns
            .normalize(&raw, self.projection, &|r| format!("PerfSnapshotRunID {}", ids.value(r)))
            .map(Some)
    }
}

impl Iterator for PageReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // The runtime is taken out for the duration of the call so `page` can borrow self.
        let rt = self.rt.take()?;
        let r = rt.block_on(self.page());
        self.rt = Some(rt);
        match r {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn information_schema_types_map_to_exact_arrow_types() {
        assert_eq!(arrow_type("bigint", None, None, None), Some(DataType::Int64));
        assert_eq!(arrow_type("datetime2", None, None, Some(3)), Some(DataType::Timestamp(TimeUnit::Millisecond, None)));
        assert_eq!(arrow_type("DECIMAL", Some(9), Some(4), None), Some(DataType::Decimal128(9, 4)));
        assert_eq!(arrow_type("nvarchar", None, None, None), Some(DataType::Utf8));
        assert_eq!(arrow_type("xml", None, None, None), None);
    }
}
