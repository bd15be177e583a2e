//! What a copy reports: row counts per source and in total, rows per server, where the time
//! went (printed as JSON with `--json`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::pipeline::watermark::WatermarkReport;

use super::keys::{KeyScan, Names};

/// What happened to rows: of one source, or of all (the totals).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RowCounts {
    /// Rows read (after the watermark).
    pub rows_read: u64,
    /// Rows outside `--since`/`--until`.
    pub rows_filtered: u64,
    /// Rows dropped because another row with the same (SnapshotUTC, ServerID) survives.
    pub duplicates_dropped: u64,
    /// Of those, rows whose key the target already held.
    pub already_in_target: u64,
    /// Dropped rows whose values differ from the surviving row's.
    pub conflicts: u64,
    pub rows_written: u64,
}

impl RowCounts {
    /// Adds another count to this one.
    pub fn add(&mut self, o: &RowCounts) {
        self.rows_read += o.rows_read;
        self.rows_filtered += o.rows_filtered;
        self.duplicates_dropped += o.duplicates_dropped;
        self.already_in_target += o.already_in_target;
        self.conflicts += o.conflicts;
        self.rows_written += o.rows_written;
    }
}

/// Totals over all sources.
pub type Totals = RowCounts;

/// What happened to one source's rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceReport {
    pub source: String,
    #[serde(flatten)]
    pub counts: RowCounts,
    /// The watermark (PerfSnapshotRunID) rows were read after, when one was used.
    pub resumed_after_run_id: Option<i64>,
    /// Whether a watermark was used, and why not.
    pub watermark: WatermarkReport,
    /// Rows per server name in the window, with their SnapshotUTC range.
    pub servers: Vec<NameReport>,
    /// What happened to the child rows, per child table of the copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildReport>,
}

/// What happened to one child table's rows of a source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChildReport {
    pub table: String,
    /// Rows read (of runs after the watermark, and orphans).
    pub rows_read: u64,
    /// Rows written with their run.
    pub rows_written: u64,
    /// Rows of runs not written: duplicates of another source's or the target's run, or
    /// outside `--since`/`--until`.
    pub dropped_with_run: u64,
    /// Rows whose run is not in the source: never loaded.
    pub orphans: u64,
    /// Rows of runs the target already held, from the source row that would have survived
    /// without it: written where the target held none of this table's rows for the run.
    pub offered_for_held_runs: u64,
}

impl ChildReport {
    /// Adds one batch's counts.
    pub fn add(&mut self, n: &crate::transform::children::ChildCounts) {
        self.rows_read += n.rows_read;
        self.rows_written += n.rows_kept;
        self.dropped_with_run += n.dropped_with_run;
        self.orphans += n.orphans;
        self.offered_for_held_runs += n.for_held_runs;
    }
}

/// Rows of one server name in one source.
#[derive(Debug, Clone, Serialize)]
pub struct NameReport {
    pub server_name: String,
    pub server_id: i32,
    pub rows: u64,
    pub first_snapshot_utc: String,
    pub last_snapshot_utc: String,
}

/// Rows written per target server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    pub server_id: i32,
    pub server_names: Vec<String>,
    pub rows_written: u64,
}

/// The summary of a copy (printed as JSON with `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub dry_run: bool,
    pub target: String,
    pub sources: Vec<SourceReport>,
    pub servers: Vec<ServerReport>,
    pub registered_servers: Vec<(String, i32)>,
    pub unknown_servers: Vec<String>,
    /// The child tables that moved with their runs.
    pub child_tables: Vec<String>,
    /// Child tables of the sources that the target lacks: not copied.
    pub child_tables_not_in_target: Vec<String>,
    pub totals: Totals,
    /// Days (per server) where sources or the target overlap, and keys held for them.
    pub dedupe_hot_days: usize,
    pub dedupe_hot_keys: usize,
    /// Time per stage of the copy pass.
    pub stages: StageTimes,
    pub elapsed_seconds: f64,
}

