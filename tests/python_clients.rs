//! SQL Server clients we did not write, against the TDS test server and perfcopy:
//! mssql-python (Microsoft's: ODBC Driver 18 for queries, its Rust core for bulkcopy), pymssql
//! (FreeTDS db-lib), connectorx (Rust, its own tiberius) and FreeTDS' freebcp. Each reads a
//! DBATools table, reads what perfcopy loaded into MonitoringDB, or bulk-loads rows that
//! perfcopy then copies to a Parquet stage; every value is compared with the rows the test
//! generated (tests/common's model), never with what the server or perfcopy say.
//!
//! The scripts are in tests/python; the password goes to them in an environment variable.
//! A client that cannot be imported (or run) skips its test with the reason printed, except
//! when `CI` is set: there it fails (`.ci/run` installs them).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mssql::*;
use common::*;
use serde_json::{json, Value as Json};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");

/// True when `check` succeeds; else prints why the test skips, or panics under CI.
fn require(test: &str, check: &mut Command, install: &str) -> bool {
    if check.output().map(|o| o.status.success()).unwrap_or(false) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {check:?} fails and CI is set: {install} (see .ci/run)");
    }
    eprintln!("SKIPPED {test}: {check:?} fails ({install})");
    false
}

fn require_module(test: &str, module: &str, package: &str) -> bool {
    require(test, Command::new("python3").args(["-c", &format!("import {module}")]), &format!("pip install {package}"))
}

