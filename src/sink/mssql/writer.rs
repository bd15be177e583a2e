//! The writer of a load over TDS, and the bulk load that sends its rows.
//!
//! Each unit (one deduplicated source batch) commits in one transaction, together with its
//! source's watermark in the load's ledger when it has one, so a re-run resumes after the last
//! committed unit. A failed unit rolls back completely; transient errors (dropped connection,
//! deadlock victim 1205, lock timeout 1222, statement timeout) are retried on a new connection
//! with backoff, a bounded number of times. After a failure whose outcome is unknown (the
//! connection died around COMMIT) the unit's first key is looked up in MonitoringDB's table:
//! the pipeline only sends keys the target did not hold, so finding it means the unit
//! committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int32Type, TimestampMillisecondType};
use tiberius::numeric::Numeric;
use tiberius::time::{Date, DateTime2, Time};
use tiberius::{ColumnData, SqlBulkCopyOption, TokenRow};

use crate::error::{Error, Result};
use crate::mssql::{is_transient, ConnSpec, SqlClient};
use crate::schema::{child, target_columns, target_schema, tgt, ChildTable, Column, RUN};
use crate::sink::{LoadWriter, SourceMeta, WriteUnit};

use super::ledger::{Ledger, SyncRow};
use super::{query_rows, BulkOptions};

/// Unix ms as a DATETIME2(3).
fn datetime2(ms: i64) -> DateTime2 {
    let (days, in_day) = crate::tds::unix_ms_to_datetime2(ms);
    DateTime2::new(Date::new(days as u32), Time::new(in_day as u64, 3))
}

/// One worker's writer of a load into a table: each unit in its own transaction, retried on
/// transient errors (see the module docs).
pub(super) struct UnitWriter {
    conn: ConnSpec,
    options: BulkOptions,
    sources: Arc<Vec<SourceMeta>>,
    table: String,
    /// The load's ledger, recorded in each unit's transaction; `None` for a table whose load
    /// keeps no ledger (bench's scratch table).
    ledger: Option<Arc<Ledger>>,
    rt: Option<tokio::runtime::Runtime>,
    client: Option<SqlClient>,
    started: Instant,
    /// Per source: a watermark (and its row's SnapshotUTC) advanced by empty units, not yet
    /// recorded.
    pending_mark: BTreeMap<usize, (i64, Option<i64>)>,
    /// The child tables whose rows units carry, in the units' order.
    children: Arc<Vec<ChildTable>>,
}

/// Outcome of one attempt at a unit.
enum Attempt {
    /// The unit committed.
    Done,
    /// It failed in a way a retry may fix; nothing of it committed unless the failure hid the
    /// COMMIT's outcome.
    Transient(Error),
}

impl UnitWriter {
    /// A writer of `sources`' units into `table`, recording their watermarks in `ledger`.
    pub(super) fn new(conn: ConnSpec, options: BulkOptions, sources: Arc<Vec<SourceMeta>>, table: String, ledger: Option<Arc<Ledger>>) -> Result<UnitWriter> {
        Ok(UnitWriter {
            conn,
            options,
            sources,
            table,
            ledger,
            rt: Some(crate::mssql::runtime()?),
            client: None,
            started: Instant::now(),
            pending_mark: BTreeMap::new(),
            children: Arc::new(Vec::new()),
        })
    }

    /// The writer, for units that carry rows of these child tables.
    pub(super) fn with_children(mut self, children: Arc<Vec<ChildTable>>) -> UnitWriter {
        self.children = children;
        self
    }

