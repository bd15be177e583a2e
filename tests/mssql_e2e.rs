//! DBATools databases on TDS test servers -> perfcopy -> MonitoringDB on a TDS test server.
//! Expected rows come from the plain model in tests/common (`expected`), never from perfcopy.

mod common;

use std::collections::BTreeMap;

use common::mssql::*;
use common::*;

/// Edge values: NULLs everywhere they are allowed, decimals at full precision both signs,
/// integer limits, non-ASCII and supplementary-plane text, empty strings, `HOST\INST`.
fn edge_rows(name: &str, first_run_id: i64, start: i64) -> Vec<SrcRow> {
    let base = Values {
        sql_version: "Microsoft SQL Server 2022 (RTM-CU12)".into(),
        cpu_signal_wait_pct: None,
        top_wait_type: None,
        top_wait_ms_per_sec: None,
        sessions: None,
        requests: None,
        blocking: None,
        deadlocks: None,
        grant_warnings: None,
    };
    let long: String = "Ünïcødé 東京 ☃ ".chars().cycle().take(200).collect();
    let vs = vec![
        base.clone(),
        Values {
            cpu_signal_wait_pct: Some(999_999_999),
            top_wait_ms_per_sec: Some(999_999_999_999_999_999),
            sessions: Some(i32::MAX),
            requests: Some(i32::MIN),
            blocking: Some(0),
            deadlocks: Some(-1),
            grant_warnings: Some(1),
            top_wait_type: Some("PAGEIOLATCH_SH".into()),
            ..base.clone()
        },
        Values {
            cpu_signal_wait_pct: Some(-999_999_999),
            top_wait_ms_per_sec: Some(-999_999_999_999_999_999),
            top_wait_type: Some(String::new()),
            sql_version: String::new(),
            ..base.clone()
        },
        Values { cpu_signal_wait_pct: Some(1), top_wait_ms_per_sec: Some(-1), sql_version: long, ..base.clone() },
        Values {
            cpu_signal_wait_pct: Some(0),
            top_wait_ms_per_sec: Some(0),
            top_wait_type: Some("🚀 WAIT\t\"quoted\" 'single' \\ back\nline".into()),
            sql_version: "Microsoft SQL Server 2019 — Ωmega 😀".into(),
            ..base.clone()
        },
    ];
    // Millisecond edges: .000, .999, just before midnight.
    let offsets = [0, 999, DAY - 1, DAY, 2 * DAY + 123];
    vs.into_iter()
        .zip(offsets)
        .enumerate()
        .map(|(i, (v, off))| SrcRow { run_id: first_run_id + i as i64, snapshot_ms: start + off, server_id: Some(7), server_name: name.into(), v })
        .collect()
}

