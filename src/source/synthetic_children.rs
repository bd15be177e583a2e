//! Deterministic synthetic child tables (issue 14): the descriptions of the DBATools child
//! tables that `perfcopy generate` writes, the test server seeds and tests model, in one place,
//! and their rows.
//!
//! Shapes, column types and counts follow `shared/SCHEMA.md` (all eleven tables it lists). At
//! `--children-scale 1.0` a run has:
//!
//! | table | rows per run | notes |
//! |---|---|---|
//! | PerfSnapshotDB | 14–26 (fixed per server: one per database) | newer-collector columns included; DECIMAL(18,2), BIT NOT NULL |
//! | PerfSnapshotWaitStats | 90–110 | |
//! | PerfSnapshotWorkload | 10–50 | StatementText NVARCHAR(MAX); about 1 in 8 values is 4,001–12,000 characters (more than one PLP chunk), some non-ASCII |
//! | PerfSnapshotErrorLog | 0–4 | LogText NVARCHAR(4000) |
//! | PerfSnapshotMemory | 1 | |
//! | PerfSnapshotQueryStats | 90–110 | QueryHash/QueryPlanHash BINARY(8), PlanHandle VARBINARY(64); SqlText NVARCHAR(MAX) of 100–3,000 characters, about 1 in 6 of 4,001–20,000 (over 8,000 bytes); nullable DATETIME2(3) |
//! | PerfSnapshotIOStats | 2–3 per database (fixed per server: 28–86) | one per database file |
//! | PerfSnapshotBackupHistory | 14–26 (one per database) | VARCHAR(20) BackupRiskLevel; backup dates often NULL (never backed up) |
//! | PerfSnapshotQueryPlans | 0–4 | showplan XML of 3–60 operators (about 2–30 KB) |
//! | PerfSnapshotConfig | 78–84 (fixed per server) | SQL_VARIANT values of base type `int`, as `sys.configurations` has them |
//! | PerfSnapshotDeadlocks | 0–2, mostly 0 | deadlock graph XML, VARBINARY(64) hash of 32 bytes |
//!
//! A scale `f` multiplies each count and rounds stochastically (deterministically per run), so
//! a table's mean rows per run is `f` times the above. About one row in eight of every table
//! is NULL-heavy: every nullable column NULL; elsewhere a nullable column is NULL about one
//! time in twenty (some columns more often, as noted in [`value`]'s callers).
//!
//! Every value is a pure function of (seed, table, column, server, row index of the run, index
//! of the child row): a restored copy of a server's history (the `--overlap` segments) has the
//! same children as the original runs, as a restored DBATools database has; only their
//! PerfSnapshotRunIDs are the copy's own. The first five tables' bytes are what they were
//! before the other six existed (tables draw from their own streams, numbered by their place
//! in [`ALL`]). Long values come from [`crate::source::synthetic_text`].

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, FixedSizeBinaryBuilder, Int32Builder, Int64Array, Int64Builder, StringBuilder, StructArray,
    TimestampMillisecondBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::schema::{typed_field, ChildTable, Column, SqlType, DATETIME2_3, PARENT_KEY, RUN};
use crate::source::synthetic::{mix, Segment, SyntheticSpec};
use crate::source::synthetic_text::{batch_text, bytes, deadlock_xml, showplan_xml, statement};

const fn c(name: &'static str, sql: SqlType, nullable: bool) -> Column {
    Column::new(name, sql, nullable)
}

const SYSNAME: SqlType = SqlType::NVarChar(128);
const fn dec(precision: u8, scale: i8) -> SqlType {
    SqlType::Decimal { precision, scale }
}

const DB_COLUMNS: [Column; 14] = [
    c("DatabaseID", SqlType::Int, false),
    c("DatabaseName", SYSNAME, false),
    c("StateDesc", SqlType::NVarChar(60), false),
    c("RecoveryModelDesc", SqlType::NVarChar(60), false),
    c("IsReadOnly", SqlType::Bit, false),
    c("TotalDataMB", dec(18, 2), true),
    c("TotalLogMB", dec(18, 2), true),
    c("LogReuseWaitDesc", SqlType::NVarChar(120), true),
    c("FileCount", SqlType::Int, true),
    c("CompatLevel", SqlType::Int, true),
    c("VLFCount", SqlType::Int, true),
    c("LogSizeUsedMB", dec(18, 2), true),
    c("LogSpaceUsedPercent", dec(9, 4), true),
    c("ActiveVLFCount", SqlType::Int, true),
];

const WAIT_COLUMNS: [Column; 7] = [
    c("WaitType", SqlType::NVarChar(120), false),
    c("WaitingTasksCount", SqlType::BigInt, true),
    c("WaitTimeMs", SqlType::BigInt, true),
    c("SignalWaitTimeMs", SqlType::BigInt, true),
    c("ResourceWaitTimeMs", SqlType::BigInt, true),
    c("MaxWaitTimeMs", SqlType::BigInt, true),
    c("AvgWaitTimeMs", dec(18, 4), true),
];

const WORKLOAD_COLUMNS: [Column; 15] = [
    c("SessionID", SqlType::Int, true),
    c("LoginName", SqlType::NVarChar(256), true),
    c("HostName", SqlType::NVarChar(256), true),
    c("DatabaseName", SYSNAME, true),
    c("Status", SqlType::NVarChar(60), true),
    c("Command", SqlType::NVarChar(60), true),
    c("WaitType", SqlType::NVarChar(120), true),
    c("WaitTimeMs", SqlType::BigInt, true),
    c("BlockingSessionID", SqlType::Int, true),
    c("CpuTimeMs", SqlType::BigInt, true),
    c("TotalElapsedMs", SqlType::BigInt, true),
    c("LogicalReads", SqlType::BigInt, true),
    c("Writes", SqlType::BigInt, true),
    c("StatementText", SqlType::NVarCharMax, true),
    c("OBJECT_NAME_Resolved", SqlType::NVarChar(512), true),
];

const ERRORLOG_COLUMNS: [Column; 3] = [
    c("LogDateUTC", DATETIME2_3, true),
    c("ProcessInfo", SqlType::NVarChar(50), true),
    c("LogText", SqlType::NVarChar(4000), true),
];

