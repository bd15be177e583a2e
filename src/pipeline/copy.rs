//! `copy`: sources -> remap -> dedupe -> target, in three passes.
//!
//! 1. **Keys** (parallel over sources): ServerName, SnapshotUTC and PerfSnapshotRunID of every
//!    row after the watermark and window. Finds every server name (unknown ones are reported
//!    before anything is written) and where sources and the target overlap (hot days).
//! 2. **Hot rows**: full rows of hot days only, from sources and the target; picks each hot
//!    key's survivor (see [`crate::transform::dedupe`]).
//! 3. **Copy**: readers (one per source, up to `--readers` at once) remap and dedupe each batch
//!    and send per-server batches through bounded channels to the writer workers; the target
//!    makes the rows visible at commit, after every stage succeeded.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ahash::AHashSet as HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::Int64Type;
use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::progress::Progress;
use crate::pipeline::Cancel;
use crate::schema::{key, src, tgt};
use crate::pipeline::watermark::{self, WatermarkReport, WatermarkStatus};
use crate::sink::{FinalMark, SourceMeta, Target, Watermark, WriteUnit};
use crate::source::normalize::snapshot_ms;
use crate::source::{Projection, ReadRequest, Source};
use crate::transform::dedupe::{day_of, day_ranges, row_hashes, Day, OverlapPlanner, Verdict, Winners, TARGET_RANK};
use crate::transform::remap::{fold, ServerIdMap};
use crate::transform::{split_by_server, to_target, Window};

/// A validated copy job (built by [`crate::config`]).
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub server_map: Option<ServerIdMap>,
    pub register_servers: bool,
    pub window: Window,
    pub readers: usize,
    pub writers: usize,
    pub batch_rows: usize,
    pub queue_depth: usize,
    pub dry_run: bool,
    /// Ignore recorded watermarks.
    pub rescan: bool,
}

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
struct Timers {
    batches: AtomicU64,
    bytes: AtomicU64,
    read: AtomicU64,
    transform: AtomicU64,
    send_wait: AtomicU64,
    write: AtomicU64,
    recv_wait: AtomicU64,
}