#[test]
fn several_servers_remap_by_registry_dedupe_against_target_and_window() {
    let t = tempfile::tempdir().unwrap();
    let (s1, s2, tgt) = (server(), server(), server());
    // s1: a new collector and an old one (no ServerID column) with a restored copy of SQL01.
    let a = series("SQL01\\PROD", T0, 400, 1, 1);
    let mut b = series("Zürich-東京", T0 + DAY, 300, 1, 2);
    b.extend(copy_rows(&a[100..200], 301, 7, None));
    // s2: SQL01 again under another spelling, overlapping A, plus a server nobody registered.
    let mut c = copy_rows(&a[150..260], 1, 5, Some("sql01\\prod"));
    c.extend(series("NEWSRV", T0, 200, 111, 3));
    seed(&s1, t.path(), "DBATools_A", &a, true);
    seed(&s1, t.path(), "DBATools_B", &b, false);
    seed(&s2, t.path(), "DBATools_C", &c, true);

    // The target already knows SQL01 (as 40) and holds some of its rows, some with other values.
    let known = [("SQL01\\PROD", 40), ("Existing", 41)];
    let mut pre: Vec<Row> = a[50..120]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v = r.v.clone();
            if i % 4 == 0 {
                v.requests = Some(-5);
            }
            Row { server_id: 40, snapshot_ms: r.snapshot_ms, server_name: r.server_name.clone(), v }
        })
        .collect();
    pre.push(Row { server_id: 41, snapshot_ms: T0, server_name: "Existing".into(), v: a[0].v.clone() });
    seed_target(&tgt, "MonitoringDB", &known, &pre);
    let before = target_snapshot(&tgt, "MonitoringDB");

    let win = Win { since: Some(T0 + 6 * 3_600_000), until: Some(T0 + DAY + 20 * 3_600_000) };
    let (since, until) = (iso_ms(win.since.unwrap()), iso_ms(win.until.unwrap()));
    let (fa, fb, fc, to) = (conn(&s1, "DBATools_A"), conn(&s1, "DBATools_B"), conn(&s2, "DBATools_C"), conn(&tgt, "MonitoringDB"));
    let args = ["copy", "--from", &fa, "--from", &fb, "--from", &fc, "--to", &to, "--since", &since, "--until", &until, "--batch-rows", "64", "--json"];

    // Unknown names: exit 4 listing them, nothing written.
    let o = perfcopy(&args);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("Zürich-東京") && err.contains("NEWSRV") && err.contains("--register-servers"), "{err}");
    assert_no_secret(&o, PW);
    assert_eq!(target_snapshot(&tgt, "MonitoringDB")[..2], before[..2], "a refused copy changed dbo.Servers or dbo.PerfSnapshotRun");
    // Checked at the end, so the rest of the scenario still runs when this fails.
    let ledger_created_by_refused_copy = tgt.has_table("MonitoringDB", "dbo.DBAToolsSyncLog");

    let mut reg_args = args.to_vec();
    reg_args.push("--register-servers");
    let report = ok_json(&perfcopy(&reg_args));
    let sources = [a.clone(), b.clone(), c.clone()];
    let map = check_registry(&tgt, "MonitoringDB", &known, &sources);
    let pre_map = by_key(&pre);
    let want = expected(&sources, &map, win, &pre_map);
    assert!(want.per_source.iter().map(|c| c.already_in_target).sum::<u64>() > 0 && want.per_source.iter().map(|c| c.conflicts).sum::<u64>() > 0);
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&report, &want);
    assert!(!ledger_created_by_refused_copy, "the copy refused for unknown servers created dbo.DBAToolsSyncLog in the target");
}

#[test]
fn nulls_decimal_limits_and_unicode_names_survive_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let a = edge_rows("HOST\\INST", 1, T0);
    let mut b = edge_rows("Zürich-東京\\SQL2022", 10, T0);
    b.extend(edge_rows("ÅNGSTRÖM", 20, T0 + 1));
    // A second spelling of ÅNGSTRÖM (Unicode case folding) in the old collector's table.
    let old = edge_rows("ångström", 100, T0 + 7);
    seed(&src, t.path(), "DBATools_New", &a, true);
    seed(&src, t.path(), "DBATools_Uni", &b, true);
    seed(&src, t.path(), "DBATools_Old", &old, false);
    seed_target(&tgt, "MonitoringDB", &[], &[]);

    let report = copy_json(&[
        "--from", &conn(&src, "DBATools_New"), "--from", &conn(&src, "DBATools_Uni"), "--from", &conn(&src, "DBATools_Old"),
        "--to", &conn(&tgt, "MonitoringDB"), "--register-servers", "--batch-rows", "3",
    ]);
    let sources = [a, b, old];
    let map = check_registry(&tgt, "MonitoringDB", &[], &sources);
    let want = expected(&sources, &map, Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&report, &want);
}

