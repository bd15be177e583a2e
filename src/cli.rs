//! Command-line flags, as the user types them. Each flag's doc is its manual: default, unit
//! and trade-off. Validation happens once, in [`crate::config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::defaults;
use crate::pipeline::progress::ProgressMode;


/// perfcopy moves SQL Server monitoring history (DBATools PerfSnapshotRun) into one central
/// store: a MonitoringDB, or a Parquet staging dataset. Nothing lost, nothing doubled; re-runs
/// are safe and cheap.
#[derive(Debug, Parser)]
#[command(name = "perfcopy", version, about, long_about = None, max_term_width = 80)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log level for messages on stderr (error, warn, info, debug, trace). Also RUST_LOG.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
}

/// perfcopy's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write synthetic DBATools exports (one Parquet file per server) for trying and testing.
    Generate(GenerateArgs),
    /// Copy PerfSnapshotRun rows from sources into a stage, remapping ServerID and removing
    /// duplicates.
    Copy(CopyArgs),
    /// Check that every source row is in the stage; exit 3 and name what is missing if not.
    Verify(VerifyArgs),
    /// Where each source stands in the target: last sync, watermark, the source's newest row,
    /// lag in rows and time, last failure. Exit 5 when a source passes --max-lag or
    /// --max-lag-rows (or was never synced), so monitoring can alert on it.
    Status(StatusArgs),
    /// Generate sources, consolidate them into a stage, verify it, and show how to look at it.
    Demo(DemoArgs),
    /// Measure a move: generate rows in process (no disk input), run the real pipeline into
    /// TARGET, and report per stage and end to end: rows/s, MB/s, batches, peak memory, and
    /// time spent waiting on each queue (which stage is the bottleneck).
    Bench(BenchArgs),
}

