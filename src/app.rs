//! The commands: turn a validated plan into a run and a human (stderr) or JSON (stdout) report.

use std::io::Write;
use std::path::Path;

use crate::cli::{Cli, Command, CopyArgs, DemoArgs, GenerateArgs, VerifyArgs};
use crate::config;
use crate::error::{Error, Result};
use crate::pipeline::copy::{run_copy, CopyReport};
use crate::pipeline::progress::{Progress, ProgressMode};
use crate::pipeline::verify::{run_verify, VerifyReport};
use crate::pipeline::Cancel;
use crate::config::TargetSpec;
use crate::sink::mssql::MonitoringDb;
use crate::sink::stage::Stage;
use crate::sink::Target;
use crate::source::open_sources;
use crate::source::synthetic::write_parquet_sources;

/// Exit code of a `verify` that found missing or doubled rows.
pub const EXIT_VERIFY_FAILED: i32 = 3;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli, cancel: &Cancel) -> Result<i32> {
    match cli.command {
        Command::Generate(a) => generate(&a).map(|_| 0),
        Command::Copy(a) => copy(&a, cancel).map(|_| 0),
        Command::Verify(a) => verify(&a, cancel),
        Command::Demo(a) => demo(&a, cancel),
        Command::Bench(a) => bench(&a, cancel).map(|_| 0),
    }
}

fn bench(a: &crate::cli::BenchArgs, cancel: &Cancel) -> Result<()> {
    let plan = config::bench_plan(a)?;
    let sources: Vec<Box<dyn crate::source::Source>> = crate::source::synthetic::SyntheticSource::all(plan.spec.clone())
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn crate::source::Source>)
        .collect();
    let null = std::sync::Arc::new(crate::sink::null::NullTarget::new());
    let target = crate::pipeline::bench::target(&plan, &null);
    let progress = Progress::new(a.progress);
    let report = run_copy(&sources, target.as_ref(), &plan.copy, &progress, cancel)?;
    let out = crate::pipeline::bench::BenchReport::new(&plan, &report, null.encoded_bytes());
    out.print_human();
    if a.json {
        print_json(&out)?;
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    // A closed stdout (perfcopy ... --json | head) is not an error.
    let _ = writeln!(out, "{text}");
    Ok(())
}

fn generate(a: &GenerateArgs) -> Result<()> {
    let spec = config::generate_spec(a)?;
    let progress = Progress::new(ProgressMode::Auto);
    let bar = progress.phase("generate", Some(spec.plan().iter().map(|p| p.rows()).sum()));
    let paths = write_parquet_sources(&spec, &a.out, |n| bar.inc(n as u64))?;
    bar.finish();
    eprintln!("wrote {} source files to {}", paths.len(), a.out.display());
    Ok(())
}

fn copy(a: &CopyArgs, cancel: &Cancel) -> Result<CopyReport> {
    let plan = config::copy_plan(a)?;
    let sources = open_sources(&plan.sources.inputs, plan.sources.split)?;
    let target: Box<dyn Target> = match &plan.sources.target {
        TargetSpec::Stage(dir) => Box::new(Stage::new(dir, plan.stage.clone(), true)),
        TargetSpec::MonitoringDb(conn) => Box::new(MonitoringDb::new(conn.clone(), plan.bulk.clone())),
    };
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

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: Vec<char> = s.chars().rev().take(n - 1).collect();
        format!("…{}", tail.into_iter().rev().collect::<String>())
    }
}

fn verify(a: &VerifyArgs, cancel: &Cancel) -> Result<i32> {
    let plan = config::verify_plan(a)?;
    let sources = open_sources(&plan.sources.inputs, plan.sources.split)?;
    let target: Box<dyn Target> = match &plan.sources.target {
        TargetSpec::Stage(dir) => Box::new(Stage::new(dir, Default::default(), false)),
        TargetSpec::MonitoringDb(conn) => Box::new(MonitoringDb::new(conn.clone(), Default::default())),
    };
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
    if !r.unknown_servers.is_empty() {
        eprintln!("server names the stage does not know (all their rows are missing): {}", r.unknown_servers.join(", "));
    }
    if r.ok {
        eprintln!("verify: OK, every source row is in {}", r.target);
    } else {
        eprintln!("verify: FAILED, {} is missing rows or holds duplicates", r.target);
    }
}

fn demo(a: &DemoArgs, cancel: &Cancel) -> Result<i32> {
    let sources_dir = a.dir.join("sources");
    let stage_dir = a.dir.join("stage");
    for d in [&sources_dir, &stage_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(Error::write(d.as_path()))?;
        }
    }
    eprintln!("== 1/4 generate: {} rows from {} simulated DBATools databases, 5% restored-copy overlap", a.rows, a.servers);
    let gen = GenerateArgs { out: sources_dir.clone(), servers: a.servers, rows: a.rows, overlap: 0.05, seed: 42 };
    generate(&gen)?;
    let src_args = |json: bool| crate::cli::SourceArgs {
        from: vec![sources_dir.display().to_string()],
        config: None,
        server_map: None,
        since: None,
        until: None,
        readers: None,
        batch_rows: None,
        source_connections: 1,
        json,
        progress: ProgressMode::Auto,
    };
    let target = crate::cli::TargetArgs { stage: Some(stage_dir.clone()), to: None };
    let copy_args = CopyArgs {
        src: src_args(false),
        target: target.clone(),
        register_servers: true,
        dry_run: false,
        rescan: false,
        writers: None,
        queue_depth: crate::cli::DEFAULT_QUEUE_DEPTH,
        zstd_level: 1,
        row_group_rows: 262_144,
        no_tablock: false,
        order_hint: false,
        retries: 5,
        packet_size: None,
    };
    eprintln!("\n== 2/4 copy into the stage {} (new servers registered in servers.csv)", stage_dir.display());
    let first = copy(&copy_args, cancel)?;
    eprintln!("\n== 3/4 copy again: a re-run adds nothing");
    let again = copy(&copy_args, cancel)?;
    eprintln!("\n== 4/4 verify: every source row is in the stage");
    let code = verify(&VerifyArgs { src: src_args(false), target }, cancel)?;
    eprintln!(
        "\nDone: {} rows read, {} duplicates removed ({} with conflicting values), {} rows staged; the re-run wrote {}.",
        first.totals.rows_read, first.totals.duplicates_dropped, first.totals.conflicts, first.totals.rows_written, again.totals.rows_written
    );
    print_look_hints(&stage_dir);
    Ok(code)
}

fn print_look_hints(stage: &Path) {
    let glob = stage.join("PerfSnapshotRun").join("*").join("*.parquet");
    eprintln!("\nLook at the result:");
    eprintln!(
        "  duckdb -c \"SELECT ServerID, count(*) AS rows, min(SnapshotUTC), max(SnapshotUTC) FROM read_parquet('{}', hive_partitioning=true) GROUP BY ALL ORDER BY 1\"",
        glob.display()
    );
    eprintln!(
        "  python3 -c \"import pyarrow.dataset as ds; print(ds.dataset('{}', partitioning='hive').to_table().group_by('ServerID').aggregate([('SnapshotUTC','count')]))\"",
        stage.join("PerfSnapshotRun").display()
    );
    eprintln!("  cat {}", stage.join("servers.csv").display());
}