#[test]
fn synclog_records_each_source_and_reruns_resume_after_it() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    // A's and B's rows carry the source server's own @@SERVERNAME.
    let name = src.server_name();
    let a = series(&name, T0, 300, 1, 4);
    let b = series(&name, T0 + 2 * DAY, 200, 1, 5);
    seed(&src, t.path(), "DBATools_A", &a, true);
    seed(&src, t.path(), "DBATools_B", &b, false);
    seed_target(&tgt, "MonitoringDB", &[], &[]);
    let (fa, fb, to) = (conn(&src, "DBATools_A"), conn(&src, "DBATools_B"), conn(&tgt, "MonitoringDB"));
    let args = ["--from", fa.as_str(), "--from", &fb, "--to", &to, "--register-servers", "--batch-rows", "50"];

    let first = copy_json(&args);
    let map = check_registry(&tgt, "MonitoringDB", &[], &[a.clone(), b.clone()]);
    let want = expected(&[a.clone(), b.clone()], &map, Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&first, &want);

    // The ledger was created in SCHEMA.md's shape.
    let cols: Vec<(String, String, bool)> = tgt
        .table_columns("MonitoringDB", "dbo.DBAToolsSyncLog")
        .unwrap()
        .iter()
        .map(|c| (c.name.clone(), format!("{:?}", c.ty), c.nullable))
        .collect();
    let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        ["SyncLogID", "ServerID", "ServerName", "DBAToolsDatabase", "LastSyncUTC", "LastRunID", "LastSyncDuration", "RowsCopied", "SyncStatus", "ErrorMessage", "CreatedUTC", "ModifiedUTC"]
    );
    let nullable: Vec<bool> = cols.iter().map(|c| c.2).collect();
    assert_eq!(nullable, [false, false, false, false, true, true, true, true, false, true, false, true], "{cols:?}");

    let id = map[&fold(&name)];
    let check_ledger = |rows_a: i32, rows_b: i32, last_a: i64, last_b: i64| {
        let ls = last_success(&tgt, "MonitoringDB");
        assert_eq!(ls.keys().collect::<Vec<_>>(), ["DBATools_A", "DBATools_B"], "{ls:?}");
        for (db, rows, last) in [("DBATools_A", rows_a, last_a), ("DBATools_B", rows_b, last_b)] {
            let r = &ls[db];
            assert_eq!((r.server_id, fold(&r.server_name), r.last_run_id, r.rows_copied), (id, fold(&name), Some(last), Some(rows)), "{db}: {r:?}");
        }
    };
    check_ledger(want.per_source[0].rows_written as i32, want.per_source[1].rows_written as i32, 300, 200);

    // A re-run reads nothing and writes nothing.
    let again = copy_json(&args);
    for (s, last) in report_sources(&again).iter().zip([300, 200]) {
        assert_eq!(s["resumed_after_run_id"].as_i64(), Some(last), "{s}");
        assert_eq!(s["rows_read"].as_u64(), Some(0), "{s}");
    }
    assert_eq!(report_totals(&again).rows_written, 0);
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    let ls = last_success(&tgt, "MonitoringDB");
    assert_eq!((ls["DBATools_A"].last_run_id, ls["DBATools_B"].last_run_id), (Some(300), Some(200)));

    // New rows in the sources are the only ones read and added; some repeat keys already copied.
    let mut more_a = series(&name, T0 + 300 * MIN5 + 5_000, 40, 301, 6);
    more_a.extend(copy_rows(&b[0..10], 341, 0, None));
    let more_b = series(&name, T0 + 2 * DAY + 200 * MIN5 + 5_000, 30, 201, 7);
    add_rows(&src, t.path(), "DBATools_A", &more_a, true);
    add_rows(&src, t.path(), "DBATools_B", &more_b, false);
    let third = copy_json(&args);
    let rs = report_sources(&third);
    assert_eq!((rs[0]["resumed_after_run_id"].as_i64(), rs[1]["resumed_after_run_id"].as_i64()), (Some(300), Some(200)));
    let want3 = expected(&[more_a.clone(), more_b.clone()], &map, Win::default(), &want.stage);
    assert_eq!(want3.per_source[0].already_in_target, 10);
    assert_target_eq(&tgt, "MonitoringDB", &want3.stage);
    assert_report(&third, &want3);
    let ls = last_success(&tgt, "MonitoringDB");
    assert_eq!((ls["DBATools_A"].last_run_id, ls["DBATools_B"].last_run_id), (Some(350), Some(230)));
    assert_eq!((ls["DBATools_A"].rows_copied, ls["DBATools_B"].rows_copied), (Some(40), Some(30)), "RowsCopied of the third run");
}

/// @@SERVERNAME (the test server's default, 'TDS-TEST-SERVER-N-PORT') is not a name in the data. The ledger's
/// ServerID references dbo.Servers (SCHEMA.md), so it must be an ID the registry holds, under
/// the ledger row's ServerName; SQL Server would refuse anything else with error 547.
#[test]
fn synclog_server_id_references_servers_when_servername_is_not_in_the_data() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let a = series("SQL07", T0, 120, 1, 8);
    seed(&src, t.path(), "DBATools", &a, true);
    seed_target(&tgt, "MonitoringDB", &[], &[]);
    let report = copy_json(&["--from", &conn(&src, "DBATools"), "--to", &conn(&tgt, "MonitoringDB"), "--register-servers", "--batch-rows", "50"]);
    let map = check_registry(&tgt, "MonitoringDB", &[], std::slice::from_ref(&a));
    let want = expected(std::slice::from_ref(&a), &map, Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&report, &want);
    let registry = servers_spelled(&tgt, "MonitoringDB");
    let ls = last_success(&tgt, "MonitoringDB");
    let r = ls.get("DBATools").unwrap_or_else(|| panic!("no Success row for DBATools: {:?}", synclog(&tgt, "MonitoringDB")));
    assert_eq!((r.last_run_id, r.rows_copied), (Some(120), Some(120)), "{r:?}");
    let name_of_id = registry.iter().find(|(_, id)| **id == r.server_id).map(|(n, _)| n.clone());
    assert_eq!(
        name_of_id.as_deref().map(fold),
        Some(fold(&r.server_name)),
        "DBAToolsSyncLog.ServerID {} (ServerName '{}') is not that server's ID in dbo.Servers {registry:?}",
        r.server_id,
        r.server_name
    );
}

