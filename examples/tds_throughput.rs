//! Client-side TDS throughput against the project's TDS test server in throughput mode
//! (pre-encoded rows served for reads; bulk loads counted, not stored), so the numbers are
//! perfcopy's and tiberius' cost, not the server's.
//!
//! `cargo run --release --example tds_throughput -- [ROWS] [read|bulk]` prints rows/s on one
//! connection for: reading PerfSnapshotRun into Arrow (perfcopy's source, its own TDS row
//! decoder) against the simplest tiberius read (owned `Row`s), and bulk-loading target
//! batches (perfcopy's bulk encoder) against the simplest tiberius bulk load (one `TokenRow`
//! of owned values per row), each pair in the same run, with the ratio.
//!
//! `TDS_PAGE=N` sets the rows per page of the read (default 32768, the copy's batch size).
//! `-- ROWS seek` reads a table served the normal way (not pre-encoded) through perfcopy's
//! source twice, with the test server's primary-key seek for keyset pages and without it
//! (scan and sort of every row per page), and prints both times and their ratio.
//!
//! The test server runs in this process, on the same 2 cores: its own work (serving
//! pre-encoded rows, counting bulk rows) is included in every figure.

use std::time::Instant;

use arrow::array::RecordBatch;
use perfcopy::mssql::{runtime, ConnSpec};
use perfcopy::sink::mssql::{bulk_insert, bulk_insert_token_rows, BulkOptions};
use perfcopy::source::synthetic::{SyntheticSource, SyntheticSpec};
use perfcopy::source::{Projection, ReadRequest, Source};
use tds_test_server::{ServerConfig, TestServer};

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

/// CPU time of the calling thread (Linux: /proc/thread-self/schedstat, ns on CPU), so the
/// client's own cost is separate from the in-process server's.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// Runs `f` (which moves `n` rows) and returns (rows/s wall, rows/s of client CPU).
fn measure(f: impl FnOnce() -> usize) -> (f64, f64) {
    let (t, c) = (Instant::now(), thread_cpu());
    let n = f();
    (rate(n, t.elapsed().as_secs_f64()), rate(n, thread_cpu() - c))
}

