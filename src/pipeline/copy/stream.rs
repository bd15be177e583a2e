//! Pass 3, the stream: readers (one per source, up to `--readers` at once) remap and dedupe each
//! batch and send it through bounded channels to the writer workers; the target makes the rows
//! visible at commit, after every stage succeeded, with each source's final watermark.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use ahash::AHashSet as HashSet;
use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::{Error, Result};
use crate::pipeline::progress::Progress;
use crate::pipeline::{for_each_source, Cancel};
use crate::schema::{src, tgt};
use crate::sink::{FinalMark, Load, SourceMeta, Target, Watermark, WriteUnit};
use crate::source::normalize::snapshot_ms;
use crate::source::{BatchRuns, Projection, ReadRequest, Source};
use crate::transform::dedupe::{row_hashes, Day, Verdict, Winners};
use crate::transform::remap::ServerIdMap;
use crate::transform::children::{self, ChildCounts, Runs};
use crate::transform::to_target;
use crate::pipeline::metrics;
use crate::schema::ChildTable;

use super::hot::{source_value_columns, SourceRows};
use super::keys::KeyScan;
use super::report::{ChildReport, SourceReport, StreamOutcome, Timers};
use super::CopyOptions;

/// What the first two passes decided, for the stream pass.
pub(super) struct Plan<'a> {
    pub map: &'a ServerIdMap,
    pub hot: &'a HashSet<Day>,
    pub winners: Winners,
    pub scans: &'a [KeyScan],
    /// The child tables whose rows follow their runs.
    pub children: &'a [ChildTable],
}

/// A deduplicated source batch on its way to a writer.
struct WriterMsg {
    source: usize,
    rows: RecordBatch,
    /// The source's watermark once this batch is in: its highest (PerfSnapshotRunID,
    /// SnapshotUTC) so far, or none once the watermark is frozen.
    mark: Option<(i64, i64)>,
    /// The batch's child rows, one keyed batch per child table of the copy.
    children: Vec<RecordBatch>,
    /// Child rows that may complete runs the target holds, likewise.
    completing: Vec<RecordBatch>,
}

/// What the target records of each source: its identity and facts, and the server its ledger
/// row names — the first of its ledger names (@@SERVERNAME, then its newest row's server)
/// that dbo.Servers knows. Sources that do not know their server (files) and servers without
/// an ID get no ledger rows (the key check still prevents doubles).
fn source_metas(sources: &[Box<dyn Source>], map: &ServerIdMap, children: &[ChildTable], opts: &CopyOptions, progress: &Progress) -> Vec<SourceMeta> {
    sources
        .iter()
        .map(|s| {
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
                child_tables: children.iter().map(|t| t.name.to_string()).collect(),
            }
        })
        .collect()
}