#[test]
fn stage_round_trip_equals_direct_copy() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let a = series("SQL01\\PROD", T0, 300, 1, 9);
    let mut b = series("SQL02", T0, 250, 1, 10);
    b.extend(copy_rows(&a[40..140], 251, 6, None));
    seed(&src, t.path(), "DBATools_A", &a, true);
    seed(&src, t.path(), "DBATools_B", &b, false);
    let ids = [("SQL01\\PROD", 11), ("SQL02", 12)];
    let map_csv = t.path().join("map.csv");
    write_map(&map_csv, &ids);
    seed_target(&tgt, "MonitoringDB_Direct", &ids, &[]);
    seed_target(&tgt, "MonitoringDB_Staged", &ids, &[]);
    let stage = t.path().join("stage");
    let (fa, fb, m) = (conn(&src, "DBATools_A"), conn(&src, "DBATools_B"), s(&map_csv).to_string());

    let direct = copy_json(&["--from", &fa, "--from", &fb, "--to", &conn(&tgt, "MonitoringDB_Direct"), "--server-map", &m, "--batch-rows", "70"]);
    let staged = copy_json(&["--from", &fa, "--from", &fb, "--stage", s(&stage), "--server-map", &m, "--batch-rows", "70"]);
    let loaded = copy_json(&["--from", s(&stage), "--to", &conn(&tgt, "MonitoringDB_Staged"), "--server-map", &m, "--batch-rows", "70"]);

    let want = expected(&[a, b], &name_map(&ids), Win::default(), &BTreeMap::new());
    assert_report(&direct, &want);
    assert_report(&staged, &want);
    assert_stage_eq(&stage, &want.stage);
    assert_eq!(report_totals(&loaded).rows_written, want.stage.len() as u64, "copy --from STAGE --to MonitoringDB wrote too few rows: {loaded}");
    assert_target_eq(&tgt, "MonitoringDB_Direct", &want.stage);
    assert_target_eq(&tgt, "MonitoringDB_Staged", &want.stage);
    assert_eq!(servers_table(&tgt, "MonitoringDB_Staged"), servers_table(&tgt, "MonitoringDB_Direct"));
}

#[test]
fn config_file_equals_flags_and_rejects_unknown_keys() {
    let t = tempfile::tempdir().unwrap();
    let (s1, s2, tgt) = (server(), server(), server());
    let a = series("SQL01", T0, 220, 1, 11);
    let mut b = series("SQL02", T0, 180, 1, 12);
    b.extend(copy_rows(&a[0..60], 181, 4, None));
    seed(&s1, t.path(), "DBATools", &a, true);
    seed(&s2, t.path(), "DBATools", &b, false);
    seed_target(&tgt, "MonitoringDB_Flags", &[("SQL02", 5)], &[]);
    seed_target(&tgt, "MonitoringDB_Config", &[("SQL02", 5)], &[]);

    let flags = ok_json(&perfcopy(&[
        "copy", "--from", &conn(&s1, "DBATools"), "--from", &conn(&s2, "DBATools"), "--to", &conn(&tgt, "MonitoringDB_Flags"),
        "--register-servers", "--batch-rows", "40", "--json",
    ]));

    let cfg = t.path().join("perfcopy.toml");
    let toml = format!(
        "[target]\nconnection = \"{}\"\npassword_env = \"PC_TARGET_PW\"\n\n[[source]]\nconnection = \"{}\"\npassword_env = \"PC_SRC1_PW\"\n\n[[source]]\nconnection = \"{}\"\npassword_env = \"PC_SRC2_PW\"\n\n[options]\nregister_servers = true\nbatch_rows = 40\n",
        conn_nopw(&tgt, "MonitoringDB_Config"),
        conn_nopw(&s1, "DBATools"),
        conn_nopw(&s2, "DBATools")
    );
    std::fs::write(&cfg, &toml).unwrap();
    let env = [("PC_TARGET_PW", PW), ("PC_SRC1_PW", PW), ("PC_SRC2_PW", PW)];
    let o = perfcopy_env(&["copy", "--config", s(&cfg), "--json"], &env);
    assert_no_secret(&o, PW);
    let by_config = ok_json(&o);

    let map = check_registry(&tgt, "MonitoringDB_Config", &[("SQL02", 5)], &[a.clone(), b.clone()]);
    assert_eq!(servers_table(&tgt, "MonitoringDB_Flags"), map);
    let want = expected(&[a, b], &map, Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB_Flags", &want.stage);
    assert_target_eq(&tgt, "MonitoringDB_Config", &want.stage);
    assert_report(&flags, &want);
    assert_report(&by_config, &want);

    // A typo is an error naming the key, before anything is touched.
    let before = target_snapshot(&tgt, "MonitoringDB_Config");
    std::fs::write(&cfg, toml.replace("batch_rows = 40", "batch_rows = 40\nregister_server = true")).unwrap();
    let o = perfcopy_env(&["copy", "--config", s(&cfg)], &env);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("register_server"), "{}", stderr(&o));
    assert_no_secret(&o, PW);
    assert_eq!(target_snapshot(&tgt, "MonitoringDB_Config"), before);
}

