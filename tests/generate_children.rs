//! `perfcopy generate` writes child tables (issue 14), and a Parquet export's child tables are a
//! source: generated rows read back with arrow-rs directly and checked against the documented
//! shapes and counts; an export copied into a stage and into MonitoringDB equals a model built
//! from the files (tests/common/kids.rs), never from perfcopy's readers.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use common::kids::{self, ALL_TABLES};
use common::mssql::*;
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn generate(out: &Path, extra: &[&str]) -> Vec<PathBuf> {
    let mut args = vec!["generate", "--out", s(out), "--servers", "2", "--rows", "120", "--overlap", "0.25", "--seed", "5"];
    args.extend(extra);
    let o = perfcopy(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    parquet_files(out)
}

fn batches(p: &Path) -> Vec<arrow::array::RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap()).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

#[test]
fn generated_child_tables_have_the_documented_shapes_counts_long_values_and_null_heavy_rows() {
    let t = tempfile::tempdir().unwrap();
    let files = generate(&t.path().join("a"), &[]);
    assert_eq!(files.len(), 2, "run files only at the top level: {files:?}");
    let ranges: BTreeMap<&str, (usize, usize)> = [
        ("PerfSnapshotDB", (14, 26)),
        ("PerfSnapshotWaitStats", (90, 110)),
        ("PerfSnapshotWorkload", (10, 50)),
        ("PerfSnapshotErrorLog", (0, 4)),
        ("PerfSnapshotMemory", (1, 1)),
        ("PerfSnapshotQueryStats", (90, 110)),
        ("PerfSnapshotIOStats", (28, 86)),
        ("PerfSnapshotBackupHistory", (14, 26)),
        ("PerfSnapshotQueryPlans", (0, 4)),
        ("PerfSnapshotConfig", (78, 84)),
        ("PerfSnapshotDeadlocks", (0, 2)),
    ]
    .into();
    let (mut long, mut sparse, mut long_sql, mut long_xml) = (0, BTreeMap::<&str, usize>::new(), 0, 0);
    for f in &files {
        let runs: Vec<i64> = read_source(f).iter().map(|r| r.run_id).collect();
        for table in ALL_TABLES {
            let path = kids::child_file(f, table);
            let mut per_run: BTreeMap<i64, usize> = runs.iter().map(|&r| (r, 0)).collect();
            for b in batches(&path) {
                let schema = b.schema();
                // Every column says its SQL type; PerfSnapshotRunID is BIGINT NOT NULL.
                for fld in schema.fields() {
                    assert!(fld.metadata().contains_key("perfcopy.sql_type"), "{table}.{} has no SQL type", fld.name());
                }
                assert_eq!(schema.field(0).metadata()["perfcopy.sql_type"], "BIGINT");
                let ids = b.column(0).as_primitive::<Int64Type>();
                for id in ids.values() {
                    *per_run.get_mut(id).unwrap_or_else(|| panic!("{table}: child of run {id}, which {} lacks", f.display())) += 1;
                }
                // NULL-heavy rows: every nullable column NULL.
                let nullable: Vec<usize> = (1..b.num_columns()).filter(|&c| schema.field(c).is_nullable()).collect();
                for r in 0..b.num_rows() {
                    if !nullable.is_empty() && nullable.iter().all(|&c| b.column(c).is_null(r)) {
                        *sparse.entry(table).or_default() += 1;
                    }
                }
                if table == "PerfSnapshotWorkload" {
                    let c = schema.index_of("StatementText").unwrap();
                    assert_eq!(schema.field(c).metadata()["perfcopy.sql_type"], "NVARCHAR(MAX)");
                    let text = b.column(c).as_string::<i32>();
                    long += (0..b.num_rows()).filter(|&r| text.is_valid(r) && text.value(r).chars().count() > 4_000).count();
                }
                // NVARCHAR(MAX) SqlText over 8,000 bytes (UTF-16), XML plans over 8,000 bytes.
                if table == "PerfSnapshotQueryStats" {
                    let c = schema.index_of("SqlText").unwrap();
                    assert_eq!(schema.field(c).metadata()["perfcopy.sql_type"], "NVARCHAR(MAX)");
                    let text = b.column(c).as_string::<i32>();
                    long_sql += (0..b.num_rows()).filter(|&r| text.is_valid(r) && text.value(r).encode_utf16().count() * 2 > 8_000).count();
                    assert_eq!(schema.field(schema.index_of("QueryHash").unwrap()).metadata()["perfcopy.sql_type"], "BINARY(8)");
                    assert_eq!(schema.field(schema.index_of("PlanHandle").unwrap()).metadata()["perfcopy.sql_type"], "VARBINARY(64)");
                }
                if table == "PerfSnapshotQueryPlans" {
                    let c = schema.index_of("QueryPlanXML").unwrap();
                    assert_eq!(schema.field(c).metadata()["perfcopy.sql_type"], "XML");
                    let xml = b.column(c).as_string::<i32>();
                    long_xml += (0..b.num_rows()).filter(|&r| xml.is_valid(r) && xml.value(r).len() > 8_000).count();
                }
                if table == "PerfSnapshotConfig" {
                    assert_eq!(schema.field(schema.index_of("ConfigValue").unwrap()).metadata()["perfcopy.sql_type"], "SQL_VARIANT");
                }
                if table == "PerfSnapshotErrorLog" {
                    let c = schema.index_of("LogText").unwrap();
                    let text = b.column(c).as_string::<i32>();
                    assert!((0..b.num_rows()).all(|r| text.is_null(r) || text.value(r).chars().count() <= 4_000), "LogText fits NVARCHAR(4000)");
                }
            }
            let (lo, hi) = ranges[table];
            for (run, n) in &per_run {
                assert!((lo..=hi).contains(n), "{}: run {run} has {n} {table} rows, documented {lo}..={hi}", f.display());
            }
        }
    }
    assert!(long > 0, "some StatementText values are longer than 4,000 characters");
    assert!(long_sql > 0, "some QueryStats SqlText values are over 8,000 bytes");
    assert!(long_xml > 0, "some query plans are over 8,000 bytes");
    for table in ALL_TABLES {
        assert!(sparse.get(table).copied().unwrap_or(0) > 0, "{table} has NULL-heavy rows");
    }
}

