//! Helpers for the SQL Server tests against the in-process TDS test server: connection
//! strings, seeding DBATools and MonitoringDB, reading MonitoringDB back as model rows, and
//! checks that secrets stay out of what perfcopy prints.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};
use tds_test_server::{ServerConfig, TestServer, TlsMode};

use super::*;

/// The password of every test server: `;`, `'` and `=` make it a hard case for connection
/// string parsing and scrubbing.
pub const PW: &str = "Pa55;w0rd'=secret";

/// A test server that demands [`PW`] (TLS offered, as SQL Server does).
pub fn server() -> TestServer {
    server_tls(TlsMode::Offered)
}

/// A test server that demands [`PW`] and handles encryption as `tls` says.
pub fn server_tls(tls: TlsMode) -> TestServer {
    TestServer::start(ServerConfig { packet_size: Some(512), password: Some(PW.into()), tls, ..Default::default() }).unwrap()
}

/// How a test's connection strings encrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `Encrypt=DANGER_PLAINTEXT`: nothing encrypted.
    Plaintext,
    /// `Encrypt=true;TrustServerCertificate=true`: TLS for the whole connection.
    Tls,
    /// `Encrypt=false;TrustServerCertificate=true`: TLS for the login packet only.
    LoginOnly,
}

impl Wire {
    /// The connection string's encryption keys.
    pub fn keys(self) -> &'static str {
        match self {
            Wire::Plaintext => "Encrypt=DANGER_PLAINTEXT",
            Wire::Tls => "Encrypt=true;TrustServerCertificate=true",
            Wire::LoginOnly => "Encrypt=false;TrustServerCertificate=true",
        }
    }
}

/// The encryption of [`conn`] and [`conn_nopw`]: `PERFCOPY_TEST_ENCRYPT=tls` or `login-only`
/// runs a suite over TLS (e.g. `PERFCOPY_TEST_ENCRYPT=tls cargo test --test mssql_e2e`);
/// unset or `plaintext`, the tests that are about something else than TLS skip its cost.
pub fn default_wire() -> Wire {
    static WIRE: std::sync::OnceLock<Wire> = std::sync::OnceLock::new();
    *WIRE.get_or_init(|| match std::env::var("PERFCOPY_TEST_ENCRYPT").as_deref() {
        Ok("tls") => Wire::Tls,
        Ok("login-only") => Wire::LoginOnly,
        Ok("plaintext") | Err(_) => Wire::Plaintext,
        Ok(other) => panic!("PERFCOPY_TEST_ENCRYPT={other}: expected tls, login-only or plaintext"),
    })
}

/// ADO.NET string for `db` on `srv` with the password in it.
pub fn conn(srv: &TestServer, db: &str) -> String {
    conn_pw(srv, db, PW)
}

/// ADO.NET string for `db` on `srv` with password `pw`.
pub fn conn_pw(srv: &TestServer, db: &str, pw: &str) -> String {
    conn_wire(srv, db, pw, default_wire())
}

/// ADO.NET string for `db` on `srv` with password `pw`, encrypting as `wire` says.
pub fn conn_wire(srv: &TestServer, db: &str, pw: &str, wire: Wire) -> String {
    format!("{};Password='{}';{}", conn_base(srv, db), pw.replace('\'', "''"), wire.keys())
}

/// ADO.NET string without a password (for --config with password_env).
pub fn conn_nopw(srv: &TestServer, db: &str) -> String {
    format!("{};{}", conn_base(srv, db), default_wire().keys())
}

/// Server, database and user, no password and no encryption keys.
pub fn conn_base(srv: &TestServer, db: &str) -> String {
    format!("Server=tcp:127.0.0.1,{};Database={db};User Id=perf", srv.addr().port())
}

/// How perfcopy labels a connection in messages.
pub fn label(srv: &TestServer, db: &str) -> String {
    format!("127.0.0.1,{}/{db}", srv.addr().port())
}