const MEMORY_COLUMNS: [Column; 9] = [
    c("PageLifeExpectancy", SqlType::BigInt, true),
    c("BufferCacheHitRatio", dec(9, 4), true),
    c("TotalServerMemoryMB", SqlType::BigInt, true),
    c("TargetServerMemoryMB", SqlType::BigInt, true),
    c("BufferPoolSizeMB", SqlType::BigInt, true),
    c("FreeMemoryMB", SqlType::BigInt, true),
    c("MemoryGrantsPending", SqlType::Int, true),
    c("MemoryGrantsOutstanding", SqlType::Int, true),
    c("StealCount", SqlType::BigInt, true),
];

const QUERY_STATS_COLUMNS: [Column; 21] = [
    c("QueryHash", SqlType::Binary(8), true),
    c("QueryPlanHash", SqlType::Binary(8), true),
    c("DatabaseID", SqlType::Int, true),
    c("DatabaseName", SYSNAME, true),
    c("ObjectID", SqlType::Int, true),
    c("ObjectName", SqlType::NVarChar(512), true),
    c("SqlText", SqlType::NVarCharMax, true),
    c("ExecutionCount", SqlType::BigInt, true),
    c("TotalCpuMs", SqlType::BigInt, true),
    c("AvgCpuMs", dec(18, 4), true),
    c("TotalLogicalReads", SqlType::BigInt, true),
    c("AvgLogicalReads", dec(18, 4), true),
    c("TotalPhysicalReads", SqlType::BigInt, true),
    c("AvgPhysicalReads", dec(18, 4), true),
    c("TotalElapsedMs", SqlType::BigInt, true),
    c("AvgElapsedMs", dec(18, 4), true),
    c("TotalWorkerTimeMs", SqlType::BigInt, true),
    c("AvgWorkerTimeMs", dec(18, 4), true),
    c("CreationTime", DATETIME2_3, true),
    c("LastExecutionTime", DATETIME2_3, true),
    c("PlanHandle", SqlType::VarBinary(64), true),
];

const IO_STATS_COLUMNS: [Column; 15] = [
    c("DatabaseID", SqlType::Int, false),
    c("DatabaseName", SYSNAME, false),
    c("FileID", SqlType::Int, false),
    c("FileType", SqlType::NVarChar(10), true),
    c("PhysicalName", SqlType::NVarChar(520), true),
    c("NumReads", SqlType::BigInt, true),
    c("BytesRead", SqlType::BigInt, true),
    c("IoStallReadMs", SqlType::BigInt, true),
    c("NumWrites", SqlType::BigInt, true),
    c("BytesWritten", SqlType::BigInt, true),
    c("IoStallWriteMs", SqlType::BigInt, true),
    c("IoStallMs", SqlType::BigInt, true),
    c("SizeOnDiskMB", dec(18, 2), true),
    c("AvgReadLatencyMs", dec(18, 4), true),
    c("AvgWriteLatencyMs", dec(18, 4), true),
];

const BACKUP_COLUMNS: [Column; 10] = [
    c("DatabaseID", SqlType::Int, false),
    c("DatabaseName", SYSNAME, false),
    c("RecoveryModel", SqlType::NVarChar(60), true),
    c("LastFullBackupDate", DATETIME2_3, true),
    c("LastDiffBackupDate", DATETIME2_3, true),
    c("LastLogBackupDate", DATETIME2_3, true),
    c("HoursSinceFullBackup", SqlType::Int, true),
    c("HoursSinceDiffBackup", SqlType::Int, true),
    c("MinutesSinceLogBackup", SqlType::Int, true),
    c("BackupRiskLevel", SqlType::VarChar(20), true),
];

const QUERY_PLANS_COLUMNS: [Column; 10] = [
    c("QueryHash", SqlType::Binary(8), true),
    c("QueryPlanHash", SqlType::Binary(8), true),
    c("DatabaseName", SYSNAME, true),
    c("SqlText", SqlType::NVarCharMax, true),
    c("ExecutionCount", SqlType::BigInt, true),
    c("AvgCpuMs", dec(18, 4), true),
    c("AvgLogicalReads", dec(18, 4), true),
    c("AvgElapsedMs", dec(18, 4), true),
    c("QueryPlanXML", SqlType::Xml, true),
    c("CaptureReason", SqlType::VarChar(50), true),
];

const CONFIG_COLUMNS: [Column; 8] = [
    c("ConfigurationID", SqlType::Int, false),
    c("ConfigName", SqlType::NVarChar(256), false),
    c("ConfigValue", SqlType::SqlVariant, true),
    c("ConfigValueInUse", SqlType::SqlVariant, true),
    c("ConfigMinimum", SqlType::SqlVariant, true),
    c("ConfigMaximum", SqlType::SqlVariant, true),
    c("IsAdvanced", SqlType::Bit, true),
    c("IsDynamic", SqlType::Bit, true),
];

const DEADLOCK_COLUMNS: [Column; 6] = [
    c("DeadlockTimestamp", DATETIME2_3, true),
    c("DeadlockXML", SqlType::Xml, true),
    c("VictimSessionID", SqlType::Int, true),
    c("VictimDatabaseName", SYSNAME, true),
    c("VictimObjectName", SqlType::NVarChar(512), true),
    c("DeadlockGraphHash", SqlType::VarBinary(64), true),
];

/// `dbo.PerfSnapshotDB`: one row per database.
pub const DB: ChildTable = ChildTable { name: "PerfSnapshotDB", values: &DB_COLUMNS, identity: Some("PerfSnapshotDBID") };
/// `dbo.PerfSnapshotWaitStats`: ~100 wait types per run.
pub const WAIT_STATS: ChildTable = ChildTable { name: "PerfSnapshotWaitStats", values: &WAIT_COLUMNS, identity: Some("PerfSnapshotWaitStatsID") };
/// `dbo.PerfSnapshotWorkload`: 10–50 sessions per run, with NVARCHAR(MAX) statement text.
pub const WORKLOAD: ChildTable = ChildTable { name: "PerfSnapshotWorkload", values: &WORKLOAD_COLUMNS, identity: Some("PerfSnapshotWorkloadID") };
/// `dbo.PerfSnapshotErrorLog`: a few error log lines per run.
pub const ERROR_LOG: ChildTable = ChildTable { name: "PerfSnapshotErrorLog", values: &ERRORLOG_COLUMNS, identity: Some("PerfSnapshotErrorLogID") };
/// `dbo.PerfSnapshotMemory`: one row per run.
pub const MEMORY: ChildTable = ChildTable { name: "PerfSnapshotMemory", values: &MEMORY_COLUMNS, identity: Some("PerfSnapshotMemoryID") };

