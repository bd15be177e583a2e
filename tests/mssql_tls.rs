//! perfcopy's SQL Server paths over TLS, the way real servers answer: the TDS test server offers
//! TLS as SQL Server does (a certificate no system trust store knows, like SQL Server's
//! self-signed one), so `Encrypt=true` (the default) runs TLS for the whole connection and
//! `Encrypt=false` for the login packet only; copy, verify and a resumed copy give the model's
//! rows either way. A certificate that fails validation, a server that forces encryption on a
//! plaintext string, and a server without TLS are errors that say what to change in the
//! connection string, exit 1 and leave the target untouched.
//!
//! (The whole end-to-end suite runs over TLS with `PERFCOPY_TEST_ENCRYPT=tls cargo test --test
//! mssql_e2e`; see tests/common/mssql.rs.)

mod common;

use std::collections::BTreeMap;

use common::mssql::*;
use common::*;
use tds_test_server::{Stats, TestServer, TlsMode};

fn tls_counts(s: Stats) -> (u64, u64, u64) {
    (s.tls_handshakes, s.login_only_encryption, s.encryption_refusals)
}

/// Copy from two DBATools databases on one server into MonitoringDB on another, verify, add
/// rows, copy again (resuming after the ledger's watermark), verify again: over `wire`.
fn copy_verify_resume(wire: Wire) {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let a = series("SQL01\\PROD", T0, 400, 1, 11);
    let mut b = series("Zürich-東京", T0 + DAY, 300, 1, 12);
    b.extend(copy_rows(&a[100..150], 301, 7, None));
    seed(&src, t.path(), "DBATools_A", &a, true);
    seed(&src, t.path(), "DBATools_B", &b, false);
    seed_target(&tgt, "MonitoringDB", &[("SQL01\\PROD", 40)], &[]);
    let (fa, fb, to) = (conn_wire(&src, "DBATools_A", PW, wire), conn_wire(&src, "DBATools_B", PW, wire), conn_wire(&tgt, "MonitoringDB", PW, wire));
    let args = ["--from", fa.as_str(), "--from", &fb, "--to", &to, "--register-servers", "--batch-rows", "64"];

    let o = perfcopy(&[&["copy", "--json"], &args[..]].concat());
    assert_no_secret(&o, PW);
    let first = ok_json(&o);
    let map = check_registry(&tgt, "MonitoringDB", &[("SQL01\\PROD", 40)], &[a.clone(), b.clone()]);
    let want = expected(&[a.clone(), b.clone()], &map, Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&first, &want);

    let verify = |what: &str| {
        let o = perfcopy(&["verify", "--from", &fa, "--from", &fb, "--to", &to, "--json"]);
        assert_no_secret(&o, PW);
        assert_eq!(ok_json(&o)["ok"], true, "verify {what}");
    };
    verify("after the first copy");

    let more = series("SQL01\\PROD", T0 + 400 * MIN5 + 1_000, 60, 401, 13);
    add_rows(&src, t.path(), "DBATools_A", &more, true);
    let again = copy_json(&args);
    let sources = again["sources"].as_array().unwrap().clone();
    assert_eq!((sources[0]["resumed_after_run_id"].as_i64(), sources[1]["resumed_after_run_id"].as_i64()), (Some(400), Some(350)), "{again}");
    assert_eq!(sources[0]["rows_read"].as_u64(), Some(60), "{again}");
    let want2 = expected(&[more.clone(), Vec::new()], &map, Win::default(), &want.stage);
    assert_target_eq(&tgt, "MonitoringDB", &want2.stage);
    assert_report(&again, &want2);
    verify("after the resumed copy");

    // Every connection of both servers went the way `wire` says (TLS is the test server's default).
    for (name, srv) in [("source", &src), ("target", &tgt)] {
        let s = srv.stats();
        assert!(s.logins > 0, "{name}");
        let want = match wire {
            Wire::Tls => (s.connections, 0, 0),
            Wire::LoginOnly => (s.connections, s.connections, 0),
            Wire::Plaintext => (0, 0, 0),
        };
        assert_eq!(tls_counts(s), want, "{name} over {wire:?}: {s:?}");
    }
}

