//! `verify`: reconciles sources against a target, like the toolkit's own migration validation.
//!
//! Every source row (after the same remap and window as `copy`) must have its key in the
//! target; per server, the distinct source keys, the target's rows and both SnapshotUTC ranges
//! are compared, and a key held twice by the target is reported. Memory: the source keys
//! (8 bytes each, grouped by server) plus one server's target keys at a time.
//!
//! Child tables (the ones `copy` would move) are compared per table and server, run by run:
//! each run's child rows in the sources (from the source whose run `copy` keeps: the first
//! `--from` that has the run) against the target's, by count and an order-independent digest
//! of their values. A run short of rows counts them as missing, one with more as duplicates,
//! one with as many but other values as differing. Memory: one entry per run and table.
//!
//! `--values` adds per (server, UTC day) and column checksums of the runs
//! ([`super::verify_values`]) and of the child rows (gathered in the same pass as the digests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use arrow::array::AsArray;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::copy::iso;
use crate::pipeline::progress::Progress;
use crate::pipeline::Cancel;
use ahash::AHashMap as HashMap;

use crate::pipeline::copy::ChildOptions;
use crate::schema::{key, ChildTable};
use crate::source::BatchRuns;
use crate::transform::dedupe::row_hashes;
use crate::sink::Target;
use crate::source::normalize::snapshot_ms;
use crate::source::{Projection, ReadRequest, Source};
use crate::transform::remap::ServerIdMap;
use crate::transform::Window;
use super::verify_values::{check_values, ChildDays, ValuesReport, ValuesScope};
use crate::checksum::{self, ColumnSum};
use crate::transform::dedupe::day_of;

/// What `verify` needs besides sources and target.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub server_map: Option<ServerIdMap>,
    pub window: Window,
    pub readers: usize,
    pub batch_rows: usize,
    /// Which child tables are compared (as `copy` chooses them).
    pub children: ChildOptions,
    /// `--values`: also compare per (server, day) and column checksums.
    pub values: bool,
}

/// The comparison for one target server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCheck {
    pub server_id: i32,
    pub server_names: Vec<String>,
    /// Distinct (SnapshotUTC, ServerID) keys in the sources.
    pub source_keys: u64,
    pub source_first_utc: Option<String>,
    pub source_last_utc: Option<String>,
    /// Rows the target holds for this server (it may hold more than these sources gave it).
    pub target_rows: u64,
    pub target_first_utc: Option<String>,
    pub target_last_utc: Option<String>,
    /// Source keys absent from the target.
    pub missing: u64,
    /// Keys the target holds more than once.
    pub target_duplicates: u64,
    /// Up to 10 missing SnapshotUTC values, as examples.
    pub missing_examples: Vec<String>,
    pub ok: bool,
}

/// The comparison of one child table's rows for one target server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChildCheck {
    pub table: String,
    pub server_id: i32,
    /// Child rows of the sources' runs (each run's from the source `copy` keeps it from).
    pub source_rows: u64,
    /// Child rows the target holds for this server's runs (it may hold runs no source has).
    pub target_rows: u64,
    /// Source rows absent from the target (counted run by run).
    pub missing: u64,
    /// Target rows beyond a run's source rows.
    pub duplicates: u64,
    /// Runs with as many rows in the target as in the source but other values.
    pub differing_runs: u64,
    pub ok: bool,
}

/// The verification report.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub target: String,
    pub ok: bool,
    pub source_rows: u64,
    pub unknown_servers: Vec<String>,
    pub servers: Vec<ServerCheck>,
    /// Child tables compared, per table and server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildCheck>,
    /// Child tables of the sources that the target lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub child_tables_not_in_target: Vec<String>,
    /// Per child table: target rows whose run the target lacks.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub target_child_orphans: BTreeMap<String, u64>,
    /// `--values`: the per (server, day) and column comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<ValuesReport>,
    pub elapsed_seconds: f64,
}

