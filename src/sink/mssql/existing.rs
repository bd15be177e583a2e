//! Reading MonitoringDB's keys and rows back, server by server.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use futures_util::TryStreamExt;

use crate::error::{Error, Result};
use crate::mssql::{runtime, ConnSpec, SqlClient};
use crate::schema::{target_columns, target_schema, RUN};


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