fn dec(m: Option<i128>) -> Json {
    m.map(|m| json!(format!("{}{}.{:04}", if m < 0 { "-" } else { "" }, m.unsigned_abs() / 10_000, m.unsigned_abs() % 10_000))).unwrap_or(Json::Null)
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("test timestamps are in range").naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// The value columns every PerfSnapshotRun has, after the key columns.
fn values_json(m: &mut serde_json::Map<String, Json>, v: &Values) {
    m.insert("SqlVersion".into(), json!(v.sql_version));
    m.insert("CpuSignalWaitPct".into(), dec(v.cpu_signal_wait_pct));
    m.insert("TopWaitType".into(), json!(v.top_wait_type));
    m.insert("TopWaitMsPerSec".into(), dec(v.top_wait_ms_per_sec));
    for (k, x) in [("SessionsCount", v.sessions), ("RequestsCount", v.requests), ("BlockingSessionCount", v.blocking), ("DeadlockCountRecent", v.deadlocks), ("MemoryGrantWarningCount", v.grant_warnings)] {
        m.insert(k.into(), json!(x));
    }
}

/// DBATools rows as the scripts' JSON (all 13 columns, table order).
fn source_json(rows: &[SrcRow], path: &Path) -> PathBuf {
    let list: Vec<Json> = rows
        .iter()
        .map(|r| {
            let mut m = serde_json::Map::new();
            m.insert("PerfSnapshotRunID".into(), json!(r.run_id));
            m.insert("SnapshotUTC".into(), json!(time(r.snapshot_ms)));
            m.insert("ServerID".into(), json!(r.server_id));
            m.insert("ServerName".into(), json!(r.server_name));
            values_json(&mut m, &r.v);
            Json::Object(m)
        })
        .collect();
    std::fs::write(path, serde_json::to_vec(&list).unwrap()).unwrap();
    path.to_path_buf()
}

/// MonitoringDB rows (no identity) as the scripts' JSON, in (ServerID, SnapshotUTC) order.
fn target_json(rows: &BTreeMap<(i32, i64), Row>, path: &Path) -> PathBuf {
    let list: Vec<Json> = rows
        .values()
        .map(|r| {
            let mut m = serde_json::Map::new();
            m.insert("SnapshotUTC".into(), json!(time(r.snapshot_ms)));
            m.insert("ServerID".into(), json!(r.server_id));
            m.insert("ServerName".into(), json!(r.server_name));
            values_json(&mut m, &r.v);
            Json::Object(m)
        })
        .collect();
    std::fs::write(path, serde_json::to_vec(&list).unwrap()).unwrap();
    path.to_path_buf()
}

/// Source rows with the edge values a client must carry exactly: NULLs, DECIMAL(9,4) and
/// DECIMAL(18,4) at full precision both signs, integer limits, non-ASCII and emoji text,
/// `HOST\INSTANCE`, .000 and .999 milliseconds.
fn client_rows(name: &str, n: usize, seed: u64) -> Vec<SrcRow> {
    let mut rows = series(name, T0 + seed as i64 * DAY, n, 1, seed);
    let last = rows.len() as i64;
    let edge = Values {
        sql_version: "Microsoft SQL Server 2019 — Ωmega 😀".into(),
        cpu_signal_wait_pct: Some(-999_999_999),
        top_wait_type: Some("Ünïcødé 東京 'q' \\".into()),
        top_wait_ms_per_sec: Some(999_999_999_999_999_999),
        sessions: Some(i32::MAX),
        requests: Some(i32::MIN),
        blocking: None,
        deadlocks: Some(0),
        grant_warnings: None,
    };
    let t = rows.last().map(|r| r.snapshot_ms).unwrap_or(T0) / 1000 * 1000 + MIN5;
    rows.push(SrcRow { run_id: last + 1, snapshot_ms: t, server_id: None, server_name: name.into(), v: edge.clone() });
    let v = Values { cpu_signal_wait_pct: Some(999_999_999), top_wait_ms_per_sec: Some(-999_999_999_999_999_999), ..edge };
    rows.push(SrcRow { run_id: last + 2, snapshot_ms: t + 999, server_id: Some(3), server_name: name.into(), v });
    rows
}

/// Runs `tests/python/<script>` with `args` (password in PERFCOPY_CLIENT_PW); asserts it
/// succeeded and printed `expect`; returns stdout.
fn run_script(script: &str, args: &[&str], expect: &str) -> String {
    let out = Command::new("python3").arg(Path::new(SCRIPTS).join(script)).args(args).env("PERFCOPY_CLIENT_PW", PW).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains(expect), "{script} {args:?} (want '{expect}'):\nstdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains(PW) && !stderr.contains(PW), "{script} printed the password");
    stdout
}

/// perfcopy copies DBATools `db` into the MonitoringDB `target` on the same server, registering
/// the server; returns what the target must then hold (the model's answer).
fn perfcopy_to_monitoringdb(srv: &tds_test_server::TestServer, db: &str, target: &str, rows: &[SrcRow]) -> BTreeMap<(i32, i64), Row> {
    srv.create_monitoringdb(target);
    copy_json(&["--from", &conn_wire(srv, db, PW, Wire::Tls), "--to", &conn_wire(srv, target, PW, Wire::Tls), "--register-servers"]);
    let map = name_map(&[(rows[0].server_name.as_str(), 1)]);
    let want = expected(&[rows.to_vec()], &map, Win::default(), &BTreeMap::new()).stage;
    assert_target_eq(srv, target, &want);
    want
}

/// perfcopy copies DBATools `db` to a Parquet stage; asserts the stage holds `rows` (the rows a
/// client bulk-loaded) exactly.
fn perfcopy_stage_equals(srv: &tds_test_server::TestServer, db: &str, rows: &[SrcRow], dir: &Path) {
    let stage = dir.join(format!("stage-{db}"));
    copy_json(&["--from", &conn_wire(srv, db, PW, Wire::Tls), "--stage", s(&stage), "--register-servers"]);
    let map = name_map(&[(rows[0].server_name.as_str(), 1)]);
    let want = expected(&[rows.to_vec()], &map, Win::default(), &BTreeMap::new()).stage;
    assert_stage_eq(&stage, &want);
}

/// A DB-API client's three operations: read DBATools, read what perfcopy loaded into
/// MonitoringDB, bulk-load DBATools rows that perfcopy copies to a stage.
fn dbapi_client_round_trip(script: &str, tag: &str) {
    let t = tempfile::tempdir().unwrap();
    let srv = server();
    let port = srv.addr().port().to_string();

    let rows = client_rows("SQL01\\PROD", 40, 1);
    seed(&srv, t.path(), "DBATools", &rows, true);
    let src = source_json(&rows, &t.path().join("source.json"));
    run_script(script, &[&port, "DBATools", "read", "dbo.PerfSnapshotRun", s(&src), "PerfSnapshotRunID"], &format!("{tag}-READ {}", rows.len()));

    let want = perfcopy_to_monitoringdb(&srv, "DBATools", "MonitoringDB", &rows);
    let tgt = target_json(&want, &t.path().join("target.json"));
    run_script(script, &[&port, "MonitoringDB", "read", "dbo.PerfSnapshotRun", s(&tgt), "ServerID, SnapshotUTC"], &format!("{tag}-READ {}", want.len()));

    let loaded = client_rows("Zürich-東京\\INST", 30, 2);
    srv.create_dbatools("DBATools_Bulk", true);
    let bulk = source_json(&loaded, &t.path().join("bulk.json"));
    run_script(script, &[&port, "DBATools_Bulk", "bulk", "dbo.PerfSnapshotRun", s(&bulk)], &format!("{tag}-BULK {}", loaded.len()));
    assert_eq!(srv.row_count("DBATools_Bulk", "dbo.PerfSnapshotRun").unwrap(), loaded.len());
    perfcopy_stage_equals(&srv, "DBATools_Bulk", &loaded, t.path());
}

#[test]
fn mssql_python_reads_dbatools_and_monitoringdb_and_bulk_loads_for_perfcopy() {
    if !require_module("mssql_python", "mssql_python", "mssql-python (and Debian's libltdl7)") {
        return;
    }
    dbapi_client_round_trip("mssql_python_check.py", "MSSQL-PYTHON");
}

#[test]
fn pymssql_reads_dbatools_and_monitoringdb_and_bulk_loads_for_perfcopy() {
    if !require_module("pymssql", "pymssql", "pymssql") {
        return;
    }
    // FreeTDS (1.5, bundled) declares `[SnapshotUTC] DATETIME2` (scale 7) in INSERT BULK for the
    // DATETIME2(3) column and sends COLMETADATA of that declaration; the server converts the
    // values to the column's type, as SQL Server converts a bcp client's declared types. (A
    // COLMETADATA that disagrees with the declaration is refused: tiberius-rs/tiberius#234.)
    dbapi_client_round_trip("pymssql_check.py", "PYMSSQL");
}

#[test]
fn connectorx_reads_dbatools_and_monitoringdb() {
    if !require_module("connectorx", "connectorx", "connectorx") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let srv = server();
    let port = srv.addr().port().to_string();
    let rows = client_rows("SQL01\\PROD", 40, 3);
    seed(&srv, t.path(), "DBATools", &rows, true);
    let src = source_json(&rows, &t.path().join("source.json"));
    run_script("connectorx_check.py", &[&port, "DBATools", "dbo.PerfSnapshotRun", s(&src), "PerfSnapshotRunID"], &format!("CONNECTORX-READ {}", rows.len()));
    let want = perfcopy_to_monitoringdb(&srv, "DBATools", "MonitoringDB", &rows);
    let tgt = target_json(&want, &t.path().join("target.json"));
    run_script("connectorx_check.py", &[&port, "MonitoringDB", "dbo.PerfSnapshotRun", s(&tgt), "ServerID, SnapshotUTC"], &format!("CONNECTORX-READ {}", want.len()));
}

/// Model values as freebcp's character format writes them: tab-separated, NULL as an empty
/// field, DATETIME2(3) with its milliseconds, DECIMAL with all four scale digits.
fn bcp_line(head: &[String], snapshot_ms: i64, server_id: Option<i32>, server_name: &str, v: &Values) -> String {
    let d = |m: Option<i128>| dec(m).as_str().map(str::to_string).unwrap_or_default();
    let i = |x: Option<i32>| x.map(|x| x.to_string()).unwrap_or_default();
    let t = chrono::DateTime::from_timestamp_millis(snapshot_ms).expect("test timestamps are in range").naive_utc().format("%Y-%m-%d %H:%M:%S%.3f");
    let mut f = head.to_vec();
    f.extend([t.to_string(), i(server_id), server_name.to_string(), v.sql_version.clone(), d(v.cpu_signal_wait_pct), v.top_wait_type.clone().unwrap_or_default(), d(v.top_wait_ms_per_sec)]);
    f.extend([v.sessions, v.requests, v.blocking, v.deadlocks, v.grant_warnings].map(i));
    f.join("\t")
}

/// A DBATools row, all 13 columns in table order.
fn bcp_source_line(r: &SrcRow) -> String {
    bcp_line(&[r.run_id.to_string()], r.snapshot_ms, r.server_id, &r.server_name, &r.v)
}

/// Runs freebcp against `srv` (TLS required, UTF-8 client charset); asserts it succeeded and
/// never printed the password.
fn freebcp(srv: &tds_test_server::TestServer, dir: &Path, args: &[&str]) -> String {
    let conf = dir.join("freetds.conf");
    std::fs::write(&conf, format!("[perfcopy-test]\nhost = 127.0.0.1\nport = {}\ntds version = 7.4\nencryption = require\nclient charset = UTF-8\n", srv.addr().port())).unwrap();
    let out = Command::new("freebcp").args(args).args(["-S", "perfcopy-test", "-U", "perf", "-P", PW, "-c"]).env("FREETDSCONF", &conf).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("rows copied"), "freebcp {args:?}:\n{text}");
    assert!(!text.contains(PW), "freebcp printed the password");
    text
}

