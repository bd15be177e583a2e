//! python-tds (PyPI `python-tds`, module `pytds`), a TDS client we did not write, reads seeded
//! rows and bulk-loads them back; expectations come from the Rust generator, not the server.
//! One test runs the server in-process; the other starts the standalone binary
//! (`src/bin/tds_test_server.rs`) seeded from a Parquet file the test writes, and reads the
//! bulk-loaded rows back through tiberius.
//! If `pytds` is missing the tests fail when CI is set and are skipped (with a message) otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use tds_test_server::{ServerConfig, TestServer, TlsMode};

/// True when `python3 -c CHECK` succeeds.
fn python_can(check: &str) -> bool {
    Command::new("python3").args(["-c", check]).status().map(|s| s.success()).unwrap_or(false)
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

/// False (after printing why) when the test must be skipped because `python3 -c check`
/// fails (`pip install package` mends it); panics under CI.
fn require_python(test: &str, check: &str, package: &str) -> bool {
    if python_can(check) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("`python3 -c \"{check}\"` fails; CI must `pip install {package}` (scripts/requirements-test.txt)");
    }
    eprintln!("SKIPPED {test}: `{check}` failed (pip install {package})");
    false
}

fn require_pytds(test: &str) -> bool {
    require_python(test, "import pytds", "python-tds")
}

/// The JSON the python script compares every read value with (computed from the generator).
fn expected_json(rows: &[SrcRow], dir: &Path) -> PathBuf {
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
    let path = dir.join("expected.json");
    std::fs::write(&path, serde_json::to_string(&expected).unwrap()).unwrap();
    path
}

/// Runs tests/python/pytds_check.py; asserts it read and bulk-loaded `n` rows.
fn run_pytds_script(addr: SocketAddr, expected: &Path, n: usize) {
    run_pytds_script_with(addr, expected, n, &[]);
}

/// [`run_pytds_script`] with the script's encryption arguments (`tls CAFILE`, `login-only CAFILE`).
fn run_pytds_script_with(addr: SocketAddr, expected: &Path, n: usize, mode: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pytds_check.py");
    let out = Command::new("python3").arg(script).arg(addr.ip().to_string()).arg(addr.port().to_string()).arg(PASSWORD).arg(expected).args(mode).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pytds script failed:\nstdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("PYTDS-OK {n} {n}")), "{stdout}");
}

/// The target rows python-tds' copy_to loads (ServerID NULL becomes -1, NOT NULL in the target).
fn bulk_expected(rows: &[SrcRow]) -> Vec<SrcRow> {
    rows.iter().map(|r| SrcRow { server_id: Some(r.server_id.unwrap_or(-1)), ..r.clone() }).collect()
}

