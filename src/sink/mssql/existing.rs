//! Reading MonitoringDB's keys and rows back, server by server, and its child tables' rows by run.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use futures_util::TryStreamExt;

use crate::error::{Error, Result};
use crate::mssql::{runtime, ConnSpec, SqlClient};
use arrow::array::AsArray;

use crate::schema::{target_columns, target_schema, ChildTable, RUN};
use crate::tds::arrow::Builders;
use crate::tds::decode::{DecodeError, ReplyDecoder};


/// Reads target rows server by server and range by range (server, first ms, last ms: both
/// ends included, as the [`crate::sink::Target`] methods take them), one query each.
pub(super) struct PerServer {
    conn: ConnSpec,
    ranges: std::vec::IntoIter<(i32, i64, i64)>,
    keys_only: bool,
    rt: Option<tokio::runtime::Runtime>,
    client: Option<SqlClient>,
    pending: std::vec::IntoIter<RecordBatch>,
}

impl PerServer {
    /// A reader of `ranges`, of the key columns only or of whole target rows.
    pub(super) fn new(conn: ConnSpec, ranges: Vec<(i32, i64, i64)>, keys_only: bool) -> PerServer {
        PerServer { conn, ranges: ranges.into_iter(), keys_only, rt: None, client: None, pending: Vec::new().into_iter() }
    }

    async fn fetch(conn: &ConnSpec, client: &mut Option<SqlClient>, keys_only: bool, (server, lo, hi): (i32, i64, i64)) -> Result<Vec<RecordBatch>> {
        if client.is_none() {
            *client = Some(conn.connect().await?);
        }
        let c = client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?;
        let (time, server_col) = (RUN.snapshot_time, RUN.server_id);
        let cols: Vec<&str> = if keys_only { vec![time, server_col] } else { target_columns().iter().map(|c| c.name).collect() };
        let sql = format!("SELECT {} FROM {} WHERE {server_col} = @P1 AND {time} >= @P2 AND {time} <= @P3", cols.join(", "), RUN.sql_name());
        let lo = chrono::DateTime::from_timestamp_millis(lo.max(-62_135_596_800_000)).map(|d| d.naive_utc());
        let hi = chrono::DateTime::from_timestamp_millis(hi.min(253_402_300_799_999)).map(|d| d.naive_utc());
        let stream = c.query(sql.as_str(), &[&server, &lo, &hi]).await.map_err(|e| conn.sql_error("reading existing rows", e))?;
        let mut rows = stream.into_row_stream();
        let schema = if keys_only {
            Arc::new(arrow::datatypes::Schema::new(vec![target_schema().field(0).clone(), target_schema().field(1).clone()]))
        } else {
            target_schema()
        };
        let mut batches = Vec::new();
        let mut cols_b = crate::tds::arrow::Builders::new(&schema, crate::defaults::INTERNAL_BATCH_ROWS)?;
        while let Some(row) = rows.try_next().await.map_err(|e| conn.sql_error("reading existing rows", e))? {
            cols_b.push_row(&row).map_err(|m| conn.error(format!("reading existing rows: {m}")))?;
            if cols_b.len() >= crate::defaults::INTERNAL_BATCH_ROWS {
                batches.push(cols_b.finish(&schema)?);
            }
        }
        if !cols_b.is_empty() {
            batches.push(cols_b.finish(&schema)?);
        }
        Ok(batches)
    }
}