/// Runs the reconciliation.
pub fn run_verify(
    sources: &[Box<dyn Source>],
    target: &dyn Target,
    opts: &VerifyOptions,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let registry = target.known_servers()?;
    let map = match &opts.server_map {
        Some(m) => ServerIdMap::layered(m, &registry),
        None => registry,
    };
    let keys: Mutex<BTreeMap<i32, Vec<i64>>> = Mutex::new(BTreeMap::new());
    let names: Mutex<BTreeMap<i32, BTreeSet<String>>> = Mutex::new(BTreeMap::new());
    let unknown: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let bar = progress.phase("read source keys", None);
    fn poisoned<T>(_: T) -> Error {
        Error::Internal("verify state poisoned".into())
    }
    let rows: Vec<u64> = super::for_each_source(sources, opts.readers, cancel, |_, source| {
        let req = ReadRequest { projection: Projection::Keys, batch_rows: opts.batch_rows, after_run_id: None, time_ranges: None };
        let mut local: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let mut local_names: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        let mut local_unknown = BTreeSet::new();
        let mut n = 0u64;
        for batch in source.read(&req)? {
            cancel.check()?;
            let batch = batch?;
            let ts = snapshot_ms(&batch, key::SNAPSHOT_UTC);
            let name_col = batch.column(key::SERVER_NAME).as_string::<i32>();
            let ids = map.ids_for(batch.column(key::SERVER_NAME).as_ref(), &mut local_unknown);
            for r in 0..batch.num_rows() {
                let t = ts.value(r);
                if !opts.window.contains(t) {
                    continue;
                }
                n += 1;
                let id = ids.value(r);
                if id == 0 {
                    continue;
                }
                local.entry(id).or_default().push(t);
                let set = local_names.entry(id).or_default();
                if !set.contains(name_col.value(r)) {
                    set.insert(name_col.value(r).to_string());
                }
            }
            bar.inc(batch.num_rows() as u64);
        }
        let mut k = keys.lock().map_err(poisoned)?;
        for (id, mut v) in local {
            k.entry(id).or_default().append(&mut v);
        }
        let mut nm = names.lock().map_err(poisoned)?;
        for (id, s) in local_names {
            nm.entry(id).or_default().extend(s);
        }
        unknown.lock().map_err(poisoned)?.extend(local_unknown);
        Ok(n)
    })?;
    bar.finish();
    let keys = keys.into_inner().map_err(poisoned)?;
    let names = names.into_inner().map_err(poisoned)?;
    let unknown = unknown.into_inner().map_err(poisoned)?;

    let mut servers = Vec::new();
    for (id, mut src_keys) in keys {
        cancel.check()?;
        src_keys.sort_unstable();
        src_keys.dedup();
        let mut tgt_keys: Vec<i64> = Vec::new();
        for batch in target.existing_keys(&BTreeMap::from([(id, (i64::MIN, i64::MAX))]))? {
            let batch = batch?;
            tgt_keys.extend_from_slice(snapshot_ms(&batch, 0).values());
        }
        let target_rows = tgt_keys.len() as u64;
        tgt_keys.sort_unstable();
        let before = tgt_keys.len();
        tgt_keys.dedup();
        let target_duplicates = (before - tgt_keys.len()) as u64;
        let missing: Vec<i64> = src_keys.iter().copied().filter(|k| tgt_keys.binary_search(k).is_err()).collect();
        let ok = missing.is_empty() && target_duplicates == 0;
        servers.push(ServerCheck {
            server_id: id,
            server_names: names.get(&id).map(|s| s.iter().cloned().collect()).unwrap_or_default(),
            source_keys: src_keys.len() as u64,
            source_first_utc: src_keys.first().map(|&t| iso(t)),
            source_last_utc: src_keys.last().map(|&t| iso(t)),
            target_rows,
            target_first_utc: tgt_keys.first().map(|&t| iso(t)),
            target_last_utc: tgt_keys.last().map(|&t| iso(t)),
            missing: missing.len() as u64,
            target_duplicates,
            missing_examples: missing.iter().take(10).map(|&t| iso(t)).collect(),
            ok,
        });
    }
    // Child tables: never created by verify (a dry run of the plan).
    let (tables, not_in_target) = crate::pipeline::copy::plan_child_tables(sources, target, &opts.children, true, progress)?;
    let (children, target_child_orphans, child_days) = check_children(sources, target, &tables, &map, opts, cancel)?;
    let values = if opts.values {
        let bar = progress.phase("compare values", None);
        let scope = ValuesScope { map: &map, window: opts.window, readers: opts.readers, batch_rows: opts.batch_rows };
        let mut v = check_values(sources, target, &scope, cancel)?;
        let first_names: BTreeMap<i32, String> = names.iter().filter_map(|(id, n)| n.iter().next().map(|n| (*id, n.clone()))).collect();
        for d in &child_days {
            v.add_child_table(d.table, &d.names, &d.want, &d.got, &first_names);
        }
        bar.finish();
        Some(v)
    } else {
        None
    };
    let ok = unknown.is_empty()
        && servers.iter().all(|s| s.ok)
        && children.iter().all(|c| c.ok)
        && target_child_orphans.values().all(|&n| n == 0)
        && values.as_ref().is_none_or(|v| v.differing.is_empty() && v.children_differing.is_empty());
    Ok(VerifyReport {
        target: target.label().to_string(),
        ok,
        source_rows: rows.iter().sum(),
        unknown_servers: unknown.into_iter().collect(),
        servers,
        children,
        child_tables_not_in_target: not_in_target,
        target_child_orphans,
        values,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// A run's child rows of one table: how many, and the wrapping sum of their value hashes
/// (order-independent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RunDigest {
    rows: u64,
    sum: u64,
}

impl RunDigest {
    fn add(&mut self, hash: u64) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash);
    }
}

