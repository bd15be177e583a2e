//! MonitoringDB over TDS: `dbo.Servers` as the registry, `dbo.PerfSnapshotRun` loaded with
//! TDS bulk load (`INSERT BULK`, the BCP path), and `dbo.DBAToolsSyncLog` as the ledger.
//!
//! Each unit (one deduplicated source batch) commits in one transaction together with its
//! source's watermark row in `dbo.DBAToolsSyncLog`, in the toolkit's shape (one `Success` row
//! per source and run, whose `LastRunID` advances with each batch), so a re-run resumes after
//! the last committed batch and the toolkit's own T-SQL sync procedure sees the same state.
//! A failed unit rolls back completely; transient errors (dropped connection, deadlock victim
//! 1205, lock timeout 1222, statement timeout) are retried on a new connection with backoff, a
//! bounded number of times. After a failure whose outcome is unknown (the connection died
//! around COMMIT) the unit's first key is looked up: the pipeline only sends keys the target
//! did not hold, so finding it means the unit committed.
//!
//! An application lock (`sp_getapplock`, session owner, on its own connection) keeps two
//! perfcopy runs from loading the same MonitoringDB at once. Table names are fixed; values are
//! always parameters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int32Type, TimestampMillisecondType};
use futures_util::TryStreamExt;
use tiberius::numeric::Numeric;
use tiberius::time::{Date, DateTime2, Time};
use tiberius::{ColumnData, SqlBulkCopyOption, TokenRow};

use crate::error::{Error, Result};
use crate::mssql::{is_transient, runtime, ConnSpec, SqlClient};
use crate::schema::{target_columns, target_schema, DeclaredColumn};
use crate::sink::{FinalMark, Load, LoadWriter, Recorded, SourceMeta, Target, Watermark, WriteUnit, WrittenRows};
use crate::source::{BatchIter, Source, SourceFacts};
use crate::transform::remap::ServerIdMap;

/// The target table.
pub const TARGET_TABLE: &str = "dbo.PerfSnapshotRun";

/// `CREATE TABLE` of the sync ledger, as SCHEMA.md documents it (created when missing).
pub const SYNCLOG_DDL: &str = "IF OBJECT_ID(N'dbo.DBAToolsSyncLog', N'U') IS NULL CREATE TABLE dbo.DBAToolsSyncLog (\
    SyncLogID INT IDENTITY(1,1) NOT NULL PRIMARY KEY, \
    ServerID INT NOT NULL REFERENCES dbo.Servers(ServerID), \
    ServerName NVARCHAR(256) NOT NULL, \
    DBAToolsDatabase SYSNAME NOT NULL, \
    LastSyncUTC DATETIME2 NULL, \
    LastRunID BIGINT NULL, \
    LastSyncDuration INT NULL, \
    RowsCopied INT NULL, \
    SyncStatus VARCHAR(50) NOT NULL, \
    ErrorMessage NVARCHAR(4000) NULL, \
    CreatedUTC DATETIME2 NOT NULL DEFAULT GETUTCDATE(), \
    ModifiedUTC DATETIME2 NULL)";

/// `CREATE TABLE` of perfcopy's companion to the ledger: for each DBAToolsSyncLog row perfcopy
/// writes, which source it belongs to (the identity and incarnation facts its server reports)
/// and the SnapshotUTC of the row its LastRunID points at. The ledger itself keeps the toolkit's
/// shape; perfcopy uses a watermark only through a companion row of its own. No foreign key, so
/// the toolkit's own clean-up of old ledger rows keeps working (an orphaned companion row is
/// simply not trusted).
pub const SYNCSOURCE_DDL: &str = "IF OBJECT_ID(N'dbo.PerfcopySyncSource', N'U') IS NULL BEGIN CREATE TABLE dbo.PerfcopySyncSource (\
    SyncLogID INT NOT NULL PRIMARY KEY, \
    SourceKey NVARCHAR(400) NOT NULL, \
    SourceInstance NVARCHAR(128) NULL, \
    SourceDatabase NVARCHAR(128) NULL, \
    DatabaseCreated DATETIME2(3) NULL, \
    RecoveryFork NVARCHAR(36) NULL, \
    TableObjectID INT NULL, \
    TableCreated DATETIME2(3) NULL, \
    LastRunID BIGINT NOT NULL, \
    LastSnapshotUTC DATETIME2(3) NOT NULL); \
    CREATE INDEX IX_PerfcopySyncSource_SourceKey ON dbo.PerfcopySyncSource (SourceKey, SyncLogID) END";

/// Inserts a ledger row (P1..P7, status 'Success') and its companion (P8..P15) in one
/// statement batch; the result is the new SyncLogID.
const INSERT_SYNC_ROWS: &str = "INSERT INTO dbo.DBAToolsSyncLog (ServerID, ServerName, DBAToolsDatabase, LastSyncUTC, LastRunID, LastSyncDuration, RowsCopied, SyncStatus) \
     OUTPUT INSERTED.SyncLogID VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, 'Success'); \
     INSERT INTO dbo.PerfcopySyncSource (SyncLogID, SourceKey, SourceInstance, SourceDatabase, DatabaseCreated, RecoveryFork, TableObjectID, TableCreated, LastRunID, LastSnapshotUTC) \
     VALUES (SCOPE_IDENTITY(), @P8, @P9, @P10, @P11, @P12, @P13, @P14, @P5, @P15)";

