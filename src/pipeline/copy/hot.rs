//! Pass 2, hot rows: the full rows of hot days only, from the sources and the target, offered
//! to the dedupe state, which keeps each hot key's survivor (see [`crate::transform::dedupe`]).
//! [`SourceRows`] is the one filter of a source batch that this pass and the stream pass share.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ahash::AHashSet as HashSet;
use arrow::array::{AsArray, Int32Array, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};

use crate::error::{Error, Result};
use crate::pipeline::{for_each_source, Cancel};
use crate::schema::{src, tgt};
use crate::sink::Target;
use crate::source::normalize::snapshot_ms;
use crate::source::{Projection, ReadRequest, Source};
use crate::transform::dedupe::{day_of, day_ranges, row_hashes, Day, Winners, TARGET_RANK};
use crate::transform::remap::{target_ids, ServerIdMap};
use crate::transform::Window;

use super::keys::KeyScan;
use super::CopyOptions;

/// Hot-day lookups for consecutive rows, which nearly always share their (server, day).
struct HotCache<'a> {
    hot: &'a HashSet<Day>,
    last: Option<(Day, bool)>,
}

impl<'a> HotCache<'a> {
    fn new(hot: &'a HashSet<Day>) -> Self {
        HotCache { hot, last: None }
    }

    #[inline]
    fn get(&mut self, server: i32, ts: i64) -> bool {
        let day = (server, day_of(ts));
        match self.last {
            Some((d, v)) if d == day => v,
            _ => {
                let v = self.hot.contains(&day);
                self.last = Some((day, v));
                v
            }
        }
    }
}

/// A source batch as the copy sees it: each row's target ServerID, whether the copy wants the
/// row (after the watermark `after`, inside the window), and which wanted rows fall on hot days.
pub(super) struct SourceRows {
    pub ids: Int32Array,
    pub keep: Vec<bool>,
    pub hot: Vec<usize>,
}

impl SourceRows {
    pub(super) fn of(batch: &RecordBatch, after: Option<i64>, window: &Window, map: &ServerIdMap, hot: &HashSet<Day>) -> Result<SourceRows> {
        let run = batch.column(src::RUN_ID).as_primitive::<Int64Type>();
        let ts = snapshot_ms(batch, src::SNAPSHOT_UTC);
        let keep: Vec<bool> = run.values().iter().zip(ts.values().iter()).map(|(&id, &t)| after.is_none_or(|a| id > a) && window.contains(t)).collect();
        let ids = target_ids(map, batch, src::SERVER_NAME)?;
        let mut is_hot = HotCache::new(hot);
        let hot = (0..batch.num_rows()).filter(|&r| keep[r] && is_hot.get(ids.value(r), ts.value(r))).collect();
        Ok(SourceRows { ids, keep, hot })
    }
}

/// The value columns of a source batch (what a conflict compares).
pub(super) fn source_value_columns() -> Vec<usize> {
    (src::FIRST_VALUE..crate::schema::SOURCE_COLUMNS.len()).collect()
}

/// Pass 2: reads the rows of hot days from sources and target and picks each key's survivor.
/// With `children`, the set also tracks each key's best source row (which completes a run the
/// target holds without children).
#[allow(clippy::too_many_arguments)]
pub(super) fn winners(sources: &[Box<dyn Source>], target: &dyn Target, opts: &CopyOptions, map: &ServerIdMap, hot: &HashSet<Day>, scans: &[KeyScan], children: bool, cancel: &Cancel) -> Result<Winners> {
    let empty = || if children { Winners::tracking_sources() } else { Winners::new() };
    if hot.is_empty() {
        return Ok(empty());
    }
    let mut by_server: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &(s, d) in hot {
        by_server.entry(s).or_default().push(d);
    }
    // Day ranges end where the next day begins; the target takes inclusive ranges.
    let ranges: BTreeMap<i32, Vec<(i64, i64)>> = by_server.into_iter().map(|(s, d)| (s, day_ranges(d).into_iter().map(|(a, z)| (a, z - 1)).collect())).collect();
    let all_ranges = day_ranges(hot.iter().map(|&(_, d)| d));
    let value_cols = source_value_columns();

    let winners = Mutex::new(empty());
    for_each_source(sources, opts.readers, cancel, |rank, source| {
        let after = scans[rank].watermark;
        let req = ReadRequest { projection: Projection::Full, batch_rows: opts.batch_rows, after_run_id: after, time_ranges: Some(all_ranges.clone()) };
        for batch in source.read(&req)? {
            cancel.check()?;
            let batch = batch?;
            let rows = SourceRows::of(&batch, after, &opts.window, map, hot)?;
            if rows.hot.is_empty() {
                continue;
            }
            let hashes = row_hashes(&batch, &value_cols, &rows.hot);
            let run = batch.column(src::RUN_ID).as_primitive::<Int64Type>();
            let ts = snapshot_ms(&batch, src::SNAPSHOT_UTC);
            // One shared table (not one per reader, merged later): the state is the biggest
            // memory user of a copy, so it must not exist twice.
            let mut w = winners.lock().map_err(|_| Error::Internal("dedupe state poisoned".into()))?;
            for (&r, h) in rows.hot.iter().zip(hashes) {
                w.offer(rows.ids.value(r), ts.value(r), rank as u32 + 1, run.value(r), h);
            }
        }
        Ok(())
    })?;
    let mut winners = winners.into_inner().map_err(|_| Error::Internal("dedupe state poisoned".into()))?;

    let target_value_cols: Vec<usize> = (tgt::FIRST_VALUE..crate::schema::target_columns().len()).collect();
    for batch in target.existing_rows(&ranges)? {
        cancel.check()?;
        let batch = batch?;
        let ts = snapshot_ms(&batch, tgt::SNAPSHOT_UTC);
        let ids = batch.column(tgt::SERVER_ID).as_primitive::<Int32Type>();
        let mut is_hot = HotCache::new(hot);
        let rows: Vec<usize> = (0..batch.num_rows()).filter(|&r| is_hot.get(ids.value(r), ts.value(r))).collect();
        let hashes = row_hashes(&batch, &target_value_cols, &rows);
        for (&r, h) in rows.iter().zip(hashes) {
            winners.offer(ids.value(r), ts.value(r), TARGET_RANK, 0, h);
        }
    }
    Ok(winners)
}
