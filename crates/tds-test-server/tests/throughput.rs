//! Throughput mode: a synthetic table served from pre-encoded ROW tokens must return exactly
//! what the normal (row-by-row encoding) path returns for the same rows, through tiberius.
//! Expectations are built from the generator (`SrcRow { id: i + 1, ..template[i % k] }`), and
//! compared with a second table holding the same rows inserted the ordinary way.

mod common;

use std::time::Instant;

use common::*;
use tds_test_server::{ServerConfig, TestServer};

const N: usize = 5_000;
const K: usize = 13;

fn expected(n: usize) -> Vec<SrcRow> {
    let tmpl = src_rows(K);
    (0..n).map(|i| SrcRow { id: i as i64 + 1, ..tmpl[i % K].clone() }).collect()
}

/// DBATools_S: pre-encoded synthetic table. DBATools_N: the same rows, inserted normally.
fn two_tables(n: usize, packet: u32) -> TestServer {
    let srv = TestServer::start(ServerConfig { packet_size: Some(packet), password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools_S", true);
    srv.create_dbatools("DBATools_N", true);
    srv.fill_synthetic("DBATools_S", "dbo.PerfSnapshotRun", &src_batch(&src_rows(K), true), n).unwrap();
    srv.insert_batch("DBATools_N", "dbo.PerfSnapshotRun", &src_batch(&expected(n), true)).unwrap();
    assert!(srv.is_pre_encoded("DBATools_S", "dbo.PerfSnapshotRun"));
    assert!(!srv.is_pre_encoded("DBATools_N", "dbo.PerfSnapshotRun"));
    srv
}

/// Column names and tiberius column types of a result, plus its rows.
type Shape = Vec<(String, tiberius::ColumnType)>;

async fn query(c: &mut Conn, sql: &str, params: &[&dyn tiberius::ToSql]) -> (Shape, Vec<tiberius::Row>) {
    let mut stream = c.query(sql, params).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let shape = stream.columns().await.unwrap().map(|cols| cols.iter().map(|c| (c.name().to_string(), c.column_type())).collect()).unwrap_or_default();
    let rows = stream.into_first_result().await.unwrap();
    (shape, rows)
}

#[tokio::test]
async fn pre_encoded_rows_equal_the_normal_path_and_the_generator() {
    for packet in [512u32, 32767] {
        let srv = two_tables(N, packet);
        let mut s = connect(srv.addr(), "DBATools_S", None).await.unwrap();
        let mut n = connect(srv.addr(), "DBATools_N", None).await.unwrap();
        let want = expected(N);

        // Whole table, and keyset pages as perfcopy reads them.
        let all = "SELECT * FROM dbo.PerfSnapshotRun";
        let (shape_s, rows_s) = query(&mut s, all, &[]).await;
        let (shape_n, rows_n) = query(&mut n, all, &[]).await;
        assert_eq!(shape_s, shape_n, "COLMETADATA");
        assert_eq!(rows_s.iter().map(|r| from_tiberius(r, true)).collect::<Vec<_>>(), want, "packet {packet}");
        assert_eq!(rows_n.iter().map(|r| from_tiberius(r, true)).collect::<Vec<_>>(), want);
        assert_eq!(srv.stats().pre_encoded_rows_sent, N as u64, "the synthetic table was served pre-encoded");

        let page = "SELECT TOP (@P1) * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > @P2 ORDER BY PerfSnapshotRunID";
        let mut last = 0i64;
        let mut got = Vec::new();
        loop {
            let (_, p) = query(&mut s, page, &[&700i32, &last]).await;
            let (_, q) = query(&mut n, page, &[&700i32, &last]).await;
            let p: Vec<SrcRow> = p.iter().map(|r| from_tiberius(r, true)).collect();
            assert_eq!(p, q.iter().map(|r| from_tiberius(r, true)).collect::<Vec<_>>(), "page after {last}");
            let Some(l) = p.last() else { break };
            last = l.id;
            got.extend(p);
        }
        assert_eq!(got, want);

        // Projections with aliases, reversed comparisons, BETWEEN, NULL and empty ranges.
        let cases: [(&str, Vec<i64>); 5] = [
            ("SELECT PerfSnapshotRunID AS id, ServerName, TopWaitMsPerSec, PerfSnapshotRunID FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID BETWEEN 10 AND 40 ORDER BY id", (10..=40).collect()),
            ("SELECT TOP 3 ServerName, PerfSnapshotRunID FROM dbo.PerfSnapshotRun WHERE 4990 < PerfSnapshotRunID AND PerfSnapshotRunID <= 5000", vec![4991, 4992, 4993]),
            ("SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID = 77", vec![77]),
            ("SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > 999999", vec![]),
            ("SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > NULL", vec![]),
        ];
        for (sql, ids) in cases {
            let before = srv.stats().pre_encoded_rows_sent;
            let (shape_s, rows_s) = query(&mut s, sql, &[]).await;
            let (shape_n, rows_n) = query(&mut n, sql, &[]).await;
            assert_eq!(shape_s, shape_n, "{sql}");
            assert_eq!(srv.stats().pre_encoded_rows_sent - before, ids.len() as u64, "{sql} served pre-encoded");
            let got_ids: Vec<i64> = rows_s.iter().map(|r| r.get::<i64, _>("PerfSnapshotRunID").unwrap()).collect();
            assert_eq!(got_ids, ids, "{sql}");
            for (a, b) in rows_s.iter().zip(&rows_n) {
                let id = a.get::<i64, _>("PerfSnapshotRunID").unwrap();
                let w = &want[id as usize - 1];
                assert_eq!(a.get::<&str, _>("ServerName"), Some(w.server_name.as_str()), "{sql}");
                assert_eq!(a.get::<&str, _>("ServerName"), b.get::<&str, _>("ServerName"), "{sql}");
                if shape_s.iter().any(|(c, _)| c == "TopWaitMsPerSec") {
                    let dec = |r: &tiberius::Row| r.get::<rust_decimal::Decimal, _>("TopWaitMsPerSec").map(|d| d.mantissa());
                    assert_eq!(dec(a), w.wait_ms, "{sql}");
                    assert_eq!(dec(a), dec(b), "{sql}");
                }
                if shape_s.iter().any(|(c, _)| c == "id") {
                    assert_eq!(a.get::<i64, _>("id"), Some(id), "{sql}");
                }
            }
        }

        // Forms the fast path does not take still answer correctly (normal path, stored rows).
        let before = srv.stats().pre_encoded_rows_sent;
        let (_, r) = query(&mut s, "SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > 4995 ORDER BY PerfSnapshotRunID DESC", &[]).await;
        assert_eq!(r.iter().map(|r| from_tiberius(r, true).id).collect::<Vec<_>>(), vec![5000, 4999, 4998, 4997, 4996]);
        assert_eq!(srv.stats().pre_encoded_rows_sent, before);
    }
}

#[tokio::test]
async fn a_write_ends_pre_encoded_mode_and_reads_see_it() {
    let srv = two_tables(100, 4096);
    let mut s = connect(srv.addr(), "DBATools_S", None).await.unwrap();
    assert_eq!(s.execute("UPDATE dbo.PerfSnapshotRun SET ServerName = N'changed' WHERE PerfSnapshotRunID = 5", &[]).await.unwrap().total(), 1);
    assert!(!srv.is_pre_encoded("DBATools_S", "dbo.PerfSnapshotRun"));
    let (_, r) = query(&mut s, "SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID BETWEEN 4 AND 6", &[]).await;
    let names: Vec<String> = r.iter().map(|r| from_tiberius(r, true).server_name).collect();
    let want = expected(6);
    assert_eq!(names, vec![want[3].server_name.clone(), "changed".into(), want[5].server_name.clone()]);
    assert_eq!(srv.stats().pre_encoded_rows_sent, 0);

    // Inside a transaction the own uncommitted row is visible; after ROLLBACK it is gone.
    let srv = two_tables(100, 4096);
    let mut s = connect(srv.addr(), "DBATools_S", None).await.unwrap();
    s.simple_query("BEGIN TRAN").await.unwrap().into_results().await.unwrap();
    s.execute("INSERT INTO dbo.PerfSnapshotRun (SnapshotUTC, ServerName, SqlVersion) VALUES ('2024-02-02 00:00:00.000', N'X', N'V')", &[]).await.unwrap();
    let (_, r) = query(&mut s, "SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > 99", &[]).await;
    assert_eq!(r.iter().map(|r| from_tiberius(r, true).id).collect::<Vec<_>>(), vec![100, 101]);
    s.simple_query("ROLLBACK").await.unwrap().into_results().await.unwrap();
    let (_, r) = query(&mut s, "SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > 90", &[]).await;
    assert_eq!(r.iter().map(|r| from_tiberius(r, true)).collect::<Vec<_>>(), expected(100)[90..].to_vec());
}

/// Prints how long tiberius takes to read the same rows from both paths (no timed assertion:
/// the machine's speed is not the subject; run with --nocapture to see it).
#[tokio::test]
async fn timing_printout_pre_encoded_vs_normal() {
    let n = 50_000;
    let srv = two_tables(n, 32767);
    for db in ["DBATools_S", "DBATools_N"] {
        let mut c = connect(srv.addr(), db, None).await.unwrap();
        let t0 = Instant::now();
        let rows = c.simple_query("SELECT * FROM dbo.PerfSnapshotRun").await.unwrap().into_first_result().await.unwrap();
        assert_eq!(rows.len(), n);
        assert_eq!(from_tiberius(&rows[n - 1], true), expected(n).pop().unwrap());
        eprintln!("timing: {db}: {n} rows read by tiberius in {:?}", t0.elapsed());
    }
}