    async fn unit(&mut self, unit: &WriteUnit<'_>) -> Result<Attempt> {
        if self.client.is_none() {
            match self.conn.connect().await {
                Ok(c) => self.client = Some(c),
                Err(e) => return Ok(Attempt::Transient(e)),
            }
        }
        let meta = self.sources.get(unit.source).ok_or_else(|| Error::Internal(format!("unit of unknown source {}", unit.source)))?;
        let conn = self.conn.clone();
        let client = self.client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?;
        let result: std::result::Result<Option<SyncRow>, tiberius::error::Error> = async {
            client.simple_query("BEGIN TRANSACTION").await?.into_results().await?;
            if unit.rows.num_rows() > 0 {
                bulk_insert(client, &self.table, unit.rows, &self.options).await?;
            }
            if unit.children.iter().chain(unit.completing).any(|c| c.num_rows() > 0) {
                // The runs just inserted have MonitoringDB's own IDs now: the children get them.
                let mut keyed: Vec<&RecordBatch> = vec![unit.rows];
                keyed.extend(unit.completing.iter());
                let ids = run_ids(client, &self.table, &keyed).await?;
                let conversion = |m: String| tiberius::error::Error::Conversion(m.into());
                for (i, table) in self.children.iter().enumerate() {
                    if let Some(rows) = unit.children.get(i).filter(|r| r.num_rows() > 0) {
                        let rows = with_run_ids(table, rows, &ids).map_err(conversion)?;
                        bulk_insert_rows(client, &table.sql_name(), &rows, &table.target_columns()).await?;
                    }
                    // Runs MonitoringDB held already get this table's rows only if they have none.
                    if let Some(rows) = unit.completing.get(i).filter(|r| r.num_rows() > 0) {
                        let rows = with_run_ids(table, rows, &ids).map_err(conversion)?;
                        let rows = without_present(client, table, &rows).await?;
                        if rows.num_rows() > 0 {
                            bulk_insert_rows(client, &table.sql_name(), &rows, &table.target_columns()).await?;
                        }
                    }
                }
            }
            let sync = match &self.ledger {
                Some(ledger) => ledger.record_unit(client, meta, unit, self.started).await?,
                None => None,
            };
            client.simple_query("COMMIT TRANSACTION").await?.into_results().await?;
            Ok(sync)
        }
        .await;
        match result {
            Ok(sync) => {
                if let Some(ledger) = &self.ledger {
                    ledger.committed(unit.source, sync);
                }
                Ok(Attempt::Done)
            }
            Err(e) if is_transient(&e) => {
                // The connection may be unusable; a new one is made for the retry (the server
                // rolls back what this one left open).
                self.client = None;
                Ok(Attempt::Transient(conn.sql_error(&format!("loading a batch of '{}'", meta.identity), e)))
            }
            Err(e) => {
                // A failed bulk load may have left its rows half sent: the connection is
                // dropped, and the server rolls the unit back with it.
                let mid_load = matches!(e, tiberius::error::Error::Conversion(_));
                if mid_load {
                    self.client = None;
                } else if let Some(c) = self.client.as_mut() {
                    let _ = c.simple_query("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION").await;
                }
                Err(conn.sql_error(&format!("loading a batch of '{}'", meta.identity), e))
            }
        }
    }

    /// Whether a unit whose commit outcome is unknown did commit: its first key is there.
    /// Asked only of MonitoringDB's own table (the writer with a ledger), whose keys the
    /// pipeline checked before sending; a scratch table's unit is simply retried.
    async fn committed(&mut self, unit: &WriteUnit<'_>) -> Result<bool> {
        if unit.rows.num_rows() == 0 || self.ledger.is_none() {
            return Ok(false);
        }
        let client = match self.client.as_mut() {
            Some(c) => c,
            None => {
                self.client = Some(self.conn.connect().await?);
                self.client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?
            }
        };
        let ts = unit.rows.column(tgt::SNAPSHOT_UTC).as_primitive::<TimestampMillisecondType>().value(0);
        let server = unit.rows.column(tgt::SERVER_ID).as_primitive::<Int32Type>().value(0);
        let at = chrono::DateTime::from_timestamp_millis(ts).map(|d| d.naive_utc());
        let rows = query_rows(
            &self.conn,
            client,
            &format!("SELECT COUNT(*) AS n FROM {} WHERE {} = @P1 AND {} = @P2", RUN.sql_name(), RUN.server_id, RUN.snapshot_time),
            &[&server, &at],
        )
        .await?;
        Ok(rows.first().and_then(|r| r.try_get::<i32, _>(0).ok().flatten()).unwrap_or(0) > 0)
    }
}

