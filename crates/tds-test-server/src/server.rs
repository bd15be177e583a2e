//! The TCP server, one task per connection, and the synchronous host-side API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use tokio::net::TcpListener;

use crate::arrow_io;
use crate::engine::{build_rows, Out, Session, Shared, Synthetic, TableKey, Var, Vars};
use crate::error::{Result, ServerError, SqlError};
use crate::sql::parse_batch;
use crate::prepared;
use crate::tls::{self, Plan, TlsMode, Transport};
use crate::types::{Column, ColumnDefault, SqlType, Value};
use crate::wire::{self, cur_cmd, done, packet, token, BulkColumn, OutCol, Rd, TokenWriter, WireError, WireType};

/// How a [`TestServer`] behaves.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Packet size the server imposes in its login ENVCHANGE; `None` accepts the client's
    /// request (4096 if the client asks for 0). Tests use 512 so tokens cross packet bounds.
    pub packet_size: Option<u32>,
    /// Password every login must present; `None` accepts any.
    pub password: Option<String>,
    /// TCP port on 127.0.0.1; 0 (default) picks a free one.
    pub port: u16,
    /// `@@SERVERNAME` (default: [`DEFAULT_SERVER_NAME_PREFIX`], this process's count of started
    /// servers and the port, e.g. `TDS-TEST-SERVER-3-41234`, so no two instances share an
    /// identity unless a test gives them one). Two instances given the same name are
    /// what a cloned VM or a renamed host looks like until someone runs sp_dropserver/sp_addserver.
    pub server_name: Option<String>,
    /// `SERVERPROPERTY('MachineName')` and `SERVERPROPERTY('ServerName')`, the host's current
    /// name (default: the server name).
    pub machine_name: Option<String>,
    /// How PRELOGIN's ENCRYPTION option is answered and TLS used (default: offered, as SQL
    /// Server does); see [`TlsMode`].
    pub tls: TlsMode,
    /// Prints every SQL batch and RPC a client sends to stderr (`TRACE batch: ...`,
    /// `TRACE rpc: name(params)`), to see what a client we did not write asks before it reads
    /// or bulk-loads. Logins are never traced (they carry the password).
    pub trace: bool,
}

/// How `@@SERVERNAME` of a server whose [`ServerConfig::server_name`] is not set begins; the
/// rest (`-N-PORT`: the N-th server this process started, its port) makes it distinct, as two
/// real instances are (a test that forgets to name its servers must not see one identity).
pub const DEFAULT_SERVER_NAME_PREFIX: &str = "TDS-TEST-SERVER";

/// Servers started by this process (numbers the default `@@SERVERNAME`s).
static SERVERS_STARTED: AtomicU64 = AtomicU64::new(0);

/// A copy of one database (its tables, identity counters, object IDs and creation facts), as a
/// backup file or a cloned disk holds it; see [`TestServer::backup_database`].
#[derive(Debug, Clone)]
pub struct DatabaseCopy(crate::engine::Database);

/// How [`Faults::end_reply_early`] ends a statement's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyEnd {
    /// The statement's DONE (DONEINPROC in an RPC) still counts every row the statement found
    /// (DONE_COUNT) and says nothing is wrong, but the rows after the cut are not sent.
    CountMismatch,
    /// The statement's DONE carries DONE_ERROR, as does the DONEPROC of an RPC, and no ERROR
    /// token is sent.
    ErrorFlag,
}

#[derive(Debug)]
struct EarlyEndFault {
    pattern: String,
    skip: u32,
    keep_rows: u64,
    how: EarlyEnd,
}

/// One-shot and standing fault injections; set them through [`TestServer::faults`].
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    refuse_login: bool,
    drop_after_rows: Option<u64>,
    /// Bumped each time drop_after_rows is armed; connections restart their row count then.
    drop_epoch: u64,
    drop_on_bulk_load: Option<u32>,
    errors: Vec<(String, SqlError)>,
    early_end: Option<EarlyEndFault>,
    delay: Option<Duration>,
}

impl Faults {
    fn st(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// While on, every LOGIN7 is answered with error 18456 and the connection closed.
    pub fn refuse_logins(&self, on: bool) {
        self.st().refuse_login = on;
    }
    /// One-shot: the first connection to send more than `n` result rows from now on, counted
    /// cumulatively over all its responses (each connection counts its own rows), is cut after
    /// its `n`-th ROW token (packets sent so far are flushed, without end-of-message) and closed.
    /// Re-arming restarts every connection's count.
    pub fn drop_after_rows(&self, n: u64) {
        let mut st = self.st();
        st.drop_after_rows = Some(n);
        st.drop_epoch += 1;
    }
    /// One-shot: the `n`-th BulkLoad message from now (1 = the next) is received completely,
    /// then the connection is closed without applying it or answering.
    pub fn drop_on_bulk_load(&self, n: u32) {
        self.st().drop_on_bulk_load = Some(n.max(1));
    }
    /// One-shot: the next statement whose text contains `pattern` (case-insensitive; "" = any)
    /// fails with `err` instead of running.
    pub fn error_once(&self, pattern: &str, err: SqlError) {
        self.st().errors.push((pattern.to_lowercase(), err));
    }
    /// One-shot deadlock: error 1205 (class 13) and the session's transaction is rolled back.
    pub fn deadlock_once(&self, pattern: &str) {
        self.error_once(pattern, SqlError { number: 1205, class: 13, state: 51, message: "Transaction (Process ID 51) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.".into() });
    }
    /// One-shot lock timeout: error 1222 "Lock request time out period exceeded.".
    pub fn timeout_once(&self, pattern: &str) {
        self.error_once(pattern, SqlError { number: 1222, class: 16, state: 45, message: "Lock request time out period exceeded.".into() });
    }
    /// One-shot: the result of the statement whose text contains `pattern` (case-insensitive;
    /// "" = any), after `skip` such statements from now, ends after `keep_rows` of its rows with
    /// a DONE that `how` describes; the rest of the reply is as usual.
    pub fn end_reply_early(&self, pattern: &str, skip: u32, keep_rows: u64, how: EarlyEnd) {
        self.st().early_end = Some(EarlyEndFault { pattern: pattern.to_lowercase(), skip, keep_rows, how });
    }
    /// Delays every response (login included) by `d`; `None` turns it off.
    pub fn delay_responses(&self, d: Option<Duration>) {
        self.st().delay = d;
    }
    /// Removes every fault.
    pub fn clear(&self) {
        let mut st = self.st();
        let epoch = st.drop_epoch;
        *st = FaultState { drop_epoch: epoch + 1, ..FaultState::default() };
    }
    fn take_early_end(&self, text: &str) -> Option<(u64, EarlyEnd)> {
        let mut st = self.st();
        let f = st.early_end.as_mut()?;
        if !text.to_lowercase().contains(f.pattern.as_str()) {
            return None;
        }
        if f.skip > 0 {
            f.skip -= 1;
            return None;
        }
        st.early_end.take().map(|f| (f.keep_rows, f.how))
    }
    fn take_error(&self, text: &str) -> Option<SqlError> {
        let mut st = self.st();
        let lower = text.to_lowercase();
        let i = st.errors.iter().position(|(p, _)| lower.contains(p.as_str()))?;
        Some(st.errors.remove(i).1)
    }
}

/// Counters since start; read a snapshot with [`TestServer::stats`].
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    logins: AtomicU64,
    failed_logins: AtomicU64,
    batches: AtomicU64,
    rpcs: AtomicU64,
    statements: AtomicU64,
    rows_sent: AtomicU64,
    pre_encoded_rows_sent: AtomicU64,
    bulk_loads: AtomicU64,
    bulk_rows_received: AtomicU64,
    commits: AtomicU64,
    rollbacks: AtomicU64,
    errors_sent: AtomicU64,
    dropped_connections: AtomicU64,
    routed_logins: AtomicU64,
    tls_handshakes: AtomicU64,
    login_only_encryption: AtomicU64,
    encryption_refusals: AtomicU64,
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Successful logins.
    pub logins: u64,
    /// Logins refused (wrong password, unknown database, fault).
    pub failed_logins: u64,
    /// SQLBatch messages.
    pub batches: u64,
    /// RPC messages.
    pub rpcs: u64,
    /// Statements run (each statement of a batch or sp_executesql).
    pub statements: u64,
    /// ROW tokens sent.
    pub rows_sent: u64,
    /// ROW tokens of those copied from pre-encoded synthetic rows.
    pub pre_encoded_rows_sent: u64,
    /// BulkLoad messages completed.
    pub bulk_loads: u64,
    /// Rows decoded from BulkLoad messages (also in count-only tables).
    pub bulk_rows_received: u64,
    /// Outermost COMMITs.
    pub commits: u64,
    /// ROLLBACKs (explicit, deadlock or disconnect).
    pub rollbacks: u64,
    /// ERROR tokens sent.
    pub errors_sent: u64,
    /// Connections closed by fault injection.
    pub dropped_connections: u64,
    /// Logins answered with a routing ENVCHANGE ([`TestServer::set_routing`]).
    pub routed_logins: u64,
    /// TLS handshakes completed (PRELOGIN-wrapped).
    pub tls_handshakes: u64,
    /// Connections that dropped back to plaintext after an encrypted LOGIN7 (client ENCRYPT_OFF).
    pub login_only_encryption: u64,
    /// Connections closed after PRELOGIN because client and server could not agree on
    /// encryption (e.g. a plaintext client and [`TlsMode::Required`]).
    pub encryption_refusals: u64,
    /// SELECTs answered by a seek on the primary key (keyset pages) instead of a scan.
    pub index_seeks: u64,
}

struct State {
    engine: Shared,
    /// Where logins are redirected ([`TestServer::set_routing`]), as an Azure SQL gateway does.
    routing: Mutex<Option<(String, u16)>>,
    /// The Entra ID access token FEDAUTH logins must present ([`TestServer::set_access_token`]).
    access_token: Mutex<Option<String>>,
    faults: Faults,
    counters: Counters,
    config: ServerConfig,
    next_session: AtomicU64,
}

/// An in-process MS-TDS server on 127.0.0.1 with its own thread and tokio runtime.
/// Dropping it stops the server and closes every connection.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("addr", &self.addr).finish()
    }
}

