-- DBATools.dbo.PerfSnapshotRun as the sql-monitor-agent collector creates it (SCHEMA.md).
-- Older collectors lack the ServerID column; tests drop it to get that shape.
CREATE TABLE dbo.PerfSnapshotRun (
    PerfSnapshotRunID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    SnapshotUTC DATETIME2(3) NOT NULL,
    ServerID INT NULL,
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
