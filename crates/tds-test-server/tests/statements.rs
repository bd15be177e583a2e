//! INSERT/OUTPUT, transactions, INFORMATION_SCHEMA, app locks and DBAToolsSyncLog creation,
//! driven through tiberius.

mod common;

use std::time::{Duration, Instant};

use arrow::array::{Array, BooleanArray, Int32Array, StringArray};
use common::*;
use tds_test_server::{ServerConfig, TestServer};

fn server() -> TestServer {
    let srv = TestServer::start(ServerConfig { packet_size: Some(512), password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_monitoringdb("MonitoringDB");
    srv
}

#[tokio::test]
async fn insert_output_assigns_identities_and_unique_violation_is_2627() {
    let srv = server();
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let rows = c
        .query("INSERT INTO MonitoringDB.dbo.Servers (ServerName, Environment) OUTPUT INSERTED.ServerID, INSERTED.ServerName VALUES (@P1, @P2), (@P3, NULL)", &[&"SQL01", &"Production", &"HOST\\Ünï"])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get::<i32, _>("ServerID").unwrap(), r.get::<&str, _>("ServerName").unwrap().to_string())).collect();
    assert_eq!(got, vec![(1, "SQL01".to_string()), (2, "HOST\\Ünï".to_string())]);

    // Case-insensitive duplicate, like the default CI collation.
    let e = c.execute("INSERT INTO dbo.Servers (ServerName) VALUES (@P1)", &[&"sql01"]).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 2627), "{e:?}");
    // The failed insert consumed an identity value, as SQL Server does.
    let r = c.query("INSERT INTO dbo.Servers (ServerName) OUTPUT INSERTED.ServerID VALUES (N'SQL03')", &[]).await.unwrap().into_row().await.unwrap().unwrap();
    assert_eq!(r.get::<i32, _>(0), Some(4));

    let b = srv.table_batch("MonitoringDB", "dbo.Servers").unwrap();
    let ids = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
    assert_eq!(ids.values().to_vec(), vec![1, 2, 4]);
    let env = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!((env.value(0), env.is_null(1)), ("Production", true));
    let active = b.column(3).as_any().downcast_ref::<BooleanArray>().unwrap();
    assert!(active.iter().all(|v| v == Some(true)), "IsActive defaults to 1");
    assert_eq!(b.column(4).null_count(), 0, "CreatedDate defaults to now");

    // UPDATE and DELETE report counts.
    let r = c.execute("UPDATE dbo.Servers SET Environment = @P1, ModifiedDate = SYSUTCDATETIME() WHERE ServerID >= @P2", &[&"Staging", &2i32]).await.unwrap();
    assert_eq!(r.rows_affected(), &[2]);
    let r = c.execute("DELETE FROM dbo.Servers WHERE ServerName = @P1", &[&"SQL03"]).await.unwrap();
    assert_eq!(r.rows_affected(), &[1]);
    assert_eq!(srv.row_count("MonitoringDB", "dbo.Servers").unwrap(), 2);
    let e = c.execute("INSERT INTO dbo.Servers (ServerName) VALUES (NULL)", &[]).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 515), "{e:?}");
}

async fn count(c: &mut Conn) -> i32 {
    c.query("SELECT COUNT(*) FROM dbo.Servers", &[]).await.unwrap().into_row().await.unwrap().unwrap().get::<i32, _>(0).unwrap()
}