fn c(name: &str, ty: SqlType, nullable: bool) -> Column {
    Column::new(name, ty, nullable)
}

/// Columns of `DBATools.dbo.PerfSnapshotRun` (SCHEMA.md), with or without ServerID.
pub fn perf_snapshot_run_columns(with_server_id: bool, server_id_nullable: bool) -> Vec<Column> {
    let mut v = vec![c("PerfSnapshotRunID", SqlType::BigInt, false).identity(), c("SnapshotUTC", SqlType::DateTime2(3), false)];
    if with_server_id {
        v.push(c("ServerID", SqlType::Int, server_id_nullable));
    }
    v.extend([
        c("ServerName", SqlType::NVarChar(Some(128)), false),
        c("SqlVersion", SqlType::NVarChar(Some(200)), false),
        c("CpuSignalWaitPct", SqlType::Decimal { precision: 9, scale: 4 }, true),
        c("TopWaitType", SqlType::NVarChar(Some(120)), true),
        c("TopWaitMsPerSec", SqlType::Decimal { precision: 18, scale: 4 }, true),
        c("SessionsCount", SqlType::Int, true),
        c("RequestsCount", SqlType::Int, true),
        c("BlockingSessionCount", SqlType::Int, true),
        c("DeadlockCountRecent", SqlType::Int, true),
        c("MemoryGrantWarningCount", SqlType::Int, true),
    ]);
    v
}

impl TestServer {
    /// Binds 127.0.0.1 (ephemeral port unless `config.port` is set) and starts serving.
    pub fn start(config: ServerConfig) -> Result<TestServer> {
        if config.tls != TlsMode::Unavailable {
            tls::ensure_identity()?;
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", config.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State { engine: Shared::default(), routing: Mutex::new(None), access_token: Mutex::new(None), faults: Faults::default(), counters: Counters::default(), config, next_session: AtomicU64::new(51) });
        {
            let mut cat = state.engine.cat();
            let n = SERVERS_STARTED.fetch_add(1, Ordering::SeqCst) + 1;
            cat.server_name = state.config.server_name.clone().unwrap_or_else(|| format!("{DEFAULT_SERVER_NAME_PREFIX}-{n}-{}", addr.port()));
            cat.machine_name = state.config.machine_name.clone().unwrap_or_else(|| cat.server_name.clone());
            cat.ensure_db("master");
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().thread_name("tds-test-server").build()?;
        let st = state.clone();
        let thread = std::thread::Builder::new().name("tds-test-server".into()).spawn(move || {
            rt.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("tds-test-server: cannot register listener: {e}");
                        return;
                    }
                };
                tokio::select! {
                    _ = rx => {}
                    _ = accept_loop(listener, st) => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        })?;
        Ok(TestServer { addr, state, shutdown: Some(tx), thread: Some(thread) })
    }

    /// The listening address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Fault injection switches.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        let c = &self.state.counters;
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Stats {
            connections: g(&c.connections),
            logins: g(&c.logins),
            failed_logins: g(&c.failed_logins),
            batches: g(&c.batches),
            rpcs: g(&c.rpcs),
            statements: g(&c.statements),
            rows_sent: g(&c.rows_sent),
            pre_encoded_rows_sent: g(&c.pre_encoded_rows_sent),
            bulk_loads: g(&c.bulk_loads),
            bulk_rows_received: g(&c.bulk_rows_received),
            commits: g(&c.commits),
            rollbacks: g(&c.rollbacks),
            errors_sent: g(&c.errors_sent),
            dropped_connections: g(&c.dropped_connections),
            routed_logins: g(&c.routed_logins),
            tls_handshakes: g(&c.tls_handshakes),
            login_only_encryption: g(&c.login_only_encryption),
            encryption_refusals: g(&c.encryption_refusals),
            index_seeks: g(&self.state.engine.cat().index_seeks),
        }
    }

    /// While set, every successful login is answered with a routing ENVCHANGE (type 20) to
    /// `host:port` and the connection is closed, as an Azure SQL gateway redirects clients.
    pub fn set_routing(&self, to: Option<(&str, u16)>) {
        *self.state.routing.lock().unwrap_or_else(|e| e.into_inner()) = to.map(|(h, p)| (h.to_string(), p));
    }

    /// Accepts Entra ID (FEDAUTH security token) logins that present `token`; `None`: every
    /// token login fails with 18456 (SQL logins are not affected).
    pub fn set_access_token(&self, token: Option<&str>) {
        *self.state.access_token.lock().unwrap_or_else(|e| e.into_inner()) = token.map(str::to_string);
    }

    /// `@@SERVERNAME`.
    pub fn server_name(&self) -> String {
        self.state.engine.cat().server_name.clone()
    }

    /// Keyset pages (`SELECT TOP (n) ... WHERE key > @p ORDER BY key`) seek on the primary key
    /// (default, as SQL Server's clustered index does), or with `false` scan and sort the whole
    /// table per page as the server did before; for measuring the difference.
    pub fn set_index_seek(&self, on: bool) {
        self.state.engine.cat().no_index_seek = !on;
    }

    /// Sets `@@SERVERNAME` (what `sp_dropserver`/`sp_addserver` and a restart do).
    pub fn set_server_name(&self, name: &str) {
        self.state.engine.cat().server_name = name.to_string();
    }

    /// Sets the host's name (`SERVERPROPERTY('MachineName')`/`('ServerName')`), as renaming the
    /// host does; `@@SERVERNAME` keeps its value.
    pub fn set_machine_name(&self, name: &str) {
        self.state.engine.cat().machine_name = name.to_string();
    }

    /// A copy of database `db` as it is now (committed rows only): what BACKUP DATABASE writes.
    pub fn backup_database(&self, db: &str) -> Result<DatabaseCopy> {
        let cat = self.state.engine.cat();
        let d = cat.dbs.get(&db.to_lowercase()).ok_or_else(|| ServerError::Api(format!("no database '{db}'")))?;
        Ok(DatabaseCopy(d.clone()))
    }

    /// RESTORE DATABASE `db` FROM a copy (replacing `db` if it exists): the copy's tables, rows,
    /// identity counters and table object IDs and creation times come back; the database gets
    /// a new creation time (`sys.databases.create_date`) and a new recovery fork, as SQL Server
    /// gives a restored database.
    pub fn restore_database(&self, db: &str, copy: &DatabaseCopy) {
        let mut cat = self.state.engine.cat();
        let mut d = copy.0.clone();
        d.name = db.to_string();
        match cat.dbs.get(&db.to_lowercase()) {
            Some(old) => d.id = old.id,
            // RESTORE as a database that does not exist yet also gives it a new database GUID.
            None => {
                let fresh = cat.new_database(db);
                (d.id, d.guid) = (fresh.id, fresh.guid);
            }
        }
        d.created = cat.stamp();
        d.recovery_fork = crate::engine::new_guid();
        cat.dbs.insert(db.to_lowercase(), d);
    }

    /// Attaches a byte-for-byte copy of a database as `db` (a cloned VM's disk): everything
    /// the copy says about itself (creation time, GUIDs, object IDs) is kept.
    pub fn attach_database_copy(&self, db: &str, copy: &DatabaseCopy) {
        let mut cat = self.state.engine.cat();
        let mut d = copy.0.clone();
        d.name = db.to_string();
        d.id = match cat.dbs.get(&db.to_lowercase()) {
            Some(old) => old.id,
            None => cat.new_database(db).id,
        };
        cat.dbs.insert(db.to_lowercase(), d);
    }

    /// TRUNCATE TABLE: every committed row gone, IDENTITY back at 1, the same object (same
    /// OBJECT_ID and creation time).
    pub fn truncate_table(&self, db: &str, table: &str) -> Result<()> {
        let mut cat = self.state.engine.cat();
        let t = cat.table_mut(&key(db, table)).ok_or_else(|| no_table(db, table))?;
        t.rows.clear();
        t.next_identity = 1;
        Ok(())
    }

    /// DROP TABLE; false when there was none.
    pub fn drop_table(&self, db: &str, table: &str) -> bool {
        self.state.engine.cat().drop_table(&key(db, table))
    }

    /// Creates an empty database (no-op if it exists).
    pub fn create_database(&self, db: &str) {
        self.state.engine.cat().ensure_db(db);
    }

    /// Creates (or replaces) a table `schema.name` (or `name`, schema dbo) in `db` (created if missing).
    /// `uniques` lists UNIQUE column sets by column name.
    pub fn create_table(&self, db: &str, table: &str, columns: Vec<Column>, uniques: &[&[&str]]) -> Result<()> {
        let (schema, name) = split_name(table);
        let idx: Result<Vec<Vec<usize>>> = uniques
            .iter()
            .map(|u| u.iter().map(|n| columns.iter().position(|c| c.name.eq_ignore_ascii_case(n)).ok_or_else(|| ServerError::Api(format!("unique column '{n}' not in table '{table}'")))).collect())
            .collect();
        self.state.engine.cat().create_table(db, &schema, &name, columns, idx?);
        Ok(())
    }

    /// Creates `db` with `dbo.PerfSnapshotRun` in the source shape of SCHEMA.md
    /// (ServerID INT NULL present only when `with_server_id`).
    pub fn create_dbatools(&self, db: &str, with_server_id: bool) {
        // PerfSnapshotRunID is the (clustered) primary key, as SCHEMA.md has it.
        self.state.engine.cat().create_table(db, "dbo", "PerfSnapshotRun", perf_snapshot_run_columns(with_server_id, true), vec![vec![0]]);
    }

