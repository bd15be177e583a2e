//! The SQL Server paths end to end against the project's TDS test server: real tiberius client,
//! real TDS bytes on loopback. Expected rows come from the plain model in tests/common.

mod common;

use std::collections::BTreeMap;

use common::mssql::{assert_no_secret, conn, seed, server, servers_table, target_rows, PW};
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

/// `verify --to` reconciles DBATools sources against MonitoringDB; `--order-hint` and
/// `--no-tablock` loads give the same rows.
#[test]
fn verify_against_monitoringdb_and_bulk_options() {
    let t = tempfile::tempdir().unwrap();
    let srv = server();
    let a = series("SQL01", T0, 300, 1, 3);
    let mut b = series("SQL02", T0, 200, 1, 4);
    b.extend(copy_rows(&a[50..120], 201, 0, None));
    seed(&srv, t.path(), "DBATools_A", &a, true);
    seed(&srv, t.path(), "DBATools_B", &b, true);
    srv.create_monitoringdb("MonitoringDB");
    let from = [conn(&srv, "DBATools_A"), conn(&srv, "DBATools_B")];
    let copy = perfcopy(&["copy", "--from", &from[0], "--from", &from[1], "--to", &conn(&srv, "MonitoringDB"), "--register-servers", "--order-hint", "--no-tablock", "--batch-rows", "64"]);
    assert!(copy.status.success(), "{}", stderr(&copy));
    let map = servers_table(&srv, "MonitoringDB");
    let want = expected(&[a.clone(), b.clone()], &map, Win::default(), &BTreeMap::new());
    assert_eq!(target_rows(&srv, "MonitoringDB"), want.stage);

    let ok = perfcopy(&["verify", "--from", &from[0], "--from", &from[1], "--to", &conn(&srv, "MonitoringDB"), "--json"]);
    let report = ok_json(&ok);
    assert_eq!(report["ok"], true);
    assert_no_secret(&ok, PW);

    // Remove one server's newest row from the target: verify fails naming what is missing.
    let newest = a.iter().map(|r| r.snapshot_ms).max().unwrap();
    let table = srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap();
    let col = |n: &str| table.column(table.schema().index_of(n).unwrap()).clone();
    let (ids, sids, ts) = (col("PerfSnapshotRunID"), col("ServerID"), col("SnapshotUTC"));
    use arrow::array::AsArray;
    let victim = (0..table.num_rows())
        .find(|&r| sids.as_primitive::<arrow::datatypes::Int32Type>().value(r) == map[&fold("SQL01")] && ms(&ts, r) == newest)
        .map(|r| ids.as_primitive::<arrow::datatypes::Int64Type>().value(r))
        .unwrap();
    srv.execute("MonitoringDB", &format!("DELETE FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID = {victim}")).unwrap();
    let bad = perfcopy(&["verify", "--from", &from[0], "--from", &from[1], "--to", &conn(&srv, "MonitoringDB"), "--json"]);
    assert_eq!(bad.status.code(), Some(3), "{}", stderr(&bad));
    let report: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    let sql01 = report["servers"].as_array().unwrap().iter().find(|s| s["server_id"] == map[&fold("SQL01")]).unwrap().clone();
    assert_eq!(sql01["missing"].as_u64(), Some(1), "{report}");
}