/// Creates DBATools database `db` on `srv` and fills dbo.PerfSnapshotRun with `rows`
/// (PerfSnapshotRunID kept as given).
pub fn seed(srv: &TestServer, dir: &Path, db: &str, rows: &[SrcRow], with_server_id: bool) {
    srv.create_dbatools(db, with_server_id);
    add_rows(srv, dir, db, rows, with_server_id);
}

/// Appends `rows` to an existing DBATools database.
pub fn add_rows(srv: &TestServer, dir: &Path, db: &str, rows: &[SrcRow], with_server_id: bool) {
    let p = dir.join(format!("{db}-{}.parquet", rows.first().map(|r| r.run_id).unwrap_or(0)));
    write_source(&p, rows, &SourceOpts { server_id_column: with_server_id, ..Default::default() });
    assert_eq!(srv.seed_parquet(db, "dbo.PerfSnapshotRun", &p).unwrap(), rows.len() as u64);
}

/// Model rows as a batch of MonitoringDB.dbo.PerfSnapshotRun columns (no identity).
pub fn target_batch(rows: &[Row]) -> RecordBatch {
    let fields: Vec<Field> = stage_fields().into_iter().map(|(n, t)| Field::new(n, t, true)).collect();
    let ints = |f: fn(&Values) -> Option<i32>| -> ArrayRef { Arc::new(Int32Array::from(rows.iter().map(|r| f(&r.v)).collect::<Vec<_>>())) };
    let dec = |f: fn(&Values) -> Option<i128>, p: u8| -> ArrayRef {
        Arc::new(arrow::array::Decimal128Array::from(rows.iter().map(|r| f(&r.v)).collect::<Vec<_>>()).with_precision_and_scale(p, 4).unwrap())
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.snapshot_ms).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.server_id).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.server_name.as_str()).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.v.sql_version.as_str()).collect::<Vec<_>>())),
        dec(|v| v.cpu_signal_wait_pct, 9),
        Arc::new(StringArray::from(rows.iter().map(|r| r.v.top_wait_type.as_deref()).collect::<Vec<_>>())),
        dec(|v| v.top_wait_ms_per_sec, 18),
        ints(|v| v.sessions),
        ints(|v| v.requests),
        ints(|v| v.blocking),
        ints(|v| v.deadlocks),
        ints(|v| v.grant_warnings),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// Creates MonitoringDB `db` with `servers` registered under the given IDs and `rows` already