/// `dbo.PerfSnapshotQueryStats`: ~100 cached queries per run, with their text and hashes.
pub const QUERY_STATS: ChildTable = ChildTable { name: "PerfSnapshotQueryStats", values: &QUERY_STATS_COLUMNS, identity: Some("PerfSnapshotQueryStatsID") };
/// `dbo.PerfSnapshotIOStats`: one row per database file.
pub const IO_STATS: ChildTable = ChildTable { name: "PerfSnapshotIOStats", values: &IO_STATS_COLUMNS, identity: Some("PerfSnapshotIOStatsID") };
/// `dbo.PerfSnapshotBackupHistory`: one row per database.
pub const BACKUP_HISTORY: ChildTable = ChildTable { name: "PerfSnapshotBackupHistory", values: &BACKUP_COLUMNS, identity: Some("PerfSnapshotBackupHistoryID") };
/// `dbo.PerfSnapshotQueryPlans`: a few captured plans per run (XML).
pub const QUERY_PLANS: ChildTable = ChildTable { name: "PerfSnapshotQueryPlans", values: &QUERY_PLANS_COLUMNS, identity: Some("PerfSnapshotQueryPlansID") };
/// `dbo.PerfSnapshotConfig`: `sys.configurations` per run (SQL_VARIANT values).
pub const CONFIG: ChildTable = ChildTable { name: "PerfSnapshotConfig", values: &CONFIG_COLUMNS, identity: Some("PerfSnapshotConfigID") };
/// `dbo.PerfSnapshotDeadlocks`: the deadlocks since the last run (XML graphs), mostly none.
pub const DEADLOCKS: ChildTable = ChildTable { name: "PerfSnapshotDeadlocks", values: &DEADLOCK_COLUMNS, identity: Some("PerfSnapshotDeadlocksID") };

/// Every table the generator writes, in the order `--child-tables all` writes them. A table's
/// place here numbers its value streams: new tables go at the end, so the others keep their
/// bytes.
pub const ALL: [ChildTable; 11] = [DB, WAIT_STATS, WORKLOAD, ERROR_LOG, MEMORY, QUERY_STATS, IO_STATS, BACKUP_HISTORY, QUERY_PLANS, CONFIG, DEADLOCKS];

/// The tables `generate` wrote before the type layer moved BINARY, VARBINARY, XML and
/// SQL_VARIANT: the ones every target and test server stores.
pub const FIRST_FIVE: [ChildTable; 5] = [DB, WAIT_STATS, WORKLOAD, ERROR_LOG, MEMORY];

/// The generator's table called `name` (case-insensitive).
pub fn by_name(name: &str) -> Option<ChildTable> {
    ALL.iter().copied().find(|t| t.name.eq_ignore_ascii_case(name))
}

/// Which child tables to generate, and how many rows.
#[derive(Debug, Clone)]
pub struct ChildrenSpec {
    pub tables: Vec<ChildTable>,
    /// 1.0: the realistic counts of the module docs.
    pub scale: f64,
}

impl ChildrenSpec {
    /// No child tables: `generate` writes exactly what it wrote before child tables existed.
    pub fn none() -> ChildrenSpec {
        ChildrenSpec { tables: Vec::new(), scale: 1.0 }
    }
}

/// Arrow schema of a generated child file: the source form (PerfSnapshotRunID, then the
/// values), each field with its SQL type in the metadata ([`crate::schema::SQL_TYPE_KEY`]).
pub fn file_schema(t: &ChildTable) -> SchemaRef {
    let mut fields = vec![typed_field(&RUN.column(PARENT_KEY))];
    fields.extend(t.values.iter().map(typed_field));
    Arc::new(Schema::new(fields))
}

/// Table numbers in the value streams (each table's columns draw from their own streams).
fn table_no(t: &ChildTable) -> u64 {
    ALL.iter().position(|a| a.name == t.name).unwrap_or(ALL.len()) as u64
}

/// Realistic rows per run of table `t` for server `s`, run row `i` (before scaling).
fn base_count(t: &ChildTable, seed: u64, s: u64, i: u64) -> u64 {
    let r = mix(seed, 1_000 + table_no(t), s, i);
    match t.name {
        "PerfSnapshotDB" | "PerfSnapshotBackupHistory" => databases(seed, s),
        "PerfSnapshotIOStats" => io_files(seed, s),
        "PerfSnapshotQueryStats" => 90 + r % 21,
        "PerfSnapshotQueryPlans" => r % 5,
        "PerfSnapshotConfig" => 78 + (mix(seed, 1_100 + table_no(t), s, 0) % 7),
        // Most runs see no deadlock; some one, a few two.
        "PerfSnapshotDeadlocks" => [0, 0, 0, 0, 0, 0, 0, 1, 1, 2][(r % 10) as usize],
        "PerfSnapshotWaitStats" => 90 + r % 21,
        "PerfSnapshotWorkload" => 10 + r % 41,
        "PerfSnapshotErrorLog" => r % 5,
        "PerfSnapshotMemory" => 1,
        _ => 0,
    }
}

/// Databases of server `s`: PerfSnapshotDB's and BackupHistory's rows per run.
fn databases(seed: u64, s: u64) -> u64 {
    14 + (mix(seed, 1_100, s, 0) % 13)
}

/// Data and log files of server `s` (PerfSnapshotIOStats' rows per run): two per database,
/// a third data file in every third.
fn io_files(seed: u64, s: u64) -> u64 {
    let n = databases(seed, s);
    2 * n + n / 3
}

/// Rows per run of `t` at `scale`: the realistic count times the scale, rounded up or down
/// by a per-run draw so the mean is exact.
pub fn rows_per_run(t: &ChildTable, seed: u64, scale: f64, s: u64, i: u64) -> u64 {
    let want = base_count(t, seed, s, i) as f64 * scale.max(0.0);
    let whole = want.floor();
    let frac = want - whole;
    let draw = (mix(seed, 1_200 + table_no(t), s, i) % 1_000_000) as f64 / 1_000_000.0;
    whole as u64 + u64::from(draw < frac)
}

