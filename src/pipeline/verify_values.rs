//! `verify --values`: per target server and UTC day, the row count and an order-independent
//! checksum of every PerfSnapshotRun column, sources (after `copy`'s rules) against the target.
//!
//! **Expected values** are the sources' rows as `copy` would keep them: ServerID remapped by
//! ServerName (the target's registry under `--server-map`), the time window applied, and of
//! the rows sharing a (SnapshotUTC, ServerID) only the survivor (the first `--from` that has
//! the key, then the lowest PerfSnapshotRunID; see [`crate::transform::dedupe`]). Like `copy`,
//! three passes keep state only where keys can collide: the keys find the days where two
//! sources meet or a source repeats itself ([`OverlapPlanner`]), the keys of those days pick
//! each key's survivor ([`Winners`]), and the full rows are hashed, a duplicate that is not its
//! key's survivor left out. Memory: one entry per (server, day) and column, plus the keys of
//! the days that can hold duplicates.
//!
//! **Checksum** of a column over a (server, day) ([`crate::checksum`]): its non-NULL count and
//! the BIGINT sum of a 32-bit SHA-256-derived hash of each value's canonical form, so row
//! order, batches and file layout do not matter, while a changed value, a NULL set or cleared,
//! or a row moved to another day changes it. Sources are always computed here, on Arrow: only
//! the rows read can have the survivor rule applied (a DBATools server cannot know what the
//! other sources hold). The target's side is computed where it lives: MonitoringDB runs one
//! GROUP BY over dbo.PerfSnapshotRun (`HASHBYTES`, `DATEDIFF_BIG`; only the aggregates cross
//! the wire), a stage on the Arrow rows of its Parquet files. A target row the target held
//! before a copy (a key `copy` never rewrites) counts like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::Cancel;
use crate::schema::{src, target_columns, tgt, Column};
use crate::sink::Target;
use crate::source::normalize::snapshot_ms;
use crate::source::{Projection, ReadRequest, Source};
use crate::checksum::{self, ColumnSum};
use crate::transform::dedupe::{day_of, OverlapPlanner, Verdict, Winners};
use crate::transform::remap::ServerIdMap;
use crate::transform::Window;

/// Rows and per-column checksums of one (server, day).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DayValues {
    rows: u64,
    sums: Vec<ColumnSum>,
}

impl DayValues {
    fn empty(columns: usize) -> DayValues {
        DayValues { rows: 0, sums: vec![ColumnSum::default(); columns] }
    }
}

/// Per (ServerID, UTC day number).
type Aggregates = BTreeMap<(i32, i64), DayValues>;

/// One (server, day) whose rows or values differ.
#[derive(Debug, Clone, Serialize)]
pub struct DayDiff {
    pub server_id: i32,
    /// The ServerName the sources give this ServerID (the first seen, when aliases differ).
    pub server_name: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub source_rows: u64,
    pub target_rows: u64,
    /// Columns whose checksum differs.
    pub columns: Vec<String>,
}

/// The outcome of `verify --values`.
#[derive(Debug, Clone, Serialize)]
pub struct ValuesReport {
    /// (server, day) buckets the sources hold, each compared.
    pub days_compared: u64,
    /// Columns compared per row.
    pub columns: Vec<String>,
    /// Child tables: (table, server, day of the run) buckets compared.
    pub child_days_compared: u64,
    /// Child tables: each (table, server, day of the run) whose rows or values differ.
    pub children_differing: Vec<ChildDayDiff>,
    /// Where the target's side was computed: `server` (a GROUP BY SQL Server ran) or `arrow`
    /// (here, on the rows the target returned).
    pub target_side: &'static str,
    pub differing: Vec<DayDiff>,
}

/// One child table's (server, day of the run) whose rows or values differ.
#[derive(Debug, Clone, Serialize)]
pub struct ChildDayDiff {
    pub table: String,
    #[serde(flatten)]
    pub day: DayDiff,
}

/// One child table's per (ServerID, day of the run) rows and column checksums, both sides
/// (computed on Arrow by `verify`'s run-by-run child comparison: a run's children come from the
/// source `copy` keeps the run from).
pub struct ChildDays {
    pub table: &'static str,
    pub names: Vec<&'static str>,
    pub want: BTreeMap<(i32, i64), (u64, Vec<ColumnSum>)>,
    pub got: BTreeMap<(i32, i64), (u64, Vec<ColumnSum>)>,
}