#[tokio::test]
async fn transaction_rows_are_visible_to_others_only_after_commit() {
    let srv = server();
    let mut a = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let mut b = connect(srv.addr(), "MonitoringDB", None).await.unwrap();

    // T-SQL BEGIN/COMMIT.
    a.simple_query("BEGIN TRANSACTION").await.unwrap().into_results().await.unwrap();
    a.execute("INSERT INTO dbo.Servers (ServerName) VALUES (@P1)", &[&"A1"]).await.unwrap();
    assert_eq!(count(&mut a).await, 1, "own insert visible");
    assert_eq!(count(&mut b).await, 0, "other session does not see it");
    a.simple_query("COMMIT").await.unwrap().into_results().await.unwrap();
    assert_eq!(count(&mut b).await, 1);

    // ROLLBACK discards.
    a.simple_query("BEGIN TRAN; INSERT INTO dbo.Servers (ServerName) VALUES (N'A2'); ROLLBACK TRAN").await.unwrap().into_results().await.unwrap();
    assert_eq!(count(&mut b).await, 1);

    // tiberius' transaction manager requests.
    a.begin_transaction().await.unwrap();
    a.execute("INSERT INTO dbo.Servers (ServerName) VALUES (@P1)", &[&"A3"]).await.unwrap();
    assert_eq!(count(&mut b).await, 1);
    a.commit_transaction().await.unwrap();
    assert_eq!(count(&mut b).await, 2);
    a.begin_transaction().await.unwrap();
    a.execute("INSERT INTO dbo.Servers (ServerName) VALUES (@P1)", &[&"A4"]).await.unwrap();
    a.rollback_transaction().await.unwrap();
    assert_eq!(count(&mut b).await, 2);

    // A dropped connection discards its open transaction.
    a.simple_query("BEGIN TRAN").await.unwrap().into_results().await.unwrap();
    a.execute("INSERT INTO dbo.Servers (ServerName) VALUES (@P1)", &[&"A5"]).await.unwrap();
    drop(a);
    let t0 = Instant::now();
    while srv.stats().rollbacks < 3 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(&mut b).await, 2);
    let names = srv.table_batch("MonitoringDB", "dbo.Servers").unwrap();
    let names = names.column(1).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(names.iter().flatten().collect::<Vec<_>>(), vec!["A1", "A3"]);
    let st = srv.stats();
    assert_eq!((st.commits, st.rollbacks), (2, 3));

    let e = match b.simple_query("COMMIT").await {
        Err(e) => e,
        Ok(s) => s.into_results().await.unwrap_err(),
    };
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 3902), "{e:?}");
}

