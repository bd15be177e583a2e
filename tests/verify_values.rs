//! `perfcopy verify --values`: a stage and a MonitoringDB copied from handwritten sources pass;
//! then one value changed in the target, a NULL set and cleared, two rows swapped between days
//! and a duplicate kept against the survivor rule each fail (exit 3) naming the server, the UTC
//! day and the column. Which days and columns must differ is derived from the rows themselves
//! (tests/common), never from perfcopy.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{Int32Type, TimestampMillisecondType};
use common::mssql::{conn, exec_sql, iso_ms, seed, server, servers_table};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::Value;

fn day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%d").to_string()
}

/// Runs `verify --values --json` with `args`; the exit code and the report.
fn verify_values(args: &[&str]) -> (Option<i32>, Value, String) {
    let mut a = vec!["verify", "--values", "--json"];
    a.extend_from_slice(args);
    let o = perfcopy(&a);
    let report = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stderr(&o)));
    (o.status.code(), report, stderr(&o))
}

/// The differing (server, day) -> columns of a `--values` report.
fn differing(report: &Value) -> BTreeMap<(i32, String), Vec<String>> {
    report["values"]["differing"]
        .as_array()
        .unwrap_or_else(|| panic!("no values report: {report}"))
        .iter()
        .map(|d| {
            let cols = d["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
            ((d["server_id"].as_i64().unwrap() as i32, d["day"].as_str().unwrap().to_string()), cols)
        })
        .collect()
}

/// The one stage file of `server`, read whole.
fn stage_file(stage: &Path, server: i32) -> (std::path::PathBuf, RecordBatch) {
    let files: Vec<_> = stage_files(stage).into_iter().filter(|(id, _)| *id == server).collect();
    assert_eq!(files.len(), 1, "one file for server {server}: {files:?}");
    let path = files[0].1.clone();
    let batch = read_whole(&path);
    (path, batch)
}

/// A Parquet file as one batch, its schema (and field metadata) as written.
fn read_whole(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn set_str(a: &ArrayRef, row: usize, v: Option<String>) -> ArrayRef {
    let mut vals: Vec<Option<String>> = a.as_string::<i32>().iter().map(|x| x.map(str::to_string)).collect();
    vals[row] = v;
    Arc::new(StringArray::from(vals))
}

/// Rewrites `path` with column `name` replaced by `edit` of it.
fn rewrite(path: &Path, batch: &RecordBatch, name: &str, edit: impl FnOnce(&ArrayRef) -> ArrayRef) {
    let i = batch.schema().index_of(name).unwrap();
    let mut cols = batch.columns().to_vec();
    cols[i] = edit(&cols[i]);
    let b = RecordBatch::try_new(batch.schema(), cols).unwrap();
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), b.schema(), Some(props)).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
}

fn set_i32(a: &ArrayRef, row: usize, v: Option<i32>) -> ArrayRef {
    let mut vals: Vec<Option<i32>> = a.as_primitive::<Int32Type>().iter().collect();
    vals[row] = v;
    Arc::new(Int32Array::from(vals))
}

/// Columns whose values differ between two rows (SnapshotUTC and the keys aside).
fn value_diff(a: &Values, b: &Values) -> Vec<&'static str> {
    let mut out = Vec::new();
    let pairs: [(&str, bool); 9] = [
        ("SqlVersion", a.sql_version != b.sql_version),
        ("CpuSignalWaitPct", a.cpu_signal_wait_pct != b.cpu_signal_wait_pct),
        ("TopWaitType", a.top_wait_type != b.top_wait_type),
        ("TopWaitMsPerSec", a.top_wait_ms_per_sec != b.top_wait_ms_per_sec),
        ("SessionsCount", a.sessions != b.sessions),
        ("RequestsCount", a.requests != b.requests),
        ("BlockingSessionCount", a.blocking != b.blocking),
        ("DeadlockCountRecent", a.deadlocks != b.deadlocks),
        ("MemoryGrantWarningCount", a.grant_warnings != b.grant_warnings),
    ];
    for (c, d) in pairs {
        if d {
            out.push(c);
        }
    }
    out
}

