//! python-tds (PyPI `python-tds`, module `pytds`), a TDS client we did not write, reads seeded
//! rows and bulk-loads them back; expectations come from the Rust generator, not the server.
//! If `pytds` is missing the test fails when CI is set and is skipped (with a message) otherwise.

mod common;

use std::process::Command;

use common::*;
use tds_test_server::{ServerConfig, TestServer};

fn pytds_available() -> bool {
    Command::new("python3").args(["-c", "import pytds"]).status().map(|s| s.success()).unwrap_or(false)
}

fn dec(m: Option<i128>) -> serde_json::Value {
    match m {
        None => serde_json::Value::Null,
        Some(m) => {
            let s = format!("{}{}.{:04}", if m < 0 { "-" } else { "" }, m.unsigned_abs() / 10_000, m.unsigned_abs() % 10_000);
            serde_json::Value::String(s)
        }
    }
}

#[test]
fn python_tds_reads_seeded_rows_and_bulk_loads_them_back() {
    if !pytds_available() {
        if std::env::var_os("CI").is_some() {
            panic!("python module pytds is not importable; CI must `pip install python-tds`");
        }
        eprintln!("SKIPPED python_tds_reads_seeded_rows_and_bulk_loads_them_back: `import pytds` failed (pip install python-tds)");
        return;
    }
    let srv = TestServer::start(ServerConfig { packet_size: Some(512), password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools_P", true);
    srv.create_monitoringdb("MonitoringDB");
    let rows = src_rows(97);
    srv.insert_batch("DBATools_P", "dbo.PerfSnapshotRun", &src_batch(&rows, true)).unwrap();

    let expected: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "PerfSnapshotRunID": r.id,
                "SnapshotUTC": r.snapshot.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                "ServerID": r.server_id,
                "ServerName": r.server_name,
                "SqlVersion": r.sql_version,
                "CpuSignalWaitPct": dec(r.cpu),
                "TopWaitType": r.top_wait,
                "TopWaitMsPerSec": dec(r.wait_ms),
                "SessionsCount": r.counts[0],
                "RequestsCount": r.counts[1],
                "BlockingSessionCount": r.counts[2],
                "DeadlockCountRecent": r.counts[3],
                "MemoryGrantWarningCount": r.counts[4],
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expected.json");
    std::fs::write(&path, serde_json::to_string(&expected).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pytds_check.py");
    let out = Command::new("python3").arg(script).arg(srv.addr().ip().to_string()).arg(srv.addr().port().to_string()).arg(PASSWORD).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pytds script failed:\nstdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("PYTDS-OK {} {}", rows.len(), rows.len())), "{stdout}");

    // What python-tds bulk-loaded, as the server decoded it, equals the generator's rows.
    let want: Vec<SrcRow> = rows.iter().map(|r| SrcRow { server_id: Some(r.server_id.unwrap_or(-1)), ..r.clone() }).collect();
    assert_eq!(from_batch(&srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap()), want);
    assert_eq!(srv.stats().bulk_rows_received, rows.len() as u64);
}
