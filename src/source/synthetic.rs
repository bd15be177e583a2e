//! Deterministic synthetic DBATools data, shared by `perfcopy generate`, the demo, tests and
//! benches.
//!
//! Every value is a pure function of (seed, column, server, row index), so any slice of any
//! server's history can be produced on its own, in any order, and the same seed always gives the
//! same values. A source file ("DBATools database") holds its own server's rows, preceded, when
//! `overlap > 0`, by a copy of a slice of the next server's rows: a restored copy of that
//! server's DBATools database, so consolidation has real duplicates to remove. About one copied
//! row in 64 differs in one metric (a conflict).

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Builder, Int32Builder, Int64Array, StringBuilder, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::schema::source_schema;
use crate::source::synthetic_children::{self, ChildrenSpec};
use crate::schema::ChildTable;
use crate::source::{BatchIter, BatchRuns, ChildReader, Projection, ReadRequest, Source};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub servers: usize,
    /// Rows across all sources, copies included.
    pub rows: u64,
    /// Fraction of each server's rows that also appear in a second source.
    pub overlap: f64,
    pub seed: u64,
}

/// A run of consecutive rows of one server inside a source.
#[derive(Debug, Clone)]
pub struct Segment {
    pub server: usize,
    pub first_row: u64,
    pub rows: u64,
    /// PerfSnapshotRunID of the segment's first row in this source.
    pub first_run_id: i64,
    /// Whether this segment is a copy (some of its rows carry conflicting values).
    pub is_copy: bool,
}

/// One simulated DBATools database.
#[derive(Debug, Clone)]
pub struct SyntheticSourcePlan {
    pub server: usize,
    pub name: String,
    pub segments: Vec<Segment>,
}

impl SyntheticSourcePlan {
    /// Rows in this source.
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }
}

const NAME_TEMPLATES: [&str; 8] = [
    "SQLPROD{n}",
    "SQLPROD{n}\\SALES",
    "Zürich-SQL{n}",
    "SQLDEV{n}\\INST_ÆØÅ",
    "東京-SQL{n}",
    "SQLRPT{n}\\REPORTING",
    "Kraków-DB{n}",
    "SQLHR{n}",
];

/// `@@SERVERNAME` of synthetic server `i`: plain names, named instances (`HOST\INST`) and
/// non-ASCII names.
pub fn server_name(i: usize) -> String {
    NAME_TEMPLATES[i % NAME_TEMPLATES.len()].replace("{n}", &format!("{:02}", i + 1))
}

/// 2020-01-01T00:00:00Z in ms.
const BASE_MS: i64 = 1_577_836_800_000;
/// The collector's interval.
pub const SNAPSHOT_INTERVAL_MS: i64 = 300_000;

impl SyntheticSpec {
    /// Own rows per server (the copies come on top, inside the budget of `rows`).
    fn own_rows(&self) -> u64 {
        let per_source = self.rows / self.servers.max(1) as u64;
        (per_source as f64 / (1.0 + self.overlap.max(0.0))).round() as u64
    }

    /// The sources and what each holds.
    pub fn plan(&self) -> Vec<SyntheticSourcePlan> {
        let n = self.own_rows();
        let copied = ((n as f64) * self.overlap.clamp(0.0, 1.0)).round() as u64;
        (0..self.servers)
            .map(|s| {
                let mut segments = Vec::new();
                let mut next_id = 1i64;
                if copied > 0 && self.servers > 1 {
                    let other = (s + 1) % self.servers;
                    // Where in the other server's history the restored copy comes from.
                    let room = n.saturating_sub(copied);
                    let first = if room == 0 { 0 } else { mix(self.seed, 99, other as u64, 0) % room };
                    segments.push(Segment { server: other, first_row: first, rows: copied, first_run_id: next_id, is_copy: true });
                    next_id += copied as i64;
                }
                segments.push(Segment { server: s, first_row: 0, rows: n, first_run_id: next_id, is_copy: false });
                SyntheticSourcePlan { server: s, name: server_name(s), segments }
            })
            .collect()
    }

    /// SnapshotUTC (ms) of row `i` of server `server`'s history.
    pub fn snapshot_ms_of(&self, server: usize, i: u64) -> i64 {
        snapshot_ms(server as u64, i, self.seed)
    }