/// COLLATION_NAME as SQL Server reports it: the column's collation for character columns (the
/// database default when it declares none), NULL for every other type.
#[tokio::test]
async fn information_schema_columns_names_each_character_columns_collation() {
    let srv = server();
    srv.execute(
        "MonitoringDB",
        "CREATE TABLE dbo.Collated (Id BIGINT NOT NULL, Ru VARCHAR(50) COLLATE Cyrillic_General_CI_AS NULL, Gr VARCHAR(MAX) COLLATE Greek_CI_AS NULL, \
         Plain VARCHAR(10) NULL, Fixed CHAR(4) NULL, Wide NVARCHAR(20) NULL, Sys SYSNAME NULL, Doc XML NULL, Bytes VARBINARY(8) NULL, Var SQL_VARIANT NULL, Amount DECIMAL(18,2) NULL)",
    )
    .unwrap();
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let rows = c
        .query("SELECT COLUMN_NAME, COLLATION_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = @P1 AND TABLE_NAME = @P2 ORDER BY ORDINAL_POSITION", &[&"dbo", &"Collated"])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let got: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get::<&str, _>(0).unwrap().to_string(), r.get::<&str, _>(1).map(str::to_string))).collect();
    let default = Some("SQL_Latin1_General_CP1_CI_AS".to_string());
    let want = vec![
        ("Id".to_string(), None),
        ("Ru".to_string(), Some("Cyrillic_General_CI_AS".to_string())),
        ("Gr".to_string(), Some("Greek_CI_AS".to_string())),
        ("Plain".to_string(), default.clone()),
        ("Fixed".to_string(), default.clone()),
        ("Wide".to_string(), default.clone()),
        ("Sys".to_string(), default.clone()),
        ("Doc".to_string(), None),
        ("Bytes".to_string(), None),
        ("Var".to_string(), None),
        ("Amount".to_string(), None),
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn information_schema_columns_describes_the_source_table_like_sql_server() {
    let srv = server();
    srv.create_dbatools("DBATools_X", true);
    let mut c = connect(srv.addr(), "DBATools_X", None).await.unwrap();
    let rows = c
        .query(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = @P1 AND TABLE_NAME = @P2 ORDER BY ORDINAL_POSITION",
            &[&"dbo", &"PerfSnapshotRun"],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    /// (COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, IS_NULLABLE)
    type InfoRow = (String, String, Option<i32>, Option<u8>, Option<i32>, String);
    let got: Vec<InfoRow> = rows
        .iter()
        .map(|r| (r.get::<&str, _>(0).unwrap().into(), r.get::<&str, _>(1).unwrap().into(), r.get::<i32, _>(2), r.get::<u8, _>(3), r.get::<i32, _>(4), r.get::<&str, _>(5).unwrap().into()))
        .collect();
    let s = |x: &str| x.to_string();
    let want = vec![
        (s("PerfSnapshotRunID"), s("bigint"), None, Some(19), Some(0), s("NO")),
        (s("SnapshotUTC"), s("datetime2"), None, None, None, s("NO")),
        (s("ServerID"), s("int"), None, Some(10), Some(0), s("YES")),
        (s("ServerName"), s("nvarchar"), Some(128), None, None, s("NO")),
        (s("SqlVersion"), s("nvarchar"), Some(200), None, None, s("NO")),
        (s("CpuSignalWaitPct"), s("decimal"), None, Some(9), Some(4), s("YES")),
        (s("TopWaitType"), s("nvarchar"), Some(120), None, None, s("YES")),
        (s("TopWaitMsPerSec"), s("decimal"), None, Some(18), Some(4), s("YES")),
        (s("SessionsCount"), s("int"), None, Some(10), Some(0), s("YES")),
        (s("RequestsCount"), s("int"), None, Some(10), Some(0), s("YES")),
        (s("BlockingSessionCount"), s("int"), None, Some(10), Some(0), s("YES")),
        (s("DeadlockCountRecent"), s("int"), None, Some(10), Some(0), s("YES")),
        (s("MemoryGrantWarningCount"), s("int"), None, Some(10), Some(0), s("YES")),
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn synclog_is_created_once_by_if_object_id_and_then_written() {
    let srv = server();
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let ddl = "IF OBJECT_ID(N'dbo.DBAToolsSyncLog', N'U') IS NULL CREATE TABLE dbo.DBAToolsSyncLog (
        SyncLogID INT IDENTITY(1,1) NOT NULL CONSTRAINT PK_DBAToolsSyncLog PRIMARY KEY,
        ServerID INT NOT NULL, ServerName NVARCHAR(256) NOT NULL, DBAToolsDatabase SYSNAME NOT NULL,
        LastSyncUTC DATETIME2 NULL, LastRunID BIGINT NULL, LastSyncDuration INT NULL, RowsCopied INT NULL,
        SyncStatus VARCHAR(50) NOT NULL, ErrorMessage NVARCHAR(4000) NULL,
        CreatedUTC DATETIME2 NOT NULL DEFAULT GETUTCDATE(), ModifiedUTC DATETIME2 NULL)";
    c.simple_query(ddl).await.unwrap().into_results().await.unwrap();
    c.simple_query(ddl).await.unwrap().into_results().await.unwrap(); // second run is a no-op
    // The created table has SCHEMA.md's shape: same as the host-side create_synclog.
    let reference = TestServer::start(ServerConfig::default()).unwrap();
    reference.create_synclog("R");
    assert_eq!(srv.table_columns("MonitoringDB", "dbo.DBAToolsSyncLog").unwrap().iter().map(|c| (c.name.clone(), c.ty, c.nullable, c.identity)).collect::<Vec<_>>(),
        reference.table_columns("R", "dbo.DBAToolsSyncLog").unwrap().iter().map(|c| (c.name.clone(), c.ty, c.nullable, c.identity)).collect::<Vec<_>>());

    let now = chrono::Utc::now().naive_utc();
    c.execute("INSERT INTO dbo.DBAToolsSyncLog (ServerID, ServerName, DBAToolsDatabase, LastSyncUTC, LastRunID, LastSyncDuration, RowsCopied, SyncStatus) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8)",
        &[&1i32, &"SQL01", &"DBATools_A", &now, &1234i64, &250i32, &99i32, &"Success"]).await.unwrap();
    let r = c
        .query("SELECT TOP (1) LastRunID, SyncStatus, LastSyncUTC, CreatedUTC FROM dbo.DBAToolsSyncLog WHERE ServerID = @P1 AND DBAToolsDatabase = @P2 AND SyncStatus = 'Success' ORDER BY SyncLogID DESC", &[&1i32, &"DBATools_A"])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.get::<i64, _>(0), Some(1234));
    assert_eq!(r.get::<&str, _>(1), Some("Success"));
    // DATETIME2(7) keeps 100 ns: the value comes back exactly (chrono's now has ns; tiberius sends 100 ns units).
    let back = r.get::<chrono::NaiveDateTime, _>(2).unwrap();
    assert_eq!(back.and_utc().timestamp_nanos_opt().unwrap() / 100, now.and_utc().timestamp_nanos_opt().unwrap() / 100);
    assert!(r.get::<chrono::NaiveDateTime, _>(3).is_some());
}

#[tokio::test]
async fn applock_excludes_other_sessions_until_release_or_disconnect() {
    let srv = server();
    let mut a = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let mut b = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    const GET: &str = "DECLARE @r int; EXEC @r = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = @P2; SELECT @r AS result;";
    async fn get(c: &mut Conn, timeout_ms: i32) -> i32 {
        let rs = c.query(GET, &[&"perfcopy:DBATools_A", &timeout_ms]).await.unwrap().into_results().await.unwrap();
        rs.last().unwrap()[0].get::<i32, _>("result").unwrap()
    }
    assert_eq!(get(&mut a, 0).await, 0);
    let t0 = Instant::now();
    assert_eq!(get(&mut b, 200).await, -1, "held by a: b times out");
    assert!(t0.elapsed() >= Duration::from_millis(190), "waited the timeout");
    a.execute("EXEC sp_releaseapplock @Resource = @P1, @LockOwner = 'Session'", &[&"perfcopy:DBATools_A"]).await.unwrap();
    assert_eq!(get(&mut b, 0).await, 0);

    // a waits while b holds it; b disconnecting grants it to a (status 1: granted after waiting).
    let waiter = tokio::spawn(async move { get(&mut a, 5000).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(b);
    assert_eq!(waiter.await.unwrap(), 1);

    // Releasing a lock one does not hold is error 1223.
    let mut c2 = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    let e = c2.execute("EXEC sp_releaseapplock @Resource = @P1, @LockOwner = 'Session'", &[&"nobody"]).await.unwrap_err();
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 1223), "{e:?}");
}

/// What a client reads to tell instances and incarnations apart: @@SERVERNAME and the host's
/// name set apart, sys.databases / sys.database_recovery_status / sys.objects, and how CREATE
/// again, TRUNCATE, RESTORE and a cloned disk change (or keep) them.
#[tokio::test]
async fn server_names_and_incarnation_facts_follow_renames_restores_and_recreates() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), server_name: Some("SQL01".into()), machine_name: Some("HOSTB".into()), ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools", true);
    const FACTS: &str = "SELECT @@SERVERNAME AS a, CAST(SERVERPROPERTY('ServerName') AS NVARCHAR(128)) AS b, DB_NAME() AS c; \
        SELECT create_date FROM sys.databases WHERE database_id = DB_ID(); \
        SELECT CONVERT(NVARCHAR(36), recovery_fork_guid) AS f FROM sys.database_recovery_status WHERE database_id = DB_ID(); \
        SELECT object_id, create_date FROM sys.objects WHERE object_id = OBJECT_ID(N'dbo.PerfSnapshotRun')";
    type Facts = (String, String, String, chrono::NaiveDateTime, String, i32, chrono::NaiveDateTime);
    async fn facts(srv: &TestServer) -> Facts {
        let mut c = connect(srv.addr(), "DBATools", None).await.unwrap();
        let sets = c.simple_query(FACTS).await.unwrap().into_results().await.unwrap();
        let s = |i: usize, j: usize| sets[i][0].get::<&str, _>(j).unwrap().to_string();
        (s(0, 0), s(0, 1), s(0, 2), sets[1][0].get(0).unwrap(), s(2, 0), sets[3][0].get(0).unwrap(), sets[3][0].get(1).unwrap())
    }
    let first = facts(&srv).await;
    assert_eq!((first.0.as_str(), first.1.as_str(), first.2.as_str()), ("SQL01", "HOSTB", "DBATools"));
    assert_eq!(first.4.len(), 36, "GUID text: {}", first.4);

    // TRUNCATE keeps the table object; DROP + CREATE makes a new one; both reset IDENTITY.
    let mut c = connect(srv.addr(), "DBATools", None).await.unwrap();
    c.simple_query("TRUNCATE TABLE dbo.PerfSnapshotRun").await.unwrap().into_results().await.unwrap();
    let t = facts(&srv).await;
    assert_eq!((t.5, t.6), (first.5, first.6));
    let ddl = "DROP TABLE dbo.PerfSnapshotRun; CREATE TABLE dbo.PerfSnapshotRun (PerfSnapshotRunID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, SnapshotUTC DATETIME2(3) NOT NULL)";
    c.simple_query(ddl).await.unwrap().into_results().await.unwrap();
    let e = match c.simple_query("DROP TABLE dbo.NoSuchTable").await {
        Err(e) => e,
        Ok(s) => s.into_results().await.unwrap_err(),
    };
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 3701), "{e:?}");
    c.simple_query("DROP TABLE IF EXISTS dbo.NoSuchTable").await.unwrap().into_results().await.unwrap();
    let re = facts(&srv).await;
    assert!(re.5 != first.5 && re.6 > first.6, "a table created again is a new object: {re:?} vs {first:?}");
    assert_eq!((re.3, &re.4), (first.3, &first.4), "the database is the same");

    // RESTORE: new create_date and recovery fork, the table's own facts from the backup.
    let backup = srv.backup_database("DBATools").unwrap();
    srv.restore_database("DBATools", &backup);
    let rs = facts(&srv).await;
    assert!(rs.3 > re.3 && rs.4 != re.4, "{rs:?} vs {re:?}");
    assert_eq!((rs.5, rs.6), (re.5, re.6));

    // A cloned disk on another instance reports every fact the same; renames change names only.
    let clone = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), server_name: Some("SQL01".into()), ..Default::default() }).unwrap();
    clone.attach_database_copy("DBATools", &srv.backup_database("DBATools").unwrap());
    let cl = facts(&clone).await;
    assert_eq!(cl.1, "SQL01", "the machine name defaults to the server name");
    assert_eq!((cl.3, &cl.4, cl.5, cl.6), (rs.3, &rs.4, rs.5, rs.6));
    clone.set_machine_name("HOSTC");
    clone.set_server_name("SQL09");
    let rn = facts(&clone).await;
    assert_eq!((rn.0.as_str(), rn.1.as_str()), ("SQL09", "HOSTC"));
}