/// Moves a ledger row and its companion to a new watermark.
const UPDATE_SYNC_ROWS: &str = "UPDATE dbo.DBAToolsSyncLog SET LastSyncUTC = @P1, LastRunID = @P2, LastSyncDuration = @P3, RowsCopied = @P4, ModifiedUTC = @P1 WHERE SyncLogID = @P5; \
     UPDATE dbo.PerfcopySyncSource SET LastRunID = @P2, LastSnapshotUTC = @P6 WHERE SyncLogID = @P5";

/// Bulk-load settings.
#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// `TABLOCK`: a bulk update lock for each load (faster; blocks readers of the table).
    pub tablock: bool,
    /// Send each unit sorted by (ServerID, SnapshotUTC) with an `ORDER` hint.
    pub order_hint: bool,
    /// Attempts per unit on transient errors.
    pub retries: u32,
    /// First backoff; doubles per attempt.
    pub backoff: Duration,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions { tablock: true, order_hint: false, retries: 5, backoff: Duration::from_millis(200) }
    }
}

/// A MonitoringDB.
pub struct MonitoringDb {
    conn: ConnSpec,
    label: String,
    options: BulkOptions,
    /// `Some(table)` for `perfcopy bench`: rows go to this scratch table, created by the load
    /// and dropped at its end; dbo.Servers, dbo.PerfSnapshotRun and the ledger are not touched.
    scratch: Option<String>,
}

impl MonitoringDb {
    /// A target; connects lazily.
    pub fn new(conn: ConnSpec, options: BulkOptions) -> MonitoringDb {
        MonitoringDb { label: conn.label().to_string(), conn, options, scratch: None }
    }

    /// A benchmark target writing to a scratch table `dbo.perfcopy_bench_<pid>` that the load
    /// creates and drops (the real PerfSnapshotRun is never written).
    pub fn scratch(conn: ConnSpec, options: BulkOptions) -> MonitoringDb {
        let table = format!("dbo.perfcopy_bench_{}", std::process::id());
        MonitoringDb { label: format!("{} (scratch table {table})", conn.label()), conn, options, scratch: Some(table) }
    }

    fn table(&self) -> &str {
        self.scratch.as_deref().unwrap_or(TARGET_TABLE)
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        runtime()?.block_on(f)
    }

    /// Checks that the target table has the columns perfcopy writes, with their types.
    async fn check_table(&self, client: &mut SqlClient) -> Result<()> {
        let rows = query_rows(
            &self.conn,
            client,
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION \
             FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = @P1 AND TABLE_NAME = @P2",
            &[&"dbo", &"PerfSnapshotRun"],
        )
        .await?;
        if rows.is_empty() {
            return Err(self.conn.error(format!("table {TARGET_TABLE} does not exist in database '{}'", self.conn.database())));
        }
        let mut found: BTreeMap<String, DeclaredColumn> = BTreeMap::new();
        for r in &rows {
            let name: &str = r.try_get(0).ok().flatten().unwrap_or("");
            let t: &str = r.try_get(1).ok().flatten().unwrap_or("");
            found.insert(
                name.to_ascii_lowercase(),
                DeclaredColumn {
                    data_type: t.to_ascii_lowercase(),
                    precision: r.try_get(2).ok().flatten(),
                    scale: r.try_get(3).ok().flatten(),
                    max_chars: r.try_get(4).ok().flatten(),
                    datetime_precision: r.try_get(5).ok().flatten(),
                },
            );
        }
        for c in target_columns() {
            let Some(d) = found.get(&c.name.to_ascii_lowercase()) else {
                return Err(self.conn.error(format!("{TARGET_TABLE} has no column '{}'", c.name)));
            };
            if let Err(why) = c.sql.fits_in(d) {
                return Err(self.conn.error(format!("{TARGET_TABLE}.{} is {}, {why}", c.name, d.sql_name())));
            }
        }
        Ok(())
    }
}

/// Runs a query and collects its first result's rows.
async fn query_rows(conn: &ConnSpec, client: &mut SqlClient, sql: &str, params: &[&dyn tiberius::ToSql]) -> Result<Vec<tiberius::Row>> {
    client
        .query(sql, params)
        .await
        .map_err(|e| conn.sql_error(&format!("running '{}'", first_words(sql)), e))?
        .into_first_result()
        .await
        .map_err(|e| conn.sql_error(&format!("reading the result of '{}'", first_words(sql)), e))
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
}

/// Unix ms as a DATETIME2(3).
fn datetime2(ms: i64) -> DateTime2 {
    let (days, in_day) = crate::tds::unix_ms_to_datetime2(ms);
    DateTime2::new(Date::new(days as u32), Time::new(in_day as u64, 3))
}

/// Holds the application lock on its own connection until dropped.
struct AppLock {
    _rt: tokio::runtime::Runtime,
    _client: SqlClient,
}

impl Target for MonitoringDb {
    fn label(&self) -> &str {
        &self.label
    }

