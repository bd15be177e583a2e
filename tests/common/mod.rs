//! Shared helpers for the integration tests: writing source Parquet files in the shapes real
//! DBATools exports come in, reading a stage back, and an independent model of what a copy
//! must produce (a plain BTreeMap implementation of the survivor rule, not perfcopy's code).
#![allow(dead_code)]

pub mod kids;
pub mod mssql;
pub mod tds_bin;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

/// 2024-03-01T00:00:00Z in ms.
pub const T0: i64 = 1_709_251_200_000;
pub const MIN5: i64 = 300_000;
pub const DAY: i64 = 86_400_000;

/// The columns a stage row carries besides its key and ServerName; also what "conflict"
/// compares (ServerName is excluded, it may differ between aliases).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Values {
    pub sql_version: String,
    pub cpu_signal_wait_pct: Option<i128>,
    pub top_wait_type: Option<String>,
    pub top_wait_ms_per_sec: Option<i128>,
    pub sessions: Option<i32>,
    pub requests: Option<i32>,
    pub blocking: Option<i32>,
    pub deadlocks: Option<i32>,
    pub grant_warnings: Option<i32>,
}

/// A source row (DBATools PerfSnapshotRun).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrcRow {
    pub run_id: i64,
    pub snapshot_ms: i64,
    pub server_id: Option<i32>,
    pub server_name: String,
    pub v: Values,
}

/// A stage row (MonitoringDB PerfSnapshotRun without its identity).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Row {
    pub server_id: i32,
    pub snapshot_ms: i64,
    pub server_name: String,
    pub v: Values,
}

// ---------------------------------------------------------------------------------------------
// Test data

/// Small deterministic PRNG (splitmix64), independent of perfcopy's generator.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Plausible values for row `i` of a series `seed`, with some NULLs.
pub fn values(seed: u64, i: u64) -> Values {
    let r = |c: u64| mix(seed.wrapping_mul(131).wrapping_add(c), i);
    let opt = |c: u64, v: i32| if r(c) % 11 == 0 { None } else { Some(v) };
    Values {
        sql_version: format!("Microsoft SQL Server 20{} - 16.0.{}", 17 + seed % 6, seed % 97),
        cpu_signal_wait_pct: (r(1) % 13 != 0).then(|| (r(2) % 1_000_000) as i128),
        top_wait_type: (r(3) % 9 != 0).then(|| ["CXPACKET", "WRITELOG", "LCK_M_X", "PAGEIOLATCH_SH"][(r(4) % 4) as usize].to_string()),
        top_wait_ms_per_sec: (r(5) % 7 != 0).then(|| (r(6) % 9_000_000_000) as i128),
        sessions: opt(7, (r(8) % 500) as i32),
        requests: opt(9, (r(10) % 80) as i32),
        blocking: opt(11, (r(12) % 5) as i32),
        deadlocks: opt(13, (r(14) % 3) as i32),
        grant_warnings: opt(15, (r(16) % 2) as i32),
    }
}

/// `count` rows of `server_name`, one every 5 minutes from `start_ms` (plus a ms jitter), run IDs
/// from `first_run_id`; values from series `seed`.
pub fn series(server_name: &str, start_ms: i64, count: usize, first_run_id: i64, seed: u64) -> Vec<SrcRow> {
    (0..count)
        .map(|i| SrcRow {
            run_id: first_run_id + i as i64,
            snapshot_ms: start_ms + i as i64 * MIN5 + (mix(seed, i as u64 + 7) % 1000) as i64,
            server_id: if i % 3 == 0 { None } else { Some(1 + (seed % 4) as i32) },
            server_name: server_name.to_string(),
            v: values(seed, i as u64),
        })
        .collect()
}

/// Copies of `rows` with their values changed at every `every`-th row (a conflicting copy) and
/// run IDs renumbered from `first_run_id`.
pub fn copy_rows(rows: &[SrcRow], first_run_id: i64, every: usize, rename: Option<&str>) -> Vec<SrcRow> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let mut c = r.clone();
            c.run_id = first_run_id + i as i64;
            if every > 0 && i % every == 0 {
                c.v.sessions = Some(c.v.sessions.unwrap_or(0) + 1000);
            }
            if let Some(n) = rename {
                c.server_name = n.to_string();
            }
            c
        })
        .collect()
}