impl LoadWriter for UnitWriter {
    fn write(&mut self, unit: WriteUnit<'_>) -> Result<()> {
        let rt = self.rt.take().ok_or_else(|| Error::Internal("writer runtime missing".into()))?;
        let r = rt.block_on(async {
            let mut attempt = 0u32;
            loop {
                match self.unit(&unit).await? {
                    Attempt::Done => return Ok(()),
                    Attempt::Transient(e) => {
                        if self.committed(&unit).await.unwrap_or(false) {
                            tracing::warn!("{e}; the batch had committed before the connection broke");
                            return Ok(());
                        }
                        attempt += 1;
                        if attempt >= self.options.retries {
                            return Err(Error::Target {
                                target: self.conn.label().to_string(),
                                message: format!("giving up after {attempt} attempts: {e}"),
                            });
                        }
                        tracing::warn!("{e}; retrying ({attempt}/{})", self.options.retries);
                        crate::pipeline::metrics::metrics().retries.inc();
                        tokio::time::sleep(self.options.backoff * 2u32.saturating_pow(attempt - 1)).await;
                    }
                }
            }
        });
        self.rt = Some(rt);
        r?;
        if unit.rows.num_rows() == 0 {
            if let Some(l) = unit.last_run_id {
                self.pending_mark.insert(unit.source, (l, unit.last_snapshot_ms));
            }
        } else {
            self.pending_mark.remove(&unit.source);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        // Record watermarks that advanced through batches with nothing new to write.
        let marks: Vec<(usize, (i64, Option<i64>))> = std::mem::take(&mut self.pending_mark).into_iter().collect();
        if !marks.is_empty() {
            let empty = RecordBatch::new_empty(target_schema());
            for (source, (last, snapshot)) in marks {
                self.write(WriteUnit { source, rows: &empty, last_run_id: Some(last), last_snapshot_ms: snapshot, children: &[], completing: &[] })?;
                self.pending_mark.clear();
            }
        }
        Ok(())
    }
}

fn opt_str(a: &arrow::array::StringArray, r: usize) -> Option<std::borrow::Cow<'_, str>> {
    (!a.is_null(r)).then(|| std::borrow::Cow::Borrowed(a.value(r)))
}

/// Bytes handed to tiberius per `send_encoded_rows` call: a few packets' worth, so little of
/// an encoded batch is buffered twice.
const SEND_CHUNK_BYTES: usize = 64 * 1024;

/// Batches of up to this many bytes (Arrow size) are encoded whole before sending (a unit of
/// QueryStats rows with long SqlText encoded whole, in UTF-16, took 64-128 MB per writer; with
/// 16 MB slices, heaptrack still found 108 MB of encode buffers at the peak of two writers).
const ENCODE_WHOLE_BYTES: usize = 4 << 20;

/// Larger ones are encoded in slices of rows of about this many bytes.
const ENCODE_SLICE_BYTES: usize = 2 << 20;

/// Sends one batch with TDS bulk load. Rows are encoded by perfcopy's own encoder
/// ([`crate::tds::encode`]) when the target's columns are the documented types, else by
/// tiberius row by row (as [`bulk_insert_token_rows`] always does).
pub async fn bulk_insert(client: &mut SqlClient, table: &str, rows: &RecordBatch, options: &BulkOptions) -> std::result::Result<(), tiberius::error::Error> {
    bulk_load(client, table, rows, options, true).await
}