/// `perfcopy bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Rows to generate (copies included).
    #[arg(long, default_value_t = 100_000_000)]
    pub rows: u64,
    /// Simulated servers (sources).
    #[arg(long, default_value_t = 8)]
    pub servers: usize,
    /// Fraction of rows duplicated into a second source.
    #[arg(long, default_value_t = 0.05)]
    pub overlap: f64,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `null` (encode as TDS bulk rows, then discard), a stage directory (must not exist yet),
    /// or a MonitoringDB connection string: rows then go to a scratch table
    /// `dbo.perfcopy_bench_<pid>` that bench creates and drops — never into the real
    /// PerfSnapshotRun — so you can measure your own server and network.
    #[arg(long, default_value = "null", value_name = "TARGET")]
    pub to: String,
    /// TOML with `[target] password_env`/`password_file` for the connection's password.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Sources generated and read at once. Default: the number of cores.
    #[arg(long, value_name = "N")]
    pub readers: Option<usize>,
    /// Writer threads (connections for a MonitoringDB). Default: the number of cores.
    #[arg(long, value_name = "N")]
    pub writers: Option<usize>,
    /// Rows per batch (and per transaction into MonitoringDB).
    #[arg(long, value_name = "N", default_value_t = defaults::BATCH_ROWS)]
    pub batch_rows: usize,
    /// Batches queued per writer.
    #[arg(long, value_name = "N", default_value_t = defaults::QUEUE_DEPTH)]
    pub queue_depth: usize,
    /// MonitoringDB: bulk load without TABLOCK.
    #[arg(long)]
    pub no_tablock: bool,
    /// MonitoringDB: TDS packet size in bytes (512..32767).
    #[arg(long, value_name = "BYTES")]
    pub packet_size: Option<u32>,
    /// Child tables generated with each run and moved with it, as `generate` writes them:
    /// `all` (the eleven tables), `none` (PerfSnapshotRun only, the run-table benchmark), or a
    /// comma-separated list. The report then gives per table rows, MB, generation CPU time and,
    /// into `null`, TDS encoding rows/s per CPU second. Into a MonitoringDB each table gets a
    /// scratch table of its own beside the runs' (dropped at the end).
    #[arg(long, value_name = "all|none|LIST", default_value = "none")]
    pub child_tables: String,
    /// Child rows per run relative to a real collector's (1.0: about 400 per run over the
    /// eleven tables, long text included); as for `generate`. 0..=10.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub children_scale: f64,
    /// Print the report as JSON on stdout too.
    #[arg(long)]
    pub json: bool,
    /// Progress display on stderr: bars on a terminal, plain lines every 5 s otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// `perfcopy generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write `<ServerName>.parquet` files into (created if missing; `\` in a
    /// name is written as `_` in the file name).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of simulated servers (one DBATools database each).
    #[arg(long, default_value_t = 8)]
    pub servers: usize,
    /// Rows across all files, copies included. A snapshot every 5 minutes per server, so 10M
    /// rows over 8 servers is about 12 years of history each.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: u64,
    /// Fraction (0..1) of each server's rows that also appear in another file, as in a
    /// restored copy of its DBATools database. About 1 in 64 copied rows differs in a value.
    #[arg(long, default_value_t = 0.05)]
    pub overlap: f64,
    /// Seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Child tables written beside each file, in `<ServerName>/<Table>.parquet` (the export
    /// layout `copy` reads): `all` (default: the eleven tables of the collector's schema),
    /// `none` (only the run files, exactly as before child tables existed), or a
    /// comma-separated list of PerfSnapshotDB, PerfSnapshotWaitStats, PerfSnapshotWorkload,
    /// PerfSnapshotErrorLog, PerfSnapshotMemory, PerfSnapshotQueryStats, PerfSnapshotIOStats,
    /// PerfSnapshotBackupHistory, PerfSnapshotQueryPlans, PerfSnapshotConfig,
    /// PerfSnapshotDeadlocks. A restored copy (`--overlap`) has the same children as its
    /// original runs.
    #[arg(long, value_name = "all|none|LIST")]
    pub child_tables: Option<String>,
    /// Child rows per run relative to a real collector's (1.0: ~20 databases and their
    /// backups, ~50 database files, ~100 wait types, ~100 cached queries with their text
    /// (some over 8,000 bytes), ~80 configuration options, 10–50 sessions, a few error log
    /// lines, query plans and deadlocks, one memory row: about 400 rows and 600 KB of Arrow
    /// data per run).
    /// Smaller values make small test data; the mean count scales exactly. 0..=10.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub children_scale: f64,
}

