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
//!
//! One file per pass ([`keys`], [`hot`], [`stream`]); [`report`] is what a copy reports.

mod children;
mod hot;
mod keys;
mod report;
mod stream;

use std::time::Instant;

use crate::error::Result;
use crate::pipeline::progress::Progress;
use crate::pipeline::watermark::{self, WatermarkReport, WatermarkStatus};
use crate::pipeline::{for_each_source, Cancel};
use crate::sink::{LockedSource, Target};
use crate::source::Source;
use crate::transform::remap::ServerIdMap;
use crate::transform::Window;

pub use children::{plan as plan_child_tables, ChildOptions};
pub use report::{ChildReport, iso, peak_rss_bytes, CopyReport, NameReport, RowCounts, ServerReport, SourceReport, StageTimes, Totals};

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
    /// Which child tables follow their runs.
    pub children: ChildOptions,
}

/// Runs a copy. Sources' order is their rank for the survivor rule.
pub fn run_copy(sources: &[Box<dyn Source>], target: &dyn Target, opts: &CopyOptions, progress: &Progress, cancel: &Cancel) -> Result<CopyReport> {
    let started = Instant::now();
    // Each source is copied by one run at a time; other runs with other sources go on.
    let locked: Vec<LockedSource> = sources.iter().map(|s| LockedSource { identity: s.identity().to_string(), label: s.label().to_string() }).collect();
    let _sources_lock = if opts.dry_run { None } else { Some(target.lock_sources(&locked)?) };
    let registry = target.known_servers()?;
    let mut map = match &opts.server_map {
        Some(m) => ServerIdMap::layered(m, &registry),
        None => registry,
    };
    let mut report = CopyReport { dry_run: opts.dry_run, target: target.label().to_string(), ..Default::default() };

    // Child tables follow their runs: the ones the sources and the target both have (checked
    // before anything is written).
    let (child_tables, skipped) = children::plan(sources, target, &opts.children, opts.dry_run, progress)?;
    report.child_tables = child_tables.iter().map(|t| t.name.to_string()).collect();
    report.child_tables_not_in_target = skipped;

    // A watermark is used only when it is shown to belong to the source as it is now.
    let names_of_children: Vec<&str> = child_tables.iter().map(|t| t.name).collect();
    let checks = check_watermarks(sources, target, &map, &names_of_children, opts, progress, cancel)?;

    // Pass 1: the keys of every row to copy; every server name gets its target ServerID.
    let (mut scans, names) = keys::scan(sources, &checks, opts, progress, cancel)?;
    let group_ids = keys::resolve_names(&names, &mut map, target, opts, progress, &mut report)?;
    // The servers' rows are this run's until it ends: a run copying other sources of them
    // waits here, before either reads the target's keys.
    let _servers_lock = if opts.dry_run { None } else { Some(target.lock_servers(&group_ids, &|m: &str| progress.message(m))?) };

    // Where sources and the target overlap, rows can collide: pass 2 picks the survivor of
    // every key there.
    let hot = keys::hot_days(&mut scans, &group_ids, target, cancel)?;
    report.dedupe_hot_days = hot.len();
    let winners = hot::winners(sources, target, opts, &map, &hot, &scans, !child_tables.is_empty(), cancel)?;
    report.dedupe_hot_keys = winners.len();

    // Pass 3: stream everything through; the target commits at the end.
    let plan = stream::Plan { map: &map, hot: &hot, winners, scans: &scans, children: &child_tables };
    let outcome = stream::run(sources, target, opts, plan, progress, cancel)?;

    let labels = sources.iter().map(|s| s.label().to_string()).collect();
    Ok(report::assemble(report, labels, &scans, &checks, &names, |g| group_ids[g as usize], outcome, started))
}

/// Checks every source's recorded watermark (see [`watermark::check`]); says why one was set
/// aside.
fn check_watermarks(sources: &[Box<dyn Source>], target: &dyn Target, map: &ServerIdMap, child_tables: &[&str], opts: &CopyOptions, progress: &Progress, cancel: &Cancel) -> Result<Vec<WatermarkReport>> {
    let checks = for_each_source(sources, opts.readers, cancel, |_, source| watermark::check(source, target, map, child_tables, opts.rescan))?;
    for (s, c) in sources.iter().zip(&checks) {
        if c.status == WatermarkStatus::SetAside {
            progress.message(&format!("{}: {}", s.label(), c.describe()));
        }
    }
    Ok(checks)
}