/// How a source file is written.
#[derive(Debug, Clone)]
pub struct SourceOpts {
    /// Timestamp unit of SnapshotUTC.
    pub micros: bool,
    /// Column names as written: exact, lower case, or upper case.
    pub case: Case,
    /// Add unknown columns (one in front, one at the end).
    pub extra_columns: bool,
    /// Write the ServerID column (older DBATools tables lack it).
    pub server_id_column: bool,
    /// Leave this column out.
    pub omit: Option<&'static str>,
    /// Write the columns in reverse order.
    pub reverse: bool,
    /// Rows per row group (small, so row-group pruning is exercised).
    pub row_group_rows: usize,
    /// Microseconds added to every microsecond timestamp (non-zero: sub-millisecond values).
    pub micros_extra: i64,
    /// Strings as LargeUtf8 (as polars writes them).
    pub large_strings: bool,
    /// ServerName dictionary-encoded (as pandas categoricals come).
    pub dictionary_names: bool,
    /// SnapshotUTC with time zone "UTC".
    pub utc_zone: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Case {
    Exact,
    Lower,
    Upper,
}

impl Default for SourceOpts {
    fn default() -> Self {
        SourceOpts { micros: false, case: Case::Exact, extra_columns: false, server_id_column: true, omit: None, reverse: false, row_group_rows: 97, micros_extra: 0, large_strings: false, dictionary_names: false, utc_zone: false }
    }
}

fn dec(values: Vec<Option<i128>>, p: u8) -> ArrayRef {
    Arc::new(Decimal128Array::from(values).with_precision_and_scale(p, 4).unwrap())
}

/// Writes `rows` as a Parquet source file.
pub fn write_source(path: &Path, rows: &[SrcRow], opts: &SourceOpts) {
    let ints = |f: fn(&Values) -> Option<i32>| -> ArrayRef { Arc::new(Int32Array::from(rows.iter().map(|r| f(&r.v)).collect::<Vec<_>>())) };
    let ts: ArrayRef = if opts.micros {
        Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.snapshot_ms * 1000 + opts.micros_extra).collect::<Vec<_>>()))
    } else {
        Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.snapshot_ms).collect::<Vec<_>>()))
    };
    let zone: Option<Arc<str>> = opts.utc_zone.then(|| "UTC".into());
    let ts: ArrayRef = match (opts.micros, &zone) {
        (_, None) => ts,
        (true, Some(z)) => Arc::new(ts.as_primitive::<TimestampMicrosecondType>().clone().with_timezone(z.clone())),
        (false, Some(z)) => Arc::new(ts.as_primitive::<TimestampMillisecondType>().clone().with_timezone(z.clone())),
    };
    let ts_type = DataType::Timestamp(if opts.micros { TimeUnit::Microsecond } else { TimeUnit::Millisecond }, zone);
    let mut cols: Vec<(&str, DataType, ArrayRef)> = vec![
        ("PerfSnapshotRunID", DataType::Int64, Arc::new(Int64Array::from(rows.iter().map(|r| r.run_id).collect::<Vec<_>>()))),
        ("SnapshotUTC", ts_type, ts),
        ("ServerID", DataType::Int32, Arc::new(Int32Array::from(rows.iter().map(|r| r.server_id).collect::<Vec<_>>()))),
        ("ServerName", DataType::Utf8, Arc::new(StringArray::from(rows.iter().map(|r| r.server_name.as_str()).collect::<Vec<_>>()))),
        ("SqlVersion", DataType::Utf8, Arc::new(StringArray::from(rows.iter().map(|r| r.v.sql_version.as_str()).collect::<Vec<_>>()))),
        ("CpuSignalWaitPct", DataType::Decimal128(9, 4), dec(rows.iter().map(|r| r.v.cpu_signal_wait_pct).collect(), 9)),
        ("TopWaitType", DataType::Utf8, Arc::new(StringArray::from(rows.iter().map(|r| r.v.top_wait_type.as_deref()).collect::<Vec<_>>()))),
        ("TopWaitMsPerSec", DataType::Decimal128(18, 4), dec(rows.iter().map(|r| r.v.top_wait_ms_per_sec).collect(), 18)),
        ("SessionsCount", DataType::Int32, ints(|v| v.sessions)),
        ("RequestsCount", DataType::Int32, ints(|v| v.requests)),
        ("BlockingSessionCount", DataType::Int32, ints(|v| v.blocking)),
        ("DeadlockCountRecent", DataType::Int32, ints(|v| v.deadlocks)),
        ("MemoryGrantWarningCount", DataType::Int32, ints(|v| v.grant_warnings)),
    ];
    cols.retain(|(n, _, _)| Some(*n) != opts.omit && (opts.server_id_column || *n != "ServerID"));
    for (name, ty, a) in cols.iter_mut() {
        let want = match ty {
            DataType::Utf8 if opts.dictionary_names && *name == "ServerName" => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            DataType::Utf8 if opts.large_strings => DataType::LargeUtf8,
            _ => continue,
        };
        *a = arrow::compute::cast(a, &want).unwrap();
        *ty = want;
    }
    if opts.extra_columns {
        let extra: ArrayRef = Arc::new(StringArray::from(rows.iter().map(|r| format!("note {}", r.run_id)).collect::<Vec<_>>()));
        cols.insert(0, ("CollectorNote", DataType::Utf8, extra));
        let extra2: ArrayRef = Arc::new(Int64Array::from(rows.iter().map(|r| r.run_id * 7).collect::<Vec<_>>()));
        cols.push(("PerfSnapshotRunID_Old", DataType::Int64, extra2));
    }
    if opts.reverse {
        cols.reverse();
    }
    let rename = |n: &str| match opts.case {
        Case::Exact => n.to_string(),
        Case::Lower => n.to_lowercase(),
        Case::Upper => n.to_uppercase(),
    };
    let schema = Arc::new(Schema::new(cols.iter().map(|(n, t, _)| Field::new(rename(n), t.clone(), true)).collect::<Vec<_>>()));
    let batch = RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, _, a)| a).collect()).unwrap();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(opts.row_group_rows)).build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Column `name` of a batch, matched case-insensitively.