    /// Rows of `segment` from `offset`, `len` of them, as a canonical source batch.
    pub fn batch(&self, segment: &Segment, offset: u64, len: usize) -> Result<RecordBatch> {
        let seed = self.seed;
        let s = segment.server as u64;
        let name = server_name(segment.server);
        let version = sql_version(segment.server);
        let rows = (0..len as u64).map(|k| segment.first_row + offset + k);

        let ids: Int64Array = (0..len as i64).map(|k| segment.first_run_id + offset as i64 + k).collect();
        let ts = TimestampMillisecondArray::from_iter_values(rows.clone().map(|i| snapshot_ms(s, i, seed)));
        let mut server_id = Int32Builder::with_capacity(len);
        let mut names = StringBuilder::with_capacity(len, len * name.len());
        let mut versions = StringBuilder::with_capacity(len, len * version.len());
        let mut cpu = Decimal128Builder::with_capacity(len);
        let mut wait_type = StringBuilder::with_capacity(len, len * 16);
        let mut wait_ms = Decimal128Builder::with_capacity(len);
        let mut counters: Vec<Int32Builder> = (0..5).map(|_| Int32Builder::with_capacity(len)).collect();
        for i in rows {
            // Newer collectors fill ServerID with a local ID; older rows have NULL.
            if i * 2 < self.own_rows() && s % 2 == 1 {
                server_id.append_null();
            } else {
                server_id.append_value(1 + (s as i32 % 3));
            }
            names.append_value(&name);
            versions.append_value(&version);
            let r = |col: u64| mix(seed, col, s, i);
            if r(1) % 50 == 0 {
                cpu.append_null();
            } else {
                cpu.append_value((r(2) % 1_000_000) as i128); // 0.0000 .. 99.9999
            }
            if r(3) % 20 == 0 {
                wait_type.append_null();
            } else {
                wait_type.append_value(WAIT_TYPES[(r(4) % WAIT_TYPES.len() as u64) as usize]);
            }
            if r(5) % 40 == 0 {
                wait_ms.append_null();
            } else {
                wait_ms.append_value((r(6) % 5_000_000_000) as i128);
            }
            let conflict = segment.is_copy && r(7) % 64 == 0;
            let bases = [r(8) % 400 + 20, r(9) % 60, r(10) % 4, r(11) % 3, r(12) % 2];
            for (c, (b, base)) in counters.iter_mut().zip(bases).enumerate() {
                if r(13 + c as u64) % 30 == 0 {
                    b.append_null();
                } else {
                    let v = base as i32 + i32::from(conflict && c == 0);
                    b.append_value(v);
                }
            }
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(ids),
            Arc::new(ts),
            Arc::new(server_id.finish()),
            Arc::new(names.finish()),
            Arc::new(versions.finish()),
            Arc::new(cpu.finish().with_precision_and_scale(9, 4).map_err(Error::arrow("synthetic CpuSignalWaitPct"))?),
            Arc::new(wait_type.finish()),
            Arc::new(wait_ms.finish().with_precision_and_scale(18, 4).map_err(Error::arrow("synthetic TopWaitMsPerSec"))?),
        ];
        cols.extend(counters.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        RecordBatch::try_new(source_schema(), cols).map_err(Error::arrow("synthetic batch"))
    }
}

const WAIT_TYPES: [&str; 8] = [
    "CXPACKET",
    "PAGEIOLATCH_SH",
    "LCK_M_X",
    "WRITELOG",
    "SOS_SCHEDULER_YIELD",
    "ASYNC_NETWORK_IO",
    "RESOURCE_SEMAPHORE",
    "HADR_SYNC_COMMIT",
];

fn sql_version(server: usize) -> String {
    let (year, build) = match server % 3 {
        0 => ("2019", "15.0.4355.3"),
        1 => ("2022", "16.0.4135.4"),
        _ => ("2017", "14.0.3465.1"),
    };
    format!("Microsoft SQL Server {year} - {build} (X64) Copyright (C) Microsoft Corporation Enterprise Edition: Core-based Licensing (64-bit) on Windows Server 2019 Datacenter")
}

/// SnapshotUTC of row `i` of server `s`: every 5 minutes, with a millisecond jitter as real
/// collectors have.
fn snapshot_ms(s: u64, i: u64, seed: u64) -> i64 {
    BASE_MS + (s as i64) * 17_000 + (i as i64) * SNAPSHOT_INTERVAL_MS + (mix(seed, 0, s, i) % 2_000) as i64
}

/// splitmix64 over (seed, column, server, row): each column has its own stream.
pub(crate) fn mix(seed: u64, col: u64, s: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_add(col.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(s.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(i.wrapping_mul(0x94D0_49BB_1331_11EB));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A synthetic source generated in process (no disk input), for `bench` and tests.
pub struct SyntheticSource {
    spec: Arc<SyntheticSpec>,
    plan: SyntheticSourcePlan,
    label: String,
    children: Arc<ChildrenSpec>,
    meters: Arc<TableMeters>,
}

impl SyntheticSource {
    /// All sources of a spec (no child tables).
    pub fn all(spec: SyntheticSpec) -> Vec<SyntheticSource> {
        SyntheticSource::with_children(spec, ChildrenSpec::none(), Arc::new(TableMeters::default()))
    }

    /// All sources of a spec, each with the child tables of `children` (generated as
    /// `generate` writes them); the CPU time spent generating each table's rows goes to
    /// `meters`.
    pub fn with_children(spec: SyntheticSpec, children: ChildrenSpec, meters: Arc<TableMeters>) -> Vec<SyntheticSource> {
        let (spec, children) = (Arc::new(spec), Arc::new(children));
        spec.plan()
            .into_iter()
            .map(|plan| SyntheticSource { label: format!("synthetic:{}", plan.name), spec: spec.clone(), plan, children: children.clone(), meters: meters.clone() })
            .collect()
    }

    /// Every batch of this source in order, `batch_rows` rows each (the last may be shorter).
    pub fn batches(&self, batch_rows: usize) -> impl Iterator<Item = Result<RecordBatch>> + Send + 'static {
        let spec = self.spec.clone();
        let batch_rows = batch_rows.max(1) as u64;
        let chunks: Vec<(Segment, u64, usize)> = self
            .plan
            .segments
            .iter()
            .flat_map(|seg| {
                (0..seg.rows.div_ceil(batch_rows))
                    .map(move |k| (seg.clone(), k * batch_rows, (seg.rows - k * batch_rows).min(batch_rows) as usize))
            })
            .collect();
        chunks.into_iter().map(move |(seg, off, len)| spec.batch(&seg, off, len))
    }
}

impl Source for SyntheticSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn identity(&self) -> &str {
        &self.label
    }

    fn child_tables(&self) -> &[ChildTable] {
        &self.children.tables
    }

    fn child_reader(&self, tables: &[ChildTable]) -> Result<Option<Box<dyn ChildReader>>> {
        let ours: Vec<Option<ChildTable>> = tables.iter().map(|t| self.children.tables.iter().copied().find(|c| c.name.eq_ignore_ascii_case(t.name))).collect();
        if ours.iter().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(Box::new(SyntheticChildReader { spec: self.spec.clone(), children: self.children.clone(), segments: self.plan.segments.clone(), tables: ours, meters: self.meters.clone() })))
    }

    fn read(&self, req: &ReadRequest) -> Result<BatchIter> {
        let projection = req.projection;
        Ok(Box::new(self.batches(req.batch_rows).map(move |b| {
            let b = b?;
            match projection {
                Projection::Full => Ok(b),
                Projection::Keys => b
                    .project(crate::source::normalize::projection_columns(Projection::Keys))
                    .map_err(Error::arrow("synthetic keys")),
            }
        })))
    }
}

/// Rows, Arrow bytes and thread CPU time per table, summed over threads: what `bench` reports
/// per child table (generation in the synthetic source, encoding in the null target).
#[derive(Debug, Default)]
pub struct TableMeters {
    tables: std::sync::Mutex<std::collections::BTreeMap<String, TableMeter>>,
}

/// One table's sums in [`TableMeters`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TableMeter {
    pub rows: u64,
    pub bytes: u64,
    pub cpu_seconds: f64,
}