    fn lock(&self) -> Result<Box<dyn std::any::Any + Send>> {
        if self.scratch.is_some() {
            return Ok(Box::new(()));
        }
        let rt = runtime()?;
        let client = rt.block_on(async {
            let mut client = self.conn.connect().await?;
            self.check_table(&mut client).await?;
            let rows = query_rows(
                &self.conn,
                &mut client,
                "DECLARE @r int; EXEC @r = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = @P2; SELECT @r AS result;",
                &[&"perfcopy: dbo.PerfSnapshotRun", &0i32],
            )
            .await?;
            let code: i32 = rows.first().and_then(|r| r.try_get(0).ok().flatten()).unwrap_or(-999);
            if code < 0 {
                return Err(self.conn.error("another perfcopy run is loading this MonitoringDB (it holds the application lock 'perfcopy: dbo.PerfSnapshotRun'); wait for it to finish"));
            }
            Ok(client)
        })?;
        Ok(Box::new(AppLock { _rt: rt, _client: client }))
    }

    fn known_servers(&self) -> Result<ServerIdMap> {
        if self.scratch.is_some() {
            return Ok(ServerIdMap::new());
        }
        self.block_on(async {
            let mut client = self.conn.connect().await?;
            let rows = query_rows(&self.conn, &mut client, "SELECT ServerID, ServerName FROM dbo.Servers", &[]).await?;
            let mut map = ServerIdMap::new();
            for r in rows {
                let id: i32 = r.try_get(0).ok().flatten().unwrap_or(0);
                let name: &str = r.try_get(1).ok().flatten().unwrap_or("");
                map.insert(name, id).map_err(|m| self.conn.error(format!("dbo.Servers: {m}")))?;
            }
            Ok(map)
        })
    }

    fn register_servers(&self, names: &BTreeSet<String>, _known: &ServerIdMap) -> Result<Vec<(String, i32)>> {
        self.block_on(async {
            let mut client = self.conn.connect().await?;
            client.simple_query("BEGIN TRANSACTION").await.map_err(|e| self.conn.sql_error("registering servers", e))?.into_results().await.map_err(|e| self.conn.sql_error("registering servers", e))?;
            let mut added = Vec::new();
            for name in names {
                let rows = query_rows(
                    &self.conn,
                    &mut client,
                    "INSERT INTO dbo.Servers (ServerName) OUTPUT INSERTED.ServerID VALUES (@P1)",
                    &[&name.as_str()],
                )
                .await?;
                let id: i32 = rows
                    .first()
                    .and_then(|r| r.try_get(0).ok().flatten())
                    .ok_or_else(|| self.conn.error(format!("dbo.Servers returned no ServerID for '{name}'")))?;
                added.push((name.clone(), id));
            }
            client.simple_query("COMMIT TRANSACTION").await.map_err(|e| self.conn.sql_error("registering servers", e))?.into_results().await.map_err(|e| self.conn.sql_error("registering servers", e))?;
            Ok(added)
        })
    }

    fn existing_keys(&self, ranges: &BTreeMap<i32, (i64, i64)>) -> Result<BatchIter> {
        if self.scratch.is_some() {
            return Ok(Box::new(std::iter::empty()));
        }
        let ranges: Vec<(i32, i64, i64)> = ranges.iter().map(|(&s, &(lo, hi))| (s, lo, hi)).collect();
        let conn = self.conn.clone();
        Ok(Box::new(PerServer::new(conn, ranges, true)))
    }

    fn existing_rows(&self, ranges: &BTreeMap<i32, Vec<(i64, i64)>>) -> Result<BatchIter> {
        if self.scratch.is_some() {
            return Ok(Box::new(std::iter::empty()));
        }
        let ranges: Vec<(i32, i64, i64)> = ranges
            .iter()
            .flat_map(|(&s, r)| r.iter().map(move |&(lo, hi)| (s, lo, hi.saturating_sub(1))))
            .collect();
        Ok(Box::new(PerServer::new(self.conn.clone(), ranges, false)))
    }

