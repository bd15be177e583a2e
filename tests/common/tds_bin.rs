//! The standalone TDS test server (`crates/tds-test-server`'s `tds_test_server` binary) as a
//! child process, and a small tiberius reader for what perfcopy left in it. Used where the
//! server must be a separate process (crash trials, scripts); other tests use the in-process
//! `TestServer`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use futures_util::TryStreamExt;
use tiberius::{Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use super::mssql::PW;
use super::*;

/// The `tds_test_server` binary: `$TDS_TEST_SERVER_BIN`, else next to the perfcopy binary under
/// test (`cargo test --workspace` builds both; so does `cargo build -p tds-test-server --bin
/// tds_test_server`). A missing binary is a test failure with the command that builds it.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TDS_TEST_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let perfcopy = PathBuf::from(env!("CARGO_BIN_EXE_perfcopy"));
    let dir = perfcopy.parent().unwrap();
    let bin = dir.join("tds_test_server");
    if !bin.exists() {
        let release = dir.ends_with("release");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "tds-test-server", "--bin", "tds_test_server"])
            .args(release.then_some("--release"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success() && bin.exists(), "cannot build {}; run: cargo build -p tds-test-server --bin tds_test_server", bin.display());
    }
    bin
}

/// A running `tds_test_server`; it stops when this is dropped (stdin closes, then a kill).
pub struct ServerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
}

impl ServerProc {
    /// Starts the binary on a free port with password [`PW`], seeding `DBATools` from `seed`.
    pub fn start(seed: Option<&Path>) -> ServerProc {
        ServerProc::start_with(seed, &[])
    }