impl ValuesReport {
    /// Adds a child table's comparison: every day the sources' runs fall on.
    pub fn add_child_table(&mut self, table: &str, columns: &[&str], want: &BTreeMap<(i32, i64), (u64, Vec<ColumnSum>)>, got: &BTreeMap<(i32, i64), (u64, Vec<ColumnSum>)>, names: &BTreeMap<i32, String>) {
        let agg = |m: &BTreeMap<(i32, i64), (u64, Vec<ColumnSum>)>| -> Aggregates { m.iter().map(|(k, (rows, sums))| (*k, DayValues { rows: *rows, sums: sums.clone() })).collect() };
        let r = compare(&agg(want), &agg(got), columns, names);
        self.child_days_compared += r.days_compared;
        self.children_differing.extend(r.differing.into_iter().map(|day| ChildDayDiff { table: table.to_string(), day }));
    }
}

/// What `check_values` needs of `verify`'s options.
pub struct ValuesScope<'a> {
    pub map: &'a ServerIdMap,
    pub window: Window,
    pub readers: usize,
    pub batch_rows: usize,
}

fn poisoned<T>(_: T) -> Error {
    Error::Internal("verify --values state poisoned".into())
}

/// The compared columns: every target column but ServerID (the bucket's key).
fn compared_columns() -> Vec<&'static str> {
    target_columns().iter().enumerate().filter(|(i, _)| *i != tgt::SERVER_ID).map(|(_, c)| c.name).collect()
}

/// Indices of `names` in a batch, by name (case-insensitive, as sources are matched).
fn indices(batch: &RecordBatch, names: &[&str], what: &str) -> Result<Vec<usize>> {
    let schema = batch.schema();
    names
        .iter()
        .map(|n| {
            schema
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(n))
                .ok_or_else(|| Error::Internal(format!("verify --values: column '{n}' missing in {what}'s rows")))
        })
        .collect()
}

/// Adds the rows `rows` of `batch` (columns `cols`) to the buckets `days[i]`.
fn add_rows(agg: &mut Aggregates, batch: &RecordBatch, cols: &[usize], rows: &[usize], days: &[(i32, i64)], what: &str) -> Result<()> {
    let mut hashes = Vec::with_capacity(cols.len());
    for &c in cols {
        let h = checksum::hashes(batch.column(c).as_ref(), rows).map_err(|m| Error::Source { source_label: what.to_string(), message: format!("column '{}': {m}", batch.schema().field(c).name()) })?;
        hashes.push(h);
    }
    for (k, day) in days.iter().enumerate() {
        let d = agg.entry(*day).or_insert_with(|| DayValues::empty(cols.len()));
        d.rows += 1;
        for (s, h) in d.sums.iter_mut().zip(&hashes) {
            s.add(h[k]);
        }
    }
    Ok(())
}

/// Source rows of a batch that count: a known server, inside the window. (row, ServerID, ms)
fn counted_rows(batch: &RecordBatch, ts_col: usize, name_col: usize, scope: &ValuesScope<'_>) -> Vec<(usize, i32, i64)> {
    let ts = snapshot_ms(batch, ts_col);
    let mut unknown = BTreeSet::new();
    let ids = scope.map.ids_for(batch.column(name_col).as_ref(), &mut unknown);
    (0..batch.num_rows()).filter(|&r| ids.value(r) != 0 && scope.window.contains(ts.value(r))).map(|r| (r, ids.value(r), ts.value(r))).collect()
}

