//! `perfcopy verify`: every source key in the target, once; exit 3 naming what is not.

use crate::cli::VerifyArgs;
use crate::config;
use crate::error::Result;
use crate::pipeline::progress::Progress;
use crate::pipeline::verify::{run_verify, VerifyReport};
use crate::pipeline::Cancel;

use super::{print_json, short, EXIT_VERIFY_FAILED};

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

fn print_verify_report(r: &VerifyReport) {
    eprintln!("\n{:>8} {:<36} {:>11} {:>11} {:>9} {:>6}  source range / target range", "ServerID", "names", "source keys", "target rows", "missing", "dups");
    for s in &r.servers {
        eprintln!(
            "{:>8} {:<36} {:>11} {:>11} {:>9} {:>6}  {} .. {} / {} .. {}",
            s.server_id,
            short(&s.server_names.join(" / "), 36),
            s.source_keys,
            s.target_rows,
            s.missing,
            s.target_duplicates,
            s.source_first_utc.as_deref().unwrap_or("-"),
            s.source_last_utc.as_deref().unwrap_or("-"),
            s.target_first_utc.as_deref().unwrap_or("-"),
            s.target_last_utc.as_deref().unwrap_or("-"),
        );
        if !s.missing_examples.is_empty() {
            eprintln!("         missing, e.g.: {}", s.missing_examples.join(", "));
        }
    }
    if !r.children.is_empty() {
        eprintln!("\n{:<28} {:>8} {:>11} {:>11} {:>9} {:>6} {:>9}", "child table", "ServerID", "source rows", "target rows", "missing", "dups", "differing");
        for c in &r.children {
            eprintln!("{:<28} {:>8} {:>11} {:>11} {:>9} {:>6} {:>9}", short(&c.table, 28), c.server_id, c.source_rows, c.target_rows, c.missing, c.duplicates, c.differing_runs);
        }
    }
    for (t, n) in &r.target_child_orphans {
        eprintln!("dbo.{t}: {n} rows in the target reference runs it does not hold");
    }
    for t in &r.child_tables_not_in_target {
        eprintln!("dbo.{t}: not in {} (not compared)", r.target);
    }
    if !r.unknown_servers.is_empty() {
        eprintln!("server names the stage does not know (all their rows are missing): {}", r.unknown_servers.join(", "));
    }
    if r.ok {
        eprintln!("verify: OK, every source row is in {}", r.target);
    } else {
        eprintln!("verify: FAILED, {} is missing rows, holds duplicates or differs from the sources", r.target);
    }
}

