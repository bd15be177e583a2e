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

/// tiberius bulk-loads the child tables' types (BINARY, VARBINARY(n|MAX), XML, VARCHAR in
/// cp1251 and cp1253 collations, BIT NOT NULL) and reads them back with a SELECT, including
/// SQL_VARIANT values the server stored with their base types; tiberius decodes every value by
/// its own rules, and each must be the test's.
#[tokio::test]
async fn child_table_types_bulk_load_and_read_back_with_tiberius() {
    use std::borrow::Cow;
    use tds_test_server::{Value, Variant};
    use tiberius::{ColumnData, TokenRow};

    let srv = server(512);
    srv.create_database("C");
    srv.execute(
        "C",
        "CREATE TABLE dbo.Kids (Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, Hash BINARY(8) NULL, Handle VARBINARY(64) NULL, Blob VARBINARY(MAX) NULL, \
         PlanXml XML NULL, Reason VARCHAR(50) COLLATE Cyrillic_General_CI_AS NULL, Note VARCHAR(MAX) COLLATE Greek_CI_AS NULL, Flag BIT NOT NULL, V SQL_VARIANT NULL)",
    )
    .unwrap();
    type Kid = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>, Option<String>, Option<String>, Option<String>, bool);
    let blob: Vec<u8> = (0..25_000u32).map(|i| (i % 253) as u8).collect();
    let kids: Vec<Kid> = vec![
        (Some(vec![1, 2, 3, 4, 5, 6, 7, 8]), Some(vec![0xFF; 64]), Some(blob.clone()), Some(format!("<p>{}</p>", "Ωμέγα ".repeat(2000))), Some("Высокая нагрузка".into()), Some("Καλημέρα ".repeat(1200)), true),
        (None, None, None, None, None, None, false),
        // Not an empty XML: tiberius 0.13 writes one as a 0-length chunk (the PLP terminator)
        // followed by a second terminator, 4 bytes the server then reads as the next column.
        (Some(vec![0; 8]), Some(Vec::new()), Some(Vec::new()), Some("<a/>".into()), Some(String::new()), Some(String::new()), true),
    ];
    let mut c = connect(srv.addr(), "C", None).await.unwrap();
    let cols = ["Hash", "Handle", "Blob", "PlanXml", "Reason", "Note", "Flag"];
    let mut req = c.bulk_insert_columns("dbo.Kids", &cols).await.unwrap();
    for k in &kids {
        let mut t = TokenRow::new();
        for b in [&k.0, &k.1, &k.2] {
            t.push(ColumnData::Binary(b.clone().map(Cow::Owned)));
        }
        t.push(ColumnData::Xml(k.3.clone().map(|x| Cow::Owned(tiberius::xml::XmlData::new(x)))));
        for s in [&k.4, &k.5] {
            t.push(ColumnData::String(s.clone().map(Cow::Owned)));
        }
        t.push(ColumnData::Bit(Some(k.6)));
        req.send(t).await.unwrap();
    }
    assert_eq!(req.finalize().await.unwrap().total(), 3);

    // The server decoded what tiberius sent (VARCHAR bytes in each column's code page).
    let stored = srv.table_rows("C", "dbo.Kids").unwrap();
    let as_value = |b: &Option<Vec<u8>>| b.clone().map_or(Value::Null, Value::Bytes);
    let as_text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Str);
    for (row, k) in stored.iter().zip(&kids) {
        assert_eq!(row[1..8], [as_value(&k.0), as_value(&k.1), as_value(&k.2), as_text(&k.3), as_text(&k.4), as_text(&k.5), Value::Bool(k.6)]);
    }
    // Variants with their base types, set by the test (tiberius cannot bulk-load them).
    let cyrillic = tds_test_server::Collation::from_name("Cyrillic_General_CI_AS").unwrap();
    let variants = [
        Value::Variant(Box::new(Variant { base: SqlType::Int, value: Value::Int(-7) })),
        Value::Variant(Box::new(Variant { base: SqlType::VarChar(Some(20), cyrillic), value: Value::Str("Память".into()) })),
        Value::Variant(Box::new(Variant { base: SqlType::Decimal { precision: 18, scale: 2 }, value: Value::Decimal { mantissa: 12_345, scale: 2 } })),
    ];
    srv.execute("C", "DELETE FROM dbo.Kids").unwrap();
    let rows: Vec<Vec<Value>> = stored.iter().zip(&variants).map(|(r, v)| r[1..8].iter().cloned().chain([v.clone()]).collect()).collect();
    srv.insert_rows("C", "dbo.Kids", &["Hash", "Handle", "Blob", "PlanXml", "Reason", "Note", "Flag", "V"], rows).unwrap();

    let rows = c.query("SELECT Hash, Handle, Blob, PlanXml, Reason, Note, Flag, V FROM dbo.Kids ORDER BY Id", &[]).await.unwrap().into_first_result().await.unwrap();
    assert_eq!(rows.len(), 3);
    for (i, (r, k)) in rows.iter().zip(&kids).enumerate() {
        let cells: Vec<&ColumnData> = r.cells().map(|(_, d)| d).collect();
        let bytes = |d: &ColumnData| match d {
            ColumnData::Binary(b) => b.as_ref().map(|b| b.to_vec()),
            other => panic!("row {i}: {other:?} is not binary"),
        };
        let text = |d: &ColumnData| match d {
            ColumnData::String(s) => s.as_ref().map(|s| s.to_string()),
            ColumnData::Xml(x) => x.as_ref().map(|x| x.to_string()),
            other => panic!("row {i}: {other:?} is not text"),
        };
        let got: Kid = (bytes(cells[0]), bytes(cells[1]), bytes(cells[2]), text(cells[3]), text(cells[4]), text(cells[5]), matches!(cells[6], ColumnData::Bit(Some(true))));
        assert!(got == *k, "row {i}");
        assert!(matches!(cells[3], ColumnData::Xml(_)), "row {i}: XML comes as XML");
        match (i, cells[7]) {
            (0, ColumnData::I32(Some(-7))) => {}
            (1, ColumnData::String(Some(s))) if s == "Память" => {}
            (2, ColumnData::Numeric(Some(n))) if n.value() == 12_345 && n.scale() == 2 => {}
            (_, other) => panic!("row {i}: variant {other:?}"),
        }
    }
}
