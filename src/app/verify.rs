//! `perfcopy verify`: every source key in the target, once; exit 3 naming what is not.

use crate::cli::VerifyArgs;
use crate::config;
use crate::error::Result;
use crate::pipeline::progress::Progress;
use crate::pipeline::verify::{run_verify, VerifyReport};
use crate::pipeline::verify_values::{DayDiff, ValuesReport};
use crate::pipeline::Cancel;

use crate::pipeline::human::{grouped, grouped_within, short, wrap};

use super::{print_json, EXIT_VERIFY_FAILED};

pub(super) fn run(a: &VerifyArgs, cancel: &Cancel) -> Result<i32> {
    let plan = config::verify_plan(a)?;
    let sources = plan.sources.open_sources()?;
    let target = plan.open_target();
    let progress = Progress::new(a.src.progress);
    let report = run_verify(&sources, target.as_ref(), &plan.verify, &progress, cancel)?;
    print_verify_report(&report);
    if a.src.json {
        print_json(&report)?;
    }
    Ok(if report.ok { 0 } else { EXIT_VERIFY_FAILED })
}

/// The human report on stderr: a block per target server (counts, then its SnapshotUTC
/// ranges), child tables per table and server, and the verdict; every line within 80 columns.
fn print_verify_report(r: &VerifyReport) {
    for line in verify_report_lines(r) {
        eprintln!("{line}");
    }
}

fn verify_report_lines(r: &VerifyReport) -> Vec<String> {
    const NAMES: usize = 26;
    let mut out = vec![String::new(), format!("{:>11}  {:<NAMES$} {:>11} {:>11} {:>9} {:>6}", "ServerID", "names", "source keys", "target rows", "missing", "dups")];
    let range = |first: &Option<String>, last: &Option<String>| format!("{} .. {}", first.as_deref().unwrap_or("-"), last.as_deref().unwrap_or("-"));
    for s in &r.servers {
        let n = |v: u64, w: usize| grouped_within(v, w);
        out.push(format!(
            "{:>11}  {} {:>11} {:>11} {:>9} {:>6}",
            s.server_id,
            crate::pipeline::human::fit(&s.server_names.join(" / "), NAMES),
            n(s.source_keys, 11),
            n(s.target_rows, 11),
            n(s.missing, 9),
            n(s.target_duplicates, 6)
        ));
        let (source, target) = (range(&s.source_first_utc, &s.source_last_utc), range(&s.target_first_utc, &s.target_last_utc));
        if source == target {
            out.push(format!("    source and target: {source}"));
        } else {
            out.push(format!("    source: {source}"));
            out.push(format!("    target: {target}"));
        }
        if !s.missing_examples.is_empty() {
            out.push(wrap(&format!("    missing, e.g.: {}", s.missing_examples.join(", ")), 6));
        }
    }
    if !r.children.is_empty() {
        out.push(String::new());
        out.push(format!("{:<21} {:>11} {:>10} {:>10} {:>7} {:>5} {:>9}", "child table", "ServerID", "source", "target", "missing", "dups", "differing"));
        for c in &r.children {
            out.push(format!(
                "{} {:>11} {:>10} {:>10} {:>7} {:>5} {:>9}",
                crate::pipeline::human::fit(&c.table, 21),
                c.server_id,
                grouped_within(c.source_rows, 10),
                grouped_within(c.target_rows, 10),
                grouped_within(c.missing, 7),
                grouped_within(c.duplicates, 5),
                grouped_within(c.differing_runs, 9)
            ));
        }
    }
    for (t, n) in &r.target_child_orphans {
        out.push(wrap(&format!("dbo.{t}: {} rows in the target reference runs it does not hold", grouped(*n)), 4));
    }
    for t in &r.child_tables_not_in_target {
        out.push(wrap(&format!("dbo.{t}: not in {} (not compared)", r.target), 4));
    }
    if let Some(v) = &r.values {
        out.extend(values_lines(v));
    }
    if !r.unknown_servers.is_empty() {
        out.push(wrap(&format!("server names the stage does not know (all their rows are missing): {}", r.unknown_servers.join(", ")), 4));
    }
    let verdict = if r.ok {
        format!("verify: OK, every source row is in {}", r.target)
    } else {
        format!("verify: FAILED, {} is missing rows, holds duplicates or differs from the sources", r.target)
    };
    out.push(wrap(&verdict, 4));
    out
}

/// `--values`: what was compared, then each differing (server, day), the first 20 of them.
fn values_lines(v: &ValuesReport) -> Vec<String> {
    const SHOWN: usize = 20;
    let mut out = vec![String::new()];
    out.push(wrap(&format!("values: {} server days of {} columns compared, {} differ", grouped(v.days_compared), v.columns.len(), grouped(v.differing.len() as u64)), 4));
    for d in v.differing.iter().take(SHOWN) {
        out.push(day_line("", d, v.columns.len()));
    }
    if v.differing.len() > SHOWN {
        out.push(format!("    ... and {} more server days (--json lists them all)", grouped((v.differing.len() - SHOWN) as u64)));
    }
    if v.child_days_compared > 0 {
        out.push(wrap(&format!("child values: {} table server days compared, {} differ", grouped(v.child_days_compared), grouped(v.children_differing.len() as u64)), 4));
    }
    for c in v.children_differing.iter().take(SHOWN) {
        out.push(day_line(&format!("{}, ", c.table), &c.day, usize::MAX));
    }
    if v.children_differing.len() > SHOWN {
        out.push(format!("    ... and {} more table server days (--json lists them all)", grouped((v.children_differing.len() - SHOWN) as u64)));
    }
    out
}

