//! `perfcopy demo`: generate, copy, copy again, verify, and how to look at the result.

use std::path::Path;

use crate::cli::{CopyArgs, DemoArgs, GenerateArgs, SourceArgs, TargetArgs, VerifyArgs};
use crate::defaults;
use crate::error::{Error, Result};
use crate::pipeline::human::{grouped, wrap};
use crate::pipeline::progress::ProgressMode;
use crate::pipeline::Cancel;
use crate::schema::RUN;

pub(super) fn run(a: &DemoArgs, cancel: &Cancel) -> Result<i32> {
    let sources_dir = a.dir.join("sources");
    let stage_dir = a.dir.join("stage");
    for d in [&sources_dir, &stage_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(Error::write(d.as_path()))?;
        }
    }
    // All eleven child tables, at a small scale: at a real collector's counts the demo's
    // 3 million runs would bring over a billion child rows.
    let tables = if a.children_scale > 0.0 { "all" } else { "none" };
    say(&format!(
        "== 1/4 generate: {} rows from {} simulated DBATools databases, 5% restored-copy overlap, child tables: {tables} at --children-scale {}",
        grouped(a.rows),
        a.servers,
        a.children_scale
    ));
    let gen = GenerateArgs { out: sources_dir.clone(), servers: a.servers, rows: a.rows, overlap: 0.05, seed: 42, child_tables: Some(tables.into()), children_scale: a.children_scale };
    super::generate::run(&gen)?;
    let src_args = |json: bool| SourceArgs {
        from: vec![sources_dir.display().to_string()],
        config: None,
        server_map: None,
        since: None,
        until: None,
        readers: None,
        batch_rows: None,
        source_connections: defaults::SOURCE_CONNECTIONS,
        json,
        progress: ProgressMode::Auto,
    };
    let target = TargetArgs { stage: Some(stage_dir.clone()), to: None };
    let copy_args = CopyArgs {
        src: src_args(false),
        target: target.clone(),
        metrics_addr: None,
        register_servers: true,
        dry_run: false,
        rescan: false,
        tables: Default::default(),
        create_missing_tables: false,
        writers: None,
        queue_depth: defaults::QUEUE_DEPTH,
        zstd_level: defaults::ZSTD_LEVEL,
        row_group_rows: defaults::ROW_GROUP_ROWS,
        no_tablock: false,
        order_hint: false,
        retries: defaults::RETRIES,
        packet_size: None,
    };
    say(&format!("\n== 2/4 copy into the stage {} (new servers registered in servers.csv)", stage_dir.display()));
    let first = super::copy::run(&copy_args, cancel)?;
    eprintln!("\n== 3/4 copy again: a re-run adds nothing");
    let again = super::copy::run(&copy_args, cancel)?;
    eprintln!("\n== 4/4 verify: every source row is in the stage");
    let code = super::verify::run(&VerifyArgs { src: src_args(false), target, tables: Default::default(), values: false }, cancel)?;
    let (t, g) = (&first.totals, grouped);
    let child_rows = |r: &crate::pipeline::copy::CopyReport| r.sources.iter().flat_map(|s| &s.children).map(|c| c.rows_written).sum::<u64>();
    say(&format!(
        "\nDone: {} rows read, {} duplicates removed ({} with conflicting values), {} rows staged with {} child rows in {} tables; the re-run wrote {} and {} child rows.",
        g(t.rows_read),
        g(t.duplicates_dropped),
        g(t.conflicts),
        g(t.rows_written),
        g(child_rows(&first)),
        first.child_tables.len(),
        g(again.totals.rows_written),
        g(child_rows(&again))
    ));
    print_look_hints(&stage_dir);
    Ok(code)
}

/// A line of the demo's story, wrapped at 80 columns.
fn say(text: &str) {
    let body = text.trim_start_matches('\n');
    for _ in body.len()..text.len() {
        eprintln!();
    }
    eprintln!("{}", wrap(body, 4));
}

/// How to look at the stage with DuckDB, pyarrow and cat: commands to paste, broken inside
/// their quotes (SQL and Python take the newlines) so each line fits 80 columns.
fn look_hints(stage: &Path) -> Vec<String> {
    let (table, server, time) = (stage.join(RUN.name), RUN.server_id, RUN.snapshot_time);
    let glob = table.join("*").join("*.parquet");
    vec![
        String::new(),
        "Look at the result:".into(),
        format!("  duckdb -c \"SELECT {server}, count(*) AS rows,"),
        format!("    min({time}), max({time})"),
        format!("    FROM read_parquet('{}',", glob.display()),
        "      hive_partitioning=true)".into(),
        "    GROUP BY ALL ORDER BY 1\"".into(),
        "  python3 -c \"import pyarrow.dataset as ds".into(),
        format!("t = ds.dataset('{}',", table.display()),
        "    partitioning='hive').to_table()".into(),
        format!("print(t.group_by('{server}').aggregate([('{time}', 'count')]))\""),
        format!("  cat {}", stage.join("servers.csv").display()),
    ]
}

fn print_look_hints(stage: &Path) {
    for line in look_hints(stage) {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hints_fit_80_columns_for_a_short_stage_path() {
        // The stage path is the user's; with a short one, every line fits.
        for l in look_hints(Path::new("/tmp/perfcopy-demo/stage")) {
            assert!(l.chars().count() <= crate::pipeline::human::COLUMNS, "{} columns: {l}", l.chars().count());
        }
    }
}