/// Pass 3: the streaming copy.
pub(super) fn run(sources: &[Box<dyn Source>], target: &dyn Target, opts: &CopyOptions, plan: Plan<'_>, progress: &Progress, cancel: &Cancel) -> Result<StreamOutcome> {
    let total: u64 = plan.scans.iter().map(|s| s.rows_read).sum();
    metrics::metrics().rows_to_copy.set(total.min(i64::MAX as u64) as i64);
    let labels: Vec<String> = sources.iter().map(|s| s.label().to_string()).collect();
    let tables: Vec<String> = plan.children.iter().map(|t| t.name.to_string()).collect();
    let (labels, tables) = (&labels, &tables);
    let overall = progress.phase(if opts.dry_run { "analyse" } else { "copy" }, Some(total));
    let load = if opts.dry_run { None } else { Some(target.begin(opts.writers, source_metas(sources, plan.map, plan.children, opts, progress), plan.children)?) };
    let (senders, receivers): (Vec<Sender<WriterMsg>>, Vec<Receiver<WriterMsg>>) =
        (0..opts.writers.max(1)).map(|_| bounded::<WriterMsg>(opts.queue_depth.max(1))).unzip();
    let winners = Mutex::new(plan.winners);
    let timers = Timers::default();
    let timers = &timers;

    let result: Result<(Vec<(SourceReport, Option<(i64, i64)>)>, BTreeMap<i32, u64>)> = std::thread::scope(|s| {
        let writers: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(w, rx)| {
                let load = load.as_deref();
                s.spawn(move || write_worker(load, w, rx, timers, Labels { sources: labels, tables }, cancel))
            })
            .collect();
        let senders_ref = &senders;
        let reports = for_each_source(sources, opts.readers, cancel, |rank, source| {
            // A source's batches all go to one writer, in order, so a target that commits per
            // batch can advance the source's watermark batch by batch.
            let tx = &senders_ref[rank % senders_ref.len()];
            let read = Reader { opts, map: plan.map, hot: plan.hot, winners: &winners, children: plan.children, timers, cancel };
            let bar = progress.source(source.label(), Some(plan.scans[rank].rows_read));
            let r = read.source(rank, source, plan.scans[rank].watermark, tx, |n| {
                bar.inc(n);
                overall.inc(n);
            });
            bar.finish();
            r
        });
        drop(senders);
        let mut written = BTreeMap::new();
        let mut writer_err = None;
        for h in writers {
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
    let (reports, tops): (Vec<SourceReport>, Vec<Option<(i64, i64)>>) = reports.into_iter().unzip();
    if let Some(load) = load {
        if cancel.is_cancelled() {
            load.abort("cancelled");
            return Err(Error::Cancelled);
        }
        let marks = if opts.window.is_unbounded() { final_marks(sources, &tops, &reports, plan.children) } else { Vec::new() };
        load.commit(marks)?;
    }
    Ok(StreamOutcome { sources: reports, written, stages: timers.report() })
}

/// One writer worker: writes what its channel brings into its part of the load (or, in a dry
/// run, only counts it). Returns the rows written per ServerID.
/// Names for the metrics: the sources' labels, in rank order, and the child tables'.
#[derive(Clone, Copy)]
struct Labels<'a> {
    sources: &'a [String],
    tables: &'a [String],
}

fn write_worker(load: Option<&dyn Load>, w: usize, rx: Receiver<WriterMsg>, timers: &Timers, labels: Labels<'_>, cancel: &Cancel) -> Result<BTreeMap<i32, u64>> {
    let mut written = BTreeMap::new();
    let Some(load) = load else {
        for msg in rx {
            count_by_server(&msg.rows, &mut written);
        }
        return Ok(written);
    };
    let mut writer = load.writer(w)?;
    loop {
        let waited = Instant::now();
        let Ok(msg) = rx.recv() else { break };
        Timers::add(&timers.recv_wait, waited);
        metrics::queue_waited("writers", waited.elapsed());
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let writing = Instant::now();
        let unit = WriteUnit { source: msg.source, rows: &msg.rows, last_run_id: msg.mark.map(|m| m.0), last_snapshot_ms: msg.mark.map(|m| m.1), children: &msg.children, completing: &msg.completing };
        if let Err(e) = writer.write(unit) {
            cancel.cancel();
            return Err(e);
        }
        Timers::add(&timers.write, writing);
        count_by_server(&msg.rows, &mut written);
        let source = labels.sources.get(msg.source).map_or("?", String::as_str);
        metrics::rows(source, "written", msg.rows.num_rows() as u64, msg.rows.get_array_memory_size() as u64);
        for (t, rows) in labels.tables.iter().zip(&msg.children) {
            metrics::metrics().child_rows.get_or_create(&metrics::SourceTable { source: source.to_string(), table: t.clone() }).inc_by(rows.num_rows() as u64);
        }
        metrics::metrics().units_written.inc();
        metrics::metrics().last_unit_written.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }
    let closing = Instant::now();
    let r = writer.finish();
    Timers::add(&timers.write, closing);
    r.map(|()| written)
}

/// Adds a target batch's rows to `counts`, per ServerID (rows of one server mostly come in
/// runs, so this is one map update per run).
fn count_by_server(rows: &RecordBatch, counts: &mut BTreeMap<i32, u64>) {
    let ids = rows.column(tgt::SERVER_ID).as_primitive::<Int32Type>().values();
    let mut rest = &ids[..];
    while let Some(&id) = rest.first() {
        let run = rest.iter().take_while(|&&v| v == id).count();
        *counts.entry(id).or_insert(0) += run as u64;
        rest = &rest[run..];
    }
}

/// What a reader of the stream pass shares with the others.
struct Reader<'a> {
    opts: &'a CopyOptions,
    map: &'a ServerIdMap,
    hot: &'a HashSet<Day>,
    winners: &'a Mutex<Winners>,
    children: &'a [ChildTable],
    timers: &'a Timers,
    cancel: &'a Cancel,
}

