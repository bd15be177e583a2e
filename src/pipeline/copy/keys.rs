//! Pass 1, keys: ServerName, SnapshotUTC and PerfSnapshotRunID of every row to copy (after the
//! watermark, inside the window), read in parallel over the sources. It finds every server
//! name — unknown ones are registered or reported before anything is written — and, with the
//! target's keys, the (server, day)s where rows can collide: the hot days.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use ahash::AHashSet as HashSet;
use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type};

use crate::error::{Error, Result};
use crate::pipeline::progress::{Bar, Progress};
use crate::pipeline::watermark::WatermarkReport;
use crate::pipeline::{for_each_source, Cancel};
use crate::schema::key;
use crate::sink::Target;
use crate::source::normalize::snapshot_ms;
use crate::source::{Projection, ReadRequest, Source};
use crate::transform::dedupe::{Day, OverlapPlanner, TARGET_RANK};
use crate::transform::remap::{fold, ServerIdMap};

use super::{CopyOptions, CopyReport};

/// Interns folded server names to small integers (the planner's provisional groups).
///
/// A name spelled in several cases keeps the spelling met first in `--from` order (lowest
/// source rank, then the source's own order), whatever order the readers run in: that
/// spelling is what gets registered.
#[derive(Default)]
pub(super) struct Names {
    index: HashMap<String, i32>,
    spelled: Vec<String>,
    spelled_by: Vec<u32>,
}

impl Names {
    fn intern(&mut self, name: &str, rank: u32) -> i32 {
        let folded = fold(name);
        if let Some(&i) = self.index.get(&folded) {
            let slot = i as usize;
            if rank < self.spelled_by[slot] {
                self.spelled[slot] = name.to_string();
                self.spelled_by[slot] = rank;
            }
            return i;
        }
        let i = self.spelled.len() as i32;
        self.index.insert(folded, i);
        self.spelled.push(name.to_string());
        self.spelled_by.push(rank);
        i
    }

    /// How group `g`'s name is spelled.
    pub(super) fn spelling(&self, g: i32) -> &str {
        &self.spelled[g as usize]
    }
}

/// Rows of one server name in one source, and their SnapshotUTC range.
#[derive(Debug, Clone, Copy)]
pub(super) struct NameStats {
    pub rows: u64,
    pub min: i64,
    pub max: i64,
}

/// Result of the key pass for one source.
pub(super) struct KeyScan {
    pub planner: OverlapPlanner,
    pub names: BTreeMap<i32, NameStats>,
    pub rows_read: u64,
    pub rows_filtered: u64,
    /// The PerfSnapshotRunID the source is read after (its trusted watermark), if any.
    pub watermark: Option<i64>,
}

/// Pass 1 over every source, at most `--readers` at once.
pub(super) fn scan(sources: &[Box<dyn Source>], checks: &[WatermarkReport], opts: &CopyOptions, progress: &Progress, cancel: &Cancel) -> Result<(Vec<KeyScan>, Names)> {
    let names = Mutex::new(Names::default());
    let bar = progress.phase("scan keys", None);
    let scans = for_each_source(sources, opts.readers, cancel, |rank, source| {
        scan_source(source, rank as u32 + 1, checks[rank].after(), opts, &names, &bar, cancel)
    })?;
    bar.finish();
    let names = names.into_inner().map_err(|_| Error::Internal("name table poisoned".into()))?;
    Ok((scans, names))
}