/// Per (ServerID, SnapshotUTC): a digest, and the rank of the source it came from.
type Digests = HashMap<(i32, i64), (usize, RunDigest)>;

/// `--values`: per (ServerID, SnapshotUTC) the source rank, the rows and each column's checksum.
type RunColumns = HashMap<(i32, i64), (usize, u64, Vec<ColumnSum>)>;

/// Adds the value hashes of `rows`' rows `at` (one list per column) to a run's checksums.
fn add_columns(into: &mut (usize, u64, Vec<ColumnSum>), hashes: &[Vec<Option<i32>>], at: usize) {
    into.1 += 1;
    for (c, h) in into.2.iter_mut().zip(hashes) {
        c.add(h[at]);
    }
}

/// Per table and server the checks, per table the target's orphan rows, and (`--values`) the
/// per day checksums.
type ChildResults = (Vec<ChildCheck>, BTreeMap<String, u64>, Vec<ChildDays>);

/// Compares every child table's rows, source runs against target runs (see the module docs).
fn check_children(sources: &[Box<dyn Source>], target: &dyn Target, tables: &[ChildTable], map: &ServerIdMap, opts: &VerifyOptions, cancel: &Cancel) -> Result<ChildResults> {
    let mut checks = Vec::new();
    let mut orphans = BTreeMap::new();
    let mut days = Vec::new();
    // One table at a time: every run has an entry per table (with or without children), so
    // all tables at once held runs x tables entries (3 GB for the demo's 3M runs and eleven
    // tables); the sources' run keys are read once per table instead.
    for table in tables {
        let (c, lost, d) = check_child_table(sources, target, table, map, opts, cancel)?;
        checks.extend(c);
        if lost > 0 {
            orphans.insert(table.name.to_string(), lost);
        }
        days.extend(d);
    }
    Ok((checks, orphans, days))
}

