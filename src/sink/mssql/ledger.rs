//! The sync ledger in MonitoringDB: `dbo.DBAToolsSyncLog` in the toolkit's shape (one `Success`
//! row per source and run, whose `LastRunID` advances with each committed unit, a `Failed` row
//! for a run that stopped), and perfcopy's companion rows in `dbo.PerfcopySyncSource` that say
//! which source each ledger row belongs to. Only a companion row of perfcopy's own makes a
//! ledger row a watermark perfcopy uses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::mssql::{ConnSpec, SqlClient};
use crate::sink::{FinalMark, Recorded, SourceMeta, SyncHistory, Watermark, WriteUnit};
use crate::source::{Source, SourceFacts};

use super::{query_rows, user_tables_exist};

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

/// `CREATE TABLE` of the child tables copied with the runs up to a companion row's LastRunID
/// (none: runs only). A watermark is used only by a copy of those tables or fewer.
pub const SYNCTABLES_DDL: &str = "IF OBJECT_ID(N'dbo.PerfcopySyncTables', N'U') IS NULL CREATE TABLE dbo.PerfcopySyncTables (\
    SyncLogID INT NOT NULL, \
    TableName NVARCHAR(128) NOT NULL, \
    PRIMARY KEY (SyncLogID, TableName))";

/// Inserts a ledger row (P1..P7, status 'Success') and its companion (P8..P15) in one
/// statement batch; the result is the new SyncLogID.
const INSERT_SYNC_ROWS: &str = "INSERT INTO dbo.DBAToolsSyncLog (ServerID, ServerName, DBAToolsDatabase, LastSyncUTC, LastRunID, LastSyncDuration, RowsCopied, SyncStatus) \
     OUTPUT INSERTED.SyncLogID VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, 'Success'); \
     INSERT INTO dbo.PerfcopySyncSource (SyncLogID, SourceKey, SourceInstance, SourceDatabase, DatabaseCreated, RecoveryFork, TableObjectID, TableCreated, LastRunID, LastSnapshotUTC) \
     VALUES (SCOPE_IDENTITY(), @P8, @P9, @P10, @P11, @P12, @P13, @P14, @P5, @P15)";

/// Moves a ledger row and its companion to a new watermark.
const UPDATE_SYNC_ROWS: &str = "UPDATE dbo.DBAToolsSyncLog SET LastSyncUTC = @P1, LastRunID = @P2, LastSyncDuration = @P3, RowsCopied = @P4, ModifiedUTC = @P1 WHERE SyncLogID = @P5; \
     UPDATE dbo.PerfcopySyncSource SET LastRunID = @P2, LastSnapshotUTC = @P6 WHERE SyncLogID = @P5";

/// The ledger rows of one load: per source (index in the load's list), its row in this run,
/// once written. Shared by the load's writers and its commit.
#[derive(Default)]
pub(super) struct Ledger {
    rows: Mutex<BTreeMap<usize, SyncRow>>,
}

impl Ledger {
    /// Inside the unit's transaction (after its rows): moves the source's watermark to the
    /// unit's, when the unit may record one. Returns the source's ledger row to remember once
    /// the transaction committed ([`Ledger::committed`]).
    pub(super) async fn record_unit(&self, client: &mut SqlClient, meta: &SourceMeta, unit: &WriteUnit<'_>, started: Instant) -> std::result::Result<Option<SyncRow>, tiberius::error::Error> {
        let mut sync = self.rows.lock().ok().and_then(|m| m.get(&unit.source).copied());
        if let (true, false, Some(last), Some(snapshot)) = (meta.watermarks, meta.split, unit.last_run_id, unit.last_snapshot_ms) {
            let rows = sync.map_or(0, |s| s.rows) + unit.rows.num_rows() as i64;
            sync = Some(record_mark(client, meta, sync, last, snapshot, rows, started).await?);
        }
        Ok(sync)
    }

    /// Remembers a source's ledger row after the transaction that wrote it committed.
    pub(super) fn committed(&self, source: usize, row: Option<SyncRow>) {
        if let Some(s) = row {
            if let Ok(mut m) = self.rows.lock() {
                m.insert(source, s);
            }
        }
    }