impl TableMeters {
    /// Adds a batch of `rows` (`bytes`) that took `cpu_seconds` to `table`.
    pub fn add(&self, table: &str, rows: u64, bytes: u64, cpu_seconds: f64) {
        if let Ok(mut m) = self.tables.lock() {
            let e = m.entry(table.to_string()).or_default();
            e.rows += rows;
            e.bytes += bytes;
            e.cpu_seconds += cpu_seconds;
        }
    }

    /// The sums so far, by table name.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, TableMeter> {
        self.tables.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// CPU time of the calling thread in seconds (`CLOCK_THREAD_CPUTIME_ID`: exact to the
/// nanosecond even for the short spans bench measures per batch, where the scheduler's
/// `/proc/thread-self/schedstat` only moves at ticks), so figures exclude time the thread
/// waited. Wall time since first use where the clock is missing.
pub fn thread_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
        }
    }
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// A synthetic source's child rows, generated per run range.
struct SyntheticChildReader {
    spec: Arc<SyntheticSpec>,
    children: Arc<ChildrenSpec>,
    segments: Vec<Segment>,
    /// The generator's table for each table of the copy (`None`: not generated).
    tables: Vec<Option<ChildTable>>,
    meters: Arc<TableMeters>,
}

impl ChildReader for SyntheticChildReader {
    fn read(&mut self, table: usize, after: i64, upto: i64, _runs: &BatchRuns<'_>) -> Result<RecordBatch> {
        let Some(t) = self.tables.get(table).copied().flatten() else {
            return Err(Error::Internal(format!("synthetic child reader has no table {table}")));
        };
        let started = thread_cpu_seconds();
        let mut parts = Vec::new();
        for seg in &self.segments {
            // The segment's runs are first_run_id .. first_run_id + rows.
            let (lo, hi) = (seg.first_run_id, seg.first_run_id + seg.rows as i64 - 1);
            let (from, to) = (after.saturating_add(1).max(lo), upto.min(hi));
            if from <= to {
                let b = synthetic_children::batch(&self.spec, &self.children, &t, seg, (from - lo) as u64, (to - from + 1) as usize)?;
                parts.push(RecordBatch::try_new(t.source_schema(), b.columns().to_vec()).map_err(Error::arrow(format!("synthetic {}", t.name)))?);
            }
        }
        let out = arrow::compute::concat_batches(&t.source_schema(), &parts).map_err(Error::arrow(format!("synthetic {}", t.name)))?;
        self.meters.add(t.name, out.num_rows() as u64, out.get_array_memory_size() as u64, thread_cpu_seconds() - started);
        Ok(out)
    }
}