    /// Creates `db` with `dbo.Servers` (UNIQUE ServerName, IsActive default 1, CreatedDate default
    /// now) and `dbo.PerfSnapshotRun` in the target shape (ServerID INT NOT NULL; no unique key on
    /// (SnapshotUTC, ServerID), as in the real MonitoringDB). DBAToolsSyncLog is not created: see
    /// [`TestServer::create_synclog`].
    pub fn create_monitoringdb(&self, db: &str) {
        let servers = vec![
            c("ServerID", SqlType::Int, false).identity(),
            c("ServerName", SqlType::NVarChar(Some(256)), false),
            c("Environment", SqlType::NVarChar(Some(50)), true),
            c("IsActive", SqlType::Bit, false).default(ColumnDefault::Value(Value::Bool(true))),
            c("CreatedDate", SqlType::DateTime2(7), false).default(ColumnDefault::Now),
            c("ModifiedDate", SqlType::DateTime2(7), true),
        ];
        let mut cat = self.state.engine.cat();
        cat.create_table(db, "dbo", "Servers", servers, vec![vec![0], vec![1]]);
        cat.create_table(db, "dbo", "PerfSnapshotRun", perf_snapshot_run_columns(true, false), vec![]);
    }

    /// Creates `dbo.DBAToolsSyncLog` in SCHEMA.md's shape in `db`.
    pub fn create_synclog(&self, db: &str) {
        let cols = vec![
            c("SyncLogID", SqlType::Int, false).identity(),
            c("ServerID", SqlType::Int, false),
            c("ServerName", SqlType::NVarChar(Some(256)), false),
            c("DBAToolsDatabase", SqlType::NVarChar(Some(128)), false),
            c("LastSyncUTC", SqlType::DateTime2(7), true),
            c("LastRunID", SqlType::BigInt, true),
            c("LastSyncDuration", SqlType::Int, true),
            c("RowsCopied", SqlType::Int, true),
            c("SyncStatus", SqlType::varchar(Some(50)), false),
            c("ErrorMessage", SqlType::NVarChar(Some(4000)), true),
            c("CreatedUTC", SqlType::DateTime2(7), false).default(ColumnDefault::Now),
            c("ModifiedUTC", SqlType::DateTime2(7), true),
        ];
        self.state.engine.cat().create_table(db, "dbo", "DBAToolsSyncLog", cols, vec![vec![0]]);
    }

    /// True if the table exists.
    pub fn has_table(&self, db: &str, table: &str) -> bool {
        self.state.engine.cat().table(&key(db, table)).is_some()
    }

    /// The columns of a table.
    pub fn table_columns(&self, db: &str, table: &str) -> Result<Vec<Column>> {
        let cat = self.state.engine.cat();
        Ok(cat.table(&key(db, table)).ok_or_else(|| no_table(db, table))?.columns.clone())
    }

    /// Appends rows from Arrow, matching columns by name (case-insensitive). Absent columns get
    /// their IDENTITY value, default or NULL, like an INSERT naming only the batch's columns; an
    /// identity column present in the batch keeps its values (like IDENTITY_INSERT ON).
    /// Values are converted as SQL Server converts on INSERT; errors name column and row.
    pub fn insert_batch(&self, db: &str, table: &str, batch: &RecordBatch) -> Result<u64> {
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let rows = (0..batch.num_rows()).map(|r| batch.columns().iter().map(|a| arrow_io::arrow_value(a.as_ref(), r)).collect::<Result<Vec<_>>>()).collect::<Result<Vec<_>>>()?;
        self.insert_rows(db, table, &names, rows)
    }

    /// Appends rows of values for the named columns (the others get their IDENTITY value,
    /// default or NULL), converted as INSERT converts them; for values Arrow has no type for
    /// (SQL_VARIANT with its base type). Errors name the column and row.
    pub fn insert_rows(&self, db: &str, table: &str, columns: &[&str], rows: Vec<Vec<Value>>) -> Result<u64> {
        let mut cat = self.state.engine.cat();
        let t = cat.table_mut(&key(db, table)).ok_or_else(|| no_table(db, table))?;
        let map: Vec<usize> = columns.iter().map(|n| t.col_index(n).ok_or_else(|| ServerError::Api(format!("column '{n}' is not in {db}.{table}")))).collect::<Result<_>>()?;
        let mut partial = Vec::with_capacity(rows.len());
        for (r, values) in rows.into_iter().enumerate() {
            if values.len() != map.len() {
                return Err(ServerError::Api(format!("{db}.{table} row {r}: {} values for {} columns", values.len(), map.len())));
            }
            let mut row = vec![None; t.columns.len()];
            for (v, &i) in values.into_iter().zip(&map) {
                row[i] = Some(v.coerce(&t.columns[i].ty, &t.columns[i].name).map_err(|e| ServerError::Api(format!("{db}.{table} row {r}: {e}")))?);
            }
            partial.push(row);
        }
        let rows = build_rows(t, partial, &[]).map_err(|e| ServerError::Api(format!("{db}.{table}: {e}")))?;
        let n = rows.len() as u64;
        t.rows.extend(rows);
        Ok(n)
    }

    /// The committed rows of a table as values, in storage order.
    pub fn table_rows(&self, db: &str, table: &str) -> Result<Vec<Vec<Value>>> {
        let cat = self.state.engine.cat();
        Ok(cat.table(&key(db, table)).ok_or_else(|| no_table(db, table))?.rows.iter().map(|r| r.to_vec()).collect())
    }

    /// Appends every row of a Parquet file (see [`TestServer::insert_batch`]).
    pub fn seed_parquet(&self, db: &str, table: &str, path: &Path) -> Result<u64> {
        let file = std::fs::File::open(path).map_err(|e| ServerError::Api(format!("cannot open {}: {e}", path.display())))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
        let mut n = 0;
        for b in reader {
            n += self.insert_batch(db, table, &b?)?;
        }
        Ok(n)
    }

    /// The committed rows of a table as Arrow (types per [`SqlType::arrow_type`]).
    pub fn table_batch(&self, db: &str, table: &str) -> Result<RecordBatch> {
        let cat = self.state.engine.cat();
        let t = cat.table(&key(db, table)).ok_or_else(|| no_table(db, table))?;
        arrow_io::rows_to_batch(&t.columns, &t.rows)
    }

    /// Number of committed rows.
    pub fn row_count(&self, db: &str, table: &str) -> Result<usize> {
        let cat = self.state.engine.cat();
        Ok(cat.table(&key(db, table)).ok_or_else(|| no_table(db, table))?.rows.len())
    }

    /// Throughput mode for bulk loads: COLMETADATA is decoded and validated against the table
    /// as usual, ROW/NBCROW tokens are only walked (lengths read, values skipped, not decoded,
    /// so no per-value checks such as 4815), counted in [`Stats::bulk_rows_received`] and not
    /// stored.
    pub fn set_bulk_count_only(&self, db: &str, table: &str, on: bool) -> Result<()> {
        let mut cat = self.state.engine.cat();
        let k = key(db, table);
        let synthetic = cat.table(&k).ok_or_else(|| no_table(db, table))?.synthetic.clone();
        let t = cat.table_mut(&k).ok_or_else(|| no_table(db, table))?;
        t.bulk_count_only = on;
        // Not a write of rows: a pre-encoded table stays pre-encoded.
        t.synthetic = synthetic;
        Ok(())
    }

    /// Throughput mode for reads: fills `table` with `n` rows by cycling `template`'s rows
    /// (identity columns numbered 1..=n). Each template row is encoded once as a ROW token;
    /// `SELECT [TOP] * | cols FROM table [WHERE <identity comparisons>] [ORDER BY <identity>]`
    /// (see the crate docs) is answered by copying those bytes and patching the identity value,
    /// other statements read the stored rows as usual and return the same values. Any later
    /// write to the table ends the pre-encoded mode (the stored rows stay correct).
    pub fn fill_synthetic(&self, db: &str, table: &str, template: &RecordBatch, n: usize) -> Result<()> {
        if template.num_rows() == 0 {
            return Err(ServerError::Api("synthetic template has no rows".into()));
        }
        let before = self.row_count(db, table)?;
        self.insert_batch(db, table, template)?;
        let mut cat = self.state.engine.cat();
        let t = cat.table_mut(&key(db, table)).ok_or_else(|| no_table(db, table))?;
        let tmpl: Vec<_> = t.rows.split_off(before);
        let id = t.columns.iter().position(|c| c.identity);
        if let Some(id) = id {
            let max: i128 = match t.columns[id].ty {
                SqlType::TinyInt => u8::MAX as i128,
                SqlType::SmallInt => i16::MAX as i128,
                SqlType::Int => i32::MAX as i128,
                _ => i64::MAX as i128,
            };
            if n as i128 > max {
                return Err(ServerError::Api(format!("{n} synthetic rows overflow identity column {} ({})", t.columns[id].name, t.columns[id].ty.sql_name())));
            }
        }
        t.rows.reserve(n);
        for i in 0..n {
            let mut r = tmpl[i % tmpl.len()].clone();
            if let Some(id) = id {
                r[id] = Value::Int(i as i64 + 1);
            }
            t.rows.push(r);
        }
        t.next_identity = n as i64 + 1;
        // Only a table holding exactly the synthetic rows can be served from templates.
        if before == 0 {
            t.synthetic = Some(Arc::new(Synthetic::new(n as u64, tmpl, id)));
        }
        Ok(())
    }

    /// True while `table` answers reads from pre-encoded rows ([`TestServer::fill_synthetic`]).
    pub fn is_pre_encoded(&self, db: &str, table: &str) -> bool {
        self.state.engine.cat().table(&key(db, table)).is_some_and(|t| t.synthetic.is_some())
    }