/// Flags shared by commands that read sources.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// A source: a Parquet export of one DBATools PerfSnapshotRun table, a directory whose
    /// *.parquet files are each one source, or a DBATools connection string
    /// ("Server=tcp:sql01,1433;Database=DBATools;User Id=…", or jdbc:sqlserver://…).
    /// Repeatable. The order matters for which duplicate survives: the first source given wins
    /// (files of a directory in name order). Put passwords in --config, not here.
    #[arg(long = "from", required_unless_present = "config", value_name = "SOURCE")]
    pub from: Vec<String>,
    /// TOML file listing sources, the target and options, with passwords taken from
    /// environment variables or files (see README). Flags given too add sources and override
    /// options.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// CSV with header `ServerName,ServerID` mapping source server names to target IDs;
    /// consulted before the stage's own servers.csv. Several names may map to one ID (renamed
    /// servers). Names match case-insensitively.
    #[arg(long, value_name = "FILE")]
    pub server_map: Option<PathBuf>,
    /// Only rows with SnapshotUTC at or after this ISO 8601 UTC time (e.g. 2024-01-01 or
    /// 2024-01-01T06:00:00Z).
    #[arg(long, value_name = "TS")]
    pub since: Option<String>,
    /// Only rows with SnapshotUTC before this ISO 8601 UTC time (exclusive).
    #[arg(long, value_name = "TS")]
    pub until: Option<String>,
    /// Sources read at once. More uses more cores and memory (one batch queue per reader).
    /// Default: the number of cores.
    #[arg(long, value_name = "N")]
    pub readers: Option<usize>,
    /// Rows per Arrow batch, which is also the rows per transaction into
    /// MonitoringDB and per page read from SQL Server. Larger batches cost memory (about 250
    /// bytes per row) and save per-batch overhead. [default: 32768]
    #[arg(long, value_name = "N")]
    pub batch_rows: Option<usize>,
    /// Split each SQL Server source into N PerfSnapshotRunID ranges, each read on its own
    /// connection (for large sources; more load on the source server).
    #[arg(long, value_name = "N", default_value_t = defaults::SOURCE_CONNECTIONS)]
    pub source_connections: usize,
    /// Print one JSON summary on stdout (human messages stay on stderr).
    #[arg(long)]
    pub json: bool,
    /// Progress display on stderr: bars on a terminal, plain lines every 5 s otherwise
    /// (`PERFCOPY_PROGRESS_SECONDS` sets another interval); each finished phase leaves one
    /// summary line. `off` prints no progress, only messages and the summary.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// `perfcopy copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub src: SourceArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Serve the copy's metrics (rows and bytes per source, child rows per table, duplicates,
    /// conflicts, units committed, retries, queue waits, last commit) for Prometheus at
    /// http://ADDR/metrics while it runs, e.g. 127.0.0.1:9464 (port 0: any free port; the
    /// address is printed). Default: off.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Give server names that neither --server-map nor the stage knows the next IDs after the
    /// highest known (in name order), and record them in DIR/servers.csv. Without it, unknown
    /// names are an error and nothing is written.
    #[arg(long)]
    pub register_servers: bool,
    /// Read and analyse (rows per source and server, date ranges, duplicates, unknown servers,
    /// what would be written) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Ignore the watermarks of earlier runs and read every source row again. Rows the stage
    /// holds are still never written twice, so this repairs a stage that lost files.
    #[arg(long)]
    pub rescan: bool,
    #[command(flatten)]
    pub tables: TableArgs,
    /// Create a child table the MonitoringDB lacks, from the first source's columns; a VARCHAR
    /// column gets the source column's collation (from a stage: the one its files record).
    #[arg(long)]
    pub create_missing_tables: bool,
    /// Writer threads (each owns some server partitions). Default: the number of cores.
    #[arg(long, value_name = "N")]
    pub writers: Option<usize>,
    /// Batches queued per writer before readers wait (backpressure). Memory is about
    /// batch-rows x 250 bytes x queue-depth x writers.
    #[arg(long, value_name = "N", default_value_t = defaults::QUEUE_DEPTH)]
    pub queue_depth: usize,
    /// zstd level of stage files (1 = fastest; higher = smaller and slower).
    #[arg(long, value_name = "N", default_value_t = defaults::ZSTD_LEVEL)]
    pub zstd_level: i32,
    /// Rows per Parquet row group in stage files.
    #[arg(long, value_name = "N", default_value_t = defaults::ROW_GROUP_ROWS)]
    pub row_group_rows: usize,
    /// MonitoringDB: bulk load without TABLOCK (row locks; slower, lets readers in).
    #[arg(long)]
    pub no_tablock: bool,
    /// MonitoringDB: sort each batch by (ServerID, SnapshotUTC) and send an ORDER hint.
    #[arg(long)]
    pub order_hint: bool,
    /// MonitoringDB: attempts per batch on transient errors (dropped connection, deadlock,
    /// timeout), with exponential backoff from 200 ms.
    #[arg(long, value_name = "N", default_value_t = defaults::RETRIES)]
    pub retries: u32,
    /// MonitoringDB and SQL Server sources: TDS packet size in bytes (512..32767; default:
    /// the connection string's, else 4096).
    #[arg(long, value_name = "BYTES")]
    pub packet_size: Option<u32>,
}

