//! The SQL Server paths end to end against the project's TDS test server: real tiberius client,
//! real TDS bytes on loopback. Expected rows come from the plain model in tests/common.

mod common;

use std::collections::BTreeMap;

use common::mssql::{conn, seed, server, servers_table, target_rows, PW};
use common::*;

#[test]
fn dbatools_sources_into_monitoringdb_with_remap_dedupe_and_preexisting_rows() {
    let t = tempfile::tempdir().unwrap();
    let srv = server();
    let a = series("SQL01\\PROD", T0, 700, 1, 1);
    let mut b = series("Zürich-東京", T0 + 3 * DAY, 500, 1, 2);
    b.extend(copy_rows(&a[200..400], 501, 9, None)); // a restored copy of SQL01's history
    seed(&srv, t.path(), "DBATools_A", &a, true);
    seed(&srv, t.path(), "DBATools_B", &b, false); // an old collector: no ServerID column
    srv.create_monitoringdb("MonitoringDB");
    srv.execute("MonitoringDB", "INSERT INTO dbo.Servers (ServerName) VALUES (N'Existing')").unwrap();

    let o = perfcopy(&["copy", "--from", &conn(&srv, "DBATools_A"), "--from", &conn(&srv, "DBATools_B"), "--to", &conn(&srv, "MonitoringDB"), "--register-servers", "--batch-rows", "97", "--json"]);
    let report = ok_json(&o);
    let all_out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!all_out.contains(PW) && !all_out.contains("w0rd"), "password leaked: {all_out}");

    let known = name_map(&[("Existing", 1)]);
    let reg = registered(&known, &[a.clone(), b.clone()]);
    let mut map = known.clone();
    for (n, id) in &reg {
        map.insert(fold(n), *id);
    }
    assert_eq!(servers_table(&srv, "MonitoringDB"), map);
    let want = expected(&[a.clone(), b.clone()], &map, Win::default(), &BTreeMap::new());
    assert_eq!(target_rows(&srv, "MonitoringDB"), want.stage);
    assert_report(&report, &want);

    // A re-run sends nothing new and leaves the target as it was.
    let again = ok_json(&perfcopy(&["copy", "--from", &conn(&srv, "DBATools_A"), "--from", &conn(&srv, "DBATools_B"), "--to", &conn(&srv, "MonitoringDB"), "--json"]));
    assert_eq!(again["totals"]["rows_written"].as_u64(), Some(0));
    assert_eq!(target_rows(&srv, "MonitoringDB"), want.stage);
}