/// Where the copy pass spent its time, summed over threads: which stage is the bottleneck.
/// Readers waiting to send means the writers are slower; writers waiting to receive means the
/// readers (or the sources) are slower.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    pub batches: u64,
    /// Units sent to the writers: a batch with child tables goes out in parts bounded in
    /// bytes, so a source of wide child rows sends more units than batches.
    pub units: u64,
    /// In-memory size of the source batches read (Arrow buffers), in bytes.
    pub bytes_read: u64,
    pub read_seconds: f64,
    pub transform_seconds: f64,
    pub readers_waiting_on_queue_seconds: f64,
    pub write_seconds: f64,
    pub writers_waiting_on_queue_seconds: f64,
    /// Peak resident memory of the process so far (VmHWM), in bytes, where the OS tells.
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process (Linux: VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Nanosecond accumulators shared by the copy pass's threads.
#[derive(Default)]
pub(super) struct Timers {
    pub(super) batches: AtomicU64,
    pub(super) units: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) read: AtomicU64,
    pub(super) transform: AtomicU64,
    pub(super) send_wait: AtomicU64,
    pub(super) write: AtomicU64,
    pub(super) recv_wait: AtomicU64,
}

impl Timers {
    pub(super) fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    pub(super) fn report(&self) -> StageTimes {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        StageTimes {
            batches: self.batches.load(Ordering::Relaxed),
            units: self.units.load(Ordering::Relaxed),
            bytes_read: self.bytes.load(Ordering::Relaxed),
            read_seconds: s(&self.read),
            transform_seconds: s(&self.transform),
            readers_waiting_on_queue_seconds: s(&self.send_wait),
            write_seconds: s(&self.write),
            writers_waiting_on_queue_seconds: s(&self.recv_wait),
            peak_rss_bytes: peak_rss_bytes(),
        }
    }
}

/// Formats ms since the epoch as ISO 8601 UTC.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// What the stream pass did: each source's counts of dropped and written rows, rows written
/// per target server, and where the time went.
pub(super) struct StreamOutcome {
    pub sources: Vec<SourceReport>,
    pub written: BTreeMap<i32, u64>,
    pub stages: StageTimes,
}

/// The report of a whole copy: each source's counts (the key pass's reads, the stream pass's
/// outcome), its watermark check, and rows per server name and per target server.
pub(super) fn assemble(
    mut report: CopyReport,
    labels: Vec<String>,
    scans: &[KeyScan],
    checks: &[WatermarkReport],
    names: &Names,
    to_id: impl Fn(i32) -> i32,
    outcome: StreamOutcome,
    started: Instant,
) -> CopyReport {
    let mut per_server: BTreeMap<i32, ServerReport> = BTreeMap::new();
    for (rank, (scan, out)) in scans.iter().zip(outcome.sources).enumerate() {
        let mut sr = out;
        sr.source = labels[rank].clone();
        sr.counts.rows_read = scan.rows_read;
        sr.counts.rows_filtered = scan.rows_filtered;
        sr.resumed_after_run_id = scan.watermark;
        sr.watermark = checks[rank].clone();
        for (&g, st) in &scan.names {
            let id = to_id(g);
            let n = names.spelling(g);
            sr.servers.push(NameReport {
                server_name: n.to_string(),
                server_id: id,
                rows: st.rows,
                first_snapshot_utc: iso(st.min),
                last_snapshot_utc: iso(st.max),
            });
            let entry = per_server.entry(id).or_insert_with(|| ServerReport { server_id: id, server_names: vec![], rows_written: 0 });
            if !entry.server_names.iter().any(|s| s == n) {
                entry.server_names.push(n.to_string());
            }
        }
        report.totals.add(&sr.counts);
        report.sources.push(sr);
    }
    for (id, rows) in outcome.written {
        per_server.entry(id).or_insert_with(|| ServerReport { server_id: id, server_names: vec![], rows_written: 0 }).rows_written = rows;
    }
    report.servers = per_server.into_values().collect();
    report.stages = outcome.stages;
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report
}