/// Sends one batch with TDS bulk load the simplest correct way tiberius offers: one
/// `TokenRow` of owned values per row (the fallback of [`bulk_insert`], and the baseline
/// that `examples/tds_throughput.rs` compares against).
pub async fn bulk_insert_token_rows(client: &mut SqlClient, table: &str, rows: &RecordBatch, options: &BulkOptions) -> std::result::Result<(), tiberius::error::Error> {
    bulk_load(client, table, rows, options, false).await
}

async fn bulk_load(client: &mut SqlClient, table: &str, rows: &RecordBatch, options: &BulkOptions, own_encoder: bool) -> std::result::Result<(), tiberius::error::Error> {
    let sorted;
    let rows = if options.order_hint {
        sorted = sort_for_order_hint(rows).map_err(|e| tiberius::error::Error::Conversion(e.to_string().into()))?;
        &sorted
    } else {
        rows
    };
    let names: Vec<&str> = target_columns().iter().map(|c| c.name).collect();
    let mut flags = tiberius::SqlBulkCopyOptions::empty();
    if options.tablock {
        flags |= SqlBulkCopyOption::TableLock;
    }
    flags |= SqlBulkCopyOption::KeepNulls;
    let hints: Vec<(&str, tiberius::SortOrder)> = if options.order_hint {
        vec![(RUN.server_id, tiberius::SortOrder::Ascending), (RUN.snapshot_time, tiberius::SortOrder::Ascending)]
    } else {
        Vec::new()
    };
    let mut req = client.bulk_insert_with_options(table, &names, flags, &hints).await?;
    let layout = match crate::tds::encode::BulkLayout::for_columns(req.columns()) {
        Ok(layout) if own_encoder => Some(layout),
        Ok(_) => None,
        Err(why) => {
            tracing::debug!("bulk load of {table} uses tiberius' row encoding: {why}");
            None
        }
    };
    match layout {
        Some(layout) => send_encoded(&mut req, &layout, table, rows).await?,
        None => {
            // INT values go to a BIGINT target column (a wider one is allowed) as BIGINT.
            let bigint: Vec<bool> = names
                .iter()
                .map(|n| {
                    req.columns().iter().any(|m| {
                        m.col_name.eq_ignore_ascii_case(n)
                            && match &m.base.ty {
                                tiberius::TypeInfo::FixedLen(tiberius::FixedLenType::Int8) => true,
                                tiberius::TypeInfo::VarLenSized(v) => v.r#type() == tiberius::VarLenType::Intn && v.len() == 8,
                                _ => false,
                            }
                    })
                })
                .collect();
            for r in 0..rows.num_rows() {
                req.send(token_row(rows, r, &bigint)).await?;
            }
        }
    }
    req.finalize().await?;
    Ok(())
}

/// Encodes all of `rows` with perfcopy's encoder before the first packet goes out (a value
/// that does not fit fails the batch while nothing of the load is on the wire), then sends them.
async fn send_encoded(
    req: &mut tiberius::BulkLoadRequest<'_, tokio_util::compat::Compat<crate::mssql::SqlStream>>,
    layout: &crate::tds::encode::BulkLayout,
    table: &str,
    rows: &RecordBatch,
) -> std::result::Result<(), tiberius::error::Error> {
    // A batch of ordinary size is encoded whole before the first packet goes out, so a value
    // that does not fit fails it while nothing of the load is on the wire. A large one (long
    // text) is encoded a slice of rows at a time, so memory stays near ENCODE_SLICE_BYTES; a
    // value failing then ends the load with part of it sent, and the writer drops the
    // connection (the server rolls the unit back).
    let n = rows.num_rows();
    let per_row = rows.get_array_memory_size() / n.max(1) + 1;
    let slice = if per_row * n <= ENCODE_WHOLE_BYTES { n.max(1) } else { (ENCODE_SLICE_BYTES / per_row).max(1) };
    let mut buf = Vec::new();
    for start in (0..n).step_by(slice) {
        buf.clear();
        layout
            .encode(rows, start..(start + slice).min(n), &mut buf)
            .map_err(|m| tiberius::error::Error::Conversion(format!("bulk load into {table}: {m}").into()))?;
        for chunk in buf.chunks(SEND_CHUNK_BYTES) {
            req.send_encoded_rows(chunk).await?;
        }
    }
    Ok(())
}