#[test]
fn split_source_connections_give_the_same_rows() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let a = series("SQL01", T0, 500, 1, 13);
    // Duplicates inside one source, far apart in ID: the split ranges must keep the lowest ID.
    let mut b = series("SQL02", T0, 300, 1, 14);
    b.extend(copy_rows(&b[10..90].to_vec(), 301, 3, None));
    seed(&src, t.path(), "DBATools_A", &a, true);
    seed(&src, t.path(), "DBATools_B", &b, true);
    seed_target(&tgt, "MonitoringDB_One", &[("SQL01", 1), ("SQL02", 2)], &[]);
    seed_target(&tgt, "MonitoringDB_Three", &[("SQL01", 1), ("SQL02", 2)], &[]);
    let (fa, fb) = (conn(&src, "DBATools_A"), conn(&src, "DBATools_B"));
    let one = copy_json(&["--from", &fa, "--from", &fb, "--to", &conn(&tgt, "MonitoringDB_One"), "--batch-rows", "45"]);
    let three = copy_json(&["--from", &fa, "--from", &fb, "--to", &conn(&tgt, "MonitoringDB_Three"), "--batch-rows", "45", "--source-connections", "3"]);
    let want = expected(&[a, b], &name_map(&[("SQL01", 1), ("SQL02", 2)]), Win::default(), &BTreeMap::new());
    assert_report(&one, &want);
    assert_eq!(report_totals(&three), Counts::sum(&want.per_source));
    assert_target_eq(&tgt, "MonitoringDB_One", &want.stage);
    assert_target_eq(&tgt, "MonitoringDB_Three", &want.stage);
    // The ledger of the split run says the same as the single one: each database fully copied.
    let (l1, l3) = (last_success(&tgt, "MonitoringDB_One"), last_success(&tgt, "MonitoringDB_Three"));
    for db in ["DBATools_A", "DBATools_B"] {
        assert_eq!(l3.get(db).map(|r| r.last_run_id), l1.get(db).map(|r| r.last_run_id), "{db}: {l1:?} vs {l3:?}");
    }
    // And a re-run of the split copy finds nothing left to read.
    let again = copy_json(&["--from", &fa, "--from", &fb, "--to", &conn(&tgt, "MonitoringDB_Three"), "--batch-rows", "45", "--source-connections", "3"]);
    assert_eq!(report_totals(&again).rows_written, 0);
    assert_target_eq(&tgt, "MonitoringDB_Three", &want.stage);
}