impl Reader<'_> {
    /// Streams one source after `after` to its writer: each batch remapped, its hot rows
    /// decided against the survivors, the rest kept. Returns the source's counts and its
    /// highest (PerfSnapshotRunID, SnapshotUTC) read, the watermark the commit records.
    fn source(&self, rank: usize, source: &dyn Source, after: Option<i64>, tx: &Sender<WriterMsg>, progress: impl Fn(u64)) -> Result<(SourceReport, Option<(i64, i64)>)> {
        let (opts, timers, cancel) = (self.opts, self.timers, self.cancel);
        let value_cols = source_value_columns();
        let mut rep = SourceReport::default();
        // Child rows are read run range by run range, each range right after its runs' batch:
        // the ranges follow each other, so every child row of the source is read once, and
        // one whose run is in no batch is an orphan. Units carry their runs' children, so
        // they hold fewer runs.
        let mut kids = if self.children.is_empty() { None } else { source.child_reader(self.children)? };
        rep.children = self.children.iter().map(|t| ChildReport { table: t.name.to_string(), ..Default::default() }).collect();
        let mut below = match (after, source.id_range()) {
            (Some(a), Some((lo, _))) => a.max(lo - 1),
            (Some(a), None) => a,
            (None, Some((lo, _))) => lo - 1,
            (None, None) => i64::MIN,
        };
        let batch_rows = if kids.is_some() { opts.batch_rows.min(crate::defaults::RUNS_PER_UNIT_WITH_CHILDREN) } else { opts.batch_rows };
        let req = ReadRequest { projection: Projection::Full, batch_rows, after_run_id: after, time_ranges: None };
        let mut top: Option<(i64, i64)> = None;
        // Set once a row of this source is dropped for another source's survivor: from then on
        // no batch may move the source's watermark (that survivor may commit later, on another
        // writer); the final one is recorded at commit.
        let mut frozen = false;
        let mut sizer = UnitSizer::default();
        let mut batches = source.read(&req)?;
        loop {
            let reading = Instant::now();
            let Some(batch) = batches.next() else { break };
            Timers::add(&timers.read, reading);
            cancel.check()?;
            let batch = batch?;
            let mut transforming = Instant::now();
            timers.batches.fetch_add(1, Ordering::Relaxed);
            timers.bytes.fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
            metrics::rows(source.label(), "read", batch.num_rows() as u64, batch.get_array_memory_size() as u64);
            let (dups_before, conflicts_before) = (rep.counts.duplicates_dropped, rep.counts.conflicts);
            let run = batch.column(src::RUN_ID).as_primitive::<Int64Type>();
            let ts = snapshot_ms(&batch, src::SNAPSHOT_UTC);
            let SourceRows { ids, mut keep, hot } = SourceRows::of(&batch, after, &opts.window, self.map, self.hot)?;
            let mut complete = vec![false; if kids.is_some() { batch.num_rows() } else { 0 }];
            if !hot.is_empty() {
                let hashes = row_hashes(&batch, &value_cols, &hot);
                let mut w = self.winners.lock().map_err(|_| Error::Internal("dedupe state poisoned".into()))?;
                for (&r, h) in hot.iter().zip(hashes) {
                    match w.decide(ids.value(r), ts.value(r), rank as u32 + 1, run.value(r), h) {
                        Verdict::Keep => {}
                        Verdict::Drop { in_target, other_source, conflict, complete: completes } => {
                            keep[r] = false;
                            if completes {
                                complete[r] = true;
                            }
                            frozen |= other_source;
                            rep.counts.duplicates_dropped += 1;
                            rep.counts.already_in_target += in_target as u64;
                            rep.counts.conflicts += conflict as u64;
                        }
                    }
                }
            }
            let m = metrics::metrics();
            let label = metrics::SourceLabel { source: source.label().to_string() };
            m.duplicates.get_or_create(&label).inc_by(rep.counts.duplicates_dropped - dups_before);
            m.conflicts.get_or_create(&label).inc_by(rep.counts.conflicts - conflicts_before);
            // A batch with child tables goes out in parts of consecutive runs whose child rows
            // stay near a unit's byte bound (wide rows make few runs a unit); each part's
            // children are read right before it is sent. Parts need the batch in ID order
            // (so the ID ranges of parts do not overlap); one that is not goes out whole.
            let n = batch.num_rows();
            let parts = kids.is_some() && run.values().windows(2).all(|w| w[0] < w[1]);
            let mut start = 0;
            loop {
                let len = if parts { sizer.next_len(n - start) } else { n - start };
                let end = start + len;
                for (&id, &t) in run.values()[start..end].iter().zip(&ts.values()[start..end]) {
                    if top.is_none_or(|(m, _)| id > m) && after.is_none_or(|a| id > a) {
                        top = Some((id, t));
                    }
                }
                let part_ids = ids.slice(start, len);
                let (mut children, mut completing) = (Vec::with_capacity(self.children.len()), Vec::with_capacity(self.children.len()));
                if let Some(k) = kids.as_mut() {
                    let part_runs = &run.values()[start..end];
                    let upto = part_runs.iter().copied().max().unwrap_or(below).max(below);
                    let runs = Runs::new(part_runs, &ts.values()[start..end], &part_ids, &keep[start..end], &complete[start..end]);
                    let batch_runs = BatchRuns { ids: part_runs, snapshot_ms: &ts.values()[start..end] };
                    let mut bytes = 0;
                    for (i, t) in self.children.iter().enumerate() {
                        let (rows, held, c) = children::keyed(t, &k.read(i, below, upto, &batch_runs)?, &runs)?;
                        rep.children[i].add(&c);
                        bytes += logical_bytes(&rows) + logical_bytes(&held);
                        children.push(rows);
                        completing.push(held);
                    }
                    sizer.saw(len, bytes);
                    below = upto;
                }
                let out = to_target(&batch.slice(start, len), part_ids, &BooleanArray::from(keep[start..end].to_vec()))?;
                rep.counts.rows_written += out.num_rows() as u64;
                let msg = WriterMsg { source: rank, rows: out, mark: if frozen { None } else { top }, children, completing };
                Timers::add(&timers.transform, transforming);
                let sending = Instant::now();
                if tx.send(msg).is_err() {
                    cancel.cancel();
                    return Err(Error::Cancelled);
                }
                Timers::add(&timers.send_wait, sending);
                timers.units.fetch_add(1, Ordering::Relaxed);
                metrics::queue_waited("readers", sending.elapsed());
                progress(len as u64);
                transforming = Instant::now();
                start = end;
                if start >= n {
                    break;
                }
            }
        }
        // Child rows above the last run read reference no run of the source.
        if let Some(k) = kids.as_mut() {
            let upto = source.id_range().map_or(i64::MAX, |(_, hi)| hi);
            if below < upto {
                for i in 0..self.children.len() {
                    let n = k.read(i, below, upto, &BatchRuns { ids: &[], snapshot_ms: &[] })?.num_rows() as u64;
                    rep.children[i].add(&ChildCounts { rows_read: n, orphans: n, ..Default::default() });
                }
            }
        }
        Ok((rep, top))
    }
}