/// Row `r` of a target batch as tiberius values; `bigint[i]`: target column `i` is a BIGINT.
fn token_row<'a>(rows: &'a RecordBatch, r: usize, bigint: &[bool]) -> TokenRow<'a> {
    let int = |i: usize, v: Option<i32>| if bigint.get(i).copied().unwrap_or(false) { ColumnData::I64(v.map(i64::from)) } else { ColumnData::I32(v) };
    let cols = rows.columns();
    let ts = cols[0].as_primitive::<TimestampMillisecondType>();
    let ids = cols[1].as_primitive::<Int32Type>();
    let name = cols[2].as_string::<i32>();
    let version = cols[3].as_string::<i32>();
    let cpu = cols[4].as_primitive::<Decimal128Type>();
    let wait_type = cols[5].as_string::<i32>();
    let wait_ms = cols[6].as_primitive::<Decimal128Type>();
    let mut row = TokenRow::with_capacity(12);
    row.push(ColumnData::DateTime2(Some(datetime2(ts.value(r)))));
    row.push(int(1, Some(ids.value(r))));
    row.push(ColumnData::String(opt_str(name, r)));
    row.push(ColumnData::String(opt_str(version, r)));
    row.push(ColumnData::Numeric((!cpu.is_null(r)).then(|| Numeric::new_with_scale(cpu.value(r), 4))));
    row.push(ColumnData::String(opt_str(wait_type, r)));
    row.push(ColumnData::Numeric((!wait_ms.is_null(r)).then(|| Numeric::new_with_scale(wait_ms.value(r), 4))));
    for (i, c) in cols.iter().enumerate().skip(7) {
        let c = c.as_primitive::<Int32Type>();
        row.push(int(i, (!c.is_null(r)).then(|| c.value(r))));
    }
    row
}

/// The PerfSnapshotRunID in `table` (MonitoringDB's PerfSnapshotRun, or bench's scratch table)
/// of every run whose key is in `keyed` (target rows or keyed child rows: SnapshotUTC and
/// ServerID first), by (ServerID, SnapshotUTC ms): read back inside the unit's transaction,
/// right after the runs' insert.
async fn run_ids(client: &mut SqlClient, table: &str, keyed: &[&RecordBatch]) -> std::result::Result<HashMap<(i32, i64), i64>, tiberius::error::Error> {
    const _: () = assert!(tgt::SNAPSHOT_UTC == child::SNAPSHOT_UTC && tgt::SERVER_ID == child::SERVER_ID);
    let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut n = 0;
    for b in keyed {
        let ts = b.column(tgt::SNAPSHOT_UTC).as_primitive::<TimestampMillisecondType>();
        let servers = b.column(tgt::SERVER_ID).as_primitive::<Int32Type>();
        n += b.num_rows();
        for (&t, &s) in ts.values().iter().zip(servers.values()) {
            let e = spans.entry(s).or_insert((t, t));
            e.0 = e.0.min(t);
            e.1 = e.1.max(t);
        }
    }
    let sql = format!(
        "SELECT {id}, {time} FROM {table} WHERE {server} = @P1 AND {time} >= @P2 AND {time} <= @P3",
        id = RUN.identity,
        time = RUN.snapshot_time,
        server = RUN.server_id
    );
    let mut ids = HashMap::with_capacity(n);
    for (server, (lo, hi)) in spans {
        let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|d| d.naive_utc());
        let rows = client.query(sql.as_str(), &[&server, &at(lo), &at(hi)]).await?.into_first_result().await?;
        for r in rows {
            let id: Option<i64> = r.try_get(0)?;
            let t: Option<chrono::NaiveDateTime> = r.try_get(1)?;
            if let (Some(id), Some(t)) = (id, t) {
                ids.insert((server, t.and_utc().timestamp_millis()), id);
            }
        }
    }
    Ok(ids)
}