#[test]
fn python_tds_reads_seeded_rows_and_bulk_loads_them_back() {
    if !require_pytds("python_tds_reads_seeded_rows_and_bulk_loads_them_back") {
        return;
    }
    let srv = TestServer::start(ServerConfig { packet_size: Some(512), password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools_P", true);
    srv.create_monitoringdb("MonitoringDB");
    let rows = src_rows(97);
    srv.insert_batch("DBATools_P", "dbo.PerfSnapshotRun", &src_batch(&rows, true)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    run_pytds_script(srv.addr(), &expected_json(&rows, dir.path()), rows.len());

    // What python-tds bulk-loaded, as the server decoded it, equals the generator's rows.
    assert_eq!(from_batch(&srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap()), bulk_expected(&rows));
    assert_eq!(srv.stats().bulk_rows_received, rows.len() as u64);
}

/// python-tds encrypts with pyOpenSSL.
fn require_pyopenssl(test: &str) -> bool {
    require_pytds(test) && require_python(test, "import pytds.tls, OpenSSL; assert pytds.tls.OPENSSL_AVAILABLE", "pyOpenSSL")
}

/// python-tds over TLS (OpenSSL as the TLS engine, another implementation than the server's
/// rustls), validating the server's certificate against the test CA and the name localhost:
/// the whole session encrypted (ENCRYPT_ON), then only the login (ENCRYPT_OFF), reading and
/// bulk-loading every value; a server that requires encryption refuses pytds without TLS.
#[test]
fn python_tds_over_tls_and_login_only_encryption() {
    if !require_pyopenssl("python_tds_over_tls_and_login_only_encryption") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("test-ca.pem");
    std::fs::write(&ca, tds_test_server::ca_certificate_pem().unwrap()).unwrap();
    let ca = ca.to_str().unwrap();
    let rows = src_rows(97);
    let expected = expected_json(&rows, dir.path());
    for (mode, handshakes, login_only) in [("tls", 2, 0), ("login-only", 2, 2)] {
        let srv = TestServer::start(ServerConfig { packet_size: Some(512), password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
        srv.create_dbatools("DBATools_P", true);
        srv.create_monitoringdb("MonitoringDB");
        srv.insert_batch("DBATools_P", "dbo.PerfSnapshotRun", &src_batch(&rows, true)).unwrap();
        run_pytds_script_with(srv.addr(), &expected, rows.len(), &[mode, ca]);
        assert_eq!(from_batch(&srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap()), bulk_expected(&rows), "{mode}");
        let s = srv.stats();
        assert_eq!((s.tls_handshakes, s.login_only_encryption, s.logins), (handshakes, login_only, 2), "{mode}");
    }

    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), tls: TlsMode::Required, ..Default::default() }).unwrap();
    let out = Command::new("python3")
        .args(["-c", "import sys, pytds\ntry:\n    pytds.connect(server=sys.argv[1], port=int(sys.argv[2]), user='u', password=sys.argv[3])\nexcept Exception as e:\n    print('REFUSED', e)\nelse:\n    print('CONNECTED')"])
        .arg(srv.addr().ip().to_string())
        .arg(srv.addr().port().to_string())
        .arg(PASSWORD)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("REFUSED") && stdout.contains("required by server"), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((srv.stats().encryption_refusals, srv.stats().logins), (1, 0));
}

/// The standalone server process; killed by its PID (and its stdin closed) when dropped, so a
/// failing assertion never leaves it running.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(args: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tds_test_server"))
            .args(args)
            .arg("--stop-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tds_test_server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("READY ") {
                        break a.trim().parse::<SocketAddr>().unwrap_or_else(|e| panic!("READY line '{l}': {e}"));
                    }
                    seen.push(l);
                }
                other => {
                    let status = child.wait();
                    panic!("tds_test_server ended before READY ({other:?}, {status:?}); output: {seen:?}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        assert_ne!(addr.port(), 0, "READY must name the bound port");
        ServerProcess { child, addr }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Child::kill signals this child's own PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_parquet(path: &Path, batch: &arrow::record_batch::RecordBatch) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_seeded_from_parquet_serves_python_tds_and_decodes_its_bulk_copy() {
    if !require_pytds("standalone_server_seeded_from_parquet_serves_python_tds_and_decodes_its_bulk_copy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rows = src_rows(131);
    // The generator covers what the issue asks for; check so a generator edit cannot drop it.
    assert!(rows.iter().any(|r| r.cpu == Some(MAX_9_4)) && rows.iter().any(|r| r.cpu == Some(-MAX_9_4)));
    assert!(rows.iter().any(|r| r.wait_ms == Some(MAX_18_4)) && rows.iter().any(|r| r.wait_ms == Some(-MAX_18_4)));
    assert!(rows.iter().any(|r| r.server_id.is_none() && r.cpu.is_none() && r.top_wait.is_none()));
    assert!(rows.iter().any(|r| !r.server_name.is_ascii()));
    assert!(rows.iter().any(|r| r.snapshot.and_utc().timestamp_subsec_millis() % 10 != 0));
    let seed = dir.path().join("seed.parquet");
    write_parquet(&seed, &src_batch(&rows, true));
    let seed_arg = seed.to_str().unwrap();
    let srv = ServerProcess::start(&["--port", "0", "--seed-parquet", seed_arg, "--database", "DBATools_P", "--password", PASSWORD, "--packet-size", "512"]);

    let addr = srv.addr;
    let expected = expected_json(&rows, dir.path());
    tokio::task::spawn_blocking(move || run_pytds_script(addr, &expected, rows.len())).await.unwrap();

    // A second client reads back what the server decoded from python-tds' bulk copy.
    let rows = src_rows(131);
    let mut c = connect(srv.addr, "MonitoringDB", Some(4096)).await.unwrap();
    let got = c.query("SELECT * FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID", &[]).await.unwrap().into_first_result().await.unwrap();
    assert_eq!(got.iter().map(|r| from_tiberius(r, true)).collect::<Vec<_>>(), bulk_expected(&rows));
    // And the Parquet seed, read by tiberius too, equals the generator (ids 1..=n in file order).
    let mut c = connect(srv.addr, "DBATools_P", None).await.unwrap();
    let seeded = c.query("SELECT * FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID", &[]).await.unwrap().into_first_result().await.unwrap();
    assert_eq!(seeded.iter().map(|r| from_tiberius(r, true)).collect::<Vec<_>>(), rows);
    drop(srv);
}
