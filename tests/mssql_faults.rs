//! Faults on the SQL Server paths: dropped connections, deadlocks, a killed process, refused
//! logins, unreachable hosts. Every outcome is compared with the model's rows, and every
//! failing run is checked for the password.

mod common;

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use common::mssql::*;
use common::*;
use tds_test_server::{EarlyEnd, TestServer};

/// A source server with DBATools_A (600 rows) and a target with MonitoringDB (SQL01 = 3).
fn setup(t: &tempfile::TempDir) -> (TestServer, TestServer, Vec<SrcRow>) {
    let (src, tgt) = (server(), server());
    let a = series("SQL01", T0, 600, 1, 21);
    seed(&src, t.path(), "DBATools_A", &a, true);
    seed_target(&tgt, "MonitoringDB", &[("SQL01", 3)], &[]);
    (src, tgt, a)
}

fn map() -> NameMap {
    name_map(&[("SQL01", 3)])
}

/// Target rows equal the model for the source rows up to the ledger's LastRunID (units commit
/// with their watermark, so nothing else may be there); returns that LastRunID.
fn assert_consistent_prefix(tgt: &TestServer, a: &[SrcRow]) -> Option<i64> {
    let last = tgt.has_table("MonitoringDB", "dbo.DBAToolsSyncLog").then(|| last_success(tgt, "MonitoringDB")).and_then(|l| l.get("DBATools_A").and_then(|r| r.last_run_id));
    let done: Vec<SrcRow> = a.iter().filter(|r| last.is_some_and(|l| r.run_id <= l)).cloned().collect();
    let want = expected(&[done], &map(), Win::default(), &BTreeMap::new());
    assert_target_eq(tgt, "MonitoringDB", &want.stage);
    last
}

/// Re-run without faults: exactly the model's rows and a ledger at the source's last ID.
fn rerun_completes(src: &TestServer, tgt: &TestServer, a: &[SrcRow], resumed: Option<i64>) {
    src.faults().clear();
    tgt.faults().clear();
    let r = copy_json(&["--from", &conn(src, "DBATools_A"), "--to", &conn(tgt, "MonitoringDB"), "--batch-rows", "25"]);
    assert_eq!(r["sources"][0]["resumed_after_run_id"].as_i64(), resumed, "{r}");
    let want = expected(&[a.to_vec()], &map(), Win::default(), &BTreeMap::new());
    assert_target_eq(tgt, "MonitoringDB", &want.stage);
    assert_eq!(last_success(tgt, "MonitoringDB")["DBATools_A"].last_run_id, Some(max_run(a)));
}

#[test]
fn connection_dropped_mid_bulk_load_is_retried_without_loss_or_doubles() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, a) = setup(&t);
    tgt.faults().drop_on_bulk_load(3);
    let o = perfcopy(&["copy", "--from", &conn(&src, "DBATools_A"), "--to", &conn(&tgt, "MonitoringDB"), "--batch-rows", "50", "--json"]);
    assert_no_secret(&o, PW);
    let report = ok_json(&o);
    assert!(tgt.stats().dropped_connections >= 1, "the fault did not fire: {:?}", tgt.stats());
    let want = expected(&[a.clone()], &map(), Win::default(), &BTreeMap::new());
    assert_report(&report, &want);
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    let ls = last_success(&tgt, "MonitoringDB");
    assert_eq!((ls["DBATools_A"].last_run_id, ls["DBATools_A"].rows_copied), (Some(600), Some(600)));
}

