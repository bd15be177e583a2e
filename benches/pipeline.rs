//! criterion benches of perfcopy's stages, each with its throughput in rows:
//! remap, dedupe, Parquet stage write (against arrow-rs' ArrowWriter alone on the same batches
//! and settings), TDS row encode (perfcopy's encoder; tiberius' bulk path against the test
//! server in count-only mode) and TDS decode into Arrow (against pre-encoded rows).
//! Run: `cargo bench --bench pipeline` (add `-- <filter>` for one group).

use std::collections::BTreeSet;

use arrow::array::{AsArray, BooleanArray, Int32Array, RecordBatch};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use perfcopy::schema::src;
use perfcopy::sink::stage::{Stage, StageOptions};
use perfcopy::sink::{Target, WriteUnit};
use perfcopy::source::synthetic::{server_name, SyntheticSource, SyntheticSpec};
use perfcopy::transform::dedupe::{OverlapPlanner, Winners};
use perfcopy::transform::remap::ServerIdMap;

const ROWS: usize = 32_768;

fn source_batch() -> RecordBatch {
    let spec = SyntheticSpec { servers: 1, rows: ROWS as u64, overlap: 0.0, seed: 7 };
    SyntheticSource::all(spec)[0].batches(ROWS).next().unwrap().unwrap()
}

fn target_batch(b: &RecordBatch) -> RecordBatch {
    let ids = Int32Array::from(vec![1; b.num_rows()]);
    perfcopy::transform::to_target(b, ids, &BooleanArray::from(vec![true; b.num_rows()])).unwrap()
}

fn map() -> ServerIdMap {
    let mut m = ServerIdMap::new();
    for i in 0..64 {
        m.insert(&server_name(i), i as i32 + 1).unwrap();
    }
    m
}

fn remap(c: &mut Criterion) {
    let b = source_batch();
    let m = map();
    let mut g = c.benchmark_group("remap");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("ids_for 32k rows", |bench| {
        bench.iter(|| {
            let mut unknown = BTreeSet::new();
            m.ids_for(b.column(src::SERVER_NAME).as_ref(), &mut unknown)
        })
    });
    g.finish();
}

fn dedupe(c: &mut Criterion) {
    let b = source_batch();
    let ts: Vec<i64> = perfcopy::source::normalize::snapshot_ms(&b, src::SNAPSHOT_UTC).values().to_vec();
    let ids = vec![1i32; ts.len()];
    let value_cols: Vec<usize> = (src::FIRST_VALUE..b.num_columns()).collect();
    let rows: Vec<usize> = (0..b.num_rows()).collect();
    let mut g = c.benchmark_group("dedupe");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("planner observe 32k keys", |bench| {
        bench.iter(|| {
            let mut p = OverlapPlanner::new();
            p.observe(1, &ids, &ts);
            p
        })
    });
    g.bench_function("row hashes 32k rows", |bench| bench.iter(|| perfcopy::transform::dedupe::row_hashes(&b, &value_cols, &rows)));
    g.bench_function("winners offer+decide 32k hot keys, 2 sources", |bench| {
        bench.iter(|| {
            let mut w = Winners::new();
            for (i, &t) in ts.iter().enumerate() {
                w.offer(1, t, 1, i as i64, 0);
                w.offer(1, t, 2, i as i64, 0);
            }
            for (i, &t) in ts.iter().enumerate() {
                w.decide(1, t, 2, i as i64, 0);
                w.decide(1, t, 1, i as i64, 0);
            }
            w
        })
    });
    g.finish();
}

