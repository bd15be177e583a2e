//! The sync ledger in MonitoringDB: `dbo.DBAToolsSyncLog` in the toolkit's shape, and
//! perfcopy's companion rows in `dbo.PerfcopySyncSource` that say which source each ledger row
//! belongs to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::mssql::{ConnSpec, SqlClient};
use crate::sink::SourceMeta;
use crate::source::SourceFacts;

use super::query_rows;

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

/// Per source (index): its ledger row in this run.
pub(super) type SyncRows = Arc<std::sync::Mutex<BTreeMap<usize, SyncRow>>>;

/// Inserts a ledger row; returns its SyncLogID.
pub(super) async fn insert_synclog(
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
    pub id: i32,
    /// RowsCopied recorded.
    pub rows: i64,
    /// LastRunID recorded.
    pub last_run_id: i64,
}

/// Parses a [`SourceFacts`] time back for a DATETIME2 parameter.
fn fact_param(t: &Option<String>) -> Option<chrono::NaiveDateTime> {
    t.as_deref().and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.3f").ok())
}

/// Writes a source's watermark: a new 'Success' ledger row with its companion row when the
/// source has none in this run yet, else both rows moved to `last`. Part of the caller's
/// transaction, if it has one.
pub(super) async fn record_mark(
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