/// How many runs the next unit of a source with child tables takes: as many as keep the unit's
/// child rows near [`crate::defaults::child_bytes_per_unit`], judged by the bytes per run of
/// the source's units so far (quick to rise, slow to fall), at most a whole batch.
#[derive(Default)]
struct UnitSizer {
    bytes_per_run: Option<f64>,
}

impl UnitSizer {
    /// Runs in the next unit, of `remaining` (at least 1 when any remain).
    fn next_len(&self, remaining: usize) -> usize {
        if remaining == 0 {
            return 0;
        }
        let n = match self.bytes_per_run {
            None => crate::defaults::FIRST_UNIT_RUNS_WITH_CHILDREN,
            Some(b) if b >= 1.0 => (crate::defaults::child_bytes_per_unit() as f64 / b) as usize,
            Some(_) => remaining,
        };
        n.clamp(1, remaining)
    }

    /// A unit of `runs` runs had `bytes` of child rows.
    fn saw(&mut self, runs: usize, bytes: usize) {
        if runs == 0 {
            return;
        }
        let b = bytes as f64 / runs as f64;
        self.bytes_per_run = Some(match self.bytes_per_run {
            Some(old) if b < old => (old + b) / 2.0,
            _ => b,
        });
    }
}

/// The bytes of `rows`' values (a slice counts only its part of shared buffers).
fn logical_bytes(rows: &RecordBatch) -> usize {
    rows.columns().iter().map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size())).sum()
}