const DB_NAMES: [&str; 8] = ["master", "tempdb", "model", "msdb", "SalesDB", "Lagerbestand_Ärø", "ReportServer", "顧客DB"];
const STATES: [&str; 3] = ["ONLINE", "ONLINE", "RESTORING"];
const RECOVERY: [&str; 3] = ["FULL", "SIMPLE", "BULK_LOGGED"];
const LOG_REUSE: [&str; 4] = ["NOTHING", "LOG_BACKUP", "ACTIVE_TRANSACTION", "REPLICATION"];
const WAITS: [&str; 12] = [
    "CXPACKET", "PAGEIOLATCH_SH", "LCK_M_X", "WRITELOG", "SOS_SCHEDULER_YIELD", "ASYNC_NETWORK_IO", "RESOURCE_SEMAPHORE", "HADR_SYNC_COMMIT", "PAGELATCH_EX", "CXCONSUMER", "THREADPOOL",
    "LATCH_EX",
];
const STATUS: [&str; 4] = ["running", "runnable", "suspended", "sleeping"];
const COMMANDS: [&str; 5] = ["SELECT", "INSERT", "UPDATE", "DELETE", "AWAITING COMMAND"];
const LOGINS: [&str; 4] = ["CORP\\svc_app", "sa", "reporting_ро", "CORP\\Jürgen.Müller"];
const PROCESS: [&str; 3] = ["Server", "Logon", "spid57"];
const PROC_WORDS: [&str; 6] = ["RefreshOrderSummary", "ApplyPayment", "GetCustomer", "Lagerbuchung", "NightlyETL", "ReportSales"];
const CAPTURE: [&str; 5] = ["HIGH_CPU", "HIGH_LOGICAL_READS", "LONG_DURATION", "MEMORY_GRANT_WARNING", "MISSING_INDEX"];
const RISK: [&str; 4] = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];
/// `sys.configurations` names, in its order, with the minimum and maximum of each (the rest
/// of the ~80 options are 0..1 switches, named after these).
const CONFIGS: [(&str, i64, i64); 16] = [
    ("recovery interval (min)", 0, 32_767),
    ("allow updates", 0, 1),
    ("user connections", 0, 32_767),
    ("locks", 5_000, 2_147_483_647),
    ("open objects", 0, 2_147_483_647),
    ("fill factor (%)", 0, 100),
    ("nested triggers", 0, 1),
    ("remote access", 0, 1),
    ("max worker threads", 128, 65_535),
    ("network packet size (B)", 512, 32_767),
    ("cost threshold for parallelism", 0, 32_767),
    ("max degree of parallelism", 0, 32_767),
    ("min server memory (MB)", 0, 2_147_483_647),
    ("max server memory (MB)", 128, 2_147_483_647),
    ("optimize for ad hoc workloads", 0, 1),
    ("backup compression default", 0, 1),
];
const SWITCHES: [&str; 8] = ["clr enabled", "xp_cmdshell", "Agent XPs", "Database Mail XPs", "remote admin connections", "default trace enabled", "contained database authentication", "external scripts enabled"];

/// Name of database `k` (0-based; DatabaseID `k + 1`) of server `s`: the system databases
/// first, the same names in every table of the server.
fn database_name(s: u64, k: u64) -> String {
    if k < 4 {
        DB_NAMES[k as usize].to_string()
    } else {
        format!("{}_{k:02}", pick(&DB_NAMES[4..], s + k))
    }
}

/// ISO 8601 text of a time in ms, as XML documents write it.
fn iso_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()).unwrap_or_default()
}

/// Columns NULL more often than the one-in-twenty of the others, for a reason of their
/// table: `(group, one in n)`; columns of one group are NULL together (a database never
/// backed up has neither a date nor hours since it).
fn often_null(table: &str, col: &str) -> Option<(u64, u64)> {
    Some(match (table, col) {
        // Ad hoc batches belong to no object.
        ("PerfSnapshotQueryStats", "ObjectID" | "ObjectName") => (1, 3),
        ("PerfSnapshotBackupHistory", "LastFullBackupDate" | "HoursSinceFullBackup") => (2, 10),
        ("PerfSnapshotBackupHistory", "LastDiffBackupDate" | "HoursSinceDiffBackup") => (3, 2),
        // SIMPLE recovery: no log backups.
        ("PerfSnapshotBackupHistory", "LastLogBackupDate" | "MinutesSinceLogBackup") => (4, 3),
        _ => return None,
    })
}
fn pick<'a>(list: &[&'a str], r: u64) -> &'a str {
    list[(r % list.len() as u64) as usize]
}

/// Builds the value columns of one table, row by row. `null(col)` says whether a nullable
/// column is NULL in the current row.
enum Builder {
    I64(Int64Builder),
    I32(Int32Builder),
    Bool(BooleanBuilder),
    Dec(Decimal128Builder, u8, i8),
    Ts(TimestampMillisecondBuilder),
    Str(StringBuilder),
    Fixed(FixedSizeBinaryBuilder),
    Bin(BinaryBuilder),
    /// SQL_VARIANT: base type and value text, and which rows are not NULL.
    Variant(StringBuilder, StringBuilder, Vec<bool>),
}

/// One generated value.
enum V {
    I(i64),
    B(bool),
    D(i128),
    S(String),
    /// BINARY/VARBINARY bytes.
    Bytes(Vec<u8>),
    /// SQL_VARIANT: (base type, canonical value text).
    Var(&'static str, String),
}

impl Builder {
    fn new(sql: SqlType) -> Builder {
        match sql {
            SqlType::BigInt => Builder::I64(Int64Builder::new()),
            SqlType::Int => Builder::I32(Int32Builder::new()),
            SqlType::Bit => Builder::Bool(BooleanBuilder::new()),
            SqlType::Decimal { precision, scale } => Builder::Dec(Decimal128Builder::new(), precision, scale),
            SqlType::DateTime2(_) => Builder::Ts(TimestampMillisecondBuilder::new()),
            SqlType::Binary(n) => Builder::Fixed(FixedSizeBinaryBuilder::new(i32::from(n))),
            SqlType::VarBinary(_) | SqlType::VarBinaryMax => Builder::Bin(BinaryBuilder::new()),
            SqlType::SqlVariant => Builder::Variant(StringBuilder::new(), StringBuilder::new(), Vec::new()),
            _ => Builder::Str(StringBuilder::new()),
        }
    }