#[test]
fn copy_verify_and_resume_over_tls() {
    copy_verify_resume(Wire::Tls);
}

#[test]
fn copy_verify_and_resume_with_only_the_login_encrypted() {
    copy_verify_resume(Wire::LoginOnly);
}

/// Sets up a source and a target with a few rows; returns (dir, source server, target server, rows).
fn small_setup(tgt_tls: TlsMode) -> (tempfile::TempDir, TestServer, TestServer, Vec<SrcRow>) {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server_tls(tgt_tls));
    let a = series("SQL01", T0, 30, 1, 21);
    seed(&src, t.path(), "DBATools_A", &a, true);
    seed_target(&tgt, "MonitoringDB", &[], &[]);
    (t, src, tgt, a)
}

/// Runs a copy expected to fail because of `conn`'s encryption; checks exit 1, no password,
/// the target untouched, and returns stderr.
fn refused_copy(from: &str, to: &str, tgt: &TestServer) -> String {
    let before = target_snapshot(tgt, "MonitoringDB");
    let o = perfcopy(&["copy", "--from", from, "--to", to, "--register-servers"]);
    let err = failed(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_no_secret(&o, PW);
    assert_eq!(target_snapshot(tgt, "MonitoringDB"), before, "the target must be untouched");
    err
}

/// The certificate is checked whenever TLS runs: with `Encrypt=true`, with no Encrypt= at all
/// (TLS is on by default) and with the login-only `Encrypt=false`. An untrusted one is an
/// error in connection-string terms; `TrustServerCertificateCA=` naming the issuing CA makes
/// the same strings work with the certificate validated.
#[test]
fn an_untrusted_certificate_is_refused_with_what_to_change() {
    let (t, src, tgt, a) = small_setup(TlsMode::Offered);
    let to = conn_wire(&tgt, "MonitoringDB", PW, Wire::Plaintext);
    let pw = format!("Password='{}'", PW.replace('\'', "''"));
    for encrypt in ["Encrypt=true", "", "Encrypt=false", "Encrypt=yes;TrustServerCertificate=false"] {
        let from = format!("{};{pw};{encrypt}", conn_base(&src, "DBATools_A"));
        let err = refused_copy(&from, &to, &tgt);
        let want = format!(
            "source '{}': the server's TLS certificate is not trusted (self-signed or unknown issuer); add TrustServerCertificate=true to the connection string, or install the issuing CA",
            label(&src, "DBATools_A")
        );
        assert!(err.contains(&want), "{encrypt:?}: {err}");
        assert!(!err.contains("rustls") && !err.contains("trust_cert") && !err.contains("Config::"), "library names in: {err}");
    }
    assert_eq!(src.stats().logins, 0, "no login may happen over an untrusted certificate");
    // The target's certificate is checked the same way.
    let tgt_logins = tgt.stats().logins;
    let err = refused_copy(&conn_wire(&src, "DBATools_A", PW, Wire::Tls), &format!("{};{pw}", conn_base(&tgt, "MonitoringDB")), &tgt);
    assert!(err.contains(&format!("{}: the server's TLS certificate is not trusted", label(&tgt, "MonitoringDB"))), "{err}");
    assert_eq!(tgt.stats().logins, tgt_logins, "no login may happen over an untrusted certificate");

    // Validated for real against the test CA (the certificate names 127.0.0.1).
    let ca = t.path().join("test-ca.pem");
    std::fs::write(&ca, tds_test_server::ca_certificate_pem().unwrap()).unwrap();
    let with_ca = |srv: &TestServer, db: &str| format!("{};{pw};Encrypt=true;TrustServerCertificateCA={}", conn_base(srv, db), ca.display());
    let report = copy_json(&["--from", &with_ca(&src, "DBATools_A"), "--to", &with_ca(&tgt, "MonitoringDB"), "--register-servers"]);
    let map = servers_table(&tgt, "MonitoringDB");
    let want = expected(&[a], &map, Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&report, &want);
    assert_eq!(tls_counts(tgt.stats()).1, 0);

    // A certificate for another name: the name it was checked against, and what to do.
    let from = format!("{};HostNameInCertificate=sql01.example.com", with_ca(&src, "DBATools_A"));
    let err = refused_copy(&from, &to, &tgt);
    assert!(err.contains("the server's TLS certificate is not issued for 'sql01.example.com'") && err.contains("HostNameInCertificate"), "{err}");
}

/// A server that forces encryption (SQL Server's Force Encryption) answers a plaintext client
/// ENCRYPT_REQ and closes; perfcopy says the string must not say DANGER_PLAINTEXT. `Encrypt=false`
/// against it encrypts the whole connection (MS-TDS 2.2.6.5), so that string works.
#[test]
fn a_server_that_requires_encryption_refuses_a_plaintext_string() {
    let (_t, src, tgt, a) = small_setup(TlsMode::Required);
    let from = conn_wire(&src, "DBATools_A", PW, Wire::Tls);
    let err = refused_copy(&from, &conn_wire(&tgt, "MonitoringDB", PW, Wire::Plaintext), &tgt);
    let want = format!("{}: the server requires encryption (Force Encryption) but the connection string says Encrypt=DANGER_PLAINTEXT; remove it", label(&tgt, "MonitoringDB"));
    assert!(err.contains(&want), "{err}");
    assert!(tgt.stats().encryption_refusals >= 1 && tgt.stats().logins == 0, "{:?}", tgt.stats());

    let report = copy_json(&["--from", &from, "--to", &conn_wire(&tgt, "MonitoringDB", PW, Wire::LoginOnly), "--register-servers"]);
    let want = expected(&[a], &servers_table(&tgt, "MonitoringDB"), Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&report, &want);
    let s = tgt.stats();
    assert_eq!((s.login_only_encryption, s.tls_handshakes), (0, s.logins), "Encrypt=false to a forcing server: all encrypted; {s:?}");
}

/// A server without a certificate cannot satisfy `Encrypt=true`: the message names the way out.
#[test]
fn a_server_without_tls_refuses_an_encrypting_string() {
    let (_t, src, tgt, _) = small_setup(TlsMode::Unavailable);
    let from = conn_wire(&src, "DBATools_A", PW, Wire::Tls);
    let err = refused_copy(&from, &conn_wire(&tgt, "MonitoringDB", PW, Wire::Tls), &tgt);
    let want = format!("{}: the server does not offer encryption (it has no TLS certificate) but the connection string asks for it (Encrypt=true)", label(&tgt, "MonitoringDB"));
    assert!(err.contains(&want) && err.contains("Encrypt=DANGER_PLAINTEXT"), "{err}");
    let err = refused_copy(&from, &format!("{};Password='{}'", conn_base(&tgt, "MonitoringDB"), PW.replace('\'', "''")), &tgt);
    assert!(err.contains("(no Encrypt= (so Encrypt=true))"), "{err}");
}

/// `Encrypt=strict` (TDS 8.0) and values tiberius does not take are usage errors (exit 2).
#[test]
fn encrypt_values_perfcopy_cannot_honour_are_usage_errors() {
    let (_t, src, tgt, _) = small_setup(TlsMode::Offered);
    let to = conn_wire(&tgt, "MonitoringDB", PW, Wire::Tls);
    for (value, want) in [("strict", "Encrypt=strict (TDS 8.0) is not supported; use Encrypt=true"), ("Mandatory", "Encrypt='Mandatory' is not one of true, yes, false, no, DANGER_PLAINTEXT")] {
        let from = format!("{};Password='{}';Encrypt={value}", conn_base(&src, "DBATools_A"), PW.replace('\'', "''"));
        let o = perfcopy(&["copy", "--from", &from, "--to", &to]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("--from") && stderr(&o).contains(want), "{}", stderr(&o));
        assert_no_secret(&o, PW);
    }
}