fn show(what: &str, (wall, cpu): (f64, f64)) {
    println!("{what:<44} {wall:>10.0} rows/s wall, {cpu:>10.0} rows/s per client CPU second");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    // "read" or "bulk" runs one pair; "read-fast"/"bulk-fast" only perfcopy's side (profiling).
    let only = args.next().unwrap_or_default();
    let baseline = !only.ends_with("-fast");
    let only = only.trim_end_matches("-fast").to_string();
    let srv = TestServer::start(ServerConfig { packet_size: Some(32_767), ..Default::default() }).expect("server");
    let conn_str = |db: &str| format!("Server=tcp:127.0.0.1,{};Database={db};User Id=sa;Password=x;Encrypt=DANGER_PLAINTEXT;Packet Size=32767", srv.addr().port());
    let spec = SyntheticSpec { servers: 1, rows: 4096, overlap: 0.0, seed: 1 };
    let template: RecordBatch = SyntheticSource::all(spec.clone())[0].batches(4096).next().unwrap().unwrap();
    let rt = runtime().unwrap();
    println!("TDS throughput, one connection, {rows} rows, packet size 32767 (test server in process)");

    if only == "seek" {
        // The server's keyset pages on a table served the normal way (not pre-encoded): the
        // primary-key seek against the scan-and-sort of every row per page, same rows, one run.
        srv.create_dbatools("DBATools", true);
        srv.fill_synthetic("DBATools", "dbo.PerfSnapshotRun", &template, rows).expect("fill");
        // Any write ends the pre-encoded mode; the rows stay.
        srv.execute("DBATools", "UPDATE dbo.PerfSnapshotRun SET SessionsCount = 0 WHERE PerfSnapshotRunID = 0").expect("update");
        assert!(!srv.is_pre_encoded("DBATools", "dbo.PerfSnapshotRun"));
        let page = std::env::var("TDS_PAGE").ok().and_then(|v| v.parse().ok()).unwrap_or(32_768);
        let read = |seek: bool| {
            srv.set_index_seek(seek);
            let src = perfcopy::source::mssql::MssqlSource::open(ConnSpec::source("--from", &conn_str("DBATools")).unwrap()).unwrap();
            let t = Instant::now();
            let n: usize = src.read(&ReadRequest { projection: Projection::Full, batch_rows: page, after_run_id: None, time_ranges: None }).unwrap().map(|b| b.unwrap().num_rows()).sum();
            assert_eq!(n, rows);
            t.elapsed().as_secs_f64()
        };
        let (seek, scan) = (read(true), read(false));
        println!("keyset read of {rows} rows in pages of {page} through perfcopy: seek {seek:.2} s, scan+sort {scan:.2} s, ratio {:.1}x", scan / seek);
        // The server's own work per page (statement run in process, rows built, not encoded).
        let pages = |seek: bool| {
            srv.set_index_seek(seek);
            let t = Instant::now();
            for last in (0..rows).step_by(page) {
                srv.execute("DBATools", &format!("SELECT TOP ({page}) * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > {last} ORDER BY PerfSnapshotRunID")).expect("page");
            }
            t.elapsed().as_secs_f64()
        };
        let (seek, scan) = (pages(true), pages(false));
        println!("the same pages in the server alone: seek {seek:.2} s, scan+sort {scan:.2} s, ratio {:.1}x", scan / seek);
        return;
    }

    if only.is_empty() || only == "read" {
        srv.create_dbatools("DBATools", true);
        srv.fill_synthetic("DBATools", "dbo.PerfSnapshotRun", &template, rows).expect("fill");
        eprintln!("table filled, reading");
        // perfcopy: keyset-paged source, TDS bytes decoded straight into Arrow builders.
        let src = perfcopy::source::mssql::MssqlSource::open(ConnSpec::source("--from", &conn_str("DBATools")).unwrap()).unwrap();
        let mut n = 0usize;
        let fast = measure(|| {
            for b in src.read(&ReadRequest { projection: Projection::Full, batch_rows: std::env::var("TDS_PAGE").ok().and_then(|v| v.parse().ok()).unwrap_or(32_768), after_run_id: None, time_ranges: None }).unwrap() {
                n += b.unwrap().num_rows();
            }
            n
        });
        assert_eq!(n, rows);
        show("read into Arrow, perfcopy decoder:", fast);

        if !baseline {
            return;
        }
        // Baseline: the simplest tiberius use, owned Rows collected per page (same paging).
        let conn = ConnSpec::source("--from", &conn_str("DBATools")).unwrap();
        let base = measure(|| rt.block_on(async {
            let mut c = conn.connect().await.unwrap();
            let (mut last, mut total) = (0i64, 0usize);
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
        }));
        show("read, tiberius Rows (into_first_result):", base);
        println!("read ratio perfcopy / tiberius: {:.2}x wall, {:.2}x client CPU", fast.0 / base.0, fast.1 / base.1);
    }

    if only.is_empty() || only == "bulk" {
        srv.create_monitoringdb("MonitoringDB");
        srv.set_bulk_count_only("MonitoringDB", "dbo.PerfSnapshotRun", true).unwrap();
        let target_batch = {
            let ids = arrow::array::Int32Array::from(vec![1; template.num_rows()]);
            let keep = arrow::array::BooleanArray::from(vec![true; template.num_rows()]);
            perfcopy::transform::to_target(&template, ids, &keep).unwrap()
        };
        // Several batches per bulk load, as a 32768-row batch of the pipeline.
        let batch = arrow::compute::concat_batches(&target_batch.schema(), &vec![target_batch.clone(); 8]).unwrap();
        let conn = ConnSpec::target("--to", &conn_str("MonitoringDB")).unwrap();
        let opts = BulkOptions::default();
        let mut results = Vec::new();
        for fast in [true, false] {
            if !fast && !baseline {
                break;
            }
            let before = srv.stats().bulk_rows_received;
            let r = measure(|| rt.block_on(async {
                let mut c = conn.connect().await.unwrap();
                let mut sent = 0usize;
                while sent < rows {
                    if fast {
                        bulk_insert(&mut c, &perfcopy::schema::RUN.sql_name(), &batch, &opts).await.unwrap();
                    } else {
                        bulk_insert_token_rows(&mut c, &perfcopy::schema::RUN.sql_name(), &batch, &opts).await.unwrap();
                    }
                    sent += batch.num_rows();
                }
                sent
            }));
            let received = srv.stats().bulk_rows_received - before;
            assert!(received >= rows as u64, "server received every row");
            results.push(r);
        }
        show("bulk load, perfcopy encoder:", results[0]);
        if results.len() < 2 {
            return;
        }
        show("bulk load, tiberius TokenRow per row:", results[1]);
        println!("bulk ratio perfcopy / tiberius: {:.2}x wall, {:.2}x client CPU", results[0].0 / results[1].0, results[0].1 / results[1].1);
    }
}