fn col<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    let schema = batch.schema();
    let i = schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case(name))?;
    Some(batch.column(i))
}

fn opt_i32(a: &ArrayRef, r: usize) -> Option<i32> {
    a.is_valid(r).then(|| a.as_primitive::<Int32Type>().value(r))
}

fn opt_dec(a: &ArrayRef, r: usize) -> Option<i128> {
    a.is_valid(r).then(|| a.as_primitive::<Decimal128Type>().value(r))
}

pub fn opt_str(a: &ArrayRef, r: usize) -> Option<String> {
    if !a.is_valid(r) {
        return None;
    }
    let plain = arrow::compute::cast(&a.slice(r, 1), &DataType::Utf8).unwrap();
    Some(plain.as_string::<i32>().value(0).to_string())
}

pub fn ms(a: &ArrayRef, r: usize) -> i64 {
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => a.as_primitive::<TimestampMillisecondType>().value(r),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let us = a.as_primitive::<TimestampMicrosecondType>().value(r);
            assert_eq!(us % 1000, 0, "test sources hold whole milliseconds");
            us / 1000
        }
        t => panic!("unexpected SnapshotUTC type {t}"),
    }
}

pub fn values_of(b: &RecordBatch, r: usize) -> Values {
    let c = |n: &str| col(b, n).unwrap_or_else(|| panic!("column {n} missing"));
    Values {
        sql_version: opt_str(c("SqlVersion"), r).unwrap(),
        cpu_signal_wait_pct: opt_dec(c("CpuSignalWaitPct"), r),
        top_wait_type: opt_str(c("TopWaitType"), r),
        top_wait_ms_per_sec: opt_dec(c("TopWaitMsPerSec"), r),
        sessions: opt_i32(c("SessionsCount"), r),
        requests: opt_i32(c("RequestsCount"), r),
        blocking: opt_i32(c("BlockingSessionCount"), r),
        deadlocks: opt_i32(c("DeadlockCountRecent"), r),
        grant_warnings: opt_i32(c("MemoryGrantWarningCount"), r),
    }
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    b.build().unwrap().map(|b| b.unwrap()).collect()
}