/// Computes the sources' expected aggregates and the target's, and compares them.
pub fn check_values(sources: &[Box<dyn Source>], target: &dyn Target, scope: &ValuesScope<'_>, cancel: &Cancel) -> Result<ValuesReport> {
    let columns = compared_columns();
    let keys = |batch_rows| ReadRequest { projection: Projection::Keys, batch_rows, after_run_id: None, time_ranges: None };
    // Ranks start at 1: 0 is the target's in the dedupe machinery.
    let rank = |i: usize| i as u32 + 1;

    // Pass 1: the days that can hold duplicates.
    let planners = super::for_each_source(sources, scope.readers, cancel, |i, source| {
        let mut p = OverlapPlanner::new();
        for batch in source.read(&keys(scope.batch_rows))? {
            cancel.check()?;
            let batch = batch?;
            let rows = counted_rows(&batch, crate::schema::key::SNAPSHOT_UTC, crate::schema::key::SERVER_NAME, scope);
            let ids: Vec<i32> = rows.iter().map(|r| r.1).collect();
            let ts: Vec<i64> = rows.iter().map(|r| r.2).collect();
            p.observe(rank(i), &ids, &ts);
        }
        Ok(p)
    })?;
    let mut planner = OverlapPlanner::new();
    for p in planners {
        planner.merge(p);
    }
    let hot = planner.hot_days();

    // Pass 2: each hot key's survivor.
    let winners = Mutex::new(Winners::new());
    if !hot.is_empty() {
        super::for_each_source(sources, scope.readers, cancel, |i, source| {
            let mut offers = Vec::new();
            for batch in source.read(&keys(scope.batch_rows))? {
                cancel.check()?;
                let batch = batch?;
                let run = batch.column(crate::schema::key::RUN_ID).as_primitive::<Int64Type>();
                for (r, id, t) in counted_rows(&batch, crate::schema::key::SNAPSHOT_UTC, crate::schema::key::SERVER_NAME, scope) {
                    if hot.contains(&(id, day_of(t))) {
                        offers.push((id, t, run.value(r)));
                    }
                }
            }
            // One source's offers at once, in its own order, as Winners asks.
            let mut w = winners.lock().map_err(poisoned)?;
            for (id, t, run) in offers {
                w.offer(id, t, rank(i), run, 0);
            }
            Ok(())
        })?;
    }

    // Pass 3: the survivors' values.
    let names: Mutex<BTreeMap<i32, String>> = Mutex::new(BTreeMap::new());
    let parts = super::for_each_source(sources, scope.readers, cancel, |i, source| {
        let mut agg = Aggregates::new();
        let req = ReadRequest { projection: Projection::Full, batch_rows: scope.batch_rows, after_run_id: None, time_ranges: None };
        for batch in source.read(&req)? {
            cancel.check()?;
            let batch = batch?;
            let cols = indices(&batch, &columns, source.label())?;
            let run = batch.column(src::RUN_ID).as_primitive::<Int64Type>();
            let name = batch.column(src::SERVER_NAME).as_string::<i32>();
            let mut kept = Vec::new();
            let mut days = Vec::new();
            for (r, id, t) in counted_rows(&batch, src::SNAPSHOT_UTC, src::SERVER_NAME, scope) {
                let day = (id, day_of(t));
                if hot.contains(&day) && winners.lock().map_err(poisoned)?.decide(id, t, rank(i), run.value(r), 0) != Verdict::Keep {
                    continue;
                }
                kept.push(r);
                days.push(day);
            }
            {
                let mut nm = names.lock().map_err(poisoned)?;
                for (&r, &(id, _)) in kept.iter().zip(&days) {
                    nm.entry(id).or_insert_with(|| name.value(r).to_string());
                }
            }
            add_rows(&mut agg, &batch, &cols, &kept, &days, source.label())?;
        }
        Ok(agg)
    })?;
    let mut want = Aggregates::new();
    for part in parts {
        for (day, d) in part {
            let into = want.entry(day).or_insert_with(|| DayValues::empty(columns.len()));
            into.rows += d.rows;
            for (s, x) in into.sums.iter_mut().zip(d.sums) {
                s.merge(x);
            }
        }
    }
    let names = names.into_inner().map_err(poisoned)?;

    // The target's side, for the servers the sources have: by the target server when it can.
    let servers: Vec<i32> = want.keys().map(|(s, _)| *s).collect::<BTreeSet<i32>>().into_iter().collect();
    let specs: Vec<Column> = columns.iter().filter_map(|n| target_columns().iter().find(|c| c.name == *n).copied()).collect();
    cancel.check()?;
    // The window applies to the target too: a day cut by --since/--until compares its part.
    let (got, on_server) = match target.value_checksums(&servers, &specs, &scope.window)? {
        Some(days) => (days.into_iter().map(|d| ((d.server_id, d.day), DayValues { rows: d.rows, sums: d.columns })).collect(), true),
        None => (target_aggregates(target, &servers, &columns, &scope.window, cancel)?, false),
    };
    let mut report = compare(&want, &got, &columns, &names);
    report.target_side = if on_server { "server" } else { "arrow" };
    Ok(report)
}

