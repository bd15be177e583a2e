//! Child rows follow their run: a source's child rows, which reference a run by the source's
//! PerfSnapshotRunID, become keyed rows that carry the run's key instead (SnapshotUTC and the
//! target ServerID, [`ChildTable::keyed_schema`]). Rows of a run the copy writes are kept; rows
//! of a run it drops (a duplicate, outside the window, before the watermark) are dropped with
//! it; rows whose run is not in the source at all are orphans, counted and never loaded. Rows of
//! a run the target already holds, from the one source row that would have survived without
//! it, may complete that run: the target writes them only where it holds none of that table's
//! rows for the run.

use std::sync::Arc;

use ahash::AHashMap as HashMap;
use arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::Int64Type;

use crate::error::{Error, Result};
use crate::schema::ChildTable;

/// The runs of one source batch, as the copy decided them.
pub struct Runs<'a> {
    /// Position of each run in the batch, by the source's PerfSnapshotRunID.
    pub position: HashMap<i64, usize>,
    /// SnapshotUTC (ms) per position.
    pub snapshot_ms: &'a [i64],
    /// Target ServerID per position.
    pub server_ids: &'a Int32Array,
    /// Whether the copy writes the run at each position.
    pub keep: &'a [bool],
    /// Whether the run at each position is the target's already, and this source's row is the
    /// one whose children may complete it.
    pub complete: &'a [bool],
}

impl<'a> Runs<'a> {
    /// The runs of a batch whose PerfSnapshotRunIDs are `run_ids`.
    pub fn new(run_ids: &[i64], snapshot_ms: &'a [i64], server_ids: &'a Int32Array, keep: &'a [bool], complete: &'a [bool]) -> Runs<'a> {
        Runs { position: run_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect(), snapshot_ms, server_ids, keep, complete }
    }
}

/// What became of a table's child rows of one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChildCounts {
    pub rows_read: u64,
    pub rows_kept: u64,
    /// Rows of a run the copy does not write (a duplicate's, or outside the window).
    pub dropped_with_run: u64,
    /// Rows whose run is not in the source.
    pub orphans: u64,
    /// Rows of runs the target already holds, offered to complete them.
    pub for_held_runs: u64,
}

/// The keyed rows of `rows` (in [`ChildTable::source_schema`]) whose run the copy writes, and
/// those that may complete a run the target holds. Every row of `rows` must reference a run in
/// the ID range the batch of `runs` covers: a run not among `runs` is then not in the source
/// (an orphan).
pub fn keyed(table: &ChildTable, rows: &RecordBatch, runs: &Runs<'_>) -> Result<(RecordBatch, RecordBatch, ChildCounts)> {
    let parent = rows.column(0).as_primitive::<Int64Type>();
    let mut counts = ChildCounts { rows_read: rows.num_rows() as u64, ..Default::default() };
    let (mut write, mut complete) = (Vec::new(), Vec::new());
    for (r, run) in parent.iter().enumerate() {
        match run.and_then(|id| runs.position.get(&id)) {
            None => counts.orphans += 1,
            Some(&p) if runs.keep[p] => write.push((r as u32, p)),
            Some(&p) if runs.complete[p] => complete.push((r as u32, p)),
            Some(_) => counts.dropped_with_run += 1,
        }
    }
    counts.rows_kept = write.len() as u64;
    counts.for_held_runs = complete.len() as u64;
    Ok((select(table, rows, runs, &write)?, select(table, rows, runs, &complete)?, counts))
}

/// Rows `picked` (row, its run's position) of `rows`, keyed by their runs.
fn select(table: &ChildTable, rows: &RecordBatch, runs: &Runs<'_>, picked: &[(u32, usize)]) -> Result<RecordBatch> {
    let take = UInt32Array::from(picked.iter().map(|&(r, _)| r).collect::<Vec<_>>());
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(rows.num_columns() + 1);
    cols.push(Arc::new(TimestampMillisecondArray::from(picked.iter().map(|&(_, p)| runs.snapshot_ms[p]).collect::<Vec<_>>())));
    cols.push(Arc::new(Int32Array::from(picked.iter().map(|&(_, p)| runs.server_ids.value(p)).collect::<Vec<_>>())));
    for c in &rows.columns()[1..] {
        cols.push(if take.len() == c.len() { c.clone() } else { arrow::compute::take(c.as_ref(), &take, None).map_err(Error::arrow("selecting child rows"))? });
    }
    RecordBatch::try_new(table.keyed_schema(), cols).map_err(|e| Error::Internal(format!("keyed rows of dbo.{}: {e}", table.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FoundColumn, SqlType};
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Int32Type;

    #[test]
    fn rows_follow_kept_runs_and_orphans_are_counted() {
        let t = ChildTable::discovered(
            "PerfSnapshotWaitStats",
            vec![
                FoundColumn::new("PerfSnapshotWaitStatsID", SqlType::BigInt, false),
                FoundColumn::new("PerfSnapshotRunID", SqlType::BigInt, false),
                FoundColumn::new("WaitType", SqlType::NVarChar(120), false),
            ],
            Some("PerfSnapshotWaitStatsID"),
        );
        assert_eq!(t.values.len(), 1);
        // Runs 10 (kept), 11 (dropped), 12 (kept), 13 (held by the target; completes it);
        // 99 is not in the source.
        let rows = RecordBatch::try_new(
            t.source_schema(),
            vec![Arc::new(Int64Array::from(vec![10, 11, 10, 12, 99, 13])), Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e", "f"]))],
        )
        .unwrap();
        let (ts, ids, keep, complete) = (vec![1000, 2000, 3000, 4000], Int32Array::from(vec![7, 7, 8, 8]), vec![true, false, true, false], vec![false, false, false, true]);
        let runs = Runs::new(&[10, 11, 12, 13], &ts, &ids, &keep, &complete);
        let (out, held, n) = keyed(&t, &rows, &runs).unwrap();
        assert_eq!(n, ChildCounts { rows_read: 6, rows_kept: 3, dropped_with_run: 1, orphans: 1, for_held_runs: 1 });
        assert_eq!(held.num_rows(), 1);
        assert_eq!(held.column(0).as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(0), 4000);
        assert_eq!(held.column(2).as_string::<i32>().value(0), "f");
        let snap = out.column(0).as_primitive::<arrow::datatypes::TimestampMillisecondType>().values().to_vec();
        let server = out.column(1).as_primitive::<Int32Type>().values().to_vec();
        let wait: Vec<_> = out.column(2).as_string::<i32>().iter().flatten().collect();
        assert_eq!(snap, vec![1000, 1000, 3000]);
        assert_eq!(server, vec![7, 7, 8]);
        assert_eq!(wait, vec!["a", "c", "d"]);
    }
}
