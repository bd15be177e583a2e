//! Transforms: RecordBatch in, RecordBatch out. ServerID remap, the time window, and
//! deduplication.

pub mod children;
pub mod dedupe;
pub mod remap;

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch};

use crate::error::{Error, Result};
use crate::schema::{src, target_schema, tgt};

/// `--since` (inclusive) / `--until` (exclusive) on SnapshotUTC, in ms since the epoch (UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Window {
    /// Whether a SnapshotUTC is inside the window.
    #[inline]
    pub fn contains(&self, ms: i64) -> bool {
        self.since.is_none_or(|s| ms >= s) && self.until.is_none_or(|u| ms < u)
    }

    /// Whether the window restricts anything.
    pub fn is_unbounded(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }
}

/// Builds the target batch (stage / MonitoringDB column order) from a canonical source batch,
/// the target ServerIDs of its rows, and the rows to keep.
pub fn to_target(batch: &RecordBatch, server_ids: Int32Array, keep: &BooleanArray) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(target_schema().fields().len());
    cols.push(batch.column(src::SNAPSHOT_UTC).clone());
    cols.push(Arc::new(server_ids));
    cols.push(batch.column(src::SERVER_NAME).clone());
    cols.extend(batch.columns()[src::FIRST_VALUE..].iter().cloned());
    let full = RecordBatch::try_new(target_schema(), cols).map_err(Error::arrow("building target rows"))?;
    if keep.true_count() == keep.len() {
        Ok(full)
    } else {
        arrow::compute::filter_record_batch(&full, keep).map_err(Error::arrow("filtering rows"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_inclusive_exclusive() {
        let w = Window { since: Some(10), until: Some(20) };
        assert!(!w.contains(9));
        assert!(w.contains(10));
        assert!(w.contains(19));
        assert!(!w.contains(20));
        assert!(Window::default().contains(i64::MIN));
        assert!(Window { since: None, until: Some(0) }.contains(-1));
    }
}

/// Splits a target batch into one batch per ServerID (most batches hold one server only).
pub fn split_by_server(batch: &RecordBatch) -> Result<Vec<(i32, RecordBatch)>> {
    split_by_server_at(batch, tgt::SERVER_ID)
}

/// Splits a batch into one batch per value of its ServerID column at `column` (target rows,
/// keyed child rows).
pub fn split_by_server_at(batch: &RecordBatch, column: usize) -> Result<Vec<(i32, RecordBatch)>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let ids = batch.column(column).as_primitive::<arrow::datatypes::Int32Type>();
    let first = ids.value(0);
    if ids.values().iter().all(|&v| v == first) {
        return Ok(vec![(first, batch.clone())]);
    }
    let distinct: BTreeSet<i32> = ids.values().iter().copied().collect();
    let mut out = Vec::with_capacity(distinct.len());
    for id in distinct {
        let mask: BooleanArray = ids.values().iter().map(|&v| Some(v == id)).collect();
        let part = arrow::compute::filter_record_batch(batch, &mask).map_err(Error::arrow("splitting by server"))?;
        out.push((id, part));
    }
    Ok(out)
}