#[test]
fn freebcp_reads_dbatools_and_monitoringdb_and_bulk_loads_for_perfcopy() {
    // freebcp has no option that exits 0 without connecting, so the shell looks it up.
    if !require("freebcp", Command::new("sh").args(["-c", "command -v freebcp"]), "apt-get install freetds-bin") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let srv = server();
    // In: the model's rows as a character-format file, identity values kept (-E); perfcopy then
    // copies them to a stage, compared with the model.
    let loaded = client_rows("Zürich-東京\\INST", 30, 4);
    srv.create_dbatools("DBATools_Bulk", true);
    let file = t.path().join("in.tsv");
    std::fs::write(&file, loaded.iter().map(|r| bcp_source_line(r) + "\n").collect::<String>()).unwrap();
    freebcp(&srv, t.path(), &["DBATools_Bulk.dbo.PerfSnapshotRun", "in", s(&file), "-E"]);
    assert_eq!(srv.row_count("DBATools_Bulk", "dbo.PerfSnapshotRun").unwrap(), loaded.len());
    perfcopy_stage_equals(&srv, "DBATools_Bulk", &loaded, t.path());

    // Out: a DBATools seeded by the test, read with queryout, line for line the model's.
    let rows = client_rows("SQL01\\PROD", 40, 5);
    seed(&srv, t.path(), "DBATools", &rows, true);
    let out = t.path().join("out.tsv");
    freebcp(&srv, t.path(), &["SELECT * FROM DBATools.dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID", "queryout", s(&out)]);
    let got = std::fs::read_to_string(&out).unwrap();
    let want: Vec<String> = rows.iter().map(bcp_source_line).collect();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);

    // What perfcopy loaded into MonitoringDB, in (ServerID, SnapshotUTC) order.
    let loaded_by_perfcopy = perfcopy_to_monitoringdb(&srv, "DBATools", "MonitoringDB", &rows);
    let out = t.path().join("target.tsv");
    let cols = "SnapshotUTC, ServerID, ServerName, SqlVersion, CpuSignalWaitPct, TopWaitType, TopWaitMsPerSec, SessionsCount, RequestsCount, BlockingSessionCount, DeadlockCountRecent, MemoryGrantWarningCount";
    freebcp(&srv, t.path(), &[&format!("SELECT {cols} FROM MonitoringDB.dbo.PerfSnapshotRun ORDER BY ServerID, SnapshotUTC"), "queryout", s(&out)]);
    let got = std::fs::read_to_string(&out).unwrap();
    let want: Vec<String> = loaded_by_perfcopy.values().map(|r| bcp_line(&[], r.snapshot_ms, Some(r.server_id), &r.server_name, &r.v)).collect();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
}