#[test]
fn stage_passes_then_names_a_changed_value_a_null_and_rows_swapped_between_days() {
    let t = tempfile::tempdir().unwrap();
    let (pa, pb, stage) = (t.path().join("a.parquet"), t.path().join("b.parquet"), t.path().join("stage"));
    // Three days of SQL01 and two of SQL02.
    let a = series("SQL01", T0, 800, 1, 1);
    let b = series("SQL02", T0 + DAY / 2, 500, 1, 2);
    write_source(&pa, &a, &SourceOpts::default());
    write_source(&pb, &b, &SourceOpts::default());
    copy_json(&["--from", s(&pa), "--from", s(&pb), "--stage", s(&stage), "--register-servers"]);
    let reg = read_registry(&stage.join("servers.csv"));
    let (id_a, id_b) = (reg["SQL01"], reg["SQL02"]);
    let days: BTreeSet<(i32, String)> = a.iter().map(|r| (id_a, day(r.snapshot_ms))).chain(b.iter().map(|r| (id_b, day(r.snapshot_ms)))).collect();
    let args = ["--from", s(&pa), "--from", s(&pb), "--stage", s(&stage)];

    let (code, report, err) = verify_values(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(report["values"]["days_compared"].as_u64(), Some(days.len() as u64), "{report}");
    assert!(err.contains("values:") && err.contains("0 differ"), "{err}");
    // A window cutting days in half compares the same halves on both sides.
    let (since, until) = (T0 + DAY / 2 + 7, T0 + 2 * DAY + DAY / 3);
    let (since_arg, until_arg) = (iso_ms(since), iso_ms(until));
    let cut = [args.as_slice(), &["--since", &since_arg, "--until", &until_arg]].concat();
    let (code, report, err) = verify_values(&cut);
    assert_eq!(code, Some(0), "{err}");
    let cut_days = a.iter().map(|r| (id_a, r.snapshot_ms)).chain(b.iter().map(|r| (id_b, r.snapshot_ms))).filter(|&(_, t)| t >= since && t < until).map(|(id, t)| (id, day(t))).collect::<BTreeSet<_>>();
    assert_eq!(report["values"]["days_compared"].as_u64(), Some(cut_days.len() as u64), "{report}");

    // One value changed: that server, that day, that column, and nothing else.
    let (path, batch) = stage_file(&stage, id_a);
    let original = std::fs::read(&path).unwrap();
    let ts = batch.column_by_name("SnapshotUTC").unwrap().as_primitive::<TimestampMillisecondType>().clone();
    let sessions = batch.column_by_name("SessionsCount").unwrap().as_primitive::<Int32Type>().clone();
    let row = (100..batch.num_rows()).find(|&r| sessions.is_valid(r)).unwrap();
    rewrite(&path, &batch, "SessionsCount", |c| set_i32(c, row, Some(sessions.value(row) + 1)));
    let (code, report, err) = verify_values(&args);
    assert_eq!(code, Some(3), "{err}");
    let want = BTreeMap::from([((id_a, day(ts.value(row))), vec!["SessionsCount".to_string()])]);
    assert_eq!(differing(&report), want, "{report}");
    assert_eq!(report["servers"].as_array().unwrap().iter().filter(|s| s["ok"] == false).count(), 0, "the keys are all there: {report}");
    assert!(err.contains(&format!("ServerID {id_a} (SQL01), {}", day(ts.value(row)))) && err.contains("differs in SessionsCount"), "{err}");
    for l in err.lines() {
        assert!(l.chars().count() <= 80, "wider than 80 columns: {l}");
    }

    // A NULL set to a value, then back: fails, then passes again.
    std::fs::write(&path, &original).unwrap();
    let wait = batch.column_by_name("TopWaitType").unwrap().as_string::<i32>().clone();
    let null_row = (0..batch.num_rows()).find(|&r| wait.is_null(r)).expect("the series has NULL TopWaitType");
    rewrite(&path, &batch, "TopWaitType", |c| set_str(c, null_row, Some("CXPACKET".into())));
    let (code, report, err) = verify_values(&args);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(differing(&report), BTreeMap::from([((id_a, day(ts.value(null_row))), vec!["TopWaitType".to_string()])]), "{report}");
    let (_, changed) = stage_file(&stage, id_a);
    rewrite(&path, &changed, "TopWaitType", |c| set_str(c, null_row, None));
    let (code, _, err) = verify_values(&args);
    assert_eq!(code, Some(0), "NULL restored: {err}");

    // Two rows swapped between days (their SnapshotUTC exchanged): every key is still there,
    // but both days hold the other's values.
    let (x, y) = (10, batch.num_rows() - 10);
    assert_ne!(day(ts.value(x)), day(ts.value(y)));
    rewrite(&path, &batch, "SnapshotUTC", |c| {
        let mut v: Vec<i64> = c.as_primitive::<TimestampMillisecondType>().values().to_vec();
        v.swap(x, y);
        Arc::new(TimestampMillisecondArray::from(v))
    });
    let (code, report, err) = verify_values(&args);
    assert_eq!(code, Some(3), "{err}");
    let by_ts: BTreeMap<i64, &SrcRow> = a.iter().map(|r| (r.snapshot_ms, r)).collect();
    let cols: Vec<String> = value_diff(&by_ts[&ts.value(x)].v, &by_ts[&ts.value(y)].v).into_iter().map(String::from).collect();
    assert!(!cols.is_empty(), "the two rows have different values");
    let want = BTreeMap::from([((id_a, day(ts.value(x))), cols.clone()), ((id_a, day(ts.value(y))), cols)]);
    assert_eq!(differing(&report), want, "{report}");
    assert!(report["servers"].as_array().unwrap().iter().all(|s| s["missing"] == 0), "{report}");
}

#[test]
fn a_duplicate_kept_against_the_survivor_rule_is_named() {
    let t = tempfile::tempdir().unwrap();
    let (pa, pc, stage, wrong) = (t.path().join("a.parquet"), t.path().join("c.parquet"), t.path().join("stage"), t.path().join("wrong"));
    let mut a = series("SQL01", T0, 600, 1, 3);
    // Within a source, a repeated key: the lowest PerfSnapshotRunID survives, whatever the order.
    let mut again = a[20].clone();
    again.run_id = 0;
    a[20].v.requests = Some(a[20].v.requests.unwrap_or(0) + 7);
    a.push(again.clone());
    // A restored copy of some rows with other SessionsCount every 40th row.
    let c = copy_rows(&a[100..400], 1, 40, None);
    write_source(&pa, &a, &SourceOpts::default());
    write_source(&pc, &c, &SourceOpts::default());
    copy_json(&["--from", s(&pa), "--from", s(&pc), "--stage", s(&stage), "--register-servers"]);
    let (code, _, err) = verify_values(&["--from", s(&pa), "--from", s(&pc), "--stage", s(&stage)]);
    assert_eq!(code, Some(0), "{err}");

    // The same sources copied in the other order keep the copy's rows: against the order
    // given to verify, exactly the days of the conflicting rows differ, in SessionsCount.
    copy_json(&["--from", s(&pc), "--from", s(&pa), "--stage", s(&wrong), "--register-servers"]);
    let id = read_registry(&wrong.join("servers.csv"))["SQL01"];
    let (code, report, err) = verify_values(&["--from", s(&pa), "--from", s(&pc), "--stage", s(&wrong)]);
    assert_eq!(code, Some(3), "{err}");
    let days: BTreeSet<String> = (0..300).step_by(40).map(|i| day(a[100 + i].snapshot_ms)).collect();
    let want: BTreeMap<(i32, String), Vec<String>> = days.into_iter().map(|d| ((id, d), vec!["SessionsCount".to_string()])).collect();
    assert_eq!(differing(&report), want, "{report}");
    assert!(report["servers"].as_array().unwrap().iter().all(|s| s["ok"] == true), "keys alone cannot see it: {report}");

    // Rows of a source written in reverse: the survivor is still the lowest run ID.
    let rev = t.path().join("rev.parquet");
    let mut r = a.clone();
    r.reverse();
    write_source(&rev, &r, &SourceOpts::default());
    let (code, _, err) = verify_values(&["--from", s(&rev), "--from", s(&pc), "--stage", s(&stage)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(again.run_id, 0);
}

/// `UPDATE dbo.PerfSnapshotRun SET {set}` of the row (server, SnapshotUTC ms), as a DBA would.
fn update_run(srv: &tds_test_server::TestServer, server: i32, ms: i64, set: &str) {
    exec_sql(srv, "MonitoringDB", &format!("UPDATE dbo.PerfSnapshotRun SET {set} WHERE ServerID = {server} AND DATEDIFF_BIG(MILLISECOND, '19700101', SnapshotUTC) = {ms}"));
}

fn sql_ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().format("'%Y-%m-%d %H:%M:%S%.3f'").to_string()
}

#[test]
fn monitoringdb_is_checked_by_its_own_group_by_and_names_what_a_dba_changed() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let a = series("SQL01", T0, 700, 1, 4);
    // DBATools_B: SQL02, and a restored copy of SQL01 rows with other SessionsCount every 30th.
    let mut b = series("SQL02", T0 + DAY / 3, 400, 1, 5);
    b.extend(copy_rows(&a[200..300], 401, 30, None));
    seed(&src, t.path(), "DBATools_A", &a, true);
    seed(&src, t.path(), "DBATools_B", &b, false);
    tgt.create_monitoringdb("MonitoringDB");
    let (fa, fb, to) = (conn(&src, "DBATools_A"), conn(&src, "DBATools_B"), conn(&tgt, "MonitoringDB"));
    copy_json(&["--from", &fa, "--from", &fb, "--to", &to, "--register-servers"]);
    let map = servers_table(&tgt, "MonitoringDB");
    let (id_a, id_b) = (map[&fold("SQL01")], map[&fold("SQL02")]);
    let args = ["--from", fa.as_str(), "--from", fb.as_str(), "--to", to.as_str()];

    let (code, report, err) = verify_values(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(report["values"]["target_side"], "server", "MonitoringDB computes its side: {report}");
    let days: BTreeSet<(i32, String)> = a.iter().map(|r| (id_a, day(r.snapshot_ms))).chain(b[..400].iter().map(|r| (id_b, day(r.snapshot_ms)))).collect();
    assert_eq!(report["values"]["days_compared"].as_u64(), Some(days.len() as u64), "{report}");
    assert!(!err.contains("Pa55"), "no password in the report: {err}");
    // The window goes into the server's query: half days compare their halves.
    let (since_arg, until_arg) = (iso_ms(T0 + DAY / 2 + 7), iso_ms(T0 + DAY + DAY / 3));
    let cut = [args.as_slice(), &["--since", &since_arg, "--until", &until_arg]].concat();
    assert_eq!(verify_values(&cut).0, Some(0), "a window cutting days");

    // One value changed: that server, day and column; then restored.
    let r = &a[333];
    update_run(&tgt, id_a, r.snapshot_ms, "SessionsCount = 999");
    let (code, report, err) = verify_values(&args);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(differing(&report), BTreeMap::from([((id_a, day(r.snapshot_ms)), vec!["SessionsCount".to_string()])]), "{report}");
    assert!(err.contains(&format!("ServerID {id_a} (SQL01), {}", day(r.snapshot_ms))) && err.contains("differs in SessionsCount"), "{err}");
    update_run(&tgt, id_a, r.snapshot_ms, &format!("SessionsCount = {}", r.v.sessions.map_or("NULL".to_string(), |v| v.to_string())));
    assert_eq!(verify_values(&args).0, Some(0), "restored");

    // A value set to NULL, then back.
    let r = b[..400].iter().find(|r| r.v.top_wait_type.is_some()).unwrap();
    update_run(&tgt, id_b, r.snapshot_ms, "TopWaitType = NULL");
    let (code, report, err) = verify_values(&args);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(differing(&report), BTreeMap::from([((id_b, day(r.snapshot_ms)), vec!["TopWaitType".to_string()])]), "{report}");
    update_run(&tgt, id_b, r.snapshot_ms, &format!("TopWaitType = N'{}'", r.v.top_wait_type.as_deref().unwrap()));
    assert_eq!(verify_values(&args).0, Some(0), "NULL restored");

    // The other source order makes B's conflicting copies the survivors: exactly their days
    // differ, in SessionsCount.
    let (code, report, err) = verify_values(&["--from", &fb, "--from", &fa, "--to", &to]);
    assert_eq!(code, Some(3), "{err}");
    let want: BTreeMap<(i32, String), Vec<String>> = (0..100).step_by(30).map(|i| ((id_a, day(a[200 + i].snapshot_ms)), vec!["SessionsCount".to_string()])).collect();
    assert_eq!(differing(&report), want, "{report}");

    // Two SQL02 rows of different days swapped: every key still there, both days differ.
    let (x, y) = (&b[5], &b[390]);
    assert_ne!(day(x.snapshot_ms), day(y.snapshot_ms));
    let parked = x.snapshot_ms - 1;
    update_run(&tgt, id_b, x.snapshot_ms, &format!("SnapshotUTC = {}", sql_ts(parked)));
    update_run(&tgt, id_b, y.snapshot_ms, &format!("SnapshotUTC = {}", sql_ts(x.snapshot_ms)));
    update_run(&tgt, id_b, parked, &format!("SnapshotUTC = {}", sql_ts(y.snapshot_ms)));
    let (code, report, err) = verify_values(&args);
    assert_eq!(code, Some(3), "{err}");
    let cols: Vec<String> = value_diff(&x.v, &y.v).into_iter().map(String::from).collect();
    assert!(!cols.is_empty());
    assert_eq!(differing(&report), BTreeMap::from([((id_b, day(x.snapshot_ms)), cols.clone()), ((id_b, day(y.snapshot_ms)), cols)]), "{report}");
    assert!(report["servers"].as_array().unwrap().iter().all(|s| s["missing"] == 0), "{report}");
}

#[test]
fn a_child_value_changed_in_the_stage_is_named_with_its_table_server_and_day() {
    let t = tempfile::tempdir().unwrap();
    let (src, stage) = (t.path().join("src"), t.path().join("stage"));
    let o = perfcopy(&["generate", "--out", s(&src), "--servers", "2", "--rows", "400", "--seed", "9", "--child-tables", "PerfSnapshotDB,PerfSnapshotMemory", "--children-scale", "0.2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    copy_json(&["--from", s(&src), "--stage", s(&stage), "--register-servers"]);
    let (code, report, err) = verify_values(&["--from", s(&src), "--stage", s(&stage)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(report["values"]["child_days_compared"].as_u64().unwrap() >= 4, "two tables, two servers: {report}");
    // A window cutting the day: the target's children of runs outside it are not compared.
    let o = perfcopy(&["verify", "--values", "--from", s(&src), "--stage", s(&stage), "--since", "2020-01-01T06:00:00Z"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // One DatabaseName of one PerfSnapshotDB row in the stage changed.
    let id = read_registry(&stage.join("servers.csv")).into_values().min().unwrap();
    let dir = stage.join("PerfSnapshotDB").join(format!("ServerID={id}"));
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    files.sort();
    let batch = read_whole(&files[0]);
    let ts = batch.column_by_name("SnapshotUTC").unwrap().as_primitive::<TimestampMillisecondType>().value(0);
    let name = batch.column_by_name("DatabaseName").unwrap().as_string::<i32>().value(0).to_string();
    rewrite(&files[0], &batch, "DatabaseName", |c| set_str(c, 0, Some(format!("{name}_renamed"))));
    let (code, report, err) = verify_values(&["--from", s(&src), "--stage", s(&stage)]);
    assert_eq!(code, Some(3), "{err}");
    let got: Vec<(String, i64, String, Vec<Value>)> = report["values"]["children_differing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["table"].as_str().unwrap().to_string(), d["server_id"].as_i64().unwrap(), d["day"].as_str().unwrap().to_string(), d["columns"].as_array().unwrap().clone()))
        .collect();
    assert_eq!(got, vec![("PerfSnapshotDB".to_string(), id as i64, day(ts), vec![Value::from("DatabaseName")])], "{report}");
    assert!(differing(&report).is_empty(), "the runs themselves are intact: {report}");
    assert!(err.contains(&format!("PerfSnapshotDB, ServerID {id} (")) && err.contains("child values: ") && err.split("child values: ").nth(1).is_some_and(|t| t.contains("DatabaseName")), "{err}");
}
