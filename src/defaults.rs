//! perfcopy's defaults, each named once. The flags show them (clap's `default_value_t`), the
//! demo uses them, and so do the `Default`s of the stage's and the bulk load's options.

use std::time::Duration;

/// Rows per Arrow batch (`--batch-rows`): large enough that per-batch costs vanish, small enough
/// that queued batches stay a few tens of MB. Also the rows per transaction into MonitoringDB
/// and per page read from SQL Server.
pub const BATCH_ROWS: usize = 32_768;

/// Batches queued per writer before readers wait (`--queue-depth`).
pub const QUEUE_DEPTH: usize = 2;

/// Connections per SQL Server source (`--source-connections`).
pub const SOURCE_CONNECTIONS: usize = 1;

/// zstd level of stage files (`--zstd-level`): the fastest.
pub const ZSTD_LEVEL: i32 = 1;

/// Rows per Parquet row group of stage files (`--row-group-rows`).
pub const ROW_GROUP_ROWS: usize = 262_144;

/// Attempts per MonitoringDB unit on transient errors (`--retries`).
pub const RETRIES: u32 = 5;

/// The first backoff between attempts; it doubles per attempt.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Connect Timeout when a connection string gives none (SqlClient's is 15 s too).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Rows per batch of the reads perfcopy makes for itself rather than for the user's rows (a
/// watermark check's keys, the rows a MonitoringDB already holds), where `--batch-rows` does
/// not apply.
pub const INTERNAL_BATCH_ROWS: usize = 65_536;

/// Readers and writers (`--readers`, `--writers`): the number of cores.
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// Runs per unit when child tables move with them: a run has a few hundred child rows, so a
/// unit of this many runs holds about 100k rows in all.
pub const RUNS_PER_UNIT_WITH_CHILDREN: usize = 256;

/// Bytes of child rows (Arrow values) a unit aims at: wide rows (long SqlText, plan XML) make
/// units of fewer runs, so the units in queues and in flight stay bounded in bytes, not only in
/// runs. Small rows (WaitStats) still fill [`RUNS_PER_UNIT_WITH_CHILDREN`].
pub const CHILD_BYTES_PER_UNIT: usize = 16 << 20;

/// [`CHILD_BYTES_PER_UNIT`], or the test hook `PERFCOPY_TEST_CHILD_UNIT_BYTES` (tests make
/// small sources go out in many parts; benchmarks compare bounds with one binary).
pub fn child_bytes_per_unit() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| std::env::var("PERFCOPY_TEST_CHILD_UNIT_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(CHILD_BYTES_PER_UNIT))
}

/// Runs of a source's first unit with child tables, before its bytes per run are known.
pub const FIRST_UNIT_RUNS_WITH_CHILDREN: usize = 16;

/// `demo --children-scale`: the demo's 3 million runs with all eleven child tables at this
/// scale are about a million child rows (long text included), so the demo stays near a minute.
pub const DEMO_CHILDREN_SCALE: f64 = 0.001;