#[test]
fn deadlocks_and_lock_timeouts_on_bulk_load_and_ledger_are_retried() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, a) = setup(&t);
    tgt.faults().deadlock_once("INSERT BULK");
    tgt.faults().deadlock_once("INSERT INTO dbo.DBAToolsSyncLog");
    tgt.faults().deadlock_once("UPDATE dbo.DBAToolsSyncLog");
    tgt.faults().timeout_once("INSERT BULK");
    let errors_before = tgt.stats().errors_sent;
    let o = perfcopy(&["copy", "--from", &conn(&src, "DBATools_A"), "--to", &conn(&tgt, "MonitoringDB"), "--batch-rows", "50", "--json"]);
    let report = ok_json(&o);
    assert!(tgt.stats().errors_sent >= errors_before + 4, "not every injected error fired: {:?}", tgt.stats());
    let want = expected(&[a.clone()], &map(), Win::default(), &BTreeMap::new());
    assert_report(&report, &want);
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    let ls = last_success(&tgt, "MonitoringDB");
    assert_eq!((ls["DBATools_A"].last_run_id, ls["DBATools_A"].rows_copied), (Some(600), Some(600)));
}

/// Spawns a copy with small batches, waits until `ready` says some batches committed, then
/// runs `act` on the running child.
fn copy_until(src: &TestServer, tgt: &TestServer, extra: &[&str], ready: impl Fn() -> bool) -> std::process::Child {
    let (from, to) = (conn(src, "DBATools_A"), conn(tgt, "MonitoringDB"));
    let mut args = vec!["copy", "--from", &from, "--to", &to, "--batch-rows", "25", "--progress", "off"];
    args.extend_from_slice(extra);
    let child = spawn_perfcopy(&args);
    wait_until("a committed batch", ready);
    child
}

#[test]
fn killed_between_batches_then_rerun_gives_exactly_the_expected_rows() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, a) = setup(&t);
    tgt.faults().delay_responses(Some(Duration::from_millis(15)));
    let mut child = copy_until(&src, &tgt, &[], || tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap() >= 50);
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let n = tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap();
    assert!(n < a.len(), "the copy finished before it was killed; slow it down more");
    let last = assert_consistent_prefix(&tgt, &a);
    assert!(last.is_some(), "rows were committed without a ledger row");
    rerun_completes(&src, &tgt, &a, last);
}

#[test]
fn source_dropped_mid_read_fails_naming_it_and_a_rerun_completes() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, a) = setup(&t);
    src.faults().delay_responses(Some(Duration::from_millis(15)));
    let child = copy_until(&src, &tgt, &[], || tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap() >= 25);
    src.faults().drop_after_rows(5);
    let o = child.wait_with_output().unwrap();
    let err = failed(&o);
    assert!(src.stats().dropped_connections >= 1, "the fault did not fire: {:?}", src.stats());
    assert!(err.contains(&label(&src, "DBATools_A")), "the error does not name the source: {err}");
    assert_no_secret(&o, PW);
    assert!(tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap() < a.len());
    let last = assert_consistent_prefix(&tgt, &a);
    rerun_completes(&src, &tgt, &a, last);
}

