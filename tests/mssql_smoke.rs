//! The SQL Server paths end to end against the project's TDS test server: real tiberius client,
//! real TDS bytes on loopback. Expected rows come from the plain model in tests/common.

mod common;

use std::collections::BTreeMap;

use common::mssql::{assert_no_secret, conn, seed, seed_target, server, servers_table, target_rows, PW};
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

/// MonitoringDB's key and row reads take inclusive ranges, like every target (issue 13: a key
/// at the end of a hot-day range was one convention away from being missed).
#[test]
fn monitoringdb_ranges_include_both_ends() {
    let srv = server();
    let rows: Vec<Row> = series("SQL01", T0, 4, 1, 5)
        .into_iter()
        .map(|r| Row { server_id: 1, snapshot_ms: r.snapshot_ms, server_name: r.server_name, v: r.v })
        .collect();
    seed_target(&srv, "MonitoringDB", &[("SQL01", 1)], &rows);
    let conn = perfcopy::mssql::ConnSpec::target("--to", &conn(&srv, "MonitoringDB")).unwrap();
    let target = perfcopy::sink::mssql::MonitoringDb::new(conn, Default::default());
    let ts: Vec<i64> = rows.iter().map(|r| r.snapshot_ms).collect();
    assert_ranges_include_both_ends(&target, 1, &ts);
}

/// `bench --to <MonitoringDB>` loads a scratch table through the real writer and drops it;
/// PerfSnapshotRun, dbo.Servers and the ledger stay untouched.
#[test]
fn bench_into_monitoringdb_loads_a_scratch_table_and_drops_it() {
    let srv = server();
    srv.create_monitoringdb("MonitoringDB");
    let report = ok_json(&perfcopy(&["bench", "--to", &conn(&srv, "MonitoringDB"), "--rows", "3000", "--servers", "3", "--writers", "2", "--json"]));
    let written = report["rows_written"].as_u64().unwrap();
    assert!(written > 0, "{report}");
    assert_eq!(srv.stats().bulk_rows_received, written);
    let target = report["target"].as_str().unwrap();
    let scratch = target.split("scratch table ").nth(1).and_then(|t| t.strip_suffix(')')).unwrap_or_else(|| panic!("no scratch table in '{target}'"));
    assert!(scratch.starts_with("dbo.perfcopy_bench_"), "{scratch}");
    assert!(!srv.has_table("MonitoringDB", scratch), "{scratch} was not dropped");
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0);
    assert_eq!(srv.row_count("MonitoringDB", "dbo.Servers").unwrap(), 0);
    assert!(!srv.has_table("MonitoringDB", "dbo.DBAToolsSyncLog"));
}

/// `bench --to <MonitoringDB> --child-tables …`: each child table goes to a scratch table of
/// its own with MonitoringDB's new run IDs, through the real writer; all are dropped at the
/// end, and the server received exactly the runs and child rows the report says were written.
#[test]
fn bench_into_monitoringdb_with_child_tables_loads_scratch_child_tables_and_drops_them() {
    let srv = server();
    srv.create_monitoringdb("MonitoringDB");
    let tables = ["PerfSnapshotWaitStats", "PerfSnapshotQueryStats", "PerfSnapshotConfig"];
    let report = ok_json(&perfcopy(&["bench", "--to", &conn(&srv, "MonitoringDB"), "--rows", "600", "--servers", "3", "--child-tables", &tables.join(","), "--children-scale", "0.05", "--json"]));
    let runs = report["rows_written"].as_u64().unwrap();
    let figures = report["child_tables"].as_array().unwrap_or_else(|| panic!("no child tables in {report}"));
    let mut kids = 0;
    for t in tables {
        let f = figures.iter().find(|f| f["table"] == t).unwrap_or_else(|| panic!("no {t} in {report}"));
        let written = f["rows_written"].as_u64().unwrap();
        assert!(written > 0 && written <= f["rows_read"].as_u64().unwrap(), "{t}: {f}");
        kids += written;
    }
    assert!(runs > 0, "{report}");
    assert_eq!(srv.stats().bulk_rows_received, runs + kids, "rows the server received vs the report's runs and child rows");
    let target = report["target"].as_str().unwrap();
    let scratch = target.split("scratch table ").nth(1).and_then(|t| t.strip_suffix(')')).unwrap_or_else(|| panic!("no scratch table in '{target}'"));
    assert!(!srv.has_table("MonitoringDB", scratch), "{scratch} was not dropped");
    for t in tables {
        assert!(!srv.has_table("MonitoringDB", &format!("{scratch}_{t}")), "{scratch}_{t} was not dropped");
    }
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0);
    assert_eq!(srv.row_count("MonitoringDB", "dbo.Servers").unwrap(), 0);
}