    /// [`ServerProc::start`] with more arguments (e.g. `--child-tables FILE`).
    pub fn start_with(seed: Option<&Path>, extra: &[&str]) -> ServerProc {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--port", "0", "--password", PW, "--packet-size", "4096", "--stop-on-stdin-eof"]);
        cmd.args(extra);
        if let Some(p) = seed {
            cmd.args(["--seed-parquet", s(p)]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().unwrap_or_else(|| panic!("tds_test_server exited before READY")).unwrap();
            if let Some(addr) = line.strip_prefix("READY ") {
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ServerProc { child, stdin, port }
    }

    /// ADO.NET string for `db` with the password in it.
    pub fn conn(&self, db: &str) -> String {
        format!("Server=tcp:127.0.0.1,{};Database={db};User Id=perf;Password='{}';Encrypt=DANGER_PLAINTEXT", self.port, PW.replace('\'', "''"))
    }

    /// ADO.NET string for `db` without a password (for `password_env`).
    pub fn conn_nopw(&self, db: &str) -> String {
        format!("Server=tcp:127.0.0.1,{};Database={db};User Id=perf;Encrypt=DANGER_PLAINTEXT", self.port)
    }

    /// How perfcopy labels the connection.
    pub fn label(&self, db: &str) -> String {
        format!("127.0.0.1,{}/{db}", self.port)
    }

    async fn client(&self, db: &str) -> Client<tokio_util::compat::Compat<TcpStream>> {
        let cfg = Config::from_ado_string(&self.conn(db)).unwrap();
        let tcp = TcpStream::connect(cfg.get_addr()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Client::connect(cfg, tcp.compat_write()).await.unwrap()
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    /// Every row of `db.dbo.PerfSnapshotRun` (identity left out), and how many keys were held
    /// more than once (a correct target holds none).
    pub fn rows(&self, db: &str) -> (BTreeMap<(i32, i64), Row>, usize) {
        self.block_on(async {
            let mut c = self.client(db).await;
            let q = "SELECT SnapshotUTC, ServerID, ServerName, SqlVersion, CpuSignalWaitPct, TopWaitType, TopWaitMsPerSec, SessionsCount, \
                     RequestsCount, BlockingSessionCount, DeadlockCountRecent, MemoryGrantWarningCount FROM dbo.PerfSnapshotRun";
            let mut st = c.simple_query(q).await.unwrap().into_row_stream();
            let (mut out, mut doubled) = (BTreeMap::new(), 0);
            let dec = |r: &tiberius::Row, i: usize| {
                r.get::<tiberius::numeric::Numeric, _>(i).map(|n| {
                    assert_eq!(n.scale(), 4, "decimal scale");
                    n.value()
                })
            };
            while let Some(r) = st.try_next().await.unwrap() {
                let t: chrono::NaiveDateTime = r.get(0).unwrap();
                let row = Row {
                    snapshot_ms: t.and_utc().timestamp_millis(),
                    server_id: r.get(1).unwrap(),
                    server_name: r.get::<&str, _>(2).unwrap().to_string(),
                    v: Values {
                        sql_version: r.get::<&str, _>(3).unwrap().to_string(),
                        cpu_signal_wait_pct: dec(&r, 4),
                        top_wait_type: r.get::<&str, _>(5).map(str::to_string),
                        top_wait_ms_per_sec: dec(&r, 6),
                        sessions: r.get(7),
                        requests: r.get(8),
                        blocking: r.get(9),
                        deadlocks: r.get(10),
                        grant_warnings: r.get(11),
                    },
                };
                if out.insert((row.server_id, row.snapshot_ms), row).is_some() {
                    doubled += 1;
                }
            }
            (out, doubled)
        })
    }

    /// Every row of `db.dbo.<table>` (a child table: `<Table>ID`, PerfSnapshotRunID, values)
    /// by its run's key through `db`'s own PerfSnapshotRun, as canonical text
    /// ([`super::kids::canon`]'s), and how many rows reference a run `db` lacks (orphans).
    pub fn child_rows(&self, db: &str, table: &str) -> (super::kids::ChildSet, usize) {
        use tiberius::{ColumnData, FromSql};
        self.block_on(async {
            let mut c = self.client(db).await;
            let mut key_of = BTreeMap::new();
            for r in c.simple_query("SELECT PerfSnapshotRunID, ServerID, SnapshotUTC FROM dbo.PerfSnapshotRun").await.unwrap().into_first_result().await.unwrap() {
                let t: chrono::NaiveDateTime = r.get(2).unwrap();
                key_of.insert(r.get::<i64, _>(0).unwrap(), (r.get::<i32, _>(1).unwrap(), t.and_utc().timestamp_millis()));
            }
            let canon = |d: &ColumnData<'static>| -> String {
                match d {
                    ColumnData::I64(Some(v)) => v.to_string(),
                    ColumnData::I32(Some(v)) => v.to_string(),
                    ColumnData::I16(Some(v)) => v.to_string(),
                    ColumnData::U8(Some(v)) => v.to_string(),
                    ColumnData::Bit(Some(v)) => v.to_string(),
                    ColumnData::Numeric(Some(n)) => format!("{}e-{}", n.value(), n.scale()),
                    ColumnData::String(Some(s)) => format!("{:?}", s.as_ref()),
                    ColumnData::DateTime2(Some(_)) => chrono::NaiveDateTime::from_sql(d).unwrap().unwrap().and_utc().timestamp_millis().to_string(),
                    ColumnData::I64(None) | ColumnData::I32(None) | ColumnData::I16(None) | ColumnData::U8(None) | ColumnData::Bit(None) | ColumnData::Numeric(None) | ColumnData::String(None) | ColumnData::DateTime2(None) => "NULL".into(),
                    other => panic!("{table}: unexpected value {other:?}"),
                }
            };
            let (mut out, mut orphans) = (super::kids::ChildSet::new(), 0);
            for r in c.simple_query(format!("SELECT * FROM dbo.{table}")).await.unwrap().into_first_result().await.unwrap() {
                let cells: Vec<ColumnData<'static>> = r.into_iter().collect();
                let run = match &cells[1] {
                    ColumnData::I64(Some(v)) => *v,
                    other => panic!("{table}: PerfSnapshotRunID is {other:?}"),
                };
                let text = cells[2..].iter().map(canon).collect::<Vec<_>>().join("|");
                match key_of.get(&run) {
                    Some(k) => out.entry(*k).or_default().push(text),
                    None => orphans += 1,
                }
            }
            out.values_mut().for_each(|v| v.sort());
            (out, orphans)
        })
    }

    /// Rows in `db.dbo.PerfSnapshotRun` (cheap enough to poll).
    pub fn count(&self, db: &str) -> i64 {
        self.block_on(async {
            let mut c = self.client(db).await;
            let row = c.simple_query("SELECT COUNT_BIG(*) AS n FROM dbo.PerfSnapshotRun").await.unwrap().into_row().await.unwrap().unwrap();
            row.get::<i64, _>(0).unwrap()
        })
    }

    /// `DBAToolsDatabase -> LastRunID` of the last 'Success' row of each database in
    /// `db.dbo.DBAToolsSyncLog` (empty when the table does not exist).
    pub fn last_success(&self, db: &str) -> BTreeMap<String, Option<i64>> {
        self.block_on(async {
            let mut c = self.client(db).await;
            let mut out = BTreeMap::new();
            if !table_exists(&mut c, "dbo.DBAToolsSyncLog").await {
                return out;
            }
            let q = "SELECT SyncLogID, DBAToolsDatabase, LastRunID, SyncStatus FROM dbo.DBAToolsSyncLog ORDER BY SyncLogID";
            let rows = c.simple_query(q).await.unwrap().into_first_result().await.unwrap();
            for r in rows {
                if r.get::<&str, _>(3) == Some("Success") {
                    out.insert(r.get::<&str, _>(1).unwrap().to_string(), r.get::<i64, _>(2));
                }
            }
            out
        })
    }

    /// perfcopy's companion rows (`dbo.PerfcopySyncSource`) with the ledger row each belongs
    /// to: (SyncLogID, companion LastRunID, LastSnapshotUTC ms, the ledger row's LastRunID and
    /// SyncStatus if it exists). Empty when the table does not exist.
    pub fn companions(&self, db: &str) -> Vec<(i32, i64, i64, Option<(Option<i64>, String)>)> {
        self.block_on(async {
            let mut c = self.client(db).await;
            if !table_exists(&mut c, "dbo.PerfcopySyncSource").await {
                return Vec::new();
            }
            let mut ledger = BTreeMap::new();
            for r in c.simple_query("SELECT SyncLogID, LastRunID, SyncStatus FROM dbo.DBAToolsSyncLog").await.unwrap().into_first_result().await.unwrap() {
                ledger.insert(r.get::<i32, _>(0).unwrap(), (r.get::<i64, _>(1), r.get::<&str, _>(2).unwrap().to_string()));
            }
            let q = "SELECT SyncLogID, LastRunID, LastSnapshotUTC FROM dbo.PerfcopySyncSource ORDER BY SyncLogID";
            let rows = c.simple_query(q).await.unwrap().into_first_result().await.unwrap();
            rows.iter()
                .map(|r| {
                    let id = r.get::<i32, _>(0).unwrap();
                    let t: chrono::NaiveDateTime = r.get(2).unwrap();
                    (id, r.get::<i64, _>(1).unwrap(), t.and_utc().timestamp_millis(), ledger.get(&id).cloned())
                })
                .collect()
        })
    }

    /// Every row of every table perfcopy writes in `db`, as text, for byte-for-byte
    /// "unchanged" comparisons.
    pub fn snapshot(&self, db: &str) -> Vec<String> {
        self.block_on(async {
            let mut c = self.client(db).await;
            let mut out = Vec::new();
            for t in ["dbo.Servers", "dbo.PerfSnapshotRun", "dbo.DBAToolsSyncLog", "dbo.PerfcopySyncSource"] {
                let exists = table_exists(&mut c, t).await;
                out.push(format!("table {t}: {exists}"));
                if exists {
                    for r in c.simple_query(format!("SELECT * FROM {t}")).await.unwrap().into_first_result().await.unwrap() {
                        out.push(format!("{t}: {:?}", r.into_iter().collect::<Vec<_>>()));
                    }
                }
            }
            out
        })
    }
}

async fn table_exists(c: &mut Client<tokio_util::compat::Compat<TcpStream>>, table: &str) -> bool {
    let q = format!("SELECT OBJECT_ID('{table}') AS id");
    c.simple_query(q).await.unwrap().into_row().await.unwrap().is_some_and(|r| r.get::<i32, _>(0).is_some())
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