/// The watermark of each `--from` after a whole copy: the highest row read of its parts,
/// with the rows they wrote.
fn final_marks(sources: &[Box<dyn Source>], tops: &[Option<(i64, i64)>], reports: &[SourceReport], children: &[ChildTable]) -> Vec<FinalMark> {
    let mut by_group: BTreeMap<&str, FinalMark> = BTreeMap::new();
    for (rank, s) in sources.iter().enumerate() {
        let m = by_group.entry(s.group()).or_insert_with(|| FinalMark {
            sources: Vec::new(),
            watermark: Watermark { source: s.identity().to_string(), last_run_id: i64::MIN, last_snapshot_ms: None, facts: s.facts().cloned(), child_tables: children.iter().map(|t| t.name.to_string()).collect(), ..Default::default() },
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

#[cfg(test)]
mod tests {
    use super::UnitSizer;
    use crate::defaults::{child_bytes_per_unit, FIRST_UNIT_RUNS_WITH_CHILDREN};

    #[test]
    fn units_take_as_many_runs_as_their_child_bytes_allow() {
        let budget = child_bytes_per_unit();
        let mut s = UnitSizer::default();
        assert_eq!(s.next_len(0), 0, "nothing left, nothing taken");
        assert_eq!(s.next_len(256), FIRST_UNIT_RUNS_WITH_CHILDREN);
        assert_eq!(s.next_len(3), 3);
        // Wide runs: a unit takes what fits the budget, at least one run.
        s.saw(16, 16 * (budget / 10));
        assert_eq!(s.next_len(256), 10);
        s.saw(1, 4 * budget);
        assert_eq!(s.next_len(256), 1, "one run over the budget rises at once");
        // Narrow runs: the estimate falls by halves, then the whole batch fits.
        s.saw(1, 0);
        assert_eq!(s.next_len(256), 1);
        for _ in 0..20 {
            s.saw(10, 10);
        }
        assert_eq!(s.next_len(256), 256);
        // No child rows at all: whole batches.
        let mut empty = UnitSizer::default();
        empty.saw(16, 0);
        assert_eq!(empty.next_len(256), 256);
    }
}