/// [`check_children`] of one table: its checks per server, the target's rows of it whose run
/// the target lacks, and (`--values`) its per day checksums.
fn check_child_table(sources: &[Box<dyn Source>], target: &dyn Target, table: &ChildTable, map: &ServerIdMap, opts: &VerifyOptions, cancel: &Cancel) -> Result<(Vec<ChildCheck>, u64, Option<ChildDays>)> {
    let tables = std::slice::from_ref(table);
    // The sources' digests; for a run several sources have, the first source's.
    let merged: Mutex<Vec<Digests>> = Mutex::new(vec![Digests::new(); tables.len()]);
    let merged_cols: Mutex<Vec<RunColumns>> = Mutex::new(vec![RunColumns::new(); tables.len()]);
    super::for_each_source(sources, opts.readers, cancel, |rank, source| {
        // A source without child tables still says which runs it keeps (with none).
        let mut kids = source.child_reader(tables)?;
        let mut local: Vec<Digests> = vec![Digests::new(); tables.len()];
        let mut local_cols: Vec<RunColumns> = vec![RunColumns::new(); tables.len()];
        let req = ReadRequest { projection: Projection::Keys, batch_rows: opts.batch_rows.min(crate::defaults::RUNS_PER_UNIT_WITH_CHILDREN * 4), after_run_id: None, time_ranges: None };
        let mut below = source.id_range().map_or(i64::MIN, |(lo, _)| lo - 1);
        let mut unknown = BTreeSet::new();
        for batch in source.read(&req)? {
            cancel.check()?;
            let batch = batch?;
            let run = batch.column(key::RUN_ID).as_primitive::<arrow::datatypes::Int64Type>();
            let ts = snapshot_ms(&batch, key::SNAPSHOT_UTC);
            let ids = map.ids_for(batch.column(key::SERVER_NAME).as_ref(), &mut unknown);
            let at: HashMap<i64, usize> = run.values().iter().enumerate().map(|(i, &id)| (id, i)).collect();
            let upto = run.values().iter().copied().max().unwrap_or(below).max(below);
            let runs = BatchRuns { ids: run.values(), snapshot_ms: ts.values() };
            for (i, table) in tables.iter().enumerate() {
                // Every run counts, with or without children: a run of the first source that
                // has none is compared as having none.
                for p in 0..batch.num_rows() {
                    if ids.value(p) != 0 && opts.window.contains(ts.value(p)) {
                        local[i].entry((ids.value(p), ts.value(p))).or_insert((rank, RunDigest::default()));
                        if opts.values {
                            local_cols[i].entry((ids.value(p), ts.value(p))).or_insert_with(|| (rank, 0, vec![ColumnSum::default(); table.values.len()]));
                        }
                    }
                }
                let Some(kids) = kids.as_mut() else { continue };
                let rows = kids.read(i, below, upto, &runs)?;
                let parent = rows.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                let all: Vec<usize> = (0..rows.num_rows()).collect();
                let value_cols: Vec<usize> = (1..rows.num_columns()).collect();
                let col_hashes: Vec<Vec<Option<i32>>> = if opts.values { value_cols.iter().map(|&c| checksum::hashes_any(rows.column(c).as_ref(), &all)).collect() } else { Vec::new() };
                for (r, h) in all.iter().zip(row_hashes(&rows, &value_cols, &all)) {
                    // Orphans and rows of runs outside the window or of unknown servers are
                    // not the target's to hold.
                    let Some(&p) = at.get(&parent.value(*r)) else { continue };
                    if ids.value(p) == 0 || !opts.window.contains(ts.value(p)) {
                        continue;
                    }
                    local[i].entry((ids.value(p), ts.value(p))).or_insert((rank, RunDigest::default())).1.add(h);
                    if opts.values {
                        let e = local_cols[i].entry((ids.value(p), ts.value(p))).or_insert_with(|| (rank, 0, vec![ColumnSum::default(); col_hashes.len()]));
                        add_columns(e, &col_hashes, *r);
                    }
                }
            }
            below = upto;
        }
        let mut m = merged.lock().map_err(|_| Error::Internal("verify state poisoned".into()))?;
        for (into, from) in m.iter_mut().zip(local) {
            for (k, (rank, d)) in from {
                match into.get(&k) {
                    Some((r, _)) if *r < rank => {}
                    _ => {
                        into.insert(k, (rank, d));
                    }
                }
            }
        }
        drop(m);
        let mut m = merged_cols.lock().map_err(|_| Error::Internal("verify state poisoned".into()))?;
        for (into, from) in m.iter_mut().zip(local_cols) {
            for (k, v) in from {
                match into.get(&k) {
                    Some((r, ..)) if *r < v.0 => {}
                    _ => {
                        into.insert(k, v);
                    }
                }
            }
        }
        Ok(())
    })?;
    let merged = merged.into_inner().map_err(|_| Error::Internal("verify state poisoned".into()))?;
    let merged_cols = merged_cols.into_inner().map_err(|_| Error::Internal("verify state poisoned".into()))?;
    let mut checks = Vec::new();
    let mut lost_rows = 0;
    let mut days = None;
    for ((table, source), source_cols) in tables.iter().zip(merged).zip(merged_cols) {
        cancel.check()?;
        let mut held: HashMap<(i32, i64), RunDigest> = HashMap::new();
        // `--values`: the target's checksums per (server, day of the run).
        let mut held_days: BTreeMap<(i32, i64), (usize, u64, Vec<ColumnSum>)> = BTreeMap::new();
        let lost = target.for_each_child_batch(table, &mut |b| {
            let ts = snapshot_ms(&b, crate::schema::child::SNAPSHOT_UTC);
            let servers = b.column(crate::schema::child::SERVER_ID).as_primitive::<arrow::datatypes::Int32Type>();
            let all: Vec<usize> = (0..b.num_rows()).collect();
            let value_cols: Vec<usize> = (crate::schema::child::FIRST_VALUE..b.num_columns()).collect();
            let col_hashes: Vec<Vec<Option<i32>>> = if opts.values { value_cols.iter().map(|&c| checksum::hashes_any(b.column(c).as_ref(), &all)).collect() } else { Vec::new() };
            for (r, h) in all.iter().zip(row_hashes(&b, &value_cols, &all)) {
                held.entry((servers.value(*r), ts.value(*r))).or_default().add(h);
                if opts.values && opts.window.contains(ts.value(*r)) {
                    let e = held_days.entry((servers.value(*r), day_of(ts.value(*r)))).or_insert_with(|| (0, 0, vec![ColumnSum::default(); col_hashes.len()]));
                    add_columns(e, &col_hashes, *r);
                }
            }
            Ok(())
        })?;
        if opts.values {
            let mut want: BTreeMap<(i32, i64), (u64, Vec<ColumnSum>)> = BTreeMap::new();
            for (&(s, t), (_, rows, cols)) in &source_cols {
                let e = want.entry((s, day_of(t))).or_insert_with(|| (0, vec![ColumnSum::default(); cols.len()]));
                e.0 += rows;
                for (a, b) in e.1.iter_mut().zip(cols) {
                    a.merge(*b);
                }
            }
            let names: Vec<&str> = table.values.iter().map(|c| c.name).collect();
            days = Some(ChildDays { table: table.name, names, want, got: held_days.into_iter().map(|(k, (_, n, c))| (k, (n, c))).collect() });
        }
        lost_rows += lost;
        let mut per_server: BTreeMap<i32, ChildCheck> = BTreeMap::new();
        for (&(s, t), (_, want)) in &source {
            let c = per_server.entry(s).or_insert_with(|| ChildCheck { table: table.name.to_string(), server_id: s, ..Default::default() });
            c.source_rows += want.rows;
            let got = held.get(&(s, t)).copied().unwrap_or_default();
            if got.rows < want.rows {
                c.missing += want.rows - got.rows;
            } else if got.rows > want.rows {
                c.duplicates += got.rows - want.rows;
            } else if got.sum != want.sum {
                c.differing_runs += 1;
            }
        }
        for (&(s, _), d) in &held {
            if let Some(c) = per_server.get_mut(&s) {
                c.target_rows += d.rows;
            }
        }
        for mut c in per_server.into_values() {
            c.ok = c.missing == 0 && c.duplicates == 0 && c.differing_runs == 0;
            checks.push(c);
        }
    }
    Ok((checks, lost_rows, days))
}
