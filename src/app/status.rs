//! `perfcopy status`: one line per source (80 columns), JSON on request, exit 5 when a
//! source is not within the limits.

use crate::cli::StatusArgs;
use crate::config;
use crate::error::Result;
use crate::pipeline::human;
use crate::pipeline::status::{run_status, StatusReport};
use crate::pipeline::Cancel;

use super::{print_json, short, EXIT_LAGGING};

pub(super) fn run(a: &StatusArgs, cancel: &Cancel) -> Result<i32> {
    let plan = config::status_plan(a)?;
    let sources = plan.sources.open_sources()?;
    let target = plan.open_target();
    let report = run_status(&sources, target.as_ref(), &plan.status, cancel)?;
    print_status(&report);
    if a.src.json {
        print_json(&report)?;
    }
    Ok(if report.ok { 0 } else { EXIT_LAGGING })
}

/// `2026-12-04T18:50:12.345Z` as `2026-12-04 18:50`.
fn minute(iso: Option<&str>) -> String {
    iso.map(|t| t.get(..16).unwrap_or(t).replace('T', " ")).unwrap_or_else(|| "never".into())
}

/// A time in this year as `12-04 18:50`, in another as `2025-12-04`.
fn when(iso: Option<&str>, now: &str) -> String {
    match iso {
        None => "never".into(),
        Some(t) if t.get(..4) == now.get(..4) => minute(Some(t)).get(5..).unwrap_or(t).to_string(),
        Some(t) => t.get(..10).unwrap_or(t).to_string(),
    }
}

fn print_status(r: &StatusReport) {
    eprintln!("{} (now {} UTC)", short(&r.target, 50), minute(Some(&r.now_utc)));
    eprintln!("{:<17} {:<11} {:>9} {:>9} {:>8} {:>7} {:>8} {}", "source", "last sync", "LastRunID", "source ID", "lag rows", "lag", "copied", "ok");
    for s in &r.sources {
        let id = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| human::grouped_within(v.max(0) as u64, 9));
        eprintln!(
            "{} {:<11} {:>9} {:>9} {:>8} {:>7} {:>8} {}",
            human::fit(&s.source, 17),
            when(s.last_success_utc.as_deref(), &r.now_utc),
            id(s.last_run_id),
            id(s.source_max_run_id),
            human::grouped_within(s.lag_rows, 8),
            s.lag_seconds.map_or_else(|| "-".to_string(), |l| if l == 0 { "0 s".into() } else { human::duration(std::time::Duration::from_secs(l)) }),
            s.rows_copied.map_or_else(|| "-".to_string(), |n| human::grouped_within(n, 8)),
            if s.within_limits { "yes" } else { "NO" }
        );
        if let Some(p) = &s.problem {
            print_wrapped(p, 3);
        }
        if let (Some(at), Some(m)) = (&s.last_failure_utc, &s.last_failure) {
            eprintln!("  last failure {}:", minute(Some(at)));
            print_wrapped(m, 6);
        }
    }
    if r.ok {
        eprintln!("status: OK, every source within the limits");
    } else {
        let n = r.sources.iter().filter(|s| !s.within_limits).count();
        eprintln!("status: {n} of {} sources behind or never synced", r.sources.len());
    }
}

/// `text` in lines of at most 79 columns, indented, at most `max` of them (`…` ends a cut).
fn print_wrapped(text: &str, max: usize) {
    let text = human::wrap_within(&format!("    {}", text.replace('\n', " ")), 79, 4);
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate().take(max) {
        eprintln!("{}", if i + 1 == max && lines.len() > max { format!("{} …", l.chars().take(76).collect::<String>()) } else { l.to_string() });
    }
}
