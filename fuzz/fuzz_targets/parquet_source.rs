//! Parquet source decoding: whatever a file holds, opening it and reading every batch (both
//! projections) returns Ok or Err, never panics or aborts.
//!
//! perfcopy catches panics inside arrow-rs' Parquet decoder (`PanicSafe` in
//! src/source/parquet.rs) and turns them into an error naming the file. libFuzzer's panic hook
//! (installed by libfuzzer-sys) aborts on every panic, caught or not, so this target replaces
//! it with a quiet hook that only remembers the last panic's message and place. A panic that
//! perfcopy catches is then not a crash; one that escapes perfcopy reaches the catch_unwind
//! below, which prints what the hook remembered and aborts: libFuzzer reports it as a crash.
#![no_main]

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};

use libfuzzer_sys::fuzz_target;
use perfcopy::source::parquet::ParquetSource;
use perfcopy::source::{Projection, ReadRequest, Source};

thread_local! {
    /// (message, "file:line") of the last panic on this thread.
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string payload)".into())
}

fn quiet_panic_hook() {
    // Runs after libfuzzer-sys' own initialisation, so this hook replaces its aborting one.
    panic::set_hook(Box::new(|info| {
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((message(info.payload()), place)));
    }));
}

fn drain(src: &ParquetSource, req: &ReadRequest) {
    if let Ok(batches) = src.read(req) {
        for b in batches {
            if b.is_err() {
                break;
            }
        }
    }
}

fn run(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.parquet");
    std::fs::write(&path, data).unwrap();
    let Ok(src) = ParquetSource::open(&path) else { return };
    for projection in [Projection::Keys, Projection::Full] {
        drain(&src, &ReadRequest { projection, batch_rows: 7, after_run_id: None, time_ranges: None });
    }
    // Pruning by statistics takes another path through the footer.
    drain(&src, &ReadRequest { projection: Projection::Full, batch_rows: 3, after_run_id: Some(5), time_ranges: Some(vec![(0, 1_000_000_000_000_000)]) });
}

fuzz_target!(init: quiet_panic_hook(), |data: &[u8]| {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| run(data))) {
        let what = message(&*payload);
        // The place, if the hook saw this panic (not so for one re-raised from another thread).
        let place = LAST_PANIC.with(|p| p.borrow_mut().take()).filter(|(m, _)| *m == what).map(|(_, at)| at).unwrap_or_else(|| "?".into());
        eprintln!("parquet_source: panic escaped perfcopy: '{what}' at {place}");
        std::process::abort();
    }
});
