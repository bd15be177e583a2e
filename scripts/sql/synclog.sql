-- MonitoringDB.dbo.DBAToolsSyncLog, the toolkit's incremental-sync ledger (SCHEMA.md).
IF OBJECT_ID(N'dbo.DBAToolsSyncLog', N'U') IS NULL
CREATE TABLE dbo.DBAToolsSyncLog (
    SyncLogID INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    ServerID INT NOT NULL REFERENCES dbo.Servers(ServerID),
    ServerName NVARCHAR(256) NOT NULL,
    DBAToolsDatabase SYSNAME NOT NULL,
    LastSyncUTC DATETIME2 NULL,
    LastRunID BIGINT NULL,
    LastSyncDuration INT NULL,
    RowsCopied INT NULL,
    SyncStatus VARCHAR(50) NOT NULL,
    ErrorMessage NVARCHAR(4000) NULL,
    CreatedUTC DATETIME2 NOT NULL DEFAULT GETUTCDATE(),
    ModifiedUTC DATETIME2 NULL
);