fn stage_write(c: &mut Criterion) {
    let t = target_batch(&source_batch());
    let batches: Vec<RecordBatch> = (0..8).map(|_| t.clone()).collect();
    let n = (batches.len() * ROWS) as u64;
    let opts = StageOptions::default();
    let mut g = c.benchmark_group("stage write");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("perfcopy stage writer, 262k rows", |bench| {
        bench.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let stage = Stage::new(dir.path(), opts.clone(), true);
                let load = stage.begin(1, Vec::new(), &[]).unwrap();
                let mut w = load.writer(0).unwrap();
                for b in &batches {
                    w.write(WriteUnit { source: 0, rows: b, last_run_id: None, last_snapshot_ms: None, children: &[], completing: &[] }).unwrap();
                }
                w.finish().unwrap();
                load.commit(Vec::new()).unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("arrow-rs ArrowWriter alone, same settings", |bench| {
        bench.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(parquet::basic::ZstdLevel::try_new(opts.zstd_level).unwrap()))
                    .set_max_row_group_row_count(Some(opts.row_group_rows))
                    .build();
                let f = std::fs::File::create(dir.path().join("x.parquet")).unwrap();
                let mut w = parquet::arrow::ArrowWriter::try_new(f, perfcopy::schema::target_schema(), Some(props)).unwrap();
                for b in &batches {
                    w.write(b).unwrap();
                }
                let f = w.into_inner().unwrap();
                f.sync_all().unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn tds(c: &mut Criterion) {
    use perfcopy::mssql::{runtime, ConnSpec};
    use perfcopy::source::{Projection, ReadRequest, Source};
    use tds_test_server::{ServerConfig, TestServer};
    let src_batch = source_batch();
    let t = target_batch(&src_batch);
    let mut g = c.benchmark_group("tds");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    g.bench_function("perfcopy bulk ROW encoder, 32k rows", |bench| {
        let layout = perfcopy::tds::encode::BulkLayout::documented();
        let mut buf = Vec::new();
        bench.iter(|| {
            buf.clear();
            layout.encode(&t, 0..t.num_rows(), &mut buf).unwrap();
            buf.len()
        })
    });

    // A reply as SQL Server sends it (COLMETADATA, ROW tokens, DONE), encoded by the test
    // server's independent encoder; decoded by perfcopy's decoder into Arrow builders.
    let reply = {
        use tds_test_server::wire::{OutCol, TokenWriter};
        let cols: Vec<OutCol> = tds_test_server::perf_snapshot_run_columns(true, true)
            .into_iter()
            .map(|c| OutCol { name: c.name, ty: c.ty, nullable: c.nullable, identity: false })
            .collect();
        let mut w = TokenWriter::default();
        w.col_metadata(&cols);
        for r in 0..src_batch.num_rows() {
            let vals: Vec<_> = src_batch.columns().iter().map(|a| tds_test_server::arrow_io::arrow_value(a.as_ref(), r).unwrap()).collect();
            w.row(&cols, &vals).unwrap();
        }
        w.done(0xFD, 0x10, tds_test_server::wire::cur_cmd::SELECT, src_batch.num_rows() as u64);
        w.buf
    };
    g.bench_function("perfcopy reply decoder into Arrow, 32k rows", |bench| {
        use perfcopy::tds::decode::ReplyDecoder;
        let schema = src_batch.schema();
        // One set of builders across iterations, as across the pages of a read.
        let mut b = perfcopy::tds::arrow::Builders::new(&schema, ROWS).unwrap();
        bench.iter(|| {
            let mut d = ReplyDecoder::new();
            assert_eq!(d.feed(&reply, &mut b).unwrap(), reply.len());
            b.finish(&schema).unwrap().num_rows()
        })
    });

    let srv = TestServer::start(ServerConfig { packet_size: Some(32_767), ..Default::default() }).unwrap();
    let conn = |db: &str| {
        ConnSpec::target("--to", &format!("Server=tcp:127.0.0.1,{};Database={db};User Id=sa;Password=x;Encrypt=DANGER_PLAINTEXT;Packet Size=32767", srv.addr().port())).unwrap()
    };
    srv.create_monitoringdb("MonitoringDB");
    srv.set_bulk_count_only("MonitoringDB", "dbo.PerfSnapshotRun", true).unwrap();
    let rt = runtime().unwrap();
    let mut client = rt.block_on(conn("MonitoringDB").connect()).unwrap();
    let opts = perfcopy::sink::mssql::BulkOptions::default();
    g.bench_function("tiberius bulk load via perfcopy, 32k rows (server counts only)", |bench| {
        bench.iter(|| rt.block_on(perfcopy::sink::mssql::bulk_insert(&mut client, &perfcopy::schema::RUN.sql_name(), &t, &opts)).unwrap())
    });

    srv.create_dbatools("DBATools", true);
    srv.fill_synthetic("DBATools", "dbo.PerfSnapshotRun", &src_batch, ROWS).unwrap();
    let source = perfcopy::source::mssql::MssqlSource::open(conn("DBATools")).unwrap();
    g.bench_function("read into Arrow via perfcopy, 32k rows (pre-encoded)", |bench| {
        bench.iter(|| {
            let req = ReadRequest { projection: Projection::Full, batch_rows: ROWS, after_run_id: None, time_ranges: None };
            source.read(&req).unwrap().map(|b| b.unwrap().num_rows()).sum::<usize>()
        })
    });
    g.finish();
    let _ = src_batch.column(0).as_primitive::<arrow::datatypes::Int64Type>();
}

criterion_group!(benches, remap, dedupe, stage_write, tds);
criterion_main!(benches);