/// in its PerfSnapshotRun.
pub fn seed_target(srv: &TestServer, db: &str, servers: &[(&str, i32)], rows: &[Row]) {
    srv.create_monitoringdb(db);
    if !servers.is_empty() {
        let schema = Arc::new(Schema::new(vec![Field::new("ServerID", DataType::Int32, false), Field::new("ServerName", DataType::Utf8, false)]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(servers.iter().map(|s| s.1).collect::<Vec<_>>())),
                Arc::new(StringArray::from(servers.iter().map(|s| s.0).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        srv.insert_batch(db, "dbo.Servers", &b).unwrap();
    }
    if !rows.is_empty() {
        srv.insert_batch(db, "dbo.PerfSnapshotRun", &target_batch(rows)).unwrap();
    }
}

/// The target's PerfSnapshotRun as model rows, keyed; panics when a key is held twice.
pub fn target_rows(srv: &TestServer, db: &str) -> BTreeMap<(i32, i64), Row> {
    let b = srv.table_batch(db, "dbo.PerfSnapshotRun").unwrap();
    let idx: Vec<usize> = stage_fields().iter().map(|(n, _)| b.schema().index_of(n).unwrap()).collect();
    let b = b.project(&idx).unwrap();
    // A wider target column (BIGINT, DECIMAL(38,4), DATETIME2(7)) holds the same values: read
    // them in the stage's types (a value that does not fit there fails the cast).
    let cols: Vec<ArrayRef> = b.columns().iter().zip(stage_fields()).map(|(c, (_, t))| arrow::compute::cast(c, &t).unwrap()).collect();
    let fields: Vec<Field> = stage_fields().into_iter().map(|(n, t)| Field::new(n, t, true)).collect();
    let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let rows: Vec<Row> = (0..b.num_rows())
        .map(|r| Row {
            server_id: b.column(1).as_primitive::<Int32Type>().value(r),
            snapshot_ms: ms(b.column(0), r),
            server_name: opt_str(b.column(2), r).unwrap(),
            v: values_of(&b, r),
        })
        .collect();
    by_key(&rows)
}

/// Asserts the target holds exactly `want`, listing the first differences.
pub fn assert_target_eq(srv: &TestServer, db: &str, want: &BTreeMap<(i32, i64), Row>) {
    assert_rows_eq(&format!("{db}.dbo.PerfSnapshotRun"), &target_rows(srv, db), want);
}

/// dbo.Servers as folded name -> ID.
pub fn servers_table(srv: &TestServer, db: &str) -> NameMap {
    servers_spelled(srv, db).into_iter().map(|(n, id)| (fold(&n), id)).collect()
}

/// dbo.Servers as spelled name -> ID.
pub fn servers_spelled(srv: &TestServer, db: &str) -> BTreeMap<String, i32> {
    let b = srv.table_batch(db, "dbo.Servers").unwrap();
    let ids = b.column(b.schema().index_of("ServerID").unwrap()).as_primitive::<Int32Type>().clone();
    let names = b.column(b.schema().index_of("ServerName").unwrap()).as_string::<i32>().clone();
    (0..b.num_rows()).map(|r| (names.value(r).to_string(), ids.value(r))).collect()
}

/// One dbo.DBAToolsSyncLog row (the columns a sync reader looks at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRow {
    pub server_id: i32,
    pub server_name: String,
    pub database: String,
    pub last_run_id: Option<i64>,
    pub rows_copied: Option<i32>,
    pub status: String,
}

/// dbo.DBAToolsSyncLog in SyncLogID order.
pub fn synclog(srv: &TestServer, db: &str) -> Vec<SyncRow> {
    let b = srv.table_batch(db, "dbo.DBAToolsSyncLog").unwrap();
    let c = |n: &str| b.column(b.schema().index_of(n).unwrap()).clone();
    let (sid, name, dbn, last, rows, st) = (c("ServerID"), c("ServerName"), c("DBAToolsDatabase"), c("LastRunID"), c("RowsCopied"), c("SyncStatus"));
    let id = c("SyncLogID");
    let mut out: Vec<(i32, SyncRow)> = (0..b.num_rows())
        .map(|r| {
            (
                id.as_primitive::<Int32Type>().value(r),
                SyncRow {
                    server_id: sid.as_primitive::<Int32Type>().value(r),
                    server_name: opt_str(&name, r).unwrap(),
                    database: opt_str(&dbn, r).unwrap(),
                    last_run_id: last.is_valid(r).then(|| last.as_primitive::<Int64Type>().value(r)),
                    rows_copied: rows.is_valid(r).then(|| rows.as_primitive::<Int32Type>().value(r)),
                    status: opt_str(&st, r).unwrap(),
                },
            )
        })
        .collect();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// The last 'Success' row per DBAToolsDatabase, as the toolkit's procedure reads them.
pub fn last_success(srv: &TestServer, db: &str) -> BTreeMap<String, SyncRow> {
    synclog(srv, db).into_iter().filter(|r| r.status == "Success").map(|r| (r.database.clone(), r)).collect()
}

/// Every table the target has, as full batches, for "untouched" comparisons.
pub fn target_snapshot(srv: &TestServer, db: &str) -> Vec<(String, Option<RecordBatch>)> {
    ["dbo.Servers", "dbo.PerfSnapshotRun", "dbo.DBAToolsSyncLog"]
        .iter()
        .map(|t| (t.to_string(), srv.has_table(db, t).then(|| srv.table_batch(db, t).unwrap())))
        .collect()
}

/// stdout and stderr of a run.
pub fn all_output(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts `secret` (and its distinctive middle part) is nowhere in a run's output.
pub fn assert_no_secret(o: &Output, secret: &str) {
    let out = all_output(o);
    let core: String = secret.chars().filter(|c| c.is_alphanumeric()).collect();
    assert!(!out.contains(secret) && !out.contains(&core), "password leaked into the output: {out}");
}

/// Asserts a run failed with a non-zero exit code (not a crash) and returns its stderr.
pub fn failed(o: &Output) -> String {
    let code = o.status.code().unwrap_or_else(|| panic!("perfcopy died by a signal: {}", stderr(o)));
    assert_ne!(code, 0, "perfcopy succeeded but should have failed: {}", stderr(o));
    assert!(!stderr(o).contains("panicked"), "perfcopy panicked: {}", stderr(o));
    stderr(o)
}

/// ISO 8601 UTC text of a ms timestamp, as --since/--until take it.
pub fn iso_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Highest run ID of rows.
pub fn max_run(rows: &[SrcRow]) -> i64 {
    rows.iter().map(|r| r.run_id).max().unwrap()
}

/// The name map after a `--register-servers` run: `known` must have kept its IDs, and the
/// registry must hold exactly the names of `sources` besides; returns the registry.
pub fn check_registry(srv: &TestServer, db: &str, known: &[(&str, i32)], sources: &[Vec<SrcRow>]) -> NameMap {
    let reg = servers_spelled(srv, db);
    let folded: NameMap = reg.iter().map(|(n, id)| (fold(n), *id)).collect();
    for (n, id) in known {
        assert_eq!(folded.get(&fold(n)), Some(id), "pre-registered '{n}' must keep its ID; registry {reg:?}");
    }
    let known_map = name_map(known);
    let want_new: BTreeMap<String, ()> = registered(&known_map, sources).into_iter().map(|(n, _)| (n, ())).collect();
    let got_new: BTreeMap<String, ()> = reg.iter().filter(|(n, _)| !known_map.contains_key(&fold(n))).map(|(n, _)| (n.clone(), ())).collect();
    assert_eq!(got_new, want_new, "registered names (spelled as first met)");
    let mut ids: Vec<i32> = reg.values().copied().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), reg.len(), "ServerIDs must be distinct: {reg:?}");
    folded
}

/// `perfcopy` with `args` and extra environment variables; progress off for copy/verify.
pub fn perfcopy_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = assert_cmd::Command::cargo_bin("perfcopy").unwrap();
    cmd.args(args);
    if matches!(args.first(), Some(&"copy") | Some(&"verify")) {
        cmd.args(["--progress", "off"]);
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}


/// Starts `perfcopy ARGS` in the background with stdout and stderr captured.
pub fn spawn_perfcopy(args: &[&str]) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("perfcopy"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `ready` every 10 ms; fails the test after 60 s naming `what` it waited for.
pub fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !ready() {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "{what}: not within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A test server demanding [`PW`] whose `@@SERVERNAME` is `server_name` and whose host is
/// called `machine_name` (`SERVERPROPERTY('ServerName')`).
pub fn server_named(server_name: &str, machine_name: &str) -> TestServer {
    TestServer::start(ServerConfig {
        packet_size: Some(512),
        password: Some(PW.into()),
        server_name: Some(server_name.into()),
        machine_name: Some(machine_name.into()),
        ..Default::default()
    })
    .unwrap()
}

/// Runs T-SQL on `db` as another client would (a DBA's session); panics on an error.
pub fn exec_sql(srv: &TestServer, db: &str, sql: &str) {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let ado = conn(srv, db);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let config = tiberius::Config::from_ado_string(&ado).unwrap();
        let tcp = tokio::net::TcpStream::connect(config.get_addr()).await.unwrap();
        let mut client = tiberius::Client::connect(config, tcp.compat_write()).await.unwrap();
        client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).into_results().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}