/// One differing (server, day): counts, then its columns (`every column` when all of the
/// `all` compared differ).
fn day_line(prefix: &str, d: &DayDiff, all: usize) -> String {
    let rows = if d.source_rows == d.target_rows { format!("{} rows", grouped(d.source_rows)) } else { format!("{} rows in the sources, {} in the target", grouped(d.source_rows), grouped(d.target_rows)) };
    let cols = if d.columns.len() == all { "every column".to_string() } else { d.columns.join(", ") };
    wrap(&format!("    {prefix}ServerID {} ({}), {}: {rows}; differs in {cols}", d.server_id, short(&d.server_name, 30), d.day), 6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::human::COLUMNS;
    use crate::pipeline::verify::{ChildCheck, ServerCheck};
    use crate::pipeline::verify_values::ChildDayDiff;

    #[test]
    fn every_line_of_the_verify_report_fits_80_columns() {
        let ts = |d: u32| Some(format!("2026-01-{d:02}T00:00:00.000Z"));
        let server = |id: i32, same: bool| ServerCheck {
            server_id: id,
            server_names: vec!["SQL-PRODUCTION-EAST-01".into(), "SQL-PRODUCTION-EAST-01-OLD".into()],
            source_keys: 9_999_999_999,
            source_first_utc: ts(1),
            source_last_utc: ts(31),
            target_rows: 12_345_678_901,
            target_first_utc: ts(1),
            target_last_utc: if same { ts(31) } else { ts(30) },
            missing: 123_456_789,
            target_duplicates: 1_000_000,
            missing_examples: (1..=10).map(|d| ts(d).unwrap_or_default()).collect(),
            ok: false,
        };
        let report = VerifyReport {
            target: format!("/data/{}/stage", "monitoring".repeat(6)),
            ok: false,
            source_rows: 1,
            unknown_servers: (0..30).map(|i| format!("SQL{i:03}")).collect(),
            servers: vec![server(i32::MAX, true), server(i32::MIN, false)],
            children: vec![ChildCheck { table: "PerfSnapshotWaitStats".into(), server_id: i32::MIN, source_rows: 99_999_999_999, target_rows: 1, missing: 9_999_999, duplicates: 99_999, differing_runs: 999_999_999, ok: false }],
            child_tables_not_in_target: vec!["PerfSnapshotWorkload".into()],
            target_child_orphans: [("PerfSnapshotDB".to_string(), u64::MAX)].into(),
            values: Some(ValuesReport {
                days_compared: u64::MAX,
                target_side: "server",
                child_days_compared: 3,
                children_differing: vec![ChildDayDiff {
                    table: "PerfSnapshotQueryStats".into(),
                    day: DayDiff { server_id: i32::MAX, server_name: "SQL-PRODUCTION-EAST-01".into(), day: "2026-01-30".into(), source_rows: 1, target_rows: 1, columns: vec!["QueryPlanHash".into(); 9] },
                }],
                columns: crate::schema::target_columns().iter().map(|c| c.name.to_string()).collect(),
                differing: (0..25)
                    .map(|i| DayDiff {
                        server_id: i32::MIN + i,
                        server_name: "SQL-PRODUCTION-EAST-01\\INSTANCE-WITH-A-LONG-NAME".into(),
                        day: "2026-01-31".into(),
                        source_rows: 99_999_999,
                        target_rows: 1,
                        columns: crate::schema::target_columns().iter().map(|c| c.name.to_string()).collect(),
                    })
                    .collect(),
            }),
            elapsed_seconds: 1.0,
        };
        let lines = verify_report_lines(&report);
        for l in lines.iter().flat_map(|l| l.lines()) {
            assert!(l.chars().count() <= COLUMNS, "{} columns: {l}", l.chars().count());
        }
        let text = lines.join("\n");
        assert!(text.contains("source and target: 2026-01-01T00:00:00.000Z .. 2026-01-31T00:00:00.000Z"), "{text}");
        assert!(text.contains("target: 2026-01-01T00:00:00.000Z .. 2026-01-30T00:00:00.000Z"), "{text}");
        assert!(text.contains("2026-01-10T00:00:00.000Z") && text.contains("verify: FAILED"), "{text}");
        assert!(text.contains("ServerID -2147483648 (") && text.contains("2026-01-31:") && text.contains("99,999,999 rows in the sources, 1 in the target") && text.contains("differs in every column"), "{text}");
        assert!(text.contains("and 5 more server days"), "{text}");
        assert!(text.contains("PerfSnapshotQueryStats, ServerID 2147483647 (SQL-PRODUCTION-EAST-01),") && text.contains("2026-01-30: 1 rows; differs in QueryPlanHash"), "{text}");
    }
}