/// The target's aggregates computed here, on the rows it returns.
fn target_aggregates(target: &dyn Target, servers: &[i32], columns: &[&str], window: &Window, cancel: &Cancel) -> Result<Aggregates> {
    let mut got = Aggregates::new();
    for &server in servers {
        cancel.check()?;
        for batch in target.existing_rows(&BTreeMap::from([(server, vec![(i64::MIN, i64::MAX)])]))? {
            let batch = batch?;
            let cols = indices(&batch, columns, target.label())?;
            let ts = snapshot_ms(&batch, tgt::SNAPSHOT_UTC);
            let ids = batch.column(tgt::SERVER_ID).as_primitive::<Int32Type>();
            // A target may return more than asked: keep this server's rows.
            let rows: Vec<usize> = (0..batch.num_rows()).filter(|&r| ids.value(r) == server && window.contains(ts.value(r))).collect();
            let days: Vec<(i32, i64)> = rows.iter().map(|&r| (server, day_of(ts.value(r)))).collect();
            add_rows(&mut got, &batch, &cols, &rows, &days, target.label())?;
        }
    }
    Ok(got)
}


/// The differing (server, day) buckets: every day the sources hold, against the target's.
fn compare(want: &Aggregates, got: &Aggregates, columns: &[&str], names: &BTreeMap<i32, String>) -> ValuesReport {
    let mut differing = Vec::new();
    for (&(server, day), w) in want {
        let empty = DayValues::empty(columns.len());
        let g = got.get(&(server, day)).unwrap_or(&empty);
        if g == w {
            continue;
        }
        differing.push(DayDiff {
            server_id: server,
            server_name: names.get(&server).cloned().unwrap_or_default(),
            day: day_text(day),
            source_rows: w.rows,
            target_rows: g.rows,
            columns: columns.iter().zip(w.sums.iter().zip(&g.sums)).filter(|(_, (a, b))| a != b).map(|(c, _)| c.to_string()).collect(),
        });
    }
    ValuesReport { days_compared: want.len() as u64, columns: columns.iter().map(|c| c.to_string()).collect(), differing, target_side: "arrow", child_days_compared: 0, children_differing: Vec::new() }
}

/// `YYYY-MM-DD` of a UTC day number.
fn day_text(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * crate::schema::MS_PER_DAY).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_else(|| day.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_the_day_and_only_the_columns_that_differ() {
        let cols = ["SnapshotUTC", "ServerName", "SessionsCount"];
        let day = |rows, sums: [i64; 3]| DayValues { rows, sums: sums.iter().map(|&sum| ColumnSum { non_null: rows, sum }).collect() };
        let want = Aggregates::from([((7, 20_000), day(2, [1, 2, 3])), ((7, 20_001), day(1, [4, 5, 6])), ((8, 20_000), day(1, [1, 1, 1]))]);
        let got = Aggregates::from([((7, 20_000), day(2, [1, 2, 9])), ((7, 20_001), day(1, [4, 5, 6]))]);
        let names = BTreeMap::from([(7, "SQL07".to_string())]);
        let r = compare(&want, &got, &cols, &names);
        assert_eq!(r.days_compared, 3);
        assert_eq!(r.differing.len(), 2);
        let d = &r.differing[0];
        assert_eq!((d.server_id, d.server_name.as_str(), d.day.as_str(), d.columns.clone()), (7, "SQL07", "2024-10-04", vec!["SessionsCount".to_string()]));
        // A day the target lacks: every column differs, and the counts say why.
        let d = &r.differing[1];
        assert_eq!((d.server_id, d.source_rows, d.target_rows, d.columns.len()), (8, 1, 0, 3));
    }
}
