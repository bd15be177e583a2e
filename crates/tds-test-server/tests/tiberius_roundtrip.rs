//! Round trips with the real tiberius 0.13 client over loopback.

mod common;

use common::*;
use tds_test_server::{Column, ServerConfig, SqlType, TestServer};

fn server(packet_size: u32) -> TestServer {
    TestServer::start(ServerConfig { packet_size: Some(packet_size), password: Some(PASSWORD.into()), ..Default::default() }).unwrap()
}

#[tokio::test]
async fn seeded_rows_read_back_identically_over_small_and_large_packets() {
    for packet in [512u32, 32767] {
        for with_sid in [true, false] {
            let srv = server(packet);
            srv.create_dbatools("DBATools_A", with_sid);
            let expected = src_rows(300);
            assert_eq!(srv.insert_batch("DBATools_A", "dbo.PerfSnapshotRun", &src_batch(&expected, with_sid)).unwrap(), 300);
            let expected = if with_sid { expected } else { without_server_id(expected) };

            let mut c = connect(srv.addr(), "DBATools_A", None).await.unwrap();
            let rows = c.query("SELECT * FROM [dbo].[PerfSnapshotRun] ORDER BY PerfSnapshotRunID", &[]).await.unwrap().into_first_result().await.unwrap();
            let got: Vec<SrcRow> = rows.iter().map(|r| from_tiberius(r, with_sid)).collect();
            assert_eq!(got, expected, "packet size {packet}, ServerID column {with_sid}");
            assert_eq!(srv.stats().rows_sent, 300);
            assert_eq!(srv.stats().logins, 1);
        }
    }
}

#[tokio::test]
async fn keyset_pages_with_typed_parameters_cover_the_table_once() {
    let srv = server(512);
    srv.create_dbatools("DBATools_B", true);
    let expected = src_rows(257);
    srv.insert_batch("DBATools_B", "dbo.PerfSnapshotRun", &src_batch(&expected, true)).unwrap();
    let mut c = connect(srv.addr(), "DBATools_B", None).await.unwrap();
    let mut last = 0i64;
    let mut got = Vec::new();
    loop {
        let page = c
            .query("SELECT TOP (@P1) * FROM DBATools_B.dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > @P2 ORDER BY PerfSnapshotRunID ASC", &[&50i32, &last])
            .await
            .unwrap()
            .into_first_result()
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 50);
        for r in &page {
            got.push(from_tiberius(r, true));
        }
        last = got.last().unwrap().id;
    }
    assert_eq!(got, expected);

    // Aggregates and IS NULL filters, against counts computed from the generator.
    let row = c.query("SELECT MIN(PerfSnapshotRunID) AS lo, MAX(PerfSnapshotRunID) AS hi, COUNT(*) AS n, COUNT_BIG(*) AS nb FROM dbo.PerfSnapshotRun WHERE ServerID IS NULL", &[]).await.unwrap().into_row().await.unwrap().unwrap();
    let nulls: Vec<&SrcRow> = expected.iter().filter(|r| r.server_id.is_none()).collect();
    assert_eq!(row.get::<i64, _>("lo"), Some(nulls.first().unwrap().id));
    assert_eq!(row.get::<i64, _>("hi"), Some(nulls.last().unwrap().id));
    assert_eq!(row.get::<i32, _>("n"), Some(nulls.len() as i32));
    assert_eq!(row.get::<i64, _>("nb"), Some(nulls.len() as i64));

    // Time-range key query with NaiveDateTime and string parameters.
    let from = expected[10].snapshot;
    let to = expected[20].snapshot;
    let keys = c
        .query("SELECT ServerID, SnapshotUTC FROM dbo.PerfSnapshotRun WHERE SnapshotUTC >= @P1 AND SnapshotUTC < @P2 AND ServerName <> @P3 ORDER BY SnapshotUTC DESC", &[&from, &to, &"SRV01"])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let want: Vec<(Option<i32>, chrono::NaiveDateTime)> = expected[10..20].iter().rev().filter(|r| r.server_name != "SRV01").map(|r| (r.server_id, r.snapshot)).collect();
    let keys: Vec<(Option<i32>, chrono::NaiveDateTime)> = keys.iter().map(|r| (r.get::<i32, _>(0), r.get::<chrono::NaiveDateTime, _>(1).unwrap())).collect();
    assert_eq!(keys, want);
}

#[tokio::test]
async fn nvarchar_max_and_rows_wider_than_a_packet_round_trip() {
    let srv = server(512);
    srv.create_database("W");
    srv.create_table(
        "W",
        "dbo.Wide",
        vec![
            Column::new("Id", SqlType::Int, false).identity(),
            Column::new("Big", SqlType::NVarChar(None), true),
            Column::new("Mid", SqlType::NVarChar(Some(4000)), true),
            Column::new("Narrow", SqlType::varchar(Some(50)), true),
            Column::new("Flag", SqlType::Bit, true),
        ],
        &[],
    )
    .unwrap();
    let mut c = connect(srv.addr(), "W", None).await.unwrap();
    let big: String = (0..20_000).map(|i| char::from_u32(0x4E00 + (i % 500)).unwrap()).collect();
    let mid = "ab€".repeat(1333);
    type WideRow = (Option<String>, Option<String>, Option<String>, Option<bool>);
    let cases: Vec<WideRow> =
        vec![(Some(big.clone()), Some(mid.clone()), Some("café".into()), Some(true)), (None, None, None, None), (Some(String::new()), Some(String::new()), Some(String::new()), Some(false))];
    for (b, m, n, f) in &cases {
        let r = c.execute("INSERT INTO dbo.Wide (Big, Mid, Narrow, Flag) VALUES (@P1, @P2, @P3, @P4)", &[b, m, n, f]).await.unwrap();
        assert_eq!(r.rows_affected(), &[1]);
    }
    let rows = c.query("SELECT Big, Mid, Narrow, Flag FROM Wide ORDER BY Id", &[]).await.unwrap().into_first_result().await.unwrap();
    let got: Vec<_> = rows.iter().map(|r| (r.get::<&str, _>(0).map(str::to_string), r.get::<&str, _>(1).map(str::to_string), r.get::<&str, _>(2).map(str::to_string), r.get::<bool, _>(3))).collect();
    assert_eq!(got, cases);
}

#[tokio::test]
async fn wrong_password_is_error_18456_and_unknown_database_4060() {
    let srv = server(4096);
    srv.create_database("Db1");
    let e = connect_as(srv.addr(), "Db1", "nope", None).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 18456), "{e:?}");
    let e = connect(srv.addr(), "NoSuchDb", None).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 4060), "{e:?}");
    assert_eq!(srv.stats().failed_logins, 2);
    connect(srv.addr(), "db1", None).await.unwrap();
}

#[tokio::test]
async fn unsupported_statement_error_quotes_it() {
    let srv = server(4096);
    srv.create_database("D");
    let mut c = connect(srv.addr(), "D", None).await.unwrap();
    let e = match c.simple_query("MERGE INTO x USING y ON 1 = 1").await {
        Err(e) => e,
        Ok(s) => s.into_results().await.unwrap_err(),
    };
    assert!(e.to_string().contains("MERGE INTO x USING y ON 1 = 1"), "{e}");
    // The connection stays usable.
    let v = c.query("SELECT 41 + 1 AS answer", &[]).await.unwrap().into_row().await.unwrap().unwrap();
    assert_eq!(v.get::<i32, _>("answer"), Some(42));
}
