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

use crate::error::{Error, Result};
use crate::mssql::{runtime, ConnSpec, SqlClient};
use crate::schema::{target_columns, DeclaredColumn};
use crate::sink::{FinalMark, Load, LoadWriter, Recorded, SourceMeta, Target, Watermark};
use crate::source::{BatchIter, Source, SourceFacts};
use crate::transform::remap::ServerIdMap;

mod existing;
mod ledger;
mod writer;

use existing::PerServer;
use ledger::{insert_synclog, record_mark, SyncRows};
pub use ledger::{SYNCLOG_DDL, SYNCSOURCE_DDL};
use writer::MonitoringWriter;
pub use writer::{bulk_insert, bulk_insert_token_rows};

/// The target table.
pub const TARGET_TABLE: &str = "dbo.PerfSnapshotRun";

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
pub(super) async fn query_rows(conn: &ConnSpec, client: &mut SqlClient, sql: &str, params: &[&dyn tiberius::ToSql]) -> Result<Vec<tiberius::Row>> {
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
        Ok(Box::new(MonitoringWriter::new(self.conn.clone(), self.options.clone(), self.sources.clone(), self.table.clone(), self.sync_rows.clone())?))
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