/// Pass 1 for one source: the keys of its rows after `after`.
fn scan_source(source: &dyn Source, rank: u32, after: Option<i64>, opts: &CopyOptions, names: &Mutex<Names>, bar: &Bar, cancel: &Cancel) -> Result<KeyScan> {
    let req = ReadRequest { projection: Projection::Keys, batch_rows: opts.batch_rows, after_run_id: after, time_ranges: None };
    let mut scan = KeyScan { planner: OverlapPlanner::new(), names: BTreeMap::new(), rows_read: 0, rows_filtered: 0, watermark: after };
    let mut groups: Vec<i32> = Vec::new();
    let mut ts_kept: Vec<i64> = Vec::new();
    for batch in source.read(&req)? {
        cancel.check()?;
        let batch = batch?;
        let ids = batch.column(key::RUN_ID).as_primitive::<Int64Type>();
        let ts = snapshot_ms(&batch, key::SNAPSHOT_UTC);
        let name_col = batch.column(key::SERVER_NAME).as_string::<i32>();
        groups.clear();
        ts_kept.clear();
        let mut last: Option<(&str, i32)> = None;
        for row in 0..batch.num_rows() {
            let (id, t) = (ids.value(row), ts.value(row));
            if after.is_some_and(|a| id <= a) {
                continue;
            }
            scan.rows_read += 1;
            if !opts.window.contains(t) {
                scan.rows_filtered += 1;
                continue;
            }
            let name = name_col.value(row);
            let g = match last {
                Some((n, g)) if n == name => g,
                _ => {
                    let g = names.lock().map_err(|_| Error::Internal("name table poisoned".into()))?.intern(name, rank);
                    last = Some((name, g));
                    g
                }
            };
            groups.push(g);
            ts_kept.push(t);
            let st = scan.names.entry(g).or_insert(NameStats { rows: 0, min: i64::MAX, max: i64::MIN });
            st.rows += 1;
            st.min = st.min.min(t);
            st.max = st.max.max(t);
        }
        scan.planner.observe(rank, &groups, &ts_kept);
        bar.inc(batch.num_rows() as u64);
    }
    Ok(scan)
}

/// Gives every server name found a target ServerID: known ones from `map`, unknown ones
/// registered in the target (`--register-servers`), provisionally numbered (`--dry-run`), or
/// an error listing all of them. Returns the ServerID of each name group.
pub(super) fn resolve_names(names: &Names, map: &mut ServerIdMap, target: &dyn Target, opts: &CopyOptions, progress: &Progress, report: &mut CopyReport) -> Result<Vec<i32>> {
    let unknown: BTreeSet<String> = names.spelled.iter().filter(|n| map.get(n).is_none()).cloned().collect();
    if !unknown.is_empty() {
        if opts.register_servers && !opts.dry_run {
            let added = target.register_servers(&unknown, map)?;
            for (n, id) in &added {
                map.insert(n, *id).map_err(Error::Internal)?;
            }
            progress.message(&format!("registered {} new server(s): {}", added.len(), describe(&added)));
            report.registered_servers = added;
        } else if opts.dry_run {
            let mut provisional = map.clone();
            let added = provisional.register(&unknown);
            report.unknown_servers = unknown.iter().cloned().collect();
            if opts.register_servers {
                report.registered_servers = added;
            }
            *map = provisional;
        } else {
            return Err(Error::UnknownServers { names: unknown.into_iter().collect() });
        }
    }
    Ok(names.spelled.iter().map(|n| map.get(n).unwrap_or(0)).collect())
}

fn describe(added: &[(String, i32)]) -> String {
    added.iter().map(|(n, id)| format!("'{n}' = {id}")).collect::<Vec<_>>().join(", ")
}

/// The (server, day)s where rows can collide: days that more than one source, or a source and
/// the target, hold rows of. The target is asked only for its keys of the servers being
/// copied, in the time range each is copied in.
pub(super) fn hot_days(scans: &mut [KeyScan], group_ids: &[i32], target: &dyn Target, cancel: &Cancel) -> Result<HashSet<Day>> {
    let to_id = |g: i32| group_ids[g as usize];
    let mut planner = OverlapPlanner::new();
    for scan in scans.iter_mut() {
        planner.merge(std::mem::take(&mut scan.planner).regroup(to_id));
    }
    let mut copied: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for scan in scans.iter() {
        for (&g, st) in &scan.names {
            let e = copied.entry(to_id(g)).or_insert((st.min, st.max));
            e.0 = e.0.min(st.min);
            e.1 = e.1.max(st.max);
        }
    }
    let mut keys = target.existing_keys(&copied)?;
    for batch in keys.by_ref() {
        cancel.check()?;
        let batch = batch?;
        let ts = snapshot_ms(&batch, 0);
        let ids = batch.column(1).as_primitive::<Int32Type>();
        planner.observe(TARGET_RANK, ids.values(), ts.values());
    }
    Ok(planner.hot_days())
}