#[test]
fn none_writes_the_run_files_unchanged_and_children_are_deterministic_and_follow_restored_copies() {
    let t = tempfile::tempdir().unwrap();
    let with = generate(&t.path().join("with"), &["--children-scale", "0.2"]);
    let none = generate(&t.path().join("none"), &["--child-tables", "none"]);
    let again = generate(&t.path().join("again"), &["--children-scale", "0.2"]);
    // --child-tables none: only the run files, and the run files are the same bytes either way.
    assert_eq!(walk_files(&t.path().join("none")).len(), 2);
    for (a, b) in with.iter().zip(&none) {
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{} differs with child tables", a.display());
    }
    // Same seed, same bytes (children included).
    assert_eq!(snapshot_dir(&t.path().join("with")), snapshot_dir(&t.path().join("again")));
    assert_eq!(with.len(), again.len());
    // A restored copy's runs have their original's children (by key).
    let by_key = |f: &Path, table: &str| -> BTreeMap<(String, i64), Vec<String>> {
        let (_, rows) = kids::export_rows(f, table);
        read_source(f).into_iter().filter_map(|r| rows.get(&r.run_id).map(|k| ((r.server_name.clone(), r.snapshot_ms), k.clone()))).collect()
    };
    let mut shared = 0;
    for table in ALL_TABLES {
        let (a, b) = (by_key(&with[0], table), by_key(&with[1], table));
        for (k, v) in &a {
            if let Some(w) = b.get(k) {
                assert_eq!(v, w, "{table}: the copy of run {k:?} has other children");
                shared += 1;
            }
        }
    }
    assert!(shared > 0, "the overlap shares runs with children");
    // A smaller scale writes fewer rows; a table list writes just those tables.
    let all = generate(&t.path().join("all"), &["--child-tables", "all", "--children-scale", "0.2"]);
    assert_eq!(snapshot_dir(&t.path().join("with")), snapshot_dir(&t.path().join("all")), "all is the default");
    assert_eq!(std::fs::read_dir(all[0].with_file_name(all[0].file_stem().unwrap())).unwrap().count(), ALL_TABLES.len());
    let few = generate(&t.path().join("few"), &["--child-tables", "PerfSnapshotMemory,perfsnapshotdb", "--children-scale", "0.5"]);
    let dir = few[0].with_file_name(few[0].file_stem().unwrap());
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["PerfSnapshotDB.parquet", "PerfSnapshotMemory.parquet"]);
    let bad = perfcopy(&["generate", "--out", s(&t.path().join("bad")), "--child-tables", "PerfSnapshotNope"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("PerfSnapshotNope"), "{}", stderr(&bad));
}

