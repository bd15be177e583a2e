//! tiberius bulk loads into the in-memory tables, bulk validation errors, and fault injection.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tds_test_server::{ServerConfig, SqlError, TestServer};
use tiberius::{SortOrder, SqlBulkCopyOption};

fn server(packet: u32) -> TestServer {
    let srv = TestServer::start(ServerConfig { packet_size: Some(packet), password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_monitoringdb("MonitoringDB");
    srv
}

fn expected_target(rows: &[SrcRow], first_id: i64) -> Vec<SrcRow> {
    rows.iter().enumerate().map(|(k, r)| SrcRow { id: first_id + k as i64, server_id: Some(r.server_id.unwrap_or(-1)), ..r.clone() }).collect()
}

async fn bulk(c: &mut Conn, rows: &[SrcRow]) -> tiberius::Result<u64> {
    let mut req = c.bulk_insert_with_options("dbo.PerfSnapshotRun", &TARGET_BULK_COLUMNS, SqlBulkCopyOption::TableLock.into(), &[("SnapshotUTC", SortOrder::Ascending)]).await?;
    for r in rows {
        req.send(target_token_row(r)).await?;
    }
    Ok(req.finalize().await?.total())
}

#[tokio::test]
async fn tiberius_bulk_insert_round_trips_every_value_over_512_and_32767_packets() {
    for packet in [512u32, 32767] {
        let srv = server(packet);
        let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
        let rows = src_rows(700);
        assert_eq!(bulk(&mut c, &rows[..400]).await.unwrap(), 400);
        assert_eq!(bulk(&mut c, &rows[400..]).await.unwrap(), 300);
        let got = from_batch(&srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap());
        assert_eq!(got, expected_target(&rows, 1), "packet size {packet}");
        let st = srv.stats();
        assert_eq!((st.bulk_loads, st.bulk_rows_received), (2, 700));
    }
}

#[tokio::test]
async fn bulk_rows_in_a_transaction_appear_on_commit_and_vanish_on_rollback() {
    let srv = server(512);
    let mut a = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let mut b = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let rows = src_rows(50);
    a.simple_query("BEGIN TRAN").await.unwrap().into_results().await.unwrap();
    bulk(&mut a, &rows[..20]).await.unwrap();
    let seen_b = b.query("SELECT COUNT(*) FROM dbo.PerfSnapshotRun", &[]).await.unwrap().into_row().await.unwrap().unwrap().get::<i32, _>(0);
    let seen_a = a.query("SELECT COUNT(*) FROM dbo.PerfSnapshotRun", &[]).await.unwrap().into_row().await.unwrap().unwrap().get::<i32, _>(0);
    assert_eq!((seen_a, seen_b), (Some(20), Some(0)));
    a.simple_query("ROLLBACK").await.unwrap().into_results().await.unwrap();
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0);
    a.simple_query("BEGIN TRAN").await.unwrap().into_results().await.unwrap();
    bulk(&mut a, &rows[20..]).await.unwrap();
    a.simple_query("COMMIT TRAN").await.unwrap().into_results().await.unwrap();
    // Identities 1..=20 were consumed by the rolled-back load, as in SQL Server.
    assert_eq!(from_batch(&srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap()), expected_target(&rows[20..], 21));
}

#[tokio::test]
async fn bulk_null_into_not_null_column_fails_the_whole_load_with_515() {
    let srv = server(512);
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let rows = src_rows(10);
    let mut req = c.bulk_insert_with_options("dbo.PerfSnapshotRun", &TARGET_BULK_COLUMNS, Default::default(), &[]).await.unwrap();
    for (i, r) in rows.iter().enumerate() {
        let mut t = target_token_row(r);
        if i == 7 {
            // ServerName is NVARCHAR(128) NOT NULL.
            let mut vals: Vec<_> = t.into_iter().collect();
            vals[2] = tiberius::ColumnData::String(None);
            t = tiberius::TokenRow::new();
            for v in vals {
                t.push(v);
            }
        }
        req.send(t).await.unwrap();
    }
    let e = req.finalize().await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 515 && t.message().contains("ServerName")), "{e:?}");
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0, "atomic: no row of the failed load");
    // The connection is still usable.
    assert_eq!(bulk(&mut c, &rows).await.unwrap(), 10);
}