/// A run holding a source's application lock (here: the test, as another perfcopy would) stops
/// a second run of that source, before it writes anything.
#[test]
fn a_held_source_lock_stops_a_second_loader_of_that_source() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    let a = series("SQL01", T0, 100, 1, 15);
    seed(&src, t.path(), "DBATools", &a, true);
    seed_target(&tgt, "MonitoringDB", &[("SQL01", 1)], &[]);
    let before = target_snapshot(&tgt, "MonitoringDB");
    let args = ["copy", "--from", &conn(&src, "DBATools"), "--to", &conn(&tgt, "MonitoringDB")];

    // The source's identity, as perfcopy names it (status reports it).
    let st = perfcopy(&["status", "--json", "--from", &conn(&src, "DBATools"), "--to", &conn(&tgt, "MonitoringDB")]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let identity = st["sources"][0]["identity"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut holder = rt.block_on(connect(&conn(&tgt, "MonitoringDB")));
    let got: i32 = rt.block_on(async {
        let row = holder
            .query(
                "DECLARE @r int; EXEC @r = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = 0; SELECT @r AS r;",
                &[&format!("perfcopy source: {identity}")],
            )
            .await
            .unwrap()
            .into_row()
            .await
            .unwrap()
            .unwrap();
        row.get::<i32, _>(0).unwrap()
    });
    assert!(got >= 0, "the test could not take the lock: {got}");
    let o = perfcopy(&args);
    let err = failed(&o);
    assert!(err.contains("is being copied into this MonitoringDB by another perfcopy run") && err.contains("application lock"), "{err}");
    assert_no_secret(&o, PW);
    assert_eq!(target_snapshot(&tgt, "MonitoringDB")[..2], before[..2]);

    drop(holder);
    drop(rt);
    ok_json(&perfcopy(&[&args[..], &["--json"][..]].concat()));
    let want = expected(&[a], &name_map(&[("SQL01", 1)]), Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
}

/// A tiberius client as the test's own second session.
async fn connect(ado: &str) -> tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>> {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let config = tiberius::Config::from_ado_string(ado).unwrap();
    let tcp = tokio::net::TcpStream::connect(config.get_addr()).await.unwrap();
    tiberius::Client::connect(config, tcp.compat_write()).await.unwrap()
}

fn report_sources(r: &serde_json::Value) -> Vec<serde_json::Value> {
    r["sources"].as_array().unwrap().clone()
}

/// `dbo.PerfSnapshotRun` in SCHEMA.md's shape, with some column types replaced.
fn perf_ddl(snapshot: &str, sql_version: &str, top_wait: &str, run_id: &str) -> String {
    format!(
        "CREATE TABLE dbo.PerfSnapshotRun (PerfSnapshotRunID BIGINT {run_id} NOT NULL PRIMARY KEY, SnapshotUTC {snapshot} NOT NULL, \
         ServerID INT NULL, ServerName NVARCHAR(128) NOT NULL, SqlVersion {sql_version} NOT NULL, CpuSignalWaitPct DECIMAL(9,4) NULL, \
         TopWaitType {top_wait} NULL, TopWaitMsPerSec DECIMAL(18,4) NULL, SessionsCount INT NULL, RequestsCount INT NULL, \
         BlockingSessionCount INT NULL, DeadlockCountRecent INT NULL, MemoryGrantWarningCount INT NULL)"
    )
}

/// Tables that differ from SCHEMA.md in ways SQL Server allows. perfcopy's own TDS row decoder
/// reads NVARCHAR(MAX) (PLP chunks), DATETIME2(7) and VARCHAR (code-page text, by the column's
/// collation; it once made that source fall back to tiberius' decoder); a target with
/// DATETIME2(7) and NVARCHAR(MAX) makes bulk loads use tiberius' row encoding. The rows that
/// arrive are the same either way.
#[test]
fn customised_column_types_take_the_fallback_paths_with_the_same_rows() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt) = (server(), server());
    // Long and non-ASCII text in NVARCHAR(MAX), DATETIME2(7) snapshot times.
    let a = edge_rows("HOST\\INST", 1, T0);
    for db in ["DBATools_Max", "DBATools_Varchar"] {
        src.create_database(db);
    }
    tgt.create_database("MonitoringDB");
    src.execute("DBATools_Max", &perf_ddl("DATETIME2(7)", "NVARCHAR(MAX)", "NVARCHAR(120)", "")).unwrap();
    add_rows(&src, t.path(), "DBATools_Max", &a, true);
    // VARCHAR wait types (ASCII: code page 1252 holds them).
    let b = series("SQL02", T0, 300, 1, 5);
    src.execute("DBATools_Varchar", &perf_ddl("DATETIME2(3)", "NVARCHAR(200)", "VARCHAR(120)", "")).unwrap();
    add_rows(&src, t.path(), "DBATools_Varchar", &b, true);
    tgt.execute(
        "MonitoringDB",
        "CREATE TABLE dbo.Servers (ServerID INT IDENTITY(1,1) NOT NULL PRIMARY KEY, ServerName NVARCHAR(256) NOT NULL UNIQUE, \
         Environment NVARCHAR(50) NULL, IsActive BIT NOT NULL DEFAULT 1, CreatedDate DATETIME2 NOT NULL DEFAULT GETUTCDATE(), ModifiedDate DATETIME2 NULL)",
    )
    .unwrap();
    tgt.execute("MonitoringDB", &perf_ddl("DATETIME2(7)", "NVARCHAR(MAX)", "NVARCHAR(120)", "IDENTITY(1,1)").replace("ServerID INT NULL", "ServerID INT NOT NULL")).unwrap();

    let out = perfcopy_env(
        &[
            "copy", "--json", "--from", &conn(&src, "DBATools_Max"), "--from", &conn(&src, "DBATools_Varchar"),
            "--to", &conn(&tgt, "MonitoringDB"), "--register-servers", "--batch-rows", "64", "--log", "debug",
        ],
        &[],
    );
    let report = ok_json(&out);
    let log = stderr(&out);
    let fallbacks: Vec<&str> = log.lines().filter(|l| l.contains("reading with tiberius' row decoder")).collect();
    assert!(fallbacks.is_empty(), "VARCHAR is read by perfcopy's decoder, no source falls back: {fallbacks:?}");
    assert!(!log.contains("Flushing unhandled packet"), "the abandoned reply is read quietly");
    assert!(log.contains("uses tiberius' row encoding"), "the customised target fell back: {log}");
    let sources = [a, b];
    let map = check_registry(&tgt, "MonitoringDB", &[], &sources);
    let want = expected(&sources, &map, Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&report, &want);
}