/// Two instances nobody named are two servers, as two real instances are: each has its own
/// @@SERVERNAME (regression: every unnamed test server answered 'TDS-TEST-SERVER', so tests that
/// forgot to name their servers saw one identity across "different" instances).
#[tokio::test]
async fn unnamed_servers_have_distinct_server_names() {
    let cfg = || ServerConfig { password: Some(PASSWORD.into()), ..Default::default() };
    let (a, b) = (TestServer::start(cfg()).unwrap(), TestServer::start(cfg()).unwrap());
    let mut names = Vec::new();
    for srv in [&a, &b] {
        srv.create_database("D");
        let mut c = connect(srv.addr(), "D", None).await.unwrap();
        let r = c.simple_query("SELECT @@SERVERNAME AS n, CAST(SERVERPROPERTY('ServerName') AS NVARCHAR(128)) AS m").await.unwrap().into_row().await.unwrap().unwrap();
        let (n, m) = (r.get::<&str, _>(0).unwrap().to_string(), r.get::<&str, _>(1).unwrap().to_string());
        assert_eq!(n, srv.server_name());
        assert_eq!(m, n, "the machine name defaults to the server name");
        // The documented shape: prefix, this process's server number, the port.
        let port = srv.addr().port().to_string();
        assert!(n.starts_with(&format!("{}-", tds_test_server::DEFAULT_SERVER_NAME_PREFIX)) && n.ends_with(&format!("-{port}")), "{n}");
        names.push(n);
    }
    assert_ne!(names[0], names[1]);
}