#[tokio::test]
async fn count_only_table_counts_bulk_rows_without_storing_them() {
    let srv = server(32767);
    srv.set_bulk_count_only("MonitoringDB", "dbo.PerfSnapshotRun", true).unwrap();
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    assert_eq!(bulk(&mut c, &src_rows(2000)).await.unwrap(), 2000);
    assert_eq!(srv.stats().bulk_rows_received, 2000);
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0);
}

#[tokio::test]
async fn drop_after_rows_cuts_a_result_and_closes_only_that_connection() {
    let srv = server(512);
    srv.create_dbatools("DBATools_F", true);
    srv.insert_batch("DBATools_F", "dbo.PerfSnapshotRun", &src_batch(&src_rows(100), true)).unwrap();
    srv.faults().drop_after_rows(30);
    let mut c = connect(srv.addr(), "DBATools_F", None).await.unwrap();
    let r = async { c.query("SELECT * FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID", &[]).await?.into_first_result().await }.await;
    assert!(r.is_err(), "a cut result must fail, got {:?} rows", r.map(|v| v.len()));
    assert_eq!(srv.stats().dropped_connections, 1);
    assert_eq!(srv.stats().rows_sent, 30);
    // One-shot: a new connection reads everything.
    let mut c = connect(srv.addr(), "DBATools_F", None).await.unwrap();
    let all = c.query("SELECT * FROM dbo.PerfSnapshotRun", &[]).await.unwrap().into_first_result().await.unwrap();
    assert_eq!(all.len(), 100);
}

#[tokio::test]
async fn drop_after_rows_counts_cumulatively_per_connection() {
    let srv = server(512);
    srv.create_dbatools("DBATools_F", true);
    srv.insert_batch("DBATools_F", "dbo.PerfSnapshotRun", &src_batch(&src_rows(100), true)).unwrap();
    let page = "SELECT TOP (20) * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > @P1 ORDER BY PerfSnapshotRunID";
    let mut a = connect(srv.addr(), "DBATools_F", None).await.unwrap();
    let mut b = connect(srv.addr(), "DBATools_F", None).await.unwrap();
    // Rows sent before arming do not count.
    assert_eq!(a.query(page, &[&0i64]).await.unwrap().into_first_result().await.unwrap().len(), 20);
    srv.faults().drop_after_rows(30);
    // Each connection counts its own rows: B's 25 do not bring A closer to 30.
    let q25 = "SELECT TOP (25) * FROM dbo.PerfSnapshotRun";
    assert_eq!(b.query(q25, &[]).await.unwrap().into_first_result().await.unwrap().len(), 25);
    let first = a.query(page, &[&20i64]).await.unwrap().into_first_result().await.unwrap();
    assert_eq!(first.iter().map(|r| from_tiberius(r, true).id).collect::<Vec<_>>(), (21..=40).collect::<Vec<_>>());
    assert_eq!(srv.stats().dropped_connections, 0);
    // A's second page crosses 30 rows in total (20 + 10): cut there.
    let r = async { a.query(page, &[&40i64]).await?.into_first_result().await }.await;
    assert!(r.is_err(), "the second page must be cut, got {:?} rows", r.map(|v| v.len()));
    assert_eq!(srv.stats().dropped_connections, 1);
    assert_eq!(srv.stats().rows_sent, 20 + 25 + 20 + 10);
    // One-shot: B (at 25) goes on reading past 30.
    assert_eq!(b.query(q25, &[]).await.unwrap().into_first_result().await.unwrap().len(), 25);
    assert_eq!(srv.stats().dropped_connections, 1);
}