impl Iterator for PerServer {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = self.pending.next() {
                return Some(Ok(b));
            }
            let range = self.ranges.next()?;
            if self.rt.is_none() {
                match runtime() {
                    Ok(rt) => self.rt = Some(rt),
                    Err(e) => return Some(Err(e)),
                }
            }
            let rt = self.rt.as_ref()?;
            match rt.block_on(Self::fetch(&self.conn, &mut self.client, self.keys_only, range)) {
                Ok(batches) => self.pending = batches.into_iter(),
                Err(e) => {
                    self.ranges = Vec::new().into_iter();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Every row of MonitoringDB's child table `table`, keyed by its run (MonitoringDB's run IDs
/// mapped to (ServerID, SnapshotUTC) from dbo.PerfSnapshotRun), handed to `f` in batches;
/// returns the rows whose run is not in dbo.PerfSnapshotRun. Memory: one entry per run plus one
/// batch.
pub(super) async fn child_rows(conn: &ConnSpec, table: &ChildTable, f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<u64> {
    let mut client = conn.connect().await?;
    let doing = format!("reading {}", RUN.sql_name());
    let mut runs: ahash::AHashMap<i64, (i32, i64)> = ahash::AHashMap::new();
    {
        let sql = format!("SELECT {}, {}, {} FROM {}", RUN.identity, RUN.server_id, RUN.snapshot_time, RUN.sql_name());
        let mut rows = client.query(sql, &[]).await.map_err(|e| conn.sql_error(&doing, e))?.into_row_stream();
        while let Some(r) = rows.try_next().await.map_err(|e| conn.sql_error(&doing, e))? {
            let id: Option<i64> = r.try_get(0).ok().flatten();
            let server: Option<i32> = r.try_get(1).ok().flatten();
            let t: Option<chrono::NaiveDateTime> = r.try_get(2).ok().flatten();
            if let (Some(id), Some(server), Some(t)) = (id, server, t) {
                runs.insert(id, (server, t.and_utc().timestamp_millis()));
            }
        }
    }
    let doing = format!("reading {}", table.sql_name());
    let names: Vec<String> = table.target_columns().iter().map(|c| format!("[{}]", c.name.replace(']', "]]"))).collect();
    let sql = format!("SELECT {} FROM [dbo].[{}]", names.join(", "), table.name.replace(']', "]]"));
    let schema = table.target_schema();
    let chunk = crate::defaults::INTERNAL_BATCH_ROWS;
    let mut cols = Builders::new(&schema, chunk)?;
    let bad = |m: String| Error::Target { target: conn.label().to_string(), message: format!("{}: {m}", table.sql_name()) };
    let mut orphans = 0u64;
    let mut flush = |cols: &mut Builders, orphans: &mut u64| -> Result<()> {
        let b = cols.finish(&schema)?;
        let (keyed, lost) = keyed_by_run(table, &b, &runs)?;
        *orphans += lost;
        f(keyed)
    };
    // perfcopy's own decoder, as the sources read: tiberius' rows give a SQL_VARIANT as a value
    // of its base type without the type (decimal(18,4) and varchar's collation would be lost).
    // Only whole rows are decoded from a packet, so the builders can be flushed between packets.
    let mut reply = client.query_raw(sql.as_str(), &[]).await.map_err(|e| conn.sql_error(&doing, e))?;
    let mut decoder = ReplyDecoder::new();
    let decode_error = |e: DecodeError| match e {
        DecodeError::Server(t) => conn.sql_error(&doing, tiberius::error::Error::Server(t)),
        DecodeError::Value(m) => bad(m),
        e => conn.error(format!("{doing}: {e}")),
    };
    while let Some(packet) = reply.next_payload().await.map_err(|e| conn.sql_error(&doing, e))? {
        decoder.packet(&packet, &mut cols).map_err(decode_error)?;
        if cols.len() >= chunk {
            flush(&mut cols, &mut orphans)?;
        }
    }
    decoder.finish().map_err(decode_error)?;
    if !cols.is_empty() {
        flush(&mut cols, &mut orphans)?;
    }
    Ok(orphans)
}

/// Target child rows (MonitoringDB's run ID, then values) keyed by their runs; the rows whose
/// run is unknown are left out and counted.
fn keyed_by_run(table: &ChildTable, rows: &RecordBatch, runs: &ahash::AHashMap<i64, (i32, i64)>) -> Result<(RecordBatch, u64)> {
    use arrow::array::{ArrayRef, Int32Array, TimestampMillisecondArray, UInt32Array};
    let ids = rows.column(0).as_primitive::<arrow::datatypes::Int64Type>();
    let (mut take, mut ts, mut servers) = (Vec::new(), Vec::new(), Vec::new());
    for (r, id) in ids.iter().enumerate() {
        if let Some(&(s, t)) = id.and_then(|id| runs.get(&id)) {
            take.push(r as u32);
            ts.push(t);
            servers.push(s);
        }
    }
    let lost = (rows.num_rows() - take.len()) as u64;
    let take = UInt32Array::from(take);
    let mut cols: Vec<ArrayRef> = vec![Arc::new(TimestampMillisecondArray::from(ts)), Arc::new(Int32Array::from(servers))];
    for c in &rows.columns()[1..] {
        cols.push(arrow::compute::take(c.as_ref(), &take, None).map_err(Error::arrow("keying child rows"))?);
    }
    let b = RecordBatch::try_new(table.keyed_schema(), cols).map_err(|e| Error::Internal(format!("{}: {e}", table.sql_name())))?;
    Ok((b, lost))
}