/// Keyset pages are answered by a seek on the primary key (binary search, then the next rows in
/// key order) instead of a scan and sort of every row; both answer every page the same, and a
/// table whose stored rows do not ascend in the key (ids inserted out of order) is still scanned
/// and sorted. Expectations are the ids themselves, computed from the pages' bounds.
#[tokio::test]
async fn keyset_pages_seek_on_the_primary_key_and_match_the_scan() {
    let srv = server();
    srv.create_dbatools("DBATools", true);
    let n = 1000usize;
    srv.insert_batch("DBATools", "dbo.PerfSnapshotRun", &src_batch(&src_rows(n), true)).unwrap();
    srv.execute("DBATools", "CREATE TABLE dbo.U (id BIGINT NOT NULL PRIMARY KEY, v INT NULL); INSERT INTO dbo.U (id, v) VALUES (5, 1), (3, 2), (9, 3), (1, 4), (7, 5)").unwrap();
    let mut c = connect(srv.addr(), "DBATools", None).await.unwrap();
    async fn ids(c: &mut Conn, sql: &str, top: i64, after: i64) -> Vec<i64> {
        let rows = c.query(sql, &[&top, &after]).await.unwrap().into_first_result().await.unwrap();
        rows.iter().map(|r| r.get::<i64, _>(0).unwrap()).collect()
    }
    let page = "SELECT TOP (@P1) PerfSnapshotRunID, ServerName FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > @P2 ORDER BY PerfSnapshotRunID";
    for seek in [true, false] {
        srv.set_index_seek(seek);
        let before = srv.stats().index_seeks;
        for (top, after) in [(100i64, 0i64), (100, 950), (7, 993), (10, 1000), (0, 5), (3, -10)] {
            let want: Vec<i64> = ((after.max(0) + 1)..=(n as i64)).take(top as usize).collect();
            assert_eq!(ids(&mut c, page, top, after).await, want, "seek {seek}, TOP {top} after {after}");
        }
        let u = "SELECT TOP (@P1) id FROM dbo.U WHERE id > @P2 ORDER BY id";
        assert_eq!(ids(&mut c, u, 3, 2).await, [3, 5, 7], "seek {seek}: rows stored out of key order");
        // The six PerfSnapshotRun pages sought (dbo.U's rows are not in key order: scanned).
        assert_eq!(srv.stats().index_seeks - before, if seek { 6 } else { 0 });
    }
}