    /// Runs a batch in-process as a fresh session of `db` (for test setup); returns its events'
    /// first error if any.
    pub fn execute(&self, db: &str, sql: &str) -> Result<()> {
        let stmts = parse_batch(sql)?;
        let mut s = Session::new(0, db.to_string());
        let engine = &self.state.engine;
        // A thread of its own, so this also works when called from inside an async test.
        let outs = std::thread::scope(|sc| {
            sc.spawn(|| -> Result<Vec<Out>> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let outs = rt.block_on(s.run(engine, &stmts, &mut Vars::new(), &|_| None));
                s.rollback(engine);
                Ok(outs)
            })
            .join()
            .map_err(|_| ServerError::Api("execute thread panicked".into()))?
        })?;
        match outs.into_iter().find_map(|o| if let Out::Error(e) = o { Some(e) } else { None }) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn split_name(table: &str) -> (String, String) {
    let t = table.replace(['[', ']'], "");
    match t.rsplit_once('.') {
        Some((s, n)) => (s.rsplit('.').next().unwrap_or("dbo").to_string(), n.to_string()),
        None => ("dbo".into(), t),
    }
}

fn key(db: &str, table: &str) -> TableKey {
    let (s, n) = split_name(table);
    (db.to_lowercase(), s.to_lowercase(), n.to_lowercase())
}

fn no_table(db: &str, table: &str) -> ServerError {
    ServerError::Api(format!("no table {table} in database {db}"))
}

async fn accept_loop(listener: TcpListener, st: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                st.counters.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let id = st.next_session.fetch_add(1, Ordering::SeqCst);
                    let mut conn = Conn { stream: Transport::plain(stream), st: st.clone(), packet_size: 4096, session: Session::new(id, "master".into()), out_packet_id: 1, mid_message: false, fault_epoch: 0, fault_rows: 0, prepared: Default::default(), return_values: Vec::new() };
                    let r = conn.serve().await;
                    let trace = st.config.trace;
                    // A dropped connection discards its transaction and releases its app locks.
                    if conn.session.rollback(&st.engine).is_some() {
                        st.counters.rollbacks.fetch_add(1, Ordering::SeqCst);
                    }
                    st.engine.applocks.release_session(id, false);
                    if trace {
                        eprintln!("TRACE connection {peer} closed: {r:?}");
                    }
                    match &r {
                        Ok(()) | Err(ServerError::Io(_) | ServerError::Tls(_)) => tracing::debug!("tds-test-server: connection {peer} closed: {r:?}"),
                        Err(e) => tracing::error!("tds-test-server: connection {peer} closed: {e}"),
                    }
                });
            }
            Err(e) => {
                tracing::error!("tds-test-server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

struct Conn {
    stream: Transport,
    st: Arc<State>,
    packet_size: usize,
    session: Session,
    out_packet_id: u8,
    /// A message is partly sent (no EOM yet).
    mid_message: bool,
    /// [`FaultState::drop_epoch`] that `fault_rows` counts for.
    fault_epoch: u64,
    /// Result rows this connection sent since the drop-after-rows fault was armed.
    fault_rows: u64,
    /// sp_prepare'd statements of this connection.
    prepared: prepared::PreparedStatements,
    /// RETURNVALUE tokens the running RPC sends after its RETURNSTATUS.
    return_values: Vec<u8>,
}

/// Why a connection loop ends early.
enum Stop {
    /// Fault injection closed it.
    Dropped,
    /// An error (protocol or I/O).
    Err(ServerError),
}

impl From<ServerError> for Stop {
    fn from(e: ServerError) -> Self {
        Stop::Err(e)
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Err(e.into())
    }
}

fn proto(msg: impl Into<String>) -> ServerError {
    ServerError::Protocol(msg.into())
}

fn wire_err(what: &str, e: WireError) -> ServerError {
    proto(format!("{what}: {e}"))
}

const MAX_MESSAGE: usize = 256 << 20;

/// Result bytes buffered before whole packets are sent (large results stream).
const FLUSH_AT: usize = 1 << 20;

impl Conn {
    async fn serve(&mut self) -> Result<()> {
        match self.serve_inner().await {
            Ok(()) => Ok(()),
            Err(Stop::Dropped) => {
                self.st.counters.dropped_connections.fetch_add(1, Ordering::SeqCst);
                let _ = self.stream.shutdown().await;
                Ok(())
            }
            Err(Stop::Err(e)) => Err(e),
        }
    }

    /// Reads one packet: (type, status, payload). `None` at a clean end of stream.
    async fn read_packet(&mut self) -> Result<Option<(u8, u8, Vec<u8>)>> {
        let mut h = [0u8; 8];
        match self.stream.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u16::from_be_bytes([h[2], h[3]]) as usize;
        if len < 8 {
            return Err(proto(format!("packet length {len} below the 8-byte header")));
        }
        let mut body = vec![0u8; len - 8];
        self.stream.read_exact(&mut body).await?;
        Ok(Some((h[0], h[1], body)))
    }

    /// Reads a whole message whose first packet is given.
    async fn read_rest(&mut self, ty: u8, status: u8, mut body: Vec<u8>) -> Result<Vec<u8>> {
        let mut eom = status & packet::STATUS_EOM != 0;
        while !eom {
            let (t, s, b) = self.read_packet().await?.ok_or_else(|| proto("connection closed inside a message"))?;
            if t != ty {
                return Err(proto(format!("packet type {t} inside a message of type {ty}")));
            }
            body.extend_from_slice(&b);
            if body.len() > MAX_MESSAGE {
                return Err(proto("message larger than 256 MiB"));
            }
            eom = s & packet::STATUS_EOM != 0;
        }
        Ok(body)
    }

    /// Frames `data` into packets of the negotiated size; `eom` marks the last one.
    /// The response delay fault applies once per message (before its first packet).
    async fn send(&mut self, data: &[u8], eom: bool) -> Result<()> {
        self.send_as(packet::TABULAR, data, eom).await
    }

    /// [`Conn::send`] with packets of type `ty` (PRELOGIN while TLS handshake bytes travel).
    async fn send_as(&mut self, ty: u8, data: &[u8], eom: bool) -> Result<()> {
        if !self.mid_message {
            let delay = self.st.faults.st().delay;
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
        }
        self.mid_message = !eom;
        let chunk = self.packet_size.saturating_sub(8).max(1);
        let mut framed = Vec::with_capacity(data.len() + data.len() / chunk * 8 + 8);
        let mut parts: Vec<&[u8]> = data.chunks(chunk).collect();
        if parts.is_empty() {
            parts.push(&[]);
        }
        let n = parts.len();
        for (i, p) in parts.into_iter().enumerate() {
            let last = i + 1 == n && eom;
            framed.push(ty);
            framed.push(if last { packet::STATUS_EOM } else { 0 });
            framed.extend_from_slice(&((p.len() + 8) as u16).to_be_bytes());
            framed.extend_from_slice(&(self.session.id as u16).to_be_bytes());
            framed.push(self.out_packet_id);
            framed.push(0);
            framed.extend_from_slice(p);
            self.out_packet_id = self.out_packet_id.wrapping_add(1);
        }
        self.stream.write_all(&framed).await?;
        Ok(())
    }

    async fn serve_inner(&mut self) -> std::result::Result<(), Stop> {
        // PRELOGIN
        let Some((ty, status, body)) = self.read_packet().await? else { return Ok(()) };
        if ty != packet::PRELOGIN {
            return Err(proto(format!("expected PRELOGIN, got packet type {ty}")).into());
        }
        let msg = self.read_rest(ty, status, body).await?;
        let (answer, plan) = tls::negotiate(self.st.config.tls, prelogin_encryption(&msg)?)?;
        if plan == Plan::Refuse {
            // Counted before the client can read the answer, so a test sees it once refused.
            self.st.counters.encryption_refusals.fetch_add(1, Ordering::SeqCst);
        }
        self.send(&prelogin_response(answer), true).await?;
        match plan {
            Plan::Plain => {}
            Plan::Refuse => {
                let _ = self.stream.shutdown().await;
                return Ok(());
            }
            Plan::LoginOnly | Plan::Full => {
                if !self.tls_handshake().await? {
                    return Ok(());
                }
            }
        }
        // LOGIN7
        let Some((ty, status, body)) = self.read_packet().await? else { return Ok(()) };
        if ty != packet::LOGIN7 {
            return Err(proto(format!("expected LOGIN7, got packet type {ty}")).into());
        }
        let body = self.read_rest(ty, status, body).await?;
        if plan == Plan::LoginOnly {
            self.end_tls_after_login()?;
        }
        if !self.login(&body).await? {
            return Ok(());
        }
        loop {
            let Some((ty, status, body)) = self.read_packet().await? else { return Ok(()) };
            match ty {
                packet::SQL_BATCH => {
                    let msg = self.read_rest(ty, status, body).await?;
                    self.st.counters.batches.fetch_add(1, Ordering::SeqCst);
                    let text = skip_all_headers(&msg).and_then(|b| wire::utf16_to_string(b).map_err(|e| wire_err("SQLBatch text", e)))?;
                    if self.st.config.trace {
                        eprintln!("TRACE batch: {text}");
                    }
                    let outs = self.run_sql(&text, Vars::new()).await;
                    self.respond(outs, false).await?;
                }
                packet::RPC => {
                    let msg = self.read_rest(ty, status, body).await?;
                    self.st.counters.rpcs.fetch_add(1, Ordering::SeqCst);
                    let outs = self.rpc(&msg).await?;
                    self.respond(outs, true).await?;
                }
                packet::TRANSACTION_MANAGER => {
                    let msg = self.read_rest(ty, status, body).await?;
                    let outs = self.transaction_manager(&msg)?;
                    self.respond(outs, false).await?;
                }
                packet::BULK_LOAD => self.bulk_load(status, body).await?,
                packet::ATTENTION => {
                    let mut w = TokenWriter::default();
                    w.done(token::DONE, done::ATTN, 0, 0);
                    self.send(&w.buf, true).await?;
                }
                other => return Err(proto(format!("unsupported packet type {other}")).into()),
            }
        }
    }

    /// The server side of the TDS 7.x TLS handshake: each flight of TLS handshake records
    /// travels as one PRELOGIN (0x12) message, both ways (MS-TDS 2.2.6.5); after it, TLS
    /// records go straight over TCP. False when the client went away during it.
    async fn tls_handshake(&mut self) -> Result<bool> {
        let mut session = tls::new_session()?;
        while session.is_handshaking() {
            if session.wants_write() {
                let out = tls::pending_records(&mut session)?;
                self.send_as(packet::PRELOGIN, &out, true).await?;
                continue;
            }
            let Some((ty, status, body)) = self.read_packet().await? else { return Ok(false) };
            if ty != packet::PRELOGIN {
                return Err(proto(format!("expected a PRELOGIN packet carrying the TLS handshake, got packet type {ty}")));
            }
            let msg = self.read_rest(ty, status, body).await?;
            tls::feed(&mut session, &msg).map_err(|e| ServerError::Tls(format!("handshake: {e}")))?;
        }
        // The last flight (TLS 1.2: ChangeCipherSpec, Finished) still travels in PRELOGIN.
        let out = tls::pending_records(&mut session)?;
        if !out.is_empty() {
            self.send_as(packet::PRELOGIN, &out, true).await?;
        }
        self.stream.tls = Some(Box::new(session));
        self.st.counters.tls_handshakes.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// Client ENCRYPT_OFF: the LOGIN7 message came under TLS, everything after it is plaintext
    /// (the login response included), as SQL Server and its clients do it.
    fn end_tls_after_login(&mut self) -> Result<()> {
        if let Some(mut session) = self.stream.tls.take() {
            let state = session.process_new_packets().map_err(|e| ServerError::Tls(e.to_string()))?;
            if state.plaintext_bytes_to_read() > 0 {
                return Err(proto("data after LOGIN7 under TLS, but the client asked for login-only encryption (ENCRYPT_OFF)"));
            }
            self.st.counters.login_only_encryption.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn login(&mut self, body: &[u8]) -> std::result::Result<bool, Stop> {
        let l = parse_login7(body)?;
        let cfg = &self.st.config;
        let refuse = self.st.faults.st().refuse_login;
        let mut w = TokenWriter::default();
        let db = if l.database.is_empty() { "master".to_string() } else { l.database.clone() };
        let known = self.st.engine.cat().dbs.contains_key(&db.to_lowercase());
        let token_ok = {
            let want = self.st.access_token.lock().unwrap_or_else(|e| e.into_inner());
            l.access_token.as_ref().map(|t| want.as_deref() == Some(t.as_str()))
        };
        let fail = if refuse || token_ok == Some(false) {
            let who = if l.access_token.is_some() { "<token-identified principal>" } else { l.user.as_str() };
            Some((18456, 14, format!("Login failed for user '{who}'.")))
        } else if token_ok.is_none() && cfg.password.as_ref().is_some_and(|p| *p != l.password) {
            Some((18456, 14, format!("Login failed for user '{}'.", l.user)))
        } else if !known {
            Some((4060, 11, format!("Cannot open database \"{db}\" requested by the login. The login failed.")))
        } else {
            None
        };
        if let Some((n, class, msg)) = fail {
            self.st.counters.failed_logins.fetch_add(1, Ordering::SeqCst);
            self.st.counters.errors_sent.fetch_add(1, Ordering::SeqCst);
            w.message(token::ERROR, n, 1, class, &msg);
            w.done(token::DONE, done::ERROR, 0, 0);
            self.send(&w.buf, true).await?;
            let _ = self.stream.shutdown().await;
            return Ok(false);
        }
        let canonical = self.st.engine.cat().dbs.get(&db.to_lowercase()).map(|d| d.name.clone()).unwrap_or(db);
        self.session.db = canonical.clone();
        let size = match (cfg.packet_size, l.packet_size) {
            (Some(s), _) => s,
            (None, 0) => 4096,
            (None, s) => s,
        }
        .clamp(512, 32767);
        w.env_str(1, &canonical, "master");
        w.message(token::INFO, 5701, 2, 0, &format!("Changed database context to '{canonical}'."));
        w.env_bytes(7, &wire::COLLATION, &[]);
        w.env_str(2, "us_english", "");
        w.message(token::INFO, 5703, 1, 0, "Changed language setting to us_english.");
        w.login_ack();
        if token_ok == Some(true) {
            // FEATUREEXTACK: FEDAUTH acknowledged (no data for a security token), terminator.
            w.buf.extend_from_slice(&[0xAE, 0x02, 0, 0, 0, 0, 0xFF]);
        }
        w.env_str(4, &size.to_string(), &l.packet_size.to_string());
        let routing = self.st.routing.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((host, port)) = &routing {
            // A gateway's answer: log in somewhere else, then this connection is closed.
            w.env_routing(host, *port);
            w.done(token::DONE, 0, 0, 0);
            self.send(&w.buf, true).await?;
            self.st.counters.routed_logins.fetch_add(1, Ordering::SeqCst);
            let _ = self.stream.shutdown().await;
            return Ok(false);
        }
        w.done(token::DONE, 0, 0, 0);
        self.send(&w.buf, true).await?;
        self.packet_size = size as usize;
        self.st.counters.logins.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    async fn run_sql(&mut self, text: &str, mut vars: Vars) -> Vec<Out> {
        let stmts = match parse_batch(text) {
            Ok(s) => s,
            Err(e) => return vec![Out::Error(e), Out::Done { status: done::ERROR, count: None, cmd: 0 }],
        };
        self.st.counters.statements.fetch_add(stmts.len() as u64, Ordering::SeqCst);
        let faults = &self.st.faults;
        let mut outs = self.session.run(&self.st.engine, &stmts, &mut vars, &|t| faults.take_error(t)).await;
        if let Some((keep, how)) = faults.take_early_end(text) {
            outs = end_early(outs, keep, how);
        }
        for o in &outs {
            match o {
                Out::EnvBytes(9, ..) => self.st.counters.commits.fetch_add(1, Ordering::SeqCst),
                Out::EnvBytes(10, ..) => self.st.counters.rollbacks.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }
        outs
    }

    async fn rpc(&mut self, msg: &[u8]) -> Result<Vec<Out>> {
        let b = skip_all_headers(msg)?;
        let mut r = Rd::new(b);
        let e = |x| wire_err("RPC request", x);
        let n = r.u16().map_err(e)?;
        let proc = if n == 0xFFFF {
            let id = r.u16().map_err(e)?;
            match prepared::proc_name(id) {
                Some(name) => name.to_string(),
                None => return Ok(vec![Out::Error(SqlError::new(2812, format!("tds-test-server supports RPC ProcIDs 10-13 and 15 (sp_executesql, sp_prepare, sp_execute, sp_prepexec, sp_unprepare), got ProcID {id}."))), Out::Done { status: done::ERROR, count: None, cmd: 0 }]),
            }
        } else {
            r.utf16(n as usize).map_err(e)?.to_lowercase()
        };
        let _flags = r.u16().map_err(e)?;
        let mut params: Vec<(String, Option<SqlType>, Value)> = Vec::new();
        while r.remaining() > 0 {
            let name = r.b_varchar().map_err(e)?;
            let _status = r.u8().map_err(e)?;
            let wt = WireType::decode(&mut r).map_err(e)?;
            let v = wt.decode_value(&mut r).map_err(e)?;
            params.push((name.to_lowercase(), wt.sql_type(), v));
        }
        let proc = proc.rsplit('.').next().unwrap_or(&proc).to_string();
        if self.st.config.trace {
            let shown: Vec<String> = params.iter().map(|(n, _, v)| format!("{n}={v:?}")).collect();
            eprintln!("TRACE rpc: {proc}({})", shown.join(", "));
        }
        if let Some(outs) = self.prepared_rpc(&proc, &params).await {
            return Ok(outs);
        }
        if proc == "sp_executesql" {
            let Some((_, _, Value::Str(stmt))) = params.first().cloned() else {
                return Ok(vec![Out::Error(SqlError::new(214, "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'.")), Out::Done { status: done::ERROR, count: None, cmd: 0 }]);
            };
            let mut vars = Vars::new();
            for (i, (name, ty, v)) in params.into_iter().enumerate().skip(2) {
                let name = if name.is_empty() { format!("@p{}", i - 1) } else { name };
                vars.insert(name, Var { ty, value: v });
            }
            return Ok(self.run_sql(&stmt, vars).await);
        }
        let args: Vec<(Option<String>, Value)> = params.into_iter().map(|(n, _, v)| (if n.is_empty() { None } else { Some(n) }, v)).collect();
        self.st.counters.statements.fetch_add(1, Ordering::SeqCst);
        Ok(match self.session.call_proc(&self.st.engine, &proc, &args, &proc).await {
            Ok(status) => vec![Out::ReturnStatus(status)],
            Err(e) => vec![Out::Error(e), Out::Done { status: done::ERROR, count: None, cmd: 0 }],
        })
    }

    /// sp_prepare / sp_execute / sp_prepexec / sp_unprepare (see [`prepared`]); `None` for
    /// other procedures. The handle goes back in a RETURNVALUE after RETURNSTATUS.
    async fn prepared_rpc(&mut self, proc: &str, params: &[(String, Option<SqlType>, Value)]) -> Option<Vec<Out>> {
        let fail = |n: i32, m: &str| Some(vec![Out::Error(SqlError::new(n, m)), Out::Done { status: done::ERROR, count: None, cmd: 0 }]);
        let text = |i: usize| match params.get(i) {
            Some((_, _, Value::Str(s))) => Some(s.clone()),
            Some((_, _, Value::Null)) => Some(String::new()),
            _ => None,
        };
        // Values after the fixed parameters bind to the declared names (or their own names).
        let bind = |names: &[String], values: &[(String, Option<SqlType>, Value)]| {
            let mut vars = Vars::new();
            for (i, (name, ty, v)) in values.iter().enumerate() {
                let name = if name.is_empty() { names.get(i).cloned().unwrap_or_else(|| format!("@p{}", i + 1)) } else { name.clone() };
                vars.insert(name, Var { ty: *ty, value: v.clone() });
            }
            vars
        };
        match proc {
            "sp_prepare" | "sp_prepexec" => {
                let (Some(decl), Some(stmt)) = (text(1), text(2)) else {
                    return fail(214, &format!("Procedure {proc} expects parameters '@handle', '@params' and '@stmt' of type 'int', 'ntext/nchar/nvarchar' and 'ntext/nchar/nvarchar'."));
                };
                let handle_name = params.first().map(|(n, _, _)| n.clone()).unwrap_or_default();
                let handle = self.prepared.prepare(stmt.clone(), &decl);
                let mut outs = Vec::new();
                if proc == "sp_prepexec" {
                    let names = self.prepared.get(handle).map(|p| p.params.clone()).unwrap_or_default();
                    outs = self.run_sql(&stmt, bind(&names, params.get(3..).unwrap_or(&[]))).await;
                }
                self.return_values.extend(prepared::return_value_int(0, &handle_name, Some(handle)));
                Some(outs)
            }
            "sp_execute" => {
                let Some(p) = params.first().and_then(|(_, _, v)| prepared::handle_of(v)).and_then(|h| self.prepared.get(h)).cloned() else {
                    return fail(8179, "Could not find prepared statement with handle given to sp_execute.");
                };
                Some(self.run_sql(&p.statement, bind(&p.params, params.get(1..).unwrap_or(&[]))).await)
            }
            "sp_unprepare" => match params.first().and_then(|(_, _, v)| prepared::handle_of(v)) {
                Some(h) if self.prepared.unprepare(h) => Some(Vec::new()),
                _ => fail(8179, "Could not find prepared statement with handle given to sp_unprepare."),
            },
            _ => None,
        }
    }

    fn transaction_manager(&mut self, msg: &[u8]) -> Result<Vec<Out>> {
        let b = skip_all_headers(msg)?;
        let mut r = Rd::new(b);
        let req = r.u16().map_err(|x| wire_err("transaction manager request", x))?;
        let mut outs = Vec::new();
        match req {
            5 => outs.extend(self.session.begin()),
            7 => match self.session.commit(&self.st.engine) {
                Ok(ev) => {
                    if ev.is_some() {
                        self.st.counters.commits.fetch_add(1, Ordering::SeqCst);
                    }
                    outs.extend(ev)
                }
                Err(e) => outs.push(Out::Error(e)),
            },
            8 => match self.session.rollback(&self.st.engine) {
                Some(ev) => {
                    self.st.counters.rollbacks.fetch_add(1, Ordering::SeqCst);
                    outs.push(ev)
                }
                None => outs.push(Out::Error(SqlError::new(3903, "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION."))),
            },
            other => outs.push(Out::Error(SqlError::new(8525, format!("Transaction manager request {other} is not supported by tds-test-server.")))),
        }
        let err = outs.iter().any(|o| matches!(o, Out::Error(_)));
        outs.push(Out::Done { status: if err { done::ERROR } else { 0 }, count: None, cmd: 0 });
        Ok(outs)
    }

    /// Encodes events to tokens and sends them (in packets as the buffer fills, so large
    /// results stream); honours the drop-after-rows fault.
    async fn respond(&mut self, mut outs: Vec<Out>, rpc: bool) -> std::result::Result<(), Stop> {
        if !outs.iter().any(|o| matches!(o, Out::Done { .. } | Out::DoneProc)) && !rpc {
            outs.push(Out::Done { status: 0, count: None, cmd: 0 });
        }
        // A failed statement fails the RPC (RETURNSTATUS, DONEPROC's DONE_ERROR), also one that
        // sent no ERROR token.
        let any_error = outs.iter().any(|o| matches!(o, Out::Error(_)) || matches!(o, Out::Done { status, .. } if status & done::ERROR != 0));
        let last_done = outs.iter().rposition(|o| matches!(o, Out::Done { .. } | Out::DoneProc));
        let mut w = TokenWriter::default();
        let mut meta: Arc<Vec<OutCol>> = Arc::new(Vec::new());
        let mut rows = 0u64;
        let mut pre_encoded = 0u64;
        // Rows this connection may still send before the drop-after-rows fault cuts it.
        let mut budget = {
            let f = self.st.faults.st();
            if f.drop_epoch != self.fault_epoch {
                self.fault_epoch = f.drop_epoch;
                self.fault_rows = 0;
            }
            f.drop_after_rows.map(|n| n.saturating_sub(self.fault_rows))
        };
        let in_tx = if self.session.in_tx() { done::INXACT } else { 0 };
        for (i, o) in outs.into_iter().enumerate() {
            match o {
                Out::Meta(m) => {
                    w.col_metadata(&m);
                    meta = m;
                }
                Out::Row(r) => {
                    if budget == Some(0) {
                        return self.cut(&w.buf, rows).await;
                    }
                    if let Err(e) = w.row(&meta, &r) {
                        return Err(proto(format!("cannot encode a result row: {e}")).into());
                    }
                    rows += 1;
                    budget = budget.map(|b| b - 1);
                    self.flush_full_packets(&mut w.buf).await?;
                }
                Out::Synthetic { rows: enc, first, count } => {
                    for k in first..first + count {
                        if budget == Some(0) {
                            self.st.counters.pre_encoded_rows_sent.fetch_add(pre_encoded, Ordering::SeqCst);
                            return self.cut(&w.buf, rows).await;
                        }
                        enc.write_row(&mut w.buf, k);
                        rows += 1;
                        pre_encoded += 1;
                        budget = budget.map(|b| b - 1);
                        if w.buf.len() >= FLUSH_AT {
                            self.flush_full_packets(&mut w.buf).await?;
                        }
                    }
                }
                Out::Done { status, count, cmd } => {
                    let more = if rpc || Some(i) != last_done { done::MORE } else { 0 };
                    let cnt = if count.is_some() { done::COUNT } else { 0 };
                    w.done(if rpc { token::DONEINPROC } else { token::DONE }, status | more | cnt | in_tx, cmd, count.unwrap_or(0));
                }
                Out::DoneProc => {
                    let more = if Some(i) != last_done { done::MORE } else { 0 };
                    w.done(token::DONEPROC, more, cur_cmd::EXECUTE, 0);
                }
                Out::Error(e) => {
                    self.st.counters.errors_sent.fetch_add(1, Ordering::SeqCst);
                    w.message(token::ERROR, e.number, e.state, e.class, &e.message);
                }
                Out::EnvBytes(kind, new, old) => w.env_bytes(kind, &new, &old),
                Out::ReturnStatus(s) => w.return_status(s),
                Out::Order(cols) => w.order(&cols),
                Out::Info(m) => w.message(token::INFO, m.number, m.state, m.class, &m.message),
                Out::EnvStr(kind, new, old) => w.env_str(kind, &new, &old),
            }
        }
        if rpc {
            w.return_status(if any_error { -6 } else { 0 });
            w.buf.append(&mut self.return_values);
            w.done(token::DONEPROC, if any_error { done::ERROR } else { 0 }, cur_cmd::EXECUTE, 0);
        }
        self.fault_rows += rows;
        self.st.counters.rows_sent.fetch_add(rows, Ordering::SeqCst);
        self.st.counters.pre_encoded_rows_sent.fetch_add(pre_encoded, Ordering::SeqCst);
        self.send(&w.buf, true).await?;
        Ok(())
    }

    /// The drop-after-rows fault fires: sends what is encoded (no end-of-message), disarms the
    /// fault and closes the connection.
    async fn cut(&mut self, buf: &[u8], rows: u64) -> std::result::Result<(), Stop> {
        self.st.faults.st().drop_after_rows = None;
        self.st.counters.rows_sent.fetch_add(rows, Ordering::SeqCst);
        self.send(buf, false).await?;
        Err(Stop::Dropped)
    }

    /// Once `buf` holds at least [`FLUSH_AT`] bytes, sends its whole packets (not the end of
    /// the message) and keeps the remainder.
    async fn flush_full_packets(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let chunk = self.packet_size.saturating_sub(8).max(1);
        if buf.len() < FLUSH_AT {
            return Ok(());
        }
        let whole = buf.len() / chunk * chunk;
        self.send(&buf[..whole], false).await?;
        buf.drain(..whole);
        Ok(())
    }

    async fn bulk_load(&mut self, status: u8, first: Vec<u8>) -> std::result::Result<(), Stop> {
        let drop_this = {
            let mut f = self.st.faults.st();
            match f.drop_on_bulk_load {
                Some(1) => {
                    f.drop_on_bulk_load = None;
                    true
                }
                Some(n) => {
                    f.drop_on_bulk_load = Some(n - 1);
                    false
                }
                None => false,
            }
        };
        let target = self.session.bulk_target.take();
        let declared = std::mem::take(&mut self.session.bulk_declared);
        let cols = target.as_ref().and_then(|k| self.st.engine.cat().table(k).map(|t| (t.columns.clone(), t.bulk_count_only, t.name.clone())));
        let mut dec = BulkDecoder { buf: Vec::new(), cols: None, table: cols.clone(), declared, map: Vec::new(), rows: Vec::new(), n: 0, error: None, done: false };
        if target.is_none() || cols.is_none() {
            dec.error = Some(SqlError::new(4804, "While reading current row from host, a premature end-of-message was encountered (no INSERT BULK statement precedes this BulkLoad message)."));
        }
        let mut eom = status & packet::STATUS_EOM != 0;
        dec.feed(&first)?;
        while !eom {
            let (t, s, b) = self.read_packet().await?.ok_or_else(|| proto("connection closed inside a BulkLoad message"))?;
            if t != packet::BULK_LOAD {
                return Err(proto(format!("packet type {t} inside a BulkLoad message")).into());
            }
            dec.feed(&b)?;
            eom = s & packet::STATUS_EOM != 0;
        }
        // mssql-python's bulk copy (mssql_tds 0.3) ends the message with a DONE of TDS 7.1's
        // size (a 4-byte row count: 9 bytes with the token), which SQL Server accepts.
        let short_done = !dec.done && dec.buf.len() == 9 && dec.buf.first() == Some(&token::DONE);
        if !dec.buf.is_empty() && !short_done {
            return Err(proto(format!("BulkLoad message ends inside a token ({} bytes left)", dec.buf.len())).into());
        }
        if dec.cols.is_none() && dec.error.is_none() {
            dec.error = Some(premature_end(2));
        }
        self.st.counters.bulk_rows_received.fetch_add(dec.n, Ordering::SeqCst);
        if drop_this {
            return Err(Stop::Dropped);
        }
        self.st.counters.bulk_loads.fetch_add(1, Ordering::SeqCst);
        let outs = match (dec.error.take(), target, cols) {
            (Some(e), _, _) => vec![Out::Error(e), Out::Done { status: done::ERROR, count: None, cmd: cur_cmd::STATEMENT }],
            (None, Some(k), Some((_, count_only, _))) => {
                let n = dec.n;
                if count_only {
                    vec![Out::Done { status: 0, count: Some(n), cmd: cur_cmd::BULK_INSERT }]
                } else {
                    let pending = self.session.pending(&k).to_vec();
                    let mut cat = self.st.engine.cat();
                    match cat.table_mut(&k) {
                        None => vec![Out::Error(SqlError::new(208, "Invalid object name (table dropped during bulk load).")), Out::Done { status: done::ERROR, count: None, cmd: 0 }],
                        Some(t) => match build_rows(t, std::mem::take(&mut dec.rows), &pending) {
                            // A row the table refuses ends the load as INSERT ends (3621).
                            Err(e) => vec![
                                Out::Error(e),
                                Out::Info(SqlError { number: 3621, class: 0, state: 0, message: "The statement has been terminated.".into() }),
                                Out::Done { status: done::ERROR, count: None, cmd: cur_cmd::BULK_INSERT },
                            ],
                            Ok(rows) => {
                                match &mut self.session.tx {
                                    Some(tx) => tx.pending.entry(k).or_default().extend(rows),
                                    None => t.rows.extend(rows),
                                }
                                vec![Out::Done { status: 0, count: Some(n), cmd: cur_cmd::BULK_INSERT }]
                            }
                        },
                    }
                }
            }
            _ => vec![Out::Done { status: done::ERROR, count: None, cmd: 0 }],
        };
        self.respond(outs, false).await
    }
}

/// The first result in `outs` cut after `keep` rows and ended by a DONE as `how` says
/// ([`Faults::end_reply_early`]).
fn end_early(outs: Vec<Out>, keep: u64, how: EarlyEnd) -> Vec<Out> {
    let mut out = Vec::with_capacity(outs.len());
    // Rows of the first result so far (sent or not), while it is open.
    let mut seen: Option<u64> = None;
    let mut ended = false;
    for o in outs {
        match (o, seen) {
            (Out::Meta(m), None) if !ended => {
                seen = Some(0);
                out.push(Out::Meta(m));
            }
            (Out::Row(r), Some(n)) => {
                if n < keep {
                    out.push(Out::Row(r));
                }
                seen = Some(n + 1);
            }
            (Out::Synthetic { rows, first, count }, Some(n)) => {
                let sent = count.min(keep.saturating_sub(n));
                if sent > 0 {
                    out.push(Out::Synthetic { rows, first, count: sent });
                }
                seen = Some(n + count);
            }
            (Out::Done { status, count, cmd }, Some(n)) => {
                out.push(match how {
                    EarlyEnd::CountMismatch => Out::Done { status, count: Some(count.unwrap_or(n)), cmd },
                    EarlyEnd::ErrorFlag => Out::Done { status: status | done::ERROR, count: None, cmd },
                });
                seen = None;
                ended = true;
            }
            (o, _) => out.push(o),
        }
    }
    out
}

/// Streaming decoder of one BulkLoad message: COLMETADATA, ROW/NBCROW tokens, DONE.
struct BulkDecoder {
    buf: Vec<u8>,
    cols: Option<Vec<BulkColumn>>,
    /// Target columns, count-only flag, table name.
    table: Option<(Vec<Column>, bool, String)>,
    /// The INSERT BULK statement's columns: (table column index, declared type).
    declared: Vec<(usize, SqlType)>,
    /// Bulk column index -> table column index.
    map: Vec<usize>,
    rows: Vec<Vec<Option<Value>>>,
    n: u64,
    error: Option<SqlError>,
    done: bool,
}

impl BulkDecoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(bytes);
        let mut consumed = 0;
        let res = loop {
            if consumed == buf.len() {
                break Ok(());
            }
            let mut r = Rd::new(&buf[consumed..]);
            match self.token(&mut r) {
                Ok(()) => consumed += r.pos,
                Err(WireError::Incomplete) => break Ok(()),
                Err(e) => break Err(wire_err("BulkLoad", e)),
            }
        };
        buf.drain(..consumed);
        self.buf = buf;
        res
    }

    fn token(&mut self, r: &mut Rd) -> wire::WResult<()> {
        if self.done {
            return Err(WireError::Malformed("data after the DONE token".into()));
        }
        match r.u8()? {
            token::COLMETADATA => {
                let cols = wire::decode_col_metadata(r)?;
                self.validate(&cols);
                self.cols = Some(cols);
            }
            t @ (token::ROW | token::NBCROW) => {
                let cols = self.cols.as_ref().ok_or_else(|| WireError::Malformed("ROW before COLMETADATA".into()))?;
                // Count-only tables and loads that already failed only need row boundaries.
                if self.error.is_some() || matches!(self.table, Some((_, true, _)) | None) {
                    wire::skip_row(r, cols, t == token::NBCROW)?;
                    self.n += 1;
                    return Ok(());
                }
                let vals = if t == token::ROW { cols.iter().map(|c| c.wire.decode_value(r)).collect::<wire::WResult<Vec<_>>>()? } else { wire::decode_nbc_row(r, cols)? };
                self.n += 1;
                self.accept_row(vals);
            }
            token::DONE => {
                r.bytes(12)?;
                self.done = true;
            }
            other => return Err(WireError::Malformed(format!("unexpected token 0x{other:02X} in BulkLoad"))),
        }
        Ok(())
    }

    /// Checks the client's COLMETADATA as SQL Server does: columns bind by position to the
    /// INSERT BULK statement's list (their names are not used; another count is 4804 state 3),
    /// and each column's TYPE_INFO must be of the declared type (DECIMALN or NUMERICN for
    /// decimal/numeric with its precision and scale, DATETIME2 with its scale; character lengths
    /// are not compared, as tiberius' `nvarchar(2n)` declarations for NVARCHAR(n) columns were
    /// accepted, but MAX must be MAX), with the target column's nullability (state 1) and PLP
    /// for a MAX target (state 2), else 4816 for that colid. The declared type may differ from
    /// the table's: values are converted as INSERT converts them.
    fn validate(&mut self, bulk: &[BulkColumn]) {
        let Some((cols, _, tname)) = &self.table else { return };
        self.map.clear();
        if bulk.len() != self.declared.len() {
            self.error.get_or_insert(premature_end(3));
            return;
        }
        let family = |t: SqlType| match t {
            SqlType::Numeric { precision, scale } => SqlType::Decimal { precision, scale },
            SqlType::NVarChar(Some(_)) => SqlType::NVarChar(Some(0)),
            // The COLMETADATA's collation says what code page the bytes are in; the server
            // converts them to the column's (as SQL Server does), so it does not have to match.
            SqlType::VarChar(n, _) => SqlType::varchar(n.map(|_| 0)),
            SqlType::VarBinary(Some(_)) => SqlType::VarBinary(Some(0)),
            t => t,
        };
        for (j, (b, &(i, decl))) in bulk.iter().zip(&self.declared).enumerate() {
            self.map.push(i);
            let target = &cols[i];
            let sent = b.wire.sql_type();
            let state = if sent.map(family) != Some(family(decl)) {
                Some(2)
            } else if (b.flags & 1 != 0) != target.nullable {
                Some(1)
            } else if matches!(target.ty, SqlType::NVarChar(None) | SqlType::VarChar(None, _) | SqlType::VarBinary(None)) && !matches!(sent, Some(SqlType::NVarChar(None) | SqlType::VarChar(None, _) | SqlType::VarBinary(None))) {
                Some(2)
            } else {
                None
            };
            if let Some(state) = state {
                let got = sent.map(|t| t.sql_name()).unwrap_or_else(|| format!("{:?}", b.wire));
                let why = format!("'{}': the client declared {}, sent {got}{}, table '{tname}' has {}", target.name, decl.sql_name(), if b.flags & 1 != 0 { " NULL" } else { " NOT NULL" }, target.ty.sql_name());
                self.error.get_or_insert(SqlError { number: 4816, class: 16, state, message: format!("Invalid column type from bcp client for colid {} ({why}).", j + 1) });
            }
        }
    }

    fn accept_row(&mut self, vals: Vec<Value>) {
        let Some((cols, count_only, _)) = &self.table else { return };
        if self.error.is_some() {
            return;
        }
        let mut row = vec![None; cols.len()];
        for (j, v) in vals.into_iter().enumerate() {
            let Some(&i) = self.map.get(j) else { continue };
            if i == usize::MAX {
                continue;
            }
            // Longer than the COLMETADATA or the declaration says: 4815; longer than the table
            // column only: 2628 when the row is converted to the table's types.
            let sent = self.cols.as_ref().and_then(|c| c.get(j)).and_then(|c| c.wire.sql_type());
            let limit = |t: Option<SqlType>| match t {
                Some(SqlType::NVarChar(Some(n)) | SqlType::VarChar(Some(n), _) | SqlType::VarBinary(Some(n)) | SqlType::Binary(n)) => n,
                _ => u16::MAX,
            };
            let max = limit(sent).min(limit(self.declared.get(j).map(|d| d.1)));
            let len = match &v {
                Value::Str(s) => s.chars().count(),
                Value::Bytes(b) => b.len(),
                _ => 0,
            };
            if max < u16::MAX && len > max as usize {
                self.error = Some(SqlError::new(4815, format!("Received an invalid column length from the bcp client for colid {} (column '{}', length {len}, max {max}).", j + 1, cols[i].name)));
                return;
            }
            row[i] = Some(v);
        }
        if !count_only {
            self.rows.push(row);
        }
    }
}

/// Error 4804 (the BulkLoad message does not match the INSERT BULK statement); `state` 2: no
/// COLMETADATA, 3: another number of columns.
fn premature_end(state: u8) -> SqlError {
    SqlError { number: 4804, class: 16, state, message: "While reading current row from host, a premature end-of-message was encountered--an incoming data stream was interrupted when the server expected to see more data. The host program may have terminated. Ensure that you are using a supported client application programming interface (API).".into() }
}

/// Skips ALL_HEADERS (TDS 7.2+) at the start of SQLBatch/RPC/TM payloads.
fn skip_all_headers(msg: &[u8]) -> Result<&[u8]> {
    let mut r = Rd::new(msg);
    let total = r.u32().map_err(|e| wire_err("ALL_HEADERS", e))? as usize;
    if total < 4 || total > msg.len() {
        return Err(proto(format!("ALL_HEADERS length {total} outside the {}-byte message", msg.len())));
    }
    Ok(&msg[total..])
}

/// Checks the PRELOGIN option table (5-byte entries up to 0xFF, each pointing inside the
/// message) and returns the client's ENCRYPTION value.
fn prelogin_encryption(msg: &[u8]) -> Result<u8> {
    let mut r = Rd::new(msg);
    let mut encryption = None;
    loop {
        let t = r.u8().map_err(|e| wire_err("PRELOGIN", e))?;
        if t == 0xFF {
            return encryption.ok_or_else(|| proto("PRELOGIN without an ENCRYPTION option"));
        }
        let mut be16 = || -> Result<usize> { Ok(u16::from_be_bytes([r.u8().map_err(|e| wire_err("PRELOGIN", e))?, r.u8().map_err(|e| wire_err("PRELOGIN", e))?]) as usize) };
        let (off, len) = (be16()?, be16()?);
        if off + len > msg.len() {
            return Err(proto(format!("PRELOGIN option {t} at {off}+{len} outside the {}-byte message", msg.len())));
        }
        if t == 1 {
            if len != 1 {
                return Err(proto(format!("PRELOGIN ENCRYPTION option of {len} bytes (expected 1)")));
            }
            encryption = Some(msg[off]);
        }
    }
}

fn prelogin_response(encryption: u8) -> Vec<u8> {
    // VERSION, ENCRYPTION, INSTOPT (valid), MARS (off), terminator.
    let enc = [encryption];
    let opts: [(u8, &[u8]); 4] = [(0, &[16, 0, 0x10, 0x00, 0, 0]), (1, &enc), (2, &[0x00]), (4, &[0x00])];
    let mut head = Vec::new();
    let mut data = Vec::new();
    let base = opts.len() * 5 + 1;
    for (t, d) in opts {
        head.push(t);
        head.extend_from_slice(&((base + data.len()) as u16).to_be_bytes());
        head.extend_from_slice(&(d.len() as u16).to_be_bytes());
        data.extend_from_slice(d);
    }
    head.push(0xFF);
    head.extend_from_slice(&data);
    head
}

/// The parts of LOGIN7 the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login7 {
    /// Requested packet size.
    pub packet_size: u32,
    /// User name.
    pub user: String,
    /// Password (de-obfuscated).
    pub password: String,
    /// Application name.
    pub app: String,
    /// Initial database (may be empty).
    pub database: String,
    /// The Entra ID (Azure AD) access token of a FEDAUTH SECURITYTOKEN login (FeatureExt 0x02,
    /// MS-TDS 2.2.6.4), instead of a SQL login's password.
    pub access_token: Option<String>,
}

/// Parses a LOGIN7 message (MS-TDS 2.2.6.4).
pub fn parse_login7(b: &[u8]) -> Result<Login7> {
    let e = |x| wire_err("LOGIN7", x);
    let mut r = Rd::new(b);
    let _len = r.u32().map_err(e)?;
    let _ver = r.u32().map_err(e)?;
    let packet_size = r.u32().map_err(e)?;
    let field = |idx: usize| -> Result<&[u8]> {
        let at = 36 + idx * 4;
        let mut r = Rd::new(b.get(at..at + 4).ok_or_else(|| proto("LOGIN7 shorter than its fixed part"))?);
        let off = r.u16().map_err(e)? as usize;
        let n = r.u16().map_err(e)? as usize * 2;
        b.get(off..off + n).ok_or_else(|| proto(format!("LOGIN7 field {idx} at {off}+{n} outside the {}-byte message", b.len())))
    };
    let text = |idx: usize| -> Result<String> { wire::utf16_to_string(field(idx)?).map_err(e) };
    let pw: Vec<u8> = field(2)?.iter().map(|&x| (x ^ 0xA5).rotate_left(4)).collect();
    // fExtension (OptionFlags3 bit 4): ibExtension/cbExtension point at a DWORD holding the
    // offset of the FeatureExt list (FeatureId, FeatureDataLen, data, ..., 0xFF).
    let mut access_token = None;
    if b.get(27).is_some_and(|f| f & 0x10 != 0) {
        let at = 36 + 5 * 4;
        let mut r = Rd::new(b.get(at..at + 4).ok_or_else(|| proto("LOGIN7 shorter than its fixed part"))?);
        let off = r.u16().map_err(e)? as usize;
        let mut r = Rd::new(b.get(off..off + 4).ok_or_else(|| proto("LOGIN7 extension offset outside the message"))?);
        let mut at = r.u32().map_err(e)? as usize;
        loop {
            let id = *b.get(at).ok_or_else(|| proto("LOGIN7 FeatureExt runs past the message"))?;
            if id == 0xFF {
                break;
            }
            let mut r = Rd::new(b.get(at + 1..at + 5).ok_or_else(|| proto("LOGIN7 FeatureExt runs past the message"))?);
            let len = r.u32().map_err(e)? as usize;
            let data = b.get(at + 5..at + 5 + len).ok_or_else(|| proto("LOGIN7 FeatureExt data runs past the message"))?;
            // FEDAUTH with the SECURITYTOKEN library (options: library << 1 | echo).
            if id == 0x02 && data.first().is_some_and(|o| o >> 1 == 0x01) {
                let mut r = Rd::new(data.get(1..5).ok_or_else(|| proto("FEDAUTH feature shorter than its token length"))?);
                let n = r.u32().map_err(e)? as usize;
                let token = data.get(5..5 + n).ok_or_else(|| proto("FEDAUTH token runs past its feature"))?;
                access_token = Some(wire::utf16_to_string(token).map_err(e)?);
            }
            at += 5 + len;
        }
    }
    Ok(Login7 { packet_size, user: text(1)?, password: wire::utf16_to_string(&pw).map_err(e)?, app: text(3)?, database: text(8)?, access_token })
}


#[cfg(test)]
mod tests {
    use super::*;

    /// A BulkLoad message with ROW and NBCROW tokens, PLP NVARCHAR(MAX), decimals, DATETIME2,
    /// VARCHAR and NULLs; the rows it carries.
    fn bulk_message() -> (Vec<Column>, Vec<u8>, Vec<Vec<Option<Value>>>) {
        let cols = vec![
            Column::new("a", SqlType::Int, true),
            Column::new("b", SqlType::NVarChar(None), true),
            Column::new("c", SqlType::Decimal { precision: 18, scale: 4 }, true),
            Column::new("d", SqlType::DateTime2(3), false),
            Column::new("e", SqlType::varchar(Some(10)), true),
        ];
        let out: Vec<OutCol> = cols.iter().map(|c| OutCol { name: c.name.clone(), ty: c.ty, nullable: c.nullable, identity: false }).collect();
        let rows = [
            vec![Value::Int(-7), Value::Str("héllo ✓ ".repeat(300)), Value::Decimal { mantissa: -999_999_999_999_999_999, scale: 4 }, Value::DateTime2(123_456_780_000), Value::Str("€uro".into())],
            vec![Value::Null, Value::Null, Value::Null, Value::DateTime2(0), Value::Null],
            vec![Value::Int(i32::MAX as i64), Value::Str(String::new()), Value::Decimal { mantissa: 1, scale: 4 }, Value::DateTime2(864_000_000_000 - 10_000), Value::Str("x".into())],
        ];
        let mut w = TokenWriter::default();
        w.col_metadata(&out);
        w.row(&out, &rows[0]).unwrap();
        w.row(&out, &rows[1]).unwrap();
        // The same two rows again as NBCROW (null bitmap, non-null values only).
        for r in &rows[1..] {
            w.buf.push(token::NBCROW);
            let mut bitmap = 0u8;
            for (i, v) in r.iter().enumerate() {
                if *v == Value::Null {
                    bitmap |= 1 << i;
                }
            }
            w.buf.push(bitmap);
            for (c, v) in out.iter().zip(r) {
                if *v != Value::Null {
                    wire::encode_value(&mut w.buf, &c.ty, c.nullable, v).unwrap();
                }
            }
        }
        w.done(token::DONE, 0, 0, 4);
        let want = [&rows[0], &rows[1], &rows[1], &rows[2]].iter().map(|r| r.iter().map(|v| Some(v.clone())).collect()).collect();
        (cols, w.buf, want)
    }

    fn decoder(cols: &[Column], count_only: bool) -> BulkDecoder {
        let declared = cols.iter().enumerate().map(|(i, c)| (i, c.ty)).collect();
        BulkDecoder { buf: Vec::new(), cols: None, table: Some((cols.to_vec(), count_only, "T".into())), declared, map: Vec::new(), rows: Vec::new(), n: 0, error: None, done: false }
    }

    #[test]
    fn count_only_bulk_decoding_finds_the_same_row_boundaries_as_full_decoding() {
        let (cols, msg, want) = bulk_message();
        for step in [1, 7, msg.len()] {
            let mut full = decoder(&cols, false);
            let mut count = decoder(&cols, true);
            for piece in msg.chunks(step) {
                full.feed(piece).unwrap();
                count.feed(piece).unwrap();
            }
            assert!(full.error.is_none() && count.error.is_none());
            assert!(full.done && count.done && full.buf.is_empty() && count.buf.is_empty(), "step {step}");
            assert_eq!(full.rows, want, "step {step}");
            assert_eq!((full.n, count.n), (4, 4), "step {step}");
            assert!(count.rows.is_empty());
        }
        // A stream cut inside a row leaves bytes pending in both modes (the caller reports it).
        let mut count = decoder(&cols, true);
        count.feed(&msg[..msg.len() - 20]).unwrap();
        assert!(!count.done && !count.buf.is_empty());
        assert_eq!(count.n, 3);
    }

    #[test]
    fn count_only_bulk_decoding_still_rejects_impossible_lengths() {
        let (cols, msg, _) = bulk_message();
        // The first ROW's INTN length byte (4) follows the COLMETADATA token and the ROW byte.
        let meta_len = {
            let mut r = Rd::new(&msg[1..]);
            wire::decode_col_metadata(&mut r).unwrap();
            r.pos + 1
        };
        assert_eq!((msg[meta_len], msg[meta_len + 1]), (token::ROW, 4));
        let mut bad = msg.clone();
        bad[meta_len + 1] = 3;
        let mut count = decoder(&cols, true);
        assert!(count.feed(&bad).is_err(), "INTN length 3 must be a protocol error");
    }
}
