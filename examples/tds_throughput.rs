//! Client-side TDS throughput against the project's TDS test server in throughput mode
//! (pre-encoded rows served for reads; bulk loads counted, not stored), so the numbers are
//! perfcopy's and tiberius' cost, not the server's.
//!
//! `cargo run --release --example tds_throughput -- [ROWS]` prints rows/s for:
//! reading PerfSnapshotRun into Arrow (perfcopy's source) and bulk-loading target batches
//! (perfcopy's sink encoder), each on one connection, plus the simplest tiberius baselines.

use std::time::Instant;

use arrow::array::RecordBatch;
use perfcopy::mssql::{runtime, ConnSpec};
use perfcopy::source::synthetic::{SyntheticSource, SyntheticSpec};
use perfcopy::source::{Projection, ReadRequest, Source};
use tds_test_server::{ServerConfig, TestServer};

fn main() {
    let rows: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let srv = TestServer::start(ServerConfig { packet_size: Some(32_767), ..Default::default() }).expect("server");
    let conn_str = |db: &str| format!("Server=tcp:127.0.0.1,{};Database={db};User Id=sa;Password=x;Encrypt=DANGER_PLAINTEXT;Packet Size=32767", srv.addr().port());
    let spec = SyntheticSpec { servers: 1, rows: 4096, overlap: 0.0, seed: 1 };
    let template: RecordBatch = SyntheticSource::all(spec.clone())[0].batches(4096).next().unwrap().unwrap();

    // Read: PerfSnapshotRun -> Arrow through perfcopy's keyset-paged source.
    srv.create_dbatools("DBATools", true);
    srv.fill_synthetic("DBATools", "dbo.PerfSnapshotRun", &template, rows).expect("fill");
    let src = perfcopy::source::mssql::MssqlSource::open(ConnSpec::parse("--from", &conn_str("DBATools")).unwrap()).unwrap();
    let t = Instant::now();
    let mut n = 0usize;
    for b in src.read(&ReadRequest { projection: Projection::Full, batch_rows: 32_768, after_run_id: None, time_ranges: None }).unwrap() {
        n += b.unwrap().num_rows();
    }
    let read_s = t.elapsed().as_secs_f64();
    println!("read into Arrow (perfcopy source): {n} rows in {read_s:.2} s = {:.0} rows/s", n as f64 / read_s);

    // Baseline read: the simplest tiberius use, owned Rows collected per page.
    let rt = runtime().unwrap();
    let conn = ConnSpec::parse("--from", &conn_str("DBATools")).unwrap();
    let t = Instant::now();
    let m = rt.block_on(async {
        let mut c = conn.connect().await.unwrap();
        let mut last = 0i64;
        let mut total = 0usize;
        loop {
            let page = c
                .query("SELECT TOP (@P1) * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > @P2 ORDER BY PerfSnapshotRunID", &[&32_768i64, &last])
                .await
                .unwrap()
                .into_first_result()
                .await
                .unwrap();
            if page.is_empty() {
                break total;
            }
            total += page.len();
            last = page.last().unwrap().get::<i64, _>(0).unwrap();
        }
    });
    let base_s = t.elapsed().as_secs_f64();
    println!("read baseline (tiberius Rows, into_first_result): {m} rows in {base_s:.2} s = {:.0} rows/s", m as f64 / base_s);

    // Bulk load: target batches through perfcopy's bulk encoder, server only counts.
    srv.create_monitoringdb("MonitoringDB");
    srv.set_bulk_count_only("MonitoringDB", "dbo.PerfSnapshotRun", true).unwrap();
    let target_batch = {
        let ids = arrow::array::Int32Array::from(vec![1; template.num_rows()]);
        let keep = arrow::array::BooleanArray::from(vec![true; template.num_rows()]);
        perfcopy::transform::to_target(&template, ids, &keep).unwrap()
    };
    let conn = ConnSpec::parse("--to", &conn_str("MonitoringDB")).unwrap();
    let t = Instant::now();
    let sent = rt.block_on(async {
        let mut c = conn.connect().await.unwrap();
        let mut sent = 0usize;
        let opts = perfcopy::sink::mssql::BulkOptions::default();
        while sent < rows {
            perfcopy::sink::mssql::bulk_insert(&mut c, perfcopy::sink::mssql::TARGET_TABLE, &target_batch, &opts).await.unwrap();
            sent += target_batch.num_rows();
        }
        sent
    });
    let bulk_s = t.elapsed().as_secs_f64();
    println!("bulk load (perfcopy encoder): {sent} rows in {bulk_s:.2} s = {:.0} rows/s", sent as f64 / bulk_s);
    println!("server received {} bulk rows", srv.stats().bulk_rows_received);
}
