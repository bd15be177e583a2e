//! `perfcopy status` (issue 15): one line per source from the target's records and the source
//! as it is now; exit 5 when a source passes --max-lag / --max-lag-rows or was never synced.
//! Expected lags are computed here from the rows the test wrote, never from perfcopy.

mod common;

use std::path::Path;

use common::mssql::*;
use common::*;
use serde_json::Value;

/// `status --json` with `args`: (exit code, report).
fn status(args: &[&str]) -> (i32, Value) {
    let mut a = vec!["status", "--json"];
    a.extend_from_slice(args);
    let o = perfcopy(&a);
    let code = o.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 5, "status failed ({code}): {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
    // perfcopy's own lines (not tracing's log lines, e.g. tiberius' plaintext warning).
    for line in stderr(&o).lines().filter(|l| !l.starts_with('\u{1b}')) {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line:?}");
    }
    (code, v)
}

fn source<'a>(v: &'a Value, label_end: &str) -> &'a Value {
    v["sources"].as_array().unwrap().iter().find(|s| s["source"].as_str().unwrap().ends_with(label_end)).unwrap_or_else(|| panic!("no source {label_end} in {v}"))
}

fn write(path: &Path, rows: &[SrcRow]) {
    write_source(path, rows, &SourceOpts::default());
}

#[test]
fn a_stage_reports_each_sources_watermark_lag_and_limits() {
    let t = tempfile::tempdir().unwrap();
    let (a_file, b_file, c_file) = (t.path().join("a.parquet"), t.path().join("b.parquet"), t.path().join("c.parquet"));
    let stage = t.path().join("stage");
    let a = series("SQL01", T0, 100, 1, 1);
    let b = series("SQL02", T0, 50, 1, 2);
    write(&a_file, &a);
    write(&b_file, &b);
    copy_json(&["--from", s(&a_file), "--from", s(&b_file), "--stage", s(&stage), "--register-servers"]);

    let (code, v) = status(&["--from", s(&a_file), "--from", s(&b_file), "--stage", s(&stage)]);
    assert_eq!(code, 0, "{v}");
    for (f, rows) in [("a.parquet", &a), ("b.parquet", &b)] {
        let st = source(&v, f);
        assert_eq!(st["last_run_id"], rows.len() as i64, "{st}");
        assert_eq!(st["source_max_run_id"], rows.len() as i64, "{st}");
        assert_eq!(st["rows_copied"], rows.len() as u64, "{st}");
        assert_eq!((st["lag_rows"].as_u64(), st["lag_seconds"].as_u64()), (Some(0), Some(0)), "{st}");
        assert_eq!(st["watermark"]["status"], "used");
        assert!(st["last_success_utc"].as_str().is_some_and(|t| t.ends_with('Z')), "{st}");
        assert_eq!(st["last_snapshot_utc"], iso_ms(rows.last().unwrap().snapshot_ms), "{st}");
    }

    // The collector wrote 30 more snapshots into a: 30 rows behind, by their time span.
    let more = series("SQL01", a.last().unwrap().snapshot_ms + MIN5, 30, 101, 3);
    let grown: Vec<SrcRow> = a.iter().chain(&more).cloned().collect();
    write(&a_file, &grown);
    let lag_s = ((more.last().unwrap().snapshot_ms - a.last().unwrap().snapshot_ms) / 1000) as u64;
    assert!(lag_s > 3600 && lag_s < 86_400);
    let both = ["--from", s(&a_file), "--from", s(&b_file), "--stage", s(&stage)];
    let (code, v) = status(&both);
    assert_eq!(code, 0, "no limits: {v}");
    let st = source(&v, "a.parquet");
    assert_eq!((st["lag_rows"].as_u64(), st["lag_seconds"].as_u64(), st["source_max_run_id"].as_i64()), (Some(30), Some(lag_s), Some(130)), "{st}");
    assert_eq!(st["source_last_snapshot_utc"], iso_ms(more.last().unwrap().snapshot_ms));
    for (flags, want, why) in [
        (vec!["--max-lag", "1h"], 5, "time limit passed"),
        (vec!["--max-lag", "1d"], 0, "within the time limit"),
        (vec!["--max-lag-rows", "10"], 5, "row limit passed"),
        (vec!["--max-lag-rows", "30"], 0, "within the row limit"),
    ] {
        let mut args = both.to_vec();
        args.extend(flags.iter().copied());
        let (code, v) = status(&args);
        assert_eq!(code, want, "{why}: {v}");
        assert_eq!(source(&v, "a.parquet")["within_limits"], want == 0, "{why}");
        assert_eq!(source(&v, "b.parquet")["within_limits"], true, "{why}: b is not behind");
    }

    // A source never synced fails any limit; so does one whose watermark would be set aside.
    write(&c_file, &series("SQL03", T0, 20, 1, 4));
    let (code, v) = status(&["--from", s(&c_file), "--stage", s(&stage), "--max-lag", "1d"]);
    assert_eq!(code, 5, "{v}");
    let st = source(&v, "c.parquet");
    assert_eq!((st["lag_rows"].as_u64(), st["last_run_id"].as_i64(), st["problem"].as_str()), (Some(20), None, Some("never synced")), "{st}");
    write(&b_file, &series("SQL02", T0 + 7, 40, 1, 5)); // re-created: row 50 gone
    let (code, v) = status(&["--from", s(&b_file), "--stage", s(&stage), "--max-lag", "1d"]);
    assert_eq!(code, 5, "{v}");
    let st = source(&v, "b.parquet");
    assert_eq!(st["watermark"]["status"], "set_aside", "{st}");
    assert!(st["problem"].as_str().unwrap().contains("row 50 no longer in the source"), "{st}");
    assert_eq!(st["lag_rows"], 40, "the next copy reads it whole");
}