/// Reads a source file back (any of the shapes [`write_source`] or `perfcopy generate` writes),
/// in file order.
pub fn read_source(path: &Path) -> Vec<SrcRow> {
    let mut out = Vec::new();
    for b in batches(path) {
        let run = col(&b, "PerfSnapshotRunID").unwrap().as_primitive::<Int64Type>().clone();
        let ts = col(&b, "SnapshotUTC").unwrap().clone();
        let sid = col(&b, "ServerID").cloned();
        let name = col(&b, "ServerName").unwrap().clone();
        for r in 0..b.num_rows() {
            out.push(SrcRow {
                run_id: run.value(r),
                snapshot_ms: ms(&ts, r),
                server_id: sid.as_ref().and_then(|a| opt_i32(a, r)),
                server_name: opt_str(&name, r).unwrap(),
                v: values_of(&b, r),
            });
        }
    }
    out
}

/// `*.parquet` files of a directory in name order (how a directory source expands).
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// The stage

/// The exact stage schema of SCHEMA.md (MonitoringDB columns without the identity).
pub fn stage_fields() -> Vec<(&'static str, DataType)> {
    vec![
        ("SnapshotUTC", DataType::Timestamp(TimeUnit::Millisecond, None)),
        ("ServerID", DataType::Int32),
        ("ServerName", DataType::Utf8),
        ("SqlVersion", DataType::Utf8),
        ("CpuSignalWaitPct", DataType::Decimal128(9, 4)),
        ("TopWaitType", DataType::Utf8),
        ("TopWaitMsPerSec", DataType::Decimal128(18, 4)),
        ("SessionsCount", DataType::Int32),
        ("RequestsCount", DataType::Int32),
        ("BlockingSessionCount", DataType::Int32),
        ("DeadlockCountRecent", DataType::Int32),
        ("MemoryGrantWarningCount", DataType::Int32),
    ]
}

/// Data files of a stage: every `*.parquet` under STAGE/PerfSnapshotRun/ServerID=<id>/, with
/// the id. Panics on leftover temporary files or foreign directories.
pub fn stage_files(stage: &Path) -> Vec<(i32, PathBuf)> {
    let table = stage.join("PerfSnapshotRun");
    let mut out = Vec::new();
    if !table.exists() {
        return out;
    }
    for part in std::fs::read_dir(&table).unwrap() {
        let part = part.unwrap().path();
        let dir_name = part.file_name().unwrap().to_str().unwrap().to_string();
        let id: i32 = dir_name
            .strip_prefix("ServerID=")
            .unwrap_or_else(|| panic!("unexpected entry {dir_name} in {}", table.display()))
            .parse()
            .unwrap();
        for f in std::fs::read_dir(&part).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            assert!(name.ends_with(".parquet"), "leftover non-data file {}", f.display());
            out.push((id, f));
        }
    }
    out.sort();
    out
}

/// Reads every row of a stage, checking types, compression and that each file's ServerID
/// column equals its partition's id. Sorted by (ServerID, SnapshotUTC, ...).
pub fn read_stage(stage: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for (id, path) in stage_files(stage) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let got: Vec<(String, DataType)> = builder.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        let want: Vec<(String, DataType)> = stage_fields().into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        assert_eq!(got, want, "schema of {}", path.display());
        for rg in builder.metadata().row_groups() {
            for c in rg.columns() {
                assert!(matches!(c.compression(), Compression::ZSTD(_)), "{} is not zstd in {}", c.column_path(), path.display());
            }
        }
        for b in builder.build().unwrap() {
            let b = b.unwrap();
            let ts = b.column(0).clone();
            let sid = b.column(1).as_primitive::<Int32Type>().clone();
            for r in 0..b.num_rows() {
                assert!(sid.is_valid(r));
                assert_eq!(sid.value(r), id, "ServerID column vs partition path in {}", path.display());
                rows.push(Row { server_id: id, snapshot_ms: ms(&ts, r), server_name: opt_str(b.column(2), r).unwrap(), v: values_of(&b, r) });
            }
        }
    }
    rows.sort();
    rows
}