/// The target's columns may be wider than SCHEMA.md's where every value still fits exactly
/// (BIGINT for INT, DECIMAL(38,4) for DECIMAL(9,4), a longer NVARCHAR, DATETIME2(7)); the rows
/// are the same, on perfcopy's encoder and on tiberius' (NVARCHAR(MAX) sends the load there).
/// Narrower ones, another scale or DATETIME are refused naming the column, before anything is written.
#[test]
fn wider_target_columns_are_loaded_exactly_and_narrower_ones_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = server();
    let a = edge_rows("SQL01", 1, T0);
    seed(&src, t.path(), "DBATools", &a, true);
    let servers = "CREATE TABLE dbo.Servers (ServerID INT IDENTITY(1,1) NOT NULL PRIMARY KEY, ServerName NVARCHAR(256) NOT NULL UNIQUE, \
         Environment NVARCHAR(50) NULL, IsActive BIT NOT NULL DEFAULT 1, CreatedDate DATETIME2 NOT NULL DEFAULT GETUTCDATE(), ModifiedDate DATETIME2 NULL)";
    let target = |snapshot: &str, server_id: &str, sql_version: &str, cpu: &str, top_wait: &str, sessions: &str| {
        format!(
            "CREATE TABLE dbo.PerfSnapshotRun (PerfSnapshotRunID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, SnapshotUTC {snapshot} NOT NULL, \
             ServerID {server_id} NOT NULL, ServerName NVARCHAR(128) NOT NULL, SqlVersion {sql_version} NOT NULL, CpuSignalWaitPct {cpu} NULL, \
             TopWaitType {top_wait} NULL, TopWaitMsPerSec DECIMAL(18,4) NULL, SessionsCount {sessions} NULL, RequestsCount INT NULL, \
             BlockingSessionCount INT NULL, DeadlockCountRecent INT NULL, MemoryGrantWarningCount INT NULL)"
        )
    };
    let wider = [
        ("own encoder", target("DATETIME2(3)", "BIGINT", "NVARCHAR(400)", "DECIMAL(38,4)", "NVARCHAR(4000)", "BIGINT"), false),
        ("tiberius' encoding", target("DATETIME2(7)", "BIGINT", "NVARCHAR(MAX)", "NUMERIC(19,4)", "NVARCHAR(120)", "BIGINT"), true),
    ];
    for (what, ddl, fallback) in wider {
        let tgt = server();
        tgt.create_database("MonitoringDB");
        tgt.execute("MonitoringDB", servers).unwrap();
        tgt.execute("MonitoringDB", &ddl).unwrap();
        let out = perfcopy_env(&["copy", "--json", "--from", &conn(&src, "DBATools"), "--to", &conn(&tgt, "MonitoringDB"), "--register-servers", "--batch-rows", "7", "--log", "debug"], &[]);
        let report = ok_json(&out);
        assert_eq!(stderr(&out).contains("uses tiberius' row encoding"), fallback, "{what}: {}", stderr(&out));
        let map = check_registry(&tgt, "MonitoringDB", &[], std::slice::from_ref(&a));
        let want = expected(std::slice::from_ref(&a), &map, Win::default(), &BTreeMap::new());
        assert_target_eq(&tgt, "MonitoringDB", &want.stage);
        assert_report(&report, &want);
    }
    let narrower = [
        (target("DATETIME2(3)", "SMALLINT", "NVARCHAR(200)", "DECIMAL(9,4)", "NVARCHAR(120)", "INT"), "dbo.PerfSnapshotRun.ServerID is smallint, narrower than the INT perfcopy writes"),
        (target("DATETIME2(3)", "INT", "NVARCHAR(200)", "DECIMAL(5,4)", "NVARCHAR(120)", "INT"), "dbo.PerfSnapshotRun.CpuSignalWaitPct is decimal(5,4), narrower than the DECIMAL(9,4) perfcopy writes"),
        (target("DATETIME2(3)", "INT", "NVARCHAR(200)", "DECIMAL(12,6)", "NVARCHAR(120)", "INT"), "CpuSignalWaitPct is decimal(12,6), of another scale than the DECIMAL(9,4) perfcopy writes"),
        (target("DATETIME2(3)", "INT", "NVARCHAR(100)", "DECIMAL(9,4)", "NVARCHAR(120)", "INT"), "SqlVersion is nvarchar(100), narrower than the NVARCHAR(200) perfcopy writes"),
        (target("DATETIME2(0)", "INT", "NVARCHAR(200)", "DECIMAL(9,4)", "NVARCHAR(120)", "INT"), "SnapshotUTC is datetime2(0), narrower than the DATETIME2(3)"),
        // DATETIME keeps 1/300 s, not milliseconds (the test server keeps DATETIME as declared).
        (target("DATETIME", "INT", "NVARCHAR(200)", "DECIMAL(9,4)", "NVARCHAR(120)", "INT"), "dbo.PerfSnapshotRun.SnapshotUTC is datetime, rounded to 1/300 s"),
    ];
    for (ddl, msg) in narrower {
        let tgt = server();
        tgt.create_database("MonitoringDB");
        tgt.execute("MonitoringDB", servers).unwrap();
        tgt.execute("MonitoringDB", &ddl).unwrap();
        let before = target_snapshot(&tgt, "MonitoringDB");
        let o = perfcopy(&["copy", "--from", &conn(&src, "DBATools"), "--to", &conn(&tgt, "MonitoringDB"), "--register-servers"]);
        let err = failed(&o);
        assert!(err.contains(msg), "wanted '{msg}' in: {err}");
        assert_eq!(target_snapshot(&tgt, "MonitoringDB"), before, "{msg}: the target must be untouched");
    }
}