#[test]
fn monitoringdb_status_shows_the_ledger_sync_lag_and_last_failure() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let a = series("SQL01", T0, 80, 1, 6);
    seed(&srv, dir.path(), "DBATools", &a, true);
    srv.create_monitoringdb("MonitoringDB");
    let (from, to) = (conn(&srv, "DBATools"), conn(&srv, "MonitoringDB"));
    copy_json(&["--from", &from, "--to", &to, "--register-servers"]);
    let (code, v) = status(&["--from", &from, "--to", &to, "--max-lag", "10m"]);
    assert_eq!(code, 0, "{v}");
    let st = &v["sources"][0];
    assert_eq!((st["last_run_id"].as_i64(), st["rows_copied"].as_u64(), st["lag_rows"].as_u64()), (Some(80), Some(80), Some(0)), "{st}");
    assert!(st["last_success_utc"].is_string(), "{st}");
    assert!(st["last_failure"].is_null(), "{st}");

    // New snapshots, and a copy that fails on the target: both show.
    let more = series("SQL01", a.last().unwrap().snapshot_ms + MIN5, 12, 81, 7);
    add_rows(&srv, dir.path(), "DBATools", &more, true);
    srv_faults_fail_bulk(&srv);
    let o = perfcopy(&["copy", "--from", &from, "--to", &to]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (code, v) = status(&["--from", &from, "--to", &to, "--max-lag", "10m"]);
    assert_eq!(code, 5, "{v}");
    let st = &v["sources"][0];
    let lag_s = ((more.last().unwrap().snapshot_ms - a.last().unwrap().snapshot_ms) / 1000) as u64;
    assert_eq!((st["lag_rows"].as_u64(), st["lag_seconds"].as_u64(), st["source_max_run_id"].as_i64()), (Some(12), Some(lag_s), Some(92)), "{st}");
    assert!(st["last_failure"].as_str().is_some_and(|m| m.contains("disk is full")), "{st}");
    assert!(st["last_failure_utc"].is_string(), "{st}");
    assert!(!st["within_limits"].as_bool().unwrap());
    // The human line names the failure too, without the password.
    let o = perfcopy(&["status", "--from", &from, "--to", &to]);
    let err = stderr(&o);
    let flat = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("last failure") && flat.contains("disk is full"), "{err}");
    assert!(!err.contains(PW), "{err}");

    // Once a copy succeeds the lag is gone again.
    copy_json(&["--from", &from, "--to", &to]);
    let (code, v) = status(&["--from", &from, "--to", &to, "--max-lag", "10m"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["sources"][0]["rows_copied"], 12);
}

/// A stage records a copy that failed after it began (here: the source's server failed a
/// read) as the source's last failure, and status shows it.
#[test]
fn a_stage_records_a_failed_copy_for_status() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let a = series("SQL01", T0, 60, 1, 8);
    seed(&srv, dir.path(), "DBATools", &a, true);
    let from = conn(&srv, "DBATools");
    // The full-row read (it names SqlVersion; the key pass does not) fails.
    srv.faults().error_once("SqlVersion", tds_test_server::SqlError { number: 823, class: 24, state: 2, message: "The operating system returned error 21 (The device is not ready.) to SQL Server during a read".into() });
    let o = perfcopy(&["copy", "--from", &from, "--stage", s(&stage), "--register-servers"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (code, v) = status(&["--from", &from, "--stage", s(&stage), "--max-lag", "1d"]);
    assert_eq!(code, 5, "{v}");
    let st = &v["sources"][0];
    assert!(st["last_failure"].as_str().is_some_and(|m| m.contains("The device is not ready")), "{st}");
    assert_eq!((st["lag_rows"].as_u64(), st["problem"].as_str()), (Some(60), Some("never synced")), "{st}");
    assert!(!st["last_failure"].as_str().unwrap().contains(PW));
}

/// Makes the next bulk load into MonitoringDB fail with a non-transient error.
fn srv_faults_fail_bulk(srv: &tds_test_server::TestServer) {
    srv.faults().error_once("INSERT BULK", tds_test_server::SqlError { number: 1105, class: 17, state: 2, message: "Could not allocate space for object 'dbo.PerfSnapshotRun' in database 'MonitoringDB' because the 'PRIMARY' filegroup is full: the disk is full.".into() });
}
