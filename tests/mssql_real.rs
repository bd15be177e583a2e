//! The multi-server scenario of tests/mssql_e2e.rs against a real SQL Server, when
//! PERFCOPY_TEST_MSSQL holds an ADO.NET connection string for a login that can create
//! databases (scripts/mssql-up.sh starts one in Docker and prints the value). The test creates
//! its own databases with the DDL in scripts/sql/ and drops them afterwards.

mod common;

use std::collections::BTreeMap;

use common::*;
use tiberius::numeric::Numeric;
use tiberius::{Client, Config, Row as SqlRow};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type Sql = Client<Compat<TcpStream>>;

/// The connection string with its database replaced by `db`.
fn with_db(ado: &str, db: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let (mut cur, mut quote) = (String::new(), None::<char>);
    for ch in ado.chars() {
        match (quote, ch) {
            (None, '\'' | '"' | '{') => quote = Some(if ch == '{' { '}' } else { ch }),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    parts.retain(|p| {
        let key = p.split('=').next().unwrap_or("").trim().to_ascii_lowercase();
        !p.trim().is_empty() && key != "database" && key != "initial catalog"
    });
    parts.push(format!("Database={db}"));
    parts.join(";")
}

async fn connect(ado: &str) -> Sql {
    let config = Config::from_ado_string(ado).unwrap();
    let tcp = TcpStream::connect(config.get_addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    Client::connect(config, tcp.compat_write()).await.unwrap()
}

async fn exec(c: &mut Sql, sql: &str) {
    c.simple_query(sql).await.unwrap().into_results().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn ts(ms: i64) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().naive_utc()
}

fn dec(v: Option<i128>) -> Option<Numeric> {
    v.map(|v| Numeric::new_with_scale(v, 4))
}

/// Inserts source rows with their IDs (IDENTITY_INSERT), 100 per statement.
async fn insert_source(c: &mut Sql, rows: &[SrcRow], with_server_id: bool) {
    exec(c, "SET IDENTITY_INSERT dbo.PerfSnapshotRun ON").await;
    for chunk in rows.chunks(100) {
        let cols = if with_server_id { 13 } else { 12 };
        let mut sql = format!(
            "INSERT INTO dbo.PerfSnapshotRun (PerfSnapshotRunID, SnapshotUTC, {}ServerName, SqlVersion, CpuSignalWaitPct, TopWaitType, TopWaitMsPerSec, SessionsCount, RequestsCount, BlockingSessionCount, DeadlockCountRecent, MemoryGrantWarningCount) VALUES ",
            if with_server_id { "ServerID, " } else { "" }
        );
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("({})", (1..=cols).map(|j| format!("@P{}", i * cols + j)).collect::<Vec<_>>().join(", "))).collect();
        sql.push_str(&values.join(", "));
        let owned: Vec<(chrono::NaiveDateTime, Option<Numeric>, Option<Numeric>)> = chunk.iter().map(|r| (ts(r.snapshot_ms), dec(r.v.cpu_signal_wait_pct), dec(r.v.top_wait_ms_per_sec))).collect();
        let mut p: Vec<&dyn tiberius::ToSql> = Vec::new();
        for (r, (t, cpu, wait)) in chunk.iter().zip(&owned) {
            p.push(&r.run_id);
            p.push(t);
            if with_server_id {
                p.push(&r.server_id);
            }
            p.extend([&r.server_name as &dyn tiberius::ToSql, &r.v.sql_version, cpu, &r.v.top_wait_type, wait, &r.v.sessions, &r.v.requests, &r.v.blocking, &r.v.deadlocks, &r.v.grant_warnings]);
        }
        c.execute(sql.as_str(), &p).await.unwrap_or_else(|e| panic!("seeding: {e}"));
    }
    exec(c, "SET IDENTITY_INSERT dbo.PerfSnapshotRun OFF").await;
}

async fn query(c: &mut Sql, sql: &str) -> Vec<SqlRow> {
    c.simple_query(sql).await.unwrap().into_first_result().await.unwrap()
}

async fn target_rows(c: &mut Sql) -> BTreeMap<(i32, i64), Row> {
    let rows = query(c, "SELECT SnapshotUTC, ServerID, ServerName, SqlVersion, CpuSignalWaitPct, TopWaitType, TopWaitMsPerSec, SessionsCount, RequestsCount, BlockingSessionCount, DeadlockCountRecent, MemoryGrantWarningCount FROM dbo.PerfSnapshotRun").await;
    let num = |r: &SqlRow, i: usize| r.get::<Numeric, _>(i).map(|n| n.value() * 10i128.pow(4 - n.scale() as u32));
    let int = |r: &SqlRow, i: usize| r.get::<i32, _>(i);
    let rows: Vec<Row> = rows
        .iter()
        .map(|r| Row {
            snapshot_ms: r.get::<chrono::NaiveDateTime, _>(0).unwrap().and_utc().timestamp_millis(),
            server_id: r.get(1).unwrap(),
            server_name: r.get::<&str, _>(2).unwrap().to_string(),
            v: Values {
                sql_version: r.get::<&str, _>(3).unwrap().to_string(),
                cpu_signal_wait_pct: num(r, 4),
                top_wait_type: r.get::<&str, _>(5).map(str::to_string),
                top_wait_ms_per_sec: num(r, 6),
                sessions: int(r, 7),
                requests: int(r, 8),
                blocking: int(r, 9),
                deadlocks: int(r, 10),
                grant_warnings: int(r, 11),
            },
        })
        .collect();
    by_key(&rows)
}

async fn registry(c: &mut Sql) -> NameMap {
    query(c, "SELECT ServerName, ServerID FROM dbo.Servers").await.iter().map(|r| (fold(r.get::<&str, _>(0).unwrap()), r.get::<i32, _>(1).unwrap())).collect()
}

#[test]
fn real_sql_server_several_sources_remap_dedupe_window() {
    let Ok(base) = std::env::var("PERFCOPY_TEST_MSSQL") else {
        println!("skipped: PERFCOPY_TEST_MSSQL is not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let prefix = format!("perfcopy_t{}", std::process::id());
    let (db_a, db_b, db_m) = (format!("{prefix}_DBATools_A"), format!("{prefix}_DBATools_B"), format!("{prefix}_MonitoringDB"));
    let ddl = |f: &str| std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sql").join(f)).unwrap();

    let a = series("SQL01\\PROD", T0, 300, 1, 31);
    let mut b = series("Zürich-東京", T0 + DAY, 200, 1, 32);
    b.extend(copy_rows(&a[100..180], 201, 5, None));
    let pre: Vec<Row> = a[40..90]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v = r.v.clone();
            if i % 3 == 0 {
                v.blocking = Some(-9);
            }
            Row { server_id: 1, snapshot_ms: r.snapshot_ms, server_name: r.server_name.clone(), v }
        })
        .collect();

    rt.block_on(async {
        let mut master = connect(&base).await;
        for db in [&db_a, &db_b, &db_m] {
            exec(&mut master, &format!("CREATE DATABASE [{db}]")).await;
        }
        let mut ca = connect(&with_db(&base, &db_a)).await;
        exec(&mut ca, &ddl("dbatools.sql")).await;
        insert_source(&mut ca, &a, true).await;
        let mut cb = connect(&with_db(&base, &db_b)).await;
        exec(&mut cb, &ddl("dbatools.sql")).await;
        exec(&mut cb, "ALTER TABLE dbo.PerfSnapshotRun DROP COLUMN ServerID").await;
        insert_source(&mut cb, &b, false).await;
        let mut cm = connect(&with_db(&base, &db_m)).await;
        exec(&mut cm, &ddl("monitoringdb.sql")).await;
        exec(&mut cm, "INSERT INTO dbo.Servers (ServerName) VALUES (N'SQL01\\PROD')").await;
        for r in &pre {
            let (t, cpu, wait) = (ts(r.snapshot_ms), dec(r.v.cpu_signal_wait_pct), dec(r.v.top_wait_ms_per_sec));
            cm.execute(
                "INSERT INTO dbo.PerfSnapshotRun (SnapshotUTC, ServerID, ServerName, SqlVersion, CpuSignalWaitPct, TopWaitType, TopWaitMsPerSec, SessionsCount, RequestsCount, BlockingSessionCount, DeadlockCountRecent, MemoryGrantWarningCount) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12)",
                &[&t, &r.server_id, &r.server_name, &r.v.sql_version, &cpu, &r.v.top_wait_type, &wait, &r.v.sessions, &r.v.requests, &r.v.blocking, &r.v.deadlocks, &r.v.grant_warnings],
            )
            .await
            .unwrap();
        }
    });

    let win = Win { since: Some(T0 + 3 * 3_600_000), until: Some(T0 + DAY + 10 * 3_600_000) };
    let iso = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let (since, until) = (iso(win.since.unwrap()), iso(win.until.unwrap()));
    let (fa, fb, to) = (with_db(&base, &db_a), with_db(&base, &db_b), with_db(&base, &db_m));
    let args = ["copy", "--from", &fa, "--from", &fb, "--to", &to, "--since", &since, "--until", &until, "--batch-rows", "64", "--json"];
    let before = rt.block_on(async { target_rows(&mut connect(&to).await).await });

    let refused = perfcopy(&args);
    let after_refused = rt.block_on(async { target_rows(&mut connect(&to).await).await });
    let reg = [&args[..], &["--register-servers"][..]].concat();
    let report = perfcopy(&reg);
    let (got, map) = rt.block_on(async {
        let mut cm = connect(&to).await;
        (target_rows(&mut cm).await, registry(&mut cm).await)
    });

    // Clean up before asserting, so a failure leaves no databases behind.
    rt.block_on(async {
        let mut master = connect(&base).await;
        for db in [&db_a, &db_b, &db_m] {
            exec(&mut master, &format!("ALTER DATABASE [{db}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE [{db}]")).await;
        }
    });

    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("Zürich-東京"), "{}", stderr(&refused));
    assert_eq!(before, by_key(&pre));
    assert_eq!(after_refused, before, "a refused copy changed the target");
    let report = ok_json(&report);
    assert_eq!(map.get(&fold("SQL01\\PROD")), Some(&1), "{map:?}");
    let want = expected(&[a, b], &map, win, &by_key(&pre));
    assert_rows_eq("real MonitoringDB", &got, &want.stage);
    assert_report(&report, &want);
}