/// Keyed by (ServerID, SnapshotUTC); panics when a key is held twice.
pub fn by_key(rows: &[Row]) -> BTreeMap<(i32, i64), Row> {
    let mut m = BTreeMap::new();
    for r in rows {
        if let Some(old) = m.insert((r.server_id, r.snapshot_ms), r.clone()) {
            panic!("key ({}, {}) held twice in the stage: {old:?} and {r:?}", r.server_id, r.snapshot_ms);
        }
    }
    m
}

/// Asserts a stage holds exactly `want`, listing the first differences.
pub fn assert_stage_eq(stage: &Path, want: &BTreeMap<(i32, i64), Row>) {
    assert_rows_eq(&format!("stage {}", stage.display()), &by_key(&read_stage(stage)), want);
}

/// Asserts keyed rows equal `want`, listing the first differences; `what` names the holder.
pub fn assert_rows_eq(what: &str, got: &BTreeMap<(i32, i64), Row>, want: &BTreeMap<(i32, i64), Row>) {
    if got != want {
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(k)).take(5).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).take(5).collect();
        let differ: Vec<_> = want.iter().filter(|(k, v)| got.get(k).is_some_and(|g| g != *v)).take(3).map(|(k, v)| (k, v, &got[k])).collect();
        panic!(
            "{what} differs from the expectation: {} rows vs {} expected; missing e.g. {missing:?}; unexpected e.g. {extra:?}; differing (key, want, got) e.g. {differ:#?}",
            got.len(),
            want.len()
        );
    }
}

/// `ServerName,ServerID` entries of a stage's servers.csv (or a map file), sorted by name.
pub fn read_registry(path: &Path) -> BTreeMap<String, i32> {
    let mut r = csv::Reader::from_path(path).unwrap();
    assert_eq!(r.headers().unwrap().iter().collect::<Vec<_>>(), vec!["ServerName", "ServerID"]);
    r.records().map(|rec| {
        let rec = rec.unwrap();
        (rec[0].to_string(), rec[1].parse().unwrap())
    }).collect()
}

/// Writes a `ServerName,ServerID` CSV.
pub fn write_map(path: &Path, entries: &[(&str, i32)]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["ServerName", "ServerID"]).unwrap();
    for (n, id) in entries {
        w.write_record([n.to_string(), id.to_string()]).unwrap();
    }
    w.flush().unwrap();
}

/// Every file under `dir` with its bytes (directories as empty entries with a trailing '/').
pub fn snapshot_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// Every file under `d`, recursively (none when `d` does not exist).
pub fn walk_files(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The independent model

/// Folded server name -> ID.
pub type NameMap = BTreeMap<String, i32>;

pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// A name map from (name, id) pairs.
pub fn name_map(entries: &[(&str, i32)]) -> NameMap {
    entries.iter().map(|(n, id)| (fold(n), *id)).collect()
}

/// What `register_servers` must assign: names unknown to `known`, in String order, get the IDs
/// after the highest known one. Names differing only in case are one server, spelled as it is
/// first met in `--from` order (the order that decides everything else too).
pub fn registered(known: &NameMap, sources: &[Vec<SrcRow>]) -> Vec<(String, i32)> {
    let mut first_spelling: BTreeMap<String, String> = BTreeMap::new();
    for r in sources.iter().flatten() {
        first_spelling.entry(fold(&r.server_name)).or_insert_with(|| r.server_name.clone());
    }
    let unknown: BTreeSet<String> = first_spelling.into_iter().filter(|(f, _)| !known.contains_key(f)).map(|(_, n)| n).collect();
    let mut next = known.values().copied().max().unwrap_or(0);
    unknown.into_iter().map(|n| {
        next += 1;
        (n, next)
    }).collect()
}

/// Per-source counts, as in the copy's JSON report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows_read: u64,
    pub rows_filtered: u64,
    pub duplicates_dropped: u64,
    pub already_in_target: u64,
    pub conflicts: u64,
    pub rows_written: u64,
}

