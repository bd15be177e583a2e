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

/// `demo --children-scale`: the demo's 3 million runs with all eleven child tables at this
/// scale are about a million child rows (long text included), so the demo stays near a minute.
pub const DEMO_CHILDREN_SCALE: f64 = 0.001;