/// An Azure SQL gateway answers a login with a routing ENVCHANGE naming the server to log in
/// at; perfcopy follows it for sources and targets alike, and gives up on a routing loop.
#[test]
fn logins_follow_a_gateways_routing_to_the_real_server() {
    let t = tempfile::tempdir().unwrap();
    let (src, tgt, gw) = (server(), server(), server());
    let a = series("SQL01", T0, 120, 1, 31);
    seed(&src, t.path(), "DBATools", &a, true);
    seed_target(&tgt, "MonitoringDB", &[("SQL01", 4)], &[]);
    gw.create_database("DBATools");
    gw.create_database("MonitoringDB");
    // The gateway routes every login to the source; a second gateway to the target.
    gw.set_routing(Some(("127.0.0.1", src.addr().port())));
    let gw2 = server();
    gw2.create_database("MonitoringDB");
    gw2.set_routing(Some(("127.0.0.1", tgt.addr().port())));
    let report = copy_json(&["--from", &conn(&gw, "DBATools"), "--to", &conn(&gw2, "MonitoringDB"), "--batch-rows", "50"]);
    let want = expected(std::slice::from_ref(&a), &name_map(&[("SQL01", 4)]), Win::default(), &BTreeMap::new());
    assert_target_eq(&tgt, "MonitoringDB", &want.stage);
    assert_report(&report, &want);
    assert!(gw.stats().routed_logins >= 1 && gw2.stats().routed_logins >= 1, "{:?} {:?}", gw.stats(), gw2.stats());
    assert_eq!((gw.stats().logins, gw2.stats().logins), (0, 0), "nothing logs in at a gateway");

    // A gateway that routes to itself.
    gw.set_routing(Some(("127.0.0.1", gw.addr().port())));
    let o = perfcopy(&["copy", "--from", &conn(&gw, "DBATools"), "--to", &conn(&tgt, "MonitoringDB")]);
    let err = failed(&o);
    assert!(err.contains(&label(&gw, "DBATools")) && err.contains("routed more than 3 times"), "{err}");
    assert_no_secret(&o, PW);
}