impl Counts {
    pub fn sum(all: &[Counts]) -> Counts {
        let mut t = Counts::default();
        for c in all {
            t.rows_read += c.rows_read;
            t.rows_filtered += c.rows_filtered;
            t.duplicates_dropped += c.duplicates_dropped;
            t.already_in_target += c.already_in_target;
            t.conflicts += c.conflicts;
            t.rows_written += c.rows_written;
        }
        t
    }
}

/// The expected outcome of one copy.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The whole stage afterwards (rows already there included).
    pub stage: BTreeMap<(i32, i64), Row>,
    pub per_source: Vec<Counts>,
    /// Rows written per ServerID by this copy.
    pub written_per_server: BTreeMap<i32, u64>,
}

/// The window: `since` inclusive, `until` exclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Win {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Win {
    pub fn contains(&self, t: i64) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

/// The survivor rule, written out plainly: per (ServerID, SnapshotUTC), a row already in the
/// stage wins; otherwise the lowest (source position, PerfSnapshotRunID, position in file).
/// `sources` hold the rows each source contributes to this run (after any watermark), in
/// `--from` order.
pub fn expected(sources: &[Vec<SrcRow>], map: &NameMap, win: Win, stage_before: &BTreeMap<(i32, i64), Row>) -> Expect {
    // (rank, run_id, position); rank 0 = the stage.
    type Rank = (usize, i64, usize);
    let mut best: BTreeMap<(i32, i64), (Rank, Values)> = BTreeMap::new();
    for (k, r) in stage_before {
        best.insert(*k, ((0, 0, 0), r.v.clone()));
    }
    let id_of = |name: &str| *map.get(&fold(name)).unwrap_or_else(|| panic!("test model: no ID for '{name}'"));
    for (s, rows) in sources.iter().enumerate() {
        for (pos, r) in rows.iter().enumerate() {
            if !win.contains(r.snapshot_ms) {
                continue;
            }
            let key = (id_of(&r.server_name), r.snapshot_ms);
            let rank = (s + 1, r.run_id, pos);
            match best.get(&key) {
                Some((b, _)) if *b <= rank => {}
                _ => {
                    best.insert(key, (rank, r.v.clone()));
                }
            }
        }
    }
    let mut stage = stage_before.clone();
    let mut per_source = vec![Counts::default(); sources.len()];
    let mut written_per_server = BTreeMap::new();
    for (s, rows) in sources.iter().enumerate() {
        let c = &mut per_source[s];
        for (pos, r) in rows.iter().enumerate() {
            c.rows_read += 1;
            if !win.contains(r.snapshot_ms) {
                c.rows_filtered += 1;
                continue;
            }
            let id = id_of(&r.server_name);
            let key = (id, r.snapshot_ms);
            let (rank, v) = &best[&key];
            if *rank == (s + 1, r.run_id, pos) {
                c.rows_written += 1;
                *written_per_server.entry(id).or_insert(0) += 1;
                stage.insert(key, Row { server_id: id, snapshot_ms: r.snapshot_ms, server_name: r.server_name.clone(), v: r.v.clone() });
            } else {
                c.duplicates_dropped += 1;
                c.already_in_target += (rank.0 == 0) as u64;
                c.conflicts += (*v != r.v) as u64;
            }
        }
    }
    Expect { stage, per_source, written_per_server }
}

// ---------------------------------------------------------------------------------------------
// Running the binary

