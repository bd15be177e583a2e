//! The SQL Server paths end to end against the project's TDS test server: real tiberius client,
//! real TDS bytes on loopback. Expected rows come from the plain model in tests/common.

mod common;

use std::collections::BTreeMap;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use common::*;
use tds_test_server::{ServerConfig, TestServer};

const PW: &str = "Pa55;w0rd'secret";

fn conn(srv: &TestServer, db: &str) -> String {
    format!("Server=tcp:127.0.0.1,{};Database={db};User Id=perf;Password='{}';Encrypt=DANGER_PLAINTEXT", srv.addr().port(), PW.replace('\'', "''"))
}

fn seed(srv: &TestServer, t: &tempfile::TempDir, db: &str, rows: &[SrcRow], with_server_id: bool) {
    srv.create_dbatools(db, with_server_id);
    let p = t.path().join(format!("{db}.parquet"));
    write_source(&p, rows, &SourceOpts { server_id_column: with_server_id, ..Default::default() });
    srv.seed_parquet(db, "dbo.PerfSnapshotRun", &p).unwrap();
}

/// The target's PerfSnapshotRun as model rows, keyed.
fn target_rows(srv: &TestServer) -> BTreeMap<(i32, i64), Row> {
    let b = srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap();
    let names: Vec<&str> = stage_fields().iter().map(|(n, _)| *n).collect();
    let idx: Vec<usize> = names.iter().map(|n| b.schema().index_of(n).unwrap()).collect();
    let b = b.project(&idx).unwrap();
    let rows: Vec<Row> = (0..b.num_rows())
        .map(|r| Row {
            server_id: b.column(1).as_primitive::<Int32Type>().value(r),
            snapshot_ms: ms(b.column(0), r),
            server_name: opt_str(b.column(2), r).unwrap(),
            v: values_of(&b, r),
        })
        .collect();
    by_key(&rows)
}

fn servers_table(srv: &TestServer) -> BTreeMap<String, i32> {
    let b: RecordBatch = srv.table_batch("MonitoringDB", "dbo.Servers").unwrap();
    let ids = b.column(b.schema().index_of("ServerID").unwrap()).as_primitive::<Int32Type>().clone();
    let names = b.column(b.schema().index_of("ServerName").unwrap()).as_string::<i32>().clone();
    (0..b.num_rows()).map(|r| (fold(names.value(r)), ids.value(r))).collect()
}

#[test]
fn dbatools_sources_into_monitoringdb_with_remap_dedupe_and_preexisting_rows() {
    let t = tempfile::tempdir().unwrap();
    let srv = TestServer::start(ServerConfig { packet_size: Some(512), password: Some(PW.into()), ..Default::default() }).unwrap();
    let a = series("SQL01\\PROD", T0, 700, 1, 1);
    let mut b = series("Zürich-東京", T0 + 3 * DAY, 500, 1, 2);
    b.extend(copy_rows(&a[200..400], 501, 9, None)); // a restored copy of SQL01's history
    seed(&srv, &t, "DBATools_A", &a, true);
    seed(&srv, &t, "DBATools_B", &b, false); // an old collector: no ServerID column
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
    assert_eq!(servers_table(&srv), map);
    let want = expected(&[a.clone(), b.clone()], &map, Win::default(), &BTreeMap::new());
    assert_eq!(target_rows(&srv), want.stage);
    assert_report(&report, &want);

    // A re-run sends nothing new and leaves the target as it was.
    let again = ok_json(&perfcopy(&["copy", "--from", &conn(&srv, "DBATools_A"), "--from", &conn(&srv, "DBATools_B"), "--to", &conn(&srv, "MonitoringDB"), "--json"]));
    assert_eq!(again["totals"]["rows_written"].as_u64(), Some(0));
    assert_eq!(target_rows(&srv), want.stage);
}