    /// At commit, once every unit is durable: brings each source's ledger row to its final
    /// watermark.
    pub(super) async fn record_final(&self, conn: &ConnSpec, sources: &[SourceMeta], marks: &[FinalMark]) -> Result<()> {
        // Units recorded their watermarks as they committed, except where a unit could not
        // vouch for its rows yet (split sources' parts commit out of order; a row dropped for
        // another source's survivor is only safe once that survivor committed).
        let synced = self.rows.lock().map_err(|_| Error::Internal("ledger state poisoned".into()))?.clone();
        let mut todo = Vec::new();
        for m in marks {
            let Some(&first) = m.sources.first() else { continue };
            let Some(meta) = sources.get(first).filter(|meta| meta.watermarks) else { continue };
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
        let mut client = conn.connect().await?;
        for (meta, row, last, snapshot, rows) in todo {
            record_mark(&mut client, meta, row, last, snapshot, rows, started)
                .await
                .map_err(|e| conn.sql_error(&format!("recording the watermark of '{}'", meta.identity), e))?;
        }
        Ok(())
    }
}

/// Creates the ledger and its companion table where they are missing.
pub(super) async fn create_tables(conn: &ConnSpec) -> Result<()> {
    let mut client = conn.connect().await?;
    client.execute(SYNCLOG_DDL, &[]).await.map_err(|e| conn.sql_error("creating dbo.DBAToolsSyncLog", e))?;
    client.execute(SYNCSOURCE_DDL, &[]).await.map_err(|e| conn.sql_error("creating dbo.PerfcopySyncSource", e))?;
    client.execute(SYNCTABLES_DDL, &[]).await.map_err(|e| conn.sql_error("creating dbo.PerfcopySyncTables", e))?;
    Ok(())
}

/// Records a failed run as the toolkit's procedure does: a `Failed` row per recorded source,
/// with `reason` (already scrubbed of secrets).
pub(super) async fn record_failure(conn: &ConnSpec, sources: &[SourceMeta], reason: &str) -> Result<()> {
    let mut client = conn.connect().await?;
    let mut seen = BTreeSet::new();
    for m in sources.iter().filter(|m| m.watermarks && seen.insert(m.identity.clone())) {
        insert_synclog(conn, &mut client, m, None, None, "Failed", Some(reason)).await?;
    }
    Ok(())
}

/// What the ledger recorded for a source: its newest companion row, checked against the
/// ledger row it belongs to.
pub(super) async fn recorded(conn: &ConnSpec, source: &dyn Source) -> Result<Recorded> {
    let mut client = conn.connect().await?;
    let client = &mut client;
    let exists = user_tables_exist(conn, client, &["dbo.PerfcopySyncSource", "dbo.DBAToolsSyncLog", "dbo.PerfcopySyncTables"]).await?;
    let has = |i: usize| exists[i];
    if !has(0) || !has(1) {
        return Ok(Recorded::Nothing);
    }
    // Only perfcopy's own companion rows say which source a ledger row belongs to; a
    // ledger row without one (the toolkit's procedure, an older perfcopy) is never used.
    let rows = query_rows(
        conn,
        client,
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
    let ledger = query_rows(conn, client, "SELECT SyncStatus, LastRunID FROM dbo.DBAToolsSyncLog WHERE SyncLogID = @P1", &[&sync_id]).await?;
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
        None if !has(2) => Recorded::Mark(Watermark { source: source.identity().to_string(), last_run_id: last, last_snapshot_ms: snapshot, facts: Some(facts), ..Default::default() }),
        None => {
            let tables = query_rows(conn, client, "SELECT TableName FROM dbo.PerfcopySyncTables WHERE SyncLogID = @P1", &[&sync_id]).await?;
            let child_tables = tables.iter().filter_map(|r| r.try_get::<&str, _>(0).ok().flatten().map(str::to_string)).collect();
            Recorded::Mark(Watermark { source: source.identity().to_string(), last_run_id: last, last_snapshot_ms: snapshot, facts: Some(facts), child_tables, ..Default::default() })
        }
    })
}

/// What the ledger says of a source's syncs: its newest companion row's ledger row (the last
/// successful sync perfcopy recorded), and the newest 'Failed' row under the source's ledger
/// names (ServerName, DBAToolsDatabase), as the toolkit's procedure identifies sources too.
pub(super) async fn history(conn: &ConnSpec, source: &dyn Source) -> Result<SyncHistory> {
    let mut client = conn.connect().await?;
    let client = &mut client;
    let exists = user_tables_exist(conn, client, &["dbo.PerfcopySyncSource", "dbo.DBAToolsSyncLog"]).await?;
    let has = |i: usize| exists[i];
    let mut h = SyncHistory::default();
    if !has(1) {
        return Ok(h);
    }
    let utc = |t: Option<chrono::NaiveDateTime>| t.map(|t| crate::pipeline::copy::iso(t.and_utc().timestamp_millis()));
    if has(0) {
        let ours = query_rows(conn, client, "SELECT TOP (1) SyncLogID FROM dbo.PerfcopySyncSource WHERE SourceKey = @P1 ORDER BY SyncLogID DESC", &[&source.identity()]).await?;
        if let Some(id) = ours.first().and_then(|r| r.try_get::<i32, _>(0).ok().flatten()) {
            let rows = query_rows(conn, client, "SELECT LastSyncUTC, RowsCopied, SyncStatus FROM dbo.DBAToolsSyncLog WHERE SyncLogID = @P1", &[&id]).await?;
            if let Some(r) = rows.first().filter(|r| r.try_get::<&str, _>(2).ok().flatten().is_some_and(|s| s.eq_ignore_ascii_case("Success"))) {
                h.last_success_utc = utc(r.try_get(0).ok().flatten());
                h.rows_copied = r.try_get::<i32, _>(1).ok().flatten().map(|n| n.max(0) as u64);
            }
        }
    }
    let database = source.database_name();
    for name in source.ledger_names() {
        let rows = query_rows(
            conn,
            client,
            "SELECT TOP (1) CreatedUTC, ErrorMessage FROM dbo.DBAToolsSyncLog WHERE ServerName = @P1 AND DBAToolsDatabase = @P2 AND SyncStatus = 'Failed' ORDER BY SyncLogID DESC",
            &[&name.as_str(), &database.as_str()],
        )
        .await?;
        if let Some(r) = rows.first() {
            let at = utc(r.try_get(0).ok().flatten());
            if h.last_failure_utc.is_none() || at > h.last_failure_utc {
                h.last_failure_utc = at;
                h.last_failure = Some(r.try_get::<&str, _>(1).ok().flatten().unwrap_or("").to_string());
            }
        }
    }
    Ok(h)
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
pub(super) struct SyncRow {
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
            for t in &meta.child_tables {
                client.execute("INSERT INTO dbo.PerfcopySyncTables (SyncLogID, TableName) VALUES (@P1, @P2)", &[&id, &t.as_str()]).await?;
            }
            Ok(SyncRow { id, rows, last_run_id: last })
        }
        Some(r) => {
            client.execute(UPDATE_SYNC_ROWS, &[&now, &last, &duration, &copied, &r.id, &snapshot]).await?;
            Ok(SyncRow { id: r.id, rows, last_run_id: last })
        }
    }
}