/// Regression: perfcopy's reply decoder ignored the status of DONE tokens, so a page reply the
/// server ended early (rows missing under a DONE_COUNT that says more, or DONE_ERROR without an
/// ERROR token) read as a short final page: the copy stopped there and exited 0.
#[test]
fn a_page_reply_ended_early_fails_naming_the_source_and_page_and_a_rerun_completes() {
    // perfcopy's own decoder, with an NVARCHAR and with a VARCHAR ServerName (code-page text,
    // read in every pass; it once made the source fall back to tiberius' decoder, whose messages
    // were "the server's DONE counts 50 rows for a result set of which 10 arrived" and "the
    // server flagged the request as failed (DONE status 0x0003) but sent no ERROR token": the
    // test server now serves no type perfcopy's decoder leaves to tiberius).
    let cases = [
        (EarlyEnd::CountMismatch, false, "DONEINPROC says the result set has 50 rows (DONE_COUNT), 10 were decoded"),
        (EarlyEnd::ErrorFlag, false, "DONEINPROC status 0x0003 (DONE_ERROR: the statement failed), without an ERROR token"),
        (EarlyEnd::CountMismatch, true, "DONEINPROC says the result set has 50 rows (DONE_COUNT), 10 were decoded"),
        (EarlyEnd::ErrorFlag, true, "DONEINPROC status 0x0003 (DONE_ERROR: the statement failed), without an ERROR token"),
    ];
    for (how, varchar, why) in cases {
        let t = tempfile::tempdir().unwrap();
        let (src, tgt, a) = setup(&t);
        if varchar {
            let cols = tds_test_server::perf_snapshot_run_columns(true, true)
                .into_iter()
                .map(|c| if c.name == "ServerName" { tds_test_server::Column::new("ServerName", tds_test_server::SqlType::varchar(Some(128)), false) } else { c })
                .collect();
            src.create_table("DBATools_A", "dbo.PerfSnapshotRun", cols, &[]).unwrap();
            add_rows(&src, t.path(), "DBATools_A", &a, true);
        }
        // The fourth page (after 150 rows) ends after 10 of its 50 rows.
        src.faults().end_reply_early("WHERE PerfSnapshotRunID >", 3, 10, how);
        let o = perfcopy(&["copy", "--from", &conn(&src, "DBATools_A"), "--to", &conn(&tgt, "MonitoringDB"), "--batch-rows", "50"]);
        let err = failed(&o);
        assert!(err.contains(&label(&src, "DBATools_A")), "{how:?}: the error does not name the source: {err}");
        let broken = 149;
        let page = format!("page after PerfSnapshotRunID {} (TOP 50)", a[broken].run_id);
        assert!(err.contains(&page) && err.contains(why), "{how:?} (VARCHAR: {varchar}): wanted '{page}' and '{why}' in: {err}");
        assert_no_secret(&o, PW);
        let n = tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap();
        assert!(n <= 150, "{how:?}: rows past the broken page reached the target ({n})");
        let last = assert_consistent_prefix(&tgt, &a);
        assert!(last.is_none_or(|l| l <= a[149].run_id), "{how:?}: the ledger is past the broken page: {last:?}");
        rerun_completes(&src, &tgt, &a, last);
    }
}

#[test]
fn login_failures_are_clear_and_leave_the_target_untouched() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, _a) = setup(&t);
    let before = target_snapshot(&tgt, "MonitoringDB");
    let wrong = "Wr0ng;Pass'word";
    let cases: Vec<(&str, String, String, &TestServer)> = vec![
        ("wrong target password", conn(&src, "DBATools_A"), conn_pw(&tgt, "MonitoringDB", wrong), &tgt),
        ("wrong source password", conn_pw(&src, "DBATools_A", wrong), conn(&tgt, "MonitoringDB"), &src),
    ];
    for (what, from, to, named) in cases {
        let o = perfcopy(&["copy", "--from", &from, "--to", &to, "--register-servers"]);
        let err = failed(&o);
        assert!(err.to_lowercase().contains("login"), "{what}: {err}");
        let db = if std::ptr::eq(named, &src) { "DBATools_A" } else { "MonitoringDB" };
        assert!(err.contains(&label(named, db)), "{what}: the error does not name the connection: {err}");
        assert_no_secret(&o, PW);
        assert_no_secret(&o, wrong);
        assert_eq!(target_snapshot(&tgt, "MonitoringDB"), before, "{what}");
    }
    tgt.faults().refuse_logins(true);
    let o = perfcopy(&["copy", "--from", &conn(&src, "DBATools_A"), "--to", &conn(&tgt, "MonitoringDB"), "--register-servers"]);
    let err = failed(&o);
    assert!(err.to_lowercase().contains("login") && err.contains(&label(&tgt, "MonitoringDB")), "{err}");
    assert_no_secret(&o, PW);
    // The same through --config, the password from an environment variable.
    let cfg = t.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[target]\nconnection = \"{}\"\npassword_env = \"PC_PW\"\n[[source]]\nconnection = \"{}\"\npassword_env = \"PC_PW\"\n",
            conn_nopw(&tgt, "MonitoringDB"),
            conn_nopw(&src, "DBATools_A")
        ),
    )
    .unwrap();
    let o = perfcopy_env(&["copy", "--config", s(&cfg)], &[("PC_PW", PW)]);
    let err = failed(&o);
    assert!(err.to_lowercase().contains("login"), "{err}");
    assert_no_secret(&o, PW);
    tgt.faults().refuse_logins(false);
    assert_eq!(target_snapshot(&tgt, "MonitoringDB"), before);
    assert!(tgt.stats().failed_logins >= 2 && src.stats().failed_logins >= 1, "{:?} {:?}", tgt.stats(), src.stats());
}

