//! The README's first command, `perfcopy demo`, on a small data set: it must generate,
//! consolidate, re-run without adding rows, and verify; its stage must hold every child table
//! with the rows of the generated export (counted with arrow-rs/parquet directly).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use assert_cmd::Command;
use common::kids::ALL_TABLES;
use common::{fold, parquet_files, read_source, walk_files};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};


/// Child rows per PerfSnapshotRunID of an export's `NAME/<table>.parquet`.
fn children_per_run(run_file: &std::path::Path, table: &str) -> BTreeMap<i64, u64> {
    let path = run_file.with_file_name(run_file.file_stem().unwrap()).join(format!("{table}.parquet"));
    let mut out = BTreeMap::new();
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), ["PerfSnapshotRunID"]);
    for b in builder.with_projection(mask).build().unwrap() {
        for id in b.unwrap().column(0).as_primitive::<Int64Type>().values() {
            *out.entry(*id).or_insert(0) += 1;
        }
    }
    out
}

/// Rows in the committed files of `STAGE/<table>/` (Parquet footers).
fn staged_rows(stage: &std::path::Path, table: &str) -> u64 {
    walk_files(&stage.join(table))
        .iter()
        .filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".parquet") && !n.starts_with('.')))
        .map(|f| SerializedFileReader::new(File::open(f).unwrap()).unwrap().metadata().file_metadata().num_rows() as u64)
        .sum()
}

#[test]
fn demo_generates_copies_reruns_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    // A scale at which the 30,000 runs have a few child rows of every table.
    let out = Command::cargo_bin("perfcopy")
        .unwrap()
        .args(["demo", "--rows", "30000", "--servers", "3", "--children-scale", "0.02", "--dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    assert!(stderr.contains("verify: OK"), "{stderr}");
    assert!(stderr.contains("the re-run wrote 0 and 0 child rows"), "{stderr}");
    // The stage it points the user at exists and holds one partition per server.
    let parts: Vec<_> = std::fs::read_dir(dir.path().join("stage/PerfSnapshotRun")).unwrap().collect();
    assert_eq!(parts.len(), 3);
    assert!(stderr.contains("duckdb -c"), "{stderr}");

    // Every child table staged, with the children of each distinct snapshot (ServerName,
    // SnapshotUTC) of the export once: a restored copy's runs have the same children as the
    // originals, so whichever survives brings as many.
    let files = parquet_files(&dir.path().join("sources"));
    assert_eq!(files.len(), 3);
    let runs: Vec<_> = files.iter().map(|f| read_source(f)).collect();
    for table in ALL_TABLES {
        let mut seen = HashSet::new();
        let mut want = 0;
        for (f, rows) in files.iter().zip(&runs) {
            let kids = children_per_run(f, table);
            for r in rows {
                if seen.insert((fold(&r.server_name), r.snapshot_ms)) {
                    want += kids.get(&r.run_id).copied().unwrap_or(0);
                }
            }
        }
        assert!(want > 0, "{table}: the export has child rows");
        assert_eq!(staged_rows(&dir.path().join("stage"), table), want, "{table}: staged rows");
    }
}
