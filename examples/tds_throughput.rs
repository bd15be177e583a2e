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
//! `-- ROWS children` measures child rows (issue 14): PerfSnapshotWaitStats-shaped rows (an
//! NVARCHAR(120), four BIGINTs, a DECIMAL(18,4)) and, separately, rows with an NVARCHAR(MAX)
//! StatementText of 2,000 characters, read through perfcopy's child reader by run ranges (100
//! rows per run, 1,000 runs per range) and bulk-loaded the way a copy loads them.
//!
//! The test server runs in this process, on the same 2 cores: its own work (serving
//! pre-encoded rows, counting bulk rows) is included in the wall figures; the "per client CPU
//! second" figures count the client thread only.

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

    if only == "children" {
        children(&srv, rows, &conn_str("DBATools"), &conn_str("MonitoringDB"));
        return;
    }

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

/// Child rows through perfcopy's child reader and bulk load, per client CPU second.
fn children(srv: &TestServer, rows: usize, source: &str, target: &str) {
    use std::sync::Arc;
    use arrow::array::{ArrayRef, Decimal128Array, Int64Array, StringArray};
    use perfcopy::schema::ChildTable;
    use perfcopy::source::BatchRuns;
    use tds_test_server::{Column, SqlType};
    let per_run = 100usize;
    let runs = rows.div_ceil(per_run);
    srv.create_dbatools("DBATools", true);
    srv.create_monitoringdb("MonitoringDB");
    let shapes: [(&str, Vec<Column>); 2] = [
        (
            "PerfSnapshotWaitStats",
            vec![
                Column::new("PerfSnapshotWaitStatsID", SqlType::BigInt, false).identity(),
                Column::new("PerfSnapshotRunID", SqlType::BigInt, false),
                Column::new("WaitType", SqlType::NVarChar(Some(120)), false),
                Column::new("WaitingTasksCount", SqlType::BigInt, true),
                Column::new("WaitTimeMs", SqlType::BigInt, true),
                Column::new("SignalWaitTimeMs", SqlType::BigInt, true),
                Column::new("MaxWaitTimeMs", SqlType::BigInt, true),
                Column::new("AvgWaitTimeMs", SqlType::Decimal { precision: 18, scale: 4 }, true),
            ],
        ),
        (
            "PerfSnapshotWorkload",
            vec![
                Column::new("PerfSnapshotWorkloadID", SqlType::BigInt, false).identity(),
                Column::new("PerfSnapshotRunID", SqlType::BigInt, false),
                Column::new("WaitTimeMs", SqlType::BigInt, true),
                Column::new("StatementText", SqlType::NVarChar(None), true),
            ],
        ),
    ];
    let rt = runtime().unwrap();
    for (table, cols) in shapes {
        srv.create_table("DBATools", &format!("dbo.{table}"), cols.clone(), &[]).unwrap();
        srv.create_table("MonitoringDB", &format!("dbo.{table}"), cols, &[]).unwrap();
        let run_ids: Vec<i64> = (0..rows).map(|i| (i / per_run) as i64 + 1).collect();
        let n = |m: u64| -> ArrayRef { Arc::new(Int64Array::from((0..rows as u64).map(|i| (i * m % 7 != 0).then_some((i * m) as i64)).collect::<Vec<_>>())) };
        let batch = if table == "PerfSnapshotWaitStats" {
            let schema = Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("PerfSnapshotRunID", arrow::datatypes::DataType::Int64, false),
                arrow::datatypes::Field::new("WaitType", arrow::datatypes::DataType::Utf8, false),
                arrow::datatypes::Field::new("WaitingTasksCount", arrow::datatypes::DataType::Int64, true),
                arrow::datatypes::Field::new("WaitTimeMs", arrow::datatypes::DataType::Int64, true),
                arrow::datatypes::Field::new("SignalWaitTimeMs", arrow::datatypes::DataType::Int64, true),
                arrow::datatypes::Field::new("MaxWaitTimeMs", arrow::datatypes::DataType::Int64, true),
                arrow::datatypes::Field::new("AvgWaitTimeMs", arrow::datatypes::DataType::Decimal128(18, 4), true),
            ]));
            let waits = ["CXPACKET", "PAGEIOLATCH_SH", "LCK_M_X", "SOS_SCHEDULER_YIELD", "WRITELOG"];
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(run_ids)),
                    Arc::new(StringArray::from((0..rows).map(|i| format!("{}_{}", waits[i % 5], i % per_run)).collect::<Vec<_>>())),
                    n(3),
                    n(5),
                    n(11),
                    n(13),
                    Arc::new(Decimal128Array::from((0..rows as i128).map(|i| (i % 3 != 0).then_some(i * 7919)).collect::<Vec<_>>()).with_precision_and_scale(18, 4).unwrap()),
                ],
            )
            .unwrap()
        } else {
            let schema = Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("PerfSnapshotRunID", arrow::datatypes::DataType::Int64, false),
                arrow::datatypes::Field::new("WaitTimeMs", arrow::datatypes::DataType::Int64, true),
                arrow::datatypes::Field::new("StatementText", arrow::datatypes::DataType::Utf8, true),
            ]));
            let text: String = "SELECT s.name, COUNT(*) FROM sys.objects AS s GROUP BY s.name; ".chars().cycle().take(2000).collect();
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(run_ids)), n(3), Arc::new(StringArray::from(vec![text.as_str(); rows]))]).unwrap()
        };
        srv.insert_batch("DBATools", &format!("dbo.{table}"), &batch).unwrap();
        let src = perfcopy::source::mssql::MssqlSource::open(ConnSpec::source("--from", source).unwrap()).unwrap();
        let t: Vec<ChildTable> = src.child_tables().iter().filter(|c| c.name == table).copied().collect();
        let mut reader = src.child_reader(&t).unwrap().unwrap();
        let mut read = Vec::new();
        let r = measure(|| {
            let mut got = 0;
            for lo in (0..runs as i64).step_by(1000) {
                let b = reader.read(0, lo, lo + 1000, &BatchRuns { ids: &[], snapshot_ms: &[] }).unwrap();
                got += b.num_rows();
                read.push(b);
            }
            got
        });
        show(&format!("{table}: read by run ranges"), r);
        let bytes: usize = read.iter().map(|b| b.get_array_memory_size()).sum();
        // Bulk load as a copy does: MonitoringDB's run IDs, then the values.
        srv.set_bulk_count_only("MonitoringDB", &format!("dbo.{table}"), true).unwrap();
        let conn = ConnSpec::target("--to", target).unwrap();
        let cols = t[0].target_columns();
        let w = measure(|| rt.block_on(async {
            let mut c = conn.connect().await.unwrap();
            let mut sent = 0;
            for b in &read {
                perfcopy::sink::mssql::bulk_insert_rows(&mut c, &t[0].sql_name(), b, &cols).await.unwrap();
                sent += b.num_rows();
            }
            sent
        }));
        show(&format!("{table}: bulk load"), w);
        println!("{table}: {:.0} MB of Arrow data; {:.1} MB/s read, {:.1} MB/s bulk per client CPU second", bytes as f64 / 1e6, bytes as f64 / 1e6 * r.1 / rows as f64, bytes as f64 / 1e6 * w.1 / rows as f64);
    }
}