/// Writes one Parquet file per source into `dir` (`<ServerName>.parquet`, with `\` in names
/// written as `_`), each written under a temporary name and renamed when complete.
pub fn write_parquet_sources(spec: &SyntheticSpec, dir: &std::path::Path, on_batch: impl FnMut(usize)) -> Result<Vec<std::path::PathBuf>> {
    write_parquet_sources_with_children(spec, &ChildrenSpec::none(), dir, on_batch)
}

/// Runs per child batch: bounds the memory of a table with long values.
const CHILD_RUNS_PER_BATCH: usize = 1_024;

fn writer_props(tmp: &std::path::Path, row_group_rows: usize) -> Result<parquet::file::properties::WriterProperties> {
    Ok(parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(parquet::basic::ZstdLevel::try_new(1).map_err(Error::parquet(tmp))?))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_created_by("perfcopy generate".into())
        .build())
}

/// [`write_parquet_sources`], and each source's child tables of `children` in the export
/// layout of [`crate::source::parquet_children`]: `<name>/<Table>.parquet` beside
/// `<name>.parquet`, rows in PerfSnapshotRunID order. A source's child files are complete
/// (renamed into place) before its run file is.
pub fn write_parquet_sources_with_children(spec: &SyntheticSpec, children: &ChildrenSpec, dir: &std::path::Path, mut on_batch: impl FnMut(usize)) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(Error::write(dir))?;
    let mut paths = Vec::new();
    for src in SyntheticSource::all(spec.clone()) {
        let stem = src.plan.name.replace(['\\', '/'], "_");
        if !children.tables.is_empty() {
            let kids = dir.join(&stem);
            std::fs::create_dir_all(&kids).map_err(Error::write(&kids))?;
            for t in &children.tables {
                let path = kids.join(format!("{}.parquet", t.name));
                let tmp = kids.join(format!(".{}.tmp", t.name));
                let file = std::fs::File::create(&tmp).map_err(Error::write(&tmp))?;
                let mut w = parquet::arrow::ArrowWriter::try_new(file, synthetic_children::file_schema(t), Some(writer_props(&tmp, 65_536)?)).map_err(Error::parquet(&tmp))?;
                for seg in &src.plan.segments {
                    let mut off = 0u64;
                    while off < seg.rows {
                        let len = (seg.rows - off).min(CHILD_RUNS_PER_BATCH as u64) as usize;
                        let b = synthetic_children::batch(spec, children, t, seg, off, len)?;
                        w.write(&b).map_err(Error::parquet(&tmp))?;
                        off += len as u64;
                    }
                }
                w.close().map_err(Error::parquet(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(Error::write(&path))?;
            }
        }
        let path = dir.join(format!("{stem}.parquet"));
        let tmp = dir.join(format!(".{stem}.tmp"));
        let file = std::fs::File::create(&tmp).map_err(Error::write(&tmp))?;
        let mut w = parquet::arrow::ArrowWriter::try_new(file, source_schema(), Some(writer_props(&tmp, 65_536)?)).map_err(Error::parquet(&tmp))?;
        for b in src.batches(65_536) {
            let b = b?;
            on_batch(b.num_rows());
            w.write(&b).map_err(Error::parquet(&tmp))?;
        }
        w.close().map_err(Error::parquet(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::write(&path))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn overlap_copies_rows_of_another_server_exactly() {
        let spec = SyntheticSpec { servers: 3, rows: 3_000, overlap: 0.1, seed: 7 };
        let plan = spec.plan();
        let total: u64 = plan.iter().map(|p| p.rows()).sum();
        assert!((2_900..=3_100).contains(&total), "{total}");
        // The copy segment of source 0 reproduces rows of server 1 exactly (keys and values),
        // apart from the conflicts.
        let copy = &plan[0].segments[0];
        assert!(copy.is_copy && copy.server == 1);
        let orig = &plan[1].segments[1];
        let a = spec.batch(copy, 0, copy.rows as usize).unwrap();
        let b = spec.batch(orig, copy.first_row, copy.rows as usize).unwrap();
        assert_eq!(a.column(1), b.column(1));
        assert_eq!(a.column(3), b.column(3));
        let differing = (0..a.num_rows())
            .filter(|&r| a.slice(r, 1).columns()[4..] != b.slice(r, 1).columns()[4..])
            .count();
        assert!(differing < a.num_rows() / 10, "{differing}");
    }

    #[test]
    fn keys_are_unique_per_server_and_names_are_varied() {
        let spec = SyntheticSpec { servers: 8, rows: 8_000, overlap: 0.0, seed: 1 };
        let names: HashSet<_> = (0..8).map(server_name).collect();
        assert_eq!(names.len(), 8);
        assert!(names.iter().any(|n| n.contains('\\')));
        assert!(names.iter().any(|n| !n.is_ascii()));
        for p in spec.plan() {
            let b = spec.batch(&p.segments[0], 0, p.segments[0].rows as usize).unwrap();
            let ts = crate::source::normalize::snapshot_ms(&b, 1);
            assert!(ts.values().windows(2).all(|w| w[0] < w[1]), "strictly increasing 5-minute snapshots");
        }
    }

    #[test]
    fn same_seed_same_values_other_seed_other_values() {
        let spec = SyntheticSpec { servers: 2, rows: 400, overlap: 0.05, seed: 42 };
        let seg = &spec.plan()[0].segments[1];
        assert_eq!(spec.batch(seg, 10, 50).unwrap(), spec.batch(seg, 10, 50).unwrap());
        let other = SyntheticSpec { seed: 43, ..spec.clone() };
        assert_ne!(spec.batch(seg, 10, 50).unwrap(), other.batch(seg, 10, 50).unwrap());
    }
}
