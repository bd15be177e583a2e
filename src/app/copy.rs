//! `perfcopy copy`: sources into a stage or a MonitoringDB, and the per-source report.

use crate::cli::CopyArgs;
use crate::config;
use crate::error::{Error, Result};
use crate::pipeline::copy::{run_copy, CopyReport};
use crate::pipeline::progress::Progress;
use crate::pipeline::Cancel;

use super::{print_json, short};

pub(super) fn run(a: &CopyArgs, cancel: &Cancel) -> Result<CopyReport> {
    let plan = config::copy_plan(a)?;
    let sources = plan.sources.open_sources()?;
    let target = plan.open_target();
    let progress = Progress::new(a.src.progress);
    let report = run_copy(&sources, target.as_ref(), &plan.copy, &progress, cancel)?;
    print_copy_report(&report);
    if a.src.json {
        print_json(&report)?;
    }
    if a.dry_run && !report.unknown_servers.is_empty() && !plan.copy.register_servers {
        return Err(Error::UnknownServers { names: report.unknown_servers.clone() });
    }
    Ok(report)
}

fn print_copy_report(r: &CopyReport) {
    let verb = if r.dry_run { "would write" } else { "written" };
    eprintln!(
        "\n{:<44} {:>11} {:>9} {:>10} {:>9} {:>11}",
        "source", "read", "filtered", "duplicate", "conflict", verb
    );
    for s in &r.sources {
        eprintln!(
            "{:<44} {:>11} {:>9} {:>10} {:>9} {:>11}",
            short(&s.source, 44),
            s.counts.rows_read,
            s.counts.rows_filtered,
            s.counts.duplicates_dropped,
            s.counts.conflicts,
            s.counts.rows_written
        );
        if r.dry_run {
            for n in &s.servers {
                eprintln!("    {} -> ServerID {}: {} rows, {} .. {}", n.server_name, n.server_id, n.rows, n.first_snapshot_utc, n.last_snapshot_utc);
            }
        }
    }
    let t = &r.totals;
    eprintln!(
        "{:<44} {:>11} {:>9} {:>10} {:>9} {:>11}",
        "total", t.rows_read, t.rows_filtered, t.duplicates_dropped, t.conflicts, t.rows_written
    );
    for s in &r.sources {
        eprintln!("{}: {}", short(&s.source, 44), s.watermark.describe());
    }
    if !r.child_tables.is_empty() {
        eprintln!("\n{:<44} {:>11} {:>11} {:>9} {:>11}", "child rows of source, table", "read", "dropped", "orphans", verb);
        for s in &r.sources {
            for c in &s.children {
                eprintln!("{:<44} {:>11} {:>11} {:>9} {:>11}", short(&format!("{} {}", s.source, c.table), 44), c.rows_read, c.dropped_with_run, c.orphans, c.rows_written);
            }
        }
    }
    for t in &r.child_tables_not_in_target {
        eprintln!("{}: has no table dbo.{t}; its rows are not copied (--create-missing-tables creates it)", r.target);
    }
    if t.already_in_target > 0 {
        eprintln!("{} of the duplicates were already in the target", t.already_in_target);
    }
    for s in &r.servers {
        eprintln!("  ServerID {:>4} {:<40} {:>11} rows {verb}", s.server_id, s.server_names.join(" / "), s.rows_written);
    }
    if !r.unknown_servers.is_empty() {
        eprintln!("unknown servers (not in --server-map or the stage): {}", r.unknown_servers.join(", "));
    }
    let rate = t.rows_read as f64 / r.elapsed_seconds.max(1e-9);
    eprintln!("{} rows in {:.1} s ({:.0} rows/s); dedupe state: {} hot days, {} keys", t.rows_read, r.elapsed_seconds, rate, r.dedupe_hot_days, r.dedupe_hot_keys);
}