#[tokio::test]
async fn drop_on_second_bulk_load_keeps_the_first_and_discards_the_second() {
    let srv = server(512);
    srv.faults().drop_on_bulk_load(2);
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let rows = src_rows(60);
    assert_eq!(bulk(&mut c, &rows[..30]).await.unwrap(), 30);
    assert!(bulk(&mut c, &rows[30..]).await.is_err());
    assert_eq!(from_batch(&srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap()), expected_target(&rows[..30], 1));
    assert_eq!(srv.stats().dropped_connections, 1);
}

#[tokio::test]
async fn deadlock_once_rolls_back_and_fails_one_statement_only() {
    let srv = server(512);
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    srv.faults().deadlock_once("insert into dbo.servers");
    c.simple_query("BEGIN TRAN").await.unwrap().into_results().await.unwrap();
    c.execute("UPDATE dbo.Servers SET Environment = N'x' WHERE ServerID = 0", &[]).await.unwrap();
    let e = c.execute("INSERT INTO dbo.Servers (ServerName) VALUES (@P1)", &[&"S1"]).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 1205 && t.class() == 13), "{e:?}");
    assert_eq!(srv.stats().rollbacks, 1, "the deadlock victim's transaction is rolled back");
    // The retry succeeds outside any transaction (tiberius saw the rollback ENVCHANGE).
    c.execute("INSERT INTO dbo.Servers (ServerName) VALUES (@P1)", &[&"S1"]).await.unwrap();
    assert_eq!(srv.row_count("MonitoringDB", "dbo.Servers").unwrap(), 1);

    srv.faults().timeout_once("");
    let e = c.execute("DELETE FROM dbo.Servers WHERE ServerID = 99", &[]).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 1222), "{e:?}");
    srv.faults().error_once("servers", SqlError::new(50000, "custom failure"));
    let e = c.query("SELECT * FROM dbo.Servers", &[]).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 50000), "{e:?}");
    c.query("SELECT * FROM dbo.Servers", &[]).await.unwrap().into_first_result().await.unwrap();
}