    fn push(&mut self, v: Option<V>, what: &str) -> Result<()> {
        match (self, v) {
            (Builder::I64(b), Some(V::I(x))) => b.append_value(x),
            (Builder::I32(b), Some(V::I(x))) => b.append_value(x as i32),
            (Builder::Bool(b), Some(V::B(x))) => b.append_value(x),
            (Builder::Dec(b, _, _), Some(V::D(x))) => b.append_value(x),
            (Builder::Ts(b), Some(V::I(x))) => b.append_value(x),
            (Builder::Str(b), Some(V::S(x))) => b.append_value(x),
            (Builder::Fixed(b), Some(V::Bytes(x))) => b.append_value(x).map_err(Error::arrow(what.to_string()))?,
            (Builder::Bin(b), Some(V::Bytes(x))) => b.append_value(x),
            (Builder::Variant(t, v, valid), Some(V::Var(base, x))) => {
                t.append_value(base);
                v.append_value(x);
                valid.push(true);
            }
            (Builder::I64(b), _) => b.append_null(),
            (Builder::I32(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Dec(b, _, _), _) => b.append_null(),
            (Builder::Ts(b), _) => b.append_null(),
            (Builder::Str(b), _) => b.append_null(),
            (Builder::Fixed(b), _) => b.append_null(),
            (Builder::Bin(b), _) => b.append_null(),
            // A NULL variant is a null struct; its children hold empty text.
            (Builder::Variant(t, v, valid), _) => {
                t.append_value("");
                v.append_value("");
                valid.push(false);
            }
        }
        Ok(())
    }

    fn finish(self, what: &str) -> Result<ArrayRef> {
        Ok(match self {
            Builder::I64(mut b) => Arc::new(b.finish()),
            Builder::I32(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Dec(mut b, p, s) => Arc::new(b.finish().with_precision_and_scale(p, s).map_err(Error::arrow(what.to_string()))?),
            Builder::Ts(mut b) => Arc::new(b.finish()),
            Builder::Str(mut b) => Arc::new(b.finish()),
            Builder::Fixed(mut b) => Arc::new(b.finish()),
            Builder::Bin(mut b) => Arc::new(b.finish()),
            Builder::Variant(mut t, mut v, valid) => {
                let DataType::Struct(fields) = SqlType::SqlVariant.arrow_type() else {
                    return Err(Error::Internal(format!("{what}: SQL_VARIANT is not a struct in the type table")));
                };
                let children: Vec<ArrayRef> = vec![Arc::new(t.finish()), Arc::new(v.finish())];
                Arc::new(StructArray::try_new(fields, children, Some(NullBuffer::from(valid))).map_err(Error::arrow(what.to_string()))?)
            }
        })
    }
}

/// Value of column `col` of child row `k` of run row `i` of server `s` (`r(n)`: the row's
/// n-th random stream). Non-nullable columns always get one.
#[allow(clippy::too_many_arguments)]
fn value(t: &ChildTable, col: &str, seed: u64, s: u64, i: u64, k: u64, snapshot_ms: i64, r: &dyn Fn(u64) -> u64) -> V {
    const DAY_MS: u64 = 86_400_000;
    let big = |n: u64, m: u64| V::I((r(n) % m) as i64);
    let dec = |n: u64, m: u64| V::D((r(n) % m) as i128);
    match (t.name, col) {
        ("PerfSnapshotDB", "DatabaseID") => V::I(k as i64 + 1),
        ("PerfSnapshotDB", "DatabaseName") => V::S(database_name(s, k)),
        ("PerfSnapshotDB", "StateDesc") => V::S(pick(&STATES, mix(s, k, 0, 3)).into()),
        ("PerfSnapshotDB", "RecoveryModelDesc") => V::S(pick(&RECOVERY, mix(s, k, 0, 4)).into()),
        ("PerfSnapshotDB", "IsReadOnly") => V::B(k % 9 == 8),
        ("PerfSnapshotDB", "TotalDataMB" | "TotalLogMB" | "LogSizeUsedMB") => V::D((r(1) % 500_000_000) as i128),
        ("PerfSnapshotDB", "LogReuseWaitDesc") => V::S(pick(&LOG_REUSE, r(2)).into()),
        ("PerfSnapshotDB", "FileCount") => V::I(2 + (r(3) % 6) as i64),
        ("PerfSnapshotDB", "CompatLevel") => V::I([130, 140, 150, 160][(r(4) % 4) as usize]),
        ("PerfSnapshotDB", "VLFCount" | "ActiveVLFCount") => V::I((r(5) % 2_000) as i64),
        ("PerfSnapshotDB", "LogSpaceUsedPercent") => V::D((r(6) % 1_000_000) as i128),
        ("PerfSnapshotWaitStats", "WaitType") => V::S(if (k as usize) < WAITS.len() { WAITS[k as usize].to_string() } else { format!("PREEMPTIVE_OS_{k:03}") }),
        ("PerfSnapshotWaitStats", "AvgWaitTimeMs") => V::D((r(7) % 10_000_000_000) as i128),
        ("PerfSnapshotWaitStats", _) => V::I((r(8 + col.len() as u64) % 50_000_000) as i64 + i as i64),
        ("PerfSnapshotWorkload", "SessionID") => V::I(51 + (r(9) % 900) as i64),
        ("PerfSnapshotWorkload", "BlockingSessionID") => V::I(if r(10) % 5 == 0 { 51 + (r(11) % 900) as i64 } else { 0 }),
        ("PerfSnapshotWorkload", "LoginName") => V::S(pick(&LOGINS, r(12)).into()),
        ("PerfSnapshotWorkload", "HostName") => V::S(format!("APP-{:03}", r(13) % 40)),
        ("PerfSnapshotWorkload", "DatabaseName") => V::S(pick(&DB_NAMES, r(14)).into()),
        ("PerfSnapshotWorkload", "Status") => V::S(pick(&STATUS, r(15)).into()),
        ("PerfSnapshotWorkload", "Command") => V::S(pick(&COMMANDS, r(16)).into()),
        ("PerfSnapshotWorkload", "WaitType") => V::S(pick(&WAITS, r(17)).into()),
        ("PerfSnapshotWorkload", "StatementText") => {
            // About one in eight: longer than NVARCHAR(4000), so more than one PLP chunk.
            let len = if r(18) % 8 == 0 { 4_001 + (r(19) % 8_000) as usize } else { 40 + (r(19) % 400) as usize };
            V::S(statement(len, r(20)))
        }
        ("PerfSnapshotWorkload", "OBJECT_NAME_Resolved") => V::S(format!("dbo.usp_Procedure_{}", r(21) % 300)),
        ("PerfSnapshotWorkload", _) => V::I((r(22 + col.len() as u64) % 10_000_000) as i64),
        ("PerfSnapshotErrorLog", "LogDateUTC") => V::I(snapshot_ms - 1 - (r(23) % 299_000) as i64),
        ("PerfSnapshotErrorLog", "ProcessInfo") => V::S(pick(&PROCESS, r(24)).into()),
        ("PerfSnapshotErrorLog", "LogText") => {
            let base = format!("Login failed for user '{}'. Reason: Password did not match. [CLIENT: 10.0.{}.{}] ", pick(&LOGINS, r(25)), r(26) % 255, r(27) % 255);
            // Now and then a long message, up to the column's 4,000 characters.
            let n = if r(28) % 10 == 0 { 3_000 + (r(29) % 1_000) as usize } else { base.len() };
            V::S(base.chars().cycle().take(n.min(4_000)).collect())
        }
        ("PerfSnapshotMemory", "BufferCacheHitRatio") => V::D(900_000 + (r(30) % 100_000) as i128),
        ("PerfSnapshotMemory", "MemoryGrantsPending" | "MemoryGrantsOutstanding") => V::I((r(31 + col.len() as u64) % 20) as i64),
        ("PerfSnapshotMemory", _) => V::I((r(40 + col.len() as u64) % 262_144) as i64),
        // A cached query keeps its hash from run to run: the hashes follow the child row's
        // place in the list, the plan hash changes now and then (a recompile).
        ("PerfSnapshotQueryStats", "QueryHash") => V::Bytes(bytes(8, s, 71, k, 0)),
        ("PerfSnapshotQueryStats", "QueryPlanHash") => V::Bytes(bytes(8, s, 72, k, u64::from(r(50) % 10 == 0))),
        ("PerfSnapshotQueryStats", "DatabaseID") => V::I(1 + (r(51) % 14) as i64),
        ("PerfSnapshotQueryStats", "DatabaseName") => V::S(database_name(s, r(51) % 14)),
        ("PerfSnapshotQueryStats", "ObjectID") => V::I(245_575_913 + (r(52) % 1_000_000) as i64),
        ("PerfSnapshotQueryStats", "ObjectName") => V::S(format!("dbo.usp_{}_{}", pick(&PROC_WORDS, r(52)), r(52) % 1_000)),
        ("PerfSnapshotQueryStats", "SqlText") => {
            // About one in six longer than 4,000 characters (over 8,000 bytes in UTF-16).
            let len = if r(53) % 6 == 0 { 4_001 + (r(54) % 16_000) as usize } else { 100 + (r(54) % 2_901) as usize };
            V::S(batch_text(len, r(55)))
        }
        ("PerfSnapshotQueryStats", "ExecutionCount") => V::I(1 + (r(56) % 1_000_000) as i64),
        ("PerfSnapshotQueryStats", "CreationTime") => V::I(snapshot_ms - 300_000 - (r(60) % (30 * DAY_MS)) as i64),
        ("PerfSnapshotQueryStats", "LastExecutionTime") => V::I(snapshot_ms - (r(61) % 300_000) as i64),
        ("PerfSnapshotQueryStats", "PlanHandle") => {
            let mut h = vec![if r(52) % 3 == 0 { 0x06 } else { 0x05 }, 0x00, 1 + (r(51) % 14) as u8, 0x00];
            h.extend(bytes(60, s, 73, k, 0));
            V::Bytes(h)
        }
        ("PerfSnapshotQueryStats", c) if c.starts_with("Avg") => dec(62 + c.len() as u64, 1_000_000_000_000),
        ("PerfSnapshotQueryStats", c) => big(70 + c.len() as u64, 10_000_000_000),
        ("PerfSnapshotIOStats", c) => {
            let n = databases(seed, s);
            let (db, file) = (k % n, k / n + 1);
            match c {
                "DatabaseID" => V::I(db as i64 + 1),
                "DatabaseName" => V::S(database_name(s, db)),
                "FileID" => V::I(file as i64),
                "FileType" => V::S(if file == 2 { "LOG" } else { "ROWS" }.into()),
                "PhysicalName" => {
                    // Data on D:, the log on L:, extra data files on E:.
                    let (drive, dir, ext) = match file {
                        1 => ("D", "DATA", "mdf".to_string()),
                        2 => ("L", "LOG", "ldf".to_string()),
                        f => ("E", "DATA", format!("{f}.ndf")),
                    };
                    V::S(format!("{drive}:\\MSSQL16.MSSQLSERVER\\MSSQL\\{dir}\\{}.{ext}", database_name(s, db)))
                }
                "SizeOnDiskMB" => dec(110, 1_000_000_000),
                c if c.starts_with("Avg") => dec(111 + c.len() as u64, 10_000_000),
                c => big(120 + c.len() as u64, 1_000_000_000_000),
            }
        }
        ("PerfSnapshotBackupHistory", c) => {
            let ago = |n: u64, within: u64| (r(n) % within) as i64;
            let (full, diff, log) = (ago(80, 7 * DAY_MS), ago(82, 2 * DAY_MS), ago(83, 3_600_000));
            match c {
                "DatabaseID" => V::I(k as i64 + 1),
                "DatabaseName" => V::S(database_name(s, k)),
                "RecoveryModel" => V::S(pick(&RECOVERY, mix(s, k, 0, 4)).into()),
                "LastFullBackupDate" => V::I(snapshot_ms - full),
                "LastDiffBackupDate" => V::I(snapshot_ms - diff),
                "LastLogBackupDate" => V::I(snapshot_ms - log),
                "HoursSinceFullBackup" => V::I(full / 3_600_000),
                "HoursSinceDiffBackup" => V::I(diff / 3_600_000),
                "MinutesSinceLogBackup" => V::I(log / 60_000),
                _ => V::S(RISK[((full / 3_600_000 / 48) as usize).min(3)].into()),
            }
        }
        ("PerfSnapshotQueryPlans", c) => {
            let q = r(90) % 100;
            let len = 200 + (r(93) % 6_000) as usize;
            match c {
                "QueryHash" => V::Bytes(bytes(8, s, 71, q, 0)),
                "QueryPlanHash" => V::Bytes(bytes(8, s, 72, q, 0)),
                "DatabaseName" => V::S(pick(&DB_NAMES, r(91)).into()),
                "SqlText" => V::S(batch_text(len, r(92))),
                "ExecutionCount" => V::I(1 + (r(96) % 1_000_000) as i64),
                "QueryPlanXML" => {
                    let text = batch_text(len.min(1_000), r(92));
                    V::S(showplan_xml(&text, 3 + (r(94) % 58) as usize, &bytes(8, s, 71, q, 0), &bytes(8, s, 72, q, 0), r(95)))
                }
                "CaptureReason" => V::S(pick(&CAPTURE, r(97)).into()),
                c => dec(98 + c.len() as u64, 1_000_000_000_000),
            }
        }
        // sys.configurations: the same options every run, values that rarely change.
        ("PerfSnapshotConfig", c) => {
            let known = CONFIGS.get(k as usize).copied();
            let (min, max) = known.map_or((0, 1), |(_, lo, hi)| (lo, hi));
            let set = min + (mix(s, k, 0, 9) % (max - min + 1) as u64) as i64;
            let int = |v: i64| V::Var("int", v.to_string());
            match c {
                "ConfigurationID" => V::I(if known.is_some() { 101 + k as i64 } else { 1_500 + k as i64 }),
                "ConfigName" => V::S(match known {
                    Some((name, _, _)) => name.to_string(),
                    None => format!("{} ({})", SWITCHES[(k as usize) % SWITCHES.len()], k),
                }),
                "ConfigValue" => int(set),
                // Now and then a value set but not yet RECONFIGUREd.
                "ConfigValueInUse" => int(if r(130) % 50 == 0 { min } else { set }),
                "ConfigMinimum" => int(min),
                "ConfigMaximum" => int(max),
                "IsAdvanced" => V::B(k % 3 != 0),
                _ => V::B(k % 4 != 0),
            }
        }
        ("PerfSnapshotDeadlocks", c) => {
            let at = snapshot_ms - 1 - (r(140) % 299_000) as i64;
            let victim = 51 + (r(141) % 900) as i64;
            let db = pick(&DB_NAMES, r(142));
            let object = format!("dbo.{}", pick(&["Accounts", "Orders", "Lagerbestand", "顧客"], r(143)));
            match c {
                "DeadlockTimestamp" => V::I(at),
                "DeadlockXML" => V::S(deadlock_xml(2 + (r(144) % 4) as usize, victim, db, &object, &iso_ms(at), r(145))),
                "VictimSessionID" => V::I(victim),
                "VictimDatabaseName" => V::S(db.into()),
                "VictimObjectName" => V::S(object),
                _ => V::Bytes(bytes(32, s, 146, i, k)),
            }
        }
        _ => V::I(0),
    }
}

/// Child rows of `t` for the runs `offset..offset + len` of `segment`, in the file form
/// ([`file_schema`]), in PerfSnapshotRunID order.
pub fn batch(spec: &SyntheticSpec, children: &ChildrenSpec, t: &ChildTable, segment: &Segment, offset: u64, len: usize) -> Result<RecordBatch> {
    let (seed, s) = (spec.seed, segment.server as u64);
    let tn = table_no(t);
    let mut run_ids = Vec::new();
    let mut builders: Vec<Builder> = t.values.iter().map(|c| Builder::new(c.sql)).collect();
    for n in 0..len as u64 {
        let i = segment.first_row + offset + n;
        let run_id = segment.first_run_id + (offset + n) as i64;
        let snapshot = spec.snapshot_ms_of(segment.server, i);
        for k in 0..rows_per_run(t, seed, children.scale, s, i) {
            run_ids.push(run_id);
            // Each child row's own streams: (seed, table and column, server, run row and index).
            let row = i.wrapping_mul(4_096).wrapping_add(k);
            let sparse = mix(seed, 2_000 + tn, s, row) % 8 == 0;
            for (col, (c, b)) in t.values.iter().zip(builders.iter_mut()).enumerate() {
                let r = |n: u64| mix(seed, 10_000 + tn * 1_000 + n, s, row);
                let often = often_null(t.name, c.name).is_some_and(|(group, n)| mix(seed, 4_000 + tn * 100 + group, s, row) % n == 0);
                let null = c.nullable && (sparse || often || mix(seed, 3_000 + tn * 100 + col as u64, s, row) % 20 == 0);
                b.push((!null).then(|| value(t, c.name, seed, s, i, k, snapshot, &r)), t.name)?;
            }
        }
    }
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(run_ids))];
    for b in builders {
        cols.push(b.finish(t.name)?);
    }
    RecordBatch::try_new(file_schema(t), cols).map_err(Error::arrow(format!("synthetic {}", t.name)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    use super::*;

    fn spec() -> SyntheticSpec {
        SyntheticSpec { servers: 3, rows: 600, overlap: 0.1, seed: 11 }
    }

    /// Every table's rows for every segment of every source of `spec()` at `scale`.
    fn all_batches(scale: f64) -> Vec<(ChildTable, RecordBatch)> {
        let (spec, children) = (spec(), ChildrenSpec { tables: ALL.to_vec(), scale });
        let mut out = Vec::new();
        for p in spec.plan() {
            for seg in &p.segments {
                for t in &ALL {
                    out.push((*t, batch(&spec, &children, t, seg, 0, seg.rows as usize).unwrap()));
                }
            }
        }
        out
    }

    #[test]
    fn every_schema_md_table_with_its_column_types() {
        let names: Vec<&str> = ALL.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), 11);
        for t in ["PerfSnapshotQueryStats", "PerfSnapshotIOStats", "PerfSnapshotBackupHistory", "PerfSnapshotQueryPlans", "PerfSnapshotConfig", "PerfSnapshotDeadlocks"] {
            assert!(names.contains(&t), "{t}");
        }
        let ty = |t: &ChildTable, c: &str| t.values.iter().find(|x| x.name == c).map(|x| (x.sql, x.nullable)).unwrap();
        assert_eq!(ty(&QUERY_STATS, "QueryHash"), (SqlType::Binary(8), true));
        assert_eq!(ty(&QUERY_STATS, "PlanHandle"), (SqlType::VarBinary(64), true));
        assert_eq!(ty(&QUERY_STATS, "SqlText"), (SqlType::NVarCharMax, true));
        assert_eq!(ty(&QUERY_STATS, "LastExecutionTime"), (DATETIME2_3, true));
        assert_eq!(ty(&QUERY_PLANS, "QueryPlanXML"), (SqlType::Xml, true));
        assert_eq!(ty(&QUERY_PLANS, "CaptureReason"), (SqlType::VarChar(50), true));
        assert_eq!(ty(&BACKUP_HISTORY, "BackupRiskLevel"), (SqlType::VarChar(20), true));
        assert_eq!(ty(&CONFIG, "ConfigValue"), (SqlType::SqlVariant, true));
        assert_eq!(ty(&CONFIG, "IsAdvanced"), (SqlType::Bit, true));
        assert_eq!(ty(&DB, "IsReadOnly"), (SqlType::Bit, false));
        assert_eq!(ty(&IO_STATS, "SizeOnDiskMB"), (SqlType::Decimal { precision: 18, scale: 2 }, true));
        assert_eq!(ty(&DEADLOCKS, "DeadlockGraphHash"), (SqlType::VarBinary(64), true));
        // The first five keep their stream numbers.
        assert_eq!(FIRST_FIVE.iter().map(table_no).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn same_seed_same_rows_and_restored_copies_have_the_originals_children() {
        assert_eq!(all_batches(0.3).iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(), all_batches(0.3).iter().map(|(_, b)| b.clone()).collect::<Vec<_>>());
        let (spec, children) = (spec(), ChildrenSpec { tables: ALL.to_vec(), scale: 1.0 });
        let plan = spec.plan();
        let (copy, orig) = (&plan[0].segments[0], &plan[1].segments[1]);
        assert!(copy.is_copy && copy.server == orig.server);
        for t in &ALL {
            let a = batch(&spec, &children, t, copy, 0, 20).unwrap();
            let b = batch(&spec, &children, t, orig, copy.first_row, 20).unwrap();
            assert_eq!(a.columns()[1..], b.columns()[1..], "{}", t.name);
        }
        let other = SyntheticSpec { seed: 12, ..spec.clone() };
        let seg = &plan[0].segments[1];
        assert_ne!(batch(&spec, &children, &QUERY_STATS, seg, 0, 5).unwrap(), batch(&other, &children, &QUERY_STATS, seg, 0, 5).unwrap());
    }

    #[test]
    fn counts_per_run_nulls_and_long_values_have_the_documented_shapes() {
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
        let (mut runs, mut rows, mut sparse, mut nulls, mut cells) = (0usize, BTreeMap::<&str, usize>::new(), BTreeMap::<&str, usize>::new(), 0usize, 0usize);
        let (mut long_sql, mut long_xml, mut deadlock_runs) = (0, 0, 0);
        for (t, b) in all_batches(1.0) {
            let ids = b.column(0).as_primitive::<Int64Type>();
            let mut per_run: BTreeMap<i64, usize> = BTreeMap::new();
            for id in ids.values() {
                *per_run.entry(*id).or_default() += 1;
            }
            if t.name == "PerfSnapshotMemory" {
                runs += per_run.len();
            }
            let (lo, hi) = ranges[t.name];
            assert!(per_run.values().all(|n| (lo..=hi).contains(n)), "{}: {:?}", t.name, per_run.values().collect::<Vec<_>>());
            *rows.entry(t.name).or_default() += b.num_rows();
            if t.name == "PerfSnapshotDeadlocks" {
                deadlock_runs += per_run.len();
            }
            let nullable: Vec<usize> = (1..b.num_columns()).filter(|&c| b.schema().field(c).is_nullable()).collect();
            for r in 0..b.num_rows() {
                if nullable.iter().all(|&c| b.column(c).is_null(r)) {
                    *sparse.entry(t.name).or_default() += 1;
                }
            }
            for &c in &nullable {
                nulls += b.column(c).null_count();
                cells += b.num_rows();
            }
            for (c, col) in t.values.iter().enumerate() {
                let a = b.column(c + 1);
                match col.sql {
                    SqlType::NVarCharMax => long_sql += (0..a.len()).filter(|&r| a.is_valid(r) && a.as_string::<i32>().value(r).encode_utf16().count() * 2 > 8_000).count(),
                    SqlType::Xml => long_xml += (0..a.len()).filter(|&r| a.is_valid(r) && a.as_string::<i32>().value(r).len() > 8_000).count(),
                    SqlType::NVarChar(n) | SqlType::VarChar(n) => {
                        let s = a.as_string::<i32>();
                        assert!((0..a.len()).all(|r| s.is_null(r) || s.value(r).encode_utf16().count() <= n as usize), "{}.{} fits {}", t.name, col.name, col.sql.sql_name());
                    }
                    SqlType::VarBinary(n) => {
                        let v = a.as_binary::<i32>();
                        assert!((0..a.len()).all(|r| v.is_null(r) || v.value(r).len() <= n as usize), "{}.{}", t.name, col.name);
                    }
                    _ => {}
                }
                if !col.nullable {
                    assert_eq!(a.null_count(), 0, "{}.{} is NOT NULL", t.name, col.name);
                }
            }
        }
        assert!(runs > 500, "{runs}");
        for (t, n) in &rows {
            let (lo, hi) = ranges[t];
            assert!((lo * runs..=hi * runs).contains(n), "{t}: {n} rows over {runs} runs");
        }
        // Every table with a nullable column has NULL-heavy rows; about one cell in six is NULL.
        for t in ALL.iter().filter(|t| t.values.iter().any(|c| c.nullable)) {
            assert!(sparse.get(t.name).copied().unwrap_or(0) > 0, "{} has NULL-heavy rows", t.name);
        }
        let frac = nulls as f64 / cells as f64;
        assert!((0.12..0.30).contains(&frac), "NULL fraction {frac}");
        assert!(long_sql > 100, "NVARCHAR(MAX) values over 8,000 bytes: {long_sql}");
        assert!(long_xml > 10, "XML values over 8,000 bytes: {long_xml}");
        // Most runs see no deadlock.
        assert!(rows["PerfSnapshotDeadlocks"] < runs / 2 && deadlock_runs > 0, "{} deadlocks in {runs} runs", rows["PerfSnapshotDeadlocks"]);
    }

    #[test]
    fn scale_multiplies_the_mean_count() {
        let n = |scale: f64| all_batches(scale).iter().filter(|(t, _)| t.name == "PerfSnapshotQueryStats").map(|(_, b)| b.num_rows()).sum::<usize>() as f64;
        let (full, tenth) = (n(1.0), n(0.1));
        assert!((tenth / full - 0.1).abs() < 0.01, "{tenth} vs {full}");
        assert_eq!(n(0.0), 0.0);
    }
}