    fn watermark(&self, source: &dyn Source) -> Result<Recorded> {
        if source.facts().is_none() || self.scratch.is_some() {
            return Ok(Recorded::Nothing);
        }
        self.block_on(async {
            let mut client = self.conn.connect().await?;
            let exists = query_rows(&self.conn, &mut client, "SELECT OBJECT_ID(N'dbo.PerfcopySyncSource', N'U') AS a, OBJECT_ID(N'dbo.DBAToolsSyncLog', N'U') AS b", &[]).await?;
            let has = |i| exists.first().and_then(|r| r.try_get::<i32, _>(i).ok().flatten()).is_some();
            if !has(0) || !has(1) {
                return Ok(Recorded::Nothing);
            }
            // Only perfcopy's own companion rows say which source a ledger row belongs to; a
            // ledger row without one (the toolkit's procedure, an older perfcopy) is never used.
            let rows = query_rows(
                &self.conn,
                &mut client,
                "SELECT TOP (1) SyncLogID, LastRunID, LastSnapshotUTC, SourceInstance, SourceDatabase, DatabaseCreated, RecoveryFork, TableObjectID, TableCreated \
                 FROM dbo.PerfcopySyncSource WHERE SourceKey = @P1 ORDER BY SyncLogID DESC",
                &[&source.identity()],
            )
            .await?;
            let Some(r) = rows.first() else { return Ok(Recorded::Nothing) };
            let text = |i: usize| r.try_get::<&str, _>(i).ok().flatten().map(str::to_string);
            let time = |i: usize| r.try_get::<chrono::NaiveDateTime, _>(i).ok().flatten();
            let sync_id: i32 = r.try_get(0).ok().flatten().unwrap_or(0);
            let last: Option<i64> = r.try_get(1).ok().flatten();
            let snapshot = time(2).map(|t| t.and_utc().timestamp_millis());
            let facts = SourceFacts {
                instance: text(3).unwrap_or_default(),
                database: text(4).unwrap_or_default(),
                database_created: time(5).map(crate::source::fact_time),
                recovery_fork: text(6),
                table_object_id: r.try_get::<i32, _>(7).ok().flatten().map(i64::from),
                table_created: time(8).map(crate::source::fact_time),
            };
            let Some(last) = last else {
                return Ok(Recorded::Unusable { last_run_id: None, reason: format!("dbo.PerfcopySyncSource row {sync_id} has no LastRunID") });
            };
            let ledger = query_rows(&self.conn, &mut client, "SELECT SyncStatus, LastRunID FROM dbo.DBAToolsSyncLog WHERE SyncLogID = @P1", &[&sync_id]).await?;
            let reason = match ledger.first() {
                None => Some(format!("its dbo.DBAToolsSyncLog row {sync_id} no longer exists")),
                Some(l) => {
                    let status = l.try_get::<&str, _>(0).ok().flatten().unwrap_or("");
                    let ledger_last: Option<i64> = l.try_get(1).ok().flatten();
                    if !status.eq_ignore_ascii_case("Success") {
                        Some(format!("its dbo.DBAToolsSyncLog row {sync_id} has SyncStatus '{status}'"))
                    } else if ledger_last != Some(last) {
                        Some(format!(
                            "dbo.DBAToolsSyncLog row {sync_id} says LastRunID {}, perfcopy recorded {last}",
                            ledger_last.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
                        ))
                    } else {
                        None
                    }
                }
            };
            Ok(match reason {
                Some(reason) => Recorded::Unusable { last_run_id: Some(last), reason },
                None => Recorded::Mark(Watermark { source: source.identity().to_string(), last_run_id: last, last_snapshot_ms: snapshot, facts: Some(facts) }),
            })
        })
    }

