//! `perfcopy copy`: sources into a stage or a MonitoringDB, and the per-source report.

use crate::cli::CopyArgs;
use crate::config;
use crate::error::{Error, Result};
use std::time::Duration;

use crate::pipeline::copy::{run_copy, CopyReport, RowCounts};
use crate::pipeline::human::{count, fit, grouped, grouped_within, rows_in, wrap, COLUMNS};
use crate::pipeline::progress::Progress;
use crate::pipeline::Cancel;

use super::{print_json, short};

pub(super) fn run(a: &CopyArgs, cancel: &Cancel) -> Result<CopyReport> {
    let plan = config::copy_plan(a)?;
    if let Some(addr) = &a.metrics_addr {
        let at = crate::pipeline::metrics::serve(addr)?;
        // Always said (also with --progress off): monitoring needs the port.
        eprintln!("metrics: http://{at}/metrics");
    }
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

/// Width of the name column of the report's tables (sources are cut from the left).
const NAME: usize = 20;
/// Width of a count column.
const N: usize = 11;

/// The human summary on stderr: per source and in total, child rows per source and table,
/// rows per target server; every line within 80 columns.
fn print_copy_report(r: &CopyReport) {
    for line in copy_report_lines(r) {
        eprintln!("{line}");
    }
}

fn copy_report_lines(r: &CopyReport) -> Vec<String> {
    let verb = if r.dry_run { "to write" } else { "written" };
    let mut out = Vec::new();
    let row = |name: &str, c: &RowCounts| {
        let n = [c.rows_read, c.rows_filtered, c.duplicates_dropped, c.conflicts, c.rows_written].map(|n| grouped_within(n, N));
        format!("{} {:>N$} {:>N$} {:>N$} {:>N$} {:>N$}", fit(name, NAME), n[0], n[1], n[2], n[3], n[4])
    };
    out.push(String::new());
    out.push(format!("{:<NAME$} {:>N$} {:>N$} {:>N$} {:>N$} {:>N$}", "source", "read", "filtered", "duplicate", "conflict", verb));
    for s in &r.sources {
        out.push(row(&s.source, &s.counts));
        if r.dry_run {
            for n in &s.servers {
                out.push(wrap(&format!("    {} -> ServerID {}: {} rows", n.server_name, n.server_id, grouped(n.rows)), 6));
                out.push(format!("      {} .. {}", n.first_snapshot_utc, n.last_snapshot_utc));
            }
        }
    }
    out.push(row("total", &r.totals));
    for s in &r.sources {
        out.push(wrap(&format!("{}: {}", short(&s.source, NAME), s.watermark.describe()), 4));
    }
    if r.sources.iter().any(|s| !s.children.is_empty()) {
        const TABLE: usize = 34;
        out.push(String::new());
        out.push(format!("{:<TABLE$} {:>10} {:>10} {:>10} {:>10}", "child rows, per source and table", "read", "dropped", "orphans", verb));
        for s in r.sources.iter().filter(|s| !s.children.is_empty()) {
            out.push(short(&s.source, COLUMNS));
            for c in &s.children {
                let n = [c.rows_read, c.dropped_with_run, c.orphans, c.rows_written].map(|n| grouped_within(n, 10));
                out.push(format!("  {} {:>10} {:>10} {:>10} {:>10}", fit(&c.table, TABLE - 2), n[0], n[1], n[2], n[3]));
            }
        }
    }
    for t in &r.child_tables_not_in_target {
        out.push(wrap(&format!("{}: has no table dbo.{t}; its rows are not copied (--create-missing-tables creates it)", r.target), 4));
    }
    let t = &r.totals;
    if t.already_in_target > 0 {
        out.push(format!("{} of the duplicates were already in the target", grouped(t.already_in_target)));
    }
    if !r.servers.is_empty() {
        const NAMES: usize = 53;
        out.push(String::new());
        out.push(format!("{:>11}  {:<NAMES$} {:>12}", "ServerID", "server names", verb));
        for s in &r.servers {
            out.push(format!("{:>11}  {} {:>12}", s.server_id, fit(&s.server_names.join(" / "), NAMES), grouped_within(s.rows_written, 12)));
        }
    }
    if !r.unknown_servers.is_empty() {
        out.push(wrap(&format!("unknown servers (not in --server-map or the stage): {}", r.unknown_servers.join(", ")), 4));
    }
    let elapsed = Duration::try_from_secs_f64(r.elapsed_seconds).unwrap_or_default();
    let line = format!("read {}; dedupe state: {} hot days, {} keys", rows_in(t.rows_read, elapsed), grouped(r.dedupe_hot_days as u64), count(r.dedupe_hot_keys as u64));
    out.push(wrap(&line, 4));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::copy::{ChildReport, NameReport, ServerReport, SourceReport};

    /// A report with every part at its widest: long labels, names, counts and reasons.
    fn wide_report(dry_run: bool) -> CopyReport {
        let big = RowCounts { rows_read: 9_999_999_999, rows_filtered: 9_999_999, duplicates_dropped: 999_999_999, already_in_target: 5, conflicts: 99_999_999, rows_written: 9_999_999_999 };
        let long = format!("/data/{}/SQL07.parquet", "exports".repeat(12));
        let mut source = SourceReport { source: long.clone(), counts: big.clone(), ..Default::default() };
        source.servers.push(NameReport { server_name: "S".repeat(128), server_id: i32::MAX, rows: u64::MAX, first_snapshot_utc: "2026-01-01T00:00:00.000Z".into(), last_snapshot_utc: "2026-12-31T23:59:59.997Z".into() });
        source.children.push(ChildReport { table: "PerfSnapshotWaitStats".into(), rows_read: 9_999_999_999, rows_written: 9_999_999_999, dropped_with_run: 1, orphans: 2, offered_for_held_runs: 0 });
        CopyReport {
            dry_run,
            target: long.clone(),
            sources: vec![source],
            servers: vec![ServerReport { server_id: i32::MAX, server_names: vec!["S".repeat(100), "T".repeat(100)], rows_written: 9_999_999_999 }],
            unknown_servers: (0..30).map(|i| format!("SQL{i:03}")).collect(),
            child_tables_not_in_target: vec!["PerfSnapshotWorkload".into()],
            totals: big,
            dedupe_hot_days: 1234,
            dedupe_hot_keys: 123_456_789,
            elapsed_seconds: 3723.5,
            ..Default::default()
        }
    }

    #[test]
    fn every_line_of_the_copy_report_fits_80_columns() {
        for dry_run in [false, true] {
            let lines = copy_report_lines(&wide_report(dry_run));
            for l in lines.iter().flat_map(|l| l.lines()) {
                // A word longer than a line (the 100-character path) may stand alone.
                let alone = !l.trim().contains(' ');
                assert!(l.chars().count() <= COLUMNS || alone, "{} columns: {l}", l.chars().count());
            }
            let text = lines.join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(text.contains("total 9999999999 9,999,999 999,999,999 99,999,999 9999999999"), "{text}");
            assert!(text.contains("PerfSnapshotWaitStats 9999999999 1 2 9999999999"), "{text}");
            assert!(text.contains("read 10.0G rows in 1h 02m (2.69M rows/s); dedupe state: 1,234 hot days, 123M keys"), "{text}");
        }
    }
}