#[test]
fn unreachable_and_silent_hosts_fail_within_the_connect_timeout() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, _a) = setup(&t);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    // Accepts TCP connections (the kernel does) but never answers PRELOGIN.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let to = |port: u16| format!("Server=tcp:127.0.0.1,{port};Database=MonitoringDB;User Id=perf;Password='{}';Encrypt=DANGER_PLAINTEXT;Connect Timeout=3", PW.replace('\'', "''"));
    for (what, port, min) in [("closed port", closed_port, Duration::ZERO), ("silent listener", silent_port, Duration::from_secs(2))] {
        let started = Instant::now();
        let o = perfcopy(&["copy", "--from", &conn(&src, "DBATools_A"), "--to", &to(port)]);
        let took = started.elapsed();
        let err = failed(&o);
        assert!(took < Duration::from_secs(20) && took >= min, "{what}: took {took:?}: {err}");
        assert!(err.contains(&format!("127.0.0.1,{port}/MonitoringDB")), "{what}: {err}");
        assert_no_secret(&o, PW);
    }
    drop(silent);
    assert_eq!(tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0);
}

/// A source read as three ID ranges on three connections, killed mid-copy: the ranges commit
/// independently, so the ledger must not claim a range that was not finished.
#[test]
fn split_source_killed_mid_copy_then_rerun_gives_exactly_the_expected_rows() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, a) = setup(&t);
    tgt.faults().delay_responses(Some(Duration::from_millis(15)));
    let mut child = copy_until(&src, &tgt, &["--source-connections", "3", "--readers", "3", "--writers", "3"], || {
        tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap() >= 100
    });
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap() < a.len(), "the copy finished before it was killed");
    tgt.faults().clear();
    for split in ["3", "1"] {
        let r = copy_json(&["--from", &conn(&src, "DBATools_A"), "--to", &conn(&tgt, "MonitoringDB"), "--batch-rows", "25", "--source-connections", split]);
        let want = expected(std::slice::from_ref(&a), &map(), Win::default(), &BTreeMap::new());
        assert_target_eq(&tgt, "MonitoringDB", &want.stage);
        assert_eq!(last_success(&tgt, "MonitoringDB")["DBATools_A"].last_run_id, Some(600), "split {split}: {r}");
    }
}

#[test]
fn source_server_error_mid_copy_names_the_source_and_the_server_message() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, a) = setup(&t);
    let before = target_snapshot(&tgt, "MonitoringDB");
    // The first page of rows (perfcopy's TDS decoder reads it) fails on the server.
    let msg = "The SELECT permission was denied on the object 'PerfSnapshotRun'";
    src.faults().error_once("WHERE PerfSnapshotRunID >", tds_test_server::SqlError { number: 229, class: 14, state: 5, message: msg.into() });
    let o = perfcopy(&["copy", "--from", &conn(&src, "DBATools_A"), "--to", &conn(&tgt, "MonitoringDB"), "--register-servers"]);
    let err = failed(&o);
    assert!(err.contains(&label(&src, "DBATools_A")), "the error does not name the source: {err}");
    assert!(err.contains(msg), "the server's message is missing: {err}");
    assert_no_secret(&o, PW);
    assert_eq!(target_snapshot(&tgt, "MonitoringDB"), before, "the target changed");
    rerun_completes(&src, &tgt, &a, None);
}
