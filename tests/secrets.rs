//! Credential hygiene: every failure mode that involves a connection is run twice — the
//! password in the connection string, and the password in an environment variable named by the
//! config's `password_env` — with `--log debug` and `--json`, and the password (and its
//! distinctive letters) must appear in no stdout, stderr, log line or JSON. Successful runs
//! and an interrupted run are checked the same way.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::mssql::*;
use common::*;
use tds_test_server::TestServer;

/// How the password reaches perfcopy.
#[derive(Clone, Copy, Debug)]
enum Via {
    ConnectionString,
    PasswordEnv,
}

const ENV: &str = "PERFCOPY_TEST_SECRET";

/// A copy from `from_db` on `src` to `to_db` on `tgt` (or `to_override`, a full connection
/// string without password), with `extra` flags, `--log debug --json`; returns the output.
fn run(t: &tempfile::TempDir, via: Via, from: &str, to: &str, pw: &str, extra: &[&str]) -> Output {
    let quoted = pw.replace('\'', "''");
    let mut args: Vec<String> = vec!["copy".into(), "--log".into(), "debug".into(), "--json".into()];
    match via {
        Via::ConnectionString => {
            args.extend(["--from".into(), format!("{from};Password='{quoted}'"), "--to".into(), format!("{to};Password='{quoted}'")]);
        }
        Via::PasswordEnv => {
            let cfg = t.path().join("secrets.toml");
            let toml_str = |s: &str| toml::Value::String(s.to_string()).to_string();
            std::fs::write(
                &cfg,
                format!("[target]\nconnection = {}\npassword_env = \"{ENV}\"\n[[source]]\nconnection = {}\npassword_env = \"{ENV}\"\n", toml_str(to), toml_str(from)),
            )
            .unwrap();
            args.extend(["--config".into(), cfg.display().to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    perfcopy_env(&a, &[(ENV, pw)])
}

fn check(what: &str, via: Via, o: &Output, pw: &str, want_ok: bool) {
    assert_eq!(o.status.success(), want_ok, "{what} via {via:?}: exit {:?}: {}", o.status.code(), stderr(o));
    assert!(!stderr(o).contains("panicked"), "{what} via {via:?}: {}", stderr(o));
    let out = all_output(o);
    assert!(!out.contains(pw), "{what} via {via:?}: the password is in the output:\n{out}");
    let core: String = pw.chars().filter(|c| c.is_alphanumeric()).collect();
    assert!(!out.contains(&core), "{what} via {via:?}: the password's letters are in the output:\n{out}");
    assert!(!out.contains(&pw.replace('\'', "''")), "{what} via {via:?}: the quoted password is in the output");
    // The debug log really was on (so a leak through it would have shown).
    assert!(stderr(o).contains("DEBUG") || !want_ok, "{what} via {via:?}: no debug log lines");
}

fn nopw(srv: &TestServer, db: &str) -> String {
    format!("Server=tcp:127.0.0.1,{};Database={db};User Id=perf;Encrypt=DANGER_PLAINTEXT;Connect Timeout=2", srv.addr().port())
}

#[test]
fn no_failure_mode_prints_the_password() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let rows = [series("SQL01", T0, 60, 1, 3), series("SQL02", T0, 60, 61, 4)].concat();
    seed(&src, t.path(), "DBATools_A", &rows, true);
    seed_target(&tgt, "MonitoringDB", &[("SQL01", 1)], &[]);
    seed(&src, t.path(), "DBATools_99", &series("SQL99", T0, 10, 1, 9), true);
    src.create_database("DBATools_NoTable");
    let cols: Vec<tds_test_server::Column> = tds_test_server::perf_snapshot_run_columns(true, true).into_iter().filter(|c| c.name != "SqlVersion").collect();
    src.create_table("DBATools_NoVer", "dbo.PerfSnapshotRun", cols, &[]).unwrap();
    seed_target(&tgt, "MonitoringDB_Odd", &[("SQL01", 1), ("SQL02", 2)], &[]);
    let odd: Vec<tds_test_server::Column> = tds_test_server::perf_snapshot_run_columns(true, false).into_iter().filter(|c| c.name != "TopWaitType").collect();
    tgt.create_table("MonitoringDB_Odd", "dbo.PerfSnapshotRun", odd, &[]).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let at = |port: u16, db: &str| format!("Server=tcp:127.0.0.1,{port};Database={db};User Id=perf;Encrypt=DANGER_PLAINTEXT;Connect Timeout=2");

    let from = nopw(&src, "DBATools_A");
    let to = nopw(&tgt, "MonitoringDB");
    let wrong = "Wr0ng;Pass'word=x";
    for via in [Via::ConnectionString, Via::PasswordEnv] {
        // (what, from, to, password, extra flags, succeeds)
        let cases: Vec<(&str, String, String, &str, Vec<&str>, bool)> = vec![
            ("wrong password (both sides)", from.clone(), to.clone(), wrong, vec![], false),
            ("unknown servers without --register-servers", nopw(&src, "DBATools_99"), to.clone(), PW, vec![], false),
            ("unreachable target (closed port)", from.clone(), at(closed_port, "MonitoringDB"), PW, vec![], false),
            ("silent target (connect timeout)", from.clone(), at(silent_port, "MonitoringDB"), PW, vec![], false),
            ("unknown target database", from.clone(), nopw(&tgt, "NoSuchDB"), PW, vec![], false),
            ("unreachable source", at(closed_port, "DBATools_A"), to.clone(), PW, vec![], false),
            ("missing source table", nopw(&src, "DBATools_NoTable"), to.clone(), PW, vec![], false),
            ("missing source column", nopw(&src, "DBATools_NoVer"), to.clone(), PW, vec![], false),
            ("target table with different columns", from.clone(), nopw(&tgt, "MonitoringDB_Odd"), PW, vec!["--register-servers"], false),
            ("bad flag next to a connection", from.clone(), to.clone(), PW, vec!["--batch-rows", "0"], false),
            ("--since after --until", from.clone(), to.clone(), PW, vec!["--since", "2024-02-01", "--until", "2024-01-01"], false),
            ("malformed port", from.clone(), format!("Server=tcp:127.0.0.1,notaport;Database=MonitoringDB;User Id=perf"), PW, vec![], false),
            ("dry run", from.clone(), to.clone(), PW, vec!["--register-servers", "--dry-run"], true),
            ("success", from.clone(), to.clone(), PW, vec!["--register-servers"], true),
            ("re-run (nothing to do)", from.clone(), to.clone(), PW, vec!["--register-servers"], true),
        ];
        for (what, f, to_, pw, extra, ok) in cases {
            let o = run(&t, via, &f, &to_, pw, &extra);
            check(what, via, &o, pw, ok);
        }
        // A dropped connection mid bulk load (retried) and a deadlock: the retry messages too.
        tgt.faults().drop_on_bulk_load(1);
        tgt.faults().deadlock_once("INSERT BULK");
        let o = run(&t, via, &from, &nopw(&tgt, "MonitoringDB_Faults"), PW, &["--register-servers", "--batch-rows", "20", "--retries", "1"]);
        check("login to a missing database after faults armed", via, &o, PW, false);
        tgt.faults().clear();
    }
    drop(silent);
}

/// Retried faults (dropped connection, deadlock) and a source cut mid-read: the warnings, the
/// Failed ledger row and the error must not carry the password.
#[test]
fn faults_retries_and_the_failed_ledger_row_carry_no_password() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let rows = series("SQL01", T0, 300, 1, 3);
    seed(&src, t.path(), "DBATools_A", &rows, true);
    seed_target(&tgt, "MonitoringDB", &[("SQL01", 1)], &[]);
    let (from, to) = (nopw(&src, "DBATools_A"), nopw(&tgt, "MonitoringDB"));
    for via in [Via::ConnectionString, Via::PasswordEnv] {
        tgt.faults().drop_on_bulk_load(2);
        tgt.faults().deadlock_once("INSERT BULK");
        let o = run(&t, via, &from, &to, PW, &["--batch-rows", "50"]);
        check("dropped connection and deadlock, retried", via, &o, PW, true);
        tgt.faults().clear();
    }
    // A source cut mid-read fails the run; the Failed ledger row's ErrorMessage is scrubbed too.
    seed(&src, t.path(), "DBATools_B", &series("SQL01", T0 + 400 * MIN5, 300, 1, 5), true);
    src.faults().drop_after_rows(120);
    let o = run(&t, Via::ConnectionString, &nopw(&src, "DBATools_B"), &to, PW, &["--batch-rows", "50"]);
    check("source dropped mid-read", Via::ConnectionString, &o, PW, false);
    src.faults().clear();
    if tgt.has_table("MonitoringDB", "dbo.DBAToolsSyncLog") {
        let b = tgt.table_batch("MonitoringDB", "dbo.DBAToolsSyncLog").unwrap();
        let text = format!("{}", arrow::util::pretty::pretty_format_batches(&[b]).unwrap());
        let core: String = PW.chars().filter(|c| c.is_alphanumeric()).collect();
        assert!(!text.contains(PW) && !text.contains(&core), "the ledger holds the password:\n{text}");
    }
}

/// Ctrl-C mid-copy with `--log debug`: the interrupted run's output carries no password.
#[test]
fn an_interrupted_run_prints_no_password() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    seed(&src, t.path(), "DBATools_A", &series("SQL01", T0, 3000, 1, 3), true);
    seed_target(&tgt, "MonitoringDB", &[("SQL01", 1)], &[]);
    tgt.faults().delay_responses(Some(Duration::from_millis(10)));
    let (from, to) = (conn(&src, "DBATools_A"), conn(&tgt, "MonitoringDB"));
    let child = spawn_perfcopy(&["copy", "--log", "debug", "--json", "--progress", "plain", "--batch-rows", "25", "--from", &from, "--to", &to]);
    wait_until("50 committed rows", || tgt.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap() >= 50);
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert_no_secret(&o, PW);
}

/// Entra ID (Azure AD) access tokens instead of SQL logins: `access_token_env` and
/// `access_token_file` in the config, FEDAUTH in LOGIN7; a refused token is a clear login
/// error, and no token appears in any output or debug log.
#[test]
fn entra_id_access_tokens_log_in_and_never_show() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let a = series("SQL01", T0, 90, 1, 41);
    seed(&src, t.path(), "DBATools", &a, true);
    seed_target(&tgt, "MonitoringDB", &[("SQL01", 2)], &[]);
    let (src_token, tgt_token) = ("eyJ0eXAiOiJKV1Qi.srcTOKENpayload.sig1", "eyJ0eXAiOiJKV1Qi.tgtTOKENpayload.sig2");
    src.set_access_token(Some(src_token));
    tgt.set_access_token(Some(tgt_token));
    let token_file = t.path().join("target.token");
    std::fs::write(&token_file, format!("{tgt_token}\n")).unwrap();
    let cfg = t.path().join("tokens.toml");
    let toml_str = |s: &str| toml::Value::String(s.to_string()).to_string();
    let write_cfg = |target_key: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[target]\nconnection = {}\n{target_key}\n[[source]]\nconnection = {}\naccess_token_env = \"{ENV}\"\n",
                toml_str(&conn_nopw(&tgt, "MonitoringDB")),
                toml_str(&conn_nopw(&src, "DBATools"))
            ),
        )
        .unwrap();
    };
    write_cfg(&format!("access_token_file = {}", toml_str(&token_file.display().to_string())));
    let o = perfcopy_env(&["copy", "--config", &cfg.display().to_string(), "--log", "debug", "--json"], &[(ENV, src_token)]);
    for tok in [src_token, tgt_token] {
        check("token login", Via::PasswordEnv, &o, tok, true);
    }
    let want = expected(std::slice::from_ref(&a), &name_map(&[("SQL01", 2)]), Win::default(), &std::collections::BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);

    // A token the server does not accept.
    let o = perfcopy_env(&["copy", "--config", &cfg.display().to_string(), "--log", "debug"], &[(ENV, "eyJ.wrongTOKEN.sig")]);
    check("refused token", Via::PasswordEnv, &o, "eyJ.wrongTOKEN.sig", false);
    let err = stderr(&o);
    assert!(err.contains(&label(&src, "DBATools")) && err.contains("Login failed for user '<token-identified principal>'"), "{err}");
    // A password and a token for one connection is a usage error.
    write_cfg(&format!("access_token_file = {}\npassword_env = \"{ENV}\"", toml_str(&token_file.display().to_string())));
    let o = perfcopy_env(&["copy", "--config", &cfg.display().to_string()], &[(ENV, src_token)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("give a password or an access token, not both"), "{}", stderr(&o));
}