/// Keyed child rows with MonitoringDB's PerfSnapshotRunID of their run in place of the key
/// ([`ChildTable::target_schema`]).
fn with_run_ids(table: &ChildTable, rows: &RecordBatch, ids: &HashMap<(i32, i64), i64>) -> std::result::Result<RecordBatch, String> {
    let ts = rows.column(child::SNAPSHOT_UTC).as_primitive::<TimestampMillisecondType>();
    let servers = rows.column(child::SERVER_ID).as_primitive::<Int32Type>();
    let mut run = Vec::with_capacity(rows.num_rows());
    for (&t, &s) in ts.values().iter().zip(servers.values()) {
        match ids.get(&(s, t)) {
            Some(&id) => run.push(id),
            None => return Err(format!("{}: a child row's run (ServerID {s}, SnapshotUTC {t} ms) is not in {}", table.sql_name(), RUN.sql_name())),
        }
    }
    let mut cols: Vec<arrow::array::ArrayRef> = vec![Arc::new(arrow::array::Int64Array::from(run))];
    cols.extend(rows.columns()[child::FIRST_VALUE..].iter().cloned());
    RecordBatch::try_new(table.target_schema(), cols).map_err(|e| format!("{}: {e}", table.sql_name()))
}

/// The rows of `rows` (child rows with MonitoringDB's run IDs) whose run has no rows in the
/// table yet.
async fn without_present(client: &mut SqlClient, table: &ChildTable, rows: &RecordBatch) -> std::result::Result<RecordBatch, tiberius::error::Error> {
    let run = rows.column(0).as_primitive::<arrow::datatypes::Int64Type>();
    let (lo, hi) = (run.values().iter().min().copied().unwrap_or(0), run.values().iter().max().copied().unwrap_or(0));
    let sql = format!("SELECT {key} FROM {} WHERE {key} >= @P1 AND {key} <= @P2", table.sql_name(), key = crate::schema::PARENT_KEY);
    let mut present = std::collections::HashSet::new();
    for r in client.query(sql.as_str(), &[&lo, &hi]).await?.into_first_result().await? {
        if let Some(id) = r.try_get::<i64, _>(0)? {
            present.insert(id);
        }
    }
    let keep: arrow::array::BooleanArray = run.values().iter().map(|id| Some(!present.contains(id))).collect();
    arrow::compute::filter_record_batch(rows, &keep).map_err(|e| tiberius::error::Error::Conversion(e.to_string().into()))
}

/// Sends `rows` (columns `columns`, by name) with TDS bulk load: encoded by perfcopy's own
/// encoder ([`crate::tds::encode::BulkLayout::for_batch`]) when it covers the target's columns,
/// else one tiberius `TokenRow` per row; integer values go to a wider integer column as its type.
pub async fn bulk_insert_rows(client: &mut SqlClient, table: &str, rows: &RecordBatch, columns: &[Column]) -> std::result::Result<(), tiberius::error::Error> {
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let flags = tiberius::SqlBulkCopyOptions::empty() | SqlBulkCopyOption::KeepNulls;
    let mut req = client.bulk_insert_with_options(table, &names, flags, &[]).await?;
    match crate::tds::encode::BulkLayout::for_batch(columns, req.columns()) {
        Ok(layout) => {
            send_encoded(&mut req, &layout, table, rows).await?;
            req.finalize().await?;
            return Ok(());
        }
        Err(why) => tracing::debug!("bulk load of {table} uses tiberius' row encoding: {why}"),
    }
    let widths: Vec<Option<u8>> = names
        .iter()
        .map(|n| {
            req.columns().iter().find(|m| m.col_name.eq_ignore_ascii_case(n)).and_then(|m| match &m.base.ty {
                tiberius::TypeInfo::FixedLen(tiberius::FixedLenType::Int8) => Some(8),
                tiberius::TypeInfo::FixedLen(tiberius::FixedLenType::Int4) => Some(4),
                tiberius::TypeInfo::VarLenSized(v) if v.r#type() == tiberius::VarLenType::Intn => Some(v.len() as u8),
                _ => None,
            })
        })
        .collect();
    for r in 0..rows.num_rows() {
        let mut row = TokenRow::with_capacity(rows.num_columns());
        for (i, c) in rows.columns().iter().enumerate() {
            row.push(column_data(c.as_ref(), r, widths.get(i).copied().flatten()).map_err(|m| tiberius::error::Error::Conversion(format!("bulk load into {table}, column {}: {m}", names[i]).into()))?);
        }
        req.send(row).await?;
    }
    req.finalize().await?;
    Ok(())
}

