//! Deterministic synthetic child tables (issue 14): the descriptions of the DBATools child
//! tables that `perfcopy generate` writes, the test server seeds and tests model, in one place,
//! and their rows.
//!
//! Shapes and counts follow `shared/SCHEMA.md`. At `--children-scale 1.0` a run has:
//!
//! | table | rows per run | notes |
//! |---|---|---|
//! | PerfSnapshotDB | 14–26 (fixed per server: one per database) | newer-collector columns included |
//! | PerfSnapshotWaitStats | 90–110 | |
//! | PerfSnapshotWorkload | 10–50 | StatementText NVARCHAR(MAX); about 1 in 8 values is 4,001–12,000 characters (more than one PLP chunk), some non-ASCII |
//! | PerfSnapshotErrorLog | 0–4 | LogText NVARCHAR(4000) |
//! | PerfSnapshotMemory | 1 | |
//!
//! A scale `f` multiplies each count and rounds stochastically (deterministically per run), so
//! a table's mean rows per run is `f` times the above. About one row in eight of every table
//! is NULL-heavy: every nullable column NULL; elsewhere a nullable column is NULL about one
//! time in twenty.
//!
//! Every value is a pure function of (seed, table, column, server, row index of the run, index
//! of the child row): a restored copy of a server's history (the `--overlap` segments) has the
//! same children as the original runs, as a restored DBATools database has; only their
//! PerfSnapshotRunIDs are the copy's own.
//!
//! Only types the pipeline moves today are used (BIGINT, INT, BIT, DECIMAL, DATETIME2(3),
//! NVARCHAR(n), NVARCHAR(MAX)).
// TYPE LAYER: PerfSnapshotQueryStats (BINARY(8), VARBINARY(64)) and PerfSnapshotConfig
// (SQL_VARIANT) go into `ALL` once the TDS type layer moves those types; XML
// (PerfSnapshotQueryPlans, PerfSnapshotDeadlocks) likewise.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, Decimal128Builder, Int32Builder, Int64Array, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::schema::{ChildTable, Column, SqlType, DATETIME2_3, PARENT_KEY, RUN, SQL_TYPE_KEY};
use crate::source::synthetic::{mix, Segment, SyntheticSpec};

const fn c(name: &'static str, sql: SqlType, nullable: bool) -> Column {
    Column { name, sql, nullable }
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

/// Every table the generator writes, in the order `--child-tables` lists them by default.
pub const ALL: [ChildTable; 5] = [DB, WAIT_STATS, WORKLOAD, ERROR_LOG, MEMORY];

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
/// values), each field with its SQL type in the metadata ([`SQL_TYPE_KEY`]).
pub fn file_schema(t: &ChildTable) -> SchemaRef {
    let with_type = |c: &Column| Field::new(c.name, c.sql.arrow_type(), c.nullable).with_metadata(HashMap::from([(SQL_TYPE_KEY.to_string(), c.sql.sql_name())]));
    let mut fields = vec![with_type(&RUN.column(PARENT_KEY))];
    fields.extend(t.values.iter().map(with_type));
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
        "PerfSnapshotDB" => 14 + (mix(seed, 1_100, s, 0) % 13),
        "PerfSnapshotWaitStats" => 90 + r % 21,
        "PerfSnapshotWorkload" => 10 + r % 41,
        "PerfSnapshotErrorLog" => r % 5,
        "PerfSnapshotMemory" => 1,
        _ => 0,
    }
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
const STATEMENT_PARTS: [&str; 6] = [
    "SELECT o.OrderID, o.CustomerID, c.Name, SUM(l.Quantity * l.Price) AS Total ",
    "FROM dbo.Orders AS o JOIN dbo.Customers AS c ON c.CustomerID = o.CustomerID ",
    "JOIN dbo.OrderLines AS l ON l.OrderID = o.OrderID WHERE o.OrderDate >= @from ",
    "AND c.Region = N'Zürich – Nord' /* Kunde ÄÖÜ */ ",
    "GROUP BY o.OrderID, o.CustomerID, c.Name HAVING SUM(l.Quantity) > 10 ",
    "UNION ALL SELECT 0, 0, N'東京', 0 ",
];

/// A statement text of about `len` characters, from the parts above (starting at `at`).
fn statement(len: usize, at: u64) -> String {
    let mut s = String::with_capacity(len + 80);
    let mut k = at as usize;
    while s.chars().count() < len {
        s.push_str(STATEMENT_PARTS[k % STATEMENT_PARTS.len()]);
        k += 1;
    }
    s.chars().take(len).collect()
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
}

/// One generated value.
enum V {
    I(i64),
    B(bool),
    D(i128),
    S(String),
}

impl Builder {
    fn new(sql: SqlType) -> Builder {
        match sql {
            SqlType::BigInt => Builder::I64(Int64Builder::new()),
            SqlType::Int => Builder::I32(Int32Builder::new()),
            SqlType::Bit => Builder::Bool(BooleanBuilder::new()),
            SqlType::Decimal { precision, scale } => Builder::Dec(Decimal128Builder::new(), precision, scale),
            SqlType::DateTime2(_) => Builder::Ts(TimestampMillisecondBuilder::new()),
            _ => Builder::Str(StringBuilder::new()),
        }
    }

    fn push(&mut self, v: Option<V>) {
        match (self, v) {
            (Builder::I64(b), Some(V::I(x))) => b.append_value(x),
            (Builder::I32(b), Some(V::I(x))) => b.append_value(x as i32),
            (Builder::Bool(b), Some(V::B(x))) => b.append_value(x),
            (Builder::Dec(b, _, _), Some(V::D(x))) => b.append_value(x),
            (Builder::Ts(b), Some(V::I(x))) => b.append_value(x),
            (Builder::Str(b), Some(V::S(x))) => b.append_value(x),
            (Builder::I64(b), _) => b.append_null(),
            (Builder::I32(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Dec(b, _, _), _) => b.append_null(),
            (Builder::Ts(b), _) => b.append_null(),
            (Builder::Str(b), _) => b.append_null(),
        }
    }

    fn finish(self, what: &str) -> Result<ArrayRef> {
        Ok(match self {
            Builder::I64(mut b) => Arc::new(b.finish()),
            Builder::I32(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Dec(mut b, p, s) => Arc::new(b.finish().with_precision_and_scale(p, s).map_err(Error::arrow(what.to_string()))?),
            Builder::Ts(mut b) => Arc::new(b.finish()),
            Builder::Str(mut b) => Arc::new(b.finish()),
        })
    }
}

/// Value of column `col` of child row `k` of run row `i` of server `s` (`r(n)`: the row's
/// n-th random stream). Non-nullable columns always get one.
fn value(t: &ChildTable, col: &str, s: u64, i: u64, k: u64, snapshot_ms: i64, r: &dyn Fn(u64) -> u64) -> V {
    match (t.name, col) {
        ("PerfSnapshotDB", "DatabaseID") => V::I(k as i64 + 1),
        ("PerfSnapshotDB", "DatabaseName") => V::S(if k < 4 { DB_NAMES[k as usize].to_string() } else { format!("{}_{k:02}", pick(&DB_NAMES[4..], s + k)) }),
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
                let null = c.nullable && (sparse || mix(seed, 3_000 + tn * 100 + col as u64, s, row) % 20 == 0);
                b.push((!null).then(|| value(t, c.name, s, i, k, snapshot, &r)));
            }
        }
    }
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(run_ids))];
    for b in builders {
        cols.push(b.finish(t.name)?);
    }
    RecordBatch::try_new(file_schema(t), cols).map_err(Error::arrow(format!("synthetic {}", t.name)))
}
