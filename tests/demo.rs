//! The README's first command, `perfcopy demo`, on a small data set: it must generate,
//! consolidate, re-run without adding rows, and verify; its stage must hold every child table
//! with the rows of the generated export (counted with arrow-rs/parquet directly).

mod common;

use assert_cmd::Command;
use common::kids::{self, ALL_TABLES};

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
    // Words as printed, whatever the lines wrap at.
    let stderr = String::from_utf8_lossy(&out.stderr).split_whitespace().collect::<Vec<_>>().join(" ");
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
    for table in ALL_TABLES {
        let want = kids::distinct_snapshot_children(&dir.path().join("sources"), table);
        assert!(want > 0, "{table}: the export has child rows");
        assert_eq!(kids::staged_rows(&dir.path().join("stage"), table), want, "{table}: staged rows");
    }
}