/// `perfcopy` with `args`; progress off for commands that take it.
pub fn perfcopy(args: &[&str]) -> Output {
    let mut cmd = assert_cmd::Command::cargo_bin("perfcopy").unwrap();
    cmd.args(args);
    if matches!(args.first(), Some(&"copy") | Some(&"verify") | Some(&"status")) {
        cmd.args(["--progress", "off"]);
    }
    cmd.env_remove("RUST_LOG");
    cmd.output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout parsed as one JSON object.
pub fn ok_json(o: &Output) -> Value {
    assert!(o.status.success(), "perfcopy failed ({:?}): {}", o.status.code(), stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// Runs `perfcopy copy --json` with `args` and returns the report.
pub fn copy_json(args: &[&str]) -> Value {
    let mut a = vec!["copy", "--json"];
    a.extend_from_slice(args);
    ok_json(&perfcopy(&a))
}

fn counts_of(v: &Value) -> Counts {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("'{k}' missing in {v}"));
    Counts {
        rows_read: n("rows_read"),
        rows_filtered: n("rows_filtered"),
        duplicates_dropped: n("duplicates_dropped"),
        already_in_target: n("already_in_target"),
        conflicts: n("conflicts"),
        rows_written: n("rows_written"),
    }
}

/// Per-source counts of a copy report, in report order.
pub fn report_counts(report: &Value) -> Vec<Counts> {
    report["sources"].as_array().unwrap().iter().map(counts_of).collect()
}

/// The report's totals.
pub fn report_totals(report: &Value) -> Counts {
    counts_of(&report["totals"])
}

/// Rows written per ServerID in a report (servers with 0 rows left out).
pub fn report_written(report: &Value) -> BTreeMap<i32, u64> {
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["server_id"].as_i64().unwrap() as i32, s["rows_written"].as_u64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Asserts a report's counts, totals and per-server rows equal the model's.
pub fn assert_report(report: &Value, want: &Expect) {
    assert_eq!(report_counts(report), want.per_source, "per-source counts");
    assert_eq!(report_totals(report), Counts::sum(&want.per_source), "totals");
    assert_eq!(report_written(report), want.written_per_server, "rows written per server");
}

/// Asserts a copy's report and the stage it left both match the model.
pub fn assert_copied(report: &Value, stage: &Path, want: &Expect) {
    assert_report(report, want);
    assert_stage_eq(stage, &want.stage);
}

/// Path as a &str argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Guards the one range convention of the sink trait (issue 13: `existing_keys` took inclusive
/// ranges and `existing_rows` half-open ones, so an end off by one went unnoticed): `target`
/// holds, for `server`, exactly the keys `ts` (ascending, at least three; in a stage, each in
/// its own row group, so nothing outside a range is read). A range that ends or starts exactly
/// at a key returns it; a key one ms outside is not returned.
pub fn assert_ranges_include_both_ends(target: &dyn perfcopy::sink::Target, server: i32, ts: &[i64]) {
    assert!(ts.len() >= 3 && ts.windows(2).all(|w| w[0] + 1 < w[1]), "keys must be ascending and apart: {ts:?}");
    let collect = |batches: perfcopy::source::BatchIter| -> Vec<i64> {
        let mut got: Vec<i64> = Vec::new();
        for b in batches {
            let b = b.unwrap();
            let col = b.schema().index_of("SnapshotUTC").unwrap();
            got.extend(b.column(col).as_primitive::<arrow::datatypes::TimestampMillisecondType>().values().iter());
        }
        got.sort_unstable();
        got
    };
    let keys = |lo: i64, hi: i64| collect(target.existing_keys(&BTreeMap::from([(server, (lo, hi))])).unwrap());
    let rows = |lo: i64, hi: i64| collect(target.existing_rows(&BTreeMap::from([(server, vec![(lo, hi)])])).unwrap());
    let (first, second, last) = (ts[0], ts[1], ts[ts.len() - 1]);
    for (what, read) in [("existing_keys", &keys as &dyn Fn(i64, i64) -> Vec<i64>), ("existing_rows", &rows)] {
        assert_eq!(read(first, second), vec![first, second], "{what}: a key at the range's end");
        assert_eq!(read(first + 1, second), vec![second], "{what}: a key one ms before the range's start");
        assert_eq!(read(first, second - 1), vec![first], "{what}: a key one ms after the range's end");
        assert_eq!(read(second, second), vec![second], "{what}: a one-instant range");
        assert_eq!(read(i64::MIN, i64::MAX), ts.to_vec(), "{what}: all time");
    }
    assert!(target.holds_key(server, last).unwrap(), "holds_key at the last key");
    assert!(!target.holds_key(server, last + 1).unwrap(), "holds_key one ms after it");
    assert!(!target.holds_key(server, first - 1).unwrap(), "holds_key one ms before the first key");
}
