//! `status`: where each source stands in a target, from the target's records (stage
//! watermarks and failures, MonitoringDB's ledger) and the source as it is now.
//!
//! Per source: the last successful sync and the rows it wrote, the recorded watermark
//! (LastRunID and its SnapshotUTC) and whether the next copy would use it (the same check a
//! copy makes, [`crate::pipeline::watermark::check`]), the source's newest row, the lag (rows
//! the next copy reads, and how much newer the source's newest snapshot is than the
//! watermark's), and the last failure with its message. A source is within the limits when
//! it has a usable watermark and its lag does not pass `--max-lag` / `--max-lag-rows`.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use serde::Serialize;

use crate::error::Result;
use crate::pipeline::copy::iso;
use crate::pipeline::human;
use crate::pipeline::watermark::{self, WatermarkReport, WatermarkStatus};
use crate::pipeline::{for_each_source, Cancel};
use crate::sink::{Recorded, Target};
use crate::source::{Projection, ReadRequest, Source};
use crate::transform::remap::ServerIdMap;

/// A validated `status` job.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub server_map: Option<ServerIdMap>,
    pub readers: usize,
    pub batch_rows: usize,
    /// Most time a source's newest snapshot may be ahead of its watermark's.
    pub max_lag: Option<Duration>,
    /// Most rows a source may hold after its watermark.
    pub max_lag_rows: Option<u64>,
}

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub target: String,
    pub now_utc: String,
    pub max_lag_seconds: Option<u64>,
    pub max_lag_rows: Option<u64>,
    pub sources: Vec<SourceStatus>,
    /// Every source within the limits.
    pub ok: bool,
}

/// One source's line.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub source: String,
    pub identity: String,
    pub last_success_utc: Option<String>,
    /// Rows the last successful sync wrote.
    pub rows_copied: Option<u64>,
    /// The recorded watermark: LastRunID and the SnapshotUTC of that row.
    pub last_run_id: Option<i64>,
    pub last_snapshot_utc: Option<String>,
    /// What the next copy would do with it.
    pub watermark: WatermarkReport,
    /// The source's highest PerfSnapshotRunID and newest SnapshotUTC now.
    pub source_max_run_id: Option<i64>,
    pub source_last_snapshot_utc: Option<String>,
    /// Rows the next copy reads: after the watermark when it would be used, else all.
    pub lag_rows: u64,
    /// How much newer the source's newest snapshot is than the watermark's (none without one).
    pub lag_seconds: Option<u64>,
    pub last_failure_utc: Option<String>,
    pub last_failure: Option<String>,
    pub within_limits: bool,
    /// Why it is not, in a few words.
    pub problem: Option<String>,
}

/// Rows of a source after a run ID: how many, the highest ID, the newest SnapshotUTC.
fn rows_after(source: &dyn Source, after: Option<i64>, batch_rows: usize) -> Result<(u64, Option<i64>, Option<i64>)> {
    let req = ReadRequest { projection: Projection::Keys, batch_rows, after_run_id: after, time_ranges: None };
    let (mut n, mut max_id, mut newest) = (0u64, None::<i64>, None::<i64>);
    for batch in source.read(&req)? {
        let batch = batch?;
        let ids = batch.column(crate::schema::key::RUN_ID).as_primitive::<Int64Type>();
        let ts = crate::source::normalize::snapshot_ms(&batch, crate::schema::key::SNAPSHOT_UTC);
        for (r, &id) in ids.values().iter().enumerate() {
            if after.is_some_and(|a| id <= a) {
                continue;
            }
            n += 1;
            max_id = max_id.max(Some(id));
            newest = newest.max(Some(ts.value(r)));
        }
    }
    Ok((n, max_id, newest))
}

fn one(source: &dyn Source, target: &dyn Target, map: &ServerIdMap, opts: &StatusOptions) -> Result<SourceStatus> {
    let history = target.sync_history(source)?;
    let (last_run_id, last_snapshot_ms) = match target.watermark(source)? {
        Recorded::Mark(w) => (Some(w.last_run_id), w.last_snapshot_ms),
        Recorded::Unusable { last_run_id, .. } => (last_run_id, None),
        Recorded::Nothing => (None, None),
    };
    let check = watermark::check(source, target, map, &[], false)?;
    let after = check.after();
    let (lag_rows, max_after, newest_after) = rows_after(source, after, opts.batch_rows)?;
    // With nothing after the watermark, the newest row is the watermark's own.
    let (source_max, source_newest) = match (max_after, after) {
        (Some(m), _) => (Some(m), newest_after),
        (None, Some(a)) => (Some(a), last_snapshot_ms),
        (None, None) => (None, None),
    };
    let lag_seconds = match (source_newest, last_snapshot_ms) {
        (Some(n), Some(w)) => Some(((n - w).max(0) / 1000) as u64),
        (None, Some(_)) => Some(0),
        _ => None,
    };
    let problem = if check.status != WatermarkStatus::Used && lag_rows > 0 {
        Some(match check.status {
            WatermarkStatus::None => "never synced".to_string(),
            _ => format!("watermark set aside: {}", check.reason.as_deref().unwrap_or("unverified")),
        })
    } else if let (Some(max), Some(lag)) = (opts.max_lag, lag_seconds) {
        (lag > max.as_secs()).then(|| format!("{} behind (limit {})", human::duration(Duration::from_secs(lag)), human::duration(max)))
    } else {
        None
    };
    let problem = problem.or_else(|| opts.max_lag_rows.filter(|&m| lag_rows > m).map(|m| format!("{lag_rows} rows behind (limit {m})")));
    Ok(SourceStatus {
        source: source.label().to_string(),
        identity: source.identity().to_string(),
        last_success_utc: history.last_success_utc,
        rows_copied: history.rows_copied,
        last_run_id,
        last_snapshot_utc: last_snapshot_ms.map(iso),
        watermark: check,
        source_max_run_id: source_max,
        source_last_snapshot_utc: source_newest.map(iso),
        lag_rows,
        lag_seconds,
        last_failure_utc: history.last_failure_utc,
        last_failure: history.last_failure,
        within_limits: problem.is_none(),
        problem,
    })
}

/// Reports every source's status in `target`.
pub fn run_status(sources: &[Box<dyn Source>], target: &dyn Target, opts: &StatusOptions, cancel: &Cancel) -> Result<StatusReport> {
    let registry = target.known_servers()?;
    let map = match &opts.server_map {
        Some(m) => ServerIdMap::layered(m, &registry),
        None => registry,
    };
    let lines = for_each_source(sources, opts.readers, cancel, |_, s| one(s, target, &map, opts))?;
    Ok(StatusReport {
        target: target.label().to_string(),
        now_utc: iso(chrono::Utc::now().timestamp_millis()),
        max_lag_seconds: opts.max_lag.map(|d| d.as_secs()),
        max_lag_rows: opts.max_lag_rows,
        ok: lines.iter().all(|l| l.within_limits),
        sources: lines,
    })
}
