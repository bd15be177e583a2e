//! Inputs found by the fuzz targets (fuzz/, scripts/fuzz.sh) that once crashed perfcopy.

mod common;

use common::*;

/// Regression: corrupt Parquet files (found by the parquet_source fuzz target) made arrow-rs'
/// decoder panic ("offset + len out of bounds"; "column start and length should not be
/// negative"), which crashed perfcopy with exit code 101. Each must be a clear error naming the
/// file, exit 1, and leave the stage untouched. Inputs 3 and 4 panic the decoder at other places
/// ("Num of bytes exceed MAX_VLQ_BYTE_LEN (10)"; "Decoder for dict should have been set"); the
/// fuzz target found them after perfcopy already caught decoder panics (so the binary never
/// crashed on them), and they pin that the catch covers those decoder paths too.
#[test]
fn corrupt_parquet_that_panicked_the_decoder_is_a_clear_error() {
    for input in ["fuzz-parquet-panic-1.parquet", "fuzz-parquet-panic-2.parquet", "fuzz-parquet-panic-3.parquet", "fuzz-parquet-panic-4.parquet"] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("corrupt.parquet");
        std::fs::copy(format!("{}/tests/data/{input}", env!("CARGO_MANIFEST_DIR")), &src).unwrap();
        let stage = t.path().join("stage");
        // RUST_BACKTRACE=1: a panic message, if printed, would come with a backtrace.
        let o = assert_cmd::Command::cargo_bin("perfcopy")
            .unwrap()
            .args(["copy", "--from", s(&src), "--stage", s(&stage), "--register-servers", "--progress", "off"])
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{input}: {err}");
        assert!(err.contains("corrupt.parquet") && err.contains("Parquet"), "{input}: {err}");
        assert!(!err.contains("panicked at") && !err.contains("stack backtrace"), "{input}: the caught panic still printed the panic message: {err}");
        assert!(stage_files(&stage).is_empty(), "{input}");
    }
}