    fn begin(&self, _workers: usize, sources: Vec<SourceMeta>) -> Result<Box<dyn Load>> {
        // The ledger is created only now that the run is known to write (not when it is
        // refused, e.g. for unknown servers), and only when some source is recorded in it.
        if let Some(table) = &self.scratch {
            let ddl = format!(
                "CREATE TABLE {table} (PerfSnapshotRunID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, {})",
                target_columns()
                    .iter()
                    .map(|c| format!("{} {} {}", c.name, c.sql.sql_name(), if c.nullable { "NULL" } else { "NOT NULL" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.block_on(async {
                let mut client = self.conn.connect().await?;
                client.execute(ddl.as_str(), &[]).await.map_err(|e| self.conn.sql_error("creating the scratch table", e))?;
                Ok(())
            })?;
        } else if sources.iter().any(|m| m.watermarks) {
            self.block_on(async {
                let mut client = self.conn.connect().await?;
                client.execute(SYNCLOG_DDL, &[]).await.map_err(|e| self.conn.sql_error("creating dbo.DBAToolsSyncLog", e))?;
                client.execute(SYNCSOURCE_DDL, &[]).await.map_err(|e| self.conn.sql_error("creating dbo.PerfcopySyncSource", e))?;
                Ok(())
            })?;
        }
        Ok(Box::new(MonitoringLoad {
            conn: self.conn.clone(),
            options: self.options.clone(),
            sources: Arc::new(sources),
            table: self.table().to_string(),
            scratch: self.scratch.is_some(),
            sync_rows: Arc::new(std::sync::Mutex::new(BTreeMap::new())),
        }))
    }
}

/// Reads target rows server by server (and range by range), one query each.
struct PerServer {
    conn: ConnSpec,
    ranges: std::vec::IntoIter<(i32, i64, i64)>,
    keys_only: bool,
    rt: Option<tokio::runtime::Runtime>,
    client: Option<SqlClient>,
    pending: std::vec::IntoIter<RecordBatch>,
}

impl PerServer {
    fn new(conn: ConnSpec, ranges: Vec<(i32, i64, i64)>, keys_only: bool) -> PerServer {
        PerServer { conn, ranges: ranges.into_iter(), keys_only, rt: None, client: None, pending: Vec::new().into_iter() }
    }

    async fn fetch(conn: &ConnSpec, client: &mut Option<SqlClient>, keys_only: bool, (server, lo, hi): (i32, i64, i64)) -> Result<Vec<RecordBatch>> {
        if client.is_none() {
            *client = Some(conn.connect().await?);
        }
        let c = client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?;
        let cols: Vec<&str> = if keys_only { vec!["SnapshotUTC", "ServerID"] } else { target_columns().iter().map(|c| c.name).collect() };
        let sql = format!(
            "SELECT {} FROM {TARGET_TABLE} WHERE ServerID = @P1 AND SnapshotUTC >= @P2 AND SnapshotUTC <= @P3",
            cols.join(", ")
        );
        let lo = chrono::DateTime::from_timestamp_millis(lo.max(-62_135_596_800_000)).map(|d| d.naive_utc());
        let hi = chrono::DateTime::from_timestamp_millis(hi.min(253_402_300_799_999)).map(|d| d.naive_utc());
        let stream = c.query(sql.as_str(), &[&server, &lo, &hi]).await.map_err(|e| conn.sql_error("reading existing rows", e))?;
        let mut rows = stream.into_row_stream();
        let schema = if keys_only {
            Arc::new(arrow::datatypes::Schema::new(vec![target_schema().field(0).clone(), target_schema().field(1).clone()]))
        } else {
            target_schema()
        };
        let mut batches = Vec::new();
        let mut cols_b = crate::tds::arrow::Builders::new(&schema, 65_536)?;
        while let Some(row) = rows.try_next().await.map_err(|e| conn.sql_error("reading existing rows", e))? {
            cols_b.push_row(&row).map_err(|m| conn.error(format!("reading existing rows: {m}")))?;
            if cols_b.len() >= 65_536 {
                batches.push(cols_b.finish(&schema)?);
            }
        }
        if !cols_b.is_empty() {
            batches.push(cols_b.finish(&schema)?);
        }
        Ok(batches)
    }
}

impl Iterator for PerServer {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = self.pending.next() {
                return Some(Ok(b));
            }
            let range = self.ranges.next()?;
            if self.rt.is_none() {
                match runtime() {
                    Ok(rt) => self.rt = Some(rt),
                    Err(e) => return Some(Err(e)),
                }
            }
            let rt = self.rt.as_ref()?;
            match rt.block_on(Self::fetch(&self.conn, &mut self.client, self.keys_only, range)) {
                Ok(batches) => self.pending = batches.into_iter(),
                Err(e) => {
                    self.ranges = Vec::new().into_iter();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// A load into MonitoringDB.
struct MonitoringLoad {
    conn: ConnSpec,
    options: BulkOptions,
    sources: Arc<Vec<SourceMeta>>,
    table: String,
    scratch: bool,
    /// Per source (index): its ledger row in this run, once written (shared by the writers and
    /// the final commit).
    sync_rows: SyncRows,
}

/// Per source (index): its ledger row in this run.
type SyncRows = Arc<std::sync::Mutex<BTreeMap<usize, SyncRow>>>;

impl MonitoringLoad {
    fn drop_scratch(&self) -> Result<()> {
        let sql = format!("DROP TABLE {}", self.table);
        runtime()?.block_on(async {
            let mut client = self.conn.connect().await?;
            client.execute(sql.as_str(), &[]).await.map_err(|e| self.conn.sql_error("dropping the scratch table", e))?;
            Ok(())
        })
    }
}

impl Load for MonitoringLoad {
    fn writer(&self, _worker: usize) -> Result<Box<dyn LoadWriter>> {
        Ok(Box::new(MonitoringWriter {
            conn: self.conn.clone(),
            options: self.options.clone(),
            sources: self.sources.clone(),
            rt: Some(runtime()?),
            table: self.table.clone(),
            client: None,
            sync_rows: self.sync_rows.clone(),
            written: WrittenRows::new(),
            started: Instant::now(),
            pending_mark: BTreeMap::new(),
        }))
    }

    fn commit(self: Box<Self>, marks: Vec<FinalMark>) -> Result<()> {
        if self.scratch {
            return self.drop_scratch();
        }
        // Units recorded their watermarks as they committed, except where a unit could not
        // vouch for its rows yet (split sources' parts commit out of order; a row dropped for
        // another source's survivor is only safe once that survivor committed). Every unit is
        // durable now: each source's ledger row is brought to its final watermark.
        let synced = self.sync_rows.lock().map_err(|_| Error::Internal("ledger state poisoned".into()))?.clone();
        let mut todo = Vec::new();
        for m in &marks {
            let Some(&first) = m.sources.first() else { continue };
            let Some(meta) = self.sources.get(first).filter(|meta| meta.watermarks) else { continue };
            let Some(snapshot) = m.watermark.last_snapshot_ms else { continue };
            let row = if m.sources.len() == 1 && !meta.split { synced.get(&first).copied() } else { None };
            if row.is_some_and(|r| r.last_run_id == m.watermark.last_run_id && r.rows == m.rows_written as i64) {
                continue;
            }
            todo.push((meta, row, m.watermark.last_run_id, snapshot, m.rows_written as i64));
        }
        if todo.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        runtime()?.block_on(async {
            let mut client = self.conn.connect().await?;
            for (meta, row, last, snapshot, rows) in todo {
                record_mark(&mut client, meta, row, last, snapshot, rows, started)
                    .await
                    .map_err(|e| self.conn.sql_error(&format!("recording the watermark of '{}'", meta.identity), e))?;
            }
            Ok(())
        })
    }

    fn abort(self: Box<Self>, reason: &str) {
        if self.scratch {
            if let Err(e) = self.drop_scratch() {
                tracing::warn!("could not drop the scratch table {}: {e}", self.table);
            }
            return;
        }
        // Committed units stay (they are complete and recorded in the ledger); the unit that
        // failed was rolled back. The failure is recorded as the toolkit's procedure does.
        let reason: String = self.conn.scrub(reason).chars().take(4000).collect();
        let r = runtime().and_then(|rt| {
            rt.block_on(async {
                let mut client = self.conn.connect().await?;
                let mut seen = BTreeSet::new();
                for m in self.sources.iter().filter(|m| m.watermarks && seen.insert(m.identity.clone())) {
                    insert_synclog(&self.conn, &mut client, m, None, None, "Failed", Some(&reason)).await?;
                }
                Ok(())
            })
        });
        if let Err(e) = r {
            tracing::warn!("could not record the failure in dbo.DBAToolsSyncLog: {e}");
        }
    }
}

/// Inserts a ledger row; returns its SyncLogID.
async fn insert_synclog(
    conn: &ConnSpec,
    client: &mut SqlClient,
    meta: &SourceMeta,
    last_run_id: Option<i64>,
    rows: Option<i32>,
    status: &str,
    error: Option<&str>,
) -> Result<i32> {
    let now = chrono::Utc::now().naive_utc();
    let found = query_rows(
        conn,
        client,
        "INSERT INTO dbo.DBAToolsSyncLog (ServerID, ServerName, DBAToolsDatabase, LastSyncUTC, LastRunID, RowsCopied, SyncStatus, ErrorMessage) \
         OUTPUT INSERTED.SyncLogID VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8)",
        &[&meta.server_id, &meta.server_name.as_str(), &meta.database.as_str(), &now, &last_run_id, &rows, &status, &error],
    )
    .await?;
    Ok(found.first().and_then(|r| r.try_get::<i32, _>(0).ok().flatten()).unwrap_or(0))
}

/// The ledger row of one source in this run.
#[derive(Debug, Clone, Copy)]
struct SyncRow {
    id: i32,
    /// RowsCopied recorded.
    rows: i64,
    /// LastRunID recorded.
    last_run_id: i64,
}

/// Parses a [`SourceFacts`] time back for a DATETIME2 parameter.
fn fact_param(t: &Option<String>) -> Option<chrono::NaiveDateTime> {
    t.as_deref().and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.3f").ok())
}

/// Writes a source's watermark: a new 'Success' ledger row with its companion row when the
/// source has none in this run yet, else both rows moved to `last`. Part of the caller's
/// transaction, if it has one.
async fn record_mark(
    client: &mut SqlClient,
    meta: &SourceMeta,
    row: Option<SyncRow>,
    last: i64,
    snapshot_ms: i64,
    rows: i64,
    started: Instant,
) -> std::result::Result<SyncRow, tiberius::error::Error> {
    let duration = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    let now = chrono::Utc::now().naive_utc();
    let snapshot = chrono::DateTime::from_timestamp_millis(snapshot_ms).map(|d| d.naive_utc());
    let copied = rows.min(i32::MAX as i64) as i32;
    match row {
        None => {
            let f = meta.facts.clone().unwrap_or_else(|| SourceFacts {
                instance: String::new(),
                database: meta.database.clone(),
                database_created: None,
                recovery_fork: None,
                table_object_id: None,
                table_created: None,
            });
            let table_id = f.table_object_id.and_then(|i| i32::try_from(i).ok());
            let found = client
                .query(
                    INSERT_SYNC_ROWS,
                    &[
                        &meta.server_id,
                        &meta.server_name.as_str(),
                        &meta.database.as_str(),
                        &now,
                        &last,
                        &duration,
                        &copied,
                        &meta.identity.as_str(),
                        &f.instance.as_str(),
                        &f.database.as_str(),
                        &fact_param(&f.database_created),
                        &f.recovery_fork.as_deref(),
                        &table_id,
                        &fact_param(&f.table_created),
                        &snapshot,
                    ],
                )
                .await?
                .into_first_result()
                .await?;
            let id: i32 = found.first().and_then(|r| r.try_get(0).ok().flatten()).unwrap_or(0);
            Ok(SyncRow { id, rows, last_run_id: last })
        }
        Some(r) => {
            client.execute(UPDATE_SYNC_ROWS, &[&now, &last, &duration, &copied, &r.id, &snapshot]).await?;
            Ok(SyncRow { id: r.id, rows, last_run_id: last })
        }
    }
}

struct MonitoringWriter {
    conn: ConnSpec,
    options: BulkOptions,
    sources: Arc<Vec<SourceMeta>>,
    rt: Option<tokio::runtime::Runtime>,
    table: String,
    client: Option<SqlClient>,
    /// Per source: its ledger row in this run, once inserted (shared with the load).
    sync_rows: SyncRows,
    written: WrittenRows,
    started: Instant,
    /// Per source: a watermark (and its row's SnapshotUTC) advanced by empty units, not yet
    /// recorded.
    pending_mark: BTreeMap<usize, (i64, Option<i64>)>,
}

/// Outcome of one attempt at a unit.
enum Attempt {
    Done,
    Transient(Error),
}

impl MonitoringWriter {
    async fn unit(&mut self, unit: &WriteUnit<'_>) -> Result<Attempt> {
        if self.client.is_none() {
            match self.conn.connect().await {
                Ok(c) => self.client = Some(c),
                Err(e) => return Ok(Attempt::Transient(e)),
            }
        }
        let meta = &self.sources[unit.source];
        let conn = self.conn.clone();
        let client = self.client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?;
        let result: std::result::Result<Option<SyncRow>, tiberius::error::Error> = async {
            client.simple_query("BEGIN TRANSACTION").await?.into_results().await?;
            if unit.rows.num_rows() > 0 {
                bulk_insert(client, &self.table, unit.rows, &self.options).await?;
            }
            let mut sync = self.sync_rows.lock().ok().and_then(|m| m.get(&unit.source).copied());
            if let (true, false, Some(last), Some(snapshot)) = (meta.watermarks, meta.split, unit.last_run_id, unit.last_snapshot_ms) {
                let rows = sync.map_or(0, |s| s.rows) + unit.rows.num_rows() as i64;
                sync = Some(record_mark(client, meta, sync, last, snapshot, rows, self.started).await?);
            }
            client.simple_query("COMMIT TRANSACTION").await?.into_results().await?;
            Ok(sync)
        }
        .await;
        match result {
            Ok(sync) => {
                if let Some(s) = sync {
                    if let Ok(mut m) = self.sync_rows.lock() {
                        m.insert(unit.source, s);
                    }
                }
                Ok(Attempt::Done)
            }
            Err(e) if is_transient(&e) => {
                // The connection may be unusable; a new one is made for the retry (the server
                // rolls back what this one left open).
                self.client = None;
                Ok(Attempt::Transient(conn.sql_error(&format!("loading a batch of '{}'", meta.identity), e)))
            }
            Err(e) => {
                if let Some(c) = self.client.as_mut() {
                    let _ = c.simple_query("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION").await;
                }
                Err(conn.sql_error(&format!("loading a batch of '{}'", meta.identity), e))
            }
        }
    }

    /// Whether a unit whose commit outcome is unknown did commit: its first key is there.
    async fn committed(&mut self, unit: &WriteUnit<'_>) -> Result<bool> {
        if unit.rows.num_rows() == 0 || self.table != TARGET_TABLE {
            return Ok(false);
        }
        let client = match self.client.as_mut() {
            Some(c) => c,
            None => {
                self.client = Some(self.conn.connect().await?);
                self.client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?
            }
        };
        let ts = unit.rows.column(0).as_primitive::<TimestampMillisecondType>().value(0);
        let server = unit.rows.column(1).as_primitive::<Int32Type>().value(0);
        let at = chrono::DateTime::from_timestamp_millis(ts).map(|d| d.naive_utc());
        let rows = query_rows(
            &self.conn,
            client,
            "SELECT COUNT(*) AS n FROM dbo.PerfSnapshotRun WHERE ServerID = @P1 AND SnapshotUTC = @P2",
            &[&server, &at],
        )
        .await?;
        Ok(rows.first().and_then(|r| r.try_get::<i32, _>(0).ok().flatten()).unwrap_or(0) > 0)
    }
}

impl LoadWriter for MonitoringWriter {
    fn write(&mut self, unit: WriteUnit<'_>) -> Result<()> {
        let rt = self.rt.take().ok_or_else(|| Error::Internal("writer runtime missing".into()))?;
        let r = rt.block_on(async {
            let mut attempt = 0u32;
            loop {
                match self.unit(&unit).await? {
                    Attempt::Done => return Ok(()),
                    Attempt::Transient(e) => {
                        if self.committed(&unit).await.unwrap_or(false) {
                            tracing::warn!("{e}; the batch had committed before the connection broke");
                            return Ok(());
                        }
                        attempt += 1;
                        if attempt >= self.options.retries {
                            return Err(Error::Target {
                                target: self.conn.label().to_string(),
                                message: format!("giving up after {attempt} attempts: {e}"),
                            });
                        }
                        tracing::warn!("{e}; retrying ({attempt}/{})", self.options.retries);
                        tokio::time::sleep(self.options.backoff * 2u32.saturating_pow(attempt - 1)).await;
                    }
                }
            }
        });
        self.rt = Some(rt);
        r?;
        for (server, part) in crate::transform::split_by_server(unit.rows)? {
            *self.written.entry(server).or_default() += part.num_rows() as u64;
        }
        if unit.rows.num_rows() == 0 {
            if let Some(l) = unit.last_run_id {
                self.pending_mark.insert(unit.source, (l, unit.last_snapshot_ms));
            }
        } else {
            self.pending_mark.remove(&unit.source);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<WrittenRows> {
        // Record watermarks that advanced through batches with nothing new to write.
        let marks: Vec<(usize, (i64, Option<i64>))> = std::mem::take(&mut self.pending_mark).into_iter().collect();
        if !marks.is_empty() {
            let empty = RecordBatch::new_empty(target_schema());
            for (source, (last, snapshot)) in marks {
                self.write(WriteUnit { source, rows: &empty, last_run_id: Some(last), last_snapshot_ms: snapshot })?;
                self.pending_mark.clear();
            }
        }
        Ok(self.written)
    }
}

fn opt_str(a: &arrow::array::StringArray, r: usize) -> Option<std::borrow::Cow<'_, str>> {
    (!a.is_null(r)).then(|| std::borrow::Cow::Borrowed(a.value(r)))
}

/// Bytes handed to tiberius per `send_encoded_rows` call: a few packets' worth, so little of
/// an encoded batch is buffered twice.
const SEND_CHUNK_BYTES: usize = 64 * 1024;

/// Sends one batch with TDS bulk load. Rows are encoded by perfcopy's own encoder
/// ([`crate::tds::encode`]) when the target's columns are the documented types, else by
/// tiberius row by row (as [`bulk_insert_token_rows`] always does).
pub async fn bulk_insert(client: &mut SqlClient, table: &str, rows: &RecordBatch, options: &BulkOptions) -> std::result::Result<(), tiberius::error::Error> {
    bulk_load(client, table, rows, options, true).await
}

/// Sends one batch with TDS bulk load the simplest correct way tiberius offers: one
/// `TokenRow` of owned values per row (the fallback of [`bulk_insert`], and the baseline
/// that `examples/tds_throughput.rs` compares against).
pub async fn bulk_insert_token_rows(client: &mut SqlClient, table: &str, rows: &RecordBatch, options: &BulkOptions) -> std::result::Result<(), tiberius::error::Error> {
    bulk_load(client, table, rows, options, false).await
}

async fn bulk_load(client: &mut SqlClient, table: &str, rows: &RecordBatch, options: &BulkOptions, own_encoder: bool) -> std::result::Result<(), tiberius::error::Error> {
    let sorted;
    let rows = if options.order_hint {
        sorted = sort_for_order_hint(rows).map_err(|e| tiberius::error::Error::Conversion(e.to_string().into()))?;
        &sorted
    } else {
        rows
    };
    let names: Vec<&str> = target_columns().iter().map(|c| c.name).collect();
    let mut flags = tiberius::SqlBulkCopyOptions::empty();
    if options.tablock {
        flags |= SqlBulkCopyOption::TableLock;
    }
    flags |= SqlBulkCopyOption::KeepNulls;
    let hints: Vec<(&str, tiberius::SortOrder)> = if options.order_hint {
        vec![("ServerID", tiberius::SortOrder::Ascending), ("SnapshotUTC", tiberius::SortOrder::Ascending)]
    } else {
        Vec::new()
    };
    let mut req = client.bulk_insert_with_options(table, &names, flags, &hints).await?;
    let layout = match crate::tds::encode::BulkLayout::for_columns(req.columns()) {
        Ok(layout) if own_encoder => Some(layout),
        Ok(_) => None,
        Err(why) => {
            tracing::debug!("bulk load of {table} uses tiberius' row encoding: {why}");
            None
        }
    };
    match layout {
        Some(layout) => {
            // Encode everything before the first packet goes out: a value that does not fit
            // fails the batch while nothing of the load is on the wire.
            let mut buf = Vec::new();
            layout
                .encode(rows, 0..rows.num_rows(), &mut buf)
                .map_err(|m| tiberius::error::Error::Conversion(format!("bulk load into {table}: {m}").into()))?;
            for chunk in buf.chunks(SEND_CHUNK_BYTES) {
                req.send_encoded_rows(chunk).await?;
            }
        }
        None => {
            // INT values go to a BIGINT target column (a wider one is allowed) as BIGINT.
            let bigint: Vec<bool> = names
                .iter()
                .map(|n| {
                    req.columns().iter().any(|m| {
                        m.col_name.eq_ignore_ascii_case(n)
                            && match &m.base.ty {
                                tiberius::TypeInfo::FixedLen(tiberius::FixedLenType::Int8) => true,
                                tiberius::TypeInfo::VarLenSized(v) => v.r#type() == tiberius::VarLenType::Intn && v.len() == 8,
                                _ => false,
                            }
                    })
                })
                .collect();
            for r in 0..rows.num_rows() {
                req.send(token_row(rows, r, &bigint)).await?;
            }
        }
    }
    req.finalize().await?;
    Ok(())
}

/// Row `r` of a target batch as tiberius values; `bigint[i]`: target column `i` is a BIGINT.
fn token_row<'a>(rows: &'a RecordBatch, r: usize, bigint: &[bool]) -> TokenRow<'a> {
    let int = |i: usize, v: Option<i32>| if bigint.get(i).copied().unwrap_or(false) { ColumnData::I64(v.map(i64::from)) } else { ColumnData::I32(v) };
    let cols = rows.columns();
    let ts = cols[0].as_primitive::<TimestampMillisecondType>();
    let ids = cols[1].as_primitive::<Int32Type>();
    let name = cols[2].as_string::<i32>();
    let version = cols[3].as_string::<i32>();
    let cpu = cols[4].as_primitive::<Decimal128Type>();
    let wait_type = cols[5].as_string::<i32>();
    let wait_ms = cols[6].as_primitive::<Decimal128Type>();
    let mut row = TokenRow::with_capacity(12);
    row.push(ColumnData::DateTime2(Some(datetime2(ts.value(r)))));
    row.push(int(1, Some(ids.value(r))));
    row.push(ColumnData::String(opt_str(name, r)));
    row.push(ColumnData::String(opt_str(version, r)));
    row.push(ColumnData::Numeric((!cpu.is_null(r)).then(|| Numeric::new_with_scale(cpu.value(r), 4))));
    row.push(ColumnData::String(opt_str(wait_type, r)));
    row.push(ColumnData::Numeric((!wait_ms.is_null(r)).then(|| Numeric::new_with_scale(wait_ms.value(r), 4))));
    for (i, c) in cols.iter().enumerate().skip(7) {
        let c = c.as_primitive::<Int32Type>();
        row.push(int(i, (!c.is_null(r)).then(|| c.value(r))));
    }
    row
}

fn sort_for_order_hint(rows: &RecordBatch) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
    let idx = lexsort_to_indices(
        &[
            SortColumn { values: rows.column(1).clone(), options: None },
            SortColumn { values: rows.column(0).clone(), options: None },
        ],
        None,
    )?;
    take_record_batch(rows, &idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_ms_to_datetime2_and_back() {
        let d = datetime2(1_577_836_800_123);
        assert_eq!(d.date().days(), 737_424);
        assert_eq!(d.time().increments(), 123);
        assert_eq!(d.time().scale(), 3);
        let before_epoch = datetime2(-1);
        assert_eq!(before_epoch.date().days() as i64, crate::tds::DAYS_TO_UNIX_EPOCH - 1);
        assert_eq!(before_epoch.time().increments(), 86_399_999);
    }
}