/// Where rows go (one of the two, on the command line or in --config).
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Stage directory (Hive-partitioned Parquet dataset; created if missing).
    #[arg(long, value_name = "DIR", conflicts_with = "to")]
    pub stage: Option<PathBuf>,
    /// MonitoringDB connection string ("Server=tcp:monitor,1433;Database=MonitoringDB;User
    /// Id=…"). Put the password in --config, not here.
    #[arg(long, value_name = "CONNECTION")]
    pub to: Option<String>,
}

/// `perfcopy verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub src: SourceArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub tables: TableArgs,
    /// Also compare values: per target server and UTC day, the row count and a checksum of
    /// every PerfSnapshotRun column, the sources' surviving rows against the target's, naming
    /// the server, day and column that differ. Costs a full read of the sources (three passes:
    /// keys twice, then rows), and of the stage's rows of the sources' servers; MonitoringDB
    /// computes its side itself (one GROUP BY, SQL Server 2016 or later). Default: off (keys
    /// and child digests only).
    #[arg(long)]
    pub values: bool,
}

/// `perfcopy status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub src: SourceArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Most a source's newest snapshot may be ahead of what the target holds, e.g. 15m, 2h,
    /// 1d. A source further behind, never synced, or whose watermark the next copy would set
    /// aside makes the exit code 5. Default: no time limit.
    #[arg(long, value_name = "DURATION")]
    pub max_lag: Option<String>,
    /// Most rows a source may hold that the next copy would read. Default: no row limit.
    #[arg(long, value_name = "ROWS")]
    pub max_lag_rows: Option<u64>,
}

/// Which child tables `copy` moves and `verify` compares.
#[derive(Debug, Clone, Default, Args)]
pub struct TableArgs {
    /// Child tables to move with their runs (comma-separated names, e.g.
    /// PerfSnapshotDB,PerfSnapshotWaitStats). Default: every table of the sources with a
    /// PerfSnapshotRunID column that the target has too. A named table the target lacks is
    /// an error (see copy's --create-missing-tables).
    #[arg(long, value_name = "TABLES", value_delimiter = ',', conflicts_with = "runs_only")]
    pub tables: Option<Vec<String>>,
    /// PerfSnapshotRun only (no child tables).
    #[arg(long)]
    pub runs_only: bool,
}

/// `perfcopy demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory for the demo's sources and stage.
    #[arg(long, default_value = "demo-out")]
    pub dir: PathBuf,
    /// Rows to generate.
    #[arg(long, default_value_t = 3_000_000)]
    pub rows: u64,
    /// Simulated servers.
    #[arg(long, default_value_t = 6)]
    pub servers: usize,
    /// Child rows per run relative to a real collector's, for all eleven child tables (see
    /// `generate --children-scale`). The default keeps the demo near a minute; 0 moves
    /// PerfSnapshotRun alone.
    #[arg(long, value_name = "F", default_value_t = defaults::DEMO_CHILDREN_SCALE)]
    pub children_scale: f64,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn help(command: &str) -> String {
        let mut cli = Cli::command();
        let sub = cli.find_subcommand_mut(command).expect("subcommand");
        sub.render_long_help().to_string().split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn help_shows_the_named_defaults() {
        let copy = help("copy");
        for (flag, value) in [
            ("--batch-rows", defaults::BATCH_ROWS.to_string()),
            ("--queue-depth", defaults::QUEUE_DEPTH.to_string()),
            ("--zstd-level", defaults::ZSTD_LEVEL.to_string()),
            ("--row-group-rows", defaults::ROW_GROUP_ROWS.to_string()),
            ("--retries", defaults::RETRIES.to_string()),
            ("--source-connections", defaults::SOURCE_CONNECTIONS.to_string()),
        ] {
            let at = copy.find(flag).unwrap_or_else(|| panic!("{flag} not in copy --help"));
            let next = copy[at + flag.len()..].find(" --").map_or(copy.len(), |n| at + flag.len() + n);
            assert!(copy[at..next].contains(&format!("[default: {value}]")), "{flag}: {}", &copy[at..next]);
        }
    }
}
