//! Parquet source decoding: whatever a file holds, opening it and reading every batch (both
//! projections) returns Ok or Err, never panics or aborts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfcopy::source::parquet::ParquetSource;
use perfcopy::source::{Projection, ReadRequest, Source};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.parquet");
    std::fs::write(&path, data).unwrap();
    let Ok(src) = ParquetSource::open(&path) else { return };
    for projection in [Projection::Keys, Projection::Full] {
        let req = ReadRequest { projection, batch_rows: 7, after_run_id: None, time_ranges: None };
        if let Ok(batches) = src.read(&req) {
            for b in batches {
                if b.is_err() {
                    break;
                }
            }
        }
    }
    // Pruning by statistics takes another path through the footer.
    let req = ReadRequest { projection: Projection::Full, batch_rows: 3, after_run_id: Some(5), time_ranges: Some(vec![(0, 1_000_000_000_000_000)]) };
    if let Ok(batches) = src.read(&req) {
        for b in batches {
            if b.is_err() {
                break;
            }
        }
    }
});
