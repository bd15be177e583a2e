//! The README's SQL Server connection strings work as written: every complete one (no `…`) is
//! taken from README.md, only its `host,port` is pointed at a TDS test server standing in for
//! that host, and a copy runs with it. Nothing else of the string changes: where it asks for
//! TLS (by default, or `Encrypt=true`) the certificate is validated for real, with the test
//! servers' CA trusted the way a DBA's machine trusts its own CA (`SSL_CERT_FILE`, which the
//! system trust store loader reads), and passwords come from a config's `password_env`, as the
//! README's config example has them.

mod common;

use std::collections::BTreeMap;

use common::mssql::{seed, servers_table, target_rows, PW};
use common::*;
use tds_test_server::{ca_certificate_pem, ServerConfig, TestServer, TlsMode};

/// Every double-quoted ADO.NET or JDBC connection string in README.md that is complete.
fn readme_connection_strings() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    for part in readme.split('"').skip(1).step_by(2) {
        let is_conn = part.starts_with("Server=") || part.starts_with("jdbc:sqlserver://");
        if is_conn && !part.contains('…') && !out.iter().any(|s: &String| s == part) {
            out.push(part.to_string());
        }
    }
    out
}

/// The host the string names (`Server=tcp:HOST,PORT` or `jdbc:sqlserver://HOST:PORT`) and the
/// string with that address replaced by `addr`.
fn repoint(s: &str, addr: &str) -> (String, String) {
    let (prefix, rest, sep) = if let Some(r) = s.strip_prefix("Server=tcp:") {
        ("Server=tcp:", r, ',')
    } else if let Some(r) = s.strip_prefix("jdbc:sqlserver://") {
        ("jdbc:sqlserver://", r, ':')
    } else {
        panic!("not a connection string: {s}")
    };
    let end = rest.find(';').unwrap_or(rest.len());
    let host = rest[..end].split(sep).next().unwrap().to_string();
    let port = addr.rsplit(':').next().unwrap();
    (host, format!("{prefix}127.0.0.1{sep}{port}{}", &rest[end..]))
}

fn database_of(s: &str) -> &str {
    let lower = s.to_ascii_lowercase();
    if lower.contains("database=monitoringdb") || lower.contains("databasename=monitoringdb") {
        "MonitoringDB"
    } else {
        assert!(lower.contains("database=dbatools") || lower.contains("databasename=dbatools"), "which database? {s}");
        "DBATools"
    }
}

fn toml_str(s: &str) -> String {
    format!("'{s}'")
}

#[test]
fn the_readmes_connection_strings_copy_as_written() {
    let strings = readme_connection_strings();
    let targets: Vec<&String> = strings.iter().filter(|s| database_of(s) == "MonitoringDB").collect();
    let sources: Vec<&String> = strings.iter().filter(|s| database_of(s) == "DBATools").collect();
    assert!(targets.len() >= 2 && sources.len() >= 2, "README's connection strings not found: {strings:?}");

    let t = tempfile::tempdir().unwrap();
    let ca = t.path().join("ca.pem");
    std::fs::write(&ca, ca_certificate_pem().unwrap()).unwrap();
    let ca = ca.display().to_string();
    let start = || TestServer::start(ServerConfig { packet_size: Some(4096), password: Some(PW.into()), tls: TlsMode::Offered, ..Default::default() }).unwrap();

    for (ti, target) in targets.iter().enumerate() {
        // One server per host the README names, each holding that host's DBATools.
        let mut hosts: BTreeMap<String, TestServer> = BTreeMap::new();
        let mut from = Vec::new();
        let mut rows = Vec::new();
        for (si, s) in sources.iter().enumerate() {
            let (host, _) = repoint(s, "0:0");
            let srv = hosts.entry(host.clone()).or_insert_with(|| {
                let srv = start();
                srv.set_server_name(&host.to_ascii_uppercase());
                let r = series(&host.to_ascii_uppercase(), T0 + si as i64 * DAY, 40, 1, 7 + si as u64);
                seed(&srv, t.path(), "DBATools", &r, true);
                rows.push(r);
                srv
            });
            from.push(repoint(s, &srv.addr().to_string()).1);
        }
        let tgt = start();
        tgt.create_monitoringdb("MonitoringDB");
        let (_, to) = repoint(target, &tgt.addr().to_string());

        let mut cfg = format!("[target]\nconnection = {}\npassword_env = \"README_PW\"\n", toml_str(&to));
        for f in &from {
            cfg.push_str(&format!("[[source]]\nconnection = {}\npassword_env = \"README_PW\"\n", toml_str(f)));
        }
        let path = t.path().join(format!("readme{ti}.toml"));
        std::fs::write(&path, &cfg).unwrap();
        let o = common::mssql::perfcopy_env(&["copy", "--config", &path.display().to_string(), "--register-servers"], &[("README_PW", PW), ("SSL_CERT_FILE", &ca)]);
        assert!(o.status.success(), "README strings {target} and {sources:?} failed:\n{cfg}\n{}", stderr(&o));

        let map = servers_table(&tgt, "MonitoringDB");
        let want = expected(&rows, &map, Win::default(), &BTreeMap::new());
        assert_eq!(target_rows(&tgt, "MonitoringDB"), want.stage, "README target string {target}");
        assert_eq!(map.len(), hosts.len());
        let tls: u64 = hosts.values().map(|s| s.stats().tls_handshakes).sum::<u64>() + tgt.stats().tls_handshakes;
        assert!(tls > 0, "the README's strings ask for TLS (no Encrypt= or Encrypt=true), yet no handshake ran");
    }
}
