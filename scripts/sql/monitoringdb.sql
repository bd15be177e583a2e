-- MonitoringDB: the server registry and the central PerfSnapshotRun (SCHEMA.md).
-- dbo.DBAToolsSyncLog is in synclog.sql: perfcopy creates it when it is missing.
CREATE TABLE dbo.Servers (
    ServerID INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    ServerName NVARCHAR(256) NOT NULL UNIQUE,
    Environment NVARCHAR(50) NULL,
    IsActive BIT NOT NULL DEFAULT 1,
    CreatedDate DATETIME2 NOT NULL DEFAULT GETUTCDATE(),
    ModifiedDate DATETIME2 NULL
);
CREATE TABLE dbo.PerfSnapshotRun (
    PerfSnapshotRunID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    SnapshotUTC DATETIME2(3) NOT NULL,
    ServerID INT NOT NULL REFERENCES dbo.Servers(ServerID),
    ServerName SYSNAME NOT NULL,
    SqlVersion NVARCHAR(200) NOT NULL,
    CpuSignalWaitPct DECIMAL(9,4) NULL,
    TopWaitType NVARCHAR(120) NULL,
    TopWaitMsPerSec DECIMAL(18,4) NULL,
    SessionsCount INT NULL,
    RequestsCount INT NULL,
    BlockingSessionCount INT NULL,
    DeadlockCountRecent INT NULL,
    MemoryGrantWarningCount INT NULL
);
CREATE NONCLUSTERED INDEX IX_PerfSnapshotRun_ServerID_SnapshotUTC ON dbo.PerfSnapshotRun (ServerID, SnapshotUTC);