/// Value `r` of an Arrow column as tiberius sends it; `int_width`: the target column's integer
/// width in bytes, when it is an integer column.
fn column_data(a: &dyn Array, r: usize, int_width: Option<u8>) -> std::result::Result<ColumnData<'_>, String> {
    use arrow::datatypes::{DataType, Int16Type, Int64Type, TimeUnit, UInt8Type};
    let null = a.is_null(r);
    let int = |v: Option<i64>| match int_width {
        Some(8) => ColumnData::I64(v),
        Some(4) => ColumnData::I32(v.map(|v| v as i32)),
        _ => ColumnData::I64(v),
    };
    Ok(match a.data_type() {
        DataType::Int64 => int((!null).then(|| a.as_primitive::<Int64Type>().value(r))),
        DataType::Int32 => match int_width {
            Some(8) => ColumnData::I64((!null).then(|| i64::from(a.as_primitive::<Int32Type>().value(r)))),
            _ => ColumnData::I32((!null).then(|| a.as_primitive::<Int32Type>().value(r))),
        },
        DataType::Int16 => ColumnData::I16((!null).then(|| a.as_primitive::<Int16Type>().value(r))),
        DataType::UInt8 => ColumnData::U8((!null).then(|| a.as_primitive::<UInt8Type>().value(r))),
        DataType::Boolean => ColumnData::Bit((!null).then(|| a.as_boolean().value(r))),
        DataType::Decimal128(_, s) => ColumnData::Numeric((!null).then(|| Numeric::new_with_scale(a.as_primitive::<Decimal128Type>().value(r), *s as u8))),
        DataType::Timestamp(TimeUnit::Millisecond, None) => ColumnData::DateTime2((!null).then(|| datetime2(a.as_primitive::<TimestampMillisecondType>().value(r)))),
        DataType::Utf8 => ColumnData::String((!null).then(|| std::borrow::Cow::Borrowed(a.as_string::<i32>().value(r)))),
        DataType::Binary => ColumnData::Binary((!null).then(|| std::borrow::Cow::Borrowed(a.as_binary::<i32>().value(r)))),
        DataType::FixedSizeBinary(_) => ColumnData::Binary((!null).then(|| std::borrow::Cow::Borrowed(a.as_fixed_size_binary().value(r)))),
        t => return Err(format!("values of Arrow type {t} are not sent yet")),
    })
}

fn sort_for_order_hint(rows: &RecordBatch) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
    let idx = lexsort_to_indices(
        &[
            SortColumn { values: rows.column(1).clone(), options: None },
            SortColumn { values: rows.column(0).clone(), options: None },
        ],
        None,
    )?;
    take_record_batch(rows, &idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_ms_to_datetime2_and_back() {
        let d = datetime2(1_577_836_800_123);
        assert_eq!(d.date().days(), 737_424);
        assert_eq!(d.time().increments(), 123);
        assert_eq!(d.time().scale(), 3);
        let before_epoch = datetime2(-1);
        assert_eq!(before_epoch.date().days() as i64, crate::tds::DAYS_TO_UNIX_EPOCH - 1);
        assert_eq!(before_epoch.time().increments(), 86_399_999);
    }
}