/// `verify --values` runs one GROUP BY per table with HASHBYTES-derived sums (what SQL Server
/// computes, checked here against known digests and a plain model of the groups).
#[tokio::test]
async fn group_by_hashbytes_substring_and_datediff_as_sql_server_computes_them() {
    let srv = server();
    srv.execute("MonitoringDB", "CREATE TABLE dbo.G (id BIGINT NOT NULL PRIMARY KEY, s INT NULL, t DATETIME2(3) NOT NULL, w NVARCHAR(20) NULL); INSERT INTO dbo.G (id, s, t, w) VALUES (1, 1, '2024-03-01 23:59:59.999', N'abc'), (2, 1, '2024-03-02 00:00:00.000', NULL), (3, 2, '2024-03-01 10:00:00.000', N'é'), (4, 1, '2024-03-01 00:00:00.000', N'abc')").unwrap();
    let mut c = connect(srv.addr(), "MonitoringDB", None).await.unwrap();
    // SHA-256("abc") = ba7816bf…: its first 4 bytes as a big-endian INT.
    let r = c.query("SELECT CAST(SUBSTRING(HASHBYTES('SHA2_256', @P1), 1, 4) AS INT) AS h, DATEDIFF(DAY, '2024-03-01 23:59:59', '2024-03-02 00:00:00') AS d, DATEDIFF_BIG(MILLISECOND, '19700101', '1970-01-01 00:00:01.5') AS ms", &[&b"abc".as_slice()]).await.unwrap().into_row().await.unwrap().unwrap();
    assert_eq!(r.get::<i32, _>("h"), Some(0xba78_16bf_u32 as i32));
    assert_eq!(r.get::<i32, _>("d"), Some(1), "DATEDIFF counts boundaries crossed");
    assert_eq!(r.get::<i64, _>("ms"), Some(1_500));
    let r = c.query("SELECT HASHBYTES('SHA2_256', N'abc') AS n, HASHBYTES('SHA2_256', CAST(NULL AS NVARCHAR(10))) AS z, SUBSTRING(N'héllo', 2, 3) AS sub, SUBSTRING(N'ab', 0, 2) AS edge", &[]).await.unwrap().into_row().await.unwrap().unwrap();
    // NVARCHAR hashes its UTF-16LE bytes.
    let utf16: Vec<u8> = "abc".encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert_eq!(r.get::<&[u8], _>("n"), Some(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &utf16).as_ref()));
    assert_eq!(r.get::<&[u8], _>("z"), None);
    assert_eq!((r.get::<&str, _>("sub"), r.get::<&str, _>("edge")), (Some("éll"), Some("a")), "SUBSTRING clips [start, start+len) to the value");

    let rows = c
        .query("SELECT s, DATEDIFF(DAY, '1970-01-01', t) AS d, COUNT_BIG(*) AS n, COUNT_BIG(w) AS nw, ISNULL(SUM(CAST(CAST(SUBSTRING(HASHBYTES('SHA2_256', w), 1, 4) AS INT) AS BIGINT)), 0) AS hw FROM dbo.G GROUP BY s, DATEDIFF(DAY, '1970-01-01', t)", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let h = |s: &str| {
        let b: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b);
        i32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]) as i64
    };
    let day = 19_783; // 2024-03-01
    let got: Vec<(i32, i32, i64, i64, i64)> = rows.iter().map(|r| (r.get("s").unwrap(), r.get("d").unwrap(), r.get("n").unwrap(), r.get("nw").unwrap(), r.get("hw").unwrap())).collect();
    assert_eq!(got, vec![(1, day, 2, 2, 2 * h("abc")), (1, day + 1, 1, 0, 0), (2, day, 1, 1, h("é"))]);
    // A column neither grouped nor aggregated is SQL Server's error 8120.
    let e = match c.query("SELECT s, w FROM dbo.G GROUP BY s", &[]).await {
        Err(e) => e,
        Ok(s) => s.into_first_result().await.unwrap_err(),
    };
    assert!(matches!(&e, tiberius::error::Error::Server(t) if t.code() == 8120), "{e:?}");
}
