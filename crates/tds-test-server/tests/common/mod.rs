//! Shared test helpers: a deterministic PerfSnapshotRun seed whose values are derived from the
//! row index (so expectations are computed independently of the server), and a tiberius connect.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Int32Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, NaiveDateTime};
use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub type Conn = Client<Compat<TcpStream>>;

pub const PASSWORD: &str = "Str0ng!pw";

pub async fn connect(addr: SocketAddr, db: &str, packet_size: Option<u32>) -> tiberius::Result<Conn> {
    connect_as(addr, db, PASSWORD, packet_size).await
}

pub async fn connect_as(addr: SocketAddr, db: &str, password: &str, packet_size: Option<u32>) -> tiberius::Result<Conn> {
    let mut config = Config::new();
    config.host(addr.ip());
    config.port(addr.port());
    config.database(db);
    config.authentication(AuthMethod::sql_server("perfcopy", password));
    config.encryption(EncryptionLevel::NotSupported);
    if let Some(p) = packet_size {
        config.packet_size(p);
    }
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

/// One source row, as the test expects to read it back.
#[derive(Debug, Clone, PartialEq)]
pub struct SrcRow {
    pub id: i64,
    pub snapshot: NaiveDateTime,
    pub server_id: Option<i32>,
    pub server_name: String,
    pub sql_version: String,
    /// DECIMAL(9,4) mantissa.
    pub cpu: Option<i128>,
    pub top_wait: Option<String>,
    /// DECIMAL(18,4) mantissa.
    pub wait_ms: Option<i128>,
    pub counts: [Option<i32>; 5],
}

pub const MAX_9_4: i128 = 999_999_999;
pub const MAX_18_4: i128 = 999_999_999_999_999_999;

pub fn src_row(i: usize) -> SrcRow {
    let base = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let names = ["SRV01", "HOST\\INST", "Ünïcødé-東京\\SQL😀", "srv-with-a-long-name-padding-padding-padding"];
    let i64v = i as i64;
    SrcRow {
        id: i64v + 1,
        snapshot: base + chrono::Duration::milliseconds(i64v * 61_123 + 7),
        server_id: if i.is_multiple_of(3) { None } else { Some((i as i32) * 7 - 1000) },
        server_name: names[i % names.len()].to_string(),
        sql_version: if i % 10 == 9 { "V".repeat(200) } else { format!("Microsoft SQL Server 2019 (RTM-CU{i}) — 15.0.{i}") },
        cpu: match i % 5 {
            0 => None,
            1 => Some(MAX_9_4),
            2 => Some(-MAX_9_4),
            _ => Some((i as i128 * 123_457) % MAX_9_4 - 5_000),
        },
        top_wait: if i.is_multiple_of(2) { None } else { Some(format!("PAGEIOLATCH_SH_{i}")) },
        wait_ms: match i % 7 {
            0 => None,
            1 => Some(MAX_18_4),
            2 => Some(-MAX_18_4),
            _ => Some(i as i128 * 1_000_003 - 77),
        },
        counts: [
            if i.is_multiple_of(2) { None } else { Some(i as i32) },
            if i % 4 == 1 { Some(i32::MAX) } else { None },
            if i % 4 == 2 { Some(i32::MIN) } else { None },
            None,
            Some(-(i as i32)),
        ],
    }
}

pub fn src_rows(n: usize) -> Vec<SrcRow> {
    (0..n).map(src_row).collect()
}

/// A RecordBatch in the source shape without PerfSnapshotRunID (the server assigns identity).
pub fn src_batch(rows: &[SrcRow], with_server_id: bool) -> RecordBatch {
    let ms = |d: &NaiveDateTime| d.and_utc().timestamp_millis();
    let mut fields = vec![Field::new("SnapshotUTC", DataType::Timestamp(TimeUnit::Millisecond, None), false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| ms(&r.snapshot)).collect::<Vec<_>>()))];
    if with_server_id {
        fields.push(Field::new("ServerID", DataType::Int32, true));
        cols.push(Arc::new(Int32Array::from(rows.iter().map(|r| r.server_id).collect::<Vec<_>>())));
    }
    fields.push(Field::new("ServerName", DataType::Utf8, false));
    cols.push(Arc::new(StringArray::from(rows.iter().map(|r| r.server_name.clone()).collect::<Vec<_>>())));
    fields.push(Field::new("SqlVersion", DataType::Utf8, false));
    cols.push(Arc::new(StringArray::from(rows.iter().map(|r| r.sql_version.clone()).collect::<Vec<_>>())));
    fields.push(Field::new("CpuSignalWaitPct", DataType::Decimal128(9, 4), true));
    cols.push(Arc::new(Decimal128Array::from(rows.iter().map(|r| r.cpu).collect::<Vec<_>>()).with_precision_and_scale(9, 4).unwrap()));
    fields.push(Field::new("TopWaitType", DataType::Utf8, true));
    cols.push(Arc::new(StringArray::from(rows.iter().map(|r| r.top_wait.clone()).collect::<Vec<_>>())));
    fields.push(Field::new("TopWaitMsPerSec", DataType::Decimal128(18, 4), true));
    cols.push(Arc::new(Decimal128Array::from(rows.iter().map(|r| r.wait_ms).collect::<Vec<_>>()).with_precision_and_scale(18, 4).unwrap()));
    for (k, name) in ["SessionsCount", "RequestsCount", "BlockingSessionCount", "DeadlockCountRecent", "MemoryGrantWarningCount"].iter().enumerate() {
        fields.push(Field::new(*name, DataType::Int32, true));
        cols.push(Arc::new(Int32Array::from(rows.iter().map(|r| r.counts[k]).collect::<Vec<_>>())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// Reads a tiberius row of `SELECT * FROM PerfSnapshotRun` (source shape) back into a SrcRow.
pub fn from_tiberius(r: &tiberius::Row, with_server_id: bool) -> SrcRow {
    use rust_decimal::Decimal;
    let dec = |c: &str| -> Option<i128> {
        r.get::<Decimal, _>(c).map(|d| {
            assert_eq!(d.scale(), 4, "column {c} scale");
            d.mantissa()
        })
    };
    SrcRow {
        id: r.get::<i64, _>("PerfSnapshotRunID").unwrap(),
        snapshot: r.get::<NaiveDateTime, _>("SnapshotUTC").unwrap(),
        server_id: if with_server_id { r.get::<i32, _>("ServerID") } else { None },
        server_name: r.get::<&str, _>("ServerName").unwrap().to_string(),
        sql_version: r.get::<&str, _>("SqlVersion").unwrap().to_string(),
        cpu: dec("CpuSignalWaitPct"),
        top_wait: r.get::<&str, _>("TopWaitType").map(str::to_string),
        wait_ms: dec("TopWaitMsPerSec"),
        counts: [
            r.get::<i32, _>("SessionsCount"),
            r.get::<i32, _>("RequestsCount"),
            r.get::<i32, _>("BlockingSessionCount"),
            r.get::<i32, _>("DeadlockCountRecent"),
            r.get::<i32, _>("MemoryGrantWarningCount"),
        ],
    }
}

pub fn without_server_id(mut rows: Vec<SrcRow>) -> Vec<SrcRow> {
    for r in &mut rows {
        r.server_id = None;
    }
    rows
}

/// Reads a PerfSnapshotRun RecordBatch (from `TestServer::table_batch`) back into SrcRows,
/// asserting SCHEMA.md's exact Arrow types on the way.
pub fn from_batch(b: &RecordBatch) -> Vec<SrcRow> {
    use arrow::array::{Array, Int64Array};
    let col = |n: &str| b.column(b.schema().index_of(n).unwrap()).clone();
    let id = col("PerfSnapshotRunID");
    let id = id.as_any().downcast_ref::<Int64Array>().expect("PerfSnapshotRunID is Int64");
    let snap = col("SnapshotUTC");
    let snap = snap.as_any().downcast_ref::<TimestampMillisecondArray>().expect("SnapshotUTC is Timestamp(ms)");
    let sid = b.schema().index_of("ServerID").ok().map(|i| b.column(i).clone());
    let text = |n: &str| col(n).as_any().downcast_ref::<StringArray>().expect("Utf8").clone();
    let dec = |n: &str, p: u8| {
        let c = col(n);
        assert_eq!(c.data_type(), &DataType::Decimal128(p, 4));
        c.as_any().downcast_ref::<Decimal128Array>().unwrap().clone()
    };
    let int = |n: &str| col(n).as_any().downcast_ref::<Int32Array>().expect("Int32").clone();
    let (name, ver, wait) = (text("ServerName"), text("SqlVersion"), text("TopWaitType"));
    let (cpu, ms) = (dec("CpuSignalWaitPct", 9), dec("TopWaitMsPerSec", 18));
    let counts: Vec<Int32Array> = ["SessionsCount", "RequestsCount", "BlockingSessionCount", "DeadlockCountRecent", "MemoryGrantWarningCount"].iter().map(|n| int(n)).collect();
    let opt_i32 = |a: &Int32Array, i: usize| if a.is_null(i) { None } else { Some(a.value(i)) };
    (0..b.num_rows())
        .map(|i| SrcRow {
            id: id.value(i),
            snapshot: chrono::DateTime::from_timestamp_millis(snap.value(i)).unwrap().naive_utc(),
            server_id: sid.as_ref().and_then(|a| opt_i32(a.as_any().downcast_ref::<Int32Array>().unwrap(), i)),
            server_name: name.value(i).to_string(),
            sql_version: ver.value(i).to_string(),
            cpu: if cpu.is_null(i) { None } else { Some(cpu.value(i)) },
            top_wait: if wait.is_null(i) { None } else { Some(wait.value(i).to_string()) },
            wait_ms: if ms.is_null(i) { None } else { Some(ms.value(i)) },
            counts: [0, 1, 2, 3, 4].map(|k| opt_i32(&counts[k], i)),
        })
        .collect()
}

/// The bulk-load row of a SrcRow for the target PerfSnapshotRun (no identity column).
pub fn target_token_row(r: &SrcRow) -> tiberius::TokenRow<'static> {
    use rust_decimal::Decimal;
    use tiberius::IntoSql;
    let mut t = tiberius::TokenRow::new();
    t.push(r.snapshot.into_sql());
    t.push(r.server_id.unwrap_or(-1).into_sql());
    t.push(r.server_name.clone().into_sql());
    t.push(r.sql_version.clone().into_sql());
    t.push(r.cpu.map(|m| Decimal::from_i128_with_scale(m, 4)).into_sql());
    t.push(r.top_wait.clone().into_sql());
    t.push(r.wait_ms.map(|m| Decimal::from_i128_with_scale(m, 4)).into_sql());
    for c in r.counts {
        t.push(c.into_sql());
    }
    t
}

pub const TARGET_BULK_COLUMNS: [&str; 12] = [
    "SnapshotUTC", "ServerID", "ServerName", "SqlVersion", "CpuSignalWaitPct", "TopWaitType", "TopWaitMsPerSec", "SessionsCount", "RequestsCount", "BlockingSessionCount", "DeadlockCountRecent", "MemoryGrantWarningCount",
];