impl Timers {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn report(&self) -> StageTimes {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        StageTimes {
            batches: self.batches.load(Ordering::Relaxed),
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

/// Interns folded server names to small integers (the planner's provisional groups).
///
/// A name spelled in several cases keeps the spelling met first in `--from` order (lowest
/// source rank, then the source's own order), whatever order the readers run in: that
/// spelling is what gets registered.
#[derive(Default)]
struct Names {
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
}

#[derive(Debug, Clone, Copy)]
struct NameStats {
    rows: u64,
    min: i64,
    max: i64,
}

/// Result of the key pass for one source.
struct KeyScan {
    planner: OverlapPlanner,
    names: BTreeMap<i32, NameStats>,
    rows_read: u64,
    rows_filtered: u64,
    watermark: Option<i64>,
}

/// Rows of a batch that pass the watermark and the window.
fn wanted(batch: &RecordBatch, run_col: usize, ts_col: usize, after: Option<i64>, window: &Window) -> BooleanArray {
    let ids = batch.column(run_col).as_primitive::<Int64Type>();
    let ts = snapshot_ms(batch, ts_col);
    ids.values()
        .iter()
        .zip(ts.values().iter())
        .map(|(&id, &t)| Some(after.is_none_or(|a| id > a) && window.contains(t)))
        .collect()
}

/// Runs `work` for every source, at most `readers` at once, in rank order of start. The first
/// error cancels the rest.
pub(crate) fn for_each_source<T: Send>(
    sources: &[Box<dyn Source>],
    readers: usize,
    cancel: &Cancel,
    work: impl Fn(usize, &dyn Source) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..sources.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..readers.clamp(1, sources.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= sources.len() || cancel.is_cancelled() {
                    break;
                }
                let r = work(i, sources[i].as_ref());
                if r.is_err() {
                    cancel.cancel();
                }
                if let Ok(mut v) = results.lock() {
                    v[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().map_err(|_| Error::Internal("reader thread panicked".into()))?;
    // Report the first real error, not the cancellations it caused.
    let mut out = Vec::with_capacity(results.len());
    let mut first_cancel = None;
    for r in results {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(Error::Cancelled)) | None => first_cancel = Some(Error::Cancelled),
            Some(Err(e)) => return Err(e),
        }
    }
    match first_cancel {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Runs a copy. Sources' order is their rank for the survivor rule.
pub fn run_copy(
    sources: &[Box<dyn Source>],
    target: &dyn Target,
    opts: &CopyOptions,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<CopyReport> {
    let started = Instant::now();
    let _lock = if opts.dry_run { None } else { Some(target.lock()?) };
    let registry = target.known_servers()?;
    let mut map = match &opts.server_map {
        Some(m) => ServerIdMap::layered(m, &registry),
        None => registry,
    };

    // A watermark is used only when it is shown to belong to the source as it is now.
    let checks = for_each_source(sources, opts.readers, cancel, |_, source| watermark::check(source, target, &map, opts.rescan))?;
    for (s, c) in sources.iter().zip(&checks) {
        if c.status == WatermarkStatus::SetAside {
            progress.message(&format!("{}: {}", s.label(), c.describe()));
        }
    }

    // Pass 1: keys.
    let names = Mutex::new(Names::default());
    let bar = progress.phase("scan keys", None);
    let scans = for_each_source(sources, opts.readers, cancel, |rank, source| {
        scan_keys(source, rank as u32 + 1, checks[rank].after(), opts, &names, &bar, cancel)
    })?;
    bar.finish();
    let names = names.into_inner().map_err(|_| Error::Internal("name table poisoned".into()))?;

    // Resolve names; unknown ones are an error listing all of them, unless registered.
    let unknown: BTreeSet<String> = names.spelled.iter().filter(|n| map.get(n).is_none()).cloned().collect();
    let mut report = CopyReport { dry_run: opts.dry_run, target: target.label().to_string(), ..Default::default() };
    if !unknown.is_empty() {
        if opts.register_servers && !opts.dry_run {
            let added = target.register_servers(&unknown, &map)?;
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
            map = provisional;
        } else {
            return Err(Error::UnknownServers { names: unknown.into_iter().collect() });
        }
    }
    let group_ids: Vec<i32> = names.spelled.iter().map(|n| map.get(n).unwrap_or(0)).collect();
    let to_id = |g: i32| group_ids[g as usize];

    // Overlap plan, with the target's existing keys of the servers being copied.
    let mut planner = OverlapPlanner::new();
    let mut scans = scans;
    for scan in scans.iter_mut() {
        planner.merge(std::mem::take(&mut scan.planner).regroup(to_id));
    }
    // The time range each server is copied in, to ask the target only for keys there.
    let mut copied: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for scan in &scans {
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
        let ids = batch.column(1).as_primitive::<arrow::datatypes::Int32Type>();
        planner.observe(TARGET_RANK, ids.values(), ts.values());
    }
    drop(keys);
    let hot: HashSet<Day> = planner.hot_days();
    drop(planner);
    report.dedupe_hot_days = hot.len();

    // Pass 2: survivors of hot keys.
    let winners = if hot.is_empty() {
        Winners::new()
    } else {
        hot_winners(sources, target, opts, &map, &hot, &scans, cancel)?
    };
    report.dedupe_hot_keys = winners.len();

    // Pass 3: copy.
    let metas = sources
        .iter()
        .map(|s| {
            // The ledger row names the source's own server as dbo.Servers knows it: the first
            // of its ledger names (@@SERVERNAME, then its newest row's server) with an ID.
            // Sources that do not know their server (files) and servers without an ID get no
            // ledger rows (the key check still prevents doubles).
            let ledger = s.ledger_names().into_iter().find_map(|n| map.get(&n).map(|id| (n, id)));
            if !s.ledger_names().is_empty() && ledger.is_none() && !opts.dry_run {
                progress.message(&format!("{}: its server has no ServerID; no DBAToolsSyncLog row will be written for it", s.label()));
            }
            let (server_name, server_id) = match ledger {
                Some((n, id)) => (n, Some(id)),
                None => (String::new(), None),
            };
            SourceMeta {
                identity: s.identity().to_string(),
                facts: s.facts().cloned(),
                server_id: server_id.unwrap_or(0),
                server_name,
                database: s.database_name(),
                watermarks: opts.window.is_unbounded() && server_id.is_some(),
                split: sources.iter().filter(|o| o.group() == s.group()).count() > 1,
            }
        })
        .collect();
    let outcome = copy_pass(sources, target, opts, &map, &hot, winners, &scans, metas, progress, cancel)?;

    // Report.
    let mut per_server: BTreeMap<i32, ServerReport> = BTreeMap::new();
    for (rank, (scan, out)) in scans.iter().zip(&outcome.sources).enumerate() {
        let mut sr = out.clone();
        sr.source = sources[rank].label().to_string();
        sr.counts.rows_read = scan.rows_read;
        sr.counts.rows_filtered = scan.rows_filtered;
        sr.resumed_after_run_id = scan.watermark;
        sr.watermark = checks[rank].clone();
        for (&g, st) in &scan.names {
            let id = to_id(g);
            sr.servers.push(NameReport {
                server_name: names.spelled[g as usize].clone(),
                server_id: id,
                rows: st.rows,
                first_snapshot_utc: iso(st.min),
                last_snapshot_utc: iso(st.max),
            });
            let entry = per_server.entry(id).or_insert_with(|| ServerReport { server_id: id, server_names: vec![], rows_written: 0 });
            let n = &names.spelled[g as usize];
            if !entry.server_names.contains(n) {
                entry.server_names.push(n.clone());
            }
        }
        report.totals.add(&sr.counts);
        report.sources.push(sr);
    }
    for (id, rows) in &outcome.written {
        per_server
            .entry(*id)
            .or_insert_with(|| ServerReport { server_id: *id, server_names: vec![], rows_written: 0 })
            .rows_written = *rows;
    }
    report.servers = per_server.into_values().collect();
    report.stages = outcome.stages.clone();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn describe(added: &[(String, i32)]) -> String {
    added.iter().map(|(n, id)| format!("'{n}' = {id}")).collect::<Vec<_>>().join(", ")
}

/// Pass 1 for one source: the keys of its rows after `after`.
fn scan_keys(
    source: &dyn Source,
    rank: u32,
    after: Option<i64>,
    opts: &CopyOptions,
    names: &Mutex<Names>,
    bar: &crate::pipeline::progress::Bar,
    cancel: &Cancel,
) -> Result<KeyScan> {
    let req = ReadRequest { projection: Projection::Keys, batch_rows: opts.batch_rows, after_run_id: after, time_ranges: None };
    let mut scan = KeyScan {
        planner: OverlapPlanner::new(),
        names: BTreeMap::new(),
        rows_read: 0,
        rows_filtered: 0,
        watermark: after,
    };
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

/// Pass 2: reads the rows of hot days from sources and target and picks each key's survivor.
#[allow(clippy::too_many_arguments)]
fn hot_winners(
    sources: &[Box<dyn Source>],
    target: &dyn Target,
    opts: &CopyOptions,
    map: &ServerIdMap,
    hot: &HashSet<Day>,
    scans: &[KeyScan],
    cancel: &Cancel,
) -> Result<Winners> {
    let mut by_server: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &(s, d) in hot {
        by_server.entry(s).or_default().push(d);
    }
    let ranges: BTreeMap<i32, Vec<(i64, i64)>> = by_server.into_iter().map(|(s, d)| (s, day_ranges(d))).collect();
    let all_ranges = day_ranges(hot.iter().map(|&(_, d)| d));
    let value_cols: Vec<usize> = (src::FIRST_VALUE..crate::schema::SOURCE_COLUMNS.len()).collect();

    let winners = Mutex::new(Winners::new());
    for_each_source(sources, opts.readers, cancel, |rank, source| {
        let after = scans[rank].watermark;
        let req = ReadRequest {
            projection: Projection::Full,
            batch_rows: opts.batch_rows,
            after_run_id: after,
            time_ranges: Some(all_ranges.clone()),
        };
        for batch in source.read(&req)? {
            cancel.check()?;
            let batch = batch?;
            let keep = wanted(&batch, src::RUN_ID, src::SNAPSHOT_UTC, after, &opts.window);
            let ids = crate::transform::remap::target_ids(map, &batch, src::SERVER_NAME)?;
            let ts = snapshot_ms(&batch, src::SNAPSHOT_UTC);
            let mut is_hot = HotCache::new(hot);
            let rows: Vec<usize> = (0..batch.num_rows())
                .filter(|&r| keep.value(r) && is_hot.get(ids.value(r), ts.value(r)))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let hashes = row_hashes(&batch, &value_cols, &rows);
            let run = batch.column(src::RUN_ID).as_primitive::<Int64Type>();
            // One shared table (not one per reader, merged later): the state is the biggest
            // memory user of a copy, so it must not exist twice.
            let mut w = winners.lock().map_err(|_| Error::Internal("dedupe state poisoned".into()))?;
            for (&r, h) in rows.iter().zip(hashes) {
                w.offer(ids.value(r), ts.value(r), rank as u32 + 1, run.value(r), h);
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
        let ids = batch.column(tgt::SERVER_ID).as_primitive::<arrow::datatypes::Int32Type>();
        let mut is_hot = HotCache::new(hot);
        let rows: Vec<usize> = (0..batch.num_rows()).filter(|&r| is_hot.get(ids.value(r), ts.value(r))).collect();
        let hashes = row_hashes(&batch, &target_value_cols, &rows);
        for (&r, h) in rows.iter().zip(hashes) {
            winners.offer(ids.value(r), ts.value(r), TARGET_RANK, 0, h);
        }
    }
    Ok(winners)
}

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

struct CopyOutcome {
    sources: Vec<SourceReport>,
    written: BTreeMap<i32, u64>,
    stages: StageTimes,
}

/// A deduplicated source batch on its way to a writer.
struct WriterMsg {
    source: usize,
    rows: RecordBatch,
    last_run_id: Option<i64>,
    last_snapshot_ms: Option<i64>,
}

/// Pass 3: the streaming copy.
#[allow(clippy::too_many_arguments)]
fn copy_pass(
    sources: &[Box<dyn Source>],
    target: &dyn Target,
    opts: &CopyOptions,
    map: &ServerIdMap,
    hot: &HashSet<Day>,
    winners: Winners,
    scans: &[KeyScan],
    metas: Vec<SourceMeta>,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<CopyOutcome> {
    let total: u64 = scans.iter().map(|s| s.rows_read).sum();
    let winners = Mutex::new(winners);
    let overall = progress.phase(if opts.dry_run { "analyse" } else { "copy" }, Some(total));
    let load = if opts.dry_run { None } else { Some(target.begin(opts.writers, metas)?) };
    let workers = opts.writers.max(1);
    let (senders, receivers): (Vec<Sender<WriterMsg>>, Vec<Receiver<WriterMsg>>) =
        (0..workers).map(|_| bounded::<WriterMsg>(opts.queue_depth.max(1))).unzip();
    let value_cols: Vec<usize> = (src::FIRST_VALUE..crate::schema::SOURCE_COLUMNS.len()).collect();
    let max_run: Mutex<Vec<Option<(i64, i64)>>> = Mutex::new(vec![None; sources.len()]);
    let timers = Timers::default();
    let timers = &timers;

    let result: Result<(Vec<SourceReport>, BTreeMap<i32, u64>)> = std::thread::scope(|s| {
        // Writers.
        let mut writer_handles = Vec::new();
        for (w, rx) in receivers.into_iter().enumerate() {
            let load = load.as_deref();
            writer_handles.push(s.spawn(move || -> Result<BTreeMap<i32, u64>> {
                let mut counts = BTreeMap::new();
                match load {
                    None => {
                        for msg in rx {
                            for (id, part) in split_by_server(&msg.rows)? {
                                *counts.entry(id).or_insert(0) += part.num_rows() as u64;
                            }
                        }
                        Ok(counts)
                    }
                    Some(load) => {
                        let mut writer = load.writer(w)?;
                        loop {
                            let waited = Instant::now();
                            let Ok(msg) = rx.recv() else { break };
                            Timers::add(&timers.recv_wait, waited);
                            if cancel.is_cancelled() {
                                return Err(Error::Cancelled);
                            }
                            let writing = Instant::now();
                            let unit = WriteUnit {
                                source: msg.source,
                                rows: &msg.rows,
                                last_run_id: msg.last_run_id,
                                last_snapshot_ms: msg.last_snapshot_ms,
                            };
                            if let Err(e) = writer.write(unit) {
                                cancel.cancel();
                                return Err(e);
                            }
                            Timers::add(&timers.write, writing);
                        }
                        let closing = Instant::now();
                        let r = writer.finish();
                        Timers::add(&timers.write, closing);
                        r
                    }
                }
            }));
        }

        // Readers.
        let senders_ref = &senders;
        let reports = for_each_source(sources, opts.readers, cancel, |rank, source| {
            let after = scans[rank].watermark;
            let bar = progress.source(source.label(), Some(scans[rank].rows_read));
            let mut rep = SourceReport::default();
            let req = ReadRequest { projection: Projection::Full, batch_rows: opts.batch_rows, after_run_id: after, time_ranges: None };
            let mut top: Option<(i64, i64)> = None;
            // Set once a row of this source is dropped for another source's survivor: from then
            // on no unit may move the source's watermark (that survivor may commit later, on
            // another writer); the final one is recorded at commit.
            let mut frozen = false;
            let mut batches = source.read(&req)?;
            loop {
                let reading = Instant::now();
                let Some(batch) = batches.next() else { break };
                Timers::add(&timers.read, reading);
                cancel.check()?;
                let batch = batch?;
                let transforming = Instant::now();
                timers.batches.fetch_add(1, Ordering::Relaxed);
                timers.bytes.fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
                let run = batch.column(src::RUN_ID).as_primitive::<Int64Type>();
                let ts = snapshot_ms(&batch, src::SNAPSHOT_UTC);
                for (&id, &t) in run.values().iter().zip(ts.values().iter()) {
                    if top.is_none_or(|(m, _)| id > m) && after.is_none_or(|a| id > a) {
                        top = Some((id, t));
                    }
                }
                let wanted_rows = wanted(&batch, src::RUN_ID, src::SNAPSHOT_UTC, after, &opts.window);
                let ids = crate::transform::remap::target_ids(map, &batch, src::SERVER_NAME)?;
                let mut keep: Vec<bool> = wanted_rows.values().iter().collect();
                let mut is_hot = HotCache::new(hot);
                let hot_rows: Vec<usize> = (0..batch.num_rows())
                    .filter(|&r| keep[r] && is_hot.get(ids.value(r), ts.value(r)))
                    .collect();
                if !hot_rows.is_empty() {
                    let hashes = row_hashes(&batch, &value_cols, &hot_rows);
                    let mut w = winners.lock().map_err(|_| Error::Internal("dedupe state poisoned".into()))?;
                    for (&r, h) in hot_rows.iter().zip(hashes) {
                        match w.decide(ids.value(r), ts.value(r), rank as u32 + 1, run.value(r), h) {
                            Verdict::Keep => {}
                            Verdict::Drop { in_target, other_source, conflict } => {
                                keep[r] = false;
                                frozen |= other_source;
                                rep.counts.duplicates_dropped += 1;
                                rep.counts.already_in_target += in_target as u64;
                                rep.counts.conflicts += conflict as u64;
                            }
                        }
                    }
                }
                let keep = BooleanArray::from(keep);
                let out = to_target(&batch, ids, &keep)?;
                rep.counts.rows_written += out.num_rows() as u64;
                // A source's batches all go to one writer, in order, so a target that commits
                // per batch can advance the source's watermark batch by batch.
                let tx = &senders_ref[rank % senders_ref.len()];
                let mark = if frozen { None } else { top };
                let msg = WriterMsg { source: rank, rows: out, last_run_id: mark.map(|t| t.0), last_snapshot_ms: mark.map(|t| t.1) };
                Timers::add(&timers.transform, transforming);
                let sending = Instant::now();
                if tx.send(msg).is_err() {
                    cancel.cancel();
                    return Err(Error::Cancelled);
                }
                Timers::add(&timers.send_wait, sending);
                bar.inc(batch.num_rows() as u64);
                overall.inc(batch.num_rows() as u64);
            }
            bar.finish();
            if let Ok(mut m) = max_run.lock() {
                m[rank] = top;
            }
            Ok(rep)
        });
        drop(senders);
        let mut written = BTreeMap::new();
        let mut writer_err = None;
        for h in writer_handles {
            match h.join() {
                Ok(Ok(counts)) => {
                    for (id, n) in counts {
                        *written.entry(id).or_insert(0) += n;
                    }
                }
                Ok(Err(e)) => {
                    if writer_err.is_none() || matches!(writer_err, Some(Error::Cancelled)) {
                        writer_err = Some(e);
                    }
                }
                Err(_) => writer_err = Some(Error::Internal("writer thread panicked".into())),
            }
        }
        match (reports, writer_err) {
            (Err(Error::Cancelled), Some(e)) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(_), Some(e)) => Err(e),
            (Ok(r), None) => Ok((r, written)),
        }
    });
    overall.finish();

    let (reports, written) = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(load) = load {
                load.abort(&e.to_string());
            }
            return Err(e);
        }
    };
    if let Some(load) = load {
        if cancel.is_cancelled() {
            load.abort("cancelled");
            return Err(Error::Cancelled);
        }
        let tops = max_run.into_inner().map_err(|_| Error::Internal("poisoned".into()))?;
        let marks = if opts.window.is_unbounded() { final_marks(sources, &tops, &reports) } else { Vec::new() };
        load.commit(marks)?;
    }
    Ok(CopyOutcome { sources: reports, written, stages: timers.report() })
}

/// The watermark of each `--from` after a whole copy: the highest row read of its parts,
/// with the rows they wrote.
fn final_marks(sources: &[Box<dyn Source>], tops: &[Option<(i64, i64)>], reports: &[SourceReport]) -> Vec<FinalMark> {
    let mut by_group: BTreeMap<&str, FinalMark> = BTreeMap::new();
    for (rank, s) in sources.iter().enumerate() {
        let m = by_group.entry(s.group()).or_insert_with(|| FinalMark {
            sources: Vec::new(),
            watermark: Watermark { source: s.identity().to_string(), last_run_id: i64::MIN, last_snapshot_ms: None, facts: s.facts().cloned() },
            rows_written: 0,
        });
        m.sources.push(rank);
        m.rows_written += reports.get(rank).map_or(0, |r| r.counts.rows_written);
        if let Some((run, ts)) = tops.get(rank).copied().flatten() {
            if run > m.watermark.last_run_id {
                m.watermark.last_run_id = run;
                m.watermark.last_snapshot_ms = Some(ts);
            }
        }
    }
    by_group.into_values().filter(|m| m.watermark.last_snapshot_ms.is_some()).collect()
}