#[test]
fn an_export_with_children_copies_into_a_stage_and_monitoringdb_equal_to_the_model() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let files = generate(&src, &["--children-scale", "0.3"]);
    let sources: Vec<(Vec<SrcRow>, PathBuf)> = files.iter().map(|f| (read_source(f), f.clone())).collect();

    // A child folder is no run source: naming it is an error that names the export.
    let folder = files[0].with_file_name(files[0].file_stem().unwrap());
    let o = perfcopy(&["copy", "--from", s(&folder), "--stage", s(&t.path().join("never")), "--register-servers"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(s(&files[0])), "{}", stderr(&o));

    // Into a stage.
    let stage = t.path().join("stage");
    let o = perfcopy(&["copy", "--from", s(&src), "--stage", s(&stage), "--register-servers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reg: NameMap = read_registry(&stage.join("servers.csv")).into_iter().map(|(n, id)| (fold(&n), id)).collect();
    let runs = by_key(&read_stage(&stage));
    for table in ALL_TABLES {
        kids::diff(&format!("stage {table}"), &kids::stage_rows(&stage, table), &kids::model(&sources, &reg, runs.keys().copied(), table)).unwrap();
    }

    // Into MonitoringDB, with child tables shaped from the export (the test server's seeding API).
    let srv = server();
    srv.create_monitoringdb("MonitoringDB");
    let created = tds_test_server::children::create_child_tables(&srv, "MonitoringDB", &files[0]).unwrap();
    assert_eq!(created.len(), ALL_TABLES.len());
    let to = conn(&srv, "MonitoringDB");
    let o = perfcopy(&["copy", "--from", s(&src), "--to", &to, "--register-servers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reg = servers_table(&srv, "MonitoringDB");
    let held = target_rows(&srv, "MonitoringDB");
    let run_batch = srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap();
    for table in ALL_TABLES {
        let mut rows = srv.table_batch("MonitoringDB", &format!("dbo.{table}")).unwrap();
        if table == "PerfSnapshotConfig" {
            rows = kids::variants_as_structs(&rows, &["ConfigValue", "ConfigValueInUse", "ConfigMinimum", "ConfigMaximum"]);
        }
        let (got, orphans) = kids::target_rows(&run_batch, &rows);
        assert_eq!(orphans, 0, "{table}");
        kids::diff(&format!("MonitoringDB {table}"), &got, &kids::model(&sources, &reg, held.keys().copied(), table)).unwrap();
    }
    let long = srv.table_batch("MonitoringDB", "dbo.PerfSnapshotWorkload").unwrap();
    let text = long.column(long.schema().index_of("StatementText").unwrap()).as_string::<i32>();
    assert!((0..long.num_rows()).any(|r| text.is_valid(r) && text.value(r).chars().count() > 4_000), "long values arrived whole");
}

#[test]
fn the_test_server_seeds_an_exports_child_tables_with_their_sql_types() {
    let t = tempfile::tempdir().unwrap();
    // PerfSnapshotConfig left out: the test server's seeding API (insert_batch) takes no
    // SQL_VARIANT column yet ("Arrow type Struct(…) is not supported for seeding"); it stores
    // the type and a copy loads it (test above).
    let ten: Vec<&str> = ALL_TABLES.iter().copied().filter(|t| *t != "PerfSnapshotConfig").collect();
    let files = generate(&t.path().join("src"), &["--children-scale", "0.2", "--child-tables", &ten.join(",")]);
    let srv = server();
    srv.create_dbatools("DBATools", true);
    srv.seed_parquet("DBATools", "dbo.PerfSnapshotRun", &files[0]).unwrap();
    let seeded = tds_test_server::children::seed_export_children(&srv, "DBATools", &files[0]).unwrap();
    assert_eq!(seeded.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), {
        let mut v = ten.clone();
        v.sort();
        v
    });
    for (table, n) in seeded {
        let (_, rows) = kids::export_rows(&files[0], &table);
        assert_eq!(n as usize, rows.values().map(Vec::len).sum::<usize>(), "{table}");
        let cols = srv.table_columns("DBATools", &format!("dbo.{table}")).unwrap();
        assert_eq!(cols[0].name, format!("{table}ID"));
        assert!(cols[0].identity);
        assert_eq!(cols[1].name, "PerfSnapshotRunID");
        assert!(!cols[1].nullable);
        if table == "PerfSnapshotWorkload" {
            let c = cols.iter().find(|c| c.name == "StatementText").unwrap();
            assert_eq!(c.ty, tds_test_server::SqlType::NVarChar(None));
            let c = cols.iter().find(|c| c.name == "LoginName").unwrap();
            assert_eq!(c.ty, tds_test_server::SqlType::NVarChar(Some(256)));
        }
        let ty = |name: &str| cols.iter().find(|c| c.name == name).map(|c| c.ty.clone()).unwrap();
        match table.as_str() {
            "PerfSnapshotQueryStats" => {
                assert_eq!(ty("QueryHash"), tds_test_server::SqlType::Binary(8));
                assert_eq!(ty("PlanHandle"), tds_test_server::SqlType::VarBinary(Some(64)));
            }
            "PerfSnapshotQueryPlans" => assert_eq!(ty("QueryPlanXML"), tds_test_server::SqlType::Xml),
            _ => {}
        }
    }
}

#[test]
fn bench_moves_the_generated_child_tables_and_reports_each() {
    let t = tempfile::tempdir().unwrap();
    // bench generates in process what generate writes for the same flags.
    let args = ["--servers", "2", "--rows", "400", "--overlap", "0.1", "--seed", "8", "--children-scale", "0.1"];
    let exports = t.path().join("src");
    let g = perfcopy(&[&["generate", "--out", s(&exports)][..], &args].concat());
    assert!(g.status.success(), "{}", stderr(&g));
    let stage = t.path().join("stage");
    let b = perfcopy(&[&["bench", "--to", s(&stage), "--child-tables", "all", "--progress", "off", "--json"][..], &args].concat());
    assert!(b.status.success(), "{}", stderr(&b));
    let report: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    let figures = report["child_tables"].as_array().unwrap();
    assert_eq!(figures.len(), ALL_TABLES.len());
    for table in ALL_TABLES {
        let f = figures.iter().find(|f| f["table"] == table).unwrap_or_else(|| panic!("{table} not in the report"));
        let want = kids::distinct_snapshot_children(&exports, table);
        assert_eq!(kids::staged_rows(&stage, table), want, "{table}: staged rows");
        assert_eq!(f["rows_written"].as_u64(), Some(want), "{table}: reported rows");
        assert!(f.get("encode_rows_per_cpu_second").is_none(), "{table}: a stage encodes no TDS");
    }
    // Into null: every table's rows TDS-encoded, with rates; without --child-tables none at all.
    let b = perfcopy(&[&["bench", "--child-tables", "all", "--progress", "off", "--json"][..], &args].concat());
    assert!(b.status.success(), "{}", stderr(&b));
    let report: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    for f in report["child_tables"].as_array().unwrap() {
        let want = kids::distinct_snapshot_children(&exports, f["table"].as_str().unwrap());
        assert_eq!(f["rows_written"].as_u64(), Some(want), "{f}");
        assert!(want == 0 || f["encode_rows_per_cpu_second"].as_f64().unwrap() > 0.0, "{f}");
        assert!(want == 0 || f["tds_mb"].as_f64().unwrap() > 0.0, "{f}");
    }
    let b = perfcopy(&[&["bench", "--progress", "off", "--json"][..], &args[..8]].concat());
    assert!(b.status.success(), "{}", stderr(&b));
    let report: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert!(report.get("child_tables").is_none(), "the run-table bench moves no child table: {report}");
}