#[tokio::test]
async fn refused_logins_and_delayed_responses() {
    let srv = server(4096);
    srv.faults().refuse_logins(true);
    let e = connect(srv.addr(), "MonitoringDB", None).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 18456), "{e:?}");
    srv.faults().refuse_logins(false);
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    srv.faults().delay_responses(Some(Duration::from_millis(300)));
    let t0 = Instant::now();
    c.query("SELECT 1", &[]).await.unwrap().into_first_result().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(290), "{:?}", t0.elapsed());
    srv.faults().clear();
    let t0 = Instant::now();
    c.query("SELECT 1", &[]).await.unwrap().into_first_result().await.unwrap();
    assert!(t0.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn synthetic_table_serves_many_rows_with_identity_numbering() {
    let srv = server(32767);
    srv.create_dbatools("DBATools_S", true);
    let tmpl = src_rows(7);
    srv.fill_synthetic("DBATools_S", "dbo.PerfSnapshotRun", &src_batch(&tmpl, true), 50_000).unwrap();
    let mut c = connect(srv.addr(), "DBATools_S", None).await.unwrap();
    let t0 = Instant::now();
    let rows = c.query("SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > @P1", &[&0i64]).await.unwrap().into_first_result().await.unwrap();
    eprintln!("synthetic: 50000 rows read by tiberius in {:?}", t0.elapsed());
    assert_eq!(rows.len(), 50_000);
    for (i, r) in rows.iter().enumerate().step_by(997) {
        let want = SrcRow { id: i as i64 + 1, ..tmpl[i % 7].clone() };
        assert_eq!(from_tiberius(r, true), want);
    }
}

/// The whole token stream of the reply to one sp_executesql.
async fn raw_reply(c: &mut Conn, sql: &str, after: i64) -> Vec<u8> {
    let mut reply = c.query_raw(sql, &[&after]).await.unwrap();
    let mut v = Vec::new();
    while let Some(p) = reply.next_payload().await.unwrap() {
        v.extend_from_slice(&p);
    }
    v
}

fn done_token(token: u8, status: u16, cur_cmd: u16, count: u64) -> Vec<u8> {
    let mut v = vec![token];
    v.extend(status.to_le_bytes());
    v.extend(cur_cmd.to_le_bytes());
    v.extend(count.to_le_bytes());
    v
}

/// DONEINPROC, RETURNSTATUS, DONEPROC: how SQL Server ends the reply to an RPC (MS-TDS 4.9).
fn rpc_tail(inproc_status: u16, count: u64, return_status: i32, proc_status: u16) -> Vec<u8> {
    let mut v = done_token(0xFF, inproc_status, 0xC1, count);
    v.push(0x79);
    v.extend(return_status.to_le_bytes());
    v.extend(done_token(0xFE, proc_status, 0xE0, 0));
    v
}

#[tokio::test]
async fn end_reply_early_cuts_a_page_under_a_done_that_disagrees_or_flags_an_error() {
    let srv = server(512);
    srv.create_dbatools("DBATools_E", true);
    srv.insert_batch("DBATools_E", "dbo.PerfSnapshotRun", &src_batch(&src_rows(100), true)).unwrap();
    let page = "SELECT TOP (20) * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > @P1 ORDER BY PerfSnapshotRunID";
    let mut c = connect(srv.addr(), "DBATools_E", None).await.unwrap();
    let whole = raw_reply(&mut c, page, 0).await;
    let tail = rpc_tail(0x11, 20, 0, 0);
    assert!(whole.ends_with(&tail), "not SQL Server's RPC ending: {:02X?}", &whole[whole.len().saturating_sub(31)..]);

    // The second matching statement from now is cut after 5 rows; its DONEINPROC still counts 20.
    srv.faults().end_reply_early("WHERE PerfSnapshotRunID >", 1, 5, tds_test_server::EarlyEnd::CountMismatch);
    assert_eq!(raw_reply(&mut c, page, 0).await, whole, "skipped statement");
    let cut = raw_reply(&mut c, page, 0).await;
    let rows_part = &cut[..cut.len() - tail.len()];
    assert!(cut.ends_with(&tail) && rows_part.len() < whole.len() - tail.len() && whole.starts_with(rows_part), "{} of {} bytes", cut.len(), whole.len());
    // tiberius (perfcopy's vendored copy) compares a result set's DONE_COUNT with its rows.
    srv.faults().end_reply_early("WHERE PerfSnapshotRunID >", 0, 5, tds_test_server::EarlyEnd::CountMismatch);
    let r = async { c.query(page, &[&0i64]).await?.into_first_result().await }.await;
    match r {
        Err(tiberius::error::Error::Protocol(m)) => assert_eq!(m, "the server's DONE counts 20 rows for a result set of which 5 arrived"),
        other => panic!("{:?}", other.map(|rows| rows.len())),
    }

    // DONE_ERROR without an ERROR token, on the DONEINPROC and the DONEPROC.
    srv.faults().end_reply_early("WHERE PerfSnapshotRunID >", 0, 5, tds_test_server::EarlyEnd::ErrorFlag);
    let flagged = raw_reply(&mut c, page, 0).await;
    let flagged_tail = rpc_tail(0x03, 0, -6, 0x02);
    assert!(flagged.ends_with(&flagged_tail), "{:02X?}", &flagged[flagged.len().saturating_sub(31)..]);
    assert_eq!(&flagged[..flagged.len() - flagged_tail.len()], rows_part);
    // tiberius (perfcopy's vendored copy) fails such a reply at its end instead of ending the
    // rows as if the statement had succeeded.
    srv.faults().end_reply_early("WHERE PerfSnapshotRunID >", 0, 5, tds_test_server::EarlyEnd::ErrorFlag);
    let r = async { c.query(page, &[&0i64]).await?.into_first_result().await }.await;
    match r {
        Err(tiberius::error::Error::Protocol(m)) => assert_eq!(m, "the server flagged the request as failed (DONE status 0x0003) but sent no ERROR token"),
        other => panic!("{:?}", other.map(|rows| rows.len())),
    }
    // One-shot.
    assert_eq!(raw_reply(&mut c, page, 0).await, whole);
    assert_eq!(srv.stats().errors_sent, 0);
}
