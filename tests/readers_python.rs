//! The stage read by readers that are not ours: pyarrow.dataset and DuckDB with Hive
//! partitioning must see exactly the rows and keys we read back with Rust.
//!
//! Needs `python3` with pyarrow and duckdb (installed by .ci/run). Without them the test is
//! skipped with a message, except when `CI` is set: there a missing reader is a failure.

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
import json, sys
table_dir = sys.argv[1]
which = sys.argv[2]
out = {}
if which == "pyarrow":
    import pyarrow as pa
    import pyarrow.dataset as ds
    t = ds.dataset(table_dir, format="parquet", partitioning="hive").to_table()
    ids = t.column("ServerID").to_pylist()
    ts = t.column("SnapshotUTC").cast(pa.timestamp("ms")).cast(pa.int64()).to_pylist()
    names = t.column("ServerName").to_pylist()
    out = {"rows": t.num_rows, "columns": t.column_names, "keys": sorted([i, s] for i, s in zip(ids, ts)),
           "names": sorted(set(zip(ids, names)))}
else:
    import duckdb
    glob = table_dir + "/*/*.parquet"
    con = duckdb.connect()
    rows = con.execute(
        "SELECT ServerID, epoch_ms(SnapshotUTC), ServerName FROM read_parquet(?, hive_partitioning=true)", [glob]
    ).fetchall()
    cols = [d[0] for d in con.execute("SELECT * FROM read_parquet(?, hive_partitioning=true) LIMIT 0", [glob]).description]
    out = {"rows": len(rows), "columns": cols, "keys": sorted([r[0], r[1]] for r in rows),
           "names": sorted(set((r[0], r[2]) for r in rows))}
print(json.dumps(out))
"#;

/// Whether python3 can import `module`; a skip reason otherwise (a panic under CI).
fn available(module: &str) -> bool {
    let ok = Command::new("python3").args(["-c", &format!("import {module}")]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 cannot import {module}, and CI is set: install it (pip install {module})");
        }
        eprintln!("skipping the {module} reader: python3 cannot import {module} (pip install {module})");
    }
    ok
}

#[test]
fn pyarrow_and_duckdb_read_the_stage_as_we_do() {
    let t = tempfile::tempdir().unwrap();
    let (src, stage) = (t.path().join("src"), t.path().join("stage"));
    let o = perfcopy(&["generate", "--out", s(&src), "--servers", "4", "--rows", "4000", "--overlap", "0.2", "--seed", "9", "--child-tables", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A second run adds a second file to a partition: readers must see both files.
    let extra = t.path().join("later.parquet");
    write_source(&extra, &series("SQLPROD01", T0, 300, 1, 1), &SourceOpts::default());
    copy_json(&["--from", s(&src), "--stage", s(&stage), "--register-servers"]);
    copy_json(&["--from", s(&extra), "--stage", s(&stage), "--register-servers"]);

    let ours = read_stage(&stage);
    let want_keys: Vec<(i64, i64)> = ours.iter().map(|r| (r.server_id as i64, r.snapshot_ms)).collect();
    let mut want_names: Vec<(i64, String)> = ours.iter().map(|r| (r.server_id as i64, r.server_name.clone())).collect();
    want_names.sort();
    want_names.dedup();
    let want_columns: Vec<String> = stage_fields().iter().map(|(n, _)| n.to_string()).collect();
    assert!(want_keys.len() > 1_000 && want_names.iter().any(|(_, n)| n.contains('\\') || !n.is_ascii()));

    let mut checked = 0;
    for reader in ["pyarrow", "duckdb"] {
        if !available(reader) {
            continue;
        }
        let table = stage.join("PerfSnapshotRun");
        let o = Command::new("python3").args(["-c", SCRIPT, s(&table), reader]).output().unwrap();
        assert!(o.status.success(), "{reader} failed: {}", String::from_utf8_lossy(&o.stderr));
        let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(got["rows"].as_u64().unwrap(), want_keys.len() as u64, "{reader}: row count");
        let keys: Vec<(i64, i64)> = serde_json::from_value(got["keys"].clone()).unwrap();
        assert_eq!(keys, want_keys, "{reader}: (ServerID, SnapshotUTC ms) keys");
        let names: Vec<(i64, String)> = serde_json::from_value(got["names"].clone()).unwrap();
        assert_eq!(names, want_names, "{reader}: ServerName per ServerID");
        let mut columns: Vec<String> = serde_json::from_value(got["columns"].clone()).unwrap();
        // The partition column may be listed once (merged) wherever the reader puts it.
        let mut want_sorted = want_columns.clone();
        columns.sort();
        want_sorted.sort();
        assert_eq!(columns, want_sorted, "{reader}: columns");
        checked += 1;
    }
    if checked == 0 {
        eprintln!("no Python reader available; nothing checked");
    }
}
